"""exp_filter (compiled, nogil, OpenMP) vs a plain NumPy reference.

Issue: the gridded exponential filter on 365 days × 1000 × 1000 pixels (float32 surface
soil moisture with satellite-like gaps: diagonal swath gaps plus random dropouts, ~35 %
NaN) against a NumPy loop over days vectorised over pixels, ratio printed. The headline
case is one T (20 days). A second case filters three T (5, 20, 50 days) in one call on a
third of the rows, so that it does the same number of (pixel, T, day) updates and keeps
the float64 output (n_T × 365 × 1000 × 1000 × 8 B) under 3 GiB.

Both implementations return only a small window of their output: pytest-benchmark keeps
the previous round's result alive while the next round runs, and two full float64 outputs
would double the peak RSS. The window is checked against both implementations run on
the same window (pixels are independent), so the comparison is of equal results.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SMOKE

from smengine.filters import exp_filter

N_DAYS, NY, NX = (20, 50, 50) if SMOKE else (365, 1000, 1000)
WIN = 50  # checked window, pixels per side
T_CASES = {"T20": 20.0, "T5-20-50": (5.0, 20.0, 50.0)}


def numpy_reference(values, times, T):
    """The plain NumPy way: Albergel 2008 recursion, loop over days, vectorised over pixels.

    Missing observations are skipped (K is not reset; the gain uses the time of the last
    valid observation), output NaN on days without one, as ``exp_filter(carry=False)``.
    """
    Ts = np.atleast_1d(np.asarray(T, dtype=np.float64))
    shape = (Ts.size,) + values.shape[1:]
    out = np.empty((Ts.size,) + values.shape)
    gain = np.zeros(shape)  # 0: no valid observation yet
    swi = np.zeros(shape)
    last = np.zeros(shape)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        for i, t in enumerate(np.asarray(times, dtype=np.float64)):
            v = values[i].astype(np.float64)
            ok = ~np.isnan(v)
            for k, Tk in enumerate(Ts):
                g = gain[k]
                K = np.where(g > 0, g / (g + np.exp((last[k] - t) / Tk)), 1.0)
                np.copyto(swi[k], swi[k] + K * (v - swi[k]), where=ok)
                np.copyto(g, K, where=ok)
                np.copyto(last[k], t, where=ok)
                out[k, i] = np.where(ok, swi[k], np.nan)
    return out if np.ndim(T) else out[0]


def _ours_window(values, times, T, n_threads):
    return exp_filter(values, times, T, n_threads=n_threads)[..., :WIN, :WIN].copy()


def _reference_window(values, times, T):
    return numpy_reference(values, times, T)[..., :WIN, :WIN].copy()


@pytest.fixture(scope="module")
def data():
    """Daily float32 SSM (m³/m³) with swath gaps (~30 %) and random dropouts (~8 %)."""
    rng = np.random.default_rng(2008)
    values = np.empty((N_DAYS, NY, NX), np.float32)
    yy, xx = np.mgrid[:NY, :NX]
    diag = (xx + 0.3 * yy).astype(np.float32)
    period = max(NX // 2, 10)
    for d in range(N_DAYS):
        day = values[d]
        day[:] = rng.standard_normal((NY, NX), dtype=np.float32)
        day *= 0.05
        day += 0.25 + 0.1 * np.sin(2 * np.pi * d / 365)
        np.clip(day, 0.02, 0.5, out=day)
        gap = (diag + rng.uniform(0, period)) % period < 0.3 * period
        gap |= rng.random((NY, NX), dtype=np.float32) < 0.08
        day[gap] = np.nan
    nan_pct = 100 * sum(np.isnan(values[d]).sum() for d in range(N_DAYS)) / values.size
    return values, np.arange(N_DAYS, dtype=np.float64), nan_pct


@pytest.mark.parametrize("case", list(T_CASES))
@pytest.mark.parametrize("impl", ["numpy-reference", "ours-1-thread", "ours-2-threads"])
def bench_exp_filter(record, data, case, impl):
    values, times, nan_pct = data
    T = T_CASES[case]
    if np.ndim(T):  # same (pixel, T, day) update count as the one-T case
        values = values[:, : max(NY // len(T), 1)]
    nd, ny, nx = values.shape
    group = (
        f"exp_filter {nd} days x {ny}x{nx} float32 ({nan_pct:.0f}% NaN), "
        f"T={'/'.join(f'{t:g}' for t in np.atleast_1d(T))} d"
    )
    if impl == "numpy-reference":
        args = (_reference_window, values, times, T)
        out = record(group, impl, *args, incumbent=True, rounds=3)
    else:
        n = 1 if impl == "ours-1-thread" else 2
        out = record(group, impl, _ours_window, values, times, T, n_threads=n, rounds=5)
    # whichever ran, its window must equal both implementations run on that window
    window = values[:, :WIN, :WIN]
    expected = numpy_reference(window, times, T)
    np.testing.assert_allclose(exp_filter(window, times, T), expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-9)
    assert np.isnan(out).any() and not np.isnan(out).all()
