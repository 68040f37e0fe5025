"""smengine: gridded profile soil moisture by emulating cosmic-ray neutron sensors.

A Random Forest trained at CRNS stations on high-resolution covariates is applied to
every sub-pixel of every 1-km pixel and day and averaged to the pixel ("sub-pixel
scaling"). Submodules load on first use (``smengine.engine`` imports the engine then).

The library
-----------
footprint    what a CRNS sees: footprint radius and depth, weights, θ_eq of layered products
neutrons     neutron counts ↔ soil moisture, corrections, calibration, uncertainty
stations     station data (Station, StationSet, QC, daily) and readers (FORMATS, open_stations)
grid         the 1-km grid, its sub-pixels and 100-km tiles (Grid)
ingest       covariate files (GeoTIFF, NetCDF, GRIB) regridded into tiles (SourceSpec, ingest)
tiles        memory-mapped HDF5 tile stores (TileStore, TileWriter)
storage      bytes per pixel-day of tile stores and the Europe-year projection (bytes_per_pixel_day, project)
units        covariate units: which convert to which, and how (conversion)
filters      the exponential filter / Soil Water Index (exp_filter)
features     features defined once for training and inference (FeatureSpec, training_table)
model        training with grouped CV (train, Forest, ModelCard) and the compiled forest
engine       fused sub-pixel inference over tiles (predict, run, TileRunner), xarray in/out (predict_dataset, Stepper)
domain       one domain-wide Zarr product written tile by tile, on Dask too (run_domain, write_region)
product      the CF-NetCDF / Zarr / COG product (make_product, QualityFlag, write_netcdf)
metrics      validation metrics with pytesmo's definitions (pearson_r, ubrmse, kge, ...)
evaluate     scores at stations and against surface products, plots
pseudoproxy  off-site skill with ERA5-Land θ_eq as target, dissimilarity index, AOA
config       run configurations (TOML: RunConfig, load_config)
pipeline     files → product with a run configuration (run_pipeline, `smengine run`)
errors       SMEngineError and its builtin-mixin subclasses, SMEngineWarning, DataLossWarning

Applications
------------
twin         the synthetic twin world written as a user's files (make_world)
demo         the whole chain on the twin world with a report (run_demo, `smengine demo`)
experiments  real CRNS stations with point covariates against baselines
cli          the `smengine` command
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

# PROJ first. The GRIB extra pins an ecCodes binding that brings no PROJ of its own; should a
# newer one (eccodeslib/eckitlib, loaded with RTLD_GLOBAL, with a second PROJ) be installed
# by something else, pyproj bound first keeps its own copy within smengine.
import pyproj  # noqa: F401  isort: skip

try:
    __version__ = version("smengine")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

logging.getLogger(__name__).addHandler(logging.NullHandler())

#: Submodules, imported on first attribute access (``smengine.engine``), listed by ``dir(smengine)``.
SUBMODULES = (
    "footprint",
    "neutrons",
    "stations",
    "grid",
    "ingest",
    "tiles",
    "storage",
    "units",
    "filters",
    "features",
    "model",
    "engine",
    "domain",
    "product",
    "metrics",
    "evaluate",
    "pseudoproxy",
    "config",
    "pipeline",
    "errors",
    "twin",
    "demo",
    "experiments",
    "cli",
)

__all__ = ["SUBMODULES", "__version__", *SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in SUBMODULES:
        return importlib.import_module(f"smengine.{name}")
    raise AttributeError(f"module 'smengine' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *SUBMODULES})
