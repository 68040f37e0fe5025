"""Forest size as a lever: grouped-CV skill against trees and leaf size, and train(n_estimators="smallest")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestRegressor
from sklearn.model_selection import GroupKFold, cross_val_predict
from test_train import FEATURES, synthetic_table  # tests/model is on sys.path (rootdir-less test modules)

from smengine.errors import ConfigError
from smengine.metrics import evaluate
from smengine.model import ModelCard, forest_hash, forest_size_curve, train
from smengine.model._train import SIZE_LEAVES, SIZE_TOLERANCE, SIZE_TREES, _prefix_predict

TREES, LEAVES = (3, 8, 15), (5, 20)
FAST = {"n_jobs": 1, "progress": False}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return synthetic_table(n_stations=6, step="6D")


@pytest.fixture(scope="module")
def curve(table: pd.DataFrame) -> pd.DataFrame:
    return forest_size_curve(table, trees=TREES, min_samples_leaf=LEAVES, **FAST)


def _Xy(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return table[FEATURES].to_numpy(np.float32), table["target"].to_numpy()


def _smallest_by_hand(rows: list[tuple[int, float, float]], tol: float) -> tuple[int, float]:
    best = min(r for _, _, r in rows)
    ok = [(k, leaf) for k, leaf, r in rows if r <= best + tol]
    k = min(k for k, _ in ok)
    return k, max(leaf for kk, leaf in ok if kk == k)


# --------------------------------------------------------------------------- the prefix claim
def test_first_k_trees_are_the_k_tree_forest() -> None:
    """scikit-learn seeds tree i from the i-th draw of RandomState(seed), whatever n_estimators."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1500, 5)).astype(np.float32)
    y = X[:, 0] + np.sin(3 * X[:, 1]) + 0.1 * rng.normal(size=1500)
    Xt = rng.normal(size=(300, 5)).astype(np.float32)
    kw = {"max_features": 1 / 3, "min_samples_leaf": 5, "bootstrap": True, "random_state": 7}
    big = RandomForestRegressor(20, n_jobs=2, **kw).fit(X, y)
    pre = _prefix_predict(big, Xt, (1, 6, 20), n_jobs=1)
    assert sorted(pre) == [1, 6, 20]
    for k in (1, 6, 20):
        small = RandomForestRegressor(k, n_jobs=1, **kw).fit(X, y)
        for a, b in zip(small.estimators_, big.estimators_[:k], strict=False):
            np.testing.assert_array_equal(a.tree_.threshold, b.tree_.threshold)
            np.testing.assert_array_equal(a.tree_.value, b.tree_.value)
        np.testing.assert_array_equal(pre[k], small.predict(Xt))  # bitwise
    # threads split the rows: same bits
    Xl = np.repeat(Xt, 30, axis=0)
    one, two = _prefix_predict(big, Xl, (6,), n_jobs=1, min_rows=1000), _prefix_predict(big, Xl, (6,), 2, 1000)
    np.testing.assert_array_equal(one[6], two[6])


# --------------------------------------------------------------------------- the curve
def test_curve_shape_and_attrs(curve: pd.DataFrame, table: pd.DataFrame) -> None:
    assert list(curve.columns) == ["n_estimators", "min_samples_leaf", "RMSE", "ubRMSE", "R", "bias", "n_nodes"]
    assert list(zip(curve["n_estimators"], curve["min_samples_leaf"], strict=True)) == [
        (k, leaf) for k in TREES for leaf in LEAVES
    ]
    assert curve.attrs["cv"] == "site" and curve.attrs["n_folds"] == 5 and curve.attrs["n_groups"] == 6
    assert curve.attrs["splitter"] == "GroupKFold(n_splits=5)" and curve.attrs["n_samples"] == len(table)
    assert np.isfinite(curve[["RMSE", "ubRMSE", "R", "bias", "n_nodes"]].to_numpy()).all()
    # more trees: more nodes; a larger leaf: fewer nodes
    nodes = curve.pivot(index="n_estimators", columns="min_samples_leaf", values="n_nodes")
    assert (np.diff(nodes.to_numpy(), axis=0) > 0).all() and (nodes[20] < nodes[5]).all()


@pytest.mark.parametrize(("k", "leaf"), [(3, 5), (15, 20), (8, 20)])
def test_curve_equals_refitting_by_hand(curve: pd.DataFrame, table: pd.DataFrame, k: int, leaf: int) -> None:
    X, y = _Xy(table)  # the table is already in (station, date) order, as train sorts it
    est = RandomForestRegressor(k, max_features=1 / 3, min_samples_leaf=leaf, bootstrap=True, random_state=0)
    p = cross_val_predict(est, X, y, groups=table["station"], cv=GroupKFold(5))
    m = evaluate(p, y)
    row = curve[(curve["n_estimators"] == k) & (curve["min_samples_leaf"] == leaf)].iloc[0]
    for key in ("RMSE", "ubRMSE", "R", "bias"):
        assert row[key] == m[key], key  # the prefix forests are the k-tree forests, bit for bit
    nodes = [
        sum(e.tree_.node_count for e in est.fit(X[tr], y[tr]).estimators_)
        for tr, _ in GroupKFold(5).split(X, y, table["station"])
    ]
    assert row["n_nodes"] == pytest.approx(np.mean(nodes))


def test_curve_other_schemes_and_errors(table: pd.DataFrame) -> None:
    c = forest_size_curve(table, trees=(4,), min_samples_leaf=(10,), cv="year", **FAST)
    assert c.attrs["cv"] == "year" and c.attrs["n_folds"] == 3 and len(c) == 1
    with pytest.raises(ConfigError, match="one scheme"):
        forest_size_curve(table, cv=("site", "year"))
    with pytest.raises(ConfigError, match="unknown cv"):
        forest_size_curve(table, cv="random")
    with pytest.raises(ConfigError, match="tree counts"):
        forest_size_curve(table, trees=())
    with pytest.raises(ConfigError, match="trees should be an integer"):
        forest_size_curve(table, trees=(0, 5))
    with pytest.raises(ConfigError, match="leaf size"):
        forest_size_curve(table, min_samples_leaf=(0,))
    one = table[table["station"] == "S0"]
    with pytest.raises(ConfigError, match="at least 2 groups"):
        forest_size_curve(one, trees=(2,), **FAST)


# --------------------------------------------------------------------------- train(n_estimators="smallest")
def test_defaults_of_the_option() -> None:
    assert SIZE_TREES == (10, 25, 50, 100, 200, 500) and SIZE_LEAVES == (1, 5, 20) and SIZE_TOLERANCE == 0.002


@pytest.mark.parametrize("tol", [0.0, "mid", 1.0])
def test_smallest_within_tolerance(table: pd.DataFrame, curve: pd.DataFrame, tol: float | str) -> None:
    rows = list(zip(curve["n_estimators"], curve["min_samples_leaf"], curve["RMSE"], strict=True))
    if tol == "mid":  # a tolerance that keeps some but not all of the sizes
        r = np.sort(curve["RMSE"].to_numpy())
        tol = float(r[len(r) // 2] - r[0])
    f = train(
        table,
        n_estimators="smallest",
        size_tolerance=tol,
        size_trees=TREES,
        size_leaves=LEAVES,
        cv="site",
        search=False,
        **FAST,
    )
    k, leaf = _smallest_by_hand(rows, tol)
    if tol == 1.0:
        assert (k, leaf) == (min(TREES), max(LEAVES))
    rf = f.estimator
    assert (rf.n_estimators, rf.min_samples_leaf) == (k, leaf)
    assert f.card.hyperparameters["n_estimators"] == k and f.card.hyperparameters["min_samples_leaf"] == leaf
    # the curve and the choice are in the card
    size = [c for c in f.card.search if c["stage"] == "forest_size"]
    assert len(size) == len(curve) == len(f.card.search)
    for c, (_, row) in zip(size, curve.iterrows(), strict=True):
        assert (c["n_estimators"], c["params"]["min_samples_leaf"]) == (row["n_estimators"], row["min_samples_leaf"])
        assert c["RMSE"] == row["RMSE"] and c["R"] == row["R"] and c["size_tolerance"] == tol
        assert c["within_tolerance"] == (row["RMSE"] <= curve["RMSE"].min() + tol)
    assert [c["best"] for c in size] == list(curve["RMSE"] == curve["RMSE"].min())
    assert [c["chosen"] for c in size].count(True) == 1
    assert f.card.chosen["params"] == {"n_estimators": k, "min_samples_leaf": leaf}
    # the final forest is the choice: the same as asking for it directly
    g = train(table, n_estimators=k, min_samples_leaf=leaf, cv="site", search=False, **FAST)
    assert forest_hash(g.estimator) == forest_hash(rf) == f.card.content_hash
    # without nesting the CV reuses the choice; nested, every fold chose its own size
    flat = train(
        table,
        n_estimators="smallest",
        size_tolerance=tol,
        size_trees=TREES,
        size_leaves=LEAVES,
        cv="site",
        search=False,
        nested=False,
        **FAST,
    )
    assert flat.card.cv == {"site": {**g.card.cv["site"], "nested": False}}
    assert g.card.cv["site"]["nested"] is False  # nothing was selected
    nested = f.card.cv["site"]
    assert nested["nested"] is True and len(nested["fold_selection"]) == nested["n_folds"]
    for sel in nested["fold_selection"]:
        assert sel["n_estimators"] in TREES and sel["params"]["min_samples_leaf"] in LEAVES
    assert ModelCard.from_json(f.card.to_json()) == f.card
    assert "**yes**" in f.card.to_markdown()


def test_smallest_after_the_search(table: pd.DataFrame) -> None:
    grid = {"max_features": (0.3, 0.6), "min_samples_leaf": (5, 20)}
    f = train(
        table,
        n_estimators="smallest",
        size_trees=(4, 12),
        size_leaves=(2, 10),
        cv=(),
        param_grid=grid,
        search_estimators=6,
        **FAST,
    )
    s = f.card.search
    search = [c for c in s if c["stage"] == "search"]
    size = [c for c in s if c["stage"] == "forest_size"]
    assert len(search) == 4 and len(size) == 4 and s == search + size
    assert all(not c["chosen"] for c in search) and sum(c["best"] for c in search) == 1
    pick = next(c for c in search if c["best"])
    assert all(c["params"]["max_features"] == pick["params"]["max_features"] for c in size)
    assert all(c["params"]["n_estimators"] == 6 for c in search)
    chosen = f.card.chosen
    assert chosen in size
    for k, v in chosen["params"].items():  # the card's choice is the final forest
        assert getattr(f.estimator, k) == v == f.card.hyperparameters[k]
    md = f.card.to_markdown()
    assert md.count("**yes**") == 1


def test_smallest_errors(table: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match="'smallest'"):
        train(table, n_estimators="largest", **FAST)
    with pytest.raises(ConfigError, match="size_tolerance"):
        train(table, n_estimators="smallest", size_tolerance=-0.1, **FAST)
    with pytest.raises(ConfigError, match="size_tolerance"):
        train(table, n_estimators="smallest", size_tolerance=float("nan"), **FAST)
    with pytest.raises(ConfigError, match="tree counts"):
        train(table, n_estimators="smallest", size_trees=[], **FAST)
    one = table[table["station"] == "S0"]
    with pytest.raises(ConfigError, match="n_estimators='smallest' need at least 2 stations"):
        train(one, n_estimators="smallest", cv=(), search=False, **FAST)


# --------------------------------------------------------------------------- defaults unchanged
def test_default_train_is_unchanged(table: pd.DataFrame) -> None:
    """Without the option the size arguments are ignored and the forest is the plain fit."""
    kw = {"cv": ("site", "year"), "search": False, "n_estimators": 12, **FAST}
    a = train(table, **kw)
    b = train(table, size_tolerance=0.5, size_trees=(1, 2), size_leaves=(50,), **kw)
    assert a.card == b.card and forest_hash(a.estimator) == forest_hash(b.estimator)
    assert a.card.search == [] and all("stage" not in c for c in a.card.search)
    pd.testing.assert_frame_equal(a.cv_predictions, b.cv_predictions)
    X, y = _Xy(table)
    rf = RandomForestRegressor(12, max_features=1 / 3, min_samples_leaf=5, bootstrap=True, random_state=0).fit(X, y)
    assert forest_hash(rf) == forest_hash(a.estimator)
    # the search's rows keep their layout (no stage/best keys) without the option
    s = train(table, cv=(), param_grid={"min_samples_leaf": (5, 20)}, n_estimators=5, search_estimators=4, **FAST)
    assert [set(c) for c in s.card.search] == [
        {"params", "n_estimators", "cv", "splitter", "RMSE", "ubRMSE", "R", "chosen"}
    ] * 2
