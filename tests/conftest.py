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
