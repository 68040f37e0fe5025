"""``smengine run``: from a user's files to the daily product, with a run configuration.

Four steps, each resumable and each also a command of its own:

1. ``ingest`` — :func:`smengine.ingest.ingest` of every ``[[sources]]`` onto the
   ``[domain]`` grid into ``<out>/tiles/`` (incremental: new days and new sources are
   added to existing tiles).
2. ``table`` — the ``[stations]`` read with their format's reader, daily values
   (:meth:`~smengine.stations.StationSet.daily`) and the footprint-weighted features of
   ``[features]`` (:func:`smengine.features.training_table`), written with units and
   sources to ``<out>/table.nc`` (:func:`smengine.features.write_table`).
3. ``train`` — :func:`smengine.model.train` with ``[model]``, compiled to
   ``<out>/model.smf.h5`` with ``<out>/model_card.md``.
4. ``predict`` — :func:`smengine.engine.run` over the tiles into ``<out>/product/``.

``<out>/run.json`` records what each step's output was made from (the configuration
sections, and the size and modification time of its input files). A rerun skips a step
whose record matches and redoes one whose inputs changed; a product made by another model
is rewritten, never mixed with the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smengine._days import day_range
from smengine._io import atomic_write
from smengine.config import RunConfig
from smengine.errors import ConfigError, DataError

__all__ = ["STEPS", "PipelineResult", "run_pipeline"]

log = logging.getLogger(__name__)

STEPS = ("ingest", "table", "train", "predict")


@dataclass
class PipelineResult:
    """What :func:`run_pipeline` did: per step ``"done"`` or ``"skipped"``, its wall time (s)
    and outputs."""

    status: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


def _files_key(paths: Iterable[Path]) -> list[list[Any]]:
    """(path, size, mtime_ns) of every file (folders: every file below them), sorted."""
    out = []
    for p in paths:
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for q in files:
            st = q.stat()
            out.append([str(q), st.st_size, st.st_mtime_ns])
    return sorted(out)


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class _Manifest:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    def current(self, step: str, key: str, outputs: Sequence[Path]) -> bool:
        rec = self.data.get(step)
        return bool(rec and rec.get("inputs") == key and all(p.exists() for p in outputs))

    def record(self, step: str, key: str, outputs: Sequence[Path]) -> None:
        self.data[step] = {
            "inputs": key,
            "outputs": [str(p) for p in outputs],
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        atomic_write(self.path, json.dumps(self.data, indent=1).encode())


def run_pipeline(
    config: RunConfig,
    steps: Sequence[str] = STEPS,
    *,
    overwrite: bool = False,
    n_threads: int | None = None,
    progress: Callable[[str], Any] | None = None,
) -> PipelineResult:
    """Run the steps of a run configuration (see the module docstring).

    Parameters
    ----------
    config : RunConfig
        From :func:`smengine.config.load_config`.
    steps : sequence of {"ingest", "table", "train", "predict"}
        Steps to run, in this order (default all).
    overwrite : bool
        Redo every step from scratch (default: resume; skip what is current).
    n_threads : int, optional
        Threads for training and the engine (default all cores).
    progress : callable, optional
        Called with each step's name as it starts.

    Returns
    -------
    PipelineResult

    Raises
    ------
    ConfigError
        For an unknown step or a configuration that lacks what a step needs; the
        errors of each step (DataError naming the file, ...) pass through.
    """
    bad = [s for s in steps if s not in STEPS]
    if bad:
        raise ConfigError(f"unknown step(s) {bad}; choose from {list(STEPS)}")
    cfg = config
    # every section the steps need, before the first step runs (not after an hour of ingest)
    needs = {"ingest": ("domain", "sources"), "table": ("stations",)}
    cfg.require(*dict.fromkeys(sec for s in steps for sec in needs.get(s, ())))
    try:
        cfg.out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cfg.out):
            pass
    except (FileExistsError, NotADirectoryError) as exc:
        why = f"{exc.filename} is a file, not a folder"
        raise DataError(f"{cfg.out}: cannot write the run's outputs there ([output] dir): {why}") from exc
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise DataError(f"{cfg.out}: cannot write the run's outputs there ([output] dir): {why}") from exc
    man = _Manifest(cfg.out / "run.json")
    res = PipelineResult()
    changed = overwrite

    def begin(step: str) -> float:
        if progress is not None:
            progress(step)
        log.info("run: %s", step)
        return time.perf_counter()

    def tiles() -> list[Path]:
        paths = sorted(cfg.tiles_dir.glob("*.h5"))
        if not paths:
            raise ConfigError(f"no tiles in {cfg.tiles_dir}: run the ingest step first")
        return paths

    if "ingest" in steps:
        t0 = begin("ingest")
        from smengine.ingest import ingest

        cfg.require("domain", "sources")
        days = day_range(cfg.start, cfg.end, what="[period]") if cfg.start and cfg.end else None
        paths = ingest(
            cfg.source_specs(),
            cfg.grid,
            cfg.tiles_dir,
            days=days,
            overwrite=overwrite,  # type: ignore[arg-type]
            progress=True,
        )
        res.status["ingest"], res.outputs["ingest"] = "done", paths
        res.seconds["ingest"] = time.perf_counter() - t0

    if "table" in steps:
        t0 = begin("table")
        cfg.require("stations")
        st_path = cfg.path(cfg.stations["path"])
        meta = cfg.stations.get("metadata")
        key = _fingerprint(
            cfg.section_json("stations", "features"),
            _files_key(tiles()),
            _files_key([st_path] + ([cfg.path(meta)] if meta else [])),
        )
        if not changed and man.current("table", key, [cfg.table_path]):
            res.status["table"] = "skipped"
        else:
            from smengine.config import STATION_READER_KEYS
            from smengine.features import training_table, write_table
            from smengine.stations import open_stations
            from smengine.tiles import TileStore

            layout = {k: cfg.stations[k] for k in STATION_READER_KEYS if k in cfg.stations}
            ss = open_stations(st_path, cfg.stations.get("format"), metadata=cfg.path(meta) if meta else None, **layout)
            if len(ss) == 0:
                raise ConfigError(f"no station read from {st_path} (format {cfg.stations.get('format', 'guessed')})")
            stores = [TileStore.open(p) for p in tiles()]
            q = cfg.stations.get("kernel_quantum")
            table = training_table(
                ss,
                stores,
                cfg.features,
                min_hours=float(cfg.stations["min_hours"]),
                kernel_quantum=tuple(q) if q else None,
            )
            write_table(table, cfg.table_path)
            man.record("table", key, [cfg.table_path])
            res.status["table"] = "done"
            changed = True
        res.outputs["table"] = cfg.table_path
        res.seconds["table"] = time.perf_counter() - t0

    if "train" in steps:
        t0 = begin("train")
        card = cfg.out / "model_card.md"
        key = _fingerprint(cfg.section_json("model"), _files_key([cfg.table_path]) if cfg.table_path.exists() else None)
        if not changed and man.current("train", key, [cfg.model_path, card]):
            res.status["train"] = "skipped"
        else:
            from smengine.features import read_table
            from smengine.model import train

            table = read_table(cfg.table_path)
            m = cfg.model
            kw = {k: m[k] for k in ("max_features", "min_samples_leaf") if k in m}
            forest = train(
                table,
                cv=tuple(m["cv"]),
                search=bool(m["search"]),
                n_estimators=int(m["trees"]),
                random_state=int(m["seed"]),
                n_jobs=n_threads or -1,
                progress=True,
                **kw,
            )
            forest.compile().save(cfg.model_path)
            atomic_write(card, forest.card.to_markdown().encode())
            man.record("train", key, [cfg.model_path, card])
            res.status["train"] = "done"
            changed = True
        res.outputs["train"] = cfg.model_path
        res.seconds["train"] = time.perf_counter() - t0

    if "predict" in steps:
        t0 = begin("predict")
        from smengine.engine import run

        p = cfg.predict
        key = _fingerprint(cfg.section_json("predict", "period"), _files_key([cfg.model_path]))
        resume = not changed and man.data.get("predict", {}).get("inputs") == key
        if not resume and cfg.product_dir.exists() and any(cfg.product_dir.iterdir()):
            log.warning(
                "run: the model or the predict settings changed since %s was written: it is rewritten", cfg.product_dir
            )
        days = slice(cfg.start, cfg.end) if (cfg.start or cfg.end) else None
        out = run(
            tiles(),
            cfg.model_path,
            cfg.product_dir,
            days,
            file_days=int(p["file_days"]),
            resume=resume,
            min_valid_fraction=float(p["min_valid"]),
            n_threads=n_threads,
            chunk_days=int(p["chunk_days"]),
            format=p["format"],
        )
        man.record("predict", key, [cfg.product_dir])
        res.status["predict"] = "done" if out.written else "skipped"
        res.outputs["predict"] = out
        res.seconds["predict"] = time.perf_counter() - t0
    return res
