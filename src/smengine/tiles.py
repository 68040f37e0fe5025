"""Memory-mapped covariate tiles: one HDF5 file per grid tile, read with zero copies.

Layout of a tile file (all float32 datasets contiguous and uncompressed, so that they can
be opened as ``numpy.memmap`` at their byte offset)::

    /time                      int64 (T,)           days since 1970-01-01 (UTC days)
    /static                    float32 (Fs, Y, X)   sub-pixel static layers
    /dynamic                   float32 (T, Fd, Y, X) sub-pixel daily layers
    /coarse/<name>/values      float32 (T, Nc)      a coarse daily product, kept coarse
    /coarse/<name>/index       int32 (Y, X)         sub-pixel → coarse cell (−1: none)
    /coverage                  uint8 (T, Fd + Fc)   1 where a daily layer (dynamic, then coarse)
                                                    was written for that day, 0 where it is NaN
                                                    because its source lacks the day

Attributes on ``/`` hold the format version, the tile grid (JSON), the CRS (WKT), the
sub-pixel affine transform, feature names, units and source files. Every write goes to a
temporary file in the same folder that is renamed into place only when complete, so a
failed or interrupted write never leaves a partial tile behind. Tiles written before
``/coverage`` existed read as covering every day.

The disk space a tile needs is reserved (``posix_fallocate``) before HDF5 writes a byte: a
full disk or a file-size limit is then one :class:`~smengine.errors.DataError` naming the
tile, instead of an HDF5 write error after which the library cannot close the file (HDF5
crashes the process). Tiles get the permissions of any new file (0644 under the usual
umask). A run that is killed leaves its temporary file (``.<tile>.h5.<8 characters>.tmp``);
:func:`remove_stale_temps` removes those no live writer holds (:func:`smengine.ingest.ingest`
calls it on its output folder).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from smengine._days import as_days
from smengine._io import TEMP_NAME, temp_beside
from smengine.errors import ConfigError, DataError, ValidationError
from smengine.grid import Grid, as_window

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "CoarseLayer", "TileStore", "TileWriter", "as_days", "remove_stale_temps"]

FORMAT = "smengine-tilestore/1"
_EPOCH = np.datetime64("1970-01-01", "D")


def _check_days(days: np.ndarray) -> None:
    as_days(days, increasing=True)


def _create_contiguous(group: h5py.Group, name: str, shape: tuple[int, ...], dtype: Any, fill: Any) -> h5py.Dataset:
    """A contiguous, uncompressed dataset allocated (and filled) at creation time."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_ALLOC)
    dcpl.set_fill_value(np.array(fill, dtype=dtype))
    dcpl.set_obj_track_times(False)  # same inputs, same bytes
    space = h5py.h5s.create_simple(shape)
    tid = h5py.h5t.py_create(np.dtype(dtype), logical=True)
    dsid = h5py.h5d.create(group.id, name.encode(), tid, space, dcpl=dcpl)
    return h5py.Dataset(dsid)


def check_layout(store: Any) -> None:
    """Refuse a tile whose arrays disagree with its grid, names and days, or whose coarse index
    points outside its coarse cells: the compiled engine indexes them without bounds checks.

    ``store`` is a :class:`TileStore` or an object with the same attributes (the embedding
    path's in-memory tile). Costs one pass over each coarse index (int32, Y × X).

    Raises
    ------
    DataError
        Naming the tile and the array.
    """
    where = getattr(store, "path", None) or "tile"
    ny, nx = store.grid.subpixel_shape
    T = int(np.asarray(store.times).size)
    t = np.asarray(store.times).astype("datetime64[D]")
    if T > 1 and not (np.diff(t.astype(np.int64)) > 0).all():
        raise DataError(f"{where}: /time is not strictly increasing (a tile's days are sorted and unique)")
    want = {
        "static": (len(store.static_names), ny, nx),
        "dynamic": (T, len(store.dynamic_names), ny, nx),
    }
    for name, shape in want.items():
        a = getattr(store, name)
        if tuple(a.shape) != shape and not (a.size == 0 and math.prod(shape) == 0):
            raise DataError(f"{where}: /{name} has shape {tuple(a.shape)}, expected {shape} (layers, days, grid)")
    for name in store.coarse_names:
        layer = store.coarse[name]
        values, index = layer.values, layer.index
        if values.ndim != 2 or values.shape[0] != T:
            raise DataError(f"{where}: /coarse/{name}/values has shape {tuple(values.shape)}, expected ({T}, cells)")
        if tuple(index.shape) != (ny, nx) or index.dtype.kind not in "iu":
            raise DataError(
                f"{where}: /coarse/{name}/index has shape {tuple(index.shape)} and type {index.dtype}, "
                f"expected int32 {(ny, nx)}"
            )
        if index.size:
            lo, hi = int(index.min()), int(index.max())
            if lo < -1 or hi >= values.shape[1]:
                raise DataError(
                    f"{where}: /coarse/{name}/index holds cell numbers in [{lo}, {hi}], outside [-1, "
                    f"{values.shape[1]}) (its {values.shape[1]} coarse cells): a corrupt tile"
                )


@dataclass(frozen=True)
class CoarseLayer:
    """A coarse daily product kept at its own resolution.

    Attributes
    ----------
    values : ndarray, shape (T, Nc)
        Daily values of the ``Nc`` coarse cells that touch the tile (read-only memmap).
    index : ndarray, shape (Y, X), int32
        Coarse cell of each sub-pixel, −1 where there is none.
    """

    values: np.ndarray
    index: np.ndarray

    def expand(self, t: int, out: np.ndarray | None = None, window: Any = None) -> np.ndarray:
        """Sub-pixel field (Y, X) of day index ``t`` (NaN where the index is −1).

        ``window`` (a :class:`rasterio.windows.Window`, or ``(row0, row1, col0, col1)``, see
        :func:`smengine.grid.as_window`) expands only that part.
        """
        idx = self.index if window is None else self.index[as_window(window).toslices()]
        if out is None:
            out = np.empty(idx.shape, dtype=np.float32)
        row = self.values[t]
        np.take(row, np.maximum(idx, 0), out=out)
        out[idx < 0] = np.nan
        return out


# temporary files: space, permissions, liveness ---------------------------------------
#: Temporary tile files this process is writing now (never stale, whatever their locks say).
_LIVE: set[Path] = set()
_NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
#: Without file locks (some network file systems), a temporary tile file untouched for this
#: long (seconds) is taken to be left by a run that died; a live writer touches it often.
_STALE_AGE = 3600.0


@contextlib.contextmanager
def _h5_errors(path: Path, what: str) -> Iterator[None]:
    """HDF5's errors (OSError, RuntimeError) while writing the tile ``path`` as one DataError."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{path}: {what}: {exc}") from exc


def _reserve(tmp: Path, path: Path, nbytes: int) -> tuple[int, int]:
    """Reserve ``nbytes`` of disk for the temporary tile file ``tmp`` and mark it as being
    written (an exclusive POSIX lock, held until the returned descriptor is closed).

    A full disk, a quota or a file-size limit raises :class:`DataError` now, before HDF5 has
    written anything (an HDF5 write that fails leaves a file the library cannot close).
    Where the file system cannot reserve space or lock files, the tile is written without.
    """
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, nbytes)
        reserved = nbytes
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            os.close(fd)
            raise DataError(
                f"{path}: cannot write the tile: {exc.strerror} (it needs about {nbytes / 1e6:.3g} MB)"
            ) from exc
        reserved = 0  # no reservation on this file system (EOPNOTSUPP, EINVAL)
    with contextlib.suppress(OSError):  # no locks here: stale files are told by their age (remove_stale_temps)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd, reserved


def _hdf5_end(path: Path) -> int | None:
    """The end-of-file address an HDF5 file records in its superblock (at byte 0), or None."""
    with open(path, "rb") as f:
        head = f.read(96)
    if head[:8] != b"\x89HDF\r\n\x1a\n" or len(head) < 48:
        return None
    version = head[8]
    if version in (0, 1):
        size, at = head[13], 24 if version == 0 else 28
    elif version in (2, 3):
        size, at = head[9], 12
    else:
        return None
    if size not in (2, 4, 8) or at + 3 * size > len(head):
        return None
    base = int.from_bytes(head[at : at + size], "little")
    end = int.from_bytes(head[at + 2 * size : at + 3 * size], "little")
    return base + end


def _trim(tmp: Path) -> None:
    """Cut the closed tile file ``tmp`` back to the end HDF5 records (the reservation may
    have left it longer)."""
    end = _hdf5_end(tmp)
    if end is not None and 0 < end < tmp.stat().st_size:
        os.truncate(tmp, end)


def _is_stale(path: Path) -> bool:
    """Whether the temporary tile file ``path`` was left by a writer that is gone: neither
    HDF5 (``flock``) nor a :class:`TileWriter` (``lockf``) holds it."""
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False  # a live writer holds it
        return time.time() - os.fstat(fd).st_mtime > _STALE_AGE  # no locks on this file system
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary tile files (``.<tile>.h5.<8 characters>.tmp``) that runs killed
    while writing left in ``folder``.

    Files a live writer holds (this process's, or another's: a :class:`TileWriter` locks its
    temporary file) are kept; so is everything else in the folder. The removal is logged
    as a warning with the count.

    Parameters
    ----------
    folder : path

    Returns
    -------
    list of Path
        The files removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = TEMP_NAME.match(p.name)
        if m is None or not m["name"].endswith(".h5") or p in _LIVE or p.is_symlink() or not p.is_file():
            continue
        if _is_stale(p):
            try:
                p.unlink()
                removed.append(p)
            except OSError as exc:
                log.warning("cannot remove the temporary tile file %s: %s", p, exc)
    if removed:
        names = [p.name for p in removed]
        shown = names if len(names) <= 5 else [*names[:5], f"… ({len(names)} files)"]
        log.warning("%s: removed %d temporary tile file(s) left by an interrupted run: %s", folder, len(removed), shown)
    return removed


class TileWriter:
    """Write one tile file, streaming day by day, atomically.

    Use as a context manager; on a clean exit the temporary file is renamed to ``path``,
    on an exception it is removed and ``path`` is left as it was. Each
    :meth:`write_dynamic`/:meth:`write_coarse` marks its (day, layer) as covered in
    ``/coverage``; days never written stay NaN and uncovered.

    Parameters
    ----------
    path : path
        Final file name.
    grid : Grid
        The tile's own grid (see :meth:`smengine.grid.Grid.tile_grid`); arrays are at its
        sub-pixel resolution.
    times : array_like of dates
        UTC days of the dynamic layers (may be empty).
    static_names, dynamic_names : sequence of str
        Feature names; ``units`` and ``sources`` map names to strings.
    coarse : mapping of name → (index (Y, X) int array, n_cells)
        Coarse layers and their sub-pixel index maps.
    attrs : mapping, optional
        Extra JSON-safe attributes (stored under ``/`` as JSON in ``user_attrs``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        grid: Grid,
        times: npt.ArrayLike = (),
        static_names: Sequence[str] = (),
        dynamic_names: Sequence[str] = (),
        units: Mapping[str, str] | None = None,
        sources: Mapping[str, str] | None = None,
        coarse: Mapping[str, tuple[npt.ArrayLike, int]] | None = None,
        attrs: Mapping[str, Any] | None = None,
        tile_id: str = "",
    ) -> None:
        self.path = Path(path)
        self.grid = grid
        self.times = as_days(times) if len(np.asarray(times)) else np.array([], "datetime64[D]")
        _check_days(self.times)
        self.static_names = list(static_names)
        self.dynamic_names = list(dynamic_names)
        coarse = dict(coarse or {})
        names = self.static_names + self.dynamic_names + list(coarse)
        if len(set(names)) != len(names):
            raise ConfigError(f"feature names must be unique, got {names}")
        self.units = dict(units or {})
        missing = [n for n in names if n not in self.units]
        if missing:
            raise ConfigError(f"units missing for features {missing}")
        self.sources = {k: str(v) for k, v in (sources or {}).items()}
        self._coarse = coarse
        self._attrs = dict(attrs or {})
        self.tile_id = tile_id
        self._file: h5py.File | None = None
        self._tmp: Path | None = None
        self._lock_fd: int | None = None
        self._reserved = 0
        self._daily = {n: i for i, n in enumerate(self.dynamic_names + list(coarse))}
        self._covered = np.zeros((self.times.size, len(self._daily)), dtype=np.uint8)

    # context manager --------------------------------------------------------------
    def __enter__(self) -> TileWriter:
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self._tmp = temp_beside(self.path)
        except OSError as exc:
            raise DataError(f"{folder}: cannot write tiles there: {exc.strerror or exc}") from exc
        _LIVE.add(self._tmp)
        try:
            need = self._size_needed()
            # reserve before HDF5 writes its first bytes, and again once it has truncated the
            # file on opening it: HDF5 must never meet a full disk
            os.close(_reserve(self._tmp, self.path, need)[0])
            with _h5_errors(self.path, "cannot write the tile"):
                self._file = h5py.File(self._tmp, "w", track_order=True)
            self._lock_fd, self._reserved = _reserve(self._tmp, self.path, need)
            with _h5_errors(self.path, "cannot write the tile"):
                self._layout()
        except BaseException:
            self._discard()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self._discard()

    def _size_needed(self) -> int:
        """Bytes to reserve for the tile: its datasets exactly, plus a generous allowance for
        HDF5's metadata (object headers, the attributes, free-space bookkeeping)."""
        ny, nx = self.grid.subpixel_shape
        nt, npix = self.times.size, ny * nx
        data = 8 * nt + 4 * npix * (len(self.static_names) + nt * len(self.dynamic_names))
        data += sum(4 * (nt * int(n_cells) + npix) for _, n_cells in self._coarse.values())
        data += nt * len(self._daily)
        text = [self.grid.get_config(), self.units, self.sources, self._attrs, self.static_names, self.dynamic_names]
        attrs = sum(len(json.dumps(t, default=str)) for t in text) + 4096  # + the CRS WKT
        return data + 4 * attrs + 4096 * (8 + 2 * len(self._coarse)) + (1 << 16)

    def _discard(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):  # closing a broken file
                self._file.close()
            self._file = None
        self._unlock()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            _LIVE.discard(self._tmp)
            self._tmp = None

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    def commit(self) -> Path:
        """Flush, close and rename the temporary file into place.

        Raises
        ------
        DataError
            If the file cannot be finished (e.g. the disk is full); the temporary file is
            removed and ``path`` is left as it was.
        """
        if self._file is None or self._tmp is None:
            raise ConfigError("TileWriter.commit() outside a with-block or called twice")
        try:
            with _h5_errors(self.path, "cannot finish the tile"):
                if self._covered.size:
                    self._file["coverage"][...] = self._covered
                self._file.flush()
                if self._file.id.get_filesize() > self._reserved > 0:
                    log.debug("tile %s: HDF5 needed more than the %d bytes reserved", self.path, self._reserved)
                self._file.close()
            self._file = None
            try:
                _trim(self._tmp)
                with open(self._tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(self._tmp, self.path)
            except OSError as exc:
                raise DataError(f"{self.path}: cannot finish the tile: {exc.strerror or exc}") from exc
        except BaseException:
            self._discard()
            raise
        self._unlock()
        _LIVE.discard(self._tmp)
        self._tmp = None
        log.debug("wrote tile %s", self.path)
        return self.path

    # layout -----------------------------------------------------------------------
    def _layout(self) -> None:
        f = self._file
        assert f is not None
        ny, nx = self.grid.subpixel_shape
        t = _create_contiguous(f, "time", (self.times.size,), np.int64, 0)
        if self.times.size:
            t[...] = (self.times - _EPOCH).astype(np.int64)
        t.attrs["units"] = "days since 1970-01-01"
        t.attrs["calendar"] = "proleptic_gregorian"
        _create_contiguous(f, "static", (len(self.static_names), ny, nx), np.float32, np.nan)
        _create_contiguous(f, "dynamic", (self.times.size, len(self.dynamic_names), ny, nx), np.float32, np.nan)
        cg = f.create_group("coarse", track_order=True)
        for name, (index, n_cells) in self._coarse.items():
            idx = np.asarray(index)
            if idx.shape != (ny, nx):
                raise ValidationError(f"coarse layer {name!r}: index shape {idx.shape} != tile {ny, nx}")
            if idx.size and (idx.max() >= n_cells or idx.min() < -1):
                raise ValidationError(f"coarse layer {name!r}: index outside [-1, {n_cells})")
            g = cg.create_group(name)
            _create_contiguous(g, "values", (self.times.size, int(n_cells)), np.float32, np.nan)
            d = _create_contiguous(g, "index", (ny, nx), np.int32, -1)
            d[...] = idx.astype(np.int32)
        _create_contiguous(f, "coverage", self._covered.shape, np.uint8, 0)
        a = f.attrs
        a["format"] = FORMAT
        a["grid"] = json.dumps(self.grid.get_config())
        a["tile_id"] = self.tile_id
        a["crs_wkt"] = self.grid.pyproj_crs.to_wkt()
        a["transform"] = np.array(self.grid.subpixel_transform.to_gdal(), dtype=np.float64)
        a["static_names"] = json.dumps(self.static_names)
        a["dynamic_names"] = json.dumps(self.dynamic_names)
        a["coarse_names"] = json.dumps(list(self._coarse))
        a["units"] = json.dumps(self.units)
        a["sources"] = json.dumps(self.sources)
        a["user_attrs"] = json.dumps(self._attrs)

    # writes -----------------------------------------------------------------------
    def _f(self) -> h5py.File:
        if self._file is None:
            raise ConfigError("TileWriter used outside its with-block")
        return self._file

    def _field(self, what: str, a: npt.ArrayLike) -> np.ndarray:
        arr = np.asarray(a, dtype=np.float32)
        if arr.shape != self.grid.subpixel_shape:
            raise ValidationError(f"{what}: shape {arr.shape} != tile sub-pixel shape {self.grid.subpixel_shape}")
        return arr

    def write_static(self, name: str, field: npt.ArrayLike) -> None:
        """Write static layer ``name``, shape (Y, X)."""
        i = self.static_names.index(name)
        arr = self._field(f"static {name!r}", field)
        with _h5_errors(self.path, "cannot write the tile"):
            self._f()["static"][i] = arr

    def write_dynamic(self, t: int, name: str, field: npt.ArrayLike) -> None:
        """Write dynamic layer ``name`` of day index ``t``, shape (Y, X)."""
        i = self.dynamic_names.index(name)
        arr = self._field(f"dynamic {name!r} day {t}", field)
        with _h5_errors(self.path, "cannot write the tile"):
            self._f()["dynamic"][t, i] = arr
        self._covered[t, self._daily[name]] = 1

    def write_coarse(self, t: int, name: str, values: npt.ArrayLike) -> None:
        """Write the coarse cells of layer ``name`` for day index ``t``, shape (Nc,)."""
        d = self._f()["coarse"][name]["values"]
        v = np.asarray(values, dtype=np.float32)
        if v.shape != d.shape[1:]:
            raise ValidationError(f"coarse {name!r} day {t}: shape {v.shape} != {d.shape[1:]}")
        with _h5_errors(self.path, "cannot write the tile"):
            d[t] = v
        self._covered[t, self._daily[name]] = 1


def _memmap(path: Path, ds: h5py.Dataset) -> np.ndarray:
    """Read-only memmap of a contiguous dataset (an empty array for zero-size datasets)."""
    if ds.size == 0:
        a = np.empty(ds.shape, dtype=ds.dtype)
        a.flags.writeable = False
        return a
    if ds.chunks is not None or ds.compression is not None:
        raise DataError(f"{path}: dataset {ds.name} is chunked or compressed; a TileStore needs contiguous data")
    offset = ds.id.get_offset()
    if offset is None:
        raise DataError(f"{path}: dataset {ds.name} has no storage allocated")
    return np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)


class TileStore:
    """A tile of covariates, opened read-only as memory maps (zero copy).

    Attributes
    ----------
    path : Path
    grid : Grid
        The tile's grid (sub-pixel arrays have shape ``grid.subpixel_shape``).
    tile_id : str
    times : ndarray of datetime64[D]
    static : ndarray (Fs, Y, X) float32, read-only memmap
    dynamic : ndarray (T, Fd, Y, X) float32, read-only memmap
    coarse : dict of str → :class:`CoarseLayer`
    static_names, dynamic_names, coarse_names : list of str
    units, sources : dict of str → str
        ``sources`` holds each layer's source files, ``;``-joined.

    Examples
    --------
    >>> store = TileStore.open("tiles/t000_001.h5")           # doctest: +SKIP
    >>> x = store.features(store.day_index("2016-06-07"))     # doctest: +SKIP
    """

    def __init__(self, path: Path, h5: h5py.File) -> None:
        self.path = path
        a = h5.attrs
        if a.get("format") != FORMAT:
            raise DataError(f"{path}: not a smengine tile store (format {a.get('format')!r})")
        self.grid = Grid.from_config(json.loads(a["grid"]))
        self.tile_id = str(a["tile_id"])
        self.crs_wkt = str(a["crs_wkt"])
        self.transform = tuple(float(v) for v in a["transform"])
        self.static_names: list[str] = json.loads(a["static_names"])
        self.dynamic_names: list[str] = json.loads(a["dynamic_names"])
        self.coarse_names: list[str] = json.loads(a["coarse_names"])
        self.units: dict[str, str] = json.loads(a["units"])
        self.sources: dict[str, str] = json.loads(a["sources"])
        self.attrs: dict[str, Any] = json.loads(a["user_attrs"])
        self.times = _EPOCH + h5["time"][...].astype("timedelta64[D]")
        self.static = _memmap(path, h5["static"])
        self.dynamic = _memmap(path, h5["dynamic"])
        self.coarse = {
            n: CoarseLayer(_memmap(path, h5["coarse"][n]["values"]), _memmap(path, h5["coarse"][n]["index"]))
            for n in self.coarse_names
        }
        daily = len(self.dynamic_names) + len(self.coarse_names)
        if "coverage" in h5:
            self._coverage = h5["coverage"][...].astype(bool)
            if self._coverage.shape != (self.times.size, daily):
                raise DataError(
                    f"{path}: /coverage has shape {self._coverage.shape}, expected {(self.times.size, daily)}"
                )
        else:  # written before coverage was recorded: assume every day
            self._coverage = np.ones((self.times.size, daily), dtype=bool)
        check_layout(self)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> TileStore:
        """Open a tile file read-only.

        Raises
        ------
        DataError
            If the file is missing, truncated, corrupt or not a tile store.
        """
        p = Path(path)
        try:
            with h5py.File(p, "r") as h5:
                return cls(p, h5)
        except DataError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as exc:  # h5py/JSON on a corrupt file
            raise DataError(f"{p}: cannot open tile store: {type(exc).__name__}: {exc}") from exc

    # ------------------------------------------------------------------ queries
    @property
    def feature_names(self) -> list[str]:
        """Static, then dynamic, then coarse feature names (the order of :meth:`features`)."""
        return self.static_names + self.dynamic_names + self.coarse_names

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def day_index(self, day: Any) -> int:
        """Index of a UTC day in :attr:`times`."""
        d = as_days([day])[0]
        i = int(np.searchsorted(self.times, d))
        if i >= self.times.size or self.times[i] != d:
            raise ConfigError(
                f"{self.path}: day {d} not in the store ({self.times[0]}…{self.times[-1]})"
                if self.times.size
                else f"{self.path}: the store has no days"
            )
        return i

    def covered(self, name: str) -> np.ndarray:
        """Days (bool mask over :attr:`times`) for which daily layer ``name`` was written;
        on the other days its source had no data and the layer is NaN."""
        daily = self.dynamic_names + self.coarse_names
        if name not in daily:
            raise ConfigError(f"{self.path}: {name!r} is not a daily layer (daily layers: {daily})")
        return self._coverage[:, daily.index(name)].copy()

    def features(self, t: int, out: np.ndarray | None = None) -> np.ndarray:
        """All features of day index ``t`` as a (F, Y, X) float32 array (a copy)."""
        ny, nx = self.grid.subpixel_shape
        if out is None:
            out = np.empty((self.n_features, ny, nx), dtype=np.float32)
        ns, nd = len(self.static_names), len(self.dynamic_names)
        out[:ns] = self.static
        out[ns : ns + nd] = self.dynamic[t]
        for k, name in enumerate(self.coarse_names):
            self.coarse[name].expand(t, out=out[ns + nd + k])
        return out

    def to_dataset(self, chunks: Mapping[str, int] | None = None) -> Any:
        """The tile's covariates as an :class:`xarray.Dataset`, in exactly the form
        :func:`smengine.engine.predict_dataset` takes (so ``predict_dataset(store.to_dataset(),
        forest)`` equals ``predict(store, forest)``): it documents that form by example.

        * static layers: ``(y_sub, x_sub)``; daily sub-pixel layers: ``(time, y_sub, x_sub)``
          (the memory maps, no copy);
        * coarse layers as stored: ``(time, <name>_cell)`` values with an ``smengine_index``
          attribute naming the int32 ``<name>_index`` ``(y_sub, x_sub)`` variable (−1: none);
        * coordinates ``time`` (UTC days), ``y_sub``/``x_sub`` (sub-pixel centres, m) and a CF
          grid mapping ``crs``; attributes ``smengine_grid`` (the tile's grid), ``tile_id``
          and each layer's ``units``; days a daily layer's source lacked are NaN.

        Parameters
        ----------
        chunks : mapping, optional
            Dask chunks (e.g. ``{"y_sub": 200, "x_sub": 200}``): a lazily read, Dask-backed
            Dataset (sub-pixel chunks should hold whole pixels).

        Returns
        -------
        xarray.Dataset
        """
        import xarray as xr

        g = self.grid
        ny, nx = g.subpixel_shape
        x, _ = g.xy(np.zeros(nx), np.arange(nx), subpixel=True)
        _, y = g.xy(np.arange(ny), np.zeros(ny), subpixel=True)
        crs = g.pyproj_crs
        coords: dict[str, Any] = {
            "time": ("time", self.times.astype("datetime64[ns]"), {"long_name": "start of the UTC day"}),
            "y_sub": ("y_sub", y, {"standard_name": "projection_y_coordinate", "units": "m"}),
            "x_sub": ("x_sub", x, {"standard_name": "projection_x_coordinate", "units": "m"}),
            "crs": ((), np.int32(0), {**crs.to_cf(), "crs_wkt": crs.to_wkt(), "spatial_ref": crs.to_wkt()}),
        }
        data: dict[str, Any] = {}

        def attrs(name: str) -> dict[str, str]:
            return {"units": self.units.get(name, ""), "grid_mapping": "crs"}

        for k, name in enumerate(self.static_names):
            data[name] = (("y_sub", "x_sub"), self.static[k], attrs(name))
        for k, name in enumerate(self.dynamic_names):
            data[name] = (("time", "y_sub", "x_sub"), self.dynamic[:, k], attrs(name))
        for name in self.coarse_names:
            layer = self.coarse[name]
            data[name] = (("time", f"{name}_cell"), layer.values, {**attrs(name), "smengine_index": f"{name}_index"})
            data[f"{name}_index"] = (
                ("y_sub", "x_sub"),
                layer.index,
                {"long_name": f"cell of {name} containing each sub-pixel (-1: none)"},
            )
        ds = xr.Dataset(data, coords=coords)
        ds.attrs = {"smengine_grid": json.dumps(g.get_config()), "tile_id": self.tile_id, "source": str(self.path)}
        if chunks:
            ds = ds.chunk(dict(chunks))
        return ds

    def nbytes(self) -> int:
        """Bytes of all covariate data in the tile."""
        return int(
            self.static.nbytes
            + self.dynamic.nbytes
            + sum(c.values.nbytes + c.index.nbytes for c in self.coarse.values())
        )

    def __repr__(self) -> str:
        return (
            f"<TileStore {self.tile_id or self.path.name}: {self.grid.subpixel_shape} sub-pixels, "
            f"{self.times.size} days, features {self.feature_names}>"
        )

    # ------------------------------------------------------------------ append
    @staticmethod
    def append_days(
        path: str | os.PathLike[str],
        times: npt.ArrayLike,
        dynamic: npt.ArrayLike | None = None,
        coarse: Mapping[str, npt.ArrayLike] | None = None,
    ) -> Path:
        """Append days to an existing tile (rewritten to a temporary file and renamed).

        Parameters
        ----------
        path : path
            The tile file.
        times : array_like of dates, shape (T',)
            New days; all after the last stored day.
        dynamic : array_like, shape (T', Fd, Y, X), optional
            New dynamic layers (NaN if omitted).
        coarse : mapping of name → array (T', Nc), optional
            New coarse values.

        Returns
        -------
        Path
        """
        old = TileStore.open(path)
        new_days = as_days(times)
        _check_days(new_days)
        if old.times.size and new_days.size and new_days[0] <= old.times[-1]:
            raise ValidationError(f"{path}: appended days must follow {old.times[-1]}, got {new_days[0]}")
        all_days = np.concatenate([old.times, new_days])
        dyn = None if dynamic is None else np.asarray(dynamic, dtype=np.float32)
        if dyn is not None and dyn.shape != (new_days.size, len(old.dynamic_names), *old.grid.subpixel_shape):
            raise ValidationError(f"{path}: dynamic shape {dyn.shape} does not fit the store")
        new_coarse = {n: np.asarray(v, dtype=np.float32) for n, v in (coarse or {}).items()}
        for name, v in new_coarse.items():
            if name not in old.coarse:
                raise ValidationError(f"{path}: no coarse layer {name!r} (has {old.coarse_names})")
            if v.shape != (new_days.size, old.coarse[name].values.shape[1]):
                raise ValidationError(f"{path}: coarse {name!r} shape {v.shape} does not fit the store")
        writer = TileWriter(
            path,
            old.grid,
            all_days,
            old.static_names,
            old.dynamic_names,
            old.units,
            old.sources,
            {n: (np.asarray(c.index), c.values.shape[1]) for n, c in old.coarse.items()},
            old.attrs,
            old.tile_id,
        )
        with writer as w:
            f = w._f()
            f["static"][...] = old.static
            for t in range(old.times.size):  # day by day: memory bounded
                f["dynamic"][t] = old.dynamic[t]
            w._covered[: old.times.size] = old._coverage
            nd = len(old.dynamic_names)
            if dyn is not None:
                f["dynamic"][old.times.size :] = dyn
                w._covered[old.times.size :, :nd] = 1
            for k, (name, layer) in enumerate(old.coarse.items()):
                d = f["coarse"][name]["values"]
                if old.times.size:
                    d[: old.times.size] = layer.values
                if name in new_coarse:
                    d[old.times.size :] = new_coarse[name]
                    w._covered[old.times.size :, nd + k] = 1
        return Path(path)
