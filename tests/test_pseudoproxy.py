"""smengine.pseudoproxy: dissimilarity index / area of applicability against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smengine.errors import ConfigError, ValidationError
from smengine.metrics import evaluate
from smengine.pseudoproxy import aoa, pixel_scores, skill_by_bin


def _brute(T, X, w, folds):
    mu, sd = T.mean(0), T.std(0, ddof=1)
    w = w / w.max()
    Zt, Zx = (T - mu) / sd * w, (X - mu) / sd * w
    D = np.sqrt(((Zt[:, None] - Zt[None]) ** 2).sum(-1))
    dbar = D[~np.eye(len(T), dtype=bool)].mean()
    same = folds[:, None] == folds[None]
    train_di = np.where(same, np.inf, D).min(1) / dbar
    q1, q3 = np.percentile(train_di, [25, 75])
    thr = train_di[train_di <= q3 + 1.5 * (q3 - q1)].max()
    di = np.sqrt(((Zx[:, None] - Zt[None]) ** 2).sum(-1)).min(1) / dbar
    return di, train_di, thr, dbar


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aoa_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    T = rng.normal(size=(300, 5)) * [1, 2, 0.5, 3, 1] + [0, 1, 2, 3, 4]
    X = rng.normal(size=(200, 5)) * 2.5 + [0, 1, 2, 3, 4]
    w = rng.random(5) + 0.1
    folds = rng.integers(0, 7, 300)
    res = aoa(T, X, weights=w, folds=folds)
    di, train_di, thr, dbar = _brute(T, X, w, folds)
    np.testing.assert_allclose(res.di, di, rtol=1e-10)
    np.testing.assert_allclose(res.train_di, train_di, rtol=1e-10)
    assert res.threshold == pytest.approx(thr, rel=1e-10) and res.mean_distance == pytest.approx(dbar, rel=1e-10)
    np.testing.assert_array_equal(res.inside, di <= thr)
    assert 0 < res.inside.mean() < 1  # the wide new cloud is partly outside


def test_aoa_properties():
    rng = np.random.default_rng(5)
    T = rng.normal(size=(100, 3))
    X = np.vstack([T[:3], [[50.0, 0, 0]], [[np.nan, 0, 0]], [[0, 0, 1e6]]])
    res = aoa(T, X, weights=[1.0, 1.0, 0.0])  # third predictor carries no weight
    assert (res.di[:3] == 0).all() and res.inside[:3].all()
    assert not res.inside[3] and res.di[3] > 10
    assert np.isnan(res.di[4]) and not res.inside[4]
    assert res.di[5] == pytest.approx(aoa(T, [[0.0, 0.0, 0.0]], weights=[1.0, 1.0, 0.0]).di[0], rel=1e-12)
    assert res.inside[5], "a zero-weight predictor must not move a row out of the AOA"
    with pytest.raises(ValidationError, match="same number of columns"):
        aoa(T, X[:, :2])
    with pytest.raises(ValidationError, match="at least 2 folds"):
        aoa(T, X, folds=np.zeros(100))
    with pytest.raises(ConfigError, match="non-negative"):
        aoa(T, X, weights=[1.0, -1.0, 0.0])


def test_pixel_scores_and_bins():
    rng = np.random.default_rng(0)
    ref = rng.random((60, 3, 4))
    pred = ref + 0.05 + 0.02 * rng.standard_normal(ref.shape)
    s = pixel_scores(pred, ref, None)
    assert len(s) == 12
    m = evaluate(pred[:, 1, 2], ref[:, 1, 2])
    row = s[(s.row == 1) & (s.col == 2)].iloc[0]
    assert row.R == m["R"] and row.ubRMSE == m["urmsd"] and row.bias == m["BIAS"] and row.KGE == m["KGE"]
    s["dist"] = np.arange(12.0)
    b = skill_by_bin(s, "dist", [-1, 5.5, 20])
    assert list(b["n"]) == [6, 6]
    assert b["bias_median"].iloc[0] == pytest.approx(np.median(s.bias[:6]))
    with pytest.raises(ValidationError, match="lack column 'nope'"):
        skill_by_bin(s, "nope", [0, 1])
    with pytest.raises(ValidationError, match="equal"):
        pixel_scores(pred, ref[:, :2], None)
    assert isinstance(b, pd.DataFrame)
