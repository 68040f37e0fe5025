"""Step 0 of ``smengine demo``: the footprint physics tables, kernel and report.

Writes, atomically, into an output folder:

* ``footprint_tables.csv`` — R86 (m) over humidity × soil moisture and D86 (cm) over
  bulk density × soil moisture;
* ``kernel.npy`` and ``footprint.png`` — a 10 m footprint kernel and its cumulative signal;
* ``report.md`` — the numbers, and a check of the kernel against the closed-form R86.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from smengine import footprint as fp
from smengine._io import atomic_target, atomic_write

log = logging.getLogger(__name__)

HUMIDITIES = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
THETAS = (0.02, 0.05, 0.10, 0.15, 0.20, 0.30, 0.40, 0.49)
DENSITIES = (1.0, 1.2, 1.4, 1.6)


def _plot(path: Path, kernel: np.ndarray, cell: float, r86: float) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed (pip install 'smengine[plot]'): no PNG written")
        return False
    n = kernel.shape[0] // 2
    ext = (n + 0.5) * cell
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4.2), constrained_layout=True)
    im = ax0.imshow(
        np.log10(np.maximum(kernel, 1e-12)),
        extent=(-ext, ext, -ext, ext),
        cmap="viridis",
        vmin=np.log10(kernel.max()) - 5,
    )
    ax0.add_patch(plt.Circle((0, 0), r86, fill=False, color="w", lw=1.2, ls="--"))
    ax0.set(title=f"Footprint kernel, {cell:g} m cells (log10 weight)", xlabel="x (m)", ylabel="y (m)")
    fig.colorbar(im, ax=ax0, shrink=0.85)
    r = np.linspace(0, 600, 601)
    for h, th in [(5.0, 0.1), (10.0, 0.3), (20.0, 0.45)]:
        ax1.plot(r, fp.cumulative_signal(r, h, th), label=f"h={h:g} g m$^{{-3}}$, θ={th:g}")
    ax1.axhline(0.86, color="0.5", lw=0.8, ls=":")
    ax1.set(title="Cumulative signal C(r)", xlabel="distance r (m)", ylabel="fraction", ylim=(0, 1))
    ax1.legend(loc="lower right")
    try:
        with atomic_target(path) as tmp:  # a new temporary file, not a fixed name a link could sit on
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return True


def run(out_dir: Path | str, quick: bool = False) -> Path:
    """Run the demonstration and return the path of ``report.md``.

    Parameters
    ----------
    out_dir : path
        Output folder (created if missing).
    quick : bool
        Smaller synthetic raster.
    """
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    h = np.array(HUMIDITIES)[None, :]
    th = np.array(THETAS)[:, None]
    r86 = fp.footprint_radius(h, th)
    d86 = fp.penetration_depth(1.0, np.array(DENSITIES)[None, :], th)
    lines = ["table,theta," + ",".join(f"h={x:g}" for x in HUMIDITIES)]
    lines += [f"R86_m,{t:g}," + ",".join(f"{v:.1f}" for v in row) for t, row in zip(THETAS, r86, strict=False)]
    lines += ["table,theta," + ",".join(f"rho_b={x:g}" for x in DENSITIES)]
    lines += [f"D86_cm,{t:g}," + ",".join(f"{v:.2f}" for v in row) for t, row in zip(THETAS, d86, strict=False)]
    atomic_write(out / "footprint_tables.csv", ("\n".join(lines) + "\n").encode())

    cell, hum, theta = 10.0, 8.0, 0.2
    kernel = fp.footprint_kernel(cell, hum, theta)
    radius = float(fp.footprint_radius(hum, theta))
    n = kernel.shape[0] // 2
    yy, xx = (np.mgrid[-n : n + 1, -n : n + 1]) * cell
    inside = float(kernel[np.hypot(xx, yy) <= radius].sum())
    with atomic_target(out / "kernel.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, kernel)
    plotted = _plot(out / "footprint.png", kernel, cell, radius)

    size = 300 if quick else 1500
    rng = np.random.default_rng(0)
    field = 0.25 + 0.05 * np.sin(np.arange(size)[None, :] / 40.0) + 0.03 * rng.standard_normal((size, size))
    field = field.astype(np.float32)
    field[rng.random(field.shape) < 0.05] = np.nan
    rows = rng.integers(0, size, 2000)
    cols = rng.integers(0, size, 2000)
    t1 = time.perf_counter()
    avg = fp.footprint_average(field, rows, cols, kernel)
    t_avg = time.perf_counter() - t1

    report = [
        "# smengine demo report",
        "",
        f"smengine {__import__('smengine').__version__}; run time {time.perf_counter() - t0:.1f} s.",
        "",
        "The gridded chain (twin world, training, product) arrives with later releases; this",
        "report covers the CRNS footprint physics every later step relies on.",
        "",
        "## Footprint radius R86 (m) at 1013.25 hPa, no vegetation",
        "",
        "| θ \\ h (g m⁻³) | " + " | ".join(f"{x:g}" for x in HUMIDITIES) + " |",
        "|---" * (len(HUMIDITIES) + 1) + "|",
    ]
    report += [f"| {t:g} | " + " | ".join(f"{v:.0f}" for v in row) + " |" for t, row in zip(THETAS, r86, strict=False)]
    report += [
        "",
        "## Penetration depth D86 (cm) at r = 1 m",
        "",
        "| θ \\ ρ_b (g cm⁻³) | " + " | ".join(f"{x:g}" for x in DENSITIES) + " |",
        "|---" * (len(DENSITIES) + 1) + "|",
    ]
    report += [f"| {t:g} | " + " | ".join(f"{v:.1f}" for v in row) + " |" for t, row in zip(THETAS, d86, strict=False)]
    report += [
        "",
        f"## Kernel ({cell:g} m cells, h = {hum:g} g m⁻³, θ = {theta:g})",
        "",
        f"- shape {kernel.shape}, sum {kernel.sum():.12f}",
        f"- R86 = {radius:.1f} m; weight of cells whose centre lies inside R86: {inside:.4f} (target 0.86)",
        f"- footprint-weighted averages at {rows.size} centres of a {size}×{size} raster: "
        f"{t_avg * 1e3:.1f} ms, mean {np.nanmean(avg):.4f} m³ m⁻³, {int(np.isnan(avg).sum())} NaN",
        "",
        "![footprint](footprint.png)" if plotted else "(no plot: matplotlib missing)",
        "",
    ]
    path = out / "report.md"
    atomic_write(path, "\n".join(report).encode())
    log.info("demo finished in %.1f s: %s", time.perf_counter() - t0, path)
    return path
