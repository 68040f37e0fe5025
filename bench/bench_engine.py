"""Fused engine (smengine.engine) vs the naive NumPy/scikit-learn pipeline, one tile, a stack of days.

A 100 km × 100 km tile (10 000 pixels × 16 sub-pixels of 250 m) and a stack of
days; sub-pixel predictions per second and peak memory of

* the naive pipeline (:func:`smengine.testing.naive_predict`): build the full feature
  matrix of every sub-pixel and day with ``FeatureBuilder``, ``RandomForestRegressor.predict``
  (n_jobs=1), the per-tree predictions for the spread, reshape, ``nanmean``/``nanstd``;
* the engine (:class:`smengine.engine.TileRunner`) on 1 and 2 threads, rows ordered
  day by day, pixel after pixel (default) or sub-pixel by sub-pixel with a chunk's days
  together ("day-inner").

Both produce the same four layers (mean, within-pixel SD, mean forest spread, valid
fraction); the benchmark checks they agree to 1e-5. A second group times the engine with
and without the dissimilarity index (``di``, the area of applicability of Meyer & Pebesma
2021, :class:`smengine.model.Applicability` of the training rows in 40 random folds),
checks the DI of one day against the exact DI of the pixel-mean features and prints the
DI's share of the engine's time. The forest is bench_forest's: 100 trees,
min_samples_leaf=5, max_features=1/3, 16 features (5 static, 3 dynamic at 1 km, 2 coarse
at 10 km, SWI of the surface-SM layer at T = 5, 10, 20, 40 d, day of year), trained on
27 000 rows drawn from the tile's first 24 days. The summary projects a year over Europe
(6 million pixels × 16 sub-pixels × 365 days) from the measured 2-thread rate.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import SMOKE
from scipy import ndimage

N_PIX = 20 if SMOKE else 100  # pixels per tile side
N_DAYS = 2 if SMOKE else 8  # predicted days (the stack)
N_SUBPIXEL_DAYS = N_PIX * N_PIX * 16 * N_DAYS  # sub-pixel predictions per run
SPIN = 4 if SMOKE else 24  # earlier days (training rows, SWI spin-up)
N_TREES = 10 if SMOKE else 100
N_TRAIN = 2_000 if SMOKE else 27_000
EUROPE_SUBPIXEL_DAYS = 6e6 * 16 * 365


def _field(rng, n, sigma, block=1):
    m = -(-n // block)
    f = ndimage.gaussian_filter(rng.standard_normal((m, m)), sigma / block, mode="wrap")
    f = np.repeat(np.repeat(f, block, 0), block, 1)[:n, :n]
    return ((f - f.mean()) / f.std()).astype(np.float32)


def _make_tile(path):
    from smengine.grid import Grid
    from smengine.tiles import TileWriter

    rng = np.random.default_rng(606)
    grid = Grid.from_bounds(4_000_000, 3_000_000, 4_000_000 + N_PIX * 1000, 3_000_000 + N_PIX * 1000, tile_size=N_PIX)
    n = N_PIX * 4
    days = np.datetime64("2021-03-01") + np.arange(SPIN + N_DAYS).astype("timedelta64[D]")
    static = ["elev", "sand", "clay", "twi", "forest"]
    units = {
        "elev": "m",
        "sand": "%",
        "clay": "%",
        "twi": "1",
        "forest": "1",
        "s1": "m3 m-3",
        "ndvi": "1",
        "lst": "K",
        "smap": "m3 m-3",
        "era5": "m3 m-3",
    }
    cells = n // 40
    index = ((np.arange(n)[:, None] // 40) * cells + np.arange(n)[None, :] // 40).astype(np.int32)
    with TileWriter(
        path,
        grid,
        days,
        static,
        ["s1", "ndvi", "lst"],
        units,
        coarse={"smap": (index, cells * cells), "era5": (index, cells * cells)},
        tile_id="bench",
    ) as w:
        for k, s in zip(static, (3, 6, 12, 25, 50), strict=False):
            w.write_static(k, _field(rng, n, s))
        for t in range(days.size):
            s1 = 0.25 + 0.05 * _field(rng, n, 12, block=4) + 0.02 * rng.standard_normal((n, n)).astype(np.float32)
            s1[rng.random((n, n)) < 0.05] = np.nan  # gaps
            w.write_dynamic(t, "s1", s1)
            w.write_dynamic(t, "ndvi", _field(rng, n, 12, block=4))
            w.write_dynamic(t, "lst", _field(rng, n, 12, block=4))
            w.write_coarse(t, "smap", (0.25 + 0.05 * rng.standard_normal(cells * cells)).astype(np.float32))
            w.write_coarse(t, "era5", (0.30 + 0.05 * rng.standard_normal(cells * cells)).astype(np.float32))
    return days


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from sklearn.ensemble import RandomForestRegressor

    from smengine.features import FeatureBuilder, FeatureSpec
    from smengine.model import Applicability, CompiledForest
    from smengine.tiles import TileStore

    path = tmp_path_factory.mktemp("engine") / "bench.h5"
    days = _make_tile(path)
    store = TileStore.open(path)
    fb = FeatureBuilder(store, FeatureSpec(swi_of=("s1",), swi_carry=False))
    assert len(fb.names) == 16, fb.names
    rng = np.random.default_rng(0)
    sw = fb.swi()
    X = np.concatenate([fb.day(t, swi=sw).reshape(16, -1).T for t in range(SPIN)])
    X = X[np.isfinite(X).all(1)]
    X = X[rng.choice(len(X), min(N_TRAIN, len(X)), replace=False)]
    y = (
        0.25
        + 0.05 * np.tanh(X[:, 0])
        + 0.04 * X[:, 5] * X[:, 10]
        + 0.03 * np.sin(2 * X[:, 6])
        + 0.3 * (X[:, 11] - 0.25)
        + 0.02 * X[:, 1] * X[:, 8]
        + 0.01 * rng.standard_normal(len(X))
    )
    rf = RandomForestRegressor(N_TREES, min_samples_leaf=5, max_features=1 / 3, random_state=0, n_jobs=-1).fit(X, y)
    rf.n_jobs = 1
    cf = CompiledForest.from_sklearn(rf, feature_names=fb.names)
    folds = rng.integers(0, 40, len(X))  # stand-ins for stations
    app = Applicability.fit(X, weights=rf.feature_importances_, folds=folds, feature_names=fb.names)
    cf.applicability = app  # used only with di=True
    return {"store": store, "rf": rf, "cf": cf, "names": fb.names, "days": days[SPIN:], "X": X, "folds": folds}


def _naive(world, n_jobs=1):
    from smengine.testing import naive_predict

    world["rf"].n_jobs = n_jobs
    try:
        return naive_predict(world["store"], world["rf"], world["names"], days=world["days"])
    finally:
        world["rf"].n_jobs = 1


def _ours(world, threads, day_inner=False, di=False):
    from smengine.engine import TileRunner

    r = TileRunner(world["store"], world["cf"], n_threads=threads, day_inner=day_inner, chunk_days=8, di=di)
    return r.predict_arrays(world["days"])[1], r.stats


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_naive(world, record, note, n_jobs):
    out = record(
        "engine tile×days",
        f"naive numpy+sklearn n_jobs={n_jobs}",
        _naive,
        world,
        n_jobs,
        incumbent=n_jobs == 1,
        rounds=3,
        items=N_SUBPIXEL_DAYS,
        unit="sub-px",
    )
    if n_jobs == 2:
        return
    n = N_SUBPIXEL_DAYS
    note(
        f"[engine] tile {N_PIX}×{N_PIX} px × 16 sub-px × {N_DAYS} days = {n:,} sub-pixel predictions; "
        f"{int(np.isfinite(out['sm']).sum()):,} pixel-days with a value"
    )
    # where the naive pipeline's time goes (one run each)
    from smengine.features import FeatureBuilder, FeatureSpec

    s, rf = world["store"], world["rf"]
    t0 = time.perf_counter()
    fb = FeatureBuilder(s, FeatureSpec(swi_of=("s1",), swi_carry=False))
    sw = fb.swi()
    X = np.stack([fb.day(s.day_index(d), swi=sw) for d in world["days"]]).transpose(0, 2, 3, 1).reshape(-1, 16)
    t1 = time.perf_counter()
    ok = np.isfinite(X).all(1)
    rf.predict(X[ok])
    t2 = time.perf_counter()
    for e in rf.estimators_:
        e.predict(X[ok])
    t3 = time.perf_counter()
    note(
        f"[engine] naive parts: feature matrix {t1 - t0:.2f} s ({X.nbytes / 2**20:.0f} MiB), "
        f"rf.predict {t2 - t1:.2f} s, per-tree predictions for the spread {t3 - t2:.2f} s"
    )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("day_inner", [True, False])
def test_engine(world, record, note, threads, day_inner):
    name = f"engine {threads} thr" + (" day-inner" if day_inner else "")
    out, _ = record(
        "engine tile×days", name, _ours, world, threads, day_inner, rounds=3, items=N_SUBPIXEL_DAYS, unit="sub-px"
    )
    ref = _naive(world) if threads == 1 and not day_inner else None
    if ref is not None:
        for k in ("sm", "subpixel_sd", "uncertainty", "valid_fraction"):
            np.testing.assert_allclose(out[k], ref[k], atol=1e-5, err_msg=k)
    t0 = time.perf_counter()
    _, st = _ours(world, threads, day_inner)
    dt = time.perf_counter() - t0
    rate = st.subpixel_days / dt
    note(
        f"[engine] {name}: {rate / 1e6:.2f} M sub-pixel predictions/s (one extra run), box hits "
        f"{100 * st.box_hits / max(st.box_hits + st.walks, 1):.0f} %, {st.visits / max(st.box_hits + st.walks, 1):.2f} "
        f"walk steps (3-level blocks) per row-tree; a year over Europe (3.5e10 sub-pixel-days) ≈ "
        f"{EUROPE_SUBPIXEL_DAYS / rate / 3600:.1f} h"
    )


@pytest.mark.parametrize("di", [False, True])
def test_engine_di(world, record, note, di):
    """The engine with and without the dissimilarity index, 2 threads: the DI's cost."""
    name = "engine 2 thr" + (" + di" if di else "")
    out, _ = record(
        "engine with/without DI", name, _ours, world, 2, False, di, incumbent=not di, rounds=3, items=N_SUBPIXEL_DAYS
    )
    if not di:
        return
    from smengine.features import FeatureBuilder, FeatureSpec
    from smengine.pseudoproxy import aoa

    # one day against the exact DI of the pixel-mean features (complete pixels)
    s = world["store"]
    fb = FeatureBuilder(s, FeatureSpec(swi_of=("s1",), swi_carry=False))
    Py, Px = s.grid.shape
    f = fb.day(s.day_index(world["days"][-1]), swi=fb.swi()).reshape(16, Py, 4, Px, 4).mean(axis=(2, 4))
    ok = np.isfinite(f).all(0) & ((out["quality_flag"][-1] & 7) == 0)
    exact = aoa(world["X"], f[:, ok].T, weights=world["rf"].feature_importances_, folds=world["folds"])
    np.testing.assert_allclose(out["di"][-1][ok], exact.di, rtol=1e-5)
    # the DI's share: one extra run each
    times = {}
    for d in (False, True):
        t0 = time.perf_counter()
        _ours(world, 2, False, d)
        times[d] = time.perf_counter() - t0
    app = world["cf"].applicability
    note(
        f"[engine] DI: {times[True]:.2f} s with, {times[False]:.2f} s without (2 threads, one extra run each): "
        f"+{100 * (times[True] / times[False] - 1):.0f} % for the DI of {int(np.isfinite(out['di']).sum()):,} "
        f"pixel-days against {app.reference.shape[0]:,} training rows; {ok.sum():,} complete pixels of the last "
        "day equal the exact DI (rtol 1e-5)"
    )
