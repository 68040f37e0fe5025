"""smengine.engine: fused gather → forest → pixel statistics against the plain NumPy/sklearn pipeline."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from smengine.engine import TileRunner, output_name, predict, run
from smengine.errors import ConfigError
from smengine.features import FeatureBuilder, FeatureSpec
from smengine.grid import Grid
from smengine.model import CompiledForest
from smengine.testing import naive_predict
from smengine.tiles import TileStore, TileWriter

DAYS = np.array(
    ["2020-05-01", "2020-05-02", "2020-05-03", "2020-05-05", "2020-05-06", "2020-05-07", "2020-05-08"],
    dtype="datetime64[D]",
)
UNITS = {"elev": "m", "sand": "%", "s1": "m3 m-3", "ndvi": "1", "smap": "m3 m-3"}


def make_tile(path: Path, x0: float = 4_321_000, seed: int = 3, tile_id: str = "t000_000") -> TileStore:
    """12 × 10 pixels of 4 × 4 sub-pixels; NaN gaps that give every quality flag."""
    grid = Grid.from_bounds(x0, 2_987_000, x0 + 12_000, 2_997_000, tile_size=100)
    rng = np.random.default_rng(seed)
    ny, nx = grid.subpixel_shape
    static = rng.random((2, ny, nx)).astype(np.float32)
    static[0, 20, 20] = np.nan
    static[0, 0:4, 0:3] = np.nan  # pixel (0, 0): 4 of 16 valid  → low_valid_fraction
    static[1, 4:8, 4:8] = np.nan  # pixel (1, 1): none valid     → no_valid_subpixels
    dyn = (0.2 + 0.1 * rng.random((DAYS.size, 2, ny, nx))).astype(np.float32)
    dyn[:, 0][rng.random((DAYS.size, ny, nx)) < 0.1] = np.nan  # satellite gaps in the SM layer
    index = (np.arange(ny)[:, None] // 16) * 3 + np.arange(nx)[None, :] // 16
    index[-4:, -4:] = -1  # last pixel outside the coarse product
    return write_tile(path, grid, static, dyn, index, rng, tile_id)


def write_tile(
    path: Path,
    grid: Grid,
    static: np.ndarray,
    dyn: np.ndarray,
    index: np.ndarray,
    rng: np.random.Generator,
    tile_id: str = "t000_000",
) -> TileStore:
    """A tile of statics elev/sand, dynamics s1/ndvi and a coarse smap on ``index`` (random cell values)."""
    n_cells = int(index.max()) + 1
    coarse = (0.25 + 0.05 * rng.random((DAYS.size, n_cells))).astype(np.float32)
    with TileWriter(
        path, grid, DAYS, ["elev", "sand"], ["s1", "ndvi"], UNITS, coarse={"smap": (index, n_cells)}, tile_id=tile_id
    ) as w:
        for i, n in enumerate(["elev", "sand"]):
            w.write_static(n, static[i])
        for t in range(DAYS.size):
            w.write_dynamic(t, "s1", dyn[t, 0])
            w.write_dynamic(t, "ndvi", dyn[t, 1])
            w.write_coarse(t, "smap", coarse[t])
    return TileStore.open(path)


def small_forest(
    store: TileStore, *, swi_carry: bool = False, seed: int = 0, n_trees: int = 15
) -> tuple[RandomForestRegressor, CompiledForest, list[str]]:
    """A forest on the tile's features (SWI of s1 at 5 and 20 d, but not s1 itself: the engine
    must gather it anyway) and its compiled twin."""
    fb = FeatureBuilder(store, FeatureSpec(swi_T=(5.0, 20.0), swi_carry=swi_carry))
    sw = fb.swi()
    X = np.concatenate([fb.day(t, swi=sw).reshape(len(fb.names), -1).T for t in range(DAYS.size)])
    ok = np.isfinite(X).all(1)
    rng = np.random.default_rng(seed)
    names = [n for n in fb.names if n != "s1"]
    cols = [fb.names.index(n) for n in names]
    y = np.tanh(X[ok][:, cols] @ rng.standard_normal(len(cols))) * 0.1 + 0.25 + 0.01 * rng.standard_normal(ok.sum())
    rf = RandomForestRegressor(n_trees, min_samples_leaf=3, max_features=0.5, random_state=0, n_jobs=1)
    rf.fit(X[ok][:, cols], y)
    return rf, CompiledForest.from_sklearn(rf, feature_names=names), names


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("engine")
    store = make_tile(tmp / "t000_000.h5")
    rf, cf, names = small_forest(store)
    return {"store": store, "rf": rf, "cf": cf, "names": names, "tmp": tmp}


KEYS = ("sm", "subpixel_sd", "uncertainty", "valid_fraction")


def _assert_matches_naive(out: dict, ref: dict) -> None:
    for k in KEYS:
        a, b = out[k], ref[k]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=k)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=k)
    np.testing.assert_array_equal(out["quality_flag"], ref["quality_flag"])


@pytest.mark.parametrize("day_inner", [True, False])
@pytest.mark.parametrize("chunk_days,threads", [(1, 1), (3, 2), (8, 2)])
def test_engine_equals_naive_numpy_sklearn_pipeline(world, day_inner, chunk_days, threads):
    ref = naive_predict(world["store"], world["rf"], world["names"], days=DAYS[2:])
    r = TileRunner(world["store"], world["cf"], chunk_days=chunk_days, day_inner=day_inner, n_threads=threads)
    days, out = r.predict_arrays(DAYS[2:])
    np.testing.assert_array_equal(days, DAYS[2:])
    _assert_matches_naive(out, ref)
    flags = np.bincount(out["quality_flag"].ravel(), minlength=5)
    assert flags[:4].min() > 0, f"the tile should exercise flags 0-3, got counts {flags}"
    assert r.stats.spinup_days == 2 and r.stats.subpixel_days == 5 * 120 * 16
    assert r.stats.predicted + r.stats.invalid == r.stats.subpixel_days


def test_engine_is_deterministic_across_threads_chunks_and_order(world):
    outs = []
    for kw in (
        {"n_threads": 1, "chunk_days": 1, "day_inner": True},
        {"n_threads": 2, "chunk_days": 7},
        {"n_threads": 2, "chunk_days": 4, "day_inner": False, "reuse": False},
        {"reuse": "box", "chunk_days": 3},
    ):
        outs.append(TileRunner(world["store"], world["cf"], **kw).predict_arrays()[1])
    for o in outs[1:]:
        for k in (*KEYS, "quality_flag"):
            assert outs[0][k].tobytes() == o[k].tobytes(), k


def test_pixel_value_is_mean_of_subpixel_predictions_not_prediction_of_mean(world):
    """θ̂_P = mean_j f(x_j): recompute one pixel by hand from FeatureBuilder rows."""
    s, rf, names = world["store"], world["rf"], world["names"]
    fb = FeatureBuilder(s, FeatureSpec(swi_T=(5.0, 20.0), swi_carry=False))
    t = 4
    x = fb.day(t, swi=fb.swi())[[fb.names.index(n) for n in names]]
    block = x[:, 12:16, 20:24].reshape(len(names), -1).T  # pixel (3, 5)
    block = block[np.isfinite(block).all(1)]
    want = rf.predict(block).mean()
    out = TileRunner(s, world["cf"]).predict_arrays(DAYS[t : t + 1])[1]
    assert out["sm"][0, 3, 5] == pytest.approx(want, abs=1e-6)
    assert out["sm"][0, 3, 5] != pytest.approx(rf.predict(block.mean(0, keepdims=True))[0], abs=1e-6)


def test_successive_ranges_carry_the_swi_state(world):
    whole = TileRunner(world["store"], world["cf"]).predict_arrays()[1]
    r = TileRunner(world["store"], world["cf"], chunk_days=2)
    parts = [r.predict_arrays(DAYS[a:b])[1] for a, b in ((0, 2), (2, 3), (4, 7))]  # day 3 skipped
    for k in (*KEYS, "quality_flag"):
        got = np.concatenate([parts[0][k], parts[1][k], parts[2][k]])
        np.testing.assert_array_equal(got, whole[k][[0, 1, 2, 4, 5, 6]], err_msg=k)
    with pytest.raises(ConfigError, match="increasing order"):
        r.predict_arrays(DAYS[1:2])


def test_absent_days_are_flagged_no_input(world, caplog):
    want = np.array(["2020-05-03", "2020-05-04", "2020-05-05", "2020-05-20"], dtype="datetime64[D]")
    with caplog.at_level(logging.WARNING, logger="smengine.engine"):
        days, out = TileRunner(world["store"], world["cf"]).predict_arrays(want)
    assert "2 of 4 requested days are not in the store (first 2020-05-04)" in caplog.text
    assert (out["quality_flag"][[1, 3]] == 4).all() and np.isnan(out["sm"][[1, 3]]).all()
    assert (out["valid_fraction"][[1, 3]] == 0).all()
    ref = naive_predict(world["store"], world["rf"], world["names"], days=want[[0, 2]])
    _assert_matches_naive({k: v[[0, 2]] for k, v in out.items()}, ref)


def test_scratch_memory_does_not_grow_with_days(world):
    r1 = TileRunner(world["store"], world["cf"], chunk_days=2, n_threads=1)
    r1.predict_arrays(DAYS[:2])
    r2 = TileRunner(world["store"], world["cf"], chunk_days=2, n_threads=1)
    r2.predict_arrays(DAYS)
    assert [a.nbytes for a in r1._scratch] == [a.nbytes for a in r2._scratch]
    assert r1._scratch[0].nbytes == 12 * 16 * 2 * (len(world["names"]) + 1) * 4  # one row of pixels × 2 days


def test_forest_features_missing_from_the_tile(world, tmp_path):
    rf = RandomForestRegressor(2, random_state=0).fit(np.random.default_rng(0).random((30, 2)), np.arange(30.0))
    cf = CompiledForest.from_sklearn(rf, feature_names=["elev", "lai"])
    with pytest.raises(ConfigError, match=r"t000_000.h5: the forest's feature\(s\) \['lai'\]"):
        TileRunner(world["store"], cf)
    with pytest.raises(ConfigError, match="no feature names"):
        TileRunner(world["store"], CompiledForest.from_sklearn(rf))
    with pytest.raises(ConfigError, match="min_valid_fraction"):
        TileRunner(world["store"], world["cf"], min_valid_fraction=1.5)


def test_predict_returns_the_cf_product(world):
    ds = predict(world["store"], world["cf"], days=slice("2020-05-05", "2020-05-07"))
    ref = naive_predict(world["store"], world["rf"], world["names"], days=DAYS[3:6])
    assert list(ds.time.dt.strftime("%Y-%m-%d").values) == ["2020-05-05", "2020-05-06", "2020-05-07"]
    np.testing.assert_allclose(ds["sm"].values, ref["sm"], atol=1e-5)
    assert ds["sm"].attrs["units"] == "m3 m-3"
    assert ds["sm"].shape == (3, 10, 12)


def test_run_writes_resumes_and_survives_a_bad_tile(world, tmp_path, caplog):
    from smengine.product import open_product

    t2 = make_tile(tmp_path / "t000_001.h5", x0=4_333_000, seed=5, tile_id="t000_001")
    bad = tmp_path / "t009_009.h5"
    bad.write_bytes(b"not a tile")
    out = tmp_path / "out"
    seen: list[int] = []
    res = run([world["store"].path, bad, t2.path], world["cf"], out, file_days=3, on_error="skip", progress=seen.append)
    names = sorted(p.name for p in res.written)
    assert names == sorted(
        output_name(t, DAYS[a:b]) for t in ("t000_000", "t000_001") for a, b in ((0, 3), (3, 6), (6, 7))
    )
    assert res.failed and "t009_009.h5" in res.failed[0][0] and "DataError" in res.failed[0][1]
    from smengine.errors import RETURN_CODES, DataError

    assert RETURN_CODES[res.return_codes[res.failed[0][0]]] is DataError  # the code written beside the failure
    assert sum(seen) == 2 * DAYS.size
    first = {p.name: open_product(p)["sm"].values for p in res.written}
    # the middle range of tile 0 is lost; a rerun writes only that one, with the same values
    mid = out / "t000_000" / output_name("t000_000", DAYS[3:6])
    mid.unlink()
    res2 = run([world["store"].path, t2.path], world["cf"], out, file_days=3)
    assert [p.name for p in res2.written] == [mid.name] and len(res2.skipped) == 5
    np.testing.assert_array_equal(open_product(mid)["sm"].values, first[mid.name])
    assert not list(out.rglob("*.tmp*"))
    with pytest.raises(Exception, match="t009_009.h5"):
        run([bad], world["cf"], out)


def test_cli_predict_writes_and_resumes(world, tmp_path):
    from click.testing import CliRunner

    from smengine.cli import cli
    from smengine.product import open_product

    model = world["cf"].save(tmp_path / "m.smf.h5")
    args = [
        "predict",
        str(model),
        str(world["store"].path),
        "--out",
        str(tmp_path / "o"),
        "--start",
        "2020-05-02",
        "--end",
        "2020-05-06",
        "--file-days",
        "2",
        "--threads",
        "1",
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "wrote 3 files, skipped 0 existing, 0 tiles failed" in r.output
    files = sorted((tmp_path / "o" / "t000_000").glob("*.nc"))
    assert [f.name for f in files] == [
        "t000_000_20200502_20200503.nc",
        "t000_000_20200504_20200505.nc",
        "t000_000_20200506_20200506.nc",
    ]
    ds = open_product(files[1])
    assert (ds["quality_flag"].sel(time="2020-05-04").values == 4).all()  # not in the store
    r = CliRunner().invoke(cli, args)
    assert "wrote 0 files, skipped 3 existing" in r.output
    if importlib.util.find_spec("distributed") is not None:  # the same through a local Dask cluster
        r = CliRunner().invoke(cli, [*args[:4], str(tmp_path / "o2"), *args[5:], "--workers", "1"])
        assert r.exit_code == 0 and "wrote 3 files" in r.output, r.output
        for f in files:
            got = open_product(tmp_path / "o2" / "t000_000" / f.name)
            np.testing.assert_array_equal(got["sm"].values, open_product(f)["sm"].values)
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(cli, ["predict", str(model), str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert r.exit_code != 0 and "no tile files" in r.output


def test_run_zarr_appends_ranges_and_resumes(world, tmp_path):
    from smengine.product import open_product

    out = tmp_path / "z"
    res = run([world["store"].path], world["cf"], out, DAYS[:4], file_days=2, format="zarr")
    assert [p.name for p in res.written] == ["t000_000.zarr"] * 2
    res = run([world["store"].path], world["cf"], out, file_days=2, format="zarr")  # resumes after DAYS[3]
    assert len(res.skipped) == 2 and len(res.written) == 2
    ds = open_product(out / "t000_000.zarr")
    np.testing.assert_array_equal(ds["time"].values.astype("datetime64[D]"), DAYS)
    whole = TileRunner(world["store"], world["cf"]).predict_arrays()[1]
    np.testing.assert_array_equal(ds["sm"].values, whole["sm"])
    np.testing.assert_array_equal(ds["quality_flag"].values, whole["quality_flag"])
    with pytest.raises(ConfigError, match="exists; delete it or resume"):
        run([world["store"].path], world["cf"], out, format="zarr", resume=False)


def test_run_on_a_dask_localcluster_equals_the_local_run(world, tmp_path):
    distributed = pytest.importorskip("distributed")
    from smengine.product import open_product

    t2 = make_tile(tmp_path / "t000_001.h5", x0=4_333_000, seed=5, tile_id="t000_001")
    bad = tmp_path / "t009_009.h5"
    bad.write_bytes(b"not a tile")
    tiles = [world["store"].path, bad, t2.path]
    local = run(tiles, world["cf"], tmp_path / "local", file_days=4, on_error="skip", n_threads=1)
    seen: list[int] = []
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        distributed.Client(lc) as client,
    ):
        res = run(
            tiles,
            world["cf"],
            tmp_path / "dask",
            file_days=4,
            on_error="skip",
            n_threads=1,
            client=client,
            progress=seen.append,
        )
    assert [p.name for p in res.written] == [p.name for p in local.written] and len(res.written) == 4
    assert [f[0] for f in res.failed] == [str(bad)] and "DataError" in res.failed[0][1]
    assert sorted(seen) == [DAYS.size, DAYS.size]
    assert res.stats.subpixel_days == local.stats.subpixel_days > 0
    for a, b in zip(local.written, res.written, strict=False):
        xa, xb = open_product(a), open_product(b)
        for k in ("sm", "sm_uncertainty", "sm_subpixel_sd", "valid_fraction", "quality_flag"):
            np.testing.assert_array_equal(xa[k].values, xb[k].values, err_msg=f"{b.name} {k}")


@pytest.mark.parametrize("gap", [None, 30.0, 1.0])
def test_engine_carried_swi_equals_naive(world, gap):
    """The engine's carried SWI (kind 5, with its longest gap) = FeatureBuilder's exp_filter(carry, max_gap)."""
    s = world["store"]
    fb = FeatureBuilder(s, FeatureSpec(swi_T=(5.0, 20.0), swi_carry=True, swi_max_gap=gap))
    names = [n for n in fb.names if n not in ("s1", "smap")]  # only the carried SWI of both sources
    assert f"swi20c{'' if gap is None else f'{gap:g}'}_smap" in names
    sw = fb.swi()
    X = np.concatenate(
        [fb.day(t, swi=sw)[[fb.names.index(n) for n in names]].reshape(len(names), -1).T for t in range(DAYS.size)]
    )
    ok = np.isfinite(X).all(1)
    rng = np.random.default_rng(1)
    rf = RandomForestRegressor(8, min_samples_leaf=3, random_state=0).fit(X[ok], rng.random(ok.sum()))
    cf = CompiledForest.from_sklearn(rf, feature_names=names)
    ref = naive_predict(s, rf, names, days=DAYS[1:])
    out = TileRunner(s, cf, chunk_days=2).predict_arrays(DAYS[1:])[1]
    _assert_matches_naive(out, ref)
    # carrying keeps pixels valid on the sub-pixels' gap days: more valid sub-pixels than without
    plain = world["cf"]
    assert out["valid_fraction"].mean() > TileRunner(s, plain).predict_arrays(DAYS[1:])[1]["valid_fraction"].mean()
    if gap == 1.0:  # … but not beyond the longest gap: fewer than carried without a limit
        free = FeatureBuilder(s, FeatureSpec(swi_T=(5.0, 20.0), swi_max_gap=None))
        free_names = [free.names[fb.names.index(n)] for n in names]
        cf_free = CompiledForest.from_sklearn(rf, feature_names=free_names)
        vf_free = TileRunner(s, cf_free, chunk_days=2).predict_arrays(DAYS[1:])[1]["valid_fraction"]
        assert out["valid_fraction"].mean() < vf_free.mean()


def test_degraded_products_are_loud(world, tmp_path):
    """Pixel-days without a value past NAN_WARN_FRACTION: a DataLossWarning in the API, a
    'warning:' line from the CLI, an error with --strict."""
    from click.testing import CliRunner

    from smengine.cli import cli
    from smengine.engine import NAN_WARN_FRACTION
    from smengine.errors import DataLossWarning

    s = world["store"]
    days = slice(str(s.times[-2]), str(s.times[-1] + np.timedelta64(3, "D")))  # 3 of 5 days not in the store
    with pytest.warns(DataLossWarning, match=r"of 600 pixel-days \(6[01]%\) have no soil moisture"):
        ds = predict(s, world["cf"], days=days, n_threads=1)
    assert (ds["quality_flag"].values == 4).mean() == pytest.approx(0.6) and NAN_WARN_FRACTION < 0.6
    from smengine.engine import EngineStats

    EngineStats(pixel_days=1000, nan_pixel_days=int(NAN_WARN_FRACTION * 1000)).warn_if_degraded("x")  # silent
    with pytest.warns(DataLossWarning, match="x: 101 of 1,000 pixel-days"):
        EngineStats(pixel_days=1000, nan_pixel_days=int(NAN_WARN_FRACTION * 1000) + 1).warn_if_degraded("x")
    model = world["cf"].save(tmp_path / "m.smf.h5")
    args = [
        "predict",
        str(model),
        str(s.path),
        "--out",
        str(tmp_path / "o"),
        "--start",
        days.start,
        "--end",
        days.stop,
        "--threads",
        "1",
    ]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0 and "warning: run into" in r.output and "have no soil moisture" in r.output
    r = CliRunner().invoke(cli, ["--strict", *args[:4], str(tmp_path / "o2"), *args[5:]])
    assert r.exit_code == 1 and "Error: run into" in r.output and "Traceback" not in r.output


def test_quality_flags_are_one_vocabulary():
    """The kernel's C enum mirrors smengine.product.QualityFlag; QUALITY_FLAGS is derived from it."""
    from smengine._ext import _engine
    from smengine.product import QUALITY_FLAGS, QualityFlag

    assert _engine.QUALITY_FLAG_CODES == {f.name.lower(): int(f) for f in QualityFlag} == QUALITY_FLAGS
    assert [int(f) for f in QualityFlag] == list(range(len(QualityFlag)))


def test_gather_kinds_are_one_vocabulary():
    """The kernel's C enum of gather kinds mirrors smengine.engine.GatherKind."""
    from smengine._ext import _engine
    from smengine.engine import GatherKind

    assert {k.name: int(k) for k in GatherKind} == _engine.GATHER_KINDS
