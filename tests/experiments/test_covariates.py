"""A station network brings its own covariates: extra columns of its files, a daily covariate table,
the SWI of named columns (carried over short gaps only), and every column's fate in the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from smengine import experiments as E
from smengine import stations as S
from smengine.cli import cli
from smengine.errors import ConfigError, DataError, DataLossWarning
from smengine.filters import exp_filter

N_DAYS = 240
START = pd.Timestamp("2021-03-01", tz="UTC")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Three stations, hourly, with extra columns: a satellite-like SM, a leaking d86, a correction
    factor and a text column."""
    tmp = tmp_path_factory.mktemp("cov")
    rng = np.random.default_rng(3)
    meta = pd.DataFrame(
        {
            "station": ["A", "B", "C"],
            "lat": [41.1, 41.2, 41.3],
            "lon": [-96.5, -96.4, -96.3],
            "elevation": [300.0, 320.0, 340.0],
            "bulk_density": [1.3, 1.35, 1.4],
            "lattice_water": [0.03, 0.03, 0.03],
            "soc": [0.01, 0.01, 0.01],
            "land_cover": ["Cropland", "Grassland", "Cropland"],
        }
    )
    frames = []
    for k, sid in enumerate(meta["station"]):
        sm = 0.2 + 0.08 * np.sin(np.arange(N_DAYS) / 20.0 + k) + 0.01 * rng.standard_normal(N_DAYS)
        hours = pd.date_range(START, periods=N_DAYS * 24, freq="1h")
        frames.append(
            pd.DataFrame(
                {
                    "time": hours.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "station": sid,
                    "sm": np.repeat(sm, 24),
                    "precipitation": np.repeat(np.where(rng.random(N_DAYS) < 0.3, 4.0, 0.0) / 24, 24),
                    "air_temperature": 15.0 + rng.normal(0, 1, N_DAYS * 24),
                    "sat_sm": np.repeat(sm + 0.02 * rng.standard_normal(N_DAYS), 24),
                    "d86": np.repeat(30 - 40 * sm, 24),
                    "f_incoming": 1.0,
                    "note": "ok",
                }
            )
        )
    data = pd.concat(frames, ignore_index=True)
    data.to_csv(tmp / "stations.csv", index=False)
    meta.to_csv(tmp / "meta.csv", index=False)
    ss = S.read_csv(tmp / "stations.csv", metadata=tmp / "meta.csv")
    days = pd.date_range("2021-02-01", periods=N_DAYS + 60)
    cov = []
    for sid in ss.ids:
        ascat = np.where(rng.random(days.size) < 0.5, 0.3 + 0.1 * rng.random(days.size), np.nan)
        ascat[200:] = np.nan  # the product ends: its carried SWI must end 10 days later
        cov.append(pd.DataFrame({"station": sid, "date": days, "ascat": ascat, "sand": 40.0 + len(cov)}))
    cov = pd.concat(cov, ignore_index=True)
    cov.to_csv(tmp / "cov.csv", index=False)
    return {"dir": tmp, "ss": ss, "cov": cov}


def _table(ss: S.StationSet, **kw) -> pd.DataFrame:
    """station_table, which says (a DataLossWarning) that the text column ``note`` is lost."""
    with pytest.warns(DataLossWarning, match=r"note \(no values at any station\)"):
        return E.station_table(ss, **kw)


def test_extras_of_the_station_files_become_features_and_leaks_are_named(net: dict) -> None:
    t = _table(net["ss"])
    cols = t.attrs["columns"]
    assert "sat_sm" in t.attrs["features"] and cols["sat_sm"]["used"]
    assert not cols["d86"]["used"] and "leak the target" in cols["d86"]["why"]
    assert not cols["f_incoming"]["used"] and "correction factor" in cols["f_incoming"]["why"]
    assert "note" not in t.attrs["features"]
    # the daily mean of the hourly extra
    a = t[t["station"] == "A"].set_index("date")["sat_sm"]
    raw = pd.read_csv(net["dir"] / "stations.csv")
    raw = raw[raw["station"] == "A"].assign(day=lambda d: pd.to_datetime(d["time"]).dt.tz_localize(None).dt.floor("D"))
    np.testing.assert_allclose(a.to_numpy(), raw.groupby("day")["sat_sm"].mean().reindex(a.index).to_numpy())
    off = E.station_table(net["ss"], extras=False)
    assert "sat_sm" not in off.attrs["features"] and "by choice" in off.attrs["columns"]["sat_sm"]["why"]
    # a feature of the network's own can be chosen by name
    assert E.select_features(t, ["sat_sm", "precip_ef7"]).attrs["features"] == ["sat_sm", "precip_ef7"]


def test_covariate_table_and_its_swi_with_a_maximum_gap(net: dict) -> None:
    units = {"ascat": "m3 m-3"}
    t = _table(
        net["ss"], covariates=net["cov"], swi_of=["ascat"], swi_T=(5.0, 20.0), covariate_units=units, swi_max_gap=10
    )
    f = t.attrs["features"]
    assert {"ascat", "sand", "swi5c10_ascat", "swi20c10_ascat"} <= set(f)
    assert t.attrs["units"]["swi5c10_ascat"] == "m3 m-3" and t.attrs["units"]["sand"] == "unknown"
    assert (
        t.attrs["kinds"]["swi5c10_ascat"] == "swi"
        and "NaN after 10 days" in t.attrs["columns"]["swi5c10_ascat"]["source"]
    )
    # by hand: the filter over the covariate's own full calendar, carried, then cut 10 days after the last value
    c = net["cov"][net["cov"]["station"] == "B"].set_index("date")
    want = exp_filter(c["ascat"].to_numpy(), c.index.to_numpy(), [5.0], carry=True)[0]
    last = pd.Series(np.where(c["ascat"].notna(), np.arange(len(c)), np.nan)).ffill().to_numpy()
    want[~(np.arange(len(c)) - last <= 10)] = np.nan
    got = t[t["station"] == "B"].set_index("date")["swi5c10_ascat"]
    np.testing.assert_allclose(got.to_numpy(), pd.Series(want, index=c.index).reindex(got.index).to_numpy())
    end = c.index[c["ascat"].notna()].max()
    assert got.loc[end + pd.Timedelta(days=11) :].isna().all() and got.loc[:end].notna().sum() > 50
    forever = _table(net["ss"], covariates=net["cov"], swi_of=["ascat"], swi_max_gap=None)
    assert forever[forever["station"] == "B"].set_index("date")["swi5c_ascat"].loc[end:].notna().all()


def test_covariates_left_out_are_said_and_bad_tables_refused(net: dict) -> None:
    cov = net["cov"].copy()
    cov.loc[cov["station"] == "C", "sand"] = np.nan
    cov["soil_class"] = "loam"
    with pytest.warns(DataLossWarning, match=r"sand \(no values at station\(s\) \['C'\]\)"):
        t = E.station_table(net["ss"], covariates=cov)
    cols = t.attrs["columns"]
    assert "sand" not in t.attrs["features"] and cols["sand"]["why"] == "no values at station(s) ['C']"
    assert not cols["soil_class"]["used"] and "not numeric" in cols["soil_class"]["why"]
    with pytest.raises(ConfigError, match="name of a station column"):
        E.station_table(net["ss"], covariates=net["cov"].rename(columns={"sand": "sat_sm"}))
    with pytest.raises(ConfigError, match="repeated station-day"):
        E.station_table(net["ss"], covariates=pd.concat([net["cov"], net["cov"].iloc[:1]]))
    with pytest.raises(ConfigError, match="not a covariate column"):
        E.station_table(net["ss"], covariates=net["cov"], swi_of=["nope"])
    other = net["cov"].assign(station=net["cov"]["station"].replace({"C": "Z"}))
    with pytest.warns(DataLossWarning, match=r"covariate rows \(300 of stations \['Z'\] not in the set\)"):
        E.station_table(net["ss"], covariates=other)


def test_read_covariates_long_and_wide(net: dict, tmp_path: Path) -> None:
    long = E.read_covariates(net["dir"] / "cov.csv", stations=net["ss"])
    assert list(long.columns) == ["station", "date", "ascat", "sand"] and len(long) == len(net["cov"])
    wide = net["cov"].pivot(index="date", columns="station", values="ascat").reset_index()
    wide.to_csv(tmp_path / "smos_sm.csv", index=False)
    w = E.read_covariates(tmp_path / "smos_sm.csv")
    assert set(w.columns) == {"station", "date", "smos_sm"} and set(w["station"]) == {"A", "B", "C"}
    (tmp_path / "bad.csv").write_text("station,date,x\nA,yesterday,1\n")
    with pytest.raises(DataError, match="yesterday"):
        E.read_covariates(tmp_path / "bad.csv")
    (tmp_path / "other.csv").write_text("station,date,x\nZ,2021-03-01,1\n")
    with pytest.raises(DataError, match=r"\['Z'\] are not in the station set"):
        E.read_covariates(tmp_path / "other.csv", stations=net["ss"])


def test_cli_takes_covariates_and_the_report_lists_every_column(net: dict, tmp_path: Path) -> None:
    d = net["dir"]
    out = tmp_path / "exp"
    r = CliRunner().invoke(
        cli,
        ["stations-experiment", "--source", str(d / "stations.csv"), "--format", "csv", "--metadata",
         str(d / "meta.csv"), "--covariates", str(d / "cov.csv"), "--swi-of", "ascat", "--covariate-unit",
         "ascat=m3 m-3", "--experiment", "leave-site-out", "--trees", "5", "--threads", "1", "--no-plots",
         "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rep = (out / "report.md").read_text()
    assert "`swi20c30_ascat` (m3 m-3; exp_filter(ascat, T=20 d, carried, NaN after 30 days without a value))" in rep
    assert "`d86` (penetration depth computed from θ: it would leak the target)" in rep
    assert "`sat_sm` (unknown; station files (daily mean))" in rep
    bad = CliRunner().invoke(cli, ["stations-experiment", "--covariates", str(d / "cov.csv"), "--out", str(out)])
    assert bad.exit_code != 0 and "--covariates" in bad.output
