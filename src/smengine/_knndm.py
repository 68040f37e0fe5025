r"""k-fold Nearest Neighbour Distance Matching (kNNDM) cross-validation.

A Python implementation of ``CAST::knndm`` (Linnenbrink et al. 2024 [1]_), the k-fold
version of NNDM leave-one-out CV (Milà et al. 2022 [2]_). Cross-validation estimates the
accuracy of a *map* only if the held-out points are as far from their training data as the
prediction points are from the training points. kNNDM finds a k-fold split whose
cross-validation distances match the prediction distances.

Nearest-neighbour distance functions
------------------------------------
With training points :math:`x_j` and prediction points :math:`s_i` (geographical
coordinates in a projected CRS, in metres, or standardised feature vectors; Euclidean
distance :math:`d`):

* :math:`G_{ij}` — prediction-to-sample: :math:`\min_j d(s_i, x_j)` for each prediction point;
* :math:`G_j` — sample-to-sample (leave-one-out CV): :math:`\min_{l \ne j} d(x_j, x_l)`;
* :math:`G^*_j` — CV distances of a fold assignment :math:`f`:
  :math:`\min_{l:\, f(l) \ne f(j)} d(x_j, x_l)`.

A split is scored by the Wasserstein-1 distance between the empirical distribution
functions of :math:`G^*_j` (:math:`F`) and :math:`G_{ij}` (:math:`G`),
:math:`W = \int_0^\infty |F(r) - G(r)|\, dr`, in the units of the distances.

Algorithm (CAST's ``knndm_geo`` / ``knndm_feature``)
----------------------------------------------------
1. Compute :math:`G_{ij}` and :math:`G_j` (``scipy.spatial.cKDTree``).
2. One-sided two-sample KS test of :math:`G_j` against :math:`G_{ij}`, alternative "the
   CDF of :math:`G_j` lies above that of :math:`G_{ij}`" (the training points are closer
   to each other than the prediction points are to them). R's
   ``ks.test(Gj, Gij, alternative = "greater")`` and SciPy's
   ``ks_2samp(Gj, Gij, alternative="greater")`` share this convention (both use
   :math:`D^+ = \max (F_{G_j} - F_{G_{ij}})`). If :math:`p \ge 0.05` the prediction points
   are not farther away than the training points are from each other and a (balanced,
   seeded) random k-fold assignment is returned, ``method = "random CV"``.
3. Otherwise cluster the training points (Ward linkage, or seeded k-means) into ``nk``
   clusters for each ``nk`` in ``unique(round(exp(linspace(log k, log(n - 2), nk_len))))``;
   order the clusters by the projection of their centroid on the first principal
   component of the training points; give each cluster holding at least ``n/k`` points a
   fold of its own and deal the other clusters cyclically, in that order, to the remaining
   fold labels; skip the configuration if a fold holds more than ``maxp`` of the points;
   keep the configuration with the smallest :math:`W` (the first one on ties).

Differences from CAST
---------------------
* Fold labels are ``0 … k-1`` (CAST: ``1 … k``).
* Random CV deals ``0 … k-1`` cyclically and shuffles (fold sizes differ by at most one);
  CAST draws ``n`` labels without replacement from ``rep(1:k, ceiling(n/k))``.
* k-means is seeded (CAST calls ``stats::kmeans`` unseeded): Lloyd's algorithm with
  k-means++ seeding, at most 100 iterations (R: Hartigan–Wong from random centres, at
  most 10 iterations).
* The sign of the first principal component is fixed (largest loading positive), so that
  the cluster order, and hence the folds, are deterministic.
* The KS p-value is exact when ``n·m < 10000`` and asymptotic otherwise (R's default
  rule); SciPy's one-sided asymptotic formula carries a small finite-sample correction.
* Feature space: Euclidean distances on numeric features only (no Gower or Mahalanobis);
  training rows with NaN are an error instead of being dropped (every training row needs a
  fold). Prediction rows with NaN are dropped and counted, as in CAST.
* ``groups=``: station-day tables. kNNDM runs on one point per group (CAST has no such
  option) and every row takes its group's fold; see :func:`knndm_folds`.
* Geographical space needs projected coordinates (no great-circle distances).

References
----------
.. [1] Linnenbrink, J., Milà, C., Ludwig, M., Meyer, H. (2024). kNNDM: k-fold Nearest
   Neighbour Distance Matching Cross-Validation for map accuracy estimation. Geosci. Model
   Dev. 17, 5897–5912. https://doi.org/10.5194/gmd-17-5897-2024
.. [2] Milà, C., Mateu, J., Pebesma, E., Meyer, H. (2022). Nearest Neighbour Distance
   Matching Leave-One-Out Cross-Validation for map validation. Methods Ecol. Evol. 13,
   1304–1316. https://doi.org/10.1111/2041-210X.13851
.. [3] Meyer, H. et al. CAST: 'caret' Applications for Spatial-Temporal Models, R package,
   functions ``knndm`` and ``geodist``. https://github.com/HannaMeyer/CAST
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from smengine.errors import ConfigError, DataLossWarning, ValidationError

__all__ = [
    "KNNDM",
    "cv_distances",
    "domain_points",
    "knndm_folds",
    "plot_knndm",
    "wasserstein_of_folds",
]

log = logging.getLogger(__name__)

_SPACES = ("geographical", "feature")
_CLUSTERINGS = ("hierarchical", "kmeans")
#: Largest coordinate difference (coordinate units, metres in geographical space) still
#: counted as "the same location" for the rows of one group.
_GROUP_TOL = 1e-6
#: Significance level of the KS test that decides between kNNDM and random CV (CAST).
_KS_ALPHA = 0.05


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class KNNDM:
    """A kNNDM fold assignment and its nearest-neighbour distance functions.

    Distances are in the units of the points: metres in geographical space, standardised
    feature units in feature space (training mean 0, SD 1 per feature).

    Attributes
    ----------
    folds : ndarray of int, shape (n_rows,)
        Fold label (``0 … k-1``) of each training row.
    W : float
        Wasserstein-1 distance between the distributions of ``Gjstar`` and ``Gij``
        (distance units).
    Gij : ndarray, shape (m,)
        Prediction-to-sample nearest-neighbour distances.
    Gj : ndarray, shape (n_points,)
        Sample-to-sample nearest-neighbour distances (leave-one-out).
    Gjstar : ndarray, shape (n_points,)
        CV distances of ``folds``: each point's distance to the nearest point in another fold.
    n_clusters : int or None
        Number of clusters of the chosen configuration; None for random CV.
    method : str
        ``"hierarchical"``, ``"kmeans"`` or ``"random CV"``.
    space : str
        ``"geographical"`` or ``"feature"``.
    k : int
        Number of folds asked for.
    n_pred_dropped : int
        Prediction points dropped for a non-finite coordinate or feature.
    ks_pvalue : float
        p-value of the one-sided KS test of ``Gj`` against ``Gij`` (random CV when ≥ 0.05).
    points : ndarray, shape (n_points, d)
        The points kNNDM ran on, in the space of the distances: one per training row, or
        one per group when ``groups=`` was given.
    pred_points : ndarray, shape (m, d)
        The prediction points, in the same space.
    point_of_row : ndarray of int, shape (n_rows,)
        Index into ``points`` of each training row.
    groups : ndarray or None
        Group label of each point (``groups=``), else None.
    """

    folds: np.ndarray = field(repr=False)
    W: float
    Gij: np.ndarray = field(repr=False)
    Gj: np.ndarray = field(repr=False)
    Gjstar: np.ndarray = field(repr=False)
    n_clusters: int | None
    method: str
    space: str
    k: int
    n_pred_dropped: int = 0
    ks_pvalue: float = float("nan")
    points: np.ndarray = field(default_factory=lambda: np.empty((0, 2)), repr=False)
    pred_points: np.ndarray = field(default_factory=lambda: np.empty((0, 2)), repr=False)
    point_of_row: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp), repr=False)
    groups: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_folds(self) -> int:
        """Number of distinct fold labels in use (at most ``k``)."""
        return int(np.unique(self.folds).size)

    @property
    def point_folds(self) -> np.ndarray:
        """Fold of each point of :attr:`points` (of each group with ``groups=``)."""
        out = np.empty(self.points.shape[0], dtype=np.intp)
        out[self.point_of_row] = self.folds
        return out

    def splits(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Scikit-learn style ``(train_idx, test_idx)`` row indices, one pair per fold.

        Pass it as ``cv=`` to ``sklearn.model_selection.cross_val_predict`` and friends.
        Folds can be unbalanced; score the stacked out-of-fold predictions at once rather
        than averaging per-fold scores (CAST's ``global_validation``).
        """
        rows = np.arange(self.folds.size)
        return [(rows[self.folds != f], rows[self.folds == f]) for f in np.unique(self.folds)]

    def cv_distances(self, folds: npt.ArrayLike) -> np.ndarray:
        """CV distances :math:`G^*_j` of any fold assignment of the training rows.

        Parameters
        ----------
        folds : array_like of int, shape (n_rows,)
            Fold of each training row (e.g. a random k-fold of the rows, or folds grouped
            by station).

        Returns
        -------
        ndarray, shape (n_points,)
            One distance per point (per group with ``groups=``), in the result's units. A
            group whose rows lie in more than one fold is in the training data of its own
            test rows: its distance is 0 (random k-fold over station-days).
        """
        f = _as_folds(folds, self.point_of_row.size, "folds")
        return _cv_distances_rows(self.points, self.point_of_row, f)

    def W_of(self, folds: npt.ArrayLike) -> float:
        """Wasserstein-1 distance between :meth:`cv_distances` of ``folds`` and :attr:`Gij`.

        Comparable with :attr:`W` (same points, same prediction points, same units); on
        :attr:`folds` it returns :attr:`W`.
        """
        return _wasserstein(self.cv_distances(folds), self.Gij)


# --------------------------------------------------------------------------- distances


def _wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """W1 between the empirical distributions of ``a`` and ``b`` (the integral of |F - G|)."""
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(a, b))


def _nn_to(points: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Distance from each row of ``query`` to its nearest row of ``points``."""
    from scipy.spatial import cKDTree

    return np.asarray(cKDTree(points).query(query, k=1)[0], dtype=np.float64)


def _loo_nn(points: np.ndarray) -> np.ndarray:
    """Distance from each point to its nearest other point (duplicates give 0)."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(points).query(points, k=2)
    return np.asarray(d[:, 1], dtype=np.float64)


def _cv_distances_labels(points: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Distance from each point to the nearest point with another label (one tree per label)."""
    from scipy.spatial import cKDTree

    out = np.empty(points.shape[0], dtype=np.float64)
    for f in np.unique(labels):
        test = labels == f
        out[test] = cKDTree(points[~test]).query(points[test], k=1)[0]
    return out


def _cv_distances_rows(points: np.ndarray, point_of_row: np.ndarray, row_folds: np.ndarray) -> np.ndarray:
    """CV distances per point for folds given per row (rows of one point may span folds)."""
    from scipy.spatial import cKDTree

    n = points.shape[0]
    lo = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(lo, point_of_row, row_folds)
    np.maximum.at(hi, point_of_row, row_folds)
    if np.unique(row_folds).size < 2:
        raise ValidationError("folds holds a single fold label; CV distances need at least two folds")
    single = lo == hi
    out = np.zeros(n, dtype=np.float64)  # a point in several folds trains its own test rows
    for f in np.unique(lo[single]):
        test = single & (lo == f)
        out[test] = cKDTree(points[~test]).query(points[test], k=1)[0]
    return out


def _as_folds(folds: npt.ArrayLike, n: int, name: str) -> np.ndarray:
    f = np.asarray(folds)
    if f.shape != (n,):
        raise ValidationError(f"{name} should have shape ({n},) (one fold per training row), got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer) and (
        not np.issubdtype(f.dtype, np.floating) or not np.all(np.isfinite(f)) or np.any(f != np.round(f))
    ):
        raise ValidationError(f"{name} should hold integer fold labels, got dtype {f.dtype}")
    return f.astype(np.int64)


def cv_distances(points: npt.ArrayLike, folds: npt.ArrayLike) -> np.ndarray:
    """CV nearest-neighbour distances :math:`G^*_j` of a fold assignment.

    Parameters
    ----------
    points : array_like, shape (n, d)
        Training points (projected coordinates in metres, or feature vectors).
    folds : array_like of int, shape (n,)
        Fold of each point; at least two distinct labels.

    Returns
    -------
    ndarray, shape (n,)
        Each point's Euclidean distance to the nearest point in another fold (units of
        ``points``).

    Raises
    ------
    ValidationError
        On mismatched shapes, non-finite points or fewer than two folds.
    """
    X = _as_points(points, "points")
    f = _as_folds(folds, X.shape[0], "folds")
    return _cv_distances_rows(X, np.arange(X.shape[0]), f)


def wasserstein_of_folds(points: npt.ArrayLike, folds: npt.ArrayLike, pred_points: npt.ArrayLike) -> float:
    r"""Wasserstein-1 distance :math:`W` between the CV and the prediction distances of a split.

    :math:`W = \int_0^\infty |F(r) - G(r)|\,dr` with :math:`F` the empirical distribution
    function of :func:`cv_distances` of ``folds`` and :math:`G` that of the distances from
    each prediction point to its nearest training point (Linnenbrink et al. 2024). Use it to
    score any split, e.g. random k-fold or leave-station-out, on the scale of
    :attr:`KNNDM.W` (for rows grouped by station use :meth:`KNNDM.W_of`).

    Parameters
    ----------
    points : array_like, shape (n, d)
        Training points.
    folds : array_like of int, shape (n,)
        Fold of each training point.
    pred_points : array_like, shape (m, d)
        Prediction points, in the space of ``points``.

    Returns
    -------
    float
        :math:`W`, in the units of ``points``.
    """
    X = _as_points(points, "points")
    P = _as_points(pred_points, "pred_points", d=X.shape[1])
    return _wasserstein(cv_distances(X, folds), _nn_to(X, P))


# --------------------------------------------------------------------------- inputs


def _as_points(a: npt.ArrayLike, name: str, *, d: int | None = None, finite: bool = True) -> np.ndarray:
    try:
        X = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{name} should be a numeric array of shape (n, d): {exc}") from exc
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValidationError(f"{name} should be a non-empty 2-D array of shape (n, d), got shape {X.shape}")
    if d is not None and X.shape[1] != d:
        raise ValidationError(f"{name} has {X.shape[1]} columns, the training points have {d}")
    if finite and not np.all(np.isfinite(X)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(X), axis=1)))
        raise ValidationError(f"{name} has {bad} row(s) with a non-finite value (NaN or inf)")
    return X


def _features(train: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrices, prediction columns aligned on the training columns when both are tables."""
    t_cols = getattr(train, "columns", None)
    p_cols = getattr(pred, "columns", None)
    if t_cols is not None and p_cols is not None:
        missing = [c for c in t_cols if c not in set(p_cols)]
        if missing:
            raise ValidationError(f"pred_points lacks the training feature column(s) {missing}")
        pred = pred[list(t_cols)]
    return _as_points(train, "train_points", finite=False), _as_points(pred, "pred_points", finite=False)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} should be an integer >= {minimum}, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- domain


def domain_points(
    points: npt.ArrayLike | None = None,
    *,
    hull_of: npt.ArrayLike | None = None,
    x: npt.ArrayLike | None = None,
    y: npt.ArrayLike | None = None,
    axes: bool = False,
    grid: Any = None,
    samplesize: int = 1000,
) -> np.ndarray:
    """Prediction points of a prediction domain, from one of four sources.

    Parameters
    ----------
    points : array_like, shape (m, d), optional
        Prediction points, used as they are (e.g. every pixel centre, or feature vectors).
    hull_of : array_like, shape (n, 2), optional
        Points (projected coordinates, metres) whose convex hull is the domain: it is
        sampled on a regular square grid of about ``samplesize`` points (CAST samples its
        ``modeldomain`` polygon with ``sf::st_sample(type = "regular")``). The grid spacing
        starts at :math:`\\sqrt{A/\\text{samplesize}}` (:math:`A` the hull's area), is
        anchored half a cell inside the hull's bounding box (deterministic; ``st_sample``
        offsets at random) and is refined until the count is closest to ``samplesize``.
    x, y : array_like, optional
        Pixel centres of a raster domain (metres): same-shape arrays of the centres of the
        domain's pixels (e.g. ``np.meshgrid(ds.x, ds.y)`` masked to valid pixels; pairs with
        a NaN are dropped), or with ``axes=True`` the 1-D ``x`` and ``y`` axes of a full
        grid. More than ``samplesize`` pixels are thinned regularly: every ``s``-th column
        and row of the pixel lattice, ``s`` chosen to bring the count closest to
        ``samplesize`` (deterministic).
    axes : bool, optional
        ``x`` and ``y`` are grid axes (default False: pixel centre pairs).
    grid : smengine.grid.Grid, optional
        A product grid: its pixel centres (:meth:`~smengine.grid.Grid.xy`) as the axes of a
        raster domain, thinned as for ``x``/``y``.
    samplesize : int, optional
        Target number of prediction points for ``hull_of`` and ``x``/``y``. Default 1000.

    Returns
    -------
    ndarray, shape (m, d)
        Prediction points, float64.

    Raises
    ------
    ConfigError
        If not exactly one source is given, or ``samplesize < 1``.
    ValidationError
        On wrong shapes, or a hull of fewer than three non-collinear points.
    """
    given = [points is not None, hull_of is not None, x is not None or y is not None, grid is not None]
    if sum(given) != 1:
        raise ConfigError("domain_points needs exactly one of points=, hull_of=, x= and y=, or grid=")
    samplesize = _check_int(samplesize, "samplesize", 1)
    if points is not None:
        return _as_points(points, "points", finite=False)
    if hull_of is not None:
        return _hull_grid(_as_points(hull_of, "hull_of", d=2), samplesize)
    if grid is not None:
        xs = grid.xy(np.zeros(grid.width), np.arange(grid.width))[0]
        ys = grid.xy(np.arange(grid.height), np.zeros(grid.height))[1]
        return _raster_points(xs, ys, True, samplesize)
    if x is None or y is None:
        raise ConfigError("domain_points needs both x= and y= (pixel centres)")
    return _raster_points(x, y, axes, samplesize)


def _hull_grid(P: np.ndarray, samplesize: int) -> np.ndarray:
    from scipy.spatial import ConvexHull, Delaunay, QhullError

    try:
        hull = ConvexHull(P)
        tri = Delaunay(P[hull.vertices])
    except QhullError as exc:
        raise ValidationError(
            "the convex hull of the training points is degenerate (fewer than 3 distinct, non-collinear points); "
            "pass pred_points"
        ) from exc
    area = float(hull.volume)  # the "volume" of a 2-D hull is its area
    (x0, y0), (x1, y1) = P[hull.vertices].min(axis=0), P[hull.vertices].max(axis=0)
    dx = math.sqrt(area / samplesize)
    best: np.ndarray | None = None
    for _ in range(12):
        gx = np.arange(x0 + dx / 2, x1, dx)
        gy = np.arange(y0 + dx / 2, y1, dx)
        G = np.column_stack([a.ravel() for a in np.meshgrid(gx, gy)])
        G = G[tri.find_simplex(G) >= 0] if G.size else G.reshape(0, 2)
        if G.shape[0] and (best is None or abs(G.shape[0] - samplesize) < abs(best.shape[0] - samplesize)):
            best = G
        if G.shape[0] == samplesize:
            break
        dx *= math.sqrt(G.shape[0] / samplesize) if G.shape[0] else 0.5
    if best is None:  # pragma: no cover - a non-degenerate hull always catches a grid point
        raise ValidationError("no regular grid point fell inside the convex hull of the training points")
    return np.ascontiguousarray(best)


def _raster_points(x: Any, y: Any, axes: bool, samplesize: int) -> np.ndarray:
    X = np.asarray(x, dtype=np.float64)
    Y = np.asarray(y, dtype=np.float64)
    if axes:
        if X.ndim != 1 or Y.ndim != 1:
            raise ValidationError(f"with axes=True, x and y should be 1-D axes, got shapes {X.shape} and {Y.shape}")
        X, Y = np.meshgrid(X, Y)
    if X.shape != Y.shape:
        raise ValidationError(f"x and y (pixel centres) should have the same shape, got {X.shape} and {Y.shape}")
    X, Y = X.ravel(), Y.ravel()
    ok = np.isfinite(X) & np.isfinite(Y)
    X, Y = X[ok], Y[ok]
    if X.size == 0:
        raise ValidationError("x and y hold no finite pixel centre")
    if X.size > samplesize:
        ix = np.unique(X, return_inverse=True)[1]
        iy = np.unique(Y, return_inverse=True)[1]
        s_est = max(1, round(math.sqrt(X.size / samplesize)))
        keep, best = None, None
        for s in range(max(1, s_est - 2), s_est + 3):
            sel = (ix % s == s // 2) & (iy % s == s // 2)
            err = abs(int(np.count_nonzero(sel)) - samplesize)
            if np.any(sel) and (best is None or err < best):
                keep, best = sel, err
        if keep is not None:
            X, Y = X[keep], Y[keep]
    return np.column_stack([X, Y])


# --------------------------------------------------------------------------- kNNDM


def _first_pc(X: np.ndarray) -> np.ndarray:
    """First principal axis of ``X`` (centred, unscaled; like ``prcomp``), sign fixed."""
    Xc = X - X.mean(axis=0)
    _, _, vt = np.linalg.svd(Xc, full_matrices=False)
    v = vt[0]
    return v if v[np.argmax(np.abs(v))] >= 0 else -v


def _merge_to_folds(X: np.ndarray, clusters: np.ndarray, pc: np.ndarray, k: int) -> np.ndarray:
    """Merge clusters into ``k`` folds (CAST): big clusters alone, the rest dealt in PC order."""
    n = X.shape[0]
    _, inv, counts = np.unique(clusters, return_inverse=True, return_counts=True)
    nc = counts.size
    centroids = np.zeros((nc, X.shape[1]))
    np.add.at(centroids, inv, X)
    centroids /= counts[:, None]
    order = np.argsort(centroids @ pc, kind="stable")
    big = counts[order] >= n / k
    label = np.empty(nc, dtype=np.int64)
    nb = int(np.count_nonzero(big))
    label[order[big]] = np.arange(nb)
    n_rest = nc - nb
    if n_rest:
        label[order[~big]] = np.resize(np.arange(nb, k), n_rest)
    return label[inv]


def _ks_pvalue(Gj: np.ndarray, Gij: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    method = "exact" if Gj.size * Gij.size < 10000 else "asymp"
    return float(ks_2samp(Gj, Gij, alternative="greater", method=method).pvalue)


def _cluster_labels(
    X: np.ndarray, grid: list[int], clustering: str, rng: np.random.Generator
) -> list[np.ndarray | None]:
    """Cluster labels of ``X`` for each count in ``grid`` (None where it cannot be made)."""
    if clustering == "hierarchical":
        from scipy.cluster.hierarchy import cut_tree, linkage

        Z = linkage(X, method="ward")  # Ward on Euclidean distances = R's hclust "ward.D2"
        C = cut_tree(Z, n_clusters=grid)
        return [C[:, i] for i in range(len(grid))]
    n_distinct = np.unique(X, axis=0).shape[0]
    out: list[np.ndarray | None] = []
    for nk in grid:
        # R's kmeans stops when there are more centres than distinct points: skip the count
        out.append(_kmeans(X, nk, rng) if nk <= n_distinct else None)
    return out


def _kmeans(X: np.ndarray, nk: int, rng: np.random.Generator, max_iter: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii 2007); cluster label per point.

    ``nk`` must not exceed the number of distinct points (the seeding then picks distinct
    centres). Assignment by a k-d tree of the centres, so that the ~100 runs of a kNNDM
    search on a thousand points take a fraction of a second.
    """
    from scipy.spatial import cKDTree

    n, d = X.shape
    centres = np.empty((nk, d))
    i = int(rng.integers(n))
    centres[0] = X[i]
    diff = X - X[i]
    d2 = np.einsum("ij,ij->i", diff, diff)
    cum = np.empty(n)
    for j in range(1, nk):
        np.cumsum(d2, out=cum)
        i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))
        centres[j] = X[i]
        np.subtract(X, X[i], out=diff)
        np.minimum(d2, np.einsum("ij,ij->i", diff, diff), out=d2)
    labels = np.full(n, -1, dtype=np.intp)
    for _ in range(max_iter):
        new = cKDTree(centres).query(X, k=1)[1]
        if np.array_equal(new, labels):
            break
        labels = new
        counts = np.bincount(labels, minlength=nk)
        full = counts > 0  # an emptied cluster keeps its centre
        for c in range(d):
            centres[full, c] = np.bincount(labels, weights=X[:, c], minlength=nk)[full] / counts[full]
    return labels


def knndm_folds(
    train_points: npt.ArrayLike,
    pred_points: npt.ArrayLike | None = None,
    *,
    k: int = 10,
    maxp: float = 0.5,
    clustering: str = "hierarchical",
    space: str = "geographical",
    groups: npt.ArrayLike | None = None,
    scale_vars: bool = True,
    samplesize: int = 1000,
    nk_len: int = 100,
    seed: int | None = 0,
) -> KNNDM:
    """k-fold Nearest Neighbour Distance Matching folds (Linnenbrink et al. 2024).

    Finds the k-fold split of the training points whose CV nearest-neighbour distances
    best match the distances from the prediction points to the training points
    (smallest Wasserstein-1 distance :math:`W`); see the module docstring for the
    algorithm and its differences from ``CAST::knndm``.

    Parameters
    ----------
    train_points : array_like, shape (n_rows, d)
        Training rows: projected x, y coordinates in metres (``space="geographical"``,
        ``d = 2``), or feature vectors (``space="feature"``, a NumPy array or a DataFrame).
    pred_points : array_like, shape (m, d), optional
        Prediction points in the same space (see :func:`domain_points`); rows with a
        non-finite value are dropped and counted (``n_pred_dropped``). Default: the
        convex hull of the training points sampled on a regular grid of about
        ``samplesize`` points (geographical space only).
    k : int, optional
        Number of folds, at least 2. Default 10.
    maxp : float, optional
        Largest fraction of the points in one fold, strictly between ``1/k`` and 1.
        Default 0.5. Counted in points, i.e. in groups when ``groups=`` is given.
    clustering : {"hierarchical", "kmeans"}, optional
        Ward hierarchical clustering (one tree, cut at each count) or seeded k-means.
    space : {"geographical", "feature"}, optional
        Euclidean distances between projected coordinates (metres), or between features
        standardised by the training rows' mean and SD (``scale_vars``).
    groups : array_like, shape (n_rows,), optional
        Group (station) of each training row, for tables with many rows per station
        (station-days). kNNDM then runs on one point per group — its coordinates, which
        must be identical for every row of the group in geographical space (to 1e-6
        coordinate units), or the mean of its rows' standardised features in feature
        space — and every row takes its group's fold, so a station is never in the
        training and the test data of one fold. ``Gj``, ``Gjstar`` and ``maxp`` refer to
        groups.
    scale_vars : bool, optional
        Feature space: standardise each feature by the training rows' mean and SD
        (``ddof=1``, like R's ``scale``). Default True.
    samplesize : int, optional
        Size of the regular sample of the convex hull when ``pred_points`` is None.
    nk_len : int, optional
        Number of cluster counts tried (log-spaced from ``k`` to ``n - 2``; duplicates
        after rounding removed). Default 100.
    seed : int or None, optional
        Seed of the random CV assignment and of k-means. Same inputs and seed, same folds.

    Returns
    -------
    KNNDM
        Folds per training row, ``W``, the distance functions and the chosen configuration.

    Raises
    ------
    ConfigError
        On an invalid ``k``, ``maxp``, ``clustering``, ``space``, ``nk_len`` or
        ``samplesize``, or no ``pred_points`` in feature space.
    ValidationError
        On wrong shapes, non-finite training rows, fewer points (groups) than ``k``,
        coordinates that differ within a group, a constant feature with
        ``scale_vars=True``, no finite prediction point, or when no configuration keeps
        every fold within ``maxp``.

    Examples
    --------
    >>> import numpy as np
    >>> from smengine._knndm import knndm_folds
    >>> rng = np.random.default_rng(1)
    >>> centres = rng.uniform(0, 100_000, (8, 2))
    >>> xy = np.repeat(centres, 25, axis=0) + rng.normal(0, 1000, (200, 2))
    >>> res = knndm_folds(xy, k=5)
    >>> res.method, res.folds.shape, sorted(set(res.folds.tolist()))
    ('hierarchical', (200,), [0, 1, 2, 3, 4])
    """
    k = _check_int(k, "k", 2)
    nk_len = _check_int(nk_len, "nk_len", 1)
    samplesize = _check_int(samplesize, "samplesize", 1)
    try:
        maxp = float(maxp)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"maxp should be a number, got {maxp!r}") from exc
    if not 1.0 / k < maxp < 1.0:
        raise ConfigError(f"maxp should be strictly between 1/k = {1.0 / k:.4g} and 1, got {maxp!r}")
    if clustering not in _CLUSTERINGS:
        raise ConfigError(f"clustering should be one of {_CLUSTERINGS}, got {clustering!r}")
    if space not in _SPACES:
        raise ConfigError(f"space should be one of {_SPACES}, got {space!r}")
    rng = np.random.default_rng(seed)

    # ---- training points and prediction points in the space of the distances
    if space == "geographical":
        T = _as_points(train_points, "train_points", finite=False)
        if T.shape[1] != 2:
            raise ValidationError(
                f"geographical train_points should have 2 columns (projected x, y in metres), got {T.shape[1]}"
            )
        P = None if pred_points is None else _as_points(pred_points, "pred_points", d=2, finite=False)
    else:
        if pred_points is None:
            raise ConfigError("space='feature' needs pred_points (the features of the prediction points)")
        T, P = _features(train_points, pred_points)
        if P.shape[1] != T.shape[1]:
            raise ValidationError(f"pred_points has {P.shape[1]} feature columns, train_points has {T.shape[1]}")
    bad = ~np.all(np.isfinite(T), axis=1)
    if bad.any():
        raise ValidationError(
            f"{int(bad.sum())} of {T.shape[0]} training rows have a non-finite value (NaN or inf); "
            "kNNDM needs every training row (drop them first)"
        )
    if space == "feature" and scale_vars:
        mean = T.mean(axis=0)
        sd = T.std(axis=0, ddof=1) if T.shape[0] > 1 else np.zeros(T.shape[1])
        const = np.flatnonzero(~(sd > 0))
        if const.size:
            raise ValidationError(
                f"feature column(s) {const.tolist()} are constant in the training rows and cannot be "
                "standardised; drop them or pass scale_vars=False"
            )
        T = (T - mean) / sd
        assert P is not None
        P = (P - mean) / sd

    X, point_of_row, labels = _group_points(T, groups, space)
    n = X.shape[0]
    unit = "groups" if groups is not None else "training points"
    if n < k:
        raise ValidationError(f"kNNDM with k={k} folds needs at least {k} {unit}, got {n}")

    if P is None:
        P = _hull_grid(X, samplesize)
    n_dropped = 0
    ok = np.all(np.isfinite(P), axis=1)
    if not ok.any():
        raise ValidationError("no prediction point is left (every one has a non-finite value)")
    if not ok.all():
        n_dropped = int(np.count_nonzero(~ok))
        P = P[ok]
        warnings.warn(
            f"kNNDM: {n_dropped} of {ok.size} prediction point(s) with a non-finite value left out",
            DataLossWarning,
            stacklevel=3,
        )
    if P.shape[0] == 0:
        raise ValidationError("no prediction point is left (every one has a non-finite value)")

    # ---- 1. nearest-neighbour distances; 2. KS test
    Gij = _nn_to(X, P)
    Gj = _loo_nn(X)
    p = _ks_pvalue(Gj, Gij)

    if p >= _KS_ALPHA:
        point_folds = rng.permutation(np.arange(n) % k)
        Gjstar = _cv_distances_labels(X, point_folds)
        W = _wasserstein(Gjstar, Gij)
        method, chosen = "random CV", None
        log.info("kNNDM: Gj is not smaller than Gij (KS p = %.3g); random %d-fold CV, W = %.4g", p, k, W)
    else:
        point_folds, W, chosen = _search(X, Gij, k=k, maxp=maxp, clustering=clustering, nk_len=nk_len, rng=rng)
        Gjstar = _cv_distances_labels(X, point_folds)
        method = clustering
        log.info("kNNDM: KS p = %.3g; %s with %d clusters, W = %.4g", p, clustering, chosen, W)

    def frozen(a: np.ndarray) -> np.ndarray:
        a = np.array(a, copy=True, order="C")  # never freeze the caller's array
        a.setflags(write=False)
        return a

    return KNNDM(
        folds=frozen(point_folds[point_of_row].astype(np.intp)),
        W=float(W),
        Gij=frozen(Gij),
        Gj=frozen(Gj),
        Gjstar=frozen(Gjstar),
        n_clusters=chosen,
        method=method,
        space=space,
        k=k,
        n_pred_dropped=n_dropped,
        ks_pvalue=p,
        points=frozen(X),
        pred_points=frozen(P),
        point_of_row=frozen(point_of_row.astype(np.intp)),
        groups=None if labels is None else frozen(labels),
    )


def _group_points(
    T: np.ndarray, groups: npt.ArrayLike | None, space: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One point per group: (points, point index of each row, group labels)."""
    n_rows = T.shape[0]
    if groups is None:
        return T, np.arange(n_rows), None
    import pandas as pd

    g = np.asarray(groups)
    if g.shape != (n_rows,):
        raise ValidationError(f"groups should have shape ({n_rows},) (one label per training row), got {g.shape}")
    codes, uniques = pd.factorize(g, sort=False)
    if (codes < 0).any():
        raise ValidationError(f"groups has {int((codes < 0).sum())} missing label(s)")
    ng = uniques.size
    counts = np.bincount(codes, minlength=ng)
    if space == "geographical":
        first = np.full(ng, n_rows, dtype=np.intp)
        np.minimum.at(first, codes, np.arange(n_rows))
        X = T[first]
        dev = np.max(np.abs(T - X[codes]), axis=1)
        bad = np.unique(codes[dev > _GROUP_TOL])
        if bad.size:
            raise ValidationError(
                f"{bad.size} group(s) have rows at different coordinates (e.g. group {_plain(uniques[bad[0]])!r}, "
                f"up to {float(dev.max()):.6g} apart); every row of a group must share its location"
            )
    else:
        X = np.zeros((ng, T.shape[1]))
        np.add.at(X, codes, T)
        X /= counts[:, None]
    return X, codes.astype(np.intp), np.asarray(uniques)


def _plain(label: Any) -> Any:
    """A NumPy scalar as the Python object (for messages)."""
    return label.item() if isinstance(label, np.generic) else label


def _search(
    X: np.ndarray,
    Gij: np.ndarray,
    *,
    k: int,
    maxp: float,
    clustering: str,
    nk_len: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float, int]:
    """Try the cluster counts of the grid; return the folds, W and count with the smallest W."""
    n = X.shape[0]
    hi = max(n - 2, 1)
    raw = np.round(np.exp(np.linspace(math.log(k), math.log(hi), nk_len))).astype(int)
    grid = [int(v) for v in dict.fromkeys(raw.tolist()) if 1 <= v <= n]  # R's !duplicated keeps the order
    pc = _first_pc(X)
    best: tuple[np.ndarray, float, int] | None = None
    n_tried = 0
    for nk, clusters in zip(grid, _cluster_labels(X, grid, clustering, rng), strict=True):
        if clusters is None:
            continue
        folds = _merge_to_folds(X, clusters, pc, k)
        sizes = np.bincount(folds, minlength=k)
        if np.count_nonzero(sizes) < 2 or sizes.max() / n > maxp:
            continue
        n_tried += 1
        w = _wasserstein(_cv_distances_labels(X, folds), Gij)
        log.debug("kNNDM: %d clusters, W = %.6g", nk, w)
        if best is None or w < best[1]:
            best = (folds, w, nk)
    if best is None:
        raise ValidationError(
            f"no cluster configuration keeps every fold within maxp={maxp:g} of the {n} points; "
            "increase maxp or decrease k"
        )
    log.debug("kNNDM: %d of %d cluster counts within maxp", n_tried, len(grid))
    return best


# --------------------------------------------------------------------------- plot


def plot_knndm(
    result: KNNDM,
    path: str | os.PathLike[str],
    *,
    others: dict[str, npt.ArrayLike] | None = None,
    title: str | None = None,
) -> Path:
    """Plot the nearest-neighbour distance functions of a kNNDM result (PNG).

    Empirical distribution functions of the prediction-to-sample distances ``Gij``, the
    sample-to-sample (leave-one-out CV) distances ``Gj`` and the CV distances ``Gjstar`` of
    the kNNDM folds, plus one curve per entry of ``others`` (CV distances of other splits,
    e.g. ``{"random k-fold": result.cv_distances(random_folds)}``). The CV curves'
    legend labels give their :math:`W` against ``Gij``. Geographical distances are drawn
    in km (the inputs are metres); feature distances in standardised feature units.

    Parameters
    ----------
    result : KNNDM
        The result of :func:`knndm_folds`.
    path : path-like
        PNG file to write (atomically).
    others : dict of str to array_like, optional
        Name → CV distances of another split, in the result's units (metres or
        standardised feature units).
    title : str, optional
        Plot title. Default: a summary of the result.

    Returns
    -------
    Path
        The file written.
    """
    from smengine.evaluate import _plt, _save

    plt = _plt()
    geo = result.space == "geographical"
    scale, unit = (1000.0, "km") if geo else (1.0, "")
    xlabel = "distance (km)" if geo else "distance (standardised feature units)"

    def w_label(name: str, W: float) -> str:
        return f"{name} (W = {W / scale:.3g}{' ' + unit if unit else ''})"

    def ecdf(ax: Any, d: np.ndarray, label: str, **kw: Any) -> None:
        xs = np.sort(np.asarray(d, dtype=np.float64)) / scale
        ys = np.arange(1, xs.size + 1) / xs.size
        ax.step(np.r_[0.0, xs], np.r_[0.0, ys], where="post", label=label, **kw)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ecdf(ax, result.Gij, "prediction-to-sample (Gij)", color="black", lw=2)
    ecdf(ax, result.Gj, w_label("sample-to-sample, LOO CV (Gj)", _wasserstein(result.Gj, result.Gij)), color="C0")
    name = "kNNDM" if result.n_clusters is None else f"kNNDM, {result.n_clusters} clusters"
    ecdf(ax, result.Gjstar, w_label(f"CV distances, {name} (Gj*)", result.W), color="C3", lw=2)
    for i, (label, d) in enumerate((others or {}).items()):
        arr = np.asarray(d, dtype=np.float64).ravel()
        arr = arr[np.isfinite(arr)]
        if arr.size == 0:
            raise ValidationError(f"others[{label!r}] holds no finite distance")
        ecdf(ax, arr, w_label(f"CV distances, {label}", _wasserstein(arr, result.Gij)), color=f"C{i + 4}", ls="--")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("empirical distribution function")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title is None:
        title = f"kNNDM ({result.method}, {result.space} space, k = {result.k})"
    ax.set_title(title)
    return _save(fig, path)
