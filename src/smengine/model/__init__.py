"""Training with grouped cross-validation, the model card, and the native forest predictor.

* :func:`train` fits a :class:`Forest` (scikit-learn ``RandomForestRegressor``, SCIENCE §4.3
  defaults) with leave-site-out, leave-year-out and spatial-block cross-validation, a small
  grouped hyper-parameter search, per-site metrics and the out-of-bag score, all recorded in
  a :class:`ModelCard`.
* :class:`CompiledForest` is the forest exported through treelite with an exact, nogil
  native predictor (``predict``, ``predict_with_spread``, ``save``/``load``).
* ``train(model="boosting" | "hybrid")`` fits LightGBM gradient-boosted trees or a
  :class:`HybridRegressor` (a linear base plus trees on its residuals) through the same CV and
  card; :func:`select_model` chooses among :data:`MODELS` by spatio-temporal leave-site-out CV on
  the training rows, with paired intervals (``train(model="auto")``).
* :class:`Applicability` is the area-of-applicability reference (Meyer & Pebesma 2021) the
  forest carries: the dissimilarity index of new feature vectors and its threshold.
"""

from smengine.model._applicability import Applicability
from smengine.model._card import ModelCard
from smengine.model._choice import SELECTION_CV, ModelSelection, select_model
from smengine.model._compiled import CompiledForest, TraversalStats, detect_stride
from smengine.model._hash import forest_hash
from smengine.model._hybrid import ALPHA_BY_CV, DEFAULT_LGBM_PARAMS, RIDGE_ALPHAS, HybridRegressor, choose_ridge_alpha
from smengine.model._train import (
    CV_SCHEMES,
    DEFAULT_BOOST_GRID,
    DEFAULT_CV,
    DEFAULT_PARAM_GRID,
    DEFAULT_TREES,
    MODELS,
    Forest,
    forest_size_curve,
    train,
)

__all__ = [
    "ALPHA_BY_CV",
    "CV_SCHEMES",
    "DEFAULT_BOOST_GRID",
    "DEFAULT_CV",
    "DEFAULT_LGBM_PARAMS",
    "DEFAULT_PARAM_GRID",
    "DEFAULT_TREES",
    "MODELS",
    "RIDGE_ALPHAS",
    "SELECTION_CV",
    "Applicability",
    "CompiledForest",
    "Forest",
    "HybridRegressor",
    "ModelCard",
    "ModelSelection",
    "TraversalStats",
    "detect_stride",
    "choose_ridge_alpha",
    "forest_hash",
    "forest_size_curve",
    "select_model",
    "train",
]
