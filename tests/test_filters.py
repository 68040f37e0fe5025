"""Exponential filter against the pytesmo and pyswi vectors (SCIENCE.md §2.3) and Wagner's sum."""

from __future__ import annotations

import numpy as np
import pytest

from smengine import filters
from smengine.errors import ConfigError, ValidationError
from smengine.filters import exp_filter


def _assert_4dp(got, expected):
    """pyswi asserts 4 decimals: agree to half a unit in the 4th decimal."""
    np.testing.assert_array_less(np.abs(np.asarray(got) - np.asarray(expected)), 0.5e-4 + 1e-12)


def test_pytesmo_vector():
    # pytesmo tests/test_time_series/test_filters.py::test_exp_filter
    jd = np.arange(10, dtype=float)
    data = np.array([0.5, 2, 3, 4, -999999.0, 6, 7, 8, 9, np.nan])
    expected = [0.5, 1.324751, 1.997798, 2.656881, np.nan, 3.757916, 4.687961, 5.547327, 6.378209, np.nan]
    got = exp_filter(data, jd, 5, nan=-999999.0)
    np.testing.assert_allclose(got, expected, rtol=1e-6, equal_nan=True)


def test_pytesmo_first_nan():
    jd = np.arange(11, dtype=float)
    data = np.array([np.nan, 0.5, 2, 3, 4, -999999.0, 6, 7, 8, 9, np.nan])
    expected = [np.nan, 0.5, 1.324751, 1.997798, 2.656881, np.nan, 3.757916, 4.687961, 5.547327, 6.378209, np.nan]
    np.testing.assert_allclose(exp_filter(data, jd, 5, nan=-999999.0), expected, rtol=1e-6, equal_nan=True)


PYSWI = {
    5: [10, 15.49834, 21.32452, 27.472094, 33.93228, 40.69421, 47.7452, 55.07107, 62.65647],
    50: [10, 15.049998, 20.133324, 25.249971, 30.399931, 35.58319, 40.799732, 46.049545, 51.332603],
    100: [10, 15.025, 20.066666, 25.124996, 30.199991, 35.29165, 40.399967, 45.524944, 50.666576],
}


def test_pyswi_vectors_several_T_at_once_with_datetimes():
    days = np.arange("2007-01-01", "2007-01-10", dtype="datetime64[D]")
    sm = np.arange(10.0, 100.0, 10.0)
    got = exp_filter(sm, days, [5, 50, 100])
    assert got.shape == (3, 9)
    for k, T in enumerate((5, 50, 100)):
        _assert_4dp(got[k], PYSWI[T])


def test_pyswi_nan_values():
    sm = np.array([10, 20, 30, 40, 50, 60, 999, 80, 10], dtype=float)
    days = np.arange(9, dtype=float)
    got = exp_filter(sm, days, [5, 50, 100], nan=999)
    _assert_4dp(got[:, 7:], [[51.660824, 41.072067], [42.430466, 38.023155], [41.928066, 37.76523]])
    assert np.isnan(got[:, 6]).all()


def _wagner(values, times, T):
    """Wagner (1999): weighted mean of all past valid observations."""
    out = np.full(values.shape, np.nan)
    ok = ~np.isnan(values)
    for n in range(values.size):
        if not ok[n]:
            continue
        past = ok & (times <= times[n])
        w = np.exp(-(times[n] - times[past]) / T)
        out[n] = (w * values[past]).sum() / w.sum()
    return out


def test_irregular_times_equal_wagners_sum():
    rng = np.random.default_rng(3)
    times = np.cumsum(rng.uniform(0.1, 4.0, 200))
    values = rng.uniform(0.05, 0.45, 200)
    values[rng.random(200) < 0.3] = np.nan
    for T in (1.0, 7.5, 40.0):
        np.testing.assert_allclose(exp_filter(values, times, T), _wagner(values, times, T), rtol=1e-12, equal_nan=True)


def test_regular_gain_tends_to_one_minus_exp():
    out, state = exp_filter(np.ones(500), np.arange(500.0), 10.0, return_state=True)
    assert state.gain[0] == pytest.approx(1 - np.exp(-1 / 10.0), rel=1e-12)


def test_grids_equal_per_pixel_loops_and_threads_agree():
    rng = np.random.default_rng(4)
    cube = rng.uniform(0, 0.5, (60, 7, 9))
    cube[rng.random(cube.shape) < 0.4] = np.nan
    times = np.cumsum(rng.uniform(0.5, 2.0, 60))
    got = exp_filter(cube, times, [3.0, 20.0], n_threads=2)
    assert got.shape == (2, 60, 7, 9)
    for k, T in enumerate((3.0, 20.0)):
        for y in range(7):
            for x in range(9):
                np.testing.assert_array_equal(got[k, :, y, x], exp_filter(cube[:, y, x], times, T))
    assert got.tobytes() == exp_filter(cube, times, [3.0, 20.0], n_threads=1).tobytes()


def test_state_continues_a_run_exactly():
    rng = np.random.default_rng(5)
    cube = rng.uniform(0, 0.5, (40, 3, 4))
    cube[rng.random(cube.shape) < 0.3] = np.nan
    times = np.arange(40.0)
    whole = exp_filter(cube, times, [5.0, 30.0])
    a, state = exp_filter(cube[:25], times[:25], [5.0, 30.0], return_state=True)
    b = exp_filter(cube[25:], times[25:], [5.0, 30.0], state=state)
    np.testing.assert_array_equal(np.concatenate([a, b], axis=1), whole)
    with pytest.raises(ValidationError, match="follow"):
        exp_filter(cube[:5], times[:5], [5.0, 30.0], state=state)


def test_carry_repeats_the_last_swi():
    got = exp_filter([np.nan, 1.0, np.nan, np.nan, 3.0], np.arange(5.0), 2.0, carry=True)
    assert np.isnan(got[0]) and got[1] == got[2] == got[3] == 1.0 and got[4] > 1.0


@pytest.mark.parametrize("gap", [0.0, 1.0, 3.0, 7.5])
def test_carry_stops_after_the_maximum_gap(gap: float) -> None:
    """carry with max_gap = the carried series where the last valid value is at most max_gap days old, else NaN;
    the same on a grid, with 1 and 2 threads, uniform (weight table) or irregular times, and across a saved state."""
    rng = np.random.default_rng(3)
    n, m = 80, 37
    v = rng.random((n, m))
    v[rng.random((n, m)) < 0.6] = np.nan
    v[40:60, :5] = np.nan  # an outage longer than every gap
    for times in (np.arange(n, dtype=float), np.cumsum(rng.uniform(0.5, 2.0, n))):
        free = exp_filter(v, times, [4.0, 20.0], carry=True)
        want = free.copy()
        for j in range(m):
            last = -np.inf
            for i in range(n):
                if np.isfinite(v[i, j]):
                    last = times[i]
                elif not times[i] - last <= gap:
                    want[:, i, j] = np.nan
        for threads in (1, 2):
            got = exp_filter(v, times, [4.0, 20.0], carry=True, max_gap=gap, n_threads=threads)
            np.testing.assert_array_equal(got, want)
        a, st = exp_filter(v[:33], times[:33], [4.0, 20.0], carry=True, max_gap=gap, return_state=True)
        b = exp_filter(v[33:], times[33:], [4.0, 20.0], carry=True, max_gap=gap, state=st)
        np.testing.assert_array_equal(np.concatenate([a, b], axis=1), want)
        assert np.isnan(want[:, 50, :5]).all() and np.isnan(want).sum() > np.isnan(free).sum()
    # without carry the gap changes nothing
    np.testing.assert_array_equal(
        exp_filter(v, np.arange(float(n)), 5.0, max_gap=0.0), exp_filter(v, np.arange(float(n)), 5.0)
    )
    with pytest.raises(ConfigError, match="max_gap"):
        exp_filter(v, np.arange(float(n)), 5.0, carry=True, max_gap=-1)


def test_bad_input():
    with pytest.raises(ValidationError, match="strictly increasing"):
        exp_filter([1, 2, 3], [0, 2, 1], 5)
    with pytest.raises(ValidationError, match="one entry per row"):
        exp_filter([1, 2, 3], [0, 1], 5)
    with pytest.raises(ConfigError, match="T should be positive"):
        exp_filter([1, 2, 3], [0, 1, 2], 0)


def test_weight_table_path_is_bit_identical_to_exp_path() -> None:
    """Uniform integer days use a tabulated exp(-d/T); the bits must equal the exp() path."""
    from smengine._ext import _filters

    rng = np.random.default_rng(4)
    v = rng.random((200, 300))
    v[rng.random(v.shape) < 0.5] = np.nan
    t = np.arange(200, dtype=np.float64) + 7300.0
    Ts = np.array([1.0, 5.0, 20.0, 365.0])

    def run(step: float) -> np.ndarray:
        out = np.empty((Ts.size,) + v.shape)
        z = [np.zeros((Ts.size, v.shape[1])) for _ in range(3)]
        _filters.exp_filter(v, t, Ts, False, np.inf, out, *z, step, 2)
        return out

    a, b = run(1.0), run(0.0)
    assert np.array_equal(a, b, equal_nan=True) and np.isfinite(a).sum() > 0
    assert filters._uniform_step(t, True) == 1.0 and filters._uniform_step(t + 0.5, True) == 0.0


def test_float32_grid_gives_float32_of_the_float64_result() -> None:
    rng = np.random.default_rng(5)
    v = rng.random((50, 7, 9)).astype(np.float32)
    v[rng.random(v.shape) < 0.3] = np.nan
    t = np.arange(50.0)
    got = exp_filter(v, t, (3.0, 30.0))
    want = exp_filter(v.astype(np.float64), t, (3.0, 30.0))
    assert got.dtype == np.float32 and want.dtype == np.float64
    np.testing.assert_array_equal(got, want.astype(np.float32))
