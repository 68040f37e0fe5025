"""UTC days: the one place dates are coerced, checked and counted.

Every module that takes dates from a caller goes through :func:`as_days` (an array of
``datetime64[D]``), :func:`as_day` (one day), :func:`day_range` (an inclusive range) or
:func:`day_numbers` (days since 1970-01-01 as float64, for the filters and climatologies that
work in day units). The public spelling is :func:`smengine.tiles.as_days`.

Accepted inputs, everywhere: ISO strings (``"2020-07-01"``, ``"2020-07-01T12:00"``, with or
without a UTC offset), ``numpy.datetime64`` of any unit, ``datetime``/``date``, pandas
timestamps and indexes (time-zone aware ones are converted to UTC first), and integers (days
since 1970-01-01).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from smengine.errors import ValidationError

__all__ = ["EPOCH", "as_day", "as_days", "day_numbers", "day_range"]

#: Day 0 of the integer day counts.
EPOCH = np.datetime64("1970-01-01", "D")


def _parse_with_pandas(t: np.ndarray, what: str) -> np.ndarray:
    """Strings, objects and time-zone aware values → ``datetime64[ns]`` in UTC."""
    import pandas as pd

    values = t.ravel()
    try:
        try:
            idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
        except ValueError:  # ISO strings of mixed precision ("2020-07-01", "2020-07-01 12:00")
            idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True, format="ISO8601"))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"{what}: cannot interpret {values[:3].tolist()!r} as dates ({exc})") from exc
    return idx.tz_localize(None).as_unit("ns").to_numpy().reshape(t.shape)


def as_days(
    times: Any,
    *,
    what: str = "times",
    exact: bool = False,
    increasing: bool = False,
) -> np.ndarray:
    """Coerce dates to a 1-D array of UTC days (``datetime64[D]``).

    Parameters
    ----------
    times
        One date or a sequence of them: ISO strings, ``datetime64``, ``datetime``, pandas
        timestamps (tz-aware ones converted to UTC), or integers (days since 1970-01-01).
    what
        Name of the argument, for error messages.
    exact
        Require each time to be the start of a UTC day (00:00); otherwise times of day are
        dropped (``2020-07-01T18:00`` is the day 2020-07-01).
    increasing
        Require strictly increasing days (one entry per day).

    Returns
    -------
    numpy.ndarray
        ``datetime64[D]``, 1-D.

    Raises
    ------
    ValidationError
        Unparseable or missing (NaT) dates, a time of day when ``exact``, or an order that is not
        strictly increasing when ``increasing``; the message names ``what`` and the offending value.

    Examples
    --------
    >>> as_days(["2020-07-01", "2020-07-02T18:00"]).tolist()
    [datetime.date(2020, 7, 1), datetime.date(2020, 7, 2)]
    >>> as_days("2020-07-01T23:00-02:00")  # a UTC offset moves the day
    array(['2020-07-02'], dtype='datetime64[D]')
    >>> as_days([0, 1])
    array(['1970-01-01', '1970-01-02'], dtype='datetime64[D]')
    """
    if isinstance(times, (str, bytes, date, np.datetime64)) or np.ndim(times) == 0:
        times = [times]
    if hasattr(times, "dt") or getattr(times, "tz", None) is not None:  # pandas Series / tz-aware index
        t = _parse_with_pandas(np.asarray(times, dtype=object), what)
    else:
        t = np.asarray(times)
        if t.dtype.kind in "iu":
            return _checked(EPOCH + t.astype("timedelta64[D]"), None, what, exact, increasing)
        if t.dtype.kind != "M":
            t = _parse_with_pandas(t, what)
    if t.ndim != 1:
        raise ValidationError(f"{what} should be 1-D, got shape {t.shape}")
    return _checked(t.astype("datetime64[D]"), t, what, exact, increasing)


def _checked(days: np.ndarray, full: np.ndarray | None, what: str, exact: bool, increasing: bool) -> np.ndarray:
    if days.ndim != 1:
        raise ValidationError(f"{what} should be 1-D, got shape {days.shape}")
    nat = np.isnat(days)
    if nat.any():
        raise ValidationError(f"{what} contains NaT (missing dates): {int(nat.sum())} of {days.size}")
    if exact and full is not None:
        off = full != days.astype(full.dtype)
        if off.any():
            first = np.datetime_as_string(full[off][0], unit="s").replace("T", " ")
            raise ValidationError(
                f"{what} should be daily, each the start of a UTC day (00:00); got {first} "
                f"({int(off.sum())} of {days.size} not at 00:00 UTC)"
            )
    if increasing and days.size > 1:
        d = np.diff(days.astype(np.int64))
        if (d <= 0).any():
            i = int(np.argmax(d <= 0))
            raise ValidationError(
                f"{what} should be strictly increasing (one entry per UTC day); {days[i]} is followed by {days[i + 1]}"
            )
    return days


def as_day(value: Any, *, what: str = "day") -> np.datetime64:
    """One date as a UTC day (``datetime64[D]``); see :func:`as_days` for what is accepted.

    Examples
    --------
    >>> as_day("2021-03-04T10:00")
    np.datetime64('2021-03-04')
    """
    if isinstance(value, (datetime, date, str, bytes, np.datetime64, int, np.integer)) or np.ndim(value) == 0:
        d = as_days([value], what=what)
        return d[0]
    raise ValidationError(f"{what} should be one date, got {type(value).__name__}")


def day_range(start: Any, end: Any, *, what: str = "period") -> np.ndarray:
    """Every UTC day from ``start`` to ``end``, both included (``datetime64[D]``).

    Raises
    ------
    ValidationError
        ``end`` before ``start``.

    Examples
    --------
    >>> day_range("2020-02-28", "2020-03-01").tolist()
    [datetime.date(2020, 2, 28), datetime.date(2020, 2, 29), datetime.date(2020, 3, 1)]
    """
    lo, hi = as_day(start, what=f"{what} start"), as_day(end, what=f"{what} end")
    if hi < lo:
        raise ValidationError(f"{what}: end {hi} is before start {lo}")
    return np.arange(lo, hi + np.timedelta64(1, "D"), dtype="datetime64[D]")


def day_numbers(times: npt.ArrayLike, *, what: str = "times") -> np.ndarray:
    """Times as float64 days since 1970-01-01 (to the second); numbers pass through as days.

    This is the time axis of the filters and climatologies, which work in day units and keep
    the time of day (an observation at 18:00 is 0.75 days after midnight).

    Examples
    --------
    >>> day_numbers(np.array(["1970-01-02T18:00"], dtype="datetime64[s]")).tolist()
    [1.75]
    >>> day_numbers([3, 4.5]).tolist()
    [3.0, 4.5]
    """
    t = np.asarray(times)
    if t.dtype.kind == "M":
        return (t.astype("datetime64[s]").astype(np.int64) / 86400.0).astype(np.float64)
    try:
        return np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"{what} should be days (numbers) or datetime64, got {t.dtype}") from exc
