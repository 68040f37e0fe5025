"""Fused sub-pixel inference: gather features → forest → pixel statistics, GIL released.

One task is one row of 1-km pixels of a tile and a chunk of ``D`` days. For every
sub-pixel of that row and every day the kernel gathers the feature vector straight from
the memory-mapped covariates (static, dynamic, coarse through its index map, the SWI
recursion carried in per-sub-pixel state, constants such as the calendar), runs the
forest on the task's rows (``smf_predict`` from ``_forest.h``) and reduces the
predictions of each pixel and day to: the mean of its valid sub-pixel predictions, their
population SD, the mean forest spread (population SD over trees) and the valid fraction.
Scratch memory is one task's rows, so memory does not grow with the tile or the days.

The public API is :func:`smengine.engine.predict`; this kernel trusts its inputs.

Feature plan, one row per gathered column ``j`` (the forest's columns first, then any
SWI source the forest does not use itself)::

    kind 0  static[a, r, c]
    kind 1  dynamic[tidx[d], a, r, c]
    kind 2  coarse values[d, coff[a] + index[a, r, c]]  (NaN where the index is < 0)
    kind 3  SWI of column a (gathered first) with state slot b (Albergel recursion)
    kind 4  consts[d, a]
    kind 5  as 3, but a missing value gives the last SWI (``exp_filter(carry=True)``)

The SWI recursion is exactly :func:`smengine.filters.exp_filter`'s: for a valid value v
at time t, ``K = K / (K + exp(-(t - t_last) / T))``, ``s = s + K (v - s)`` (``K = 1``,
``s = v`` for the first value); a missing value gives NaN and leaves the state alone.
"""

from cython.parallel cimport prange, threadid
from libc.math cimport NAN, exp, fabs, isnan, sqrt
from libc.string cimport memset
from libc.float cimport FLT_MAX

from smengine._ext._typedefs cimport float32_t, float64_t, int32_t, int64_t, intp_t, uint8_t

from smengine._ext._forest_h cimport smf_forest, smf_predict, smf_sd, smf_set_forest, smf_set_tables, smf_stats

# quality flag codes: a mirror of smengine.product.QualityFlag (tests/test_engine.py checks they agree)
cdef enum:
    FLAG_GOOD = 0
    FLAG_PARTIAL = 1
    FLAG_LOW = 2
    FLAG_NONE = 3
    FLAG_NO_INPUT = 4

#: The kernel's quality-flag codes by flag_meanings name (compared with QualityFlag in the tests).
QUALITY_FLAG_CODES = {"good": FLAG_GOOD, "partial": FLAG_PARTIAL, "low_valid_fraction": FLAG_LOW,
                      "no_valid_subpixels": FLAG_NONE, "no_input": FLAG_NO_INPUT}


def run_days(
    const float32_t[:, :, ::1] static,      # IN  (Fs, Y, X) sub-pixel static layers
    const float32_t[:, :, :, ::1] dynamic,  # IN  (T_store, Fd, Y, X) sub-pixel daily layers
    const int64_t[::1] tidx,              # IN  (D,) store day of each chunk day (-1: absent)
    const uint8_t[::1] want,                # IN  (D,) 1: predict this day, 0: only advance the SWI state
    const float64_t[::1] tday,              # IN  (D,) day numbers (days since epoch) for the SWI
    const float32_t[:, ::1] cvals,          # IN  (D, n_cells) coarse values of the chunk days, layers concatenated
    const int32_t[:, :, ::1] cindex,        # IN  (Lc, Y, X) coarse cell of each sub-pixel (-1: none)
    const int64_t[::1] coff,              # IN  (Lc,) offset of each layer in cvals
    const float64_t[:, ::1] consts,         # IN  (D, n_const) per-day constants (calendar)
    const int32_t[:, ::1] plan,             # IN  (n_cols, 3) kind, a, b (see module docstring)
    intp_t n_forest,                        # columns [0, n_forest) are the forest's features
    float64_t[:, ::1] gain,                 # IN/OUT (S, Y*X) SWI gain K (0: no value yet)
    float64_t[:, ::1] swi,                  # IN/OUT (S, Y*X) SWI of the last value
    float64_t[:, ::1] last,                 # IN/OUT (S, Y*X) day of the last value
    const float64_t[::1] swi_T,             # IN  (S,) characteristic time of each slot, days
    const int32_t[:, ::1] nodes,            # IN  forest layout (CompiledForest)
    const float64_t[::1] leaf,
    const int64_t[::1] root,
    const float32_t[:, ::1] boxes,          # IN  leaf boxes (CompiledForest.leaf_boxes) for reuse == 3
    const uint8_t[:, ::1] blocks,           # IN  block layout (CompiledForest.blocks) for reuse == 3
    const float64_t[::1] bleaf,
    const int32_t[::1] broot,
    intp_t sub,                             # sub-pixels per pixel side (s: s*s per pixel)
    bint day_inner,                         # row order: a sub-pixel's days together (1) or day by day (0)
    int reuse,                              # forest reuse: 0 none, 1 box kernel, 3 leaf-box table + lanes
    double min_valid,                       # minimum valid fraction for a pixel value
    float32_t[:, :, ::1] sm,                # OUT (D, Py, Px) mean of valid sub-pixel predictions
    float32_t[:, :, ::1] sub_sd,            # OUT (D, Py, Px) population SD of those predictions
    float32_t[:, :, ::1] spread,            # OUT (D, Py, Px) mean forest spread (SD over trees)
    float32_t[:, :, ::1] vfrac,             # OUT (D, Py, Px) valid sub-pixel fraction
    uint8_t[:, :, ::1] flag,                # OUT (D, Py, Px) quality flag
    float32_t[:, ::1] xbuf,                 # SCRATCH (n_threads, Px*s*s*D*n_cols) feature rows
    uint8_t[:, ::1] okbuf,                  # SCRATCH (n_threads, Px*s*s*D) row valid
    float64_t[:, ::1] accbuf,               # SCRATCH (n_threads, 4*Px*s*s*D) forest sums
    int n_threads,
    int64_t[::1] stats,                   # OUT (4,) visits, box hits, walks, invalid rows (added to)
):
    """Advance the SWI state over the chunk's days and predict the wanted days.

    Scratch memory comes from the caller (one slice per thread), so that it is allocated
    once per run and visible to memory tracing. Returns 0."""
    cdef intp_t D = tidx.shape[0], ncol = plan.shape[0], nx = static.shape[2]
    cdef intp_t Py = sm.shape[1], Px = sm.shape[2], s2 = sub * sub
    cdef intp_t T = root.shape[0], nrow = Px * s2 * D
    cdef smf_forest F
    cdef intp_t pr, px, q, a, b, r, c, lin, d, j, k, row, n, tid, failed = 0
    cdef int64_t visits = 0, hits = 0, walks = 0, n_bad = 0
    cdef float *X
    cdef uint8_t *ok
    cdef double *acc
    cdef smf_stats *st
    cdef float *x
    cdef float v32
    cdef double v, K, s, w, p, mu, ss, sp
    cdef int kind, rc, any_want = 0
    cdef smf_stats sts[256]
    if xbuf.shape[0] < n_threads or n_threads > 256 or xbuf.shape[1] < nrow * ncol \
            or okbuf.shape[1] < nrow or accbuf.shape[1] < 4 * nrow:
        raise ValueError("engine kernel: scratch buffers too small for the chunk and threads")
    for d in range(D):
        if want[d] and tidx[d] >= 0:
            any_want = 1
    smf_set_forest(&F, nodes, leaf, root, n_forest)
    smf_set_tables(&F, reuse, boxes, blocks, bleaf, broot)
    with nogil:
        for pr in prange(Py, schedule="dynamic", num_threads=n_threads):
            tid = threadid()
            X = &xbuf[tid, 0]
            ok = &okbuf[tid, 0]
            acc = &accbuf[tid, 0]
            memset(acc, 0, 4 * nrow * sizeof(double))
            memset(&sts[tid], 0, sizeof(smf_stats))
            st = &sts[tid]
            if True:
                # ---- gather (and advance the SWI state, day by day per sub-pixel)
                for px in range(Px):
                    for q in range(s2):
                        a = q // sub
                        b = q - a * sub
                        r = pr * sub + a
                        c = px * sub + b
                        lin = r * nx + c
                        for d in range(D):
                            if day_inner:
                                row = (px * s2 + q) * D + d
                            else:
                                row = (d * Px + px) * s2 + q
                            x = X + row * ncol
                            ok[row] = 0
                            if tidx[d] < 0:
                                continue
                            for j in range(ncol):
                                kind = plan[j, 0]
                                if kind == 0:
                                    x[j] = static[plan[j, 1], r, c]
                                elif kind == 1:
                                    x[j] = dynamic[tidx[d], plan[j, 1], r, c]
                                elif kind == 2:
                                    k = cindex[plan[j, 1], r, c]
                                    x[j] = cvals[d, coff[plan[j, 1]] + k] if k >= 0 else NAN
                                elif kind == 4:
                                    x[j] = <float> consts[d, plan[j, 1]]
                            for j in range(ncol):
                                kind = plan[j, 0]
                                if kind != 3 and kind != 5:
                                    continue
                                k = plan[j, 2]
                                v = x[plan[j, 1]]
                                if isnan(v):
                                    if kind == 5 and gain[k, lin] > 0:
                                        x[j] = <float> swi[k, lin]
                                    else:
                                        x[j] = NAN
                                    continue
                                K = gain[k, lin]
                                if K > 0:
                                    w = exp(-(tday[d] - last[k, lin]) / swi_T[k])
                                    K = K / (K + w)
                                    s = swi[k, lin]
                                    s = s + K * (v - s)
                                else:
                                    K = 1.0
                                    s = v
                                swi[k, lin] = s
                                gain[k, lin] = K
                                last[k, lin] = tday[d]
                                x[j] = <float> s
                            if want[d]:
                                ok[row] = 1
                                for j in range(n_forest):
                                    if not (fabs(x[j]) <= FLT_MAX):
                                        ok[row] = 0
                                n_bad += 1 - ok[row]
                if not any_want:
                    rc = 0
                else:
                    rc = smf_predict(&F, reuse, X, nrow, ncol, 0, ok, acc, acc + nrow, acc + 2 * nrow,
                                     acc + 3 * nrow, st)
                if rc != 0:
                    failed += 1
                else:
                    visits += st[0].visits
                    hits += st[0].box_hits
                    walks += st[0].walks
                    # ---- reduce sub-pixels to pixels
                    for d in range(D):
                        if not want[d]:
                            continue
                        for px in range(Px):
                            n = 0
                            mu = 0.0
                            sp = 0.0
                            for q in range(s2):
                                row = (px * s2 + q) * D + d if day_inner else (d * Px + px) * s2 + q
                                if ok[row]:
                                    n = n + 1
                                    mu = mu + acc[row] / T
                                    sp = sp + smf_sd(acc[2 * nrow + row], acc[3 * nrow + row], T)
                            vfrac[d, pr, px] = <float> n / <float> s2
                            if tidx[d] < 0:
                                flag[d, pr, px] = FLAG_NO_INPUT
                            elif n == 0:
                                flag[d, pr, px] = FLAG_NONE
                            elif <double> n < min_valid * s2:
                                flag[d, pr, px] = FLAG_LOW
                            elif n < s2:
                                flag[d, pr, px] = FLAG_PARTIAL
                            else:
                                flag[d, pr, px] = FLAG_GOOD
                            if flag[d, pr, px] >= FLAG_LOW:
                                sm[d, pr, px] = NAN
                                sub_sd[d, pr, px] = NAN
                                spread[d, pr, px] = NAN
                                continue
                            mu = mu / n
                            ss = 0.0
                            for q in range(s2):
                                row = (px * s2 + q) * D + d if day_inner else (d * Px + px) * s2 + q
                                if ok[row]:
                                    p = acc[row] / T - mu
                                    ss = ss + p * p
                            sm[d, pr, px] = <float> mu
                            sub_sd[d, pr, px] = <float> sqrt(ss / n)
                            spread[d, pr, px] = <float> (sp / n)
    if failed:
        raise MemoryError("engine kernel: could not allocate scratch memory for the forest")
    stats[0] += visits
    stats[1] += hits
    stats[2] += walks
    stats[3] += n_bad
    return 0
