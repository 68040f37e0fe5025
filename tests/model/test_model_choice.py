"""train(model=...) for boosting and hybrid models, select_model's spatio-temporal choice, and the CLI."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pandas as pd
import pytest

lgb = pytest.importorskip("lightgbm")

from click.testing import CliRunner  # noqa: E402
from sklearn.ensemble import RandomForestRegressor  # noqa: E402
from test_train import FEATURES, synthetic_table  # noqa: E402  (tests/model is on sys.path)

from smengine.cli import cli  # noqa: E402
from smengine.errors import ConfigError  # noqa: E402
from smengine.evaluate import paired_station_ci  # noqa: E402
from smengine.model import (  # noqa: E402
    DEFAULT_BOOST_GRID,
    DEFAULT_LGBM_PARAMS,
    MODELS,
    CompiledForest,
    Forest,
    HybridRegressor,
    ModelCard,
    select_model,
    train,
)
from smengine.model._choice import _selection_folds  # noqa: E402
from smengine.model._hybrid import choose_ridge_alpha, gain_importances, model_hash  # noqa: E402

TREES = 30
QUICK = {"n_estimators": TREES, "n_jobs": 1, "progress": False}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic_table(n_stations=6, step="6D")  # 6 stations x 183 days, 3 years


def _X(t: pd.DataFrame) -> np.ndarray:
    return t[FEATURES].to_numpy(np.float32)


@pytest.fixture(scope="module")
def fitted(table: pd.DataFrame) -> dict[str, Forest]:
    cv = ("site", "year", "block", "knndm")
    return {m: train(table, model=m, cv=cv, search=False, **QUICK) for m in ("boosting", "hybrid")}


# --------------------------------------------------------------------------- train(model=...)
@pytest.mark.parametrize("model", ["boosting", "hybrid"])
def test_boosted_models_go_through_every_cv_scheme_card_and_compile(fitted, table, model):
    f = fitted[model]
    assert f.model == model == f.card.model and f"<Forest ({model}) {TREES} trees" in repr(f)
    est = f.estimator
    assert isinstance(est, HybridRegressor if model == "hybrid" else lgb.LGBMRegressor)
    cvp = f.cv_predictions
    assert sorted(cvp["scheme"].unique()) == ["block", "knndm", "site", "year"]
    assert np.isfinite(cvp["prediction"]).all() and len(cvp) == 4 * len(table)
    for s in ("site", "year", "block", "knndm"):
        assert f.card.cv[s]["metrics"]["RMSE"] < 0.05 and f.card.cv[s]["nested"] is False
    assert f.card.oob_score is None and f.card.oob_metrics == {} and f.card.search == []
    md = f.card.to_markdown()
    assert ("hybrid (linear base" if model == "hybrid" else "gradient-boosted trees (LightGBM)") in md
    assert "no out-of-bag sample" in md
    # a leave-site-out fold re-fitted by hand with the same seed and parameters gives the same predictions
    X, y = _X(table), table["target"].to_numpy()
    site = cvp[cvp["scheme"] == "site"].reset_index(drop=True)
    assert site["station"].tolist() == table["station"].tolist()
    test = (site["fold"] == 2).to_numpy()
    lgbm = {**DEFAULT_LGBM_PARAMS, "n_estimators": TREES}
    if model == "boosting":
        ref = lgb.LGBMRegressor(**lgbm, random_state=0, n_jobs=1).fit(X[~test], y[~test])
    else:
        # the base's penalty chosen by spatio-temporal CV on the fold's own training rows
        st, dt = table["station"].to_numpy(), pd.to_datetime(table["date"]).to_numpy()
        alpha, _ = choose_ridge_alpha(X[~test], y[~test], st[~test], dt[~test])
        ref = HybridRegressor(alpha=alpha, lgbm_params=lgbm, random_state=0, n_jobs=1).fit(X[~test], y[~test])
    assert np.array_equal(site.loc[test, "prediction"].to_numpy(), ref.predict(X[test]))
    # the card: the model's parameters, its hash, JSON round trip
    hp = f.card.hyperparameters
    assert hp["n_estimators"] == TREES and hp["num_leaves"] == DEFAULT_LGBM_PARAMS["num_leaves"]
    if model == "hybrid":
        whole, scores = choose_ridge_alpha(X, y, st, dt)
        assert hp["base_features"] == FEATURES and hp["alpha"] == whole == est.alpha
        assert hp["alpha_choice"]["median_ubRMSE"] == {f"{a:g}": v for a, v in scores.items()}
        assert hp["linear_base"]["coef"]["b"] == pytest.approx(est.coef_[1]) and hp["linear_base"]["intercept"]
    assert f.card.content_hash == model_hash(est)
    assert ModelCard.from_json(f.card.to_json()) == f.card
    # the area of applicability weighs the features by LightGBM's gain
    w = f.applicability.weights
    np.testing.assert_allclose(w / w.sum(), gain_importances(est.booster_), rtol=1e-12)
    # Forest.predict and the compiled model agree to the bit; the compiled model carries card and reference
    cf = f.compile()
    assert cf.ensemble == model and cf.card == f.card and cf.applicability is f.applicability
    assert cf.feature_names == tuple(FEATURES)
    T = table[FEATURES].copy()
    T.iloc[3, 2] = np.nan
    got = f.predict(T)
    assert np.isnan(got[3]) and np.array_equal(cf.predict(T), got, equal_nan=True)
    assert np.array_equal(got[4:], est.predict(X[4:]))
    if model == "hybrid":
        assert cf.source_hash == f.card.content_hash


def test_boosted_search_is_nested_and_refusals_are_clear(table):
    f = train(table, model="boosting", cv="site", n_splits=3, **QUICK)
    s = f.card.search
    assert len(s) == 4 and [r["params"] for r in s] == [
        {"learning_rate": lr, "num_leaves": nl}
        for lr in DEFAULT_BOOST_GRID["learning_rate"]
        for nl in DEFAULT_BOOST_GRID["num_leaves"]
    ]
    chosen = f.card.chosen["params"]
    assert all(f.card.hyperparameters[k] == v for k, v in chosen.items())
    sel = f.card.cv["site"]["fold_selection"]
    assert f.card.cv["site"]["nested"] and len(sel) == 3 and all(set(c["params"]) == set(chosen) for c in sel)
    assert all("model" not in c for c in sel)
    h = train(table, model="hybrid", cv=(), search=False, model_params={"base_features": ["b"], "alpha": 0.0}, **QUICK)
    assert h.card.hyperparameters["base_features"] == ["b"] and np.count_nonzero(h.estimator.coef_) == 1
    bad = [
        ({"model": "xgboost"}, "model should be one of"),
        ({"model": "boosting", "n_estimators": "smallest"}, "it is for model='forest'"),
        ({"model": "hybrid", "min_samples_leaf": 20}, "forest's parameters"),
        ({"model": "boosting", "param_grid": {"max_features": [0.5]}}, r"\['max_features'\] cannot be searched"),
        ({"model": "forest", "model_params": {"num_leaves": 7}}, "model_params is for model='boosting'"),
        ({"model": "boosting", "model_params": {"base_features": ["b"]}}, "not parameters of model='boosting'"),
        ({"model": "auto", "param_grid": {"num_leaves": [7]}}, "param_grid goes with one model"),
        ({"model": "auto", "select_cv": "year"}, "cv should be one of"),
    ]
    for kw, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            train(table, cv=(), **{**QUICK, **kw})


def test_the_forest_is_unchanged(table):
    a = train(table, cv="site", search=False, n_estimators=12, n_jobs=1, progress=False)
    b = train(table, cv="site", search=False, model="forest", n_estimators=12, n_jobs=1, progress=False)
    assert isinstance(a.estimator, RandomForestRegressor) and a.model == "forest" == a.card.model
    assert a.card == b.card and a.card.model_selection == {} and a.card.oob_score is not None
    assert "random forest for" in a.card.to_markdown()
    assert train(table, cv=(), search=False, n_jobs=1, progress=False).estimator.n_estimators == 500  # the default
    assert train(table, model="boosting", cv=(), search=False, n_jobs=1, progress=False).n_trees == 200  # its own
    # cards and pickles from before the other models load as forests
    d = a.card.to_dict()
    del d["model"], d["model_selection"]
    assert ModelCard.from_dict(d) == a.card
    state = a.__dict__.copy()
    del state["model"], state["selection"]
    old = Forest.__new__(Forest)
    old.__setstate__(state)
    assert old.model == "forest" and old.selection is None and np.array_equal(old.predict(table), a.predict(table))
    assert pickle.loads(pickle.dumps(a)).model == "forest"


# --------------------------------------------------------------------------- select_model
def test_select_model_holds_out_stations_and_periods_and_reports_intervals(table):
    s = select_model(table, n_estimators=TREES, n_splits=3, time_blocks=3, n_jobs=1, n_boot=300)
    assert s.cv == "site-time" and s.n_folds == 9 and "3 periods" in s.splitter
    sc = s.scores
    assert list(sc.index) == list(MODELS) and s.chosen == sc["median_ubRMSE"].idxmin()
    for m in MODELS:
        if m == s.chosen:
            assert np.isnan(sc.loc[m, "delta_ubRMSE"]) and sc.loc[m, "verdict"] is None
        else:
            assert sc.loc[m, "ci_low"] <= sc.loc[m, "delta_ubRMSE"] <= sc.loc[m, "ci_high"]
            c = paired_station_ci(s.predictions, m, s.chosen, "obs", metric="ubRMSE", n_boot=300, seed=0)
            assert (c.difference, c.ci_low, c.ci_high, c.verdict) == tuple(
                sc.loc[m, ["delta_ubRMSE", "ci_low", "ci_high", "verdict"]]
            )
            assert sc.loc[m, "R_ci_low"] <= sc.loc[m, "delta_R"] <= sc.loc[m, "R_ci_high"]
    # every fold: held-out stations and the held-out period are absent from its training rows
    st, dates, X, y = table["station"].to_numpy(object), table["date"].to_numpy(), _X(table), table["target"].to_numpy()
    folds, _ = _selection_folds("site-time", st, dates, None, 3, 3, 0, None)
    assert len(folds) == 9 and np.array_equal(np.sort(np.concatenate([te for _, te in folds])), np.arange(len(table)))
    for tr, te in folds:
        assert not set(st[tr]) & set(st[te])
        assert not ((dates[tr] >= dates[te].min()) & (dates[tr] <= dates[te].max())).any()
    tr, te = folds[4]
    rf = RandomForestRegressor(TREES, max_features=1 / 3, min_samples_leaf=5, random_state=0).fit(X[tr], y[tr])
    assert np.array_equal(s.predictions["forest"].to_numpy()[te], rf.predict(X[te]))
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d and d["chosen"] == s.chosen and d["rule"].startswith("The chosen model")
    assert repr(s).endswith(f"chose {s.chosen}>")
    # the other schemes
    for cv in ("site", "knndm"):
        o = select_model(table, models=("forest", "hybrid"), cv=cv, n_estimators=TREES, n_splits=3, n_jobs=1, n_boot=50)
        assert o.cv == cv and list(o.scores.index) == ["forest", "hybrid"] and o.predictions["hybrid"].notna().all()
    with pytest.raises(ConfigError, match="distinct names"):
        select_model(table, models=("forest", "svm"))
    with pytest.raises(ConfigError, match="time_blocks"):
        select_model(table, time_blocks=1)


def test_auto_trains_the_chosen_model_with_a_nested_choice(table):
    f = train(table, model="auto", cv="site", search=False, n_splits=3, time_blocks=2, **QUICK)
    sel = f.card.model_selection
    assert f.model == f.card.model == sel["chosen"] == f.selection.chosen
    assert sel["cv"] == "site-time" and [r["model"] for r in sel["scores"]] == list(MODELS)
    assert sel["n_folds"] == 6 and "median over stations" in sel["rule"]
    folds = f.card.cv["site"]["fold_selection"]
    assert f.card.cv["site"]["nested"] and len(folds) == 3 and all(c["model"] in MODELS for c in folds)
    md = f.card.to_markdown()
    assert "## Model selection (site-time CV on the training stations)" in md and "**yes**" in md
    assert ModelCard.from_json(f.card.to_json()) == f.card
    assert f.compile().ensemble == {"forest": "random_forest"}.get(f.model, f.model)


# --------------------------------------------------------------------------- CLI
def test_cli_train_model_option(table, tmp_path, monkeypatch):
    csv = tmp_path / "t.csv"
    table.drop(columns=["tile"]).to_csv(csv, index=False)
    args = ["-q", "train", str(csv), "--features", ",".join(FEATURES), "--cv", "site", "--no-search"]
    args += ["--trees", "20", "--threads", "1"]
    r = CliRunner().invoke(
        cli, [*args, "--out", str(tmp_path / "h.h5"), "--model", "hybrid", "--base-features", "b,clay"]
    )
    assert r.exit_code == 0, r.output
    cf = CompiledForest.load(tmp_path / "h.h5")
    assert cf.ensemble == "hybrid" and cf.card.model == "hybrid" and cf.n_trees == 20
    assert cf.card.hyperparameters["base_features"] == ["b", "clay"] and "(hybrid) 20 trees" in r.output
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a.h5"), "--model", "auto", "--no-nested"])
    assert r.exit_code == 0 and "model selection (leave-GroupKFold" in r.output and "; chose " in r.output, r.output
    assert CompiledForest.load(tmp_path / "a.h5").card.model_selection["cv"] == "site-time"
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "f.h5"), "--base-features", "b"])
    assert r.exit_code != 0 and "--base-features goes with --model hybrid" in r.output
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "x.h5"), "--model", "hybrid", "--base-features", "zz"])
    assert r.exit_code != 0 and "zz not among the features" in r.output
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "b.h5"), "--model", "boosting"])
    assert r.exit_code == 1 and "--model boosting needs lightgbm, which is not installed" in r.output
    assert "pip install 'smengine[boost]'" in r.output and not (tmp_path / "b.h5").exists()
