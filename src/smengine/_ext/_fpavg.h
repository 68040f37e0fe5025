/* Inner loop of footprint_average: NaN-aware weighted sum of one raster row segment.
 *
 * Branch-free so that the compiler can vectorise it; `omp simd reduction` lets it
 * reorder the two sums (and only those) without -ffast-math, which would break the
 * NaN test. On x86-64 GCC builds an AVX2 clone chosen at run time (target_clones),
 * so a portable build still uses wide vectors where the CPU has them.
 * The summation order is fixed for a given build and CPU: results are deterministic.
 */
#ifndef SMENGINE_FPAVG_H
#define SMENGINE_FPAVG_H
#include <stddef.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SMENGINE_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SMENGINE_CLONES
#endif

SMENGINE_CLONES
static void smengine_row_wsum(const float *restrict r, const double *restrict k, ptrdiff_t n,
                              double *acc, double *wsum)
{
    double a = 0.0, w = 0.0;
#if defined(_OPENMP)
#pragma omp simd reduction(+ : a, w)
#endif
    for (ptrdiff_t j = 0; j < n; ++j) {
        const double fv0 = (double)r[j]; /* unconditional loads: if-convertible */
        const double kv0 = k[j];
        const int valid = (fv0 == fv0);
        const double kv = valid ? kv0 : 0.0;
        const double fv = valid ? fv0 : 0.0;
        a += kv * fv;
        w += kv;
    }
    *acc += a;
    *wsum += w;
}
#endif
