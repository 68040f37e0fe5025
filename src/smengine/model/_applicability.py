r"""The area of applicability of a trained forest: the dissimilarity index and local point density of new vectors.

:class:`Applicability` is the reference the dissimilarity index (DI) of Meyer & Pebesma (2021)
needs, built once from the training table (:meth:`Applicability.fit`, called by
:func:`smengine.model.train`) and carried by the forest (:attr:`Forest.applicability`,
:attr:`CompiledForest.applicability`, saved in the model file). The engine computes the DI
of every pixel-day from it (:func:`smengine.engine.predict`), and so does
:func:`smengine.pseudoproxy.aoa`: there is one implementation.

Definition
----------
With the predictors standardised by the training mean and SD and weighted by the variable
importance ``w`` (scaled to a maximum of 1), :math:`z = w \odot (x - \mu) / \sigma`:

.. math::

    DI(x) = \frac{\min_i \lVert z(x) - z_i \rVert}{\bar d},\qquad
    \bar d = \operatorname{mean}_{i \ne j} \lVert z_i - z_j \rVert

over the training rows ``i`` (:math:`\bar d` over at most ``max_rows_mean`` of them, a
seeded random subset). The training DI of row ``i`` uses its nearest training row in
another cross-validation fold (station). The AOA threshold is the largest training DI that
is not an outlier (≤ Q75 + 1.5·IQR of the training DIs); a new vector is inside the area of
applicability when ``DI <= threshold``.

Nearest-neighbour search
------------------------
The nearest training row is found with a k-d tree (:class:`scipy.spatial.cKDTree`) over the
standardised training rows rotated to their principal axes (an orthogonal rotation keeps
every distance; axis-aligned splits work far better on the rotated rows, whose variance is
concentrated on few axes; with 32-row leaves and sliding-midpoint splits, the search on the
quick twin's 18 features takes 0.55 of the CPU time of a default tree on the unrotated
rows). The DI is then the distance to the row found, computed in the unrotated space, so it
is exact.

Reduced reference
-----------------
When there are more than ``max_reference`` of them, they are
thinned deterministically: the space is cut into cubes of side ``h`` (the smallest
``h = 10^{-3} \bar d \cdot 2^k`` that leaves at most ``max_reference`` occupied cubes) and the
first training row of each cube is kept. Every training row then lies within
:math:`h \sqrt{m}` of a kept one (``m``: predictors with a non-zero weight), so the DI on the
kept rows is never smaller than the exact DI and exceeds it by at most
:attr:`Applicability.max_error` :math:`= h \sqrt{m} / \bar d`. The training DIs, :math:`\bar d`
and the threshold always come from all training rows.

Local point density
-------------------
The local point density (LPD) of Schumacher et al. (2025) [2]_ (CAST's ``aoa(..., LPD =
TRUE)``) counts the training rows "similar" to a new vector: those whose DI to it is below
the AOA threshold ``t``, in the same weighted, standardised space and with the same
:math:`\bar d`,

.. math::

    LPD(x) = \#\{\, i : \lVert z(x) - z_i \rVert / \bar d < t \,\}

(strictly below, as CAST's ``calc_lpd``). The training LPD of row ``i``
(:attr:`Applicability.train_lpd`) counts only the rows of the other folds (stations), as the
training DI does (CAST masks the rows of the held-out fold and the row itself); its rounded
mean is CAST's ``avrgLPD`` (:attr:`Applicability.avrg_lpd`). The count searches the DI's
rotated k-d tree for all pairs closer than :math:`t \bar d` plus a margin of :math:`10^{-9}` of
the coordinates' scale (:meth:`scipy.spatial.cKDTree.sparse_distance_matrix`, at most 128 query
rows and about 4 million candidate pairs, some 100 MB, per thread at a time) and decides the
pairs within that margin of the radius on the distance computed as the DI computes it: the
count equals a brute-force count over every training row.

With a thinned reference, each kept row stands for the :attr:`Applicability.reference_count`
training rows of its cube and counts for all of them: the LPD is then approximate. A training
row lies within :math:`h \sqrt{m}` of its kept row, so the approximate LPD is neither a lower
nor an upper bound of the exact one: it lies between the exact LPDs with the thresholds
``t - max_error`` and ``t + max_error`` (:attr:`Applicability.max_error`). The training LPDs
always come from all training rows.

References
----------
.. [1] Meyer, H., Pebesma, E. (2021). Predicting into unknown space? Estimating the area
   of applicability of spatial prediction models. Methods Ecol. Evol. 12, 1620–1633.
.. [2] Schumacher, F. L., Knoth, C., Ludwig, M., Meyer, H. (2025). Estimation of local
   training data point densities to support the assessment of spatial prediction
   uncertainty. Geosci. Model Dev. 18, 10185, doi:10.5194/gmd-18-10185-2025.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.spatial import cKDTree

from smengine.errors import ConfigError, DataError, ValidationError

__all__ = ["DEFAULT_MAX_REFERENCE", "Applicability"]

log = logging.getLogger(__name__)

#: Training rows kept for the nearest-neighbour search of :meth:`Applicability.di` by
#: :func:`smengine.model.train` (more are thinned; see the module docstring).
DEFAULT_MAX_REFERENCE = 50_000

_BLOCK = 32768  # rows per step of Applicability.di and Applicability.lpd

_ARRAYS = ("mean", "scale", "weights", "reference", "train_di")
#: Arrays added with the local point density: optional (None in references made before it),
#: stored and hashed only when present, so older model files keep their digest.
_OPTIONAL = ("reference_count", "train_lpd")

_LPD_PAIRS = 1 << 22  # candidate pairs per step of the LPD search: about 100 MB of (i, j, distance) at most
_LPD_ROWS = 128  # query rows per step of the LPD search at most (small steps: faster dual-tree walks)
_LPD_MARGIN = 1e-9  # pairs within this fraction of the coordinates' scale of the radius: decided on the DI's distance


def _mean_pairwise(Z: np.ndarray, max_rows: int, rng: np.random.Generator) -> float:
    if Z.shape[0] > max_rows:
        Z = Z[np.sort(rng.choice(Z.shape[0], max_rows, replace=False))]
    n = Z.shape[0]
    total = 0.0
    for i0 in range(0, n, 1024):  # blocks: memory O(1024 × n)
        blk = Z[i0 : i0 + 1024]
        d2 = (blk**2).sum(1)[:, None] + (Z**2).sum(1)[None, :] - 2.0 * blk @ Z.T
        total += float(np.sqrt(np.maximum(d2, 0.0)).sum())
    return total / (n * (n - 1))


def _other_fold_distance(tree: cKDTree, Z: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Distance of every row of ``Z`` (the tree's rows) to its nearest row in another fold."""
    out = np.full(Z.shape[0], np.inf)
    todo = np.arange(Z.shape[0])
    k = 8
    while todo.size:  # query growing k until a row of another fold is found
        kk = min(k, Z.shape[0])
        dist, idx = tree.query(Z[todo], k=kk)
        dist, idx = dist.reshape(todo.size, kk), idx.reshape(todo.size, kk)
        other = codes[idx] != codes[todo][:, None]
        found = other.any(1)
        first = other.argmax(1)
        out[todo[found]] = dist[found, first[found]]
        if kk == Z.shape[0]:
            break
        todo = todo[~found]
        k *= 4
    return out


def _thin(Z: np.ndarray, start: float, max_rows: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Indices of the first row in each occupied cube of side ``h`` (increasing), the number of
    rows in each of those cubes, and ``h`` (see the module docstring): the smallest
    ``start · 2^k`` leaving at most ``max_rows`` cubes."""
    h = start
    while True:
        keys = np.floor(Z / h).astype(np.int64)
        _, first, counts = np.unique(keys, axis=0, return_index=True, return_counts=True)
        if first.size <= max_rows:
            order = np.argsort(first)
            return first[order], counts[order].astype(np.int64), h
        h *= 2.0


def _rotated_tree(rows: np.ndarray) -> tuple[cKDTree, np.ndarray, np.ndarray]:
    """k-d tree of ``rows`` on their principal axes, its centre and rotation (see the module docstring)."""
    centre = rows.mean(0)
    rot = np.linalg.svd(rows - centre, full_matrices=False)[2].T
    if rot.shape[1] < rows.shape[1]:  # fewer rows than features: no rotation
        rot = np.eye(rows.shape[1])
    # sliding-midpoint splits and 32-row leaves: the fastest queries measured on the twin
    tree = cKDTree((rows - centre) @ rot, leafsize=32, balanced_tree=False)
    return tree, centre, rot


def _ball_count(
    search: tuple[cKDTree, np.ndarray, np.ndarray],
    ref: np.ndarray,
    Q: np.ndarray,
    threshold: float,
    mean_distance: float,
    *,
    weight: np.ndarray | None = None,
    ref_fold: np.ndarray | None = None,
    q_fold: np.ndarray | None = None,
    workers: int = 1,
) -> np.ndarray:
    """For each (finite, standardised) row ``q`` of ``Q``: the sum of ``weight`` (1 each by
    default) over the rows ``r`` of ``ref`` with ``||q - r|| / mean_distance < threshold`` (and,
    with folds, ``ref_fold[r] != q_fold[q]``); int64.

    ``search`` is :func:`_rotated_tree` of ``ref``. Pairs are found in blocks of query rows with
    a dual-tree search (``sparse_distance_matrix``) out to the radius plus a margin; pairs
    within the margin of the radius are decided on the distance computed as
    :meth:`Applicability.di` computes it, so the result equals a brute-force count.
    """
    tree, centre, rot = search
    n = Q.shape[0]
    out = np.zeros(n, np.int64)
    radius = threshold * mean_distance
    if n == 0 or not radius > 0:  # DI < 0 never holds
        return out
    # |tree distance - DI distance| from rounding is ~1e-16 of the coordinates' scale: a margin far above it
    scale = radius + math.sqrt(float(((ref - centre) ** 2).sum(1).max()))
    margin = _LPD_MARGIN * scale
    Qt = np.einsum("ij,jk->ik", Q - centre, rot)  # no BLAS threads: many small calls
    order = cKDTree(Qt, leafsize=16, balanced_tree=False).indices  # spatially coherent blocks of queries
    step = int(min(_LPD_ROWS, max(8, _LPD_PAIRS // ref.shape[0])))

    def count(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pairs = cKDTree(Qt[idx], leafsize=16, balanced_tree=False).sparse_distance_matrix(
            tree, radius + margin, output_type="ndarray"
        )
        i, j = pairs["i"], pairs["j"]
        keep = pairs["v"] < radius - margin
        near = np.flatnonzero(~keep)
        if near.size:  # close to the radius: the DI's own distance decides
            d = np.sqrt(((Q[idx[i[near]]] - ref[j[near]]) ** 2).sum(1)) / mean_distance
            keep[near] = d < threshold
        if ref_fold is not None and q_fold is not None:
            keep &= ref_fold[j] != q_fold[idx[i]]
        if weight is None:
            return idx, np.bincount(i[keep], minlength=idx.size)
        # integer multiplicities summed in float64: exact below 2**53
        return idx, np.bincount(i[keep], weights=weight[j[keep]], minlength=idx.size).astype(np.int64)

    blocks = [order[a : a + step] for a in range(0, n, step)]
    if workers > 1 and len(blocks) > 1:
        with ThreadPoolExecutor(min(int(workers), len(blocks))) as pool:  # the search releases the GIL
            for idx, c in pool.map(count, blocks):
                out[idx] = c
    else:
        for idx, c in map(count, blocks):
            out[idx] = c
    return out


class Applicability:
    """Reference for the dissimilarity index, the area of applicability (Meyer & Pebesma 2021)
    and the local point density (Schumacher et al. 2025).

    Build it with :meth:`fit`; :func:`smengine.model.train` does, with the stations as folds
    and the forest's importances as weights, and the forest carries it
    (``Forest.applicability``, ``CompiledForest.applicability``, saved in the model file).

    Attributes
    ----------
    feature_names : tuple of str or None
        Predictors, in column order.
    mean, scale : ndarray, shape (n_features,)
        Training mean and SD (ddof 1; 1 where the SD is 0) used to standardise.
    weights : ndarray, shape (n_features,)
        Importance weights, maximum 1.
    reference : ndarray, shape (n_reference, n_features)
        Standardised, weighted training rows the nearest neighbour is searched in (all of
        them, or the thinned set).
    mean_distance : float
        :math:`\\bar d`.
    threshold : float
        The AOA threshold (largest non-outlier training DI).
    train_di : ndarray, shape (n_train,)
        Cross-validated DI of the training rows.
    cell : float
        Side of the thinning cubes in standardised units (0: no thinning, exact).
    reference_count : ndarray of int64, shape (n_reference,), or None
        With a thinned reference: the number of training rows each kept row stands for (the
        rows of its cube; they sum to ``n_train``). None without thinning (each row stands
        for itself) and in thinned references made before smengine recorded it (their
        :meth:`lpd` raises).
    train_lpd : ndarray of int64, shape (n_train,), or None
        Cross-validated local point density of the training rows: for each, the training rows
        of the other folds within the threshold (None in references made without it).
    config : dict
        How it was made (``max_rows_mean``, ``random_state``, ``max_reference``,
        ``n_train``, ``n_reference``, ``lpd``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> T = rng.normal(size=(200, 3))
    >>> ref = Applicability.fit(T, folds=np.repeat(np.arange(4), 50))
    >>> di = ref.di([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    >>> bool(di[0] <= ref.threshold), bool(di[1] > ref.threshold)
    (True, True)
    >>> lpd = ref.lpd([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    >>> bool(lpd[0] > 0), float(lpd[1])
    (True, 0.0)
    >>> sorted(ref.summary())
    ['avrg_lpd', 'exact', 'max_error', 'max_lpd', 'n_reference', 'n_train', 'threshold']
    """

    def __init__(
        self,
        *,
        mean: npt.ArrayLike,
        scale: npt.ArrayLike,
        weights: npt.ArrayLike,
        reference: npt.ArrayLike,
        mean_distance: float,
        threshold: float,
        train_di: npt.ArrayLike,
        cell: float = 0.0,
        feature_names: Sequence[str] | None = None,
        config: dict[str, Any] | None = None,
        reference_count: npt.ArrayLike | None = None,
        train_lpd: npt.ArrayLike | None = None,
    ) -> None:
        self.mean = np.ascontiguousarray(mean, dtype=np.float64)
        self.scale = np.ascontiguousarray(scale, dtype=np.float64)
        self.weights = np.ascontiguousarray(weights, dtype=np.float64)
        self.reference = np.ascontiguousarray(reference, dtype=np.float64)
        self.train_di = np.ascontiguousarray(train_di, dtype=np.float64)
        self.mean_distance = float(mean_distance)
        self.threshold = float(threshold)
        self.cell = float(cell)
        self.feature_names = tuple(feature_names) if feature_names is not None else None
        self.config = dict(config or {})
        F = self.mean.size
        if not (
            self.scale.shape == self.weights.shape == (F,)
            and self.reference.ndim == 2
            and self.reference.shape[1] == F
            and self.reference.shape[0] >= 1
        ):
            raise ValidationError(
                f"applicability: mean {self.mean.shape}, scale {self.scale.shape}, weights {self.weights.shape} "
                f"and reference {self.reference.shape} do not agree"
            )
        if self.feature_names is not None and len(self.feature_names) != F:
            raise ValidationError(f"applicability: {len(self.feature_names)} feature names for {F} features")
        if not (self.mean_distance > 0 and math.isfinite(self.mean_distance)):
            raise ValidationError(f"applicability: mean distance should be > 0, got {self.mean_distance}")
        self.reference_count = None if reference_count is None else np.ascontiguousarray(reference_count, np.int64)
        self.train_lpd = None if train_lpd is None else np.ascontiguousarray(train_lpd, np.int64)
        rc = self.reference_count
        if rc is not None and not (rc.shape == (self.reference.shape[0],) and (rc >= 1).all()):
            raise ValidationError(
                f"applicability: reference_count should be {self.reference.shape[0]} counts >= 1 (one per "
                f"reference row), got shape {rc.shape}"
            )
        if self.train_lpd is not None and self.train_lpd.shape != self.train_di.shape:
            raise ValidationError(
                f"applicability: train_lpd has shape {self.train_lpd.shape}, train_di {self.train_di.shape}"
            )
        self._tree: tuple[cKDTree, np.ndarray, np.ndarray] | None = None  # tree, centre, rotation

    # ------------------------------------------------------------------ construction
    @classmethod
    def fit(
        cls,
        train_X: npt.ArrayLike,
        *,
        weights: npt.ArrayLike | None = None,
        folds: npt.ArrayLike | None = None,
        feature_names: Sequence[str] | None = None,
        max_rows_mean: int = 5000,
        max_reference: int | None = None,
        random_state: int = 0,
        lpd: bool = True,
        workers: int | None = None,
    ) -> Applicability:
        """The reference of the training rows ``train_X``.

        Parameters
        ----------
        train_X : array_like, shape (n_train, n_features)
            Training predictors (rows with NaN or inf are dropped).
        weights : array_like, shape (n_features,), optional
            Variable importance (e.g. ``RandomForestRegressor.feature_importances_``); scaled
            to a maximum of 1. Default: equal weights.
        folds : array_like, shape (n_train,), optional
            Cross-validation fold (e.g. station) of each training row: the training DI of a
            row uses its nearest neighbour in another fold. Default: every row its own fold.
        feature_names : sequence of str, optional
        max_rows_mean : int, optional
            :math:`\\bar d` over at most this many training rows (a seeded random subset;
            exact for smaller sets). Default 5000.
        max_reference : int, optional
            Thin the search rows to at most this many (see the module docstring). Default
            None: keep all, the DI is exact.
        random_state : int, optional
            Seed of the :math:`\\bar d` subset.
        lpd : bool, optional
            Also compute the training LPD (:attr:`train_lpd`, always over all training rows;
            default True). Its cost grows with the number of training-row pairs closer than the
            threshold: 1.3–1.8 s on 2 threads for 20 000 station-day rows of 18 features with an
            average training LPD of 680 (13.6 million pairs).
        workers : int, optional
            Threads of the training LPD's search (default all; results do not depend on it).

        Returns
        -------
        Applicability

        Raises
        ------
        ValidationError
            Fewer than 2 complete training rows, a single fold, or mismatched shapes.
        ConfigError
            Bad weights or ``max_reference``.
        """
        T = np.asarray(train_X, dtype=np.float64)
        if T.ndim != 2:
            raise ValidationError(f"train_X should be 2-D (n_train, n_features), got shape {T.shape}")
        f = np.arange(T.shape[0]) if folds is None else np.asarray(folds)
        if f.shape != (T.shape[0],):
            raise ValidationError(f"folds has shape {f.shape}, expected ({T.shape[0]},)")
        ok = np.isfinite(T).all(1)
        T, f = T[ok], f[ok]
        if T.shape[0] < 2:
            raise ValidationError("the area of applicability needs at least 2 complete training rows")
        codes = pd.factorize(pd.Series(f))[0]
        if codes.max() < 1:
            raise ValidationError("the area of applicability needs training rows in at least 2 folds")
        w = np.ones(T.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
        if w.shape != (T.shape[1],) or not (w >= 0).all() or not w.any():
            raise ConfigError(f"weights should be {T.shape[1]} non-negative numbers, not all 0")
        if max_reference is not None and int(max_reference) < 1:
            raise ConfigError(f"max_reference should be None or >= 1, got {max_reference}")
        w = w / w.max()
        mu, sd = T.mean(0), T.std(0, ddof=1)
        sd = np.where(sd > 0, sd, 1.0)
        Z = (T - mu) / sd * w
        dbar = _mean_pairwise(Z, int(max_rows_mean), np.random.default_rng(random_state))
        if not dbar > 0:
            raise ValidationError("the area of applicability needs training rows that differ")
        tree = cKDTree(Z)
        train_di = _other_fold_distance(tree, Z, codes) / dbar
        q1, q3 = np.percentile(train_di, [25, 75])
        thr = float(train_di[train_di <= q3 + 1.5 * (q3 - q1)].max())
        cell = 0.0
        ref = Z
        count = None
        if max_reference is not None and Z.shape[0] > int(max_reference):
            keep, count, cell = _thin(Z, 1e-3 * dbar, int(max_reference))
            ref = Z[keep]
        search = None
        train_lpd = None
        if lpd:  # other folds only, over every training row (like the training DI)
            from smengine._threads import effective_n_threads

            search = _rotated_tree(Z)
            train_lpd = _ball_count(
                search, Z, Z, thr, dbar, ref_fold=codes, q_fold=codes, workers=effective_n_threads(workers)
            )
        out = cls(
            mean=mu,
            scale=sd,
            weights=w,
            reference=ref,
            mean_distance=dbar,
            threshold=thr,
            train_di=train_di,
            cell=cell,
            feature_names=feature_names,
            config={
                "max_rows_mean": int(max_rows_mean),
                "random_state": int(random_state),
                "max_reference": None if max_reference is None else int(max_reference),
                "n_train": int(Z.shape[0]),
                "n_reference": int(ref.shape[0]),
                "lpd": bool(lpd),
            },
            reference_count=count,
            train_lpd=train_lpd,
        )
        if search is not None and ref is Z:
            out._tree = search  # the DI's and LPD's search tree: the same rows
        if ref is not Z:
            log.info(
                "applicability: %d training rows thinned to %d (cubes of %.3g; DI error <= %.3g)",
                Z.shape[0],
                ref.shape[0],
                cell,
                out.max_error,
            )
        return out

    # ------------------------------------------------------------------ use
    @property
    def n_features(self) -> int:
        return int(self.mean.size)

    @property
    def max_error(self) -> float:
        """Largest amount by which :meth:`di` can exceed the exact DI (0 when not thinned)."""
        return self.cell * math.sqrt(int((self.weights > 0).sum())) / self.mean_distance

    @property
    def n_train(self) -> int:
        """Number of (complete) training rows."""
        return int(self.train_di.size)

    @property
    def exact(self) -> bool:
        """Whether the reference holds every training row (no thinning): :meth:`di` and
        :meth:`lpd` are then exact."""
        return self.cell == 0

    @property
    def avrg_lpd(self) -> int | None:
        """CAST's ``avrgLPD``: the mean training LPD, rounded (half to even, as R's ``round``);
        None without :attr:`train_lpd`."""
        if self.train_lpd is None or self.train_lpd.size == 0:
            return None
        return int(np.round(self.train_lpd.mean()))

    @property
    def max_lpd(self) -> int | None:
        """The largest training LPD (None without :attr:`train_lpd`). CAST's ``aoa(..., maxLPD)``
        is a cap on the neighbours searched (default: all training rows); here every training
        row is counted, with no cap."""
        if self.train_lpd is None or self.train_lpd.size == 0:
            return None
        return int(self.train_lpd.max())

    def summary(self) -> dict[str, Any]:
        """The numbers CAST reports with ``LPD = TRUE``, JSON-safe.

        Returns
        -------
        dict
            ``threshold`` (DI, dimensionless), ``avrg_lpd`` and ``max_lpd`` (training rows; None
            without :attr:`train_lpd`), ``n_train``, ``n_reference``, ``exact`` (no thinning) and
            ``max_error`` (DI units).
        """
        return {
            "threshold": self.threshold,
            "avrg_lpd": self.avrg_lpd,
            "max_lpd": self.max_lpd,
            "n_train": self.n_train,
            "n_reference": int(self.reference.shape[0]),
            "exact": self.exact,
            "max_error": self.max_error,
        }

    def standardise(self, X: npt.ArrayLike) -> np.ndarray:
        """:math:`w \\odot (x - \\mu) / \\sigma` of each row of ``X`` (float64)."""
        Xn = np.asarray(X, dtype=np.float64)
        if Xn.ndim != 2 or Xn.shape[1] != self.n_features:
            raise ValidationError(f"X should be (n, {self.n_features}), got shape {Xn.shape}")
        return (Xn - self.mean) / self.scale * self.weights

    def di(self, X: npt.ArrayLike, *, workers: int = 1) -> np.ndarray:
        """Dissimilarity index of each row of ``X``: NaN where a predictor is NaN or inf.

        Parameters
        ----------
        X : array_like, shape (n, n_features)
            Predictors in the training order and units.
        workers : int, optional
            Threads of the k-d tree query (results do not depend on it).

        Returns
        -------
        ndarray of float64, shape (n,)
        """
        Xn = np.asarray(X)
        if Xn.ndim != 2 or Xn.shape[1] != self.n_features:
            raise ValidationError(f"X should be (n, {self.n_features}), got shape {Xn.shape}")
        out = np.full(Xn.shape[0], np.nan)
        tree, centre, rot = self._search_tree()
        for a in range(0, Xn.shape[0], _BLOCK):  # blocks of rows: bounded scratch memory
            Z = self.standardise(Xn[a : a + _BLOCK])
            good = np.isfinite(Z).all(1)
            if not good.any():
                continue
            Zg = Z[good]
            rows = np.einsum("ij,jk->ik", Zg - centre, rot)  # no BLAS threads: many small calls
            idx = tree.query(rows, k=1, workers=int(workers))[1]
            out[a : a + _BLOCK][good] = np.sqrt(((Zg - self.reference[idx]) ** 2).sum(1)) / self.mean_distance
        return out

    def lpd(self, X: npt.ArrayLike, *, workers: int = 1) -> np.ndarray:
        """Local point density of each row of ``X`` (Schumacher et al. 2025).

        The number of training rows whose DI to the row is below :attr:`threshold`:
        :math:`\\#\\{i : \\lVert z(x) - z_i \\rVert / \\bar d < t\\}` (see the module docstring).

        Parameters
        ----------
        X : array_like, shape (n, n_features)
            Predictors in the training order and units.
        workers : int, optional
            Threads of the search (results do not depend on it).

        Returns
        -------
        ndarray of float64, shape (n,)
            Counts of training rows (whole numbers, dimensionless); NaN where a predictor is NaN
            or inf (as :meth:`di`). Exact (equal to a brute-force count over every training row)
            when :attr:`exact`; with a thinned reference each kept row counts for the
            :attr:`reference_count` rows of its cube, and the result lies between the exact
            LPDs with the thresholds ``threshold ∓ max_error`` (it may be above or below the
            exact LPD).

        Raises
        ------
        ValidationError
            ``X`` is not 2-D with :attr:`n_features` columns.
        ConfigError
            A thinned reference without :attr:`reference_count` (made before smengine
            recorded it): retrain the model.
        """
        Xn = np.asarray(X)
        if Xn.ndim != 2 or Xn.shape[1] != self.n_features:
            raise ValidationError(f"X should be (n, {self.n_features}), got shape {Xn.shape}")
        if not self.exact and self.reference_count is None:
            raise ConfigError(
                "this applicability reference was thinned by an smengine that did not record how many training "
                "rows each kept row stands for: it has no local point density; retrain the model"
            )
        out = np.full(Xn.shape[0], np.nan)
        search = self._search_tree()
        for a in range(0, Xn.shape[0], _BLOCK):  # blocks of rows: bounded scratch memory
            Z = self.standardise(Xn[a : a + _BLOCK])
            good = np.isfinite(Z).all(1)
            if not good.any():
                continue
            out[a : a + _BLOCK][good] = _ball_count(
                search,
                self.reference,
                Z[good],
                self.threshold,
                self.mean_distance,
                weight=self.reference_count,
                workers=int(workers),
            )
        return out

    def _search_tree(self) -> tuple[cKDTree, np.ndarray, np.ndarray]:
        """k-d tree of the reference rows on their principal axes, its centre and rotation."""
        if self._tree is None:
            self._tree = _rotated_tree(self.reference)
        return self._tree

    def outside(self, di: npt.ArrayLike) -> np.ndarray:
        """``di > threshold``: outside the area of applicability (False where ``di`` is NaN)."""
        with np.errstate(invalid="ignore"):
            return np.asarray(di) > self.threshold

    # ------------------------------------------------------------------ identity and storage
    @property
    def digest(self) -> str:
        """SHA-256 of everything the DI and LPD depend on (recorded in model files and products).

        :attr:`reference_count` and :attr:`train_lpd` take part only when present, so a
        reference without them (as made before smengine had the LPD) keeps its digest."""
        h = hashlib.sha256(b"smengine-applicability;")
        h.update(json.dumps([self.feature_names, self.mean_distance, self.threshold, self.cell]).encode())
        for name in _ARRAYS:
            a = getattr(self, name)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
        for name in _OPTIONAL:
            a = getattr(self, name)
            if a is not None:
                h.update(f";{name};{a.dtype.str}{a.shape}".encode())
                h.update(a.tobytes())
        return "sha256:" + h.hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Applicability) and other.digest == self.digest

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        lpd = f", avrgLPD {self.avrg_lpd}, maxLPD {self.max_lpd}" if self.train_lpd is not None else ""
        return (
            f"Applicability({self.n_features} features, {self.reference.shape[0]} of {self.train_di.size} training "
            f"rows, threshold {self.threshold:.4g}, max error {self.max_error:.2g}{lpd})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_tree"] = None  # rebuilt on first use
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        for name in _OPTIONAL:  # pickled before references carried the LPD
            self.__dict__.setdefault(name, None)

    def to_hdf5(self, group: Any) -> None:
        """Write into an (empty) h5py group (:attr:`reference_count` and :attr:`train_lpd` only when present)."""
        for name in _ARRAYS:
            group.create_dataset(name, data=getattr(self, name))
        for name in _OPTIONAL:
            if getattr(self, name) is not None:
                group.create_dataset(name, data=getattr(self, name))
        group.attrs.update(
            {
                "feature_names": json.dumps(list(self.feature_names) if self.feature_names else None),
                "mean_distance": self.mean_distance,
                "threshold": self.threshold,
                "cell": self.cell,
                "config": json.dumps(self.config),
                "digest": self.digest,
            }
        )

    @classmethod
    def from_hdf5(cls, group: Any, where: str = "") -> Applicability:
        """Read what :meth:`to_hdf5` wrote; the content is checked against its digest.

        Groups written before smengine had the LPD (without ``reference_count`` and
        ``train_lpd``) load, with those None, and verify against their digest.

        Raises
        ------
        DataError
            If the content does not match the stored digest.
        """
        a = group.attrs
        out = cls(
            **{name: group[name][...] for name in _ARRAYS},
            mean_distance=float(a["mean_distance"]),
            threshold=float(a["threshold"]),
            cell=float(a["cell"]),
            feature_names=json.loads(a["feature_names"]),
            config=json.loads(a["config"]),
            **{name: group[name][...] for name in _OPTIONAL if name in group},
        )
        stored = a["digest"]
        stored = stored.decode() if isinstance(stored, bytes) else str(stored)
        if out.digest != stored:
            raise DataError(f"{where}: the applicability reference does not match its digest {stored[:19]}…")
        return out
