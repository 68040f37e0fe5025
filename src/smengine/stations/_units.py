r"""Plausibility of station columns: each column's unit told from a station's median, impossible
values counted.

A station file does not say its units. Each column of :data:`PLAUSIBILITY` is checked per
station from robust statistics, so that a few bad values never flip a unit:

1. **Unit.** The median of the column's finite values must lie in the plausible median
   range of the expected unit; if it lies in that of a known alternative unit instead, the
   column is converted (and the conversion said in a :class:`~smengine.errors.QualityWarning`
   naming the station and column); if it fits no unit, the read is refused with a
   :class:`~smengine.errors.DataError` naming the station, column and median.
2. **Values.** After the conversion, values outside the physical range are set to NaN and
   counted, per station and column, in one :class:`~smengine.errors.DataLossWarning` (the
   canonical columns of :data:`~smengine.stations.PHYSICAL_RANGE` also flag the step
   :attr:`~smengine.stations.QC.OUT_OF_RANGE`, as before). ``warnings.simplefilter("error",
   DataLossWarning)`` (the CLI's ``--strict``) turns the loss into an error.
3. **Count level** (:func:`check_count_level`, when counts are converted with N0): the
   median count rate, pressure-corrected, over N0 must lie in :data:`COUNT_LEVEL`; counts
   summed over another interval (per minute, per 15 min …) are refused naming the interval
   the level suggests, unless the interval is given (``count_seconds=``), then they are
   scaled to counts per hour.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from smengine import neutrons as nt
from smengine.errors import DataError
from smengine.stations._core import PHYSICAL_RANGE, QC

__all__ = ["COUNT_INTERVALS", "COUNT_LEVEL", "PLAUSIBILITY", "Plausibility", "Unit", "check_count_level"]


@dataclass(frozen=True)
class Unit:
    """A unit a column may come in: ``canonical = value * scale + offset``, recognised when a
    station's median (in this unit) lies within ``median``."""

    name: str
    median: tuple[float, float]
    scale: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Plausibility:
    """What a column's values may be, in its canonical unit.

    ``physical``: range of a single value (``positive``: the low end excluded); ``median``:
    range of a station's median (None: no unit is told from it, e.g. precipitation, mostly 0);
    ``alternatives``: other units recognised by their median, converted.
    """

    unit: str
    physical: tuple[float, float]
    median: tuple[float, float] | None = None
    alternatives: tuple[Unit, ...] = ()
    positive: bool = False


_KELVIN = Unit("K", (150.0, 350.0), 1.0, -273.15)
_PERCENT_SM = Unit("%", (1.0, 100.0), 0.01)
_TEMPERATURE = Plausibility("degC", PHYSICAL_RANGE["air_temperature"], (-50.0, 50.0), (_KELVIN,))
_SOIL_TEMPERATURE = Plausibility("degC", PHYSICAL_RANGE["soil_temperature"], (-50.0, 50.0), (_KELVIN,))
_SOIL_MOISTURE = Plausibility("m3 m-3", PHYSICAL_RANGE["sm"], (0.0, 1.0), (_PERCENT_SM,))
#: Highest count rate a CRNS can report, cph (single values above it are impossible, not extreme).
MAX_COUNT_RATE = 1.0e6
_COUNTS = Plausibility("cph", (0.0, MAX_COUNT_RATE), None, (), positive=True)

#: Column → plausible values and the units told apart by a station's median (``tdr_<cm>`` and
#: ``soil_temperature_<cm>`` stand for every depth).
PLAUSIBILITY: dict[str, Plausibility] = {
    "sm": _SOIL_MOISTURE,
    "tdr_<cm>": _SOIL_MOISTURE,
    "soil_temperature": _SOIL_TEMPERATURE,
    "soil_temperature_<cm>": _SOIL_TEMPERATURE,
    "air_temperature": _TEMPERATURE,
    "abs_humidity": Plausibility(
        "g m-3", PHYSICAL_RANGE["abs_humidity"], (0.1, 50.0), (Unit("kg m-3", (1e-6, 0.1), 1000.0),)
    ),
    "rel_humidity": Plausibility(
        "%", PHYSICAL_RANGE["rel_humidity"], (1.0, 100.0), (Unit("fraction", (0.0, 1.0), 100.0),)
    ),
    "pressure": Plausibility(
        "hPa",
        PHYSICAL_RANGE["pressure"],
        (500.0, 1100.0),
        (Unit("kPa", (50.0, 110.0), 10.0), Unit("Pa", (5.0e4, 1.1e5), 0.01)),
    ),
    "precipitation": Plausibility("mm", PHYSICAL_RANGE["precipitation"]),
    "irrigation": Plausibility("mm", PHYSICAL_RANGE["irrigation"]),
    "bwe": Plausibility("kg m-2", PHYSICAL_RANGE["bwe"]),
    "counts_raw": _COUNTS,
    "counts_corrected": _COUNTS,
}

_DEPTH = re.compile(r"^(tdr|soil_temperature)_\d+(?:\.\d+)?$")

#: Plausible range of a station's median count rate over N0 (pressure-corrected): θ from 0 to
#: beyond porosity lies within about 0.45–1.1; outside this range the counts are not per hour.
COUNT_LEVEL = (0.3, 3.0)
#: Counting intervals (s) the level of a refused series is matched against, with their names.
COUNT_INTERVALS: dict[float, str] = {
    60.0: "1 min",
    300.0: "5 min",
    600.0: "10 min",
    900.0: "15 min",
    1800.0: "30 min",
    7200.0: "2 h",
    86400.0: "1 day",
}
_HEALTHY_LEVEL = (0.4, 1.3)


def plausibility(column: str) -> Plausibility | None:
    """The :data:`PLAUSIBILITY` entry of a column (depth columns by their pattern), or None."""
    m = _DEPTH.match(column)
    return PLAUSIBILITY.get(f"{m.group(1)}_<cm>" if m else column)


def _within(x: float, r: tuple[float, float]) -> bool:
    return r[0] <= x <= r[1]


def check_units(g: pd.DataFrame, sid: str, where: str) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Tell each :data:`PLAUSIBILITY` column's unit from the station's median, convert known
    alternative units and blank values outside the physical range.

    Returns the frame (converted, out-of-range values NaN; canonical columns of
    :data:`PHYSICAL_RANGE` also flagged :attr:`QC.OUT_OF_RANGE` there), what was converted
    (``"<station> <column> <unit> → <canonical> (median …)"``) and what was lost
    (``"<station> <column> <n> of <m> (outside …)"``), for the caller's one warning each.

    Raises
    ------
    DataError
        A column whose median fits neither the expected unit nor a known alternative.
    """
    converted: list[str] = []
    lost: list[str] = []
    for c in list(g.columns):
        rule = plausibility(str(c))
        if rule is None:
            continue
        v = pd.to_numeric(g[c], errors="coerce").to_numpy(dtype=np.float64)
        finite = np.isfinite(v)
        if not finite.any():
            continue
        if rule.median is not None:
            med = float(np.median(v[finite]))
            if not _within(med, rule.median):
                unit = next((u for u in rule.alternatives if _within(med, u.median)), None)
                if unit is None:
                    known = ", ".join(f"{u.name} {u.median[0]:g}…{u.median[1]:g}" for u in rule.alternatives)
                    raise DataError(
                        f"{where}: station {sid}: column {c!r} has median {med:.4g}, implausible in {rule.unit} "
                        f"(a station's median lies within {rule.median[0]:g}…{rule.median[1]:g})"
                        + (f" and in the units recognised ({known})" if known else "")
                        + "; convert the column to "
                        + rule.unit
                        + " or map the right column with columns={...}"
                    )
                v = v * unit.scale + unit.offset
                g[c] = v
                converted.append(f"{sid} {c} {unit.name} → {rule.unit} (median {med:.4g})")
        lo, hi = rule.physical
        with np.errstate(invalid="ignore"):
            bad = finite & (((v <= lo) if rule.positive else (v < lo)) | (v > hi))
        if bad.any():
            g.loc[bad, c] = np.nan
            flagged = c in PHYSICAL_RANGE
            if flagged:
                g.loc[bad, "flag"] = g.loc[bad, "flag"].to_numpy() | int(QC.OUT_OF_RANGE)
            span = f"({lo:g}, {hi:g}]" if rule.positive else f"[{lo:g}, {hi:g}]"
            lost.append(
                f"{sid} {c} {int(bad.sum())} of {int(finite.sum())} (outside {span} {rule.unit}"
                + ("; steps flagged OUT_OF_RANGE)" if flagged else ")")
            )
    return g, converted, lost


def check_count_level(
    counts: pd.Series,
    *,
    n0: float,
    sid: str,
    column: str,
    where: str,
    pressure: pd.Series | None = None,
    pressure_reference: float = 1013.25,
) -> None:
    """Refuse counts whose level says they are not counts per hour.

    The station's median count rate, multiplied by the pressure factor at its median
    pressure (raw counts) and divided by N0, must lie within :data:`COUNT_LEVEL`. A series
    summed over 15 minutes sits near a quarter of that, one over a minute near a sixtieth.

    Raises
    ------
    DataError
        Naming the station, column, the level and the counting interval(s) of
        :data:`COUNT_INTERVALS` that would make it plausible (``count_seconds=`` converts).
    """
    v = pd.to_numeric(counts, errors="coerce").to_numpy(dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v) or not (math.isfinite(n0) and n0 > 0):
        return
    med = float(np.median(v))
    f, how = 1.0, ""
    if pressure is not None:
        p = pd.to_numeric(pressure, errors="coerce").to_numpy(dtype=np.float64)
        p = p[np.isfinite(p) & (p > 0)]
        if len(p):
            f = float(nt.pressure_correction(float(np.median(p)), pressure_reference))
            how = f" x pressure factor {f:.3g}"
    level = med * f / n0
    if _within(level, COUNT_LEVEL):
        return
    fits = [(s, name) for s, name in COUNT_INTERVALS.items() if _within(level * 3600.0 / s, _HEALTHY_LEVEL)]
    if fits:
        guess = " or ".join(f"per {name}" for _, name in fits)
        secs = ", ".join(f"{s:g} for {name}" for s, name in fits)
        hint = (
            f"the level suggests counts {guess}; give the counting interval with count_seconds= ({secs}: "
            "the counts are then scaled by 3600/count_seconds to counts per hour) or convert the column to cph"
        )
    else:
        hint = "no counting interval explains it: check N0 (metadata) and that the column holds neutron counts"
        if pressure is None and level > COUNT_LEVEL[1]:
            hint += " (without a pressure column raw counts at altitude sit far above N0: add the pressure)"
    raise DataError(
        f"{where}: station {sid}: {column} median {med:.4g}{how} is {level:.3g} x N0 ({n0:g} cph), not a "
        f"rate per hour (a station's level lies within {COUNT_LEVEL[0]:g}…{COUNT_LEVEL[1]:g} x N0); {hint}"
    )
