/* The block kernel smf_predict_blocks_<SMF_ISA>, included by _forest.h once per
 * instruction set (no include guard on purpose): SMF_ISA 0 portable C, 1 AVX2, 2 AVX-512
 * (F + VL). Only three pieces differ: loading the row, the leaf-box test and the 7-bit
 * compare mask of a block.
 *
 * Each tree keeps the leaf slot of the previous row. The row is tested against all those
 * leaf boxes (smf_tests; with stride > 1, the trees it falls outside of also against the
 * leaves of rows i - stride and i - stride + 1, the row above and above-right in a raster,
 * kept in a ring of stride x n_trees slots); the rest are walked from their root block in
 * SMF_BLANES interleaved lanes, one block per lane per round. The lanes are independent, so
 * their memory latencies overlap; the next block and the new leaf's box are prefetched.
 * Trees are summed in order (during the next row's box tests), so the mean is bit-identical
 * to scikit-learn's. */
#ifndef SMF_BLANES
#define SMF_BLANES 16
#endif

#if SMF_ISA == 2
#define SMF_NAME(x) x##_2
#define SMF_TARGET __attribute__((target("avx2,avx512f,avx512vl,bmi2")))
#elif SMF_ISA == 1
#define SMF_NAME(x) x##_1
#define SMF_TARGET __attribute__((target("avx2,bmi2")))
#else
#define SMF_NAME(x) x##_0
#define SMF_TARGET
#endif

/* 1 if x (nfp padded floats, 64-byte aligned) is outside the box lo = b, hi = b + nfp. */
SMF_TARGET static inline int SMF_NAME(smf_out)(const float *restrict xp, const float *restrict b, ptrdiff_t nfp)
{
#if SMF_ISA == 2
    __mmask16 k = 0;
    for (ptrdiff_t g = 0; g < nfp; g += 16) {
        const __m512 x = _mm512_load_ps(xp + g);
        k |= _mm512_cmp_ps_mask(x, _mm512_loadu_ps(b + g), _CMP_LE_OQ)
             | _mm512_cmp_ps_mask(x, _mm512_loadu_ps(b + nfp + g), _CMP_GT_OQ);
    }
    return k != 0;
#elif SMF_ISA == 1
    __m256 o = _mm256_setzero_ps();
    for (ptrdiff_t g = 0; g < nfp; g += 8) {
        const __m256 x = _mm256_load_ps(xp + g);
        o = _mm256_or_ps(o, _mm256_or_ps(_mm256_cmp_ps(x, _mm256_loadu_ps(b + g), _CMP_LE_OQ),
                                         _mm256_cmp_ps(x, _mm256_loadu_ps(b + nfp + g), _CMP_GT_OQ)));
    }
    return _mm256_movemask_ps(o) != 0;
#else
    return smf_outside(xp, b, b + nfp, nfp);
#endif
}

/* The leaf-box tests of one row, always inlined and specialised on n16 (16 padded features:
 * the row stays in registers and a box is 128 bytes) and spread. The row is tested against
 * the leaf each tree kept from the previous row; trees it falls outside of are tested against
 * the leaves of rows i - stride (`above`) and i - stride + 1 (`right`) when given, and a hit
 * replaces the kept leaf. Returns the number of trees still missed, listed in miss[].
 * pend != NULL: cur still holds the leaves of the previous valid row, whose sums (tree order,
 * the dependent additions of the mean, and with spread the shifted sums) are taken in the same
 * loop, beside the independent box tests, and stored in pend's arrays at row pend->i. */
typedef struct {
    double *sum, *shift, *s1, *s2;
    ptrdiff_t i;
} SMF_NAME(smf_pend);

SMF_TARGET static inline __attribute__((always_inline)) ptrdiff_t
SMF_NAME(smf_tests)(const float *restrict xp, ptrdiff_t nfp, const int n16, const int spread,
                    const float *restrict boxes, const double *restrict leafv, int32_t *restrict cur,
                    int32_t *restrict miss, ptrdiff_t T, const int32_t *restrict above,
                    const int32_t *restrict right, const SMF_NAME(smf_pend) *pend)
{
#if SMF_ISA == 2
    const __m512 x0 = _mm512_load_ps(xp);
#define SMF_OUT(b)                                                                                   \
    (n16 ? (_mm512_cmp_ps_mask(x0, _mm512_loadu_ps(b), _CMP_LE_OQ)                                   \
            | _mm512_cmp_ps_mask(x0, _mm512_loadu_ps((b) + 16), _CMP_GT_OQ)) != 0                    \
         : SMF_NAME(smf_out)(xp, (b), nfp))
#elif SMF_ISA == 1
    const __m256 x0 = _mm256_load_ps(xp), x1 = _mm256_load_ps(xp + 8);
#define SMF_OUT(b)                                                                                   \
    (n16 ? _mm256_movemask_ps(_mm256_or_ps(                                                          \
               _mm256_or_ps(_mm256_cmp_ps(x0, _mm256_loadu_ps(b), _CMP_LE_OQ),                       \
                            _mm256_cmp_ps(x1, _mm256_loadu_ps((b) + 8), _CMP_LE_OQ)),                \
               _mm256_or_ps(_mm256_cmp_ps(x0, _mm256_loadu_ps((b) + 16), _CMP_GT_OQ),                \
                            _mm256_cmp_ps(x1, _mm256_loadu_ps((b) + 24), _CMP_GT_OQ)))) != 0         \
         : SMF_NAME(smf_out)(xp, (b), nfp))
#else
#define SMF_OUT(b) SMF_NAME(smf_out)(xp, (b), nfp)
#endif
#define SMF_BOX(c) (boxes + (n16 ? (ptrdiff_t)(c) << 5 : (ptrdiff_t)(c) * 2 * nfp))
    ptrdiff_t nm = 0;
    if (pend != NULL) {
        const ptrdiff_t i = pend->i;
        const double sh = spread ? leafv[cur[0]] : 0.0;
        double acc = pend->sum[i], a1 = spread ? pend->s1[i] : 0.0, a2 = spread ? pend->s2[i] : 0.0;
        for (ptrdiff_t t = 0; t < T; ++t) {
            const int32_t c = cur[t];
            miss[nm] = (int32_t)t;
            nm += SMF_OUT(SMF_BOX(c));
            const double v = leafv[c];
            acc += v;
            if (spread) {
                const double dv = v - sh;
                a1 += dv;
                a2 += dv * dv;
            }
        }
        pend->sum[i] = acc;
        if (spread) {
            pend->shift[i] = sh;
            pend->s1[i] = a1;
            pend->s2[i] = a2;
        }
    } else {
        for (ptrdiff_t t = 0; t < T; ++t) {
            miss[nm] = (int32_t)t;
            nm += SMF_OUT(SMF_BOX(cur[t]));
        }
    }
    for (int r = 0; r < 2; ++r) {
        const int32_t *restrict ref = r ? right : above;
        if (ref == NULL)
            continue;
        ptrdiff_t nm2 = 0;
        for (ptrdiff_t k = 0; k < nm; ++k) {
            const int32_t t = miss[k], c = ref[t];
            const int o = SMF_OUT(SMF_BOX(c));
            cur[t] = c ^ ((cur[t] ^ c) & -(int32_t)o); /* branch-free: the outcome is a coin toss */
            miss[nm2] = t;
            nm2 += o;
        }
        nm = nm2;
    }
    return nm;
#undef SMF_OUT
#undef SMF_BOX
}

SMF_TARGET static int SMF_NAME(smf_predict_blocks)(const smf_forest *F, const float *restrict X, ptrdiff_t n,
                                                   ptrdiff_t ld, ptrdiff_t stride,
                                                   const uint8_t *restrict valid,
                                                   double *restrict sum, double *restrict shift,
                                                   double *restrict s1, double *restrict s2, smf_stats *stats)
{
    const ptrdiff_t nf = F->n_features, T = F->n_trees, nfp = F->nfp;
    const smf_blk *restrict blk = F->blk;
    const int32_t *restrict broot = F->broot;
    const float *restrict boxes = F->boxes;
    const double *restrict leafv = F->bleaf; /* by exit order, as the boxes */
    int64_t visits = 0, hits = 0, walks = 0;
    if (stride < 1 || stride >= n)
        stride = 0;
    int32_t *cur = (int32_t *)malloc((size_t)((2 + stride) * T) * sizeof(int32_t));
    float *xp = (float *)aligned_alloc(64, (size_t)((nfp + 15) / 16 * 16) * sizeof(float));
    if (cur == NULL || xp == NULL) {
        free(cur);
        free(xp);
        return -1;
    }
    int32_t *miss = cur + T, *ring = cur + 2 * T;
    for (ptrdiff_t t = 0; t < T; ++t)
        cur[t] = (int32_t)F->n_slots; /* the empty box: the first row walks every tree */
    for (ptrdiff_t t = 0; t < stride * T; ++t)
        ring[t] = (int32_t)F->n_slots;
    for (ptrdiff_t g = 0; g < nfp; ++g)
        xp[g] = 0.0f;
#if SMF_ISA == 2
    const int wide = nfp <= 32; /* 32 features fit two registers: a permute gathers them */
#elif SMF_ISA == 1
    const int wide = nfp <= 16;
#endif
    SMF_NAME(smf_pend) pend = {sum, shift, s1, s2, -1};
    const int spread = s1 != NULL;
    for (ptrdiff_t i = 0; i < n; ++i) {
        if (!valid[i])
            continue;
        const float *restrict x = X + i * ld;
        for (ptrdiff_t g = 0; g < nf; ++g)
            xp[g] = x[g];
        /* Ring slot i % stride holds the leaves of row i - stride (the row above in a raster
         * given row by row) and receives row i's after the walks; slot (i + 1) % stride holds
         * row i - stride + 1 (above and to the right) until then. */
        int32_t *restrict above = stride ? ring + (i % stride) * T : NULL;
        const int32_t *restrict right = stride > 1 ? ring + ((i + 1) % stride) * T : NULL;
        const SMF_NAME(smf_pend) *pp = pend.i >= 0 ? &pend : NULL;
        ptrdiff_t nm;
        if (nfp == 16)
            nm = spread ? SMF_NAME(smf_tests)(xp, 16, 1, 1, boxes, leafv, cur, miss, T, above, right, pp)
                        : SMF_NAME(smf_tests)(xp, 16, 1, 0, boxes, leafv, cur, miss, T, above, right, pp);
        else
            nm = spread ? SMF_NAME(smf_tests)(xp, nfp, 0, 1, boxes, leafv, cur, miss, T, above, right, pp)
                        : SMF_NAME(smf_tests)(xp, nfp, 0, 0, boxes, leafv, cur, miss, T, above, right, pp);
        hits += T - nm;
        walks += nm;
#if SMF_ISA == 2
        const __m512 xa = _mm512_load_ps(xp), xb = nfp > 16 ? _mm512_load_ps(xp + 16) : _mm512_setzero_ps();
#elif SMF_ISA == 1
        const __m256 xa = _mm256_load_ps(xp), xb = nfp > 8 ? _mm256_load_ps(xp + 8) : _mm256_setzero_ps();
#endif
        int32_t ln[SMF_BLANES], lt[SMF_BLANES];
        ptrdiff_t next = 0, act = 0;
        while (act < SMF_BLANES && next < nm) {
            lt[act] = miss[next];
            ln[act] = broot[miss[next]];
            ++next;
            ++act;
        }
        while (act > 0) {
            for (ptrdiff_t l = 0; l < act; ++l) {
                const smf_blk *restrict b = blk + ln[l];
#if SMF_ISA == 2
                const __m256i fi = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)b->feat));
                const __m256 xv = wide ? _mm512_castps512_ps256(_mm512_permutex2var_ps(xa, _mm512_castsi256_si512(fi), xb))
                                       : _mm256_i32gather_ps(xp, fi, 4);
                const unsigned m = _mm256_cmp_ps_mask(xv, _mm256_loadu_ps(b->thr), _CMP_LE_OQ);
#elif SMF_ISA == 1
                const __m256i fi = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)b->feat));
                __m256 xv;
                if (wide) {
                    const __m256 lo8 = _mm256_permutevar8x32_ps(xa, fi), hi8 = _mm256_permutevar8x32_ps(xb, fi);
                    xv = _mm256_blendv_ps(lo8, hi8, _mm256_castsi256_ps(_mm256_slli_epi32(fi, 28)));
                } else {
                    xv = _mm256_i32gather_ps(xp, fi, 4);
                }
                const unsigned m = (unsigned)_mm256_movemask_ps(_mm256_cmp_ps(xv, _mm256_loadu_ps(b->thr), _CMP_LE_OQ));
#else
                unsigned m = 0;
                for (int p = 0; p < 7; ++p)
                    m |= (unsigned)(xp[b->feat[p]] <= b->thr[p]) << p;
#endif
                const unsigned c = b->code[smf_exit_lut[m & 127u]];
                ++visits;
                if (c & 128u) {
                    const int32_t sl = b->leaf + (int32_t)(c & 127u);
                    cur[lt[l]] = sl;
                    __builtin_prefetch(boxes + (ptrdiff_t)sl * 2 * nfp);
                    __builtin_prefetch(boxes + (ptrdiff_t)sl * 2 * nfp + nfp);
                    if (next < nm) {
                        lt[l] = miss[next];
                        ln[l] = broot[miss[next]];
                        ++next;
                    } else {
                        --act;
                        lt[l] = lt[act];
                        ln[l] = ln[act];
                        --l;
                    }
                } else {
                    ln[l] = b->child + (int32_t)c;
                    __builtin_prefetch(blk + ln[l]);
                }
            }
        }
        if (above != NULL)
            memcpy(above, cur, (size_t)T * sizeof(int32_t));
        pend.i = i;
    }
    if (pend.i >= 0) /* the last row's sums, by the same loop (its box tests are not used) */
        SMF_NAME(smf_tests)(xp, nfp, nfp == 16, spread, boxes, leafv, cur, miss, T, NULL, NULL, &pend);
    free(cur);
    free(xp);
    if (stats != NULL) {
        stats->visits += visits;
        stats->box_hits += hits;
        stats->walks += walks;
    }
    return 0;
}

#undef SMF_NAME
#undef SMF_TARGET
