"""Shared fixtures: the real data folder (the read-only memmap helper is smengine.testing.as_readonly_memmap)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$SMENGINE_DATA`` or ``../shared/data`` beside the repository, if present."""
    env = os.environ.get("SMENGINE_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder; tests that need it skip (with the reason) when it is absent."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("real data not found: set SMENGINE_DATA or place shared/data beside the repo")
    return d


def _mount_tmpfs(path: Path, options: str) -> bool:
    """Mount a tmpfs at ``path`` (root with mount rights only); True when it worked."""
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def _umount(path: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path: Path):
    """A folder nothing can be written into: a read-only tmpfs (as root) or mode 0555."""
    d = tmp_path / "readonly"
    if os.geteuid() == 0:
        if not _mount_tmpfs(d, "ro,size=64k"):
            pytest.skip("running as root without mount rights: no read-only folder to test with")
        yield d
        _umount(d)
    else:
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)


@pytest.fixture
def full_disk(tmp_path: Path):
    """A folder on a 1 MiB tmpfs (as root with mount rights), to run out of space in."""
    d = tmp_path / "small"
    if not _mount_tmpfs(d, "size=1m"):
        pytest.skip("cannot mount a small tmpfs here (needs root with mount rights)")
    yield d
    _umount(d)
