"""Exceptions and warnings raised by smengine.

Every exception derives from one root, :class:`SMEngineError`, and also from the
builtin a caller would naturally catch (the rasterio ``errors.py`` pattern)::

    try:
        smengine.footprint.penetration_depth(1.0, -1.3, 0.2)
    except ValueError:          # or: except smengine.errors.SMEngineError
        ...

Each class carries a small integer :attr:`SMEngineError.return_code` so that
continental runs can record *why* a pixel, station or tile failed in a status
variable instead of aborting (the pytesmo ``error_handling`` pattern).
"""

from __future__ import annotations

__all__ = [
    "RETURN_CODES",
    "ConfigError",
    "ConvergenceError",
    "DataError",
    "DataLossWarning",
    "PerformanceWarning",
    "QualityWarning",
    "SMEngineError",
    "SMEngineWarning",
    "ValidationError",
]


class SMEngineError(Exception):
    """Root of all smengine errors."""

    #: Code written into per-pixel / per-station status variables.
    return_code: int = 1


class ConfigError(SMEngineError, ValueError):
    """An argument or configuration value is invalid (wrong type, range or combination)."""

    return_code = 2


class ValidationError(SMEngineError, ValueError):
    """Input data fail a physical or structural check (negative distance, θ outside (0, 1),
    mismatched shapes, non-finite values where none are allowed)."""

    return_code = 3


class DataError(SMEngineError, OSError):
    """A file or data source cannot be read or is malformed (missing CRS, unknown units,
    truncated file, non-daily time axis, ...). Messages name the file and the reason."""

    return_code = 4


class ConvergenceError(SMEngineError, RuntimeError):
    """An iterative procedure did not converge within its iteration limit."""

    return_code = 5


class SMEngineWarning(UserWarning):
    """Root of all smengine warnings."""


class PerformanceWarning(SMEngineWarning):
    """The requested configuration works but will be slow (e.g. a pathological chunking)."""


class DataLossWarning(SMEngineWarning):
    """Data were dropped on the way (station days, training rows, pixel-days): the result is
    computed from less than was given. The message counts what was lost and why. Turn it
    into an error with ``warnings.simplefilter("error", DataLossWarning)`` (the CLI's
    ``--strict``)."""


class QualityWarning(SMEngineWarning):
    """Nothing was dropped, but a check could not run or a default stood in for a value the
    input lacks (snow/frozen soil not masked for want of a temperature, lattice water
    assumed 0 g g⁻¹): the result may be biased. The message names the station and what was
    assumed."""


#: Mapping of return codes to exception classes, for decoding status variables.
RETURN_CODES: dict[int, type[SMEngineError]] = {
    cls.return_code: cls for cls in (SMEngineError, ConfigError, ValidationError, DataError, ConvergenceError)
}
