"""CompiledForest: a regression forest in a compact native layout, exact and fast.

The portable model is treelite's (``treelite.sklearn.import_model``); the predictor walks a
compact copy of it in a Cython/C kernel (``smengine._ext._forest``): each tree keeps the
previous row's leaf, a row inside that leaf's precomputed box reuses it, and the trees a
row misses are walked in interleaved lanes over 3-level blocks (one vector compare decides
three levels). See ``_forest.h`` for the layouts and why the result is exactly
``RandomForestRegressor.predict``'s. The kernels, the engine's included, see the forest
through one object, :class:`smengine._ext._forest.ForestTables`
(:meth:`CompiledForest._kernel_tables`).

Gradient-boosted ensembles (LightGBM regression, :meth:`CompiledForest.from_lightgbm`) go
through the same layout and kernels: their trees are summed instead of averaged (the tree sum
divided by 1), in the same float64 tree order as LightGBM's ``GBDT::PredictRaw``, so the
prediction is ``Booster.predict``'s bit for bit. Their spread over trees is NaN: boosted trees
are successive corrections, not draws of one prediction.

A hybrid model (:class:`smengine.model.HybridRegressor`, :meth:`CompiledForest.from_hybrid`) is a
summed LightGBM ensemble plus a linear base: the kernels add ``intercept + Σ_j coef_j · x_j``
(float64, feature order, ``smf_output`` in ``_forest.h``) to the tree sum of every row, bit for bit
``HybridRegressor.predict``.

Model files (:meth:`CompiledForest.save` / :meth:`CompiledForest.load`, HDF5) carry SHA-256 hashes
of their content. They are an integrity check, not authenticity: they catch accidental corruption,
but anyone who can write a file can recompute them, so load model files only from sources you
trust. The native kernels index the node tables without bounds checks; every table is therefore
validated once when a forest is built or loaded (:func:`_validate_tables`: indices in range, trees
acyclic, no NaN threshold, finite leaf values, counts consistent), so a corrupt or crafted file is
refused with a :class:`~smengine.errors.DataError` instead of crashing the interpreter.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from smengine._io import atomic_write
from smengine._threads import effective_n_threads, forest_isa_cap
from smengine.errors import ConfigError, DataError, SMEngineWarning, ValidationError
from smengine.model._hash import forest_hash

__all__ = ["CompiledForest", "TraversalStats", "detect_stride"]

log = logging.getLogger(__name__)

FORMAT = "smengine.compiled-forest"
FORMAT_VERSION = 1
#: The ``format_version`` of files holding a summed (boosted) ensemble: a reader of version 1
#: would average their trees, so it is made to refuse them. Random forests stay version 1.
SUMMED_FORMAT_VERSION = 2
#: The ``format_version`` of files holding a hybrid model (summed trees plus a linear base): a reader
#: of version 2 would drop the base, so it is made to refuse them.
HYBRID_FORMAT_VERSION = 3
ENSEMBLES = ("random_forest", "boosting", "hybrid")
#: LightGBM's ``kZeroThreshold`` (``1e-35f``): its predictor reads a feature with
#: ``|x| <= kZeroThreshold`` as 0.0 (``c_api.cpp``, ``RowPairFunctionFromDenseMatric``).
LGBM_ZERO_THRESHOLD = float(np.float32(1e-35))
DEFAULT_BLOCK = 16384
STRIDE_BLOCKS = 32  # with stride > 0, a kernel block holds up to this many strides of rows (at least 4)
AUTO_STRIDE_MIN_ROWS = 65536  # flat inputs at least this long get detect_stride()
#: Most features the leaf-box table and the block layout (reuse=True's kernel) can hold: blocks keep
#: feature indices in 8 bits (``smf_blk.feat`` in ``_forest.h``). Larger forests predict by plain walks.
MAX_BOX_FEATURES = 256
#: Deepest tree the leaf-box table (reuse=True's kernel) is built for: ``smf_leaf_boxes`` in ``_forest.h`` recurses
#: once per level (~100 bytes of stack each), so a deeper forest predicts by plain walks, which are iterative.
MAX_BOX_DEPTH = 1024

# treelite's Operator enum (include/treelite/enum/operator.h)
_CMP_LT, _CMP_LE = 2, 3


@dataclass(frozen=True)
class TraversalStats:
    """How the kernel answered one prediction call (summed over rows and trees).

    Attributes
    ----------
    row_trees : int
        Valid rows × trees.
    visits : int
        Walk steps: split nodes for ``reuse='box'`` and ``False`` (a plain traversal walks
        depth-many per row and tree), 3-level blocks for the default kernel.
    box_hits : int
        Row-trees answered by the leaf-box test alone (no node visited).
    walks : int
        Row-trees that walked from the root (box misses, or every row without reuse).
    n_invalid : int
        Rows skipped because a feature was NaN or infinite.
    """

    row_trees: int
    visits: int
    box_hits: int
    walks: int
    n_invalid: int

    @property
    def visits_per_row_tree(self) -> float:
        return self.visits / self.row_trees if self.row_trees else float("nan")

    @property
    def hit_rate(self) -> float:
        return self.box_hits / self.row_trees if self.row_trees else float("nan")


def detect_stride(X: npt.ArrayLike, *, max_lag: int = 4096, min_lag: int = 8, n_probes: int = 16) -> int:
    """Width of the raster that flat feature rows were read from, or 0 if they show none.

    Rows of a raster given row by row are as close to the row ``nx`` before them (the pixel
    above) as to their neighbour in the row. For ``n_probes`` evenly spaced probe rows the
    scaled max-norm distance ``max_f |x_p,f − x_p−s,f| / σ_f`` (σ_f: the feature's standard
    deviation over the probes; constant features are ignored, a NaN makes the distance
    infinite) is taken to each of the ``L = min(max_lag, n // 8)`` rows before it, and its
    median over probes ``D(s)`` is formed. The lag ``s ≥ min_lag`` with the smallest
    ``D(s)`` is returned when it is a clear dip: ``D(s) ≤ 2 D(1)`` and
    ``D(s) < D̃ / 2`` (``D̃``: the median of ``D`` over all lags), on the probes and again on
    ``8 · n_probes`` other rows against lag 1 and 32 lags spread over ``[min_lag, L]`` (the
    smallest of ``L`` medians is biased low; the second look has no choice to make).
    Shuffled rows, and rows that are only smooth in order (a random walk), have no such dip.
    It costs ~1.5 ms for 16 features (10^5–10^6 rows).

    :meth:`CompiledForest.predict` uses it for flat inputs of at least 65 536 rows when
    ``stride`` is not given: the detected row above (and above-right) become reference
    leaves. Any stride gives the same predictions; a good one only saves walks.

    Parameters
    ----------
    X : array_like, shape (n_rows, n_features)
        Feature rows (converted to float32).
    max_lag : int, optional
        Widest raster looked for (rows).
    min_lag : int, optional
        Narrowest raster looked for (smaller lags are neighbours along a raster row).
    n_probes : int, optional
        Probe rows (evenly spaced, so the answer is deterministic).

    Returns
    -------
    int
        The detected width in rows, or 0.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[0:300, 0:500].astype(float)
    >>> fields = [x, y / 2, np.hypot(x - 200, y - 100), np.sin(x / 70) * np.cos(y / 50)]
    >>> rows = np.stack(fields, -1).reshape(-1, 4)  # 150 000 rows, 4 features
    >>> detect_stride(rows)
    500
    >>> detect_stride(rows[np.random.default_rng(0).permutation(len(rows))])
    0
    """
    from smengine._ext import _forest

    rows = np.ascontiguousarray(X, dtype=np.float32)
    if rows.ndim != 2:
        raise ValidationError(f"detect_stride: X should be (n_rows, n_features), got shape {rows.shape}")
    max_lag, min_lag, n_probes = int(max_lag), int(min_lag), int(n_probes)
    if min(max_lag, min_lag, n_probes) < 1:
        raise ConfigError(
            f"detect_stride: max_lag, min_lag and n_probes should be >= 1, got {max_lag}, {min_lag}, {n_probes}"
        )

    def dip(at_s: float, at_1: float, others: np.ndarray) -> bool:
        return bool(at_s <= 2.0 * at_1 and at_s < 0.5 * np.median(others))

    n = rows.shape[0]
    L = min(max_lag, n // 8)
    if max(2 * min_lag, 2) > L:
        return 0
    probes = np.unique(np.linspace(L, n - 1, n_probes).astype(np.intp))
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.std(rows[probes].astype(np.float64), axis=0)
    inv = np.zeros(rows.shape[1], dtype=np.float32)
    ok = np.isfinite(scale) & (scale > 0)
    inv[ok] = 1.0 / scale[ok]
    d = np.empty((L, probes.size), dtype=np.float32)
    _forest.lag_distances(rows, probes, inv, d)
    d.sort(axis=1)
    D = 0.5 * (d[:, (probes.size - 1) // 2] + d[:, probes.size // 2])  # median over probes; D[s - 1]: lag s
    s = min_lag + int(np.argmin(D[min_lag - 1 :]))
    if not dip(D[s - 1], D[0], D):
        return 0
    # The smallest of L medians is biased low: confirm on other rows, against lag 1 and 32 lags
    # spread over [min_lag, L] (the same criterion, now without a choice among lags).
    fresh = np.unique(np.linspace(L, n - 1, 8 * n_probes).astype(np.intp) + 1)
    fresh = fresh[(fresh < n) & ~np.isin(fresh, probes)]
    spread = np.unique(np.linspace(min_lag, L, 32).astype(np.intp))
    lags = np.concatenate([[1, s], spread[np.abs(spread - s) > 2]])
    with np.errstate(invalid="ignore", over="ignore"):
        dist = np.abs(rows[fresh][:, None, :] - rows[fresh[:, None] - lags]) * inv
        dist = np.where(np.isnan(dist).any(-1), np.inf, dist.max(-1))
    Dc = np.median(dist, axis=0)
    if dip(Dc[1], Dc[0], Dc[2:]):
        log.debug(
            "detect_stride: rows look like a raster of width %d (D(1) = %.3g, D(%d) = %.3g, other lags %.3g)",
            s,
            Dc[0],
            s,
            Dc[1],
            np.median(Dc[2:]),
        )
        return s
    return 0


def _floor_to_float32(t: np.ndarray, strict: bool) -> np.ndarray:
    """Largest float32 ``f`` with ``f <= t`` (``strict``: ``f < t``), elementwise.

    For every float32 ``x``: ``x <= t`` ⇔ ``x <= f`` (and ``x < t`` ⇔ ``x <= f`` when strict).
    """
    with np.errstate(over="ignore"):
        f = t.astype(np.float32)
    too_big = f.astype(np.float64) >= t if strict else f.astype(np.float64) > t
    f[too_big] = np.nextafter(f[too_big], np.float32(-np.inf))
    return f


def _tree_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    depth = np.full(left.size, -1, dtype=np.int64)
    depth[0] = 0
    front = np.array([0])
    d = 0
    while front.size:
        kids = np.concatenate([left[front], right[front]])
        kids = kids[kids >= 0]
        d += 1
        depth[kids] = d
        front = kids
    return depth


def _preorder(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Permutation ``order`` (new → old) putting each left child right after its parent."""
    order = np.empty(left.size, dtype=np.int64)
    stack = [0]
    k = 0
    while stack:
        i = stack.pop()
        order[k] = i
        k += 1
        if left[i] >= 0:
            stack.append(int(right[i]))
            stack.append(int(left[i]))
    if k != left.size:
        raise ValidationError(f"tree has {left.size} nodes but only {k} are reachable from the root")
    return order


def _lightgbm_thresholds(thr: np.ndarray) -> np.ndarray:
    """float32 thresholds for LightGBM's ``'<='`` splits, its zero band included.

    LightGBM's predictor reads a feature ``x`` with ``|x| <= z`` (``z`` =
    :data:`LGBM_ZERO_THRESHOLD`) as 0.0 before the trees see it, then goes left iff
    ``x <= t`` (double). For float32 ``x`` the rows going left are still a half-line
    ``x <= f``: ``f = floor32(t)`` where ``t >= z`` or ``t < -z``; ``f = z`` where
    ``0 <= t < z`` (the band goes left, with 0); ``f`` = the float32 below ``-z`` where
    ``-z <= t < 0`` (the band goes right). LightGBM puts split thresholds at ``±z`` and 0
    when a feature has exact zeros, so this matters for values in the band.
    """
    z = LGBM_ZERO_THRESHOLD
    f = _floor_to_float32(thr, strict=False)
    f[(thr >= 0) & (thr < z)] = np.float32(z)
    f[(thr >= -z) & (thr < 0)] = np.nextafter(np.float32(-z), np.float32(-np.inf))
    return f


def _build_layout(
    trees: Sequence[dict[str, np.ndarray]], n_features: int, *, lightgbm_zero_band: bool = False
) -> dict[str, Any]:
    """Concatenate trees (treelite arrays) into the kernel's node records.

    Each tree dict has ``cleft, cright, split_index, threshold, leaf_value, cmp`` as treelite's
    tree accessor returns them (leaf: ``cleft == -1``). ``lightgbm_zero_band``: the trees are
    LightGBM's (``'<='`` splits only), thresholds follow its predictor's zero band
    (:func:`_lightgbm_thresholds`).
    """
    n_total = sum(int(t["cleft"].size) for t in trees)
    nodes = np.zeros((n_total, 3), dtype=np.int32)
    thr_view = nodes[:, 0].view(np.float32)
    leaves: list[np.ndarray] = []
    root = np.empty(len(trees), dtype=np.int64)
    max_depth = 0
    off = 0
    n_leaf = 0
    for ti, t in enumerate(trees):
        left = np.asarray(t["cleft"], dtype=np.int64)
        right = np.asarray(t["cright"], dtype=np.int64)
        feat = np.asarray(t["split_index"], dtype=np.int64)
        thr = np.asarray(t["threshold"], dtype=np.float64)
        val = np.asarray(t["leaf_value"], dtype=np.float64)
        cmp = np.asarray(t["cmp"], dtype=np.int64)
        n = left.size
        internal = left >= 0
        if not np.array_equal(left[internal], np.flatnonzero(internal) + 1):
            order = _preorder(left, right)
            new_of = np.empty(n, dtype=np.int64)
            new_of[order] = np.arange(n)
            left = np.where(left[order] >= 0, new_of[np.maximum(left[order], 0)], -1)
            right = np.where(right[order] >= 0, new_of[np.maximum(right[order], 0)], -1)
            feat, thr, val, cmp = feat[order], thr[order], val[order], cmp[order]
            internal = left >= 0
        bad_cmp = internal & ~np.isin(cmp, (_CMP_LT, _CMP_LE))
        if bad_cmp.any():
            raise ValidationError(
                f"tree {ti}: only '<=' and '<' numerical splits are supported "
                f"(treelite operator code {int(cmp[bad_cmp][0])})"
            )
        if internal.any() and (feat[internal].min() < 0 or feat[internal].max() >= n_features):
            raise ValidationError(f"tree {ti}: split feature index outside [0, {n_features})")
        if not np.isfinite(val[~internal]).all():
            raise ValidationError(f"tree {ti}: non-finite leaf value")
        sl = slice(off, off + n)
        f32 = np.zeros(n, dtype=np.float32)
        if lightgbm_zero_band:
            if (internal & (cmp != _CMP_LE)).any():
                raise ValidationError(f"tree {ti}: a LightGBM tree with a split other than '<='")
            f32[internal] = _lightgbm_thresholds(thr[internal])
        else:
            for code, strict in ((_CMP_LE, False), (_CMP_LT, True)):
                m = internal & (cmp == code)
                f32[m] = _floor_to_float32(thr[m], strict)
        thr_view[sl] = f32
        nodes[sl, 1] = np.where(internal, feat, -1)
        slots = n_leaf + np.cumsum(~internal) - 1
        nodes[sl, 2] = np.where(internal, right + off, slots)
        leaves.append(val[~internal])
        n_leaf += int((~internal).sum())
        root[ti] = off
        max_depth = max(max_depth, int(_tree_depths(left, right).max()))
        off += n
    if n_total >= 2**31:
        raise ValidationError(f"forest has {n_total} nodes; the layout indexes nodes with int32")
    leaf = np.concatenate(leaves) if leaves else np.zeros(0)
    return {"nodes": nodes, "leaf": leaf, "root": root, "max_depth": max_depth}


def _validate_tables(nodes: np.ndarray, leaf: np.ndarray, root: np.ndarray, n_features: int, max_depth: int) -> None:
    """Check that a node layout is one the kernels may trust; raise :class:`ValidationError` if not.

    The kernels (``_forest.h``) index the tables without bounds checks, so everything they
    dereference is checked here, once, in vectorised O(n_nodes) NumPy (≈ 35 ms for 500 trees of
    1.75 million nodes, whose file loads in ≈ 240 ms without it):

    * shapes and counts: ``nodes`` (n_nodes, 3) C-contiguous int32, ``leaf`` (n_leaves,) float64,
      ``root`` (n_trees,) int64, at least one of each, fewer than 2³¹ nodes,
      ``1 <= n_features < 2³¹``;
    * tree spans: ``root[0] == 0`` and the roots increase strictly, so tree ``t`` is the nodes
      ``[root[t], root[t + 1])`` (the last one ends at ``n_nodes``);
    * every split node ``k`` has a feature index in ``[0, n_features)``, a threshold that is not
      NaN (±inf is allowed: a float64 threshold beyond float32's range is rounded to it, and the
      comparison is still well defined), and its children (left ``k + 1``, right ``nodes[k, 2]``)
      after it and inside its tree: ``k + 1 < right < end of the tree``; every leaf has feature
      index -1;
    * the trees are trees: every node but a root is the child of exactly one node. As every
      child index is above its parent's and inside the parent's tree, there is no cycle and
      every node is reached from its tree's root once (following parents lowers the index and
      stops at the only node without a parent, the root): what the walks, ``smf_leaf_boxes``
      and ``smf_build_blocks`` (whose outputs are sized by the node and leaf counts) rely on.
      The preorder layout of :func:`_build_layout` (left child next, right child after the
      left subtree) always satisfies it;
    * leaves: their slots are ``0, 1, 2, …`` in node order (as :func:`_build_layout` numbers
      them), one for each leaf value, and every leaf value is finite;
    * ``max_depth`` is the depth of the deepest node (a root is at 0), found level by level
      (or, past 64 levels, by pointer jumping, so that a crafted chain of nodes does not take
      a pass per level). :meth:`CompiledForest._mode` relies on it to build the recursive
      leaf-box table only for trees at most :data:`MAX_BOX_DEPTH` deep.

    Messages name the tree and the node (its index in the tree and in the layout).
    """
    if nodes.dtype != np.int32 or nodes.ndim != 2 or nodes.shape[1] != 3 or not nodes.flags.c_contiguous:
        raise ValidationError(f"node layout should be C-contiguous (n_nodes, 3) int32, got {nodes.dtype} {nodes.shape}")
    if leaf.dtype != np.float64 or leaf.ndim != 1 or root.dtype != np.int64 or root.ndim != 1:
        raise ValidationError(
            f"leaf values should be (n_leaves,) float64 and roots (n_trees,) int64, got {leaf.dtype} {leaf.shape} "
            f"and {root.dtype} {root.shape}"
        )
    n, n_trees, n_leaves = nodes.shape[0], root.shape[0], leaf.shape[0]
    if min(n, n_trees, n_leaves) == 0:
        raise ValidationError(f"{n} nodes, {n_leaves} leaf values and {n_trees} trees: at least one of each")
    if n >= 2**31 - 1 or not 1 <= n_features < 2**31:
        raise ValidationError(
            f"{n} nodes and {n_features} features: the layout holds at most 2**31 - 2 nodes and 1 to 2**31 - 1 features"
        )
    steps = np.diff(root)
    if root[0] != 0 or root[-1] >= n or np.any(steps <= 0):
        t = 0 if root[0] != 0 else (int(np.flatnonzero(steps <= 0)[0]) + 1 if np.any(steps <= 0) else n_trees - 1)
        raise ValidationError(
            f"tree {t}: root node {int(root[t])} (the roots should start at 0 and increase strictly, below the {n} "
            "nodes)"
        )
    ends = np.append(root[1:], n)

    def at(g: int) -> str:
        t = int(np.searchsorted(root, g, side="right")) - 1
        return f"tree {t}, node {g - int(root[t])} (node {g} of the layout)"

    def first(bad: np.ndarray) -> int:
        return int(np.flatnonzero(bad)[0])

    feat = np.ascontiguousarray(nodes[:, 1])
    right = np.ascontiguousarray(nodes[:, 2])
    split = feat >= 0
    bad = (feat < -1) | (feat >= n_features)
    if bad.any():
        g = first(bad)
        raise ValidationError(f"{at(g)}: feature index {int(feat[g])} outside [0, {n_features}) (or -1 for a leaf)")
    idx = np.flatnonzero(split).astype(np.int32)  # the split nodes (n < 2**31 - 1: k + 1 fits)
    left = idx + 1
    r = np.take(right, idx)
    masked = right | (split.astype(np.int32) - 1)  # a split node's right child, -1 at leaves (slots are no nodes)
    if (
        np.any(r <= left)  # the right child after the left one (which is after the node)
        or np.take(split, ends - 1).any()  # the last node of a tree is a leaf: left children stay inside
        or np.any(np.maximum.reduceat(masked, root) >= ends)  # right children inside the tree
    ):
        tree_end = np.repeat(ends, np.diff(np.append(root, n)))
        g = int(idx[first((r <= left) | (left >= tree_end[idx]) | (r >= tree_end[idx]))])
        start = int(np.searchsorted(ends, g, side="right"))
        raise ValidationError(
            f"{at(g)}: children {g + 1} and {int(right[g])} should both lie after the node and inside its tree's "
            f"nodes [{int(root[start])}, {int(ends[start])}), the right one after the left one"
        )
    n_parents = np.bincount(np.concatenate([left, r]), minlength=n)
    n_parents[root] += 1  # no child is a root (a root is below every other node of its tree): count it as one
    bad = n_parents != 1
    if bad.any():
        g = first(bad)
        raise ValidationError(
            f"{at(g)}: the child of {int(n_parents[g])} nodes, not of one (the tables do not form trees: a shared "
            "or an unreachable node)"
        )
    bad = np.isnan(nodes[:, 0].view(np.float32)) & split
    if bad.any():
        raise ValidationError(f"{at(first(bad))}: NaN split threshold")
    lidx = np.flatnonzero(~split)
    m = min(lidx.size, n_leaves)
    bad = np.take(right, lidx[:m]) != np.arange(m)
    if bad.any():
        k = first(bad)
        raise ValidationError(
            f"{at(int(lidx[k]))}: leaf slot {int(right[lidx[k]])}, expected {k} (leaf slots count 0, 1, 2, … "
            "in node order)"
        )
    if lidx.size != n_leaves:
        raise ValidationError(f"{lidx.size} leaf nodes for {n_leaves} leaf values")
    bad = ~np.isfinite(leaf)
    if bad.any():
        k = first(bad)
        raise ValidationError(f"{at(int(lidx[k]))}: non-finite leaf value {leaf[k]}")
    depth = _max_depth(split, right, root.astype(np.int32), idx, left, r)
    if depth != max_depth:
        raise ValidationError(f"max_depth is {max_depth}, but the deepest node is {depth} levels below its root")


def _max_depth(
    split: np.ndarray, right: np.ndarray, root: np.ndarray, idx: np.ndarray, left: np.ndarray, r: np.ndarray
) -> int:
    """Depth of the deepest node of validated trees (:func:`_validate_tables`), a root at 0.

    Level by level from the roots (one pass over the split nodes); past 64 levels, by pointer
    jumping instead (⌈log₂ depth⌉ + 1 passes over all nodes), so a chain of nodes is cheap too.
    """
    front = root[np.take(split, root)]  # split nodes of the current level
    depth = 0
    while front.size and depth < 64:
        depth += 1
        kids = np.concatenate([front + 1, np.take(right, front)])
        front = kids[np.take(split, kids)]
    if not front.size:
        return depth
    up = np.arange(split.size, dtype=np.int32)  # an ancestor of each node (a root: itself) ...
    up[left] = idx
    up[r] = idx
    d = (up != np.arange(split.size)).astype(np.int32)  # ... and the levels between them
    while True:
        nxt = np.take(up, up)
        if np.array_equal(nxt, up):
            return int(d.max())
        d += np.take(d, up)
        up = nxt


def _treelite_trees(model: Any) -> tuple[list[dict[str, np.ndarray]], int, bool]:
    """The trees of a treelite model as arrays, its number of features, and whether it
    averages its trees (a random forest) or sums them (gradient boosting)."""
    import treelite

    if not isinstance(model, treelite.Model):
        raise ConfigError(f"expected a treelite.Model, got {type(model).__name__}")
    head = model.get_header_accessor()

    def field(name: str) -> Any:
        return np.asarray(head.get_field(name))

    if int(field("task_type")[0]) != 1:  # treelite TaskType::kRegressor
        raise ValidationError(
            f"only regression forests are supported (treelite task type {int(field('task_type')[0])})"
        )
    if int(field("num_target")[0]) != 1 or np.any(field("num_class") != 1):
        raise ValidationError("only single-target regression forests are supported")
    average = bool(field("average_tree_output")[0])
    if np.any(field("base_scores") != 0):
        raise ValidationError(
            f"models with a non-zero base score ({np.asarray(field('base_scores')).ravel().tolist()}) are not "
            "supported: the prediction would be the tree sum plus a constant, which no supported library adds in "
            "the same order (XGBoost's base_score; LightGBM folds its initial score into the first tree)"
        )
    post = str(head.get_field("postprocessor"))
    if post != "identity":
        raise ValidationError(f"postprocessor {post!r} is not supported (identity only)")
    trees = []
    for i in range(model.num_tree):
        a = model.get_tree_accessor(i)
        if np.any(np.asarray(a.get_field("node_type")) == 2):
            raise ValidationError(f"tree {i} has categorical splits; not supported")
        trees.append(
            {
                k: np.asarray(a.get_field(k))
                for k in ("cleft", "cright", "split_index", "threshold", "leaf_value", "cmp")
            }
        )
    return trees, int(model.num_feature), average


def _file_hash(attrs: Mapping[str, Any], treelite: bytes | None) -> str:
    """SHA-256 over everything a model file holds besides the node layout (which
    ``content_hash`` covers): its attributes (feature names, card, hashes, sizes) and the
    treelite checkpoint. Stored as the ``file_hash`` attribute and checked on load."""
    h = hashlib.sha256(b"smengine-model-file;")
    for k in sorted(attrs):
        if k != "file_hash":
            h.update(f"{k}={attrs[k]!s};".encode())
    h.update(b"treelite=" + (hashlib.sha256(treelite).digest() if treelite is not None else b"none"))
    return "sha256:" + h.hexdigest()


def _layout_hash(
    nodes: np.ndarray,
    leaf: np.ndarray,
    root: np.ndarray,
    n_features: int,
    average: bool = True,
    lin_coef: np.ndarray | None = None,
    lin_intercept: float = 0.0,
) -> str:
    # a summed ensemble hashes differently from the averaged one with the same trees, and a hybrid
    # from both (its base's coefficients and intercept, exact bits, are hashed too); averaged
    # forests and boosted ensembles keep the hash they always had (stored in their files)
    kind = "" if average else ("ensemble=boosting;" if lin_coef is None else "ensemble=hybrid;")
    h = hashlib.sha256(f"{FORMAT}/{FORMAT_VERSION};n_features={n_features};{kind}".encode())
    for a in (nodes, leaf, root):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    if lin_coef is not None:
        h.update(b"lin_coef" + np.ascontiguousarray(lin_coef, dtype="<f8").tobytes())
        h.update(f"lin_intercept={float(lin_intercept).hex()};".encode())
    return "sha256:" + h.hexdigest()


def _check_sklearn_forest(rf: Any) -> None:
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

    if not isinstance(rf, (RandomForestRegressor, ExtraTreesRegressor)):
        raise ConfigError(f"expected a fitted RandomForestRegressor or ExtraTreesRegressor, got {type(rf).__name__}")
    if not hasattr(rf, "estimators_"):
        raise ConfigError("the forest is not fitted (call .fit first)")
    if getattr(rf, "n_outputs_", 1) != 1:
        raise ValidationError(f"only single-output forests are supported (n_outputs_={rf.n_outputs_})")


def _lightgbm_booster(model: Any, lightgbm: Any) -> Any:
    """The fitted ``lightgbm.Booster`` of a Booster or an LGBMRegressor."""
    if isinstance(model, lightgbm.Booster):
        return model
    if isinstance(model, (lightgbm.LGBMClassifier, lightgbm.LGBMRanker)) or not isinstance(model, lightgbm.LGBMModel):
        raise ConfigError(f"expected a fitted lightgbm.Booster or LGBMRegressor, got {type(model).__name__}")
    try:
        return model.booster_
    except (AttributeError, ValueError) as err:  # LGBMNotFittedError
        raise ConfigError(f"the {type(model).__name__} is not fitted (call .fit first)") from err


def _check_lightgbm_text(text: str) -> None:
    """Refuse what treelite's LightGBM import would get wrong (or silently drop).

    Reads the model text (``Booster.model_to_string``): categorical splits (``num_cat``,
    decision-type bit 0), linear trees (``is_linear``; treelite keeps only their constants)
    and splits that treat zeros as missing values (missing type ``Zero``, from
    ``zero_as_missing=True``: zeros take the learned default branch, which treelite drops).
    """
    tree = -1
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key == "Tree":
            tree += 1
            continue
        if key.startswith("end of trees"):
            break
        if tree < 0:
            continue
        if key == "is_linear" and value.strip() not in ("", "0"):
            raise ValidationError(
                f"LightGBM tree {tree} is linear (linear_tree=True): its leaves are linear models of the features, "
                "which treelite and this predictor do not represent; train with linear_tree=False"
            )
        if key == "num_cat" and int(value or 0) > 0:
            raise ValidationError(
                f"LightGBM tree {tree} has categorical splits (categorical_feature): not supported; encode the "
                "categories as numerical features"
            )
        if key == "decision_type" and value.strip():
            dt = np.array(value.split(), dtype=np.int64)
            if np.any(dt & 1):
                raise ValidationError(
                    f"LightGBM tree {tree} has categorical splits (categorical_feature): not supported; encode "
                    "the categories as numerical features"
                )
            if np.any((dt >> 2) & 3 == 1):
                raise ValidationError(
                    f"LightGBM tree {tree} treats zeros as missing values (zero_as_missing=True): not supported "
                    "(zeros would take the learned default branch, which treelite drops)"
                )
    if "[linear_tree: 1]" in text:
        raise ValidationError(
            "the LightGBM model was trained with linear_tree=True: linear trees are not supported; train with "
            "linear_tree=False"
        )


class CompiledForest:
    """A regression forest ready for fast, exact native prediction.

    Build it with :meth:`from_sklearn` (or :meth:`from_treelite`); keep it with :meth:`save`
    / :meth:`load`. Predictions equal ``RandomForestRegressor.predict`` on float32 input
    (the same leaves, summed in the same order; tests allow 1e-12), computed by a nogil
    OpenMP kernel that reuses the previous row's leaf box on coherent rows.

    A gradient-boosted ensemble (:meth:`from_lightgbm`) runs through the same kernels with its
    trees summed instead of averaged (:attr:`ensemble` ``'boosting'``): its predictions are
    LightGBM's ``Booster.predict`` bit for bit, and its spread over trees is NaN. A hybrid
    (:meth:`from_hybrid`, :attr:`ensemble` ``'hybrid'``) adds a linear base to such a sum,
    bit for bit :meth:`smengine.model.HybridRegressor.predict`.

    Rows with a NaN or infinite feature are never passed to the trees: they get NaN, are
    counted and reported (scikit-learn ≥ 1.4 would route NaN through a learned branch that
    treelite does not keep).

    Attributes
    ----------
    n_trees, n_features, n_nodes, max_depth : int
    feature_names : tuple of str or None
    average : bool
        True: the prediction is the mean over trees (a random forest); False: their sum (a
        gradient-boosted ensemble or a hybrid). See :attr:`ensemble`.
    lin_coef : ndarray of float64, shape (n_features,), or None
        A hybrid's linear base (raw-unit coefficients; read-only), added to the tree sum with
        :attr:`lin_intercept`; None for forests and boosted ensembles.
    lin_intercept : float
        The base's intercept (0.0 without a base).
    content_hash : str
        SHA-256 of the node layout (and, for a summed ensemble, of that it sums); identifies
        the predictor exactly.
    source_hash : str or None
        :func:`~smengine.model._hash.forest_hash` of the scikit-learn forest it came from, the
        SHA-256 of the LightGBM model text (:meth:`from_lightgbm`), or
        :func:`smengine.model._hybrid.model_hash` of a hybrid (:meth:`from_hybrid`; the card's
        ``content_hash`` of a trained hybrid).
    card : ModelCard or dict or None
        The model card saved with the forest.
    applicability : Applicability or None
        The area-of-applicability reference of the training data (saved with the forest;
        :meth:`smengine.model.Forest.compile` attaches it). The engine computes the
        dissimilarity index of every pixel-day from it. None for a forest built from a bare
        scikit-learn forest or loaded from a file written before it existed.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.ensemble import RandomForestRegressor
    >>> from smengine.model import CompiledForest
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((500, 4), dtype=np.float32)
    >>> rf = RandomForestRegressor(20, min_samples_leaf=5, random_state=0).fit(X, X.sum(1))
    >>> cf = CompiledForest.from_sklearn(rf)
    >>> bool(np.array_equal(cf.predict(X), rf.predict(X)))
    True
    """

    def __init__(
        self,
        nodes: np.ndarray,
        leaf: np.ndarray,
        root: np.ndarray,
        max_depth: int,
        n_features: int,
        *,
        feature_names: Sequence[str] | None = None,
        treelite_bytes: bytes | None = None,
        source_hash: str | None = None,
        card: Any = None,
        applicability: Any = None,
        average: bool = True,
        lin_coef: npt.ArrayLike | None = None,
        lin_intercept: float = 0.0,
    ) -> None:
        self._nodes = np.ascontiguousarray(nodes, dtype=np.int32)
        self._leaf = np.ascontiguousarray(leaf, dtype=np.float64)
        self._root = np.ascontiguousarray(root, dtype=np.int64)
        self.max_depth = int(max_depth)
        self.n_features = int(n_features)
        # the kernels index these tables without checks: refuse any the layout cannot have made
        _validate_tables(self._nodes, self._leaf, self._root, self.n_features, self.max_depth)
        self.feature_names = tuple(feature_names) if feature_names is not None else None
        if self.feature_names is not None and len(self.feature_names) != self.n_features:
            raise ValidationError(f"{len(self.feature_names)} feature names for {self.n_features} features")
        self._treelite_bytes = treelite_bytes
        self.source_hash = source_hash
        self.card = card
        self.applicability = applicability
        self.average = bool(average)
        self.lin_coef: np.ndarray | None = None
        self.lin_intercept = float(lin_intercept)
        if lin_coef is not None:
            coef = np.array(lin_coef, dtype=np.float64).ravel()
            if coef.size != self.n_features or not np.isfinite(coef).all() or not np.isfinite(self.lin_intercept):
                raise ValidationError(
                    f"a linear base needs {self.n_features} finite coefficients and a finite intercept, got "
                    f"{coef.size} coefficient(s), intercept {self.lin_intercept}"
                )
            if self.average:
                raise ValidationError("a linear base goes with summed trees (a hybrid model), not an averaged forest")
            coef.flags.writeable = False
            self.lin_coef = coef
        elif self.lin_intercept != 0.0:
            raise ValidationError("lin_intercept without lin_coef")
        self.content_hash = _layout_hash(
            self._nodes, self._leaf, self._root, self.n_features, self.average, self.lin_coef, self.lin_intercept
        )
        self._blocks: dict[str, np.ndarray] | None = None
        self._kernel: Any = None  # ForestTables, built on first use (_kernel_tables)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_treelite(
        cls, model: Any, *, feature_names: Sequence[str] | None = None, source_hash: str | None = None, card: Any = None
    ) -> CompiledForest:
        """Build from a treelite model (the portable format).

        Parameters
        ----------
        model : treelite.Model
            A single-target regression ensemble with ``<=``/``<`` numerical splits, an
            identity postprocessor and no base score: averaged trees (what
            ``treelite.sklearn.import_model`` makes of a ``RandomForestRegressor``) or summed
            ones (``treelite.frontend.from_lightgbm`` of a LightGBM regressor; prefer
            :meth:`from_lightgbm`, which checks what treelite does not keep and follows
            LightGBM's reading of near-zero features).
        feature_names : sequence of str, optional
        source_hash, card : optional
            Carried along (see the class attributes).

        Raises
        ------
        ValidationError
            If the model is not such an ensemble (classifier, several targets, categorical
            splits, a base score, a postprocessor other than identity).
        """
        return cls._from_treelite(model, feature_names=feature_names, source_hash=source_hash, card=card)

    @classmethod
    def _from_treelite(
        cls,
        model: Any,
        *,
        feature_names: Sequence[str] | None = None,
        source_hash: str | None = None,
        card: Any = None,
        lightgbm_zero_band: bool = False,
    ) -> CompiledForest:
        trees, n_features, average = _treelite_trees(model)
        lay = _build_layout(trees, n_features, lightgbm_zero_band=lightgbm_zero_band)
        return cls(
            lay["nodes"],
            lay["leaf"],
            lay["root"],
            lay["max_depth"],
            n_features,
            feature_names=feature_names,
            treelite_bytes=bytes(model.serialize_bytes()),
            source_hash=source_hash,
            card=card,
            average=average,
        )

    @classmethod
    def from_lightgbm(
        cls, model: Any, *, feature_names: Sequence[str] | None = None, card: Any = None
    ) -> CompiledForest:
        """Export a LightGBM regression model through treelite and build the predictor.

        The trees are summed (:attr:`ensemble` ``'boosting'``), in tree order in float64 from
        0.0 as LightGBM's ``GBDT::PredictRaw`` does, so :meth:`predict` equals
        ``booster.predict(X)`` bit for bit on float32 rows (LightGBM folds its initial score
        into the first tree; a ``boosting='rf'`` model averages and is a ``'random_forest'``).
        Features with ``|x| <= 1e-35`` are read as 0, as LightGBM's predictor does. Rows with
        a NaN or infinite feature are NaN (LightGBM would send NaN down a learned or a zero
        branch). The spread over trees (:meth:`predict_with_spread`, the engine's
        uncertainty layer) is NaN for a boosted model.

        Parameters
        ----------
        model : lightgbm.Booster or lightgbm.LGBMRegressor
            Fitted, objective of the regression family with identity output (``regression``,
            ``regression_l1``, ``huber``, ``fair``, ``quantile``, ``mape``; not ``sqrt``). The
            iterations ``booster.predict`` uses by default are taken (the best iteration after
            early stopping).
        feature_names : sequence of str, optional
            Default: the names the model was fitted with (``feature_names_in_`` of an
            ``LGBMRegressor``, else the booster's), unless they are LightGBM's generated
            ``Column_<i>``.
        card : ModelCard or dict, optional
            Saved with the model.

        Returns
        -------
        CompiledForest

        Raises
        ------
        ConfigError
            If lightgbm is not installed, or ``model`` is not a fitted Booster or LGBMRegressor.
        ValidationError
            If the model has categorical splits, linear trees (``linear_tree=True``), splits
            with zeros as missing values (``zero_as_missing=True``), several outputs, or a
            non-identity objective (``binary``, ``poisson``, ``sqrt`` regression, ...).

        Examples
        --------
        >>> import numpy as np
        >>> import lightgbm as lgb
        >>> from smengine.model import CompiledForest
        >>> rng = np.random.default_rng(0)
        >>> X = rng.random((500, 4), dtype=np.float32)
        >>> reg = lgb.LGBMRegressor(n_estimators=50, num_leaves=15, verbose=-1).fit(X, X.sum(1))
        >>> cf = CompiledForest.from_lightgbm(reg)
        >>> cf.ensemble
        'boosting'
        >>> bool(np.array_equal(cf.predict(X), reg.predict(X)))
        True
        """
        try:
            import lightgbm
        except ImportError as err:
            raise ConfigError(
                "CompiledForest.from_lightgbm needs lightgbm: pip install 'smengine[boost]' (or lightgbm>=4.3)"
            ) from err
        import treelite.frontend

        booster = _lightgbm_booster(model, lightgbm)
        if feature_names is None:
            names = getattr(model, "feature_names_in_", None)
            names = [str(n) for n in (names if names is not None else booster.feature_name())]
            if names != [f"Column_{i}" for i in range(len(names))]:
                feature_names = names
        text = booster.model_to_string()
        _check_lightgbm_text(text)
        t0 = time.perf_counter()
        tl = treelite.frontend.from_lightgbm(booster)
        cf = cls._from_treelite(
            tl,
            feature_names=feature_names,
            source_hash="sha256:" + hashlib.sha256(text.encode()).hexdigest(),
            card=card,
            lightgbm_zero_band=True,
        )
        log.info(
            "compiled LightGBM model (%s): %d trees, %d nodes, depth %d in %.2f s",
            cf.ensemble,
            cf.n_trees,
            cf.n_nodes,
            cf.max_depth,
            time.perf_counter() - t0,
        )
        return cf

    @classmethod
    def from_hybrid(
        cls, hybrid: Any, *, feature_names: Sequence[str] | None = None, card: Any = None
    ) -> CompiledForest:
        """Compile a fitted :class:`smengine.model.HybridRegressor`: its residual trees through
        :meth:`from_lightgbm` plus its linear base.

        Every valid row's prediction is ``intercept_ + Σ_j coef_[j] · x_j`` (float64 from the
        float32 features, added in feature order without fused multiply-adds) plus the tree sum,
        the expression :meth:`HybridRegressor.predict` evaluates, so :meth:`predict`, the
        engine (:func:`smengine.engine.predict`, ``run``, ``Stepper``) and the hybrid agree bit
        for bit. :attr:`ensemble` is ``'hybrid'``; the spread over trees is NaN (summed trees).
        The base is saved with the model (format version 3, which smengine versions without
        hybrids refuse to read) and is part of :attr:`content_hash`.

        Parameters
        ----------
        hybrid : HybridRegressor
            Fitted.
        feature_names : sequence of str, optional
            Default: ``hybrid.feature_names_in_`` when it was fitted with names.
        card : ModelCard or dict, optional
            Saved with the model.

        Returns
        -------
        CompiledForest

        Raises
        ------
        ConfigError
            If ``hybrid`` is not a fitted HybridRegressor, or lightgbm is not installed.
        ValidationError
            As :meth:`from_lightgbm`, or a non-finite base.

        Examples
        --------
        >>> import numpy as np
        >>> from smengine.model import CompiledForest, HybridRegressor
        >>> rng = np.random.default_rng(0)
        >>> X = rng.random((500, 4), dtype=np.float32)
        >>> h = HybridRegressor(lgbm_params={"n_estimators": 30}).fit(X, X.sum(1) + np.sin(5 * X[:, 0]))
        >>> cf = CompiledForest.from_hybrid(h)
        >>> cf.ensemble
        'hybrid'
        >>> bool(np.array_equal(cf.predict(X), h.predict(X)))
        True
        """
        from smengine.model._hybrid import HybridRegressor

        if not isinstance(hybrid, HybridRegressor):
            raise ConfigError(f"expected a fitted HybridRegressor, got {type(hybrid).__name__}")
        if not hasattr(hybrid, "trees_"):
            raise ConfigError("the HybridRegressor is not fitted (call .fit first)")
        if feature_names is None and hasattr(hybrid, "feature_names_in_"):
            feature_names = [str(n) for n in hybrid.feature_names_in_]
        trees = cls.from_lightgbm(hybrid.booster_, feature_names=feature_names, card=card)
        if trees.n_features != hybrid.n_features_in_:
            raise ValidationError(
                f"the residual trees see {trees.n_features} features, the hybrid {hybrid.n_features_in_}"
            )
        from smengine.model._hybrid import model_hash

        coef = np.ascontiguousarray(hybrid.coef_, dtype=np.float64)
        return cls(
            trees._nodes,
            trees._leaf,
            trees._root,
            trees.max_depth,
            trees.n_features,
            feature_names=trees.feature_names,
            treelite_bytes=trees._treelite_bytes,
            source_hash=model_hash(hybrid),
            card=card,
            average=False,
            lin_coef=coef,
            lin_intercept=float(hybrid.intercept_),
        )

    @classmethod
    def from_sklearn(
        cls,
        rf: Any,
        *,
        card: Any = None,
        cache_dir: str | os.PathLike[str] | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> CompiledForest:
        """Export a fitted scikit-learn forest through treelite and build the predictor.

        Parameters
        ----------
        rf : sklearn.ensemble.RandomForestRegressor or ExtraTreesRegressor
            Fitted, single output.
        card : ModelCard or dict, optional
            Saved with the forest.
        cache_dir : path, optional
            Directory of compiled forests keyed by :func:`forest_hash`; a forest built
            before is loaded from ``<cache_dir>/<hash>.smf.h5`` instead of re-exported
            (export + layout of a 100-tree, 545 000-node forest takes a few seconds).
        feature_names : sequence of str, optional
            Default: ``rf.feature_names_in_`` when it was fitted on a DataFrame.

        Returns
        -------
        CompiledForest
        """
        import treelite.sklearn

        _check_sklearn_forest(rf)
        if feature_names is None and hasattr(rf, "feature_names_in_"):
            feature_names = [str(n) for n in rf.feature_names_in_]
        t0 = time.perf_counter()
        src = forest_hash(rf)
        cache = None
        if cache_dir is not None:
            cache = Path(cache_dir).expanduser() / f"{src.split(':', 1)[1]}.smf.h5"
            if cache.exists():
                try:
                    cf = cls.load(cache)
                except DataError as err:
                    log.warning("ignoring unreadable cache entry: %s", err)
                else:
                    if cf.source_hash == src:
                        log.info("compiled forest %s loaded from cache %s", src[:19], cache)
                        if card is not None:
                            cf.card = card
                        return cf
        log.info("exporting %d trees through treelite ...", len(rf.estimators_))
        model = treelite.sklearn.import_model(rf)
        t1 = time.perf_counter()
        cf = cls.from_treelite(model, feature_names=feature_names, source_hash=src, card=card)
        log.info(
            "compiled forest: %d trees, %d nodes, depth %d; export %.2f s, layout %.2f s",
            cf.n_trees,
            cf.n_nodes,
            cf.max_depth,
            t1 - t0,
            time.perf_counter() - t1,
        )
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cf.save(cache)
        return cf

    # ------------------------------------------------------------------ properties
    @property
    def n_trees(self) -> int:
        return int(self._root.size)

    @property
    def n_nodes(self) -> int:
        return int(self._nodes.shape[0])

    @property
    def n_leaves(self) -> int:
        return int(self._leaf.size)

    @property
    def ensemble(self) -> Literal["random_forest", "boosting", "hybrid"]:
        """``'random_forest'`` (trees averaged), ``'boosting'`` (trees summed) or ``'hybrid'``
        (trees summed plus a linear base)."""
        if self.lin_coef is not None:
            return "hybrid"
        return "random_forest" if self.average else "boosting"

    def to_treelite(self) -> Any:
        """The portable treelite model this predictor was built from."""
        import treelite

        if self._treelite_bytes is None:
            raise ConfigError("this CompiledForest carries no treelite model")
        return treelite.Model.deserialize_bytes(self._treelite_bytes)

    def __repr__(self) -> str:
        return (
            f"CompiledForest(ensemble={self.ensemble!r}, n_trees={self.n_trees}, n_features={self.n_features}, "
            f"n_nodes={self.n_nodes}, max_depth={self.max_depth}, hash={self.content_hash[:19]}…)"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CompiledForest) and other.content_hash == self.content_hash

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ prediction
    def _as_rows(self, X: Any) -> tuple[np.ndarray, tuple[int, int] | None]:
        """C-contiguous float32 rows, and the (ny, nx) raster shape of a 3-D input (else None)."""
        if hasattr(X, "columns") and self.feature_names is not None:
            missing = [n for n in self.feature_names if n not in X.columns]
            if missing:
                raise ValidationError(f"input lacks feature column(s) {missing}")
            X = X[list(self.feature_names)].to_numpy()
        arr = np.asarray(X)
        raster = None
        if arr.ndim == 3 and arr.shape[2] == self.n_features:
            raster = (int(arr.shape[0]), int(arr.shape[1]))
            arr = arr.reshape(-1, self.n_features)
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise ValidationError(
                f"X should be (n_rows, {self.n_features}) or a raster (ny, nx, {self.n_features}), "
                f"got shape {arr.shape}"
            )
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise ValidationError(f"X should be numeric, got dtype {arr.dtype}")
        return np.ascontiguousarray(arr, dtype=np.float32), raster

    def _mode(self, reuse: bool | str) -> int:
        if reuse is False or reuse == "none":
            return 0
        if reuse == "box":
            return 1
        if reuse is True or reuse == "lanes":
            return 3 if self.n_features <= MAX_BOX_FEATURES and self.max_depth <= MAX_BOX_DEPTH else 1
        raise ConfigError(f"reuse should be True, False, 'lanes', 'box' or 'none', got {reuse!r}")

    def leaf_boxes(self) -> np.ndarray:
        """Box of every leaf: (n_leaf_slots + 1, 2 · nfp) float32, ``lo`` then ``hi`` per feature.

        A row ``x`` reaches leaf slot ``s`` of its tree iff ``lo < x <= hi`` in every feature
        (features padded to ``nfp``, a multiple of 16; the last row is an empty box). Computed
        on each call (≈ 0.1 s and 128 bytes per leaf for 16 features); the prediction kernel
        keeps its own copy in block-exit order (:meth:`blocks`).

        Raises
        ------
        ConfigError
            If the forest has more than :data:`MAX_BOX_FEATURES` (256) features, or trees deeper than
            :data:`MAX_BOX_DEPTH` (1024).
        """
        from smengine._ext import _forest

        self._check_box_features("leaf_boxes")
        nfp = (self.n_features + 15) // 16 * 16
        boxes = np.empty((self._leaf.shape[0] + 1, 2 * nfp), dtype=np.float32)
        _forest.leaf_boxes(self._kernel_tables(0), boxes)
        return boxes

    def blocks(self) -> dict[str, np.ndarray]:
        """The 3-level block layout of the default kernel (``reuse=True``), built once.

        Returns a dict of read-only arrays: ``blocks`` (n_blocks, 64) uint8, one 64-byte
        ``smf_blk`` record per block of 7 split nodes (see ``_forest.h``); ``broot`` the first
        block of each tree; ``bslot`` the leaf slot of every block exit leaf, in exit order
        (the kernel numbers leaves that way); ``bleaf`` and ``boxes`` the leaf values and
        :meth:`leaf_boxes` in that order (plus the empty box). For the forest of
        ``bench/bench_forest.py`` (549 508 nodes, 16 features): ≈ 0.1 s, 5.6 MiB of blocks and
        33.5 MiB of boxes. Kept with the object, but not pickled or saved.

        Raises
        ------
        ConfigError
            If the forest has more than :data:`MAX_BOX_FEATURES` (256) features, or trees deeper than
            :data:`MAX_BOX_DEPTH` (1024).
        """
        if self._blocks is None:
            from smengine._ext import _forest

            self._check_box_features("blocks")
            cap = self._nodes.shape[0] + self.n_trees
            blk = np.zeros((cap, 64), dtype=np.uint8)
            bslot = np.empty(self._leaf.shape[0], dtype=np.int32)
            broot = np.empty(self.n_trees, dtype=np.int32)
            nb, nls = _forest.build_blocks(self._kernel_tables(0), blk, bslot, broot, np.empty(cap, dtype=np.int32))
            if nls != self._leaf.shape[0]:  # every leaf is the exit of exactly one block
                raise RuntimeError(f"block layout: {nls} exit leaves for {self._leaf.shape[0]} leaf slots")
            boxes = self.leaf_boxes()
            tables = {
                "blocks": blk[:nb].copy(),
                "broot": broot,
                "bslot": bslot,
                "bleaf": self._leaf[bslot],
                "boxes": np.concatenate([boxes[bslot], boxes[-1:]]),
            }
            for arr in tables.values():
                arr.flags.writeable = False
            self._blocks = tables
        return self._blocks

    def _check_box_features(self, what: str) -> None:
        if self.n_features > MAX_BOX_FEATURES:
            raise ConfigError(
                f"{what}: the leaf-box table and the block layout hold at most {MAX_BOX_FEATURES} features (8-bit "
                f"feature indices); this forest has {self.n_features}. predict(reuse=True) uses plain walks "
                "for it (reuse='box')"
            )
        if self.max_depth > MAX_BOX_DEPTH:
            raise ConfigError(
                f"{what}: the leaf-box table is built for trees at most {MAX_BOX_DEPTH} deep (its builder recurses "
                f"once per level); this forest is {self.max_depth} deep. predict(reuse=True) uses plain walks for "
                "it (reuse='box')"
            )

    def _kernel_tables(self, mode: int = 3) -> Any:
        """The forest as the kernels see it, for reuse mode ``mode`` (see :meth:`_mode`).

        Private, but the one way in for the kernels (:meth:`predict` and
        :class:`smengine.engine.TileRunner`): a :class:`smengine._ext._forest.ForestTables`
        owning the node layout, the leaf values, the roots and, for the default kernel
        (``mode == 3``), the block tables of :meth:`blocks`, with the C struct that points into
        them. Built on first use and kept; not pickled (rebuilt where the forest is unpickled,
        e.g. on a Dask worker). The instruction-set cap (``SMENGINE_FOREST_ISA``,
        :func:`smengine._threads.forest_isa_cap`) is read again on every call.

        Raises
        ------
        ConfigError
            If ``SMENGINE_FOREST_ISA`` holds something other than ``c``, ``avx2`` or ``avx512``.
        """
        from smengine._ext._forest import ForestTables

        cap = forest_isa_cap()
        kt = self._kernel
        if kt is None:
            kt = self._kernel = ForestTables(
                self._nodes,
                self._leaf,
                self._root,
                self.n_features,
                isa_cap=cap,
                average=self.average,
                lin_coef=self.lin_coef,
                lin_intercept=self.lin_intercept,
            )
        if mode == 3 and not kt.has_blocks:
            t = self.blocks()
            kt = self._kernel = kt.with_blocks(t["boxes"], t["blocks"], t["bleaf"], t["broot"])
        kt.set_isa_cap(cap)
        return kt

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_blocks"] = None  # rebuilt on demand
        state["_kernel"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.pop("_boxes", None)  # pickled before the block layout
        state.setdefault("_blocks", None)
        state.setdefault("_kernel", None)
        state.setdefault("applicability", None)  # pickled before forests carried one
        state.setdefault("average", True)  # pickled before boosted ensembles
        state.setdefault("lin_coef", None)  # pickled before hybrid models
        state.setdefault("lin_intercept", 0.0)
        self.__dict__.update(state)

    def _run(
        self,
        X: Any,
        spread: bool,
        n_threads: int | None,
        on_invalid: str,
        reuse: bool | str,
        block: int,
        stride: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None, TraversalStats]:
        from smengine._ext import _forest

        if on_invalid not in ("nan", "raise"):
            raise ConfigError(f"on_invalid should be 'nan' or 'raise', got {on_invalid!r}")
        if int(block) < 1:
            raise ConfigError(f"block should be a positive number of rows, got {block}")
        if stride is not None and (isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 0):
            raise ConfigError(f"stride should be None or a non-negative whole number of rows, got {stride!r}")
        rows, raster = self._as_rows(X)
        mode = self._mode(reuse)
        if stride is None:  # a raster's row above is nx rows back; flat rows may show their raster
            if mode != 3:
                stride = 0
            elif raster is not None:
                stride = raster[1]
            else:
                stride = detect_stride(rows) if rows.shape[0] >= AUTO_STRIDE_MIN_ROWS else 0
        n = rows.shape[0]
        if stride:  # the first `stride` rows of a block have no row above: keep them a small share,
            # but leave ~32 blocks for the threads (results do not depend on the blocks)
            block = max(int(block), min(STRIDE_BLOCKS * int(stride), max(4 * int(stride), n // 32)))
        mean = np.empty(n, dtype=np.float64)
        sd = np.empty(n if spread else 0, dtype=np.float64)
        counters = np.zeros(3, dtype=np.int64)
        nt = effective_n_threads(n_threads)
        n_bad = int(
            _forest.predict(
                self._kernel_tables(mode), rows, mean, sd, mode, int(block), nt, counters, stride=int(stride)
            )
        )
        if n_bad:
            bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
            msg = (
                f"{n_bad} of {n} rows have a NaN or infinite feature (first: row {int(bad[0])}); "
                "they were not passed to the forest"
            )
            if on_invalid == "raise":
                raise ValidationError(msg)
            log.warning("%s and are NaN in the output", msg)
        stats = TraversalStats(
            row_trees=(n - n_bad) * self.n_trees,
            visits=int(counters[0]),
            box_hits=int(counters[1]),
            walks=int(counters[2]),
            n_invalid=n_bad,
        )
        if raster is not None:
            mean = mean.reshape(raster)
            sd = sd.reshape(raster) if spread else sd
        return mean, (sd if spread else None), stats

    def predict(
        self,
        X: npt.ArrayLike,
        *,
        n_threads: int | None = None,
        on_invalid: Literal["nan", "raise"] = "nan",
        reuse: bool | str = True,
        block: int = DEFAULT_BLOCK,
        stride: int | None = None,
    ) -> np.ndarray:
        """The ensemble's prediction for every row: the mean over trees (a random forest),
        their sum (a boosted ensemble, :attr:`ensemble` ``'boosting'``), or their sum plus the
        linear base (``'hybrid'``).

        What to decide: the rows (a table or a raster), the threads, what happens to rows
        with a NaN or infinite feature, and whether the spread over trees is wanted too
        (:meth:`predict_with_spread`). The other keywords only tune the kernel.

        Parameters
        ----------
        X : array_like or pandas.DataFrame, shape (n_rows, n_features) or (ny, nx, n_features)
            Features in the training order (a DataFrame is reordered by
            ``feature_names``); converted to float32 as scikit-learn does. A 3-D array is a
            raster of feature vectors (rows of ``nx`` pixels, given row by row): the result
            has its (ny, nx) shape. Rows in a coherent order (neighbouring sub-pixels,
            consecutive days, a raster) are fastest.
        n_threads : int, optional
            OpenMP threads (``None``: all). Results do not depend on it.
        on_invalid : {'nan', 'raise'}, optional
            Rows with a NaN or infinite feature: NaN in the output and a logged warning
            with their count (default), or :class:`~smengine.errors.ValidationError`.

        Tuning (results are identical)
        ------------------------------
        reuse : bool or {'lanes', 'box', 'none'}, optional
            How consecutive rows share work. ``True``/``'lanes'`` (default): each tree keeps
            the leaf of the previous row and a row inside that leaf's precomputed box
            (:meth:`leaf_boxes`) reuses it; the trees a row misses are walked from the
            root in 16 interleaved lanes over 3-level blocks (:meth:`blocks`), with
            AVX-512, AVX2 or portable C chosen at run time (cap it with the environment
            variable ``SMENGINE_FOREST_ISA=avx2|c``; a value other than ``c``, ``avx2`` or
            ``avx512`` raises :class:`~smengine.errors.ConfigError`). ``'box'``: the same
            test with a box rebuilt on each walk, trees one after another, node by node (no
            tables).
            ``False``/``'none'``: every row walks every tree from the root, node by node.
        block : int, optional
            Rows per kernel block (per-tree state is kept within a block). With a
            ``stride``, at least ``min(32 · stride, max(4 · stride, n_rows // 32))`` rows,
            so that few rows lack the row above and the threads still get ~32 blocks.
        stride : int, optional
            Rows are also coherent with the row ``stride`` before them, e.g. a raster of
            ``stride`` columns given row by row: a tree the row falls outside the previous
            row's leaf of is tested against the leaves of the rows ``stride`` and
            ``stride - 1`` back (above and above-right) before it is walked (``reuse=True``
            only). ``None`` (default): ``nx`` for a 3-D raster input; for flat rows (at
            least 65 536) the width :func:`detect_stride` finds, else 0. An explicit 0 turns
            it off. On the 1000 × 1000 raster of ``bench/bench_forest.py`` it cuts the walks
            from 30 to 10 per row and saves ~25 % of the time.

        Returns
        -------
        numpy.ndarray of float64, shape (n_rows,) or (ny, nx)
            Equal to ``RandomForestRegressor.predict(X)`` (LightGBM's ``Booster.predict(X)``
            for a model from :meth:`from_lightgbm`, ``HybridRegressor.predict(X)`` for one from
            :meth:`from_hybrid`) for finite rows.
        """
        return self._run(X, False, n_threads, on_invalid, reuse, block, stride)[0]

    def predict_with_spread(
        self,
        X: npt.ArrayLike,
        *,
        n_threads: int | None = None,
        on_invalid: Literal["nan", "raise"] = "nan",
        reuse: bool | str = True,
        block: int = DEFAULT_BLOCK,
        stride: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation over trees for every row.

        The spread is the population standard deviation (ddof = 0) of the per-tree
        predictions, accumulated in the same pass (shifted sums, float64), the forest's
        uncertainty layer. Parameters as :meth:`predict`.

        A boosted ensemble (:attr:`ensemble` ``'boosting'`` or ``'hybrid'``) has no such spread: its trees are
        successive corrections, not draws of one prediction, so their SD says nothing about
        the uncertainty. Its ``sd`` is NaN (and so is the engine's uncertainty layer); its
        ``mean`` is the prediction (the sum over trees), as :meth:`predict`.

        Returns
        -------
        mean, sd : numpy.ndarray of float64, shape (n_rows,) or (ny, nx)
            Units of the target (m³ m⁻³ for soil moisture); NaN for invalid rows (``sd``:
            every row of a boosted ensemble).
        """
        mean, sd, _ = self._run(X, True, n_threads, on_invalid, reuse, block, stride)
        assert sd is not None
        return mean, sd

    def traversal_stats(
        self,
        X: npt.ArrayLike,
        *,
        reuse: bool | str = True,
        block: int = DEFAULT_BLOCK,
        n_threads: int | None = None,
        stride: int | None = None,
    ) -> TraversalStats:
        """Predict ``X`` and return how many walk steps and box hits it took."""
        return self._run(X, False, n_threads, "nan", reuse, block, stride)[2]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the forest to one HDF5 file (temporary name, then renamed into place).

        The file holds the treelite checkpoint (the portable model, ``treelite``
        dataset, opaque bytes), the node layout, the model card (JSON attribute), the
        forest's hashes, the ``ensemble`` (``'random_forest'``, ``'boosting'`` or ``'hybrid'``;
        format version 2 for a boosted one, which older readers would average, 3 for a hybrid,
        whose linear base is the ``lin_coef`` dataset and ``lin_intercept`` attribute and which
        older readers would drop) and a ``file_hash``
        over the attributes (feature names, card) and the treelite copy, so :meth:`load`
        notices a change to any part of the file. The
        area-of-applicability reference (:attr:`applicability`), when there is one, is the
        ``applicability`` group, its digest an attribute (in the file hash).

        The hashes are an integrity check, not authenticity: they catch accidental change (a
        truncated copy, a flipped bit, an edit by mistake), but they are plain SHA-256 of the
        content with no secret, so whoever can write the file can recompute them. They do not
        say who made it: share and load model files only through channels you trust (see
        :meth:`load`).

        Returns
        -------
        pathlib.Path
        """
        import h5py

        path = Path(path).expanduser()
        buf = io.BytesIO()
        attrs: dict[str, Any] = {
            "format": FORMAT,
            "format_version": (
                HYBRID_FORMAT_VERSION
                if self.lin_coef is not None
                else (FORMAT_VERSION if self.average else SUMMED_FORMAT_VERSION)
            ),
            "ensemble": self.ensemble,
            "n_features": self.n_features,
            "max_depth": self.max_depth,
            "content_hash": self.content_hash,
            "source_hash": self.source_hash or "",
            "feature_names": json.dumps(list(self.feature_names) if self.feature_names else None),
            "card": json.dumps(_card_dict(self.card)),
        }
        if self.applicability is not None:
            attrs["applicability"] = self.applicability.digest
        if self.lin_coef is not None:
            attrs["lin_intercept"] = self.lin_intercept
        attrs["file_hash"] = _file_hash(attrs, self._treelite_bytes)
        with h5py.File(buf, "w") as f:
            f.attrs.update(attrs)
            f.create_dataset("nodes", data=self._nodes)
            f.create_dataset("leaf", data=self._leaf)
            f.create_dataset("root", data=self._root)
            if self.lin_coef is not None:
                f.create_dataset("lin_coef", data=self.lin_coef)
            if self._treelite_bytes is not None:
                f.create_dataset("treelite", data=np.frombuffer(self._treelite_bytes, dtype=np.uint8))
            if self.applicability is not None:
                self.applicability.to_hdf5(f.create_group("applicability"))
        atomic_write(path, buf.getvalue())
        log.info("saved %r to %s", self, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CompiledForest:
        """Read a forest written by :meth:`save`: its content is checked against its hashes and
        its tables are validated before any kernel reads them.

        Files written before boosted ensembles existed (no ``ensemble`` attribute) are random
        forests. A hybrid's file (format version 3) carries its linear base (``lin_coef``
        dataset, ``lin_intercept`` attribute), covered by the layout hash.

        The stored hashes (``content_hash`` over the node layout, ``file_hash`` over the rest)
        are an **integrity check, not authenticity**: they detect accidental corruption, but
        they are plain SHA-256 of the file's content with no secret, so anyone who can write a
        model file can recompute them, and a file whose hashes match may still have been made
        by anyone. Load model files only from sources you trust. Whatever the hashes say,
        every table is validated on load (:func:`_validate_tables`: child, leaf-slot and
        feature indices in range, every tree a tree, so no cycle, no NaN threshold, finite leaf
        values, array shapes, dtypes and sizes consistent with the header), so a malformed or
        crafted file is refused with a :class:`~smengine.errors.DataError` naming the tree and
        the node, rather than crashing the interpreter in the native kernels, which trust the
        tables. (The model card and the applicability reference are data, not code; nothing in
        the file is executed.)

        Raises
        ------
        DataError
            If the file is missing, not a compiled forest, its content does not match the
            stored hashes, or its tables are malformed (corrupt or crafted file).
        """
        import h5py

        path = Path(path).expanduser()
        try:
            file_size = path.stat().st_size
            with h5py.File(path, "r") as f:

                def array(name: str, dtype: Any) -> np.ndarray:
                    """A 1-D (``nodes``: 2-D) dataset of exactly this dtype (any byte order), no larger
                    than the file (the layout is stored uncompressed)."""
                    ds = f[name]
                    dt = np.dtype(dtype)
                    ndim = 2 if name == "nodes" else 1
                    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind != dt.kind or ds.dtype.itemsize != dt.itemsize:
                        raise DataError(
                            f"{path}: the {name!r} dataset should hold {dt}, got {getattr(ds, 'dtype', ds)}"
                        )
                    if ds.ndim != ndim or ds.size * dt.itemsize > file_size:
                        raise DataError(
                            f"{path}: the {name!r} dataset has shape {ds.shape}: not {ndim}-D, or larger than the "
                            f"{file_size}-byte file"
                        )
                    return np.ascontiguousarray(ds[...], dtype=dt)

                if f.attrs.get("format") != FORMAT:
                    raise DataError(f"{path}: not a smengine compiled forest (format={f.attrs.get('format')!r})")
                if int(f.attrs["format_version"]) > HYBRID_FORMAT_VERSION:
                    raise DataError(
                        f"{path}: format version {int(f.attrs['format_version'])} is newer than "
                        f"this smengine reads ({HYBRID_FORMAT_VERSION})"
                    )
                tl = array("treelite", np.uint8).tobytes() if "treelite" in f else None
                attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
                if "file_hash" in attrs:
                    if _file_hash(attrs, tl) != attrs["file_hash"]:
                        raise DataError(
                            f"{path}: the model file's feature names, card or treelite copy do not match its file "
                            f"hash {str(attrs['file_hash'])[:19]}… (changed or corrupt file; train or save it again)"
                        )
                else:
                    warnings.warn(
                        f"{path}: written before model files carried a file hash; its feature names and card "
                        "are not checked (load and save it again to add one)",
                        SMEngineWarning,
                        stacklevel=2,
                    )
                names = json.loads(f.attrs["feature_names"])
                ensemble = attrs.get("ensemble", "random_forest")  # files from before boosting: forests
                if ensemble not in ENSEMBLES:
                    raise DataError(f"{path}: unknown ensemble {ensemble!r} (expected one of {ENSEMBLES})")
                if (ensemble == "hybrid") != ("lin_coef" in f):
                    raise DataError(f"{path}: a {ensemble!r} model file with{'out' if 'lin_coef' not in f else ''} "
                                    "a linear base (corrupt file?)")  # fmt: skip
                try:  # the constructor validates the tables (_validate_tables) before any kernel can see them
                    cf = cls(
                        array("nodes", np.int32),
                        array("leaf", np.float64),
                        array("root", np.int64),
                        int(f.attrs["max_depth"]),
                        int(f.attrs["n_features"]),
                        feature_names=names,
                        treelite_bytes=tl,
                        source_hash=str(f.attrs["source_hash"]) or None,
                        card=_card_from(json.loads(f.attrs["card"])),
                        average=ensemble == "random_forest",
                        lin_coef=array("lin_coef", np.float64) if ensemble == "hybrid" else None,
                        lin_intercept=float(attrs.get("lin_intercept", 0.0)) if ensemble == "hybrid" else 0.0,
                    )
                except ValidationError as err:
                    raise DataError(f"{path}: malformed model file (corrupt or crafted), refused: {err}") from err
                cf.applicability = _applicability_from(f, attrs, path)
                stored = str(f.attrs["content_hash"])
        except DataError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError) as err:  # h5py's errors on a corrupt file
            raise DataError(f"{path}: cannot read compiled forest ({type(err).__name__}: {err})") from err
        if cf.content_hash != stored:
            raise DataError(f"{path}: node layout does not match its stored hash {stored[:19]}… (corrupt file?)")
        return cf


def _applicability_from(f: Any, attrs: Mapping[str, Any], path: Path) -> Any:
    """The area-of-applicability reference of an open model file (None in files without one)."""
    if "applicability" not in f:
        return None
    from smengine.model._applicability import Applicability

    app = Applicability.from_hdf5(f["applicability"], where=str(path))
    if attrs.get("applicability") != app.digest:
        raise DataError(
            f"{path}: the applicability reference does not match the digest the file records "
            f"({str(attrs.get('applicability'))[:19]}…; changed or corrupt file)"
        )
    return app


def _attr_value(v: Any) -> Any:
    """An HDF5 attribute as the Python value :meth:`CompiledForest.save` gave it."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _card_dict(card: Any) -> Any:
    if card is None or isinstance(card, dict):
        return card
    if hasattr(card, "to_dict"):
        return {"__model_card__": True, **card.to_dict()}
    raise ConfigError(f"card should be a ModelCard or a dict, got {type(card).__name__}")


def _card_from(d: Any) -> Any:
    if isinstance(d, dict) and d.pop("__model_card__", False):
        from smengine.model._card import ModelCard

        return ModelCard.from_dict(d)
    return d
