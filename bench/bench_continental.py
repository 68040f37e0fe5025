"""A synthetic continental stripe through ingest → predict → write, and the forest's size as a lever.

The stripe is ``N_TILES`` tiles of 20 km × 20 km in a row (EPSG:3035, 1-km pixels of
4 × 4 sub-pixels of 250 m; ``Grid(tile_size=20)``) and ``N_DAYS`` days, with the demo's
layer mix written as real files by the twin's own writers (``smengine.twin._files``), in
the twin's layout and units:

* statics at 100 m, one GeoTIFF each: elevation, twi, sand, clay, porosity, land cover;
* Sentinel-1-like surface soil moisture at 1 km, one GeoTIFF per overpass (every 3rd day);
* SMAP-like 9-km soil moisture on the EASE-Grid 2.0 (EPSG:6933), daily NetCDF, 30 % of
  the days missing;
* MODIS-like NDVI and LST (cloud gaps) and precipitation at 1 km, daily NetCDF.

The fields are smooth random fields with the twin's ranges and a latent soil moisture
driven by the rain, so the forest sees coherent inputs like the twin's. Stages, each timed
over whole runs:

* **ingest**: :func:`smengine.ingest.ingest` of every source into one TileStore per tile;
* **predict+write**: :func:`smengine.engine.run` of every tile to CF-NetCDF, 2 threads.

Per stage the summary prints pixel-days per second, the peak traced memory (tracemalloc:
Python and NumPy only), the peak RSS growth of the process during the stage (VmHWM after
a reset through ``/proc/self/clear_refs``, minus VmRSS before: native allocations of GDAL,
HDF5 and the kernels, and the touched pages of memory-mapped tiles, which tracemalloc
misses), the bytes on disk (inputs, tiles, products) and a year over Europe (6 million
land pixels × 365 days) projected from the rate, on this machine and on N such machines
(linear: tiles are independent, so N workers each take 1/N of them). Then where the time
goes: ingest per source and profiled by package; predict split into opening the tiles,
the engine kernel (``TileRunner.predict_arrays``), assembling the product, the input
digests and the NetCDF writing, with the engine's counters.

The forest (full size) is the demo's: :func:`smengine.model.train` with 100 trees,
``cv=()``, ``search=False`` on :func:`smengine.features.training_table` at the stations of
the quick twin world (20 km, one year, 25 stations), whose feature names are the stripe's
layers. The same table gives the forest-size curve (:func:`smengine.model.forest_size_curve`:
leave-site-out RMSE/R against trees and leaf size, and the smallest forest within 0.002
m³ m⁻³ of the best), and forests of 25/50/100 trees × leaf size 1/5/20 give the engine's
sub-pixel predictions per second by forest size. In smoke mode (2 tiles × 4 days) the
forests are trained on feature rows drawn from the stripe's own tiles with a synthetic
target (no twin).
"""

from __future__ import annotations

import cProfile
import math
import pstats
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import _NOTES, SMOKE
from scipy import ndimage

N_TILES = 2 if SMOKE else 16  # tiles in the stripe (west to east)
N_DAYS = 4 if SMOKE else 32
TILE_PX = 20  # 1-km pixels per tile side: 20 km tiles
SUB = 4  # sub-pixels per pixel side (250 m)
FINE_RES = 100.0  # statics, m
START = "2021-04-01"
X0, Y1 = 4_000_000.0, 3_100_000.0  # upper-left corner, EPSG:3035
N_THREADS = 2
N_TREES = 100
EUROPE_PIXELS = 6e6  # land pixels of 1 km
EUROPE_DAYS = 365
WORKERS = (1, 10, 100)
SIZE_TOL = 0.002  # m3 m-3
N_PIXELS = N_TILES * TILE_PX * TILE_PX
PIXEL_DAYS = N_PIXELS * N_DAYS
SUBPIXEL_DAYS = PIXEL_DAYS * SUB * SUB

# stage → measurements, filled by the tests and printed by test_summary (the last test)
_STAGES: dict[str, dict[str, Any]] = {}
_FOREST: dict[str, Any] = {}


# ======================================================================================
# measuring
# ======================================================================================
def _status(key: str) -> float:
    """A /proc/self/status field in bytes (NaN where there is no /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return math.nan


def _reset_peak() -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Meter:
    """A stage as a callable for ``record``: each call's wall time and peak RSS growth
    (VmHWM after a reset minus VmRSS before), and whether tracemalloc was on (the
    ``record`` fixture's memory call: left out of the timings; its traced peak is kept)."""

    def __init__(self, func):
        self.func = func
        self.calls: list[tuple[float, float, bool]] = []
        self.traced_mib = math.nan

    def __call__(self, *args, **kwargs):
        ok = _reset_peak()
        before = _status("VmRSS")
        t0 = time.perf_counter()
        out = self.func(*args, **kwargs)
        dt = time.perf_counter() - t0
        grow = _status("VmHWM") - before if ok else math.nan
        tracing = tracemalloc.is_tracing()
        if tracing:  # record's peak_memory started tracemalloc just before this call
            self.traced_mib = tracemalloc.get_traced_memory()[1] / 2**20
        self.calls.append((dt, grow, tracing))
        return out

    def seconds(self) -> float:
        """Fastest untraced call (the record fixture's warm-up and rounds)."""
        return min(c[0] for c in self.calls if not c[2])

    def rss_mib(self) -> float:
        """Largest peak RSS growth of the untraced calls, MiB."""
        v = [c[1] for c in self.calls if not c[2]]
        return max(v) / 2**20 if v and all(x == x for x in v) else math.nan


def _du(*paths: Path) -> int:
    """Bytes of the files under paths (or of the files themselves)."""
    n = 0
    for p in paths:
        p = Path(p)
        if p.is_file():
            n += p.stat().st_size
        elif p.is_dir():
            n += sum(q.stat().st_size for q in p.rglob("*") if q.is_file())
    return n


def _mib(b: float) -> str:
    return f"{b / 2**20:,.1f} MiB"


def _hours(s: float) -> str:
    return f"{s / 3600:,.1f} h" if s >= 3600 else f"{s / 60:,.1f} min"


def _profile(func, *args, top: int = 12, **kwargs) -> tuple[list[str], dict[str, float], float, list[str]]:
    """Run once under cProfile: the top functions by own time, own time per package, total
    wall time, and the smengine functions by cumulative time (who calls the costly ones)."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(func, *args, **kwargs)
    total = time.perf_counter() - t0
    st = pstats.Stats(prof)
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])  # (file, line, name) → (cc, nc, tt, ct, callers)
    by_pkg: dict[str, float] = defaultdict(float)
    for (file, _line, _name), (_cc, _nc, tt, _ct, _callers) in rows:
        by_pkg[_package(file)] += tt
    lines = [
        f"{tt:7.2f} s own {ct:7.2f} s cum {nc:7d} calls  {name} ({_package(file)}:{Path(file).name}:{line})"
        for (file, line, name), (_cc, nc, tt, ct, _callers) in rows[:top]
    ]
    ours = sorted(
        ((k, v) for k, v in st.stats.items() if _package(k[0]).startswith("smengine")), key=lambda kv: -kv[1][3]
    )
    cum = [
        f"{ct:7.2f} s cum  {name} ({_package(file)}:{line}), {nc} calls"
        for (file, line, name), (_cc, nc, _tt, ct, _callers) in ours[:top]
    ]
    return lines, dict(sorted(by_pkg.items(), key=lambda kv: -kv[1])), total, cum


def _package(file: str) -> str:
    """A short package label for a profiled file."""
    if file.startswith("~") or file.startswith("<"):
        return "builtins/C"
    parts = Path(file).parts
    for anchor in ("site-packages", "dist-packages"):
        if anchor in parts:
            return parts[parts.index(anchor) + 1].removesuffix(".py")
    if "smengine" in parts:
        i = parts.index("smengine")
        return ".".join(parts[i : i + 2]).removesuffix(".py")
    return "stdlib"


# ======================================================================================
# the stripe's files
# ======================================================================================
def _smooth(rng, shape, sigma) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (f - f.mean()) / f.std()


def _make_stripe(root: Path) -> dict[str, Any]:
    """Write the stripe's input files; returns the grid, days, SourceSpecs and paths."""
    import rasterio.transform
    from pyproj import Transformer

    from smengine.grid import Grid
    from smengine.ingest import SourceSpec
    from smengine.twin._files import _write_projected_nc, _write_tif
    from smengine.twin._model import _EASE_RES, _EASE_X0, _EASE_Y1

    rng = np.random.default_rng(2026)
    ny, nx = TILE_PX, N_TILES * TILE_PX
    grid = Grid("EPSG:3035", 1000.0, X0, Y1, nx, ny, SUB, TILE_PX)
    days = np.datetime64(START, "D") + np.arange(N_DAYS)
    kf = round(1000 / FINE_RES)
    fy, fx = ny * kf, nx * kf
    crs = "EPSG:3035"
    ga = {"title": "smengine continental stripe (bench)", "source": "bench_continental.py", "Conventions": "CF-1.8"}

    # ---- statics, 100 m
    st = {n: root / "static" / f"{n}.tif" for n in ("elevation", "twi", "sand", "clay", "porosity", "land_cover")}
    fine_tr = rasterio.transform.from_origin(X0, Y1, FINE_RES, FINE_RES)
    elev = 320 + 90 * _smooth(rng, (fy, fx), 60) + 15 * _smooth(rng, (fy, fx), 5)
    twi = np.clip(10.5 + 1.4 * _smooth(rng, (fy, fx), 4), 6, 20)
    sand = np.clip(0.42 + 0.15 * _smooth(rng, (fy, fx), 30), 0.05, 0.9)
    clay = np.clip(0.21 + 0.07 * _smooth(rng, (fy, fx), 30), 0.03, 0.45)
    por = np.clip(0.46 + 0.02 * _smooth(rng, (fy, fx), 20), 0.38, 0.55)
    lcz = _smooth(rng, (fy, fx), 12)
    lc = np.select([lcz < -0.2, lcz < 0.5, lcz < 1.6], [1, 2, 3], 4).astype(np.uint8)  # no water: all land
    for name, arr, units in (
        ("elevation", elev, "m"),
        ("twi", twi, "1"),
        ("sand", sand, "1"),
        ("clay", clay, "1"),
        ("porosity", por, "m3 m-3"),
    ):
        _write_tif(st[name], arr, fine_tr, crs, units, name)
    _write_tif(st["land_cover"], lc, fine_tr, crs, "1", "land_cover", dtype="uint8", nodata=255)

    # ---- 1-km daily fields: rain, a latent soil moisture driven by it, NDVI, LST
    precip = np.zeros((N_DAYS, ny, nx), np.float32)
    theta = np.empty((N_DAYS, ny, nx), np.float32)
    base = 0.25 + 0.05 * _smooth(rng, (ny, nx), 8)
    th = base.copy()
    for t in range(N_DAYS):
        if rng.random() < 0.4:
            precip[t] = np.maximum(0.0, 6 * (_smooth(rng, (ny, nx), 6) + rng.normal(0, 0.5)))
        th = np.clip(base + 0.9 * (th - base) + 0.006 * precip[t] - 0.004, 0.04, 0.5)
        theta[t] = th
    doy = (days - days.astype("datetime64[Y]")).astype(int) + 1
    phen = 1 / (1 + np.exp(-(doy - 115) / 10))
    ndvi = (0.3 + 0.35 * phen[:, None, None] + 0.08 * _smooth(rng, (ny, nx), 5)) + 0.02 * rng.standard_normal(
        (N_DAYS, ny, nx)
    )
    lst = 283 + 4 * _smooth(rng, (ny, nx), 10) + 6 * (0.3 - theta) + rng.standard_normal((N_DAYS, ny, nx))
    lst = np.where(precip > 0.5, np.nan, lst)
    gx = X0 + (np.arange(nx) + 0.5) * 1000.0
    gy = Y1 - (np.arange(ny) + 0.5) * 1000.0

    # ---- Sentinel-1-like, one GeoTIFF per overpass
    s1_days = days[::3]
    s1 = []
    for d in s1_days:
        t = int((d - days[0]).astype(int))
        v = np.clip(theta[t] + 0.04 * rng.standard_normal((ny, nx)), 0.01, 0.6)
        p = root / "s1" / f"s1_sm_{str(d).replace('-', '')}.tif"
        _write_tif(p, v, grid.transform, crs, "m3 m-3", "s1_sm", tags={"time": str(d)})
        s1.append(p)

    # ---- SMAP-like, EASE-Grid 2.0 9 km: the cells that hold a sub-pixel centre
    sx = X0 + (np.arange(nx * SUB) + 0.5) * (1000.0 / SUB)
    sy = Y1 - (np.arange(ny * SUB) + 0.5) * (1000.0 / SUB)
    SX, SY = np.meshgrid(sx, sy)
    ex, ey = Transformer.from_crs(crs, "EPSG:6933", always_xy=True).transform(SX, SY)
    ecol = np.floor((np.asarray(ex) - _EASE_X0) / _EASE_RES).astype(np.int64)
    erow = np.floor((_EASE_Y1 - np.asarray(ey)) / _EASE_RES).astype(np.int64)
    er0, ec0 = int(erow.min()), int(ecol.min())
    e_shape = (int(erow.max()) - er0 + 1, int(ecol.max()) - ec0 + 1)
    e_idx = ((erow - er0) * e_shape[1] + (ecol - ec0)).ravel()
    e_count = np.bincount(e_idx, minlength=e_shape[0] * e_shape[1])
    smap = np.full((N_DAYS, *e_shape), np.nan, np.float32)
    for t in range(N_DAYS):
        sub_theta = np.repeat(np.repeat(theta[t], SUB, 0), SUB, 1).ravel()
        s = np.bincount(e_idx, weights=sub_theta, minlength=e_count.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.where(e_count > 0, s / e_count, np.nan)
        smap[t] = np.clip(v + 0.03 * rng.standard_normal(v.size), 0.02, 0.6).reshape(e_shape)
    smap[1:][rng.random(N_DAYS - 1) < 0.3] = np.nan  # 30 % of the days missing (never the first)
    ex_c = _EASE_X0 + (ec0 + np.arange(e_shape[1]) + 0.5) * _EASE_RES
    ey_c = _EASE_Y1 - (er0 + np.arange(e_shape[0]) + 0.5) * _EASE_RES
    paths = {
        "static": st,
        "s1": tuple(s1),
        "smap": root / "smap" / "smap_l3_like.nc",
        "ndvi": root / "modis" / "ndvi.nc",
        "lst": root / "modis" / "lst.nc",
        "precipitation": root / "forcing" / "precipitation.nc",
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
    for key, data, attrs in (
        ("ndvi", ndvi, {"units": "1", "long_name": "NDVI-like vegetation index"}),
        ("lst", lst, {"units": "K", "long_name": "LST-like daytime land surface temperature"}),
        ("precipitation", precip, {"units": "mm", "long_name": "daily precipitation"}),
    ):
        _write_projected_nc(paths[key], key, data, days, gx, gy, crs, attrs, ga)

    # the SourceSpecs of TwinWorld.sources(): the demo's layer mix
    groups = {
        "statics": [SourceSpec(st[n], name=n) for n in ("elevation", "twi", "sand", "clay", "porosity")]
        + [SourceSpec(st["land_cover"], name="land_cover", method="nearest")],
        "s1 (GeoTIFF per overpass)": [SourceSpec(list(s1), name="s1_sm")],
        "smap (9 km NetCDF, coarse)": [
            SourceSpec(paths["smap"], variable="soil_moisture", name="smap_sm", storage="coarse")
        ],
        "ndvi (1 km NetCDF)": [SourceSpec(paths["ndvi"], variable="ndvi", name="ndvi")],
        "lst (1 km NetCDF)": [SourceSpec(paths["lst"], variable="lst", name="lst")],
        "precipitation (1 km NetCDF)": [
            SourceSpec(paths["precipitation"], variable="precipitation", name="precipitation")
        ],
    }
    return {
        "root": root,
        "grid": grid,
        "days": days,
        "paths": paths,
        "groups": groups,
        "sources": [s for g in groups.values() for s in g],
        "input_dirs": [root / d for d in ("static", "s1", "smap", "modis", "forcing")],
    }


@pytest.fixture(scope="module")
def stripe(tmp_path_factory):
    root = tmp_path_factory.mktemp("continental")
    t0 = time.perf_counter()
    s = _make_stripe(root)
    s["input_bytes"] = _du(*s["input_dirs"])
    _NOTES.append(
        f"[continental] stripe {N_TILES} tiles × {TILE_PX}×{TILE_PX} km × {N_DAYS} days = {N_PIXELS:,} pixels, "
        f"{PIXEL_DAYS:,} pixel-days, {SUBPIXEL_DAYS:,} sub-pixel-days; inputs written in "
        f"{time.perf_counter() - t0:.1f} s ({_mib(s['input_bytes'])}: 6 static 100 m GeoTIFFs, "
        f"{len(s['paths']['s1'])} S1 GeoTIFFs, 4 NetCDF)"
    )
    return s


def _ingest(stripe: dict[str, Any], out: Path, sources=None, grid=None) -> list[Path]:
    from smengine.ingest import ingest

    return ingest(
        stripe["sources"] if sources is None else sources,
        stripe["grid"] if grid is None else grid,
        out,
        overwrite=True,
    )


@pytest.fixture(scope="module")
def tiles(stripe) -> list[Path]:
    """The stripe's tiles (one ingest, untimed), read by the predict stages."""
    return _ingest(stripe, stripe["root"] / "tiles")


# ======================================================================================
# the forest: the twin's station table (full size) or synthetic rows (smoke)
# ======================================================================================
def _spec() -> Any:
    """The demo's features (smengine.demo.DEMO_SPEC)."""
    from smengine.demo import DEMO_SPEC
    from smengine.features import FeatureSpec

    return FeatureSpec(**DEMO_SPEC)


def _stripe_table(tile_paths: list[Path], per_tile: int = 16) -> Any:
    """Feature rows of random sub-pixels ("stations") of the stripe's tiles, every day, with
    a synthetic target; ``.attrs`` as from training_table (features, units, kinds, sources)."""
    import pandas as pd

    from smengine.features import FeatureBuilder, swi_feature_name
    from smengine.tiles import TileStore

    rng = np.random.default_rng(5)
    frames = []
    fb = None
    for p in tile_paths:
        store = TileStore.open(p)
        fb = FeatureBuilder(store, _spec())
        sw = fb.swi()
        ny, nx = store.grid.subpixel_shape
        r, c = rng.integers(0, ny, per_tile), rng.integers(0, nx, per_tile)
        for t in range(store.times.size):
            f = pd.DataFrame(fb.day(t, swi=sw)[:, r, c].T.astype(np.float64), columns=fb.names)
            f.insert(0, "station", [f"{store.tile_id}_{i:02d}" for i in range(per_tile)])
            f.insert(1, "date", pd.Timestamp(store.times[t]))
            frames.append(f)
    table = pd.concat(frames, ignore_index=True)
    table["target"] = np.clip(
        0.05
        + 0.7 * table[swi_feature_name("s1_sm", 10.0, max_gap=_spec().swi_max_gap)]
        + 0.1 * (table["clay"] - 0.2)
        + 0.002 * table["precipitation"]
        + 0.01 * rng.standard_normal(len(table)),
        0.02,
        0.6,
    )
    table = table[np.isfinite(table[fb.names]).all(axis=1)].reset_index(drop=True)
    table.attrs.update(features=list(fb.names), units=dict(fb.units), kinds=dict(fb.kinds), sources=dict(fb.sources))
    return table


def _twin_table(root: Path) -> Any:
    """training_table at the stations of the quick twin world, the demo's features."""
    from smengine.features import training_table
    from smengine.ingest import ingest
    from smengine.tiles import TileStore
    from smengine.twin import make_world

    world = make_world(0, root / "twin", quick=True)
    stores = [TileStore.open(p) for p in ingest(world.sources(), world.grid, root / "twin_tiles")]
    return training_table(world.read_stations(), stores, _spec(), kernel_quantum=(2.0, 0.02, 5.0))


@pytest.fixture(scope="module")
def table(tiles, tmp_path_factory):
    t0 = time.perf_counter()
    if SMOKE:
        t = _stripe_table(tiles)
        what = "synthetic rows of the stripe's tiles"
    else:
        t = _twin_table(tmp_path_factory.mktemp("twin"))
        what = "training_table at the quick twin world's stations"
    _NOTES.append(
        f"[continental] training table: {what}: {len(t):,} rows, {t['station'].nunique()} stations, "
        f"{len(t.attrs['features'])} features ({time.perf_counter() - t0:.0f} s)"
    )
    return t


def _compiled(table, n_trees: int, leaf: int = 5) -> Any:
    """train(n_estimators=n_trees, min_samples_leaf=leaf, cv=(), search=False), compiled (cached)."""
    from smengine.model import train

    key = (n_trees, leaf)
    if key not in _FOREST:
        f = train(
            table, n_estimators=n_trees, min_samples_leaf=leaf, cv=(), search=False, n_jobs=N_THREADS, progress=False
        )
        cf = f.compile()
        _FOREST[key] = (cf, sum(e.tree_.node_count for e in f.estimator.estimators_))
    return _FOREST[key]


@pytest.fixture(scope="module")
def forest(table):
    return _compiled(table, N_TREES)[0]


# ======================================================================================
# stage 1: ingest
# ======================================================================================
def test_ingest(stripe, record, note, tmp_path):
    meter = _Meter(_ingest)
    out = tmp_path / "tiles"
    paths = record("continental stripe", "ingest", meter, stripe, out, rounds=1, items=PIXEL_DAYS, unit="pixel-days")
    from smengine.tiles import TileStore

    assert len(paths) == N_TILES
    s = TileStore.open(paths[0])
    assert s.times.size == N_DAYS and s.grid.shape == (TILE_PX, TILE_PX)
    assert sorted(s.dynamic_names + s.coarse_names) == ["lst", "ndvi", "precipitation", "s1_sm", "smap_sm"]
    _STAGES["ingest"] = {
        "seconds": meter.seconds(),
        "rss_mib": meter.rss_mib(),
        "traced_mib": meter.traced_mib,
        "bytes_in": stripe["input_bytes"],
        "bytes_out": _du(out),
        "out_label": "tiles",
    }


# ======================================================================================
# stage 2: predict + write
# ======================================================================================
def _run(tile_paths, forest, out):
    from smengine.engine import run

    return run(tile_paths, forest, out, file_days=N_DAYS, n_threads=N_THREADS, resume=False)


def test_predict_write(tiles, forest, record, note, tmp_path):
    meter = _Meter(_run)
    out = tmp_path / "product"
    res = record(
        "continental stripe",
        "predict+write (engine.run, 2 thr)",
        meter,
        tiles,
        forest,
        out,
        rounds=3,
        items=PIXEL_DAYS,
        unit="pixel-days",
    )
    assert not res.failed and len(res.written) == N_TILES
    st = res.stats
    assert st.pixel_days == PIXEL_DAYS and st.subpixel_days == SUBPIXEL_DAYS
    assert st.nan_pixel_days <= 0.1 * st.pixel_days
    from smengine.product import open_product

    with open_product(res.written[0]) as ds:
        sm = ds["sm"].values
        assert sm.shape == (N_DAYS, TILE_PX, TILE_PX)
        assert np.nanmin(sm) >= 0 and np.nanmax(sm) <= 1
    _STAGES["predict+write"] = {
        "seconds": meter.seconds(),
        "rss_mib": meter.rss_mib(),
        "traced_mib": meter.traced_mib,
        "bytes_in": _du(*tiles),
        "bytes_out": _du(out),
        "out_label": "products",
        "stats": st,
    }


# ======================================================================================
# where the time goes
# ======================================================================================
def _predict_parts(tiles, forest, out: Path) -> tuple[dict[str, float], Any]:
    """engine.run's work done step by step over the tiles: seconds per step, summed, and the counters."""
    from smengine.engine import TileRunner, _input_digests, _product, output_name
    from smengine.product import write_netcdf
    from smengine.tiles import TileStore

    parts: dict[str, float] = defaultdict(float)
    stats = None
    for p in tiles:
        t0 = time.perf_counter()
        store = TileStore.open(p)
        t1 = time.perf_counter()
        runner = TileRunner(store, forest, n_threads=N_THREADS)
        t2 = time.perf_counter()
        req, arrays = runner.predict_arrays(None)
        t3 = time.perf_counter()
        digest = _input_digests(store, [req[-1]])[req[-1]]
        t4 = time.perf_counter()
        ds = _product(runner, req, arrays, None, inputs=digest)
        t5 = time.perf_counter()
        path = out / store.tile_id / output_name(store.tile_id, req)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_netcdf(ds, path, overwrite=True)
        t6 = time.perf_counter()
        for k, a, b in (
            ("open tiles", t0, t1),
            ("TileRunner set-up (plan, units, static copy)", t1, t2),
            ("engine kernel (gather + SWI + forest + reduce)", t2, t3),
            ("input digests (resume records)", t3, t4),
            ("product assembly (xarray, CF attributes)", t4, t5),
            ("NetCDF write", t5, t6),
        ):
            parts[k] += b - a
        if stats is None:
            stats = runner.stats
        else:
            stats.add(runner.stats)
    return parts, stats


def test_where_predict_time_goes(tiles, forest, note, tmp_path):
    """Opening, engine kernel, product assembly, input digests, NetCDF writing: per tile,
    summed; the fastest of three passes per step (the machine is shared)."""
    passes = [_predict_parts(tiles, forest, tmp_path / f"pass{i}") for i in range(1 if SMOKE else 3)]
    parts = {k: min(p[0][k] for p in passes) for k in passes[0][0]}
    stats = passes[0][1]
    total = sum(parts.values())
    run_s = _STAGES.get("predict+write", {}).get("seconds", math.nan)
    note(
        f"[continental] where predict+write's time goes ({N_TILES} tiles, steps timed apart, fastest of "
        f"{len(passes)} passes; engine.run took {run_s:.2f} s):"
    )
    for k, v in parts.items():
        note(f"    {k:<48s} {v:7.2f} s  {100 * v / total:5.1f} %")
    kernel = parts["engine kernel (gather + SWI + forest + reduce)"]
    rows = stats.box_hits + stats.walks
    note(
        f"    engine kernel: {stats.subpixel_days / kernel / 1e6:.2f} M sub-pixel predictions/s "
        f"({stats.predicted:,} of {stats.subpixel_days:,} rows through the forest, {stats.invalid:,} invalid, "
        f"{stats.spinup_days} spin-up days); box hits {100 * stats.box_hits / max(rows, 1):.0f} %, "
        f"{stats.visits / max(rows, 1):.2f} block steps per row-tree"
    )
    _STAGES["predict parts"] = dict(parts)
    # the same run profiled: the functions that take the time
    lines, by_pkg, secs, cum = _profile(_run, tiles, forest, tmp_path / "profiled")
    note(f"[continental] engine.run under cProfile ({secs:.2f} s with the profiler): own time by package:")
    note("    " + ", ".join(f"{k} {v:.2f} s" for k, v in list(by_pkg.items())[:8]))
    note("  top functions by own time:")
    for line in lines[:8]:
        note("    " + line)
    note("  smengine functions by cumulative time:")
    for line in cum[:10]:
        note("    " + line)


def test_where_ingest_time_goes(stripe, note, tmp_path):
    """Each source group ingested alone, and the whole ingest profiled by package."""
    times = {}
    for name, specs in stripe["groups"].items():
        t0 = time.perf_counter()
        _ingest(stripe, tmp_path / f"alone_{len(times)}", specs)
        times[name] = time.perf_counter() - t0
    total = sum(times.values())
    whole = _STAGES.get("ingest", {}).get("seconds", math.nan)
    note(
        f"[continental] where ingest's time goes: each source group ingested alone ({N_TILES} tiles; "
        f"sum {total:.1f} s vs {whole:.1f} s for all together):"
    )
    for k, v in times.items():
        note(f"    {k:<30s} {v:7.2f} s  {100 * v / total:5.1f} %")
    _STAGES["ingest parts"] = times
    # the same stripe in fewer, larger tiles: what the per-tile costs weigh
    import dataclasses

    k = min(4, N_TILES)
    big = dataclasses.replace(stripe["grid"], tile_size=TILE_PX * k)
    t0 = time.perf_counter()
    n_big = len(_ingest(stripe, tmp_path / "big_tiles", grid=big))
    secs = time.perf_counter() - t0
    note(
        f"[continental] the same ingest in {n_big} tiles of {TILE_PX * k}×{TILE_PX} km (tile_size={TILE_PX * k}) "
        f"instead of {N_TILES} of {TILE_PX}×{TILE_PX} km: {secs:.1f} s vs {whole:.1f} s "
        f"({PIXEL_DAYS / secs:,.0f} pixel-days/s)"
    )
    _STAGES["ingest big tiles"] = {"seconds": secs, "tiles": n_big, "tile_km": TILE_PX * k}
    lines, by_pkg, secs, cum = _profile(_ingest, stripe, tmp_path / "profiled")
    note(f"[continental] ingest under cProfile ({secs:.1f} s with the profiler): own time by package:")
    note("    " + ", ".join(f"{k} {v:.2f} s" for k, v in list(by_pkg.items())[:8]))
    note("  top functions by own time:")
    for line in lines[:10]:
        note("    " + line)
    note("  smengine functions by cumulative time:")
    for line in cum[:12]:
        note("    " + line)


# ======================================================================================
# forest size
# ======================================================================================
def test_forest_size_curve(table, note):
    from smengine.model import forest_size_curve

    trees = (5, 10, 20) if SMOKE else (10, 25, 50, 100, 200, 500)
    leaves = (5, 20) if SMOKE else (1, 5, 20)
    t0 = time.perf_counter()
    c = forest_size_curve(table, trees=trees, min_samples_leaf=leaves, cv="site", n_jobs=N_THREADS, progress=False)
    secs = time.perf_counter() - t0
    assert len(c) == len(trees) * len(leaves) and np.isfinite(c["RMSE"]).all()
    best = c["RMSE"].min()
    ok = c[c["RMSE"] <= best + SIZE_TOL]
    k = ok["n_estimators"].min()
    pick = ok[ok["n_estimators"] == k].sort_values("min_samples_leaf").iloc[-1]
    ib = c["RMSE"].idxmin()
    note(
        f"[forest size] leave-site-out ({c.attrs['splitter']}, {c.attrs['n_groups']} stations, "
        f"{c.attrs['n_samples']:,} rows) skill against trees × min_samples_leaf ({secs:.0f} s: one fit per "
        "fold and leaf size, tree prefixes scored):"
    )
    note("    trees  " + "".join(f"| leaf {leaf:<3d} RMSE     R    nodes " for leaf in leaves))
    for kk in trees:
        cells = []
        for leaf in leaves:
            r = c[(c["n_estimators"] == kk) & (c["min_samples_leaf"] == leaf)].iloc[0]
            cells.append(f"| {r['RMSE']:.4f} {r['R']:.3f} {r['n_nodes']:8,.0f} ")
        note(f"    {kk:5d}  " + "".join(cells))
    note(
        f"    best: {c.loc[ib, 'n_estimators']} trees, leaf {c.loc[ib, 'min_samples_leaf']} (RMSE {best:.4f}); "
        f"smallest within {SIZE_TOL} m3 m-3: {int(pick['n_estimators'])} trees, leaf "
        f"{int(pick['min_samples_leaf'])} (RMSE {pick['RMSE']:.4f}, {pick['n_nodes']:,.0f} nodes per fold forest) = "
        f'train(n_estimators="smallest")\'s choice'
    )
    _STAGES["forest size"] = {"curve": c, "pick": pick}


SPEED_TREES = (5, 10) if SMOKE else (25, 50, 100)
SPEED_LEAVES = (5,) if SMOKE else (1, 5, 20)


def _predict_tiles(tile_paths, cf) -> int:
    from smengine.engine import TileRunner

    n = 0
    for p in tile_paths:
        r = TileRunner(p, cf, n_threads=N_THREADS)
        r.predict_arrays(None)
        n += r.stats.subpixel_days
    return n


@pytest.mark.parametrize("leaf", SPEED_LEAVES)
@pytest.mark.parametrize("n_trees", SPEED_TREES)
def test_engine_speed_by_forest_size(tiles, table, record, note, n_trees, leaf):
    cf, nodes = _compiled(table, n_trees, leaf)
    meter = _Meter(_predict_tiles)
    n = record(
        "engine by forest size (stripe, 2 thr)",
        f"{n_trees} trees, leaf {leaf}",
        meter,
        tiles,
        cf,
        rounds=3,
        items=SUBPIXEL_DAYS,
        unit="sub-px",
    )
    assert n == SUBPIXEL_DAYS
    _STAGES.setdefault("speed", {})[(n_trees, leaf)] = (SUBPIXEL_DAYS / meter.seconds(), nodes)


# ======================================================================================
# summary (keep last)
# ======================================================================================
def test_summary(note):
    europe = EUROPE_PIXELS * EUROPE_DAYS
    stages = [k for k in ("ingest", "predict+write") if k in _STAGES]
    if not stages:
        pytest.skip("no stage ran")
    note(
        f"[continental] summary: {N_TILES} tiles × {N_DAYS} days = {PIXEL_DAYS:,} pixel-days, 2 cores; "
        "memory: peak traced (tracemalloc, Python+NumPy) and peak RSS growth (native included)"
    )
    note(
        f"    {'stage':<16s} {'time':>8s} {'pixel-days/s':>13s} {'traced':>9s} {'RSS +':>9s} "
        f"{'read':>11s} {'written':>20s} {'B/pixel-day':>11s}"
    )
    total_s = 0.0
    for k in stages:
        s = _STAGES[k]
        rate = PIXEL_DAYS / s["seconds"]
        total_s += s["seconds"]
        note(
            f"    {k:<16s} {s['seconds']:7.2f}s {rate:13,.0f} {s['traced_mib']:7.1f}Mi {s['rss_mib']:7.1f}Mi "
            f"{_mib(s['bytes_in']):>11s} {_mib(s['bytes_out']) + ' ' + s['out_label']:>20s} "
            f"{s['bytes_out'] / PIXEL_DAYS:11.1f}"
        )
    note(f"    {'all':<16s} {total_s:7.2f}s {PIXEL_DAYS / total_s:13,.0f}")
    note(
        f"[continental] a year over Europe ({EUROPE_PIXELS:.0e} land pixels × {EUROPE_DAYS} days = {europe:.2e} "
        "pixel-days) at these rates, on this machine and on N machines like it (linear: the tiles are "
        "independent; I/O assumed to scale with the workers):"
    )
    for k in [*stages, "all"]:
        secs = (europe / PIXEL_DAYS) * (total_s if k == "all" else _STAGES[k]["seconds"])
        note(f"    {k:<16s} " + "   ".join(f"N={n}: {_hours(secs / n):>10s}" for n in WORKERS))
    for k in stages:
        b = _STAGES[k]["bytes_out"] / PIXEL_DAYS * europe
        note(f"    {_STAGES[k]['out_label']} on disk for the Europe-year: {b / 1e12:,.2f} TB")
    parts = _STAGES.get("ingest parts")
    if parts and "ingest" in _STAGES:
        static = parts["statics"] / sum(parts.values()) * _STAGES["ingest"]["seconds"]
        dyn = _STAGES["ingest"]["seconds"] - static
        proj = static / N_PIXELS * EUROPE_PIXELS + dyn / PIXEL_DAYS * europe
        note(
            f"    ingest split into statics (once per pixel, {100 * static / _STAGES['ingest']['seconds']:.0f} % "
            f"of this {N_DAYS}-day run) and daily layers (per pixel-day): Europe-year ingest "
            f"{_hours(proj)} on one machine, {_hours(proj / WORKERS[-1])} on {WORKERS[-1]}"
        )
    bigt = _STAGES.get("ingest big tiles")
    if bigt:
        secs = europe / PIXEL_DAYS * bigt["seconds"]
        note(
            f"    ingest at the {bigt['tile_km']}-km tiles' rate: Europe-year {_hours(secs)} on one machine, "
            f"{_hours(secs / WORKERS[-1])} on {WORKERS[-1]}"
        )
    speed = _STAGES.get("speed")
    if speed:
        parts = _STAGES.get("predict parts") or {}
        kernel = parts.get("engine kernel (gather + SWI + forest + reduce)")
        rest = sum(parts.values()) - kernel if kernel is not None else math.nan
        note(
            "[continental] engine sub-pixel predictions/s on the stripe by forest size (2 threads, kernel only), "
            f"and predict+write's Europe-year with that forest (kernel + the {rest:.2f} s of the run's other steps):"
        )
        for (k, leaf), (rate, nodes) in sorted(speed.items()):
            pw = europe / PIXEL_DAYS * (SUBPIXEL_DAYS / rate + rest)
            note(
                f"    {k:4d} trees, leaf {leaf:2d}: {rate / 1e6:6.2f} M/s, {nodes:9,d} nodes; Europe-year kernel "
                f"{_hours(europe * SUB * SUB / rate)}, predict+write {_hours(pw)} on one machine, "
                f"{_hours(pw / WORKERS[-1])} on {WORKERS[-1]}"
            )
