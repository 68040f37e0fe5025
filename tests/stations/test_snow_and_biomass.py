"""Snow/frozen-soil masking from temperature and the biomass (BWE) correction of station counts."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smengine import neutrons as nt
from smengine.errors import DataLossWarning, QualityWarning
from smengine.stations import QC, mask_frozen, read_csv, read_fuerstensee

SNOW = int(QC.SNOW)
META = {"lat": 41.2, "lon": -96.4, "n0": 2500.0, "bulk_density": 1.35, "lattice_water": 0.02, "soc": 0.01}


def _hours(days: int) -> pd.DatetimeIndex:
    return pd.date_range("2021-01-01", periods=24 * days, freq="h", tz="UTC")


def _snow(df: pd.DataFrame) -> np.ndarray:
    return (df["flag"].to_numpy() & SNOW) != 0


# --------------------------------------------------------------------------------------
# mask_frozen
# --------------------------------------------------------------------------------------
def test_air_temperature_masks_whole_days_with_a_mean_below_zero() -> None:
    idx = _hours(3)
    # day 1: mean −2 °C (with a +5 °C noon: still masked as a day); day 2: mean +1 °C with frosty hours; day 3: warm
    t = np.r_[np.full(24, -2.0), np.full(24, 1.0), np.full(24, 8.0)]
    t[12] = 5.0
    t[:12] -= 7.0 / 12  # keep day 1's mean at −2 with the +5 at noon
    t[24:30] = -3.0
    t[30:48] = (24 * 1.0 + 18.0) / 18
    df = pd.DataFrame({"sm": 0.2, "flag": 0, "air_temperature": t}, index=idx)
    assert df["air_temperature"].iloc[:24].mean() == pytest.approx(-2.0)
    assert df["air_temperature"].iloc[24:48].mean() == pytest.approx(1.0)
    out, how = mask_frozen(df)
    np.testing.assert_array_equal(_snow(out), np.r_[np.ones(24, bool), np.zeros(48, bool)])
    assert "air temperature < 0 °C" in how
    assert not _snow(df).any()  # the input is not modified


def test_soil_temperature_wins_over_air_and_the_shallowest_depth_is_used() -> None:
    idx = _hours(2)
    df = pd.DataFrame(
        {
            "sm": 0.2,
            "flag": 0,
            "air_temperature": -10.0,  # would mask everything
            "soil_temperature_20": 0.0,  # would mask everything too
            "soil_temperature_5": np.r_[np.full(10, 0.5), np.full(38, 3.0)],
        },
        index=idx,
    )
    out, how = mask_frozen(df)
    assert how == "QC.SNOW where soil_temperature_5 < 1 °C"
    assert _snow(out).sum() == 10 and _snow(out)[:10].all()
    # a soil-temperature column without a value does not count
    df["soil_temperature_5"] = np.nan
    out, how = mask_frozen(df)
    assert how == "QC.SNOW where soil_temperature_20 < 1 °C" and _snow(out).all()


def test_nothing_to_mask_from_returns_none() -> None:
    df = pd.DataFrame({"sm": 0.2, "flag": 0, "air_temperature": np.nan}, index=_hours(1))
    out, how = mask_frozen(df)
    assert how is None and not _snow(out).any()


# --------------------------------------------------------------------------------------
# through the generic reader
# --------------------------------------------------------------------------------------
def _station_frame(days: int, **cols: np.ndarray | float) -> pd.DataFrame:
    idx = _hours(days)
    return pd.DataFrame({"time": idx.strftime("%Y-%m-%dT%H:%M:%SZ"), **cols})


def test_generic_reader_masks_cold_days_and_daily_leaves_them_out() -> None:
    t = np.repeat([-4.0, -1.0, 2.0, 6.0, -0.5, 3.0], 24)
    df = _station_frame(6, sm=np.full(t.size, 0.25), air_temperature=t)
    ss = read_csv(df, metadata=META, station="S")
    st = ss["S"]
    assert _snow(st.data).sum() == 3 * 24
    assert any("mean air temperature < 0" in p for p in st.processing)
    d = ss.daily()
    assert [f"{x:%Y-%m-%d}" for x in pd.to_datetime(d["date"])] == ["2021-01-03", "2021-01-04", "2021-01-06"]


def test_a_file_with_its_own_snow_flags_is_left_as_flagged() -> None:
    flag = np.zeros(48, dtype=np.int64)
    flag[:5] = SNOW
    df = _station_frame(2, sm=np.full(48, 0.25), flag=flag)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not masked" warning: the file flags snow itself
        st = read_csv(df, metadata=META, station="S")["S"]
    assert _snow(st.data).sum() == 5
    assert "the file's own QC.SNOW flags" in st.processing[-1]


def test_no_temperature_warns_naming_the_station_unless_told_the_site_never_freezes() -> None:
    df = _station_frame(2, sm=np.full(48, 0.25))
    with pytest.warns(QualityWarning, match=r"\['S'\] have no soil_temperature or air_temperature"):
        read_csv(df, metadata=META, station="S")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        st = read_csv(df, metadata=META, station="S", snow_mask=False)["S"]
    assert "snow_mask=False" in st.processing[-1]


# --------------------------------------------------------------------------------------
# biomass water equivalent
# --------------------------------------------------------------------------------------
def _crop_season(days: int = 120) -> tuple[pd.DatetimeIndex, np.ndarray, pd.Series]:
    """Hourly counts of a constant θ = 0.25 under a growing canopy (BWE 0 → 6 kg m⁻²), and
    the BWE campaigns (every 10 days) a scientist has."""
    idx = _hours(days)
    k = days // 10 + 1
    campaigns = pd.Series(np.linspace(0.0, 6.0, k), index=idx[np.linspace(0, idx.size - 1, k).round().astype(int)])
    bwe_true = np.interp(idx.asi8.astype(float), campaigns.index.asi8.astype(float), campaigns.to_numpy())
    n_soil = nt.theta_to_counts(0.25, META["n0"], META["bulk_density"], META["lattice_water"], META["soc"])
    counts = n_soil / nt.correction_bwe(bwe_true)  # vegetation moderates neutrons: fewer counts
    return idx, counts, campaigns


def test_bwe_column_removes_the_canopy_signal_from_theta() -> None:
    idx, counts, campaigns = _crop_season()
    bwe = pd.Series(np.nan, index=idx)
    bwe[campaigns.index] = campaigns.to_numpy()  # sparse: NaN between campaigns
    df = pd.DataFrame(
        {
            "time": idx.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "counts_corrected": counts,
            "air_temperature": 20.0,
            "bwe": bwe.to_numpy(),
        }
    )
    st = read_csv(df, metadata=META, station="F")["F"]
    np.testing.assert_allclose(st.data["sm"].to_numpy(), 0.25, rtol=0, atol=1e-9)
    assert any("biomass correction" in p for p in st.processing)
    f_expected = nt.correction_bwe(np.interp(idx.asi8.astype(float), campaigns.index.asi8.astype(float), campaigns))
    np.testing.assert_allclose(st.data["f_bwe"].to_numpy(), f_expected, rtol=1e-12)
    # without it the canopy reads as a wetting soil: θ rises by several hundredths over the season
    naive = read_csv(df.drop(columns="bwe"), metadata=META, station="F")["F"].data["sm"]
    assert naive.iloc[-1] - naive.iloc[0] > 0.03


def test_bwe_on_raw_counts_equals_counts_times_the_crnpy_factor() -> None:
    idx, counts, campaigns = _crop_season(30)
    bwe = np.interp(idx.asi8.astype(float), campaigns.index.asi8.astype(float), campaigns.to_numpy())
    df = pd.DataFrame(
        {"time": idx.strftime("%Y-%m-%dT%H:%M:%SZ"), "counts_raw": counts, "air_temperature": 20.0, "bwe": bwe}
    )
    st = read_csv(df, metadata=META, station="F")["F"]
    # no pressure/humidity/incoming: the raw path smooths 24 h, so compare where the window is full
    inner = slice(24, -24)
    np.testing.assert_allclose(st.data["sm"].to_numpy()[inner], 0.25, rtol=0, atol=2e-4)
    np.testing.assert_allclose(st.data["f_bwe"].to_numpy(), nt.correction_bwe(bwe), rtol=1e-12)


def test_hours_outside_the_bwe_series_are_not_converted_and_counted() -> None:
    idx, counts, campaigns = _crop_season(40)
    bwe = pd.Series(np.nan, index=idx)
    late = campaigns.index[1:]  # the first campaign is missing: the first 10 days are uncovered
    bwe[late] = campaigns[late].to_numpy()
    df = pd.DataFrame(
        {
            "time": idx.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "counts_corrected": counts,
            "air_temperature": 20.0,
            "bwe": bwe.to_numpy(),
        }
    )
    with pytest.warns(DataLossWarning, match=r"\d+ of 960 counted hours lie outside the biomass \(BWE\) series"):
        st = read_csv(df, metadata=META, station="F")["F"]
    before = st.data.index < late[0]
    assert st.data.loc[before, "sm"].isna().all()
    assert ((st.data.loc[before, "flag"].to_numpy() & int(QC.NO_CORRECTION)) != 0).all()
    np.testing.assert_allclose(st.data.loc[~before, "sm"], 0.25, atol=1e-9)


def test_negative_bwe_is_out_of_range_not_a_crash() -> None:
    idx, counts, _ = _crop_season(20)
    bwe = np.full(idx.size, 2.0)
    bwe[5] = -3.0
    df = pd.DataFrame(
        {"time": idx.strftime("%Y-%m-%dT%H:%M:%SZ"), "counts_corrected": counts, "air_temperature": 20.0, "bwe": bwe}
    )
    with pytest.warns(DataLossWarning, match=r"physical range read as NaN .*: F bwe 1 of \d+ \(outside \[0, 100\]"):
        st = read_csv(df, metadata=META, station="F")["F"]
    assert st.data["flag"].iloc[5] & int(QC.OUT_OF_RANGE)
    assert np.isfinite(st.data["sm"]).all()  # the gap is interpolated over


# --------------------------------------------------------------------------------------
# the real Fürstensee record (air temperature only)
# --------------------------------------------------------------------------------------
@pytest.mark.data
def test_fuerstensee_cold_days_are_masked_from_air_temperature(data_dir: Path) -> None:
    st = read_fuerstensee(data_dir / "crns" / "neptoon_examples")["FSC001"]
    t = st.data["air_temperature"]
    cold_days = t.groupby(t.index.floor("D")).mean().lt(0.0)
    assert cold_days.sum() > 5  # northern Germany has frost days
    snow = pd.Series(_snow(st.data), index=st.data.index)
    np.testing.assert_array_equal(snow.groupby(snow.index.floor("D")).all().to_numpy(), cold_days.to_numpy())
    assert any("mean air temperature < 0" in p for p in st.processing)
    unmasked = read_fuerstensee(data_dir / "crns" / "neptoon_examples", snow_mask=False)["FSC001"]
    assert not _snow(unmasked.data).any()
