r"""CRNS and in-situ station data: readers, counts → soil moisture, QC and daily aggregation.

Every reader returns a :class:`StationSet`: one :class:`Station` per site, each with its
site physics (coordinates, bulk density, lattice water, SOC, N0 …) and a time series in
canonical columns on a UTC :class:`pandas.DatetimeIndex`:

================== ========= =====================================================
column             unit      meaning
================== ========= =====================================================
``sm``             m³ m⁻³    volumetric soil moisture (the target)
``sm_std``         m³ m⁻³    its uncertainty, where known
``counts_raw``     cph       raw epithermal neutron count rate
``counts``         cph       corrected count rate (24 h smoothed where converted)
``pressure``       hPa       air pressure
``abs_humidity``   g m⁻³     absolute air humidity
``rel_humidity``   %         relative air humidity
``air_temperature`` °C       air temperature
``precipitation``  mm        precipitation per time step
``flag``           bit mask  :class:`QC` flags; :meth:`StationSet.daily` masks them
================== ========= =====================================================

Any other numeric column (TDR profiles ``tdr_5`` … , soil temperature, footprint depth)
is carried along and averaged by :meth:`StationSet.daily` too.

Readers
-------
:func:`read_cosmos_europe`  COSMOS-Europe revision 1 folder (Bogena et al. 2022).
:func:`read_ismn`           ISMN "header+values" ``.stm`` files (also old-Mac CR line ends).
:func:`read_csv`            a documented generic CSV (soil moisture or raw counts).
:func:`read_roaring_fork`   the USGS Roaring Fork (Colorado) network, raw counts + TDR.
:func:`read_fuerstensee`    COSMOS-Europe FSC001 raw hourly counts (neptoon example).

Raw counts become soil moisture with :func:`counts_to_sm` (SCIENCE.md §5.3, CE-PROC):
hourly rates, extreme-count and outlier removal, pressure/humidity/incoming-flux factors
(:mod:`smengine.neutrons`), a centred 24 h moving mean and the Desilets conversion.

Bad input never disappears silently: a missing column, an unparseable date or a file
that cannot be read raises :class:`~smengine.errors.DataError` naming the file; a station
without coordinates or metadata is excluded and *reported* in
:attr:`StationSet.exclusions` (or raises with ``strict=True``); values outside the
physical range are flagged :attr:`QC.OUT_OF_RANGE`, counted and masked.

References
----------
.. [1] Bogena, H. R. et al. (2022). COSMOS-Europe: a European network of cosmic-ray neutron
   soil moisture sensors. ESSD 14, 1125–1151.
.. [2] Dorigo, W. et al. (2021). The International Soil Moisture Network: serving Earth
   system science for over a decade. HESS 25, 5749–5804.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine import neutrons as nt
from smengine.errors import ConfigError, DataError, DataLossWarning, ValidationError

__all__ = [
    "CANONICAL_COLUMNS",
    "QC",
    "Station",
    "StationSet",
    "counts_to_sm",
    "read_cosmos_europe",
    "read_cosmos_europe_metadata",
    "read_csv",
    "read_fuerstensee",
    "read_ismn",
    "read_nmdb",
    "read_roaring_fork",
    "step_hours",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]


class QC(enum.IntFlag):
    """Quality-control bits of the ``flag`` column.

    :attr:`DEFAULT_MASK` (all but :attr:`GAPFILLED_MET`) is what :meth:`StationSet.daily`
    masks unless told otherwise.
    """

    EXTREME_COUNTS = 1  #: raw counts outside the plausible range (CE-PROC: 50–10000 cph)
    OUTLIER = 2  #: counts outside the 24 h mean ± 2√(24 h sum)
    SNOW = 4  #: snow or frozen soil (COSMOS-Europe ERA5 snow flag; soil T < 1 °C)
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
}

_SUMMED = {"precipitation"}


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
        Lattice water and SOC water equivalent, g g⁻¹.
    n0 : float
        Desilets N0 for this station's correction convention, cph (NaN if not a CRNS).
    porosity, cutoff_rigidity : float
        m³ m⁻³ and GV (NaN if unknown).
    depth : tuple of float
        Sensor depth range in m for point sensors (ISMN), else ``(nan, nan)``.
    name, network, land_cover, source : str
    processing : list of str
        What was done to the data, in order (conversions, corrections, exclusions).
    extra : dict
        Anything else the reader knew (reference values, calibration).
    """

    id: str
    lat: float
    lon: float
    data: pd.DataFrame
    elevation: float = math.nan
    bulk_density: float = math.nan
    lattice_water: float = 0.0
    soc: float = 0.0
    n0: float = math.nan
    porosity: float = math.nan
    cutoff_rigidity: float = math.nan
    depth: tuple[float, float] = (math.nan, math.nan)
    name: str = ""
    network: str = ""
    land_cover: str = ""
    source: str = ""
    processing: list[str] = field(default_factory=list)
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
                raise ValidationError(f"station {self.id} ({self.source}): {what} {v!r} is missing or "
                                      f"outside ±{lim:g}°; a station needs coordinates")  # fmt: skip
        self.lat, self.lon = float(self.lat), float(self.lon)
        self.data = _validate_frame(self.data, f"station {self.id} ({self.source})")

    @property
    def metadata(self) -> dict[str, Any]:
        """Site physics as a flat dict (one row of :meth:`StationSet.metadata`)."""
        return {
            "station": self.id, "name": self.name, "network": self.network, "lat": self.lat,
            "lon": self.lon, "elevation": self.elevation, "bulk_density": self.bulk_density,
            "lattice_water": self.lattice_water, "soc": self.soc, "n0": self.n0,
            "porosity": self.porosity, "cutoff_rigidity": self.cutoff_rigidity,
            "depth_from": self.depth[0], "depth_to": self.depth[1],
            "land_cover": self.land_cover, "source": self.source,
            "start": self.data.index[0] if len(self.data) else pd.NaT,
            "end": self.data.index[-1] if len(self.data) else pd.NaT,
        }  # fmt: skip

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
    """A station (or part of one) left out, and why."""

    station: str
    reason: str
    source: str = ""
    n_values: int = 0


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
        """Stations or values left out by the reader: station, reason, source, n_values."""
        return pd.DataFrame([vars(e) for e in self._exclusions], columns=["station", "reason", "source", "n_values"])

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
            number of days dropped per station is in ``.attrs["dropped_days"]``.

        Warns
        -----
        DataLossWarning
            When a station loses more than half of its days with data to ``min_hours``.
        """
        if not 0.0 <= min_hours <= 24.0:
            raise ConfigError(f"min_hours should be within [0, 24], got {min_hours}")
        frames, dropped, heavy = [], {}, []
        for s in self.values():
            d, n_drop = _daily_one(s, min_hours, int(mask))
            dropped[s.id] = n_drop
            if n_drop:
                log.info("station %s: %d days with < %g valid hours dropped", s.id, n_drop, min_hours)
                if n_drop > len(d):
                    heavy.append(f"{s.id} {n_drop} of {n_drop + len(d)}")
            frames.append(d)
        if heavy:
            warnings.warn(f"daily(min_hours={min_hours:g}) dropped most of the days with data at "
                          f"{len(heavy)} station(s) ({', '.join(heavy)}): they have fewer valid hours (steps x step "
                          "length, at most 24 h a day); lower min_hours if that is expected", DataLossWarning,
                          stacklevel=2)  # fmt: skip
        cols = ["station", "date", "sm", "n_hours"]
        out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
        rest = [c for c in out.columns if c not in cols]
        out = out[cols + rest]
        out.attrs["dropped_days"] = dropped
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


def _daily_one(s: Station, min_hours: float, mask: int) -> tuple[pd.DataFrame, int]:
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
    n_drop = int((~keep & (out["n_hours"] > 0)).sum())
    out = out[keep & out["sm"].notna()]
    out.insert(0, "date", out.index.tz_localize(None).values.astype("datetime64[D]"))
    out.insert(0, "station", s.id)
    return out.reset_index(drop=True), n_drop


# ======================================================================================
# quality control and counts → soil moisture
# ======================================================================================
def _flag_range(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Flag and blank values outside :data:`PHYSICAL_RANGE`; log what was flagged."""
    for c, (lo, hi) in PHYSICAL_RANGE.items():
        if c not in df.columns:
            continue
        v = df[c].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            bad = np.isfinite(v) & ((v < lo) | (v > hi))
        if bad.any():
            log.warning("%s: %d %s values outside [%g, %g] flagged OUT_OF_RANGE", where, int(bad.sum()), c, lo, hi)
            df.loc[bad, "flag"] = df.loc[bad, "flag"] | int(QC.OUT_OF_RANGE)
            df.loc[bad, c] = np.nan
    return df


def read_nmdb(path: PathLike) -> pd.Series:
    """Read a neutron-monitor export (NMDB, ``time;counts`` per line, UTC) as a Series.

    Parameters
    ----------
    path : path
        Text file with ``YYYY-MM-DD HH:MM:SS;value`` lines (``;`` or ``,`` separated).

    Returns
    -------
    pandas.Series
        Count rate on a UTC DatetimeIndex, named after the file stem.
    """
    p = Path(path)
    try:
        raw = pd.read_csv(p, sep=r"[;,]", engine="python", header=None, comment="#", names=["time", "nm"],
                          skipinitialspace=True)  # fmt: skip
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{p}: cannot read neutron-monitor file: {exc}") from exc
    t = _parse_times(raw["time"], p, "time", utc=True)
    nm = pd.to_numeric(raw["nm"], errors="coerce")
    if nm.notna().sum() == 0:
        raise DataError(f"{p}: no numeric neutron-monitor counts")
    return pd.Series(nm.to_numpy(), index=pd.DatetimeIndex(t), name=p.stem).sort_index()


def counts_to_sm(
    raw_cph: pd.Series,
    *,
    n0: float,
    bulk_density: float,
    lattice_water: float = 0.0,
    soc: float = 0.0,
    pressure: pd.Series | None = None,
    abs_humidity: pd.Series | None = None,
    incoming: pd.Series | None = None,
    incoming_reference: float | None = None,
    cutoff_rigidity: float | None = None,
    monitor_rigidity: float = 4.49,
    pressure_reference: float = 1013.25,
    count_range: tuple[float, float] = (50.0, 10000.0),
    porosity: float | None = None,
    smooth_hours: int = 24,
) -> pd.DataFrame:
    r"""Raw neutron count rates → hourly volumetric soil moisture (SCIENCE.md §5.3, CE-PROC).

    1. Average to hourly rates (sub-hourly input; rates, so a missing half-hour does
       not bias the hour). Counts outside ``count_range`` are NaN, flagged
       :attr:`QC.EXTREME_COUNTS`; counts outside the centred 24 h mean ± 2√(24 h sum)
       are NaN, flagged :attr:`QC.OUTLIER`.
    2. :math:`N = N_{raw} f_p f_h f_i` (:func:`smengine.neutrons.pressure_correction`,
       :func:`~smengine.neutrons.humidity_correction` with h_ref = 0,
       :func:`~smengine.neutrons.incoming_correction`, Hawdon 2014). Humidity gaps are
       filled with the station's mean absolute humidity (flag ``GAPFILLED_MET``); hours
       without pressure cannot be corrected (flag ``NO_CORRECTION``). Without an incoming
       series, or where it does not cover the data, f_i = 1 (logged).
    3. A centred ``smooth_hours`` moving mean (min half the window), as COSMOS-Europe's
       ``MovAvg24h``, then :func:`~smengine.neutrons.counts_to_theta` with N0, ρ_b,
       W_lat, W_soc; the uncertainty from :func:`~smengine.neutrons.theta_uncertainty`
       with σ_N = √(N·smooth_hours)/smooth_hours scaled by the corrections.

    Parameters
    ----------
    raw_cph : pandas.Series
        Raw epithermal count rate, counts per hour, on a UTC DatetimeIndex.
    n0 : float
        Desilets N0 (cph) for *this* correction convention (p_ref, h_ref = 0, I_ref).
    bulk_density : float
        g cm⁻³.
    lattice_water, soc : float, optional
        g g⁻¹.
    pressure : pandas.Series, optional
        Air pressure, hPa, same index (required for a pressure correction).
    abs_humidity : pandas.Series, optional
        Absolute humidity, g m⁻³, same index (no humidity correction without it).
    incoming : pandas.Series, optional
        Neutron-monitor count rate (any index; matched to the hour).
    incoming_reference : float, optional
        Reference monitor rate (default: the monitor's mean over the station's period).
    cutoff_rigidity : float, optional
        Site cutoff rigidity, GV (Hawdon rigidity scaling with ``monitor_rigidity``).
    monitor_rigidity : float, optional
        Monitor cutoff rigidity, GV (Jungfraujoch: 4.49).
    pressure_reference : float, optional
        hPa (default 1013.25 as COSMOS-Europe).
    count_range : (float, float), optional
        Plausible raw cph (CE-PROC: 50–10000; high-altitude sites count more).
    porosity : float, optional
        Flag ``POROSITY_EXCESS`` above it.
    smooth_hours : int, optional
        Moving-mean window in hours (default 24; 1 disables).

    Returns
    -------
    pandas.DataFrame
        Hourly ``sm``, ``sm_std``, ``counts`` (corrected, smoothed), ``counts_raw``,
        ``f_pressure``, ``f_humidity``, ``f_incoming`` and ``flag``.
    """
    corrected = _correct_counts(
        raw_cph, pressure=pressure, abs_humidity=abs_humidity, incoming=incoming,
        incoming_reference=incoming_reference, cutoff_rigidity=cutoff_rigidity, monitor_rigidity=monitor_rigidity,
        pressure_reference=pressure_reference, count_range=count_range, smooth_hours=smooth_hours,
    )  # fmt: skip
    return _corrected_to_sm(corrected, n0, bulk_density, lattice_water, soc, porosity)


def _correct_counts(
    raw_cph: pd.Series,
    *,
    pressure: pd.Series | None = None,
    abs_humidity: pd.Series | None = None,
    incoming: pd.Series | None = None,
    incoming_reference: float | None = None,
    cutoff_rigidity: float | None = None,
    monitor_rigidity: float = 4.49,
    pressure_reference: float = 1013.25,
    count_range: tuple[float, float] = (50.0, 10000.0),
    smooth_hours: int = 24,
) -> pd.DataFrame:
    """Steps 1–2 and the smoothing of :func:`counts_to_sm` (no N0 needed).

    Returns hourly ``counts`` (corrected, smoothed), ``counts_raw``, ``f_pressure``,
    ``f_humidity``, ``f_incoming``, ``flag`` and ``_n_hours`` (hours in each smoothing
    window, for the uncertainty), so that N0 can be calibrated on the corrected counts
    before :func:`_corrected_to_sm` converts them.
    """
    if not isinstance(raw_cph.index, pd.DatetimeIndex) or raw_cph.index.tz is None:
        raise ValidationError("raw_cph should have a timezone-aware DatetimeIndex")
    lo, hi = count_range
    if not 0 <= lo < hi:
        raise ConfigError(f"count_range should be 0 <= low < high, got {count_range}")
    frame = pd.DataFrame({"raw": raw_cph.astype(np.float64)})
    if pressure is not None:
        frame["p"] = pressure.astype(np.float64)
    if abs_humidity is not None:
        frame["h"] = abs_humidity.astype(np.float64)
    hourly = frame.resample("1h").mean()
    flag = pd.Series(0, index=hourly.index, dtype=np.int64)
    raw = hourly["raw"]
    extreme = raw.notna() & ((raw < lo) | (raw > hi))
    flag[extreme] |= int(QC.EXTREME_COUNTS)
    raw = raw.where(~extreme)
    w = smooth_hours if smooth_hours > 1 else 24
    mean24 = raw.rolling(w, center=True, min_periods=max(1, w // 2)).mean()
    sum24 = raw.rolling(w, center=True, min_periods=max(1, w // 2)).sum()
    outlier = raw.notna() & ((raw - mean24).abs() > 2.0 * np.sqrt(sum24))
    flag[outlier] |= int(QC.OUTLIER)
    raw = raw.where(~outlier)

    fp = pd.Series(1.0, index=hourly.index)
    if "p" in hourly:
        fp = pd.Series(nt.pressure_correction(hourly["p"].to_numpy(), pressure_reference), index=hourly.index)
        missing = hourly["p"].isna() & raw.notna()
        flag[missing] |= int(QC.NO_CORRECTION)
    fh = pd.Series(1.0, index=hourly.index)
    if "h" in hourly and hourly["h"].notna().any():
        h = hourly["h"]
        filled = h.isna() & raw.notna()
        flag[filled] |= int(QC.GAPFILLED_MET)
        fh = pd.Series(nt.humidity_correction(h.fillna(h.mean()).to_numpy()), index=hourly.index)
    fi = pd.Series(1.0, index=hourly.index)
    if incoming is not None:
        inc = incoming.sort_index().resample("1h").mean().reindex(hourly.index)
        if inc.notna().any():
            ref = float(incoming_reference) if incoming_reference is not None else float(inc.mean())
            rc = (cutoff_rigidity, monitor_rigidity) if cutoff_rigidity is not None else (None, None)
            fi = pd.Series(nt.incoming_correction(inc.to_numpy(), ref, *rc), index=hourly.index)
            gaps = inc.isna() & raw.notna()
            if gaps.any():
                log.warning("incoming-flux series misses %d of %d counted hours: f_i = 1 there",
                            int(gaps.sum()), int(raw.notna().sum()))  # fmt: skip
                fi = fi.fillna(1.0)
        else:
            log.warning("incoming-flux series does not cover %s…%s: no incoming correction",
                        hourly.index[0], hourly.index[-1])  # fmt: skip
    corrected = raw * fp * fh * fi
    if smooth_hours > 1:
        smooth = corrected.rolling(smooth_hours, center=True, min_periods=smooth_hours // 2).mean()
        n_in = corrected.notna().astype(float).rolling(smooth_hours, center=True, min_periods=1).sum()
    else:
        smooth, n_in = corrected, pd.Series(1.0, index=hourly.index)
    smooth = smooth.where(corrected.notna())  # no value where the hour itself is bad
    return pd.DataFrame(
        {"counts": smooth.to_numpy(), "counts_raw": hourly["raw"].to_numpy(), "f_pressure": fp.to_numpy(),
         "f_humidity": fh.to_numpy(), "f_incoming": fi.to_numpy(), "flag": flag.to_numpy(),
         "_n_hours": n_in.to_numpy()},
        index=hourly.index,
    )  # fmt: skip


def _corrected_to_sm(
    corrected: pd.DataFrame, n0: float, bulk_density: float, lattice_water: float, soc: float,
    porosity: float | None,
) -> pd.DataFrame:  # fmt: skip
    """Step 3 of :func:`counts_to_sm`: θ and its uncertainty from :func:`_correct_counts` output."""
    out = corrected.drop(columns="_n_hours")
    n = corrected["counts"].to_numpy()
    f = (corrected["f_pressure"] * corrected["f_humidity"] * corrected["f_incoming"]).to_numpy()
    # Poisson σ of a mean over n_hours hours, carried through the correction factors
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma_n = np.sqrt(n / np.maximum(corrected["_n_hours"].to_numpy(), 1.0) * f)
    out.insert(0, "sm_std", nt.theta_uncertainty(n, sigma_n, n0, bulk_density))
    out.insert(0, "sm", nt.counts_to_theta(n, n0, bulk_density, lattice_water, soc))
    if porosity is not None and np.isfinite(porosity):
        excess = out["sm"] > porosity
        out.loc[excess, "flag"] |= int(QC.POROSITY_EXCESS)
    return out


def _calibrated_n0(
    counts: pd.Series, dates: Sequence[Any], theta_total_g: Sequence[float], where: str, max_days: int = 7
) -> tuple[float, list[dict[str, Any]]]:
    """N0 from corrected counts on calibration days (nearest valid day within ``max_days``)."""
    daily = counts.resample("1D").mean().dropna()
    if daily.empty:
        raise DataError(f"{where}: no valid counts to calibrate N0")
    rows = []
    for d, tw in zip(dates, theta_total_g, strict=True):
        day = pd.Timestamp(d).tz_localize("UTC") if pd.Timestamp(d).tzinfo is None else pd.Timestamp(d)
        day = day.floor("D")
        k = int(abs(daily.index - day).argmin())
        gap = abs(daily.index[k] - day)
        if gap > pd.Timedelta(days=max_days):
            log.warning("%s: no counts within %d days of calibration day %s; campaign skipped", where, max_days, day.date())
            continue
        n0 = nt.calibrate_n0(float(daily.iloc[k]), float(tw))
        rows.append({"date": day.date(), "counts_day": daily.index[k].date(), "counts": float(daily.iloc[k]),
                     "theta_total_g": float(tw), "n0": float(n0)})  # fmt: skip
    if not rows:
        raise DataError(f"{where}: no calibration campaign has counts within {max_days} days")
    return float(np.mean([r["n0"] for r in rows])), rows


# ======================================================================================
# helpers for readers
# ======================================================================================
def _norm(name: str) -> str:
    """Column key: lower case, units in brackets and non-alphanumerics dropped."""
    s = re.sub(r"\(.*?\)|\[.*?\]", "", str(name))
    return re.sub(r"[^0-9a-z]", "", s.lower())


def _parse_times(values: pd.Series, path: Path, column: str, utc: bool = True, fmt: str | None = None) -> pd.DatetimeIndex:
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
        raise DataError(f"{path}: missing column(s) {', '.join(map(repr, missing))}; "
                        f"found {', '.join(map(str, df.columns))}")  # fmt: skip


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# ======================================================================================
# COSMOS-Europe revision 1
# ======================================================================================
_CE_GENERAL = {
    "station": "name", "country": "country", "affiliation": "affiliation", "detectortyp": "detector",
    "detectortype": "detector", "latitude": "lat", "longitude": "lon", "altitude": "elevation",
    "mainlanduse": "land_cover", "timeperiodstart": "start", "timeperiodend": "end",
}  # fmt: skip
_CE_ADDITIONAL = {
    "porosity": "porosity", "bulkdensity": "bulk_density", "soilorganiccarbon": "soc",
    "latticewater": "lattice_water", "cutoffrigidity": "cutoff_rigidity", "n0": "n0",
    "meanrawepithermalneutrons": "mean_raw_counts", "meancorrectedepithermalneutrons": "mean_corrected_counts",
    "meansoilmoisture": "mean_sm", "soilmoisturerange": "sm_range", "meanfootprintdepth": "mean_d86",
    "meanfootprintradius": "mean_r86", "references": "reference",
}  # fmt: skip
_CE_INDEX = ("filename", "stationid", "station")
_CE_SERIES = {
    "SoilMoisture_volumetric_MovAvg24h": "sm",
    "SoilMoisture_volumetric_MovAvg24h_std": "sm_std",
    "NeutronCount_Epithermal_MovAvg24h_corrected": "counts",
    "NeutronCount_Epithermal_Cum1h": "counts_raw",
    "AirHumidity_gapfilled": "abs_humidity",
    "AirPressure": "pressure",
    "AirTemperature": "air_temperature",
    "AirHumidity_Relative": "rel_humidity",
    "Precipitation": "precipitation",
    "Footprint_Radius_m": "r86",
    "Footprint_Depth_m": "d86",
    "Biomass": "biomass",
}
_CE_FLAGS = {
    "Flag_Extreme_Counts": QC.EXTREME_COUNTS,
    "Flag_Snow_ERA5": QC.SNOW,
    "Flag_Porosity_Excess": QC.POROSITY_EXCESS,
    "Flag_AirPressure_ERA5": QC.GAPFILLED_MET,
    "Flag_AirHumidity_ERA5": QC.GAPFILLED_MET,
}


def _find_table(folder: Path, stem: str) -> Path:
    """``General_ information_rev1.csv``, ``General_information_rev1.csv`` or ``General_information.csv``."""
    want = _norm(stem)
    hits = sorted(p for p in folder.glob("*.csv") if _norm(p.stem).removesuffix("rev1") == want)
    if not hits:
        raise DataError(f"{folder}: no {stem} table (looked for {stem}[_rev1].csv, also with a space after the '_')")
    return hits[0]


def _ce_table(path: Path, mapping: Mapping[str, str]) -> pd.DataFrame:
    df = _read_table(path, encoding="latin-1", dtype=str)
    df.columns = [str(c).strip() for c in df.columns]
    keys = {_norm(c): c for c in df.columns}
    idx = next((keys[k] for k in _CE_INDEX if k in keys), None)
    if idx is None:
        raise DataError(f"{path}: no station id column ('File name', 'Station ID' or 'StationID')")
    df = df.dropna(subset=[idx])
    df[idx] = df[idx].str.strip()
    df = df[df[idx] != ""].set_index(idx)
    df.index.name = "station"
    out = pd.DataFrame(index=df.index)
    for c in df.columns:
        k = _norm(c)
        # "Station/Country" in the additional table is a label, not the index
        if k in mapping and mapping[k] not in out:
            out[mapping[k]] = df[c].str.strip()
    return out


def read_cosmos_europe_metadata(folder: PathLike) -> pd.DataFrame:
    """The COSMOS-Europe general + additional information tables joined on station id.

    Accepts the revision-1 names (``General_ information_rev1.csv``,
    ``Additional_information_rev1.csv``, index ``File name`` / ``Station ID``, columns
    like ``Latitude (°)``, ``Bulk density*(g/cm3)``) and the plain names and spellings
    (``General_information.csv``, ``StationID``, ``Bulkdensity``, ``CutoffRigidity``).
    Latin-1 encoded.

    Returns
    -------
    pandas.DataFrame
        Indexed by station id, columns ``name, country, lat, lon, elevation, land_cover,
        porosity, bulk_density, soc, lattice_water, cutoff_rigidity, n0, mean_raw_counts,
        mean_corrected_counts, mean_sm, …`` (numbers as float; NaN where absent, e.g.
        a station only in one of the two tables).
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    gen = _ce_table(_find_table(root, "General_information"), _CE_GENERAL)
    add = _ce_table(_find_table(root, "Additional_information"), _CE_ADDITIONAL)
    meta = gen.join(add, how="outer")
    for c in ("lat", "lon", "elevation", "porosity", "bulk_density", "soc", "lattice_water", "cutoff_rigidity",
              "n0", "mean_raw_counts", "mean_corrected_counts", "mean_sm", "mean_d86", "mean_r86"):  # fmt: skip
        if c in meta:
            meta[c] = pd.to_numeric(meta[c].str.replace(",", ".", regex=False), errors="coerce")
    return meta


def _station_from_meta(sid: str, meta: pd.DataFrame, data: pd.DataFrame, source: str, network: str) -> Station:
    m = meta.loc[sid]
    return Station(
        id=sid, lat=_float(m.get("lat")), lon=_float(m.get("lon")), data=data,
        elevation=_float(m.get("elevation")), bulk_density=_float(m.get("bulk_density")),
        lattice_water=_float(m.get("lattice_water")) if np.isfinite(_float(m.get("lattice_water"))) else 0.0,
        soc=_float(m.get("soc")) if np.isfinite(_float(m.get("soc"))) else 0.0,
        n0=_float(m.get("n0")), porosity=_float(m.get("porosity")),
        cutoff_rigidity=_float(m.get("cutoff_rigidity")), name=str(m.get("name") or ""),
        network=network, land_cover=str(m.get("land_cover") or ""), source=source,
        extra={k: m[k] for k in ("mean_raw_counts", "mean_corrected_counts", "mean_sm", "mean_d86", "mean_r86")
               if k in m.index},
    )  # fmt: skip


def _exclude_or_raise(strict: bool, exclusions: list[Exclusion], station: str, reason: str, source: str,
                      n: int = 0) -> None:  # fmt: skip
    if strict:
        raise DataError(reason if reason.startswith(f"station {station} ") else f"{source}: station {station}: {reason}")
    log.warning("%s: station %s excluded: %s", source, station, reason)
    exclusions.append(Exclusion(station, reason, source, n))


def read_cosmos_europe(
    folder: PathLike, stations: Iterable[str] | None = None, *, strict: bool = False
) -> StationSet:
    """Read a COSMOS-Europe revision-1 folder (Bogena et al. 2022; SCIENCE.md §5.2).

    Layout::

        folder/
        ├── General_ information_rev1.csv       (or General_information[_rev1].csv)
        ├── Additional_information_rev1.csv     (or Additional_information.csv)
        └── processed_crns_data_and_diagnostics_rev1/
            ├── SEC001.csv                      hourly, index "DateTime_utc"
            └── …

    ``SoilMoisture_volumetric_MovAvg24h`` becomes ``sm`` (with ``_std``),
    ``AirHumidity_gapfilled`` ``abs_humidity``, footprint radius/depth ``r86``/``d86``;
    ``Flag_Extreme_Counts``, ``Flag_Snow_ERA5``, ``Flag_Porosity_Excess`` set the
    matching :class:`QC` bits, the ERA5 gap-fill flags ``GAPFILLED_MET``.

    Parameters
    ----------
    folder : path
        The revision-1 root.
    stations : iterable of str, optional
        Station ids to read (default all files).
    strict : bool, optional
        Raise on a station without metadata/coordinates instead of excluding it.

    Returns
    -------
    StationSet
        Stations with metadata; exclusions listed in :attr:`StationSet.exclusions`.
    """
    root = Path(folder)
    meta = read_cosmos_europe_metadata(root)
    series_dir = next((d for d in (root / "processed_crns_data_and_diagnostics_rev1",
                                   root / "processed_crns_data_and_diagnostics") if d.is_dir()), None)  # fmt: skip
    if series_dir is None:
        raise DataError(f"{root}: no processed_crns_data_and_diagnostics_rev1/ folder with station CSVs "
                        "(use read_cosmos_europe_metadata for the tables alone)")  # fmt: skip
    files = {p.stem.strip(): p for p in sorted(series_dir.glob("*.csv"))}
    wanted = list(files) if stations is None else list(stations)
    out: list[Station] = []
    excl: list[Exclusion] = []
    for sid in wanted:
        if sid not in files:
            _exclude_or_raise(strict, excl, sid, "no time-series file", str(series_dir))
            continue
        path = files[sid]
        data = _read_cosmos_series(path)
        if sid not in meta.index:
            _exclude_or_raise(strict, excl, sid, "not in the general/additional information tables", str(path),
                              int(data["sm"].notna().sum()))  # fmt: skip
            continue
        try:
            st = _station_from_meta(sid, meta, data, str(path), "COSMOS-Europe")
        except ValidationError as exc:
            _exclude_or_raise(strict, excl, sid, str(exc), str(path), int(data["sm"].notna().sum()))
            continue
        st.processing.append("COSMOS-Europe rev1 processed series (Bogena et al. 2022)")
        out.append(st)
    log.info("COSMOS-Europe %s: %d stations read, %d excluded", root, len(out), len(excl))
    return StationSet(out, excl)


def _read_cosmos_series(path: Path) -> pd.DataFrame:
    df = _read_table(path, encoding="latin-1")
    df.columns = [str(c).strip() for c in df.columns]
    tcol = next((c for c in df.columns if _norm(c) in ("datetimeutc", "datetime")), None)
    if tcol is None:
        raise DataError(f"{path}: missing time column 'DateTime_utc'")
    _require(df, ["SoilMoisture_volumetric_MovAvg24h"], path)
    idx = _parse_times(df[tcol], path, tcol)
    out = pd.DataFrame(index=idx)
    for src, dst in _CE_SERIES.items():
        if src in df.columns:
            out[dst] = pd.to_numeric(df[src], errors="coerce").to_numpy()
    flag = np.zeros(len(df), dtype=np.int64)
    for src, bit in _CE_FLAGS.items():
        if src in df.columns:
            f = pd.to_numeric(df[src], errors="coerce").fillna(0).to_numpy() != 0
            flag[f] |= int(bit)
    out["flag"] = flag
    if out.index.has_duplicates:
        raise DataError(f"{path}: duplicate time stamp {out.index[out.index.duplicated()][0]}")
    return _flag_range(out.sort_index(), str(path))


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
    p = Path(path)
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
            excl.append(Exclusion(f.stem, str(exc), str(f)))
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
        raise DataError(f"{path}: line 1: ISMN header should have at least 8 fields "
                        "(CSE network station lat lon elevation depth_from depth_to [sensor])")  # fmt: skip
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
    st = Station(id=sid, lat=lat, lon=lon, data=data, elevation=elev, depth=(d0, d1), name=station,
                 network=network, source=str(path), extra={"sensor": sensor,
                 "ismn_flags": pd.Series(flags).value_counts().to_dict()})  # fmt: skip
    st.processing.append(f"ISMN header+values; good flags {sorted(good)}")
    return st


# ======================================================================================
# generic CSV
# ======================================================================================
_META_COLUMNS = ("lat", "lon", "elevation", "bulk_density", "lattice_water", "soc", "n0", "porosity",
                 "cutoff_rigidity", "name", "network", "land_cover")  # fmt: skip


def read_csv(
    path: PathLike,
    *,
    metadata: PathLike | pd.DataFrame | Mapping[str, Any] | None = None,
    station: str | None = None,
    columns: Mapping[str, str] | None = None,
    time_column: str = "time",
    time_format: str | None = None,
    sep: str = ",",
    encoding: str = "utf-8",
    timezone: str = "UTC",
    neutron_monitor: pd.Series | PathLike | None = None,
    count_range: tuple[float, float] = (50.0, 10000.0),
    strict: bool = False,
) -> StationSet:
    """Read station data from a documented generic CSV.

    **Format.** One row per time step; a time column (ISO 8601; UTC unless it carries an
    offset or ``timezone`` says otherwise) and canonical columns (after renaming with
    ``columns``): ``sm`` (m³ m⁻³) *or* ``counts_raw`` (raw epithermal cph), and any of
    ``pressure`` (hPa), ``abs_humidity`` (g m⁻³), ``rel_humidity`` (%),
    ``air_temperature`` (°C), ``precipitation`` (mm), ``flag`` (:class:`QC` bits), plus
    any numeric extras. Several stations go in one file with a ``station`` column;
    otherwise the file is one station named ``station`` (default: the file stem).

    **Metadata.** ``metadata`` is a CSV path or DataFrame with a ``station`` column and
    ``lat``, ``lon`` (required) and optional ``elevation``, ``bulk_density``,
    ``lattice_water``, ``soc``, ``n0``, ``porosity``, ``cutoff_rigidity``, ``name``,
    ``network``, ``land_cover``; or, for a single station, a dict of those.

    Stations with ``counts_raw`` and no ``sm`` are converted by :func:`counts_to_sm`
    (needs ``n0`` and ``bulk_density``; absolute humidity from relative humidity and
    temperature when only those are given).

    Parameters
    ----------
    path : path
    metadata : path, DataFrame or dict
    station : str, optional
        Station id of a single-station file.
    columns : dict, optional
        File column → canonical name.
    time_column : str, optional
        Name of the time column in the file (default ``"time"``).
    time_format : str, optional
        strftime format of the times (default: ISO 8601 / inferred).
    sep, encoding : str, optional
    timezone : str, optional
        Zone of naive times (default UTC).
    neutron_monitor : Series or path, optional
        Incoming-flux series (e.g. :func:`read_nmdb`) for count conversion.
    count_range : (float, float), optional
        Plausible raw cph for count conversion.
    strict : bool, optional
        Raise on a station without coordinates instead of excluding it.

    Raises
    ------
    DataError
        Missing time or soil-moisture/count column, unparseable time (file, row and value
        named), missing metadata for a count conversion.

    Examples
    --------
    >>> ss = read_csv("site.csv", metadata={"lat": 50.87, "lon": 6.45})   # doctest: +SKIP
    """
    p = Path(path)
    df = _read_table(p, sep=sep, encoding=encoding)
    df.columns = [str(c).strip() for c in df.columns]
    if columns:
        df = df.rename(columns=dict(columns))
    _require(df, [time_column], p)
    if "sm" not in df.columns and "counts_raw" not in df.columns:
        raise DataError(f"{p}: missing column 'sm' (soil moisture, m3 m-3) or 'counts_raw' (raw cph); "
                        f"found {', '.join(df.columns)}; map yours with columns={{...}}")  # fmt: skip
    naive = _parse_times(df[time_column], p, time_column, utc=False, fmt=time_format)
    if naive.tz is None:
        try:
            idx = naive.tz_localize(timezone).tz_convert("UTC")
        except Exception as exc:
            raise ConfigError(f"{p}: cannot localise times to {timezone!r}: {exc}") from exc
    else:
        idx = naive.tz_convert("UTC")
    df = df.drop(columns=[time_column])
    df.index = idx
    meta = _generic_metadata(metadata, p)
    nm = read_nmdb(neutron_monitor) if isinstance(neutron_monitor, (str, os.PathLike)) else neutron_monitor
    groups = df.groupby("station", sort=True) if "station" in df.columns else [(station or p.stem, df)]
    out, excl = [], []
    for sid, g in groups:
        sid = str(sid)
        g = g.drop(columns=["station"], errors="ignore")
        m = meta.get(sid, meta.get("*", {}))
        if not m:
            _exclude_or_raise(strict, excl, sid, "no metadata (lat, lon)", str(p), len(g))
            continue
        try:
            out.append(_generic_station(sid, g, m, p, nm, count_range))
        except ValidationError as exc:
            _exclude_or_raise(strict, excl, sid, str(exc), str(p), len(g))
    return StationSet(out, excl)


def _generic_metadata(metadata: Any, p: Path) -> dict[str, dict[str, Any]]:
    if metadata is None:
        return {}
    if isinstance(metadata, Mapping):
        return {"*": dict(metadata)}
    m = metadata if isinstance(metadata, pd.DataFrame) else _read_table(Path(metadata))
    where = "metadata" if isinstance(metadata, pd.DataFrame) else str(metadata)
    if "station" not in m.columns:
        raise DataError(f"{where}: metadata needs a 'station' column")
    dup = m["station"][m["station"].duplicated()]
    if len(dup):
        raise DataError(f"{where}: station {dup.iloc[0]!r} listed twice")
    return {str(r["station"]): {k: r[k] for k in _META_COLUMNS if k in m.columns} for _, r in m.iterrows()}


def _generic_station(sid: str, g: pd.DataFrame, m: Mapping[str, Any], p: Path, nm: pd.Series | None,
                     count_range: tuple[float, float]) -> Station:  # fmt: skip
    if g.index.has_duplicates:
        raise DataError(f"{p}: station {sid}: duplicate time stamp {g.index[g.index.duplicated()][0]}")
    g = g.sort_index().apply(pd.to_numeric, errors="coerce")
    g["flag"] = g["flag"].fillna(0).astype(np.int64) if "flag" in g else 0
    g = _flag_range(g, f"{p} station {sid}")
    kw = {k: m[k] for k in _META_COLUMNS if k in m and not (isinstance(m[k], float) and np.isnan(m[k]))}
    lat, lon = kw.pop("lat", math.nan), kw.pop("lon", math.nan)
    processing = [f"generic CSV {p.name}"]
    if "sm" not in g.columns or g["sm"].isna().all():
        if "counts_raw" not in g.columns:
            raise DataError(f"{p}: station {sid}: no 'sm' values and no 'counts_raw' to convert")
        for need in ("n0", "bulk_density"):
            if not np.isfinite(_float(kw.get(need))):
                raise DataError(f"{p}: station {sid}: converting counts needs {need!r} in the metadata")
        if "abs_humidity" not in g and {"rel_humidity", "air_temperature"} <= set(g.columns):
            g["abs_humidity"] = nt.absolute_humidity(g["rel_humidity"].to_numpy(), g["air_temperature"].to_numpy())
        conv = counts_to_sm(
            g["counts_raw"], n0=float(kw["n0"]), bulk_density=float(kw["bulk_density"]),
            lattice_water=_float(kw.get("lattice_water", 0.0)), soc=_float(kw.get("soc", 0.0)),
            pressure=g.get("pressure"), abs_humidity=g.get("abs_humidity"), incoming=nm,
            cutoff_rigidity=_float(kw["cutoff_rigidity"]) if "cutoff_rigidity" in kw else None,
            count_range=count_range, porosity=_float(kw.get("porosity", math.nan)),
        )  # fmt: skip
        g = _merge_hourly(conv, g)
        processing.append("counts → sm (counts_to_sm)")
    for k in ("name", "network", "land_cover"):
        kw[k] = str(kw.get(k, ""))
    for k in ("elevation", "bulk_density", "n0", "porosity", "cutoff_rigidity", "lattice_water", "soc"):
        if k in kw:
            kw[k] = _float(kw[k])
    st = Station(id=sid, lat=lat, lon=lon, data=g, source=str(p), **kw)
    st.processing.extend(processing)
    return st


def _merge_hourly(conv: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
    """Converted hourly frame + the other (met, TDR …) columns of the raw frame averaged hourly."""
    rest = raw.drop(columns=[c for c in ("sm", "sm_std", "counts", "counts_raw", "flag") if c in raw.columns])
    flag_raw = raw["flag"].resample("1h").agg(lambda x: int(np.bitwise_or.reduce(x.to_numpy())) if len(x) else 0)
    if len(rest.columns):
        r = rest.resample("1h")
        # summed columns keep NaN for an hour without any value: a missing gauge is not a dry hour
        hourly = pd.DataFrame({c: (r[c].sum(min_count=1) if c in _SUMMED else r[c].mean()) for c in rest.columns})
    else:
        hourly = pd.DataFrame(index=conv.index)
    out = conv.join(hourly, how="left")
    out["flag"] = out["flag"].to_numpy() | flag_raw.reindex(out.index, fill_value=0).to_numpy()
    return out


# ======================================================================================
# Roaring Fork (USGS, Colorado)
# ======================================================================================
_RF_COLUMNS = {
    "BaroPress": "pressure", "airT": "air_temperature", "airRH": "rel_humidity",
    "SWC_5": "tdr_5", "SWC_10": "tdr_10", "SWC_20": "tdr_20", "SWC_50": "tdr_50",
    "sT_5": "soil_temperature_5", "sT_10": "soil_temperature_10", "sT_20": "soil_temperature_20",
    "sT_50": "soil_temperature_50",
}  # fmt: skip
#: TDR sensor depths of the Roaring Fork stations, cm.
ROARING_FORK_TDR_DEPTHS = (5.0, 10.0, 20.0, 50.0)


def read_roaring_fork(
    folder: PathLike,
    *,
    tube: str = "N1_cts",
    sample_seconds: float = 1800.0,
    count_range: tuple[float, float] = (1000.0, 40000.0),
    frozen_soil_temperature: float = 1.0,
    n0: Mapping[str, float] | None = None,
    strict: bool = False,
) -> StationSet:
    """Read the USGS Roaring Fork (Colorado) CRNS network and convert counts to soil moisture.

    Files (see ``SOURCE.md``): ``data_release_2024/<site>_<STAID>_v1.csv`` (30 min, UTC:
    ``BaroPress`` hPa, ``airT`` °C, ``airRH`` %, ``N1_cts`` … raw counts per ~1800 s
    sample, ``SWC_5/10/20/50`` TDR m³ m⁻³, ``sT_*`` soil temperature °C) and the site
    tables ``RoaringFork_CRNS_metadata.csv`` (lat/lon, land cover),
    ``data_release_2024/Network_paper_site_names.csv`` (STAID ↔ old ↔ new names) and
    ``Site_Calibration_data_summary.csv`` (ρ_b, W_lat, W_soc, elevation, calibration day
    and the footprint-weighted gravimetric total water ``Sample_total_swc_g``).

    Conversion: cph = counts × 3600 / ``sample_seconds``; :func:`counts_to_sm` with the
    COSMOS-Europe conventions (p_ref 1013.25 hPa, h_ref 0). No neutron-monitor record
    covers 2023-07…2024-09 here, so f_i = 1 (recorded in ``processing``). N0 is
    calibrated for *these* corrections from the calibration campaign (daily mean
    corrected counts of the calibration day, or the nearest valid day within 7 days):
    :math:`N_0 = N / (a_0/(w_{tot} + a_2) + a_1)`. The authors' N0 (portable-detector
    scale, McJannet–Desilets corrections) is kept in ``extra["n0_authors"]``.

    Hours with 5-cm soil temperature below ``frozen_soil_temperature`` are flagged
    :attr:`QC.SNOW` (snow cover or frozen soil: CRNS counts see snow water, TDR fails).
    TDR columns ``tdr_5 … tdr_50`` are kept for comparison.

    Parameters
    ----------
    folder : path
        The ``roaring_fork_co_usgs`` folder.
    tube : str, optional
        Count column (default ``N1_cts``, the moderated tube every site has).
    sample_seconds : float, optional
        Counting interval of one sample, s (default 1800).
    count_range : (float, float), optional
        Plausible raw cph at these 2000–2900 m sites.
    frozen_soil_temperature : float, optional
        °C threshold of the snow/frozen flag.
    n0 : dict, optional
        Site → N0 (cph, these corrections) overriding the calibration.
    strict : bool, optional
        Raise on a site without metadata instead of excluding it.
    """
    root = Path(folder)
    rel = root / "data_release_2024"
    if not rel.is_dir():
        raise DataError(f"{root}: no data_release_2024/ folder")
    names = _read_table(rel / "Network_paper_site_names.csv", encoding="utf-8-sig", dtype=str).dropna(how="all")
    _require(names, ["STAID", "Short_name", "network_paper_new_name"], rel / "Network_paper_site_names.csv")
    names["Short_name"] = names["Short_name"].str.strip()
    cover = _read_table(root / "RoaringFork_CRNS_metadata.csv", dtype=str)
    cover.columns = [c.strip() for c in cover.columns]
    _require(cover, ["Original_ID", "Lat DD", "Long DD", "Land Cover"], root / "RoaringFork_CRNS_metadata.csv")
    cover["Original_ID"] = cover["Original_ID"].str.strip().str.replace("RF5", "RF 5")
    cal_path = root / "Site_Calibration_data_summary.csv"
    cal = _read_table(cal_path)
    _require(cal, ["NewName", "bd", "lw", "soc_water", "Elev", "CalDate", "Sample_total_swc_g"], cal_path)
    cal = cal.set_index("NewName")
    out, excl = [], []
    for f in sorted(rel.glob("*_v1.csv")):
        site, staid = f.stem.split("_")[:2]
        row = names[names["STAID"] == staid]
        if row.empty or site not in cal.index:
            _exclude_or_raise(strict, excl, site, "not in the site-name or calibration tables", str(f))
            continue
        old = row["Short_name"].iloc[0].replace("RF5", "RF 5")
        lc = cover[cover["Original_ID"] == old]
        if lc.empty:
            _exclude_or_raise(strict, excl, site, f"no coordinates for {old!r} in RoaringFork_CRNS_metadata.csv",
                              str(f))  # fmt: skip
            continue
        c = cal.loc[site]
        raw = _read_table(f)
        _require(raw, ["datetime_UTC", "BaroPress", "airT", "airRH", tube, "sT_5"], f)
        idx = _parse_times(raw["datetime_UTC"], f, "datetime_UTC")
        g = pd.DataFrame({dst: pd.to_numeric(raw[src], errors="coerce").to_numpy()
                          for src, dst in _RF_COLUMNS.items() if src in raw}, index=idx)  # fmt: skip
        g["flag"] = 0
        g = _flag_range(g, str(f))
        cph = pd.Series(pd.to_numeric(raw[tube], errors="coerce").to_numpy() * 3600.0 / sample_seconds, index=idx)
        h = pd.Series(nt.absolute_humidity(g["rel_humidity"].to_numpy(), g["air_temperature"].to_numpy()), index=idx)
        bd, lw, soc = float(c["bd"]), float(c["lw"]), float(c["soc_water"])
        corr = _correct_counts(cph, pressure=g["pressure"], abs_humidity=h, count_range=count_range)
        if n0 and site in n0:
            n0_site, calib = float(n0[site]), []
        else:
            n0_site, calib = _calibrated_n0(corr["counts"], [c["CalDate"]], [c["Sample_total_swc_g"]], str(f))
        conv = _corrected_to_sm(corr, n0_site, bd, lw, soc, porosity=1.0 - bd / 2.65)
        g["abs_humidity"] = h
        data = _merge_hourly(conv, g)
        frozen = data["soil_temperature_5"] < frozen_soil_temperature
        data.loc[frozen, "flag"] |= int(QC.SNOW)
        st = Station(
            id=site, lat=_float(lc["Lat DD"].iloc[0]), lon=_float(lc["Long DD"].iloc[0]), data=data,
            elevation=float(c["Elev"]), bulk_density=bd, lattice_water=lw, soc=soc, n0=n0_site,
            porosity=1.0 - bd / 2.65, name=old, network="USGS Roaring Fork", land_cover=str(lc["Land Cover"].iloc[0]).strip(),
            source=str(f),
            extra={"staid": staid, "calibration": calib, "tdr_depths_cm": ROARING_FORK_TDR_DEPTHS,
                   "n0_authors": _float(c.get("N0_Desilets")), "n_ratio_authors": _float(c.get("N_ratio_Des"))},
        )  # fmt: skip
        st.processing += [
            f"{tube} counts × 3600/{sample_seconds:g} s → cph; hourly mean rates",
            ("corrections: pressure (p_ref 1013.25 hPa, β 0.0076), humidity (Rosolem, h_ref 0); "
            "incoming flux not applied (no neutron-monitor record for 2023–2024 here)"),
            f"N0 = {n0_site:.1f} cph calibrated on {calib[0]['counts_day'] if calib else 'given'}",
            f"QC.SNOW where 5-cm soil temperature < {frozen_soil_temperature:g} °C",
        ]
        out.append(st)
    if not out and not excl:
        raise DataError(f"{rel}: no *_v1.csv station files")
    return StationSet(out, excl)


# ======================================================================================
# Fürstensee FSC001 (COSMOS-Europe raw hourly, neptoon example)
# ======================================================================================
def read_fuerstensee(
    path: PathLike,
    *,
    station: str = "FSC001",
    metadata: PathLike | None = None,
    neutron_monitor: PathLike | pd.Series | None = None,
    calibration: PathLike | None = None,
    count_range: tuple[float, float] = (50.0, 10000.0),
) -> StationSet:
    """Read raw hourly COSMOS-Europe counts (neptoon's ``FSC001_time_series.csv``) and convert.

    Columns: ``DateTime_utc``, ``NeutronCount_Epithermal_Cum1h`` (raw cph),
    ``AirPressure`` (hPa), ``AirTemperature``/``AirHumidity_Relative`` (°C, %; gaps
    filled from the ``_Sensor2`` columns), ``Precipitation`` (mm). Site physics come
    from the COSMOS-Europe tables (:func:`read_cosmos_europe_metadata`), the incoming
    correction from a neutron monitor (:func:`read_nmdb`, Jungfraujoch, R_c 4.49 GV,
    referenced to its mean over the station period).

    N0: with a ``calibration`` file (neptoon format: ``DateTime_utc, Profile_ID,
    Distance_to_CRNS_m, Profile_Depth_cm, SoilMoisture_g_g, DryBulkDensity_g_cm3,
    SoilOrganicCarbon_g_g, LatticeWater_g_g``) N0 is calibrated for these corrections:
    per campaign the footprint-weighted field mean
    (:func:`smengine.footprint.weighted_profile_average`) and the counts of ±12 h give
    an N0; the campaigns are averaged. Without one, the table's N0 is moved to these
    corrections by the ratio of mean corrected counts (ours / the table's).

    Parameters
    ----------
    path : path
        The time-series CSV, or the folder holding ``<station>_time_series.csv``.
    station : str, optional
        Station id in the COSMOS-Europe tables (default ``FSC001``).
    metadata : path, optional
        COSMOS-Europe tables folder (default ``../cosmos_europe_metadata`` beside the file's folder).
    neutron_monitor : path or Series, optional
        Default ``../neutron_monitors_nmdb/JUNG1_Data_UTC.TXT`` if present.
    calibration : path, optional
        Default ``<folder>/FSCD001_calibration.csv`` for FSC001 if present.
    count_range : (float, float), optional
        Plausible raw cph.
    """
    p = Path(path)
    f = p / f"{station}_time_series.csv" if p.is_dir() else p
    base = f.parent
    meta_dir = Path(metadata) if metadata is not None else base.parent / "cosmos_europe_metadata"
    meta = read_cosmos_europe_metadata(meta_dir)
    if station not in meta.index:
        raise DataError(f"{meta_dir}: station {station} not in the COSMOS-Europe tables")
    m = meta.loc[station]
    if neutron_monitor is None:
        cand = base.parent / "neutron_monitors_nmdb" / "JUNG1_Data_UTC.TXT"
        neutron_monitor = cand if cand.is_file() else None
    nm = read_nmdb(neutron_monitor) if isinstance(neutron_monitor, (str, os.PathLike)) else neutron_monitor
    if calibration is None and station == "FSC001" and (base / "FSCD001_calibration.csv").is_file():
        calibration = base / "FSCD001_calibration.csv"

    raw = _read_table(f)
    _require(raw, ["DateTime_utc", "NeutronCount_Epithermal_Cum1h", "AirPressure"], f)
    idx = _parse_times(raw["DateTime_utc"], f, "DateTime_utc")

    def col(name: str) -> pd.Series:
        v = pd.to_numeric(raw[name], errors="coerce") if name in raw else pd.Series(np.nan, index=raw.index)
        alt = name + "_Sensor2"
        if alt in raw:
            v = v.fillna(pd.to_numeric(raw[alt], errors="coerce"))
        return pd.Series(v.to_numpy(), index=idx)

    g = pd.DataFrame({"pressure": col("AirPressure"), "air_temperature": col("AirTemperature"),
                      "rel_humidity": col("AirHumidity_Relative"), "precipitation": col("Precipitation")})  # fmt: skip
    g["flag"] = 0
    g = _flag_range(g, str(f))
    g["abs_humidity"] = nt.absolute_humidity(g["rel_humidity"].to_numpy(), g["air_temperature"].to_numpy())
    cph = col("NeutronCount_Epithermal_Cum1h")
    bd, lw, soc, rc = (float(m[k]) for k in ("bulk_density", "lattice_water", "soc", "cutoff_rigidity"))
    nm_ref = float(nm[idx[0] : idx[-1]].mean()) if nm is not None else None
    corr = _correct_counts(cph, pressure=g["pressure"], abs_humidity=g["abs_humidity"], incoming=nm,
                           incoming_reference=nm_ref, cutoff_rigidity=rc, count_range=count_range)  # fmt: skip
    if calibration is not None:
        n0, calib = _fsc_calibration(Path(calibration), corr, g)
        how = f"N0 = {n0:.1f} cph calibrated from {Path(calibration).name} ({len(calib)} campaigns)"
    else:
        n0 = float(m["n0"]) * float(corr["counts"].mean()) / float(m["mean_corrected_counts"])
        calib = []
        how = f"N0 = {n0:.1f} cph: table N0 {m['n0']:g} × mean corrected counts ours/table"
    conv = _corrected_to_sm(corr, n0, bd, lw, soc, porosity=float(m["porosity"]))
    data = _merge_hourly(conv, g)
    st = _station_from_meta(station, meta, data, str(f), "COSMOS-Europe")
    st = replace(st, n0=n0, extra={**st.extra, "n0_table": float(m["n0"]), "calibration": calib,
                                   "neutron_monitor_reference": nm_ref})  # fmt: skip
    st.processing += [
        "raw hourly counts; T/RH gaps filled from sensor 2",
        ("corrections: pressure (p_ref 1013.25 hPa), humidity (h_ref 0), incoming (Hawdon 2014, "
        f"R_c {rc:g} GV vs 4.49 GV, I_ref = monitor mean {nm_ref})"),
        how,
    ]
    return StationSet([st])


def _fsc_calibration(path: Path, corr: pd.DataFrame, g: pd.DataFrame) -> tuple[float, list[dict[str, Any]]]:
    from smengine.footprint import weighted_profile_average

    c = _read_table(path)
    need = ["DateTime_utc", "Profile_ID", "Distance_to_CRNS_m", "Profile_Depth_cm", "SoilMoisture_g_g",
            "DryBulkDensity_g_cm3", "SoilOrganicCarbon_g_g", "LatticeWater_g_g"]  # fmt: skip
    _require(c, need, path)
    c["t"] = _parse_times(c["DateTime_utc"], path, "DateTime_utc", fmt="%d.%m.%Y %H:%M")
    bd = float(c["DryBulkDensity_g_cm3"].mean())
    lw = float(c["LatticeWater_g_g"].mean())
    soc = float(c["SoilOrganicCarbon_g_g"].mean())
    rows = []
    for t, camp in c.groupby("t"):
        win = slice(t - pd.Timedelta("12h"), t + pd.Timedelta("12h"))
        n = float(corr["counts"][win].mean())
        if not np.isfinite(n):
            log.warning("%s: no counts around campaign %s; skipped", path, t)
            continue
        profiles = list(camp.groupby("Profile_ID"))
        m = max(len(pp) for _, pp in profiles)
        depth = np.full((len(profiles), m), np.nan)
        theta = depth.copy()
        dist = np.empty(len(profiles))
        for i, (_, pp) in enumerate(profiles):
            depth[i, : len(pp)] = pp["Profile_Depth_cm"].to_numpy()
            theta[i, : len(pp)] = (pp["SoilMoisture_g_g"] * pp["DryBulkDensity_g_cm3"]).to_numpy()
            dist[i] = pp["Distance_to_CRNS_m"].iloc[0]
        hum = float(g["abs_humidity"][win].mean())
        pres = float(g["pressure"][win].mean())
        th = float(weighted_profile_average(dist, depth, theta, hum, bd, pres))  # type: ignore[arg-type]
        tw = th / bd + lw + soc
        rows.append({"date": t, "theta_v": th, "theta_total_g": tw, "counts": n, "n0": float(nt.calibrate_n0(n, tw))})
    if not rows:
        raise DataError(f"{path}: no calibration campaign overlaps the counts")
    return float(np.mean([r["n0"] for r in rows])), rows
