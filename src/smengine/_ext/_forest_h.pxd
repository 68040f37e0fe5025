# Declarations of the C forest kernel in _forest.h, shared by _forest.pyx and _engine.pyx.

from smengine._ext._typedefs cimport float32_t, int32_t, int64_t, uint8_t

cdef extern from "_forest.h" nogil:
    ctypedef struct smf_node:
        pass
    ctypedef struct smf_blk:
        pass
    ctypedef struct smf_forest:
        const smf_node *nodes
        const double *leaf
        const int64_t *root
        ptrdiff_t n_trees, n_features
        const float *boxes
        ptrdiff_t n_slots, nfp
        const smf_blk *blk
        const double *bleaf
        const int32_t *broot
        int isa
    ctypedef struct smf_stats:
        int64_t visits, box_hits, walks
    void smf_leaf_boxes(const smf_forest *F, ptrdiff_t n_slots, ptrdiff_t nfp, float *out)
    ptrdiff_t smf_build_blocks(const smf_forest *F, smf_blk *blk, int32_t *bslot, int32_t *broot, int32_t *todo,
                               ptrdiff_t *n_bslot)
    int smf_isa()
    int smf_predict(const smf_forest *F, int reuse, const float *X, ptrdiff_t n, ptrdiff_t ld,
                    ptrdiff_t stride, const uint8_t *valid, double *sum, double *shift, double *s1, double *s2,
                    smf_stats *stats)
    double smf_sd(double s1, double s2, ptrdiff_t T)


cdef inline void smf_set_forest(smf_forest *F, const int32_t[:, ::1] nodes, const double[::1] leaf,
                                const int64_t[::1] root, ptrdiff_t n_features) noexcept:
    """Point F at a CompiledForest's node layout (nodes viewed as (n_nodes, 3) int32), without tables."""
    F.nodes = <const smf_node *> &nodes[0, 0]
    F.leaf = &leaf[0]
    F.root = &root[0]
    F.n_trees = root.shape[0]
    F.n_features = n_features
    F.boxes = NULL
    F.blk = NULL
    F.bleaf = NULL
    F.broot = NULL
    F.n_slots = 0
    F.nfp = 0
    F.isa = 0


cdef inline int smf_set_tables(smf_forest *F, int reuse, const float32_t[:, ::1] boxes,
                               const uint8_t[:, ::1] blocks, const double[::1] bleaf,
                               const int32_t[::1] broot) except -1:
    """Point F (after smf_set_forest) at the leaf boxes and blocks of reuse == 3
    (CompiledForest.blocks) and pick the instruction set."""
    F.isa = smf_isa()
    if reuse != 3:
        return 0
    if boxes is None or blocks is None or bleaf is None or broot is None:
        raise ValueError("forest kernel: reuse 3 needs the leaf boxes and the blocks")
    if blocks.shape[1] != 64 or broot.shape[0] != F.n_trees or (boxes.shape[1] // 2) % 16 \
            or bleaf.shape[0] != boxes.shape[0] - 1 or boxes.shape[1] // 2 < F.n_features:
        raise ValueError("forest kernel: malformed block tables")
    F.boxes = &boxes[0, 0]
    F.n_slots = boxes.shape[0] - 1
    F.nfp = boxes.shape[1] // 2
    F.blk = <const smf_blk *> &blocks[0, 0]
    F.bleaf = &bleaf[0]
    F.broot = &broot[0]
    return 0
