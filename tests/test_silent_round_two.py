"""Nothing silent, round two (issue 32): the user's own files, met as a user meets them — a config
with a non-UTF-8 byte, an output name whose suffix promises another format, a training table
with no station-day — each an error naming the file and the cause, in Python and at the command
line (a fresh ``python -m smengine``), never a traceback or a file under a misleading name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from smengine.config import load_config
from smengine.errors import ConfigError
from smengine.features import TABLE_SUFFIXES, read_table, write_table


def sm(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smengine", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)  # fmt: skip


def test_a_config_with_a_latin1_byte_is_an_error_naming_file_byte_and_offset(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_bytes('[project]\nname = "Fürstensee"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"run.toml: not UTF-8 text \(byte 0xfc on line 2, offset 19\)"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="a folder, not a configuration file"):
        load_config(tmp_path)
    res = sm("run", cfg)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("Error: ") and "not UTF-8 text" in res.stderr


def test_a_table_is_written_only_under_a_name_that_says_its_format(tmp_path: Path) -> None:
    t = pd.DataFrame({"station": ["A"], "date": pd.to_datetime(["2020-01-01"]), "target": [0.2], "f": [1.0]})
    t.attrs.update(features=["f"], units={"f": "1"})
    for bad in ("x.parquet", "x.csv", "x"):
        with pytest.raises(ConfigError, match="a training table is written as NetCDF"):
            write_table(t, tmp_path / bad)
        assert not (tmp_path / bad).exists()
    for good in TABLE_SUFFIXES:
        back = read_table(write_table(t, tmp_path / f"t{good}"))
        assert back["target"].tolist() == [0.2]
    res = sm("table", tmp_path, tmp_path, "--out", tmp_path / "t.parquet")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "--out" in res.stderr and "not .parquet" in res.stderr
    assert not (tmp_path / "t.parquet").exists()


def test_a_model_that_predicts_one_value_everywhere_is_refused() -> None:
    """Two rows of one station: no split is possible; train says so instead of a constant map."""
    import numpy as np

    from smengine.errors import DataError
    from smengine.model import train

    t = pd.DataFrame({"station": ["A", "A"], "date": pd.to_datetime(["2020-01-01", "2020-01-02"]),
                      "target": [0.2, 0.3], "f": [1.0, 2.0]})  # fmt: skip
    with pytest.raises(DataError, match=r"predicts one value \(0\.\d+\) for every training row.*2 station-day\(s\) "
                       r"from 1 station\(s\)"):  # fmt: skip
        train(t, ["f"], "target", cv=(), search=False, n_estimators=5, progress=False)
    # enough rows to split: trains
    rng = np.random.default_rng(0)
    big = pd.DataFrame({"station": ["A"] * 60, "date": pd.date_range("2020-01-01", periods=60), "f": rng.random(60)})
    big["target"] = 0.1 + 0.2 * big["f"]
    assert np.ptp(train(big, ["f"], "target", cv=(), search=False, n_estimators=5, progress=False).predict(big)) > 0


def test_models_that_are_only_scored_skip_the_applicability_reference() -> None:
    """train(applicability=False) (the station experiments' folds) builds no AOA reference; the default does."""
    import numpy as np

    from smengine.model import train

    rng = np.random.default_rng(0)
    days = np.tile(pd.date_range("2020-01-01", periods=40), 3)
    t = pd.DataFrame({"station": np.repeat(["A", "B", "C"], 40), "date": days, "f": rng.random(120)})
    t["target"] = 0.1 + 0.2 * t["f"]
    kw = {"cv": (), "search": False, "n_estimators": 5, "progress": False}
    assert train(t, ["f"], "target", **kw).applicability is not None
    bare = train(t, ["f"], "target", applicability=False, **kw)
    assert bare.applicability is None and np.ptp(bare.predict(t)) > 0
