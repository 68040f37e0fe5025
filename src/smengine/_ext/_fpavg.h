/* Inner loops of footprint_average: NaN-aware weighted sum of a raster under a kernel.
 *
 * The row loop is branch-free so that the compiler vectorises it; `omp simd reduction`
 * lets it reorder the two sums (and only those) without -ffast-math, which would break
 * the NaN test (setup.py adds -fno-trapping-math, which if-conversion needs). On x86-64
 * GCC builds an AVX2 clone chosen at run time (target_clones), so a portable build still
 * uses wide vectors where the CPU has them. The summation order is fixed for a given
 * build and CPU, so results are deterministic and independent of the thread count.
 */
#ifndef SMENGINE_FPAVG_H
#define SMENGINE_FPAVG_H
#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SMENGINE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SMENGINE_CLONES
#endif

/* Σ k·f and Σ k over the valid (non-NaN) cells of the kernel centred on (row, col).
 * band: (ny, nx) C-contiguous; kernel: (kh, kw) C-contiguous with odd sizes;
 * kj0/kj1: first / one-past-last non-zero column of each kernel row. */
SMENGINE_CLONES
static void smengine_centre_wsum(const float *restrict band, ptrdiff_t ny, ptrdiff_t nx,
                                 ptrdiff_t row, ptrdiff_t col,
                                 const double *restrict kernel, ptrdiff_t kh, ptrdiff_t kw,
                                 const ptrdiff_t *restrict kj0, const ptrdiff_t *restrict kj1,
                                 double *acc_out, double *wsum_out)
{
    const ptrdiff_t hy = kh / 2, x0 = col - kw / 2; /* raster column of kernel column 0 */
    double acc = 0.0, wsum = 0.0;
    for (ptrdiff_t i = 0; i < kh; ++i) {
        const ptrdiff_t y = row + i - hy;
        if (y < 0 || y >= ny)
            continue;
        ptrdiff_t j0 = kj0[i] > -x0 ? kj0[i] : -x0;
        ptrdiff_t j1 = kj1[i] < nx - x0 ? kj1[i] : nx - x0;
        const float *r = band + y * nx + x0;
        const double *k = kernel + i * kw;
        double a = 0.0, w = 0.0;
#if defined(_OPENMP)
#pragma omp simd reduction(+ : a, w)
#endif
        for (ptrdiff_t j = j0; j < j1; ++j) {
            const double fv0 = (double)r[j]; /* unconditional loads: if-convertible */
            const double kv0 = k[j];
            const int valid = (fv0 == fv0);
            const double kv = valid ? kv0 : 0.0;
            const double fv = valid ? fv0 : 0.0;
            a += kv * fv;
            w += kv;
        }
        acc += a;
        wsum += w;
    }
    *acc_out = acc;
    *wsum_out = wsum;
}
#endif
