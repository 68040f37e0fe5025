"""Slow, obviously-correct references for the fast paths (for tests and benchmarks, not production).

:func:`naive_predict` is the plain NumPy / scikit-learn pipeline the fused engine
(:mod:`smengine.engine`) replaces: the full feature matrix of every sub-pixel and day, the
forest's ``predict`` and NumPy reductions to the pixel. The tests compare the engine with it
bit for bit (means) and the benchmarks measure the engine against it.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from smengine.engine import _open_store, _select_days
from smengine.errors import ConfigError
from smengine.features import (
    FeatureBuilder,
    FeatureSpec,
    WaterBalanceSpec,
    parse_swi_feature,
    parse_swi_feature_name,
    parse_water_balance_feature,
)
from smengine.filters import exp_filter
from smengine.product import QualityFlag
from smengine.tiles import TileStore
from smengine.units import conversion

__all__ = ["as_readonly_memmap", "naive_predict"]


def naive_predict(
    store: TileStore | str | os.PathLike[str],
    estimator: Any,
    feature_names: Sequence[str],
    days: Any = None,
    *,
    min_valid_fraction: float = 0.5,
    units: Mapping[str, str | None] | None = None,
    water_balance: WaterBalanceSpec | Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """The plain NumPy / scikit-learn pipeline the engine replaces (a reference, not for production).

    Builds the full feature matrix of every sub-pixel and day with
    :class:`~smengine.features.FeatureBuilder`, calls ``estimator.predict`` on its complete
    rows, reshapes to (day, pixel, sub-pixel) and takes ``nanmean``/``nanstd``.
    The forest spread is the SD over ``estimator.estimators_``.

    Parameters
    ----------
    store : TileStore or path
    estimator : fitted scikit-learn forest
    feature_names : sequence of str
        The estimator's features, in its order.
    days : optional
        As :func:`smengine.engine.predict`.
    min_valid_fraction : float, optional
        As :func:`smengine.engine.predict`.
    units : mapping of str to str or None, optional
        The model's units of each feature (its model card's). A covariate whose tile layer is in
        other units is converted with :func:`smengine.units.conversion`, in float64 and rounded
        to float32, before anything else (an SWI feature is the SWI of the converted source), as
        the engine does. Default: no conversion.
    water_balance : WaterBalanceSpec or mapping, optional
        The water-balance parameters of the model's ``wb<depth>`` features (its model card's
        ``water_balance``); default: those of ``estimator.card`` if it has one. Needed when a
        feature is a ``wb<depth>``.

    Returns
    -------
    dict
        ``sm``, ``subpixel_sd``, ``uncertainty``, ``valid_fraction``, ``quality_flag``
        (day, Py, Px) and ``days``.
    """
    s = _open_store(store)
    names = list(feature_names)
    if water_balance is None:
        card = getattr(estimator, "card", None)
        water_balance = card.get("water_balance") if isinstance(card, Mapping) else getattr(card, "water_balance", None)
    wb_feats = [n for n in names if parse_water_balance_feature(n) is not None and n not in s.feature_names]
    if wb_feats and not water_balance:
        raise ConfigError(f"naive_predict: feature(s) {wb_feats} need the water_balance parameters (the model card's)")
    swi = [p for p in (parse_swi_feature(n) for n in names if n not in s.feature_names) if p is not None]
    Ts = sorted({f.T for f in swi})
    srcs = sorted({f.source for f in swi})
    carry = {(f.carry, f.max_gap) for f in swi}
    if len(carry) > 1:
        raise ConfigError("naive_predict: the forest mixes carried (swi<T>c<gap>_), plain SWI features or gaps")
    spec = FeatureSpec(
        dynamic=tuple(s.dynamic_names),
        coarse=tuple(s.coarse_names),
        swi_of=tuple(srcs),
        swi_T=tuple(Ts) if Ts else (5.0,),
        swi_carry=carry != {(False, None)},
        swi_max_gap=next(iter(carry))[1] if carry else None,
        water_balance=water_balance if wb_feats else None,
    )
    fb = FeatureBuilder(s, spec)
    col = [fb.names.index(n) for n in names]
    req = _select_days(s, days)
    tix = [s.day_index(d) for d in req]
    conv: dict[str, tuple[float, float]] = {}  # tile layer → (scale, offset) to the model's units
    for n in names:
        layer = n if n in s.feature_names else (parse_swi_feature_name(n) or (None,))[0]
        if layer is not None and (units or {}).get(n) and s.units.get(layer):
            ab = conversion(s.units[layer], str((units or {})[n]), where=f"{s.path}: layer {layer!r}")
            if ab != (1.0, 0.0):
                conv[layer] = ab

    def converted(a: np.ndarray, layer: str) -> np.ndarray:
        sc, off = conv[layer]
        return (a.astype(np.float64) * sc + off).astype(np.float32)

    sw = fb.swi() if fb.swi_names else None
    nT = len(spec.swi_T)
    for i, src in enumerate(fb.swi_of):
        if sw is not None and src in conv:
            sw[i * nT : (i + 1) * nT] = exp_filter(
                converted(fb.source_series(src), src),
                s.times,
                spec.swi_T,
                carry=spec.swi_carry,
                max_gap=spec.swi_max_gap,
            )
    wb = fb.water_balance() if fb.wb_names else None
    X = np.stack([fb.day(t, swi=sw, wb=wb)[col] for t in tix])  # (D, F, Y, X)
    for k, n in enumerate(names):
        if n in conv:
            X[:, k] = converted(X[:, k], n)
    D, F = X.shape[:2]
    k = s.grid.subpixel
    Py, Px = s.grid.shape
    rows = X.transpose(0, 2, 3, 1).reshape(-1, F)
    ok = np.isfinite(rows).all(axis=1)
    pred = np.full(rows.shape[0], np.nan)
    pred[ok] = estimator.predict(rows[ok])
    trees = np.full(rows.shape[0], np.nan)
    if ok.any():
        per_tree = np.stack([t.predict(rows[ok]) for t in estimator.estimators_])
        trees[ok] = per_tree.std(axis=0)

    def to_pix(a: np.ndarray) -> np.ndarray:
        return a.reshape(D, Py, k, Px, k).transpose(0, 1, 3, 2, 4).reshape(D, Py, Px, k * k)

    P, S = to_pix(pred), to_pix(trees)
    n = np.isfinite(P).sum(-1)
    vf = n / (k * k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        sm, sd, sp = np.nanmean(P, -1), np.nanstd(P, -1), np.nanmean(S, -1)
    Q = QualityFlag
    flag = np.where(
        n == 0,
        Q.NO_VALID_SUBPIXELS,
        np.where(vf < min_valid_fraction, Q.LOW_VALID_FRACTION, np.where(n < k * k, Q.PARTIAL, Q.GOOD)),
    ).astype(np.uint8)
    bad = flag >= Q.LOW_VALID_FRACTION
    for a in (sm, sd, sp):
        a[bad] = np.nan
    return {"sm": sm, "subpixel_sd": sd, "uncertainty": sp, "valid_fraction": vf, "quality_flag": flag, "days": req}


def as_readonly_memmap(a: np.ndarray, tmp_path: str | os.PathLike[str]) -> np.memmap:
    """Copy ``a`` into a file in ``tmp_path`` and reopen it as a read-only memmap, the way tiles
    reach the kernels (scikit-learn's ``create_memmap_backed_data`` idea)."""
    path = Path(tmp_path) / "memmap.dat"
    mm = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape)
    mm[...] = a
    mm.flush()
    del mm
    return np.memmap(path, dtype=a.dtype, mode="r", shape=a.shape)
