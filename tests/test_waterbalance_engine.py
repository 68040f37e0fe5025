"""Water-balance features (``wb<depth>``) in the gridded path: builder, training table, engine, card.

The builder's rasters are checked bit for bit against a plain-Python loop per sub-pixel that
follows the documented order of operations (Oudin PET, then the bucket step of
:mod:`smengine.waterbalance`), and so is the float64 storage after the last day (θ is float32,
which hides most last-bit differences of the float64 arithmetic; the storage does not: a
reordered PET or S* formula changes it). The engine is checked against
:func:`smengine.testing.naive_predict` (as the SWI engine tests) and, bit for bit, against the
builder through the pixel-mean features the kernel gathers and its float64 storage; the carried
state over chunks, threads, successive day ranges, the Stepper's restart file and
predict_dataset's blocks.

Ra: the reference takes it per day from :func:`smengine.waterbalance.extraterrestrial_radiation`
(NumPy) at the tile centre's latitude. A pure ``math`` Ra differs from NumPy's vectorised
sin/cos/arccos in the last bit of float64 on some days (≤ 2e-15 relative, libm vs SIMD), which
could reach the float64 storage; both smengine paths take Ra from one table
(:func:`smengine.waterbalance.daily_radiation`), so they cannot differ there.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyproj import Transformer
from sklearn.ensemble import RandomForestRegressor

from smengine.engine import GatherKind, TileRunner, predict
from smengine.errors import ConfigError, DataError, DataLossWarning, ValidationError
from smengine.features import (
    FeatureBuilder,
    FeatureSpec,
    WaterBalanceSpec,
    parse_water_balance_feature,
    training_table,
)
from smengine.footprint import footprint_average
from smengine.grid import Grid
from smengine.model import CompiledForest
from smengine.model._card import ModelCard
from smengine.stations import Station, StationSet
from smengine.testing import naive_predict
from smengine.tiles import TileStore, TileWriter
from smengine.waterbalance import bucket, bucket_oudin, daily_radiation, extraterrestrial_radiation, saxton_rawls

# 16 days with one missing (2020-05-09): the state runs over store days only
DAYS = np.concatenate(
    [np.arange("2020-05-01", "2020-05-09", dtype="datetime64[D]"), np.arange("2020-05-10", "2020-05-18", dtype="M8[D]")]
)
UNITS = {"elev": "m", "sand": "%", "clay": "%", "s1": "m3 m-3", "t2m": "K", "ndvi": "1", "tp": "m"}
WB = {"precipitation": "tp", "temperature": "t2m", "sand": "sand", "clay": "clay", "depths_mm": [300, 1000]}
SPEC = FeatureSpec(swi_T=(5.0,), water_balance=WB)
NAMES = ["elev", "ndvi", "tp", "swi5c30_s1", "wb300", "wb1000", "doy_sin"]


def make_tile(path: Path) -> TileStore:
    """12 × 10 pixels of 4 × 4 sub-pixels: precipitation coarse in m (a cell-day missing, the last
    pixel outside the product), temperature in K with gaps and cold days, sand and clay in %."""
    grid = Grid.from_bounds(4_321_000, 2_987_000, 4_333_000, 2_997_000, tile_size=100)
    rng = np.random.default_rng(7)
    ny, nx = grid.subpixel_shape
    n = DAYS.size
    sand = rng.uniform(10, 60, (ny, nx)).astype(np.float32)
    clay = rng.uniform(5, 35, (ny, nx)).astype(np.float32)
    sand[5, 7] = np.nan  # no soil: NaN every day
    elev = (300 * rng.random((ny, nx))).astype(np.float32)
    t2m = (281 + 9 * rng.standard_normal((n, ny, nx))).astype(np.float32)  # some days below -5 degC: PET 0
    t2m[rng.random((n, ny, nx)) < 0.02] = np.nan
    s1 = (0.2 + 0.1 * rng.random((n, ny, nx))).astype(np.float32)
    s1[rng.random((n, ny, nx)) < 0.3] = np.nan
    ndvi = (0.3 + 0.2 * rng.random((n, ny, nx))).astype(np.float32)
    index = (np.arange(ny)[:, None] // 16) * 3 + np.arange(nx)[None, :] // 16
    index[-4:, -4:] = -1
    cells = int(index.max()) + 1
    tp = (rng.gamma(0.6, 9.0, (n, cells)) * (rng.random((n, cells)) < 0.5) / 1000).astype(np.float32)
    tp[3, 2] = np.nan
    with TileWriter(
        path, grid, DAYS, ["elev", "sand", "clay"], ["s1", "t2m", "ndvi"], UNITS, coarse={"tp": (index, cells)}
    ) as w:
        for name, a in (("elev", elev), ("sand", sand), ("clay", clay)):
            w.write_static(name, a)
        for t in range(n):
            w.write_dynamic(t, "s1", s1[t])
            w.write_dynamic(t, "t2m", t2m[t])
            w.write_dynamic(t, "ndvi", ndvi[t])
            w.write_coarse(t, "tp", tp[t])
    return TileStore.open(path)


def reference_water_balance(store: TileStore, depths=(300.0, 1000.0), beta=0.6, om=2.5):
    """Plain Python per sub-pixel: returns (theta (n_depth, T, Y, X) float32, skipped sub-pixel-days,
    storage after the last day (n_depth, Y, X) float64, mm)."""
    ny, nx = store.grid.subpixel_shape
    tp = store.coarse["tp"]
    raw_p = np.where(tp.index >= 0, np.asarray(tp.values)[:, np.maximum(tp.index, 0)], np.nan).astype(np.float32)
    P = (raw_p.astype(np.float64) * 1000.0).astype(np.float32)  # m → mm, rounded to float32 as a tile column
    Tc = (np.asarray(store.dynamic[:, store.dynamic_names.index("t2m")], np.float64) - 273.15).astype(np.float32)
    g = store.grid
    x0, y0, x1, y1 = g.bounds
    lat = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True).transform((x0 + x1) / 2, (y0 + y1) / 2)[1]
    doy = [int(pd.Timestamp(d).day_of_year) for d in store.times]
    ra = [float(extraterrestrial_radiation(lat, j)) for j in doy]
    sand = np.asarray(store.static[store.static_names.index("sand")], np.float64) / 100.0
    clay = np.asarray(store.static[store.static_names.index("clay")], np.float64) / 100.0
    lim = saxton_rawls(sand, clay, om)
    out = np.full((len(depths), len(doy), ny, nx), np.nan, np.float32)
    final = np.full((len(depths), ny, nx), np.nan)
    n_missing = 0
    for k, depth in enumerate(depths):
        for r in range(ny):
            for c in range(nx):
                fc, wp = float(lim.field_capacity[r, c]), float(lim.wilting_point[r, c])
                if not (math.isfinite(fc) and math.isfinite(wp)):
                    continue  # no soil: NaN every day, not counted
                sfc, swp = fc * depth, wp * depth
                scrit = swp + beta * (sfc - swp)
                s = sfc  # field capacity before the first day
                for i in range(len(doy)):
                    p, t = float(P[i, r, c]), float(Tc[i, r, c])
                    if not (math.isfinite(p) and math.isfinite(t)):
                        n_missing += k == 0
                        continue  # NaN, state unchanged
                    pet = ra[i] / (2.45 * 1000.0) * (t + 5.0) / 100.0 * 1000.0 if t + 5.0 > 0 else 0.0  # Oudin
                    s = s + p  # water in
                    if s > sfc:  # drainage of the excess above field capacity
                        s = sfc
                    if s - swp > 0.0:  # ET = PET * beta(S), at most down to the wilting point
                        e = pet * min((s - swp) / (scrit - swp), 1.0)
                        s = s - e if e < s - swp else swp
                    out[k, i, r, c] = s / depth
                final[k, r, c] = s
    return out, n_missing, final


def _loss(match: str = "water balance"):
    return pytest.warns(DataLossWarning, match=match)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    store = make_tile(tmp_path_factory.mktemp("wb") / "t000_000.h5")
    fb = FeatureBuilder(store, SPEC)
    with _loss():
        wb = fb.water_balance()
    sw = fb.swi()
    X = np.stack([fb.day(t, swi=sw, wb=wb) for t in range(DAYS.size)])  # (T, F, Y, X)
    rows = X.transpose(0, 2, 3, 1).reshape(-1, len(fb.names))[:, [fb.names.index(n) for n in NAMES]]
    ok = np.isfinite(rows).all(1)
    rng = np.random.default_rng(0)
    y = 0.05 + 0.6 * rows[ok, NAMES.index("wb300")] + 0.02 * np.tanh(rows[ok, 0] / 100) + 0.01 * rng.random(ok.sum())
    rf = RandomForestRegressor(12, min_samples_leaf=3, max_features=0.6, random_state=0, n_jobs=1).fit(rows[ok], y)
    card = {
        "water_balance": SPEC.water_balance.get_config(),
        "features": [{"name": n, "units": fb.units[n]} for n in NAMES],
    }
    cf = CompiledForest.from_sklearn(rf, feature_names=NAMES, card=card)
    with _loss():
        ref = naive_predict(store, rf, NAMES, water_balance=WB)
    world = {"store": store, "fb": fb, "wb": wb, "X": X, "rf": rf, "cf": cf, "ref": ref}
    world["python"] = reference_water_balance(store)  # (theta, skipped days, final storage)
    return world


def _assert_matches_naive(out: dict, ref: dict, days=slice(None)) -> None:
    for k in ("sm", "subpixel_sd", "uncertainty", "valid_fraction"):
        a, b = out[k], ref[k][days]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=k)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=k)
    np.testing.assert_array_equal(out["quality_flag"], ref["quality_flag"][days])


# ---------------------------------------------------------------------------------------------- builder
def test_builder_equals_the_plain_python_bucket_bit_for_bit(world):
    fb, wb = world["fb"], world["wb"]
    assert fb.wb_names == ["wb300", "wb1000"]
    assert fb.names.index("wb300") == fb.names.index("swi5c30_s1") + 1 and fb.names[-2:] == ["doy_sin", "doy_cos"]
    assert fb.kinds["wb300"] == "water_balance" and fb.units["wb1000"] == "m3 m-3"
    assert fb.sources["wb1000"].startswith("bucket(precipitation=tp, PET=oudin(t2m, Ra at the tile centre)")
    assert "depth 1000 mm" in fb.sources["wb1000"] and "sand=sand, clay=clay, OM 2.5 %" in fb.sources["wb1000"]
    ref, n_missing, _ = world["python"]
    assert wb.dtype == np.float32 and wb.shape == ref.shape == (2, DAYS.size, 40, 48)
    np.testing.assert_array_equal(wb, ref)  # NaN where the reference is NaN, every other value bit for bit
    assert np.isnan(wb[:, :, 5, 7]).all() and n_missing > 0
    assert np.nanmin(wb) > 0.05 and np.nanmax(wb) < 0.45
    # the warning counts the skipped sub-pixel-days (once, not once per depth); a window is the tile there
    with _loss(f"{n_missing:,} of {DAYS.size * (40 * 48 - 1):,} series-days had missing precipitation or temp"):
        FeatureBuilder(world["store"], SPEC).water_balance()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataLossWarning)
        part = fb.water_balance((3, 17, 20, 41))
    np.testing.assert_array_equal(part, wb[:, :, 3:17, 20:41])


def test_float64_state_equals_the_reference_and_the_engines(world):
    """θ is float32, which hides most last-bit differences of the float64 arithmetic; the storage
    (float64, mm) after the last day does not: the kernel's (with the builder's inputs), the plain
    Python loop's and the engine's after predicting every day are the same bits."""
    from smengine._ext import _bucket
    from smengine.features import _converted
    from smengine.waterbalance import bucket_start, bucket_storages

    fb, store = world["fb"], world["store"]
    inp = fb.water_balance_inputs()
    p = np.ascontiguousarray(_converted(fb.source_series("tp"), inp.precip_conversion)).reshape(DAYS.size, -1)
    t = np.ascontiguousarray(_converted(fb.source_series("t2m"), inp.temp_conversion)).reshape(DAYS.size, -1)
    ra = daily_radiation(inp.latitude, store.times)
    _, _, final = world["python"]
    r = TileRunner(store, world["cf"], chunk_days=5, n_threads=3)
    r.predict_arrays()
    for k, depth in enumerate((300.0, 1000.0)):
        s_fc, s_wp, s_crit = bucket_storages(inp.field_capacity.ravel(), inp.wilting_point.ravel(), depth, 0.6)
        storage = bucket_start(s_fc, s_wp)
        theta = np.empty(p.shape, np.float32)
        _bucket.bucket_oudin(p, t, ra, s_fc, s_wp, s_crit, depth, storage, theta, 2)
        np.testing.assert_array_equal(theta.reshape(world["wb"][k].shape), world["wb"][k])
        np.testing.assert_array_equal(storage, final[k].ravel())
        np.testing.assert_array_equal(r._wb_storage[k], final[k].ravel())
    assert np.isfinite(final).sum() == 2 * (40 * 48 - 1)


def test_bucket_oudin_is_bucket_with_oudin_pet():
    """The kernel's PET is pet_oudin's (float64) and its step bucket()'s: same bits as the two composed."""
    rng = np.random.default_rng(1)
    n, m = 120, 300
    p = (rng.gamma(0.5, 8.0, (n, m)) * (rng.random((n, m)) < 0.5)).astype(np.float32)
    t = rng.normal(8, 9, (n, m)).astype(np.float32)
    ra = daily_radiation(52.0, np.datetime64("2021-01-01") + np.arange(n))
    fc, wp = rng.uniform(0.25, 0.4, m), rng.uniform(0.05, 0.15, m)
    th, n_missing = bucket_oudin(p, t, ra, fc, wp, depth_mm=500.0, beta_fraction=0.5, n_threads=3)
    pet = ra[:, None] / 2450.0 * (t.astype(np.float64) + 5.0) / 100.0 * 1000.0
    pet = np.where(t + 5.0 > 0, pet, 0.0)
    want = bucket(p, pet, fc, wp, depth_mm=500.0, beta_fraction=0.5).astype(np.float32)
    np.testing.assert_array_equal(th, want)
    assert n_missing == 0


# ---------------------------------------------------------------------------------------------- engine
@pytest.mark.parametrize("day_inner", [True, False])
@pytest.mark.parametrize("chunk_days,threads", [(1, 1), (3, 2), (16, 3)])
def test_engine_equals_naive(world, chunk_days, threads, day_inner):
    r = TileRunner(world["store"], world["cf"], chunk_days=chunk_days, n_threads=threads, day_inner=day_inner)
    days, out = r.predict_arrays(DAYS[2:])
    _assert_matches_naive(out, world["ref"], slice(2, None))
    flags = np.bincount(out["quality_flag"].ravel(), minlength=5)
    assert flags[0] > 0 and flags[1] > 0
    assert r.stats.water_balance_skipped > 0 and r.stats.spinup_days == 2
    plan = r._plan.plan
    assert (plan[plan[:, 0] == GatherKind.WATER_BALANCE, 2] == [0, 1]).all()
    # tp is a forest feature in m (as the card says) and a water-balance input in mm: two columns
    tp_cols = np.flatnonzero((plan[:, 0] == GatherKind.COARSE) & (plan[:, 1] == 0))
    assert sorted(r._plan.scale[tp_cols]) == [1.0, 1000.0] and r._plan.offset[r._plan.wb_tcol] == -273.15


def test_engine_gathers_the_builders_water_balance_bit_for_bit(world):
    """The kernel's pixel-mean features (the mean over valid sub-pixels, summed in its order) of the
    wb columns equal those of the builder's rasters, bit for bit, over chunks and threads."""
    fb, X = world["fb"], world["X"]
    cols = [fb.names.index(n) for n in NAMES]
    F = X[:, cols].astype(np.float64)  # (T, F, Y, X)
    ok = np.isfinite(F).all(1)  # (T, Y, X): the rows the forest sees
    T, nf, ny, nx = F.shape
    k = 4
    fs = np.zeros((T, nf, ny // k, nx // k))
    n = np.zeros((T, ny // k, nx // k))
    for q in range(k * k):  # the kernel's order: sub-pixel q = (a, b) of every pixel
        a, b = divmod(q, k)
        v, o = F[:, :, a::k, b::k], ok[:, a::k, b::k]
        fs = fs + np.where(o[:, None], v, 0.0)
        n = n + o
    for chunk_days, threads in ((16, 1), (5, 3)):
        r = TileRunner(world["store"], world["cf"], chunk_days=chunk_days, n_threads=threads)
        got: list[np.ndarray] = []
        r._aoa = object()  # ask the kernel for the pixel-mean features; keep them instead of a DI
        r._add_aoa = lambda bufs, fmean, days, got=got: got.append(fmean[days].copy())
        _, out = r.predict_arrays()
        fmean = np.concatenate(got)
        good = out["quality_flag"] < 2
        for name in ("wb300", "wb1000"):
            j = NAMES.index(name)
            want = fs[:, j] / np.where(n > 0, n, 1)
            np.testing.assert_array_equal(fmean[:, j][good], want[good], err_msg=name)
        assert good.sum() > 0.9 * good.size


def test_successive_ranges_carry_the_bucket_state(world):
    s, cf = world["store"], world["cf"]
    whole = TileRunner(s, cf, chunk_days=4).predict_arrays()[1]
    r = TileRunner(s, cf, chunk_days=3, n_threads=2)
    parts = [r.predict_arrays(d)[1] for d in (DAYS[:2], DAYS[2:3], DAYS[5:9], DAYS[12:])]  # days skipped between
    for k in ("sm", "subpixel_sd", "uncertainty", "valid_fraction", "quality_flag"):
        got = np.concatenate([p[k] for p in parts])
        want = whole[k][np.r_[0:3, 5:9, 12:16]]
        np.testing.assert_array_equal(got, want, err_msg=k)
    with pytest.raises(ConfigError, match="increasing order"):
        r.predict_arrays(DAYS[3:4])
    # a day absent from the store (2020-05-09) is flagged and leaves the state alone
    req = np.array(["2020-05-08", "2020-05-09", "2020-05-10"], dtype="datetime64[D]")
    out = TileRunner(s, cf).predict_arrays(req)[1]
    assert (out["quality_flag"][1] == 4).all()
    _assert_matches_naive({k: v[[0, 2]] for k, v in out.items()}, world["ref"], [7, 8])


def test_predict_reports_the_skipped_water_balance_days(world):
    _, n_missing, _ = world["python"]
    with _loss(f"water balance had no precipitation or temperature on {n_missing:,} sub-pixel-days"):
        ds = predict(world["store"], world["cf"], n_threads=2)
    np.testing.assert_allclose(ds["sm"].values, world["ref"]["sm"], atol=1e-5)
    assert json.loads(ds.attrs["smengine_config"])["engine"]["water_balance"] == SPEC.water_balance.get_config()


def test_stepper_restart_and_dataset_blocks_carry_the_bucket(world, tmp_path):
    """Day-by-day Stepper with a restart file midway, and predict_dataset in blocks (each block takes
    Ra at the whole grid's centre), equal the tile run bit for bit."""
    from smengine.engine import Stepper, predict_dataset

    s, cf = world["store"], world["cf"]
    whole = TileRunner(s, cf).predict_arrays()[1]
    ds = s.to_dataset()
    st = Stepper(cf)
    sm = []
    for i, day in enumerate(ds["time"].values):
        if i == 6:
            st.save_state(tmp_path / "restart.h5")
            st = Stepper.load_state(tmp_path / "restart.h5", cf)
        sm.append(st.step(ds.sel(time=[day]))["sm"].values[0])
    np.testing.assert_array_equal(np.stack(sm), whole["sm"])
    blocks = predict_dataset(ds, cf, block_pixels=5)
    np.testing.assert_array_equal(blocks["sm"].values, whole["sm"])


# ---------------------------------------------------------------------------------------------- training table
def test_training_table_rows_are_the_footprint_average_of_the_builders_raster(world):
    from smengine.features import _day_kernel

    store = world["store"]
    g = store.grid
    stations = []
    for sid, (row, col) in {"A": (21, 19), "B": (2, 45)}.items():  # B near the tile edge: a clipped window
        x, y = g.xy(row, col, subpixel=True)
        lon, lat = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True).transform(x, y)
        idx = pd.date_range("2020-04-30", "2020-05-18", freq="1h", tz="UTC", inclusive="left")
        data = pd.DataFrame(
            {"sm": 0.2 + 0.1 * np.sin(np.arange(idx.size) / 30.0), "abs_humidity": 7.0, "pressure": 985.0}, index=idx
        )
        stations.append(Station(id=sid, lat=float(lat), lon=float(lon), data=data, bulk_density=1.4))
    ss = StationSet(stations)
    daily = ss.daily(18.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataLossWarning)  # the windows' skipped days (checked above)
        table = training_table(ss, store, SPEC, daily=daily)
    assert table.attrs["kinds"]["wb300"] == "water_balance" and table.attrs["units"]["wb300"] == "m3 m-3"
    assert table.attrs["spec"]["water_balance"] == SPEC.water_balance.get_config()
    assert json.loads(json.dumps(table.attrs["spec"])) == table.attrs["spec"]
    wb = world["wb"]
    n = 0
    for _, row in table.iterrows():
        st = next(s for s in stations if s.id == row.station)
        r, c = (int(v) for v in g.lonlat_to_rowcol(st.lon, st.lat, subpixel=True))
        t = int(np.searchsorted(store.times, np.datetime64(row["date"].date(), "D")))
        d = daily[(daily.station == row.station) & (daily.date == row["date"])].iloc[0]
        k = _day_kernel(g.subpixel_resolution, d["abs_humidity"], d["sm"], d["pressure"])
        want = footprint_average(wb[:, t], [r], [c], k, 0.5)[:, 0]
        got = row[["wb300", "wb1000"]].to_numpy(np.float64)
        np.testing.assert_array_equal(got, want.astype(np.float64), err_msg=f"{row.station} {row['date']}")
        n += np.isfinite(got).all()
    assert n >= 20


# ---------------------------------------------------------------------------------------------- card
def test_card_carries_the_parameters_and_the_engine_reads_them(world, tmp_path):
    from smengine.model import train

    card = ModelCard(
        features=[{"name": "wb300", "units": "m3 m-3", "kind": "water_balance", "source": None}],
        target={"name": "target", "units": "m3 m-3"},
        stations=["A"],
        period=["2020-01-01", "2020-12-31"],
        n_samples=10,
        n_dropped={"total": 0},
        hyperparameters={},
        search=[],
        cv={},
        site_metrics={},
        oob_score=None,
        oob_metrics={},
        versions={},
        content_hash="sha256:0",
        water_balance=SPEC.water_balance.get_config(),
    )
    again = ModelCard.from_json(card.to_json())
    assert again == card and again.water_balance == SPEC.water_balance.get_config()
    old = json.loads(card.to_json())
    old.pop("water_balance")
    assert ModelCard.from_config(old).water_balance is None  # cards from before load
    # train() takes them from the table's spec; the saved model carries them; the engine uses them
    rng = np.random.default_rng(2)
    n = 160
    t = pd.DataFrame(
        {
            "station": np.repeat(["A", "B", "C", "D"], n // 4),
            "date": np.tile(pd.date_range("2020-01-01", periods=n // 4), 4),
            "elev": rng.random(n) * 300,
            "ndvi": rng.random(n),
            "wb300": rng.uniform(0.1, 0.3, n),
            "x": 0.0,
            "y": 0.0,
        }
    )
    t["target"] = 0.5 * t["wb300"] + 0.01 * rng.random(n)
    t.attrs.update(
        features=["elev", "ndvi", "wb300"],
        units={"elev": "m", "ndvi": "1", "wb300": "m3 m-3"},
        kinds={"elev": "static", "ndvi": "dynamic", "wb300": "water_balance"},
        spec=SPEC.get_config(),
    )
    f = train(t, cv=(), search=False, n_estimators=8, n_jobs=1, progress=False)
    assert f.card.water_balance == SPEC.water_balance.get_config()
    path = f.compile().save(tmp_path / "m.smf.h5")
    cf = CompiledForest.load(path)
    assert cf.card.water_balance == SPEC.water_balance.get_config()
    r = TileRunner(world["store"], cf)
    assert r.water_balance == SPEC.water_balance and r._plan.wb_depths == [300.0]


def test_engine_refuses_a_water_balance_feature_without_its_parameters(world):
    rf = world["rf"]
    bare = CompiledForest.from_sklearn(rf, feature_names=NAMES)
    with pytest.raises(ConfigError, match=r"feature 'wb300' is a water-balance feature.*carries no water-balance"):
        TileRunner(world["store"], bare)
    other = CompiledForest.from_sklearn(rf, feature_names=NAMES, card={"water_balance": {**WB, "depths_mm": [300]}})
    with pytest.raises(ConfigError, match=r"'wb1000'.*has only \['wb300'\]"):
        TileRunner(world["store"], other)
    with pytest.raises(ConfigError, match="need the water_balance parameters"):
        naive_predict(world["store"], rf, NAMES)


# ---------------------------------------------------------------------------------------------- config
def test_spec_round_trip_and_defaults():
    spec = FeatureSpec(water_balance={"precipitation": "tp", "temperature": "t2m"})
    cfg = spec.get_config()
    assert cfg["water_balance"] == {
        "precipitation": "tp",
        "temperature": "t2m",
        "sand": None,
        "clay": None,
        "texture": [0.4, 0.2],
        "organic_matter": 2.5,
        "depths_mm": [300.0],
        "beta_fraction": 0.6,
        "pet": "oudin",
    }
    assert FeatureSpec.from_config(json.loads(json.dumps(cfg))) == spec
    assert FeatureSpec.from_saved({"swi_T": [5.0]}).water_balance is None
    assert hash(spec) == hash(FeatureSpec.from_config(cfg))
    assert parse_water_balance_feature("wb300") == 300.0 and parse_water_balance_feature("wb") is None
    assert WaterBalanceSpec.from_config(cfg["water_balance"]).source().find("(the default loam)") > 0


def test_constant_texture_and_percent_units(world):
    """A constant texture gives one FC/WP for the whole tile: its raster equals the layers' run with
    uniform sand and clay."""
    s = world["store"]
    fb = FeatureBuilder(
        s, FeatureSpec(swi_of=(), water_balance={**{k: WB[k] for k in ("precipitation", "temperature")}})
    )
    assert "constant texture sand 0.4, clay 0.2 (the default loam)" in fb.sources["wb300"]
    lim = saxton_rawls(0.4, 0.2, 2.5)
    inp = fb.water_balance_inputs()
    assert (inp.field_capacity == float(lim.field_capacity)).all() and inp.precip_conversion == (1000.0, 0.0)


@pytest.mark.parametrize(
    "wb,err,match",
    [
        ({**WB, "rain": 1}, ConfigError, r"unknown key\(s\) \['rain'\]"),
        ({**WB, "pet": "hargreaves"}, ConfigError, "pet='hargreaves' is not available in the gridded path"),
        ({"temperature": "t2m"}, ConfigError, "precipitation missing"),
        ({**WB, "clay": None}, ConfigError, "both sand and clay"),
        ({**WB, "texture": [0.4, 0.2]}, ConfigError, "not both"),
        ({"precipitation": "tp", "temperature": "t2m", "texture": [0.8, 0.4]}, ConfigError, "texture"),
        ({**WB, "depths_mm": [300, -1]}, ConfigError, "depth_mm should be positive"),
        ({**WB, "depths_mm": [300, 300.0]}, ConfigError, "repeat a depth"),
        ({**WB, "beta_fraction": 1.5}, ConfigError, "beta_fraction"),
        ({**WB, "organic_matter": "high"}, ConfigError, "organic_matter should be a number"),
    ],
)
def test_bad_water_balance_config(wb, err, match):
    with pytest.raises(err, match=match):
        FeatureSpec(water_balance=wb)


@pytest.mark.parametrize(
    "wb,err,match",
    [
        ({**WB, "precipitation": "rain"}, ConfigError, "precipitation layer 'rain' is not a layer of the tile"),
        ({**WB, "temperature": "elev"}, ConfigError, "temperature layer 'elev' is a static layer"),
        ({**WB, "sand": "soil_sand"}, ConfigError, "sand layer 'soil_sand' is not a static layer"),
        ({**WB, "precipitation": "ndvi"}, DataError, r"precipitation layer 'ndvi'.*units '1' cannot be converted"),
        ({**WB, "temperature": "tp"}, DataError, r"temperature layer 'tp'.*'m' cannot be converted to 'degC'"),
        ({**WB, "sand": "elev"}, DataError, r"sand layer 'elev' has units 'm'"),
    ],
)
def test_bad_water_balance_layers(world, wb, err, match):
    with pytest.raises(err, match=match):
        FeatureBuilder(world["store"], FeatureSpec(water_balance=wb)).water_balance_inputs()


def test_negative_precipitation_and_impossible_soil_are_refused(world):
    with pytest.raises(ValidationError, match="precipitation should be >= 0"):
        bucket_oudin([[-1.0]], [[10.0]], [20.0], 0.3, 0.1)
    pure_sand = {**{k: WB[k] for k in ("precipitation", "temperature")}, "texture": [1.0, 0.0], "organic_matter": 0}
    fb = FeatureBuilder(world["store"], FeatureSpec(swi_of=(), water_balance=pure_sand))
    with pytest.raises(ValidationError, match=r"texture \[1.0, 0.0\], OM 0 %\): wilting_point should be"):
        fb.water_balance_inputs()  # Saxton & Rawls give a negative wilting point there
