"""Quality control and counts → soil moisture (SCIENCE.md §5.3): range flags, the incoming-flux
series, corrections, conversion."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine import neutrons as nt
from smengine.errors import ConfigError, DataError, DataLossWarning, ValidationError
from smengine.stations._core import _SUMMED, PHYSICAL_RANGE, QC, PathLike
from smengine.stations._parse import _parse_times

log = logging.getLogger(__name__)


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


#: Soil temperature (°C) below which a step is flagged :attr:`QC.SNOW` (frozen soil; COSMOS practice).
FROZEN_SOIL_TEMPERATURE = 1.0
#: Daily mean air temperature (°C) below which a day is flagged :attr:`QC.SNOW` when no soil
#: temperature is measured (snow cover or frozen soil likely; a proxy, documented as such).
FROZEN_AIR_TEMPERATURE = 0.0
_SOIL_T = re.compile(r"^soil_temperature(?:_(\d+(?:\.\d+)?))?$")


def mask_frozen(
    data: pd.DataFrame,
    *,
    soil_temperature: float = FROZEN_SOIL_TEMPERATURE,
    air_temperature: float = FROZEN_AIR_TEMPERATURE,
) -> tuple[pd.DataFrame, str | None]:
    """Flag snow-covered or frozen steps :attr:`QC.SNOW` from the best temperature there is.

    Counts over snow see its water and a frozen soil's ice is not liquid soil moisture,
    so such steps must not train or score a model. In order of preference:

    1. soil temperature (``soil_temperature`` or the shallowest ``soil_temperature_<cm>``
       column with values): steps below ``soil_temperature`` °C;
    2. air temperature (``air_temperature``): every step of a UTC day whose mean air
       temperature is below ``air_temperature`` °C (a proxy for snow or frozen soil);
    3. neither: nothing flagged, and the returned description is ``None`` (callers warn).

    Parameters
    ----------
    data : pandas.DataFrame
        Station series on a DatetimeIndex with a ``flag`` column.
    soil_temperature, air_temperature : float, optional
        Thresholds, °C (defaults :data:`FROZEN_SOIL_TEMPERATURE`, :data:`FROZEN_AIR_TEMPERATURE`).

    Returns
    -------
    data : pandas.DataFrame
        The frame with :attr:`QC.SNOW` set where frozen (a copy).
    how : str or None
        What was used, for the station's ``processing`` record; ``None`` if nothing could be.

    Examples
    --------
    >>> idx = pd.date_range("2020-01-01", periods=48, freq="h", tz="UTC")
    >>> df = pd.DataFrame({"sm": 0.2, "flag": 0, "air_temperature": [-3.0] * 24 + [4.0] * 24}, index=idx)
    >>> out, how = mask_frozen(df)
    >>> int(((out["flag"].to_numpy() & int(QC.SNOW)) != 0).sum()), how
    (24, 'QC.SNOW on days with mean air temperature < 0 °C (no soil temperature)')
    """
    out = data.copy()
    soil = sorted(
        (float(m.group(1) or 0.0), c)
        for c in out.columns
        if (m := _SOIL_T.match(str(c))) and pd.to_numeric(out[c], errors="coerce").notna().any()
    )
    if soil:
        col = soil[0][1]
        t = pd.to_numeric(out[col], errors="coerce")
        frozen = (t < soil_temperature).to_numpy()
        how = f"QC.SNOW where {col} < {soil_temperature:g} °C"
    elif "air_temperature" in out.columns and out["air_temperature"].notna().any():
        t = pd.to_numeric(out["air_temperature"], errors="coerce")
        day = out.index.floor("D")
        daily = t.groupby(day).transform("mean")
        frozen = (daily < air_temperature).to_numpy()
        how = f"QC.SNOW on days with mean air temperature < {air_temperature:g} °C (no soil temperature)"
    else:
        return out, None
    if frozen.any():
        out.loc[frozen, "flag"] = out.loc[frozen, "flag"].to_numpy() | int(QC.SNOW)
    log.info("%s: %d of %d steps", how, int(frozen.sum()), len(out))
    return out, how


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
    p = Path(path).expanduser()
    try:
        raw = pd.read_csv(
            p, sep=r"[;,]", engine="python", header=None, comment="#", names=["time", "nm"], skipinitialspace=True
        )
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
    n0: float | pd.Series | Mapping[Any, float],
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
    bwe: pd.Series | None = None,
    r2_n0: float = nt.BWE_R2_N0,
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
    n0 : float or pandas.Series
        Desilets N0 (cph) for *this* correction convention (p_ref, h_ref = 0, I_ref): one
        number, or a table of periods, N0 indexed by each period's start (a Series or a
        mapping of dates, naive ones taken as UTC; e.g. ``calibrate_from_samples(...)["n0"]``).
        Each hour takes the N0 of the latest period started at or before it; hours before
        the first period get no θ (NaN, a :class:`~smengine.errors.DataLossWarning`).
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
    bwe : pandas.Series, optional
        Biomass water equivalent, kg m⁻², on a DatetimeIndex (campaign values; interpolated
        linearly in time between them). Counts are multiplied by
        :func:`~smengine.neutrons.correction_bwe` (Baatz et al. 2015) before the conversion,
        so a crop's seasonal canopy is not read as soil moisture; N0 must then be calibrated
        on biomass-corrected counts too. Hours outside the series get no θ (flag
        ``NO_CORRECTION``, a :class:`~smengine.errors.DataLossWarning`).
    r2_n0 : float, optional
        Count reduction per kg m⁻² BWE (default :data:`smengine.neutrons.BWE_R2_N0` = 0.0053).

    Returns
    -------
    pandas.DataFrame
        Hourly ``sm``, ``sm_std``, ``counts`` (corrected, smoothed), ``counts_raw``,
        ``f_pressure``, ``f_humidity``, ``f_incoming``, ``f_bwe`` (with ``bwe``) and ``flag``.
    """
    corrected = _correct_counts(
        raw_cph,
        pressure=pressure,
        abs_humidity=abs_humidity,
        incoming=incoming,
        incoming_reference=incoming_reference,
        cutoff_rigidity=cutoff_rigidity,
        monitor_rigidity=monitor_rigidity,
        pressure_reference=pressure_reference,
        count_range=count_range,
        smooth_hours=smooth_hours,
    )
    return _corrected_to_sm(corrected, n0, bulk_density, lattice_water, soc, porosity, bwe, r2_n0)


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
                log.warning(
                    "incoming-flux series misses %d of %d counted hours: f_i = 1 there",
                    int(gaps.sum()),
                    int(raw.notna().sum()),
                )
                fi = fi.fillna(1.0)
        else:
            log.warning(
                "incoming-flux series does not cover %s…%s: no incoming correction", hourly.index[0], hourly.index[-1]
            )
    corrected = raw * fp * fh * fi
    if smooth_hours > 1:
        smooth = corrected.rolling(smooth_hours, center=True, min_periods=smooth_hours // 2).mean()
        n_in = corrected.notna().astype(float).rolling(smooth_hours, center=True, min_periods=1).sum()
    else:
        smooth, n_in = corrected, pd.Series(1.0, index=hourly.index)
    smooth = smooth.where(corrected.notna())  # no value where the hour itself is bad
    return pd.DataFrame(
        {
            "counts": smooth.to_numpy(),
            "counts_raw": hourly["raw"].to_numpy(),
            "f_pressure": fp.to_numpy(),
            "f_humidity": fh.to_numpy(),
            "f_incoming": fi.to_numpy(),
            "flag": flag.to_numpy(),
            "_n_hours": n_in.to_numpy(),
        },
        index=hourly.index,
    )


def _n0_periods(n0: float | pd.Series | Mapping[Any, float], index: pd.DatetimeIndex) -> list[tuple[np.ndarray, float]]:
    """(row mask, N0) for each N0 period over ``index``; a single number is one period covering all rows."""
    if isinstance(n0, Mapping):
        n0 = pd.Series(dict(n0), dtype=np.float64)
    if not isinstance(n0, pd.Series):
        return [(np.ones(len(index), dtype=bool), float(n0))]
    if n0.empty:
        raise ConfigError("n0 periods table is empty")
    try:
        if isinstance(n0.index, pd.DatetimeIndex):
            starts = n0.index
        else:  # dates as strings or date objects; ISO 8601 strings may mix date and date-time forms
            starts = pd.DatetimeIndex(pd.to_datetime(n0.index.astype(str), format="ISO8601"))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"n0 periods should be indexed by ISO 8601 start dates: {exc}") from exc
    values = pd.to_numeric(n0, errors="coerce").to_numpy(dtype=np.float64)
    if not (np.isfinite(values) & (values > 0)).all() or starts.hasnans:
        raise ConfigError(f"n0 periods should map start dates to N0 > 0 cph, got {n0.to_dict()}")
    if starts.has_duplicates:
        raise ConfigError(f"n0 periods have duplicate start dates: {starts[starts.duplicated()].tolist()}")
    if index.tz is not None:
        starts = starts.tz_localize("UTC").tz_convert(index.tz) if starts.tz is None else starts.tz_convert(index.tz)
    elif starts.tz is not None:
        starts = starts.tz_convert("UTC").tz_localize(None)
    order = np.argsort(starts.asi8)
    starts, values = starts[order], values[order]
    k = starts.searchsorted(index, side="right") - 1
    before = k < 0
    if before.any():
        warnings.warn(
            f"{int(before.sum())} hour(s) before the first N0 period ({starts[0]}) have no N0: θ is NaN there",
            DataLossWarning,
            stacklevel=3,
        )
    return [(k == i, float(v)) for i, v in enumerate(values) if (k == i).any()]


#: θ from counts above porosity + this margin (m³ m⁻³) is flagged OUT_OF_RANGE, not only POROSITY_EXCESS.
POROSITY_MARGIN = 0.05


def _bwe_factor(bwe: pd.Series, index: pd.DatetimeIndex, r2_n0: float) -> tuple[np.ndarray, np.ndarray]:
    """Biomass factor f_v on ``index`` from a (possibly sparse) BWE series, and the rows outside it.

    BWE is interpolated linearly in time between its finite values (campaign measurements
    are days to weeks apart); rows before the first or after the last value get f_v = NaN.
    """
    if not isinstance(bwe.index, pd.DatetimeIndex):
        raise ValidationError("bwe should be a Series on a DatetimeIndex (kg m-2)")
    b = pd.to_numeric(bwe, errors="coerce").astype(np.float64).dropna().sort_index()
    if b.index.tz is None and index.tz is not None:
        b.index = b.index.tz_localize("UTC")
    elif b.index.tz is not None and index.tz is None:
        b.index = b.index.tz_convert("UTC").tz_localize(None)
    b = b.groupby(level=0).mean()
    if b.empty:
        return np.full(len(index), np.nan), np.ones(len(index), dtype=bool)
    x, xp = index.asi8.astype(np.float64), b.index.asi8.astype(np.float64)
    v = np.interp(x, xp, b.to_numpy())
    outside = (x < xp[0]) | (x > xp[-1])
    v[outside] = np.nan
    f = np.full(len(index), np.nan)
    f[~outside] = nt.correction_bwe(v[~outside], r2_n0)
    return f, outside


def _corrected_to_sm(
    corrected: pd.DataFrame,
    n0: float | pd.Series | Mapping[Any, float],
    bulk_density: float,
    lattice_water: float,
    soc: float,
    porosity: float | None,
    bwe: pd.Series | None = None,
    r2_n0: float = nt.BWE_R2_N0,
) -> pd.DataFrame:
    """Step 3 of :func:`counts_to_sm`: θ and its uncertainty from :func:`_correct_counts` output
    (``n0`` one number or N0 periods, :func:`_n0_periods`), after the biomass correction
    when a BWE series is given."""
    out = corrected.drop(columns="_n_hours")
    n = corrected["counts"].to_numpy()
    f = (corrected["f_pressure"] * corrected["f_humidity"] * corrected["f_incoming"]).to_numpy()
    if bwe is not None:
        fv, outside = _bwe_factor(bwe, corrected.index, r2_n0)
        counted = np.isfinite(n)
        lost = outside & counted
        if lost.any():
            warnings.warn(
                f"{int(lost.sum())} of {int(counted.sum())} counted hours lie outside the biomass (BWE) series "
                f"({bwe.dropna().index.min()} … {bwe.dropna().index.max()}): no biomass correction, θ is NaN there "
                "(flag NO_CORRECTION); extend the BWE series to cover the counts",
                DataLossWarning,
                stacklevel=4,
            )
            out.loc[lost, "flag"] |= int(QC.NO_CORRECTION)
        n = n * fv
        f = f * fv
        out["counts"] = n
        out["f_bwe"] = fv
    # Poisson σ of a mean over n_hours hours, carried through the correction factors
    with np.errstate(invalid="ignore", divide="ignore"):
        sigma_n = np.sqrt(n / np.maximum(corrected["_n_hours"].to_numpy(), 1.0) * f)
    sm, sm_std = np.full(len(n), np.nan), np.full(len(n), np.nan)
    for rows, n0_period in _n0_periods(n0, corrected.index):
        sm[rows] = nt.counts_to_theta(n[rows], n0_period, bulk_density, lattice_water, soc)
        sm_std[rows] = nt.theta_uncertainty(n[rows], sigma_n[rows], n0_period, bulk_density)
    out.insert(0, "sm_std", sm_std)
    out.insert(0, "sm", sm)
    has_porosity = porosity is not None and np.isfinite(porosity)
    if has_porosity:
        excess = out["sm"] > porosity
        out.loc[excess, "flag"] |= int(QC.POROSITY_EXCESS)
    # theta from counts, range-checked after the conversion: below 0, above 1 or above porosity + margin
    top = min(1.0, porosity + POROSITY_MARGIN) if has_porosity else 1.0  # type: ignore[operator]
    with np.errstate(invalid="ignore"):
        bad = ((out["sm"] < 0.0) | (out["sm"] > top)).to_numpy()
    if bad.any():
        out.loc[bad, "flag"] |= int(QC.OUT_OF_RANGE)
        log.warning(
            "%d of %d hourly θ from counts outside [0, %.3g] m3 m-3 flagged OUT_OF_RANGE (left out of daily())",
            int(bad.sum()),
            int(np.isfinite(out["sm"]).sum()),
            top,
        )
    out.attrs["out_of_range"] = int(bad.sum())
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
            log.warning(
                "%s: no counts within %d days of calibration day %s; campaign skipped", where, max_days, day.date()
            )
            continue
        n0 = nt.calibrate_n0(float(daily.iloc[k]), float(tw))
        rows.append(
            {
                "date": day.date(),
                "counts_day": daily.index[k].date(),
                "counts": float(daily.iloc[k]),
                "theta_total_g": float(tw),
                "n0": float(n0),
            }
        )
    if not rows:
        raise DataError(f"{where}: no calibration campaign has counts within {max_days} days")
    return float(np.mean([r["n0"] for r in rows])), rows


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
