"""Fault catalogue, station units: station files as they come (counts corrected off the full hour,
counts per minute, kelvin, kg m-3, percent, impossible TDR values) are read into the right units
or refused, and every loss is counted in one warning naming station and column."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smengine import neutrons as nt
from smengine.errors import DataError, DataLossWarning, QualityWarning
from smengine.stations import QC, open_stations

N0, RHO = 2000.0, 1.4
N_DAYS = 10
START = pd.Timestamp("2021-06-01", tz="UTC")


def _theta(n: int) -> np.ndarray:
    """A smooth soil-moisture series, m3 m-3 (0.15 … 0.25)."""
    return 0.2 + 0.05 * np.sin(np.arange(n) / 40.0)


def _station(n: int = 24 * N_DAYS, **extra: object) -> dict[str, object]:
    """Columns of one hourly station: corrected counts and the other columns the issue names."""
    return {
        "counts_corrected": nt.theta_to_counts(_theta(n), N0, RHO, 0.0, 0.0),
        "air_temperature": np.full(n, 15.0),
        "precipitation": np.tile([0.0, 0.2], n // 2),
        "irrigation": np.tile([0.0, 0.0, 0.3], n // 3 + 1)[:n],
        "tdr_5": np.full(n, 0.25),
        "tdr_10": np.full(n, 0.27),
        **extra,
    }


def _write(
    tmp_path: Path, stations: dict[str, dict[str, object]], times: pd.DatetimeIndex | None = None, name: str = "net"
) -> tuple[Path, Path]:
    """A long station CSV (``time``, ``station``, columns) and its metadata table."""
    frames = []
    for sid, cols in stations.items():
        n = len(next(iter(cols.values())))  # type: ignore[arg-type]
        t = times if times is not None else pd.date_range(START, periods=n, freq="h")
        frames.append(pd.DataFrame({"time": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "station": sid, **cols}))
    f = tmp_path / f"{name}.csv"
    pd.concat(frames, ignore_index=True).to_csv(f, index=False)
    meta = tmp_path / f"{name}_meta.csv"
    pd.DataFrame(
        {
            "station": list(stations),
            "lat": 50.0,
            "lon": [6.0 + 0.1 * i for i in range(len(stations))],
            "n0": N0,
            "bulk_density": RHO,
            "lattice_water": 0.0,
            "soc": 0.0,
        }
    ).to_csv(meta, index=False)
    return f, meta


def _read(f: Path, meta: Path, **kw: object):
    return open_stations(f, "csv", metadata=meta, **kw)


def _days(ss, sid: str) -> pd.DataFrame:
    d = ss.daily()
    return d[d["station"] == sid].set_index("date")


# --------------------------------------------------------------------------------------
# (a) corrected counts off the full hour keep their other columns
# --------------------------------------------------------------------------------------
_OTHER = ("air_temperature", "precipitation", "irrigation", "tdr_5", "tdr_10")


def _stamps(kind: str, n: int) -> pd.DatetimeIndex:
    full = pd.date_range(START, periods=n, freq="h")
    if kind == "HH:30":
        return full + pd.Timedelta(minutes=30)
    if kind == "HH:59":
        return full - pd.Timedelta(minutes=1)
    return full - pd.to_timedelta(2 * np.arange(n), unit="s")  # a logger clock losing 2 s an hour: :59:58, :59:56 …


@pytest.mark.parametrize("kind", ["HH:30", "HH:59", "drifting"])
def test_corrected_counts_off_the_full_hour_keep_every_other_column(tmp_path: Path, kind: str) -> None:
    n = 24 * N_DAYS
    cols = _station(n)
    f, meta = _write(tmp_path, {"S1": cols}, _stamps(kind, n))
    ss = _read(f, meta)  # no QualityWarning "no temperature": the air temperature reached the station
    data = ss["S1"].data
    has_sm = data["sm"].notna()
    assert has_sm.sum() >= n - 2
    for c in _OTHER:  # on every hour with θ, not only on those that happened to fall on HH:00
        assert data.loc[has_sm, c].notna().all(), c
    # nothing summed is lost or double counted
    assert data["precipitation"].sum() == pytest.approx(np.sum(cols["precipitation"]))
    assert data["irrigation"].sum() == pytest.approx(np.sum(cols["irrigation"]))
    d = ss.daily()
    assert len(d) >= N_DAYS - 1
    assert d[list(_OTHER)].notna().all().all()
    np.testing.assert_allclose(d["air_temperature"], 15.0)
    np.testing.assert_allclose(d["tdr_5"], 0.25)
    # the raw-counts path on the same stamps keeps the same columns
    raw = dict(cols, counts_raw=cols["counts_corrected"], pressure=np.full(n, 1013.25))
    del raw["counts_corrected"]
    f2, meta2 = _write(tmp_path, {"S1": raw}, _stamps(kind, n), name="raw")
    d2 = _read(f2, meta2).daily()
    for c in _OTHER:
        assert d2[c].notna().all() and d[c].notna().sum() == d2[c].notna().sum(), c


# --------------------------------------------------------------------------------------
# (b) counts per minute / per 15 minutes; nonpositive and absurd counts
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("column", ["counts_corrected", "counts_raw"])
@pytest.mark.parametrize(("seconds", "name"), [(60, "1 min"), (900, "15 min")])
def test_counts_per_minute_or_per_15_minutes_are_refused_naming_the_interval(
    tmp_path: Path, column: str, seconds: int, name: str
) -> None:
    good = _station()
    bad = _station()
    per_step = np.asarray(bad.pop("counts_corrected")) * seconds / 3600.0
    bad[column] = per_step
    if column == "counts_raw":
        bad["pressure"] = np.full(len(per_step), 1013.25)
    f, meta = _write(tmp_path, {"S1": bad, "S2": good})
    with pytest.raises(DataError, match=rf"station S1: {column} median .* x N0 .*not a rate per hour.*per {name}"):
        _read(f, meta)
    # the interval given: scaled to counts per hour, the same θ as counts per hour
    ss = _read(f, meta, count_seconds={"S1": float(seconds)})
    np.testing.assert_allclose(
        _days(ss, "S1")["sm"].to_numpy(),
        _days(ss, "S2")["sm"].to_numpy(),
        rtol=0,
        atol=0.01 if column == "counts_raw" else 1e-9,
    )
    assert any(f"counted over {seconds} s" in line for line in ss["S1"].processing)


def test_counts_per_minute_fail_the_stations_command_instead_of_zero_station_days(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from smengine.cli import cli

    cols = _station()
    cols["counts_corrected"] = np.asarray(cols["counts_corrected"]) / 60.0
    f, meta = _write(tmp_path, {"S1": cols})
    res = CliRunner().invoke(cli, ["stations", str(f), "--format", "csv", "--metadata", str(meta)])
    assert res.exit_code == 1, res.output
    assert "station S1: counts_corrected" in res.output and "per 1 min" in res.output
    assert "0 station-days" not in res.output


def test_zero_negative_and_absurd_counts_are_dropped_and_counted(tmp_path: Path) -> None:
    cols = _station()
    c = np.asarray(cols["counts_corrected"]).copy()
    c[[5, 50, 100]] = 0.0
    c[[7, 70]] = -3.0
    c[[9, 90]] = 1e9
    cols["counts_corrected"] = c
    f, meta = _write(tmp_path, {"S1": cols, "S2": _station()})
    with pytest.warns(DataLossWarning, match=r"physical range read as NaN .*: S1 counts_corrected 7 of 240 \(outside"):
        ss = _read(f, meta)
    assert len(_days(ss, "S1")) == N_DAYS  # seven bad hours: no day vanishes
    with warnings.catch_warnings():  # the strict path (CLI --strict): the loss is an error
        warnings.simplefilter("error", DataLossWarning)
        with pytest.raises(DataLossWarning, match="S1 counts_corrected 7"):
            _read(f, meta)


def test_a_negative_sub_hourly_count_does_not_bias_its_hour(tmp_path: Path) -> None:
    """Ten-minute raw count rates (cph): a -50 and a 1e9 in one hour each are dropped, not averaged in."""
    n = 6 * 24 * 3
    t = pd.date_range(START, periods=n, freq="10min")
    cph = np.full(n, 1500.0)
    cph[6 * 30 + 2] = -50.0
    cph[6 * 40 + 3] = 1e9
    cols = {"counts_raw": cph, "pressure": np.full(n, 1013.25), "air_temperature": np.full(n, 15.0)}
    f, meta = _write(tmp_path, {"S1": cols}, t)
    with pytest.warns(DataLossWarning, match=r"S1 counts_raw 2 of 432 \(outside \(0, 1e\+06\] cph\)"):
        ss = _read(f, meta)
    raw = ss["S1"].data["counts_raw"]
    np.testing.assert_allclose(raw.dropna().to_numpy(), 1500.0)
    assert raw.notna().sum() == 72


# --------------------------------------------------------------------------------------
# (b) temperatures in kelvin
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("column", ["soil_temperature", "soil_temperature_5", "air_temperature"])
def test_temperature_in_kelvin_is_converted_not_frozen_or_dropped(tmp_path: Path, column: str) -> None:
    n = 24 * N_DAYS
    celsius = np.r_[np.full(48, -3.0), np.full(n - 48, 9.0)]  # two frozen days of ten
    cels = _station(n, **{column: celsius})
    kelv = _station(n, **{column: celsius + 273.15})
    f, meta = _write(tmp_path, {"S1": kelv, "S2": cels})
    with pytest.warns(QualityWarning, match=rf"S1 {column} K → degC \(median 282\.1\)") as rec:
        ss = _read(f, meta)
    assert not any("S2" in str(w.message) for w in rec if issubclass(w.category, QualityWarning))
    np.testing.assert_allclose(ss["S1"].data[column].dropna(), ss["S2"].data[column].dropna())
    snow = [ss[s].data["flag"].to_numpy() & int(QC.SNOW) for s in ("S1", "S2")]
    np.testing.assert_array_equal(snow[0], snow[1])
    assert (snow[0] != 0).sum() == 48
    d1, d2 = _days(ss, "S1"), _days(ss, "S2")
    assert len(d1) == len(d2) == N_DAYS - 2  # the two frozen days, not 19 %, not all
    assert any(f"{column} K → degC" in line for line in ss["S1"].processing)


def test_a_few_outliers_do_not_flip_a_unit(tmp_path: Path) -> None:
    n = 24 * N_DAYS
    t = np.full(n, 12.0)
    t[::10] = 290.0  # 10 % junk in K-like values: dropped, the column stays °C
    sm = np.full(n, 0.2)
    sm[::12] = 35.0  # a few percent-like values: dropped, not a percent column
    cols = _station(n, soil_temperature=t)
    f, meta = _write(tmp_path, {"S1": cols})
    with pytest.warns(DataLossWarning, match=r"S1 soil_temperature 24 of 240 \(outside \[-60, 60\] degC"):
        ss = _read(f, meta)
    assert ss["S1"].data["soil_temperature"].dropna().eq(12.0).all()
    f2, meta2 = _write(tmp_path, {"S1": {"sm": sm, "air_temperature": np.full(n, 15.0)}}, name="sm")
    with pytest.warns(DataLossWarning, match=r"S1 sm 20 of 240 \(outside \[0, 1\] m3 m-3"):
        ss2 = _read(f2, meta2)
    assert ss2["S1"].data["sm"].dropna().eq(0.2).all()


def test_a_median_that_fits_no_known_unit_is_refused(tmp_path: Path) -> None:
    f, meta = _write(tmp_path, {"S1": _station(soil_temperature=np.full(24 * N_DAYS, 100.0))})
    with pytest.raises(DataError, match=r"station S1: column 'soil_temperature' has median 100, implausible in degC"):
        _read(f, meta)


# --------------------------------------------------------------------------------------
# (b) absolute humidity in kg m-3
# --------------------------------------------------------------------------------------
def test_absolute_humidity_in_kg_per_m3_is_converted(tmp_path: Path) -> None:
    n = 24 * N_DAYS
    h = 8.0 + 2.0 * np.sin(np.arange(n) / 12.0)  # g m-3
    base = _station(n)
    counts = np.asarray(base.pop("counts_corrected")) / nt.humidity_correction(h)  # raw: the humidity seen
    grams = dict(base, counts_raw=counts, pressure=np.full(n, 1013.25), abs_humidity=h)
    kilos = dict(grams, abs_humidity=h / 1000.0)
    f, meta = _write(tmp_path, {"S1": kilos, "S2": grams})
    with pytest.warns(QualityWarning, match=r"S1 abs_humidity kg m-3 → g m-3 \(median 0\.00"):
        ss = _read(f, meta)
    np.testing.assert_allclose(ss["S1"].data["abs_humidity"].dropna(), ss["S2"].data["abs_humidity"].dropna())
    d1, d2 = _days(ss, "S1"), _days(ss, "S2")
    np.testing.assert_allclose(d1["sm"].to_numpy(), d2["sm"].to_numpy(), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------
# (b) soil moisture and TDR in percent; impossible TDR values
# --------------------------------------------------------------------------------------
def test_soil_moisture_in_percent_is_converted_whole(tmp_path: Path) -> None:
    n = 24 * N_DAYS
    frac = np.r_[np.full(n // 2, 0.006), np.full(n - n // 2, 0.30)]  # a very dry spell below 1 %, then wet
    f, meta = _write(
        tmp_path,
        {
            "S1": {"sm": frac * 100.0, "air_temperature": np.full(n, 15.0)},
            "S2": {"sm": frac, "air_temperature": np.full(n, 15.0)},
        },
    )
    with pytest.warns(QualityWarning, match=r"S1 sm % → m3 m-3") as rec:
        ss = _read(f, meta)
    assert not any("S2 sm" in str(w.message) for w in rec)
    d1, d2 = _days(ss, "S1"), _days(ss, "S2")
    assert len(d1) == len(d2) == N_DAYS  # neither the dry half kept as 0.6 m3 m-3 nor the wet half dropped
    np.testing.assert_allclose(d1["sm"].to_numpy(), d2["sm"].to_numpy())


def test_impossible_tdr_values_are_dropped_and_counted_and_percent_tdr_converted(tmp_path: Path) -> None:
    n = 24 * N_DAYS
    tdr5 = np.full(n, 0.25)
    tdr5[::20] = 7.0  # impossible
    tdr5[1::40] = -0.4
    cols = _station(n, tdr_5=tdr5, tdr_10=np.full(n, 27.0))  # tdr_10 in percent
    f, meta = _write(tmp_path, {"S1": cols})
    with (
        pytest.warns(DataLossWarning, match=r"S1 tdr_5 18 of 240 \(outside \[0, 1\] m3 m-3\)"),
        pytest.warns(QualityWarning, match=r"S1 tdr_10 % → m3 m-3 \(median 27\)"),
    ):
        ss = _read(f, meta)
    data = ss["S1"].data
    assert data["tdr_5"].dropna().eq(0.25).all() and np.allclose(data["tdr_10"], 0.27)
    assert not (data["flag"].to_numpy() & int(QC.OUT_OF_RANGE)).any()  # a bad TDR value does not mask the CRNS
    d = _days(ss, "S1")
    assert len(d) == N_DAYS and d["tdr_5"].between(0, 1).all() and np.allclose(d["tdr_10"], 0.27)
