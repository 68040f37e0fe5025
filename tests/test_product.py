"""smengine.product: the CF-1.8 Dataset, NetCDF / Zarr / COG writers, open_product, validation."""

from __future__ import annotations

import doctest
import json
import os

import netCDF4
import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from affine import Affine
from pyproj import CRS

import smengine
import smengine.product
from smengine.errors import ConfigError, DataError, ValidationError
from smengine.grid import Grid
from smengine.product import (
    QUALITY_FLAGS,
    make_product,
    open_product,
    write_cog,
    write_netcdf,
    write_zarr,
)

pytestmark = [  # third-party noise, not ours
    pytest.mark.filterwarnings("ignore:The ioos_sos checker is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Use `@` matmul instead of `\\*` mul:PendingDeprecationWarning"),
]

DAYS = ["2020-07-01", "2020-07-02", "2020-07-03"]
HISTORY = "2020-07-04T00:00:00Z smengine test"
CONFIG = {"model": {"n_estimators": 100}, "grid": "EPSG:3035", "period": ["2020-07-01", "2020-07-03"]}
CARD = {"target": {"name": "sm", "units": "m3 m-3"}, "stations": ["A", "B"], "n_samples": 12}


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def grid() -> Grid:
    return Grid.from_bounds(4_321_000, 3_210_000, 4_326_000, 3_214_000)  # 5 km x 4 km, 1 km pixels


def _arrays(grid: Grid, n_days: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Engine-like arrays: every flag code on day 0, a no_input pixel on day 1."""
    rng = np.random.default_rng(seed)
    shape = (n_days, *grid.shape)
    flag = np.zeros(shape, np.uint8)
    flag[0, 0, :5] = [0, 1, 2, 3, 4]
    if n_days > 1:
        flag[1, -1, -1] = QUALITY_FLAGS["no_input"]
    vf = np.ones(shape, np.float32)
    vf[flag == 1], vf[flag == 2], vf[flag >= 3] = 0.75, 0.25, 0.0
    sm = rng.uniform(0.05, 0.45, shape).astype(np.float32)
    sm[flag >= 2] = np.nan
    unc = rng.uniform(0.005, 0.05, shape).astype(np.float32)
    sd = rng.uniform(0.0, 0.03, shape).astype(np.float32)
    d86 = (10 + 50 * np.nan_to_num(sm, nan=0.2)).astype(np.float32)
    r86 = np.full(shape, 210.0, np.float32)
    return {
        "sm": sm,
        "uncertainty": unc,
        "subpixel_sd": sd,
        "valid_fraction": vf,
        "quality_flag": flag,
        "d86": d86,
        "r86": r86,
    }


def _make(grid: Grid, arrays: dict[str, np.ndarray], times=DAYS, **kw) -> xr.Dataset:
    a = dict(arrays)
    pos = [a.pop(k) for k in ("sm", "uncertainty", "subpixel_sd", "valid_fraction", "quality_flag")]
    kw.setdefault("history", HISTORY)
    kw.setdefault("config", CONFIG)
    kw.setdefault("model_card", CARD)
    return make_product(*pos, grid=grid, times=times, **{**a, **kw})


@pytest.fixture(scope="module")
def arrays(grid) -> dict[str, np.ndarray]:
    return _arrays(grid)


@pytest.fixture(scope="module")
def product(grid, arrays) -> xr.Dataset:
    return _make(grid, arrays)


@pytest.fixture(scope="module")
def nc_path(product, tmp_path_factory):
    return write_netcdf(product, tmp_path_factory.mktemp("nc") / "product.nc")


def _leftovers(folder) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.endswith(".tmp") or ".tmp" in n)


# ---------------------------------------------------------------------------- the Dataset
def test_variables_dims_dtypes_and_values(product, arrays, grid):
    ds = product
    assert list(ds.data_vars) == [
        "sm",
        "sm_uncertainty",
        "sm_subpixel_sd",
        "valid_fraction",
        "quality_flag",
        "d86",
        "r86",
    ]
    for name in ds.data_vars:
        assert ds[name].dims == ("time", "y", "x"), name
    assert ds["sm"].dtype == np.float32 and ds["quality_flag"].dtype == np.uint8
    np.testing.assert_array_equal(ds["sm"].values, arrays["sm"])  # NaN positions included
    np.testing.assert_array_equal(ds["sm_uncertainty"].values, arrays["uncertainty"])
    np.testing.assert_array_equal(ds["quality_flag"].values, arrays["quality_flag"])
    assert np.isnan(ds["sm"].values[0, 0, 2:5]).all() and np.isfinite(ds["sm"].values[0, 0, :2]).all()
    # pixel centres, north-up
    x, _ = grid.xy(0, np.arange(5))
    _, y = grid.xy(np.arange(4), 0)
    np.testing.assert_array_equal(ds["x"].values, x)
    np.testing.assert_array_equal(ds["y"].values, y)
    assert ds["x"].values[0] == 4_321_500.0 and ds["y"].values[0] == 3_213_500.0
    assert ds["x"].attrs == {
        "standard_name": "projection_x_coordinate",
        "long_name": "x coordinate of pixel centre",
        "units": "m",
        "axis": "X",
    }
    assert ds["y"].attrs["standard_name"] == "projection_y_coordinate" and ds["y"].attrs["axis"] == "Y"


def test_time_axis_and_bounds(product):
    t = product["time"]
    assert t.values.dtype == np.dtype("datetime64[ns]")
    assert list(pd.DatetimeIndex(t.values).strftime("%Y-%m-%d")) == DAYS
    assert t.attrs["axis"] == "T" and t.attrs["standard_name"] == "time" and t.attrs["bounds"] == "time_bnds"
    assert t.encoding["units"] == "days since 1970-01-01" and t.encoding["calendar"] == "standard"
    b = product["time_bnds"]
    assert b.dims == ("time", "nv") and b.shape == (3, 2)
    np.testing.assert_array_equal(b.values[:, 0], t.values)
    np.testing.assert_array_equal(b.values[:, 1] - b.values[:, 0], np.timedelta64(1, "D"))


def test_variable_attributes(product):
    sm = product["sm"].attrs
    assert sm["standard_name"] == "volume_fraction_of_condensed_water_in_soil"
    assert sm["units"] == "m3 m-3" and sm["grid_mapping"] == "crs"
    assert sm["cell_methods"] == "time: mean area: mean"
    assert "CRNS" in sm["long_name"] and "footprint" in sm["long_name"]
    assert sm["ancillary_variables"] == "sm_uncertainty sm_subpixel_sd valid_fraction quality_flag d86 r86"
    assert sm["valid_min"] == 0 and sm["valid_max"] == 1 and type(sm["valid_min"]) is np.float32
    assert product["sm"].encoding["_FillValue"] is not None and np.isnan(product["sm"].encoding["_FillValue"])
    unc = product["sm_uncertainty"].attrs
    assert "standard_name" not in unc and unc["units"] == "m3 m-3" and "trees" in unc["comment"]
    assert "standard_error" not in json.dumps({k: str(v) for k, v in unc.items()}).replace("not a standard error", "")
    assert product["sm_subpixel_sd"].attrs["units"] == "m3 m-3"
    assert product["valid_fraction"].attrs["units"] == "1"
    assert product["d86"].attrs["units"] == "cm" and product["r86"].attrs["units"] == "m"
    qf = product["quality_flag"].attrs
    assert qf["standard_name"] == "status_flag"
    assert qf["flag_values"].dtype == np.uint8
    np.testing.assert_array_equal(qf["flag_values"], [0, 1, 2, 3, 4])
    assert qf["flag_meanings"].split() == list(QUALITY_FLAGS)  # ordered as the codes
    assert [QUALITY_FLAGS[m] for m in qf["flag_meanings"].split()] == list(qf["flag_values"])
    assert "NaN" in qf["comment"] and "2-4" in qf["comment"] and "min_valid_fraction" in qf["comment"]


def test_optional_footprint_variables_left_out(grid, arrays):
    a = {k: v for k, v in arrays.items() if k not in ("d86", "r86")}
    ds = _make(grid, a, lonlat=False)
    assert "d86" not in ds and "r86" not in ds and "lat" not in ds.coords
    assert ds["sm"].attrs["ancillary_variables"] == "sm_uncertainty sm_subpixel_sd valid_fraction quality_flag"


def test_grid_mapping_and_lonlat(product, grid):
    crs = product["crs"]
    assert crs.dtype.kind == "i" and crs.ndim == 0
    assert crs.attrs["grid_mapping_name"] == "lambert_azimuthal_equal_area"
    assert CRS.from_cf(crs.attrs) == grid.pyproj_crs
    assert CRS.from_wkt(crs.attrs["spatial_ref"]) == grid.pyproj_crs
    gt = [float(v) for v in crs.attrs["GeoTransform"].split()]
    assert gt == list(grid.transform.to_gdal()) == [4_321_000.0, 1000.0, 0.0, 3_214_000.0, 0.0, -1000.0]
    # EPSG:3035's false origin (4321000, 3210000) is (10 E, 52 N): the pixel whose corner it is
    lat, lon = product["lat"], product["lon"]
    assert lat.attrs["units"] == "degrees_north" and lon.attrs["standard_name"] == "longitude"
    assert lat.dims == ("y", "x")
    assert 52.0 < float(lat[-1, 0]) < 52.01 and 10.0 < float(lon[-1, 0]) < 10.01


def test_global_attributes(product, grid):
    a = product.attrs
    assert a["Conventions"] == "CF-1.8" and a["history"] == HISTORY
    assert a["source"] == f"smengine {smengine.__version__}"
    assert "Schrön" in a["references"] and "Köhli" in a["references"] and "2015WR017169" in a["references"]
    assert Grid.from_config(a["smengine_grid"]) == grid
    assert a["smengine_config"] == json.dumps(CONFIG, sort_keys=True)
    assert json.loads(a["smengine_model_card"]) == CARD
    assert a["min_valid_fraction"] == 0.5 and "title" in a


def test_model_card_as_object_or_json_text_and_default_history(grid, arrays):
    class Card:  # duck-typed smengine.model.ModelCard
        def to_json(self):
            return json.dumps({"content_hash": "abc"})

    ds = _make(grid, arrays, model_card=Card(), history=None, config=None)
    assert json.loads(ds.attrs["smengine_model_card"]) == {"content_hash": "abc"}
    assert ds.attrs["smengine_config"] == "{}"
    assert ds.attrs["history"].endswith(f"smengine {smengine.__version__}: make_product")
    pd.Timestamp(ds.attrs["history"].split()[0])  # starts with an ISO time
    assert json.loads(_make(grid, arrays, model_card='{"a": 1}').attrs["smengine_model_card"]) == {"a": 1}
    with pytest.raises(ConfigError, match="model_card"):
        _make(grid, arrays, model_card="not json")
    with pytest.raises(ConfigError, match="config"):
        _make(grid, arrays, config={"bad": object()})


def test_tile_grid_product(arrays):
    big = Grid.from_bounds(4_300_000, 3_200_000, 4_310_000, 3_208_000, tile_size=5)  # 10 x 8 px, 2 x 2 tiles
    tg = big.tile_grid("t001_001")
    ds = _make(tg, _arrays(tg))
    assert ds.sizes["y"] == 3 and ds.sizes["x"] == 5
    assert float(ds["x"][0]) == 4_305_500.0 and float(ds["y"][0]) == 3_202_500.0


def test_times_accept_timezones_and_dates(grid, arrays):
    t = pd.DatetimeIndex(["2020-07-01 02:00", "2020-07-02 02:00", "2020-07-03 02:00"], tz="Europe/Berlin")
    ds = _make(grid, arrays, times=t)  # 02:00 CEST is 00:00 UTC
    assert list(pd.DatetimeIndex(ds["time"].values).strftime("%Y-%m-%d")) == DAYS
    ds = _make(grid, arrays, times=np.array(DAYS, dtype="datetime64[D]"))
    assert ds["time"].dtype == np.dtype("datetime64[ns]")


def test_module_doctest():
    result = doctest.testmod(smengine.product, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------- validation
def _bad(arrays, **changes):
    a = {k: v.copy() for k, v in arrays.items()}
    a.update(changes)
    return a


def test_shape_mismatch_names_variable_and_both_shapes(grid, arrays):
    with pytest.raises(ValidationError, match=r"uncertainty has shape \(3, 4, 4\), expected \(3, 4, 5\)"):
        _make(grid, _bad(arrays, uncertainty=arrays["uncertainty"][:, :, :4]))
    with pytest.raises(ValidationError, match=r"quality_flag has shape \(2, 4, 5\), expected \(3, 4, 5\)"):
        _make(grid, _bad(arrays, quality_flag=arrays["quality_flag"][:2]))
    with pytest.raises(ValidationError, match=r"r86 has shape \(4, 5\), expected \(3, 4, 5\)"):
        _make(grid, _bad(arrays, r86=arrays["r86"][0]))
    with pytest.raises(ValidationError, match=r"sm has shape \(3, 4, 5\), expected \(3, 5, 4\)"):
        _make(Grid.from_bounds(4_321_000, 3_210_000, 4_325_000, 3_215_000), arrays)
    with pytest.raises(ValidationError, match=r"sm should be 3-D .* shape \(4, 5\)"):
        _make(grid, _bad(arrays, sm=arrays["sm"][0]))


def test_wrong_number_of_days(grid, arrays):
    with pytest.raises(ValidationError, match="times has 2 days but sm has 3"):
        _make(grid, arrays, times=DAYS[:2])


@pytest.mark.parametrize(
    ("times", "match"),
    [
        (["2020-07-01", "2020-07-01 12:00", "2020-07-02"], r"daily.*2020-07-01 12:00"),
        (["2020-07-01", "2020-07-03", "2020-07-02"], r"strictly increasing .*; 2020-07-03 is followed by 2020-07-02"),
        (["2020-07-01", "2020-07-01", "2020-07-02"], r"strictly increasing .*; 2020-07-01 is followed by 2020-07-01"),
        (["2020-07-01", "not a date", "2020-07-02"], "cannot interpret"),
        (["2020-07-01", None, "2020-07-02"], "NaT"),
    ],
    ids=["hourly", "decreasing", "duplicate", "garbage", "missing"],
)
def test_bad_times(grid, arrays, times, match):
    with pytest.raises(ValidationError, match=match):
        _make(grid, arrays, times=times)


def test_sm_must_be_nan_where_flag_is_2_to_4(grid, arrays):
    sm = arrays["sm"].copy()
    sm[0, 0, 3] = 0.2  # flag 3
    with pytest.raises(ValidationError, match=r"sm should be NaN where quality_flag is 2-4.*07-01 at row 0, column 3"):
        _make(grid, _bad(arrays, sm=sm))
    sm = arrays["sm"].copy()
    sm[2, 1, 1] = np.nan  # flag 0
    with pytest.raises(ValidationError, match=r"sm is NaN where quality_flag is 0 or 1.*07-03 at row 1, column 1"):
        _make(grid, _bad(arrays, sm=sm))
    sm = arrays["sm"].copy()
    sm[1, 2, 2] = 1.5
    with pytest.raises(ValidationError, match=r"sm should be within \[0, 1\]"):
        _make(grid, _bad(arrays, sm=sm))


def test_unknown_flag_codes_and_flag_dtype(grid, arrays):
    flag = arrays["quality_flag"].copy()
    flag[1, 0, 0], flag[2, 0, 0] = 7, 9
    with pytest.raises(ValidationError, match=r"unknown codes \[7, 9\]"):
        _make(grid, _bad(arrays, quality_flag=flag))
    with pytest.raises(ValidationError, match="quality_flag.dtype should be an integer"):
        _make(grid, _bad(arrays, quality_flag=arrays["quality_flag"].astype(np.float32)))
    ds = _make(grid, _bad(arrays, quality_flag=arrays["quality_flag"].astype(np.int64)))
    assert ds["quality_flag"].dtype == np.uint8


def test_valid_fraction_consistent_with_flags_and_threshold(grid, arrays):
    with pytest.raises(ValidationError, match="valid_fraction is below min_valid_fraction=0.8"):
        _make(grid, arrays, min_valid_fraction=0.8)  # the partial pixel has 0.75
    vf = arrays["valid_fraction"].copy()
    vf[0, 0, 2] = 0.6  # flagged low_valid_fraction
    with pytest.raises(ValidationError, match="quality_flag is 2"):
        _make(grid, _bad(arrays, valid_fraction=vf))
    vf[0, 0, 2] = 1.5
    with pytest.raises(ValidationError, match=r"valid_fraction should be within \[0, 1\]"):
        _make(grid, _bad(arrays, valid_fraction=vf))
    with pytest.raises(ValidationError, match="sm_uncertainty should be >= 0"):
        _make(grid, _bad(arrays, uncertainty=-arrays["uncertainty"]))
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="min_valid_fraction"):
            _make(grid, arrays, min_valid_fraction=bad)
    with pytest.raises(ConfigError, match="grid should be"):
        _make(grid.get_config(), arrays)


# ---------------------------------------------------------------------------- NetCDF
def test_netcdf_roundtrip_identical(nc_path, product, grid, arrays):
    with open_product(nc_path) as back:
        xr.testing.assert_identical(back, product)  # values (NaN included), coords and all attributes
        assert back["quality_flag"].dtype == np.uint8 and back["sm"].dtype == np.float32
        assert back["quality_flag"].attrs["flag_values"].dtype == np.uint8
        np.testing.assert_array_equal(back["sm"].values, arrays["sm"])
        np.testing.assert_array_equal(back["time_bnds"].values, product["time_bnds"].values)
        assert CRS.from_cf(back["crs"].attrs) == grid.pyproj_crs
        assert back.attrs["history"] == HISTORY and back.attrs["smengine_config"] == product.attrs["smengine_config"]


def test_netcdf_on_disk_layout(nc_path):
    with netCDF4.Dataset(nc_path) as f:
        assert f.data_model == "NETCDF4" and f.dimensions["time"].isunlimited()
        sm = f["sm"]
        assert sm.filters()["zlib"] and sm.filters()["shuffle"] and sm.filters()["complevel"] == 4
        assert sm.chunking() == [1, 4, 5]
        assert np.isnan(sm.getncattr("_FillValue")) and sm.getncattr("coordinates") == "lat lon crs"
        assert sm.getncattr("grid_mapping") == "crs"
        t = f["time"]
        assert t.units == "days since 1970-01-01" and t.calendar == "standard" and t.bounds == "time_bnds"
        assert list(t[:]) == [18444, 18445, 18446]
        assert [list(r) for r in f["time_bnds"][:]] == [[18444, 18445], [18445, 18446], [18446, 18447]]
        assert "_FillValue" not in f["x"].ncattrs() and "_FillValue" not in f["time_bnds"].ncattrs()
        qf = f["quality_flag"]  # CF-1.8 has no unsigned types: a byte with the NUG _Unsigned attribute
        assert qf.datatype == np.int8 and qf.getncattr("_Unsigned") == "true"
        assert qf.getncattr("flag_values").dtype == np.int8


def _cf_failures(path):
    """Run compliance-checker's cf:1.8 suite; return failed checks by priority and the scores."""
    runner = pytest.importorskip("compliance_checker.runner")
    cs = runner.CheckSuite()
    cs.load_all_available_checkers()
    nc = cs.load_dataset(str(path))
    try:
        groups = cs.run_all(nc, ["cf:1.8"], skip_checks=[])
    finally:
        nc.close()
    results, errors = groups["cf:1.8"]
    assert not errors, f"checker errors: {errors}"
    report = cs.build_structure("cf:1.8", results, str(path))
    failed: dict[str, list[str]] = {}
    for prio in ("high_priorities", "medium_priorities", "low_priorities"):
        for r in report[prio]:
            v = r.value if isinstance(r.value, tuple) else ((1, 1) if r.value else (0, 1))
            if v[0] < v[1]:
                failed.setdefault(prio, []).append(f"{r.name}: {'; '.join(r.msgs)}")
    return failed, (report["scored_points"], report["possible_points"])


def test_cf_compliance_checker_passes(nc_path):
    failed, (scored, possible) = _cf_failures(nc_path)
    msg = json.dumps(failed, indent=1, ensure_ascii=False)
    assert not failed.get("high_priorities"), msg
    assert not failed.get("medium_priorities"), msg
    assert not failed.get("low_priorities"), msg  # all pass today (451/451 with compliance-checker 6.1)
    assert scored == possible > 100


def test_cf_compliance_checker_passes_with_di_and_the_aoa_bit(grid, arrays, tmp_path):
    """A product with the dissimilarity index and the outside_aoa bit (flag_masks beside flag_values)."""
    from smengine.product import OUTSIDE_AOA

    sm = arrays["sm"]
    di = np.where(np.isnan(sm), np.nan, np.linspace(0.0, 1.0, sm.size).reshape(sm.shape)).astype(np.float32)
    flag = arrays["quality_flag"] | np.where(di > np.float32(0.5), OUTSIDE_AOA, 0).astype(np.uint8)
    ds = _make(grid, {**arrays, "quality_flag": flag}, di=di, di_threshold=0.5)
    assert ((ds["quality_flag"].values & OUTSIDE_AOA) > 0).any()
    failed, (scored, possible) = _cf_failures(write_netcdf(ds, tmp_path / "di.nc"))
    assert not failed, json.dumps(failed, indent=1, ensure_ascii=False)
    assert scored == possible > 100


def test_cf_compliance_checker_passes_with_lpd(grid, arrays, tmp_path):
    """A product with the local point density beside di (float32 counts, NaN where sm is NaN), exact and
    approximate."""
    from smengine.product import OUTSIDE_AOA

    sm = arrays["sm"]
    di = np.where(np.isnan(sm), np.nan, np.linspace(0.0, 1.0, sm.size).reshape(sm.shape)).astype(np.float32)
    lpd = np.where(np.isnan(sm), np.nan, np.arange(sm.size).reshape(sm.shape) % 40).astype(np.float32)
    flag = arrays["quality_flag"] | np.where(di > np.float32(0.5), OUTSIDE_AOA, 0).astype(np.uint8)
    for err in (0.0, 0.01):
        ds = _make(
            grid,
            {**arrays, "quality_flag": flag},
            di=di,
            di_threshold=0.5,
            lpd=lpd,
            lpd_threshold=0.5,
            lpd_n_train=40,
            lpd_max_error=err,
        )
        assert ds["lpd"].dtype == np.float32 and ds["lpd"].attrs["units"] == "1"
        assert ("Exact" in ds["lpd"].attrs["comment"]) == (err == 0)
        path = write_netcdf(ds, tmp_path / f"lpd{err}.nc")
        failed, (scored, possible) = _cf_failures(path)
        assert not failed, json.dumps(failed, indent=1, ensure_ascii=False)
        assert scored == possible > 100
        with open_product(path) as back:
            np.testing.assert_array_equal(back["lpd"].values, lpd)
            assert back["lpd"].dtype == np.float32


def test_cf_compliance_checker_catches_a_broken_file(product, tmp_path):
    # the checker must be able to fail: wrong units for the standard name, an unsigned
    # variable (CF-1.9+) and a dangling grid_mapping
    bad = product.copy(deep=False)
    bad["sm"] = bad["sm"].copy()
    bad["sm"].attrs = {**bad["sm"].attrs, "units": "K", "grid_mapping": "nowhere"}
    path = tmp_path / "bad.nc"
    bad.to_netcdf(path, engine="netcdf4")
    failed, _ = _cf_failures(path)
    text = json.dumps(failed)
    assert failed.get("high_priorities") or failed.get("medium_priorities")
    assert "units" in text and "nowhere" in text and "uint8" in text


def test_rioxarray_and_gdal_read_crs_and_transform(nc_path, grid):
    pytest.importorskip("rioxarray")
    with open_product(nc_path) as ds:
        assert ds.rio.crs == grid.pyproj_crs
        assert ds.rio.transform() == grid.transform
        assert ds["sm"].rio.crs == grid.pyproj_crs  # crs travels with the variable (a coordinate)
    with xr.open_dataset(nc_path, decode_coords="all") as ds:  # plain xarray, no smengine
        assert ds.rio.crs == grid.pyproj_crs and ds.rio.transform() == grid.transform
    with xr.open_dataset(nc_path) as ds:  # plain xarray, default options: crs is a coordinate
        assert "crs" in ds.coords and ds.rio.crs == grid.pyproj_crs and ds.rio.transform() == grid.transform
        assert ds["sm"].rio.crs == grid.pyproj_crs
        assert ds["quality_flag"].dtype == np.uint8
    with rasterio.open(f"NETCDF:{nc_path}:sm") as src:  # GDAL's netCDF driver
        assert CRS.from_wkt(src.crs.to_wkt()) == grid.pyproj_crs
        assert src.transform == grid.transform and src.count == 3
    with rasterio.open(f"NETCDF:{nc_path}:quality_flag") as src:
        assert src.dtypes[0] == "uint8"


def test_netcdf_readback_is_deterministic(grid, arrays, tmp_path):
    a = write_netcdf(_make(grid, arrays), tmp_path / "a.nc")
    b = write_netcdf(_make(grid, arrays), tmp_path / "b.nc")
    with open_product(a) as da, open_product(b) as db:
        xr.testing.assert_identical(da.load(), db.load())
        assert da.attrs == db.attrs


def test_spatial_subset_keeps_georeferencing(product, tmp_path):
    pytest.importorskip("rioxarray")
    sub = product.isel(x=slice(1, 4), y=slice(2, 4))
    path = write_netcdf(sub, tmp_path / "sub.nc")
    expected = Affine(1000.0, 0.0, 4_322_000.0, 0.0, -1000.0, 3_212_000.0)
    with open_product(path) as ds:
        assert Grid.from_config(ds.attrs["smengine_grid"]).transform == expected
        assert ds["crs"].attrs["GeoTransform"] == " ".join(repr(v) for v in expected.to_gdal())
        assert ds.rio.transform() == expected
    with rasterio.open(f"NETCDF:{path}:sm") as src:
        assert src.transform == expected
    assert product["crs"].attrs["GeoTransform"].startswith("4321000.0 ")  # input untouched


def test_write_netcdf_refuses_to_overwrite(product, tmp_path):
    path = tmp_path / "p.nc"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match=str(path)):
        write_netcdf(product, path)
    assert path.read_bytes() == b"old" and _leftovers(tmp_path) == []
    write_netcdf(product, path, overwrite=True)
    with open_product(path) as back:
        assert back.sizes["time"] == 3
    with pytest.raises(ConfigError, match="complevel"):
        write_netcdf(product, tmp_path / "q.nc", complevel=12)


def test_failed_write_leaves_no_partial_file(product, tmp_path, monkeypatch):
    bad = product.copy()
    bad.attrs["unserialisable"] = {"a": 1}  # netCDF attributes cannot be dicts
    target = tmp_path / "p.nc"
    with pytest.raises(TypeError):
        write_netcdf(bad, target)
    assert not target.exists() and os.listdir(tmp_path) == []

    # a failure after the writer has put bytes on disk, over an existing file
    target.write_bytes(b"previous")
    real = xr.Dataset.to_netcdf

    def half_then_fail(self, path, *args, **kwargs):
        real(self.isel(time=[0]), path, *args, **kwargs)
        assert os.path.getsize(path) > 0
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_netcdf(product, target, overwrite=True)
    assert target.read_bytes() == b"previous" and os.listdir(tmp_path) == ["p.nc"]


def test_output_files_are_not_private(product, tmp_path):
    old = os.umask(0o022)
    try:
        path = write_netcdf(product, tmp_path / "p.nc")
        store = write_zarr(product, tmp_path / "p.zarr")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert store.stat().st_mode & 0o777 == 0o755


# ---------------------------------------------------------------------------- open_product
def test_open_product_rejects_non_products(tmp_path, product):
    with pytest.raises(FileNotFoundError, match="missing.nc"):
        open_product(tmp_path / "missing.nc")
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"not a netcdf file")
    with pytest.raises(DataError, match="junk.nc"):
        open_product(junk)
    plain = tmp_path / "plain.nc"
    xr.Dataset({"sm": ("x", np.zeros(3))}).to_netcdf(plain)
    with pytest.raises(DataError, match=r"plain.nc is not a CF product.*Conventions"):
        open_product(plain)
    nosm = tmp_path / "nosm.nc"
    xr.Dataset({"theta": ("x", np.zeros(3))}, attrs={"Conventions": "CF-1.8"}).to_netcdf(nosm)
    with pytest.raises(DataError, match=r"nosm.nc has no 'sm' variable"):
        open_product(nosm)


# ---------------------------------------------------------------------------- Zarr
def test_zarr_create_and_append_equals_one_write(product, tmp_path):
    one = write_zarr(product, tmp_path / "one.zarr")
    two = tmp_path / "two.zarr"
    assert write_zarr(product.isel(time=slice(0, 2)), two) == two
    with open_product(two) as ds:
        assert ds.sizes["time"] == 2
    write_zarr(product.isel(time=[2]), two)
    with open_product(one) as a, open_product(two) as b:
        xr.testing.assert_identical(a, b)
        xr.testing.assert_identical(b, product)
        assert b["quality_flag"].dtype == np.uint8 and b.attrs["history"] == HISTORY
        np.testing.assert_array_equal(b["time_bnds"].values, product["time_bnds"].values)
    assert _leftovers(tmp_path) == []


def test_zarr_to_netcdf_conversion_stays_cf_compliant(product, tmp_path):
    store = write_zarr(product, tmp_path / "p.zarr")
    with open_product(store) as z:
        assert type(z["sm"].attrs["valid_min"]) is not np.float32  # JSON made it a Python float
        path = write_netcdf(z, tmp_path / "p.nc")
    with open_product(path) as back:
        xr.testing.assert_identical(back, product)
        assert type(back["sm"].attrs["valid_min"]) is np.float32
    failed, _ = _cf_failures(path)
    assert not failed, json.dumps(failed, indent=1)


def test_zarr_append_refuses_overlap_and_mismatch(product, grid, arrays, tmp_path):
    store = write_zarr(product.isel(time=slice(0, 2)), tmp_path / "p.zarr")
    with pytest.raises(ValidationError, match="already stored: 2020-07-02"):
        write_zarr(product.isel(time=slice(1, 3)), store)
    early = _make(grid, _arrays(grid, 1), times=["2020-06-30"])
    with pytest.raises(ValidationError, match="must follow the last stored day 2020-07-02, got 2020-06-30"):
        write_zarr(early, store)
    other = _make(grid, _arrays(grid, 1), times=["2020-07-03"], config={"model": "other"})
    with pytest.raises(ValidationError, match="smengine_config differs"):
        write_zarr(other, store)
    shifted = Grid.from_bounds(4_322_000, 3_210_000, 4_327_000, 3_214_000)
    with pytest.raises(ValidationError, match="smengine_grid differs"):
        write_zarr(_make(shifted, _arrays(shifted, 1), times=["2020-07-03"]), store)
    nofp = {k: v for k, v in _arrays(grid, 1).items() if k not in ("d86", "r86")}
    with pytest.raises(ValidationError, match="variables differ"):
        write_zarr(_make(grid, nofp, times=["2020-07-03"]), store)
    with pytest.raises(ConfigError, match="append_dim"):
        write_zarr(product, store, append_dim="x")
    with open_product(store) as ds:  # nothing was written by the refused appends
        assert ds.sizes["time"] == 2
        xr.testing.assert_identical(ds, product.isel(time=slice(0, 2)))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a Zarr store"):
        write_zarr(product, tmp_path / "file")


def test_zarr_history_records_appends(product, grid, tmp_path):
    store = write_zarr(product.isel(time=slice(0, 2)), tmp_path / "p.zarr")
    day3 = product.isel(time=[2]).assign_attrs(history="2020-07-05T00:00:00Z smengine test: day 3")
    write_zarr(day3, store)
    with open_product(store) as ds:
        assert ds.attrs["history"].splitlines() == ["2020-07-05T00:00:00Z smengine test: day 3", HISTORY]


def test_zarr_interrupted_append_is_invisible_and_resumable(product, tmp_path):
    zarr = pytest.importorskip("zarr")
    store = write_zarr(product.isel(time=slice(0, 2)), tmp_path / "p.zarr")
    # what an append killed half-way leaves: some arrays grown (with junk), others not,
    # and the consolidated metadata (the commit record) not updated
    group = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    for name in ("sm", "quality_flag"):
        arr = group[name]
        arr.resize((3, *arr.shape[1:]))
        arr[2] = 1
    with open_product(store) as ds:
        assert ds.sizes["time"] == 2
        xr.testing.assert_identical(ds, product.isel(time=slice(0, 2)))
    write_zarr(product.isel(time=[2]), store)  # resumes: trims the junk, appends day 3
    with open_product(store) as ds:
        xr.testing.assert_identical(ds, product)


def test_zarr_failed_create_leaves_nothing(product, tmp_path, monkeypatch):
    def fail(self, *args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(xr.Dataset, "to_zarr", fail)
    with pytest.raises(RuntimeError, match="killed"):
        write_zarr(product, tmp_path / "p.zarr")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- COG
def test_cog_roundtrip(product, grid, arrays, tmp_path):
    path = write_cog(product, tmp_path / "sm_20200701.tif", "2020-07-01")
    with rasterio.open(path) as src:
        assert src.count == 1 and src.dtypes[0] == "float32"
        assert CRS.from_wkt(src.crs.to_wkt()) == grid.pyproj_crs
        assert src.transform == grid.transform
        assert np.isnan(src.nodata)
        np.testing.assert_array_equal(src.read(1), arrays["sm"][0])  # NaN where flagged 2-4
        assert src.descriptions == ("sm",) and src.units == ("m3 m-3",)
        assert src.tags()["units"] == "m3 m-3" and src.tags()["date"] == "2020-07-01"
        assert src.profile["tiled"] and src.compression.name.lower() == "deflate"
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert _leftovers(tmp_path) == []


def test_cog_flags_and_day_selection(product, arrays, tmp_path):
    path = write_cog(product, tmp_path / "qf.tif", pd.Timestamp("2020-07-02 15:00"), variable="quality_flag")
    with rasterio.open(path) as src:
        assert src.dtypes[0] == "uint8" and src.nodata is None
        np.testing.assert_array_equal(src.read(1), arrays["quality_flag"][1])
        assert src.tags()["flag_meanings"].split() == list(QUALITY_FLAGS) and src.tags()["date"] == "2020-07-02"
    with pytest.raises(ConfigError, match=r"day 2020-08-01 is not in the product \(3 days, 2020-07-01 to 2020-07-03"):
        write_cog(product, tmp_path / "x.tif", "2020-08-01")
    with pytest.raises(ConfigError, match="'lat' is not one of the product's maps"):
        write_cog(product, tmp_path / "x.tif", "2020-07-01", variable="lat")
    assert not (tmp_path / "x.tif").exists()


def test_cog_has_overviews_when_larger_than_a_tile(tmp_path):
    g = Grid.from_bounds(4_000_000, 3_000_000, 4_700_000, 3_600_000)  # 700 x 600 pixels
    a = _arrays(g, 1)
    a["quality_flag"][:] = 0
    a["valid_fraction"][:] = 1
    a["sm"][:] = np.linspace(0.1, 0.4, a["sm"].size, dtype=np.float32).reshape(a["sm"].shape)
    ds = _make(g, a, times=["2020-07-01"], lonlat=False)
    with rasterio.open(write_cog(ds, tmp_path / "big.tif", "2020-07-01")) as src:
        assert src.overviews(1) and src.block_shapes[0] == (512, 512)
        np.testing.assert_array_equal(src.read(1), a["sm"][0])
