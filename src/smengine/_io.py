"""Small I/O helpers shared by the library and the CLI."""

from __future__ import annotations

import os
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
    tmp = _make_temp(path, directory)
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


def _make_temp(path: Path, directory: bool) -> Path:
    """A new, uniquely named file or folder beside ``path``, with the permissions the umask
    gives new files (``tempfile.mkstemp`` would make them private, 0600, and the rename would
    carry that over to the product)."""
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
