"""The twin world's physics: configuration, random fields and statics, forcing, the six-layer
bucket model and the CRNS-equivalent θ on the fine grid."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from pyproj import Transformer

from smengine import footprint as fp
from smengine.errors import ConfigError
from smengine.grid import Grid

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
# streams of the field mosaic (heterogeneity > 0 only; the ones above are untouched by it)
_S_FIELDS, _S_S1_FINE, _S_NDVI_FINE, _S_LST_FINE = range(9, 13)
#: Mean area of a field of the heterogeneity mosaic, ha (Voronoi cells of uniform seeds).
FIELD_MEAN_HA = 5.0
# land cover drawn for a field of the mosaic: cropland, grassland, forest, settlement
_FIELD_LC = np.array([1, 2, 3, 4], dtype=np.uint8)
_FIELD_LC_P = np.array([0.55, 0.17, 0.16, 0.12])
# crop coefficient of a crop field: bare soil .. full cover (Allen et al. 1998, FAO-56 Table 12 ranges)
_KC_BARE, _KC_FULL = 0.3, 1.15
#: Irrigation: water applied (mm) on a day an irrigated crop field's root zone is stressed.
IRRIGATION_MM = 25.0


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
    heterogeneity : float
        Field-scale heterogeneity h in [0, 1] (default 0: the smooth twin, byte for byte).
        With h > 0 the fine grid carries a field mosaic (Voronoi fields of
        :data:`FIELD_MEAN_HA` ha on average) and a fraction h of the fields (the same ones
        at every level for a seed: the sets are nested) become fields of their own: a
        land cover drawn per field (cropland, grassland, forest patch, settlement), sand
        and clay jumping at the field boundary, and on crop fields their own sowing and
        harvest dates (NDVI and the crop coefficient follow them) and, on some,
        irrigation. The NDVI-, LST- and Sentinel-1-like layers are then written on the
        fine grid (see :func:`~smengine.twin.make_world`).

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
    heterogeneity: float = 0.0

    def __post_init__(self) -> None:
        kf = 1000.0 / self.fine_resolution
        if not (self.fine_resolution > 0 and abs(kf - round(kf)) < 1e-9 and round(kf) >= 2):
            raise ConfigError(
                f"fine_resolution should divide 1000 m (at least 2 cells per km), got {self.fine_resolution!r}"
            )
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
        if not 0.0 <= float(self.heterogeneity) <= 1.0:
            raise ConfigError(f"heterogeneity should be in [0, 1], got {self.heterogeneity!r}")
        object.__setattr__(self, "heterogeneity", float(self.heterogeneity))
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
        if d["heterogeneity"] == 0.0:  # absent at its default: the worlds (and hashes) of before stay valid
            del d["heterogeneity"]
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
        return Grid(
            "EPSG:3035", 1000.0, float(self.xmin), float(self.ymax), self.size_km, self.size_km, self.subpixel, 100
        )

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
    from sand and clay fractions and organic matter (% weight), Saxton & Rawls (2006): the limits
    of :func:`smengine.waterbalance.saxton_rawls`, and Ksat from them (eqs 15-16, 18)."""
    from smengine.waterbalance import saxton_rawls

    t1500, t33, ts = saxton_rawls(sand, clay, om)
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
class _Fields:
    """The field mosaic of a heterogeneous twin (``heterogeneity`` > 0)."""

    label: np.ndarray  # (ny, nx) int32 field index of every fine cell
    active: np.ndarray  # (n_fields,) bool: a field of its own (u_f < heterogeneity)
    lc: np.ndarray  # (n_fields,) uint8 land cover drawn for the field
    winter: np.ndarray  # (n_fields,) bool: winter crop (green-up in spring) else spring crop
    sow: np.ndarray  # (n_fields,) day of year: sowing (spring crop) or green-up (winter crop)
    harvest: np.ndarray  # (n_fields,) day of year of harvest
    resow: np.ndarray  # (n_fields,) day of year of the autumn sowing of a winter crop
    irrigated: np.ndarray  # (n_fields,) bool (used on active crop fields)

    def crop_cells(self, lc: np.ndarray) -> np.ndarray:
        """Cells (flat) of active crop fields."""
        return np.flatnonzero((self.active[self.label] & (lc == 1)).ravel())

    def development(self, doy: int) -> np.ndarray:
        """Crop development g in [0, 1] per field on a day of year (0 bare soil, 1 full cover)."""

        def sig(x: np.ndarray) -> np.ndarray:
            return 1.0 / (1.0 + np.exp(-x))

        before = doy < self.harvest
        spring = np.where(before, sig((doy - self.sow - 25.0) / 7.0), 0.0)
        winter = np.where(before, 0.3 + 0.7 * sig((doy - self.sow) / 9.0), 0.25 * sig((doy - self.resow - 15.0) / 7.0))
        return np.where(self.winter, winter, spring)


def _field_mosaic(seed: int, cfg: TwinConfig) -> _Fields:
    """Voronoi fields of :data:`FIELD_MEAN_HA` ha on the fine grid and their draws.

    Every draw is made whatever ``heterogeneity`` is, so the fields, their land cover and
    calendars are the same at every level of a seed and the active sets are nested.
    """
    from scipy.spatial import cKDTree

    rng = _rng(seed, _S_FIELDS)
    ny, nx = cfg.fine_shape
    res = cfg.fine_resolution
    area_ha = ny * nx * res * res / 1e4
    n = max(int(round(area_ha / FIELD_MEAN_HA)), 1)
    seeds = rng.random((n, 2)) * np.array([ny, nx])
    rows, cols = np.mgrid[0:ny, 0:nx]
    pts = np.column_stack([rows.ravel() + 0.5, cols.ravel() + 0.5])
    # Manhattan distance: straight, axis-parallel boundaries like those of real plots
    label = cKDTree(seeds).query(pts, p=1)[1].reshape(ny, nx).astype(np.int32)
    u = rng.random(n)
    lc = rng.choice(_FIELD_LC, size=n, p=_FIELD_LC_P).astype(np.uint8)
    winter = rng.random(n) < 0.45
    sow = np.where(winter, rng.uniform(55, 90, n), rng.uniform(95, 140, n))
    harvest = np.where(winter, rng.uniform(190, 215, n), rng.uniform(235, 285, n))
    resow = rng.uniform(265, 295, n)
    irrigated = rng.random(n) < 0.3
    return _Fields(label, u < cfg.heterogeneity, lc, winter, sow, harvest, resow, irrigated)


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
    fields: _Fields | None = None  # the field mosaic (heterogeneity > 0)


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
    if cfg.heterogeneity == 0.0:
        return _Statics(elev, twi, slope, sand, clay, wp, fc, por, ksat, rho, lc, land)
    # field mosaic: active fields take their own land cover (lakes stay) and a texture offset
    fm = _field_mosaic(seed, cfg)
    frng = _rng(seed, _S_FIELDS, 1)
    nf = fm.active.size
    d_sand = np.where(fm.active, 0.12 * frng.standard_normal(nf), 0.0)[fm.label]
    d_clay = np.where(fm.active, 0.06 * frng.standard_normal(nf), 0.0)[fm.label]
    sand = np.clip(sand + d_sand, 0.05, 0.90)
    clay = np.clip(clay + d_clay - 0.25 * d_sand, 0.04, np.minimum(0.55, 0.97 - sand))
    wp, fc, por, ksat = _saxton_rawls(sand, clay)
    rho = (1.0 - por) * 2.65
    on = fm.active[fm.label] & land
    lc = np.where(on, fm.lc[fm.label], lc).astype(np.uint8)
    return _Statics(elev, twi, slope, sand, clay, wp, fc, por, ksat, rho, lc, land, fm)


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
        return {
            "precipitation": P,
            "et": et_k.sum(axis=0),
            "drainage": deep,
            "runoff": runoff,
            "lateral": lateral,
            "beta": (beta * self.root).sum(axis=0),
        }


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
    return _Bucket(
        dz,
        st.wp.ravel()[None, :] * dz[:, None],
        st.fc.ravel()[None, :] * dz[:, None],
        st.por.ravel()[None, :] * dz[:, None],
        kd,
        root,
        _KC[lc],
        _IMPERV[lc],
        w,
        land,
        cfg.lateral_fraction,
    )


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
    1 = unstressed), each (ny, nx); with ``heterogeneity`` > 0 also irrigation (mm day-1)."""
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
        fm = self.st.fields
        self.crop_cells = fm.crop_cells(self.st.lc) if fm is not None else np.zeros(0, np.int64)
        self._crop_field = fm.label.ravel()[self.crop_cells] if fm is not None else self.crop_cells
        self._beta: np.ndarray | None = None

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
        self._beta = None
        return b.wp + 0.7 * (b.fc - b.wp)

    def crop_development(self, t: int) -> np.ndarray:
        """Development g in [0, 1] of the active crop fields' cells (:attr:`crop_cells`) on day t."""
        fm = self.st.fields
        if fm is None:
            return np.zeros(0)
        return fm.development(int(self.doy[t]))[self._crop_field]

    def advance(self, S: np.ndarray, t: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """One day of the fine bucket with the forcing of record day t: (fluxes, PET on the fine grid).

        On the active crop fields of a heterogeneous twin the crop coefficient follows the
        field's development (bare soil :data:`_KC_BARE` … full cover :data:`_KC_FULL`), and an
        irrigated crop field growing (g > 0.3) gets :data:`IRRIGATION_MM` on a day after one
        whose root-zone stress factor fell below 0.5. ``precipitation`` stays the rain;
        ``irrigation`` is the applied water, so ΔS = precipitation + irrigation − et −
        drainage − runoff + lateral.
        """
        pet = self.pet(t)
        P = self.fine_precip(t).ravel()
        fm = self.st.fields
        if fm is None:
            return self.bucket.step(S, P, pet.ravel()), pet
        cells = self.crop_cells
        g = self.crop_development(t)
        self.bucket.kc[cells] = _KC_BARE + (_KC_FULL - _KC_BARE) * g
        irr = np.zeros_like(P)
        if self._beta is not None:
            need = fm.irrigated[self._crop_field] & (g > 0.3) & (self._beta[cells] < 0.5)
            irr[cells] = np.where(need, IRRIGATION_MM, 0.0)
        fl = self.bucket.step(S, P + irr, pet.ravel())
        fl["precipitation"] = P
        fl["irrigation"] = irr
        self._beta = fl["beta"]
        return fl, pet

    def run(self, S: np.ndarray | None = None) -> Iterator[tuple[int, np.ndarray, dict[str, np.ndarray], np.ndarray]]:
        cfg = self.cfg
        if S is None:
            S = self.initial_storage()
            for t in range(cfg.spinup_days):
                self.advance(S, t % cfg.n_days)
        for t in range(cfg.n_days):
            fl, pet = self.advance(S, t)
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
def _theta_eq_cells(
    theta: np.ndarray, rho: np.ndarray, start: np.ndarray, tol: float = 1e-9, max_iter: int = 60
) -> np.ndarray:
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
def _kernel(
    cell: float, humidity: float, theta: float, pressure: float, veg_height: float, radius: float
) -> np.ndarray:
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
    eq = _theta_eq_cells(
        th_all.transpose(1, 0, 2, 3).reshape(nl, -1), rho_all.reshape(-1), np.full(rho_all.size, 0.2), tol=tol
    )
    eq = np.where(land_all.reshape(-1), eq, 0.0).reshape(ns, h * w)
    prev = eq.sum(axis=1) / land_all.reshape(ns, -1).sum(axis=1)
    th_filled = np.where(land_all[:, None], th_all, 0.1)
    for _ in range(2):  # two passes: the kernel follows the first guess, then the pass-one θ
        ks = [
            _kernel(
                float(cell_size),
                float(2.0 * np.round(hum[i] / 2.0)),
                float(np.clip(np.round(prev[i] / 0.02) * 0.02, 0.02, 0.5)),
                float(pres[i]),
                float(veg[i]),
                float(kernel_radius),
            )
            for i in range(ns)
        ]
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
