"""The documented generic CSV: soil moisture, raw counts or both, with a station table."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine import neutrons as nt
from smengine.errors import ConfigError, DataError, DataLossWarning, QualityWarning, ValidationError
from smengine.stations._core import QC, Exclusion, PathLike, Station, StationSet
from smengine.stations._counts import (
    _corrected_to_sm,
    _flag_range,
    _merge_hourly,
    counts_to_sm,
    mask_frozen,
    read_nmdb,
)
from smengine.stations._parse import (
    _exclude_or_raise,
    _float,
    _parse_times,
    _read_table,
    _require,
)
from smengine.stations._units import check_count_level, check_units

# ======================================================================================
# generic CSV
# ======================================================================================
_META_COLUMNS = (
    "lat",
    "lon",
    "elevation",
    "bulk_density",
    "lattice_water",
    "soc",
    "n0",
    "porosity",
    "cutoff_rigidity",
    "name",
    "network",
    "land_cover",
)


#: Values that stand for "missing" in station files (turned to NaN and counted).
SENTINELS = (-9999.0, -999.0, -99.99, 9999.0, -9999.9, 99999.0, -99999.0)


def read_csv(
    path: PathLike | pd.DataFrame,
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
    sentinels: tuple[float, ...] = SENTINELS,
    stations: str | Sequence[str] | None = None,
    snow_mask: bool = True,
    r2_n0: float = nt.BWE_R2_N0,
    count_seconds: float | Mapping[str, float] | None = None,
) -> StationSet:
    """Read station data from a documented generic CSV (or a DataFrame in that form).

    **Format.** One row per time step; a time column (ISO 8601; UTC unless it carries an
    offset or ``timezone`` says otherwise) and canonical columns (after renaming with
    ``columns``): ``sm`` (m³ m⁻³) *or* ``counts_raw`` (raw epithermal cph) *or*
    ``counts_corrected`` (epithermal cph already corrected for pressure, humidity and
    incoming flux: converted with N0 only, no factor applied twice), and any of
    ``pressure`` (hPa), ``abs_humidity`` (g m⁻³), ``rel_humidity`` (%),
    ``air_temperature`` (°C), ``soil_temperature`` or ``soil_temperature_<cm>`` (°C),
    ``precipitation`` and ``irrigation`` (mm per step), ``bwe`` (biomass water
    equivalent, kg m⁻²; campaign values, interpolated in time), ``flag`` (:class:`QC`
    bits), plus any numeric extras. Several stations go in one file with a ``station`` column;
    otherwise the file is one station named ``station`` (default: the file stem).

    **Metadata.** ``metadata`` is a CSV path or DataFrame with a ``station`` column and
    ``lat``, ``lon`` (required) and optional ``elevation``, ``bulk_density``,
    ``lattice_water``, ``soc``, ``n0``, ``porosity``, ``cutoff_rigidity``, ``name``,
    ``network``, ``land_cover``; or, for a single station, a dict of those.

    Stations with ``counts_raw`` and no ``sm`` are converted by :func:`counts_to_sm`
    (needs ``n0`` and ``bulk_density``; absolute humidity from relative humidity and
    temperature when only those are given). With a ``bwe`` column the counts are
    biomass-corrected first (:func:`smengine.neutrons.correction_bwe`, Baatz et al. 2015;
    ``r2_n0``). Lattice water and SOC missing from the metadata stay NaN on the station;
    a conversion assumes 0 g g⁻¹ for them and says so in a
    :class:`~smengine.errors.QualityWarning` (θ is then too high by ρ_b · W).

    **Snow and frozen soil** (``snow_mask``, default on): steps are flagged
    :attr:`QC.SNOW` from soil temperature (< 1 °C), else from the daily mean air
    temperature (< 0 °C) (:func:`mask_frozen`); a station with neither, and no SNOW flag
    of its own, gets a :class:`~smengine.errors.QualityWarning` that it is not masked.

    Values in :data:`SENTINELS` (−9999, −999 …; ``sentinels=``) in any numeric column are
    missing values: they become NaN, and how many per column is said in a
    :class:`~smengine.errors.DataLossWarning`.

    **Units** are checked per station and column against
    :data:`~smengine.stations.PLAUSIBILITY`, from the median (a few outliers never flip a
    unit): a temperature median above 150 is kelvin, an absolute humidity median below
    0.1 is kg m⁻³, a soil moisture (``sm``, ``tdr_<cm>``) median above 1 is percent, a
    relative humidity median at most 1 a fraction, a pressure median of 50–110 kPa or
    5·10⁴–1.1·10⁵ Pa; such columns are converted and the conversion said in one
    :class:`~smengine.errors.QualityWarning` naming station and column. A median that fits
    no known unit is a :class:`~smengine.errors.DataError`. Values outside the physical
    range (counts ≤ 0 or above 10⁶ cph included) become NaN and are counted per station
    and column in one :class:`~smengine.errors.DataLossWarning` (the steps of the
    canonical columns are also flagged :attr:`QC.OUT_OF_RANGE`). Counts converted with N0
    must be counts per hour: a median level outside 0.3–3 × N0 (counts per minute, per
    15 min …) is refused with a DataError naming the interval it suggests, unless
    ``count_seconds`` gives the counting interval.

    Parameters
    ----------
    path : path or DataFrame
        The CSV, or a DataFrame with the same columns (the time column included).
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
    sentinels : tuple of float, optional
        Missing-value markers (default :data:`SENTINELS`; ``()`` for none).
    stations : str or sequence of str, optional
        Read only these stations (an id not in the file is an error).
    snow_mask : bool, optional
        Flag snow/frozen-soil steps from temperature (default True); ``False`` leaves the
        data as given (recorded in ``processing``).
    r2_n0 : float, optional
        Biomass count reduction per kg m⁻² BWE (default 0.0053, Baatz et al. 2015).
    count_seconds : float or mapping, optional
        Counting interval of ``counts_raw`` / ``counts_corrected``, s (one number, or
        station → seconds): the counts are scaled by 3600 / ``count_seconds`` to counts per
        hour and their level is not checked. Default: counts per hour, level checked.

    Raises
    ------
    DataError
        Missing time or soil-moisture/count column, unparseable time (file, row and value
        named), missing metadata for a count conversion, a column whose median fits no
        known unit, counts whose level is not per hour (station and column named).

    Warns
    -----
    QualityWarning
        Columns converted from another unit (station, column, unit and median named).
    DataLossWarning
        Values outside the physical range set to NaN (station, column and count named);
        missing-value markers read as NaN.

    Examples
    --------
    >>> ss = read_csv("site.csv", metadata={"lat": 50.87, "lon": 6.45})   # doctest: +SKIP
    """
    if isinstance(path, pd.DataFrame):
        p, df = Path("<DataFrame>"), path.copy()
    else:
        p = Path(path).expanduser()
        df = _read_table(p, sep=sep, encoding=encoding)
    df.columns = [str(c).strip() for c in df.columns]
    if columns:
        df = df.rename(columns=dict(columns))
    _require(df, [time_column], p)
    if not {"sm", "counts_raw", "counts_corrected"} & set(df.columns):
        raise DataError(
            f"{p}: missing column 'sm' (soil moisture, m3 m-3), 'counts_raw' (raw cph) or 'counts_corrected' "
            f"(corrected cph); found {', '.join(df.columns)}; map yours with columns={{...}}"
        )
    if stations is not None:
        want = [stations] if isinstance(stations, str) else list(stations)
        have = set(df["station"].astype(str)) if "station" in df.columns else {station or p.stem}
        unknown = sorted(set(want) - have)
        if unknown:
            raise ConfigError(f"{p}: station(s) {unknown} not in the file (it has {sorted(have)[:20]})")
        if "station" in df.columns:
            df = df[df["station"].astype(str).isin(want)]
    _blank_sentinels(df, sentinels, p, skip=(time_column, "station"))
    naive = _parse_times(df[time_column], p, time_column, utc=False, fmt=time_format)
    if naive.tz is None:
        idx = _localise(naive, df["station"] if "station" in df.columns else None, timezone, p)
    else:
        idx = naive.tz_convert("UTC")
    df = df.drop(columns=[time_column])
    df.index = idx
    meta = _generic_metadata(metadata, p)
    nm = read_nmdb(neutron_monitor) if isinstance(neutron_monitor, (str, os.PathLike)) else neutron_monitor
    groups = df.groupby("station", sort=True) if "station" in df.columns else [(station or p.stem, df)]
    out: list[Station] = []
    excl: list[Exclusion] = []
    units: dict[str, list[str]] = {"converted": [], "lost": []}
    for sid, g in groups:
        sid = str(sid)
        g = g.drop(columns=["station"], errors="ignore")
        m = meta.get(sid, meta.get("*", {}))
        if not m:
            _exclude_or_raise(strict, excl, sid, "no metadata (lat, lon)", str(p), len(g))
            continue
        try:
            out.append(_generic_station(sid, g, m, p, nm, count_range, r2_n0, _seconds(count_seconds, sid), units))
        except ValidationError as exc:
            _exclude_or_raise(strict, excl, sid, str(exc), str(p), len(g), type(exc))
    _warn_units(units, p)
    _warn_assumptions(out, p, snow_mask)
    return StationSet(out, excl)


def _seconds(count_seconds: float | Mapping[str, float] | None, sid: str) -> float | None:
    """The counting interval of a station's counts (None: counts per hour, level checked)."""
    s = count_seconds.get(sid) if isinstance(count_seconds, Mapping) else count_seconds
    if s is None:
        return None
    if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
        raise ConfigError(f"count_seconds should be a positive number of seconds, got {s!r} (station {sid})")
    return float(s)


def _warn_units(units: dict[str, list[str]], p: Path) -> None:
    """One QualityWarning for the unit conversions and one DataLossWarning for the values
    outside the physical range, each naming station and column."""
    if units["converted"]:
        warnings.warn(
            f"{p}: column(s) converted from the unit their median shows (station column unit → unit): "
            + "; ".join(units["converted"])
            + ". Check the file's units; convert the columns yourself to silence this",
            QualityWarning,
            stacklevel=3,
        )
    if units["lost"]:
        warnings.warn(
            f"{p}: value(s) outside the physical range read as NaN (station column lost of finite): "
            + "; ".join(units["lost"]),
            DataLossWarning,
            stacklevel=3,
        )


def _warn_assumptions(stations: list[Station], p: Path, snow_mask: bool) -> None:
    """Snow masking and the lattice-water/SOC stand-ins, one QualityWarning per kind."""
    assumed = [s.id for s in stations if s.extra.get("assumed_zero")]
    if assumed:
        warnings.warn(
            f"{p}: lattice water and/or SOC unknown at station(s) {assumed}: θ from counts assumes 0 g g-1 "
            "(too high by bulk_density x W); give lattice_water and soc in the metadata",
            QualityWarning,
            stacklevel=3,
        )
    unmasked = []
    for s in stations:
        if not snow_mask:
            s.processing.append("snow/frozen soil not masked (snow_mask=False)")
            continue
        if (s.data["flag"].to_numpy() & int(QC.SNOW)).any():
            s.processing.append("snow/frozen soil: the file's own QC.SNOW flags")
            continue
        data, how = mask_frozen(s.data)
        if how is None:
            unmasked.append(s.id)
            s.processing.append("snow/frozen soil NOT masked: no soil or air temperature")
        else:
            s.data = data
            s.processing.append(how)
    if unmasked:
        warnings.warn(
            f"{p}: station(s) {unmasked} have no soil_temperature or air_temperature column: snow cover and "
            "frozen soil are not masked (counts over snow read as wet soil); add a temperature column, "
            "flag QC.SNOW yourself, or pass snow_mask=False to say the site never freezes",
            QualityWarning,
            stacklevel=3,
        )


def _localise(naive: pd.DatetimeIndex, station: pd.Series | None, timezone: str, p: Path) -> pd.DatetimeIndex:
    """Naive local times → UTC, each station's series on its own: the repeated hour of a
    daylight-saving fall-back is told apart by its order (``ambiguous="infer"``); a time that
    does not exist in the zone (the skipped spring-forward hour) is an error naming it."""
    try:
        pd.Timestamp("2000-01-01").tz_localize(timezone)
    except Exception as exc:
        raise ConfigError(
            f"{p}: unknown time zone {timezone!r} ({exc}); use an IANA name such as 'Europe/Berlin'"
        ) from exc
    groups = [np.arange(len(naive))] if station is None else list(station.groupby(station.to_numpy()).indices.values())
    out = np.empty(len(naive), dtype="datetime64[ns]")
    for rows in groups:
        local = naive[rows]
        try:
            utc = local.tz_localize(timezone, ambiguous="infer").tz_convert("UTC")
        except Exception as exc:  # pytz/zoneinfo errors: NonExistentTimeError, AmbiguousTimeError, ValueError
            raise ConfigError(
                f"{p}: cannot place the local times in {timezone!r}: {exc}; a logger on standard time all year "
                "needs a fixed-offset zone (e.g. 'Etc/GMT+6' for UTC-6), a daylight-saving one must list its "
                "repeated hour in order"
            ) from exc
        out[rows] = utc.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return pd.DatetimeIndex(out).tz_localize("UTC")


def _blank_sentinels(df: pd.DataFrame, sentinels: tuple[float, ...], p: Path, skip: tuple[str, ...]) -> None:
    """Sentinel values of numeric columns → NaN (in place), counted in one DataLossWarning."""
    if not sentinels:
        return
    counts = {}
    marks = np.asarray(sentinels, dtype=np.float64)
    for c in df.columns:
        if c in skip or not pd.api.types.is_numeric_dtype(df[c]):
            continue
        hit = np.isin(df[c].to_numpy(dtype=np.float64), marks)
        if hit.any():
            counts[c] = int(hit.sum())
            df.loc[hit, c] = np.nan
    if counts:
        warnings.warn(
            f"{p}: {sum(counts.values())} missing-value marker(s) {tuple(float(v) for v in sentinels)} read as NaN: "
            + ", ".join(f"{c} {n}" for c, n in counts.items()),
            DataLossWarning,
            stacklevel=3,
        )


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


def _generic_station(
    sid: str,
    g: pd.DataFrame,
    m: Mapping[str, Any],
    p: Path,
    nm: pd.Series | None,
    count_range: tuple[float, float],
    r2_n0: float = nt.BWE_R2_N0,
    count_seconds: float | None = None,
    units: dict[str, list[str]] | None = None,
) -> Station:
    if g.index.has_duplicates:
        raise DataError(f"{p}: station {sid}: duplicate time stamp {g.index[g.index.duplicated()][0]}")
    g = g.sort_index().apply(pd.to_numeric, errors="coerce")
    g["flag"] = g["flag"].fillna(0).astype(np.int64) if "flag" in g else 0
    processing = [f"generic CSV {p.name}"]
    counted = [c for c in ("counts_raw", "counts_corrected") if c in g.columns]
    if count_seconds is not None and counted:
        g[counted] = g[counted] * (3600.0 / count_seconds)
        processing.append(f"{', '.join(counted)} counted over {count_seconds:g} s x 3600/{count_seconds:g} → cph")
    g, converted, lost = check_units(g, sid, str(p))
    processing += [f"unit: {c}" for c in converted]
    if units is not None:
        units["converted"] += converted
        units["lost"] += lost
    g = _flag_range(g, f"{p} station {sid}")
    kw = {k: m[k] for k in _META_COLUMNS if k in m and not (isinstance(m[k], float) and np.isnan(m[k]))}
    lat, lon = kw.pop("lat", math.nan), kw.pop("lon", math.nan)
    lw, soc = _float(kw.get("lattice_water", math.nan)), _float(kw.get("soc", math.nan))
    converts = ("sm" not in g.columns or g["sm"].isna().all()) and bool({"counts_raw", "counts_corrected"} & set(g))
    assumed = converts and not (np.isfinite(lw) and np.isfinite(soc))
    if assumed:
        known = {k: (v if np.isfinite(v) else "unknown") for k, v in (("lattice_water", lw), ("soc", soc))}
        processing.append(
            "lattice water/SOC unknown: 0 g g-1 assumed in counts → θ "
            f"(lattice_water={known['lattice_water']}, soc={known['soc']})"
        )
    lw0, soc0 = (lw if np.isfinite(lw) else 0.0), (soc if np.isfinite(soc) else 0.0)
    bwe = g["bwe"] if "bwe" in g.columns and g["bwe"].notna().any() else None
    if bwe is not None and converts:
        processing.append(f"biomass correction from the bwe column (r2/N0 = {r2_n0:g} per kg m-2, Baatz et al. 2015)")
    # a long file with both count columns: each station converts the one it has values in
    raw_given = "counts_raw" in g.columns and bool(g["counts_raw"].notna().any())
    corrected_given = "counts_corrected" in g.columns and (bool(g["counts_corrected"].notna().any()) or not raw_given)
    if ("sm" not in g.columns or g["sm"].isna().all()) and corrected_given:
        for need in ("n0", "bulk_density"):
            if not np.isfinite(_float(kw.get(need))):
                raise DataError(f"{p}: station {sid}: converting counts needs {need!r} in the metadata")
        if count_seconds is None:
            check_count_level(
                g["counts_corrected"], n0=float(kw["n0"]), sid=sid, column="counts_corrected", where=str(p)
            )
        # hourly mean rates on the hours the other columns are averaged to (_merge_hourly), as the raw
        # path: stamps at HH:30 or drifting to HH:59 stay with their met, precipitation and TDR values
        cc = g["counts_corrected"].astype(np.float64)
        cc = cc.groupby(cc.index.floor("h")).mean()
        corr = pd.DataFrame(
            {
                "counts": cc,
                "f_pressure": 1.0,
                "f_humidity": 1.0,
                "f_incoming": 1.0,
                "flag": np.zeros(len(cc), dtype=np.int64),
                "_n_hours": 1.0,
            },
            index=cc.index,
        )
        lo, hi = count_range
        extreme = cc.notna() & ((cc < lo) | (cc > hi))
        corr.loc[extreme.to_numpy(), "flag"] |= int(QC.EXTREME_COUNTS)
        corr.loc[extreme.to_numpy(), "counts"] = np.nan
        conv = _corrected_to_sm(
            corr,
            float(kw["n0"]),
            float(kw["bulk_density"]),
            lw0,
            soc0,
            _float(kw.get("porosity", math.nan)),
            bwe,
            r2_n0,
        )
        g = _merge_hourly(conv, g.drop(columns=["sm"], errors="ignore"))
        processing.append("corrected counts → sm with N0 only (no correction factor applied again)")
    elif "sm" not in g.columns or g["sm"].isna().all():
        if "counts_raw" not in g.columns:
            raise DataError(f"{p}: station {sid}: no 'sm' values and no 'counts_raw' to convert")
        for need in ("n0", "bulk_density"):
            if not np.isfinite(_float(kw.get(need))):
                raise DataError(f"{p}: station {sid}: converting counts needs {need!r} in the metadata")
        if count_seconds is None:
            check_count_level(
                g["counts_raw"],
                n0=float(kw["n0"]),
                sid=sid,
                column="counts_raw",
                where=str(p),
                pressure=g.get("pressure"),
            )
        if "abs_humidity" not in g and {"rel_humidity", "air_temperature"} <= set(g.columns):
            g["abs_humidity"] = nt.absolute_humidity(g["rel_humidity"].to_numpy(), g["air_temperature"].to_numpy())
        conv = counts_to_sm(
            g["counts_raw"],
            n0=float(kw["n0"]),
            bulk_density=float(kw["bulk_density"]),
            lattice_water=lw0,
            soc=soc0,
            pressure=g.get("pressure"),
            abs_humidity=g.get("abs_humidity"),
            incoming=nm,
            cutoff_rigidity=_float(kw["cutoff_rigidity"]) if "cutoff_rigidity" in kw else None,
            count_range=count_range,
            porosity=_float(kw.get("porosity", math.nan)),
            bwe=bwe,
            r2_n0=r2_n0,
        )
        g = _merge_hourly(conv, g)
        processing.append("counts → sm (counts_to_sm)")
    for k in ("name", "network", "land_cover"):
        kw[k] = str(kw.get(k, ""))
    for k in ("elevation", "bulk_density", "n0", "porosity", "cutoff_rigidity", "lattice_water", "soc"):
        if k in kw:
            kw[k] = _float(kw[k])
    st = Station(id=sid, lat=lat, lon=lon, data=g, source=str(p), **kw)
    st.processing.extend(processing)
    if assumed:
        st.extra["assumed_zero"] = True
    return st
