# Declarations of the C forest kernel in _forest.h, shared by _forest.pyx and _engine.pyx.

cdef extern from "_forest.h" nogil:
    ctypedef struct smf_node:
        pass
    ctypedef struct smf_forest:
        const smf_node *nodes
        const double *leaf
        const long long *root
        ptrdiff_t n_trees, n_features
    ctypedef struct smf_stats:
        long long visits, box_hits, walks
    void smf_leaf_boxes(const smf_forest *F, ptrdiff_t n_slots, ptrdiff_t nfp, float *out)
    int smf_predict(const smf_forest *F, int reuse, const float *boxes, ptrdiff_t n_slots, ptrdiff_t nfp,
                    const float *X, ptrdiff_t n, ptrdiff_t ld, const unsigned char *valid, double *sum,
                    double *shift, double *s1, double *s2, smf_stats *stats)
    double smf_sd(double s1, double s2, ptrdiff_t T)
