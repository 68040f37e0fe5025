"""smengine.waterbalance: soil limits, PET, the compiled bucket and the API against references.

The bucket and the API are checked bit for bit against plain per-series Python loops (below) that
follow the documented order of operations; the limits against the equations written out once more
and Saxton & Rawls (2006) Table 3; Ra against FAO-56 Example 8; PET against hand numbers and pyet.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from smengine.errors import ConfigError, DataLossWarning, QualityWarning, ValidationError
from smengine.waterbalance import (
    APIState,
    BucketParams,
    BucketResult,
    BucketState,
    antecedent_precipitation_index,
    bucket,
    extraterrestrial_radiation,
    pet_hargreaves,
    pet_oudin,
    saxton_rawls,
)


# ---------------------------------------------------------------------------------------------- references
def ref_bucket(precip, pet, fc, wp, *, depth=300.0, f=0.6, beta_reference="available", irrigation=None, storage=None):
    """Per-series Python loop of the documented daily step. Returns (theta, et, drainage, storage, n_missing)
    with outputs of the inputs' dtype (float32 when precip, pet and irrigation are all float32)."""
    p = np.asarray(precip)
    e = np.asarray(pet)
    arrays = [p, e] + ([np.asarray(irrigation)] if irrigation is not None else [])
    dtype = np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64
    n = p.shape[0]
    P = p.reshape(n, -1)
    E = e.reshape(n, -1)
    irr = None if irrigation is None else np.broadcast_to(np.asarray(irrigation), p.shape).reshape(n, -1)
    m = P.shape[1]
    fc = np.broadcast_to(np.asarray(fc, dtype=np.float64), p.shape[1:]).reshape(-1)
    wp = np.broadcast_to(np.asarray(wp, dtype=np.float64), p.shape[1:]).reshape(-1)
    if storage is None:
        storage = fc * depth
    storage = np.array(storage, dtype=np.float64).reshape(-1)
    theta = np.full((n, m), np.nan, dtype=dtype)
    et = np.full((n, m), np.nan, dtype=dtype)
    dr = np.full((n, m), np.nan, dtype=dtype)
    n_missing = 0
    for j in range(m):
        sfc = float(fc[j]) * depth
        swp = float(wp[j]) * depth
        scrit = swp + f * (sfc - swp) if beta_reference == "available" else f * sfc
        s = float(storage[j])
        if not (math.isfinite(sfc) and math.isfinite(swp)):
            s = math.nan
        for i in range(n):
            if not math.isfinite(s):
                continue
            w = float(P[i, j])
            if irr is not None:
                w = w + float(irr[i, j])
            pe = float(E[i, j])
            if not (math.isfinite(w) and math.isfinite(pe)):
                n_missing += 1
                continue
            s = s + w  # water in
            d = 0.0
            if s > sfc:  # drainage: the excess above field capacity
                d = s - sfc
                s = sfc
            a = 0.0
            if s - swp > 0.0:  # ET, at most down to the wilting point
                beta = min((s - swp) / (scrit - swp), 1.0)
                a = pe * beta
                if a < s - swp:
                    s = s - a
                else:
                    a = s - swp
                    s = swp
            theta[i, j] = s / depth
            et[i, j] = a
            dr[i, j] = d
        storage[j] = s
    shape = p.shape
    return theta.reshape(shape), et.reshape(shape), dr.reshape(shape), storage.reshape(shape[1:]), n_missing


def ref_api(precip, k, index=None):
    p = np.asarray(precip)
    n = p.shape[0]
    P = p.reshape(n, -1)
    out = np.full(P.shape, np.nan, dtype=np.float32 if p.dtype == np.float32 else np.float64)
    idx = np.zeros(P.shape[1]) if index is None else np.array(index, dtype=np.float64).reshape(-1)
    for j in range(P.shape[1]):
        a = float(idx[j])
        for i in range(n):
            v = float(P[i, j])
            if math.isfinite(v):
                a = k * a + v
                out[i, j] = a
        idx[j] = a
    return out.reshape(p.shape), idx.reshape(p.shape[1:])


def _forcing(rng, n, m, dtype=np.float64, nan_frac=0.03):
    """Precipitation (mostly dry days, some storms) and PET, with some NaN days."""
    precip = np.where(rng.random((n, m)) < 0.35, rng.gamma(0.8, 8.0, (n, m)), 0.0)
    pet = rng.uniform(0.0, 7.0, (n, m))
    precip[rng.random((n, m)) < nan_frac] = np.nan
    pet[rng.random((n, m)) < nan_frac] = np.nan
    return precip.astype(dtype), pet.astype(dtype)


def _soils(rng, m):
    lim = saxton_rawls(rng.uniform(0.05, 0.7, m), rng.uniform(0.05, 0.29, m), rng.uniform(0.5, 5, m))
    return lim.field_capacity, lim.wilting_point


def _count(record) -> int:
    (w,) = [w for w in record if issubclass(w.category, DataLossWarning)]
    return int(re.search(r"([\d,]+) of", str(w.message)).group(1).replace(",", ""))


# ---------------------------------------------------------------------------------------------- Saxton & Rawls
def _sr_scalar(S, C, OM):
    """Saxton & Rawls (2006) eqs 1-3, 5 written out once more, one soil at a time."""
    t1500t = -0.024 * S + 0.487 * C + 0.006 * OM + 0.005 * (S * OM) - 0.013 * (C * OM) + 0.068 * (S * C) + 0.031
    t1500 = t1500t + (0.14 * t1500t - 0.02)
    t33t = -0.251 * S + 0.195 * C + 0.011 * OM + 0.006 * (S * OM) - 0.027 * (C * OM) + 0.452 * (S * C) + 0.299
    t33 = t33t + (1.283 * t33t * t33t - 0.374 * t33t - 0.015)
    ts33t = 0.278 * S + 0.034 * C + 0.022 * OM - 0.018 * (S * OM) - 0.027 * (C * OM) - 0.584 * (S * C) + 0.078
    ts33 = ts33t + (0.636 * ts33t - 0.107)
    return t1500, t33, t33 + ts33 - 0.097 * S + 0.043


def test_saxton_rawls_equals_the_equations() -> None:
    rng = np.random.default_rng(1)
    S = rng.uniform(0, 0.9, 50)
    C = rng.uniform(0, 1, 50) * (1 - S)
    OM = rng.uniform(0, 8, 50)
    lim = saxton_rawls(S, C, OM)
    want = np.array([_sr_scalar(s, c, om) for s, c, om in zip(S, C, OM, strict=True)])
    np.testing.assert_allclose(np.column_stack(lim), want, rtol=0, atol=1e-14)


# Saxton & Rawls (2006) Table 3 (OM 2.5 %): texture class, sand, clay, then WP, FC, saturation (m3 m-3)
TABLE3 = [
    ("sand", 0.88, 0.05, 0.05, 0.10, 0.46),
    ("loamy sand", 0.80, 0.05, 0.05, 0.12, 0.46),
    ("sandy loam", 0.65, 0.10, 0.08, 0.18, 0.45),
    ("loam", 0.40, 0.20, 0.14, 0.28, 0.46),
    ("silt loam", 0.20, 0.15, 0.11, 0.31, 0.48),
    ("silt", 0.10, 0.05, 0.06, 0.30, 0.48),
    ("sandy clay loam", 0.60, 0.25, 0.17, 0.27, 0.43),
    ("clay loam", 0.30, 0.35, 0.22, 0.36, 0.48),
    ("silty clay loam", 0.10, 0.35, 0.22, 0.38, 0.51),
    ("silty clay", 0.10, 0.45, 0.27, 0.41, 0.52),
    ("clay", 0.25, 0.50, 0.30, 0.42, 0.50),
]


@pytest.mark.parametrize(("name", "sand", "clay", "wp", "fc", "sat"), TABLE3, ids=[r[0] for r in TABLE3])
def test_saxton_rawls_published_classes(name, sand, clay, wp, fc, sat) -> None:
    lim = saxton_rawls(sand, clay, 2.5)
    # the table prints two decimals
    np.testing.assert_allclose([lim.wilting_point, lim.field_capacity, lim.saturation], [wp, fc, sat], atol=0.0051)


def test_saxton_rawls_nan_and_broadcast() -> None:
    lim = saxton_rawls(np.array([0.4, np.nan]), 0.2, np.array([[2.5], [1.0]]))
    assert lim.field_capacity.shape == (2, 2)
    assert np.isnan(lim.field_capacity[:, 1]).all() and np.isfinite(lim.field_capacity[:, 0]).all()
    assert lim.field_capacity[0, 0] != lim.field_capacity[1, 0]  # organic matter matters


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"sand": 40.0, "clay": 20.0}, "sand"),  # percent instead of fractions
        ({"sand": 0.4, "clay": 1.2}, "clay"),
        ({"sand": -0.1, "clay": 0.2}, "sand"),
        ({"sand": 0.7, "clay": 0.4}, "sand + clay"),
        ({"sand": 0.4, "clay": 0.2, "organic_matter": -1.0}, "organic_matter"),
    ],
)
def test_saxton_rawls_rejects_bad_texture(kwargs, name) -> None:
    with pytest.raises(ValidationError, match=re.escape(name)):
        saxton_rawls(**kwargs)


# ---------------------------------------------------------------------------------------------- radiation, PET
def test_ra_fao56_example_8() -> None:
    # FAO-56 Example 8: 20 deg S, 3 September (J = 246): Ra = 32.2 MJ m-2 d-1 (13.1 mm/day)
    ra = float(extraterrestrial_radiation(-20.0, 246))
    assert round(ra, 1) == 32.2
    assert round(ra * 0.408, 1) == 13.1
    # dates give the same day of year
    assert float(extraterrestrial_radiation(-20.0, np.datetime64("2015-09-03"))) == ra


def test_day_of_year_from_dates() -> None:
    days = np.arange("2020-01-01", "2021-01-01", dtype="datetime64[D]")  # a leap year: 366 days
    want = extraterrestrial_radiation(45.0, np.arange(1, 367))
    np.testing.assert_array_equal(extraterrestrial_radiation(45.0, days), want)
    np.testing.assert_array_equal(extraterrestrial_radiation(45.0, days.astype("datetime64[ns]")), want)
    np.testing.assert_array_equal(extraterrestrial_radiation(45.0, days.astype(str)), want)
    assert extraterrestrial_radiation(45.0, "2021-03-01") == want[59]  # not a leap year: 1 March is day 60
    for bad in (0, 367, 1.5, np.array(["NaT"], dtype="datetime64[D]")):
        with pytest.raises(ValidationError, match="doy"):
            extraterrestrial_radiation(45.0, bad)


def test_ra_polar_and_broadcast() -> None:
    ra = extraterrestrial_radiation(np.array([-80.0, 0.0, 80.0, 90.0]), np.array([[172], [355]]))
    assert ra.shape == (2, 4)
    assert ra[0, 0] == 0.0 and ra[1, 2] == 0.0  # polar nights
    assert ra[0, 3] > ra[0, 1] > 0  # midnight sun at the pole beats the equator in June
    with pytest.raises(ValidationError, match="lat"):
        extraterrestrial_radiation(95.0, 10)
    with pytest.raises(ValidationError, match="doy"):
        extraterrestrial_radiation(45.0, 0)


def _ra_by_hand(lat_deg, J):
    phi = math.radians(lat_deg)
    dr = 1 + 0.033 * math.cos(2 * math.pi / 365 * J)
    dec = 0.409 * math.sin(2 * math.pi / 365 * J - 1.39)
    ws = math.acos(-math.tan(phi) * math.tan(dec))
    return (
        24
        * 60
        / math.pi
        * 0.082
        * dr
        * (ws * math.sin(phi) * math.sin(dec) + math.cos(phi) * math.cos(dec) * math.sin(ws))
    )


def test_pet_hargreaves_by_hand() -> None:
    ra = _ra_by_hand(45.0, 180)
    want = 0.0023 * 0.408 * ra * (17.0 + 17.8) * math.sqrt(14.0)
    assert pet_hargreaves(10.0, 24.0, 45.0, 180) == pytest.approx(want, rel=1e-12)
    # a given tmean replaces (tmin + tmax) / 2
    want2 = 0.0023 * 0.408 * ra * (15.0 + 17.8) * math.sqrt(14.0)
    assert pet_hargreaves(10.0, 24.0, 45.0, 180, tmean=15.0) == pytest.approx(want2, rel=1e-12)
    # never negative; NaN stays NaN
    out = pet_hargreaves(np.array([-40.0, np.nan]), np.array([-30.0, 5.0]), 45.0, 180)
    assert out[0] == 0.0 and np.isnan(out[1])


def test_pet_hargreaves_inverted_range_warns() -> None:
    with pytest.warns(QualityWarning, match="1 of 2"):
        out = pet_hargreaves(np.array([10.0, 12.0]), np.array([20.0, 11.0]), 45.0, 180)
    assert out[1] == 0.0 and out[0] > 0


def test_pet_oudin_by_hand() -> None:
    ra = _ra_by_hand(45.0, 180)
    assert pet_oudin(15.0, 45.0, 180) == pytest.approx(ra / (2.45 * 1000) * 20.0 / 100 * 1000, rel=1e-12)
    out = pet_oudin(np.array([-5.0, -10.0, np.nan, 0.0]), 45.0, 180)
    assert out[0] == 0.0 and out[1] == 0.0 and np.isnan(out[2]) and out[3] > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pet_on_a_grid_equals_per_series(dtype) -> None:
    rng = np.random.default_rng(2)
    n, ny, nx = 5, 2, 3
    tmin = rng.uniform(-5, 15, (n, ny, nx)).astype(dtype)
    tmax = (tmin + rng.uniform(0, 15, (n, ny, nx))).astype(dtype)
    lat = rng.uniform(-60, 60, (ny, nx))
    doy = np.arange(100, 100 + n)
    grid_h = pet_hargreaves(tmin, tmax, lat, doy)
    grid_o = pet_oudin(tmin, lat, doy)
    assert grid_h.dtype == dtype and grid_h.shape == (n, ny, nx)
    for y in range(ny):
        for x in range(nx):
            np.testing.assert_array_equal(grid_h[:, y, x], pet_hargreaves(tmin[:, y, x], tmax[:, y, x], lat[y, x], doy))
            np.testing.assert_array_equal(grid_o[:, y, x], pet_oudin(tmin[:, y, x], lat[y, x], doy))
    with pytest.raises(ValidationError, match="doy"):
        pet_oudin(tmin, lat, np.arange(1, n + 2))
    with pytest.raises(ValidationError, match="lat"):
        pet_oudin(tmin, np.zeros(4), doy)


@pytest.mark.oracle
def test_pet_against_pyet() -> None:
    pyet = pytest.importorskip("pyet")
    import pandas as pd

    rng = np.random.default_rng(3)
    idx = pd.date_range("2021-01-01", periods=365, freq="D")
    tmin = pd.Series(rng.uniform(-8, 15, idx.size), index=idx)
    tmax = tmin + rng.uniform(0.5, 15, idx.size)
    tmean = (tmin + tmax) / 2
    lat = 47.3
    # pyet divides by a temperature-dependent latent heat (2.501 - 0.002361 T); ours is 1 / 0.408 (FAO-56)
    lam = 2.501 - 0.002361 * tmean.to_numpy()
    har = pyet.hargreaves(tmean, tmax, tmin, np.deg2rad(lat), clip_zero=True).to_numpy() * lam * 0.408
    np.testing.assert_allclose(pet_hargreaves(tmin.to_numpy(), tmax.to_numpy(), lat, idx.dayofyear), har, rtol=1e-8)
    oud = pyet.oudin(tmean, np.deg2rad(lat)).to_numpy() * lam / 2.45
    np.testing.assert_allclose(pet_oudin(tmean.to_numpy(), lat, idx.dayofyear), oud, rtol=1e-8, atol=1e-12)
    assert (oud == 0).any() and (oud > 0).any()  # both branches compared


# ---------------------------------------------------------------------------------------------- bucket
def test_bucket_by_hand() -> None:
    # depth 100 mm: S_fc = 30, S_wp = 10, S* = 10 + 0.5 (30 - 10) = 20; start at 25 mm
    r = bucket(
        [10.0, 0.0, 0.0, 0.0, 2.0],
        [2.0, 4.0, 12.0, 30.0, 1.0],
        0.30,
        0.10,
        depth_mm=100.0,
        beta_fraction=0.5,
        initial=0.25,
        fluxes=True,
    )
    # day 1: 25 + 10 = 35 -> drain 5 -> 30, beta 1, ET 2 -> 28
    # day 2: beta = min(18 / 10, 1) = 1, ET 4 -> 24
    # day 3: beta = 14 / 10 -> 1, ET 12 > 14? no: 24 - 12 = 12
    # day 4: beta = 2 / 10 = 0.2, ET = 30 * 0.2 = 6 > 2 available -> ET 2, S = S_wp = 10
    # day 5: 10 + 2 = 12, beta = 0.2, ET = 0.2 -> 11.8
    np.testing.assert_allclose(r.theta * 100, [28, 24, 12, 10, 11.8], rtol=1e-13)
    np.testing.assert_allclose(r.et, [2, 4, 12, 2, 0.2], rtol=1e-13)
    np.testing.assert_array_equal(r.drainage, [5, 0, 0, 0, 0])
    assert r.theta[3] == 0.10  # exactly the wilting point


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("beta_reference", ["available", "field_capacity"])
def test_bucket_equals_reference(dtype, beta_reference) -> None:
    rng = np.random.default_rng(4)
    n, m = 50, 600  # more than one block of 256 series
    precip, pet = _forcing(rng, n, m, dtype)
    fc, wp = _soils(rng, m)
    fc[7] = np.nan  # an undefined series
    init = rng.uniform(0.0, 0.5, m)
    kw = {"beta_fraction": 0.8, "beta_reference": beta_reference}
    if beta_reference == "field_capacity":
        wp = np.minimum(wp, 0.7 * fc)
    with pytest.warns(DataLossWarning) as record:
        got = bucket(precip, pet, fc, wp, depth_mm=250.0, initial=init, fluxes=True, return_state=True, **kw)
    (theta, et, dr), st = got
    want = ref_bucket(precip, pet, fc, wp, depth=250.0, f=0.8, beta_reference=beta_reference, storage=init * 250.0)
    assert theta.dtype == dtype
    for a, b in zip((theta, et, dr, st.storage), want[:4], strict=True):
        np.testing.assert_array_equal(a, b)
    assert _count(record) == want[4] > 0
    assert np.isnan(theta[:, 7]).all() and np.isfinite(theta[:, 8]).any()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bucket_with_irrigation_equals_reference(dtype) -> None:
    rng = np.random.default_rng(5)
    n, m = 40, 30
    precip, pet = _forcing(rng, n, m, dtype, nan_frac=0.0)
    irr = np.where(rng.random((n, m)) < 0.2, 15.0, 0.0).astype(dtype)
    irr[3, 4] = np.nan
    fc, wp = _soils(rng, m)
    with pytest.warns(DataLossWarning, match="irrigation") as record:
        got = bucket(precip, pet, fc, wp, irrigation=irr)
    want = ref_bucket(precip, pet, fc, wp, irrigation=irr)
    np.testing.assert_array_equal(got, want[0])
    assert _count(record) == 1
    # irrigation adds water: wetter than without
    assert np.nansum(got) > np.nansum(bucket(precip, pet, fc, wp))


def test_bucket_dtype_rules() -> None:
    p32 = np.ones((3, 2), np.float32)
    assert bucket(p32, p32, 0.3, 0.1).dtype == np.float32
    assert bucket(p32, p32.astype(np.float64), 0.3, 0.1).dtype == np.float64
    assert bucket(np.ones((3, 2), int), p32, 0.3, 0.1).dtype == np.float64


def test_bucket_grid_equals_per_series() -> None:
    rng = np.random.default_rng(6)
    n, ny, nx = 30, 4, 5
    precip, pet = _forcing(rng, n, ny * nx)
    precip, pet = precip.reshape(n, ny, nx), pet.reshape(n, ny, nx)
    fc, wp = _soils(rng, ny * nx)
    fc, wp = fc.reshape(ny, nx), wp.reshape(ny, nx)
    with pytest.warns(DataLossWarning):
        grid = bucket(precip, pet, fc, wp)
    assert grid.shape == (n, ny, nx)
    for y in range(ny):
        for x in range(nx):
            p, e = precip[:, y, x], pet[:, y, x]
            if np.isfinite(p).all() and np.isfinite(e).all():
                single = bucket(p, e, fc[y, x], wp[y, x])
            else:
                with pytest.warns(DataLossWarning):
                    single = bucket(p, e, fc[y, x], wp[y, x])
            np.testing.assert_array_equal(grid[:, y, x], single)


def test_bucket_threads_do_not_matter() -> None:
    rng = np.random.default_rng(7)
    precip, pet = _forcing(rng, 60, 1000, nan_frac=0.0)
    fc, wp = _soils(rng, 1000)
    one = bucket(precip, pet, fc, wp, n_threads=1, fluxes=True)
    for t in (2, 3):
        other = bucket(precip, pet, fc, wp, n_threads=t, fluxes=True)
        for a, b in zip(one, other, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bucket_state_continuation_is_bit_identical(dtype) -> None:
    rng = np.random.default_rng(8)
    n, m, k = 80, 300, 37
    precip, pet = _forcing(rng, n, m, dtype)
    fc, wp = _soils(rng, m)
    kw = {"depth_mm": 400.0, "beta_fraction": 0.7, "fluxes": True, "return_state": True}
    with pytest.warns(DataLossWarning):
        full, st_full = bucket(precip, pet, fc, wp, initial=0.2, **kw)
    with pytest.warns(DataLossWarning):
        first, st = bucket(precip[:k], pet[:k], fc, wp, initial=0.2, **kw)
    with pytest.warns(DataLossWarning):
        second, st2 = bucket(precip[k:], pet[k:], fc, wp, state=st, **kw)
    for a, b, c in zip(full, first, second, strict=True):
        np.testing.assert_array_equal(a, np.concatenate([b, c]))
    np.testing.assert_array_equal(st_full.storage, st2.storage)
    np.testing.assert_array_equal(st2.theta, st2.storage / 400.0)


def test_bucket_mass_balance_closes() -> None:
    rng = np.random.default_rng(9)
    n, m, depth = 365, 50, 300.0
    precip, pet = _forcing(rng, n, m)
    irr = np.where(rng.random((n, m)) < 0.05, 20.0, 0.0)
    fc, wp = _soils(rng, m)
    s0 = rng.uniform(0.0, 1.0, m) * fc
    with pytest.warns(DataLossWarning):
        r, st = bucket(precip, pet, fc, wp, irrigation=irr, initial=s0, depth_mm=depth, fluxes=True, return_state=True)
    used = np.isfinite(r.theta)
    water = np.where(used, precip + irr, 0.0).sum(axis=0)
    lhs = water - np.nansum(r.et, axis=0) - np.nansum(r.drainage, axis=0)
    np.testing.assert_allclose(lhs, st.storage - s0 * depth, rtol=0, atol=1e-9)
    assert np.nansum(r.drainage) > 0 and np.nansum(r.et) > 0  # both fluxes exercised
    assert (np.isnan(r.et) == ~used).all()


def test_bucket_theta_stays_between_the_limits() -> None:
    rng = np.random.default_rng(10)
    n, m = 200, 400
    precip = rng.gamma(0.5, 20.0, (n, m))  # wet
    pet = np.where(rng.random((n, m)) < 0.3, 0.0, rng.uniform(0, 25.0, (n, m)))  # calm days and very dry ones
    fc, wp = _soils(rng, m)
    init = rng.uniform(0, 1, m) * (fc - wp) + wp
    r = bucket(precip, pet, fc, wp, initial=init, depth_mm=100.0, fluxes=True)
    # storage = S_fc or S_wp exactly at the limits; θ = S / depth is within rounding (2 ulp) of them
    tol_fc, tol_wp = 2 * np.spacing(fc), 2 * np.spacing(wp)
    assert (r.theta <= fc + tol_fc).all() and (r.theta >= wp - tol_wp).all()
    assert (abs(r.theta - fc) <= tol_fc).any(axis=0).mean() > 0.5  # most series reach both limits
    assert (abs(r.theta - wp) <= tol_wp).any(axis=0).mean() > 0.5
    assert (r.et <= pet).all() and (r.et >= 0).all() and (r.drainage >= 0).all()
    # from below the wilting point: no ET, only rain raises it; never below 0
    dry = bucket(np.zeros((5, 1)), np.full((5, 1), 5.0), 0.3, 0.1, initial=0.02)
    np.testing.assert_array_equal(dry, 0.02)


def test_bucket_dry_down_is_monotone_to_the_wilting_point() -> None:
    theta = bucket(np.zeros(200), np.full(200, 4.0), 0.3, 0.1)
    assert (np.diff(theta) <= 0).all() and theta[0] < 0.3
    assert theta[-1] == pytest.approx(0.1, abs=1e-6) and (theta >= 0.1).all()


def test_bucket_missing_days_skip_and_warn() -> None:
    precip = np.array([[5.0, 1.0], [np.nan, 1.0], [5.0, np.inf], [0.0, 0.0]])
    pet = np.array([[1.0, 1.0], [1.0, 1.0], [np.nan, 1.0], [1.0, 1.0]])
    with pytest.warns(DataLossWarning, match="3 of 8 series-days"):
        r, st = bucket(precip, pet, [0.3, 0.3], 0.1, initial=0.2, fluxes=True, return_state=True)
    assert np.isnan(r.theta[1:3, 0]).all() and np.isnan(r.theta[2, 1])
    # skipped days leave the storage alone: series 0 sees days 0 and 3 only
    ref = bucket(precip[[0, 3], :1], pet[[0, 3], :1], 0.3, 0.1, initial=0.2)
    np.testing.assert_array_equal(r.theta[[0, 3], 0], ref[:, 0])
    # an undefined series (no soil) is NaN and not counted
    with pytest.warns(DataLossWarning, match="2 of 4 series-days"):
        u = bucket(precip[:, :1].repeat(2, 1), pet[:, :1].repeat(2, 1), [0.3, np.nan], 0.1)
    assert np.isnan(u[:, 1]).all()
    # nothing missing: no warning (pytest turns SMEngineWarnings into errors)
    bucket(np.zeros((3, 2)), np.ones((3, 2)), 0.3, 0.1)


def test_bucket_read_only_inputs() -> None:
    rng = np.random.default_rng(11)
    precip, pet = _forcing(rng, 10, 5, nan_frac=0.0)
    fc, wp = _soils(rng, 5)
    for a in (precip, pet, fc, wp):
        a.setflags(write=False)
    np.testing.assert_array_equal(bucket(precip, pet, fc, wp), ref_bucket(precip, pet, fc, wp)[0])


def test_bucket_empty_time_axis() -> None:
    out, st = bucket(np.zeros((0, 3)), np.zeros((0, 3)), 0.3, 0.1, return_state=True)
    assert out.shape == (0, 3)
    np.testing.assert_array_equal(st.storage, 90.0)


@pytest.mark.parametrize(
    ("kwargs", "err", "name"),
    [
        ({"pet": np.ones((4, 3))}, ValidationError, "pet"),
        ({"precip": np.float64(1.0), "pet": np.float64(1.0)}, ValidationError, "precip"),
        ({"field_capacity": np.full(3, 0.3)}, ValidationError, "field_capacity"),
        ({"field_capacity": 30.0}, ValidationError, "field_capacity"),
        ({"wilting_point": 0.35}, ValidationError, "wilting_point"),
        ({"depth_mm": -100.0}, ConfigError, "depth_mm"),
        ({"depth_mm": np.nan}, ConfigError, "depth_mm"),
        ({"beta_fraction": 0.0}, ConfigError, "beta_fraction"),
        ({"beta_fraction": 1.5}, ConfigError, "beta_fraction"),
        ({"drainage": "linear"}, ConfigError, "drainage"),
        ({"beta_reference": "fc"}, ConfigError, "beta_reference"),
        ({"beta_reference": "field_capacity", "beta_fraction": 0.3}, ValidationError, "beta_fraction"),
        ({"precip": -np.ones((5, 2))}, ValidationError, "precip"),
        ({"pet": -np.ones((5, 2))}, ValidationError, "pet"),
        ({"irrigation": np.ones((4, 2))}, ValidationError, "irrigation"),
        ({"irrigation": -1.0}, ValidationError, "irrigation"),
        ({"initial": 1.5}, ValidationError, "initial"),
        ({"initial": 0.2, "state": BucketState(np.zeros(2), 300.0)}, ConfigError, "initial"),
        ({"state": BucketState(np.zeros(3), 300.0)}, ValidationError, "state"),
        ({"state": BucketState(np.zeros(2), 200.0)}, ConfigError, "depth_mm"),
        ({"n_threads": 0}, ConfigError, "n_threads"),
    ],
)
def test_bucket_errors_name_the_argument(kwargs, err, name) -> None:
    args = {"precip": np.ones((5, 2)), "pet": np.ones((5, 2)), "field_capacity": 0.3, "wilting_point": 0.1} | kwargs
    with pytest.raises(err, match=re.escape(name)):
        bucket(**args)


def test_bucket_params_round_trip_and_kwargs() -> None:
    p = BucketParams(depth_mm=400, beta_fraction=0.7, pet_method="oudin", beta_reference="field_capacity")
    cfg = json.loads(json.dumps(p.get_config()))
    assert BucketParams.from_config(cfg) == p and BucketParams.from_config(json.dumps(cfg)) == p
    assert cfg == {
        "depth_mm": 400.0,
        "beta_fraction": 0.7,
        "drainage": "excess",
        "pet_method": "oudin",
        "beta_reference": "field_capacity",
    }
    rng = np.random.default_rng(12)
    precip, pet = _forcing(rng, 20, 4, nan_frac=0.0)
    direct = bucket(precip, pet, 0.3, 0.1, depth_mm=400, beta_fraction=0.7, beta_reference="field_capacity")
    np.testing.assert_array_equal(bucket(precip, pet, 0.3, 0.1, **p.bucket_kwargs()), direct)
    assert not np.array_equal(bucket(precip, pet, 0.3, 0.1), direct)
    with pytest.raises(ConfigError, match="unknown keys"):
        BucketParams.from_config({**cfg, "k": 1})
    with pytest.raises(ConfigError, match="pet_method"):
        BucketParams(pet_method="penman")
    with pytest.raises(ConfigError, match="depth_mm"):
        BucketParams(depth_mm=0)


def test_bucket_result_type() -> None:
    r = bucket(np.ones((3, 2)), np.ones((3, 2)), 0.3, 0.1, fluxes=True)
    assert isinstance(r, BucketResult) and r.et.shape == (3, 2)


# ---------------------------------------------------------------------------------------------- API
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_api_equals_loop(dtype) -> None:
    rng = np.random.default_rng(13)
    precip, _ = _forcing(rng, 60, 520, dtype)
    with pytest.warns(DataLossWarning) as record:
        got, st = antecedent_precipitation_index(precip, 0.85, return_state=True)
    want, idx = ref_api(precip, 0.85)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(st.index, idx)
    assert _count(record) == int(np.isnan(precip).sum())


def test_api_by_hand_grid_threads_and_state() -> None:
    np.testing.assert_allclose(antecedent_precipitation_index([4.0, 0.0, 2.0, 0.0], 0.5), [4, 2, 3, 1.5], rtol=0)
    rng = np.random.default_rng(14)
    precip, _ = _forcing(rng, 40, 3 * 400, nan_frac=0.0)
    grid = precip.reshape(40, 3, 400)
    a = antecedent_precipitation_index(grid, 0.9, n_threads=1)
    np.testing.assert_array_equal(a, antecedent_precipitation_index(grid, 0.9, n_threads=2))
    np.testing.assert_array_equal(a[:, 2, 17], antecedent_precipitation_index(grid[:, 2, 17], 0.9))
    first, st = antecedent_precipitation_index(grid[:13], 0.9, return_state=True)
    second = antecedent_precipitation_index(grid[13:], 0.9, state=st)
    np.testing.assert_array_equal(a, np.concatenate([first, second]))
    with pytest.raises(ConfigError, match="k"):
        antecedent_precipitation_index(grid, 1.2)
    with pytest.raises(ValidationError, match="precip"):
        antecedent_precipitation_index(-grid, 0.9)
    with pytest.raises(ValidationError, match="state"):
        antecedent_precipitation_index(grid, 0.9, state=APIState(np.zeros(3)))


def test_api_missing_day_keeps_the_index() -> None:
    with pytest.warns(DataLossWarning, match="1 of 4"):
        a = antecedent_precipitation_index([10.0, np.nan, 0.0, 0.0], 0.5)
    np.testing.assert_array_equal(a, [10.0, np.nan, 5.0, 2.5])
