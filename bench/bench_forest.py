"""CompiledForest.predict vs RandomForestRegressor.predict(n_jobs=1).

The forest: 100 trees, min_samples_leaf=5, 16 features, ~545 000 nodes; 10^5 and 10^6 float32
rows; 1 and 2 threads; rows in a spatially coherent order (neighbouring sub-pixels, row
by row) and shuffled (i.i.d.). Export (treelite) and layout times and the kernel's
traversal counters are printed in the summary.

The synthetic feature rows imitate what the engine feeds the forest for one day at
250 m sub-pixels: 5 static covariates (smooth random fields, correlation 3–50 sub-pixels),
5 dynamic covariates native at 1 km (4×4 sub-pixel blocks), 4 coarse covariates native at
~10 km (40×40 blocks), all footprint-smoothed (Gaussian, σ = 1 sub-pixel) as the training
table's footprint averaging does, plus the day's doy_sin/doy_cos. The forest is trained on
rows drawn from 40 such days.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import SMOKE
from scipy import ndimage

N_TREES = 10 if SMOKE else 100
N_TRAIN = 2_000 if SMOKE else 27_000
SIZES = {"1e5": (100, 200), "1e6": (100, 200)} if SMOKE else {"1e5": (250, 400), "1e6": (1000, 1000)}


def _field(rng, ny, nx, sigma, block=1):
    by, bx = -(-ny // block), -(-nx // block)
    f = ndimage.gaussian_filter(rng.standard_normal((by, bx)), sigma / block, mode="wrap")
    f = np.repeat(np.repeat(f, block, 0), block, 1)[:ny, :nx]
    f = ndimage.gaussian_filter(f, 1.0, mode="nearest")  # footprint smoothing
    return (f - f.mean()) / f.std()


def day_rows(rng, ny, nx, doy, static):
    """(ny * nx, 16) float32 rows of one day in raster (coherent) order."""
    feats = list(static)
    feats += [_field(rng, ny, nx, 12, block=4) for _ in range(5)]
    feats += [_field(rng, ny, nx, 80, block=40) for _ in range(4)]
    a = 2 * np.pi * doy / 365.25
    feats += [np.full((ny, nx), np.sin(a)), np.full((ny, nx), np.cos(a))]
    return np.stack(feats, -1).reshape(-1, 16).astype(np.float32)


def _target(X, rng):
    return (
        0.25
        + 0.05 * np.tanh(X[:, 0])
        + 0.04 * X[:, 5] * X[:, 10]
        + 0.03 * np.sin(2 * X[:, 6])
        + 0.05 * X[:, 14]
        + 0.02 * X[:, 1] * X[:, 11]
        + 0.01 * rng.standard_normal(len(X))
    )


@pytest.fixture(scope="module")
def world():
    from sklearn.ensemble import RandomForestRegressor

    from smengine.model import CompiledForest

    rng = np.random.default_rng(545)
    ny, nx = 400, 400
    static = [_field(rng, ny, nx, s) for s in (3, 6, 12, 25, 50)]
    days = 40
    parts = [day_rows(rng, ny, nx, int(rng.integers(1, 366)), static) for _ in range(days)]
    X = np.concatenate([p[rng.choice(len(p), N_TRAIN // days, replace=False)] for p in parts])
    y = _target(X, rng)
    t0 = time.perf_counter()
    rf = RandomForestRegressor(N_TREES, min_samples_leaf=5, max_features=1 / 3, random_state=0, n_jobs=-1).fit(X, y)
    fit_s = time.perf_counter() - t0
    rf.n_jobs = 1
    t0 = time.perf_counter()
    cf = CompiledForest.from_sklearn(rf)
    build_s = time.perf_counter() - t0
    rows = {}
    for name, (h, w) in SIZES.items():
        st = [_field(rng, h, w, s) for s in (3, 6, 12, 25, 50)]
        rows[name] = day_rows(rng, h, w, 180, st)
    return {"rf": rf, "cf": cf, "rows": rows, "fit_s": fit_s, "build_s": build_s}


def test_export_time(world, note, benchmark):
    """Time of treelite export + native layout (what 'compile' costs), and the forest size."""
    import treelite.sklearn

    from smengine.model import CompiledForest

    rf, cf = world["rf"], world["cf"]
    t0 = time.perf_counter()
    model = treelite.sklearn.import_model(rf)
    t_export = time.perf_counter() - t0
    t0 = time.perf_counter()
    fresh = CompiledForest.from_treelite(model)
    t_layout = time.perf_counter() - t0
    t0 = time.perf_counter()
    tab = fresh.blocks()
    t_blocks = time.perf_counter() - t0
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    note(
        f"[forest] {cf.n_trees} trees, {cf.n_nodes} nodes, {cf.n_leaves} leaves, max depth {cf.max_depth}, "
        f"16 features; fit {world['fit_s']:.1f} s (2 cores); from_sklearn {world['build_s']:.2f} s = "
        f"treelite export {t_export:.2f} s + layout {t_layout:.2f} s; no C compiler run; block tables "
        f"{t_blocks:.2f} s ({len(tab['blocks'])} blocks, {tab['blocks'].nbytes / 2**20:.1f} MiB + leaf boxes "
        f"{tab['boxes'].nbytes / 2**20:.1f} MiB), built on first prediction"
    )
    assert cf.n_trees == N_TREES


@pytest.mark.parametrize("order", ["coherent", "iid"])
@pytest.mark.parametrize("size", list(SIZES))
def test_sklearn(world, record, size, order):
    X = world["rows"][size]
    if order == "iid":
        X = X[np.random.default_rng(0).permutation(len(X))]
    record(
        f"forest {size} rows {order}",
        "sklearn.predict n_jobs=1",
        world["rf"].predict,
        X,
        incumbent=True,
        items=len(X),
        rounds=3,
    )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("reuse", [True, "box", False])
@pytest.mark.parametrize("order", ["coherent", "iid"])
@pytest.mark.parametrize("size", list(SIZES))
def test_compiled(world, record, note, size, order, reuse, threads):
    X = world["rows"][size]
    if order == "iid":
        X = X[np.random.default_rng(0).permutation(len(X))]
    cf, rf = world["cf"], world["rf"]
    name = f"ours {threads} thr" + {True: "", "box": " box", False: " no-reuse"}[reuse]
    out = record(
        f"forest {size} rows {order}", name, cf.predict, X, n_threads=threads, reuse=reuse, rounds=3, items=len(X)
    )
    check = slice(0, 20_000)
    np.testing.assert_array_equal(out[check], rf.predict(X[check]))
    if threads == 1:
        s = cf.traversal_stats(X, reuse=reuse, n_threads=1)
        step = "block steps" if reuse is True else "node visits"
        note(
            f"[forest {size} rows {order}] {name}: {s.visits_per_row_tree:.2f} {step} per row-tree "
            f"(box hits {100 * s.hit_rate:.0f} %)"
        )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", list(SIZES))
def test_compiled_raster(world, record, note, size, threads):
    """The coherent rows given as the raster they are, (ny, nx, 16): the kernel then also
    uses the row above (``stride = nx``) as a second reference leaf before a walk."""
    h, w = SIZES[size]
    X = world["rows"][size].reshape(h, w, -1)
    cf = world["cf"]
    name = f"ours {threads} thr raster input"
    out = record(f"forest {size} rows coherent", name, cf.predict, X, n_threads=threads, rounds=3, items=h * w)
    assert out.shape == (h, w)
    np.testing.assert_array_equal(out.ravel()[:20_000], world["rf"].predict(world["rows"][size][:20_000]))
    if threads == 1:
        s = cf.traversal_stats(X, n_threads=1)
        note(
            f"[forest {size} rows coherent] {name}: {s.visits_per_row_tree:.2f} block steps per row-tree "
            f"(box hits {100 * s.hit_rate:.0f} %)"
        )


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", list(SIZES))
def test_compiled_no_stride(world, record, note, size, threads):
    """Flat coherent rows with the raster width left out (``stride=0``): only the previous
    row's leaf is a reference. The default (``stride=None``) detects the width by itself
    (``detect_stride``, included in the "ours" timings)."""
    from smengine.model import detect_stride

    X = world["rows"][size]
    cf = world["cf"]
    name = f"ours {threads} thr stride=0"
    out = record(
        f"forest {size} rows coherent", name, cf.predict, X, n_threads=threads, stride=0, rounds=3, items=len(X)
    )
    np.testing.assert_array_equal(out[:20_000], world["rf"].predict(X[:20_000]))
    if threads == 1:
        t0 = time.perf_counter()
        width = detect_stride(X)
        dt = time.perf_counter() - t0
        assert width == SIZES[size][1] or SMOKE
        s = cf.traversal_stats(X, n_threads=1, stride=0)
        note(
            f"[forest {size} rows coherent] {name}: {s.visits_per_row_tree:.2f} block steps per row-tree "
            f"(box hits {100 * s.hit_rate:.0f} %); detect_stride found width {width} in {1e3 * dt:.1f} ms"
        )


@pytest.mark.parametrize("isa", ["avx2", "c"])
@pytest.mark.parametrize("order", ["coherent", "iid"])
@pytest.mark.parametrize("size", list(SIZES))
def test_compiled_isa(world, record, monkeypatch, size, order, isa):
    """The default kernel capped to AVX2 or portable C (machines without AVX-512 / x86)."""
    monkeypatch.setenv("SMENGINE_FOREST_ISA", isa)
    X = world["rows"][size]
    if order == "iid":
        X = X[np.random.default_rng(0).permutation(len(X))]
    name = "ours 1 thr " + {"avx2": "AVX2", "c": "portable C"}[isa]
    out = record(f"forest {size} rows {order}", name, world["cf"].predict, X, n_threads=1, rounds=3, items=len(X))
    np.testing.assert_array_equal(out[:20_000], world["rf"].predict(X[:20_000]))


@pytest.mark.parametrize("size", list(SIZES))
def test_compiled_spread(world, record, size):
    X = world["rows"][size]
    record(
        f"forest {size} rows coherent",
        "ours 1 thr + spread",
        world["cf"].predict_with_spread,
        X,
        n_threads=1,
        items=len(X),
        rounds=3,
    )
