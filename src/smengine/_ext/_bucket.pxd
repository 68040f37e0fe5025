# One day of the one-layer soil water balance ("bucket") and of the antecedent precipitation index,
# shared by _bucket.pyx (smengine.waterbalance.bucket / antecedent_precipitation_index) and any
# later kernel (the engine's water-balance features): the same inline step gives the same bytes.
# A private C-level API: it may change without notice.
#
# The bucket state of one series is its storage S (mm of water in the root zone, float64). Its
# parameters are storages too (mm): s_fc at field capacity, s_wp at wilting point and s_crit, the
# storage above which evapotranspiration runs at the potential rate (s_wp < s_crit <= s_fc; the
# wrapper computes it). One day with water input w = P (+ I) and potential evapotranspiration pet,
# in exactly this order (every operation is float64, no FMA: setup.py builds with -ffp-contract=off):
#
#     S1   = S + w                                      water in first
#     D    = S1 - s_fc        if S1 > s_fc   else 0     drainage: the excess above field capacity
#     S2   = s_fc             if S1 > s_fc   else S1
#     beta = (S2 - s_wp) / (s_crit - s_wp), clipped to [0, 1]   (0 when S2 <= s_wp)
#     ET   = pet * beta,  S = S2 - ET                   if pet * beta < S2 - s_wp
#     ET   = S2 - s_wp,   S = s_wp                      otherwise: ET never takes S below the wilting point
#     (S2 <= s_wp: ET = 0, S = S2)
#
# beta is the same on S1 and on S2 (it is 1 above s_crit <= s_fc), so it is "evaluated after P,
# before ET". A missing input (bucket_missing: NaN or ±inf) is handled by the caller: the day is
# skipped and the state left alone.

from libc.math cimport isfinite


cdef inline bint bucket_missing(double v) noexcept nogil:
    """True for an input the water balance cannot use: NaN or ±inf (the caller skips the day)."""
    return not isfinite(v)


cdef inline double bucket_step(double *storage, double water, double pet, double s_fc, double s_wp,
                               double s_crit, double *et, double *drain) noexcept nogil:
    """Advance the storage (mm) by one day with water input ``water`` (P + I, mm) and potential
    evapotranspiration ``pet`` (mm); write the day's actual ET and drainage (mm) and return the new
    storage. All inputs finite (see bucket_missing); order of operations in the header comment."""
    cdef double s = storage[0] + water
    cdef double d = 0.0, e = 0.0, beta, avail
    if s > s_fc:
        d = s - s_fc
        s = s_fc
    avail = s - s_wp
    if avail > 0.0:
        beta = avail / (s_crit - s_wp)
        if beta > 1.0:
            beta = 1.0
        e = pet * beta
        if e < avail:
            s = s - e
        else:
            e = avail
            s = s_wp
    storage[0] = s
    et[0] = e
    drain[0] = d
    return s


cdef inline double api_step(double *index, double precip, double k) noexcept nogil:
    """Antecedent precipitation index: ``API = k * API + P`` (precip finite, mm); returns the new index."""
    cdef double a = k * index[0] + precip
    index[0] = a
    return a
