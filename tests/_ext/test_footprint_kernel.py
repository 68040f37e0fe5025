"""The gridded footprint kernel (SCIENCE.md §1.8a, §7 item 7)."""

from __future__ import annotations

import numpy as np
import pytest

from smengine import footprint as fp
from smengine.errors import ValidationError


def _cell_offsets(n: int, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """(x east, y north) of every kernel cell centre, kernel rows running north → south."""
    idx = np.arange(-n, n + 1) * cell
    return idx[None, :] * np.ones((2 * n + 1, 1)), -idx[:, None] * np.ones((1, 2 * n + 1))


def _density(x, y, h, theta, p):
    """Areal density W_r(r*)/(2 pi r) (unnormalised)."""
    r = np.hypot(x, y)
    return fp.horizontal_weight(fp.rescale_distance(r, p), h, theta) / (2 * np.pi * r)


def _fraction_inside(kernel, cell, radius, h, theta, p, s=48):
    """Kernel weight inside a circle, sharing boundary cells by the true density inside them."""
    n = kernel.shape[0] // 2
    x, y = _cell_offsets(n, cell)
    near = np.hypot(np.abs(x) - cell / 2, np.abs(y) - cell / 2)  # distance of nearest corner-ish
    near = np.hypot(np.maximum(np.abs(x) - cell / 2, 0), np.maximum(np.abs(y) - cell / 2, 0))
    far = np.hypot(np.abs(x) + cell / 2, np.abs(y) + cell / 2)
    frac = np.where(far <= radius, 1.0, 0.0)
    off = ((np.arange(s) + 0.5) / s - 0.5) * cell
    ox, oy = np.meshgrid(off, off)
    for i, j in zip(*np.nonzero((near < radius) & (far > radius)), strict=False):
        px, py = x[i, j] + ox, y[i, j] + oy
        d = _density(px, py, h, theta, p)
        frac[i, j] = d[np.hypot(px, py) <= radius].sum() / d.sum()
    return float((kernel * frac).sum())


def _naive_kernel(cell, h, theta, rmax):
    """Plain cell-centre sampling of W_r/(2 pi r); the sensor's own cell is sampled at
    half a cell from the sensor (SCIENCE.md does not say how it treated that cell; this
    recipe reproduces its three figures within 0.002)."""
    n = int(np.ceil(rmax / cell - 0.5))
    x, y = _cell_offsets(n, cell)
    r = np.hypot(x, y)
    r[n, n] = cell / 2
    w = fp.horizontal_weight(r, h, theta) / (2 * np.pi * r)
    w[r > rmax] = 0
    return w / w.sum()


@pytest.mark.parametrize("cell", [1.0, 5.0, 10.0, 25.0, 50.0, 100.0])
@pytest.mark.parametrize(("h", "theta", "p"), [(5.0, 0.1, 1013.25), (15.0, 0.3, 800.0)])
def test_kernel_weight_inside_r86(cell, h, theta, p):
    k = fp.footprint_kernel(cell, h, theta, pressure=p)
    assert k.sum() == pytest.approx(1.0, abs=1e-12)
    r86 = float(fp.footprint_radius(h, theta, pressure=p))
    assert _fraction_inside(k, cell, r86, h, theta, p) == pytest.approx(0.86, abs=0.005)


@pytest.mark.parametrize(("cell", "expected"), [(1.0, 0.860), (5.0, 0.834), (10.0, 0.816)])
def test_naive_centre_sampling_loses_weight_and_ours_does_not(cell, expected):
    # SCIENCE §1.8a: plain cell-centre sampling puts 0.860 (1 m), 0.834 (5 m) and
    # 0.816 (10 m) of the weight inside R86 (cells whose centre lies within R86)
    r86 = float(fp.footprint_radius(5.0, 0.1))
    naive = _naive_kernel(cell, 5.0, 0.1, 800.0)
    n = naive.shape[0] // 2
    x, y = _cell_offsets(n, cell)
    inside = np.hypot(x, y) <= r86
    assert float(naive[inside].sum()) == pytest.approx(expected, abs=0.002)
    ours = fp.footprint_kernel(cell, 5.0, 0.1)
    m = ours.shape[0] // 2
    x, y = _cell_offsets(m, cell)
    assert float(ours[np.hypot(x, y) <= r86].sum()) == pytest.approx(0.86, abs=0.005)


def test_kernel_cells_equal_area_integral_of_density():
    cell, h, theta = 20.0, 8.0, 0.2
    k = fp.footprint_kernel(cell, h, theta, max_radius=600.0)
    n = k.shape[0] // 2
    total = float(fp.cumulative_signal(600.0, h, theta))
    x, y = _cell_offsets(n, cell)
    s = 64
    off = ((np.arange(s) + 0.5) / s - 0.5) * cell
    ox, oy = np.meshgrid(off, off)
    # the normalising constant: 2 pi ∫ W_r dr over [0, inf) equals the density's area integral
    c = fp.horizontal_coefficients(h, theta)
    norm = _radial_total(h, theta)
    for i, j in [(n, n + 2), (n - 3, n + 4), (n + 10, n - 1), (n, n + 25)]:
        d = _density(x[i, j] + ox, y[i, j] + oy, h, theta, 1013.25)
        integral = d.mean() * cell * cell / norm / total
        assert k[i, j] == pytest.approx(integral, rel=2e-3), (i, j)
    assert c["F1"] > 0


def _radial_total(h, theta):
    from scipy.integrate import quad

    def w(r):
        return float(fp.horizontal_weight(r, h, theta))

    return sum(quad(w, a, b, limit=200)[0] for a, b in [(0, 1), (1, 50), (50, 800), (800, np.inf)])


def test_kernel_symmetry_centre_and_truncation():
    k = fp.footprint_kernel(30.0, 5.0, 0.1)
    np.testing.assert_allclose(k, k[::-1, :], rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(k, k[:, ::-1], rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(k, k.T, rtol=1e-12, atol=1e-18)
    n = k.shape[0] // 2
    assert k[n, n] == k.max()
    # default truncation holds 99.9 % of the signal: the kernel reaches ~ that radius
    r999 = float(fp.footprint_radius(5.0, 0.1, fraction=0.999))
    assert (n + 0.5) * 30.0 >= r999 > (n - 0.5) * 30.0
    small = fp.footprint_kernel(30.0, 5.0, 0.1, max_radius=200.0)
    assert small.shape == (15, 15)
    x, y = _cell_offsets(7, 30.0)
    assert (small[np.hypot(np.abs(x) - 15, np.abs(y) - 15) > 200.0] == 0).all()
    # the centre cell holds exactly C(cell/2) of the (truncated) signal
    assert small[7, 7] * float(fp.cumulative_signal(200.0, 5.0, 0.1)) >= float(fp.cumulative_signal(15.0, 5.0, 0.1))


def test_kernel_scales_with_pressure():
    sea = fp.footprint_kernel(25.0, 5.0, 0.1)
    high = fp.footprint_kernel(25.0, 5.0, 0.1, pressure=700.0)
    assert high.shape[0] > sea.shape[0]  # a larger footprint at altitude
    assert high.max() < sea.max()


def test_kernel_validation():
    with pytest.raises(ValidationError, match="cell_size"):
        fp.footprint_kernel(0.0, 5.0, 0.1)
    with pytest.raises(ValidationError, match="theta"):
        fp.footprint_kernel(10.0, 5.0, 1.0)
    with pytest.raises(ValidationError, match="max_radius"):
        fp.footprint_kernel(10.0, 5.0, 0.1, max_radius=-3.0)
