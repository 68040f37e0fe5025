"""`smengine stations` takes a network the way it comes: its time column, local time zone, column names
and a station filter (csv format), as a user would call it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smengine", *args], capture_output=True, text=True, timeout=300)


def test_stations_cli_reads_a_network_in_its_own_layout(tmp_path: Path) -> None:
    n = 96
    local = pd.date_range("2021-06-01 00:00", periods=n, freq="h")  # naive local times, UTC-5 (CDT)
    df = pd.DataFrame(
        {
            "Timestamp": np.tile(local.strftime("%Y-%m-%d %H:%M"), 2),
            "Site": np.repeat(["KS1", "KS2"], n),
            "N1_corr": np.repeat([1500.0, 1400.0], n),
        }
    )
    df.to_csv(tmp_path / "net.csv", index=False)
    pd.DataFrame(
        {"station": ["KS1", "KS2"], "lat": [39.1, 39.2], "lon": [-96.6, -96.7], "n0": 2000.0, "bulk_density": 1.3}
    ).to_csv(tmp_path / "meta.csv", index=False)
    out = tmp_path / "daily.csv"
    args = ["stations", str(tmp_path / "net.csv"), "--format", "csv", "--metadata", str(tmp_path / "meta.csv")]
    args += ["--time-column", "Timestamp", "--timezone", "America/Chicago", "--column", "Site=station"]
    args += ["--column", "N1_corr=counts_corrected", "--station", "KS2", "--min-hours", "20", "--out", str(out)]
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    daily = pd.read_csv(out)
    assert set(daily["station"]) == {"KS2"}
    # local midnight is 05:00 UTC: the first UTC day has 19 hours (< 20), so it is not a day
    assert daily["date"].iloc[0] == "2021-06-02" and len(daily) == 3
    assert daily["sm"].between(0.05, 0.6).all()
    bad = _cli("stations", str(tmp_path / "net.csv"), "--format", "csv", "--column", "Site")
    assert bad.returncode == 2 and "should be FILE=NAME" in bad.stderr and "Traceback" not in bad.stderr
