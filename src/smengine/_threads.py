"""One place that decides how the kernels run: how many threads, and which instruction set the
forest kernel may use."""

from __future__ import annotations

import os

from smengine.errors import ConfigError

__all__ = ["FOREST_ISA_LEVELS", "effective_n_threads", "forest_isa_cap", "openmp_enabled"]

#: Values of the environment variable ``SMENGINE_FOREST_ISA`` and the instruction-set level each
#: caps the forest's block kernel at (0 portable C, 1 AVX2, 2 AVX-512).
FOREST_ISA_LEVELS = {"c": 0, "avx2": 1, "avx512": 2}


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


def forest_isa_cap() -> int:
    """The highest instruction set the forest's block kernel may use, from ``SMENGINE_FOREST_ISA``.

    The kernel takes the best this CPU has up to the cap; results are identical on every
    path (the variable exists for tests and comparisons). Read on every prediction.

    Returns
    -------
    int
        0 for ``c`` (portable C), 1 for ``avx2``, 2 for ``avx512`` or when the variable is
        unset or empty (no cap). Case and surrounding whitespace are ignored.

    Raises
    ------
    ConfigError
        If the variable holds anything else.
    """
    raw = os.environ.get("SMENGINE_FOREST_ISA", "")
    value = raw.strip().lower()
    if not value:
        return max(FOREST_ISA_LEVELS.values())
    if value not in FOREST_ISA_LEVELS:
        raise ConfigError(
            f"SMENGINE_FOREST_ISA={raw!r}: expected one of {', '.join(FOREST_ISA_LEVELS)} (or unset for no cap)"
        )
    return FOREST_ISA_LEVELS[value]
