r"""When does sub-pixel scaling matter? The twin experiment over heterogeneity levels and sub-pixel factors.

The engine predicts the forest f at every sub-pixel j of a 1-km pixel and averages,
mean_j f(x_j) (*sub-pixel scaling*); the cheaper alternative predicts once from the
pixel-mean covariates, f(mean_j x_j). The two differ only where the covariates vary inside
a pixel and f is nonlinear there. :func:`scaling_experiment` measures the difference on
twin worlds of growing field-scale heterogeneity (:class:`~smengine.twin.TwinConfig`
``heterogeneity``) for several sub-pixel factors k, against the true 1-km θ_eq, next to
the best single input product; :func:`plot_scaling` draws the gain against a measured
heterogeneity index and :func:`scaling_report` writes the table and its reading.

Definitions
-----------
*Heterogeneity index* HI (dimensionless, 0…1) of a world seen with k × k sub-pixels:
every numeric forest feature f (all but the categorical ``land_cover``) is standardised,
z = (x − μ_f) / σ_f with μ_f, σ_f over all land sub-pixels of the sampled days (every
7th day), and

.. math:: HI = \frac{1}{F}\sum_f \overline{\operatorname{Var}_{j \in p}(z_{f,j,t})}^{\,p,t}

the within-pixel (population) variance averaged over pixels p and sampled days t, then
over the F features: the fraction of the covariates' variance that lies inside the 1-km
pixels (0: uniform pixels; 1: all variance inside pixels).

*Estimates*, each against the true 1-km θ_eq of the world (``truth/theta_eq.nc``):

* ``rmse_subpixel``: RMSE of the engine's product (:func:`smengine.engine.predict`):
  mean_j f(x_j);
* ``rmse_pixelmean``: RMSE of f(mean_j x_j): the same compiled forest on the pixel mean of
  each numeric feature over the pixel's valid sub-pixels (at least half of them) and the
  pixel's majority land cover;
* both on the pixel-days where both and the truth exist;
* ``rmse_best_product``: the lowest RMSE among the input products themselves, each on its
  own pixel-days: S1-like (pixel mean of the ingested layer, every 3rd day), SMAP-like
  (9 km) and ERA5-Land-like θ_eq (0.1°, :func:`smengine.pseudoproxy.era5_land_theta_eq`);
  ``best_product`` names it.

*Gain* = rmse_pixelmean − rmse_subpixel (m³ m⁻³; positive: sub-pixel scaling is closer
to the truth) and ``gain_pct`` = 100 · gain / rmse_pixelmean. Its 95 % interval is the
block bootstrap of :func:`smengine.evaluate.rmse_difference_ci` over
:func:`~smengine.evaluate.space_time_blocks` of 5 × 5 pixels × 30 days (1000 resamples).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["SCALING_COLUMNS", "plot_scaling", "scaling_experiment", "scaling_report"]

log = logging.getLogger(__name__)

#: Columns of :func:`scaling_experiment`'s table (one row per heterogeneity level and k).
SCALING_COLUMNS = (
    "heterogeneity",
    "k",
    "subpixel_m",
    "het_index",
    "rmse_subpixel",
    "rmse_pixelmean",
    "rmse_best_product",
    "best_product",
    "gain",
    "gain_pct",
    "gain_ci_low",
    "gain_ci_high",
    "n",
    "n_blocks",
    "seconds",
)
#: Block bootstrap of the gain: pixel squares, day periods, resamples.
BOOT_PIXELS, BOOT_DAYS, BOOT_N = 5, 30, 1000
#: Sampling of days (every n-th) for the heterogeneity index.
INDEX_EVERY = 7
#: A gain "matters" when its interval excludes 0 and it is at least this many percent.
MATTERS_PCT = 5.0


def heterogeneity_index(fb: Any, names: Sequence[str], swi: np.ndarray, s: int, every: int = INDEX_EVERY) -> float:
    """The within-pixel variance index HI of the module docstring for a FeatureBuilder's tile."""
    cols = [fb.names.index(n) for n in names if n != "land_cover"]
    days = range(0, len(fb.store.times), every)
    x = np.stack([fb.day(t, swi=swi)[cols] for t in days], axis=1).astype(np.float64)  # (F, T, Y, X)
    out = []
    for f in range(x.shape[0]):
        v = x[f]
        ok = np.isfinite(v)
        if ok.sum() < 2:
            continue
        sd = float(v[ok].std())
        if not sd > 0:
            out.append(0.0)
            continue
        z = (v - float(v[ok].mean())) / sd
        T, Y, X = z.shape
        b = z.reshape(T, Y // s, s, X // s, s)
        with warnings.catch_warnings():  # all-water pixels have no sub-pixel value
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.nanmean(b, axis=(2, 4), keepdims=True)
            var = np.nanmean((b - m) ** 2, axis=(2, 4))
        out.append(float(np.nanmean(var)))
    return float(np.mean(out)) if out else float("nan")


def _rmse(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    return (float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2))) if n else float("nan")), n


def _one(
    world: Any,
    k: int,
    tiles: Path,
    *,
    seed: int,
    n_trees: int,
    n_threads: int | None,
    n_boot: int,
) -> dict[str, Any]:
    """One row of the table: one world seen with k × k sub-pixels."""
    from smengine.demo import DEMO_SPEC
    from smengine.engine import predict
    from smengine.evaluate import _pixel_nanmean, pixel_mean_prediction, rmse_difference_ci, space_time_blocks
    from smengine.features import FeatureBuilder, FeatureSpec, training_table
    from smengine.ingest import ingest
    from smengine.model import train
    from smengine.pseudoproxy import era5_land_theta_eq
    from smengine.tiles import TileStore

    t0 = time.perf_counter()
    clock: dict[str, float] = {}

    def lap(name: str) -> None:
        clock[name] = time.perf_counter() - t0 - sum(clock.values())

    grid = dataclasses.replace(world.grid, subpixel=int(k))
    paths = ingest(world.sources(), grid, tiles)
    lap("ingest")
    store = TileStore.open(paths[0])  # the quick twins are one tile
    spec = FeatureSpec(**DEMO_SPEC)
    table = training_table(world.read_stations(), [store], spec, kernel_quantum=(2.0, 0.02, 5.0))
    names = list(table.attrs["features"])
    lap("table")
    forest = train(table, names, cv=None, search=False, n_estimators=n_trees, random_state=seed, n_jobs=n_threads or -1)
    cf = forest.compile()
    cf.save(Path(tiles) / "model.smf.h5")  # kept with the tiles: the row can be recomputed from them
    days = world.days
    lap("train")
    sub = predict(store, cf, n_threads=n_threads)["sm"].values.astype(np.float64)
    lap("engine")
    truth = world.truth().sel(time=days.astype("datetime64[ns]")).values.astype(np.float64)
    # f(mean_j x_j): the same forest on pixel-mean covariates (majority land cover)
    fb = FeatureBuilder(store, spec)
    sw = fb.swi()
    base = pixel_mean_prediction(fb, names, cf, swi=sw, n_threads=n_threads)
    lap("pixelmean")
    both = np.isfinite(sub) & np.isfinite(base)
    a, b = np.where(both, sub, np.nan), np.where(both, base, np.nan)
    r_sub, n = _rmse(a, truth)
    r_base, _ = _rmse(b, truth)
    ci = rmse_difference_ci(
        a, b, truth, space_time_blocks(truth.shape, BOOT_PIXELS, BOOT_DAYS), n_boot=n_boot, seed=seed
    )
    # the input products on their own pixel-days
    s1 = _pixel_nanmean(fb.source_series("s1_sm"), k)
    smap = np.stack([_pixel_nanmean(store.coarse["smap_sm"].expand(t), k) for t in range(days.size)])
    por = _pixel_nanmean(np.asarray(store.static[store.static_names.index("porosity")], np.float64), k)
    era5 = era5_land_theta_eq(world.paths["era5"], grid, days, np.clip((1.0 - por) * 2.65, 0.8, 2.0))
    prods = {
        "S1-like": _rmse(s1, truth)[0],
        "SMAP-like": _rmse(smap, truth)[0],
        "ERA5-Land-like": _rmse(era5, truth)[0],
    }
    best = min(prods, key=lambda p: prods[p] if np.isfinite(prods[p]) else np.inf)
    lap("scores")
    hi = heterogeneity_index(fb, names, sw, k)
    lap("index")
    log.info("scaling h=%.2f k=%d: %s", world.config.heterogeneity, k, {n: round(v, 1) for n, v in clock.items()})
    gain = r_base - r_sub
    return {
        "heterogeneity": float(world.config.heterogeneity),
        "k": int(k),
        "subpixel_m": 1000.0 / k,
        "het_index": hi,
        "rmse_subpixel": r_sub,
        "rmse_pixelmean": r_base,
        "rmse_best_product": prods[best],
        "best_product": best,
        "gain": gain,
        "gain_pct": 100.0 * gain / r_base if r_base > 0 else float("nan"),
        "gain_ci_low": -ci["ci_high"],
        "gain_ci_high": -ci["ci_low"],
        "n": n,
        "n_blocks": int(ci["n_blocks"]),
        "seconds": time.perf_counter() - t0,
        **{f"rmse_{p.split('-')[0].lower()}": v for p, v in prods.items()},
    }


def scaling_experiment(
    root: str | Path,
    levels: Sequence[float] = (0.0, 0.33, 0.67, 1.0),
    subpixels: Sequence[int] = (4, 10),
    seed: int = 0,
    *,
    quick: bool = True,
    config: Any = None,
    n_trees: int | None = None,
    n_threads: int | None = None,
    n_boot: int = BOOT_N,
) -> pd.DataFrame:
    r"""RMSE of mean_j f(x_j), f(mean_j x_j) and the best input product across heterogeneity and k.

    For each heterogeneity level a twin world is built (or reused from ``root``), and for
    each sub-pixel factor k its files are ingested on the 1-km grid with k × k sub-pixels,
    a forest is trained on the stations (``smengine demo``'s features :data:`~smengine.demo.DEMO_SPEC`,
    no CV, no search), the engine predicts the product and the estimates are scored against
    the true 1-km θ_eq (definitions in :mod:`smengine.twin._scaling`).

    Parameters
    ----------
    root : path
        Folder of the worlds and tiles (``h0.33/world``, ``h0.33/tiles_k10``, …), reused
        by a rerun.
    levels : sequence of float
        Heterogeneity levels in [0, 1] (:class:`~smengine.twin.TwinConfig` ``heterogeneity``).
    subpixels : sequence of int
        Sub-pixel factors k: k × k sub-pixels of 1000 / k m per pixel (4 → 250 m, the fine
        layers averaged over 2.5 × 2.5 fine cells by the ingest; 10 → 100 m, the fine grid
        itself). The sub-pixels should not be finer than the twin's ``fine_resolution``.
    seed : int
        Seed of the worlds and forests.
    quick : bool
        The quick twin (20 km × 20 km, one year, 25 stations; :meth:`TwinConfig.quick`) and
        50 trees; otherwise the default twin and 300 trees.
    config : TwinConfig, optional
        Base configuration instead (its ``heterogeneity`` is replaced by each level).
    n_trees : int, optional
        Trees per forest (default 50 quick, 300 otherwise).
    n_threads : int, optional
        Threads of the forest and the engine.
    n_boot : int
        Bootstrap resamples of the gain's interval.

    Returns
    -------
    pandas.DataFrame
        One row per (level, k), columns :data:`SCALING_COLUMNS` and the RMSE of each
        product (``rmse_s1``, ``rmse_smap``, ``rmse_era5``); RMSEs and gains in m³ m⁻³.
        ``attrs``: ``seconds`` (wall time), ``seed``, ``n_trees``, ``config`` (the base
        twin configuration).

    Examples
    --------
    >>> tab = scaling_experiment("scaling", quick=True)          # doctest: +SKIP
    >>> plot_scaling(tab, "scaling.png")                          # doctest: +SKIP
    """
    from smengine.twin import TwinConfig, make_world

    t0 = time.perf_counter()
    root = Path(root).expanduser()
    base_cfg = config if config is not None else (TwinConfig.quick() if quick else TwinConfig())
    trees = n_trees if n_trees is not None else (50 if quick else 300)
    rows = []
    for h in levels:
        cfg = dataclasses.replace(base_cfg, heterogeneity=float(h))
        folder = root / f"h{float(h):.2f}"
        world = make_world(seed, folder / "world", cfg)
        for k in subpixels:
            log.info("scaling: heterogeneity %.2f, k = %d", h, k)
            rows.append(
                _one(
                    world,
                    int(k),
                    folder / f"tiles_k{int(k)}",
                    seed=seed,
                    n_trees=trees,
                    n_threads=n_threads,
                    n_boot=n_boot,
                )
            )
    tab = pd.DataFrame(rows)
    tab = tab[[*SCALING_COLUMNS, *[c for c in tab.columns if c not in SCALING_COLUMNS]]]
    tab.attrs.update(seconds=time.perf_counter() - t0, seed=int(seed), n_trees=int(trees), config=base_cfg.get_config())
    return tab


def plot_scaling(table: pd.DataFrame, path: str | Path) -> Path:
    """Gain of sub-pixel scaling against the heterogeneity index, one line per k, 95 % intervals (PNG).

    Left: gain = RMSE(f(mean_j x_j)) − RMSE(mean_j f(x_j)) in 10⁻³ m³ m⁻³ with the
    block-bootstrap interval; right: the gain in % of RMSE(f(mean_j x_j)). Points are
    labelled with the world's heterogeneity level h.
    """
    from smengine.evaluate import _plt, _save

    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.4))
    for k, g in table.groupby("k"):
        g = g.sort_values("het_index")
        gain = g["gain"].to_numpy() * 1000.0
        yerr = np.vstack([gain - g["gain_ci_low"] * 1000.0, g["gain_ci_high"] * 1000.0 - gain])
        lab = f"k = {k} ({1000 / k:.0f} m sub-pixels)"
        a.errorbar(g["het_index"], gain, yerr=yerr, marker="o", capsize=3, label=lab)
        b.plot(g["het_index"], g["gain_pct"], marker="o", label=lab)
        for x, y, y2, h in zip(g["het_index"], gain, g["gain_pct"], g["heterogeneity"], strict=True):
            a.annotate(f"h={h:.2f}", (x, y), fontsize=7, xytext=(4, -9), textcoords="offset points")
            b.annotate(f"h={h:.2f}", (x, y2), fontsize=7, xytext=(4, -9), textcoords="offset points")
    for ax in (a, b):
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_xlabel("heterogeneity index HI (within-pixel share of covariate variance, 1)", fontsize=9)
        ax.legend(fontsize=8, loc="upper left")
    a.set_ylabel("gain (10⁻³ m³ m⁻³)")
    a.set_title("RMSE(f(mean_j x_j)) − RMSE(mean_j f(x_j)), 95 % block-bootstrap interval", fontsize=9)
    b.set_ylabel("gain (% of RMSE of f(mean_j x_j))")
    b.set_title("the same gain relative to the pixel-mean-covariate RMSE", fontsize=9)
    fig.suptitle(
        "Twin worlds of growing field-scale heterogeneity h: gain of sub-pixel scaling against the true 1-km θ_eq",
        fontsize=10,
    )
    fig.tight_layout()
    return _save(fig, path)


def scaling_report(table: pd.DataFrame) -> str:
    """The heterogeneity table (levels × k × the three estimates) and its plain reading, as Markdown.

    The reading is generated from the numbers: a gain *matters* when its 95 % interval
    lies above 0 and it is at least :data:`MATTERS_PCT` % of RMSE(f(mean_j x_j)).
    """
    lines = [
        "Sub-pixel scaling mean_j f(x_j) (the engine: the forest at each of the k × k sub-pixels, then the mean) "
        "against f(mean_j x_j) (the same forest on the pixel-mean covariates, majority land cover) and the best "
        "single input product, RMSE against the twin's true 1-km θ_eq (m³ m⁻³). h: the world's field-scale "
        "heterogeneity (share of fields with their own land cover, soil, crop calendar and irrigation); HI: the "
        "within-pixel share of the standardised covariates' variance (0 = uniform pixels). Gain = RMSE(f(mean_j x_j)) "
        "− RMSE(mean_j f(x_j)); interval: 95 % block bootstrap (5 × 5 pixels × 30 days).",
        "",
        "| heterogeneity h | k (sub-pixel) | HI | RMSE mean_j f(x_j) | RMSE f(mean_j x_j) | best input product (RMSE) "
        "| gain (m³ m⁻³) | gain % | 95 % interval |",
        "|---:|---|---:|---:|---:|---|---:|---:|---|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['heterogeneity']:.2f} | {r['k']} ({r['subpixel_m']:.0f} m) | {r['het_index']:.3f} | "
            f"{r['rmse_subpixel']:.4f} | {r['rmse_pixelmean']:.4f} | "
            f"{r['best_product']} ({r['rmse_best_product']:.4f}) "
            f"| {r['gain']:+.4f} | {r['gain_pct']:+.1f} | {r['gain_ci_low']:+.4f} … {r['gain_ci_high']:+.4f} |"
        )
    lines.append("")
    matters = table[(table["gain_ci_low"] > 0) & (table["gain_pct"] >= MATTERS_PCT)]
    clear = table[table["gain_ci_low"] > 0]
    worse = table[table["gain_ci_high"] < 0]
    none = table[(table["gain_ci_low"] <= 0) & (table["gain_ci_high"] >= 0)]

    def cases(t: pd.DataFrame) -> str:
        return ", ".join(
            f"h = {r['heterogeneity']:.2f}/k = {r['k']} (HI {r['het_index']:.3f})" for _, r in t.iterrows()
        )

    text = []
    if len(matters):
        text.append(
            f"Sub-pixel scaling matters (gain ≥ {MATTERS_PCT:.0f} % of the RMSE, interval above 0) at {cases(matters)}."
        )
    small = clear.drop(index=matters.index)
    if len(small):
        text.append(f"It helps, but by less than {MATTERS_PCT:.0f} %, at {cases(small)}.")
    if len(none):
        text.append(f"It makes no clear difference (the interval includes 0) at {cases(none)}.")
    if len(worse):
        text.append(f"It is worse than pixel-mean covariates at {cases(worse)}.")
    top = table.loc[table["gain"].idxmax()]
    adv = table["rmse_best_product"] - table["rmse_subpixel"]
    text.append(
        f"The largest gain is {top['gain']:.4f} m³ m⁻³ ({top['gain_pct']:.1f} %) at h = {top['heterogeneity']:.2f}, "
        f"k = {top['k']}; the emulator's advantage over the best single input product is {adv.min():.4f}–"
        f"{adv.max():.4f} m³ m⁻³ (it beats it in {int((adv > 0).sum())} of {len(table)} cases; best products: "
        f"{', '.join(sorted(set(table['best_product'])))}), so sub-pixel scaling refines the emulator "
        "but is not what makes it better than the inputs."
    )
    ks = sorted(set(table["k"]))
    if len(ks) == 2:
        piv = table.pivot_table(index="heterogeneity", columns="k", values="gain")
        more = int((piv[ks[0]] > piv[ks[1]]).sum())
        text.append(
            f"k = {ks[0]} gains more than k = {ks[1]} at {more} of {len(piv)} levels: the gain depends on "
            "the heterogeneity the forest can use, not on the sub-pixel count alone (each k has its own forest, "
            "and finer sub-pixels also carry more sensor speckle into HI)."
        )
    lines.append(" ".join(text))
    return "\n".join(lines) + "\n"
