r"""Pseudoproxy experiment with ERA5-Land and the area of applicability (SCIENCE §4.5).

The emulator cannot be scored away from the CRNS stations against CRNS. The pseudoproxy
experiment replaces the CRNS target by a quantity that exists everywhere — the
CRNS-equivalent soil moisture θ_eq of ERA5-Land's four layers
(:func:`smengine.footprint.equivalent_soil_moisture`, D86 at r = 0 by fixed point) — at the
station pixels on the days the stations have data, trains the same forest on the same
predictors (ERA5-Land itself excluded, otherwise the result is trivial), predicts
everywhere and scores the prediction against ERA5-Land θ_eq off-site. Skill is reported
against the distance to the nearest training station and against the predictor-space
dissimilarity index (DI) of Meyer & Pebesma (2021), with their area-of-applicability
(AOA) mask.

Dissimilarity index
-------------------
With predictors standardised by the training mean and SD and weighted by variable
importance ``w``:

.. math::

    DI_k = \frac{\min_i \lVert w \odot (x_k - x_i) \rVert}{\bar d},\qquad
    \bar d = \operatorname{mean}_{i \ne j} \lVert w \odot (x_i - x_j) \rVert

over training rows ``i``. The training DI of row ``i`` uses its nearest training row in
another cross-validation fold. The AOA threshold is the largest training DI that is not an
outlier (≤ Q75 + 1.5·IQR of the training DIs); ``AOA = DI ≤ threshold``.

References
----------
.. [1] Meyer, H., Pebesma, E. (2021). Predicting into unknown space? Estimating the area
   of applicability of spatial prediction models. Methods Ecol. Evol. 12, 1620–1633.
.. [2] Schrön, M. et al. (2017). Improving calibration and validation of cosmic-ray
   neutron sensors in the light of spatial sensitivity. HESS 21, 5009–5030.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.spatial import cKDTree

from smengine.errors import ConfigError, ValidationError
from smengine.metrics import evaluate

__all__ = ["AOA", "aoa", "pixel_scores", "skill_by_bin"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AOA:
    """Dissimilarity index and area of applicability (Meyer & Pebesma 2021).

    Attributes
    ----------
    di : ndarray
        DI of the new rows (NaN where a predictor is NaN).
    inside : ndarray of bool
        ``di <= threshold``.
    threshold : float
        Largest non-outlier training DI.
    train_di : ndarray
        Cross-validated DI of the training rows.
    mean_distance : float
        :math:`\bar d`, the mean distance between training rows (weighted, standardised).
    weights : ndarray
        Predictor weights used.
    """

    di: np.ndarray
    inside: np.ndarray
    threshold: float
    train_di: np.ndarray
    mean_distance: float
    weights: np.ndarray


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


def aoa(
    train_X: npt.ArrayLike,
    X: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
    folds: npt.ArrayLike | None = None,
    max_rows_mean: int = 5000,
    random_state: int = 0,
) -> AOA:
    """Dissimilarity index of ``X`` to the training data and the area of applicability.

    Parameters
    ----------
    train_X : array_like, shape (n_train, n_features)
        Training predictors (rows with NaN are dropped).
    X : array_like, shape (n, n_features)
        New predictors (e.g. every pixel of the product); rows with NaN get DI = NaN.
    weights : array_like, shape (n_features,), optional
        Variable importance (e.g. ``RandomForestRegressor.feature_importances_``); scaled
        to a maximum of 1. Default: equal weights.
    folds : array_like, shape (n_train,), optional
        Cross-validation fold (e.g. station) of each training row: the training DI of a
        row uses its nearest neighbour in another fold. Default: every row its own fold
        (nearest other row).
    max_rows_mean : int, optional
        :math:`\\bar d` is computed over at most this many training rows (a seeded random
        subset; exact for smaller sets). Default 5000.
    random_state : int, optional
        Seed of that subset.

    Returns
    -------
    AOA

    Raises
    ------
    ValidationError
        On mismatched shapes, fewer than 2 complete training rows or a single fold.
    """
    T = np.asarray(train_X, dtype=np.float64)
    Xn = np.asarray(X, dtype=np.float64)
    if T.ndim != 2 or Xn.ndim != 2 or T.shape[1] != Xn.shape[1]:
        raise ValidationError(f"train_X {T.shape} and X {Xn.shape} should be 2-D with the same number of columns")
    ok = np.isfinite(T).all(1)
    f = np.arange(T.shape[0]) if folds is None else np.asarray(folds)
    if f.shape != (T.shape[0],):
        raise ValidationError(f"folds has shape {f.shape}, expected ({T.shape[0]},)")
    T, f = T[ok], f[ok]
    if T.shape[0] < 2:
        raise ValidationError("aoa needs at least 2 complete training rows")
    codes = pd.factorize(pd.Series(f))[0]
    if codes.max() < 1:
        raise ValidationError("aoa needs training rows in at least 2 folds")
    w = np.ones(T.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (T.shape[1],) or not (w >= 0).all() or not w.any():
        raise ConfigError(f"weights should be {T.shape[1]} non-negative numbers, not all 0")
    w = w / w.max()
    mu, sd = T.mean(0), T.std(0, ddof=1)
    sd = np.where(sd > 0, sd, 1.0)
    Zt = (T - mu) / sd * w
    dbar = _mean_pairwise(Zt, max_rows_mean, np.random.default_rng(random_state))
    tree = cKDTree(Zt)
    # training DI: nearest row in another fold (query growing k until one is found)
    train_d = np.full(Zt.shape[0], np.inf)
    todo = np.arange(Zt.shape[0])
    k = 8
    while todo.size:
        kk = min(k, Zt.shape[0])
        dist, idx = tree.query(Zt[todo], k=kk)
        dist, idx = dist.reshape(todo.size, kk), idx.reshape(todo.size, kk)
        other = codes[idx] != codes[todo][:, None]
        found = other.any(1)
        first = other.argmax(1)
        train_d[todo[found]] = dist[found, first[found]]
        if kk == Zt.shape[0]:
            break
        todo = todo[~found]
        k *= 4
    train_di = train_d / dbar
    q1, q3 = np.percentile(train_di, [25, 75])
    thr = float(train_di[train_di <= q3 + 1.5 * (q3 - q1)].max())
    di = np.full(Xn.shape[0], np.nan)
    good = np.isfinite(Xn).all(1)
    if good.any():
        di[good] = tree.query((Xn[good] - mu) / sd * w, k=1)[0] / dbar
    with np.errstate(invalid="ignore"):
        inside = di <= thr
    return AOA(di, inside, thr, train_di, dbar, w)


def skill_by_bin(scores: pd.DataFrame, by: str, bins: npt.ArrayLike,
                 metrics: tuple[str, ...] = ("R", "ubRMSE", "bias", "KGE")) -> pd.DataFrame:  # fmt: skip
    """Median and quartiles of per-pixel scores in bins of ``by`` (distance, DI …).

    Parameters
    ----------
    scores : DataFrame
        One row per pixel with the metric columns and ``by``.
    by : str
        Column to bin.
    bins : array_like
        Bin edges.

    Returns
    -------
    DataFrame
        Index the bin intervals; columns ``n`` and ``<metric>_median``, ``<metric>_q25``,
        ``<metric>_q75``.
    """
    if by not in scores.columns:
        raise ValidationError(f"scores lack column {by!r}")
    cut = pd.cut(scores[by], np.asarray(bins, dtype=float))
    g = scores.groupby(cut, observed=False)
    out = pd.DataFrame({"n": g.size()})
    for m in metrics:
        out[f"{m}_median"] = g[m].median()
        out[f"{m}_q25"] = g[m].quantile(0.25)
        out[f"{m}_q75"] = g[m].quantile(0.75)
    return out


def pixel_scores(pred: np.ndarray, ref: np.ndarray, times: Any, *, min_obs: int = 30) -> pd.DataFrame:
    """R, ubRMSE, bias, KGE per pixel of two (time, y, x) stacks (pytesmo definitions).

    Returns
    -------
    DataFrame
        One row per pixel (``row``, ``col``, ``n``, ``R``, ``ubRMSE``, ``bias``, ``KGE``).
    """
    p, r = np.asarray(pred, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if p.shape != r.shape or p.ndim != 3:
        raise ValidationError(f"pred {p.shape} and ref {r.shape} should be equal (time, y, x) stacks")
    rows = []
    for i in range(p.shape[1]):
        for j in range(p.shape[2]):
            m = evaluate(p[:, i, j], r[:, i, j], min_obs=min_obs)
            rows.append({"row": i, "col": j, "n": m["n_obs"], "R": m["R"], "ubRMSE": m["urmsd"], "bias": m["BIAS"],
                         "KGE": m["KGE"]})  # fmt: skip
    return pd.DataFrame(rows)
