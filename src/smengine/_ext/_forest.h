/* Regression-forest traversal with leaf-box reuse for coherent rows.
 *
 * Layout (built in smengine/model/_compiled.py): every tree with the left child of
 * internal node k at k + 1; a node is 12 bytes {thr, feat, right}; a leaf has feat = -1
 * and right = its slot in the float64 leaf-value array. Thresholds are scikit-learn's
 * float64 thresholds rounded *down* to float32, so for every float32 x
 *     x <= thr32   <=>   (double)x <= thr64
 * and the traversal is exactly scikit-learn's (Tree.apply on float32 input).
 *
 * Reuse: rows arrive in a coherent order (neighbouring sub-pixels, consecutive days).
 * For each tree the kernel keeps the box of the last row's leaf (lo[f] < x[f] <= hi[f]
 * for every feature: the intersection of the path's split conditions). A row inside the
 * box reaches the same leaf, answered by one vectorised comparison of 2 x n_features
 * floats instead of a dependent walk from the root. A row outside it walks from the root
 * and records the new leaf's box on the way.
 *
 * Measured (bench/bench_forest.py): a box hit costs ~2 ns per row and tree; a miss costs
 * a full walk whose changed decisions the branch predictor cannot know (~60 ns, as for
 * shuffled rows). Replaying the cached path to the first changed split instead of
 * starting at the root, a branch-free descent, keeping 2-4 boxes per tree, walking 8
 * interleaved row runs per tree, and walking the missed trees of one row in 8 branch-free
 * lockstep lanes (a bare lockstep step costs ~1.45 ns, but with box upkeep and lane
 * refills a row-tree cost 35 ns against 19 ns here) were all tried and were no faster
 * (within 5 %), or slower.
 *
 * Trees are visited in order for each row and their values summed in float64 in that
 * order, as RandomForestRegressor.predict(n_jobs=1) does, so the mean is bit-identical.
 */
#ifndef SMENGINE_FOREST_H
#define SMENGINE_FOREST_H
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

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

typedef struct {
    const smf_node *nodes; /* all trees, preorder */
    const double *leaf;    /* leaf values by slot */
    const int64_t *root;   /* first node of each tree */
    ptrdiff_t n_trees, n_features;
} smf_forest;

/* Counters for the benchmark: node visits (split decisions made by walking) and rows
 * answered by the box test alone, walks from the root; summed over trees and rows. */
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
                             ptrdiff_t ld, const unsigned char *restrict valid, int reuse,
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

#endif /* SMENGINE_FOREST_H */
