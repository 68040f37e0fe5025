"""Fault catalogue, command line (issue 20): a scientist's ordinary mistakes end in one clear
``Error:`` line naming the file, option, variable or station and the cause, exit 1 (2 for a
usage error), and no traceback, bare ``KeyError``/``IndexError``/``ValueError`` or NumPy repr.

Every case is a real ``python -m smengine`` in a fresh interpreter, as a user meets it, on a
small twin world built once per module (twin → ingest → table → train, about 40 s).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

#: Text that must never reach the user: Python internals instead of a sentence.
FORBIDDEN = ("Traceback", "KeyError", "IndexError", "ValueError", "array(", "np.float", "numpy.", "dtype=")


def sm(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m smengine ARGS`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "smengine", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def fails(res: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """Assert a clean failure: exit ``code``, no traceback or NumPy/Python internals anywhere,
    and one ``Error:`` line, the last of stderr, holding every one of ``words``. Returns that line."""
    out = res.stderr + res.stdout
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == code, f"exit {res.returncode}, expected {code}:\n{out[-3000:]}"
    for bad in FORBIDDEN:
        assert bad not in out, f"{bad!r} in the output:\n{out[-3000:]}"
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    line = errors[0]
    assert res.stderr.rstrip().endswith(line), f"the error is not one line:\n{res.stderr[-3000:]}"
    for w in words:
        assert w in line, f"{w!r} not in {line!r}"
    return line


# ------------------------------------------------------------------------------ the world
@pytest.fixture(scope="module")
def world(tmp_path_factory) -> SimpleNamespace:
    """The quick twin's files, its tiles (three months), a training table and a 5-tree model."""
    root = tmp_path_factory.mktemp("cli_faults")
    data = root / "mydata"
    ok(sm("-q", "twin", "--quick", "--out", data))
    cfg = data / "smengine.toml"
    tiles = root / "tiles"
    ok(sm("-q", "ingest", "--config", cfg, "--out", tiles, "--start", "2019-03-01", "--end", "2019-05-31"))
    crns = data / "crns" / "COSMOS_Europe_Data_rev1"
    table = root / "table.nc"
    ok(sm("-q", "table", "--config", cfg, crns, tiles, "--format", "cosmos-europe", "--out", table))
    model = root / "model.smf.h5"
    ok(sm("-q", "train", table, "--out", model, "--cv", "site", "--no-search", "--trees", "5", "--threads", "2"))
    return SimpleNamespace(
        root=root, data=data, cfg=cfg, tiles=tiles, tile=tiles / "t000_000.h5", crns=crns, table=table, model=model
    )


def _config(world: SimpleNamespace, tmp_path: Path, old: str, new: str) -> Path:
    """The twin's run configuration with one edit, beside the original (its relative paths hold)."""
    text = world.cfg.read_text()
    assert old in text
    p = world.data / f"{tmp_path.name}.toml"
    p.write_text(text.replace(old, new, 1))
    return p


def _tile_copy(world: SimpleNamespace, path: Path, *, days: int, drop: str | None = None) -> Path:
    """A tile written with smengine.tiles.TileWriter from the world's tile: ``days`` first days
    (0: static layers only) and without the layer ``drop``."""
    from smengine.tiles import TileStore, TileWriter

    st = TileStore.open(world.tile)
    static = [n for n in st.static_names if n != drop]
    dynamic = [n for n in st.dynamic_names if n != drop] if days else []
    times = st.times[:days] if days else ()
    with TileWriter(path, st.grid, times, static, dynamic, units=st.units, sources=st.sources) as w:
        for n in static:
            w.write_static(n, np.asarray(st.static[st.static_names.index(n)]))
        for t in range(days):
            for n in dynamic:
                w.write_dynamic(t, n, np.asarray(st.dynamic[t, st.dynamic_names.index(n)]))
    return path


# ------------------------------------------------------------------------------ dates
def test_impossible_date_is_a_usage_error_naming_the_option(world, tmp_path):
    out = tmp_path / "p"
    res = sm("predict", world.model, world.tiles, "--out", out, "--start", "2020-13-45", "--end", "2020-12-31")
    fails(res, 2, "--start", "'2020-13-45' is not a date")


def test_ingest_impossible_end_date(world, tmp_path):
    res = sm("ingest", "--config", world.cfg, "--out", tmp_path / "t", "--start", "2019-03-01", "--end", "2019-02-30")
    fails(res, 2, "--end", "2019-02-30", "not a date")


@pytest.mark.parametrize("command", ["predict", "ingest"])
def test_end_before_start(world, tmp_path, command):
    args = ["predict", world.model, world.tiles] if command == "predict" else ["ingest", "--config", world.cfg]
    res = sm(*args, "--out", tmp_path / "o", "--start", "2019-03-05", "--end", "2019-03-01")
    fails(res, 2, "--end", "2019-03-01 is before --start 2019-03-05")
    assert not (tmp_path / "o").exists()


def test_ingest_only_start_without_a_configuration(world, tmp_path):
    res = sm(
        "ingest",
        world.data / "static" / "elevation.tif",
        "--bounds",
        *["4300000", "3080000", "4320000", "3100000"],
        "--out",
        tmp_path / "t",
        "--start",
        "2019-03-01",
    )
    fails(res, 2, "give both --start and --end")


def test_predict_start_after_every_tile_day(world, tmp_path):
    res = sm("predict", world.model, world.tiles, "--out", tmp_path / "p", "--start", "2025-01-01")
    fails(res, 2, "--start", "no day from 2025-01-01", "t000_000.h5 2019-03-01..2019-05-31")


# ------------------------------------------------------------------------------ tables
def test_empty_table_file(world, tmp_path):
    empty = tmp_path / "empty.nc"
    empty.write_bytes(b"")
    fails(sm("train", empty, "--out", tmp_path / "m.h5"), 1, "empty.nc", "empty")


def test_csv_given_where_a_netcdf_table_is_expected(world, tmp_path):
    fake = tmp_path / "table.nc"
    shutil.copy(world.data / "stations.csv", fake)
    fails(sm("train", fake, "--out", tmp_path / "m.h5"), 1, "table.nc", "not a NetCDF file")


def test_table_missing_the_target_column(world, tmp_path):
    import xarray as xr

    bad = tmp_path / "no_target.nc"
    with xr.open_dataset(world.table) as ds:
        ds.drop_vars("target").to_netcdf(bad)
    fails(sm("train", bad, "--out", tmp_path / "m.h5"), 1, "no_target.nc", "target", "missing")


def test_table_missing_a_feature_column(world, tmp_path):
    import xarray as xr

    bad = tmp_path / "no_twi.nc"
    with xr.open_dataset(world.table) as ds:
        ds.drop_vars("twi").to_netcdf(bad)
    fails(sm("train", bad, "--out", tmp_path / "m.h5"), 1, "no_twi.nc", "twi", "missing")


def test_table_csv_without_rows(world, tmp_path):
    from smengine.features import read_table

    bad = tmp_path / "header_only.csv"
    read_table(world.table).iloc[:0].to_csv(bad, index=False)
    fails(sm("train", bad, "--out", tmp_path / "m.h5"), 1, "header_only.csv", "no rows")


def test_table_with_no_row_left_after_filtering(world, tmp_path):
    from smengine.features import read_table, write_table

    tab = read_table(world.table)
    tab["target"] = np.nan
    bad = write_table(tab, tmp_path / "all_nan.nc")
    fails(sm("train", bad, "--out", tmp_path / "m.h5", "--cv", "site"), 1, "all_nan.nc", "no complete rows")


def test_train_feature_the_table_lacks(world, tmp_path):
    res = sm("train", world.table, "--out", tmp_path / "m.h5", "--features", "elevation,nope")
    fails(res, 2, "--features", "has no column nope")


def test_train_unknown_cv_scheme(world, tmp_path):
    fails(sm("train", world.table, "--out", tmp_path / "m.h5", "--cv", "sight"), 2, "--cv", "sight", "site")


# ------------------------------------------------------------------------------ models
def test_model_file_that_is_text(world, tmp_path):
    text = tmp_path / "model.smf.h5"
    text.write_text("not a model\n")
    res = sm("predict", text, world.tiles, "--out", tmp_path / "p")
    fails(res, 1, "model.smf.h5", "cannot read compiled forest")


def test_truncated_model_file(world, tmp_path):
    cut = tmp_path / "cut.smf.h5"
    cut.write_bytes(world.model.read_bytes()[:20000])
    fails(sm("predict", cut, world.tiles, "--out", tmp_path / "p"), 1, "cut.smf.h5", "truncated")


def test_tile_given_as_the_model(world, tmp_path):
    res = sm("predict", world.tile, world.tiles, "--out", tmp_path / "p")
    fails(res, 1, "t000_000.h5", "not a smengine compiled forest")


def test_model_needs_a_feature_the_tile_lacks(world, tmp_path):
    tile = _tile_copy(world, tmp_path / "lacking" / "t000_000.h5", days=5, drop="twi")
    res = sm("predict", world.model, tile.parent, "--out", tmp_path / "p")
    fails(res, 1, "lacking/t000_000.h5", "'twi'")


# ------------------------------------------------------------------------------ tiles
def test_tile_file_that_is_not_a_tile(world, tmp_path):
    junk = tmp_path / "t000_000.h5"
    junk.write_text("junk\n")
    fails(sm("predict", world.model, junk, "--out", tmp_path / "p"), 1, "t000_000.h5", "cannot open tile store")


def test_model_given_as_a_tile(world, tmp_path):
    fake = tmp_path / "t000_000.h5"
    shutil.copy(world.model, fake)
    fails(sm("predict", world.model, fake, "--out", tmp_path / "p"), 1, "t000_000.h5", "not a smengine tile store")


@pytest.mark.parametrize("command", ["predict", "table"])
def test_static_only_tile(world, tmp_path, command):
    tile = _tile_copy(world, tmp_path / "static" / "t000_000.h5", days=0)
    if command == "predict":
        res = sm("predict", world.model, tile, "--out", tmp_path / "p")
    else:
        res = sm("table", world.crns, tile, "--format", "cosmos-europe", "--out", tmp_path / "t.nc")
    fails(res, 1, "static/t000_000.h5", "no days (static layers only)")


@pytest.mark.parametrize("command", ["predict", "table"])
def test_tiles_folder_without_tiles(world, tmp_path, command):
    empty = tmp_path / "no_tiles"
    empty.mkdir()
    if command == "predict":
        res = sm("predict", world.model, empty, "--out", tmp_path / "p")
    else:
        res = sm("table", world.crns, empty, "--format", "cosmos-europe", "--out", tmp_path / "t.nc")
    fails(res, 1, "no tile files (*.h5) in", "no_tiles")


# ------------------------------------------------------------------------------ outputs
@pytest.mark.parametrize("command", ["predict", "train", "card", "table", "stations", "twin"])
def test_output_inside_a_read_only_folder(world, readonly_dir, tmp_path, command):
    target = readonly_dir / "out"
    option = "--out"
    if command == "predict":
        args = ["predict", world.model, world.tiles, "--out", target]
    elif command == "train":
        args = ["train", world.table, "--out", target, "--trees", "2"]
    elif command == "card":
        args = ["train", world.table, "--out", tmp_path / "m.h5", "--card", target, "--trees", "2"]
        option = "--card"
    elif command == "table":  # a training table is named .nc/.nc4 or .csv (C22)
        target = readonly_dir / "out.nc"
        args = ["table", world.crns, world.tiles, "--format", "cosmos-europe", "--out", target]
    elif command == "stations":
        args = ["stations", world.crns, "--format", "cosmos-europe", "--out", target]
    else:
        args = ["twin", "--quick", "--out", target]
    line = fails(sm(*args), 1, f"{option} {target}", "cannot write there")
    assert "Read-only file system" in line or "Permission denied" in line
    assert not (tmp_path / "m.h5").exists()  # refused before training


def test_output_folder_below_an_existing_file(world, tmp_path):
    res = sm("train", world.table, "--out", world.table / "m.h5", "--trees", "2")
    fails(res, 1, "--out", "cannot write there", f"{world.table} is a file, not a folder")


def test_output_folder_that_is_an_existing_file(world, tmp_path):
    res = sm("predict", world.model, world.tiles, "--out", world.table)
    fails(res, 2, "--out", "table.nc", "is a file")


def test_run_output_dir_that_is_a_file(world, tmp_path):
    cfg = _config(world, tmp_path, 'dir = "run"', 'dir = "stations.csv"')
    fails(sm("run", cfg, "--steps", "ingest"), 1, "stations.csv", "is a file, not a folder", "[output] dir")


def test_tilde_in_paths_is_the_home_folder(world, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(world.model, home / "model.smf.h5")
    env = {**os.environ, "HOME": str(home)}
    res = sm(
        "-q",
        "predict",
        "~/model.smf.h5",
        world.tiles,
        "--out",
        "~/product",
        "--start",
        "2019-03-01",
        "--end",
        "2019-03-02",
        "--threads",
        "2",
        env=env,
        cwd=tmp_path,
    )
    ok(res)
    assert list((home / "product").rglob("*.nc")) and not (tmp_path / "~").exists()


# ------------------------------------------------------------------------------ stations
def test_unknown_station_format(world):
    fails(sm("stations", world.crns, "--format", "bogus"), 2, "--format", "'bogus' is not one of")


def test_empty_station_folder(world, tmp_path):
    empty = tmp_path / "stations"
    empty.mkdir()
    fails(sm("stations", empty), 1, str(empty), "cannot tell the station format", "--format")
    fails(sm("stations", empty, "--format", "cosmos-europe"), 1, str(empty), "General_information")


def test_one_station_file_of_a_network_folder(world):
    one = world.crns / "processed_crns_data_and_diagnostics_rev1" / "TWC001.csv"
    fails(sm("stations", one), 1, "TWC001.csv", "format 'cosmos-europe'", "guessed")


def test_min_hours_outside_a_day(world):
    fails(sm("stations", world.crns, "--min-hours", "30"), 2, "--min-hours", "30")


# ------------------------------------------------------------------------------ run configuration
@pytest.mark.parametrize(
    ("old", "new", "words"),
    [
        ("trees = 100", "trees = 100\ntreez = 3", ["[model]", "unknown key", "treez"]),
        ('start = "2019-01-01"', 'start = "2019-13-45"', ["[period] start", "2019-13-45", "not a date"]),
        ('end = "2019-12-31"', 'end = "2018-12-31"', ["[period]", "end 2018-12-31 is before start 2019-01-01"]),
        ("[domain]", "[domian]", ["unknown key", "domian"]),
        ("[model]", "[model", ["not valid TOML", "line"]),
        ("trees = 100", "trees = 0", ["[model] trees", ">= 1", "got 0"]),
        ('format = "cosmos-europe"', 'format = "cosmos"', ["[stations] format", "'cosmos'", "cosmos-europe"]),
        ("bounds = [4300000, 3080000, 4320000, 3100000]", "bounds = [4300000, 3080000]", ["[domain]", "4 numbers"]),
    ],
    ids=["unknown-key", "bad-date", "end-before", "unknown-section", "toml-syntax", "trees-0", "format", "bounds"],
)
def test_run_configuration_mistakes(world, tmp_path, old, new, words):
    cfg = _config(world, tmp_path, old, new)
    fails(sm("run", cfg, "--steps", "ingest"), 1, cfg.name, *words)


def test_run_configuration_without_a_needed_section(world, tmp_path):
    text = world.cfg.read_text()
    cfg = world.data / f"{tmp_path.name}.toml"
    cfg.write_text(text[: text.index("[stations]")] + text[text.index("[features]") :])
    res = sm("run", cfg, "--steps", "table,train")
    fails(res, 1, cfg.name, "no [stations] with a path")


def test_run_unknown_step(world):
    fails(sm("run", world.cfg, "--steps", "ingest,trian"), 2, "--steps", "trian", "predict")


# ------------------------------------------------------------------------------ ingest
def test_ingest_glob_matching_nothing(world, tmp_path):
    res = sm("ingest", "s1=" + str(world.data / "nothere" / "*.tif"), "--config", world.cfg, "--out", tmp_path / "t")
    fails(res, 1, "nothere/*.tif", "matches no file")


def test_ingest_missing_file(world, tmp_path):
    res = sm("ingest", world.data / "nothere.tif", "--config", world.cfg, "--out", tmp_path / "t")
    fails(res, 2, "SOURCES", "no such file", "nothere.tif")


def test_ingest_source_with_unknown_units(world, tmp_path):
    import xarray as xr

    src = tmp_path / "rain.nc"
    with xr.open_dataset(world.data / "forcing" / "precipitation.nc") as ds:
        ds = ds.load()
    ds["precipitation"].attrs["units"] = "furlongs"
    ds.to_netcdf(src)
    res = sm("ingest", src, "--config", world.cfg, "--out", tmp_path / "t")
    fails(res, 1, "rain.nc", "'precipitation'", "unknown units 'furlongs'")


@pytest.mark.parametrize(
    ("bounds", "words"),
    [
        (["--bounds", "4320000", "3080000", "4300000", "3100000"], ["empty bounds", "xmax > xmin"]),
        (["--lonlat-bounds", "200", "0", "10", "10"], ["longitudes", "[-180, 180]"]),
        (["--bounds", "4300000", "3080000", "inf", "3100000"], ["finite"]),
    ],
    ids=["reversed", "longitude-200", "infinite"],
)
def test_ingest_impossible_bounds(world, tmp_path, bounds, words):
    res = sm("ingest", world.data / "static" / "elevation.tif", *bounds, "--out", tmp_path / "t")
    fails(res, 1, *words)


# ------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("value", ["0", "-2"])
@pytest.mark.parametrize("command", ["predict", "train"])
def test_threads_below_one(world, tmp_path, command, value):
    if command == "predict":
        args = ["predict", world.model, world.tiles, "--out", tmp_path / "p"]
    else:
        args = ["train", world.table, "--out", tmp_path / "m.h5"]
    fails(sm(*args, "--threads", value), 2, "--threads", f"{value} is not in the range x>=1")


def test_zero_trees(world, tmp_path):
    fails(sm("train", world.table, "--out", tmp_path / "m.h5", "--trees", "0"), 2, "--trees", "0")


def test_predict_zero_file_days(world, tmp_path):
    res = sm("predict", world.model, world.tiles, "--out", tmp_path / "p", "--file-days", "0")
    fails(res, 2, "--file-days", "0")


def test_table_swi_times_not_numbers(world, tmp_path):
    res = sm("table", world.crns, world.tiles, "--out", tmp_path / "t.nc", "--swi-T", "five,ten")
    fails(res, 2, "--swi-T", "five,ten")


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["--theta", "1.5"], 1, ["theta should be inside (0, 1)", "got 1.5"]),
        (["--theta", "0"], 1, ["theta", "got 0"]),
        (["--pressure", "-1000"], 1, ["pressure should be finite and > 0", "-1000"]),
        (["--bulk-density", "0"], 1, ["bulk_density", "> 0"]),
        (["--humidity", "-5"], 1, ["humidity", ">= 0", "-5"]),
        (["--theta", "nan"], 2, ["--theta", "nan is not a finite number"]),
        (["--pressure", "inf"], 2, ["--pressure", "inf is not a finite number"]),
        (["--veg-height", "tall"], 2, ["--veg-height", "'tall' is not a valid float"]),
    ],
    ids=["theta-1.5", "theta-0", "pressure-negative", "bulk-density-0", "humidity-negative", "nan", "inf", "text"],
)
def test_footprint_physically_invalid(args, code, words):
    fails(sm("footprint", *args), code, *words)
