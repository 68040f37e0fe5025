"""The engine for chains that hold their covariates in memory: xarray in, xarray out.

:func:`predict_dataset` runs the fused kernel on covariates given as an
:class:`xarray.Dataset` (in memory or Dask-backed) instead of a tile file, and
:class:`Stepper` advances one day at a time with a saved and restored SWI state
(restart files, as land-surface models have). Both are exported by
:mod:`smengine.engine`; :meth:`smengine.tiles.TileStore.to_dataset` writes a tile's
covariates in exactly the form they take.

The covariate Dataset
---------------------
Dimensions ``y_sub``, ``x_sub`` are the sub-pixel grid of ``grid`` (the Dataset's
``smengine_grid`` attribute, a :meth:`smengine.grid.Grid.get_config` JSON, or ``grid=``);
``time`` holds UTC days. A variable is

* a **static sub-pixel layer**: dims ``(y_sub, x_sub)``;
* a **daily sub-pixel layer**: dims ``(time, y_sub, x_sub)``;
* a **coarse layer kept at its resolution**, either as the tile store keeps it —
  dims ``(time, <cell dim>)`` with an ``smengine_index`` attribute naming an int32
  ``(y_sub, x_sub)`` variable that gives each sub-pixel's cell (−1: none) — or **on its
  own grid**: dims ``(time, <y>, <x>)`` (or ``(<y>, <x>)``, static) with 1-D coordinates of
  its cell centres, in the CRS of its CF ``grid_mapping`` variable (``crs_wkt`` or
  ``spatial_ref``), of the Dataset's rioxarray CRS, or, for ``lat``/``lon``
  (``latitude``/``longitude``) dimensions, WGS 84; each sub-pixel takes the cell that
  contains its centre (the rule ingest's coarse storage uses).

``units`` attributes are checked and converted against the model card as for tiles.
Variables the forest does not use are ignored.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smengine._days import as_day, as_days
from smengine.errors import ConfigError, DataError, ValidationError
from smengine.features import parse_swi_feature_name
from smengine.grid import Grid, transformer
from smengine.tiles import CoarseLayer

log = logging.getLogger(__name__)

__all__ = ["MemoryStore", "Stepper", "predict_dataset", "store_from_dataset"]

_EPOCH = np.datetime64("1970-01-01", "D")
_SUB = ("y_sub", "x_sub")
_LATLON = ({"lat", "latitude"}, {"lon", "longitude"})
#: Format of a :meth:`Stepper.save_state` file.
STATE_FORMAT = "smengine-stepper-state/1"


@dataclass
class MemoryStore:
    """Covariates of one grid in memory, in the form :class:`smengine.tiles.TileStore` has
    (what :class:`smengine.engine.TileRunner` reads): static ``(Fs, Y, X)``, dynamic
    ``(T, Fd, Y, X)`` float32 arrays and coarse layers with their index maps."""

    grid: Grid
    times: np.ndarray
    static: np.ndarray
    dynamic: np.ndarray
    coarse: dict[str, CoarseLayer]
    static_names: list[str]
    dynamic_names: list[str]
    coarse_names: list[str]
    units: dict[str, str] = field(default_factory=dict)
    tile_id: str = "dataset"
    path: str = "<xarray.Dataset>"
    #: Latitude where the water balance takes Ra (degrees north; None: the centre of ``grid``). A block
    #: of a larger grid carries its parent's, so that every block sees the values the whole grid would.
    centre_latitude: float | None = None

    @property
    def feature_names(self) -> list[str]:
        return self.static_names + self.dynamic_names + self.coarse_names


# --------------------------------------------------------------------------------------
# Dataset -> arrays
# --------------------------------------------------------------------------------------
def _grid_of(ds: Any, grid: Grid | None) -> Grid:
    if grid is not None:
        if not isinstance(grid, Grid):
            raise ConfigError(f"grid should be a smengine.grid.Grid, got {type(grid).__name__}")
        return grid
    cfg = ds.attrs.get("smengine_grid")
    if not cfg:
        raise ConfigError(
            "the covariate Dataset has no 'smengine_grid' attribute: pass grid=Grid(...) (the 1-km grid whose "
            "sub-pixels are the y_sub/x_sub dimensions)"
        )
    return Grid.from_config(json.loads(cfg) if isinstance(cfg, str) else dict(cfg))


def _needed(names: Sequence[str], card: Any = None) -> set[str]:
    """Variables the forest reads: its features, the sources of its SWI features and, for its
    water-balance features, the layers its model card's ``water_balance`` names."""
    from smengine.engine import _card_water_balance

    out = set()
    for n in names:
        out.add(n)
        swi = parse_swi_feature_name(n)
        if swi is not None:
            out.add(swi[0])
    wb = _card_water_balance(card) if card is not None else None
    if wb is not None and set(wb.names) & set(names):
        out.update(n for n in (wb.precipitation, wb.temperature, wb.sand, wb.clay) if n is not None)
    return out


def _crs_of(ds: Any, var: Any, grid: Grid) -> Any:
    from pyproj import CRS

    ydim, xdim = var.dims[-2:]
    if ydim.lower() in _LATLON[0] and xdim.lower() in _LATLON[1]:
        return CRS.from_epsg(4326)
    gm = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
    if gm and gm in ds.variables:
        a = ds[gm].attrs
        wkt = a.get("crs_wkt") or a.get("spatial_ref")
        if wkt:
            return CRS.from_user_input(wkt)
    rio = getattr(ds, "rio", None)
    if rio is not None:
        try:
            if ds.rio.crs is not None:
                return CRS.from_user_input(ds.rio.crs)
        except Exception:  # rioxarray missing coordinates: fall back to the grid's CRS
            pass
    return grid.pyproj_crs


def _edges(c: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    """Cell edges (increasing) of 1-D centre coordinates and whether the axis decreases."""
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 1 or c.size < 1 or not np.isfinite(c).all():
        raise ValidationError(f"coordinate {name!r} should be 1-D and finite to place its cells")
    if c.size == 1:
        raise ValidationError(f"coordinate {name!r} has one value: its cell size is unknown")
    d = np.diff(c)
    if not ((d > 0).all() or (d < 0).all()):
        raise ValidationError(f"coordinate {name!r} should be strictly monotonic")
    dec = bool(d[0] < 0)
    s = c[::-1] if dec else c
    mid = (s[1:] + s[:-1]) / 2
    return np.concatenate([[s[0] - (s[1] - s[0]) / 2], mid, [s[-1] + (s[-1] - s[-2]) / 2]]), dec


def _cell_index(ds: Any, name: str, grid: Grid, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    """(index (h, w) into ``cells``, cells: flat indices into the layer's last two axes) for the
    sub-pixels ``rows, cols`` of ``grid`` of a layer on its own grid."""
    var = ds[name]
    ydim, xdim = var.dims[-2:]
    ye, ydec = _edges(ds[ydim].values, ydim)
    xe, xdec = _edges(ds[xdim].values, xdim)
    r = np.arange(rows.start, rows.stop)
    c = np.arange(cols.start, cols.stop)
    rr, cc = np.meshgrid(r, c, indexing="ij")
    x, y = grid.xy(rr, cc, subpixel=True)
    crs = _crs_of(ds, var, grid)
    sx, sy = transformer(grid.pyproj_crs, crs).transform(x, y)
    sx, sy = np.asarray(sx, np.float64), np.asarray(sy, np.float64)
    if crs.is_geographic:  # wrap longitudes into the layer's range
        sx = (sx - xe[0]) % 360.0 + xe[0]
    iy = np.searchsorted(ye, sy, side="right") - 1
    ix = np.searchsorted(xe, sx, side="right") - 1
    ny, nx = ye.size - 1, xe.size - 1
    ok = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
    iy = np.where(ydec, ny - 1 - iy, iy)
    ix = np.where(xdec, nx - 1 - ix, ix)
    flat = np.where(ok, iy * nx + ix, 0)
    cells, inv = np.unique(flat[ok], return_inverse=True)
    index = np.full(rr.shape, -1, np.int32)
    index[ok] = inv.astype(np.int32)
    return index, cells


def _float32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a), dtype=np.float32)


def _check_sub(var: Any, name: str, grid: Grid) -> None:
    if tuple(var.dims[-2:]) != _SUB:
        return
    ny, nx = grid.subpixel_shape
    have = (var.sizes["y_sub"], var.sizes["x_sub"])
    if have != (ny, nx):
        raise ValidationError(f"variable {name!r} has {have} sub-pixels (y_sub, x_sub); the grid has {(ny, nx)}")


def _times(ds: Any) -> np.ndarray:
    if "time" not in ds.coords and "time" not in ds.dims:
        return np.array([], dtype="datetime64[D]")
    t = ds["time"].values
    t = np.atleast_1d(t)
    days = as_days(t, what="time of the covariate Dataset", increasing=True)
    return days


def store_from_dataset(
    ds: Any,
    names: Sequence[str],
    grid: Grid | None = None,
    *,
    window: tuple[slice, slice] | None = None,
    cache: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    card: Any = None,
    centre_latitude: float | None = None,
) -> MemoryStore:
    """The forest's covariates (``names``) of a Dataset as a :class:`MemoryStore`.

    Parameters
    ----------
    ds : xarray.Dataset
        Covariates in the form of the module docstring.
    names : sequence of str
        The forest's feature names (SWI features bring their source layer).
    grid : Grid, optional
        Default: the Dataset's ``smengine_grid`` attribute.
    window : (slice, slice), optional
        Pixel rows and columns of ``grid`` to take (a block of the grid; the store's grid is
        that block's).
    cache : dict, optional
        Index maps of coarse layers on their own grid, reused between calls with the same
        window (a :class:`Stepper` day after day).
    card : ModelCard or dict, optional
        The forest's model card: the layers of its ``water_balance`` are taken too.
    centre_latitude : float, optional
        Where the water balance takes Ra (default: the centre of ``grid``, not of the window's
        block, so that blocks see the values of the whole grid).

    Returns
    -------
    MemoryStore
    """
    g = _grid_of(ds, grid)
    k = g.subpixel
    if window is None:
        prow, pcol = slice(0, g.height), slice(0, g.width)
    else:
        prow, pcol = window
    rows, cols = slice(prow.start * k, prow.stop * k), slice(pcol.start * k, pcol.stop * k)
    sub = _block_grid(g, (prow, pcol))
    want = _needed(names, card)
    times = _times(ds)
    T = times.size
    h, w = sub.subpixel_shape
    static_n, dyn_n, coarse_n = [], [], []
    static_a, dyn_a, coarse_l = [], [], {}
    units: dict[str, str] = {}
    for name in ds.data_vars:  # the Dataset's order; missing ones are named by the engine's plan
        if name not in want:
            continue
        var = ds[name]
        units[name] = str(var.attrs.get("units", ""))
        _check_sub(var, name, g)
        dims = tuple(var.dims)
        if dims == _SUB:
            static_n.append(name)
            static_a.append(_float32(var.isel(y_sub=rows, x_sub=cols).values))
        elif dims == ("time", *_SUB):
            dyn_n.append(name)
            dyn_a.append(_float32(var.isel(y_sub=rows, x_sub=cols).values))
        elif var.attrs.get("smengine_index"):
            iname = var.attrs["smengine_index"]
            if iname not in ds.variables or tuple(ds[iname].dims) != _SUB:
                raise ValidationError(f"coarse layer {name!r}: index variable {iname!r} should be (y_sub, x_sub)")
            if len(dims) != 2 or dims[0] != "time":
                raise ValidationError(f"coarse layer {name!r} should be (time, cell), got {dims}")
            idx = np.asarray(ds[iname].isel(y_sub=rows, x_sub=cols).values).astype(np.int32)
            vals = _float32(var.values)
            coarse_n.append(name)
            coarse_l[name] = CoarseLayer(vals, np.ascontiguousarray(idx))
        elif len(dims) in (2, 3) and (len(dims) == 2 or dims[0] == "time") and all(d in ds.coords for d in dims[-2:]):
            key = f"{name}:{prow.start}:{prow.stop}:{pcol.start}:{pcol.stop}"
            if cache is not None and key in cache:
                idx, cells = cache[key]
            else:
                idx, cells = _cell_index(ds, name, g, rows, cols)
                if cache is not None:
                    cache[key] = (idx, cells)
            ny_c, nx_c = var.shape[-2:]
            if cells.size:
                r0, r1 = int(cells.min() // nx_c), int(cells.max() // nx_c) + 1
                c0 = int((cells % nx_c).min())
                c1 = int((cells % nx_c).max()) + 1
                box = var.isel({dims[-2]: slice(r0, r1), dims[-1]: slice(c0, c1)}).values
                box = np.asarray(box, dtype=np.float32).reshape(*box.shape[:-2], -1)
                local = (cells // nx_c - r0) * (c1 - c0) + (cells % nx_c - c0)
                vals = box[..., local]
            else:
                vals = np.zeros((*var.shape[:-2], 0), np.float32)
            if len(dims) == 2:  # static on its own grid: expand to sub-pixels once
                field_ = np.where(idx >= 0, vals[np.maximum(idx, 0)], np.nan).astype(np.float32)
                static_n.append(name)
                static_a.append(field_)
            else:
                coarse_n.append(name)
                coarse_l[name] = CoarseLayer(np.ascontiguousarray(vals, np.float32), idx)
        else:
            raise ValidationError(
                f"variable {name!r} has dims {dims}: expected (y_sub, x_sub), (time, y_sub, x_sub), a coarse "
                "(time, cell) layer with an smengine_index attribute, or a layer on its own grid with 1-D "
                "coordinates"
            )
    for name in dyn_n + coarse_n:
        n_t = ds[name].sizes["time"]
        if n_t != T:
            raise ValidationError(f"variable {name!r} has {n_t} days, the time coordinate {T}")
    static = np.stack(static_a) if static_a else np.zeros((0, h, w), np.float32)
    dynamic = np.ascontiguousarray(np.stack(dyn_a, axis=1)) if dyn_a else np.zeros((0, 0, h, w), np.float32)
    return MemoryStore(
        grid=sub,
        times=times,
        static=np.ascontiguousarray(static),
        dynamic=dynamic,
        coarse=coarse_l,
        static_names=static_n,
        dynamic_names=dyn_n,
        coarse_names=coarse_n,
        units=units,
        tile_id=str(ds.attrs.get("tile_id", "dataset")),
        centre_latitude=_centre_latitude(g) if centre_latitude is None else float(centre_latitude),
    )


def _centre_latitude(g: Grid) -> float:
    """Latitude of the centre of ``g`` (:func:`smengine.features.grid_centre_latitude`)."""
    from smengine.features import grid_centre_latitude

    return grid_centre_latitude(g)


# --------------------------------------------------------------------------------------
# predict_dataset
# --------------------------------------------------------------------------------------
def _is_dask(ds: Any, names: set[str]) -> bool:
    return any(n in ds.data_vars and ds[n].chunks is not None for n in names)


def _blocks(ds: Any, grid: Grid, names: set[str], block_pixels: int | None) -> list[tuple[slice, slice]]:
    """Pixel-row × pixel-column blocks: the Dask chunks of the sub-pixel dimensions (rounded to
    whole pixels), else ``block_pixels`` square blocks."""
    k = grid.subpixel
    rows = cols = None
    for n in names:
        if n in ds.data_vars and ds[n].chunks is not None and "y_sub" in ds[n].dims:
            ch = dict(zip(ds[n].dims, ds[n].chunks, strict=True))
            rows, cols = ch["y_sub"], ch["x_sub"]
            break

    def cuts(chunks: tuple[int, ...] | None, n_pix: int) -> list[int]:
        if chunks is None:
            step = max(1, int(block_pixels or n_pix))
            return list(range(0, n_pix, step)) + [n_pix]
        edges = np.cumsum((0, *chunks)) // k
        return sorted(set(int(e) for e in edges) | {0, n_pix})

    rc, cc = cuts(rows, grid.height), cuts(cols, grid.width)
    pairs_r = list(zip(rc[:-1], rc[1:], strict=True))
    pairs_c = list(zip(cc[:-1], cc[1:], strict=True))
    return [(slice(a, b), slice(c, d)) for a, b in pairs_r for c, d in pairs_c]


def _predict_block(
    ds: Any,
    names: list[str],
    grid: Grid,
    window: tuple[slice, slice] | None,
    forest: Any,
    kw: dict[str, Any],
    centre_latitude: float | None = None,
) -> dict[str, np.ndarray]:
    from smengine.engine import TileRunner

    store = store_from_dataset(ds, names, grid, window=window, card=forest.card, centre_latitude=centre_latitude)
    runner = TileRunner(store, forest, **kw)
    _, out = runner.predict_arrays(None)
    return out


_OUT = ("sm", "uncertainty", "subpixel_sd", "valid_fraction", "quality_flag")


def predict_dataset(
    covariates: Any,
    forest: Any,
    *,
    grid: Grid | None = None,
    min_valid_fraction: float = 0.5,
    n_threads: int | None = None,
    chunk_days: int = 8,
    reuse: bool | str = True,
    block_pixels: int | None = None,
    config: dict[str, Any] | None = None,
) -> Any:
    """Daily 1-km product from covariates held in an :class:`xarray.Dataset`, without tiles.

    The same fused kernel and the same product as :func:`smengine.engine.predict` on a tile
    store built from the same data (``predict_dataset(store.to_dataset(), forest)`` equals
    ``predict(store, forest)``), for chains that already hold their covariates in memory.

    Parameters
    ----------
    covariates : xarray.Dataset
        Sub-pixel and coarse layers (see the module docstring of :mod:`smengine._embed`),
        over ``time`` (UTC days, increasing; the SWI state starts at the first day).
        In memory or Dask-backed.
    forest : CompiledForest, Forest, fitted scikit-learn forest or path
        As for :func:`smengine.engine.predict`.
    grid : Grid, optional
        The 1-km grid of the sub-pixel dimensions (default: the ``smengine_grid`` attribute).
    min_valid_fraction, n_threads, chunk_days, reuse, config
        As for :func:`smengine.engine.predict`.
    block_pixels : int, optional
        In-memory input: pixels per side of the blocks computed one after another (default:
        the whole grid at once). Dask input: blocks follow its ``y_sub``/``x_sub`` chunks.

    Returns
    -------
    xarray.Dataset
        The CF product (``sm``, ``sm_uncertainty``, ``sm_subpixel_sd``, ``valid_fraction``,
        ``quality_flag`` on ``(time, y, x)``). Dask-backed input gives Dask-backed output:
        each block (whole time series of a block of pixels, as the SWI needs) is one task,
        so memory is bounded by a block, not the domain.

    Raises
    ------
    ConfigError
        No grid, or a forest feature the Dataset does not have (named).
    ValidationError
        A variable of unexpected dimensions or sizes (named).
    """
    import xarray as xr

    from smengine.engine import TileRunner, _engine_config, _load_forest
    from smengine.product import QualityFlag, make_product

    if not isinstance(covariates, xr.Dataset):
        raise ConfigError(f"covariates should be an xarray.Dataset, got {type(covariates).__name__}")
    cf = _load_forest(forest)
    if cf.feature_names is None:
        raise ConfigError("the forest has no feature names; compile it with feature_names=…")
    names = list(cf.feature_names)
    g = _grid_of(covariates, grid)
    kw = {"min_valid_fraction": min_valid_fraction, "n_threads": n_threads, "chunk_days": chunk_days, "reuse": reuse}
    days = _times(covariates)
    if days.size == 0:
        raise ConfigError("the covariate Dataset has no days (a 'time' coordinate)")
    want = _needed(names, cf.card)
    lat = _centre_latitude(g)  # every block takes Ra where the whole grid would
    lazy = _is_dask(covariates, want)
    blocks = _blocks(covariates, g, want, block_pixels)
    if not lazy and len(blocks) == 1:
        store = store_from_dataset(covariates, names, g, card=cf.card)
        runner = TileRunner(store, cf, **kw)
        req, out = runner.predict_arrays(None)
        runner.stats.warn_if_degraded("predict_dataset")
        from smengine.engine import _product

        return _product(runner, req, out, config)
    # the product's frame (coordinates, attributes, encodings) from one empty day
    ny, nx = g.shape
    one = {k: np.full((1, ny, nx), np.nan, np.float32) for k in ("sm", "uncertainty", "subpixel_sd")}
    tmpl = make_product(
        one["sm"],
        one["uncertainty"],
        one["subpixel_sd"],
        np.zeros((1, ny, nx), np.float32),
        np.full((1, ny, nx), QualityFlag.NO_INPUT, np.uint8),
        grid=g,
        times=days[:1],
        min_valid_fraction=min_valid_fraction,
        model_card=cf.card,
        config=_engine_config(_ConfigView(cf, names, g, kw, str(covariates.attrs.get("tile_id", "dataset"))), config),
    )
    if lazy:
        import dask
        import dask.array as da

        parts = {}
        for b in blocks:
            sub = covariates.isel(y_sub=slice(b[0].start * g.subpixel, b[0].stop * g.subpixel)).isel(
                x_sub=slice(b[1].start * g.subpixel, b[1].stop * g.subpixel)
            )
            parts[_key(b)] = dask.delayed(_predict_block)(sub, names, _block_grid(g, b), None, cf, kw, lat)
        arrays = {}
        for key in _OUT:
            dtype = np.uint8 if key == "quality_flag" else np.float32
            rows = []
            for r in sorted({b[0].start for b in blocks}):
                row = [
                    da.from_delayed(
                        parts[_key(b)][key],
                        shape=(days.size, b[0].stop - b[0].start, b[1].stop - b[1].start),
                        dtype=dtype,
                    )
                    for b in blocks
                    if b[0].start == r
                ]
                rows.append(row)
            arrays[key] = da.block(rows)
    else:
        arrays = {k: np.empty((days.size, ny, nx), np.uint8 if k == "quality_flag" else np.float32) for k in _OUT}
        for b in blocks:
            out = _predict_block(covariates, names, g, b, cf, kw, lat)
            for k in _OUT:
                arrays[k][:, b[0], b[1]] = out[k]
    start = days.astype("datetime64[ns]")
    bnds = np.stack([start, (days + np.timedelta64(1, "D")).astype("datetime64[ns]")], axis=1)
    coords = {n: tmpl[n].variable for n in tmpl.coords if "time" not in tmpl[n].dims}
    coords["time"] = xr.Variable("time", start, tmpl["time"].attrs, tmpl["time"].encoding)
    coords["time_bnds"] = xr.Variable(("time", "nv"), bnds, tmpl["time_bnds"].attrs, tmpl["time_bnds"].encoding)
    names_out = {
        "sm": "sm",
        "sm_uncertainty": "uncertainty",
        "sm_subpixel_sd": "subpixel_sd",
        "valid_fraction": "valid_fraction",
        "quality_flag": "quality_flag",
    }
    data = {
        v: xr.Variable(("time", "y", "x"), arrays[names_out[v]], tmpl[v].attrs, tmpl[v].encoding)
        for v in tmpl.data_vars
    }
    return xr.Dataset(data, coords=coords, attrs=dict(tmpl.attrs))


def _key(b: tuple[slice, slice]) -> tuple[int, int, int, int]:
    return (b[0].start, b[0].stop, b[1].start, b[1].stop)


def _block_grid(g: Grid, b: tuple[slice, slice]) -> Grid:
    """The grid of a block of pixels of ``g`` (the store is built from the block's slice)."""
    return Grid(
        crs=g.crs,
        resolution=g.resolution,
        xmin=g.xmin + b[1].start * g.resolution,
        ymax=g.ymax - b[0].start * g.resolution,
        width=b[1].stop - b[1].start,
        height=b[0].stop - b[0].start,
        subpixel=g.subpixel,
        tile_size=g.tile_size,
    )


@dataclass
class _ConfigView:
    """What :func:`smengine.engine._engine_config` reads from a runner, for a Dataset run."""

    forest: Any
    feature_names: list[str]
    grid: Grid
    kw: dict[str, Any]
    tile_id: str = "dataset"

    @property
    def min_valid_fraction(self) -> float:
        return float(self.kw["min_valid_fraction"])

    @property
    def chunk_days(self) -> int:
        return int(self.kw["chunk_days"])

    @property
    def reuse(self) -> Any:
        return self.kw["reuse"]

    @property
    def store(self) -> Any:
        empty = np.zeros(0, np.float32)
        return MemoryStore(self.grid, np.array([], "datetime64[D]"), empty, empty, {}, [], [], [], tile_id=self.tile_id)


# --------------------------------------------------------------------------------------
# Stepper
# --------------------------------------------------------------------------------------
class Stepper:
    """Advance the emulator one day at a time, holding the SWI state between days.

    For chains that step through time (a land-surface model's coupler): each
    :meth:`step` takes one day's covariates (the Dataset form of :func:`predict_dataset`,
    a ``time`` of length one) and returns that day's product. N single steps equal one
    N-day :func:`predict_dataset` call bit for bit. :meth:`save_state` writes a restart file
    (the SWI state, the water-balance storage of a forest with ``wb<depth>`` features, the last
    day, the grid, the forest's hash) and :meth:`load_state` resumes from it.

    Parameters
    ----------
    forest : CompiledForest, Forest, fitted scikit-learn forest or path
    grid : Grid, optional
        Default: the first day's ``smengine_grid`` attribute.
    min_valid_fraction, n_threads, reuse
        As for :func:`smengine.engine.predict`.

    Examples
    --------
    >>> stepper = Stepper(forest)                                   # doctest: +SKIP
    >>> for day in covariates.time:                                # doctest: +SKIP
    ...     product = stepper.step(covariates.sel(time=[day]))
    >>> stepper.save_state("restart.h5")                           # doctest: +SKIP
    >>> stepper = Stepper.load_state("restart.h5", forest)         # doctest: +SKIP
    """

    def __init__(
        self,
        forest: Any,
        grid: Grid | None = None,
        *,
        min_valid_fraction: float = 0.5,
        n_threads: int | None = None,
        reuse: bool | str = True,
    ) -> None:
        from smengine.engine import _load_forest

        self.forest = _load_forest(forest)
        if self.forest.feature_names is None:
            raise ConfigError("the forest has no feature names; compile it with feature_names=…")
        self.grid = grid
        self.kw = {"min_valid_fraction": min_valid_fraction, "n_threads": n_threads, "chunk_days": 1, "reuse": reuse}
        self.last_day: np.datetime64 | None = None
        self._state: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._swi_T: np.ndarray | None = None
        # the water balance's storage (S_wb, Y * X) and the depth of each slot (mm)
        self._bucket: tuple[np.ndarray, np.ndarray] | None = None
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __repr__(self) -> str:
        return f"<Stepper {self.forest.content_hash[:19]}: last day {self.last_day}>"

    def step(self, day_covariates: Any) -> Any:
        """Predict one day and advance the state.

        Parameters
        ----------
        day_covariates : xarray.Dataset
            One day (``time`` of length 1, after the last day stepped).

        Returns
        -------
        xarray.Dataset
            That day's product.
        """
        from smengine.engine import TileRunner, _product

        ds = day_covariates
        g = _grid_of(ds, self.grid)
        if self.grid is None:
            self.grid = g
        elif g != self.grid:
            raise ValidationError(f"step: the day's grid {g} is not the stepper's {self.grid}")
        days = _times(ds)
        if days.size != 1:
            raise ValidationError(f"step takes one day of covariates, got {days.size} (select time=[day])")
        if self.last_day is not None and days[0] <= self.last_day:
            raise ValidationError(f"step: {days[0]} is not after the last day stepped, {self.last_day}")
        store = store_from_dataset(ds, list(self.forest.feature_names), g, cache=self._cache, card=self.forest.card)
        runner = TileRunner(store, self.forest, **self.kw)
        if self._state is not None:
            if self._swi_T is not None and not np.array_equal(runner._plan.swi_T, self._swi_T):
                raise ValidationError("step: the SWI times of this day's plan differ from the state's")
            for dst, src in zip((runner._gain, runner._swi, runner._last), self._state, strict=True):
                if dst.shape != src.shape:
                    raise ValidationError(f"step: state of shape {src.shape} does not fit the day's {dst.shape}")
                dst[...] = src
            depths = np.asarray(runner._plan.wb_depths, np.float64)
            if depths.size:
                if self._bucket is None or not np.array_equal(self._bucket[1], depths):
                    have = "none" if self._bucket is None else f"depths {self._bucket[1].tolist()} mm"
                    raise ValidationError(
                        f"step: the water-balance state ({have}) does not fit the day's plan (depths {depths.tolist()} "
                        "mm)"
                    )
                if self._bucket[0].shape != runner._wb_storage.shape:
                    raise ValidationError(
                        f"step: water-balance state of shape {self._bucket[0].shape} does not fit the day's "
                        f"{runner._wb_storage.shape}"
                    )
                runner._wb_storage[...] = self._bucket[0]
        req, out = runner.predict_arrays(None)
        self._state = (runner._gain.copy(), runner._swi.copy(), runner._last.copy())
        self._swi_T = runner._plan.swi_T.copy()
        self._bucket = (runner._wb_storage.copy(), np.asarray(runner._plan.wb_depths, np.float64))
        self.last_day = days[0]
        return _product(runner, req, out, None)

    # ------------------------------------------------------------------ restart files
    def save_state(self, path: str | os.PathLike[str]) -> Path:
        """Write the restart file (HDF5, atomically: a temporary name renamed into place).

        Holds the SWI state (gain, SWI, last observation day per sub-pixel and T), the
        water-balance storage per sub-pixel and depth (``bucket_storage``, mm, with
        ``bucket_depths``; empty without ``wb`` features), the last day stepped, the grid and the
        forest's content hash and feature names.
        """
        import h5py

        from smengine._io import atomic_target

        if self._state is None or self.grid is None or self.last_day is None:
            raise ConfigError("save_state: no day stepped yet (nothing to save)")
        p = Path(path).expanduser()
        with atomic_target(p) as tmp, h5py.File(tmp, "w") as h5:
            h5.attrs["format"] = STATE_FORMAT
            h5.attrs["forest_hash"] = self.forest.content_hash
            h5.attrs["features"] = json.dumps(list(self.forest.feature_names))
            h5.attrs["grid"] = json.dumps(self.grid.get_config())
            h5.attrs["last_day"] = str(self.last_day)
            h5.attrs["settings"] = json.dumps(self.kw, default=str)
            for name, a in zip(("gain", "swi", "last"), self._state, strict=True):
                h5.create_dataset(name, data=a)
            h5.create_dataset("swi_T", data=self._swi_T)
            storage, depths = self._bucket if self._bucket is not None else (np.zeros((0, 0)), np.zeros(0))
            h5.create_dataset("bucket_storage", data=storage)
            h5.create_dataset("bucket_depths", data=depths)
        return p

    @classmethod
    def load_state(cls, path: str | os.PathLike[str], forest: Any, **kwargs: Any) -> Stepper:
        """A stepper that continues from a :meth:`save_state` file.

        Raises
        ------
        DataError
            Not a state file, or unreadable.
        ValidationError
            The file was written with another forest (content hash) than ``forest``.
        """
        import h5py

        p = Path(path).expanduser()
        try:
            with h5py.File(p, "r") as h5:
                if h5.attrs.get("format") != STATE_FORMAT:
                    raise DataError(f"{p}: not a smengine stepper state (format {h5.attrs.get('format')!r})")
                attrs = dict(h5.attrs)
                state = tuple(h5[n][...] for n in ("gain", "swi", "last"))
                swi_T = h5["swi_T"][...]
                # files from before the water balance have none (their forests had no wb features)
                bucket = (h5["bucket_storage"][...], h5["bucket_depths"][...]) if "bucket_storage" in h5 else None
        except DataError:
            raise
        except (OSError, KeyError, RuntimeError, TypeError, ValueError) as exc:  # h5py on a corrupt file
            raise DataError(f"{p}: cannot read stepper state: {type(exc).__name__}: {exc}") from exc
        try:
            grid = Grid.from_config(json.loads(str(attrs["grid"])))
            last_day = as_day(str(attrs["last_day"]))
        except (KeyError, TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise DataError(f"{p}: stepper state with a corrupt grid or last_day attribute: {exc}") from exc
        st = cls(forest, grid, **kwargs)
        if st.forest.content_hash != attrs["forest_hash"]:
            raise ValidationError(
                f"{p}: state written with forest {str(attrs['forest_hash'])[:19]}, not {st.forest.content_hash[:19]}"
            )
        st._state = state  # type: ignore[assignment]
        st._swi_T = swi_T
        st._bucket = bucket
        st.last_day = last_day
        return st
