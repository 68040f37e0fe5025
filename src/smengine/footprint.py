r"""CRNS footprint physics: what a cosmic-ray neutron sensor sees, horizontally and vertically.

The sensor integrates neutrons from a field of radius R86 ≈ 130–250 m and a depth
D86 ≈ 15–80 cm. This module implements the revised footprint of Köhli et al. (2015) and
Schrön et al. (2017) as vectorised NumPy functions, and a compiled, NaN-aware kernel that
applies the footprint to rasters at many sensor positions.

Units (as in the source papers and every peer implementation):

=============  ==========================================  ===========
symbol         meaning                                     unit
=============  ==========================================  ===========
``r``          horizontal distance sensor → point          m
``humidity``   absolute air humidity *h*                   g m⁻³
``theta``      volumetric soil moisture θ                  m³ m⁻³
``pressure``   air pressure *p*                            hPa
``veg_height`` vegetation height *H*\ :sub:`veg`           m
``bulk_density`` dry soil bulk density ρ\ :sub:`b`         g cm⁻³
``depth``      depth below the surface *d*                 cm
``d86``        depth holding 86 % of the signal            cm
=============  ==========================================  ===========

Conventions that matter:

* :math:`W_r` is a *radial* density: the signal fraction from the annulus
  :math:`[r, r + dr]` is :math:`\propto W_r(r)\,dr` (the ring area is already included).
  A raster cell of area *A* at distance *r* therefore carries :math:`W_r(r^*)/(2\pi r)\,A`.
* Point and cell distances are *rescaled* towards the sensor, :math:`r^* = r/(F_p F_{veg})`
  (:func:`rescale_distance`), while the footprint radius scales the other way,
  :math:`R = R_0 F_p F_{veg}` (:func:`scale_radius`).
* The piecewise fit of :math:`W_r` is evaluated *and* its branch chosen on :math:`r^*`
  (as crnpy does); the published jumps at 1 m and 50 m are reproduced, not smoothed.

References
----------
.. [1] Köhli, M., Schrön, M., Zreda, M., Schmidt, U., Dietrich, P., Zacharias, S. (2015).
   Footprint characteristics revised for field-scale soil moisture monitoring with
   cosmic-ray neutrons. Water Resour. Res. 51, 5772–5790. doi:10.1002/2015WR017169
.. [2] Schrön, M. et al. (2017). Improving calibration and validation of cosmic-ray neutron
   sensors in the light of spatial sensitivity. Hydrol. Earth Syst. Sci. 21, 5009–5030.
   doi:10.5194/hess-21-5009-2017
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from smengine._threads import effective_n_threads
from smengine.errors import ConfigError, ConvergenceError, ValidationError

log = logging.getLogger(__name__)

__all__ = [
    "ERA5_LAND_LAYERS",
    "REFERENCE_PRESSURE",
    "ProfileAverage",
    "cumulative_signal",
    "equivalent_soil_moisture",
    "footprint_average",
    "footprint_kernel",
    "footprint_radius",
    "horizontal_coefficients",
    "horizontal_weight",
    "horizontal_weight_approx",
    "layer_weights",
    "penetration_depth",
    "pressure_factor",
    "rescale_distance",
    "scale_radius",
    "vegetation_factor",
    "vertical_weight",
    "weighted_profile_average",
]

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.floating]

#: Reference air pressure p0 of the pressure factor, hPa.
REFERENCE_PRESSURE = 1013.25

#: ERA5-Land soil layers (top, bottom) in cm: swvl1 … swvl4.
ERA5_LAND_LAYERS = ((0.0, 7.0), (7.0, 28.0), (28.0, 100.0), (100.0, 289.0))

# Schrön et al. (2017) Table A1; identical in crnpy 0.8.0, neptoon, CoRNy and crspy.
_F0 = 3.7  # m⁻¹, near-sensor factor below 1 m
_A = {
    "a00": 8735.0,
    "a01": 22.689,
    "a02": 11720.0,
    "a03": 0.00978,
    "a04": 9306.0,
    "a05": 0.003632,
    "a10": 2.7925e-2,
    "a11": 6.6577,
    "a12": 0.028544,
    "a13": 0.002455,
    "a14": 6.851e-5,
    "a15": 12.2755,
    "a20": 247970.0,
    "a21": 23.289,
    "a22": 374655.0,
    "a23": 0.00191,
    "a24": 258552.0,
    "a30": 5.4818e-2,
    "a31": 21.032,
    "a32": 0.6373,
    "a33": 0.0791,
    "a34": 5.425e-4,
}
_B = {
    "b00": 39006.0,
    "b01": 15002337.0,
    "b02": 2009.24,
    "b03": 0.01181,
    "b04": 3.146,
    "b05": 16.7417,
    "b06": 3727.0,
    "b10": 6.031e-5,
    "b11": 98.5,
    "b12": 0.0013826,
    "b20": 11747.0,
    "b21": 55.033,
    "b22": 4521.0,
    "b23": 0.01998,
    "b24": 0.00604,
    "b25": 3347.4,
    "b26": 0.00475,
    "b30": 1.543e-2,
    "b31": 13.29,
    "b32": 1.807e-2,
    "b33": 0.0011,
    "b34": 8.81e-5,
    "b35": 0.0405,
    "b36": 26.74,
}
_R1 = 1.0  # m, end of the near-sensor branch
_R2 = 50.0  # m, start of the far branch


# --------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------
def _asfloat(name: str, x: ArrayLike) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{name} should be numeric, got {type(x).__name__}") from exc
    return a


def _check(name: str, a: np.ndarray, bad: np.ndarray, rule: str, unit: str) -> None:
    """Raise ValidationError if any (non-NaN) element is flagged ``bad``, naming the first."""
    bad = np.asarray(bad)
    if bad.any():
        if a.ndim == 0:
            raise ValidationError(f"{name} should be {rule} ({unit}), got {float(a):g}")
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValidationError(
            f"{name} should be {rule} ({unit}); {int(bad.sum())} value(s) are not, "
            f"e.g. {float(a[where]):g} at index {where}"
        )


def _nonneg(name: str, x: ArrayLike, unit: str, allow_inf: bool = False) -> np.ndarray:
    a = _asfloat(name, x)
    with np.errstate(invalid="ignore"):
        if allow_inf:
            _check(name, a, a < 0, ">= 0", unit)
        else:
            _check(name, a, (a < 0) | np.isinf(a), "finite and >= 0", unit)
    return a


def _positive(name: str, x: ArrayLike, unit: str) -> np.ndarray:
    a = _asfloat(name, x)
    with np.errstate(invalid="ignore"):
        _check(name, a, (a <= 0) | np.isinf(a), "finite and > 0", unit)
    return a


def _theta(name: str, x: ArrayLike) -> np.ndarray:
    a = _asfloat(name, x)
    with np.errstate(invalid="ignore"):
        _check(name, a, (a <= 0) | (a >= 1), "inside (0, 1)", "m3 m-3")
    return a


# --------------------------------------------------------------------------------------
# horizontal weighting
# --------------------------------------------------------------------------------------
class _Coefficients(NamedTuple):
    F1: np.ndarray
    F2: np.ndarray
    F3: np.ndarray
    F4: np.ndarray
    F5: np.ndarray
    F6: np.ndarray
    F7: np.ndarray
    F8: np.ndarray


def _coefficients(x: np.ndarray, y: np.ndarray) -> _Coefficients:
    a, b = _A, _B
    F1 = a["a00"] * (1 + a["a03"] * x) * np.exp(-a["a01"] * y) + a["a02"] * (1 + a["a05"] * x) - a["a04"] * y
    F2 = ((-a["a10"] + a["a14"] * x) * np.exp(-a["a11"] * y / (1 + a["a15"] * y)) + a["a12"]) * (1 + a["a13"] * x)
    F3 = a["a20"] * (1 + a["a23"] * x) * np.exp(-a["a21"] * y) + a["a22"] - a["a24"] * y
    F4 = a["a30"] * np.exp(-a["a31"] * y) + a["a32"] - a["a33"] * y + a["a34"] * x
    F5 = (
        (b["b00"] - b["b01"] / (b["b02"] * y + x - 0.13)) * (b["b03"] - y) * np.exp(-b["b04"] * y)
        - b["b05"] * x * y
        + b["b06"]
    )
    F6 = b["b10"] * (x + b["b11"]) + b["b12"] * y
    F7 = (b["b20"] * (1 - b["b26"] * x) * np.exp(-b["b21"] * y * (1 - b["b24"] * x)) + b["b22"] - b["b25"] * y) * (
        2 + b["b23"] * x
    )
    F8 = ((-b["b30"] + b["b34"] * x) * np.exp(-b["b31"] * y / (1 + b["b35"] * x + b["b36"] * y)) + b["b32"]) * (
        2 + b["b33"] * x
    )
    return _Coefficients(F1, F2, F3, F4, F5, F6, F7, F8)


def horizontal_coefficients(humidity: ArrayLike, theta: ArrayLike) -> dict[str, np.ndarray]:
    """The eight coefficient functions F1…F8 of the revised W_r (Schrön et al. 2017, Table A1).

    Parameters
    ----------
    humidity : array_like
        Absolute air humidity h, g m⁻³ (fitted range ~0.1–50).
    theta : array_like
        Volumetric soil moisture θ, m³ m⁻³, inside (0, 1) (fitted range 0.02–0.50).

    Returns
    -------
    dict of str to ndarray
        ``{"F1": …, …, "F8": …}`` broadcast over the inputs. F1, F3, F5, F7 are
        amplitudes (m⁻¹, unnormalised) and F2, F4, F6, F8 decay rates (m⁻¹).

    Examples
    --------
    >>> c = horizontal_coefficients(5.0, 0.1)
    >>> round(float(c["F1"]), 6), round(float(c["F8"]), 6)
    (11949.837802, 0.014903)
    """
    h = _nonneg("humidity", humidity, "g m-3")
    th = _theta("theta", theta)
    return _coefficients(h, th)._asdict()


def horizontal_weight(r: ArrayLike, humidity: ArrayLike, theta: ArrayLike) -> FloatArray:
    r"""Radial horizontal weight W_r of the revised CRNS footprint (Schrön et al. 2017).

    .. math::

        W_r = \begin{cases}
        (F_1 e^{-F_2 r} + F_3 e^{-F_4 r})(1 - e^{-F_0 r}) & 0 < r \le 1\,\mathrm{m} \\
        F_1 e^{-F_2 r} + F_3 e^{-F_4 r} & 1 < r \le 50\,\mathrm{m} \\
        F_5 e^{-F_6 r} + F_7 e^{-F_8 r} & r > 50\,\mathrm{m}
        \end{cases}

    with :math:`F_0 = 3.7\,\mathrm{m^{-1}}`.

    Parameters
    ----------
    r : array_like
        Distance from the sensor, m, >= 0. Pass the *rescaled* distance
        (:func:`rescale_distance`) when pressure or vegetation differ from the reference;
        the branch is chosen on the value given.
    humidity : array_like
        Absolute air humidity, g m⁻³, >= 0.
    theta : array_like
        Volumetric soil moisture, m³ m⁻³, inside (0, 1).

    Returns
    -------
    ndarray
        W_r (unnormalised radial density, per metre), broadcast over the inputs.
        It is a density in *r*: the ring area is already included.

    Raises
    ------
    ValidationError
        For negative distances or humidity, or θ outside (0, 1).

    Notes
    -----
    The fit is discontinuous by design: +2.5 % at 1 m and −21 % … +7 % at 50 m.
    The far branch is used beyond 600 m as well (the fit's upper end), where W_r is tiny.

    References
    ----------
    Schrön et al. (2017), HESS 21, 5009–5030, Appendix A, Table A1.

    Examples
    --------
    >>> round(float(horizontal_weight(1.0, 5.0, 0.1)), 3)
    203702.768
    """
    rr = _nonneg("r", r, "m")
    h = _nonneg("humidity", humidity, "g m-3")
    th = _theta("theta", theta)
    c = _coefficients(h, th)
    rr, *_ = np.broadcast_arrays(rr, h, th)
    near = c.F1 * np.exp(-c.F2 * rr) + c.F3 * np.exp(-c.F4 * rr)
    far = c.F5 * np.exp(-c.F6 * rr) + c.F7 * np.exp(-c.F8 * rr)
    out = np.where(rr <= _R2, near, far)
    return np.where(rr <= _R1, near * -np.expm1(-_F0 * rr), out)


def horizontal_weight_approx(r: ArrayLike) -> FloatArray:
    r"""Humidity- and moisture-independent approximation of W_r (Schrön et al. 2017, App. B).

    .. math:: W_{r,\mathrm{approx}} = (30 e^{-r/1.6} + e^{-r/100})(1 - e^{-3.7 r})

    Parameters
    ----------
    r : array_like
        Distance, m, >= 0.

    Returns
    -------
    ndarray
        Unnormalised radial weight.

    Examples
    --------
    >>> int(horizontal_weight_approx(1.0))
    16
    """
    rr = _nonneg("r", r, "m")
    return (30.0 * np.exp(-rr / 1.6) + np.exp(-rr / 100.0)) * -np.expm1(-_F0 * rr)


def _int_exp(rate: np.ndarray, lo: np.ndarray | float, hi: np.ndarray | float) -> np.ndarray:
    """∫_lo^hi exp(-rate r) dr for rate > 0, lo <= hi (hi may be inf), stable for small rate."""
    width = np.asarray(hi) - lo
    with np.errstate(invalid="ignore"):
        tail = np.where(np.isinf(width), -1.0, np.expm1(-rate * np.where(np.isinf(width), 0, width)))
    return np.exp(-rate * lo) * -tail / rate


def _radial_integral(r: np.ndarray, c: _Coefficients) -> np.ndarray:
    """∫_0^r W_r(s) ds in closed form (r may be +inf)."""
    hi0 = np.minimum(r, _R1)
    near_core = c.F1 * (_int_exp(c.F2, 0.0, hi0) - _int_exp(c.F2 + _F0, 0.0, hi0)) + c.F3 * (
        _int_exp(c.F4, 0.0, hi0) - _int_exp(c.F4 + _F0, 0.0, hi0)
    )
    hi1 = np.clip(r, _R1, _R2)
    mid = c.F1 * _int_exp(c.F2, _R1, hi1) + c.F3 * _int_exp(c.F4, _R1, hi1)
    hi2 = np.maximum(r, _R2)
    far = c.F5 * _int_exp(c.F6, _R2, hi2) + c.F7 * _int_exp(c.F8, _R2, hi2)
    return near_core + mid + far


def _cumulative(rstar: np.ndarray, c: _Coefficients) -> np.ndarray:
    return _radial_integral(rstar, c) / _radial_integral(np.asarray(np.inf), c)


def cumulative_signal(
    r: ArrayLike,
    humidity: ArrayLike,
    theta: ArrayLike,
    pressure: ArrayLike = REFERENCE_PRESSURE,
    veg_height: ArrayLike = 0.0,
) -> FloatArray:
    r"""Fraction of the CRNS signal that comes from within distance ``r`` of the sensor.

    :math:`C(r) = \int_0^{r^*} W_r\,ds \big/ \int_0^\infty W_r\,ds` with
    :math:`r^* = r/(F_p F_{veg})`, integrated in closed form per exponential term.

    Parameters
    ----------
    r : array_like
        Physical distance from the sensor, m, >= 0 (may be ``inf``).
    humidity : array_like
        Absolute air humidity, g m⁻³.
    theta : array_like
        Volumetric soil moisture, m³ m⁻³, inside (0, 1).
    pressure : array_like, optional
        Air pressure, hPa (default 1013.25).
    veg_height : array_like, optional
        Vegetation height, m (default 0).

    Returns
    -------
    ndarray
        Cumulative signal fraction in [0, 1].

    Examples
    --------
    >>> round(float(cumulative_signal(200.0, 5.0, 0.1)), 3)
    0.851
    """
    rr = _nonneg("r", r, "m", allow_inf=True)
    h = _nonneg("humidity", humidity, "g m-3")
    th = _theta("theta", theta)
    rstar = rr / (pressure_factor(pressure) * vegetation_factor(veg_height, th))
    return _cumulative(rstar, _coefficients(h, th))


# --------------------------------------------------------------------------------------
# pressure and vegetation
# --------------------------------------------------------------------------------------
def pressure_factor(pressure: ArrayLike) -> FloatArray:
    r"""Pressure scaling of the footprint, :math:`F_p = 0.4922/(0.86 - e^{-p/p_0})`.

    Parameters
    ----------
    pressure : array_like
        Air pressure, hPa, > 0. :math:`p_0 = 1013.25` hPa.

    Returns
    -------
    ndarray
        F_p (dimensionless); ≈ 1 at sea level, 1.37 at 700 hPa.

    Examples
    --------
    >>> round(float(pressure_factor(700.0)), 6)
    1.371611
    """
    p = _positive("pressure", pressure, "hPa")
    return 0.4922 / (0.86 - np.exp(-p / REFERENCE_PRESSURE))


def vegetation_factor(veg_height: ArrayLike, theta: ArrayLike) -> FloatArray:
    r"""Vegetation scaling of the footprint (Schrön et al. 2017).

    :math:`F_{veg} = 1 - 0.17\,(1 - e^{-0.41 H_{veg}})(1 + e^{-9.25\,\theta})`

    Parameters
    ----------
    veg_height : array_like
        Vegetation height, m, >= 0.
    theta : array_like
        Volumetric soil moisture, m³ m⁻³, inside (0, 1).

    Returns
    -------
    ndarray
        F_veg (dimensionless, <= 1).

    Examples
    --------
    >>> round(float(vegetation_factor(2.0, 0.3)), 6)
    0.898942
    """
    hv = _nonneg("veg_height", veg_height, "m")
    th = _theta("theta", theta)
    return 1.0 - 0.17 * -np.expm1(-0.41 * hv) * (1.0 + np.exp(-9.25 * th))


def rescale_distance(
    r: ArrayLike,
    pressure: ArrayLike = REFERENCE_PRESSURE,
    veg_height: ArrayLike = 0.0,
    theta: ArrayLike = 0.1,
) -> FloatArray:
    r"""Rescale a point's distance for pressure and vegetation: :math:`r^* = r/(F_p F_{veg})`.

    Low pressure enlarges the footprint, so points must *look closer* to the sensor.
    Use this for distances of samples and raster cells; use :func:`scale_radius` for the
    footprint radius itself (the opposite direction).

    Parameters
    ----------
    r : array_like
        Distance, m, >= 0.
    pressure : array_like, optional
        Air pressure, hPa (default 1013.25).
    veg_height : array_like, optional
        Vegetation height, m (default 0).
    theta : array_like, optional
        Soil moisture for F_veg, m³ m⁻³ (default 0.1; irrelevant when ``veg_height`` is 0).

    Returns
    -------
    ndarray
        Rescaled distance r*, m.

    Examples
    --------
    >>> round(float(rescale_distance(100.0, pressure=700.0)), 4)
    72.907
    """
    rr = _nonneg("r", r, "m")
    return rr / (pressure_factor(pressure) * vegetation_factor(veg_height, theta))


def scale_radius(
    radius: ArrayLike,
    pressure: ArrayLike = REFERENCE_PRESSURE,
    veg_height: ArrayLike = 0.0,
    theta: ArrayLike = 0.1,
) -> FloatArray:
    r"""Scale a reference footprint radius to site conditions: :math:`R = R_0 F_p F_{veg}`.

    Parameters
    ----------
    radius : array_like
        Radius at p = 1013.25 hPa without vegetation, m, >= 0.
    pressure, veg_height, theta : array_like, optional
        As in :func:`rescale_distance`.

    Returns
    -------
    ndarray
        Radius at site conditions, m.

    Examples
    --------
    >>> round(float(scale_radius(100.0, pressure=700.0)), 4)
    137.1611
    """
    rr = _nonneg("radius", radius, "m")
    return rr * pressure_factor(pressure) * vegetation_factor(veg_height, theta)


# --------------------------------------------------------------------------------------
# vertical weighting
# --------------------------------------------------------------------------------------
def _d86(r: np.ndarray, rho: np.ndarray, theta_total: np.ndarray) -> np.ndarray:
    return (1.0 / rho) * (
        8.321 + 0.14249 * (0.96655 + np.exp(-0.01 * r)) * (20.0 + theta_total) / (0.0429 + theta_total)
    )


def penetration_depth(
    r: ArrayLike,
    bulk_density: ArrayLike,
    theta: ArrayLike,
    lattice_water: ArrayLike = 0.0,
    soil_organic_carbon: ArrayLike = 0.0,
) -> FloatArray:
    r"""Penetration depth D86 (cm) holding 86 % of the signal (Köhli 2015; Schrön 2017).

    .. math::

        D_{86} = \frac{1}{\rho_b}\Big(8.321 + 0.14249\,(0.96655 + e^{-0.01 r})
                 \frac{20 + \theta_t}{0.0429 + \theta_t}\Big)

    with total water :math:`\theta_t = \theta + \rho_b (W_{lat} + W_{soc})`
    (crnpy 0.8.0 ``sensing_depth``).

    Parameters
    ----------
    r : array_like
        Distance from the sensor, m, >= 0 (use the rescaled distance r*).
    bulk_density : array_like
        Dry soil bulk density ρ_b, g cm⁻³, > 0.
    theta : array_like
        Volumetric soil moisture, m³ m⁻³, inside (0, 1).
    lattice_water : array_like, optional
        Gravimetric lattice water W_lat, g g⁻¹ (default 0).
    soil_organic_carbon : array_like, optional
        Gravimetric water equivalent of soil organic carbon W_soc, g g⁻¹ (default 0).

    Returns
    -------
    ndarray
        D86 in cm.

    Examples
    --------
    >>> round(float(penetration_depth(1.0, 1.6, 0.1)), 4)
    29.7099
    """
    rr = _nonneg("r", r, "m")
    rho = _positive("bulk_density", bulk_density, "g cm-3")
    th = _theta("theta", theta)
    wl = _nonneg("lattice_water", lattice_water, "g g-1")
    ws = _nonneg("soil_organic_carbon", soil_organic_carbon, "g g-1")
    return _d86(rr, rho, th + rho * (wl + ws))


def vertical_weight(depth: ArrayLike, d86: ArrayLike) -> FloatArray:
    r"""Vertical weight :math:`W_d = e^{-2 d / D_{86}}` (Köhli 2015).

    Parameters
    ----------
    depth : array_like
        Depth below the surface, cm, >= 0.
    d86 : array_like
        Penetration depth, cm, > 0 (:func:`penetration_depth`).

    Returns
    -------
    ndarray
        Relative weight in (0, 1]; integrating it from 0 to D86 gives 1 − e⁻² ≈ 86.5 %
        of the total.

    Examples
    --------
    >>> round(float(vertical_weight(10.0, penetration_depth(1.0, 1.6, 0.1))), 4)
    0.5101
    """
    d = _nonneg("depth", depth, "cm")
    D = _positive("d86", d86, "cm")
    return np.exp(-2.0 * d / D)


# --------------------------------------------------------------------------------------
# footprint radius
# --------------------------------------------------------------------------------------
def _solve_radius(c: _Coefficients, fraction: float, shape: tuple[int, ...]) -> np.ndarray:
    """Rescaled radius r* with C(r*) = fraction, by vectorised bisection on [0, 20 km]."""
    target = fraction * _radial_integral(np.asarray(np.inf), c)
    lo = np.zeros(shape)
    hi = np.full(shape, 20_000.0)
    for _ in range(64):  # 20 km / 2^64: far below float resolution
        mid = 0.5 * (lo + hi)
        below = _radial_integral(mid, c) < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def footprint_radius(
    humidity: ArrayLike,
    theta: ArrayLike,
    pressure: ArrayLike = REFERENCE_PRESSURE,
    veg_height: ArrayLike = 0.0,
    fraction: float = 0.86,
) -> FloatArray:
    r"""Footprint radius R86 (m): the distance within which 86 % of the signal originates.

    Solves :math:`\int_0^{R_0} W_r\,dr = 0.86 \int_0^\infty W_r\,dr` with the integrals in
    closed form (no lookup table), then scales :math:`R_{86} = R_0 F_p F_{veg}`.

    Parameters
    ----------
    humidity : array_like
        Absolute air humidity, g m⁻³.
    theta : array_like
        Volumetric soil moisture, m³ m⁻³, inside (0, 1).
    pressure : array_like, optional
        Air pressure, hPa (default 1013.25).
    veg_height : array_like, optional
        Vegetation height, m (default 0).
    fraction : float, optional
        Signal fraction defining the radius (default 0.86).

    Returns
    -------
    ndarray
        R86 in m; ≈ 130–240 m at sea level.

    Notes
    -----
    Agrees with the neptoon/CoRNy lookup table ``footprint_radius.csv`` within 1–6 m.

    Examples
    --------
    >>> int(footprint_radius(5.0, 0.1))
    208
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fraction should be inside (0, 1), got {fraction}")
    h = _nonneg("humidity", humidity, "g m-3")
    th = _theta("theta", theta)
    h, th = np.broadcast_arrays(h, th)
    r0 = _solve_radius(_coefficients(h, th), fraction, h.shape)
    return scale_radius(r0, pressure, veg_height, th)


# --------------------------------------------------------------------------------------
# Schrön 2017 iterative average of point profiles
# --------------------------------------------------------------------------------------
class ProfileAverage(NamedTuple):
    """Result of :func:`weighted_profile_average` with ``return_details=True``."""

    theta: float
    """Footprint-weighted field soil moisture, m³ m⁻³."""
    profile_theta: np.ndarray
    """Vertically weighted soil moisture per profile, m³ m⁻³."""
    rescaled_distance: np.ndarray
    """r* per profile, m."""
    horizontal_weight: np.ndarray
    """W_r per profile (unnormalised)."""
    d86: np.ndarray
    """Penetration depth per profile, cm."""
    n_iter: int
    """Number of fixed-point iterations."""


def weighted_profile_average(
    distances: ArrayLike,
    depths: ArrayLike,
    theta: ArrayLike,
    humidity: float,
    bulk_density: float,
    pressure: float = REFERENCE_PRESSURE,
    veg_height: float = 0.0,
    tol: float = 1e-6,
    *,
    max_iter: int = 100,
    return_details: bool = False,
) -> float | ProfileAverage:
    r"""Footprint-weighted field soil moisture from point profiles (Schrön et al. 2017).

    Starting from the arithmetic mean of all samples, iterate until
    :math:`|\theta^{i+1} - \theta^i| < \mathrm{tol}`:

    .. math::

        r^*_p &= r_p / (F_p F_{veg}(\theta^i)) \\
        D_p &= D_{86}(r^*_p, \rho_b, \theta^i) \\
        \theta_p &= \sum_k e^{-2 d_{pk}/D_p}\,\theta_{pk} \Big/ \sum_k e^{-2 d_{pk}/D_p} \\
        \theta^{i+1} &= \sum_p W_r(r^*_p, h, \theta^i)\,\theta_p \Big/ \sum_p W_r(r^*_p, h, \theta^i)

    The *field* mean θⁱ drives D86 and W_r (not the profile mean, unlike neptoon), and the
    rescaling is applied once per iteration to the raw distances (it does not compound).
    Identical to crnpy 0.8.0 ``nrad_weight`` for the same ``tol``.

    Parameters
    ----------
    distances : array_like, shape (n_profiles,)
        Distance of each profile from the sensor, m, >= 0.
    depths : array_like, shape (n_profiles, n_depths)
        Sample (mid-)depths, cm, >= 0; NaN pads shorter profiles.
    theta : array_like, shape (n_profiles, n_depths)
        Volumetric soil moisture of each sample, m³ m⁻³, inside (0, 1); NaN where padded.
    humidity : float
        Absolute air humidity for the campaign, g m⁻³.
    bulk_density : float
        Site-average dry bulk density, g cm⁻³, > 0.
    pressure : float, optional
        Air pressure, hPa (default 1013.25).
    veg_height : float, optional
        Vegetation height, m (default 0).
    tol : float, optional
        Absolute convergence tolerance on θ, m³ m⁻³ (default 1e-6; crnpy uses 0.01).
    max_iter : int, optional
        Iteration limit (default 100).
    return_details : bool, optional
        Return a :class:`ProfileAverage` with per-profile values instead of a float.

    Returns
    -------
    float or ProfileAverage
        Weighted field soil moisture, m³ m⁻³.

    Raises
    ------
    ValidationError
        On mismatched shapes, negative distances/depths, θ outside (0, 1), a profile
        with no valid sample, or non-positive bulk density.
    ConvergenceError
        If the iteration does not converge in ``max_iter`` steps.

    References
    ----------
    Schrön et al. (2017), HESS 21, 5009–5030, Sect. 3 (steps 2 and 4).

    Examples
    --------
    >>> d = [[5.0, 15.0], [5.0, 15.0]]
    >>> round(weighted_profile_average([10.0, 100.0], d, [[0.2, 0.2], [0.2, 0.2]], 5.0, 1.4), 12)
    0.2
    """
    r = _nonneg("distances", distances, "m")
    z = _asfloat("depths", depths)
    th = _asfloat("theta", theta)
    if r.ndim != 1:
        raise ValidationError(f"distances should be 1-D (n_profiles,), got shape {r.shape}")
    if z.ndim == 1:
        z = z[:, None]
    if th.ndim == 1:
        th = th[:, None]
    if z.shape != th.shape or z.shape[0] != r.shape[0]:
        raise ValidationError(
            f"depths {z.shape} and theta {th.shape} should both be (n_profiles, n_depths) "
            f"with n_profiles = len(distances) = {r.shape[0]}"
        )
    _nonneg("depths", z, "cm")
    _theta("theta", th)
    rho = float(_positive("bulk_density", bulk_density, "g cm-3"))
    h = float(_nonneg("humidity", humidity, "g m-3"))
    if not tol > 0:
        raise ConfigError(f"tol should be > 0, got {tol}")
    valid = ~(np.isnan(z) | np.isnan(th))
    empty = ~valid.any(axis=1)
    if empty.any():
        raise ValidationError(f"profile(s) {np.flatnonzero(empty).tolist()} have no valid sample")
    zz = np.where(valid, z, 0.0)
    tt = np.where(valid, th, 0.0)
    fp = pressure_factor(pressure)

    theta_i = float(th[valid].mean())
    for it in range(1, max_iter + 1):  # noqa: B007 - `it` reports the iterations after the loop
        rstar = r / (fp * vegetation_factor(veg_height, theta_i))
        d86 = _d86(rstar, rho, np.asarray(theta_i))
        wd = np.where(valid, np.exp(-2.0 * zz / d86[:, None]), 0.0)
        theta_p = (wd * tt).sum(axis=1) / wd.sum(axis=1)
        wr = horizontal_weight(rstar, h, theta_i)
        theta_new = float((wr * theta_p).sum() / wr.sum())
        diff = abs(theta_new - theta_i)
        theta_i = theta_new
        if diff < tol:
            break
    else:
        raise ConvergenceError(
            f"weighted_profile_average did not converge to tol={tol} in {max_iter} iterations (last change {diff:.3g})"
        )
    log.debug("weighted_profile_average converged after %d iterations: %.6f", it, theta_i)
    if return_details:
        return ProfileAverage(theta_i, theta_p, rstar, wr, d86, it)
    return theta_i


# --------------------------------------------------------------------------------------
# layered products: CRNS-equivalent soil moisture
# --------------------------------------------------------------------------------------
def layer_weights(top: ArrayLike, bottom: ArrayLike, d86: ArrayLike) -> FloatArray:
    r"""Signal fraction of each soil layer for a penetration depth D86.

    .. math:: w_k = e^{-2 z_{1,k}/D_{86}} - e^{-2 z_{2,k}/D_{86}}
              = \int_{z_1}^{z_2} e^{-2z/D}\,dz \Big/ \int_0^\infty e^{-2z/D}\,dz

    Parameters
    ----------
    top, bottom : array_like, shape (n_layers,)
        Layer boundaries, cm, with 0 <= top < bottom (bottom may be ``inf``).
    d86 : array_like
        Penetration depth(s), cm, > 0, any shape.

    Returns
    -------
    ndarray, shape (n_layers,) + d86.shape
        Weights; they sum to 1 when the layers cover [0, ∞).

    Examples
    --------
    >>> w = layer_weights([0, 7, 28, 100], [7, 28, 100, 289], 20.0)
    >>> [round(float(x), 4) for x in w]
    [0.5034, 0.4358, 0.0608, 0.0]
    """
    t = _nonneg("top", top, "cm")
    b = _nonneg("bottom", bottom, "cm", allow_inf=True)
    if t.ndim != 1 or b.shape != t.shape:
        raise ValidationError(f"top {t.shape} and bottom {b.shape} should be 1-D of equal length")
    if np.any(~(b > t)):
        raise ValidationError(f"every layer needs bottom > top, got top={t.tolist()} bottom={b.tolist()}")
    D = _positive("d86", d86, "cm")
    ex = (slice(None),) + (None,) * D.ndim
    return np.exp(-2.0 * t[ex] / D) - np.exp(-2.0 * b[ex] / D)


def equivalent_soil_moisture(
    layer_theta: ArrayLike,
    layer_top: ArrayLike = tuple(t for t, _ in ERA5_LAND_LAYERS),
    layer_bottom: ArrayLike = tuple(b for _, b in ERA5_LAND_LAYERS),
    bulk_density: ArrayLike = 1.4,
    *,
    r: float = 0.0,
    lattice_water: ArrayLike = 0.0,
    soil_organic_carbon: ArrayLike = 0.0,
    tol: float = 1e-6,
    max_iter: int = 50,
    return_d86: bool = False,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    r"""CRNS-equivalent soil moisture θ_eq of a layered product (e.g. ERA5-Land swvl1–4).

    Fixed point of :math:`\theta = \sum_k w_k(D_{86}(\theta))\,\theta_k / \sum_k w_k`
    with :func:`layer_weights` and :func:`penetration_depth`; 2–5 steps suffice.
    Works on whole arrays (layer × time × y × x) at once.

    Parameters
    ----------
    layer_theta : array_like, shape (n_layers, ...)
        Layer soil moisture, m³ m⁻³, layer axis first. A pixel with NaN in any layer
        gives NaN (sea, glaciers).
    layer_top, layer_bottom : array_like, shape (n_layers,)
        Layer boundaries in cm (default ERA5-Land: 0–7, 7–28, 28–100, 100–289 cm).
    bulk_density : array_like
        Dry bulk density, g cm⁻³, scalar or broadcastable to ``layer_theta.shape[1:]``.
    r : float, optional
        Distance used in D86, m (default 0, the pseudoproxy convention of SCIENCE §4.5).
    lattice_water, soil_organic_carbon : array_like, optional
        Gravimetric water equivalents added to θ in D86 (default 0).
    tol : float, optional
        Absolute convergence tolerance, m³ m⁻³ (default 1e-6).
    max_iter : int, optional
        Iteration limit (default 50).
    return_d86 : bool, optional
        Also return the converged D86 (cm).

    Returns
    -------
    theta_eq : ndarray, shape layer_theta.shape[1:]
        CRNS-equivalent soil moisture in the input's floating dtype (float32 stays float32).
    d86 : ndarray, optional
        Converged penetration depth, cm.

    Raises
    ------
    ValidationError
        On θ outside (0, 1), non-positive bulk density or mismatched layer counts.
    ConvergenceError
        If the fixed point is not reached in ``max_iter`` steps.

    Examples
    --------
    >>> float(equivalent_soil_moisture([0.3, 0.3, 0.3, 0.3]))
    0.3
    """
    arr = np.asarray(layer_theta)
    out_dtype = arr.dtype if arr.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    th = _asfloat("layer_theta", arr)
    if th.ndim < 1:
        raise ValidationError("layer_theta needs a leading layer axis")
    t = _nonneg("layer_top", layer_top, "cm")
    b = _asfloat("layer_bottom", layer_bottom)
    if t.shape != (th.shape[0],) or b.shape != t.shape:
        raise ValidationError(
            f"layer_theta has {th.shape[0]} layers but layer_top/layer_bottom have shapes {t.shape}/{b.shape}"
        )
    _theta("layer_theta", th)
    rho = _positive("bulk_density", bulk_density, "g cm-3")
    extra = rho * (
        _nonneg("lattice_water", lattice_water, "g g-1") + _nonneg("soil_organic_carbon", soil_organic_carbon, "g g-1")
    )
    rr = float(_nonneg("r", r, "m"))
    missing = np.isnan(th).any(axis=0)
    thf = np.where(missing, 0.1, np.nan_to_num(th, nan=0.1))  # placeholder, masked at the end

    cur = thf[0]
    for _ in range(max_iter):
        d86 = _d86(np.asarray(rr), rho, cur + extra)
        w = layer_weights(t, b, d86)
        new = (w * thf).sum(axis=0) / w.sum(axis=0)
        delta = np.max(np.abs(new - cur), initial=0.0)
        cur = new
        if delta < tol:
            break
    else:
        raise ConvergenceError(f"equivalent_soil_moisture did not converge in {max_iter} steps")
    d86 = _d86(np.asarray(rr), rho, cur + extra)
    cur = np.where(missing, np.nan, cur).astype(out_dtype, copy=False)
    if return_d86:
        return cur, np.where(missing, np.nan, d86).astype(out_dtype, copy=False)
    return cur


# --------------------------------------------------------------------------------------
# gridded footprint
# --------------------------------------------------------------------------------------
def footprint_kernel(
    cell_size: float,
    humidity: float,
    theta: float,
    pressure: float = REFERENCE_PRESSURE,
    veg_height: float = 0.0,
    max_radius: float | None = None,
) -> npt.NDArray[np.float64]:
    r"""Footprint weights of a square raster centred on the sensor, summing to 1.

    A cell's weight is the CRNS signal fraction from its area,
    :math:`\iint_{cell} W_r(r^*)/(2\pi r)\,dA`, computed without sampling the 1/r
    singularity: the exact mass of thin annuli (:func:`cumulative_signal`, closed form;
    8–256 annuli per cell width) is shared among cells by the exact area of overlap of
    annulus and cell (closed-form disc–rectangle intersection). Plain cell-centre
    sampling puts only 0.816 of the weight inside R86 for 10 m cells; this gives 0.86.

    Parameters
    ----------
    cell_size : float
        Raster cell size, m, > 0.
    humidity : float
        Absolute air humidity, g m⁻³.
    theta : float
        Volumetric soil moisture, m³ m⁻³, inside (0, 1).
    pressure : float, optional
        Air pressure, hPa (default 1013.25).
    veg_height : float, optional
        Vegetation height, m (default 0).
    max_radius : float, optional
        Truncation radius, m. Default: the radius holding 99.9 % of the signal
        (≈ 750–900 m at sea level). The kernel is renormalised to sum to 1.

    Returns
    -------
    ndarray, shape (2n + 1, 2n + 1), float64
        Weights; the sensor sits in the centre of cell ``[n, n]``. Rows run north to
        south and columns west to east, as in a north-up raster.

    Examples
    --------
    >>> k = footprint_kernel(100.0, 5.0, 0.1)
    >>> k.shape, round(float(k.sum()), 12)
    ((21, 21), 1.0)
    """
    cell = float(_positive("cell_size", cell_size, "m"))
    h = float(_nonneg("humidity", humidity, "g m-3"))
    th = float(_theta("theta", theta))
    scale = float(pressure_factor(pressure) * vegetation_factor(veg_height, th))
    c = _coefficients(np.asarray(h), np.asarray(th))
    if max_radius is None:
        rmax = float(_solve_radius(c, 0.999, ())) * scale
    else:
        rmax = float(_positive("max_radius", max_radius, "m"))
    n = max(0, int(np.ceil(rmax / cell - 0.5)))
    size = 2 * n + 1

    def mass(r: np.ndarray) -> np.ndarray:  # signal fraction within physical radius r
        return _cumulative(np.asarray(r) / scale, c)

    # one quadrant (x, y >= 0); cell (i, j) spans x in [max(0, j - 1/2), j + 1/2] cells
    q = int(np.clip(4000.0 / max(rmax / cell, 1.0), 8, 256))  # radial steps per cell
    edges = np.linspace(0.0, rmax, int(np.ceil(rmax / (cell / q))) + 1)
    dr = edges[1]
    ring_density = np.diff(mass(edges)) / (0.25 * np.pi * np.diff(edges**2))  # per m², uniform in a ring
    ring_density = np.append(ring_density, 0.0)  # beyond rmax
    lo1d = np.maximum(np.arange(n + 1) - 0.5, 0.0) * cell
    hi1d = (np.arange(n + 1) + 0.5) * cell
    quad_w = np.zeros((n + 1) * (n + 1))
    x0, y0 = (a.ravel() for a in np.meshgrid(lo1d, lo1d))  # x = column, y = row offset
    x1, y1 = (a.ravel() for a in np.meshgrid(hi1d, hi1d))
    i_lo = np.minimum(np.floor(np.hypot(x0, y0) / dr).astype(np.int64), edges.size - 1)
    i_hi = np.minimum(np.ceil(np.hypot(x1, y1) / dr).astype(np.int64), edges.size - 1)
    n_steps = int((i_hi - i_lo).max()) + 1
    step = np.arange(n_steps + 1)
    chunk = max(1, 4_000_000 // (n_steps + 1))
    for s0 in range(0, quad_w.size, chunk):
        sl = slice(s0, s0 + chunk)
        idx = np.minimum(i_lo[sl, None] + step[None, :], i_hi[sl, None])
        r_e = edges[idx]
        area = (
            _quarter_disc_area(x0[sl, None], y0[sl, None], r_e)
            - _quarter_disc_area(x1[sl, None], y0[sl, None], r_e)
            - _quarter_disc_area(x0[sl, None], y1[sl, None], r_e)
            + _quarter_disc_area(x1[sl, None], y1[sl, None], r_e)
        )
        quad_w[sl] = (np.maximum(np.diff(area, axis=1), 0.0) * ring_density[idx[:, :-1]]).sum(axis=1)
    quad_w = quad_w.reshape(n + 1, n + 1)
    quad_w = 0.5 * (quad_w + quad_w.T)  # isotropic: remove round-off asymmetry
    quad_w[0, :] *= 2.0  # cells on the axes are split between two quadrants
    quad_w[:, 0] *= 2.0
    weights = np.empty((size, size))
    weights[n:, n:] = quad_w
    weights[n:, :n] = quad_w[:, :0:-1]
    weights[:n, :] = weights[size - 1 : n : -1, :]
    if not np.all(np.isfinite(weights)) or weights.min() < 0:
        raise ValidationError(
            f"footprint weights are not positive for humidity={h}, theta={th}: outside the "
            "fitted range of the Schrön 2017 W_r (h 0.1-50 g m-3, theta 0.02-0.50)"
        )
    return weights / weights.sum()


def _quarter_disc_area(a: np.ndarray, b: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Area of {x >= a, y >= b, x² + y² <= r²} for a, b >= 0 (closed form)."""
    r2 = r * r

    def prim(x: np.ndarray) -> np.ndarray:  # ∫ sqrt(r² - x²) dx
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(r > 0, np.clip(x / np.where(r > 0, r, 1.0), -1.0, 1.0), 0.0)
        return 0.5 * (x * np.sqrt(np.maximum(r2 - x * x, 0.0)) + r2 * np.arcsin(ratio))

    xmax = np.sqrt(np.maximum(r2 - b * b, 0.0))
    inside = a * a + b * b < r2
    return np.where(inside, prim(xmax) - prim(a) - b * (xmax - a), 0.0)


def _kernel_extents(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last non-zero column of every kernel row (0, 0 for empty rows)."""
    nz = kernel != 0
    any_nz = nz.any(axis=1)
    j0 = np.where(any_nz, nz.argmax(axis=1), 0)
    j1 = np.where(any_nz, kernel.shape[1] - nz[:, ::-1].argmax(axis=1), 0)
    return j0.astype(np.intp), j1.astype(np.intp)


def footprint_average(
    raster: ArrayLike,
    rows: ArrayLike,
    cols: ArrayLike,
    kernel: ArrayLike,
    min_valid_fraction: float = 0.5,
    *,
    n_threads: int | None = None,
    return_valid_fraction: bool = False,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    r"""Footprint-weighted, NaN-aware average of a raster (or stack) at many centre cells.

    For a centre cell *c* and kernel *w* centred on it,

    .. math:: \bar z_c = \sum_i w_i z_i \Big/ \sum_{i\,\mathrm{valid}} w_i

    over cells that are inside the raster and not NaN, i.e. renormalised by the valid
    weight (xESMF ``skipna`` convention). Where the valid weight fraction
    :math:`\sum_{valid} w_i / \sum_i w_i` is below ``min_valid_fraction`` the result is NaN.
    The compiled kernel releases the GIL and runs in parallel over centres.

    Parameters
    ----------
    raster : array_like, shape (ny, nx) or (n_bands, ny, nx)
        Values on a regular grid (north-up rows). Converted to C-contiguous float32
        (no copy for a float32 C-contiguous array or read-only ``numpy.memmap``).
    rows, cols : array_like of int, shape (n,)
        Raster row and column of each centre (the sensor's cell); must lie in the raster.
    kernel : array_like, shape (kh, kw)
        Non-negative weights with odd sizes, centred on ``[kh // 2, kw // 2]``
        (:func:`footprint_kernel`).
    min_valid_fraction : float, optional
        Minimum valid weight fraction in [0, 1] (default 0.5).
    n_threads : int, optional
        Threads (default: all OpenMP threads; see :func:`smengine._threads.effective_n_threads`).
    return_valid_fraction : bool, optional
        Also return the valid weight fraction per centre.

    Returns
    -------
    mean : ndarray, float64, shape (n,) or (n_bands, n)
        Weighted means (NaN below ``min_valid_fraction``).
    valid_fraction : ndarray, float64, optional
        Valid weight fraction, same shape.

    Raises
    ------
    ValidationError
        For mismatched or out-of-raster centres, a kernel with even sizes, negative or
        non-finite weights, or an all-zero kernel.

    Examples
    --------
    >>> z = np.arange(25, dtype=np.float32).reshape(5, 5)
    >>> k = np.ones((3, 3))
    >>> footprint_average(z, [2, 0], [2, 0], k).tolist()  # the corner sees 4 of 9 cells
    [12.0, nan]
    >>> footprint_average(z, [2, 0], [2, 0], k, min_valid_fraction=0.4).tolist()
    [12.0, 3.0]
    """
    a = np.asarray(raster)
    if a.ndim not in (2, 3):
        raise ValidationError(f"raster should be 2-D (ny, nx) or 3-D (n_bands, ny, nx), got shape {a.shape}")
    squeeze = a.ndim == 2
    a3 = np.ascontiguousarray(a[None] if squeeze else a, dtype=np.float32)
    _, ny, nx = a3.shape
    if ny == 0 or nx == 0:
        raise ValidationError(f"raster is empty, shape {a.shape}")
    rr = np.asarray(rows)
    cc = np.asarray(cols)
    if rr.ndim != 1 or cc.shape != rr.shape:
        raise ValidationError(f"rows {rr.shape} and cols {cc.shape} should be 1-D of equal length")
    if rr.size and not (np.issubdtype(rr.dtype, np.integer) and np.issubdtype(cc.dtype, np.integer)):
        raise ValidationError(f"rows and cols should be integer, got {rr.dtype} and {cc.dtype}")
    rr = np.ascontiguousarray(rr, dtype=np.intp)
    cc = np.ascontiguousarray(cc, dtype=np.intp)
    outside = (rr < 0) | (rr >= ny) | (cc < 0) | (cc >= nx)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValidationError(
            f"{int(outside.sum())} centre(s) lie outside the {ny}x{nx} raster, "
            f"e.g. centre {i} at (row {rr[i]}, col {cc[i]})"
        )
    k = np.ascontiguousarray(kernel, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] % 2 == 0 or k.shape[1] % 2 == 0:
        raise ValidationError(f"kernel should be 2-D with odd sizes, got shape {k.shape}")
    if not np.all(np.isfinite(k)) or (k < 0).any():
        raise ValidationError("kernel weights should be finite and >= 0")
    total = float(k.sum())
    if not total > 0:
        raise ValidationError("kernel weights sum to 0")
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise ConfigError(f"min_valid_fraction should be in [0, 1], got {min_valid_fraction}")
    j0, j1 = _kernel_extents(k)
    nb, n = a3.shape[0], rr.shape[0]
    out = np.empty((nb, n), dtype=np.float64)
    frac = np.empty((nb, n), dtype=np.float64)

    from smengine._ext import _footprint

    order = np.argsort(rr * nx + cc, kind="stable").astype(np.intp, copy=False)  # raster order: cache reuse
    _footprint.footprint_average(
        a3,
        rr,
        cc,
        order,
        k,
        j0,
        j1,
        total,
        float(min_valid_fraction),
        out,
        frac,
        effective_n_threads(n_threads),
    )
    if squeeze:
        out, frac = out[0], frac[0]
    return (out, frac) if return_valid_fraction else out
