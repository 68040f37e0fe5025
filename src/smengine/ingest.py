"""Read covariate products and put them on the grid, tile by tile, into TileStores.

Readers (:func:`open_source`) return a :class:`Source`: daily data on its native grid with
its CRS, units normalised, nodata and fill values as NaN. Supported:

* GeoTIFF (rasterio/GDAL): static layers, or one day per file with ``time=``;
* CF NetCDF (netCDF4 through xarray): ESA CCI SM, C3S SM, ERA5-Land (its ``valid_time``
  dimension), any CF grid with ``lat``/``lon`` or projected ``x``/``y`` + ``grid_mapping``;
* GRIB (cfgrib/ecCodes): ERA5 on regular lat/lon, H SAF H14 on its reduced Gaussian grid.

Regridding (:func:`regrid`) uses GDAL through :func:`rasterio.warp.reproject`: ``average``
when coarsening, ``bilinear`` when refining; ``nearest`` takes, exactly, the source cell
that contains each target centre (pyproj transforms, no approximation). A reduced Gaussian
grid is not a raster; it is sampled by exact nearest neighbour on the sphere.

Storage at native resolution. A daily layer is stored either *fine* (regridded to the
sub-pixels, ``/dynamic`` of the tile: one float32 per sub-pixel and day) or *coarse* (its
native cells that touch the tile, one float32 per cell and day, plus one int32 index map from
sub-pixel to cell per tile: :func:`coarse_index`, :class:`~smengine.tiles.CoarseLayer`). By
default (``storage="auto"``, :func:`default_storage`) every daily source whose native cell is
at least :data:`COARSE_FACTOR` (1.5) sub-pixels wide is stored coarse: a 1-km product on
250-m sub-pixels takes 4 bytes per pixel-day instead of 64. Only sources at about the
sub-pixel's resolution or finer are regridded to the sub-pixels. The values differ: a
coarse layer gives each sub-pixel the value of the native cell that contains its centre
(exactly what fine storage with ``method="nearest"`` gives), while fine storage with the
default method interpolates (``bilinear``) between cell centres. A 1-km layer on the 1-km
grid is therefore constant within each pixel, equal to the product's own value, where it
used to vary smoothly across it; a forest should be trained on tiles stored the way it is
applied to. ``storage="fine"`` (or ``"coarse"``) per source keeps the choice explicit.

:func:`ingest` streams day by day into one :class:`~smengine.tiles.TileWriter` per tile, so
memory stays bounded by about one tile-day whatever the domain size; each tile is written
to a temporary name and renamed. A rerun is incremental: an existing tile gets the days and
layers it lacks (its own are copied, not regridded again), layers whose source files
changed are redone, and a complete tile is skipped. With ``storage="auto"`` a layer an
existing tile holds keeps the storage it was written with (a tile written when 1-km layers
were stored fine keeps them fine); see :func:`ingest`.

Units are normalised to a small vocabulary (``m3 m-3``, ``%`` of saturation, ``K``, ``1``,
``m``, …); a variable that states no units is an error unless ``units=`` is given. ESA CCI
ACTIVE is in percent of saturation: it becomes a feature whose name ends in
``_pct_saturation`` and is never mixed with volumetric soil moisture.

Nothing is dropped silently:

* values outside the plausible range of their units (:data:`PLAUSIBLE_RANGES`; a file's own
  ``valid_min``/``valid_max``/``valid_range`` narrow it, ``SourceSpec(valid_range=)``
  replaces both) and ±inf become NaN, are counted and reported per source with a
  :class:`~smengine.errors.DataLossWarning` (count and worst value); more than
  :data:`MAX_INVALID_FRACTION` of a source's values (or of one day as read) is a
  :class:`~smengine.errors.DataError`;
* a GRIB file is walked message by message before ecCodes reads it: a cut, damaged or
  garbage-padded file is a DataError naming the message and byte offset (ERA5's NUL
  padding between messages is allowed);
* NetCDF time units in local time ("days since 2020-01-01 00:00:00 +02:00") are decoded to
  UTC; daily values of local days, which straddle two UTC days, are a DataError rather
  than being put on the UTC day their start falls in;
* each tile records the size and modification time of every source file; a file replaced
  in place is noticed on the next run and its layer regridded (with a warning).
"""

from __future__ import annotations

# pyproj and rasterio must be imported before ecCodes: the eckitlib wheel bundles its own
# PROJ, and whichever PROJ loads first wins (pyproj issue #801 describes the mechanism).
import pyproj  # noqa: F401  isort: skip
import contextlib
import logging
import math
import mmap
import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import rasterio
from affine import Affine
from pyproj import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject

from smengine.errors import ConfigError, DataError, DataLossWarning, SMEngineWarning
from smengine.grid import Grid, Tile, Window, transformer
from smengine.tiles import CoarseLayer, TileStore, TileWriter, as_days, remove_stale_temps

log = logging.getLogger(__name__)

__all__ = [
    "MAX_INVALID_FRACTION",
    "PLAUSIBLE_RANGES",
    "Source",
    "SourceSpec",
    "COARSE_FACTOR",
    "coarse_index",
    "default_storage",
    "ingest",
    "native_cell_width",
    "normalise_units",
    "open_source",
    "regrid",
]

Method = Literal["auto", "average", "bilinear", "nearest"]

# canonical unit → accepted spellings (lower case, spaces collapsed)
_UNITS: dict[str, tuple[str, ...]] = {
    "m3 m-3": (
        "m3 m-3",
        "m3/m3",
        "m^3 m^-3",
        "m**3 m**-3",
        "m3.m-3",
        "m3 m**-3",
        "cm3/cm3",
        "cm3 cm-3",
        "volume fraction",
        "m^3/m^3",
    ),
    "%": ("%", "percent", "percent of saturation", "% saturation", "percent saturation", "% of saturation"),
    "1": ("1", "-", "~", "dimensionless", "(0 - 1)", "0-1", "fraction", "(0-1)", "none"),  # not "": see _resolve_units
    "K": ("k", "kelvin"),
    "degC": ("degc", "c", "celsius", "degree_celsius", "deg c"),
    "m": ("m", "metre", "meter", "metres", "meters"),
    "mm": ("mm", "kg m-2", "kg m**-2", "mm day-1", "mm/day"),
    "dB": ("db",),
    "Pa": ("pa",),
    "hPa": ("hpa",),
}
_UNIT_LOOKUP = {s: k for k, spellings in _UNITS.items() for s in spellings}


def normalise_units(units: str | None, where: str = "") -> str:
    """Map a units string to smengine's vocabulary; unknown units raise :class:`DataError`.

    Examples
    --------
    >>> normalise_units("m3/m3"), normalise_units("percent of saturation"), normalise_units("K")
    ('m3 m-3', '%', 'K')
    """
    key = re.sub(r"\s+", " ", str(units if units is not None else "").strip().lower())
    if key in _UNIT_LOOKUP:
        return _UNIT_LOOKUP[key]
    raise DataError(f"{where}: unknown units {units!r}; known: {sorted(_UNITS)}")


def _resolve_units(stated: str | None, override: str | None, where: str) -> str:
    """Units from the file, checked against (or supplied by) the user's ``units=``.

    A file that states no units (no attribute, or an empty one) needs ``units=``: taking it
    as dimensionless would let a precipitation in m pass as a fraction. Dimensionless
    variables state ``"1"`` (or ``"-"``, ``"dimensionless"``).
    """
    blank = stated is None or not str(stated).strip()
    if override is None:
        if blank:
            raise DataError(
                f"{where}: states no units (no or an empty units attribute); pass units= "
                "(SourceSpec(units=...), units = ... in [[sources]], --units NAME=UNITS on the command line); "
                "a dimensionless variable should state units '1'"
            )
        return normalise_units(stated, where)
    want = normalise_units(override, f"{where} (units=)")
    if not blank and normalise_units(stated, where) != want:
        raise DataError(f"{where}: file states units {stated!r}, but units={override!r} was given")
    return want


#: Plausible values of each unit of the vocabulary (after :func:`normalise_units`), wide
#: enough for every covariate smengine takes in those units: ``m`` admits DEM elevations
#: (bathymetry included) and ERA5 precipitation or snow depth in metres; ``mm`` is a daily
#: amount (the 24-h rainfall record is 1825 mm) and tolerates ERA5's packing noise just
#: below 0; ``K`` admits microwave brightness temperatures over water; ``Pa``/``hPa`` admit
#: surface pressure and vapour pressure. Values outside (and ±inf) are taken for bit rot,
#: undeclared fill values or wrong units: they become NaN and are counted. ``"1"`` (any
#: dimensionless quantity) has no range, only ±inf is rejected. A file's
#: ``valid_min``/``valid_max``/``valid_range`` narrow the range; ``SourceSpec(valid_range=)``
#: replaces it.
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "m3 m-3": (0.0, 1.0),
    "%": (0.0, 100.0),
    "K": (50.0, 350.0),
    "degC": (-120.0, 80.0),
    "m": (-11_000.0, 9_000.0),
    "mm": (-0.01, 2_000.0),
    "dB": (-60.0, 30.0),
    "Pa": (0.0, 110_000.0),
    "hPa": (0.0, 1_100.0),
}

#: More than this fraction of a source's values outside its valid range (counted over all
#: it was read for, and over each day as read once that has at least ``_MIN_SCREENED``
#: values) is a :class:`DataError`: wrong units, a wrong scale factor or a damaged file,
#: not a few outliers. ``SourceSpec(max_invalid_fraction=)`` sets it per source.
MAX_INVALID_FRACTION = 0.1
_MIN_SCREENED = 100


@dataclass
class _Screen:
    """The valid range of a source's values, and the count of what fell outside it.

    ``eager``: the source's data were screened whole when it was opened (sources held in
    memory); otherwise :meth:`Source.day` screens each read.
    """

    lo: float
    hi: float
    what: str  # e.g. "[0, 1] (plausible for m3 m-3)"
    max_fraction: float | None = None
    eager: bool = False
    n: int = 0  # values screened (not NaN)
    bad: int = 0  # of which outside the range
    worst: float = math.nan
    _worst_by: float = -1.0
    reported: int = 0

    @property
    def limit(self) -> float:
        return MAX_INVALID_FRACTION if self.max_fraction is None else self.max_fraction

    def _count(self, a: np.ndarray, out: np.ndarray) -> int:
        """Number of values outside (``out``), keeping the worst: the farthest outside."""
        k = int(out.sum())
        if k:
            v = a[out].astype(np.float64)
            with np.errstate(invalid="ignore", over="ignore"):
                by = np.maximum(self.lo - v, v - self.hi)
            by = np.where(np.isnan(by), np.inf, by)  # ±inf where the range is unbounded
            i = int(np.argmax(by))
            if by[i] > self._worst_by:
                self._worst_by, self.worst = float(by[i]), float(v[i])
        return k

    def _mask(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore"):
            present = ~np.isnan(a)
            out = present & ~(np.isfinite(a) & (a >= self.lo) & (a <= self.hi))  # ±inf is never valid
        return present, out

    def _check(self, k: int, n: int, where: str) -> None:
        if n >= _MIN_SCREENED and k > self.limit * n:
            raise DataError(
                f"{where}: {k} of {n} {self._values()} ({100 * k / n:.3g} %) {self._outside()}{self._why()}"
            )

    def _outside(self) -> str:
        return f"outside {self.what} (worst {self.worst:g})"

    def _values(self) -> str:
        # a source read in windows counts what each read covered (tiles' windows overlap by a
        # few cells), so its counts are of values read; one read whole is counted exactly
        return "values" if self.eager else "values read"

    def _why(self) -> str:
        return (
            f": more than {self.limit:.0%} of the values — wrong units, a wrong scale factor or a damaged file? "
            "If the values are right, pass valid_range=(lo, hi) (or max_invalid_fraction=) for this source"
        )

    def apply(self, a: np.ndarray, where: str) -> np.ndarray:
        """``a`` (one read) with the values outside the range as NaN (a copy if any are)."""
        present, out = self._mask(a)
        n, k = int(present.sum()), self._count(a, out)
        self.n += n
        self.bad += k
        if k:
            a = a.copy()
            a[out] = np.nan
            self._check(k, n, where)
        return a

    def apply_all(self, data: np.ndarray, where: Callable[[int], str]) -> None:
        """Screen a (T, ...) array in place, day by day (``where(t)`` names day ``t``)."""
        self.eager = True
        for t in range(data.shape[0]):
            day = data[t]
            present, out = self._mask(day)
            n, k = int(present.sum()), self._count(day, out)
            self.n += n
            self.bad += k
            if k:
                day[out] = np.nan
                self._check(k, n, where(t))

    def report(self, name: str, path: str, stacklevel: int) -> None:
        """Warn (DataLossWarning) about values set to NaN since the last report; raise if more
        than the limit of all values screened were."""
        if self.bad <= self.reported:
            return
        self.reported = self.bad
        msg = (
            f"source {name!r} ({_brief(path.split(';'))}): {self.bad} of {self.n} {self._values()} "
            f"({100 * self.bad / max(self.n, 1):.3g} %) {self._outside()} set to NaN"
        )
        if self.bad > self.limit * self.n:
            raise DataError(msg + self._why())
        warnings.warn(msg, DataLossWarning, stacklevel=stacklevel + 1)


def _file_range(attrs: dict[str, Any], encoding: dict[str, Any]) -> tuple[float, float] | None:
    """The valid range a CF variable states (``valid_range``, ``valid_min``, ``valid_max``),
    in unpacked values; None if it states none."""
    lo = hi = None
    stated = []
    vr = attrs.get("valid_range")
    if vr is not None and np.size(vr) == 2:
        lo, hi = (float(v) for v in np.ravel(vr))
        stated.append(np.asarray(vr))
    if attrs.get("valid_min") is not None:
        lo = float(np.ravel(attrs["valid_min"])[0])
        stated.append(np.asarray(attrs["valid_min"]))
    if attrs.get("valid_max") is not None:
        hi = float(np.ravel(attrs["valid_max"])[0])
        stated.append(np.asarray(attrs["valid_max"]))
    if lo is None and hi is None:
        return None
    lo = -math.inf if lo is None else lo
    hi = math.inf if hi is None else hi
    scale, offset = encoding.get("scale_factor"), encoding.get("add_offset")
    if (scale is not None or offset is not None) and all(a.dtype.kind in "iu" for a in stated):
        # CF: the valid range of packed data is stated in packed values
        sc, of = float(1.0 if scale is None else scale), float(0.0 if offset is None else offset)
        ends = [v * sc + of if math.isfinite(v) else v * math.copysign(1.0, sc) for v in (lo, hi)]
        lo, hi = min(ends), max(ends)
    return lo, hi


def _make_screen(spec: SourceSpec, units: str, file_range: tuple[float, float] | None, where: str) -> _Screen:
    """The valid range of a source: ``spec.valid_range``, or the plausible range of its units
    narrowed by the range the file states."""
    if spec.valid_range is not None:
        lo, hi = spec.valid_range
        return _Screen(lo, hi, f"[{lo:g}, {hi:g}] (valid_range given)", spec.max_invalid_fraction)
    lo, hi, why = -math.inf, math.inf, []
    if file_range is not None:
        lo, hi = file_range
        why.append("the file's valid range")
    table = PLAUSIBLE_RANGES.get(units)
    if table is not None:
        if file_range is not None and (file_range[0] > table[1] or file_range[1] < table[0]):
            raise DataError(
                f"{where}: the file's valid range [{file_range[0]:g}, {file_range[1]:g}] is outside the "
                f"plausible range of {units} [{table[0]:g}, {table[1]:g}]: wrong units? (or pass valid_range=)"
            )
        lo, hi = max(lo, table[0]), min(hi, table[1])
        why.append(f"plausible for {units}")
    if not why:
        return _Screen(
            lo, hi, f"the finite numbers (units {units!r} have no plausible range)", spec.max_invalid_fraction
        )
    return _Screen(lo, hi, f"[{lo:g}, {hi:g}] ({' and '.join(why)})", spec.max_invalid_fraction)


@dataclass
class Source:
    """A product on its native grid, daily (or static), ready to regrid.

    Data are read lazily, one day at a time (:meth:`day`), so that ingesting a long
    record keeps memory bounded by about one day of one source.

    Attributes
    ----------
    name : str
        Feature name (e.g. ``esa_cci_sm``, ``esa_cci_active_sm_pct_saturation``).
    path : str
        File(s) it came from (for error messages and provenance).
    units : str
        Normalised units.
    shape : tuple of int
        Spatial shape: ``(ny, nx)`` on a regular grid, ``(n_points,)`` on a reduced
        Gaussian grid.
    times : ndarray of datetime64[D] or None
        UTC days; ``None`` for a static layer.
    crs : pyproj.CRS
        CRS of the native grid.
    transform : Affine or None
        Native pixel → CRS transform (regular grids, north-up).
    lat, lon : ndarray or None
        Point coordinates (degrees) of a reduced Gaussian grid.
    screen : optional
        The valid range of the values and the count of those outside it (see
        :data:`PLAUSIBLE_RANGES`); :meth:`day` returns them as NaN.
    """

    name: str
    path: str
    units: str
    shape: tuple[int, ...]
    times: np.ndarray | None
    crs: CRS
    reader: Callable[[int, Window | None], np.ndarray]
    transform: Affine | None = None
    lat: np.ndarray | None = None
    lon: np.ndarray | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    _cache: tuple[int, Window | None, np.ndarray] | None = field(default=None, repr=False)
    screen: _Screen | None = field(default=None, repr=False)

    @property
    def is_static(self) -> bool:
        return self.times is None

    @property
    def is_points(self) -> bool:
        return self.lat is not None

    @property
    def n_times(self) -> int:
        return 1 if self.times is None else int(self.times.size)

    @property
    def resolution(self) -> float:
        """Approximate native cell size in metres (degrees × 111 km for geographic grids)."""
        if self.transform is not None:
            res = abs(self.transform.a)
            return res * 111_320.0 if self.crs.is_geographic else res
        n = self.lat.size if self.lat is not None else 1
        return float(np.sqrt(4 * np.pi * 6_371_000.0**2 / max(n, 1)))

    def day(self, t: int, window: Window | None = None) -> np.ndarray:
        """Field of time index ``t`` (float32, NaN for missing), optionally only a
        :class:`rasterio.windows.Window` of a regular grid; the last read is cached.

        Values outside the source's valid range (and ±inf) are NaN and counted (see
        :attr:`screen`); a read with more than the source's limit of them raises
        :class:`DataError`. The count is reported by :meth:`load`, :func:`regrid` and
        :func:`ingest`."""
        t = 0 if self.is_static else int(t)
        if self._cache is not None and self._cache[:2] == (t, window):
            return self._cache[2]
        a = np.ascontiguousarray(self.reader(t, window), dtype=np.float32)
        want = self.shape if window is None else (int(window.height), int(window.width))
        if a.shape != want:
            raise DataError(f"{self.path}: day {t} has shape {a.shape}, expected {want}")
        if self.screen is not None and not self.screen.eager:
            a = self.screen.apply(a, self._where(t))
        self._cache = (t, window, a)
        return a

    def _where(self, t: int) -> str:
        """The file of time index ``t`` and its day, for messages."""
        files = self.attrs.get("day_files")
        f = files[t] if files is not None and t < len(files) else self.path
        return f if self.times is None else f"{f}: day {self.times[t]}"

    def _report(self, stacklevel: int = 2) -> None:
        """Report the values found outside the valid range since the last report (a
        DataLossWarning; a DataError past the source's limit)."""
        if self.screen is not None:
            self.screen.report(self.name, self.path, stacklevel + 1)

    def window_for(self, grid: Grid, pad: int = 2) -> Window | None:
        """The part of a regular source that covers ``grid`` (plus ``pad`` cells), or None."""
        if self.transform is None:
            return None
        t = transformer(grid.crs, self.crs)
        x0, y0, x1, y1 = t.transform_bounds(*grid.bounds, densify_pts=21)
        inv = ~self.transform
        cols, rows = inv @ (np.array([x0, x1, x0, x1]), np.array([y0, y0, y1, y1]))
        r0 = max(int(np.floor(rows.min())) - pad, 0)
        c0 = max(int(np.floor(cols.min())) - pad, 0)
        r1 = min(int(np.ceil(rows.max())) + pad, self.shape[0])
        c1 = min(int(np.ceil(cols.max())) + pad, self.shape[1])
        if self.crs.is_geographic and (cols.min() < 0 or cols.max() > self.shape[1]):
            return None  # crosses the antimeridian: read whole
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(c0, r0, c1 - c0, r1 - r0)

    def window_transform(self, window: Window | None) -> Affine:
        """Transform of a window's pixels."""
        assert self.transform is not None
        if window is None:
            return self.transform
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def load(self) -> np.ndarray:
        """All days as one (T, ...) array (for small sources and tests)."""
        out = np.stack([self.day(t) for t in range(self.n_times)])
        self._report(2)
        return out


def _cut(a: np.ndarray, window: Window | None) -> np.ndarray:
    if window is None:
        return a
    return a[(..., *window.toslices())]


def _eager(data: np.ndarray) -> Callable[[int, Window | None], np.ndarray]:
    return lambda t, window: _cut(data[t], window)


@dataclass
class SourceSpec:
    """What to ingest from where, and how.

    Parameters
    ----------
    path : path or sequence of paths
        One file, or several (e.g. one per day) concatenated along time.
    variable : str, optional
        Variable name in NetCDF/GRIB (default: the product's soil-moisture variable or the
        only data variable).
    name : str, optional
        Feature name in the tile (default derived from the product).
    storage : {"auto", "fine", "coarse"}
        ``fine`` regrids a daily source to the sub-pixels; ``coarse`` keeps its native
        cells with an index map (each sub-pixel takes the cell containing its centre);
        ``auto`` (default, :func:`default_storage`) stores it coarse when its native cell
        is at least :data:`COARSE_FACTOR` sub-pixels wide, else fine. Static layers are
        always regridded to the sub-pixels (they are stored once).
    method : {"auto", "average", "bilinear", "nearest"}
        Resampling for ``fine`` storage (``nearest`` gives the values ``coarse`` storage
        gives).
    daily : {None, "mean", "min", "max", "sum"}
        Aggregate sub-daily data to UTC days (otherwise sub-daily input is an error).
    time : date, optional
        The day of a single-day GeoTIFF.
    units : str, optional
        Units of a file that does not state them (GeoTIFFs often do not; a NetCDF variable
        without a units attribute needs them too); a file that does state units must agree.
    valid_range : (float, float), optional
        Valid values; others become NaN (counted and reported). Default: the plausible
        range of the units (:data:`PLAUSIBLE_RANGES`) narrowed by the file's
        ``valid_min``/``valid_max``/``valid_range``.
    max_invalid_fraction : float, optional
        More than this fraction of the source's values outside the valid range is an
        error (default :data:`MAX_INVALID_FRACTION`).
    """

    path: str | Path | Sequence[str | Path]
    variable: str | None = None
    name: str | None = None
    storage: Literal["fine", "coarse", "auto"] = "auto"
    method: Method = "auto"
    daily: Literal["mean", "min", "max", "sum"] | None = None
    time: Any = None
    units: str | None = None
    valid_range: tuple[float, float] | None = None
    max_invalid_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.valid_range is not None:
            try:
                lo, hi = (float(v) for v in self.valid_range)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"valid_range must be (lo, hi), got {self.valid_range!r}") from exc
            if not lo < hi:
                raise ConfigError(f"valid_range must be (lo, hi) with lo < hi, got {self.valid_range!r}")
            self.valid_range = (lo, hi)
        if self.max_invalid_fraction is not None and not 0.0 <= float(self.max_invalid_fraction) <= 1.0:
            raise ConfigError(f"max_invalid_fraction must be in [0, 1], got {self.max_invalid_fraction!r}")

    def paths(self) -> list[Path]:
        if isinstance(self.path, (str, Path)):
            return [Path(self.path)]
        return [Path(p) for p in self.path]


# ------------------------------------------------------------------------------------
# readers
# ------------------------------------------------------------------------------------
def _iso_days(duration: str) -> float | None:
    """Length of an ISO 8601 duration in days (approximate for months/years)."""
    m = re.fullmatch(r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)D)?(?:T.*)?", str(duration).strip())
    if not m or not any(m.groups()):
        return None
    y, mo, d = (int(g) if g else 0 for g in m.groups())
    return 365.25 * y + 30.4 * mo + d


def _daily_times(
    times: np.ndarray, path: str, attrs: dict[str, Any], daily: str | None, data: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Check (or make) a daily time axis; returns (days, data aggregated if asked)."""
    t = np.asarray(times, dtype="datetime64[ns]")
    if t.size > 1:
        step = np.diff(t).astype("timedelta64[s]").astype(np.int64)
        if (step <= 0).any():
            raise DataError(f"{path}: time axis is not increasing")
        if step.min() < 86400:
            if daily is None:
                raise DataError(
                    f"{path}: time axis is not daily (step {step.min() / 3600:g} h); "
                    "pass daily='mean' (or min/max/sum) to aggregate to UTC days"
                )
            days = t.astype("datetime64[D]")
            uniq, inv = np.unique(days, return_inverse=True)
            steps = np.bincount(inv)
            freq = np.bincount(steps)
            usual = int(np.flatnonzero(freq == freq.max())[-1])  # steps most days have (ties: the most)
            short = np.flatnonzero(steps < usual)
            if short.size:  # e.g. a file cut at a message boundary, or local-time data at its ends
                shown = ", ".join(f"{uniq[i]} ({steps[i]})" for i in short[:5]) + (" …" if short.size > 5 else "")
                warnings.warn(
                    f"{path}: {short.size} UTC day(s) have fewer time steps than the {usual} most days have: "
                    f"{shown}; their daily {daily} is taken over the steps present",
                    DataLossWarning,
                    stacklevel=4,
                )
            func = {"mean": np.nanmean, "min": np.nanmin, "max": np.nanmax, "sum": np.nansum}[daily]
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN days stay NaN
                out = np.stack([func(data[inv == i], axis=0) for i in range(uniq.size)]).astype(np.float32)
            return uniq, out
        if (step % 86400 != 0).any():
            raise DataError(f"{path}: time axis is not daily (steps are not whole days)")
    else:
        name = Path(path).name.upper()
        span = _iso_days(attrs.get("time_coverage_duration", ""))
        if any(tok in name for tok in ("MONTHLY", "DEKADAL", "YEARLY", "PENTADAL")) or (
            span is not None and 1.5 < span < 400
        ):
            raise DataError(
                f"{path}: time axis is not daily (one step covering "
                f"{attrs.get('time_coverage_duration', 'a period')}, e.g. a monthly mean)"
            )
    return t.astype("datetime64[D]"), data


def _read_band(path: Path, window: Window | None = None) -> np.ndarray:
    try:
        with rasterio.open(path) as src:
            return src.read(1, window=window, masked=True).astype(np.float32).filled(np.nan)
    except rasterio.errors.RasterioError as exc:
        raise DataError(f"{path}: cannot read GeoTIFF (corrupt or truncated?): {exc}") from exc


def _geotiff(spec: SourceSpec, path: Path) -> Source:
    try:
        with rasterio.open(path) as src:
            if src.crs is None:
                raise DataError(f"{path}: GeoTIFF has no CRS; assign one (e.g. gdal_edit.py -a_srs)")
            if src.count != 1:
                raise DataError(
                    f"{path}: {src.count} bands; smengine reads single-band GeoTIFFs (one layer or one day per file)"
                )
            transform = src.transform
            crs = CRS.from_user_input(src.crs.to_wkt())
            shape = (src.height, src.width)
            units = (
                (src.units[0] if src.units and src.units[0] else None)
                or src.tags(1).get("units")
                or src.tags().get("units", "")
            )
            descr = src.descriptions[0] if src.descriptions and src.descriptions[0] else None
            tag_time = src.tags().get("time") or src.tags().get("TIFFTAG_DATETIME")
    except DataError:
        raise
    except rasterio.errors.RasterioError as exc:
        raise DataError(f"{path}: cannot read GeoTIFF (corrupt or truncated?): {exc}") from exc
    # fail now, naming the file, if the pixel data are cut short: the last row is stored last
    _read_band(path, Window(0, shape[0] - 1, shape[1], 1))
    name = spec.name or descr or path.stem
    when = spec.time
    if when is None and tag_time:
        when = str(tag_time)[:10].replace(":", "-")
    times = None if when is None else as_days([when])
    if not units and spec.units is None:
        raise DataError(f"{path}: GeoTIFF states no units; pass units= (e.g. 'm' for elevation)")
    unit = _resolve_units(units or None, spec.units, f"{path}")
    return Source(
        name,
        str(path),
        unit,
        shape,
        times,
        crs,
        lambda t, w: _read_band(path, w),
        transform,
        screen=_make_screen(spec, unit, None, str(path)),
    )


_SM_PRODUCTS = (
    (re.compile(r"ESACCI-SOILMOISTURE-L3S-SSMS-ACTIVE"), "esa_cci_active_sm"),
    (re.compile(r"ESACCI-SOILMOISTURE-L3S-SSMV-PASSIVE"), "esa_cci_passive_sm"),
    (re.compile(r"ESACCI-SOILMOISTURE"), "esa_cci_sm"),
    (re.compile(r"C3S-SOILMOISTURE-L3S-SSMS-ACTIVE"), "c3s_active_sm"),
    (re.compile(r"C3S-SOILMOISTURE-L3S-SSMV-PASSIVE"), "c3s_passive_sm"),
    (re.compile(r"C3S-SOILMOISTURE"), "c3s_sm"),
)


def _default_variable(ds: Any, path: Path) -> str:
    names = list(ds.data_vars)
    for cand in ("sm", "swvl1", "swi1"):
        if cand in names:
            return cand
    spatial = [n for n in names if ds[n].ndim >= 2]
    if len(spatial) == 1:
        return spatial[0]
    raise DataError(f"{path}: several variables {spatial}; choose one with variable=")


@dataclass
class _Layout:
    """How to turn one variable of an xarray dataset into north-up (T, ny, nx) fields."""

    var: str
    tdim: str | None
    ydim: str
    xdim: str
    flip_y: bool
    roll_x: int
    squeeze: dict[str, int]

    def fields(self, ds: Any, k: int | None = None) -> np.ndarray:
        """All time steps (k None) as (T, ny, nx), or step k as (ny, nx); static as (ny, nx)."""
        da = ds[self.var].isel(self.squeeze) if self.squeeze else ds[self.var]
        if self.tdim is not None and k is not None:
            da = da.isel({self.tdim: k})
        dims = tuple(d for d in (self.tdim, self.ydim, self.xdim) if d is not None and d in da.dims)
        a = np.asarray(da.transpose(*dims).values, dtype=np.float32)
        if self.flip_y:
            a = a[..., ::-1, :]
        if self.roll_x:
            a = np.roll(a, self.roll_x, axis=-1)
        return a


def _regular_layout(ds: Any, var: str, path: Path, spec: SourceSpec) -> tuple[_Layout, dict[str, Any]]:
    """Inspect (without loading) a regular-grid variable: layout, CRS, transform, times, units."""
    da = ds[var]
    tdim = "time" if "time" in da.dims else ("valid_time" if "valid_time" in da.dims else None)  # ERA5-Land
    ydim = next((d for d in ("lat", "latitude", "y") if d in da.dims), None)
    xdim = next((d for d in ("lon", "longitude", "x") if d in da.dims), None)
    if ydim is None or xdim is None:
        raise DataError(f"{path}: variable {var!r} has dims {da.dims}; need lat/lon or y/x")
    squeeze = {d: 0 for d in da.dims if d not in (tdim, ydim, xdim)}
    for d in squeeze:
        if da.sizes[d] != 1:
            raise DataError(
                f"{path}: variable {var!r} has an extra dimension {d!r} of size {da.sizes[d]}; select one level first"
            )
    geographic = ydim in ("lat", "latitude")
    if geographic:
        crs = CRS.from_epsg(4326)
    else:
        gm = da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping")
        if not gm or gm not in ds.variables:
            raise DataError(f"{path}: variable {var!r} on x/y has no grid_mapping: CRS unknown")
        crs = CRS.from_cf(ds[gm].attrs)
    x = np.asarray(ds[xdim].values, dtype=np.float64)
    y = np.asarray(ds[ydim].values, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        raise DataError(f"{path}: grid of {y.size}x{x.size} cells is too small to locate")
    dx, dy = np.diff(x), np.diff(y)
    if not (np.allclose(dx, dx[0], rtol=1e-4) and np.allclose(dy, dy[0], rtol=1e-4)):
        raise DataError(f"{path}: {var!r} is not on a regular grid")
    flip = bool(dy[0] > 0)  # south → north: flip to north-up
    ytop = y[-1] if flip else y[0]
    ddy = -abs(float(dy[0]))
    roll = 0
    x0 = float(x[0])
    if geographic and x.max() > 180.0:  # 0…360 longitudes → −180…180
        roll = int(np.sum(x >= 180.0))
        x0 = float(x[np.argmax(x >= 180.0)] - 360.0)
    transform = Affine(float(dx[0]), 0.0, x0 - dx[0] / 2, 0.0, ddy, float(ytop - ddy / 2))
    units = _resolve_units(da.attrs.get("units", da.attrs.get("GRIB_units")), spec.units, f"{path}: variable {var!r}")
    name = spec.name
    if name is None:
        name = var
        for pat, prod in _SM_PRODUCTS:
            if pat.search(path.name):
                name = prod if var == "sm" else f"{prod}_{var}"
                break
    if units == "%" and not name.endswith("_pct_saturation"):
        name = f"{name}_pct_saturation"  # never mix % saturation with m3 m-3
    meta = {
        "crs": crs,
        "transform": transform,
        "units": units,
        "name": name,
        "shape": (y.size, x.size),
        "raw_times": None if tdim is None else np.atleast_1d(ds[tdim].values),
        "time_units": "" if tdim is None else str(ds[tdim].encoding.get("units", "")),
        "file_range": _file_range(dict(da.attrs), dict(da.encoding)),
    }
    return _Layout(var, tdim, ydim, xdim, flip, roll, squeeze), meta


# the UTC offset at the end of CF time units: "days since 2020-01-01 00:00:00 +02:00" (or
# +0200, +02, Z, UTC); a date alone cannot carry one ("since 2020-01-01" ends in "-01")
_SINCE_TZ = re.compile(
    r"since\s+[+-]?\d+-\d{1,2}-\d{1,2}(?:[ T]\d{1,2}(?::\d{1,2}(?::\d{1,2}(?:\.\d*)?)?)?)?"
    r"\s*(?P<tz>Z|UTC|GMT|[+-]\d{1,2}(?::?\d{2})?)?\s*$",
    re.IGNORECASE,
)


def _utc_offset(units: str) -> tuple[str, int] | None:
    """The UTC offset that CF time ``units`` state, as (its text, minutes); None for UTC or none."""
    m = _SINCE_TZ.search(units or "")
    if m is None or m["tz"] is None or m["tz"].upper() in ("Z", "UTC", "GMT"):
        return None
    tz = m["tz"]
    digits = tz[1:].replace(":", "")
    hours, minutes = (int(digits[:-2]), int(digits[-2:])) if len(digits) > 2 else (int(digits), 0)
    total = (-1 if tz[0] == "-" else 1) * (60 * hours + minutes)
    return (tz, total) if total else None


def _check_local_days(path: Path, units: str, times: np.ndarray) -> None:
    """Refuse daily values of local days: time units with a UTC offset put each daily value
    on a local day, which straddles two UTC days (xarray has already decoded the times to
    UTC; truncating them to days would move every value to the UTC day its start falls in).
    Sub-daily values are fine: each falls in one UTC day and ``daily=`` aggregates them.
    """
    offset = _utc_offset(units)
    if offset is None:
        return
    t = np.asarray(times, dtype="datetime64[ns]")
    if _is_subdaily(t):
        log.info("%s: time units %r are local time (UTC%s); times converted to UTC", path, units, offset[0])
        return
    if (t == t.astype("datetime64[D]")).all():  # local days that begin at 00:00 UTC
        return
    raise DataError(
        f"{path}: time units {units!r} are local time (UTC{offset[0]}): each daily value covers a local "
        f"day, which straddles two UTC days (the first from {str(t[0])[:16]} UTC); smengine's days are UTC "
        "days: resample the product to UTC days, or give its sub-daily data with daily= to aggregate them"
    )


def _is_subdaily(times: np.ndarray) -> bool:
    t = np.asarray(times, dtype="datetime64[ns]")
    return t.size > 1 and np.diff(t).astype("timedelta64[s]").astype(np.int64).min() < 86400


def _netcdf(spec: SourceSpec, path: Path) -> Source:
    import xarray as xr

    def open_ds() -> Any:
        try:
            return xr.open_dataset(path, engine="netcdf4", mask_and_scale=True, decode_times=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise DataError(f"{path}: cannot read NetCDF (corrupt or truncated?): {exc}") from exc

    def bad(exc: Exception) -> DataError:
        return DataError(f"{path}: cannot read variable {var!r} (corrupt or truncated?): {exc}")

    with open_ds() as ds:
        var = spec.variable or _default_variable(ds, path)
        if var not in ds:
            raise DataError(f"{path}: no variable {var!r} (has {sorted(ds.data_vars)})")
        layout, meta = _regular_layout(ds, var, path, spec)
        screen = _make_screen(spec, meta["units"], meta["file_range"], f"{path}: variable {var!r}")
        raw = meta["raw_times"]
        if raw is not None:
            _check_local_days(path, meta["time_units"], raw)
        try:
            if raw is None:  # a static layer
                data = layout.fields(ds)[None]
                screen.apply_all(data, lambda t: str(path))
                times, reader = None, _eager(data)
            elif _is_subdaily(raw):  # aggregate (or refuse) in memory
                data = layout.fields(ds)
                if spec.daily is not None:
                    screen.apply_all(data, lambda t: f"{path}: {str(raw[t])[:16]}")
                times, data = _daily_times(raw, str(path), dict(ds.attrs), spec.daily, data)
                reader = _eager(data)
            else:
                times, _ = _daily_times(raw, str(path), dict(ds.attrs), None, None)  # type: ignore[arg-type]
                layout.fields(ds, 0)  # fail now, naming the file, if the data are unreadable
                reader = None
        except DataError:
            raise
        except (OSError, RuntimeError) as exc:  # HDF5 errors surface at the first read
            raise bad(exc) from exc

    if reader is None:  # daily: read one day at a time, reopening the file (bounded memory)

        def reader(t: int, window: Window | None) -> np.ndarray:
            with open_ds() as d:  # coarse gridded products: read the day, then cut the window
                try:
                    return _cut(layout.fields(d, t), window)
                except DataError:
                    raise
                except (OSError, RuntimeError) as exc:
                    raise bad(exc) from exc

    return Source(
        meta["name"],
        str(path),
        meta["units"],
        meta["shape"],
        times,
        meta["crs"],
        reader,
        meta["transform"],
        attrs={"variable": var},
        screen=screen,
    )


def _check_grib_messages(path: Path) -> int:
    """Walk the GRIB messages of ``path`` frame by frame; a cut, damaged or padded-with-garbage
    file raises :class:`DataError` naming the message and its byte offset. Returns the count.

    Each message must begin with ``GRIB``, have sections whose lengths add up to the length
    it states, and end with ``7777``; between and after messages only NUL bytes are allowed
    (ERA5 pads its GRIB 1 messages to multiples of 120 bytes). ecCodes quietly drops a cut
    last message and skips bytes it does not recognise, so a half-copied or damaged file
    would otherwise read as a shorter valid one. (Bytes overwritten inside the packed values
    cannot be told: GRIB has no checksum. They decode within the message's packing range;
    the plausible-range screening catches what falls outside.)
    """
    size = path.stat().st_size
    if size == 0:
        raise DataError(f"{path}: empty file, no GRIB messages")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        n, pos, end, start = 0, 0, 0, 0
        padded = True  # so far, every message was NUL-padded to a multiple of _GRIB_PAD bytes (ERA5)
        while True:
            pos = _skip_nul(mm, end, size)
            if n and pos < size:
                padded = padded and pos > end and (pos - start) % _GRIB_PAD == 0
            if pos >= size:
                break
            if mm[pos : pos + 4] != b"GRIB":
                later = mm.find(b"GRIB", pos)
                where = f"after message {n} (which ends at byte {end})" if n else "at the start of the file"
                if later < 0:
                    what = "trailing garbage" if n else "no 'GRIB' marker"
                    raise DataError(f"{path}: corrupt GRIB: {what} ({size - pos} bytes) at byte {pos}, {where}")
                raise DataError(f"{path}: corrupt GRIB: {later - pos} bytes of garbage at byte {pos}, {where}")
            length = _grib_message_length(path, mm, pos, n + 1)
            if pos + length > size:
                raise DataError(
                    f"{path}: truncated GRIB: message {n + 1} at byte {pos} is {length} bytes long, "
                    f"but the file ends {size - pos} bytes after its start (the file was cut short)"
                )
            if mm[pos + length - 4 : pos + length] != b"7777":
                raise DataError(
                    f"{path}: corrupt GRIB: message {n + 1} at byte {pos} does not end with '7777' "
                    f"{length} bytes on (its length or contents are damaged)"
                )
            _check_grib_sections(path, mm, pos, length, n + 1)
            start, end = pos, pos + length
            n += 1
        if n >= 2 and padded and size - start < -(-(end - start) // _GRIB_PAD) * _GRIB_PAD:
            raise DataError(
                f"{path}: truncated GRIB: every message is NUL-padded to a multiple of {_GRIB_PAD} bytes but "
                f"the last one (message {n} at byte {start}) is not: the file was cut inside or before its padding"
            )
    if n == 0:
        raise DataError(f"{path}: no GRIB messages (only NUL bytes)")
    return n


# ECMWF (MARS, ERA5) writes each GRIB 1 message NUL-padded to a multiple of this many bytes
_GRIB_PAD = 120


def _skip_nul(mm: mmap.mmap, pos: int, size: int) -> int:
    """Position of the first byte at or after ``pos`` that is not NUL (``size`` if none)."""
    while pos < size:
        chunk = mm[pos : pos + 65536]
        rest = chunk.lstrip(b"\x00")
        if rest:
            return pos + len(chunk) - len(rest)
        pos += len(chunk)
    return size


def _grib_message_length(path: Path, mm: mmap.mmap, pos: int, k: int) -> int:
    """The total length message ``k`` (at byte ``pos``) states in its section 0."""
    head = mm[pos : pos + 16]
    if len(head) < 8:
        raise DataError(f"{path}: truncated GRIB: message {k} at byte {pos} is cut inside its first section")
    edition = head[7]
    if edition == 1:
        length = int.from_bytes(head[4:7], "big")
        if length & 0x800000:  # ECMWF's large GRIB 1 encoding: ask ecCodes
            return _grib1_large_length(path, pos, k)
        return length
    if edition == 2:
        if len(head) < 16:
            raise DataError(f"{path}: truncated GRIB: message {k} at byte {pos} is cut inside its first section")
        return int.from_bytes(head[8:16], "big")
    raise DataError(f"{path}: corrupt GRIB: message {k} at byte {pos} states edition {edition} (1 or 2)")


def _grib1_large_length(path: Path, pos: int, k: int) -> int:
    """Length of a GRIB 1 message over 8 MB (ECMWF encodes those lengths in 120-byte units)."""
    import eccodes

    with open(path, "rb") as f:
        f.seek(pos)
        try:
            h = eccodes.codes_grib_new_from_file(f)
        except Exception as exc:  # ecCodes raises its own error classes
            raise DataError(f"{path}: corrupt GRIB: message {k} at byte {pos}: {exc}") from exc
        if h is None:
            raise DataError(f"{path}: truncated GRIB: message {k} at byte {pos} cannot be read")
        try:
            offset, length = int(eccodes.codes_get(h, "offset")), int(eccodes.codes_get(h, "totalLength"))
        finally:
            eccodes.codes_release(h)
    if offset != pos:
        raise DataError(f"{path}: corrupt GRIB: message {k} at byte {pos} cannot be read (ecCodes skipped it)")
    return length


def _check_grib_sections(path: Path, mm: mmap.mmap, pos: int, length: int, k: int) -> None:
    """The sections of message ``k`` must fill it exactly, from section 0 to the ``7777``."""
    end = pos + length - 4

    def bad(what: str) -> DataError:
        return DataError(f"{path}: corrupt GRIB: message {k} at byte {pos}: {what}")

    if mm[pos + 7] == 1:
        if mm[pos + 4] & 0x80:  # large message: section 4's length is encoded too; ecCodes checked it
            return
        q = pos + 8
        flags = mm[pos + 8 + 7]  # section 1, octet 8: grid description (0x80) and bitmap (0x40) present
        lengths = []
        for sec in (1, 2, 3, 4):
            if (sec == 2 and not flags & 0x80) or (sec == 3 and not flags & 0x40):
                continue
            n = int.from_bytes(mm[q : q + 3], "big") if q + 3 <= end else 0
            if n < 3 or q + n > end:
                raise bad(
                    f"section {sec} at byte {q} states length {n}, which does not fit the message ({length} bytes)"
                )
            lengths.append(n)
            q += n
        if q != end:
            raise bad(f"its sections end at byte {q}, not at the '7777' at byte {end} (lengths {lengths})")
        return
    q = pos + 16
    while q < end:
        n = int.from_bytes(mm[q : q + 4], "big") if q + 5 <= end else 0
        sec = mm[q + 4] if q + 5 <= end else -1
        if n < 5 or q + n > end or not 1 <= sec <= 7:
            raise bad(f"section at byte {q} (number {sec}, length {n}) does not fit the message ({length} bytes)")
        q += n


def _grib(spec: SourceSpec, path: Path) -> Source:
    import xarray as xr

    try:
        import cfgrib  # noqa: F401  (the optional extra; imported only for GRIB input)
    except ImportError as exc:
        raise DataError(f"{path}: reading GRIB needs the 'grib' extra: pip install 'smengine[grib]' ({exc})") from exc
    n_messages = _check_grib_messages(path)
    try:  # errors="raise": a message ecCodes cannot read is an error, not skipped with a log line
        ds = xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": "", "errors": "raise"})
    except Exception as exc:  # cfgrib raises a zoo of types on bad input
        first = (str(exc).strip().splitlines() or [""])[0]  # cfgrib's messages go on for lines
        raise DataError(f"{path}: cannot read GRIB (corrupt or truncated?): {type(exc).__name__}: {first}") from exc
    with ds:
        var = spec.variable or _default_variable(ds, path)
        if var not in ds:
            raise DataError(f"{path}: no variable {var!r} (has {sorted(ds.data_vars)})")
        da = ds[var]
        grid_type = da.attrs.get("GRIB_gridType", "")
        if "step" in da.dims:
            raise DataError(f"{path}: {var!r} has forecast steps; use analysis/reanalysis fields")
        raw = np.atleast_1d(ds["valid_time"].values)

        def when(t: int) -> str:
            return f"{path}: {str(raw[t])[:16]}"

        try:
            if grid_type in ("regular_ll", "regular_gg"):
                layout, meta = _regular_layout(ds, var, path, spec)
                data = layout.fields(ds)
                data = data if data.ndim == 3 else data[None]
                screen = _make_screen(spec, meta["units"], None, f"{path}: variable {var!r}")
                screen.apply_all(data, when)
                times, data = _daily_times(raw, str(path), {}, spec.daily, data)
                return Source(
                    meta["name"],
                    str(path),
                    meta["units"],
                    meta["shape"],
                    times,
                    meta["crs"],
                    _eager(data),
                    meta["transform"],
                    attrs={"variable": var, "grib_messages": n_messages},
                    screen=screen,
                )
            if grid_type != "reduced_gg":
                raise DataError(f"{path}: GRIB grid type {grid_type!r} is not supported (regular_ll, reduced_gg)")
            lat = np.asarray(da["latitude"].values, dtype=np.float64)
            lon = np.asarray(da["longitude"].values, dtype=np.float64)
            data = np.asarray(da.values, dtype=np.float32)
        except DataError:
            raise
        except Exception as exc:  # ecCodes' own error classes too (e.g. InvalidBitsPerValueError)
            raise DataError(f"{path}: cannot decode {var!r} (corrupt GRIB?): {type(exc).__name__}: {exc}") from exc
        data = data if data.ndim == 2 else data[None]
        units = _resolve_units(
            da.attrs.get("units", da.attrs.get("GRIB_units")), spec.units, f"{path}: variable {var!r}"
        )
        screen = _make_screen(spec, units, None, f"{path}: variable {var!r}")
        screen.apply_all(data, when)
        times, data = _daily_times(raw, str(path), {}, spec.daily, data)
        name = spec.name or (f"h14_{var}" if "H14" in path.name.upper() else var)
        return Source(
            name,
            str(path),
            units,
            (lat.size,),
            times,
            CRS.from_epsg(4326),
            _eager(data),
            None,
            lat,
            lon,
            attrs={"variable": var, "grid_type": grid_type, "grib_messages": n_messages},
            screen=screen,
        )


def _stack(parts: list[Source], spec: SourceSpec) -> Source:
    """Concatenate single- or multi-day sources (e.g. one file per day) along time."""
    first = parts[0]
    if first.is_static:
        raise DataError(f"{first.path}: a static layer cannot be stacked with other files")
    for p in parts[1:]:
        if p.shape != first.shape or p.transform != first.transform or p.is_static or p.crs != first.crs:
            raise DataError(f"{p.path}: grid differs from {first.path}; cannot stack along time")
    owner = np.concatenate([np.full(p.n_times, i) for i, p in enumerate(parts)])
    local = np.concatenate([np.arange(p.n_times) for p in parts])
    times = np.concatenate([p.times for p in parts])  # type: ignore[misc]
    order = np.argsort(times, kind="stable")
    times, owner, local = times[order], owner[order], local[order]
    if times.size > 1 and not (np.diff(times.astype(np.int64)) > 0).all():
        raise DataError(f"{[str(p) for p in spec.paths()]}: duplicate days across files")
    screens = [p.screen for p in parts if p.screen is not None]
    screen = None
    if screens:  # the parts' readers are called directly: screening (if not done whole) is the stack's
        s0 = screens[0]
        screen = _Screen(s0.lo, s0.hi, s0.what, s0.max_fraction, eager=all(s.eager for s in screens))
        if screen.eager:
            screen.n, screen.bad = sum(s.n for s in screens), sum(s.bad for s in screens)
            worst = max(screens, key=lambda s: s._worst_by)
            screen.worst, screen._worst_by = worst.worst, worst._worst_by
    stats = {k: v for p in parts for k, v in p.attrs.get("file_stats", {}).items()}
    return Source(
        first.name,
        ";".join(p.path for p in parts),
        first.units,
        first.shape,
        times,
        first.crs,
        lambda t, w: parts[owner[t]].reader(local[t], w),
        first.transform,
        first.lat,
        first.lon,
        {**first.attrs, "file_stats": stats, "day_files": [parts[o].path for o in owner]},
        screen=screen,
    )


def open_source(spec: SourceSpec | str | Path, **kwargs: Any) -> Source:
    """Read a product into a :class:`Source` (native grid, NaN for missing, units normalised).

    Parameters
    ----------
    spec : SourceSpec or path
        What to read; keyword arguments fill a :class:`SourceSpec` when a path is given.

    Returns
    -------
    Source

    Raises
    ------
    DataError
        Naming the file and the reason: missing file or CRS, missing or unknown units,
        corrupt or truncated file, a time axis that is not daily (or of local days), an
        unsupported grid; more than the source's ``max_invalid_fraction`` of its values
        outside the valid range (sources read whole when opened: GRIB, sub-daily and static
        NetCDF; the others are screened as they are read, see :func:`ingest`).

    Warns
    -----
    DataLossWarning
        Values outside the valid range (or ±inf) in a source read whole when opened: they
        are NaN; the warning counts them and gives the worst.
    """
    if not isinstance(spec, SourceSpec):
        spec = SourceSpec(spec, **kwargs)
    parts = []
    for path in spec.paths():
        if not path.exists():
            raise DataError(f"{path}: no such file")
        st = path.stat()  # before reading: a change while it is read is seen next time
        suffix = path.suffix.lower()
        if suffix in (".tif", ".tiff"):
            part = _geotiff(spec, path)
        elif suffix in (".nc", ".nc4", ".netcdf"):
            part = _netcdf(spec, path)
        elif suffix in (".grib", ".grb", ".grib1", ".grib2", ".grb2"):
            part = _grib(spec, path)
        else:
            raise DataError(f"{path}: unknown format {suffix!r} (GeoTIFF, NetCDF or GRIB)")
        part.attrs["file_stats"] = {str(path): [int(st.st_size), int(st.st_mtime_ns)]}
        parts.append(part)
    src = parts[0] if len(parts) == 1 else _stack(parts, spec)
    if src.screen is not None and src.screen.eager:
        src._report(2)
    return src


# ------------------------------------------------------------------------------------
# regridding
# ------------------------------------------------------------------------------------
_RESAMPLING = {"average": Resampling.average, "bilinear": Resampling.bilinear, "nearest": Resampling.nearest}


def _target(grid: Grid, subpixel: bool) -> tuple[Affine, tuple[int, int]]:
    return (grid.subpixel_transform, grid.subpixel_shape) if subpixel else (grid.transform, grid.shape)


def _check_overlap(source: Source, grid: Grid) -> None:
    west, south, east, north = grid.lonlat_bounds()
    if source.is_points:
        lon = (source.lon + 180.0) % 360.0 - 180.0  # type: ignore[operator]
        ok = ((source.lat >= south - 1) & (source.lat <= north + 1) & (lon >= west - 1) & (lon <= east + 1)).any()
    else:
        sw, ss, se, sn = rasterio.transform.array_bounds(*source.shape, source.transform)
        t = transformer(grid.crs, source.crs)
        gx0, gy0, gx1, gy1 = t.transform_bounds(*grid.bounds, densify_pts=21)
        ok = not (gx1 <= sw or gx0 >= se or gy1 <= ss or gy0 >= sn)
    if not ok:
        raise DataError(
            f"{source.path}: does not overlap the grid (grid lon/lat bounds "
            f"{west:.3f}, {south:.3f}, {east:.3f}, {north:.3f})"
        )


def _auto_method(source: Source, grid: Grid, subpixel: bool) -> str:
    target = grid.subpixel_resolution if subpixel else grid.resolution
    return "average" if source.resolution < target else "bilinear"


def _points_nearest(source: Source, grid: Grid, subpixel: bool) -> np.ndarray:
    """Index of the nearest reduced-Gaussian point for every target cell (great circle)."""
    h, w = grid.subpixel_shape if subpixel else grid.shape
    rows, cols = np.mgrid[0:h, 0:w]
    x, y = grid.xy(rows, cols, subpixel=subpixel)
    lon, lat = transformer(grid.crs, "EPSG:4326").transform(x, y)
    return _nearest_on_sphere(source.lat, source.lon, np.asarray(lat), np.asarray(lon))  # type: ignore[arg-type]


def _nearest_on_sphere(plat: np.ndarray, plon: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree

    def xyz(la, lo):
        la, lo = np.radians(la), np.radians(lo)
        return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)

    # only the points near the target box go into the tree
    pad = 2.0
    sel = np.flatnonzero((plat >= lat.min() - pad) & (plat <= lat.max() + pad))
    tree = cKDTree(xyz(plat[sel], plon[sel]))
    _, k = tree.query(xyz(lat.ravel(), lon.ravel()))
    return sel[k].reshape(lat.shape)


def regrid(
    source: Source,
    grid: Grid,
    *,
    subpixel: bool = True,
    method: Method = "auto",
    days: Iterable[int] | None = None,
) -> np.ndarray:
    """Resample a source onto a grid with GDAL (or nearest-on-sphere for point grids).

    Parameters
    ----------
    source : Source
    grid : Grid
        Target grid (typically a tile grid).
    subpixel : bool
        Resample to sub-pixels (default) or pixels.
    method : {"auto", "average", "bilinear", "nearest"}
        ``auto``: ``average`` when the source is finer than the target, else ``bilinear``.
    days : iterable of int, optional
        Day indices of the source to resample (default all; static sources have one).

    Returns
    -------
    ndarray, float32, shape (n_days, Y, X)
        NaN where the source has no data or does not reach.

    Raises
    ------
    DataError
        If the source does not overlap the grid, or more than its ``max_invalid_fraction``
        of the values read are outside its valid range.

    Warns
    -----
    DataLossWarning
        Values read that were outside the source's valid range (NaN in the result).
    """
    r = _Regridder(source, grid, subpixel, method)
    idx = range(source.n_times) if days is None else days
    out = np.stack([r.field(t) for t in idx]) if idx else np.empty((0, *r.shape), np.float32)
    source._report(2)
    return out


class _Regridder:
    """Everything about (source → grid) that does not change from day to day, prepared once:
    the overlap check, the method, the source window and, for nearest, the cell index map."""

    def __init__(self, source: Source, grid: Grid, subpixel: bool, method: Method) -> None:
        _check_overlap(source, grid)
        self.source, self.grid = source, grid
        self.dst_transform, self.shape = _target(grid, subpixel)
        self.method = (
            "nearest" if source.is_points else (_auto_method(source, grid, subpixel) if method == "auto" else method)
        )
        if self.method not in _RESAMPLING:
            raise ConfigError(f"unknown resampling method {method!r}; use {sorted(_RESAMPLING)} or 'auto'")
        self.window = source.window_for(grid)  # read only the part of the source the grid needs
        if self.method == "nearest":
            # exact: the source cell containing each target centre (or, on a reduced Gaussian
            # grid, the nearest point). GDAL's warper would use its approximate transformer
            # (error up to 1/8 source cell) and pick the wrong cell near cell edges.
            self.index, self.cells = coarse_index(source, grid, subpixel=subpixel, window=self.window)

    def field(self, t: int) -> np.ndarray:
        """The source's time index ``t`` on the grid, float32 (Y, X), NaN where it has no data."""
        data = self.source.day(t, self.window)
        if self.method == "nearest":
            if not self.cells.size:  # overlapping bounds, but no target centre inside the source
                return np.full(self.shape, np.nan, dtype=np.float32)
            return CoarseLayer(data.ravel()[self.cells][None], self.index).expand(0)
        out = np.full(self.shape, np.nan, dtype=np.float32)
        reproject(
            data,
            out,
            src_transform=self.source.window_transform(self.window),
            src_crs=self.source.crs.to_wkt(),
            dst_transform=self.dst_transform,
            dst_crs=self.grid.pyproj_crs.to_wkt(),
            resampling=_RESAMPLING[self.method],
            src_nodata=np.nan,
            dst_nodata=np.nan,
        )
        return out


def coarse_index(
    source: Source, grid: Grid, *, subpixel: bool = True, window: Window | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Map each target cell to the native source cell containing its centre.

    Parameters
    ----------
    window : (row_off, col_off, height, width), optional
        Index into this window of a regular source (as read by ``source.day(t, window)``).

    Returns
    -------
    index : ndarray, int32, shape (Y, X)
        Position in ``cells`` (−1 where the centre is outside the source).
    cells : ndarray, int64, shape (Nc,)
        Flat indices into the source's spatial axes, or the window's
        (``source.day(t, window).ravel()[cells]``).
    """
    _check_overlap(source, grid)
    h, w = grid.subpixel_shape if subpixel else grid.shape
    if source.is_points:
        flat = _points_nearest(source, grid, subpixel).astype(np.int64)
        valid = np.ones(flat.shape, bool)
    else:
        rows, cols = np.mgrid[0:h, 0:w]
        x, y = grid.xy(rows, cols, subpixel=subpixel)
        sx, sy = transformer(grid.crs, source.crs).transform(x, y)
        if source.crs.is_geographic:
            sx = (np.asarray(sx) - source.transform.c) % 360.0 + source.transform.c  # wrap longitudes
        c, r = ~source.window_transform(window) @ (np.asarray(sx), np.asarray(sy))
        r, c = np.floor(r).astype(np.int64), np.floor(c).astype(np.int64)
        sh, sw = source.shape if window is None else (int(window.height), int(window.width))
        valid = (r >= 0) & (r < sh) & (c >= 0) & (c < sw)
        flat = np.where(valid, r * sw + c, 0)
    cells, inv = np.unique(flat[valid], return_inverse=True)
    index = np.full((h, w), -1, dtype=np.int32)
    index[valid] = inv.astype(np.int32)
    return index, cells


# ------------------------------------------------------------------------------------
# ingest
# ------------------------------------------------------------------------------------
#: ``storage="auto"`` stores a daily source coarse (native cells + index map) when its
#: native cell is at least this many sub-pixels wide (:func:`native_cell_width`), and
#: regrids it to the sub-pixels otherwise. At 1.5 a cell spans more than one sub-pixel
#: spacing in every direction, so taking the cell under each sub-pixel centre leaves no
#: cell out and coarse storage is smaller than fine storage; a source about as fine as the
#: sub-pixels (or finer) is averaged or interpolated onto them instead.
COARSE_FACTOR = 1.5
#: A daily source whose native cell is wider than this many pixels is a *coarse product*
#: (``FeatureSpec.coarse``); narrower ones are daily covariates (``FeatureSpec.dynamic``),
#: however they are stored. Recorded per layer in the tile's ``layer_class`` attribute.
CLASS_FACTOR = 4.0


def native_cell_width(source: Source, grid: Grid) -> float:
    """Width of the source's native cell near the centre of ``grid``, in the grid's CRS units.

    The cell of a regular source that contains the grid's centre (or the nearest cell of
    the source) is projected into the grid's CRS; its width is the smaller of the
    parallelogram's two heights (area / longer side), so that a geographic cell, narrower
    east-west than north-south away from the equator, counts by its narrow side. (A
    geographic ``Source.resolution`` is degrees × 111 km: the north-south side.) A reduced
    Gaussian grid counts by its mean point spacing, :attr:`Source.resolution`.

    Parameters
    ----------
    source : Source
    grid : Grid
        Typically a tile grid: the width is taken at the tile's centre.

    Returns
    -------
    float
        Cell width in the grid's CRS units (metres for the usual projected grids).
    """
    metres_per_unit = float(grid.pyproj_crs.axis_info[0].unit_conversion_factor or 1.0)
    fallback = source.resolution / metres_per_unit
    if source.transform is None:
        return fallback
    x0, y0, x1, y1 = grid.bounds
    to_src = transformer(grid.crs, source.crs)
    sx, sy = to_src.transform(0.5 * (x0 + x1), 0.5 * (y0 + y1))
    if source.crs.is_geographic:
        sx = (sx - source.transform.c) % 360.0 + source.transform.c
    col, row = ~source.transform @ (sx, sy)
    if not (math.isfinite(col) and math.isfinite(row)):
        return fallback
    r = min(max(math.floor(row), 0), max(source.shape[0] - 1, 0))
    c = min(max(math.floor(col), 0), max(source.shape[1] - 1, 0))
    corners = [source.transform @ (c + dc, r + dr) for dc, dr in ((0, 0), (1, 0), (0, 1))]
    to_grid = transformer(source.crs, grid.crs)
    px, py = to_grid.transform([p[0] for p in corners], [p[1] for p in corners])
    e1 = (px[1] - px[0], py[1] - py[0])
    e2 = (px[2] - px[0], py[2] - py[0])
    area = abs(e1[0] * e2[1] - e1[1] * e2[0])
    longer = max(math.hypot(*e1), math.hypot(*e2))
    width = area / longer if longer > 0 else math.nan
    return width if math.isfinite(width) and width > 0 else fallback


def default_storage(source: Source, grid: Grid) -> Literal["fine", "coarse"]:
    """How ``storage="auto"`` stores a source on ``grid``: ``"coarse"`` or ``"fine"``.

    A daily source whose native cell is at least :data:`COARSE_FACTOR` sub-pixels wide
    (:func:`native_cell_width` ≥ 1.5 × ``grid.subpixel_resolution``, both in the grid's
    CRS units) is stored coarse: its native cells and a sub-pixel → cell index map; each
    sub-pixel takes the value of the cell containing its centre (the values
    ``method="nearest"`` gives). Others, and static layers, are regridded to the
    sub-pixels. :func:`ingest` decides per tile, at the tile's centre.

    Parameters
    ----------
    source : Source
    grid : Grid
        The tile grid (its sub-pixel size, in its CRS units, is the yardstick).

    Returns
    -------
    {"fine", "coarse"}

    Examples
    --------
    >>> from affine import Affine
    >>> from pyproj import CRS
    >>> g = Grid.from_bounds(4_321_000, 2_987_000, 4_331_000, 2_997_000)  # 1 km, 250 m sub-pixels
    >>> def daily(res):
    ...     tr = Affine(res, 0, 4_300_000, 0, -res, 3_000_000)
    ...     return Source("x", "x.nc", "1", (100, 100), as_days(["2020-01-01"]), CRS.from_epsg(3035), None, tr)
    >>> default_storage(daily(1000.0), g), default_storage(daily(250.0), g), default_storage(daily(300.0), g)
    ('coarse', 'fine', 'fine')
    """
    if source.is_static:
        return "fine"
    return "coarse" if native_cell_width(source, grid) >= COARSE_FACTOR * grid.subpixel_resolution else "fine"


def _storage(spec: SourceSpec, src: Source, grid: Grid) -> str:
    if spec.storage != "auto":
        return spec.storage
    return default_storage(src, grid)


def ingest(
    sources: Sequence[SourceSpec | Source | str | Path],
    grid: Grid,
    out_dir: str | Path,
    *,
    tiles: Sequence[Tile | str] | None = None,
    days: npt.ArrayLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> list[Path]:
    """Ingest sources into one TileStore file per tile (``<out_dir>/<tile_id>.h5``), incrementally.

    A tile that exists already is brought up to date instead of rewritten: its day axis
    becomes the union of its own days and the sources' days, its layers keep their stored
    values for the days they have, and only what is missing is regridded from the sources:

    * days a source has and the layer lacks (e.g. a glob that now matches more daily files);
    * a source whose feature name is not in the tile: a new layer;
    * a layer whose source changed (its recorded files are not all among the source's
      files now, one of them was replaced in place — its size or modification time differs
      from the one recorded in the tile —, or its units or resampling method changed, or
      an explicit ``storage="fine"``/``"coarse"`` differs from how it is stored) is
      regridded in full for every day, with a warning.

    Storage (see :class:`SourceSpec`): a new tile, a new layer, ``overwrite=True`` and a
    layer regridded in full take :func:`default_storage` for ``storage="auto"`` (daily
    sources coarser than 1.5 sub-pixels kept at native resolution with an index map). A
    layer an existing tile holds and whose stored days can be reused keeps the storage it
    was written with under ``storage="auto"`` (logged): a tile written when 1-km layers
    were stored fine keeps them fine and only gets its missing days; ``overwrite=True``,
    or ``storage="coarse"`` for the source, converts it.

    Layers of the tile that no source names are kept as they are. A tile with nothing
    missing is not touched, so a rerun resumes. A rewrite builds a temporary file, copying
    the old tile day by day, and renames it into place. Temporary tile files that a killed
    run left in ``out_dir`` are removed first (logged as a warning, with the count).

    Parameters
    ----------
    sources : sequence of SourceSpec, Source or paths
        What to ingest; already opened :class:`Source` objects are used as they are.
    grid : Grid
    out_dir : path
    tiles : sequence of Tile or tile ids, optional
        Default: every tile of the grid that any source overlaps.
    days : array_like of dates, optional
        Time axis of the tiles (default: the union of the sources' days); an existing tile's
        axis is its own days plus these. Days a source lacks are NaN.
    overwrite : bool
        Rewrite existing tiles from scratch (default: update them, see above).
    progress : bool
        Show a tqdm progress bar over tiles.

    Returns
    -------
    list of Path
        The tile files (written, updated or already complete).

    Raises
    ------
    DataError
        For unreadable sources or tiles, sources that overlap no tile, more than a source's
        ``max_invalid_fraction`` of values outside its valid range, an output folder that
        cannot be written or a full disk (naming the tile). A failure while writing a tile
        removes that tile's temporary file and leaves an existing tile as it was; finished
        tiles stay.
    ConfigError
        If an existing tile was written for another grid.

    Warns
    -----
    SMEngineWarning
        Once per layer whose source changed (each tile concerned is logged).
    DataLossWarning
        Per source with values outside its valid range (set to NaN): how many, and the worst.
    """
    specs = [s if isinstance(s, SourceSpec) else SourceSpec(s.path if isinstance(s, Source) else s) for s in sources]
    opened = [s if isinstance(s, Source) else open_source(sp) for s, sp in zip(sources, specs, strict=False)]
    names = [s.name for s in opened]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ConfigError(
            f"two sources share the feature name(s) {dup} (of {names}): name them apart — "
            "NAME=PATTERN on the command line, name = ... in a run configuration's [[sources]], "
            "SourceSpec(name=...) in Python; or give files of one product as one source (a glob)"
        )
    if days is None:
        dyn_days = [s.times for s in opened if s.times is not None]
        all_days = np.unique(np.concatenate(dyn_days)) if dyn_days else np.array([], "datetime64[D]")
    else:
        all_days = np.unique(as_days(days))
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out}: cannot make the tile folder: {exc.strerror or exc}") from exc
    remove_stale_temps(out)
    tile_list = [grid.tile(t) if isinstance(t, str) else t for t in tiles] if tiles is not None else list(grid.tiles())

    written: list[Path] = []
    overlapped = False
    warned: set[str] = set()
    iterator: Iterable[Tile] = tile_list
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(tile_list, desc="ingest tiles", unit="tile", disable=None)
    used: set[int] = set()
    bare: list[str] = []
    for tile in iterator:
        tgrid = grid.tile_grid(tile)
        touching = []
        for k, (spec, src) in enumerate(zip(specs, opened, strict=False)):
            try:
                _check_overlap(src, tgrid)
                touching.append((spec, src))
                used.add(k)
            except DataError:
                continue
        if not touching:
            bare.append(tile.id)
            continue
        overlapped = True
        path = out / f"{tile.id}.h5"
        old = _open_existing(path, tgrid) if path.exists() and not overwrite else None
        for name, why in _write_tile(path, tgrid, tile.id, touching, all_days, old).items():
            if name not in warned:
                warned.add(name)
                warnings.warn(
                    f"tile {tile.id}: layer {name!r}: {why}; the layer is regridded in full "
                    "(further tiles are only logged)",
                    SMEngineWarning,
                    stacklevel=2,
                )
        written.append(path)
    if not overlapped:
        raise DataError(f"no source overlaps the grid ({[s.path for s in opened]})")
    unused = [f"{s.name} ({_brief(s.path.split(';'))})" for k, s in enumerate(opened) if k not in used]
    if unused:
        warnings.warn(
            f"{len(unused)} source(s) overlap none of the {len(tile_list)} tile(s) and were left out: "
            + "; ".join(unused),
            DataLossWarning,
            stacklevel=2,
        )
    if bare:
        warnings.warn(
            f"{len(bare)} of {len(tile_list)} tile(s) overlap no source and got no tile file: "
            + ", ".join(bare[:10])
            + (" …" if len(bare) > 10 else ""),
            DataLossWarning,
            stacklevel=2,
        )
    for src in opened:
        src._report(2)
    return written


def _open_existing(path: Path, tgrid: Grid) -> TileStore:
    """The tile already at ``path``, checked to be on the tile grid ``tgrid``."""
    try:
        old = TileStore.open(path)
    except DataError as exc:
        raise DataError(f"{exc}; remove the tile or pass overwrite=True") from exc
    if old.grid != tgrid:
        raise ConfigError(f"{path}: the tile was written for another grid; use another out_dir or overwrite=True")
    return old


@dataclass
class _Layer:
    """One layer of a tile being written, and where each of its days comes from.

    ``copy`` and ``take`` have one entry per day of the tile (a single entry for a static
    layer): the index of the old tile's day to copy, or of the source's day to regrid;
    −1 for neither (the day stays NaN).
    """

    name: str
    kind: str  # "static", "dynamic" or "coarse"
    units: str
    files: str  # provenance: the source files, ";"-joined
    method: str | None
    copy: np.ndarray
    take: np.ndarray
    slot: int = -1  # position in the old tile's static or dynamic array
    src: Source | None = None
    spec: SourceSpec | None = None
    index: np.ndarray | None = None  # coarse: sub-pixel → cell
    cells: np.ndarray | None = None  # coarse: the cells of the source (when regridding)
    n_cells: int = 0
    window: Window | None = None  # coarse: the part of the source read (``cells`` index it)


def _positions(days: np.ndarray | None, axis: np.ndarray) -> np.ndarray:
    """Index in the sorted ``days`` of each day of ``axis``, −1 where ``days`` lacks it."""
    if days is None or not days.size:
        return np.full(axis.size, -1, dtype=np.int64)
    k = np.minimum(np.searchsorted(days, axis), days.size - 1)
    return np.where(days[k] == axis, k, -1)


def _stored(old: TileStore, name: str, axis: np.ndarray) -> tuple[str, np.ndarray, int]:
    """Kind of layer ``name`` in the old tile, the old day to copy for each day of ``axis``
    (only days the layer has), and its slot in the old static or dynamic array."""
    if name in old.static_names:
        return "static", np.zeros(1, dtype=np.int64), old.static_names.index(name)
    pos = _positions(old.times, axis)
    if old.times.size:
        pos = np.where((pos >= 0) & old.covered(name)[np.maximum(pos, 0)], pos, -1)
    if name in old.dynamic_names:
        return "dynamic", pos, old.dynamic_names.index(name)
    return "coarse", pos, -1


def _brief(files: Sequence[str], n: int = 3) -> str:
    """A list of files for a message: all of them, or the first ``n`` and how many there are."""
    return str(list(files)) if len(files) <= n else f"{list(files[:n])}… ({len(files)} files)"


def _kind_in(old: TileStore, name: str) -> str:
    """How the tile ``old`` stores layer ``name``: ``static``, ``dynamic`` or ``coarse``."""
    return "static" if name in old.static_names else "dynamic" if name in old.dynamic_names else "coarse"


def _why_redo(old: TileStore, name: str, kind: str, spec: SourceSpec, src: Source) -> str | None:
    """Why the existing layer ``name`` must be regridded in full (None: its days can be reused)."""
    was = _kind_in(old, name)
    if was != kind:
        return f"stored as {was}, now {kind}"
    if old.units[name] != src.units:
        return f"units changed from {old.units[name]!r} to {src.units!r}"
    method = old.attrs.get("methods", {}).get(name)
    if kind != "coarse" and method is not None and method != spec.method:
        return f"resampling method changed from {method!r} to {spec.method!r}"
    before = [f for f in old.sources.get(name, "").split(";") if f]
    now = [f for f in src.path.split(";") if f]
    if not set(before) <= set(now):
        gone = [f for f in before if f not in set(now)]
        return f"source files changed (old {_brief(before)}, new {_brief(now)}; gone {_brief(gone)})"
    recorded = old.attrs.get("file_stats", {}).get(name)
    if recorded:  # tiles written before file stats were recorded have none: not checked
        current = _file_stats(src)
        changed = [f for f, st in recorded.items() if f in current and list(current[f]) != list(st)]
        if changed:
            (size0, mtime0), (size1, mtime1) = recorded[changed[0]], current[changed[0]]
            return (
                f"source file(s) {_brief(changed)} changed in place (size {size0} → {size1} bytes, "
                f"modified {_ns_time(mtime0)} → {_ns_time(mtime1)})"
            )
    return None


def _file_stats(src: Source) -> dict[str, list[int]]:
    """Size and modification time (ns) of each file of ``src``: as recorded when it was opened,
    else as they are now."""
    stats: dict[str, list[int]] = dict(src.attrs.get("file_stats", {}))
    for f in (f for f in src.path.split(";") if f and f not in stats):
        with contextlib.suppress(OSError):
            st = os.stat(f)
            stats[f] = [int(st.st_size), int(st.st_mtime_ns)]
    return stats


def _ns_time(ns: int) -> str:
    return str(np.datetime64(int(ns), "ns"))[:26] + " UTC"


def _plan(
    tgrid: Grid, touching: list[tuple[SourceSpec, Source]], axis: np.ndarray, old: TileStore | None
) -> tuple[list[_Layer], dict[str, str]]:
    """The layers of the tile (the old tile's first, in its order, then new ones) and, for
    each, what to copy from ``old`` and what to regrid; plus the layers to redo (name → why)."""
    pairs = {s.name: (sp, s) for sp, s in touching}
    old_names = [n for n in old.units if n in old.feature_names] if old is not None else []
    layers: list[_Layer] = []
    redo: dict[str, str] = {}
    for name in old_names + [n for n in pairs if n not in old_names]:
        if name not in pairs:  # no source names it: kept as it is
            assert old is not None
            kind, copy, slot = _stored(old, name, axis)
            layer = _Layer(
                name,
                kind,
                old.units[name],
                old.sources.get(name, ""),
                old.attrs.get("methods", {}).get(name),
                copy,
                np.full(copy.size, -1),
                slot,
            )
            if kind == "coarse":
                layer.index = np.asarray(old.coarse[name].index)
                layer.n_cells = old.coarse[name].values.shape[1]
            layers.append(layer)
            continue
        spec, src = pairs[name]
        kind = "static" if src.is_static else "coarse" if _storage(spec, src, tgrid) == "coarse" else "dynamic"
        why = None
        if old is not None and name in old_names:
            was = _kind_in(old, name)
            if spec.storage == "auto" and "static" not in (was, kind) and was != kind:
                # storage="auto" follows the tile while its days can be reused
                why = _why_redo(old, name, was, spec, src)
                if why is None:
                    log.info(
                        "tile %s: layer %r stays %s as the tile stores it (storage='auto' would store it %s; "
                        "overwrite=True or storage=%r converts it)",
                        old.tile_id,
                        name,
                        was,
                        kind,
                        "coarse" if kind == "coarse" else "fine",
                    )
                    kind = was
                else:
                    why = f"{why}; it is stored {kind} now (storage='auto')"
            else:
                why = _why_redo(old, name, kind, spec, src)
        here = np.zeros(1, dtype=np.int64) if kind == "static" else _positions(src.times, axis)
        layer = _Layer(name, kind, src.units, src.path, spec.method, np.full(here.size, -1), here, src=src, spec=spec)
        if old is not None and name in old_names and why is None:  # reuse the days it has
            _, layer.copy, layer.slot = _stored(old, name, axis)
            layer.take = np.where(layer.copy < 0, here, -1)
        if kind == "coarse":
            if old is not None and name in old_names and why is None and not (layer.take >= 0).any():
                layer.index = np.asarray(old.coarse[name].index)  # only copied: no need to map the source
                layer.n_cells = old.coarse[name].values.shape[1]
            else:
                # read only the part of the source the tile needs (as fine storage does); the
                # index map is the same as for the whole source
                layer.window = src.window_for(tgrid)
                layer.index, layer.cells = coarse_index(src, tgrid, window=layer.window)
                layer.n_cells = layer.cells.size
                if (
                    old is not None
                    and name in old_names
                    and why is None
                    and (
                        layer.n_cells != old.coarse[name].values.shape[1]
                        or not np.array_equal(layer.index, old.coarse[name].index)
                    )
                ):
                    why = "the source's grid changed"
                    layer.copy, layer.take = np.full(here.size, -1), here
        if why is not None:
            redo[name] = why
        layers.append(layer)
    return layers, redo


def _write_tile(
    path: Path,
    tgrid: Grid,
    tile_id: str,
    touching: list[tuple[SourceSpec, Source]],
    all_days: np.ndarray,
    old: TileStore | None = None,
) -> dict[str, str]:
    """Write the tile at ``path`` from the sources ``touching`` it or, given the ``old`` tile
    there, update it (copying what it has, regridding what it lacks; see :func:`ingest`).

    Returns the layers regridded in full because their source changed (name → why).
    """
    axis = all_days if old is None else np.union1d(old.times, all_days)
    layers, redo = _plan(tgrid, touching, axis, old)
    static = [la for la in layers if la.kind == "static"]
    dynamic = [la for la in layers if la.kind == "dynamic"]
    coarse = [la for la in layers if la.kind == "coarse"]
    if old is not None:
        for name, why in redo.items():
            log.warning("tile %s: layer %r: %s; regridding it for every day", tile_id, name, why)
        n_new = axis.size - old.times.size
        done = [f"appended {n_new} day{'s' if n_new > 1 else ''}"] if n_new else []
        added = [la.name for la in layers if la.name not in old.units]
        filled = [la.name for la in layers if la.name in old.units and la.name not in redo and (la.take >= 0).any()]
        done += [
            f"{what} {names}"
            for what, names in (
                ("added layers", added),
                ("redone layers", list(redo)),
                ("regridded new days of", filled),
            )
            if names
        ]
        kept = [la.name for la in layers if la.src is None]
        note = f"; kept {kept} (named by no source)" if kept else ""
        if not done:
            log.info("tile %s: up to date, skipped%s", tile_id, note)
            return redo
        log.info("tile %s: %s%s", tile_id, ", ".join(done), note)
    fine = {
        la.name: _Regridder(la.src, tgrid, True, la.spec.method)  # type: ignore[arg-type, union-attr]
        for la in static + dynamic
        if (la.take >= 0).any()
    }
    methods = {la.name: la.method for la in layers if la.method is not None}
    # what each daily layer is, whatever its storage (features.daily_classes): a coarse product
    # (native cells wider than 4 pixels) or a daily covariate at about the pixel or finer
    layer_class = dict((old.attrs.get("layer_class") or {}) if old is not None else {})
    for la in layers:
        if la.kind != "static" and la.src is not None:
            wide = native_cell_width(la.src, tgrid) > CLASS_FACTOR * tgrid.resolution
            layer_class[la.name] = "coarse" if wide else "dynamic"
    old_stats = old.attrs.get("file_stats", {}) if old is not None else {}
    file_stats = {
        la.name: _file_stats(la.src) if la.src is not None else old_stats.get(la.name, {})
        for la in layers
        if la.src is not None or la.name in old_stats
    }
    writer = TileWriter(
        path,
        tgrid,
        axis,
        [la.name for la in static],
        [la.name for la in dynamic],
        {la.name: la.units for la in layers},
        {la.name: la.files for la in layers},
        {la.name: (np.asarray(la.index), la.n_cells) for la in coarse},
        attrs={
            **(old.attrs if old is not None else {}),
            "methods": methods,
            "file_stats": file_stats,
            "layer_class": layer_class,
        },
        tile_id=tile_id,
    )
    with writer as w:  # one day at a time, copying from the old tile or regridding
        for la in static:
            if la.copy[0] >= 0:
                w.write_static(la.name, old.static[la.slot])  # type: ignore[union-attr]
            elif la.take[0] >= 0:
                w.write_static(la.name, fine[la.name].field(0))
        for t in range(axis.size):
            for la in dynamic:
                if la.copy[t] >= 0:
                    w.write_dynamic(t, la.name, old.dynamic[la.copy[t], la.slot])  # type: ignore[union-attr]
                elif la.take[t] >= 0:
                    w.write_dynamic(t, la.name, fine[la.name].field(la.take[t]))
            for la in coarse:
                if la.copy[t] >= 0:
                    w.write_coarse(t, la.name, old.coarse[la.name].values[la.copy[t]])  # type: ignore[union-attr]
                elif la.take[t] >= 0:
                    w.write_coarse(t, la.name, la.src.day(la.take[t], la.window).ravel()[la.cells])  # type: ignore[union-attr]
    if old is None:
        log.info(
            "tile %s: %d static, %d dynamic, %d coarse layers, %d days",
            tile_id,
            len(static),
            len(dynamic),
            len(coarse),
            axis.size,
        )
    return redo
