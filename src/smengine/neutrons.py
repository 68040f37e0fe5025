r"""From raw neutron counts to volumetric soil moisture (SCIENCE.md §5.3).

Correction factors here all *multiply* raw counts (the COSMOS-Europe / CoRNy convention);
crnpy divides by factors defined the other way round, and the tests check both agree.

.. math::

    N = N_{raw}\, f_p\, f_h\, f_i, \qquad
    \theta_v = \Big(\frac{a_0}{N/N_0 - a_1} - a_2 - W_{lat} - W_{soc}\Big)\,\rho_b

with :math:`f_p = e^{\beta (p - p_{ref})}`, :math:`f_h = 1 + \alpha (h - h_{ref})`
(Rosolem et al. 2013), :math:`f_i = 1/\big((I/I_{ref} - 1)\,c_{R_c} + 1\big)` with
:math:`c_{R_c} = 1 - 0.075 (R_{c,site} - R_{c,ref})` (Hawdon et al. 2014), and the
Desilets et al. (2010) shape :math:`a_0 = 0.0808, a_1 = 0.372, a_2 = 0.115`.

References
----------
.. [1] Desilets, D., Zreda, M., Ferré, T. P. A. (2010). Nature's neutron probe. WRR 46, W11505.
.. [2] Rosolem, R. et al. (2013). The effect of atmospheric water vapor on neutron count in the
   cosmic-ray soil moisture observing system. J. Hydrometeorol. 14, 1659–1671.
.. [3] Hawdon, A., McJannet, D., Wallace, J. (2014). Calibration and correction procedures for
   cosmic-ray neutron soil moisture probes located across Australia. WRR 50, 5029–5043.
.. [4] Jakobi, J. et al. (2020). Error estimation for soil moisture measurements with cosmic
   ray neutron sensing and implications for rover surveys. Front. Water 2, 10.
.. [5] Bogena, H. R. et al. (2022). COSMOS-Europe. ESSD 14, 1125–1151.
.. [6] Baatz, R. et al. (2015). An empirical vegetation correction for soil water content
   quantification using cosmic ray probes. WRR 51, 2030–2046 (:func:`correction_bwe`).
.. [7] Schrön, M. et al. (2017). Improving calibration and validation of cosmic-ray neutron
   sensors in the light of spatial sensitivity. HESS 21, 5009–5030 (:func:`calibrate_from_samples`).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from smengine import footprint
from smengine.errors import ConfigError, DataLossWarning, QualityWarning, ValidationError

log = logging.getLogger(__name__)

__all__ = [
    "BWE_R2_N0",
    "DESILETS",
    "SAMPLE_COLUMNS",
    "SOC_TO_WATER",
    "absolute_humidity",
    "calibrate_from_samples",
    "calibrate_n0",
    "correction_bwe",
    "counts_to_theta",
    "humidity_correction",
    "incoming_correction",
    "pressure_correction",
    "theta_to_counts",
    "theta_uncertainty",
]

#: Desilets et al. (2010) shape parameters (a0, a1, a2).
DESILETS = (0.0808, 0.372, 0.115)


def _f(name: str, x: npt.ArrayLike) -> np.ndarray:
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{name} should be numeric") from exc


def absolute_humidity(
    relative_humidity: npt.ArrayLike, temperature: npt.ArrayLike, method: str = "cosmos"
) -> np.ndarray:
    r"""Absolute humidity (g m⁻³) from relative humidity (%) and air temperature (°C).

    Parameters
    ----------
    relative_humidity : array_like
        %, in [0, 100] (NaN allowed).
    temperature : array_like
        °C.
    method : {"cosmos", "campbell"}
        ``cosmos``: the Magnus form used by COSMOS-Europe processing,
        :math:`h = 6.112\,e^{17.67T/(243.5+T)}/(273.15+T)\cdot 2.1674\cdot RH`;
        ``campbell``: Campbell & Norman (1998) as in crnpy.

    Examples
    --------
    >>> round(float(absolute_humidity(50.0, 20.0)), 3)
    8.639
    """
    rh = _f("relative_humidity", relative_humidity)
    t = _f("temperature", temperature)
    with np.errstate(invalid="ignore"):
        if ((rh < 0) | (rh > 100)).any():
            raise ValidationError("relative_humidity should be in [0, 100] %")
    if method == "cosmos":
        return 6.112 * np.exp(17.67 * t / (243.5 + t)) / (273.15 + t) * 2.1674 * rh
    if method == "campbell":
        e_sat = 0.611 * np.exp(17.502 * t / (t + 240.97)) * 1000.0
        return 2.16679 * e_sat * rh / 100.0 / (t + 273.15)
    raise ConfigError(f"method should be 'cosmos' or 'campbell', got {method!r}")


def pressure_correction(pressure: npt.ArrayLike, reference: float = 1013.25, beta: float = 0.0076) -> np.ndarray:
    r"""Pressure factor :math:`e^{\beta (p - p_{ref})}` multiplying raw counts (β in hPa⁻¹).

    Examples
    --------
    >>> round(float(pressure_correction(900.0)), 4)
    0.4229
    """
    p = _f("pressure", pressure)
    with np.errstate(invalid="ignore"):
        if (p <= 0).any():
            raise ValidationError("pressure should be > 0 hPa")
    return np.exp(beta * (p - reference))


def humidity_correction(abs_humidity: npt.ArrayLike, reference: float = 0.0, alpha: float = 0.0054) -> np.ndarray:
    """Water-vapour factor :math:`1 + \\alpha (h - h_{ref})` multiplying raw counts (h in g m⁻³).

    Examples
    --------
    >>> round(float(humidity_correction(20.0)), 1)
    1.1
    """
    h = _f("abs_humidity", abs_humidity)
    with np.errstate(invalid="ignore"):
        if (h < 0).any():
            raise ValidationError("abs_humidity should be >= 0 g m-3")
    return 1.0 + alpha * (h - reference)


def incoming_correction(
    incoming: npt.ArrayLike,
    reference: float,
    rc_site: float | None = None,
    rc_reference: float | None = None,
) -> np.ndarray:
    r"""Incoming-flux factor multiplying raw counts (Zreda 2012; Hawdon 2014 rigidity scaling).

    Parameters
    ----------
    incoming : array_like
        Neutron-monitor counts (e.g. Jungfraujoch), any unit consistent with ``reference``.
    reference : float
        Reference incoming flux (COSMOS-Europe uses 150 counts/s at JUNG).
    rc_site, rc_reference : float, optional
        Cutoff rigidities (GV) of the site and the monitor (JUNG: 4.49 GV); both or neither.

    Returns
    -------
    ndarray
        :math:`1/((I/I_{ref} - 1)\,c + 1)`, with c = 1 without rigidities.
    """
    i = _f("incoming", incoming)
    if not reference > 0:
        raise ConfigError("reference incoming flux should be > 0")
    if (rc_site is None) != (rc_reference is None):
        raise ConfigError("give both rc_site and rc_reference, or neither")
    c = 1.0 if rc_site is None else 1.0 - 0.075 * (rc_site - rc_reference)  # type: ignore[operator]
    return 1.0 / ((i / reference - 1.0) * c + 1.0)


def _check_site(n0: float, bulk_density: float) -> None:
    if not (n0 > 0 and bulk_density > 0):
        raise ConfigError(f"n0 and bulk_density should be > 0, got {n0}, {bulk_density}")


def counts_to_theta(
    counts: npt.ArrayLike,
    n0: float,
    bulk_density: float,
    lattice_water: float = 0.0,
    soc: float = 0.0,
    a: tuple[float, float, float] = DESILETS,
) -> np.ndarray:
    r"""Volumetric soil moisture from corrected counts (Desilets 2010 with W_lat, W_soc).

    Counts at or below :math:`a_1 N_0` have no solution and give NaN.

    Examples
    --------
    >>> round(float(counts_to_theta(2580, 3767, 1.33, lattice_water=0.033)), 2)
    0.15
    """
    n = _f("counts", counts)
    _check_site(n0, bulk_density)
    a0, a1, a2 = a
    with np.errstate(divide="ignore", invalid="ignore"):
        x = n / n0 - a1
        theta = (a0 / x - a2 - lattice_water - soc) * bulk_density
    return np.where(x > 0, theta, np.nan)


def theta_to_counts(
    theta: npt.ArrayLike,
    n0: float,
    bulk_density: float,
    lattice_water: float = 0.0,
    soc: float = 0.0,
    a: tuple[float, float, float] = DESILETS,
) -> np.ndarray:
    r"""Inverse of :func:`counts_to_theta`: :math:`N = N_0\,(a_0/(\theta/\rho_b + a_2 + W_{lat} + W_{soc}) + a_1)`."""
    th = _f("theta", theta)
    _check_site(n0, bulk_density)
    a0, a1, a2 = a
    return n0 * (a0 / (th / bulk_density + a2 + lattice_water + soc) + a1)


def theta_uncertainty(
    counts: npt.ArrayLike,
    sigma_counts: npt.ArrayLike,
    n0: float,
    bulk_density: float,
    a: tuple[float, float, float] = DESILETS,
) -> np.ndarray:
    r"""Soil-moisture uncertainty from count uncertainty (Jakobi et al. 2020, Taylor expansion).

    .. math:: \sigma_\theta = \sigma_N \frac{a_0 N_0}{(N - a_1 N_0)^4}
              \sqrt{(N - a_1 N_0)^4 + 8\sigma_N^2 (N - a_1 N_0)^2 + 15\sigma_N^4}\;\rho_b
    """
    n = _f("counts", counts)
    s = _f("sigma_counts", sigma_counts)
    _check_site(n0, bulk_density)
    a0, a1, _ = a
    d = n - a1 * n0
    with np.errstate(divide="ignore", invalid="ignore"):
        out = s * a0 * n0 / d**4 * np.sqrt(d**4 + 8 * s**2 * d**2 + 15 * s**4) * bulk_density
    return np.where(d > 0, out, np.nan)


def calibrate_n0(
    counts: npt.ArrayLike,
    total_water: npt.ArrayLike,
    a: tuple[float, float, float] = DESILETS,
) -> np.ndarray:
    r"""N0 from corrected counts and the total gravimetric water of a calibration campaign.

    Inverts the Desilets relation for N0:
    :math:`N_0 = N / \big(a_0/(w_{tot} + a_2) + a_1\big)` with
    :math:`w_{tot} = \theta_v/\rho_b + W_{lat} + W_{soc}` (g g⁻¹), the footprint-weighted
    field mean of the samples. N0 belongs to the correction convention of ``counts``.

    Parameters
    ----------
    counts : array_like
        Corrected count rate during the campaign, cph, > 0.
    total_water : array_like
        Total gravimetric water (pore + lattice + SOC), g g⁻¹, >= 0.
    a : (float, float, float), optional
        Desilets shape parameters.

    Returns
    -------
    ndarray
        N0, cph.

    Examples
    --------
    >>> n0 = float(calibrate_n0(2580.0, 0.15 / 1.33 + 0.033))
    >>> round(n0), round(float(counts_to_theta(2580.0, n0, 1.33, 0.033)), 6)
    (3784, 0.15)
    """
    n = _f("counts", counts)
    w = _f("total_water", total_water)
    if not (np.all(n > 0) and np.all(w >= 0)):
        raise ValidationError("counts should be > 0 cph and total_water >= 0 g g-1")
    a0, a1, a2 = a
    return n / (a0 / (w + a2) + a1)


# ======================================================================================
# biomass correction and calibration from field samples
# ======================================================================================
#: Default r2/N0 of :func:`correction_bwe` (Baatz et al. 2015; crnpy 0.8.0 default), per kg m⁻² BWE.
BWE_R2_N0 = 0.0053


def correction_bwe(bwe: npt.ArrayLike, r2_n0: float = BWE_R2_N0) -> np.ndarray:
    r"""Biomass factor :math:`f_v = 1/(1 - (r_2/N_0)\,\mathrm{BWE})` multiplying counts (Baatz et al. 2015).

    Above-ground biomass moderates fast neutrons, so counts over vegetation are scaled up.
    ``counts * correction_bwe(bwe, r2_n0)`` equals crnpy 0.8.0
    ``correction_bwe(counts, bwe, r2_N0)`` (``counts / (1 - bwe * r2_N0)``).

    Parameters
    ----------
    bwe : array_like
        Biomass water equivalent, kg m⁻², >= 0 (crnpy ``biomass_to_bwe``: fresh − dry + 0.494 · dry).
    r2_n0 : float, optional
        Fractional count reduction per kg m⁻² BWE, kg⁻¹ m². Default 0.0053 = r2/N0 with
        r2 = 6.4 cph per kg m⁻² and N0 = 1210 cph, the value crnpy 0.8.0 takes from Baatz et al.
        (2015) (its abstract rounds it to "0.9 % per 2 kg BWE m⁻²"). For *dry* biomass use
        11.19/1210 ≈ 0.00925 (0.9 % per kg m⁻², COSMOS-Europe processing).

    Returns
    -------
    ndarray
        f_v, dimensionless, >= 1.

    Raises
    ------
    ValidationError
        If BWE < 0 or r2_n0 · BWE >= 1 (no finite correction).
    ConfigError
        If r2_n0 is negative or not finite.

    References
    ----------
    Baatz, R., Bogena, H. R., Hendricks Franssen, H.-J., Huisman, J. A., Montzka, C., Vereecken, H.
    (2015). An empirical vegetation correction for soil water content quantification using cosmic
    ray probes. Water Resour. Res. 51, 2030–2046. doi:10.1002/2014WR016443

    Examples
    --------
    >>> round(float(420 * correction_bwe(51.5)))  # Baatz et al. (2015) Table 3: 420 → 574 ± 5 cph
    578
    """
    b = _f("bwe", bwe)
    if not (np.isfinite(r2_n0) and r2_n0 >= 0):
        raise ConfigError(f"r2_n0 should be a finite number >= 0 per kg m-2, got {r2_n0}")
    with np.errstate(invalid="ignore"):
        if (b < 0).any():
            raise ValidationError("bwe should be >= 0 kg m-2")
        d = 1.0 - r2_n0 * b
        if (d <= 0).any():
            raise ValidationError(f"r2_n0 * bwe should be < 1; bwe up to {np.nanmax(b):g} kg m-2 is too large")
    return 1.0 / d


#: Recognised sample-table column names per role (compared lower case, non-alphanumerics dropped).
SAMPLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "date": ("date", "datetime", "datetimeutc", "timestamp", "time", "campaign", "campaigndate", "samplingdate"),
    "profile": ("profile", "profileid", "pid", "core", "corenumber", "coreid", "location", "locationid"),
    "distance": (
        "distance",
        "distancem",
        "distancetocrnsm",
        "distancetocrns",
        "distancefromstation",
        "distancefromsensor",
        "radialdistance",
    ),
    "depth": ("depth", "depthcm", "profiledepthcm", "profiledepth", "sampledepth", "sampledepthcm", "middepth"),
    "top_depth": ("topdepth", "topdepthcm", "depthtop", "upperdepth"),
    "bottom_depth": ("bottomdepth", "bottomdepthcm", "depthbottom", "lowerdepth"),
    "theta_v": ("thetav", "vwc", "volumetricwatercontent", "soilmoisturevolumetric", "soilmoisturem3m3"),
    "theta_g": ("thetag", "gwc", "gravimetricwatercontent", "soilmoisturegravimetric", "soilmoisturegg"),
    "bulk_density": ("bulkdensity", "bulkdensitygcm3", "drybulkdensity", "drybulkdensitygcm3", "rhob", "bd"),
    "lattice_water": ("latticewater", "latticewatergg", "wlat", "lw"),
    "soc": ("soc", "soilorganiccarbon", "soilorganiccarbongg", "organiccarbon"),
}

#: Soil organic carbon (g g⁻¹) → water equivalent (g g⁻¹): SOM ≈ 2 SOC, and the water
#: equivalent of cellulose-like organic matter is 5·18/162 = 0.556 (neptoon's convention).
SOC_TO_WATER = 2.0 * 0.556


def _column_key(name: object) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def _sample_columns(samples: pd.DataFrame, columns: Mapping[str, str] | None) -> dict[str, str]:
    given = dict(columns or {})
    unknown = sorted(set(given) - set(SAMPLE_COLUMNS))
    if unknown:
        raise ConfigError(f"unknown column role(s) {unknown}; roles are {sorted(SAMPLE_COLUMNS)}")
    absent = sorted(v for v in given.values() if v not in samples.columns)
    if absent:
        raise ConfigError(f"column(s) {absent} not in samples; found {list(samples.columns)}")
    keys: dict[str, str] = {}
    for c in samples.columns:
        keys.setdefault(_column_key(c), c)
    out = {}
    for role, candidates in SAMPLE_COLUMNS.items():
        if role in given:
            out[role] = given[role]
            continue
        hit = next((keys[k] for k in candidates if k in keys), None)
        if hit is not None:
            out[role] = hit
    return out


def _numeric(samples: pd.DataFrame, cols: dict[str, str], role: str) -> np.ndarray:
    if role not in cols:
        return np.full(len(samples), np.nan)
    return pd.to_numeric(samples[cols[role]], errors="coerce").to_numpy(dtype=np.float64)


def _campaign_times(values: pd.Series, date_format: str | None) -> pd.DatetimeIndex:
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.DatetimeIndex(values)
    s = values.astype("string").str.strip()
    if date_format is not None:
        return pd.DatetimeIndex(pd.to_datetime(s, format=date_format, errors="coerce"))
    t = pd.to_datetime(s, format="ISO8601", errors="coerce")
    if t.isna().sum() > s.isna().sum():  # not ISO 8601: day first, as in European sample sheets
        t = pd.to_datetime(s, dayfirst=True, errors="coerce")
    return pd.DatetimeIndex(t)


def _like(t: pd.Timestamp, index: pd.DatetimeIndex) -> pd.Timestamp:
    """``t`` in the time zone convention of ``index`` (naive times are taken as the index's zone)."""
    if index.tz is None:
        return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t
    return t.tz_localize(index.tz) if t.tzinfo is None else t.tz_convert(index.tz)


def _at_campaign(
    x: float | pd.Series | None, start: pd.Timestamp, end: pd.Timestamp, centre: pd.Timestamp, name: str
) -> float:
    """Scalar as is; a time series as its mean over [start, end], else its value nearest ``centre``."""
    if x is None:
        return math.nan
    if not isinstance(x, pd.Series):
        return float(x)
    if not isinstance(x.index, pd.DatetimeIndex):
        raise ValidationError(f"{name} should be a number or a Series on a DatetimeIndex")
    s = pd.to_numeric(x, errors="coerce").dropna().sort_index()
    if s.empty:
        return math.nan
    lo, hi, c = (_like(t, s.index) for t in (start, end, centre))
    inside = s[(s.index >= lo) & (s.index <= hi)]
    if len(inside):
        return float(inside.mean())
    k = int(np.argmin(np.abs((s.index - c).to_numpy(dtype="timedelta64[s]").astype(np.float64))))
    log.info("%s: no value in %s…%s; using the nearest one, at %s", name, lo, hi, s.index[k])
    return float(s.iloc[k])


def _infer_profiles(r: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Profile numbers for a table without profile ids: a new profile where the distance changes
    or the depth does not increase (the usual layout of a sample sheet)."""
    pid = np.zeros(len(r), dtype=np.int64)
    for i in range(1, len(r)):
        same = (r[i] == r[i - 1] or (np.isnan(r[i]) and np.isnan(r[i - 1]))) and z[i] > z[i - 1]
        pid[i] = pid[i - 1] + (0 if same else 1)
    return pid


def _skip_reasons(
    t: pd.DatetimeIndex,
    r: np.ndarray,
    z: np.ndarray,
    theta_v: np.ndarray,
    theta_g: np.ndarray,
    rho: np.ndarray,
    gravimetric: bool,
) -> np.ndarray:
    """Why each sample cannot be used ('' where it can); the first failing check is reported."""
    checks = [
        (np.asarray(t.isna()), "missing date"),
        (np.isnan(r), "missing distance"),
        (r < 0, "negative distance"),
        (np.isnan(z), "missing depth"),
        (z < 0, "negative depth"),
        (np.isnan(theta_v) & np.isnan(theta_g), "missing water"),
        (np.isnan(theta_v) | (gravimetric & np.isnan(theta_g)), "missing bulk density"),
        ((theta_v == 0) | (theta_g == 0), "zero water"),
        ((theta_v < 0) | (theta_g < 0), "negative water"),
        (theta_v >= 1, "water >= 1 m3/m3"),
    ]
    reason = np.full(len(r), "", dtype=object)
    with np.errstate(invalid="ignore"):
        for bad, why in checks:
            reason[(reason == "") & np.asarray(bad, dtype=bool)] = why
    return reason


def _count_reasons(reasons: npt.ArrayLike) -> str:
    vals, n = np.unique(np.asarray([x for x in np.asarray(reasons).ravel() if x], dtype=str), return_counts=True)
    return "; ".join(f"{v}: {int(k)}" for v, k in zip(vals, n, strict=True))


def calibrate_from_samples(
    samples: pd.DataFrame,
    counts: pd.Series | pd.DataFrame,
    *,
    bulk_density: float | None = None,
    lattice_water: float | None = None,
    soc: float | None = None,
    humidity: float | pd.Series | None = None,
    pressure: float | pd.Series | None = None,
    vegetation_height: float | pd.Series = 0.0,
    columns: Mapping[str, str] | None = None,
    date: Any = None,
    date_format: str | None = None,
    window: str | pd.Timedelta | None = None,
    basis: Literal["volumetric", "gravimetric"] = "volumetric",
    soc_to_water: float = SOC_TO_WATER,
    tol: float = 1e-6,
    a: tuple[float, float, float] = DESILETS,
) -> pd.DataFrame:
    r"""N0 of each calibration campaign from soil samples and corrected counts (Schrön et al. 2017).

    For every campaign day the samples are weighted with the Schrön et al. (2017) iteration
    (:func:`smengine.footprint.weighted_profile_average`: vertical weights
    :math:`e^{-2d/D_{86}}` within each profile, horizontal weights :math:`W_r(r^*, h, \theta)`
    across profiles) at that day's humidity, pressure and vegetation height, and the Desilets
    et al. (2010) relation is inverted for N0 (:func:`calibrate_n0`) with the campaign's mean
    corrected count :math:`\bar N`:

    .. math::

        N_0 = \bar N \Big/ \Big(\frac{a_0}{w + a_2} + a_1\Big), \qquad
        w = \theta_{field}/\rho_b + W_{lat} + W_{soc}

    so that ``counts_to_theta(N̄, N0, ρ_b, W_lat, W_soc)`` returns the weighted field θ
    (crnpy's calibration example does the same). ``basis="gravimetric"`` instead takes
    :math:`w = \sum_k \omega_k w_{g,k} + W_{lat} + W_{soc}` with the same sample weights
    :math:`\omega_k` (neptoon's field average); the two differ where bulk density varies
    between samples.

    Parameters
    ----------
    samples : pandas.DataFrame
        One row per soil sample. Columns are found by name (see :data:`SAMPLE_COLUMNS`, e.g.
        crnpy's and neptoon's sheets) or given in ``columns``:

        - ``date``: campaign date (or date and time); several campaigns in one table are
          told apart by calendar day. Not needed when ``date`` is given.
        - ``profile``: profile (core) id; without it a new profile starts where the distance
          changes or the depth stops increasing.
        - ``distance``: distance from the sensor, m.
        - ``depth`` (mid-depth), or ``top_depth`` and ``bottom_depth``: cm.
        - ``theta_v`` (volumetric water, m³ m⁻³) and/or ``theta_g`` (gravimetric, g g⁻¹);
          θ_v is used when both are there, θ_g · ρ_b otherwise.
        - ``bulk_density``: dry bulk density of the sample, g cm⁻³ (else ``bulk_density``).
        - ``lattice_water``: g g⁻¹; ``soc``: soil organic *carbon*, g g⁻¹, turned into a water
          equivalent with ``soc_to_water``. Both optional.
    counts : pandas.Series or pandas.DataFrame
        Corrected neutron count rate, cph, on a DatetimeIndex (pressure, humidity, incoming
        and, if wanted, :func:`correction_bwe` already applied; N0 belongs to that correction
        convention). A DataFrame needs a ``counts`` column and may carry ``abs_humidity``
        (g m⁻³) and ``pressure`` (hPa) columns.
    bulk_density : float, optional
        Site dry bulk density, g cm⁻³. Used for the D86 of the weighting and for the N0
        inversion, and for samples without their own. Default: the mean of the samples'
        bulk densities (crnpy issue #9: the whole field moderates, not the core).
    lattice_water, soc : float, optional
        Site lattice water and soil-organic-carbon water equivalent W_soc, g g⁻¹, used when
        the samples have no such column (or no value in it); with a column, its mean over
        the used samples (SOC × ``soc_to_water``). Unknown everywhere: 0 is assumed, with a
        :class:`~smengine.errors.QualityWarning`, and named in ``attrs["assumed_zero"]``.
    humidity : float or pandas.Series, optional
        Absolute air humidity, g m⁻³: a number, or a series averaged over each campaign's
        count window. Default: the ``abs_humidity`` column of ``counts``.
    pressure : float or pandas.Series, optional
        Air pressure, hPa, as ``humidity``. Default: the ``pressure`` column of ``counts``,
        else 1013.25 hPa (logged).
    vegetation_height : float or pandas.Series, optional
        Vegetation height, m (default 0); a series is averaged over the window or taken at
        the nearest time.
    columns : mapping, optional
        Role → column name, overriding the search by name.
    date : date-like, optional
        Campaign date for a table without a date column (all rows one campaign).
    date_format : str, optional
        ``strftime`` format of the date column. Default: ISO 8601, else day first.
    window : str or pandas.Timedelta, optional
        Count window centred on the campaign's median sample time (12:00 for date-only
        entries), e.g. ``"6h"`` as neptoon. Default: the whole calendar day. To average only
        the sampling hours, pass counts restricted to them.
    basis : {"volumetric", "gravimetric"}, optional
        Field water that the N0 inversion matches (see above). Default volumetric.
    soc_to_water : float, optional
        g water equivalent per g organic carbon for a ``soc`` column (default 2 × 0.556).
    tol : float, optional
        Convergence tolerance of the weighting, m³ m⁻³ (default 1e-6; crnpy uses 0.01).
    a : (float, float, float), optional
        Desilets shape parameters.

    Returns
    -------
    pandas.DataFrame
        One row per campaign, indexed by the campaign day (``date``, in the time zone of
        ``counts``; ``frame["n0"]`` can be given to :func:`smengine.stations.counts_to_sm` as
        N0 periods), with columns:

        ``n_samples``, ``n_skipped`` (samples used and skipped), ``skipped`` (reasons and
        counts, '' if none), ``n_profiles``, ``theta`` (footprint-weighted θ, m³ m⁻³),
        ``theta_mean`` (arithmetic mean), ``theta_se`` (standard error of the weighted
        mean from the sample spread, Kish effective sample size; g g⁻¹ in the gravimetric
        basis), ``water_total`` (w of the inversion, g g⁻¹), ``bulk_density_weighted`` (the
        samples' bulk density with the same weights, g cm⁻³, for information), ``counts``
        (mean corrected count, cph), ``counts_std`` (its Poisson σ, √(N̄/T) for T counting
        hours), ``n_counts``, ``humidity``, ``pressure``,
        ``vegetation_height``, ``d86`` (footprint-weighted D86, cm), ``n_iter``, ``n0``
        (cph), ``n0_std`` (both errors together) and its parts ``n0_std_counts``,
        ``n0_std_samples``.

        ``frame.attrs``: ``n0_mean`` (mean N0 over campaigns), ``n0_std`` (its propagated σ),
        ``n0_spread`` (standard deviation between campaigns, NaN for one), ``n0_lsq`` (the
        N0 minimising the count RMSE over all campaigns, as neptoon and COSMOS-Europe fit),
        ``bulk_density``, ``lattice_water``, ``soc`` (the site values used; N0 belongs to
        them, so convert counts with these), ``assumed_zero`` (which of lattice water and
        SOC were unknown and taken as 0) and ``basis``.

    Raises
    ------
    ConfigError
        On unknown column roles or options, without humidity, or when no bulk density is
        available.
    ValidationError
        On missing required columns, or when no campaign can be calibrated.

    Warns
    -----
    DataLossWarning
        When samples (0 g/g, missing values) or campaigns (no counts, no humidity) are
        skipped; the message counts them and says why.

    Notes
    -----
    The weighting uses θ alone in D86 (as crnpy's ``nrad_weight``), the field mean θ in W_r
    (not the profile mean, unlike neptoon) and the site bulk density. N0 uncertainty:
    :math:`\sigma_{N_0}^2 = (\sigma_N/f)^2 + (\bar N a_0 \sigma_w / ((w+a_2)^2 f^2))^2`,
    :math:`f = a_0/(w+a_2) + a_1`, with :math:`\sigma_w` = ``theta_se``/ρ_b (``theta_se`` in
    the gravimetric basis); the Poisson
    term assumes the values are rates over their sampling interval.

    References
    ----------
    Schrön, M. et al. (2017). Improving calibration and validation of cosmic-ray neutron sensors
    in the light of spatial sensitivity. Hydrol. Earth Syst. Sci. 21, 5009–5030,
    doi:10.5194/hess-21-5009-2017.
    Desilets, D., Zreda, M., Ferré, T. P. A. (2010). Nature's neutron probe: land surface
    hydrology at an elusive scale with cosmic rays. Water Resour. Res. 46, W11505,
    doi:10.1029/2009WR008726.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> samples = pd.DataFrame({
    ...     "date": "2021-10-22", "profile": [1, 1, 2, 2, 3, 3],
    ...     "distance": [5, 5, 50, 50, 100, 100], "depth": [5, 15] * 3,
    ...     "theta_g": [0.20, 0.22, 0.18, 0.21, 0.0, 0.20], "bulk_density": 1.3})
    >>> t = pd.date_range("2021-10-22", periods=24, freq="h", tz="UTC")
    >>> counts = pd.Series(1600.0, index=t)
    >>> import warnings
    >>> from smengine.errors import DataLossWarning
    >>> with warnings.catch_warnings():  # one sample has 0 g/g: skipped, with a DataLossWarning
    ...     warnings.simplefilter("ignore", DataLossWarning)
    ...     cal = calibrate_from_samples(
    ...         samples, counts, humidity=8.0, pressure=965.0, lattice_water=0.0, soc=0.0)
    >>> row = cal.iloc[0]
    >>> int(row["n_samples"]), int(row["n_skipped"]), row["skipped"]
    (5, 1, 'zero water: 1')
    >>> round(cal.attrs["n0_mean"])
    2552
    >>> bool(np.isclose(counts_to_theta(1600.0, cal.attrs["n0_mean"], 1.3), row["theta"]))  # back to θ
    True
    """
    if not isinstance(samples, pd.DataFrame) or samples.empty:
        raise ValidationError("samples should be a non-empty pandas DataFrame")
    if basis not in ("volumetric", "gravimetric"):
        raise ConfigError(f"basis should be 'volumetric' or 'gravimetric', got {basis}")
    if not (np.isfinite(soc_to_water) and soc_to_water > 0):
        raise ConfigError(f"soc_to_water should be > 0, got {soc_to_water}")
    frame = counts if isinstance(counts, pd.DataFrame) else None
    if frame is not None:
        if "counts" not in frame.columns:
            raise ValidationError(f"counts DataFrame needs a 'counts' column; found {list(frame.columns)}")
        n_series = frame["counts"]
        if humidity is None and "abs_humidity" in frame.columns:
            humidity = frame["abs_humidity"]
        if pressure is None and "pressure" in frame.columns:
            pressure = frame["pressure"]
    elif isinstance(counts, pd.Series):
        n_series = counts
    else:
        raise ValidationError("counts should be a pandas Series or DataFrame of corrected cph")
    if not isinstance(n_series.index, pd.DatetimeIndex):
        raise ValidationError("counts should have a DatetimeIndex")
    if humidity is None:
        raise ConfigError("give humidity (g m-3), or counts as a DataFrame with an 'abs_humidity' column")
    if pressure is None:
        log.warning("calibrate_from_samples: no pressure given; weighting at %.2f hPa", 1013.25)
        pressure = 1013.25
    n_series = pd.to_numeric(n_series, errors="coerce").sort_index()
    n_series = n_series[n_series > 0]
    step = n_series.index.to_series().diff().median()
    dt_h = step / pd.Timedelta(hours=1) if pd.notna(step) and step > pd.Timedelta(0) else 1.0
    try:
        half = pd.Timedelta(window) / 2 if window is not None else None
    except ValueError as exc:
        raise ConfigError(f"window should be a duration such as '6h', got {window!r}") from exc
    if half is not None and not half > pd.Timedelta(0):
        raise ConfigError(f"window should be > 0, got {window!r}")

    cols = _sample_columns(samples, columns)
    need = [r for r in ("distance",) if r not in cols]
    if "depth" not in cols and not {"top_depth", "bottom_depth"} <= cols.keys():
        need.append("depth (or top_depth and bottom_depth)")
    if "theta_v" not in cols and "theta_g" not in cols:
        need.append("theta_v or theta_g")
    if "date" not in cols and date is None:
        need.append("date (or the date argument)")
    if need:
        raise ValidationError(f"samples lack column(s) for {', '.join(need)}; found {list(samples.columns)}")

    times = (
        pd.DatetimeIndex([pd.Timestamp(date)] * len(samples))
        if date is not None
        else _campaign_times(samples[cols["date"]], date_format)
    )
    r = _numeric(samples, cols, "distance")
    z = (
        _numeric(samples, cols, "depth")
        if "depth" in cols
        else 0.5 * (_numeric(samples, cols, "top_depth") + _numeric(samples, cols, "bottom_depth"))
    )
    rho = _numeric(samples, cols, "bulk_density")
    if bulk_density is not None:
        if not bulk_density > 0:
            raise ConfigError(f"bulk_density should be > 0 g cm-3, got {bulk_density}")
        rho = np.where(np.isnan(rho), bulk_density, rho)
    theta_v = _numeric(samples, cols, "theta_v")
    theta_g = _numeric(samples, cols, "theta_g")
    with np.errstate(invalid="ignore", divide="ignore"):
        theta_v = np.where(np.isnan(theta_v), theta_g * rho, theta_v)
        theta_g = np.where(np.isnan(theta_g), theta_v / rho, theta_g)
    gravimetric = basis == "gravimetric"
    reason = _skip_reasons(times, r, z, theta_v, theta_g, rho, gravimetric)
    if "profile" in cols:
        pid = samples[cols["profile"]].astype("string").fillna("<NA>").to_numpy()
    else:
        pid = _infer_profiles(r, z)
    days = times.normalize()
    ok = reason == ""
    if (~ok).any():
        warnings.warn(
            f"calibrate_from_samples: skipped {int((~ok).sum())} of {len(ok)} samples ({_count_reasons(reason)})",
            DataLossWarning,
            stacklevel=2,
        )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of nothing is NaN, checked below
        rho_site = float(bulk_density) if bulk_density is not None else float(np.nanmean(rho[ok]))
        lw_site = float(np.nanmean(_numeric(samples, cols, "lattice_water")[ok])) if "lattice_water" in cols else None
        soc_c = float(np.nanmean(_numeric(samples, cols, "soc")[ok])) if "soc" in cols else None
    if not rho_site > 0:
        raise ConfigError("no bulk density: give bulk_density or a bulk_density column")
    # unknown (no column, or a column without a value at the used samples, and no site value)
    # is not 0: it is assumed 0 out loud and recorded
    lw_site = lw_site if lw_site is not None and np.isfinite(lw_site) and ok.any() else lattice_water
    soc_site = soc_to_water * soc_c if soc_c is not None and np.isfinite(soc_c) and ok.any() else soc
    assumed = [k for k, v in (("lattice_water", lw_site), ("soc", soc_site)) if v is None]
    if assumed:
        warnings.warn(
            f"calibration: {' and '.join(assumed)} unknown (no column with values, no site value): assumed 0 g g-1; "
            "N0 then belongs to W = 0, so convert counts with 0 too, or give lattice_water=/soc=",
            QualityWarning,
            stacklevel=2,
        )
    lw_site = 0.0 if lw_site is None else float(lw_site)
    soc_site = 0.0 if soc_site is None else float(soc_site)
    if not (np.isfinite(lw_site) and np.isfinite(soc_site) and lw_site >= 0 and soc_site >= 0):
        raise ValidationError(f"site lattice water {lw_site} and W_soc {soc_site} should be finite and >= 0 g g-1")
    a0, a1, a2 = a

    rows: list[dict[str, Any]] = []
    lost: list[str] = []
    for day in sorted(set(days.dropna())):
        on_day = np.asarray(days == day)
        use = on_day & ok
        label = day.date().isoformat()
        day_ix = _like(day, n_series.index)
        if half is None:
            start, end = day_ix, day_ix + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
            centre = day_ix + pd.Timedelta(hours=12)
        else:
            tt = times[use] if use.any() else times[on_day]
            centre = _like(tt.sort_values()[len(tt) // 2], n_series.index)
            if (tt == tt.normalize()).all():
                centre = day_ix + pd.Timedelta(hours=12)
            start, end = centre - half, centre + half
        if not use.any():
            lost.append(f"{label}: no usable sample")
            continue
        nn = n_series[(n_series.index >= start) & (n_series.index <= end)].dropna()
        if nn.empty:
            lost.append(f"{label}: no counts in {start}…{end}")
            continue
        h = _at_campaign(humidity, start, end, centre, "humidity")
        if not np.isfinite(h):
            lost.append(f"{label}: no humidity")
            continue
        p = _at_campaign(pressure, start, end, centre, "pressure")
        if not np.isfinite(p):
            log.warning("calibrate_from_samples %s: no pressure; weighting at 1013.25 hPa", label)
            p = 1013.25
        veg = _at_campaign(vegetation_height, start, end, centre, "vegetation_height")
        veg = veg if np.isfinite(veg) else 0.0

        # profiles → padded (n_profiles, n_depths) arrays
        sub = pd.DataFrame(
            {"pid": pid[use], "r": r[use], "z": z[use], "tv": theta_v[use], "tg": theta_g[use], "rho": rho[use]}
        )
        groups = [g for _, g in sub.groupby("pid", sort=False)]
        shape = (len(groups), max(len(g) for g in groups))
        zz, tv, tg, rr = (np.full(shape, np.nan) for _ in range(4))
        for i, g in enumerate(groups):
            k = len(g)
            zz[i, :k], tv[i, :k], tg[i, :k], rr[i, :k] = g["z"], g["tv"], g["tg"], g["rho"]
        dist = np.array([float(g["r"].median()) for g in groups])
        res = cast(
            footprint.ProfileAverage,
            footprint.weighted_profile_average(dist, zz, tv, h, rho_site, p, veg, tol, return_details=True),
        )
        valid = ~np.isnan(zz)
        wd = np.where(valid, np.exp(-2.0 * np.where(valid, zz, 0.0) / res.d86[:, None]), 0.0)
        omega = wd / wd.sum(axis=1, keepdims=True) * (res.horizontal_weight / res.horizontal_weight.sum())[:, None]
        field = np.where(valid, tg if gravimetric else tv, 0.0)
        mean_w = float((omega * field).sum()) if gravimetric else res.theta
        spread = float(np.sqrt(max(float((omega * (field - mean_w) ** 2)[valid].sum()), 0.0)))
        se = spread * math.sqrt(float((omega[valid] ** 2).sum()))  # std / sqrt(n_eff), Kish
        w_tot = (mean_w if gravimetric else res.theta / rho_site) + lw_site + soc_site
        has_rho = valid & ~np.isnan(rr)
        rho_w = float((omega * np.where(has_rho, rr, 0.0)).sum() / omega[has_rho].sum()) if has_rho.any() else np.nan
        sigma_w = se if gravimetric else se / rho_site
        n_mean = float(nn.mean())
        sigma_n = math.sqrt(n_mean / (len(nn) * dt_h))
        f = a0 / (w_tot + a2) + a1
        n0 = float(calibrate_n0(n_mean, w_tot, a))
        s_counts = sigma_n / f
        s_samples = n_mean * a0 / ((w_tot + a2) ** 2 * f**2) * sigma_w
        rows.append(
            {
                "date": day_ix,
                "n_samples": int(use.sum()),
                "n_skipped": int((on_day & ~ok).sum()),
                "skipped": _count_reasons(reason[on_day]),
                "n_profiles": len(groups),
                "theta": float(res.theta),
                "theta_mean": float(np.nanmean(tv)),
                "theta_se": se,
                "water_total": w_tot,
                "bulk_density_weighted": rho_w,
                "counts": n_mean,
                "counts_std": sigma_n,
                "n_counts": len(nn),
                "humidity": h,
                "pressure": p,
                "vegetation_height": veg,
                "d86": float((res.horizontal_weight * res.d86).sum() / res.horizontal_weight.sum()),
                "n_iter": int(res.n_iter),
                "n0": n0,
                "n0_std": math.hypot(s_counts, s_samples),
                "n0_std_counts": s_counts,
                "n0_std_samples": s_samples,
                "_f": f,
            }
        )
    if lost:
        msg = f"calibrate_from_samples: {len(lost)} campaign(s) skipped ({'; '.join(lost)})"
        warnings.warn(msg, DataLossWarning, stacklevel=2)
    if not rows:
        raise ValidationError("calibrate_from_samples: no campaign could be calibrated")
    out = pd.DataFrame(rows).set_index("date")
    f_all = out.pop("_f").to_numpy()
    n0s, sd = out["n0"].to_numpy(), out["n0_std"].to_numpy()
    out.attrs.update(
        n0_mean=float(n0s.mean()),
        n0_std=float(np.sqrt((sd**2).sum()) / len(sd)),
        n0_spread=float(n0s.std(ddof=1)) if len(n0s) > 1 else math.nan,
        n0_lsq=float((out["counts"].to_numpy() * f_all).sum() / (f_all**2).sum()),
        bulk_density=rho_site,
        lattice_water=float(lw_site),
        soc=float(soc_site),
        assumed_zero=assumed,
        basis=basis,
    )
    log.info(
        "calibrate_from_samples: %d campaign(s), N0 = %.1f ± %.1f cph (spread %.1f)",
        len(out),
        out.attrs["n0_mean"],
        out.attrs["n0_std"],
        out.attrs["n0_spread"],
    )
    return out
