r"""Fused sub-pixel inference: every sub-pixel through the forest, averaged to the 1-km pixel.

For a tile (:class:`~smengine.tiles.TileStore`) and a set of days, :func:`predict` gathers
each sub-pixel's feature vector straight from the memory-mapped covariates, runs the
compiled forest (:class:`~smengine.model.CompiledForest`) on it and reduces the
predictions of each pixel and day, in one GIL-free, multithreaded Cython kernel
(``smengine._ext._engine``) — the full feature matrix is never built. Per pixel and day:

.. math::

    \hat\theta_P = \frac{1}{n} \sum_{j \in V_P} f(x_j), \qquad
    s_P = \Bigl(\frac{1}{n}\sum_{j \in V_P} (f(x_j) - \hat\theta_P)^2\Bigr)^{1/2}, \qquad
    \bar\sigma_P = \frac{1}{n}\sum_{j \in V_P} \sigma_{\mathrm{trees}}(x_j)

over the ``n`` valid sub-pixels :math:`V_P` (every feature finite) — the mean of the
predictions, never the prediction of the mean covariates ("sub-pixel scaling"). Pixels
whose valid fraction ``n / s²`` is below ``min_valid_fraction`` are NaN with a reason code
(:data:`smengine.product.QUALITY_FLAGS`).

Features are resolved from the forest's feature names (the names :class:`~smengine.features.FeatureBuilder`
gives): store covariates by name, ``swi<T>_<source>`` as the exponential filter of a
dynamic or coarse covariate carried day by day per sub-pixel (exactly
:func:`smengine.filters.exp_filter`; ``swi<T>c_<source>`` with ``carry=True``),
``doy_sin``/``doy_cos`` from the day, and ``wb<depth>`` as the water balance of
:class:`~smengine.features.WaterBalanceSpec` (a daily bucket per sub-pixel, exactly
:func:`smengine.waterbalance.bucket_oudin`: the same inline day in the kernel) with the parameters
the forest's model card carries (:attr:`~smengine.model.ModelCard.water_balance`; a forest
without them cannot run a ``wb`` feature). The SWI and the water balance need
every day of the store before the first predicted day; those are run through the state
update only (no forest). A ±inf covariate value is missing input exactly like NaN (for the
row and for the SWI), counted in :attr:`EngineStats.nonfinite_values` and reported.

Units: each model feature's units in the forest's model card are compared with its tile
layer's (:attr:`~smengine.tiles.TileStore.units`; an SWI feature with its source layer's).
Equal units go through untouched; units :func:`smengine.units.conversion` can convert
(``m`` → ``mm``, ``K`` → ``degC``, ``Pa`` → ``hPa`` and back) are converted in the gather,
``x * scale + offset`` (the SWI is affine-equivariant, so an SWI feature is the SWI of the
converted source), with an INFO log line and a :class:`~smengine.errors.SMEngineWarning`;
other pairs raise :class:`~smengine.errors.DataError`. Features the card gives no units for
are not checked (one :class:`~smengine.errors.SMEngineWarning` per forest names them).

Applicability: when the forest carries an area-of-applicability reference
(:attr:`~smengine.model.CompiledForest.applicability`, attached by :func:`smengine.model.train`),
the products carry the dissimilarity index ``di`` of Meyer & Pebesma (2021) of every pixel-day
and the ``outside_aoa`` bit of ``quality_flag`` where it exceeds the threshold (``di=False``
turns it off). The DI is that of the pixel-mean feature vector: the kernel averages the
features the forest saw over the pixel's valid sub-pixels, and a k-d tree finds the nearest
training row (:meth:`smengine.model.Applicability.di`). With ``lpd=True`` (off by default) the
products also carry the local point density ``lpd`` of Schumacher et al. (2025) of the same
pixel-mean vectors: how many training rows lie within the AOA threshold's DI
(:meth:`smengine.model.Applicability.lpd`).

:func:`run` does a whole domain: many tiles, the days split into ranges, one CF-NetCDF per
(tile, range) written atomically; finished outputs are skipped on a rerun.

Examples
--------
>>> from smengine.engine import predict                      # doctest: +SKIP
>>> ds = predict("tiles/t000_000.h5", "model.smf.h5", days=slice("2021-04-01", "2021-04-30"))  # doctest: +SKIP
>>> ds.sm.sel(time="2021-04-07").plot()                       # doctest: +SKIP
"""

from __future__ import annotations

import enum
import json
import logging
import os
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smengine._days import as_day, as_days, day_range
from smengine._io import inside, safe_name
from smengine._threads import effective_n_threads
from smengine.errors import ConfigError, DataError, DataLossWarning, SMEngineError, SMEngineWarning
from smengine.features import (
    WaterBalanceInputs,
    WaterBalanceSpec,
    calendar_features,
    parse_swi_feature,
    parse_water_balance_feature,
    water_balance_inputs,
)
from smengine.product import CODE_MASK, OUTSIDE_AOA, QualityFlag
from smengine.tiles import TileStore, check_layout
from smengine.units import conversion
from smengine.waterbalance import bucket_start, bucket_storages, daily_radiation

__all__ = ["EngineStats", "GatherKind", "Stepper", "TileRunner", "predict", "predict_dataset", "run"]

log = logging.getLogger(__name__)

_CAL = ("doy_sin", "doy_cos")


class GatherKind(enum.IntEnum):
    """How the kernel gathers one feature column (``_engine.pyx`` mirrors these codes in a C
    enum, ``_engine.GATHER_KINDS``; a test checks they agree)."""

    STATIC = 0  #: static[a, r, c]
    DYNAMIC = 1  #: dynamic[day, a, r, c]
    COARSE = 2  #: coarse values through the index map
    SWI = 3  #: the SWI of column a, state slot b (NaN on days without the source)
    CONST = 4  #: a per-day constant (calendar)
    SWI_CARRY = 5  #: as SWI, the last SWI carried over days without the source
    WATER_BALANCE = 6  #: the bucket's θ from precipitation column a, bucket slot b (state carried)


_EPOCH = np.datetime64("1970-01-01", "D")


@dataclass
class EngineStats:
    """Counters of an engine run (summed over tiles and days).

    Attributes
    ----------
    subpixel_days : int
        Sub-pixel × day rows gathered for predicted days.
    predicted : int
        Rows that went through the forest (all features finite).
    invalid : int
        Rows masked because a feature was NaN or infinite.
    nonfinite_values : int
        Covariate values gathered (sub-pixel × day × tile layer, spin-up days included) that
        were ±inf and were treated as missing, as NaN.
    visits, box_hits, walks : int
        Forest traversal counters (see :class:`smengine.model.TraversalStats`).
    spinup_days : int
        Store days run through the SWI state update only.
    pixel_days, nan_pixel_days : int
        Requested pixel × days, and those without a value (quality flag 2-4: too few
        valid sub-pixels, none, or no input).
    absent_days : int
        Requested tile-days that the tile does not have (flag ``no_input`` everywhere).
    water_balance_skipped : int
        Sub-pixel-days (spin-up days included) on which the water balance had no precipitation
        or temperature: its features are NaN that day and the storage carried unchanged, without
        that day's water (as :meth:`smengine.features.FeatureBuilder.water_balance`).
    """

    subpixel_days: int = 0
    predicted: int = 0
    invalid: int = 0
    visits: int = 0
    box_hits: int = 0
    walks: int = 0
    spinup_days: int = 0
    pixel_days: int = 0
    nan_pixel_days: int = 0
    nonfinite_values: int = 0
    absent_days: int = 0
    water_balance_skipped: int = 0

    def add(self, other: EngineStats) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def warn_if_degraded(self, where: str, fraction: float | None = None, max_missing: float | None = None) -> None:
        """Warn (:class:`~smengine.errors.DataLossWarning`) when more than ``fraction`` (default
        :data:`NAN_WARN_FRACTION`) of the pixel-days have no value, with the sub-pixel rows
        that had a NaN/inf feature, whenever covariate values were ±inf (with their count),
        whenever the water balance skipped days for missing input and whenever requested days
        were absent from a tile; raise :class:`DataError` when more than ``max_missing`` of the
        pixel-days have no value."""
        if max_missing is not None and self.pixel_days and self.nan_pixel_days > max_missing * self.pixel_days:
            raise DataError(
                f"{where}: {self.nan_pixel_days:,} of {self.pixel_days:,} pixel-days "
                f"({self.nan_pixel_days / self.pixel_days:.0%}) have no soil moisture, more than "
                f"max_missing={max_missing:g} (absent tile-days: {self.absent_days:,}; sub-pixel-days with a "
                f"NaN/inf feature: {self.invalid:,})"
            )
        if self.nonfinite_values:
            warnings.warn(
                f"{where}: {self.nonfinite_values:,} covariate values (sub-pixel-days of a tile layer) were "
                "infinite (±inf) and were treated as missing, as NaN",
                DataLossWarning,
                stacklevel=3,
            )
        if self.water_balance_skipped:
            warnings.warn(
                f"{where}: the water balance had no precipitation or temperature on {self.water_balance_skipped:,} "
                "sub-pixel-days: its features are NaN there and the storage was carried over unchanged, without "
                "that day's water",
                DataLossWarning,
                stacklevel=3,
            )
        absent = (
            f"{self.absent_days:,} requested tile-day(s) are not in the tiles; their pixels are NaN with "
            "quality flag no_input (ingest those days, or ask for the days the tiles have)"
        )
        limit = NAN_WARN_FRACTION if fraction is None else fraction
        if self.pixel_days and self.nan_pixel_days > limit * self.pixel_days:
            rows = f"{self.invalid / self.subpixel_days:.0%}" if self.subpixel_days else "none"
            warnings.warn(
                f"{where}: {self.nan_pixel_days:,} of {self.pixel_days:,} pixel-days "
                f"({self.nan_pixel_days / self.pixel_days:.0%}) have no soil moisture; "
                + (f"{absent}; " if self.absent_days else "")
                + f"{rows} of the "
                "sub-pixel-days had a NaN/inf feature (a covariate with gaps, e.g. a satellite layer on "
                "overpass days only, or days missing from the tiles); use carried SWI features "
                "(FeatureSpec(swi_carry=True)) or leave such layers out",
                DataLossWarning,
                stacklevel=3,
            )
        elif self.absent_days:
            warnings.warn(f"{where}: {absent}", DataLossWarning, stacklevel=3)


#: predict/run warn (DataLossWarning) when more than this fraction of the pixel-days is NaN
NAN_WARN_FRACTION = 0.1


def _warnings_are_errors() -> bool:
    """Whether the warning filters in force turn an smengine :class:`~smengine.errors.DataLossWarning`
    from this module into an exception (``smengine --strict``, ``python -W error``, pytest's
    ``filterwarnings = error``). :func:`run` asks once, on the calling side, and hands the
    answer to every tile (Dask workers do not share the caller's filters)."""
    with warnings.catch_warnings(record=True):
        try:
            warnings.warn_explicit("smengine strictness probe", DataLossWarning, __file__, 1, module=__name__)
        except DataLossWarning:
            return True
    return False


def _stats_since(now: EngineStats, before: EngineStats) -> EngineStats:
    """The counters of ``now`` minus those of ``before`` (one output's share of a runner's stats)."""
    return EngineStats(**{k: getattr(now, k) - getattr(before, k) for k in EngineStats.__dataclass_fields__})


def _check_output(stats: EngineStats, where: str, *, max_missing: float | None, strict: bool) -> None:
    """The run's rules for one output, applied before it is committed (renamed into place,
    appended, its region marked): more than ``max_missing`` of its pixel-days without a value
    raises :class:`DataError`; with ``strict`` (smengine warnings are errors) the
    :class:`DataLossWarning` its counters would give is raised. Both name ``where`` and say
    it was not written. Without ``strict`` the warnings are not given here: the run's summary
    gives them once, over every output (:meth:`EngineStats.warn_if_degraded`)."""
    try:
        with warnings.catch_warnings(record=True):
            if strict:
                warnings.simplefilter("error", DataLossWarning)
            stats.warn_if_degraded(where, max_missing=max_missing)
    except DataError as exc:
        raise DataError(f"{exc}; not written") from None
    except DataLossWarning as exc:
        raise type(exc)(f"{exc}; not written (smengine warnings are errors: --strict)") from None


def _load_forest(forest: Any) -> Any:
    from smengine.model import CompiledForest, Forest
    from smengine.nn import is_nn_file, is_nn_model

    if is_nn_model(forest):  # a spatial network (smengine.nn): run by smengine.nn.NNTileRunner
        return forest
    if isinstance(forest, (str, os.PathLike)) and is_nn_file(forest):
        from smengine.nn import load

        return load(forest)
    if isinstance(forest, CompiledForest):
        return forest
    if isinstance(forest, Forest):
        return forest.compile()
    if isinstance(forest, (str, os.PathLike)):
        return CompiledForest.load(forest)
    if hasattr(forest, "estimators_"):
        return CompiledForest.from_sklearn(forest)
    raise ConfigError(
        f"forest should be a CompiledForest, a Forest, a fitted forest or a file, got {type(forest).__name__}"
    )


def _resolve_di(forest: Any, di: bool | None) -> bool:
    """Whether to compute the DI: ``di`` (None: when the forest carries an applicability
    reference). Asked for (True) without a reference: a warning, and no DI."""
    has = getattr(forest, "applicability", None) is not None
    if di is None or has or not di:
        return bool(has if di is None else di)
    name = str(getattr(forest, "content_hash", ""))[:19]
    msg = (
        f"model {name} carries no area-of-applicability reference (trained before forests "
        "carried one, or compiled from a bare scikit-learn forest): the product has no di and no outside_aoa bit; "
        "retrain it with smengine.model.train (or attach Applicability.fit(...) as forest.applicability)"
    )
    if _once_per_forest(forest, msg):
        warnings.warn(msg, SMEngineWarning, stacklevel=3)
    return False


def _check_lpd(forest: Any, lpd: bool) -> None:
    """``lpd=True`` needs a forest with an applicability reference that can give the LPD."""
    if not lpd:
        return
    app = getattr(forest, "applicability", None)
    name = str(getattr(forest, "content_hash", ""))[:19]
    if app is None:
        raise ConfigError(
            f"lpd=True needs a forest with an applicability reference (forest.applicability): model {name} carries "
            "none (trained before forests carried one, compiled from a bare scikit-learn forest, or not a forest); "
            "retrain it with smengine.model.train (or attach Applicability.fit(...) as forest.applicability)"
        )
    if not app.exact and app.reference_count is None:
        raise ConfigError(
            f"lpd=True: the applicability reference of model {name} was thinned by an smengine that did not record "
            "how many training rows each kept row stands for, so it has no local point density; retrain the model"
        )


def _runner_args(min_valid_fraction: float, chunk_days: int) -> tuple[float, int]:
    """A tile runner's checked ``min_valid_fraction`` and ``chunk_days`` (forest and network runners)."""
    if not 0.0 <= float(min_valid_fraction) <= 1.0:
        raise ConfigError(f"min_valid_fraction should be in [0, 1], got {min_valid_fraction}")
    if int(chunk_days) < 1:
        raise ConfigError(f"chunk_days should be >= 1, got {chunk_days}")
    return float(min_valid_fraction), int(chunk_days)


def _open_store(store: TileStore | str | os.PathLike[str]) -> TileStore:
    from smengine._embed import MemoryStore

    return store if isinstance(store, (TileStore, MemoryStore)) else TileStore.open(store)  # type: ignore[return-value]


@dataclass
class _Plan:
    # (n_cols, 3) int32: the forest's features first, then the SWI sources and water-balance inputs they need
    plan: np.ndarray
    swi_T: np.ndarray  # (S,) float64
    swi_gap: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (S,) float64: longest carried gap (inf)
    swi_cols: list[str] = field(default_factory=list)  # the tile layers of the extra columns, in order
    # (n_cols,) float64: units conversion of each column, tile layer → model (x * scale + offset)
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0))
    offset: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # (feature, layer, tile units, model units, scale, offset) of every converted column
    converted: list[tuple[str, str, str, str, float, float]] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # features whose model units are unknown
    wb_depths: list[float] = field(default_factory=list)  # (S_wb,) root-zone depth of each bucket slot, mm
    wb_tcol: int = -1  # the temperature column of the water balance (degC)

    def layer(self, names: Sequence[str], col: int) -> str:
        """The tile layer plan column ``col`` reads (a covariate column)."""
        return names[col] if col < len(names) else self.swi_cols[col - len(names)]


_RAW_KINDS = (GatherKind.STATIC, GatherKind.DYNAMIC, GatherKind.COARSE)


def _feature_units(card: Any) -> dict[str, str | None] | None:
    """Feature name → units (None where unknown) of a model card (ModelCard or dict); None without one."""
    feats = card.get("features") if isinstance(card, Mapping) else getattr(card, "features", None)
    if not feats:
        return None
    return {str(f.get("name")): (f.get("units") or None) for f in feats if isinstance(f, Mapping)}


def _plan_units(
    store: TileStore, names: Sequence[str], plan: _Plan, units: Mapping[str, str | None] | None, model: str
) -> None:
    """Fill ``plan.scale``/``offset`` (and ``converted``, ``unchecked``) from the model features'
    ``units`` and the tile layers' (:func:`smengine.units.conversion`).

    Raises
    ------
    DataError
        If a layer's units cannot be converted to the model's, or the model gives one layer
        two units (through a raw and an SWI feature).
    """
    n = plan.plan.shape[0]
    plan.scale, plan.offset = np.ones(n), np.zeros(n)
    plan.converted, plan.unchecked = [], []
    want: dict[int, tuple[str, str]] = {}  # covariate column → (model units, feature)
    for j, name in enumerate(names):
        kind, a = int(plan.plan[j, 0]), int(plan.plan[j, 1])
        if kind in (GatherKind.CONST, GatherKind.WATER_BALANCE):  # calendar, bucket θ: no tile layer of theirs
            continue
        col = j if kind in _RAW_KINDS else a
        mu = (units or {}).get(name)
        if not mu:
            plan.unchecked.append(name)
            continue
        if col in want and want[col][0] != mu:
            raise DataError(
                f"{store.path}: model {model} gives tile layer {plan.layer(names, col)!r} two units: "
                f"{mu!r} for feature {name!r} and {want[col][0]!r} for {want[col][1]!r}"
            )
        want[col] = (mu, name)
    for col, (mu, name) in want.items():
        layer = plan.layer(names, col)
        tu = store.units.get(layer) or ""
        if not tu.strip():
            plan.unchecked.append(name)
            continue
        sc, off = conversion(tu, mu, where=f"{store.path}: tile layer {layer!r} → feature {name!r} of model {model}")
        if (sc, off) != (1.0, 0.0):
            plan.scale[col], plan.offset[col] = sc, off
            plan.converted.append((name, layer, tu.strip(), mu.strip(), sc, off))


_warned: dict[int, tuple[weakref.ref[Any], set[str]]] = {}  # id(forest) → (the forest, messages said)


def _once_per_forest(forest: Any, msg: str) -> bool:
    """True the first time ``msg`` is said about ``forest`` (so a run over many tiles says it once)."""
    key = id(forest)

    def forget(_ref: weakref.ref[Any]) -> None:
        _warned.pop(key, None)

    ref, said = _warned.get(key, (None, set()))
    if ref is None or ref() is not forest:
        ref, said = weakref.ref(forest, forget), set()
        _warned[key] = (ref, said)
    if msg in said:
        return False
    said.add(msg)
    return True


def _direct(store: Any, name: str) -> tuple[int, int, int] | None:
    """The gather instruction of a tile layer or calendar feature (None: neither)."""
    if name in store.static_names:
        return (GatherKind.STATIC, store.static_names.index(name), 0)
    if name in store.dynamic_names:
        return (GatherKind.DYNAMIC, store.dynamic_names.index(name), 0)
    if name in store.coarse_names:
        return (GatherKind.COARSE, store.coarse_names.index(name), 0)
    if name in _CAL:
        return (GatherKind.CONST, _CAL.index(name), 0)
    return None


def _card_water_balance(card: Any) -> WaterBalanceSpec | None:
    """The water-balance parameters a model card (ModelCard or dict) carries, or None."""
    wb = card.get("water_balance") if isinstance(card, Mapping) else getattr(card, "water_balance", None)
    return None if not wb else WaterBalanceSpec.from_config(wb)


def _build_plan(store: TileStore, names: Sequence[str], water_balance: WaterBalanceSpec | None = None) -> _Plan:
    """Map feature names to gather instructions (see ``_engine.pyx``); ``wb<depth>`` features need
    the model card's ``water_balance`` (their precipitation column is set by :func:`_plan_water_balance`)."""
    rows: list[tuple[int, int, int]] = []
    extra: list[str] = []
    swi_T: list[float] = []
    swi_gap: list[float] = []
    wb_depths: list[float] = []
    pending: list[tuple[int, str, float]] = []
    col_of: dict[str, int] = {}
    wb_names = water_balance.names if water_balance is not None else []

    def direct(name: str) -> tuple[int, int, int] | None:
        return _direct(store, name)

    missing = []
    for j, name in enumerate(names):
        if name in wb_names:
            rows.append((GatherKind.WATER_BALANCE, -1, len(wb_depths)))
            wb_depths.append(water_balance.depths_mm[wb_names.index(name)])  # type: ignore[union-attr]
            continue
        d = direct(name)
        if d is not None:
            rows.append(d)
            col_of[name] = j
            continue
        swi = parse_swi_feature(name)
        if swi is not None and (swi.source in store.dynamic_names or swi.source in store.coarse_names):
            rows.append((GatherKind.SWI_CARRY if swi.carry else GatherKind.SWI, -1, len(swi_T)))
            pending.append((j, swi.source, swi.T))
            swi_T.append(swi.T)
            swi_gap.append(np.inf if swi.max_gap is None else swi.max_gap)
            continue
        if parse_water_balance_feature(name) is not None:
            have = f"its water balance has only {wb_names}" if wb_names else "it carries no water-balance parameters"
            raise ConfigError(
                f"{store.path}: the forest's feature {name!r} is a water-balance feature, but the forest's model card "
                f"does not say how to make it ({have}); train the model with smengine.model.train on a table made "
                "with FeatureSpec(water_balance=...), or set the card's water_balance"
            )
        missing.append(name)
    if missing:
        raise ConfigError(
            f"{store.path}: the forest's feature(s) {missing} are neither covariates of the tile "
            f"({store.feature_names}) nor swi<T>_<covariate> / doy_sin / doy_cos"
        )
    for j, src, _T in pending:
        if src not in col_of:
            col_of[src] = len(rows)
            rows.append(direct(src))  # type: ignore[arg-type]
            extra.append(src)
        rows[j] = (rows[j][0], col_of[src], rows[j][2])
    return _Plan(
        np.asarray(rows, dtype=np.int32).reshape(-1, 3),
        np.asarray(swi_T, dtype=np.float64),
        np.asarray(swi_gap, dtype=np.float64),
        extra,
        wb_depths=wb_depths,
    )


def _plan_water_balance(store: Any, plan: _Plan, wb: WaterBalanceSpec | None) -> WaterBalanceInputs | None:
    """Give the plan's water-balance slots their input columns (after :func:`_plan_units`).

    Precipitation and temperature are gathered raw and converted to mm and degC
    (:func:`smengine.features.water_balance_inputs`: the builder's conversion); a column the plan
    already gathers from the same layer with the same conversion is shared, else one is added
    (like an SWI source the forest does not use itself). Returns the tile's inputs (None without
    water-balance slots)."""
    if not plan.wb_depths:
        return None
    assert wb is not None
    inp = water_balance_inputs(store, wb)

    def column(layer: str, conv: tuple[float, float]) -> int:
        d = _direct(store, layer)
        assert d is not None and d[0] in _RAW_KINDS  # water_balance_inputs checked it is a daily layer
        for j in range(plan.plan.shape[0]):
            if tuple(plan.plan[j, :2]) == d[:2] and (plan.scale[j], plan.offset[j]) == conv:
                return j
        plan.plan = np.vstack([plan.plan, np.asarray(d, dtype=np.int32)[None]])
        plan.scale = np.append(plan.scale, conv[0])
        plan.offset = np.append(plan.offset, conv[1])
        plan.swi_cols.append(layer)
        return plan.plan.shape[0] - 1

    pcol = column(inp.precipitation, inp.precip_conversion)
    plan.wb_tcol = column(inp.temperature, inp.temp_conversion)
    plan.plan[plan.plan[:, 0] == GatherKind.WATER_BALANCE, 1] = pcol
    return inp


def _select_days(store: TileStore, days: Any) -> np.ndarray:
    """Requested UTC days as datetime64[D] (all of the store's by default)."""
    if days is None:
        return store.times.copy()
    if isinstance(days, slice):
        if days.step is not None:
            raise ConfigError("days: a slice of dates takes no step")
        lo = days.start if days.start is not None else store.times[0]
        hi = days.stop if days.stop is not None else store.times[-1]
        if as_day(hi, what="days.stop") < as_day(lo, what="days.start"):
            return np.array([], dtype="datetime64[D]")
        return day_range(lo, hi, what="days")
    return as_days(days, what="days", increasing=True)


class TileRunner:
    """Predict one tile day range after day range, carrying the SWI and water-balance state between calls.

    Parameters
    ----------
    store : TileStore or path
    forest : CompiledForest, Forest, fitted scikit-learn forest or path to a compiled forest
    min_valid_fraction : float, optional
        Pixels with fewer valid sub-pixels than this fraction are NaN (flag
        ``low_valid_fraction``). Default 0.5.
    n_threads : int, optional
        Threads over rows of pixels (default all, see :func:`smengine._threads.effective_n_threads`).
    chunk_days : int, optional
        Days per kernel call (scratch memory grows with it). Default 8.
    day_inner : bool, optional
        Order the forest's rows sub-pixel by sub-pixel with the days of the chunk
        together (True) or day by day, pixel after pixel (False, default: more leaf-box
        hits on daily layers with per-sub-pixel noise, 8 % vs 25 % and ~15 % faster in
        ``bench/bench_engine.py``). Results are identical.
    reuse : bool or {'lanes', 'box', 'none'}, optional
        Reuse between consecutive rows in the forest kernel (see
        :meth:`smengine.model.CompiledForest.predict`; default True: the leaf-box table
        with interleaved lanes). Results are identical.
    di : bool, optional
        Also compute the dissimilarity index of every pixel-day (``di`` in the arrays of
        :meth:`predict_arrays`, and the ``outside_aoa`` bit in ``quality_flag``) from the
        forest's :attr:`~smengine.model.CompiledForest.applicability` (default False here;
        :func:`predict` and :func:`run` turn it on when the forest carries one).
    lpd : bool, optional
        Also compute the local point density of every pixel-day's pixel-mean features (``lpd``
        in the arrays of :meth:`predict_arrays`; Schumacher et al. 2025,
        :meth:`smengine.model.Applicability.lpd`). Default False. True needs the forest's
        :attr:`~smengine.model.CompiledForest.applicability`
        (:class:`~smengine.errors.ConfigError` without one).

    Notes
    -----
    Days are processed in increasing order only: a call for days before the last day
    already processed raises :class:`~smengine.errors.ConfigError`.
    """

    def __new__(cls, store: Any, forest: Any, **kwargs: Any) -> Any:
        # a spatial network (smengine.nn) or its file gets its own runner, which has this
        # class's attributes and predict_arrays (it is not a subclass: __init__ is not rerun)
        from smengine.nn import is_nn_file, is_nn_model

        if cls is TileRunner and (
            is_nn_model(forest) or (isinstance(forest, (str, os.PathLike)) and is_nn_file(forest))
        ):
            from smengine.nn import NNTileRunner

            return NNTileRunner(store, forest, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        store: TileStore | str | os.PathLike[str],
        forest: Any,
        *,
        min_valid_fraction: float = 0.5,
        n_threads: int | None = None,
        chunk_days: int = 8,
        day_inner: bool = False,
        reuse: bool | str = True,
        di: bool = False,
        lpd: bool = False,
    ) -> None:
        self.store = _open_store(store)
        self.forest = _load_forest(forest)
        self.min_valid_fraction, self.chunk_days = _runner_args(min_valid_fraction, chunk_days)
        self.n_threads = effective_n_threads(n_threads)
        self.day_inner = bool(day_inner)
        self.reuse = reuse
        self._mode = self.forest._mode(reuse)
        self._kernel = self.forest._kernel_tables(self._mode)  # the forest as the kernel sees it
        names = self.forest.feature_names
        if names is None:
            raise ConfigError(
                "the forest has no feature names; compile it with feature_names=… so that the engine "
                "can find its features in the tiles"
            )
        self.feature_names = list(names)
        self.applicability = self.forest.applicability if di else None
        if di and self.applicability is None:
            raise ConfigError("di=True needs a forest with an applicability reference (forest.applicability)")
        _check_lpd(self.forest, lpd)
        self.lpd = bool(lpd)
        # the reference the pixel-mean features are compared with (DI and/or LPD)
        self._aoa = self.forest.applicability if (di or lpd) else None
        app = self._aoa
        if app is not None and app.feature_names is not None and list(app.feature_names) != self.feature_names:
            raise ConfigError(
                f"the forest's applicability reference is for features {list(app.feature_names)}, "
                f"not the forest's {self.feature_names}"
            )
        s = self.store
        self.water_balance = _card_water_balance(self.forest.card)
        self._plan = _build_plan(s, self.feature_names, self.water_balance)
        self._check_units()
        self._wb_inputs = _plan_water_balance(s, self._plan, self.water_balance)
        grid = s.grid
        if grid.subpixel < 1:
            raise DataError(f"{s.path}: grid has no sub-pixels")
        self.grid = grid
        ny, nx = grid.subpixel_shape
        nS = self._plan.swi_T.size
        self._gain = np.zeros((nS, ny * nx))
        self._swi = np.zeros((nS, ny * nx))
        self._last = np.zeros((nS, ny * nx))
        self._static = np.ascontiguousarray(s.static) if s.static.size else np.zeros((0, ny, nx), np.float32)
        self._dynamic = s.dynamic if s.dynamic.size else np.zeros((0, 0, ny, nx), np.float32)
        layers = [s.coarse[n] for n in s.coarse_names]
        self._cindex = (
            np.ascontiguousarray(np.stack([c.index for c in layers]), dtype=np.int32)
            if layers
            else np.zeros((0, ny, nx), np.int32)
        )
        sizes = [c.values.shape[1] for c in layers]
        check_layout(s)  # the kernels index these arrays unchecked: a corrupt or hand-made tile is refused here
        self._coff = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if layers else np.zeros(0, np.int64)
        self._layers = layers
        from smengine._ext import _engine

        self._tile = _engine.TileArrays(
            self._static,
            self._dynamic,
            self._cindex,
            self._coff,
            self._plan.plan,
            grid.subpixel,
            self._plan.scale,
            self._plan.offset,
        )
        self._wb_storage, bucket = self._bucket_state()
        self._state = _engine.SWIState(  # updated in place
            self._gain, self._swi, self._last, self._plan.swi_T, self._plan.swi_gap, bucket
        )
        self._scratch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._next = 0  # first store day index not yet run through the SWI state
        self.stats = EngineStats()
        self.footprint = False  # add d86/r86 to products (footprint_layers)

    def _bucket_state(self) -> tuple[np.ndarray, Any]:
        """The water balance's storage (S_wb, Y * X), at field capacity before the tile's first day,
        and the kernel's BucketState over it (the storages of :func:`smengine.waterbalance.bucket_storages`
        per slot, as :meth:`smengine.features.FeatureBuilder.water_balance` computes them)."""
        from smengine._ext import _engine

        ny, nx = self.grid.subpixel_shape
        inp, depths = self._wb_inputs, self._plan.wb_depths
        n = ny * nx
        storage = np.zeros((len(depths), n))
        lim = np.zeros((3, len(depths), n))
        if inp is not None:
            assert self.water_balance is not None
            fc, wp = inp.field_capacity.reshape(-1), inp.wilting_point.reshape(-1)
            for k, depth in enumerate(depths):
                lim[:, k] = bucket_storages(fc, wp, depth, self.water_balance.beta_fraction)
                storage[k] = bucket_start(lim[0, k], lim[1, k])
        ra_col = len(_CAL) if inp is not None else -1
        bucket = _engine.BucketState(
            storage, lim[0], lim[1], lim[2], np.asarray(depths, np.float64), self._plan.wb_tcol, ra_col
        )
        return storage, bucket

    def _check_units(self) -> None:
        """Compare the model card's feature units with the tile's; set the plan's conversions and report them."""
        cf, s = self.forest, self.store
        model = cf.content_hash[:19]
        units = _feature_units(cf.card)
        _plan_units(s, self.feature_names, self._plan, units, model)
        for name, layer, tu, mu, a, b in self._plan.converted:
            log.info(
                "%s: feature %r of model %s: tile layer %r converted from %r to %r (x * %g + %g)",
                s.path,
                name,
                model,
                layer,
                tu,
                mu,
                a,
                b,
            )
            msg = (
                f"feature {name!r} of model {model}: tile layer {layer!r} in {tu!r} converted to the model's "
                f"{mu!r} (x * {a:g} + {b:g})"
            )
            if _once_per_forest(cf, msg):
                warnings.warn(msg, SMEngineWarning, stacklevel=3)
        if units is None:
            msg = f"model {model} has no model card with feature units: units of the tile layers not checked"
            if _once_per_forest(cf, msg):
                log.warning("%s", msg)
        elif self._plan.unchecked:
            msg = (
                f"model {model}: units not checked for feature(s) {self._plan.unchecked} (the model card or the "
                "tile gives none; a model trained on a table without units?)"
            )
            if _once_per_forest(cf, msg):
                warnings.warn(msg, SMEngineWarning, stacklevel=3)

    def __repr__(self) -> str:
        return (
            f"<TileRunner {self.store.tile_id}: {len(self.feature_names)} features, "
            f"next store day {self._next}/{self.store.times.size}>"
        )

    def _chunk(self, sidx: np.ndarray, want: np.ndarray) -> dict[str, np.ndarray]:
        """Kernel call for store day indices ``sidx`` (-1: absent): (D, Py, Px) layers, valid where ``want``."""
        from smengine._ext import _engine

        s = self.store
        D = sidx.size
        present = sidx >= 0
        dates = np.where(present, s.times[np.maximum(sidx, 0)], _EPOCH) if s.times.size else np.full(D, _EPOCH)
        tday = dates.astype(np.int64).astype(np.float64)
        if self._layers:
            cvals = np.full((D, int(self._coff[-1]) + self._layers[-1].values.shape[1]), np.nan, np.float32)
            for k, layer in enumerate(self._layers):
                n = layer.values.shape[1]
                cvals[present, self._coff[k] : self._coff[k] + n] = layer.values[sidx[present]]
        else:
            cvals = np.zeros((D, 0), np.float32)
        cal = calendar_features(dates)
        cols = [cal["doy_sin"], cal["doy_cos"]]
        if self._wb_inputs is not None:  # Ra of the tile centre (column len(_CAL)), the builder's values
            cols.append(daily_radiation(self._wb_inputs.latitude, dates))
        consts = np.stack(cols, axis=1).astype(np.float64)
        Py, Px = self.grid.shape
        bufs: dict[str, np.ndarray] = {
            name: np.empty((D, Py, Px), np.float32) for name in ("sm", "subpixel_sd", "uncertainty", "valid_fraction")
        }
        bufs["quality_flag"] = np.empty((D, Py, Px), np.uint8)
        nf = len(self.feature_names)
        fmean = np.empty((D, nf, Py, Px), np.float64) if self._aoa is not None else None
        counters = np.zeros(6, dtype=np.int64)
        ncol = self._plan.plan.shape[0]
        nrow = Px * self.grid.subpixel**2 * D
        if self._scratch is None or self._scratch[1].shape[1] < nrow:
            nt = self.n_threads
            self._scratch = (
                np.empty((nt, nrow * ncol), np.float32),
                np.empty((nt, nrow), np.uint8),
                np.empty((nt, 4 * nrow), np.float64),
            )
        chunk = _engine.ChunkInputs(sidx.astype(np.int64), want.astype(np.uint8), tday, cvals, consts)
        outputs = _engine.Outputs(
            bufs["sm"], bufs["subpixel_sd"], bufs["uncertainty"], bufs["valid_fraction"], bufs["quality_flag"], fmean
        )
        _engine.run_days(
            self._kernel,
            self._tile,
            self._state,
            chunk,
            outputs,
            _engine.Scratch(*self._scratch),
            self.day_inner,
            self._mode,
            self.min_valid_fraction,
            self.n_threads,
            counters,
        )
        w = want.astype(bool)
        s2 = self.grid.subpixel**2
        n_rows = int(w[present].sum()) * Py * Px * s2
        st = self.stats
        st.subpixel_days += n_rows
        st.invalid += int(counters[3])
        st.predicted += n_rows - int(counters[3])
        st.visits += int(counters[0])
        st.box_hits += int(counters[1])
        st.walks += int(counters[2])
        st.nonfinite_values += int(counters[4])
        st.water_balance_skipped += int(counters[5])
        st.spinup_days += int((~w & present).sum())
        if fmean is not None:
            self._add_aoa(bufs, fmean, w & present)
        return bufs

    def _add_aoa(self, bufs: dict[str, np.ndarray], fmean: np.ndarray, days: np.ndarray) -> None:
        """From the pixel-mean features of the predicted ``days`` of a chunk: ``bufs["di"]`` and
        the outside_aoa bit of their quality flag (with di), ``bufs["lpd"]`` (with lpd)."""
        app = self._aoa
        assert app is not None
        D, nf, Py, Px = fmean.shape
        rows = fmean[days].transpose(0, 2, 3, 1).reshape(-1, nf) if days.any() else None
        if self.applicability is not None:
            di = np.full((D, Py, Px), np.nan, np.float32)
            if rows is not None:
                di[days] = app.di(rows, workers=self.n_threads).reshape(-1, Py, Px)
            bufs["di"] = di
            bufs["quality_flag"][app.outside(di)] |= OUTSIDE_AOA  # float32 di > float32 threshold
        if self.lpd:
            lpd = np.full((D, Py, Px), np.nan, np.float32)
            if rows is not None:  # whole numbers below 2**24: exact in float32
                lpd[days] = app.lpd(rows, workers=self.n_threads).reshape(-1, Py, Px)
            bufs["lpd"] = lpd

    def predict_arrays(
        self, days: Any = None, progress: Callable[[int], Any] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Predict ``days`` (see :func:`predict`); returns (days, dict of (D, Py, Px) arrays)."""
        s = self.store
        req = _select_days(s, days)
        if req.size == 0:
            raise ConfigError(f"{s.path}: no days selected")
        out = _empty_outputs(req.size, self.grid.shape)
        if self.applicability is not None:
            out["di"] = np.full(out["sm"].shape, np.nan, np.float32)
        if self.lpd:
            out["lpd"] = np.full(out["sm"].shape, np.nan, np.float32)
        sidx = _store_index(s, req, self.stats)
        have = sidx[sidx >= 0]
        if have.size and have[0] < self._next:
            raise ConfigError(
                f"{s.path}: days must be predicted in increasing order; {s.times[have[0]]} is before "
                f"the runner's position {s.times[self._next - 1] if self._next else ''}"
            )
        # the sequence of kernel days: every store day from the runner's position to the last
        # present requested day (spin-up days are state-only), with absent requested days
        # interleaved at their place in time.
        last = int(have[-1]) if have.size else self._next - 1
        seq_s: list[int] = []
        seq_o: list[int] = []
        absent = list(np.flatnonzero(sidx < 0))
        wanted = {int(si): o for o, si in enumerate(sidx) if si >= 0}
        for si in range(self._next, last + 1):
            while absent and req[absent[0]] < s.times[si]:
                seq_s.append(-1)
                seq_o.append(int(absent.pop(0)))
            seq_s.append(si)
            seq_o.append(wanted.get(si, -1))
        for o in absent:
            seq_s.append(-1)
            seq_o.append(int(o))
        S = np.asarray(seq_s, dtype=np.int64)
        O = np.asarray(seq_o, dtype=np.int64)  # noqa: E741 - output position of each kernel day
        for c0 in range(0, S.size, self.chunk_days):
            ss, oo = S[c0 : c0 + self.chunk_days], O[c0 : c0 + self.chunk_days]
            want = oo >= 0
            bufs = self._chunk(ss, want)
            for k, v in out.items():
                v[oo[want]] = bufs[k][want]
            if progress is not None:
                progress(int(want.sum()))
        self._next = max(self._next, last + 1)
        self.stats.pixel_days += out["quality_flag"].size
        self.stats.nan_pixel_days += int(((out["quality_flag"] & CODE_MASK) >= QualityFlag.LOW_VALID_FRACTION).sum())
        return req, out


def _empty_outputs(n_days: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """A runner's (days, Py, Px) output layers before prediction: what a day never predicted
    (absent from the store) keeps: NaN, valid fraction 0, flag no_input."""
    out = {k: np.full((n_days, *shape), np.nan, np.float32) for k in ("sm", "subpixel_sd", "uncertainty")}
    out["valid_fraction"] = np.zeros((n_days, *shape), np.float32)
    out["quality_flag"] = np.full((n_days, *shape), QualityFlag.NO_INPUT, np.uint8)
    return out


def _store_index(store: Any, req: np.ndarray, stats: EngineStats) -> np.ndarray:
    """Store day index of each requested day, -1 where the store lacks it (counted in
    ``stats.absent_days`` and logged)."""
    t = store.times
    pos = np.searchsorted(t, req)
    sidx = np.where(
        (pos < t.size) & (t[np.minimum(pos, max(t.size - 1, 0))] == req) if t.size else False, pos, -1
    ).astype(np.int64)
    if (sidx < 0).any():
        stats.absent_days += int((sidx < 0).sum())
        log.warning(
            "%s: %d of %d requested days are not in the store (first %s); flagged no_input",
            store.path,
            int((sidx < 0).sum()),
            req.size,
            req[sidx < 0][0],
        )
    return sidx


def predict(
    store: TileStore | str | os.PathLike[str],
    forest: Any,
    days: Any = None,
    *,
    min_valid_fraction: float = 0.5,
    n_threads: int | None = None,
    chunk_days: int = 8,
    day_inner: bool = False,
    reuse: bool | str = True,
    config: dict[str, Any] | None = None,
    progress: Callable[[int], Any] | None = None,
    max_missing: float | None = None,
    footprint: bool = False,
    di: bool | None = None,
    lpd: bool = False,
) -> Any:
    """Daily 1-km soil moisture of one tile: every sub-pixel through the forest, averaged per pixel.

    Parameters
    ----------
    store : TileStore or path
        The tile's covariates.
    forest : CompiledForest, Forest, fitted scikit-learn forest, or path to a compiled forest file
        Its feature names say which covariates to gather (see the module docstring). A spatial
        network (:class:`smengine.nn.SpatialNet` or its ``.smnn.pt`` file) is taken too and
        run by :class:`smengine.nn.NNTileRunner` into the same product.
    days : None, slice of dates, or array_like of dates, optional
        UTC days to predict (default every day of the store). Days absent from the store
        come out NaN with flag ``no_input``.
    min_valid_fraction : float, optional
        Minimum fraction of valid sub-pixels for a pixel value (default 0.5).
    n_threads : int, optional
        Threads (default all).
    chunk_days : int, optional
        Days per kernel call (default 8).
    day_inner : bool, optional
        Forest row order (see :class:`TileRunner`); results are identical either way.
    reuse : bool or {'lanes', 'box', 'none'}, optional
        Forest reuse between consecutive rows (see :class:`TileRunner`; default True).
    config : dict, optional
        Extra run configuration to record in the product's attributes.
    progress : callable, optional
        Called with the number of days finished after each kernel call.
    max_missing : float, optional
        Raise :class:`~smengine.errors.DataError` when more than this fraction of the
        pixel-days has no value (default: only the :class:`~smengine.errors.DataLossWarning`
        above :data:`NAN_WARN_FRACTION`).
    footprint : bool, optional
        Add ``d86`` (cm) and, where the tile has humidity, ``r86`` (m) per pixel-day: the
        depth and radius the value represents (:func:`footprint_layers`).
    di : bool, optional
        Add the dissimilarity index ``di`` per pixel-day and set the ``outside_aoa`` bit of
        ``quality_flag`` where it exceeds the area-of-applicability threshold (Meyer &
        Pebesma 2021; see the module docstring). Default None: when the forest carries an
        applicability reference (forests from :func:`smengine.model.train` do). True with a
        forest without one: an :class:`~smengine.errors.SMEngineWarning` and no ``di``.
    lpd : bool, optional
        Add the local point density ``lpd`` per pixel-day (Schumacher et al. 2025): the number
        of training rows whose DI to the pixel-mean features is below the AOA threshold (see
        :meth:`smengine.model.Applicability.lpd`; approximate for a thinned reference, as the
        variable's comment says). Default False; True needs a forest with an applicability
        reference.

    Returns
    -------
    xarray.Dataset
        The product (:func:`smengine.product.make_product`): ``sm`` (m³ m⁻³),
        ``sm_uncertainty`` (mean forest spread), ``sm_subpixel_sd``, ``valid_fraction``,
        ``quality_flag`` (and ``di``, ``lpd``, ``d86``, ``r86``) on (time, y, x) of the tile's
        1-km grid.

    Raises
    ------
    ConfigError
        If a forest feature cannot be found in the tile, on bad arguments, or with ``lpd=True``
        and a forest without an applicability reference.
    """
    cf = _load_forest(forest)
    _check_lpd(cf, lpd)
    runner = TileRunner(
        store,
        cf,
        min_valid_fraction=min_valid_fraction,
        n_threads=n_threads,
        chunk_days=chunk_days,
        day_inner=day_inner,
        reuse=reuse,
        di=_resolve_di(cf, di),
        lpd=lpd,
    )
    runner.footprint = bool(footprint)
    req, out = runner.predict_arrays(days, progress=progress)
    runner.stats.warn_if_degraded(f"predict {runner.store.path}", max_missing=max_missing)
    return _product(runner, req, out, config)


#: Engine settings recorded in a product that change none of its values (not compared on resume).
_NOT_COMPARED = ("chunk_days", "reuse", "tile_path")


def _input_digests(store: TileStore, ends: Sequence[np.datetime64]) -> dict[np.datetime64, str]:
    """A digest of everything in the tile that an output through each day of ``ends`` is made
    from: layer names, units and grid, the static and index layers, and every stored day up
    to that day (values and coverage). One pass over the tile (days after the last end are
    not read); the SWI carries state, so a range depends on every day before it too."""
    import hashlib

    h = hashlib.blake2b(digest_size=20)
    head = {
        "grid": store.grid.get_config(),
        "static": store.static_names,
        "dynamic": store.dynamic_names,
        "coarse": store.coarse_names,
        "units": store.units,
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    h.update(np.ascontiguousarray(store.static).data)
    for name in store.coarse_names:
        h.update(np.ascontiguousarray(store.coarse[name].index).data)
    daily = store.dynamic_names + store.coarse_names
    cover = np.stack([store.covered(n) for n in daily], axis=1) if daily else np.zeros((store.times.size, 0), bool)
    want = sorted(set(np.asarray(ends, dtype="datetime64[D]").tolist()))
    out: dict[np.datetime64, str] = {}
    t = 0
    for end in want:
        end64 = np.datetime64(end, "D")
        while t < store.times.size and store.times[t] <= end64:
            h.update(store.times[t].astype(np.int64).tobytes())
            h.update(np.ascontiguousarray(store.dynamic[t]).data)
            for name in store.coarse_names:
                h.update(np.ascontiguousarray(store.coarse[name].values[t]).data)
            h.update(cover[t].tobytes())
            t += 1
        out[end64] = "blake2b:" + h.copy().hexdigest()
    return out


def _why_not_reusable(path: Path, want_cfg: dict[str, Any], want_inputs: str) -> str | None:
    """Why the output at ``path`` was not made by this run's model, settings and tile data
    (None: it was, and can be kept)."""
    try:
        import netCDF4

        with netCDF4.Dataset(path) as nc:
            attrs = {k: nc.getncattr(k) for k in ("smengine_config", "smengine_inputs") if k in nc.ncattrs()}
    except OSError as exc:
        return f"it cannot be read ({exc})"
    return _record_differs(attrs, want_cfg, want_inputs)


def _record_differs(attrs: Mapping[str, Any], want_cfg: dict[str, Any], want_inputs: str) -> str | None:
    if "smengine_config" not in attrs or "smengine_inputs" not in attrs:
        return "it records no provenance (written by another program or an older smengine)"
    try:
        have = json.loads(str(attrs["smengine_config"]))
    except ValueError:
        return "its smengine_config attribute is not JSON"
    a, b = _comparable_config(have), _comparable_config(want_cfg)
    if a.get("engine", {}).get("forest_hash") != b.get("engine", {}).get("forest_hash"):
        return (
            f"it was made by model {str(a.get('engine', {}).get('forest_hash'))[:19]}… "
            f"(this run: {str(b['engine']['forest_hash'])[:19]}…)"
        )
    if a != b:
        diff = sorted(
            f"engine.{k}" if k in a.get("engine", {}) or k in b.get("engine", {}) else k for k in _diff_keys(a, b)
        )
        return f"it was made with other settings ({', '.join(diff)})"
    if str(attrs["smengine_inputs"]) != want_inputs:
        return "the tile's data changed since it was made (other values, days or layers)"
    return None


def _comparable_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(dict(cfg), sort_keys=True, default=str))
    for k in _NOT_COMPARED:
        out.get("engine", {}).pop(k, None)
    return out


def _diff_keys(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = []
    for k in set(a) | set(b):
        if k == "engine" and isinstance(a.get(k), Mapping) and isinstance(b.get(k), Mapping):
            keys += [j for j in set(a[k]) | set(b[k]) if a[k].get(j) != b[k].get(j)]
        elif a.get(k) != b.get(k):
            keys.append(k)
    return keys


def _engine_config(runner: TileRunner, config: dict[str, Any] | None) -> dict[str, Any]:
    """What a product records about how it was made (its ``smengine_config`` attribute)."""
    cfg = {
        "engine": {
            "min_valid_fraction": runner.min_valid_fraction,
            "chunk_days": runner.chunk_days,
            "reuse": runner.reuse,
            "features": runner.feature_names,
            "forest_hash": runner.forest.content_hash,
            "tile": runner.store.tile_id,
            "tile_path": str(runner.store.path),
        }
    }
    if getattr(runner, "footprint", False):
        cfg["engine"]["footprint"] = _footprint_inputs(runner.store)
    wb = _card_water_balance(getattr(runner.forest, "card", None))
    if wb is not None and set(wb.names) & set(runner.feature_names):  # how the wb<depth> features were made
        cfg["engine"]["water_balance"] = wb.get_config()
    app = getattr(runner, "applicability", None)
    if app is not None:
        cfg["engine"]["di"] = {"reference": app.digest, "threshold": app.threshold, "max_error": app.max_error}
    if getattr(runner, "lpd", False):
        ref = runner.forest.applicability
        cfg["engine"]["lpd"] = {
            "reference": ref.digest,
            "threshold": ref.threshold,
            "n_train": ref.n_train,
            "exact": ref.exact,
            "max_error": ref.max_error,
        }
    if config:
        cfg.update(config)
    return json.loads(json.dumps(cfg, sort_keys=True, default=str))


def _product(
    runner: TileRunner,
    days: np.ndarray,
    out: dict[str, np.ndarray],
    config: dict[str, Any] | None,
    inputs: str | None = None,
) -> Any:
    from smengine.product import make_product

    cfg = _engine_config(runner, config)
    fp: dict[str, Any] = {}
    if getattr(runner, "footprint", False):
        fp = footprint_layers(runner.store, days, out["sm"])
        fp.pop("inputs")
    app = getattr(runner, "applicability", None)
    if app is not None:
        fp.update(di=out["di"], di_threshold=app.threshold, di_max_error=app.max_error)
    if getattr(runner, "lpd", False):
        ref = runner.forest.applicability
        fp.update(lpd=out["lpd"], lpd_threshold=ref.threshold, lpd_n_train=ref.n_train, lpd_max_error=ref.max_error)
    ds = make_product(
        out["sm"],
        out["uncertainty"],
        out["subpixel_sd"],
        out["valid_fraction"],
        out["quality_flag"],
        grid=runner.grid,
        times=days,
        min_valid_fraction=runner.min_valid_fraction,
        model_card=runner.forest.card,
        config=cfg,
        **fp,
    )
    if inputs is not None:
        ds.attrs["smengine_inputs"] = inputs
    if hasattr(runner, "describe_product"):  # another model kind (smengine.nn) says what made the values
        runner.describe_product(ds)
    return ds


#: Particle density of mineral soil, g cm⁻³: bulk density from a porosity layer, ρ_b = (1 − φ) · 2.65.
PARTICLE_DENSITY = 2.65
#: Absolute humidity below which R86 is not computed (its formula needs h > 0), g m⁻³.
_MIN_HUMIDITY = 0.0


def _pixel_mean(a: np.ndarray, k: int) -> np.ndarray:
    """NaN-aware mean of k × k sub-pixel blocks: (..., Y, X) → (..., Y/k, X/k)."""
    *lead, Y, X = a.shape
    b = np.asarray(a, dtype=np.float64).reshape(*lead, Y // k, k, X // k, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN pixel is NaN
        return np.nanmean(b, axis=(-3, -1))


def _daily_pixel_mean(store: Any, name: str, days: np.ndarray) -> np.ndarray:
    """Pixel means of a daily layer (sub-pixel or native resolution) on ``days`` (NaN where absent)."""
    k = store.grid.subpixel
    ny, nx = store.grid.shape
    out = np.full((days.size, ny, nx), np.nan)
    pos = np.searchsorted(store.times, days)
    for i, (d, t) in enumerate(zip(days, pos, strict=True)):
        if t < store.times.size and store.times[t] == d:
            if name in store.dynamic_names:
                field_ = store.dynamic[t, store.dynamic_names.index(name)]
            else:
                field_ = store.coarse[name].expand(int(t))
            out[i] = _pixel_mean(field_, k)
    return out


def footprint_layers(store: Any, days: np.ndarray, sm: np.ndarray, *, r: float = 1.0) -> dict[str, Any]:
    r"""Per pixel-day CRNS footprint of the product: D86 (cm) and R86 (m) of its θ.

    D86 = :func:`smengine.footprint.penetration_depth` (r = 1 m, the pixel's bulk density,
    θ = ``sm``); R86 = :func:`smengine.footprint.footprint_radius` (the pixel's absolute
    humidity and pressure, θ = ``sm``). Inputs from the tile's layers, pixel means of their
    sub-pixels: bulk density from a static ``bulk_density`` layer (g cm⁻³), else from
    ``porosity`` as (1 − φ) · :data:`PARTICLE_DENSITY`; humidity from a daily
    ``abs_humidity`` layer (g m⁻³); pressure from a daily ``pressure`` layer (hPa), else from a
    static ``elevation`` (m, the barometric formula), else 1013.25 hPa. Without humidity there
    is no R86 (it depends on it strongly); what was used is returned in ``inputs`` and
    recorded in the product's ``smengine_config``.

    Parameters
    ----------
    store : TileStore
    days : ndarray of datetime64[D]
        The product's days.
    sm : ndarray, shape (days, ny, nx)
        The product's soil moisture, m³ m⁻³.
    r : float, optional
        Distance from the sensor for D86, m (default 1).

    Returns
    -------
    dict
        ``d86`` (and ``r86`` when humidity is known) arrays of ``sm``'s shape, float32, NaN
        where ``sm`` is; ``inputs``: where each input came from.

    Raises
    ------
    ConfigError
        The tile has neither a ``bulk_density`` nor a ``porosity`` static layer.
    """
    from smengine.footprint import footprint_radius, penetration_depth

    k = store.grid.subpixel
    statics = list(store.static_names)
    daily = list(store.dynamic_names) + list(store.coarse_names)
    inputs = _footprint_inputs(store, r)
    if "bulk_density" in statics:
        bd = _pixel_mean(store.static[statics.index("bulk_density")], k)
    else:
        bd = (1.0 - _pixel_mean(store.static[statics.index("porosity")], k)) * PARTICLE_DENSITY
    theta = np.asarray(sm, dtype=np.float64)
    ok = np.isfinite(theta) & (theta > 0.0) & (theta < 1.0) & np.isfinite(bd)[None] & (bd > 0)[None]
    d86 = np.full(theta.shape, np.nan, np.float32)
    bdd = np.broadcast_to(bd, theta.shape)
    d86[ok] = penetration_depth(r, bdd[ok], theta[ok])
    out: dict[str, Any] = {"d86": d86}
    if "abs_humidity" in daily:
        hum = _daily_pixel_mean(store, "abs_humidity", days)
        if "pressure" in daily:
            p = _daily_pixel_mean(store, "pressure", days)
        elif "elevation" in statics:
            z = _pixel_mean(store.static[statics.index("elevation")], k)
            p = np.broadcast_to(1013.25 * (1.0 - 2.25577e-5 * z) ** 5.25588, theta.shape)
        else:
            p = np.full(theta.shape, 1013.25)
        okr = ok & np.isfinite(hum) & (hum >= _MIN_HUMIDITY) & np.isfinite(p) & (p > 0)
        r86 = np.full(theta.shape, np.nan, np.float32)
        r86[okr] = footprint_radius(hum[okr], theta[okr], p[okr])
        out["r86"] = r86
    out["inputs"] = inputs
    return out


def _footprint_inputs(store: Any, r: float = 1.0) -> dict[str, str]:
    """Where :func:`footprint_layers` takes each input from, for this tile (recorded in products)."""
    statics = list(store.static_names)
    daily = list(store.dynamic_names) + list(store.coarse_names)
    inputs: dict[str, str] = {"r_m": f"{r:g}"}
    if "bulk_density" in statics:
        inputs["bulk_density"] = "tile layer bulk_density"
    elif "porosity" in statics:
        inputs["bulk_density"] = f"(1 - porosity) * {PARTICLE_DENSITY:g}"
    else:
        raise ConfigError(
            f"{store.path}: D86 needs the bulk density: the tile has neither a 'bulk_density' nor a 'porosity' "
            f"static layer (it has {statics})"
        )
    if "abs_humidity" not in daily:
        inputs["r86"] = "not computed: no abs_humidity layer"
        return inputs
    inputs["humidity"] = "tile layer abs_humidity"
    if "pressure" in daily:
        inputs["pressure"] = "tile layer pressure"
    elif "elevation" in statics:
        inputs["pressure"] = "barometric formula of tile layer elevation"
    else:
        inputs["pressure"] = "1013.25 hPa (no pressure or elevation layer)"
    return inputs


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` did: files written and skipped, the tiles that failed (tile, reason)
    with their return codes (tile → :attr:`~smengine.errors.SMEngineError.return_code`,
    decoded by :data:`smengine.errors.RETURN_CODES`; 1 for an error from outside smengine),
    and the engine counters."""

    written: tuple[Path, ...]
    skipped: tuple[Path, ...]
    failed: tuple[tuple[str, str], ...]
    stats: EngineStats
    return_codes: dict[str, int] = field(default_factory=dict)


def _ranges(days: np.ndarray, file_days: int) -> list[np.ndarray]:
    return [days[i : i + file_days] for i in range(0, days.size, file_days)]


def output_name(tile_id: str, days: np.ndarray) -> str:
    """File name of a (tile, day range) output: ``<tile>_<YYYYMMDD>_<YYYYMMDD>.nc``."""
    a, b = (str(d).replace("-", "") for d in (days[0], days[-1]))
    return f"{tile_id}_{a}_{b}.nc"


def _gather(
    futures: Mapping[Any, str],
    on_error: str,
    failed: list[tuple[str, str]],
    codes: dict[str, int],
    on_result: Callable[[Any], Any],
) -> list[Any]:
    """Results of Dask tile tasks as they finish (future → tile path): a failure cancels the rest
    and raises (``on_error="raise"``) or is recorded in ``failed``/``codes`` (``"skip"``)."""
    from distributed import as_completed

    results = []
    for fut in as_completed(futures):
        try:
            res = fut.result()
        except Exception as exc:
            if on_error == "raise":
                for other in futures:
                    other.cancel()
                raise
            _failed(failed, codes, futures[fut], exc)
            continue
        results.append(res)
        on_result(res)
    return results


def _failed(failed: list[tuple[str, str]], codes: dict[str, int], st: Any, exc: BaseException) -> None:
    name = str(getattr(st, "path", st))
    log.error("tile %s failed: %s", name, exc)
    failed.append((name, f"{type(exc).__name__}: {exc}"))
    codes[name] = int(getattr(exc, "return_code", SMEngineError.return_code))


def _remove_stale_outputs(out: Path, tid: str) -> int:
    """Remove the temporary outputs of tile ``tid`` (``.<tid>_….nc.<8>.tmp`` in ``out/<tid>``,
    ``.<tid>.zarr.<8>.tmp`` in ``out``) that a killed run left; returns how many."""
    import shutil

    from smengine._io import TEMP_NAME

    n = 0
    for folder, ok in (
        (out / tid, lambda s: s.startswith(f"{tid}_") and s.endswith(".nc")),
        (out, f"{tid}.zarr".__eq__),
    ):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = TEMP_NAME.match(p.name)
            if m is None or not ok(m["name"]) or p.is_symlink():
                continue
            try:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
                n += 1
            except OSError as exc:
                log.warning("cannot remove the temporary output %s: %s", p, exc)
    if n:
        log.warning("tile %s: removed %d temporary output(s) left in %s by an interrupted run", tid, n, out)
    return n


def _output_tile_id(store: Any) -> str:
    """The name of a tile's outputs: its ``tile_id`` attribute (or, without one, its file's stem),
    which must be a plain file name (:func:`smengine._io.safe_name`): the attribute comes from
    the tile file and must not take the outputs out of the output folder."""
    tid = getattr(store, "tile_id", None)
    if tid:
        return safe_name(tid, f"{store.path}: attribute tile_id")
    return safe_name(Path(store.path).stem, f"{store.path}: tile without tile_id, its file name")


def _run_tile(
    st: Any,
    cf: Any,
    *,
    out: Path,
    days: Any,
    file_days: int,
    resume: bool,
    format: str,
    config: dict[str, Any] | None,
    min_valid_fraction: float,
    n_threads: int | None,
    chunk_days: int,
    progress: Callable[[int], Any] | None = None,
    footprint: bool = False,
    di: bool = False,
    lpd: bool = False,
    max_missing: float | None = None,
    strict: bool = False,
) -> tuple[list[Path], list[Path], EngineStats, int, str]:
    """One tile of :func:`run`: (written, skipped, stats, days covered, tile path). Each output
    passes :func:`_check_output` before it is written: a rejected one raises, unwritten (the
    outputs before it stay; a rerun skips them and makes the rejected one again)."""
    from smengine.product import open_product, write_netcdf, write_zarr

    runner = TileRunner(
        st,
        cf,
        min_valid_fraction=min_valid_fraction,
        n_threads=n_threads,
        chunk_days=chunk_days,
        di=di,
        lpd=lpd,
    )
    runner.footprint = footprint
    written: list[Path] = []
    skipped: list[Path] = []
    tile_days = _select_days(runner.store, days)
    tid = _output_tile_id(runner.store)
    tdir = inside(out, out / tid, f"tile {runner.store.path}")
    zpath = inside(out, out / f"{tid}.zarr", f"tile {runner.store.path}")
    _remove_stale_outputs(out, tid)
    ranges = list(_ranges(tile_days, file_days))
    want_cfg = _engine_config(runner, config)
    done_until = checked_until = None
    old_attrs: dict[str, Any] = {}
    if format == "zarr" and zpath.exists():
        if not resume:
            raise ConfigError(f"{zpath} exists; delete it or resume")
        with open_product(zpath) as old:
            done_until = np.asarray(old["time"].values).astype("datetime64[D]")[-1]
            old_attrs = dict(old.attrs)
        # the digest covers the tile's days up to the day it names: an append killed between its
        # attributes and its arrays (xarray writes the attributes first) leaves them a range apart
        recorded = old_attrs.get("smengine_inputs_day")
        checked_until = np.datetime64(str(recorded), "D") if recorded else done_until
    # one pass over the tile for every digest: each range's end, and the day the Zarr store's digest covers
    ends = [r[-1] for r in ranges] + ([checked_until] if checked_until is not None else [])
    inputs = _input_digests(runner.store, ends) if ends else {}
    if checked_until is not None:
        why = _record_differs(old_attrs, want_cfg, inputs[checked_until])
        if why is not None:
            raise DataError(f"{zpath}: cannot resume: {why}; delete it or write to another out_dir")
    pending = []
    for rng in ranges:
        path = zpath if format == "zarr" else inside(out, tdir / output_name(tid, rng), f"tile {runner.store.path}")
        todo = rng if done_until is None else rng[rng > done_until]
        if format == "netcdf" and resume and path.exists():
            why = _why_not_reusable(path, want_cfg, inputs[rng[-1]])
            if why is not None:
                raise DataError(
                    f"{path}: not resumed: {why}; pass overwrite=True (smengine predict --overwrite) to "
                    "replace it, or write to another out_dir"
                )
        if format == "netcdf" and resume and path.exists() or todo.size == 0:
            skipped.append(path)
            if progress is not None:
                progress(rng.size)
            continue
        if todo.size < rng.size and progress is not None:
            progress(rng.size - todo.size)
        pending.append((todo, path, inputs[rng[-1]]))
    for rng, path, digest in pending:
        before = EngineStats(**vars(runner.stats))
        req, arrays = runner.predict_arrays(rng)
        where = f"{zpath.name} {rng[0]}..{rng[-1]}" if format == "zarr" else str(path.relative_to(out))
        _check_output(
            _stats_since(runner.stats, before), f"run into {out}: {where}", max_missing=max_missing, strict=strict
        )
        ds = _product(runner, req, arrays, config, inputs=digest)
        if format == "zarr":
            ds.attrs["smengine_inputs_day"] = str(np.datetime64(rng[-1], "D"))  # the day the digest covers
            write_zarr(ds, path)
        else:
            tdir.mkdir(parents=True, exist_ok=True)
            write_netcdf(ds, path, overwrite=True)
        written.append(path)
        if progress is not None:
            progress(rng.size)
    return written, skipped, runner.stats, int(tile_days.size), str(runner.store.path)


def run(
    stores: Iterable[TileStore | str | os.PathLike[str]],
    forest: Any,
    out_dir: str | os.PathLike[str],
    days: Any = None,
    *,
    file_days: int = 32,
    resume: bool = True,
    min_valid_fraction: float = 0.5,
    n_threads: int | None = None,
    chunk_days: int = 8,
    config: dict[str, Any] | None = None,
    progress: Callable[[int], Any] | None = None,
    on_error: str = "raise",
    format: str = "netcdf",
    client: Any = None,
    max_missing: float | None = None,
    footprint: bool = False,
    di: bool | None = None,
    lpd: bool = False,
) -> RunResult:
    """Predict a domain: every tile, every day range, one CF-NetCDF per (tile, range).

    NetCDF outputs are ``out_dir/<tile>/<tile>_<first>_<last>.nc``, written to a temporary
    name and renamed, so an interrupted run leaves only whole files. With ``resume``
    (default), ranges whose file exists are skipped (their days still advance the SWI
    state). For long runs, ``format="zarr"`` appends every range to one store per tile,
    ``out_dir/<tile>.zarr`` (:func:`smengine.product.write_zarr`); resuming skips the days
    the store already has.

    Parameters
    ----------
    stores : iterable of TileStore or paths
    forest : see :func:`predict`
    out_dir : path
    days : see :func:`predict` (default: all days of each tile)
    file_days : int, optional
        Days per output file (default 32).
    resume : bool, optional
        Skip (tile, range) outputs that exist (default True); False overwrites them.
    min_valid_fraction, n_threads, chunk_days, config : see :func:`predict`
    progress : callable, optional
        Called with the number of days finished (skipped ranges count as finished).
    on_error : {"raise", "skip"}, optional
        On a failing tile: raise (default) or log it, record it in ``RunResult.failed``
        and go on with the next tile. Files already written stay.
    format : {"netcdf", "zarr"}, optional
        One CF-NetCDF per (tile, range) (default) or one Zarr store per tile.
    client : distributed.Client, optional
        Run the tiles as tasks on a Dask cluster (the forest is scattered once; each task
        opens its tile from its path and writes its own files, so no data goes through
        the scheduler). ``progress`` is then called once per finished tile. ``n_threads``
        applies per task: match it to the workers' threads.
    max_missing : float, optional
        Reject an output (one file, or one range appended to a Zarr store) of which more than
        this fraction of the pixel-days has no value: :class:`~smengine.errors.DataError`
        naming it, and it is not written, so a rerun makes it again rather than skip it
        (outputs before it stay). The same rule holds for the
        :class:`~smengine.errors.DataLossWarning` of an output when the warning filters make
        it an error (the CLI's ``--strict``). Without either, the warnings are given once at
        the end, over the outputs of the run.
    footprint : bool, optional
        Products carry ``d86``/``r86`` per pixel-day (see :func:`predict`).
    di : bool, optional
        Products carry the dissimilarity index ``di`` and the ``outside_aoa`` flag bit
        (see :func:`predict`; default: when the forest carries an applicability reference).
    lpd : bool, optional
        Products carry the local point density ``lpd`` (see :func:`predict`; default False;
        True needs a forest with an applicability reference).

    Returns
    -------
    RunResult

    Raises
    ------
    ConfigError
        On bad arguments, or with ``lpd=True`` and a forest without an applicability reference.
    """
    if format not in ("netcdf", "zarr"):
        raise ConfigError(f"format should be 'netcdf' or 'zarr', got {format!r}")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error should be 'raise' or 'skip', got {on_error!r}")
    if int(file_days) < 1:
        raise ConfigError(f"file_days should be >= 1, got {file_days}")
    out = Path(out_dir).expanduser()
    cf = _load_forest(forest)
    _check_lpd(cf, lpd)
    written: list[Path] = []
    skipped: list[Path] = []
    failed: list[tuple[str, str]] = []
    codes: dict[str, int] = {}
    stats = EngineStats()
    kw = {
        "out": out,
        "days": days,
        "file_days": int(file_days),
        "resume": resume,
        "format": format,
        "config": config,
        "min_valid_fraction": min_valid_fraction,
        "n_threads": n_threads,
        "chunk_days": chunk_days,
        "footprint": footprint,
        "di": _resolve_di(cf, di),
        "lpd": bool(lpd),
        "max_missing": max_missing,
        "strict": _warnings_are_errors(),
    }
    items = list(stores)
    if client is None:
        results = []
        for st in items:
            try:
                results.append(_run_tile(st, cf, progress=progress, **kw))
            except Exception as exc:
                if on_error == "raise":
                    raise
                _failed(failed, codes, st, exc)
    else:
        paths = [str(getattr(st, "path", st)) for st in items]  # memory maps stay on the workers
        cf_remote = client.scatter(cf, broadcast=True)
        futures = {client.submit(_run_tile, p, cf_remote, pure=False, **kw): p for p in paths}
        results = _gather(futures, on_error, failed, codes, lambda res: progress(res[3]) if progress else None)
        order = {p: k for k, p in enumerate(paths)}
        results.sort(key=lambda r: order.get(r[4], 0))
    for w, sk, st_, _n, _name in results:
        written += w
        skipped += sk
        stats.add(st_)
    stats.warn_if_degraded(f"run into {out}", max_missing=max_missing)
    return RunResult(tuple(written), tuple(skipped), tuple(failed), stats, dict(codes))


from smengine._embed import Stepper, predict_dataset  # noqa: E402  (they use the runner defined above)


def __getattr__(name: str) -> Any:
    if name == "naive_predict":  # moved to smengine.testing; the old import path keeps working
        from smengine.testing import naive_predict

        return naive_predict
    raise AttributeError(f"module 'smengine.engine' has no attribute {name!r}")
