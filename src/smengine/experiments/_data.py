"""Station data and point covariates for the experiments: station sets, precipitation, the
station-day table and its covariates."""

from __future__ import annotations

import logging
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine.errors import ConfigError, DataError, DataLossWarning, ValidationError
from smengine.features import SWI_MAX_GAP, parse_swi_feature_name, swi_feature_name
from smengine.stations import CANONICAL_COLUMNS, Station, StationSet, step_hours
from smengine.waterbalance import antecedent_precipitation_index

log = logging.getLogger(__name__)


log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Characteristic times (days) of the antecedent-precipitation features.
DEFAULT_T = (1.0, 3.0, 7.0, 15.0, 30.0)
#: Daily met features (daily means of the station series) and their units.
MET_FEATURES = {"air_temperature": "degC", "rel_humidity": "%", "abs_humidity": "g m-3", "pressure": "hPa"}
#: Static site descriptors (from :class:`~smengine.stations.Station`) and their units.
STATIC_FEATURES = {
    "bulk_density": "g cm-3",
    "lattice_water": "g g-1",
    "soc": "g g-1",
    "elevation": "m",
    "land_cover_class": "1",
}
#: Coarse land-cover classes (codes = position) and the words that map a station's text to them.
LAND_COVER_CLASSES: dict[str, tuple[str, ...]] = {
    "forest": (
        "forest",
        "wood",
        "pine",
        "spruce",
        "fir",
        "aspen",
        "oak",
        "cottonwood",
        "beech",
        "tree",
        "conifer",
        "deciduous",
    ),
    "grassland": ("grass", "meadow", "pasture", "prairie", "steppe", "lawn"),
    "shrubland": ("shrub", "sage", "heath", "scrub", "bush"),
    "cropland": ("crop", "alfalfa", "arable", "agricult", "cultivat", "irrigat", "farm", "field"),
    "wetland": ("wetland", "riparian", "marsh", "bog", "swamp", "peat", "floodplain", "fen"),
    "bare": ("bare", "urban", "sand", "rock", "desert"),
    "other": (),
}
#: The methods every experiment scores, in report order.
METHODS = ("forest", "boosting", "hybrid", "selected", "linear", "mean", "tdr")
#: The tree models every experiment fits beside the linear model and the mean
#: (:data:`smengine.model.MODELS`: the Random Forest, LightGBM gradient boosting, and the hybrid of a
#: linear base and boosted trees on its residuals); ``selected`` is the one chosen, inside each
#: fold, by spatio-temporal CV on that fold's training stations only (``select=True``).
DEFAULT_MODELS = ("forest", "boosting", "hybrid")
#: The experiments :func:`run_experiments` knows, in report order.
EXPERIMENTS = ("temporal", "leave-site-out", "leave-site-out-spatiotemporal", "knndm")
#: Lower/upper bounds of θ fed to D86 (it needs θ inside (0, 1)).
_THETA_D86 = (1e-3, 0.95)
_TDR_COLUMN = re.compile(r"^tdr_(\d+(?:\.\d+)?)$")
_SCORE_KEYS = ("n", "R", "ubRMSE", "bias", "KGE")
#: Daily station columns that are never covariates, and why (the target and what is made from it).
NOT_COVARIATES: dict[str, str] = {
    "sm": "the target",
    "sm_std": "the target's uncertainty",
    "n_hours": "a count of the target's valid hours",
    "counts": "neutron counts: the target's raw signal",
    "counts_raw": "neutron counts: the target's raw signal",
    "counts_corrected": "neutron counts: the target's raw signal",
    "bwe": "biomass water equivalent: used in the counts-to-θ conversion",
    "r86": "footprint radius computed from θ: it would leak the target",
    "d86": "penetration depth computed from θ: it would leak the target",
    "flag": "quality flags",
}
#: SWI of station covariates: characteristic times (days) and the longest gap (days) the last
#: value is carried over before the SWI becomes NaN (a product that ended years ago is no input).
COVARIATE_SWI_T = (5.0, 10.0, 20.0, 40.0)
COVARIATE_SWI_MAX_GAP = SWI_MAX_GAP  # the gridded features' default (30 days)


# ======================================================================================
# covariates
# ======================================================================================
def land_cover_class(text: str | None) -> float:
    """Code (index in :data:`LAND_COVER_CLASSES`) of a free-text land cover; NaN if empty.

    The class whose keyword occurs first in the text wins, so ``"Pasture with aspen"`` is
    grassland and ``"Wetland/aspen"`` wetland; unknown text is ``"other"``.

    Examples
    --------
    >>> [land_cover_class(t) for t in ("Grassland", "Ponderosa pine", "Sagebrush/grasses", "")]
    [1.0, 0.0, 2.0, nan]
    """
    t = (text or "").strip().lower()
    if not t:
        return math.nan
    best, pos = len(LAND_COVER_CLASSES) - 1, len(t) + 1
    for code, words in enumerate(LAND_COVER_CLASSES.values()):
        for w in words:
            i = t.find(w)
            if 0 <= i < pos:
                best, pos = code, i
    return float(best)


def _norm_name(s: str) -> str:
    return re.sub(r"\s+", "", str(s)).lower()


def read_daily_irrigation(path: PathLike, stations: StationSet | None = None, *, strict: bool = True) -> pd.DataFrame:
    """Daily irrigation per site (mm day⁻¹) from a wide CSV: the layout of
    :func:`read_daily_precipitation` (a ``date`` column, one column per station).

    Irrigation is a water input of its own beside precipitation (:func:`station_table`
    makes ``irrigation`` and ``irrigation_ef<T>`` features from it); a station without a
    column is taken as not irrigated (0 mm), which the table's ``attrs`` and the report say.
    """
    return read_daily_precipitation(path, stations, strict=strict, what="irrigation")


def read_daily_precipitation(
    path: PathLike, stations: StationSet | None = None, *, strict: bool = True, what: str = "precipitation"
) -> pd.DataFrame:
    """Daily precipitation per site from a wide CSV (e.g. the Roaring Fork ``DailyPRISM_Ppt.csv``).

    Parameters
    ----------
    path : path
        CSV with a ``date`` (or ``Date``) column — ISO 8601 or ``m/d/Y`` as PRISM's — and
        one column per site, mm day⁻¹ (UTC days). Unnamed index columns are ignored.
    stations : StationSet, optional
        Rename site columns to station ids: a column matches a station whose ``id`` or
        ``name`` equals it ignoring spaces and case (PRISM's ``"RF5"`` ↔ ``"RF 5"``).
    strict : bool, optional
        With ``stations``: a column that matches no station is an error (default), or, with
        ``strict=False``, left out with a :class:`~smengine.errors.DataLossWarning` naming it.
        Stations without a column are named in a warning either way (they get no
        precipitation features).
    what : str, optional
        What the file holds, for messages (``"precipitation"``; ``"irrigation"`` from
        :func:`read_daily_irrigation`).

    Returns
    -------
    pandas.DataFrame
        Index ``date`` (naive datetime64 days), one column per site or station, mm.

    Raises
    ------
    DataError
        Missing file or date column, unparseable dates (the value named).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: no such {what} file")
    df = pd.read_csv(p)
    df = df.loc[:, [c for c in df.columns if not str(c).startswith("Unnamed")]]
    col = next((c for c in df.columns if str(c).strip().lower() == "date"), None)
    if col is None:
        raise DataError(f"{p}: no 'date' column (found {list(df.columns)})")
    raw = df.pop(col).astype(str).str.strip()
    idx = None
    for fmt in ("%m/%d/%Y", "ISO8601"):
        try:
            idx = pd.to_datetime(raw, format=fmt)
            break
        except (ValueError, TypeError):
            continue
    if idx is None:
        bad = raw[pd.to_datetime(raw, errors="coerce", format="ISO8601").isna()]
        raise DataError(f"{p}: cannot parse date {bad.iloc[0]!r} (row {bad.index[0] + 2}); use ISO 8601 or m/d/Y")
    if idx.dt.tz is not None:
        idx = idx.dt.tz_convert(None)
    df.index = pd.DatetimeIndex(idx.dt.normalize(), name="date")
    df = df.apply(pd.to_numeric, errors="coerce").sort_index()
    if df.index.has_duplicates:
        raise DataError(f"{p}: duplicate date {df.index[df.index.duplicated()][0]:%Y-%m-%d}")
    if stations is not None:
        lookup: dict[str, str] = {}
        for s in stations.values():
            lookup.setdefault(_norm_name(s.id), s.id)
            if s.name:
                lookup.setdefault(_norm_name(s.name), s.id)
        unmatched = [c for c in df.columns if _norm_name(c) not in lookup]
        if unmatched:
            msg = f"{p}: column(s) {unmatched} match no station (stations: {sorted(stations)[:20]})"
            if strict:
                raise DataError(msg + "; rename them to station ids or names, or pass strict=False")
            warnings.warn(msg + "; left out", DataLossWarning, stacklevel=2)
            df = df.drop(columns=unmatched)
        df = df.rename(columns=lambda c: lookup[_norm_name(c)])
        without = sorted(set(stations) - set(df.columns))
        if without and what == "precipitation":
            warnings.warn(
                f"{p}: station(s) {without} have no precipitation column (no precipitation features for them)",
                DataLossWarning,
                stacklevel=2,
            )
        elif without:
            log.info("%s: station(s) %s have no %s column (0 mm)", p, without, what)
    return df


def read_station_set(source: PathLike, fmt: str | None, metadata: PathLike | None = None) -> StationSet:
    """Read a station set with the reader named ``fmt`` (a :data:`smengine.stations.FORMATS` key;
    ``None``: guessed), as ``smengine stations --format``; ``metadata`` is the station table
    of the ``csv`` format."""
    from smengine.stations import open_stations

    return open_stations(source, fmt, metadata=metadata)


def daily_precipitation(stations: StationSet, min_hours: float = 18.0, column: str = "precipitation") -> pd.DataFrame:
    """Daily precipitation sums (mm) of the stations' own gauges on UTC days (``column``:
    another summed water input such as ``"irrigation"``).

    A day is kept when its finite precipitation steps cover ``min_hours`` (step length =
    median spacing, at most 24 h: a daily gauge series counts 24 h a day), else it is NaN:
    a missing gauge is not a dry day.

    Returns
    -------
    pandas.DataFrame
        Index ``date`` (naive UTC days, continuous from each record's first to last day),
        one column per station with a ``column`` series.
    """
    cols = {}
    for s in stations.values():
        if column not in s.data.columns or not s.data[column].notna().any():
            continue
        pr = s.data[column]
        step = step_hours(s.data.index)
        day = pr.index.floor("D").tz_localize(None)
        g = pr.groupby(day)
        tot, hours = g.sum(min_count=1), g.count() * step
        cols[s.id] = tot.where(hours >= min_hours).asfreq("D")
    out = pd.DataFrame(cols)
    out.index.name = "date"
    return out


def tdr_footprint_average(
    profile: Any,
    depths: Sequence[float],
    bulk_density: float,
    lattice_water: float = 0.0,
    soc: float = 0.0,
    *,
    r: float = 0.0,
    tol: float = 1e-7,
    max_iter: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Point profile (TDR) weighted with the CRNS vertical footprint, per day.

    Fixed point of :math:`\theta = \sum_k W_d(d_k; D_{86}(\theta))\,\theta_k / \sum_k
    W_d(d_k; D_{86}(\theta))` with :func:`smengine.footprint.vertical_weight` and
    :func:`smengine.footprint.penetration_depth` (at distance ``r``, with the site's ρ_b,
    W_lat and W_soc), started from the profile mean: the day's D86 is the one of the
    weighted profile itself, so the result does not use the CRNS value (Schrön et al.
    2017, §1.7 of SCIENCE.md for one profile). θ fed to D86 is clipped to [0.001, 0.95].

    Parameters
    ----------
    profile : array_like, shape (n_days, n_depths)
        Volumetric soil moisture at each depth, m³ m⁻³; a day with any NaN gives NaN.
    depths : sequence of float
        Sensor depths, cm.
    bulk_density, lattice_water, soc : float
        Site ρ_b (g cm⁻³), W_lat and W_soc (g g⁻¹).
    r : float, optional
        Distance of the profile from the sensor, m (default 0).

    Returns
    -------
    theta, d86 : ndarray, shape (n_days,)
        Weighted soil moisture (m³ m⁻³) and that day's D86 (cm).
    """
    from smengine.footprint import penetration_depth, vertical_weight

    th = np.asarray(profile, dtype=np.float64)
    d = np.asarray(depths, dtype=np.float64)
    if th.ndim != 2 or th.shape[1] != d.size:
        raise ValidationError(f"profile should have shape (n_days, {d.size}), got {th.shape}")
    theta = np.full(th.shape[0], np.nan)
    d86 = np.full(th.shape[0], np.nan)
    ok = np.isfinite(th).all(axis=1)
    if not ok.any():
        return theta, d86
    p = th[ok]
    t = p.mean(axis=1)
    for _ in range(max_iter):
        D = penetration_depth(r, bulk_density, np.clip(t, *_THETA_D86), lattice_water, soc)
        w = vertical_weight(d[None, :], D[:, None])
        new = (w * p).sum(axis=1) / w.sum(axis=1)
        done = np.max(np.abs(new - t)) < tol
        t = new
        if done:
            break
    theta[ok] = t
    d86[ok] = penetration_depth(r, bulk_density, np.clip(t, *_THETA_D86), lattice_water, soc)
    return theta, d86


def _tdr_depths(columns: Sequence[str]) -> dict[str, float]:
    out = {}
    for c in columns:
        m = _TDR_COLUMN.match(str(c))
        if m:
            out[str(c)] = float(m.group(1))
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def _calendar_met(s: Station) -> pd.DataFrame:
    """Daily means of the met columns over every step (not only valid-sm steps); absolute
    humidity from relative humidity and temperature where the station lacks it."""
    data = s.data
    if "abs_humidity" not in data.columns and {"rel_humidity", "air_temperature"} <= set(data.columns):
        from smengine.neutrons import absolute_humidity

        data = data.assign(
            abs_humidity=absolute_humidity(
                data["rel_humidity"].to_numpy(np.float64), data["air_temperature"].to_numpy(np.float64)
            )
        )
    have = [c for c in MET_FEATURES if c in data.columns]
    day = data.index.floor("D").tz_localize(None)
    if not have:
        return pd.DataFrame(index=pd.DatetimeIndex(day.unique(), name="date"))
    out = data[have].groupby(day).mean()
    out.index.name = "date"
    return out


#: The station tables' soil water balance (:func:`station_table`, ``water_balance=``): a one-layer
#: bucket per station (:func:`smengine.waterbalance.bucket`) fed by the day's precipitation (and
#: irrigation) and drained by PET from the station's air temperature. Keys a mapping may set:
#: ``depths_mm`` (one feature ``wb<depth>`` each), ``beta_fraction``, ``pet`` ("oudin" from the
#: daily mean, "hargreaves" from the daily min/max), ``sand``/``clay`` (fractions, or the name of a
#: covariate column) and ``organic_matter`` (%), ``temperature_gap`` (days of missing temperature
#: filled by linear interpolation) and ``temperature_fill`` ("network": longer gaps filled with the
#: other stations' daily mean plus the station's mean offset from it; None: left missing).
WATER_BALANCE_DEFAULTS: dict[str, Any] = {
    "depths_mm": (300.0,),
    "beta_fraction": 0.6,
    "pet": "oudin",
    "sand": 0.40,  # loam (Saxton & Rawls 2006, Table 3) where the network gives no texture
    "clay": 0.20,
    "organic_matter": 2.5,
    "temperature_gap": 7,
    "temperature_fill": "network",
}


def _water_balance_params(water_balance: bool | Mapping[str, Any]) -> dict[str, Any] | None:
    """The bucket's parameters of ``station_table(water_balance=...)`` (None: no water balance)."""
    if water_balance is False or water_balance is None:
        return None
    given = {} if water_balance is True else dict(water_balance)
    unknown = sorted(set(given) - set(WATER_BALANCE_DEFAULTS))
    if unknown:
        raise ConfigError(f"water_balance: unknown key(s) {unknown}; known: {sorted(WATER_BALANCE_DEFAULTS)}")
    p = {**WATER_BALANCE_DEFAULTS, **given}
    p["depths_mm"] = tuple(float(d) for d in np.atleast_1d(p["depths_mm"]))
    if not p["depths_mm"] or any(not (d > 0 and math.isfinite(d)) for d in p["depths_mm"]):
        raise ConfigError(f"water_balance: depths_mm should be positive millimetres, got {p['depths_mm']}")
    if p["temperature_fill"] not in ("network", None):
        raise ConfigError(f"water_balance: temperature_fill should be 'network' or None, got {p['temperature_fill']!r}")
    if p["pet"] not in ("oudin", "hargreaves"):
        raise ConfigError(f"water_balance: pet should be 'oudin' or 'hargreaves', got {p['pet']!r}")
    return p


def json_params(p: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy of a parameter mapping (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}


def _station_texture(cov: pd.DataFrame | None, sid: str, v: float | str) -> float:
    """Sand or clay of a station: a constant fraction, or the station's mean of a covariate column
    (percent when above 1)."""
    if not isinstance(v, str):
        return float(v)
    assert cov is not None
    x = pd.to_numeric(cov.loc[cov["station"] == str(sid), v], errors="coerce").mean()
    return float(x) / 100.0 if x > 1 else float(x)


def _fill_short_gaps(frame: pd.DataFrame, max_days: int) -> pd.DataFrame:
    """Linear interpolation over runs of at most ``max_days`` missing days inside the record
    (a longer run stays missing whole, not filled at its edges as ``interpolate(limit=)`` would)."""
    out = frame.copy()
    for c in out.columns:
        miss = out[c].isna()
        run = (miss != miss.shift()).cumsum()
        length = miss.groupby(run).transform("sum")
        short = miss & (length <= max_days)
        filled = out[c].interpolate(limit_area="inside")
        out.loc[short, c] = filled[short]
    return out


def _daily_temperature(s: Station) -> pd.DataFrame:
    """Daily mean, min and max air temperature (°C) of a station's record over every step."""
    if "air_temperature" not in s.data.columns:
        return pd.DataFrame(columns=["mean", "min", "max"], index=pd.DatetimeIndex([], name="date"), dtype=float)
    day = s.data.index.floor("D").tz_localize(None)
    ta = s.data["air_temperature"].astype(float).groupby(day).agg(["mean", "min", "max"])
    ta.index = pd.DatetimeIndex(ta.index, name="date")
    return ta


def _wb_name(depth: float) -> str:
    """Feature name of the bucket's θ at a root-zone depth (mm): ``wb<depth>`` (as the gridded features)."""
    return f"wb{depth:g}"


def _water_balance_calendar(
    s: Station,
    ta: pd.DataFrame,
    precip: pd.Series | None,
    irrigation: pd.Series | None,
    texture: tuple[float, float],
    p: Mapping[str, Any],
    network: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One station's bucket θ (``wb<depth>``) on the daily calendar where precipitation and
    temperature both exist, and what was filled or skipped. ``ta``: the station's
    :func:`_daily_temperature`; ``precip``: its daily precipitation on a daily calendar of naive
    days; ``network``: every station's daily mean, min and max air temperature (columns
    ``(stat, station)``) for ``temperature_fill``."""
    from smengine.waterbalance import bucket, pet_hargreaves, pet_oudin, saxton_rawls

    names = [_wb_name(d) for d in p["depths_mm"]]
    info: dict[str, Any] = {"days": 0, "temperature_filled": 0, "skipped": 0}
    if precip is None or "air_temperature" not in s.data.columns:
        info["why"] = "no precipitation" if precip is None else "no air temperature"
        return pd.DataFrame(index=pd.DatetimeIndex([], name="date"), columns=names, dtype=float), info
    pr = precip
    valid_t = ta.index[ta["mean"].notna()]
    valid_p = pr.index[pr.notna()]
    if not len(valid_t) or not len(valid_p):
        info["why"] = "no day with both precipitation and temperature"
        return pd.DataFrame(index=pd.DatetimeIndex([], name="date"), columns=names, dtype=float), info
    start, end = max(valid_t.min(), valid_p.min()), min(valid_t.max(), valid_p.max())
    cal = pd.DatetimeIndex(pd.date_range(start, end, freq="D"), name="date")
    g = ta.reindex(cal)
    before = g["mean"].isna().to_numpy()
    g = _fill_short_gaps(g, int(p["temperature_gap"]))
    info["temperature_filled"] = int((before & g["mean"].notna().to_numpy()).sum())
    if p["temperature_fill"] == "network" and network is not None and g["mean"].isna().any():
        gap = g["mean"].isna().to_numpy()
        for stat in ("mean", "min", "max"):
            others = network[stat].drop(columns=[s.id], errors="ignore").reindex(cal)
            net = others.mean(axis=1)
            offset = (ta[stat].reindex(cal) - net).mean()  # the station's mean difference from the others
            if np.isfinite(offset):
                g.loc[gap, stat] = (net + offset).to_numpy()[gap]
        info["temperature_from_network"] = int((gap & g["mean"].notna().to_numpy()).sum())
    doy = cal.dayofyear.to_numpy()
    if p["pet"] == "oudin":
        pet = pet_oudin(g["mean"].to_numpy(np.float64), s.lat, doy)
    else:
        pet = pet_hargreaves(g["min"].to_numpy(np.float64), g["max"].to_numpy(np.float64), s.lat, doy)
    P = pr.reindex(cal).to_numpy(np.float64)
    irr = None if irrigation is None else irrigation.reindex(cal).fillna(0.0).to_numpy(np.float64)
    lim = saxton_rawls(texture[0], texture[1], float(p["organic_matter"]))
    fc, wp = float(lim.field_capacity), float(lim.wilting_point)
    out = {}
    with warnings.catch_warnings():  # days without input: counted here, per station
        warnings.simplefilter("ignore", DataLossWarning)
        for d, n in zip(p["depths_mm"], names, strict=True):
            out[n] = bucket(P, pet, fc, wp, depth_mm=d, beta_fraction=float(p["beta_fraction"]), irrigation=irr)
    info.update(
        days=len(cal),
        skipped=int((~np.isfinite(P) | ~np.isfinite(pet)).sum()),
        field_capacity=fc,
        wilting_point=wp,
        start=str(cal[0].date()),
    )
    return pd.DataFrame(out, index=cal), info


def station_table(
    stations: StationSet,
    *,
    precipitation: pd.DataFrame | None = None,
    T: Sequence[float] = DEFAULT_T,
    min_hours: float = 18.0,
    tdr: bool = True,
    tdr_distance: float = 0.0,
    irrigation: pd.DataFrame | None = None,
    covariates: pd.DataFrame | None = None,
    covariate_units: Mapping[str, str] | None = None,
    extras: bool = True,
    swi_of: Sequence[str] = (),
    swi_T: Sequence[float] = COVARIATE_SWI_T,
    swi_max_gap: float | None = COVARIATE_SWI_MAX_GAP,
    water_balance: bool | Mapping[str, Any] = True,
    api: Sequence[float] = (),
) -> pd.DataFrame:
    r"""Station-day table: CRNS soil moisture and the point covariates of each station.

    Parameters
    ----------
    stations : StationSet
        From any reader of :mod:`smengine.stations`.
    precipitation : DataFrame, optional
        Daily precipitation, mm, index of days, one column per station id (e.g.
        :func:`read_daily_precipitation`). Stations without a column use their own gauge
        (:func:`daily_precipitation`); default: the gauges.
    T : sequence of float, optional
        Characteristic times (days) of the antecedent-precipitation features
        ``precip_ef<T>`` (default :data:`DEFAULT_T`).
    min_hours : float, optional
        Valid hours per UTC day for the target (:meth:`StationSet.daily`, default 18).
    tdr : bool, optional
        Add the footprint-weighted TDR profile (``tdr_weighted``, ``tdr_d86``) where the
        station has ``tdr_<depth>`` columns (default True).
    tdr_distance : float, optional
        Distance of the TDR profile from the sensor for D86, m (default 0).
    irrigation : DataFrame, optional
        Daily irrigation, mm, one column per station id (:func:`read_daily_irrigation`);
        stations without a column use their own ``irrigation`` series. When any station has
        irrigation, ``irrigation`` and ``irrigation_ef<T>`` become features, and stations
        with none are taken as not irrigated (0 mm; ``attrs["irrigation_source"]``).
    covariates : DataFrame, optional
        Daily covariates of your own, long: ``station``, ``date`` and one numeric column per
        covariate (e.g. a satellite product's SWI at the stations, reanalysis layers, soil
        texture; :func:`read_covariates`). Each column becomes a feature.
    covariate_units : mapping, optional
        Units of covariate and extra columns (default ``"unknown"``, said in the report).
    extras : bool, optional
        Numeric columns of the station files beyond the canonical ones become features too
        (default True); columns that are the target or made from it are never features
        (:data:`NOT_COVARIATES`, neutron correction factors ``f_*``, TDR profiles).
    swi_of : sequence of str, optional
        Covariate (or extra) columns whose Soil Water Index (:func:`smengine.filters.exp_filter`,
        carried over days without a value) at ``swi_T`` also becomes a feature,
        ``swi<T>c_<column>`` as in :class:`smengine.features.FeatureSpec`.
    swi_T : sequence of float, optional
        Characteristic times of those SWI, days (default :data:`COVARIATE_SWI_T`).
    swi_max_gap : float or None, optional
        The carried SWI becomes NaN once the last observation is more than this many days
        old (default :data:`COVARIATE_SWI_MAX_GAP`); None carries for ever.
    water_balance : bool or mapping, optional
        Add the soil water balance ``wb<depth>`` (default True): the volumetric water content
        (m³ m⁻³) of a one-layer bucket per station (:func:`smengine.waterbalance.bucket`:
        precipitation and irrigation in, Oudin PET from the station's daily mean air
        temperature and latitude reduced by the soil-moisture stress function out, drainage
        above field capacity; field capacity and wilting point from texture by Saxton & Rawls
        2006), started at field capacity on the first day with both precipitation and
        temperature. A mapping overrides :data:`WATER_BALANCE_DEFAULTS` (``sand``/``clay`` may
        name covariate columns: the station's mean, in fractions or percent). Temperature gaps
        of at most ``temperature_gap`` days are interpolated; longer gaps, and days without
        precipitation, are skipped by the bucket (state unchanged, NaN that day), counted in
        ``attrs["water_balance"]``.
    api : sequence of float, optional
        Decay factors k (per day, in (0, 1)) of antecedent precipitation indices
        ``api<k>`` = k·API(t−1) + P(t) (:func:`smengine.waterbalance.antecedent_precipitation_index`,
        mm): the lighter alternative to the water balance. Default none.

    Returns
    -------
    pandas.DataFrame
        Columns ``station``, ``date`` (naive UTC day), ``target`` (θ_CRNS, m³ m⁻³), the
        features and, where available, the TDR columns; sorted by station and date.
        ``attrs``: ``features`` (names in model order), ``units``, ``kinds``,
        ``dropped_features`` (feature → reason; e.g. a static descriptor unknown at some
        station or a met series absent everywhere), ``irrigation_source`` (station →
        ``"table"``, ``"station"`` or ``"none (0 mm)"``, when any station is irrigated),
        ``tdr_depths`` (station → depths, cm, of its TDR baseline: the depths it measures at
        all, at least two; a day needs all), ``columns`` (every column offered as a covariate:
        ``source``, ``units``, ``used`` and, when not used, ``why``).

        ========================= ========== ==========================================
        feature                   unit       meaning
        ========================= ========== ==========================================
        ``wb<depth>``             m³ m⁻³     soil water balance (bucket of ``depth`` mm)
        ``precipitation``         mm d⁻¹     the day's precipitation
        ``precip_ef<T>``          mm d⁻¹     exp. filter of daily precipitation, T days
        ``irrigation``            mm d⁻¹     the day's irrigation (irrigated networks)
        ``irrigation_ef<T>``      mm d⁻¹     exp. filter of daily irrigation, T days
        ``air_temperature``       °C         daily mean
        ``rel_humidity``          %          daily mean
        ``abs_humidity``          g m⁻³      daily mean
        ``pressure``              hPa        daily mean
        ``doy_sin``, ``doy_cos``  1          day of year on the unit circle
        ``bulk_density``          g cm⁻³     site ρ_b
        ``lattice_water``, ``soc`` g g⁻¹     site W_lat, W_soc
        ``elevation``             m          site elevation
        ``land_cover_class``      1          :func:`land_cover_class` code
        ========================= ========== ==========================================

    Notes
    -----
    The precipitation series is the continuous daily calendar of the record, not only the
    days with a valid CRNS value; missing days are skipped by the filter (Δt runs from the
    last valid day) and give NaN features on the day itself.
    """
    from smengine.features import calendar_features
    from smengine.filters import exp_filter

    if not isinstance(stations, StationSet) or len(stations) == 0:
        raise ConfigError("station_table: need a non-empty StationSet")
    Ts = [float(t) for t in T]
    if any(not (t > 0 and math.isfinite(t)) for t in Ts):
        raise ConfigError(f"T should be positive days, got {T!r}")
    daily = stations.daily(min_hours)
    cov, columns, extra_cols = _covariate_columns(daily, covariates, covariate_units, extras)
    swi_cols = list(dict.fromkeys(str(c) for c in swi_of))
    unknown_swi = [c for c in swi_cols if c not in {*extra_cols, *(cov.columns if cov is not None else ())}]
    if unknown_swi:
        raise ConfigError(
            f"swi_of: {unknown_swi} is not a covariate column; covariates: "
            f"{sorted({*extra_cols, *(cov.columns if cov is not None else ())} - {'station', 'date'})}"
        )
    STs = [float(t) for t in swi_T]
    if swi_cols and any(not (t > 0 and math.isfinite(t)) for t in STs):
        raise ConfigError(f"swi_T should be positive days, got {swi_T!r}")
    swi_names = [swi_feature_name(c, t, max_gap=swi_max_gap) for c in swi_cols for t in STs]
    cov_names = [c for c in (cov.columns if cov is not None else ()) if c not in ("station", "date")]
    gauge = daily_precipitation(stations, min_hours)
    own_irr = daily_precipitation(stations, min_hours, column="irrigation")
    irrigated = bool(len(own_irr.columns)) or (irrigation is not None and len(irrigation.columns) > 0)
    irr_source: dict[str, str] = {}
    ef_names = [f"precip_ef{t:g}" for t in Ts]
    api_ks = [float(k) for k in api]
    if any(not (0 < k < 1) for k in api_ks):
        raise ConfigError(f"api: the decay factors k should lie in (0, 1), got {list(api)}")
    api_names = [f"api{k:g}" for k in api_ks]
    irr_names = ["irrigation", *[f"irrigation_ef{t:g}" for t in Ts]] if irrigated else []
    frames = []
    tdr_used: dict[str, list[float]] = {}
    wbp = _water_balance_params(water_balance)
    wb_names = [_wb_name(d) for d in wbp["depths_mm"]] if wbp is not None else []
    wb_info: dict[str, Any] = {}
    for name in ("sand", "clay"):
        if wbp is not None and isinstance(wbp[name], str) and (cov is None or wbp[name] not in cov.columns):
            raise ConfigError(f"water_balance: {name}={wbp[name]!r} is not a covariate column")
    temps = {st.id: _daily_temperature(st) for st in stations.values()} if wbp is not None else {}
    network = None
    if wbp is not None and wbp["temperature_fill"] == "network" and len(stations) > 1:
        network = pd.concat(temps, axis=1).swaplevel(axis=1).sort_index(axis=1)
    for s in stations.values():
        d = daily[daily["station"] == s.id]
        if d.empty:
            log.info("station %s: no valid days", s.id)
            continue
        keep = ["date", "sm", *[c for c in d.columns if _TDR_COLUMN.match(str(c))], *extra_cols]
        d = d[keep].rename(columns={"sm": "target"}).copy()
        d["date"] = pd.to_datetime(d["date"])
        d = d.set_index("date")
        # precipitation on the full calendar, then its exponential filter
        if precipitation is not None and s.id in precipitation.columns:
            pr, src = precipitation[s.id], "table"
        elif s.id in gauge.columns:
            pr, src = gauge[s.id], "gauge"
        else:
            pr, src = None, "none"
        cal = pd.DataFrame(index=pd.DatetimeIndex([], name="date"))
        if pr is not None:
            pr = pr.copy()
            pr.index = pd.DatetimeIndex(pd.to_datetime(pr.index)).tz_localize(None).normalize()
            pr = pr.sort_index().asfreq("D")
            ef = exp_filter(pr.to_numpy(np.float64), pr.index.to_numpy(), Ts)
            cal = pd.DataFrame({"precipitation": pr.to_numpy(), **dict(zip(ef_names, ef, strict=True))}, index=pr.index)
            for k, n in zip(api_ks, api_names, strict=True):
                with warnings.catch_warnings():  # gap days: NaN that day, as the precip_ef features
                    warnings.simplefilter("ignore", DataLossWarning)
                    cal[n] = antecedent_precipitation_index(pr.to_numpy(np.float64), k)
        if irrigated:
            cal_irr = _irrigation_calendar(s.id, d.index, irrigation, own_irr, Ts, irr_source)
            cal = cal_irr if cal.empty else cal.join(cal_irr, how="outer")
        met = _calendar_met(s)
        row = d.join(cal, how="left").join(met, how="left")
        if wbp is not None:
            tex = tuple(_station_texture(cov, s.id, wbp[k]) for k in ("sand", "clay"))
            irr_s = cal["irrigation"] if "irrigation" in cal.columns else None
            wb, wb_info[s.id] = _water_balance_calendar(s, temps[s.id], pr, irr_s, tex, wbp, network)  # type: ignore[arg-type]
            row = row.join(wb, how="left")
        if cov is not None:
            row = row.join(_station_covariates(cov, s.id, swi_cols, STs, swi_max_gap), how="left")
        elif swi_cols:
            row = row.join(_swi_calendar(d[swi_cols], swi_cols, STs, swi_max_gap), how="left")
        for c in [
            "precipitation",
            *ef_names,
            *api_names,
            *irr_names,
            *MET_FEATURES,
            *extra_cols,
            *cov_names,
            *swi_names,
            *wb_names,
        ]:
            if c not in row.columns:
                row[c] = np.nan
        row["precip_source"] = src
        row = row.reset_index()
        row.insert(0, "station", s.id)
        cal_f = calendar_features(row["date"].to_numpy())
        row["doy_sin"], row["doy_cos"] = cal_f["doy_sin"], cal_f["doy_cos"]
        static = {
            "bulk_density": s.bulk_density,
            "lattice_water": s.lattice_water,
            "soc": s.soc,
            "elevation": s.elevation,
            "land_cover_class": land_cover_class(s.land_cover),
        }
        for k, v in static.items():
            row[k] = float(v) if v is not None else math.nan
        if tdr:
            # the depths this station measures at all; a profile needs at least two of them
            depths = {c: z for c, z in _tdr_depths(row.columns).items() if row[c].notna().any()}
            if len(depths) >= 2 and math.isfinite(s.bulk_density):
                # unknown W_lat/W_soc (NaN) enter D86 as 0 g g-1: a few mm of depth, no θ bias
                th, d86 = tdr_footprint_average(
                    row[list(depths)].to_numpy(),
                    list(depths.values()),
                    s.bulk_density,
                    _or_zero(s.lattice_water),
                    _or_zero(s.soc),
                    r=tdr_distance,
                )
                row["tdr_weighted"], row["tdr_d86"] = th, d86
                tdr_used[s.id] = list(depths.values())
            elif depths:
                log.info("station %s: TDR at %s cm only; no profile baseline", s.id, list(depths.values()))
        frames.append(row)
    if not frames:
        raise ValidationError("station_table: no station has a valid day")
    table = pd.concat(frames, ignore_index=True).sort_values(["station", "date"], kind="mergesort")
    table = table.reset_index(drop=True)
    if tdr and "tdr_weighted" not in table.columns:
        table["tdr_weighted"] = np.nan
    # features: drop the ones that cannot be used everywhere
    own = [*extra_cols, *cov_names, *swi_names]
    candidates = [
        "precipitation", *ef_names, *api_names, *irr_names, *wb_names, *MET_FEATURES, "doy_sin", "doy_cos",
        *STATIC_FEATURES, *own
    ]  # fmt: skip
    dropped: dict[str, str] = {}
    for c in candidates:
        v = table[c]
        if c in STATIC_FEATURES:
            unknown = sorted(table.loc[v.isna(), "station"].unique().tolist())
            if unknown:
                dropped[c] = f"unknown at station(s) {unknown}"
        elif not v.notna().any():
            dropped[c] = "no values at any station"
        elif c in own or c in wb_names:  # a covariate a whole station lacks would take it out of every fit
            has = table.groupby("station")[c].apply(lambda x: bool(x.notna().any()))
            none = sorted(has.index[~has].tolist())
            if none:
                dropped[c] = f"no values at station(s) {none}"
    for c, why in dropped.items():
        log.warning("station_table: feature %s left out: %s", c, why)
    lost = {c: why for c, why in dropped.items() if c in own or c in wb_names}
    if cov is not None:
        unmatched = sorted(set(cov["station"]) - set(table["station"]))
        if unmatched:
            n_rows = int(cov["station"].isin(unmatched).sum())
            lost["covariate rows"] = f"{n_rows} of stations {unmatched} not in the set"
    if lost:  # the network's own data, not used: the caller sees it
        warnings.warn(
            f"station_table: {len(lost)} of the network's own covariate column(s) or rows left out: "
            + "; ".join(f"{k} ({v})" for k, v in lost.items()),
            DataLossWarning,
            stacklevel=2,
        )
    features = [c for c in candidates if c not in dropped]
    units = {
        "precipitation": "mm d-1",
        **{n: "mm d-1" for n in ef_names},
        **{n: "mm d-1" for n in irr_names},
        **MET_FEATURES,
        "doy_sin": "1",
        "doy_cos": "1",
        **STATIC_FEATURES,
        **{c: columns[c]["units"] for c in [*extra_cols, *cov_names]},
        **{n: columns[parse_swi_feature_name(n)[0]]["units"] for n in swi_names},  # type: ignore[index]
        **{n: "m3 m-3" for n in wb_names},
        **{n: "mm" for n in api_names},
    }
    kinds = {
        "precipitation": "dynamic",
        **{n: "swi" for n in ef_names},
        **{n: ("dynamic" if n == "irrigation" else "swi") for n in irr_names},
        **{n: "dynamic" for n in MET_FEATURES},
        "doy_sin": "calendar",
        "doy_cos": "calendar",
        **{n: "static" for n in STATIC_FEATURES},
        **{c: "dynamic" for c in [*extra_cols, *cov_names]},
        **{n: "swi" for n in swi_names},
        **{n: "water_balance" for n in wb_names},
        **{n: "water_balance" for n in api_names},
    }
    for k, n in zip(api_ks, api_names, strict=True):
        columns[n] = {"source": f"antecedent precipitation index, k = {k:g} d⁻¹ (API = k·API(t−1) + P)", "units": "mm"}
    if wbp is not None:
        pet = "Oudin PET (daily mean air temperature)" if wbp["pet"] == "oudin" else "Hargreaves PET (daily min/max)"
        for d, n in zip(wbp["depths_mm"], wb_names, strict=True):
            columns[n] = {
                "source": f"bucket({d:g} mm; precipitation{' + irrigation' if irrigated else ''} − {pet} × stress "
                f"(β = 1 above {wbp['beta_fraction']:g} of the available water), drainage above field capacity; "
                f"FC/WP Saxton & Rawls 2006 from sand {wbp['sand']}, clay {wbp['clay']}, "
                f"OM {wbp['organic_matter']:g} %)",
                "units": "m3 m-3",
            }
        skipped = {k: v["skipped"] for k, v in wb_info.items() if v.get("skipped")}
        if skipped:
            log.info("station_table: water balance: days without input skipped (state kept): %s", skipped)
    for n in swi_names:
        src, t, _ = parse_swi_feature_name(n)  # type: ignore[misc]
        gap = "" if swi_max_gap is None else f", NaN after {swi_max_gap:g} days without a value"
        columns[n] = {"source": f"exp_filter({src}, T={t:g} d, carried{gap})", "units": units[n]}
    for c, info in columns.items():
        if "used" not in info:
            info["used"] = c in candidates and c not in dropped
            if c in dropped:
                info["why"] = dropped[c]
    table.attrs.update(
        {
            "features": features,
            "units": {f: units[f] for f in features},
            "kinds": {f: kinds[f] for f in features},
            "dropped_features": dropped,
            "T": Ts,
            "tdr_depths": tdr_used,
            "columns": columns,
            **({"water_balance": {"params": json_params(wbp), "stations": wb_info}} if wbp is not None else {}),
            **({"irrigation_source": irr_source} if irrigated else {}),
        }
    )
    return table


def _covariate_columns(
    daily: pd.DataFrame, covariates: pd.DataFrame | None, units: Mapping[str, str] | None, extras: bool
) -> tuple[pd.DataFrame | None, dict[str, dict[str, Any]], list[str]]:
    """The covariate table checked, every offered column with its source, units and fate, and the extras used."""
    units = dict(units or {})
    columns: dict[str, dict[str, Any]] = {}
    handled = {"station", "date", "precipitation", "irrigation", *MET_FEATURES}
    extra_cols: list[str] = []
    for c in daily.columns:
        c = str(c)
        if c in handled:
            continue
        base = re.sub(r"_\d+(\.\d+)?$", "", c)  # soil_temperature_5: a canonical series at a depth
        unit = units.get(c) or CANONICAL_COLUMNS.get(c) or CANONICAL_COLUMNS.get(base) or "unknown"
        info: dict[str, Any] = {"source": "station files (daily mean)", "units": unit}
        if c in NOT_COVARIATES:
            info.update(used=False, why=NOT_COVARIATES[c])
        elif c.startswith("f_"):
            info.update(used=False, why="a neutron correction factor of the counts-to-θ processing")
        elif _TDR_COLUMN.match(c):
            info.update(
                used=False, why="a TDR profile depth: an independent measurement of the target (the tdr baseline)"
            )
        elif not pd.api.types.is_numeric_dtype(daily[c]):
            info.update(used=False, why="not numeric")
        elif not extras:
            info.update(used=False, why="left out by choice (extras=False)")
        else:
            extra_cols.append(c)
        columns[c] = info
    if covariates is None:
        return None, columns, extra_cols
    if not isinstance(covariates, pd.DataFrame) or not {"station", "date"} <= set(covariates.columns):
        raise ConfigError("covariates should be a table with station, date and one column per covariate")
    cov = covariates.copy()
    cov["station"] = cov["station"].astype(str)
    cov["date"] = pd.DatetimeIndex(pd.to_datetime(cov["date"])).tz_localize(None).normalize()
    keep = ["station", "date"]
    for c in cov.columns:
        if c in ("station", "date"):
            continue
        c = str(c)
        clash = c in columns or c in handled or c in STATIC_FEATURES or c in ("target", "doy_sin", "doy_cos")
        info = {"source": "covariate table", "units": units.get(c, "unknown")}
        if clash:
            raise ConfigError(f"covariate column {c!r} has the name of a station column or feature; rename it")
        if c in NOT_COVARIATES or c.startswith("f_"):
            info.update(used=False, why=NOT_COVARIATES.get(c, "a neutron correction factor"))
        elif not pd.api.types.is_numeric_dtype(cov[c]):
            info.update(used=False, why=f"not numeric ({cov[c].dtype})")
        else:
            keep.append(c)
        columns[c] = info
    dup = cov.duplicated(["station", "date"])
    if dup.any():
        first = cov.loc[dup, ["station", "date"]].iloc[0]
        raise ConfigError(
            f"covariates: {int(dup.sum())} repeated station-day(s), e.g. {first['station']} {first['date']:%Y-%m-%d}"
        )
    return cov[keep], columns, extra_cols


def _swi_calendar(
    values: pd.DataFrame, cols: Sequence[str], Ts: Sequence[float], max_gap: float | None
) -> pd.DataFrame:
    """SWI of daily columns on their full calendar, carried over gaps of at most ``max_gap`` days
    (``exp_filter(carry=True, max_gap=...)``, as the gridded features)."""
    from smengine.filters import exp_filter

    v = values[list(cols)].copy()
    v.index = pd.DatetimeIndex(v.index).tz_localize(None).normalize()
    v = v.sort_index().asfreq("D")
    days = v.index.to_numpy()
    out = {}
    for c in cols:
        x = v[c].to_numpy(np.float64)
        swi = np.atleast_2d(exp_filter(x, days, list(Ts), carry=True, max_gap=max_gap))
        for t, s in zip(Ts, swi, strict=True):
            out[swi_feature_name(c, t, max_gap=max_gap)] = s
    return pd.DataFrame(out, index=v.index)


def _station_covariates(
    cov: pd.DataFrame, sid: str, swi_cols: Sequence[str], Ts: Sequence[float], max_gap: float | None
) -> pd.DataFrame:
    """One station's covariates by date, with the SWI of ``swi_cols`` on their full calendar."""
    g = cov[cov["station"] == str(sid)].drop(columns="station").set_index("date").sort_index()
    if g.empty:
        return pd.DataFrame(index=pd.DatetimeIndex([], name="date"))
    if swi_cols:
        g = g.join(_swi_calendar(g, swi_cols, Ts, max_gap), how="outer")
    return g


def read_covariates(path: PathLike, *, stations: StationSet | None = None) -> pd.DataFrame:
    """Daily covariates from a CSV: long (``station``, ``date``, one column per covariate) or
    wide for one covariate (``date`` and one column per station; the file's stem names it).

    Parameters
    ----------
    path : path
        The CSV.
    stations : StationSet, optional
        Check that the stations named exist (rows of others are an error naming them).

    Returns
    -------
    DataFrame
        Long: ``station``, ``date`` (naive day) and the covariate columns.

    Raises
    ------
    DataError
        Unreadable dates (the first bad value named) or stations not in ``stations``.
    """
    p = Path(path)
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{p}: cannot read the covariate table ({exc})") from exc
    lower = {str(c).lower(): c for c in df.columns}
    if "date" not in lower:
        raise DataError(f"{p}: no date column (columns: {', '.join(map(str, df.columns))})")
    df = df.rename(columns={lower["date"]: "date", **({lower["station"]: "station"} if "station" in lower else {})})
    if "station" not in df.columns:  # wide: one covariate, one column per station
        df = df.melt(id_vars="date", var_name="station", value_name=p.stem)
    dates = pd.to_datetime(df["date"], errors="coerce")
    if dates.isna().any():
        bad = df.loc[dates.isna(), "date"].iloc[0]
        raise DataError(f"{p}: unreadable date {bad!r}")
    df["date"] = dates.dt.tz_localize(None) if dates.dt.tz is not None else dates
    df["station"] = df["station"].astype(str)
    if stations is not None:
        unknown = sorted(set(df["station"]) - set(stations.ids))
        if unknown:
            raise DataError(f"{p}: station(s) {unknown} are not in the station set ({', '.join(stations.ids)})")
    return df


def _or_zero(v: float | None) -> float:
    return float(v) if v is not None and math.isfinite(float(v)) else 0.0


def _irrigation_calendar(
    sid: str,
    days: pd.DatetimeIndex,
    table: pd.DataFrame | None,
    own: pd.DataFrame,
    Ts: Sequence[float],
    source: dict[str, str],
) -> pd.DataFrame:
    """Daily irrigation of one station and its exponential filters on its full calendar."""
    from smengine.filters import exp_filter

    if table is not None and sid in table.columns:
        irr, source[sid] = table[sid].copy(), "table"
    elif sid in own.columns:
        irr, source[sid] = own[sid].copy(), "station"
    else:  # no record: not irrigated
        cal = pd.date_range(days.min(), days.max(), freq="D", name="date")
        irr, source[sid] = pd.Series(0.0, index=cal), "none (0 mm)"
        log.info("station %s: no irrigation record, taken as not irrigated (0 mm)", sid)
    irr.index = pd.DatetimeIndex(pd.to_datetime(irr.index)).tz_localize(None).normalize()
    irr = irr.sort_index().asfreq("D")
    ef = exp_filter(irr.to_numpy(np.float64), irr.index.to_numpy(), list(Ts))
    names = [f"irrigation_ef{t:g}" for t in Ts]
    return pd.DataFrame({"irrigation": irr.to_numpy(), **dict(zip(names, ef, strict=True))}, index=irr.index)


def select_features(
    table: pd.DataFrame, features: Sequence[str] | None = None, *, exclude: Sequence[str] = ()
) -> pd.DataFrame:
    """The station table with a chosen feature set (``attrs["features"]``), checked.

    Parameters
    ----------
    table : DataFrame
        From :func:`station_table`.
    features : sequence of str, optional
        Use exactly these (default: the table's own list).
    exclude : sequence of str, optional
        Then leave these out.

    Returns
    -------
    DataFrame
        A shallow copy with ``attrs["features"]`` (model order) and ``attrs["excluded_features"]``.

    Raises
    ------
    ConfigError
        A name that is not a column of the table (the available features listed), a
        feature left out by :func:`station_table` (with its reason), or nothing left.

    Examples
    --------
    >>> t = pd.DataFrame({"station": ["a"], "date": ["2020-01-01"], "target": [0.2], "x": [1.0], "y": [2.0]})
    >>> t.attrs["features"] = ["x", "y"]
    >>> select_features(t, exclude=["y"]).attrs["features"]
    ['x']
    """
    have = list(table.attrs.get("features") or [])
    dropped = dict(table.attrs.get("dropped_features") or {})
    want = list(features) if features is not None else have
    for name in [*want, *exclude]:
        if name in dropped:
            raise ConfigError(f"feature {name!r} is not usable: {dropped[name]}")
        if name not in table.columns or name in ("station", "date", "target"):
            raise ConfigError(f"unknown feature {name!r}; the table has: {', '.join(have)}")
    chosen = [f for f in dict.fromkeys(want) if f not in set(exclude)]
    if not chosen:
        raise ConfigError("no features left after the selection")
    out = table.copy(deep=False)
    out.attrs = dict(table.attrs)
    out.attrs["features"] = chosen
    out.attrs["excluded_features"] = sorted(set(have) - set(chosen))
    for k in ("units", "kinds"):
        if isinstance(out.attrs.get(k), dict):
            out.attrs[k] = {f: v for f, v in out.attrs[k].items() if f in chosen}
    return out
