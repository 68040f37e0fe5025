"""The exception hierarchy: one root, builtin mixins, return codes."""

from __future__ import annotations

import pytest

from smengine import errors


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (errors.ConfigError, ValueError),
        (errors.ValidationError, ValueError),
        (errors.DataError, OSError),
        (errors.ConvergenceError, RuntimeError),
    ],
)
def test_subclasses_are_catchable_as_builtin_and_root(cls, builtin):
    with pytest.raises(builtin):
        raise cls("x")
    with pytest.raises(errors.SMEngineError):
        raise cls("x")


def test_return_codes_are_unique_and_decodable():
    codes = [c.return_code for c in errors.RETURN_CODES.values()]
    assert len(codes) == len(set(codes))
    for code, cls in errors.RETURN_CODES.items():
        assert cls.return_code == code
    assert errors.RETURN_CODES[errors.DataError.return_code] is errors.DataError


def test_warnings_derive_from_userwarning():
    assert issubclass(errors.PerformanceWarning, errors.SMEngineWarning)
    assert issubclass(errors.SMEngineWarning, UserWarning)
