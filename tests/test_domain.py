"""smengine.domain: one Zarr product for the domain, written region by region, resumably."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from smengine.domain import Region, create_domain_store, missing_regions, run_domain, write_region
from smengine.engine import predict
from smengine.errors import DataError, ValidationError
from smengine.features import FeatureBuilder, FeatureSpec
from smengine.grid import Grid
from smengine.model import CompiledForest
from smengine.product import open_product
from smengine.tiles import TileStore, TileWriter

DAYS = np.arange("2020-05-01", "2020-05-07", dtype="datetime64[D]")  # 6 days: 3 time chunks of 2
TIME_CHUNK = 2
GRID = Grid.from_bounds(4_321_000, 2_987_000, 4_353_000, 3_019_000, tile_size=8)  # 32 × 32 px: 4 × 4 tiles of 8 × 8
UNITS = {"elev": "m", "sand": "%", "s1": "m3 m-3", "ndvi": "1"}
VARS = ("sm", "sm_uncertainty", "sm_subpixel_sd", "valid_fraction", "quality_flag")
N_REGIONS = 16 * 3


def make_tile(folder: Path, tile, seed: int) -> TileStore:
    grid = GRID.tile_grid(tile)
    rng = np.random.default_rng(seed)
    ny, nx = grid.subpixel_shape
    static = rng.random((2, ny, nx)).astype(np.float32)
    static[1, 4:8, 4:8] = np.nan  # a pixel without valid sub-pixels
    dyn = (0.2 + 0.1 * rng.random((DAYS.size, 2, ny, nx))).astype(np.float32)
    dyn[:, 0][rng.random((DAYS.size, ny, nx)) < 0.05] = np.nan  # satellite gaps in the SM layer
    path = folder / f"{tile.id}.h5"
    with TileWriter(path, grid, DAYS, ["elev", "sand"], ["s1", "ndvi"], UNITS, tile_id=tile.id) as w:
        for i, n in enumerate(["elev", "sand"]):
            w.write_static(n, static[i])
        for t in range(DAYS.size):
            w.write_dynamic(t, "s1", dyn[t, 0])
            w.write_dynamic(t, "ndvi", dyn[t, 1])
    return TileStore.open(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("domain")
    stores = [make_tile(tmp / "tiles", t, seed=k) for k, t in enumerate(GRID.tiles())]
    fb = FeatureBuilder(stores[0], FeatureSpec(swi_T=(5.0,), swi_carry=False))
    sw = fb.swi()
    X = np.concatenate([fb.day(t, swi=sw).reshape(len(fb.names), -1).T for t in range(DAYS.size)])
    X = X[np.isfinite(X).all(1)]
    rng = np.random.default_rng(0)
    y = np.tanh(X @ rng.standard_normal(X.shape[1])) * 0.1 + 0.25
    rf = RandomForestRegressor(10, min_samples_leaf=5, max_features=0.5, random_state=0, n_jobs=1).fit(X, y)
    cf = CompiledForest.from_sklearn(rf, feature_names=fb.names)
    local = tmp / "local.zarr"
    res = run_domain([s.path for s in stores], cf, local, grid=GRID, time_chunk=TIME_CHUNK, n_threads=1, history="test")
    return {"tmp": tmp, "stores": stores, "cf": cf, "local": local, "res": res}


def chunk_files(store: Path) -> dict[str, bytes]:
    """Every data chunk file of the product variables (and the region markers), by name."""
    out = {}
    for var in (*VARS, "smengine_regions/done"):
        for f in sorted((store / var).iterdir()):
            if not f.name.startswith("."):
                out[f"{var}/{f.name}"] = f.read_bytes()
    return out


def same_attrs(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(np.array_equal(np.asarray(a[k]), np.asarray(b[k])) for k in a)


def leftovers(store: Path) -> list[Path]:
    return [p for p in store.parent.rglob("*") if p.name.endswith((".partial", ".tmp", ".lock"))]


def test_domain_regions_equal_the_tile_products(world):
    pytest.importorskip("rioxarray")
    res = world["res"]
    assert len(res.written) == N_REGIONS and not res.skipped and res.complete and not res.failed
    assert res.written[:3] == tuple(Region("t000_000", k, DAYS[2 * k], DAYS[2 * k + 1]) for k in range(3))
    assert missing_regions(world["local"]) == []
    dom = open_product(world["local"])
    assert dom.sizes == {"time": 6, "y": 32, "x": 32, "nv": 2}
    assert dom["sm"].encoding["chunks"] == (TIME_CHUNK, 8, 8)
    for store in world["stores"]:
        ref = predict(store, world["cf"], DAYS, n_threads=1)
        t = GRID.tile(store.tile_id)
        sub = dom.isel(y=slice(t.row_off, t.row_off + 8), x=slice(t.col_off, t.col_off + 8))
        for k in VARS:
            np.testing.assert_array_equal(sub[k].values, ref[k].values, err_msg=f"{t.id} {k}")
            assert sub[k].dtype == ref[k].dtype and same_attrs(sub[k].attrs, ref[k].attrs), k
        for k in ("time", "x", "y", "lat", "lon"):
            np.testing.assert_array_equal(sub[k].values, ref[k].values, err_msg=k)
    assert {int(v) for v in np.unique(dom["quality_flag"].values)} >= {0, 1, 3}
    assert dom.attrs["Conventions"] == "CF-1.8" and Grid.from_config(dom.attrs["smengine_grid"]) == GRID
    assert set(dom.attrs) == set(ref.attrs) and dom.attrs.get("smengine_model_card") == ref.attrs.get(
        "smengine_model_card"
    )
    assert "tile" not in dom.attrs["smengine_config"] and world["cf"].content_hash in dom.attrs["smengine_config"]
    assert dom.rio.crs == ref.rio.crs and dom["crs"].attrs["GeoTransform"].split()[0] == repr(GRID.xmin)
    assert not leftovers(world["local"])


def test_two_workers_write_the_same_bytes_as_a_local_run(world):
    distributed = pytest.importorskip("distributed")
    out = world["tmp"] / "dask.zarr"
    seen: list[int] = []
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        distributed.Client(lc) as client,
        distributed.get_task_stream(client) as ts,
    ):
        res = run_domain(
            [s.path for s in world["stores"]],
            world["cf"],
            out,
            grid=GRID,
            time_chunk=TIME_CHUNK,
            n_threads=1,
            client=client,
            history="test",
            progress=seen.append,
        )
    workers = {r["worker"] for r in ts.data if str(r["key"]).startswith("smengine-domain-")}
    assert len(workers) == 2, "both workers should have written regions"
    assert sorted(res.written) == sorted(world["res"].written) and res.complete
    assert seen == [DAYS.size] * 16 and res.stats.subpixel_days == world["res"].stats.subpixel_days
    assert chunk_files(out) == chunk_files(world["local"])  # every chunk file, byte for byte
    a, b = open_product(out), open_product(world["local"])
    for k in VARS:
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)
    assert not leftovers(out)


def test_resume_skips_complete_regions_and_redoes_unmarked_ones(world):
    paths = [s.path for s in world["stores"]]
    out = world["tmp"] / "resume.zarr"
    shutil.copytree(world["local"], out)
    kw = {"grid": GRID, "time_chunk": TIME_CHUNK, "n_threads": 1}
    res = run_domain(paths, world["cf"], out, **kw)
    assert not res.written and len(res.skipped) == N_REGIONS and res.stats.subpixel_days == 0
    # region (tile t001_002, days 3-4) loses its marker and its sm chunk: only it is redone
    before = chunk_files(world["local"])
    (out / "smengine_regions" / "done" / "1.2.1.0").unlink()
    (out / "sm" / "1.1.2").unlink()
    assert missing_regions(out) == [Region("t001_002", 1, DAYS[2], DAYS[3])]
    res = run_domain(paths, world["cf"], out, **kw)
    assert res.written == (Region("t001_002", 1, DAYS[2], DAYS[3]),) and len(res.skipped) == N_REGIONS - 1
    assert chunk_files(out) == before and res.complete
    # a region written from a product that records no inputs: same bytes, but not resumable
    store = world["stores"][6]
    assert store.tile_id == "t001_002"
    (region,) = write_region(out, predict(store, world["cf"], DAYS[:2], n_threads=1))
    assert region == Region("t001_002", 0, DAYS[0], DAYS[1])
    now = chunk_files(out)
    assert {k for k in now if now[k] != before[k]} == {"smengine_regions/done/1.2.0.0"}  # only the marker
    with pytest.raises(DataError, match="t001_002 2020-05-01…2020-05-02 not resumed: it records no inputs"):
        run_domain(paths, world["cf"], out, **kw)
    res = run_domain(paths, world["cf"], out, resume=False, **kw)
    assert len(res.written) == N_REGIONS and chunk_files(out) == before
    with pytest.raises(ValidationError, match="not whole time chunks"):
        write_region(out, predict(store, world["cf"], DAYS[1:3], n_threads=1))
    with pytest.raises(DataError, match="cannot resume: it was made with other settings"):
        run_domain(paths, world["cf"], out, min_valid_fraction=0.6, **kw)
    with pytest.raises(DataError, match="exists"):
        create_domain_store(out, GRID, DAYS, world["cf"], time_chunk=TIME_CHUNK)
    assert not leftovers(out)


def test_a_killed_worker_loses_nothing(world):
    distributed = pytest.importorskip("distributed")
    out = world["tmp"] / "killed.zarr"

    def die_on_third_region():
        """In this worker process only: the third region's data are written wrong, a chunk
        is left half-written (a temporary file), and the process exits before the marker."""
        import os
        import uuid

        import smengine.domain as dom

        write = dom._write_data
        calls = []

        def dying(layout, ds, tile, t):
            calls.append(tile.id)
            if len(calls) < 3:
                return write(layout, ds, tile, t)
            bad = ds.copy(deep=True)
            bad["sm"].values[...] = 0.123
            write(layout, bad, tile, t)
            with open(os.path.join(layout.path, "sm", f"0.0.0.{uuid.uuid4().hex}.partial"), "wb") as f:
                f.write(b"half a chunk")
            os._exit(1)

        dom._write_data = dying
        return os.getpid()

    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        distributed.Client(lc) as client,
    ):
        victim = next(iter(client.scheduler_info()["workers"]))
        doomed_pid = client.run(die_on_third_region, workers=[victim])[victim]
        res = run_domain(
            [s.path for s in world["stores"]],
            world["cf"],
            out,
            grid=GRID,
            time_chunk=TIME_CHUNK,
            n_threads=1,
            client=client,
            history="test",
        )
        pids = set(client.run(os.getpid).values())
    assert doomed_pid not in pids, "the worker should have died"
    # the killed tile's retry skipped the two regions it had completed, and redid the third
    assert len(res.skipped) == 2 and len(res.written) == N_REGIONS - 2 and res.complete
    assert missing_regions(out) == []
    assert chunk_files(out) == chunk_files(world["local"])
    assert not leftovers(out)


def test_cli_predict_domain_zarr_equals_the_library_run(world, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from smengine.cli import cli

    model = tmp_path / "model.smf.h5"
    world["cf"].save(model)
    out = tmp_path / "out"
    args = ["predict", str(model), str(world["tmp"] / "tiles"), "--out", str(out), "--format", "domain-zarr"]
    r = CliRunner().invoke(cli, [*args, "--file-days", str(TIME_CHUNK), "--threads", "1"])
    assert r.exit_code == 0, r.output
    assert f"wrote {N_REGIONS} regions of {out / 'product.zarr'}" in r.output
    got, want = chunk_files(out / "product.zarr"), chunk_files(world["local"])
    data = [k for k in want if not k.startswith("smengine_regions")]
    assert data and all(got[k] == want[k] for k in data)
    again = CliRunner().invoke(cli, [*args, "--file-days", str(TIME_CHUNK), "--threads", "1"])
    assert again.exit_code == 0 and f"skipped {N_REGIONS} existing" in again.output
