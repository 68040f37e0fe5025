"""The ``smengine`` command line through click's CliRunner and as an installed script."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
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


def test_demo_runs_the_twin_chain_and_shows_what_issue_7_asks(tmp_path):
    """`smengine demo --quick`: twin → ingest → train → product → evaluation → pseudoproxy → report."""
    import json

    from smengine.product import open_product

    out = tmp_path / "demo"
    res = CliRunner().invoke(cli, ["-q", "demo", "--quick", "--out", str(out), "--threads", "2"])
    assert res.exit_code == 0, res.output
    report = (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    truth = summary["truth"]
    sub = truth["emulator, sub-pixel scaling mean_j f(x_j)"]["RMSE"]
    # must show: sub-pixel scaling beats pixel-mean covariates, and the product beats SMAP-like and ERA5-like
    assert sub < truth["emulator on pixel-mean covariates f(mean_j x_j)"]["RMSE"]
    assert sub < truth["SMAP-like surface SM (9 km)"]["RMSE"] and sub < truth["ERA5-Land-like θ_eq (0.1°)"]["RMSE"]
    # claims against the truth come from the intervals (sub-pixel scaling's gain is small but clear)
    assert "By the intervals below, the emulator beats pixel-mean covariates, beats SMAP-like" in report
    assert summary["site_median"]["R"] > 0.6
    assert 0 < summary["pseudoproxy"]["inside_fraction"] <= 1 and summary["pseudoproxy"]["n_offsite"] > 0
    ds = open_product(out / "product" / "t000_000" / "t000_000_20190101_20191231.nc")
    assert ds["sm"].shape == (365, 20, 20) and ds.attrs["Conventions"] == "CF-1.8"
    # the uncertainty layer against the truth: coverage, PIT, calibration factor
    assert "Is the uncertainty layer calibrated?" in report
    # the depth each value represents: D86 per pixel-day from its θ and the twin's porosity
    fp_sum = json.loads((out / "summary.json").read_text())["footprint"]
    assert 10 < fp_sum["d86"]["median"] < 40 and fp_sum["inputs"]["bulk_density"] == "(1 - porosity) * 2.65"
    assert "## What depth the value represents" in report and "top D86 = " in report
    # differences that carry a claim have block-bootstrap intervals
    diffs = json.loads((out / "summary.json").read_text())["differences"]
    assert set(diffs) == {"pixel-mean covariates", "SMAP-like", "S1-like", "ERA5-Land-like"}
    for d in diffs.values():
        assert d["ci_low"] <= d["difference"] <= d["ci_high"] and d["n_blocks"] > 10
    assert diffs["SMAP-like"]["ci_high"] < 0  # the emulator beats the 9-km surface product, clearly
    assert "95 % block-bootstrap intervals" in report
    unc = json.loads((out / "summary.json").read_text())["uncertainty"]
    assert 0.5 < unc["coverage_1"] < 0.9 and 0.85 < unc["coverage_2"] <= 1.0 and 0.5 < unc["calibration_factor"] < 2.0
    assert all(0 <= v < 600 for v in summary["timings_s"].values()), summary["timings_s"]  # durations, s
    # a report a reviewer can sign off: terms defined, the twin described, pooled vs per-pixel labelled
    for head in ("## The twin world", "## Terms", "## Where an input product beats the emulator"):
        assert head in report, head
    for term in ("**θ_eq**", "**mean_j f(x_j)**", "**f(mean_j x_j)**", "**DI**", "**AOA**", "**anomaly R**"):
        assert term in report, term
    assert "Pooled over all pixel-days" in report and "Per pixel (each pixel's time series" in report
    # the product's own area of applicability, from the engine's di and flag bit
    app = summary["applicability"]
    with open_product(out / "product" / "t000_000" / "t000_000_20190101_20191231.nc") as p:
        di, flag = p["di"].values, p["quality_flag"].values
    assert app["outside_fraction"] == pytest.approx(float(((flag & 8) != 0)[np.isfinite(di)].mean()))
    assert (((flag & 8) != 0) == (di > app["threshold"])).all()
    assert "## Where the emulator extrapolates" in report
    # the local point density beside the DI: none outside the AOA by construction, some inside
    lp = app["lpd"]
    assert lp["inside"]["median"] > 0 and lp["train"]["avrg_lpd"] > 0
    if lp["outside"]["n"]:
        assert lp["outside"]["zero_fraction"] == 1.0  # DI > threshold: no training row within it
    assert "local point density" in report
    per_px = summary["truth_per_pixel"]
    assert set(per_px) == set(truth) and all(0 < v["R"] <= 1 for v in per_px.values())
    # a product is named as beating the emulator at the stations exactly when a paired interval says so
    beats = report.split("## Where an input product beats the emulator")[1].split("\n## ")[0]
    comps = summary["station_comparisons"]
    assert {(c["product"], c["metric"]) for c in comps} == {
        (p, m) for p in ("S1-like", "SMAP-like", "ERA5-like θ_eq") for m in ("R", "ubRMSE")
    }
    for prod in {c["product"] for c in comps}:
        lost = any(c["verdict"] == "loses" for c in comps if c["product"] == prod)
        assert (f"- **{prod}**" in beats) == lost, prod
        for c in comps:
            assert sum(c["counts"].values()) == c["n_stations"] == 25
    assert any(c["verdict"] == "beats" for c in comps if c["product"] == "SMAP-like")
    # which CV estimate to believe: random k-fold is optimistic, kNNDM's folds are the most like the map's use
    cvs = pd.DataFrame(summary["cv_study"])
    assert set(cvs["network"]) == {"all", "clustered"} and len(cvs) == 6
    rnd = cvs[cvs["scheme"] == "random k-fold"]
    assert (rnd["reading"] == "optimistic").all() and (rnd["gap_hi"] < 0).all()
    cl = cvs[cvs["network"] == "clustered"].set_index("scheme")
    assert cl.loc["kNNDM", "W_km"] < cl.loc["grouped by station", "W_km"] < cl.loc["random k-fold", "W_km"]
    assert cvs.groupby("network")["closest"].sum().eq(1).all()
    assert "## Which cross-validation estimate to believe" in report and "◀ closest" in report
    # the DI maps to an expected error that grows with it; outside the AOA it is only a floor
    de = summary["di_error"]
    fitted = [b["fitted"] for b in de["model"]["bins"]]
    assert fitted == sorted(fitted) and fitted[-1] > fitted[0]
    assert "## What the DI says about the error" in report
    pngs = ("map_day.png", "lso_scatter.png", "monthly_bias.png", "station_best.png", "pseudoproxy_skill.png")
    pngs = (*pngs, "cv_estimates.png")
    for png in (*pngs, "pit_histogram.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    # the footprint physics section of the earlier demo is kept
    fp_dir = out / "footprint"
    assert "| 0.1 | 222 | 208 | 196 | 184 | 174 | 165 |" in (fp_dir / "report.md").read_text()  # the R86 table row
    kernel = np.load(fp_dir / "kernel.npy")
    assert kernel.sum() == pytest.approx(1.0)
    rows = (fp_dir / "footprint_tables.csv").read_text().splitlines()
    r86_01 = [float(v) for v in rows[3].split(",")[2:]]
    np.testing.assert_allclose(r86_01, np.round(fp.footprint_radius([0, 5, 10, 15, 20, 25], 0.1), 1))
    assert not list(out.rglob(".*tmp*")), "temporary files left behind"
    # a rerun uses the cached twin world and tiles
    res = CliRunner().invoke(cli, ["-q", "demo", "--quick", "--out", str(out), "--threads", "2"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "summary.json").read_text())["timings_s"]["twin world"] < 2.0


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
    res = CliRunner().invoke(
        cli, ["-q", "ingest", str(nc), "--out", str(out), "--lonlat-bounds", "6", "47", "7", "48", "--tile-size", "50"]
    )
    assert res.exit_code == 0, res.output
    tiles = sorted(out.glob("*.h5"))
    assert tiles and "tile(s)" in res.output
    store = TileStore.open(tiles[0])
    assert store.coarse_names == ["esa_cci_sm"] and str(store.times[0]) == "2016-06-07"
    bad = CliRunner().invoke(cli, ["ingest", str(nc), "--out", str(out)])
    assert bad.exit_code != 0 and "--bounds" in bad.output


def test_ingest_command_takes_a_shell_expanded_series_globs_and_names(data_dir, tmp_path):
    """The README's `smengine ingest ESACCI-*.nc`: the day files are one source; a quoted glob and
    NAME=PATTERN too; per-source options by name; a second source is added to existing tiles."""
    from smengine.tiles import TileStore

    cci = sorted((data_dir / "gridded" / "esa_cci_sm_v05.2").glob("ESACCI-*.nc"))
    c3s = sorted((data_dir / "gridded" / "c3s_sm" / "daily_combined_TCDR_v201801").glob("C3S-*.nc"))
    assert len(cci) == 2 and len(c3s) == 2
    box = ["--lonlat-bounds", "6", "47", "7", "48", "--tile-size", "50"]
    r = CliRunner().invoke(cli, ["-q", "ingest", *map(str, cci), "--out", str(tmp_path / "a"), *box])
    assert r.exit_code == 0 and "from 1 source(s)" in r.output, r.output
    st = TileStore.open(sorted((tmp_path / "a").glob("*.h5"))[0])
    assert st.coarse_names == ["esa_cci_sm"] and [str(t) for t in st.times] == ["2016-06-07", "2016-06-08"]
    # a quoted glob, named, kept coarse by name, with its units by name
    pattern = str(cci[0].parent / "ESACCI-*.nc")
    r = CliRunner().invoke(
        cli,
        [
            "-q",
            "ingest",
            f"cci={pattern}",
            "--storage",
            "cci=fine",
            "--units",
            "cci=m3 m-3",
            "--out",
            str(tmp_path / "b"),
            *box,
        ],
    )
    assert r.exit_code == 0 and "from 1 source(s)" in r.output, r.output
    st = TileStore.open(sorted((tmp_path / "b").glob("*.h5"))[0])
    assert st.dynamic_names == ["cci"] and st.units["cci"] == "m3 m-3" and st.times.size == 2
    # a second product into the same tiles: added beside the first, days extended (C3S is 2014)
    r = CliRunner().invoke(cli, ["-q", "ingest", *map(str, c3s), "--out", str(tmp_path / "a"), *box])
    assert r.exit_code == 0, r.output
    st = TileStore.open(sorted((tmp_path / "a").glob("*.h5"))[0])
    assert st.coarse_names == ["esa_cci_sm", "c3s_sm"] and st.times.size == 4
    # mistakes are one line, no traceback
    r = CliRunner().invoke(cli, ["ingest", str(tmp_path / "missing-*.nc"), "--out", str(tmp_path / "c"), *box])
    assert r.exit_code != 0 and "pattern matches no file" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["ingest", str(cci[0]), "--method", "cubic", "--out", str(tmp_path / "c"), *box])
    assert r.exit_code != 0 and "unknown resampling ['cubic']" in r.output
    r = CliRunner().invoke(
        cli, ["ingest", str(cci[0]), str(cci[1]), str(c3s[0]), "a=" + str(cci[1]), "--out", str(tmp_path / "c"), *box]
    )
    assert r.exit_code == 0, r.output  # the two CCI days group into one source beside 'a' and C3S
    r = CliRunner().invoke(
        cli, ["ingest", str(cci[0]), f"x={cci[1]}", f"x={c3s[0]}", "--out", str(tmp_path / "d"), *box]
    )
    assert r.exit_code != 0 and "share the feature name(s) ['x']" in r.output and "NAME=PATTERN" in r.output


def test_table_train_commands_carry_units(data_dir, tmp_path):
    """smengine table writes NetCDF with units; smengine train reads it and the card has them."""
    from smengine.features import read_table
    from smengine.model import CompiledForest
    from smengine.twin import make_world

    w = make_world(0, tmp_path / "twin", quick=True)
    from smengine.ingest import ingest

    ingest(w.sources(), w.grid, tmp_path / "tiles")
    r = CliRunner().invoke(
        cli,
        [
            "-q",
            "table",
            str(w.paths["crns"]),
            str(tmp_path / "tiles"),
            "--format",
            "cosmos-europe",
            "--kernel-quantum",
            "2",
            "0.02",
            "5",
            "--dynamic",
            "ndvi,precipitation",
            "--swi-T",
            "5,20",
            "--out",
            str(tmp_path / "t.nc"),
        ],
    )
    assert r.exit_code == 0, r.output
    t = read_table(tmp_path / "t.nc")
    assert t.attrs["units"]["swi20c30_s1_sm"] == "m3 m-3" and t.attrs["units"]["precipitation"] == "mm"
    assert (
        "25 station(s) x 14 features" in r.output
    )  # 6 static, 2 dynamic, 2 x 2 SWI, 2 calendar and t.attrs["features"][-2:] == ["doy_sin", "doy_cos"]
    r = CliRunner().invoke(
        cli,
        [
            "-q",
            "train",
            str(tmp_path / "t.nc"),
            "--out",
            str(tmp_path / "m.h5"),
            "--cv",
            "site",
            "--no-search",
            "--trees",
            "10",
            "--threads",
            "1",
        ],
    )
    assert r.exit_code == 0 and "warning" not in r.output, r.output
    card = CompiledForest.load(tmp_path / "m.h5").card
    assert {f["name"]: f["units"] for f in card.features}["swi5c30_s1_sm"] == "m3 m-3"
    # a CSV table has no units: train says so
    t.to_csv(tmp_path / "t.csv", index=False)
    r = CliRunner().invoke(
        cli,
        [
            "-q",
            "train",
            str(tmp_path / "t.csv"),
            "--out",
            str(tmp_path / "m2.h5"),
            "--cv",
            "site",
            "--no-search",
            "--trees",
            "10",
            "--threads",
            "1",
        ],
    )
    assert r.exit_code == 0 and "carries no feature units" in r.output, r.output


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
    res = CliRunner().invoke(
        cli, ["stations", str(data_dir / "crns" / "roaring_fork_co_usgs"), "--format", "roaring-fork"]
    )
    assert res.exit_code == 0, res.output
    assert "15 station(s)" in res.output and "R7 " in res.output


def test_dash_h_is_help_everywhere_and_shared_options_are_one():
    from smengine.cli import options

    assert set(cli.commands) >= {
        "footprint",
        "twin",
        "ingest",
        "stations",
        "table",
        "train",
        "predict",
        "run",
        "stations-experiment",
        "demo",
    }
    for name in cli.commands:
        res = CliRunner().invoke(cli, [name, "-h"])
        assert res.exit_code == 0 and f"Usage: cli {name}" in res.output, (name, res.output)
    # the shared options come from one registry: same help text wherever they appear
    helps = {}
    for cmd in cli.commands.values():
        for p in cmd.params:
            if p.name in ("threads", "seed"):
                helps.setdefault(p.name, set()).add(p.help)
    assert helps["threads"] == {options.threads(lambda: None).__click_params__[0].help}
    assert len(helps["seed"]) == 1
