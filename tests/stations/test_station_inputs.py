"""Stations as CRNS scientists have them: corrected counts (no factor applied twice), a
DataFrame instead of a file, a station filter, missing-value markers, θ range-checked after
the conversion."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smengine.errors import ConfigError, DataLossWarning
from smengine.stations import QC, read_csv, read_roaring_fork


@pytest.fixture(scope="module")
def roaring_fork(data_dir: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the network's own exclusions are tested elsewhere
        return read_roaring_fork(data_dir / "crns" / "roaring_fork_co_usgs")


def test_roaring_fork_corrected_counts_read_back_give_the_same_theta(roaring_fork) -> None:
    """Raw counts → corrected counts through the package → read back as `counts_corrected`:
    the same θ to 1e-9 (no correction factor applied a second time)."""
    rows, meta = [], []
    for sid in ("C1", "F2", "R1"):
        st = roaring_fork[sid]
        d = st.data
        rows.append(
            pd.DataFrame(
                {
                    "time": d.index,
                    "station": sid,
                    "counts_corrected": d["counts"].to_numpy(),
                    "soil_temperature_5": d["soil_temperature_5"].to_numpy(),
                }
            )
        )
        meta.append(
            {
                "station": sid,
                "lat": st.lat,
                "lon": st.lon,
                "n0": st.n0,
                "bulk_density": st.bulk_density,
                "lattice_water": st.lattice_water,
                "soc": st.soc,
                "porosity": st.porosity,
            }
        )
    back = read_csv(pd.concat(rows, ignore_index=True), metadata=pd.DataFrame(meta), sentinels=())
    for sid in ("C1", "F2", "R1"):
        a, b = roaring_fork[sid].data["sm"], back[sid].data["sm"].reindex(roaring_fork[sid].data.index)
        ok = a.notna()
        assert ok.sum() > 1000 and b[ok].notna().all()
        np.testing.assert_allclose(b[ok].to_numpy(), a[ok].to_numpy(), rtol=0, atol=1e-9)
        # the same frozen-soil mask from the same soil temperature (the reader's rule, applied by the generic one)
        snow = int(QC.SNOW)
        fa = roaring_fork[sid].data["flag"].to_numpy() & snow
        fb = back[sid].data["flag"].reindex(roaring_fork[sid].data.index).fillna(0).to_numpy().astype(np.int64) & snow
        assert fa.any()
        np.testing.assert_array_equal(fb, fa)
    assert any("N0 only" in line for line in back["C1"].processing)
    assert any("soil_temperature_5 < 1" in line for line in back["C1"].processing)


def _frame(n: int = 72) -> pd.DataFrame:
    t = pd.date_range("2021-06-01", periods=n, freq="h", tz="UTC")
    return pd.DataFrame(
        {
            "time": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "station": np.where(np.arange(n) < n // 2, "S1", "S2"),
            "counts_corrected": np.full(n, 1500.0),
            "pressure": np.full(n, 950.0),
            "precipitation": np.zeros(n),
            "air_temperature": np.full(n, 18.0),
        }
    )


META = pd.DataFrame(
    {
        "station": ["S1", "S2"],
        "lat": [40.0, 40.1],
        "lon": [-100.0, -100.1],
        "n0": 2000.0,
        "bulk_density": 1.4,
        "lattice_water": 0.0,
        "soc": 0.0,
    }
)


def test_missing_value_markers_become_nan_and_are_counted() -> None:
    df = _frame()
    df.loc[[3, 4, 5], "pressure"] = -9999
    df.loc[[7], "precipitation"] = -999
    with pytest.warns(
        DataLossWarning, match=r"4 missing-value marker\(s\) .* read as NaN: pressure 3, precipitation 1"
    ):
        ss = read_csv(df, metadata=META)
    assert ss["S1"].data["pressure"].isna().sum() == 3
    assert np.nanmin(ss["S1"].data["precipitation"]) == 0.0
    with pytest.warns(DataLossWarning, match=r"physical range read as NaN .*: S1 pressure 3 of 36 \(outside"):
        quiet = read_csv(df, metadata=META, sentinels=())  # turned off: -9999 hPa is then out of range and flagged
    assert quiet["S1"].data["pressure"].isna().sum() == 3


def test_theta_above_one_from_counts_is_flagged_out_of_range_and_left_out_of_daily() -> None:
    df = _frame()
    df.loc[df["station"] == "S1", "counts_corrected"] = 800.0  # N/N0 = 0.4: theta ~ 3.9
    ss = read_csv(df, metadata=META)
    d = ss["S1"].data
    assert (d["sm"] > 1.0).all() and (d["flag"] & int(QC.OUT_OF_RANGE)).all()
    with pytest.warns(DataLossWarning, match=r"S1 2 of 2 \(OUT_OF_RANGE 2\)"):  # whole days flagged: not silent
        daily = ss.daily(min_hours=1)
    assert "S1" not in set(daily["station"]) and "S2" in set(daily["station"])
    assert daily.attrs["dropped_days"] == {"S1": 2, "S2": 0}
    assert daily.attrs["drop_reasons"] == {"S1": {"OUT_OF_RANGE": 2}, "S2": {}}
    ok = ss["S2"].data
    assert (ok["flag"] & int(QC.OUT_OF_RANGE) == 0).all() and ok["sm"].between(0, 1).all()


def test_a_station_filter_reads_only_those_stations() -> None:
    ss = read_csv(_frame(), metadata=META, stations=["S2"])
    assert list(ss) == ["S2"]
    with pytest.raises(ConfigError, match=r"station\(s\) \['S9'\] not in the file"):
        read_csv(_frame(), metadata=META, stations="S9")


def test_naive_local_times_across_daylight_saving_changes_map_to_utc() -> None:
    """A logger on local clock time (CST/CDT): the fall-back hour appears twice, in order; two
    stations stacked in one file are placed each on its own."""
    utc = pd.date_range("2021-11-06 00:00", "2021-11-09 00:00", freq="h", tz="UTC")
    local = utc.tz_convert("America/Chicago").tz_localize(None)
    assert local.has_duplicates  # 01:00 local twice on 7 Nov
    df = pd.concat(
        [
            pd.DataFrame({"time": local.strftime("%Y-%m-%d %H:%M"), "station": s, "sm": 0.2, "air_temperature": 10.0})
            for s in ("S1", "S2")
        ],
        ignore_index=True,
    )
    ss = read_csv(df, metadata=META, timezone="America/Chicago")
    for s in ("S1", "S2"):
        assert ss[s].data.index.equals(utc)
    # a logger on standard time all year has 02:00 on the spring-forward night: not a CDT time
    std = pd.date_range("2021-03-14 00:00", periods=6, freq="h").strftime("%Y-%m-%d %H:%M")
    one = pd.DataFrame({"time": std, "sm": 0.2, "air_temperature": 10.0})
    with pytest.raises(ConfigError, match=r"cannot place the local times in 'America/Chicago'.*'Etc/GMT\+6'"):
        read_csv(one, metadata=META.iloc[0].to_dict(), station="S1", timezone="America/Chicago")
    fixed = read_csv(one, metadata=META.iloc[0].to_dict(), station="S1", timezone="Etc/GMT+6")
    assert str(fixed["S1"].data.index[0]) == "2021-03-14 06:00:00+00:00"
    with pytest.raises(ConfigError, match="unknown time zone 'Mars/Olympus'"):
        read_csv(one, metadata=META.iloc[0].to_dict(), station="S1", timezone="Mars/Olympus")
