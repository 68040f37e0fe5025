"""The spatial network and the forest side by side on the twin world, in one run."""

from __future__ import annotations

import inspect
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine._io import atomic_write

__all__ = ["compare_with_forest"]

log = logging.getLogger(__name__)


def _pooled(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    from smengine.metrics import bias, pearson_r, rmse, ubrmse

    p, r = np.asarray(pred, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    ok = np.isfinite(p) & np.isfinite(r)
    return {
        "n": int(ok.sum()),
        "RMSE": float(rmse(p[ok], r[ok])),
        "ubRMSE": float(ubrmse(p[ok], r[ok])),
        "bias": float(bias(p[ok], r[ok])),
        "R": float(pearson_r(p[ok], r[ok])),
    }


def _station_cv(cvp: pd.DataFrame, keep: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-station scores (and their median) of out-of-fold predictions, on the rows of ``keep``."""
    from smengine.evaluate import site_scores

    t = cvp[cvp["scheme"] == "site"].rename(columns={"target": "obs", "prediction": "pred"})
    t = t[["station", "date", "obs", "pred"]].copy()
    t["date"] = pd.to_datetime(t["date"])
    if keep is not None:
        t = t.merge(keep, on=["station", "date"], how="inner")
    return site_scores(t, min_obs=20)


def _offsite(pred: np.ndarray, ref: np.ndarray, days: np.ndarray, station_px: set[tuple[int, int]]) -> dict[str, float]:
    from smengine.pseudoproxy import pixel_scores

    sc = pixel_scores(pred, ref, days, min_obs=30)
    off = sc[[(r, c) not in station_px for r, c in zip(sc["row"], sc["col"], strict=True)]]
    return {
        "n_offsite": len(off),
        "median_R_offsite": float(off["R"].median()),
        "median_ubRMSE_offsite": float(off["ubRMSE"].median()),
    }


def _cost(store: Any, model: Any, days: np.ndarray, repeats: int = 2) -> float:
    """Inference cost, µs per pixel-day: the best of ``repeats`` wall times of
    :meth:`TileRunner.predict_arrays <smengine.engine.TileRunner.predict_arrays>` over ``days``
    on one thread (features, model and pixel statistics; no product writing)."""
    from smengine.engine import TileRunner

    Py, Px = store.grid.shape
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        TileRunner(store, model, n_threads=1).predict_arrays(days)
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / (days.size * Py * Px)


def _plot(f: np.ndarray, n: np.ndarray, truth: np.ndarray, x: np.ndarray, y: np.ndarray, day: Any, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ext = [x[0] / 1e3 - 0.5, x[-1] / 1e3 + 0.5, y[-1] / 1e3 - 0.5, y[0] / 1e3 + 0.5]
    lo = np.nanpercentile(np.concatenate([f.ravel(), n.ravel(), truth.ravel()]), 2)
    hi = np.nanpercentile(np.concatenate([f.ravel(), n.ravel(), truth.ravel()]), 98)
    d = n - f
    lim = float(np.nanmax(np.abs(d))) if np.isfinite(d).any() else 0.01
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.4), constrained_layout=True)
    panels = (
        (f, "Random forest (sub-pixel scaling)", "viridis_r", lo, hi),
        (n, "Spatial network (smengine.nn)", "viridis_r", lo, hi),
        (d, "Spatial network − forest", "RdBu", -lim, lim),
        (truth, "Twin truth θ_eq (1 km)", "viridis_r", lo, hi),
    )
    for ax, (a, title, cmap, vmin, vmax) in zip(axes, panels, strict=True):
        im = ax.imshow(a, extent=ext, origin="upper", cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(f"{title}\n{day}")
        ax.set_xlabel("x, EPSG:3035 (km)")
        ax.set_ylabel("y, EPSG:3035 (km)")
        fig.colorbar(im, ax=ax, shrink=0.85, label="soil moisture (m³ m⁻³)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare_with_forest(
    out_dir: str | Path,
    *,
    seed: int = 0,
    quick: bool = True,
    twin_config: Any = None,
    n_threads: int | None = None,
    nn_threads: int = 1,
    net: Mapping[str, Any] | None = None,
    n_trees: int | None = None,
    pretrain: bool = False,
    progress: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """The spatial network and the forest on the twin world, side by side in one run.

    Both models get the demo's :class:`~smengine.features.FeatureSpec`
    (:data:`smengine.demo.DEMO_SPEC`), the same tile and the same station-days, and both
    products go through :func:`smengine.engine.predict`. Measured:

    * station CV: grouped 5-fold CV by station (each station predicted by a model that never
      saw it; ``GroupKFold`` for both), median over stations of R and ubRMSE, on the
      station-days both models have;
    * RMSE (and ubRMSE, R, bias) of the 1-km product against the twin's true θ_eq over every
      pixel-day, and RMSE(network) − RMSE(forest) with a 95 % block-bootstrap interval;
    * the pseudoproxy experiment: each model retrained on ERA5-Land-like θ_eq at the
      station pixels on the station-days, applied everywhere and scored against it at the
      off-station pixels (median R, ubRMSE; :func:`smengine.pseudoproxy.run_pseudoproxy` for
      the forest, the same scores for the network);
    * training time (CV included) and inference cost per pixel-day.

    Writes ``report.md``, ``summary.json``, ``products_day.png`` (the two products, their
    difference and the truth on one day) and both models into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        Output folder; the twin world, tiles and training table are cached inside it.
    seed : int
        Seed of the twin and of both models.
    quick : bool
        The quick twin (20 km, 1 year; default) or the default one.
    twin_config : TwinConfig, optional
        Another twin (e.g. a heterogeneous one); ``quick`` is then ignored.
    n_threads : int, optional
        Threads for the forest and its engine (default 1).
    nn_threads : int
        PyTorch threads for the network (default 1: on a loaded machine more threads can be
        many times slower).
    net : dict, optional
        :class:`~smengine.nn.NetConfig` fields for the network.
    n_trees : int, optional
        Trees of the forest (default 100 quick, 300 otherwise).
    pretrain : bool
        Pre-train the network on ERA5-Land-like θ_eq everywhere (:func:`~smengine.nn.pseudo_patches`)
        before the station folds (never in its pseudoproxy run, where that target is the
        reference).
    progress : callable, optional
        Called with the name of each step.

    Returns
    -------
    dict
        The numbers of ``summary.json``.
    """
    import smengine.nn as snn
    from smengine.demo import DEMO_SPEC
    from smengine.engine import predict
    from smengine.evaluate import rmse_difference_ci, space_time_blocks
    from smengine.features import FeatureBuilder, FeatureSpec, read_table, training_table, write_table
    from smengine.ingest import ingest
    from smengine.model import train as train_forest
    from smengine.pseudoproxy import era5_land_theta_eq, run_pseudoproxy, station_pixels
    from smengine.tiles import TileStore
    from smengine.twin import make_world

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda s: log.info("compare: %s", s))
    times: dict[str, float] = {}
    threads = n_threads or 1

    say("twin world")
    world = make_world(seed, out / "twin", twin_config, quick=quick)
    tiles = sorted((out / "tiles").glob("*.h5"))
    if not tiles:
        say("ingest")
        tiles = ingest(world.sources(), world.grid, out / "tiles")
    stores = [TileStore.open(p) for p in tiles]
    st0 = stores[0]
    spec = FeatureSpec(**DEMO_SPEC)
    tpath = out / "table.nc"
    if tpath.is_file():
        table = read_table(tpath)
    else:
        say("training table")
        table = training_table(world.read_stations(), stores, spec, kernel_quantum=(2.0, 0.02, 5.0))
        write_table(table, tpath)
    names = list(table.attrs["features"])
    days = world.days
    grid = world.grid
    Py, Px = grid.shape
    trees = n_trees or (100 if quick else 300)

    say("train forest")
    t0 = time.perf_counter()
    forest = train_forest(
        table, names, cv=("site",), search=False, n_estimators=trees, random_state=seed, n_jobs=threads
    )
    cf = forest.compile()
    times["forest_train_s"] = time.perf_counter() - t0
    cf.save(out / "forest.smf.h5")

    s = grid.subpixel
    por = np.asarray(st0.static[st0.static_names.index("porosity")], np.float64)
    por_px = por.reshape(Py, s, Px, s).mean(axis=(1, 3))
    era5_px = era5_land_theta_eq(world.paths["era5"], grid, days, np.clip((1.0 - por_px) * 2.65, 0.8, 2.0))
    pre = None
    if pretrain:
        pre = snn.pseudo_patches(st0, era5_px, days, spec=spec, features=names, seed=seed)
    say("train spatial network")
    t0 = time.perf_counter()
    nnet = snn.train(table, stores, names, spec=spec, seed=seed, n_threads=nn_threads, pretrain=pre, **dict(net or {}))
    times["nn_train_s"] = time.perf_counter() - t0
    nnet.save(out / "network.smnn.pt")

    say("products")
    pixel_days = days.size * Py * Px
    t0 = time.perf_counter()
    # the forest's product without the dissimilarity index where the engine offers one: the
    # network computes none, so the costs compare the models alone
    no_di: dict[str, Any] = {"di": False} if "di" in inspect.signature(predict).parameters else {}
    ds_f = predict(st0, cf, days, n_threads=threads, **no_di)
    times["forest_predict_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds_n = predict(st0, nnet, days, n_threads=nn_threads)
    times["nn_predict_s"] = time.perf_counter() - t0
    sm_f, sm_n = ds_f["sm"].values, ds_n["sm"].values
    say("inference cost")
    cost_f = _cost(st0, cf, days)
    cost_n = _cost(st0, nnet, days)

    say("scores")
    truth = world.truth().sel(time=days.astype("datetime64[ns]")).values.astype(np.float32)
    blocks = space_time_blocks(truth.shape, 5, 30)
    truth_scores = {"forest": _pooled(sm_f, truth), "network": _pooled(sm_n, truth)}
    diff = rmse_difference_ci(sm_n, sm_f, truth, blocks, n_boot=1000, seed=0)
    common = (
        forest.cv_predictions[forest.cv_predictions["scheme"] == "site"][["station", "date"]]
        .assign(date=lambda d: pd.to_datetime(d["date"]))
        .merge(nnet.cv_predictions[["station", "date"]].assign(date=lambda d: pd.to_datetime(d["date"])))
        .drop_duplicates()
    )
    site_f = _station_cv(forest.cv_predictions, common)
    site_n = _station_cv(nnet.cv_predictions, common)

    say("pseudoproxy")
    sw = FeatureBuilder(st0, spec).swi()
    est = forest.estimator
    t0 = time.perf_counter()
    ppr = run_pseudoproxy(
        table,
        names,
        st0,
        era5_px,
        days,
        world.stations,
        spec=spec,
        swi=sw,
        n_estimators=trees,
        max_features=est.max_features,
        min_samples_leaf=est.min_samples_leaf,
        random_state=seed,
        n_threads=threads,
    )
    times["forest_pseudoproxy_s"] = time.perf_counter() - t0
    key = station_pixels(grid, world.stations.set_index("id").loc[table["station"].unique()])
    ti = np.searchsorted(days, table["date"].to_numpy().astype("datetime64[D]"))
    pp = table.copy()
    pp["target"] = [era5_px[t, key[sid][0], key[sid][1]] for t, sid in zip(ti, pp["station"], strict=True)]
    t0 = time.perf_counter()
    nn_pp = snn.train(pp, stores, names, spec=spec, seed=seed, n_threads=nn_threads, **dict(net or {}))
    _, arr = snn.NNTileRunner(st0, nn_pp, n_threads=nn_threads).predict_arrays(days)
    times["nn_pseudoproxy_s"] = time.perf_counter() - t0
    on = set(key.values())
    pseudo = {
        "forest": _offsite(ppr.prediction, era5_px, days, on),
        "network": _offsite(arr["sm"], era5_px, days, on),
    }

    say("plot and report")
    day_i = int(np.argmax(np.nanstd(truth.reshape(days.size, -1), axis=1)))  # the most heterogeneous day
    fig = _plot(
        sm_f[day_i],
        sm_n[day_i],
        truth[day_i],
        ds_f["x"].values,
        ds_f["y"].values,
        str(days[day_i]),
        out / "products_day.png",
    )
    summary = {
        "twin": "given TwinConfig" if twin_config is not None else ("quick (20 km, 1 year)" if quick else "default"),
        "seed": seed,
        "n_threads": threads,
        "nn_threads": nn_threads,
        "station_days": len(table),
        "stations": int(table["station"].nunique()),
        "station_cv": {
            "splitter": {
                "forest": forest.card.cv["site"]["splitter"],
                "network": nnet.card["cv"]["site"]["splitter"],
            },
            "rows_compared": len(common),
            "forest": {k: float(site_f.loc["median", k]) for k in ("R", "ubRMSE", "RMSE", "bias")},
            "network": {k: float(site_n.loc["median", k]) for k in ("R", "ubRMSE", "RMSE", "bias")},
        },
        "truth": truth_scores,
        "truth_rmse_difference_network_minus_forest": diff,
        "pseudoproxy_offsite": pseudo,
        "cost": {
            "pixel_days": pixel_days,
            "forest_train_s": times["forest_train_s"],
            "nn_train_s": times["nn_train_s"],
            "forest_us_per_pixel_day": cost_f,
            "nn_us_per_pixel_day": cost_n,
            "measured": "TileRunner.predict_arrays over every day of the tile on 1 thread, best of 2",
        },
        "timings_s": times,
        "network": {
            "card_hyperparameters": nnet.card["hyperparameters"],
            "epochs": nnet.card["cv"]["site"]["epochs"],
            "content_hash": nnet.content_hash,
        },
        "forest": {"trees": trees, "content_hash": cf.content_hash},
        "plot_day": str(days[day_i]),
        "figure": fig.name,
    }
    atomic_write(out / "summary.json", json.dumps(summary, indent=1, sort_keys=True, default=float).encode())
    atomic_write(out / "report.md", _report(summary).encode())
    return summary


def _wins(s: dict[str, Any]) -> list[str]:
    """One line per measure: which model is better, by how much."""
    cv, tr, pp, c = s["station_cv"], s["truth"], s["pseudoproxy_offsite"], s["cost"]
    rows = [
        ("station CV median R", cv["forest"]["R"], cv["network"]["R"], True),
        ("station CV median ubRMSE", cv["forest"]["ubRMSE"], cv["network"]["ubRMSE"], False),
        ("RMSE against the true θ_eq", tr["forest"]["RMSE"], tr["network"]["RMSE"], False),
        ("pseudoproxy off-site median R", pp["forest"]["median_R_offsite"], pp["network"]["median_R_offsite"], True),
        (
            "pseudoproxy off-site median ubRMSE",
            pp["forest"]["median_ubRMSE_offsite"],
            pp["network"]["median_ubRMSE_offsite"],
            False,
        ),
        ("training time", c["forest_train_s"], c["nn_train_s"], False),
        ("inference cost per pixel-day", c["forest_us_per_pixel_day"], c["nn_us_per_pixel_day"], False),
    ]
    out = []
    for name, f, n, higher in rows:
        better = "network" if (n > f) == higher and n != f else "forest" if n != f else "tie"
        out.append(f"* {name}: **{better}** (forest {f:.4g}, network {n:.4g})")
    return out


def _report(s: dict[str, Any]) -> str:
    cv, tr, pp, c = s["station_cv"], s["truth"], s["pseudoproxy_offsite"], s["cost"]
    d = s["truth_rmse_difference_network_minus_forest"]
    if d["ci_high"] < 0:
        verdict = "the network is closer to the truth"
    elif d["ci_low"] > 0:
        verdict = "the forest is closer to the truth"
    else:
        verdict = "no clear difference"
    lines = [
        "# Spatial network vs random forest on the twin",
        "",
        f"Twin: {s['twin']}, seed {s['seed']}; {s['station_days']:,} station-days at {s['stations']} stations; "
        f"{s['n_threads']} thread(s) for the forest, {s['nn_threads']} for PyTorch. Both models: the demo's "
        "FeatureSpec, the same tile and engine "
        "(`smengine.engine.predict`), product = mean of the sub-pixel predictions of each 1-km pixel.",
        "",
        "| | forest | spatial network |",
        "|---|---:|---:|",
        f"| station CV median R ({cv['splitter']['forest']}, {cv['rows_compared']:,} common station-days) | "
        f"{cv['forest']['R']:.3f} | {cv['network']['R']:.3f} |",
        f"| station CV median ubRMSE (m³ m⁻³) | {cv['forest']['ubRMSE']:.4f} | {cv['network']['ubRMSE']:.4f} |",
        f"| station CV median RMSE (m³ m⁻³) | {cv['forest']['RMSE']:.4f} | {cv['network']['RMSE']:.4f} |",
        f"| RMSE vs true 1-km θ_eq, all pixel-days (m³ m⁻³) | {tr['forest']['RMSE']:.4f} | "
        f"{tr['network']['RMSE']:.4f} |",
        f"| ubRMSE vs truth | {tr['forest']['ubRMSE']:.4f} | {tr['network']['ubRMSE']:.4f} |",
        f"| R vs truth | {tr['forest']['R']:.3f} | {tr['network']['R']:.3f} |",
        f"| bias vs truth | {tr['forest']['bias']:+.4f} | {tr['network']['bias']:+.4f} |",
        f"| pseudoproxy off-site median R (vs ERA5-Land-like θ_eq) | {pp['forest']['median_R_offsite']:.3f} | "
        f"{pp['network']['median_R_offsite']:.3f} |",
        f"| pseudoproxy off-site median ubRMSE | {pp['forest']['median_ubRMSE_offsite']:.4f} | "
        f"{pp['network']['median_ubRMSE_offsite']:.4f} |",
        f"| training time incl. CV (s) | {c['forest_train_s']:.1f} | {c['nn_train_s']:.1f} |",
        f"| inference (µs per pixel-day, 1 thread, {c['pixel_days']:,} pixel-days) | "
        f"{c['forest_us_per_pixel_day']:.2f} | "
        f"{c['nn_us_per_pixel_day']:.2f} |",
        "",
        f"RMSE(network) − RMSE(forest) against the truth: {d['difference']:+.4f} m³ m⁻³, 95 % block-bootstrap "
        f"interval {d['ci_low']:+.4f} … {d['ci_high']:+.4f} (5 × 5-pixel × 30-day blocks): {verdict}.",
        "",
        "## Which wins where",
        "",
        *_wins(s),
        "",
        "How the two differ by construction: the forest is trained on footprint-weighted averages of the features "
        "around each station (a fixed kernel) and applied to each sub-pixel's own features; the network is trained "
        "on the raw sub-pixel patches around the stations and applied to the same kind of patch at every "
        "sub-pixel, so it learns its own spatial weighting (and any dependence on the surroundings, e.g. upslope "
        "wetness) and sees the same feature scale in training and in the product.",
        "",
        f"![products]({s['figure']}) — the two products, their difference and the truth on {s['plot_day']} "
        "(the day with the most spatial variance of the truth).",
        "",
    ]
    return "\n".join(lines)
