"""CompiledForest: exact against RandomForestRegressor.predict, NaN masking, spread, persistence."""

from __future__ import annotations

import json
import logging
import math
import pathlib
from fractions import Fraction

import h5py
import numpy as np
import pytest
import treelite
import treelite.gtil
import treelite.sklearn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import (
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

from smengine._threads import forest_isa_cap
from smengine.errors import ConfigError, DataError, SMEngineWarning, ValidationError
from smengine.model import CompiledForest, detect_stride, forest_hash
from smengine.model._compiled import _floor_to_float32


def _slow_predict(rf, X):
    """Per-tree walk in Python on the float64 thresholds: the obviously-correct reference."""
    X = np.asarray(X, dtype=np.float32).astype(np.float64)
    per_tree = np.empty((len(rf.estimators_), X.shape[0]))
    for k, est in enumerate(rf.estimators_):
        t = est.tree_
        for i, x in enumerate(X):
            node = 0
            while t.children_left[node] >= 0:
                node = t.children_left[node] if x[t.feature[node]] <= t.threshold[node] else t.children_right[node]
            per_tree[k, i] = t.value[node, 0, 0]
    return per_tree


def _exact_sd(values):
    """Population SD in exact rational arithmetic, rounded once."""
    v = [Fraction(float(x)) for x in values]
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / len(v))


def _coherent(rng, n, nf):
    """Rows of a slowly varying random walk (neighbouring sub-pixels)."""
    steps = rng.normal(0, 0.02, (n, nf)).astype(np.float32)
    steps[rng.random((n, nf)) < 0.5] = 0  # half the features constant from row to row
    return np.cumsum(steps, axis=0) + rng.random(nf, dtype=np.float32)


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(5)
    X = rng.random((3000, 6), dtype=np.float32)
    y = np.sin(6 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(3000)
    rf = RandomForestRegressor(30, min_samples_leaf=3, max_features=0.5, random_state=0, n_jobs=1).fit(X, y)
    return rf, X


# --------------------------------------------------------------------------- exactness
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    n_features=st.integers(1, 12),
    n_trees=st.integers(1, 12),
    min_samples_leaf=st.sampled_from([1, 2, 5, 20]),
    max_depth=st.sampled_from([None, 1, 3, 8]),
    nan_fraction=st.sampled_from([0.0, 0.05, 0.3]),
    coherent=st.booleans(),
    scale=st.sampled_from([1e-3, 1.0, 1e6]),
    block=st.sampled_from([1, 7, 16384]),
    threads=st.sampled_from([1, 2]),
)
def test_hypothesis_forests_equal_sklearn(
    seed, n_features, n_trees, min_samples_leaf, max_depth, nan_fraction, coherent, scale, block, threads
):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    X = (rng.standard_normal((n, n_features)) * scale).astype(np.float32)
    # repeated values make thresholds land between neighbouring float32s
    X[rng.random(X.shape) < 0.2] = np.float32(0.5 * scale)
    y = X[:, 0].astype(np.float64) ** 2 + rng.standard_normal(n)
    rf = RandomForestRegressor(
        n_trees,
        min_samples_leaf=min_samples_leaf,
        max_depth=max_depth,
        max_features=rng.choice([1.0, 0.5]),
        random_state=seed % 1000,
        n_jobs=1,
    ).fit(X, y)
    cf = CompiledForest.from_sklearn(rf)
    Xq = _coherent(rng, 300, n_features) * scale if coherent else (rng.standard_normal((300, n_features)) * scale)
    Xq = Xq.astype(np.float32)
    Xq[:50] = X[rng.integers(0, n, 50)]  # training rows hit thresholds' neighbours exactly
    bad = rng.random(Xq.shape[0]) < nan_fraction
    Xq[bad, rng.integers(0, n_features, bad.sum())] = np.nan
    mean, sd = cf.predict_with_spread(Xq, n_threads=threads, block=block)
    ok = ~bad
    ref = rf.predict(Xq[ok])
    assert np.array_equal(mean[ok], ref)  # same leaves, same summation order: bit-identical
    assert np.all(np.isnan(mean[bad])) and np.all(np.isnan(sd[bad]))
    per_tree = _slow_predict(rf, Xq[ok])
    exact = np.array([_exact_sd(col) for col in per_tree.T])
    # float64 differences of the leaf values are exact only to eps * |value|
    tol = 8 * np.finfo(np.float64).eps * np.abs(per_tree).max(axis=0)
    assert np.all(np.abs(sd[ok] - exact) <= tol + 1e-12 * exact)
    np.testing.assert_array_equal(cf.predict(Xq, reuse=False, n_threads=threads), mean)
    np.testing.assert_array_equal(cf.predict(Xq, reuse="box", n_threads=threads, block=block), mean)


def test_equal_to_slow_reference_and_gtil(fitted):
    rf, X = fitted
    cf = CompiledForest.from_sklearn(rf)
    Xq = np.vstack([X[:200], _coherent(np.random.default_rng(1), 300, 6)])
    per_tree = _slow_predict(rf, Xq)
    np.testing.assert_allclose(cf.predict(Xq), per_tree.mean(axis=0), rtol=0, atol=1e-12)
    gtil = treelite.gtil.predict(cf.to_treelite(), Xq).reshape(-1)
    np.testing.assert_allclose(cf.predict(Xq), gtil, rtol=0, atol=1e-6)


def test_thresholds_on_float32_boundaries():
    # the split threshold is the float64 midpoint of two adjacent float32 values (sklearn
    # only splits values more than 1e-7 apart, so take them where float32 steps are wider)
    a = np.float32(1000.1)
    b = np.nextafter(a, np.float32(np.inf))
    X = np.array([[a]] * 10 + [[b]] * 10, dtype=np.float32)
    y = np.r_[np.zeros(10), np.ones(10)]
    rf = RandomForestRegressor(1, bootstrap=False, random_state=0).fit(X, y)
    t = rf.estimators_[0].tree_.threshold[0]
    assert a < t < b and np.float32(t) in (a, b)
    cf = CompiledForest.from_sklearn(rf)
    np.testing.assert_array_equal(cf.predict(np.array([[a], [b]])), [0.0, 1.0])
    np.testing.assert_array_equal(cf.predict(np.array([[a], [b]])), rf.predict(np.array([[a], [b]], np.float32)))


def test_floor_to_float32_is_the_largest_float32_below():
    rng = np.random.default_rng(0)
    t = np.r_[rng.standard_normal(10000) * 10.0 ** rng.integers(-30, 30, 10000), 0.0, -0.0, 1.5]
    f = _floor_to_float32(t, strict=False)
    assert np.all(f.astype(np.float64) <= t)
    up = np.nextafter(f, np.float32(np.inf))
    assert np.all(up.astype(np.float64) > t)
    g = _floor_to_float32(t, strict=True)
    assert np.all(g.astype(np.float64) < t) and np.all(np.nextafter(g, np.float32(np.inf)).astype(np.float64) >= t)


def test_extra_trees_and_single_leaf_trees():
    rng = np.random.default_rng(3)
    X = rng.random((200, 3), dtype=np.float32)
    et = ExtraTreesRegressor(10, random_state=0).fit(X, X[:, 0] * 3)
    np.testing.assert_array_equal(CompiledForest.from_sklearn(et).predict(X), et.predict(X))
    const = RandomForestRegressor(3, random_state=0).fit(X, np.full(200, 0.25))  # every tree is one leaf
    cf = CompiledForest.from_sklearn(const)
    assert cf.max_depth == 0
    np.testing.assert_array_equal(cf.predict(X), const.predict(X))


def test_sklearn_depth_first_layout_needs_no_reordering_and_other_orders_work(fitted):
    rf, X = fitted
    model = treelite.sklearn.import_model(rf)
    three = RandomForestRegressor(3, min_samples_leaf=3, random_state=1, n_jobs=1).fit(X, X[:, 0] * X[:, 1])
    # a breadth-first numbering of the same trees must give the same predictions
    builder = treelite.model_builder.ModelBuilder(
        threshold_type="float64",
        leaf_output_type="float64",
        metadata=treelite.model_builder.Metadata(
            num_feature=X.shape[1],
            task_type="kRegressor",
            average_tree_output=True,
            num_target=1,
            num_class=[1],
            leaf_vector_shape=(1, 1),
        ),
        tree_annotation=treelite.model_builder.TreeAnnotation(num_tree=3, target_id=[0] * 3, class_id=[0] * 3),
        postprocessor=treelite.model_builder.PostProcessorFunc(name="identity"),
        base_scores=[0.0],
    )
    for est in three.estimators_:
        t = est.tree_
        order = [0]
        for i in order:
            if t.children_left[i] >= 0:
                order += [int(t.children_left[i]), int(t.children_right[i])]
        key = {old: new for new, old in enumerate(order)}
        builder.start_tree()
        for old in order:
            builder.start_node(key[old])
            if t.children_left[old] >= 0:
                builder.numerical_test(
                    int(t.feature[old]),
                    float(t.threshold[old]),
                    default_left=True,
                    opname="<=",
                    left_child_key=key[int(t.children_left[old])],
                    right_child_key=key[int(t.children_right[old])],
                )
            else:
                builder.leaf(float(t.value[old, 0, 0]))
            builder.end_node()
        builder.end_tree()
    bfs = CompiledForest.from_treelite(builder.commit())
    np.testing.assert_array_equal(bfs.predict(X), three.predict(X))
    assert bfs.content_hash == CompiledForest.from_sklearn(three).content_hash  # same layout after reordering
    assert CompiledForest.from_treelite(model).content_hash == CompiledForest.from_sklearn(rf).content_hash


# --------------------------------------------------------------------------- NaN, errors
def test_nan_and_inf_rows_are_masked_counted_and_reported(fitted, caplog):
    rf, X = fitted
    cf = CompiledForest.from_sklearn(rf)
    Xq = X[:100].copy()
    Xq[[3, 10, 11], [0, 5, 2]] = [np.nan, np.inf, -np.inf]
    with caplog.at_level(logging.WARNING, logger="smengine.model._compiled"):
        p = cf.predict(Xq)
    assert "3 of 100 rows" in caplog.text and "row 3" in caplog.text
    assert np.isnan(p[[3, 10, 11]]).all() and np.isfinite(np.delete(p, [3, 10, 11])).all()
    stats = cf.traversal_stats(Xq)
    assert stats.n_invalid == 3 and stats.row_trees == 97 * cf.n_trees
    with pytest.raises(ValidationError, match="3 of 100 rows"):
        cf.predict(Xq, on_invalid="raise")


def test_bad_input_and_models_raise_clear_errors(fitted):
    rf, X = fitted
    cf = CompiledForest.from_sklearn(rf)
    with pytest.raises(ValidationError, match=r"\(n_rows, 6\)"):
        cf.predict(X[:, :4])
    with pytest.raises(ValidationError, match="numeric"):
        cf.predict(np.array([["a"] * 6]))
    with pytest.raises(ConfigError, match="on_invalid"):
        cf.predict(X, on_invalid="drop")
    with pytest.raises(ConfigError, match="not fitted"):
        CompiledForest.from_sklearn(RandomForestRegressor())
    with pytest.raises(ConfigError, match="RandomForestClassifier"):
        CompiledForest.from_sklearn(RandomForestClassifier(2).fit(X[:50], np.arange(50) % 2))
    with pytest.raises(ValidationError, match="single-output"):
        CompiledForest.from_sklearn(RandomForestRegressor(2).fit(X[:50], np.c_[X[:50, 0], X[:50, 1]]))
    assert cf.predict(np.empty((0, 6))).shape == (0,)


def test_dataframe_columns_are_taken_by_name(fitted):
    import pandas as pd

    rf, X = fitted
    names = [f"f{i}" for i in range(6)]
    cf = CompiledForest.from_sklearn(rf, feature_names=names)
    df = pd.DataFrame(X[:50], columns=names)[names[::-1]]
    np.testing.assert_array_equal(cf.predict(df), rf.predict(X[:50]))
    with pytest.raises(ValidationError, match=r"\['f5'\]"):
        cf.predict(df.drop(columns="f5"))


# --------------------------------------------------------------------------- spread, threads, reuse
def test_spread_is_the_sd_over_trees(fitted):
    rf, _ = fitted
    cf = CompiledForest.from_sklearn(rf)
    Xq = _coherent(np.random.default_rng(2), 500, 6)
    mean, sd = cf.predict_with_spread(Xq)
    per_tree = np.stack([e.predict(Xq) for e in rf.estimators_])
    np.testing.assert_allclose(sd, per_tree.std(axis=0), rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(mean, cf.predict(Xq))


def test_threads_blocks_and_reuse_give_identical_bytes(fitted):
    rf, _ = fitted
    cf = CompiledForest.from_sklearn(rf)
    Xq = _coherent(np.random.default_rng(4), 5000, 6)
    ref = cf.predict_with_spread(Xq, n_threads=1)
    for kw in (
        {"n_threads": 2},
        {"block": 1},
        {"block": 333, "n_threads": 2},
        {"reuse": False},
        {"reuse": "box"},
        {"reuse": "lanes", "block": 7},
    ):
        out = cf.predict_with_spread(Xq, **kw)
        assert out[0].tobytes() == ref[0].tobytes() and out[1].tobytes() == ref[1].tobytes(), kw


def test_reuse_skips_walks_on_coherent_rows(fitted):
    rf, _ = fitted
    cf = CompiledForest.from_sklearn(rf)
    Xq = _coherent(np.random.default_rng(6), 4000, 6)
    on, off = cf.traversal_stats(Xq), cf.traversal_stats(Xq, reuse=False)
    assert on.box_hits + on.walks == on.row_trees and off.walks == off.row_trees and off.box_hits == 0
    assert on.hit_rate > 0.5 and on.visits < 0.5 * off.visits
    shuffled = cf.traversal_stats(Xq[np.random.default_rng(0).permutation(4000)])
    assert shuffled.hit_rate < on.hit_rate
    # the box kernel keeps the same per-tree leaf as the leaf-box table: same hits, same walks;
    # its walks count node visits, the default's count 3-level block steps (fewer)
    box = cf.traversal_stats(Xq, reuse="box")
    assert (box.box_hits, box.walks) == (on.box_hits, on.walks)
    assert box.visits / 3 <= on.visits < box.visits


def test_leaf_boxes_contain_exactly_the_rows_of_their_leaf(fitted):
    rf, _ = fitted
    cf = CompiledForest.from_sklearn(rf)
    boxes = cf.leaf_boxes()
    assert boxes.shape == (cf._leaf.shape[0] + 1, 2 * 16)
    Xq = _coherent(np.random.default_rng(9), 3000, 6)
    nfp = boxes.shape[1] // 2
    xp = np.zeros((len(Xq), nfp), np.float32)
    xp[:, :6] = Xq
    inside = np.all((xp[:, None, :] > boxes[None, :, :nfp]) & (xp[:, None, :] <= boxes[None, :, nfp:]), axis=2)
    # every row lies in exactly one leaf box per tree, and that leaf's value is the tree's prediction
    assert (inside[:, :-1].sum(1) == cf.n_trees).all() and not inside[:, -1].any()
    leaf_of = [np.flatnonzero(r) for r in inside]
    per_tree = np.stack([t.predict(Xq) for t in rf.estimators_], axis=1)
    np.testing.assert_array_equal(np.sort(np.stack([cf._leaf[i] for i in leaf_of]), 1), np.sort(per_tree, 1))
    import pickle

    assert pickle.loads(pickle.dumps(cf))._blocks is None
    with pytest.raises(ConfigError, match="reuse should be"):
        cf.predict(Xq, reuse="maybe")


def _walk_blocks(tab, t, x):
    """Slow reference walk over CompiledForest.blocks(): the leaf (block-exit order) of row x in tree t."""
    b = int(tab["broot"][t])
    while True:
        rec = tab["blocks"][b]
        thr, feat, code = rec[:32].view(np.float32), rec[32:40], rec[40:48]
        child, leaf = (int(v) for v in rec[48:56].view(np.int32))
        p = 0
        for _ in range(3):
            p = 2 * p + 1 if x[feat[p]] <= thr[p] else 2 * p + 2
        c = int(code[p - 7])
        if c >= 128:
            return leaf + c - 128
        b = child + c


def test_block_layout_walks_to_sklearns_leaves(fitted):
    rf, X = fitted
    cf = CompiledForest.from_sklearn(rf)
    tab = cf.blocks()
    assert tab["blocks"].shape[1] == 64 and tab["blocks"].shape[0] < cf.n_nodes / 3
    # bslot is a permutation of the leaf slots; values and boxes follow it
    assert np.array_equal(np.sort(tab["bslot"]), np.arange(cf._leaf.shape[0]))
    assert np.array_equal(tab["bleaf"], cf._leaf[tab["bslot"]])
    boxes = cf.leaf_boxes()
    assert np.array_equal(tab["boxes"][:-1], boxes[tab["bslot"]]) and np.array_equal(tab["boxes"][-1], boxes[-1])
    Xq = np.concatenate([X[:40], _coherent(np.random.default_rng(3), 40, 6)])
    got = np.array([[tab["bleaf"][_walk_blocks(tab, t, x)] for t in range(cf.n_trees)] for x in Xq])
    np.testing.assert_array_equal(got, _slow_predict(rf, Xq).T)


@pytest.mark.parametrize("n_features", [1, 8, 9, 16, 17, 32, 33, 40])
@pytest.mark.parametrize("isa", ["c", "avx2", "avx512"])
def test_every_instruction_set_path_is_exact(isa, n_features, monkeypatch):
    """The block kernel's paths (portable C; AVX2 permute/blend or gather; AVX-512 permute or
    gather) against sklearn, on features that exercise each gather variant."""
    from smengine._ext import _forest

    monkeypatch.setenv("SMENGINE_FOREST_ISA", isa)
    level = {"c": 0, "avx2": 1, "avx512": 2}[isa]
    if _forest.isa(forest_isa_cap()) != level:
        pytest.skip(f"this CPU has no {isa}")
    rng = np.random.default_rng(n_features)
    X = rng.standard_normal((600, n_features)).astype(np.float32)
    y = X[:, -1] ** 2 + X[:, 0] + 0.1 * rng.standard_normal(600)
    rf = RandomForestRegressor(8, min_samples_leaf=2, random_state=1, n_jobs=1).fit(X, y)
    cf = CompiledForest.from_sklearn(rf)
    Xq = np.concatenate([X[:100], _coherent(rng, 300, n_features)]).astype(np.float32)
    mean, sd = cf.predict_with_spread(Xq, n_threads=1)
    assert np.array_equal(mean, rf.predict(Xq))
    ref_mean, ref_sd = cf.predict_with_spread(Xq, n_threads=1, reuse=False)
    assert mean.tobytes() == ref_mean.tobytes() and sd.tobytes() == ref_sd.tobytes()


@pytest.mark.parametrize("bad", ["sse", "a", "avx", "avx2x", "c avx2"])
def test_bad_instruction_set_cap_raises_config_error(fitted, monkeypatch, bad):
    """SMENGINE_FOREST_ISA other than c | avx2 | avx512 is a ConfigError naming the variable and
    the value, for every kernel (the engine reads the cap the same way)."""
    rf, X = fitted
    cf = CompiledForest.from_sklearn(rf)
    monkeypatch.setenv("SMENGINE_FOREST_ISA", bad)
    for reuse in (True, "box", False):
        with pytest.raises(ConfigError, match=rf"SMENGINE_FOREST_ISA={bad!r}"):
            cf.predict(X[:10], reuse=reuse)


def _raster(rng, ny, nx, nf):
    """(ny * nx, nf) rows of smooth random fields given row by row (a coherent raster)."""
    from scipy import ndimage

    f = [ndimage.gaussian_filter(rng.standard_normal((ny, nx)), s) for s in np.linspace(8, 16, nf)]
    return np.stack(f, -1).reshape(-1, nf).astype(np.float32)


@pytest.mark.parametrize("isa", ["c", "avx2", "avx512"])
def test_stride_reference_row_is_exact_and_used(isa, monkeypatch):
    """stride: the row `stride` back (the row above in a raster) is a second reference. Same
    bytes as the plain walk for every stride (1, the width, one shorter than the block, at
    least the block, more than all rows), with NaN rows; on a raster it adds box hits."""
    from smengine._ext import _forest

    monkeypatch.setenv("SMENGINE_FOREST_ISA", isa)
    if _forest.isa(forest_isa_cap()) != {"c": 0, "avx2": 1, "avx512": 2}[isa]:
        pytest.skip(f"this CPU has no {isa}")
    rng = np.random.default_rng(11)
    ny, nx = 60, 50
    X = _raster(rng, ny, nx, 5)
    y = np.sin(3 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.05 * rng.standard_normal(len(X))
    rf = RandomForestRegressor(12, min_samples_leaf=20, random_state=2, n_jobs=1).fit(X, y)
    cf = CompiledForest.from_sklearn(rf)
    Xq = _raster(rng, ny, nx, 5)
    Xq[rng.choice(len(Xq), 40, replace=False), rng.integers(0, 5, 40)] = np.nan
    ref_mean, ref_sd = cf.predict_with_spread(Xq, n_threads=1, reuse=False)
    for stride, block in [(1, 16384), (nx, 16384), (nx, 7), (299, 300), (nx, nx), (len(Xq) + 5, 16384)]:
        mean, sd = cf.predict_with_spread(Xq, n_threads=2, stride=stride, block=block)
        assert mean.tobytes() == ref_mean.tobytes() and sd.tobytes() == ref_sd.tobytes(), (stride, block)
    plain = cf.traversal_stats(Xq, n_threads=1)
    above = cf.traversal_stats(Xq, n_threads=1, stride=nx)
    assert above.box_hits + above.walks == plain.box_hits + plain.walks == plain.row_trees
    assert above.walks < 0.8 * plain.walks, (above, plain)


def test_raster_input_keeps_its_shape_and_uses_the_row_above():
    """A (ny, nx, nf) raster: (ny, nx) outputs, byte-equal to the rows' plain walk, with
    stride = nx chosen by itself (same counters as asking for it; stride=0 turns it off)."""
    rng = np.random.default_rng(12)
    ny, nx, nf = 40, 70, 4
    X = _raster(rng, ny, nx, nf)
    y = np.cos(2 * X[:, 0]) + X[:, 1] * X[:, 3] + 0.05 * rng.standard_normal(len(X))
    rf = RandomForestRegressor(10, min_samples_leaf=10, random_state=4, n_jobs=1).fit(X, y)
    cf = CompiledForest.from_sklearn(rf)
    rows = _raster(rng, ny, nx, nf)
    rows[rng.choice(len(rows), 25, replace=False), rng.integers(0, nf, 25)] = np.nan
    grid = rows.reshape(ny, nx, nf)
    ref_mean, ref_sd = cf.predict_with_spread(rows, n_threads=1, reuse=False)
    mean, sd = cf.predict_with_spread(grid, n_threads=2)
    assert mean.shape == sd.shape == (ny, nx)
    assert mean.tobytes() == ref_mean.tobytes() and sd.tobytes() == ref_sd.tobytes()
    assert cf.predict(grid).shape == (ny, nx)
    ok = np.isfinite(rows).all(axis=1)
    np.testing.assert_array_equal(mean.ravel()[ok], rf.predict(rows[ok]))
    auto = cf.traversal_stats(grid, n_threads=1)
    assert auto == cf.traversal_stats(rows, n_threads=1, stride=nx)
    off = cf.traversal_stats(grid, n_threads=1, stride=0)
    assert off == cf.traversal_stats(rows, n_threads=1) and auto.walks < off.walks
    with pytest.raises(ValidationError, match=r"\(ny, nx, 4\).*\(40, 70, 3\)"):
        cf.predict(grid[..., :3])


def test_lag_distances_equal_numpy():
    """The detector's kernel: scaled max-norm distance to each of the L rows before a probe;
    a NaN (or inf · 0 for an ignored feature) makes it +inf."""
    from smengine._ext import _forest

    rng = np.random.default_rng(20)
    X = rng.standard_normal((500, 5)).astype(np.float32)
    X[7, 1], X[30, 2], X[31, 4] = np.nan, np.inf, -np.inf
    probes = np.array([40, 100, 499], dtype=np.intp)
    inv = np.array([1.0, 0.5, 0.0, 2.0, 1.0], dtype=np.float32)
    L = 40
    out = np.empty((L, probes.size), dtype=np.float32)
    _forest.lag_distances(X, probes, inv, out)
    ref = np.empty_like(out)
    with np.errstate(invalid="ignore"):
        for k, p in enumerate(probes):
            for s in range(1, L + 1):
                v = np.abs(X[p - s] - X[p]) * inv
                ref[s - 1, k] = np.inf if np.isnan(v).any() else v.max()
    np.testing.assert_array_equal(out, ref)
    assert np.isinf(out[40 - 7 - 1, 0]) and np.isinf(out[40 - 30 - 1, 0])  # NaN row; inf * 0
    with pytest.raises(ValueError, match="probe row 39"):
        _forest.lag_distances(X, np.array([39], dtype=np.intp), inv, np.empty((L, 1), dtype=np.float32))


def test_detect_stride_finds_a_rasters_width_and_nothing_elsewhere():
    rng = np.random.default_rng(21)
    ny, nx = 160, 450
    rows = _raster(rng, ny, nx, 6)
    assert detect_stride(rows) == nx
    assert detect_stride(rows, max_lag=nx + 1) == nx
    bad = rows.copy()
    bad[::97, 2] = np.nan  # NaN rows, some of them probes
    assert detect_stride(bad) == nx
    assert detect_stride(rows[rng.permutation(len(rows))]) == 0  # shuffled
    assert detect_stride(_coherent(rng, 80_000, 6)) == 0  # smooth in order, but no raster
    assert detect_stride(rng.standard_normal((80_000, 3))) == 0
    assert detect_stride(np.ones((80_000, 3))) == 0  # constant: no features to tell
    assert detect_stride(rows[:100]) == 0  # too short for the narrowest raster
    with pytest.raises(ValidationError, match="n_rows, n_features"):
        detect_stride(rows.ravel())
    with pytest.raises(ConfigError, match="n_probes"):
        detect_stride(rows, n_probes=0)


def test_flat_raster_rows_get_their_width_by_themselves():
    """Flat rows (at least 65 536) of a raster: predict detects the width and uses the rows
    above (same counters as stride=nx, fewer walks than stride=0, same bytes as the plain walk);
    shorter inputs are not probed."""
    rng = np.random.default_rng(22)
    ny, nx, nf = 150, 440, 4
    X = _raster(rng, 60, 80, nf)
    y = np.cos(2 * X[:, 0]) + X[:, 1] * X[:, 3] + 0.05 * rng.standard_normal(len(X))
    rf = RandomForestRegressor(8, min_samples_leaf=10, random_state=5, n_jobs=1).fit(X, y)
    cf = CompiledForest.from_sklearn(rf)
    rows = _raster(rng, ny, nx, nf)
    auto = cf.traversal_stats(rows, n_threads=1)
    assert auto == cf.traversal_stats(rows, n_threads=1, stride=nx)
    assert auto.walks < 0.8 * cf.traversal_stats(rows, n_threads=1, stride=0).walks
    assert cf.predict(rows, n_threads=2).tobytes() == cf.predict(rows, n_threads=1, reuse=False).tobytes()
    short = rows[:60_000]
    assert cf.traversal_stats(short, n_threads=1) == cf.traversal_stats(short, n_threads=1, stride=0)


@pytest.mark.parametrize("stride", [-1, 1.5, True, "10"])
def test_stride_rejects_nonsense(fitted, stride):
    rf, X = fitted
    with pytest.raises(ConfigError, match="stride"):
        CompiledForest.from_sklearn(rf).predict(X[:10], stride=stride)


# --------------------------------------------------------------------------- persistence, cache
def test_save_load_round_trip_and_portable_treelite(fitted, tmp_path):
    rf, X = fitted
    card = {"note": "test card", "stations": ["A", "B"]}
    cf = CompiledForest.from_sklearn(rf, card=card, feature_names=[f"f{i}" for i in range(6)])
    path = cf.save(tmp_path / "m.smf.h5")
    assert not list(tmp_path.glob("*.tmp*"))
    back = CompiledForest.load(path)
    assert back == cf and back.card == card and back.feature_names == cf.feature_names
    assert back.source_hash == forest_hash(rf)
    np.testing.assert_array_equal(back.predict(X), cf.predict(X))
    # the treelite checkpoint inside the file rebuilds the same predictor
    again = CompiledForest.from_treelite(back.to_treelite())
    assert again.content_hash == cf.content_hash
    with h5py.File(path, "r") as f:
        assert f["treelite"].dtype == np.uint8 and f.attrs["content_hash"] == cf.content_hash


def test_load_rejects_corrupt_and_foreign_files(fitted, tmp_path):
    rf, _ = fitted
    path = CompiledForest.from_sklearn(rf).save(tmp_path / "m.smf.h5")
    with h5py.File(path, "r+") as f:
        f["leaf"][0] += 1.0
    with pytest.raises(DataError, match="does not match its stored hash"):
        CompiledForest.load(path)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["format"] = "something else"
    with pytest.raises(DataError, match="not a smengine compiled forest"):
        CompiledForest.load(other)
    with pytest.raises(DataError, match="missing.h5"):
        CompiledForest.load(tmp_path / "missing.h5")


def test_model_file_hash_covers_names_card_and_treelite(fitted, tmp_path):
    """Swapping two feature names (sm off by 0.07 in the fault catalogue), editing the card or
    a byte of the treelite copy is caught on load; a file without the hash loads with a warning."""
    rf, _ = fitted
    names = [f"f{i}" for i in range(6)]
    cf = CompiledForest.from_sklearn(rf, card={"target": "sm"}, feature_names=names)
    edits = {
        "names": lambda f: f.attrs.__setitem__("feature_names", json.dumps([names[1], names[0], *names[2:]])),
        "card": lambda f: f.attrs.__setitem__("card", json.dumps({"target": "other"})),
        "treelite": lambda f: f["treelite"].__setitem__(100, (int(f["treelite"][100]) + 1) % 256),
    }
    for what, edit in edits.items():
        path = cf.save(tmp_path / f"{what}.smf.h5")
        CompiledForest.load(path)  # intact: loads
        with h5py.File(path, "r+") as f:
            edit(f)
        with pytest.raises(DataError, match=f"{what}.smf.h5: the model file's feature names, card or treelite"):
            CompiledForest.load(path)
    path = cf.save(tmp_path / "old.smf.h5")
    with h5py.File(path, "r+") as f:
        del f.attrs["file_hash"]
    with pytest.warns(SMEngineWarning, match="written before model files carried a file hash"):
        assert CompiledForest.load(path) == cf


def test_home_in_model_paths_is_expanded(fitted, tmp_path, monkeypatch):
    rf, _ = fitted
    monkeypatch.setenv("HOME", str(tmp_path))
    cf = CompiledForest.from_sklearn(rf, cache_dir="~/cache")
    assert len(list((tmp_path / "cache").glob("*.smf.h5"))) == 1
    assert cf.save("~/m.smf.h5") == tmp_path / "m.smf.h5"
    assert CompiledForest.load("~/m.smf.h5") == cf
    assert not (pathlib.Path.cwd() / "~").exists()


def test_cache_by_model_hash(fitted, tmp_path, caplog):
    rf, X = fitted
    with caplog.at_level(logging.INFO, logger="smengine.model._compiled"):
        a = CompiledForest.from_sklearn(rf, cache_dir=tmp_path)
        assert "exporting" in caplog.text
        caplog.clear()
        b = CompiledForest.from_sklearn(rf, cache_dir=tmp_path)
        assert "loaded from cache" in caplog.text and "exporting" not in caplog.text
    assert a == b and len(list(tmp_path.glob("*.smf.h5"))) == 1
    rf2 = RandomForestRegressor(5, random_state=1).fit(X, X[:, 0])
    c = CompiledForest.from_sklearn(rf2, cache_dir=tmp_path)
    assert c != a and len(list(tmp_path.glob("*.smf.h5"))) == 2


def test_pickles_for_dask_workers(fitted):
    import pickle

    rf, X = fitted
    cf = CompiledForest.from_sklearn(rf)
    back = pickle.loads(pickle.dumps(cf))
    assert back == cf
    np.testing.assert_array_equal(back.predict(X[:100]), cf.predict(X[:100]))
