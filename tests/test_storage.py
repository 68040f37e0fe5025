"""Storage at native resolution: ingest's default placement of daily layers, bytes per pixel-day
(smengine.storage) and that the index-map path gives the engine exactly what fine storage with
nearest resampling gives."""

from __future__ import annotations

import dataclasses
import logging

import h5py
import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS
from sklearn.ensemble import RandomForestRegressor

from smengine.errors import SMEngineWarning
from smengine.grid import Grid
from smengine.ingest import (
    COARSE_FACTOR,
    Source,
    SourceSpec,
    default_storage,
    ingest,
    native_cell_width,
)
from smengine.storage import bytes_per_pixel_day, project
from smengine.tiles import TileStore, as_days
from smengine.twin import TwinConfig, make_world

# the tiny twin of tests/twin: 6 km x 30 days, builds in seconds
TINY = TwinConfig.quick(size_km=6, n_days=30, spinup_days=5, n_stations=3)
STATIC = ("elevation", "twi", "sand", "clay", "porosity", "land_cover")
ONE_KM = ("s1_sm", "ndvi", "lst", "precipitation")  # the twin's 1-km daily layers


# ---------------------------------------------------------------- the rule
def _daily(transform: Affine, crs: str = "EPSG:3035", shape: tuple[int, int] = (200, 200)) -> Source:
    data = np.zeros((1, *shape), np.float32)
    return Source(
        "x", "x.nc", "1", shape, as_days(["2020-01-01"]), CRS.from_user_input(crs), lambda t, w: data[t], transform
    )


def test_auto_stores_daily_sources_coarser_than_one_and_a_half_subpixels_coarse():
    g = Grid.from_bounds(4_321_000, 2_987_000, 4_331_000, 2_997_000)  # 250 m sub-pixels
    for res, want in ((100.0, "fine"), (250.0, "fine"), (370.0, "fine"), (375.0, "coarse"), (1000.0, "coarse")):
        src = _daily(Affine(res, 0, 4_300_000, 0, -res, 3_000_000))
        assert native_cell_width(src, g) == pytest.approx(res)
        assert default_storage(src, g) == want, res
    assert COARSE_FACTOR == 1.5
    static = dataclasses.replace(_daily(Affine(9000, 0, 4_300_000, 0, -9000, 3_000_000)), times=None)
    assert default_storage(static, g) == "fine"  # static layers are stored once anyway


def test_auto_measures_geographic_cells_in_metres_by_their_narrow_side():
    g = Grid.from_lonlat_bounds(9.9, 59.9, 10.1, 60.0, resolution=1000.0)  # 60°N: a degree of longitude is ~56 km
    narrow = _daily(Affine(0.004, 0, 9.0, 0, -0.004, 61.0), "EPSG:4326", (500, 500))
    # 0.004° is 445 m north-south (Source.resolution) but ~223 m east-west: under 1.5 sub-pixels
    assert narrow.resolution > COARSE_FACTOR * g.subpixel_resolution
    assert native_cell_width(narrow, g) == pytest.approx(0.004 * 111_320 * 0.5, rel=0.02)
    assert default_storage(narrow, g) == "fine"
    wide = _daily(Affine(0.01, 0, 9.0, 0, -0.01, 61.0), "EPSG:4326", (500, 500))
    assert default_storage(wide, g) == "coarse"


# ---------------------------------------------------------------- the twin's demo layers
def _specs(world, storage: str | None = None, method: str | None = None) -> list[SourceSpec]:
    """The twin's demo sources; ``storage``/``method`` replace the daily sources' auto."""
    out = []
    for s in world.sources():
        if s.name not in STATIC and s.storage == "auto":
            s = dataclasses.replace(s, storage=storage or s.storage, method=method or s.method)
        out.append(s)
    return out


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("storage")
    world = make_world(5, tmp / "world", TINY)
    stores = {
        "old": ingest(_specs(world, "fine"), world.grid, tmp / "old"),  # before: 1-km layers on the sub-pixels
        "new": ingest(world.sources(), world.grid, tmp / "new"),  # the default now
        "nearest": ingest(_specs(world, "fine", "nearest"), world.grid, tmp / "nearest"),
    }
    return {"world": world, "tmp": tmp, **{k: [TileStore.open(p) for p in v] for k, v in stores.items()}}


def _check_against_file(table, store: TileStore) -> None:
    """Every number of the table is a dataset's size in the tile file."""
    with h5py.File(store.path, "r") as h5:

        def size(name):
            return h5[name].id.get_storage_size()

        ny, nx = store.grid.subpixel_shape
        nt = store.times.size
        assert size("static") == table.loc[store.static_names, "once_bytes"].sum() == 4 * len(STATIC) * ny * nx
        assert size("dynamic") == table.loc[store.dynamic_names, "daily_bytes"].sum()
        for n in store.dynamic_names:
            assert table.loc[n, "daily_bytes"] == 4 * nt * ny * nx and table.loc[n, "once_bytes"] == 0
        for n in store.coarse_names:
            assert table.loc[n, "daily_bytes"] == size(f"coarse/{n}/values") == 4 * store.coarse[n].values.size
            assert table.loc[n, "once_bytes"] == size(f"coarse/{n}/index") == 4 * ny * nx
        assert table.loc["(overhead)", "daily_bytes"] == size("time") + size("coverage")
    assert table.loc["total", "bytes"] == store.path.stat().st_size == table.attrs["file_bytes"]
    layers = table.drop(index="total")
    assert layers["bytes"].sum() == table.loc["total", "bytes"]
    pixel_days = store.grid.shape[0] * store.grid.shape[1] * store.times.size
    assert table.attrs["pixel_days"] == pixel_days
    np.testing.assert_allclose(table["total_per_pixel_day"], table["bytes"] / pixel_days)


def test_one_km_layers_are_stored_once_per_pixel_day(twin):
    (old,), (new,) = twin["old"], twin["new"]
    assert old.dynamic_names == list(ONE_KM) and old.coarse_names == ["smap_sm"]
    assert new.dynamic_names == [] and set(new.coarse_names) == {"smap_sm", *ONE_KM}
    before, after = bytes_per_pixel_day(old), bytes_per_pixel_day(new)
    _check_against_file(before, old)
    _check_against_file(after, new)
    k2 = twin["world"].grid.subpixel ** 2
    days = new.times.size
    for n in ONE_KM:
        # 16 float32 per pixel-day before; one per pixel-day (the 1-km cells are the pixels),
        # plus an int32 index map of 16 per pixel once, after
        assert before.loc[n, "kind"] == "dynamic" and after.loc[n, "kind"] == "coarse"
        assert before.loc[n, "per_pixel_day"] == 4 * k2 and before.loc[n, "values_per_pixel_day"] == k2
        assert after.loc[n, "per_pixel_day"] == 4 and after.loc[n, "values_per_pixel_day"] == 1
        assert after.loc[n, "per_pixel"] == 4 * k2
        assert after.loc[n, "total_per_pixel_day"] == pytest.approx(4 + 4 * k2 / days)
    for n in (*STATIC, "smap_sm"):  # unchanged
        assert (
            after.loc[n, ["daily_bytes", "once_bytes"]].tolist()
            == before.loc[n, ["daily_bytes", "once_bytes"]].tolist()
        )
    # a Europe-year of the demo's layers: over 500 GB before, under 50 GB now
    p0, p1 = project(before), project(new)
    assert p0["GB"] > 500 and not p0["meets_goal"]
    assert p1["GB"] < 50 and p1["meets_goal"]
    assert p1["GB"] == pytest.approx(sum(p1["by_layer"].values()))
    assert p0["by_layer"]["s1_sm"] == pytest.approx(4 * k2 * 6e6 * 365 / 1e9)
    assert p1["by_layer"]["s1_sm"] == pytest.approx((4 * 365 + 4 * k2) * 6e6 / 1e9)


def test_index_map_path_predicts_exactly_what_fine_nearest_storage_predicts(twin):
    """The engine's COARSE gather (the cell under each sub-pixel centre) against DYNAMIC
    layers resampled with nearest: the 1-km cells contain whole sub-pixels, so the
    covariates and the products are the same, bit for bit."""
    from smengine.demo import DEMO_SPEC
    from smengine.engine import predict
    from smengine.features import FeatureBuilder, FeatureSpec
    from smengine.model import CompiledForest

    (new,), (near,), (old,) = twin["new"], twin["nearest"], twin["old"]
    for t in (0, 7, 20):
        a, b = new.features(t), near.features(t)
        for n in ONE_KM:
            np.testing.assert_array_equal(a[new.feature_names.index(n)], b[near.feature_names.index(n)], err_msg=n)
    fb = FeatureBuilder(near, FeatureSpec(**DEMO_SPEC))
    sw = fb.swi()
    days = range(5, near.times.size)
    X = np.concatenate([fb.day(t, swi=sw).reshape(len(fb.names), -1).T for t in days])
    ok = np.isfinite(X).all(1)
    rng = np.random.default_rng(0)
    y = 0.25 + 0.1 * np.tanh(X[ok] @ rng.standard_normal(X.shape[1]) / X.shape[1])
    rf = RandomForestRegressor(8, min_samples_leaf=5, max_features=0.5, random_state=0, n_jobs=1)
    rf.fit(X[ok], y)
    cf = CompiledForest.from_sklearn(rf, feature_names=fb.names)
    window = slice(str(near.times[5]), str(near.times[-1]))
    p_new = predict(new, cf, days=window, n_threads=1)
    p_near = predict(near, cf, days=window, n_threads=1)
    assert np.isfinite(p_new["sm"].values).mean() > 0.5
    for v in ("sm", "sm_uncertainty", "sm_subpixel_sd", "valid_fraction", "quality_flag"):
        np.testing.assert_array_equal(p_new[v].values, p_near[v].values, err_msg=v)
    # the old default (bilinear onto the sub-pixels) differs: a documented change
    p_old = predict(old, cf, days=window, n_threads=1)
    assert not np.array_equal(p_old["sm"].values, p_new["sm"].values, equal_nan=True)


# ---------------------------------------------------------------- existing tiles
def _one_km_tif(path, day: int, seed: int = 0):
    """A daily 1-km GeoTIFF on the grid's own cells (a 1-km product)."""
    path.parent.mkdir(exist_ok=True)
    rng = np.random.default_rng([seed, day])
    with rasterio.open(
        path, "w", driver="GTiff", height=20, width=20, count=1, dtype="float32", crs="EPSG:3035",
        transform=Affine(1000, 0, 4_321_000, 0, -1000, 3_000_000), nodata=np.nan,
    ) as ds:  # fmt: skip
        ds.write(rng.random((20, 20)).astype(np.float32), 1)
        ds.update_tags(units="1", time=f"2020-01-0{day}")
    return path


def test_existing_tile_keeps_a_layer_stored_fine_until_it_is_redone(tmp_path, caplog):
    """Rule: under storage="auto" a layer an existing tile stores fine stays fine while its days
    are reused (the tile only gets what it lacks); overwrite=True, an explicit
    storage="coarse" or a change of its source (a full regrid anyway) store it coarse."""
    grid = Grid.from_bounds(4_321_000, 2_980_000, 4_341_000, 3_000_000, tile_size=10)  # 2x2 tiles
    files = [_one_km_tif(tmp_path / "x" / f"x_2020010{d}.tif", d) for d in (1, 2, 3)]
    out = tmp_path / "tiles"
    ingest([SourceSpec(files[:2], name="x", storage="fine")], grid, out)  # written the old way
    before = {p.name: np.array(TileStore.open(p).dynamic) for p in out.glob("*.h5")}
    with caplog.at_level(logging.INFO, logger="smengine.ingest"):
        ingest([SourceSpec(files[:3], name="x")], grid, out)  # storage="auto": one more day
    assert "stays dynamic as the tile stores it" in caplog.text
    for name, dyn in before.items():
        s = TileStore.open(out / name)
        assert s.dynamic_names == ["x"] and s.coarse_names == [] and s.times.size == 3
        assert s.dynamic[:2].tobytes() == dyn.tobytes() and s.covered("x").all()
    # a source changed in place is regridded in full anyway: stored coarse now
    _one_km_tif(files[0], 1, seed=1)
    with pytest.warns(SMEngineWarning, match=r"layer 'x': source file\(s\).*changed in place.*stored coarse now"):
        ingest([SourceSpec(files[:3], name="x")], grid, out)
    for p in out.glob("*.h5"):
        s = TileStore.open(p)
        assert s.coarse_names == ["x"] and s.dynamic_names == [] and s.times.size == 3
    # an explicit storage wins over what the tile holds
    with pytest.warns(SMEngineWarning, match=r"layer 'x': stored as coarse, now dynamic"):
        ingest([SourceSpec(files[:3], name="x", storage="fine")], grid, out)
    assert TileStore.open(out / "t001_001.h5").dynamic_names == ["x"]
    # and overwrite=True writes the tile anew: the default
    ingest([SourceSpec(files[:3], name="x")], grid, out, tiles=["t000_000"], overwrite=True)
    assert TileStore.open(out / "t000_000.h5").coarse_names == ["x"]
    assert TileStore.open(out / "t000_001.h5").dynamic_names == ["x"]
