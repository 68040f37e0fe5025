"""Is an uncertainty layer calibrated? Coverage, PIT and the calibration factor of a spread
(:mod:`smengine.evaluate`), checked on synthetic draws with truth ~ N(pred, spread²)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from smengine.errors import ValidationError
from smengine.evaluate import pit_histogram, pit_values, plot_pit_histogram, spread_calibration, spread_coverage

N = 40_000
NOMINAL = {1: 0.6827, 2: 0.9545}


def _draws(seed: int = 7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0.05, 0.45, N)
    spread = rng.uniform(0.005, 0.04, N)  # heteroscedastic, m3 m-3
    truth = pred + spread * rng.standard_normal(N)
    return pred, spread, truth


def _tol(p: float, n: int) -> float:
    """3 binomial standard deviations of a fraction p estimated from n draws."""
    return 3.0 * np.sqrt(p * (1.0 - p) / n)


def test_calibrated_spread_covers_the_gaussian_fractions() -> None:
    pred, spread, truth = _draws()
    c = spread_coverage(pred, spread, truth)
    assert c["n"] == N and c["n_no_spread"] == 0
    for k, p in NOMINAL.items():
        assert c[f"nominal_{k}"] == pytest.approx(p, abs=1e-4)
        assert abs(c[f"coverage_{k}"] - p) < _tol(p, N)


def test_calibrated_spread_has_flat_pit_and_unit_factor() -> None:
    pred, spread, truth = _draws()
    h = pit_histogram(pit_values(pred, spread, truth), bins=10)
    assert h.shape == (10,) and h.sum() == pytest.approx(1.0)
    # every bin within 3.5 binomial SDs of 1/10 (3 SD widened for the 10 bins tested at once)
    np.testing.assert_array_less(np.abs(h - 0.1), 3.5 / 3.0 * _tol(0.1, N))
    # c² = mean z² of N draws of z ~ N(0, 1): SD(c) ≈ 1/sqrt(2N)
    assert spread_calibration(pred, spread, truth) == pytest.approx(1.0, abs=3.0 / np.sqrt(2 * N))


def test_halved_spread_is_detected() -> None:
    pred, spread, truth = _draws()
    c = spread_coverage(pred, spread / 2, truth)
    # |z| <= k with the spread halved is |Z| <= k/2 for a standard normal Z
    for k in (1, 2):
        p = 2 * stats.norm.cdf(k / 2) - 1
        assert abs(c[f"coverage_{k}"] - p) < _tol(p, N)
        assert c[f"coverage_{k}"] < NOMINAL[k] - 0.2
    assert spread_calibration(pred, spread / 2, truth) == pytest.approx(2.0, abs=6.0 / np.sqrt(2 * N))
    h = pit_histogram(pit_values(pred, spread / 2, truth), bins=10)
    assert h[0] > 0.15 and h[-1] > 0.15 and h[4] < 0.05  # U shape: overconfident
    # the calibration factor repairs it
    fixed = spread_calibration(pred, spread / 2, truth) * spread / 2
    assert abs(spread_coverage(pred, fixed, truth)["coverage_1"] - NOMINAL[1]) < _tol(NOMINAL[1], N)


def test_pit_matches_scipy_norm() -> None:
    pred, spread, truth = _draws(3)
    np.testing.assert_allclose(
        pit_values(pred, spread, truth), stats.norm.cdf(truth, loc=pred, scale=spread), atol=1e-12
    )


def test_nans_and_zero_spread_are_ignored() -> None:
    pred, spread, truth = _draws()
    ref_cov = spread_coverage(pred, spread, truth)
    ref_c = spread_calibration(pred, spread, truth)
    pred2 = np.concatenate([pred, [np.nan, 0.2, 0.2, 0.2, 0.2]])
    spread2 = np.concatenate([spread, [0.01, 0.01, np.nan, 0.0, 0.01]])
    truth2 = np.concatenate([truth, [0.2, np.nan, 0.2, 0.25, np.inf]])
    cov = spread_coverage(pred2, spread2, truth2)
    assert cov == {**ref_cov, "n_no_spread": 2}  # the NaN and the zero spread (with a finite truth)
    assert spread_calibration(pred2, spread2, truth2) == ref_c
    pit = pit_values(pred2, spread2, truth2)
    assert np.isfinite(pit).sum() == N and np.isnan(pit[N:]).all()
    np.testing.assert_array_equal(pit_histogram(pit), pit_histogram(pit[:N]))


def test_empty_and_bad_input() -> None:
    c = spread_coverage([np.nan], [0.01], [0.2])
    assert c["n"] == 0 and np.isnan(c["coverage_1"]) and np.isnan(c["coverage_2"])
    assert np.isnan(spread_calibration([np.nan], [0.01], [0.2]))
    assert np.isnan(pit_histogram([np.nan], bins=5)).all()
    assert list(spread_coverage([0.2], [0.01], [0.2], k=(1.5,))) == ["n", "n_no_spread", "coverage_1.5", "nominal_1.5"]
    with pytest.raises(ValidationError):
        spread_coverage([0.2, 0.3], [0.01, 0.01, 0.01], [0.2, 0.3])
    with pytest.raises(ValidationError):
        spread_coverage([0.2], [0.01], [0.2], k=(0,))
    with pytest.raises(ValidationError):
        pit_histogram([0.5, 1.5])
    with pytest.raises(ValidationError):
        pit_histogram([0.5], bins=0)


def test_pit_plot_is_a_png(tmp_path) -> None:
    pred, spread, truth = _draws()
    p = plot_pit_histogram(pit_histogram(pit_values(pred, spread, truth)), tmp_path / "pit.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
