"""Metrics against SCIENCE.md §3 reference values, scipy, and hydroeval as a test-only oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from smengine import metrics as m
from smengine.errors import ValidationError

SIM = np.array([5, 7, 9, 2, 4.5, 6.7])
OBS = np.array([4.7, 6, 10, 2.5, 4, 6.8])


def test_kge_reference_vector():
    assert m.pearson_r(SIM, OBS) == pytest.approx(0.9615951377405804, abs=1e-15)
    assert m.kge(SIM, OBS) == pytest.approx(0.9181073779138655, abs=1e-14)
    assert m.kge_prime(SIM, OBS) == pytest.approx(0.9132923608280753, abs=1e-14)
    assert m.rmse(SIM, OBS) == pytest.approx(0.6582805886043833, abs=1e-15)
    assert m.bias(SIM, OBS) == pytest.approx(0.0333333, abs=1e-7)
    assert m.ubrmse(SIM, OBS) == pytest.approx(0.6574360974438673, abs=1e-15)
    assert m.nse(SIM, OBS) == pytest.approx(0.923333988598388, abs=1e-14)


def test_arange_cases():
    x = np.arange(10.0)
    y = x + 2
    assert m.bias(x, y) == -2
    assert m.bias(np.arange(20.0, 30.0), np.arange(10.0)) == 20
    assert m.rmse(x, y) == 2
    assert m.ubrmse(x, y) == 0
    y2 = y.copy()
    y2[-1] = 100
    assert round(m.rmse(x, y2), 6) == round(math.sqrt(831.7), 6)
    assert round(m.ubrmse(x, y2), 6) == 26.7
    # ubRMSE² = RMSE² − bias²
    assert m.ubrmse(x, y2) ** 2 == pytest.approx(m.rmse(x, y2) ** 2 - m.bias(x, y2) ** 2, rel=1e-12)


@pytest.mark.parametrize(
    ("r", "n", "alpha", "expected"),
    [
        (0.654, 34, 0.05, (0.406, 0.812)),
        (0.654, 34, 0.01, (0.309, 0.8468)),
        (0.824, 300, 0.05, (0.784, 0.857)),
        (0.824, 300, 0.01, (0.7697, 0.866)),
    ],
)
def test_fisher_z_ci(r, n, alpha, expected):
    lo, hi = m.pearson_r_ci(r, n, alpha)
    for got, want in zip((lo, hi), expected, strict=False):
        nd = len(str(want).split(".")[1])
        assert abs(got - want) <= 0.5 * 10**-nd + 1e-12


def test_pearson_equals_scipy_and_nan_pairs_dropped():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=500), rng.normal(size=500)
    y = 0.6 * x + 0.8 * y
    assert m.pearson_r(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-14)
    x[::7] = np.nan
    ok = ~np.isnan(x)
    assert m.rmse(x, y) == m.rmse(x[ok], y[ok])
    with pytest.raises(ValidationError):
        m.bias([1, 2], [1, 2, 3])


@pytest.mark.oracle
def test_hydroeval_oracle_on_random_series():
    he = pytest.importorskip("hydroeval")
    rng = np.random.default_rng(1)
    for _ in range(20):
        obs = rng.uniform(0.05, 0.45, 300)
        sim = 0.8 * obs + rng.normal(0.03, 0.04, 300)
        k, r, a, b = he.evaluator(he.kge, sim, obs)
        kp = he.evaluator(he.kgeprime, sim, obs)[0]
        assert m.kge(sim, obs) == pytest.approx(float(k[0]), rel=1e-12)
        assert m.kge_prime(sim, obs) == pytest.approx(float(kp[0]), rel=1e-12)
        assert m.nse(sim, obs) == pytest.approx(float(he.evaluator(he.nse, sim, obs)[0]), rel=1e-12)
        assert m.rmse(sim, obs) == pytest.approx(float(he.evaluator(he.rmse, sim, obs)[0]), rel=1e-12)


def test_moving_average_pytesmo_boxcar_vector():
    data = np.array([1, 2, 3, 4, -999999, 6, 7, 8, 9, np.nan], dtype=float)
    data[data == -999999] = np.nan
    got = m.moving_average(data, np.arange(10.0), 5)
    np.testing.assert_array_equal(got, [2, 2.5, 2.5, 3.75, np.nan, 6.25, 7.5, 7.5, 8, np.nan])


def test_anomaly_with_given_climatology_is_zero():
    times = np.arange("2000-01-01", "2001-01-01", dtype="datetime64[D]")
    assert times.size == 366
    data = np.arange(366.0)
    np.testing.assert_array_equal(m.calc_anomaly(data, times, climatology=np.arange(366.0)), 0.0)


def test_climatology_shape_gap_and_closed_year():
    times = np.arange("2001-01-01", "2004-12-31", dtype="datetime64[D]")
    feb = (times.astype("datetime64[M]").astype(int) % 12) == 1
    t, v = times[~feb], np.arange(times.size, dtype=float)[~feb] % 365
    clim = m.calc_climatology(v, t)
    assert clim.shape == (366,)
    clim1 = m.calc_climatology(
        np.arange(366.0),
        np.arange("2000-01-01", "2001-01-01", dtype="datetime64[D]"),
        moving_avg_orig=1,
        moving_avg_clim=1,
    )
    np.testing.assert_array_equal(clim1, np.arange(366.0))
    # March 1 is day 61 in every year: a non-leap year's March 1 lands where 2000's did
    t2 = np.array(["2001-03-01", "2000-03-01"], dtype="datetime64[D]")
    assert (m._doy366(t2) == 61).all()


def test_anomaly_r_removes_the_shared_seasonal_cycle():
    rng = np.random.default_rng(2)
    times = np.arange("2010-01-01", "2016-01-01", dtype="datetime64[D]")
    season = 0.1 * np.sin(2 * np.pi * np.arange(times.size) / 365.25)
    common = rng.normal(0, 0.02, times.size)
    obs = 0.25 + season + common
    pred = 0.27 + season + rng.normal(0, 0.02, times.size)  # seasonal skill only
    assert m.pearson_r(pred, obs) > 0.9
    assert abs(m.anomaly_r(pred, obs, times)) < 0.1
    pred2 = 0.27 + season + common + rng.normal(0, 0.005, times.size)
    assert m.anomaly_r(pred2, obs, times) > 0.9


def test_evaluate_returns_every_metric_by_its_one_name():
    rng = np.random.default_rng(3)
    times = np.arange("2015-01-01", "2017-01-01", dtype="datetime64[D]")
    obs = rng.uniform(0.1, 0.4, times.size)
    pred = obs + rng.normal(0.01, 0.02, times.size)
    pred[::10] = np.nan
    res = m.evaluate(pred, obs, times)
    assert list(res) == list(m.METRICS)
    assert list(m.evaluate(pred, obs)) == [k for k in m.METRICS if not k.startswith("anomaly_")]
    assert res["n"] == int((~np.isnan(pred)).sum())
    for name, f in (("bias", m.bias), ("RMSE", m.rmse), ("ubRMSE", m.ubrmse), ("NSE", m.nse), ("KGE", m.kge)):
        assert res[name] == f(pred, obs), name
    assert res["anomaly_R"] == m.anomaly_r(pred, obs, times)
    assert res["anomaly_R_35d"] == m.anomaly_r(pred, obs, times, kind="moving")
    assert res["R_ci_lower"] < res["R"] < res["R_ci_upper"]
    few = m.evaluate(pred[1:6], obs[1:6])
    assert few["n"] == 5 and math.isnan(few["R"]) and set(few) == set(m.METRICS) - {"anomaly_R", "anomaly_R_35d"}


def test_earlier_metric_names_still_read_with_a_warning():
    res = m.evaluate([0.1, 0.2, 0.3, 0.35], [0.12, 0.18, 0.33, 0.3], min_obs=3)
    for old, new in (("n_obs", "n"), ("BIAS", "bias"), ("RMSD", "RMSE"), ("urmsd", "ubRMSE")):
        with pytest.warns(FutureWarning, match=f"'{old}' is now called '{new}'"):
            assert res[old] == res[new]
        assert m.current_name(old) == new
    with pytest.raises(KeyError, match="RMSDX"):
        res["RMSDX"]
    assert set(m.PYTESMO_NAMES) <= set(m.METRICS)
