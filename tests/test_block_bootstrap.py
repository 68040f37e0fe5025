"""Block-bootstrap confidence intervals of RMSE differences (the claims the demo's report makes)."""

from __future__ import annotations

import numpy as np
import pytest

from smengine.errors import ValidationError
from smengine.evaluate import rmse_difference_ci, space_time_blocks


def _rmse(e: np.ndarray) -> float:
    return float(np.sqrt(np.mean(e**2)))


def test_equals_resampling_the_blocks_by_hand() -> None:
    rng = np.random.default_rng(3)
    truth = rng.random((20, 6, 6))
    a = truth + 0.02 * rng.standard_normal(truth.shape)
    b = truth + 0.025 * rng.standard_normal(truth.shape)
    a[0, 0, 0] = np.nan  # left out of both
    blocks = space_time_blocks(truth.shape, pixels=3, days=10)
    got = rmse_difference_ci(a, b, truth, blocks, n_boot=50, seed=7)
    ok = np.isfinite(a)
    labels = np.unique(blocks[ok])
    draws = np.random.default_rng(7).integers(0, labels.size, size=(50, labels.size))
    diffs = []
    for d in draws:  # the slow reference: concatenate the drawn blocks' values
        idx = np.concatenate([np.flatnonzero(ok & (blocks == labels[j])) for j in d])
        ea, eb = (a.ravel() - truth.ravel())[idx], (b.ravel() - truth.ravel())[idx]
        diffs.append(_rmse(ea) - _rmse(eb))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    assert got["ci_low"] == pytest.approx(lo, rel=1e-10) and got["ci_high"] == pytest.approx(hi, rel=1e-10)
    assert got["difference"] == pytest.approx(_rmse((a - truth)[ok]) - _rmse((b - truth)[ok]), rel=1e-12)
    assert got["n"] == ok.sum() and got["n_blocks"] == labels.size == 8


def test_covers_the_true_difference_and_excludes_zero_only_when_it_should() -> None:
    rng = np.random.default_rng(11)
    truth = rng.random((60, 20, 20))
    a = truth + 0.010 * rng.standard_normal(truth.shape)
    b = truth + 0.020 * rng.standard_normal(truth.shape)
    blocks = space_time_blocks(truth.shape, 5, 15)
    r = rmse_difference_ci(a, b, truth, blocks, n_boot=400)
    assert r["ci_low"] <= -0.01 <= r["ci_high"] and r["ci_high"] < 0
    same = truth + 0.02 * rng.standard_normal(truth.shape)
    r0 = rmse_difference_ci(b, same, truth, blocks, n_boot=400)
    assert r0["ci_low"] < 0 < r0["ci_high"]  # no difference: the interval holds 0
    again = rmse_difference_ci(a, b, truth, blocks, n_boot=400)
    assert again == r  # seeded


def test_bad_input() -> None:
    x = np.zeros((2, 2, 2))
    with pytest.raises(ValidationError, match="one shape"):
        rmse_difference_ci(x, x, x, np.zeros((2, 2)))
    with pytest.raises(ValidationError, match="level"):
        rmse_difference_ci(x, x, x, np.zeros_like(x, dtype=int), level=1.5)
    nan = rmse_difference_ci(x * np.nan, x, x, np.zeros_like(x, dtype=int))
    assert nan["n"] == 0 and np.isnan(nan["difference"])
    with pytest.raises(ValidationError, match="block sizes"):
        space_time_blocks((2, 2, 2), pixels=0)
