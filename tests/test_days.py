"""One day-coercion helper (`smengine._days`), and every entry point agreeing with it."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from smengine import _days, config, filters, metrics, product, tiles
from smengine._days import as_day, as_days, day_numbers, day_range
from smengine.errors import ConfigError, ValidationError

D = np.datetime64("2020-07-01", "D")


@pytest.mark.parametrize(
    "value",
    [
        "2020-07-01",
        "2020-07-01T00:00",
        "2020-07-01T18:30",
        "2020-07-02T01:00+02:00",  # 23:00 UTC the day before
        np.datetime64("2020-07-01T12", "h"),
        np.datetime64("2020-07-01", "D"),
        datetime(2020, 7, 1, 6),
        date(2020, 7, 1),
        datetime(2020, 7, 1, 22, tzinfo=timezone(timedelta(hours=-1))) - timedelta(hours=2),  # 21:00 UTC
        pd.Timestamp("2020-07-01 09:00"),
        pd.Timestamp("2020-07-01 09:00", tz="Europe/Berlin"),
        int((D - _days.EPOCH).astype(int)),
        np.int64((D - _days.EPOCH).astype(int)),
    ],
    ids=repr,
)
def test_every_spelling_of_a_date_is_the_same_utc_day(value):
    assert as_day(value) == D
    np.testing.assert_array_equal(as_days([value]), [D])
    assert tiles.as_days is as_days


def test_arrays_and_pandas_objects():
    idx = pd.date_range("2020-07-01 12:00", periods=3, freq="D", tz="UTC")
    want = D + np.arange(3)
    for v in (
        idx,
        pd.Series(idx),
        idx.tz_convert("Asia/Tokyo"),
        idx.tz_localize(None).to_numpy(),
        list(idx.astype(str)),
    ):
        got = as_days(v)
        assert got.dtype == np.dtype("datetime64[D]")
        np.testing.assert_array_equal(got, want)
    assert as_days([]).shape == as_days(np.array([], "datetime64[D]")).shape == (0,)


@pytest.mark.parametrize(
    ("value", "kw", "match"),
    [
        (["2020-07-01", "nope"], {}, "cannot interpret"),
        (["2020-07-01", None], {}, "NaT"),
        (np.array(["2020-07-01", "NaT"], "datetime64[D]"), {}, "NaT"),
        (["2020-07-01T12:00"], {"exact": True}, "start of a UTC day"),
        (["2020-07-02", "2020-07-01"], {"increasing": True}, "2020-07-02 is followed by 2020-07-01"),
        (["2020-07-01", "2020-07-01"], {"increasing": True}, "strictly increasing"),
        (np.zeros((2, 2), dtype="datetime64[D]"), {}, "1-D"),
    ],
)
def test_bad_dates_are_named(value, kw, match):
    with pytest.raises(ValidationError, match=match) as e:
        as_days(value, what="my_times", **kw)
    assert "my_times" in str(e.value)


def test_exact_keeps_midnight_and_the_default_drops_the_time_of_day():
    t = ["2020-07-01T00:00", "2020-07-02T00:00+00:00"]
    np.testing.assert_array_equal(as_days(t, exact=True), D + np.arange(2))
    np.testing.assert_array_equal(as_days(["2020-07-01T23:59:59"]), [D])


def test_day_range_is_inclusive_and_refuses_a_backward_period():
    np.testing.assert_array_equal(day_range("2020-07-01", "2020-07-03T10:00"), D + np.arange(3))
    assert day_range(D, D).tolist() == [D.item()]
    with pytest.raises(ValidationError, match="end 2020-06-30 is before start 2020-07-01"):
        day_range("2020-07-01", "2020-06-30")


def test_day_numbers_keep_the_time_of_day():
    t = np.array(["1970-01-01T00:00", "1970-01-03T06:00"], dtype="datetime64[m]")
    assert day_numbers(t).tolist() == [0.0, 2.25]
    assert day_numbers(np.array([1, 2])).dtype == np.float64
    with pytest.raises(ValidationError, match="days .numbers. or datetime64"):
        day_numbers(np.array(["a", "b"]))


def test_the_modules_use_the_one_helper():
    """Product, tile store, configuration, filters and climatologies agree on the same inputs."""
    noon = ["2020-07-01T12:00", "2020-07-02T12:00"]
    np.testing.assert_array_equal(tiles.as_days(noon), D + np.arange(2))
    with pytest.raises(ValidationError, match="start of a UTC day"):
        product._as_days(noon)
    assert product._as_days(["2020-07-02T02:00+02:00"])[0] == pd.Timestamp("2020-07-02")
    assert config._day("2020-07-01T10:00", "start") == "2020-07-01"
    with pytest.raises(ConfigError, match=r"\[period\] end = 'x' is not a date"):
        config._day("x", "end")
    t = np.array(["2020-07-01T00", "2020-07-01T12", "2020-07-02T00"], dtype="datetime64[h]")
    v = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(metrics.moving_average(v, t, 1.0), metrics.moving_average(v, day_numbers(t), 1.0))
    a = filters.exp_filter(v, t, T=2.0)
    b = filters.exp_filter(v, day_numbers(t), T=2.0)
    np.testing.assert_array_equal(a, b)
    assert not hasattr(filters, "_days") and not hasattr(metrics, "_as_days")  # the copies are gone
