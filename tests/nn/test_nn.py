"""smengine.nn: the spatial network — convolution = patches, determinism, files, the engine and CLI paths."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

import smengine.nn as snn  # noqa: E402
from smengine.engine import TileRunner, predict, run  # noqa: E402
from smengine.errors import ConfigError, DataError  # noqa: E402
from smengine.features import FeatureBuilder, FeatureSpec  # noqa: E402
from smengine.grid import Grid  # noqa: E402
from smengine.tiles import TileStore, TileWriter  # noqa: E402

torch.set_num_threads(1)

DAYS = np.datetime64("2020-05-01") + np.arange(12)
SPEC = FeatureSpec(swi_of=("s1",), swi_T=(5.0,))
SMALL = {"half_width": 2, "width": 4, "head": 4, "max_epochs": 3, "patience": 2, "n_splits": 2, "batch_size": 16}


def make_tile(path: Path, *, extra: bool = False, tile_id: str = "t000_000") -> TileStore:
    """8 × 6 pixels of 4 × 4 sub-pixels: two statics (one with a NaN hole), s1 (gaps) and ndvi;
    ``extra`` adds a static layer ``lai``."""
    grid = Grid.from_bounds(4_321_000, 2_987_000, 4_329_000, 2_993_000, tile_size=100)
    rng = np.random.default_rng(5)
    ny, nx = grid.subpixel_shape
    statics = ["elev", "sand"] + (["lai"] if extra else [])
    units = {"elev": "m", "sand": "1", "lai": "1", "s1": "m3 m-3", "ndvi": "1"}
    static = rng.random((len(statics), ny, nx)).astype(np.float32)
    static[0, 8:12, 8:11] = np.nan  # a hole of unknown values
    dyn = (0.2 + 0.1 * rng.random((DAYS.size, 2, ny, nx))).astype(np.float32)
    dyn[:, 0][rng.random((DAYS.size, ny, nx)) < 0.1] = np.nan
    with TileWriter(path, grid, DAYS, statics, ["s1", "ndvi"], units, tile_id=tile_id) as w:
        for i, n in enumerate(statics):
            w.write_static(n, static[i])
        for t in range(DAYS.size):
            w.write_dynamic(t, "s1", dyn[t, 0])
            w.write_dynamic(t, "ndvi", dyn[t, 1])
    return TileStore.open(path)


def make_table(store: TileStore, spec: FeatureSpec = SPEC) -> pd.DataFrame:
    """Station-days at 6 stations (one at the tile edge) with a target made from the features."""
    cells = [(1, 1), (5, 20), (12, 6), (18, 28), (22, 14), (9, 30)]
    fb = FeatureBuilder(store, spec)
    sw = fb.swi()
    rows = []
    for k, (r, c) in enumerate(cells):
        x, y = (float(v) for v in store.grid.xy(r, c, subpixel=True))
        for t, d in enumerate(DAYS):
            f = fb.day(t, swi=sw)[:, max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
            target = 0.1 + 0.2 * float(np.nanmean(f[0])) + 0.3 * float(np.nanmean(f[1])) + 0.2 * float(np.nanmean(f[3]))
            rows.append({"station": f"S{k}", "date": pd.Timestamp(d), "target": target, "x": x, "y": y})
    table = pd.DataFrame(rows)
    table["tile"] = store.tile_id
    table.attrs["spec"] = spec.get_config()
    return table


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nn")
    store = make_tile(tmp / "t000_000.h5")
    table = make_table(store)
    model = snn.train(table, store, seed=0, **SMALL)
    return {"tmp": tmp, "store": store, "table": table, "model": model}


def _patch(x: np.ndarray, r: int, c: int, k: int) -> np.ndarray:
    """The (F, 2k+1, 2k+1) patch of raster x centred on sub-pixel (r, c), NaN outside."""
    F, H, W = x.shape
    xp = np.full((F, H + 2 * k, W + 2 * k), np.nan, np.float32)
    xp[:, k : k + H, k : k + W] = x
    return xp[:, r : r + 2 * k + 1, c : c + 2 * k + 1]


def test_convolution_over_the_tile_equals_patch_by_patch(world):
    model, store = world["model"], world["store"]
    k = model.half_width
    fb = FeatureBuilder(store, FeatureSpec.from_config(model.spec))
    sw = fb.swi()
    x = np.stack([fb.day(t, swi=sw) for t in (3, 7)])[:, [fb.names.index(n) for n in model.feature_names]]
    mean, sd = model.predict_subpixels(x)
    H, W = x.shape[2:]
    # corners and edges (patches reaching outside the tile), the NaN hole's rim, and random interior points
    rng = np.random.default_rng(0)
    pts = [(0, 0), (0, W - 1), (H - 1, 0), (H - 1, W - 1), (7, 9), (12, 12), (1, 17)]
    pts += [tuple(int(v) for v in p) for p in rng.integers(0, (H, W), size=(20, 2))]
    for d in range(2):
        patches = np.stack([_patch(x[d], r, c, k) for r, c in pts])
        pm, ps = model.predict_patches(patches)
        got_m = np.array([mean[d, r, c] for r, c in pts])
        got_s = np.array([sd[d, r, c] for r, c in pts])
        np.testing.assert_array_equal(np.isnan(pm), np.isnan(got_m))
        np.testing.assert_allclose(got_m, pm, rtol=0, atol=1e-6)
        np.testing.assert_allclose(got_s, ps, rtol=0, atol=1e-6)
    assert np.isnan(mean[0, 8:12, 8:11]).all()  # the hole: no prediction where the centre is unknown
    assert np.isfinite(mean[0, 0, 0])  # the corner: known centre, neighbours outside the tile
    # the product is the mean of the valid sub-pixel predictions of each pixel (sub-pixel scaling)
    _, out = TileRunner(store, model).predict_arrays(DAYS[[3, 7]])
    s = store.grid.subpixel
    for r, c in [(0, 0), (2, 2), (4, 5)]:
        block = mean[0, r * s : (r + 1) * s, c * s : (c + 1) * s]
        if np.isfinite(block).mean() >= 0.5:
            np.testing.assert_allclose(out["sm"][0, r, c], np.nanmean(block), rtol=0, atol=1e-6)
            np.testing.assert_allclose(out["valid_fraction"][0, r, c], np.isfinite(block).mean())
    assert out["quality_flag"][0, 2, 2] in (1, 2)  # pixel (2, 2) holds the hole
    np.testing.assert_allclose(out["sm"][0, 0, 0], np.nanmean(mean[0, :s, :s]), atol=1e-6)


def test_training_is_deterministic(world):
    again = snn.train(world["table"], world["store"], seed=0, **SMALL)
    assert again.content_hash == world["model"].content_hash
    for a, b in zip(again.members, world["model"].members, strict=True):
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb)
    other = snn.train(world["table"], world["store"], seed=1, **SMALL)
    assert other.content_hash != again.content_hash


def test_save_load_round_trip_and_engine_paths(world):
    model, store, tmp = world["model"], world["store"], world["tmp"]
    path = model.save(tmp / "model.smnn.pt")
    assert snn.is_nn_file(path) and not snn.is_nn_file(store.path)
    back = snn.load(path)
    assert back.content_hash == model.content_hash
    assert back.feature_names == model.feature_names and back.card == model.card
    a = predict(store, model, days=DAYS[4:8])
    b = predict(store, path, days=DAYS[4:8])  # the file, as smengine predict passes it
    c = predict(store, pickle.loads(pickle.dumps(model)), days=DAYS[4:8])  # Dask scatters a pickle
    for v in ("sm", "sm_uncertainty", "sm_subpixel_sd", "valid_fraction", "quality_flag"):
        np.testing.assert_array_equal(a[v].values, b[v].values)
        np.testing.assert_array_equal(a[v].values, c[v].values)
    assert np.isfinite(a["sm"].values).mean() > 0.8 and np.nanmax(a["sm_uncertainty"].values) > 0
    assert a["sm"].attrs["units"] == "m3 m-3"
    assert "spatial neural network" in a.attrs["comment"].lower()
    assert '"content_hash": "' + model.content_hash in a.attrs["smengine_model_card"]
    with pytest.raises(DataError, match="not a smengine spatial network|cannot read"):
        snn.load(Path(store.path))


def test_a_tile_lacking_a_feature_gives_a_clear_error(world, tmp_path):
    rich = make_tile(tmp_path / "t001_000.h5", extra=True, tile_id="t001_000")
    spec = FeatureSpec(static=("elev", "lai"), swi_of=("s1",), swi_T=(5.0,))
    model = snn.train(make_table(rich, spec), rich, seed=0, **SMALL)
    assert "lai" in model.feature_names
    with pytest.raises(ConfigError, match=r"t000_000.*needs layer\(s\) \['lai'\] that the tile lacks"):
        predict(world["store"], model)
    res = run([world["store"].path], model, tmp_path / "out", on_error="skip")
    assert res.failed and "lai" in res.failed[0][1]


def test_run_and_cli_predict_take_the_network_file(world, tmp_path):
    from click.testing import CliRunner

    from smengine.cli import cli
    from smengine.product import open_product

    path = world["model"].save(tmp_path / "m.smnn.pt")
    res = CliRunner().invoke(
        cli, ["predict", str(path), str(world["store"].path), "--out", str(tmp_path / "p"), "--file-days", "6"]
    )
    assert res.exit_code == 0, res.output
    files = sorted((tmp_path / "p" / "t000_000").glob("*.nc"))
    assert len(files) == 2
    with open_product(files[0]) as ds:
        ref = predict(world["store"], world["model"], days=DAYS[:6])
        np.testing.assert_array_equal(ds["sm"].values, ref["sm"].values)
        assert "spatial neural network" in ds.attrs["comment"].lower()
    again = run([world["store"].path], path, tmp_path / "p", file_days=6)  # resumes: same model, same files
    assert len(again.skipped) == 2 and not again.written


def test_cli_nn_train_writes_the_network_a_python_train_gives(world, tmp_path):
    """`smengine nn-train TABLE --tiles ... --set NAME=VALUE`: the same weights as smengine.nn.train."""
    from click.testing import CliRunner

    from smengine.cli import cli
    from smengine.features import write_table

    tab = write_table(world["table"], tmp_path / "table.nc")
    args = ["nn-train", str(tab), "--tiles", str(world["store"].path), "--out", str(tmp_path / "n.smnn.pt")]
    sets = [x for k, v in SMALL.items() for x in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(cli, [*args, *sets])
    assert res.exit_code == 0, res.output
    assert snn.load(tmp_path / "n.smnn.pt").content_hash == world["model"].content_hash
    bad = CliRunner().invoke(cli, [*args, "--set", "depth=3"])
    assert bad.exit_code == 2 and "NAME one of half_width" in bad.output
    bad = CliRunner().invoke(cli, [*args, "--set", "lr=fast"])
    assert bad.exit_code == 2 and "not a number" in bad.output


@pytest.mark.slow
def test_compare_with_forest_on_the_quick_twin(tmp_path):
    import json

    s = snn.compare_with_forest(
        tmp_path, seed=0, quick=True, n_trees=10, net={"max_epochs": 2, "n_splits": 2, "width": 8}
    )
    for k in ("forest", "network"):
        assert 0 < s["truth"][k]["RMSE"] < 0.2
        assert -1 <= s["station_cv"][k]["R"] <= 1
        assert s["pseudoproxy_offsite"][k]["n_offsite"] > 0
    assert (tmp_path / "products_day.png").stat().st_size > 10_000
    report = (tmp_path / "report.md").read_text()
    assert "| pseudoproxy off-site median R" in report
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["cost"]["nn_us_per_pixel_day"] > 0
    # the paired comparisons, network against forest, each with its interval and verdict
    p = stored["paired"]
    assert (p["a"], p["b"]) == ("network", "forest")
    for m in ("ubRMSE", "R", "RMSE"):
        c = p["station_cv"][m]
        assert sum(c["counts"].values()) == c["n_stations"] == s["stations"]
        assert c["verdict"] in ("beats", "ties", "loses", "undetermined")
    for m in ("RMSE", "ubRMSE", "R"):
        assert p["truth"][m]["ci_low"] <= p["truth"][m]["difference"] <= p["truth"][m]["ci_high"]
    d = stored["truth_rmse_difference_network_minus_forest"]
    assert d["difference"] == p["truth"]["RMSE"]["difference"] and d["ci_low"] < d["ci_high"]
    for m in ("R", "ubRMSE"):
        assert 0 < p["pseudoproxy_offsite"][m]["n_pixels"] <= s["pseudoproxy_offsite"]["forest"]["n_offsite"]
    wins = report.split("## Which wins where", 1)[1]
    assert wins.count("95 % interval") >= 8 and "None" not in report and "nan" not in report.lower()
