r"""Model features from a :class:`~smengine.tiles.TileStore`, defined once for training and inference.

A :class:`FeatureSpec` names the features; a :class:`FeatureBuilder` turns a spec and a
tile into per-sub-pixel feature rasters for any day and window:

* every static, dynamic and coarse covariate of the store (or the chosen subset);
* the Soil Water Index (:func:`smengine.filters.exp_filter`, Albergel 2008) of the
  surface soil-moisture covariates at several characteristic times T, computed per
  sub-pixel from its own series, carried to every day by default for at most
  ``swi_max_gap`` days after the last value (``swi<T>c<gap>_<name>``; on
  observation days only with ``swi_carry=False``: ``swi<T>_<name>``);
* the water balance (``FeatureSpec.water_balance``, :class:`WaterBalanceSpec`): the volumetric
  water content ``wb<depth>`` of a daily one-layer bucket per sub-pixel
  (:func:`smengine.waterbalance.bucket_oudin`: precipitation in, Oudin PET from the daily mean
  temperature out, field capacity and wilting point from texture), started at field capacity on
  the tile's first day and carried over all its days, as the engine carries it;
* calendar features ``doy_sin``, ``doy_cos`` (day of year on the unit circle).

The training table (:func:`training_table`) takes the footprint-weighted average
(:func:`smengine.footprint.footprint_average`) of those rasters around each CRNS station
with that day's kernel (:func:`smengine.footprint.footprint_kernel` from the day's
absolute humidity, pressure and the station's soil moisture). Gridded inference uses the
same builder on every sub-pixel, so training and prediction see identical definitions.

References
----------
.. [1] Albergel, C. et al. (2008). From near-surface to root-zone soil moisture using an
   exponential filter. HESS 12, 1323–1337.
.. [2] Schrön, M. et al. (2017). Improving calibration and validation of cosmic-ray neutron
   sensors in the light of spatial sensitivity. HESS 21, 5009–5030.
.. [3] Oudin, L. et al. (2005). Which potential evapotranspiration input for a lumped
   rainfall–runoff model? Part 2. J. Hydrol. 303, 290–306.
.. [4] Saxton, K. E., Rawls, W. J. (2006). Soil water characteristic estimates by texture and
   organic matter for hydrologic solutions. Soil Sci. Soc. Am. J. 70, 1569–1578.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from smengine.errors import ConfigError, DataError, ValidationError
from smengine.filters import exp_filter
from smengine.footprint import REFERENCE_PRESSURE, footprint_average, footprint_kernel
from smengine.grid import Window, as_window, transformer
from smengine.tiles import TileStore
from smengine.units import conversion
from smengine.waterbalance import (
    _bucket_oudin_kernel,
    _check_bucket_settings,
    _warn_missing,
    bucket_storages,
    daily_radiation,
    saxton_rawls,
)

__all__ = [
    "TABLE_EXTRAS",
    "TABLE_KEYS",
    "FeatureBuilder",
    "FeatureSpec",
    "SWIFeature",
    "SWI_MAX_GAP",
    "WaterBalanceInputs",
    "WaterBalanceSpec",
    "calendar_features",
    "grid_centre_latitude",
    "parse_swi_feature",
    "parse_swi_feature_name",
    "parse_water_balance_feature",
    "read_table",
    "swi_feature_name",
    "training_table",
    "water_balance_feature_name",
    "water_balance_inputs",
    "write_table",
]

log = logging.getLogger(__name__)

#: Units marking a covariate as surface soil moisture (gets SWI features by default).
#: Columns of :func:`training_table` before the features (site, UTC day, target θ in m³ m⁻³).
TABLE_KEYS = ("station", "date", "target")
#: Columns after the features: sub-pixel centre (grid CRS, m), tile, kernel half-width, valid fraction.
TABLE_EXTRAS = ("x", "y", "tile", "kernel_half_width", "valid_fraction")
SOIL_MOISTURE_UNITS = ("m3 m-3", "m3/m3", "m3m-3", "percent saturation", "% saturation", "pct_saturation")


#: Default longest gap (days) over which a carried SWI repeats its last value (:class:`FeatureSpec`).
SWI_MAX_GAP = 30.0


#: Constant texture (sand, clay as fractions) of the water balance when no sand/clay layers are named: a loam.
DEFAULT_TEXTURE = (0.40, 0.20)
#: PET methods of the gridded water balance (``WaterBalanceSpec.pet``).
WATER_BALANCE_PET = ("oudin",)
#: Units of the water balance's soil fractions: fraction ('1') or percent ('%') → scale to a fraction.
_FRACTION_UNITS = {"1": 1.0, "%": 0.01}


def _number(v: Any, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
        raise ConfigError(f"FeatureSpec.water_balance: {key} should be a number, got {v!r}")
    x = float(v)
    if not np.isfinite(x):
        raise ConfigError(f"FeatureSpec.water_balance: {key} should be finite, got {v!r}")
    return x


@dataclass(frozen=True)
class WaterBalanceSpec:
    r"""The water-balance features of a :class:`FeatureSpec` (its ``water_balance``; a dict of these keys).

    One feature per root-zone depth, ``wb<depth>`` (e.g. ``wb300``): the volumetric water content
    (m³ m⁻³) at the end of the day of a one-layer bucket per sub-pixel
    (:func:`smengine.waterbalance.bucket_oudin`; order of operations in
    :mod:`smengine.waterbalance`): precipitation in, drainage of the excess above field capacity,
    ET = PET · β(S) with Oudin's PET (Oudin et al. 2005) from the day's mean air temperature and the
    extraterrestrial radiation :math:`R_a` (FAO-56) **at the latitude of the tile's centre** (one
    value per day for the whole tile: :math:`R_a` changes by about 1 % per 0.5° of latitude in
    mid-latitude summer, more in winter, so sub-pixels far from the centre of a large tile get a
    slightly biased PET), field capacity and wilting point from texture (Saxton & Rawls 2006).
    The storage starts at field capacity before the tile's first day and is carried over all its
    days; a day without precipitation or temperature is NaN and leaves the storage unchanged
    (counted, :class:`~smengine.errors.DataLossWarning`). The engine carries the same state per
    sub-pixel from chunk to chunk and reads these parameters from the model card.

    Parameters
    ----------
    precipitation : str
        Daily (dynamic or coarse) tile layer of precipitation, in ``mm`` (per day) or ``m``
        (converted to mm; :func:`smengine.units.conversion`).
    temperature : str
        Daily mean air temperature layer, ``degC`` or ``K``.
    sand, clay : str, optional
        Static tile layers of sand and clay content, fractions (units ``1``) or percent (``%``,
        divided by 100). Both or neither.
    texture : (float, float), optional
        Constant (sand, clay) fractions instead of layers; default :data:`DEFAULT_TEXTURE`
        (0.40, 0.20: a loam) when no layers are named.
    organic_matter : float, optional
        Organic matter, percent (default 2.5).
    depths_mm : sequence of float, optional
        Root-zone depths, mm (default ``(300,)``): one feature each.
    beta_fraction : float, optional
        ET runs at the potential rate above this fraction of the available water (default 0.6;
        ``beta_reference="available"`` of :func:`~smengine.waterbalance.bucket`).
    pet : {"oudin"}, optional
        PET method; only Oudin's in the gridded path.

    Raises
    ------
    ConfigError
        Unknown keys, a missing layer name, both layers and ``texture``, values out of range or an
        unsupported ``pet``; the message names the key.

    Examples
    --------
    >>> wb = WaterBalanceSpec.from_config({"precipitation": "tp", "temperature": "t2m", "depths_mm": [300, 1000]})
    >>> wb.names, wb.texture
    (['wb300', 'wb1000'], (0.4, 0.2))
    """

    precipitation: str
    temperature: str
    sand: str | None = None
    clay: str | None = None
    texture: tuple[float, float] | None = None
    organic_matter: float = 2.5
    depths_mm: tuple[float, ...] = (300.0,)
    beta_fraction: float = 0.6
    pet: str = "oudin"

    def __post_init__(self) -> None:
        for key in ("precipitation", "temperature"):
            v = getattr(self, key)
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(
                    f"FeatureSpec.water_balance: {key} should be the name of a daily tile layer, got {v!r}"
                )
        for key in ("sand", "clay"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise ConfigError(
                    f"FeatureSpec.water_balance: {key} should be the name of a static tile layer, got {v!r}"
                )
        if (self.sand is None) != (self.clay is None):
            raise ConfigError("FeatureSpec.water_balance: give both sand and clay layers, or neither (then texture)")
        if self.sand is not None and self.texture is not None:
            raise ConfigError("FeatureSpec.water_balance: give sand and clay layers or a constant texture, not both")
        if self.sand is None:
            tex = DEFAULT_TEXTURE if self.texture is None else self.texture
            if isinstance(tex, str | bytes) or len(tex) != 2:
                raise ConfigError(f"FeatureSpec.water_balance: texture should be [sand, clay] fractions, got {tex!r}")
            sand, clay = (_number(x, "texture") for x in tex)
            if not (0 <= sand <= 1 and 0 <= clay <= 1 and sand + clay <= 1):
                raise ConfigError(
                    f"FeatureSpec.water_balance: texture should be [sand, clay] fractions in [0, 1] with sand + clay "
                    f"<= 1, got {list(tex)}"
                )
            object.__setattr__(self, "texture", (sand, clay))
        om = _number(self.organic_matter, "organic_matter")
        if om < 0:
            raise ConfigError(f"FeatureSpec.water_balance: organic_matter should be >= 0 (percent), got {om!r}")
        object.__setattr__(self, "organic_matter", om)
        if isinstance(self.depths_mm, str | bytes) or not isinstance(self.depths_mm, Sequence) or not self.depths_mm:
            raise ConfigError(
                f"FeatureSpec.water_balance: depths_mm should be a list of depths (mm), got {self.depths_mm!r}"
            )
        try:
            for d in self.depths_mm:
                _check_bucket_settings(d, self.beta_fraction, "excess", "available")
        except ConfigError as exc:
            raise ConfigError(f"FeatureSpec.water_balance: {exc}") from None
        depths = tuple(float(d) for d in self.depths_mm)
        names = [water_balance_feature_name(d) for d in depths]
        if len(set(names)) != len(names):
            raise ConfigError(f"FeatureSpec.water_balance: depths_mm repeat a depth: {list(self.depths_mm)}")
        object.__setattr__(self, "depths_mm", depths)
        object.__setattr__(self, "beta_fraction", float(self.beta_fraction))
        if self.pet not in WATER_BALANCE_PET:
            raise ConfigError(
                f"FeatureSpec.water_balance: pet={self.pet!r} is not available in the gridded path; only 'oudin' "
                "(PET from the daily mean temperature and Ra; Hargreaves needs daily minimum and maximum "
                "temperatures the tiles do not hold)"
            )

    @property
    def names(self) -> list[str]:
        """The feature names, one per depth: ``wb<depth>``."""
        return [water_balance_feature_name(d) for d in self.depths_mm]

    def get_config(self) -> dict[str, Any]:
        """JSON-safe configuration with every value resolved (the default texture written out):
        ``WaterBalanceSpec.from_config(w.get_config()) == w``."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_config(cls, config: WaterBalanceSpec | Mapping[str, Any]) -> WaterBalanceSpec:
        """From a dict of the keys above (missing optional keys take their defaults; a
        :class:`WaterBalanceSpec` is returned as it is).

        Raises
        ------
        ConfigError
            On unknown keys or a missing ``precipitation``/``temperature`` (named).
        """
        if isinstance(config, WaterBalanceSpec):
            return config
        if not isinstance(config, Mapping):
            raise ConfigError(
                f"FeatureSpec.water_balance should be a mapping of {list(cls.__dataclass_fields__)}, "
                f"got {type(config).__name__}"
            )
        keys = list(cls.__dataclass_fields__)
        unknown = sorted(str(k) for k in config if k not in keys)
        if unknown:
            raise ConfigError(f"FeatureSpec.water_balance: unknown key(s) {unknown} (known: {keys})")
        missing = [k for k in ("precipitation", "temperature") if config.get(k) is None]
        if missing:
            raise ConfigError(f"FeatureSpec.water_balance: {' and '.join(missing)} missing (a daily tile layer name)")
        cfg = dict(config)
        if isinstance(cfg.get("texture"), list):
            cfg["texture"] = tuple(cfg["texture"])
        return cls(**cfg)

    def source(self) -> str:
        """What the features are, for :attr:`FeatureBuilder.sources` and the model card (depth left as ``{depth}``)."""
        if self.sand is not None:
            soil = f"sand={self.sand}, clay={self.clay}"
        else:
            sand, clay = self.texture or DEFAULT_TEXTURE
            soil = f"constant texture sand {sand:g}, clay {clay:g}" + (
                " (the default loam)" if (sand, clay) == DEFAULT_TEXTURE else ""
            )
        return (
            f"bucket(precipitation={self.precipitation}, PET={self.pet}({self.temperature}, Ra at the tile centre), "
            f"FC/WP Saxton & Rawls 2006({soil}, OM {self.organic_matter:g} %), depth {{depth}} mm, "
            f"beta {self.beta_fraction:g} of the available water, start at field capacity on the tile's first day)"
        )


def water_balance_feature_name(depth_mm: float) -> str:
    """The name of the water-balance feature of a root-zone depth (mm): ``wb<depth>``.

    Examples
    --------
    >>> water_balance_feature_name(300.0), water_balance_feature_name(250.5)
    ('wb300', 'wb250.5')
    """
    return f"wb{float(depth_mm):g}"


_WB_NAME = re.compile(r"^wb(?P<depth>[0-9.eE+]+)$")


def parse_water_balance_feature(name: str) -> float | None:
    """The depth (mm) of a water-balance feature name ``wb<depth>``, or None if ``name`` is not one.

    Examples
    --------
    >>> parse_water_balance_feature("wb300"), parse_water_balance_feature("ndvi")
    (300.0, None)
    """
    m = _WB_NAME.match(name)
    if m is None:
        return None
    try:
        d = float(m["depth"])
    except ValueError:
        return None
    return d if np.isfinite(d) and d > 0 and water_balance_feature_name(d) == name else None


class WaterBalanceInputs(NamedTuple):
    """What the water balance of one tile reads, resolved once (:func:`water_balance_inputs`).

    Attributes
    ----------
    precipitation, temperature : str
        The daily layers.
    precip_conversion, temp_conversion : (float, float)
        ``x * scale + offset`` from the layer's units to mm (precipitation) and degC (temperature);
        applied in float64 and rounded to float32, as the engine converts a gathered column.
    latitude : float
        Latitude of the tile's centre, degrees north: where :math:`R_a` is taken.
    field_capacity, wilting_point : ndarray of float64, shape (Y, X)
        Per sub-pixel, m³ m⁻³ (NaN where sand or clay is).
    """

    precipitation: str
    precip_conversion: tuple[float, float]
    temperature: str
    temp_conversion: tuple[float, float]
    latitude: float
    field_capacity: np.ndarray
    wilting_point: np.ndarray


def grid_centre_latitude(grid: Any) -> float:
    """Latitude (degrees north, WGS 84) of the centre of a grid's bounds: where the water balance
    of a tile on that grid takes Ra.

    Examples
    --------
    >>> from smengine.grid import Grid
    >>> round(grid_centre_latitude(Grid.from_bounds(4_321_000, 2_987_000, 4_333_000, 2_997_000)), 3)
    50.04
    """
    x0, y0, x1, y1 = grid.bounds
    _, y = transformer(grid.crs, "EPSG:4326").transform((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    return float(y)


def _store_latitude(store: Any) -> float:
    """Where a store's water balance takes Ra: its ``centre_latitude`` if it names one (a block of a
    larger grid carries its parent's), else the centre of ``store.grid``."""
    lat = getattr(store, "centre_latitude", None)
    return float(lat) if lat is not None else grid_centre_latitude(store.grid)


def _daily_layer(store: Any, name: str, key: str) -> None:
    daily = list(store.dynamic_names) + list(store.coarse_names)
    if name not in daily:
        what = "a static layer" if name in store.static_names else "not a layer"
        raise ConfigError(
            f"{store.path}: FeatureSpec.water_balance {key} layer {name!r} is {what} of the tile; it should be a "
            f"daily (dynamic or coarse) layer (the tile has {daily})"
        )


def water_balance_inputs(store: Any, wb: WaterBalanceSpec) -> WaterBalanceInputs:
    """Resolve the water balance of one tile: its layers, units conversions, Ra latitude and soil limits.

    The one definition used by :class:`FeatureBuilder` and :class:`smengine.engine.TileRunner`, so
    that both see the same bits.

    Parameters
    ----------
    store : TileStore
    wb : WaterBalanceSpec

    Returns
    -------
    WaterBalanceInputs

    Raises
    ------
    ConfigError
        A named layer is not in the tile, or of the wrong kind (the message names it).
    DataError
        A layer's units cannot be converted (precipitation to mm, temperature to degC, sand and
        clay to fractions), or are missing.
    ValidationError
        Texture or soil limits out of range (e.g. sand given in percent with units ``1``).
    """
    _daily_layer(store, wb.precipitation, "precipitation")
    _daily_layer(store, wb.temperature, "temperature")

    def units_of(layer: str, key: str, want: str) -> tuple[float, float]:
        u = (store.units.get(layer) or "").strip()
        where = f"{store.path}: water-balance {key} layer {layer!r}"
        if not u:
            raise DataError(f"{where} has no units; the water balance needs {want}")
        return conversion(u, want, where=where)

    p_conv = units_of(wb.precipitation, "precipitation", "mm")
    t_conv = units_of(wb.temperature, "temperature", "degC")
    ny, nx = store.grid.subpixel_shape
    if wb.sand is not None:
        fractions = []
        for key, layer in (("sand", wb.sand), ("clay", wb.clay)):
            if layer not in store.static_names:
                raise ConfigError(
                    f"{store.path}: FeatureSpec.water_balance {key} layer {layer!r} is not a static layer of the tile "
                    f"(it has {list(store.static_names)})"
                )
            u = (store.units.get(layer) or "").strip()
            if u not in _FRACTION_UNITS:
                raise DataError(
                    f"{store.path}: water-balance {key} layer {layer!r} has units {u!r}; it should be a fraction ('1') "
                    "or percent ('%')"
                )
            a = np.asarray(store.static[store.static_names.index(layer)], dtype=np.float64)
            fractions.append(a / 100.0 if u == "%" else a)
        sand, clay = fractions
        what = f"sand layer {wb.sand!r}, clay layer {wb.clay!r}"
    else:
        tex = wb.texture or DEFAULT_TEXTURE
        sand, clay = np.full((ny, nx), tex[0]), np.full((ny, nx), tex[1])
        what = f"texture {list(tex)}"
    try:
        lim = saxton_rawls(sand, clay, wb.organic_matter)
        bucket_storages(lim.field_capacity, lim.wilting_point, 1.0, wb.beta_fraction)  # limits in range, wp < fc
    except ValidationError as exc:
        raise ValidationError(f"{store.path}: water balance ({what}, OM {wb.organic_matter:g} %): {exc}") from None
    return WaterBalanceInputs(
        wb.precipitation,
        p_conv,
        wb.temperature,
        t_conv,
        _store_latitude(store),
        np.ascontiguousarray(lim.field_capacity, dtype=np.float64),
        np.ascontiguousarray(lim.wilting_point, dtype=np.float64),
    )


def _converted(a: np.ndarray, conv: tuple[float, float]) -> np.ndarray:
    """``a * scale + offset`` in float64, rounded to float32 (the engine's gather conversion); ``a`` if identity."""
    if conv == (1.0, 0.0):
        return a
    return (a.astype(np.float64) * conv[0] + conv[1]).astype(np.float32)


@dataclass(frozen=True)
class FeatureSpec:
    """Which features a model uses. Stored with the model (``get_config``/``from_config``).

    Parameters
    ----------
    static, dynamic, coarse : sequence of str, optional
        Covariates to use; ``None`` takes all of that kind in the store, except (with
        ``swi_carry``) the SWI sources themselves: a satellite soil-moisture layer has
        values on overpass days only, and a raw feature with gaps leaves its rows and
        pixel-days NaN; its information enters every day through its carried SWI.
        Name such a layer explicitly to use it raw as well.
    swi_of : sequence of str, optional
        Covariates (dynamic or coarse) to filter — they need not be features themselves
        (e.g. a layer with gaps whose carried SWI is used); ``None``: every dynamic and
        coarse layer of the store whose units are a soil-moisture unit
        (:data:`SOIL_MOISTURE_UNITS`).
    swi_T : sequence of float, optional
        Characteristic times, days (default 5, 10, 20, 40).
    calendar : bool, optional
        Add ``doy_sin`` and ``doy_cos`` (default True).
    swi_carry : bool, optional
        On days without an observation of the source, carry the last SWI forward instead
        of NaN (``exp_filter(carry=True)``), so that the SWI exists every day after the
        first observation and the product is daily. The features are then named
        ``swi<T>c<G>_<source>``. Default True; ``False`` gives the SWI on observation days
        only (``swi<T>_<source>``).
    swi_max_gap : float or None, optional
        With ``swi_carry``: carry the last SWI for at most this many days after the source's
        last valid value, NaN after that until the next one (``exp_filter(max_gap=...)``),
        so that a product that ends (or a long outage) does not leave its last SWI standing
        for months. Default :data:`SWI_MAX_GAP` (30 days: longer than any revisit gap of the
        satellite products, Sentinel-1's 12 days included). ``None``: no limit (the feature
        is then named ``swi<T>c_<source>``, as models trained before the limit existed).
    water_balance : WaterBalanceSpec or mapping, optional
        Add the water-balance features ``wb<depth>`` (a daily bucket per sub-pixel; the keys and
        what they mean in :class:`WaterBalanceSpec`: ``precipitation``, ``temperature``,
        ``sand``/``clay`` or ``texture``, ``organic_matter``, ``depths_mm``, ``beta_fraction``,
        ``pet``). Default None: none.

    Examples
    --------
    >>> FeatureSpec(swi_of=("s1_sm",), swi_T=(5, 20)).swi_carry
    True
    """

    static: tuple[str, ...] | None = None
    dynamic: tuple[str, ...] | None = None
    coarse: tuple[str, ...] | None = None
    swi_of: tuple[str, ...] | None = None
    swi_T: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0)
    calendar: bool = True
    swi_carry: bool = True
    swi_max_gap: float | None = SWI_MAX_GAP
    water_balance: WaterBalanceSpec | Mapping[str, Any] | None = None
    _fields: tuple[str, ...] = field(default=("static", "dynamic", "coarse", "swi_of"), repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in self._fields:
            v = getattr(self, name)
            if v is not None:
                object.__setattr__(self, name, tuple(str(x) for x in v))
        T = tuple(float(t) for t in self.swi_T)
        if any(not (t > 0 and np.isfinite(t)) for t in T):
            raise ConfigError(f"swi_T should be positive days, got {self.swi_T}")
        object.__setattr__(self, "swi_T", T)
        gap = self.swi_max_gap
        if gap is not None:
            gap = float(gap)
            if not (gap >= 0 and np.isfinite(gap)):
                raise ConfigError(f"swi_max_gap should be non-negative days or None, got {self.swi_max_gap}")
        object.__setattr__(self, "swi_max_gap", gap)
        if self.water_balance is not None:
            object.__setattr__(self, "water_balance", WaterBalanceSpec.from_config(self.water_balance))

    def get_config(self) -> dict[str, Any]:
        """JSON-safe configuration; ``FeatureSpec.from_config(s.get_config()) == s``."""
        d = asdict(self)
        d.pop("_fields")
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        wb = self.water_balance
        out["water_balance"] = wb.get_config() if isinstance(wb, WaterBalanceSpec) else None
        return out

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FeatureSpec:
        """Inverse of :meth:`get_config` (keys left out take their defaults, as in a user's config)."""
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items()})

    @classmethod
    def from_saved(cls, config: Mapping[str, Any]) -> FeatureSpec:
        """:meth:`from_config` for a configuration saved with a model or table: one saved before
        ``swi_max_gap`` existed carried without limit and comes back so (``None``), not with
        today's default, so that it makes the features it was trained on."""
        return cls.from_config({"swi_max_gap": None, **dict(config)})

    # the earlier spelling, kept working
    to_dict = get_config
    from_dict = from_config


#: The grammar of SWI feature names: ``swi<T>[c[<G>]]_<source>`` (``c``: carried to every day,
#: for at most ``G`` days after the last valid value when ``G`` is given).
_SWI_NAME = re.compile(r"^swi(?P<T>[0-9.eE+-]+)(?P<carry>c(?P<gap>[0-9.]+)?)?_(?P<src>.+)$")


class SWIFeature(NamedTuple):
    """What an SWI feature name says: ``exp_filter(source, T, carry=carry, max_gap=max_gap)``."""

    source: str
    T: float
    carry: bool
    max_gap: float | None


def swi_feature_name(source: str, T: float, carry: bool = True, max_gap: float | None = None) -> str:
    """The feature name of the SWI of ``source`` at characteristic time ``T`` (days).

    The one spelling used by the builder, the engine, the station tables and the naive
    reference; the inverse of :func:`parse_swi_feature`. A carried SWI with a longest gap
    ``max_gap`` (days) is ``swi<T>c<max_gap>_<source>``; without a limit ``swi<T>c_<source>``.

    Examples
    --------
    >>> swi_feature_name("s1_sm", 5.0), swi_feature_name("smap", 2.5, carry=False)
    ('swi5c_s1_sm', 'swi2.5_smap')
    >>> swi_feature_name("s1_sm", 20.0, max_gap=30.0)
    'swi20c30_s1_sm'
    """
    if not carry:
        return f"swi{float(T):g}_{source}"
    return f"swi{float(T):g}c{'' if max_gap is None else format(float(max_gap), 'g')}_{source}"


def parse_swi_feature(name: str) -> SWIFeature | None:
    """:class:`SWIFeature` of an SWI feature name, or None if ``name`` is not one.

    Examples
    --------
    >>> parse_swi_feature("swi20c30_s1_sm")
    SWIFeature(source='s1_sm', T=20.0, carry=True, max_gap=30.0)
    """
    m = _SWI_NAME.match(name)
    if m is None:
        return None
    try:
        gap = float(m["gap"]) if m["gap"] else None
        f = SWIFeature(m["src"], float(m["T"]), bool(m["carry"]), gap)
    except ValueError:
        return None
    if not (f.T > 0 and np.isfinite(f.T)) or (gap is not None and not np.isfinite(gap)):
        return None
    return f


def parse_swi_feature_name(name: str) -> tuple[str, float, bool] | None:
    """``(source, T, carry)`` of an SWI feature name, or None if ``name`` is not one
    (:func:`parse_swi_feature` also gives the longest carried gap).

    Examples
    --------
    >>> parse_swi_feature_name("swi20c_s1_sm"), parse_swi_feature_name("ndvi")
    (('s1_sm', 20.0, True), None)
    """
    f = parse_swi_feature(name)
    return None if f is None else (f.source, f.T, f.carry)


def calendar_features(dates: npt.ArrayLike) -> dict[str, np.ndarray]:
    """``doy_sin``, ``doy_cos``: day of year (1–366) at angle 2π·doy/365.25.

    Examples
    --------
    >>> {k: round(float(v[0]), 4) for k, v in calendar_features(["2021-04-02"]).items()}
    {'doy_sin': 0.9999, 'doy_cos': -0.0118}
    """
    d = pd.DatetimeIndex(pd.to_datetime(np.asarray(dates)))
    a = 2.0 * np.pi * d.day_of_year.to_numpy(dtype=np.float64) / 365.25
    return {"doy_sin": np.sin(a), "doy_cos": np.cos(a)}


def daily_classes(store: TileStore) -> tuple[list[str], list[str]]:
    """The store's daily layers as :class:`FeatureSpec` sees them: ``(dynamic, coarse)``.

    The class of a layer is what its source is — a daily covariate at about the pixel
    resolution or finer (``dynamic``) or a coarse product (``coarse``, native cells of more
    than 4 pixels) — not how the tile stores it: ingest keeps every layer coarser than the
    sub-pixel at its own resolution with an index map, and records each layer's class in the
    tile's ``layer_class`` attribute. Tiles without it (written before, or by
    :class:`~smengine.tiles.TileWriter` directly) are classed by their storage.
    """
    recorded = getattr(store, "attrs", {}).get("layer_class") or {}
    daily = list(store.dynamic_names) + list(store.coarse_names)
    cls = {n: recorded.get(n, "dynamic" if n in store.dynamic_names else "coarse") for n in daily}
    return [n for n in daily if cls[n] == "dynamic"], [n for n in daily if cls[n] == "coarse"]


def _pick(kind: str, want: tuple[str, ...] | None, have: Sequence[str], store: TileStore) -> list[str]:
    if want is None:
        return list(have)
    missing = [n for n in want if n not in have]
    if missing:
        raise ConfigError(f"{store.path}: {kind} feature(s) {missing} not in the store (has {list(have)})")
    return list(want)


class FeatureBuilder:
    """Feature rasters of one tile for a :class:`FeatureSpec`.

    Parameters
    ----------
    store : TileStore
    spec : FeatureSpec, optional

    Attributes
    ----------
    names : list of str
        Feature names in order: static, dynamic, coarse, SWI (``swi<T>c<gap>_<name>`` by
        source then T), water balance (``wb<depth>`` by depth), calendar.
    units : dict of str → str
        Units of every feature: the store's ``units`` for covariates, the source's units
        for ``swi<T>[c]_<name>``, ``"m3 m-3"`` for ``wb<depth>`` and ``"1"`` for
        ``doy_sin``/``doy_cos``.
    kinds : dict of str → str
        ``"static"``, ``"dynamic"``, ``"coarse"``, ``"swi"``, ``"water_balance"`` or
        ``"calendar"`` per feature.
    sources : dict of str → str
        Where a feature comes from, where known: the store's ``sources`` entry for a
        covariate, ``"exp_filter(<name>, T=<T> d)"`` for an SWI feature, ``"bucket(...)"``
        with its inputs and parameters for a water-balance feature.
    wb_names : list of str
        The water-balance features (``spec.water_balance.names``; empty without one).

    Examples
    --------
    >>> fb = FeatureBuilder(TileStore.open("t000_000.h5"))     # doctest: +SKIP
    >>> x = fb.day(0)                               # doctest: +SKIP
    """

    def __init__(self, store: TileStore, spec: FeatureSpec | None = None) -> None:
        self.store = store
        self.spec = spec = spec or FeatureSpec()
        self.static = _pick("static", spec.static, store.static_names, store)
        dyn_class, coarse_class = daily_classes(store)
        self.dynamic = _pick("dynamic", spec.dynamic, dyn_class, store)
        self.coarse = _pick("coarse", spec.coarse, coarse_class, store)
        if spec.swi_of is None:
            self.swi_of = [
                n
                for n in store.dynamic_names + store.coarse_names
                if store.units.get(n, "").strip().lower() in SOIL_MOISTURE_UNITS
            ]
        else:
            self.swi_of = list(spec.swi_of)
            bad = [n for n in self.swi_of if n not in store.dynamic_names + store.coarse_names]
            if bad:
                raise ConfigError(
                    f"{store.path}: SWI source(s) {bad} are not dynamic/coarse covariates of the store "
                    f"({store.dynamic_names + store.coarse_names})"
                )
        if spec.swi_carry:  # a carried SWI source is not also a raw feature unless named (see FeatureSpec)
            if spec.dynamic is None:
                self.dynamic = [n for n in self.dynamic if n not in self.swi_of]
            if spec.coarse is None:
                self.coarse = [n for n in self.coarse if n not in self.swi_of]
        self.swi_names = [
            swi_feature_name(n, T, spec.swi_carry, spec.swi_max_gap) for n in self.swi_of for T in spec.swi_T
        ]
        self.calendar = ["doy_sin", "doy_cos"] if spec.calendar else []
        wb = spec.water_balance if isinstance(spec.water_balance, WaterBalanceSpec) else None
        self.water_balance_spec = wb
        self.wb_names = wb.names if wb is not None else []
        if wb is not None:
            _daily_layer(store, wb.precipitation, "precipitation")  # named now; units and soil on first use
            _daily_layer(store, wb.temperature, "temperature")
            for key, layer in (("sand", wb.sand), ("clay", wb.clay)):
                if layer is not None and layer not in store.static_names:
                    raise ConfigError(
                        f"{store.path}: FeatureSpec.water_balance {key} layer {layer!r} is not a static layer of the "
                        f"tile (it has {list(store.static_names)})"
                    )
        self.names = self.static + self.dynamic + self.coarse + self.swi_names + self.wb_names + self.calendar
        dup = sorted({n for n in self.names if self.names.count(n) > 1})
        if dup:
            raise ConfigError(f"{store.path}: feature name(s) {dup} twice (a tile layer named like a derived feature?)")
        swi_src = dict(zip(self.swi_names, [(n, T) for n in self.swi_of for T in spec.swi_T], strict=True))
        self.kinds: dict[str, str] = {
            **{n: "static" for n in self.static},
            **{n: "dynamic" for n in self.dynamic},
            **{n: "coarse" for n in self.coarse},
            **{n: "swi" for n in self.swi_names},
            **{n: "water_balance" for n in self.wb_names},
            **{n: "calendar" for n in self.calendar},
        }
        derived = set(self.calendar) | set(self.wb_names)
        self.units: dict[str, str] = {
            n: store.units.get(swi_src[n][0] if n in swi_src else n, "") for n in self.names if n not in derived
        }
        self.units.update({n: "m3 m-3" for n in self.wb_names})
        self.units.update({n: "1" for n in self.calendar})
        self.sources: dict[str, str] = {n: store.sources[n] for n in self.names if n in store.sources}
        carry = ", carry" if spec.swi_carry else ""
        if spec.swi_carry and spec.swi_max_gap is not None:
            carry += f" ≤ {spec.swi_max_gap:g} d"
        self.sources.update({n: f"exp_filter({src}, T={T:g} d{carry})" for n, (src, T) in swi_src.items()})
        if wb is not None:
            self.sources.update(
                {n: wb.source().format(depth=f"{d:g}") for n, d in zip(self.wb_names, wb.depths_mm, strict=True)}
            )
        self._wb_inputs: WaterBalanceInputs | None = None
        self._wb_cache: tuple[tuple[int, int, int, int], np.ndarray] | None = None
        self._si = [store.static_names.index(n) for n in self.static]
        # sub-pixel layers by index; daily layers stored at their own resolution are expanded
        self._di = [store.dynamic_names.index(n) if n in store.dynamic_names else -1 for n in self.dynamic]
        self._days = store.times.astype("datetime64[D]").astype(np.float64)

    def __repr__(self) -> str:
        return f"<FeatureBuilder {self.store.tile_id}: {len(self.names)} features {self.names}>"

    def _window(self, window: Window | tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
        """(row0, row1, col0, col1) of a window of the tile's sub-pixels (default the whole tile)."""
        ny, nx = self.store.grid.subpixel_shape
        if window is None:
            return (0, ny, 0, nx)
        (r0, r1), (c0, c1) = as_window(window).toranges()
        if not (0 <= r0 < r1 <= ny and 0 <= c0 < c1 <= nx):
            raise ValidationError(f"window {window} outside the tile's {ny}×{nx} sub-pixels")
        return (int(r0), int(r1), int(c0), int(c1))

    def source_series(self, name: str, window: Window | None = None) -> np.ndarray:
        """All days of one dynamic or coarse covariate over a window: (T, h, w) float32."""
        r0, r1, c0, c1 = self._window(window)
        s = self.store
        if name in s.dynamic_names:
            return np.asarray(s.dynamic[:, s.dynamic_names.index(name), r0:r1, c0:c1], dtype=np.float32)
        layer = s.coarse[name]
        idx = layer.index[r0:r1, c0:c1]
        vals = np.asarray(layer.values, dtype=np.float32)[:, np.maximum(idx, 0)]
        vals[:, idx < 0] = np.nan
        return vals

    def swi(self, window: Window | None = None) -> np.ndarray:
        """SWI of every source and T over all days of the tile: (n_swi, T_days, h, w) float32.

        Ordered as :attr:`swi_names`. Each sub-pixel is filtered along its own series
        (NaN days skipped; days without observation are NaN, or the last SWI with
        ``spec.swi_carry`` for at most ``spec.swi_max_gap`` days).
        """
        r0, r1, c0, c1 = self._window(window)
        out = np.empty((len(self.swi_names), self._days.size, r1 - r0, c1 - c0), dtype=np.float32)
        nT = len(self.spec.swi_T)
        for i, name in enumerate(self.swi_of):
            out[i * nT : (i + 1) * nT] = exp_filter(
                self.source_series(name, (r0, r1, c0, c1)),
                self._days,
                self.spec.swi_T,
                carry=self.spec.swi_carry,
                max_gap=self.spec.swi_max_gap,
            )
        return out

    def water_balance_inputs(self) -> WaterBalanceInputs:
        """The tile's :class:`WaterBalanceInputs` (resolved on first use, then kept)."""
        wb = self.water_balance_spec
        if wb is None:
            raise ConfigError(f"{self.store.path}: the FeatureSpec has no water_balance")
        if self._wb_inputs is None:
            self._wb_inputs = water_balance_inputs(self.store, wb)
        return self._wb_inputs

    def water_balance(self, window: Window | None = None, n_threads: int | None = None) -> np.ndarray:
        """Water-balance features over all days of the tile: (n_wb, T_days, h, w) float32, m³ m⁻³.

        Ordered as :attr:`wb_names` (by depth). Each sub-pixel runs its own bucket
        (:func:`smengine.waterbalance.bucket_oudin`) from field capacity before the tile's first
        day: precipitation (converted to mm) and mean temperature (converted to degC) of the
        sub-pixel, Ra of the tile centre's latitude. A day without precipitation or temperature is
        NaN and leaves the storage unchanged; such sub-pixel-days are counted in one
        :class:`~smengine.errors.DataLossWarning` per call. A sub-pixel without soil limits (NaN
        sand or clay) is NaN every day. A window gives the same values as the whole tile there.

        Raises
        ------
        ValidationError
            Negative precipitation in the window (the message names the layer).
        """
        r0, r1, c0, c1 = self._window(window)
        out = np.empty((len(self.wb_names), self._days.size, r1 - r0, c1 - c0), dtype=np.float32)
        wb = self.water_balance_spec
        if wb is None or self._days.size == 0:
            return out
        inp = self.water_balance_inputs()
        win = (r0, r1, c0, c1)
        precip = _converted(self.source_series(inp.precipitation, win), inp.precip_conversion)
        tmean = _converted(self.source_series(inp.temperature, win), inp.temp_conversion)
        ra = daily_radiation(inp.latitude, self.store.times)
        fc = inp.field_capacity[r0:r1, c0:c1]
        wp = inp.wilting_point[r0:r1, c0:c1]
        where = f"{self.store.path}: water balance of layers {inp.precipitation!r}, {inp.temperature!r}"
        n_missing = n_defined = 0
        for i, depth in enumerate(wb.depths_mm):
            out[i], n_missing, n_defined = _bucket_oudin_kernel(
                precip, tmean, ra, fc, wp, depth, wb.beta_fraction, n_threads, where
            )
        _warn_missing(where, n_missing, self._days.size * n_defined, "precipitation or temperature", stacklevel=3)
        return out

    def _water_balance_cached(self, window: tuple[int, int, int, int]) -> np.ndarray:
        """:meth:`water_balance` of a window, kept for the next :meth:`day` of the same window."""
        if self._wb_cache is None or self._wb_cache[0] != window:
            self._wb_cache = (window, self.water_balance(window))
        return self._wb_cache[1]

    def day(
        self,
        t: int,
        window: Window | None = None,
        swi: np.ndarray | None = None,
        out: np.ndarray | None = None,
        wb: np.ndarray | None = None,
    ) -> np.ndarray:
        """All features of day index ``t`` over a window: (F, h, w) float32.

        Parameters
        ----------
        t : int
            Day index into ``store.times``.
        window : rasterio.windows.Window, optional
            Sub-pixel window (default the whole tile); a ``(row0, row1, col0, col1)`` tuple
            is read by :func:`smengine.grid.as_window`.
        swi : ndarray, optional
            :meth:`swi` of the same window (computed here if needed and not given).
        out : ndarray, optional
            Output buffer (F, h, w) float32.
        wb : ndarray, optional
            :meth:`water_balance` of the same window (computed here if needed and not given,
            and kept for the next day of the same window).
        """
        r0, r1, c0, c1 = self._window(window)
        s = self.store
        if not 0 <= t < self._days.size:
            raise ValidationError(f"day index {t} outside the store's {self._days.size} days")
        h, w = r1 - r0, c1 - c0
        if out is None:
            out = np.empty((len(self.names), h, w), dtype=np.float32)
        k = 0
        for i in self._si:
            out[k] = s.static[i, r0:r1, c0:c1]
            k += 1
        for i, name in zip(self._di, self.dynamic, strict=True):
            if i >= 0:
                out[k] = s.dynamic[t, i, r0:r1, c0:c1]
            else:
                s.coarse[name].expand(t, out=out[k], window=Window(c0, r0, c1 - c0, r1 - r0))
            k += 1
        for name in self.coarse:
            s.coarse[name].expand(t, out=out[k], window=Window(c0, r0, c1 - c0, r1 - r0))
            k += 1
        if self.swi_names:
            if swi is None:
                swi = self.swi(window)
            if swi.shape != (len(self.swi_names), self._days.size, h, w):
                raise ValidationError(
                    f"swi has shape {swi.shape}, expected {(len(self.swi_names), self._days.size, h, w)}"
                )
            out[k : k + len(self.swi_names)] = swi[:, t]
            k += len(self.swi_names)
        if self.wb_names:
            if wb is None:
                wb = self._water_balance_cached((r0, r1, c0, c1))
            if wb.shape != (len(self.wb_names), self._days.size, h, w):
                raise ValidationError(
                    f"wb has shape {wb.shape}, expected {(len(self.wb_names), self._days.size, h, w)}"
                )
            out[k : k + len(self.wb_names)] = wb[:, t]
            k += len(self.wb_names)
        if self.calendar:
            cal = calendar_features([s.times[t]])
            out[k] = cal["doy_sin"][0]
            out[k + 1] = cal["doy_cos"][0]
        return out


def _day_kernel(cell: float, humidity: float, theta: float, pressure: float) -> np.ndarray:
    return footprint_kernel(cell, humidity, float(np.clip(theta, 0.01, 0.6)), pressure)


def _month_span(days: np.ndarray) -> str:
    d = np.asarray(days).astype("datetime64[M]")
    return f"{d.min()}…{d.max()}" if d.size else "none"


def _say_excluded(
    excluded: dict[str, str], daily: pd.DataFrame, stores: Sequence[TileStore], n_rows: int, max_excluded: float
) -> None:
    """A training table's lost stations, said: a DataLossWarning naming them; an error when none is left
    or more than ``max_excluded`` of them are gone."""
    if not excluded:
        return
    n_st = int(daily["station"].nunique())
    listed = "; ".join(f"{sid} ({why})" for sid, why in sorted(excluded.items()))
    if n_rows and len(excluded) > max_excluded * n_st:
        raise DataError(
            f"training table: {len(excluded)} of {n_st} station(s) excluded, more than max_excluded={max_excluded:g}: "
            f"{listed}"
        )
    if n_rows == 0:
        tile_days = np.concatenate([s.times for s in stores]).astype("datetime64[D]")
        raise DataError(
            f"training table: no station-day lies in the tiles' days (stations "
            f"{_month_span(daily['date'].to_numpy().astype('datetime64[D]'))}, tiles {_month_span(tile_days)}); "
            f"{len(excluded)} of {n_st} station(s) excluded: {listed}"
        )
    import warnings

    from smengine.errors import DataLossWarning

    warnings.warn(
        f"training table: {len(excluded)} of {n_st} station(s) left out: {listed}", DataLossWarning, stacklevel=3
    )


def training_table(
    stations: Any,
    stores: TileStore | Iterable[TileStore],
    spec: FeatureSpec | None = None,
    *,
    daily: pd.DataFrame | None = None,
    min_hours: float = 18.0,
    min_valid_fraction: float = 0.5,
    default_humidity: float = 7.0,
    kernel_quantum: tuple[float, float, float] | None = None,
    max_excluded: float = 1.0,
) -> pd.DataFrame:
    r"""One row per station-day: target, site id, date and footprint-weighted features.

    For each station inside a tile and each of its daily values on a day the tile holds,
    the day's kernel is :func:`~smengine.footprint.footprint_kernel` at the tile's
    sub-pixel size with that day's absolute humidity, pressure and the station's soil
    moisture (θ clipped to [0.01, 0.6]); each feature raster of :meth:`FeatureBuilder.day`
    is averaged with :func:`~smengine.footprint.footprint_average` (NaN-aware,
    renormalised, NaN below ``min_valid_fraction``) centred on the station's sub-pixel.

    Parameters
    ----------
    stations : StationSet
        Stations with coordinates (and daily met for the kernel).
    stores : TileStore or iterable of TileStore
        Tiles sharing one spec (their features must match).
    spec : FeatureSpec, optional
    daily : pandas.DataFrame, optional
        ``stations.daily(min_hours)`` if not given (columns station, date, sm, and
        optionally abs_humidity, pressure).
    min_hours : float, optional
        Passed to :meth:`StationSet.daily`.
    min_valid_fraction : float, optional
        Passed to :func:`~smengine.footprint.footprint_average`.
    default_humidity : float, optional
        g m⁻³ where a day has no humidity; pressure defaults to the barometric pressure
        at the station elevation (or 1013.25 hPa).
    kernel_quantum : (humidity g m⁻³, θ m³ m⁻³, pressure hPa), optional
        Round the kernel's inputs to these steps and reuse kernels (the kernel is the
        slow part: ~6 ms each). Default None: the exact kernel of every station-day.
    max_excluded : float, optional
        Largest fraction of the stations that may be left out (outside every tile, no day in
        the tiles) before the table is an error (default 1.0: any number, each said in a
        :class:`~smengine.errors.DataLossWarning` naming the stations). A table with no row at
        all is always an error that gives the stations' and the tiles' time spans.

    Returns
    -------
    pandas.DataFrame
        Columns ``station, date, target`` then the feature names, then ``x``, ``y`` (the
        centre of the station's sub-pixel in the tile grid's CRS, m), ``tile``,
        ``kernel_half_width`` (kernel half-width) and ``valid_fraction`` (minimum over
        features). ``.attrs`` holds ``features`` (names), ``units`` (feature → units, see
        :attr:`FeatureBuilder.units`), ``kinds`` and ``sources`` (see
        :class:`FeatureBuilder`), ``spec`` and ``excluded`` (station → reason: outside
        every tile, no days in the tiles).

    Raises
    ------
    DataError
        No station-day in the tiles, or more than ``max_excluded`` of the stations left out.
    """
    stores = [stores] if isinstance(stores, TileStore) else list(stores)
    if not (isinstance(max_excluded, (int, float)) and 0 <= max_excluded <= 1):
        raise ConfigError(f"max_excluded should be a fraction in [0, 1], got {max_excluded!r}")
    if not stores:
        raise ConfigError("training_table needs at least one TileStore")
    if all(s.times.size == 0 for s in stores):
        raise DataError(
            f"{stores[0].path}{' and the other tiles' if len(stores) > 1 else ''}: no days (static layers only): "
            "a training table needs the tiles' daily layers; ingest the daily sources into them"
        )
    builders = [FeatureBuilder(s, spec) for s in stores]
    names = builders[0].names
    kernel = _day_kernel
    if kernel_quantum is not None:
        qh, qt, qp = (float(q) for q in kernel_quantum)
        if min(qh, qt, qp) <= 0:
            raise ConfigError(f"kernel_quantum should be three positive steps, got {kernel_quantum}")
        cache: dict[tuple[float, int, int, int], np.ndarray] = {}

        def kernel(cell: float, h: float, th: float, p: float) -> np.ndarray:
            key = (cell, round(h / qh), round(th / qt), round(p / qp))
            if key not in cache:
                cache[key] = _day_kernel(cell, key[1] * qh, key[2] * qt, key[3] * qp)
            return cache[key]

    for b in builders[1:]:
        if b.names != names:
            raise ValidationError(f"{b.store.path}: features {b.names} differ from {stores[0].path}: {names}")
        diff = {n: (u, builders[0].units[n]) for n, u in b.units.items() if u != builders[0].units[n]}
        if diff:
            raise ValidationError(
                f"{b.store.path}: feature units differ from {stores[0].path} (name: (this, first)): {diff}"
            )
    daily = stations.daily(min_hours) if daily is None else daily
    meta = stations.metadata()
    rows: list[dict[str, Any]] = []
    excluded: dict[str, str] = {}
    for sid, g in daily.groupby("station", sort=True):
        m = meta.loc[sid]
        hit = None
        for b in builders:
            r, c = b.store.grid.lonlat_to_rowcol(m["lon"], m["lat"], subpixel=True)
            if bool(b.store.grid.contains(r, c, subpixel=True)):
                hit = (b, int(r), int(c))
                break
        if hit is None:
            excluded[sid] = "outside every tile"
            log.warning("station %s (%.4f, %.4f) is outside every tile; excluded", sid, m["lat"], m["lon"])
            continue
        b, r, c = hit
        sx, sy = (float(v) for v in b.store.grid.xy(r, c, subpixel=True))
        days = g["date"].to_numpy().astype("datetime64[D]")
        t_idx = np.searchsorted(b.store.times, days)
        if b.store.times.size:
            ok = (t_idx < b.store.times.size) & (b.store.times[np.minimum(t_idx, b.store.times.size - 1)] == days)
        else:  # a static-only tile: no station day in it
            ok = np.zeros(days.size, dtype=bool)
        if not ok.any():
            excluded[sid] = "no station day inside the tile's days"
            log.warning("station %s: none of its %d days are in tile %s", sid, len(g), b.store.tile_id)
            continue
        g = g[ok]
        t_idx = t_idx[ok]
        elev = m.get("elevation", np.nan)
        p_default = REFERENCE_PRESSURE * float(np.exp(-elev / 8300.0)) if np.isfinite(elev) else REFERENCE_PRESSURE
        hum = (
            g["abs_humidity"].fillna(default_humidity).to_numpy()
            if "abs_humidity" in g
            else np.full(len(g), default_humidity)
        )
        pres = g["pressure"].fillna(p_default).to_numpy() if "pressure" in g else np.full(len(g), p_default)
        cell = b.store.grid.subpixel_resolution
        kernels = [kernel(cell, h, th, p) for h, th, p in zip(hum, g["sm"].to_numpy(), pres, strict=True)]
        half = max(k.shape[0] // 2 for k in kernels)
        ny, nx = b.store.grid.subpixel_shape
        r0, c0 = max(r - half, 0), max(c - half, 0)
        win = Window(c0, r0, min(c + half + 1, nx) - c0, min(r + half + 1, ny) - r0)
        swi = b.swi(win) if b.swi_names else None
        wb = b.water_balance(win) if b.wb_names else None  # every day of the tile, from its first
        buf = np.empty((len(names), win.height, win.width), dtype=np.float32)
        for (_, row), t, k in zip(g.iterrows(), t_idx, kernels, strict=True):
            x = b.day(int(t), win, swi, out=buf, wb=wb)
            vals, frac = footprint_average(x, [r - r0], [c - c0], k, min_valid_fraction, return_valid_fraction=True)
            rec = {"station": sid, "date": row["date"], "target": row["sm"]}
            rec.update(zip(names, vals[:, 0].tolist(), strict=True))
            rec.update(
                x=sx, y=sy, tile=b.store.tile_id, kernel_half_width=k.shape[0] // 2, valid_fraction=float(frac.min())
            )
            rows.append(rec)
    _say_excluded(excluded, daily, stores, len(rows), max_excluded)
    cols = [*TABLE_KEYS, *names, *TABLE_EXTRAS]
    out = pd.DataFrame(rows, columns=cols)
    b0 = builders[0]
    out.attrs.update(
        features=list(names),
        units=dict(b0.units),
        kinds=dict(b0.kinds),
        sources=dict(b0.sources),
        spec=(spec or FeatureSpec()).get_config(),
        excluded=excluded,
    )
    log.info(
        "training table: %d station-days from %d stations (%d excluded)",
        len(out),
        out["station"].nunique(),
        len(excluded),
    )
    return out


# ------------------------------------------------------------------------------------ table files
_TABLE_ATTRS = ("features", "units", "kinds", "sources", "spec", "excluded")


#: File name suffixes of a training table written by :func:`write_table` (NetCDF).
TABLE_SUFFIXES = (".nc", ".nc4")


def write_table(table: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a training table to NetCDF with its units, sources and spec (atomic).

    One dimension ``row``; each column a variable (strings as NetCDF strings, ``date`` as
    days since 1970-01-01); each feature variable carries its ``units``; the table's
    ``.attrs`` (features, units, kinds, sources, spec, excluded stations) are stored as
    JSON in the global attribute ``smengine_table``, so :func:`read_table` gives back the
    table that :func:`smengine.model.train` needs, units included.

    Parameters
    ----------
    table : pandas.DataFrame
        As from :func:`training_table`.
    path : path
        Output file (``.nc`` or ``.nc4``: another suffix is refused rather than given NetCDF
        under a misleading name); written to a temporary name and renamed.

    Returns
    -------
    Path
    """
    import json

    import xarray as xr

    from smengine._io import atomic_target

    if Path(path).suffix.lower() not in TABLE_SUFFIXES:
        raise ConfigError(
            f"write_table: {path}: a training table is written as NetCDF, named {' or '.join(TABLE_SUFFIXES)} "
            "(for plain CSV without units use DataFrame.to_csv or `smengine table --out FILE.csv`)"
        )
    missing = [c for c in TABLE_KEYS if c not in table.columns]
    if missing:
        raise ValidationError(f"write_table: columns {missing} missing (a training table has {list(TABLE_KEYS)})")
    units = dict(table.attrs.get("units") or {})
    ds = xr.Dataset.from_dataframe(table.reset_index(drop=True).rename_axis("row"))
    for name in ds.data_vars:
        if ds[name].dtype == object:
            ds[name] = ds[name].astype(str)
        if name in units:
            ds[name].attrs["units"] = units[name]
    ds["target"].attrs.setdefault("units", "m3 m-3")
    meta = {k: table.attrs[k] for k in _TABLE_ATTRS if k in table.attrs}
    ds.attrs = {
        "title": "smengine training table (one row per station-day)",
        "smengine_table": json.dumps(meta, default=str),
    }
    out = Path(path).expanduser()
    with atomic_target(out) as tmp:
        ds.to_netcdf(tmp, engine="netcdf4", encoding={"date": {"units": "days since 1970-01-01"}})
    log.info("training table: %d rows written to %s", len(table), out)
    return out


def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a training table written by :func:`write_table` (NetCDF) or a CSV.

    A NetCDF table comes back with its ``.attrs`` (features, units, kinds, sources, spec).
    A CSV has no units: its ``.attrs`` stay empty and models trained on it say "units
    unknown" (prefer NetCDF).

    Raises
    ------
    DataError
        Naming the file: unreadable, or not a training table.
    """
    import json

    import xarray as xr

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: the file is empty, not a training table")
    try:
        if p.suffix.lower() == ".csv":
            table = pd.read_csv(p)
        else:
            with open(p, "rb") as f:
                magic = f.read(8)
            if not (magic.startswith(b"CDF") or magic.startswith(b"\x89HDF")):
                raise DataError(
                    f"{p}: not a NetCDF file (a training table is NetCDF from smengine table, or a CSV named *.csv)"
                )
            with xr.open_dataset(p, engine="netcdf4") as ds:
                meta = json.loads(ds.attrs.get("smengine_table", "null") or "null")
                table = ds.to_dataframe().reset_index(drop=True)
            if meta is None:
                raise DataError(
                    f"{p}: not a training table (no smengine_table attribute; write it with "
                    "smengine table or smengine.features.write_table)"
                )
            table.attrs.update(meta)
    except DataError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{p}: cannot read the training table: {exc}") from exc
    missing = [c for c in TABLE_KEYS if c not in table.columns]
    if missing:
        raise DataError(
            f"{p}: column(s) {', '.join(missing)} missing (a training table has {', '.join(TABLE_KEYS)} "
            "and the feature columns)"
        )
    lost = [c for c in table.attrs.get("features", []) if c not in table.columns]
    if lost:
        raise DataError(f"{p}: feature column(s) {', '.join(lost)} listed in the table's features are missing")
    try:
        table["date"] = pd.to_datetime(table["date"])
    except (TypeError, ValueError) as exc:
        raise DataError(f"{p}: the date column does not hold dates (YYYY-MM-DD)") from exc
    return table
