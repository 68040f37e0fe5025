r"""Units of covariates: which tile units convert to which, and how.

Tiles hold every covariate in one of a small vocabulary of units (what
:mod:`smengine.ingest` normalises a source's units to): ``"m3 m-3"``, ``"%"``, ``"1"``,
``"K"``, ``"degC"``, ``"m"``, ``"mm"``, ``"dB"``, ``"Pa"``, ``"hPa"``. A forest trained on a
covariate in one unit gives wrong soil moisture, without any error, on the same covariate
in another (ERA5 precipitation in ``m`` through a model trained on ``mm``). The engine
therefore compares each model feature's units (its :class:`~smengine.model.ModelCard`) with
the tile layer's before predicting, and converts where :func:`conversion` knows how.

A conversion is affine,

.. math::

    x_{\mathrm{to}} = a \, x_{\mathrm{from}} + b ,

and :func:`conversion` returns :math:`(a, b)`. The convertible pairs are the three pairs of
the vocabulary that measure the same quantity on another scale: ``m`` ↔ ``mm`` (length,
water depth), ``K`` ↔ ``degC`` (temperature), ``Pa`` ↔ ``hPa`` (pressure); identical units
give ``(1.0, 0.0)``. Every other pair is refused (:class:`~smengine.errors.DataError`):
``"%"`` (percent *of saturation*) and ``"m3 m-3"`` (volumetric) differ by the porosity,
``"1"`` is any dimensionless quantity, ``"dB"`` is logarithmic.

The table is written out here rather than taken from a units library: the only one in the
environment, cf-units (UDUNITS-2), comes in as a test dependency (through compliance-checker),
not a runtime one, and three pairs do not justify adding it. It would also convert ``"%"`` to
``"m3 m-3"`` (both dimensionless to UDUNITS), which is wrong here. ``tests/test_units.py``
checks every entry of the table against cf-units.

Examples
--------
>>> conversion("m", "mm")
(1000.0, 0.0)
>>> a, b = conversion("K", "degC")
>>> 293.15 * a + b
20.0...
"""

from __future__ import annotations

import logging

from smengine.errors import DataError

__all__ = ["CONVERSIONS", "VOCABULARY", "conversion"]

log = logging.getLogger(__name__)

#: The tile units vocabulary (see :mod:`smengine.ingest`).
VOCABULARY: tuple[str, ...] = ("m3 m-3", "%", "1", "K", "degC", "m", "mm", "dB", "Pa", "hPa")

#: (from, to) → (scale, offset): ``value_to = value_from * scale + offset``. Both directions
#: are written out, so that each constant is the decimal one (0.001, not 1 / 1000 computed).
CONVERSIONS: dict[tuple[str, str], tuple[float, float]] = {
    ("m", "mm"): (1000.0, 0.0),
    ("mm", "m"): (0.001, 0.0),
    ("K", "degC"): (1.0, -273.15),
    ("degC", "K"): (1.0, 273.15),
    ("Pa", "hPa"): (0.01, 0.0),
    ("hPa", "Pa"): (100.0, 0.0),
}

# why a pair of the vocabulary does not convert, where there is more to say than "different quantities"
_WHY_NOT: dict[frozenset[str], str] = {
    frozenset(("%", "m3 m-3")): "percent of saturation is not volumetric (they differ by the porosity)",
    frozenset(("%", "1")): "'1' is any dimensionless quantity, not known to be a fraction of saturation",
    frozenset(("m3 m-3", "1")): "'1' is any dimensionless quantity, not known to be a volumetric water content",
    frozenset(("dB", "1")): "decibels are logarithmic, not a linear scale of '1'",
}


def conversion(from_units: str, to_units: str, *, where: str = "") -> tuple[float, float]:
    """Scale and offset that bring values in ``from_units`` to ``to_units``.

    Parameters
    ----------
    from_units, to_units : str
        Units of the tile vocabulary (:data:`VOCABULARY`); surrounding blanks are ignored.
        Identical strings convert with ``(1.0, 0.0)`` whatever they are.
    where : str, optional
        What is being converted (file, layer, model), put at the head of an error message.

    Returns
    -------
    scale, offset : float
        ``value_in_to_units = value_in_from_units * scale + offset``.

    Raises
    ------
    DataError
        If the units differ and :data:`CONVERSIONS` has no entry for the pair: the message
        names ``where``, both units and, for pairs of the vocabulary, why they do not convert.

    Examples
    --------
    >>> conversion("mm", "mm")
    (1.0, 0.0)
    >>> conversion("hPa", "Pa")
    (100.0, 0.0)
    >>> conversion("%", "m3 m-3", where="t000_000.h5, layer 'smos'")
    Traceback (most recent call last):
    ...
    smengine.errors.DataError: t000_000.h5, layer 'smos': units '%' cannot be converted to 'm3 m-3': percent of ...
    """
    a, b = str(from_units).strip(), str(to_units).strip()
    if a == b:
        return (1.0, 0.0)
    if (a, b) in CONVERSIONS:
        return CONVERSIONS[(a, b)]
    head = f"{where}: " if where else ""
    unknown = [u for u in (a, b) if u not in VOCABULARY]
    if unknown:
        why = f"{' and '.join(repr(u) for u in unknown)} not in the tile units vocabulary {list(VOCABULARY)}"
    else:
        why = _WHY_NOT.get(frozenset((a, b)), "they measure different quantities")
    pairs = ", ".join(f"{x}→{y}" for x, y in CONVERSIONS)
    raise DataError(f"{head}units {a!r} cannot be converted to {b!r}: {why} (convertible: {pairs})")
