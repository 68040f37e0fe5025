"""±inf is missing input like NaN, and counted: the exponential filter and the engine (issue 20).

One ``+inf`` in a covariate used to run through the SWI recursion into every later value of
its series ("one inf erases a pixel for the rest of the record"). Now every kernel skips it
as it skips NaN, and says how many it met (a DataLossWarning); NaN stays silent.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from smengine.engine import EngineStats, TileRunner, predict
from smengine.errors import DataLossWarning
from smengine.features import FeatureBuilder, FeatureSpec
from smengine.filters import exp_filter
from smengine.grid import Grid
from smengine.model import CompiledForest
from smengine.testing import naive_predict
from smengine.tiles import TileStore, TileWriter

DAYS = np.arange("2020-05-01", "2020-05-11", dtype="datetime64[D]")
UNITS = {"elev": "m", "sand": "%", "s1": "m3 m-3", "ndvi": "1", "smap": "m3 m-3"}


# --------------------------------------------------------------------------- exp_filter
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("carry", [False, True])
def test_exp_filter_inf_is_nan_and_counted(dtype, carry):
    rng = np.random.default_rng(4)
    v = (0.2 + 0.2 * rng.random((40, 3, 5))).astype(dtype)
    v[rng.random(v.shape) < 0.1] = np.nan  # ordinary gaps: silent
    bad = [(0, 0, 0), (3, 1, 2), (4, 1, 2), (17, 2, 4), (39, 0, 1), (20, 2, 0)]
    with_inf, with_nan = v.copy(), v.copy()
    for k, i in enumerate(bad):
        with_inf[i] = np.inf if k % 2 else -np.inf
        with_nan[i] = np.nan
    t = np.arange(40.0)
    want = exp_filter(with_nan, t, [3.0, 20.0], carry=carry)  # NaN only: no warning (warnings are errors here)
    with pytest.warns(DataLossWarning, match=r"exp_filter: 6 of 600 values were infinite"):
        got = exp_filter(with_inf, t, [3.0, 20.0], carry=carry)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    # the series after an inf go on (the inf did not propagate)
    assert np.isfinite(got[:, 5:, 1, 2]).any()


def test_exp_filter_inf_with_state_and_sentinel():
    t = np.arange(8.0)
    v = np.array([1.0, np.inf, 2.0, -999.0, 3.0, np.inf, 4.0, 5.0])
    w = np.where(np.isinf(v), np.nan, v)
    with pytest.warns(DataLossWarning, match="2 of 8 values"):
        a, sa = exp_filter(v, t, 5.0, nan=-999.0, return_state=True)
    b, sb = exp_filter(w, t, 5.0, nan=-999.0, return_state=True)
    assert a.tobytes() == b.tobytes()
    for f in ("gain", "swi", "time"):
        assert getattr(sa, f).tobytes() == getattr(sb, f).tobytes()


def test_exp_filter_counts_each_inf_once_whatever_the_number_of_T():
    v = np.array([np.inf, 1.0, 2.0, np.inf, 3.0])
    with pytest.warns(DataLossWarning, match="2 of 5 values") as rec:
        exp_filter(v, np.arange(5.0), [1.0, 5.0, 10.0, 50.0])
    assert len([w for w in rec if issubclass(w.category, DataLossWarning)]) == 1


# --------------------------------------------------------------------------- the engine
def write_tile(path: Path, static: np.ndarray, dyn: np.ndarray, coarse: np.ndarray, index: np.ndarray) -> TileStore:
    """A 6 × 5-pixel tile (4 × 4 sub-pixels) with the given layers (static (2, Y, X), dynamic
    (T, 2, Y, X), coarse (T, n_cells) on ``index``), as tests/test_engine.py's make_tile."""
    grid = Grid.from_bounds(4_321_000, 2_987_000, 4_327_000, 2_992_000, tile_size=100)
    with TileWriter(
        path, grid, DAYS, ["elev", "sand"], ["s1", "ndvi"], UNITS, coarse={"smap": (index, coarse.shape[1])}
    ) as w:
        for i, n in enumerate(["elev", "sand"]):
            w.write_static(n, static[i])
        for t in range(DAYS.size):
            w.write_dynamic(t, "s1", dyn[t, 0])
            w.write_dynamic(t, "ndvi", dyn[t, 1])
            w.write_coarse(t, "smap", coarse[t])
    return TileStore.open(path)


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    """The same tile twice: with ±inf at some places, and with NaN at the same places."""
    tmp = tmp_path_factory.mktemp("nonfinite")
    rng = np.random.default_rng(7)
    ny, nx = 20, 24
    static = rng.random((2, ny, nx)).astype(np.float32)
    dyn = (0.2 + 0.1 * rng.random((DAYS.size, 2, ny, nx))).astype(np.float32)
    dyn[:, 0][rng.random((DAYS.size, ny, nx)) < 0.1] = np.nan  # ordinary gaps
    index = (np.arange(ny)[:, None] // 8) * 3 + np.arange(nx)[None, :] // 8
    coarse = (0.25 + 0.05 * rng.random((DAYS.size, int(index.max()) + 1))).astype(np.float32)
    s_inf, d_inf, c_inf = static.copy(), dyn.copy(), coarse.copy()
    s_nan, d_nan, c_nan = static.copy(), dyn.copy(), coarse.copy()
    d_bad = [(1, 0, 3, 4), (1, 0, 3, 5), (4, 0, 10, 10), (6, 1, 0, 0), (9, 0, 19, 23)]  # s1 (an SWI source), ndvi
    s_bad = [(1, 7, 7)]  # sand
    c_bad = [(2, 4)]  # smap, day 2, cell 4
    for k, i in enumerate(d_bad):
        d_inf[i], d_nan[i] = (np.inf if k % 2 else -np.inf), np.nan
    for i in s_bad:
        s_inf[i], s_nan[i] = np.inf, np.nan
    for i in c_bad:
        c_inf[i], c_nan[i] = -np.inf, np.nan
    a = write_tile(tmp / "inf.h5", s_inf, d_inf, c_inf, index)
    b = write_tile(tmp / "nan.h5", s_nan, d_nan, c_nan, index)
    # every sub-pixel-day gathers each layer once: a static inf is met every day, a coarse one on
    # every sub-pixel of its cell
    n_inf = len(d_bad) + len(s_bad) * DAYS.size + sum(int((index == c).sum()) for _, c in c_bad)
    out = {"inf": a, "nan": b, "n_inf": n_inf}
    for carry in (False, True):  # plain SWI (and the raw sources) or carried SWI only
        fb = FeatureBuilder(b, FeatureSpec(swi_T=(5.0, 20.0), swi_carry=carry))
        sw = fb.swi()
        X = np.concatenate([fb.day(t, swi=sw).reshape(len(fb.names), -1).T for t in range(DAYS.size)])
        ok = np.isfinite(X).all(1)
        y = 0.25 + 0.1 * np.tanh(X[ok] @ rng.standard_normal(len(fb.names)))
        rf = RandomForestRegressor(10, min_samples_leaf=3, random_state=0, n_jobs=1).fit(X[ok], y)
        out[carry] = {"rf": rf, "cf": CompiledForest.from_sklearn(rf, feature_names=fb.names), "names": fb.names}
    assert {"s1", "ndvi", "sand", "smap", "swi5_s1", "swi20_smap"} <= set(out[False]["names"])
    assert {"swi5c30_s1", "swi20c30_smap"} <= set(out[True]["names"]) and "s1" not in out[True]["names"]
    return out


KEYS = ("sm", "subpixel_sd", "uncertainty", "valid_fraction", "quality_flag")


@pytest.mark.parametrize("carry", [False, True])
@pytest.mark.parametrize("kw", [{}, {"chunk_days": 3, "day_inner": True, "n_threads": 2}, {"reuse": False}])
def test_engine_inf_tile_equals_nan_tile_and_counts(tiles, kw, carry):
    cf = tiles[carry]["cf"]
    ra, rb = TileRunner(tiles["inf"], cf, **kw), TileRunner(tiles["nan"], cf, **kw)
    days = DAYS[2:]  # two spin-up days: their infs are met by the SWI state update
    oa, ob = ra.predict_arrays(days)[1], rb.predict_arrays(days)[1]
    for k in KEYS:
        assert oa[k].tobytes() == ob[k].tobytes(), k
    assert ra.stats.nonfinite_values == tiles["n_inf"] and rb.stats.nonfinite_values == 0
    assert ra.stats.invalid == rb.stats.invalid and ra.stats.predicted == rb.stats.predicted
    # the inf on day 1 at s1 (3, 4) did not erase that sub-pixel's SWI for the rest of the record
    assert np.isfinite(oa["sm"][-1, 0, 1])


def test_engine_reports_infs_as_data_loss(tiles):
    n = tiles["n_inf"]
    with pytest.warns(DataLossWarning, match=rf"predict .*inf\.h5: {n:,} covariate values .* infinite"):
        ds = predict(tiles["inf"], tiles[False]["cf"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataLossWarning)  # (a share of NaN pixel-days, if any)
        ref = predict(tiles["nan"], tiles[False]["cf"])
    for k in ("sm", "sm_uncertainty", "valid_fraction", "quality_flag"):
        assert ds[k].values.tobytes() == ref[k].values.tobytes(), k
    total = EngineStats()
    total.add(EngineStats(nonfinite_values=3))
    total.add(EngineStats(nonfinite_values=4))
    with pytest.warns(DataLossWarning, match="run into x: 7 covariate values"):
        total.warn_if_degraded("run into x")


@pytest.mark.parametrize("carry", [False, True])
def test_engine_inf_tile_equals_naive_reference(tiles, carry):
    m = tiles[carry]
    with pytest.warns(DataLossWarning, match="values were infinite"):  # exp_filter, in the reference
        ref = naive_predict(tiles["inf"], m["rf"], m["names"], days=DAYS[2:])
    out = TileRunner(tiles["inf"], m["cf"]).predict_arrays(DAYS[2:])[1]
    np.testing.assert_array_equal(out["quality_flag"], ref["quality_flag"])
    for k in ("sm", "subpixel_sd", "uncertainty", "valid_fraction"):
        np.testing.assert_allclose(out[k], ref[k], rtol=0, atol=1e-5, err_msg=k)
