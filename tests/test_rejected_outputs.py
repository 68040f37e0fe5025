"""Fault catalogue, interrupted and parallel runs: an output rejected by ``--max-missing`` or,
with ``--strict``, by its data-loss warning is never committed under its final name (no file
renamed into place, no days appended to the tile's Zarr store, no region marked complete in
the domain store). The outputs before it stay; a rerun with the same rule makes the rejected
output again and fails again with the same message (never "skipped N existing"), and a rerun
with a looser rule resumes and completes the product."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from sklearn.ensemble import RandomForestRegressor
from test_engine import DAYS, make_tile, write_tile  # tests/ is on sys.path (rootdir-less test modules)

from smengine.engine import run
from smengine.errors import DataError, DataLossWarning, SMEngineWarning
from smengine.grid import Grid
from smengine.model import CompiledForest
from smengine.product import open_product
from smengine.tiles import TileStore

#: 2020-05-01 … 2020-05-08: the tile lacks 2020-05-04, a day whose pixels are all NaN (no_input)
PERIOD = ("2020-05-01", "2020-05-08")
ALL = [f"2020-05-0{d}" for d in range(1, 9)]
GOOD = ["2020-05-01", "2020-05-02", "2020-05-03"]  # the days before the absent one
ABSENT = "t000_000/t000_000_20200504_20200504.nc"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[CompiledForest, Path]:
    """A forest on the tiles' five raw features (calendar-free), and its file."""
    names = ["elev", "sand", "s1", "ndvi", "smap"]
    rng = np.random.default_rng(0)
    X = rng.random((400, len(names)))
    y = 0.2 + 0.1 * X[:, 0] + 0.01 * rng.standard_normal(400)
    rf = RandomForestRegressor(5, random_state=0, n_jobs=1).fit(X, y)
    cf = CompiledForest.from_sklearn(rf, feature_names=names)
    return cf, cf.save(tmp_path_factory.mktemp("rejected") / "m.smf.h5")


@pytest.fixture
def tile(tmp_path) -> TileStore:
    return make_tile(tmp_path / "tiles" / "t000_000.h5")


def holey_tile(path: Path, tile_id: str, x0: float) -> TileStore:
    """A tile like ``test_engine.make_tile`` (every day of DAYS) whose northern half has no
    valid sand: about half of every day's pixels have no value."""
    grid = Grid.from_bounds(x0, 2_987_000, x0 + 12_000, 2_997_000, tile_size=100)
    rng = np.random.default_rng(7)
    ny, nx = grid.subpixel_shape
    static = rng.random((2, ny, nx)).astype(np.float32)
    static[1, : ny // 2] = np.nan
    dyn = (0.2 + 0.1 * rng.random((DAYS.size, 2, ny, nx))).astype(np.float32)
    index = (np.arange(ny)[:, None] // 16) * 3 + np.arange(nx)[None, :] // 16
    return write_tile(path, grid, static, dyn, index, rng, tile_id)


def listing(out: Path) -> list[str]:
    """Everything under ``out``, hidden temporary files included."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def nc_names(days: list[str]) -> list[str]:
    return ["t000_000"] + [f"t000_000/t000_000_{d.replace('-', '')}_{d.replace('-', '')}.nc" for d in days]


def contents(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.nc"))}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smengine", *args], capture_output=True, text=True, timeout=300)


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("Error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_an_output_over_max_missing_is_not_committed_and_a_rerun_rejects_it_again(model, tile, tmp_path):
    cf, _ = model
    out = tmp_path / "out"
    rule = rf"{ABSENT}: 120 of 120 pixel-days \(100%\) have no soil moisture, more than max_missing=0.1 .*; not written"
    with pytest.raises(DataError, match=rule) as first:  # before the fix: after writing all 8
        run([tile.path], cf, out, slice(*PERIOD), file_days=1, max_missing=0.1, n_threads=1)
    # the days before the rejected one are committed, the rejected one is not (nor a temporary file)
    assert listing(out) == nc_names(GOOD)
    kept = contents(out)
    with pytest.raises(DataError, match=rule) as again:  # before the fix: "skipped 8", no error
        run([tile.path], cf, out, slice(*PERIOD), file_days=1, max_missing=0.1, n_threads=1)
    assert str(again.value) == str(first.value)
    assert listing(out) == nc_names(GOOD) and contents(out) == kept  # the committed ones untouched
    # a looser rule resumes: the three are skipped, the rest made; the product is the uninterrupted one
    with pytest.warns(DataLossWarning, match="have no soil moisture"):
        res = run([tile.path], cf, out, slice(*PERIOD), file_days=1, max_missing=1.0, n_threads=1)
    assert [p.name for p in res.skipped] == [Path(n).name for n in nc_names(GOOD)[1:]] and len(res.written) == 5
    assert listing(out) == nc_names(ALL) and {k: v for k, v in contents(out).items() if k in kept} == kept
    with pytest.warns(DataLossWarning, match="have no soil moisture"):
        run([tile.path], cf, tmp_path / "ref", slice(*PERIOD), file_days=1, n_threads=1)
    for name in nc_names(ALL)[1:]:
        with xr.open_dataset(out / name) as a, xr.open_dataset(tmp_path / "ref" / name) as b:
            np.testing.assert_array_equal(a["sm"].values, b["sm"].values, err_msg=name)
            np.testing.assert_array_equal(a["quality_flag"].values, b["quality_flag"].values, err_msg=name)


def test_under_strict_an_output_with_a_data_loss_warning_is_not_committed(model, tile, tmp_path):
    """Warnings as errors (pytest's filterwarnings here, the CLI's --strict): the output the
    warning is about is not written; without them the run completes from where it stopped."""
    cf, _ = model
    out = tmp_path / "out"
    said = rf"run into {re.escape(str(out))}: {ABSENT}: 120 of 120 pixel-days \(100%\) have no soil moisture; "
    said += ".*; not written"
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("error", SMEngineWarning)
            with pytest.raises(DataLossWarning, match=said):
                run([tile.path], cf, out, slice(*PERIOD), file_days=1, n_threads=1)
        assert listing(out) == nc_names(GOOD)
    with pytest.warns(DataLossWarning, match=rf"run into {re.escape(str(out))}: .* have no soil moisture"):
        res = run([tile.path], cf, out, slice(*PERIOD), file_days=1, n_threads=1)
    assert len(res.skipped) == 3 and len(res.written) == 5 and listing(out) == nc_names(ALL)


def test_cli_strict_rejects_the_output_again_on_a_retry_and_resumes_without_strict(model, tile, tmp_path):
    _, path = model
    out = tmp_path / "out"
    args = ["predict", str(path), str(tile.path), "--out", str(out), "--file-days", "1", "--threads", "1"]
    args += ["--start", PERIOD[0], "--end", PERIOD[1]]
    first = _cli("--strict", *args)
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
    line = _error_line(first.stderr)
    assert f"{ABSENT}: 120 of 120 pixel-days (100%) have no soil moisture" in line, line
    assert line.endswith("not written (smengine warnings are errors: --strict)"), line
    assert listing(out) == nc_names(GOOD)
    retry = _cli("--strict", *args)  # before the fix: exit 0, "skipped 8 existing"
    assert retry.returncode == 1 and "skipped" not in retry.stdout, retry.stdout
    assert _error_line(retry.stderr) == line and listing(out) == nc_names(GOOD)
    loose = _cli(*args)
    assert loose.returncode == 0, loose.stderr
    assert "wrote 5 files, skipped 3 existing, 0 tiles failed" in loose.stdout
    assert "warning: run into" in loose.stderr and listing(out) == nc_names(ALL)


def test_cli_max_missing_with_keep_going_rejects_one_tile_and_completes_the_other(model, tmp_path):
    """Two tiles, one with half of its pixels empty: --max-missing 0.3 rejects its first output
    (the tile fails, nothing of it is written), the other tile is written in full; the rule is
    per output, so the two tiles' average (below 0.3) does not hide the bad one."""
    _, path = model
    bad = holey_tile(tmp_path / "tiles" / "t000_000.h5", "t000_000", 4_321_000)
    good = make_tile(tmp_path / "tiles" / "t000_001.h5", x0=4_333_000, seed=4, tile_id="t000_001")
    out = tmp_path / "out"
    args = ["predict", str(path), str(bad.path), str(good.path), "--out", str(out), "--file-days", "4"]
    args += ["--threads", "1", "--keep-going"]
    good_files = ["t000_001", "t000_001/t000_001_20200501_20200505.nc", "t000_001/t000_001_20200506_20200508.nc"]
    first = _cli(*args, "--max-missing", "0.3")
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
    assert "wrote 2 files, skipped 0 existing, 1 tiles failed" in first.stdout
    failed = [ln for ln in first.stderr.splitlines() if ln.startswith("failed ")]
    assert len(failed) == 1 and str(bad.path) in failed[0], first.stderr
    assert "t000_000/t000_000_20200501_20200505.nc: " in failed[0] and "more than max_missing=0.3" in failed[0]
    assert failed[0].endswith("; not written")
    assert listing(out) == good_files
    kept = contents(out)
    retry = _cli(*args, "--max-missing", "0.3")
    assert retry.returncode == 1 and "wrote 0 files, skipped 2 existing, 1 tiles failed" in retry.stdout
    assert [ln for ln in retry.stderr.splitlines() if ln.startswith("failed ")] == failed
    assert listing(out) == good_files and contents(out) == kept
    loose = _cli(*args, "--max-missing", "0.7")
    assert loose.returncode == 0 and "wrote 2 files, skipped 2 existing, 0 tiles failed" in loose.stdout, loose.stderr
    assert listing(out) == sorted(
        good_files + ["t000_000", "t000_000/t000_000_20200501_20200505.nc", "t000_000/t000_000_20200506_20200508.nc"]
    )
    assert contents(out).items() >= kept.items()


def test_zarr_days_over_max_missing_are_not_appended(model, tile, tmp_path):
    cf, _ = model
    out = tmp_path / "out"
    store = out / "t000_000.zarr"
    rule = r"t000_000.zarr 2020-05-04..2020-05-04: 120 of 120 pixel-days .* more than max_missing=0.5 .*not written"
    for _ in range(2):
        with pytest.raises(DataError, match=rule):
            run([tile.path], cf, out, slice(*PERIOD), file_days=1, format="zarr", max_missing=0.5, n_threads=1)
        with open_product(store) as ds:
            assert [str(d)[:10] for d in ds["time"].values] == GOOD
        assert sorted(p.name for p in out.iterdir()) == ["t000_000.zarr"]  # no temporary store, no lock
    with pytest.warns(DataLossWarning, match="have no soil moisture"):
        res = run([tile.path], cf, out, slice(*PERIOD), file_days=1, format="zarr", max_missing=1.0, n_threads=1)
    assert len(res.written) == 5
    with pytest.warns(DataLossWarning, match="have no soil moisture"):
        run([tile.path], cf, tmp_path / "ref", slice(*PERIOD), file_days=1, format="zarr", n_threads=1)
    with open_product(store) as a, open_product(tmp_path / "ref" / "t000_000.zarr") as b:
        assert [str(d)[:10] for d in a["time"].values] == ALL
        np.testing.assert_array_equal(a["sm"].values, b["sm"].values)


def test_domain_region_over_max_missing_is_not_marked_and_is_redone(model, tile, tmp_path):
    from smengine.domain import missing_regions, run_domain

    cf, _ = model
    store = tmp_path / "product.zarr"
    rule = r"region t000_000 2020-05-03..2020-05-04: 123 of 240 pixel-days .* more than max_missing=0.3 .*not written"
    kw = {"time_chunk": 2, "n_threads": 1}
    for _ in range(2):
        with pytest.raises(DataError, match=rule):
            run_domain([tile.path], cf, store, slice(*PERIOD), max_missing=0.3, **kw)
        # the rejected region and those after it (the tile stopped there) are not marked complete
        assert [(r.tile, r.chunk, str(r.first), str(r.last)) for r in missing_regions(store)] == [
            ("t000_000", 1, "2020-05-03", "2020-05-04"),
            ("t000_000", 2, "2020-05-05", "2020-05-06"),
            ("t000_000", 3, "2020-05-07", "2020-05-08"),
        ]
    with pytest.warns(DataLossWarning, match="have no soil moisture"):
        res = run_domain([tile.path], cf, store, slice(*PERIOD), max_missing=0.6, **kw)
    assert res.complete and len(res.skipped) == 1 and len(res.written) == 3 and missing_regions(store) == []


def test_a_dask_worker_applies_strict_to_its_outputs(model, tile, tmp_path):
    """The workers do not share the caller's warning filters: the run hands them its strictness."""
    distributed = pytest.importorskip("distributed")
    cf, _ = model
    out = tmp_path / "out"
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as lc,
        distributed.Client(lc) as client,
        pytest.raises(DataLossWarning, match=rf"{ABSENT}: 120 of 120 pixel-days .*; not written"),
    ):
        run([tile.path], cf, out, slice(*PERIOD), file_days=1, n_threads=1, client=client)
    assert listing(out) == nc_names(GOOD)
