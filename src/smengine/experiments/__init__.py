r"""Real-data emulation at CRNS stations: point covariates, the forest and its baselines.

The gridded chain runs on the synthetic twin; this module tests the learning part on real
CRNS records with the covariates that exist *at* the stations:

* :func:`station_table` — one row per station and UTC day: the CRNS soil moisture (the
  target, from :meth:`smengine.stations.StationSet.daily`) and point features: daily
  precipitation (the station gauge or a given table, e.g. PRISM via
  :func:`read_daily_precipitation`), its exponential filter at several T
  (:func:`smengine.filters.exp_filter`: an antecedent-precipitation index), air
  temperature, relative and absolute humidity, pressure, day of year and the static site
  descriptors (bulk density, lattice water, SOC, elevation, a coarse land-cover class).
  Where the station has a TDR profile (columns ``tdr_<depth cm>``), the profile is
  weighted with the vertical footprint (:func:`tdr_footprint_average`) as an independent
  measurement of the same quantity.
* :func:`temporal_split` — each station trains on its own first ~2.4 years and is tested on
  the rest (the single-site case: COSMOS-Europe FSC001 Fürstensee).
* :func:`leave_site_out` — one station held out per fold (the 15 Roaring Fork stations);
  ``spatiotemporal=True`` also removes the held-out station's dates from training.
* :func:`knndm_cv` — the stations grouped into kNNDM folds (Linnenbrink et al. 2024) that
  match the distances from the prediction domain (given points, or the stations' convex
  hull) to the stations, spatio-temporal by default (:func:`station_xy` gives the
  coordinates).
* :func:`run_experiments` — all of them (:data:`EXPERIMENTS`), with ``report.md``, CSV
  tables and one PNG per experiment.

Every experiment fits the same forest code (:func:`smengine.model.train`, SCIENCE §4.3
defaults) and measures side by side, on the same test rows:

``forest``  the Random Forest;
``linear``  ordinary least squares (scikit-learn ``LinearRegression``) on the same features
            standardised with the training rows' mean and SD (``StandardScaler``);
``mean``    the mean target of the training rows (a constant);
``tdr``     the footprint-weighted TDR profile of the test day (not a model; where present).

NaN policy: the forest and the linear model are fitted on the *complete* training rows
(finite target and features) and predict only complete rows; all methods are scored on
the test rows with a finite target and a forest prediction (``tdr`` also needs the
profile), so every method sees the same days. Scores are per station
(:func:`smengine.evaluate.site_scores`: R, ubRMSE, bias, KGE; ≥ 30 days) and their median.

Verdicts: every "A beats B" comes from a paired comparison (:func:`compare_methods`,
:func:`smengine.evaluate.paired_station_ci`): per-station differences of a metric with 95 %
block-bootstrap intervals over station × 30-day blocks, wins/ties/losses per station, and
"beats" only when the interval of the mean per-station difference excludes 0.
"""

from __future__ import annotations

from smengine.experiments._data import (
    DEFAULT_T,
    EXPERIMENTS,
    LAND_COVER_CLASSES,
    METHODS,
    daily_precipitation,
    land_cover_class,
    read_covariates,
    read_daily_irrigation,
    read_daily_precipitation,
    read_station_set,
    select_features,
    station_table,
    tdr_footprint_average,
)
from smengine.experiments._report import ExperimentsReport, run_experiments
from smengine.experiments._run import (
    COMPARISONS,
    ExperimentResult,
    compare_methods,
    knndm_cv,
    leave_site_out,
    linear_baseline,
    station_xy,
    temporal_split,
)

__all__ = [
    "COMPARISONS",
    "EXPERIMENTS",
    "DEFAULT_T",
    "LAND_COVER_CLASSES",
    "METHODS",
    "ExperimentResult",
    "ExperimentsReport",
    "compare_methods",
    "knndm_cv",
    "station_xy",
    "daily_precipitation",
    "land_cover_class",
    "leave_site_out",
    "linear_baseline",
    "read_covariates",
    "read_daily_irrigation",
    "read_daily_precipitation",
    "select_features",
    "read_station_set",
    "run_experiments",
    "station_table",
    "tdr_footprint_average",
    "temporal_split",
]
