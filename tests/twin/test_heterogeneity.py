"""The heterogeneous twin (TwinConfig.heterogeneity) and the sub-pixel scaling experiment."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from smengine import twin
from smengine.errors import ConfigError
from smengine.evaluate import _pixel_majority, _pixel_nanmean
from smengine.twin import SCALING_COLUMNS, TwinConfig, make_world, scaling_experiment, scaling_report
from smengine.twin._model import _params_hash
from smengine.twin._scaling import _side, heterogeneity_index

TINY = TwinConfig.quick(size_km=6, n_days=30, spinup_days=5, n_stations=3)
LEVELS = (0.0, 0.33, 0.67, 1.0)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _nc(p: Path, var: str) -> np.ndarray:
    with xr.open_dataset(p, engine="netcdf4") as ds:
        return ds[var].values


def _tif(p: Path) -> np.ndarray:
    with rasterio.open(p) as src:
        return src.read(1)


def test_heterogeneity_zero_is_the_default_world_byte_for_byte(tmp_path):
    # hash and array digests of the twin before `heterogeneity` existed (same code path, same
    # random streams): cached default worlds stay valid and the default twin is unchanged
    assert TwinConfig(heterogeneity=0.0) == TwinConfig()
    assert "heterogeneity" not in TINY.get_config()
    assert _params_hash(3, TINY) == "b6a345816832f3a9894e6a933fee3db21cab7bb7b92a6c2ee5b0f57c8cfa26e4"
    assert _params_hash(0, TwinConfig.quick()) == "27e5ccbe90f560d35b9969e189759fd53e572b0a5d38540e75ed5c39c42af47a"
    w = make_world(3, tmp_path / "h0", TINY, heterogeneity=0.0)
    assert w.config == TINY
    expect = {
        ("truth", "theta_eq"): "0504a7ff59814ced",
        ("ndvi", "ndvi"): "cc466221aa06ace8",
        ("lst", "lst"): "831306221373d984",
        ("smap", "soil_moisture"): "be183ccee6ca6caf",
        ("era5", "swvl1"): "98844d443f11d07d",
    }
    for (key, var), dig in expect.items():
        assert _digest(_nc(w.paths[key], var)) == dig, key
    assert _digest(_tif(w.paths["s1"][2])) == "d943350403ebaa64"
    assert _digest(_tif(w.paths["static"]["land_cover"])) == "2a393b023716fb1d"
    assert hashlib.sha256(w.paths["station_truth"].read_bytes()).hexdigest()[:16] == "5577c94ec947a3ac"
    assert "field_id" not in w.statics()


def test_config_validation_hash_and_roundtrip():
    with pytest.raises(ConfigError):
        TwinConfig(heterogeneity=1.5)
    with pytest.raises(ConfigError):
        TwinConfig(heterogeneity=-0.1)
    c = TwinConfig.quick(heterogeneity=0.5)
    assert c.get_config()["heterogeneity"] == 0.5
    assert TwinConfig.from_config(c.get_config()) == c
    # each level is its own world in the cache
    hashes = {_params_hash(0, TwinConfig.quick(heterogeneity=h)) for h in LEVELS}
    assert len(hashes) == len(LEVELS)


def test_fields_are_field_scale_and_carry_their_own_land_cover_and_soil(tmp_path):
    w = make_world(1, tmp_path / "h1", TINY, heterogeneity=1.0)
    st = w.statics()
    fid, lc, land = st["field_id"], st["land_cover"], st["land"]
    assert st["field_active"].all()
    res_ha = TINY.fine_resolution**2 / 1e4
    area = np.bincount(fid.ravel()) * res_ha
    area = area[area > 0]
    # fields of a few hectares (Voronoi cells of 5 ha on average)
    assert 3.0 <= np.median(area) <= 7.0
    assert np.quantile(area, 0.1) >= 1.0 and np.quantile(area, 0.9) <= 12.0
    # each field is one land cover (lakes apart) and one soil offset: texture jumps at boundaries
    df = pd.DataFrame({"f": fid[land], "lc": lc[land]})
    assert (df.groupby("f")["lc"].nunique() == 1).mean() > 0.97
    assert set(np.unique(lc[land])) == {1, 2, 3, 4}
    base = make_world(1, tmp_path / "h0", TINY).statics()
    jump_h = np.abs(np.diff(st["sand"], axis=1))
    jump_0 = np.abs(np.diff(base["sand"], axis=1))
    boundary = fid[:, 1:] != fid[:, :-1]
    assert jump_h[boundary].mean() > 5 * jump_0[boundary].mean()
    assert jump_h[~boundary].mean() < 2 * jump_0[~boundary].mean() + 1e-3
    # settlements (urban) are there, and the S1-like layer is on the fine grid (100 m)
    assert (lc == 4).mean() > 0.05
    with rasterio.open(w.paths["s1"][0]) as src:
        assert src.res == (100.0, 100.0) and src.shape == TINY.fine_shape


def test_crop_calendars_differ_between_fields_and_water_balance_closes_with_irrigation(tmp_path):
    cfg = TwinConfig.quick(size_km=4, n_days=365, spinup_days=10, n_stations=1, heterogeneity=1.0)
    w = make_world(2, tmp_path / "cal", cfg)
    st = w.statics()
    nd = _nc(w.paths["ndvi"], "ndvi")
    assert nd.shape == (365, *cfg.fine_shape)
    crop = (st["land_cover"] == 1) & st["land"]
    fid = st["field_id"]
    ids = np.unique(fid[crop])
    series = np.stack([nd[:, (fid == f) & crop].mean(axis=1) for f in ids])  # (fields, days)
    smooth = pd.DataFrame(series.T).rolling(15, center=True, min_periods=1).mean().to_numpy().T
    peak = smooth.argmax(axis=1)
    assert len(ids) >= 20
    assert peak.std() > 15  # winter crops peak in May-June, spring crops in July-August
    # after harvest a field is bare: the harvest day differs between fields
    harvested = (smooth < 0.5 * smooth.max(axis=1, keepdims=True)) & (np.arange(365) > peak[:, None])
    first_bare = np.where(harvested.any(axis=1), harvested.argmax(axis=1), -1)
    assert np.unique(first_bare[first_bare > 0]).size > 10
    # irrigated crop fields get water, and the water balance closes with it
    days = list(twin.simulate_fine(2, cfg))
    irr = np.stack([d.fluxes["irrigation"] for d in days])
    assert irr.sum() > 0 and np.all(irr[:, ~crop] == 0)
    prev = days[99].storage.sum(axis=0)
    for d in days[100:200]:
        f = d.fluxes
        now = d.storage.sum(axis=0)
        resid = (
            now - prev - (f["precipitation"] + f["irrigation"] - f["et"] - f["drainage"] - f["runoff"] + f["lateral"])
        )
        assert np.abs(resid).max() < 1e-8
        prev = now


def test_within_pixel_variance_index_grows_with_heterogeneity(tmp_path):
    from smengine.demo import DEMO_SPEC
    from smengine.features import FeatureBuilder, FeatureSpec
    from smengine.ingest import ingest
    from smengine.tiles import TileStore

    spec = FeatureSpec(**DEMO_SPEC)
    hi = []
    for h in LEVELS:
        w = make_world(0, tmp_path / f"w{h}", TINY, heterogeneity=h)
        grid = dataclasses.replace(w.grid, subpixel=10)
        store = TileStore.open(ingest(w.sources(), grid, tmp_path / f"t{h}")[0])
        fb = FeatureBuilder(store, spec)
        names = [n for n in fb.names if n != "land_cover"]
        hi.append(heterogeneity_index(fb, names, fb.swi(), 10, every=5))
    assert all(np.diff(hi) > 0), hi
    assert hi[-1] > 3 * hi[0], hi
    assert hi[0] > 0 and hi[-1] < 1


def test_pixel_aggregation_helpers():
    a = np.arange(16, dtype=float).reshape(4, 4)
    a[0, 0] = np.nan
    m = _pixel_nanmean(a, 2)
    assert m[0, 0] == pytest.approx((1 + 4 + 5) / 3) and m[1, 1] == pytest.approx((10 + 11 + 14 + 15) / 4)
    a[0, 1] = a[1, 0] = np.nan
    assert np.isnan(_pixel_nanmean(a, 2)[0, 0])  # fewer than half valid
    lc = np.array([[1, 1, 3, 3], [2, 1, 3, 4], [5, 5, 2, 2], [5, 1, 1, 2]], dtype=float)
    np.testing.assert_array_equal(_pixel_majority(lc, 2), [[1, 3], [5, 2]])


# ------------------------------------------------------------------------------ the experiment
EXP = TwinConfig.quick(size_km=6, n_days=45, spinup_days=10, n_stations=4)
# the tiny world's edge pixels lie in SMAP-like cells with too little land: the engine rightly
# reports the pixel-days it cannot fill
tiny_gaps = pytest.mark.filterwarnings("ignore::smengine.errors.DataLossWarning")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("scaling")
    tab = scaling_experiment(root, levels=(0.0, 1.0), subpixels=(4, 10), seed=0, config=EXP, n_trees=10, n_boot=200)
    return root, tab


@tiny_gaps
def test_experiment_table_has_the_documented_columns(experiment, tmp_path):
    _, tab = experiment
    assert list(tab.columns[: len(SCALING_COLUMNS)]) == list(SCALING_COLUMNS)
    assert len(tab) == 4 and set(tab["k"]) == {4, 10} and set(tab["heterogeneity"]) == {0.0, 1.0}
    assert {"rmse_s1", "rmse_smap", "rmse_era5"} <= set(tab.columns)
    for _, r in tab.iterrows():
        assert 0 < r["rmse_subpixel"] < 0.2 and 0 < r["rmse_pixelmean"] < 0.2 and 0 < r["rmse_best_product"] < 0.3
        assert r["gain"] == pytest.approx(r["rmse_pixelmean"] - r["rmse_subpixel"])
        assert r["gain_ci_low"] <= r["gain"] <= r["gain_ci_high"]
        assert r["rmse_best_product"] == min(r["rmse_s1"], r["rmse_smap"], r["rmse_era5"])
        assert r["subpixel_m"] == 1000 / r["k"]
        # the emulator against the best product: paired on their common pixel-days, verdict from the interval
        assert r["advantage_ci_low"] <= r["advantage"] <= r["advantage_ci_high"]
        assert r["advantage_verdict"] == _side(r["advantage_ci_low"], r["advantage_ci_high"])
        assert r["advantage_n"] > 0
    # the index is larger for the heterogeneous world at each k
    for k in (4, 10):
        g = tab[tab["k"] == k].set_index("heterogeneity")
        assert g.loc[1.0, "het_index"] > g.loc[0.0, "het_index"]
    text = scaling_report(tab)
    assert "mean_j f(x_j)" in text and text.count("\n|") >= 5
    p = twin.plot_scaling(tab, tmp_path / "scaling.png")
    assert p.is_file() and p.stat().st_size > 10_000


@tiny_gaps
def test_experiment_row_equals_a_direct_computation(experiment):
    from smengine.demo import DEMO_SPEC
    from smengine.engine import predict
    from smengine.features import FeatureBuilder, FeatureSpec
    from smengine.model import CompiledForest
    from smengine.tiles import TileStore

    root, tab = experiment
    row = tab[(tab["heterogeneity"] == 1.0) & (tab["k"] == 10)].iloc[0]
    tiles = root / "h1.00" / "tiles_k10"
    w = make_world(0, root / "h1.00" / "world", EXP, heterogeneity=1.0)
    store = TileStore.open(next(tiles.glob("*.h5")))
    cf = CompiledForest.load(tiles / "model.smf.h5")
    truth = w.truth().values.astype(np.float64)
    sub = predict(store, cf)["sm"].values.astype(np.float64)
    # f(mean_j x_j) by hand: plain NumPy pixel means, majority land cover
    fb = FeatureBuilder(store, FeatureSpec(**DEMO_SPEC))
    names = list(cf.feature_names)
    sw = fb.swi()
    base = np.full_like(truth, np.nan)
    for t in range(truth.shape[0]):
        x = fb.day(t, swi=sw)[[fb.names.index(n) for n in names]].astype(np.float64)
        Y, X = x.shape[1:]
        b = x.reshape(len(names), Y // 10, 10, X // 10, 10)
        xm = np.nanmean(b, axis=(2, 4))
        valid = np.isfinite(b).sum(axis=(2, 4)) >= 50
        lci = names.index("land_cover")
        lcb = b[lci].transpose(0, 2, 1, 3).reshape(Y // 10, X // 10, 100)
        xm[lci] = [[np.bincount(v[np.isfinite(v)].astype(int), minlength=6).argmax() for v in r] for r in lcb]
        xm = np.where(valid, xm, np.nan).reshape(len(names), -1)
        ok = np.isfinite(xm).all(0)
        base[t].reshape(-1)[ok] = cf.predict(xm[:, ok].T.astype(np.float32))
    both = np.isfinite(sub) & np.isfinite(base) & np.isfinite(truth)
    assert int(both.sum()) == row["n"]
    assert np.sqrt(np.mean((sub[both] - truth[both]) ** 2)) == pytest.approx(row["rmse_subpixel"], rel=1e-6)
    assert np.sqrt(np.mean((base[both] - truth[both]) ** 2)) == pytest.approx(row["rmse_pixelmean"], rel=1e-6)
    # S1-like from its raw 100 m GeoTIFFs
    s1 = np.full_like(truth, np.nan)
    for p in w.paths["s1"]:
        with rasterio.open(p) as src:
            t = int((np.datetime64(src.tags()["time"], "D") - w.days[0]).astype(int))
            s1[t] = _pixel_nanmean(src.read(1).astype(np.float64), 10)
    ok = np.isfinite(s1) & np.isfinite(truth)
    assert np.sqrt(np.mean((s1[ok] - truth[ok]) ** 2)) == pytest.approx(row["rmse_s1"], rel=1e-4)
    # the advantage over the best product: RMSE(best) − RMSE(emulator) on the pixel-days both have
    from smengine.pseudoproxy import era5_land_theta_eq

    por = _pixel_nanmean(np.asarray(store.static[store.static_names.index("porosity")], np.float64), 10)
    products = {
        "S1-like": s1,
        "SMAP-like": np.stack([_pixel_nanmean(store.coarse["smap_sm"].expand(t), 10) for t in range(truth.shape[0])]),
        "ERA5-Land-like": era5_land_theta_eq(w.paths["era5"], store.grid, w.days, np.clip((1 - por) * 2.65, 0.8, 2.0)),
    }
    best = products[row["best_product"]].astype(np.float64)
    ok = np.isfinite(sub) & np.isfinite(best) & np.isfinite(truth)
    assert int(ok.sum()) == row["advantage_n"]
    rmse = {k: np.sqrt(np.mean((v[ok] - truth[ok]) ** 2)) for k, v in (("best", best), ("sub", sub))}
    assert row["advantage"] == pytest.approx(rmse["best"] - rmse["sub"], rel=1e-6)


@tiny_gaps
def test_experiment_is_deterministic(experiment, tmp_path):
    _, tab = experiment
    again = scaling_experiment(tmp_path, levels=(1.0,), subpixels=(4,), seed=0, config=EXP, n_trees=10, n_boot=200)
    want = tab[(tab["heterogeneity"] == 1.0) & (tab["k"] == 4)].drop(columns="seconds").reset_index(drop=True)
    pd.testing.assert_frame_equal(again.drop(columns="seconds"), want)


def _hand_table() -> pd.DataFrame:
    """Five cases covering every verdict of the gain and of the advantage over the best product."""
    nan = float("nan")
    rows = [
        # h, k, gain, gain %, gain interval, advantage, advantage interval
        (0.0, 4, 0.004, 8.0, (0.002, 0.006), 0.010, (0.005, 0.015)),  # matters; beats the product
        (0.0, 10, 0.001, 2.0, (0.0005, 0.002), 0.006, (-0.001, 0.012)),  # helps < 5 %; ties (point > 0!)
        (1.0, 4, 0.003, 6.0, (-0.001, 0.007), -0.004, (-0.008, -0.001)),  # ties (point ≥ 5 %!); loses
        (1.0, 10, -0.002, -4.0, (-0.003, -0.001), 0.008, (0.002, 0.014)),  # loses; beats
        (0.5, 10, 0.002, 4.0, (nan, nan), 0.003, (nan, nan)),  # no intervals: no verdicts
    ]
    out = []
    for h, k, g, gp, (glo, ghi), adv, (alo, ahi) in rows:
        out.append(
            {
                "heterogeneity": h,
                "k": k,
                "subpixel_m": 1000 / k,
                "het_index": 0.05 + 0.2 * h + 0.001 * k,
                "rmse_subpixel": 0.03,
                "rmse_pixelmean": 0.03 + g,
                "rmse_best_product": 0.03 + adv,
                "best_product": "SMAP-like",
                "gain": g,
                "gain_pct": gp,
                "gain_ci_low": glo,
                "gain_ci_high": ghi,
                "n": 1000,
                "n_blocks": 8,
                "seconds": 1.0,
                "advantage": adv,
                "advantage_ci_low": alo,
                "advantage_ci_high": ahi,
                "advantage_verdict": _side(alo, ahi),
                "advantage_n": 900,
            }
        )
    return pd.DataFrame(out, columns=list(SCALING_COLUMNS))


def test_scaling_report_says_beats_ties_loses_only_from_the_intervals():
    tab = _hand_table()
    assert list(tab["advantage_verdict"]) == ["beats", "ties", "loses", "beats", "undetermined"]
    text = scaling_report(tab)
    assert not re.search(r"\bnan\b|\bNone\b|[{}]|\(\s*\)", text, re.I), text
    rows = [ln for ln in text.splitlines() if re.match(r"\| \d\.\d\d \|", ln)]
    assert len(rows) == 5
    # per row: the verdict against f(mean_j x_j), then against the best product (last two verdict cells)
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert [(c[9], c[12]) for c in cells] == [
        ("beats", "beats"),
        ("beats", "ties"),
        ("ties", "loses"),
        ("loses", "beats"),
        ("undetermined", "undetermined"),
    ]
    assert cells[4][8] == "no interval" and cells[4][11] == "no interval"
    reading = text.strip().splitlines()[-1]
    case = {i: f"h = {r['heterogeneity']:.2f}/k = {r['k']} (HI {r['het_index']:.3f})" for i, r in tab.iterrows()}
    assert (
        f"beats pixel-mean covariates and matters (gain ≥ 5 % of the RMSE, interval above 0) at {case[0]}." in reading
    )
    assert f"It beats them by less than 5 % of the RMSE (interval above 0) at {case[1]}." in reading
    assert f"It ties with them (the interval holds 0) at {case[2]}." in reading  # 6 %, but a tie
    assert f"It loses to pixel-mean covariates (interval below 0) at {case[3]}." in reading
    assert f"No verdict on the gain (no interval) at {case[4]}." in reading
    # the best product: counted by the interval, not by the sign of the point difference (3 positive, 2 beats)
    assert (
        "the emulator beats it in 2 of 5 cases, ties with it (the interval holds 0) in 1, loses to it (interval "
        "below 0) in 1 and has no verdict (no interval) in 1; its advantage ranges over -0.0040 … +0.0100" in reading
    )
    assert f"It ties with the best product at {case[1]}." in reading
    assert f"It loses to the best product at {case[2]}." in reading
    assert "at 1 of 2 levels with k = 4 and 1 of 3 levels with k = 10" in reading
    assert "no interval compares them" in reading
    # "matters", "helps", "worse", "no clear difference" are gone as verdict words
    assert not re.search(r"\b(helps|worse|no clear difference|is not what makes it better)\b", reading)


def test_scaling_report_with_only_ties_says_no_beats():
    tab = _hand_table().iloc[[2]].reset_index(drop=True)
    tab.loc[0, ["advantage_ci_low", "advantage_ci_high"]] = (-0.008, 0.001)
    text = scaling_report(tab)
    reading = text.strip().splitlines()[-1]
    assert "beats" not in reading.replace("beats it in 0 of 1 case,", "")
    assert "the emulator beats it in 0 of 1 case, ties with it (the interval holds 0) in 1 and loses to it" in reading
    assert "Per sub-pixel factor" not in reading  # one k: no comparison between k


def test_scaling_command_refuses_bad_levels_and_subpixels(tmp_path):
    from click.testing import CliRunner

    from smengine.cli import cli

    r = CliRunner().invoke(cli, ["scaling", "--out", str(tmp_path), "--levels", "0,1.5"])
    assert r.exit_code == 2 and "levels should be numbers in [0, 1]" in r.output
    r = CliRunner().invoke(cli, ["scaling", "--out", str(tmp_path), "--subpixels", "4,3"])
    assert r.exit_code == 2 and "integers dividing 1000" in r.output
    r = CliRunner().invoke(cli, ["scaling", "--out", str(tmp_path), "--levels", "a"])
    assert r.exit_code == 2 and "comma-separated numbers" in r.output
