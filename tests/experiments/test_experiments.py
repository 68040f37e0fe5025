"""Real-data emulation at stations: table, splits, baselines, report, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import StandardScaler

from smengine import experiments as E
from smengine import stations as S
from smengine.cli import cli
from smengine.errors import ConfigError, DataError, DataLossWarning, ValidationError
from smengine.filters import exp_filter
from smengine.footprint import penetration_depth, vertical_weight
from smengine.metrics import ubrmse
from smengine.model import train

TREES = 30
START = pd.Timestamp("2020-01-01", tz="UTC")
N_DAYS = 420
GAP = slice(60, 66)  # days of station A without a working gauge


# --------------------------------------------------------------------------------------
# a synthetic station set in the generic CSV format
# --------------------------------------------------------------------------------------
def _synthetic(tmp: Path) -> tuple[Path, Path, pd.DataFrame]:
    rng = np.random.default_rng(42)
    meta = pd.DataFrame(
        {
            "station": ["A", "B", "C", "D"],
            "lat": [50.1, 50.4, 50.9, 51.2],
            "lon": [6.1, 6.5, 7.0, 7.3],
            "elevation": [100.0, 250.0, 400.0, 320.0],
            "bulk_density": [1.2, 1.4, 1.3, 1.5],
            "lattice_water": [0.02, 0.03, 0.025, 0.02],
            "soc": [0.01, 0.02, 0.015, 0.01],
            "land_cover": ["Grassland", "Pine forest", "Arable crops", "Sagebrush"],
        }
    )
    frames = []
    days = np.arange(N_DAYS)
    for _i, m in meta.iterrows():
        rain = np.where(rng.random(N_DAYS) < 0.3, rng.exponential(6.0, N_DAYS), 0.0)
        sm = np.empty(N_DAYS)
        s = 0.2
        for t in range(N_DAYS):
            s = 0.05 + (s - 0.05) * np.exp(-1 / 12) + 0.006 * rain[t]
            sm[t] = min(s, 0.5)
        sm = sm + 0.1 * (m["bulk_density"] - 1.35)
        hours = pd.date_range(START, periods=N_DAYS * 24, freq="1h")
        d = np.repeat(days, 24)
        temp = 10 - 8 * np.cos(2 * np.pi * d / 365.25) + rng.normal(0, 1, d.size)
        pr = np.repeat(rain / 24, 24)
        if m["station"] == "A":
            pr[GAP.start * 24 : GAP.stop * 24] = np.nan
        f = pd.DataFrame(
            {
                "time": hours.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "station": m["station"],
                "sm": np.repeat(sm, 24) + rng.normal(0, 0.003, d.size),
                "precipitation": pr,
                "air_temperature": temp,
                "rel_humidity": 70 + 10 * np.sin(d / 9.0),
                "pressure": 1013 - 0.12 * m["elevation"] + rng.normal(0, 2, d.size),
            }
        )
        if m["station"] == "A":  # a TDR profile at 5, 20, 50 cm
            for z, off in ((5, -0.02), (20, 0.0), (50, 0.03)):
                f[f"tdr_{z}"] = np.repeat(sm, 24) + off
        frames.append(f)
    data = pd.concat(frames, ignore_index=True)
    data_csv, meta_csv = tmp / "stations.csv", tmp / "meta.csv"
    data.to_csv(data_csv, index=False)
    meta.to_csv(meta_csv, index=False)
    return data_csv, meta_csv, data


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("synthetic")
    data_csv, meta_csv, raw = _synthetic(tmp)
    ss = S.read_csv(data_csv, metadata=meta_csv)
    table = E.station_table(ss)
    return {"dir": tmp, "data": data_csv, "meta": meta_csv, "raw": raw, "ss": ss, "table": table}


@pytest.fixture(scope="module")
def synth_lso(synth: dict) -> E.ExperimentResult:
    return E.leave_site_out(synth["table"], n_estimators=TREES, n_jobs=1)


@pytest.fixture(scope="module")
def synth_temporal(synth: dict) -> E.ExperimentResult:
    return E.temporal_split(
        synth["table"][synth["table"]["station"] == "A"], split_date="2020-10-01", n_estimators=TREES, n_jobs=1
    )


# --------------------------------------------------------------------------------------
# the station table
# --------------------------------------------------------------------------------------
def test_antecedent_precipitation_equals_exp_filter_of_the_raw_series(synth: dict) -> None:
    raw, table = synth["raw"], synth["table"]
    r = raw[raw["station"] == "A"].copy()
    r["day"] = pd.to_datetime(r["time"]).dt.tz_convert(None).dt.normalize()
    daily = r.groupby("day")["precipitation"].sum(min_count=24)  # a day with a missing hour is missing
    ef = exp_filter(daily.to_numpy(), daily.index.to_numpy(), [1.0, 3.0, 7.0, 15.0, 30.0])
    want = pd.DataFrame(ef.T, index=daily.index, columns=[f"precip_ef{t:g}" for t in (1, 3, 7, 15, 30)])
    got = table[table["station"] == "A"].set_index("date")
    np.testing.assert_allclose(got["precipitation"], daily.reindex(got.index), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got[want.columns], want.reindex(got.index), rtol=1e-9, atol=1e-9)
    # the gauge gap is missing, not dry: NaN features on those days, the filter resumes after
    gap_days = daily.index[GAP]
    assert got.loc[got.index.isin(gap_days), "precip_ef7"].isna().all()
    assert got.loc[got.index > gap_days[-1], "precip_ef7"].notna().all()
    assert (got["precip_ef30"].dropna() >= 0).all() and got["precip_ef30"].max() > 1


def test_station_table_columns_units_and_statics(synth: dict) -> None:
    t = synth["table"]
    assert t.attrs["features"] == [
        "precipitation",
        "precip_ef1",
        "precip_ef3",
        "precip_ef7",
        "precip_ef15",
        "precip_ef30",
        "wb300",
        "air_temperature",
        "rel_humidity",
        "abs_humidity",
        "pressure",
        "doy_sin",
        "doy_cos",
        "bulk_density",
        "lattice_water",
        "soc",
        "elevation",
        "land_cover_class",
    ]
    assert t.attrs["units"]["precip_ef7"] == "mm d-1" and t.attrs["units"]["bulk_density"] == "g cm-3"
    assert t.groupby("station")["bulk_density"].first().to_dict() == {"A": 1.2, "B": 1.4, "C": 1.3, "D": 1.5}
    lc = t.groupby("station")["land_cover_class"].first()
    assert [E.land_cover_class(x) for x in ("Grassland", "Pine forest", "Arable crops", "Sagebrush")] == lc.tolist()
    assert lc.tolist() == [1.0, 0.0, 3.0, 2.0]
    # absolute humidity derived from T and RH by the reader
    assert t["abs_humidity"].between(1, 30).all()
    assert not t.duplicated(["station", "date"]).any()


def test_static_feature_unknown_somewhere_is_left_out(synth: dict, tmp_path: Path) -> None:
    meta = pd.read_csv(synth["meta"]).drop(columns=["elevation"])
    meta.loc[meta["station"] == "B", "land_cover"] = ""
    ss = S.read_csv(synth["data"], metadata=meta)
    t = E.station_table(ss, T=(5,))
    assert "elevation" not in t.attrs["features"] and "land_cover_class" not in t.attrs["features"]
    assert "B" in t.attrs["dropped_features"]["land_cover_class"]
    assert "precip_ef5" in t.attrs["features"]


def test_tdr_footprint_average_by_hand(synth: dict) -> None:
    t = synth["table"]
    assert t.attrs["tdr_depths"] == {"A": [5.0, 20.0, 50.0]}
    row = t[(t["station"] == "A")].iloc[100]
    prof = row[["tdr_5", "tdr_20", "tdr_50"]].to_numpy(float)
    d86 = float(penetration_depth(0.0, 1.2, row["tdr_weighted"], 0.02, 0.01))
    assert row["tdr_d86"] == pytest.approx(d86, rel=1e-12)
    w = vertical_weight(np.array([5.0, 20.0, 50.0]), d86)
    assert row["tdr_weighted"] == pytest.approx(float((w * prof).sum() / w.sum()), abs=1e-7)
    # the footprint weights the shallow sensor most: below the plain profile mean here (deeper is wetter)
    assert row["tdr_weighted"] < prof.mean()
    assert t.loc[t["station"] != "A", "tdr_weighted"].isna().all()


def test_tdr_footprint_average_nan_day_and_shape() -> None:
    th, d86 = E.tdr_footprint_average([[0.2, 0.25], [np.nan, 0.3]], [5, 20], 1.4)
    assert np.isfinite(th[0]) and np.isnan(th[1]) and np.isnan(d86[1])
    with pytest.raises(ValidationError, match="shape"):
        E.tdr_footprint_average([[0.2, 0.25, 0.3]], [5, 20], 1.4)


# --------------------------------------------------------------------------------------
# leave-site-out
# --------------------------------------------------------------------------------------
def test_leave_site_out_never_trains_on_the_test_station(synth: dict, synth_lso: E.ExperimentResult) -> None:
    sites = sorted(synth["table"]["station"].unique())
    assert len(synth_lso.folds) == len(sites)
    for f in synth_lso.folds:
        (test,) = f["test_stations"]
        assert test not in f["train_stations"]
        assert f["train_stations"] == [s for s in sites if s != test]
        rows = synth_lso.predictions[synth_lso.predictions["fold"] == f["fold"]]
        assert set(rows["station"]) == {test}


def test_leave_site_out_forest_refits_by_hand(synth: dict, synth_lso: E.ExperimentResult) -> None:
    t, f = synth["table"], synth_lso.features
    train_rows = t[(t["station"] != "B")]
    train_rows = train_rows[np.isfinite(train_rows[f].to_numpy(float)).all(axis=1)]
    forest = train(train_rows, f, cv=(), search=False, n_estimators=TREES, random_state=0, n_jobs=1, progress=False)
    test = t[t["station"] == "B"]
    p = synth_lso.predictions[synth_lso.predictions["station"] == "B"]
    np.testing.assert_array_equal(p["forest"].to_numpy(), forest.predict(test))
    # the mean baseline is the training rows' mean, a constant
    assert np.allclose(p["mean"], train_rows["target"].mean(), rtol=0, atol=1e-15)


def test_leave_site_out_scores_and_forest_beats_mean(synth_lso: E.ExperimentResult) -> None:
    med = synth_lso.medians()
    assert list(med.index) == ["forest", "boosting", "hybrid", "linear", "mean", "tdr"]
    assert np.isnan(med.loc["mean", "R"])  # a constant has no correlation
    assert med.loc["forest", "ubRMSE"] < med.loc["mean", "ubRMSE"]
    # ubRMSE of the constant mean is the SD of the observations
    p = synth_lso.predictions[synth_lso.predictions["station"] == "C"]
    assert synth_lso.station_scores("mean").loc["C", "ubRMSE"] == pytest.approx(ubrmse(p["mean"], p["obs"]))
    assert synth_lso.station_scores("mean").loc["C", "ubRMSE"] == pytest.approx(p["obs"].std(ddof=0), rel=1e-9)


# --------------------------------------------------------------------------------------
# temporal split and the baselines
# --------------------------------------------------------------------------------------
def test_temporal_split_has_no_test_day_before_the_split(synth_temporal: E.ExperimentResult) -> None:
    split = pd.Timestamp("2020-10-01")
    assert synth_temporal.params["split_date"] == "2020-10-01"
    assert (synth_temporal.predictions["date"] >= split).all()
    f = synth_temporal.folds[0]
    assert pd.Timestamp(f["train_end"]) < split <= pd.Timestamp(f["test_start"])
    assert f["n_test"] == int(synth_temporal.predictions["forest"].notna().sum()) > 100


def test_temporal_default_split_is_train_years_after_the_start(synth: dict) -> None:
    t = synth["table"][synth["table"]["station"] == "A"]
    r = E.temporal_split(t, train_years=0.5, n_estimators=5, n_jobs=1)
    assert r.params["split_date"] == str((t["date"].min() + pd.Timedelta(days=0.5 * 365.25)).date())
    with pytest.raises(ValidationError, match="no training or no test"):
        E.temporal_split(t, train_years=5, n_estimators=5, n_jobs=1)


def test_temporal_split_is_per_station(synth: dict) -> None:
    """Each station trains on its own first days: a station that starts late still trains; one
    whose record is too short to split is left out, warned and listed."""
    t = synth["table"].copy()
    late = t["station"] == "B"
    t = t[~late | (t["date"] >= t.loc[late, "date"].min() + pd.Timedelta(days=200))]  # B starts 200 days later
    short = t["station"] == "C"
    t = t[~short | (t["date"] < t.loc[short, "date"].min() + pd.Timedelta(days=60))]  # C: 60 days only
    with pytest.warns(DataLossWarning, match=r"1 of \d station\(s\) left out: C \(no test days"):
        r = E.temporal_split(t, train_years=0.5, n_estimators=5, n_jobs=1)
    assert r.params["split_date"] == "per station" and r.params["excluded"].keys() == {"C"}
    for sid, split in r.params["split_dates"].items():
        first = t.loc[t["station"] == sid, "date"].min()
        assert split == str((first + pd.Timedelta(days=0.5 * 365.25)).date())
        scored = r.predictions[r.predictions["station"] == sid]
        assert (scored["date"] >= pd.Timestamp(split)).all() and len(scored) > 0
    assert "C" not in set(r.predictions["station"])
    with pytest.warns(DataLossWarning, match="C"):  # one date for all, as before: C has no day after it
        one = E.temporal_split(t, split_date="2020-10-01", n_estimators=5, n_jobs=1)
    assert one.params["split_date"] == "2020-10-01"


def test_spatiotemporal_leave_site_out_removes_the_held_out_dates(synth: dict) -> None:
    """Each fold: one station and one period held out; no training row from that station or
    that period; every station-day is predicted once."""
    t = synth["table"]
    st = E.leave_site_out(t, n_estimators=TREES, n_jobs=1, spatiotemporal=True, time_blocks=3)
    assert st.name == "leave-site-out (spatio-temporal)" and st.params["time_blocks"] == 3
    n_sites = t["station"].nunique()
    assert len(st.folds) == 3 * n_sites
    feats = st.features
    complete = t[np.isfinite(t[[*feats, "target"]].to_numpy(float)).all(axis=1)]
    for fo in st.folds:
        (sid,) = fo["test_stations"]
        lo, hi = pd.Timestamp(fo["test_start"]), pd.Timestamp(fo["test_end"])
        train = complete[(complete["station"] != sid) & ~complete["date"].between(lo, hi)]
        assert fo["n_train"] == len(train) and sid not in fo["train_stations"]
    p = st.predictions
    assert not p.duplicated(["station", "date"]).any() and len(p) == len(t)
    with pytest.raises(ConfigError, match="time_blocks should be >= 2"):
        E.leave_site_out(t, n_estimators=TREES, n_jobs=1, spatiotemporal=True, time_blocks=1)


def test_linear_and_mean_baselines_equal_sklearn_by_hand(synth: dict, synth_temporal: E.ExperimentResult) -> None:
    t = synth["table"]
    t = t[t["station"] == "A"]
    f = synth_temporal.features
    tr = t[t["date"] < "2020-10-01"]
    tr = tr[np.isfinite(tr[f].to_numpy(float)).all(axis=1)]
    te = t[t["date"] >= "2020-10-01"]
    sc = StandardScaler().fit(tr[f].to_numpy(float))
    lr = LinearRegression().fit(sc.transform(tr[f].to_numpy(float)), tr["target"].to_numpy())
    ok = np.isfinite(te[f].to_numpy(float)).all(axis=1)
    want = np.full(len(te), np.nan)
    want[ok] = lr.predict(sc.transform(te[f].to_numpy(float)[ok]))
    got = synth_temporal.predictions["linear"].to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert np.allclose(synth_temporal.predictions["mean"].dropna(), tr["target"].mean(), rtol=0, atol=1e-15)
    # the TDR baseline is the table's footprint-weighted profile on the scored days
    p = synth_temporal.predictions.dropna(subset=["tdr"])
    np.testing.assert_array_equal(p["tdr"].to_numpy(), te.loc[ok, "tdr_weighted"].to_numpy()[: len(p)])


def test_every_method_is_scored_on_the_same_days(synth_temporal: E.ExperimentResult) -> None:
    p = synth_temporal.predictions
    have = p["forest"].notna()
    for m in ("linear", "mean"):
        assert (p[m].notna() == have).all()
    assert (p["tdr"].notna() <= have).all()
    n = synth_temporal.scores.set_index(["method", "station"])["n"]
    assert n[("forest", "A")] == n[("linear", "A")] == n[("mean", "A")] == have.sum()


# --------------------------------------------------------------------------------------
# kNNDM folds of the stations
# --------------------------------------------------------------------------------------
def test_station_xy_distances_are_geodesic(synth: dict) -> None:
    from pyproj import Geod

    xy = E.station_xy(synth["ss"])
    assert list(xy.index) == ["A", "B", "C", "D"] and "aeqd" in xy.attrs["crs"]
    d = np.hypot(*(xy.loc["A", ["x", "y"]].to_numpy() - xy.loc["D", ["x", "y"]].to_numpy()))
    geo = Geod(ellps="WGS84").inv(6.1, 50.1, 7.3, 51.2)[2]
    assert d == pytest.approx(geo, rel=2e-3)  # a 150-km network: within 0.2 %
    with pytest.raises(ConfigError, match="lack"):
        E.station_xy(pd.DataFrame({"station": ["A"], "lat": [1.0]}))


def test_knndm_experiment_keeps_fold_stations_out_of_training(synth: dict) -> None:
    xy = E.station_xy(synth["ss"])
    # a domain far larger than the network: folds must hold stations out together
    lat, lon = np.meshgrid(np.linspace(47.0, 54.0, 30), np.linspace(3.0, 10.0, 30))
    dom = pd.DataFrame({"lat": lat.ravel(), "lon": lon.ravel()})
    res = E.knndm_cv(synth["table"], xy, domain=dom, k=2, n_estimators=TREES, n_jobs=1, time_blocks=2)
    kn = res.params["knndm"]
    assert res.name == "knndm" and kn["k"] == 2 and kn["n_domain_points"] == 900
    assert kn["W_m"] <= kn["W_leave_site_out_m"]
    for f in res.folds:  # a fold's stations are in no training set of theirs, nor their period's dates
        assert not set(f["test_stations"]) & set(f["train_stations"])
        assert set(f["test_stations"]) == {s for s, g in kn["folds"].items() if g == f["fold"] // 2}
    assert {c.a for c in res.comparisons} >= {"forest", "linear"}
    with pytest.raises(ConfigError, match="no coordinates"):
        E.knndm_cv(synth["table"], xy.drop(index="A"), n_estimators=TREES, n_jobs=1)


# --------------------------------------------------------------------------------------
# report, CLI, input errors
# --------------------------------------------------------------------------------------
def test_run_experiments_on_any_station_set_writes_the_report(synth: dict, tmp_path: Path) -> None:
    res = E.run_experiments(
        tmp_path / "out", stations=synth["ss"], split_date="2020-10-01", n_estimators=10, n_jobs=1, plots=True
    )
    assert set(res.results) == set(E.EXPERIMENTS)
    assert set(E.EXPERIMENTS) == {"temporal", "leave-site-out", "leave-site-out-spatiotemporal", "knndm"}
    rep = res.report.read_text()
    for word in (
        "## Temporal split per station",
        "## Leave-site-out",
        "| **median** |",
        "ubRMSE",
        "KGE",
        "tdr",
        "Verdict",
        "## Which number to believe",
        "Paired comparisons",
        "| forest vs linear | ubRMSE |",
        "| hybrid vs linear | ubRMSE |",
        "| boosting vs training mean | ubRMSE |",
        "wins",
        "## Day of year: a choice, not a default",
    ):
        assert word in rep
    assert "see the note" not in rep and "| nan" not in rep.lower()
    # the day-of-year study: every fitted model with against without, on the same station-days
    cal = res.calendar
    assert (
        "doy_sin" not in cal["without"].features and "doy_sin" in res.results["leave-site-out-spatiotemporal"].features
    )
    assert {c.a for c in cal["comparisons"]} == {
        f"{m} with day of year" for m in ("forest", "boosting", "hybrid", "linear")
    }
    for c in cal["comparisons"]:
        assert c.n_stations == 4 and c.verdict in ("beats", "ties", "loses", "undetermined")
        assert f"| {c.a.split()[0]} |" in rep.split("## Day of year", 1)[1]
    assert (tmp_path / "out" / "calendar_study_scores.csv").stat().st_size > 100
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    comps = summary["leave-site-out"]["comparisons"]
    pairs = {(c["a"], c["b"], c["metric"]) for c in comps}
    assert pairs >= {("forest", "linear", "ubRMSE"), ("forest", "mean", "ubRMSE")}
    assert all(c["verdict"] in ("beats", "ties", "loses", "undetermined") for c in comps)
    for name in (
        "temporal.png",
        "leave_site_out.png",
        "temporal_scores.csv",
        "leave_site_out_predictions.csv",
        "leave_site_out_spatiotemporal.png",
        "leave_site_out_spatiotemporal_scores.csv",
        "knndm_gfunction.png",
        "knndm_scores.csv",
        "summary.json",
    ):
        assert (tmp_path / "out" / name).stat().st_size > 100
    scores = pd.read_csv(tmp_path / "out" / "leave_site_out_scores.csv")
    assert set(scores["station"]) == {"A", "B", "C", "D", "median"}
    # deterministic: same seed, same numbers
    again = E.run_experiments(
        tmp_path / "out2", stations=synth["ss"], experiments=["leave-site-out"], n_estimators=10, n_jobs=1, plots=False
    )
    pd.testing.assert_frame_equal(again.results["leave-site-out"].scores, res.results["leave-site-out"].scores)


def test_cli_stations_experiment_on_a_csv_station_set(synth: dict, tmp_path: Path) -> None:
    prec = synth["table"].pivot(index="date", columns="station", values="precipitation").fillna(0.0)
    prec.index = prec.index.strftime("%Y-%m-%d")
    prec.index.name = "date"
    prec.to_csv(tmp_path / "prec.csv")
    out = tmp_path / "cli"
    r = CliRunner().invoke(
        cli,
        [
            "stations-experiment",
            "--out",
            str(out),
            "--source",
            str(synth["data"]),
            "--format",
            "csv",
            "--metadata",
            str(synth["meta"]),
            "--precipitation",
            str(tmp_path / "prec.csv"),
            "--experiment",
            "leave-site-out",
            "--trees",
            "5",
            "--threads",
            "1",
            "--no-plots",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "leave-site-out: forest median R" in r.output and (out / "report.md").is_file()
    assert re.search(r"vs linear: (beats|ties|loses|undetermined) .*\d+ wins?, \d+ ties?", r.output)
    assert not (out / "temporal_scores.csv").exists()
    r = CliRunner().invoke(cli, ["stations-experiment", "--out", str(out), "--source", str(synth["data"])])
    assert r.exit_code != 0 and "--format" in r.output


def test_read_daily_precipitation_formats_and_errors(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text(",Date,RF5,Crys 1\n0,7/1/2023,1.5,0\n1,7/2/2023,0,2.25\n")
    ss = S.StationSet(
        [
            S.Station(
                id="R4",
                lat=39.3,
                lon=-107.0,
                name="RF 5",
                data=pd.DataFrame({"sm": [0.2]}, index=pd.DatetimeIndex(["2023-07-01"], tz="UTC")),
            )
        ]
    )
    p = E.read_daily_precipitation(tmp_path / "p.csv")  # no stations: every column as it is
    assert list(p.columns) == ["RF5", "Crys 1"] and p.loc["2023-07-02", "Crys 1"] == 2.25
    # a water-input column that matches no station: an error, or left out and said with strict=False
    with pytest.raises(DataError, match=r"column\(s\) \['Crys 1'\] match no station"):
        E.read_daily_precipitation(tmp_path / "p.csv", ss)
    with pytest.warns(DataLossWarning, match=r"\['Crys 1'\] match no station .*left out"):
        p = E.read_daily_precipitation(tmp_path / "p.csv", ss, strict=False)
    assert list(p.columns) == ["R4"] and p.loc["2023-07-01", "R4"] == 1.5
    (tmp_path / "q.csv").write_text("date,X\n2023-07-01,1\nyesterday,2\n")
    with pytest.raises(DataError, match="yesterday"):
        E.read_daily_precipitation(tmp_path / "q.csv")
    with pytest.raises(ConfigError, match="unknown experiment"):
        E.run_experiments(tmp_path, stations=ss, experiments=["random"])


# --------------------------------------------------------------------------------------
# the real stations
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> E.ExperimentsReport:
    out = tmp_path_factory.mktemp("real")
    # Roaring Fork's soil temperatures below 5 cm are missing at some stations: left out, and said.
    # The forest and the hybrid (the boosted model and the day-of-year study are exercised on the synthetic
    # network; their Roaring Fork numbers are in the closing note, too slow for every CI run)
    with pytest.warns(DataLossWarning, match=r"soil_temperature_10 \(no values at station\(s\) \['R4'\]\)"):
        return E.run_experiments(
            out, data_dir, n_estimators=50, n_jobs=1, plots=False, models=("forest", "hybrid"), calendar_study=False
        )


@pytest.mark.data
def test_real_tables_use_prism_and_the_gauge(real: E.ExperimentsReport, data_dir: Path) -> None:
    rf = real.tables["leave-site-out"]
    assert rf["station"].nunique() == 15
    prism = pd.read_csv(data_dir / "crns" / "roaring_fork_co_usgs" / "DailyPRISM_Ppt.csv")
    # C2 is "Crys 1", R4 is "RF 5" (PRISM column "RF5")
    for sid, col in (("C2", "Crys 1"), ("R4", "RF5")):
        g = rf[rf["station"] == sid].set_index("date")["precipitation"]
        want = prism.set_index(pd.to_datetime(prism["Date"], format="%m/%d/%Y"))[col]
        common = g.index.intersection(want.index)
        assert len(common) > 150
        np.testing.assert_allclose(g[common], want[common])
    assert (rf["precip_source"] == "table").all()
    fsc = real.tables["temporal"]
    assert (fsc["precip_source"] == "gauge").all()
    # the FSC001 gauge has no 2014 record: missing, not dry
    assert fsc.loc[fsc["date"].dt.year == 2014, "precipitation"].isna().all()
    assert real.tables["leave-site-out"].attrs["tdr_depths"]["C1"] == [5.0, 10.0, 20.0, 50.0]


@pytest.mark.data
def test_real_tdr_baseline_one_station_day_by_hand(real: E.ExperimentsReport, data_dir: Path) -> None:
    ss = S.read_roaring_fork(data_dir / "crns" / "roaring_fork_co_usgs")
    st = ss["C1"]
    rf = real.tables["leave-site-out"]
    row = rf[(rf["station"] == "C1") & (rf["date"] == "2023-08-15")].iloc[0]
    depths = np.array([5.0, 10.0, 20.0, 50.0])
    # the day's TDR means recomputed from the half-hourly series
    day = st.data.loc["2023-08-15", ["tdr_5", "tdr_10", "tdr_20", "tdr_50"]].mean().to_numpy()
    np.testing.assert_allclose(row[["tdr_5", "tdr_10", "tdr_20", "tdr_50"]].to_numpy(float), day)
    theta = float(day.mean())
    for _ in range(100):
        d86 = float(penetration_depth(0.0, st.bulk_density, theta, st.lattice_water, st.soc))
        w = vertical_weight(depths, d86)
        theta = float((w * day).sum() / w.sum())
    assert row["tdr_weighted"] == pytest.approx(theta, abs=1e-6)
    assert row["tdr_d86"] == pytest.approx(d86, rel=1e-5)
    assert 10 < row["tdr_d86"] < 80


@pytest.mark.data
def test_real_experiments_forest_beats_mean_and_linear(real: E.ExperimentsReport) -> None:
    tmp = real.results["temporal"]
    f = tmp.folds[0]
    assert tmp.predictions["station"].unique().tolist() == ["FSC001"]
    assert f["train_end"] < tmp.params["split_date"] <= f["test_start"]
    lso = real.results["leave-site-out"]
    assert len(lso.folds) == 15
    for res in (tmp, lso):
        med = res.medians()
        assert med.loc["forest", "ubRMSE"] < med.loc["linear", "ubRMSE"] < med.loc["mean", "ubRMSE"]
        assert med.loc["forest", "R"] > 0.8
    assert "tdr" in lso.medians().index and "tdr" not in tmp.medians().index


def test_nested_selection_chooses_inside_each_fold_from_its_training_stations(synth: dict) -> None:
    """select=True: each fold's ``selected`` is the candidate with the lowest inner median ubRMSE, found by a
    spatio-temporal CV on that fold's training stations only; its predictions are that candidate's."""
    from smengine.experiments._run import _select_inner

    res = E.leave_site_out(synth["table"], n_estimators=TREES, n_jobs=1, models=("forest", "hybrid"), select=True)
    p = res.predictions
    for f in res.folds:
        inner = f["selection"]
        assert set(inner) == {"forest", "hybrid", "linear"}
        assert f["selected"] == min(inner, key=inner.get)
        rows = p["fold"] == f["fold"]
        np.testing.assert_array_equal(p.loc[rows, "selected"], p.loc[rows, f["selected"]])
        # by hand: the same choice from the fold's own training rows (the held-out station never enters)
        held = f["test_stations"]
        train = synth["table"][~synth["table"]["station"].isin(held)]
        train = train[np.isfinite(train[res.features]).all(axis=1) & train["target"].notna()]
        again, scores = _select_inner(
            train, res.features, ("forest", "hybrid", "linear"), random_state=0, n_jobs=1, n_estimators=TREES
        )
        assert again == f["selected"] and scores == inner
    assert res.comparison("selected", "linear", "ubRMSE") is not None
    # the inner folds are select_model's site-time folds, written out: 4 station groups x 4 equal-day periods
    from sklearn.model_selection import GroupKFold

    st = train["station"].to_numpy()
    days = np.sort(train["date"].unique())
    period = np.searchsorted(days[[round(i * len(days) / 4) for i in range(4)]], train["date"], side="right") - 1
    err = np.full(len(train), np.nan)
    for _, held in GroupKFold(min(4, len(set(st)))).split(train, groups=st):
        mask = np.zeros(len(train), bool)
        mask[held] = True
        for b in range(4):
            tr, te = ~mask & (period != b), mask & (period == b)
            err[te] = E.linear_baseline(train[tr], train[te], res.features)[0] - train.loc[te, "target"]
    assert scores["linear"] == pytest.approx(pd.Series(err).groupby(st).std(ddof=0).median(), rel=1e-12)
    with pytest.raises(ValidationError, match="at least 3 training stations"):
        _select_inner(train[train["station"].isin(["A", "B"])], res.features, ("linear",), random_state=0, n_jobs=1)


@pytest.mark.data
def test_real_roaring_fork_hybrid_penalty_needs_new_days_held_out(real: E.ExperimentsReport) -> None:
    """The hybrid base's ridge penalty, chosen with the days held out as well as the stations, is strong
    (>= 100) on Roaring Fork; station folds alone score every penalty better than it will do on new days."""
    from sklearn.model_selection import GroupKFold

    from smengine.model import RIDGE_ALPHAS, choose_ridge_alpha
    from smengine.model._hybrid import _ridge

    t = real.tables["leave-site-out-spatiotemporal"]
    f = [c for c in t.attrs["features"]]
    t = t[np.isfinite(t[f].to_numpy(float)).all(axis=1) & t["target"].notna()]
    X, y = t[f].to_numpy(np.float32), t["target"].to_numpy()
    st, dt = t["station"].to_numpy(object), pd.to_datetime(t["date"]).to_numpy()
    alpha, scores = choose_ridge_alpha(X, y, st, dt)
    assert alpha >= 100 and scores[alpha] < scores[RIDGE_ALPHAS[0]]
    site = {}
    for a in RIDGE_ALPHAS:
        err = np.full(y.size, np.nan)
        for tr, te in GroupKFold(5).split(X, groups=st):
            coef, b0 = _ridge(X[tr], y[tr], np.arange(len(f)), a)
            err[te] = b0 + X[te].astype(np.float64) @ coef - y[te]
        site[a] = pd.Series(err).groupby(st).std(ddof=0).median()
    assert min(site.values()) < scores[alpha]  # station folds alone: optimistic


@pytest.mark.data
def test_real_roaring_fork_verdicts_come_with_per_station_intervals(real: E.ExperimentsReport) -> None:
    """The split a map user meets (new places, new days) and the optimistic ones, side by side: the forest
    beats the training mean under every Roaring Fork split, by intervals that exclude 0 at every station
    count; each comparison lists its 15 stations as wins, ties or losses."""
    for e in ("leave-site-out", "leave-site-out-spatiotemporal", "knndm"):
        res = real.results[e]
        for b in ("linear", "mean"):
            c = res.comparison("forest", b, "ubRMSE")
            assert c is not None and c.n_stations == 15 and sum(c.counts.values()) == 15
            assert res.forest_beats()[b] is (c.verdict == "beats")
            per = c.per_station
            assert ((per["ci_low"] <= per["difference"]) & (per["difference"] <= per["ci_high"])).all()
        assert res.comparison("forest", "mean", "ubRMSE").verdict == "beats"
    rep = real.report.read_text()
    assert "## Which number to believe" in rep and "what a product user meets" in rep
    # the network's own columns: soil temperature at 5 cm (at every station) is a covariate, the counts never
    t = real.tables["leave-site-out-spatiotemporal"]
    assert "soil_temperature_5" in t.attrs["features"] and t.attrs["units"]["soil_temperature_5"] == "degC"
    assert "soil_temperature_50" not in t.attrs["features"] and "counts" not in t.attrs["features"]
    assert "`counts` (neutron counts: the target's raw signal)" in rep
    assert rep.count("| forest vs linear | ubRMSE |") == 4
    # the water balance is a feature at every Roaring Fork station, and the hybrid is compared with the baselines
    assert "wb300" in t.attrs["features"] and not t["wb300"].isna().any()
    st = real.results["leave-site-out-spatiotemporal"]
    assert st.comparison("hybrid", "mean", "ubRMSE").verdict == "beats"
    assert st.comparison("hybrid", "linear", "ubRMSE").n_stations == 15
