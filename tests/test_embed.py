"""xarray in, xarray out: predict_dataset, TileStore.to_dataset and the day-by-day Stepper."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from sklearn.ensemble import RandomForestRegressor
from test_engine import DAYS, make_tile, small_forest

from smengine.engine import Stepper, predict, predict_dataset
from smengine.errors import ConfigError, ValidationError
from smengine.model import CompiledForest

VARS = ("sm", "sm_uncertainty", "sm_subpixel_sd", "valid_fraction", "quality_flag")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embed")
    store = make_tile(tmp / "t000_000.h5")
    _, cf, names = small_forest(store, swi_carry=True, seed=1, n_trees=12)  # carried SWI: the state matters
    return {"store": store, "cf": cf, "names": names, "tmp": tmp, "ref": predict(store, cf)}


def _same(a: xr.Dataset, b: xr.Dataset) -> None:
    for v in VARS:
        assert a[v].dtype == b[v].dtype, v
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    for c in ("time", "y", "x", "lat", "lon", "time_bnds"):
        np.testing.assert_array_equal(a[c].values, b[c].values, err_msg=c)
    assert a.attrs["smengine_grid"] == b.attrs["smengine_grid"]


def test_to_dataset_documents_the_form(world) -> None:
    store = world["store"]
    ds = store.to_dataset()
    assert ds["elev"].dims == ("y_sub", "x_sub") and ds["s1"].dims == ("time", "y_sub", "x_sub")
    assert ds["smap"].dims == ("time", "smap_cell") and ds["smap"].attrs["smengine_index"] == "smap_index"
    assert ds["smap_index"].dtype == np.int32 and (ds["smap_index"].values == -1).sum() == 16
    assert ds["s1"].attrs["units"] == "m3 m-3"
    assert json.loads(ds.attrs["smengine_grid"]) == store.grid.get_config()
    np.testing.assert_array_equal(ds["time"].values.astype("datetime64[D]"), store.times)
    # zero copy: the memory maps themselves
    assert np.shares_memory(ds["s1"].values, store.dynamic)
    # sub-pixel centres: the first one is half a sub-pixel from the corner
    g = store.grid
    assert ds["x_sub"].values[0] == pytest.approx(g.xmin + g.subpixel_resolution / 2)


def test_predict_dataset_equals_predict_on_the_store(world) -> None:
    got = predict_dataset(world["store"].to_dataset(), world["cf"])
    _same(got, world["ref"])
    flags = np.bincount(got["quality_flag"].values.ravel(), minlength=5)
    assert flags[:4].min() > 0  # every flag is exercised (the tile's NaN gaps)


def test_in_memory_blocks_equal_the_whole(world) -> None:
    got = predict_dataset(world["store"].to_dataset(), world["cf"], block_pixels=5)
    _same(got, world["ref"])


def test_dask_input_gives_dask_output_equal_to_predict(world) -> None:
    ds = world["store"].to_dataset(chunks={"y_sub": 16, "x_sub": 16, "time": -1})
    assert ds["s1"].chunks is not None
    got = predict_dataset(ds, world["cf"])
    assert got["sm"].chunks is not None  # lazy: computed block by block
    assert len(got["sm"].data.dask) > 1 and got["sm"].data.numblocks == (1, 3, 3)
    _same(got.compute(), world["ref"])


def test_a_coarse_layer_on_its_own_grid_is_placed_by_its_coordinates(world) -> None:
    """smap on its 4-km grid with coordinates (as a chain holds it) == the same cells given as an index."""
    store = world["store"]
    g = store.grid
    ds = store.to_dataset()
    ny, nx = g.subpixel_shape
    full_index = ((np.arange(ny)[:, None] // 16) * 3 + np.arange(nx)[None, :] // 16).astype(np.int32)
    as_index = ds.assign(smap_index=(("y_sub", "x_sub"), full_index))
    cell = 16 * g.subpixel_resolution  # 4 km
    rows, cols = 3, 3
    yc = g.ymax - cell * (np.arange(rows) + 0.5)
    xc = g.xmin + cell * (np.arange(cols) + 0.5)
    values = store.coarse["smap"].values.reshape(DAYS.size, rows, cols)
    own = ds.drop_vars(["smap", "smap_index"]).assign(
        smap=(("time", "yc", "xc"), values, {"units": "m3 m-3", "grid_mapping": "crs"})
    )
    own = own.assign_coords(yc=("yc", yc), xc=("xc", xc))
    a = predict_dataset(own, world["cf"])
    b = predict_dataset(as_index, world["cf"])
    for v in VARS:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    # an increasing y axis (south to north) is placed the same way
    flipped = own.isel(yc=slice(None, None, -1))
    c = predict_dataset(flipped, world["cf"])
    np.testing.assert_array_equal(c["sm"].values, a["sm"].values)


def test_missing_feature_and_missing_grid_are_named(world) -> None:
    ds = world["store"].to_dataset()
    with pytest.raises(ConfigError, match=r"feature\(s\) \['ndvi'\]"):
        predict_dataset(ds.drop_vars("ndvi"), world["cf"])
    bare = ds.copy()
    bare.attrs = {}
    with pytest.raises(ConfigError, match="no 'smengine_grid' attribute: pass grid="):
        predict_dataset(bare, world["cf"])
    got = predict_dataset(bare, world["cf"], grid=world["store"].grid)
    np.testing.assert_array_equal(got["sm"].values, world["ref"]["sm"].values)
    with pytest.raises(ValidationError, match=r"'elev' has \(40, 44\) sub-pixels"):
        predict_dataset(ds.isel(x_sub=slice(0, 44)), world["cf"])


def test_steps_equal_the_batch_bit_for_bit_with_a_restart_between(world, tmp_path: Path) -> None:
    ds = world["store"].to_dataset()
    st = Stepper(world["cf"])
    days = ds["time"].values
    out = [st.step(ds.sel(time=[d])) for d in days[:3]]
    restart = st.save_state(tmp_path / "restart.h5")
    del st
    st2 = Stepper.load_state(restart, world["cf"])
    assert str(st2.last_day) == str(days[2].astype("datetime64[D]"))
    out += [st2.step(ds.sel(time=[d])) for d in days[3:]]
    steps = xr.concat([o[list(VARS)] for o in out], dim="time")
    for v in VARS:
        assert steps[v].values.tobytes() == world["ref"][v].values.tobytes(), v
    # the state matters: starting afresh on day 4 gives another product
    fresh = Stepper(world["cf"]).step(ds.sel(time=[days[3]]))
    assert not np.array_equal(fresh["sm"].values, out[3]["sm"].values, equal_nan=True)
    with pytest.raises(ValidationError, match="is not after the last day stepped"):
        st2.step(ds.sel(time=[days[1]]))
    with pytest.raises(ValidationError, match="takes one day"):
        Stepper(world["cf"]).step(ds.isel(time=slice(0, 2)))


def test_a_restart_file_of_another_forest_or_kind_is_refused(world, tmp_path: Path) -> None:
    ds = world["store"].to_dataset()
    st = Stepper(world["cf"])
    st.step(ds.isel(time=[0]))
    path = st.save_state(tmp_path / "r.h5")
    rf = RandomForestRegressor(3, random_state=1).fit(
        np.random.default_rng(0).random((50, len(world["names"]))), np.ones(50)
    )
    other = CompiledForest.from_sklearn(rf, feature_names=world["names"])
    with pytest.raises(ValidationError, match="state written with forest"):
        Stepper.load_state(path, other)
    (tmp_path / "not.h5").write_bytes(b"nope")
    with pytest.raises(Exception, match="cannot read stepper state|not a smengine stepper state"):
        Stepper.load_state(tmp_path / "not.h5", world["cf"])
    with pytest.raises(ConfigError, match="no day stepped yet"):
        Stepper(world["cf"]).save_state(tmp_path / "empty.h5")
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("kind", ["boosting", "hybrid"])
def test_boosted_and_hybrid_models_step_day_by_day_as_the_batch(world, kind: str, tmp_path: Path) -> None:
    """LightGBM and the hybrid go through predict_dataset and the Stepper (restart included) exactly as through
    predict: the same kernel, the same carried state."""
    import lightgbm as lgb

    from smengine.features import FeatureBuilder, FeatureSpec
    from smengine.model import HybridRegressor

    store = world["store"]
    fb = FeatureBuilder(store, FeatureSpec(swi_T=(5.0, 20.0), swi_carry=True))
    sw = fb.swi()
    names = world["names"]
    cols = [fb.names.index(n) for n in names]
    X = np.concatenate([fb.day(t, swi=sw)[cols].reshape(len(names), -1).T for t in range(DAYS.size)])
    X = X[np.isfinite(X).all(1)]
    y = 0.25 + 0.1 * np.tanh(X @ np.random.default_rng(4).standard_normal(len(names)))
    if kind == "boosting":
        m = lgb.LGBMRegressor(n_estimators=30, num_leaves=7, verbose=-1, n_jobs=1, random_state=0).fit(X, y)
        cf = CompiledForest.from_lightgbm(m, feature_names=names)
    else:
        m = HybridRegressor(lgbm_params={"n_estimators": 30}, n_jobs=1).fit(X, y)
        cf = CompiledForest.from_hybrid(m, feature_names=names)
    ref = predict(store, cf)
    ds = store.to_dataset()
    _same(predict_dataset(ds, cf), ref)
    st = Stepper(cf)
    days = ds["time"].values
    out = [st.step(ds.sel(time=[d])) for d in days[:3]]
    st2 = Stepper.load_state(st.save_state(tmp_path / "restart.h5"), cf)
    out += [st2.step(ds.sel(time=[d])) for d in days[3:]]
    steps = xr.concat([o[list(VARS)] for o in out], dim="time")
    for v in VARS:
        assert steps[v].values.tobytes() == ref[v].values.tobytes(), v
    assert np.isnan(ref["sm_uncertainty"].values).all()  # no spread over summed trees
    assert np.isfinite(ref["sm"].values).any()
