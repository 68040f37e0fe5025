/* Regression-forest traversal with leaf-box reuse for coherent rows.
 *
 * Layout (built in smengine/model/_compiled.py): every tree with the left child of
 * internal node k at k + 1; a node is 12 bytes {thr, feat, right}; a leaf has feat = -1
 * and right = its slot in the float64 leaf-value array. Thresholds are scikit-learn's
 * float64 thresholds rounded *down* to float32, so for every float32 x
 *     x <= thr32   <=>   (double)x <= thr64
 * and the traversal is exactly scikit-learn's (Tree.apply on float32 input).
 *
 * The kernels see a forest through one smf_forest, filled and owned (with the arrays it
 * points into) by smengine._ext._forest.ForestTables.
 *
 * Kernels (smf_predict dispatches on `reuse`):
 *   3  the default: leaf-box table + 3-level blocks walked in interleaved lanes
 *      (smf_build_blocks, _forest_blocks.h; AVX-512, AVX2 or portable C, chosen at run time
 *      by smf_isa under a cap passed in from Python), optionally with reference rows
 *      `stride` rows back;
 *   1  smf_predict_block: one box per tree rebuilt during each walk (a reference);
 *   0  every row walks every tree from the root, node by node (the plain reference).
 *
 * Reuse: rows arrive in a coherent order (neighbouring sub-pixels, consecutive days).
 * For each tree the kernel keeps the box of the last row's leaf (lo[f] < x[f] <= hi[f]
 * for every feature: the intersection of the path's split conditions). A row inside the
 * box reaches the same leaf, answered by one vectorised comparison of 2 x n_features
 * floats instead of a dependent walk from the root. With reuse 3 and stride > 0 a tree the
 * row falls outside of is then tested against the leaves of the rows stride and (if
 * stride > 1) stride - 1 back (above and above-right in a raster given row by row) before
 * it is walked; the engine passes stride 0.
 *
 * Measurements and the alternatives tried (kept and dropped): bench/NOTES.md.
 *
 * Trees are visited in order for each row and their values summed in float64 in that
 * order, as RandomForestRegressor.predict(n_jobs=1) does, so the mean is bit-identical.
 * A summed ensemble (gradient boosting, smf_forest.average == 0) is the same sum divided by
 * 1.0: LightGBM's GBDT::PredictRaw sums in double in tree order from 0.0 too, so it is
 * bit-identical to Booster.predict. A hybrid model adds a linear base to that (smf_output).
 */
#ifndef SMENGINE_FOREST_H
#define SMENGINE_FOREST_H

/* functions used by _forest.pyx only (table builders, smf_isa): no unused-function warning in _engine.pyx */
#define SMF_UNUSED __attribute__((unused))
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define SMF_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define SMF_CLONES
#endif

typedef struct {
    float thr;     /* split: go left iff x[feat] <= thr */
    int32_t feat;  /* feature index, or -1 for a leaf */
    int32_t right; /* right child (internal) or leaf-value slot (leaf) */
} smf_node;

/* A 3-level block of one tree (64 bytes, one cache line): 7 split nodes breadth-first
 * (node p's children are 2p + 1 and 2p + 2; a leaf above the bottom level is repeated
 * as a node whose both exits lead to it) and its 8 exits. Exit k is child block
 * child + code[k] if code[k] < 128, else leaf leaf + code[k] - 128 (the leaf slot of
 * exit leaf j is bslot[j] from smf_build_blocks). The child blocks of a block are
 * contiguous (breadth-first per tree). */
typedef struct {
    float thr[8];     /* thresholds; [7] unused */
    uint8_t feat[8];  /* feature indices (< 256); [7] unused */
    uint8_t code[8];  /* exits */
    int32_t child, leaf;
    int32_t pad_[2];
} smf_blk;

typedef struct {
    const smf_node *nodes; /* all trees, preorder */
    const double *leaf;    /* leaf values by slot */
    const int64_t *root;   /* first node of each tree */
    ptrdiff_t n_trees, n_features;
    /* Averaged (a random forest: the prediction is the tree sum / n_trees) or summed (gradient
     * boosting: the tree sum itself). divisor is n_trees or 1.0: every kernel divides the tree
     * sum by it (x / 1.0 == x exactly), and spreads over trees are NaN when !average. */
    int average;
    double divisor;
    /* An optional linear base (a hybrid model: a linear model plus trees fitted on its residuals,
     * smengine.model.HybridRegressor): NULL, or n_features float64 coefficients and an intercept.
     * The prediction of a row is then its base plus the tree sum / divisor (smf_output). */
    const double *lin_coef;
    double lin_intercept;
    /* reuse == 3 only (ForestTables with block tables). Leaves are numbered in block-exit order
     * (exit code k >= 128 of block b is leaf b.leaf + k - 128), so that the walk's result
     * indexes the boxes and values directly and siblings sit side by side: */
    const float *boxes;    /* (n_slots + 1, 2 * nfp) leaf boxes, the last one empty */
    ptrdiff_t n_slots, nfp;
    const smf_blk *blk;    /* block layout */
    const double *bleaf;   /* (n_slots,) leaf values */
    const int32_t *broot;  /* first block of each tree */
    int isa;               /* 0 portable C, 1 AVX2, 2 AVX-512 (smf_isa of the cap) */
} smf_forest;

/* Counters for the benchmark: walk steps (split nodes for reuse 0 and 1, 3-level blocks for
 * reuse 3), row-trees answered by the box test alone, walks from the root; summed over
 * trees and rows. */
typedef struct {
    int64_t visits, box_hits, walks;
} smf_stats;

/* x outside (lo, hi]: branch-free so that it vectorises (one compare per bound). */
static inline int smf_outside(const float *restrict x, const float *restrict lo,
                              const float *restrict hi, ptrdiff_t nf)
{
    int out = 0;
    for (ptrdiff_t f = 0; f < nf; ++f)
        out |= (x[f] <= lo[f]) | (x[f] > hi[f]);
    return out;
}

static inline void smf_add(double v, ptrdiff_t i, int first, double *restrict sum,
                           double *restrict shift, double *restrict s1, double *restrict s2)
{
    sum[i] += v;
    if (s1 != NULL) {
        if (first)
            shift[i] = v;
        const double dv = v - shift[i];
        s1[i] += dv;
        s2[i] += dv * dv;
    }
}

/* Predict rows [0, n) of X (row stride ld floats) for which valid[i] != 0.
 * sum[i] += value of every tree, in tree order (caller zeroes sum).
 * If s1 != NULL: shift[i] = tree 0's value, s1[i] = sum of (v - shift), s2[i] = sum of
 * (v - shift)^2, for the spread over trees. reuse = 0 walks every row from the root.
 * Returns 0, or -1 if scratch memory could not be allocated. */
SMF_CLONES
static int smf_predict_block(const smf_forest *F, const float *restrict X, ptrdiff_t n,
                             ptrdiff_t ld, const uint8_t *restrict valid, int reuse,
                             double *restrict sum, double *restrict shift,
                             double *restrict s1, double *restrict s2, smf_stats *stats)
{
    const ptrdiff_t nf = F->n_features;
    const smf_node *restrict nodes = F->nodes;
    const double *restrict leafv = F->leaf;
    int64_t visits = 0, hits = 0, walks = 0;

    if (!reuse) {
        for (ptrdiff_t t = 0; t < F->n_trees; ++t) {
            const int32_t root = (int32_t)F->root[t];
            for (ptrdiff_t i = 0; i < n; ++i) {
                if (!valid[i])
                    continue;
                const float *restrict x = X + i * ld;
                int32_t node = root;
                while (nodes[node].feat >= 0) {
                    node = x[nodes[node].feat] <= nodes[node].thr ? node + 1 : nodes[node].right;
                    ++visits;
                }
                ++walks;
                smf_add(leafv[nodes[node].right], i, t == 0, sum, shift, s1, s2);
            }
        }
        if (stats != NULL) {
            stats->visits += visits;
            stats->walks += walks;
        }
        return 0;
    }

    float *bound = (float *)malloc((size_t)(2 * nf) * sizeof(float)); /* lo = bound, hi = bound + nf */
    if (bound == NULL)
        return -1;
    for (ptrdiff_t t = 0; t < F->n_trees; ++t) {
        const int first = t == 0;
        const int32_t root = (int32_t)F->root[t];
        int have = 0;
        double v = 0.0;
        for (ptrdiff_t i = 0; i < n; ++i) {
            if (!valid[i])
                continue;
            const float *restrict x = X + i * ld;
            if (have && !smf_outside(x, bound, bound + nf, nf)) {
                ++hits;
                smf_add(v, i, first, sum, shift, s1, s2);
                continue;
            }
            for (ptrdiff_t f = 0; f < nf; ++f) {
                bound[f] = -INFINITY;
                bound[nf + f] = INFINITY;
            }
            int32_t node = root;
            int32_t f = nodes[node].feat;
            while (f >= 0) {
                const float th = nodes[node].thr;
                if (x[f] <= th) {
                    if (th < bound[nf + f])
                        bound[nf + f] = th;
                    node = node + 1;
                } else {
                    if (th > bound[f])
                        bound[f] = th;
                    node = nodes[node].right;
                }
                f = nodes[node].feat;
                ++visits;
            }
            ++walks;
            have = 1;
            v = leafv[nodes[node].right];
            smf_add(v, i, first, sum, shift, s1, s2);
        }
    }
    free(bound);
    if (stats != NULL) {
        stats->visits += visits;
        stats->box_hits += hits;
        stats->walks += walks;
    }
    return 0;
}

/* ---- the leaf-box table ----
 *
 * The box of every leaf (the intersection of its path's split conditions), computed once
 * per forest: out + slot * 2 * nfp holds lo then hi (features padded to nfp with
 * (-inf, inf]). CompiledForest.blocks() reorders it into block-exit order for the kernel. */
static void smf_boxes_rec(const smf_node *nodes, int32_t node, float *lo, float *hi, ptrdiff_t nfp, float *out)
{
    const int32_t f = nodes[node].feat;
    if (f < 0) {
        float *b = out + (ptrdiff_t)nodes[node].right * 2 * nfp;
        for (ptrdiff_t g = 0; g < nfp; ++g) {
            b[g] = lo[g];
            b[nfp + g] = hi[g];
        }
        return;
    }
    const float th = nodes[node].thr;
    const float h = hi[f], l = lo[f];
    hi[f] = th < h ? th : h;
    smf_boxes_rec(nodes, node + 1, lo, hi, nfp, out);
    hi[f] = h;
    lo[f] = th > l ? th : l;
    smf_boxes_rec(nodes, nodes[node].right, lo, hi, nfp, out);
    lo[f] = l;
}

/* out: (n_slots + 1, 2 * nfp) boxes of every leaf slot; the last one is empty (never hit). */
SMF_UNUSED static void smf_leaf_boxes(const smf_forest *F, ptrdiff_t n_slots, ptrdiff_t nfp, float *out)
{
    float lo[256], hi[256];
    for (ptrdiff_t g = 0; g < nfp; ++g) {
        lo[g] = -INFINITY;
        hi[g] = INFINITY;
    }
    for (ptrdiff_t t = 0; t < F->n_trees; ++t)
        smf_boxes_rec(F->nodes, (int32_t)F->root[t], lo, hi, nfp, out);
    for (ptrdiff_t g = 0; g < nfp; ++g) {
        out[n_slots * 2 * nfp + g] = INFINITY;
        out[n_slots * 2 * nfp + nfp + g] = INFINITY;
    }
}

/* ---- 3-level blocks walked in interleaved lanes (reuse == 3, the default) ----
 *
 * smf_build_blocks turns every tree into smf_blk records. One step of a walk decides
 * three levels at once: the row's 7 feature values are gathered with one permute, compared
 * with the 7 thresholds in one vector compare, and the 7-bit mask picks the exit through
 * smf_exit_lut. A walk takes ~5 dependent steps instead of ~15, each on one cache line.
 * Exactness does not change: every real node compares x[feat] <= thr as before, and a
 * repeated leaf's exits all lead to it whatever its (meaningless) comparison says.
 *
 * smf_exit_lut[m] is the exit reached with compare mask m (bit p set: node p's test
 * x[feat[p]] <= thr[p] holds): start at node p = 0 and three times go to 2p + 1 if bit p
 * of m is set, else to 2p + 2; that ends at node 7 + k, and the entry is k.
 * (tests/test_kernel_object.py rebuilds the table from this rule.) */
static const uint8_t smf_exit_lut[128] = {
    7,3,7,1,5,3,5,1,7,3,7,0,5,3,5,0,7,2,7,1,5,2,5,1,7,2,7,0,5,2,5,0,7,3,7,1,4,3,4,1,7,3,7,0,4,3,4,0,
    7,2,7,1,4,2,4,1,7,2,7,0,4,2,4,0,6,3,6,1,5,3,5,1,6,3,6,0,5,3,5,0,6,2,6,1,5,2,5,1,6,2,6,0,5,2,5,0,
    6,3,6,1,4,3,4,1,6,3,6,0,4,3,4,0,6,2,6,1,4,2,4,1,6,2,6,0,4,2,4,0};

typedef char smf_blk_is_64_bytes[sizeof(smf_blk) == 64 ? 1 : -1];

/* Build the blocks of every tree, breadth-first per tree. Capacity: blk and todo hold
 * n_nodes + n_trees records, bslot n_leaves. Returns the number of blocks; *n_bslot is set
 * to the number of exit leaf entries (every leaf once). */
SMF_UNUSED static ptrdiff_t smf_build_blocks(const smf_forest *F, smf_blk *blk, int32_t *bslot, int32_t *broot,
                                  int32_t *todo, ptrdiff_t *n_bslot)
{
    const smf_node *nodes = F->nodes;
    int32_t nb = 0, nls = 0;
    for (ptrdiff_t t = 0; t < F->n_trees; ++t) {
        broot[t] = nb;
        todo[nb++] = (int32_t)F->root[t];
        for (int32_t id = broot[t]; id < nb; ++id) {
            int32_t nd[7];
            nd[0] = todo[id];
            for (int p = 0; p < 3; ++p) {
                const int32_t q = nd[p];
                nd[2 * p + 1] = nodes[q].feat >= 0 ? q + 1 : q;
                nd[2 * p + 2] = nodes[q].feat >= 0 ? nodes[q].right : q;
            }
            smf_blk *b = blk + id;
            memset(b, 0, sizeof *b);
            for (int p = 0; p < 7; ++p) {
                const int32_t q = nd[p];
                b->thr[p] = nodes[q].feat >= 0 ? nodes[q].thr : 0.0f;
                b->feat[p] = nodes[q].feat >= 0 ? (uint8_t)nodes[q].feat : 0;
            }
            b->child = nb;
            b->leaf = nls;
            int nc = 0, nl = 0;
            int32_t last = -1;
            for (int k = 0; k < 8; ++k) {
                const int32_t q = nd[3 + k / 2];
                const int32_t c = nodes[q].feat < 0 ? q : (k & 1 ? nodes[q].right : q + 1);
                if (nodes[c].feat >= 0) {
                    todo[nb++] = c;
                    b->code[k] = (uint8_t)nc++;
                } else {
                    if (c != last) {
                        bslot[nls++] = nodes[c].right;
                        ++nl;
                        last = c;
                    }
                    b->code[k] = (uint8_t)(128 + nl - 1);
                }
            }
        }
    }
    *n_bslot = nls;
    return nb;
}

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define SMF_X86 1
#include <immintrin.h>
#else
#define SMF_X86 0
#endif

/* The instruction set of the block kernel: the best this CPU has (0 portable C, 1 AVX2,
 * 2 AVX-512 F + VL), at most cap (smengine._threads.forest_isa_cap() parses the environment
 * variable SMENGINE_FOREST_ISA; results are identical on every path). */
SMF_UNUSED static int smf_isa(int cap)
{
    int best = 0;
#if SMF_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2"))
        best = 1;
    if (best && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
        best = 2;
#endif
    return cap < best ? (cap > 0 ? cap : 0) : best;
}

#define SMF_ISA 0
#include "_forest_blocks.h"
#undef SMF_ISA
#if SMF_X86
#define SMF_ISA 1
#include "_forest_blocks.h"
#undef SMF_ISA
#define SMF_ISA 2
#include "_forest_blocks.h"
#undef SMF_ISA
#endif

/* The entry point of both Cython kernels. reuse: 0 every row walks every tree from the root,
 * 1 the single-box kernel (smf_predict_block), 3 the leaf-box table with block walks in lanes
 * (F->boxes, F->blk, F->bleaf, F->broot set; F->isa from smf_isa). stride (reuse 3 only; 0:
 * none): a tree the row falls outside the previous row's leaf of is also tested against the
 * leaves of rows i - stride and (stride > 1) i - stride + 1 before it is walked. Returns 0,
 * or -1 if scratch memory could not be allocated. */
static int smf_predict(const smf_forest *F, int reuse, const float *X, ptrdiff_t n, ptrdiff_t ld,
                       ptrdiff_t stride, const uint8_t *valid, double *sum, double *shift, double *s1, double *s2,
                       smf_stats *stats)
{
    if (reuse == 3) {
#if SMF_X86
        if (F->isa == 2 && F->nfp % 16 == 0)
            return smf_predict_blocks_2(F, X, n, ld, stride, valid, sum, shift, s1, s2, stats);
        if (F->isa >= 1 && F->nfp % 8 == 0)
            return smf_predict_blocks_1(F, X, n, ld, stride, valid, sum, shift, s1, s2, stats);
#endif
        return smf_predict_blocks_0(F, X, n, ld, stride, valid, sum, shift, s1, s2, stats);
    }
    return smf_predict_block(F, X, n, ld, valid, reuse, sum, shift, s1, s2, stats);
}

/* The prediction of one valid row x (its first n_features floats) from its tree sum: sum / divisor,
 * plus the linear base when the forest has one. The base is lin_intercept + lin_coef[0] x[0] +
 * lin_coef[1] x[1] + ..., each product and sum rounded to float64 left to right from the float32
 * features (no FMA: the extensions build with -ffp-contract=off, and no reassociation), as
 * HybridRegressor's NumPy loop computes it, then + sum / divisor: bit-identical to
 * HybridRegressor.predict. Without a base it is sum / divisor, as it always was. */
static inline double smf_output(const smf_forest *F, const float *x, double sum)
{
    const double t = sum / F->divisor;
    if (F->lin_coef == NULL)
        return t;
    double b = F->lin_intercept;
    for (ptrdiff_t j = 0; j < F->n_features; ++j)
        b = b + F->lin_coef[j] * (double)x[j];
    return b + t;
}

/* Population SD over T trees from the shifted sums s1 = sum(v - shift), s2 = sum((v - shift)^2).
 * Meaningful for an averaged forest only: the kernels report NaN for a summed ensemble. */
static inline double smf_sd(double s1, double s2, ptrdiff_t T)
{
    const double var = (s2 - s1 * s1 / (double)T) / (double)T;
    return var > 0 ? sqrt(var) : 0.0;
}

#endif /* SMENGINE_FOREST_H */
