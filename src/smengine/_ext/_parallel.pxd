# OpenMP helpers with a one-thread fallback for builds without OpenMP
# (scikit-learn ``_openmp_helpers.pxd`` / pykdtree ``USE_OMP`` pattern).

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define SMENGINE_OPENMP 1
    #else
    #define SMENGINE_OPENMP 0
    static inline int omp_get_max_threads(void) { return 1; }
    static inline int omp_get_thread_num(void) { return 0; }
    #endif
    """
    bint SMENGINE_OPENMP
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_num() noexcept nogil
