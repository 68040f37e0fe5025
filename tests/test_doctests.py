"""Run the numpydoc ``Examples`` of the public modules as doctests."""

from __future__ import annotations

import doctest

import pytest

import smengine.features
import smengine.filters
import smengine.footprint
import smengine.grid
import smengine.ingest
import smengine.metrics
import smengine.model._card
import smengine.model._compiled
import smengine.neutrons
import smengine.stations._core
import smengine.stations.readers


@pytest.mark.parametrize("module", [smengine.features, smengine.filters, smengine.footprint, smengine.grid, smengine.ingest, smengine.metrics, smengine.model._card, smengine.model._compiled, smengine.neutrons, smengine.stations._core, smengine.stations.readers], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE, extraglobs={"np": __import__("numpy")})
    assert result.attempted > 0
    assert result.failed == 0
