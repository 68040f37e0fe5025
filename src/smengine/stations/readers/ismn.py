"""ISMN "header+values" ``.stm`` soil-moisture files and their ``*_static_variables.csv``."""

from __future__ import annotations

import csv
import logging
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine.errors import DataError, DataLossWarning, ValidationError
from smengine.stations._core import QC, Exclusion, PathLike, Station, StationSet
from smengine.stations._counts import _flag_range
from smengine.stations._parse import _float, _parse_times

log = logging.getLogger(__name__)


# ======================================================================================
# ISMN
# ======================================================================================
def read_ismn(path: PathLike, good_flags: Sequence[str] = ("G", "U"), *, strict: bool = False) -> StationSet:
    """Read ISMN "header+values" soil-moisture files (``*.stm``), one or a folder tree.

    The first line holds ``CSE network station lat lon elevation depth_from depth_to
    sensor``; each further line ``YYYY/MM/DD HH:MM value ismn_flag provider_flag``.
    Old ISMN exports end lines with a bare CR (old-Mac); CR, LF and CRLF are all read.
    Values whose ISMN quality flag is not in ``good_flags`` are flagged
    :attr:`QC.SOURCE_FLAG` (kept, masked by :meth:`StationSet.daily`).

    ISMN static variables (``<NETWORK>_<NETWORK>_<station>_static_variables.csv`` in
    the folder of the ``.stm`` file, as in "Data separate files" downloads) are read with
    :func:`read_ismn_static` into :attr:`Station.static` / :attr:`Station.static_units`
    (texture and organic carbon of the top layer, land cover, climate class; columns of
    :meth:`StationSet.metadata`). A station without a land cover takes the land-cover
    description (ESA CCI), one without a porosity the top-layer ``saturation``
    (m³ m⁻³, usually HWSD); :attr:`Station.processing` names the file. A folder without
    a static-variables file changes nothing (ISMN test data have none); an unreadable or
    malformed one is reported as a :class:`~smengine.errors.DataLossWarning` and the
    station is read without static variables.

    Parameters
    ----------
    path : path
        A ``.stm`` file or a folder searched recursively for ``*_sm_*.stm``.
    good_flags : sequence of str, optional
        ISMN flags accepted (default ``("G", "U")``: good, and not checked — older exports
        carry ``U`` where no test ran). ``C*`` (outside the plausible range) and ``D*``
        (dubious) are masked. A multi-flag entry such as ``D01,D02`` is good only if
        every part is.
    strict : bool, optional
        Raise on an unreadable station file instead of excluding it.

    Returns
    -------
    StationSet
        Station ids ``NETWORK.station.depth_from-depth_to`` (depth in m).

    Warns
    -----
    DataLossWarning
        A static-variables file exists but cannot be read (named, with the reason).
    """
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(q for q in p.rglob("*.stm") if "_sm_" in q.name)
        if not files:
            raise DataError(f"{p}: no ISMN soil-moisture files (*_sm_*.stm)")
    elif p.is_file():
        files = [p]
    else:
        raise DataError(f"{p}: no such file or folder")
    good = {g.strip().upper() for g in good_flags}
    stations, excl = [], []
    statics: dict[Path, _Static | None] = {}  # static-variables file → parsed (None: unreadable)
    for f in files:
        try:
            st = _read_stm(f, good)
            _attach_static(st, f, statics)
            stations.append(st)
        except (DataError, ValidationError) as exc:
            if strict:
                raise
            excl.append(Exclusion(f.stem, str(exc), str(f), return_code=exc.return_code))
            log.warning("%s", exc)
    return StationSet(stations, excl)


def _read_stm(path: Path, good: set[str]) -> Station:
    try:
        text = path.read_bytes().decode("latin-1")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc}") from exc
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        raise DataError(f"{path}: empty ISMN file (no header and values)")
    head = lines[0].split()
    if len(head) < 8:
        raise DataError(
            f"{path}: line 1: ISMN header should have at least 8 fields "
            "(CSE network station lat lon elevation depth_from depth_to [sensor])"
        )
    network, station = head[1], head[2]
    lat, lon, elev, d0, d1 = (_float(v) for v in head[3:8])
    sensor = " ".join(head[8:])
    times, vals, flags = [], [], []
    for i, ln in enumerate(lines[1:], start=2):
        parts = ln.split()
        if len(parts) < 4:
            raise DataError(f"{path}: line {i}: expected 'date time value flag [provider_flag]', got {ln.strip()!r}")
        times.append(parts[0] + " " + parts[1])
        vals.append(parts[2])
        flags.append(parts[3])
    idx = _parse_times(pd.Series(times), path, "date time", fmt="%Y/%m/%d %H:%M")
    sm = pd.to_numeric(pd.Series(vals), errors="coerce").to_numpy()
    bad_num = np.isnan(sm) & ~pd.Series(vals).str.lower().isin(["nan", "na"]).to_numpy()
    if bad_num.any():
        i = int(np.flatnonzero(bad_num)[0])
        raise DataError(f"{path}: line {i + 2}: soil moisture {vals[i]!r} is not a number")
    flag = np.array([0 if set(fl.upper().split(",")) <= good else int(QC.SOURCE_FLAG) for fl in flags], np.int64)
    data = pd.DataFrame({"sm": sm, "flag": flag}, index=idx)
    if data.index.has_duplicates:
        raise DataError(f"{path}: duplicate time stamp {data.index[data.index.duplicated()][0]}")
    data = _flag_range(data.sort_index(), str(path))
    sid = f"{network}.{station}.{d0:g}-{d1:g}"
    st = Station(
        id=sid,
        lat=lat,
        lon=lon,
        data=data,
        elevation=elev,
        depth=(d0, d1),
        name=station,
        network=network,
        source=str(path),
        extra={"sensor": sensor, "ismn_flags": pd.Series(flags).value_counts().to_dict()},
    )
    st.processing.append(f"ISMN header+values; good flags {sorted(good)}")
    return st


# ======================================================================================
# ISMN static variables
# ======================================================================================
STATIC_SUFFIX = "_static_variables.csv"

#: ISMN texture quantities → flat names (values of the top layer, i.e. depth_from 0 m).
_LAYERED = {
    "saturation": "saturation",
    "clay fraction": "clay_fraction",
    "sand fraction": "sand_fraction",
    "silt fraction": "silt_fraction",
    "organic carbon": "organic_carbon",
}
_LAND_COVER = "land cover classification"
_CLIMATE = "climate classification"
_INSITU = "insitu"


@dataclass(frozen=True)
class _Row:
    line: int
    name: str
    unit: str
    d0: float
    d1: float
    value: str
    description: str
    source: str


@dataclass(frozen=True)
class _Static:
    values: dict[str, Any]
    units: dict[str, str]


def read_ismn_static(path: PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Read an ISMN static-variables file (``*_static_variables.csv``) into flat names.

    The file is semicolon-separated with a header line (``quantity_name;unit;
    depth_from[m];depth_to[m];value;description;quantity_source_name;...``), one
    quantity per line, lines ending in ``;``; fields are not quoted (a resolution of
    ``30"`` keeps its ``"``). A depth of -99.9 means "not given" (in-situ values).

    Names (units as in the file, ``^`` and ``*`` dropped: ``m^3*m^-3`` → ``m3 m-3``):

    ``saturation`` (m3 m-3), ``clay_fraction``, ``sand_fraction``, ``silt_fraction``, ``organic_carbon`` (% weight)
        Of the shallowest layer that starts at 0 m; an in-situ value is preferred to a
        data set (HWSD). ``texture_depth`` (e.g. ``"0-0.3 m"``) and ``texture_source``
        (e.g. ``"HWSD"``) say which; when the quantities differ in layer or source, these
        read ``"clay_fraction: 0-0.1 m; sand_fraction: 0-0.3 m; ..."``.
    ``<name>_insitu`` (e.g. ``organic_carbon_insitu``)
        The in-situ value of one of the above, where the file has one (at any depth).
    ``land_cover_code`` (int), ``land_cover`` (str), ``land_cover_source`` (str)
        ESA CCI land-cover class, its description (e.g. ``130``, ``"Grassland"``) and
        source, from the most recent CCI epoch (``CCI_landcover_2010`` before ``_2005``).
        ``land_cover_insitu``: the in-situ land cover, where given.
    ``climate_class``, ``climate_description``, ``climate_source`` (str)
        Köppen-Geiger class (e.g. ``"Cfa"``) and its description; ``climate_class_insitu``
        where given.
    anything else
        Kept under the quantity name in snake case (``"field capacity"`` →
        ``field_capacity``), value of its first line (float where numeric).

    Parameters
    ----------
    path : path
        The ``*_static_variables.csv`` file.

    Returns
    -------
    values : dict
        Name → value (float for numeric quantities, str for classes and descriptions,
        int for ``land_cover_code``).
    units : dict
        Name → unit, for the names whose line in the file has a unit.

    Raises
    ------
    DataError
        The file cannot be read, is empty, or its header lacks ``quantity_name`` or
        ``value`` (message names the file and the reason).
    """
    p = Path(path).expanduser()
    rows = _static_rows(p)
    values: dict[str, Any] = {}
    units: dict[str, str] = {}
    by_name: dict[str, list[_Row]] = {}
    for r in rows:
        by_name.setdefault(r.name.lower(), []).append(r)

    # ---- texture, saturation, organic carbon: top layer, in situ before data sets
    chosen: dict[str, tuple[str, str]] = {}
    for q, key in _LAYERED.items():
        rs = by_name.get(q, [])
        top = [r for r in rs if math.isfinite(r.d0) and abs(r.d0) < 1e-9]
        if top:
            r = min(top, key=lambda r: (r.source.lower() != _INSITU, _inf(r.d1), r.line))
            values[key] = _value(r.value)
            _set_unit(units, key, r.unit)
            chosen[key] = (_depth_label(r), r.source)
        elif rs:
            log.info("%s: %r has no layer starting at 0 m; no %s", p, q, key)
        insitu = [r for r in rs if r.source.lower() == _INSITU]
        if insitu:
            r = min(insitu, key=lambda r: (_inf(r.d0), _inf(r.d1), r.line))
            values[f"{key}_insitu"] = _value(r.value)
            _set_unit(units, f"{key}_insitu", r.unit)
    if chosen:
        for out, i in (("texture_depth", 0), ("texture_source", 1)):
            parts = {k: v[i] for k, v in chosen.items()}
            if len(set(parts.values())) == 1:
                values[out] = next(iter(parts.values()))
            else:
                values[out] = "; ".join(f"{k}: {v}" for k, v in parts.items())

    # ---- land cover: most recent CCI epoch; in situ apart
    lc = by_name.get(_LAND_COVER, [])
    lc_insitu = [r for r in lc if r.source.lower() == _INSITU]
    lc_other = [r for r in lc if r.source.lower() != _INSITU]
    if lc_other:
        r = _latest(lc_other, "cci")
        code = _value(r.value)
        values["land_cover_code"] = int(code) if isinstance(code, float) and code.is_integer() else code
        if r.description:
            values["land_cover"] = r.description
        values["land_cover_source"] = r.source
    if lc_insitu:
        r = lc_insitu[-1]
        values["land_cover_insitu"] = r.description or r.value

    # ---- climate class: Köppen-Geiger; in situ apart
    cl = by_name.get(_CLIMATE, [])
    cl_insitu = [r for r in cl if r.source.lower() == _INSITU]
    cl_other = [r for r in cl if r.source.lower() != _INSITU]
    if cl_other:
        r = _latest(cl_other, "koeppen")
        values["climate_class"] = r.value
        if r.description:
            values["climate_description"] = r.description
        values["climate_source"] = r.source
    if cl_insitu:
        values["climate_class_insitu"] = cl_insitu[-1].value

    # ---- anything else: first line, under its snake-case name
    known = set(_LAYERED) | {_LAND_COVER, _CLIMATE}
    for q, rs in by_name.items():
        if q in known:
            continue
        key = re.sub(r"[^0-9a-z]+", "_", q).strip("_")
        if not key or key in values:
            log.info("%s: static variable %r (line %d) not kept: name %r taken", p, rs[0].name, rs[0].line, key)
            continue
        values[key] = _value(rs[0].value)
        _set_unit(units, key, rs[0].unit)
    return values, units


def _static_rows(p: Path) -> list[_Row]:
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"{p}: cannot read ISMN static variables: {exc}") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    numbered = [(i, ln) for i, ln in enumerate(text.splitlines(), start=1) if ln.strip()]
    if not numbered:
        raise DataError(f"{p}: empty ISMN static-variables file (no header)")
    parsed = list(csv.reader((ln for _, ln in numbered), delimiter=";", quoting=csv.QUOTE_NONE))
    head = [c.strip().lower() for c in parsed[0]]
    missing = [c for c in ("quantity_name", "value") if c not in head]
    if missing:
        raise DataError(
            f"{p}: line {numbered[0][0]}: ISMN static-variables header lacks "
            f"{' and '.join(map(repr, missing))} (got {';'.join(parsed[0])[:200]!r})"
        )
    col = {c: head.index(c) for c in head if c}

    def get(fields: list[str], name: str) -> str:
        j = col.get(name)
        return fields[j].strip() if j is not None and j < len(fields) else ""

    rows = []
    for (line, _), fields in zip(numbered[1:], parsed[1:], strict=True):
        name, value = get(fields, "quantity_name"), get(fields, "value")
        if not name or not value:
            log.info("%s: line %d has no quantity name or value; skipped", p, line)
            continue
        rows.append(
            _Row(
                line=line,
                name=name,
                unit=get(fields, "unit"),
                d0=_static_depth(get(fields, "depth_from[m]")),
                d1=_static_depth(get(fields, "depth_to[m]")),
                value=value,
                description=get(fields, "description"),
                source=get(fields, "quantity_source_name"),
            )
        )
    return rows


def _static_depth(s: str) -> float:
    """Depth in m; empty, unparsable and the ISMN "not given" -99.9 → NaN."""
    try:
        v = float(s)
    except ValueError:
        return math.nan
    return v if math.isfinite(v) and v >= 0 else math.nan


def _value(s: str) -> float | str:
    try:
        return float(s)
    except ValueError:
        return s


def _inf(v: float) -> float:
    return v if math.isfinite(v) else math.inf


def _depth_label(r: _Row) -> str:
    return f"{r.d0:g}-{r.d1:g} m" if math.isfinite(r.d1) else f"from {r.d0:g} m"


def _set_unit(units: dict[str, str], key: str, unit: str) -> None:
    u = unit.replace("^", "").replace("*", " ").strip()
    if u:
        units[key] = u


def _latest(rows: list[_Row], prefer: str) -> _Row:
    """The row of the most recent epoch (year in the source name) among sources containing
    ``prefer``; else the last row."""
    pref = [r for r in rows if prefer in r.source.lower()] or rows

    def year(r: _Row) -> int:
        m = re.search(r"(19|20)\d\d", r.source)
        return int(m.group(0)) if m else -1

    return max(pref, key=lambda r: (year(r), r.line))


def _static_file(stm: Path) -> Path | None:
    """The static-variables file beside ``stm``: ``<prefix>_static_variables.csv`` with the
    prefix of the ``.stm`` name before ``_sm_``, else the only ``*_static_variables.csv``."""
    folder = stm.parent
    i = stm.name.find("_sm_")
    if i > 0:
        exact = folder / (stm.name[:i] + STATIC_SUFFIX)
        if exact.is_file():
            return exact
    try:
        found = sorted(q for q in folder.iterdir() if q.name.lower().endswith(STATIC_SUFFIX) and q.is_file())
    except OSError:
        return None
    if len(found) > 1:
        log.info("%s: %d static-variables files beside it and none named for it; none used", stm, len(found))
    return found[0] if len(found) == 1 else None


def _attach_static(st: Station, stm: Path, cache: dict[Path, _Static | None]) -> None:
    """Put the static variables beside ``stm`` into ``st`` (land cover and porosity where unknown)."""
    f = _static_file(stm)
    if f is None:
        return
    if f not in cache:
        try:
            values, units = read_ismn_static(f)
        except DataError as exc:
            warnings.warn(f"{exc}; stations in {f.parent} read without static variables", DataLossWarning, stacklevel=3)
            cache[f] = None
        else:
            cache[f] = _Static(values, units)
    s = cache[f]
    if s is None:
        return
    st.static = dict(s.values)
    st.static_units = dict(s.units)
    note = f"ISMN static variables from {f.name}"
    if not st.land_cover and isinstance(s.values.get("land_cover"), str):
        st.land_cover = s.values["land_cover"]
        note += f"; land cover from {s.values.get('land_cover_source') or 'the file'}"
    sat = s.values.get("saturation")
    if math.isnan(st.porosity) and isinstance(sat, float) and 0.0 < sat <= 1.0:
        st.porosity = sat
        src = _part(s.values.get("texture_source", ""), "saturation") or "ISMN"
        depth = _part(s.values.get("texture_depth", ""), "saturation")
        note += f"; porosity {sat:g} m3 m-3 from {src} saturation ({depth})"
    st.processing.append(note)


def _part(summary: str, key: str) -> str:
    """``key``'s entry of a ``texture_depth``/``texture_source`` value (plain, or ``"k: v; ..."``)."""
    for item in summary.split("; "):
        k, sep, v = item.partition(": ")
        if sep and k == key:
            return v
    return "" if ": " in summary else summary
