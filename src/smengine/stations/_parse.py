"""Helpers shared by the station readers: column names, times, tables, metadata, exclusions."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine.errors import DataError, SMEngineError
from smengine.stations._core import Exclusion, Station

log = logging.getLogger(__name__)


# ======================================================================================
# helpers for readers
# ======================================================================================
def _norm(name: str) -> str:
    """Column key: lower case, units in brackets and non-alphanumerics dropped."""
    s = re.sub(r"\(.*?\)|\[.*?\]", "", str(name))
    return re.sub(r"[^0-9a-z]", "", s.lower())


def _parse_times(
    values: pd.Series, path: Path, column: str, utc: bool = True, fmt: str | None = None
) -> pd.DatetimeIndex:
    """Parse times; name the file, line and value of the first one that fails."""
    s = values.astype(str).str.strip()
    t = pd.to_datetime(s, errors="coerce", utc=utc, format=fmt or "ISO8601")
    if fmt is None and t.isna().any():  # not ISO 8601: let pandas infer one format from the data
        t = pd.to_datetime(s, errors="coerce", utc=utc)
    bad = t.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: cannot parse time {s.iloc[i]!r} in column {column!r} (data row {i + 1})")
    return pd.DatetimeIndex(t)


def _read_table(path: Path, **kw: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kw)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: cannot read CSV: {exc}") from exc


def _require(df: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))}; found {', '.join(map(str, df.columns))}"
        )


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _station_from_meta(sid: str, meta: pd.DataFrame, data: pd.DataFrame, source: str, network: str) -> Station:
    m = meta.loc[sid]
    return Station(
        id=sid,
        lat=_float(m.get("lat")),
        lon=_float(m.get("lon")),
        data=data,
        elevation=_float(m.get("elevation")),
        bulk_density=_float(m.get("bulk_density")),
        lattice_water=_float(m.get("lattice_water")) if np.isfinite(_float(m.get("lattice_water"))) else 0.0,
        soc=_float(m.get("soc")) if np.isfinite(_float(m.get("soc"))) else 0.0,
        n0=_float(m.get("n0")),
        porosity=_float(m.get("porosity")),
        cutoff_rigidity=_float(m.get("cutoff_rigidity")),
        name=str(m.get("name") or ""),
        network=network,
        land_cover=str(m.get("land_cover") or ""),
        source=source,
        extra={
            k: m[k]
            for k in ("mean_raw_counts", "mean_corrected_counts", "mean_sm", "mean_d86", "mean_r86")
            if k in m.index
        },
    )


def _exclude_or_raise(
    strict: bool,
    exclusions: list[Exclusion],
    station: str,
    reason: str,
    source: str,
    n: int = 0,
    cause: type[SMEngineError] = DataError,
) -> None:
    """Raise a DataError (strict) or record the exclusion with the return code of its ``cause``."""
    if strict:
        raise DataError(
            reason if reason.startswith(f"station {station} ") else f"{source}: station {station}: {reason}"
        )
    log.warning("%s: station %s excluded: %s", source, station, reason)
    exclusions.append(Exclusion(station, reason, source, n, cause.return_code))
