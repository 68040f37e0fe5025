"""ISMN "header+values" ``.stm`` soil-moisture files."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from smengine.errors import DataError, ValidationError
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
    for f in files:
        try:
            stations.append(_read_stm(f, good))
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
