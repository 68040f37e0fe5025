r"""Exponential filter: Soil Water Index from surface soil moisture (Wagner 1999; Albergel 2008).

The recursive form of Albergel et al. (2008), exactly equivalent to Wagner's weighted sum
over all past observations:

.. math::

    K_1 = 1,\quad SWI_1 = ms(t_1) \\
    K_n = \frac{K_{n-1}}{K_{n-1} + e^{-(t_n - t_{n-1})/T}},\quad
    SWI_n = SWI_{n-1} + K_n\,(ms(t_n) - SWI_{n-1})

Missing observations are skipped: :math:`t_{n-1}` is the time of the last *valid*
observation and K is not reset. Missing means not finite: NaN (the normal marker, silent)
and ±inf, which are counted and reported (:class:`~smengine.errors.DataLossWarning`) so that
one infinite value can neither erase the rest of a series nor pass unnoticed. Several T are
computed in one pass, on single series or on whole grids (time × y × x) without Python loops
per pixel (compiled, GIL released).

References
----------
.. [1] Wagner, W., Lemoine, G., Rott, H. (1999). A method for estimating soil moisture from
   ERS scatterometer and soil data. Remote Sens. Environ. 70, 191–207.
.. [2] Albergel, C. et al. (2008). From near-surface to root-zone soil moisture using an
   exponential filter. Hydrol. Earth Syst. Sci. 12, 1323–1337.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from smengine._days import day_numbers
from smengine._threads import effective_n_threads
from smengine.errors import ConfigError, DataLossWarning, ValidationError

__all__ = ["SWIState", "exp_filter"]

log = logging.getLogger(__name__)


@dataclass
class SWIState:
    """Filter state after the last time step, to continue a run on later data (pyswi's
    ``gain_in``/``gain_out``). Arrays have shape ``(n_T,) + series_shape``.

    Attributes
    ----------
    gain : ndarray
        K of the last valid observation (0 where there was none yet).
    swi : ndarray
        SWI at the last valid observation.
    time : ndarray
        Time of the last valid observation, days.
    """

    gain: np.ndarray
    swi: np.ndarray
    time: np.ndarray


def _uniform_step(t: np.ndarray, fresh: bool) -> float:
    """The step of uniform integer-valued times (then the kernel tabulates the weights), else 0.

    Not when continuing a state: its last time may precede ``t[0]`` by any amount.
    """
    if not fresh or t.size < 3:
        return 0.0
    dt = np.diff(t)
    step = float(dt[0])
    if step == np.round(step) and (dt == step).all() and (t == np.round(t)).all():
        return step
    return 0.0


def exp_filter(
    values: npt.ArrayLike,
    times: npt.ArrayLike,
    T: float | npt.ArrayLike,
    *,
    nan: float | None = None,
    carry: bool = False,
    max_gap: float | None = None,
    state: SWIState | None = None,
    return_state: bool = False,
    n_threads: int | None = None,
) -> np.ndarray | tuple[np.ndarray, SWIState]:
    r"""Soil Water Index of one series or of every pixel of a grid, for one or several T.

    Parameters
    ----------
    values : array_like, shape (n_times,) or (n_times, ...)
        Surface soil moisture (any units: the filter is linear). NaN (and ``nan``) are
        missing observations; so are ±inf, counted in a
        :class:`~smengine.errors.DataLossWarning`.
    times : array_like, shape (n_times,)
        Observation times: days (fractional allowed, e.g. Julian dates) or datetime64;
        strictly increasing.
    T : float or sequence of float
        Characteristic time(s), days, > 0.
    nan : float, optional
        A sentinel that also marks missing values (pytesmo uses −999999.0).
    carry : bool, optional
        On days without a valid observation, repeat the last SWI instead of NaN
        (default False: NaN, as pytesmo).
    max_gap : float, optional
        With ``carry``: repeat the last SWI only while at most ``max_gap`` days have passed
        since the last valid observation (``t - t_last <= max_gap``), NaN after that until
        the next one, so that a product that ends does not leave its last SWI standing for
        years. Default None: no limit.
    state : SWIState, optional
        Continue from a previous run's state (the new ``times`` must follow its times).
    return_state : bool, optional
        Also return the :class:`SWIState` after the last step.
    n_threads : int, optional
        Threads over series (default all).

    Returns
    -------
    swi : ndarray, float64 (float32 for float32 ``values``; computed in float64)
        Shape ``values.shape`` for a scalar T, ``(n_T,) + values.shape`` for a sequence.
    state : SWIState, optional

    Raises
    ------
    ValidationError
        On mismatched shapes or times that do not increase.
    ConfigError
        On T <= 0.

    Warns
    -----
    DataLossWarning
        When ``values`` hold ±inf: how many were treated as missing (as NaN).

    Examples
    --------
    >>> exp_filter([10, 20, 30], [0, 1, 2], 5).round(5).tolist()
    [10.0, 15.49834, 21.32452]
    >>> exp_filter([10, np.nan, np.nan, np.nan], [0, 1, 2, 3], 5, carry=True, max_gap=2).tolist()
    [10.0, 10.0, 10.0, nan]
    """
    v = np.asarray(values)
    if v.dtype != np.float32:
        v = v.astype(np.float64, copy=False)
    if v.ndim == 0:
        raise ValidationError("values should have a time axis")
    t = day_numbers(times)
    if t.shape != (v.shape[0],):
        raise ValidationError(f"times {t.shape} should be 1-D with one entry per row of values {v.shape}")
    if t.size > 1 and not (np.diff(t) > 0).all():
        i = int(np.flatnonzero(np.diff(t) <= 0)[0])
        raise ValidationError(f"times should be strictly increasing; step {i} → {i + 1} is {t[i + 1] - t[i]} days")
    if max_gap is not None and not (float(max_gap) >= 0):
        raise ConfigError(f"max_gap should be a non-negative number of days or None, got {max_gap!r}")
    gap = np.inf if max_gap is None else float(max_gap)
    scalar_T = np.ndim(T) == 0
    Ts = np.atleast_1d(np.asarray(T, dtype=np.float64))
    if Ts.ndim != 1 or not (Ts > 0).all() or not np.isfinite(Ts).all():
        raise ConfigError(f"T should be positive and finite (days), got {T!r}")
    series_shape = v.shape[1:]
    flat = np.ascontiguousarray(v.reshape(v.shape[0], -1))
    if nan is not None:
        flat = np.where(flat == flat.dtype.type(nan), flat.dtype.type(np.nan), flat)
    m = flat.shape[1]
    if state is None:
        gain = np.zeros((Ts.size, m))
        swi = np.zeros((Ts.size, m))
        last = np.zeros((Ts.size, m))
    else:
        want = (Ts.size,) + series_shape
        if state.gain.shape != want:
            raise ValidationError(f"state has shape {state.gain.shape}, expected {want}")
        gain = np.array(state.gain, dtype=np.float64).reshape(Ts.size, m)
        swi = np.array(state.swi, dtype=np.float64).reshape(Ts.size, m)
        last = np.array(state.time, dtype=np.float64).reshape(Ts.size, m)
        started = gain > 0
        if t.size and started.any() and t[0] <= last[started].max():
            raise ValidationError("times must follow the state's last observation")
    out = np.empty((Ts.size, flat.shape[0], m), dtype=flat.dtype)
    step = _uniform_step(t, state is None)

    from smengine._ext import _filters

    threads = effective_n_threads(n_threads)
    n_inf = _filters.exp_filter(flat, t, Ts, bool(carry), gap, out, gain, swi, last, step, threads)
    if n_inf:
        warnings.warn(
            f"exp_filter: {n_inf:,} of {flat.size:,} values were infinite (±inf) and were treated as missing, as NaN",
            DataLossWarning,
            stacklevel=2,
        )
    result = out.reshape((Ts.size,) + v.shape)
    if scalar_T:
        result = result[0]
    if not return_state:
        return result
    shape = (Ts.size,) + series_shape
    return result, SWIState(gain.reshape(shape), swi.reshape(shape), last.reshape(shape))
