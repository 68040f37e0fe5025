"""smengine.pseudoproxy: dissimilarity index / area of applicability against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smengine.errors import ConfigError, ValidationError
from smengine.metrics import evaluate
from smengine.pseudoproxy import aoa, pixel_scores, skill_by_bin


def _brute(T, X, w, folds):
    mu, sd = T.mean(0), T.std(0, ddof=1)
    w = w / w.max()
    Zt, Zx = (T - mu) / sd * w, (X - mu) / sd * w
    D = np.sqrt(((Zt[:, None] - Zt[None]) ** 2).sum(-1))
    dbar = D[~np.eye(len(T), dtype=bool)].mean()
    same = folds[:, None] == folds[None]
    train_di = np.where(same, np.inf, D).min(1) / dbar
    q1, q3 = np.percentile(train_di, [25, 75])
    thr = train_di[train_di <= q3 + 1.5 * (q3 - q1)].max()
    di = np.sqrt(((Zx[:, None] - Zt[None]) ** 2).sum(-1)).min(1) / dbar
    return di, train_di, thr, dbar


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aoa_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    T = rng.normal(size=(300, 5)) * [1, 2, 0.5, 3, 1] + [0, 1, 2, 3, 4]
    X = rng.normal(size=(200, 5)) * 2.5 + [0, 1, 2, 3, 4]
    w = rng.random(5) + 0.1
    folds = rng.integers(0, 7, 300)
    res = aoa(T, X, weights=w, folds=folds)
    di, train_di, thr, dbar = _brute(T, X, w, folds)
    np.testing.assert_allclose(res.di, di, rtol=1e-10)
    np.testing.assert_allclose(res.train_di, train_di, rtol=1e-10)
    assert res.threshold == pytest.approx(thr, rel=1e-10) and res.mean_distance == pytest.approx(dbar, rel=1e-10)
    np.testing.assert_array_equal(res.inside, di <= thr)
    assert 0 < res.inside.mean() < 1  # the wide new cloud is partly outside


def test_aoa_properties():
    rng = np.random.default_rng(5)
    T = rng.normal(size=(100, 3))
    X = np.vstack([T[:3], [[50.0, 0, 0]], [[np.nan, 0, 0]], [[0, 0, 1e6]]])
    res = aoa(T, X, weights=[1.0, 1.0, 0.0])  # third predictor carries no weight
    assert (res.di[:3] == 0).all() and res.inside[:3].all()
    assert not res.inside[3] and res.di[3] > 10
    assert np.isnan(res.di[4]) and not res.inside[4]
    assert res.di[5] == pytest.approx(aoa(T, [[0.0, 0.0, 0.0]], weights=[1.0, 1.0, 0.0]).di[0], rel=1e-12)
    assert res.inside[5], "a zero-weight predictor must not move a row out of the AOA"
    with pytest.raises(ValidationError, match="same number of columns"):
        aoa(T, X[:, :2])
    with pytest.raises(ValidationError, match="at least 2 folds"):
        aoa(T, X, folds=np.zeros(100))
    with pytest.raises(ConfigError, match="non-negative"):
        aoa(T, X, weights=[1.0, -1.0, 0.0])


def test_pixel_scores_and_bins():
    rng = np.random.default_rng(0)
    ref = rng.random((60, 3, 4))
    pred = ref + 0.05 + 0.02 * rng.standard_normal(ref.shape)
    s = pixel_scores(pred, ref, None)
    assert len(s) == 12
    m = evaluate(pred[:, 1, 2], ref[:, 1, 2])
    row = s[(s.row == 1) & (s.col == 2)].iloc[0]
    assert m["R"] == row.R and row.ubRMSE == m["ubRMSE"] and row.bias == m["bias"] and m["KGE"] == row.KGE
    s["dist"] = np.arange(12.0)
    b = skill_by_bin(s, "dist", [-1, 5.5, 20])
    assert list(b["n"]) == [6, 6]
    assert b["bias_median"].iloc[0] == pytest.approx(np.median(s.bias[:6]))
    with pytest.raises(ValidationError, match="lack column 'nope'"):
        skill_by_bin(s, "nope", [0, 1])
    with pytest.raises(ValidationError, match="equal"):
        pixel_scores(pred, ref[:, :2], None)
    assert isinstance(b, pd.DataFrame)


def _tile(path, edit=None):
    """10 × 8 pixels of 4 × 4 sub-pixels, 60 days of ``elev`` and ``ssm``; ``edit(t, ssm, rng)``
    may change day ``t``'s ``ssm`` in place."""
    from smengine.grid import Grid
    from smengine.tiles import TileStore, TileWriter

    grid = Grid.from_bounds(4_000_000, 3_000_000, 4_010_000, 3_008_000, tile_size=100)  # 10 × 8 px, 40 × 32 sub-px
    days = np.datetime64("2020-01-01") + np.arange(60).astype("timedelta64[D]")
    rng = np.random.default_rng(7)
    ny, nx = grid.subpixel_shape
    with TileWriter(path, grid, days, ["elev"], ["ssm"], {"elev": "m", "ssm": "m3 m-3"}) as w:
        w.write_static("elev", np.add.outer(np.arange(ny), np.arange(nx)).astype(np.float32))
        for t in range(days.size):
            ssm = 0.2 + 0.1 * np.sin(t / 5 + np.arange(nx) / 9)[None, :] + 0.01 * rng.standard_normal((ny, nx))
            if edit is not None:
                edit(t, ssm, rng)
            w.write_dynamic(t, "ssm", ssm.astype(np.float32))
    return TileStore.open(path), days


def test_run_pseudoproxy_on_a_tile(tmp_path):
    from smengine.features import FeatureBuilder, FeatureSpec
    from smengine.pseudoproxy import run_pseudoproxy

    store, days = _tile(tmp_path / "t.h5")
    spec = FeatureSpec(swi_T=(5.0,), swi_carry=False)
    fb = FeatureBuilder(store, spec)
    sw = fb.swi()
    grid = store.grid
    Py, Px = grid.shape
    # the pseudo-truth: the pixel mean of a smooth function of the features
    ref = np.stack([fb.day(t, swi=sw)[[1, 2]].mean(0).reshape(Py, 4, Px, 4).mean(axis=(1, 3)) for t in range(60)])
    ref = ref.astype(np.float32)
    st = pd.DataFrame(
        {
            "id": ["A", "B", "C", "D"],
            "x": [4_000_500.0, 4_003_500, 4_006_500, 4_009_500],
            "y": [3_007_500.0, 3_004_500, 3_001_500, 3_005_500],
        }
    )
    rows = []
    for sid, x, y in zip(st["id"], st["x"], st["y"], strict=True):
        r, c = (int(v[0]) for v in grid.rowcol(np.array([x]), np.array([y]), subpixel=True))
        for t in range(0, 60, 2):  # the CRNS sampling: every other day
            rows.append(
                {
                    "station": sid,
                    "date": pd.Timestamp(days[t]),
                    "target": np.nan,
                    **dict(zip(fb.names, fb.day(t, swi=sw)[:, r, c].tolist(), strict=True)),
                }
            )
    table = pd.DataFrame(rows)
    table.attrs["spec"] = spec.to_dict()
    table.attrs["units"] = dict(fb.units)  # as features.training_table records them
    names = ["elev", "ssm", "swi5_ssm", "doy_sin"]
    res = run_pseudoproxy(table, names, store, ref, days, st, n_estimators=30, n_threads=1, sample_every=5, min_obs=20)
    # targets are the reference at the station pixels on the table's days
    fp = res.forest.cv_predictions
    r0, c0 = (int(v[0]) for v in grid.rowcol(np.array([4_003_500.0]), np.array([3_004_500.0])))
    want = ref[np.searchsorted(days, fp[fp.station == "B"]["date"].to_numpy().astype("datetime64[D]")), r0, c0]
    np.testing.assert_array_equal(fp[fp.station == "B"]["target"].to_numpy(), want)
    s = res.scores
    assert len(s) == Py * Px and s["station_pixel"].sum() == 4
    k = (s.row == 7) & (s.col == 0)  # pixel centre (4 000 500, 3 000 500): 6.0 km from A, 3.6 km from B
    assert s.loc[k, "distance_km"].iloc[0] == pytest.approx(min(np.hypot(0, 7000), np.hypot(3000, 4000)) / 1000)
    assert s["R"].median() > 0.8  # a smooth pseudo-truth is learnt off-site
    assert np.nanmax(s["DI"]) > np.nanmin(s["DI"]) >= 0
    assert res.by_distance["n"].sum() == Py * Px - 4 and res.aoa_table["n"].sum() == Py * Px - 4
    with pytest.raises(ValidationError, match="reference has shape"):
        run_pseudoproxy(table, names, store, ref[:5], days, st)
    with pytest.raises(ValidationError, match="stations table lacks"):
        run_pseudoproxy(table, names, store, ref, days, st.iloc[:2])
