"""The expected error as a function of the dissimilarity index (CAST's DItoErrormetric)."""

from __future__ import annotations

import numpy as np
import pytest

from smengine import metrics
from smengine.errors import ValidationError
from smengine.evaluate import di_error_model


def _rows(n: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    di = rng.gamma(2.0, 0.1, n)
    obs = 0.3 + 0.05 * rng.standard_normal(n)
    pred = obs + (0.01 + 0.08 * di) * rng.standard_normal(n)  # the error SD grows with the DI
    return pred, obs, di


def test_bins_are_the_metric_of_equal_count_di_bins_by_hand() -> None:
    pred, obs, di = _rows()
    pred[5] = np.nan  # left out
    m = di_error_model(pred, obs, di, n_bins=8, min_per_bin=50)
    ok = np.isfinite(pred)
    order = np.argsort(di[ok], kind="stable")
    p, o, d = pred[ok][order], obs[ok][order], di[ok][order]
    edges = np.linspace(0, ok.sum(), 9).round().astype(int)
    for (_, row), a, b in zip(m.bins.iterrows(), edges[:-1], edges[1:], strict=True):
        assert row["n"] == b - a and row["di_low"] == d[a] and row["di_high"] == d[b - 1]
        assert row["value"] == pytest.approx(metrics.rmse(p[a:b], o[a:b]), rel=1e-9)
    fitted = m.bins["fitted"].to_numpy()
    assert (np.diff(fitted) >= 0).all()  # monotone: error grows with the DI
    # the fit follows the truth of the construction: RMSE ~ 0.01 + 0.08 DI
    mid = m.bins["di_mean"].to_numpy()
    want = [np.sqrt(np.mean((0.01 + 0.08 * d[a:b]) ** 2)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    np.testing.assert_allclose(fitted, want, rtol=0.15)  # 370 rows a bin: the RMSE within ~10 %
    assert m.predict([mid[0]])[0] == pytest.approx(fitted[0])
    assert m.predict([mid[-1] * 10])[0] == pytest.approx(fitted[-1])  # held constant beyond: a floor
    assert np.isnan(m.predict([np.nan])[0])
    assert fitted[-1] > 2 * fitted[0]
    assert m.predict([0.5 * (mid[2] + mid[3])])[0] == pytest.approx(0.5 * (fitted[2] + fitted[3]))


def test_isotonic_pools_a_non_monotone_bin_and_skill_decreases() -> None:
    pred, obs, di = _rows(seed=1)
    m = di_error_model(pred, obs, di, metric="R", n_bins=6)
    assert (np.diff(m.bins["fitted"].to_numpy()) <= 0).all()  # skill falls with the DI
    # a bin made worse than its right neighbour is pooled with it
    order = np.argsort(di)
    pred2 = pred.copy()
    first = order[: len(order) // 6]
    pred2[first] = obs[first] + 0.2 * np.random.default_rng(2).standard_normal(first.size)
    m2 = di_error_model(pred2, obs, di, n_bins=6)
    f = m2.bins["fitted"].to_numpy()
    assert m2.bins["value"].iloc[0] > m2.bins["value"].iloc[1] and f[0] == pytest.approx(f[1])


def test_threshold_keeps_the_aoa_rows_and_errors() -> None:
    pred, obs, di = _rows()
    m = di_error_model(pred, obs, di, threshold=0.3)
    assert m.di_max <= 0.3 and m.bins["n"].sum() == int((di <= 0.3).sum())
    with pytest.raises(ValidationError, match="2 bins"):
        di_error_model(pred[:60], obs[:60], di[:60])
    with pytest.raises(ValidationError, match="one shape"):
        di_error_model(pred, obs, di[:10])
    d = m.to_dict()
    assert d["metric"] == "RMSE" and len(d["bins"]) == len(m.bins)
