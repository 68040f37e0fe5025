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
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from smengine.errors import ConfigError, ValidationError

__all__ = [
    "DESILETS",
    "absolute_humidity",
    "calibrate_n0",
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
