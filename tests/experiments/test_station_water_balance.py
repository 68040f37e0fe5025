"""The station tables' soil water balance: the bucket of smengine.waterbalance run on each station's
daily precipitation and PET from its own air temperature, gaps filled from the network and counted."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from smengine import experiments as E
from smengine import stations as S
from smengine.errors import ConfigError, DataLossWarning, QualityWarning
from smengine.waterbalance import bucket, pet_hargreaves, pet_oudin, saxton_rawls

N_DAYS = 200
START = pd.Timestamp("2022-04-01", tz="UTC")


@pytest.fixture(scope="module")
def ss(net_dir) -> S.StationSet:
    return S.read_csv(net_dir / "stations.csv", metadata=net_dir / "meta.csv")


@pytest.fixture(scope="module")
def net_dir(tmp_path_factory: pytest.TempPathFactory):
    """Three stations with hourly rain and a seasonal temperature; B loses 40 days of temperature."""
    tmp = tmp_path_factory.mktemp("wb")
    rng = np.random.default_rng(5)
    meta = pd.DataFrame(
        {
            "station": ["A", "B", "C"],
            "lat": [39.1, 39.2, 45.3],
            "lon": [-107.0, -107.1, -107.2],
            "elevation": [2000.0, 2100.0, 2200.0],
            "bulk_density": [1.3, 1.35, 1.4],
            "lattice_water": [0.03, 0.03, 0.03],
            "soc": [0.01, 0.01, 0.01],
            "land_cover": ["Grassland"] * 3,
        }
    )
    frames = []
    hours = pd.date_range(START, periods=N_DAYS * 24, freq="1h")
    season = 12 + 10 * np.sin(2 * np.pi * (np.arange(N_DAYS * 24) / 24 - 20) / 365)
    for k, sid in enumerate(meta["station"]):
        temp = season + 6 * np.sin(2 * np.pi * np.arange(N_DAYS * 24) / 24) + k + rng.normal(0, 1, N_DAYS * 24)
        if sid == "B":
            temp[24 * 50 : 24 * 90] = np.nan  # a 40-day outage: from the network, counted
            temp[24 * 120 : 24 * 123] = np.nan  # a 3-day gap: interpolated
        rain = np.repeat(np.where(rng.random(N_DAYS) < 0.25, rng.gamma(2, 4, N_DAYS), 0.0) / 24, 24)
        frames.append(
            pd.DataFrame(
                {
                    "time": hours.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "station": sid,
                    "sm": 0.2 + 0.05 * np.sin(np.arange(N_DAYS * 24) / 500 + k),
                    "precipitation": rain,
                    "air_temperature": temp,
                }
            )
        )
    pd.concat(frames, ignore_index=True).to_csv(tmp / "stations.csv", index=False)
    meta.to_csv(tmp / "meta.csv", index=False)
    return tmp


def _daily(s: S.Station) -> pd.DataFrame:
    d = s.data
    day = d.index.floor("D").tz_localize(None)
    return pd.DataFrame(
        {
            "P": d["precipitation"].groupby(day).sum(min_count=1),
            "T": d["air_temperature"].groupby(day).mean(),
            "Tmin": d["air_temperature"].groupby(day).min(),
            "Tmax": d["air_temperature"].groupby(day).max(),
        }
    )


def test_wb_is_the_bucket_of_the_station_s_own_precipitation_and_temperature(ss: S.StationSet) -> None:
    t = E.station_table(ss, water_balance={"depths_mm": (100, 300)})
    assert {"wb100", "wb300"} <= set(t.attrs["features"])
    assert t.attrs["units"]["wb300"] == "m3 m-3" and t.attrs["kinds"]["wb300"] == "water_balance"
    assert "Saxton & Rawls" in t.attrs["columns"]["wb300"]["source"]
    lim = saxton_rawls(0.4, 0.2, 2.5)
    # by hand for A (no gaps): the bucket of the daily gauge sum and Oudin PET at A's latitude, from day 1
    d = _daily(ss["A"])
    pet = pet_oudin(d["T"].to_numpy(), 39.1, d.index.dayofyear.to_numpy())
    for depth in (100.0, 300.0):
        want = bucket(d["P"].to_numpy(), pet, lim.field_capacity, lim.wilting_point, depth_mm=depth)
        got = t[t["station"] == "A"].set_index("date")[f"wb{depth:g}"]
        np.testing.assert_allclose(got.to_numpy(), pd.Series(want, index=d.index).reindex(got.index).to_numpy())
    info = t.attrs["water_balance"]["stations"]
    assert info["A"]["days"] == N_DAYS and info["A"]["skipped"] == 0
    assert t.attrs["water_balance"]["params"]["depths_mm"] == [100.0, 300.0]
    # Hargreaves from the daily min and max
    h = E.station_table(ss, water_balance={"pet": "hargreaves"})
    pet_h = pet_hargreaves(d["Tmin"].to_numpy(), d["Tmax"].to_numpy(), 39.1, d.index.dayofyear.to_numpy())
    want = bucket(d["P"].to_numpy(), pet_h, lim.field_capacity, lim.wilting_point, depth_mm=300.0)
    got = h[h["station"] == "A"].set_index("date")["wb300"]
    np.testing.assert_allclose(got.to_numpy(), pd.Series(want, index=d.index).reindex(got.index).to_numpy())
    assert not np.allclose(got.to_numpy(), t[t["station"] == "A"]["wb300"].to_numpy())


def test_temperature_gaps_are_interpolated_or_taken_from_the_network_and_counted(ss: S.StationSet) -> None:
    t = E.station_table(ss)
    b = t.attrs["water_balance"]["stations"]["B"]
    assert b["temperature_filled"] == 3 and b["temperature_from_network"] == 40 and b["skipped"] == 0
    assert t.loc[t["station"] == "B", "wb300"].notna().all()
    # the network fill: the other stations' daily mean plus B's mean offset from it
    d = {sid: _daily(ss[sid])["T"] for sid in ss.ids}
    net = pd.concat([d["A"], d["C"]], axis=1).mean(axis=1)
    offset = (d["B"] - net).mean()
    filled = d["B"].copy()
    short = filled.index[120:123]
    filled[short] = d["B"].interpolate()[short]
    filled[filled.isna()] = (net + offset)[filled.isna()]
    pet = pet_oudin(filled.to_numpy(), 39.2, filled.index.dayofyear.to_numpy())
    lim = saxton_rawls(0.4, 0.2, 2.5)
    want = bucket(_daily(ss["B"])["P"].to_numpy(), pet, lim.field_capacity, lim.wilting_point, depth_mm=300.0)
    got = t[t["station"] == "B"].set_index("date")["wb300"]
    np.testing.assert_allclose(got.to_numpy(), pd.Series(want, index=filled.index).reindex(got.index).to_numpy())
    # without the fill the outage's days are skipped by the bucket (state kept, NaN), and counted
    off = E.station_table(ss, water_balance={"temperature_fill": None})
    assert off.attrs["water_balance"]["stations"]["B"]["skipped"] == 40
    assert off.loc[off["station"] == "B", "wb300"].isna().sum() == 40


def test_texture_from_covariates_and_bad_parameters(ss: S.StationSet) -> None:
    days = pd.date_range("2022-04-01", periods=N_DAYS)
    cov = pd.concat(
        [
            pd.DataFrame({"station": sid, "date": days, "sand": 20.0 + 20 * k, "clay": 30.0})
            for k, sid in enumerate(ss.ids)
        ]
    )
    t = E.station_table(ss, covariates=cov, water_balance={"sand": "sand", "clay": "clay"})
    lim = saxton_rawls(0.4, 0.3, 2.5)  # station B: 40 % sand, 30 % clay (percent → fraction)
    assert t.attrs["water_balance"]["stations"]["B"]["field_capacity"] == pytest.approx(float(lim.field_capacity))
    assert not np.allclose(
        t.loc[t["station"] == "A", "wb300"], E.station_table(ss).loc[lambda x: x.station == "A", "wb300"]
    )
    with pytest.raises(ConfigError, match="unknown key"):
        E.station_table(ss, water_balance={"depth": 300})
    with pytest.raises(ConfigError, match="pet should be"):
        E.station_table(ss, water_balance={"pet": "penman"})
    with pytest.raises(ConfigError, match="silt.*not a covariate column"):
        E.station_table(ss, covariates=cov, water_balance={"sand": "silt"})
    assert "wb300" not in E.station_table(ss, water_balance=False).attrs["features"]


def test_a_station_without_temperature_takes_the_feature_out_and_says_so(tmp_path) -> None:
    hours = pd.date_range(START, periods=60 * 24, freq="1h")
    rows = []
    for sid, temp in (("A", 10.0), ("B", np.nan)):
        rows.append(
            pd.DataFrame(
                {
                    "time": hours.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "station": sid,
                    "sm": 0.2,
                    "precipitation": 0.1,
                    "air_temperature": temp,
                }  # fmt: skip
            )
        )
    pd.concat(rows).to_csv(tmp_path / "s.csv", index=False)
    pd.DataFrame({"station": ["A", "B"], "lat": [40.0, 40.1], "lon": [-100.0, -100.1]}).to_csv(
        tmp_path / "m.csv", index=False
    )
    with pytest.warns(QualityWarning, match="snow cover"):  # B has no temperature at all
        net = S.read_csv(tmp_path / "s.csv", metadata=tmp_path / "m.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataLossWarning)  # the unknown site descriptors
        with pytest.warns(DataLossWarning, match=r"wb300 \(no values at station\(s\) \['B'\]\)"):
            t = E.station_table(net, water_balance={"temperature_fill": None})
    assert (
        "wb300" not in t.attrs["features"]
        and t.attrs["water_balance"]["stations"]["B"]["why"] == "no day with both precipitation and temperature"
    )


def test_the_antecedent_precipitation_index_is_the_lighter_option(ss: S.StationSet) -> None:
    from smengine.waterbalance import antecedent_precipitation_index

    t = E.station_table(ss, water_balance=False, api=(0.85, 0.95))
    assert {"api0.85", "api0.95"} <= set(t.attrs["features"]) and "wb300" not in t.attrs["features"]
    assert t.attrs["units"]["api0.85"] == "mm" and "k = 0.85" in t.attrs["columns"]["api0.85"]["source"]
    d = _daily(ss["C"])
    want = pd.Series(antecedent_precipitation_index(d["P"].to_numpy(), 0.95), index=d.index)
    got = t[t["station"] == "C"].set_index("date")["api0.95"]
    np.testing.assert_allclose(got.to_numpy(), want.reindex(got.index).to_numpy())
    # by hand, one step: API(t) = k API(t-1) + P(t)
    i = 10
    assert want.iloc[i] == pytest.approx(0.95 * want.iloc[i - 1] + d["P"].iloc[i])
    with pytest.raises(ConfigError, match=r"api: the decay factors k should lie in \(0, 1\)"):
        E.station_table(ss, api=(1.2,))


def test_cli_models_water_balance_and_api_options(net_dir, tmp_path) -> None:
    from click.testing import CliRunner

    from smengine.cli import cli

    base = ["stations-experiment", "--source", str(net_dir / "stations.csv"), "--format", "csv", "--metadata",
            str(net_dir / "meta.csv"), "--experiment", "leave-site-out", "--trees", "5", "--threads", "1",
            "--no-plots"]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataLossWarning)  # the synthetic network's unknown met columns
        r = CliRunner().invoke(cli, [*base, "--models", "hybrid", "--api", "0.9", "--wb-depth", "100,300",
                                     "--out", str(tmp_path / "a")])  # fmt: skip
    assert r.exit_code == 0, r.output
    # the forest is always fitted (the reference of the scored rows), then the models asked for
    assert "leave-site-out: hybrid median R" in r.output and "boosting median R" not in r.output
    rep = (tmp_path / "a" / "report.md").read_text()
    assert "`api0.9`" in rep and "`wb100`" in rep and "`wb300`" in rep
    bad = CliRunner().invoke(cli, [*base, "--models", "svm", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "choose from forest, boosting, hybrid" in bad.output
    bad = CliRunner().invoke(cli, [*base, "--api", "x", "--out", str(tmp_path / "c")])
    assert bad.exit_code == 2 and "should be comma-separated numbers" in bad.output
