"""A station network as CRNS scientists have it: irrigation, feature selection, stations that
drop out of the medians, the layout options of the CLI."""

from __future__ import annotations

import warnings
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

N_DAYS = 200
START = pd.Timestamp("2022-04-01", tz="UTC")


def _network(n_days: int = N_DAYS, short: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Three fields in their own layout: local times (America/Chicago), ``N1`` corrected counts,
    irrigation on field 1 as a station column; ``short`` keeps only 20 days of that station."""
    rng = np.random.default_rng(7)
    meta = pd.DataFrame(
        {
            "station": ["F1", "F2", "F3"],
            "lat": [41.16, 41.18, 41.17],
            "lon": [-96.47, -96.44, -96.43],
            "n0": 2600.0,
            "bulk_density": [1.3, 1.35, 1.4],
            "lattice_water": 0.03,
            "soc": 0.01,
        }
    )
    from smengine import neutrons as nt

    frames = []
    local = pd.date_range(START.tz_convert("America/Chicago").tz_localize(None), periods=24 * n_days, freq="h")
    for _, m in meta.iterrows():
        rain = np.where(rng.random(n_days) < 0.25, rng.exponential(7.0, n_days), 0.0)
        irr = np.zeros(n_days)
        if m["station"] == "F1":
            irr[30::7] = 25.0  # a weekly centre-pivot pass
        theta = np.empty(n_days)
        s = 0.2
        for t in range(n_days):
            s = 0.08 + (s - 0.08) * np.exp(-1 / 10) + 0.005 * (rain[t] + irr[t])
            theta[t] = min(s, 0.45)
        th_h = np.repeat(theta, 24)
        counts = nt.theta_to_counts(th_h, 2600.0, m["bulk_density"], 0.03, 0.01)
        f = pd.DataFrame(
            {
                "Timestamp": local.strftime("%m/%d/%Y %H:%M"),
                "site": m["station"],
                "N1": counts,
                "rain_mm": np.repeat(rain / 24, 24),
                "air_temperature": 18 + rng.normal(0, 1, th_h.size),
            }
        )
        if m["station"] == "F1":
            f["irrigation"] = np.repeat(irr / 24, 24)
        if m["station"] == short:
            f = f.iloc[: 24 * 20]
        frames.append(f)
    return pd.concat(frames, ignore_index=True), meta


def _read(data: pd.DataFrame, meta: pd.DataFrame) -> S.StationSet:
    return S.read_csv(
        data,
        metadata=meta,
        time_column="Timestamp",
        time_format="%m/%d/%Y %H:%M",
        timezone="America/Chicago",
        columns={"site": "station", "N1": "counts_corrected", "rain_mm": "precipitation"},
    )


@pytest.fixture(scope="module")
def network() -> S.StationSet:
    return _read(*_network())


def test_irrigation_is_a_water_input_of_its_own(network: S.StationSet) -> None:
    table = E.station_table(network, T=(3.0, 10.0))
    feats = table.attrs["features"]
    assert {"irrigation", "irrigation_ef3", "irrigation_ef10"} <= set(feats)
    assert table.attrs["irrigation_source"] == {"F1": "station", "F2": "none (0 mm)", "F3": "none (0 mm)"}
    assert table.attrs["units"]["irrigation_ef10"] == "mm d-1"
    f1 = table[table["station"] == "F1"].set_index("date")
    # the daily sums of the hourly column, and their exponential filter on the station's calendar
    assert f1["irrigation"].max() == pytest.approx(25.0)
    cal = f1["irrigation"].asfreq("D")
    ef = exp_filter(cal.to_numpy(), cal.index.to_numpy(), [10.0])[0]
    np.testing.assert_allclose(f1["irrigation_ef10"].to_numpy(), pd.Series(ef, index=cal.index)[f1.index], rtol=1e-12)
    others = table[table["station"] != "F1"]
    assert (others["irrigation"] == 0).all() and (others["irrigation_ef3"] == 0).all()


def test_an_irrigation_table_overrides_the_station_column(network: S.StationSet, tmp_path: Path) -> None:
    days = pd.date_range("2022-04-01", periods=N_DAYS, freq="D")
    pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "F2": 5.0}).to_csv(tmp_path / "irr.csv", index=False)
    irr = E.read_daily_irrigation(tmp_path / "irr.csv", network)
    table = E.station_table(network, irrigation=irr, T=(3.0,))
    assert table.attrs["irrigation_source"] == {"F1": "station", "F2": "table", "F3": "none (0 mm)"}
    assert (table.loc[table["station"] == "F2", "irrigation"] == 5.0).all()
    pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "pivot 9": 5.0}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"bad\.csv: column\(s\) \['pivot 9'\] match no station"):
        E.read_daily_irrigation(tmp_path / "bad.csv", network)
    with pytest.raises(DataError, match="no such irrigation file"):
        E.read_daily_irrigation(tmp_path / "absent.csv", network)


def test_without_any_irrigation_there_are_no_irrigation_features(network: S.StationSet) -> None:
    plain = S.StationSet(
        [
            S.Station(id=s.id, lat=s.lat, lon=s.lon, data=s.data.drop(columns="irrigation", errors="ignore"))
            for s in network.values()
        ]
    )
    table = E.station_table(plain, T=(3.0,))
    assert not [f for f in table.attrs["features"] if f.startswith("irrigation")]
    assert "irrigation_source" not in table.attrs


def test_feature_selection_checks_names_and_records_what_was_left_out(network: S.StationSet) -> None:
    table = E.station_table(network, T=(3.0, 10.0))
    sel = E.select_features(table, exclude=["doy_sin", "doy_cos"])
    assert "doy_sin" not in sel.attrs["features"] and sel.attrs["excluded_features"] == ["doy_cos", "doy_sin"]
    assert table.attrs["features"] != sel.attrs["features"]  # the original is untouched
    only = E.select_features(table, ["precip_ef10", "irrigation_ef10"])
    assert only.attrs["features"] == ["precip_ef10", "irrigation_ef10"]
    assert set(only.attrs["units"]) == {"precip_ef10", "irrigation_ef10"}
    with pytest.raises(ConfigError, match=r"unknown feature 'ndvi'; the table has: precipitation, "):
        E.select_features(table, ["ndvi"])
    with pytest.raises(ConfigError, match=r"feature 'elevation' is not usable: unknown at station"):
        E.select_features(table, ["elevation"])
    with pytest.raises(ConfigError, match="no features left"):
        E.select_features(table, ["precip_ef3"], exclude=["precip_ef3"])
    res = E.leave_site_out(only, n_estimators=5, n_jobs=1)
    assert res.features == ["precip_ef10", "irrigation_ef10"]


def test_a_station_with_too_few_days_is_warned_about_and_listed(tmp_path: Path) -> None:
    ss = _read(*_network(short="F3"))
    table = E.station_table(ss, T=(3.0,))
    with pytest.warns(DataLossWarning, match=r"leave-site-out: 1 of 3 station\(s\) not in the medians: F3 \("):
        res = E.leave_site_out(table, n_estimators=5, n_jobs=1)
    assert list(res.params["unscored"]) == ["F3"]
    assert "(< 30)" in res.params["unscored"]["F3"]
    assert np.isnan(res.station_scores("forest").loc["F3", "ubRMSE"])
    with pytest.warns(DataLossWarning, match="not in the medians"):
        rep = E.run_experiments(
            tmp_path, stations=ss, experiments=["leave-site-out"], T=(3.0,), n_estimators=5, n_jobs=1, plots=False
        )
    text = rep.report.read_text()
    assert "Not in the medians (too few scored days): `F3` (" in text
    assert "| forest | 2 |" in text  # the median is over 2 stations, and the table says so


def test_cli_takes_a_network_in_its_own_layout_with_irrigation_and_a_feature_choice(tmp_path: Path) -> None:
    data, meta = _network()
    data.to_csv(tmp_path / "fields.csv", index=False)
    meta.to_csv(tmp_path / "fields_meta.csv", index=False)
    days = pd.date_range("2022-04-01", periods=N_DAYS, freq="D")
    pd.DataFrame({"date": days.strftime("%Y-%m-%d"), "F2": 1.0}).to_csv(tmp_path / "irr.csv", index=False)
    out = tmp_path / "exp"
    args = [
        "stations-experiment",
        "--out",
        str(out),
        "--source",
        str(tmp_path / "fields.csv"),
        "--format",
        "csv",
        "--metadata",
        str(tmp_path / "fields_meta.csv"),
        "--time-column",
        "Timestamp",
        "--timezone",
        "America/Chicago",
        "--column",
        "site=station",
        "--column",
        "N1=counts_corrected",
        "--column",
        "rain_mm=precipitation",
        "--irrigation",
        str(tmp_path / "irr.csv"),
        "--exclude-features",
        "doy_sin,doy_cos",
        "--experiment",
        "leave-site-out",
        "--trees",
        "5",
        "--threads",
        "1",
        "--no-plots",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataLossWarning)
        r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    text = (out / "report.md").read_text()
    assert "Irrigation (a water input beside precipitation): F1 station; F2 table; F3 none (0 mm)." in text
    assert "Left out by choice: `doy_cos`, `doy_sin`." in text
    assert "`irrigation_ef" in text
    # the report defines the scores and splits it uses
    for term in ("**R**", "**ubRMSE**", "**KGE**", "**linear**", "**Leave-site-out**", "**spatio-temporal"):
        assert term in text.split("## Leave-site-out")[0], term
    bad = CliRunner().invoke(cli, [*args[:-9], "--features", "ndvi", "--experiment", "leave-site-out", "--no-plots"])
    assert bad.exit_code != 0 and "unknown feature 'ndvi'" in bad.output
    stray = CliRunner().invoke(cli, ["stations-experiment", "--out", str(out), "--timezone", "UTC"])
    assert stray.exit_code == 2 and "--timezone go(es) with --source" in stray.output
