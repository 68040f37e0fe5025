"""Exponential filter (Soil Water Index) kernel: Albergel et al. (2008) recursion.

IN views are read-only, OUT views write-only. The public wrapper is
:func:`smengine.filters.exp_filter`; this kernel trusts its inputs.
"""

from cython.parallel cimport prange
from libc.math cimport exp, NAN, isnan

from smengine._ext._typedefs cimport float64_t, intp_t


def exp_filter(
    const float64_t[:, ::1] values,     # IN  (n_times, n_series)
    const float64_t[::1] times,         # IN  (n_times,) days, increasing
    const float64_t[::1] ctimes,        # IN  (n_T,) characteristic times, days
    bint carry,                         # forward-fill SWI on days without observation
    float64_t[:, :, ::1] out,           # OUT (n_T, n_times, n_series)
    float64_t[:, ::1] gain,             # IN/OUT (n_T, n_series) K of the last valid obs (0: none yet)
    float64_t[:, ::1] state,            # IN/OUT (n_T, n_series) SWI of the last valid obs
    float64_t[:, ::1] last,             # IN/OUT (n_T, n_series) time of the last valid obs
    int n_threads,
):
    """SWI for every series and T, time-major so that each step streams over the series."""
    cdef intp_t n = values.shape[0]
    cdef intp_t m = values.shape[1]
    cdef intp_t nT = ctimes.shape[0]
    cdef intp_t i, j, k
    cdef double v, K, w
    with nogil:
        for i in range(n):
            for j in prange(m, schedule="static", num_threads=n_threads):
                v = values[i, j]
                for k in range(nT):
                    if isnan(v):
                        out[k, i, j] = state[k, j] if (carry and gain[k, j] > 0) else NAN
                        continue
                    K = gain[k, j]
                    if K > 0:
                        w = exp(-(times[i] - last[k, j]) / ctimes[k])
                        K = K / (K + w)
                        state[k, j] = state[k, j] + K * (v - state[k, j])
                    else:
                        K = 1.0
                        state[k, j] = v
                    gain[k, j] = K
                    last[k, j] = times[i]
                    out[k, i, j] = state[k, j]
