r"""Real-data emulation at CRNS stations: point covariates, the forest and its baselines.

The gridded chain runs on the synthetic twin; this module tests the learning part on real
CRNS records with the covariates that exist *at* the stations:

* :func:`station_table` — one row per station and UTC day: the CRNS soil moisture (the
  target, from :meth:`smengine.stations.StationSet.daily`) and point features: daily
  precipitation (the station gauge or a given table, e.g. PRISM via
  :func:`read_daily_precipitation`), its exponential filter at several T
  (:func:`smengine.filters.exp_filter`: an antecedent-precipitation index), air
  temperature, relative and absolute humidity, pressure, day of year and the static site
  descriptors (bulk density, lattice water, SOC, elevation, a coarse land-cover class).
  Where the station has a TDR profile (columns ``tdr_<depth cm>``), the profile is
  weighted with the vertical footprint (:func:`tdr_footprint_average`) as an independent
  measurement of the same quantity.
* :func:`temporal_split` — train before a split date, test from it on (the single-site
  case: COSMOS-Europe FSC001 Fürstensee, first ~2.4 years vs the rest).
* :func:`leave_site_out` — one station held out per fold (the 15 Roaring Fork stations).
* :func:`run_experiments` — both, with ``report.md``, CSV tables and one PNG per experiment.

Every experiment fits the same forest code (:func:`smengine.model.train`, SCIENCE §4.3
defaults) and measures side by side, on the same test rows:

``forest``  the Random Forest;
``linear``  ordinary least squares (scikit-learn ``LinearRegression``) on the same features
            standardised with the training rows' mean and SD (``StandardScaler``);
``mean``    the mean target of the training rows (a constant);
``tdr``     the footprint-weighted TDR profile of the test day (not a model; where present).

NaN policy: the forest and the linear model are fitted on the *complete* training rows
(finite target and features) and predict only complete rows; all methods are scored on
the test rows with a finite target and a forest prediction (``tdr`` also needs the
profile), so every method sees the same days. Scores are per station
(:func:`smengine.evaluate.site_scores`: R, ubRMSE, bias, KGE; ≥ 30 days) and their median.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine._io import atomic_write
from smengine.errors import ConfigError, DataError, ValidationError
from smengine.stations import Station, StationSet, step_hours

__all__ = [
    "DEFAULT_T",
    "LAND_COVER_CLASSES",
    "METHODS",
    "ExperimentResult",
    "ExperimentsReport",
    "daily_precipitation",
    "land_cover_class",
    "leave_site_out",
    "linear_baseline",
    "read_daily_precipitation",
    "read_station_set",
    "run_experiments",
    "station_table",
    "tdr_footprint_average",
    "temporal_split",
]

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

#: Characteristic times (days) of the antecedent-precipitation features.
DEFAULT_T = (1.0, 3.0, 7.0, 15.0, 30.0)
#: Daily met features (daily means of the station series) and their units.
MET_FEATURES = {"air_temperature": "degC", "rel_humidity": "%", "abs_humidity": "g m-3", "pressure": "hPa"}
#: Static site descriptors (from :class:`~smengine.stations.Station`) and their units.
STATIC_FEATURES = {"bulk_density": "g cm-3", "lattice_water": "g g-1", "soc": "g g-1", "elevation": "m",
                   "land_cover_class": "1"}  # fmt: skip
#: Coarse land-cover classes (codes = position) and the words that map a station's text to them.
LAND_COVER_CLASSES: dict[str, tuple[str, ...]] = {
    "forest": ("forest", "wood", "pine", "spruce", "fir", "aspen", "oak", "cottonwood", "beech", "tree", "conifer",
               "deciduous"),
    "grassland": ("grass", "meadow", "pasture", "prairie", "steppe", "lawn"),
    "shrubland": ("shrub", "sage", "heath", "scrub", "bush"),
    "cropland": ("crop", "alfalfa", "arable", "agricult", "cultivat", "irrigat", "farm", "field"),
    "wetland": ("wetland", "riparian", "marsh", "bog", "swamp", "peat", "floodplain", "fen"),
    "bare": ("bare", "urban", "sand", "rock", "desert"),
    "other": (),
}  # fmt: skip
#: The methods every experiment scores, in report order.
METHODS = ("forest", "linear", "mean", "tdr")
#: Lower/upper bounds of θ fed to D86 (it needs θ inside (0, 1)).
_THETA_D86 = (1e-3, 0.95)
_TDR_COLUMN = re.compile(r"^tdr_(\d+(?:\.\d+)?)$")
_SCORE_KEYS = ("n", "R", "ubRMSE", "bias", "KGE")


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


def read_daily_precipitation(path: PathLike, stations: StationSet | None = None) -> pd.DataFrame:
    """Daily precipitation per site from a wide CSV (e.g. the Roaring Fork ``DailyPRISM_Ppt.csv``).

    Parameters
    ----------
    path : path
        CSV with a ``date`` (or ``Date``) column — ISO 8601 or ``m/d/Y`` as PRISM's — and
        one column per site, mm day⁻¹ (UTC days). Unnamed index columns are ignored.
    stations : StationSet, optional
        Rename site columns to station ids: a column matches a station whose ``id`` or
        ``name`` equals it ignoring spaces and case (PRISM's ``"RF5"`` ↔ ``"RF 5"``).

    Returns
    -------
    pandas.DataFrame
        Index ``date`` (naive datetime64 days), one column per site or station, mm.

    Raises
    ------
    DataError
        Missing file or date column, unparseable dates (the value named).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such precipitation file")
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
        df = df.rename(columns=lambda c: lookup.get(_norm_name(c), c))
    return df


def read_station_set(source: PathLike, fmt: str | None, metadata: PathLike | None = None) -> StationSet:
    """Read a station set with the reader named ``fmt`` (a :data:`smengine.stations.FORMATS` key;
    ``None``: guessed), as ``smengine stations --format``; ``metadata`` is the station table
    of the ``csv`` format."""
    from smengine.stations import open_stations

    return open_stations(source, fmt, **({"metadata": metadata} if metadata is not None else {}))


def daily_precipitation(stations: StationSet, min_hours: float = 18.0) -> pd.DataFrame:
    """Daily precipitation sums (mm) of the stations' own gauges on UTC days.

    A day is kept when its finite precipitation steps cover ``min_hours`` (step length =
    median spacing, at most 24 h: a daily gauge series counts 24 h a day), else it is NaN:
    a missing gauge is not a dry day.

    Returns
    -------
    pandas.DataFrame
        Index ``date`` (naive UTC days, continuous from each record's first to last day),
        one column per station with a ``precipitation`` column.
    """
    cols = {}
    for s in stations.values():
        if "precipitation" not in s.data.columns or not s.data["precipitation"].notna().any():
            continue
        pr = s.data["precipitation"]
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

        data = data.assign(abs_humidity=absolute_humidity(data["rel_humidity"].to_numpy(np.float64),
                                                          data["air_temperature"].to_numpy(np.float64)))  # fmt: skip
    have = [c for c in MET_FEATURES if c in data.columns]
    day = data.index.floor("D").tz_localize(None)
    if not have:
        return pd.DataFrame(index=pd.DatetimeIndex(day.unique(), name="date"))
    out = data[have].groupby(day).mean()
    out.index.name = "date"
    return out


def station_table(
    stations: StationSet,
    *,
    precipitation: pd.DataFrame | None = None,
    T: Sequence[float] = DEFAULT_T,
    min_hours: float = 18.0,
    tdr: bool = True,
    tdr_distance: float = 0.0,
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

    Returns
    -------
    pandas.DataFrame
        Columns ``station``, ``date`` (naive UTC day), ``target`` (θ_CRNS, m³ m⁻³), the
        features and, where available, the TDR columns; sorted by station and date.
        ``attrs``: ``features`` (names in model order), ``units``, ``kinds``,
        ``dropped_features`` (feature → reason; e.g. a static descriptor unknown at some
        station or a met series absent everywhere), ``tdr_depths`` (station → depths, cm,
        of its TDR baseline: the depths it measures at all, at least two; a day needs all).

        ========================= ========== ==========================================
        feature                   unit       meaning
        ========================= ========== ==========================================
        ``precipitation``         mm d⁻¹     the day's precipitation
        ``precip_ef<T>``          mm d⁻¹     exp. filter of daily precipitation, T days
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
    gauge = daily_precipitation(stations, min_hours)
    ef_names = [f"precip_ef{t:g}" for t in Ts]
    frames = []
    tdr_used: dict[str, list[float]] = {}
    for s in stations.values():
        d = daily[daily["station"] == s.id]
        if d.empty:
            log.info("station %s: no valid days", s.id)
            continue
        keep = ["date", "sm", *[c for c in d.columns if _TDR_COLUMN.match(str(c))]]
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
        met = _calendar_met(s)
        row = d.join(cal, how="left").join(met, how="left")
        for c in ["precipitation", *ef_names, *MET_FEATURES]:
            if c not in row.columns:
                row[c] = np.nan
        row["precip_source"] = src
        row = row.reset_index()
        row.insert(0, "station", s.id)
        cal_f = calendar_features(row["date"].to_numpy())
        row["doy_sin"], row["doy_cos"] = cal_f["doy_sin"], cal_f["doy_cos"]
        static = {"bulk_density": s.bulk_density, "lattice_water": s.lattice_water, "soc": s.soc,
                  "elevation": s.elevation, "land_cover_class": land_cover_class(s.land_cover)}  # fmt: skip
        for k, v in static.items():
            row[k] = float(v) if v is not None else math.nan
        if tdr:
            # the depths this station measures at all; a profile needs at least two of them
            depths = {c: z for c, z in _tdr_depths(row.columns).items() if row[c].notna().any()}
            if len(depths) >= 2 and math.isfinite(s.bulk_density):
                th, d86 = tdr_footprint_average(row[list(depths)].to_numpy(), list(depths.values()), s.bulk_density,
                                                s.lattice_water or 0.0, s.soc or 0.0, r=tdr_distance)  # fmt: skip
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
    candidates = ["precipitation", *ef_names, *MET_FEATURES, "doy_sin", "doy_cos", *STATIC_FEATURES]
    dropped: dict[str, str] = {}
    for c in candidates:
        v = table[c]
        if c in STATIC_FEATURES:
            unknown = sorted(table.loc[v.isna(), "station"].unique().tolist())
            if unknown:
                dropped[c] = f"unknown at station(s) {unknown}"
        elif not v.notna().any():
            dropped[c] = "no values at any station"
    for c, why in dropped.items():
        log.warning("station_table: feature %s left out: %s", c, why)
    features = [c for c in candidates if c not in dropped]
    units = {"precipitation": "mm d-1", **{n: "mm d-1" for n in ef_names}, **MET_FEATURES, "doy_sin": "1",
             "doy_cos": "1", **STATIC_FEATURES}  # fmt: skip
    kinds = {"precipitation": "dynamic", **{n: "swi" for n in ef_names}, **{n: "dynamic" for n in MET_FEATURES},
             "doy_sin": "calendar", "doy_cos": "calendar", **{n: "static" for n in STATIC_FEATURES}}  # fmt: skip
    table.attrs.update({"features": features, "units": {f: units[f] for f in features},
                        "kinds": {f: kinds[f] for f in features}, "dropped_features": dropped, "T": Ts,
                        "tdr_depths": tdr_used})  # fmt: skip
    return table


# ======================================================================================
# the experiments
# ======================================================================================
@dataclass
class ExperimentResult:
    """One experiment: per-row predictions, per-station scores, folds.

    Attributes
    ----------
    name : str
        ``"temporal"`` or ``"leave-site-out"``.
    predictions : DataFrame
        Test rows: ``station, date, fold, obs`` and one column per method of
        :data:`METHODS` (NaN where a method cannot predict, and on rows not scored).
    scores : DataFrame
        Long: ``method, station`` (``"median"`` last), ``n, R, ubRMSE, bias, KGE``.
    folds : list of dict
        ``fold``, ``train_stations``, ``test_stations``, ``n_train``, ``n_test``,
        ``train_end``/``test_start`` (temporal), the linear model's coefficients.
    features : list of str
    params : dict
        Split, forest settings and the forest's hyper-parameters.
    """

    name: str
    predictions: pd.DataFrame
    scores: pd.DataFrame
    folds: list[dict[str, Any]]
    features: list[str]
    params: dict[str, Any] = field(default_factory=dict)

    def medians(self) -> pd.DataFrame:
        """Median over stations per method (rows) and metric (columns)."""
        m = self.scores[self.scores["station"] == "median"].set_index("method")
        return m[list(_SCORE_KEYS)].reindex([x for x in METHODS if x in m.index])

    def station_scores(self, method: str) -> pd.DataFrame:
        """Per-station scores (and the median row) of one method."""
        return self.scores[self.scores["method"] == method].set_index("station")[list(_SCORE_KEYS)]

    def forest_beats(self) -> dict[str, bool]:
        """Whether the forest's median ubRMSE is lower than each baseline model's."""
        m = self.medians()["ubRMSE"]
        return {b: bool(m.get("forest", np.nan) < m.get(b, np.nan)) for b in ("mean", "linear")}


def linear_baseline(train: pd.DataFrame, test: pd.DataFrame, features: Sequence[str],
                    target: str = "target") -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
    """OLS on the standardised features, fitted on the complete training rows.

    ``StandardScaler`` (training mean and SD; a constant feature becomes 0 and gets
    coefficient 0) then ``LinearRegression``. Test rows with a NaN feature get NaN.

    Returns
    -------
    prediction : ndarray, shape (len(test),)
    info : dict
        ``n_train``, ``intercept``, ``coef`` (per feature, standardised units).
    """
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f = list(features)
    X = train[f].to_numpy(np.float64)
    y = train[target].to_numpy(np.float64)
    ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
    if not ok.any():
        raise ValidationError("linear baseline: no complete training rows")
    model = make_pipeline(StandardScaler(), LinearRegression()).fit(X[ok], y[ok])
    Xt = test[f].to_numpy(np.float64)
    okt = np.isfinite(Xt).all(axis=1)
    pred = np.full(len(test), np.nan)
    if okt.any():
        pred[okt] = model.predict(Xt[okt])
    lr = model[-1]
    return pred, {"n_train": int(ok.sum()), "intercept": float(lr.intercept_),
                  "coef": {k: float(v) for k, v in zip(f, lr.coef_, strict=True)}}  # fmt: skip


def _complete(table: pd.DataFrame, features: Sequence[str], target: str = "target") -> np.ndarray:
    X = table[list(features)].to_numpy(np.float64)
    return np.isfinite(X).all(axis=1) & np.isfinite(table[target].to_numpy(np.float64))


def _fit_predict(train_rows: pd.DataFrame, test_rows: pd.DataFrame, features: Sequence[str], *, n_estimators: int,
                 search: bool, random_state: int, n_jobs: int | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:  # fmt: skip
    """Forest, linear and mean fitted on ``train_rows``, predicted on ``test_rows``."""
    from smengine.model import train

    comp = train_rows[_complete(train_rows, features)]
    if comp.empty:
        raise ValidationError("no complete training rows (every row has a NaN feature or target)")
    n_sites = comp["station"].nunique()
    forest = train(comp, list(features), "target", cv=(), search=search and n_sites >= 2, n_estimators=n_estimators,
                   random_state=random_state, n_jobs=n_jobs, progress=False)  # fmt: skip
    lin, info = linear_baseline(comp, test_rows, features)
    pred = {
        "forest": forest.predict(test_rows),
        "linear": lin,
        "mean": np.full(len(test_rows), float(comp["target"].mean())),
    }
    hp = {k: forest.estimator.get_params()[k] for k in ("max_features", "min_samples_leaf", "n_estimators")}
    return pred, {"n_train": len(comp), "train_mean": float(comp["target"].mean()), "linear": info,
                  "forest": hp, "forest_hash": forest.card.content_hash}  # fmt: skip


def _score(pred: pd.DataFrame) -> pd.DataFrame:
    import warnings

    from scipy.stats import ConstantInputWarning

    from smengine.evaluate import site_scores

    rows = []
    for m in METHODS:
        if m not in pred.columns or not pred[m].notna().any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConstantInputWarning)
            s = site_scores(pred, pred=m, obs="obs", min_obs=30)
        s = s[list(_SCORE_KEYS)].reset_index()
        if m == "mean":  # a constant: R (and so KGE) undefined, not the round-off of a zero variance
            s[["R", "KGE"]] = np.nan
        s.insert(0, "method", m)
        rows.append(s)
    return pd.concat(rows, ignore_index=True)


def _mask_common(pred: pd.DataFrame) -> pd.DataFrame:
    """Score every method on the same rows: finite obs and a forest prediction."""
    ok = pred["obs"].notna() & pred["forest"].notna()
    for m in METHODS:
        if m in pred.columns:
            pred.loc[~ok, m] = np.nan
    return pred


def _check_table(table: pd.DataFrame, features: Sequence[str] | None) -> tuple[list[str], pd.DataFrame]:
    """The feature list and a copy of the table with parsed dates."""
    if not isinstance(table, pd.DataFrame):
        raise ConfigError("need a station table (DataFrame from station_table)")
    f = list(features) if features is not None else list(table.attrs.get("features") or [])
    if not f:
        raise ConfigError("no features: pass features=[...] or a table from station_table")
    missing = [c for c in ("station", "date", "target", *f) if c not in table.columns]
    if missing:
        raise ConfigError(f"table lacks column(s) {missing}")
    t = table.copy()
    t["date"] = pd.to_datetime(t["date"])
    return f, t


def _fold(train: pd.DataFrame, test: pd.DataFrame, features: Sequence[str], fold: int,
          **fit: Any) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """Fit every method on ``train`` and predict ``test``: the fold's prediction frame (common days) and fit info."""
    pred, info = _fit_predict(train, test, features, **fit)
    out = pd.DataFrame({"station": test["station"], "date": test["date"], "fold": fold, "obs": test["target"], **pred,
                        "tdr": test.get("tdr_weighted", np.nan)})  # fmt: skip
    return _mask_common(out), info


def temporal_split(
    table: pd.DataFrame,
    *,
    split_date: str | pd.Timestamp | None = None,
    train_years: float = 2.4,
    features: Sequence[str] | None = None,
    n_estimators: int = 500,
    search: bool = False,
    random_state: int = 0,
    n_jobs: int | None = -1,
) -> ExperimentResult:
    """Train on the days before ``split_date``, test on the days from it on.

    Parameters
    ----------
    table : DataFrame
        From :func:`station_table` (one station: the single-site case; several are pooled).
    split_date : date-like, optional
        First test day (default: the first day + ``train_years`` × 365.25 days).
    train_years : float, optional
        Length of the training period when ``split_date`` is not given (default 2.4).
    features : sequence of str, optional
        Default ``table.attrs["features"]``.
    n_estimators, search, random_state, n_jobs
        Passed to :func:`smengine.model.train` (``search`` needs ≥ 2 stations).

    Returns
    -------
    ExperimentResult
    """
    f, t = _check_table(table, features)
    first = t["date"].min()
    if split_date is None:
        split = (first + pd.Timedelta(days=float(train_years) * 365.25)).normalize()
    else:
        split = pd.Timestamp(split_date)
        split = split.tz_convert(None) if split.tz is not None else split
    tr, te = t[t["date"] < split], t[t["date"] >= split].reset_index(drop=True)
    if tr.empty or te.empty:
        raise ValidationError(f"split date {split:%Y-%m-%d} leaves no training or no test days "
                              f"(data {first:%Y-%m-%d} … {t['date'].max():%Y-%m-%d})")  # fmt: skip
    out, info = _fold(tr, te, f, 0, n_estimators=n_estimators, search=search, random_state=random_state, n_jobs=n_jobs)
    comp_tr = tr[_complete(tr, f)]
    folds = [{"fold": 0, "train_stations": sorted(comp_tr["station"].unique().tolist()),
              "test_stations": sorted(te["station"].unique().tolist()), "n_test": int(out["forest"].notna().sum()),
              "train_start": str(comp_tr["date"].min().date()), "train_end": str(comp_tr["date"].max().date()),
              "test_start": str(te["date"].min().date()), "test_end": str(te["date"].max().date()), **info}]  # fmt: skip
    params = {"split_date": str(split.date()), "train_years": train_years, "n_estimators": n_estimators,
              "search": search, "random_state": random_state}  # fmt: skip
    return ExperimentResult("temporal", out, _score(out), folds, f, params)


def leave_site_out(
    table: pd.DataFrame,
    *,
    features: Sequence[str] | None = None,
    n_estimators: int = 500,
    search: bool = False,
    random_state: int = 0,
    n_jobs: int | None = -1,
) -> ExperimentResult:
    """Hold out one station per fold; fit on all the others (forest, linear, mean).

    Each fold calls :func:`smengine.model.train` on the other stations' complete rows
    (``cv=()``; with ``search`` the hyper-parameters are tuned by leave-site-out CV
    *inside* the training stations, i.e. nested), so the held-out station is never seen.

    Returns
    -------
    ExperimentResult
    """
    f, t = _check_table(table, features)
    sites = sorted(t["station"].unique().tolist())
    if len(sites) < 2:
        raise ValidationError(f"leave-site-out needs at least 2 stations, got {sites}")
    frames, folds = [], []
    for k, sid in enumerate(sites):
        tr = t[t["station"] != sid]
        te = t[t["station"] == sid].reset_index(drop=True)
        out, info = _fold(tr, te, f, k, n_estimators=n_estimators, search=search, random_state=random_state,
                          n_jobs=n_jobs)  # fmt: skip
        frames.append(out)
        folds.append({"fold": k, "train_stations": sorted(tr.loc[_complete(tr, f), "station"].unique().tolist()),
                      "test_stations": [sid], "n_test": int(frames[-1]["forest"].notna().sum()), **info})  # fmt: skip
        log.info("leave-site-out fold %d/%d (%s): %d train rows", k + 1, len(sites), sid, info["n_train"])
    out = pd.concat(frames, ignore_index=True)
    params = {"n_estimators": n_estimators, "search": search, "random_state": random_state, "n_folds": len(sites)}
    return ExperimentResult("leave-site-out", out, _score(out), folds, f, params)


# ======================================================================================
# report
# ======================================================================================
@dataclass
class ExperimentsReport:
    """What :func:`run_experiments` made: the results and the files written."""

    results: dict[str, ExperimentResult]
    tables: dict[str, pd.DataFrame]
    report: Path
    files: list[Path]


def _default_data_dir() -> Path:
    env = os.environ.get("SMENGINE_DATA")
    cands = [Path(env)] if env else []
    cands += [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[3] / "shared" / "data"]
    for c in cands:
        if c.is_dir():
            return c
    raise ConfigError("real data not found: pass data_dir / --data, or set SMENGINE_DATA")


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{nd}f}"


def _markdown_scores(res: ExperimentResult) -> str:
    methods = [m for m in METHODS if m in set(res.scores["method"])]
    head = "| station | " + " | ".join(f"{m} n | {m} R | {m} ubRMSE | {m} bias | {m} KGE" for m in methods) + " |"
    sep = "|---|" + "---:|" * (5 * len(methods))
    per = {m: res.station_scores(m) for m in methods}
    stations = [s for s in per["forest"].index if s != "median"] + ["median"]
    lines = [head, sep]
    for s in stations:
        cells = []
        for m in methods:
            r = per[m].loc[s] if s in per[m].index else pd.Series(dtype=float)
            cells += [_fmt(r.get("n"), 0) if s != "median" else "", _fmt(r.get("R")), _fmt(r.get("ubRMSE"), 4),
                      _fmt(r.get("bias"), 4), _fmt(r.get("KGE"))]  # fmt: skip
        name = "**median**" if s == "median" else s
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown_medians(res: ExperimentResult) -> str:
    m = res.medians()
    lines = ["| method | R | ubRMSE | bias | KGE |", "|---|---:|---:|---:|---:|"]
    for meth, r in m.iterrows():
        lines.append(f"| {meth} | {_fmt(r['R'])} | {_fmt(r['ubRMSE'], 4)} | {_fmt(r['bias'], 4)} | {_fmt(r['KGE'])} |")
    return "\n".join(lines)


def _verdict(res: ExperimentResult) -> str:
    m = res.medians()["ubRMSE"]
    beats = res.forest_beats()
    parts = [f"median ubRMSE: forest {_fmt(m.get('forest'), 4)}, linear {_fmt(m.get('linear'), 4)}, "
             f"training mean {_fmt(m.get('mean'), 4)}" + (f", TDR {_fmt(m.get('tdr'), 4)}" if "tdr" in m else "")]  # fmt: skip
    if all(beats.values()):
        parts.append("the forest beats both the training mean and the linear model.")
    else:
        lost = [b for b, ok in beats.items() if not ok]
        parts.append(f"the forest does NOT beat the {' and the '.join(lost)} baseline (see the note below).")
    return "; ".join(parts)


def _plot_temporal(res: ExperimentResult, table: pd.DataFrame, path: Path) -> Path:
    from smengine.evaluate import _plt, _save

    plt = _plt()
    sites = sorted(res.predictions["station"].unique())
    fig, axes = plt.subplots(len(sites), 1, figsize=(10, 3.2 * len(sites)), squeeze=False)
    split = pd.Timestamp(res.params["split_date"])
    for ax, sid in zip(axes[:, 0], sites, strict=True):
        # on a daily calendar, so gaps show as gaps
        obs = table[table["station"] == sid].set_index("date")["target"].asfreq("D")
        ax.plot(obs.index, obs.to_numpy(), color="k", lw=1.0, label="CRNS θ")
        p = res.predictions[res.predictions["station"] == sid].set_index("date").asfreq("D")
        for m, c in (("forest", "tab:green"), ("linear", "tab:blue"), ("mean", "tab:gray"), ("tdr", "tab:orange")):
            if p[m].notna().any():
                ax.plot(p.index, p[m].to_numpy(), lw=0.9, color=c, label=m)
        ax.axvline(split, color="r", ls="--", lw=1)
        ax.set_ylabel("θ (m³ m⁻³)")
        ax.set_title(f"{sid}: trained before {split:%Y-%m-%d} (red), tested after")
        ax.legend(loc="upper right", ncol=5, fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, path)


def _plot_lso(res: ExperimentResult, path: Path) -> Path:
    from smengine.evaluate import _plt, _save

    plt = _plt()
    methods = [m for m in METHODS if m in set(res.scores["method"])]
    sites = [s for s in res.station_scores("forest").index if s != "median"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    w = 0.8 / len(methods)
    x = np.arange(len(sites))
    for i, m in enumerate(methods):
        s = res.station_scores(m).reindex(sites)["ubRMSE"]
        a1.bar(x + i * w, s.to_numpy(), w, label=f"{m} (median {_fmt(res.medians().loc[m, 'ubRMSE'], 3)})")
    a1.set_xticks(x + w * (len(methods) - 1) / 2, sites)
    a1.set_ylabel("ubRMSE (m³ m⁻³)")
    a1.set_title("leave-site-out: ubRMSE per held-out station")
    a1.legend(fontsize=8)
    p = res.predictions.dropna(subset=["forest"])
    a2.plot(p["obs"], p["forest"], ".", ms=2, alpha=0.4, label="forest")
    lo, hi = float(p[["obs", "forest"]].min().min()), float(p[["obs", "forest"]].max().max())
    a2.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    a2.set_xlabel("CRNS θ (m³ m⁻³)")
    a2.set_ylabel("forest (m³ m⁻³)")
    a2.set_title("held-out station-days")
    return _save(fig, path)


def _load_default(data_dir: Path, which: str) -> tuple[StationSet, pd.DataFrame | None]:
    from smengine import stations as st

    if which == "temporal":
        return st.read_fuerstensee(data_dir / "crns" / "neptoon_examples"), None
    root = data_dir / "crns" / "roaring_fork_co_usgs"
    ss = st.read_roaring_fork(root)
    return ss, read_daily_precipitation(root / "DailyPRISM_Ppt.csv", ss)


def run_experiments(
    out_dir: PathLike,
    data_dir: PathLike | None = None,
    *,
    experiments: Sequence[str] = ("temporal", "leave-site-out"),
    stations: StationSet | None = None,
    precipitation: pd.DataFrame | None = None,
    split_date: str | None = None,
    train_years: float = 2.4,
    T: Sequence[float] = DEFAULT_T,
    n_estimators: int = 500,
    search: bool = False,
    random_state: int = 0,
    n_jobs: int | None = -1,
    plots: bool = True,
) -> ExperimentsReport:
    """Run the station experiments and write ``report.md``, CSV tables and PNGs into ``out_dir``.

    Without ``stations``: the temporal split at Fürstensee (COSMOS-Europe FSC001, station
    gauge precipitation; ``<data>/crns/neptoon_examples``) and leave-site-out over the 15
    Roaring Fork stations (PRISM precipitation; ``<data>/crns/roaring_fork_co_usgs``).
    With ``stations`` (any reader's :class:`StationSet`), every requested experiment runs on
    that set (``precipitation`` optionally overrides gauges).

    Parameters
    ----------
    out_dir : path
    data_dir : path, optional
        Real data root (default ``$SMENGINE_DATA`` or ``../shared/data``); unused with
        ``stations``.
    experiments : sequence of {"temporal", "leave-site-out"}
    stations, precipitation : optional
        A station set of your own and its daily precipitation (see :func:`station_table`).
    split_date, train_years : optional
        Temporal split (see :func:`temporal_split`).
    T : sequence of float
        Antecedent-precipitation times, days.
    n_estimators, search, random_state, n_jobs
        Forest settings (:func:`smengine.model.train`); deterministic for a seed.
    plots : bool
        Write the PNGs (needs matplotlib).

    Files
    -----
    ``report.md``; per experiment ``<name>_scores.csv`` (long: method, station, n, R,
    ubRMSE, bias, KGE), ``<name>_predictions.csv``, ``<name>.png``; ``summary.json``.
    """
    exps = tuple(dict.fromkeys(experiments))
    bad = [e for e in exps if e not in ("temporal", "leave-site-out")]
    if bad or not exps:
        raise ConfigError(f"unknown experiment(s) {bad or exps}; choose from temporal, leave-site-out")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    root = None if stations is not None else (Path(data_dir) if data_dir is not None else _default_data_dir())
    results: dict[str, ExperimentResult] = {}
    tables: dict[str, pd.DataFrame] = {}
    files: list[Path] = []
    sources: dict[str, str] = {}
    for e in exps:
        if stations is not None:
            ss, pr, src = stations, precipitation, "given station set"
        else:
            assert root is not None
            ss, pr = _load_default(root, e)
            src = ("COSMOS-Europe FSC001 Fürstensee (neptoon example, raw counts → θ), station gauge"
                   if e == "temporal" else "USGS Roaring Fork, 15 stations (raw counts → θ), PRISM precipitation")
        table = station_table(ss, precipitation=pr, T=T)
        tables[e] = table
        sources[e] = src
        kw: dict[str, Any] = {"n_estimators": n_estimators, "search": search, "random_state": random_state,
                              "n_jobs": n_jobs}  # fmt: skip
        res = temporal_split(table, split_date=split_date, train_years=train_years, **kw) if e == "temporal" \
            else leave_site_out(table, **kw)  # fmt: skip
        results[e] = res
        stem = e.replace("-", "_")
        for name, df in ((f"{stem}_scores.csv", res.scores), (f"{stem}_predictions.csv", res.predictions)):
            atomic_write(out / name, df.to_csv(index=False, float_format="%.6g").encode())
            files.append(out / name)
        if plots:
            files.append(_plot_temporal(res, table, out / f"{stem}.png") if e == "temporal"
                         else _plot_lso(res, out / f"{stem}.png"))  # fmt: skip
    rep = _report(results, tables, sources, plots)
    atomic_write(out / "report.md", rep.encode())
    summary = {e: {"medians": {m: {k: (None if not np.isfinite(v) else float(v)) for k, v in r.items()}
                               for m, r in res.medians().iterrows()},
                   "forest_beats": res.forest_beats(), "params": res.params, "features": res.features}
               for e, res in results.items()}  # fmt: skip
    atomic_write(out / "summary.json", json.dumps(summary, indent=1, default=str).encode())
    files += [out / "report.md", out / "summary.json"]
    return ExperimentsReport(results, tables, out / "report.md", files)


def _report(results: Mapping[str, ExperimentResult], tables: Mapping[str, pd.DataFrame], sources: Mapping[str, str],
            plots: bool) -> str:  # fmt: skip
    import smengine

    L = ["# Real-data emulation at CRNS stations", "",
         (f"smengine {smengine.__version__}. Target: daily CRNS θ (UTC days, ≥ 18 valid hours). Methods scored on the "
         "same test days (finite CRNS θ and a forest prediction): **forest** (`smengine.model.train`, SCIENCE §4.3 "
         "defaults), **linear** (OLS on standardised features), **mean** (training-row mean), **tdr** (TDR profile "
         "weighted with the vertical footprint at that day's D86; a measurement, not a model). Scores per station "
         "(≥ 30 days) with `smengine.evaluate.site_scores`; bias = prediction − CRNS, m³ m⁻³."), ""]  # fmt: skip
    for e, res in results.items():
        t = tables[e]
        title = "Single-site temporal split" if e == "temporal" else "Leave-site-out"
        L += [f"## {title} ({e})", "", (f"Data: {sources[e]}; {t['station'].nunique()} station(s), "
              f"{len(t)} station-days {t['date'].min():%Y-%m-%d} … {t['date'].max():%Y-%m-%d}."), ""]  # fmt: skip
        L.append(f"Features ({len(res.features)}): {', '.join(f'`{f}`' for f in res.features)}.")
        dropped = t.attrs.get("dropped_features") or {}
        if dropped:
            L.append("Left out: " + "; ".join(f"`{k}` ({v})" for k, v in dropped.items()) + ".")
        f0 = res.folds[0]
        if e == "temporal":
            L.append(f"Split: train {f0['train_start']} … {f0['train_end']} ({f0['n_train']} complete days), "
                     f"test {f0['test_start']} … {f0['test_end']} ({f0['n_test']} days scored).")  # fmt: skip
        else:
            L.append(f"{len(res.folds)} folds, one held-out station each; training rows per fold "
                     f"{min(f['n_train'] for f in res.folds)}–{max(f['n_train'] for f in res.folds)}.")  # fmt: skip
        L.append(f"Forest: {f0['forest']}, seed {res.params['random_state']}, search {res.params['search']}.")
        n_inc = int((~_complete(t, res.features)).sum())
        if n_inc:
            L.append(f"{n_inc} station-days have a missing feature (e.g. no precipitation record) and are neither "
                     "trained on nor scored.")  # fmt: skip
        depths = t.attrs.get("tdr_depths") or {}
        if depths:
            L.append("TDR profile depths (cm): " + "; ".join(f"{k} {v}" for k, v in depths.items()) +
                     "; stations with fewer than two depths have no TDR baseline.")  # fmt: skip
        L += ["", "Medians over stations:", "", _markdown_medians(res), "", "Per station:", "", _markdown_scores(res), ""]
        L += [f"**Verdict:** {_verdict(res)}", ""]
        if plots:
            L += [f"![{e}]({e.replace('-', '_')}.png)", ""]
    return "\n".join(L) + "\n"
