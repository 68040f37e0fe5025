"""Dissimilarity index and area of applicability per pixel-day (smengine.model.Applicability, the engine's di).

The engine's ``di`` must equal the exact DI of :func:`smengine.pseudoproxy.aoa` of the pixel-mean
features (the forest's features averaged over the valid sub-pixels, built here with
``FeatureBuilder``); a thinned reference stays within its stated error bound.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from test_pseudoproxy import _tile  # tests/ is on sys.path (rootdir-less test modules)

from smengine.engine import TileRunner, predict
from smengine.errors import DataError, SMEngineWarning, ValidationError
from smengine.features import FeatureBuilder, FeatureSpec
from smengine.model import Applicability, CompiledForest, train
from smengine.product import CODE_MASK, OUTSIDE_AOA, QUALITY_FLAGS, make_product, open_product, write_netcdf
from smengine.pseudoproxy import aoa

NAMES = ["elev", "ssm", "swi5_ssm", "doy_sin"]
STATIONS = pd.DataFrame(
    {
        "id": ["A", "B", "C", "D"],
        "x": [4_000_500.0, 4_003_500, 4_006_500, 4_009_500],
        "y": [3_007_500.0, 3_004_500, 3_001_500, 3_005_500],
    }
)


def _edit(t, ssm, rng):
    """Sub-pixel gaps (partial pixels) and, from day 40, a far-off patch (pixel-days outside the
    area of applicability)."""
    ssm[rng.random(ssm.shape) < 0.04] = np.nan
    if t >= 40:
        ssm[:8, :8] += 0.4


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store, days = _tile(tmp_path_factory.mktemp("aoa") / "t.h5", _edit)
    spec = FeatureSpec(swi_T=(5.0,), swi_carry=False)
    fb = FeatureBuilder(store, spec)
    sw = fb.swi()
    grid = store.grid
    rows = []
    for sid, x, y in zip(STATIONS["id"], STATIONS["x"], STATIONS["y"], strict=True):
        r, c = (int(v[0]) for v in grid.rowcol(np.array([x]), np.array([y]), subpixel=True))
        for t in range(0, 40, 2):
            f = fb.day(t, swi=sw)[:, r, c]
            rows.append({"station": sid, "date": pd.Timestamp(days[t]), **dict(zip(fb.names, f.tolist(), strict=True))})
    table = pd.DataFrame(rows)
    table["target"] = 0.1 + 0.5 * table["ssm"] + 0.001 * table["elev"]
    table.attrs["units"] = dict(fb.units)
    forest = train(table, NAMES, cv=("site",), search=False, n_estimators=20, random_state=3, n_jobs=1)
    # the exact pixel-mean features of every day: the mean over the sub-pixels with every feature finite
    cols = [fb.names.index(n) for n in NAMES]
    Py, Px = grid.shape
    feats = []
    for t in range(days.size):
        f = fb.day(t, swi=sw)[cols].reshape(len(NAMES), Py, 4, Px, 4).transpose(0, 1, 3, 2, 4)
        f = f.reshape(len(NAMES), Py, Px, 16).astype(np.float64)
        ok = np.isfinite(f).all(0)
        with np.errstate(invalid="ignore"):
            feats.append(np.where(ok, f, 0.0).sum(-1) / ok.sum(-1))
    return {"store": store, "days": days, "forest": forest, "table": table, "features": np.stack(feats)}


def _exact(world, **kw):
    """pseudoproxy.aoa of the pixel-mean features against the training rows (stations as folds)."""
    t = world["table"].dropna(subset=NAMES)
    X = world["features"].transpose(0, 2, 3, 1).reshape(-1, len(NAMES))
    rf = world["forest"].estimator
    res = aoa(t[NAMES].to_numpy(float), X, weights=rf.feature_importances_, folds=t["station"].to_numpy(), **kw)
    return res, res.di.reshape(world["features"].shape[0], *world["features"].shape[2:])


def test_engine_di_equals_the_exact_di(world):
    cf = world["forest"].compile()
    assert cf.applicability is not None and cf.applicability.max_error == 0  # 160 rows: no thinning
    _, out = TileRunner(world["store"], cf, n_threads=2, di=True).predict_arrays()
    code = out["quality_flag"] & CODE_MASK
    has = code <= QUALITY_FLAGS["partial"]
    assert (code == QUALITY_FLAGS["partial"]).any() and (code == QUALITY_FLAGS["good"]).any()
    res, want = _exact(world, random_state=3)
    assert res.threshold == pytest.approx(cf.applicability.threshold, rel=1e-12)
    assert res.mean_distance == pytest.approx(cf.applicability.mean_distance, rel=1e-12)
    np.testing.assert_allclose(out["di"][has], want[has], rtol=2e-6)  # di is float32
    assert np.isnan(out["di"][~has]).all() and np.isnan(out["sm"][~has]).all()
    # the AOA bit is di > threshold, and some pixel-days are outside, the far-off patch among them
    bit = (out["quality_flag"] & OUTSIDE_AOA) > 0
    np.testing.assert_array_equal(bit, out["di"] > np.float32(cf.applicability.threshold))
    assert 0 < bit.mean() < 0.5 and bit[40:, :2, :2].all()
    # without di the same run gives the same layers and plain codes
    _, plain = TileRunner(world["store"], cf, n_threads=1).predict_arrays()
    assert "di" not in plain
    np.testing.assert_array_equal(plain["quality_flag"], code)
    np.testing.assert_array_equal(plain["sm"], out["sm"])


def test_di_is_deterministic(world):
    cf = world["forest"].compile()
    a = TileRunner(world["store"], cf, n_threads=1, di=True, chunk_days=3).predict_arrays()[1]
    b = TileRunner(world["store"], cf, n_threads=2, di=True, chunk_days=8, day_inner=True).predict_arrays()[1]
    np.testing.assert_array_equal(a["di"], b["di"])
    np.testing.assert_array_equal(a["quality_flag"], b["quality_flag"])
    again = train(world["table"], NAMES, cv=("site",), search=False, n_estimators=20, random_state=3, n_jobs=1)
    assert again.applicability == world["forest"].applicability


def test_thinned_reference_error_is_bounded():
    rng = np.random.default_rng(1)
    # station-like rows: 30 stations × 400 days of smooth series, 6 features
    t = np.arange(400)
    T = np.concatenate(
        [
            np.column_stack([np.full(400, s % 7), np.sin(t / 30 + s), np.cos(t / 50 + s), rng.normal(0, 0.1, 400)])
            @ rng.normal(size=(4, 6))
            for s in range(30)
        ]
    )
    folds = np.repeat(np.arange(30), 400)
    X = rng.normal(size=(3000, 6)) * T.std(0) * 1.5 + T.mean(0)
    w = rng.random(6) + 0.05
    exact = Applicability.fit(T, weights=w, folds=folds)
    thin = Applicability.fit(T, weights=w, folds=folds, max_reference=2000)
    assert thin.reference.shape[0] <= 2000 < exact.reference.shape[0] == T.shape[0]
    assert thin.max_error > 0 and thin.config["n_reference"] == thin.reference.shape[0]
    # training DIs, d-bar and threshold come from every row
    np.testing.assert_array_equal(thin.train_di, exact.train_di)
    assert thin.threshold == exact.threshold and thin.mean_distance == exact.mean_distance
    d0, d1 = exact.di(X), thin.di(X)
    np.testing.assert_allclose(d0, aoa(T, X, weights=w, folds=folds).di, rtol=1e-12)
    err = d1 - d0
    assert (err >= -1e-12).all() and (err <= thin.max_error + 1e-12).all()
    assert err.max() > 0  # the bound is not vacuous here
    # the thinned rows are training rows (a subset), kept in their order
    Z = exact.reference
    assert np.isin(thin.reference.view([("", float)] * 6), Z.view([("", float)] * 6)).all()


def test_save_load_round_trip_and_old_files(world, tmp_path):
    cf = world["forest"].compile()
    path = cf.save(tmp_path / "m.smf.h5")
    back = CompiledForest.load(path)
    assert back.applicability == cf.applicability and back.applicability is not cf.applicability
    X = world["features"][50].reshape(len(NAMES), -1).T
    np.testing.assert_array_equal(back.applicability.di(X), cf.applicability.di(X))
    # a changed reference is caught
    import h5py

    with h5py.File(path, "r+") as f:
        f["applicability/reference"][0, 0] += 1.0
    with pytest.raises(DataError, match="applicability"):
        CompiledForest.load(path)
    # a model file without a reference (written before forests carried one) loads and gives no di
    cf.applicability = None
    old = CompiledForest.load(cf.save(tmp_path / "old.smf.h5"))
    assert old.applicability is None
    ds = predict(world["store"], old, days=world["days"][:5], n_threads=1)
    assert "di" not in ds and "flag_masks" not in ds["quality_flag"].attrs
    with pytest.warns(SMEngineWarning, match="no area-of-applicability reference"):
        ds = predict(world["store"], old, days=world["days"][:5], n_threads=1, di=True)
    assert "di" not in ds


def test_product_carries_di_and_the_flag_bit(world, tmp_path):
    cf = world["forest"].compile()
    ds = predict(world["store"], cf, n_threads=1)  # on by default: the forest carries a reference
    assert "di" in ds and ds["di"].attrs["units"] == "1"
    assert ds["di"].attrs["long_name"] == "dissimilarity index (Meyer and Pebesma 2021)"
    assert f"{cf.applicability.threshold:.6g}" in ds["di"].attrs["comment"]
    qf = ds["quality_flag"].attrs
    assert qf["flag_meanings"].split()[-1] == "outside_aoa"
    assert list(qf["flag_values"]) == [0, 1, 2, 3, 4, 8] and list(qf["flag_masks"]) == [7, 7, 7, 7, 7, 8]
    assert "di" in ds["sm"].attrs["ancillary_variables"].split()
    off = predict(world["store"], cf, n_threads=1, di=False)
    assert "di" not in off and int(off["quality_flag"].max()) <= 4
    back = open_product(write_netcdf(ds, tmp_path / "p.nc"))
    np.testing.assert_array_equal(back["di"].values, ds["di"].values)
    np.testing.assert_array_equal(back["quality_flag"].values, ds["quality_flag"].values)
    assert list(back["quality_flag"].attrs["flag_masks"]) == [7, 7, 7, 7, 7, 8]
    # make_product checks the bit against di and the threshold
    a = [ds[k].values for k in ("sm", "sm_uncertainty", "sm_subpixel_sd", "valid_fraction", "quality_flag")]
    flag = a[4] ^ OUTSIDE_AOA
    kw = {"grid": world["store"].grid, "times": world["days"], "di": ds["di"].values}
    with pytest.raises(ValidationError, match="outside_aoa"):
        make_product(*a[:4], flag, di_threshold=cf.applicability.threshold, **kw)
    with pytest.raises(ValidationError, match="unknown codes"):
        make_product(*a, grid=world["store"].grid, times=world["days"])  # the bit without di


def test_pseudoproxy_uses_the_engine_di(world):
    from smengine.pseudoproxy import run_pseudoproxy

    store, days = world["store"], world["days"]
    ref = np.full((days.size, *store.grid.shape), 0.25, np.float32)
    ref += 0.1 * np.sin(np.arange(days.size) / 5)[:, None, None].astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        res = run_pseudoproxy(
            world["table"], NAMES, store, ref, days, STATIONS, n_estimators=10, n_threads=1, sample_every=4, min_obs=5
        )
    cf = res.forest.compile()
    _, out = TileRunner(store, cf, n_threads=1, di=True).predict_arrays(days)
    np.testing.assert_array_equal(res.aoa.di, out["di"][::4].ravel())
    assert res.aoa.threshold == cf.applicability.threshold


def test_cli_predict_di_switch(world, tmp_path):
    from click.testing import CliRunner

    from smengine.cli import cli

    model = world["forest"].compile().save(tmp_path / "m.smf.h5")
    tile = str(world["store"].path)
    found = {}
    for flag in ("", "--no-di"):
        out = tmp_path / f"out{flag}"
        args = ["-q", "predict", str(model), tile, "--out", str(out), "--threads", "1", "--end", "2020-01-10"]
        r = CliRunner().invoke(cli, args + ([flag] if flag else []))
        assert r.exit_code == 0, r.output
        (nc,) = sorted(out.rglob("*.nc"))
        with open_product(nc) as ds:
            found[flag] = "di" in ds
    assert found == {"": True, "--no-di": False}
