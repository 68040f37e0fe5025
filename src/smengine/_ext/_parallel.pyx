"""Report how the kernels were built (OpenMP or not) and OpenMP's thread default."""


def openmp_enabled():
    """True if the extensions were compiled with OpenMP."""
    return bool(SMENGINE_OPENMP)


def max_threads():
    """``omp_get_max_threads()`` (honours ``OMP_NUM_THREADS``); 1 without OpenMP."""
    return omp_get_max_threads()
