"""Small I/O helpers shared by the library and the CLI."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
