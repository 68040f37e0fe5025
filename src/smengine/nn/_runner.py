"""The spatial network over a whole tile, with the forest runner's interface (engine.TileRunner)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from smengine.errors import ConfigError, DataError
from smengine.features import parse_swi_feature_name
from smengine.product import QualityFlag

__all__ = ["NNTileRunner", "needed_layers"]

log = logging.getLogger(__name__)

_CAL = ("doy_sin", "doy_cos")


def needed_layers(feature_names: list[str]) -> list[str]:
    """Tile layers a model's features are made from (a carried SWI needs its source layer)."""
    out: list[str] = []
    for n in feature_names:
        if n in _CAL:
            continue
        swi = parse_swi_feature_name(n)
        src = swi[0] if swi is not None else n
        if src not in out:
            out.append(src)
    return out


class NNTileRunner:
    """Predict one tile with a :class:`~smengine.nn.SpatialNet`.

    The same attributes and :meth:`predict_arrays` as :class:`smengine.engine.TileRunner`
    (which hands a spatial network to this class), so :func:`smengine.engine.predict`,
    :func:`~smengine.engine.run` and the domain writer make the same product from it. Per
    day: the features of every sub-pixel (:meth:`FeatureBuilder.day
    <smengine.features.FeatureBuilder.day>`, SWI over all the tile's days) go through the
    network convolutionally (:meth:`SpatialNet.predict_subpixels`); a pixel's ``sm`` is the
    mean of its valid sub-pixels' predictions (sub-pixel scaling), ``sm_uncertainty`` the
    mean of their ensemble SD, ``sm_subpixel_sd`` their SD, with the forest's quality flags.

    Parameters
    ----------
    store : TileStore or path
    forest : SpatialNet or path to its file
    min_valid_fraction, n_threads, chunk_days : see :func:`smengine.engine.predict`
    **ignored
        Forest-only settings (``day_inner``, ``reuse``) are accepted and ignored.

    Raises
    ------
    ConfigError
        If the tile lacks a layer the model's features need (the message names them and the tile).
    DataError
        If a feature's units in the tile differ from the model's.
    """

    def __init__(
        self,
        store: Any,
        forest: Any,
        *,
        min_valid_fraction: float = 0.5,
        n_threads: int | None = None,
        chunk_days: int = 8,
        **ignored: Any,
    ) -> None:
        from smengine.engine import EngineStats, _load_forest, _open_store, _runner_args
        from smengine.features import FeatureBuilder, FeatureSpec

        self.store = _open_store(store)
        self.forest = _load_forest(forest)
        self.min_valid_fraction, self.chunk_days = _runner_args(min_valid_fraction, chunk_days)
        self.n_threads = n_threads
        self.reuse = "n/a (spatial network)"
        self.footprint = False
        self.stats = EngineStats()
        s = self.store
        model = self.forest
        self.feature_names = list(model.feature_names)
        tid = s.tile_id or s.path.stem
        missing = [n for n in needed_layers(self.feature_names) if n not in s.feature_names]
        if missing:
            raise ConfigError(
                f"{s.path} (tile {tid}): spatial network {model.content_hash[:19]} needs layer(s) {missing} "
                f"that the tile lacks (it has {s.feature_names}); ingest them or train on this tile's layers"
            )
        try:
            self._fb = FeatureBuilder(s, FeatureSpec.from_saved(model.spec))
        except ConfigError as exc:
            raise ConfigError(f"tile {tid}: spatial network {model.content_hash[:19]}: {exc}") from exc
        lost = [n for n in self.feature_names if n not in self._fb.names]
        if lost:
            raise ConfigError(
                f"{s.path} (tile {tid}): spatial network {model.content_hash[:19]} needs feature(s) {lost} that "
                f"its FeatureSpec does not make from this tile (it makes {self._fb.names})"
            )
        bad = {
            n: (self._fb.units.get(n), u)
            for n, u in model.units.items()
            if u and self._fb.units.get(n) and self._fb.units[n].strip() != u.strip()
        }
        if bad:
            raise DataError(
                f"{s.path} (tile {tid}): feature units differ from the spatial network's (feature: (tile, model)): "
                f"{bad}; the network converts no units: ingest the layers in the model's units"
            )
        self._cols = [self._fb.names.index(n) for n in self.feature_names]
        self._swi: np.ndarray | None = None
        self.grid = s.grid
        if self.grid.subpixel < 1:
            raise DataError(f"{s.path}: grid has no sub-pixels")

    def __repr__(self) -> str:
        return f"<NNTileRunner {self.store.tile_id}: {len(self.feature_names)} features, {self.forest!r}>"

    def describe_product(self, ds: Any) -> None:
        """Say in the product's attributes that a spatial network made ``sm`` (in place)."""
        k = self.forest.config.patch
        sub = f"{self.grid.subpixel_resolution:g} m"
        ds.attrs["comment"] = (
            f"Spatial neural network (smengine.nn: fully convolutional, {k} x {k} sub-pixel patches of the covariates) "
            f"trained at CRNS stations, applied to every sub-pixel ({sub}) and averaged to the pixel (sub-pixel "
            "scaling). Days are UTC days; time is the start of the day, time_bnds its extent."
        )
        if "sm" in ds:
            ds["sm"].attrs["comment"] = (
                ds["sm"]
                .attrs.get("comment", "")
                .replace(
                    "A Random Forest predicts each sub-pixel",
                    "A spatial neural network predicts each sub-pixel from the patch around it",
                )
            )
        if "sm_uncertainty" in ds:
            ds["sm_uncertainty"].attrs["long_name"] = "spread of the spatial network ensemble prediction of sm"
            ds["sm_uncertainty"].attrs["comment"] = (
                "Standard deviation over the ensemble of networks (one per grouped-CV fold) of each sub-pixel "
                "prediction, averaged over the valid sub-pixels of the pixel. An ensemble spread, not a standard "
                "error of sm."
            )

    def _features(self, t: int) -> np.ndarray:
        if self._swi is None and self._fb.swi_names:
            self._swi = self._fb.swi()
        return self._fb.day(int(t), swi=self._swi)[self._cols]

    def predict_arrays(
        self, days: Any = None, progress: Callable[[int], Any] | None = None
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Predict ``days`` (see :func:`smengine.engine.predict`); returns (days, dict of (D, Py, Px) arrays)."""
        from smengine.engine import _empty_outputs, _select_days, _store_index

        s = self.store
        req = _select_days(s, days)
        if req.size == 0:
            raise ConfigError(f"{s.path}: no days selected")
        Py, Px = self.grid.shape
        k = self.grid.subpixel
        out = _empty_outputs(req.size, (Py, Px))
        sidx = _store_index(s, req, self.stats)
        present = np.flatnonzero(sidx >= 0)
        for c0 in range(0, present.size, self.chunk_days):
            oo = present[c0 : c0 + self.chunk_days]
            X = np.stack([self._features(int(sidx[o])) for o in oo])
            nonfinite = np.isinf(X).sum()
            mean, sd = self.forest.predict_subpixels(X, n_threads=self.n_threads, batch=self.chunk_days)
            D = oo.size
            valid = np.isfinite(mean).reshape(D, Py, k, Px, k)
            n = valid.sum(axis=(2, 4))
            m4 = np.where(valid, mean.reshape(D, Py, k, Px, k), 0.0).astype(np.float64)
            s4 = np.where(valid, sd.reshape(D, Py, k, Px, k), 0.0).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                mu = m4.sum(axis=(2, 4)) / n
                var = (np.where(valid, (m4 - mu[:, :, None, :, None]) ** 2, 0.0)).sum(axis=(2, 4)) / n
                unc = s4.sum(axis=(2, 4)) / n
            vf = n / float(k * k)
            flag = np.where(
                n == k * k,
                QualityFlag.GOOD,
                np.where(vf >= self.min_valid_fraction, QualityFlag.PARTIAL, QualityFlag.LOW_VALID_FRACTION),
            )
            flag = np.where(n == 0, QualityFlag.NO_VALID_SUBPIXELS, flag).astype(np.uint8)
            keep = flag <= QualityFlag.PARTIAL
            out["sm"][oo] = np.where(keep, mu, np.nan)
            out["subpixel_sd"][oo] = np.where(keep, np.sqrt(var), np.nan)
            out["uncertainty"][oo] = np.where(keep, unc, np.nan)
            out["valid_fraction"][oo] = vf
            out["quality_flag"][oo] = flag
            st = self.stats
            st.subpixel_days += valid.size
            st.predicted += int(valid.sum())
            st.invalid += int(valid.size - valid.sum())
            st.nonfinite_values += int(nonfinite)
            if progress is not None:
                progress(int(oo.size))
        self.stats.pixel_days += out["quality_flag"].size
        self.stats.nan_pixel_days += int((out["quality_flag"] >= QualityFlag.LOW_VALID_FRACTION).sum())
        return req, out
