"""The kernel-facing forest object (ForestTables), the engine kernel's argument objects, the exit
table's rule and the limits on kernel entry points."""

from __future__ import annotations

import inspect
import pickle
import re

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from smengine._ext import _engine, _filters, _footprint, _forest, _parallel
from smengine._ext._forest import BLOCK_DTYPE, NODE_DTYPE, ForestTables
from smengine.errors import ConfigError
from smengine.model import CompiledForest

KERNEL_MODULES = (_engine, _filters, _footprint, _forest, _parallel)
MAX_PARAMS = 12


@pytest.fixture(scope="module")
def cf():
    rng = np.random.default_rng(7)
    X = rng.random((800, 5), dtype=np.float32)
    rf = RandomForestRegressor(6, min_samples_leaf=2, random_state=0, n_jobs=1).fit(X, X[:, 0] + X[:, 1] * X[:, 4])
    return CompiledForest.from_sklearn(rf)


def _rows(n=400, nf=5, seed=1):
    return np.random.default_rng(seed).random((n, nf), dtype=np.float32)


# --------------------------------------------------------------------------- ForestTables
def test_node_dtype_is_the_c_record(cf):
    kt = cf._kernel_tables(0)
    assert NODE_DTYPE.itemsize == 12 and kt.nodes.shape == (cf.n_nodes,)
    np.testing.assert_array_equal(kt.nodes["thr"], cf._nodes[:, 0].view(np.float32))
    np.testing.assert_array_equal(kt.nodes["feat"], cf._nodes[:, 1])
    np.testing.assert_array_equal(kt.nodes["right"], cf._nodes[:, 2])
    assert not kt.nodes.flags.writeable
    leaves = kt.nodes["feat"] < 0
    assert np.array_equal(np.sort(kt.nodes["right"][leaves]), np.arange(cf.n_leaves))


def test_block_dtype_is_the_c_record(cf):
    """BLOCK_DTYPE's fields (offsets taken from the C struct) read what the header's layout says."""
    tab = cf.blocks()
    kt = cf._kernel_tables(3)
    rec = tab["blocks"]
    assert BLOCK_DTYPE.itemsize == 64
    b = kt.blocks
    assert b.shape == (rec.shape[0],) and not b.flags.writeable
    np.testing.assert_array_equal(b["thr"], rec[:, :32].copy().view(np.float32))
    np.testing.assert_array_equal(b["feat"], rec[:, 32:40])
    np.testing.assert_array_equal(b["code"], rec[:, 40:48])
    np.testing.assert_array_equal(b["child"], rec[:, 48:52].copy().view(np.int32)[:, 0])
    np.testing.assert_array_equal(b["leaf"], rec[:, 52:56].copy().view(np.int32)[:, 0])


def test_kernel_tables_are_built_once_and_own_their_arrays(cf, monkeypatch):
    monkeypatch.delenv("SMENGINE_FOREST_ISA", raising=False)
    fresh = CompiledForest(cf._nodes, cf._leaf, cf._root, cf.max_depth, cf.n_features)
    bare = fresh._kernel_tables(0)
    assert not bare.has_blocks and bare.boxes is None and bare.blocks is None
    assert fresh._blocks is None  # modes 0 and 1 build no block tables
    assert fresh._kernel_tables(1) is bare
    full = fresh._kernel_tables(3)
    assert full.has_blocks and full is not bare and fresh._kernel_tables(0) is full
    assert (full.n_trees, full.n_features) == (cf.n_trees, cf.n_features)
    assert full.leaf is fresh._leaf and full.root is fresh._root
    t = fresh.blocks()
    for name in ("boxes", "bleaf", "broot"):
        assert getattr(full, name) is t[name]
    assert full.isa == _forest.isa(2) and full.isa_cap == 2
    assert "6 trees" in repr(full) and "block tables" in repr(full)


def test_kernel_predict_checks_its_forest(cf):
    kt_bare = ForestTables(cf._nodes, cf._leaf, cf._root, cf.n_features)
    X = _rows()
    mean, sd, st = np.empty(len(X)), np.empty(0), np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="reuse 3 needs"):
        _forest.predict(kt_bare, X, mean, sd, 3, 64, 1, st)
    with pytest.raises(ValueError, match="n_features"):
        _forest.predict(kt_bare, X[:, :4].copy(), mean, sd, 0, 64, 1, st)
    with pytest.raises(TypeError):
        _forest.predict(None, X, mean, sd, 0, 64, 1, st)
    assert _forest.predict(kt_bare, X, mean, sd, 1, 64, 1, st) == 0
    np.testing.assert_array_equal(mean, cf.predict(X))
    with pytest.raises(ValueError, match="all four"):
        ForestTables(cf._nodes, cf._leaf, cf._root, cf.n_features, boxes=cf.blocks()["boxes"])
    t = cf.blocks()
    with pytest.raises(ValueError, match="malformed"):
        ForestTables(cf._nodes, cf._leaf, cf._root, cf.n_features, t["boxes"], t["blocks"], t["bleaf"][:-1], t["broot"])
    with pytest.raises(ValueError):
        ForestTables(cf._nodes.astype(np.int64), cf._leaf, cf._root, cf.n_features)


def test_forest_tables_pickle_and_are_left_out_of_the_forests_pickle(cf):
    kt = cf._kernel_tables(3)
    back = pickle.loads(pickle.dumps(kt))
    assert back.has_blocks and back.isa_cap == kt.isa_cap
    X = _rows()
    out = []
    for t in (kt, back):
        mean, st = np.empty(len(X)), np.zeros(3, np.int64)
        _forest.predict(t, X, mean, np.empty(0), 3, 128, 1, st)
        out.append(mean)
    assert out[0].tobytes() == out[1].tobytes()
    cf2 = pickle.loads(pickle.dumps(cf))
    assert cf2._kernel is None and cf2._blocks is None
    assert cf2.predict(X).tobytes() == cf.predict(X).tobytes()


# --------------------------------------------------------------------------- instruction-set cap
@pytest.mark.parametrize("value, level", [("c", 0), (" AVX2 ", 1), ("avx512", 2), ("", 2)])
def test_isa_cap_reaches_the_kernel_object(cf, monkeypatch, value, level):
    monkeypatch.setenv("SMENGINE_FOREST_ISA", value)
    kt = cf._kernel_tables(3)
    assert kt.isa_cap == level and kt.isa == _forest.isa(level) <= level
    assert cf.predict(_rows()).tobytes() == cf.predict(_rows(), reuse=False).tobytes()


def test_bad_isa_value_raises_config_error(cf, monkeypatch):
    monkeypatch.setenv("SMENGINE_FOREST_ISA", "sse4")
    with pytest.raises(ConfigError, match=r"SMENGINE_FOREST_ISA='sse4'"):
        cf.predict(_rows())


# --------------------------------------------------------------------------- exit table
def test_exit_lut_follows_its_rule():
    """smf_exit_lut[m]: start at node p = 0, three times go to 2p + 1 if bit p of m is set
    (node p's test holds) else 2p + 2; the walk ends at node 7 + k and the entry is k."""

    def exit_of(m: int) -> int:
        p = 0
        for _ in range(3):
            p = 2 * p + 1 if (m >> p) & 1 else 2 * p + 2
        return p - 7

    lut = _forest.exit_lut()
    assert isinstance(lut, bytes) and len(lut) == 128
    assert lut == bytes(exit_of(m) for m in range(128))


# --------------------------------------------------------------------------- entry points
def _n_params(obj) -> int:
    try:
        return len(inspect.signature(obj).parameters)
    except (TypeError, ValueError):  # an extension type's __init__: the embedded signature
        doc = (obj.__doc__ or "").splitlines()[0]
        m = re.match(r"\w+(?:\.\w+)*\((.*)\)", doc)
        assert m, f"no signature for {obj!r}: {doc!r}"
        params = [p for p in m.group(1).split(",") if p.strip()]
        return len(params) - (params[0].strip() == "self")


def _entry_points():
    for mod in KERNEL_MODULES:
        for name, obj in vars(mod).items():
            if name.startswith("__"):
                continue
            if isinstance(obj, type) and obj.__module__ == mod.__name__:
                yield f"{mod.__name__}.{name}", obj
                for meth_name, meth in vars(obj).items():
                    if callable(meth) and not meth_name.startswith("__"):
                        yield f"{mod.__name__}.{name}.{meth_name}", meth
            elif callable(obj) and getattr(obj, "__module__", None) == mod.__name__:
                yield f"{mod.__name__}.{name}", obj


def test_no_kernel_entry_point_takes_more_than_12_parameters():
    counts = {name: _n_params(obj) for name, obj in _entry_points()}
    assert "smengine._ext._engine.run_days" in counts and "smengine._ext._forest.ForestTables" in counts
    assert counts["smengine._ext._engine.run_days"] == 11
    too_many = {k: v for k, v in counts.items() if v > MAX_PARAMS}
    assert not too_many, too_many


# --------------------------------------------------------------------------- engine argument objects
def test_engine_argument_objects_check_their_shapes():
    ny = nx = 8
    static = np.zeros((2, ny, nx), np.float32)
    dynamic = np.zeros((3, 1, ny, nx), np.float32)
    cindex = np.zeros((1, ny, nx), np.int32)
    coff = np.zeros(1, np.int64)
    plan = np.zeros((4, 3), np.int32)
    assert _engine.TileArrays(static, dynamic, cindex, coff, plan, 4).sub == 4
    with pytest.raises(ValueError, match="multiples of sub"):
        _engine.TileArrays(static, dynamic, cindex, coff, plan, 3)
    with pytest.raises(ValueError, match="TileArrays"):
        _engine.TileArrays(static, np.zeros((3, 1, 4, nx), np.float32), cindex, coff, plan, 4)
    with pytest.raises(ValueError):  # a dtype the kernel does not read
        _engine.TileArrays(static.astype(np.float64), dynamic, cindex, coff, plan, 4)
    g = np.zeros((2, ny * nx))
    _engine.SWIState(g, g.copy(), g.copy(), np.ones(2))
    with pytest.raises(ValueError, match="SWIState"):
        _engine.SWIState(g, g.copy(), g.copy(), np.ones(3))
    D = 2
    _engine.ChunkInputs(
        np.zeros(D, np.int64), np.ones(D, np.uint8), np.zeros(D), np.zeros((D, 4), np.float32), np.zeros((D, 2))
    )
    with pytest.raises(ValueError, match="ChunkInputs"):
        _engine.ChunkInputs(
            np.zeros(D, np.int64), np.ones(D + 1, np.uint8), np.zeros(D), np.zeros((D, 4), np.float32), np.zeros((D, 2))
        )
    lay = np.zeros((D, 2, 2), np.float32)
    _engine.Outputs(lay, lay.copy(), lay.copy(), lay.copy(), np.zeros((D, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="Outputs"):
        _engine.Outputs(lay, lay.copy(), lay[:1].copy(), lay.copy(), np.zeros((D, 2, 2), np.uint8))
    with pytest.raises(ValueError, match="Scratch"):
        _engine.Scratch(np.zeros((2, 10), np.float32), np.zeros((1, 10), np.uint8), np.zeros((2, 40)))
