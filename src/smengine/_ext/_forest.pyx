"""Forest prediction kernels (see ``_forest.h`` for the layouts, the leaf-box table with
3-level blocks walked in interleaved lanes — ``reuse == 3``, the default — and the
single-box kernel, ``reuse == 1``).

The public API is :class:`smengine.model.CompiledForest`; this kernel trusts its inputs:
``nodes`` is the (n_nodes, 3) int32 view of the 12-byte node records, ``X`` is
C-contiguous float32 with ``n_features`` columns, ``mean``/``sd`` have ``X.shape[0]``
elements.
"""

from cython.parallel cimport prange
from libc.math cimport INFINITY, NAN, fabs, fabsf
from libc.stdlib cimport calloc, free, malloc
from libc.float cimport FLT_MAX

from smengine._ext._typedefs cimport float32_t, float64_t, int32_t, int64_t, intp_t, uint8_t

from smengine._ext._forest_h cimport (smf_blk, smf_build_blocks, smf_forest, smf_isa, smf_leaf_boxes, smf_predict,
                                      smf_sd, smf_set_forest, smf_set_tables, smf_stats)


def leaf_boxes(const int32_t[:, ::1] nodes, const float64_t[::1] leaf, const int64_t[::1] root,
               intp_t n_features, float32_t[:, ::1] out):
    """Fill out (n_slots + 1, 2 * nfp) with every leaf slot's box (lo then hi; nfp = out.shape[1] // 2)."""
    cdef smf_forest F
    smf_set_forest(&F, nodes, leaf, root, n_features)
    smf_leaf_boxes(&F, out.shape[0] - 1, out.shape[1] // 2, &out[0, 0])


def build_blocks(const int32_t[:, ::1] nodes, const float64_t[::1] leaf, const int64_t[::1] root,
                 intp_t n_features, uint8_t[:, ::1] blocks, int32_t[::1] bslot, int32_t[::1] broot,
                 int32_t[::1] todo):
    """Fill blocks (capacity n_nodes + n_trees rows of 64 bytes), bslot (n_leaves) and broot
    (n_trees) with the 3-level block layout; return (n_blocks, n_bslot)."""
    cdef smf_forest F
    cdef ptrdiff_t nb, nls = 0
    if blocks.shape[0] < nodes.shape[0] + root.shape[0] or todo.shape[0] < blocks.shape[0] \
            or bslot.shape[0] < leaf.shape[0] or broot.shape[0] != root.shape[0] or blocks.shape[1] != 64:
        raise ValueError("build_blocks: output arrays too small")
    smf_set_forest(&F, nodes, leaf, root, n_features)
    with nogil:
        nb = smf_build_blocks(&F, <smf_blk *> &blocks[0, 0], &bslot[0], &broot[0], &todo[0], &nls)
    return nb, nls


def isa():
    """Instruction set the block kernel uses: 0 portable C, 1 AVX2, 2 AVX-512 (after SMENGINE_FOREST_ISA)."""
    return smf_isa()


def predict(
    const int32_t[:, ::1] nodes,        # IN  (n_nodes, 3) {thr bits, feat, right}
    const float64_t[::1] leaf,          # IN  leaf values by slot
    const int64_t[::1] root,          # IN  (n_trees,) first node of each tree
    const float32_t[:, ::1] X,          # IN  (n_rows, n_features)
    float64_t[::1] mean,                # OUT (n_rows,) mean over trees, NaN for invalid rows
    float64_t[::1] sd,                  # OUT (n_rows,) population SD over trees (len 0: skip)
    int reuse,                          # leaf-box / path reuse between consecutive rows
    intp_t block,                       # rows per block (one block = one task)
    int n_threads,
    int64_t[::1] stats,               # OUT (3,) visits, box hits, walks from the root (added to)
    const float32_t[:, ::1] boxes=None,  # IN  leaf boxes for reuse == 3
    const uint8_t[:, ::1] blocks=None,   # IN  block layout for reuse == 3
    const float64_t[::1] bleaf=None,     # IN  leaf values in block-exit order
    const int32_t[::1] broot=None,       # IN  first block of each tree
    intp_t stride=0,                    # reuse == 3: also try the leaf of the row `stride` before
):
    """Return the number of rows skipped because a feature is NaN or infinite."""
    cdef intp_t n = X.shape[0], nf = X.shape[1], T = root.shape[0]
    cdef intp_t nblk = (n + block - 1) // block
    cdef bint spread = sd.shape[0] > 0
    cdef smf_forest F
    cdef intp_t b, i0, m, i, f, n_bad = 0, failed = 0
    cdef int64_t visits = 0, hits = 0, walks = 0
    cdef uint8_t *ok
    cdef double *acc
    cdef smf_stats *st
    cdef const float *xr
    if n == 0:
        return 0
    smf_set_forest(&F, nodes, leaf, root, nf)
    smf_set_tables(&F, reuse, boxes, blocks, bleaf, broot)
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
                if smf_predict(&F, reuse, &X[i0, 0], m, nf, stride, ok, acc, acc + m if spread else NULL,
                               acc + 2 * m if spread else NULL, acc + 3 * m if spread else NULL, st) != 0:
                    failed += 1
                else:
                    visits += st[0].visits
                    hits += st[0].box_hits
                    walks += st[0].walks
                    for i in range(m):
                        if ok[i]:
                            mean[i0 + i] = acc[i] / T
                            if spread:
                                sd[i0 + i] = smf_sd(acc[2 * m + i], acc[3 * m + i], T)
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
