"""HybridRegressor (linear base + LightGBM trees on its residuals) and its compiled form: bit for bit."""

from __future__ import annotations

import logging
import pickle
import shutil
import sys

import h5py
import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from test_boosted import N_FEATURES, _features, _target, _thresholds  # noqa: E402  (tests/model is on sys.path)
from test_engine import DAYS, make_tile  # noqa: E402

from smengine.errors import ConfigError, DataError, ValidationError  # noqa: E402
from smengine.model import DEFAULT_LGBM_PARAMS, CompiledForest, HybridRegressor  # noqa: E402
from smengine.model._compiled import (  # noqa: E402
    HYBRID_FORMAT_VERSION,
    LGBM_ZERO_THRESHOLD,
    SUMMED_FORMAT_VERSION,
    _attr_value,
    _file_hash,
)
from smengine.model._hybrid import model_hash  # noqa: E402

SMALL = {"n_estimators": 120, "num_leaves": 15, "min_child_samples": 20}


@pytest.fixture(scope="module")
def hybrid():
    rng = np.random.default_rng(0)
    X = _features(rng, 8000)
    y = _target(X, rng) + 0.4 * X[:, 5]  # a linear part the base takes up
    h = HybridRegressor(base_features=[0, 2, 5], lgbm_params=SMALL, random_state=0, n_jobs=1).fit(X, y)
    cf = CompiledForest.from_hybrid(h)
    # test rows: fresh rows, rows on every split threshold (as float32, and the float32 just above and
    # below), LightGBM's zero band, and rows far outside the training range (where the base extrapolates)
    T = rng.standard_normal((24_000, N_FEATURES)).astype(np.float32)
    T[:, :3] = np.round(T[:, :3] * 4) / 4
    thr = _thresholds(h.booster_)
    k = np.arange(8000)
    s = thr[k % thr.size]
    t32 = s["t"].astype(np.float32)
    t32 = np.where(k % 3 == 0, t32, np.nextafter(t32, np.where(k % 3 == 1, np.inf, -np.inf)).astype(np.float32))
    T[k, s["f"]] = t32
    z = np.float32(LGBM_ZERO_THRESHOLD)
    tiny = np.array([0.0, -0.0, z, -z, 1e-36, -1e-36, 1e-42, 1e-30], dtype=np.float32)
    T[9000:11_000] = np.where(
        rng.random((2000, N_FEATURES)) < 0.5, rng.choice(tiny, (2000, N_FEATURES)), T[9000:11_000]
    )
    T[12_000:14_000] *= np.float32(25.0)  # far outside: |x| up to ~100 against a training range of ~±4
    return {"h": h, "cf": cf, "X": X, "y": y, "T": T, "ref": h.predict(T)}


def _base_by_hand(h: HybridRegressor, X: np.ndarray) -> np.ndarray:
    x = np.asarray(X, dtype=np.float32).astype(np.float64)
    b = np.full(x.shape[0], h.intercept_)
    for j in range(x.shape[1]):
        b += h.coef_[j] * x[:, j]
    return b


# --------------------------------------------------------------------------- the estimator
def test_base_is_a_ridge_on_the_base_features_in_raw_units(hybrid):
    h, X, y = hybrid["h"], hybrid["X"], hybrid["y"]
    assert h.base_index_.tolist() == [0, 2, 5] and np.count_nonzero(h.coef_) == 3
    assert h.coef_[[1, 3, 4]].tolist() == [0.0, 0.0, 0.0]
    # the standardised ridge, folded back: the same fit as a plain least-squares solve up to ~1/n shrinkage
    A = np.column_stack([np.ones(X.shape[0]), X[:, [0, 2, 5]].astype(np.float64)])
    ols = np.linalg.lstsq(A, y, rcond=None)[0]
    np.testing.assert_allclose(h.coef_[[0, 2, 5]], ols[1:], rtol=2e-3)
    np.testing.assert_allclose(h.intercept_, ols[0], rtol=2e-3)
    ridge0 = HybridRegressor(base_features=[0, 2, 5], alpha=0.0, lgbm_params={"n_estimators": 2}, n_jobs=1).fit(X, y)
    np.testing.assert_allclose(ridge0.coef_[[0, 2, 5]], ols[1:], rtol=1e-9)
    # the base is the sequential float64 expression, and the trees fit its residuals
    assert np.array_equal(h.base(X), _base_by_hand(h, X))
    T = hybrid["T"]
    assert np.array_equal(hybrid["ref"], _base_by_hand(h, T) + h.booster_.predict(T))
    resid = h.trees_.predict(X)
    assert np.std(y - h.base(X) - resid) < np.std(y - h.base(X))


def test_the_base_extrapolates_where_trees_stay_flat(hybrid):
    h = hybrid["h"]
    far = np.zeros((3, N_FEATURES), dtype=np.float32)
    far[:, 5] = [10.0, 20.0, 40.0]  # far beyond the training range of feature 5 (~±4)
    p = h.predict(far)
    trees = h.booster_.predict(far)
    assert np.ptp(trees) == 0.0  # the trees repeat their edge leaves
    np.testing.assert_allclose(np.diff(p), h.coef_[5] * np.array([10.0, 20.0]), rtol=1e-12)
    boosted = lgb.LGBMRegressor(**{**DEFAULT_LGBM_PARAMS, **SMALL}, random_state=0, n_jobs=1).fit(
        hybrid["X"], hybrid["y"]
    )
    assert np.ptp(boosted.predict(far)) == 0.0  # a boosted model alone does not


def test_sklearn_compatibility_names_and_determinism(hybrid):
    pd = pytest.importorskip("pandas")
    h, X, y = hybrid["h"], hybrid["X"][:3000], hybrid["y"][:3000]
    params = h.get_params()
    assert params == {"base_features": [0, 2, 5], "alpha": 1.0, "lgbm_params": SMALL, "random_state": 0, "n_jobs": 1}
    c = clone(h)
    assert not hasattr(c, "coef_") and c.n_jobs == 1
    few = {**SMALL, "n_estimators": 15}  # (LightGBM's OpenMP threads crawl on a busy machine: keep it small)
    a = c.set_params(lgbm_params=few).fit(X[:1500], y[:1500])
    b = clone(h).set_params(lgbm_params=few, n_jobs=2).fit(X[:1500], y[:1500])
    assert model_hash(a) == model_hash(b) and np.array_equal(a.predict(X), b.predict(X))  # threads change nothing
    assert a.feature_importances_.sum() == pytest.approx(1.0) and (a.feature_importances_ >= 0).all()
    names = ["elev", "sand", "clay", "ndvi", "swi5_s1", "smap"]
    df = pd.DataFrame(X, columns=names)
    hn = HybridRegressor(base_features=["swi5_s1", "elev"], lgbm_params={"n_estimators": 20}, n_jobs=1).fit(df, y)
    assert hn.base_index_.tolist() == [0, 4] and list(hn.feature_names_in_) == names
    assert np.array_equal(hn.predict(df[names[::-1]]), hn.predict(X))  # reordered by name
    cf = CompiledForest.from_hybrid(hn)
    assert cf.feature_names == tuple(names) and np.array_equal(cf.predict(df), hn.predict(df))
    hf = HybridRegressor(base_features=["smap"], lgbm_params={"n_estimators": 5}, n_jobs=1).fit(
        X, y, feature_names=names
    )
    assert hf.base_index_.tolist() == [5]
    # float64 input is read as float32, as the engine reads it
    assert np.array_equal(h.predict(X.astype(np.float64)), h.predict(X))


def test_bad_inputs_say_so(hybrid, monkeypatch):
    X, y = hybrid["X"][:500], hybrid["y"][:500]
    with pytest.raises(NotFittedError):
        HybridRegressor().predict(X)
    with pytest.raises(ConfigError, match="not fitted"):
        CompiledForest.from_hybrid(HybridRegressor())
    with pytest.raises(ConfigError, match="expected a fitted HybridRegressor, got LGBMRegressor"):
        CompiledForest.from_hybrid(lgb.LGBMRegressor())
    with pytest.raises(ConfigError, match="'swi' is not a feature"):
        HybridRegressor(base_features=["swi"]).fit(X, y)
    with pytest.raises(ConfigError, match="index in"):
        HybridRegressor(base_features=[6]).fit(X, y)
    with pytest.raises(ConfigError, match="alpha"):
        HybridRegressor(alpha=-1.0).fit(X, y)
    with pytest.raises(ConfigError, match="linear_tree"):
        HybridRegressor(lgbm_params={"linear_tree": True}).fit(X, y)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValidationError, match="finite"):
        HybridRegressor().fit(bad, y)
    with pytest.raises(ValidationError, match="fitted on 6"):
        hybrid["h"].predict(X[:, :5])
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    with pytest.raises(ConfigError, match=r"need lightgbm: pip install 'smengine\[boost\]'"):
        HybridRegressor().fit(X, y)


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "reuse, stride", [(False, None), ("box", None), (True, 0), (True, None), (True, 1), (True, 97)]
)
@pytest.mark.parametrize("n_threads", [1, 4])
def test_compiled_hybrid_equals_predict_bit_for_bit(hybrid, reuse, stride, n_threads):
    cf, T, ref = hybrid["cf"], hybrid["T"], hybrid["ref"]
    for block in (257, 16384):
        got = cf.predict(T, reuse=reuse, stride=stride, n_threads=n_threads, block=block)
        assert np.array_equal(got, ref), f"max |diff| {np.abs(got - ref).max()}"


@pytest.mark.parametrize("isa", ["c", "avx2", "avx512"])
def test_every_instruction_set_is_exact_on_a_raster(hybrid, monkeypatch, isa):
    monkeypatch.setenv("SMENGINE_FOREST_ISA", isa)
    y, x = np.mgrid[0:90, 0:110].astype(np.float32)
    fields = [np.round(x / 20 - 2.5, 1), np.round(y / 15 - 3, 2), np.sin(x / 30) * 2, y / 40 - 1.5, x * y / 9000 - 1]
    ras = np.stack([*fields, np.cos(y / 25) * 6], -1).astype(np.float32)
    h, cf = hybrid["h"], hybrid["cf"]
    want = h.predict(ras.reshape(-1, N_FEATURES)).reshape(ras.shape[:2])
    assert np.array_equal(cf.predict(ras), want)
    mean, sd = cf.predict_with_spread(ras)
    assert np.array_equal(mean, want) and np.isnan(sd).all()  # summed trees: no spread over trees


def test_invalid_rows_are_nan_in_both(hybrid, caplog):
    h, cf, T = hybrid["h"], hybrid["cf"], hybrid["T"][:3000].copy()
    T[[5, 600, 2999], [0, 3, 1]] = [np.nan, np.inf, -np.inf]
    with caplog.at_level(logging.WARNING, logger="smengine.model._compiled"):
        got = cf.predict(T)
    assert "3 of 3000 rows have a NaN or infinite feature" in caplog.text
    ref = h.predict(T)
    assert np.isnan(ref[[5, 600, 2999]]).all() and np.array_equal(got, ref, equal_nan=True)


def test_ensemble_hash_kernel_tables_and_pickles(hybrid):
    h, cf, T = hybrid["h"], hybrid["cf"], hybrid["T"][:2000]
    assert cf.ensemble == "hybrid" and not cf.average and cf.n_trees == 120
    assert repr(cf).startswith("CompiledForest(ensemble='hybrid', n_trees=120, n_features=6")
    assert np.array_equal(cf.lin_coef, h.coef_) and cf.lin_intercept == h.intercept_
    assert cf.source_hash == model_hash(h)
    trees = CompiledForest.from_lightgbm(h.booster_)
    assert trees.ensemble == "boosting" and trees.content_hash != cf.content_hash
    assert np.array_equal(cf.predict(T), h.base(T) + trees.predict(T))
    other = CompiledForest(
        cf._nodes, cf._leaf, cf._root, cf.max_depth, cf.n_features, average=False,
        lin_coef=np.nextafter(cf.lin_coef, 1.0), lin_intercept=cf.lin_intercept,
    )  # fmt: skip
    assert other.content_hash != cf.content_hash  # the base's bits are in the hash
    kt = cf._kernel_tables(3)
    assert np.array_equal(kt.lin_coef, h.coef_) and kt.lin_intercept == h.intercept_ and "linear base" in repr(kt)
    assert trees._kernel_tables(0).lin_coef is None
    kt2 = pickle.loads(pickle.dumps(kt))
    assert kt2.has_blocks and np.array_equal(kt2.lin_coef, h.coef_) and kt2.lin_intercept == h.intercept_
    back = pickle.loads(pickle.dumps(cf))
    assert back.ensemble == "hybrid" and np.array_equal(back.predict(T), hybrid["ref"][:2000])
    with pytest.raises(ValidationError, match="summed trees"):
        CompiledForest(cf._nodes, cf._leaf, cf._root, cf.max_depth, cf.n_features, lin_coef=cf.lin_coef)
    with pytest.raises(ValidationError, match="6 finite coefficients"):
        CompiledForest(cf._nodes, cf._leaf, cf._root, cf.max_depth, cf.n_features, average=False, lin_coef=[1.0])


def test_save_load_round_trip_and_older_readers_refuse(hybrid, tmp_path):
    cf, T = hybrid["cf"], hybrid["T"]
    path = cf.save(tmp_path / "hyb.smf.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["ensemble"] == "hybrid" and int(f.attrs["format_version"]) == HYBRID_FORMAT_VERSION
        assert HYBRID_FORMAT_VERSION > SUMMED_FORMAT_VERSION  # a reader of version <= 2 refuses it
        assert np.array_equal(f["lin_coef"][...], cf.lin_coef) and f.attrs["lin_intercept"] == cf.lin_intercept
    back = CompiledForest.load(path)
    assert back == cf and back.ensemble == "hybrid" and back.source_hash == cf.source_hash
    for reuse in (False, True):
        assert np.array_equal(back.predict(T, reuse=reuse), hybrid["ref"])
    # the base is covered: a changed coefficient (file hash redone) fails the layout hash
    bad = shutil.copy(path, tmp_path / "bad.smf.h5")
    with h5py.File(bad, "r+") as f:
        f["lin_coef"][0] = f["lin_coef"][0] * 1.0000001
    with pytest.raises(DataError, match="node layout does not match"):
        CompiledForest.load(bad)
    bad = shutil.copy(path, tmp_path / "bad2.smf.h5")
    with h5py.File(bad, "r+") as f:
        f.attrs["ensemble"] = "boosting"
        f.attrs["file_hash"] = _file_hash({k: _attr_value(v) for k, v in f.attrs.items()}, _treelite(f))
    with pytest.raises(DataError, match="with a linear base"):
        CompiledForest.load(bad)
    with h5py.File(bad, "r+") as f:
        f.attrs["format_version"] = HYBRID_FORMAT_VERSION + 1
    with pytest.raises(DataError, match="newer than this smengine reads"):
        CompiledForest.load(bad)


def _treelite(f: h5py.File) -> bytes:
    return bytes(f["treelite"][...].tobytes())


# --------------------------------------------------------------------------- engine
def test_engine_pixel_means_of_a_hybrid_are_exact(tmp_path):
    """smengine.engine.predict with a hybrid = the per-pixel mean of ``HybridRegressor.predict`` on the
    gathered sub-pixel rows (summed in sub-pixel order, as the kernel does), to the bit."""
    from smengine.engine import predict
    from smengine.features import FeatureBuilder, FeatureSpec

    store = make_tile(tmp_path / "t000_000.h5")
    fb = FeatureBuilder(store, FeatureSpec(swi_T=(5.0, 20.0)))
    sw = fb.swi()
    names = [n for n in fb.names if n != "s1"]
    cols = [fb.names.index(n) for n in names]
    feats = np.stack([fb.day(t, swi=sw)[cols] for t in range(DAYS.size)])  # (D, F, ny, nx)
    rows = feats.transpose(0, 2, 3, 1).reshape(-1, len(names))
    ok = np.isfinite(rows).all(1)
    rng = np.random.default_rng(7)
    w = rng.standard_normal(len(names))
    y = 0.02 * (rows[ok] @ w) / len(names) + 0.05 * np.tanh(rows[ok] @ w) + 0.25
    swi = [n for n in names if n.startswith("swi")]
    h = HybridRegressor(base_features=swi, lgbm_params={"n_estimators": 40, "num_leaves": 15}, n_jobs=1).fit(
        rows[ok], y, feature_names=names
    )
    assert np.count_nonzero(h.coef_) == len(swi)
    cf = CompiledForest.from_hybrid(h)
    ds = predict(store, cf, days=DAYS[2:], n_threads=2)

    pred = np.full(rows.shape[0], np.nan)
    pred[ok] = h.predict(rows[ok])
    k = store.grid.subpixel
    Py, Px = store.grid.shape
    P = pred.reshape(DAYS.size, Py, k, Px, k).transpose(0, 1, 3, 2, 4).reshape(DAYS.size, Py, Px, k * k)[2:]
    valid = np.isfinite(P)
    n = valid.sum(-1)
    total = np.cumsum(np.where(valid, P, 0.0), axis=-1)[..., -1]  # sequential, sub-pixel order
    with np.errstate(invalid="ignore", divide="ignore"):
        want = (total / n).astype(np.float32)
    sm = ds["sm"].values
    good = n >= 0.5 * k * k
    assert good.sum() > 0.9 * good.size and (~good).any()
    assert np.array_equal(sm[good], want[good]), f"max |diff| {np.nanmax(np.abs(sm[good] - want[good]))}"
    assert np.isnan(sm[~good]).all() and np.isnan(ds["sm_uncertainty"].values).all()
    np.testing.assert_allclose(ds["sm_subpixel_sd"].values[good], np.nanstd(P[good], -1), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------- the base's penalty, chosen by CV
def _panel(rng: np.random.Generator, n_st: int = 8, n_days: int = 240):
    """A station × day panel whose collinear weather features drift between periods."""
    import pandas as pd

    days = pd.date_range("2020-01-01", periods=n_days).to_numpy()
    st = np.repeat([f"S{i}" for i in range(n_st)], n_days)
    dt = np.tile(days, n_st)
    t = np.tile(np.arange(n_days), n_st) / n_days
    w = np.sin(6 * t) + 0.3 * rng.standard_normal(st.size)
    X = np.column_stack([w, w + 0.05 * rng.standard_normal(st.size) + 0.5 * t, rng.standard_normal(st.size), t])
    y = 0.25 + 0.05 * w + 0.01 * rng.standard_normal(st.size)
    return X.astype(np.float32), y, st, dt


def test_ridge_penalty_by_spatio_temporal_cv_equals_a_by_hand_search():
    """choose_ridge_alpha = scikit-learn's Ridge on standardised features over station groups × periods,
    scored by the median station ubRMSE, written out by hand."""
    import pandas as pd
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    from smengine.model import RIDGE_ALPHAS, choose_ridge_alpha

    X, y, st, dt = _panel(np.random.default_rng(1))
    alpha, scores = choose_ridge_alpha(X, y, st, dt, n_splits=4, time_blocks=3)
    days = np.unique(dt)
    edges = days[[0, 80, 160]]
    period = np.searchsorted(edges, dt, side="right") - 1
    want = {}
    for a in RIDGE_ALPHAS:
        err = np.full(y.size, np.nan)
        for _, te_st in GroupKFold(4).split(X, groups=st):
            held = np.zeros(y.size, bool)
            held[te_st] = True
            for b in range(3):
                tr, te = ~held & (period != b), held & (period == b)
                sc = StandardScaler().fit(X[tr].astype(np.float64))
                m = Ridge(alpha=a).fit(sc.transform(X[tr].astype(np.float64)), y[tr])
                err[te] = m.predict(sc.transform(X[te].astype(np.float64))) - y[te]
        want[a] = pd.Series(err).groupby(st).std(ddof=0).median()
    assert list(scores) == list(RIDGE_ALPHAS)
    np.testing.assert_allclose([scores[a] for a in RIDGE_ALPHAS], [want[a] for a in RIDGE_ALPHAS], rtol=1e-9)
    assert alpha == min(want, key=want.get)
    # a base on some columns only: the others never enter
    a2, s2 = choose_ridge_alpha(X, y, st, dt, base_index=[0, 2])
    a3, s3 = choose_ridge_alpha(X[:, [0, 2]], y, st, dt)
    assert a2 == a3 and s2 == pytest.approx(s3, rel=1e-12)
    # too few stations to validate on: the smallest penalty, no scores
    two = np.isin(st, ["S0", "S1"])
    assert choose_ridge_alpha(X[two], y[two], st[two], dt[two]) == (RIDGE_ALPHAS[0], {})
    with pytest.raises(ConfigError, match="alphas should be numbers >= 0"):
        choose_ridge_alpha(X, y, st, dt, alphas=[1.0, -1.0])
    with pytest.raises(ValidationError, match="one row each"):
        choose_ridge_alpha(X, y[:-1], st, dt)


def test_train_chooses_the_hybrid_penalty_unless_given():
    """train(model='hybrid') chooses alpha on its training rows (recorded in the card); a number is kept."""
    import pandas as pd

    from smengine.model import choose_ridge_alpha, train
    from smengine.model._train import _fit_model

    X, y, st, dt = _panel(np.random.default_rng(2), n_st=6, n_days=150)
    names = ["w", "w2", "noise", "t"]
    table = pd.DataFrame(X, columns=names).assign(station=st, date=dt, target=y)
    quick = {"n_estimators": 20, "cv": (), "random_state": 0, "n_jobs": 1, "progress": False}
    f = train(table, names, "target", model="hybrid", **quick)
    alpha, scores = choose_ridge_alpha(X, y, st, dt)
    hp = f.card.hyperparameters
    assert f.estimator.alpha == hp["alpha"] == alpha
    assert hp["alpha_choice"]["median_ubRMSE"] == {f"{a:g}": v for a, v in scores.items()}
    g = train(table, names, "target", model="hybrid", model_params={"alpha": 3.0}, **quick)
    assert g.estimator.alpha == g.card.hyperparameters["alpha"] == 3.0 and "alpha_choice" not in g.card.hyperparameters
    with pytest.raises(ConfigError, match="needs the rows' stations and dates"):
        _fit_model("hybrid", {}, 5, 0, 1, X, y, names)
