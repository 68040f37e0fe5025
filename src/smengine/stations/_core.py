"""Station data model: QC bits, canonical columns, :class:`Station`, :class:`StationSet` and daily aggregation."""

from __future__ import annotations

import enum
import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from smengine.errors import ConfigError, DataError, DataLossWarning, ValidationError

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class QC(enum.IntFlag):
    """Quality-control bits of the ``flag`` column.

    :attr:`DEFAULT_MASK` (all but :attr:`GAPFILLED_MET`) is what :meth:`StationSet.daily`
    masks unless told otherwise.
    """

    EXTREME_COUNTS = 1  #: raw counts outside the plausible range (CE-PROC: 50–10000 cph)
    OUTLIER = 2  #: counts outside the 24 h mean ± 2√(24 h sum)
    SNOW = 4  #: snow or frozen soil (COSMOS-Europe ERA5 snow flag; soil T < 1 °C; daily mean air T < 0 °C)
    POROSITY_EXCESS = 8  #: soil moisture above porosity
    OUT_OF_RANGE = 16  #: value outside its physical range (sm, pressure, humidity)
    SOURCE_FLAG = 32  #: flagged bad by the data provider (e.g. ISMN flag not in good_flags)
    NO_CORRECTION = 64  #: counts could not be corrected (pressure missing)
    GAPFILLED_MET = 128  #: meteorology gap-filled (informational, not masked by default)

    @classmethod
    def default_mask(cls) -> QC:
        return cls(0xFF & ~cls.GAPFILLED_MET)


DEFAULT_MASK = QC.default_mask()

#: Canonical series columns with units (see module docstring).
CANONICAL_COLUMNS: dict[str, str] = {
    "sm": "m3 m-3",
    "sm_std": "m3 m-3",
    "counts_raw": "cph",
    "counts": "cph",
    "pressure": "hPa",
    "abs_humidity": "g m-3",
    "rel_humidity": "%",
    "air_temperature": "degC",
    "precipitation": "mm",
    "irrigation": "mm",
    "soil_temperature": "degC",
    "bwe": "kg m-2",
    "flag": "1",
}

#: Physical ranges; values outside are flagged :attr:`QC.OUT_OF_RANGE` and set to NaN.
PHYSICAL_RANGE: dict[str, tuple[float, float]] = {
    "sm": (0.0, 1.0),
    "pressure": (500.0, 1100.0),
    "abs_humidity": (0.0, 50.0),
    "rel_humidity": (0.0, 100.0),
    "air_temperature": (-60.0, 60.0),
    "precipitation": (0.0, 500.0),
    "irrigation": (0.0, 500.0),
    "soil_temperature": (-60.0, 60.0),
    "bwe": (0.0, 100.0),
}

_SUMMED = {"precipitation", "irrigation"}


# ======================================================================================
# Station and StationSet
# ======================================================================================
@dataclass
class Station:
    """One station: site physics and its time series.

    Attributes
    ----------
    id : str
        Station identifier (e.g. ``"FSC001"``, ``"C1"``, ``"SCAN.Abrams.0.05"``).
    lat, lon : float
        WGS84 coordinates, degrees.
    data : pandas.DataFrame
        Series on a sorted, unique UTC ``DatetimeIndex`` with canonical columns (``sm``
        required) and a ``flag`` column of :class:`QC` bits.
    elevation : float
        m a.s.l. (NaN if unknown).
    bulk_density : float
        Dry bulk density, g cm⁻³ (NaN if unknown).
    lattice_water, soc : float
        Lattice water and SOC water equivalent, g g⁻¹ (NaN if unknown: never a silent 0;
        a conversion that needs them says what it assumed).
    n0 : float
        Desilets N0 for this station's correction convention, cph (NaN if not a CRNS).
    porosity, cutoff_rigidity : float
        m³ m⁻³ and GV (NaN if unknown).
    depth : tuple of float
        Sensor depth range in m for point sensors (ISMN), else ``(nan, nan)``.
    name, network, land_cover, source : str
    processing : list of str
        What was done to the data, in order (conversions, corrections, exclusions).
    static : dict
        Site descriptors from the data provider (e.g. ISMN static variables: texture,
        organic carbon, land cover, climate class), name → value; their units in
        ``static_units``. Columns of :meth:`StationSet.metadata`.
    static_units : dict
    extra : dict
        Anything else the reader knew (reference values, calibration).
    """

    id: str
    lat: float
    lon: float
    data: pd.DataFrame
    elevation: float = math.nan
    bulk_density: float = math.nan
    lattice_water: float = math.nan
    soc: float = math.nan
    n0: float = math.nan
    porosity: float = math.nan
    cutoff_rigidity: float = math.nan
    depth: tuple[float, float] = (math.nan, math.nan)
    name: str = ""
    network: str = ""
    land_cover: str = ""
    source: str = ""
    processing: list[str] = field(default_factory=list)
    static: dict[str, Any] = field(default_factory=dict)
    static_units: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.id:
            raise ValidationError(f"{self.source or 'station'}: empty station id")
        for what, v, lim in (("lat", self.lat, 90.0), ("lon", self.lon, 180.0)):
            try:
                ok = math.isfinite(float(v)) and abs(float(v)) <= lim
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValidationError(
                    f"station {self.id} ({self.source}): {what} {v!r} is missing or "
                    f"outside ±{lim:g}°; a station needs coordinates"
                )
        self.lat, self.lon = float(self.lat), float(self.lon)
        self.data = _validate_frame(self.data, f"station {self.id} ({self.source})")

    @property
    def metadata(self) -> dict[str, Any]:
        """Site physics as a flat dict (one row of :meth:`StationSet.metadata`), then the
        :attr:`static` descriptors."""
        meta = {
            "station": self.id,
            "name": self.name,
            "network": self.network,
            "lat": self.lat,
            "lon": self.lon,
            "elevation": self.elevation,
            "bulk_density": self.bulk_density,
            "lattice_water": self.lattice_water,
            "soc": self.soc,
            "n0": self.n0,
            "porosity": self.porosity,
            "cutoff_rigidity": self.cutoff_rigidity,
            "depth_from": self.depth[0],
            "depth_to": self.depth[1],
            "land_cover": self.land_cover,
            "source": self.source,
            "start": self.data.index[0] if len(self.data) else pd.NaT,
            "end": self.data.index[-1] if len(self.data) else pd.NaT,
        }
        meta.update({k: v for k, v in self.static.items() if k not in meta})
        return meta

    def __repr__(self) -> str:
        n = int(self.data["sm"].notna().sum())
        return f"<Station {self.id} ({self.lat:.4f}, {self.lon:.4f}): {n} sm values, {self.network or 'no network'}>"


def _validate_frame(df: pd.DataFrame, where: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ValidationError(f"{where}: data should be a pandas DataFrame")
    if "sm" not in df.columns:
        raise ValidationError(f"{where}: data has no 'sm' column")
    idx = df.index
    if not isinstance(idx, pd.DatetimeIndex):
        raise ValidationError(f"{where}: data index should be a DatetimeIndex")
    if idx.tz is None:
        raise ValidationError(f"{where}: data index should be timezone-aware (UTC)")
    df = df.copy()
    if str(idx.tz) != "UTC":
        df.index = idx.tz_convert("UTC")
    if not df.index.is_monotonic_increasing:
        df = df.sort_index()
    if df.index.has_duplicates:
        dup = df.index[df.index.duplicated()][0]
        raise ValidationError(f"{where}: duplicate time stamp {dup}")
    if "flag" not in df.columns:
        df["flag"] = 0
    df["flag"] = df["flag"].fillna(0).astype(np.int64)
    for c in df.columns:
        if c != "flag" and not pd.api.types.is_numeric_dtype(df[c]):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


@dataclass(frozen=True)
class Exclusion:
    """A station (or part of one) left out, and why; ``return_code`` is that of the
    :class:`~smengine.errors.SMEngineError` behind it (:data:`smengine.errors.RETURN_CODES`
    decodes it: 3 a failed check such as missing coordinates, 4 unreadable or missing data)."""

    station: str
    reason: str
    source: str = ""
    n_values: int = 0
    return_code: int = DataError.return_code


class StationSet(Mapping[str, Station]):
    """A collection of stations (a read-only mapping id → :class:`Station`).

    Parameters
    ----------
    stations : iterable of Station
    exclusions : iterable of Exclusion, optional
        Stations (or values) that a reader left out, with the reason.

    Examples
    --------
    >>> ss = read_roaring_fork("../shared/data/crns/roaring_fork_co_usgs")   # doctest: +SKIP
    >>> daily = ss.daily()                                                  # doctest: +SKIP
    >>> daily.groupby("station").sm.mean()                                  # doctest: +SKIP
    """

    def __init__(self, stations: Iterable[Station] = (), exclusions: Iterable[Exclusion] = ()) -> None:
        self._stations: dict[str, Station] = {}
        for s in stations:
            if s.id in self._stations:
                raise ValidationError(f"duplicate station id {s.id!r} ({s.source} and {self._stations[s.id].source})")
            self._stations[s.id] = s
        self._exclusions = list(exclusions)

    # Mapping protocol
    def __getitem__(self, key: str) -> Station:
        try:
            return self._stations[key]
        except KeyError:
            raise KeyError(f"no station {key!r}; stations: {', '.join(self._stations) or 'none'}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._stations)

    def __len__(self) -> int:
        return len(self._stations)

    def __repr__(self) -> str:
        ex = f", {len(self._exclusions)} exclusions" if self._exclusions else ""
        return f"<StationSet: {len(self)} stations{ex}: {', '.join(list(self)[:8])}{' …' if len(self) > 8 else ''}>"

    def __add__(self, other: StationSet) -> StationSet:
        return StationSet([*self.values(), *other.values()], [*self._exclusions, *other._exclusions])

    @property
    def ids(self) -> list[str]:
        return list(self._stations)

    @property
    def exclusions(self) -> pd.DataFrame:
        """Stations or values left out by the reader: station, reason, source, n_values, return_code."""
        return pd.DataFrame(
            [vars(e) for e in self._exclusions], columns=["station", "reason", "source", "n_values", "return_code"]
        )

    def select(self, ids: Iterable[str]) -> StationSet:
        """The stations with these ids (KeyError naming an unknown one)."""
        return StationSet([self[i] for i in ids], self._exclusions)

    def metadata(self) -> pd.DataFrame:
        """One row per station with its site physics, indexed by station id."""
        return pd.DataFrame([s.metadata for s in self.values()]).set_index("station")

    def flag_counts(self) -> pd.DataFrame:
        """Number of time steps carrying each :class:`QC` flag, per station."""
        rows = {}
        for s in self.values():
            f = s.data["flag"].to_numpy()
            rows[s.id] = {q.name: int(((f & q) != 0).sum()) for q in QC}
        return pd.DataFrame.from_dict(rows, orient="index")

    def daily(self, min_hours: float = 18.0, mask: int = DEFAULT_MASK) -> pd.DataFrame:
        """Daily means on UTC days, keeping days with at least ``min_hours`` valid hours.

        A time step is valid when ``sm`` is finite and none of the ``mask`` bits of its
        ``flag`` are set. Valid hours = valid steps × step length (the median spacing,
        at most 24 h; a day counts at most 24 h), so two valid half-hours count as one
        hour and a series that is already daily counts 24 h for each valid day. Other
        numeric columns are averaged over the same day (``precipitation`` summed), each
        over its own finite values.

        Parameters
        ----------
        min_hours : float, optional
            Minimum valid hours per UTC day (default 18, in [0, 24]).
        mask : int, optional
            :class:`QC` bits that invalidate a step (default all but ``GAPFILLED_MET``).

        Returns
        -------
        pandas.DataFrame
            Tidy table with columns ``station``, ``date`` (datetime64[D]), ``sm``,
            ``n_hours`` and the met series and extras; sorted by station and date. The
            number of days with data dropped per station is in ``.attrs["dropped_days"]``
            (days whose every step is flagged included) and why in
            ``.attrs["drop_reasons"]`` (station → {QC bit name or ``"missing_hours"``: days};
            a day flagged by two bits counts under both).

        Warns
        -----
        DataLossWarning
            When a station loses more than half of its days with data to ``min_hours``.
        """
        if not 0.0 <= min_hours <= 24.0:
            raise ConfigError(f"min_hours should be within [0, 24], got {min_hours}")
        frames, dropped, reasons, heavy = [], {}, {}, []
        for s in self.values():
            d, n_drop, reasons[s.id] = _daily_one(s, min_hours, int(mask))
            dropped[s.id] = n_drop
            if n_drop:
                why = ", ".join(f"{k} {v}" for k, v in reasons[s.id].items())
                log.info("station %s: %d days with < %g valid hours dropped (%s)", s.id, n_drop, min_hours, why)
                if n_drop > len(d):
                    heavy.append(f"{s.id} {n_drop} of {n_drop + len(d)} ({why})")
            frames.append(d)
        if heavy:
            warnings.warn(
                f"daily(min_hours={min_hours:g}) dropped most of the days with data at "
                f"{len(heavy)} station(s): {'; '.join(heavy)}. Days are lost to quality flags (the QC bits "
                "named; mask= chooses which count) or to fewer valid hours than min_hours (missing_hours); "
                "lower min_hours or change mask if that is expected",
                DataLossWarning,
                stacklevel=2,
            )
        cols = ["station", "date", "sm", "n_hours"]
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
        rest = [c for c in out.columns if c not in cols]
        out = out[cols + rest]
        out.attrs["dropped_days"] = dropped
        out.attrs["drop_reasons"] = reasons
        return out


def step_hours(index: pd.DatetimeIndex) -> float:
    """Hours one valid time step stands for: the median spacing, at most a day (so a daily
    series counts 24 h per valid day; a single value counts 1 h).

    Examples
    --------
    >>> step_hours(pd.date_range("2020-01-01", periods=4, freq="30min"))
    0.5
    >>> step_hours(pd.date_range("2020-01-01", periods=4, freq="D"))
    24.0
    """
    if len(index) < 2:
        return 1.0
    step = (index[1:] - index[:-1]).median() / pd.Timedelta(hours=1)
    return float(min(step, 24.0))


def _drop_reasons(flags: pd.Series, has_sm: pd.Series, day: Any, days: pd.Index, lost: np.ndarray) -> dict[str, int]:
    """Why the ``lost`` days went: days per QC bit set on one of their steps with data (masked
    bits only in ``flags``), and ``missing_hours`` for lost days without any."""
    bad = flags.where(has_sm, 0).astype(np.int64)
    bits = bad.groupby(day).agg(np.bitwise_or.reduce).reindex(days, fill_value=0).to_numpy()
    why = {str(b.name): int((lost & ((bits & int(b)) != 0)).sum()) for b in QC}
    why["missing_hours"] = int((lost & (bits == 0)).sum())
    return {k: v for k, v in why.items() if v}


def _daily_one(s: Station, min_hours: float, mask: int) -> tuple[pd.DataFrame, int, dict[str, int]]:
    df = s.data
    valid = df["sm"].notna() & ((df["flag"].to_numpy() & mask) == 0)
    day = df.index.floor("D")
    step = step_hours(df.index)
    sm = df["sm"].where(valid)
    g = pd.DataFrame({"sm": sm, "_n": valid.astype(np.int64)}, index=df.index).groupby(day)
    out = pd.DataFrame({"sm": g["sm"].mean(), "n_hours": np.minimum(g["_n"].sum() * step, 24.0)})
    others = [c for c in df.columns if c not in ("sm", "flag") and pd.api.types.is_numeric_dtype(df[c])]
    if others:
        go = df[others].groupby(day)
        mean = go.mean()
        for c in others:
            out[c] = go[c].sum(min_count=1) if c in _SUMMED else mean[c]
    keep = out["n_hours"] >= min_hours
    # days with data (a finite sm) that lose it: too few valid hours, or every step flagged
    has_sm = df["sm"].notna()
    lost = ~keep.to_numpy() & has_sm.groupby(day).any().reindex(out.index, fill_value=False).to_numpy()
    flags = pd.Series(df["flag"].to_numpy() & mask, index=df.index)
    why = _drop_reasons(flags, has_sm, day, out.index, lost) if lost.any() else {}
    out = out[keep & out["sm"].notna()]
    out.insert(0, "date", out.index.tz_localize(None).values.astype("datetime64[D]"))
    out.insert(0, "station", s.id)
    return out.reset_index(drop=True), int(lost.sum()), why
