"""The USGS Roaring Fork (Colorado) CRNS network: raw counts, met and TDR profiles."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from smengine import neutrons as nt
from smengine.errors import DataError, ValidationError
from smengine.stations._core import QC, PathLike, Station, StationSet
from smengine.stations._counts import (
    _calibrated_n0,
    _correct_counts,
    _corrected_to_sm,
    _flag_range,
    _merge_hourly,
)
from smengine.stations._parse import (
    _exclude_or_raise,
    _float,
    _parse_times,
    _read_table,
    _require,
)

# ======================================================================================
# Roaring Fork (USGS, Colorado)
# ======================================================================================
_RF_COLUMNS = {
    "BaroPress": "pressure",
    "airT": "air_temperature",
    "airRH": "rel_humidity",
    "SWC_5": "tdr_5",
    "SWC_10": "tdr_10",
    "SWC_20": "tdr_20",
    "SWC_50": "tdr_50",
    "sT_5": "soil_temperature_5",
    "sT_10": "soil_temperature_10",
    "sT_20": "soil_temperature_20",
    "sT_50": "soil_temperature_50",
}
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
            _exclude_or_raise(
                strict, excl, site, f"no coordinates for {old!r} in RoaringFork_CRNS_metadata.csv", str(f)
            )
            continue
        try:  # one unreadable station file excludes that station, not the network
            c = cal.loc[site]
            raw = _read_table(f)
            _require(raw, ["datetime_UTC", "BaroPress", "airT", "airRH", tube, "sT_5"], f)
            idx = _parse_times(raw["datetime_UTC"], f, "datetime_UTC")
            g = pd.DataFrame(
                {
                    dst: pd.to_numeric(raw[src], errors="coerce").to_numpy()
                    for src, dst in _RF_COLUMNS.items()
                    if src in raw
                },
                index=idx,
            )
            g["flag"] = 0
            g = _flag_range(g, str(f))
            cph = pd.Series(pd.to_numeric(raw[tube], errors="coerce").to_numpy() * 3600.0 / sample_seconds, index=idx)
            rh, temp = g["rel_humidity"].to_numpy(), g["air_temperature"].to_numpy()
            h = pd.Series(nt.absolute_humidity(rh, temp), index=idx)
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
                id=site,
                lat=_float(lc["Lat DD"].iloc[0]),
                lon=_float(lc["Long DD"].iloc[0]),
                data=data,
                elevation=float(c["Elev"]),
                bulk_density=bd,
                lattice_water=lw,
                soc=soc,
                n0=n0_site,
                porosity=1.0 - bd / 2.65,
                name=old,
                network="USGS Roaring Fork",
                land_cover=str(lc["Land Cover"].iloc[0]).strip(),
                source=str(f),
                extra={
                    "staid": staid,
                    "calibration": calib,
                    "tdr_depths_cm": ROARING_FORK_TDR_DEPTHS,
                    "n0_authors": _float(c.get("N0_Desilets")),
                    "n_ratio_authors": _float(c.get("N_ratio_Des")),
                },
            )
            st.processing += [
                f"{tube} counts × 3600/{sample_seconds:g} s → cph; hourly mean rates",
                (
                    "corrections: pressure (p_ref 1013.25 hPa, β 0.0076), humidity (Rosolem, h_ref 0); "
                    "incoming flux not applied (no neutron-monitor record for 2023–2024 here)"
                ),
                f"N0 = {n0_site:.1f} cph calibrated on {calib[0]['counts_day'] if calib else 'given'}",
                f"QC.SNOW where 5-cm soil temperature < {frozen_soil_temperature:g} °C",
            ]
            out.append(st)
        except (DataError, ValidationError) as exc:
            _exclude_or_raise(strict, excl, site, str(exc), str(f), 0, type(exc))
    if not out and not excl:
        raise DataError(f"{rel}: no *_v1.csv station files")
    return StationSet(out, excl)
