"""Fused, NaN-aware footprint-weighted averaging of rasters at many centre points.

IN views are read-only (read-only memmaps work), OUT views are write-only.
The public wrapper is :func:`smengine.footprint.footprint_average`; this kernel
trusts its inputs (dtypes, contiguity, kernel extents, centre indices).
"""

from cython.parallel cimport prange
from libc.math cimport NAN

from smengine._ext._typedefs cimport float32_t, float64_t, intp_t


cdef extern from "_fpavg.h" nogil:
    void smengine_centre_wsum(const float32_t* band, intp_t ny, intp_t nx,
                              intp_t row, intp_t col,
                              const float64_t* kernel, intp_t kh, intp_t kw,
                              const intp_t* kj0, const intp_t* kj1,
                              double* acc_out, double* wsum_out) noexcept


def footprint_average(
    const float32_t[:, :, ::1] raster,    # IN  (n_bands, ny, nx)
    const intp_t[::1] rows,               # IN  (n,)
    const intp_t[::1] cols,               # IN  (n,)
    const intp_t[::1] order,              # IN  (n,) visiting order (cache locality)
    const float64_t[:, ::1] kernel,       # IN  (kh, kw), odd sizes
    const intp_t[::1] kj0,                # IN  (kh,)
    const intp_t[::1] kj1,                # IN  (kh,)
    double total_weight,
    double min_valid_fraction,
    float64_t[:, ::1] out,                # OUT (n_bands, n)
    float64_t[:, ::1] valid_fraction,     # OUT (n_bands, n)
    int n_threads,
):
    """Footprint-weighted mean of every band at every centre (see the public wrapper)."""
    cdef intp_t n = rows.shape[0]
    cdef intp_t nb = raster.shape[0]
    cdef intp_t ny = raster.shape[1]
    cdef intp_t nx = raster.shape[2]
    cdef intp_t kh = kernel.shape[0]
    cdef intp_t kw = kernel.shape[1]
    cdef intp_t c, b, i
    cdef double acc, ws, frac
    if n == 0 or nb == 0:
        return
    with nogil:
        for c in prange(n, schedule="static", num_threads=n_threads):
            i = order[c]
            for b in range(nb):
                acc = 0.0
                ws = 0.0
                smengine_centre_wsum(&raster[b, 0, 0], ny, nx, rows[i], cols[i],
                                     &kernel[0, 0], kh, kw, &kj0[0], &kj1[0], &acc, &ws)
                frac = ws / total_weight
                valid_fraction[b, i] = frac
                if ws > 0.0 and frac >= min_valid_fraction:
                    out[b, i] = acc / ws
                else:
                    out[b, i] = NAN
