# One step of the exponential filter (Albergel et al. 2008), shared by _filters.pyx (exp_filter)
# and _engine.pyx (the engine's SWI features): the engine's SWI is exp_filter's by construction.
#
# The state of one series for one characteristic time T is three float64 values: the gain K of
# the last valid value (0: none yet), the SWI at that value and its time (days). A valid value v
# at time t after a gap with weight w = exp(-(t - t_last) / T) (swi_weight) gives
#     K = K / (K + w),  SWI = SWI + K (v - SWI)      (the first value: K = 1, SWI = v)
# and a missing value leaves the state alone.

cimport cython
from libc.math cimport exp


@cython.cdivision(True)
cdef inline double swi_weight(double t, double t_last, double T) noexcept nogil:
    """exp(-(t - t_last) / T): the weight of the gap since the last valid value."""
    return exp(-(t - t_last) / T)


@cython.cdivision(True)
cdef inline double swi_step(double *gain, double *swi, double *last, double v, double t,
                            double w) noexcept nogil:
    """Fold the valid value v at time t into the state (gain, swi, last) and return the new SWI.
    w is the gap's swi_weight, read only when a value came before (gain > 0)."""
    cdef double K = gain[0], s
    if K > 0:
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
