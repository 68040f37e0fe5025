"""TileStore read throughput vs xarray/NetCDF, and bounded memory of a many-tile ingest.

Issue #3:

* read throughput of the memory-mapped store — sub-pixel feature vectors per second for
  a tile-day — against reading the same data with xarray from NetCDF (uncompressed
  NetCDF-4, the fairest case for xarray; zlib-compressed as users often write it);
* peak RSS of ingesting a domain of many tiles, printed next to one tile's size.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr
from conftest import SMOKE

from smengine.grid import Grid
from smengine.tiles import TileStore, TileWriter

NY = 40 if SMOKE else 400  # a 100 km tile at 250 m sub-pixels
N_STATIC, N_DYNAMIC, N_COARSE = 6, 6, 2
N_DAYS = 3 if SMOKE else 20


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tiles")
    grid = Grid.from_bounds(4_000_000, 3_000_000, 4_000_000 + NY * 250, 3_000_000 + NY * 250, tile_size=NY)
    tgrid = grid.tile_grid(grid.tile(0, 0))
    rng = np.random.default_rng(0)
    days = np.arange(N_DAYS) + np.datetime64("2020-01-01")
    static = [f"static{i}" for i in range(N_STATIC)]
    dynamic = [f"dyn{i}" for i in range(N_DYNAMIC)]
    coarse = [f"coarse{i}" for i in range(N_COARSE)]
    index = ((np.arange(NY)[:, None] // 40) * ((NY + 39) // 40) + np.arange(NY)[None, :] // 40).astype(np.int32)
    n_cells = int(index.max()) + 1
    units = {n: "1" for n in static + dynamic + coarse}
    data = {n: rng.random((NY, NY), dtype=np.float32) for n in static}
    dyn = {n: rng.random((N_DAYS, NY, NY), dtype=np.float32) for n in dynamic}
    cvals = {n: rng.random((N_DAYS, n_cells), dtype=np.float32) for n in coarse}
    h5 = tmp / "tile.h5"
    with TileWriter(h5, tgrid, days, static, dynamic, units, {}, {n: (index, n_cells) for n in coarse}) as w:
        for n in static:
            w.write_static(n, data[n])
        for t in range(N_DAYS):
            for n in dynamic:
                w.write_dynamic(t, n, dyn[n][t])
            for n in coarse:
                w.write_coarse(t, n, cvals[n][t])
    ds = xr.Dataset(
        {
            **{n: (("y", "x"), data[n]) for n in static},
            **{n: (("time", "y", "x"), dyn[n]) for n in dynamic},
            **{n: (("time", "y", "x"), cvals[n][:, index]) for n in coarse},
        },
        coords={"time": days.astype("datetime64[ns]")},
    )
    plain = tmp / "tile.nc"
    ds.to_netcdf(plain, engine="netcdf4")
    packed = tmp / "tile_zlib.nc"
    ds.to_netcdf(packed, engine="netcdf4", encoding={v: {"zlib": True, "complevel": 4} for v in ds.data_vars})
    return h5, plain, packed, static + dynamic + coarse


def _xarray_day(ds, names, t, out):
    for k, n in enumerate(names):
        v = ds[n]
        out[k] = (v.isel(time=t) if "time" in v.dims else v).values
    return out


@pytest.mark.parametrize("impl", ["netcdf-xarray", "netcdf-zlib-xarray", "tilestore-memmap"])
def bench_read_tile_day(record, stores, impl):
    h5, plain, packed, names = stores
    out = np.empty((len(names), NY, NY), np.float32)
    days = iter(range(10**9))
    group = f"read one tile-day: {NY}x{NY} sub-pixels x {len(names)} features ({NY * NY} vectors)"
    if impl == "tilestore-memmap":
        store = TileStore.open(h5)
        result = record(group, impl, lambda: store.features(next(days) % N_DAYS, out=out), rounds=20)
        ref = store.features(0).copy()
    else:
        ds = xr.open_dataset(plain if impl == "netcdf-xarray" else packed, engine="netcdf4", cache=False)
        result = record(
            group,
            impl,
            lambda: _xarray_day(ds, names, next(days) % N_DAYS, out),
            incumbent=impl == "netcdf-xarray",
            rounds=20,
        )
        ref = _xarray_day(ds, names, 0, np.empty_like(out))
        ds.close()
    np.testing.assert_array_equal(ref, TileStore.open(h5).features(0))  # same data either way
    assert result.shape == out.shape


_MAKE_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np, rasterio
    from affine import Affine

    out, n_tiles_side, tile_px, n_days = Path(sys.argv[1]), *(int(a) for a in sys.argv[2:5])
    size = n_tiles_side * tile_px * 4  # sources at sub-pixel resolution (250 m)
    transform = Affine(250, 0, 4_000_000, 0, -250, 3_000_000 + n_tiles_side * tile_px * 1000)
    rng = np.random.default_rng(0)

    def tif(path, tags, units):
        with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=1, dtype="float32",
                           crs="EPSG:3035", transform=transform, tiled=True) as dst:
            dst.write(rng.random((size, size), dtype=np.float32), 1)
            dst.update_tags(**tags)
            dst.update_tags(1, units=units)

    for s in range(2):
        for d in range(n_days):
            tif(out / f"src{s}_{d:03d}.tif", {"time": str(np.datetime64("2020-01-01") + d)}, "m3 m-3")
    tif(out / "elev.tif", {}, "m")
    """
)

_INGEST_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import smengine
    from smengine.grid import Grid
    from smengine.ingest import SourceSpec, ingest, open_source
    from smengine.tiles import TileStore

    src, n_tiles_side, tile_px, n_days = Path(sys.argv[1]), *(int(a) for a in sys.argv[2:5])
    specs = [SourceSpec(sorted(src.glob(f"src{s}_*.tif")), name=f"dyn{s}") for s in range(2)]
    specs.append(SourceSpec(src / "elev.tif", name="elev"))
    side = n_tiles_side * tile_px * 1000
    grid = Grid.from_bounds(4_000_000, 3_000_000, 4_000_000 + side, 3_000_000 + side, tile_size=tile_px)
    sources = [open_source(s) for s in specs]  # lazy: nothing but metadata stays in memory

    def status(key):  # bytes; /proc is per process image (ru_maxrss would carry the parent's peak)
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    before = status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current RSS
    paths = ingest(sources, grid, src / "tiles")
    after = status("VmHWM")
    size = n_tiles_side * tile_px * 4
    print(json.dumps({"tiles": len(paths), "tile_bytes": TileStore.open(paths[0]).nbytes(),
                      "rss_before": before, "rss_peak": after, "source_day_bytes": size * size * 4}))
    """
)


def bench_ingest_peak_memory(note, tmp_path):
    """Peak RSS growth of a fresh process during ingest, against one tile's size."""
    side, tile_px, n_days = (2, 10, 2) if SMOKE else (3, 100, 12)
    args = [str(tmp_path), str(side), str(tile_px), str(n_days)]
    subprocess.run([sys.executable, "-c", _MAKE_SCRIPT, *args], check=True)
    done = subprocess.run([sys.executable, "-c", _INGEST_SCRIPT, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    growth = r["rss_peak"] - r["rss_before"]
    total = r["tiles"] * r["tile_bytes"]
    note(
        f"[ingest {r['tiles']} tiles x {n_days} days, 2 daily + 1 static 250 m GeoTIFF sources] "
        f"tile size {r['tile_bytes'] / 2**20:.1f} MiB (domain {total / 2**20:.0f} MiB); RSS before ingest "
        f"{r['rss_before'] / 2**20:.0f} MiB, peak {r['rss_peak'] / 2**20:.0f} MiB: growth "
        f"{growth / 2**20:.1f} MiB = {growth / r['tile_bytes']:.2f} x one tile "
        f"(one source day is {r['source_day_bytes'] / 2**20:.1f} MiB)"
    )
    assert r["tiles"] == side * side
    if not SMOKE:
        assert growth < 2 * r["tile_bytes"]
