"""The ``smengine`` command line through click's CliRunner and as an installed script."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

import smengine
from smengine import footprint as fp
from smengine.cli import cli


def test_version():
    res = CliRunner().invoke(cli, ["--version"])
    assert res.exit_code == 0
    assert smengine.__version__ in res.output


def test_footprint_command_prints_physics():
    res = CliRunner().invoke(cli, ["footprint", "--humidity", "5", "--theta", "0.1"])
    assert res.exit_code == 0, res.output
    assert "R86 = 208.2 m" in res.output
    assert "D86 = 34.0 cm at 1 m" in res.output


def test_footprint_command_reports_bad_input_without_traceback():
    res = CliRunner().invoke(cli, ["footprint", "--theta", "1.5"])
    assert res.exit_code != 0
    assert "theta should be inside (0, 1)" in res.output
    assert "Traceback" not in res.output


def test_demo_writes_report_tables_kernel_and_plot(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(cli, ["-q", "demo", "--quick", "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = (out / "report.md").read_text()
    assert "| 0.1 | 222 | 208 | 196 | 184 | 174 | 165 |" in report  # the R86 table row
    kernel = np.load(out / "kernel.npy")
    assert kernel.sum() == pytest.approx(1.0)
    assert (out / "footprint.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "footprint_tables.csv").read_text().splitlines()
    r86_01 = [float(v) for v in rows[3].split(",")[2:]]
    np.testing.assert_allclose(r86_01, np.round(fp.footprint_radius([0, 5, 10, 15, 20, 25], 0.1), 1))
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def test_installed_console_script():
    exe = shutil.which("smengine")
    if exe is None:
        pytest.skip("smengine console script not on PATH (package not installed)")
    done = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert smengine.__version__ in done.stdout


@pytest.mark.data
def test_ingest_command_writes_tiles(data_dir, tmp_path):
    from smengine.tiles import TileStore

    nc = data_dir / "gridded" / "esa_cci_sm_v05.2" / "ESACCI-SOILMOISTURE-L3S-SSMV-COMBINED-20160607000000-fv05.2.nc"
    out = tmp_path / "tiles"
    res = CliRunner().invoke(cli, ["-q", "ingest", str(nc), "--out", str(out),
                                   "--lonlat-bounds", "6", "47", "7", "48", "--tile-size", "50"])  # fmt: skip
    assert res.exit_code == 0, res.output
    tiles = sorted(out.glob("*.h5"))
    assert tiles and "tile(s)" in res.output
    store = TileStore.open(tiles[0])
    assert store.coarse_names == ["esa_cci_sm"] and str(store.times[0]) == "2016-06-07"
    bad = CliRunner().invoke(cli, ["ingest", str(nc), "--out", str(out)])
    assert bad.exit_code != 0 and "--bounds" in bad.output


def test_stations_command_writes_daily_table(tmp_path):
    import pandas as pd

    idx = pd.date_range("2020-06-01", periods=72, freq="1h", tz="UTC")
    src = tmp_path / "s.csv"
    pd.DataFrame({"time": idx.strftime("%Y-%m-%dT%H:%MZ"), "station": "A", "sm": 0.2}).to_csv(src, index=False)
    meta = tmp_path / "m.csv"
    pd.DataFrame({"station": ["A"], "lat": [50.0], "lon": [6.0]}).to_csv(meta, index=False)
    out = tmp_path / "daily.csv"
    res = CliRunner().invoke(cli, ["stations", str(src), "--format", "csv", "--metadata", str(meta), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 station(s), 3 station-days" in res.output
    d = pd.read_csv(out)
    assert d["sm"].tolist() == [0.2, 0.2, 0.2] and d["n_hours"].tolist() == [24, 24, 24]
    bad = CliRunner().invoke(cli, ["stations", str(src), "--format", "csv"])
    assert bad.exit_code != 0 and "A: no metadata" in bad.output


@pytest.mark.data
def test_stations_command_roaring_fork(data_dir, tmp_path):
    res = CliRunner().invoke(cli, ["stations", str(data_dir / "crns" / "roaring_fork_co_usgs"), "--format", "roaring-fork"])
    assert res.exit_code == 0, res.output
    assert "15 station(s)" in res.output and "R7 " in res.output
