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
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats

from smengine.errors import ConfigError, ValidationError
from smengine.filters import exp_filter
from smengine.metrics import evaluate

__all__ = [
    "DEFAULT_T",
    "SCORE_COLUMNS",
    "CATEGORICAL_FEATURES",
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
    "rmse_difference_ci",
    "space_time_blocks",
    "site_scores",
    "spread_calibration",
    "spread_coverage",
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
    A, B, T = (np.asarray(v, dtype=np.float64) for v in (a, b, truth))
    G = np.asarray(blocks)
    if not (A.shape == B.shape == T.shape == G.shape):
        raise ValidationError(f"a {A.shape}, b {B.shape}, truth {T.shape} and blocks {G.shape} should have one shape")
    if not 0.0 < level < 1.0 or n_boot < 1:
        raise ValidationError(f"level should be in (0, 1) and n_boot >= 1, got {level}, {n_boot}")
    ok = np.isfinite(A) & np.isfinite(B) & np.isfinite(T)
    if not ok.any():
        nan = float("nan")
        return {
            "difference": nan,
            "ci_low": nan,
            "ci_high": nan,
            "n": 0,
            "n_blocks": 0,
            "level": level,
            "n_boot": n_boot,
        }
    codes, g = np.unique(G[ok], return_inverse=True)
    k = codes.size
    sa = np.bincount(g, weights=(A[ok] - T[ok]) ** 2, minlength=k)
    sb = np.bincount(g, weights=(B[ok] - T[ok]) ** 2, minlength=k)
    n = np.bincount(g, minlength=k).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, k, size=(n_boot, k))
    w = np.stack([np.bincount(d, minlength=k) for d in draws]).astype(np.float64)  # times each block is drawn
    nn = w @ n
    diffs = np.sqrt((w @ sa) / nn) - np.sqrt((w @ sb) / nn)
    lo, hi = np.percentile(diffs, [50 * (1 - level), 50 * (1 + level)])
    return {
        "difference": float(np.sqrt(sa.sum() / n.sum()) - np.sqrt(sb.sum() / n.sum())),
        "ci_low": float(lo),
        "ci_high": float(hi),
        "n": int(n.sum()),
        "n_blocks": int(k),
        "level": float(level),
        "n_boot": int(n_boot),
    }


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
