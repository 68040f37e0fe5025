r"""The synthetic twin world: gridded covariates, CRNS stations and a known truth together.

No public data set holds gridded covariates, CRNS stations and the true soil-moisture
field at once. :func:`make_world` builds one, deterministically from a seed, and writes it
as real files in the formats users have, so that the whole chain runs on it::

    make_world → ingest → TileStore → stations/training_table → train → engine → score

What the world contains
-----------------------
*Fine grid* (default 100 m, EPSG:3035, aligned to the EEA 1-km grid):

* elevation (smoothed Gaussian random field + a ridge, m) and the topographic wetness
  index TWI = ln(a / tan β) (D8 flow accumulation, Beven & Kirkby 1979);
* sand and clay fractions (smooth random fields) → wilting point, field capacity and
  porosity by the Saxton & Rawls (2006) pedotransfer functions; dry bulk density
  ρ_b = (1 − φ)·2.65 g cm⁻³;
* land cover (1 cropland, 2 grassland, 3 forest, 4 urban, 5 water) from thresholds on
  random fields, elevation and slope;
* daily forcing: spatially correlated, intermittent precipitation (a Gaussian random
  field per day with a seasonal wet-day probability, log-normal amounts, 1-km support)
  and Hargreaves potential evaporation from a seasonal air temperature;
* a six-layer bucket soil water balance (0–5, 5–15, 15–30, 30–50, 50–80, 80–120 cm) with
  infiltration and saturation-excess runoff, drainage above field capacity, TWI-weighted
  lateral (groundwater) inflow and evapotranspiration by root fraction and
  soil-moisture stress → the true θ(z) per fine cell and day.

*Field-scale heterogeneity* (``TwinConfig.heterogeneity`` = h in [0, 1], default 0 = the
smooth world above, byte for byte). A mosaic of Voronoi fields (Manhattan distance, so
straight plot boundaries) of :data:`FIELD_MEAN_HA` = 5 ha on average (10–90 %: 2–9 ha) covers
the fine grid; a fraction h of the fields (drawn once per seed, so the sets are nested
across levels) become fields of their own:

* a land cover drawn per field: cropland 55 %, grassland 17 %, forest patch 16 %,
  settlement 12 % (lakes stay lakes);
* sand (SD 0.12) and clay (SD 0.06) offsets per field, so texture, hence wilting point, field
  capacity, porosity, Ksat and bulk density, jump at field boundaries;
* on crop fields a calendar of their own: winter crops (45 %) green up on day 55–90,
  are harvested on day 190–215 and resown on day 265–295; spring crops are sown on day
  95–140 and harvested on day 235–285. The development g ∈ [0, 1] sets NDVI
  (NDVI_min + (NDVI_max − NDVI_min)·g·(0.35 + 0.65·stress memory)) and the crop
  coefficient (0.3 bare … 1.15 full cover) of the bucket, day by day;
* 30 % of the crop fields are irrigated: :data:`IRRIGATION_MM` on a day after one whose
  root-zone stress factor fell below 0.5 while g > 0.3 (``FineDay.fluxes["irrigation"]``).

The truth comes from the same bucket on the same fine grid. The sensors then resolve the
fields: the Sentinel-1-like GeoTIFFs, NDVI and LST are written on the fine grid (100 m by
default), with the 1-km errors of the smooth twin (the same draws) plus a sub-pixel
speckle (S1: 0.5 × ``s1_noise``; NDVI 0.02; LST 0.5 K). Precipitation, SMAP-like and
ERA5-like stay coarse. :func:`scaling_experiment` measures what sub-pixel scaling gains
on such worlds (see :mod:`smengine.twin._scaling`).

*Files* (all under ``out_dir``):

=====================================  =====================================================
``static/{name}.tif``                  fine-grid GeoTIFFs: elevation (m), twi, sand, clay (1),
                                       porosity (m3 m-3), land_cover (class codes)
``s1/s1_sm_YYYYMMDD.tif``              Sentinel-1-like 1-km surface SM (0–5 cm + noise) on
                                       revisit days, one GeoTIFF per day (tag ``time``)
``smap/smap_l3_like.nc``               SMAP-like 9-km EASE-Grid 2.0 (EPSG:6933) surface SM
``modis/ndvi.nc``, ``modis/lst.nc``    NDVI-like (1) and LST-like (K, cloud gaps) 1-km fields
``forcing/precipitation.nc``           the true daily precipitation on the 1-km grid (mm)
``era5/era5_land_like.nc``             ERA5-Land-like 0.1° swvl1–4 from a biased model run,
                                       in ERA5-Land's NetCDF layout (``valid_time``, …)
``crns/COSMOS_Europe_Data_rev1/``      ~25 CRNS stations in the COSMOS-Europe revision-1
                                       layout (hourly series + the two metadata tables)
``crns/station_truth.csv``             the noise-free footprint-weighted θ per station-day
``truth/theta_eq.nc``                  the true CRNS-equivalent θ_eq on the 1-km grid
``stations.csv``, ``manifest.json``    the station table; parameters, hash and file list
=====================================  =====================================================

Definitions
-----------
*Truth on the 1-km grid.* For a fine cell *i* with layer moisture θ_ik and bulk density
ρ_b,i, the CRNS-equivalent moisture is the fixed point

.. math:: \theta_{eq,i} = \frac{\sum_k w_k(D_i)\,\theta_{ik}}{\sum_k w_k(D_i)},\qquad
          w_k(D) = e^{-2 z_{k}^{top}/D} - e^{-2 z_{k}^{bot}/D},\qquad
          D_i = D_{86}(r = 0, \rho_{b,i}, \theta_{eq,i})

(:func:`smengine.footprint.layer_weights`, :func:`~smengine.footprint.penetration_depth`),
i.e. what a CRNS standing on the cell would see vertically. The truth of a 1-km pixel is
the mean of θ_eq,i over its land cells (NaN if less than half of it is land): what a CRNS
would see on average anywhere in the pixel.

*Stations.* A station stands at the centre of a fine land cell. On day *t* it sees

.. math:: \theta_{CRNS} = \frac{\sum_{i\,\mathrm{land}} K_i\,\theta_{p,i}}{\sum_{i\,\mathrm{land}} K_i},
          \qquad \theta_{p,i} = \frac{\sum_k w_k(D_i)\,\theta_{ik}}{\sum_k w_k(D_i)},\qquad
          D_i = D_{86}\big(r_i / (F_p F_{veg}(\theta)),\ \rho_{b,i},\ \theta\big)

with the horizontal kernel K = :func:`~smengine.footprint.footprint_kernel` (fine cell
size, the day's humidity rounded to 2 g m⁻³, the station's mean pressure and vegetation
height, θ rounded to 0.02, truncated at ``kernel_radius``) and r_i the distance of cell *i*
from the sensor. θ is solved by fixed-point iteration in two passes: the kernel of pass
one uses the plain mean of the cells' θ_eq, that of pass two the result of pass one.
:func:`station_theta` implements exactly this. The noisy observation goes through
neutrons: hourly corrected counts N = :func:`~smengine.neutrons.theta_to_counts`
(Desilets), raw counts drawn from a Poisson law after undoing the pressure and humidity
corrections, corrected again, a centred 24 h moving mean, and
:func:`~smengine.neutrons.counts_to_theta` back.

*ERA5-Land-like.* The same forcing averaged to 0.1° cells drives a four-layer bucket
(0–7, 7–28, 28–100, 100–289 cm) with uniform, domain-mean soil whose wilting point, field
capacity and porosity are shifted by ``era5_theta_offset`` and precipitation scaled by
``era5_precip_factor``: a smooth product with a known wet (or dry) bias.

References
----------
.. [1] Saxton, K. E., Rawls, W. J. (2006). Soil water characteristic estimates by texture
   and organic matter for hydrologic solutions. SSSAJ 70, 1569–1578.
.. [2] Hargreaves, G. H., Samani, Z. A. (1985). Reference crop evapotranspiration from
   temperature. Appl. Eng. Agric. 1, 96–99. Ra from Allen et al. (1998), FAO-56, Eq. 21.
.. [3] Beven, K. J., Kirkby, M. J. (1979). A physically based, variable contributing area
   model of basin hydrology. Hydrol. Sci. Bull. 24, 43–69.
.. [4] Desilets, D., Zreda, M., Ferré, T. (2010). Nature's neutron probe. WRR 46, W11505.
.. [5] Köhli et al. (2015), WRR 51; Schrön et al. (2017), HESS 21 (see :mod:`smengine.footprint`).
.. [6] Bogena, H. R. et al. (2022). COSMOS-Europe. ESSD 14, 1125–1151.
"""

from __future__ import annotations

from smengine.twin._cv import CV_STUDY_SCHEMES, CVStudy, cv_study, cv_study_report, plot_cv_study
from smengine.twin._files import TwinWorld, make_world, write_run_config
from smengine.twin._model import (
    FIELD_MEAN_HA,
    IRRIGATION_MM,
    LAND_COVER,
    LAYER_BOTTOMS,
    LAYER_TOPS,
    FineDay,
    TwinConfig,
    simulate_fine,
    station_theta,
)
from smengine.twin._models import model_study, model_study_report
from smengine.twin._scaling import SCALING_COLUMNS, plot_scaling, scaling_experiment, scaling_report

__all__ = [
    "CV_STUDY_SCHEMES",
    "CVStudy",
    "FIELD_MEAN_HA",
    "IRRIGATION_MM",
    "LAND_COVER",
    "LAYER_BOTTOMS",
    "LAYER_TOPS",
    "SCALING_COLUMNS",
    "FineDay",
    "TwinConfig",
    "TwinWorld",
    "cv_study",
    "cv_study_report",
    "make_world",
    "model_study",
    "model_study_report",
    "plot_cv_study",
    "plot_scaling",
    "scaling_experiment",
    "scaling_report",
    "simulate_fine",
    "station_theta",
    "write_run_config",
]
