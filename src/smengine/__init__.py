"""smengine: gridded profile soil moisture by emulating cosmic-ray neutron sensors.

A Random Forest trained at CRNS stations on high-resolution covariates is applied to
every sub-pixel of every 1-km pixel and day and averaged to the pixel ("sub-pixel
scaling"). The physics of what a CRNS sees lives in :mod:`smengine.footprint`.
"""

from __future__ import annotations

# PROJ first. The GRIB extra pins an ecCodes binding that brings no PROJ of its own; should a
# newer one (eccodeslib/eckitlib, loaded with RTLD_GLOBAL, with a second PROJ) be installed
# by something else, pyproj bound first keeps its own copy within smengine.
import pyproj  # noqa: F401  isort: skip

import logging
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("smengine")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())

from smengine import errors, footprint

__all__ = ["__version__", "errors", "footprint"]
