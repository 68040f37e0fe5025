"""D86 and R86 per pixel-day in the product: the depth and radius each value represents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from sklearn.ensemble import RandomForestRegressor

from smengine.engine import predict, run
from smengine.errors import ConfigError, DataError
from smengine.footprint import footprint_radius, penetration_depth
from smengine.grid import Grid
from smengine.model import CompiledForest
from smengine.tiles import TileStore, TileWriter

DAYS = np.arange("2021-06-01", "2021-06-05", dtype="datetime64[D]")
UNITS = {"bulk_density": "g cm-3", "porosity": "m3 m-3", "elevation": "m", "s1": "m3 m-3"}
UNITS |= {"abs_humidity": "g m-3", "pressure": "hPa"}


def _tile(path: Path, statics: list[str], daily: list[str], coarse_pressure: bool = False) -> TileStore:
    grid = Grid.from_bounds(4_321_000, 2_987_000, 4_329_000, 2_993_000, tile_size=100)  # 8 × 6 pixels
    ny, nx = grid.subpixel_shape
    rng = np.random.default_rng(5)
    fields = {
        "bulk_density": 1.1 + 0.5 * rng.random((ny, nx)),
        "porosity": 0.35 + 0.2 * rng.random((ny, nx)),
        "elevation": 200 + 800 * rng.random((ny, nx)),
    }
    index = ((np.arange(ny)[:, None] // 8) * 4 + np.arange(nx)[None, :] // 8).astype(np.int32)
    coarse = {"pressure": (index, int(index.max()) + 1)} if coarse_pressure else {}
    with TileWriter(path, grid, DAYS, statics, daily, UNITS, coarse=coarse, tile_id="fp") as w:
        for n in statics:
            w.write_static(n, fields[n].astype(np.float32))
        for t in range(DAYS.size):
            s1 = (0.1 + 0.3 * rng.random((ny, nx))).astype(np.float32)
            s1[:4, :4] = np.nan  # a pixel without input: NaN sm, NaN D86
            w.write_dynamic(t, "s1", s1)
            if "abs_humidity" in daily:
                w.write_dynamic(t, "abs_humidity", (4 + 8 * rng.random((ny, nx))).astype(np.float32))
            if coarse_pressure:
                w.write_coarse(t, "pressure", (900 + 100 * rng.random(index.max() + 1)).astype(np.float32))
    return TileStore.open(path)


@pytest.fixture(scope="module")
def forest() -> CompiledForest:
    rng = np.random.default_rng(0)
    X = rng.random((400, 1)) * 0.4 + 0.1
    rf = RandomForestRegressor(8, min_samples_leaf=5, random_state=0).fit(X, 0.05 + 0.8 * X[:, 0])
    return CompiledForest.from_sklearn(rf, feature_names=["s1"])


def _pm(a: np.ndarray) -> np.ndarray:
    *lead, Y, X = a.shape
    return np.asarray(a, np.float64).reshape(*lead, Y // 4, 4, X // 4, 4).mean(axis=(-3, -1))


def test_d86_and_r86_equal_the_footprint_functions_of_the_product_theta(tmp_path: Path, forest) -> None:
    store = _tile(tmp_path / "a.h5", ["bulk_density", "elevation"], ["s1", "abs_humidity"], coarse_pressure=True)
    ds = predict(store, forest, footprint=True)
    sm = ds["sm"].values.astype(np.float64)
    ok = np.isfinite(sm)
    assert ok.any() and (~ok).any()
    bd = np.broadcast_to(_pm(store.static[0]), sm.shape)
    np.testing.assert_allclose(ds["d86"].values[ok], penetration_depth(1.0, bd[ok], sm[ok]), rtol=1e-6)
    assert np.isnan(ds["d86"].values[~ok]).all() and np.isnan(ds["r86"].values[~ok]).all()
    hum = _pm(store.dynamic[:, 1])
    p = np.stack([_pm(store.coarse["pressure"].expand(t)) for t in range(DAYS.size)])
    np.testing.assert_allclose(ds["r86"].values[ok], footprint_radius(hum[ok], sm[ok], p[ok]), rtol=1e-6)
    assert ds["d86"].attrs["units"] == "cm" and ds["r86"].attrs["units"] == "m"
    assert "d86" in ds["sm"].attrs["ancillary_variables"]
    assert np.nanmin(ds["d86"].values) > 5 and np.nanmax(ds["d86"].values) < 80
    assert np.nanmin(ds["r86"].values) > 100 and np.nanmax(ds["r86"].values) < 300

    used = json.loads(ds.attrs["smengine_config"])["engine"]["footprint"]
    assert used == {
        "r_m": "1",
        "bulk_density": "tile layer bulk_density",
        "humidity": "tile layer abs_humidity",
        "pressure": "tile layer pressure",
    }


def test_porosity_stands_in_for_bulk_density_and_no_humidity_means_no_r86(tmp_path: Path, forest) -> None:
    store = _tile(tmp_path / "b.h5", ["porosity", "elevation"], ["s1"])
    ds = predict(store, forest, footprint=True)
    assert "r86" not in ds
    sm = ds["sm"].values.astype(np.float64)
    ok = np.isfinite(sm)
    bd = np.broadcast_to((1 - _pm(store.static[0])) * 2.65, sm.shape)
    np.testing.assert_allclose(ds["d86"].values[ok], penetration_depth(1.0, bd[ok], sm[ok]), rtol=1e-6)

    used = json.loads(ds.attrs["smengine_config"])["engine"]["footprint"]
    assert used["bulk_density"] == "(1 - porosity) * 2.65" and "no abs_humidity" in used["r86"]
    plain = predict(store, forest)
    assert "d86" not in plain
    np.testing.assert_array_equal(plain["sm"].values, ds["sm"].values)  # the footprint changes no sm


def test_without_bulk_density_it_is_an_error_naming_the_layers(tmp_path: Path, forest) -> None:
    store = _tile(tmp_path / "c.h5", ["elevation"], ["s1"])
    with pytest.raises(
        ConfigError, match=r"neither a 'bulk_density' nor a 'porosity' static layer \(it has \['elevation'\]\)"
    ):
        predict(store, forest, footprint=True)


def test_run_writes_d86_and_a_rerun_without_it_is_refused(tmp_path: Path, forest) -> None:
    store = _tile(tmp_path / "d.h5", ["bulk_density"], ["s1"])
    res = run([store], forest, tmp_path / "out", footprint=True, n_threads=1)
    (f,) = res.written
    with xr.open_dataset(f) as ds:
        assert ds["d86"].attrs["units"] == "cm" and np.isfinite(ds["d86"].values).any()
    again = run([store], forest, tmp_path / "out", footprint=True, n_threads=1)
    assert again.skipped == res.written and not again.written
    with pytest.raises(DataError, match="footprint"):
        run([store], forest, tmp_path / "out", n_threads=1)


def test_cli_predict_footprint(tmp_path: Path, forest) -> None:
    from click.testing import CliRunner

    from smengine.cli import cli

    store = _tile(tmp_path / "e.h5", ["bulk_density"], ["s1"])
    model = forest.save(tmp_path / "m.smf.h5")
    r = CliRunner().invoke(cli, ["predict", str(model), str(store.path), "--out", str(tmp_path / "p"), "--footprint"])
    assert r.exit_code == 0, r.output
    (f,) = sorted((tmp_path / "p").glob("*/*.nc"))
    with xr.open_dataset(f) as ds:
        assert "d86" in ds and "r86" not in ds
