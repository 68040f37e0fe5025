# One step of the exponential filter (Albergel et al. 2008), shared by _filters.pyx (exp_filter)
# and _engine.pyx (the engine's SWI features): the engine's SWI is exp_filter's by construction.
#
# The state of one series for one characteristic time T is three float64 values: the gain K of
# the last valid value (0: none yet), the SWI at that value and its time (days). A valid value v
# at time t after a gap with weight w = exp(-(t - t_last) / T) (swi_weight) gives
#     K = K / (K + w),  SWI = SWI + K (v - SWI)      (the first value: K = 1, SWI = v)
# and a missing value leaves the state alone. Missing is anything not finite: NaN and ±inf alike
# (swi_missing), so that one inf cannot erase a series from there on.

cimport cython
from libc.math cimport exp, isfinite

from smengine._ext._typedefs cimport intp_t


cdef inline bint swi_missing(double v) noexcept nogil:
    """True for a value the recursion skips: NaN or ±inf (callers count the infs, see the wrappers)."""
    return not isfinite(v)


@cython.cdivision(True)
cdef inline double swi_weight(double t, double t_last, double T) noexcept nogil:
    """exp(-(t - t_last) / T): the weight of the gap since the last valid value."""
    return exp(-(t - t_last) / T)


@cython.cdivision(True)
cdef inline double swi_step(double *gain, double *swi, double *last, double v, double t, double T,
                            const double *wtab, intp_t ntab, double invstep) noexcept nogil:
    """Fold the valid (finite, see swi_missing) value v at time t into the state (gain, swi, last)
    of characteristic time T and return the new SWI.

    The gap's weight is swi_weight(t, last, T), or wtab[d] with d = round((t - last) * invstep)
    when d < ntab (a table of swi_weight(d / invstep, 0, T) for times on a uniform integer step;
    ntab = 0: no table)."""
    cdef double K = gain[0], s, w, tl
    cdef intp_t d
    if K > 0:
        tl = last[0]
        if ntab > 0:
            d = <intp_t>((t - tl) * invstep + 0.5)
            w = wtab[d] if d < ntab else swi_weight(t, tl, T)
        else:
            w = swi_weight(t, tl, T)
        K = K / (K + w)
        s = swi[0]
        s = s + K * (v - s)
    else:
        K = 1.0
        s = v
    swi[0] = s
    gain[0] = K
    last[0] = t
    return s
