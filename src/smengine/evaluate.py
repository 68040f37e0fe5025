r"""Evaluation against CRNS stations: per-site scores, surface products, monthly bias, plots.

All functions take a long table (:class:`pandas.DataFrame`) with one row per station and
UTC day — columns ``station``, ``date``, the reference (``obs``, the CRNS θ) and one
column per estimate (the emulator's leave-site-out prediction, a surface product …) —
and use :func:`smengine.metrics.evaluate` for every number, so the definitions are
pytesmo's.

* :func:`site_scores` — R, ubRMSE, bias, KGE, anomaly R (and the rest of
  :func:`~smengine.metrics.evaluate`) per site, plus the median over sites.
* :func:`product_scores` — surface products against CRNS raw and after the exponential
  filter (:func:`smengine.filters.exp_filter`) at the characteristic time T that maximises
  the median R over sites (the depth mismatch a filter can bridge; Albergel et al. 2008).
* :func:`monthly_bias` — bias per calendar month over all sites, and the linear trend of
  the monthly-mean bias over time (per year, with its p-value).
* :func:`spread_coverage`, :func:`pit_values`, :func:`pit_histogram`,
  :func:`spread_calibration` — is an uncertainty layer (e.g. the forest spread
  ``sm_uncertainty``) calibrated against a truth: coverage of ± k spread, the PIT under a
  Gaussian, and the factor that calibrates the spread.
* :func:`paired_station_ci`, :func:`metric_difference_ci`, :func:`verdict` — A against B
  with block-bootstrap intervals: the only way a report says "beats".
* :func:`knndm_folds` (with :func:`domain_points`, :func:`wasserstein_of_folds`,
  :func:`plot_knndm`) — kNNDM cross-validation folds (Linnenbrink et al. 2024) whose
  test-to-training distances match the prediction domain's.
* :func:`di_error_model` — the cross-validated error as a monotone function of the
  dissimilarity index (CAST's ``DItoErrormetric``), so a product's ``di`` maps to an
  expected error.
* ``plot_*`` — PNG figures (matplotlib, Agg): a map of one product day, station time
  series, a scatter plot, the monthly bias, a PIT histogram.

References
----------
.. [1] Albergel, C. et al. (2008). From near-surface to root-zone soil moisture using an
   exponential filter. HESS 12, 1323–1337.
.. [2] Schmidt, T. et al. (2024). Comprehensive quality assessment of satellite- and
   model-based soil moisture products against the COSMOS network in Germany. RSE.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from smengine._knndm import KNNDM, cv_distances, domain_points, knndm_folds, plot_knndm, wasserstein_of_folds
from smengine.errors import ConfigError, ValidationError
from smengine.filters import exp_filter
from smengine.metrics import evaluate

__all__ = [
    "DEFAULT_T",
    "SCORE_COLUMNS",
    "CATEGORICAL_FEATURES",
    "DIErrorModel",
    "di_error_model",
    "KNNDM",
    "cv_distances",
    "domain_points",
    "knndm_folds",
    "plot_knndm",
    "wasserstein_of_folds",
    "BETTER",
    "OUTCOMES",
    "VERDICTS",
    "PairedComparison",
    "monthly_bias",
    "pit_histogram",
    "pixel_mean_features",
    "pixel_mean_prediction",
    "pit_values",
    "plot_map",
    "plot_monthly_bias",
    "plot_pit_histogram",
    "plot_scatter",
    "plot_timeseries",
    "product_scores",
    "metric_ci",
    "metric_difference_ci",
    "paired_station_ci",
    "rmse_difference_ci",
    "verdict",
    "space_time_blocks",
    "site_scores",
    "spread_calibration",
    "spread_coverage",
    "station_time_blocks",
]

log = logging.getLogger(__name__)

#: Characteristic times (days) searched by :func:`product_scores`.
DEFAULT_T = (1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 60.0, 100.0)
#: The columns :func:`site_scores` reports: metrics named as in :data:`smengine.metrics.METRICS`.
SCORE_COLUMNS = ("n", "R", "ubRMSE", "bias", "RMSE", "KGE", "anomaly_R", "anomaly_R_35d", "NSE")


def _check(table: pd.DataFrame, cols: Sequence[str]) -> pd.DataFrame:
    missing = [c for c in ("station", "date", *cols) if c not in table.columns]
    if missing:
        raise ValidationError(f"table lacks column(s) {missing} (has {list(table.columns)})")
    t = table.copy()
    t["date"] = pd.to_datetime(t["date"]).dt.tz_localize(None).dt.normalize()
    if t.duplicated(["station", "date"]).any():
        first = t[t.duplicated(["station", "date"])].iloc[0]
        raise ValidationError(f"duplicate rows for station {first['station']!r} on {first['date']:%Y-%m-%d}")
    return t.sort_values(["station", "date"]).reset_index(drop=True)


def site_scores(table: pd.DataFrame, pred: str = "pred", obs: str = "obs", *, min_obs: int = 30) -> pd.DataFrame:
    """Scores of ``pred`` against ``obs`` per station, and their median over stations.

    Parameters
    ----------
    table : DataFrame
        Columns ``station``, ``date``, ``pred``, ``obs`` (m³ m⁻³).
    pred, obs : str
        Column names of the estimate and the reference.
    min_obs : int, optional
        Sites with fewer common days get NaN scores (default 30).

    Returns
    -------
    DataFrame
        One row per station (index) and a last row ``"median"``; columns
        :data:`SCORE_COLUMNS` (``n``, ``R``, ``ubRMSE``, ``bias``, ``RMSE``, ``KGE``,
        ``anomaly_R``, ``anomaly_R_35d``, ``NSE``).
    """
    t = _check(table, (pred, obs))
    rows = {}
    for st, g in t.groupby("station", sort=True):
        m = evaluate(g[pred].to_numpy(float), g[obs].to_numpy(float), g["date"].to_numpy(), min_obs=min_obs)
        rows[st] = {k: m[k] for k in SCORE_COLUMNS}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = "station"
    med = out.median(numeric_only=True)
    out.loc["median"] = med
    return out


def _filtered(t: pd.DataFrame, col: str, T: Sequence[float]) -> np.ndarray:
    """exp_filter of ``col`` per station over its daily series: (n_T, n_rows)."""
    out = np.full((len(T), len(t)), np.nan)
    for _, g in t.groupby("station", sort=False):
        idx = g.index.to_numpy()
        days = g["date"].to_numpy().astype("datetime64[D]").astype(np.float64)
        out[:, idx] = exp_filter(g[col].to_numpy(np.float64), days, list(T))
    return out


def product_scores(
    table: pd.DataFrame, products: Sequence[str], obs: str = "obs", *, T: Sequence[float] = DEFAULT_T, min_obs: int = 30
) -> pd.DataFrame:
    """Surface products against CRNS, raw and after the exponential filter at the best T.

    For each product the filter is run per station over its own series (missing days
    skipped); the best T maximises the median over sites of R against ``obs``.

    Parameters
    ----------
    table : DataFrame
        ``station``, ``date``, ``obs`` and one column per product (m³ m⁻³).
    products : sequence of str
        Product columns.
    T : sequence of float, optional
        Characteristic times to search, days (default :data:`DEFAULT_T`).
    min_obs : int, optional
        Minimum common days per site.

    Returns
    -------
    DataFrame
        Index (product, variant) with variant ``"raw"`` and ``"SWI T=<T>"``; columns
        median ``R``, ``ubRMSE``, ``bias``, ``KGE``, ``anomaly_R`` over sites, ``n_sites``
        and ``T`` (NaN for raw).
    """
    if not products:
        raise ConfigError("product_scores: no product columns given")
    t = _check(table, (obs, *products))
    rows: list[tuple[tuple[str, str], pd.DataFrame, float]] = []
    for p in products:
        raw = site_scores(t, p, obs, min_obs=min_obs).drop(index="median")
        rows.append(((p, "raw"), raw, np.nan))
        filt = _filtered(t, p, T)
        best, best_r, best_s = np.nan, -np.inf, None
        for k, Tk in enumerate(T):
            tk = t.assign(_swi=filt[k])
            s = site_scores(tk, "_swi", obs, min_obs=min_obs).drop(index="median")
            r = float(np.nanmedian(s["R"])) if s["R"].notna().any() else -np.inf
            if r > best_r:
                best, best_r, best_s = Tk, r, s
        if best_s is not None:
            rows.append(((p, f"SWI T={best:g}"), best_s, best))
    out = pd.DataFrame(
        [
            {
                **{
                    c: float(np.nanmedian(s[c])) if s[c].notna().any() else np.nan
                    for c in ("R", "ubRMSE", "bias", "KGE", "anomaly_R")
                },
                "n_sites": int(s["R"].notna().sum()),
                "T": Tb,
            }
            for _, s, Tb in rows
        ],
        index=pd.MultiIndex.from_tuples([k for k, _, _ in rows], names=["product", "variant"]),
    )
    return out


def monthly_bias(table: pd.DataFrame, pred: str = "pred", obs: str = "obs") -> tuple[pd.DataFrame, dict[str, float]]:
    """Bias (pred − obs) by calendar month over all sites, and its trend over time.

    Returns
    -------
    by_month : DataFrame
        Index month 1–12; columns ``bias`` (mean of pred − obs, m³ m⁻³), ``sd`` and ``n``.
    trend : dict
        ``slope_per_year`` (m³ m⁻³ per year), its ``stderr`` and two-sided ``p_value``:
        OLS of the monthly-mean bias (each year-month with data) on time in years with one
        offset per calendar month, so that the seasonal cycle is not taken for a trend;
        and ``n_months``.
    """
    t = _check(table, (pred, obs))
    d = (t[pred] - t[obs]).to_numpy(float)
    ok = np.isfinite(d)
    t = t.loc[ok].assign(_d=d[ok])
    if t.empty:
        raise ValidationError(f"no day has both {pred!r} and {obs!r}")
    g = t.groupby(t["date"].dt.month)["_d"]
    by_month = pd.DataFrame({"bias": g.mean(), "sd": g.std(ddof=1), "n": g.size()}).reindex(range(1, 13))
    by_month.index.name = "month"
    period = t["date"].dt.to_period("M")
    ym = t.groupby(period)["_d"].mean()
    # time of each year-month = mean time of its days with data, in years since 1970
    x = (t["date"] - pd.Timestamp("1970-01-01")).dt.days.groupby(period).mean().to_numpy() / 365.25
    start = pd.DatetimeIndex([p.start_time for p in ym.index])
    # linear trend with a fixed effect per calendar month (the seasonal cycle is not a trend)
    months = start.month.to_numpy()
    present = np.unique(months)
    A = np.column_stack([x - x.mean(), (months[:, None] == present[None, :]).astype(float)])
    yb = ym.to_numpy()
    trend: dict[str, float] = {"n_months": float(ym.size)}
    dof = ym.size - A.shape[1]
    if dof >= 1:
        coef, *_ = np.linalg.lstsq(A, yb, rcond=None)
        resid = yb - A @ coef
        s2 = float(resid @ resid) / dof
        se = float(np.sqrt(s2 * np.linalg.inv(A.T @ A)[0, 0]))
        tval = coef[0] / se if se > 0 else np.inf
        trend.update({"slope_per_year": float(coef[0]), "stderr": se, "p_value": float(2 * stats.t.sf(abs(tval), dof))})
    else:
        trend.update({"slope_per_year": np.nan, "stderr": np.nan, "p_value": np.nan})
    return by_month, trend


# ---------------------------------------------------------------------------------- plots
def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - matplotlib is in the plot/test extras
        raise ConfigError("plots need matplotlib: pip install 'smengine[plot]'") from exc
    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    from smengine._io import atomic_target

    p = Path(path).expanduser()
    with atomic_target(p) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png", metadata={"Software": None})
    _plt().close(fig)
    return p


def plot_map(
    ds: Any,
    day: Any,
    path: str | os.PathLike[str],
    variable: str = "sm",
    *,
    stations: pd.DataFrame | None = None,
    vmin: float = 0.0,
    vmax: float = 0.5,
) -> Path:
    """Map of one day of a product variable (with station locations, if given: columns x, y in the grid CRS)."""
    plt = _plt()
    da = ds[variable].sel(time=np.datetime64(pd.Timestamp(day), "ns"), method="nearest")
    fig, ax = plt.subplots(figsize=(6, 5))
    x, y = ds["x"].values, ds["y"].values
    dx = float(x[1] - x[0]) if x.size > 1 else 1000.0
    dy = float(y[1] - y[0]) if y.size > 1 else -1000.0
    extent = (x[0] - dx / 2, x[-1] + dx / 2, y[-1] + dy / 2, y[0] - dy / 2)
    im = ax.imshow(da.values, extent=extent, vmin=vmin, vmax=vmax, cmap="YlGnBu", interpolation="nearest")
    fig.colorbar(im, ax=ax, label=f"{variable} ({ds[variable].attrs.get('units', '')})")
    if stations is not None and {"x", "y"} <= set(stations.columns):
        ax.plot(stations["x"], stations["y"], "r^", ms=5, label="CRNS")
        ax.legend(loc="lower right")
    ax.set_title(f"{variable} {pd.Timestamp(da['time'].values):%Y-%m-%d}")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    return _save(fig, path)


def plot_timeseries(
    table: pd.DataFrame,
    station: str,
    path: str | os.PathLike[str],
    columns: Sequence[str] = ("obs", "pred"),
    *,
    title: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Daily series of one station (reference and estimates).

    ``title`` replaces the default "station <id>"; ``labels`` maps columns to legend labels."""
    plt = _plt()
    t = _check(table, columns)
    g = t[t["station"] == station]
    if g.empty:
        raise ValidationError(f"no rows for station {station!r} (have {sorted(t['station'].unique())[:10]}…)")
    fig, ax = plt.subplots(figsize=(9, 3.2))
    for c in columns:
        ax.plot(g["date"], g[c], lw=1.2 if c == columns[0] else 0.9, label=(labels or {}).get(c, c))
    ax.set_ylabel("θ (m³ m⁻³)")
    ax.set_title(title or f"station {station}")
    ax.legend(loc="upper right", ncol=len(columns))
    fig.autofmt_xdate()
    return _save(fig, path)


def plot_scatter(
    table: pd.DataFrame,
    path: str | os.PathLike[str],
    pred: str = "pred",
    obs: str = "obs",
    *,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> Path:
    """All station-days: estimate against reference, 1:1 line, pooled R and ubRMSE in the title
    (after ``title`` when given)."""
    plt = _plt()
    t = _check(table, (pred, obs))
    m = evaluate(t[pred].to_numpy(float), t[obs].to_numpy(float))
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot(t[obs], t[pred], ".", ms=2, alpha=0.4)
    lo = float(np.nanmin(t[[pred, obs]].to_numpy()))
    hi = float(np.nanmax(t[[pred, obs]].to_numpy()))
    ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    ax.set_xlabel(f"{xlabel or obs} (m³ m⁻³)")
    ax.set_ylabel(f"{ylabel or pred} (m³ m⁻³)")
    stats = f"pooled R = {m['R']:.2f}, ubRMSE = {m['ubRMSE']:.3f}, n = {m['n']}"
    ax.set_title(f"{title}\n{stats}" if title else stats, fontsize=9 if title else None)
    return _save(fig, path)


def plot_monthly_bias(by_month: pd.DataFrame, path: str | os.PathLike[str], title: str = "bias by month") -> Path:
    """Bar chart of :func:`monthly_bias`'s table (± 1 SD)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(by_month.index, by_month["bias"], yerr=by_month["sd"], capsize=2, color="tab:orange")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(1, 13))
    ax.set_xlabel("month")
    ax.set_ylabel("bias (m³ m⁻³)")
    ax.set_title(title)
    return _save(fig, path)


# ----------------------------------------------------------------------------- the uncertainty layer


def _z_scores(pred: Any, spread: Any, truth: Any) -> tuple[np.ndarray, int]:
    """Standardised errors ``(truth - pred) / spread`` (NaN where undefined), and how many
    pixel-days with a finite ``pred`` and ``truth`` were dropped for a missing or non-positive spread."""
    try:
        p, s, t = np.broadcast_arrays(
            np.asarray(pred, dtype=float), np.asarray(spread, dtype=float), np.asarray(truth, dtype=float)
        )
    except ValueError as exc:
        raise ValidationError(f"pred, spread and truth do not broadcast: {exc}") from exc
    pair = np.isfinite(p) & np.isfinite(t)
    ok = pair & np.isfinite(s) & (s > 0)
    z = np.full(p.shape, np.nan)
    z[ok] = (t[ok] - p[ok]) / s[ok]
    return z, int(np.count_nonzero(pair & ~ok))


def spread_coverage(pred: Any, spread: Any, truth: Any, *, k: Sequence[float] = (1.0, 2.0)) -> dict[str, float]:
    """Fraction of the truth inside ``pred ± k·spread``, and what a Gaussian error would give.

    Only values where ``pred``, ``spread`` and ``truth`` are finite and ``spread > 0`` count;
    the others are ignored (NaN-aware).

    Parameters
    ----------
    pred : array_like
        Estimate, e.g. the product's ``sm`` (m³ m⁻³).
    spread : array_like, broadcastable to ``pred``
        Its uncertainty, e.g. the forest spread ``sm_uncertainty`` (m³ m⁻³), read as one
        standard deviation.
    truth : array_like, broadcastable to ``pred``
        The reference (m³ m⁻³), e.g. the twin's true 1-km θ_eq.
    k : sequence of float, optional
        Half-widths of the intervals in units of ``spread`` (dimensionless, > 0).

    Returns
    -------
    dict
        ``n`` (values used), ``n_no_spread`` (values with a finite ``pred`` and ``truth``
        left out because the spread is missing or ≤ 0), and for each ``k`` (formatted with
        ``:g``) ``coverage_<k>`` — the fraction of ``|truth − pred| ≤ k·spread``, NaN if
        ``n == 0`` — and ``nominal_<k>`` = 2Φ(k) − 1, the coverage of a calibrated Gaussian
        spread (0.683 for k = 1, 0.954 for k = 2).

    Examples
    --------
    >>> c = spread_coverage([0.20, 0.20, 0.20, np.nan], [0.01, 0.01, 0.0, 0.01], [0.205, 0.215, 0.2, 0.2])
    >>> c["n"], c["n_no_spread"], c["coverage_1"], c["coverage_2"], round(c["nominal_1"], 3)
    (2, 1, 0.5, 1.0, 0.683)
    """
    ks = [float(v) for v in np.atleast_1d(np.asarray(k, dtype=float))]
    if not ks or not all(np.isfinite(v) and v > 0 for v in ks):
        raise ValidationError(f"k should be positive numbers, got {k!r}")
    z, dropped = _z_scores(pred, spread, truth)
    a = np.abs(z[np.isfinite(z)])
    out: dict[str, float] = {"n": a.size, "n_no_spread": dropped}
    for v in ks:
        out[f"coverage_{v:g}"] = float(np.mean(a <= v)) if a.size else float("nan")
        out[f"nominal_{v:g}"] = float(2.0 * stats.norm.cdf(v) - 1.0)
    return out


def pit_values(pred: Any, spread: Any, truth: Any) -> np.ndarray:
    """Probability integral transform of the truth under the Gaussian N(pred, spread²).

    PIT = Φ((truth − pred) / spread), with Φ the standard normal CDF. For a calibrated
    spread the PIT values are uniform on [0, 1] (see :func:`pit_histogram`).

    Parameters
    ----------
    pred, spread, truth : array_like, broadcastable
        Estimate, its spread (one standard deviation) and the reference, all in m³ m⁻³.

    Returns
    -------
    ndarray of float
        The PIT (dimensionless, in [0, 1]) with the broadcast shape; NaN where any input is
        not finite or the spread is ≤ 0.

    Examples
    --------
    >>> pit_values([0.2, 0.2, 0.2], [0.01, 0.01, 0.0], [0.2, 0.21, 0.3]).round(3)
    array([0.5  , 0.841,   nan])
    """
    from scipy.special import ndtr

    z, _ = _z_scores(pred, spread, truth)
    return np.asarray(ndtr(z))


def pit_histogram(pit: Any, bins: int = 10) -> np.ndarray:
    """Relative frequencies of PIT values in ``bins`` equal bins on [0, 1].

    A flat histogram (every bin ``1 / bins``) means a calibrated spread; a U shape means the
    spread is too narrow (overconfident), a hump in the middle that it is too wide, and a
    slope that the estimate is biased.

    Parameters
    ----------
    pit : array_like
        PIT values (dimensionless, in [0, 1]), e.g. from :func:`pit_values`; NaN are ignored.
    bins : int, optional
        Number of equal-width bins.

    Returns
    -------
    ndarray of float, shape (bins,)
        Fraction of the finite PIT values in each bin (sums to 1); all NaN if there is none.

    Examples
    --------
    >>> pit_histogram([0.05, 0.15, 0.55, 0.95, np.nan], bins=4)
    array([0.5 , 0.  , 0.25, 0.25])
    """
    if int(bins) != bins or bins < 1:
        raise ValidationError(f"bins should be a positive integer, got {bins!r}")
    v = np.asarray(pit, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if ((v < 0) | (v > 1)).any():
        raise ValidationError("PIT values should lie in [0, 1]")
    if not v.size:
        log.warning("pit_histogram: no finite PIT values")
        return np.full(int(bins), np.nan)
    counts, _ = np.histogram(v, bins=int(bins), range=(0.0, 1.0))
    return counts / v.size


def space_time_blocks(shape: tuple[int, int, int], pixels: int = 5, days: int = 30) -> np.ndarray:
    """Block label of every (day, row, column) of a product: ``pixels`` × ``pixels`` pixel squares
    crossed with ``days``-day periods (for block bootstraps of autocorrelated errors).

    Examples
    --------
    >>> b = space_time_blocks((60, 10, 10), pixels=5, days=30)
    >>> b.shape, int(b.max()) + 1
    ((60, 10, 10), 8)
    """
    n_t, n_y, n_x = shape
    if pixels < 1 or days < 1:
        raise ValidationError(f"block sizes should be >= 1, got pixels={pixels}, days={days}")
    t = np.arange(n_t) // days
    y = np.arange(n_y) // pixels
    x = np.arange(n_x) // pixels
    ny_b, nx_b = y.max() + 1, x.max() + 1
    return (t[:, None, None] * ny_b + y[None, :, None]) * nx_b + x[None, None, :]


def rmse_difference_ci(
    a: Any,
    b: Any,
    truth: Any,
    blocks: Any,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """RMSE(a) − RMSE(b) against ``truth`` with a block-bootstrap confidence interval.

    Errors of gridded products are correlated in space and time, so whole blocks (e.g.
    :func:`space_time_blocks`) are resampled with replacement, ``n_boot`` times, over the
    values where ``a``, ``b`` and ``truth`` are all finite; the interval is the percentile
    interval of the resampled differences. A negative difference means ``a`` is closer to
    the truth.

    Parameters
    ----------
    a, b, truth : array_like, same shape
        Two estimates and the reference, m³ m⁻³.
    blocks : array_like of int, same shape
        Block label of each value.
    n_boot : int, optional
        Resamples (default 1000).
    level : float, optional
        Confidence level (default 0.95).
    seed : int, optional
        Seed of the resampling (same inputs, same interval).

    Returns
    -------
    dict
        ``difference`` (on all values), ``ci_low``, ``ci_high`` (m³ m⁻³), ``n`` values and
        ``n_blocks``, ``level``, ``n_boot``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.random((40, 10, 10))
    >>> a, b = truth + 0.01 * rng.standard_normal(truth.shape), truth + 0.02 * rng.standard_normal(truth.shape)
    >>> r = rmse_difference_ci(a, b, truth, space_time_blocks(truth.shape, 5, 10), n_boot=200)
    >>> round(r["difference"], 3), r["ci_high"] < 0
    (-0.01, True)
    """
    r = metric_difference_ci(a, b, truth, blocks, metric="RMSE", n_boot=n_boot, level=level, seed=seed)
    keys = ("difference", "ci_low", "ci_high", "n", "n_blocks", "level", "n_boot")
    return {k: r[k] for k in keys}


# ======================================================================================
# paired comparisons: A against B with a block-bootstrap interval, and the verdict it allows
# ======================================================================================
#: Which way is better for each metric of :data:`smengine.metrics.METRICS` that a paired
#: comparison takes: ``"higher"``, ``"lower"`` or ``"abs_lower"`` (closer to 0: the bias).
BETTER: dict[str, str] = {
    "R": "higher",
    "anomaly_R": "higher",
    "anomaly_R_35d": "higher",
    "NSE": "higher",
    "KGE": "higher",
    "KGE_prime": "higher",
    "RMSE": "lower",
    "ubRMSE": "lower",
    "bias": "abs_lower",
}
#: The words of a verdict of A against B (A's side): the interval of the difference lies on
#: A's better side, holds 0, or lies on B's better side; ``"undetermined"`` when there is no
#: finite difference (e.g. R of a constant prediction).
VERDICTS = ("beats", "ties", "loses", "undetermined")
#: Per-station outcomes counted by :class:`PairedComparison` (A's side).
OUTCOMES = ("win", "tie", "loss", "undetermined")

# sufficient statistics of one block, per estimate x against the reference o (values
# centred by a constant c per group, which every metric below is invariant to or corrects):
# n, So, Soo, then per estimate Sx, Sxx, Sxo, See (e = x - o)
_N, _SO, _SOO = 0, 1, 2
_SX, _SXX, _SXO, _SEE = 0, 1, 2, 3


def _check_metric(metric: str) -> str:
    from smengine.metrics import current_name

    m = current_name(str(metric))
    if m not in BETTER:
        raise ConfigError(f"metric {metric!r} cannot be compared; choose from {', '.join(BETTER)}")
    return m


def _block_sums(o: np.ndarray, xs: Sequence[np.ndarray], codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per block: the reference's (k, 3) and each estimate's (len(xs), k, 4) sums."""
    ref = np.stack(
        [np.bincount(codes, minlength=k).astype(np.float64)]
        + [np.bincount(codes, weights=w, minlength=k) for w in (o, o * o)],
        axis=-1,
    )
    est = np.stack(
        [
            np.stack([np.bincount(codes, weights=w, minlength=k) for w in (x, x * x, x * o, (x - o) ** 2)], axis=-1)
            for x in xs
        ]
    )
    return ref, est


def _metric_from_sums(metric: str, ref: np.ndarray, est: np.ndarray, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """A metric from summed block statistics (any leading shape); NaN where undefined.

    ``shift`` is the constant the values were centred by (it only enters the KGE's β and
    the KGE′'s coefficients of variation, which are not shift-invariant).
    """
    n = ref[..., _N]
    with np.errstate(invalid="ignore", divide="ignore"):
        mo, mx = ref[..., _SO] / n, est[..., _SX] / n
        # variances from moments; below 1e-12 of the second moment they are round-off of a constant
        vo = ref[..., _SOO] / n - mo**2
        vo = np.where(vo > 1e-12 * ref[..., _SOO] / n, vo, 0.0)
        vx = est[..., _SXX] / n - mx**2
        vx = np.where(vx > 1e-12 * est[..., _SXX] / n, vx, 0.0)
        cov = est[..., _SXO] / n - mx * mo
        if metric == "bias":
            out = mx - mo
        elif metric == "RMSE":
            out = np.sqrt(est[..., _SEE] / n)
        elif metric == "ubRMSE":
            out = np.sqrt(np.maximum(est[..., _SEE] / n - (mx - mo) ** 2, 0.0))
        elif metric == "NSE":
            out = 1.0 - est[..., _SEE] / (n * vo)
        else:  # R, anomaly R (of anomaly series), KGE, KGE'
            ok = (vo > 0) & (vx > 0) & (n >= 3)
            r = np.clip(np.where(ok, cov / np.sqrt(np.where(ok, vo * vx, 1.0)), np.nan), -1.0, 1.0)
            if metric in ("R", "anomaly_R", "anomaly_R_35d"):
                out = r
            else:
                so, sx = np.sqrt(np.maximum(vo, 0.0)), np.sqrt(np.maximum(vx, 0.0))
                beta = (mx + shift) / (mo + shift)
                alpha = (sx / (mx + shift)) / (so / (mo + shift)) if metric == "KGE_prime" else sx / so
                out = 1.0 - np.sqrt((r - 1) ** 2 + (alpha - 1) ** 2 + (beta - 1) ** 2)
        bad = n < (3 if metric not in ("bias", "RMSE", "ubRMSE") else 1)
    return np.where(bad, np.nan, out)


def _signed(metric: str, value: np.ndarray) -> np.ndarray:
    """The value whose difference A − B is compared (|bias| for the bias)."""
    return np.abs(value) if BETTER[metric] == "abs_lower" else value


def verdict(ci_low: float, ci_high: float, metric: str) -> str:
    """A's verdict against B from the interval of metric(A) − metric(B) (|bias| for the bias).

    ``"beats"`` when the whole interval lies on A's better side of 0, ``"loses"`` when it lies
    on B's, ``"ties"`` when it holds 0, ``"undetermined"`` when it is not finite.

    Examples
    --------
    >>> verdict(-0.004, -0.001, "ubRMSE"), verdict(-0.01, 0.02, "R"), verdict(0.01, 0.05, "R")
    ('beats', 'ties', 'beats')
    """
    m = _check_metric(metric)
    if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "undetermined"
    if ci_low <= 0.0 <= ci_high:
        return "ties"
    a_better = ci_high < 0 if BETTER[m] in ("lower", "abs_lower") else ci_low > 0
    return "beats" if a_better else "loses"


def _percentile_ci(draws: np.ndarray, level: float, n_units: int | None = None) -> tuple[float, float]:
    """Percentile interval of bootstrap draws; with ``n_units`` (the independent units resampled)
    Hesterberg's expanded percentile interval: the tails at α′/2 with
    z(α′/2) = √(n/(n−1))·t(α/2, n−1), which restores the coverage a plain percentile interval
    loses with few units (12 month-blocks of a year, a handful of stations)."""
    d = draws[np.isfinite(draws)]
    if d.size < max(10, draws.size // 2) or (n_units is not None and n_units < 2):  # no interval
        return float("nan"), float("nan")
    tail = 0.5 * (1.0 - level)
    if n_units is not None:
        tail = float(stats.norm.sf(math.sqrt(n_units / (n_units - 1)) * stats.t.isf(tail, n_units - 1)))
    lo, hi = np.percentile(d, [100 * tail, 100 * (1 - tail)])
    return float(lo), float(hi)


def _resample_counts(rng: np.random.Generator, k: int, n_boot: int) -> np.ndarray:
    """(n_boot, k) times each of k blocks is drawn, k draws with replacement per resample."""
    draws = rng.integers(0, k, size=(n_boot, k))
    w = np.zeros((n_boot, k))
    np.add.at(w, (np.arange(n_boot)[:, None], draws), 1.0)
    return w


def _check_level(level: float, n_boot: int) -> None:
    if not 0.0 < level < 1.0 or int(n_boot) < 1:
        raise ValidationError(f"level should be in (0, 1) and n_boot >= 1, got {level}, {n_boot}")


def _pooled_draws(
    metric: str,
    ref: np.ndarray,
    ests: Sequence[np.ndarray],
    blocks: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Each estimate's metric against ``ref`` on all values, and on ``n_boot`` block resamples (the same
    blocks for every estimate, drawn from ``rng``): ``(full (E,), draws (E, n_boot), n_blocks)``; inputs
    all finite."""
    _, g = np.unique(blocks, return_inverse=True)
    k = int(g.max()) + 1
    c = float(np.mean(ref))  # centre: keeps the sums of squares well conditioned
    r_sums, e_sums = _block_sums(ref - c, [e - c for e in ests], g, k)
    w = _resample_counts(rng, k, n_boot)
    draws = _metric_from_sums(metric, np.einsum("bk,ks->bs", w, r_sums), np.einsum("bk,eks->ebs", w, e_sums), c)
    return _metric_from_sums(metric, r_sums.sum(0), e_sums.sum(1), c), draws, k


def metric_difference_ci(
    a: Any,
    b: Any,
    truth: Any,
    blocks: Any,
    *,
    metric: str = "RMSE",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """metric(a) − metric(b) against ``truth``, pooled over all values, with a block-bootstrap interval.

    The generalisation of :func:`rmse_difference_ci` to every metric of :data:`BETTER`
    (R, anomaly R of given anomaly series, NSE, KGE, KGE′, RMSE, ubRMSE, |bias|): whole
    blocks (e.g. :func:`space_time_blocks`) are resampled with replacement, ``n_boot`` times,
    over the values where ``a``, ``b`` and ``truth`` are all finite, the same blocks for both
    estimates (a paired comparison); the interval is the percentile interval of the
    resampled differences. Each resample's metric is computed exactly from per-block sums,
    so it equals the metric of the concatenated drawn values.

    Parameters
    ----------
    a, b, truth : array_like, same shape
        Two estimates and the reference (m³ m⁻³ for soil moisture).
    blocks : array_like of int, same shape
        Block label of each value.
    metric : str, optional
        A key of :data:`BETTER` (default ``"RMSE"``). For the bias the difference is of
        |bias|.
    n_boot, level, seed : optional
        Resamples (default 1000), confidence level (0.95) and seed (same inputs, same interval).

    Returns
    -------
    dict
        ``metric``, ``a``, ``b`` (the two metrics on all values), ``difference`` (of the
        metrics, |bias| for the bias), ``ci_low``, ``ci_high``, ``verdict`` (a's side, one
        of :data:`VERDICTS`), ``n`` values, ``n_blocks``, ``level``, ``n_boot``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.random((40, 10, 10))
    >>> a, b = truth + 0.01 * rng.standard_normal(truth.shape), truth + 0.02 * rng.standard_normal(truth.shape)
    >>> r = metric_difference_ci(a, b, truth, space_time_blocks(truth.shape, 5, 10), metric="ubRMSE", n_boot=200)
    >>> round(r["difference"], 3), r["verdict"]
    (-0.01, 'beats')
    """
    m = _check_metric(metric)
    A, B, T = (np.asarray(v, dtype=np.float64) for v in (a, b, truth))
    G = np.asarray(blocks)
    if not (A.shape == B.shape == T.shape == G.shape):
        raise ValidationError(f"a {A.shape}, b {B.shape}, truth {T.shape} and blocks {G.shape} should have one shape")
    _check_level(level, n_boot)
    ok = np.isfinite(A) & np.isfinite(B) & np.isfinite(T)
    out: dict[str, Any] = {"metric": m, "level": float(level), "n_boot": int(n_boot)}
    if not ok.any():
        nan = float("nan")
        return {**out, "a": nan, "b": nan, "difference": nan, "ci_low": nan, "ci_high": nan,
                "verdict": "undetermined", "n": 0, "n_blocks": 0}  # fmt: skip
    full, draws, k = _pooled_draws(m, T[ok], [A[ok], B[ok]], G[ok], int(n_boot), np.random.default_rng(seed))
    vals = _signed(m, draws)
    lo, hi = _percentile_ci(vals[0] - vals[1], level)
    diff = float(_signed(m, full[0]) - _signed(m, full[1]))
    return {
        **out,
        "a": float(full[0]),
        "b": float(full[1]),
        "difference": diff,
        "ci_low": lo,
        "ci_high": hi,
        "verdict": verdict(lo, hi, m),
        "n": int(ok.sum()),
        "n_blocks": int(k),
    }


def metric_ci(
    pred: Any,
    obs: Any,
    blocks: Any,
    *,
    metric: str = "RMSE",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    return_draws: bool = False,
) -> dict[str, Any]:
    """One estimate's metric against ``obs``, pooled over all values, with a block-bootstrap interval.

    The one-estimate companion of :func:`metric_difference_ci` (same blocks, same exact
    per-block sums): whole blocks are resampled with replacement over the values where
    ``pred`` and ``obs`` are finite.

    Parameters
    ----------
    pred, obs : array_like, same shape
        Estimate and reference.
    blocks : array_like, same shape
        Block label of each value (e.g. :func:`space_time_blocks`, or station × 30-day
        period labels).
    metric : str, optional
        A key of :data:`BETTER` (default ``"RMSE"``; the bias keeps its sign here).
    n_boot, level, seed : optional
        Resamples, confidence level, seed.
    return_draws : bool, optional
        Also return the resampled metrics (``"draws"``), e.g. to combine two independent
        estimates' intervals.

    Returns
    -------
    dict
        ``metric``, ``value``, ``ci_low``, ``ci_high``, ``n``, ``n_blocks``, ``level``,
        ``n_boot`` (and ``draws``).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> truth = rng.random((30, 8, 8))
    >>> r = metric_ci(truth + 0.02 * rng.standard_normal(truth.shape), truth, space_time_blocks(truth.shape, 4, 10))
    >>> round(r["value"], 3), r["ci_low"] < 0.02 < r["ci_high"]
    (0.02, True)
    """
    m = _check_metric(metric)
    P, R = (np.asarray(v, dtype=np.float64) for v in (pred, obs))
    G = np.asarray(blocks)
    if not (P.shape == R.shape == G.shape):
        raise ValidationError(f"pred {P.shape}, obs {R.shape} and blocks {G.shape} should have one shape")
    _check_level(level, n_boot)
    ok = np.isfinite(P) & np.isfinite(R)
    out: dict[str, Any] = {"metric": m, "level": float(level), "n_boot": int(n_boot)}
    nan = float("nan")
    if not ok.any():
        out.update(value=nan, ci_low=nan, ci_high=nan, n=0, n_blocks=0)
        if return_draws:
            out["draws"] = np.full(int(n_boot), nan)
        return out
    full, all_draws, k = _pooled_draws(m, R[ok], [P[ok]], G[ok], int(n_boot), np.random.default_rng(seed))
    draws = all_draws[0]
    lo, hi = _percentile_ci(draws, level)
    out.update(
        value=float(full[0]),
        ci_low=lo,
        ci_high=hi,
        n=int(ok.sum()),
        n_blocks=k,
    )
    if return_draws:
        out["draws"] = draws
    return out


def station_time_blocks(stations: Any, dates: Any, days: int = 30) -> np.ndarray:
    """Block label of every station-day: the station crossed with ``days``-day periods
    (calendar days since 1970 // ``days``), for block bootstraps at stations.

    Examples
    --------
    >>> station_time_blocks(["A", "A", "B"], np.array(["2020-01-01", "2020-03-01", "2020-01-01"], "M8[D]"))
    array([0, 1, 2])
    """
    if int(days) < 1:
        raise ValidationError(f"days should be >= 1, got {days}")
    st = pd.factorize(pd.Series(np.asarray(stations, dtype=object)))[0]
    t = (np.asarray(dates).astype("datetime64[D]") - np.datetime64("1970-01-01", "D")).astype(np.int64) // int(days)
    return pd.factorize(pd.Series(list(zip(st.tolist(), t.tolist(), strict=True))))[0]


@dataclass
class PairedComparison:
    """Estimate A against estimate B at stations: per-station and overall metric differences
    with block-bootstrap intervals, and the verdict they allow (:func:`paired_station_ci`).

    Differences are metric(A) − metric(B) (|bias| for the bias); :attr:`better` says which
    sign favours A. ``per_station`` has one row per scored station: ``n`` days, ``n_blocks``,
    ``a``, ``b`` (the two metrics), ``difference``, ``ci_low``, ``ci_high`` and ``outcome``
    (A's side, one of :data:`OUTCOMES`).
    """

    a: str
    b: str
    metric: str
    per_station: pd.DataFrame
    difference: float
    ci_low: float
    ci_high: float
    median_difference: float
    level: float
    n_boot: int
    block_days: int
    resample_stations: bool
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def better(self) -> str:
        """``"lower"``, ``"higher"`` or ``"abs_lower"``: the direction in which the metric is better."""
        return BETTER[self.metric]

    @property
    def verdict(self) -> str:
        """A's verdict against B over the stations (one of :data:`VERDICTS`)."""
        return verdict(self.ci_low, self.ci_high, self.metric)

    @property
    def counts(self) -> dict[str, int]:
        """Per-station wins, ties, losses and undetermined stations (A's side)."""
        vc = self.per_station["outcome"].value_counts() if len(self.per_station) else pd.Series(dtype=int)
        return {o: int(vc.get(o, 0)) for o in OUTCOMES}

    @property
    def n_stations(self) -> int:
        return int(len(self.per_station))

    def wtl(self) -> str:
        """``"3 wins, 9 ties, 3 losses of 15 stations"`` (undetermined ones named only when there are any)."""
        c = self.counts
        parts = [f"{c['win']} win{'s' * (c['win'] != 1)}", f"{c['tie']} tie{'s' * (c['tie'] != 1)}",
                 f"{c['loss']} loss{'es' * (c['loss'] != 1)}"]  # fmt: skip
        if c["undetermined"]:
            parts.append(f"{c['undetermined']} undetermined")
        return ", ".join(parts) + f" of {self.n_stations} station{'s' * (self.n_stations != 1)}"

    def interval(self, nd: int = 4) -> str:
        """``"−0.0031 (95 % interval −0.0052 … −0.0011)"``: the mean per-station difference and its interval."""
        if not math.isfinite(self.difference):
            return "not defined"
        if not (math.isfinite(self.ci_low) and math.isfinite(self.ci_high)):
            return f"{self.difference:+.{nd}f} (no interval)"
        return (
            f"{self.difference:+.{nd}f} ({round(100 * self.level)} % interval "
            f"{self.ci_low:+.{nd}f} … {self.ci_high:+.{nd}f})"
        )

    def sentence(self, labels: Mapping[str, str] | None = None) -> str:
        """One self-contained sentence: the verdict, the interval, the per-station outcomes.

        ``labels`` maps the estimates' column names to the words the sentence uses.
        """
        a, b = ((labels or {}).get(x, x) for x in (self.a, self.b))
        what = {"lower": "lower is better", "higher": "higher is better", "abs_lower": "|bias|, closer to 0 is better"}
        diff = "|bias|" if self.metric == "bias" else self.metric
        head = {
            "beats": f"{a} beats {b}",
            "loses": f"{a} loses to {b}",
            "ties": f"{a} and {b} tie (the interval holds 0)",
            "undetermined": f"{a} against {b}: no verdict ({self.metric} not defined for both)",
        }[self.verdict]
        return (
            f"{head} on {self.metric} ({what[self.better]}): mean per-station difference {diff}({a}) − "
            f"{diff}({b}) = {self.interval()}; {self.wtl()}."
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (NaN as None)."""

        def f(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "a": self.a,
            "b": self.b,
            "metric": self.metric,
            "verdict": self.verdict,
            "difference": f(self.difference),
            "ci_low": f(self.ci_low),
            "ci_high": f(self.ci_high),
            "median_difference": f(self.median_difference),
            "counts": self.counts,
            "n_stations": self.n_stations,
            "level": self.level,
            "n_boot": self.n_boot,
            "block_days": self.block_days,
            "resample_stations": self.resample_stations,
            "left_out": dict(self.left_out),
            "per_station": {
                str(s): {k: (f(v) if isinstance(v, float) else v) for k, v in r.items()}
                for s, r in self.per_station.to_dict(orient="index").items()
            },
        }


def _anomalies(table: pd.DataFrame, cols: Sequence[str], metric: str) -> pd.DataFrame:
    """Each column's anomalies per station from its own climatology (or 35-day mean), on the common rows."""
    from smengine.metrics import calc_anomaly, calc_climatology

    out = table.copy()
    for _, idx in table.groupby("station", sort=False).groups.items():
        g = table.loc[idx].sort_values("date")
        t = g["date"].to_numpy().astype("datetime64[D]")
        for c in cols:
            v = g[c].to_numpy(np.float64)
            an = calc_anomaly(v, t, calc_climatology(v, t)) if metric == "anomaly_R" else calc_anomaly(v, t)
            out.loc[g.index, c] = an
    return out


def paired_station_ci(
    table: pd.DataFrame,
    a: str,
    b: str,
    obs: str = "obs",
    *,
    metric: str = "ubRMSE",
    block_days: int = 30,
    resample_stations: bool = True,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    min_obs: int = 30,
) -> PairedComparison:
    r"""Estimate ``a`` against ``b`` at stations: paired per-station metric differences with
    block-bootstrap intervals over station × time blocks, and the verdict they allow.

    Both estimates are scored on the same station-days (``a``, ``b`` and ``obs`` finite).
    Each station's record is cut into blocks of ``block_days`` calendar days (errors are
    autocorrelated within weeks; a block keeps that correlation). For each station the
    difference :math:`\Delta_s = M(a_s) - M(b_s)` of the metric M (|bias| for the bias) is
    bootstrapped by resampling its blocks with replacement, the same blocks for ``a`` and
    ``b`` (paired); its interval is Hesterberg's expanded percentile interval for its k blocks
    (a plain percentile interval from the 12 blocks of a year covers 89 % instead of 95 % on
    simulated AR(1) errors); the station's outcome is a **win** for ``a`` when its interval lies on
    ``a``'s better side of 0, a **loss** when it lies on ``b``'s side, a **tie** otherwise.
    The overall statistic is the mean :math:`\bar\Delta` over stations; with
    ``resample_stations`` (the default) its bootstrap resamples the stations too (a
    two-stage bootstrap of clustered data: stations with replacement, then each drawn
    station's blocks), so the interval speaks for stations like these, not only for these
    stations' days (expanded for the number of stations). The verdict is **beats** only when
    the whole interval lies on ``a``'s better side, **ties** when it holds 0 (:func:`verdict`).

    Parameters
    ----------
    table : DataFrame
        Long table: ``station``, ``date`` and the columns ``a``, ``b``, ``obs``.
    a, b, obs : str
        The two estimates' columns and the reference's (m³ m⁻³).
    metric : str, optional
        A key of :data:`BETTER` (default ``"ubRMSE"``). ``anomaly_R``/``anomaly_R_35d``
        compute each series' anomalies on the common days first (as
        :func:`smengine.metrics.anomaly_r`), then correlate resampled anomalies.
    block_days : int, optional
        Days per time block (default 30).
    resample_stations : bool, optional
        Resample stations as well as their blocks for the overall interval (default True).
        False: the interval is conditional on these stations.
    n_boot, level, seed : optional
        Resamples (1000), confidence level (0.95), seed (same inputs, same result).
    min_obs : int, optional
        Stations with fewer common days are left out (and listed in ``left_out``).

    Returns
    -------
    PairedComparison

    Raises
    ------
    ConfigError
        Unknown metric or missing columns.
    ValidationError
        Bad ``level``, ``n_boot`` or ``block_days``.

    References
    ----------
    .. [1] Davison, A. C. & Hinkley, D. V. (1997). Bootstrap Methods and their Application,
       §3.8 (hierarchical data) and §8.2 (block resampling). Cambridge University Press.
    .. [2] Field, C. A. & Welsh, A. H. (2007). Bootstrapping clustered data. JRSS B 69, 369–390.
    .. [3] Hesterberg, T. C. (2015). What teachers should know about the bootstrap: resampling
       in the undergraduate statistics curriculum. Am. Stat. 69, 371–386 (expanded percentile
       interval).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> days = pd.date_range("2020-01-01", periods=365)
    >>> obs = rng.random((4, 365))
    >>> t = pd.DataFrame({"station": np.repeat(list("ABCD"), 365), "date": np.tile(days, 4), "obs": obs.ravel()})
    >>> t["good"] = t["obs"] + 0.01 * rng.standard_normal(len(t))
    >>> t["poor"] = t["obs"] + 0.05 * rng.standard_normal(len(t))
    >>> c = paired_station_ci(t, "good", "poor", metric="RMSE", n_boot=200)
    >>> c.verdict, c.counts["win"]
    ('beats', 4)
    """
    m = _check_metric(metric)
    missing = [col for col in ("station", "date", a, b, obs) if col not in table.columns]
    if missing:
        raise ConfigError(f"paired comparison: table lacks column(s) {missing}")
    _check_level(level, n_boot)
    if int(block_days) < 1:
        raise ValidationError(f"block_days should be >= 1, got {block_days}")
    t = table[["station", "date", a, b, obs]].copy()
    t.columns = pd.Index(["station", "date", "_a", "_b", "_o"])
    t["date"] = pd.to_datetime(t["date"])
    t = t[np.isfinite(t[["_a", "_b", "_o"]].to_numpy(np.float64)).all(1)]
    if m.startswith("anomaly_"):
        t = _anomalies(t, ["_a", "_b", "_o"], m)
        t = t[np.isfinite(t[["_a", "_b", "_o"]].to_numpy(np.float64)).all(1)]
    rng = np.random.default_rng(seed)
    rows, draws, left = [], [], {}
    day0 = np.datetime64("1970-01-01", "D")
    groups = t.groupby("station", sort=False).indices
    for sid in sorted(groups, key=str):
        g = t.iloc[groups[sid]]
        if len(g) < int(min_obs):
            left[str(sid)] = f"{len(g)} common days (< {int(min_obs)})"
            continue
        blk = (g["date"].to_numpy().astype("datetime64[D]") - day0).astype(np.int64) // int(block_days)
        est = [g[c].to_numpy(np.float64) for c in ("_a", "_b")]
        full, resampled, k = _pooled_draws(m, g["_o"].to_numpy(np.float64), est, blk, int(n_boot), rng)
        full, vals = _signed(m, full), _signed(m, resampled)
        d = vals[0] - vals[1]
        lo, hi = _percentile_ci(d, level, k)  # expanded for k blocks (a month-block year has k = 12)
        v = verdict(lo, hi, m)
        rows.append({"station": sid, "n": len(g), "n_blocks": k, "a": float(full[0]), "b": float(full[1]),
                     "difference": float(full[0] - full[1]), "ci_low": lo, "ci_high": hi,
                     "outcome": {"beats": "win", "loses": "loss", "ties": "tie"}.get(v, "undetermined")})  # fmt: skip
        draws.append(d)
    cols = ["n", "n_blocks", "a", "b", "difference", "ci_low", "ci_high", "outcome"]
    per = pd.DataFrame(rows, columns=["station", *cols]).set_index("station")
    nan = float("nan")
    if not rows:
        return PairedComparison(a, b, m, per, nan, nan, nan, nan, float(level), int(n_boot), int(block_days),
                                bool(resample_stations), left)  # fmt: skip
    D = np.stack(draws)  # (stations, n_boot)
    with warnings.catch_warnings():  # a resample whose every station is undefined: NaN, left out of the interval
        warnings.simplefilter("ignore", RuntimeWarning)
        if resample_stations and D.shape[0] > 1:
            pick = rng.integers(0, D.shape[0], size=(int(n_boot), D.shape[0]))
            boot = np.nanmean(D[pick, np.arange(int(n_boot))[:, None]], axis=1)
            units = D.shape[0]  # the stations are the independent units
        else:
            boot = np.nanmean(D, axis=0)
            units = int(per["n_blocks"].sum())
    diffs = per["difference"].to_numpy(np.float64)
    fin = np.isfinite(diffs)
    lo, hi = _percentile_ci(boot, level, units)
    return PairedComparison(
        a,
        b,
        m,
        per,
        float(diffs[fin].mean()) if fin.any() else nan,
        lo,
        hi,
        float(np.median(diffs[fin])) if fin.any() else nan,
        float(level),
        int(n_boot),
        int(block_days),
        bool(resample_stations),
        left,
    )


# ======================================================================================
# expected error as a function of the dissimilarity index (CAST's DItoErrormetric)
# ======================================================================================
@dataclass
class DIErrorModel:
    """Cross-validated error against the dissimilarity index, fitted monotone (:func:`di_error_model`).

    Attributes
    ----------
    metric : str
        The error metric (a key of :data:`BETTER`).
    bins : DataFrame
        One row per DI bin: ``di_low``, ``di_high``, ``di_mean``, ``n`` (rows), ``value`` (the
        metric of the bin's CV predictions) and ``fitted`` (the monotone fit at ``di_mean``).
    threshold : float or None
        The AOA threshold the rows were cut at (None: all rows used).
    """

    metric: str
    bins: pd.DataFrame
    threshold: float | None = None

    def predict(self, di: npt.ArrayLike) -> np.ndarray:
        """Expected error at each DI: the fit interpolated linearly between the bins' mean DI,
        constant beyond the first and last (an extrapolation there: see :attr:`di_max`); NaN
        where ``di`` is NaN."""
        d = np.asarray(di, dtype=np.float64)
        b = self.bins
        out = np.interp(d, b["di_mean"].to_numpy(), b["fitted"].to_numpy())
        return np.where(np.isfinite(d), out, np.nan)

    @property
    def di_max(self) -> float:
        """The largest DI the fit has seen: beyond it the expected error is held constant (a floor)."""
        return float(self.bins["di_high"].max())

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "threshold": self.threshold,
            "di_max": self.di_max,
            "bins": [{k: float(v) for k, v in r.items()} for r in self.bins.to_dict(orient="records")],
        }


def di_error_model(
    pred: npt.ArrayLike,
    obs: npt.ArrayLike,
    di: npt.ArrayLike,
    *,
    metric: str = "RMSE",
    n_bins: int = 10,
    min_per_bin: int = 50,
    threshold: float | None = None,
) -> DIErrorModel:
    """The cross-validated error as a monotone function of the dissimilarity index (DI).

    CAST's ``DItoErrormetric`` (Meyer & Pebesma 2021): out-of-fold predictions of the
    training rows and their cross-validated DI (``Applicability.train_di``, computed with
    the same folds) say how the error grows as the features move away from the training data.
    The rows (those with DI ≤ ``threshold`` when given, as CAST keeps the AOA's rows) are
    sorted by DI and cut into ``n_bins`` bins of equal counts (fewer when a bin would hold
    fewer than ``min_per_bin`` rows); the metric of each bin is fitted by isotonic regression
    weighted by the bin counts, increasing in DI for errors (RMSE, ubRMSE, |bias|) and
    decreasing for skill (R, NSE, KGE). CAST fits a shape-constrained spline (scam); the
    isotonic fit is the same monotone constraint without a smoothness choice.

    Parameters
    ----------
    pred, obs : array_like, shape (n,)
        Out-of-fold predictions and observations (m³ m⁻³).
    di : array_like, shape (n,)
        Cross-validated DI of the same rows.
    metric : str, optional
        A key of :data:`BETTER` (default ``"RMSE"``).
    n_bins, min_per_bin : int, optional
        Bins of equal counts (default 10, at least 50 rows each).
    threshold : float, optional
        Keep rows with DI ≤ threshold (the AOA threshold); default all.

    Returns
    -------
    DIErrorModel

    Raises
    ------
    ValidationError
        Shapes differ, or fewer than 2 bins' worth of complete rows.

    References
    ----------
    .. [1] Meyer, H. & Pebesma, E. (2021). Predicting into unknown space? Estimating the area
       of applicability of spatial prediction models. Methods Ecol. Evol. 12, 1620–1633.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> di = rng.random(2000)
    >>> obs = rng.random(2000)
    >>> m = di_error_model(obs + (0.01 + 0.05 * di) * rng.standard_normal(2000), obs, di)
    >>> bool(m.predict([0.1])[0] < m.predict([0.9])[0])
    True
    """
    from sklearn.isotonic import IsotonicRegression

    m = _check_metric(metric)
    P, R, D = (np.asarray(v, dtype=np.float64).ravel() for v in (pred, obs, di))
    if not (P.shape == R.shape == D.shape):
        raise ValidationError(f"pred {P.shape}, obs {R.shape} and di {D.shape} should have one shape")
    ok = np.isfinite(P) & np.isfinite(R) & np.isfinite(D)
    if threshold is not None:
        ok &= float(threshold) >= D
    n = int(ok.sum())
    nb = min(int(n_bins), n // max(int(min_per_bin), 1))
    if nb < 2:
        raise ValidationError(f"the DI-error model needs at least 2 bins of {min_per_bin} rows; got {n} complete rows")
    order = np.argsort(D[ok], kind="stable")
    p, r, d = P[ok][order], R[ok][order], D[ok][order]
    edges = np.linspace(0, n, nb + 1).round().astype(int)
    rows = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        c = float(np.mean(r[a:b]))
        ref, est = _block_sums(r[a:b] - c, [p[a:b] - c], np.zeros(b - a, dtype=np.int64), 1)
        val = float(_signed(m, _metric_from_sums(m, ref[0], est[0, 0], c)))
        rows.append({"di_low": float(d[a]), "di_high": float(d[b - 1]), "di_mean": float(d[a:b].mean()),
                     "n": int(b - a), "value": val})  # fmt: skip
    bins = pd.DataFrame(rows)
    good = np.isfinite(bins["value"].to_numpy())
    iso = IsotonicRegression(increasing=BETTER[m] != "higher", out_of_bounds="clip")
    iso.fit(bins.loc[good, "di_mean"], bins.loc[good, "value"], sample_weight=bins.loc[good, "n"])
    bins["fitted"] = iso.predict(bins["di_mean"])
    return DIErrorModel(m, bins, None if threshold is None else float(threshold))


def spread_calibration(pred: Any, spread: Any, truth: Any) -> float:
    """The factor c by which to multiply the spread to make it calibrated.

    c = sqrt(mean(z²)) with z = (truth − pred) / spread over the values where all three are
    finite and ``spread > 0``: the RMS of the standardised error. With ``c·spread`` the
    standardised error has unit mean square, as for a Gaussian N(pred, (c·spread)²). c = 1:
    calibrated; c > 1: the spread is too narrow (overconfident); c < 1: too wide. A bias of
    ``pred`` enters c (the RMS, not the SD, of z).

    Parameters
    ----------
    pred, spread, truth : array_like, broadcastable
        Estimate, its spread (one standard deviation) and the reference, all in m³ m⁻³.

    Returns
    -------
    float
        c (dimensionless); NaN if no value is usable.

    Examples
    --------
    >>> round(spread_calibration([0.2, 0.2, np.nan], [0.01, 0.01, 0.01], [0.22, 0.18, 0.2]), 6)
    2.0
    """
    z, _ = _z_scores(pred, spread, truth)
    z = z[np.isfinite(z)]
    return float(np.sqrt(np.mean(z**2))) if z.size else float("nan")


def plot_pit_histogram(
    hist: Any, path: str | os.PathLike[str], title: str = "PIT histogram (flat = calibrated spread)"
) -> Path:
    """Bar chart of :func:`pit_histogram`'s relative frequencies, with the flat line of a calibrated spread."""
    plt = _plt()
    h = np.asarray(hist, dtype=float)
    edges = np.linspace(0.0, 1.0, h.size + 1)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar(edges[:-1], h, width=np.diff(edges), align="edge", color="tab:blue", edgecolor="white")
    ax.axhline(1.0 / h.size, color="k", lw=0.8, ls="--", label="calibrated")
    ax.set_xlim(0, 1)
    ax.set_xlabel("PIT = Φ((truth − sm) / spread)")
    ax.set_ylabel("relative frequency")
    ax.set_title(title)
    ax.legend(loc="lower center", framealpha=1.0)
    return _save(fig, path)


# ======================================================================================
# f(mean_j x_j): the forest on pixel-mean covariates (the baseline of sub-pixel scaling)
# ======================================================================================
#: Features whose values are class codes: their pixel "mean" is the majority class.
CATEGORICAL_FEATURES = ("land_cover",)


def _pixel_nanmean(a: np.ndarray, s: int, min_frac: float = 0.5) -> np.ndarray:
    """(..., Y, X) sub-pixels → (..., Y/s, X/s) mean of the finite ones (NaN below ``min_frac`` of them)."""
    *lead, Y, X = a.shape
    b = a.reshape(*lead, Y // s, s, X // s, s)
    ok = np.isfinite(b)
    n = ok.sum(axis=(-3, -1))
    tot = np.where(ok, b, 0.0).sum(axis=(-3, -1), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= min_frac * s * s, tot / n, np.nan)


def _pixel_majority(a: np.ndarray, s: int) -> np.ndarray:
    """(Y, X) class codes → (Y/s, X/s) majority class (the smallest code among ties; NaN ignored)."""
    Y, X = a.shape
    b = a.reshape(Y // s, s, X // s, s).transpose(0, 2, 1, 3).reshape(Y // s, X // s, s * s)
    codes = np.unique(a[np.isfinite(a)])
    if codes.size == 0:
        return np.full((Y // s, X // s), np.nan)
    counts = np.stack([(b == c).sum(axis=-1) for c in codes], axis=-1)
    out = codes[np.argmax(counts, axis=-1)].astype(np.float64)
    return np.where(counts.max(axis=-1) > 0, out, np.nan)


def pixel_mean_features(
    x: npt.ArrayLike, names: Sequence[str], k: int, *, categorical: Sequence[str] = CATEGORICAL_FEATURES
) -> np.ndarray:
    """Per-pixel feature vectors from sub-pixel features: the mean of each numeric feature over
    the pixel's finite sub-pixels (NaN when fewer than half are finite) and the majority class
    of each categorical one.

    Parameters
    ----------
    x : array_like, shape (n_features, Y, X)
        One day's sub-pixel features (e.g. :meth:`smengine.features.FeatureBuilder.day`).
    names : sequence of str
        Feature names, in the order of ``x``.
    k : int
        Sub-pixels per pixel side.
    categorical : sequence of str, optional
        Features that are class codes (default :data:`CATEGORICAL_FEATURES`).

    Returns
    -------
    ndarray, float64, shape (n_features, Y / k, X / k)
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != len(names) or a.shape[1] % k or a.shape[2] % k:
        raise ValidationError(f"x has shape {a.shape}; expected ({len(names)}, Y, X) with Y and X multiples of {k}")
    return np.stack(
        [_pixel_majority(v, k) if n in categorical else _pixel_nanmean(v, k) for n, v in zip(names, a, strict=True)]
    )


def pixel_mean_prediction(
    fb: Any, names: Sequence[str], forest: Any, *, swi: np.ndarray | None = None, n_threads: int | None = None
) -> np.ndarray:
    """f(mean_j x_j): the forest on each pixel's mean covariates, every day of the tile.

    The baseline of sub-pixel scaling (the engine's mean_j f(x_j)): the same compiled forest
    applied once per pixel to :func:`pixel_mean_features` (numeric features averaged over the
    pixel's valid sub-pixels, ``land_cover`` by majority).

    Parameters
    ----------
    fb : smengine.features.FeatureBuilder
        The tile's features.
    names : sequence of str
        The forest's features, in its order (a subset of ``fb.names``).
    forest : CompiledForest
        The forest (``predict(X, n_threads=)`` on float32 rows).
    swi : ndarray, optional
        ``fb.swi()``, if already computed.
    n_threads : int, optional
        Threads of the forest.

    Returns
    -------
    ndarray, float64, shape (n_days, Py, Px)
        NaN where a pixel's features are incomplete; m³ m⁻³.
    """
    cols = [fb.names.index(n) for n in names]
    sw = fb.swi() if swi is None else swi
    k = int(fb.store.grid.subpixel)
    ny, nx = fb.store.grid.subpixel_shape
    out = np.full((int(fb.store.times.size), ny // k, nx // k), np.nan)
    for t in range(out.shape[0]):
        flat = pixel_mean_features(fb.day(t, swi=sw)[cols], names, k).reshape(len(names), -1)
        ok = np.isfinite(flat).all(0)
        if ok.any():
            rows = np.ascontiguousarray(flat[:, ok].T, dtype=np.float32)
            out[t].reshape(-1)[ok] = forest.predict(rows, n_threads=n_threads)
    return out
