"""Fault catalogue, predict side: resume compares what made an output (model, settings, the
tile's data) and refuses, never silently reusing; unreadable tiles with --keep-going."""

from __future__ import annotations

import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from sklearn.ensemble import RandomForestRegressor
from test_engine import DAYS, make_tile  # tests/ is on sys.path (rootdir-less test modules)

from smengine.engine import run
from smengine.errors import DataError
from smengine.model import CompiledForest
from smengine.product import make_product, write_netcdf
from smengine.tiles import TileStore


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two forests on the tile's five raw features (calendar-free), saved to files."""
    tmp = tmp_path_factory.mktemp("predict_faults")
    names = ["elev", "sand", "s1", "ndvi", "smap"]
    rng = np.random.default_rng(0)
    X = rng.random((400, len(names)))
    out = {}
    for seed in (0, 1):
        y = 0.2 + 0.1 * X[:, seed] + 0.01 * rng.standard_normal(400)
        rf = RandomForestRegressor(5, random_state=seed, n_jobs=1).fit(X, y)
        cf = CompiledForest.from_sklearn(rf, feature_names=names)
        out[seed] = (cf, cf.save(tmp / f"m{seed}.smf.h5"))
    return out


@pytest.fixture
def tile(tmp_path) -> TileStore:
    return make_tile(tmp_path / "tiles" / "t000_000.h5")


def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.rglob("*.nc"))}


def test_resume_skips_only_what_this_model_and_these_settings_made(models, tile, tmp_path):
    (a, _), (b, _) = models[0], models[1]
    out = tmp_path / "out"
    first = run([tile.path], a, out, file_days=3)
    assert len(first.written) == 3
    before = _files(out)
    again = run([tile.path], a, out, file_days=3, chunk_days=2)  # chunking changes no value
    assert len(again.skipped) == 3 and not again.written and _files(out) == before
    # another model: refused, naming the file and both models; nothing touched
    with pytest.raises(DataError, match=r"t000_000_20200501_20200503.nc: not resumed: it was made by model sha256:"):
        run([tile.path], b, out, file_days=3)
    assert _files(out) == before
    # other settings: refused, naming the setting
    with pytest.raises(DataError, match=r"other settings \(engine.min_valid_fraction\)"):
        run([tile.path], a, out, file_days=3, min_valid_fraction=0.7)
    # --overwrite: redone with the other model
    redo = run([tile.path], b, out, file_days=3, resume=False)
    assert len(redo.written) == 3 and _files(out) != before


def test_resume_notices_a_tile_whose_data_changed(models, tile, tmp_path):
    cf = models[0][0]
    out = tmp_path / "out"
    run([tile.path], cf, out, file_days=3)
    with h5py.File(tile.path, "r+") as f:  # 2020-05-06 (second file's range) re-ingested with other values
        f["dynamic"][4, 1] += 0.01
    with pytest.raises(DataError, match=r"20200505_20200507.nc: not resumed: the tile's data changed"):
        run([tile.path], cf, out, file_days=3)
    # the first range ends before the change: it alone still resumes
    res = run([tile.path], cf, out, DAYS[:3], file_days=3)
    assert len(res.skipped) == 1 and not res.written


def test_a_file_from_elsewhere_is_not_taken_for_an_output(models, tile, tmp_path):
    cf = models[0][0]
    out = tmp_path / "out"
    res = run([tile.path], cf, out, file_days=7)
    (path,) = res.written
    with xr.open_dataset(path) as ds:
        ds = ds.load()
    arrays = [ds[k].values for k in ("sm", "sm_uncertainty", "sm_subpixel_sd", "valid_fraction", "quality_flag")]
    foreign = make_product(*arrays, grid=tile.grid, times=ds["time"].values)
    write_netcdf(foreign, path, overwrite=True)
    with pytest.raises(DataError, match="records no provenance"):
        run([tile.path], cf, out, file_days=7)


def test_zarr_resume_refuses_another_model(models, tile, tmp_path):
    (a, _), (b, _) = models[0], models[1]
    out = tmp_path / "z"
    run([tile.path], a, out, DAYS[:4], file_days=2, format="zarr")
    with pytest.raises(DataError, match=r"t000_000.zarr: cannot resume: it was made by model"):
        run([tile.path], b, out, file_days=2, format="zarr")
    res = run([tile.path], a, out, file_days=2, format="zarr")  # the same model resumes
    assert len(res.written) == 2 and len(res.skipped) == 2


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smengine", *args], capture_output=True, text=True, timeout=300)


def test_cli_predict_with_another_model_is_one_line_and_overwrite_redoes(models, tile, tmp_path):
    (_, pa), (_, pb) = models[0], models[1]
    out = tmp_path / "p"
    assert _cli("predict", str(pa), str(tile.path), "--out", str(out), "--file-days", "7").returncode == 0
    r = _cli("predict", str(pb), str(tile.path), "--out", str(out), "--file-days", "7")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "not resumed: it was made by model" in r.stderr and "--overwrite" in r.stderr
    r = _cli("predict", str(pb), str(tile.path), "--out", str(out), "--file-days", "7", "--overwrite")
    assert r.returncode == 0, r.stderr


def test_keep_going_past_an_unreadable_tile(models, tile, tmp_path):
    cf, path = models[0]
    bad = tmp_path / "tiles" / "t000_001.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # an HDF5 signature, then nothing
    cut = tmp_path / "tiles" / "t000_002.h5"
    shutil.copy(tile.path, cut)
    with open(cut, "r+b") as f:
        f.truncate(cut.stat().st_size // 3)
    out = tmp_path / "out"
    r = _cli("predict", str(path), str(tile.path), str(bad), str(cut), "--out", str(out), "--keep-going")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "t000_001.h5" in r.stderr and "t000_002.h5" in r.stderr
    assert sorted(p.name for p in out.rglob("*.nc")) == ["t000_000_20200501_20200508.nc"]
    r = _cli("predict", str(path), str(tile.path), str(bad), "--out", str(tmp_path / "o2"))
    assert r.returncode == 1 and "t000_001.h5" in r.stderr and "Traceback" not in r.stderr


def test_absent_days_are_warned_and_max_missing_makes_loss_an_error(models, tile, tmp_path):
    from smengine.engine import predict
    from smengine.errors import DataLossWarning

    cf = models[0][0]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        ds = predict(tile, cf, ["2020-05-03", "2020-05-04", "2020-05-05"])
    said = [str(w.message) for w in seen if issubclass(w.category, DataLossWarning)]
    assert any("1 requested tile-day(s) are not in the tiles" in m for m in said), said
    assert (ds["quality_flag"].values[1] == 4).all()  # no_input
    from smengine.engine import EngineStats

    with pytest.warns(DataLossWarning, match=r"^x: 1 requested tile-day\(s\) are not in the tiles"):
        EngineStats(pixel_days=1000, nan_pixel_days=5, absent_days=1).warn_if_degraded("x")  # below 10 %: still said
    with pytest.raises(DataError, match=r"pixel-days .* have no soil moisture, more than max_missing=0.2"):
        predict(tile, cf, ["2020-05-03", "2020-05-04", "2020-05-05"], max_missing=0.2)
    with pytest.raises(DataError, match="max_missing=0"):
        run([tile.path], cf, tmp_path / "o", ["2020-05-03", "2020-05-04"], max_missing=0.0)
    r = _cli("predict", str(models[0][1]), str(tile.path), "--out", str(tmp_path / "c"), "--max-missing", "0")
    assert r.returncode == 1 and "more than max_missing=0" in r.stderr and "Traceback" not in r.stderr


def test_kill_9_mid_run_then_resume_gives_the_uninterrupted_outputs(models, tile, tmp_path):
    import os
    import signal
    import time

    _, path = models[0]
    ref = tmp_path / "ref"
    assert _cli("predict", str(path), str(tile.path), "--out", str(ref), "--file-days", "1").returncode == 0
    out = tmp_path / "out"
    for _attempt in range(5):  # kill as soon as the first output (or its temporary file) appears
        shutil.rmtree(out, ignore_errors=True)
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "smengine",
                "predict",
                str(path),
                str(tile.path),
                "--out",
                str(out),
                "--file-days",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while p.poll() is None and not any((out / "t000_000").glob(".*tmp")) and not list(out.rglob("*.nc")):
            time.sleep(0.001)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        n_done = len(list(out.rglob("*.nc")))
        if p.returncode == -signal.SIGKILL and n_done < 7:
            break
    else:
        pytest.skip("the run always finished before the kill")
    r = _cli("predict", str(path), str(tile.path), "--out", str(out), "--file-days", "1")
    assert r.returncode == 0, r.stderr
    got = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    assert got == sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())  # no temporary file left
    for rel in got:
        with xr.open_dataset(out / rel) as a, xr.open_dataset(ref / rel) as b:
            xr.testing.assert_identical(a.drop_attrs(), b.drop_attrs())
            assert a.attrs["smengine_inputs"] == b.attrs["smengine_inputs"]


def test_temporary_outputs_of_a_killed_run_are_removed_by_the_next(models, tile, tmp_path):
    cf = models[0][0]
    out = tmp_path / "out"
    (out / "t000_000").mkdir(parents=True)
    stale = out / "t000_000" / ".t000_000_20200501_20200508.nc.a1b2c3d4.tmp"
    stale.write_bytes(b"half a file")
    other = out / "t000_000" / ".notes.txt.a1b2c3d4.tmp"  # not an output of this tile: kept
    other.write_text("x")
    (out / ".t000_000.zarr.a1b2c3d4.tmp").mkdir()
    run([tile.path], cf, out)
    assert not stale.exists() and other.exists() and not (out / ".t000_000.zarr.a1b2c3d4.tmp").exists()
