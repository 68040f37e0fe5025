"""Thread-count resolution."""

from __future__ import annotations

import os

import pytest

from smengine._threads import FOREST_ISA_LEVELS, effective_n_threads, forest_isa_cap, openmp_enabled
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


@pytest.mark.parametrize(
    "value, level",
    [("c", 0), ("avx2", 1), ("avx512", 2), ("AVX2", 1), (" C\n", 0), ("\tAvx512 ", 2), ("", 2), ("  ", 2)],
)
def test_forest_isa_cap(monkeypatch, value, level):
    monkeypatch.setenv("SMENGINE_FOREST_ISA", value)
    assert forest_isa_cap() == level
    monkeypatch.delenv("SMENGINE_FOREST_ISA")
    assert forest_isa_cap() == max(FOREST_ISA_LEVELS.values()) == 2


@pytest.mark.parametrize("bad", ["a", "avx", "avx-512", "sse4", "0", "c,avx2"])
def test_bad_forest_isa_names_the_variable_and_the_value(monkeypatch, bad):
    monkeypatch.setenv("SMENGINE_FOREST_ISA", bad)
    with pytest.raises(ConfigError, match=rf"SMENGINE_FOREST_ISA={bad!r}.*c, avx2, avx512"):
        forest_isa_cap()
