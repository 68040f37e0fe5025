"""smengine.stations: readers, counts → soil moisture, QC and daily aggregation."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smengine import neutrons as nt
from smengine import stations as S
from smengine.errors import DataError, DataLossWarning, QualityWarning, ValidationError
from smengine.metrics import bias, pearson_r

UTC = "UTC"


def _hourly(n: int, start: str = "2020-06-01", freq: str = "1h") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq=freq, tz=UTC)


# --------------------------------------------------------------------------------------
# counts → soil moisture
# --------------------------------------------------------------------------------------
def test_counts_to_sm_recovers_theta_through_all_corrections() -> None:
    """Simulate raw counts from a known θ and met, then invert: θ comes back exactly."""
    rng = np.random.default_rng(1)
    idx = _hourly(24 * 20)
    theta = 0.2 + 0.1 * np.sin(np.arange(idx.size) / 50.0)
    p = 980.0 + 3 * rng.standard_normal(idx.size)  # raw counts vary with p; keep inside the outlier band
    h = 8.0 + 3 * rng.random(idx.size)
    nm = pd.Series(150.0 * (1 + 0.05 * np.sin(np.arange(idx.size) / 30.0)), index=idx)
    n0, bd, lw, soc, rc = 1500.0, 1.3, 0.02, 0.01, 2.5
    n_true = nt.theta_to_counts(theta, n0, bd, lw, soc)
    f = nt.pressure_correction(p) * nt.humidity_correction(h) * nt.incoming_correction(nm.to_numpy(), 150.0, rc, 4.49)
    raw = pd.Series(n_true / f, index=idx)  # factors multiply raw counts
    out = S.counts_to_sm(
        raw,
        n0=n0,
        bulk_density=bd,
        lattice_water=lw,
        soc=soc,
        pressure=pd.Series(p, idx),
        abs_humidity=pd.Series(h, idx),
        incoming=nm,
        incoming_reference=150.0,
        cutoff_rigidity=rc,
        smooth_hours=1,
    )
    np.testing.assert_allclose(out["sm"], theta, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["counts"], n_true, rtol=1e-12)
    assert (out["flag"] == 0).all()
    # the 24 h moving mean of counts, then θ: equals θ of the smoothed true counts
    sm24 = S.counts_to_sm(
        raw,
        n0=n0,
        bulk_density=bd,
        lattice_water=lw,
        soc=soc,
        pressure=pd.Series(p, idx),
        abs_humidity=pd.Series(h, idx),
        incoming=nm,
        incoming_reference=150.0,
        cutoff_rigidity=rc,
    )
    ref = pd.Series(n_true, idx).rolling(24, center=True, min_periods=12).mean()
    np.testing.assert_allclose(sm24["sm"], nt.counts_to_theta(ref.to_numpy(), n0, bd, lw, soc), atol=1e-12)


def test_counts_to_sm_flags_extremes_outliers_and_missing_pressure(caplog: pytest.LogCaptureFixture) -> None:
    idx = _hourly(72)
    rng = np.random.default_rng(0)
    raw = pd.Series(rng.poisson(900, idx.size).astype(float), index=idx)
    raw.iloc[15] = 20.0  # extreme (< 50 cph)
    raw.iloc[30] = 5000.0  # outlier: > mean + 2√(24 h sum) ≈ 900 + 294
    p = pd.Series(1000.0, index=idx)
    p.iloc[40] = np.nan
    out = S.counts_to_sm(raw, n0=1500, bulk_density=1.4, pressure=p)
    f = out["flag"].to_numpy()
    assert f[15] & S.QC.EXTREME_COUNTS and f[30] & S.QC.OUTLIER and f[40] & S.QC.NO_CORRECTION
    assert np.isnan(out["sm"].iloc[[15, 30, 40]]).all()
    assert ((f & int(S.DEFAULT_MASK)) != 0).sum() == 3
    assert np.isfinite(out["sm"].drop(out.index[[15, 30, 40]])).all()
    # an incoming series not covering the data is reported, not silently used
    nm = pd.Series([150.0, 151.0], index=pd.date_range("2000-01-01", periods=2, freq="1h", tz=UTC))
    with caplog.at_level(logging.WARNING, logger="smengine.stations"):
        out2 = S.counts_to_sm(raw, n0=1500, bulk_density=1.4, pressure=p, incoming=nm)
    assert "does not cover" in caplog.text
    assert (out2["f_incoming"] == 1.0).all()


def test_counts_to_sm_subhourly_rates_average_to_hours() -> None:
    idx = _hourly(96, freq="30min")
    raw = pd.Series(np.r_[np.full(48, 1000.0), np.full(48, 1200.0)], index=idx)
    raw.iloc[1] = np.nan  # one missing half-hour: the hour keeps the other half's rate
    out = S.counts_to_sm(raw, n0=2000, bulk_density=1.4, smooth_hours=1)
    assert out.index.freq == pd.Timedelta("1h") or (np.diff(out.index.values) == np.timedelta64(1, "h")).all()
    assert out["counts_raw"].iloc[0] == 1000.0 and out["counts_raw"].iloc[-1] == 1200.0
    assert len(out) == 48


# --------------------------------------------------------------------------------------
# Station / StationSet / daily
# --------------------------------------------------------------------------------------
def _station(sid: str = "X", sm=None, idx=None, **kw) -> S.Station:
    idx = _hourly(48) if idx is None else idx
    sm = np.full(idx.size, 0.25) if sm is None else sm
    return S.Station(id=sid, lat=50.0, lon=6.0, data=pd.DataFrame({"sm": sm}, index=idx), **kw)


def test_station_requires_coordinates_and_utc_index() -> None:
    with pytest.raises(ValidationError, match="station B.*lat"):
        S.Station(id="B", lat=np.nan, lon=6.0, data=pd.DataFrame({"sm": [0.2]}, index=_hourly(1)))
    with pytest.raises(ValidationError, match="lon 200"):
        S.Station(id="B", lat=50, lon=200, data=pd.DataFrame({"sm": [0.2]}, index=_hourly(1)))
    with pytest.raises(ValidationError, match="timezone-aware"):
        S.Station(id="B", lat=50, lon=6, data=pd.DataFrame({"sm": [0.2]}, index=pd.date_range("2020", periods=1)))
    with pytest.raises(ValidationError, match="no 'sm'"):
        S.Station(id="B", lat=50, lon=6, data=pd.DataFrame({"x": [0.2]}, index=_hourly(1)))
    # other zones are converted to UTC
    idx = pd.date_range("2020-06-01 01:00", periods=3, freq="1h", tz="Europe/Berlin")
    st = S.Station(id="B", lat=50, lon=6, data=pd.DataFrame({"sm": [0.1, 0.2, 0.3]}, index=idx))
    assert str(st.data.index.tz) == "UTC" and st.data.index[0] == pd.Timestamp("2020-05-31 23:00", tz=UTC)
    with pytest.raises(ValidationError, match="duplicate station id 'X'"):
        S.StationSet([_station(), _station()])


def test_daily_min_hours_threshold_and_masks() -> None:
    idx = _hourly(72)
    sm = np.full(72, 0.2)
    sm[24:48] = 0.3
    sm[48:72] = 0.4
    sm[24 + 18 :] = np.nan  # day 2: exactly 18 valid hours; day 3: none
    flag = np.zeros(72, dtype=np.int64)
    flag[:7] = S.QC.SNOW  # day 1: 17 valid hours → dropped
    flag[30] = S.QC.GAPFILLED_MET  # informational only
    data = pd.DataFrame({"sm": sm, "flag": flag, "precipitation": np.full(72, 0.5), "pressure": 990.0}, index=idx)
    ss = S.StationSet([S.Station(id="A", lat=50, lon=6, data=data)])
    d = ss.daily()
    assert d["date"].tolist() == [np.datetime64("2020-06-02")]
    assert d["sm"].iloc[0] == pytest.approx(0.3) and d["n_hours"].iloc[0] == 18
    assert d["precipitation"].iloc[0] == pytest.approx(12.0)  # summed over the day
    assert d.attrs["dropped_days"] == {"A": 1}
    d0 = ss.daily(min_hours=17)
    assert len(d0) == 2 and d0["sm"].iloc[0] == pytest.approx(0.2)
    d_nomask = ss.daily(mask=0)
    assert len(d_nomask) == 2 and d_nomask["n_hours"].iloc[0] == 24
    with pytest.raises(Exception, match="min_hours"):
        ss.daily(min_hours=25)


def test_daily_half_hours_count_as_half_and_days_are_utc() -> None:
    # 30-min data in UTC+02:00: 36 valid half-hours = 18 h
    idx = pd.date_range("2020-06-01 02:00", periods=48, freq="30min", tz="Etc/GMT-2")  # = 00:00 UTC
    sm = np.r_[np.full(36, 0.1), np.full(12, np.nan)]
    ss = S.StationSet([S.Station(id="H", lat=50, lon=6, data=pd.DataFrame({"sm": sm}, index=idx))])
    d = ss.daily()
    assert d["date"].tolist() == [np.datetime64("2020-06-01")] and d["n_hours"].iloc[0] == 18.0


def test_daily_input_is_recognised_and_losses_are_loud() -> None:
    # a series that is already daily: each valid day stands for 24 h, so min_hours=18 keeps it
    idx = pd.date_range("2020-06-01", periods=10, freq="D", tz="UTC")
    sm = np.linspace(0.1, 0.3, 10)
    sm[4] = np.nan
    ss = S.StationSet([S.Station(id="D", lat=50, lon=6, data=pd.DataFrame({"sm": sm}, index=idx))])
    d = ss.daily()
    assert len(d) == 9 and (d["n_hours"] == 24.0).all() and d.attrs["dropped_days"] == {"D": 0}
    np.testing.assert_allclose(d["sm"], np.delete(sm, 4))
    # 3-hourly data: 6 valid steps = 18 h; a day counts at most 24 h
    idx3 = pd.date_range("2020-06-01", periods=16, freq="3h", tz="UTC")
    sm3 = np.r_[np.full(6, 0.2), np.full(2, np.nan), np.full(5, 0.3), np.full(3, np.nan)]
    d3 = S.StationSet([S.Station(id="T", lat=50, lon=6, data=pd.DataFrame({"sm": sm3}, index=idx3))])
    out = d3.daily(min_hours=16)  # day 2 has 15 h: dropped; half the days is not yet loud (warnings are errors here)
    assert out["n_hours"].tolist() == [18.0] and out.attrs["dropped_days"] == {"T": 1}
    assert d3.daily(min_hours=15)["n_hours"].tolist() == [18.0, 15.0]
    # hourly data losing most days is loud: a DataLossWarning naming the station and counts
    idxh = _hourly(24 * 4)
    smh = np.full(24 * 4, 0.2)
    smh[10:24] = smh[34:48] = smh[58:72] = np.nan  # three days with 10 valid hours, one full day
    sh = S.StationSet([S.Station(id="H", lat=50, lon=6, data=pd.DataFrame({"sm": smh}, index=idxh))])
    with pytest.warns(DataLossWarning, match=r"H 3 of 4.*lower min_hours"):
        assert len(sh.daily()) == 1


def test_stationset_mapping_metadata_and_add() -> None:
    a = _station("A", bulk_density=1.3, n0=1000.0)
    b = _station("B")
    ss = S.StationSet([a]) + S.StationSet([b], [S.Exclusion("C", "no metadata", "f.csv", 3)])
    assert list(ss) == ["A", "B"] and len(ss) == 2 and "A" in ss
    assert ss.metadata().loc["A", "bulk_density"] == 1.3
    assert ss.exclusions.to_dict("records") == [
        {"station": "C", "reason": "no metadata", "source": "f.csv", "n_values": 3, "return_code": 4}
    ]
    with pytest.raises(KeyError, match="no station 'Z'"):
        ss["Z"]


# --------------------------------------------------------------------------------------
# generic CSV
# --------------------------------------------------------------------------------------
def test_read_csv_single_station_and_out_of_range(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "site.csv"
    idx = _hourly(48)
    sm = np.full(48, 0.3)
    sm[3] = 1.7  # impossible
    pd.DataFrame({"time": idx.strftime("%Y-%m-%dT%H:%M:%SZ"), "theta": sm, "P": 1000.0}).to_csv(f, index=False)
    with (
        caplog.at_level(logging.WARNING, logger="smengine.stations"),
        pytest.warns(QualityWarning, match=r"\['site'\] have no soil_temperature or air_temperature.*not masked"),
        pytest.warns(DataLossWarning, match=r"outside the physical range read as NaN .*: site sm 1 of 48 \(outside"),
    ):
        ss = S.read_csv(
            f, metadata={"lat": 50.9, "lon": 6.4, "bulk_density": 1.4}, columns={"theta": "sm", "P": "pressure"}
        )
    st = ss["site"]
    assert any("NOT masked" in line for line in st.processing)
    assert st.bulk_density == 1.4 and st.lat == 50.9
    assert np.isnan(st.data["sm"].iloc[3]) and st.data["flag"].iloc[3] & S.QC.OUT_OF_RANGE
    assert ss.flag_counts().loc["site", "OUT_OF_RANGE"] == 1
    d = ss.daily()
    assert d["n_hours"].tolist() == [23.0, 24.0] and np.allclose(d["sm"], 0.3)


def test_read_csv_long_format_with_metadata_and_exclusions(tmp_path: Path) -> None:
    f = tmp_path / "net.csv"
    idx = _hourly(24)
    rows = pd.concat(
        [
            pd.DataFrame({"time": idx.strftime("%Y-%m-%d %H:%M"), "station": s, "sm": v})
            for s, v in (("A", 0.1), ("B", 0.2), ("C", 0.3))
        ]
    )
    rows.to_csv(f, index=False)
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"station": ["A", "B"], "lat": [50.0, np.nan], "lon": [6.0, 7.0]}).to_csv(meta, index=False)
    ss = S.read_csv(f, metadata=meta, snow_mask=False)
    assert list(ss) == ["A"]
    assert ss["A"].processing[-1] == "snow/frozen soil not masked (snow_mask=False)"
    ex = ss.exclusions.set_index("station")
    assert "lat" in ex.loc["B", "reason"] and ex.loc["C", "reason"] == "no metadata (lat, lon)"
    assert ex.loc["C", "n_values"] == 24
    # return codes of the causes (errors.RETURN_CODES): a failed check (B's coordinates), missing data (C)
    assert ex.loc["B", "return_code"] == ValidationError.return_code and ex.loc["C", "return_code"] == 4
    with pytest.raises(DataError, match="station B .*lat nan is missing"):
        S.read_csv(f, metadata=meta, strict=True, snow_mask=False)


def test_read_csv_bad_input_errors_name_file_column_row(tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    pd.DataFrame({"time": ["2020-01-01 00:00", "2020-01-01 01:00", "yesterday"], "sm": [0.1, 0.2, 0.3]}).to_csv(
        f, index=False
    )
    with pytest.raises(DataError, match=r"bad\.csv: cannot parse time 'yesterday' in column 'time' \(data row 3\)"):
        S.read_csv(f, metadata={"lat": 1, "lon": 1})
    g = tmp_path / "nosm.csv"
    pd.DataFrame({"time": ["2020-01-01 00:00"], "vwc": [0.1]}).to_csv(g, index=False)
    with pytest.raises(DataError, match=r"nosm\.csv: missing column 'sm'.*found time, vwc"):
        S.read_csv(g, metadata={"lat": 1, "lon": 1})
    with pytest.raises(DataError, match=r"nosm\.csv: missing column\(s\) 'date'"):
        S.read_csv(g, metadata={"lat": 1, "lon": 1}, time_column="date")
    with pytest.raises(DataError, match="file not found"):
        S.read_csv(tmp_path / "absent.csv")


def test_read_csv_counts_are_converted(tmp_path: Path) -> None:
    idx = _hourly(24 * 4)
    theta = np.full(idx.size, 0.22)
    p, rh, t = 995.0, 70.0, 15.0
    h = float(nt.absolute_humidity(rh, t))
    n = nt.theta_to_counts(theta, 1600.0, 1.2, 0.03, 0.0)
    raw = n / (nt.pressure_correction(p) * nt.humidity_correction(h))
    f = tmp_path / "crns.csv"
    pd.DataFrame(
        {
            "time": idx.strftime("%Y-%m-%d %H:%M"),
            "counts_raw": raw,
            "pressure": p,
            "rel_humidity": rh,
            "air_temperature": t,
        }
    ).to_csv(f, index=False)
    meta = {"lat": 38.2, "lon": -97.5, "n0": 1600.0, "bulk_density": 1.2, "lattice_water": 0.03}
    # SOC not given: it stays unknown (NaN) on the station, and the conversion says it assumed 0
    with pytest.warns(QualityWarning, match=r"lattice water and/or SOC unknown at station\(s\) \['K1'\]"):
        ss = S.read_csv(f, station="K1", metadata=meta)
    np.testing.assert_allclose(ss["K1"].data["sm"], 0.22, atol=1e-12)
    assert ss["K1"].lattice_water == 0.03 and np.isnan(ss["K1"].soc)
    assert np.isnan(ss.metadata().loc["K1", "soc"])
    assert any("soc=unknown" in line for line in ss["K1"].processing)
    # air temperature 15 °C every day: masking ran, nothing frozen
    assert not (ss["K1"].data["flag"].to_numpy() & int(S.QC.SNOW)).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = S.read_csv(f, station="K1", metadata={**meta, "soc": 0.0})
    np.testing.assert_allclose(quiet["K1"].data["sm"], 0.22, atol=1e-12)
    with pytest.raises(DataError, match="needs 'n0'"):
        S.read_csv(f, metadata={"lat": 38.2, "lon": -97.5, "bulk_density": 1.2})


# --------------------------------------------------------------------------------------
# ISMN
# --------------------------------------------------------------------------------------
STM_HEAD = "XNET       XNET            Site_1            45.10000    7.20000  300.00    0.05    0.05 TDR-probe \r"


def test_read_ismn_cr_and_lf_line_endings_and_flags(tmp_path: Path) -> None:
    body = ["2020/01/01 00:00   0.2000 G M ", "2020/01/01 01:00   0.2100 D02 M ", "2020/01/01 02:00   0.2200 U M "]
    for name, nl in (("cr", "\r"), ("lf", "\n"), ("crlf", "\r\n")):
        f = tmp_path / name / "XNET_XNET_Site_1_sm_0.050000_0.050000_TDR_20200101_20200101.stm"
        f.parent.mkdir()
        f.write_bytes((STM_HEAD.rstrip("\r") + nl + nl.join(body) + nl).encode())
        ss = S.read_ismn(f.parent)
        st = ss["XNET.Site_1.0.05-0.05"]
        assert (st.lat, st.lon, st.elevation, st.depth) == (45.1, 7.2, 300.0, (0.05, 0.05))
        assert st.data["sm"].tolist() == [0.2, 0.21, 0.22]
        assert st.data["flag"].tolist() == [0, int(S.QC.SOURCE_FLAG), 0]
        assert S.read_ismn(f, good_flags=["G"])[st.id].data["flag"].tolist() == [0, 32, 32]


def test_read_ismn_bad_lines(tmp_path: Path) -> None:
    f = tmp_path / "X_sm_.stm"
    f.write_bytes((STM_HEAD + "2020/01/01 00:00   0.2000 G M \r2020/13/01 01:00   0.2 G M \r").encode())
    with pytest.raises(DataError, match=r"X_sm_\.stm: cannot parse time '2020/13/01 01:00'"):
        S.read_ismn(f, strict=True)
    ss = S.read_ismn(f)
    assert len(ss) == 0 and "cannot parse time" in ss.exclusions["reason"].iloc[0]
    f.write_bytes((STM_HEAD + "2020/01/01 00:00   abc G M \r").encode())
    with pytest.raises(DataError, match="line 2: soil moisture 'abc' is not a number"):
        S.read_ismn(f, strict=True)


@pytest.mark.data
def test_read_ismn_real_cr_only_files(data_dir: Path) -> None:
    root = data_dir / "insitu" / "ismn_pytesmo_testdata"
    f = next(root.rglob("*Narbonne*.stm"))
    assert b"\r" in f.read_bytes()[:200] and b"\n" not in f.read_bytes()  # old-Mac line ends
    ss = S.read_ismn(root)
    assert len(ss) == 9 and ss.exclusions.empty
    st = ss["SMOSMANIA.Narbonne.0.05-0.05"]
    assert (st.lat, st.lon) == (43.15, 2.9567)
    assert st.data.index[0] == pd.Timestamp("2007-01-01 01:00", tz=UTC) and st.data["sm"].iloc[0] == 0.214
    # independent parse of the same file
    rows = [ln.split() for ln in f.read_bytes().decode().split("\r")[1:] if ln.strip()]
    assert len(st.data) == len(rows)
    np.testing.assert_array_equal(st.data["sm"].to_numpy(), [float(r[2]) for r in rows])
    # MAQU's provider flags (not 'G') cover whole days: lost days are counted and said, not silent
    with pytest.warns(DataLossWarning, match=r"MAQU\S+ 380 of 755 \(SOURCE_FLAG 380\)"):
        d = ss.daily()
    assert set(d["station"]) <= set(ss) and (d["n_hours"] >= 18).all()
    good = sum(((ss[s].data["flag"] == 0) & ss[s].data["sm"].notna()).sum() for s in ss)
    assert good > 0
    for sid in ss:  # independent count: days with data but fewer than 18 valid (unflagged) hourly steps
        x = ss[sid].data
        day = x.index.floor("D")
        valid = (x["sm"].notna() & (x["flag"] == 0)).groupby(day).sum() * S.step_hours(x.index)
        had = x["sm"].notna().groupby(day).any()
        assert d.attrs["dropped_days"][sid] == int((had & (valid < 18)).sum()), sid


# --------------------------------------------------------------------------------------
# COSMOS-Europe rev1
# --------------------------------------------------------------------------------------
def _rev1_folder(tmp_path: Path, meta_dir: Path, rev1_names: bool) -> Path:
    root = tmp_path / ("rev1" if rev1_names else "plain")
    (root / "processed_crns_data_and_diagnostics_rev1").mkdir(parents=True)
    gen = pd.read_csv(meta_dir / "General_information.csv", encoding="latin-1", dtype=str)
    add = pd.read_csv(meta_dir / "Additional_information.csv", encoding="latin-1", dtype=str)
    if rev1_names:  # revision-1 spellings (SCIENCE.md §5.2)
        gen = gen.rename(
            columns={
                "Latitude": "Latitude (°)",
                "Longitude": "Longitude (°)",
                "Altitude": "Altitude (m)",
                "Detector Typ": "Detector Typ ",
            }
        )
        add = add.rename(
            columns={
                "StationID": "Station ID",
                "Bulkdensity": "Bulk density*(g/cm3)",
                "Soil organic carbon(g/g)": "Soil organic carbon*(g/g)",
                "Lattice water(g/g)": "Lattice water*(g/g)",
                "CutoffRigidity": "Cutoff rigidity(GV)",
            }
        )
        gen.to_csv(root / "General_ information_rev1.csv", index=False, encoding="latin-1")
        add.to_csv(root / "Additional_information_rev1.csv", index=False, encoding="latin-1")
    else:
        gen.to_csv(root / "General_information.csv", index=False, encoding="latin-1")
        add.to_csv(root / "Additional_information.csv", index=False, encoding="latin-1")
    idx = _hourly(48)
    sm = np.full(48, 0.25)
    snow = np.zeros(48, int)
    snow[:10] = 1
    for sid in ("FSC001", "HGC001", "ZZZ999"):
        pd.DataFrame(
            {
                "DateTime_utc": idx.strftime("%Y-%m-%d %H:%M:%S"),
                "NeutronCount_Epithermal_Cum1h_corrected": 700.0,
                "SoilMoisture_volumetric_MovAvg24h": sm,
                "SoilMoisture_volumetric_MovAvg24h_std": 0.01,
                "AirHumidity_gapfilled": 7.5,
                "Flag_Snow_ERA5": snow,
                "Flag_AirHumidity_ERA5": 1,
                "Footprint_Radius_m": 170.0,
                "Footprint_Depth_m": 0.3,
            }
        ).to_csv(root / "processed_crns_data_and_diagnostics_rev1" / f"{sid}.csv", index=False)
    return root


@pytest.mark.data
@pytest.mark.parametrize("rev1_names", [True, False])
def test_read_cosmos_europe_rev1_and_plain_tables(data_dir: Path, tmp_path: Path, rev1_names: bool) -> None:
    meta_dir = data_dir / "crns" / "cosmos_europe_metadata"
    meta = S.read_cosmos_europe_metadata(meta_dir)
    assert len(meta) == 66  # 65 stations in General + HGC001 only in Additional
    fsc = meta.loc["FSC001"]
    assert (fsc["lat"], fsc["lon"], fsc["elevation"], fsc["bulk_density"], fsc["n0"], fsc["cutoff_rigidity"]) == (
        53.319,
        13.122,
        66.0,
        1.135,
        1085.0,
        2.51,
    )
    assert np.isnan(meta.loc["HGC001", "lat"])
    root = _rev1_folder(tmp_path, meta_dir, rev1_names)
    ss = S.read_cosmos_europe(root)
    assert list(ss) == ["FSC001"]
    ex = ss.exclusions.set_index("station")["reason"]
    assert "lat" in ex["HGC001"] and "not in the general/additional" in ex["ZZZ999"]
    st = ss["FSC001"]
    assert (st.lat, st.bulk_density, st.lattice_water, st.soc, st.n0) == (53.319, 1.135, 0.002, 0.031, 1085.0)
    assert st.extra["mean_sm"] == 0.134
    assert {"sm", "sm_std", "abs_humidity", "r86", "d86"} <= set(st.data.columns)
    # snow hours masked; the ERA5 humidity gap-fill flag is informational
    d = ss.daily()
    assert d["n_hours"].tolist() == [24.0]  # day 1 has 14 snow-free hours < 18
    assert ss.daily(min_hours=14)["n_hours"].tolist() == [14.0, 24.0]
    with pytest.raises(DataError, match="HGC001"):
        S.read_cosmos_europe(root, strict=True)


def test_read_cosmos_europe_missing_parts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a folder"):
        S.read_cosmos_europe(tmp_path / "nope")
    with pytest.raises(DataError, match="no General_information table"):
        S.read_cosmos_europe(tmp_path)


# --------------------------------------------------------------------------------------
# real CRNS data: Roaring Fork and Fürstensee
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def roaring_fork(data_dir: Path) -> S.StationSet:
    return S.read_roaring_fork(data_dir / "crns" / "roaring_fork_co_usgs")


@pytest.mark.data
def test_roaring_fork_all_stations_converted_and_agree_with_tdr(roaring_fork: S.StationSet) -> None:
    ss = roaring_fork
    assert len(ss) == 15 and ss.exclusions.empty
    d = ss.daily()
    d["tdr"] = d[["tdr_5", "tdr_10", "tdr_20", "tdr_50"]].mean(axis=1)
    rs, bs = {}, {}
    for sid, g in d.groupby("station"):
        g = g.dropna(subset=["tdr"])
        assert len(g) > 120, sid
        rs[sid], bs[sid] = pearson_r(g["sm"], g["tdr"]), bias(g["sm"], g["tdr"])
    # direction: every station's CRNS series follows its TDR profile mean
    assert min(rs.values()) > 0.6 and np.median(list(rs.values())) > 0.85
    # magnitude: same order; the authors found TDR reads below the gravimetric samples (GRAV_TDR_offset)
    assert abs(np.median(list(bs.values()))) < 0.05 and max(abs(b) for b in bs.values()) < 0.2
    # the daily values are physical and the snow/frozen flag is used in winter
    assert d["sm"].between(0, 0.7).all()
    fc = ss.flag_counts()
    assert (fc["SNOW"] > 500).all()


@pytest.mark.data
def test_roaring_fork_n0_consistent_with_authors(roaring_fork: S.StationSet) -> None:
    """Our N0 (COSMOS-Europe corrections) vs the authors' (portable scale, McJannet corrections).

    Both are fitted to the same gravimetric calibration; their ratio is a constant of the two
    correction conventions, so it must be nearly the same at every site.
    """
    ratio = np.array([s.n0 / (s.extra["n0_authors"] / s.extra["n_ratio_authors"]) for s in roaring_fork.values()])
    assert np.all((ratio > 0.8) & (ratio < 1.0))
    assert ratio.std() / ratio.mean() < 0.03


@pytest.mark.data
def test_fuerstensee_reproduces_cosmos_europe_site_values(data_dir: Path) -> None:
    ss = S.read_fuerstensee(data_dir / "crns" / "neptoon_examples")
    st = ss["FSC001"]
    d = ss.daily()
    assert len(d) > 1800
    # mean raw counts equal the COSMOS-Europe table (794 cph)
    assert st.data["counts_raw"].mean() == pytest.approx(794, abs=0.5)
    # N0 calibrated here from the 2014 campaigns vs the table's N0 moved to our corrections
    n0_moved = st.extra["n0_table"] * st.data["counts"].mean() / st.extra["mean_corrected_counts"]
    assert st.n0 == pytest.approx(n0_moved, rel=0.02)
    # soil moisture like the COSMOS-Europe product (table: mean 0.134, range 0.011–0.323)
    assert d["sm"].mean() == pytest.approx(0.134, abs=0.02)
    assert 0.0 <= d["sm"].min() < 0.03 and 0.3 < d["sm"].max() < 0.4
    # the incoming correction used the Jungfraujoch monitor (covers 2014–2020)
    assert st.data["f_incoming"].std() > 0.01


def test_format_registry_and_guessing(data_dir: Path, tmp_path: Path) -> None:
    from smengine.errors import ConfigError

    assert sorted(S.FORMATS) == ["cosmos-europe", "csv", "fuerstensee", "ismn", "roaring-fork"]
    assert S.FORMATS["ismn"] is S.read_ismn and S.FORMATS["csv"] is S.read_csv
    crns = data_dir / "crns"
    assert S.guess_format(crns / "roaring_fork_co_usgs") == "roaring-fork"
    assert S.guess_format(crns / "neptoon_examples" / "FSC001_time_series.csv") == "fuerstensee"
    assert S.guess_format(data_dir / "insitu" / "ismn_pytesmo_testdata") == "ismn"
    rev1 = tmp_path / "COSMOS_Europe_Data_rev1"
    rev1.mkdir()
    (rev1 / "General_ information_rev1.csv").write_text("x\n")
    assert S.guess_format(rev1) == "cosmos-europe"
    (tmp_path / "mine.csv").write_text("time,station,sm\n")
    assert S.guess_format(tmp_path / "mine.csv") == "csv"
    with pytest.raises(ConfigError, match=r"cannot tell the station format.*\['cosmos-europe', 'csv'"):
        S.guess_format(tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match="unknown station format 'cosmos'"):
        S.open_stations(rev1, format="cosmos")
    # the guessed reader is the named one: same stations, same data
    guessed = S.open_stations(data_dir / "insitu" / "ismn_pytesmo_testdata")
    named = S.read_ismn(data_dir / "insitu" / "ismn_pytesmo_testdata")
    assert list(guessed) == list(named) and len(guessed) > 0
    for sid in named:
        pd.testing.assert_frame_equal(guessed[sid].data, named[sid].data)
