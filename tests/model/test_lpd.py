"""Local point density (Schumacher et al. 2025) beside the dissimilarity index: Applicability.lpd, the
training LPD, model files, the engine's and the CLI's ``lpd``.

Every count is checked against a brute-force NumPy count of the training rows ``i`` with
``||z(x) - z_i|| / dbar < threshold``, the distance computed as ``Applicability.di`` computes it.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil

import h5py
import numpy as np
import pytest
import test_applicability  # tests/ is on sys.path (rootdir-less test modules)
from test_applicability import NAMES

import smengine.model._applicability as _app
from smengine.engine import TileRunner, predict
from smengine.errors import ConfigError, DataError, ValidationError
from smengine.model import Applicability, CompiledForest
from smengine.product import CODE_MASK, OUTSIDE_AOA, QUALITY_FLAGS, make_product, open_product, write_netcdf

world = test_applicability.world  # the small tile, its forest (with an applicability reference) and pixel means


def _distances(app, T, X, block=256):
    """DI of every row of ``X`` to every complete row of ``T`` (as Applicability.di computes it), blockwise."""
    ZT = app.standardise(T[np.isfinite(T).all(1)])
    ZX = app.standardise(X)
    return np.concatenate(
        [
            np.sqrt(((ZX[a : a + block, None, :] - ZT[None, :, :]) ** 2).sum(-1)) / app.mean_distance
            for a in range(0, max(len(X), 1), block)
        ]
    )


def _brute(app, T, X, *, threshold=None, x_folds=None, t_folds=None, dist=None):
    """LPD of the rows of ``X`` against the complete rows of ``T`` by brute force (NaN for incomplete
    rows of ``X``); with folds, only pairs in different folds count."""
    thr = app.threshold if threshold is None else threshold
    d = _distances(app, T, X) if dist is None else dist
    hit = d < thr
    if t_folds is not None:
        hit &= np.asarray(x_folds)[:, None] != np.asarray(t_folds)[np.isfinite(T).all(1)][None, :]
    out = hit.sum(1).astype(float)
    out[~np.isfinite(app.standardise(X)).all(1)] = np.nan
    return out


def _old_digest(app):
    """The digest as smengine wrote it before the LPD (no optional arrays)."""
    h = hashlib.sha256(b"smengine-applicability;")
    h.update(json.dumps([app.feature_names, app.mean_distance, app.threshold, app.cell]).encode())
    for name in ("mean", "scale", "weights", "reference", "train_di"):
        a = getattr(app, name)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return "sha256:" + h.hexdigest()


@pytest.fixture(scope="module")
def table():
    """600 training rows in 12 folds (a few incomplete), unequal weights."""
    rng = np.random.default_rng(0)
    T = rng.normal(size=(600, 5))
    T[:, 1] *= 3
    T[[5, 77, 300], [0, 3, 4]] = np.nan
    folds = np.repeat(np.arange(12), 50)
    w = rng.random(5) + 0.1
    return T, folds, w


def test_lpd_equals_a_brute_force_count(table, monkeypatch):
    T, folds, w = table
    app = Applicability.fit(T, weights=w, folds=folds)
    assert app.exact and app.reference_count is None and app.n_train == 597
    rng = np.random.default_rng(1)
    X = np.concatenate([rng.normal(size=(1500, 5)) * [1.5, 4, 1.5, 1.5, 1.5], T[:200]])  # training rows: ties
    X[::7, 2] = np.nan
    X[3, 1] = np.inf
    X[10] = 1e3  # far outside: 0
    want = _brute(app, T, X)
    got = app.lpd(X)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[::7]).all() and np.isnan(got[3]) and got[10] == 0
    assert np.nanmax(got) > 20 and (got == 0).any()
    np.testing.assert_array_equal(app.lpd(X, workers=3), got)  # threads do not change it
    # pairs near the radius are decided on the DI's own distance: a wide margin sends many there
    monkeypatch.setattr(_app, "_LPD_MARGIN", 0.2)
    np.testing.assert_array_equal(app.lpd(X), got)
    # the LPD and the DI agree: LPD > 0 exactly where some training row has a DI below the threshold
    di = app.di(X)
    np.testing.assert_array_equal(got[np.isfinite(di)] > 0, di[np.isfinite(di)] < app.threshold)
    with pytest.raises(ValidationError, match="X should be"):
        app.lpd(X[:, :3])
    assert app.lpd(np.zeros((0, 5))).shape == (0,)


def test_training_lpd_counts_other_folds_only(table, monkeypatch):
    T, folds, w = table
    app = Applicability.fit(T, weights=w, folds=folds)
    ok = np.isfinite(T).all(1)
    want = _brute(app, T, T[ok], x_folds=folds[ok], t_folds=folds)
    assert app.train_lpd.dtype == np.int64 and app.train_lpd.shape == app.train_di.shape
    np.testing.assert_array_equal(app.train_lpd, want)
    # CAST's numbers: avrgLPD the rounded mean, and the largest
    assert app.avrg_lpd == int(np.round(want.mean())) and app.max_lpd == int(want.max()) > 0
    s = app.summary()
    assert s == {
        "threshold": app.threshold,
        "avrg_lpd": app.avrg_lpd,
        "max_lpd": app.max_lpd,
        "n_train": 597,
        "n_reference": 597,
        "exact": True,
        "max_error": 0.0,
    }
    assert json.loads(json.dumps(s)) == s
    assert f"avrgLPD {app.avrg_lpd}, maxLPD {app.max_lpd}" in repr(app)
    # the same with a wide margin, and with threads
    monkeypatch.setattr(_app, "_LPD_MARGIN", 0.2)
    again = Applicability.fit(T, weights=w, folds=folds, workers=3)
    np.testing.assert_array_equal(again.train_lpd, want)
    # without folds every row is its own fold: only the row itself is left out
    own = Applicability.fit(T, weights=w)
    want_own = _brute(own, T, T[ok], x_folds=np.flatnonzero(ok), t_folds=np.arange(len(T)))
    np.testing.assert_array_equal(own.train_lpd, want_own)
    # lpd=False: no training LPD and no summary numbers, the DI reference unchanged
    off = Applicability.fit(T, weights=w, folds=folds, lpd=False)
    assert off.train_lpd is None and off.avrg_lpd is None and off.summary()["max_lpd"] is None
    np.testing.assert_array_equal(off.train_di, app.train_di)
    assert off.threshold == app.threshold and off.digest != app.digest
    np.testing.assert_array_equal(off.lpd(T[:50]), app.lpd(T[:50]))


def _stations(n_st=12, n_days=150, seed=1):
    """Station-like rows: smooth series per station, 6 features."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_days)
    T = np.concatenate(
        [
            np.column_stack(
                [np.full(n_days, s % 7), np.sin(t / 30 + s), np.cos(t / 50 + s), rng.normal(0, 0.1, n_days)]
            )
            @ rng.normal(size=(4, 6))
            for s in range(n_st)
        ]
    )
    return T, np.repeat(np.arange(n_st), n_days), rng


def test_thinned_lpd_is_bracketed_by_the_exact_one():
    T, folds, rng = _stations()
    w = rng.random(6) + 0.05
    exact = Applicability.fit(T, weights=w, folds=folds)
    thin = Applicability.fit(T, weights=w, folds=folds, max_reference=400)
    assert not thin.exact and thin.max_error > 0 and thin.reference.shape[0] <= 400
    # each kept row stands for the rows of its cube
    rc = thin.reference_count
    assert rc.dtype == np.int64 and rc.shape == (thin.reference.shape[0],) and rc.sum() == T.shape[0]
    Z = exact.reference
    keys = np.floor(Z / thin.cell).astype(np.int64)
    kept = np.floor(thin.reference / thin.cell).astype(np.int64)
    for k in rng.choice(kept.shape[0], 25, replace=False):
        assert rc[k] == (keys == kept[k]).all(1).sum()
    # the training LPD comes from every row, as the training DI
    np.testing.assert_array_equal(thin.train_lpd, exact.train_lpd)
    X = rng.normal(size=(600, 6)) * T.std(0) * 1.2 + T.mean(0)
    X = np.concatenate([X, T[::40]])
    got = thin.lpd(X, workers=2)
    e = thin.max_error * (1 + 1e-9)
    d = _distances(exact, T, X)
    lo = _brute(exact, T, X, threshold=thin.threshold - e, dist=d)
    hi = _brute(exact, T, X, threshold=thin.threshold + e, dist=d)
    mid = _brute(exact, T, X, dist=d)
    np.testing.assert_array_equal(exact.lpd(X), mid)
    assert (lo <= got).all() and (got <= hi).all()
    assert (got != mid).any()  # the bracket is not vacuous ...
    assert (got > mid).any() and (got < mid).any()  # ... and the error goes both ways
    assert thin.summary()["exact"] is False and thin.summary()["n_reference"] == thin.reference.shape[0]


def test_model_files_round_trip_and_old_files(world, tmp_path):
    cf = world["forest"].compile()
    app = cf.applicability
    assert app.train_lpd is not None and app.exact
    path = cf.save(tmp_path / "m.smf.h5")
    back = CompiledForest.load(path).applicability
    assert back == app and back.digest == app.digest
    np.testing.assert_array_equal(back.train_lpd, app.train_lpd)
    X = world["features"][50].reshape(len(NAMES), -1).T
    np.testing.assert_array_equal(back.lpd(X), app.lpd(X))
    # the LPD arrays are covered by the digest: deleting one is caught
    bad = shutil.copy(path, tmp_path / "bad.smf.h5")
    with h5py.File(bad, "r+") as f:
        del f["applicability/train_lpd"]
    with pytest.raises(DataError, match="applicability"):
        CompiledForest.load(bad)
    # an old model file (written before the LPD: no optional arrays, the old digest) loads and verifies
    from smengine.model._compiled import _attr_value, _file_hash

    old = shutil.copy(path, tmp_path / "old.smf.h5")
    with h5py.File(old, "r+") as f:
        del f["applicability/train_lpd"]
        digest = _old_digest(app)
        f["applicability"].attrs["digest"] = digest
        f.attrs["applicability"] = digest
        attrs = {k: _attr_value(v) for k, v in f.attrs.items()}
        f.attrs["file_hash"] = _file_hash(attrs, bytes(f["treelite"][...].tobytes()))
    o = CompiledForest.load(old).applicability
    assert o.train_lpd is None and o.reference_count is None and o.digest == digest
    assert o.avrg_lpd is None and "avrgLPD" not in repr(o)
    np.testing.assert_array_equal(o.lpd(X), app.lpd(X))  # not thinned: the LPD needs nothing more
    # a reference without the optional arrays keeps the old digest
    plain = Applicability.fit(np.arange(40.0).reshape(20, 2) ** 1.5, folds=np.arange(20) % 3, lpd=False)
    assert plain.digest == _old_digest(plain)
    # old pickles (without the attributes) unpickle
    state = app.__getstate__()
    del state["train_lpd"], state["reference_count"]
    old_obj = Applicability.__new__(Applicability)
    old_obj.__setstate__(state)
    assert old_obj.train_lpd is None and old_obj.digest == _old_digest(app)
    assert pickle.loads(pickle.dumps(app)) == app


def test_thinned_reference_round_trip_and_thinned_without_counts(tmp_path):
    T, folds, rng = _stations(n_st=10, n_days=150)
    thin = Applicability.fit(T, folds=folds, max_reference=300, feature_names=list("abcdef"))
    with h5py.File(tmp_path / "a.h5", "w") as f:
        thin.to_hdf5(f.create_group("applicability"))
    with h5py.File(tmp_path / "a.h5", "r") as f:
        back = Applicability.from_hdf5(f["applicability"])
        assert set(f["applicability"]) >= {"reference_count", "train_lpd"}
    assert back == thin
    np.testing.assert_array_equal(back.reference_count, thin.reference_count)
    X = T[::25] + 0.01
    np.testing.assert_array_equal(back.lpd(X), thin.lpd(X))
    # a thinned reference written before smengine recorded the multiplicities has no LPD
    state = thin.__getstate__()
    del state["reference_count"]
    old = Applicability.__new__(Applicability)
    old.__setstate__(state)
    with pytest.raises(ConfigError, match="retrain"):
        old.lpd(X)
    assert old.di(X).shape == (X.shape[0],)  # the DI still works
    with pytest.raises(ValidationError, match="reference_count"):
        Applicability(**{**_kwargs(thin), "reference_count": thin.reference_count[:-1]})


def _kwargs(app):
    return {
        "mean": app.mean,
        "scale": app.scale,
        "weights": app.weights,
        "reference": app.reference,
        "mean_distance": app.mean_distance,
        "threshold": app.threshold,
        "train_di": app.train_di,
        "cell": app.cell,
    }


def _pixel_mean_lpd(world, app):
    """Brute-force LPD of the exact pixel-mean features of every pixel-day (days, y, x)."""
    t = world["table"]
    X = world["features"].transpose(0, 2, 3, 1).reshape(-1, len(NAMES))
    return _brute(app, t[NAMES].to_numpy(float), X).reshape(world["features"].shape[0], *world["features"].shape[2:])


def test_engine_lpd_equals_the_brute_force_lpd_of_the_pixel_means(world):
    cf = world["forest"].compile()
    app = cf.applicability
    _, out = TileRunner(world["store"], cf, n_threads=2, di=True, lpd=True).predict_arrays()
    code = out["quality_flag"] & CODE_MASK
    has = code <= QUALITY_FLAGS["partial"]
    want = _pixel_mean_lpd(world, app)
    assert out["lpd"].dtype == np.float32
    np.testing.assert_array_equal(out["lpd"][has], want[has])
    assert np.isnan(out["lpd"][~has]).all()
    # many pixel-days have neighbours, the far-off patch none
    assert (out["lpd"][has] > 0).mean() > 0.3 and (out["lpd"][40:, :2, :2] == 0).all()
    # lpd changes nothing else; without di there is no di and no outside_aoa bit
    _, di_only = TileRunner(world["store"], cf, n_threads=2, di=True).predict_arrays()
    assert "lpd" not in di_only
    for k, v in di_only.items():
        np.testing.assert_array_equal(out[k], v)
    _, lpd_only = TileRunner(world["store"], cf, n_threads=1, lpd=True).predict_arrays()
    assert "di" not in lpd_only and int((lpd_only["quality_flag"] & OUTSIDE_AOA).max()) == 0
    np.testing.assert_array_equal(lpd_only["lpd"], out["lpd"])


def test_engine_lpd_is_deterministic(world):
    cf = world["forest"].compile()
    a = TileRunner(world["store"], cf, n_threads=1, lpd=True, chunk_days=3).predict_arrays()[1]
    b = TileRunner(world["store"], cf, n_threads=2, lpd=True, chunk_days=8, day_inner=True).predict_arrays()[1]
    c = TileRunner(world["store"], cf, n_threads=3, lpd=True, di=True, chunk_days=60).predict_arrays()[1]
    np.testing.assert_array_equal(a["lpd"], b["lpd"])
    np.testing.assert_array_equal(a["lpd"], c["lpd"])


def test_product_carries_lpd(world, tmp_path):
    cf = world["forest"].compile()
    app = cf.applicability
    ds = predict(world["store"], cf, days=world["days"][:12], n_threads=1, lpd=True)
    assert "lpd" in ds and "di" in ds  # di stays on by default
    a = ds["lpd"].attrs
    assert a["long_name"] == "local point density" and a["units"] == "1"
    assert f"{app.threshold:.6g}" in a["comment"] and f"all {app.n_train} training rows" in a["comment"]
    assert "Exact" in a["comment"] and "Schumacher" in a["references"]
    assert "lpd" in ds["sm"].attrs["ancillary_variables"].split()
    rec = json.loads(ds.attrs["smengine_config"])["engine"]["lpd"]
    assert rec == {
        "reference": app.digest,
        "threshold": app.threshold,
        "n_train": app.n_train,
        "exact": True,
        "max_error": 0.0,
    }
    off = predict(world["store"], cf, days=world["days"][:12], n_threads=1)
    assert "lpd" not in off and "lpd" not in json.loads(off.attrs["smengine_config"])["engine"]
    back = open_product(write_netcdf(ds, tmp_path / "p.nc"))
    assert back["lpd"].dtype == np.float32
    np.testing.assert_array_equal(back["lpd"].values, ds["lpd"].values)
    # make_product checks the counts
    arr = [ds[k].values for k in ("sm", "sm_uncertainty", "sm_subpixel_sd", "valid_fraction", "quality_flag")]
    kw = {
        "grid": world["store"].grid,
        "times": world["days"][:12],
        "di": ds["di"].values,
        "di_threshold": app.threshold,
    }
    with pytest.raises(ValidationError, match="lpd_n_train"):
        make_product(*arr, lpd=ds["lpd"].values, lpd_threshold=app.threshold, lpd_n_train=1, **kw)
    with pytest.raises(ConfigError, match="lpd_threshold"):
        make_product(*arr, lpd=ds["lpd"].values, lpd_n_train=app.n_train, **kw)
    with pytest.raises(ValidationError, match="lpd should be >= 0"):
        make_product(*arr, lpd=-ds["lpd"].values - 1, lpd_threshold=app.threshold, lpd_n_train=app.n_train, **kw)


def test_lpd_needs_an_applicability_reference(world, tmp_path):
    from smengine.engine import run

    cf = world["forest"].compile()
    cf.applicability = None
    for call in (
        lambda: predict(world["store"], cf, days=world["days"][:3], n_threads=1, lpd=True),
        lambda: run([world["store"]], cf, tmp_path, days=world["days"][:3], n_threads=1, lpd=True),
        lambda: TileRunner(world["store"], cf, n_threads=1, lpd=True),
    ):
        with pytest.raises(ConfigError, match="lpd=True needs a forest with an applicability reference"):
            call()


def test_cli_predict_lpd_switch(world, tmp_path):
    from click.testing import CliRunner

    from smengine.cli import cli

    model = world["forest"].compile().save(tmp_path / "m.smf.h5")
    tile = str(world["store"].path)
    base = ["-q", "predict", str(model), tile, "--threads", "1", "--end", "2020-01-06"]
    found = {}
    for flag in ("", "--lpd", "--no-lpd"):
        out = tmp_path / f"out{flag}"
        r = CliRunner().invoke(cli, [*base, "--out", str(out), *([flag] if flag else [])])
        assert r.exit_code == 0, r.output
        (nc,) = sorted(out.rglob("*.nc"))
        with open_product(nc) as ds:
            found[flag] = "lpd" in ds
            if flag == "--lpd":
                has = np.isfinite(ds["sm"].values)
                want = _pixel_mean_lpd(world, world["forest"].applicability)[:6]
                np.testing.assert_array_equal(ds["lpd"].values[has], want[has])
                assert np.isnan(ds["lpd"].values[~has]).all()
    assert found == {"": False, "--lpd": True, "--no-lpd": False}
    # a product made without lpd is not silently reused for a run that asks for it
    r = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "out"), "--lpd"])
    assert r.exit_code != 0 and "engine.lpd" in r.output
