"""The synthetic twin world (smengine.twin): determinism, physics, files and the chain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr

from smengine import footprint as fp
from smengine import neutrons as nt
from smengine import twin
from smengine.errors import ConfigError
from smengine.twin import LAYER_BOTTOMS, LAYER_TOPS, TwinConfig, make_world

# a small version of the quick configuration keeps the suite fast (the full quick world,
# 20 km x 1 year, is what `smengine demo --quick` builds)
MAIN = TwinConfig.quick(n_days=100, spinup_days=30)
TINY = TwinConfig.quick(size_km=6, n_days=30, spinup_days=5, n_stations=3)


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    return make_world(7, tmp_path_factory.mktemp("twin"), MAIN)


def _read_tif(p: Path) -> np.ndarray:
    with rasterio.open(p) as src:
        return src.read(1)


def _nc(p: Path, var: str) -> np.ndarray:
    with xr.open_dataset(p, engine="netcdf4") as ds:
        return ds[var].values


def test_world_contents_and_shapes(world):
    assert world.grid.shape == (20, 20) and world.grid.crs == "EPSG:3035" and world.grid.subpixel == 4
    assert world.days.size == 100 and world.period == (np.datetime64("2019-01-01"), np.datetime64("2019-04-10"))
    truth = world.truth()
    assert truth.dims == ("time", "y", "x") and truth.shape == (100, 20, 20)
    assert truth.attrs["units"] == "m3 m-3"
    assert float(truth.min()) > 0.02 and float(truth.max()) < 0.6
    assert len(world.stations) == 25 and world.stations["id"].is_unique
    assert len(world.paths["s1"]) == 34  # every third day
    for p in [*world.paths["static"].values(), *world.paths["s1"], world.paths["smap"], world.paths["era5"]]:
        assert Path(p).is_file()
    with rasterio.open(world.paths["static"]["elevation"]) as src:
        assert src.res == (100.0, 100.0) and src.crs.to_epsg() == 3035 and src.shape == (200, 200)
        assert src.bounds.left == world.grid.xmin and src.bounds.top == world.grid.ymax


def test_determinism_same_seed_same_arrays(tmp_path):
    a = make_world(3, tmp_path / "a", TINY)
    b = make_world(3, tmp_path / "b", TINY)
    c = make_world(4, tmp_path / "c", TINY)
    for name, p in a.paths["static"].items():
        np.testing.assert_array_equal(_read_tif(p), _read_tif(b.paths["static"][name]))
    np.testing.assert_array_equal(_read_tif(a.paths["s1"][3]), _read_tif(b.paths["s1"][3]))
    for key, var in (
        ("truth", "theta_eq"),
        ("smap", "soil_moisture"),
        ("ndvi", "ndvi"),
        ("lst", "lst"),
        ("precipitation", "precipitation"),
        ("era5", "swvl2"),
    ):
        np.testing.assert_array_equal(_nc(a.paths[key], var), _nc(b.paths[key], var))
    for f in sorted(Path(a.paths["crns"]).rglob("*.csv")):
        assert f.read_bytes() == (b.paths["crns"] / f.relative_to(a.paths["crns"])).read_bytes()
    assert a.paths["station_truth"].read_bytes() == b.paths["station_truth"].read_bytes()
    # another seed is another world
    assert not np.array_equal(_nc(a.paths["truth"], "theta_eq"), _nc(c.paths["truth"], "theta_eq"))


def test_physical_bounds_and_water_balance_closes():
    cfg = TwinConfig.quick(size_km=8, n_days=60, spinup_days=30, n_stations=3)
    statics = twin._model._make_statics(1, cfg)
    land = statics.land
    days = list(twin.simulate_fine(1, cfg))
    assert len(days) == cfg.n_days
    for d in days:
        th = d.theta[:, land]
        assert np.all(th >= statics.wp[land] - 1e-12) and np.all(th <= statics.por[land] + 1e-12)
        assert np.isnan(d.theta[:, ~land]).all()
    # water balance per cell from the end of day 0 to the end of the last day, mm
    s0 = days[0].storage.sum(axis=0)
    s1 = days[-1].storage.sum(axis=0)
    tot = {k: sum(d.fluxes[k] for d in days[1:]) for k in ("precipitation", "et", "drainage", "runoff", "lateral")}
    resid = (s1 - s0) - (tot["precipitation"] - tot["et"] - tot["drainage"] - tot["runoff"] + tot["lateral"])
    assert np.abs(resid).max() < 1e-6
    assert tot["precipitation"].max() > 10 and tot["et"].min() > 0  # the terms are not trivially zero
    # lateral inflow only redistributes part of the deep drainage: it is conserved over the domain
    assert tot["lateral"][land].sum() == pytest.approx(cfg.lateral_fraction * tot["drainage"][land].sum(), rel=1e-9)
    assert tot["lateral"][land].mean() > 1.0
    # wetter where the TWI is high (lateral inflow, slow drainage)
    deep = np.mean([d.theta[-1][land] for d in days], axis=0)
    rel = (deep - statics.wp[land]) / (statics.por[land] - statics.wp[land])  # relative saturation
    assert np.corrcoef(statics.twi[land], rel)[0, 1] > 0.15


def test_precipitation_correlation_length():
    rng = np.random.default_rng(0)
    L = 8.0
    fields = [twin._model._grf((120, 120), L, rng) for _ in range(20)]
    f = np.stack(fields)
    assert f.std() == pytest.approx(1.0, abs=0.1)
    r_L = np.mean([np.corrcoef(x[:, :-8].ravel(), x[:, 8:].ravel())[0, 1] for x in f])
    assert r_L == pytest.approx(np.exp(-0.5), abs=0.08)  # exp(-r²/(2L²)) at r = L
    # the precipitation itself (intermittent, log-normal) keeps a correlation length of that order
    cfg = TwinConfig.quick(size_km=60, n_days=60)
    elev = np.full((60, 60), 300.0)
    wet = [p for p, _ in (twin._model._precip_day(5, cfg, t, elev) for t in range(60)) if (p > 0).mean() > 0.5]
    assert len(wet) > 10

    def corr(lag):
        return np.nanmean([np.corrcoef(p[:, :-lag].ravel(), p[:, lag:].ravel())[0, 1] for p in wet])

    L_cfg = int(cfg.precip_corr_km)
    assert corr(1) > 0.8 and 0.25 < corr(L_cfg) < 0.8 and corr(3 * L_cfg) < 0.25


def test_era5_like_product_is_biased_as_configured(world):
    with xr.open_dataset(world.paths["era5"], engine="netcdf4") as ds:
        assert list(ds["swvl1"].dims) == ["valid_time", "latitude", "longitude"]
        assert np.all(np.diff(ds["latitude"].values) < 0)
        assert ds["swvl3"].attrs["units"] == "m**3 m**-3"
        swvl = np.stack([ds[f"swvl{k}"].values for k in (1, 2, 3, 4)])
        lat, lon = ds["latitude"].values, ds["longitude"].values
    eq = fp.equivalent_soil_moisture(swvl, bulk_density=1.4)  # (time, lat, lon)
    # nearest 0.1° cell of every 1-km pixel centre
    from pyproj import Transformer

    g = world.grid
    rows, cols = np.mgrid[0 : g.height, 0 : g.width]
    x, y = g.xy(rows, cols)
    plon, plat = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True).transform(x, y)
    i = np.rint((lat[0] - plat) / 0.1).astype(int)
    j = np.rint((plon - lon[0]) / 0.1).astype(int)
    era_px = eq[:, i, j]
    truth = world.truth().values
    bias = np.nanmean(era_px[30:] - truth[30:])
    assert 0.5 * MAIN.era5_theta_offset < bias < 1.5 * MAIN.era5_theta_offset
    # smoother than the truth: far less spatial variability
    assert np.nanstd(era_px[-1]) < 0.5 * np.nanstd(truth[-1])


def test_station_theta_equals_footprint_weighted_truth_by_hand(world):
    s = world.stations.iloc[3]
    day = world.days[12]
    fine = world.fine_state(day)
    statics = world.statics()
    res = world.config.fine_resolution
    truth = world.station_truth()
    row = truth[(truth["station"] == s["id"]) & (truth["date"] == pd.Timestamp(day))].iloc[0]
    h, p, veg = row["abs_humidity"], s["pressure"], s["veg_height"]
    n = int(np.ceil(world.config.kernel_radius / res - 0.5))
    win = (slice(s["row"] - n, s["row"] + n + 1), slice(s["col"] - n, s["col"] + n + 1))
    th = fine.theta[:, win[0], win[1]]
    rho = statics["bulk_density"][win]
    assert statics["land"][win].all()
    rr = np.hypot(*np.mgrid[-n : n + 1, -n : n + 1]) * res
    # first guess: plain mean of the cells' CRNS-equivalent θ at r = 0
    eq = np.array(
        [
            fp.equivalent_soil_moisture(th[:, a, b], LAYER_TOPS, LAYER_BOTTOMS, rho[a, b], tol=1e-13)
            for a in range(2 * n + 1)
            for b in range(2 * n + 1)
        ]
    )
    theta = eq.mean()
    for _ in range(2):
        k = fp.footprint_kernel(
            res,
            float(2 * np.round(h / 2)),
            float(np.clip(np.round(theta / 0.02) * 0.02, 0.02, 0.5)),
            pressure=p,
            veg_height=veg,
            max_radius=world.config.kernel_radius,
        )
        for _ in range(200):
            d86 = fp.penetration_depth(fp.rescale_distance(rr, p, veg, theta), rho, theta)
            w = fp.layer_weights(LAYER_TOPS, LAYER_BOTTOMS, d86)
            prof = (w * th).sum(axis=0) / w.sum(axis=0)
            theta = float((k * prof).sum() / k.sum())
    assert row["theta"] == pytest.approx(theta, abs=1e-9)
    # and the public helper gives the same
    one = twin.station_theta(th, rho, statics["land"][win], res, h, p, veg, world.config.kernel_radius)
    assert one == pytest.approx(theta, abs=1e-9)
    # the footprint-weighted value differs from the plain window mean (the footprint matters)
    assert abs(theta - eq.mean()) > 1e-4 or np.ptp(eq) < 1e-3


def test_stations_read_back_with_the_configured_noise(world):
    ss = world.read_stations()
    assert sorted(ss) == sorted(world.stations["id"]) and len(ss.exclusions) == 0
    meta = world.stations.set_index("id")
    g = world.grid
    for sid in list(ss)[:5]:
        st = ss[sid]
        assert st.bulk_density == pytest.approx(meta.loc[sid, "bulk_density"])
        assert st.n0 == pytest.approx(meta.loc[sid, "n0"])
        r, c = g.lonlat_to_rowcol(st.lon, st.lat, subpixel=True)  # lon/lat locate the right 250 m sub-pixel
        r0, c0 = g.rowcol(meta.loc[sid, "x"], meta.loc[sid, "y"], subpixel=True)
        assert (int(r), int(c)) == (int(r0), int(c0))
    daily = ss.daily()
    daily["date"] = pd.to_datetime(daily["date"])
    truth = world.station_truth()
    m = daily.merge(truth, on=["station", "date"])
    assert len(m) > 0.9 * len(truth)
    # noise-free pipeline: only the 24 h moving mean separates it from the footprint truth
    assert np.nanmedian(np.abs(m["sm_noisefree"] - m["theta"])) < 0.01
    # counting noise: residual vs the Poisson expectation (daily mean of 24 centred 24 h means
    # = triangular weights over 47 h, sum of squared weights 1/36)
    z = []
    for sid, grp in m.groupby("station"):
        s = meta.loc[sid]
        n_day = nt.theta_to_counts(
            grp["sm_noisefree"].to_numpy(), s["n0"], s["bulk_density"], s["lattice_water"], s["soc"]
        )
        sigma_n = np.sqrt(n_day / 36.0)  # corrections are close to 1 here
        sig = nt.theta_uncertainty(n_day, sigma_n, s["n0"], s["bulk_density"])
        z.append((grp["sm"].to_numpy() - grp["sm_noisefree"].to_numpy()) / sig)
    z = np.concatenate(z)
    assert np.nanstd(z) == pytest.approx(1.0, abs=0.2)
    assert abs(np.nanmean(z)) < 0.15


def test_files_ingest_into_a_tilestore_on_the_world_grid(world, tmp_path):
    from smengine.ingest import ingest
    from smengine.tiles import TileStore

    paths = ingest(world.sources(era5=True), world.grid, tmp_path / "tiles")
    assert len(paths) == 1
    store = TileStore.open(paths[0])
    assert store.grid == world.grid
    np.testing.assert_array_equal(store.times, world.days)
    assert store.static_names == ["elevation", "twi", "sand", "clay", "porosity", "land_cover"]
    # every daily layer coarser than the sub-pixel is kept at its own resolution (index map) ...
    assert store.dynamic_names == []
    assert store.coarse_names == [
        "s1_sm",
        "smap_sm",
        "ndvi",
        "lst",
        "precipitation",
        "era5_swvl1",
        "era5_swvl2",
        "era5_swvl3",
    ]
    # ... and keeps its class: 1-km covariates are "dynamic" features, the 9-km products "coarse"
    from smengine.features import daily_classes

    assert daily_classes(store) == (
        ["s1_sm", "ndvi", "lst", "precipitation"],
        ["smap_sm", "era5_swvl1", "era5_swvl2", "era5_swvl3"],
    )
    assert store.units["lst"] == "K" and store.units["smap_sm"] == "m3 m-3"
    # 250 m elevation = 100 m elevation averaged (GDAL 'average')
    elev = _read_tif(world.paths["static"]["elevation"])
    assert store.static[0].mean() == pytest.approx(elev.mean(), abs=0.5)
    assert set(np.unique(store.static[5])) <= set(twin.LAND_COVER)
    # S1 on acquisition days only; SMAP and ERA5 everywhere on their days
    x0 = store.features(0)
    x1 = store.features(1)
    names = store.feature_names
    assert np.isfinite(x0[names.index("s1_sm")]).mean() > 0.9 and np.isnan(x1[names.index("s1_sm")]).all()
    assert np.isfinite(x0[names.index("era5_swvl1")]).all()
    # the S1-like covariate tracks the truth's surface signal
    t = world.truth().values
    s1 = np.array([np.nanmean(store.features(i)[names.index("s1_sm")]) for i in range(0, 100, 3)])
    assert np.corrcoef(s1, np.nanmean(t[::3], axis=(1, 2)))[0, 1] > 0.5


def test_cache_hit_returns_without_rewriting(tmp_path):
    a = make_world(2, tmp_path / "w", TINY)
    assert not a.from_cache
    files = sorted(p for p in (tmp_path / "w").rglob("*") if p.is_file())
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    b = make_world(2, tmp_path / "w", TINY)
    assert b.from_cache and b.build_seconds == 0.0
    assert {p: p.stat().st_mtime_ns for p in files} == mtimes
    pd.testing.assert_frame_equal(a.stations, b.stations, check_dtype=False)
    assert b.grid == a.grid and b.config == a.config and b.paths == a.paths
    # a missing file or other parameters rebuild
    a.paths["s1"][0].unlink()
    assert not make_world(2, tmp_path / "w", TINY).from_cache
    assert not make_world(2, tmp_path / "w", TINY, era5_theta_offset=-0.03).from_cache


def test_config_validation_and_roundtrip():
    c = TwinConfig.quick()
    assert TwinConfig.from_config(c.get_config()) == c
    assert c.fine_shape == (200, 200) and c.grid().shape == (20, 20)
    with pytest.raises(ConfigError, match="fine_resolution"):
        TwinConfig(fine_resolution=300.0)
    with pytest.raises(ConfigError, match="multiples of 1000"):
        TwinConfig(xmin=4_300_500.0)


def test_docstring_examples():
    import doctest

    results = [doctest.testmod(m, optionflags=doctest.NORMALIZE_WHITESPACE) for m in (twin._model, twin._files)]
    assert sum(r.attempted for r in results) > 0 and sum(r.failed for r in results) == 0
