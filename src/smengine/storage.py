"""Bytes on disk per pixel-day of tile stores, by layer, and their projection to a continent.

:func:`bytes_per_pixel_day` reads what each layer of opened
:class:`~smengine.tiles.TileStore` files takes on disk (HDF5 storage sizes, which for the
contiguous, uncompressed datasets of a tile are exactly their array sizes) and divides it by
the pixel-days the stores hold; :func:`project` scales the result to an input store for a
domain and period (by default a Europe-year: 6 million land pixels, 365 days).

A layer costs, per 1-km pixel (``k`` = sub-pixels per pixel side, 4 by default):

* ``dynamic`` (regridded to the sub-pixels): ``4 k²`` bytes per pixel-day (64);
* ``coarse`` (native cells + index map, :func:`smengine.ingest.default_storage`): 4 bytes
  per native cell and day, that is ``4 (pixel area / cell area)`` per pixel-day (4 for a
  1-km product on the 1-km grid, 0.05 for a 9-km one, plus the cells that straddle the tile's
  edge), and its int32 index map, ``4 k²`` bytes per pixel once;
* ``static``: ``4 k²`` bytes per pixel once.

The tile's own bookkeeping (``/time``, ``/coverage``, attributes and HDF5 metadata) is the
``overhead`` row; it is per tile, not per pixel.

Examples
--------
>>> from smengine.tiles import TileStore                                # doctest: +SKIP
>>> stores = [TileStore.open(p) for p in sorted(Path("tiles").glob("*.h5"))]  # doctest: +SKIP
>>> table = bytes_per_pixel_day(stores)                                 # doctest: +SKIP
>>> project(table)["GB"]                                                # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import h5py
import numpy as np
import pandas as pd

from smengine.errors import ConfigError, DataError
from smengine.tiles import TileStore

log = logging.getLogger(__name__)

__all__ = ["COLUMNS", "bytes_per_pixel_day", "project"]

#: Columns of :func:`bytes_per_pixel_day`'s table.
COLUMNS = (
    "kind",
    "values_per_pixel_day",
    "daily_bytes",
    "once_bytes",
    "bytes",
    "per_pixel_day",
    "per_pixel",
    "total_per_pixel_day",
)
_OVERHEAD = "(overhead)"
_TOTAL = "total"


def _storage_size(ds: h5py.Dataset) -> int:
    return int(ds.id.get_storage_size())


def _one(store: TileStore) -> tuple[dict[str, dict[str, Any]], int, int, int]:
    """Per-layer bytes of one tile: {name: {kind, daily, once, values}}, pixels, days, file bytes."""
    ny, nx = store.grid.subpixel_shape
    nt = int(store.times.size)
    rows: dict[str, dict[str, Any]] = {}
    try:
        with h5py.File(store.path, "r") as h5:
            file_bytes = int(store.path.stat().st_size)
            datasets = 0
            fs = len(store.static_names)
            static = _storage_size(h5["static"])
            datasets += static
            for name in store.static_names:
                rows[name] = {"kind": "static", "daily": 0, "once": static // fs, "values": 0.0}
            fd = len(store.dynamic_names)
            dynamic = _storage_size(h5["dynamic"])
            datasets += dynamic
            for name in store.dynamic_names:
                rows[name] = {"kind": "dynamic", "daily": dynamic // fd, "once": 0, "values": float(nt * ny * nx)}
            for name in store.coarse_names:
                g = h5["coarse"][name]
                values, index = _storage_size(g["values"]), _storage_size(g["index"])
                datasets += values + index
                n_values = float(np.prod(g["values"].shape))
                rows[name] = {"kind": "coarse", "daily": values, "once": index, "values": n_values}
            book = _storage_size(h5["time"]) + (_storage_size(h5["coverage"]) if "coverage" in h5 else 0)
            datasets += book
    except OSError as exc:
        raise DataError(f"{store.path}: cannot read the tile's dataset sizes: {exc}") from exc
    rows[_OVERHEAD] = {"kind": "overhead", "daily": book, "once": file_bytes - datasets, "values": 0.0}
    py, px = store.grid.shape
    return rows, py * px, nt, file_bytes


def bytes_per_pixel_day(stores: TileStore | Iterable[TileStore]) -> pd.DataFrame:
    """Bytes on disk per pixel-day of each layer of tile stores, and in all.

    Parameters
    ----------
    stores : TileStore or iterable of TileStore
        Opened tiles (:meth:`smengine.tiles.TileStore.open`).

    Returns
    -------
    pandas.DataFrame
        One row per layer (in the stores' feature order), then ``(overhead)`` (``/time``,
        ``/coverage``, attributes and HDF5 metadata) and ``total``; columns:

        ``kind``
            ``static``, ``dynamic`` (sub-pixel daily), ``coarse`` (native cells + index
            map), ``overhead`` or ``total``; kinds joined by ``/`` where tiles differ.
        ``values_per_pixel_day``
            Daily values stored per 1-km pixel and day (k² for ``dynamic``, about the pixel
            to cell area ratio for ``coarse``).
        ``daily_bytes``, ``once_bytes``, ``bytes``
            Bytes on disk summed over the stores: the part that grows with the days
            (``/dynamic`` slices, ``/coarse/<name>/values``, ``/time`` + ``/coverage``),
            the part stored once per tile (``/static`` slices, ``/coarse/<name>/index``,
            metadata), and both. The ``total`` row's ``bytes`` is the files' size.
        ``per_pixel_day``
            ``daily_bytes`` per pixel-day, bytes.
        ``per_pixel``
            ``once_bytes`` per pixel, bytes.
        ``total_per_pixel_day``
            ``bytes`` per pixel-day (the once-stored part spread over the stores' days), bytes.

        ``attrs`` holds ``pixels`` (1-km pixels), ``pixel_days``, ``days`` (of each store),
        ``tiles``, ``tile_pixels`` (pixels of a full tile of the grid, ``tile_size²``) and
        ``file_bytes``.

    Raises
    ------
    ConfigError
        If no store is given.
    DataError
        If a tile's datasets cannot be read.

    Notes
    -----
    Layers a tile lacks cost nothing there; each layer's bytes are divided by the
    pixel-days of all the stores, so that the rows add up to the ``total``.
    """
    items = [stores] if isinstance(stores, TileStore) else list(stores)
    if not items:
        raise ConfigError("bytes_per_pixel_day: no tile stores given")
    acc: dict[str, dict[str, Any]] = {}
    pixels = pixel_days = file_bytes = 0
    days: list[int] = []
    for store in items:
        rows, n_pix, nt, nbytes = _one(store)
        pixels += n_pix
        pixel_days += n_pix * nt
        file_bytes += nbytes
        days.append(nt)
        for name, r in rows.items():
            a = acc.setdefault(name, {"kinds": [], "daily": 0, "once": 0, "values": 0.0})
            if r["kind"] not in a["kinds"]:
                a["kinds"].append(r["kind"])
            a["daily"] += r["daily"]
            a["once"] += r["once"]
            a["values"] += r["values"]
    order = [n for n in acc if n != _OVERHEAD] + [_OVERHEAD]
    table = pd.DataFrame(
        {
            "kind": ["/".join(acc[n]["kinds"]) for n in order],
            "values_per_pixel_day": [acc[n]["values"] for n in order],
            "daily_bytes": [acc[n]["daily"] for n in order],
            "once_bytes": [acc[n]["once"] for n in order],
        },
        index=pd.Index(order, name="layer"),
    )
    total = table[["values_per_pixel_day", "daily_bytes", "once_bytes"]].sum()
    table.loc[_TOTAL] = ["total", total["values_per_pixel_day"], total["daily_bytes"], total["once_bytes"]]
    table["daily_bytes"] = table["daily_bytes"].astype(np.int64)
    table["once_bytes"] = table["once_bytes"].astype(np.int64)
    table["bytes"] = table["daily_bytes"] + table["once_bytes"]
    pd_ = pixel_days if pixel_days else math.nan
    table["values_per_pixel_day"] = table["values_per_pixel_day"].astype(np.float64) / pd_
    table["per_pixel_day"] = table["daily_bytes"] / pd_
    table["per_pixel"] = table["once_bytes"] / (pixels if pixels else math.nan)
    table["total_per_pixel_day"] = table["bytes"] / pd_
    table = table[list(COLUMNS)]
    table.attrs.update(
        {
            "pixels": int(pixels),
            "pixel_days": int(pixel_days),
            "days": days,
            "tiles": len(items),
            "tile_pixels": int(items[0].grid.tile_size) ** 2,
            "file_bytes": int(file_bytes),
        }
    )
    log.debug("bytes per pixel-day of %d tile(s): %.3g", len(items), table.loc[_TOTAL, "total_per_pixel_day"])
    return table


def project(
    table_or_stores: pd.DataFrame | TileStore | Iterable[TileStore],
    n_pixels: int = 6_000_000,
    days: int = 365,
    *,
    tile_pixels: int | None = None,
    goal_gb: float | None = 50.0,
) -> dict[str, Any]:
    """Projected size of an input tile store for ``n_pixels`` 1-km pixels and ``days`` days.

    Each layer's per-pixel-day bytes (:func:`bytes_per_pixel_day`) times pixel-days, plus
    its once-stored bytes (static layers, index maps) per pixel times pixels; the tiles'
    own overhead scales with the number of tiles (``n_pixels / tile_pixels``) instead.

    Parameters
    ----------
    table_or_stores : DataFrame or TileStore or iterable of TileStore
        A table from :func:`bytes_per_pixel_day`, or the stores to make it from.
    n_pixels : int
        Land pixels of the domain (default 6 million: Europe at 1 km).
    days : int
        Days of the store (default 365).
    tile_pixels : int, optional
        Pixels per tile for the overhead (default the table's ``tile_pixels``: a full
        tile of the measured stores' grid, ``tile_size²``).
    goal_gb : float or None
        Size to compare with, GB (default 50).

    Returns
    -------
    dict
        ``bytes`` and ``GB`` (10⁹ bytes) in all; ``per_pixel_day`` (bytes, once-stored
        parts included); ``by_layer`` (layer → GB); ``daily_GB`` and ``once_GB``;
        ``n_pixels``, ``days``, ``tiles``; ``goal_GB`` and ``meets_goal`` (None without
        a goal).

    Raises
    ------
    ConfigError
        If ``n_pixels``, ``days`` or ``tile_pixels`` is not positive.

    Examples
    --------
    >>> t = pd.DataFrame(
    ...     {"kind": ["dynamic", "overhead", "total"], "per_pixel_day": [64.0, 0.0, 64.0],
    ...      "per_pixel": [0.0, 0.0, 0.0], "daily_bytes": [0, 0, 0], "once_bytes": [0, 0, 0]},
    ...     index=["s1", "(overhead)", "total"])
    >>> t.attrs.update(tiles=1, days=[1], tile_pixels=10_000)
    >>> round(project(t)["GB"], 1)
    140.2
    """
    if not (n_pixels > 0 and days > 0):
        raise ConfigError(f"project: n_pixels and days must be positive, got {n_pixels!r}, {days!r}")
    table = table_or_stores if isinstance(table_or_stores, pd.DataFrame) else bytes_per_pixel_day(table_or_stores)
    attrs: Mapping[str, Any] = table.attrs
    tp = int(tile_pixels if tile_pixels is not None else attrs.get("tile_pixels", 10_000))
    if tp <= 0:
        raise ConfigError(f"project: tile_pixels must be positive, got {tp!r}")
    tiles = math.ceil(n_pixels / tp)
    layers = [n for n in table.index if n not in (_OVERHEAD, _TOTAL)]
    by_layer: dict[str, float] = {}
    daily = once = 0.0
    for n in layers:
        d = float(table.loc[n, "per_pixel_day"]) * n_pixels * days
        o = float(table.loc[n, "per_pixel"]) * n_pixels
        daily, once = daily + d, once + o
        by_layer[n] = (d + o) / 1e9
    if _OVERHEAD in table.index:  # per tile: scale by the number of tiles
        n_tiles = max(int(attrs.get("tiles", 1)), 1)
        tile_days = max(sum(attrs.get("days", [1])), 1)
        d = float(table.loc[_OVERHEAD, "daily_bytes"]) / tile_days * tiles * days
        o = float(table.loc[_OVERHEAD, "once_bytes"]) / n_tiles * tiles
        daily, once = daily + d, once + o
        by_layer[_OVERHEAD] = (d + o) / 1e9
    total = daily + once
    return {
        "bytes": total,
        "GB": total / 1e9,
        "per_pixel_day": total / (n_pixels * days),
        "by_layer": by_layer,
        "daily_GB": daily / 1e9,
        "once_GB": once / 1e9,
        "n_pixels": int(n_pixels),
        "days": int(days),
        "tiles": tiles,
        "goal_GB": goal_gb,
        "meets_goal": None if goal_gb is None else bool(total / 1e9 <= goal_gb),
    }
