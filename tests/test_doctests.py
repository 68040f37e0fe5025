"""Every docstring example in the installed package is a test (all modules, found by walking the
package, not a hand-kept list; xarray's ``--doctest-modules`` idea, run against the installed
package so that the compiled kernels are the built ones)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import numpy as np
import pytest

import smengine

MODULES = sorted(m.name for m in pkgutil.walk_packages(smengine.__path__, "smengine."))


def test_the_walk_finds_the_package() -> None:
    for name in (
        "smengine.footprint",
        "smengine.stations.readers",
        "smengine.model._compiled",
        "smengine.twin._model",
        "smengine.config",
        "smengine._ext._forest",
    ):
        assert name in MODULES, name


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS, extraglobs={"np": np})
    assert result.failed == 0


def test_the_examples_are_many() -> None:
    finder = doctest.DocTestFinder()
    n = 0
    for name in MODULES:
        module = importlib.import_module(name)
        n += sum(len(t.examples) for t in finder.find(module) if t.examples)
    assert n > 50
