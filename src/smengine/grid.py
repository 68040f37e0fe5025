"""The output grid: CRS, 1-km pixels, k×k sub-pixels and 100-km tiles.

The default is the EEA reference grid: EPSG:3035 (ETRS89-LAEA Europe) with 1000 m pixels
whose edges fall on multiples of 1000 m. Any projected CRS and resolution are allowed.
All coordinate arithmetic goes through :mod:`affine` and :mod:`pyproj`; nothing here
writes projection formulas by hand.

Conventions: rows run north → south, columns west → east (a north-up raster); pixel
``(row, col)`` covers ``[x0 + col·res, x0 + (col+1)·res) × (y1 − (row+1)·res, y1 − row·res]``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.windows import Window

from smengine.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["Grid", "Tile", "Window", "as_window"]


@functools.lru_cache(maxsize=256)
def _cached_transformer(src: Any, dst: Any, thread: int) -> Transformer:
    return Transformer.from_crs(src, dst, always_xy=True)


def transformer(src: Any, dst: Any) -> Transformer:
    """A ``pyproj`` transformer from ``src`` to ``dst`` (anything :class:`pyproj.CRS` takes),
    x/y (lon/lat) order, cached per thread: building one takes 10–40 ms, using one
    microseconds, and ingest and the product need the same few pairs for every tile and day.

    Examples
    --------
    >>> transformer("EPSG:4326", "EPSG:3035") is transformer("EPSG:4326", "EPSG:3035")
    True
    """
    return _cached_transformer(src, dst, threading.get_ident())


@dataclass(frozen=True)
class Tile:
    """One tile of a :class:`Grid`, in pixel units of the parent grid.

    Attributes
    ----------
    row, col : int
        Tile index (row north → south, column west → east).
    row_off, col_off : int
        Offset of the tile's first pixel in the parent grid.
    height, width : int
        Tile size in pixels (edge tiles may be smaller).
    """

    row: int
    col: int
    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def id(self) -> str:
        """Stable tile name, e.g. ``"t003_012"`` (row 3, column 12)."""
        return f"t{self.row:03d}_{self.col:03d}"


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid with sub-pixels and tiles.

    Parameters
    ----------
    crs : str
        Any projected CRS pyproj understands (default ``"EPSG:3035"``), stored as given
        (an authority string where possible, so configurations stay readable).
    resolution : float
        Pixel size in CRS units (default 1000 m).
    xmin, ymax : float
        Upper-left corner of the grid.
    width, height : int
        Grid size in pixels.
    subpixel : int
        Sub-pixels per pixel side, k (default 4: 250 m sub-pixels).
    tile_size : int
        Tile side in pixels (default 100: 100 km tiles).

    Examples
    --------
    >>> g = Grid.from_bounds(4_321_400, 2_987_200, 4_500_100, 3_100_000)
    >>> g.bounds, g.shape, g.subpixel_shape
    ((4321000.0, 2987000.0, 4501000.0, 3100000.0), (113, 180), (452, 720))
    >>> [t.id for t in g.tiles()]
    ['t000_000', 't000_001', 't001_000', 't001_001']
    """

    crs: str = "EPSG:3035"
    resolution: float = 1000.0
    xmin: float = 0.0
    ymax: float = 0.0
    width: int = 1
    height: int = 1
    subpixel: int = 4
    tile_size: int = 100

    def __post_init__(self) -> None:
        try:
            crs = CRS.from_user_input(self.crs)
        except Exception as exc:  # pyproj.exceptions.CRSError
            raise ConfigError(f"Grid: unknown CRS {self.crs!r}: {exc}") from exc
        if not crs.is_projected:
            raise ConfigError(f"Grid: CRS {self.crs!r} is not projected; the grid needs metric cells")
        if not (math.isfinite(self.resolution) and self.resolution > 0):
            raise ConfigError(f"Grid: resolution should be > 0, got {self.resolution!r}")
        for name in ("width", "height", "subpixel", "tile_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"Grid: {name} should be a positive integer, got {v!r}")
        if not (math.isfinite(self.xmin) and math.isfinite(self.ymax)):
            raise ConfigError("Grid: xmin and ymax should be finite")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_bounds(
        cls,
        xmin: float,
        ymin: float,
        xmax: float,
        ymax: float,
        crs: str = "EPSG:3035",
        resolution: float = 1000.0,
        subpixel: int = 4,
        tile_size: int = 100,
        align: bool = True,
    ) -> Grid:
        """Grid covering a bounding box in CRS units.

        Parameters
        ----------
        xmin, ymin, xmax, ymax : float
            Bounds in CRS units (m).
        crs, resolution, subpixel, tile_size
            As in :class:`Grid`.
        align : bool, optional
            Snap the bounds outwards to multiples of ``resolution`` (the EEA reference
            grid convention; default True). Without it the grid starts at ``xmin, ymax``.

        Returns
        -------
        Grid
        """
        if not all(math.isfinite(float(v)) for v in (xmin, ymin, xmax, ymax)):
            raise ConfigError(
                f"Grid.from_bounds: bounds should be finite numbers, got ({xmin}, {ymin}, {xmax}, {ymax})"
            )
        if not (xmax > xmin and ymax > ymin):
            raise ConfigError(
                f"Grid.from_bounds: empty bounds ({xmin}, {ymin}, {xmax}, {ymax}); "
                "they are xmin ymin xmax ymax, with xmax > xmin and ymax > ymin"
            )
        if not resolution > 0:
            raise ConfigError(f"Grid.from_bounds: resolution should be > 0, got {resolution}")
        if align:
            x0 = math.floor(xmin / resolution) * resolution
            y1 = math.ceil(ymax / resolution) * resolution
            x1 = math.ceil(xmax / resolution) * resolution
            y0 = math.floor(ymin / resolution) * resolution
        else:
            x0, y1 = xmin, ymax
            x1 = xmin + math.ceil((xmax - xmin) / resolution - 1e-9) * resolution
            y0 = ymax - math.ceil((ymax - ymin) / resolution - 1e-9) * resolution
        width = int(round((x1 - x0) / resolution))
        height = int(round((y1 - y0) / resolution))
        return cls(str(crs), float(resolution), float(x0), float(y1), width, height, int(subpixel), int(tile_size))

    @classmethod
    def from_lonlat_bounds(
        cls,
        west: float,
        south: float,
        east: float,
        north: float,
        crs: str = "EPSG:3035",
        resolution: float = 1000.0,
        subpixel: int = 4,
        tile_size: int = 100,
    ) -> Grid:
        """Aligned grid covering a longitude/latitude box (degrees, WGS 84).

        Raises
        ------
        ConfigError
            Longitudes outside [-180, 180], latitudes outside [-90, 90], ``west >= east``
            (a box across the antimeridian is not supported) or ``south >= north``.
        """
        box = (west, south, east, north)
        if not all(math.isfinite(float(v)) for v in box):
            raise ConfigError(f"Grid.from_lonlat_bounds: bounds should be finite numbers, got {box}")
        if not (-180 <= west <= 180 and -180 <= east <= 180):
            raise ConfigError(f"Grid.from_lonlat_bounds: longitudes should be within [-180, 180], got {west}, {east}")
        if not (-90 <= south <= 90 and -90 <= north <= 90):
            raise ConfigError(f"Grid.from_lonlat_bounds: latitudes should be within [-90, 90], got {south}, {north}")
        if not (east > west and north > south):
            raise ConfigError(
                f"Grid.from_lonlat_bounds: empty box {box}; it is west south east north, with east > west and "
                "north > south (a box across the antimeridian is not supported)"
            )
        t = transformer("EPSG:4326", crs)
        xmin, ymin, xmax, ymax = t.transform_bounds(west, south, east, north, densify_pts=51)
        return cls.from_bounds(xmin, ymin, xmax, ymax, crs, resolution, subpixel, tile_size)

    # ------------------------------------------------------------------ config
    def get_config(self) -> dict[str, Any]:
        """JSON-safe configuration; ``Grid.from_config(g.get_config()) == g``."""
        return {
            "crs": self.crs,
            "resolution": float(self.resolution),
            "xmin": float(self.xmin),
            "ymax": float(self.ymax),
            "width": int(self.width),
            "height": int(self.height),
            "subpixel": int(self.subpixel),
            "tile_size": int(self.tile_size),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any] | str) -> Grid:
        """Inverse of :meth:`get_config` (a dict or its JSON text)."""
        if isinstance(config, str):
            config = json.loads(config)
        unknown = set(config) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"Grid.from_config: unknown keys {sorted(unknown)}")
        return cls(**config)

    # ------------------------------------------------------------------ geometry
    @property
    def pyproj_crs(self) -> CRS:
        """The CRS as a :class:`pyproj.CRS`."""
        return CRS.from_user_input(self.crs)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return (self.height, self.width)

    @property
    def subpixel_resolution(self) -> float:
        """Sub-pixel size in CRS units."""
        return self.resolution / self.subpixel

    @property
    def subpixel_shape(self) -> tuple[int, int]:
        """(height, width) in sub-pixels."""
        return (self.height * self.subpixel, self.width * self.subpixel)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) in CRS units."""
        return (
            self.xmin,
            self.ymax - self.height * self.resolution,
            self.xmin + self.width * self.resolution,
            self.ymax,
        )

    @property
    def transform(self) -> Affine:
        """Pixel → CRS affine transform (GDAL convention, upper-left corner)."""
        return Affine(self.resolution, 0.0, self.xmin, 0.0, -self.resolution, self.ymax)

    @property
    def subpixel_transform(self) -> Affine:
        """Sub-pixel → CRS affine transform."""
        return self.transform @ Affine.scale(1.0 / self.subpixel)

    def xy(self, row: npt.ArrayLike, col: npt.ArrayLike, subpixel: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """CRS coordinates of pixel (or sub-pixel) centres."""
        t = self.subpixel_transform if subpixel else self.transform
        r = np.asarray(row, dtype=np.float64) + 0.5
        c = np.asarray(col, dtype=np.float64) + 0.5
        x, y = t @ (c, r)
        return np.asarray(x), np.asarray(y)

    def rowcol(self, x: npt.ArrayLike, y: npt.ArrayLike, subpixel: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (or sub-pixel) indices containing CRS points (may lie outside the grid)."""
        t = ~(self.subpixel_transform if subpixel else self.transform)
        c, r = t @ (np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
        return np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)

    def lonlat_to_rowcol(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike, subpixel: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pixel (or sub-pixel) indices of WGS 84 longitudes/latitudes (degrees)."""
        x, y = transformer("EPSG:4326", self.crs).transform(lon, lat)
        return self.rowcol(x, y, subpixel=subpixel)

    def contains(self, row: npt.ArrayLike, col: npt.ArrayLike, subpixel: bool = False) -> np.ndarray:
        """Whether indices lie inside the grid."""
        h, w = self.subpixel_shape if subpixel else self.shape
        r, c = np.asarray(row), np.asarray(col)
        return (r >= 0) & (r < h) & (c >= 0) & (c < w)

    # ------------------------------------------------------------------ tiles
    @property
    def tile_shape(self) -> tuple[int, int]:
        """Number of tiles (rows, columns)."""
        return (-(-self.height // self.tile_size), -(-self.width // self.tile_size))

    def tiles(self) -> Iterator[Tile]:
        """All tiles, row by row."""
        nty, ntx = self.tile_shape
        for ty in range(nty):
            for tx in range(ntx):
                yield self.tile(ty, tx)

    def tile(self, row: int | str, col: int | None = None) -> Tile:
        """A tile by index ``(row, col)`` or by id ``"t003_012"``."""
        if isinstance(row, str):
            try:
                r_s, c_s = row.lstrip("t").split("_")
                row, col = int(r_s), int(c_s)
            except ValueError as exc:
                raise ConfigError(f"bad tile id {row!r}; expected like 't003_012'") from exc
        if col is None:
            raise ConfigError("tile(row, col) needs both indices")
        nty, ntx = self.tile_shape
        if not (0 <= row < nty and 0 <= col < ntx):
            raise ConfigError(f"tile ({row}, {col}) outside the {nty}x{ntx} tiling")
        r0, c0 = row * self.tile_size, col * self.tile_size
        return Tile(row, col, r0, c0, min(self.tile_size, self.height - r0), min(self.tile_size, self.width - c0))

    def tile_grid(self, tile: Tile | str) -> Grid:
        """The tile as a grid of its own (same CRS, resolution and sub-pixel factor)."""
        if isinstance(tile, str):
            tile = self.tile(tile)
        x0, y1 = self.transform @ (tile.col_off, tile.row_off)
        return Grid(
            self.crs, self.resolution, float(x0), float(y1), tile.width, tile.height, self.subpixel, self.tile_size
        )

    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees, densified along the edges."""
        t = transformer(self.crs, "EPSG:4326")
        return tuple(float(v) for v in t.transform_bounds(*self.bounds, densify_pts=51))  # type: ignore[return-value]


def as_window(window: Any) -> Window:
    """The one window type: a :class:`rasterio.windows.Window` (``col_off, row_off, width, height``).

    A ``Window`` is returned as it is; a 4-tuple is read as the half-open row and column
    ranges ``(row0, row1, col0, col1)`` that :class:`~smengine.features.FeatureBuilder` and
    :class:`~smengine.tiles.CoarseLayer` took before they took windows.

    Examples
    --------
    >>> as_window((5, 30, 7, 40))
    Window(col_off=7, row_off=5, width=33, height=25)
    >>> as_window((5, 30, 7, 40)).toslices()
    (slice(5, 30, None), slice(7, 40, None))
    """
    if isinstance(window, Window):
        return window
    try:
        r0, r1, c0, c1 = (int(v) for v in window)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"a window is a rasterio.windows.Window or (row0, row1, col0, col1), got {window!r}") from exc
    return Window(c0, r0, c1 - c0, r1 - r0)
