"""Thread-count resolution."""

from __future__ import annotations

import os

import pytest

from smengine._threads import effective_n_threads, openmp_enabled
from smengine.errors import ConfigError


def test_effective_n_threads():
    if not openmp_enabled():
        assert effective_n_threads(4) == 1
        return
    assert effective_n_threads(1) == 1
    assert effective_n_threads(3) == 3
    assert effective_n_threads(None) >= 1
    assert effective_n_threads(-1) == (os.cpu_count() or 1)
    assert effective_n_threads(-1000) == 1


@pytest.mark.parametrize("bad", [0, 1.5, "2", True])
def test_bad_thread_counts(bad):
    with pytest.raises(ConfigError, match="n_threads"):
        effective_n_threads(bad)
