"""COSMOS-Europe FSC001 (Fürstensee) raw hourly counts, the neptoon example."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine import neutrons as nt
from smengine.errors import DataError
from smengine.stations._core import PathLike, StationSet
from smengine.stations._counts import (
    _correct_counts,
    _corrected_to_sm,
    _flag_range,
    _merge_hourly,
    mask_frozen,
    read_nmdb,
)
from smengine.stations._parse import (
    _parse_times,
    _read_table,
    _require,
    _station_from_meta,
)
from smengine.stations.readers.cosmos_europe import read_cosmos_europe_metadata

log = logging.getLogger(__name__)


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
    snow_mask: bool = True,
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
    snow_mask : bool, optional
        Flag :attr:`QC.SNOW` on days whose mean air temperature is below 0 °C (the file has no
        soil temperature; :func:`~smengine.stations.mask_frozen`), default True.
    """
    p = Path(path).expanduser()
    f = p / f"{station}_time_series.csv" if p.is_dir() else p
    base = f.parent
    meta_dir = Path(metadata) if metadata is not None else base.parent / "cosmos_europe_metadata"
    if metadata is None and not meta_dir.is_dir():
        hint = ""
        if any(q.name.lower().replace(" ", "").startswith("general_information") for q in base.parent.glob("*.csv")):
            hint = (
                f"; {f.name} looks like one station file of the COSMOS-Europe folder {base.parent}: "
                "read that folder with format 'cosmos-europe'"
            )
        raise DataError(
            f"{f}: the fuerstensee reader needs the COSMOS-Europe station tables, and there is no "
            f"{meta_dir.name} folder at {meta_dir.parent} (pass metadata=, --metadata on the command line){hint}"
        )
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

    g = pd.DataFrame(
        {
            "pressure": col("AirPressure"),
            "air_temperature": col("AirTemperature"),
            "rel_humidity": col("AirHumidity_Relative"),
            "precipitation": col("Precipitation"),
        }
    )
    g["flag"] = 0
    g = _flag_range(g, str(f))
    g["abs_humidity"] = nt.absolute_humidity(g["rel_humidity"].to_numpy(), g["air_temperature"].to_numpy())
    cph = col("NeutronCount_Epithermal_Cum1h")
    bd, lw, soc, rc = (float(m[k]) for k in ("bulk_density", "lattice_water", "soc", "cutoff_rigidity"))
    nm_ref = float(nm[idx[0] : idx[-1]].mean()) if nm is not None else None
    corr = _correct_counts(
        cph,
        pressure=g["pressure"],
        abs_humidity=g["abs_humidity"],
        incoming=nm,
        incoming_reference=nm_ref,
        cutoff_rigidity=rc,
        count_range=count_range,
    )
    if calibration is not None:
        n0, calib = _fsc_calibration(Path(calibration), corr, g)
        how = f"N0 = {n0:.1f} cph calibrated from {Path(calibration).name} ({len(calib)} campaigns)"
    else:
        n0 = float(m["n0"]) * float(corr["counts"].mean()) / float(m["mean_corrected_counts"])
        calib = []
        how = f"N0 = {n0:.1f} cph: table N0 {m['n0']:g} × mean corrected counts ours/table"
    conv = _corrected_to_sm(corr, n0, bd, lw, soc, porosity=float(m["porosity"]))
    data = _merge_hourly(conv, g)
    frozen = "snow/frozen soil not masked (snow_mask=False)"
    if snow_mask:  # no soil temperature in this file: the daily mean air temperature
        data, how = mask_frozen(data)
        frozen = how or frozen
    st = _station_from_meta(station, meta, data, str(f), "COSMOS-Europe")
    st = replace(
        st,
        n0=n0,
        extra={**st.extra, "n0_table": float(m["n0"]), "calibration": calib, "neutron_monitor_reference": nm_ref},
    )
    st.processing += [
        "raw hourly counts; T/RH gaps filled from sensor 2",
        (
            "corrections: pressure (p_ref 1013.25 hPa), humidity (h_ref 0), incoming (Hawdon 2014, "
            f"R_c {rc:g} GV vs 4.49 GV, I_ref = monitor mean {nm_ref})"
        ),
        how,
        frozen,
    ]
    return StationSet([st])


def _fsc_calibration(path: Path, corr: pd.DataFrame, g: pd.DataFrame) -> tuple[float, list[dict[str, Any]]]:
    from smengine.footprint import weighted_profile_average

    c = _read_table(path)
    need = [
        "DateTime_utc",
        "Profile_ID",
        "Distance_to_CRNS_m",
        "Profile_Depth_cm",
        "SoilMoisture_g_g",
        "DryBulkDensity_g_cm3",
        "SoilOrganicCarbon_g_g",
        "LatticeWater_g_g",
    ]
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
