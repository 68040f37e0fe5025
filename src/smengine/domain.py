"""One Zarr product for a whole domain: every tile's product written into its region.

:func:`smengine.engine.run` writes one file (or one Zarr store) per tile. This module
writes the same product, for a fixed list of days, into **one** Zarr store covering the
domain grid, the continental product:

* :func:`create_domain_store` lays the store out: the variables, dtypes, fill values,
  coordinates and CF attributes of a tile product (:func:`smengine.product.make_product`),
  on the domain grid, Zarr format 2 with consolidated metadata (so
  :func:`smengine.product.open_product`, ``xr.open_zarr`` and ``ds.rio.crs`` read it like a
  tile product). Only metadata and coordinates are written; the data variables read as
  their fill value (NaN; ``quality_flag`` 0, as it has no fill value) until written.
  Chunks are ``(time_chunk, tile_size, tile_size)``: each tile of the grid is a column
  of whole chunks.
* :func:`write_region` writes one tile product into its region (a tile × whole time
  chunks): it touches only that region's chunk files, so workers writing different tiles
  at once never write the same file, and no metadata is rewritten. Rewriting a region
  gives the same bytes.
* :func:`run_domain` predicts every tile and writes its regions, locally or with one Dask
  task per tile (``client=``); it is resumable.

**Completeness.** Which regions are complete is recorded in the store itself: the group
``smengine_regions`` holds a uint8 array ``done`` of shape (tile rows, tile columns, time
chunks, 21), one chunk (one small file) per region. A region's marker is written (by Zarr:
a temporary file renamed into place) only after all of its data, and is cleared before its
data are rewritten: a marked region is complete, whatever was interrupted. A marker is a
kind byte (1: the region's inputs digest follows; 2: a digest of its values, for a product
that records no inputs) and 20 bytes of BLAKE2b digest. :func:`missing_regions` lists the
regions not yet complete; xarray ignores the group when it opens the product.

**Resume.** ``run_domain(..., resume=True)`` skips the regions already marked, checking that
each was made from the same tile data (the inputs digest :func:`smengine.engine.run`
records in a product); the store's grid, days, time chunking, model and settings must be
those of the run, otherwise the run stops with a :class:`~smengine.errors.DataError`.
A task killed while writing leaves its region unmarked; Dask reschedules it (a task whose
worker died is rerun by the scheduler, up to its ``allowed-failures``; a task that raised
is retried ``retries`` times), and the new attempt rewrites the whole region. Temporary
chunk files (``*.partial``) that a killed writer left are removed at the start and at the
end of a run.

Examples
--------
>>> from smengine.domain import run_domain                        # doctest: +SKIP
>>> res = run_domain(sorted(Path("tiles").glob("t*.h5")), "model.smf.h5", "europe.zarr",
...                  days=slice("2021-01-01", "2021-12-31"), grid=grid, client=client)  # doctest: +SKIP
>>> res.complete, len(res.written)                                # doctest: +SKIP
(True, 19200)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xarray as xr

from smengine._days import as_days, day_range
from smengine._io import TEMP_NAME, atomic_target
from smengine.engine import (
    EngineStats,
    TileRunner,
    _check_output,
    _comparable_config,
    _engine_config,
    _failed,
    _gather,
    _input_digests,
    _load_forest,
    _open_store,
    _stats_since,
    _warnings_are_errors,
)
from smengine.errors import ConfigError, DataError, ValidationError
from smengine.grid import Grid, Tile
from smengine.product import (
    QualityFlag,
    _as_days,
    _assemble,
    _check_product,
    _for_writing,
    _grid_of,
    _is_zarr,
    _json,
    _model_card_json,
    _store_lock,
    make_product,
)
from smengine.tiles import TileStore

__all__ = ["DomainResult", "Region", "create_domain_store", "missing_regions", "run_domain", "write_region"]

log = logging.getLogger(__name__)

FORMAT = "smengine-domain/1"
_MANIFEST = "smengine_regions"  # the group holding the region markers
_DONE = "done"  # its array: (tile rows, tile cols, time chunks, 1 + digest) uint8
_DIGEST = 20
_MARK = 1 + _DIGEST
_KIND_INPUTS, _KIND_VALUES = 1, 2
_TILE_KEYS = ("tile", "tile_path")  # engine settings that differ between the tiles of one domain
_FLOAT_VARS = ("sm", "sm_uncertainty", "sm_subpixel_sd", "valid_fraction")
_VARS = (*_FLOAT_VARS, "quality_flag")
_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")  # zarr's LocalStore: <chunk>.<uuid4 hex>.partial


class Region(NamedTuple):
    """One region of a domain store: a tile of the domain grid × one time chunk.

    Attributes
    ----------
    tile : str
        The domain grid's tile id (``Grid.tile(row, col).id``, e.g. ``"t003_012"``).
    chunk : int
        Index of the time chunk (days ``chunk * time_chunk`` on).
    first, last : numpy.datetime64
        Its first and last day.
    """

    tile: str
    chunk: int
    first: np.datetime64
    last: np.datetime64


@dataclass(frozen=True)
class DomainResult:
    """What :func:`run_domain` did.

    Attributes
    ----------
    path : Path
        The domain store.
    written, skipped : tuple of Region
        Regions written by this run, and regions skipped because they were complete.
    failed : tuple of (str, str)
        Tiles that failed (with ``on_error="skip"``): (tile path, reason).
    stats : EngineStats
        Engine counters summed over the tiles.
    return_codes : dict of str to int
        Failed tile → :attr:`~smengine.errors.SMEngineError.return_code`.
    missing : tuple of Region
        Regions of the store's tiles that are not complete after the run (tiles that
        failed, or tiles of the store this run was not given).
    """

    path: Path
    written: tuple[Region, ...]
    skipped: tuple[Region, ...]
    failed: tuple[tuple[str, str], ...]
    stats: EngineStats
    return_codes: dict[str, int] = field(default_factory=dict)
    missing: tuple[Region, ...] = ()

    @property
    def complete(self) -> bool:
        """Whether every region of the store is complete."""
        return not self.missing


@dataclass(frozen=True)
class _Layout:
    """A domain store as its writers need it (read once, passed to the tasks)."""

    path: str
    grid: Grid
    days: np.ndarray  # datetime64[D]
    time_chunk: int
    tiles: tuple[str, ...]
    attrs: dict[str, Any]
    variables: dict[str, str]  # name → dtype

    @property
    def n_chunks(self) -> int:
        return -(-self.days.size // self.time_chunk)

    def chunk_slice(self, k: int) -> slice:
        return slice(k * self.time_chunk, min((k + 1) * self.time_chunk, self.days.size))

    def region(self, tile: Tile, k: int) -> Region:
        d = self.days[self.chunk_slice(k)]
        return Region(tile.id, k, d[0], d[-1])


# ---------------------------------------------------------------------------- geometry
def _tile_of(domain: Grid, grid: Grid, where: str) -> Tile:
    """The tile of ``domain`` that ``grid`` (a tile's grid) is; raises if it is not one."""
    res = domain.resolution
    if (
        grid.pyproj_crs != domain.pyproj_crs
        or not math.isclose(grid.resolution, res, rel_tol=1e-9)
        or grid.subpixel != domain.subpixel
    ):
        raise ValidationError(
            f"{where}: its grid ({grid.crs}, {grid.resolution:g} m, {grid.subpixel}×{grid.subpixel} sub-pixels) "
            f"is not the domain's ({domain.crs}, {res:g} m, {domain.subpixel}×{domain.subpixel})"
        )
    c, r = (grid.xmin - domain.xmin) / res, (domain.ymax - grid.ymax) / res
    ci, ri = round(c), round(r)
    if abs(c - ci) > 1e-6 or abs(r - ri) > 1e-6:
        raise ValidationError(f"{where}: its pixels are not on the domain grid's (offset {r:g} rows, {c:g} columns)")
    size = domain.tile_size
    if ri % size or ci % size:
        raise ValidationError(
            f"{where}: it starts at row {ri}, column {ci} of the domain grid, not at a tile corner "
            f"(tiles of {size} pixels): its region would not be whole chunks"
        )
    try:
        tile = domain.tile(ri // size, ci // size)
    except ConfigError as exc:
        raise ValidationError(f"{where}: it lies outside the domain grid ({exc})") from exc
    if (tile.height, tile.width) != grid.shape:
        raise ValidationError(
            f"{where}: it has {grid.shape[0]}×{grid.shape[1]} pixels, the domain's tile {tile.id} "
            f"{tile.height}×{tile.width}"
        )
    return tile


def _bounding_grid(grids: Sequence[Grid]) -> Grid:
    """The smallest grid holding every tile grid (tile (0, 0) is the north-westernmost tile)."""
    g0 = grids[0]
    res = g0.resolution
    xmin = min(g.xmin for g in grids)
    ymax = max(g.ymax for g in grids)
    xmax = max(g.xmin + g.width * g.resolution for g in grids)
    ymin = min(g.ymax - g.height * g.resolution for g in grids)
    sizes = {g.tile_size for g in grids}
    if len(sizes) > 1:
        raise ValidationError(f"the tiles come from grids with different tile sizes {sorted(sizes)}; pass grid=")
    return Grid(
        g0.crs, res, xmin, ymax, round((xmax - xmin) / res), round((ymax - ymin) / res), g0.subpixel, g0.tile_size
    )


def _domain_days(days: Any, times: Sequence[np.ndarray]) -> np.ndarray:
    """The run's days: the union of the tiles' days by default, a slice of dates, or dates."""
    union = np.unique(np.concatenate(times)) if times else np.array([], "datetime64[D]")
    if days is None:
        out = union.astype("datetime64[D]")
    elif isinstance(days, slice):
        if days.step is not None:
            raise ConfigError("days: a slice of dates takes no step")
        if union.size == 0 and (days.start is None or days.stop is None):
            raise ConfigError("days: the tiles have no days; give both ends of the slice")
        lo = days.start if days.start is not None else union[0]
        hi = days.stop if days.stop is not None else union[-1]
        out = day_range(lo, hi, what="days")
    else:
        out = as_days(days, what="days", increasing=True)
    if out.size == 0:
        raise ConfigError("days: no days selected")
    return out


# ---------------------------------------------------------------------------- the store
def _domain_config(cf: Any, min_valid_fraction: float, chunk_days: int, config: dict[str, Any] | None) -> dict:
    """The ``smengine_config`` of a domain store: a tile product's, without the tile."""
    from types import SimpleNamespace

    shim = SimpleNamespace(
        min_valid_fraction=float(min_valid_fraction),
        chunk_days=int(chunk_days),
        reuse=True,
        feature_names=list(cf.feature_names or []),
        forest=cf,
        store=SimpleNamespace(tile_id=None, path=""),
    )
    cfg = _engine_config(shim, config)  # type: ignore[arg-type]
    for k in _TILE_KEYS:
        cfg["engine"].pop(k, None)
    return cfg


def _without_tile(cfg: Any) -> dict[str, Any]:
    out = _comparable_config(cfg if isinstance(cfg, dict) else json.loads(str(cfg)))
    for k in _TILE_KEYS:
        out.get("engine", {}).pop(k, None)
    return out


def _template(
    grid: Grid,
    days: np.ndarray,
    cf: Any,
    cfg: dict[str, Any],
    min_valid_fraction: float,
    time_chunk: int,
    history: str | None,
    lonlat: bool,
) -> xr.Dataset:
    """The domain product, lazily: Dask arrays that are never computed (metadata only)."""
    try:
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - dask is in the dask and test extras
        raise ConfigError("a domain store needs dask: pip install 'smengine[dask]'") from exc

    ny, nx = grid.shape
    shape = (days.size, ny, nx)
    chunks = (min(time_chunk, days.size), min(grid.tile_size, ny), min(grid.tile_size, nx))
    data = {k: da.full(shape, np.nan, dtype=np.float32, chunks=chunks) for k in _FLOAT_VARS}
    flag = da.full(shape, int(QualityFlag.NO_INPUT), dtype=np.uint8, chunks=chunks)
    ds = _assemble(data, flag, grid, _as_days(days), lonlat)  # type: ignore[arg-type]
    # the global attributes of a tile product: make_product on one pixel of the grid, one day
    one = Grid(grid.crs, grid.resolution, grid.xmin, grid.ymax, 1, 1, grid.subpixel, grid.tile_size)
    nan = np.full((1, 1, 1), np.nan, np.float32)
    tiny = make_product(
        nan,
        nan,
        nan,
        np.zeros_like(nan),
        np.full((1, 1, 1), int(QualityFlag.NO_INPUT), np.uint8),
        grid=one,
        times=days[:1],
        min_valid_fraction=min_valid_fraction,
        model_card=cf.card,
        config=cfg,
        history=history,
        lonlat=False,
    )
    ds.attrs = dict(tiny.attrs)
    ds.attrs["smengine_grid"] = _json(grid.get_config(), "the grid")
    out = _for_writing(ds, "create_domain_store")
    for v in out.variables.values():
        if v.dims == ("time", "y", "x"):
            v.encoding["chunks"] = chunks
    return out


def _read_layout(path: Path) -> _Layout:
    import zarr

    if not _is_zarr(path):
        raise DataError(f"{path} is not a Zarr store")
    try:
        ds = xr.open_dataset(path, engine="zarr", consolidated=True, chunks=None, decode_coords="all")
    except Exception as exc:  # zarr raises many types
        raise DataError(f"cannot open {path} as a consolidated Zarr store: {exc}") from exc
    with ds:
        attrs = dict(ds.attrs)
        days = np.asarray(ds["time"].values).astype("datetime64[D]") if "time" in ds.variables else None
        variables = {str(n): str(v.dtype) for n, v in ds.data_vars.items()}
    try:
        meta: dict[str, Any] = dict(zarr.open_group(os.fspath(path), path=_MANIFEST, mode="r", zarr_format=2).attrs)
    except Exception as exc:
        raise DataError(f"{path} is not an smengine domain store (no {_MANIFEST} group: {exc})") from exc
    if meta.get("format") != FORMAT or days is None or "smengine_grid" not in attrs:
        raise DataError(f"{path} is not an smengine domain store ({_MANIFEST} format {meta.get('format')!r})")
    return _Layout(
        os.fspath(path),
        Grid.from_config(attrs["smengine_grid"]),
        days,
        int(meta["time_chunk"]),
        tuple(meta["tiles"]),
        attrs,
        variables,
    )


def _done_array(layout: _Layout, mode: str = "r") -> Any:
    import zarr

    return zarr.open_array(layout.path, path=f"{_MANIFEST}/{_DONE}", mode=mode, zarr_format=2)


def _why_incompatible(
    layout: _Layout,
    grid: Grid,
    days: np.ndarray,
    cf: Any,
    cfg: dict[str, Any],
    min_valid_fraction: float,
    time_chunk: int,
    tiles: Sequence[str],
) -> str | None:
    a = layout.attrs
    if a.get("smengine_grid") != _json(grid.get_config(), "the grid"):
        return f"its grid is {a.get('smengine_grid')} (this run: {_json(grid.get_config(), 'the grid')})"
    if layout.days.size != days.size or not np.array_equal(layout.days, days):
        return (
            f"it holds {layout.days.size} days, {layout.days[0]}…{layout.days[-1]} "
            f"(this run: {days.size}, {days[0]}…{days[-1]})"
        )
    if layout.time_chunk != int(time_chunk):
        return f"its time chunks are {layout.time_chunk} days (this run: {time_chunk})"
    extra = sorted(set(tiles) - set(layout.tiles))
    if extra:
        return f"tiles {extra[:5]}{' …' if len(extra) > 5 else ''} are not in it"
    have, want = _without_tile(a.get("smengine_config", "{}")), _without_tile(cfg)
    if have.get("engine", {}).get("forest_hash") != want.get("engine", {}).get("forest_hash"):
        return (
            f"it was made by model {str(have.get('engine', {}).get('forest_hash'))[:19]}… "
            f"(this run: {str(want.get('engine', {}).get('forest_hash'))[:19]}…)"
        )
    if have != want:
        return "it was made with other settings (smengine_config differs)"
    card = _model_card_json(cf.card) if cf.card is not None else None
    if a.get("smengine_model_card") != card:
        return "its model card differs"
    if float(a.get("min_valid_fraction", float("nan"))) != float(min_valid_fraction):
        return f"its min_valid_fraction is {a.get('min_valid_fraction')} (this run: {min_valid_fraction})"
    if set(layout.variables) != set(_VARS):
        return f"its variables are {sorted(layout.variables)}"
    return None


def _create_or_check(
    path: Path,
    grid: Grid,
    days: np.ndarray,
    cf: Any,
    *,
    tiles: Sequence[str],
    time_chunk: int,
    min_valid_fraction: float,
    chunk_days: int,
    config: dict[str, Any] | None,
    history: str | None,
    lonlat: bool,
    exist_ok: bool,
) -> _Layout:
    """Create the store (atomically), or check that the existing one is this run's."""
    import zarr

    cfg = _domain_config(cf, min_valid_fraction, chunk_days, config)
    if _is_zarr(path):
        if not exist_ok:
            raise DataError(f"{path} exists; delete it, or resume it with run_domain")
        layout = _read_layout(path)
        why = _why_incompatible(layout, grid, days, cf, cfg, min_valid_fraction, time_chunk, tiles)
        if why is not None:
            raise DataError(f"{path}: cannot resume: {why}; delete it or write to another path")
        return layout
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise DataError(f"{path} exists and is not a Zarr store (nor an empty folder)")
    ds = _template(grid, days, cf, cfg, min_valid_fraction, time_chunk, history, lonlat)
    nty, ntx = grid.tile_shape
    n_chunks = -(-days.size // time_chunk)
    with atomic_target(path, directory=True) as tmp:
        ds.to_zarr(tmp, mode="w", compute=False, consolidated=False, zarr_format=2)
        root = zarr.open_group(os.fspath(tmp), mode="r+", zarr_format=2)
        grp = root.create_group(_MANIFEST, attributes={"format": FORMAT, "time_chunk": time_chunk, "tiles": tiles})
        grp.create_array(
            _DONE,
            shape=(nty, ntx, n_chunks, _MARK),
            chunks=(1, 1, 1, _MARK),
            dtype="uint8",
            fill_value=0,
            compressors=None,
            chunk_key_encoding={"name": "v2", "separator": "."},
        )
        zarr.consolidate_metadata(os.fspath(tmp), zarr_format=2)
    log.info(
        "created domain store %s: %d×%d pixels, %d tiles, %d days in chunks of %d",
        path,
        grid.height,
        grid.width,
        len(tiles),
        days.size,
        time_chunk,
    )
    return _read_layout(path)


def _tile_ids(grid: Grid, tiles: Iterable[str | Tile] | None) -> list[str]:
    if tiles is None:
        return [t.id for t in grid.tiles()]
    out = []
    for t in tiles:
        tid = t.id if isinstance(t, Tile) else str(t)
        grid.tile(tid)  # raises ConfigError for an id outside the grid
        out.append(tid)
    if len(set(out)) != len(out):
        raise ConfigError("tiles: a tile is listed twice")
    return out


def create_domain_store(
    path: str | os.PathLike[str],
    grid: Grid,
    days: Any,
    forest: Any,
    *,
    tiles: Iterable[str | Tile] | None = None,
    time_chunk: int = 32,
    min_valid_fraction: float = 0.5,
    chunk_days: int = 8,
    config: dict[str, Any] | None = None,
    history: str | None = None,
    lonlat: bool = True,
    exist_ok: bool = False,
) -> Path:
    """Create an empty domain store: the product layout for ``grid`` and ``days``, no data.

    Parameters
    ----------
    path : str or path-like
        The Zarr store (a folder) to create; it is created under a temporary name beside
        it and renamed into place.
    grid : Grid
        The domain grid; its tiles (``grid.tiles()``) are the regions' tiles, and its
        ``tile_size`` the chunks' rows and columns.
    days : array_like of dates
        The product's UTC days, increasing (gaps allowed).
    forest : CompiledForest, Forest, fitted scikit-learn forest or path
        The model: its card and content hash are recorded as in a tile product.
    tiles : iterable of str or Tile, optional
        Tiles the product will hold (default every tile of ``grid``); the others stay
        fill values and are not waited for by :func:`missing_regions`.
    time_chunk : int, optional
        Days per chunk (default 32): a region is one tile × one time chunk.
    min_valid_fraction, chunk_days, config : optional
        As for :func:`smengine.engine.run`; recorded in ``smengine_config`` (without the
        tile-specific ``engine.tile``/``engine.tile_path``).
    history : str, optional
        The ``history`` attribute (default: creation time and smengine version).
    lonlat : bool, optional
        Add the 2-D ``lat``/``lon`` coordinates (default True, as tile products).
    exist_ok : bool, optional
        If ``path`` already holds a domain store made for the same grid, days, chunking,
        tiles, model and settings, keep it (default False: raise).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ConfigError
        Bad arguments (``time_chunk`` < 1, no days, a tile outside ``grid``).
    DataError
        ``path`` exists (and is not a matching domain store with ``exist_ok``), or another
        process holds its lock.

    Notes
    -----
    Variables, dtypes, fill values, encodings and attributes are those of a tile product
    (:func:`smengine.product.make_product`, :func:`smengine.product.write_zarr`);
    ``smengine_grid`` is the domain grid. Data chunks are not written: ``sm`` and the other
    real variables read NaN, ``quality_flag`` 0 (it has no fill value) in regions not yet
    written — :func:`missing_regions` says which.
    """
    if not isinstance(grid, Grid):
        raise ConfigError(f"grid should be a smengine.grid.Grid, got {type(grid).__name__}")
    if int(time_chunk) < 1:
        raise ConfigError(f"time_chunk should be >= 1, got {time_chunk}")
    d = as_days(days, what="days", increasing=True)
    if d.size == 0:
        raise ConfigError("days: no days given")
    p = Path(path).expanduser()
    cf = _load_forest(forest)
    with _store_lock(p, 0.0):
        _create_or_check(
            p,
            grid,
            d,
            cf,
            tiles=_tile_ids(grid, tiles),
            time_chunk=int(time_chunk),
            min_valid_fraction=min_valid_fraction,
            chunk_days=chunk_days,
            config=config,
            history=history,
            lonlat=lonlat,
            exist_ok=exist_ok,
        )
    return p


# ---------------------------------------------------------------------------- regions
def _marker_of(ds: xr.Dataset) -> np.ndarray:
    """Kind byte + digest: the inputs digest a product records, else a digest of its values."""
    out = np.zeros(_MARK, np.uint8)
    inputs = str(ds.attrs.get("smengine_inputs", ""))
    if re.fullmatch(r"blake2b:[0-9a-f]{40}", inputs):
        out[0] = _KIND_INPUTS
        out[1:] = np.frombuffer(bytes.fromhex(inputs[8:]), np.uint8)
    else:
        h = hashlib.blake2b(digest_size=_DIGEST)
        for name in _VARS:
            h.update(np.ascontiguousarray(ds[name].values).data)
        out[0] = _KIND_VALUES
        out[1:] = np.frombuffer(h.digest(), np.uint8)
    return out


def _inputs_marker(digest: str) -> np.ndarray:
    out = np.zeros(_MARK, np.uint8)
    out[0] = _KIND_INPUTS
    out[1:] = np.frombuffer(bytes.fromhex(digest.split(":", 1)[1]), np.uint8)
    return out


def _set_marks(layout: _Layout, tile: Tile, chunks: slice, mark: np.ndarray) -> None:
    n = chunks.stop - chunks.start
    _done_array(layout, "r+")[tile.row, tile.col, chunks, :] = np.broadcast_to(mark, (n, _MARK)).copy()


def _write_data(layout: _Layout, ds: xr.Dataset, tile: Tile, t: slice) -> None:
    """The region's chunks, data variables only (no coordinate, no metadata)."""
    sub = xr.Dataset({n: (("time", "y", "x"), np.asarray(ds[n].values)) for n in _VARS})
    region = {
        "time": t,
        "y": slice(tile.row_off, tile.row_off + tile.height),
        "x": slice(tile.col_off, tile.col_off + tile.width),
    }
    sub.to_zarr(layout.path, region=region, mode="r+", consolidated=False, zarr_format=2)


def _check_region_product(layout: _Layout, ds: xr.Dataset, where: str) -> None:
    if set(map(str, ds.data_vars)) != set(layout.variables):
        raise ValidationError(
            f"{where}: variables {sorted(map(str, ds.data_vars))} differ from the store's {sorted(layout.variables)}"
        )
    for name, dtype in layout.variables.items():
        if str(ds[name].dtype) != dtype:
            raise ValidationError(f"{where}: {name} is {ds[name].dtype}, {dtype} in the store")
    for key in ("Conventions", "smengine_model_card", "min_valid_fraction"):
        if ds.attrs.get(key) != layout.attrs.get(key):
            raise ValidationError(f"{where}: attribute {key} differs from the store's")
    try:
        have = _without_tile(ds.attrs.get("smengine_config", "{}"))
    except ValueError as exc:
        raise ValidationError(f"{where}: its smengine_config is not JSON") from exc
    if have != _without_tile(layout.attrs.get("smengine_config", "{}")):
        raise ValidationError(f"{where}: it was made with another model or settings (smengine_config differs)")


def _write_region(layout: _Layout, ds: xr.Dataset, tile: Tile | None = None) -> list[Region]:
    _check_product(ds, "write_region")
    where = f"write_region into {layout.path}"
    found = _tile_of(layout.grid, _grid_of(ds), where)
    if tile is not None and found != tile:
        raise ValidationError(f"{where}: the product is tile {found.id}, not {tile.id}")
    if found.id not in layout.tiles:
        raise ValidationError(f"{where}: tile {found.id} is not one of the store's tiles")
    days = np.asarray(ds["time"].values).astype("datetime64[D]")
    pos = np.searchsorted(layout.days, days)
    inside = (pos < layout.days.size) & (layout.days[np.minimum(pos, layout.days.size - 1)] == days)
    if days.size == 0 or not inside.all():
        raise ValidationError(f"{where}: days {days[~inside][:5]} are not the store's")
    t0, t1 = int(pos[0]), int(pos[-1]) + 1
    tc = layout.time_chunk
    if t1 - t0 != days.size or t0 % tc or (t1 % tc and t1 != layout.days.size):
        raise ValidationError(
            f"{where}: days {days[0]}…{days[-1]} are not whole time chunks of the store "
            f"({tc} days each, from {layout.days[0]})"
        )
    _check_region_product(layout, ds, where)
    chunks = slice(t0 // tc, -(-t1 // tc))
    _set_marks(layout, found, chunks, np.zeros(_MARK, np.uint8))  # incomplete from here on
    _write_data(layout, ds, found, slice(t0, t1))
    _set_marks(layout, found, chunks, _marker_of(ds))  # complete: after all of its data
    regions = [layout.region(found, k) for k in range(chunks.start, chunks.stop)]
    log.debug("wrote %s: tile %s, days %s…%s", layout.path, found.id, days[0], days[-1])
    return regions


def write_region(path: str | os.PathLike[str], ds: xr.Dataset) -> list[Region]:
    """Write one tile product into its region of a domain store, then mark it complete.

    Parameters
    ----------
    path : str or path-like
        A store made by :func:`create_domain_store`.
    ds : xarray.Dataset
        A product (:func:`smengine.product.make_product`, :func:`smengine.engine.predict`)
        of one tile of the domain grid, for whole time chunks of the store's days.

    Returns
    -------
    list of Region
        The regions written (one per time chunk).

    Raises
    ------
    ValidationError
        The product is not a tile of the store's grid (or not one of its tiles), its days
        are not whole time chunks of the store's, or its variables, model or settings
        differ from the store's.
    DataError
        ``path`` is not a domain store.

    Notes
    -----
    The region's markers are cleared, its chunks written (only those; chunk files are
    written to a temporary name and renamed), then its markers set: an interrupted write
    leaves the region unmarked, and writing it again replaces it whole. Writers of
    different tiles never touch the same file. The same product gives the same bytes.
    """
    return _write_region(_read_layout(Path(path).expanduser()), ds)


def _marks(layout: _Layout) -> np.ndarray:
    return np.asarray(_done_array(layout)[...])


def missing_regions(path: str | os.PathLike[str]) -> list[Region]:
    """The regions of a domain store's tiles that are not complete.

    Parameters
    ----------
    path : str or path-like
        A store made by :func:`create_domain_store`.

    Returns
    -------
    list of Region
        Empty when the product is complete.
    """
    layout = _read_layout(Path(path).expanduser())
    return _missing(layout, _marks(layout), layout.tiles)


def _missing(layout: _Layout, marks: np.ndarray, tiles: Iterable[str]) -> list[Region]:
    out = []
    for tid in tiles:
        t = layout.grid.tile(tid)
        out += [layout.region(t, k) for k in range(layout.n_chunks) if not marks[t.row, t.col, k, 0]]
    return out


def _remove_leftovers(path: Path) -> int:
    """Remove the temporary chunk files (``*.<32 hex>.partial``) a killed writer left in the
    store, and temporary stores beside it; returns how many. Only with no writer running."""
    n = 0
    if path.is_dir():
        for folder, _dirs, files in os.walk(path):
            for f in files:
                if _PARTIAL.search(f):
                    try:
                        os.unlink(os.path.join(folder, f))
                        n += 1
                    except OSError as exc:
                        log.warning("cannot remove %s: %s", os.path.join(folder, f), exc)
    if path.parent.is_dir():
        for p in path.parent.iterdir():
            m = TEMP_NAME.match(p.name)
            if m is not None and m["name"] == path.name and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                n += 1
    if n:
        log.warning("%s: removed %d temporary file(s) left by an interrupted run", path, n)
    return n


# ---------------------------------------------------------------------------- the run
def _region_product(
    runner: TileRunner, days: np.ndarray, out: dict[str, np.ndarray], config: dict[str, Any] | None, inputs: str
) -> xr.Dataset:
    """The tile product of one region, as :func:`smengine.engine.run` makes it, without the
    ``lat``/``lon`` coordinates (the store has them; each costs a pyproj transformer)."""
    ds = make_product(
        out["sm"],
        out["uncertainty"],
        out["subpixel_sd"],
        out["valid_fraction"],
        out["quality_flag"],
        grid=runner.grid,
        times=days,
        min_valid_fraction=runner.min_valid_fraction,
        model_card=runner.forest.card,
        config=_engine_config(runner, config),
        lonlat=False,
    )
    ds.attrs["smengine_inputs"] = inputs
    return ds


def _tile_task(
    store: TileStore | str,
    forest: Any,
    *,
    layout: _Layout,
    row: int,
    col: int,
    resume: bool,
    min_valid_fraction: float,
    n_threads: int | None,
    chunk_days: int,
    config: dict[str, Any] | None,
    max_missing: float | None = None,
    strict: bool = False,
) -> tuple[str, list[Region], list[Region], EngineStats, int, str]:
    """One tile of :func:`run_domain`: (tile id, written, skipped, stats, days, tile path). Each
    region passes the run's rules (:func:`smengine.engine._check_output`) before it is written
    and marked: a rejected one raises and stays unmarked (the regions before it stay)."""
    s = _open_store(store)
    tile = layout.grid.tile(row, col)
    if _tile_of(layout.grid, s.grid, str(s.path)) != tile:  # the path now names another tile
        raise ValidationError(f"{s.path}: it is no longer tile {tile.id} of the domain")
    spans = [layout.days[layout.chunk_slice(k)] for k in range(layout.n_chunks)]
    digests = _input_digests(s, [d[-1] for d in spans])
    marks = np.asarray(_done_array(layout)[tile.row, tile.col])
    written: list[Region] = []
    skipped: list[Region] = []
    pending = []
    for k, d in enumerate(spans):
        region = layout.region(tile, k)
        if resume and marks[k, 0]:
            if not np.array_equal(marks[k], _inputs_marker(digests[d[-1]])):
                why = (
                    "the tile's data changed since it was written"
                    if marks[k, 0] == _KIND_INPUTS
                    else "it records no inputs (written from a product without smengine_inputs)"
                )
                raise DataError(
                    f"{layout.path}: region {tile.id} {d[0]}…{d[-1]} not resumed: {why} ({s.path}); "
                    "rerun with resume=False to redo every region"
                )
            skipped.append(region)
            continue
        pending.append((region, d, digests[d[-1]]))
    runner = None
    for _region, d, digest in pending:
        if runner is None:
            runner = TileRunner(
                s, forest, min_valid_fraction=min_valid_fraction, n_threads=n_threads, chunk_days=chunk_days
            )
        before = EngineStats(**vars(runner.stats))
        req, arrays = runner.predict_arrays(d)  # skipped regions before it: SWI state only
        _check_output(
            _stats_since(runner.stats, before),
            f"run_domain into {layout.path}: region {tile.id} {d[0]}..{d[-1]}",
            max_missing=max_missing,
            strict=strict,
        )
        written += _write_region(layout, _region_product(runner, req, arrays, config, digest), tile)
    stats = runner.stats if runner is not None else EngineStats()
    return tile.id, written, skipped, stats, int(layout.days.size), str(s.path)


def run_domain(
    stores: Iterable[TileStore | str | os.PathLike[str]],
    forest: Any,
    path: str | os.PathLike[str],
    days: Any = None,
    *,
    grid: Grid | None = None,
    client: Any = None,
    resume: bool = True,
    time_chunk: int = 32,
    min_valid_fraction: float = 0.5,
    n_threads: int | None = None,
    chunk_days: int = 8,
    config: dict[str, Any] | None = None,
    retries: int = 2,
    on_error: str = "raise",
    progress: Callable[[int], Any] | None = None,
    max_missing: float | None = None,
    history: str | None = None,
    lonlat: bool = True,
) -> DomainResult:
    """Predict a domain into one Zarr store: every tile into its region, resumably.

    Parameters
    ----------
    stores : iterable of TileStore or paths
        The tiles (each a tile of ``grid``, at most once).
    forest : see :func:`smengine.engine.predict`
    path : str or path-like
        The domain store: created (:func:`create_domain_store`, for this run's tiles), or
        reopened and checked (same grid, days, time chunking, model and settings; the tiles
        among its tiles). To fill a store in several runs (batches of tiles), create it
        first with :func:`create_domain_store` for every tile.
    days : None, slice of dates or array_like of dates, optional
        The product's days (default: every day of any tile). Days a tile lacks are NaN with
        flag ``no_input`` in its region.
    grid : Grid, optional
        The domain grid (default: the smallest grid holding the tiles, whose tile (0, 0) is
        the north-westernmost tile; pass the grid the tiles were cut from to keep their ids).
    client : distributed.Client, optional
        Run one task per tile on a Dask cluster: the forest is scattered once, each task
        opens its tile from its path and writes its regions itself (no data through the
        scheduler). ``n_threads`` applies per task: match it to the workers' threads.
    resume : bool, optional
        Skip the regions already complete (default True); False rewrites every region.
    time_chunk : int, optional
        Days per chunk, and per region (default 32); fixed when the store is created.
    min_valid_fraction, n_threads, chunk_days, config, max_missing : optional
        As for :func:`smengine.engine.run`; an output is a region here: a region rejected by
        ``max_missing`` (or, when warnings are errors, by its data-loss warning) is not written
        nor marked complete, and the tile fails.
    retries : int, optional
        With ``client``: reruns of a tile task that raised (default 2). A task whose worker
        died is rerun by the scheduler regardless (up to its ``allowed-failures``, 3).
    on_error : {"raise", "skip"}, optional
        On a failing tile: raise (default), or record it in ``failed`` and go on.
    progress : callable, optional
        Called with the number of days of each tile finished.
    history : str, optional
        The ``history`` attribute of a new store.
    lonlat : bool, optional
        ``lat``/``lon`` coordinates in a new store (default True).

    Returns
    -------
    DomainResult

    Raises
    ------
    ConfigError
        Bad arguments; a tile given twice.
    DataError
        The store exists but was made for another grid, days, model or settings; a
        complete region was made from other tile data; another process writes the store;
        a region of a tile that succeeded is not complete at the end (never expected).
    ValidationError
        A tile that is not a tile of ``grid``.

    Notes
    -----
    Only one run may write a store at a time (a lock file beside it; a second run fails at
    once). Each region is marked complete only after its data are written (see the module
    docstring), so whatever is interrupted — a killed worker, a killed run — the next
    attempt or run rewrites exactly the unmarked regions.
    """
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error should be 'raise' or 'skip', got {on_error!r}")
    if int(time_chunk) < 1:
        raise ConfigError(f"time_chunk should be >= 1, got {time_chunk}")
    out = Path(path).expanduser()
    cf = _load_forest(forest)
    failed: list[tuple[str, str]] = []
    codes: dict[str, int] = {}
    opened: list[tuple[Any, TileStore]] = []
    for st in stores:
        try:
            opened.append((st, _open_store(st)))
        except Exception as exc:
            if on_error == "raise":
                raise
            _failed(failed, codes, st, exc)
    if not opened:
        raise ConfigError("run_domain: no tiles" + (" could be opened" if failed else ""))
    dom = grid if grid is not None else _bounding_grid([s.grid for _, s in opened])
    placed: list[tuple[Any, TileStore, Tile]] = []
    for st, s in opened:
        try:
            placed.append((st, s, _tile_of(dom, s.grid, str(s.path))))
        except Exception as exc:
            if on_error == "raise":
                raise
            _failed(failed, codes, st, exc)
    ids = [t.id for _, _, t in placed]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"run_domain: tiles {dup} are given more than once")
    d = _domain_days(days, [s.times for _, s, _ in placed])
    kw: dict[str, Any] = {
        "resume": resume,
        "min_valid_fraction": min_valid_fraction,
        "n_threads": n_threads,
        "chunk_days": chunk_days,
        "config": config,
        "max_missing": max_missing,
        "strict": _warnings_are_errors(),
    }
    results = []
    with _store_lock(out, 0.0):
        layout = _create_or_check(
            out,
            dom,
            d,
            cf,
            tiles=ids,
            time_chunk=int(time_chunk),
            min_valid_fraction=min_valid_fraction,
            chunk_days=chunk_days,
            config=config,
            history=history,
            lonlat=lonlat,
            exist_ok=True,
        )
        _remove_leftovers(out)
        if client is None:
            for st, s, t in placed:
                try:
                    res = _tile_task(s, cf, layout=layout, row=t.row, col=t.col, **kw)
                except Exception as exc:
                    if on_error == "raise":
                        raise
                    _failed(failed, codes, st, exc)
                    continue
                results.append(res)
                if progress is not None:
                    progress(res[4])
        else:
            cf_remote = client.scatter(cf, broadcast=True)
            futures = {
                client.submit(
                    _tile_task,
                    str(s.path),  # memory maps stay on the workers
                    cf_remote,
                    layout=layout,
                    row=t.row,
                    col=t.col,
                    pure=False,
                    retries=int(retries),
                    key=f"smengine-domain-{t.id}-{os.urandom(4).hex()}",
                    **kw,
                ): str(s.path)
                for _, s, t in placed
            }
            results += _gather(futures, on_error, failed, codes, lambda res: progress(res[4]) if progress else None)
        _remove_leftovers(out)
        marks = _marks(layout)
    order = {tid: k for k, tid in enumerate(ids)}
    results.sort(key=lambda r: order[r[0]])
    lost = _missing(layout, marks, [r[0] for r in results])
    if lost:
        raise DataError(
            f"{out}: {len(lost)} region(s) of tiles that finished are not complete, first {lost[0]}; "
            "run again to redo them"
        )
    written: list[Region] = []
    skipped: list[Region] = []
    stats = EngineStats()
    for _tid, w, sk, st_, _n, _p in results:
        written += w
        skipped += sk
        stats.add(st_)
    stats.warn_if_degraded(f"run_domain into {out}", max_missing=max_missing)
    missing = tuple(_missing(layout, marks, layout.tiles))
    log.info(
        "%s: wrote %d regions, skipped %d complete; %d tile(s) failed; %d region(s) missing",
        out,
        len(written),
        len(skipped),
        len(failed),
        len(missing),
    )
    return DomainResult(out, tuple(written), tuple(skipped), tuple(failed), stats, dict(codes), missing)
