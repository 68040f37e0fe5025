"""Gradient-boosted trees (LightGBM) through CompiledForest and the engine: bit for bit ``Booster.predict``."""

from __future__ import annotations

import hashlib
import logging
import pickle
import shutil
import sys

import h5py
import numpy as np
import pytest

lgb = pytest.importorskip("lightgbm")

from sklearn.ensemble import RandomForestRegressor  # noqa: E402
from test_engine import DAYS, make_tile  # noqa: E402  (tests/ is on sys.path: rootdir-less test modules)

from smengine.errors import ConfigError, DataError, ValidationError  # noqa: E402
from smengine.model import CompiledForest  # noqa: E402
from smengine.model._compiled import (  # noqa: E402
    FORMAT,
    FORMAT_VERSION,
    LGBM_ZERO_THRESHOLD,
    SUMMED_FORMAT_VERSION,
    _attr_value,
    _file_hash,
    _lightgbm_thresholds,
)

N_FEATURES = 6
PARAMS = {"objective": "regression", "num_leaves": 31, "verbose": -1, "seed": 0, "deterministic": True}


def _features(rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 rows: three features on a 0.25 grid (ties at the thresholds, many exact zeros, negatives)."""
    X = rng.standard_normal((n, N_FEATURES)).astype(np.float32)
    X[:, :3] = np.round(X[:, :3] * 4) / 4
    return X


def _target(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    w = np.linspace(-1.0, 1.5, X.shape[1])
    return np.tanh(X @ w) + 0.2 * X[:, 0] * X[:, 4] + 0.1 * rng.standard_normal(X.shape[0]) + 3.0


def _thresholds(booster) -> np.ndarray:
    dump = booster.dump_model()["tree_info"]
    out: list[tuple[int, float]] = []

    def walk(node: dict) -> None:
        if "split_feature" in node:
            out.append((node["split_feature"], node["threshold"]))
            walk(node["left_child"])
            walk(node["right_child"])

    for t in dump:
        walk(t["tree_structure"])
    return np.array(out, dtype=[("f", np.int64), ("t", np.float64)])


@pytest.fixture(scope="module")
def boosted():
    rng = np.random.default_rng(0)
    X = _features(rng, 12_000)
    booster = lgb.train(PARAMS, lgb.Dataset(X, _target(X, rng)), num_boost_round=200)
    cf = CompiledForest.from_lightgbm(booster)
    # test rows: fresh rows, rows on every split threshold (as float32, and the float32 just above
    # and below), and LightGBM's zero band (|x| <= 1e-35 is read as 0: thresholds sit at ±1e-35 and 0)
    T = rng.standard_normal((30_000, N_FEATURES)).astype(np.float32)
    T[:, :3] = np.round(T[:, :3] * 4) / 4
    thr = _thresholds(booster)
    assert thr.size > 200 * 25
    k = np.arange(9000)
    s = thr[k % thr.size]
    t32 = s["t"].astype(np.float32)
    t32 = np.where(k % 3 == 0, t32, np.nextafter(t32, np.where(k % 3 == 1, np.inf, -np.inf)).astype(np.float32))
    T[k, s["f"]] = t32
    z = np.float32(LGBM_ZERO_THRESHOLD)
    tiny = np.array(
        [0.0, -0.0, z, -z, np.nextafter(z, 1), np.nextafter(-z, -1), 1e-36, -1e-36, 1e-42, -1e-42, 1e-30, -1e-30],
        dtype=np.float32,
    )
    band = slice(10_000, 14_000)
    T[band] = np.where(rng.random((4000, N_FEATURES)) < 0.5, rng.choice(tiny, (4000, N_FEATURES)), T[band])
    assert {-z, z} <= set(thr["t"].astype(np.float32).tolist()), "the model should split at ±1e-35"
    return {"booster": booster, "cf": cf, "X": X, "T": T, "ref": booster.predict(T)}


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "reuse, stride", [(False, None), ("box", None), (True, 0), (True, None), (True, 1), (True, 97)]
)
@pytest.mark.parametrize("n_threads", [1, 4])
def test_predictions_equal_lightgbm_bit_for_bit(boosted, reuse, stride, n_threads):
    cf, T, ref = boosted["cf"], boosted["T"], boosted["ref"]
    for block in (257, 16384):
        got = cf.predict(T, reuse=reuse, stride=stride, n_threads=n_threads, block=block)
        assert np.array_equal(got, ref), f"max |diff| {np.abs(got - ref).max()}"


@pytest.mark.parametrize("isa", ["c", "avx2", "avx512"])
def test_every_instruction_set_is_exact_on_coherent_rows(boosted, monkeypatch, isa):
    """A smooth raster (box hits and the row above) through each block kernel."""
    monkeypatch.setenv("SMENGINE_FOREST_ISA", isa)
    y, x = np.mgrid[0:120, 0:150].astype(np.float32)
    fields = [np.round(x / 20 - 3.5, 1), np.round(y / 15 - 4, 2), np.sin(x / 30) * 2, y / 40 - 1.5, x * y / 9000 - 1]
    ras = np.stack([*fields, np.cos(y / 25)], -1).astype(np.float32)
    cf, booster = boosted["cf"], boosted["booster"]
    want = booster.predict(ras.reshape(-1, N_FEATURES)).reshape(ras.shape[:2])
    got = cf.predict(ras)
    assert got.shape == (120, 150) and np.array_equal(got, want)
    stats = cf.traversal_stats(ras.reshape(-1, N_FEATURES), stride=150)
    assert stats.hit_rate > 0.5 and stats.row_trees == ras.shape[0] * ras.shape[1] * 200


def test_nan_and_infinite_rows_are_nan_and_counted(boosted, caplog):
    cf, T, ref = boosted["cf"], boosted["T"][:5000].copy(), boosted["ref"][:5000]
    T[[3, 700, 4999], [0, 5, 2]] = [np.nan, np.inf, -np.inf]
    with caplog.at_level(logging.WARNING, logger="smengine.model._compiled"):
        got = cf.predict(T)
    assert "3 of 5000 rows have a NaN or infinite feature (first: row 3)" in caplog.text
    bad = np.zeros(5000, bool)
    bad[[3, 700, 4999]] = True
    assert np.isnan(got[bad]).all() and np.array_equal(got[~bad], ref[~bad])
    assert cf.traversal_stats(T).n_invalid == 3
    with pytest.raises(ValidationError, match="3 of 5000 rows"):
        cf.predict(T, on_invalid="raise")


def test_spread_over_boosted_trees_is_nan(boosted):
    cf, T, ref = boosted["cf"], boosted["T"][:3000], boosted["ref"][:3000]
    for reuse in (False, "box", True):
        mean, sd = cf.predict_with_spread(T, reuse=reuse)
        assert np.array_equal(mean, ref) and np.isnan(sd).all()


def test_summed_and_averaged_models_with_the_same_trees_differ(boosted):
    cf = boosted["cf"]
    assert cf.ensemble == "boosting" and not cf.average
    assert repr(cf).startswith("CompiledForest(ensemble='boosting', n_trees=200, n_features=6")
    assert cf.n_trees == 200 and cf.feature_names is None  # LightGBM's generated Column_<i>
    avg = CompiledForest(cf._nodes, cf._leaf, cf._root, cf.max_depth, cf.n_features)
    assert avg.ensemble == "random_forest" and avg.content_hash != cf.content_hash and avg != cf
    T = boosted["T"][:2000]
    assert np.array_equal(avg.predict(T), cf.predict(T) / cf.n_trees)  # the same sum, divided
    assert np.isfinite(avg.predict_with_spread(T)[1]).all()
    kt = cf._kernel_tables(3)
    assert kt.average is False and kt.divisor == 1.0 and "summed" in repr(kt)
    assert avg._kernel_tables(0).divisor == 200.0


def test_pickles_keep_the_ensemble(boosted):
    cf, T = boosted["cf"], boosted["T"][:2000]
    back = pickle.loads(pickle.dumps(cf))
    assert back.ensemble == "boosting" and back.content_hash == cf.content_hash
    assert np.array_equal(back.predict(T), boosted["ref"][:2000])
    kt = pickle.loads(pickle.dumps(cf._kernel_tables(3)))
    assert kt.average is False and kt.has_blocks
    state = cf.__getstate__()  # a forest pickled before boosted ensembles existed is a random forest
    del state["average"]
    old = CompiledForest.__new__(CompiledForest)
    old.__setstate__(state)
    assert old.average is True


def test_regressor_and_dataframe_names(boosted):
    pd = pytest.importorskip("pandas")
    X = boosted["X"][:3000]
    names = ["elev", "sand", "clay", "ndvi", "swi5_s1", "smap"]
    df = pd.DataFrame(X, columns=names)
    rng = np.random.default_rng(3)
    reg = lgb.LGBMRegressor(n_estimators=40, num_leaves=15, verbose=-1, random_state=0).fit(df, _target(X, rng))
    cf = CompiledForest.from_lightgbm(reg, card={"who": "test"})
    assert cf.feature_names == tuple(names) and cf.card == {"who": "test"}
    T = pd.DataFrame(boosted["T"][:4000], columns=names)
    assert np.array_equal(cf.predict(T[names[::-1]]), reg.predict(T))  # reordered by name
    assert CompiledForest.from_lightgbm(reg.booster_, feature_names=list("abcdef")).feature_names == tuple("abcdef")
    assert cf.source_hash == "sha256:" + hashlib.sha256(reg.booster_.model_to_string().encode()).hexdigest()


def test_lightgbm_random_forest_mode_averages_exactly(boosted):
    X = boosted["X"][:6000]
    params = {**PARAMS, "boosting": "rf", "bagging_fraction": 0.6, "bagging_freq": 1, "feature_fraction": 0.8}
    rf = lgb.train(params, lgb.Dataset(X, _target(X, np.random.default_rng(4))), num_boost_round=30)
    cf = CompiledForest.from_lightgbm(rf)
    assert cf.ensemble == "random_forest" and cf.n_trees == 30
    T = boosted["T"]
    assert np.array_equal(cf.predict(T), rf.predict(T))
    assert np.isfinite(cf.predict_with_spread(T[:100])[1]).all()


def test_other_identity_objectives_are_exact(boosted):
    X = boosted["X"][:4000]
    y = _target(X, np.random.default_rng(5))
    for objective in ("huber", "quantile"):
        b = lgb.train({**PARAMS, "objective": objective}, lgb.Dataset(X, y), num_boost_round=30)
        assert np.array_equal(CompiledForest.from_lightgbm(b).predict(boosted["T"]), b.predict(boosted["T"]))


def test_the_zero_band_is_lightgbms_not_treelites(boosted):
    """treelite (and a plain import of its model) compares the raw value; LightGBM reads |x| <= 1e-35 as 0."""
    import treelite

    T, ref = boosted["T"], boosted["ref"]
    tl = treelite.frontend.from_lightgbm(boosted["booster"])
    plain = CompiledForest.from_treelite(tl).predict(T)
    assert np.array_equal(plain, treelite.gtil.predict(tl, T).ravel())
    z = LGBM_ZERO_THRESHOLD
    differ = plain != ref
    in_band = ((np.abs(T) <= z) & (T != 0)).any(1)
    assert differ.any() and not (differ & ~in_band).any()  # only rows with a non-zero value in the band
    # LightGBM's decision x -> (x if |x| > z else 0) <= t as float32 thresholds x <= f
    below = float(np.nextafter(np.float32(-z), np.float32(-1)))
    t = np.array([-1.0, -z - 1e-45, -z, -1e-36, -0.0, 0.0, 1e-36, z, z + 1e-45, 0.25])  # ±1e-45: below a float32 ulp
    want = np.array([-1.0, below, below, below, z, z, z, z, z, 0.25], dtype=np.float32)
    assert np.array_equal(_lightgbm_thresholds(t), want)
    x = np.array([-1.0, below, -z, -1e-36, -0.0, 0.0, 1e-42, z, np.nextafter(np.float32(z), 1), 0.25], np.float32)
    lgbm = np.where(np.abs(x.astype(np.float64)) > z, x, 0.0)[:, None] <= t[None, :]
    assert np.array_equal(lgbm, x[:, None] <= want[None, :])


# --------------------------------------------------------------------------- persistence
def test_save_load_round_trip(boosted, tmp_path):
    cf, T = boosted["cf"], boosted["T"]
    path = cf.save(tmp_path / "gbm.smf.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs["ensemble"] == "boosting" and int(f.attrs["format_version"]) == SUMMED_FORMAT_VERSION
    back = CompiledForest.load(path)
    assert back.ensemble == "boosting" and back == cf and "boosting" in repr(back)
    for reuse in (False, True):
        assert np.array_equal(back.predict(T, reuse=reuse), boosted["ref"])
    assert back.to_treelite().num_tree == 200
    # the ensemble is covered: a boosted file relabelled as a forest (file hash redone) fails its layout hash
    bad = shutil.copy(path, tmp_path / "bad.smf.h5")
    with h5py.File(bad, "r+") as f:
        f.attrs["ensemble"] = "random_forest"
        f.attrs["file_hash"] = _file_hash({k: _attr_value(v) for k, v in f.attrs.items()}, _treelite(f))
    with pytest.raises(DataError, match="node layout does not match"):
        CompiledForest.load(bad)
    with h5py.File(bad, "r+") as f:
        f.attrs["ensemble"] = "stacking"
        f.attrs["file_hash"] = _file_hash({k: _attr_value(v) for k, v in f.attrs.items()}, _treelite(f))
    with pytest.raises(DataError, match="unknown ensemble 'stacking'"):
        CompiledForest.load(bad)


def _treelite(f: h5py.File) -> bytes:
    return bytes(f["treelite"][...].tobytes())


def _rf() -> tuple[RandomForestRegressor, np.ndarray]:
    rng = np.random.default_rng(1)
    X = _features(rng, 800)
    return RandomForestRegressor(12, min_samples_leaf=3, random_state=0).fit(X, _target(X, rng)), X


def test_random_forest_files_unchanged_and_old_files_load(tmp_path):
    rf, X = _rf()
    cf = CompiledForest.from_sklearn(rf)
    assert cf.ensemble == "random_forest" and cf.average and np.array_equal(cf.predict(X), rf.predict(X))
    # the layout hash of a random forest is the one it had before boosted ensembles
    h = hashlib.sha256(f"{FORMAT}/{FORMAT_VERSION};n_features={N_FEATURES};".encode())
    for a in (cf._nodes, cf._leaf, cf._root):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    assert cf.content_hash == "sha256:" + h.hexdigest()
    path = cf.save(tmp_path / "rf.smf.h5")
    with h5py.File(path, "r+") as f:
        assert f.attrs["ensemble"] == "random_forest" and int(f.attrs["format_version"]) == FORMAT_VERSION
        # as written before boosted ensembles: no ensemble attribute (and the file hash without it)
        del f.attrs["ensemble"]
        f.attrs["file_hash"] = _file_hash({k: _attr_value(v) for k, v in f.attrs.items()}, _treelite(f))
    old = CompiledForest.load(path)
    assert old.ensemble == "random_forest" and old == cf
    mean, sd = old.predict_with_spread(X)
    assert np.array_equal(mean, rf.predict(X)) and np.isfinite(sd).all()


# --------------------------------------------------------------------------- refusals
def _small(X: np.ndarray, rounds: int = 5, **params) -> object:
    y = _target(X, np.random.default_rng(2))
    ds_kw = {"categorical_feature": params.pop("categorical_feature")} if "categorical_feature" in params else {}
    return lgb.train({**PARAMS, "num_leaves": 7, **params}, lgb.Dataset(X, y, **ds_kw), num_boost_round=rounds)


def test_categorical_linear_and_zero_as_missing_models_are_refused(boosted):
    X = boosted["X"][:3000].copy()
    X[:, 0] = np.abs(np.round(X[:, 0] * 2))  # small integer categories
    with pytest.raises(ValidationError, match=r"categorical splits \(categorical_feature\)"):
        CompiledForest.from_lightgbm(_small(X, categorical_feature=[0]))
    with pytest.raises(ValidationError, match=r"linear \(linear_tree=True\)"):
        CompiledForest.from_lightgbm(_small(X, linear_tree=True))
    with pytest.raises(ValidationError, match=r"zeros as missing values \(zero_as_missing=True\)"):
        CompiledForest.from_lightgbm(_small(boosted["X"][:3000], zero_as_missing=True))


def test_non_regression_objectives_are_refused(boosted):
    X = boosted["X"][:2000]
    y = (X[:, 0] > 0).astype(float)
    binary = lgb.train({**PARAMS, "objective": "binary"}, lgb.Dataset(X, y), num_boost_round=3)
    with pytest.raises(ValidationError, match="only regression"):
        CompiledForest.from_lightgbm(binary)
    poisson = lgb.train({**PARAMS, "objective": "poisson"}, lgb.Dataset(X, y + 1), num_boost_round=3)
    with pytest.raises(ValidationError, match="postprocessor 'exponential'"):
        CompiledForest.from_lightgbm(poisson)
    multi = lgb.train({**PARAMS, "objective": "multiclass", "num_class": 3}, lgb.Dataset(X, y * 2), num_boost_round=2)
    with pytest.raises(ValidationError, match="only regression"):
        CompiledForest.from_lightgbm(multi)


def test_a_base_score_is_refused():
    from treelite.model_builder import Metadata, ModelBuilder, PostProcessorFunc, TreeAnnotation

    builder = ModelBuilder(
        threshold_type="float64",
        leaf_output_type="float64",
        metadata=Metadata(2, "kRegressor", False, 1, [1], (1, 1)),
        tree_annotation=TreeAnnotation(1, [0], [0]),
        postprocessor=PostProcessorFunc("identity"),
        base_scores=[0.5],
    )
    builder.start_tree()
    builder.start_node(0)
    builder.numerical_test(0, 0.5, default_left=True, opname="<=", left_child_key=1, right_child_key=2)
    builder.end_node()
    for key, value in ((1, -1.0), (2, 1.0)):
        builder.start_node(key)
        builder.leaf(value)
        builder.end_node()
    builder.end_tree()
    with pytest.raises(ValidationError, match=r"non-zero base score \(\[0.5\]\)"):
        CompiledForest.from_treelite(builder.commit())


def test_wrong_inputs_and_a_missing_lightgbm_say_so(boosted, monkeypatch):
    with pytest.raises(ConfigError, match="not fitted"):
        CompiledForest.from_lightgbm(lgb.LGBMRegressor())
    with pytest.raises(ConfigError, match="expected a fitted lightgbm.Booster or LGBMRegressor, got LGBMClassifier"):
        CompiledForest.from_lightgbm(lgb.LGBMClassifier())
    with pytest.raises(ConfigError, match="got RandomForestRegressor"):
        CompiledForest.from_lightgbm(_rf()[0])
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    with pytest.raises(ConfigError, match=r"pip install 'smengine\[boost\]'"):
        CompiledForest.from_lightgbm(boosted["booster"])


# --------------------------------------------------------------------------- engine
def test_engine_pixel_means_of_a_boosted_model_are_exact(tmp_path):
    """smengine.engine.predict with a LightGBM model = the per-pixel mean of ``booster.predict``
    on the gathered sub-pixel rows (summed in sub-pixel order, as the kernel does), to the bit;
    its uncertainty layer (spread over trees) is NaN."""
    from smengine.engine import predict
    from smengine.features import FeatureBuilder, FeatureSpec

    store = make_tile(tmp_path / "t000_000.h5")
    fb = FeatureBuilder(store, FeatureSpec(swi_T=(5.0, 20.0)))
    sw = fb.swi()
    names = [n for n in fb.names if n != "s1"]  # s1 only through its SWI: gathered, not a forest column
    cols = [fb.names.index(n) for n in names]
    feats = np.stack([fb.day(t, swi=sw)[cols] for t in range(DAYS.size)])  # (D, F, ny, nx)
    rows = feats.transpose(0, 2, 3, 1).reshape(-1, len(names))
    ok = np.isfinite(rows).all(1)
    rng = np.random.default_rng(7)
    y = np.tanh(rows[ok] @ rng.standard_normal(len(names))) * 0.1 + 0.25 + 0.01 * rng.standard_normal(ok.sum())
    booster = lgb.train({**PARAMS, "num_leaves": 15}, lgb.Dataset(rows[ok], y), num_boost_round=60)
    cf = CompiledForest.from_lightgbm(booster, feature_names=names)
    ds = predict(store, cf, days=DAYS[2:], n_threads=2)

    pred = np.full(rows.shape[0], np.nan)
    pred[ok] = booster.predict(rows[ok])
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
    assert np.isnan(sm[~good]).all()
    assert np.isnan(ds["sm_uncertainty"].values).all()
    np.testing.assert_allclose(ds["sm_subpixel_sd"].values[good], np.nanstd(P[good], -1), rtol=0, atol=1e-6)
