"""One place that decides how many threads a kernel uses."""

from __future__ import annotations

import os

from smengine.errors import ConfigError

__all__ = ["effective_n_threads", "openmp_enabled"]


def openmp_enabled() -> bool:
    """Whether the compiled kernels were built with OpenMP."""
    from smengine._ext._parallel import openmp_enabled as _enabled

    return bool(_enabled())


def effective_n_threads(n_threads: int | None = None) -> int:
    """Resolve a user's ``n_threads`` to a positive thread count.

    Parameters
    ----------
    n_threads : int or None
        ``None`` uses all threads OpenMP would use (``OMP_NUM_THREADS`` is honoured),
        a positive integer asks for exactly that many, and a negative one counts back
        from the number of CPUs as in scikit-learn (``-1`` = all, ``-2`` = all but one).

    Returns
    -------
    int
        The number of threads, at least 1. Builds without OpenMP always give 1.

    Raises
    ------
    ConfigError
        If ``n_threads`` is 0 or not an integer.
    """
    from smengine._ext._parallel import max_threads

    if n_threads is not None and (isinstance(n_threads, bool) or not isinstance(n_threads, int)):
        raise ConfigError(f"n_threads should be an int or None, got {n_threads!r}")
    if n_threads == 0:
        raise ConfigError("n_threads == 0 is invalid; use None for all threads")
    if not openmp_enabled():
        return 1
    if n_threads is None:
        return max(1, int(max_threads()))
    if n_threads < 0:
        return max(1, (os.cpu_count() or 1) + 1 + n_threads)
    return n_threads
