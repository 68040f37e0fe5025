r"""Validation metrics with pytesmo's definitions and sign conventions, one name each.

Every metric is a small pure function ``f(pred, obs)``: ``pred`` is the estimate (x, the
product) and ``obs`` the reference (y, the CRNS). Pairs where either is NaN are dropped.

======================  =================================================================
metric                  definition
======================  =================================================================
:func:`pearson_r`       :math:`\mathrm{cov}(x, y)/(\sigma_x\sigma_y)`; Fisher-z CI
:func:`bias`            :math:`\bar x - \bar y` (pytesmo ``bias(x, y)``)
:func:`rmse`            :math:`\sqrt{\overline{(x - y)^2}}` (pytesmo ``rmsd``)
:func:`ubrmse`          :math:`\sqrt{\overline{((x - \bar x) - (y - \bar y))^2}}` (``ubrmsd``)
:func:`nse`             :math:`1 - \sum (y - x)^2 / \sum (y - \bar y)^2`
:func:`kge`             :math:`1 - \sqrt{(R-1)^2 + (\alpha-1)^2 + (\beta-1)^2}`, α = σx/σy, β = x̄/ȳ
:func:`kge_prime`       as KGE with γ = (σx/x̄)/(σy/ȳ) instead of α (Kling et al. 2012)
:func:`anomaly_r`       R of anomalies from each series' own climatology (or 35-day mean)
======================  =================================================================

:func:`evaluate` gives them all at once, named as in :data:`METRICS` (the names tables, model
cards and reports use too; :data:`PYTESMO_NAMES` translates to pytesmo's result names).

Climatologies follow pytesmo's ``calc_climatology``: a 5-day centred moving mean of the
series, the mean per day of year (1–366, February 29 kept apart, March 1 always day 61),
then a 35-day circular moving mean of the 366 values.

References
----------
.. [1] Gupta, H. V. et al. (2009). Decomposition of the mean squared error and NSE
   performance criteria. J. Hydrol. 377, 80–91.
.. [2] Kling, H., Fuchs, M., Paulin, M. (2012). Runoff conditions in the upper Danube basin
   under an ensemble of climate change scenarios. J. Hydrol. 424–425, 264–277.
.. [3] pytesmo (TU Wien), ``pytesmo.metrics`` and ``pytesmo.time_series.anomaly``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from smengine._days import day_numbers
from smengine.errors import ConfigError, ValidationError

__all__ = [
    "METRICS",
    "PYTESMO_NAMES",
    "Scores",
    "current_name",
    "anomaly_r",
    "bias",
    "calc_anomaly",
    "calc_climatology",
    "evaluate",
    "kge",
    "kge_prime",
    "moving_average",
    "nse",
    "pearson_r",
    "pearson_r_ci",
    "rmse",
    "ubrmse",
]


def _pairs(pred: npt.ArrayLike, obs: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(obs, dtype=np.float64)
    if x.shape != y.shape:
        raise ValidationError(f"pred {x.shape} and obs {y.shape} should have the same shape")
    ok = ~(np.isnan(x) | np.isnan(y))
    return x[ok], y[ok]


def pearson_r(pred: npt.ArrayLike, obs: npt.ArrayLike) -> float:
    """Pearson correlation coefficient (NaN for fewer than 3 pairs or a constant series).

    Examples
    --------
    >>> round(pearson_r([5, 7, 9, 2, 4.5, 6.7], [4.7, 6, 10, 2.5, 4, 6.8]), 12)
    0.961595137741
    """
    x, y = _pairs(pred, obs)
    if x.size < 3 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))


def pearson_r_ci(r: float, n: int, alpha: float = 0.05) -> tuple[float, float]:
    r"""Fisher-z confidence interval of a correlation: :math:`\tanh(\mathrm{atanh}\,r \pm z_{1-\alpha/2}/\sqrt{n-3})`.

    Examples
    --------
    >>> [round(v, 3) for v in pearson_r_ci(0.654, 34)]
    [0.406, 0.812]
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha should be in (0, 1), got {alpha}")
    if n <= 3 or not np.isfinite(r):
        return (math.nan, math.nan)
    z = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15))
    d = stats.norm.ppf(1 - alpha / 2) / math.sqrt(n - 3)
    return (math.tanh(z - d), math.tanh(z + d))


def bias(pred: npt.ArrayLike, obs: npt.ArrayLike) -> float:
    """Mean difference pred − obs (pytesmo ``bias(x, y) = mean(x) − mean(y)``)."""
    x, y = _pairs(pred, obs)
    return float(np.mean(x - y)) if x.size else math.nan


def rmse(pred: npt.ArrayLike, obs: npt.ArrayLike) -> float:
    """Root-mean-square difference (pytesmo ``rmsd``, ddof = 0)."""
    x, y = _pairs(pred, obs)
    return float(np.sqrt(np.mean((x - y) ** 2))) if x.size else math.nan


def ubrmse(pred: npt.ArrayLike, obs: npt.ArrayLike) -> float:
    """Unbiased RMSE, :math:`\\sqrt{RMSE^2 - bias^2}` (pytesmo ``ubrmsd``)."""
    x, y = _pairs(pred, obs)
    if not x.size:
        return math.nan
    d = x - y
    return float(np.sqrt(np.mean((d - d.mean()) ** 2)))


def nse(pred: npt.ArrayLike, obs: npt.ArrayLike) -> float:
    """Nash–Sutcliffe efficiency of pred against obs (pytesmo ``nash_sutcliffe(o, p)``)."""
    x, y = _pairs(pred, obs)
    den = np.sum((y - y.mean()) ** 2) if y.size else 0.0
    return float(1.0 - np.sum((y - x) ** 2) / den) if den > 0 else math.nan


def _kge(x: np.ndarray, y: np.ndarray, prime: bool) -> float:
    if x.size < 3 or y.mean() == 0 or x.std() == 0 or y.std() == 0:
        return math.nan
    r = float(np.corrcoef(x, y)[0, 1])
    beta = x.mean() / y.mean()
    var = (x.std() / x.mean()) / (y.std() / y.mean()) if prime else x.std() / y.std()
    return float(1.0 - math.sqrt((r - 1) ** 2 + (var - 1) ** 2 + (beta - 1) ** 2))


def kge(pred: npt.ArrayLike, obs: npt.ArrayLike) -> float:
    """Kling–Gupta efficiency (Gupta et al. 2009).

    Examples
    --------
    >>> round(kge([5, 7, 9, 2, 4.5, 6.7], [4.7, 6, 10, 2.5, 4, 6.8]), 12)
    0.918107377914
    """
    return _kge(*_pairs(pred, obs), prime=False)


def kge_prime(pred: npt.ArrayLike, obs: npt.ArrayLike) -> float:
    """Modified Kling–Gupta efficiency KGE' (Kling et al. 2012)."""
    return _kge(*_pairs(pred, obs), prime=True)


# ------------------------------------------------------------------------------------
# climatology and anomalies (pytesmo conventions)
# ------------------------------------------------------------------------------------
def moving_average(values: npt.ArrayLike, times: npt.ArrayLike, window: float) -> np.ndarray:
    """Centred moving mean over ``|t_i − t| <= window/2`` days, skipping NaN; NaN where the
    input is NaN (pytesmo ``moving_average`` / ``boxcar_filter``).

    Examples
    --------
    >>> moving_average([1, 2, 3, 4, np.nan, 6, 7, 8, 9, np.nan], np.arange(10.0), 5).tolist()
    [2.0, 2.5, 2.5, 3.75, nan, 6.25, 7.5, 7.5, 8.0, nan]
    """
    v = np.asarray(values, dtype=np.float64)
    t = day_numbers(times)
    if v.shape != t.shape or v.ndim != 1:
        raise ValidationError(f"values {v.shape} and times {t.shape} should be 1-D of equal length")
    ok = ~np.isnan(v)
    csum = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
    ccnt = np.concatenate([[0], np.cumsum(ok)])
    lo = np.searchsorted(t, t - window / 2.0, side="left")
    hi = np.searchsorted(t, t + window / 2.0, side="right")
    n = ccnt[hi] - ccnt[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (csum[hi] - csum[lo]) / n
    return np.where(ok & (n > 0), out, np.nan)


def _doy366(times: np.ndarray) -> np.ndarray:
    """Day of year 1–366 with March 1 always 61 (non-leap years skip 60)."""
    d = np.asarray(times).astype("datetime64[D]")
    year = d.astype("datetime64[Y]")
    doy = (d - year).astype(np.int64) + 1
    y = year.astype(np.int64) + 1970
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    return np.where(~leap & (doy >= 60), doy + 1, doy)


def calc_climatology(
    values: npt.ArrayLike,
    times: npt.ArrayLike,
    moving_avg_orig: float = 5,
    moving_avg_clim: float = 35,
    min_obs_clim: int = 1,
) -> np.ndarray:
    """Daily climatology (366 values, index 0 = January 1, index 59 = February 29).

    Parameters
    ----------
    values : array_like, shape (n,)
    times : array_like of datetime64, shape (n,)
        Increasing.
    moving_avg_orig, moving_avg_clim : float
        Window (days) of the moving means on the series and on the climatology.
    min_obs_clim : int
        Days of year with fewer observations are NaN before the climatology smoothing.

    Returns
    -------
    ndarray, shape (366,)
    """
    v = np.asarray(values, dtype=np.float64)
    t = np.asarray(times)
    smooth = moving_average(v, t, moving_avg_orig) if moving_avg_orig and moving_avg_orig > 1 else v
    doy = _doy366(t)
    ok = ~np.isnan(smooth)
    sums = np.bincount(doy[ok] - 1, weights=smooth[ok], minlength=366)
    counts = np.bincount(doy[ok] - 1, minlength=366)
    with np.errstate(invalid="ignore", divide="ignore"):
        clim = np.where(counts >= max(min_obs_clim, 1), sums / counts, np.nan)
    if moving_avg_clim and moving_avg_clim > 1:
        # circular moving mean: repeat the year on both sides
        ext = np.concatenate([clim, clim, clim])
        days = np.arange(ext.size, dtype=np.float64)
        ok = ~np.isnan(ext)
        csum = np.concatenate([[0.0], np.cumsum(np.where(ok, ext, 0.0))])
        ccnt = np.concatenate([[0], np.cumsum(ok)])
        mid = days[366:732]
        lo = np.searchsorted(days, mid - moving_avg_clim / 2.0, side="left")
        hi = np.searchsorted(days, mid + moving_avg_clim / 2.0, side="right")
        n = ccnt[hi] - ccnt[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            clim = np.where(n > 0, (csum[hi] - csum[lo]) / n, np.nan)
    return clim


def calc_anomaly(
    values: npt.ArrayLike,
    times: npt.ArrayLike,
    climatology: npt.ArrayLike | None = None,
    window_size: float = 35,
) -> np.ndarray:
    """Anomalies: ``values − climatology[doy]``, or, without a climatology, the short-term
    anomaly ``values − moving_average(values, window_size)`` (pytesmo ``calc_anomaly``)."""
    v = np.asarray(values, dtype=np.float64)
    t = np.asarray(times)
    if climatology is None:
        return v - moving_average(v, t, window_size)
    clim = np.asarray(climatology, dtype=np.float64)
    if clim.shape != (366,):
        raise ValidationError(f"climatology should have 366 values, got {clim.shape}")
    return v - clim[_doy366(t) - 1]


def anomaly_r(pred: npt.ArrayLike, obs: npt.ArrayLike, times: npt.ArrayLike, kind: str = "climatology") -> float:
    """R of anomalies; each series' climatology comes from itself over the common period.

    Parameters
    ----------
    kind : {"climatology", "moving"}
        Anomalies from the day-of-year climatology, or from a 35-day moving mean.
    """
    x = np.asarray(pred, dtype=np.float64)
    y = np.asarray(obs, dtype=np.float64)
    both = ~(np.isnan(x) | np.isnan(y))
    x, y = np.where(both, x, np.nan), np.where(both, y, np.nan)
    if kind == "climatology":
        ax = calc_anomaly(x, times, calc_climatology(x, times))
        ay = calc_anomaly(y, times, calc_climatology(y, times))
    elif kind == "moving":
        ax, ay = calc_anomaly(x, times), calc_anomaly(y, times)
    else:
        raise ConfigError(f"kind should be 'climatology' or 'moving', got {kind!r}")
    return pearson_r(ax, ay)


#: Every metric smengine reports, by the one name it has in result dicts, tables, model
#: cards and reports (the names of the CRNS and soil-moisture papers), with what it is.
#: bias, RMSE and ubRMSE are in the units of the data (m³ m⁻³ for soil moisture).
METRICS: dict[str, str] = {
    "n": "number of pairs where both pred and obs are finite",
    "R": "Pearson correlation (pearson_r)",
    "R_ci_lower": "lower bound of R's Fisher-z confidence interval",
    "R_ci_upper": "upper bound of R's Fisher-z confidence interval",
    "p_R": "p-value of R (two-sided, scipy.stats.pearsonr)",
    "bias": "mean(pred) - mean(obs) (bias)",
    "RMSE": "root-mean-square difference (rmse; pytesmo's RMSD)",
    "ubRMSE": "unbiased RMSE, sqrt(RMSE^2 - bias^2) (ubrmse; pytesmo's urmsd)",
    "NSE": "Nash-Sutcliffe efficiency (nse)",
    "KGE": "Kling-Gupta efficiency (kge)",
    "KGE_prime": "modified Kling-Gupta efficiency (kge_prime)",
    "anomaly_R": "R of anomalies from each series' day-of-year climatology (anomaly_r)",
    "anomaly_R_35d": "R of anomalies from each series' 35-day moving mean (anomaly_r, kind='moving')",
}

#: pytesmo's names (``validation_framework`` metric template) for the metrics it shares.
PYTESMO_NAMES: dict[str, str] = {
    "n": "n_obs",
    "R": "R",
    "p_R": "p_R",
    "bias": "BIAS",
    "RMSE": "RMSD",
    "ubRMSE": "urmsd",
}

#: Names earlier versions of smengine used, mapped to today's.
_OLD_NAMES = {"n_obs": "n", "BIAS": "bias", "RMSD": "RMSE", "urmsd": "ubRMSE", "anomaly_R_moving": "anomaly_R_35d"}


def current_name(name: str) -> str:
    """Today's name of a metric given by an earlier smengine spelling (or itself).

    Examples
    --------
    >>> current_name("urmsd"), current_name("R")
    ('ubRMSE', 'R')
    """
    return _OLD_NAMES.get(name, name)


class Scores(dict):  # type: ignore[type-arg]
    """The metrics of one comparison: a dict keyed by :data:`METRICS` names.

    Reading a key by its earlier smengine spelling (``n_obs``, ``BIAS``, ``RMSD``,
    ``urmsd``, ``anomaly_R_moving``) returns the value with a ``FutureWarning``.
    """

    def __missing__(self, key: str) -> Any:
        new = _OLD_NAMES.get(key)
        if new is None or new not in self:
            raise KeyError(key)
        warnings.warn(f"metric {key!r} is now called {new!r} (smengine.metrics.METRICS)", FutureWarning, stacklevel=2)
        return self[new]


def evaluate(
    pred: npt.ArrayLike,
    obs: npt.ArrayLike,
    times: npt.ArrayLike | None = None,
    *,
    alpha: float = 0.05,
    min_obs: int = 10,
) -> Scores:
    """All metrics of pred against obs, by the names of :data:`METRICS`.

    Parameters
    ----------
    pred, obs : array_like, shape (n,)
        Estimate and reference (e.g. m³ m⁻³); pairs where either is NaN are dropped.
    times : array_like of datetime64, shape (n,), optional
        Dates of the pairs; with them the anomaly correlations are computed too.
    alpha : float, optional
        1 − confidence of the Fisher-z interval of R.
    min_obs : int, optional
        Below this many pairs (and always below 3) every metric is NaN.

    Returns
    -------
    Scores
        A dict with ``n, R, R_ci_lower, R_ci_upper, p_R, bias, RMSE, ubRMSE, NSE, KGE,
        KGE_prime`` and, when ``times`` is given, ``anomaly_R`` (climatology) and
        ``anomaly_R_35d`` (35-day moving mean). pytesmo's names for them are
        :data:`PYTESMO_NAMES`; reading a result by one of those still works, with a
        ``FutureWarning``.

    Examples
    --------
    >>> s = evaluate([0.2, 0.25, 0.3, 0.28], [0.21, 0.24, 0.33, 0.27], min_obs=3)
    >>> s["n"], round(s["bias"], 4), round(s["RMSE"], 4)
    (4, -0.005, 0.0173)
    """
    x, y = _pairs(pred, obs)
    n = int(x.size)
    out = Scores(n=n)
    keys = [k for k in METRICS if k != "n" and (times is not None or not k.startswith("anomaly_"))]
    if n < max(min_obs, 3):
        out.update({k: math.nan for k in keys})
        return out
    r = pearson_r(x, y)
    lo, hi = pearson_r_ci(r, n, alpha)
    p = float(stats.pearsonr(x, y).pvalue) if np.isfinite(r) else math.nan
    out.update(
        {
            "R": r,
            "R_ci_lower": lo,
            "R_ci_upper": hi,
            "p_R": p,
            "bias": bias(x, y),
            "RMSE": rmse(x, y),
            "ubRMSE": ubrmse(x, y),
            "NSE": nse(x, y),
            "KGE": kge(x, y),
            "KGE_prime": kge_prime(x, y),
        }
    )
    if times is not None:
        out["anomaly_R"] = anomaly_r(pred, obs, times)
        out["anomaly_R_35d"] = anomaly_r(pred, obs, times, kind="moving")
    return out
