"""kNNDM cross-validation (smengine._knndm) against the logic of Linnenbrink et al. (2024)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from smengine._knndm import (
    KNNDM,
    cv_distances,
    domain_points,
    knndm_folds,
    plot_knndm,
    wasserstein_of_folds,
)
from smengine.errors import ConfigError, DataLossWarning, ValidationError

K = 10


def _clustered(n_clusters: int = 10, per: int = 30, radius: float = 2.0, seed: int = 0, side: float = 100.0):
    """``n_clusters`` discs of ``per`` uniform points of ``radius`` in a ``side`` × ``side`` square."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.05 * side, 0.95 * side, (n_clusters, 2))
    ang = rng.uniform(0, 2 * np.pi, n_clusters * per)
    rad = radius * np.sqrt(rng.uniform(0, 1, n_clusters * per))
    return np.repeat(centres, per, axis=0) + np.c_[rad * np.cos(ang), rad * np.sin(ang)]


def _square_grid(side: float = 100.0, n: int = 1000) -> np.ndarray:
    """A regular grid of about ``n`` points covering the square (the prediction domain)."""
    g = np.arange(side / np.sqrt(n) / 2, side, side / np.sqrt(n))
    return np.array(np.meshgrid(g, g)).reshape(2, -1).T


def _random_folds(n: int, k: int = K, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


def _integral_abs_cdf_diff(a: np.ndarray, b: np.ndarray) -> float:
    """∫|F_a − F_b| dr by hand: the ECDFs are constant between consecutive pooled values."""
    r = np.sort(np.r_[a, b])
    Fa = np.searchsorted(np.sort(a), r[:-1], side="right") / a.size
    Fb = np.searchsorted(np.sort(b), r[:-1], side="right") / b.size
    return float(np.sum(np.abs(Fa - Fb) * np.diff(r)))


@pytest.fixture(scope="module")
def clustered_result() -> tuple[np.ndarray, np.ndarray, KNNDM]:
    X = _clustered()
    P = _square_grid()
    return X, P, knndm_folds(X, P, k=K)


# ------------------------------------------------------------------ KS direction (R vs SciPy)


def test_scipy_greater_is_r_greater():
    # R: ks.test(x, y, alternative = "greater") has the alternative "the CDF of x lies above
    # that of y" (x stochastically smaller), statistic D+ = max(F_x - F_y). SciPy's
    # ks_2samp(x, y, alternative="greater") is the same: small-vs-large rejects, not the reverse.
    rng = np.random.default_rng(0)
    small, large = rng.uniform(0, 1, 200), rng.uniform(0, 3, 200)
    res = ks_2samp(small, large, alternative="greater")
    assert res.pvalue < 1e-10
    assert res.statistic == pytest.approx(
        np.max(
            np.mean(small[:, None] <= np.r_[small, large], axis=0)
            - np.mean(large[:, None] <= np.r_[small, large], axis=0)
        )
    )
    assert ks_2samp(large, small, alternative="greater").pvalue > 0.5


def test_clustered_training_points_do_not_get_random_cv(clustered_result):
    X, P, res = clustered_result
    assert res.ks_pvalue < 1e-50  # Gj (within clusters, ~0.3) ≪ Gij (~8): clearly rejected
    assert res.method == "hierarchical"
    assert res.n_clusters is not None and K <= res.n_clusters <= len(X) - 2


def test_random_sample_of_domain_returns_random_cv():
    # A (stratified) random sample of the square: the prediction points are not farther from
    # the training points than these are from each other.
    rng = np.random.default_rng(0)
    cell = 100 / 17
    base = np.array(np.meshgrid(np.arange(17) * cell, np.arange(17) * cell)).reshape(2, -1).T
    X = base + rng.uniform(0, cell, base.shape)
    res = knndm_folds(X, _square_grid(), k=K)
    assert res.method == "random CV" and res.n_clusters is None
    assert res.ks_pvalue >= 0.05
    sizes = np.bincount(res.folds, minlength=K)
    assert sizes.max() - sizes.min() <= 1 and set(res.folds.tolist()) == set(range(K))


@pytest.mark.parametrize("seed", [3, 8])
def test_uniform_sample_gets_folds_like_random_kfold(seed):
    # Seed 3: KS p ≈ 0.64, random CV. Seed 8: p ≈ 0.033 (the test is anti-conservative on
    # dependent NN distances), kNNDM runs, but finds nothing better than random k-fold
    # (observed W 0.20 vs 0.12 for random folds; median Gij 2.8).
    X = np.random.default_rng(seed).uniform(0, 100, (300, 2))
    res = knndm_folds(X, _square_grid(), k=K)
    W_random = np.mean([res.W_of(_random_folds(300, seed=s)) for s in range(5)])
    assert (res.method == "random CV") == (seed == 3)
    w = res.W
    assert w < 0.2 * np.median(res.Gij)  # ~0.2-0.35 against a median distance of ~2.8
    assert w < 2.0 * W_random
    assert np.median(res.Gjstar) == pytest.approx(np.median(res.Gij), rel=0.2)


# ------------------------------------------------------------------ the clustered case


def test_knndm_cv_distances_much_larger_than_random_kfold(clustered_result):
    X, P, res = clustered_result
    rand = _random_folds(len(X))
    G_rand = res.cv_distances(rand)
    W_rand = res.W_of(rand)
    W_loo = wasserstein_of_folds(X, np.arange(len(X)), P)  # leave-one-out: one point per fold
    # observed: median Gj* 17.7 (kNNDM) vs 0.36 (random), median Gij 13.3; W 3.98 vs 14.7 (LOO 14.7)
    assert np.median(res.Gjstar) > 20 * np.median(G_rand)
    w = res.W
    assert w < W_rand / 3
    assert w < W_loo / 3
    assert W_loo == pytest.approx(_integral_abs_cdf_diff(res.Gj, res.Gij))
    # kNNDM's CV distances sit near the prediction distances, not near the LOO distances
    assert abs(np.median(res.Gjstar) - np.median(res.Gij)) < abs(np.median(G_rand) - np.median(res.Gij)) / 2


def test_folds_use_every_label_and_respect_maxp(clustered_result):
    X, _, res = clustered_result
    assert res.folds.dtype.kind == "i" and res.folds.shape == (len(X),)
    assert set(res.folds.tolist()) == set(range(K))
    assert np.bincount(res.folds).max() <= 0.5 * len(X)
    assert not res.folds.flags.writeable


def test_clusters_merge_into_folds_like_cast():
    # Six clusters along x (the first principal component), sizes 10, 30, 5, 25, 10, 20 of
    # n = 100, k = 4: the clusters of >= n/k = 25 points get folds 0 and 1 in PC order, the
    # others are dealt cyclically to folds 2, 3 in PC order -> 2, 0, 3, 1, 2, 3.
    from smengine._knndm import _first_pc, _merge_to_folds

    sizes = [10, 30, 5, 25, 10, 20]
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(6), sizes)
    X = np.c_[clusters * 10.0 + rng.uniform(0, 1, 100), rng.uniform(0, 1, 100)]
    perm = rng.permutation(100)  # row order and cluster ids do not matter, only the PC order
    X, clusters = X[perm], (clusters[perm] * 7) % 6
    folds = _merge_to_folds(X, clusters, _first_pc(X), 4)
    expected = np.array([2, 0, 3, 1, 2, 3])[np.repeat(np.arange(6), sizes)[perm]]
    assert np.array_equal(folds, expected)
    # the PC's sign is fixed (largest loading positive), so mirrored data are ordered the
    # other way round: sizes 20, 10, 25, 5, 30, 10 -> 2, 3, 0, 2, 1, 3, i.e. per original cluster:
    assert np.allclose(_first_pc(-X), _first_pc(X))
    mirrored = np.array([3, 1, 2, 0, 3, 2])[np.repeat(np.arange(6), sizes)[perm]]
    assert np.array_equal(_merge_to_folds(-X, clusters, _first_pc(-X), 4), mirrored)


def test_maxp_is_binding():
    # One dominant cluster of 60 % of the points: with maxp=0.3 no fold may hold it whole.
    rng = np.random.default_rng(5)
    big = rng.normal([50, 50], 1.0, (180, 2))
    X = np.r_[big, _clustered(n_clusters=8, per=15, seed=5)]
    P = _square_grid()
    for maxp in (0.3, 0.65):
        res = knndm_folds(X, P, k=5, maxp=maxp)
        assert res.method == "hierarchical"
        assert np.bincount(res.folds).max() <= maxp * len(X)
        assert set(res.folds.tolist()) == set(range(5))
    with pytest.raises(ConfigError, match="strictly between"):
        knndm_folds(X, P, k=5, maxp=0.2)


def test_deterministic_for_a_seed():
    X, P = _clustered(seed=2), _square_grid()
    for clustering in ("hierarchical", "kmeans"):
        a = knndm_folds(X, P, clustering=clustering, seed=7, nk_len=30)
        b = knndm_folds(X.copy(), P.copy(), clustering=clustering, seed=7, nk_len=30)
        assert np.array_equal(a.folds, b.folds) and a.W == b.W and a.n_clusters == b.n_clusters
    km = knndm_folds(X, P, clustering="kmeans", nk_len=30)
    assert km.method == "kmeans" and np.bincount(km.folds).max() <= 0.5 * len(X)
    U = np.random.default_rng(3).uniform(0, 100, (300, 2))
    r1, r2 = knndm_folds(U, P, seed=1), knndm_folds(U, P, seed=2)
    assert r1.method == r2.method == "random CV" and not np.array_equal(r1.folds, r2.folds)
    assert np.array_equal(r1.folds, knndm_folds(U, P, seed=1).folds)


def test_splits_partition_the_rows(clustered_result):
    X, _, res = clustered_result
    splits = res.splits()
    assert len(splits) == K
    tests = np.concatenate([te for _, te in splits])
    assert np.array_equal(np.sort(tests), np.arange(len(X)))
    for tr, te in splits:
        assert np.intersect1d(tr, te).size == 0 and tr.size + te.size == len(X)
        assert np.unique(res.folds[te]).size == 1


# ------------------------------------------------------------------ W = ∫|F − G|


def test_W_is_the_integral_of_the_absolute_cdf_difference(clustered_result):
    # hand example: F from {1, 2, 4}, G from {1.5, 3}:
    # 1/3·0.5 + 1/6·0.5 + 1/6·1 + 1/3·1 = 0.75
    a, b = np.array([1.0, 2.0, 4.0]), np.array([1.5, 3.0])
    assert _integral_abs_cdf_diff(a, b) == pytest.approx(0.75)
    # W of a 1-D split by hand: points 0, 1, 5, 6 in folds 0, 0, 1, 1 → Gj* = 5, 4, 4, 5;
    # prediction point 3 → Gij = 2; ∫|F − G| = |4 − 2| + 1/2·|5 − 4| = 2.5
    pts = np.array([[0.0, 0], [1, 0], [5, 0], [6, 0]])
    assert np.array_equal(cv_distances(pts, [0, 0, 1, 1]), [5, 4, 4, 5])
    assert wasserstein_of_folds(pts, [0, 0, 1, 1], [[3.0, 0]]) == pytest.approx(2.5)
    X, P, res = clustered_result
    w = res.W
    assert w == pytest.approx(_integral_abs_cdf_diff(res.Gjstar, res.Gij), rel=1e-12)
    assert res.W_of(res.folds) == pytest.approx(res.W, rel=1e-12)
    assert wasserstein_of_folds(X, res.folds, P) == pytest.approx(res.W, rel=1e-12)
    assert np.array_equal(cv_distances(X, res.folds), res.Gjstar)


# ------------------------------------------------------------------ groups (station-days)


def _station_days(seed: int = 4):
    rng = np.random.default_rng(seed)
    stations = _clustered(n_clusters=8, per=6, radius=3.0, seed=seed)
    n_days = rng.integers(3, 12, len(stations))
    ids = np.repeat(np.arange(len(stations)), n_days)
    order = rng.permutation(ids.size)  # rows of a station are scattered through the table
    ids = ids[order]
    labels = np.array([f"st{i:02d}" for i in ids])
    return stations[ids], labels, ids, stations


def test_groups_share_a_fold():
    rows, labels, ids, stations = _station_days()
    P = _square_grid()
    res = knndm_folds(rows, P, k=5, groups=labels)
    assert res.folds.shape == (len(rows),) and res.Gjstar.shape == res.Gj.shape == (len(stations),)
    for s in np.unique(labels):
        assert np.unique(res.folds[labels == s]).size == 1
    # kNNDM on the groups' coordinates (in order of first appearance) gives the same folds
    first = np.unique(ids, return_index=True)[1]
    uniq_order = ids[np.sort(first)]
    direct = knndm_folds(stations[uniq_order], P, k=5)
    assert np.array_equal(direct.folds, res.point_folds)
    assert list(res.groups) == [f"st{i:02d}" for i in uniq_order]
    # comparison splits on the rows: random k-fold over station-days puts a station in the
    # training data of its own test rows (Gj* = 0); random folds of stations are better
    row_random = _random_folds(len(rows), k=5)
    assert np.all(res.cv_distances(row_random) == 0)
    st_random = _random_folds(len(stations), k=5)[res.point_of_row]
    W_row, W_station = res.W_of(row_random), res.W_of(st_random)
    assert res.W < W_station < W_row
    assert res.W_of(res.folds) == pytest.approx(res.W)


def test_groups_with_different_coordinates_raise():
    rows, labels, _, _ = _station_days()
    rows = rows.copy()
    rows[np.flatnonzero(labels == "st03")[1]] += [0.5, 0.0]
    with pytest.raises(ValidationError, match="1 group.*different coordinates.*'st03'"):
        knndm_folds(rows, _square_grid(), k=5, groups=labels)
    with pytest.raises(ValidationError, match="groups should have shape"):
        knndm_folds(rows, _square_grid(), k=5, groups=labels[:-1])


# ------------------------------------------------------------------ feature space


def _features(seed: int = 6):
    rng = np.random.default_rng(seed)
    # two features on very different scales; the training rows cover part of the space
    T = np.c_[rng.normal(0, 1, 120), rng.normal(500, 100, 120)]
    T[:60] += [2.0, 0.0]
    P = np.c_[rng.uniform(-4, 6, 800), rng.uniform(0, 1000, 800)]
    return T, P


def test_feature_space_standardises_by_the_training_rows():
    T, P = _features()
    P_nan = P.copy()
    P_nan[[3, 10, 11], [0, 1, 0]] = np.nan
    with pytest.warns(DataLossWarning, match="3 of 800 prediction point"):
        res = knndm_folds(T, P_nan, k=5, space="feature")
    assert res.space == "feature" and res.n_pred_dropped == 3 and res.pred_points.shape == (797, 2)
    mean, sd = T.mean(axis=0), T.std(axis=0, ddof=1)
    np.testing.assert_allclose(res.points, (T - mean) / sd)
    np.testing.assert_allclose(res.pred_points, (np.delete(P, [3, 10, 11], axis=0) - mean) / sd)
    np.testing.assert_allclose(res.points.std(axis=0, ddof=1), 1.0)
    # scale invariance: the second feature in other units gives the same folds
    f = np.array([1.0, 1e-3])
    with pytest.warns(DataLossWarning):
        again = knndm_folds(T * f, P_nan * f, k=5, space="feature")
    w_again = again.W
    assert np.array_equal(again.folds, res.folds) and w_again == pytest.approx(res.W)
    # without scaling the 2nd feature dominates the distances: another problem, other distances
    with pytest.warns(DataLossWarning):
        raw = knndm_folds(T, P_nan, k=5, space="feature", scale_vars=False)
    assert np.median(raw.Gij) > 10 * np.median(res.Gij)


def test_feature_space_tables_align_columns():
    pd = pytest.importorskip("pandas")
    T, P = _features()
    a = knndm_folds(T, P, k=5, space="feature")
    b = knndm_folds(
        pd.DataFrame(T, columns=["ndvi", "dem"]),
        pd.DataFrame(P[:, ::-1], columns=["dem", "ndvi"]),
        k=5,
        space="feature",
    )
    assert np.array_equal(a.folds, b.folds) and a.W == b.W
    with pytest.raises(ValidationError, match="lacks the training feature"):
        knndm_folds(
            pd.DataFrame(T, columns=["ndvi", "dem"]), pd.DataFrame(P, columns=["ndvi", "slope"]), space="feature"
        )


def test_feature_space_bad_rows():
    T, P = _features()
    T_nan = T.copy()
    T_nan[[0, 5, 7], 1] = np.nan
    with pytest.raises(ValidationError, match="3 of 120 training rows have a non-finite"):
        knndm_folds(T_nan, P, space="feature")
    with pytest.raises(ConfigError, match="needs pred_points"):
        knndm_folds(T, space="feature")
    T_const = np.c_[T, np.ones(len(T))]
    with pytest.raises(ValidationError, match=r"column\(s\) \[2\] are constant"):
        knndm_folds(T_const, np.c_[P, np.ones(len(P))], space="feature")
    with pytest.raises(ValidationError, match="no prediction point is left"):
        knndm_folds(T, np.full_like(P, np.nan), space="feature")


def test_feature_space_groups_use_group_means():
    T, P = _features()
    groups = np.arange(len(T)) // 4
    res = knndm_folds(T, P, k=5, space="feature", groups=groups)
    Z = (T - T.mean(axis=0)) / T.std(axis=0, ddof=1)
    np.testing.assert_allclose(res.points, Z.reshape(-1, 4, 2).mean(axis=1))
    assert all(np.unique(res.folds[groups == g]).size == 1 for g in range(30))


# ------------------------------------------------------------------ prediction domain


def test_domain_from_convex_hull():
    square = np.array([[0.0, 0], [100, 0], [100, 100], [0, 100], [40, 60]])
    P = domain_points(hull_of=square)
    assert abs(len(P) - 1000) <= 50
    assert P.min() > 0 and P.max() < 100
    xs = np.unique(np.round(P[:, 0], 9))
    assert np.allclose(np.diff(xs), np.diff(xs)[0])  # a regular grid
    tri = np.array([[0.0, 0], [100, 0], [0, 100]])
    Q = domain_points(hull_of=tri, samplesize=300)
    assert abs(len(Q) - 300) <= 15 and np.all(Q.sum(axis=1) <= 100 + 1e-9) and np.all(Q >= 0)
    with pytest.raises(ValidationError, match="degenerate"):
        domain_points(hull_of=[[0.0, 0], [1, 1], [2, 2]])
    # knndm_folds without pred_points samples the hull of the training points
    X = _clustered()
    res = knndm_folds(X)
    assert abs(len(res.pred_points) - 1000) <= 50 and res.n_pred_dropped == 0


def test_domain_from_raster_pixel_centres():
    x = np.arange(200) * 1000.0 + 500
    y = np.arange(150) * -1000.0 + 4e6
    P = domain_points(x=x, y=y, axes=True)
    assert 800 <= len(P) <= 1200
    assert np.all(np.isin(P[:, 0], x)) and np.all(np.isin(P[:, 1], y))  # pixel centres
    assert P[:, 0].min() < x[10] and P[:, 0].max() > x[-10]  # spread over the domain
    assert np.array_equal(P, domain_points(x=x, y=y, axes=True))  # deterministic
    XX, YY = np.meshgrid(x[:20], y[:20])
    XX[0, 0] = np.nan
    small = domain_points(x=XX, y=YY)
    assert small.shape == (399, 2)  # fewer than samplesize: every finite pixel
    assert np.array_equal(domain_points(P), P)
    with pytest.raises(ConfigError, match="exactly one"):
        domain_points(P, hull_of=P)
    with pytest.raises(ValidationError, match="same shape"):
        domain_points(x=x, y=y)


# ------------------------------------------------------------------ plot


def test_plot_knndm_writes_png(tmp_path, clustered_result):
    X, P, res = clustered_result
    path = plot_knndm(
        res,
        tmp_path / "g.png",
        others={"random k-fold": res.cv_distances(_random_folds(len(X)))},
    )
    assert path.exists() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    T, Pf = _features()
    feat = plot_knndm(knndm_folds(T, Pf, k=5, space="feature"), tmp_path / "f.png", title="feature space")
    assert feat.stat().st_size > 1000


# ------------------------------------------------------------------ bad inputs


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"k": 1}, ConfigError, "k should be an integer >= 2"),
        ({"k": 2.5}, ConfigError, "k should be an integer"),
        ({"maxp": 0.1}, ConfigError, r"maxp should be strictly between 1/k = 0.1 and 1"),
        ({"maxp": 1.0}, ConfigError, "strictly between"),
        ({"clustering": "dbscan"}, ConfigError, "clustering should be one of"),
        ({"space": "time"}, ConfigError, "space should be one of"),
        ({"nk_len": 0}, ConfigError, "nk_len"),
        ({"k": 40}, ValidationError, "needs at least 40 training points, got 30"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    X = _clustered(n_clusters=3, per=10)
    with pytest.raises(error, match=match):
        knndm_folds(X, _square_grid(), **kwargs)


def test_bad_shapes():
    X = _clustered(n_clusters=3, per=10)
    with pytest.raises(ValidationError, match="2 columns"):
        knndm_folds(np.c_[X, X[:, :1]], _square_grid())
    with pytest.raises(ValidationError, match="2-D"):
        knndm_folds(X[:, 0], _square_grid())
    with pytest.raises(ValidationError, match="pred_points has 3 columns"):
        knndm_folds(X, np.c_[_square_grid(), np.zeros(1024)])
    X_nan = X.copy()
    X_nan[4, 0] = np.nan
    with pytest.raises(ValidationError, match="1 of 30 training rows"):
        knndm_folds(X_nan, _square_grid())
    res = knndm_folds(X, _square_grid(), k=3)
    with pytest.raises(ValidationError, match=r"shape \(30,\)"):
        res.W_of(res.folds[:-1])
    with pytest.raises(ValidationError, match="single fold"):
        res.W_of(np.zeros(30, dtype=int))


def test_domain_points_of_a_product_grid_are_its_pixel_centres() -> None:
    from smengine.grid import Grid

    g = Grid.from_bounds(4_300_000, 3_080_000, 4_320_000, 3_100_000)
    pts = domain_points(grid=g, samplesize=400)
    xs = 4_300_000 + (np.arange(20) + 0.5) * 1000
    ys = 3_100_000 - (np.arange(20) + 0.5) * 1000
    np.testing.assert_array_equal(pts, domain_points(x=xs, y=ys, axes=True, samplesize=400))
    assert pts.shape == (400, 2)
    with pytest.raises(ConfigError, match="exactly one"):
        domain_points(grid=g, x=xs, y=ys)
