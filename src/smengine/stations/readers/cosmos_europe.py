"""COSMOS-Europe revision 1 (Bogena et al. 2022): the processed station folder and its metadata tables."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from smengine.errors import DataError, ValidationError
from smengine.stations._core import QC, Exclusion, PathLike, Station, StationSet
from smengine.stations._counts import _flag_range
from smengine.stations._parse import (
    _exclude_or_raise,
    _norm,
    _parse_times,
    _read_table,
    _require,
    _station_from_meta,
)

log = logging.getLogger(__name__)

# ======================================================================================
# COSMOS-Europe revision 1
# ======================================================================================
_CE_GENERAL = {
    "station": "name",
    "country": "country",
    "affiliation": "affiliation",
    "detectortyp": "detector",
    "detectortype": "detector",
    "latitude": "lat",
    "longitude": "lon",
    "altitude": "elevation",
    "mainlanduse": "land_cover",
    "timeperiodstart": "start",
    "timeperiodend": "end",
}
_CE_ADDITIONAL = {
    "porosity": "porosity",
    "bulkdensity": "bulk_density",
    "soilorganiccarbon": "soc",
    "latticewater": "lattice_water",
    "cutoffrigidity": "cutoff_rigidity",
    "n0": "n0",
    "meanrawepithermalneutrons": "mean_raw_counts",
    "meancorrectedepithermalneutrons": "mean_corrected_counts",
    "meansoilmoisture": "mean_sm",
    "soilmoisturerange": "sm_range",
    "meanfootprintdepth": "mean_d86",
    "meanfootprintradius": "mean_r86",
    "references": "reference",
}
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
    for c in (
        "lat",
        "lon",
        "elevation",
        "porosity",
        "bulk_density",
        "soc",
        "lattice_water",
        "cutoff_rigidity",
        "n0",
        "mean_raw_counts",
        "mean_corrected_counts",
        "mean_sm",
        "mean_d86",
        "mean_r86",
    ):
        if c in meta:
            meta[c] = pd.to_numeric(meta[c].str.replace(",", ".", regex=False), errors="coerce")
    return meta


def read_cosmos_europe(folder: PathLike, stations: Iterable[str] | None = None, *, strict: bool = False) -> StationSet:
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
    series_dir = next(
        (
            d
            for d in (root / "processed_crns_data_and_diagnostics_rev1", root / "processed_crns_data_and_diagnostics")
            if d.is_dir()
        ),
        None,
    )
    if series_dir is None:
        raise DataError(
            f"{root}: no processed_crns_data_and_diagnostics_rev1/ folder with station CSVs "
            "(use read_cosmos_europe_metadata for the tables alone)"
        )
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
            _exclude_or_raise(
                strict,
                excl,
                sid,
                "not in the general/additional information tables",
                str(path),
                int(data["sm"].notna().sum()),
            )
            continue
        try:
            st = _station_from_meta(sid, meta, data, str(path), "COSMOS-Europe")
        except ValidationError as exc:
            _exclude_or_raise(strict, excl, sid, str(exc), str(path), int(data["sm"].notna().sum()), type(exc))
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
