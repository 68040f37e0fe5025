"""The README's walk-through, run as a user would: its bash blocks, in a fresh folder, through
the installed ``smengine`` command, and the product opened by a fresh interpreter.

The blocks are the ones after ``<!-- walkthrough: NAME -->`` in README.md; editing the
README edits this test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- walkthrough: (\w+) -->\s*```bash\n(.*?)```", re.S)


def walkthrough() -> dict[str, str]:
    return dict(BLOCK.findall(README.read_text()))


def _bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_readme_has_the_walkthrough() -> None:
    blocks = walkthrough()
    assert set(blocks) == {"steps", "run"}
    for cmd in ("smengine twin", "smengine ingest", "smengine table", "smengine train", "smengine predict"):
        assert cmd in blocks["steps"], cmd
    assert blocks["run"].count("smengine run mydata/smengine.toml") == 2


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    cwd = tmp_path_factory.mktemp("readme")
    return cwd, _bash(walkthrough()["steps"], cwd)


def test_walkthrough_steps(walked: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, r = walked
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    # the tour's defaults: carried SWI, no raw satellite layers; the cloud-gapped LST is loud
    assert re.search(r"warning: train: \d+ of \d+ rows \(2\d%\) .*worst features: lst 2\d%", r.stderr), r.stderr[-3000:]
    assert re.search(r"warning: run into product: .* pixel-days \(2\d%\) have no soil moisture", r.stderr)
    table = _python(
        """
        from smengine.features import read_table
        t = read_table("table.nc")
        print(t.attrs["units"]["elevation"], t.attrs["units"]["swi5c30_s1_sm"], "s1_sm" in t.attrs["features"], len(t))
        """,
        cwd,
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.split()[:3] == ["m", "m3", "m-3"] and table.stdout.split()[3] == "False"
    assert (cwd / "stations.csv").stat().st_size > 0 and "# Model card" in (cwd / "model_card.md").read_text()
    files = sorted((cwd / "product").glob("*/*.nc"))
    assert len(files) == 12  # one tile, 365 days in files of 32
    # a fresh interpreter that never imports smengine opens the product and finds its CRS
    opened = _python(
        """
        import xarray as xr, rioxarray
        ds = xr.open_mfdataset("product/*/*.nc")
        print(ds.rio.crs.to_epsg(), ds.sizes["time"], float(ds["sm"].notnull().mean()))
        """,
        cwd,
    )
    assert opened.returncode == 0, opened.stderr
    epsg, days, valid = opened.stdout.split()
    assert (epsg, days) == ("3035", "365") and 0.6 < float(valid) < 0.9


def test_walkthrough_run_config_resumes_and_redoes(walked: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    cwd, steps = walked
    assert steps.returncode == 0
    r = _bash(walkthrough()["run"], cwd)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    first, second = r.stdout.split("ingest:")[1:]
    for step in ("table", "train", "predict"):
        assert f"{step}: done" in first and f"{step}: skipped" in second, r.stdout
    assert "warning:" not in r.stderr, r.stderr  # the run configuration leaves the gappy LST out
    valid = float(re.search(r"; ([\d.]+)% of the pixel-days predicted have a value", first).group(1))  # type: ignore[union-attr]
    assert valid > 99.0
    assert "nothing new to predict" in second
    out = cwd / "mydata" / "run"
    rec = json.loads((out / "run.json").read_text())
    assert set(rec) == {"table", "train", "predict"}
    # another model: train is redone and the product rewritten with it, not kept from the old one
    cfg = cwd / "mydata" / "smengine.toml"
    cfg.write_text(cfg.read_text().replace("trees = 100", "trees = 20"))
    r = _bash("smengine run mydata/smengine.toml --steps train,predict", cwd)
    assert r.returncode == 0 and "train: done" in r.stdout and "predict: done" in r.stdout, r.stdout + r.stderr
    check = _python(
        """
        import json, glob, xarray as xr
        from smengine.model import CompiledForest
        h = CompiledForest.load("mydata/run/model.smf.h5").content_hash
        for f in sorted(glob.glob("mydata/run/product/*/*.nc")):
            with xr.open_dataset(f) as ds:
                assert json.loads(ds.attrs["smengine_config"])["engine"]["forest_hash"] == h, f
        print(CompiledForest.load("mydata/run/model.smf.h5").n_trees)
        """,
        cwd,
    )
    assert check.returncode == 0 and check.stdout.strip() == "20", check.stderr
    np.testing.assert_equal(len(list((out / "product").glob("*/*.nc"))), 12)


# --------------------------------------------------------------------------------------
# "Your own CRNS network": the README's station table, file layout and one command
# --------------------------------------------------------------------------------------
NETWORK = re.compile(r"<!-- network -->\s*```bash\n(.*?)```", re.S)
SITES = re.compile(r"`sites\.csv`:\s*```\n(.*?)```", re.S)
FIELDS = re.compile(r"`fields\.csv`[^\n]*\n\s*```\n(.*?)\n", re.S)


def _fields(sites: pd.DataFrame, header: list[str]) -> pd.DataFrame:
    """Three years of hourly corrected counts in the README's layout, on a daylight-saving local
    clock, from a known θ: rain and irrigation wet the soil, a canopy (BWE campaigns) lowers the
    counts, winter days freeze."""
    from smengine import neutrons as nt

    rng = np.random.default_rng(11)
    utc = pd.date_range("2021-05-01 05:00", "2024-04-30 04:00", freq="h", tz="UTC")
    local = utc.tz_convert("America/Chicago").tz_localize(None)
    n_days = len(utc) // 24 + 1
    day = (utc - utc[0]).days.to_numpy()
    doy = utc.day_of_year.to_numpy()
    frames = []
    for k, m in sites.reset_index(drop=True).iterrows():
        rain = np.where(rng.random(n_days) < 0.3, rng.exponential(6.0, n_days), 0.0)
        summer = (pd.date_range(utc[0].normalize(), periods=n_days, freq="D").day_of_year.to_numpy() - 150) % 366 < 100
        irr = np.where((np.arange(n_days) % 7 == 0) & summer & (k == 0), 20.0, 0.0)  # F1: a centre pivot in summer
        theta, s = np.empty(n_days), 0.2
        for t in range(n_days):
            s = 0.08 + (s - 0.08) * np.exp(-1 / 9) + 0.005 * (rain[t] + irr[t])
            theta[t] = min(s, 0.42)
        bwe_true = np.clip(4.0 * np.sin((doy - 120) / 150 * np.pi), 0, None)  # a summer crop
        n_soil = nt.theta_to_counts(theta[day], m["n0"], m["bulk_density"], m["lattice_water"], m["soc"])
        counts = n_soil / nt.correction_bwe(bwe_true) + rng.normal(0, 5, len(utc))
        bwe = np.full(len(utc), np.nan)
        campaign = (np.arange(len(utc)) % (24 * 14) == 12) | (np.arange(len(utc)) == len(utc) - 1)
        campaign[0] = True
        bwe[campaign] = bwe_true[campaign]
        temp = 10 - 14 * np.cos(2 * np.pi * (doy - 15) / 365.25) + rng.normal(0, 2, len(utc))
        cols = {
            "Timestamp": local.strftime("%m/%d/%Y %H:%M"),
            "site": m["station"],
            "N1": counts,
            "rain_mm": np.repeat(rain / 24, 24)[: len(utc)],
            "air_temperature": temp,
            "irrigation": np.repeat(irr / 24, 24)[: len(utc)],
            "bwe": bwe,
        }
        frames.append(pd.DataFrame({c: cols[c] for c in header}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.data
def test_readme_network_command_runs_on_files_in_that_layout(tmp_path: Path) -> None:
    text = README.read_text()
    command = NETWORK.search(text).group(1)  # type: ignore[union-attr]
    (tmp_path / "sites.csv").write_text(SITES.search(text).group(1))  # type: ignore[union-attr]
    header = FIELDS.search(text).group(1).split(",")  # type: ignore[union-attr]
    sites = pd.read_csv(tmp_path / "sites.csv")
    _fields(sites, header).to_csv(tmp_path / "fields.csv", index=False, float_format="%.6g")
    r = _bash(command, tmp_path)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    out = tmp_path / "fields-experiment"
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"temporal", "leave-site-out", "leave-site-out-spatiotemporal", "knndm"}
    report = (out / "report.md").read_text()
    # the file has an irrigation column for every field (zeros where none): each station's own series
    assert "Irrigation (a water input beside precipitation): F1 station; F2 station; F3 station." in report
    for name in summary:
        assert summary[name]["forest_beats"]["mean"], summary[name]["medians"]
        assert summary[name]["medians"]["linear"]["ubRMSE"] < 0.05, summary[name]["medians"]
    assert "irrigation_ef" in " ".join(summary["leave-site-out"]["features"])
    # the counts went through the biomass correction and the frost mask: θ is the truth on the kept days
    check = _python(
        """
        import warnings
        from smengine.stations import read_csv
        ss = read_csv("fields.csv", metadata="sites.csv", time_column="Timestamp", timezone="America/Chicago",
                      columns={"site": "station", "N1": "counts_corrected", "rain_mm": "precipitation"})
        st = ss["F2"]
        print(any("biomass correction" in p for p in st.processing), any("air temperature" in p for p in st.processing))
        d = ss.daily()
        print(len(d[d.station == "F2"]), int((st.data["flag"] & 4 != 0).sum() // 24))
        """,
        tmp_path,
    )
    assert check.returncode == 0, check.stderr
    flags, counts = check.stdout.split("\n")[:2]
    assert flags == "True True"
    kept, frozen = (int(x) for x in counts.split())
    assert frozen > 30 and kept > 700
