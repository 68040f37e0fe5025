"""Run configuration (TOML): parsing, clear errors naming the key, paths and globs."""

from __future__ import annotations

from pathlib import Path

import pytest

from smengine.config import RunConfig, expand_paths, load_config
from smengine.errors import ConfigError
from smengine.features import FeatureSpec
from smengine.grid import Grid

EXAMPLE = """
[domain]
bounds = [4300000, 3080000, 4320000, 3100000]
subpixel = 4

[period]
start = "2019-01-01"
end = "2019-03-31"

[[sources]]
name = "elevation"
path = "static/elevation.tif"
units = "m"

[[sources]]
name = "s1_sm"
path = "s1/s1_sm_*.tif"

[stations]
format = "cosmos-europe"
path = "crns"

[features]
dynamic = ["ndvi"]
swi_T = [5, 20]

[model]
trees = 50

[output]
dir = "out"
"""


def _files(root: Path) -> None:
    (root / "static").mkdir()
    (root / "static" / "elevation.tif").write_bytes(b"")
    (root / "s1").mkdir()
    for d in ("20190101", "20190104", "20190107"):
        (root / "s1" / f"s1_sm_{d}.tif").write_bytes(b"")


def test_example_parses_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    _files(tmp_path)
    (tmp_path / "run.toml").write_text(EXAMPLE)
    cfg = load_config(tmp_path / "run.toml")
    assert cfg.grid == Grid.from_bounds(4300000, 3080000, 4320000, 3100000, subpixel=4)
    assert (cfg.start, cfg.end) == ("2019-01-01", "2019-03-31")
    assert cfg.features == FeatureSpec(dynamic=("ndvi",), swi_T=(5, 20)) and cfg.features.swi_carry
    assert cfg.model == {"trees": 50, "cv": ["site"], "search": False, "seed": 0}
    assert cfg.out == tmp_path.resolve() / "out" and cfg.table_path == cfg.out / "table.nc"
    specs = cfg.source_specs()
    assert specs[0].paths() == [tmp_path.resolve() / "static" / "elevation.tif"] and specs[0].units == "m"
    assert [p.name for p in specs[1].paths()] == ["s1_sm_20190101.tif", "s1_sm_20190104.tif", "s1_sm_20190107.tif"]
    assert specs[1].name == "s1_sm"
    cfg.require("domain", "sources", "stations")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("[model]\ntrees = 50", "[model]\ntrees = 50\ntress = 3"), r"\[model\]: unknown key\(s\) \['tress'\]"),
        (("[output]", "[outptu]"), r"unknown key\(s\) \['outptu'\]"),
        (("bounds = [4300000, 3080000, 4320000, 3100000]", "bounds = [1, 2, 3]"), "bounds should be 4 numbers"),
        (("bounds = ", "lonlat_bounds = [5, 45, 6, 46]\nbounds = "), "exactly one of bounds"),
        (
            ('start = "2019-01-01"', 'start = "first of january"'),
            r"\[period\] start = 'first of january' is not a date",
        ),
        (('name = "s1_sm"\n', ""), r"\[\[sources\]\] #2: 'name' and 'path' are required"),
        (('units = "m"', 'units = "m"\nunit = "m"'), r"\[\[sources\]\] #1: unknown key\(s\) \['unit'\]"),
        (("swi_T = [5, 20]", "swi_T = [5, 20]\nswiT = 3"), r"\[features\]: .*swiT"),
        (("swi_T = [5, 20]", "swi_T = [0]"), "swi_T should be positive"),
        (('name = "s1_sm"', 'name = "elevation"'), "two sources share a name"),
        (("[domain]", "[domain"), "not valid TOML"),
        (('path = "crns"', 'path = "crns"\ntimezone = 5'), r"\[stations\] timezone should be a non-empty string"),
        (('path = "crns"', 'path = "crns"\ncolumns = ["N1"]'), r"\[stations\] columns should be a table"),
        (('path = "crns"', 'path = "crns"\nstations = "F1"'), r"\[stations\] stations should be a list"),
        (('path = "crns"', 'path = "crns"\nsnow_mask = "no"'), r"\[stations\] snow_mask should be true or false"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    text = EXAMPLE.replace(*edit)
    assert text != EXAMPLE
    (tmp_path / "run.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(tmp_path / "run.toml")
    assert str(tmp_path / "run.toml") in str(info.value)


def test_missing_file_sections_and_globs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "nope.toml")
    cfg = RunConfig.from_dict({"model": {"trees": 10}}, tmp_path)
    assert cfg.grid is None and cfg.sources == ()
    with pytest.raises(ConfigError, match=r"needs \['domain', 'sources', 'stations'\]"):
        cfg.require("domain", "sources", "stations")
    with pytest.raises(ConfigError, match=r"s1/\*\.tif: the pattern matches no file"):
        expand_paths("s1/*.tif", tmp_path)
    _files(tmp_path)
    got = expand_paths(["static/elevation.tif", "s1/*.tif"], tmp_path)
    assert [p.name for p in got] == ["elevation.tif", "s1_sm_20190101.tif", "s1_sm_20190104.tif", "s1_sm_20190107.tif"]
    assert all(p.is_absolute() for p in got)


def test_station_reader_layout_reaches_the_reader(tmp_path: Path) -> None:
    """[stations] layout keys (csv format) are read, checked and passed to the reader."""
    import pandas as pd

    from smengine.stations import open_stations

    text = EXAMPLE.replace(
        'format = "cosmos-europe"\npath = "crns"',
        'format = "csv"\npath = "fields.csv"\nmetadata = "meta.csv"\ntime_column = "Timestamp"\n'
        'timezone = "America/Chicago"\nstations = ["F1"]\n[stations.columns]\nN1 = "sm"\nsite = "station"',
    )
    _files(tmp_path)
    (tmp_path / "run.toml").write_text(text)
    pd.DataFrame(
        {"Timestamp": ["2022-06-01 00:00", "2022-06-01 01:00"] * 2, "site": ["F1", "F1", "F2", "F2"], "N1": 0.2}
    ).assign(air_temperature=20.0).to_csv(tmp_path / "fields.csv", index=False)
    pd.DataFrame({"station": ["F1", "F2"], "lat": [41.0, 41.1], "lon": [-96.0, -96.1]}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    cfg = load_config(tmp_path / "run.toml")
    from smengine.config import STATION_READER_KEYS

    layout = {k: cfg.stations[k] for k in STATION_READER_KEYS if k in cfg.stations}
    assert layout == {
        "time_column": "Timestamp",
        "timezone": "America/Chicago",
        "columns": {"N1": "sm", "site": "station"},
        "stations": ["F1"],
    }
    ss = open_stations(cfg.path(cfg.stations["path"]), "csv", metadata=cfg.path(cfg.stations["metadata"]), **layout)
    assert list(ss) == ["F1"] and str(ss["F1"].data.index[0]) == "2022-06-01 05:00:00+00:00"
    with pytest.raises(ConfigError, match="the cosmos-europe format does not take time_column"):
        open_stations(tmp_path, "cosmos-europe", time_column="Timestamp")
