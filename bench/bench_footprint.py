"""footprint_average (compiled, nogil, OpenMP) vs a plain NumPy reference.

Issue #2: a 2000×2000 float32 raster (5 % NaN) and 10 000 random centres; the kernel is
the default 99.9 %-signal footprint at h = 5 g m⁻³, θ = 0.1. The headline case uses 10 m
cells (fine covariates such as Sentinel-1/2, kernel 195×195); 30 m and 250 m cells show
how the ratio moves as the kernel shrinks and per-call overhead starts to dominate.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SMOKE

from smengine import footprint as fp

SIZE = 200 if SMOKE else 2000
N_CENTRES = 200 if SMOKE else 10_000
CELLS = [10.0, 30.0, 250.0]


def numpy_reference(raster, rows, cols, kernel, min_valid_fraction=0.5):
    """The plain NumPy way: per centre, cut the NaN-padded window and renormalise."""
    kh, kw = kernel.shape
    hy, hx = kh // 2, kw // 2
    padded = np.pad(raster, ((hy, hy), (hx, hx)), constant_values=np.nan)
    total = kernel.sum()
    out = np.full(len(rows), np.nan)
    for c, (r, col) in enumerate(zip(rows, cols, strict=False)):
        win = padded[r : r + kh, col : col + kw]
        ok = ~np.isnan(win)
        ws = kernel[ok].sum()
        if ws > 0 and ws >= min_valid_fraction * total:
            out[c] = np.dot(kernel[ok], win[ok]) / ws
    return out


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    raster = rng.normal(0.25, 0.05, (SIZE, SIZE)).astype(np.float32)
    raster[rng.random(raster.shape) < 0.05] = np.nan
    rows = rng.integers(0, SIZE, N_CENTRES)
    cols = rng.integers(0, SIZE, N_CENTRES)
    return raster, rows, cols


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("impl", ["numpy-reference", "ours-1-thread", "ours-2-threads"])
def bench_footprint_average(record, data, cell, impl):
    raster, rows, cols = data
    kernel = fp.footprint_kernel(cell, 5.0, 0.1)
    group = f"footprint_average {SIZE}x{SIZE}, {N_CENTRES} centres, {cell:g} m cells, kernel {kernel.shape[0]}^2"
    if impl == "numpy-reference":
        out = record(group, impl, numpy_reference, raster, rows, cols, kernel, incumbent=True, rounds=3)
    else:
        n = 1 if impl == "ours-1-thread" else 2
        out = record(group, impl, fp.footprint_average, raster, rows, cols, kernel, n_threads=n, rounds=15)
    # whichever implementation ran, it must agree with the other (cheap spot check)
    sub = slice(0, 50)
    expected = numpy_reference(raster, rows[sub], cols[sub], kernel)
    np.testing.assert_allclose(out[sub], expected, rtol=1e-6, atol=1e-7, equal_nan=True)
