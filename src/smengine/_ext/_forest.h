/* Regression-forest traversal with leaf-box reuse for coherent rows.
 *
 * Layout (built in smengine/model/_compiled.py): every tree with the left child of
 * internal node k at k + 1; a node is 12 bytes {thr, feat, right}; a leaf has feat = -1
 * and right = its slot in the float64 leaf-value array. Thresholds are scikit-learn's
 * float64 thresholds rounded *down* to float32, so for every float32 x
 *     x <= thr32   <=>   (double)x <= thr64
 * and the traversal is exactly scikit-learn's (Tree.apply on float32 input).
 *
 * Two reuse kernels share the layout: smf_predict_lanes (default, below) and
 * smf_predict_block, described here.
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

/* ---- reuse by a table of leaf boxes, misses walked in interleaved lanes (the default) ----
 *
 * The box of every leaf (the intersection of its path's split conditions) is computed
 * once (smf_leaf_boxes). Rows are taken one at a time: each tree keeps the leaf slot of
 * the previous row; the row is tested against all those boxes without a branch, and the
 * trees it falls outside of are walked from the root in SMF_LANES interleaved lanes, one
 * level per lane per round, with a branch-free step. The lanes are independent, so their
 * mispredicted branches and memory latencies overlap instead of adding up, and no box is
 * rebuilt during a walk. Measured on issue 5's forest (coherent rows): 13.3 ns per
 * row-tree against 20 ns for smf_predict_block and 23 ns for scikit-learn. Trees are
 * summed in order after the walks, so the mean stays bit-identical. */
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
static void smf_leaf_boxes(const smf_forest *F, ptrdiff_t n_slots, ptrdiff_t nfp, float *out)
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

#define SMF_LANES 16
SMF_CLONES
static int smf_predict_lanes(const smf_forest *F, const float *restrict boxes, ptrdiff_t n_slots, ptrdiff_t nfp,
                             const float *restrict X, ptrdiff_t n, ptrdiff_t ld,
                             const unsigned char *restrict valid, double *restrict sum, double *restrict shift,
                             double *restrict s1, double *restrict s2, smf_stats *stats)
{
    const ptrdiff_t nf = F->n_features, T = F->n_trees;
    const smf_node *restrict nodes = F->nodes;
    const double *restrict leafv = F->leaf;
    int64_t visits = 0, hits = 0, walks = 0;
    int32_t *cur = (int32_t *)malloc((size_t)T * sizeof(int32_t));
    int32_t *miss = (int32_t *)malloc((size_t)T * sizeof(int32_t));
    float xp[256]; /* nfp <= 256: checked by the caller */
    if (cur == NULL || miss == NULL) {
        free(cur);
        free(miss);
        return -1;
    }
    for (ptrdiff_t t = 0; t < T; ++t)
        cur[t] = (int32_t)n_slots; /* the empty box */
    for (ptrdiff_t g = 0; g < nfp; ++g)
        xp[g] = 0.0f;
    for (ptrdiff_t i = 0; i < n; ++i) {
        if (!valid[i])
            continue;
        const float *restrict x = X + i * ld;
        for (ptrdiff_t g = 0; g < nf; ++g)
            xp[g] = x[g];
        ptrdiff_t nm = 0;
        for (ptrdiff_t t = 0; t < T; ++t) {
            const int32_t sl = cur[t];
            const float *restrict lo = boxes + (ptrdiff_t)sl * 2 * nfp, *restrict hi = lo + nfp;
            int out = 0;
            for (ptrdiff_t g = 0; g < nfp; ++g)
                out |= (xp[g] <= lo[g]) | (xp[g] > hi[g]);
            miss[nm] = (int32_t)t;
            nm += out;
        }
        hits += T - nm;
        walks += nm;
        int32_t ln[SMF_LANES], lt[SMF_LANES];
        ptrdiff_t next = 0, act = 0;
        while (act < SMF_LANES && next < nm) {
            lt[act] = miss[next];
            ln[act] = (int32_t)F->root[miss[next]];
            ++next;
            ++act;
        }
        while (act > 0) {
            for (ptrdiff_t l = 0; l < act; ++l) {
                const int32_t node = ln[l];
                const int32_t f = nodes[node].feat;
                if (f < 0) {
                    cur[lt[l]] = nodes[node].right;
                    if (next < nm) {
                        lt[l] = miss[next];
                        ln[l] = (int32_t)F->root[miss[next]];
                        ++next;
                    } else {
                        --act;
                        lt[l] = lt[act];
                        ln[l] = ln[act];
                        --l;
                    }
                    continue;
                }
                const int32_t go = -(int32_t)(xp[f] <= nodes[node].thr);
                ln[l] = ((node + 1) & go) | (nodes[node].right & ~go);
                ++visits;
            }
        }
        for (ptrdiff_t t = 0; t < T; ++t)
            smf_add(leafv[cur[t]], i, t == 0, sum, shift, s1, s2);
    }
    free(cur);
    free(miss);
    if (stats != NULL) {
        stats->visits += visits;
        stats->box_hits += hits;
        stats->walks += walks;
    }
    return 0;
}

/* The entry point of both Cython kernels. reuse: 0 every row walks every tree from the root,
 * 1 the single-box kernel (smf_predict_block), 3 the leaf-box table with lanes
 * (smf_predict_lanes; boxes is CompiledForest.leaf_boxes(): n_slots + 1 rows of 2 * nfp). */
static int smf_predict(const smf_forest *F, int reuse, const float *boxes, ptrdiff_t n_slots, ptrdiff_t nfp,
                       const float *X, ptrdiff_t n, ptrdiff_t ld, const unsigned char *valid, double *sum,
                       double *shift, double *s1, double *s2, smf_stats *stats)
{
    if (reuse == 3)
        return smf_predict_lanes(F, boxes, n_slots, nfp, X, n, ld, valid, sum, shift, s1, s2, stats);
    return smf_predict_block(F, X, n, ld, valid, reuse, sum, shift, s1, s2, stats);
}

/* Population SD over T trees from the shifted sums s1 = sum(v - shift), s2 = sum((v - shift)^2). */
static inline double smf_sd(double s1, double s2, ptrdiff_t T)
{
    const double var = (s2 - s1 * s1 / (double)T) / (double)T;
    return var > 0 ? sqrt(var) : 0.0;
}

#endif /* SMENGINE_FOREST_H */
