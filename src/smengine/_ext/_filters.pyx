"""Exponential filter (Soil Water Index) kernel: Albergel et al. (2008) recursion.

IN views are read-only, OUT views write-only. The public wrapper is
:func:`smengine.filters.exp_filter`; this kernel trusts its inputs.

Loop order: blocks of ``BLOCK`` neighbouring series are distributed over threads; inside a
block, each T walks through time with the block's state (gain, SWI, last time) hot in L1,
reading each input row segment once per T (the block's input stays in L2 across T). The
time-major order (all series per step) streamed three state arrays through memory every
step and was memory-bound.

The recursion step is ``swi_step`` of ``_swi.pxd``, the same inline function the engine
kernel (``_engine.pyx``) uses for its SWI features.

With ``step > 0`` (the caller found the times uniform with an integer step, so every
``t_i - t_last == d * step`` exactly) a table of ``swi_weight(d * step, 0, T_k)`` (the same
libm ``exp`` of the same argument) replaces the per-observation ``exp``: bit-identical results.

With ``carry``, a day without a valid value repeats the last SWI while at most ``max_gap`` days
have passed since that value (``t - t_last <= max_gap``; ``inf``: always), then gives NaN until
the next valid value.

Missing values are the non-finite ones (``swi_missing``): NaN and ±inf alike. The kernel
returns how many ±inf it met (once per value, not per T), for the wrapper to report.
"""

import numpy as np

from cython.parallel cimport prange
from libc.math cimport NAN, isinf

from smengine._ext._swi cimport swi_missing, swi_step, swi_weight
from smengine._ext._typedefs cimport float32_t, float64_t, int64_t, intp_t

ctypedef fused real_t:
    float32_t
    float64_t

DEF BLOCK = 256


def exp_filter(
    const real_t[:, ::1] values,        # IN  (n_times, n_series)
    const float64_t[::1] times,         # IN  (n_times,) days, increasing
    const float64_t[::1] ctimes,        # IN  (n_T,) characteristic times, days
    bint carry,                         # forward-fill SWI on days without observation
    float64_t max_gap,                  # carry: at most this many days after the last valid value (inf: no limit)
    real_t[:, :, ::1] out,              # OUT (n_T, n_times, n_series)
    float64_t[:, ::1] gain,             # IN/OUT (n_T, n_series) K of the last valid obs (0: none yet)
    float64_t[:, ::1] state,            # IN/OUT (n_T, n_series) SWI of the last valid obs
    float64_t[:, ::1] last,             # IN/OUT (n_T, n_series) time of the last valid obs
    float64_t step,                     # uniform integer step of ``times`` (days), or 0
    int n_threads,
):
    """SWI for every series and T, series-blocked with time innermost per block; returns the number of ±inf
    values (treated as missing, as NaN)."""
    cdef intp_t n = values.shape[0]
    cdef intp_t m = values.shape[1]
    cdef intp_t nT = ctimes.shape[0]
    cdef intp_t ntab = n if step > 0 else 0
    cdef float64_t[:, ::1] wtable = np.empty((nT, ntab))
    cdef intp_t nblk = (m + BLOCK - 1) // BLOCK
    cdef intp_t b, j0, j1, i, j, k, d
    cdef const double *wrow
    cdef double v, K, ti, invstep = 1.0 / step if step > 0 else 0.0
    cdef int64_t n_inf = 0
    with nogil:
        for k in range(nT):
            for d in range(ntab):
                wtable[k, d] = swi_weight(d * step, 0.0, ctimes[k])
        for b in prange(nblk, schedule="static", num_threads=n_threads):
            j0 = b * BLOCK
            j1 = min(j0 + BLOCK, m)
            for k in range(nT):
                wrow = &wtable[k, 0] if ntab > 0 else NULL
                for i in range(n):
                    ti = times[i]
                    for j in range(j0, j1):
                        v = values[i, j]
                        K = gain[k, j]
                        if swi_missing(v):
                            if k == 0 and isinf(v):
                                n_inf += 1
                            out[k, i, j] = <real_t>state[k, j] if (carry and K > 0 and ti - last[k, j] <= max_gap) \
                                else <real_t>NAN
                            continue
                        out[k, i, j] = <real_t>swi_step(&gain[k, j], &state[k, j], &last[k, j], v, ti, ctimes[k],
                                                        wrow, ntab, invstep)
    return n_inf
