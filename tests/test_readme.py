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
        print(t.attrs["units"]["elevation"], t.attrs["units"]["swi5c_s1_sm"], "s1_sm" in t.attrs["features"], len(t))
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
