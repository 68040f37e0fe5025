"""The demonstration chain on the twin world (see the package docstring)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine._io import atomic_write

__all__ = ["DEMO_SPEC", "SCALING_STEP", "STEPS", "DemoResult", "run_demo"]

log = logging.getLogger(__name__)

#: Feature definition of the demo (see the module docstring), as :class:`~smengine.features.FeatureSpec` arguments.
DEMO_SPEC: dict[str, Any] = {
    "static": ("elevation", "twi", "sand", "clay", "porosity", "land_cover"),
    "dynamic": ("ndvi", "precipitation"),
    "coarse": (),
    "swi_of": ("s1_sm", "smap_sm"),
    "swi_T": (5.0, 10.0, 20.0, 40.0),
    "swi_carry": True,
}
STEPS = (
    "footprint physics",
    "twin world",
    "ingest",
    "training table",
    "train",
    "product",
    "truth scores",
    "station scores",
    "pseudoproxy",
    "cv estimates",
    "report",
)
#: The optional step of :func:`run_demo` (``scaling=True``; on by default without ``quick``).
SCALING_STEP = "sub-pixel scaling"


@dataclass
class DemoResult:
    """What the demo wrote and measured."""

    out_dir: Path
    report: Path
    files: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    truth_scores: pd.DataFrame | None = None
    site_scores: pd.DataFrame | None = None
    product_scores: pd.DataFrame | None = None
    pseudoproxy: dict[str, Any] = field(default_factory=dict)
    uncertainty: dict[str, Any] = field(default_factory=dict)
    footprint: dict[str, Any] = field(default_factory=dict)
    differences: dict[str, dict[str, float]] = field(default_factory=dict)
    truth_pixel: pd.DataFrame | None = None
    scaling: pd.DataFrame | None = None
    applicability: dict[str, Any] = field(default_factory=dict)
    station_comparisons: list[dict[str, Any]] = field(default_factory=list)
    cv_study: Any = None
    di_error: dict[str, Any] = field(default_factory=dict)


#: Block bootstrap of the report's RMSE differences: pixel squares × day periods, resamples, seed.
BOOT_BLOCK_PIXELS, BOOT_BLOCK_DAYS, BOOT_N = 5, 30, 1000


def _differences(sm: np.ndarray, others: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, dict[str, Any]]:
    """RMSE(emulator) − RMSE(other) against the truth with 95 % block-bootstrap intervals and the
    verdict they allow, per other estimate."""
    from smengine.evaluate import metric_difference_ci, space_time_blocks

    blocks = space_time_blocks(truth.shape, BOOT_BLOCK_PIXELS, BOOT_BLOCK_DAYS)
    return {k: metric_difference_ci(sm, v, truth, blocks, n_boot=BOOT_N, seed=0) for k, v in others.items()}


def _differences_text(diffs: dict[str, dict[str, float]]) -> list[str]:
    """The report's table of differences that carry a claim, with their intervals."""
    if not diffs:
        return []
    lines = [
        "RMSE of the emulator (sub-pixel scaling) minus RMSE of each other estimate, on the pixel-days both have, "
        f"with 95 % block-bootstrap intervals ({BOOT_BLOCK_PIXELS} × {BOOT_BLOCK_PIXELS}-pixel × "
        f"{BOOT_BLOCK_DAYS}-day blocks resampled {BOOT_N} times; negative = the emulator is closer to the truth):",
        "",
        "| against | ΔRMSE (m³ m⁻³) | 95 % interval | pixel-days | blocks | verdict |",
        "|---|---:|---|---:|---:|---|",
    ]
    for k, d in diffs.items():
        verdict = {
            "beats": f"the emulator beats {k}",
            "loses": f"the emulator loses to {k}",
            "ties": "tie (the interval holds 0)",
        }.get(d.get("verdict", ""), "no verdict (no common pixel-days)")
        lines.append(
            f"| {k} | {d['difference']:+.4f} | {d['ci_low']:+.4f} … {d['ci_high']:+.4f} | {d['n']:,} | "
            f"{d['n_blocks']} | {verdict} |"
        )
    return [*lines, ""]


@dataclass(frozen=True)
class _Split:
    short: str
    long: str


def _split_name(forest: Any) -> _Split:
    """What the station CV is, by its name: leave-site-out only when each fold holds one station."""
    splitter = str((forest.card.cv.get("site") or {}).get("splitter", ""))
    if "LeaveOneGroupOut" in splitter:
        return _Split("leave-site-out", "Leave-site-out: each station predicted by a forest trained on all the others.")
    return _Split(
        "grouped-CV (by station)",
        f"Grouped cross-validation by station ({splitter}): each station's days are held out together, so a station "
        "is predicted by a forest that never saw it; several stations leave each fold (not leave-site-out).",
    )


def _footprint_summary(prod: dict[str, np.ndarray], ds: Any) -> dict[str, Any]:
    """Median and quartiles of the product's D86 (cm) and R86 (m) over its pixel-days, and their inputs."""
    out: dict[str, Any] = {"inputs": json.loads(ds.attrs["smengine_config"])["engine"].get("footprint", {})}
    for v in ("d86", "r86"):
        if v in prod and np.isfinite(prod[v]).any():
            q = np.nanpercentile(prod[v], [25, 50, 75])
            out[v] = {
                "q25": float(q[0]),
                "median": float(q[1]),
                "q75": float(q[2]),
                "n": int(np.isfinite(prod[v]).sum()),
            }
    return out


def _applicability_summary(prod: dict[str, np.ndarray], cf: Any) -> dict[str, Any]:
    """The product's own area of applicability: the engine's per-pixel-day DI and flag bit."""
    from smengine.product import OUTSIDE_AOA

    app = getattr(cf, "applicability", None)
    if "di" not in prod or app is None:
        return {}
    di = prod["di"]
    ok = np.isfinite(di)
    outside = (prod["quality_flag"] & OUTSIDE_AOA) != 0
    per_pixel = outside.mean(axis=0)
    lpd: dict[str, Any] = {}
    if "lpd" in prod:
        lp = prod["lpd"]
        fin = np.isfinite(lp)
        for name, m in (("inside", fin & ~outside), ("outside", fin & outside)):
            lpd[name] = (
                {
                    "median": float(np.median(lp[m])),
                    "q05": float(np.quantile(lp[m], 0.05)),
                    "zero_fraction": float(np.mean(lp[m] == 0)),
                    "n": int(m.sum()),
                }  # fmt: skip
                if m.any()
                else {"n": 0}
            )
        lpd["train"] = app.summary()
    return {
        "lpd": lpd,
        "threshold": float(app.threshold),
        "n": int(ok.sum()),
        "outside_fraction": float(outside[ok].mean()) if ok.any() else float("nan"),
        "di_median": float(np.median(di[ok])) if ok.any() else float("nan"),
        "di_q95": float(np.quantile(di[ok], 0.95)) if ok.any() else float("nan"),
        "pixels_mostly_outside": int((per_pixel > 0.5).sum()),
        "n_reference_rows": int(app.reference.shape[0]),
    }


def _applicability_text(a: dict[str, Any]) -> list[str]:
    """The report's section on where the product extrapolates."""
    head = ["## Where the emulator extrapolates (area of applicability)", ""]
    if not a:
        return [*head, "The model carries no applicability reference: the product has no `di`.", ""]
    return [
        *head,
        (
            f"Every pixel-day of the product carries `di`, the dissimilarity index of its pixel-mean features to "
            f"the {a['n_reference_rows']:,} training station-days, and the `outside_aoa` bit of `quality_flag` where "
            f"di > {a['threshold']:.3f} (the largest non-outlier cross-validated DI of the training rows). "
            f"{100 * a['outside_fraction']:.1f} % of {a['n']:,} pixel-days lie outside the area of applicability "
            f"(median di {a['di_median']:.3f}, 95th percentile {a['di_q95']:.3f}); "
            f"{a['pixels_mostly_outside']} pixel(s) are outside on most days. Values there are extrapolations: "
            "use them with the flag."
        ),
        "",
        *_lpd_text(a.get("lpd") or {}),
    ]


def _lpd_text(lpd: dict[str, Any]) -> list[str]:
    """The local point density inside and outside the AOA (Schumacher et al. 2025)."""
    if not lpd:
        return []
    tr = lpd["train"]
    rows = [
        f"| {k} the AOA | {v['n']:,} | {v['median']:.0f} | {v['q05']:.0f} | {100 * v['zero_fraction']:.1f} % |"
        for k, v in ((k, lpd[k]) for k in ("inside", "outside"))
        if v.get("n")
    ]
    return [
        (
            "`lpd` (local point density, Schumacher et al. 2025): how many of the training station-days lie within "
            f"the AOA threshold of each pixel-day's features ({'exact' if tr['exact'] else 'approximate'}; the "
            f"training rows' own LPD, counting other stations only: mean {tr['avrg_lpd']}, max {tr['max_lpd']}). "
            "A value inside the AOA that rests on few training days is less certain than the DI alone says."
        ),
        "",
        "| pixel-days | n | median LPD | 5th percentile | LPD = 0 |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
    ]


def _footprint_text(fp: dict[str, Any]) -> list[str]:
    """The report's section on the depth and radius each value represents."""
    if "d86" not in fp:
        return []
    d = fp["d86"]
    lines = [
        "## What depth the value represents",
        "",
        (
            f"Each pixel-day's `sm` is a CRNS-like average over the top D86 = {d['median']:.1f} cm of soil (median; "
            f"quartiles {d['q25']:.1f}–{d['q75']:.1f} cm over {d['n']:,} pixel-days): the depth holding 86 % of the "
            "signal at 1 m from a sensor (Köhli et al. 2015, Schrön et al. 2017), shallower when wet; the product's "
            "`d86` variable gives it per pixel-day."
        ),
    ]
    if "r86" in fp:
        r = fp["r86"]
        lines.append(
            f"The footprint radius R86 is {r['median']:.0f} m (quartiles {r['q25']:.0f}–{r['q75']:.0f} m; `r86`)."
        )
    else:
        lines.append(f"No `r86`: {fp['inputs'].get('r86', 'no humidity layer')}.")
    lines += [f"Inputs: {', '.join(f'{k}: {v}' for k, v in fp['inputs'].items() if k != 'r86')}.", ""]
    return lines


def _pooled(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    from smengine.metrics import bias, pearson_r, rmse, ubrmse

    p, r = np.asarray(pred, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    ok = np.isfinite(p) & np.isfinite(r)
    return {
        "n": int(ok.sum()),
        "RMSE": rmse(p[ok], r[ok]),
        "ubRMSE": ubrmse(p[ok], r[ok]),
        "bias": bias(p[ok], r[ok]),
        "R": pearson_r(p[ok], r[ok]),
    }


def _pixel_mean(a: np.ndarray, s: int) -> np.ndarray:
    """(..., Y, X) sub-pixel raster → (..., Y/s, X/s) pixel mean (NaN if any sub-pixel is NaN)."""
    *lead, Y, X = a.shape
    return a.reshape(*lead, Y // s, s, X // s, s).mean(axis=(-3, -1))


def run_demo(
    out_dir: str | Path = "smengine-demo",
    *,
    quick: bool = False,
    seed: int = 0,
    progress: Callable[[str], Any] | None = None,
    n_threads: int | None = None,
    scaling: bool | None = None,
) -> DemoResult:
    """Run the demonstration chain on the twin world and write ``report.md`` (see the module docstring).

    Parameters
    ----------
    out_dir : path
        Output folder (created). The twin world and tiles are cached inside it, so a rerun
        only redoes the modelling.
    quick : bool
        The small twin (20 km × 20 km, 1 year) and 100 trees without the hyper-parameter
        search: about a minute on 2 cores. Otherwise the default twin (60 km, 2 years),
        300 trees and the search.
    seed : int
        Seed of the twin world and of every fit.
    progress : callable, optional
        Called with the name of each step as it starts (the CLI draws a bar).
    n_threads : int, optional
        Threads for the engine and the forest.
    scaling : bool, optional
        Also run the sub-pixel scaling experiment (:func:`smengine.twin.scaling_experiment`:
        four heterogeneity levels × k = 4, 10 on quick twins; 10–20 minutes on 2 cores) into
        ``scaling/``, with its table, plot and reading in the report. Default: without
        ``quick`` only.

    Returns
    -------
    DemoResult
    """
    from smengine.engine import run
    from smengine.evaluate import (
        monthly_bias,
        pixel_mean_prediction,
        plot_monthly_bias,
        plot_pit_histogram,
        plot_scatter,
        plot_timeseries,
        product_scores,
        site_scores,
    )
    from smengine.features import FeatureBuilder, FeatureSpec, training_table
    from smengine.ingest import ingest
    from smengine.model import train
    from smengine.product import open_product
    from smengine.pseudoproxy import era5_land_theta_eq, pixel_scores, run_pseudoproxy, station_pixels
    from smengine.tiles import TileStore
    from smengine.twin import make_world

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    res = DemoResult(out, out / "report.md")
    clock: dict[str, float] = res.timings

    def step(name: str) -> None:
        clock[name] = time.perf_counter()
        if progress is not None:
            progress(name)
        log.info("demo: %s", name)

    def done(name: str) -> None:
        clock[name] = time.perf_counter() - clock[name]

    # 0-2 ---------------------------------------------------------------- footprint, world, tiles
    from smengine.demo import _footprint

    step("footprint physics")
    fp_report = _footprint.run(out / "footprint", quick=True)
    res.files.append(fp_report)
    done("footprint physics")
    step("twin world")
    world = make_world(seed, out / "twin", quick=quick)
    done("twin world")
    step("ingest")
    paths = ingest(world.sources(), world.grid, out / "tiles")
    stores = [TileStore.open(p) for p in paths]
    done("ingest")
    grid = world.grid
    s = grid.subpixel

    # 3-4 ---------------------------------------------------------------- table, forest
    step("training table")
    spec = FeatureSpec(**DEMO_SPEC)
    ss = world.read_stations()
    table = training_table(ss, stores, spec, kernel_quantum=(2.0, 0.02, 5.0))
    names = list(table.attrs["features"])
    done("training table")
    step("train")
    n_trees = 100 if quick else 300
    forest = train(
        table, names, cv=("site",), search=not quick, n_estimators=n_trees, random_state=seed, n_jobs=n_threads or -1
    )
    cf = forest.compile()
    model_path = cf.save(out / "model.smf.h5")
    atomic_write(out / "model_card.md", forest.card.to_markdown().encode())
    done("train")

    # 5 ------------------------------------------------------------------- product
    step("product")
    result = run(paths, cf, out / "product", file_days=400, n_threads=n_threads, resume=False, footprint=True, lpd=True)
    res.files += list(result.written)
    days = world.days
    Py, Px = grid.shape
    # the twin is one tile: read its product back for scoring
    tile_files = sorted(p for p in result.written if p.parent.name == stores[0].tile_id)
    prod = {
        v: np.concatenate([open_product(p)[v].values for p in tile_files])
        for v in ("sm", "sm_uncertainty", "d86", "r86", "di", "lpd", "quality_flag")
        if v in open_product(tile_files[0])
    }
    res.footprint = _footprint_summary(prod, open_product(tile_files[0]))
    res.applicability = _applicability_summary(prod, cf)
    done("product")

    # 6 ------------------------------------------------------------------- against the truth
    step("truth scores")
    truth = world.truth().sel(time=days.astype("datetime64[ns]")).values.astype(np.float32)
    st0 = stores[0]
    fb = FeatureBuilder(st0, spec)
    sw = fb.swi()
    # f(mean_j x_j): numeric features averaged over the pixel's valid sub-pixels, land cover by majority
    base = pixel_mean_prediction(fb, names, cf, swi=sw, n_threads=n_threads).astype(np.float32)
    smap_px = np.stack([_pixel_mean(st0.coarse["smap_sm"].expand(t), s) for t in range(days.size)])
    s1_px = np.stack([_pixel_mean(a, s) for a in fb.source_series("s1_sm")])  # however the tile stores it
    por_px = _pixel_mean(np.asarray(st0.static[st0.static_names.index("porosity")]), s)
    era5_px = era5_land_theta_eq(world.paths["era5"], grid, days, np.clip((1.0 - por_px) * 2.65, 0.8, 2.0))
    rows = {
        "emulator, sub-pixel scaling mean_j f(x_j)": _pooled(prod["sm"], truth),
        "emulator on pixel-mean covariates f(mean_j x_j)": _pooled(base, truth),
        "SMAP-like surface SM (9 km)": _pooled(smap_px, truth),
        "S1-like surface SM (1 km, every 3rd day)": _pooled(s1_px, truth),
        "ERA5-Land-like θ_eq (0.1°)": _pooled(era5_px, truth),
    }
    truth_scores = pd.DataFrame.from_dict(rows, orient="index")
    res.truth_scores = truth_scores
    # per pixel: each pixel's time series against its truth, then the median over pixels
    res.truth_pixel = pd.DataFrame(
        {
            name: pixel_scores(a, truth, days, min_obs=30)[["R", "ubRMSE", "bias"]].median()
            for name, a in zip(rows, (prod["sm"], base, smap_px, s1_px, era5_px), strict=True)
        }
    ).T
    res.differences = _differences(
        prod["sm"],
        {"pixel-mean covariates": base, "SMAP-like": smap_px, "S1-like": s1_px, "ERA5-Land-like": era5_px},
        truth,
    )
    res.uncertainty = _uncertainty(prod["sm"], prod["sm_uncertainty"], truth)
    res.di_error = _di_error(forest, prod, truth)
    figs: dict[str, Path] = {
        "pit": plot_pit_histogram(
            res.uncertainty["pit_histogram"], out / "pit_histogram.png", "PIT of the truth under N(sm, sm_uncertainty²)"
        )
    }
    done("truth scores")

    # 7 ------------------------------------------------------------------- stations
    step("station scores")
    lso = forest.cv_predictions[forest.cv_predictions["scheme"] == "site"]
    lso = lso.rename(columns={"target": "obs", "prediction": "pred"})[["station", "date", "obs", "pred"]]
    res.site_scores = site_scores(lso, min_obs=20)
    pix = station_pixels(grid, world.stations)
    st_rows = []
    for sid, g in table.groupby("station"):
        r, c = pix[sid]
        ti = np.searchsorted(days, g["date"].to_numpy().astype("datetime64[D]"))
        st_rows.append(
            pd.DataFrame(
                {
                    "station": sid,
                    "date": g["date"].to_numpy(),
                    "obs": g["target"].to_numpy(),
                    "S1-like": s1_px[ti, r, c],
                    "SMAP-like": smap_px[ti, r, c],
                    "ERA5-like θ_eq": era5_px[ti, r, c],
                }
            )
        )
    prod_table = pd.concat(st_rows, ignore_index=True)
    # surface products have gaps: run the filter over their own daily series at the stations
    full = []
    for sid in prod_table["station"].unique():
        r, c = pix[sid]
        obs = prod_table[prod_table["station"] == sid].set_index("date")["obs"]
        f = pd.DataFrame(
            {
                "station": sid,
                "date": pd.DatetimeIndex(days.astype("datetime64[ns]")),
                "S1-like": s1_px[:, r, c],
                "SMAP-like": smap_px[:, r, c],
                "ERA5-like θ_eq": era5_px[:, r, c],
            }
        )
        f["obs"] = obs.reindex(f["date"]).to_numpy()
        full.append(f)
    full_t = pd.concat(full, ignore_index=True)
    res.product_scores = product_scores(full_t, ["S1-like", "SMAP-like", "ERA5-like θ_eq"], min_obs=20)
    res.station_comparisons = _station_comparisons(lso, full_t, res.product_scores)
    by_month, trend = monthly_bias(lso)
    figs["scatter"] = plot_scatter(
        lso,
        out / "lso_scatter.png",
        title=f"every station-day, {_split_name(forest).short} prediction",
        xlabel="CRNS θ",
        ylabel="emulator θ",
    )
    split = _split_name(forest)
    figs["monthly_bias"] = plot_monthly_bias(
        by_month, out / "monthly_bias.png", f"emulator ({split.short}) − CRNS by month (bars: ±1 SD of daily errors)"
    )
    med = res.site_scores.drop(index="median")
    best, worst = med["R"].idxmax(), med["R"].idxmin()
    both = lso.merge(prod_table[["station", "date", "SMAP-like"]], on=["station", "date"], how="left")
    labels = {"obs": "CRNS", "pred": f"emulator ({split.short})", "SMAP-like": "SMAP-like surface SM"}
    for which, sid in (("best", best), ("worst", worst)):
        figs[which] = plot_timeseries(
            both,
            sid,
            out / f"station_{which}.png",
            ("obs", "pred", "SMAP-like"),
            title=f"{which} station by R: {sid} (R = {med.loc[sid, 'R']:.2f}, ubRMSE = {med.loc[sid, 'ubRMSE']:.3f})",
            labels=labels,
        )
    done("station scores")

    # 8 ------------------------------------------------------------------- pseudoproxy
    step("pseudoproxy")
    est = forest.estimator  # the same hyper-parameters as the CRNS forest
    ppr = run_pseudoproxy(
        table,
        names,
        st0,
        era5_px,
        days,
        world.stations,
        spec=spec,
        swi=sw,
        n_estimators=n_trees,
        max_features=est.max_features,
        min_samples_leaf=est.min_samples_leaf,
        random_state=seed,
        n_threads=n_threads,
        distance_bins=(0, 1.5, 3, 5, 10, 100),
    )
    res.pseudoproxy = {"by_distance": ppr.by_distance, "by_DI": ppr.by_DI, "aoa": ppr.aoa_table, **ppr.summary}
    figs["pseudoproxy"] = _plot_pseudoproxy(ppr.scores, grid, world.stations, out / "pseudoproxy_skill.png")
    figs["map"] = _plot_maps(prod["sm"], truth, base, days, grid, world.stations, out / "map_day.png")
    done("pseudoproxy")

    # 8b ------------------------------------------------------------------ which CV estimate to believe
    from smengine.twin import cv_study, plot_cv_study

    step("cv estimates")
    res.cv_study = cv_study(  # quick: 50 trees a fit (15 fits and 2 products); the CV estimates barely move
        table, names, st0, truth, world.station_truth(), world.stations, n_estimators=50 if quick else n_trees,
        seed=seed, n_threads=n_threads,
    )  # fmt: skip
    figs["cv"] = plot_cv_study(res.cv_study, out / "cv_estimates.png")
    done("cv estimates")

    # 9 ------------------------------------------------------------------- sub-pixel scaling
    if (not quick) if scaling is None else scaling:
        from smengine.twin import plot_scaling, scaling_experiment

        step(SCALING_STEP)
        res.scaling = scaling_experiment(out / "scaling", seed=seed, quick=True, n_threads=n_threads)
        atomic_write(out / "scaling" / "table.csv", res.scaling.to_csv(index=False).encode())
        figs["scaling"] = plot_scaling(res.scaling, out / "scaling_gain.png")
        done(SCALING_STEP)

    # 10 ------------------------------------------------------------------ report
    step("report")
    res.files += [model_path, out / "model_card.md", *figs.values()]
    text = _report(res, world, table, forest, result, by_month, trend, figs, quick, n_trees, names)
    atomic_write(res.report, text.encode())
    done("report")  # before summary.json, which would otherwise hold the step's start time as its duration
    atomic_write(out / "summary.json", json.dumps(_summary(res), indent=1, sort_keys=True, default=float).encode())
    return res


def _summary(res: DemoResult) -> dict[str, Any]:
    return {
        "timings_s": res.timings,
        "truth": res.truth_scores.to_dict(orient="index") if res.truth_scores is not None else {},
        "site_median": res.site_scores.loc["median"].to_dict() if res.site_scores is not None else {},
        "pseudoproxy": {k: v for k, v in res.pseudoproxy.items() if not isinstance(v, pd.DataFrame)},
        "uncertainty": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in res.uncertainty.items()},
        "footprint": res.footprint,
        "differences": res.differences,
        "scaling": res.scaling.to_dict(orient="records") if res.scaling is not None else None,
        "applicability": res.applicability,
        "station_comparisons": [
            {"product": e["product"], "variant": e["variant"], **e["comparison"].to_dict()}
            for e in res.station_comparisons
        ],
        "cv_study": res.cv_study.table.to_dict(orient="records") if res.cv_study is not None else None,
        "di_error": res.di_error,
        "truth_per_pixel": res.truth_pixel.to_dict(orient="index") if res.truth_pixel is not None else {},
        "products_at_stations": (
            {f"{p} / {v}": row[["R", "ubRMSE", "bias"]].to_dict() for (p, v), row in res.product_scores.iterrows()}
            if res.product_scores is not None
            else {}
        ),
    }


def _uncertainty(sm: np.ndarray, spread: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Coverage, PIT histogram and calibration factor of the forest spread against the truth (pixel-days)."""
    from smengine.evaluate import pit_histogram, pit_values, spread_calibration, spread_coverage

    u: dict[str, Any] = spread_coverage(sm, spread, truth)
    c = spread_calibration(sm, spread, truth)
    pit = pit_values(sm, spread, truth)
    u["calibration_factor"] = c
    u["pit_histogram"] = pit_histogram(pit, bins=10)
    u["pit_mean"] = float(np.nanmean(pit)) if np.isfinite(pit).any() else float("nan")
    scaled = spread_coverage(sm, c * spread, truth) if np.isfinite(c) else {}
    u["calibrated_coverage_1"] = scaled.get("coverage_1", float("nan"))
    u["calibrated_coverage_2"] = scaled.get("coverage_2", float("nan"))
    return u


def _uncertainty_text(u: dict[str, Any]) -> list[str]:
    """The report's section on the forest spread; the interpretation follows from the numbers."""
    n, dropped, c = int(u["n"]), int(u["n_no_spread"]), u["calibration_factor"]
    if n == 0 or not np.isfinite(c):
        verdict = "No pixel-day has a finite sm, truth and positive spread: the spread cannot be checked."
    else:
        if 0.9 <= c <= 1.1:
            kind = "about calibrated"
        elif c > 1.1:
            kind = "too narrow (overconfident)"
        else:
            kind = "too wide (underconfident)"
        verdict = (
            f"The forest spread is {kind}: {100 * u['coverage_1']:.0f} % of the true θ_eq lie within ±1 spread "
            f"against {100 * u['nominal_1']:.0f} % for a calibrated Gaussian spread, so sm_uncertainty × {c:.2f} "
            f"would be calibrated (coverage then {100 * u['calibrated_coverage_1']:.0f} % / "
            f"{100 * u['calibrated_coverage_2']:.0f} %)"
        )
        pm = u["pit_mean"]
        if abs(pm - 0.5) > 0.05:
            verdict += f"; the PIT mean is {pm:.2f}, so the truth lies mostly {'above' if pm > 0.5 else 'below'} sm."
        else:
            verdict += "."
    hist = " ".join(f"{v:.3f}" for v in u["pit_histogram"])
    return [
        "## Is the uncertainty layer calibrated?",
        "",
        (
            "sm_uncertainty (the forest spread, SD over trees averaged over the sub-pixels) against the twin's "
            f"true 1-km θ_eq, over {n} pixel-days; {dropped} pixel-days with a finite sm and truth but a missing "
            "or zero spread are left out."
        ),
        "",
        "| | within ±1 spread | within ±2 spread |",
        "|---|---|---|",
        f"| observed | {u['coverage_1']:.3f} | {u['coverage_2']:.3f} |",
        f"| nominal (Gaussian) | {u['nominal_1']:.3f} | {u['nominal_2']:.3f} |",
        f"| with c × spread | {u['calibrated_coverage_1']:.3f} | {u['calibrated_coverage_2']:.3f} |",
        "",
        (
            f"Calibration factor c = RMS((truth − sm) / spread) = {c:.3f} (1 = calibrated). "
            f"PIT histogram (10 bins, flat = {0.1:.3f} each): {hist}."
        ),
        "",
        verdict,
        "",
    ]


def _plot_pseudoproxy(scores: pd.DataFrame, grid: Any, stations: pd.DataFrame, path: Path) -> Path:
    """Off-site skill of the pseudoproxy forest: against distance, against DI, and as a map."""
    from smengine.evaluate import _plt, _save

    plt = _plt()
    off = scores[~scores["station_pixel"]]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4.2), layout="constrained")
    a.plot(off["distance_km"], off["R"], ".", ms=3, alpha=0.6)
    a.set_xlabel("distance to nearest station (km)")
    a.set_ylabel("temporal R vs ERA5-like θ_eq")
    a.set_title("each dot: one off-site pixel's time series", fontsize=9)
    col = np.where(off["inside_AOA"], "tab:blue", "tab:red")
    b.scatter(off["DI"], off["ubRMSE"], s=6, c=col)
    b.set_xlabel("dissimilarity index (median over the sampled days)")
    b.set_ylabel("ubRMSE (m³ m⁻³)")
    b.set_title("blue: inside, red: outside the area of applicability", fontsize=9)
    km = 1000.0
    img = np.full(grid.shape, np.nan)
    img[off["row"].to_numpy(), off["col"].to_numpy()] = off["ubRMSE"].to_numpy()
    extent = (
        grid.xmin / km,
        (grid.xmin + grid.width * grid.resolution) / km,
        (grid.ymax - grid.height * grid.resolution) / km,
        grid.ymax / km,
    )
    im = c.imshow(img, cmap="magma_r", extent=extent)
    c.plot(stations["x"] / km, stations["y"] / km, "c^", ms=4, mfc="none", mew=0.9)
    c.set_xlabel(f"easting (km, {grid.crs})")
    c.set_ylabel("northing (km)")
    c.set_title("off-site ubRMSE per pixel (▲ stations, their pixels blank)", fontsize=9)
    fig.colorbar(im, ax=c, label="ubRMSE (m³ m⁻³)", shrink=0.85)
    fig.suptitle("pseudoproxy: a forest trained on ERA5-like θ_eq at the stations, scored at every other pixel")
    return _save(fig, path)


def _plot_maps(
    sm: np.ndarray, truth: np.ndarray, base: np.ndarray, days: np.ndarray, grid: Any, stations: pd.DataFrame, path: Path
) -> Path:
    """The most heterogeneous day: truth, emulator, pixel-mean covariates (top) and their
    differences (bottom), on the grid's coordinates (km) with the stations marked."""
    from smengine.evaluate import _plt, _save

    plt = _plt()
    t = int(np.nanargmax(np.nanstd(truth.reshape(truth.shape[0], -1), axis=1)))  # the most heterogeneous day
    km = 1000.0
    extent = (
        grid.xmin / km,
        (grid.xmin + grid.width * grid.resolution) / km,
        (grid.ymax - grid.height * grid.resolution) / km,
        grid.ymax / km,
    )
    fig, ax = plt.subplots(2, 3, figsize=(12, 7.4), sharex=True, sharey=True)
    lo, hi = np.nanmin(truth[t]), np.nanmax(truth[t])
    top = (
        ("true θ_eq (twin)", truth[t]),
        ("emulator: mean_j f(x_j)", sm[t]),
        ("forest on pixel means: f(mean_j x_j)", base[t]),
    )
    for a, (title, img) in zip(ax[0], top, strict=True):
        im = a.imshow(img, vmin=lo, vmax=hi, cmap="YlGnBu", extent=extent)
        a.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax[0], label="θ (m³ m⁻³)", shrink=0.85)
    diffs = (
        ("emulator − truth", sm[t] - truth[t]),
        ("f(mean_j x_j) − truth", base[t] - truth[t]),
        ("emulator − f(mean_j x_j) (sub-pixel effect)", sm[t] - base[t]),
    )
    d = max(float(np.nanmax(np.abs(np.stack([v for _, v in diffs])))), 1e-6)
    for a, (title, img) in zip(ax[1], diffs, strict=True):
        im2 = a.imshow(img, vmin=-d, vmax=d, cmap="RdBu", extent=extent)
        a.set_title(title, fontsize=10)
        a.set_xlabel("easting (km, " + grid.crs + ")")
    fig.colorbar(im2, ax=ax[1], label="difference (m³ m⁻³)", shrink=0.85)
    for a in ax[:, 0]:
        a.set_ylabel("northing (km)")
    for a in ax.flat:
        a.plot(stations["x"] / km, stations["y"] / km, "k^", ms=4, mfc="none", mew=0.8)
    fig.suptitle(f"{days[t]} (the day with the largest spatial spread of the truth); ▲ CRNS stations")
    return _save(fig, path)


def _scaling_text(table: pd.DataFrame | None, figs: dict[str, Path]) -> list[str]:
    """The report's section on where sub-pixel scaling matters (the heterogeneity experiment)."""
    head = ["## Where sub-pixel scaling matters", ""]
    if table is None:
        return [
            *head,
            "Not run here (it takes 10–20 minutes): `smengine demo --scaling` or `smengine scaling` runs the "
            "experiment on twins of growing field-scale heterogeneity (`smengine.twin.scaling_experiment`).",
            "",
        ]
    from smengine.twin import scaling_report

    return [*head, scaling_report(table), "", f"![sub-pixel scaling]({figs['scaling'].name})", ""]


def _twin_text(world: Any) -> list[str]:
    """What the twin world is, from its configuration."""
    c = world.config
    lc = world.stations["land_cover"].value_counts()
    return [
        "## The twin world",
        "",
        (
            f"A synthetic world with a known truth (`smengine.twin`): a {c.size_km} km × {c.size_km} km square of "
            f"EPSG:3035 at {c.fine_resolution:g}-m resolution (elevation, TWI, sand/clay → Saxton–Rawls soil "
            "hydraulics, five land covers), a six-layer bucket soil-water model (0–120 cm) forced by correlated "
            f"daily precipitation ({c.annual_precip_mm:g} mm a⁻¹, correlation length {c.precip_corr_km:g} km) and "
            "Hargreaves evaporation, and from it the files a user has: a Sentinel-1-like surface SM at 1 km every "
            f"{c.s1_revisit_days} days (noise SD {c.s1_noise:g} m³ m⁻³), a SMAP-like surface SM at 9 km "
            f"({100 * c.smap_missing_fraction:.0f} % of days missing, noise SD {c.smap_noise:g}), NDVI- and LST-like "
            "1-km fields, the 1-km precipitation, an ERA5-Land-like 0.1° run of the same bucket model with soil "
            f"parameters shifted by {c.era5_theta_offset:+g} m³ m⁻³ (a wet bias) and precipitation × "
            f"{c.era5_precip_factor:g}, and {len(world.stations)} CRNS stations in the COSMOS-Europe layout "
            "(hourly neutron counts with counting noise from their N0, converted back by the package; land covers: "
            + ", ".join(f"{k} {v}" for k, v in lc.items())
            + f"). Sub-pixels: {c.subpixel} × {c.subpixel} per 1-km pixel."
        ),
        "",
    ]


def _terms_text() -> list[str]:
    """Definitions of every term the report uses."""
    from smengine._glossary import glossary

    keys = ("theta_eq", "subpixel", "pixelmean", "pooled", "scores", "anomaly_r", "grouped_cv", "nested", "di")
    return glossary((*keys, "spread", "d86", "pseudoproxy", "bootstrap", "paired", "station_bootstrap", "knndm", "lpd"))


def _station_comparisons(lso: pd.DataFrame, full: pd.DataFrame, ps: pd.DataFrame) -> list[dict[str, Any]]:
    """The emulator (station CV) against each input product's best variant at the stations: paired
    per-station comparisons on R and ubRMSE with 95 % intervals (:func:`smengine.evaluate.paired_station_ci`)."""
    from smengine.evaluate import _filtered, paired_station_ci

    out = []
    full = full.reset_index(drop=True)
    for prod in dict.fromkeys(ps.index.get_level_values(0)):
        rows = ps.loc[prod]
        variant = str(rows["R"].idxmax())  # the product's best variant at the stations
        T = rows.loc[variant, "T"]
        series = full[prod].to_numpy() if not np.isfinite(T) else _filtered(full, prod, [float(T)])[0]
        t = full[["station", "date"]].assign(product=series)
        t = lso.merge(t, on=["station", "date"], how="inner")
        for metric in ("R", "ubRMSE"):
            c = paired_station_ci(t, "pred", "product", "obs", metric=metric, min_obs=20)
            out.append({"product": prod, "variant": variant, "comparison": c})
    return out


def _beats_text(res: DemoResult) -> list[str]:
    """Where an input product beats the emulator at the stations (by paired intervals), and why."""
    ts, tp = res.truth_scores, res.truth_pixel
    assert ts is not None and tp is not None
    why = {
        "ERA5-like θ_eq": (
            "it is a run of the same soil-water model forced by the twin's own precipitation, so at one place its "
            "wetting and drying follow the same weather as the truth; its 0.1° cells and wet-biased soil cannot "
            "place the wet and dry pixels, which shows as its bias and its pooled skill"
        ),
        "SMAP-like": (
            "the exponential filter turns a noisy surface signal into a profile-like series whose timing follows "
            "the weather; at 9 km it cannot resolve pixels, which shows in its pooled skill"
        ),
        "S1-like": (
            "the exponential filter turns a noisy surface signal into a profile-like series whose timing follows "
            "the weather; its noise and 3-day revisit limit it elsewhere"
        ),
    }
    pooled_name = {
        "ERA5-like θ_eq": "ERA5-Land-like θ_eq (0.1°)",
        "SMAP-like": "SMAP-like surface SM (9 km)",
        "S1-like": "S1-like surface SM (1 km, every 3rd day)",
    }
    out = [
        "## Where an input product beats the emulator",
        "",
        "Paired comparisons at the stations: the emulator's station-CV prediction (A) against each product's best "
        "variant at the stations (B), on the same station-days; Δ = metric(A) − metric(B), 95 % intervals over "
        "stations and their 30-day blocks (see Terms). A product beats the emulator only where the interval says so.",
        "",
        "| product (best variant) | metric | verdict (emulator) | mean per-station Δ | 95 % interval | wins | ties "
        "| losses |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for e in res.station_comparisons:
        c = e["comparison"]
        k = c.counts
        ci = f"{c.ci_low:+.4f} … {c.ci_high:+.4f}" if np.isfinite(c.ci_low) and np.isfinite(c.ci_high) else "–"
        out.append(
            f"| {e['product']} ({e['variant']}) | {c.metric} | **{c.verdict}** | {c.difference:+.4f} | {ci} | "
            f"{k['win']} | {k['tie']} | {k['loss']} |"
        )
    out.append("")
    beaten = {}
    for e in res.station_comparisons:
        if e["comparison"].verdict == "loses":
            beaten.setdefault(e["product"], []).append(e)
    for prod, es in beaten.items():
        name = pooled_name.get(prod)
        tail = ""
        if name in ts.index and name in tp.index:
            px, e_px = tp.loc[name], tp.iloc[0]
            tail = (
                f" Against the 1-km truth, per pixel: temporal R {px['R']:.3f} vs the emulator's {e_px['R']:.3f}, "
                f"ubRMSE {px['ubRMSE']:.4f} vs {e_px['ubRMSE']:.4f}, bias {px['bias']:+.4f} vs {e_px['bias']:+.4f}; "
                f"pooled over pixel-days: RMSE {ts.loc[name, 'RMSE']:.4f} vs {ts.iloc[0]['RMSE']:.4f} m³ m⁻³, "
                f"R {ts.loc[name, 'R']:.3f} vs {ts.iloc[0]['R']:.3f}."
            )
        labels = {"pred": "the emulator", "product": prod}
        out.append(
            f"- **{prod}** ({es[0]['variant']}) beats the emulator at the stations: "
            + " ".join(e["comparison"].sentence(labels) for e in es)
            + f" Why: {why.get(prod, 'see its row above')}.{tail}"
        )
    if not beaten:
        out.append(
            "No input product beats the emulator at the stations: on every metric the emulator beats the product "
            "or the two tie (the interval holds 0)."
        )
    out += [
        "",
        "The emulator's station scores are out-of-sample (each station predicted without its own data); the "
        "products' are not fitted to the stations at all, so both are fair at the stations. Per-station R and "
        "ubRMSE measure timing and amplitude of one series only; the emulator's edge is in placing each pixel's "
        "level (bias and spatial pattern), which the pooled and per-pixel tables against the truth measure. "
        "Where a product's timing is better than the emulator's, it is information the forest does not have: "
        "ERA5-Land-like θ_eq is not among the demo's covariates (it is the pseudoproxy's target); as a covariate "
        "it would carry that timing into the emulator, at the cost of the pseudoproxy's independence.",
        "",
    ]
    return out


def _di_error(forest: Any, prod: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, Any]:
    """The CV error against the DI (CAST's DItoErrormetric) and, per DI bin of the product, the expected
    error it gives next to the true error against the twin's truth."""
    from smengine.evaluate import di_error_model

    app = forest.applicability
    if app is None or "di" not in prod:
        return {}
    site = forest.cv_predictions[forest.cv_predictions["scheme"] == "site"]
    model = di_error_model(site["prediction"], site["target"], app.train_di, threshold=app.threshold)
    di = prod["di"].astype(np.float64)
    ok = np.isfinite(di) & np.isfinite(prod["sm"]) & np.isfinite(truth)
    exp = model.predict(di)
    edges = np.unique(np.quantile(di[ok], [0, 0.25, 0.5, 0.75, 0.95, 1.0]))
    rows = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        m = ok & (di >= a) & ((di < b) if b < edges[-1] else (di <= b))
        if not m.any():
            continue
        rows.append(
            {
                "di_low": float(a),
                "di_high": float(b),
                "n": int(m.sum()),
                "expected_rmse": float(np.sqrt(np.mean(exp[m] ** 2))),
                "true_rmse": float(np.sqrt(np.mean((prod["sm"][m] - truth[m]) ** 2))),
                "outside_aoa": float(np.mean(di[m] > app.threshold)),
            }
        )
    return {"model": model.to_dict(), "by_product_di": rows, "threshold": float(app.threshold)}


def _di_error_text(d: dict[str, Any], figs: dict[str, Path]) -> list[str]:
    head = ["## What the DI says about the error", ""]
    if not d:
        return [*head, "The model carries no applicability reference: no DI, no expected error.", ""]
    bins = d["model"]["bins"]
    lines = [
        *head,
        (
            "The station-CV error of the training rows against their cross-validated DI (CAST's `DItoErrormetric`, "
            f"Meyer & Pebesma 2021): rows inside the AOA (DI ≤ {d['threshold']:.3f}) in {len(bins)} equal-count DI "
            "bins, RMSE per bin, an isotonic (monotone) fit; `smengine.evaluate.di_error_model`. The fit maps each "
            "pixel-day's `di` to an expected error; beyond the largest training DI "
            f"({d['model']['di_max']:.3f}) it is held constant, a floor, not an estimate."
        ),
        "",
        "| DI bin (training rows) | rows | CV RMSE | monotone fit |",
        "|---|---:|---:|---:|",
        *[
            f"| {b['di_low']:.3f} – {b['di_high']:.3f} | {int(b['n'])} | {b['value']:.4f} | {b['fitted']:.4f} |"
            for b in bins
        ],
        "",
        "The product's pixel-days by their DI (quartiles, 95th percentile): the expected error from the fit and the "
        "true error against the twin's θ_eq:",
        "",
        "| product DI | pixel-days | expected RMSE | true RMSE | outside AOA |",
        "|---|---:|---:|---:|---:|",
        *[
            f"| {r['di_low']:.3f} – {r['di_high']:.3f} | {r['n']:,} | {r['expected_rmse']:.4f} | "
            f"{r['true_rmse']:.4f} | {100 * r['outside_aoa']:.0f} % |"
            for r in d["by_product_di"]
        ],
        "",
    ]
    rows = d["by_product_di"]
    inside = [r for r in rows if r["outside_aoa"] < 0.5]
    outside = [r for r in rows if r["outside_aoa"] >= 0.5]
    if inside:
        worst = max(inside, key=lambda r: abs(r["expected_rmse"] - r["true_rmse"]))
        lines.append(
            f"Inside the AOA the expected error is within {abs(worst['expected_rmse'] - worst['true_rmse']):.4f} "
            "m³ m⁻³ of the true error in every bin, and it grows with the DI as the true error does."
        )
    if outside:
        o = outside[-1]
        lines.append(
            f"Outside it (DI {o['di_low']:.3f} – {o['di_high']:.3f}) the true error is {o['true_rmse']:.4f} against "
            f"the fit's floor of {o['expected_rmse']:.4f}: the DI-error model cannot extrapolate either; use the "
            "`outside_aoa` flag there, not the expected error."
        )
    return [*lines, ""]


def _cv_text(study: Any, figs: dict[str, Path]) -> list[str]:
    from smengine.twin import cv_study_report

    head = ["## Which cross-validation estimate to believe", ""]
    if study is None:
        return []
    return [
        *head,
        (
            "The product's real error at pixels without a station is known on the twin, so the CV estimates can be "
            "checked: random k-fold over station-days, grouped by station, and kNNDM (Linnenbrink et al. 2024; "
            "folds matched to the distances from the product's pixels to the stations), each with "
            f"k = {study.table.attrs.get('k')} folds and the same forest ({study.table.attrs.get('n_estimators')} "
            "trees, no search), for all stations and for a clustered network (the 40 % of stations nearest the "
            "south-west corner) predicting the whole domain (`smengine.twin.cv_study`)."
        ),
        "",
        cv_study_report(study),
        "",
        f"![CV estimates]({figs['cv'].name})",
        "",
    ]


def _headline_text(res: DemoResult, sub: pd.Series, mean: pd.Series, ts: pd.DataFrame) -> str:
    """The pooled RMSE comparison against the truth, in words that only claim what the intervals allow."""
    d = res.differences
    say = {"beats": "beats", "loses": "loses to", "ties": "ties with"}

    def one(k: str) -> str:
        v = d.get(k, {})
        return f"{say.get(v.get('verdict', ''), 'cannot be compared with')} {k}"

    return (
        f"Sub-pixel scaling RMSE {sub['RMSE']:.4f} vs pixel-mean covariates {mean['RMSE']:.4f} m³ m⁻³; "
        f"SMAP-like {ts.iloc[2]['RMSE']:.4f}, ERA5-Land-like {ts.iloc[4]['RMSE']:.4f}. By the intervals below, the "
        f"emulator {one('pixel-mean covariates')}, {one('SMAP-like')}, {one('S1-like')} and {one('ERA5-Land-like')}."
    )


def _md(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A DataFrame as a Markdown table (integers as integers, NaN as –)."""

    def fmt(v: Any) -> str:
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v))
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, (float, np.floating)):
            if not np.isfinite(v):
                return "–"
            x = float(v)
            return str(int(x)) if x.is_integer() and abs(x) >= 1 else format(x, floatfmt)
        return str(v)

    idx = [" / ".join(map(str, i)) if isinstance(i, tuple) else str(i) for i in df.index]
    lines = ["| " + " | ".join(["", *map(str, df.columns)]) + " |", "|" + "---|" * (len(df.columns) + 1)]
    for name, row in zip(idx, df.itertuples(index=False), strict=True):
        lines.append("| " + " | ".join([name, *(fmt(v) for v in row)]) + " |")
    return "\n".join(lines)


def _report(
    res: DemoResult,
    world: Any,
    table: pd.DataFrame,
    forest: Any,
    result: Any,
    by_month: pd.DataFrame,
    trend: dict[str, float],
    figs: dict[str, Path],
    quick: bool,
    n_trees: int,
    names: list[str],
) -> str:
    import smengine

    ts = res.truth_scores
    assert ts is not None and res.site_scores is not None and res.product_scores is not None
    sub, mean = ts.iloc[0], ts.iloc[1]
    pp = res.pseudoproxy
    lines = [
        "# smengine demo: the twin world, end to end",
        "",
        (
            f"smengine {smengine.__version__}; {'quick' if quick else 'default'} twin, seed {world.seed}: "
            f"{world.grid.width} km × {world.grid.height} km, {world.days.size} days "
            f"({world.days[0]} … {world.days[-1]}), "
            f"{len(world.stations)} CRNS stations; {n_trees} trees; {len(names)} features."
        ),
        "",
        *_twin_text(world),
        *_terms_text(),
        "## Timings (s)",
        "",
        "| step | s |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in res.timings.items() if k != "report"],
        "",
        "## Against the twin's truth (true 1-km θ_eq)",
        "",
        "Pooled over all pixel-days (space and time together):",
        "",
        _md(ts),
        "",
        "Per pixel (each pixel's time series against its truth; median over pixels with ≥ 30 days):",
        "",
        _md(res.truth_pixel, ".4f") if res.truth_pixel is not None else "",
        "",
        _headline_text(res, sub, mean, ts),
        "",
        *_differences_text(res.differences),
        f"![maps]({figs['map'].name})",
        "",
        *_scaling_text(res.scaling, figs),
        *_uncertainty_text(res.uncertainty),
        f"![PIT histogram]({figs['pit'].name})",
        "",
        *_footprint_text(res.footprint),
        *_applicability_text(res.applicability),
        *_di_error_text(res.di_error, figs),
        f"## At the stations: {_split_name(forest).short} predictions vs CRNS",
        "",
        _split_name(forest).long,
        "",
        "Per station (each station's time series); the last row is the median over stations:",
        "",
        _md(res.site_scores),
        "",
        f"![scatter]({figs['scatter'].name})",
        f"![best station]({figs['best'].name})",
        f"![worst station]({figs['worst'].name})",
        "",
        *_cv_text(res.cv_study, figs),
        "## Input products vs CRNS (median over stations; raw and exponential filter at the best T)",
        "",
        _md(res.product_scores),
        "",
        *_beats_text(res),
        f"## Bias by month (emulator, {_split_name(forest).short} − CRNS)",
        "",
        _md(by_month, ".4f"),
        "",
        (
            f"Trend of the bias with one offset per calendar month: {trend['slope_per_year']:.4f} m³ m⁻³ per year "
            f"(p = {trend['p_value']:.2g}, {int(trend['n_months'])} months)."
            if np.isfinite(trend["slope_per_year"])
            else f"Trend of the bias: not defined with {int(trend['n_months'])} months (needs more than one year)."
        ),
        "",
        f"![monthly bias]({figs['monthly_bias'].name})",
        "",
        "## Pseudoproxy (ERA5-Land-like θ_eq as the target, ERA5 not a predictor)",
        "",
        (
            f"{pp['n_offsite']} off-site pixels: median R {pp['median_R_offsite']:.3f}, median ubRMSE "
            f"{pp['median_ubRMSE_offsite']:.4f} m³ m⁻³. AOA threshold DI = {pp['threshold']:.3f}; "
            f"{100 * pp['inside_fraction']:.0f} % of pixel-days (weekly sample, pixel-mean features) inside the area "
            "of applicability. DI bins are the quartiles of the off-site pixels' median DI."
        ),
        "",
        "By distance to the nearest station (km):",
        "",
        _md(pp["by_distance"]),
        "",
        "By dissimilarity index:",
        "",
        _md(pp["by_DI"]),
        "",
        "Inside vs outside the AOA (medians):",
        "",
        _md(pp["aoa"]),
        "",
        f"![pseudoproxy]({figs['pseudoproxy'].name})",
        "",
        "## Files",
        "",
        f"- product: {', '.join(str(p.relative_to(res.out_dir)) for p in result.written)} (CF-1.8 NetCDF)",
        "- model: model.smf.h5 (compiled forest with its card), model_card.md",
        "- footprint physics (R86/D86 tables, a kernel, footprint averaging): footprint/report.md",
        f"- training table: {len(table)} station-days; twin world and tiles cached in twin/ and tiles/",
        "",
    ]
    return "\n".join(lines)
