r"""Daily soil water balance features: a one-layer bucket, its soil limits and PET, and the API.

The pieces of a water-balance predictor for the forest (SCIENCE.md, "Potential
evapotranspiration from temperature" and "Soil hydraulic limits from texture"):

* :func:`saxton_rawls`: wilting point, field capacity and saturation (m³ m⁻³) from sand, clay
  and organic matter (Saxton & Rawls 2006, eqs 1–3 and 5);
* :func:`extraterrestrial_radiation` (FAO-56 eqs 21–25), :func:`pet_hargreaves` (Hargreaves &
  Samani 1985) and :func:`pet_oudin` (Oudin et al. 2005): potential evapotranspiration (mm d⁻¹)
  from air temperature;
* :func:`bucket`: the root-zone water content of a one-layer bucket (m³ m⁻³), compiled, on
  single series or whole grids (time × y × x), GIL released;
* :func:`bucket_oudin`: the bucket with Oudin PET made inside the daily step from the mean
  temperature and :func:`daily_radiation` — the gridded water-balance features ``wb<depth>`` of
  :class:`smengine.features.FeatureSpec` (``water_balance``); the engine calls the same inline
  day, so the training table and the product see the same bits; :func:`bucket_storages` and
  :func:`bucket_start` are the storages and initial state both use;
* :func:`antecedent_precipitation_index`: the lighter option, :math:`API_t = k\,API_{t-1} + P_t`.

The bucket
----------
The state is the storage :math:`S` (mm) of a root zone ``depth_mm`` deep, between
:math:`S_{wp} = \theta_{wp} \cdot depth` and :math:`S_{fc} = \theta_{fc} \cdot depth`. One day,
with water input :math:`W = P + I` (precipitation and irrigation, mm d⁻¹) and potential
evapotranspiration :math:`PET` (mm d⁻¹), in exactly this order:

.. math::

    S_1 &= S + W \\
    D &= \max(S_1 - S_{fc}, 0), \quad S_2 = \min(S_1, S_{fc}) \\
    \beta &= \operatorname{clip}\!\left(\frac{S_2 - S_{wp}}{S^* - S_{wp}}, 0, 1\right) \\
    ET &= \min(PET \cdot \beta,\; \max(S_2 - S_{wp}, 0)) \\
    S &= S_2 - ET

(when :math:`PET\,\beta` reaches :math:`S_2 - S_{wp}` the new storage is set to :math:`S_{wp}`
itself). :math:`S^*` is where ET reaches the potential rate: :math:`S_{wp} + f\,(S_{fc} - S_{wp})`
(``beta_reference="available"``, the default: a fraction *f* of the available water, FAO-56's
:math:`1 - p`), or :math:`f\,S_{fc}` (``"field_capacity"``: a fraction of field capacity, which
must then exceed the wilting point). :math:`\beta` is the same on :math:`S_1` and :math:`S_2`
(it is 1 above :math:`S^* \le S_{fc}`): it is evaluated after the water input, before ET. ET
never takes the storage below the wilting point (bare-soil evaporation below it is not
modelled), drainage takes everything above field capacity, so with an initial content between
them :math:`\theta_{wp} \le \theta \le \theta_{fc}` every day; the mass balance
:math:`\sum W - \sum ET - \sum D = \Delta S` closes to rounding.

Missing data
------------
A day whose precipitation, PET or irrigation is not finite (NaN, ±inf) is skipped: θ (and ET,
D) are NaN that day and the storage is carried unchanged to the next day, i.e. the day's water
is missing from the balance. Such days are counted and reported in one
:class:`~smengine.errors.DataLossWarning` per call. A series whose field capacity, wilting point
or initial content is NaN (no soil there, e.g. water or outside the domain) is undefined: NaN
every day, silently (NaN in, NaN out). The same rule holds for the API (a day without
precipitation: NaN, index unchanged, counted).

References
----------
.. [1] Saxton, K. E., Rawls, W. J. (2006). Soil water characteristic estimates by texture and
   organic matter for hydrologic solutions. Soil Sci. Soc. Am. J. 70, 1569–1578.
.. [2] Hargreaves, G. H., Samani, Z. A. (1985). Reference crop evapotranspiration from
   temperature. Appl. Eng. Agric. 1(2), 96–99.
.. [3] Oudin, L. et al. (2005). Which potential evapotranspiration input for a lumped
   rainfall–runoff model? Part 2. J. Hydrol. 303, 290–306.
.. [4] Allen, R. G., Pereira, L. S., Raes, D., Smith, M. (1998). Crop evapotranspiration:
   guidelines for computing crop water requirements. FAO Irrigation and Drainage Paper 56.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from smengine._threads import effective_n_threads
from smengine.errors import ConfigError, DataLossWarning, QualityWarning, ValidationError

__all__ = [
    "APIState",
    "BucketParams",
    "BucketResult",
    "BucketState",
    "SoilLimits",
    "antecedent_precipitation_index",
    "bucket",
    "bucket_oudin",
    "bucket_start",
    "bucket_storages",
    "daily_radiation",
    "extraterrestrial_radiation",
    "pet_hargreaves",
    "pet_oudin",
    "saxton_rawls",
]

log = logging.getLogger(__name__)

#: Solar constant, MJ m⁻² min⁻¹ (FAO-56 eq. 21).
SOLAR_CONSTANT = 0.0820
#: Latent heat of vaporisation, MJ kg⁻¹ (FAO-56, at about 20 °C; Oudin et al. 2005).
LATENT_HEAT = 2.45
#: Density of water, kg m⁻³.
WATER_DENSITY = 1000.0
#: MJ m⁻² d⁻¹ → mm d⁻¹ of evaporation equivalent (FAO-56 eq. 20: 1 / 2.45).
MJ_TO_MM = 0.408

#: How PET was obtained, as recorded in :class:`BucketParams`.
PET_METHODS = ("hargreaves", "oudin", "external")
#: Drainage schemes of :func:`bucket`.
DRAINAGE = ("excess",)
#: What ``beta_fraction`` is a fraction of.
BETA_REFERENCES = ("available", "field_capacity")


# ---------------------------------------------------------------------------------------------- soil limits
class SoilLimits(NamedTuple):
    """Soil water limits, volumetric (m³ m⁻³).

    Attributes
    ----------
    wilting_point : ndarray
        θ at 1500 kPa (Saxton & Rawls 2006 eq. 1).
    field_capacity : ndarray
        θ at 33 kPa (eq. 2).
    saturation : ndarray
        θ at saturation (eq. 5, with eq. 3).
    """

    wilting_point: np.ndarray
    field_capacity: np.ndarray
    saturation: np.ndarray


def _fraction(x: npt.ArrayLike, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    bad = (a < 0) | (a > 1)
    if bad.any():
        raise ValidationError(
            f"{name} should be a fraction in [0, 1] (not percent); {int(bad.sum())} value(s) outside, "
            f"e.g. {a[bad].flat[0]!r}"
        )
    return a


def saxton_rawls(
    sand: npt.ArrayLike,
    clay: npt.ArrayLike,
    organic_matter: npt.ArrayLike = 2.5,
) -> SoilLimits:
    r"""Wilting point, field capacity and saturation from texture and organic matter.

    Saxton & Rawls (2006) eqs 1–3 and 5 (no density, gravel or salinity adjustment):

    .. math::

        \theta_{1500t} &= -0.024 S + 0.487 C + 0.006 OM + 0.005 S\,OM - 0.013 C\,OM
                          + 0.068 S\,C + 0.031 \\
        \theta_{1500} &= \theta_{1500t} + (0.14\,\theta_{1500t} - 0.02) \\
        \theta_{33t} &= -0.251 S + 0.195 C + 0.011 OM + 0.006 S\,OM - 0.027 C\,OM
                        + 0.452 S\,C + 0.299 \\
        \theta_{33} &= \theta_{33t} + (1.283\,\theta_{33t}^2 - 0.374\,\theta_{33t} - 0.015) \\
        \theta_{(S-33)t} &= 0.278 S + 0.034 C + 0.022 OM - 0.018 S\,OM - 0.027 C\,OM
                            - 0.584 S\,C + 0.078 \\
        \theta_{(S-33)} &= \theta_{(S-33)t} + (0.636\,\theta_{(S-33)t} - 0.107) \\
        \theta_S &= \theta_{33} + \theta_{(S-33)} - 0.097 S + 0.043

    Parameters
    ----------
    sand, clay : array_like
        Sand and clay content, **fractions** of the mineral soil (0–1, w/w), broadcast together.
        NaN gives NaN.
    organic_matter : array_like, optional
        Organic matter, **percent** (w/w), default 2.5 (the paper's typical value). The
        equations were fitted for OM up to about 8 % and clay up to about 60 %.

    Returns
    -------
    SoilLimits
        ``wilting_point``, ``field_capacity``, ``saturation`` (m³ m⁻³), float64, of the broadcast
        shape.

    Raises
    ------
    ValidationError
        If sand or clay lie outside [0, 1] (e.g. given in percent), sand + clay > 1, or
        organic matter is negative; the message names the argument.

    References
    ----------
    Saxton, K. E., Rawls, W. J. (2006). Soil Sci. Soc. Am. J. 70, 1569–1578.

    Examples
    --------
    >>> lim = saxton_rawls(0.40, 0.20)  # loam, OM 2.5 %: the paper's Table 3 gives 0.14, 0.28, 0.46
    >>> [round(float(v), 3) for v in lim]
    [0.137, 0.28, 0.459]
    """
    S = _fraction(sand, "sand")
    C = _fraction(clay, "clay")
    OM = np.asarray(organic_matter, dtype=np.float64)
    if (OM < 0).any():
        raise ValidationError(f"organic_matter should be >= 0 (percent), got min {np.nanmin(OM)!r}")
    over = S + C > 1 + 1e-9
    if over.any():
        raise ValidationError(f"sand + clay should be at most 1; {int(over.sum())} value(s) above")
    t1500t = -0.024 * S + 0.487 * C + 0.006 * OM + 0.005 * S * OM - 0.013 * C * OM + 0.068 * S * C + 0.031
    t1500 = t1500t + (0.14 * t1500t - 0.02)
    t33t = -0.251 * S + 0.195 * C + 0.011 * OM + 0.006 * S * OM - 0.027 * C * OM + 0.452 * S * C + 0.299
    t33 = t33t + (1.283 * t33t**2 - 0.374 * t33t - 0.015)
    ts33t = 0.278 * S + 0.034 * C + 0.022 * OM - 0.018 * S * OM - 0.027 * C * OM - 0.584 * S * C + 0.078
    ts33 = ts33t + (0.636 * ts33t - 0.107)
    tsat = t33 + ts33 - 0.097 * S + 0.043
    return SoilLimits(np.asarray(t1500), np.asarray(t33), np.asarray(tsat))


# ---------------------------------------------------------------------------------------------- radiation, PET
def _day_of_year(doy: Any) -> np.ndarray:
    """Day of year (float64, 1–366) from integers or from dates (datetime64, ISO strings, pandas)."""
    a = np.asarray(doy)
    if a.dtype.kind in "iuf":
        d = a.astype(np.float64)
        bad = ~((d >= 1) & (d <= 366) & (d == np.round(d)))
        if bad.any():
            raise ValidationError(f"doy should be whole days of year in 1..366 (or dates), got {d[bad].flat[0]!r}")
        return d
    if a.dtype.kind == "b":
        raise ValidationError("doy should be days of year (1..366) or dates, got booleans")
    from smengine._days import as_days

    if a.dtype.kind == "M":
        days = a.astype("datetime64[D]")
        if np.isnat(days).any():
            raise ValidationError("doy holds missing dates (NaT)")
    else:
        days = as_days(doy, what="doy")
        if a.ndim == 0:
            days = days.reshape(())
    return ((days - days.astype("datetime64[Y]")).astype(np.int64) + 1).astype(np.float64)


def _latitude(lat: npt.ArrayLike) -> np.ndarray:
    phi = np.asarray(lat, dtype=np.float64)
    bad = (phi < -90) | (phi > 90)
    if bad.any():
        raise ValidationError(f"lat should be in degrees within [-90, 90], got {phi[bad].flat[0]!r}")
    return phi


def extraterrestrial_radiation(lat: npt.ArrayLike, doy: Any) -> np.ndarray:
    r"""Daily extraterrestrial radiation :math:`R_a` (MJ m⁻² d⁻¹), FAO-56 eqs 21–25.

    .. math::

        R_a = \frac{24 \cdot 60}{\pi} G_{sc}\, d_r\,[\omega_s \sin\varphi \sin\delta
              + \cos\varphi \cos\delta \sin\omega_s],\quad
        d_r = 1 + 0.033 \cos\tfrac{2\pi J}{365},\quad
        \delta = 0.409 \sin\!\left(\tfrac{2\pi J}{365} - 1.39\right),\quad
        \omega_s = \arccos(-\tan\varphi \tan\delta)

    with :math:`G_{sc}` = 0.0820 MJ m⁻² min⁻¹. The arccos argument is clipped to [−1, 1], so
    polar night gives 0 and polar day :math:`\omega_s = \pi`.

    Parameters
    ----------
    lat : array_like
        Latitude, degrees north (−90…90).
    doy : array_like
        Day of year (1–366), or dates (``datetime64``, ISO strings). Broadcast against ``lat``
        by NumPy rules (``doy[:, None]`` and ``lat[None, :]`` for a day × latitude table).

    Returns
    -------
    ndarray, float64
        :math:`R_a`, MJ m⁻² d⁻¹ (× 0.408 for mm d⁻¹ of evaporation).

    Raises
    ------
    ValidationError
        Latitude outside [−90, 90] or a day of year outside 1..366.

    References
    ----------
    Allen, R. G. et al. (1998). FAO Irrigation and Drainage Paper 56, eqs 21–25.

    Examples
    --------
    FAO-56 Example 8 (20° S, 3 September):

    >>> round(float(extraterrestrial_radiation(-20.0, 246)), 1)
    32.2
    """
    phi = np.deg2rad(_latitude(lat))
    J = _day_of_year(doy)
    x = 2.0 * np.pi * J / 365.0
    dr = 1.0 + 0.033 * np.cos(x)
    delta = 0.409 * np.sin(x - 1.39)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(delta), -1.0, 1.0))
    ra = (
        24.0
        * 60.0
        / np.pi
        * SOLAR_CONSTANT
        * dr
        * (ws * np.sin(phi) * np.sin(delta) + np.cos(phi) * np.cos(delta) * np.sin(ws))
    )
    return np.maximum(ra, 0.0)


@functools.lru_cache(maxsize=64)
def _radiation_table(lat: float) -> np.ndarray:
    """Ra (MJ m⁻² d⁻¹) of days of year 1..366 at one latitude (read-only; index ``doy - 1``)."""
    table = extraterrestrial_radiation(lat, np.arange(1, 367))
    table.setflags(write=False)
    return table


def daily_radiation(lat: float, days: Any) -> np.ndarray:
    """:func:`extraterrestrial_radiation` at one latitude for a sequence of dates, from one table.

    The values are looked up in a table of days of year 1..366 computed once per latitude, so
    that two callers asking for the same day get the same bits whatever else they ask for (the
    feature builder and the engine's water balance both take Ra from here).

    Parameters
    ----------
    lat : float
        Latitude, degrees north.
    days : array_like of dates
        ``datetime64`` (any unit; the UTC day is taken) or ISO strings, shape ``(n,)``.

    Returns
    -------
    ndarray of float64, shape (n,)
        Ra, MJ m⁻² d⁻¹.

    Examples
    --------
    >>> round(float(daily_radiation(-20.0, ["2021-09-03"])[0]), 1)  # FAO-56 Example 8 (day 246)
    32.2
    """
    phi = float(_latitude(float(lat)))
    d = np.asarray(days)
    if d.dtype.kind != "M":
        from smengine._days import as_days

        d = as_days(days, what="days")
    d = np.atleast_1d(d).astype("datetime64[D]")
    if np.isnat(d).any():
        raise ValidationError("days holds missing dates (NaT)")
    doy = (d - d.astype("datetime64[Y]")).astype(np.int64)  # 0-based day of year
    return _radiation_table(phi)[doy]


def _pet_inputs(
    temps: dict[str, npt.ArrayLike], lat: npt.ArrayLike, doy: Any
) -> tuple[list[np.ndarray], np.ndarray, Any]:
    """Broadcast the temperatures; Ra on their shape (doy along axis 0, lat over the trailing axes)."""
    arrays = [np.asarray(v) for v in temps.values()]
    single = all(a.dtype == np.float32 for a in arrays)
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError as exc:
        shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in temps.items())
        raise ValidationError(f"temperatures should broadcast together: {shapes}") from exc
    J = _day_of_year(doy)
    if J.ndim == 1 and len(shape) > 1 and J.shape[0] == shape[0]:
        J = J.reshape((-1,) + (1,) * (len(shape) - 1))
    phi = _latitude(lat)
    for name, a in (("doy", J), ("lat", phi)):
        try:
            np.broadcast_shapes(a.shape, shape)
        except ValueError as exc:
            raise ValidationError(
                f"{name} {a.shape} does not fit the temperatures {shape}: doy is one per day (axis 0), lat one "
                "per series (the trailing axes)"
            ) from exc
    ra = extraterrestrial_radiation(phi, J)
    if ra.shape != shape:
        try:
            ra = np.broadcast_to(ra, shape)
        except ValueError as exc:
            raise ValidationError(f"lat and doy broadcast to {ra.shape}, more than the temperatures {shape}") from exc
    out = [np.broadcast_to(a.astype(np.float64, copy=False), shape) for a in arrays]
    return out, ra, np.float32 if single else np.float64


def pet_hargreaves(
    tmin: npt.ArrayLike,
    tmax: npt.ArrayLike,
    lat: npt.ArrayLike,
    doy: Any,
    *,
    tmean: npt.ArrayLike | None = None,
) -> np.ndarray:
    r"""Potential evapotranspiration after Hargreaves & Samani (1985), mm d⁻¹.

    .. math::

        PET = 0.0023 \cdot 0.408\,R_a \cdot (T_{mean} + 17.8) \cdot \sqrt{\max(T_{max} - T_{min}, 0)}

    with :math:`R_a` from :func:`extraterrestrial_radiation` (MJ m⁻² d⁻¹; × 0.408 for mm d⁻¹).
    Negative values (:math:`T_{mean} < -17.8` °C) are set to 0.

    Parameters
    ----------
    tmin, tmax : array_like
        Daily minimum and maximum air temperature, °C, shape ``(n_days, ...)`` or anything that
        broadcasts together.
    lat : array_like
        Latitude, degrees north: a scalar or one per series (broadcast against the trailing axes).
    doy : array_like
        Day of year (1–366) or dates: a scalar, or one per day (``(n_days,)``, along axis 0).
    tmean : array_like, optional
        Daily mean temperature, °C; default ``(tmin + tmax) / 2`` (as in the original method).

    Returns
    -------
    ndarray
        PET, mm d⁻¹, of the broadcast shape; float32 when every temperature is float32, else
        float64 (computed in float64). NaN temperatures give NaN.

    Raises
    ------
    ValidationError
        Shapes that do not fit, latitude or day of year out of range.

    Warns
    -----
    QualityWarning
        When ``tmax < tmin`` on some days: how many (the range is taken as 0 there).

    References
    ----------
    Hargreaves, G. H., Samani, Z. A. (1985). Appl. Eng. Agric. 1(2), 96–99;
    Allen, R. G. et al. (1998), FAO-56, eq. 52.

    Examples
    --------
    >>> round(float(pet_hargreaves(10.0, 24.0, 45.0, 180)), 2)
    5.1
    """
    temps: dict[str, npt.ArrayLike] = {"tmin": tmin, "tmax": tmax}
    if tmean is not None:
        temps["tmean"] = tmean
    arrays, ra, dtype = _pet_inputs(temps, lat, doy)
    lo, hi = arrays[0], arrays[1]
    t = arrays[2] if tmean is not None else (lo + hi) / 2.0
    rng = hi - lo
    n_neg = int(np.count_nonzero(rng < 0))
    if n_neg:
        warnings.warn(
            f"pet_hargreaves: tmax < tmin on {n_neg:,} of {rng.size:,} values; the temperature range was taken as 0",
            QualityWarning,
            stacklevel=2,
        )
    pet = 0.0023 * (MJ_TO_MM * ra) * (t + 17.8) * np.sqrt(np.maximum(rng, 0.0))
    return np.where(pet < 0, 0.0, pet).astype(dtype, copy=False)


def pet_oudin(tmean: npt.ArrayLike, lat: npt.ArrayLike, doy: Any) -> np.ndarray:
    r"""Potential evapotranspiration after Oudin et al. (2005), mm d⁻¹.

    .. math::

        PET = \frac{R_a}{\lambda \rho} \cdot \frac{T_{mean} + 5}{100} \cdot 1000
        \quad\text{if } T_{mean} + 5 > 0,\ \text{else } 0

    with :math:`R_a` from :func:`extraterrestrial_radiation` (MJ m⁻² d⁻¹), λ = 2.45 MJ kg⁻¹ and
    ρ = 1000 kg m⁻³ (× 1000: m d⁻¹ → mm d⁻¹).

    Parameters
    ----------
    tmean : array_like
        Daily mean air temperature, °C, shape ``(n_days, ...)``.
    lat : array_like
        Latitude, degrees north: a scalar or one per series (broadcast against the trailing axes).
    doy : array_like
        Day of year (1–366) or dates: a scalar, or one per day (``(n_days,)``, along axis 0).

    Returns
    -------
    ndarray
        PET, mm d⁻¹, ``tmean``'s shape; float32 for float32 ``tmean``, else float64. NaN gives NaN.

    Raises
    ------
    ValidationError
        Shapes that do not fit, latitude or day of year out of range.

    References
    ----------
    Oudin, L. et al. (2005). J. Hydrol. 303, 290–306, eq. 3.

    Examples
    --------
    >>> round(float(pet_oudin(15.0, 45.0, 180)), 2)
    3.41
    """
    arrays, ra, dtype = _pet_inputs({"tmean": tmean}, lat, doy)
    t = arrays[0]
    pet = ra / (LATENT_HEAT * WATER_DENSITY) * (t + 5.0) / 100.0 * 1000.0
    pet = np.where(t + 5.0 > 0, pet, np.where(np.isnan(t), np.nan, 0.0))
    return pet.astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------------- bucket
@dataclass(frozen=True)
class BucketParams:
    """The bucket's settings, as recorded in a model card (JSON-safe through :meth:`get_config`).

    Attributes
    ----------
    depth_mm : float
        Root-zone depth, mm (> 0).
    beta_fraction : float
        Fraction *f* in (0, 1] at which ET reaches the potential rate (see ``beta_reference``).
    drainage : str
        Drainage scheme: ``"excess"`` (everything above field capacity drains the same day).
    pet_method : str
        How the PET input was made: ``"hargreaves"``, ``"oudin"`` or ``"external"``.
    beta_reference : str
        ``"available"``: :math:`S^* = S_{wp} + f (S_{fc} - S_{wp})`; ``"field_capacity"``:
        :math:`S^* = f S_{fc}`.

    Examples
    --------
    >>> p = BucketParams(depth_mm=400.0, pet_method="oudin")
    >>> BucketParams.from_config(p.get_config()) == p
    True
    """

    depth_mm: float = 300.0
    beta_fraction: float = 0.6
    drainage: str = "excess"
    pet_method: str = "hargreaves"
    beta_reference: str = "available"

    def __post_init__(self) -> None:
        _check_bucket_settings(self.depth_mm, self.beta_fraction, self.drainage, self.beta_reference)
        if self.pet_method not in PET_METHODS:
            raise ConfigError(f"pet_method should be one of {PET_METHODS}, got {self.pet_method!r}")
        object.__setattr__(self, "depth_mm", float(self.depth_mm))
        object.__setattr__(self, "beta_fraction", float(self.beta_fraction))

    def get_config(self) -> dict[str, Any]:
        """JSON-safe configuration; ``BucketParams.from_config(p.get_config()) == p``."""
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any] | str) -> BucketParams:
        """Inverse of :meth:`get_config` (a dict or its JSON text)."""
        cfg: dict[str, Any] = json.loads(config) if isinstance(config, str) else config
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"BucketParams.from_config: unknown keys {sorted(unknown)}")
        return cls(**cfg)

    def bucket_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`bucket` these settings stand for (all but ``pet_method``)."""
        return {
            "depth_mm": self.depth_mm,
            "beta_fraction": self.beta_fraction,
            "drainage": self.drainage,
            "beta_reference": self.beta_reference,
        }


def _check_bucket_settings(depth_mm: float, beta_fraction: float, drainage: str, beta_reference: str) -> None:
    if isinstance(depth_mm, bool) or not isinstance(depth_mm, int | float | np.floating | np.integer):
        raise ConfigError(f"depth_mm should be a number (mm), got {depth_mm!r}")
    if not (np.isfinite(depth_mm) and depth_mm > 0):
        raise ConfigError(f"depth_mm should be positive and finite (mm), got {depth_mm!r}")
    if isinstance(beta_fraction, bool) or not isinstance(beta_fraction, int | float | np.floating | np.integer):
        raise ConfigError(f"beta_fraction should be a number in (0, 1], got {beta_fraction!r}")
    if not (0 < beta_fraction <= 1):
        raise ConfigError(f"beta_fraction should be in (0, 1], got {beta_fraction!r}")
    if drainage not in DRAINAGE:
        raise ConfigError(f"drainage should be one of {DRAINAGE}, got {drainage!r}")
    if beta_reference not in BETA_REFERENCES:
        raise ConfigError(f"beta_reference should be one of {BETA_REFERENCES}, got {beta_reference!r}")


@dataclass
class BucketState:
    """Bucket state after the last day, to continue a run on the following days.

    Attributes
    ----------
    storage : ndarray, float64, series shape
        Root-zone storage, mm (NaN for undefined series).
    depth_mm : float
        The root-zone depth it belongs to, mm (a continuation must use the same).
    """

    storage: np.ndarray
    depth_mm: float

    @property
    def theta(self) -> np.ndarray:
        """The volumetric water content, m³ m⁻³."""
        return self.storage / self.depth_mm


class BucketResult(NamedTuple):
    """:func:`bucket`'s outputs with ``fluxes=True``, each of the input's shape and dtype."""

    #: Volumetric water content at the end of each day, m³ m⁻³.
    theta: np.ndarray
    #: Actual evapotranspiration, mm d⁻¹.
    et: np.ndarray
    #: Drainage below the root zone, mm d⁻¹.
    drainage: np.ndarray


def _series_values(x: npt.ArrayLike, series_shape: tuple[int, ...], name: str) -> np.ndarray:
    """``x`` broadcast to the series shape, float64, flat."""
    a = np.asarray(x, dtype=np.float64)
    try:
        a = np.broadcast_to(a, series_shape)
    except ValueError as exc:
        raise ValidationError(f"{name} {a.shape} should broadcast to the series shape {series_shape}") from exc
    return np.ascontiguousarray(a).reshape(-1)


def _daily_inputs(
    arrays: dict[str, npt.ArrayLike | None],
) -> tuple[dict[str, np.ndarray], np.dtype[Any]]:
    """The daily inputs as arrays of one float dtype (float32 when all are float32), checked for sign."""
    raw = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    for k, v in raw.items():
        if v.dtype.kind not in "iuf":
            raise ValidationError(f"{k} should be numeric (mm d-1), got dtype {v.dtype}")
    dtype = np.dtype(np.float32 if all(v.dtype == np.float32 for v in raw.values()) else np.float64)
    out: dict[str, np.ndarray] = {k: v.astype(dtype, copy=False) for k, v in raw.items()}
    for k, v in out.items():
        neg = np.count_nonzero(np.less(v, 0))
        if neg:
            raise ValidationError(
                f"{k} should be >= 0 (mm d-1); {neg:,} value(s) are negative, min {float(np.nanmin(v))!r}"
            )
    return out, dtype


def _warn_missing(func: str, n_missing: int, n_total: int, what: str, stacklevel: int = 3) -> None:
    if n_missing:
        warnings.warn(
            f"{func}: {n_missing:,} of {n_total:,} series-days had missing {what} (NaN or ±inf) and were skipped: "
            "the output is NaN there and the state was carried over unchanged, without that day's water",
            DataLossWarning,
            stacklevel=stacklevel,
        )


def bucket_storages(
    field_capacity: npt.ArrayLike,
    wilting_point: npt.ArrayLike,
    depth_mm: float,
    beta_fraction: float,
    beta_reference: str = "available",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The bucket's storages (mm) from its soil limits: :math:`S_{fc}`, :math:`S_{wp}`, :math:`S^*`.

    :math:`S_{fc} = \theta_{fc} \cdot depth`, :math:`S_{wp} = \theta_{wp} \cdot depth` and
    :math:`S^* = S_{wp} + f (S_{fc} - S_{wp})` (``beta_reference="available"``) or :math:`f S_{fc}`
    (``"field_capacity"``), in float64 and in this order: the one definition used by :func:`bucket`,
    the feature builder's and the engine's water balance (:mod:`smengine.features`), so that they
    start from the same bits.

    Parameters
    ----------
    field_capacity, wilting_point : array_like
        θ at field capacity and wilting point, m³ m⁻³ (NaN: no soil there; the storages are NaN).
    depth_mm : float
        Root-zone depth, mm.
    beta_fraction : float
        *f* in (0, 1].
    beta_reference : {"available", "field_capacity"}, optional
        What *f* is a fraction of (see :func:`bucket`).

    Returns
    -------
    s_fc, s_wp, s_crit : ndarray of float64
        Of the broadcast shape of the limits, mm.

    Raises
    ------
    ValidationError
        Limits outside [0, 1], not ``wp < fc``, or (``"field_capacity"``) :math:`f S_{fc} \le S_{wp}`.
    ConfigError
        Invalid ``depth_mm``, ``beta_fraction`` or ``beta_reference``.

    Examples
    --------
    >>> [float(v) for v in bucket_storages(0.30, 0.10, 100.0, 0.5)]
    [30.0, 10.0, 20.0]
    """
    _check_bucket_settings(depth_mm, beta_fraction, "excess", beta_reference)
    fc, wp = np.broadcast_arrays(np.asarray(field_capacity, np.float64), np.asarray(wilting_point, np.float64))
    for name, v in (("field_capacity", fc), ("wilting_point", wp)):
        bad = (v < 0) | (v > 1)
        if bad.any():
            raise ValidationError(f"{name} should be θ in [0, 1] m3 m-3; {int(bad.sum())} value(s) outside")
    order = ~(wp < fc) & np.isfinite(fc) & np.isfinite(wp)
    if order.any():
        raise ValidationError(
            f"wilting_point should be below field_capacity; not so in {int(order.sum())} series "
            f"(e.g. wp {wp[order][0]!r}, fc {fc[order][0]!r})"
        )
    depth = float(depth_mm)
    s_fc = fc * depth
    s_wp = wp * depth
    if beta_reference == "available":
        s_crit = s_wp + beta_fraction * (s_fc - s_wp)
    else:
        s_crit = beta_fraction * s_fc
        low = s_crit <= s_wp
        if low.any():
            raise ValidationError(
                f"beta_reference='field_capacity': beta_fraction * field_capacity should exceed wilting_point; not "
                f"so in {int(low.sum())} series (use beta_reference='available')"
            )
    return np.asarray(s_fc), np.asarray(s_wp), np.asarray(s_crit)


def bucket(
    precip: npt.ArrayLike,
    pet: npt.ArrayLike,
    field_capacity: npt.ArrayLike,
    wilting_point: npt.ArrayLike,
    *,
    depth_mm: float = 300.0,
    beta_fraction: float = 0.6,
    beta_reference: str = "available",
    drainage: str = "excess",
    irrigation: npt.ArrayLike | None = None,
    initial: npt.ArrayLike | None = None,
    state: BucketState | None = None,
    return_state: bool = False,
    fluxes: bool = False,
    n_threads: int | None = None,
) -> np.ndarray | BucketResult | tuple[np.ndarray | BucketResult, BucketState]:
    r"""Root-zone soil water content of a daily one-layer bucket, for one series or a whole grid.

    The daily step, its order and the missing-data rule are in the module docstring
    (:mod:`smengine.waterbalance`); in short: water in, drainage of the excess above field
    capacity, then ET = PET · β(S) limited to the water above the wilting point.

    Parameters
    ----------
    precip : array_like, shape (n_days,) or (n_days, ...)
        Daily precipitation, mm d⁻¹ (≥ 0). NaN/±inf: the day is skipped (see Warns).
    pet : array_like, shape of ``precip``
        Daily potential evapotranspiration, mm d⁻¹ (≥ 0), e.g. :func:`pet_hargreaves`.
    field_capacity, wilting_point : array_like
        θ at field capacity and wilting point, m³ m⁻³, scalars or one per series (broadcast to
        ``precip.shape[1:]``), e.g. from :func:`saxton_rawls`; ``wilting_point < field_capacity``.
        NaN makes the series undefined (NaN every day).
    depth_mm : float, optional
        Root-zone depth, mm (default 300): storage = θ · depth.
    beta_fraction : float, optional
        *f* in (0, 1] (default 0.6): ET runs at the potential rate above :math:`S^*`.
    beta_reference : {"available", "field_capacity"}, optional
        :math:`S^* = S_{wp} + f (S_{fc} - S_{wp})` (default) or :math:`S^* = f S_{fc}` (then every
        defined series needs :math:`f\,\theta_{fc} > \theta_{wp}`).
    drainage : {"excess"}, optional
        Drainage scheme: the excess above field capacity leaves the same day.
    irrigation : array_like, optional
        Irrigation, mm d⁻¹ (≥ 0), broadcast to ``precip``'s shape; added to precipitation.
    initial : array_like, optional
        Initial θ (m³ m⁻³, 0–1), scalar or per series; default field capacity. Not with ``state``.
    state : BucketState, optional
        Continue from a previous run's state (the new days follow its last day): running days
        0..n at once equals 0..k then k..n with the state, bit for bit.
    return_state : bool, optional
        Also return the :class:`BucketState` after the last day.
    fluxes : bool, optional
        Return a :class:`BucketResult` (θ, actual ET, drainage) instead of θ alone.
    n_threads : int, optional
        Threads over series (default all); the result does not depend on it.

    Returns
    -------
    theta : ndarray or BucketResult
        θ at the end of each day, m³ m⁻³, ``precip``'s shape; float32 when precipitation, PET
        (and irrigation) are all float32, else float64 (computed in float64 either way).
    state : BucketState, optional

    Raises
    ------
    ValidationError
        Mismatched shapes, negative inputs, limits outside [0, 1] or not ``wp < fc``, an
        initial θ outside [0, 1]; the message names the argument.
    ConfigError
        Invalid ``depth_mm``, ``beta_fraction``, ``drainage``, ``beta_reference``, or both
        ``initial`` and ``state``, or a state of another depth.

    Warns
    -----
    DataLossWarning
        When days of defined series had missing input: how many were skipped.

    References
    ----------
    Saxton & Rawls (2006) for the limits; Allen et al. (1998), FAO-56 ch. 8, for the
    water-stress coefficient (here β).

    Examples
    --------
    >>> bucket([10.0, 0.0, 0.0], [2.0, 4.0, 4.0], 0.30, 0.10, depth_mm=100.0).round(4).tolist()
    [0.28, 0.24, 0.2]
    """
    _check_bucket_settings(depth_mm, beta_fraction, drainage, beta_reference)
    depth = float(depth_mm)
    p = np.asarray(precip)
    if p.ndim == 0:
        raise ValidationError("precip should have a time axis (n_days, ...)")
    if np.shape(pet) != p.shape:
        raise ValidationError(f"pet {np.shape(pet)} should have precip's shape {p.shape}")
    if irrigation is not None:
        try:
            irrigation = np.broadcast_to(np.asarray(irrigation), p.shape)
        except ValueError as exc:
            raise ValidationError(
                f"irrigation {np.shape(irrigation)} should broadcast to precip's shape {p.shape}"
            ) from exc
    daily, dtype = _daily_inputs({"precip": p, "pet": pet, "irrigation": irrigation})
    n = p.shape[0]
    series_shape = p.shape[1:]

    fc = _series_values(field_capacity, series_shape, "field_capacity")
    wp = _series_values(wilting_point, series_shape, "wilting_point")
    s_fc, s_wp, s_crit = bucket_storages(fc, wp, depth, beta_fraction, beta_reference)

    if state is not None:
        if initial is not None:
            raise ConfigError("give initial or state, not both")
        if not isinstance(state, BucketState):
            raise ConfigError(f"state should be a BucketState, got {type(state).__name__}")
        if np.shape(state.storage) != series_shape:
            raise ValidationError(f"state.storage has shape {np.shape(state.storage)}, expected {series_shape}")
        if float(state.depth_mm) != depth:
            raise ConfigError(f"the state is for depth_mm={state.depth_mm}, this run has depth_mm={depth}")
        storage = np.array(state.storage, dtype=np.float64).reshape(-1)
    else:
        theta0 = fc if initial is None else _series_values(initial, series_shape, "initial")
        bad = (theta0 < 0) | (theta0 > 1)
        if bad.any():
            raise ValidationError(f"initial should be θ in [0, 1] m3 m-3; {int(bad.sum())} value(s) outside")
        storage = theta0 * depth
    defined = np.isfinite(fc) & np.isfinite(wp)
    storage[~defined] = np.nan
    n_undefined = int(np.count_nonzero(~np.isfinite(storage)))
    if n_undefined:
        log.debug("bucket: %d of %d series undefined (no soil limits or initial state): NaN", n_undefined, storage.size)

    m = storage.size
    flat = {k: np.ascontiguousarray(v.reshape(n, m)) for k, v in daily.items()}
    none = np.empty((0, 0), dtype=dtype)
    theta = np.empty((n, m), dtype=dtype)
    et = np.empty((n, m), dtype=dtype) if fluxes else none
    dr = np.empty((n, m), dtype=dtype) if fluxes else none

    from smengine._ext import _bucket

    n_missing = _bucket.bucket(
        flat["precip"],
        flat["pet"],
        flat.get("irrigation", none),
        s_fc,
        s_wp,
        s_crit,
        depth,
        storage,
        theta,
        et,
        dr,
        effective_n_threads(n_threads),
    )
    what = "precipitation, PET or irrigation" if irrigation is not None else "precipitation or PET"
    _warn_missing("bucket", int(n_missing), n * (m - n_undefined), what)
    shape = p.shape
    result: np.ndarray | BucketResult = theta.reshape(shape)
    if fluxes:
        result = BucketResult(theta.reshape(shape), et.reshape(shape), dr.reshape(shape))
    if not return_state:
        return result
    return result, BucketState(storage.reshape(series_shape), depth)


def bucket_oudin(
    precip: npt.ArrayLike,
    tmean: npt.ArrayLike,
    ra: npt.ArrayLike,
    field_capacity: npt.ArrayLike,
    wilting_point: npt.ArrayLike,
    *,
    depth_mm: float = 300.0,
    beta_fraction: float = 0.6,
    n_threads: int | None = None,
    where: str = "bucket_oudin",
) -> tuple[np.ndarray, int]:
    r"""The bucket with Oudin PET made inside the daily step: the gridded water-balance feature.

    Each day, PET (mm d⁻¹) is Oudin's (:func:`pet_oudin`, the same operations in the same order,
    in float64) from the day's mean temperature and ``ra``; then the day is :func:`bucket`'s step
    (``beta_reference="available"``, drainage of the excess). The storage starts at field capacity
    before the first day. One inline C function (``bucket_oudin_day`` of ``_bucket.pxd``) does both
    and is also the engine's (:mod:`smengine.engine`, gather kind ``WATER_BALANCE``), so the
    feature builder and the engine give the same bits by construction.

    Parameters
    ----------
    precip : array_like, shape (n_days, ...)
        Daily precipitation, mm d⁻¹ (≥ 0), taken as float32.
    tmean : array_like, shape of ``precip``
        Daily mean air temperature, °C, taken as float32.
    ra : array_like, shape (n_days,)
        Extraterrestrial radiation of each day, MJ m⁻² d⁻¹ (float64), e.g. :func:`daily_radiation`.
    field_capacity, wilting_point : array_like
        θ limits, m³ m⁻³, broadcast to ``precip.shape[1:]`` (NaN: no soil, the series is NaN).
    depth_mm, beta_fraction : float, optional
        As for :func:`bucket` (defaults 300 mm, 0.6).
    n_threads : int, optional
        Threads over series (the result does not depend on it).
    where : str, optional
        Who is asking, at the head of the missing-day warning.

    Returns
    -------
    theta : ndarray of float32, shape of ``precip``
        Volumetric water content at the end of each day, m³ m⁻³.
    n_missing : int
        Series-days of defined series skipped for missing precipitation or temperature (NaN,
        ±inf): θ is NaN that day and the storage carried unchanged, without that day's water.

    Raises
    ------
    ValidationError
        Shapes that do not fit, negative precipitation, limits as in :func:`bucket_storages`.

    Warns
    -----
    DataLossWarning
        When days were skipped (``n_missing > 0``), with their count.

    Examples
    --------
    >>> theta, _ = bucket_oudin([[10.0], [0.0]], [[15.0], [15.0]], [30.0, 30.0], 0.30, 0.10, depth_mm=100.0)
    >>> [round(float(v), 4) for v in theta[:, 0]]
    [0.2755, 0.251]
    """
    theta, n_missing, n_defined = _bucket_oudin_kernel(
        precip, tmean, ra, field_capacity, wilting_point, depth_mm, beta_fraction, n_threads, where
    )
    _warn_missing(where, n_missing, theta.shape[0] * n_defined, "precipitation or temperature")
    return theta, n_missing


def _bucket_oudin_kernel(
    precip: npt.ArrayLike,
    tmean: npt.ArrayLike,
    ra: npt.ArrayLike,
    field_capacity: npt.ArrayLike,
    wilting_point: npt.ArrayLike,
    depth_mm: float,
    beta_fraction: float,
    n_threads: int | None,
    where: str,
) -> tuple[np.ndarray, int, int]:
    """:func:`bucket_oudin` without the warning: (theta, skipped series-days, defined series)."""
    p = np.ascontiguousarray(precip, dtype=np.float32)
    t = np.ascontiguousarray(tmean, dtype=np.float32)
    if p.ndim == 0:
        raise ValidationError("precip should have a time axis (n_days, ...)")
    if t.shape != p.shape:
        raise ValidationError(f"tmean {t.shape} should have precip's shape {p.shape}")
    n = p.shape[0]
    r = np.ascontiguousarray(ra, dtype=np.float64)
    if r.shape != (n,):
        raise ValidationError(f"ra should be one value per day, shape ({n},), got {r.shape}")
    neg = int(np.count_nonzero(np.less(p, 0)))
    if neg:
        raise ValidationError(
            f"{where}: precipitation should be >= 0 (mm d-1); {neg:,} value(s) are negative, "
            f"min {float(np.nanmin(p))!r}"
        )
    series_shape = p.shape[1:]
    fc = _series_values(field_capacity, series_shape, "field_capacity")
    wp = _series_values(wilting_point, series_shape, "wilting_point")
    s_fc, s_wp, s_crit = bucket_storages(fc, wp, depth_mm, beta_fraction)
    storage = bucket_start(s_fc, s_wp)
    m = storage.size
    theta = np.empty((n, m), dtype=np.float32)
    from smengine._ext import _bucket

    n_missing = int(
        _bucket.bucket_oudin(
            p.reshape(n, m),
            t.reshape(n, m),
            r,
            s_fc,
            s_wp,
            s_crit,
            float(depth_mm),
            storage,
            theta,
            effective_n_threads(n_threads),
        )
    )
    n_defined = int(np.count_nonzero(np.isfinite(s_fc) & np.isfinite(s_wp)))
    return theta.reshape(p.shape), n_missing, n_defined


def bucket_start(s_fc: np.ndarray, s_wp: np.ndarray) -> np.ndarray:
    """The storage before the first day (mm, float64, a new array): field capacity, NaN where a
    limit is missing (an undefined series). :func:`bucket_oudin` and the engine start here."""
    storage = np.array(s_fc, dtype=np.float64, copy=True)
    storage[~(np.isfinite(s_fc) & np.isfinite(s_wp))] = np.nan
    return storage


# ---------------------------------------------------------------------------------------------- API
@dataclass
class APIState:
    """Antecedent precipitation index after the last day, to continue a run.

    Attributes
    ----------
    index : ndarray, float64, series shape
        API, mm.
    """

    index: np.ndarray


def antecedent_precipitation_index(
    precip: npt.ArrayLike,
    k: float = 0.9,
    *,
    state: APIState | None = None,
    return_state: bool = False,
    n_threads: int | None = None,
) -> np.ndarray | tuple[np.ndarray, APIState]:
    r"""Antecedent precipitation index :math:`API_t = k\,API_{t-1} + P_t` (mm).

    Starts from 0 (or from ``state``). A day with missing precipitation (NaN, ±inf) is skipped:
    NaN that day, the index carried unchanged (not decayed), counted in a
    :class:`~smengine.errors.DataLossWarning`.

    Parameters
    ----------
    precip : array_like, shape (n_days,) or (n_days, ...)
        Daily precipitation, mm d⁻¹ (≥ 0).
    k : float, optional
        Daily recession constant in [0, 1] (default 0.9; e-folding time −1/ln k days).
    state : APIState, optional
        Continue from a previous run's state.
    return_state : bool, optional
        Also return the :class:`APIState` after the last day.
    n_threads : int, optional
        Threads over series (default all); the result does not depend on it.

    Returns
    -------
    api : ndarray
        ``precip``'s shape, mm; float32 for float32 ``precip``, else float64 (computed in float64).
    state : APIState, optional

    Raises
    ------
    ValidationError
        Negative precipitation, no time axis, a state of the wrong shape.
    ConfigError
        ``k`` outside [0, 1].

    Warns
    -----
    DataLossWarning
        When days had missing precipitation: how many were skipped.

    Examples
    --------
    >>> antecedent_precipitation_index([10.0, 0.0, 5.0], k=0.5).tolist()
    [10.0, 5.0, 7.5]
    """
    if isinstance(k, bool) or not isinstance(k, int | float | np.floating | np.integer) or not (0 <= k <= 1):
        raise ConfigError(f"k should be a number in [0, 1], got {k!r}")
    p = np.asarray(precip)
    if p.ndim == 0:
        raise ValidationError("precip should have a time axis (n_days, ...)")
    daily, dtype = _daily_inputs({"precip": p})
    n = p.shape[0]
    series_shape = p.shape[1:]
    if state is None:
        index = np.zeros(int(np.prod(series_shape)), dtype=np.float64)
    else:
        if not isinstance(state, APIState):
            raise ConfigError(f"state should be an APIState, got {type(state).__name__}")
        if np.shape(state.index) != series_shape:
            raise ValidationError(f"state.index has shape {np.shape(state.index)}, expected {series_shape}")
        index = np.array(state.index, dtype=np.float64).reshape(-1)
    m = index.size
    out = np.empty((n, m), dtype=dtype)

    from smengine._ext import _bucket

    flat = np.ascontiguousarray(daily["precip"].reshape(n, m))
    n_missing = _bucket.antecedent_precipitation_index(flat, float(k), index, out, effective_n_threads(n_threads))
    n_defined = int(np.count_nonzero(np.isfinite(index)))
    _warn_missing("antecedent_precipitation_index", int(n_missing), n * n_defined, "precipitation")
    result = out.reshape(p.shape)
    if not return_state:
        return result
    return result, APIState(index.reshape(series_shape))
