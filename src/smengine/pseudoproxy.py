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
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from smengine.errors import ValidationError
from smengine.metrics import evaluate

__all__ = [
    "AOA",
    "PseudoproxyResult",
    "aoa",
    "era5_land_theta_eq",
    "pixel_scores",
    "run_pseudoproxy",
    "skill_by_bin",
    "station_pixels",
]

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

    The exact DI (no thinning) of :class:`smengine.model.Applicability`, the reference the
    forest carries and the engine uses.

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
    from smengine.model import Applicability

    T = np.asarray(train_X, dtype=np.float64)
    Xn = np.asarray(X, dtype=np.float64)
    if T.ndim != 2 or Xn.ndim != 2 or T.shape[1] != Xn.shape[1]:
        raise ValidationError(f"train_X {T.shape} and X {Xn.shape} should be 2-D with the same number of columns")
    ref = Applicability.fit(T, weights=weights, folds=folds, max_rows_mean=max_rows_mean, random_state=random_state)
    return _as_aoa(ref, ref.di(Xn))


def _as_aoa(ref: Any, di: np.ndarray) -> AOA:
    """:class:`AOA` of the DI ``di`` computed with the reference ``ref`` (an Applicability)."""
    with np.errstate(invalid="ignore"):
        inside = di <= ref.threshold
    return AOA(di, inside, ref.threshold, ref.train_di, ref.mean_distance, ref.weights)


def skill_by_bin(
    scores: pd.DataFrame, by: str, bins: npt.ArrayLike, metrics: tuple[str, ...] = ("R", "ubRMSE", "bias", "KGE")
) -> pd.DataFrame:
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
            rows.append(
                {
                    "row": i,
                    "col": j,
                    "n": m["n"],
                    "R": m["R"],
                    "ubRMSE": m["ubRMSE"],
                    "bias": m["bias"],
                    "KGE": m["KGE"],
                }
            )
    return pd.DataFrame(rows)


def station_pixels(grid: Any, stations: pd.DataFrame) -> dict[Any, tuple[int, int]]:
    """1-km pixel (row, col) of each station: ``stations`` indexed by id (or with an ``id``
    column), ``x``, ``y`` in the grid CRS."""
    st = stations.set_index("id") if "id" in stations.columns else stations
    rows, cols = grid.rowcol(st["x"].to_numpy(float), st["y"].to_numpy(float))
    return {sid: (int(r), int(c)) for sid, r, c in zip(st.index, np.atleast_1d(rows), np.atleast_1d(cols), strict=True)}


def era5_land_theta_eq(
    path: str | os.PathLike[str], grid: Any, days: npt.ArrayLike, bulk_density: npt.ArrayLike = 1.4
) -> np.ndarray:
    """CRNS-equivalent θ_eq of an ERA5-Land NetCDF (swvl1–4) at every pixel of ``grid``.

    Nearest 0.1° cell to each pixel centre; θ_eq by
    :func:`smengine.footprint.equivalent_soil_moisture` (D86 fixed point at r = 0, SCIENCE §4.5).

    Parameters
    ----------
    path : path
        ERA5-Land NetCDF in the CDS layout (``valid_time`` or ``time``, ``latitude``,
        ``longitude``, ``swvl1``…``swvl4`` in m³ m⁻³).
    grid : Grid
        Target 1-km grid.
    days : array_like of dates
        UTC days to take (must be in the file).
    bulk_density : array_like, optional
        Dry bulk density per pixel (Py, Px) or scalar, g cm⁻³ (default 1.4).

    Returns
    -------
    ndarray, float32, shape (n_days, Py, Px)
    """
    import xarray as xr

    from smengine.footprint import equivalent_soil_moisture
    from smengine.grid import transformer

    d = np.asarray(days, dtype="datetime64[D]")
    Py, Px = grid.shape
    rows, cols = np.meshgrid(np.arange(Py), np.arange(Px), indexing="ij")
    x, y = grid.xy(rows.ravel(), cols.ravel())
    lon, lat = transformer(grid.crs, "EPSG:4326").transform(x, y)
    with xr.open_dataset(path, engine="netcdf4") as ds:
        missing = [v for v in ("swvl1", "swvl2", "swvl3", "swvl4") if v not in ds]
        if missing:
            raise ValidationError(f"{path}: ERA5-Land variables {missing} missing")
        tname = "valid_time" if "valid_time" in ds.dims else "time"
        sel = ds[["swvl1", "swvl2", "swvl3", "swvl4"]].sel(
            latitude=xr.DataArray(lat, dims="p"), longitude=xr.DataArray(lon, dims="p"), method="nearest"
        )
        try:
            sel = sel.sel({tname: d.astype("datetime64[ns]")})
        except KeyError as exc:
            raise ValidationError(f"{path}: not every requested day is in the file ({exc})") from exc
        layers = np.stack([sel[f"swvl{k}"].values for k in (1, 2, 3, 4)])  # (4, D, P)
    rho = np.broadcast_to(np.asarray(bulk_density, dtype=np.float64), (Py, Px)).ravel()
    theta = equivalent_soil_moisture(np.clip(layers.astype(np.float64), 0.01, 0.99), bulk_density=rho[None, :])
    return np.asarray(theta, dtype=np.float32).reshape(d.size, Py, Px)


@dataclass
class PseudoproxyResult:
    """What :func:`run_pseudoproxy` found.

    Attributes
    ----------
    scores : DataFrame
        One row per pixel: row, col, n, R, ubRMSE, bias, KGE (prediction vs reference),
        distance_km to the nearest station, station_pixel, DI (median over the sampled
        days), inside_AOA (inside on at least half of them).
    by_distance, by_DI : DataFrame
        :func:`skill_by_bin` of the off-site pixels.
    aoa_table : DataFrame
        Median scores of off-site pixels inside and outside the AOA.
    aoa : AOA
        The pixel-day dissimilarity result.
    prediction : ndarray
        The pseudoproxy forest's product (days, Py, Px).
    forest : Forest
    """

    scores: pd.DataFrame
    by_distance: pd.DataFrame
    by_DI: pd.DataFrame
    aoa_table: pd.DataFrame
    aoa: AOA
    prediction: np.ndarray
    forest: Any
    summary: dict[str, float] = field(default_factory=dict)


def run_pseudoproxy(
    table: pd.DataFrame,
    features: Sequence[str],
    store: Any,
    reference: np.ndarray,
    days: npt.ArrayLike,
    stations: pd.DataFrame,
    *,
    spec: Any = None,
    swi: np.ndarray | None = None,
    n_estimators: int = 100,
    max_features: float = 1 / 3,
    min_samples_leaf: int = 5,
    random_state: int = 0,
    n_threads: int | None = None,
    sample_every: int = 7,
    distance_bins: Sequence[float] = (0, 1.5, 3, 5, 10, 25, 100, 1e4),
    min_obs: int = 30,
) -> PseudoproxyResult:
    """The pseudoproxy experiment on one tile (SCIENCE §4.5).

    1. Targets: ``reference`` (e.g. :func:`era5_land_theta_eq`) at each station's pixel on
       the days of the training ``table`` (the CRNS sampling is kept).
    2. Train the same forest (:func:`smengine.model.train`, leave-site-out CV) on the same
       ``features`` — which must not include the reference product itself.
    3. Predict every pixel and day with :func:`smengine.engine.TileRunner`.
    4. Score against ``reference`` per pixel; relate skill to the distance to the nearest
       station and to the dissimilarity index of the pixel-days (every ``sample_every``-th
       day): the engine's ``di``, from the forest's applicability reference
       (:class:`smengine.model.Applicability`: the training rows with the stations as CV
       folds and the forest's importances as weights; the pixel-mean features over the
       valid sub-pixels), the same DI every product carries.

    Parameters
    ----------
    table : DataFrame
        :func:`smengine.features.training_table` output (``station``, ``date``, features).
    features : sequence of str
    store : TileStore
        The tile to predict (its grid is the reference's grid).
    reference : ndarray, shape (n_days, Py, Px)
        The pseudo-truth on ``days``.
    days : array_like of dates
    stations : DataFrame
        ``id`` (or index), ``x``, ``y`` in the grid CRS, m.
    spec, swi : optional
        Not used: the engine computes the pixel features of the DI (kept so that existing
        calls keep working).
    n_estimators, max_features, min_samples_leaf, random_state, n_threads : see :func:`smengine.model.train`
        Use the hyper-parameters of the CRNS forest ("the same RF").
    sample_every : int, optional
        Day step of the DI sample (default 7).
    distance_bins : sequence of float, optional
        km.
    min_obs : int, optional
        Minimum days per pixel for a score.

    Returns
    -------
    PseudoproxyResult
    """
    from smengine.engine import TileRunner
    from smengine.model import train

    d = np.asarray(days, dtype="datetime64[D]")
    grid = store.grid
    Py, Px = grid.shape
    ref = np.asarray(reference)
    if ref.shape != (d.size, Py, Px):
        raise ValidationError(
            f"reference has shape {ref.shape}, expected {(d.size, Py, Px)} (days × the tile's pixels)"
        )
    names = list(features)
    st = stations.set_index("id") if "id" in stations.columns else stations
    missing = sorted(set(table["station"]) - set(st.index))
    if missing:
        raise ValidationError(f"stations table lacks {missing[:5]} (x, y needed)")
    key = station_pixels(grid, st.loc[table["station"].unique()])
    ti = np.searchsorted(d, table["date"].to_numpy().astype("datetime64[D]"))
    if (ti >= d.size).any() or (
        d[np.minimum(ti, d.size - 1)] != table["date"].to_numpy().astype("datetime64[D]")
    ).any():
        raise ValidationError("table has days outside the reference's days")
    pp = table.copy()
    pp["target"] = [ref[t, key[sid][0], key[sid][1]] for t, sid in zip(ti, pp["station"], strict=True)]
    forest = train(
        pp,
        names,
        cv=("site",),
        search=False,
        n_estimators=n_estimators,
        max_features=max_features,
        min_samples_leaf=min_samples_leaf,
        random_state=random_state,
        n_jobs=n_threads or -1,
    )
    cf = forest.compile()
    if cf.applicability is None:
        raise ValidationError("the pseudoproxy forest has no applicability reference (all importances 0?)")
    _, pred = TileRunner(store, cf, n_threads=n_threads, di=True).predict_arrays(d)
    scores = pixel_scores(pred["sm"], ref, d, min_obs=min_obs)
    xs, ys = grid.xy(scores["row"].to_numpy(), scores["col"].to_numpy())
    sxy = st.loc[list(key), ["x", "y"]].to_numpy(float)
    scores["distance_km"] = (
        np.sqrt((xs[:, None] - sxy[None, :, 0]) ** 2 + (ys[:, None] - sxy[None, :, 1]) ** 2).min(1) / 1000.0
    )
    on = set(key.values())
    scores["station_pixel"] = [(r, c) in on for r, c in zip(scores["row"], scores["col"], strict=True)]
    # DI of the sampled pixel-days: the engine's (stations as folds, importances as weights)
    di = pred["di"][::sample_every].reshape(-1, Py * Px)
    A = _as_aoa(cf.applicability, di.ravel())
    inside = np.where(np.isfinite(di), A.inside.reshape(di.shape), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # pixels without complete features (water)
        px_di, px_in = np.nanmedian(di, axis=0), np.nanmean(inside, axis=0)
    flat = scores["row"].to_numpy() * Px + scores["col"].to_numpy()
    scores["DI"] = px_di[flat]
    scores["inside_AOA"] = px_in[flat] >= 0.5
    off = scores[~scores["station_pixel"]]
    by_dist = skill_by_bin(off, "distance_km", distance_bins)
    qs = np.unique(np.nanquantile(off["DI"], [0, 0.25, 0.5, 0.75, 1.0])) if off["DI"].notna().any() else np.zeros(1)
    by_di = skill_by_bin(off, "DI", np.concatenate([[qs[0] - 1e-9], qs[1:]]) if qs.size > 1 else [0.0, 1e9])
    g = off.groupby("inside_AOA")
    aoa_tab = g[["R", "ubRMSE", "bias", "KGE"]].median().assign(n=g.size())
    summary = {
        "threshold": A.threshold,
        "inside_fraction": float(np.nanmean(inside)),
        "n_offsite": len(off),
        "median_R_offsite": float(off["R"].median()),
        "median_ubRMSE_offsite": float(off["ubRMSE"].median()),
    }
    log.info(
        "pseudoproxy: %d off-site pixels, median R %.3f, %.0f %% of pixel-days inside the AOA",
        len(off),
        summary["median_R_offsite"],
        100 * summary["inside_fraction"],
    )
    return PseudoproxyResult(scores, by_dist, by_di, aoa_tab, A, pred["sm"], forest, summary)
