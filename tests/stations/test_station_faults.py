"""Fault catalogue, stations: one bad station file excludes that station (counted, warned), not the
network; past max_excluded the read fails naming the stations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from smengine.errors import DataError, DataLossWarning
from smengine.stations import open_stations


@pytest.fixture
def network(data_dir: Path, tmp_path: Path) -> Path:
    src = data_dir / "crns" / "roaring_fork_co_usgs"
    dst = tmp_path / "rf"
    shutil.copytree(src, dst)
    return dst


def test_one_damaged_station_file_excludes_that_station_only(network):
    rel = network / "data_release_2024"
    whole = open_stations(network, "roaring-fork")
    (bad,) = rel.glob("C2_*_v1.csv")
    bad.write_bytes(bad.read_bytes()[:200] + b"\xff\xfe garbage \x00\x00")
    with pytest.warns(DataLossWarning, match=r"1 of \d+ station\(s\) excluded \(C2: "):
        ss = open_stations(network, "roaring-fork")
    assert set(ss) == set(whole) - {"C2"}
    assert "C2" in set(ss.exclusions["station"])


def test_most_of_the_network_unreadable_is_an_error(network):
    rel = network / "data_release_2024"
    files = sorted(rel.glob("*_v1.csv"))
    for f in files[: len(files) // 2 + 1]:
        f.write_text("not,a,station\n")
    with pytest.raises(DataError, match=r"station\(s\) excluded .*more than max_excluded=0.5"):
        open_stations(network, "roaring-fork")
    with pytest.warns(DataLossWarning):
        ss = open_stations(network, "roaring-fork", max_excluded=1.0)
    assert len(ss) == len(files) - (len(files) // 2 + 1)
