"""Recognising a spatial network (model object or file) without importing PyTorch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from smengine.errors import ConfigError

#: The ``format`` entry of a saved network (``torch.save`` of a dict, a zip archive).
FORMAT = "smengine.nn/1"
#: File name ending of a saved network.
SUFFIX = ".smnn.pt"
_ZIP_MAGIC = b"PK\x03\x04"


def is_nn_model(obj: Any) -> bool:
    """True for a :class:`smengine.nn.SpatialNet` (checked without importing torch)."""
    return bool(getattr(type(obj), "_smengine_nn", False))


def is_nn_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a saved :class:`smengine.nn.SpatialNet`: a zip archive (what
    ``torch.save`` writes), unlike the HDF5 of a compiled forest."""
    p = Path(path).expanduser()
    try:
        with open(p, "rb") as f:
            return f.read(4) == _ZIP_MAGIC
    except OSError:
        return False


def require_torch() -> Any:
    """Import and return ``torch``, or raise :class:`~smengine.errors.ConfigError` saying how to install it."""
    try:
        import torch
    except ImportError as exc:
        raise ConfigError(
            "the spatial network (smengine.nn) needs PyTorch: pip install 'smengine[nn]' "
            "(the CPU build is enough: pip install torch==2.13.0)"
        ) from exc
    return torch
