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

*Advantage* over the best input product = RMSE(best product) − RMSE(mean_j f(x_j)), both on
the pixel-days where the engine's product, the best product and the truth all exist (m³ m⁻³;
positive: the emulator is closer to the truth), with the paired block-bootstrap interval of
:func:`smengine.evaluate.metric_difference_ci` (RMSE, same blocks and resamples as the gain):
``advantage``, ``advantage_ci_low``, ``advantage_ci_high``, ``advantage_n`` pixel-days and
``advantage_verdict``, the emulator's side: ``"beats"`` when the interval lies above 0,
``"loses"`` below, ``"ties"`` when it holds 0 (:func:`smengine.evaluate.verdict`),
``"undetermined"`` without an interval.
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
    "advantage",
    "advantage_ci_low",
    "advantage_ci_high",
    "advantage_verdict",
    "advantage_n",
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
    from smengine.evaluate import (
        _pixel_nanmean,
        metric_difference_ci,
        pixel_mean_prediction,
        rmse_difference_ci,
        space_time_blocks,
    )
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
    blocks = space_time_blocks(truth.shape, BOOT_PIXELS, BOOT_DAYS)
    ci = rmse_difference_ci(a, b, truth, blocks, n_boot=n_boot, seed=seed)
    # the input products on their own pixel-days
    s1 = _pixel_nanmean(fb.source_series("s1_sm"), k)
    smap = np.stack([_pixel_nanmean(store.coarse["smap_sm"].expand(t), k) for t in range(days.size)])
    por = _pixel_nanmean(np.asarray(store.static[store.static_names.index("porosity")], np.float64), k)
    era5 = era5_land_theta_eq(world.paths["era5"], grid, days, np.clip((1.0 - por) * 2.65, 0.8, 2.0))
    series = {"S1-like": s1, "SMAP-like": smap, "ERA5-Land-like": era5}
    prods = {p: _rmse(v, truth)[0] for p, v in series.items()}
    best = min(prods, key=lambda p: prods[p] if np.isfinite(prods[p]) else np.inf)
    # the emulator against the best product, paired on the pixel-days both have:
    # difference = RMSE(emulator) − RMSE(best), so the advantage is its negative
    vs = metric_difference_ci(sub, series[best], truth, blocks, metric="RMSE", n_boot=n_boot, seed=seed)
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
        "advantage": -vs["difference"],
        "advantage_ci_low": -vs["ci_high"],
        "advantage_ci_high": -vs["ci_low"],
        "advantage_verdict": vs["verdict"],
        "advantage_n": int(vs["n"]),
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


def _side(lo: float, hi: float) -> str:
    """The emulator's verdict from the interval of a difference where positive favours it
    (the gain, the advantage): :func:`smengine.evaluate.verdict` of its negative, an RMSE difference."""
    from smengine.evaluate import verdict

    return verdict(-float(hi), -float(lo), "RMSE")


def _ci(lo: float, hi: float) -> str:
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "no interval"
    return f"{lo:+.4f} … {hi:+.4f}"


def _and(parts: Sequence[str]) -> str:
    """``"a, b and c"``."""
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)


def scaling_report(table: pd.DataFrame) -> str:
    """The heterogeneity table (levels × k × the three estimates) and its plain reading, as Markdown.

    The reading is generated from the numbers, and every claim of one estimate over another
    from a 95 % interval: sub-pixel scaling **beats** f(mean_j x_j) when the interval of the
    gain lies above 0 (and *matters* when the gain is also at least :data:`MATTERS_PCT` % of
    RMSE(f(mean_j x_j))), **loses** when it lies below 0, **ties** when it holds 0; the
    emulator beats, ties with or loses to the best input product by the interval of its
    advantage (``advantage_ci_low``, ``advantage_ci_high``) in the same way. Without an
    interval there is no verdict (``undetermined``).

    Parameters
    ----------
    table : DataFrame
        :func:`scaling_experiment`'s table (columns :data:`SCALING_COLUMNS`).

    Returns
    -------
    str
        Markdown: an introduction, the table and the reading.
    """
    lines = [
        "Sub-pixel scaling mean_j f(x_j) (the engine: the forest at each of the k × k sub-pixels, then the mean) "
        "against f(mean_j x_j) (the same forest on the pixel-mean covariates, majority land cover) and the best "
        "single input product, RMSE against the twin's true 1-km θ_eq (m³ m⁻³). h: the world's field-scale "
        "heterogeneity (share of fields with their own land cover, soil, crop calendar and irrigation); HI: the "
        "within-pixel share of the standardised covariates' variance (0 = uniform pixels). Gain = RMSE(f(mean_j x_j)) "
        "− RMSE(mean_j f(x_j)); advantage = RMSE(best input product) − RMSE(mean_j f(x_j)) on the pixel-days both "
        "have (positive: the emulator is closer to the truth); intervals: 95 % paired block bootstrap (5 × 5 pixels "
        "× 30 days). Verdicts (the emulator's side) come from these intervals: *beats* when the interval lies above "
        "0, *loses* when it lies below, *ties* when it holds 0.",
        "",
        "| heterogeneity h | k (sub-pixel) | HI | RMSE mean_j f(x_j) | RMSE f(mean_j x_j) | best input product (RMSE) "
        "| gain (m³ m⁻³) | gain % | 95 % interval | against f(mean_j x_j) | advantage over the best product (m³ m⁻³) "
        "| 95 % interval | against the best product |",
        "|---:|---|---:|---:|---:|---|---:|---:|---|---|---:|---|---|",
    ]
    gain_v = [_side(lo, hi) for lo, hi in zip(table["gain_ci_low"], table["gain_ci_high"], strict=True)]
    adv_v = [_side(lo, hi) for lo, hi in zip(table["advantage_ci_low"], table["advantage_ci_high"], strict=True)]
    for (_, r), gv, av in zip(table.iterrows(), gain_v, adv_v, strict=True):
        lines.append(
            f"| {r['heterogeneity']:.2f} | {r['k']} ({r['subpixel_m']:.0f} m) | {r['het_index']:.3f} | "
            f"{r['rmse_subpixel']:.4f} | {r['rmse_pixelmean']:.4f} | "
            f"{r['best_product']} ({r['rmse_best_product']:.4f}) "
            f"| {r['gain']:+.4f} | {r['gain_pct']:+.1f} | {_ci(r['gain_ci_low'], r['gain_ci_high'])} | {gv} "
            f"| {r['advantage']:+.4f} | {_ci(r['advantage_ci_low'], r['advantage_ci_high'])} | {av} |"
        )
    lines.append("")
    gv = pd.Series(gain_v, index=table.index)
    av = pd.Series(adv_v, index=table.index)
    beats = table[gv == "beats"]
    matters = beats[beats["gain_pct"] >= MATTERS_PCT]
    small = beats.drop(index=matters.index)

    def cases(t: pd.DataFrame) -> str:
        return ", ".join(
            f"h = {r['heterogeneity']:.2f}/k = {r['k']} (HI {r['het_index']:.3f})" for _, r in t.iterrows()
        )

    text = []
    if len(matters):
        text.append(
            f"Sub-pixel scaling beats pixel-mean covariates and matters (gain ≥ {MATTERS_PCT:.0f} % of the RMSE, "
            f"interval above 0) at {cases(matters)}."
        )
    if len(small):
        text.append(f"It beats them by less than {MATTERS_PCT:.0f} % of the RMSE (interval above 0) at {cases(small)}.")
    if (gv == "ties").any():
        text.append(f"It ties with them (the interval holds 0) at {cases(table[gv == 'ties'])}.")
    if (gv == "loses").any():
        text.append(f"It loses to pixel-mean covariates (interval below 0) at {cases(table[gv == 'loses'])}.")
    if (gv == "undetermined").any():
        text.append(f"No verdict on the gain (no interval) at {cases(table[gv == 'undetermined'])}.")
    if np.isfinite(table["gain"].to_numpy(np.float64)).any():
        top = table.loc[table["gain"].idxmax()]
        text.append(
            f"The largest gain is {top['gain']:.4f} m³ m⁻³ ({top['gain_pct']:.1f} %) at "
            f"h = {top['heterogeneity']:.2f}, k = {top['k']}."
        )
    n, count = len(table), av.value_counts()
    parts = [
        f"beats it in {count.get('beats', 0)} of {n} case{'s' * (n != 1)}",
        f"ties with it (the interval holds 0) in {count.get('ties', 0)}",
        f"loses to it (interval below 0) in {count.get('loses', 0)}",
    ]
    if count.get("undetermined", 0):
        parts.append(f"has no verdict (no interval) in {count['undetermined']}")
    adv = table["advantage"].to_numpy(np.float64)
    span = (
        f"; its advantage ranges over {np.nanmin(adv):+.4f} … {np.nanmax(adv):+.4f} m³ m⁻³"
        if np.isfinite(adv).any()
        else ""
    )
    text.append(
        "Against the best single input product (best products: "
        f"{', '.join(sorted(set(table['best_product'])))}; RMSE on the pixel-days both have), the emulator "
        f"{_and(parts)}{span}."
    )
    for word, what in (("ties", "ties with"), ("loses", "loses to")):
        if count.get(word, 0):
            text.append(f"It {what} the best product at {cases(table[av == word])}.")
    ks = sorted(set(table["k"]))
    if len(ks) >= 2:
        per_k = [
            f"{int((gv[table['k'] == k] == 'beats').sum())} of {int((table['k'] == k).sum())} levels with k = {k}"
            for k in ks
        ]
        text.append(
            f"Per sub-pixel factor, sub-pixel scaling beats pixel-mean covariates at {_and(per_k)}. Each k has its "
            "own forest, so the gains at two k are not paired and no interval compares them (no verdict between k); "
            "finer sub-pixels also carry more sensor speckle into HI."
        )
    lines.append(" ".join(text))
    return "\n".join(lines) + "\n"
