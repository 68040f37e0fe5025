"""Readers and regridding on the real files in shared/data/gridded, plus bad-input handling.

Values at known points are checked against the source read directly with xarray, cfgrib
or rasterio: for nearest-neighbour resampling the value at a target cell must be the
source cell that contains (or, on a reduced Gaussian grid, is nearest to) its centre.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings

import numpy as np
import pytest
import rasterio
import xarray as xr
from affine import Affine
from pyproj import Transformer

from smengine.errors import ConfigError, DataError, SMEngineWarning
from smengine.grid import Grid
from smengine.ingest import (
    SourceSpec,
    coarse_index,
    ingest,
    normalise_units,
    open_source,
    regrid,
)
from smengine.tiles import TileStore

CCI = "esa_cci_sm_v05.2/ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160607000000-fv05.2.nc"
CCI2 = "esa_cci_sm_v05.2/ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160608000000-fv05.2.nc"
C3S = "c3s_sm/daily_combined_TCDR_v201801/C3S-SOILMOISTURE-L3S-SSMV-COMBINED-DAILY-20140101000000-TCDR-v201801.0.0.nc"
C3S_MONTHLY = (
    "c3s_sm/monthly_combined_ICDR_v201706/C3S-SOILMOISTURE-L3S-SSMV-COMBINED-MONTHLY-20180101000000-ICDR-v201706.0.0.nc"
)
ERA5 = "era5/era5-2mt-2019-03-uk.grib"
H14 = "hsaf_h14/H14_2014051500.grib"
DEM = "dem/pysheds_dem_hydrosheds3s_texas.tif"


@pytest.fixture(scope="module")
def gridded(data_dir):
    return data_dir / "gridded"


def _centres_lonlat(grid, rows, cols, subpixel=False):
    x, y = grid.xy(rows, cols, subpixel=subpixel)
    return Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(x, y)


def _sample_points(grid, n=25, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, grid.height, n), rng.integers(0, grid.width, n)


# ---------------------------------------------------------------- NetCDF products
@pytest.mark.data
@pytest.mark.parametrize("rel", [CCI, C3S])
def test_cf_netcdf_soil_moisture_nearest_matches_xarray(gridded, rel):
    path = gridded / rel
    src = open_source(path)
    assert src.units == "m3 m-3" and src.name in ("esa_cci_sm", "c3s_sm") and src.times.size == 1
    grid = Grid.from_lonlat_bounds(2.0, 43.0, 16.0, 52.0, resolution=5000.0)  # central Europe
    out = regrid(src, grid, subpixel=False, method="nearest")[0]
    rows, cols = _sample_points(grid, 60)
    lon, lat = _centres_lonlat(grid, rows, cols)
    with xr.open_dataset(path, engine="netcdf4") as ds:
        ref = ds["sm"].isel(time=0).sel(lat=xr.DataArray(lat), lon=xr.DataArray(lon), method="nearest").values
    np.testing.assert_array_equal(out[rows, cols], ref.astype(np.float32))
    assert np.isfinite(ref).sum() > 20  # the check compared real values, not just NaNs


@pytest.mark.data
def test_multi_file_daily_stack_and_lazy_days(gridded):
    src = open_source(SourceSpec([gridded / CCI2, gridded / CCI]))
    assert list(src.times.astype(str)) == ["2016-06-07", "2016-06-08"]
    with xr.open_dataset(gridded / CCI2, engine="netcdf4") as ds:
        day2 = ds["sm"].isel(time=0).values
    np.testing.assert_array_equal(src.day(1), day2.astype(np.float32))


@pytest.mark.data
def test_windowed_reads_equal_slices_of_the_whole_day(gridded, tmp_path):
    rng = np.random.default_rng(4)
    _write_tif(tmp_path / "w.tif", rng.random((60, 70)), Affine(250, 0, 4_321_000, 0, -250, 3_000_000))
    grid = Grid.from_bounds(4_325_000, 2_990_000, 4_332_000, 2_995_000)
    for src in (open_source(tmp_path / "w.tif"), open_source(gridded / CCI)):
        whole = src.day(0)
        win = src.window_for(grid)
        assert win is not None and win.height < src.shape[0] and win.width < src.shape[1]
        r0, c0, h, w = win.row_off, win.col_off, win.height, win.width
        np.testing.assert_array_equal(src.day(0, win), whole[r0 : r0 + h, c0 : c0 + w])
        # the window's transform places its first cell where the whole grid has it
        assert src.window_transform(win) @ (0, 0) == src.transform @ (c0, r0)


@pytest.mark.data
def test_coarse_index_reproduces_nearest(gridded):
    src = open_source(gridded / CCI)
    tile = Grid.from_lonlat_bounds(5.0, 47.0, 7.0, 48.5, resolution=1000.0)
    index, cells = coarse_index(src, tile)
    near = regrid(src, tile, method="nearest")[0]
    expanded = src.day(0).ravel()[cells][np.maximum(index, 0)]
    expanded[index < 0] = np.nan
    np.testing.assert_array_equal(expanded, near)
    assert cells.size < index.size / 500  # a 0.25° product stays coarse: one cell per ~800 sub-pixels


@pytest.mark.data
def test_monthly_product_is_rejected_as_not_daily(gridded):
    with pytest.raises(DataError, match=r"MONTHLY.*time axis is not daily"):
        open_source(gridded / C3S_MONTHLY)


def test_era5_land_layout_valid_time_and_0_360_longitudes(tmp_path):
    netCDF4 = pytest.importorskip("netCDF4")
    path = tmp_path / "era5land_swvl.nc"
    lats = np.arange(60.0, 39.9, -0.1)
    lons = np.arange(0.0, 360.0, 0.1)
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("valid_time", 3)
        nc.createDimension("latitude", lats.size)
        nc.createDimension("longitude", lons.size)
        t = nc.createVariable("valid_time", "i8", ("valid_time",))
        t.units = "seconds since 1970-01-01"
        t.calendar = "proleptic_gregorian"
        t[:] = np.array([0, 86400, 172800]) + 1_577_836_800
        nc.createVariable("latitude", "f8", ("latitude",))[:] = lats
        nc.createVariable("longitude", "f8", ("longitude",))[:] = lons
        v = nc.createVariable("swvl1", "f4", ("valid_time", "latitude", "longitude"), fill_value=np.float32(-32767))
        v.units = "m**3 m**-3"
        field = (0.2 + 0.001 * (lats[:, None] - 40) + 0.0001 * ((lons[None, :] + 180) % 360)).astype(np.float32)
        data = np.stack([field, field + 0.01, field + 0.02])
        data[1, 50, 10] = -32767  # fill value → NaN
        v[:] = data
    src = open_source(path)
    assert src.name == "swvl1" and src.units == "m3 m-3"
    assert list(src.times.astype(str)) == ["2020-01-01", "2020-01-02", "2020-01-03"]
    assert src.transform.c == pytest.approx(-180.05) and src.transform.f == pytest.approx(60.05)
    grid = Grid.from_lonlat_bounds(-8.0, 45.0, 12.0, 55.0, resolution=10_000.0)  # crosses 0° E
    out = regrid(src, grid, subpixel=False, method="nearest")
    rows, cols = _sample_points(grid, 40)
    lon, lat = _centres_lonlat(grid, rows, cols)
    i = np.rint((60.0 - lat) / 0.1).astype(int)
    j = np.rint((np.asarray(lon) % 360.0) / 0.1).astype(int) % lons.size
    np.testing.assert_allclose(out[2][rows, cols], data[2][i, j], rtol=0, atol=0)
    # the fill value at (lat row 50, lon 1.0 E) became NaN, at its rolled column (−180 → index 0)
    assert np.isnan(src.day(1)).sum() == 1
    assert np.isnan(src.day(1)[50, 10 + lons.size // 2])


def test_percent_saturation_is_kept_apart(tmp_path):
    netCDF4 = pytest.importorskip("netCDF4")
    path = tmp_path / "ESACCI-SOILMOISTURE-L3S-SSMS-ACTIVE-20160607000000-fv05.2.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", 1)
        nc.createDimension("lat", 4)
        nc.createDimension("lon", 4)
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "days since 1970-01-01 00:00:00"
        t[:] = [16959]
        nc.createVariable("lat", "f4", ("lat",))[:] = [50.875, 50.625, 50.375, 50.125]
        nc.createVariable("lon", "f4", ("lon",))[:] = [10.125, 10.375, 10.625, 10.875]
        v = nc.createVariable("sm", "f4", ("time", "lat", "lon"))
        v.units = "percent of saturation"
        v[:] = np.full((1, 4, 4), 55.0)
    src = open_source(path)
    assert src.units == "%"
    assert src.name == "esa_cci_active_sm_pct_saturation"


# ---------------------------------------------------------------- GRIB products
@pytest.mark.data
def test_era5_grib_hourly_needs_daily_and_daily_mean_matches_cfgrib(gridded):
    with pytest.raises(DataError, match=r"era5-2mt.*not daily.*daily='mean'"):
        open_source(gridded / ERA5)
    src = open_source(gridded / ERA5, daily="mean")
    assert src.units == "K" and src.n_times == 31 and str(src.times[0]) == "2019-03-01"
    with xr.open_dataset(gridded / ERA5, engine="cfgrib", backend_kwargs={"indexpath": ""}) as ds:
        ref = ds["t2m"].resample(time="1D").mean().values
    np.testing.assert_allclose(src.load(), ref, rtol=1e-6)
    grid = Grid.from_lonlat_bounds(-4.0, 51.0, 1.0, 55.0, resolution=5000.0)
    out = regrid(src, grid, subpixel=False, method="nearest", days=[10])[0]
    rows, cols = _sample_points(grid, 30)
    lon, lat = _centres_lonlat(grid, rows, cols)
    i = np.rint((58.0 - np.asarray(lat)) / 0.25).astype(int)
    j = np.rint((np.asarray(lon) + 10.0) / 0.25).astype(int)
    np.testing.assert_allclose(out[rows, cols], ref[10][i, j], rtol=1e-6)


def _haversine_nearest(plat, plon, lat, lon):
    la1, lo1 = np.radians(plat)[None, :], np.radians(plon)[None, :]
    la2, lo2 = np.radians(lat)[:, None], np.radians(lon)[:, None]
    a = np.sin((la1 - la2) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin((lo1 - lo2) / 2) ** 2
    return np.argmin(a, axis=1)


@pytest.mark.data
def test_h14_reduced_gaussian_nearest_matches_brute_force(gridded):
    src = open_source(gridded / H14)
    assert src.is_points and src.name == "h14_swi1" and str(src.times[0]) == "2014-05-15"
    grid = Grid.from_lonlat_bounds(5.0, 45.0, 12.0, 50.0, resolution=10_000.0)
    out = regrid(src, grid, subpixel=False)[0]
    rows, cols = _sample_points(grid, 30)
    lon, lat = _centres_lonlat(grid, rows, cols)
    with xr.open_dataset(gridded / H14, engine="cfgrib", backend_kwargs={"indexpath": ""}) as ds:
        plat, plon = ds.latitude.values, ds.longitude.values
        near = (plat > 40) & (plat < 55) & ((plon < 20) | (plon > 350))
        k = _haversine_nearest(plat[near], plon[near], np.asarray(lat), np.asarray(lon))
        ref = ds["swi1"].values[np.flatnonzero(near)[k]]
    np.testing.assert_array_equal(out[rows, cols], ref.astype(np.float32))
    assert np.isfinite(ref).all() and ref.min() >= 0 and ref.max() <= 1


# ---------------------------------------------------------------- GeoTIFF
@pytest.mark.data
def test_geotiff_dem_nearest_matches_rasterio_sample(gridded):
    with pytest.raises(DataError, match="states no units"):
        open_source(gridded / DEM)
    src = open_source(gridded / DEM, units="m")
    grid = Grid.from_lonlat_bounds(-97.45, 32.55, -97.2, 32.8, crs="EPSG:32614", resolution=500.0)
    out = regrid(src, grid, subpixel=True, method="nearest")[0]
    rng = np.random.default_rng(1)
    rows = rng.integers(0, grid.subpixel_shape[0], 40)
    cols = rng.integers(0, grid.subpixel_shape[1], 40)
    lon, lat = _centres_lonlat(grid, rows, cols, subpixel=True)
    with rasterio.open(gridded / DEM) as ds:
        ref = np.array([v[0] for v in ds.sample(zip(lon, lat, strict=False))], dtype=np.float32)
    np.testing.assert_array_equal(out[rows, cols], ref)


def _write_tif(path, data, transform, crs="EPSG:3035", units="m3 m-3", nodata=None, tags=None):
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[0],
        width=data.shape[1],
        count=1,
        dtype="float32",
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as dst:
        dst.write(data.astype(np.float32), 1)
        if units:
            dst.update_tags(1, units=units)
            dst.units = (units,)
        if tags:
            dst.update_tags(**tags)


def test_average_when_coarsening_equals_block_means(tmp_path):
    rng = np.random.default_rng(2)
    fine = rng.random((80, 120)).astype(np.float32)
    fine[3, 5] = -9999.0
    _write_tif(tmp_path / "fine.tif", fine, Affine(250, 0, 4_321_000, 0, -250, 3_000_000), nodata=-9999.0)
    grid = Grid.from_bounds(4_321_000, 2_980_000, 4_351_000, 3_000_000)  # 1 km pixels, aligned
    out = regrid(open_source(tmp_path / "fine.tif"), grid, subpixel=False)[0]  # auto → average
    f = np.where(fine == -9999.0, np.nan, fine).reshape(20, 4, 30, 4)
    with np.errstate(invalid="ignore"):
        expected = np.nanmean(f, axis=(1, 3))
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_bilinear_when_refining_reproduces_a_linear_field(tmp_path):
    x = np.arange(40) * 2000.0 + 1000.0
    y = 3_000_000 - (np.arange(30) * 2000.0 + 1000.0)
    field = (0.1 + 1e-6 * x[None, :] + 2e-6 * (y[:, None] - 2_900_000)).astype(np.float64)
    _write_tif(tmp_path / "lin.tif", field, Affine(2000, 0, 0, 0, -2000, 3_000_000))
    grid = Grid.from_bounds(10_000, 2_950_000, 60_000, 2_990_000, resolution=1000.0)
    out = regrid(open_source(tmp_path / "lin.tif"), grid, subpixel=True)[0]  # auto → bilinear
    rows, cols = np.mgrid[0 : grid.subpixel_shape[0], 0 : grid.subpixel_shape[1]]
    xs, ys = grid.xy(rows, cols, subpixel=True)
    np.testing.assert_allclose(out, 0.1 + 1e-6 * xs + 2e-6 * (ys - 2_900_000), rtol=2e-5)


# ---------------------------------------------------------------- bad input
def test_missing_crs(tmp_path):
    data = np.ones((5, 5), np.float32)
    with rasterio.open(
        tmp_path / "nocrs.tif",
        "w",
        driver="GTiff",
        height=5,
        width=5,
        count=1,
        dtype="float32",
        transform=Affine(1, 0, 0, 0, -1, 5),
    ) as dst:
        dst.write(data, 1)
    with pytest.raises(DataError, match=r"nocrs\.tif: GeoTIFF has no CRS"):
        open_source(tmp_path / "nocrs.tif")


def test_unknown_units(tmp_path):
    _write_tif(tmp_path / "furlong.tif", np.ones((5, 5)), Affine(250, 0, 0, 0, -250, 0), units="furlongs")
    with pytest.raises(DataError, match=r"furlong\.tif: unknown units 'furlongs'"):
        open_source(tmp_path / "furlong.tif")
    with pytest.raises(DataError, match="unknown units"):
        normalise_units("kg of moisture")


@pytest.mark.data
@pytest.mark.parametrize("rel", [CCI, DEM, H14])
def test_truncated_files(gridded, tmp_path, rel):
    cut = tmp_path / ("cut_" + os.path.basename(rel))
    data = (gridded / rel).read_bytes()
    cut.write_bytes(data[: len(data) * 3 // 5])  # not on a GRIB message boundary
    with pytest.raises(DataError, match=r"cut_.*(corrupt|truncated|cannot)"):
        open_source(cut, units="m") if rel == DEM else open_source(cut)


@pytest.mark.data
def test_grid_that_does_not_overlap(gridded):
    src = open_source(gridded / DEM, units="m")  # Texas
    europe = Grid.from_lonlat_bounds(5.0, 45.0, 6.0, 46.0)
    with pytest.raises(DataError, match=r"pysheds_dem.*does not overlap the grid"):
        regrid(src, europe)


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unknown format"):
        open_source(tmp_path / "x.csv")
    with pytest.raises(DataError, match="no such file"):
        open_source(tmp_path / "absent.nc")


# ---------------------------------------------------------------- ingest
def _daily_tifs(folder, n_days, transform, shape, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for d in range(n_days):
        p = folder / f"s1_2020010{d + 1}.tif"
        _write_tif(p, rng.random(shape), transform, tags={"time": f"2020-01-0{d + 1}"})
        paths.append(p)
    return paths


def test_ingest_writes_tiles_resumes_and_matches_regrid(tmp_path):
    grid = Grid.from_bounds(4_321_000, 2_980_000, 4_341_000, 3_000_000, tile_size=10)  # 2x2 tiles
    transform = Affine(250, 0, 4_321_000, 0, -250, 3_000_000)
    days = _daily_tifs(tmp_path, 3, transform, (80, 80))
    _write_tif(tmp_path / "elev.tif", np.arange(6400.0).reshape(80, 80), transform, units="m")
    specs = [SourceSpec(days, name="s1"), SourceSpec(tmp_path / "elev.tif", name="elev")]
    out = tmp_path / "tiles"
    paths = ingest(specs, grid, out)
    assert sorted(p.name for p in paths) == ["t000_000.h5", "t000_001.h5", "t001_000.h5", "t001_001.h5"]
    store = TileStore.open(out / "t001_001.h5")
    assert store.static_names == ["elev"] and store.dynamic_names == ["s1"] and store.units["elev"] == "m"
    tgrid = grid.tile_grid("t001_001")
    expected = regrid(open_source(SourceSpec(days, name="s1")), tgrid, days=[2])[0]
    np.testing.assert_array_equal(store.dynamic[2, 0], expected)
    # sub-pixels here coincide with the 250 m source cells: values are the source's own
    with rasterio.open(days[2]) as ds:
        np.testing.assert_array_equal(store.dynamic[2, 0], ds.read(1)[40:, 40:])
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "t000_001.h5").unlink()
    ingest(specs, grid, out)  # resume: only the missing tile is written
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "t000_001.h5"} == {
        k: v for k, v in mtimes.items() if k != "t000_001.h5"
    }
    assert (out / "t000_001.h5").exists()


def test_failed_ingest_leaves_no_partial_tile(tmp_path):
    grid = Grid.from_bounds(4_321_000, 2_980_000, 4_341_000, 3_000_000, tile_size=10)
    # the source covers only the eastern tiles; its second day goes bad after opening
    transform = Affine(250, 0, 4_331_000, 0, -250, 3_000_000)
    days = _daily_tifs(tmp_path, 2, transform, (80, 40))
    (tmp_path / "g").mkdir()
    good = _daily_tifs(tmp_path / "g", 2, Affine(250, 0, 4_321_000, 0, -250, 3_000_000), (80, 80), seed=5)
    src_bad = open_source(SourceSpec(days, name="s1e"))
    src_good = open_source(SourceSpec(good, name="s1"))
    days[1].write_bytes(days[1].read_bytes()[:400])  # truncated after it was opened
    out = tmp_path / "tiles"
    with pytest.raises(DataError, match=r"s1_20200102\.tif"):
        ingest([src_good, src_bad], grid, out)
    names = sorted(os.listdir(out))
    assert names == ["t000_000.h5"]  # the finished western tile stays, the failed one is absent
    TileStore.open(out / "t000_000.h5")
    shutil.rmtree(out)


# ---------------------------------------------------------------- incremental ingest
FINE = Affine(250, 0, 4_321_000, 0, -250, 3_000_000)  # sub-pixel sized cells over the whole grid
COARSE = Affine(5000, 0, 4_321_000, 0, -5000, 3_000_000)  # > 4 pixels: kept coarse


def _world(folder, n_days=8):
    """A 2x2-tile grid, daily fine (s1) and coarse (cci) GeoTIFFs, a static elevation."""
    grid = Grid.from_bounds(4_321_000, 2_980_000, 4_341_000, 3_000_000, tile_size=10)
    (folder / "s1").mkdir()
    (folder / "cci").mkdir()
    s1 = _daily_tifs(folder / "s1", n_days, FINE, (80, 80))
    cci = _daily_tifs(folder / "cci", n_days, COARSE, (4, 4), seed=1)
    _write_tif(folder / "elev.tif", np.arange(6400.0).reshape(80, 80), FINE, units="m")
    return grid, s1, cci, folder / "elev.tif"


def _tiles(out):
    """Every tile's bytes, by file name."""
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.h5"))}


def _stat(out):
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.iterdir())}


def _spy(src, reads):
    """The source, recording the day indices its reader is asked for."""
    inner = src.reader
    return dataclasses.replace(src, reader=lambda t, w: (reads.append(t), inner(t, w))[1], _cache=None)


def test_ingest_appends_new_days_and_copies_the_old_ones(tmp_path, caplog):
    grid, s1, cci, elev = _world(tmp_path)
    out = tmp_path / "tiles"
    ingest(
        [
            SourceSpec(s1[:5], name="s1"),
            SourceSpec(cci[:5], name="cci", storage="coarse"),
            SourceSpec(elev, name="elev"),
        ],
        grid,
        out,
    )
    first = {p.name: TileStore.open(p) for p in out.glob("*.h5")}
    first = {k: (np.array(s.static), np.array(s.dynamic), np.array(s.coarse["cci"].values)) for k, s in first.items()}
    # the glob now matches 8 days; only days 6-8 may be read (and regridded) from the sources
    reads = {"s1": [], "cci": [], "elev": []}
    srcs = [
        _spy(open_source(SourceSpec(s1, name="s1")), reads["s1"]),
        _spy(open_source(SourceSpec(cci, name="cci")), reads["cci"]),
        _spy(open_source(SourceSpec(elev, name="elev")), reads["elev"]),
    ]
    with caplog.at_level("INFO", logger="smengine.ingest"):
        ingest(srcs, grid, out)
    assert set(reads["s1"]) == set(reads["cci"]) == {5, 6, 7} and reads["elev"] == []
    assert "t001_001: appended 3 days, regridded new days of ['s1', 'cci']" in caplog.text
    for name, (static, dynamic, values) in first.items():
        s = TileStore.open(out / name)
        assert s.times.size == 8 and str(s.times[-1]) == "2020-01-08" and s.coarse_names == ["cci"]
        assert s.static.tobytes() == static.tobytes()
        assert s.dynamic[:5].tobytes() == dynamic.tobytes()
        assert s.coarse["cci"].values[:5].tobytes() == values.tobytes()
        assert s.covered("s1").all() and s.covered("cci").all()
    # days 6-8 (indeed the whole file) equal a from-scratch ingest of the 8 days
    fresh = tmp_path / "fresh"
    ingest(
        [SourceSpec(s1, name="s1"), SourceSpec(cci, name="cci", storage="coarse"), SourceSpec(elev, name="elev")],
        grid,
        fresh,
    )
    assert _tiles(out) == _tiles(fresh)


def test_ingest_adds_new_static_and_coarse_sources(tmp_path, caplog):
    grid, s1, cci, elev = _world(tmp_path, n_days=3)
    out = tmp_path / "tiles"
    ingest([SourceSpec(s1, name="s1")], grid, out)
    before = {p.name: np.array(TileStore.open(p).dynamic) for p in out.glob("*.h5")}
    specs = [
        SourceSpec(s1, name="s1"),
        SourceSpec(elev, name="elev"),
        SourceSpec(cci[:2], name="cci", storage="coarse"),
    ]
    with caplog.at_level("INFO", logger="smengine.ingest"):
        ingest(specs, grid, out)
    assert "t000_000: added layers ['elev', 'cci']" in caplog.text
    for name, dynamic in before.items():
        s = TileStore.open(out / name)
        assert s.static_names == ["elev"] and s.dynamic_names == ["s1"] and s.coarse_names == ["cci"]
        assert s.units["elev"] == "m" and s.sources["elev"] == str(elev)
        assert s.dynamic.tobytes() == dynamic.tobytes()
        assert list(s.covered("cci")) == [True, True, False]  # the coarse source lacks day 3: NaN
        assert np.isnan(s.coarse["cci"].values[2]).all()
    fresh = tmp_path / "fresh"
    ingest(specs, grid, fresh)
    assert _tiles(out) == _tiles(fresh)


def test_ingest_fills_the_days_a_layer_lacked(tmp_path):
    # a product that lags behind (cci has 2 of the tile's 4 days) later catches up
    grid, s1, cci, elev = _world(tmp_path, n_days=4)
    out = tmp_path / "tiles"
    ingest([SourceSpec(s1, name="s1"), SourceSpec(cci[:2], name="cci")], grid, out)
    assert list(TileStore.open(out / "t000_000.h5").covered("cci")) == [True, True, False, False]
    reads = []
    ingest([SourceSpec(s1, name="s1"), _spy(open_source(SourceSpec(cci, name="cci")), reads)], grid, out)
    assert set(reads) == {2, 3}
    fresh = tmp_path / "fresh"
    ingest([SourceSpec(s1, name="s1"), SourceSpec(cci, name="cci")], grid, fresh)
    assert _tiles(out) == _tiles(fresh)


def test_ingest_redoes_a_changed_source_with_a_warning(tmp_path, caplog):
    grid, s1, cci, elev = _world(tmp_path, n_days=3)
    (tmp_path / "v2").mkdir()
    s1_v2 = _daily_tifs(tmp_path / "v2", 3, FINE, (80, 80), seed=7)  # reprocessed: other files, same days
    out = tmp_path / "tiles"
    ingest([SourceSpec(s1, name="s1"), SourceSpec(elev, name="elev")], grid, out)
    static = {p.name: np.array(TileStore.open(p).static) for p in out.glob("*.h5")}
    specs = [SourceSpec(s1_v2, name="s1"), SourceSpec(elev, name="elev")]
    with pytest.warns(SMEngineWarning, match=r"layer 's1': source files changed.*v2") as record:
        ingest(specs, grid, out)
    assert len(record) == 1  # once per layer, not once per tile
    assert caplog.text.count("source files changed") == 4  # each tile is logged
    assert "t001_000: layer 's1'" in caplog.text and str(s1[0]) in caplog.text and str(s1_v2[0]) in caplog.text
    for name, st in static.items():
        assert TileStore.open(out / name).static.tobytes() == st.tobytes()  # elev: untouched
    fresh = tmp_path / "fresh"
    ingest(specs, grid, fresh)
    assert _tiles(out) == _tiles(fresh)
    # a changed storage is a change too
    with pytest.warns(SMEngineWarning, match=r"layer 's1': stored as dynamic, now coarse"):
        ingest([SourceSpec(s1_v2, name="s1", storage="coarse")], grid, out)
    s = TileStore.open(out / "t000_000.h5")
    assert s.coarse_names == ["s1"] and s.dynamic_names == [] and s.static_names == ["elev"]


def test_ingest_skips_a_complete_tile_and_keeps_unnamed_layers(tmp_path, caplog):
    grid, s1, cci, elev = _world(tmp_path, n_days=3)
    out = tmp_path / "tiles"
    specs = [SourceSpec(s1, name="s1"), SourceSpec(cci[1:], name="cci"), SourceSpec(elev, name="elev")]
    ingest(specs, grid, out)
    before = _stat(out)
    with caplog.at_level("INFO", logger="smengine.ingest"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ingest(specs, grid, out) == [out / f"{t}.h5" for t in ("t000_000", "t000_001", "t001_000", "t001_001")]
        ingest(specs[:2], grid, out)  # elev named by no source: kept, and nothing to do
    assert _stat(out) == before
    assert "t001_001: up to date, skipped" in caplog.text
    assert "t001_001: up to date, skipped; kept ['elev'] (named by no source)" in caplog.text


def test_failed_update_leaves_the_old_tile(tmp_path):
    grid, s1, cci, elev = _world(tmp_path, n_days=5)
    out = tmp_path / "tiles"
    ingest([SourceSpec(s1[:3], name="s1")], grid, out)
    before = _tiles(out)

    def broken(t, window):
        raise DataError("s1_20200105.tif: read error")

    src = open_source(SourceSpec(s1, name="s1"))
    good = src.reader
    src = dataclasses.replace(src, reader=lambda t, w: broken(t, w) if t == 4 else good(t, w), _cache=None)
    with pytest.raises(DataError, match="read error"):
        ingest([src], grid, out)
    assert _tiles(out) == before
    assert sorted(os.listdir(out)) == sorted(before)  # no temporary files


def test_ingest_overwrite_rewrites_and_days_extend_the_axis(tmp_path):
    grid, s1, cci, elev = _world(tmp_path, n_days=2)
    out = tmp_path / "tiles"
    specs = [SourceSpec(s1, name="s1")]
    ingest(specs, grid, out)
    before, content = _stat(out), _tiles(out)
    ingest(specs, grid, out, overwrite=True)
    after = _stat(out)
    assert all(after[k][0] != before[k][0] for k in before) and _tiles(out) == content
    # days= adds to an existing tile's own days
    dynamic = np.array(TileStore.open(out / "t000_000.h5").dynamic)
    ingest(specs, grid, out, days=["2020-01-05"])
    s = TileStore.open(out / "t000_000.h5")
    assert list(s.times.astype(str)) == ["2020-01-01", "2020-01-02", "2020-01-05"]
    assert list(s.covered("s1")) == [True, True, False] and np.isnan(s.dynamic[2]).all()
    assert s.dynamic[:2].tobytes() == dynamic.tobytes()


def test_ingest_refuses_a_tile_of_another_grid(tmp_path):
    grid, s1, cci, elev = _world(tmp_path, n_days=1)
    out = tmp_path / "tiles"
    ingest([SourceSpec(s1, name="s1")], grid, out)
    other = Grid.from_bounds(4_321_000, 2_980_000, 4_341_000, 3_000_000, resolution=500.0, tile_size=20)
    with pytest.raises(ConfigError, match="t000_000.h5: the tile was written for another grid"):
        ingest([SourceSpec(s1, name="s1")], other, out)


def test_ingest_updates_a_tile_written_before_coverage_was_recorded(tmp_path):
    h5py = pytest.importorskip("h5py")
    grid, s1, cci, elev = _world(tmp_path, n_days=3)
    out = tmp_path / "tiles"
    ingest([SourceSpec(s1[:2], name="s1")], grid, out)
    with h5py.File(out / "t000_000.h5", "a") as h5:
        del h5["coverage"]
    dynamic = np.array(TileStore.open(out / "t000_000.h5").dynamic)
    reads = []
    ingest([_spy(open_source(SourceSpec(s1, name="s1")), reads)], grid, out)
    assert set(reads) == {2}  # every stored day is taken as present; only day 3 is new
    s = TileStore.open(out / "t000_000.h5")
    assert s.times.size == 3 and s.dynamic[:2].tobytes() == dynamic.tobytes() and s.covered("s1").all()
