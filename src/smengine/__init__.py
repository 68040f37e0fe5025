"""smengine: gridded profile soil moisture by emulating cosmic-ray neutron sensors.

A Random Forest trained at CRNS stations on high-resolution covariates is applied to
every sub-pixel of every 1-km pixel and day and averaged to the pixel ("sub-pixel
scaling"). The physics of what a CRNS sees lives in :mod:`smengine.footprint`.
"""

from __future__ import annotations

# PROJ first: the ecCodes wheels (cfgrib's GRIB backend) bundle their own PROJ, and whichever
# copy loads first serves both; pyproj needs its own. Importing smengine first keeps it so.
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
