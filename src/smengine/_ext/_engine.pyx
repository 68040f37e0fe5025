"""Fused sub-pixel inference: gather features → forest → pixel statistics, GIL released.

One task is one row of 1-km pixels of a tile and a chunk of ``D`` days. For every
sub-pixel of that row and every day the kernel gathers the feature vector straight from
the memory-mapped covariates (static, dynamic, coarse through its index map, the SWI
recursion carried in per-sub-pixel state, constants such as the calendar), runs the
forest on the task's rows (``smf_predict`` from ``_forest.h``) and reduces the
predictions of each pixel and day to: the mean of its valid sub-pixel predictions, their
population SD, the mean forest spread (population SD over trees) and the valid fraction
(and, when asked, the mean feature vector of the valid sub-pixels).
Scratch memory is one task's rows, so memory does not grow with the tile or the days.

The public API is :func:`smengine.engine.predict`; this kernel trusts the contents of its
inputs and checks that their shapes agree. They come grouped: the forest
(:class:`smengine._ext._forest.ForestTables`), the tile's covariates and gather plan
(:class:`TileArrays`, one per :class:`~smengine.engine.TileRunner`), the SWI state carried
from chunk to chunk (:class:`SWIState`), one chunk's days (:class:`ChunkInputs`), its pixel
layers (:class:`Outputs`) and per-thread scratch memory (:class:`Scratch`).

Feature plan, one row per gathered column ``j`` (the forest's columns first, then any
SWI source or water-balance input the forest does not use itself)::

    kind 0  static[a, r, c]
    kind 1  dynamic[tidx[d], a, r, c]
    kind 2  coarse values[d, coff[a] + index[a, r, c]]  (NaN where the index is < 0)
    kind 3  SWI of column a (gathered first) with state slot b (Albergel recursion)
    kind 4  consts[d, a]
    kind 5  as 3, but a missing value gives the last SWI while at most the slot's ``max_gap`` days
            have passed since the last valid value (``exp_filter(carry=True, max_gap=...)``)
    kind 6  water balance: theta of the bucket with precipitation column a (gathered first, mm),
            bucket slot b (:class:`BucketState`: the temperature column, degC, the Ra constant and the
            slot's storages per sub-pixel)

The SWI recursion is :func:`smengine.filters.exp_filter`'s, the same inline step
(``swi_step`` of ``_swi.pxd``): for a valid value v at time t,
``K = K / (K + exp(-(t - t_last) / T))``, ``s = s + K (v - s)`` (``K = 1``, ``s = v`` for the
first value); a missing value gives NaN and leaves the state alone.

The water balance (kind 6) is :func:`smengine.waterbalance.bucket_oudin`'s, the same inline day
(``bucket_oudin_day`` of ``_bucket.pxd``: Oudin PET from the temperature and Ra, then the bucket
step); the storage of every sub-pixel and slot is carried from chunk to chunk in :class:`BucketState`
(NaN: no soil there); a day with missing precipitation or temperature gives NaN and leaves it alone
(counted in ``stats[5]`` once per sub-pixel-day, for the first slot).

A gathered covariate value (kinds 0-2) is first brought to the model's units where
``TileArrays.scale``/``offset`` say so (``x = x * scale + offset``, only for columns whose
conversion is not the identity), then a ±inf becomes NaN, counted: it is missing input like
NaN, for the SWI (which would otherwise carry it to every later day) and for the row's
validity alike. SWI features (kinds 3, 5) inherit the conversion of their source column
(the recursion is affine-equivariant).
"""

import numpy as np

from cython.parallel cimport prange, threadid
from libc.math cimport NAN, fabs, isfinite, isinf, sqrt
from libc.string cimport memset
from libc.float cimport FLT_MAX

from smengine._ext._typedefs cimport float32_t, float64_t, int32_t, int64_t, intp_t, uint8_t

from smengine._ext._bucket cimport bucket_oudin_day
from smengine._ext._forest cimport ForestTables
from smengine._ext._forest_h cimport smf_forest, smf_output, smf_predict, smf_sd, smf_stats
from smengine._ext._swi cimport swi_missing, swi_step

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

# gather kinds of the plan: a mirror of smengine.engine.GatherKind (tests/test_engine.py checks they agree)
cdef enum:
    GATHER_STATIC = 0
    GATHER_DYNAMIC = 1
    GATHER_COARSE = 2
    GATHER_SWI = 3
    GATHER_CONST = 4
    GATHER_SWI_CARRY = 5
    GATHER_WATER_BALANCE = 6

#: The kernel's gather-kind codes by GatherKind name (compared with smengine.engine.GatherKind in the tests).
GATHER_KINDS = {"STATIC": GATHER_STATIC, "DYNAMIC": GATHER_DYNAMIC, "COARSE": GATHER_COARSE, "SWI": GATHER_SWI,
                "CONST": GATHER_CONST, "SWI_CARRY": GATHER_SWI_CARRY, "WATER_BALANCE": GATHER_WATER_BALANCE}


cdef class TileArrays:
    """What every chunk of a tile reads: the sub-pixel covariates and the gather plan (one per TileRunner).

    Parameters
    ----------
    static : ndarray of float32, shape (Fs, Y, X)
        Sub-pixel static layers.
    dynamic : ndarray of float32, shape (T_store, Fd, Y, X)
        Sub-pixel daily layers (memory-mapped).
    cindex : ndarray of int32, shape (Lc, Y, X)
        Coarse cell of each sub-pixel per coarse layer (-1: none).
    coff : ndarray of int64, shape (Lc,)
        Offset of each coarse layer in a chunk's ``cvals``.
    plan : ndarray of int32, shape (n_cols, 3)
        Gather plan: kind, a, b per column (see the module docstring); the forest's
        ``n_features`` columns come first.
    sub : int
        Sub-pixels per pixel side (``sub * sub`` per pixel).
    scale, offset : ndarray of float64, shape (n_cols,), optional
        Units conversion of each gathered covariate column, ``x * scale + offset`` (default
        none: ones and zeros; only columns whose pair is not (1, 0) are converted).
    """

    cdef const float32_t[:, :, ::1] static
    cdef const float32_t[:, :, :, ::1] dynamic
    cdef const int32_t[:, :, ::1] cindex
    cdef const int64_t[::1] coff
    cdef const int32_t[:, ::1] plan
    cdef const float64_t[::1] scale
    cdef const float64_t[::1] offset
    cdef readonly intp_t sub

    def __init__(self, static, dynamic, cindex, coff, plan, intp_t sub, scale=None, offset=None):
        self.static = static
        self.dynamic = dynamic
        self.cindex = cindex
        self.coff = coff
        self.plan = plan
        self.sub = sub
        self.scale = np.ones(self.plan.shape[0]) if scale is None else scale
        self.offset = np.zeros(self.plan.shape[0]) if offset is None else offset
        cdef intp_t ny = self.static.shape[1], nx = self.static.shape[2]
        if sub < 1 or ny % sub or nx % sub or self.dynamic.shape[2] != ny or self.dynamic.shape[3] != nx \
                or self.cindex.shape[1] != ny or self.cindex.shape[2] != nx or self.cindex.shape[0] != self.coff.shape[0] \
                or self.plan.shape[1] != 3 or self.scale.shape[0] != self.plan.shape[0] \
                or self.offset.shape[0] != self.plan.shape[0]:
            raise ValueError("TileArrays: static (Fs, Y, X), dynamic (T, Fd, Y, X), cindex (Lc, Y, X), coff (Lc,), "
                             "plan (n_cols, 3), scale and offset (n_cols,) should agree, and Y and X be multiples "
                             "of sub")


cdef class BucketState:
    """The water-balance (bucket) state of every sub-pixel, carried from chunk to chunk (kind 6).

    Parameters
    ----------
    storage : ndarray of float64, shape (S, Y * X)
        Per bucket slot and sub-pixel: the storage, mm (NaN: undefined, no soil); updated in place.
    s_fc, s_wp, s_crit : ndarray of float64, shape (S, Y * X)
        Storages at field capacity, at the wilting point and where ET reaches PET, mm
        (:func:`smengine.waterbalance.bucket_storages`).
    depth : ndarray of float64, shape (S,)
        Root-zone depth of each slot, mm (theta = storage / depth).
    tcol : int
        Plan column of the daily mean temperature (degC), gathered first (-1: no slot).
    ra_col : int
        Column of the chunk's ``consts`` holding each day's Ra, MJ m-2 d-1 (-1: no slot).
    """

    cdef float64_t[:, ::1] storage
    cdef const float64_t[:, ::1] s_fc
    cdef const float64_t[:, ::1] s_wp
    cdef const float64_t[:, ::1] s_crit
    cdef const float64_t[::1] depth
    cdef readonly intp_t tcol
    cdef readonly intp_t ra_col

    def __init__(self, storage, s_fc, s_wp, s_crit, depth, intp_t tcol, intp_t ra_col):
        self.storage = storage
        self.s_fc = s_fc
        self.s_wp = s_wp
        self.s_crit = s_crit
        self.depth = depth
        self.tcol = tcol
        self.ra_col = ra_col
        cdef intp_t S = self.storage.shape[0], n = self.storage.shape[1]
        if not (self.s_fc.shape[0] == self.s_wp.shape[0] == self.s_crit.shape[0] == self.depth.shape[0] == S) \
                or not (self.s_fc.shape[1] == self.s_wp.shape[1] == self.s_crit.shape[1] == n) \
                or (S > 0 and (tcol < 0 or ra_col < 0)):
            raise ValueError("BucketState: storage, s_fc, s_wp and s_crit should be (S, Y * X), depth (S,), and "
                             "tcol and ra_col columns (>= 0) when S > 0")


cdef class SWIState:
    """The SWI state of every sub-pixel, carried from chunk to chunk (updated in place).

    Parameters
    ----------
    gain, swi, last : ndarray of float64, shape (S, Y * X)
        Per state slot and sub-pixel: gain K of the last valid value (0: none yet), the SWI
        at that value, its day (as :class:`smengine.filters.SWIState`).
    T : ndarray of float64, shape (S,)
        Characteristic time of each slot, days.
    max_gap : ndarray of float64, shape (S,), optional
        A carried slot (kind 5) repeats its last SWI for at most this many days after the last
        valid value, then gives NaN (``exp_filter(carry=True, max_gap=...)``); default inf.
    bucket : BucketState, optional
        The water-balance state (kind 6), carried alongside; default none (no slot).
    """

    cdef float64_t[:, ::1] gain
    cdef float64_t[:, ::1] swi
    cdef float64_t[:, ::1] last
    cdef const float64_t[::1] T
    cdef const float64_t[::1] max_gap

    cdef readonly BucketState bucket

    def __init__(self, gain, swi, last, T, max_gap=None, BucketState bucket=None):
        self.gain = gain
        self.swi = swi
        self.last = last
        self.T = T
        self.max_gap = np.full(self.T.shape[0], np.inf) if max_gap is None else max_gap
        if not (self.gain.shape[0] == self.swi.shape[0] == self.last.shape[0] == self.T.shape[0]
                == self.max_gap.shape[0]) or not (self.gain.shape[1] == self.swi.shape[1] == self.last.shape[1]):
            raise ValueError("SWIState: gain, swi and last should be (S, Y * X) and T and max_gap (S,)")
        if bucket is None:
            bucket = BucketState(*(np.zeros((0, self.gain.shape[1])) for _ in range(4)), np.zeros(0), -1, -1)
        self.bucket = bucket


cdef class ChunkInputs:
    """The inputs of one chunk of D days.

    Parameters
    ----------
    tidx : ndarray of int64, shape (D,)
        Store day of each chunk day (-1: absent).
    want : ndarray of uint8, shape (D,)
        1: predict this day, 0: only advance the SWI state.
    tday : ndarray of float64, shape (D,)
        Day numbers (days since the epoch) for the SWI.
    cvals : ndarray of float32, shape (D, n_cells)
        Coarse values of the chunk days, layers concatenated (``TileArrays.coff``).
    consts : ndarray of float64, shape (D, n_const)
        Per-day constants (the calendar).
    """

    cdef const int64_t[::1] tidx
    cdef const uint8_t[::1] want
    cdef const float64_t[::1] tday
    cdef const float32_t[:, ::1] cvals
    cdef const float64_t[:, ::1] consts

    def __init__(self, tidx, want, tday, cvals, consts):
        self.tidx = tidx
        self.want = want
        self.tday = tday
        self.cvals = cvals
        self.consts = consts
        cdef intp_t D = self.tidx.shape[0]
        if self.want.shape[0] != D or self.tday.shape[0] != D or self.cvals.shape[0] != D or self.consts.shape[0] != D:
            raise ValueError("ChunkInputs: tidx, want, tday, cvals and consts should have one entry per day")


cdef class Outputs:
    """The pixel layers of one chunk, written by the kernel.

    Parameters
    ----------
    sm, sub_sd, spread, vfrac : ndarray of float32, shape (D, Py, Px)
        Mean of the valid sub-pixel predictions, their population SD, the mean forest spread
        (SD over trees), the valid sub-pixel fraction.
    flag : ndarray of uint8, shape (D, Py, Px)
        Quality flag.
    fmean : ndarray of float64, shape (D, n_features, Py, Px), optional
        Pixel-mean feature vector: the mean of the forest's features over the valid
        sub-pixels (those the forest predicted), NaN where ``sm`` is NaN (flag >= 2). The
        dissimilarity index is computed on it (:mod:`smengine.model._applicability`).
        Not computed when left out.
    """

    cdef float32_t[:, :, ::1] sm
    cdef float32_t[:, :, ::1] sub_sd
    cdef float32_t[:, :, ::1] spread
    cdef float32_t[:, :, ::1] vfrac
    cdef uint8_t[:, :, ::1] flag
    cdef float64_t[:, :, :, ::1] fmean

    def __init__(self, sm, sub_sd, spread, vfrac, flag, fmean=None):
        self.sm = sm
        self.sub_sd = sub_sd
        self.spread = spread
        self.vfrac = vfrac
        self.flag = flag
        self.fmean = np.zeros((0, 0, 0, 0)) if fmean is None else fmean
        shape = np.shape(sm)
        if len({np.shape(a) for a in (sm, sub_sd, spread, vfrac, flag)}) != 1:
            raise ValueError("Outputs: every layer should be (D, Py, Px)")
        if fmean is not None and (np.ndim(fmean) != 4 or (np.shape(fmean)[0],) + np.shape(fmean)[2:] != shape):
            raise ValueError("Outputs: fmean should be (D, n_features, Py, Px)")


cdef class Scratch:
    """Scratch memory of the kernel, one row per thread (allocated once per run by the caller, so
    that memory tracing sees it).

    Parameters
    ----------
    xbuf : ndarray of float32, shape (n_threads, >= Px * s * s * D * n_cols)
        Feature rows.
    okbuf : ndarray of uint8, shape (n_threads, >= Px * s * s * D)
        Row valid.
    accbuf : ndarray of float64, shape (n_threads, >= 4 * Px * s * s * D)
        Forest sums.
    """

    cdef float32_t[:, ::1] xbuf
    cdef uint8_t[:, ::1] okbuf
    cdef float64_t[:, ::1] accbuf

    def __init__(self, xbuf, okbuf, accbuf):
        self.xbuf = xbuf
        self.okbuf = okbuf
        self.accbuf = accbuf
        if not (self.xbuf.shape[0] == self.okbuf.shape[0] == self.accbuf.shape[0]):
            raise ValueError("Scratch: xbuf, okbuf and accbuf should have one row per thread")


def run_days(
    ForestTables forest not None,       # IN  the forest (CompiledForest._kernel_tables())
    TileArrays tile not None,           # IN  covariates and gather plan of the tile
    SWIState state not None,            # IN/OUT SWI state of every sub-pixel
    ChunkInputs chunk not None,         # IN  the chunk's days
    Outputs out not None,               # OUT (D, Py, Px) pixel layers (and pixel-mean features)
    Scratch scratch not None,           # SCRATCH per-thread rows
    bint day_inner,                     # row order: a sub-pixel's days together (1) or day by day (0)
    int reuse,                          # forest reuse: 0 none, 1 box kernel, 3 leaf-box table + lanes
    double min_valid,                   # minimum valid fraction for a pixel value
    int n_threads,
    int64_t[::1] stats,                 # OUT (6,) visits, box hits, walks, invalid rows, ±inf values,
                                        #     water-balance days skipped (added to)
):
    """Advance the SWI state over the chunk's days and predict the wanted days.

    Scratch memory comes from the caller (one slice per thread), so that it is allocated
    once per run and visible to memory tracing. Returns 0."""
    # the tile's, state's, chunk's and outputs' views as locals of the loops below
    cdef const float32_t[:, :, ::1] static = tile.static
    cdef const float32_t[:, :, :, ::1] dynamic = tile.dynamic
    cdef const int32_t[:, :, ::1] cindex = tile.cindex
    cdef const int64_t[::1] coff = tile.coff
    cdef const int32_t[:, ::1] plan = tile.plan
    cdef const float64_t[::1] scale = tile.scale
    cdef const float64_t[::1] offset = tile.offset
    cdef float64_t[:, ::1] gain = state.gain
    cdef float64_t[:, ::1] swi = state.swi
    cdef float64_t[:, ::1] last = state.last
    cdef float64_t[:, ::1] wb_storage = state.bucket.storage
    cdef const float64_t[:, ::1] wb_fc = state.bucket.s_fc
    cdef const float64_t[:, ::1] wb_wp = state.bucket.s_wp
    cdef const float64_t[:, ::1] wb_crit = state.bucket.s_crit
    cdef const float64_t[::1] wb_depth = state.bucket.depth
    cdef intp_t wb_tcol = state.bucket.tcol, wb_ra = state.bucket.ra_col
    cdef const float64_t[::1] swi_T = state.T
    cdef const float64_t[::1] swi_gap = state.max_gap
    cdef const int64_t[::1] tidx = chunk.tidx
    cdef const uint8_t[::1] want = chunk.want
    cdef const float64_t[::1] tday = chunk.tday
    cdef const float32_t[:, ::1] cvals = chunk.cvals
    cdef const float64_t[:, ::1] consts = chunk.consts
    cdef float32_t[:, :, ::1] sm = out.sm
    cdef float32_t[:, :, ::1] sub_sd = out.sub_sd
    cdef float32_t[:, :, ::1] spread = out.spread
    cdef float32_t[:, :, ::1] vfrac = out.vfrac
    cdef uint8_t[:, :, ::1] flag = out.flag
    cdef float64_t[:, :, :, ::1] fmean = out.fmean
    cdef bint want_f = fmean.shape[0] > 0
    cdef float32_t[:, ::1] xbuf = scratch.xbuf
    cdef uint8_t[:, ::1] okbuf = scratch.okbuf
    cdef float64_t[:, ::1] accbuf = scratch.accbuf
    cdef const smf_forest *F = &forest.F
    cdef intp_t sub = tile.sub, n_forest = F.n_features
    cdef intp_t D = tidx.shape[0], ncol = plan.shape[0], nx = static.shape[2]
    cdef intp_t Py = sm.shape[1], Px = sm.shape[2], s2 = sub * sub
    cdef intp_t T = F.n_trees, nrow = Px * s2 * D
    cdef intp_t pr, px, q, a, b, r, c, lin, d, j, k, row, n, tid, failed = 0
    cdef int64_t visits = 0, hits = 0, walks = 0, n_bad = 0, n_inf = 0, n_wb = 0
    cdef float *X
    cdef uint8_t *ok
    cdef double *acc
    cdef smf_stats *st
    cdef float *x
    cdef float v32
    cdef double v, p, mu, ss, sp, fs
    cdef bint defined
    cdef int kind, rc, any_want = 0, convert = 0
    cdef smf_stats sts[256]
    if xbuf.shape[0] < n_threads or n_threads > 256 or xbuf.shape[1] < nrow * ncol \
            or okbuf.shape[1] < nrow or accbuf.shape[1] < 4 * nrow:
        raise ValueError("engine kernel: scratch buffers too small for the chunk and threads")
    if ncol < n_forest or sm.shape[0] != D or Py * sub > static.shape[1] or Px * sub > nx \
            or gain.shape[1] != static.shape[1] * nx or stats.shape[0] < 6:
        raise ValueError("engine kernel: the plan, tile, SWI state, chunk and outputs do not agree")
    if want_f and (fmean.shape[0] != D or fmean.shape[1] != n_forest or fmean.shape[2] != Py
                   or fmean.shape[3] != Px):
        raise ValueError("engine kernel: fmean should be (D, n_features, Py, Px)")
    if reuse == 3 and not forest.has_blocks:
        raise ValueError("engine kernel: reuse 3 needs the forest's leaf boxes and blocks")
    for d in range(D):
        if want[d] and tidx[d] >= 0:
            any_want = 1
    for j in range(ncol):
        if scale[j] != 1.0 or offset[j] != 0.0:
            convert = 1
        if plan[j, 0] == GATHER_WATER_BALANCE and not (
                0 <= plan[j, 1] < ncol and 0 <= plan[j, 2] < wb_storage.shape[0] and wb_tcol < ncol
                and wb_ra < consts.shape[1] and wb_storage.shape[1] == gain.shape[1]):
            raise ValueError("engine kernel: a water-balance column's plan, bucket state and consts do not agree")
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
                                if kind == GATHER_STATIC:
                                    x[j] = static[plan[j, 1], r, c]
                                elif kind == GATHER_DYNAMIC:
                                    x[j] = dynamic[tidx[d], plan[j, 1], r, c]
                                elif kind == GATHER_COARSE:
                                    k = cindex[plan[j, 1], r, c]
                                    x[j] = cvals[d, coff[plan[j, 1]] + k] if k >= 0 else NAN
                                else:
                                    if kind == GATHER_CONST:
                                        x[j] = <float> consts[d, plan[j, 1]]
                                    continue
                                if convert and (scale[j] != 1.0 or offset[j] != 0.0):  # tile units → the model's
                                    x[j] = <float> (x[j] * scale[j] + offset[j])
                                if isinf(x[j]):  # missing input, as NaN (counted)
                                    x[j] = NAN
                                    n_inf += 1
                            for j in range(ncol):
                                kind = plan[j, 0]
                                if kind == GATHER_WATER_BALANCE:  # bucket_oudin's day, state carried
                                    k = plan[j, 2]
                                    defined = isfinite(wb_storage[k, lin])
                                    v = bucket_oudin_day(&wb_storage[k, lin], x[plan[j, 1]], x[wb_tcol],
                                                         consts[d, wb_ra], wb_fc[k, lin], wb_wp[k, lin],
                                                         wb_crit[k, lin], wb_depth[k])
                                    if k == 0 and defined and not isfinite(v):
                                        n_wb += 1
                                    x[j] = <float> v
                                    continue
                                if kind != GATHER_SWI and kind != GATHER_SWI_CARRY:
                                    continue
                                k = plan[j, 2]
                                v = x[plan[j, 1]]
                                if swi_missing(v):
                                    if kind == GATHER_SWI_CARRY and gain[k, lin] > 0 \
                                            and tday[d] - last[k, lin] <= swi_gap[k]:
                                        x[j] = <float> swi[k, lin]
                                    else:
                                        x[j] = NAN
                                    continue
                                x[j] = <float> swi_step(&gain[k, lin], &swi[k, lin], &last[k, lin], v, tday[d], swi_T[k],
                                                        NULL, 0, 0.0)
                            if want[d]:
                                ok[row] = 1
                                for j in range(n_forest):
                                    if not (fabs(x[j]) <= FLT_MAX):
                                        ok[row] = 0
                                n_bad += 1 - ok[row]
                if not any_want:
                    rc = 0
                else:
                    rc = smf_predict(F, reuse, X, nrow, ncol, 0, ok, acc, acc + nrow, acc + 2 * nrow,
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
                                    # mean over trees, or a boosted sum (/ 1); plus a hybrid's linear base
                                    mu = mu + smf_output(F, X + row * ncol, acc[row])
                                    # spread over trees: NaN for a summed (boosted) ensemble
                                    sp = sp + (smf_sd(acc[2 * nrow + row], acc[3 * nrow + row], T) if F.average
                                               else NAN)
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
                                if want_f:
                                    for j in range(n_forest):
                                        fmean[d, j, pr, px] = NAN
                                continue
                            if want_f:  # pixel-mean features over the valid sub-pixels
                                for j in range(n_forest):
                                    fs = 0.0
                                    for q in range(s2):
                                        row = (px * s2 + q) * D + d if day_inner else (d * Px + px) * s2 + q
                                        if ok[row]:
                                            fs = fs + X[row * ncol + j]
                                    fmean[d, j, pr, px] = fs / n
                            mu = mu / n
                            ss = 0.0
                            for q in range(s2):
                                row = (px * s2 + q) * D + d if day_inner else (d * Px + px) * s2 + q
                                if ok[row]:
                                    p = smf_output(F, X + row * ncol, acc[row]) - mu
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
    stats[4] += n_inf
    stats[5] += n_wb
    return 0
