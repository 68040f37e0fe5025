"""Forest prediction kernels (see ``_forest.h`` for the layouts, the leaf-box table with
3-level blocks walked in interleaved lanes — ``reuse == 3``, the default — and the
single-box kernel, ``reuse == 1``).

Every kernel reaches the forest through a :class:`ForestTables` (scikit-learn's
``Tree`` pattern): it owns the node layout, the leaf values, the roots and, for
``reuse == 3``, the block tables, and holds the C struct ``smf_forest`` that points into
them together with the instruction-set level. :class:`smengine.model.CompiledForest`
builds it (``CompiledForest._kernel_tables``) and the engine kernel (``_engine.pyx``)
cimports it.

The public API is :class:`smengine.model.CompiledForest`; these kernels trust the contents
of their inputs and check only shapes: ``X`` is C-contiguous float32 with ``n_features``
columns, ``mean``/``sd`` have ``X.shape[0]`` elements.
"""

import numpy as np

from cython.parallel cimport prange
from libc.math cimport INFINITY, NAN, fabs, fabsf
from libc.stdlib cimport calloc, free, malloc
from libc.float cimport FLT_MAX

from smengine._ext._typedefs cimport float32_t, float64_t, int32_t, int64_t, intp_t, uint8_t

from smengine._ext._forest_h cimport (smf_blk, smf_build_blocks, smf_exit_lut, smf_forest, smf_isa, smf_leaf_boxes,
                                      smf_node, smf_output, smf_predict, smf_sd, smf_stats)

cdef smf_node _node
cdef smf_blk _blk

#: One node record of the layout (``smf_node`` in ``_forest.h``): the split threshold, the
#: feature index (-1 for a leaf) and the right child (internal) or leaf-value slot (leaf).
NODE_DTYPE = np.dtype({
    "names": ["thr", "feat", "right"],
    "formats": [np.float32, np.int32, np.int32],
    "offsets": [<char *> &_node.thr - <char *> &_node, <char *> &_node.feat - <char *> &_node,
                <char *> &_node.right - <char *> &_node],
    "itemsize": sizeof(smf_node),
})

#: One 3-level block (``smf_blk`` in ``_forest.h``, 64 bytes): 7 thresholds and feature indices
#: breadth-first, the 8 exit codes, the first child block and the first exit leaf.
BLOCK_DTYPE = np.dtype({
    "names": ["thr", "feat", "code", "child", "leaf", "pad"],
    "formats": [(np.float32, 8), (np.uint8, 8), (np.uint8, 8), np.int32, np.int32, (np.int32, 2)],
    "offsets": [<char *> &_blk.thr[0] - <char *> &_blk, <char *> &_blk.feat[0] - <char *> &_blk,
                <char *> &_blk.code[0] - <char *> &_blk, <char *> &_blk.child - <char *> &_blk,
                <char *> &_blk.leaf - <char *> &_blk, <char *> &_blk.pad_[0] - <char *> &_blk],
    "itemsize": sizeof(smf_blk),
})


cdef class ForestTables:
    """A compiled forest as the kernels see it: its tables and the C struct pointing into them.

    Parameters
    ----------
    nodes : ndarray of int32, shape (n_nodes, 3)
        The node records (:data:`NODE_DTYPE` viewed as three int32: threshold bits, feature,
        right child or leaf slot), every tree in preorder.
    leaf : ndarray of float64, shape (n_leaves,)
        Leaf values by slot.
    root : ndarray of int64, shape (n_trees,)
        First node of each tree.
    n_features : int
    boxes, blocks, bleaf, broot : ndarray, optional
        The block tables of the default kernel (``reuse == 3``), all four or none: leaf boxes
        (n_leaves + 1, 2 * nfp) float32 and leaf values (n_leaves,) float64 in block-exit
        order, blocks (n_blocks, 64) uint8 (:data:`BLOCK_DTYPE` records), the first block of
        each tree (n_trees,) int32 (``CompiledForest.blocks``).
    isa_cap : int, optional
        Highest instruction set the block kernel may use: 0 portable C, 1 AVX2, 2 AVX-512
        (:func:`smengine._threads.forest_isa_cap`); the CPU's best below it is taken.
    average : bool, optional
        True (default): the prediction is the mean over trees (a random forest). False: their
        sum (a gradient-boosted ensemble); the kernels then divide by 1 and report NaN for
        the spread over trees.
    lin_coef : ndarray of float64, shape (n_features,), optional
        The coefficients of a linear base (a hybrid model, :class:`smengine.model.HybridRegressor`):
        every row's prediction is then ``lin_intercept + Σ_j lin_coef[j] · x_j`` (float64, added in
        feature order) plus the tree sum / divisor (``smf_output`` in ``_forest.h``). None
        (default): no base.
    lin_intercept : float, optional
        The base's intercept (with ``lin_coef`` only).

    The arrays are kept (not copied) and must not change while the object lives. It pickles
    with its arrays.
    """

    def __init__(self, nodes, leaf, root, intp_t n_features, boxes=None, blocks=None, bleaf=None, broot=None,
                 int isa_cap=2, bint average=True, lin_coef=None, double lin_intercept=0.0):
        self._nodes = nodes
        self._leaf = leaf
        self._root = root
        if self._nodes.shape[1] != 3 or self._nodes.shape[0] == 0 or self._root.shape[0] == 0 \
                or self._leaf.shape[0] == 0 or n_features < 1:
            raise ValueError("ForestTables: nodes should be (n_nodes, 3) int32, with at least one tree, leaf and "
                             "feature")
        self.F.nodes = <const smf_node *> &self._nodes[0, 0]
        self.F.leaf = &self._leaf[0]
        self.F.root = &self._root[0]
        self.F.n_trees = self._root.shape[0]
        self.F.n_features = n_features
        self.F.average = average
        self.F.divisor = <double> self.F.n_trees if average else 1.0
        self.F.boxes = NULL
        self.F.blk = NULL
        self.F.bleaf = NULL
        self.F.broot = NULL
        self.F.lin_coef = NULL
        self.F.lin_intercept = 0.0
        if lin_coef is not None:
            self._lin = lin_coef
            if self._lin.shape[0] != n_features:
                raise ValueError("ForestTables: lin_coef should hold one coefficient per feature")
            self.F.lin_coef = &self._lin[0]
            self.F.lin_intercept = lin_intercept
        elif lin_intercept != 0.0:
            raise ValueError("ForestTables: lin_intercept without lin_coef")
        self._base = (None if lin_coef is None else np.asarray(lin_coef), float(lin_intercept))
        self.F.n_slots = 0
        self.F.nfp = 0
        tables = (boxes, blocks, bleaf, broot)
        self.has_blocks = False
        if any(t is not None for t in tables):
            if any(t is None for t in tables):
                raise ValueError("ForestTables: give all four block tables (boxes, blocks, bleaf, broot) or none")
            self._boxes = boxes
            self._blocks = blocks
            self._bleaf = bleaf
            self._broot = broot
            nfp = self._boxes.shape[1] // 2
            if self._blocks.shape[1] != 64 or self._blocks.shape[0] == 0 or self._broot.shape[0] != self.F.n_trees \
                    or self._boxes.shape[1] % 32 or nfp < n_features or n_features > 256 \
                    or self._bleaf.shape[0] != self._boxes.shape[0] - 1 or self._bleaf.shape[0] != self._leaf.shape[0]:
                raise ValueError("ForestTables: malformed block tables")
            self.F.boxes = &self._boxes[0, 0]
            self.F.n_slots = self._boxes.shape[0] - 1
            self.F.nfp = nfp
            self.F.blk = <const smf_blk *> &self._blocks[0, 0]
            self.F.bleaf = &self._bleaf[0]
            self.F.broot = &self._broot[0]
            self.has_blocks = True
        self._arrays = (np.asarray(nodes), np.asarray(leaf), np.asarray(root), int(n_features),
                        *(None if t is None else np.asarray(t) for t in tables))
        self.set_isa_cap(isa_cap)

    def set_isa_cap(self, int cap):
        """Let the block kernel use the CPU's best instruction set up to ``cap`` (0 C, 1 AVX2, 2 AVX-512)."""
        self.isa_cap = cap
        self.F.isa = smf_isa(cap)

    def with_blocks(self, boxes, blocks, bleaf, broot):
        """A ForestTables of the same forest and cap with the block tables of ``reuse == 3``."""
        return ForestTables(*self._arrays[:4], boxes, blocks, bleaf, broot, self.isa_cap, self.F.average,
                            *self._base)

    def __reduce__(self):
        return ForestTables, self._arrays + (self.isa_cap, bool(self.F.average)) + self._base

    def __repr__(self):
        how = ('averaged' if self.F.average else 'summed') + (' + linear base' if self._base[0] is not None else '')
        return (f"<ForestTables: {self.n_trees} trees ({how}), "
                f"{self._nodes.shape[0]} nodes, {self.n_features} features, "
                f"{'block tables' if self.has_blocks else 'no block tables'}, isa {self.isa}>")

    @property
    def nodes(self):
        """(n_nodes,) :data:`NODE_DTYPE` records (a read-only view of the layout)."""
        v = self._arrays[0].view(NODE_DTYPE).reshape(-1)
        v.flags.writeable = False
        return v

    @property
    def leaf(self):
        """(n_leaves,) float64 leaf values by slot."""
        return self._arrays[1]

    @property
    def root(self):
        """(n_trees,) int64 first node of each tree."""
        return self._arrays[2]

    @property
    def boxes(self):
        """(n_leaves + 1, 2 * nfp) float32 leaf boxes in block-exit order, or None."""
        return self._arrays[4]

    @property
    def blocks(self):
        """(n_blocks,) :data:`BLOCK_DTYPE` records (a read-only view), or None."""
        if self._arrays[5] is None:
            return None
        v = self._arrays[5].view(BLOCK_DTYPE).reshape(-1)
        v.flags.writeable = False
        return v

    @property
    def bleaf(self):
        """(n_leaves,) float64 leaf values in block-exit order, or None."""
        return self._arrays[6]

    @property
    def broot(self):
        """(n_trees,) int32 first block of each tree, or None."""
        return self._arrays[7]

    @property
    def n_trees(self):
        return self.F.n_trees

    @property
    def n_features(self):
        return self.F.n_features

    @property
    def average(self):
        """True: the trees are averaged (a random forest); False: summed (gradient boosting)."""
        return bool(self.F.average)

    @property
    def divisor(self):
        """What the kernels divide the tree sum by: ``n_trees`` when averaging, else 1.0."""
        return self.F.divisor

    @property
    def lin_coef(self):
        """(n_features,) float64 coefficients of the linear base, or None (no base)."""
        return self._base[0]

    @property
    def lin_intercept(self):
        """The linear base's intercept (0.0 without a base)."""
        return self._base[1]

    @property
    def isa(self):
        """The instruction set the block kernel uses: 0 portable C, 1 AVX2, 2 AVX-512."""
        return self.F.isa


def leaf_boxes(
    ForestTables forest not None,       # IN  the forest
    float32_t[:, ::1] out,              # OUT (n_leaves + 1, 2 * nfp) boxes, lo then hi
):
    """Fill out with every leaf slot's box (nfp = out.shape[1] // 2 >= n_features, at most 256)."""
    cdef ptrdiff_t nfp = out.shape[1] // 2
    if out.shape[0] != forest._leaf.shape[0] + 1 or out.shape[1] % 2 or nfp < forest.F.n_features or nfp > 256:
        raise ValueError("leaf_boxes: out should be (n_leaves + 1, 2 * nfp) with n_features <= nfp <= 256")
    smf_leaf_boxes(&forest.F, out.shape[0] - 1, nfp, &out[0, 0])


def build_blocks(
    ForestTables forest not None,       # IN  the forest
    uint8_t[:, ::1] blocks,             # OUT (>= n_nodes + n_trees, 64) block records
    int32_t[::1] bslot,                 # OUT (n_leaves,) leaf slot of every exit leaf, in exit order
    int32_t[::1] broot,                 # OUT (n_trees,) first block of each tree
    int32_t[::1] todo,                  # SCRATCH (>= blocks.shape[0],)
):
    """Fill blocks, bslot and broot with the 3-level block layout; return (n_blocks, n_bslot)."""
    cdef ptrdiff_t nb, nls = 0
    cdef const smf_forest *F = &forest.F
    if blocks.shape[0] < forest._nodes.shape[0] + F.n_trees or todo.shape[0] < blocks.shape[0] \
            or bslot.shape[0] < forest._leaf.shape[0] or broot.shape[0] != F.n_trees or blocks.shape[1] != 64:
        raise ValueError("build_blocks: output arrays too small")
    if F.n_features > 256:  # smf_blk.feat is 8 bits
        raise ValueError(f"build_blocks: blocks hold at most 256 features, the forest has {F.n_features}")
    with nogil:
        nb = smf_build_blocks(F, <smf_blk *> &blocks[0, 0], &bslot[0], &broot[0], &todo[0], &nls)
    return nb, nls


def isa(int cap=2):
    """Instruction set the block kernel uses on this CPU under ``cap``: 0 portable C, 1 AVX2, 2 AVX-512."""
    return smf_isa(cap)


def exit_lut():
    """``smf_exit_lut`` of ``_forest.h`` as 128 bytes: the block exit of every 7-bit compare mask."""
    return bytes([smf_exit_lut[m] for m in range(128)])


def predict(
    ForestTables forest not None,       # IN  the forest (CompiledForest._kernel_tables())
    const float32_t[:, ::1] X,          # IN  (n_rows, n_features)
    float64_t[::1] mean,                # OUT (n_rows,) tree sum / F.divisor (the mean, or the sum of a boosted
                                        #     ensemble; plus the linear base of a hybrid), NaN for invalid rows
    float64_t[::1] sd,                  # OUT (n_rows,) population SD over trees (len 0: skip; NaN when summed)
    int reuse,                          # 0 no reuse, 1 box kernel, 3 leaf-box table + blocks in lanes
    intp_t block,                       # rows per block (one block = one task)
    int n_threads,
    int64_t[::1] stats,                 # OUT (3,) visits, box hits, walks from the root (added to)
    intp_t stride=0,                    # reuse == 3: also try the leaves of the rows `stride` (and `stride - 1`) back
):
    """Return the number of rows skipped because a feature is NaN or infinite."""
    cdef const smf_forest *F = &forest.F
    cdef intp_t n = X.shape[0], nf = X.shape[1], T = F.n_trees
    cdef intp_t nblk
    cdef bint spread = sd.shape[0] > 0
    cdef bint tree_sd = spread and F.average  # summed ensembles: no shifted sums, the spread is NaN
    cdef intp_t b, i0, m, i, f, n_bad = 0, failed = 0
    cdef int64_t visits = 0, hits = 0, walks = 0
    cdef uint8_t *ok
    cdef double *acc
    cdef smf_stats *st
    cdef const float *xr
    if nf != F.n_features or mean.shape[0] != n or (spread and sd.shape[0] != n) or stats.shape[0] < 3 or block < 1:
        raise ValueError("forest kernel: X should be (n_rows, n_features), mean and sd (n_rows,), block >= 1")
    if reuse == 3 and not forest.has_blocks:
        raise ValueError("forest kernel: reuse 3 needs the leaf boxes and the blocks")
    if n == 0:
        return 0
    nblk = (n + block - 1) // block
    with nogil:
        for b in prange(nblk, schedule="dynamic", num_threads=n_threads):
            i0 = b * block
            m = min(block, n - i0)
            ok = <uint8_t *> malloc(m)
            acc = <double *> calloc(4 * m, sizeof(double))
            st = <smf_stats *> calloc(1, sizeof(smf_stats))
            if ok == NULL or acc == NULL or st == NULL:
                failed += 1
            else:
                for i in range(m):
                    xr = &X[i0 + i, 0]
                    ok[i] = 1
                    for f in range(nf):
                        if not (fabs(xr[f]) <= FLT_MAX):
                            ok[i] = 0
                    n_bad += 1 - ok[i]
                if smf_predict(F, reuse, &X[i0, 0], m, nf, stride, ok, acc, acc + m if tree_sd else NULL,
                               acc + 2 * m if tree_sd else NULL, acc + 3 * m if tree_sd else NULL, st) != 0:
                    failed += 1
                else:
                    visits += st[0].visits
                    hits += st[0].box_hits
                    walks += st[0].walks
                    for i in range(m):
                        if ok[i]:
                            mean[i0 + i] = smf_output(F, &X[i0 + i, 0], acc[i])  # acc / divisor (+ base)
                            if spread:
                                sd[i0 + i] = smf_sd(acc[2 * m + i], acc[3 * m + i], T) if tree_sd else NAN
                        else:
                            mean[i0 + i] = NAN
                            if spread:
                                sd[i0 + i] = NAN
            free(ok)
            free(acc)
            free(st)
    if failed:
        raise MemoryError("forest kernel: could not allocate scratch memory for a row block")
    stats[0] += visits
    stats[1] += hits
    stats[2] += walks
    return n_bad


def lag_distances(
    const float32_t[:, ::1] X,          # IN  (n_rows, n_features)
    const intp_t[::1] probes,           # IN  (P,) probe rows, each >= L
    const float32_t[::1] inv,           # IN  (n_features,) 1 / feature scale (0: ignore the feature)
    float32_t[:, ::1] out,              # OUT (L, P) out[s - 1, k] = max_f |X[p - s, f] - X[p, f]| * inv[f]
):
    """Scaled max-norm distance of each probe row to each of the L rows before it (NaN: +inf)."""
    cdef intp_t P = probes.shape[0], L = out.shape[0], nf = X.shape[1]
    cdef intp_t k, s, f, p
    cdef float m, v
    cdef int nan
    if out.shape[1] != P or inv.shape[0] != nf:
        raise ValueError("lag_distances: out must be (L, len(probes)) and inv (n_features,)")
    for k in range(P):
        if probes[k] < L or probes[k] >= X.shape[0]:
            raise ValueError(f"lag_distances: probe row {probes[k]} outside [{L}, {X.shape[0]})")
    with nogil:
        for k in range(P):
            p = probes[k]
            for s in range(1, L + 1):
                m = 0
                nan = 0
                for f in range(nf):  # branch-free, so that it vectorises
                    v = fabsf(X[p - s, f] - X[p, f]) * inv[f]
                    m = v if v > m else m
                    nan |= v != v  # a NaN feature, or inf * 0
                out[s - 1, k] = INFINITY if nan or m > FLT_MAX else m
