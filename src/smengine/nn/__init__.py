r"""A spatial neural network beside the forest: a fully convolutional net on sub-pixel patches.

The forest sees one sub-pixel at a time (its footprint-weighted features in training). The
spatial network sees a patch of ``(2·half_width + 1)²`` sub-pixels of every feature around a
place (11 × 11 by default: ±1.25 km at 250-m sub-pixels, the CRNS footprint and its
surroundings) and predicts what a CRNS standing there measures. It is trained on station-days
with patches centred on the stations, so it learns its own spatial weighting instead of a
fixed footprint kernel, and it is applied over a whole tile convolutionally: ``half_width``
unpadded 3 × 3 convolutions and a 1 × 1 head give every sub-pixel exactly the value of the
patch centred on it (the tile is padded with unknown values, as patches are at the tile edge).
The product is the mean of the valid sub-pixel predictions of each 1-km pixel — the same
sub-pixel scaling, :class:`~smengine.features.FeatureSpec`, tile store, product writer and CF
metadata as the forest; :func:`smengine.engine.predict`, :func:`smengine.engine.run` and
``smengine predict`` take a :class:`SpatialNet` or its file wherever they take a forest.

Station-days are few, so: random flips and quarter turns of the patches, AdamW weight decay,
early stopping on a grouped CV by station (the number of epochs is the minimum of the
fold-mean validation RMSE), optional pre-training on pseudo-targets (ERA5-Land θ_eq at any
pixel, :func:`pseudo_patches`) before the station folds. The fold nets form the ensemble: its
mean is ``sm``, its SD (averaged over the sub-pixels) ``sm_uncertainty``. Training is seeded
and deterministic on the CPU (``torch.use_deterministic_algorithms``): the same seed and inputs
give the same weights.

Needs PyTorch (``pip install 'smengine[nn]'``; the CPU build is enough). Importing this
package without it works; using it raises :class:`~smengine.errors.ConfigError` with the
install command.

Examples
--------
>>> import smengine.nn                                              # doctest: +SKIP
>>> net = smengine.nn.train(table, stores, seed=0)                  # doctest: +SKIP
>>> net.save("model.smnn.pt")                                       # doctest: +SKIP
>>> ds = smengine.engine.predict("tiles/t000_000.h5", "model.smnn.pt")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from smengine.nn._detect import FORMAT, SUFFIX, is_nn_file, is_nn_model

__all__ = [
    "FORMAT",
    "SUFFIX",
    "NNTileRunner",
    "NetConfig",
    "SpatialNet",
    "compare_with_forest",
    "is_nn_file",
    "is_nn_model",
    "load",
    "pseudo_patches",
    "station_patches",
    "train",
]

_LAZY = {
    "NetConfig": "smengine.nn._model",
    "SpatialNet": "smengine.nn._model",
    "load": "smengine.nn._model",
    "station_patches": "smengine.nn._model",
    "pseudo_patches": "smengine.nn._model",
    "train": "smengine.nn._model",
    "NNTileRunner": "smengine.nn._runner",
    "compare_with_forest": "smengine.nn._compare",
}


def __getattr__(name: str) -> Any:
    """PyTorch is imported on first use of the network, not with the package."""
    if name in _LAZY:
        import importlib

        from smengine.nn._detect import require_torch

        require_torch()
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'smengine.nn' has no attribute {name!r}")
