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
#
# The gridded water-balance feature (smengine.features / smengine.engine) makes PET inside the day
# with Oudin et al. (2005), oudin_pet (the operations and order of smengine.waterbalance.pet_oudin):
#
#     PET = Ra / 2450 * (T + 5) / 100 * 1000     if T + 5 > 0, else 0      (mm d-1; Ra MJ m-2 d-1, T degC)
#
# (2450 = lambda * rho = 2.45 MJ kg-1 * 1000 kg m-3, exactly 2450.0 in float64 as in the Python), and
# bucket_oudin_day does PET and the bucket step of one day: the one function the feature builder's
# kernel (_bucket.bucket_oudin) and the engine kernel (_engine.run_days, kind 6) call.

from libc.math cimport NAN, isfinite


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


cdef inline double oudin_pet(double tmean, double ra) noexcept nogil:
    """Oudin PET (mm d-1) from the daily mean temperature (degC) and Ra (MJ m-2 d-1); 0 where T + 5 <= 0.
    The operations of smengine.waterbalance.pet_oudin in its order (see the header)."""
    cdef double t5 = tmean + 5.0
    if t5 > 0.0:
        return ra / 2450.0 * t5 / 100.0 * 1000.0
    return 0.0


cdef inline double bucket_oudin_day(double *storage, double precip, double tmean, double ra, double s_fc,
                                    double s_wp, double s_crit, double depth) noexcept nogil:
    """One day of the water-balance feature: PET = oudin_pet(tmean, ra), then bucket_step with water
    input ``precip``; returns theta = storage / depth (m3 m-3). NaN, the storage left alone, when the
    series is undefined (storage not finite) or precipitation, temperature or Ra is missing (the caller
    counts the latter in a defined series)."""
    cdef double e, d
    if not isfinite(storage[0]) or bucket_missing(precip) or bucket_missing(tmean) or bucket_missing(ra):
        return NAN
    e = 0.0
    d = 0.0
    return bucket_step(storage, precip, oudin_pet(tmean, ra), s_fc, s_wp, s_crit, &e, &d) / depth
