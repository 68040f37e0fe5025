"""The .pyi stubs of the compiled modules match the modules (pykdtree's stubtest idea)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "smengine._ext._footprint",
        "smengine._ext._parallel",
        "smengine._ext._filters",
        "smengine._ext._bucket",
        "smengine._ext._forest",
        "smengine._ext._engine",
    ],
)
def test_stubtest(module):
    pytest.importorskip("mypy")
    done = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", module, "--ignore-missing-stub"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
