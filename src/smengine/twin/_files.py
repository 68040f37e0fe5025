"""The twin world's files (GeoTIFF, NetCDF, CRNS station files, manifest), :class:`TwinWorld` and :func:`make_world`."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time as _time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from smengine import footprint as fp
from smengine import neutrons as nt
from smengine._io import atomic_target, atomic_write
from smengine.errors import ConfigError
from smengine.grid import Grid
from smengine.twin._model import (
    _EASE_RES,
    _EASE_X0,
    _EASE_Y1,
    _ERA5_BOTTOMS,
    _ERA5_TOPS,
    _FORMAT,
    _KC,
    _NDVI_MAX,
    _NDVI_MIN,
    _S_COUNTS,
    _S_LST,
    _S_LST_FINE,
    _S_NDVI,
    _S_NDVI_FINE,
    _S_S1,
    _S_S1_FINE,
    _S_SMAP,
    _S_STATION,
    _VEG_H,
    LAND_COVER,
    LAYER_TOPS,
    FineDay,
    TwinConfig,
    _Bucket,
    _make_statics,
    _params_hash,
    _rng,
    _Sim,
    _Statics,
    _theta_eq_cells,
    simulate_fine,
    station_theta,
)

log = logging.getLogger(__name__)


# ======================================================================================
# writers
# ======================================================================================
def _write_tif(
    path: Path,
    data: np.ndarray,
    transform: Any,
    crs: str,
    units: str,
    name: str,
    tags: dict[str, str] | None = None,
    dtype: str = "float32",
    nodata: float | None = None,
) -> None:
    import rasterio

    with (
        atomic_target(path) as tmp,
        rasterio.open(
            tmp,
            "w",
            driver="GTiff",
            height=data.shape[0],
            width=data.shape[1],
            count=1,
            dtype=dtype,
            crs=crs,
            transform=transform,
            nodata=np.nan if (nodata is None and dtype.startswith("float")) else nodata,
            compress="deflate",
        ) as dst,
    ):
        dst.write(data.astype(dtype), 1)
        dst.set_band_description(1, name)
        dst.update_tags(1, units=units)
        dst.update_tags(units=units, **(tags or {}))
        dst.units = (units,)


def _cf_grid_mapping(crs: str) -> dict[str, Any]:
    attrs = CRS.from_user_input(crs).to_cf()
    attrs["spatial_ref"] = attrs.get("crs_wkt", "")
    return attrs


def _write_projected_nc(
    path: Path,
    var: str,
    data: np.ndarray,
    days: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    crs: str,
    attrs: dict[str, Any],
    global_attrs: dict[str, Any],
    daily_chunks: bool = False,
) -> None:
    """CF NetCDF of one (time, y, x) variable; ``daily_chunks`` stores one chunk per day
    (fast daily reads of large fine-grid layers; off by default, which keeps the files of
    the smooth twin as they were)."""
    import xarray as xr

    da = xr.DataArray(
        data.astype(np.float32),
        dims=("time", "y", "x"),
        coords={"time": days.astype("datetime64[ns]"), "y": y, "x": x},
        attrs={**attrs, "grid_mapping": "crs"},
    )
    ds = xr.Dataset({var: da, "crs": xr.DataArray(np.int32(0), attrs=_cf_grid_mapping(crs))}, attrs=global_attrs)
    ds["x"].attrs = {"standard_name": "projection_x_coordinate", "units": "m"}
    ds["y"].attrs = {"standard_name": "projection_y_coordinate", "units": "m"}
    enc: dict[str, dict[str, Any]] = {
        var: {
            "zlib": True,
            "complevel": 4,
            "_FillValue": np.float32(np.nan),
            **({"chunksizes": (1, y.size, x.size)} if daily_chunks else {}),
        },
        "time": {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "i4"},
    }
    with atomic_target(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=enc)


def _grid_xy(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    x, _ = grid.xy(0, np.arange(grid.width))
    _, y = grid.xy(np.arange(grid.height), 0)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


# ======================================================================================
# the world
# ======================================================================================
@dataclass(frozen=True)
class TwinWorld:
    """A built twin world: where its files are and what it is.

    Attributes
    ----------
    root : Path
        The output folder.
    seed : int
    config : TwinConfig
    grid : Grid
        The 1-km EPSG:3035 grid (with ``config.subpixel`` sub-pixels) of the truth.
    days : ndarray of datetime64[D]
        The record.
    paths : dict
        ``static`` (name → GeoTIFF), ``s1`` (daily GeoTIFFs), ``smap``, ``ndvi``, ``lst``,
        ``precipitation``, ``era5``, ``truth`` (NetCDF), ``crns`` (rev1 folder),
        ``station_truth``, ``stations``, ``manifest``.
    stations : pandas.DataFrame
        One row per station: id, x, y (EPSG:3035), lon, lat, fine row/col, elevation,
        land_cover, bulk_density, porosity, lattice_water, soc, n0, pressure, veg_height.
    build_seconds : float
        Wall time of the build (0 when it came from the cache).
    """

    root: Path
    seed: int
    config: TwinConfig
    grid: Grid
    days: np.ndarray
    paths: dict[str, Any]
    stations: pd.DataFrame
    build_seconds: float = 0.0
    from_cache: bool = False

    @property
    def period(self) -> tuple[np.datetime64, np.datetime64]:
        """(first, last) day."""
        return (self.days[0], self.days[-1])

    def truth(self) -> Any:
        """True 1-km θ_eq as an ``xarray.DataArray`` (time, y, x), m3 m-3 (loaded)."""
        import xarray as xr

        with xr.open_dataset(self.paths["truth"], engine="netcdf4") as ds:
            return ds["theta_eq"].load()

    def station_truth(self) -> pd.DataFrame:
        """Noise-free footprint-weighted θ per station-day (``theta``), with the day's
        humidity and pressure and the noise-free rev1 daily value (``sm_noisefree``)."""
        return pd.read_csv(self.paths["station_truth"], parse_dates=["date"])

    def read_stations(self) -> Any:
        """The stations as a :class:`~smengine.stations.StationSet` (rev1 reader)."""
        from smengine.stations import read_cosmos_europe

        return read_cosmos_europe(self.paths["crns"])

    def sources(self, *, era5: bool = False) -> list[Any]:
        """:class:`~smengine.ingest.SourceSpec` list for :func:`smengine.ingest.ingest`.

        Parameters
        ----------
        era5 : bool
            Include the ERA5-Land-like swvl1–3 (leave them out for the pseudoproxy).
        """
        from smengine.ingest import SourceSpec

        st = self.paths["static"]
        out = [SourceSpec(st[n], name=n) for n in ("elevation", "twi", "sand", "clay", "porosity")]
        out.append(SourceSpec(st["land_cover"], name="land_cover", method="nearest"))
        out.append(SourceSpec(list(self.paths["s1"]), name="s1_sm"))
        out.append(SourceSpec(self.paths["smap"], variable="soil_moisture", name="smap_sm", storage="coarse"))
        out.append(SourceSpec(self.paths["ndvi"], variable="ndvi", name="ndvi"))
        out.append(SourceSpec(self.paths["lst"], variable="lst", name="lst"))
        out.append(SourceSpec(self.paths["precipitation"], variable="precipitation", name="precipitation"))
        if era5:
            out += [
                SourceSpec(self.paths["era5"], variable=f"swvl{k}", name=f"era5_swvl{k}", storage="coarse")
                for k in (1, 2, 3)
            ]
        return out

    def run_config(self) -> str:
        """A run configuration (TOML, :mod:`smengine.config`) for the world's raw files, with
        paths relative to :attr:`root`: what a user would write for their own data. The
        features are those of ``smengine demo`` (the gappy LST left out)."""
        from smengine.demo import DEMO_SPEC

        g = self.grid

        def rel(p: Any) -> str:
            return Path(p).relative_to(self.root).as_posix()

        def arr(v: Any) -> str:
            return "[" + ", ".join(json.dumps(x) for x in v) + "]"

        st = self.paths["static"]
        lines = [
            "# smengine run configuration for the twin world's raw files (smengine twin); see smengine.config",
            "",
            "[domain]",
            f"bounds = {arr([int(round(b)) for b in g.bounds])}",
            f'crs = "{g.crs}"',
            f"resolution = {g.resolution:g}",
            f"subpixel = {g.subpixel}",
            f"tile_size = {g.tile_size}",
            "",
            "[period]",
            f'start = "{self.days[0]}"',
            f'end = "{self.days[-1]}"',
            "",
        ]
        for n in ("elevation", "twi", "sand", "clay", "porosity", "land_cover"):
            lines += ["[[sources]]", f'name = "{n}"', f'path = "{rel(st[n])}"']
            lines += ['method = "nearest"', ""] if n == "land_cover" else [""]
        s1 = Path(self.paths["s1"][0])
        lines += ["[[sources]]", 'name = "s1_sm"', f'path = "{rel(s1.parent)}/s1_sm_*.tif"', ""]
        lines += [
            "[[sources]]",
            'name = "smap_sm"',
            f'path = "{rel(self.paths["smap"])}"',
            'variable = "soil_moisture"',
            'storage = "coarse"',
            "",
        ]
        for n in ("ndvi", "lst", "precipitation"):
            lines += ["[[sources]]", f'name = "{n}"', f'path = "{rel(self.paths[n])}"', f'variable = "{n}"', ""]
        lines += [
            "[stations]",
            'format = "cosmos-europe"',
            f'path = "{rel(self.paths["crns"])}"',
            "min_hours = 18",
            "kernel_quantum = [2.0, 0.02, 5.0]",
            "",
            "[features]",
        ]
        for k in ("static", "dynamic", "swi_of", "swi_T"):
            lines.append(f"{k} = {arr(DEMO_SPEC[k])}")
        lines += [
            "",
            "[model]",
            "trees = 100",
            'cv = ["site"]',
            "search = false",
            "seed = 0",
            "",
            "[output]",
            'dir = "run"',
            "",
        ]
        return "\n".join(lines)

    def fine_state(self, day: Any) -> FineDay:
        """The fine-grid truth of one day (re-simulated deterministically up to it)."""
        d = np.datetime64(day, "D")
        for fd in simulate_fine(self.seed, self.config):
            if fd.date == d:
                return fd
        raise ConfigError(f"day {d} not in the record {self.period}")

    def statics(self) -> dict[str, np.ndarray]:
        """The fine-grid static fields (elevation, twi, sand, clay, wilting_point,
        field_capacity, porosity, bulk_density, land_cover, land), recomputed; with
        ``heterogeneity`` > 0 also ``field_id`` (the mosaic's field of every cell) and
        ``field_active`` (the cell's field is a field of its own)."""
        s = _make_statics(self.seed, self.config)
        return {
            "elevation": s.elevation,
            "twi": s.twi,
            "sand": s.sand,
            "clay": s.clay,
            "wilting_point": s.wp,
            "field_capacity": s.fc,
            "porosity": s.por,
            "bulk_density": s.rho,
            "land_cover": s.lc,
            "land": s.land,
            **(
                {}
                if s.fields is None
                else {
                    "field_id": s.fields.label,
                    "field_active": s.fields.active[s.fields.label],
                }
            ),
        }


def _paths(root: Path, cfg: TwinConfig, s1_days: list[np.datetime64]) -> dict[str, Any]:
    st = {n: root / "static" / f"{n}.tif" for n in ("elevation", "twi", "sand", "clay", "porosity", "land_cover")}
    return {
        "static": st,
        "s1": tuple(root / "s1" / f"s1_sm_{str(d).replace('-', '')}.tif" for d in s1_days),
        "smap": root / "smap" / "smap_l3_like.nc",
        "ndvi": root / "modis" / "ndvi.nc",
        "lst": root / "modis" / "lst.nc",
        "precipitation": root / "forcing" / "precipitation.nc",
        "era5": root / "era5" / "era5_land_like.nc",
        "truth": root / "truth" / "theta_eq.nc",
        "crns": root / "crns" / "COSMOS_Europe_Data_rev1",
        "station_truth": root / "crns" / "station_truth.csv",
        "stations": root / "stations.csv",
        "manifest": root / "manifest.json",
    }


def _s1_days(cfg: TwinConfig) -> list[np.datetime64]:
    return [d for i, d in enumerate(cfg.days()) if i % cfg.s1_revisit_days == 0]


def _files_of(paths: dict[str, Any]) -> list[Path]:
    out: list[Path] = []
    for k, v in paths.items():
        if k in ("manifest", "crns"):
            continue
        if isinstance(v, dict):
            out += list(v.values())
        elif isinstance(v, tuple):
            out += list(v)
        else:
            out.append(v)
    return out


def _from_manifest(root: Path, want_hash: str) -> TwinWorld | None:
    mpath = root / "manifest.json"
    if not mpath.is_file():
        return None
    try:
        m = json.loads(mpath.read_text())
    except (OSError, ValueError):
        return None
    if m.get("format") != _FORMAT or m.get("params_hash") != want_hash:
        return None
    for rel, size in m.get("files", {}).items():
        p = root / rel
        if not p.is_file() or p.stat().st_size != size:
            log.info("twin cache %s: %s missing or changed; rebuilding", root, rel)
            return None
    cfg = TwinConfig.from_config(m["config"])
    paths = _paths(root, cfg, _s1_days(cfg))
    stations = pd.read_csv(paths["stations"], dtype={"id": str})
    return TwinWorld(root, int(m["seed"]), cfg, cfg.grid(), cfg.days(), paths, stations, 0.0, True)


def make_world(
    seed: int = 0,
    out_dir: str | Path = "twin",
    config: TwinConfig | None = None,
    *,
    quick: bool = False,
    overwrite: bool = False,
    **overrides: Any,
) -> TwinWorld:
    """Build (or reuse) a twin world in ``out_dir``.

    Parameters
    ----------
    seed : int
        Seed of every random draw; the same seed and parameters give the same files.
    out_dir : path
        Output folder. If it holds a complete world with the same parameters (its
        ``manifest.json`` hash matches and every listed file is present with its size),
        that world is returned without writing anything.
    config : TwinConfig, optional
        Parameters (default ``TwinConfig.quick(**overrides)`` with ``quick=True``, else
        ``TwinConfig(**overrides)``).
    quick : bool
        Use the quick configuration (20 km, 1 year).
    overwrite : bool
        Rebuild even if a matching world exists.
    **overrides
        Fields of :class:`TwinConfig` (replacing those of ``config`` when it is given),
        e.g. ``heterogeneity=0.67`` for a field-scale mosaic with sensors on the fine
        grid (:class:`TwinConfig`; 0, the default, is the smooth twin byte for byte and
        keeps its cache hash).

    Returns
    -------
    TwinWorld

    Examples
    --------
    >>> w = make_world(0, "twin-quick", quick=True)             # doctest: +SKIP
    >>> f = make_world(0, "twin-fields", quick=True, heterogeneity=1.0)  # doctest: +SKIP
    >>> w.truth().sel(time="2019-06-01").mean().item()          # doctest: +SKIP
    """
    if config is None:
        config = TwinConfig.quick(**overrides) if quick else TwinConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    root = Path(out_dir)
    h = _params_hash(seed, config)
    if not overwrite:
        hit = _from_manifest(root, h)
        if hit is not None:
            log.info("twin world %s: cache hit (%s)", root, h[:12])
            return hit
    t0 = _time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").unlink(missing_ok=True)  # incomplete until the manifest is back
    world = _build(seed, config, root)
    files = {str(p.relative_to(root)): p.stat().st_size for p in _files_of(world.paths)}
    files.update({str(p.relative_to(root)): p.stat().st_size for p in sorted(Path(world.paths["crns"]).rglob("*.csv"))})
    secs = _time.perf_counter() - t0
    manifest = {
        "format": _FORMAT,
        "params_hash": h,
        "seed": int(seed),
        "config": config.get_config(),
        "grid": world.grid.get_config(),
        "period": [str(world.days[0]), str(world.days[-1])],
        "files": dict(sorted(files.items())),
    }
    atomic_write(root / "manifest.json", json.dumps(manifest, indent=1).encode())
    log.info("twin world %s built in %.1f s", root, secs)
    return dataclasses.replace(world, build_seconds=secs)


# ------------------------------------------------------------------------------------
def _place_stations(seed: int, cfg: TwinConfig, st: _Statics, n_win: int) -> pd.DataFrame:
    rng = _rng(seed, _S_STATION)
    nx = cfg.fine_shape[1]
    land = st.land
    # no water in the window, not at the edge, land cover not urban; >= 2 km apart
    from scipy.ndimage import maximum_filter

    water_near = maximum_filter((~land).astype(np.uint8), size=2 * n_win + 1, mode="nearest") > 0
    ok = land & ~water_near & (st.lc != 4)
    ok[: n_win + 1] = ok[-n_win - 1 :] = False
    ok[:, : n_win + 1] = ok[:, -n_win - 1 :] = False
    cand = np.flatnonzero(ok.ravel())
    rng.shuffle(cand)
    chosen: list[int] = []
    min_d = 2000.0 / cfg.fine_resolution
    for c in cand:
        r, q = divmod(int(c), nx)
        if all(np.hypot(r - r2, q - q2) >= min_d for r2, q2 in (divmod(i, nx) for i in chosen)):
            chosen.append(int(c))
        if len(chosen) == cfg.n_stations:
            break
    if len(chosen) < cfg.n_stations:
        log.warning("twin: room for only %d of %d stations", len(chosen), cfg.n_stations)
    rows = np.array([c // nx for c in chosen], dtype=np.int64)
    cols = np.array([c % nx for c in chosen], dtype=np.int64)
    res = cfg.fine_resolution
    x = cfg.xmin + (cols + 0.5) * res
    y = cfg.ymax - (rows + 0.5) * res
    lon, lat = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True).transform(x, y)
    elev = st.elevation[rows, cols]
    lc = st.lc[rows, cols].astype(int)
    # site physics: mean over the cells within 200 m (what a calibration campaign would find)
    rho, por, clay = [], [], []
    k = round(200.0 / res)
    for r, c in zip(rows, cols, strict=False):
        sl = (slice(r - k, r + k + 1), slice(c - k, c + k + 1))
        rho.append(float(st.rho[sl].mean()))
        por.append(float(st.por[sl].mean()))
        clay.append(float(st.clay[sl].mean()))
    n = len(chosen)
    n0 = rng.uniform(*cfg.n0_range, size=n)
    return pd.DataFrame(
        {
            "id": [f"TWC{i + 1:03d}" for i in range(n)],
            "x": x,
            "y": y,
            "lon": np.asarray(lon),
            "lat": np.asarray(lat),
            "row": rows,
            "col": cols,
            "elevation": elev,
            "land_cover": [LAND_COVER[v] for v in lc],
            "bulk_density": np.round(rho, 4),
            "porosity": np.round(por, 4),
            "lattice_water": np.round(0.01 + 0.06 * np.asarray(clay), 4),
            "soc": np.where(lc == 3, 0.04, 0.015),
            "n0": np.round(n0, 1),
            # site mean pressure (barometric formula), to 5 hPa: stations share footprint kernels
            "pressure": np.round(1013.25 * (1.0 - 2.25577e-5 * elev) ** 5.25588 / 5.0) * 5.0,
            "veg_height": _VEG_H[lc],
        }
    )


def _build(seed: int, cfg: TwinConfig, root: Path) -> TwinWorld:
    import rasterio.transform

    t_start = _time.perf_counter()
    grid = cfg.grid()
    days = cfg.days()
    paths = _paths(root, cfg, _s1_days(cfg))
    sim = _Sim(seed, cfg)
    st = sim.st
    ny, nx = cfg.fine_shape
    n, kf, nl, nd = cfg.size_km, cfg.kf, len(LAYER_TOPS), cfg.n_days
    res = cfg.fine_resolution
    fine_tr = rasterio.transform.from_origin(cfg.xmin, cfg.ymax, res, res)
    land = st.land
    land_flat = land.ravel()
    land_frac = land.reshape(n, kf, n, kf).mean(axis=(1, 3))
    log.info("twin: statics and forcing ready (%.1f s)", _time.perf_counter() - t_start)

    # ---- statics
    for name, arr, units in (
        ("elevation", st.elevation, "m"),
        ("twi", st.twi, "1"),
        ("sand", st.sand, "1"),
        ("clay", st.clay, "1"),
        ("porosity", st.por, "m3 m-3"),
    ):
        _write_tif(paths["static"][name], arr, fine_tr, "EPSG:3035", units, name)
    _write_tif(
        paths["static"]["land_cover"],
        st.lc,
        fine_tr,
        "EPSG:3035",
        "1",
        "land_cover",
        tags={"classes": json.dumps(LAND_COVER)},
        dtype="uint8",
        nodata=255,
    )

    # ---- stations
    n_win = int(np.ceil(cfg.kernel_radius / res - 0.5))
    stations = _place_stations(seed, cfg, st, n_win)
    ns = len(stations)
    windows = [
        (slice(r - n_win, r + n_win + 1), slice(c - n_win, c + n_win + 1))
        for r, c in zip(stations["row"], stations["col"], strict=False)
    ]
    hum_day = nt.absolute_humidity(sim.met.rh, sim.met.tmean)
    win_rho = np.stack([st.rho[wr, wc] for wr, wc in windows]) if ns else None
    win_land = np.stack([land[wr, wc] for wr, wc in windows]) if ns else None
    p_st = stations["pressure"].to_numpy()
    veg_st = stations["veg_height"].to_numpy()

    # ---- SMAP-like EASE2 cells and ERA5-like 0.1° cells of each fine cell
    fx = cfg.xmin + (np.arange(nx) + 0.5) * res
    fy = cfg.ymax - (np.arange(ny) + 0.5) * res
    FX, FY = np.meshgrid(fx, fy)
    ex, ey = Transformer.from_crs("EPSG:3035", "EPSG:6933", always_xy=True).transform(FX, FY)
    ecol = np.floor((np.asarray(ex) - _EASE_X0) / _EASE_RES).astype(np.int64)
    erow = np.floor((_EASE_Y1 - np.asarray(ey)) / _EASE_RES).astype(np.int64)
    er0, ec0 = int(erow.min()), int(ecol.min())
    e_shape = (int(erow.max()) - er0 + 1, int(ecol.max()) - ec0 + 1)
    e_idx = ((erow - er0) * e_shape[1] + (ecol - ec0)).ravel()
    e_count = np.bincount(e_idx[land_flat], minlength=e_shape[0] * e_shape[1])
    e_valid = e_count >= 0.5 * kf * kf * 81 * 0.1  # at least ~10 % of the 9 km cell covered by land here
    lon, lat = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True).transform(FX, FY)
    lon, lat = np.asarray(lon), np.asarray(lat)
    la_top = np.ceil(lat.max() * 10 - 1e-9) / 10 + 0.1
    lo_left = np.floor(lon.min() * 10 + 1e-9) / 10 - 0.1
    lats = np.round(np.arange(la_top, np.floor(lat.min() * 10) / 10 - 0.1 - 1e-9, -0.1), 1)
    lons = np.round(np.arange(lo_left, np.ceil(lon.max() * 10) / 10 + 0.1 + 1e-9, 0.1), 1)
    a_row = np.rint((la_top - lat) / 0.1).astype(np.int64)
    a_col = np.rint((lon - lo_left) / 0.1).astype(np.int64)
    a_shape = (lats.size, lons.size)
    a_idx = (a_row * a_shape[1] + a_col).ravel()
    a_count = np.bincount(a_idx, minlength=a_shape[0] * a_shape[1])
    covered = np.flatnonzero(a_count > 0)
    # uncovered ERA5 cells take the forcing of the nearest covered cell
    ar, ac = np.divmod(np.arange(a_shape[0] * a_shape[1]), a_shape[1])
    cr, cc = np.divmod(covered, a_shape[1])
    nearest = covered[np.argmin((ar[:, None] - cr[None]) ** 2 + (ac[:, None] - cc[None]) ** 2, axis=1)]
    era = _era5_bucket(st, cfg, a_shape[0] * a_shape[1])
    S_era = era.wp + 0.7 * (era.fc - era.wp)

    # ---- daily loop
    truth = np.full((nd, n, n), np.nan, np.float32)
    surf = np.full((nd, n, n), np.nan, np.float32)
    smap = np.full((nd, *e_shape), np.nan, np.float32)
    het = st.fields is not None  # heterogeneous twin: NDVI, LST and S1 on the fine grid
    ndvi = np.empty((nd, ny, nx) if het else (nd, n, n), np.float32)
    lst = np.empty((nd, ny, nx) if het else (nd, n, n), np.float32)
    surf_fine = np.full((nd, ny, nx) if het else (0, 0, 0), np.nan, np.float32)  # top-layer θ, fine grid
    rng_ndvi_f, rng_lst_f = _rng(seed, _S_NDVI_FINE), _rng(seed, _S_LST_FINE)

    def up(a: np.ndarray) -> np.ndarray:  # 1-km field onto the fine grid
        return np.repeat(np.repeat(a, kf, axis=-2), kf, axis=-1)

    era_out = np.empty((nd, 4, a_shape[0] * a_shape[1]), np.float32)
    st_theta = np.empty((nd, ns))
    beta_mem = None
    cur_eq = np.full(int(land_flat.sum()), 0.25)
    dz = sim.bucket.dz
    lc_flat = st.lc.ravel().astype(int)
    rho_land = st.rho.ravel()[land_flat]
    rng_ndvi, rng_lst = _rng(seed, _S_NDVI), _rng(seed, _S_LST)
    land_frac_ok = land_frac >= 0.5

    def block_mean(a: np.ndarray) -> np.ndarray:
        s = np.where(land, a, 0.0).reshape(n, kf, n, kf).sum(axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            return s / (land_frac * kf * kf)

    # spin-up of both models on the record's first days
    S = sim.initial_storage()
    for t in range(cfg.spinup_days):
        fl, pet = sim.advance(S, t % nd)
        _era_step(era, S_era, fl["precipitation"], pet.ravel(), a_idx, a_count, nearest, cfg.era5_precip_factor)
    t_loop = _time.perf_counter()
    for t, S_t, fl, pet in sim.run(S):
        theta = S_t / dz[:, None]  # (L, n_cells)
        th_land = theta[:, land_flat]
        cur_eq = _theta_eq_cells(th_land, rho_land, cur_eq, tol=1e-6)
        eq = np.full(ny * nx, np.nan)
        eq[land_flat] = cur_eq
        eq = eq.reshape(ny, nx)
        truth[t] = np.where(land_frac_ok, block_mean(np.nan_to_num(eq)), np.nan)
        top = theta[0].reshape(ny, nx)
        surf[t] = np.where(land_frac_ok, block_mean(top), np.nan)
        if het:
            surf_fine[t] = top
        e_sum = np.bincount(e_idx[land_flat], weights=top.ravel()[land_flat], minlength=e_count.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            smap[t] = np.where(e_valid, e_sum / e_count, np.nan).reshape(e_shape)
        # vegetation: seasonal phenology damped by a 20-day memory of root-zone stress
        beta = fl["beta"]
        beta_mem = beta.copy() if beta_mem is None else beta_mem + (beta - beta_mem) * (1 - np.exp(-1 / 20))
        doy = sim.doy[t]
        phen = 1 / (1 + np.exp(-(doy - 115) / 10)) - 1 / (1 + np.exp(-(doy - 290) / 12))
        crop_cut = np.where((lc_flat == 1) & (doy > 205) & (doy < 260), 0.45, 1.0)
        nd_f = _NDVI_MIN[lc_flat] + (_NDVI_MAX[lc_flat] - _NDVI_MIN[lc_flat]) * phen * crop_cut * (
            0.35 + 0.65 * beta_mem
        )
        if het:  # crop fields of the mosaic follow their own calendar
            cc = sim.crop_cells
            g = sim.crop_development(t)
            nd_f[cc] = _NDVI_MIN[1] + (_NDVI_MAX[1] - _NDVI_MIN[1]) * g * (0.35 + 0.65 * beta_mem[cc])
            ndvi[t] = (
                nd_f.reshape(ny, nx)
                + up(0.02 * rng_ndvi.standard_normal((n, n)))
                + 0.02 * rng_ndvi_f.standard_normal((ny, nx))
            )
        else:
            ndvi[t] = nd_f.reshape(n, kf, n, kf).mean(axis=(1, 3)) + 0.02 * rng_ndvi.standard_normal((n, n))
        et_ratio = np.where(pet.ravel() > 0, fl["et"] / np.maximum(pet.ravel() * _KC[lc_flat], 1e-6), 1.0)
        lst_f = (
            sim.tair(t).ravel()
            + 273.15
            + 7.0 * (1 - np.clip(et_ratio, 0, 1)) * np.sqrt(np.maximum(pet.ravel(), 0))
            - 2.0 * (lc_flat == 3)
            + 2.5 * (lc_flat == 4)
            - 3.0 * (lc_flat == 5)
        )
        cloudy = sim.precip[t] > 0.5
        if het:
            lst_fine = lst_f.reshape(ny, nx) + up(rng_lst.standard_normal((n, n)))
            lst_fine = lst_fine + 0.5 * rng_lst_f.standard_normal((ny, nx))
            lst[t] = np.where(up(cloudy), np.nan, lst_fine)
        else:
            lst_px = lst_f.reshape(n, kf, n, kf).mean(axis=(1, 3)) + rng_lst.standard_normal((n, n))
            lst[t] = np.where(cloudy, np.nan, lst_px)
        # stations
        if ns:
            theta_3d = theta.reshape(nl, ny, nx)
            st_theta[t] = station_theta(
                np.stack([theta_3d[:, wr, wc] for wr, wc in windows]),
                win_rho,
                win_land,
                res,
                hum_day[t],
                p_st,
                veg_st,
                cfg.kernel_radius,
            )
        # ERA5-like
        if t % 100 == 99:
            log.info("twin: day %d of %d (%.1f s)", t + 1, nd, _time.perf_counter() - t_loop)
        era_out[t] = _era_step(
            era, S_era, fl["precipitation"], pet.ravel(), a_idx, a_count, nearest, cfg.era5_precip_factor
        )
    log.info("twin: %d days simulated (%.1f s)", nd, _time.perf_counter() - t_loop)

    # ---- noisy covariates
    rng_s1, rng_smap = _rng(seed, _S_S1), _rng(seed, _S_SMAP)
    gx, gy = _grid_xy(grid)
    lc_px = st.lc.reshape(n, kf, n, kf)
    forest_px = (lc_px == 3).mean(axis=(1, 3))
    rng_s1_f = _rng(seed, _S_S1_FINE)
    for p, d in zip(paths["s1"], _s1_days(cfg), strict=False):
        t = int((d - days[0]).astype(int))
        if het:
            # the 1-km error of the smooth twin (same draws) plus a sub-pixel speckle
            noise = cfg.s1_noise * (1 + (st.lc == 3)) * up(rng_s1.standard_normal((n, n)))
            noise = noise + 0.5 * cfg.s1_noise * rng_s1_f.standard_normal((ny, nx))
            s1 = np.clip(surf_fine[t] + noise, 0.01, 0.6).astype(np.float32)
            _write_tif(p, np.where(land, s1, np.nan), fine_tr, "EPSG:3035", "m3 m-3", "s1_sm", tags={"time": str(d)})
            continue
        noise = cfg.s1_noise * (1 + forest_px) * rng_s1.standard_normal((n, n))
        s1 = np.clip(surf[t] + noise, 0.01, 0.6).astype(np.float32)
        _write_tif(
            p, np.where(land_frac_ok, s1, np.nan), grid.transform, "EPSG:3035", "m3 m-3", "s1_sm", tags={"time": str(d)}
        )
    miss = rng_smap.random(nd) < cfg.smap_missing_fraction
    smap = np.clip(smap + cfg.smap_noise * rng_smap.standard_normal(smap.shape), 0.02, 0.6).astype(np.float32)
    smap[miss] = np.nan
    ex_c = _EASE_X0 + (ec0 + np.arange(e_shape[1]) + 0.5) * _EASE_RES
    ey_c = _EASE_Y1 - (er0 + np.arange(e_shape[0]) + 0.5) * _EASE_RES
    ga = {
        "title": "smengine twin world",
        "source": "smengine.twin.make_world",
        "seed": int(seed),
        "Conventions": "CF-1.8",
    }
    _write_projected_nc(
        paths["smap"],
        "soil_moisture",
        smap,
        days,
        ex_c,
        ey_c,
        "EPSG:6933",
        {"units": "cm3/cm3", "long_name": "SMAP-like 9 km surface soil moisture (0-5 cm)"},
        ga,
    )
    vx, vy = (fx, fy) if het else (gx, gy)  # NDVI and LST on the fine grid when heterogeneous
    _write_projected_nc(
        paths["ndvi"],
        "ndvi",
        ndvi,
        days,
        vx,
        vy,
        "EPSG:3035",
        {"units": "1", "long_name": "NDVI-like vegetation index"},
        ga,
        daily_chunks=het,
    )
    _write_projected_nc(
        paths["lst"],
        "lst",
        lst,
        days,
        vx,
        vy,
        "EPSG:3035",
        {"units": "K", "long_name": "LST-like daytime land surface temperature"},
        ga,
        daily_chunks=het,
    )
    _write_projected_nc(
        paths["precipitation"],
        "precipitation",
        sim.precip.astype(np.float32),
        days,
        gx,
        gy,
        "EPSG:3035",
        {"units": "mm", "long_name": "daily precipitation (truth)"},
        ga,
    )
    truth_attrs = {
        "units": "m3 m-3",
        "long_name": "true CRNS-equivalent soil moisture (1 km pixel mean)",
        "comment": "mean over the pixel's land cells of the W_d-weighted profile theta with "
        "D86(r=0, rho_b, theta_eq) (smengine.twin)",
    }
    _write_projected_nc(paths["truth"], "theta_eq", truth, days, gx, gy, "EPSG:3035", truth_attrs, ga)
    _write_era5(paths["era5"], era_out.reshape(nd, 4, *a_shape), days, lats, lons)
    _write_stations(seed, cfg, paths, stations, st_theta, hum_day, sim)
    log.info("twin: files written (%.1f s total)", _time.perf_counter() - t_start)
    return TwinWorld(root, int(seed), cfg, grid, days, paths, stations)


# ------------------------------------------------------------------------------------
# ERA5-like run
# ------------------------------------------------------------------------------------
def _era5_bucket(st: _Statics, cfg: TwinConfig, n_cells: int) -> _Bucket:
    dz = (np.asarray(_ERA5_BOTTOMS) - np.asarray(_ERA5_TOPS)) * 10.0
    land = st.land
    off = cfg.era5_theta_offset
    wp = float(st.wp[land].mean()) + off
    fc = float(st.fc[land].mean()) + off
    por = float(st.por[land].mean()) + off
    ksat = float(np.median(st.ksat[land])) * 24.0
    mid = 0.5 * (np.asarray(_ERA5_TOPS) + np.asarray(_ERA5_BOTTOMS))
    root = np.exp(-mid / 25.0) * dz / 10.0
    root /= root.sum()
    one = np.ones((1, n_cells))
    kd = np.full((4, n_cells), np.clip(ksat / (ksat + 150.0), 0.05, 0.95))
    dzc = dz[:, None]
    return _Bucket(
        dz,
        one * wp * dzc,
        one * fc * dzc,
        one * por * dzc,
        kd,
        one * root[:, None],
        np.ones(n_cells),
        np.zeros(n_cells),
        np.zeros(n_cells),
        np.ones(n_cells, bool),
        0.0,
    )


def _era_step(
    b: _Bucket,
    S: np.ndarray,
    fine_p: np.ndarray,
    fine_pet: np.ndarray,
    idx: np.ndarray,
    count: np.ndarray,
    nearest: np.ndarray,
    factor: float,
) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.bincount(idx, weights=fine_p, minlength=count.size) / count
        pet = np.bincount(idx, weights=fine_pet, minlength=count.size) / count
    p, pet = p[nearest] * factor, pet[nearest]
    b.step(S, p, pet)
    return S / b.dz[:, None]


def _write_era5(path: Path, data: np.ndarray, days: np.ndarray, lats: np.ndarray, lons: np.ndarray) -> None:
    """ERA5-Land's CDS NetCDF layout (2024 onwards): valid_time, latitude (descending),
    longitude; swvl1–4 float32 m**3 m**-3 with the GRIB attributes."""
    import netCDF4

    secs = (days.astype("datetime64[s]") - np.datetime64("1970-01-01T00:00:00")).astype(np.int64)
    names = (
        "Volumetric soil water layer 1",
        "Volumetric soil water layer 2",
        "Volumetric soil water layer 3",
        "Volumetric soil water layer 4",
    )
    with atomic_target(path) as tmp, netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.setncatts(
            {
                "GRIB_centre": "ecmf",
                "GRIB_centreDescription": "European Centre for Medium-Range Weather Forecasts",
                "GRIB_subCentre": 0,
                "Conventions": "CF-1.7",
                "institution": "European Centre for Medium-Range Weather Forecasts",
                "history": "smengine twin world: ERA5-Land-like biased model run (synthetic)",
            }
        )
        nc.createDimension("valid_time", days.size)
        nc.createDimension("latitude", lats.size)
        nc.createDimension("longitude", lons.size)
        num = nc.createVariable("number", "i8")
        num.setncatts({"long_name": "ensemble member numerical id", "units": "1", "standard_name": "realization"})
        num.assignValue(0)
        vt = nc.createVariable("valid_time", "i8", ("valid_time",))
        vt.setncatts(
            {
                "long_name": "time",
                "standard_name": "time",
                "units": "seconds since 1970-01-01",
                "calendar": "proleptic_gregorian",
            }
        )
        vt[:] = secs
        la = nc.createVariable("latitude", "f8", ("latitude",))
        la.setncatts(
            {
                "units": "degrees_north",
                "standard_name": "latitude",
                "long_name": "latitude",
                "stored_direction": "decreasing",
            }
        )
        la[:] = lats
        lo = nc.createVariable("longitude", "f8", ("longitude",))
        lo.setncatts({"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"})
        lo[:] = lons
        ev = nc.createVariable("expver", str, ("valid_time",))
        ev.setncatts({"long_name": "model version"})
        ev[:] = np.array(["0001"] * days.size, dtype=object)
        for k in range(4):
            v = nc.createVariable(
                f"swvl{k + 1}",
                "f4",
                ("valid_time", "latitude", "longitude"),
                fill_value=np.float32(np.nan),
                zlib=True,
                complevel=4,
            )
            v.setncatts(
                {
                    "GRIB_paramId": 39 + k if k < 3 else 42,
                    "GRIB_units": "m**3 m**-3",
                    "GRIB_name": names[k],
                    "GRIB_shortName": f"swvl{k + 1}",
                    "GRIB_gridType": "regular_ll",
                    "units": "m**3 m**-3",
                    "long_name": names[k],
                    "coordinates": "number valid_time latitude longitude expver",
                }
            )
            v[:] = data[:, k]


# ------------------------------------------------------------------------------------
# stations in COSMOS-Europe revision-1 layout
# ------------------------------------------------------------------------------------
def _rev1_series(
    theta_day: np.ndarray,
    days: np.ndarray,
    s: pd.Series,
    hum: np.ndarray,
    p_anom: np.ndarray,
    tmean: np.ndarray,
    rh: np.ndarray,
    precip: np.ndarray,
    rng: np.random.Generator | None,
) -> pd.DataFrame:
    """Hourly rev1 columns for one station; ``rng=None`` gives the noise-free pipeline."""
    nd = days.size
    hours = days.astype("datetime64[h]")[:, None] + np.arange(24)[None, :]
    hours = hours.ravel()
    th = np.repeat(theta_day, 24)
    hod = np.tile(np.arange(24), nd)
    hum_h = np.repeat(hum, 24) * (1 + 0.08 * np.sin(2 * np.pi * (hod - 9) / 24))
    p_h = s["pressure"] + np.repeat(p_anom, 24) + 0.6 * np.sin(2 * np.pi * hod / 12)
    t_h = np.repeat(tmean, 24) + 4.0 * np.sin(2 * np.pi * (hod - 9) / 24)
    n0, rho, lw, soc = float(s["n0"]), float(s["bulk_density"]), float(s["lattice_water"]), float(s["soc"])
    n_corr = nt.theta_to_counts(th, n0, rho, lw, soc)
    f = nt.pressure_correction(p_h) * nt.humidity_correction(hum_h)
    lam = n_corr / f  # raw expected count rate, cph
    raw = rng.poisson(lam).astype(np.float64) if rng is not None else lam
    corr = raw * f
    corr_std = np.sqrt(raw) * f
    ser = pd.Series(corr)
    mov = ser.rolling(24, center=True, min_periods=12).mean().to_numpy()
    mov_std = pd.Series(corr_std).rolling(24, center=True, min_periods=12).mean().to_numpy() / np.sqrt(24)
    sm = nt.counts_to_theta(mov, n0, rho, lw, soc)
    sm_std = nt.theta_uncertainty(mov, mov_std, n0, rho)
    sm_c = np.clip(np.nan_to_num(sm, nan=0.05), 0.02, 0.6)
    r86 = fp.footprint_radius(np.clip(hum_h, 0, 40), sm_c, p_h)
    d86 = fp.penetration_depth(1.0, rho, sm_c, lw, soc) / 100.0
    return pd.DataFrame(
        {
            "DateTime_utc": pd.DatetimeIndex(hours).strftime("%Y-%m-%d %H:%M:%S"),
            "NeutronCount_Epithermal_Cum1h": np.round(raw, 3),
            "NeutronCount_Epithermal_Cum1h_corrected": np.round(corr, 3),
            "NeutronCount_Epithermal_Cum1h_corrected_std": np.round(corr_std, 3),
            "NeutronCount_Epithermal_MovAvg24h_corrected": np.round(mov, 4),
            "NeutronCount_Epithermal_MovAvg24h_corrected_std": np.round(mov_std, 4),
            "Flag_Extreme_Counts": ((raw > 10000) | (raw < 50)).astype(int),
            "AirPressure": np.round(p_h, 2),
            "Flag_AirPressure_ERA5": 0,
            "AirTemperature": np.round(t_h, 2),
            "AirHumidity_Relative": np.round(np.repeat(rh, 24), 1),
            "AirHumidity_gapfilled": np.round(hum_h, 3),
            "Flag_AirHumidity_ERA5": 0,
            "Precipitation": np.round(np.repeat(precip / 24.0, 24), 3),
            "Flag_Porosity_Excess": (sm > s["porosity"]).astype(int),
            "Flag_Snow_ERA5": 0,
            "SoilMoisture_volumetric_MovAvg24h": np.round(sm, 6),
            "SoilMoisture_volumetric_MovAvg24h_std": np.round(sm_std, 6),
            "Footprint_Radius_m": np.round(r86, 2),
            "Footprint_Depth_m": np.round(d86, 4),
        }
    )


def _write_stations(
    seed: int,
    cfg: TwinConfig,
    paths: dict[str, Any],
    stations: pd.DataFrame,
    st_theta: np.ndarray,
    hum_day: np.ndarray,
    sim: _Sim,
) -> None:
    root = Path(paths["crns"])
    series = root / "processed_crns_data_and_diagnostics_rev1"
    series.mkdir(parents=True, exist_ok=True)
    days = cfg.days()
    kf = cfg.kf
    truth_rows = []
    gen_rows, add_rows = [], []
    for i, s in stations.iterrows():
        sid = s["id"]
        px = sim.precip[:, s["row"] // kf, s["col"] // kf]
        args = (st_theta[:, i], days, s, hum_day, sim.met.p_anom, sim.met.tmean, sim.met.rh, px)
        df = _rev1_series(*args, rng=_rng(seed, _S_COUNTS, int(i)))
        clean = _rev1_series(*args, rng=None)
        data = df.to_csv(index=False, na_rep="NaN", lineterminator="\n").encode("latin-1")
        atomic_write(series / f"{sid}.csv", data)
        sm_clean = clean["SoilMoisture_volumetric_MovAvg24h"].to_numpy().reshape(-1, 24).mean(axis=1)
        truth_rows.append(
            pd.DataFrame(
                {
                    "station": sid,
                    "date": days.astype(str),
                    "theta": st_theta[:, i],
                    "sm_noisefree": sm_clean,
                    "abs_humidity": hum_day,
                    "pressure": s["pressure"],
                }
            )
        )
        sm = df["SoilMoisture_volumetric_MovAvg24h"]
        gen_rows.append(
            {
                "File name": sid,
                "Station": f"Twin {i + 1}",
                "Country": "Twinland",
                "Affiliation": "smengine twin world",
                "Detector Typ ": "CRS1000",
                "Latitude (°)": f"{s['lat']:.6f}",
                "Longitude (°)": f"{s['lon']:.6f}",
                "Altitude (m)": f"{s['elevation']:.1f}",
                "Main land use": s["land_cover"],
                "Mean air temperature (°C)": f"{sim.met.tmean.mean():.1f}",
                "Mean annual precipitation (mm)": f"{px.mean() * 365.25:.0f}",
                "Climate classification (Koeppen&Geiger)": "Cfb",
                "Time period start": f"{int(str(days[0])[5:7])}.{str(days[0])[:4]}",
                "Time period end": f"{int(str(days[-1])[5:7])}.{str(days[-1])[:4]}",
            }
        )
        add_rows.append(
            {
                "Station ID": sid,
                "Station/Country": f"Twin {i + 1}/ TW",
                "Porosity": s["porosity"],
                "Bulk density*(g/cm3)": s["bulk_density"],
                "Soil organic carbon*(g/g)": s["soc"],
                "Lattice water*(g/g)": s["lattice_water"],
                "Cutoff rigidity(GV)": 3.0,
                "N0(cts/h)": s["n0"],
                "Mean raw epithermal neutrons(cts/h)": round(float(df["NeutronCount_Epithermal_Cum1h"].mean()), 1),
                "Mean corrected epithermal neutrons(cts/h)": round(
                    float(df["NeutronCount_Epithermal_Cum1h_corrected"].mean()), 1
                ),
                "Mean soil moisture(m3/m3)": round(float(sm.mean()), 3),
                "Soil moisture range(m3/m3)": f"{sm.min():.3f} - {sm.max():.3f}",
                "Mean Footprint depth(m)": round(float(df["Footprint_Depth_m"].mean()), 3),
                "Mean Footprint radius(m)": round(float(df["Footprint_Radius_m"].mean()), 1),
                "References": "-",
            }
        )
    gen_cols = [
        "File name",
        "Station",
        "Country",
        "Affiliation",
        "Detector Typ ",
        "Latitude (°)",
        "Longitude (°)",
        "Altitude (m)",
        "Main land use",
        "Mean air temperature (°C)",
        "Mean annual precipitation (mm)",
        "Climate classification (Koeppen&Geiger)",
        "Time period start",
        "Time period end",
    ]
    gen = pd.DataFrame(gen_rows, columns=gen_cols)
    add = pd.DataFrame(add_rows)
    atomic_write(root / "General_ information_rev1.csv", gen.to_csv(index=False, lineterminator="\n").encode("latin-1"))
    atomic_write(
        root / "Additional_information_rev1.csv", add.to_csv(index=False, lineterminator="\n").encode("latin-1")
    )
    truth = (
        pd.concat(truth_rows, ignore_index=True)
        if truth_rows
        else pd.DataFrame(columns=["station", "date", "theta", "sm_noisefree", "abs_humidity", "pressure"])
    )
    atomic_write(
        Path(paths["station_truth"]), truth.to_csv(index=False, float_format="%.12g", lineterminator="\n").encode()
    )
    atomic_write(
        Path(paths["stations"]), stations.to_csv(index=False, float_format="%.10g", lineterminator="\n").encode()
    )


def write_run_config(world: TwinWorld, path: str | os.PathLike[str]) -> Path:
    """Write :meth:`TwinWorld.run_config` to ``path`` (atomic; paths in it are relative to the
    world's folder, so ``path`` belongs there)."""
    from smengine._io import atomic_write

    p = Path(path)
    atomic_write(p, world.run_config().encode())
    return p
