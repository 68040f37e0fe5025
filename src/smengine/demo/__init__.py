r"""``smengine demo``: the whole chain on the synthetic twin world, with a report.

Steps (each timed; outputs under ``out_dir``):

0. The footprint physics tables and kernel (``footprint/``, :mod:`smengine.demo._footprint`).
1. :func:`smengine.twin.make_world` — covariate files, CRNS stations in the
   COSMOS-Europe rev1 layout, an ERA5-Land-like product and the true 1-km θ_eq (cached).
2. :func:`smengine.ingest.ingest` — GeoTIFF/NetCDF covariates into tiles (resumable).
3. :func:`smengine.stations.read_cosmos_europe` and :func:`smengine.features.training_table`
   — footprint-weighted station-day features.
4. :func:`smengine.model.train` — the forest with grouped CV by station (GroupKFold, 5 folds);
   compiled and saved.
5. :func:`smengine.engine.run` — the daily 1-km product (CF-NetCDF), by sub-pixel scaling.
6. Scores against the twin's truth: the product, the same forest on pixel-mean covariates
   f(mean_j x_j), the SMAP-like and S1-like surface products and ERA5-Land-like θ_eq.
7. :mod:`smengine.evaluate` — out-of-fold (grouped-by-station) predictions and surface products against the
   stations (raw and at the best exponential-filter T), bias by month, plots.
8. :mod:`smengine.pseudoproxy` — ERA5-Land-like θ_eq as the target at the station pixels
   on the CRNS days, same features (ERA5 excluded), scored off-site against distance to the
   nearest station and the dissimilarity index / area of applicability.
9. ``report.md`` with every number, and PNG figures.

The features are the static layers, NDVI, precipitation, the carried SWI
(``swi<T>c_``) of the S1-like and SMAP-like surface soil moisture at T = 5, 10, 20, 40 d
and the day of year — all available every day, so the product is daily.
"""

from __future__ import annotations

from smengine.demo._chain import DEMO_SPEC, SCALING_STEP, STEPS, DemoResult, run_demo

__all__ = ["DEMO_SPEC", "SCALING_STEP", "STEPS", "DemoResult", "run_demo"]
