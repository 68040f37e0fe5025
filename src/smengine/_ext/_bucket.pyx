"""Daily soil water balance ("bucket") and antecedent precipitation index kernels.

IN views are read-only, OUT views write-only, IN/OUT views hold the state. The public wrappers
are :func:`smengine.waterbalance.bucket` and
:func:`smengine.waterbalance.antecedent_precipitation_index`; these kernels trust their inputs
(shapes, dtypes, non-negative inputs, s_wp < s_crit <= s_fc).

Loop order (as ``_filters.exp_filter``): blocks of ``BLOCK`` neighbouring series are distributed
over threads; inside a block, time runs outermost and the block's state stays hot in L1. Each
series is independent, so any thread count gives the same bytes.

The daily steps are ``bucket_step``, ``bucket_oudin_day`` (Oudin PET, then ``bucket_step``: the
gridded water-balance feature, :func:`smengine.waterbalance.bucket_oudin`, the same function the
engine kernel calls) and ``api_step`` of ``_bucket.pxd`` (order of operations there). A series whose state is not finite (the wrapper sets NaN where field capacity, wilting
point or the initial content are missing) is undefined: every output is NaN and nothing is
counted. In a defined series a day with a missing input (``bucket_missing``: precipitation,
potential ET or irrigation NaN or ±inf) is skipped: outputs NaN, state unchanged, and the day is
counted; the kernels return that count for the wrapper to report.
"""

from cython.parallel cimport prange
from libc.math cimport NAN, isfinite

from smengine._ext._bucket cimport api_step, bucket_missing, bucket_oudin_day, bucket_step
from smengine._ext._typedefs cimport float32_t, float64_t, int64_t, intp_t

ctypedef fused real_t:
    float32_t
    float64_t

DEF BLOCK = 256


def bucket(
    const real_t[:, ::1] precip,        # IN  (n_days, n_series) mm d-1
    const real_t[:, ::1] pet,           # IN  (n_days, n_series) mm d-1
    const real_t[:, ::1] irrigation,    # IN  (n_days, n_series) mm d-1, or (0, 0): none
    const float64_t[::1] s_fc,          # IN  (n_series,) storage at field capacity, mm
    const float64_t[::1] s_wp,          # IN  (n_series,) storage at wilting point, mm
    const float64_t[::1] s_crit,        # IN  (n_series,) storage above which ET = PET, mm
    float64_t depth,                    # root-zone depth, mm
    float64_t[::1] storage,             # IN/OUT (n_series,) storage, mm (NaN: undefined series)
    real_t[:, ::1] theta,               # OUT (n_days, n_series) storage / depth, m3 m-3
    real_t[:, ::1] et,                  # OUT (n_days, n_series) actual ET, mm d-1, or (0, 0): not wanted
    real_t[:, ::1] drainage,            # OUT (n_days, n_series) drainage, mm d-1, or (0, 0): not wanted
    int n_threads,
):
    """Run the bucket over every series; returns the number of skipped series-days (missing input in a
    defined series)."""
    cdef intp_t n = precip.shape[0]
    cdef intp_t m = precip.shape[1]
    cdef bint has_irr = irrigation.shape[0] > 0
    cdef bint fluxes = et.shape[0] > 0
    cdef intp_t nblk = (m + BLOCK - 1) // BLOCK
    cdef intp_t b, j0, j1, i, j
    cdef double w, e, ev, dr, s
    cdef int64_t n_missing = 0
    with nogil:
        for b in prange(nblk, schedule="static", num_threads=n_threads):
            j0 = b * BLOCK
            j1 = min(j0 + BLOCK, m)
            for i in range(n):
                for j in range(j0, j1):
                    w = precip[i, j]
                    if has_irr:
                        w = w + irrigation[i, j]
                    e = pet[i, j]
                    if not isfinite(storage[j]) or bucket_missing(w) or bucket_missing(e):
                        if isfinite(storage[j]):
                            n_missing += 1
                        theta[i, j] = <real_t>NAN
                        if fluxes:
                            et[i, j] = <real_t>NAN
                            drainage[i, j] = <real_t>NAN
                        continue
                    ev = 0.0  # assigned in the loop body, so private to each thread (the step writes through &ev)
                    dr = 0.0
                    s = bucket_step(&storage[j], w, e, s_fc[j], s_wp[j], s_crit[j], &ev, &dr)
                    theta[i, j] = <real_t>(s / depth)
                    if fluxes:
                        et[i, j] = <real_t>ev
                        drainage[i, j] = <real_t>dr
    return n_missing


def bucket_oudin(
    const float32_t[:, ::1] precip,     # IN  (n_days, n_series) mm d-1
    const float32_t[:, ::1] tmean,      # IN  (n_days, n_series) degC
    const float64_t[::1] ra,            # IN  (n_days,) extraterrestrial radiation, MJ m-2 d-1
    const float64_t[::1] s_fc,          # IN  (n_series,) storage at field capacity, mm
    const float64_t[::1] s_wp,          # IN  (n_series,) storage at wilting point, mm
    const float64_t[::1] s_crit,        # IN  (n_series,) storage above which ET = PET, mm
    float64_t depth,                    # root-zone depth, mm
    float64_t[::1] storage,             # IN/OUT (n_series,) storage, mm (NaN: undefined series)
    float32_t[:, ::1] theta,            # OUT (n_days, n_series) storage / depth, m3 m-3
    int n_threads,
):
    """The bucket with Oudin PET made inside the day (``bucket_oudin_day``) over every series; returns the
    number of skipped series-days (missing precipitation or temperature in a defined series)."""
    cdef intp_t n = precip.shape[0]
    cdef intp_t m = precip.shape[1]
    cdef intp_t nblk = (m + BLOCK - 1) // BLOCK
    cdef intp_t b, j0, j1, i, j
    cdef double th
    cdef bint defined
    cdef int64_t n_missing = 0
    if tmean.shape[0] != n or tmean.shape[1] != m or ra.shape[0] != n or theta.shape[0] != n \
            or theta.shape[1] != m or s_fc.shape[0] != m or s_wp.shape[0] != m or s_crit.shape[0] != m \
            or storage.shape[0] != m:
        raise ValueError("bucket_oudin: precip, tmean, theta (n_days, n_series), ra (n_days,) and s_fc, s_wp, "
                         "s_crit, storage (n_series,) should agree")
    with nogil:
        for b in prange(nblk, schedule="static", num_threads=n_threads):
            j0 = b * BLOCK
            j1 = min(j0 + BLOCK, m)
            for i in range(n):
                for j in range(j0, j1):
                    defined = isfinite(storage[j])
                    th = bucket_oudin_day(&storage[j], precip[i, j], tmean[i, j], ra[i], s_fc[j], s_wp[j],
                                          s_crit[j], depth)
                    if defined and not isfinite(th):
                        n_missing += 1
                    theta[i, j] = <float32_t>th
    return n_missing


def antecedent_precipitation_index(
    const real_t[:, ::1] precip,        # IN  (n_days, n_series) mm d-1
    float64_t k,                        # daily recession constant
    float64_t[::1] index,               # IN/OUT (n_series,) API, mm (NaN: undefined series)
    real_t[:, ::1] out,                 # OUT (n_days, n_series) API, mm
    int n_threads,
):
    """API over every series; returns the number of skipped series-days (missing precipitation in a
    defined series)."""
    cdef intp_t n = precip.shape[0]
    cdef intp_t m = precip.shape[1]
    cdef intp_t nblk = (m + BLOCK - 1) // BLOCK
    cdef intp_t b, j0, j1, i, j
    cdef double p
    cdef int64_t n_missing = 0
    with nogil:
        for b in prange(nblk, schedule="static", num_threads=n_threads):
            j0 = b * BLOCK
            j1 = min(j0 + BLOCK, m)
            for i in range(n):
                for j in range(j0, j1):
                    p = precip[i, j]
                    if not isfinite(index[j]) or bucket_missing(p):
                        if isfinite(index[j]):
                            n_missing += 1
                        out[i, j] = <real_t>NAN
                        continue
                    out[i, j] = <real_t>api_step(&index[j], p, k)
    return n_missing
