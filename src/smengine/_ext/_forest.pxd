# The kernel-facing forest object (scikit-learn's ``_tree.pxd`` pattern: a cdef class that owns
# its arrays and the C struct pointing into them), cimported by _engine.pyx.

from smengine._ext._forest_h cimport smf_forest
from smengine._ext._typedefs cimport float32_t, float64_t, int32_t, int64_t, uint8_t


cdef class ForestTables:
    # the struct every kernel reads; its pointers go into the memoryviews below, which keep
    # the arrays alive and exported (so they cannot be resized)
    cdef smf_forest F
    cdef const int32_t[:, ::1] _nodes      # (n_nodes, 3) {thr bits, feat, right}
    cdef const float64_t[::1] _leaf        # leaf values by slot
    cdef const int64_t[::1] _root          # (n_trees,) first node of each tree
    cdef const float32_t[:, ::1] _boxes    # (n_slots + 1, 2 * nfp) leaf boxes in block-exit order
    cdef const uint8_t[:, ::1] _blocks     # (n_blocks, 64) smf_blk records
    cdef const float64_t[::1] _bleaf       # (n_slots,) leaf values in block-exit order
    cdef const int32_t[::1] _broot         # (n_trees,) first block of each tree
    cdef const float64_t[::1] _lin         # (n_features,) coefficients of the linear base (hybrid models)
    cdef readonly bint has_blocks          # the block tables of reuse == 3 are set
    cdef readonly int isa_cap              # the cap F.isa was chosen under
    cdef tuple _arrays                     # the arrays as given (pickling, attributes)
    cdef tuple _base                       # (lin_coef array or None, lin_intercept) as given
