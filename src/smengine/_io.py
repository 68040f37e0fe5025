"""Small I/O helpers shared by the library and the CLI."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Longest file-name component :func:`safe_name` accepts, in UTF-8 bytes: outputs append up to
#: ``_YYYYMMDD_YYYYMMDD.nc`` and temporary files ``.<name>.<8>.tmp`` to it, within the usual
#: 255-byte limit of a file name.
MAX_NAME_BYTES = 200


def safe_name(name: object, what: str, error: type[Exception] | None = None) -> str:
    """Return ``name`` if it is a plain file-name component, else raise.

    A name read from a file (a tile's ``tile_id`` attribute, a file stem) becomes part of an
    output path; it must not be able to point anywhere else. Accepted: a non-empty string of
    printable characters, at most :data:`MAX_NAME_BYTES` bytes in UTF-8, without ``/``, ``\\``
    or NUL, not ``.`` or ``..`` and not starting with ``.`` (hidden names are the temporary and
    lock files'). Nothing is rewritten: a name that also keys resume state must stay the same
    name, so a bad one is refused.

    Parameters
    ----------
    name : object
        The candidate name.
    what : str
        Where it comes from, for the message (e.g. ``"tiles/a.h5: attribute tile_id"``).
    error : exception class, optional
        Raised on a bad name (default :class:`smengine.errors.DataError`).

    Returns
    -------
    str
        ``name``, unchanged.
    """
    if error is None:
        from smengine.errors import DataError

        error = DataError
    why = None
    if not isinstance(name, str):
        why = f"not a string ({type(name).__name__})"
    elif not name:
        why = "it is empty"
    elif "/" in name or "\\" in name:
        why = "it contains a path separator"
    elif "\0" in name or not name.isprintable():
        why = "it contains NUL or control characters"
    elif name in (".", ".."):
        why = "it names a folder, not a file"
    elif name.startswith("."):
        why = "it starts with '.' (names of temporary and lock files)"
    elif len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        why = f"it is longer than {MAX_NAME_BYTES} bytes"
    if why is None and isinstance(name, str):
        return name
    shown = repr(name) if len(repr(name)) <= 120 else repr(name)[:117] + "..."
    raise error(f"{what}: {shown} cannot name an output file: {why}")


def inside(out_dir: str | os.PathLike[str], path: str | os.PathLike[str], what: str = "") -> Path:
    """Return ``path`` if it lies inside the folder ``out_dir``, else raise
    :class:`smengine.errors.DataError`.

    Both are resolved (``..`` and symbolic links followed, missing parts kept as they are), so
    neither a name nor a link planted in the output folder can take a write elsewhere.
    ``out_dir`` itself is not inside.
    """
    base = Path(out_dir).expanduser().resolve()
    full = Path(path).expanduser().resolve()
    if full == base or not full.is_relative_to(base):
        from smengine.errors import DataError

        raise DataError(f"{what + ': ' if what else ''}{path} (resolved: {full}) is outside the output folder {base}")
    return Path(path)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place.

    A failure leaves ``path`` as it was and no temporary file behind.
    """
    with atomic_target(path) as tmp:
        tmp.write_bytes(data)


@contextmanager
def atomic_target(path: Path, *, directory: bool = False, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that needs a file name (netCDF4,
    GDAL, Zarr); rename it onto ``path`` when the block completes.

    ``directory=True`` yields an empty temporary folder (a Zarr store); it can replace only a
    missing or empty folder. With ``overwrite=False`` an existing ``path`` raises
    :class:`FileExistsError` (checked before the block and again before the rename). A
    failure leaves ``path`` as it was and no temporary file or folder behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
    tmp = temp_beside(path, directory=directory)
    try:
        yield tmp
        if not overwrite and path.exists():
            raise FileExistsError(f"{path} exists (pass overwrite=True to replace it)")
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


#: Names of the temporary files and folders :func:`temp_beside` makes (and that
#: ``tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp")`` made before): ``.<name>.<8 characters>.tmp``.
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.tmp$")


def temp_beside(path: Path, *, directory: bool = False) -> Path:
    """Create a new, uniquely named empty file (or folder) beside ``path`` and return its path.

    Its name is ``.<name>.<8 hex digits>.tmp`` (see :data:`TEMP_NAME`). It gets the
    permissions the umask gives new files, as a plain ``open`` would (0644 under the usual
    umask 022): ``tempfile.mkstemp`` would make it private, 0600, and the rename would carry
    that over to the product.

    Parameters
    ----------
    path : Path
        The final name the temporary file or folder stands in for.
    directory : bool
        Make a folder instead of a file.

    Returns
    -------
    Path

    Raises
    ------
    OSError
        If the folder of ``path`` is not writable (or is full).
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            if directory:
                os.mkdir(tmp, 0o777)
            else:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"cannot create a temporary name beside {path}")  # pragma: no cover
