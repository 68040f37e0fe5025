"""The compiled footprint_average kernel against a slow, obviously-correct NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smengine import footprint as fp
from smengine.errors import ConfigError, ValidationError
from smengine.testing import as_readonly_memmap


def reference_average(raster, rows, cols, kernel, min_valid_fraction=0.5):
    """Per-centre loop: pad with NaN, cut the window, renormalise by valid weight."""
    a = np.asarray(raster, dtype=np.float64)
    squeeze = a.ndim == 2
    a = a[None] if squeeze else a
    kh, kw = kernel.shape
    hy, hx = kh // 2, kw // 2
    padded = np.pad(a, ((0, 0), (hy, hy), (hx, hx)), constant_values=np.nan)
    total = kernel.sum()
    out = np.full((a.shape[0], len(rows)), np.nan)
    frac = np.zeros((a.shape[0], len(rows)))
    for b in range(a.shape[0]):
        for c, (r, col) in enumerate(zip(rows, cols, strict=False)):
            win = padded[b, r : r + kh, col : col + kw]
            ok = ~np.isnan(win)
            ws = kernel[ok].sum()
            frac[b, c] = ws / total
            if ws > 0 and ws / total >= min_valid_fraction:
                out[b, c] = (kernel[ok] * win[ok]).sum() / ws
    if squeeze:
        return out[0], frac[0]
    return out, frac


def _raster(rng, shape, nan_fraction=0.1):
    a = rng.normal(0.25, 0.08, size=shape).astype(np.float32)
    a[rng.random(shape) < nan_fraction] = np.nan
    return a


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(20261124)


def _centres(rng, ny, nx, n):
    rows = rng.integers(0, ny, n)
    cols = rng.integers(0, nx, n)
    # corners and edges on purpose
    rows[:4] = [0, 0, ny - 1, ny - 1]
    cols[:4] = [0, nx - 1, 0, nx - 1]
    return rows, cols


@pytest.mark.parametrize("n_threads", [1, 2])
def test_matches_reference_with_nans_and_edges(rng, n_threads):
    a = _raster(rng, (60, 75), 0.15)
    k = fp.footprint_kernel(10.0, 5.0, 0.15, max_radius=120.0)
    rows, cols = _centres(rng, 60, 75, 300)
    got, frac = fp.footprint_average(a, rows, cols, k, n_threads=n_threads, return_valid_fraction=True)
    ref, ref_frac = reference_average(a, rows, cols, k)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(frac, ref_frac, rtol=1e-12, atol=1e-14)
    assert np.isnan(got).any() and np.isfinite(got).any()  # the threshold bites somewhere


def test_multiband_and_asymmetric_kernel(rng):
    a = _raster(rng, (4, 33, 41), 0.3)
    k = rng.random((7, 11))
    k[0, :3] = 0  # zero weights at a row start: extents must skip them
    k[3, :] = 0  # an all-zero row
    rows, cols = _centres(rng, 33, 41, 120)
    got, frac = fp.footprint_average(a, rows, cols, k, min_valid_fraction=0.2, return_valid_fraction=True)
    ref, ref_frac = reference_average(a, rows, cols, k, 0.2)
    assert got.shape == (4, 120)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7, equal_nan=True)
    np.testing.assert_allclose(frac, ref_frac, rtol=1e-12, atol=1e-14)


def test_threshold_edges_zero_and_one(rng):
    a = _raster(rng, (20, 20), 0.2)
    k = np.ones((5, 5))
    rows, cols = _centres(rng, 20, 20, 50)
    full = fp.footprint_average(a, rows, cols, k, min_valid_fraction=1.0)
    ref_full, _ = reference_average(a, rows, cols, k, 1.0)
    np.testing.assert_array_equal(np.isnan(full), np.isnan(ref_full))
    anyv = fp.footprint_average(a, rows, cols, k, min_valid_fraction=0.0)
    ref_any, _ = reference_average(a, rows, cols, k, 0.0)
    np.testing.assert_allclose(anyv, ref_any, rtol=1e-6, equal_nan=True)
    # a corner centre sees 9 of 25 cells: valid fraction <= 0.36
    _, frac = fp.footprint_average(np.ones((20, 20), np.float32), [0], [0], k, return_valid_fraction=True)
    assert frac[0] == pytest.approx(9 / 25)


def test_uniform_field_gives_field_value_everywhere():
    a = np.full((50, 50), 0.31, dtype=np.float32)
    k = fp.footprint_kernel(25.0, 10.0, 0.31)
    rows, cols = np.meshgrid(np.arange(50), np.arange(50), indexing="ij")
    got = fp.footprint_average(a, rows.ravel(), cols.ravel(), k, min_valid_fraction=0.0)
    np.testing.assert_allclose(got, np.float32(0.31), rtol=1e-6)


def test_readonly_memmap_is_read_without_copy(rng, tmp_path):
    a = _raster(rng, (2, 40, 40), 0.05)
    mm = as_readonly_memmap(a, tmp_path)
    assert not mm.flags.writeable
    k = fp.footprint_kernel(20.0, 5.0, 0.2, max_radius=150.0)
    rows, cols = _centres(rng, 40, 40, 64)
    got = fp.footprint_average(mm, rows, cols, k)
    np.testing.assert_array_equal(got, fp.footprint_average(a, rows, cols, k))


def test_threads_give_identical_bytes(rng):
    a = _raster(rng, (3, 80, 80), 0.1)
    k = fp.footprint_kernel(10.0, 5.0, 0.2, max_radius=200.0)
    rows, cols = _centres(rng, 80, 80, 500)
    one = fp.footprint_average(a, rows, cols, k, n_threads=1)
    two = fp.footprint_average(a, rows, cols, k, n_threads=2)
    assert one.tobytes() == two.tobytes()


def test_empty_centres():
    got = fp.footprint_average(np.ones((5, 5), np.float32), np.array([], int), np.array([], int), np.ones((3, 3)))
    assert got.shape == (0,)


@settings(max_examples=60, deadline=None)
@given(
    ny=st.integers(1, 25),
    nx=st.integers(1, 25),
    kh=st.sampled_from([1, 3, 5, 9]),
    kw=st.sampled_from([1, 3, 7]),
    nan_fraction=st.floats(0.0, 0.9),
    thr=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_matches_reference(ny, nx, kh, kw, nan_fraction, thr, seed):
    rng = np.random.default_rng(seed)
    a = _raster(rng, (ny, nx), nan_fraction)
    k = rng.random((kh, kw)) * (rng.random((kh, kw)) > 0.2)
    k[kh // 2, kw // 2] = 1.0
    n = 30
    rows, cols = rng.integers(0, ny, n), rng.integers(0, nx, n)
    got, frac = fp.footprint_average(a, rows, cols, k, min_valid_fraction=thr, return_valid_fraction=True)
    ref, ref_frac = reference_average(a, rows, cols, k, thr)
    np.testing.assert_allclose(frac, ref_frac, rtol=1e-12, atol=1e-14)
    # the threshold decision can flip only where the fraction sits on it to round-off
    near = np.abs(ref_frac - thr) < 1e-12
    np.testing.assert_allclose(got[~near], ref[~near], rtol=1e-6, atol=1e-7, equal_nan=True)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"rows": [0, 99]}, ValidationError, r"outside the 10x10 raster, e.g. centre 1 at \(row 99"),
        ({"rows": [0.5, 1.0]}, ValidationError, "integer"),
        ({"rows": [0]}, ValidationError, "equal length"),
        ({"kernel": np.ones((2, 3))}, ValidationError, "odd sizes"),
        ({"kernel": -np.ones((3, 3))}, ValidationError, ">= 0"),
        ({"kernel": np.zeros((3, 3))}, ValidationError, "sum to 0"),
        ({"raster": np.ones(10)}, ValidationError, "2-D"),
        ({"min_valid_fraction": 1.5}, ConfigError, "min_valid_fraction"),
        ({"n_threads": 0}, ConfigError, "n_threads"),
    ],
)
def test_bad_input_is_named(kwargs, exc, match):
    args = {
        "raster": np.ones((10, 10), np.float32),
        "rows": [0, 1],
        "cols": [0, 1],
        "kernel": np.ones((3, 3)),
    }
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        fp.footprint_average(**args)
