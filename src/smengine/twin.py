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

import dataclasses
import functools
import hashlib
import json
import os
import logging
import time as _time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from smengine import footprint as fp
from smengine import neutrons as nt
from smengine._io import atomic_target, atomic_write
from smengine.errors import ConfigError
from smengine.grid import Grid

log = logging.getLogger(__name__)

__all__ = [
    "LAND_COVER",
    "LAYER_BOTTOMS",
    "LAYER_TOPS",
    "FineDay",
    "TwinConfig",
    "TwinWorld",
    "make_world",
    "simulate_fine",
    "station_theta",
    "write_run_config",
]

#: Layer tops and bottoms of the true soil profile, cm.
LAYER_TOPS = (0.0, 5.0, 15.0, 30.0, 50.0, 80.0)
LAYER_BOTTOMS = (5.0, 15.0, 30.0, 50.0, 80.0, 120.0)
#: Land-cover codes of ``static/land_cover.tif``.
LAND_COVER = {1: "Cropland", 2: "Grassland", 3: "Forest", 4: "Urban", 5: "Water"}
_ERA5_TOPS = tuple(t for t, _ in fp.ERA5_LAND_LAYERS)
_ERA5_BOTTOMS = tuple(b for _, b in fp.ERA5_LAND_LAYERS)
_FORMAT = "smengine-twin/1"
# per land cover (index = code): crop coefficient, impervious fraction, vegetation height (m),
# root e-folding depth (cm), NDVI min, NDVI max
_KC = np.array([0.0, 1.0, 0.95, 1.05, 0.5, 1.0])
_IMPERV = np.array([0.0, 0.0, 0.0, 0.0, 0.6, 0.0])
_VEG_H = np.array([0.0, 0.5, 0.2, 15.0, 0.0, 0.0])
_ROOT_D = np.array([1.0, 20.0, 15.0, 40.0, 10.0, 1.0])
_NDVI_MIN = np.array([0.0, 0.15, 0.35, 0.55, 0.1, -0.05])
_NDVI_MAX = np.array([0.0, 0.85, 0.8, 0.88, 0.3, -0.02])
# EASE-Grid 2.0 global 9 km (NSIDC): cell size and upper-left corner, m (EPSG:6933)
_EASE_RES = 9008.055210146
_EASE_X0 = -17367530.445161372
_EASE_Y1 = 7314540.830638504
# stream ids of the random number generator (np.random.SeedSequence([seed, stream, ...]))
_S_STATIC, _S_PRECIP, _S_MET, _S_S1, _S_SMAP, _S_NDVI, _S_LST, _S_STATION, _S_COUNTS = range(9)


# ======================================================================================
# configuration
# ======================================================================================
@dataclass(frozen=True)
class TwinConfig:
    """Parameters of a twin world (everything but the seed).

    Parameters
    ----------
    size_km : int
        Side of the square domain, km (1-km pixels; default 60).
    start : str
        First day, ISO date (default ``"2019-01-01"``).
    n_days : int
        Number of days (default 730).
    fine_resolution : float
        Fine-grid cell size, m; must divide 1000 (default 100).
    subpixel : int
        Sub-pixels per pixel side of the output :class:`~smengine.grid.Grid` (default 4).
    xmin, ymax : float
        Upper-left corner in EPSG:3035, m, multiples of 1000 (default central Germany).
    n_stations : int
        Number of CRNS stations (default 25).
    spinup_days : int
        Days of forcing (the first ones of the record) run before the start (default 120).
    annual_precip_mm : float
        Domain-mean annual precipitation over the record, mm (default 750; the
        generated fields are scaled to it).
    precip_corr_km : float
        Correlation length L of the latent precipitation field, km: its correlation is
        exp(−r²/(2L²)) (default 10).
    lateral_fraction : float
        Fraction of deep drainage returned as TWI-weighted lateral inflow (default 0.3).
    era5_theta_offset : float
        Shift of wilting point, field capacity and porosity in the ERA5-like run, m3 m-3
        (default +0.04: a wet bias of about that size).
    era5_precip_factor : float
        Precipitation factor of the ERA5-like run (default 1.0).
    s1_noise, smap_noise : float
        Noise SD of the Sentinel-1-like and SMAP-like surface SM, m3 m-3 (0.04, 0.03).
    s1_revisit_days : int
        Days between Sentinel-1-like acquisitions (default 3).
    smap_missing_fraction : float
        Fraction of days without a SMAP-like field (default 0.3).
    n0_range : (float, float)
        Range of the stations' N0, cph (default 900–2500; sets the counting noise).
    kernel_radius : float
        Truncation radius of the stations' horizontal footprint kernel, m (default 500).

    Examples
    --------
    >>> cfg = TwinConfig.quick()
    >>> cfg.fine_shape, cfg.grid().shape, str(cfg.days()[-1])
    ((200, 200), (20, 20), '2019-12-31')
    >>> TwinConfig.from_config(cfg.get_config()) == cfg
    True
    """

    size_km: int = 60
    start: str = "2019-01-01"
    n_days: int = 730
    fine_resolution: float = 100.0
    subpixel: int = 4
    xmin: float = 4_300_000.0
    ymax: float = 3_100_000.0
    n_stations: int = 25
    spinup_days: int = 120
    annual_precip_mm: float = 750.0
    precip_corr_km: float = 10.0
    lateral_fraction: float = 0.3
    era5_theta_offset: float = 0.04
    era5_precip_factor: float = 1.0
    s1_noise: float = 0.04
    s1_revisit_days: int = 3
    smap_noise: float = 0.03
    smap_missing_fraction: float = 0.3
    n0_range: tuple[float, float] = (900.0, 2500.0)
    kernel_radius: float = 500.0

    def __post_init__(self) -> None:
        kf = 1000.0 / self.fine_resolution
        if not (self.fine_resolution > 0 and abs(kf - round(kf)) < 1e-9 and round(kf) >= 2):
            raise ConfigError(f"fine_resolution should divide 1000 m (at least 2 cells per km), "
                              f"got {self.fine_resolution!r}")  # fmt: skip
        if self.size_km < 4:
            raise ConfigError(f"size_km should be >= 4, got {self.size_km!r}")
        if self.n_days < 1 or self.spinup_days < 0:
            raise ConfigError("n_days should be >= 1 and spinup_days >= 0")
        if self.xmin % 1000 or self.ymax % 1000:
            raise ConfigError("xmin and ymax should be multiples of 1000 m (EEA reference grid)")
        if self.n_stations < 0 or self.s1_revisit_days < 1:
            raise ConfigError("n_stations should be >= 0 and s1_revisit_days >= 1")
        if not 0 <= self.smap_missing_fraction < 1:
            raise ConfigError("smap_missing_fraction should be in [0, 1)")
        object.__setattr__(self, "n0_range", tuple(float(v) for v in self.n0_range))
        np.datetime64(self.start, "D")  # raises on a bad date

    @classmethod
    def quick(cls, **overrides: Any) -> TwinConfig:
        """The small configuration behind ``smengine demo --quick``: 20 km × 20 km, one
        year, 100 m fine grid, 60 spin-up days (builds in seconds)."""
        base = {"size_km": 20, "n_days": 365, "spinup_days": 60}
        base.update(overrides)
        return cls(**base)

    def get_config(self) -> dict[str, Any]:
        """JSON-safe configuration (``TwinConfig.from_config`` inverts it)."""
        d = dataclasses.asdict(self)
        d["n0_range"] = list(self.n0_range)
        return d

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TwinConfig:
        """Inverse of :meth:`get_config`."""
        unknown = set(config) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"TwinConfig.from_config: unknown keys {sorted(unknown)}")
        return cls(**{k: tuple(v) if k == "n0_range" else v for k, v in config.items()})

    # derived sizes
    @property
    def kf(self) -> int:
        """Fine cells per km."""
        return round(1000.0 / self.fine_resolution)

    @property
    def fine_shape(self) -> tuple[int, int]:
        n = self.size_km * self.kf
        return (n, n)

    def grid(self) -> Grid:
        """The 1-km output grid (EPSG:3035)."""
        return Grid("EPSG:3035", 1000.0, float(self.xmin), float(self.ymax), self.size_km, self.size_km,
                    self.subpixel, 100)  # fmt: skip

    def days(self) -> np.ndarray:
        """The record's days, datetime64[D]."""
        return np.datetime64(self.start, "D") + np.arange(self.n_days)


def _params_hash(seed: int, cfg: TwinConfig) -> str:
    text = json.dumps({"format": _FORMAT, "seed": int(seed), "config": cfg.get_config()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *stream]))


# ======================================================================================
# random fields and statics
# ======================================================================================
def _grf(shape: tuple[int, int], corr_cells: float, rng: np.random.Generator) -> np.ndarray:
    r"""Unit-variance Gaussian random field with correlation :math:`e^{-r^2/(2L^2)}`.

    White noise on a grid padded by 3L (against FFT wrap-around) is convolved with a
    Gaussian of standard deviation :math:`L/\sqrt2` cells; the variance is normalised
    exactly by Parseval.
    """
    pad = int(np.ceil(3 * corr_cells))
    ny, nx = shape[0] + pad, shape[1] + pad
    w = rng.standard_normal((ny, nx))
    s = corr_cells / np.sqrt(2.0)
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.rfftfreq(nx)[None, :]
    g = np.exp(-2.0 * np.pi**2 * s**2 * (kx**2 + ky**2))
    f = np.fft.irfft2(np.fft.rfft2(w) * g, s=(ny, nx))
    # variance of filtered unit white noise: mean |G|² over the full spectrum
    full = np.exp(-2.0 * np.pi**2 * s**2 * (np.fft.fftfreq(nx)[None, :] ** 2 + ky**2))
    return f[: shape[0], : shape[1]] / np.sqrt(np.mean(full**2))


def _saxton_rawls(sand: np.ndarray, clay: np.ndarray, om: float = 2.5) -> tuple[np.ndarray, ...]:
    """Wilting point θ1500, field capacity θ33, porosity θS (m3 m-3) and Ksat (mm h-1)
    from sand and clay fractions and organic matter (% weight), Saxton & Rawls (2006)."""
    S, C, OM = sand, clay, om
    t1500t = -0.024 * S + 0.487 * C + 0.006 * OM + 0.005 * S * OM - 0.013 * C * OM + 0.068 * S * C + 0.031
    t1500 = t1500t + (0.14 * t1500t - 0.02)
    t33t = -0.251 * S + 0.195 * C + 0.011 * OM + 0.006 * S * OM - 0.027 * C * OM + 0.452 * S * C + 0.299
    t33 = t33t + (1.283 * t33t**2 - 0.374 * t33t - 0.015)
    ts33t = 0.278 * S + 0.034 * C + 0.022 * OM - 0.018 * S * OM - 0.027 * C * OM - 0.584 * S * C + 0.078
    ts33 = ts33t + (0.636 * ts33t - 0.107)
    ts = t33 + ts33 - 0.097 * S + 0.043
    lam = (np.log(t33) - np.log(t1500)) / (np.log(1500.0) - np.log(33.0))
    ksat = 1930.0 * np.maximum(ts - t33, 1e-4) ** (3.0 - lam)
    return t1500, t33, ts, ksat


def _d8_accumulation(elev: np.ndarray) -> np.ndarray:
    """Upslope cell count (including the cell) by D8 steepest descent (Python loop over
    cells from high to low; ties broken by flat index for determinism)."""
    ny, nx = elev.shape
    pad = np.pad(elev, 1, mode="edge")
    best = np.zeros(elev.shape)
    target = np.full(elev.shape, -1, dtype=np.int64)
    rows, cols = np.mgrid[0:ny, 0:nx]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == dx == 0:
                continue
            drop = (elev - pad[1 + dy : 1 + dy + ny, 1 + dx : 1 + dx + nx]) / np.hypot(dy, dx)
            r, c = rows + dy, cols + dx
            inside = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
            better = inside & (drop > best)
            best = np.where(better, drop, best)
            target = np.where(better, r * nx + c, target)
    acc = np.ones(ny * nx)
    tflat = target.ravel()
    order = np.lexsort((np.arange(ny * nx), -elev.ravel()))
    for i in order.tolist():
        j = tflat[i]
        if j >= 0:
            acc[j] += acc[i]
    return acc.reshape(ny, nx)


@dataclass(frozen=True)
class _Statics:
    elevation: np.ndarray  # m
    twi: np.ndarray  # ln(m)
    slope: np.ndarray  # tan β
    sand: np.ndarray
    clay: np.ndarray
    wp: np.ndarray  # m3 m-3
    fc: np.ndarray
    por: np.ndarray
    ksat: np.ndarray  # mm h-1
    rho: np.ndarray  # g cm-3
    lc: np.ndarray  # int codes
    land: np.ndarray  # bool


def _make_statics(seed: int, cfg: TwinConfig) -> _Statics:
    rng = _rng(seed, _S_STATIC)
    shape = cfg.fine_shape
    res = cfg.fine_resolution
    per_km = 1000.0 / res
    ny, nx = shape
    yy, xx = np.mgrid[0:ny, 0:nx] / per_km  # km
    # elevation: smooth hills + a ridge crossing the domain diagonally
    hills = _grf(shape, 4.0 * per_km, rng) * 60.0 + _grf(shape, 1.0 * per_km, rng) * 12.0
    d = (xx - 0.8 * yy - 0.3 * cfg.size_km) / np.sqrt(1.64)
    ridge = 220.0 * np.exp(-0.5 * (d / (0.15 * cfg.size_km)) ** 2)
    elev = 250.0 + hills + ridge
    gy, gx = np.gradient(elev, res)
    slope = np.maximum(np.hypot(gx, gy), 1e-3)
    acc = _d8_accumulation(elev)
    twi = np.log(acc * res / slope)  # a = upslope area per unit contour width, m
    # texture
    sand = np.clip(0.40 + 0.15 * _grf(shape, 3.0 * per_km, rng) + 0.04 * _grf(shape, 0.5 * per_km, rng), 0.05, 0.90)
    clay = 0.20 + 0.07 * _grf(shape, 3.0 * per_km, rng) - 0.25 * (sand - 0.40)
    clay = np.clip(clay, 0.04, np.minimum(0.55, 0.97 - sand))
    wp, fc, por, ksat = _saxton_rawls(sand, clay)
    rho = (1.0 - por) * 2.65
    # land cover
    lc = np.full(shape, 1, dtype=np.uint8)  # cropland
    veg = _grf(shape, 2.0 * per_km, rng)
    lc[veg > 0.3] = 2  # grassland
    lc[(veg > 0.9) | (slope > 0.12) | (elev > np.quantile(elev, 0.85))] = 3  # forest
    lc[_grf(shape, 0.8 * per_km, rng) > 2.1] = 4  # towns
    lakes = _grf(shape, 0.7 * per_km, rng) - 0.004 * (elev - elev.mean()) > 2.4
    lc[lakes] = 5
    land = lc != 5
    return _Statics(elev, twi, slope, sand, clay, wp, fc, por, ksat, rho, lc, land)


# ======================================================================================
# forcing
# ======================================================================================
def _extraterrestrial_mm(doy: float, lat_deg: float) -> float:
    """Extraterrestrial radiation as evaporation equivalent, mm day-1 (FAO-56 Eq. 21 × 0.408)."""
    phi = np.radians(lat_deg)
    dr = 1 + 0.033 * np.cos(2 * np.pi * doy / 365)
    dec = 0.409 * np.sin(2 * np.pi * doy / 365 - 1.39)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(dec), -1, 1))
    ra = 24 * 60 / np.pi * 0.0820 * dr * (ws * np.sin(phi) * np.sin(dec) + np.cos(phi) * np.cos(dec) * np.sin(ws))
    return float(0.408 * ra)


class _Met(NamedTuple):
    tmean: np.ndarray  # °C at the reference elevation, per day
    dtr: np.ndarray  # diurnal range, K
    rh: np.ndarray  # %
    p_anom: np.ndarray  # hPa
    wet: np.ndarray  # domain wet fraction


def _precip_day(seed: int, cfg: TwinConfig, t: int, elev_km: np.ndarray) -> tuple[np.ndarray, float]:
    """Precipitation (mm) on the 1-km grid for record day index t (negative in spin-up
    wraps to the record's first days), and the latent field's coverage."""
    rng = _rng(seed, _S_PRECIP, t)
    doy = (np.datetime64(cfg.start, "D") + t - np.datetime64(cfg.start[:4] + "-01-01", "D")).astype(int) + 1
    season = np.cos(2 * np.pi * (doy - 15) / 365.25)
    p_wet = 0.45 + 0.08 * season
    n = cfg.size_km
    if rng.random() >= p_wet:
        return np.zeros((n, n)), 0.0
    z = _grf((n, n), cfg.precip_corr_km, rng)
    zc = rng.uniform(-1.5, 0.4)
    mean_wet = cfg.annual_precip_mm / 365.25 / 0.45 / 0.62  # mm per wet day over the covered area
    amount = mean_wet * rng.gamma(0.8, 1 / 0.8) * (1.0 - 0.25 * season)  # convective summers
    p = amount * np.exp(0.8 * z - 0.32) * (z > zc)
    p *= 1.0 + 0.4 * (elev_km - elev_km.mean()) / 100.0  # orographic enhancement (+40 % per 100 m)
    return np.maximum(p, 0.0), float((z > zc).mean())


def _met(seed: int, cfg: TwinConfig, wet: np.ndarray) -> _Met:
    rng = _rng(seed, _S_MET)
    days = cfg.days()
    doy = (days - days.astype("datetime64[Y]")).astype(int) + 1
    n = days.size
    anom = np.empty(n)
    pa = np.empty(n)
    a = b = 0.0
    e1, e2 = rng.standard_normal(n), rng.standard_normal(n)
    for i in range(n):
        a = 0.75 * a + np.sqrt(1 - 0.75**2) * 2.5 * e1[i]
        b = 0.7 * b + np.sqrt(1 - 0.7**2) * 6.0 * e2[i]
        anom[i], pa[i] = a, b
    tmean = 9.5 - 9.0 * np.cos(2 * np.pi * (doy - 20) / 365.25) + anom - 1.5 * wet
    dtr = 10.0 + 2.0 * np.sin(2 * np.pi * (doy - 100) / 365.25) - 4.0 * wet
    rh = np.clip(72.0 + 8.0 * np.cos(2 * np.pi * (doy - 15) / 365.25) + 15.0 * wet + 4 * rng.standard_normal(n), 35, 99)
    return _Met(tmean, dtr, rh, pa - 4.0 * wet, wet)


# ======================================================================================
# the bucket model
# ======================================================================================
@dataclass
class _Bucket:
    """Vectorised multi-layer bucket on n cells (storage in mm, float64)."""

    dz: np.ndarray  # (L,) mm
    wp: np.ndarray  # (L, n) mm
    fc: np.ndarray
    sat: np.ndarray
    kd: np.ndarray  # (L, n) fraction of the excess above fc drained per day
    root: np.ndarray  # (L, n) root (ET) fractions, columns sum to 1
    kc: np.ndarray  # (n,) crop coefficient
    imperv: np.ndarray  # (n,)
    lateral_w: np.ndarray  # (n,) lateral-inflow weights, mean 1 over land
    land: np.ndarray  # (n,) bool
    lateral_fraction: float

    def step(self, S: np.ndarray, P: np.ndarray, pet: np.ndarray) -> dict[str, np.ndarray]:
        """Advance storage S (L, n) by one day in place; return the day's fluxes (mm).

        Per cell: ΔS = P − ET − drainage − runoff + lateral, exactly (up to round-off).
        """
        nl = self.dz.size
        runoff = P * self.imperv
        water = P - runoff
        for k in range(nl):  # infiltration, top-down filling
            add = np.minimum(water, self.sat[k] - S[k])
            S[k] += add
            water = water - add
        runoff = runoff + water  # saturation excess
        deep = np.zeros_like(P)
        for k in range(nl):  # gravity drainage above field capacity
            d = self.kd[k] * np.maximum(S[k] - self.fc[k], 0.0)
            S[k] -= d
            if k < nl - 1:
                S[k + 1] += d
                over = np.maximum(S[k + 1] - self.sat[k + 1], 0.0)
                S[k + 1] -= over
                S[k] += over
            else:
                deep = d
        # lateral inflow: a fraction of the domain's deep drainage re-emerges in wet hollows
        mean_deep = float(deep[self.land].mean()) if self.land.any() else 0.0
        lateral = np.where(self.land, self.lateral_fraction * mean_deep * self.lateral_w, 0.0)
        water = lateral.copy()
        for k in range(nl - 1, -1, -1):  # fills from the bottom up
            add = np.minimum(water, self.sat[k] - S[k])
            S[k] += add
            water = water - add
        runoff = runoff + water  # exfiltration
        # evapotranspiration: root-weighted demand limited by stress and available water
        avail = np.maximum(S - self.wp, 0.0)
        beta = np.clip(avail / (0.5 * (self.fc - self.wp)), 0.0, 1.0)
        et_k = np.minimum((pet * self.kc)[None, :] * self.root * beta, avail)
        S -= et_k
        return {"precipitation": P, "et": et_k.sum(axis=0), "drainage": deep, "runoff": runoff,
                "lateral": lateral, "beta": (beta * self.root).sum(axis=0)}  # fmt: skip


def _fine_bucket(st: _Statics, cfg: TwinConfig) -> _Bucket:
    dz = (np.asarray(LAYER_BOTTOMS) - np.asarray(LAYER_TOPS)) * 10.0  # mm
    mid = 0.5 * (np.asarray(LAYER_TOPS) + np.asarray(LAYER_BOTTOMS))
    lc = st.lc.ravel().astype(int)
    root = np.exp(-mid[:, None] / _ROOT_D[lc][None, :]) * (dz / 10.0)[:, None]
    root /= root.sum(axis=0, keepdims=True)
    ksat_day = st.ksat.ravel() * 24.0
    kd_top = np.clip(ksat_day / (ksat_day + 150.0), 0.05, 0.95)
    kd = np.repeat(kd_top[None, :], dz.size, axis=0)
    twi = st.twi.ravel()
    land = st.land.ravel()
    med = np.median(twi[land]) if land.any() else 0.0
    kd[-1] *= np.clip(np.exp(-0.35 * (twi - med)), 0.15, 1.5)  # wet hollows drain slowly
    w = np.exp(0.8 * np.clip(twi - med, -3, 3))
    w = np.where(land, w / (w[land].mean() if land.any() else 1.0), 0.0)
    return _Bucket(dz, st.wp.ravel()[None, :] * dz[:, None], st.fc.ravel()[None, :] * dz[:, None],
                   st.por.ravel()[None, :] * dz[:, None],
                   kd, root, _KC[lc], _IMPERV[lc], w, land, cfg.lateral_fraction)  # fmt: skip


class FineDay(NamedTuple):
    """One day of the fine-grid truth (from :func:`simulate_fine`)."""

    date: np.datetime64
    """The UTC day."""
    theta: np.ndarray
    """Layer soil moisture at the end of the day, (n_layers, ny, nx), m3 m-3 (NaN on water)."""
    storage: np.ndarray
    """Layer storage at the end of the day, (n_layers, ny, nx), mm."""
    fluxes: dict[str, np.ndarray]
    """precipitation, et, drainage, runoff, lateral (mm day-1) and beta (root-zone stress,
    1 = unstressed), each (ny, nx)."""
    pet: np.ndarray
    """Potential evaporation, (ny, nx), mm day-1."""


class _Sim:
    """Everything :func:`simulate_fine` needs, prepared once."""

    def __init__(self, seed: int, cfg: TwinConfig) -> None:
        self.seed, self.cfg = seed, cfg
        self.st = _make_statics(seed, cfg)
        kf = cfg.kf
        n = cfg.size_km
        self.elev_km = self.st.elevation.reshape(n, kf, n, kf).mean(axis=(1, 3))
        grid = cfg.grid()
        x, y = grid.xy(n / 2, n / 2)
        lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(x, y)
        self.lat = float(lat)
        self.lon = float(lon)
        self.bucket = _fine_bucket(self.st, cfg)
        # forcing of the record (precipitation on 1 km; spin-up reuses the first days)
        self.precip = np.empty((cfg.n_days, n, n))
        wet = np.empty(cfg.n_days)
        for t in range(cfg.n_days):
            self.precip[t], wet[t] = _precip_day(seed, cfg, t, self.elev_km)
        total = self.precip.mean(axis=(1, 2)).sum() * 365.25 / cfg.n_days
        if total > 0:  # hit the configured domain-mean annual precipitation exactly
            self.precip *= cfg.annual_precip_mm / total
        self.met = _met(seed, cfg, wet)
        days = cfg.days()
        self.doy = (days - days.astype("datetime64[Y]")).astype(int) + 1
        self.elev_ref = float(self.st.elevation.mean())

    def tair(self, t: int) -> np.ndarray:
        """Daily mean air temperature on the fine grid, °C (lapse rate 6.5 K km-1)."""
        return self.met.tmean[t] - 6.5e-3 * (self.st.elevation - self.elev_ref)

    def pet(self, t: int) -> np.ndarray:
        """Hargreaves PET, mm day-1, on the fine grid."""
        ra = _extraterrestrial_mm(self.doy[t], self.lat)
        return np.maximum(0.0023 * ra * (self.tair(t) + 17.8) * np.sqrt(self.met.dtr[t]), 0.0)

    def fine_precip(self, t: int) -> np.ndarray:
        kf = self.cfg.kf
        return np.repeat(np.repeat(self.precip[t], kf, axis=0), kf, axis=1)

    def initial_storage(self) -> np.ndarray:
        b = self.bucket
        return b.wp + 0.7 * (b.fc - b.wp)

    def run(self, S: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray, dict[str, np.ndarray], np.ndarray]]:
        cfg = self.cfg
        if S is None:
            S = self.initial_storage()
            for t in range(cfg.spinup_days):
                tt = t % cfg.n_days
                self.bucket.step(S, self.fine_precip(tt).ravel(), self.pet(tt).ravel())
        for t in range(cfg.n_days):
            pet = self.pet(t)
            fl = self.bucket.step(S, self.fine_precip(t).ravel(), pet.ravel())
            yield t, S, fl, pet


def simulate_fine(seed: int = 0, config: TwinConfig | None = None, **overrides: Any) -> Iterator[FineDay]:
    """Run the fine-grid water balance and yield the truth day by day.

    Deterministic: the same seed and configuration give the same days as the ones behind
    the files :func:`make_world` writes.

    Parameters
    ----------
    seed : int
    config : TwinConfig, optional
        Default ``TwinConfig(**overrides)``.

    Yields
    ------
    FineDay
        Layer θ (m3 m-3, NaN on water), storage (mm) and the day's fluxes (mm).
    """
    cfg = config if config is not None else TwinConfig(**overrides)
    sim = _Sim(seed, cfg)
    ny, nx = cfg.fine_shape
    nl = len(LAYER_TOPS)
    land = sim.st.land
    dz = sim.bucket.dz
    for t, S, fl, pet in sim.run():
        stor = S.reshape(nl, ny, nx).copy()
        theta = np.where(land, stor / dz[:, None, None], np.nan)
        yield FineDay(cfg.days()[t], theta, stor, {k: v.reshape(ny, nx).copy() for k, v in fl.items()}, pet)


# ======================================================================================
# CRNS physics on the fine grid
# ======================================================================================
def _theta_eq_cells(theta: np.ndarray, rho: np.ndarray, start: np.ndarray, tol: float = 1e-9,
                    max_iter: int = 60) -> np.ndarray:  # fmt: skip
    """Per-cell CRNS-equivalent θ (r = 0), warm-started fixed point; theta (L, n).

    Same maths as :func:`smengine.footprint.equivalent_soil_moisture` (D86 from
    :func:`~smengine.footprint.penetration_depth`, layer weights e^(-2 top/D) − e^(-2 bottom/D)
    as in :func:`~smengine.footprint.layer_weights`), with the exponentials evaluated once
    per layer edge and a warm start from the previous day.
    """
    edges = np.asarray((*LAYER_TOPS, LAYER_BOTTOMS[-1]), dtype=np.float64)[:, None]
    cur = start.copy()
    for _ in range(max_iter):
        d86 = fp.penetration_depth(0.0, rho, cur)
        e = np.exp(-2.0 * edges / d86)
        w = e[:-1] - e[1:]
        new = (w * theta).sum(axis=0) / w.sum(axis=0)
        delta = float(np.max(np.abs(new - cur), initial=0.0))
        cur = new
        if delta < tol:
            break
    return cur


@functools.lru_cache(maxsize=4096)
def _kernel(cell: float, humidity: float, theta: float, pressure: float, veg_height: float,
            radius: float) -> np.ndarray:  # fmt: skip
    k = fp.footprint_kernel(cell, humidity, theta, pressure=pressure, veg_height=veg_height, max_radius=radius)
    k.setflags(write=False)
    return k


def station_theta(
    theta_layers: np.ndarray,
    bulk_density: np.ndarray,
    land: np.ndarray,
    cell_size: float,
    humidity: float | np.ndarray,
    pressure: float | np.ndarray,
    veg_height: float | np.ndarray,
    kernel_radius: float = 500.0,
    *,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> float | np.ndarray:
    r"""What a CRNS at the centre of a fine-grid window sees: footprint-weighted θ, m3 m-3.

    Horizontal weights are :func:`smengine.footprint.footprint_kernel` at
    (humidity rounded to 2 g m-3, θ rounded to 0.02 and clipped to [0.02, 0.5], pressure,
    vegetation height),
    truncated at ``kernel_radius``; vertical weights are the layer integrals of W_d
    (:func:`~smengine.footprint.layer_weights`) with D86 of each cell from
    :func:`~smengine.footprint.penetration_depth` at its rescaled distance
    r* = r / (F_p F_veg(θ)) (:func:`~smengine.footprint.rescale_distance`), its bulk
    density and the field θ. θ is the fixed point, in two passes: the kernel of pass one
    follows the plain mean of the window's land-cell θ_eq (r = 0), that of pass two the
    result of pass one. Water cells (``land`` False) are left out and the weights
    renormalised.

    Parameters
    ----------
    theta_layers : ndarray, shape ([n_stations,] n_layers, 2m + 1, 2m + 1)
        Layer θ of the window centred on the sensor's cell (layers :data:`LAYER_TOPS` …
        :data:`LAYER_BOTTOMS`), m3 m-3. A leading station axis evaluates many at once.
    bulk_density : ndarray, shape ([n_stations,] 2m + 1, 2m + 1)
        Dry bulk density, g cm-3.
    land : ndarray of bool, shape ([n_stations,] 2m + 1, 2m + 1)
    cell_size : float
        Fine cell size, m.
    humidity : float or ndarray (n_stations,)
        Absolute air humidity of the day, g m-3.
    pressure : float or ndarray (n_stations,)
        Air pressure used for the footprint, hPa.
    veg_height : float or ndarray (n_stations,)
        Vegetation height, m.
    kernel_radius : float
        Kernel truncation radius, m; the window must be at least as large as the kernel.
    tol : float
        Convergence tolerance of each pass, m3 m-3.

    Returns
    -------
    float or ndarray (n_stations,)
        θ_CRNS, m3 m-3.

    References
    ----------
    Schrön et al. (2017), HESS 21, 5009–5030 (iterative weighting); Köhli et al. (2015).
    """
    single = np.ndim(theta_layers) == 3
    th_all = np.asarray(theta_layers, dtype=np.float64)
    rho_all = np.asarray(bulk_density, dtype=np.float64)
    land_all = np.asarray(land, dtype=bool)
    if single:
        th_all, rho_all, land_all = th_all[None], rho_all[None], land_all[None]
    ns, nl, h, w = th_all.shape
    hum = np.broadcast_to(np.asarray(humidity, dtype=np.float64), (ns,))
    pres = np.broadcast_to(np.asarray(pressure, dtype=np.float64), (ns,))
    veg = np.broadcast_to(np.asarray(veg_height, dtype=np.float64), (ns,))
    c = h // 2
    rows, cols = np.mgrid[0:h, 0:w]
    r = np.hypot(rows - c, cols - c) * cell_size
    # first guess: plain mean of the land cells' θ_eq at r = 0
    eq = _theta_eq_cells(th_all.transpose(1, 0, 2, 3).reshape(nl, -1), rho_all.reshape(-1),
                         np.full(rho_all.size, 0.2), tol=tol)  # fmt: skip
    eq = np.where(land_all.reshape(-1), eq, 0.0).reshape(ns, h * w)
    prev = eq.sum(axis=1) / land_all.reshape(ns, -1).sum(axis=1)
    th_filled = np.where(land_all[:, None], th_all, 0.1)
    for _ in range(2):  # two passes: the kernel follows the first guess, then the pass-one θ
        ks = [_kernel(float(cell_size), float(2.0 * np.round(hum[i] / 2.0)), float(np.clip(np.round(prev[i] / 0.02) * 0.02, 0.02, 0.5)),
                      float(pres[i]), float(veg[i]), float(kernel_radius)) for i in range(ns)]  # fmt: skip
        n = ks[0].shape[0] // 2 if ns else 0
        if n > c:
            raise ConfigError(f"window {h}x{w} smaller than the kernel ({2 * n + 1} cells)")
        sl = slice(c - n, c + n + 1)
        kk = np.where(land_all[:, sl, sl], np.stack(ks) if ns else np.zeros((0, 1, 1)), 0.0)
        rr, rho, th = r[sl, sl][None], rho_all[:, sl, sl], th_filled[:, :, sl, sl]
        ksum = kk.sum(axis=(1, 2))
        cur = prev.copy()
        active = np.ones(ns, bool)
        for _ in range(max_iter):
            cb = cur[:, None, None]
            rstar = fp.rescale_distance(rr, pres[:, None, None], veg[:, None, None], cb)
            d86 = fp.penetration_depth(rstar, rho, cb)
            lw = fp.layer_weights(LAYER_TOPS, LAYER_BOTTOMS, d86)  # (L, ns, k, k)
            prof = (lw * th.transpose(1, 0, 2, 3)).sum(axis=0) / lw.sum(axis=0)
            new = (kk * prof).sum(axis=(1, 2)) / ksum
            new = np.where(active, new, cur)  # converged stations keep their value
            active &= np.abs(new - cur) >= tol
            cur = new
            if not active.any():
                break
        prev = cur
    return float(prev[0]) if single else prev


# ======================================================================================
# writers
# ======================================================================================
def _write_tif(path: Path, data: np.ndarray, transform: Any, crs: str, units: str, name: str,
               tags: dict[str, str] | None = None, dtype: str = "float32", nodata: float | None = None) -> None:  # fmt: skip
    import rasterio

    with atomic_target(path) as tmp, rasterio.open(
        tmp, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1, dtype=dtype,
        crs=crs, transform=transform, nodata=np.nan if (nodata is None and dtype.startswith("float")) else nodata,
        compress="deflate",
    ) as dst:  # fmt: skip
        dst.write(data.astype(dtype), 1)
        dst.set_band_description(1, name)
        dst.update_tags(1, units=units)
        dst.update_tags(units=units, **(tags or {}))
        dst.units = (units,)


def _cf_grid_mapping(crs: str) -> dict[str, Any]:
    attrs = CRS.from_user_input(crs).to_cf()
    attrs["spatial_ref"] = attrs.get("crs_wkt", "")
    return attrs


def _write_projected_nc(path: Path, var: str, data: np.ndarray, days: np.ndarray, x: np.ndarray, y: np.ndarray,
                        crs: str, attrs: dict[str, Any], global_attrs: dict[str, Any]) -> None:  # fmt: skip
    import xarray as xr

    da = xr.DataArray(data.astype(np.float32), dims=("time", "y", "x"),
                      coords={"time": days.astype("datetime64[ns]"), "y": y, "x": x},
                      attrs={**attrs, "grid_mapping": "crs"})  # fmt: skip
    ds = xr.Dataset({var: da, "crs": xr.DataArray(np.int32(0), attrs=_cf_grid_mapping(crs))}, attrs=global_attrs)
    ds["x"].attrs = {"standard_name": "projection_x_coordinate", "units": "m"}
    ds["y"].attrs = {"standard_name": "projection_y_coordinate", "units": "m"}
    enc = {var: {"zlib": True, "complevel": 4, "_FillValue": np.float32(np.nan)},
           "time": {"units": "days since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "i4"}}  # fmt: skip
    with atomic_target(path) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding=enc)


def _grid_xy(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    x, _ = grid.xy(0, np.arange(grid.width))
    _, y = grid.xy(np.arange(grid.height), 0)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


# ======================================================================================
# the world
# ======================================================================================
@dataclass(frozen=True)
class TwinWorld:
    """A built twin world: where its files are and what it is.

    Attributes
    ----------
    root : Path
        The output folder.
    seed : int
    config : TwinConfig
    grid : Grid
        The 1-km EPSG:3035 grid (with ``config.subpixel`` sub-pixels) of the truth.
    days : ndarray of datetime64[D]
        The record.
    paths : dict
        ``static`` (name → GeoTIFF), ``s1`` (daily GeoTIFFs), ``smap``, ``ndvi``, ``lst``,
        ``precipitation``, ``era5``, ``truth`` (NetCDF), ``crns`` (rev1 folder),
        ``station_truth``, ``stations``, ``manifest``.
    stations : pandas.DataFrame
        One row per station: id, x, y (EPSG:3035), lon, lat, fine row/col, elevation,
        land_cover, bulk_density, porosity, lattice_water, soc, n0, pressure, veg_height.
    build_seconds : float
        Wall time of the build (0 when it came from the cache).
    """

    root: Path
    seed: int
    config: TwinConfig
    grid: Grid
    days: np.ndarray
    paths: dict[str, Any]
    stations: pd.DataFrame
    build_seconds: float = 0.0
    from_cache: bool = False

    @property
    def period(self) -> tuple[np.datetime64, np.datetime64]:
        """(first, last) day."""
        return (self.days[0], self.days[-1])

    def truth(self) -> Any:
        """True 1-km θ_eq as an ``xarray.DataArray`` (time, y, x), m3 m-3 (loaded)."""
        import xarray as xr

        with xr.open_dataset(self.paths["truth"], engine="netcdf4") as ds:
            return ds["theta_eq"].load()

    def station_truth(self) -> pd.DataFrame:
        """Noise-free footprint-weighted θ per station-day (``theta``), with the day's
        humidity and pressure and the noise-free rev1 daily value (``sm_noisefree``)."""
        return pd.read_csv(self.paths["station_truth"], parse_dates=["date"])

    def read_stations(self) -> Any:
        """The stations as a :class:`~smengine.stations.StationSet` (rev1 reader)."""
        from smengine.stations import read_cosmos_europe

        return read_cosmos_europe(self.paths["crns"])

    def sources(self, *, era5: bool = False) -> list[Any]:
        """:class:`~smengine.ingest.SourceSpec` list for :func:`smengine.ingest.ingest`.

        Parameters
        ----------
        era5 : bool
            Include the ERA5-Land-like swvl1–3 (leave them out for the pseudoproxy).
        """
        from smengine.ingest import SourceSpec

        st = self.paths["static"]
        out = [SourceSpec(st[n], name=n) for n in ("elevation", "twi", "sand", "clay", "porosity")]
        out.append(SourceSpec(st["land_cover"], name="land_cover", method="nearest"))
        out.append(SourceSpec(list(self.paths["s1"]), name="s1_sm"))
        out.append(SourceSpec(self.paths["smap"], variable="soil_moisture", name="smap_sm", storage="coarse"))
        out.append(SourceSpec(self.paths["ndvi"], variable="ndvi", name="ndvi"))
        out.append(SourceSpec(self.paths["lst"], variable="lst", name="lst"))
        out.append(SourceSpec(self.paths["precipitation"], variable="precipitation", name="precipitation"))
        if era5:
            out += [SourceSpec(self.paths["era5"], variable=f"swvl{k}", name=f"era5_swvl{k}", storage="coarse")
                    for k in (1, 2, 3)]  # fmt: skip
        return out

    def run_config(self) -> str:
        """A run configuration (TOML, :mod:`smengine.config`) for the world's raw files, with
        paths relative to :attr:`root`: what a user would write for their own data. The
        features are those of ``smengine demo`` (the gappy LST left out)."""
        from smengine.demo import DEMO_SPEC

        g = self.grid

        def rel(p: Any) -> str:
            return Path(p).relative_to(self.root).as_posix()

        def arr(v: Any) -> str:
            return "[" + ", ".join(json.dumps(x) for x in v) + "]"

        st = self.paths["static"]
        lines = ["# smengine run configuration for the twin world's raw files (smengine twin); see smengine.config", "",
                 "[domain]", f"bounds = {arr([int(round(b)) for b in g.bounds])}", f'crs = "{g.crs}"',
                 f"resolution = {g.resolution:g}", f"subpixel = {g.subpixel}", f"tile_size = {g.tile_size}", "",
                 "[period]", f'start = "{self.days[0]}"', f'end = "{self.days[-1]}"', ""]  # fmt: skip
        for n in ("elevation", "twi", "sand", "clay", "porosity", "land_cover"):
            lines += ["[[sources]]", f'name = "{n}"', f'path = "{rel(st[n])}"']
            lines += ['method = "nearest"', ""] if n == "land_cover" else [""]
        s1 = Path(self.paths["s1"][0])
        lines += ["[[sources]]", 'name = "s1_sm"', f'path = "{rel(s1.parent)}/s1_sm_*.tif"', ""]
        lines += ["[[sources]]", 'name = "smap_sm"', f'path = "{rel(self.paths["smap"])}"', 'variable = "soil_moisture"',
                  'storage = "coarse"', ""]  # fmt: skip
        for n in ("ndvi", "lst", "precipitation"):
            lines += ["[[sources]]", f'name = "{n}"', f'path = "{rel(self.paths[n])}"', f'variable = "{n}"', ""]
        lines += ["[stations]", 'format = "cosmos-europe"', f'path = "{rel(self.paths["crns"])}"', "min_hours = 18",
                  "kernel_quantum = [2.0, 0.02, 5.0]", "", "[features]"]  # fmt: skip
        for k in ("static", "dynamic", "swi_of", "swi_T"):
            lines.append(f"{k} = {arr(DEMO_SPEC[k])}")
        lines += ["", "[model]", "trees = 100", 'cv = ["site"]', "search = false", "seed = 0", "",
                  "[output]", 'dir = "run"', ""]  # fmt: skip
        return "\n".join(lines)

    def fine_state(self, day: Any) -> FineDay:
        """The fine-grid truth of one day (re-simulated deterministically up to it)."""
        d = np.datetime64(day, "D")
        for fd in simulate_fine(self.seed, self.config):
            if fd.date == d:
                return fd
        raise ConfigError(f"day {d} not in the record {self.period}")

    def statics(self) -> dict[str, np.ndarray]:
        """The fine-grid static fields (elevation, twi, sand, clay, wilting_point,
        field_capacity, porosity, bulk_density, land_cover, land), recomputed."""
        s = _make_statics(self.seed, self.config)
        return {"elevation": s.elevation, "twi": s.twi, "sand": s.sand, "clay": s.clay, "wilting_point": s.wp,
                "field_capacity": s.fc, "porosity": s.por, "bulk_density": s.rho, "land_cover": s.lc,
                "land": s.land}  # fmt: skip


def _paths(root: Path, cfg: TwinConfig, s1_days: list[np.datetime64]) -> dict[str, Any]:
    st = {n: root / "static" / f"{n}.tif" for n in ("elevation", "twi", "sand", "clay", "porosity", "land_cover")}
    return {
        "static": st,
        "s1": tuple(root / "s1" / f"s1_sm_{str(d).replace('-', '')}.tif" for d in s1_days),
        "smap": root / "smap" / "smap_l3_like.nc",
        "ndvi": root / "modis" / "ndvi.nc",
        "lst": root / "modis" / "lst.nc",
        "precipitation": root / "forcing" / "precipitation.nc",
        "era5": root / "era5" / "era5_land_like.nc",
        "truth": root / "truth" / "theta_eq.nc",
        "crns": root / "crns" / "COSMOS_Europe_Data_rev1",
        "station_truth": root / "crns" / "station_truth.csv",
        "stations": root / "stations.csv",
        "manifest": root / "manifest.json",
    }


def _s1_days(cfg: TwinConfig) -> list[np.datetime64]:
    return [d for i, d in enumerate(cfg.days()) if i % cfg.s1_revisit_days == 0]


def _files_of(paths: dict[str, Any]) -> list[Path]:
    out: list[Path] = []
    for k, v in paths.items():
        if k in ("manifest", "crns"):
            continue
        if isinstance(v, dict):
            out += list(v.values())
        elif isinstance(v, tuple):
            out += list(v)
        else:
            out.append(v)
    return out


def _from_manifest(root: Path, want_hash: str) -> TwinWorld | None:
    mpath = root / "manifest.json"
    if not mpath.is_file():
        return None
    try:
        m = json.loads(mpath.read_text())
    except (OSError, ValueError):
        return None
    if m.get("format") != _FORMAT or m.get("params_hash") != want_hash:
        return None
    for rel, size in m.get("files", {}).items():
        p = root / rel
        if not p.is_file() or p.stat().st_size != size:
            log.info("twin cache %s: %s missing or changed; rebuilding", root, rel)
            return None
    cfg = TwinConfig.from_config(m["config"])
    paths = _paths(root, cfg, _s1_days(cfg))
    stations = pd.read_csv(paths["stations"], dtype={"id": str})
    return TwinWorld(root, int(m["seed"]), cfg, cfg.grid(), cfg.days(), paths, stations, 0.0, True)


def make_world(
    seed: int = 0,
    out_dir: str | Path = "twin",
    config: TwinConfig | None = None,
    *,
    quick: bool = False,
    overwrite: bool = False,
    **overrides: Any,
) -> TwinWorld:
    """Build (or reuse) a twin world in ``out_dir``.

    Parameters
    ----------
    seed : int
        Seed of every random draw; the same seed and parameters give the same files.
    out_dir : path
        Output folder. If it holds a complete world with the same parameters (its
        ``manifest.json`` hash matches and every listed file is present with its size),
        that world is returned without writing anything.
    config : TwinConfig, optional
        Parameters (default ``TwinConfig.quick(**overrides)`` with ``quick=True``, else
        ``TwinConfig(**overrides)``).
    quick : bool
        Use the quick configuration (20 km, 1 year).
    overwrite : bool
        Rebuild even if a matching world exists.
    **overrides
        Fields of :class:`TwinConfig` when ``config`` is not given.

    Returns
    -------
    TwinWorld

    Examples
    --------
    >>> w = make_world(0, "twin-quick", quick=True)             # doctest: +SKIP
    >>> w.truth().sel(time="2019-06-01").mean().item()          # doctest: +SKIP
    """
    if config is None:
        config = TwinConfig.quick(**overrides) if quick else TwinConfig(**overrides)
    elif overrides:
        config = dataclasses.replace(config, **overrides)
    root = Path(out_dir)
    h = _params_hash(seed, config)
    if not overwrite:
        hit = _from_manifest(root, h)
        if hit is not None:
            log.info("twin world %s: cache hit (%s)", root, h[:12])
            return hit
    t0 = _time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").unlink(missing_ok=True)  # incomplete until the manifest is back
    world = _build(seed, config, root)
    files = {str(p.relative_to(root)): p.stat().st_size for p in _files_of(world.paths)}
    files.update({str(p.relative_to(root)): p.stat().st_size
                  for p in sorted(Path(world.paths["crns"]).rglob("*.csv"))})  # fmt: skip
    secs = _time.perf_counter() - t0
    manifest = {"format": _FORMAT, "params_hash": h, "seed": int(seed), "config": config.get_config(),
                "grid": world.grid.get_config(), "period": [str(world.days[0]), str(world.days[-1])],
                "files": dict(sorted(files.items()))}  # fmt: skip
    atomic_write(root / "manifest.json", json.dumps(manifest, indent=1).encode())
    log.info("twin world %s built in %.1f s", root, secs)
    return dataclasses.replace(world, build_seconds=secs)


# ------------------------------------------------------------------------------------
def _place_stations(seed: int, cfg: TwinConfig, st: _Statics, n_win: int) -> pd.DataFrame:
    rng = _rng(seed, _S_STATION)
    nx = cfg.fine_shape[1]
    land = st.land
    # no water in the window, not at the edge, land cover not urban; >= 2 km apart
    from scipy.ndimage import maximum_filter

    water_near = maximum_filter((~land).astype(np.uint8), size=2 * n_win + 1, mode="nearest") > 0
    ok = land & ~water_near & (st.lc != 4)
    ok[:n_win + 1] = ok[-n_win - 1:] = False
    ok[:, :n_win + 1] = ok[:, -n_win - 1:] = False
    cand = np.flatnonzero(ok.ravel())
    rng.shuffle(cand)
    chosen: list[int] = []
    min_d = 2000.0 / cfg.fine_resolution
    for c in cand:
        r, q = divmod(int(c), nx)
        if all(np.hypot(r - r2, q - q2) >= min_d for r2, q2 in (divmod(i, nx) for i in chosen)):
            chosen.append(int(c))
        if len(chosen) == cfg.n_stations:
            break
    if len(chosen) < cfg.n_stations:
        log.warning("twin: room for only %d of %d stations", len(chosen), cfg.n_stations)
    rows = np.array([c // nx for c in chosen], dtype=np.int64)
    cols = np.array([c % nx for c in chosen], dtype=np.int64)
    res = cfg.fine_resolution
    x = cfg.xmin + (cols + 0.5) * res
    y = cfg.ymax - (rows + 0.5) * res
    lon, lat = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True).transform(x, y)
    elev = st.elevation[rows, cols]
    lc = st.lc[rows, cols].astype(int)
    # site physics: mean over the cells within 200 m (what a calibration campaign would find)
    rho, por, clay = [], [], []
    k = round(200.0 / res)
    for r, c in zip(rows, cols):
        sl = (slice(r - k, r + k + 1), slice(c - k, c + k + 1))
        rho.append(float(st.rho[sl].mean()))
        por.append(float(st.por[sl].mean()))
        clay.append(float(st.clay[sl].mean()))
    n = len(chosen)
    n0 = rng.uniform(*cfg.n0_range, size=n)
    return pd.DataFrame({
        "id": [f"TWC{i + 1:03d}" for i in range(n)], "x": x, "y": y, "lon": np.asarray(lon), "lat": np.asarray(lat),
        "row": rows, "col": cols, "elevation": elev, "land_cover": [LAND_COVER[v] for v in lc],
        "bulk_density": np.round(rho, 4), "porosity": np.round(por, 4),
        "lattice_water": np.round(0.01 + 0.06 * np.asarray(clay), 4),
        "soc": np.where(lc == 3, 0.04, 0.015), "n0": np.round(n0, 1),
        # site mean pressure (barometric formula), to 5 hPa: stations share footprint kernels
        "pressure": np.round(1013.25 * (1.0 - 2.25577e-5 * elev) ** 5.25588 / 5.0) * 5.0,
        "veg_height": _VEG_H[lc],
    })  # fmt: skip


def _build(seed: int, cfg: TwinConfig, root: Path) -> TwinWorld:
    import rasterio.transform

    t_start = _time.perf_counter()
    grid = cfg.grid()
    days = cfg.days()
    paths = _paths(root, cfg, _s1_days(cfg))
    sim = _Sim(seed, cfg)
    st = sim.st
    ny, nx = cfg.fine_shape
    n, kf, nl, nd = cfg.size_km, cfg.kf, len(LAYER_TOPS), cfg.n_days
    res = cfg.fine_resolution
    fine_tr = rasterio.transform.from_origin(cfg.xmin, cfg.ymax, res, res)
    land = st.land
    land_flat = land.ravel()
    land_frac = land.reshape(n, kf, n, kf).mean(axis=(1, 3))
    log.info("twin: statics and forcing ready (%.1f s)", _time.perf_counter() - t_start)

    # ---- statics
    for name, arr, units in (("elevation", st.elevation, "m"), ("twi", st.twi, "1"), ("sand", st.sand, "1"),
                             ("clay", st.clay, "1"), ("porosity", st.por, "m3 m-3")):  # fmt: skip
        _write_tif(paths["static"][name], arr, fine_tr, "EPSG:3035", units, name)
    _write_tif(paths["static"]["land_cover"], st.lc, fine_tr, "EPSG:3035", "1", "land_cover",
               tags={"classes": json.dumps(LAND_COVER)}, dtype="uint8", nodata=255)  # fmt: skip

    # ---- stations
    n_win = int(np.ceil(cfg.kernel_radius / res - 0.5))
    stations = _place_stations(seed, cfg, st, n_win)
    ns = len(stations)
    windows = [(slice(r - n_win, r + n_win + 1), slice(c - n_win, c + n_win + 1))
               for r, c in zip(stations["row"], stations["col"])]  # fmt: skip
    hum_day = nt.absolute_humidity(sim.met.rh, sim.met.tmean)
    win_rho = np.stack([st.rho[wr, wc] for wr, wc in windows]) if ns else None
    win_land = np.stack([land[wr, wc] for wr, wc in windows]) if ns else None
    p_st = stations["pressure"].to_numpy()
    veg_st = stations["veg_height"].to_numpy()

    # ---- SMAP-like EASE2 cells and ERA5-like 0.1° cells of each fine cell
    fx = cfg.xmin + (np.arange(nx) + 0.5) * res
    fy = cfg.ymax - (np.arange(ny) + 0.5) * res
    FX, FY = np.meshgrid(fx, fy)
    ex, ey = Transformer.from_crs("EPSG:3035", "EPSG:6933", always_xy=True).transform(FX, FY)
    ecol = np.floor((np.asarray(ex) - _EASE_X0) / _EASE_RES).astype(np.int64)
    erow = np.floor((_EASE_Y1 - np.asarray(ey)) / _EASE_RES).astype(np.int64)
    er0, ec0 = int(erow.min()), int(ecol.min())
    e_shape = (int(erow.max()) - er0 + 1, int(ecol.max()) - ec0 + 1)
    e_idx = ((erow - er0) * e_shape[1] + (ecol - ec0)).ravel()
    e_count = np.bincount(e_idx[land_flat], minlength=e_shape[0] * e_shape[1])
    e_valid = e_count >= 0.5 * kf * kf * 81 * 0.1  # at least ~10 % of the 9 km cell covered by land here
    lon, lat = Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True).transform(FX, FY)
    lon, lat = np.asarray(lon), np.asarray(lat)
    la_top = np.ceil(lat.max() * 10 - 1e-9) / 10 + 0.1
    lo_left = np.floor(lon.min() * 10 + 1e-9) / 10 - 0.1
    lats = np.round(np.arange(la_top, np.floor(lat.min() * 10) / 10 - 0.1 - 1e-9, -0.1), 1)
    lons = np.round(np.arange(lo_left, np.ceil(lon.max() * 10) / 10 + 0.1 + 1e-9, 0.1), 1)
    a_row = np.rint((la_top - lat) / 0.1).astype(np.int64)
    a_col = np.rint((lon - lo_left) / 0.1).astype(np.int64)
    a_shape = (lats.size, lons.size)
    a_idx = (a_row * a_shape[1] + a_col).ravel()
    a_count = np.bincount(a_idx, minlength=a_shape[0] * a_shape[1])
    covered = np.flatnonzero(a_count > 0)
    # uncovered ERA5 cells take the forcing of the nearest covered cell
    ar, ac = np.divmod(np.arange(a_shape[0] * a_shape[1]), a_shape[1])
    cr, cc = np.divmod(covered, a_shape[1])
    nearest = covered[np.argmin((ar[:, None] - cr[None]) ** 2 + (ac[:, None] - cc[None]) ** 2, axis=1)]
    era = _era5_bucket(st, cfg, a_shape[0] * a_shape[1])
    S_era = era.wp + 0.7 * (era.fc - era.wp)

    # ---- daily loop
    truth = np.full((nd, n, n), np.nan, np.float32)
    surf = np.full((nd, n, n), np.nan, np.float32)
    smap = np.full((nd, *e_shape), np.nan, np.float32)
    ndvi = np.empty((nd, n, n), np.float32)
    lst = np.empty((nd, n, n), np.float32)
    era_out = np.empty((nd, 4, a_shape[0] * a_shape[1]), np.float32)
    st_theta = np.empty((nd, ns))
    beta_mem = None
    cur_eq = np.full(int(land_flat.sum()), 0.25)
    dz = sim.bucket.dz
    lc_flat = st.lc.ravel().astype(int)
    rho_land = st.rho.ravel()[land_flat]
    rng_ndvi, rng_lst = _rng(seed, _S_NDVI), _rng(seed, _S_LST)
    land_frac_ok = land_frac >= 0.5

    def block_mean(a: np.ndarray) -> np.ndarray:
        s = np.where(land, a, 0.0).reshape(n, kf, n, kf).sum(axis=(1, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            return s / (land_frac * kf * kf)

    # spin-up of both models on the record's first days
    S = sim.initial_storage()
    for t in range(cfg.spinup_days):
        tt = t % nd
        fine_p = sim.fine_precip(tt).ravel()
        pet = sim.pet(tt)
        sim.bucket.step(S, fine_p, pet.ravel())
        _era_step(era, S_era, fine_p, pet.ravel(), a_idx, a_count, nearest, cfg.era5_precip_factor)
    t_loop = _time.perf_counter()
    for t, S_t, fl, pet in sim.run(S):
        theta = S_t / dz[:, None]  # (L, n_cells)
        th_land = theta[:, land_flat]
        cur_eq = _theta_eq_cells(th_land, rho_land, cur_eq, tol=1e-6)
        eq = np.full(ny * nx, np.nan)
        eq[land_flat] = cur_eq
        eq = eq.reshape(ny, nx)
        truth[t] = np.where(land_frac_ok, block_mean(np.nan_to_num(eq)), np.nan)
        top = theta[0].reshape(ny, nx)
        surf[t] = np.where(land_frac_ok, block_mean(top), np.nan)
        e_sum = np.bincount(e_idx[land_flat], weights=top.ravel()[land_flat], minlength=e_count.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            smap[t] = np.where(e_valid, e_sum / e_count, np.nan).reshape(e_shape)
        # vegetation: seasonal phenology damped by a 20-day memory of root-zone stress
        beta = fl["beta"]
        beta_mem = beta.copy() if beta_mem is None else beta_mem + (beta - beta_mem) * (1 - np.exp(-1 / 20))
        doy = sim.doy[t]
        phen = 1 / (1 + np.exp(-(doy - 115) / 10)) - 1 / (1 + np.exp(-(doy - 290) / 12))
        crop_cut = np.where((lc_flat == 1) & (doy > 205) & (doy < 260), 0.45, 1.0)
        nd_f = _NDVI_MIN[lc_flat] + (_NDVI_MAX[lc_flat] - _NDVI_MIN[lc_flat]) * phen * crop_cut * (0.35 + 0.65 * beta_mem)
        ndvi[t] = (nd_f.reshape(n, kf, n, kf).mean(axis=(1, 3))
                   + 0.02 * rng_ndvi.standard_normal((n, n)))  # fmt: skip
        et_ratio = np.where(pet.ravel() > 0, fl["et"] / np.maximum(pet.ravel() * _KC[lc_flat], 1e-6), 1.0)
        lst_f = (sim.tair(t).ravel() + 273.15 + 7.0 * (1 - np.clip(et_ratio, 0, 1)) * np.sqrt(np.maximum(pet.ravel(), 0))
                 - 2.0 * (lc_flat == 3) + 2.5 * (lc_flat == 4) - 3.0 * (lc_flat == 5))  # fmt: skip
        lst_px = lst_f.reshape(n, kf, n, kf).mean(axis=(1, 3)) + rng_lst.standard_normal((n, n))
        cloudy = sim.precip[t] > 0.5
        lst[t] = np.where(cloudy, np.nan, lst_px)
        # stations
        if ns:
            theta_3d = theta.reshape(nl, ny, nx)
            st_theta[t] = station_theta(np.stack([theta_3d[:, wr, wc] for wr, wc in windows]), win_rho, win_land,
                                        res, hum_day[t], p_st, veg_st, cfg.kernel_radius)  # fmt: skip
        # ERA5-like
        if t % 100 == 99:
            log.info("twin: day %d of %d (%.1f s)", t + 1, nd, _time.perf_counter() - t_loop)
        era_out[t] = _era_step(era, S_era, fl["precipitation"], pet.ravel(), a_idx, a_count, nearest,
                               cfg.era5_precip_factor)  # fmt: skip
    log.info("twin: %d days simulated (%.1f s)", nd, _time.perf_counter() - t_loop)

    # ---- noisy covariates
    rng_s1, rng_smap = _rng(seed, _S_S1), _rng(seed, _S_SMAP)
    gx, gy = _grid_xy(grid)
    lc_px = st.lc.reshape(n, kf, n, kf)
    forest_px = (lc_px == 3).mean(axis=(1, 3))
    for p, d in zip(paths["s1"], _s1_days(cfg)):
        t = int((d - days[0]).astype(int))
        noise = cfg.s1_noise * (1 + forest_px) * rng_s1.standard_normal((n, n))
        s1 = np.clip(surf[t] + noise, 0.01, 0.6).astype(np.float32)
        _write_tif(p, np.where(land_frac_ok, s1, np.nan), grid.transform, "EPSG:3035", "m3 m-3", "s1_sm",
                   tags={"time": str(d)})  # fmt: skip
    miss = rng_smap.random(nd) < cfg.smap_missing_fraction
    smap = np.clip(smap + cfg.smap_noise * rng_smap.standard_normal(smap.shape), 0.02, 0.6).astype(np.float32)
    smap[miss] = np.nan
    ex_c = _EASE_X0 + (ec0 + np.arange(e_shape[1]) + 0.5) * _EASE_RES
    ey_c = _EASE_Y1 - (er0 + np.arange(e_shape[0]) + 0.5) * _EASE_RES
    ga = {"title": "smengine twin world", "source": "smengine.twin.make_world", "seed": int(seed),
          "Conventions": "CF-1.8"}  # fmt: skip
    _write_projected_nc(paths["smap"], "soil_moisture", smap, days, ex_c, ey_c, "EPSG:6933",
                        {"units": "cm3/cm3", "long_name": "SMAP-like 9 km surface soil moisture (0-5 cm)"}, ga)  # fmt: skip
    _write_projected_nc(paths["ndvi"], "ndvi", ndvi, days, gx, gy, "EPSG:3035",
                        {"units": "1", "long_name": "NDVI-like vegetation index"}, ga)  # fmt: skip
    _write_projected_nc(paths["lst"], "lst", lst, days, gx, gy, "EPSG:3035",
                        {"units": "K", "long_name": "LST-like daytime land surface temperature"}, ga)  # fmt: skip
    _write_projected_nc(paths["precipitation"], "precipitation", sim.precip.astype(np.float32), days, gx, gy,
                        "EPSG:3035", {"units": "mm", "long_name": "daily precipitation (truth)"}, ga)  # fmt: skip
    truth_attrs = {"units": "m3 m-3", "long_name": "true CRNS-equivalent soil moisture (1 km pixel mean)",
                   "comment": "mean over the pixel's land cells of the W_d-weighted profile theta with "
                              "D86(r=0, rho_b, theta_eq) (smengine.twin)"}  # fmt: skip
    _write_projected_nc(paths["truth"], "theta_eq", truth, days, gx, gy, "EPSG:3035", truth_attrs, ga)
    _write_era5(paths["era5"], era_out.reshape(nd, 4, *a_shape), days, lats, lons)
    _write_stations(seed, cfg, paths, stations, st_theta, hum_day, sim)
    log.info("twin: files written (%.1f s total)", _time.perf_counter() - t_start)
    return TwinWorld(root, int(seed), cfg, grid, days, paths, stations)


# ------------------------------------------------------------------------------------
# ERA5-like run
# ------------------------------------------------------------------------------------
def _era5_bucket(st: _Statics, cfg: TwinConfig, n_cells: int) -> _Bucket:
    dz = (np.asarray(_ERA5_BOTTOMS) - np.asarray(_ERA5_TOPS)) * 10.0
    land = st.land
    off = cfg.era5_theta_offset
    wp = float(st.wp[land].mean()) + off
    fc = float(st.fc[land].mean()) + off
    por = float(st.por[land].mean()) + off
    ksat = float(np.median(st.ksat[land])) * 24.0
    mid = 0.5 * (np.asarray(_ERA5_TOPS) + np.asarray(_ERA5_BOTTOMS))
    root = np.exp(-mid / 25.0) * dz / 10.0
    root /= root.sum()
    one = np.ones((1, n_cells))
    kd = np.full((4, n_cells), np.clip(ksat / (ksat + 150.0), 0.05, 0.95))
    dzc = dz[:, None]
    return _Bucket(dz, one * wp * dzc, one * fc * dzc, one * por * dzc, kd, one * root[:, None], np.ones(n_cells),
                   np.zeros(n_cells), np.zeros(n_cells), np.ones(n_cells, bool), 0.0)  # fmt: skip


def _era_step(b: _Bucket, S: np.ndarray, fine_p: np.ndarray, fine_pet: np.ndarray, idx: np.ndarray,
              count: np.ndarray, nearest: np.ndarray, factor: float) -> np.ndarray:  # fmt: skip
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.bincount(idx, weights=fine_p, minlength=count.size) / count
        pet = np.bincount(idx, weights=fine_pet, minlength=count.size) / count
    p, pet = p[nearest] * factor, pet[nearest]
    b.step(S, p, pet)
    return S / b.dz[:, None]


def _write_era5(path: Path, data: np.ndarray, days: np.ndarray, lats: np.ndarray, lons: np.ndarray) -> None:
    """ERA5-Land's CDS NetCDF layout (2024 onwards): valid_time, latitude (descending),
    longitude; swvl1–4 float32 m**3 m**-3 with the GRIB attributes."""
    import netCDF4

    secs = (days.astype("datetime64[s]") - np.datetime64("1970-01-01T00:00:00")).astype(np.int64)
    names = ("Volumetric soil water layer 1", "Volumetric soil water layer 2",
             "Volumetric soil water layer 3", "Volumetric soil water layer 4")  # fmt: skip
    with atomic_target(path) as tmp, netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        nc.setncatts({"GRIB_centre": "ecmf", "GRIB_centreDescription": "European Centre for Medium-Range Weather Forecasts",
                      "GRIB_subCentre": 0, "Conventions": "CF-1.7",
                      "institution": "European Centre for Medium-Range Weather Forecasts",
                      "history": "smengine twin world: ERA5-Land-like biased model run (synthetic)"})  # fmt: skip
        nc.createDimension("valid_time", days.size)
        nc.createDimension("latitude", lats.size)
        nc.createDimension("longitude", lons.size)
        num = nc.createVariable("number", "i8")
        num.setncatts({"long_name": "ensemble member numerical id", "units": "1", "standard_name": "realization"})
        num.assignValue(0)
        vt = nc.createVariable("valid_time", "i8", ("valid_time",))
        vt.setncatts({"long_name": "time", "standard_name": "time", "units": "seconds since 1970-01-01",
                      "calendar": "proleptic_gregorian"})  # fmt: skip
        vt[:] = secs
        la = nc.createVariable("latitude", "f8", ("latitude",))
        la.setncatts({"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude",
                      "stored_direction": "decreasing"})  # fmt: skip
        la[:] = lats
        lo = nc.createVariable("longitude", "f8", ("longitude",))
        lo.setncatts({"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude"})
        lo[:] = lons
        ev = nc.createVariable("expver", str, ("valid_time",))
        ev.setncatts({"long_name": "model version"})
        ev[:] = np.array(["0001"] * days.size, dtype=object)
        for k in range(4):
            v = nc.createVariable(f"swvl{k + 1}", "f4", ("valid_time", "latitude", "longitude"),
                                  fill_value=np.float32(np.nan), zlib=True, complevel=4)  # fmt: skip
            v.setncatts({"GRIB_paramId": 39 + k if k < 3 else 42, "GRIB_units": "m**3 m**-3",
                         "GRIB_name": names[k], "GRIB_shortName": f"swvl{k + 1}", "GRIB_gridType": "regular_ll",
                         "units": "m**3 m**-3", "long_name": names[k], "coordinates": "number valid_time latitude longitude expver"})  # fmt: skip
            v[:] = data[:, k]


# ------------------------------------------------------------------------------------
# stations in COSMOS-Europe revision-1 layout
# ------------------------------------------------------------------------------------
def _rev1_series(theta_day: np.ndarray, days: np.ndarray, s: pd.Series, hum: np.ndarray, p_anom: np.ndarray,
                 tmean: np.ndarray, rh: np.ndarray, precip: np.ndarray, rng: np.random.Generator | None) -> pd.DataFrame:  # fmt: skip
    """Hourly rev1 columns for one station; ``rng=None`` gives the noise-free pipeline."""
    nd = days.size
    hours = days.astype("datetime64[h]")[:, None] + np.arange(24)[None, :]
    hours = hours.ravel()
    th = np.repeat(theta_day, 24)
    hod = np.tile(np.arange(24), nd)
    hum_h = np.repeat(hum, 24) * (1 + 0.08 * np.sin(2 * np.pi * (hod - 9) / 24))
    p_h = s["pressure"] + np.repeat(p_anom, 24) + 0.6 * np.sin(2 * np.pi * hod / 12)
    t_h = np.repeat(tmean, 24) + 4.0 * np.sin(2 * np.pi * (hod - 9) / 24)
    n0, rho, lw, soc = float(s["n0"]), float(s["bulk_density"]), float(s["lattice_water"]), float(s["soc"])
    n_corr = nt.theta_to_counts(th, n0, rho, lw, soc)
    f = nt.pressure_correction(p_h) * nt.humidity_correction(hum_h)
    lam = n_corr / f  # raw expected count rate, cph
    raw = rng.poisson(lam).astype(np.float64) if rng is not None else lam
    corr = raw * f
    corr_std = np.sqrt(raw) * f
    ser = pd.Series(corr)
    mov = ser.rolling(24, center=True, min_periods=12).mean().to_numpy()
    mov_std = pd.Series(corr_std).rolling(24, center=True, min_periods=12).mean().to_numpy() / np.sqrt(24)
    sm = nt.counts_to_theta(mov, n0, rho, lw, soc)
    sm_std = nt.theta_uncertainty(mov, mov_std, n0, rho)
    sm_c = np.clip(np.nan_to_num(sm, nan=0.05), 0.02, 0.6)
    r86 = fp.footprint_radius(np.clip(hum_h, 0, 40), sm_c, p_h)
    d86 = fp.penetration_depth(1.0, rho, sm_c, lw, soc) / 100.0
    return pd.DataFrame({
        "DateTime_utc": pd.DatetimeIndex(hours).strftime("%Y-%m-%d %H:%M:%S"),
        "NeutronCount_Epithermal_Cum1h": np.round(raw, 3),
        "NeutronCount_Epithermal_Cum1h_corrected": np.round(corr, 3),
        "NeutronCount_Epithermal_Cum1h_corrected_std": np.round(corr_std, 3),
        "NeutronCount_Epithermal_MovAvg24h_corrected": np.round(mov, 4),
        "NeutronCount_Epithermal_MovAvg24h_corrected_std": np.round(mov_std, 4),
        "Flag_Extreme_Counts": ((raw > 10000) | (raw < 50)).astype(int),
        "AirPressure": np.round(p_h, 2), "Flag_AirPressure_ERA5": 0,
        "AirTemperature": np.round(t_h, 2), "AirHumidity_Relative": np.round(np.repeat(rh, 24), 1),
        "AirHumidity_gapfilled": np.round(hum_h, 3), "Flag_AirHumidity_ERA5": 0,
        "Precipitation": np.round(np.repeat(precip / 24.0, 24), 3),
        "Flag_Porosity_Excess": (sm > s["porosity"]).astype(int), "Flag_Snow_ERA5": 0,
        "SoilMoisture_volumetric_MovAvg24h": np.round(sm, 6),
        "SoilMoisture_volumetric_MovAvg24h_std": np.round(sm_std, 6),
        "Footprint_Radius_m": np.round(r86, 2), "Footprint_Depth_m": np.round(d86, 4),
    })  # fmt: skip


def _write_stations(seed: int, cfg: TwinConfig, paths: dict[str, Any], stations: pd.DataFrame,
                    st_theta: np.ndarray, hum_day: np.ndarray, sim: _Sim) -> None:  # fmt: skip
    root = Path(paths["crns"])
    series = root / "processed_crns_data_and_diagnostics_rev1"
    series.mkdir(parents=True, exist_ok=True)
    days = cfg.days()
    kf = cfg.kf
    truth_rows = []
    gen_rows, add_rows = [], []
    for i, s in stations.iterrows():
        sid = s["id"]
        px = sim.precip[:, s["row"] // kf, s["col"] // kf]
        args = (st_theta[:, i], days, s, hum_day, sim.met.p_anom, sim.met.tmean, sim.met.rh, px)
        df = _rev1_series(*args, rng=_rng(seed, _S_COUNTS, int(i)))
        clean = _rev1_series(*args, rng=None)
        data = df.to_csv(index=False, na_rep="NaN", lineterminator="\n").encode("latin-1")
        atomic_write(series / f"{sid}.csv", data)
        sm_clean = clean["SoilMoisture_volumetric_MovAvg24h"].to_numpy().reshape(-1, 24).mean(axis=1)
        truth_rows.append(pd.DataFrame({"station": sid, "date": days.astype(str), "theta": st_theta[:, i],
                                        "sm_noisefree": sm_clean, "abs_humidity": hum_day,
                                        "pressure": s["pressure"]}))  # fmt: skip
        sm = df["SoilMoisture_volumetric_MovAvg24h"]
        gen_rows.append({
            "File name": sid, "Station": f"Twin {i + 1}", "Country": "Twinland", "Affiliation": "smengine twin world",
            "Detector Typ ": "CRS1000", "Latitude (°)": f"{s['lat']:.6f}", "Longitude (°)": f"{s['lon']:.6f}",
            "Altitude (m)": f"{s['elevation']:.1f}", "Main land use": s["land_cover"],
            "Mean air temperature (°C)": f"{sim.met.tmean.mean():.1f}",
            "Mean annual precipitation (mm)": f"{px.mean() * 365.25:.0f}",
            "Climate classification (Koeppen&Geiger)": "Cfb",
            "Time period start": f"{int(str(days[0])[5:7])}.{str(days[0])[:4]}",
            "Time period end": f"{int(str(days[-1])[5:7])}.{str(days[-1])[:4]}",
        })  # fmt: skip
        add_rows.append({
            "Station ID": sid, "Station/Country": f"Twin {i + 1}/ TW", "Porosity": s["porosity"],
            "Bulk density*(g/cm3)": s["bulk_density"], "Soil organic carbon*(g/g)": s["soc"],
            "Lattice water*(g/g)": s["lattice_water"], "Cutoff rigidity(GV)": 3.0, "N0(cts/h)": s["n0"],
            "Mean raw epithermal neutrons(cts/h)": round(float(df["NeutronCount_Epithermal_Cum1h"].mean()), 1),
            "Mean corrected epithermal neutrons(cts/h)":
                round(float(df["NeutronCount_Epithermal_Cum1h_corrected"].mean()), 1),
            "Mean soil moisture(m3/m3)": round(float(sm.mean()), 3),
            "Soil moisture range(m3/m3)": f"{sm.min():.3f} - {sm.max():.3f}",
            "Mean Footprint depth(m)": round(float(df["Footprint_Depth_m"].mean()), 3),
            "Mean Footprint radius(m)": round(float(df["Footprint_Radius_m"].mean()), 1), "References": "-",
        })  # fmt: skip
    gen_cols = ["File name", "Station", "Country", "Affiliation", "Detector Typ ", "Latitude (°)", "Longitude (°)",
                "Altitude (m)", "Main land use", "Mean air temperature (°C)", "Mean annual precipitation (mm)",
                "Climate classification (Koeppen&Geiger)", "Time period start", "Time period end"]  # fmt: skip
    gen = pd.DataFrame(gen_rows, columns=gen_cols)
    add = pd.DataFrame(add_rows)
    atomic_write(root / "General_ information_rev1.csv",
                 gen.to_csv(index=False, lineterminator="\n").encode("latin-1"))  # fmt: skip
    atomic_write(root / "Additional_information_rev1.csv",
                 add.to_csv(index=False, lineterminator="\n").encode("latin-1"))  # fmt: skip
    truth = pd.concat(truth_rows, ignore_index=True) if truth_rows else pd.DataFrame(
        columns=["station", "date", "theta", "sm_noisefree", "abs_humidity", "pressure"])  # fmt: skip
    atomic_write(Path(paths["station_truth"]), truth.to_csv(index=False, float_format="%.12g",
                                                            lineterminator="\n").encode())  # fmt: skip
    atomic_write(Path(paths["stations"]), stations.to_csv(index=False, float_format="%.10g",
                                                          lineterminator="\n").encode())  # fmt: skip


def write_run_config(world: TwinWorld, path: str | os.PathLike[str]) -> Path:
    """Write :meth:`TwinWorld.run_config` to ``path`` (atomic; paths in it are relative to the
    world's folder, so ``path`` belongs there)."""
    from smengine._io import atomic_write

    p = Path(path)
    atomic_write(p, world.run_config().encode())
    return p
