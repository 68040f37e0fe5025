"""The ``smengine`` command line. Only this module talks to the terminal."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

import smengine
from smengine import footprint as fp
from smengine._days import as_day, day_range
from smengine.errors import ConfigError, DataError, SMEngineError, SMEngineWarning, ValidationError

log = logging.getLogger(__name__)


def _guessed(source: Path, fmt: str | None) -> str:
    """A hint for messages about a station source read with a guessed format."""
    if fmt is not None:
        return ""
    from smengine.stations import guess_format

    try:
        guessed = guess_format(source)
    except SMEngineError:  # the message of the error being reported says so already
        return ""
    return f" (format {guessed!r} guessed from it; choose the reader with --format)"


def _formats() -> tuple[str, ...]:
    from smengine.stations import FORMATS

    return tuple(FORMATS)


_READERS = _formats()


class _Path(click.Path):
    """``click.Path`` with ``~`` expanded: a path from a script, a config or quotes, not the shell."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (str, os.PathLike)):
            value = os.path.expanduser(os.fspath(value))
        return super().convert(value, param, ctx)


class _Day(click.ParamType):
    """A UTC day (``YYYY-MM-DD``, or an ISO time whose day is taken), passed on as ``YYYY-MM-DD``."""

    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return str(as_day(value, what=param.name if param else "day"))
        except SMEngineError:
            self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)


_DAY = _Day()


def _check_period(start: str | None, end: str | None) -> None:
    """A usage error when both days are given and ``end`` is before ``start``."""
    if start and end and as_day(end) < as_day(start):
        raise click.BadParameter(f"{end} is before --start {start}", param_hint="--end")


def _writable(path: Path, *, folder: bool, option: str = "--out") -> Path:
    """Make ``path`` (a folder) or its folder (a file) and check that a file can be created in it,
    before any work is done; a ClickException naming ``option``, the path and the cause otherwise."""
    import tempfile

    where = path if folder else path.parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=where):
            pass
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((p for p in [where, *where.parents] if p.exists() and not p.is_dir()), exc.filename)
        raise click.ClickException(f"{option} {path}: cannot write there: {blocker} is a file, not a folder") from exc
    except OSError as exc:
        raise click.ClickException(f"{option} {path}: cannot write there: {exc.strerror or exc}") from exc
    return path


class options:  # noqa: N801 - a namespace of shared click options (rasterio's rio/options.py)
    """The options several commands share, defined once."""

    threads = click.option("--threads", type=click.IntRange(min=1), help="Threads (default all cores).")
    seed = click.option("--seed", default=0, show_default=True, help="Seed (random_state) of every random step.")
    metadata = click.option(
        "--metadata",
        type=_Path(exists=True, path_type=Path),
        help="Station table, for the station formats that take one (csv, fuerstensee).",
    )

    @staticmethod
    def trees(default: int) -> Any:
        return click.option(
            "--trees", type=click.IntRange(min=1), default=default, show_default=True, help="Trees per forest."
        )

    @staticmethod
    def station_layout(f: Any) -> Any:
        """--time-column, --timezone, --column and --station: a station file's own layout (csv format)."""
        for opt in reversed(
            (
                click.option("--time-column", help="Name of the time column (csv format; default 'time')."),
                click.option(
                    "--timezone",
                    help="Zone of naive local times, e.g. 'America/Chicago' (csv format; default UTC).",
                ),
                click.option(
                    "--column",
                    "column_map",
                    multiple=True,
                    metavar="FILE=NAME",
                    help="Map a file column to a canonical name (sm, counts_raw, counts_corrected, pressure, …). "
                    "Repeatable.",
                ),
                click.option("--station", "station_ids", multiple=True, help="Read only this station (repeatable)."),
            )
        ):
            f = opt(f)
        return f

    @staticmethod
    def station_format(what: str) -> Any:
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(_READERS),
            help=f"Station reader for {what} (smengine.stations.FORMATS; default: guessed from it).",
        )


def _layout_kwargs(
    source: Path,
    fmt: str | None,
    time_column: str | None,
    timezone: str | None,
    column_map: tuple[str, ...],
    station_ids: tuple[str, ...],
) -> dict[str, Any]:
    """Reader keyword arguments from the station-layout options (only those given)."""
    import inspect

    from smengine.stations import FORMATS, guess_format

    kw: dict[str, Any] = {}
    if time_column:
        kw["time_column"] = time_column
    if timezone:
        kw["timezone"] = timezone
    if column_map:
        pairs = {}
        for item in column_map:
            file_col, sep, name = item.partition("=")
            if not sep or not file_col.strip() or not name.strip():
                raise click.BadParameter(
                    f"{item!r} should be FILE=NAME (e.g. N1_corr=counts_corrected)", param_hint="--column"
                )
            pairs[file_col.strip()] = name.strip()
        kw["columns"] = pairs
    if station_ids:
        kw["stations"] = list(station_ids)
    if kw:
        name = fmt or guess_format(source)
        accepted = inspect.signature(FORMATS[name]).parameters
        extra = [k for k in kw if k not in accepted]
        if extra:
            flags = {
                "time_column": "--time-column",
                "timezone": "--timezone",
                "columns": "--column",
                "stations": "--station",
            }
            raise click.UsageError(
                f"{', '.join(flags[k] for k in extra)}: not taken by the {name} reader (the csv format takes them)"
            )
    return kw


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.INFO if verbose == 0 else logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger("smengine")
    root.handlers[:] = [h for h in root.handlers if isinstance(h, logging.NullHandler)] + [handler]
    root.setLevel(level)


class _Group(click.Group):
    """The command group: an smengine error (or, with --strict, warning) becomes one clean line and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (SMEngineError, SMEngineWarning) as exc:
            raise click.ClickException(str(exc)) from exc
        except OSError as exc:  # the system refused a file (read-only, no space, a file where a folder is)
            if exc.filename is None or not exc.strerror:
                raise
            raise click.ClickException(f"{exc.filename}: {exc.strerror}") from exc


def _show_warnings(ctx: click.Context, strict: bool) -> None:
    """For the rest of the command: smengine warnings (data dropped, degraded results) print as
    ``warning: ...`` on stderr, each time; with ``strict`` they are errors."""
    ctx.with_resource(warnings.catch_warnings())
    warnings.simplefilter("error" if strict else "always", SMEngineWarning)
    shown = warnings.showwarning

    def show(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None
    ) -> None:
        if issubclass(category, SMEngineWarning):
            click.echo(f"warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(smengine.__version__, "-V", "--version", prog_name="smengine")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--strict", is_flag=True, help="Treat smengine warnings (dropped data, degraded results) as errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, strict: bool) -> None:
    """smengine: gridded profile soil moisture by emulating cosmic-ray neutron sensors."""
    _setup_logging(verbose, quiet)
    _show_warnings(ctx, strict)


@cli.command()
@click.option(
    "--humidity", "humidity", type=float, default=5.0, show_default=True, help="Absolute air humidity, g m-3."
)
@click.option("--theta", type=float, default=0.2, show_default=True, help="Soil moisture, m3 m-3.")
@click.option("--pressure", type=float, default=fp.REFERENCE_PRESSURE, show_default=True, help="Air pressure, hPa.")
@click.option("--bulk-density", type=float, default=1.4, show_default=True, help="Dry bulk density, g cm-3.")
@click.option("--veg-height", type=float, default=0.0, show_default=True, help="Vegetation height, m.")
@click.option("--lattice-water", type=float, default=0.0, show_default=True, help="Lattice water, g g-1.")
def footprint(
    humidity: float, theta: float, pressure: float, bulk_density: float, veg_height: float, lattice_water: float
) -> None:
    """Print the CRNS footprint radius R86 and depth D86 for one set of conditions."""
    given = {
        "--humidity": humidity,
        "--theta": theta,
        "--pressure": pressure,
        "--bulk-density": bulk_density,
        "--veg-height": veg_height,
        "--lattice-water": lattice_water,
    }
    for name, value in given.items():
        if value != value or value in (float("inf"), float("-inf")):
            raise click.BadParameter(f"{value} is not a finite number", param_hint=name)
    try:
        r86 = float(fp.footprint_radius(humidity, theta, pressure, veg_height))
        rstar1 = fp.rescale_distance(1.0, pressure, veg_height, theta)
        d86_1 = float(fp.penetration_depth(rstar1, bulk_density, theta, lattice_water))
        d86_r = float(
            fp.penetration_depth(
                fp.rescale_distance(r86, pressure, veg_height, theta), bulk_density, theta, lattice_water
            )
        )
    except SMEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"R86 = {r86:.1f} m   (humidity {humidity} g m-3, theta {theta}, {pressure} hPa)")
    click.echo(f"D86 = {d86_1:.1f} cm at 1 m, {d86_r:.1f} cm at R86 (bulk density {bulk_density} g cm-3)")


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=_Path(file_okay=False, path_type=Path),
    default=Path("smengine-demo"),
    show_default=True,
    help="Output folder.",
)
@click.option("--quick", is_flag=True, help="Small twin world and forest (about a minute; what CI runs).")
@click.option(
    "--scaling/--no-scaling",
    default=None,
    help="Also run the sub-pixel scaling experiment over heterogeneity levels (10-20 minutes). "
    "Default: on without --quick.",
)
@options.seed
@options.threads
def demo(out_dir: Path, quick: bool, scaling: bool | None, seed: int, threads: int | None) -> None:
    """Run the whole chain on the synthetic twin world and write the product, plots and report.md into OUT.

    Twin world (cached) → ingest → training table → forest (leave-site-out CV) → daily 1-km
    product → scores against the truth and the stations → pseudoproxy with ERA5-Land-like
    θ_eq and the area of applicability.
    """
    from tqdm import tqdm

    from smengine.demo import STEPS, run_demo

    _writable(out_dir, folder=True)
    with_scaling = (not quick) if scaling is None else scaling
    try:
        with tqdm(total=len(STEPS) + with_scaling, desc="demo", unit="step", disable=None) as bar:

            def progress(name: str) -> None:
                if bar.n or name != STEPS[0]:
                    bar.update(1)
                bar.set_postfix_str(name)

            res = run_demo(out_dir, quick=quick, seed=seed, progress=progress, n_threads=threads, scaling=with_scaling)
            bar.update(bar.total - bar.n)
    except SMEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    ts = res.truth_scores
    click.echo(
        f"RMSE vs the twin's true 1-km theta_eq: emulator {ts.iloc[0]['RMSE']:.4f}, "
        f"pixel-mean covariates {ts.iloc[1]['RMSE']:.4f}, SMAP-like {ts.iloc[2]['RMSE']:.4f}, "
        f"ERA5-Land-like {ts.iloc[4]['RMSE']:.4f} m3 m-3"
    )
    click.echo(
        f"leave-site-out median R {res.site_scores.loc['median', 'R']:.3f}, ubRMSE "
        f"{res.site_scores.loc['median', 'ubRMSE']:.4f}; total {sum(res.timings.values()):.0f} s"
    )
    click.echo(f"wrote {res.report}")


def _keyed(values: tuple[str, ...], what: str) -> tuple[dict[str, str], str | None]:
    """``NAME=VALUE`` options as a dict; a bare ``VALUE`` applies to every source (returned apart)."""
    keyed, bare = {}, None
    for v in values:
        if "=" in v:
            k, _, val = v.partition("=")
            keyed[k.strip()] = val.strip()
        elif bare is None:
            bare = v
        else:
            raise click.UsageError(f"--{what} given twice without NAME=: {bare!r}, {v!r}")
    return keyed, bare


def _group_sources(args: tuple[str, ...]) -> list[tuple[str | None, list[Path]]]:
    """SOURCES arguments → (name or None, files) per source.

    ``NAME=PATTERN`` is one named source; a glob pattern (quoted, so the shell leaves it) is
    one source; plain files whose names differ only in their digits (one file per day, as
    a shell expands ``ESACCI-*.nc``) in one folder are one source, stacked along time.
    """
    import re

    from smengine.config import expand_paths

    groups: dict[Any, tuple[str | None, list[Path]]] = {}
    for a in args:
        name, _, pattern = a.partition("=") if "=" in a else (None, "", a)
        files = expand_paths(pattern)
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise click.BadParameter(f"no such file: {', '.join(missing)}", param_hint="SOURCES")
        if name is not None or len(files) > 1:
            key: Any = ("arg", a)
        else:
            f = files[0]
            key = ("series", str(f.parent), re.sub(r"\d+", "#", f.name))
        g = groups.setdefault(key, (name, []))
        g[1].extend(files)
    return list(groups.values())


@cli.command()
@click.argument("sources", nargs=-1)
@click.option(
    "--config",
    "config_file",
    type=_Path(exists=True, dir_okay=False, path_type=Path),
    help="Run configuration (TOML): its [domain], [period], [[sources]] and [output] dir.",
)
@click.option(
    "--out",
    "out_dir",
    type=_Path(file_okay=False, path_type=Path),
    help="Folder for the tile files (<tile_id>.h5); default with --config: <output dir>/tiles.",
)
@click.option("--bounds", nargs=4, type=float, metavar="XMIN YMIN XMAX YMAX", help="Grid bounds in the grid CRS (m).")
@click.option(
    "--lonlat-bounds", nargs=4, type=float, metavar="WEST SOUTH EAST NORTH", help="Grid bounds in degrees (WGS 84)."
)
@click.option("--crs", default="EPSG:3035", show_default=True, help="Projected CRS of the grid.")
@click.option(
    "--resolution",
    type=click.FloatRange(min=0, min_open=True),
    default=1000.0,
    show_default=True,
    help="Pixel size (m).",
)
@click.option("--subpixel", type=click.IntRange(min=1), default=4, show_default=True, help="Sub-pixels per pixel side.")
@click.option("--tile-size", type=click.IntRange(min=1), default=100, show_default=True, help="Tile side in pixels.")
@click.option("--start", type=_DAY, help="First UTC day of the tiles' time axis (default: the sources' first day).")
@click.option("--end", type=_DAY, help="Last UTC day of the tiles' time axis (default: the sources' last day).")
@click.option("--daily", type=click.Choice(["mean", "min", "max", "sum"]), help="Aggregate sub-daily sources.")
@click.option(
    "--method",
    "method_opt",
    multiple=True,
    metavar="[NAME=]auto|average|bilinear|nearest",
    help="Resampling for fine storage (default auto): NAME=METHOD for one source, METHOD for all. Repeatable.",
)
@click.option(
    "--units",
    "units_opt",
    multiple=True,
    metavar="[NAME=]UNITS",
    help="Units of a source that states none (a GeoTIFF, a NetCDF variable without a units attribute): "
    "NAME=UNITS for one, UNITS for all. Repeatable.",
)
@click.option(
    "--variable",
    "variable_opt",
    multiple=True,
    metavar="NAME=VAR",
    help="Variable to read from a NetCDF/GRIB source. Repeatable.",
)
@click.option(
    "--storage",
    "storage_opt",
    multiple=True,
    metavar="NAME=fine|coarse",
    help="Keep a coarse product coarse (index map) or regrid it to sub-pixels. Repeatable.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Rewrite the tiles from scratch (default: add new days and sources to existing tiles).",
)
def ingest(
    sources: tuple[str, ...],
    config_file: Path | None,
    out_dir: Path | None,
    bounds: tuple[float, ...] | None,
    lonlat_bounds: tuple[float, ...] | None,
    crs: str,
    resolution: float,
    subpixel: int,
    tile_size: int,
    start: str | None,
    end: str | None,
    daily: str | None,
    method_opt: tuple[str, ...],
    units_opt: tuple[str, ...],
    variable_opt: tuple[str, ...],
    storage_opt: tuple[str, ...],
    overwrite: bool,
) -> None:
    """Regrid SOURCES (GeoTIFF, NetCDF, GRIB) onto the grid and write one tile store per tile.

    Each SOURCE is a file, a glob (quote it: "s1/*.tif") or NAME=FILE_OR_GLOB. A glob is
    one source stacked along time; so are files that differ only in their digits (the
    shell's expansion of ESACCI-*.nc). Reruns add new days and new sources to existing
    tiles and skip what is there.
    """

    from smengine.grid import Grid
    from smengine.ingest import SourceSpec
    from smengine.ingest import ingest as run_ingest

    cfg = None
    if config_file is not None:
        from smengine.config import load_config

        cfg = load_config(config_file)
    if not sources and (cfg is None or not cfg.sources):
        raise click.UsageError("give SOURCES or --config with [[sources]]")
    if (bounds is not None and lonlat_bounds is not None) or (
        bounds is None and lonlat_bounds is None and (cfg is None or cfg.grid is None)
    ):
        raise click.UsageError("give exactly one of --bounds or --lonlat-bounds (or --config with [domain])")
    if bounds is not None:
        grid = Grid.from_bounds(*bounds, crs=crs, resolution=resolution, subpixel=subpixel, tile_size=tile_size)
    elif lonlat_bounds is not None:
        grid = Grid.from_lonlat_bounds(
            *lonlat_bounds,
            crs=crs,
            resolution=resolution,  # type: ignore[misc]
            subpixel=subpixel,
            tile_size=tile_size,
        )
    else:
        grid = cfg.grid  # type: ignore[union-attr,assignment]
    if out_dir is None:
        if cfg is None:
            raise click.UsageError("give --out (or --config)")
        out_dir = cfg.tiles_dir
    methods, method_all = _keyed(method_opt, "method")
    bad = sorted({m for m in [*methods.values(), method_all] if m} - {"auto", "average", "bilinear", "nearest"})
    if bad:
        raise click.BadParameter(
            f"unknown resampling {bad}; choose auto, average, bilinear or nearest", param_hint="--method"
        )
    units, units_all = _keyed(units_opt, "units")
    variables, _ = _keyed(variable_opt, "variable")
    storage, _ = _keyed(storage_opt, "storage")
    specs = cfg.source_specs() if cfg is not None and not sources else []
    for name, files in _group_sources(sources):
        # NAME= options match a named source, or an unnamed one by its file stem (digits and separators
        # at the end stripped: s1_sm_20190101.tif -> s1_sm)
        keys = [name] if name else [files[0].stem, files[0].stem.rstrip("0123456789_-.")]

        def opt(d: dict[str, str], default: Any = None, keys: list[str] = keys) -> Any:
            return next((d[k] for k in keys if k in d), default)

        specs.append(
            SourceSpec(
                files[0] if len(files) == 1 else files,
                name=name,
                daily=daily,  # type: ignore[arg-type]
                method=opt(methods, method_all or "auto"),
                units=opt(units, units_all),
                variable=opt(variables),
                storage=opt(storage, "auto"),
            )
        )
    start = start or (cfg.start if cfg else None)
    end = end or (cfg.end if cfg else None)
    if bool(start) != bool(end):
        raise click.UsageError("give both --start and --end (or neither)")
    _check_period(start, end)
    days = day_range(start, end, what="--start/--end") if start and end else None
    paths = run_ingest(specs, grid, out_dir, days=days, overwrite=overwrite, progress=True)
    click.echo(
        f"{len(paths)} tile(s) in {out_dir} ({grid.shape[0]}x{grid.shape[1]} pixels, "
        f"{grid.tile_shape[0]}x{grid.tile_shape[1]} tiles) from {len(specs)} source(s)"
    )


@cli.command()
@click.argument("source", type=_Path(exists=True, path_type=Path))
@options.station_format("SOURCE")
@options.metadata
@options.station_layout
@click.option(
    "--min-hours",
    type=click.FloatRange(0, 24),
    default=18.0,
    show_default=True,
    help="Minimum valid hours per UTC day (a step counts its spacing: daily input counts 24 h a day).",
)
@click.option(
    "--out",
    "out_file",
    type=_Path(dir_okay=False, path_type=Path),
    help="Write the daily table as CSV (atomic); default: print a summary only.",
)
def stations(
    source: Path,
    fmt: str | None,
    metadata: Path | None,
    time_column: str | None,
    timezone: str | None,
    column_map: tuple[str, ...],
    station_ids: tuple[str, ...],
    min_hours: float,
    out_file: Path | None,
) -> None:
    """Read CRNS/in-situ stations from SOURCE, aggregate to UTC days and summarise them."""
    from smengine._io import atomic_write
    from smengine.stations import open_stations

    if out_file is not None:
        _writable(out_file, folder=False)
    layout = _layout_kwargs(source, fmt, time_column, timezone, column_map, station_ids)
    try:
        ss = open_stations(source, fmt, metadata=metadata, **layout)
        daily = ss.daily(min_hours)
    except SMEngineError as exc:
        raise click.ClickException(f"{exc}{_guessed(source, fmt)}") from exc
    if len(ss) == 0:
        why = "; ".join(f"{e['station']}: {e['reason']}" for _, e in ss.exclusions.iterrows())
        raise click.ClickException(f"no station read from {source} ({why or 'nothing found'}){_guessed(source, fmt)}")
    summary = daily.groupby("station")["sm"].agg(["count", "mean", "min", "max"])
    click.echo(f"{len(ss)} station(s), {len(daily)} station-days (>= {min_hours:g} valid hours)")
    click.echo(summary.round(3).to_string())
    for _, e in ss.exclusions.iterrows():
        click.echo(f"excluded {e['station']}: {e['reason']}", err=True)
    if out_file is not None:
        atomic_write(out_file, daily.to_csv(index=False, float_format="%.6g").encode())
        click.echo(f"daily table: {out_file}")


@cli.command()
@click.argument("stations_source", type=_Path(exists=True, path_type=Path))
@click.argument("tiles", nargs=-1, required=True, type=_Path(exists=True, path_type=Path))
@options.station_format("STATIONS_SOURCE")
@options.metadata
@options.station_layout
@click.option(
    "--out",
    "out_file",
    type=_Path(dir_okay=False, path_type=Path),
    required=True,
    help="Training table to write (NetCDF, with units and sources; .csv: plain CSV without units).",
)
@click.option(
    "--config",
    "config_file",
    type=_Path(exists=True, dir_okay=False, path_type=Path),
    help="Take the features (and min_hours) from this run configuration's [features] and [stations].",
)
@click.option(
    "--min-hours",
    type=click.FloatRange(0, 24),
    help="Minimum valid hours per UTC day (default 18; daily input counts 24 h a day).",
)
@click.option(
    "--kernel-quantum",
    nargs=3,
    type=float,
    metavar="HUMIDITY THETA PRESSURE",
    help="Round each day's footprint-kernel inputs to these steps (g m-3, m3 m-3, hPa) and reuse kernels: "
    "much faster, e.g. 2 0.02 5 (default: the exact kernel of every station-day).",
)
@click.option(
    "--swi-of", help="Comma-separated covariates to filter into SWI features (default: soil-moisture layers)."
)
@click.option("--swi-T", "swi_t", help="Comma-separated SWI characteristic times, days (default 5,10,20,40).")
@click.option("--no-carry", is_flag=True, help="SWI on observation days only (default: carried to every day).")
@click.option(
    "--swi-max-gap",
    type=click.FloatRange(min=0),
    help="Days a carried SWI lasts after its source's last value before it is NaN (default 30; see --no-gap-limit).",
)
@click.option("--no-gap-limit", is_flag=True, help="Carry the SWI without a limit (as models before the limit).")
@click.option("--static", help="Comma-separated static covariates (default all).")
@click.option("--dynamic", help="Comma-separated dynamic covariates (default all but the SWI sources).")
@click.option("--coarse", help="Comma-separated coarse covariates (default all but the SWI sources).")
def table(
    stations_source: Path,
    tiles: tuple[Path, ...],
    fmt: str | None,
    metadata: Path | None,
    time_column: str | None,
    timezone: str | None,
    column_map: tuple[str, ...],
    station_ids: tuple[str, ...],
    out_file: Path,
    config_file: Path | None,
    min_hours: float | None,
    kernel_quantum: tuple[float, ...] | None,
    swi_of: str | None,
    swi_t: str | None,
    no_carry: bool,
    swi_max_gap: float | None,
    no_gap_limit: bool,
    static: str | None,
    dynamic: str | None,
    coarse: str | None,
) -> None:
    """Build the training table: STATIONS_SOURCE's daily soil moisture and the footprint-weighted
    features of TILES (tile files or folders) at each station-day."""
    from smengine.features import TABLE_SUFFIXES, FeatureSpec, training_table, write_table
    from smengine.stations import open_stations
    from smengine.tiles import TileStore

    spec = FeatureSpec()
    hours = 18.0
    if config_file is not None:
        from smengine.config import load_config

        cfg = load_config(config_file)
        spec, hours = cfg.features, float(cfg.stations.get("min_hours", hours))
        kernel_quantum = kernel_quantum or cfg.stations.get("kernel_quantum")
    d = spec.get_config()

    def names(v: str) -> list[str]:
        return [x.strip() for x in v.split(",") if x.strip()]

    for key, v in (("swi_of", swi_of), ("static", static), ("dynamic", dynamic), ("coarse", coarse)):
        if v is not None:
            d[key] = names(v)
    if swi_t is not None:
        try:
            d["swi_T"] = [float(x) for x in names(swi_t)]
        except ValueError as exc:
            why = f"{swi_t!r} should be comma-separated numbers of days"
            raise click.BadParameter(why, param_hint="--swi-T") from exc
    if no_carry:
        d["swi_carry"] = False
    if swi_max_gap is not None and no_gap_limit:
        raise click.UsageError("--swi-max-gap and --no-gap-limit exclude each other")
    if swi_max_gap is not None:
        d["swi_max_gap"] = swi_max_gap
    elif no_gap_limit:
        d["swi_max_gap"] = None
    spec = FeatureSpec.from_config(d)
    hours = min_hours if min_hours is not None else hours
    if out_file.suffix.lower() not in (*TABLE_SUFFIXES, ".csv"):
        raise click.BadParameter(
            f"{out_file}: write the table as NetCDF ({', '.join(TABLE_SUFFIXES)}) or CSV (.csv), "
            f"not {out_file.suffix or 'a name without suffix'}",
            param_hint="--out",
        )
    paths = [q for p in tiles for q in (sorted(p.glob("*.h5")) if p.is_dir() else [p])]
    if not paths:
        raise click.ClickException(f"no tile files (*.h5) in {', '.join(map(str, tiles))}")
    _writable(out_file, folder=False)
    layout = _layout_kwargs(stations_source, fmt, time_column, timezone, column_map, station_ids)
    try:
        ss = open_stations(stations_source, fmt, metadata=metadata, **layout)
    except SMEngineError as exc:
        raise click.ClickException(f"{exc}{_guessed(stations_source, fmt)}") from exc
    if len(ss) == 0:
        raise click.ClickException(f"no station read from {stations_source}")
    tab = training_table(
        ss,
        [TileStore.open(p) for p in paths],
        spec,
        min_hours=hours,
        kernel_quantum=tuple(kernel_quantum) if kernel_quantum else None,
    )
    if out_file.suffix.lower() == ".csv":
        from smengine._io import atomic_write

        atomic_write(out_file, tab.to_csv(index=False, float_format="%.9g").encode())
    else:
        write_table(tab, out_file)
    complete = int(tab[tab.attrs["features"]].notna().all(axis=1).sum()) if len(tab) else 0
    click.echo(
        f"{len(tab)} station-days from {tab['station'].nunique()} station(s) x {len(tab.attrs['features'])} "
        f"features ({complete} complete) -> {out_file}"
    )


def _knndm_domain(path: Path) -> Any:
    """Prediction points for kNNDM: the pixel centres of a folder of tiles, or x, y of a CSV."""
    import numpy as np
    import pandas as pd

    from smengine.evaluate import domain_points
    from smengine.tiles import TileStore

    if path.is_dir():
        tiles = sorted(path.glob("*.h5"))
        if not tiles:
            raise click.BadParameter(f"{path} holds no tile (*.h5)", param_hint="--knndm-domain")
        return np.concatenate([domain_points(grid=TileStore.open(t).grid, samplesize=10_000) for t in tiles])
    d = pd.read_csv(path)
    if not {"x", "y"} <= set(d.columns):
        raise click.BadParameter(f"{path} needs x and y columns, has {', '.join(map(str, d.columns))}",
                                 param_hint="--knndm-domain")  # fmt: skip
    return d[["x", "y"]].to_numpy(float)


@cli.command()
@click.argument("table_file", type=_Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_file",
    type=_Path(dir_okay=False, path_type=Path),
    required=True,
    help="Compiled forest file to write (HDF5: treelite model, native layout, model card).",
)
@click.option("--features", help="Comma-separated feature columns (default: the table's features).")
@click.option(
    "--cv", default="site,year,block", show_default=True, help="Grouped CV schemes (site, year, block, knndm)."
)
@click.option(
    "--knndm-domain",
    type=_Path(exists=True, path_type=Path),
    help="Where the product will predict, for --cv knndm: a folder of tiles (their pixel centres) or a CSV with x, y "
    "columns in the table's CRS, m (default: the stations' convex hull). The G-function plot is written beside --out.",
)
@click.option(
    "--model",
    type=click.Choice(["forest", "boosting", "hybrid", "auto"]),
    default="forest",
    show_default=True,
    help="Random forest, LightGBM gradient-boosted trees, a hybrid (linear base + LightGBM trees on its residuals: "
    "extrapolates where the base does), or auto: the one with the lowest median per-station ubRMSE under "
    "spatio-temporal leave-site-out CV on the table (re-chosen inside every CV fold unless --no-nested). "
    "boosting, hybrid and auto need lightgbm (pip install 'smengine[boost]').",
)
@click.option(
    "--base-features",
    help="--model hybrid: comma-separated features of the linear base, e.g. the water-balance state and the best "
    "SWI (default: every feature).",
)
@click.option(
    "--select-cv",
    type=click.Choice(["site-time", "site", "knndm"]),
    default="site-time",
    show_default=True,
    help="--model auto: the selection's CV (site-time: a station group and a period held out together).",
)
@click.option(
    "--no-search",
    is_flag=True,
    help="Skip the hyper-parameter search (forest: max_features x min_samples_leaf; boosting, hybrid: num_leaves x "
    "learning_rate).",
)
@click.option(
    "--no-nested",
    is_flag=True,
    help="Reuse the search's choice in every CV fold instead of re-running it per fold (faster; the CV is then "
    "optimistic).",
)
@click.option(
    "--trees",
    type=click.IntRange(min=1),
    default=None,
    help="Trees per forest (default 500) or boosting rounds (default 200).",
)
@options.seed
@options.threads
@click.option(
    "--card",
    "card_file",
    type=_Path(dir_okay=False, path_type=Path),
    help="Also write the model card as Markdown here.",
)
def train(
    table_file: Path,
    out_file: Path,
    features: str | None,
    cv: str,
    no_search: bool,
    no_nested: bool,
    trees: int | None,
    seed: int,
    threads: int | None,
    card_file: Path | None,
    knndm_domain: Path | None = None,
    model: str = "forest",
    base_features: str | None = None,
    select_cv: str = "site-time",
) -> None:
    """Train the model (a random forest by default) on a training table (NetCDF from smengine table, or a CSV)."""
    import pandas as pd

    from smengine._io import atomic_write
    from smengine.features import TABLE_EXTRAS, TABLE_KEYS, read_table
    from smengine.model import CV_SCHEMES
    from smengine.model import train as run_train

    _writable(out_file, folder=False)
    if card_file is not None:
        _writable(card_file, folder=False, option="--card")
    tab = read_table(table_file)
    if len(tab) == 0:
        raise click.ClickException(f"{table_file}: the training table has no rows")
    if features:
        names = [f.strip() for f in features.split(",") if f.strip()]
        missing = [n for n in names if n not in tab.columns]
        if missing:
            raise click.BadParameter(
                f"{table_file} has no column {', '.join(missing)} (its columns: {', '.join(map(str, tab.columns))})",
                param_hint="--features",
            )
    elif tab.attrs.get("features"):
        names = list(tab.attrs["features"])
    else:
        not_features = {*TABLE_KEYS, *TABLE_EXTRAS}
        names = [c for c in tab.columns if c not in not_features and pd.api.types.is_numeric_dtype(tab[c])]
    if not tab.attrs.get("units"):
        click.echo(
            f"warning: {table_file} carries no feature units (a CSV); the model card will say 'units "
            "unknown' - write tables with smengine table (NetCDF)",
            err=True,
        )
    schemes = tuple(s.strip() for s in cv.split(",") if s.strip())
    unknown = [c for c in schemes if c not in CV_SCHEMES]
    if unknown:
        raise click.BadParameter(
            f"unknown cv scheme {', '.join(unknown)}; choose from {', '.join(CV_SCHEMES)}", param_hint="--cv"
        )
    if knndm_domain is not None and "knndm" not in schemes and not (model == "auto" and select_cv == "knndm"):
        raise click.UsageError("--knndm-domain goes with --cv ...,knndm (or --model auto --select-cv knndm)")
    if base_features is not None and model not in ("hybrid", "auto"):
        raise click.UsageError("--base-features goes with --model hybrid (or auto)")
    if model != "forest":
        try:
            import lightgbm  # noqa: F401
        except ImportError as exc:
            raise click.ClickException(
                f"--model {model} needs lightgbm, which is not installed: pip install 'smengine[boost]' "
                "(or pip install 'lightgbm>=4.3'); --model forest needs only scikit-learn"
            ) from exc
    model_params = None
    if base_features is not None:
        base = [f.strip() for f in base_features.split(",") if f.strip()]
        unknown = [f for f in base if f not in names]
        if unknown or not base:
            raise click.BadParameter(
                f"{', '.join(unknown) if unknown else repr(base_features)} not among the features ({', '.join(names)})",
                param_hint="--base-features",
            )
        model_params = {"base_features": base}
    domain = _knndm_domain(knndm_domain) if knndm_domain is not None else None
    try:
        forest = run_train(
            tab,
            names,
            cv=schemes,
            model=model,
            search=not no_search,
            nested=not no_nested,
            n_estimators=trees,
            random_state=seed,
            n_jobs=threads or -1,
            progress=True,
            knndm_domain=domain,
            model_params=model_params,
            select_cv=select_cv,
        )
    except (ConfigError, ValidationError) as exc:  # about the table's content: name the table
        raise click.ClickException(f"{table_file}: {exc}") from exc
    cf = forest.compile()
    cf.save(out_file)
    if forest.knndm is not None:
        e = forest.card.cv["knndm"]
        click.echo(
            f"kNNDM: W {e['W'] / 1000:.2f} km (grouped by station {e['W_grouped_by_station'] / 1000:.2f}, random "
            f"station-days {e['W_random_rows'] / 1000:.2f}); {e['method']}, domain {e['domain']}"
        )
        try:
            from smengine.evaluate import plot_knndm

            png = plot_knndm(forest.knndm, out_file.with_suffix(".knndm.png"), title="kNNDM folds of the stations")
            click.echo(f"wrote {png}")
        except ConfigError as exc:  # no matplotlib: the numbers are in the card
            click.echo(f"warning: no G-function plot ({exc})", err=True)
    if card_file is not None:
        atomic_write(card_file, forest.card.to_markdown().encode())
    if forest.selection is not None:
        sc = forest.selection.scores
        click.echo(
            f"model selection ({forest.selection.splitter}): median site ubRMSE "
            + ", ".join(f"{m} {sc.loc[m, 'median_ubRMSE']:.4f}" for m in sc.index)
            + f"; chose {forest.selection.chosen}"
        )
    click.echo(repr(forest))
    click.echo(f"wrote {out_file} ({cf.n_trees} trees, {cf.n_nodes} nodes, {cf.content_hash[:19]}…)")


@cli.command()
@click.argument("model", type=_Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("tiles", nargs=-1, required=True, type=_Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=_Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder: <tile>/<tile>_<first>_<last>.nc per tile and day range.",
)
@click.option("--start", type=_DAY, help="First UTC day (default: each tile's first day).")
@click.option("--end", type=_DAY, help="Last UTC day (default: each tile's last day).")
@click.option("--file-days", type=click.IntRange(min=1), default=32, show_default=True, help="Days per output file.")
@click.option(
    "--chunk-days",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Days per kernel call (memory grows with it).",
)
@click.option(
    "--min-valid",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Minimum valid sub-pixel fraction of a pixel.",
)
@options.threads
@click.option("--overwrite", is_flag=True, help="Rewrite existing outputs (default: skip them, resume).")
@click.option("--keep-going", is_flag=True, help="Log a failing tile and go on with the others.")
@click.option(
    "--max-missing",
    type=click.FloatRange(0, 1),
    default=None,
    help="Fail (exit 1) when more than this fraction of an output's pixel-days has no value; that output is not "
    "written, so a rerun makes it again (default: warn above 10 %).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["netcdf", "zarr", "domain-zarr"]),
    default="netcdf",
    show_default=True,
    help="One NetCDF per tile and day range, one Zarr store per tile (long runs), or one Zarr store for the "
    "whole domain (OUT/product.zarr, each tile written into its region; --file-days is its time chunk).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Run tiles on a local Dask cluster of this many worker processes "
    "(each with --threads threads, default 1; needs smengine[dask]).",
)
@click.option(
    "--footprint",
    is_flag=True,
    help="Add d86 (cm) and, where the tiles have abs_humidity, r86 (m) per pixel-day: the depth and radius "
    "each value represents (needs a bulk_density or porosity layer).",
)
@click.option(
    "--di/--no-di",
    default=None,
    help="Add the dissimilarity index di per pixel-day and the outside_aoa bit of quality_flag (area of "
    "applicability, Meyer & Pebesma 2021). Default: when MODEL carries an applicability reference (models "
    "trained by this smengine do); --di with a model without one warns and writes no di.",
)
@click.option(
    "--lpd/--no-lpd",
    default=False,
    show_default=True,
    help="Add the local point density lpd per pixel-day: how many training rows lie within the area-of-"
    "applicability threshold of the pixel's features (Schumacher et al. 2025). Needs a MODEL with an "
    "applicability reference.",
)
def predict(
    model: Path,
    tiles: tuple[Path, ...],
    out_dir: Path,
    start: str | None,
    end: str | None,
    file_days: int,
    chunk_days: int,
    min_valid: float,
    threads: int | None,
    overwrite: bool,
    keep_going: bool,
    max_missing: float | None,
    fmt: str,
    workers: int | None,
    footprint: bool,
    di: bool | None,
    lpd: bool,
) -> None:
    """Predict the daily 1-km product of TILES (tile files or folders of them) with MODEL.

    MODEL is a compiled forest (*.smf.h5, smengine train) or a spatial network
    (*.smnn.pt, smengine.nn.train; needs smengine[nn]).

    Resumable: outputs that exist are skipped, so rerunning after an interruption only
    does what is missing. An output made by another model, other settings or from tile data
    that changed since is not reused: the run stops naming it (--overwrite redoes it).
    An output rejected by --max-missing or, with --strict, by a data-loss warning is not
    written: the rerun makes it again and judges it by its own flags.
    """
    from tqdm import tqdm

    from smengine.engine import run
    from smengine.model import CompiledForest
    from smengine.tiles import TileStore

    _check_period(start, end)
    paths = [q for p in tiles for q in (sorted(p.glob("*.h5")) if p.is_dir() else [p])]
    if not paths:
        raise click.ClickException(f"no tile files (*.h5) in {', '.join(map(str, tiles))}")
    try:
        from smengine.nn import is_nn_file

        if is_nn_file(model):  # a spatial network (smengine.nn) instead of a forest
            from smengine.nn import load as load_nn

            cf = load_nn(model)
        else:
            cf = CompiledForest.load(model)
        days = slice(start, end) if (start or end) else None
        total = 0
        spans = []
        for p in paths:  # the day count for the progress bar; an unreadable tile fails in the run
            try:
                st = TileStore.open(p)
                if st.times.size == 0:
                    raise DataError(
                        f"{p}: the tile has no days (static layers only): nothing to predict; "
                        "ingest its daily sources into it first"
                    )
            except SMEngineError:
                if not keep_going:
                    raise
                continue
            spans.append(f"{p.name} {st.times[0]}..{st.times[-1]}")
            lo = as_day(start, what="--start") if start else st.times[0]
            hi = as_day(end, what="--end") if end else st.times[-1]
            total += max(int((hi - lo).astype(int)) + 1, 0)
        if spans and total == 0:
            raise click.BadParameter(
                f"no day from {start or 'the first'} to {end or 'the last'} in the tiles ({'; '.join(spans[:3])})",
                param_hint="--start/--end",
            )
        _writable(out_dir, folder=True)
        with contextlib.ExitStack() as stack:
            client = None
            if workers:
                try:
                    from distributed import Client, LocalCluster
                except ImportError as exc:
                    raise click.ClickException(
                        "--workers needs dask.distributed: pip install 'smengine[dask]'"
                    ) from exc
                threads = threads or 1
                cluster = stack.enter_context(
                    LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=None)
                )
                client = stack.enter_context(Client(cluster))
            bar = stack.enter_context(tqdm(total=total, unit="tile-day", desc="predict", disable=None))
            common = {
                "resume": not overwrite,
                "min_valid_fraction": min_valid,
                "n_threads": threads,
                "chunk_days": chunk_days,
                "progress": bar.update,
                "on_error": "skip" if keep_going else "raise",
                "client": client,
                "max_missing": max_missing,
            }
            if fmt == "domain-zarr":
                from smengine.domain import run_domain

                if footprint:
                    raise click.UsageError("--footprint is not available with --format domain-zarr yet")
                if di:
                    raise click.UsageError("--di is not available with --format domain-zarr yet")
                if lpd:
                    raise click.UsageError("--lpd is not available with --format domain-zarr yet")

                res = run_domain(paths, cf, out_dir / "product.zarr", days, time_chunk=file_days, **common)
            else:
                res = run(
                    paths,
                    cf,
                    out_dir,
                    days,
                    file_days=file_days,
                    format=fmt,
                    footprint=footprint,
                    di=di,
                    lpd=lpd,
                    **common,
                )
    except SMEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    st = res.stats
    what = f"regions of {out_dir / 'product.zarr'}" if fmt == "domain-zarr" else "files"
    click.echo(
        f"wrote {len(res.written)} {what}, skipped {len(res.skipped)} existing, {len(res.failed)} tiles failed; "
        f"{st.subpixel_days:,} sub-pixel-days, {st.invalid:,} masked (NaN/inf features)"
    )
    for name, why in res.failed:
        click.echo(f"failed {name}: {why}", err=True)
    if res.failed or not getattr(res, "complete", True):
        raise SystemExit(1)


@cli.command("stations-experiment")
@click.option(
    "--data",
    "data_dir",
    type=_Path(exists=True, file_okay=False, path_type=Path),
    help="Real data root (default: $SMENGINE_DATA or ../shared/data).",
)
@click.option(
    "--out",
    "out_dir",
    type=_Path(file_okay=False, path_type=Path),
    required=True,
    help="Output folder (report.md, CSV tables, PNGs).",
)
@click.option(
    "--experiment",
    type=click.Choice(["all", "both", "temporal", "leave-site-out", "leave-site-out-spatiotemporal", "knndm"]),
    default="all",
    show_default=True,
    help="Which experiment(s) to run: all four, both (temporal and plain leave-site-out), or one.",
)
@click.option(
    "--domain",
    "domain_file",
    type=_Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with lat, lon columns (degrees): where the product will predict, for the kNNDM folds "
    "(default: the stations' convex hull).",
)
@click.option("--knndm-k", default=5, show_default=True, type=click.IntRange(2), help="Folds of the kNNDM experiment.")
@click.option(
    "--source",
    type=_Path(exists=True, path_type=Path),
    help="Run on a station set of your own (with --format) instead of the two real networks.",
)
@options.station_format("--source")
@options.metadata
@options.station_layout
@click.option(
    "--precipitation",
    "precip_file",
    type=_Path(exists=True, dir_okay=False, path_type=Path),
    help="Daily precipitation CSV (date column + one column per station, mm); default: station gauges.",
)
@click.option(
    "--irrigation",
    "irrig_file",
    type=_Path(exists=True, dir_okay=False, path_type=Path),
    help="Daily irrigation CSV (date column + one column per station, mm): a water input beside precipitation; "
    "stations without a column are not irrigated.",
)
@click.option(
    "--covariates",
    "cov_file",
    type=_Path(exists=True, dir_okay=False, path_type=Path),
    help="Daily covariates CSV: station, date and one column per covariate (or date and one column per station, "
    "the file's stem naming the covariate). Each column becomes a feature.",
)
@click.option(
    "--covariate-unit",
    "cov_units",
    multiple=True,
    metavar="NAME=UNIT",
    help="Units of a covariate column (repeatable; default 'unknown', said in the report).",
)
@click.option("--swi-of", help="Comma-separated covariate columns whose SWI (T = 5, 10, 20, 40 d) is a feature too.")
@click.option(
    "--swi-max-gap",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Days a carried SWI lasts without a new value before it is NaN.",
)
@click.option("--no-extras", is_flag=True, help="Do not use the station files' numeric extra columns as features.")
@click.option("--features", "features", help="Comma-separated features to use (default: all the table has).")
@click.option("--exclude-features", help="Comma-separated features to leave out.")
@click.option(
    "--split-date", type=_DAY, help="First test day of the temporal split (default: first day + --train-years)."
)
@click.option("--train-years", default=2.4, show_default=True, help="Training years of the temporal split.")
@options.trees(500)
@click.option("--search", is_flag=True, help="Tune max_features x min_samples_leaf (nested leave-site-out).")
@click.option(
    "--models",
    default="forest,boosting,hybrid",
    show_default=True,
    help="Comma-separated tree models fitted beside linear and mean (forest, boosting, hybrid).",
)
@click.option(
    "--select", is_flag=True, help="Also the model chosen inside each fold by spatio-temporal CV (nested; ~8x slower)."
)
@click.option("--no-water-balance", is_flag=True, help="Leave out the soil water balance features (wb<depth>).")
@click.option("--wb-depth", "wb_depths", help="Comma-separated bucket depths, mm (default 300).")
@click.option("--no-calendar-study", is_flag=True, help="Skip the run without the day of year.")
@click.option("--api", "api_k", help="Comma-separated decay factors k of antecedent precipitation indices (api<k>).")
@options.seed
@options.threads
@click.option("--no-plots", is_flag=True, help="Skip the PNGs.")
def stations_experiment(
    data_dir: Path | None,
    out_dir: Path,
    experiment: str,
    domain_file: Path | None,
    knndm_k: int,
    source: Path | None,
    fmt: str | None,
    metadata: Path | None,
    time_column: str | None,
    timezone: str | None,
    column_map: tuple[str, ...],
    station_ids: tuple[str, ...],
    precip_file: Path | None,
    irrig_file: Path | None,
    cov_file: Path | None,
    cov_units: tuple[str, ...],
    swi_of: str | None,
    swi_max_gap: float,
    no_extras: bool,
    features: str | None,
    exclude_features: str | None,
    split_date: str | None,
    train_years: float,
    trees: int,
    search: bool,
    models: str,
    select: bool,
    no_water_balance: bool,
    wb_depths: str | None,
    no_calendar_study: bool,
    api_k: str | None,
    seed: int,
    threads: int | None,
    no_plots: bool,
) -> None:
    """Emulate CRNS soil moisture from point covariates at real stations, against baselines.

    Default: the temporal split at Fuerstensee (COSMOS-Europe FSC001) and leave-site-out over
    the 15 Roaring Fork stations; with --source/--format any supported station set.
    """
    from smengine.experiments import (
        EXPERIMENTS,
        read_covariates,
        read_daily_irrigation,
        read_daily_precipitation,
        run_experiments,
    )
    from smengine.stations import open_stations

    def names(v: str | None) -> list[str] | None:
        return None if v is None else [x.strip() for x in v.split(",") if x.strip()]

    exps = {"all": EXPERIMENTS, "both": ("temporal", "leave-site-out")}.get(experiment, (experiment,))
    _writable(out_dir, folder=True)
    try:
        domain = None
        if domain_file is not None:
            import pandas as pd

            domain = pd.read_csv(domain_file)
            lower = {c.lower(): c for c in domain.columns}
            if not {"lat", "lon"} <= set(lower):
                raise click.BadParameter(
                    f"{domain_file} needs lat and lon columns, has {', '.join(map(str, domain.columns))}",
                    param_hint="--domain",
                )
            domain = domain.rename(columns={lower["lat"]: "lat", lower["lon"]: "lon"})
        units = {}
        for item in cov_units:
            name, sep, unit = item.partition("=")
            if not sep or not name.strip():
                raise click.BadParameter(f"expected NAME=UNIT, got {item!r}", param_hint="--covariate-unit")
            units[name.strip()] = unit.strip()
        ss = pr = irr = None
        if source is not None:
            layout = _layout_kwargs(source, fmt, time_column, timezone, column_map, station_ids)
            ss = open_stations(source, fmt, metadata=metadata, **layout)
            if len(ss) == 0:
                raise click.ClickException(f"no station read from {source}{_guessed(source, fmt)}")
            pr = read_daily_precipitation(precip_file, ss) if precip_file is not None else None
            irr = read_daily_irrigation(irrig_file, ss) if irrig_file is not None else None
        else:
            given = [
                o
                for o, v in (("--precipitation", precip_file), ("--irrigation", irrig_file), ("--covariates", cov_file))
                if v is not None
            ]
            given += [o for o, v in (("--time-column", time_column), ("--timezone", timezone)) if v]
            given += [o for o, v in (("--column", column_map), ("--station", station_ids)) if v]
            if given:
                raise click.UsageError(f"{', '.join(given)} go(es) with --source")
        model_list = names(models) or []
        bad = [m for m in model_list if m not in ("forest", "boosting", "hybrid")]
        if bad or not model_list:
            raise click.BadParameter(f"{models!r}: choose from forest, boosting, hybrid", param_hint="--models")
        wb: bool | dict[str, Any] = not no_water_balance
        if wb and wb_depths is not None:
            wb = {"depths_mm": _floats(wb_depths, "--wb-depth")}
        res = run_experiments(
            out_dir,
            data_dir,
            experiments=exps,
            models=model_list,
            select=select,
            water_balance=wb,
            calendar_study=not no_calendar_study,
            api=_floats(api_k, "--api") if api_k else [],
            stations=ss,
            precipitation=pr,
            irrigation=irr,
            features=names(features),
            exclude_features=names(exclude_features) or (),
            split_date=split_date,
            train_years=train_years,
            domain=domain,
            knndm_k=knndm_k,
            covariates=read_covariates(cov_file, stations=ss) if cov_file is not None else None,
            covariate_units=units,
            extras=not no_extras,
            swi_of=names(swi_of) or (),
            swi_max_gap=swi_max_gap,
            n_estimators=trees,
            search=search,
            random_state=seed,
            n_jobs=threads if threads is not None else -1,
            plots=not no_plots,
        )
    except SMEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    for name, r in res.results.items():
        med = r.medians()
        for m in (*model_list, "selected"):
            if m not in med.index:
                continue
            verdicts = []
            for b in ("linear", "mean"):
                c = r.comparison(m, b, "ubRMSE")
                if c is not None:
                    verdicts.append(
                        f"vs {'training mean' if b == 'mean' else b}: {c.verdict} {c.interval()} ({c.wtl()})"
                    )
            click.echo(
                f"{name}: {m} median R {med.loc[m, 'R']:.3f}, ubRMSE {med.loc[m, 'ubRMSE']:.4f}; ubRMSE "
                + "; ".join(verdicts)
            )
    click.echo(f"wrote {res.report}")


@cli.command("run")
@click.argument("config_file", type=_Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--steps",
    default=",".join(("ingest", "table", "train", "predict")),
    show_default=True,
    help="Comma-separated steps to run.",
)
@click.option("--overwrite", is_flag=True, help="Redo every step from scratch (default: resume).")
@options.threads
def run_cmd(config_file: Path, steps: str, overwrite: bool, threads: int | None) -> None:
    """Run CONFIG_FILE (TOML, see smengine.config) from the user's files to the daily product:
    ingest -> table -> train -> predict. Resumable: a step whose inputs did not change is skipped."""
    from smengine.config import load_config
    from smengine.pipeline import STEPS, run_pipeline

    wanted = tuple(s.strip() for s in steps.split(",") if s.strip())
    unknown = [s for s in wanted if s not in STEPS]
    if unknown or not wanted:
        raise click.BadParameter(
            f"unknown step {', '.join(unknown) or repr(steps)}; choose from {', '.join(STEPS)}", param_hint="--steps"
        )
    cfg = load_config(config_file)
    try:
        res = run_pipeline(
            cfg,
            wanted,
            overwrite=overwrite,
            n_threads=threads,
            progress=lambda step: click.echo(f"== {step}", err=True),
        )
    except ConfigError as exc:  # what the configuration says or lacks: name the file
        raise click.ClickException(f"{config_file}: {exc}") from exc
    for step in wanted:
        click.echo(f"{step}: {res.status.get(step, '?')} ({res.seconds.get(step, 0.0):.1f} s)")
    if "predict" in res.outputs:
        out = res.outputs["predict"]
        st = out.stats
        valid = (
            f"{1 - st.nan_pixel_days / st.pixel_days:.1%} of the pixel-days predicted have a value"
            if st.pixel_days
            else "nothing new to predict"
        )
        click.echo(f"product: {cfg.product_dir} ({len(out.written)} written, {len(out.skipped)} kept; {valid})")


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=_Path(file_okay=False, path_type=Path),
    default=Path("twin"),
    show_default=True,
    help="Folder for the twin's files.",
)
@click.option("--quick", is_flag=True, help="The small twin (20 km x 20 km, one year).")
@click.option(
    "--heterogeneity",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Share of fields with their own land cover, soil, crop calendar and irrigation (field-scale mosaic; "
    "0: the default smooth twin).",
)
@options.seed
def twin(out_dir: Path, quick: bool, heterogeneity: float, seed: int) -> None:
    """Write the synthetic twin world's raw files (GeoTIFF, NetCDF, CRNS station files) into OUT,
    with a run configuration (OUT/smengine.toml) for them: a stand-in for a user's own data."""
    from smengine.twin import make_world, write_run_config

    _writable(out_dir, folder=True)
    world = make_world(seed, out_dir, quick=quick, heterogeneity=heterogeneity)
    cfg = write_run_config(world, out_dir / "smengine.toml")
    g = world.grid
    click.echo(
        f"twin world in {out_dir}: {g.shape[0]}x{g.shape[1]} km, {world.days.size} days, "
        f"{len(world.read_stations())} CRNS stations; bounds {g.bounds[0]:.0f} {g.bounds[1]:.0f} "
        f"{g.bounds[2]:.0f} {g.bounds[3]:.0f} (EPSG:3035)"
    )
    click.echo(f"run configuration: {cfg}")


@cli.command("nn-train")
@click.argument("table_file", type=_Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--tiles",
    "tiles",
    type=_Path(exists=True, path_type=Path),
    multiple=True,
    required=True,
    help="Tile files or folders of them (the tiles the table was made from).",
)
@click.option(
    "--out",
    "out_file",
    type=_Path(dir_okay=False, path_type=Path),
    required=True,
    help="Network file to write (*.smnn.pt); smengine predict takes it like a forest file.",
)
@click.option("--features", help="Comma-separated features (default: the table's).")
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="NAME=VALUE",
    help="A NetConfig setting (half_width, width, head, max_epochs, patience, batch_size, lr, weight_decay, "
    "augment, n_splits, lr_decay), repeatable.",
)
@options.seed
@click.option(
    "--torch-threads",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="PyTorch threads while training (1 is fastest on a shared machine; the weights do not depend on it).",
)
def nn_train(
    table_file: Path,
    tiles: tuple[Path, ...],
    out_file: Path,
    features: str | None,
    settings: tuple[str, ...],
    seed: int,
    torch_threads: int,
) -> None:
    """Train the spatial network (smengine.nn; needs smengine[nn]) on a training table's station-days,
    with patches of sub-pixel covariates around the stations cut from the tiles."""
    from smengine.features import read_table
    from smengine.tiles import TileStore

    _writable(out_file, folder=False)
    paths = [q for p in tiles for q in (sorted(p.glob("*.h5")) if p.is_dir() else [p])]
    if not paths:
        raise click.ClickException(f"no tile files (*.h5) in {', '.join(map(str, tiles))}")
    try:
        import dataclasses
        import json

        import smengine.nn as snn

        fields = {f.name: f.type for f in dataclasses.fields(snn.NetConfig)}
        overrides: dict[str, object] = {}
        for item in settings:
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in fields:
                raise click.BadParameter(
                    f"{item!r}: expected NAME=VALUE with NAME one of {', '.join(fields)}", param_hint="--set"
                )
            try:
                overrides[key.strip()] = json.loads(
                    value.strip().lower() if value.strip() in ("True", "False") else value
                )
            except json.JSONDecodeError as exc:
                raise click.BadParameter(
                    f"{item!r}: {value!r} is not a number or true/false", param_hint="--set"
                ) from exc
        tab = read_table(table_file)
        names = [f.strip() for f in features.split(",") if f.strip()] if features else None
        net = snn.train(
            tab,
            [TileStore.open(q) for q in paths],
            names,
            seed=seed,
            n_threads=torch_threads,
            progress=lambda msg: click.echo(msg, err=True),
            **overrides,
        )
        net.save(out_file)
    except SMEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out_file}")


@cli.command("nn-compare")
@click.option(
    "--out",
    "out_dir",
    type=_Path(file_okay=False, path_type=Path),
    default=Path("smengine-nn-compare"),
    show_default=True,
    help="Folder of the twin, both models, report.md, summary.json and products_day.png.",
)
@click.option(
    "--heterogeneity",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="The twin's field-scale heterogeneity (see smengine twin).",
)
@click.option("--pretrain", is_flag=True, help="Pre-train the network on ERA5-Land-like theta_eq everywhere.")
@options.seed
@options.threads
def nn_compare(out_dir: Path, heterogeneity: float, pretrain: bool, seed: int, threads: int | None) -> None:
    """The spatial network and the forest side by side on the quick twin (about 5 minutes): station CV,
    RMSE against the true theta_eq, pseudoproxy off-site skill, training time and inference cost."""
    _writable(out_dir, folder=True)
    try:
        import smengine.nn as snn
        from smengine.twin import TwinConfig

        s = snn.compare_with_forest(
            out_dir,
            seed=seed,
            twin_config=TwinConfig.quick(heterogeneity=heterogeneity),
            n_threads=threads,
            pretrain=pretrain,
            progress=lambda msg: click.echo(msg, err=True),
        )
    except SMEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"wrote {out_dir / 'report.md'} ({len(s)} results in summary.json)")


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"should be comma-separated numbers, got {text!r}", param_hint=what) from exc


@cli.command("scaling")
@click.option(
    "--out",
    "out_dir",
    type=_Path(file_okay=False, path_type=Path),
    default=Path("smengine-scaling"),
    show_default=True,
    help="Folder of the worlds, tiles, table.csv, scaling_gain.png and report.md (reused by a rerun).",
)
@click.option("--levels", default="0,0.33,0.67,1", show_default=True, help="Heterogeneity levels in [0, 1].")
@click.option("--subpixels", default="4,10", show_default=True, help="Sub-pixel factors k (k x k per pixel).")
@options.trees(50)
@options.seed
@options.threads
def scaling(out_dir: Path, levels: str, subpixels: str, trees: int, seed: int, threads: int | None) -> None:
    """When does sub-pixel scaling matter? mean_j f(x_j) against f(mean_j x_j) and the best input
    product, on quick twins of growing field-scale heterogeneity (10-20 minutes on 2 cores)."""
    from smengine._io import atomic_write
    from smengine.twin import plot_scaling, scaling_experiment, scaling_report

    lv = _floats(levels, "--levels")
    if not lv or any(not 0.0 <= v <= 1.0 for v in lv):
        raise click.BadParameter(f"levels should be numbers in [0, 1], got {levels!r}", param_hint="--levels")
    ks = _floats(subpixels, "--subpixels")
    if not ks or any(k < 1 or k != int(k) or 1000 % int(k) for k in ks):
        raise click.BadParameter(
            f"sub-pixel factors should be integers dividing 1000, got {subpixels!r}", param_hint="--subpixels"
        )
    _writable(out_dir, folder=True)
    try:
        tab = scaling_experiment(out_dir, lv, [int(k) for k in ks], seed, quick=True, n_trees=trees, n_threads=threads)
    except SMEngineError as exc:
        raise click.ClickException(str(exc)) from exc
    atomic_write(out_dir / "table.csv", tab.to_csv(index=False).encode())
    plot_scaling(tab, out_dir / "scaling_gain.png")
    atomic_write(out_dir / "report.md", ("# Where sub-pixel scaling matters\n\n" + scaling_report(tab)).encode())
    for _, r in tab.iterrows():
        click.echo(
            f"h={r['heterogeneity']:.2f} k={r['k']}: RMSE {r['rmse_subpixel']:.4f} (sub-pixel) vs "
            f"{r['rmse_pixelmean']:.4f} (pixel-mean), gain {r['gain_pct']:+.1f} % "
            f"[{r['gain_ci_low']:+.4f}, {r['gain_ci_high']:+.4f}]"
        )
    click.echo(f"wrote {out_dir / 'report.md'} ({tab.attrs['seconds']:.0f} s)")


def main() -> None:  # console-script entry point
    cli(prog_name="smengine")


if __name__ == "__main__":  # pragma: no cover
    main()
