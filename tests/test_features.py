"""smengine.features: feature definitions and the footprint-weighted training table."""

from __future__ import annotations

import netCDF4
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from pyproj import Transformer

from smengine.errors import ConfigError, DataError, DataLossWarning, ValidationError
from smengine.features import (
    FeatureBuilder,
    FeatureSpec,
    calendar_features,
    training_table,
)
from smengine.filters import exp_filter
from smengine.footprint import footprint_kernel
from smengine.grid import Grid
from smengine.stations import Station, StationSet
from smengine.tiles import TileStore, TileWriter

#: the SWI on observation days only (swi<T>_<src>), every store layer a feature: what these tests check
PLAIN = FeatureSpec(swi_carry=False)
DAYS = np.array(
    ["2020-05-01", "2020-05-02", "2020-05-03", "2020-05-05", "2020-05-06", "2020-05-07"], dtype="datetime64[D]"
)


@pytest.fixture
def store(tmp_path) -> TileStore:
    grid = Grid.from_bounds(4_321_000, 2_987_000, 4_333_000, 2_997_000, tile_size=100)  # 10×12 px, 40×48 sub-px
    rng = np.random.default_rng(3)
    ny, nx = grid.subpixel_shape
    static = rng.random((2, ny, nx)).astype(np.float32)
    static[0, 20, 20] = np.nan  # a hole next to the station
    dyn = (0.2 + 0.1 * rng.random((DAYS.size, 2, ny, nx))).astype(np.float32)
    dyn[:, 0][rng.random((DAYS.size, ny, nx)) < 0.3] = np.nan  # satellite gaps in the SM layer
    index = (np.arange(ny)[:, None] // 16) * 3 + np.arange(nx)[None, :] // 16
    n_cells = int(index.max()) + 1
    coarse = (0.25 + 0.05 * rng.random((DAYS.size, n_cells))).astype(np.float32)
    units = {"elev": "m", "sand": "%", "s1": "m3 m-3", "ndvi": "1", "smap": "m3 m-3"}
    path = tmp_path / "t.h5"
    with TileWriter(
        path, grid, DAYS, ["elev", "sand"], ["s1", "ndvi"], units, coarse={"smap": (index, n_cells)}, tile_id="t000_000"
    ) as w:
        for i, n in enumerate(["elev", "sand"]):
            w.write_static(n, static[i])
        for t in range(DAYS.size):
            w.write_dynamic(t, "s1", dyn[t, 0])
            w.write_dynamic(t, "ndvi", dyn[t, 1])
            w.write_coarse(t, "smap", coarse[t])
    return TileStore.open(path)


def _lonlat(grid: Grid, row: int, col: int) -> tuple[float, float]:
    x, y = grid.xy(row, col, subpixel=True)
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(x, y)
    return float(lon), float(lat)


def _stations(store: TileStore, row: int = 21, col: int = 19, outside: bool = False) -> StationSet:
    """A station at (row, col) of ``store``; with ``outside``, a second one far from every tile."""
    lon, lat = _lonlat(store.grid, row, col)
    idx = pd.date_range("2020-04-30", "2020-05-08", freq="1h", tz="UTC", inclusive="left")
    sm = 0.15 + 0.1 * np.sin(np.arange(idx.size) / 40.0)
    data = pd.DataFrame({"sm": sm, "abs_humidity": 6.0 + np.arange(idx.size) / 100.0, "pressure": 990.0}, index=idx)
    inside = Station(id="IN", lat=lat, lon=lon, data=data, bulk_density=1.4)
    return StationSet([inside, Station(id="OUT", lat=48.0, lon=2.0, data=data.copy())] if outside else [inside])


def test_feature_names_and_spec_roundtrip(store: TileStore) -> None:
    fb = FeatureBuilder(store, PLAIN)
    T = FeatureSpec().swi_T
    assert fb.swi_of == ["s1", "smap"]  # chosen by their soil-moisture units
    assert fb.names == (
        ["elev", "sand", "s1", "ndvi", "smap"]
        + [f"swi{t:g}_s1" for t in T]
        + [f"swi{t:g}_smap" for t in T]
        + ["doy_sin", "doy_cos"]
    )
    spec = FeatureSpec(static=("elev",), dynamic=(), coarse=("smap",), swi_of=("smap",), swi_T=(3, 30), swi_carry=False)
    assert FeatureSpec.from_dict(spec.to_dict()) == spec
    assert FeatureBuilder(store, spec).names == ["elev", "smap", "swi3_smap", "swi30_smap", "doy_sin", "doy_cos"]
    with pytest.raises(ConfigError, match="not in the store"):
        FeatureBuilder(store, FeatureSpec(static=("clay",)))
    with pytest.raises(ConfigError, match=r"SWI source\(s\) \['elev'\] are not dynamic/coarse covariates"):
        FeatureBuilder(store, FeatureSpec(dynamic=("ndvi",), swi_of=("elev",)))
    # a source need not be a feature itself (its SWI is)
    assert FeatureBuilder(
        store, FeatureSpec(dynamic=("ndvi",), coarse=(), swi_of=("s1",), swi_T=(5,), swi_carry=False)
    ).names == ["elev", "sand", "ndvi", "swi5_s1", "doy_sin", "doy_cos"]
    with pytest.raises(ConfigError, match="swi_T"):
        FeatureSpec(swi_T=(0,))


def test_default_spec_gives_features_on_every_day(store: TileStore) -> None:
    """The default carries the SWI for at most 30 days (named swi<T>c30_) and leaves its gappy sources out of the
    raw features."""
    fb = FeatureBuilder(store)
    T = FeatureSpec().swi_T
    assert fb.swi_of == ["s1", "smap"]
    assert fb.names == (
        ["elev", "sand", "ndvi"]
        + [f"swi{t:g}c30_s1" for t in T]
        + [f"swi{t:g}c30_smap" for t in T]
        + ["doy_sin", "doy_cos"]
    )
    sw = fb.swi()
    # after each source's first observation every feature exists every day (store layers here are complete)
    first = max(int(np.argmax(np.isfinite(fb.source_series(n)).any(axis=(1, 2)))) for n in fb.swi_of)
    x = np.stack([fb.day(t, swi=sw) for t in range(first, DAYS.size)])
    plain = FeatureBuilder(store, PLAIN)
    xp = np.stack([plain.day(t) for t in range(first, DAYS.size)])
    assert np.isfinite(x).all(axis=1).mean() > np.isfinite(xp).all(axis=1).mean()
    # a source named as a dynamic feature stays a raw feature beside its SWI
    named = FeatureBuilder(store, FeatureSpec(dynamic=("s1", "ndvi"), swi_T=(5,)))
    assert named.names == [
        "elev",
        "sand",
        "s1",
        "ndvi",
        "swi5c30_s1",
        "swi5c30_smap",
        "doy_sin",
        "doy_cos",
    ]  # smap: default


def test_builder_day_equals_store_layers_and_per_pixel_swi(store: TileStore) -> None:
    fb = FeatureBuilder(store, PLAIN)
    win = (5, 30, 7, 40)
    swi = fb.swi(win)
    for t in range(DAYS.size):
        x = fb.day(t, win, swi)
        full = store.features(t)
        np.testing.assert_array_equal(x[:5], full[:, 5:30, 7:40])
        # SWI: each sub-pixel filtered along its own series over the store's days
        days = store.times.astype(float)
        for j, name in enumerate(["s1", "smap"]):
            series = np.stack([store.features(i)[2 if name == "s1" else 4, 5:30, 7:40] for i in range(DAYS.size)])
            ref = exp_filter(series.astype(np.float64), days, FeatureSpec().swi_T)[:, t]
            np.testing.assert_allclose(x[5 + 4 * j : 9 + 4 * j], ref, rtol=1e-6, equal_nan=True)
        cal = calendar_features([DAYS[t]])
        assert x[-2, 0, 0] == np.float32(cal["doy_sin"][0]) and x[-1, 3, 3] == np.float32(cal["doy_cos"][0])
    # the whole-tile day equals the window cut from it
    np.testing.assert_array_equal(fb.day(3)[:, 5:30, 7:40], fb.day(3, win, swi))


def _slow_footprint_mean(raster: np.ndarray, r: int, c: int, k: np.ndarray, min_frac: float) -> float:
    n = k.shape[0] // 2
    num = den = tot = 0.0
    for i in range(k.shape[0]):
        for j in range(k.shape[1]):
            rr, cc = r + i - n, c + j - n
            if 0 <= rr < raster.shape[0] and 0 <= cc < raster.shape[1]:
                tot += k[i, j]
                if not np.isnan(raster[rr, cc]):
                    num += k[i, j] * raster[rr, cc]
                    den += k[i, j]
    return num / den if tot > 0 and den / tot >= min_frac else np.nan


def test_training_table_matches_slow_reference(store: TileStore) -> None:
    ss = _stations(store, outside=True)
    with pytest.warns(DataLossWarning, match=r"1 of 2 station\(s\) left out: OUT \(outside every tile\)"):
        table = training_table(ss, store, PLAIN)
    assert table.attrs["excluded"] == {"OUT": "outside every tile"}
    # no station-day in the tiles' days: an error that says both spans, not an empty table
    late = ss.daily()
    late["date"] = late["date"] + pd.Timedelta(days=3650)
    with pytest.raises(DataError, match=r"no station-day lies in the tiles' days \(stations 2030-04…2030-05, tiles"):
        training_table(ss, store, PLAIN, daily=late)
    with pytest.raises(DataError, match=r"1 of 2 station\(s\) excluded, more than max_excluded=0.4: OUT"):
        training_table(ss, store, PLAIN, max_excluded=0.4)
    daily = ss.daily()
    inside = daily[(daily["station"] == "IN") & daily["date"].isin(DAYS)]
    assert table["date"].tolist() == inside["date"].tolist()  # 2020-05-04 is not in the store
    assert len(table) == 6
    np.testing.assert_array_equal(table["target"], inside["sm"])
    fb = FeatureBuilder(store, PLAIN)
    swi_full = fb.swi()
    cell = store.grid.subpixel_resolution
    for (_, row), (_, d) in zip(table.iterrows(), inside.iterrows(), strict=True):
        t = store.day_index(row["date"])
        k = footprint_kernel(cell, d["abs_humidity"], d["sm"], d["pressure"])  # that day's kernel
        x = fb.day(t, swi=swi_full)
        for f, name in enumerate(fb.names):
            want = _slow_footprint_mean(x[f].astype(np.float64), 21, 19, k, 0.5)
            assert row[name] == pytest.approx(want, rel=1e-5, abs=1e-7, nan_ok=True), (name, row["date"])
    assert table["kernel_half_width"].min() >= 2
    # x, y: the station's sub-pixel centre in the grid CRS (m), before the bookkeeping columns
    assert list(table.columns) == [
        "station",
        "date",
        "target",
        *fb.names,
        "x",
        "y",
        "tile",
        "kernel_half_width",
        "valid_fraction",
    ]
    x0, y0 = store.grid.xy(21, 19, subpixel=True)
    assert (table["x"] == float(x0)).all() and (table["y"] == float(y0)).all()
    assert float(x0) == 4_321_000 + 19.5 * 250 and float(y0) == 2_997_000 - 21.5 * 250
    # units: the store's for covariates, the source's for SWI, "1" for the calendar
    T = FeatureSpec().swi_T
    want = {
        "elev": "m",
        "sand": "%",
        "s1": "m3 m-3",
        "ndvi": "1",
        "smap": "m3 m-3",
        **{f"swi{t:g}_{src}": "m3 m-3" for src in ("s1", "smap") for t in T},
        "doy_sin": "1",
        "doy_cos": "1",
    }
    assert table.attrs["units"] == want and list(table.attrs["units"]) == fb.names
    assert table.attrs["kinds"]["elev"] == "static" and table.attrs["kinds"]["smap"] == "coarse"
    assert table.attrs["kinds"]["swi5_s1"] == "swi" and table.attrs["kinds"]["doy_cos"] == "calendar"
    assert table.attrs["sources"]["swi10_smap"] == "exp_filter(smap, T=10 d)"
    # a feature whose valid footprint weight is below 0.5 is NaN, and that shows in valid_fraction
    low = table["valid_fraction"] < 0.5
    assert low.any() and table.loc[low, fb.names].isna().any(axis=1).all()
    assert not table.loc[~low, fb.names].isna().any(axis=None)


def test_training_table_uniform_fields_give_the_field_value(tmp_path) -> None:
    grid = Grid.from_bounds(4_321_000, 2_987_000, 4_329_000, 2_995_000, tile_size=100, subpixel=8)
    units = {"a": "1", "s1": "m3 m-3"}
    with TileWriter(tmp_path / "u.h5", grid, DAYS, ["a"], ["s1"], units) as w:
        w.write_static("a", np.full(grid.subpixel_shape, 3.5, np.float32))
        for t in range(DAYS.size):
            w.write_dynamic(t, "s1", np.full(grid.subpixel_shape, 0.1 * (t + 1), np.float32))
    st = TileStore.open(tmp_path / "u.h5")
    table = training_table(_stations(st, 2, 61), st, FeatureSpec(swi_T=(10.0,), swi_carry=False))  # near the east edge
    t = np.array([st.day_index(d) for d in table["date"]])
    assert len(t) == 6 and np.allclose(table["a"], 3.5) and np.allclose(table["s1"], 0.1 * (t + 1))
    ref = exp_filter(0.1 * (np.arange(DAYS.size) + 1), st.times.astype(float), 10.0)
    np.testing.assert_allclose(table["swi10_s1"], ref[t], rtol=1e-6)


def test_training_table_rejects_stores_with_different_units(tmp_path) -> None:
    grid = Grid.from_bounds(4_321_000, 2_987_000, 4_329_000, 2_995_000, tile_size=100, subpixel=8)
    stores = []
    for name, u in (("a", "m3 m-3"), ("b", "percent saturation")):
        with TileWriter(tmp_path / f"{name}.h5", grid, DAYS, [], ["s1"], {"s1": u}) as w:
            for t in range(DAYS.size):
                w.write_dynamic(t, "s1", np.full(grid.subpixel_shape, 0.2, np.float32))
        stores.append(TileStore.open(tmp_path / f"{name}.h5"))
    with pytest.raises(ValidationError, match="units differ"):
        training_table(_stations(stores[0], 2, 2), stores, PLAIN)


def test_carried_swi_and_quantised_kernels(store: TileStore) -> None:
    """swi_carry: exp_filter(carry=True, max_gap=...) per sub-pixel, named swi<T>c<gap>_<src> (swi<T>c_<src>
    without a limit); kernel_quantum: the kernel of rounded inputs."""
    spec = FeatureSpec(swi_T=(5.0, 20.0), swi_carry=True, swi_max_gap=None)
    fb = FeatureBuilder(store, spec)
    assert "swi5c_s1" in fb.names and fb.sources["swi20c_smap"] == "exp_filter(smap, T=20 d, carry)"
    days = store.times.astype("datetime64[D]").astype(float)
    want = exp_filter(fb.source_series("s1"), days, 5.0, carry=True)
    np.testing.assert_array_equal(fb.swi()[0], want)
    gapped = FeatureBuilder(store, FeatureSpec(swi_T=(5.0, 20.0), swi_max_gap=2))
    assert "swi5c2_s1" in gapped.names and gapped.sources["swi20c2_smap"] == "exp_filter(smap, T=20 d, carry ≤ 2 d)"
    cut = exp_filter(fb.source_series("s1"), days, 5.0, carry=True, max_gap=2)
    np.testing.assert_array_equal(gapped.swi()[0], cut)
    assert np.isnan(cut).sum() > np.isnan(want).sum()  # the store's s1 has gaps longer than 2 days
    plain = FeatureBuilder(store, FeatureSpec(swi_T=(5.0, 20.0), swi_carry=False)).swi()[0]
    assert np.isnan(plain).sum() > np.isnan(want).sum()  # carrying fills the gap days
    ss = _stations(store)
    q = (2.0, 0.02, 5.0)
    fast = training_table(ss, store, spec, kernel_quantum=q)
    d = ss.daily()
    d = d.assign(abs_humidity=np.round(d["abs_humidity"] / 2.0) * 2.0, pressure=np.round(d["pressure"] / 5.0) * 5.0)
    rounded = d.assign(sm=np.round(d["sm"] / 0.02) * 0.02)
    # exact kernels of pre-rounded inputs give the same features (targets differ: they are the rounded sm)
    ref = training_table(ss, store, spec, daily=rounded)
    np.testing.assert_allclose(fast[fb.names].to_numpy(float), ref[fb.names].to_numpy(float), rtol=1e-6, equal_nan=True)
    exact = training_table(ss, store, spec, daily=d)
    assert (fast["target"] == exact["target"]).all()
    assert not np.allclose(fast[fb.names].to_numpy(float), exact[fb.names].to_numpy(float), rtol=1e-6, equal_nan=True)
    with pytest.raises(ConfigError, match="kernel_quantum"):
        training_table(ss, store, spec, kernel_quantum=(0.0, 0.02, 5.0))


def test_table_file_round_trip_and_errors(store: TileStore, tmp_path) -> None:
    from smengine.errors import DataError
    from smengine.features import read_table, write_table

    table = training_table(_stations(store, 20, 20), store, FeatureSpec(swi_T=(5.0,)))
    assert len(table) > 0
    path = write_table(table, tmp_path / "t.nc")
    back = read_table(path)
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    assert back.attrs == {k: table.attrs[k] for k in back.attrs} and back.attrs["units"] == table.attrs["units"]
    assert back["date"].dtype.kind == "M" and back["station"].tolist() == table["station"].tolist()
    with netCDF4.Dataset(path) as f:  # units on each variable for any NetCDF reader
        assert f["elev"].units == "m" and f["target"].units == "m3 m-3"
    table.to_csv(tmp_path / "t.csv", index=False)
    csv = read_table(tmp_path / "t.csv")
    assert csv.attrs == {} and csv["date"].dtype.kind == "M" and len(csv) == len(table)
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "missing.nc")
    xr.Dataset({"a": ("x", [1.0])}).to_netcdf(tmp_path / "other.nc")
    with pytest.raises(DataError, match="other.nc: not a training table"):
        read_table(tmp_path / "other.nc")
    with pytest.raises(ValidationError, match=r"columns \['target'\] missing"):
        write_table(table.drop(columns="target"), tmp_path / "u.nc")


@pytest.mark.parametrize("source", ["s1", "s1_sm", "esa_cci_sm", "a_b_c"])
@pytest.mark.parametrize("T", [0.5, 5.0, 10.0, 37.25, 1e3])
@pytest.mark.parametrize("carry", [True, False])
@pytest.mark.parametrize("gap", [None, 0.0, 10.0, 2.5])
def test_swi_name_grammar_round_trips(source: str, T: float, carry: bool, gap: float | None) -> None:
    from smengine.features import parse_swi_feature, parse_swi_feature_name, swi_feature_name

    name = swi_feature_name(source, T, carry, gap)
    assert parse_swi_feature_name(name) == (source, T, carry)
    assert parse_swi_feature(name) == (source, T, carry, gap if carry else None)
    assert (
        name.startswith("swi")
        and name.endswith(f"_{source}")
        and (f"c{'' if gap is None else f'{gap:g}'}_" in name) == carry
    )
    assert parse_swi_feature("swi5c_30_s1") == ("30_s1", 5.0, True, None)  # a source that starts with digits
    for other in ("ndvi", "swi", "swic_s1", "swi5", "doy_sin", "swi.._s1"):
        assert parse_swi_feature_name(other) is None, other
