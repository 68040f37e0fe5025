"""The daily gridded soil-moisture product: a CF-1.8 :class:`xarray.Dataset` and its files.

The engine predicts every sub-pixel of every pixel and day and hands over per-pixel arrays
of shape ``(n_days, ny, nx)``: the pixel mean ``sm`` (m3 m-3), the forest spread, the
within-pixel spread of the sub-pixel predictions, the fraction of valid sub-pixels and a
quality flag. :func:`make_product` validates them and wraps them, with coordinates, time
bounds, the grid mapping and the run's configuration, into a Dataset that follows the
CF conventions 1.8. The writers put it on disk without ever leaving a partial file at the
target:

* :func:`write_netcdf` — one NetCDF-4 file (compressed, chunked one day per chunk);
* :func:`write_zarr` — a Zarr store, created or extended by later days (long runs resume);
* :func:`write_cog` — one day of one variable as a Cloud-Optimized GeoTIFF (map layers);
* :func:`open_product` — reads NetCDF or Zarr back, CF-decoded.

Quality flags (``quality_flag``, see :data:`QUALITY_FLAGS`): 0 ``good`` (all sub-pixels
valid), 1 ``partial`` (at least ``min_valid_fraction`` of the sub-pixels valid), 2
``low_valid_fraction`` (some, but fewer), 3 ``no_valid_subpixels``, 4 ``no_input`` (the
pixel was not predicted that day, e.g. a covariate is missing). ``sm`` is NaN for codes
2–4. Products with a dissimilarity index (``di``, Meyer & Pebesma 2021) also set bit 8
(:data:`OUTSIDE_AOA`, ``outside_aoa``) where the pixel-day lies outside the model's area of
applicability (``di`` > the threshold); the code is then ``quality_flag & 7``
(:data:`CODE_MASK`), declared with CF ``flag_masks`` beside ``flag_values``. Products may
also carry the local point density ``lpd`` (Schumacher et al. 2025): how many training rows
lie within the area-of-applicability threshold of the pixel-day's features.

Examples
--------
>>> import numpy as np
>>> from smengine.grid import Grid
>>> from smengine.product import make_product
>>> grid = Grid.from_bounds(4_321_000, 3_210_000, 4_324_000, 3_212_000)  # 3 x 2 pixels of 1 km
>>> sm = np.full((1, 2, 3), 0.25, np.float32)
>>> zero, one = np.zeros_like(sm), np.ones_like(sm)
>>> flags = np.zeros(sm.shape, np.uint8)
>>> ds = make_product(sm, zero, zero, one, flags, grid=grid, times=["2020-06-01"], history="example")
>>> ds["sm"].attrs["units"], ds["sm"].dims, ds.attrs["Conventions"]
('m3 m-3', ('time', 'y', 'x'), 'CF-1.8')
>>> ds["time_bnds"].values.astype("datetime64[D]").tolist()
[[datetime.date(2020, 6, 1), datetime.date(2020, 6, 2)]]

References
----------
Köhli, M., Schrön, M., Zreda, M., Schmidt, U., Dietrich, P., Zacharias, S. (2015):
Footprint characteristics revised for field-scale soil moisture monitoring with cosmic-ray
neutrons. Water Resour. Res. 51, 5772–5790, doi:10.1002/2015WR017169.

Schrön, M., et al. (2017): Improving calibration and validation of cosmic-ray neutron
sensors in the light of spatial sensitivity. Hydrol. Earth Syst. Sci. 21, 5009–5030,
doi:10.5194/hess-21-5009-2017.

Eaton, B., et al.: NetCDF Climate and Forecast (CF) Metadata Conventions, version 1.8.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import os
import stat
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import xarray as xr
from affine import Affine
from pyproj import CRS

import smengine
from smengine._days import as_days
from smengine._io import atomic_target
from smengine.errors import ConfigError, DataError, SMEngineError, ValidationError
from smengine.grid import Grid, transformer

log = logging.getLogger(__name__)

__all__ = [
    "CODE_MASK",
    "OUTSIDE_AOA",
    "QUALITY_FLAGS",
    "QualityFlag",
    "make_product",
    "open_product",
    "write_cog",
    "write_netcdf",
    "write_zarr",
]


class QualityFlag(enum.IntEnum):
    """Codes of ``quality_flag`` (uint8), defined once; the engine kernel mirrors them in its
    C enum (``_engine.QUALITY_FLAG_CODES``, checked by a test). ``sm`` is NaN from
    ``LOW_VALID_FRACTION`` on."""

    GOOD = 0  #: every sub-pixel has a prediction
    PARTIAL = 1  #: at least min_valid_fraction of them
    LOW_VALID_FRACTION = 2  #: fewer than min_valid_fraction: sm NaN
    NO_VALID_SUBPIXELS = 3  #: none: sm NaN
    NO_INPUT = 4  #: not predicted (the day is not in the tile): sm NaN


#: ``flag_meanings`` name → code of :class:`QualityFlag` (the CF attribute pair).
QUALITY_FLAGS: dict[str, int] = {f.name.lower(): int(f) for f in QualityFlag}

#: Bit of ``quality_flag`` set where the pixel-day lies outside the area of applicability
#: (``di`` > threshold; only in products that carry ``di``).
OUTSIDE_AOA = 8

#: The bits of ``quality_flag`` that hold the :class:`QualityFlag` code (``flag & CODE_MASK``).
CODE_MASK = 7

_NAN_CODES = tuple(int(f) for f in QualityFlag if f >= QualityFlag.LOW_VALID_FRACTION)  # sm is NaN
_TIME_UNITS = "days since 1970-01-01"
_CALENDAR = "standard"
_CF_RELATED = ("grid_mapping", "bounds")  # attributes naming other variables (xarray: CF_RELATED_DATA)
_SPATIAL_CHUNK = 1000  # pixels per chunk side (4 MB of float32), one day per chunk
# global attributes that must agree before days are appended to an existing Zarr store
_APPEND_MUST_MATCH = ("Conventions", "smengine_grid", "smengine_config", "smengine_model_card", "min_valid_fraction")

_REFERENCES = (
    "Schrön, M., et al. (2017): Improving calibration and validation of cosmic-ray neutron sensors "
    "in the light of spatial sensitivity. Hydrol. Earth Syst. Sci. 21, 5009-5030, "
    "doi:10.5194/hess-21-5009-2017.\n"
    "Köhli, M., Schrön, M., Zreda, M., Schmidt, U., Dietrich, P., Zacharias, S. (2015): Footprint "
    "characteristics revised for field-scale soil moisture monitoring with cosmic-ray neutrons. "
    "Water Resour. Res. 51, 5772-5790, doi:10.1002/2015WR017169."
)

_VAR_ATTRS: dict[str, dict[str, Any]] = {
    "sm": {
        "standard_name": "volume_fraction_of_condensed_water_in_soil",
        "long_name": "profile soil moisture emulating a cosmic-ray neutron sensor (CRNS), footprint-weighted",
        "units": "m3 m-3",
        "cell_methods": "time: mean area: mean",
        "valid_min": np.float32(0.0),
        "valid_max": np.float32(1.0),
        "comment": (
            "Daily (UTC) volumetric soil moisture a CRNS would measure: weighted horizontally over its "
            "footprint (radius R86) and vertically over its penetration depth (D86), Köhli et al. (2015), "
            "Schrön et al. (2017). A Random Forest predicts each sub-pixel; the pixel value is the "
            "unweighted mean of the valid sub-pixel predictions. NaN where quality_flag is 2-4."
        ),
    },
    "sm_uncertainty": {
        "long_name": "spread of the Random Forest prediction of sm",
        "units": "m3 m-3",
        "cell_methods": "time: mean area: mean",
        "comment": (
            "Standard deviation over the trees of the forest of each sub-pixel prediction, averaged over "
            "the valid sub-pixels of the pixel. An ensemble spread, not a standard error of sm."
        ),
    },
    "sm_subpixel_sd": {
        "long_name": "within-pixel standard deviation of the sub-pixel predictions of sm",
        "units": "m3 m-3",
        "cell_methods": "time: mean area: standard_deviation",
        "comment": "Standard deviation of the valid sub-pixel predictions within the pixel (heterogeneity).",
    },
    "valid_fraction": {
        "long_name": "fraction of the sub-pixels with a valid prediction",
        "units": "1",
        "valid_min": np.float32(0.0),
        "valid_max": np.float32(1.0),
    },
    "d86": {
        "long_name": "penetration depth of the CRNS footprint (86 % of the signal, D86)",
        "units": "cm",
        "comment": "Köhli et al. (2015), Schrön et al. (2017): depth above which 86 % of the detected neutrons "
        "probed the soil, computed from sm, bulk density and r = 1 m.",
    },
    "r86": {
        "long_name": "radius of the CRNS footprint (86 % of the signal, R86)",
        "units": "m",
        "comment": "Köhli et al. (2015), Schrön et al. (2017): radius within which 86 % of the detected "
        "neutrons originate, depending on air humidity, soil moisture, pressure and vegetation.",
    },
    "di": {
        "long_name": "dissimilarity index (Meyer and Pebesma 2021)",
        "units": "1",
        "references": "Meyer, H., Pebesma, E. (2021): Predicting into unknown space? Estimating the area of "
        "applicability of spatial prediction models. Methods Ecol. Evol. 12, 1620-1633, doi:10.1111/2041-210X.13650.",
    },
    "lpd": {
        "long_name": "local point density",
        "units": "1",
        "references": "Schumacher, F. L., Knoth, C., Ludwig, M., Meyer, H. (2025): Estimation of local training "
        "data point densities to support the assessment of spatial prediction uncertainty. Geosci. Model Dev. 18, "
        "10185, doi:10.5194/gmd-18-10185-2025.",
    },
}

_DI_COMMENT = (
    "Distance of the pixel's mean feature vector (the forest's features averaged over its valid sub-pixels) to "
    "the nearest training row, features standardised by the training mean and SD and weighted by the forest's "
    "importances, divided by the mean distance between training rows. Outside the area of applicability "
    "(quality_flag bit 8, outside_aoa) where di > {thr:.6g}, the largest non-outlier cross-validated training DI "
    "(stations as folds).{err} NaN where sm is NaN."
)

_LPD_COMMENT = (
    "Number of the model's {n} training rows (station-days) whose dissimilarity index to the pixel's mean feature "
    "vector (the forest's features averaged over its valid sub-pixels, standardised and importance-weighted as for "
    "di) is below the area-of-applicability threshold {thr:.6g}: how densely the training data cover the pixel-day's "
    "conditions (Schumacher et al. 2025; CAST's aoa(LPD = TRUE)). {how} NaN where sm is NaN."
)


# ---------------------------------------------------------------------------- helpers
def _json(obj: Any, what: str) -> str:
    """Sorted, strict JSON of a configuration value (numpy scalars and arrays, paths, dates)."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (Path, os.PathLike)):
            return os.fspath(o)
        if hasattr(o, "get_config"):
            return o.get_config()
        if hasattr(o, "isoformat"):
            return o.isoformat()
        if isinstance(o, (set, frozenset, tuple)):
            return sorted(o) if isinstance(o, (set, frozenset)) else list(o)
        raise TypeError(f"{type(o).__name__} is not JSON-serialisable")

    try:
        return json.dumps(obj, sort_keys=True, default=default, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot store {what} as JSON: {exc}") from exc


def _model_card_json(model_card: Any) -> str:
    if isinstance(model_card, str):
        try:
            json.loads(model_card)
        except ValueError as exc:
            raise ConfigError(f"model_card: a str should be JSON text, got {model_card[:60]!r}…") from exc
        return model_card
    if hasattr(model_card, "to_json"):
        return str(model_card.to_json())
    if isinstance(model_card, Mapping):
        return _json(dict(model_card), "model_card")
    raise ConfigError(f"model_card should be a ModelCard, a dict or JSON text, got {type(model_card).__name__}")


def _as_days(times: Any, what: str = "times") -> pd.DatetimeIndex:
    """Dates → naive UTC day starts, datetime64[ns]; checks 00:00 UTC and strictly increasing."""
    days = as_days(times, what=what, exact=True, increasing=True)
    return pd.DatetimeIndex(days.astype("datetime64[ns]"))


def _array(name: str, a: npt.ArrayLike, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    arr = np.asarray(a)
    if arr.shape != shape:
        raise ValidationError(f"{name} has shape {arr.shape}, expected {shape} (like sm: time, y, x)")
    if dtype is np.float32 and arr.dtype.kind not in "fiu":
        raise ValidationError(f"{name}.dtype should be a real number type, got {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _where(mask: np.ndarray, days: pd.DatetimeIndex) -> str:
    t, r, c = np.unravel_index(int(np.argmax(mask)), mask.shape)
    return f"{int(mask.sum())} pixel-days, first on {days[t]:%Y-%m-%d} at row {r}, column {c}"


def _crs_attrs(crs: CRS, transform: Affine) -> dict[str, Any]:
    attrs = {"long_name": "coordinate reference system", **crs.to_cf()}
    wkt = attrs.get("crs_wkt") or crs.to_wkt()
    attrs["crs_wkt"] = wkt
    attrs["spatial_ref"] = wkt  # GDAL and rioxarray read this one
    attrs["GeoTransform"] = " ".join(repr(float(v)) for v in transform.to_gdal())
    return attrs


def _base_encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Format-independent encoding: time units, fill values, integer types."""
    enc: dict[str, dict[str, Any]] = {}
    for key, v in ds.variables.items():
        name = str(key)
        if name in ("time", "time_bnds"):
            enc[name] = {"units": _TIME_UNITS, "calendar": _CALENDAR, "dtype": "int32", "_FillValue": None}
        elif name in ("x", "y", "lat", "lon"):
            enc[name] = {"_FillValue": None}
        elif name == "crs":
            enc[name] = {"dtype": "int32", "_FillValue": None}
        elif name == "quality_flag":
            enc[name] = {"dtype": "uint8", "_FillValue": None}
        elif v.dtype.kind == "f":
            enc[name] = {"dtype": "float32", "_FillValue": np.float32(np.nan)}
    return enc


def _chunks(ds: xr.Dataset) -> tuple[int, int, int]:
    return (1, min(ds.sizes["y"], _SPATIAL_CHUNK), min(ds.sizes["x"], _SPATIAL_CHUNK))


# ---------------------------------------------------------------------------- the product
def make_product(
    sm: npt.ArrayLike,
    uncertainty: npt.ArrayLike,
    subpixel_sd: npt.ArrayLike,
    valid_fraction: npt.ArrayLike,
    quality_flag: npt.ArrayLike,
    *,
    grid: Grid,
    times: Any,
    d86: npt.ArrayLike | None = None,
    r86: npt.ArrayLike | None = None,
    di: npt.ArrayLike | None = None,
    di_threshold: float | None = None,
    di_max_error: float = 0.0,
    lpd: npt.ArrayLike | None = None,
    lpd_threshold: float | None = None,
    lpd_n_train: int | None = None,
    lpd_max_error: float = 0.0,
    min_valid_fraction: float = 0.5,
    model_card: Any = None,
    config: Mapping[str, Any] | None = None,
    history: str | None = None,
    lonlat: bool = True,
) -> xr.Dataset:
    """Wrap the engine's per-pixel arrays into the CF-1.8 product Dataset.

    Parameters
    ----------
    sm : array_like, shape (n_days, ny, nx)
        Daily pixel-mean soil moisture (m3 m-3), the mean of the valid sub-pixel
        predictions; NaN where ``quality_flag`` is 2–4. Stored as float32.
    uncertainty : array_like, same shape
        Forest spread (m3 m-3): the standard deviation over the trees of each sub-pixel
        prediction, averaged over the valid sub-pixels. Written as ``sm_uncertainty``.
    subpixel_sd : array_like, same shape
        Within-pixel standard deviation of the sub-pixel predictions (m3 m-3), written as
        ``sm_subpixel_sd``.
    valid_fraction : array_like, same shape
        Fraction of the pixel's sub-pixels with a valid prediction, in [0, 1].
    quality_flag : array_like of int, same shape
        Codes of :data:`QUALITY_FLAGS`; stored as uint8.
    grid : Grid
        The grid the arrays cover (``ny, nx == grid.shape``); for one tile pass
        ``grid.tile_grid(tile)``.
    times : sequence of dates
        One date per day (anything :func:`pandas.to_datetime` accepts; time-zone aware
        values are converted to UTC). Each must be the start (00:00 UTC) of its day, and
        they must increase strictly (gaps are allowed).
    d86 : array_like, optional, same shape
        Penetration depth D86 of the CRNS footprint (cm), Köhli et al. (2015).
    r86 : array_like, optional, same shape
        Footprint radius R86 (m), Köhli et al. (2015), Schrön et al. (2017).
    di : array_like, optional, same shape
        Dissimilarity index of each pixel-day (Meyer & Pebesma 2021,
        :class:`smengine.model.Applicability`); needs ``di_threshold``. With it,
        ``quality_flag`` may carry bit :data:`OUTSIDE_AOA`, which must be set exactly where
        ``di > di_threshold``.
    di_threshold : float, optional
        The area-of-applicability threshold of ``di`` (in the variable's comment).
    di_max_error : float, optional
        Bound on the DI's error from a thinned training reference (0: exact), in the comment.
    lpd : array_like, optional, same shape
        Local point density of each pixel-day (Schumacher et al. 2025,
        :meth:`smengine.model.Applicability.lpd`): a count of training rows, 0 to
        ``lpd_n_train``, NaN where there is none; stored as float32. Needs ``lpd_threshold``
        and ``lpd_n_train``.
    lpd_threshold : float, optional
        The DI threshold below which a training row counts (in the variable's comment).
    lpd_n_train : int, optional
        Number of training rows (in the comment; an upper bound of ``lpd``).
    lpd_max_error : float, optional
        0 (default): the LPD is exact. Else the reference was thinned and this is the DI error
        bound: the LPD lies between the exact LPDs with the thresholds ``lpd_threshold ∓
        lpd_max_error`` (in the comment).
    min_valid_fraction : float, optional
        Threshold on ``valid_fraction`` below which a pixel is flagged 2 and ``sm`` is NaN
        (default 0.5); must be the one the engine used. Recorded as a global attribute.
    model_card : ModelCard or dict or str, optional
        The trained model's card (:class:`smengine.model.ModelCard`, its dict or its JSON
        text), stored as JSON in the ``smengine_model_card`` attribute (left out when None).
    config : dict, optional
        The resolved run configuration, stored as sorted-key JSON in ``smengine_config``
        (``{}`` when None). A top-level ``"institution"`` entry also becomes the
        ``institution`` attribute.
    history : str, optional
        The ``history`` attribute; default ``"<UTC ISO time> smengine <version>: make_product"``.
        Pass a fixed string for reproducible output.
    lonlat : bool, optional
        Add 2-D ``lat``/``lon`` auxiliary coordinates (float64, degrees, WGS 84; default
        True). They cost 16 bytes per pixel; turn them off for very large grids.

    Returns
    -------
    xarray.Dataset
        Data variables ``sm``, ``sm_uncertainty``, ``sm_subpixel_sd``, ``valid_fraction``,
        ``quality_flag`` (and ``d86``, ``r86``, ``di``, ``lpd`` when given) on ``(time, y, x)``;
        coordinates ``time`` (day start, with ``time_bnds`` = [day start, next day start)),
        ``y``, ``x`` (pixel centres, m), ``crs`` (the CF grid mapping, with ``crs_wkt``,
        ``spatial_ref`` and ``GeoTransform``) and, with ``lonlat``, ``lat``/``lon``. The
        variables carry their on-disk encoding (days since 1970-01-01, NaN fill values).

    Raises
    ------
    ConfigError
        ``grid`` is not a :class:`Grid`; ``min_valid_fraction`` outside (0, 1]; a model
        card or configuration that is not JSON-serialisable.
    ValidationError
        Arrays that are not 3-D, do not match the grid or each other (the message names the
        variable and both shapes); a number of dates that differs from the number of days;
        dates that are not UTC day starts or do not increase; unknown flag codes; the
        ``outside_aoa`` bit without ``di`` or where ``di`` does not exceed the threshold; ``sm``
        not NaN where the flag is 2–4, NaN where it is 0–1, or outside [0, 1];
        ``valid_fraction`` outside [0, 1] or inconsistent with the flags and
        ``min_valid_fraction``; negative spreads, D86, R86, DI or LPD; an LPD above
        ``lpd_n_train``.

    Notes
    -----
    Arrays that are already C-contiguous float32 (uint8 for the flag) are used without a
    copy: do not overwrite them while the Dataset is in use.

    ``cell_methods = "time: mean area: mean"``: the value is a daily mean (a CRNS
    integrates neutron counts over the day) and a mean over the pixel area (of the
    sub-pixel predictions). ``sm_uncertainty`` has no CF ``standard_error`` modifier on
    purpose: a spread over trees is not the standard error of ``sm``.

    References
    ----------
    Köhli et al. (2015), WRR 51, 5772–5790; Schrön et al. (2017), HESS 21, 5009–5030.
    """
    if not isinstance(grid, Grid):
        raise ConfigError(f"grid should be a smengine.grid.Grid, got {type(grid).__name__}")
    mvf = float(min_valid_fraction)
    if not (math.isfinite(mvf) and 0.0 < mvf <= 1.0):
        raise ConfigError(f"min_valid_fraction should be in (0, 1], got {min_valid_fraction!r}")

    sm_arr = np.asarray(sm)
    if sm_arr.ndim != 3:
        raise ValidationError(f"sm should be 3-D (time, y, x), got shape {sm_arr.shape}")
    if sm_arr.shape[1:] != grid.shape:
        raise ValidationError(
            f"sm has shape {sm_arr.shape}, expected ({sm_arr.shape[0]}, {grid.shape[0]}, {grid.shape[1]}) "
            f"for the {grid.shape[0]}x{grid.shape[1]} grid (time, y, x)"
        )
    shape = sm_arr.shape
    days = _as_days(times)
    if days.size != shape[0]:
        raise ValidationError(f"times has {days.size} days but sm has {shape[0]} (its first axis)")

    data = {"sm": _array("sm", sm_arr, shape, np.float32)}
    data["sm_uncertainty"] = _array("uncertainty", uncertainty, shape, np.float32)
    data["sm_subpixel_sd"] = _array("subpixel_sd", subpixel_sd, shape, np.float32)
    data["valid_fraction"] = _array("valid_fraction", valid_fraction, shape, np.float32)
    if d86 is not None:
        data["d86"] = _array("d86", d86, shape, np.float32)
    if r86 is not None:
        data["r86"] = _array("r86", r86, shape, np.float32)
    if di is not None:
        if di_threshold is None or not math.isfinite(float(di_threshold)):
            raise ConfigError(f"di needs a finite di_threshold, got {di_threshold!r}")
        data["di"] = _array("di", di, shape, np.float32)
    lpd_comment = ""
    if lpd is not None:
        if lpd_threshold is None or not math.isfinite(float(lpd_threshold)):
            raise ConfigError(f"lpd needs a finite lpd_threshold, got {lpd_threshold!r}")
        if lpd_n_train is None or int(lpd_n_train) < 1:
            raise ConfigError(f"lpd needs lpd_n_train, the number of training rows (>= 1), got {lpd_n_train!r}")
        n_train, lpd_thr, lpd_err = int(lpd_n_train), float(lpd_threshold), float(lpd_max_error)
        data["lpd"] = _array("lpd", lpd, shape, np.float32)
        with np.errstate(invalid="ignore"):
            bad = data["lpd"] > np.float32(n_train)
        if bad.any():
            raise ValidationError(
                f"lpd counts training rows: it should be <= lpd_n_train={n_train}; it is not at {_where(bad, days)}"
            )
        how = (
            f"Exact: counted over all {n_train} training rows."
            if not lpd_err
            else "Approximate: counted on a thinned training set (each kept row counts for the training rows of its "
            f"cube), so it lies between the exact counts with the thresholds {lpd_thr - lpd_err:.6g} and "
            f"{lpd_thr + lpd_err:.6g} (above or below the exact count)."
        )
        lpd_comment = _LPD_COMMENT.format(n=n_train, thr=lpd_thr, how=how)

    flag_in = np.asarray(quality_flag)
    if flag_in.shape != shape:
        raise ValidationError(f"quality_flag has shape {flag_in.shape}, expected {shape} (like sm: time, y, x)")
    if flag_in.dtype.kind not in "iu":
        raise ValidationError(f"quality_flag.dtype should be an integer type, got {flag_in.dtype}")
    codes_in = flag_in - (flag_in & OUTSIDE_AOA) if di is not None else flag_in  # the code, without the bit
    outside = ~np.isin(codes_in, list(QUALITY_FLAGS.values()))
    if outside.any():
        unknown = [int(c) for c in np.unique(flag_in[outside])]
        extra = f" (plus bit {OUTSIDE_AOA} outside_aoa)" if di is not None else ""
        raise ValidationError(f"quality_flag has unknown codes {unknown}; known codes are {QUALITY_FLAGS}{extra}")
    flag = np.ascontiguousarray(flag_in, dtype=np.uint8)
    if di is not None:
        with np.errstate(invalid="ignore"):
            bad = ((flag & OUTSIDE_AOA) > 0) != (data["di"] > np.float32(di_threshold))
        if bad.any():
            raise ValidationError(
                f"quality_flag bit {OUTSIDE_AOA} (outside_aoa) should be set exactly where di > {di_threshold:g}; "
                f"it is not at {_where(bad, days)}"
            )

    _check_consistency(data, flag, days, mvf)

    ds = _assemble(data, flag, grid, days, lonlat)
    if di is not None:
        err = f" From a thinned training set: at most {di_max_error:.3g} above the exact DI." if di_max_error else ""
        ds["di"].attrs["comment"] = _DI_COMMENT.format(thr=float(di_threshold), err=err)  # type: ignore[arg-type]
    if lpd is not None:
        ds["lpd"].attrs["comment"] = lpd_comment
    cfg = {} if config is None else config
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"config should be a dict, got {type(cfg).__name__}")
    attrs: dict[str, Any] = {
        "Conventions": "CF-1.8",
        "title": f"smengine daily gridded profile soil moisture ({grid.resolution:g} m), emulating "
        "cosmic-ray neutron sensors",
        "source": f"smengine {smengine.__version__}",
        "history": history
        if history is not None
        else f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} smengine {smengine.__version__}: make_product",
        "references": _REFERENCES,
        "comment": (
            "Random Forest trained at CRNS stations on remote-sensing covariates, applied to every "
            f"sub-pixel ({grid.subpixel_resolution:g} m) and averaged to the pixel (sub-pixel scaling). "
            "Days are UTC days; time is the start of the day, time_bnds its extent."
        ),
        "smengine_grid": _json(grid.get_config(), "the grid"),
        "smengine_config": _json(dict(cfg), "config"),
        "min_valid_fraction": mvf,
    }
    if "institution" in cfg:
        attrs["institution"] = str(cfg["institution"])
    if model_card is not None:
        attrs["smengine_model_card"] = _model_card_json(model_card)
    ds.attrs = attrs
    log.debug("product: %d days of a %dx%d grid, %s", shape[0], shape[1], shape[2], list(ds.data_vars))
    return ds


def _check_consistency(data: dict[str, np.ndarray], flag: np.ndarray, days: pd.DatetimeIndex, mvf: float) -> None:
    flag = flag & CODE_MASK  # the code, without the outside_aoa bit
    sm = data["sm"]
    isnan = np.isnan(sm)
    no_sm = np.isin(flag, _NAN_CODES)
    bad = no_sm & ~isnan
    if bad.any():
        raise ValidationError(
            "sm should be NaN where quality_flag is 2-4 (low_valid_fraction, no_valid_subpixels, no_input); "
            f"it is not at {_where(bad, days)}"
        )
    bad = ~no_sm & isnan
    if bad.any():
        raise ValidationError(f"sm is NaN where quality_flag is 0 or 1 (good, partial) at {_where(bad, days)}")
    with np.errstate(invalid="ignore"):
        bad = ~isnan & ~((sm >= 0.0) & (sm <= 1.0))
    if bad.any():
        raise ValidationError(f"sm should be within [0, 1] m3 m-3; it is not at {_where(bad, days)}")
    vf = data["valid_fraction"]
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(vf) & ~((vf >= 0.0) & (vf <= 1.0))
        if bad.any():
            raise ValidationError(f"valid_fraction should be within [0, 1]; it is not at {_where(bad, days)}")
        bad = ~no_sm & ~(vf >= np.float32(mvf))
        if bad.any():
            raise ValidationError(
                f"valid_fraction is below min_valid_fraction={mvf:g} (or NaN) where quality_flag is 0 or 1 "
                f"at {_where(bad, days)}; was the engine run with another min_valid_fraction?"
            )
        bad = (flag == QualityFlag.LOW_VALID_FRACTION) & (vf >= np.float32(mvf))
        if bad.any():
            raise ValidationError(
                f"quality_flag is 2 (low_valid_fraction) but valid_fraction >= min_valid_fraction={mvf:g} "
                f"at {_where(bad, days)}"
            )
        for name in ("sm_uncertainty", "sm_subpixel_sd", "d86", "r86", "di", "lpd"):
            if name in data:
                bad = data[name] < 0
                if bad.any():
                    raise ValidationError(f"{name} should be >= 0; it is negative at {_where(bad, days)}")


def _assemble(
    data: dict[str, np.ndarray], flag: np.ndarray, grid: Grid, days: pd.DatetimeIndex, lonlat: bool
) -> xr.Dataset:
    ny, nx = grid.shape
    x, _ = grid.xy(np.zeros(nx), np.arange(nx))
    _, y = grid.xy(np.arange(ny), np.zeros(ny))
    crs = grid.pyproj_crs
    dims = ("time", "y", "x")
    start = days.values
    bnds = np.stack([start, (days + pd.Timedelta(days=1)).values], axis=1)

    coords: dict[str, Any] = {
        "time": (
            "time",
            start,
            {"standard_name": "time", "long_name": "start of the UTC day", "axis": "T", "bounds": "time_bnds"},
        ),
        "y": (
            "y",
            y,
            {
                "standard_name": "projection_y_coordinate",
                "long_name": "y coordinate of pixel centre",
                "units": "m",
                "axis": "Y",
            },
        ),
        "x": (
            "x",
            x,
            {
                "standard_name": "projection_x_coordinate",
                "long_name": "x coordinate of pixel centre",
                "units": "m",
                "axis": "X",
            },
        ),
        "crs": ((), np.int32(0), _crs_attrs(crs, grid.transform)),
        "time_bnds": (("time", "nv"), bnds, {}),
    }
    if lonlat:
        xx, yy = np.meshgrid(x, y)
        lon, lat = transformer(crs, "EPSG:4326").transform(xx, yy)
        coords["lat"] = (
            ("y", "x"),
            np.asarray(lat, np.float64),
            {"standard_name": "latitude", "long_name": "latitude of pixel centre", "units": "degrees_north"},
        )
        coords["lon"] = (
            ("y", "x"),
            np.asarray(lon, np.float64),
            {"standard_name": "longitude", "long_name": "longitude of pixel centre", "units": "degrees_east"},
        )

    ancillary = ["sm_uncertainty", "sm_subpixel_sd", "valid_fraction", "quality_flag"]
    ancillary += [n for n in ("d86", "r86", "di", "lpd") if n in data]
    variables: dict[str, Any] = {}
    for name, arr in data.items():
        attrs = dict(_VAR_ATTRS[name])
        if name == "sm":
            attrs["ancillary_variables"] = " ".join(ancillary)
        attrs["grid_mapping"] = "crs"
        variables[name] = (dims, arr, attrs)
    meanings = " ".join(sorted(QUALITY_FLAGS, key=QUALITY_FLAGS.__getitem__))
    values = sorted(QUALITY_FLAGS.values())
    qf_attrs: dict[str, Any] = {
        "standard_name": "status_flag",
        "long_name": "quality flag of sm",
        "flag_values": np.array(values, dtype=np.uint8),
        "flag_meanings": meanings,
        "grid_mapping": "crs",
        "comment": (
            "0 good: all sub-pixels valid; 1 partial: at least min_valid_fraction (global attribute) of the "
            "sub-pixels valid; 2 low_valid_fraction: fewer valid sub-pixels than min_valid_fraction; "
            "3 no_valid_subpixels; 4 no_input: not predicted (input missing). sm is NaN for codes 2-4."
        ),
    }
    if "di" in data:  # the outside_aoa bit beside the codes: CF flag_masks with flag_values
        qf_attrs["flag_values"] = np.array([*values, OUTSIDE_AOA], dtype=np.uint8)
        qf_attrs["flag_masks"] = np.array([CODE_MASK] * len(values) + [OUTSIDE_AOA], dtype=np.uint8)
        qf_attrs["flag_meanings"] = f"{meanings} outside_aoa"
        qf_attrs["comment"] += (
            f" Bit {OUTSIDE_AOA} (outside_aoa) is set where the pixel-day lies outside the model's area of "
            f"applicability (di above its threshold, Meyer and Pebesma 2021); the code is quality_flag & {CODE_MASK}."
        )
    variables["quality_flag"] = (dims, flag, qf_attrs)
    order = ["sm", "sm_uncertainty", "sm_subpixel_sd", "valid_fraction", "quality_flag", "d86", "r86", "di", "lpd"]
    ds = xr.Dataset({n: variables[n] for n in order if n in variables}, coords=coords)
    for name, enc in _base_encoding(ds).items():
        ds[name].encoding.update(enc)
    return ds


# ---------------------------------------------------------------------------- writing
def _check_product(ds: xr.Dataset, where: str) -> None:
    if not isinstance(ds, xr.Dataset):
        raise ConfigError(f"{where}: expected an xarray.Dataset from make_product, got {type(ds).__name__}")
    missing = [n for n in ("sm", "crs", "x", "y", "time") if n not in ds.variables]
    if missing or "smengine_grid" not in ds.attrs:
        raise ValidationError(
            f"{where}: not an smengine product (missing {missing or ['attribute smengine_grid']}); "
            "build it with make_product"
        )


def _grid_of(ds: xr.Dataset) -> Grid:
    """The grid of the dataset's x/y coordinates (follows spatial subsetting of the product)."""
    base = Grid.from_config(ds.attrs["smengine_grid"])
    x, y = np.asarray(ds["x"].values, np.float64), np.asarray(ds["y"].values, np.float64)
    res = base.resolution
    if x.size == 0 or y.size == 0:
        raise ValidationError("the product has no pixels (x or y is empty)")
    tol = 1e-6 * res
    if (x.size > 1 and not np.allclose(np.diff(x), res, rtol=0, atol=tol)) or (
        y.size > 1 and not np.allclose(np.diff(y), -res, rtol=0, atol=tol)
    ):
        raise ValidationError(f"x/y should be pixel centres of a north-up grid with {res:g} m spacing")
    xmin, ymax = x[0] - res / 2, y[0] + res / 2
    if (y.size, x.size) == base.shape and abs(xmin - base.xmin) <= tol and abs(ymax - base.ymax) <= tol:
        return base
    return Grid(base.crs, res, float(xmin), float(ymax), int(x.size), int(y.size), base.subpixel, base.tile_size)


def _for_writing(ds: xr.Dataset, where: str) -> xr.Dataset:
    """Shallow copy with fresh encodings and the grid attributes synced to x/y."""
    _check_product(ds, where)
    grid = _grid_of(ds)
    out = ds.copy(deep=False)
    out.attrs = dict(ds.attrs)
    if grid.get_config() != Grid.from_config(ds.attrs["smengine_grid"]).get_config():
        log.info("%s: the product was subset in space; grid attributes updated to %s", where, grid.get_config())
    out.attrs["smengine_grid"] = _json(grid.get_config(), "the grid")
    crs_attrs = dict(ds["crs"].attrs)
    crs_attrs["GeoTransform"] = " ".join(repr(float(v)) for v in grid.transform.to_gdal())
    out["crs"].attrs = crs_attrs  # a shallow copy's variables are its own: ds is left alone
    encoding = _base_encoding(out)
    for name, v in out.variables.items():
        v.encoding = dict(encoding.get(str(name), {}))
        v.attrs = dict(v.attrs)
        for key in _CF_RELATED:  # xarray writes these from the encoding
            if key in v.attrs:
                v.encoding[key] = v.attrs.pop(key)
        if v.encoding.get("grid_mapping") == "crs":
            # crs listed as a coordinate too, so that a plain xr.open_dataset makes it one and
            # rioxarray finds the CRS (ds.rio.crs) without decode_coords="all"
            aux = [c for c in ("lat", "lon") if c in out.coords and set(out[c].dims) <= set(v.dims)]
            v.encoding["coordinates"] = " ".join([*aux, "crs"])
        # CF wants these in the variable's type; a trip through Zarr (JSON) makes them Python numbers
        for key in ("valid_min", "valid_max", "flag_values", "flag_masks"):
            if key in v.attrs and v.dtype.kind in "fiu":
                val = np.asarray(v.attrs[key], dtype=v.dtype)
                v.attrs[key] = val[()] if val.ndim == 0 else val
    return out


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike[str], *, complevel: int = 4, overwrite: bool = False) -> Path:
    """Write the product to one NetCDF-4 file, atomically.

    Parameters
    ----------
    ds : xarray.Dataset
        A product from :func:`make_product` (or :func:`open_product`).
    path : str or path-like
        The target file (``.nc``); its folder is created.
    complevel : int, optional
        zlib (deflate) level 0–9, with the shuffle filter (default 4). Chunks are one day
        by up to 1000 × 1000 pixels; ``time`` is the unlimited dimension.
    overwrite : bool, optional
        Replace an existing file (default False).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False.
    ConfigError
        ``complevel`` is not an integer in 0–9.
    ValidationError
        ``ds`` is not a product.

    Notes
    -----
    The file is written under a temporary name in the target folder and renamed into place
    when complete, so a failure leaves neither a partial file nor a temporary one. HDF5
    files are not byte-for-byte reproducible; the same inputs and ``history`` give the same
    values and attributes.

    CF-1.8 has no unsigned integer types (CF-1.9 added them), so ``quality_flag`` is stored
    as a byte with the netCDF attribute ``_Unsigned = "true"``; xarray, netCDF4-python and
    GDAL read it back as uint8.
    """
    if isinstance(complevel, bool) or not isinstance(complevel, (int, np.integer)) or not 0 <= complevel <= 9:
        raise ConfigError(f"complevel should be an integer in 0-9, got {complevel!r}")
    path = Path(path).expanduser()
    out = _for_writing(ds, "write_netcdf")
    chunks = _chunks(out)
    for v in out.variables.values():
        if v.dims == ("time", "y", "x"):
            v.encoding.update(zlib=complevel > 0, complevel=int(complevel), shuffle=complevel > 0, chunksizes=chunks)
        elif v.dims == ("y", "x"):
            v.encoding.update(zlib=complevel > 0, complevel=int(complevel), shuffle=complevel > 0)
    if "quality_flag" in out.variables and out["quality_flag"].dtype == np.uint8:  # see Notes
        qf = out["quality_flag"].variable
        qf.encoding["dtype"] = "int8"
        qf.attrs["_Unsigned"] = "true"
        for key in ("flag_values", "flag_masks"):
            if key in qf.attrs:
                qf.attrs[key] = np.asarray(qf.attrs[key]).astype(np.int8)
    with _output_errors(path), atomic_target(path, overwrite=overwrite) as tmp:
        out.to_netcdf(tmp, mode="w", format="NETCDF4", engine="netcdf4", unlimited_dims=["time"])
    log.info("wrote %s (%d days)", path, out.sizes["time"])
    return path


@contextlib.contextmanager
def _output_errors(path: Path) -> Iterator[None]:
    """Turn a failed write (read-only folder, disk full, HDF5's "NetCDF: HDF error") into one
    :class:`DataError` naming ``path`` and the cause; the temporary file is already gone."""
    try:
        yield
    except (SMEngineError, FileExistsError):
        raise
    except (OSError, RuntimeError) as exc:
        if not isinstance(exc, OSError) and not any(k in str(exc) for k in ("NetCDF", "HDF")):
            raise
        cause = getattr(exc, "strerror", None) or str(exc)
        if "HDF error" in cause or "NetCDF" in cause:
            free = _free_bytes(path.parent)
            cause += f" (free space in {path.parent}: {free / 2**20:.1f} MiB)" if free is not None else ""
        raise DataError(f"cannot write {path}: {cause}") from exc


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _is_zarr(store: Path) -> bool:
    return store.is_dir() and any((store / n).exists() for n in ("zarr.json", ".zgroup", ".zmetadata"))


#: Seconds :func:`write_zarr` waits for another writer of the same store before giving up.
ZARR_LOCK_TIMEOUT = 600.0


def _open_lock(lock: Path, store: Path) -> tuple[int, bool]:
    """Open the lock file ``lock`` of ``store``: (descriptor, whether this call created it).

    It is created with ``O_EXCL`` (a new, empty file of ours); an existing one is opened with
    ``O_NOFOLLOW`` and never truncated. A symbolic link, or anything but a regular file, at the
    lock's path raises :class:`DataError` naming it: a link planted there is not followed, so
    its target is left as it was.
    """
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    flags = os.O_RDWR | os.O_CLOEXEC | nofollow
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        try:
            return os.open(lock, flags | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            fd = os.open(lock, flags | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO planted there does not block
    except OSError as exc:
        if lock.is_symlink():
            raise DataError(
                f"cannot lock {store}: its lock file {lock} is a symbolic link (to {os.readlink(lock)}); "
                "it is not followed: remove the link"
            ) from exc
        if isinstance(exc, FileNotFoundError) and store.parent.is_dir():
            return -1, False  # removed by its holder in between: try again
        raise DataError(f"cannot lock {store}: cannot create {lock}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"cannot lock {store}: {lock} exists and is not a regular file; remove it")
    return fd, False


@contextlib.contextmanager
def _store_lock(store: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``store``: an ``fcntl`` lock on ``.<name>.lock`` beside it.

    Writers of one store queue on it; past ``timeout`` seconds a :class:`DataError` names the
    store and the process holding the lock. The lock dies with its process (no stale locks)
    and its file is removed on release (a waiter that locked a removed file tries again).
    The lock file is created with ``O_EXCL`` and opened with ``O_NOFOLLOW``: a symbolic link at
    its path raises :class:`DataError`, and a file this writer did not create is never written
    to (one left by a killed writer is removed once locked, then a new one is created).
    """
    import fcntl

    lock = store.with_name(f".{store.name}.lock")
    deadline = time.monotonic() + timeout
    while True:
        fd, created = _open_lock(lock, store)
        if fd < 0:
            if time.monotonic() >= deadline:
                raise DataError(f"cannot lock {store}: {lock} keeps disappearing; waited {timeout:g} s")
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            if time.monotonic() >= deadline:
                raise DataError(f"{store} is being written by {holder} (lock {lock}); waited {timeout:g} s") from None
            time.sleep(0.05)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(lock, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same and created:
            break
        if same:  # a file left by a writer that died (or put there): remove it, create ours
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass
            except OSError as exc:
                os.close(fd)
                raise DataError(f"cannot lock {store}: cannot remove the old lock file {lock}: {exc.strerror}") from exc
        os.close(fd)  # removed (by its holder on release, or just now): lock the current one
    try:
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(lock, follow_symlinks=False).st_ino:
                os.unlink(lock)
        os.close(fd)  # releases the lock


def write_zarr(
    ds: xr.Dataset,
    store: str | os.PathLike[str],
    *,
    append_dim: str = "time",
    lock_timeout: float | None = None,
) -> Path:
    """Create a Zarr store with the product, or append its days to an existing one.

    Parameters
    ----------
    ds : xarray.Dataset
        A product from :func:`make_product`.
    store : str or path-like
        A local folder. If it does not exist (or is empty) the store is created there;
        if it holds a product, the days of ``ds`` are appended.
    append_dim : str, optional
        Only ``"time"`` is supported (the default): products grow by days.
    lock_timeout : float, optional
        Seconds to wait while another process writes the same store (default
        :data:`ZARR_LOCK_TIMEOUT`).

    Returns
    -------
    pathlib.Path
        ``store``.

    Raises
    ------
    ConfigError
        ``append_dim`` is not ``"time"``.
    ValidationError
        On append: the new days are not all after the last stored day (the message lists the
        overlapping dates), or the grid, coordinates, variables, their attributes or the
        configuration attributes (``smengine_grid``, ``smengine_config``,
        ``smengine_model_card``, ``min_valid_fraction``) differ from the store's.
    DataError
        ``store`` exists but is neither empty nor a Zarr store, another writer held it
        for longer than ``lock_timeout``, or a symbolic link (or anything but a regular
        file) sits at the path of its lock file (it is not followed).

    Notes
    -----
    Stores use the Zarr format 2 with consolidated metadata (readable by zarr-python 2 and 3,
    GDAL's Zarr driver and xarray), chunks of one day by up to 1000 × 1000 pixels and the
    same encoding as :func:`write_netcdf` (NaN fill values, days since 1970-01-01).
    A new store is written to a temporary folder beside ``store`` and renamed into place.
    Appends are checked completely before anything is written, then extend the time-
    dependent variables (one day per chunk, so stored days are never rewritten) and
    finally update the consolidated metadata, which is what :func:`open_product` reads:
    an append that is interrupted leaves the store readable with its previous days, and
    the next append first trims the variables back to them (resumable long runs). The
    ``history`` attribute gains the new product's history line when it differs.

    Concurrent writers (two runs extending one store) queue on a lock file,
    ``.<store name>.lock`` beside the store: the second waits, then checks its days against
    what the first wrote (and fails cleanly if they overlap). The lock file is created with
    ``O_EXCL`` and never truncated or written unless this writer created it.
    """
    if append_dim != "time":
        raise ConfigError(f"write_zarr appends along 'time' only, got append_dim={append_dim!r}")
    store = Path(store).expanduser()
    out = _for_writing(ds, "write_zarr")
    with _output_errors(store), _store_lock(store, ZARR_LOCK_TIMEOUT if lock_timeout is None else float(lock_timeout)):
        return _write_zarr_locked(out, store)


def _write_zarr_locked(out: xr.Dataset, store: Path) -> Path:
    if store.exists() and not _is_zarr(store) and (not store.is_dir() or any(store.iterdir())):
        raise DataError(f"{store} exists and is not a Zarr store (nor an empty folder)")
    if not _is_zarr(store):
        chunks = _chunks(out)
        for name, v in out.variables.items():
            if v.dims == ("time", "y", "x"):
                v.encoding["chunks"] = chunks
            elif name in ("time", "time_bnds"):
                v.encoding["chunks"] = (1,) + v.shape[1:]
        with atomic_target(store, directory=True) as tmp:
            out.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2)
        log.info("created Zarr store %s (%d days)", store, out.sizes["time"])
        return store

    n_old, attrs = _check_append(out, store)
    _trim_to_committed(store, n_old)
    new = out.drop_vars([n for n, v in out.variables.items() if "time" not in v.dims])  # static: stored
    new.attrs = attrs
    new.to_zarr(store, mode="a", append_dim="time", consolidated=True)
    log.info("appended %d days to %s (now %d)", new.sizes["time"], store, n_old + new.sizes["time"])
    return store


def _check_append(out: xr.Dataset, store: Path) -> tuple[int, dict[str, Any]]:
    """Validate an append completely before writing; returns the stored day count and new attrs."""
    try:
        old = xr.open_dataset(store, engine="zarr", consolidated=True, decode_coords="all", chunks=None)
    except Exception as exc:  # zarr raises many types
        raise DataError(f"cannot append to {store}: cannot open it as a consolidated Zarr store: {exc}") from exc
    with old:
        if "sm" not in old or "smengine_grid" not in old.attrs:
            raise DataError(f"{store} is a Zarr store but not an smengine product")
        for key in _APPEND_MUST_MATCH:
            if old.attrs.get(key) != out.attrs.get(key):
                raise ValidationError(
                    f"cannot append to {store}: attribute {key} differs (stored "
                    f"{str(old.attrs.get(key))[:200]!r}, new {str(out.attrs.get(key))[:200]!r})"
                )
        if set(old.data_vars) != set(out.data_vars):
            raise ValidationError(
                f"cannot append to {store}: variables differ (stored {sorted(map(str, old.data_vars))}, "
                f"new {sorted(map(str, out.data_vars))})"
            )
        for name in ("x", "y", "lat", "lon"):  # lat/lon follow from the grid: compare presence only
            if (name in old.variables) != (name in out.variables) or (
                name in ("x", "y") and not np.array_equal(old[name].values, out[name].values)
            ):
                raise ValidationError(f"cannot append to {store}: coordinate {name} differs from the store's")
        if CRS.from_wkt(old["crs"].attrs["crs_wkt"]) != CRS.from_wkt(out["crs"].attrs["crs_wkt"]):
            raise ValidationError(f"cannot append to {store}: the CRS differs from the store's")
        for var in out.data_vars:
            a, b = _comparable(old[var].attrs), _comparable(out[var].attrs)
            if a != b:
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                raise ValidationError(f"cannot append to {store}: attributes {diff} of {var} differ")
            if old[var].dtype != out[var].dtype:
                raise ValidationError(
                    f"cannot append to {store}: {var} is {old[var].dtype} in the store, {out[var].dtype} here"
                )
        old_days = pd.DatetimeIndex(old["time"].values)
        new_days = pd.DatetimeIndex(out["time"].values)
        overlap = old_days.intersection(new_days)
        if overlap.size:
            listed = ", ".join(f"{d:%Y-%m-%d}" for d in overlap[:10]) + (" …" if overlap.size > 10 else "")
            raise ValidationError(f"cannot append to {store}: {overlap.size} day(s) already stored: {listed}")
        if old_days.size and new_days[0] <= old_days[-1]:
            raise ValidationError(
                f"cannot append to {store}: new days must follow the last stored day {old_days[-1]:%Y-%m-%d}, "
                f"got {new_days[0]:%Y-%m-%d}"
            )
        attrs = dict(out.attrs)
        old_hist, new_hist = str(old.attrs.get("history", "")), str(out.attrs.get("history", ""))
        attrs["history"] = (
            old_hist
            if (not new_hist or new_hist in old_hist.splitlines())
            else (f"{new_hist}\n{old_hist}" if old_hist else new_hist)
        )
        return int(old_days.size), attrs


def _comparable(attrs: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: (np.asarray(v).tolist() if isinstance(v, (np.ndarray, np.generic, list, tuple)) else v)
        for k, v in attrs.items()
    }


def _trim_to_committed(store: Path, n_days: int) -> None:
    """Resize time-dependent arrays back to the consolidated (committed) number of days."""
    import zarr

    group = zarr.open_group(os.fspath(store), mode="r+", use_consolidated=False)
    for name, arr in group.arrays():
        dims_v2 = arr.attrs.get("_ARRAY_DIMENSIONS")  # Zarr format 2 (xarray's convention)
        dims_v3 = getattr(arr.metadata, "dimension_names", None)  # Zarr format 3
        dims = [str(d) for d in (dims_v2 if isinstance(dims_v2, list) else dims_v3 or ())]
        if "time" in dims:
            axis = dims.index("time")
            if arr.shape[axis] != n_days:
                shape = arr.shape[:axis] + (n_days,) + arr.shape[axis + 1 :]
                log.warning(
                    "%s: %s has %d days but %d are committed (interrupted append?); trimming",
                    store,
                    name,
                    arr.shape[axis],
                    n_days,
                )
                arr.resize(shape)


def write_cog(ds: xr.Dataset, path: str | os.PathLike[str], day: Any, variable: str = "sm") -> Path:
    """Write one day of one variable as a Cloud-Optimized GeoTIFF.

    Parameters
    ----------
    ds : xarray.Dataset
        A product from :func:`make_product` or :func:`open_product`.
    path : str or path-like
        The target ``.tif``; an existing file is replaced (atomically).
    day : date
        The UTC day (anything :func:`pandas.to_datetime` accepts; a time within the day
        selects that day).
    variable : str, optional
        A ``(time, y, x)`` variable of the product (default ``"sm"``).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ConfigError
        ``variable`` is not a ``(time, y, x)`` variable of the product, or ``day`` is not
        one of its days (the message names the day and the product's range).

    Notes
    -----
    GDAL's COG driver (GDAL ≥ 3.1) with DEFLATE compression and a predictor, 512-pixel
    tiles and overviews (averaged for real variables, nearest for ``quality_flag``) once
    the raster exceeds one tile. Real variables are float32 with nodata NaN; the flag is
    uint8 without nodata. The band description is the variable name; the dataset tags
    hold ``units``, ``date`` (ISO day), ``long_name`` and, when present,
    ``standard_name`` and the flag values and meanings.
    """
    import rasterio

    _check_product(ds, "write_cog")
    if variable not in ds.data_vars or ds[variable].dims != ("time", "y", "x"):
        options = [n for n, v in ds.data_vars.items() if v.dims == ("time", "y", "x")]
        raise ConfigError(f"write_cog: variable {variable!r} is not one of the product's maps {options}")
    days = pd.DatetimeIndex(ds["time"].values)
    try:
        when = pd.Timestamp(day)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"write_cog: cannot interpret day {day!r} as a date: {exc}") from exc
    if when.tz is not None:
        when = when.tz_convert("UTC").tz_localize(None)
    when = when.normalize()
    if when not in days:
        rng = f"{days[0]:%Y-%m-%d} to {days[-1]:%Y-%m-%d}" if days.size else "no days"
        raise ConfigError(f"write_cog: day {when:%Y-%m-%d} is not in the product ({days.size} days, {rng})")
    grid = _grid_of(ds)
    da = ds[variable].isel(time=int(days.get_loc(when)))
    values = np.asarray(da.values)
    is_flag = values.dtype.kind in "iu"
    values = np.ascontiguousarray(values, dtype=np.uint8 if is_flag else np.float32)
    attrs = da.attrs
    crs_wkt = ds["crs"].attrs.get("crs_wkt") or grid.pyproj_crs.to_wkt()
    tags = {
        "date": f"{when:%Y-%m-%d}",
        "variable": variable,
        "long_name": str(attrs.get("long_name", variable)),
        "source": str(ds.attrs.get("source", "")),
    }
    for key in ("units", "standard_name", "flag_meanings"):
        if key in attrs:
            tags[key] = str(attrs[key])
    for key in ("flag_values", "flag_masks"):
        if key in attrs:
            tags[key] = " ".join(str(int(v)) for v in np.atleast_1d(attrs[key]))
    profile = {
        "driver": "COG",
        "width": values.shape[1],
        "height": values.shape[0],
        "count": 1,
        "dtype": values.dtype.name,
        "crs": rasterio.crs.CRS.from_wkt(crs_wkt),
        "transform": grid.transform,
        "nodata": None if is_flag else float("nan"),
        "compress": "DEFLATE",
        "predictor": "YES" if not is_flag else "NO",
        "blocksize": 512,
        "overview_resampling": "NEAREST" if is_flag else "AVERAGE",
        "bigtiff": "IF_SAFER",
    }
    path = Path(path).expanduser()
    with atomic_target(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(values, 1)
        dst.set_band_description(1, variable)
        if "units" in tags:
            dst.set_band_unit(1, tags["units"])
        dst.update_tags(**tags)
    log.info("wrote %s (%s on %s)", path, variable, tags["date"])
    return path


# ---------------------------------------------------------------------------- reading
def open_product(path: str | os.PathLike[str]) -> xr.Dataset:
    """Open a product written by :func:`write_netcdf` or :func:`write_zarr`, CF-decoded.

    Parameters
    ----------
    path : str or path-like
        A NetCDF file or a Zarr store (a folder).

    Returns
    -------
    xarray.Dataset
        Lazily loaded; times decoded to ``datetime64[ns]``, NaN fill values decoded,
        ``crs``, ``time_bnds`` and ``lat``/``lon`` as coordinates (``decode_coords="all"``),
        so ``ds.rio.crs`` works. Close it (or use it as a context manager) when done.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    DataError
        The file cannot be opened, or it is not a CF product with an ``sm`` variable (the
        message names the file).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no such product: {p}")
    kind = "Zarr" if p.is_dir() else "NetCDF"
    try:
        if p.is_dir():
            ds = xr.open_dataset(p, engine="zarr", consolidated=None, decode_coords="all", chunks=None)
        else:
            ds = xr.open_dataset(p, engine="netcdf4", decode_coords="all")
    except Exception as exc:  # netCDF4/HDF5/zarr raise many types
        raise DataError(f"cannot open {p} as a {kind} product: {exc}") from exc
    for v in ds.variables.values():  # as make_product has them: in attrs, not in encoding
        for key in _CF_RELATED:
            if key in v.encoding and key not in v.attrs:
                v.attrs[key] = v.encoding.pop(key)
        for key in ("flag_values", "flag_masks"):
            if v.dtype == np.uint8 and key in v.attrs:  # stored as a byte with _Unsigned
                v.attrs[key] = np.asarray(v.attrs[key]).astype(np.uint8)
    conv = str(ds.attrs.get("Conventions", ""))
    if "CF-" not in conv:
        ds.close()
        raise DataError(f"{p} is not a CF product: its Conventions attribute is {conv or 'missing'!r}")
    if "sm" not in ds.data_vars:
        ds.close()
        raise DataError(f"{p} has no 'sm' variable (variables: {sorted(map(str, ds.data_vars))})")
    return ds
