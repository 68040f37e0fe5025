# Declarations of the C forest kernel in _forest.h, shared by _forest.pyx and _engine.pyx.
# The kernels reach a forest through smengine._ext._forest.ForestTables (_forest.pxd), which
# owns the arrays and fills the smf_forest struct that points into them.

from smengine._ext._typedefs cimport float32_t, int32_t, int64_t, uint8_t

cdef extern from "_forest.h" nogil:
    ctypedef struct smf_node:
        float32_t thr
        int32_t feat
        int32_t right
    ctypedef struct smf_blk:
        float32_t thr[8]
        uint8_t feat[8]
        uint8_t code[8]
        int32_t child
        int32_t leaf
        int32_t pad_[2]
    ctypedef struct smf_forest:
        const smf_node *nodes
        const double *leaf
        const int64_t *root
        ptrdiff_t n_trees, n_features
        int average
        double divisor
        const double *lin_coef
        double lin_intercept
        const float *boxes
        ptrdiff_t n_slots, nfp
        const smf_blk *blk
        const double *bleaf
        const int32_t *broot
        int isa
    ctypedef struct smf_stats:
        int64_t visits, box_hits, walks
    const uint8_t smf_exit_lut[128]
    void smf_leaf_boxes(const smf_forest *F, ptrdiff_t n_slots, ptrdiff_t nfp, float *out)
    ptrdiff_t smf_build_blocks(const smf_forest *F, smf_blk *blk, int32_t *bslot, int32_t *broot, int32_t *todo,
                               ptrdiff_t *n_bslot)
    int smf_isa(int cap)
    int smf_predict(const smf_forest *F, int reuse, const float *X, ptrdiff_t n, ptrdiff_t ld,
                    ptrdiff_t stride, const uint8_t *valid, double *sum, double *shift, double *s1, double *s2,
                    smf_stats *stats)
    double smf_output(const smf_forest *F, const float *x, double sum)
    double smf_sd(double s1, double s2, ptrdiff_t T)
