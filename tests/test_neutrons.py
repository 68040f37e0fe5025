"""Counts → soil moisture: SCIENCE.md §5.3 and crnpy 0.8.0 as a test-only oracle."""

from __future__ import annotations

import numpy as np
import pytest

from smengine import neutrons as nt
from smengine.errors import ConfigError, ValidationError


def test_crnpy_unit_values():
    # crnpy tests: counts_to_vwc(2580, N0=3767, Wlat=0.033, Wsoc=0, bd=1.33) rounds to 0.15;
    # correction_humidity(20, 0) rounds to 1.1
    assert round(float(nt.counts_to_theta(2580, 3767, 1.33, lattice_water=0.033)), 2) == 0.15
    assert round(float(nt.humidity_correction(20.0, 0.0)), 1) == 1.1


@pytest.mark.oracle
def test_equal_to_crnpy():
    crnpy = pytest.importorskip("crnpy")
    rng = np.random.default_rng(0)
    n = rng.uniform(1500, 3500, 200)
    np.testing.assert_allclose(
        nt.counts_to_theta(n, 3767, 1.33, 0.033, 0.01), crnpy.counts_to_vwc(n, 3767, 0.033, 0.01, 1.33), rtol=1e-14
    )
    p = rng.uniform(700, 1030, 200)
    # crnpy divides counts by exp((Pref - P)/L); we multiply by exp(beta (P - Pref)), beta = 1/L
    np.testing.assert_allclose(
        nt.pressure_correction(p, 1013.25, 0.0076), 1 / crnpy.correction_pressure(p, 1013.25, 1 / 0.0076), rtol=1e-14
    )
    h = rng.uniform(0, 25, 200)
    np.testing.assert_allclose(nt.humidity_correction(h, 3.0), crnpy.correction_humidity(h, 3.0), rtol=1e-14)
    inc = rng.uniform(120, 180, 200)
    ref = crnpy.correction_incoming_flux(inc, 150.0, Rc_method="Hawdonetal2014", Rc_site=2.51, Rc_ref=4.49)
    np.testing.assert_allclose(nt.incoming_correction(inc, 150.0, 2.51, 4.49), 1 / ref, rtol=1e-14)
    rh, t = rng.uniform(5, 100, 200), rng.uniform(-10, 35, 200)
    np.testing.assert_allclose(nt.absolute_humidity(rh, t, "campbell"), crnpy.abs_humidity(rh, t), rtol=1e-14)


def test_magnus_and_campbell_humidity_agree_physically():
    rh, t = np.linspace(10, 100, 10), np.linspace(-5, 30, 10)
    np.testing.assert_allclose(nt.absolute_humidity(rh, t), nt.absolute_humidity(rh, t, "campbell"), rtol=0.01)


def test_inverse_and_koehli_equivalent_form():
    theta = np.linspace(0.02, 0.6, 30)
    n = nt.theta_to_counts(theta, 1085.0, 1.135, 0.002, 0.031)
    np.testing.assert_allclose(nt.counts_to_theta(n, 1085.0, 1.135, 0.002, 0.031), theta, rtol=1e-12)
    # Köhli et al. (2021) form: theta_g = p0 (1 - N/Nmax)/(p1 - N/Nmax)
    a0, a1, a2 = nt.DESILETS
    n0 = 3000.0
    nmax = n0 * (a0 + a1 * a2) / a2
    p0, p1 = -a2, a1 * a2 / (a0 + a1 * a2)
    counts = np.linspace(1300, 2900, 20)
    g = p0 * (1 - counts / nmax) / (p1 - counts / nmax)
    np.testing.assert_allclose(nt.counts_to_theta(counts, n0, 1.0), g, rtol=1e-12)
    assert np.isnan(nt.counts_to_theta(0.3 * n0, n0, 1.3))  # below a1 N0: no solution


def test_uncertainty_leading_order_is_the_derivative():
    n, n0, rho = 2000.0, 3000.0, 1.3
    s = 1e-3
    deriv = (nt.counts_to_theta(n + 1e-3, n0, rho) - nt.counts_to_theta(n - 1e-3, n0, rho)) / 2e-3
    assert nt.theta_uncertainty(n, s, n0, rho) == pytest.approx(abs(deriv) * s, rel=1e-6)
    assert nt.theta_uncertainty(n, 40.0, n0, rho) > abs(deriv) * 40.0  # higher orders add


def test_corrections_direction_and_errors():
    # less air above the sensor means more neutrons: low-pressure counts are scaled down
    assert nt.pressure_correction(900.0) < 1 < nt.pressure_correction(1030.0)
    # vapour moderates neutrons: humid-air counts are scaled up
    assert nt.humidity_correction(10.0) > 1
    # a stronger incoming flux inflates counts: scaled down
    assert nt.incoming_correction(160.0, 150.0) < 1
    with pytest.raises(ValidationError):
        nt.absolute_humidity(120.0, 10.0)
    with pytest.raises(ConfigError):
        nt.incoming_correction(150.0, 150.0, rc_site=2.0)
    with pytest.raises(ConfigError):
        nt.counts_to_theta(1000.0, 0.0, 1.3)
