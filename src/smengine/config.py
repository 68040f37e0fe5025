"""Run configuration: one TOML file from a user's files to the daily product.

A run configuration names the domain, the period, the covariate sources, the station set,
the features and the model; :func:`smengine.pipeline.run_pipeline` (``smengine run``) goes
from files to product with it, and each CLI step (``smengine ingest``, ``table``,
``train``, ``predict``) can read its own section with ``--config``. Relative paths are
relative to the configuration file's folder. Unknown keys are errors (a typo must not be
silently ignored).

Example (``smengine twin --out mydata`` writes this file for the twin's raw files)::

    [domain]                      # one of bounds (grid CRS, m) or lonlat_bounds (degrees)
    bounds = [4300000, 3080000, 4320000, 3100000]
    crs = "EPSG:3035"             # default; resolution 1000 m, subpixel 4, tile_size 100
    subpixel = 4

    [period]                      # optional; default: the sources' days
    start = "2019-01-01"
    end = "2019-12-31"

    [[sources]]                   # one table per covariate; a glob is one source
    name = "elevation"
    path = "static/elevation.tif"
    units = "m"                   # for files that state none (GeoTIFFs)

    [[sources]]
    name = "s1_sm"
    path = "s1/s1_sm_*.tif"       # daily GeoTIFFs, stacked along time

    [[sources]]
    name = "smap_sm"
    path = "smap/smap_l3_like.nc"
    variable = "soil_moisture"
    storage = "coarse"            # keep the 9-km cells with an index map

    [stations]
    format = "cosmos-europe"      # smengine.stations.FORMATS (default: guessed from path)
    path = "crns/COSMOS_Europe_Data_rev1"
    min_hours = 18

    [features]                    # smengine.features.FeatureSpec
    static = ["elevation", "twi", "sand", "clay"]
    dynamic = ["ndvi", "precipitation"]
    swi_of = ["s1_sm", "smap_sm"]
    swi_T = [5, 10, 20, 40]

    [model]                       # smengine.model.train
    trees = 100
    cv = ["site"]
    search = false

    [output]
    dir = "run"                   # tiles/, table.nc, model.smf.h5, product/ inside
"""

from __future__ import annotations

import glob
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smengine.errors import ConfigError, ValidationError
from smengine.features import FeatureSpec
from smengine.grid import Grid

__all__ = ["RunConfig", "SourceConfig", "expand_paths", "load_config"]

_DOMAIN_KEYS = {"bounds", "lonlat_bounds", "crs", "resolution", "subpixel", "tile_size"}
_SOURCE_KEYS = {"name", "path", "variable", "units", "storage", "method", "daily", "time"}
#: Reader options a [stations] section may pass on (the csv format's layout, snow masking).
STATION_READER_KEYS = ("time_column", "time_format", "timezone", "columns", "stations", "snow_mask")
_STATION_KEYS = {"format", "path", "metadata", "min_hours", "kernel_quantum", *STATION_READER_KEYS}
_MODEL_KEYS = {"trees", "cv", "search", "seed", "max_features", "min_samples_leaf"}
_PREDICT_KEYS = {"file_days", "chunk_days", "min_valid", "format"}
_SECTIONS = {"domain", "period", "sources", "stations", "features", "model", "predict", "output"}


def _check_keys(where: str, d: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def expand_paths(pattern: str | os.PathLike[str] | list[Any], base: Path | None = None) -> list[Path]:
    """Files of a path, a glob or a list of them (relative to ``base`` or the working folder;
    ``~`` expanded), as absolute paths, each glob's matches sorted.

    Raises
    ------
    ConfigError
        When a pattern matches nothing, naming it.
    """
    items = pattern if isinstance(pattern, list) else [pattern]
    out: list[Path] = []
    for item in items:
        p = Path(os.path.expanduser(str(item)))
        if base is not None and not p.is_absolute():
            p = base / p
        p = p.absolute()  # tiles record their source files: the same file, whatever the working folder
        if glob.has_magic(str(p)):
            hits = sorted(Path(h) for h in glob.glob(str(p)))
            if not hits:
                raise ConfigError(f"{item}: the pattern matches no file")
            out += hits
        else:
            out.append(p)
    return out


@dataclass(frozen=True)
class SourceConfig:
    """One covariate source: a path or glob (one source, stacked along time) and how to read it.

    The fields are those of :class:`smengine.ingest.SourceSpec`.
    """

    name: str
    path: str | list[str]
    variable: str | None = None
    units: str | None = None
    storage: str = "auto"
    method: str = "auto"
    daily: str | None = None
    time: str | None = None

    def spec(self, base: Path | None = None) -> Any:
        """The :class:`~smengine.ingest.SourceSpec` (paths expanded)."""
        from smengine.ingest import SourceSpec

        paths = expand_paths(self.path, base)
        return SourceSpec(
            paths[0] if len(paths) == 1 else paths,
            variable=self.variable,
            name=self.name,
            storage=self.storage,
            method=self.method,
            daily=self.daily,
            time=self.time,  # type: ignore[arg-type]
            units=self.units,
        )


@dataclass(frozen=True)
class RunConfig:
    """A parsed run configuration (see the module docstring for the file).

    Attributes
    ----------
    base : Path
        Folder that relative paths are relative to (the file's folder).
    grid : Grid or None
    start, end : str or None
        The period (UTC days, inclusive).
    sources : tuple of SourceConfig
    stations : dict
        ``path``, ``format`` (a :data:`smengine.stations.FORMATS` key; default guessed),
        ``metadata``, ``min_hours`` (default 18), ``kernel_quantum``, and the reader's layout
        options :data:`STATION_READER_KEYS` (``time_column``, ``time_format``, ``timezone``,
        ``columns`` — a table of file column → canonical name —, ``stations``, ``snow_mask``)
        for formats that take them (``csv``).
    features : FeatureSpec
    model : dict
        ``trees`` (100), ``cv`` (``["site"]``), ``search`` (False), ``seed`` (0),
        ``max_features``, ``min_samples_leaf``.
    predict : dict
        ``file_days`` (32), ``chunk_days`` (8), ``min_valid`` (0.5), ``format`` (netcdf).
    out : Path
        Output folder: ``tiles/``, ``table.nc``, ``model.smf.h5``, ``model_card.md``,
        ``product/`` and ``run.json`` (what each step was made from, for resuming).
    """

    base: Path
    grid: Grid | None
    start: str | None
    end: str | None
    sources: tuple[SourceConfig, ...]
    stations: dict[str, Any]
    features: FeatureSpec
    model: dict[str, Any]
    predict: dict[str, Any]
    out: Path
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], base: str | os.PathLike[str] = ".") -> RunConfig:
        """Parse the TOML tables (as a dict); ``base`` resolves relative paths."""
        base = Path(base).expanduser().resolve()
        _check_keys("run configuration", d, _SECTIONS)
        grid = _grid(d["domain"]) if "domain" in d else None
        period = dict(d.get("period", {}))
        _check_keys("[period]", period, {"start", "end"})
        srcs = []
        for i, s in enumerate(d.get("sources", [])):
            _check_keys(f"[[sources]] #{i + 1}", s, _SOURCE_KEYS)
            if "name" not in s or "path" not in s:
                raise ConfigError(f"[[sources]] #{i + 1}: 'name' and 'path' are required, got {sorted(s)}")
            srcs.append(SourceConfig(**s))
        names = [s.name for s in srcs]
        if len(set(names)) != len(names):
            raise ConfigError(f"[[sources]]: two sources share a name: {names}")
        st = dict(d.get("stations", {}))
        _check_keys("[stations]", st, _STATION_KEYS)
        st.setdefault("min_hours", 18.0)
        _check_stations(st)
        feats = dict(d.get("features", {}))
        try:
            spec = FeatureSpec.from_config(feats)
        except TypeError as exc:
            raise ConfigError(
                f"[features]: {exc} (keys: static, dynamic, coarse, swi_of, swi_T, calendar, swi_carry)"
            ) from exc
        model = {"trees": 100, "cv": ["site"], "search": False, "seed": 0, **d.get("model", {})}
        _check_keys("[model]", model, _MODEL_KEYS)
        _check_model(model)
        pred = {"file_days": 32, "chunk_days": 8, "min_valid": 0.5, "format": "netcdf", **d.get("predict", {})}
        _check_keys("[predict]", pred, _PREDICT_KEYS)
        _check_predict(pred)
        start, end = _day(period.get("start"), "start"), _day(period.get("end"), "end")
        if start and end and end < start:
            raise ConfigError(f"[period]: end {end} is before start {start}")
        output = dict(d.get("output", {}))
        _check_keys("[output]", output, {"dir"})
        out = Path(os.path.expanduser(str(output.get("dir", "smengine-run"))))
        return cls(
            base,
            grid,
            start,
            end,
            tuple(srcs),
            st,
            spec,
            model,
            pred,
            out if out.is_absolute() else base / out,
            dict(d),
        )

    def path(self, p: str | os.PathLike[str]) -> Path:
        """A path of the configuration, resolved against :attr:`base` (``~`` expanded)."""
        q = Path(os.path.expanduser(str(p)))
        return q if q.is_absolute() else self.base / q

    def source_specs(self) -> list[Any]:
        """The :class:`~smengine.ingest.SourceSpec` of every source."""
        return [s.spec(self.base) for s in self.sources]

    def require(self, *sections: str) -> None:
        """Raise a ConfigError naming the sections a step needs and the file lacks."""
        have = {"domain": self.grid is not None, "sources": bool(self.sources), "stations": "path" in self.stations}
        missing = [s for s in sections if not have.get(s, True)]
        if missing:
            what = ", ".join(
                "[[sources]]" if s == "sources" else f"[{s}] with a path" if s == "stations" else f"[{s}]"
                for s in missing
            )
            raise ConfigError(
                f"the run configuration needs {missing} for this step: it has no {what} (see smengine.config)"
            )

    @property
    def tiles_dir(self) -> Path:
        return self.out / "tiles"

    @property
    def table_path(self) -> Path:
        return self.out / "table.nc"

    @property
    def model_path(self) -> Path:
        return self.out / "model.smf.h5"

    @property
    def product_dir(self) -> Path:
        return self.out / "product"

    def section_json(self, *names: str) -> str:
        """The named sections as canonical JSON (what a step's output is made from)."""
        return json.dumps({n: self.raw.get(n) for n in names}, sort_keys=True, default=str)


def _day(v: Any, what: str) -> str | None:
    if v is None:
        return None
    from smengine._days import as_day

    try:
        return str(as_day(v, what=what))
    except ValidationError as exc:
        raise ConfigError(f"[period] {what} = {v!r} is not a date (YYYY-MM-DD)") from exc


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_stations(st: Mapping[str, Any]) -> None:
    from smengine.stations import FORMATS

    if "path" in st and not isinstance(st["path"], str):
        raise ConfigError(f"[stations] path should be a string (a file or folder), got {st['path']!r}")
    if "format" in st and st["format"] not in FORMATS:
        raise ConfigError(f"[stations] format = {st['format']!r} is unknown; choose from {', '.join(FORMATS)}")
    h = st["min_hours"]
    if not (_is_number(h) and 0 <= h <= 24):
        raise ConfigError(f"[stations] min_hours should be a number of hours within [0, 24], got {h!r}")
    for k in ("time_column", "time_format", "timezone"):
        if k in st and not (isinstance(st[k], str) and st[k]):
            raise ConfigError(f"[stations] {k} should be a non-empty string, got {st[k]!r}")
    cols = st.get("columns")
    if cols is not None and not (isinstance(cols, dict) and all(isinstance(v, str) for v in cols.values())):
        raise ConfigError(f'[stations] columns should be a table of file column = "canonical name", got {cols!r}')
    ids = st.get("stations")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(v, str) for v in ids)):
        raise ConfigError(f"[stations] stations should be a list of station ids, got {ids!r}")
    if "snow_mask" in st and not isinstance(st["snow_mask"], bool):
        raise ConfigError(f"[stations] snow_mask should be true or false, got {st['snow_mask']!r}")
    q = st.get("kernel_quantum")
    if q is not None and not (isinstance(q, list) and len(q) == 3 and all(_is_number(v) and v > 0 for v in q)):
        raise ConfigError(
            f"[stations] kernel_quantum should be 3 positive steps [humidity, theta, pressure], got {q!r}"
        )


def _check_model(m: Mapping[str, Any]) -> None:
    from smengine.model import CV_SCHEMES

    if not (_is_int(m["trees"]) and m["trees"] >= 1):
        raise ConfigError(f"[model] trees should be a whole number >= 1, got {m['trees']!r}")
    if not _is_int(m["seed"]):
        raise ConfigError(f"[model] seed should be a whole number, got {m['seed']!r}")
    if not isinstance(m["search"], bool):
        raise ConfigError(f"[model] search should be true or false, got {m['search']!r}")
    cv = m["cv"]
    if not (isinstance(cv, list) and all(c in CV_SCHEMES for c in cv)):
        raise ConfigError(f"[model] cv should be a list of {', '.join(CV_SCHEMES)}, got {m['cv']!r}")


def _check_predict(p: Mapping[str, Any]) -> None:
    for k in ("file_days", "chunk_days"):
        if not (_is_int(p[k]) and p[k] >= 1):
            raise ConfigError(f"[predict] {k} should be a whole number >= 1, got {p[k]!r}")
    if not (_is_number(p["min_valid"]) and 0 <= p["min_valid"] <= 1):
        raise ConfigError(f"[predict] min_valid should be a fraction within [0, 1], got {p['min_valid']!r}")
    if p["format"] not in ("netcdf", "zarr"):
        raise ConfigError(f"[predict] format should be 'netcdf' or 'zarr', got {p['format']!r}")


def _grid(d: Mapping[str, Any]) -> Grid:
    _check_keys("[domain]", d, _DOMAIN_KEYS)
    if ("bounds" in d) == ("lonlat_bounds" in d):
        raise ConfigError("[domain]: give exactly one of bounds (grid CRS, m) or lonlat_bounds (degrees)")
    kw = {k: d[k] for k in ("crs", "resolution", "subpixel", "tile_size") if k in d}
    b = d.get("bounds") or d["lonlat_bounds"]
    if not (isinstance(b, list) and len(b) == 4 and all(_is_number(v) for v in b)):
        which = "bounds" if "bounds" in d else "lonlat_bounds"
        order = "[xmin, ymin, xmax, ymax]" if "bounds" in d else "[west, south, east, north]"
        raise ConfigError(f"[domain]: {which} should be 4 numbers {order}, got {b!r}")
    return Grid.from_bounds(*b, **kw) if "bounds" in d else Grid.from_lonlat_bounds(*b, **kw)


def load_config(path: str | os.PathLike[str]) -> RunConfig:
    """Read a run configuration file (TOML).

    Raises
    ------
    ConfigError
        Naming the file and the key: TOML syntax, unknown keys, missing or bad values.
    """
    p = Path(path).expanduser()
    try:
        d = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{p}: no such configuration file") from exc
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{p}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}, offset {exc.start}); "
            "TOML files are UTF-8: re-save it as UTF-8"
        ) from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"{p}: a folder, not a configuration file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    try:
        return RunConfig.from_dict(d, p.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from exc
