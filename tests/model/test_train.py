"""smengine.model training: grouped CV, hyper-parameter search, model card, determinism."""

from __future__ import annotations

import inspect
import itertools
import json
import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, cross_val_predict

from smengine.errors import ConfigError, DataLossWarning, ValidationError
from smengine.metrics import evaluate, rmse
from smengine.model._card import ModelCard, json_safe
from smengine.model._hash import forest_hash
from smengine.model._train import DEFAULT_PARAM_GRID, Forest, _predict, forest_size_curve, train

FEATURES = ["a", "b", "c", "clay", "elev", "doy_sin", "doy_cos"]
UNITS = {"a": "dB", "b": "m3 m-3", "c": "K", "clay": "%", "elev": "m", "doy_sin": "1", "doy_cos": "1"}
N_TREES, N_SEARCH = 15, 8
FAST = {"n_estimators": N_TREES, "search_estimators": N_SEARCH, "n_jobs": 1, "progress": False}


def synthetic_table(n_stations: int = 8, seed: int = 0, step: str = "4D") -> pd.DataFrame:
    """8 stations × 3 years (every 4th day); target a nonlinear function of the features + noise.

    Station k sits at x = 4 020 000 + 100 km·(k // 2) + 40 km·(k mod 2): two stations per
    100-km block, four blocks.
    """
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2018-01-01", "2020-12-31", freq=step)
    doy = 2 * np.pi * dates.day_of_year.to_numpy() / 365.25
    frames = []
    for k in range(n_stations):
        n = dates.size
        a = rng.normal(-12, 3, n)
        b = np.clip(0.25 + 0.1 * np.sin(doy + k) + rng.normal(0, 0.03, n), 0.02, 0.5)
        c = 283 + 10 * np.sin(doy - 1.5) + rng.normal(0, 2, n)
        clay, elev = np.full(n, 10.0 + 4 * k), np.full(n, 100.0 + 150 * (k % 3))
        y = (
            0.05
            + 0.6 * b
            + 0.03 * np.tanh((a + 12) / 2)
            + 0.004 * clay
            - 0.0001 * elev
            + 0.02 * (b > 0.3)
            + rng.normal(0, 0.01, n)
        )
        frames.append(
            pd.DataFrame(
                {
                    "station": f"S{k}",
                    "date": dates,
                    "target": y,
                    "a": a,
                    "b": b,
                    "c": c,
                    "clay": clay,
                    "elev": elev,
                    "doy_sin": np.sin(doy),
                    "doy_cos": np.cos(doy),
                    "x": 4_020_000.0 + 100_000 * (k // 2) + 40_000 * (k % 2),
                    "y": 3_050_000.0 + 1_000 * k,
                    "tile": "t000_000",
                }
            )
        )
    t = pd.concat(frames, ignore_index=True)
    t.attrs.update(features=list(FEATURES), units=dict(UNITS), kinds={f: "dynamic" for f in FEATURES})
    return t


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic_table()


@pytest.fixture(scope="module")
def forest(table: pd.DataFrame) -> Forest:
    return train(table, **FAST)


def _X(table: pd.DataFrame) -> np.ndarray:
    return table[FEATURES].to_numpy(np.float32)


def _scheme(forest: Forest, scheme: str) -> pd.DataFrame:
    return forest.cv_predictions[forest.cv_predictions["scheme"] == scheme].reset_index(drop=True)


def _refit_fold(forest: Forest, table: pd.DataFrame, scheme: str, k: int) -> None:
    """Re-derive fold k of a scheme: fit on every other fold with the same seed, compare."""
    sub = _scheme(forest, scheme)
    # the stored rows are the table's rows in the same (station, date) order
    assert sub["station"].tolist() == table["station"].tolist()
    assert (sub["date"].to_numpy() == table["date"].to_numpy()).all()
    test = (sub["fold"] == k).to_numpy()
    entry = forest.card.cv[scheme]
    if entry["nested"]:  # the fold's own selection
        sel = entry["fold_selection"][k]
        assert sel["fold"] == k
        hp, n = sel["params"], sel["n_estimators"]
    else:
        hp, n = forest.card.hyperparameters, N_TREES
    rf = RandomForestRegressor(
        n_estimators=n,
        max_features=hp["max_features"],
        min_samples_leaf=hp["min_samples_leaf"],
        bootstrap=True,
        random_state=0,
    )
    X, y = _X(table), table["target"].to_numpy()
    rf.fit(X[~test], y[~test])
    np.testing.assert_array_equal(sub.loc[test, "prediction"].to_numpy(), rf.predict(X[test]))


# --------------------------------------------------------------------------- defaults
def test_defaults_are_science_4_3(forest: Forest) -> None:
    p = inspect.signature(train).parameters
    assert p["n_estimators"].default == 500
    assert p["max_features"].default == pytest.approx(1 / 3)
    assert p["min_samples_leaf"].default == 5
    assert tuple(p["cv"].default) == ("site", "year", "block")
    assert p["search"].default is True and p["block_size"].default == 100_000.0
    assert p["random_state"].default == 0 and p["n_jobs"].default == -1
    assert DEFAULT_PARAM_GRID == {"max_features": (0.2, 0.33, 0.5), "min_samples_leaf": (1, 5, 20)}
    rf = forest.estimator
    assert isinstance(rf, RandomForestRegressor)
    assert rf.bootstrap is True and rf.oob_score is True and rf.random_state == 0 and rf.n_estimators == N_TREES
    assert forest.card.target == {"name": "target", "units": "m3 m-3"}


def test_without_search_uses_the_given_params(table: pd.DataFrame) -> None:
    f = train(table, cv="site", search=False, n_splits=None, **FAST)
    rf = f.estimator
    assert rf.max_features == pytest.approx(1 / 3) and rf.min_samples_leaf == 5
    assert f.card.hyperparameters["max_features"] == pytest.approx(1 / 3)
    assert f.card.hyperparameters["min_samples_leaf"] == 5 and "n_jobs" not in f.card.hyperparameters
    assert f.card.search == []
    # n_splits=None: one station per fold
    assert f.card.cv["site"]["n_folds"] == 8 and f.card.cv["site"]["splitter"] == "LeaveOneGroupOut"
    assert _scheme(f, "site").groupby("fold")["station"].nunique().eq(1).all()
    # features are float32 in the forest
    assert rf.n_features_in_ == len(FEATURES) and f.features == FEATURES


# --------------------------------------------------------------------------- NaN rows
def test_nan_rows_are_dropped_and_counted(table: pd.DataFrame) -> None:
    t = table.copy()
    t.loc[[0, 1, 2, 3, 4], "target"] = np.nan
    t.loc[[3, 4, 10, 11, 12, 13, 14], "a"] = np.nan  # rows 3, 4 have both
    t.loc[[20, 21], "b"] = np.inf
    t.loc[[22], "c"] = -np.inf
    f = train(t, cv="site", search=False, **FAST)
    nd = f.card.n_dropped
    assert nd == {
        "total": 13,
        "target": 5,
        "target_range": 0,
        "station": 0,
        "date": 0,
        "features": {"a": 7, "b": 2, "c": 1},
    }
    assert f.card.n_samples == len(t) - 13 == f.estimator.oob_prediction_.shape[0]
    bad = t.index.isin([0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 20, 21, 22])
    kept = t.loc[~bad, ["station", "date"]].reset_index(drop=True)
    sub = _scheme(f, "site")
    assert sub["station"].tolist() == kept["station"].tolist()
    assert (sub["date"].to_numpy() == kept["date"].to_numpy()).all()
    assert np.isfinite(sub["prediction"]).all()
    # the forest equals one fitted on the complete rows only
    ref = train(t.loc[~bad].reset_index(drop=True), cv="site", search=False, **FAST)
    assert ref.card.content_hash == f.card.content_hash
    assert "dropped 13" in f.card.to_markdown() and "a 7" in f.card.to_markdown()


def test_implausible_targets_are_left_out_loudly_and_percent_is_refused(table: pd.DataFrame) -> None:
    t = table.copy()
    t.loc[[5, 6], "target"] = [1.5, -0.2]  # theta = 1.5 passed before
    with pytest.warns(DataLossWarning, match=r"2 of \d+ target values lie outside the plausible range \[0, 1\].*1\.5"):
        f = train(t, cv="site", search=False, **FAST)
    assert f.card.n_dropped["target_range"] == 2 and f.card.n_samples == len(t) - 2
    ref = train(t.drop(index=[5, 6]).reset_index(drop=True), cv="site", search=False, **FAST)
    assert ref.card.content_hash == f.card.content_hash
    with pytest.raises(ValidationError, match=r"is the target in m3 m-3 \(not %"):
        train(t.assign(target=t["target"] * 100), cv="site", search=False, **FAST)
    g = train(t, cv="site", search=False, target_range=None, **FAST)  # asked not to check
    assert g.card.n_dropped["target_range"] == 0


# --------------------------------------------------------------------------- grouped CV
def test_leave_site_out_never_trains_on_the_test_station(forest: Forest, table: pd.DataFrame) -> None:
    sub = _scheme(forest, "site")
    assert len(sub) == len(table) and sub["prediction"].notna().all()
    assert (sub["group"] == sub["station"]).all()
    # each station sits in exactly one fold, so no fold trains on its own test stations
    assert sub.groupby("station")["fold"].nunique().eq(1).all()
    for k, g in sub.groupby("fold"):
        assert set(g["station"]).isdisjoint(sub.loc[sub["fold"] != k, "station"])
    # folds are sklearn's GroupKFold(min(5, 8 stations))
    assert forest.card.cv["site"] | {"metrics": None, "site_median": None, "fold_selection": None} == {
        "splitter": "GroupKFold(n_splits=5)",
        "n_folds": 5,
        "n_groups": 8,
        "nested": True,
        "metrics": None,
        "site_median": None,
        "fold_selection": None,
    }
    for k, (_, te) in enumerate(GroupKFold(5).split(_X(table), groups=table["station"])):
        assert (sub.loc[te, "fold"] == k).all()
    _refit_fold(forest, table, "site", 1)


def test_leave_year_out(forest: Forest, table: pd.DataFrame) -> None:
    sub = _scheme(forest, "year")
    years = pd.DatetimeIndex(sub["date"]).year.astype(str)
    assert (sub["group"] == years).all()
    assert sub.groupby("group")["fold"].nunique().eq(1).all()
    assert sorted(sub.groupby("fold")["group"].first()) == ["2018", "2019", "2020"]
    assert sub.groupby("fold")["group"].nunique().eq(1).all()  # one year per fold
    assert forest.card.cv["year"]["n_folds"] == 3 and forest.card.cv["year"]["n_groups"] == 3
    _refit_fold(forest, table, "year", 2)


def test_block_groups(forest: Forest, table: pd.DataFrame) -> None:
    sub = _scheme(forest, "block")
    want = [f"{int(np.floor(x / 1e5))}_{int(np.floor(y / 1e5))}" for x, y in zip(table["x"], table["y"], strict=True)]
    assert sub["group"].tolist() == want
    assert sorted(set(want)) == ["40_30", "41_30", "42_30", "43_30"]
    assert sub.groupby("group")["fold"].nunique().eq(1).all()
    assert forest.card.cv["block"]["n_groups"] == 4 and forest.card.cv["block"]["block_size"] == 1e5
    # two stations share each block and are always left out together
    assert sub.groupby("fold")["station"].nunique().eq(2).all()
    _refit_fold(forest, table, "block", 0)
    # blocks of another size, and negative coordinates floor downwards
    t = table.copy()
    t["x"] -= 4_100_000.0
    f = train(t, cv="block", search=False, block_size=50_000.0, **FAST)
    got = _scheme(f, "block").groupby("station")["group"].first()
    assert got["S0"] == "-2_61" and got["S1"] == "-1_61" and got["S2"] == "0_61" and got["S7"] == "5_61"


def test_hp_search_picks_the_lowest_cv_rmse(forest: Forest, table: pd.DataFrame) -> None:
    s = forest.card.search
    assert len(s) == 9
    assert [tuple(c["params"].values()) for c in s] == list(itertools.product((0.2, 0.33, 0.5), (1, 5, 20)))
    assert all(c["n_estimators"] == N_SEARCH and c["cv"] == "site" for c in s)
    # every candidate's score equals sklearn's own grouped cross_val_predict
    X, y = _X(table), table["target"].to_numpy()
    for c in s:
        est = RandomForestRegressor(n_estimators=N_SEARCH, bootstrap=True, random_state=0, **c["params"])
        p = cross_val_predict(est, X, y, groups=table["station"], cv=GroupKFold(5))
        assert c["RMSE"] == pytest.approx(rmse(p, y), rel=1e-12)
    best = int(np.argmin([c["RMSE"] for c in s]))
    assert [c["chosen"] for c in s] == [i == best for i in range(9)]
    assert forest.card.chosen == s[best]
    for k, v in s[best]["params"].items():
        assert getattr(forest.estimator, k) == v == forest.card.hyperparameters[k]
    assert len({c["RMSE"] for c in s}) > 3  # the grid makes a difference here (7 features)


def test_model_selection_is_nested(forest: Forest, table: pd.DataFrame) -> None:
    """Each fold's choice is the search run on that fold's training rows alone, and the
    reported CV uses it; the search on every station only chooses the final forest."""
    sub = _scheme(forest, "site")
    sel = forest.card.cv["site"]["fold_selection"]
    assert [s["fold"] for s in sel] == list(range(5))
    X, y = _X(table), table["target"].to_numpy()
    for k in (0, 3):
        train_rows = table.loc[(sub["fold"] != k).to_numpy()].reset_index(drop=True)
        alone = train(train_rows, cv=(), **FAST)  # the search on those stations only
        assert sel[k]["params"] == {**alone.card.chosen["params"], "max_features": sel[k]["params"]["max_features"]}
        assert alone.card.chosen["params"]["max_features"] == sel[k]["params"]["max_features"]
        assert sel[k]["n_estimators"] == N_TREES and "GroupKFold" in sel[k]["selection"]
    _refit_fold(forest, table, "site", 3)
    # not nested: every fold reuses the choice made on all stations (the old, optimistic CV)
    flat = train(table, cv="site", nested=False, **FAST)
    assert flat.card.cv["site"]["nested"] is False and "fold_selection" not in flat.card.cv["site"]
    assert flat.card.chosen == forest.card.chosen  # the same final forest
    _refit_fold(flat, table, "site", 1)
    # the choices differ between folds here, so nesting changes the reported predictions
    assert len({json.dumps(s["params"], sort_keys=True) for s in sel}) > 1
    assert not np.array_equal(_scheme(flat, "site")["prediction"], sub["prediction"])
    md = forest.card.to_markdown()
    assert "nested selection" in md and "not the model's skill" in md
    assert "not nested" in flat.card.to_markdown()
    assert X.shape[0] == y.size


def test_nested_selection_with_one_station_per_training_fold_uses_the_defaults() -> None:
    t = synthetic_table(n_stations=2)
    f = train(t, cv="site", n_splits=None, **FAST)
    sel = f.card.cv["site"]["fold_selection"]
    assert len(sel) == 2 and all("one station" in s["selection"] for s in sel)
    assert all(s["params"]["min_samples_leaf"] == 5 for s in sel)


# --------------------------------------------------------------------------- metrics
def test_site_metrics_equal_evaluate_on_cv_predictions(forest: Forest) -> None:
    sub = _scheme(forest, "site")
    assert list(forest.site_metrics.index) == [f"S{k}" for k in range(8)]
    assert forest.card.stations == [f"S{k}" for k in range(8)]
    for sid, g in sub.groupby("station"):
        want = evaluate(g["prediction"].to_numpy(), g["target"].to_numpy(), g["date"].to_numpy())
        got = forest.site_metrics.loc[sid].to_dict()
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-12, nan_ok=True), (sid, k)
        assert forest.card.site_metrics[sid] == json_safe(want)
    for scheme in ("site", "year", "block"):
        g = _scheme(forest, scheme)
        assert forest.card.cv[scheme]["metrics"] == json_safe(evaluate(g["prediction"], g["target"]))
    med = forest.card.cv["site"]["site_median"]
    assert med["ubRMSE"] == pytest.approx(float(forest.site_metrics["ubRMSE"].median()))


def test_oob_score_equals_sklearn(forest: Forest, table: pd.DataFrame) -> None:
    rf = forest.estimator
    assert forest.card.oob_score == rf.oob_score_
    assert rf.oob_score_ == pytest.approx(r2_score(table["target"], rf.oob_prediction_))
    n_no = forest.card.oob_metrics["n_without_oob"]
    assert forest.card.oob_metrics["n"] == len(table) - n_no


# --------------------------------------------------------------------------- determinism
def test_same_inputs_same_forest_and_card(forest: Forest, table: pd.DataFrame) -> None:
    again = train(table.sample(frac=1.0, random_state=5), **{**FAST, "n_jobs": 2})  # row order and threads
    assert again.card.content_hash == forest.card.content_hash == forest_hash(again.estimator)
    assert again.card == forest.card and hash(again.card) == hash(forest.card)
    pd.testing.assert_frame_equal(again.cv_predictions, forest.cv_predictions)
    other = train(table, **{**FAST, "random_state": 1})
    assert other.card.content_hash != forest.card.content_hash and other.card != forest.card


# --------------------------------------------------------------------------- card
def _plain(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_plain(v) for v in obj)
    return obj is None or type(obj) in (bool, int, float, str)


def test_card_round_trips_and_markdown(forest: Forest) -> None:
    card = forest.card
    d = card.to_dict()
    assert _plain(d) and d["created"].endswith("+00:00")
    assert ModelCard.from_dict(d) == card and ModelCard.from_json(card.to_json()) == card
    assert ModelCard.from_json(card.to_json()).to_dict() == d
    json.loads(card.to_json(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert card.features[0] == {"name": "a", "units": "dB", "kind": "dynamic", "source": None}
    assert card.feature_names == FEATURES and card.period == ["2018-01-01", "2020-12-28"]
    assert card.n_samples == len(forest.cv_predictions) // 3
    assert set(card.versions) >= {"smengine", "scikit-learn", "numpy", "treelite", "python"}
    # created does not take part in equality; everything else does
    assert ModelCard.from_dict({**d, "created": "2000-01-01T00:00:00+00:00"}) == card
    assert ModelCard.from_dict({**d, "n_samples": 1}) != card
    with pytest.raises(ConfigError, match="unknown keys"):
        ModelCard.from_dict({**d, "colour": "blue"})
    with pytest.raises(ConfigError, match="missing keys"):
        ModelCard.from_dict({k: v for k, v in d.items() if k != "content_hash"})
    # a card written under pytesmo's metric names (smengine before one-name metrics) reads the same
    old_names = {"n": "n_obs", "bias": "BIAS", "RMSE": "RMSD", "ubRMSE": "urmsd", "anomaly_R_35d": "anomaly_R_moving"}

    def back(m):
        return {old_names.get(k, k): v for k, v in m.items()}

    legacy = json.loads(card.to_json())
    legacy["search"] = [back(c) for c in legacy["search"]]
    legacy["cv"] = {
        k: {**c, **{f: back(c[f]) for f in ("metrics", "site_median") if f in c}} for k, c in legacy["cv"].items()
    }
    legacy["site_metrics"] = {k: back(v) for k, v in legacy["site_metrics"].items()}
    legacy["oob_metrics"] = back(legacy["oob_metrics"])
    assert "RMSD" in json.dumps(legacy) and "RMSD" not in card.to_json()
    assert ModelCard.from_dict(legacy) == card
    md = card.to_markdown()
    for name, units in UNITS.items():
        assert f"| {name} | {units} |" in md
    assert card.content_hash in md and "## Per site" in md and "| S7 |" in md
    assert "| site | GroupKFold(n_splits=5), nested selection | 5 | 8 |" in md and "**yes**" in md
    # NaN metrics become None
    c2 = ModelCard.from_dict({**d, "oob_score": float("nan"), "oob_metrics": {"R": np.float32("nan")}})
    assert c2.oob_score is None and c2.oob_metrics == {"R": None}


def test_forest_predict_and_repr(forest: Forest, table: pd.DataFrame) -> None:
    X = _X(table[:50]).copy()
    X[3, 2] = np.nan
    X[7, 0] = np.inf
    got = forest.predict(X)
    ok = np.ones(50, bool)
    ok[[3, 7]] = False
    assert np.isnan(got[~ok]).all()
    np.testing.assert_array_equal(got[ok], forest.estimator.predict(X[ok]))
    # a table: columns by name, any order
    np.testing.assert_array_equal(
        forest.predict(table[:50][FEATURES[::-1] + ["station"]]), forest.estimator.predict(_X(table[:50]))
    )
    with pytest.raises(ValidationError, match=r"\['clay'\] missing"):
        forest.predict(table[:5].drop(columns="clay"))
    with pytest.raises(ValidationError, match="shape"):
        forest.predict(X[:, :3])
    # rows split over threads: bitwise equal to the single-threaded sum over trees
    big = np.repeat(_X(table), 3, axis=0)
    np.testing.assert_array_equal(_predict(forest.estimator, big, 2, min_rows=100), forest.estimator.predict(big))
    r = repr(forest)
    assert r.startswith(f"<Forest {N_TREES} trees, 7 features, 8 stations") and "sha256:" in r


def test_compile_gives_an_exact_compiled_forest_with_the_card(forest: Forest, table: pd.DataFrame, tmp_path) -> None:
    cf = forest.compile()
    assert cf.card == forest.card and cf.source_hash == forest.card.content_hash
    assert cf.feature_names == tuple(forest.features)
    X = _X(table)
    np.testing.assert_array_equal(cf.predict(X, n_threads=1), forest.estimator.predict(X))
    back = type(cf).load(cf.save(tmp_path / "forest.smf.h5"))
    assert back == cf and back.card == forest.card


# --------------------------------------------------------------------------- errors
def test_errors_name_the_problem(table: pd.DataFrame) -> None:
    small = table[table["date"] < "2018-03-01"].copy()
    small.attrs = dict(table.attrs)
    with pytest.raises(ConfigError, match=r"\['clay'\] missing"):
        train(small.drop(columns="clay"), **FAST)
    with pytest.raises(ConfigError, match=r"\['sm'\] missing"):
        train(small, target="sm", **FAST)
    with pytest.raises(ConfigError, match=r"unknown cv scheme\(s\) \['random'\]"):
        train(small, cv=("site", "random"), **FAST)
    with pytest.raises(ConfigError, match=r"\['x', 'y'\] missing.*cv='block'"):
        train(small.drop(columns=["x", "y"]), **FAST)
    # without block CV, x and y are not needed
    f = train(small.drop(columns=["x", "y"]), cv=("site",), search=False, **FAST)
    assert list(f.card.cv) == ["site"]
    one = small[small["station"] == "S0"]
    with pytest.raises(ConfigError, match=r"at least 2 stations, got 1 \['S0'\]"):
        train(one, features=FEATURES, **FAST)
    nan = small.assign(target=np.nan)
    with pytest.raises(ValidationError, match="no complete rows"):
        train(nan, **FAST)
    with pytest.raises(ConfigError, match="no .attrs"):
        train(_no_attrs(small), **FAST)
    with pytest.raises(ConfigError, match="cannot be searched"):
        train(small, param_grid={"n_estimators": [10, 20]}, **FAST)
    with pytest.raises(ConfigError, match="n_estimators"):
        train(small, **{**FAST, "n_estimators": 0})
    with pytest.raises(ValidationError, match=r"\['tile'\] are not numeric"):
        train(small, features=[*FEATURES, "tile"], **FAST)


def test_progress_bar(table: pd.DataFrame, capsys: pytest.CaptureFixture[str]) -> None:
    train(table, cv="site", search=False, **{**FAST, "progress": True})
    err = capsys.readouterr().err
    assert "smengine train" in err and "6/6" in err  # 5 folds + the final fit
    train(table, cv="site", search=False, **FAST)
    assert capsys.readouterr().err == ""


def _no_attrs(t: pd.DataFrame) -> pd.DataFrame:
    t = t.copy()
    t.attrs = {}
    return t


def test_single_year_skips_year_cv(table: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    t = table[pd.DatetimeIndex(table["date"]).year == 2019].copy()
    t.attrs = dict(table.attrs)
    with caplog.at_level(logging.WARNING, logger="smengine.model._train"):
        f = train(t, cv=("site", "year"), search=False, **FAST)
    assert f.card.cv["year"] == {"skipped": "only one calendar year (2019)"}
    assert "year CV skipped" in caplog.text
    assert set(f.cv_predictions["scheme"]) == {"site"} and f.card.period == ["2019-01-04", "2019-12-30"]
    assert "skipped: only one calendar year" in f.card.to_markdown()


# --------------------------------------------------------------------------- end to end
def test_end_to_end_on_a_real_training_table(tmp_path) -> None:
    from smengine.features import FeatureSpec, training_table
    from smengine.grid import Grid
    from smengine.stations import Station, StationSet
    from smengine.tiles import TileStore, TileWriter

    days = np.arange(np.datetime64("2019-12-18"), np.datetime64("2020-01-14"))
    grid = Grid.from_bounds(4_321_000, 2_987_000, 4_333_000, 2_997_000, tile_size=100)  # 40×48 sub-pixels
    ny, nx = grid.subpixel_shape
    rng = np.random.default_rng(7)
    elev = np.cumsum(rng.normal(0, 1, (ny, nx)), axis=1).astype(np.float32)
    sm = (0.2 + 0.1 * np.sin(np.arange(days.size)[:, None, None] / 4.0 + elev[None] / 10)).astype(np.float32)
    with TileWriter(
        tmp_path / "t.h5",
        grid,
        days,
        ["elev"],
        ["s1"],
        {"elev": "m", "s1": "m3 m-3"},
        sources={"elev": "dem.tif"},
        tile_id="t000_000",
    ) as w:
        w.write_static("elev", elev)
        for t in range(days.size):
            w.write_dynamic(t, "s1", sm[t])
    store = TileStore.open(tmp_path / "t.h5")
    from pyproj import Transformer

    to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    hours = pd.date_range("2019-12-18", "2020-01-14", freq="1h", tz="UTC", inclusive="left")
    stations = []
    for i, (r, c) in enumerate([(8, 8), (8, 38), (30, 10), (32, 36)]):
        lon, lat = to_ll.transform(*grid.xy(r, c, subpixel=True))
        theta = 0.15 + 0.05 * i + 0.05 * np.sin(np.arange(hours.size) / 96.0)
        data = pd.DataFrame({"sm": theta, "abs_humidity": 6.0, "pressure": 990.0}, index=hours)
        stations.append(Station(id=f"ST{i}", lat=float(lat), lon=float(lon), data=data, bulk_density=1.4))
    tt = training_table(StationSet(stations), store, FeatureSpec(swi_T=(5.0,), swi_carry=False))
    assert len(tt) == 4 * days.size and {"x", "y"} <= set(tt.columns)
    f = train(tt, block_size=6_000.0, **FAST)
    card = f.card
    assert card.feature_names == tt.attrs["features"] == ["elev", "s1", "swi5_s1", "doy_sin", "doy_cos"]
    assert [x["units"] for x in card.features] == ["m", "m3 m-3", "m3 m-3", "1", "1"]
    assert [x["kind"] for x in card.features] == ["static", "dynamic", "swi", "calendar", "calendar"]
    assert card.features[0]["source"] == "dem.tif" and card.features[2]["source"] == "exp_filter(s1, T=5 d)"
    assert card.stations == ["ST0", "ST1", "ST2", "ST3"] and card.period == ["2019-12-18", "2020-01-13"]
    assert card.cv["site"]["n_folds"] == 4 and card.cv["year"]["n_folds"] == 2 and card.cv["block"]["n_groups"] == 4
    assert np.isfinite(f.predict(tt)).all()


# --------------------------------------------------------------------------- CLI
def test_cli_train_writes_a_compiled_forest_with_its_card(table: pd.DataFrame, tmp_path) -> None:
    from click.testing import CliRunner

    from smengine.cli import cli
    from smengine.model import CompiledForest

    csv = tmp_path / "table.csv"
    table.to_csv(csv, index=False)
    out, card = tmp_path / "m.smf.h5", tmp_path / "card.md"
    res = CliRunner().invoke(
        cli, ["train", str(csv), "--out", str(out), "--trees", "12", "--no-search", "--cv", "site", "--card", str(card)]
    )
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "12 trees" in res.output
    cf = CompiledForest.load(out)
    feats = list(table.attrs["features"])
    assert list(cf.feature_names) == feats and cf.card.stations == sorted(table["station"].unique())
    assert cf.card.hyperparameters["n_estimators"] == 12 and "site" in cf.card.cv
    assert "| " in card.read_text() and cf.card.content_hash in card.read_text()
    bad = CliRunner().invoke(cli, ["train", str(csv), "--out", str(out), "--cv", "random"])
    assert bad.exit_code != 0 and "unknown cv scheme" in bad.output


def test_dropped_rows_are_loud(table: pd.DataFrame) -> None:
    from smengine.errors import DataLossWarning
    from smengine.model._train import DROP_WARN_FRACTION

    gappy = table.copy()
    gappy.attrs = dict(table.attrs)
    gappy.loc[gappy.index[::3], "clay"] = np.nan  # a third of the rows
    with pytest.warns(DataLossWarning, match=r"rows \(3[34]%\) have NaN/inf .*worst features: clay 3[34]%"):
        f = train(gappy, cv=("site",), search=False, **FAST)
    assert f.card.n_dropped["features"] == {"clay": int(np.ceil(len(table) / 3))}
    few = table.copy()
    few.attrs = dict(table.attrs)
    few.loc[few.index[: int(DROP_WARN_FRACTION * len(few))], "clay"] = np.nan  # at the threshold: silent
    train(few, cv=("site",), search=False, **FAST)


# --------------------------------------------------------------------------- kNNDM
def test_knndm_cv_groups_stations_by_the_prediction_domain(table: pd.DataFrame) -> None:
    """Stations in a 340-km row, a domain 300 km wide around them: kNNDM folds keep stations
    whole, reproduce smengine.evaluate.knndm_folds, and their W is reported beside the W of
    grouped-by-station and random row-wise folds (the random one by far the worst)."""
    from smengine.evaluate import knndm_folds

    gx, gy = np.meshgrid(np.arange(3_900_000, 4_500_000, 10_000.0), np.arange(2_900_000, 3_200_000, 10_000.0))
    domain = np.c_[gx.ravel(), gy.ravel()]
    f = train(table, cv=("site", "knndm"), search=False, n_estimators=N_TREES, n_jobs=1, progress=False,
              knndm_domain=domain)  # fmt: skip
    e = f.card.cv["knndm"]
    assert e["splitter"].startswith("kNNDM folds") and e["n_folds"] == e["k"] == 5
    sub = _scheme(f, "knndm")
    assert (sub.groupby("station")["fold"].nunique() == 1).all()  # a station is never split
    want = knndm_folds(table[["x", "y"]].to_numpy(), domain, k=5, groups=table["station"].to_numpy(), seed=0)
    np.testing.assert_array_equal(sub["group"].astype(int).to_numpy(), want.folds)
    assert e["W"] == pytest.approx(want.W) and e["W"] <= e["W_grouped_by_station"] < e["W_random_rows"]
    assert f.knndm is not None and pytest.approx(e["W"]) == f.knndm.W
    _refit_fold(f, table, "knndm", 0)
    assert np.isfinite(e["metrics"]["RMSE"])


def test_knndm_cv_needs_coordinates_and_three_stations(table: pd.DataFrame, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ConfigError, match="x, y are needed for cv='block' and 'knndm'"):
        train(table.drop(columns=["x", "y"]), cv="knndm", search=False, n_estimators=5, n_jobs=1, progress=False)
    two = table[table["station"].isin(["S0", "S1"])]
    f = train(two, cv=("site", "knndm"), search=False, n_estimators=5, n_jobs=1, progress=False)
    assert "skipped" in f.card.cv["knndm"] and "at least 3 stations" in f.card.cv["knndm"]["skipped"]
    with pytest.raises(ConfigError, match="knndm"):
        forest_size_curve(table, cv="knndm")


def test_cli_train_knndm_with_a_domain_writes_the_g_function_plot(table: pd.DataFrame, tmp_path) -> None:
    from click.testing import CliRunner

    from smengine.cli import cli
    from smengine.model import CompiledForest

    csv = tmp_path / "table.csv"
    table.to_csv(csv, index=False)
    gx, gy = np.meshgrid(np.arange(3_900_000, 4_500_000, 20_000.0), np.arange(2_900_000, 3_200_000, 20_000.0))
    pd.DataFrame({"x": gx.ravel(), "y": gy.ravel()}).to_csv(tmp_path / "domain.csv", index=False)
    out = tmp_path / "m.smf.h5"
    args = ["train", str(csv), "--out", str(out), "--trees", "8", "--no-search", "--cv", "site,knndm"]
    res = CliRunner().invoke(cli, [*args, "--knndm-domain", str(tmp_path / "domain.csv")])
    assert res.exit_code == 0, res.output
    assert "kNNDM: W " in res.output and "450 given prediction points" in res.output
    assert (tmp_path / "m.smf.knndm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert CompiledForest.load(out).card.cv["knndm"]["n_folds"] == 5
    bad = CliRunner().invoke(cli, ["train", str(csv), "--out", str(out), "--cv", "site",
                                   "--knndm-domain", str(tmp_path / "domain.csv")])  # fmt: skip
    assert bad.exit_code != 0 and "goes with --cv" in bad.output
    (tmp_path / "nodomain.csv").write_text("lat,lon\n1,2\n")
    bad = CliRunner().invoke(cli, [*args, "--knndm-domain", str(tmp_path / "nodomain.csv")])
    assert bad.exit_code != 0 and "needs x and y columns" in bad.output


def test_cli_train_knndm_domain_from_a_folder_of_tiles(table: pd.DataFrame, tmp_path) -> None:
    """--knndm-domain TILES/: the pixel centres of every tile (here 4 tiles of 100 x 100 km around the stations)."""
    from click.testing import CliRunner

    from smengine.cli import _knndm_domain, cli
    from smengine.grid import Grid
    from smengine.tiles import TileWriter

    grid = Grid.from_bounds(4_000_000, 3_000_000, 4_400_000, 3_100_000, subpixel=2, tile_size=100)
    for tile in grid.tiles():
        tg = grid.tile_grid(tile)
        with TileWriter(tmp_path / "tiles" / f"{tile.id}.h5", tg, np.array(["2018-01-01"], "M8[D]"), ["elev"], [],
                        {"elev": "m"}, tile_id=tile.id) as w:  # fmt: skip
            w.write_static("elev", np.zeros(tg.subpixel_shape, np.float32))
    pts = _knndm_domain(tmp_path / "tiles")
    assert pts.shape == (4 * 100 * 100, 2)
    assert pts[:, 0].min() == 4_000_500 and pts[:, 0].max() == 4_399_500 and pts[:, 1].max() == 3_099_500
    csv = tmp_path / "table.csv"
    table.to_csv(csv, index=False)
    args = ["train", str(csv), "--out", str(tmp_path / "m.smf.h5"), "--trees", "8", "--no-search", "--cv", "knndm"]
    res = CliRunner().invoke(cli, [*args, "--knndm-domain", str(tmp_path / "tiles")])
    assert res.exit_code == 0, res.output
    assert "40000 given prediction points" in res.output
