"""The tree models side by side on the twin: station CV, the product against the truth, pseudoproxy off-site.

:func:`model_study` trains the Random Forest, LightGBM boosting and the hybrid (a linear base
plus boosted trees on its residuals; :data:`smengine.model.MODELS`) on the same twin
training table, makes each one's 1-km product through the compiled engine, and measures what
station cross-validation cannot: the product's error against the twin's true θ_eq over every
pixel-day, and the pseudoproxy experiment's skill at pixels without a station. A gain that
holds only at the stations is a station artefact; one that holds against the truth and off
site is not. Every "A beats B" comes from a 95 % interval (block bootstrap), never from a
difference of medians.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine._io import atomic_write
from smengine.errors import ConfigError

__all__ = ["model_study", "model_study_report"]

log = logging.getLogger(__name__)

#: The models :func:`model_study` compares by default, and the reference the others are paired with.
STUDY_MODELS, REFERENCE = ("forest", "boosting", "hybrid"), "forest"


def model_study(
    out_dir: str | Path,
    *,
    models: Sequence[str] = STUDY_MODELS,
    seed: int = 0,
    quick: bool = True,
    twin_config: Any = None,
    n_trees: int | None = None,
    n_threads: int | None = None,
    n_boot: int = 1000,
    progress: Callable[[str], Any] | None = None,
) -> dict[str, Any]:
    """Each tree model on the twin world: station CV, product RMSE against the truth, pseudoproxy off-site skill.

    Every model gets the demo's :class:`~smengine.features.FeatureSpec` and the same
    station-days (:func:`smengine.features.training_table`); each is trained with
    :func:`smengine.model.train` (``model=...``, leave-site-out CV) and compiled into the
    engine, whose product over every pixel-day is scored against the twin's true θ_eq. In the
    pseudoproxy run each model is retrained on ERA5-Land-like θ_eq at the station pixels on the
    station-days and scored against it at the pixels without a station
    (:func:`smengine.pseudoproxy.pixel_scores`).

    Paired with :data:`REFERENCE` (the forest), with 95 % intervals: station CV per station
    (:func:`smengine.evaluate.paired_station_ci`, 30-day blocks), truth RMSE/ubRMSE/R over
    5 × 5-pixel × 30-day blocks (:func:`smengine.evaluate.metric_difference_ci`), off-site
    per-pixel R/ubRMSE over 5 × 5-pixel squares.

    Parameters
    ----------
    out_dir : path
        Output folder (twin, tiles, table, models, ``report.md``, ``summary.json``).
    models : sequence of str
        Models of :data:`smengine.model.MODELS` (default all three; the forest first).
    seed : int
        Seed of the twin and of every model.
    quick : bool
        The quick twin (20 km, 1 year; default) or the default one.
    twin_config : TwinConfig, optional
        Another twin; ``quick`` is then ignored.
    n_trees : int, optional
        Trees of the forest (default 100 quick, 300 otherwise); the boosted models keep their defaults.
    n_threads : int, optional
        Threads for training and the engine (default 1).
    n_boot : int
        Bootstrap resamples of every interval.
    progress : callable, optional
        Called with the name of each step.

    Returns
    -------
    dict
        The numbers of ``summary.json``: per model ``station_cv`` (median R, ubRMSE), ``truth``
        (pooled RMSE, ubRMSE, bias, R), ``pseudoproxy_offsite`` (median R, ubRMSE over pixels
        without a station), ``train_s``; ``paired[<model>]`` against the forest.
    """
    from smengine.demo import DEMO_SPEC
    from smengine.engine import predict
    from smengine.evaluate import metric_difference_ci, paired_station_ci, space_time_blocks
    from smengine.features import FeatureSpec, read_table, training_table, write_table
    from smengine.ingest import ingest
    from smengine.model import MODELS, train
    from smengine.nn._compare import _offsite, _offsite_scores, _pixel_paired_ci, _pooled
    from smengine.pseudoproxy import era5_land_theta_eq, station_pixels
    from smengine.tiles import TileStore
    from smengine.twin import make_world

    models = list(dict.fromkeys(models))
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise ConfigError(f"model_study: unknown model(s) {bad}; choose from {list(MODELS)}")
    if REFERENCE not in models:
        models.insert(0, REFERENCE)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda s: log.info("model study: %s", s))
    threads = n_threads or 1
    trees = n_trees or (100 if quick else 300)

    say("twin world")
    world = make_world(seed, out / "twin", twin_config, quick=quick)
    tiles = sorted((out / "tiles").glob("*.h5"))
    if not tiles:
        say("ingest")
        tiles = ingest(world.sources(), world.grid, out / "tiles")
    st0 = TileStore.open(tiles[0])
    spec = FeatureSpec(**DEMO_SPEC)
    tpath = out / "table.nc"
    if tpath.is_file():
        table = read_table(tpath)
    else:
        say("training table")
        table = training_table(world.read_stations(), [st0], spec, kernel_quantum=(2.0, 0.02, 5.0))
        write_table(table, tpath)
    names = list(table.attrs["features"])
    days = world.days
    grid = world.grid
    Py, Px = grid.shape
    truth = world.truth().sel(time=days.astype("datetime64[ns]")).values.astype(np.float32)
    s = grid.subpixel
    por = np.asarray(st0.static[st0.static_names.index("porosity")], np.float64)
    por_px = por.reshape(Py, s, Px, s).mean(axis=(1, 3))
    era5_px = era5_land_theta_eq(world.paths["era5"], grid, days, np.clip((1.0 - por_px) * 2.65, 0.8, 2.0))
    key = station_pixels(grid, world.stations.set_index("id").loc[table["station"].unique()])
    on = set(key.values())
    ti = np.searchsorted(days, table["date"].to_numpy().astype("datetime64[D]"))
    pp_table = table.copy()
    pp_table["target"] = [era5_px[t, key[sid][0], key[sid][1]] for t, sid in zip(ti, pp_table["station"], strict=True)]

    def fit(m: str, tab: pd.DataFrame, cv: tuple[str, ...]) -> Any:
        kw: dict[str, Any] = {"n_estimators": trees} if m == "forest" else {}
        return train(tab, names, cv=cv, search=False, model=m, random_state=seed, n_jobs=threads, progress=False, **kw)

    per: dict[str, dict[str, Any]] = {}
    products: dict[str, np.ndarray] = {}
    offsite: dict[str, pd.DataFrame] = {}
    cvp: dict[str, pd.DataFrame] = {}
    for m in models:
        say(f"train {m}")
        t0 = time.perf_counter()
        fitted = fit(m, table, ("site",))
        train_s = time.perf_counter() - t0
        cf = fitted.compile()
        cf.save(out / f"{m}.smf.h5")
        say(f"product {m}")
        products[m] = predict(st0, cf, days, n_threads=threads, di=False)["sm"].values
        say(f"pseudoproxy {m}")
        pp_cf = fit(m, pp_table, ()).compile()
        offsite[m] = _offsite_scores(
            predict(st0, pp_cf, days, n_threads=threads, di=False)["sm"].values, era5_px, days, on
        )
        c = fitted.cv_predictions
        c = c[c["scheme"] == "site"].rename(columns={"target": "obs", "prediction": m})
        cvp[m] = c[["station", "date", "obs", m]].assign(date=lambda d: pd.to_datetime(d["date"]))
        site = fitted.card.cv["site"].get("site_median") or {}
        per[m] = {
            "station_cv": {k: site.get(k) for k in ("R", "ubRMSE", "RMSE")},
            "truth": _pooled(products[m], truth),
            "pseudoproxy_offsite": _offsite(offsite[m]),
            "train_s": train_s,
            "content_hash": cf.content_hash,
        }
    say("paired comparisons")
    blocks = space_time_blocks(np.shape(truth), 5, 30)
    paired: dict[str, Any] = {}
    for m in models:
        if m == REFERENCE:
            continue
        pairs = cvp[m].merge(cvp[REFERENCE].drop(columns="obs"), on=["station", "date"])
        paired[m] = {
            "station_cv": {
                k: paired_station_ci(
                    pairs, m, REFERENCE, "obs", metric=k, block_days=30, n_boot=n_boot, seed=seed
                ).to_dict()
                for k in ("ubRMSE", "R")
            },
            "truth": {
                k: metric_difference_ci(
                    products[m], products[REFERENCE], truth, blocks, metric=k, n_boot=n_boot, seed=seed
                )
                for k in ("RMSE", "ubRMSE", "R")
            },
            "pseudoproxy_offsite": {
                k: _pixel_paired_ci(offsite[m], offsite[REFERENCE], k, n_boot=n_boot, seed=seed)
                for k in ("R", "ubRMSE")
            },
        }
    summary = {
        "twin": "given TwinConfig" if twin_config is not None else ("quick (20 km, 1 year)" if quick else "default"),
        "seed": seed,
        "models": models,
        "forest_trees": trees,
        "station_days": len(table),
        "stations": int(table["station"].nunique()),
        "features": names,
        "per_model": per,
        "reference": REFERENCE,
        "paired": paired,
    }
    atomic_write(out / "summary.json", json.dumps(summary, indent=1, sort_keys=True, default=float).encode())
    atomic_write(out / "report.md", model_study_report(summary).encode())
    return summary


def _ci(d: Mapping[str, Any], nd: int = 4) -> str:
    return f"{d['difference']:+.{nd}f} ({d['ci_low']:+.{nd}f} … {d['ci_high']:+.{nd}f}) → {d['verdict']}"


def model_study_report(summary: Mapping[str, Any]) -> str:
    """The markdown of :func:`model_study`'s summary: one table per view, then the paired verdicts."""
    per = summary["per_model"]
    ref = summary["reference"]
    L = [
        "# Tree models on the twin: forest, boosting, hybrid",
        "",
        f"Twin: {summary['twin']}, seed {summary['seed']}; {summary['stations']} stations, "
        f"{summary['station_days']} station-days; {len(summary['features'])} features; forest "
        f"{summary['forest_trees']} trees. Station CV: leave-site-out (grouped by station). Truth: the product over "
        "every pixel-day against the twin's θ_eq. Pseudoproxy: retrained on ERA5-Land-like θ_eq at the station "
        "pixels, scored against it at the pixels without a station.",
        "",
        "| model | station CV median R | ubRMSE | truth RMSE | truth ubRMSE | truth R | off-site median R | "
        "off-site ubRMSE | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m, v in per.items():
        cv, tr, ps = v["station_cv"], v["truth"], v["pseudoproxy_offsite"]

        def f(x: Any, nd: int = 3) -> str:
            return "–" if x is None or not np.isfinite(float(x)) else f"{float(x):.{nd}f}"

        L.append(
            f"| {m} | {f(cv['R'])} | {f(cv['ubRMSE'], 4)} | {f(tr['RMSE'], 4)} | {f(tr['ubRMSE'], 4)} | "
            f"{f(tr['R'])} | {f(ps['median_R_offsite'])} | {f(ps['median_ubRMSE_offsite'], 4)} | {v['train_s']:.1f} |"
        )
    L += ["", f"Paired against the {ref} (Δ = model − {ref}; 95 % interval; verdict on the model's side):", ""]
    for m, p in summary["paired"].items():
        cv, tr, ps = p["station_cv"], p["truth"], p["pseudoproxy_offsite"]
        L.append(
            f"- **{m}**: station CV ubRMSE {_ci(cv['ubRMSE'])}, R {_ci(cv['R'], 3)}; truth RMSE {_ci(tr['RMSE'])}, "
            f"ubRMSE {_ci(tr['ubRMSE'])}, R {_ci(tr['R'], 3)}; pseudoproxy off-site R {_ci(ps['R'], 3)}, "
            f"ubRMSE {_ci(ps['ubRMSE'])}."
        )
    return "\n".join(L) + "\n"
