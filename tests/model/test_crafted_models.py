"""Crafted and corrupted model files are refused, never crash the interpreter (``CompiledForest.load``).

The native kernels index the node tables without bounds checks; ``CompiledForest.load`` validates
every table first (``_validate_tables``). The stored hashes are no defence against a crafted file:
they are plain SHA-256 of the content, and the crafter here recomputes them, as anyone can. Every
load that could crash runs in a subprocess, so a segmentation fault is a negative return code that
fails the test instead of killing pytest.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from smengine.errors import DataError
from smengine.model import CompiledForest

N_FEATURES = 4

# Loads argv[1], predicts the rows in argv[2] with every kernel; prints one JSON line.
LOAD_ONE = """
import json, sys
import numpy as np
from smengine.errors import SMEngineError
from smengine.model import CompiledForest
try:
    cf = CompiledForest.load(sys.argv[1])
except SMEngineError as err:
    print(json.dumps({"outcome": type(err).__name__, "message": str(err)}))
else:
    X = np.load(sys.argv[2])
    preds = [cf.predict(X, reuse=r).tolist() for r in (True, "box", False)]
    print(json.dumps({"outcome": "loaded", "predictions": preds}))
"""

# Loads every file listed in argv[1] (and predicts argv[2]'s rows); each must end in an smengine error
# or in finite-or-NaN predictions. Prints the file before touching it, so a crash names it.
LOAD_MANY = """
import json, sys, traceback
import numpy as np
from smengine.errors import SMEngineError
from smengine.model import CompiledForest
X = np.load(sys.argv[2])
outcomes, unexpected = {}, []
for path in json.load(open(sys.argv[1])):
    print("loading", path, flush=True)
    try:
        cf = CompiledForest.load(path)
        for reuse in (True, "box", False):
            p = cf.predict(X, reuse=reuse)
            if p.shape != (X.shape[0],) or np.isinf(p).any():
                unexpected.append(f"{path}: prediction {p!r}")
        key = "loaded"
    except SMEngineError as err:
        key = type(err).__name__ + (": malformed" if "malformed model file" in str(err) else "")
    except BaseException as err:  # anything else is a finding
        unexpected.append(f"{path}: {type(err).__name__}: {err}\\n{traceback.format_exc()}")
        key = "unexpected"
    outcomes[key] = outcomes.get(key, 0) + 1
print("SUMMARY " + json.dumps({"outcomes": outcomes, "unexpected": unexpected}), flush=True)
"""


def _run(code: str, *args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"the interpreter died (return code {proc.returncode}; a negative one is a signal, -11 a segfault)\n"
        f"stdout (last lines): {proc.stdout[-2000:]}\nstderr: {proc.stderr[-3000:]}"
    )
    return proc


# ------------------------------------------------------------------ what a crafter does: recompute the hashes
def _value(v):
    """An HDF5 attribute as the writer gave it (str, int, float)."""
    if isinstance(v, bytes):
        return v.decode()
    return v.item() if isinstance(v, np.generic) else v


def _crafter_layout_hash(f: h5py.File) -> str:
    """The ``content_hash`` of the arrays now in the file, computed from scratch (no smengine code)."""
    ensemble = _value(f.attrs.get("ensemble", "random_forest"))
    kind = {"random_forest": "", "boosting": "ensemble=boosting;", "hybrid": "ensemble=hybrid;"}[ensemble]
    h = hashlib.sha256(f"smengine.compiled-forest/1;n_features={int(f.attrs['n_features'])};{kind}".encode())
    for name, dtype in (("nodes", np.int32), ("leaf", np.float64), ("root", np.int64)):
        a = np.ascontiguousarray(f[name][...], dtype=dtype)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    if ensemble == "hybrid":
        h.update(b"lin_coef" + np.ascontiguousarray(f["lin_coef"][...], dtype="<f8").tobytes())
        h.update(f"lin_intercept={float(f.attrs['lin_intercept']).hex()};".encode())
    return "sha256:" + h.hexdigest()


def _crafter_file_hash(f: h5py.File) -> str:
    """The ``file_hash`` of the attributes and treelite copy now in the file, from scratch."""
    h = hashlib.sha256(b"smengine-model-file;")
    for k in sorted(f.attrs):
        if k != "file_hash":
            h.update(f"{k}={_value(f.attrs[k])!s};".encode())
    tl = f["treelite"][...].tobytes() if "treelite" in f else None
    h.update(b"treelite=" + (hashlib.sha256(tl).digest() if tl is not None else b"none"))
    return "sha256:" + h.hexdigest()


def _rehash(path: Path) -> None:
    """Make the stored hashes match the (edited) content again, as a crafter would."""
    with h5py.File(path, "r+") as f:
        f.attrs["content_hash"] = _crafter_layout_hash(f)
        f.attrs["file_hash"] = _crafter_file_hash(f)


def _edit_nodes(path: Path, edit) -> None:
    with h5py.File(path, "r+") as f:
        nodes = f["nodes"][...]
        edit(nodes, f)
        f["nodes"][...] = nodes


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    """A small saved forest (5 trees, 4 features), a saved file of rows to predict, and the forest."""
    d = tmp_path_factory.mktemp("crafted")
    rng = np.random.default_rng(0)
    X = rng.random((300, N_FEATURES), dtype=np.float32)
    rf = RandomForestRegressor(5, min_samples_leaf=5, random_state=0, n_jobs=1).fit(X, X.sum(1))
    cf = CompiledForest.from_sklearn(rf, feature_names=[f"f{i}" for i in range(N_FEATURES)])
    path = cf.save(d / "genuine.smf.h5")
    rows = d / "rows.npy"
    np.save(rows, X[:40])
    return path, rows, cf


def _split_node(cf: CompiledForest, tree: int, k: int = 1) -> int:
    """The layout index of the k-th split node of a tree."""
    start = int(cf._root[tree])
    end = int(cf._root[tree + 1]) if tree + 1 < cf.n_trees else cf.n_nodes
    return start + int(np.flatnonzero(cf._nodes[start:end, 1] >= 0)[k])


def test_the_crafter_recomputes_the_stored_hashes(genuine):
    """The hashes are integrity, not authenticity: recomputed from the content alone, they match."""
    path, _, cf = genuine
    with h5py.File(path, "r") as f:
        assert _crafter_layout_hash(f) == f.attrs["content_hash"] == cf.content_hash
        assert _crafter_file_hash(f) == f.attrs["file_hash"]


def test_genuine_models_of_every_kind_pass_the_validation(tmp_path):
    """No genuine model is refused: random and extra-trees forests grown to full depth, a LightGBM
    ensemble with -inf thresholds (float64 thresholds beyond float32's range round down to -inf,
    which the validation allows) and a hybrid round-trip through save and load unchanged."""
    from sklearn.ensemble import ExtraTreesRegressor

    rng = np.random.default_rng(1)
    X = rng.random((400, N_FEATURES))
    y = np.sin(5 * X[:, 0]) + X[:, 1] ** 2
    models = {
        "rf": CompiledForest.from_sklearn(RandomForestRegressor(4, random_state=0, n_jobs=1).fit(X, y)),
        "et": CompiledForest.from_sklearn(ExtraTreesRegressor(4, random_state=0, n_jobs=1).fit(X, y)),
    }
    lgb = pytest.importorskip("lightgbm")
    from smengine.model import HybridRegressor

    Xb = X.copy()
    Xb[:, 2] = rng.choice([-1e300, -1e299, 1.0], X.shape[0])
    yb = y + 3.0 * (Xb[:, 2] < -5e299)
    booster = lgb.LGBMRegressor(n_estimators=10, num_leaves=7, min_child_samples=5, verbose=-1).fit(Xb, yb)
    models["lightgbm"] = CompiledForest.from_lightgbm(booster)
    thresholds = models["lightgbm"]._nodes[:, 0].view(np.float32)[models["lightgbm"]._nodes[:, 1] >= 0]
    assert np.isneginf(thresholds).any()
    models["hybrid"] = CompiledForest.from_hybrid(HybridRegressor(lgbm_params={"n_estimators": 10}).fit(X, y))
    rows = X[:50].astype(np.float32)
    for name, cf in models.items():
        back = CompiledForest.load(cf.save(tmp_path / f"{name}.smf.h5"))
        assert back.content_hash == cf.content_hash and back.max_depth == cf.max_depth
        np.testing.assert_array_equal(back.predict(rows), cf.predict(rows))
    assert models["rf"].max_depth > 10  # grown to full depth


# ------------------------------------------------------------------ the three variants, and more
# Each edits the node records of tree 2 around its split node g and returns the node the error names.
def _child_out_of_range(nodes, f, g):
    nodes[g, 2] = 10**9  # the walk would read (and the leaf-box builder write) far outside the tables
    return g


def _feature_out_of_range(nodes, f, g):
    nodes[g, 1] = 10**6  # x[10**6] of a row with 4 features
    return g


def _cycle(nodes, f, g):
    nodes[g, 2] = g  # the right child is the node itself: a walk that goes right never ends
    return g


def _back_edge_to_root(nodes, f, g):
    nodes[g, 2] = int(f["root"][2])  # a cycle through the tree's root
    return g


def _shared_node(nodes, f, g):
    # the right child of a later split node of the same tree becomes g's too: indices in range and
    # forward, but a node with two parents (and g's old right child with none): not a tree
    end = int(f["root"][3])
    h = g + 1 + int(np.flatnonzero(nodes[g + 1 : end, 1] >= 0)[-1])
    old = int(nodes[g, 2])
    nodes[g, 2] = nodes[h, 2]
    return min(old, int(nodes[h, 2]))


def _leaf_slot_out_of_range(nodes, f, g):
    leaf = g + 1 + int(np.flatnonzero(nodes[g + 1 :, 1] < 0)[0])
    nodes[leaf, 2] = -5  # the value read from before the leaf array
    return leaf


def _nan_threshold(nodes, f, g):
    nodes[g, 0] = np.float32(np.nan).view(np.int32)
    return g


CRAFTED = {
    "child_out_of_range": (_child_out_of_range, "children .* should both lie after the node and inside"),
    "feature_out_of_range": (_feature_out_of_range, r"feature index 1000000 outside \[0, 4\)"),
    "cycle": (_cycle, "children .* should both lie after the node and inside"),
    "back_edge_to_root": (_back_edge_to_root, "children .* should both lie after the node and inside"),
    "shared_node": (_shared_node, r"the child of [02] nodes, not of one"),
    "leaf_slot_out_of_range": (_leaf_slot_out_of_range, "leaf slot -5, expected"),
    "nan_threshold": (_nan_threshold, "NaN split threshold"),
}


@pytest.mark.parametrize("variant", list(CRAFTED))
def test_crafted_node_tables_with_recomputed_hashes_are_refused(genuine, tmp_path, variant):
    """The issue's three variants (child and feature index out of range, a cycle) and four more:
    with the hashes recomputed, each is refused with a DataError naming the file, tree and node."""
    path, rows, cf = genuine
    edit, message = CRAFTED[variant]
    g = _split_node(cf, tree=2)
    crafted = tmp_path / f"{variant}.smf.h5"
    shutil.copy(path, crafted)
    named = []
    _edit_nodes(crafted, lambda nodes, f: named.append(edit(nodes, f, g)))
    _rehash(crafted)
    with h5py.File(crafted, "r") as f:  # the crafter did it right: the hashes match the new content
        assert f.attrs["content_hash"] == _crafter_layout_hash(f) != cf.content_hash
    out = json.loads(_run(LOAD_ONE, crafted, rows).stdout.strip().splitlines()[-1])
    assert out["outcome"] == "DataError", out
    node = named[0]
    assert out["message"].startswith(f"{crafted}: malformed model file (corrupt or crafted), refused: "), out
    assert f"tree 2, node {node - int(cf._root[2])} (node {node} of the layout): " in out["message"], out
    assert re.search(message, out["message"]), out["message"]


def test_crafted_headers_and_arrays_are_refused(genuine, tmp_path):
    """Counts, dtypes and shapes that disagree with the header are refused too, hashes recomputed.
    In-process: ``load`` itself runs no native kernel (the kernel tables are built on the first
    prediction), and these files are never predicted with."""
    path, _, cf = genuine

    def crafted(name, edit):
        p = tmp_path / f"{name}.smf.h5"
        shutil.copy(path, p)
        with h5py.File(p, "r+") as f:
            edit(f)
        _rehash(p)
        return p

    def replace(name, data):
        def edit(f):
            del f[name]
            f.create_dataset(name, data=data)

        return edit

    cases = {
        "n_features_too_small": (lambda f: f.attrs.modify("n_features", 2), r"feature index \d outside \[0, 2\)"),
        "max_depth_lies": (lambda f: f.attrs.modify("max_depth", 3), "max_depth is 3, but the deepest node"),
        "root_out_of_range": (replace("root", np.array([0, 10, 20, 30, 10**8])), "tree 4: root node 100000000"),
        "roots_not_increasing": (replace("root", cf._root[[0, 2, 1, 3, 4]]), "tree 2: root node"),
        "leaf_value_nan": (replace("leaf", np.where(np.arange(cf.n_leaves) == 7, np.nan, cf._leaf)), "non-finite"),
        "leaf_values_missing": (replace("leaf", cf._leaf[:-3]), "leaf nodes for"),
        "nodes_int64": (replace("nodes", cf._nodes.astype(np.int64)), "'nodes' dataset should hold int32"),
        "nodes_two_columns": (replace("nodes", cf._nodes[:, :2].copy()), r"\(n_nodes, 3\) int32, got int32 \(\d+, 2\)"),
        "nodes_empty": (replace("nodes", np.zeros((0, 3), np.int32)), "0 nodes"),
        "leaf_2d": (replace("leaf", cf._leaf[:, None]), "'leaf' dataset has shape"),
    }
    for name, (edit, message) in cases.items():
        with pytest.raises(DataError, match=message):
            CompiledForest.load(crafted(name, edit))


def test_a_crafted_chain_deeper_than_the_stack_predicts_by_plain_walks(genuine, tmp_path):
    """A well-formed but 200 000-deep tree (a chain of left children) is valid: it loads and predicts
    by iterative walks, since the leaf-box builder recurses once per level and would overflow the
    stack (MAX_BOX_DEPTH). The header's max_depth is checked, so a crafter cannot hide the depth."""
    path, rows, _ = genuine
    D = 200_000
    nodes = np.zeros((2 * D + 1, 3), np.int32)
    k = np.arange(D)
    nodes[:D, 0] = (D - k).astype(np.float32).view(np.int32)  # split k: go left (deeper) iff x0 <= D - k
    nodes[:D, 2] = 2 * D - k  # its right child, a leaf, after the chain's last leaf (preorder)
    nodes[D:, 1] = -1
    nodes[D:, 2] = np.arange(D + 1)  # leaf slots in node order
    crafted = tmp_path / "chain.smf.h5"
    shutil.copy(path, crafted)
    for depth_attr, expect in ((7, "max_depth is 7, but the deepest node is 200000"), (D, None)):
        with h5py.File(crafted, "r+") as f:
            for name, data in (("nodes", nodes), ("leaf", np.arange(D + 1.0)), ("root", np.array([0]))):
                del f[name]
                f.create_dataset(name, data=data)
            f.attrs["max_depth"] = depth_attr
        _rehash(crafted)
        if expect:
            with pytest.raises(DataError, match=expect):
                CompiledForest.load(crafted)
            continue
        X = np.zeros((3, N_FEATURES), np.float32)
        X[:, 0] = [2.5, 0.5, 1e6]  # right at split D - 2 (slot 2), the chain's last leaf (slot 0), right at once
        np.save(rows_chain := tmp_path / "chain_rows.npy", X)
        out = json.loads(_run(LOAD_ONE, crafted, rows_chain).stdout.strip().splitlines()[-1])
        assert out["outcome"] == "loaded", out
        assert out["predictions"] == [[2.0, 0.0, float(D)]] * 3


# ------------------------------------------------------------------ fuzz
def _corrupt(src: Path, dst: Path, rng: np.random.Generator, case: int) -> str:
    """One random corruption of a saved model file; returns what was done."""
    data = bytearray(src.read_bytes())
    kind = case % 10
    if kind < 2:  # raw byte flips anywhere (HDF5 metadata, attributes, tables, treelite copy)
        for pos in rng.integers(0, len(data), rng.integers(1, 9)):
            data[pos] ^= int(rng.integers(1, 256))
        dst.write_bytes(bytes(data))
        return "byte flips"
    if kind == 2:  # truncated
        dst.write_bytes(bytes(data[: int(rng.integers(0, len(data)))]))
        return "truncated"
    dst.write_bytes(bytes(data))
    with h5py.File(dst, "r+") as f:
        nodes = f["nodes"][...]
        n = nodes.shape[0]
        pick = rng.integers(0, n, rng.integers(1, 6))
        if kind in (3, 4, 5):  # random values into the node records
            col = int(rng.integers(0, 3))
            pool = [
                rng.integers(-3, n + 3, pick.size),  # plausible indices
                rng.integers(-(2**31), 2**31 - 1, pick.size),  # anything
                rng.integers(-2, N_FEATURES + 2, pick.size),  # plausible features
            ]
            values = pool[int(rng.integers(0, 3))]
            if col == 0 and rng.random() < 0.5:  # thresholds: NaN, ±inf or moved
                values = np.array(rng.choice([np.nan, np.inf, -np.inf, 0.5, -1e30], pick.size), np.float32).view(
                    np.int32
                )
            nodes[pick, col] = values
            f["nodes"][...] = nodes
            what = f"node column {col}"
        elif kind == 6:  # swap or copy node records (structure changes, indices plausible)
            other = rng.integers(0, n, pick.size)
            nodes[pick] = nodes[other]
            f["nodes"][...] = nodes
            what = "node records copied"
        elif kind == 7:  # leaf values and roots
            leaf = f["leaf"][...]
            leaf[rng.integers(0, leaf.size, 3)] = rng.choice([np.nan, np.inf, -np.inf, 1e308, -7.0], 3)
            f["leaf"][...] = leaf
            root = f["root"][...]
            if rng.random() < 0.5:
                root[rng.integers(0, root.size)] = rng.integers(-5, n + 5)
                f["root"][...] = root
            what = "leaf values / roots"
        elif kind == 8:  # header counts
            name = str(rng.choice(["n_features", "max_depth"]))
            f.attrs[name] = int(rng.choice([-1, 0, 1, 2, 3, 5, 64, 2**31, 2**40]))
            what = f"header {name}"
        else:  # arrays replaced by ones of another dtype, shape or length
            name = str(rng.choice(["nodes", "leaf", "root"]))
            a = f[name][...]
            del f[name]
            choice = int(rng.integers(0, 4))
            new = [
                a.astype(np.float64),
                a.reshape(-1),
                a[: max(a.shape[0] // 2, 0)],
                np.zeros((0,) + a.shape[1:], a.dtype),
            ]
            f.create_dataset(name, data=new[choice])
            what = f"{name} replaced ({choice})"
    if case % 20 < 10:  # hashes recomputed for half of them, as a crafter would
        _rehash(dst)
        what += ", hashes recomputed"
    return what


def test_fuzz_corrupted_model_files_never_crash_the_interpreter(genuine, tmp_path):
    """300 random corruptions of a saved model file (byte flips, truncations, random values in the
    node records, leaf values, roots and header counts, arrays of another dtype or shape; the
    hashes recomputed for half): every load, in one subprocess, ends in an smengine error or in
    finite-or-NaN predictions from every kernel."""
    path, rows, _ = genuine
    rng = np.random.default_rng(0)
    files, kinds = [], {}
    for case in range(300):
        dst = tmp_path / f"fuzz{case:03d}.smf.h5"
        try:
            what = _corrupt(path, dst, rng, case)
        except (OSError, KeyError, ValueError):  # h5py could not even open the corrupted file to rehash it
            what = "unreadable"
        kinds[what.split(",")[0]] = kinds.get(what.split(",")[0], 0) + 1
        files.append(str(dst))
    listing = tmp_path / "files.json"
    listing.write_text(json.dumps(files))
    proc = _run(LOAD_MANY, listing, rows, timeout=300)
    summary = json.loads(proc.stdout.split("SUMMARY ", 1)[1])
    assert not summary["unexpected"], "\n".join(summary["unexpected"][:5])
    outcomes = summary["outcomes"]
    what = f"outcomes {outcomes} of corruptions {kinds}"
    assert sum(outcomes.values()) == 300 and set(outcomes) <= {"loaded", "DataError", "DataError: malformed"}, what
    assert outcomes.get("DataError: malformed", 0) >= 30, what  # the validation refused the crafted tables
    assert outcomes.get("loaded", 0) >= 5, what  # harmless edits (thresholds moved) with matching hashes load
