"""pytesmo as a test-only oracle on random series (metrics, exponential filter, anomalies)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smengine import metrics as m
from smengine.filters import exp_filter

pm = pytest.importorskip("pytesmo.metrics")
pf = pytest.importorskip("pytesmo.time_series.filters")
pa = pytest.importorskip("pytesmo.time_series.anomaly")

pytestmark = pytest.mark.oracle


@pytest.mark.parametrize("seed", range(10))
def test_metrics_equal_pytesmo(seed: int) -> None:
    rng = np.random.default_rng(seed)
    obs = rng.uniform(0.05, 0.45, 200)
    pred = 0.7 * obs + rng.normal(0.05, 0.03, 200)
    assert m.pearson_r(pred, obs) == pytest.approx(pm.pearsonr(pred, obs)[0], rel=1e-12)
    assert m.bias(pred, obs) == pytest.approx(pm.bias(pred, obs), rel=1e-12)  # mean(pred) − mean(obs)
    assert m.rmse(pred, obs) == pytest.approx(pm.rmsd(pred, obs), rel=1e-12)
    assert m.ubrmse(pred, obs) == pytest.approx(pm.ubrmsd(pred, obs), rel=1e-12)
    assert m.nse(pred, obs) == pytest.approx(pm.nash_sutcliffe(obs, pred), rel=1e-12)  # pytesmo: (obs, sim)
    r = m.pearson_r(pred, obs)
    lo, hi = m.pearson_r_ci(r, obs.size)
    plo, phi = pm.pearson_conf(r, obs.size)
    assert (lo, hi) == pytest.approx((plo, phi), rel=1e-10)


def test_evaluate_by_pytesmo_names_equals_pytesmo() -> None:
    """:data:`PYTESMO_NAMES` translates: our result under each name equals pytesmo's function of that name."""
    rng = np.random.default_rng(11)
    obs = rng.uniform(0.05, 0.45, 300)
    pred = 0.8 * obs + rng.normal(0.02, 0.03, 300)
    ours = m.evaluate(pred, obs)
    theirs = {
        "n_obs": obs.size,
        "R": pm.pearsonr(pred, obs)[0],
        "p_R": pm.pearsonr(pred, obs)[1],
        "BIAS": pm.bias(pred, obs),
        "RMSD": pm.rmsd(pred, obs),
        "urmsd": pm.ubrmsd(pred, obs),
    }
    assert set(theirs) == set(m.PYTESMO_NAMES.values())
    for name, pname in m.PYTESMO_NAMES.items():
        assert ours[name] == pytest.approx(theirs[pname], rel=1e-10), name


@pytest.mark.parametrize("seed", range(5))
def test_exp_filter_equals_pytesmo(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    jd = np.cumsum(rng.uniform(0.3, 3.0, n)) + 2451545.0  # irregular Julian dates
    sm = rng.uniform(5, 60, n)
    sm[rng.random(n) < 0.2] = np.nan
    for T in (1.0, 7.0, 30.0):
        want = pf.exp_filter(np.where(np.isnan(sm), -999999.0, sm), jd, ctime=T, nan=-999999.0)
        got = exp_filter(sm, jd, T)
        # pytesmo 0.18 keeps the weight exp(-Δt/T) in a C float (filters.pyx: 'cdef float ef'), ~1e-7 relative; ours is
        # float64 and equals Wagner's weighted sum to 1e-12 (test_filters)
        np.testing.assert_allclose(got, np.where(np.isnan(sm), np.nan, want), rtol=1e-6, equal_nan=True)


def test_climatology_and_anomaly_equal_pytesmo() -> None:
    rng = np.random.default_rng(7)
    t = pd.date_range("2007-01-01", "2012-12-31", freq="D")
    doy = t.day_of_year.to_numpy()
    v = 0.25 + 0.08 * np.sin(2 * np.pi * doy / 365.25) + rng.normal(0, 0.02, t.size)
    v[rng.random(t.size) < 0.15] = np.nan
    s = pd.Series(v, index=t).dropna()
    clim = pa.calc_climatology(s, moving_avg_orig=5, moving_avg_clim=35)
    ours = m.calc_climatology(s.to_numpy(), s.index.to_numpy().astype("datetime64[D]"), 5, 35)
    np.testing.assert_allclose(ours, clim.to_numpy(), rtol=1e-9)
    anom = pa.calc_anomaly(s, window_size=35)
    ours_a = m.calc_anomaly(s.to_numpy(), s.index.to_numpy().astype("datetime64[D]"), window_size=35)
    np.testing.assert_allclose(ours_a, anom.to_numpy(), rtol=1e-9, atol=1e-12)
