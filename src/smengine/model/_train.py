r"""Train the Random Forest on a training table, with grouped cross-validation and a model card.

:func:`train` fits scikit-learn's ``RandomForestRegressor`` (Breiman 2001) with the
defaults of SCIENCE §4.3 (500 trees, ``max_features`` = 1/3 of the features, Breiman's
regression default, ``min_samples_leaf`` = 5, bootstrap with out-of-bag score) on the
complete rows of :func:`smengine.features.training_table`, and validates it with grouped
cross-validation only:

* ``"site"``: leave-site-out (``GroupKFold`` by station, or one station per fold);
* ``"year"``: leave-one-calendar-year-out;
* ``"block"``: spatial blocks of ``block_size`` metres in the grid CRS (Roberts et al. 2017);
* ``"knndm"``: k-fold nearest-neighbour distance matching (Linnenbrink et al. 2024): stations
  grouped into folds whose test-to-training distances match the distances from the prediction
  domain (``knndm_domain``: the product's pixels, or the stations' convex hull) to the
  stations (:func:`smengine.evaluate.knndm_folds`).

Random (row-wise) splits are not offered: neighbouring days of one station are nearly
identical, so a random split tests interpolation in time at known sites and inflates the
skill. Han et al. (2023) report RMSE 0.038 (random split) against 0.060 (temporal) and
0.079 m³ m⁻³ (independent stations) for the same models. The hyper-parameters are tuned
by leave-site-out CV for the same reason.

Every fit uses the same ``random_state``, so the same table gives the same forest (equal
:func:`~smengine.model._hash.forest_hash`) and the same :class:`ModelCard`.

Beside the forest, ``train(model=...)`` fits the other models of :data:`MODELS` with the same
grouped CV, card and compiled form: ``"boosting"``, LightGBM gradient-boosted trees (Ke et al.
2017; summed trees, :meth:`~smengine.model.CompiledForest.from_lightgbm`), and ``"hybrid"``, a
linear base plus LightGBM trees on its residuals (:class:`~smengine.model.HybridRegressor`,
:meth:`~smengine.model.CompiledForest.from_hybrid`), which leaves the training range where its base
does. ``model="auto"`` chooses among them by spatio-temporal leave-site-out CV on the training
rows (:func:`~smengine.model.select_model`).

The forest's size is a lever on the engine's speed: :func:`forest_size_curve` reports the
grouped-CV skill against the number of trees and the leaf size, and
``train(n_estimators="smallest")`` picks the smallest forest within ``size_tolerance``
(m³ m⁻³) of the best leave-site-out RMSE, recording the curve and the choice in the card.

References
----------
.. [1] Breiman, L. (2001). Random forests. Machine Learning 45, 5–32.
.. [2] Han, Q. et al. (2023). Global long-term daily 1 km surface soil moisture dataset with
   physics informed machine learning. Geosci. Model Dev. 16, 5825–5845.
.. [3] Roberts, D. R. et al. (2017). Cross-validation strategies for data with temporal,
   spatial, hierarchical, or phylogenetic structure. Ecography 40, 913–929.
"""

from __future__ import annotations

import copy
import logging
import math
import platform
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd
from joblib import effective_n_jobs
from sklearn.ensemble import RandomForestRegressor
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, ParameterGrid

from smengine.errors import ConfigError, DataError, DataLossWarning, ValidationError
from smengine.metrics import evaluate
from smengine.model._applicability import DEFAULT_MAX_REFERENCE, Applicability
from smengine.model._card import ModelCard, json_safe
from smengine.model._hash import forest_hash
from smengine.model._hybrid import ALPHA_BY_CV

__all__ = [
    "CV_SCHEMES",
    "DEFAULT_BOOST_GRID",
    "DEFAULT_CV",
    "DEFAULT_PARAM_GRID",
    "DEFAULT_TREES",
    "MODELS",
    "SIZE_LEAVES",
    "SIZE_TOLERANCE",
    "SIZE_TREES",
    "Forest",
    "forest_size_curve",
    "train",
]

if TYPE_CHECKING:
    from smengine.model._compiled import CompiledForest

log = logging.getLogger(__name__)

#: Grouped cross-validation schemes understood by :func:`train`.
CV_SCHEMES = ("site", "year", "block", "knndm")
#: The schemes :func:`train` runs by default (``"knndm"`` on request: it needs a prediction domain).
DEFAULT_CV = ("site", "year", "block")

#: Hyper-parameter grid of SCIENCE §4.3, searched by leave-site-out CV.
DEFAULT_PARAM_GRID: dict[str, tuple[Any, ...]] = {"max_features": (0.2, 0.33, 0.5), "min_samples_leaf": (1, 5, 20)}

#: Parameters :func:`train` sets itself (not searchable).
_FIXED = ("n_estimators", "random_state", "n_jobs", "oob_score", "bootstrap", "verbose", "warm_start")

#: The models :func:`train` fits: a random forest, LightGBM gradient-boosted trees, and a hybrid
#: (a linear base plus LightGBM trees on its residuals). ``train(model="auto")`` chooses among them.
MODELS = ("forest", "boosting", "hybrid")

#: Trees of each model when ``train(n_estimators=None)`` (the default): 500 averaged trees for the
#: forest (SCIENCE §4.3), 200 boosting rounds at learning rate 0.03 for the others.
DEFAULT_TREES: dict[str, int] = {"forest": 500, "boosting": 200, "hybrid": 200}

#: LightGBM grid searched by leave-site-out CV for ``"boosting"`` and ``"hybrid"`` (``search=True``):
#: the two knobs of a boosted model's capacity at a fixed number of rounds (leaves per tree, and the
#: learning rate, i.e. how far 200 rounds go). Other LightGBM parameters keep
#: :data:`smengine.model.DEFAULT_LGBM_PARAMS` (or ``model_params``).
DEFAULT_BOOST_GRID: dict[str, tuple[Any, ...]] = {"num_leaves": (7, 15), "learning_rate": (0.03, 0.1)}


class _NotGiven(int):
    """``train``'s default ``n_estimators``: the forest's 500, recognisably not given, so that a
    boosted model takes its own number of rounds (:data:`DEFAULT_TREES`)."""


_N_ESTIMATORS = _NotGiven(DEFAULT_TREES["forest"])

#: HybridRegressor parameters (the rest of a hybrid's parameters are LightGBM's).
_HYBRID_KEYS = ("base_features", "alpha")

#: Station id and date of every row of a fit (what :func:`~smengine.model.choose_ridge_alpha` splits by).
Meta = tuple[np.ndarray, np.ndarray]
#: Parameters of the boosted models that train sets itself.
_BOOST_FIXED = ("n_estimators", "random_state", "n_jobs", "lgbm_params")

#: Tree counts scored by :func:`forest_size_curve` and ``train(n_estimators="smallest")``.
SIZE_TREES: tuple[int, ...] = (10, 25, 50, 100, 200, 500)

#: Leaf sizes (``min_samples_leaf``) scored by :func:`forest_size_curve` and ``train(n_estimators="smallest")``.
SIZE_LEAVES: tuple[int, ...] = (1, 5, 20)

#: ``train(n_estimators="smallest")`` keeps forests whose pooled grouped-CV RMSE is within
#: this of the best one's, m³ m⁻³ (absolute).
SIZE_TOLERANCE = 0.002

#: Summary metrics of the median over sites in the card.
_MEDIAN_KEYS = ("R", "RMSE", "ubRMSE", "bias", "NSE", "KGE", "anomaly_R")

Split = tuple[np.ndarray, np.ndarray]


# ======================================================================================
# the trained forest
# ======================================================================================
class Forest:
    """The trained model with its feature list, model card and CV results.

    Made by :func:`train`; pickles like any scikit-learn estimator. The name is historical: it
    holds a random forest, LightGBM gradient-boosted trees or a hybrid (:attr:`model`).

    Attributes
    ----------
    estimator : RandomForestRegressor, lightgbm.LGBMRegressor or HybridRegressor
        The model fitted on every complete row.
    model : {"forest", "boosting", "hybrid"}
        Which model :attr:`estimator` is.
    features : list of str
        Feature names in column order.
    card : ModelCard
    cv_predictions : pandas.DataFrame
        Out-of-fold predictions of every CV scheme: ``station, date, target, scheme, fold,
        group, prediction`` (``group``: the station, year or block ``"<i>_<j>"`` left out).
    site_metrics : pandas.DataFrame
        :func:`smengine.metrics.evaluate` per station (index) of its leave-site-out
        predictions; empty without ``"site"`` CV.
    applicability : Applicability or None
        The area-of-applicability reference of the training rows (stations as folds, the
        forest's importances as weights; :class:`smengine.model.Applicability`), carried
        into :meth:`compile` so that the engine computes the dissimilarity index.
    knndm : KNNDM or None
        With ``cv="knndm"``: the folds and their nearest-neighbour distance functions
        (:func:`smengine.evaluate.plot_knndm` draws them).
    selection : ModelSelection or None
        With ``train(model="auto")``: the selection among the models on every training row
        (:func:`smengine.model.select_model`).
    """

    def __init__(
        self,
        estimator: RandomForestRegressor,
        features: Sequence[str],
        card: ModelCard,
        cv_predictions: pd.DataFrame,
        site_metrics: pd.DataFrame,
        applicability: Applicability | None = None,
        model: str = "forest",
    ) -> None:
        if model not in MODELS:
            raise ConfigError(f"Forest: model should be one of {list(MODELS)}, got {model!r}")
        self.model = model
        self.estimator = estimator
        self.features = list(features)
        self.card = card
        self.cv_predictions = cv_predictions
        self.site_metrics = site_metrics
        self.applicability = applicability
        self.knndm: Any = None
        self.selection: Any = None

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("applicability", None)  # pickled before forests carried it
        state.setdefault("knndm", None)
        state.setdefault("model", "forest")  # pickled before other models
        state.setdefault("selection", None)
        self.__dict__.update(state)

    @property
    def n_features(self) -> int:
        """Number of features the forest expects."""
        return len(self.features)

    def _matrix(self, table_or_array: pd.DataFrame | npt.ArrayLike) -> np.ndarray:
        if isinstance(table_or_array, pd.DataFrame):
            missing = [f for f in self.features if f not in table_or_array.columns]
            if missing:
                raise ValidationError(f"Forest.predict: feature column(s) {missing} missing from the table")
            return _float32(table_or_array, self.features)
        X = np.asarray(table_or_array, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValidationError(f"Forest.predict: X should have shape (n, {self.n_features}), got {X.shape}")
        return X

    def predict(self, table_or_array: pd.DataFrame | npt.ArrayLike) -> np.ndarray:
        """Predict on float32 features (scikit-learn, LightGBM or the hybrid); rows with a NaN or
        inf give NaN.

        Parameters
        ----------
        table_or_array : pandas.DataFrame or array_like, shape (n, n_features)
            A table holding the :attr:`features` columns (any order, extra columns
            ignored) or a feature matrix in :attr:`features` order.

        Returns
        -------
        ndarray, float64, shape (n,)
            Soil moisture in the target's units (m³ m⁻³). Bitwise equal to
            ``estimator.predict`` with ``n_jobs=1`` whatever ``estimator.n_jobs``:
            threads split the rows, not the trees (see :func:`train`, Notes); and equal to the
            compiled model's prediction for a boosted or hybrid model.
        """
        X = self._matrix(table_or_array)
        ok = np.isfinite(X).all(axis=1)
        out = np.full(X.shape[0], np.nan)
        if ok.any():
            out[ok] = _predict_model(self.model, self.estimator, X if ok.all() else X[ok], self.estimator.n_jobs)
        return out

    def compile(self, **kwargs: Any) -> CompiledForest:
        """The native predictor: :meth:`smengine.model.CompiledForest.from_sklearn` of
        :attr:`estimator` (``from_lightgbm`` for ``"boosting"``, ``from_hybrid`` for
        ``"hybrid"``), carrying this :attr:`card`, the feature names and the
        :attr:`applicability` reference. Keyword arguments (e.g. ``cache_dir``, forests only)
        are passed on."""
        from smengine.model._compiled import CompiledForest

        kwargs.setdefault("feature_names", list(self.features))
        build = {
            "forest": CompiledForest.from_sklearn,
            "boosting": CompiledForest.from_lightgbm,
            "hybrid": CompiledForest.from_hybrid,
        }[self.model]
        cf = build(self.estimator, card=self.card, **kwargs)
        cf.applicability = self.applicability
        return cf

    @property
    def n_trees(self) -> int:
        """Trees of the model (boosting rounds of a boosted or hybrid one)."""
        if self.model == "forest":
            return len(self.estimator.estimators_)
        return int(self.estimator.booster_.num_trees())

    def __repr__(self) -> str:
        site = (self.card.cv.get("site") or {}).get("metrics") or {}
        skill = f", site-CV RMSE {site['RMSE']:.4f}" if site.get("RMSE") is not None else ""
        what = "" if self.model == "forest" else f" ({self.model})"
        return (
            f"<Forest{what} {self.n_trees} trees, {self.n_features} features, "
            f"{len(self.card.stations)} stations, {self.card.n_samples} samples{skill}, "
            f"{self.card.content_hash[:19]}>"
        )


# ======================================================================================
# helpers
# ======================================================================================
def _float32(table: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    bad = [f for f in features if not (pd.api.types.is_numeric_dtype(table[f]) or pd.api.types.is_bool_dtype(table[f]))]
    if bad:
        raise ValidationError(f"feature column(s) {bad} are not numeric")
    with np.errstate(over="ignore"):  # out-of-range float64 → inf, dropped as non-finite
        return np.ascontiguousarray(table[list(features)].to_numpy(dtype=np.float32))


def _predict(rf: RandomForestRegressor, X: np.ndarray, n_jobs: int | None, min_rows: int = 4096) -> np.ndarray:
    """``rf.predict(X)`` summed over the trees in their order, rows split over threads.

    scikit-learn's threaded predict adds the trees' outputs in completion order, so with
    ``n_jobs > 1`` the last bit depends on thread timing; splitting the rows instead keeps
    the result bitwise reproducible (and equal to ``n_jobs=1``).
    """
    one = copy.copy(rf)  # shares the fitted trees
    one.n_jobs = 1
    n = min(effective_n_jobs(n_jobs), max(1, X.shape[0] // min_rows))
    if n <= 1:
        return one.predict(X)
    chunks = np.array_split(np.arange(X.shape[0]), n)
    with ThreadPoolExecutor(n) as ex:
        return np.concatenate(list(ex.map(lambda idx: one.predict(X[idx]), chunks)))


def _check_int(name: str, v: Any, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ConfigError(f"{name} should be an integer >= {lo}, got {v!r}")
    return int(v)


def _schemes(cv: str | Sequence[str] | None) -> tuple[str, ...]:
    if cv is None:
        return ()
    names = (cv,) if isinstance(cv, str) else tuple(cv)
    unknown = [c for c in names if c not in CV_SCHEMES]
    if unknown:
        raise ConfigError(f"unknown cv scheme(s) {unknown}; choose from {list(CV_SCHEMES)}")
    return tuple(dict.fromkeys(names))


def _param_grid(param_grid: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    grid = dict(DEFAULT_PARAM_GRID if param_grid is None else param_grid)
    valid = set(RandomForestRegressor().get_params()) - set(_FIXED)
    bad = sorted(set(grid) - valid)
    if bad:
        raise ConfigError(f"param_grid: {bad} cannot be searched; choose from {sorted(valid)}")
    for k, v in grid.items():
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) == 0:
            raise ConfigError(f"param_grid[{k!r}] should be a non-empty list of values, got {v!r}")
    if not grid:
        raise ConfigError("param_grid is empty")
    return [json_safe(p) for p in ParameterGrid({k: list(v) for k, v in grid.items()})]


def _versions() -> dict[str, Any]:
    import sklearn

    import smengine

    out: dict[str, Any] = {
        "smengine": smengine.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    try:
        import treelite

        out["treelite"] = str(treelite.__version__)
    except (ImportError, AttributeError):  # not installed: the card says so
        out["treelite"] = None
    out["python"] = platform.python_version()
    return out


def _progress(progress: bool | None, total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="smengine train", unit="fit", disable=None if progress is None else not progress)


def _rf(
    params: Mapping[str, Any], n_estimators: int, random_state: int, n_jobs: int | None, oob: bool = False
) -> RandomForestRegressor:
    return RandomForestRegressor(
        n_estimators=n_estimators, bootstrap=True, oob_score=oob, n_jobs=n_jobs, random_state=random_state, **params
    )


def _fit_model(
    model: str,
    params: Mapping[str, Any],
    n_estimators: int,
    random_state: int,
    n_jobs: int | None,
    X: np.ndarray,
    y: np.ndarray,
    features: Sequence[str] | None = None,
    oob: bool = False,
    meta: Meta | None = None,
) -> Any:
    """Fit one model of :data:`MODELS` on ``X, y`` (float32 rows, float64 target).

    ``"forest"``: :func:`_rf` (as always). ``"boosting"``: an ``LGBMRegressor`` of
    :data:`~smengine.model.DEFAULT_LGBM_PARAMS` updated by ``params``. ``"hybrid"``: a
    :class:`~smengine.model.HybridRegressor` (``base_features`` and ``alpha`` from ``params``, the
    rest are its trees' LightGBM parameters), fitted with the feature names. A hybrid's ``alpha``
    left out or :data:`~smengine.model.ALPHA_BY_CV` is chosen on these rows by
    :func:`~smengine.model.choose_ridge_alpha`, which needs ``meta`` (the rows' stations and dates)."""
    if model == "forest":
        return _rf(params, n_estimators, random_state, n_jobs, oob=oob).fit(X, y)
    from smengine.model._hybrid import HybridRegressor, lgbm_regressor

    lgbm = {k: v for k, v in params.items() if k not in _HYBRID_KEYS}
    lgbm["n_estimators"] = n_estimators
    if model == "boosting":
        return lgbm_regressor(lgbm, random_state=random_state, n_jobs=n_jobs).fit(X, y)
    hyb = {k: params[k] for k in _HYBRID_KEYS if k in params}
    choice = None
    if hyb.get("alpha", ALPHA_BY_CV) == ALPHA_BY_CV:
        hyb["alpha"], choice = _cv_alpha(X, y, features, hyb.get("base_features"), meta)
    est = HybridRegressor(**hyb, lgbm_params=lgbm, random_state=random_state, n_jobs=n_jobs)
    est.fit(X, y, feature_names=None if features is None else list(features))
    if choice is not None:
        est.alpha_choice_ = choice
    return est


def _sub(meta: Meta | None, rows: np.ndarray) -> Meta | None:
    return None if meta is None else (meta[0][rows], meta[1][rows])


def _cv_alpha(
    X: np.ndarray, y: np.ndarray, features: Sequence[str] | None, base: Any, meta: Meta | None
) -> tuple[float, dict[str, Any]]:
    """A hybrid base's ridge penalty by spatio-temporal CV on the fit's rows, and the card's record of it."""
    from smengine.model._hybrid import choose_ridge_alpha

    if meta is None:
        raise ConfigError(f"a hybrid's alpha={ALPHA_BY_CV!r} needs the rows' stations and dates; pass a number")
    idx = None
    if base is not None:
        names = list(features or [])
        idx = [names.index(b) if isinstance(b, str) and b in names else b for b in base]
        if any(not isinstance(i, (int, np.integer)) for i in idx):
            raise ConfigError(f"base_features {base!r}: unknown name(s) among {names}")
    alpha, scores = choose_ridge_alpha(X, y, meta[0], meta[1], base_index=idx)
    rule = (
        "lowest median station ubRMSE of the base under spatio-temporal CV on the training rows"
        if scores
        else "fewer than 3 stations or 2 days: the smallest penalty"
    )
    return alpha, {"rule": rule, "median_ubRMSE": {f"{a:g}": v for a, v in scores.items()}}


def _refuse_constant(est: Any, model: str, X: np.ndarray, y: np.ndarray, sites: Sequence[Any], n_jobs: Any) -> None:
    """A model that gives one value for every training row would paint a constant map: an error.

    It happens when the rows are too few to split (a forest's leaves need ``min_samples_leaf``
    station-days on each side; LightGBM's ``min_child_samples``) or the target does not vary.
    A hybrid always follows its base, so only the tree models can be constant."""
    p = _predict_model(model, est, X, n_jobs)
    if p.size and np.ptp(p) == 0:
        raise DataError(
            f"train: the {model} predicts one value ({p[0]:.4g}) for every training row — a constant map: "
            f"{y.size} station-day(s) from {len(sites)} station(s), target range {np.ptp(y):.3g}; "
            "it needs more rows (or smaller leaves) to learn anything from the features"
        )


def _predict_model(model: str, est: Any, X: np.ndarray, n_jobs: int | None) -> np.ndarray:
    """Predictions of a model fitted by :func:`_fit_model`, bitwise independent of ``n_jobs``
    (LightGBM sums each row's trees in order; its threads split the rows)."""
    if model == "forest":
        return _predict(est, X, n_jobs)
    return np.asarray(est.predict(X), dtype=np.float64)


def _importances(model: str, est: Any) -> np.ndarray:
    """Feature weights of the area of applicability: the forest's impurity importances, or
    LightGBM's total-gain importances normalised to sum 1 (a hybrid's residual trees)."""
    if model == "forest":
        return np.asarray(est.feature_importances_, dtype=np.float64)
    from smengine.model._hybrid import gain_importances

    return gain_importances(est.booster_)


def _boost_grid(model: str, param_grid: Mapping[str, Sequence[Any]] | None) -> list[dict[str, Any]]:
    """The candidates of a boosted model's search (default :data:`DEFAULT_BOOST_GRID`)."""
    from smengine.model._hybrid import lgbm_regressor

    grid = dict(DEFAULT_BOOST_GRID if param_grid is None else param_grid)
    valid = set(lgbm_regressor().get_params()) - set(_BOOST_FIXED)
    if model == "hybrid":
        valid |= set(_HYBRID_KEYS)
    bad = sorted(set(grid) - valid)
    if bad:
        raise ConfigError(f"param_grid: {bad} cannot be searched for model={model!r}; choose from {sorted(valid)}")
    for k, v in grid.items():
        if isinstance(v, (str, bytes)) or not isinstance(v, Sequence) or len(v) == 0:
            raise ConfigError(f"param_grid[{k!r}] should be a non-empty list of values, got {v!r}")
    if not grid:
        raise ConfigError("param_grid is empty")
    return [json_safe(p) for p in ParameterGrid({k: list(v) for k, v in grid.items()})]


def _model_params(model: str, model_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check ``train``'s ``model_params``: LightGBM (and, for a hybrid, HybridRegressor) parameters."""
    if not model_params:
        return {}
    if model == "forest":
        raise ConfigError("model_params is for model='boosting' or 'hybrid' (the forest takes max_features, ...)")
    from smengine.model._hybrid import lgbm_regressor

    valid = set(lgbm_regressor().get_params()) - set(_BOOST_FIXED) | (
        set(_HYBRID_KEYS) if model in ("hybrid", "auto") else set()
    )
    bad = sorted(set(model_params) - valid)
    if bad:
        raise ConfigError(f"model_params: {bad} are not parameters of model={model!r}; choose from {sorted(valid)}")
    return dict(model_params)


def _hyperparameters(model: str, est: Any, features: Sequence[str]) -> dict[str, Any]:
    """The card's ``hyperparameters`` of a fitted model (``n_jobs`` and ``verbose`` left out)."""
    drop = ("n_jobs", "verbose")
    if model != "hybrid":
        return {k: v for k, v in est.get_params().items() if k not in drop}
    from smengine.model._hybrid import DEFAULT_LGBM_PARAMS

    lgbm = {**DEFAULT_LGBM_PARAMS, **dict(est.lgbm_params or {})}
    base = [features[i] for i in est.base_index_]
    return {
        "base_features": base,
        "alpha": est.alpha,
        **({"alpha_choice": est.alpha_choice_} if hasattr(est, "alpha_choice_") else {}),
        "random_state": est.random_state,
        **{k: v for k, v in lgbm.items() if k not in drop},
        "linear_base": {"intercept": est.intercept_, "coef": {f: float(est.coef_[features.index(f)]) for f in base}},
    }


def _splits(scheme: str, groups: np.ndarray, n_splits: int | None) -> tuple[list[Split], str]:
    """Train/test index pairs: leave-one-group-out for years (and when ``n_splits`` is
    None), else ``GroupKFold(min(n_splits, n_groups))``."""
    n_groups = np.unique(groups).size
    if scheme == "year" or n_splits is None or n_splits >= n_groups:
        return list(LeaveOneGroupOut().split(groups, groups=groups)), "LeaveOneGroupOut"
    splitter = GroupKFold(n_splits=n_splits)
    return list(splitter.split(groups, groups=groups)), f"GroupKFold(n_splits={n_splits})"


def _cross_val_predict(
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    params: Mapping[str, Any],
    n_estimators: int,
    random_state: int,
    n_jobs: int | None,
    tick: Callable[[], Any],
    model: str = "forest",
    features: Sequence[str] | None = None,
    meta: Meta | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    pred = np.full(y.size, np.nan)
    fold = np.full(y.size, -1, dtype=np.int64)
    for k, (tr, te) in enumerate(splits):
        est = _fit_model(model, params, n_estimators, random_state, n_jobs, X[tr], y[tr], features, meta=_sub(meta, tr))
        pred[te] = _predict_model(model, est, X[te], n_jobs)
        fold[te] = k
        tick()
    return pred, fold


def _prefix_predict(
    rf: RandomForestRegressor, X: np.ndarray, ks: Sequence[int], n_jobs: int | None, min_rows: int = 4096
) -> dict[int, np.ndarray]:
    """The predictions of the forests made of the first ``k`` trees of ``rf``, for each ``k`` of ``ks``.

    scikit-learn seeds tree ``i`` of a forest with the ``i``-th draw of
    ``RandomState(random_state)`` whatever ``n_estimators`` is (its bootstrap sample is drawn
    from that seed), so the first ``k`` trees of a forest *are* the ``k``-tree forest of the
    same parameters and seed. The trees' outputs are summed in order and divided by ``k``,
    as ``RandomForestRegressor.predict`` does, so each result is bitwise equal to
    ``predict`` of that ``k``-tree forest (``n_jobs=1``); threads split the rows.
    """
    want = sorted(set(int(k) for k in ks))
    X = np.ascontiguousarray(X, dtype=np.float32)

    def part(Xc: np.ndarray) -> dict[int, np.ndarray]:
        acc = np.zeros(Xc.shape[0], dtype=np.float64)
        out: dict[int, np.ndarray] = {}
        for i, tree in enumerate(rf.estimators_[: want[-1]], start=1):
            acc += tree.predict(Xc, check_input=False)
            if i in want:
                out[i] = acc / i
        return out

    n = min(effective_n_jobs(n_jobs), max(1, X.shape[0] // min_rows))
    if n <= 1:
        return part(X)
    chunks = np.array_split(np.arange(X.shape[0]), n)
    with ThreadPoolExecutor(n) as ex:
        parts = list(ex.map(lambda idx: part(X[idx]), chunks))
    return {k: np.concatenate([p[k] for p in parts]) for k in want}


def _size_curve(
    X: np.ndarray,
    y: np.ndarray,
    splits: Sequence[Split],
    params: Mapping[str, Any],
    trees: Sequence[int],
    leaves: Sequence[Any],
    random_state: int,
    n_jobs: int | None,
    tick: Callable[[], Any],
    bar: Any = None,
) -> list[dict[str, Any]]:
    """Pooled out-of-fold skill of every (trees, leaf size): one fit of the largest forest
    per leaf size and fold, scored by its tree prefixes (see :func:`_prefix_predict`)."""
    n_max = max(trees)
    rows = []
    for leaf in leaves:
        if bar is not None:
            bar.set_postfix_str(f"forest size min_samples_leaf={leaf}")
        pred = {k: np.full(y.size, np.nan) for k in trees}
        nodes = {k: 0 for k in trees}
        for tr, te in splits:
            rf = _rf({**params, "min_samples_leaf": leaf}, n_max, random_state, n_jobs).fit(X[tr], y[tr])
            for k, p in _prefix_predict(rf, X[te], trees, n_jobs).items():
                pred[k][te] = p
            counts = np.cumsum([e.tree_.node_count for e in rf.estimators_])
            for k in trees:
                nodes[k] += int(counts[k - 1])
            tick()
        for k in trees:
            m = evaluate(pred[k], y)
            rows.append(
                {
                    "n_estimators": int(k),
                    "min_samples_leaf": leaf,
                    "RMSE": m["RMSE"],
                    "ubRMSE": m["ubRMSE"],
                    "R": m["R"],
                    "bias": m["bias"],
                    "n_nodes": nodes[k] / len(splits),
                }
            )
            log.info(
                "forest size %d trees, min_samples_leaf=%s: RMSE %.4f, R %.3f, %.0f nodes",
                k,
                leaf,
                m["RMSE"],
                m["R"],
                nodes[k] / len(splits),
            )
    rows.sort(key=lambda r: (r["n_estimators"], float(r["min_samples_leaf"])))
    return rows


def _smallest(rows: Sequence[Mapping[str, Any]], tolerance: float) -> tuple[int, int]:
    """(index of the chosen row, index of the best): the fewest trees, then the largest
    leaf, among the rows whose RMSE is within ``tolerance`` of the lowest."""
    rmse = np.array([np.nan if r["RMSE"] is None else r["RMSE"] for r in rows], dtype=np.float64)
    if not np.isfinite(rmse).any():
        raise ValidationError("forest size: no combination has a finite cross-validated RMSE")
    best = int(np.nanargmin(rmse))
    ok = [i for i in range(len(rows)) if np.isfinite(rmse[i]) and rmse[i] <= rmse[best] + tolerance]
    chosen = min(ok, key=lambda i: (rows[i]["n_estimators"], -float(rows[i]["min_samples_leaf"])))
    return chosen, best


def _check_sizes(trees: Sequence[int], leaves: Sequence[Any]) -> tuple[list[int], list[Any]]:
    if isinstance(trees, (str, bytes)) or not isinstance(trees, Sequence) or not len(trees):
        raise ConfigError(f"trees should be a non-empty list of tree counts, got {trees!r}")
    if isinstance(leaves, (str, bytes)) or not isinstance(leaves, Sequence) or not len(leaves):
        raise ConfigError(f"min_samples_leaf should be a non-empty list of leaf sizes, got {leaves!r}")
    t = sorted({_check_int("trees", k, 1) for k in trees})
    out: list[Any] = []
    for leaf in leaves:
        if isinstance(leaf, (int, np.integer)) and not isinstance(leaf, bool) and leaf >= 1:
            out.append(int(leaf))
        elif isinstance(leaf, (float, np.floating)) and 0.0 < float(leaf) < 1.0:
            out.append(float(leaf))
        else:
            raise ConfigError(f"a leaf size should be an integer >= 1 or a fraction in (0, 1), got {leaf!r}")
    return t, list(dict.fromkeys(out))


def _per_site(stations: np.ndarray, dates: np.ndarray, obs: np.ndarray, pred: np.ndarray) -> pd.DataFrame:
    rows = {}
    for sid in np.unique(stations):
        m = stations == sid
        rows[str(sid)] = evaluate(pred[m], obs[m], dates[m])
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "station"
    return df


def _median(site: pd.DataFrame) -> dict[str, Any]:
    if site.empty:
        return {}
    return {k: float(site[k].median()) if site[k].notna().any() else None for k in _MEDIAN_KEYS if k in site}


#: train warns (DataLossWarning) when more than this fraction of the table's rows is incomplete
DROP_WARN_FRACTION = 0.1

#: Plausible volumetric soil moisture targets, m³ m⁻³ (a row outside is left out and reported).
TARGET_RANGE = (0.0, 1.0)


def _drop_incomplete(
    table: pd.DataFrame,
    X: np.ndarray,
    y: np.ndarray,
    features: Sequence[str],
    target: str,
    target_range: tuple[float, float] | None = TARGET_RANGE,
    who: str = "train",
    stacklevel: int = 3,
) -> tuple[np.ndarray, dict[str, Any]]:
    bad_x = ~np.isfinite(X)
    bad_y = ~np.isfinite(y)
    bad_s = table["station"].isna().to_numpy()
    bad_d = pd.isna(table["date"]).to_numpy()
    if target_range is not None:
        lo, hi = target_range
        with np.errstate(invalid="ignore"):
            bad_r = ~bad_y & ((y < lo) | (y > hi))
    else:
        bad_r = np.zeros_like(bad_y)
    if bad_r.any():
        finite = int((~bad_y).sum())
        worst = float(y[bad_r][np.argmax(np.abs(y[bad_r] - 0.5 * (lo + hi)))])
        msg = (
            f"{who}: {int(bad_r.sum())} of {finite} {target} values lie outside the plausible range "
            f"[{lo:g}, {hi:g}] m3 m-3 (worst {worst:.4g})"
        )
        if bad_r.sum() > 0.5 * max(finite, 1):
            raise ValidationError(f"{msg}: is the target in m3 m-3 (not %, or g/g)? pass target_range= if intended")
        warnings.warn(msg + "; those rows are left out", DataLossWarning, stacklevel=stacklevel)
    keep = ~(bad_x.any(axis=1) | bad_y | bad_r | bad_s | bad_d)
    per_feature = {f: int(n) for f, n in zip(features, bad_x.sum(axis=0), strict=True) if n}
    dropped = {
        "total": int((~keep).sum()),
        "target": int(bad_y.sum()),
        "target_range": int(bad_r.sum()),
        "station": int(bad_s.sum()),
        "date": int(bad_d.sum()),
        "features": per_feature,
    }
    if dropped["total"]:
        log.info(
            "dropped %d of %d rows with NaN/inf: %s %d, station %d, date %d, features %s",
            dropped["total"],
            len(table),
            target,
            dropped["target"],
            dropped["station"],
            dropped["date"],
            per_feature,
        )
    if keep.any() and dropped["total"] > DROP_WARN_FRACTION * len(table):  # none left: train raises
        worst = ", ".join(
            f"{f} {n / len(table):.0%}" for f, n in sorted(per_feature.items(), key=lambda kv: -kv[1])[:5]
        )
        warnings.warn(
            f"{who}: {dropped['total']} of {len(table)} rows ({dropped['total'] / len(table):.0%}) have "
            f"NaN/inf and are left out (target {dropped['target']}; NaN share of the worst features: "
            f"{worst or 'none'}); a feature with gaps (e.g. a satellite layer on overpass days only) "
            "also leaves its pixel-days NaN in the product: use its carried SWI (FeatureSpec(swi_carry=True)) "
            "or leave it out",
            DataLossWarning,
            stacklevel=stacklevel,
        )
    return keep, dropped


def _prepare(
    table: pd.DataFrame,
    features: Sequence[str] | None,
    target: str,
    need_xy: bool,
    target_range: tuple[float, float] | None,
    who: str,
) -> tuple[list[str], np.ndarray, np.ndarray, pd.DataFrame, dict[str, Any]]:
    """Check the feature and target columns and keep the complete rows, sorted by station and date.

    Returns ``(features, X, y, data, dropped)``: the feature names, the float32 matrix and
    float64 target of the complete rows, their ``station`` (str), ``date`` (naive UTC),
    target (and ``x``, ``y`` with ``need_xy``) columns in the same order, and the counts of
    dropped rows (see :func:`_drop_incomplete`). Warnings point at the caller of ``who``.
    """
    if features is None:
        if "features" not in table.attrs:
            raise ConfigError(f"{who}: the table has no .attrs['features']; pass features=[...]")
        features = table.attrs["features"]
    features = [str(f) for f in features]
    if not features:
        raise ConfigError(f"{who}: no features")
    dup = sorted({f for f in features if features.count(f) > 1})
    if dup:
        raise ConfigError(f"{who}: duplicate feature(s) {dup}")
    if target in features:
        raise ConfigError(f"{who}: the target {target!r} is also a feature")
    need = ["station", "date", target, *features] + (["x", "y"] if need_xy else [])
    missing = [c for c in need if c not in table.columns]
    if missing:
        hint = (
            " (x, y are needed for cv='block' and 'knndm'; drop them from cv or add them)"
            if {"x", "y"} & set(missing)
            else ""
        )
        raise ConfigError(f"{who}: column(s) {missing} missing from the table{hint}")
    if not pd.api.types.is_numeric_dtype(table[target]):
        raise ValidationError(f"{who}: target column {target!r} is not numeric ({table[target].dtype})")

    X_all = _float32(table, features)
    y_all = table[target].to_numpy(dtype=np.float64)
    keep, dropped = _drop_incomplete(table, X_all, y_all, features, target, target_range, who=who, stacklevel=4)
    if not keep.any():
        raise ValidationError(
            f"{who}: no complete rows left: all {len(table)} rows have NaN/inf in the target or a "
            f"feature (target {dropped['target']}, features {dropped['features']})"
        )
    data = table.loc[keep, ["station", "date", target] + (["x", "y"] if need_xy else [])].copy()
    data["station"] = data["station"].astype(str)
    data["date"] = pd.to_datetime(data["date"])
    if data["date"].dt.tz is not None:
        data["date"] = data["date"].dt.tz_convert(None)
    data["_row"] = np.flatnonzero(keep)
    data = data.sort_values(["station", "date", "_row"], kind="mergesort").reset_index(drop=True)
    rows = data["_row"].to_numpy()
    return features, X_all[rows], y_all[rows], data, dropped


def _knndm(
    data: pd.DataFrame, domain: npt.ArrayLike | None, n_splits: int | None, random_state: int
) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """kNNDM folds of the stations (geographical, grid CRS): the fold of every row, the result
    and the card's entry (W against random and grouped-by-station folds of the same k)."""
    from smengine._knndm import knndm_folds

    stations = data["station"].to_numpy(dtype=object)
    n_st = np.unique(stations).size
    k = min(int(n_splits) if n_splits is not None else n_st, n_st)
    xy = data[["x", "y"]].to_numpy(np.float64)
    pred = None if domain is None else np.asarray(domain, dtype=np.float64)
    res = knndm_folds(xy, pred, k=k, maxp=max(0.5, 1.5 / k), groups=stations, seed=random_state)
    site_folds = np.empty(len(data), dtype=np.int64)
    for f, (_, te) in enumerate(_splits("site", stations, n_splits)[0]):
        site_folds[te] = f
    rand = np.random.default_rng(random_state).permutation(len(data)) % k  # random k-fold of station-days
    entry = {
        "k": int(k),
        "method": res.method,
        "n_clusters": res.n_clusters,
        "W": float(res.W),
        "W_grouped_by_station": float(res.W_of(site_folds)),
        "W_random_rows": float(res.W_of(rand)),
        "domain": (
            f"{res.pred_points.shape[0]} given prediction points"
            if pred is not None
            else f"{res.pred_points.shape[0]} points on the stations' convex hull"
        ),
        "ks_pvalue": float(res.ks_pvalue),
    }
    return res.folds.astype(str).astype(object), res, entry


def _groups(scheme: str, data: pd.DataFrame, block_size: float) -> np.ndarray:
    """The group of every row under a CV scheme: station, calendar year or block ``"<i>_<j>"``."""
    if scheme == "site":
        return data["station"].to_numpy(dtype=object)
    if scheme == "year":
        return pd.DatetimeIndex(data["date"]).year.to_numpy().astype(str).astype(object)
    return _block_groups(data["x"].to_numpy(np.float64), data["y"].to_numpy(np.float64), float(block_size))


def _block_groups(x: np.ndarray, y: np.ndarray, block_size: float) -> np.ndarray:
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValidationError("block CV needs finite x, y coordinates; some rows have NaN/inf x or y")
    i = np.floor(x / block_size).astype(np.int64)
    j = np.floor(y / block_size).astype(np.int64)
    return np.array([f"{a}_{b}" for a, b in zip(i.tolist(), j.tolist(), strict=True)], dtype=object)


def _choose_size(
    X: np.ndarray,
    y: np.ndarray,
    site_splits: tuple[list[Split], str],
    params: dict[str, Any],
    search_rows: list[dict[str, Any]],
    trees: Sequence[int],
    leaves: Sequence[Any],
    tolerance: float,
    random_state: int,
    n_jobs: int | None,
    bar: Any,
) -> tuple[int, dict[str, Any], list[dict[str, Any]]]:
    """``train``'s forest-size step: (trees, parameters, card search rows) of the smallest
    forest within ``tolerance`` of the best leave-site-out RMSE."""
    sp, splitter = site_splits
    others = {k: v for k, v in params.items() if k != "min_samples_leaf"}
    curve = _size_curve(X, y, sp, others, trees, leaves, random_state, n_jobs, bar.update, bar)
    i_chosen, i_best = _smallest(curve, tolerance)
    best_rmse = curve[i_best]["RMSE"]
    # the search's rows: the pick is "best" of its stage; "chosen" is the final forest only
    keys = list(search_rows[0]["params"]) if search_rows else []
    rows: list[dict[str, Any]] = []
    for r in search_rows:
        rows.append(
            {
                **r,
                "params": {
                    "n_estimators": r["n_estimators"],
                    **r["params"],
                    "min_samples_leaf": r["params"].get("min_samples_leaf", params["min_samples_leaf"]),
                },
                "stage": "search",
                "best": r["chosen"],
                "chosen": False,
            }
        )
    for i, c in enumerate(curve):
        p = {"n_estimators": c["n_estimators"], **{k: params[k] for k in keys if k != "min_samples_leaf"}}
        p["min_samples_leaf"] = c["min_samples_leaf"]
        rows.append(
            {
                "params": p,
                "n_estimators": c["n_estimators"],
                "cv": "site",
                "splitter": splitter,
                "RMSE": c["RMSE"],
                "ubRMSE": c["ubRMSE"],
                "R": c["R"],
                "bias": c["bias"],
                "n_nodes": c["n_nodes"],
                "stage": "forest_size",
                "best": i == i_best,
                "within_tolerance": c["RMSE"] is not None
                and math.isfinite(c["RMSE"])
                and c["RMSE"] <= best_rmse + tolerance,
                "size_tolerance": tolerance,
                "chosen": i == i_chosen,
            }
        )
    pick = curve[i_chosen]
    log.info(
        "forest size: chose %d trees, min_samples_leaf=%s (RMSE %.4f; best %.4f with %d trees, "
        "min_samples_leaf=%s; tolerance %g m3 m-3)",
        pick["n_estimators"],
        pick["min_samples_leaf"],
        pick["RMSE"],
        best_rmse,
        curve[i_best]["n_estimators"],
        curve[i_best]["min_samples_leaf"],
        tolerance,
    )
    return int(pick["n_estimators"]), {**params, "min_samples_leaf": pick["min_samples_leaf"]}, rows


class _Sizes(NamedTuple):
    """``train(n_estimators="smallest")``'s size grid and tolerance."""

    trees: Sequence[int]
    leaves: Sequence[Any]
    tolerance: float


def _select(
    X: np.ndarray,
    y: np.ndarray,
    site_splits: tuple[list[Split], str] | None,
    candidates: Sequence[Mapping[str, Any]],
    base: Mapping[str, Any],
    smallest: bool,
    n_estimators: int,
    sizes: _Sizes | None,
    search_estimators: int,
    random_state: int,
    n_jobs: int | None,
    bar: Any,
    quiet: bool = False,
    model: str = "forest",
    features: Sequence[str] | None = None,
    meta: Meta | None = None,
) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    """``train``'s model selection on rows ``X, y``: the hyper-parameter search, then the
    forest size. Returns (parameters, trees, the card's search rows). A boosted model's search
    fits ``n_estimators`` rounds (``search_estimators`` is the forest's)."""
    search_rows: list[dict[str, Any]] = []
    params = dict(base)
    say = log.debug if quiet else log.info
    if candidates:
        assert site_splits is not None
        best, i_best = math.inf, 0
        for i, cand in enumerate(candidates):
            bar.set_postfix_str(f"search {cand}")
            n_search = search_estimators if model == "forest" else n_estimators
            p, _ = _cross_val_predict(
                X,
                y,
                site_splits[0],
                {**base, **cand},
                n_search,
                random_state,
                n_jobs,
                bar.update,
                model,
                features,
                meta,
            )
            m = evaluate(p, y)
            search_rows.append(
                {
                    "params": dict(cand),
                    "n_estimators": n_search,
                    "cv": "site",
                    "splitter": site_splits[1],
                    "RMSE": m["RMSE"],
                    "ubRMSE": m["ubRMSE"],
                    "R": m["R"],
                    "chosen": False,
                }
            )
            say("search %s: leave-site-out RMSE %.4f, R %.3f", cand, m["RMSE"], m["R"])
            if m["RMSE"] < best:
                best, i_best = m["RMSE"], i
        params = {**base, **candidates[i_best]}
        search_rows[i_best]["chosen"] = True
        say("search chose %s (RMSE %.4f)", {k: params[k] for k in candidates[0]}, best)
    if smallest:
        assert site_splits is not None and sizes is not None
        n_estimators, params, search_rows = _choose_size(
            X,
            y,
            site_splits,
            params,
            search_rows,
            sizes.trees,
            sizes.leaves,
            sizes.tolerance,
            random_state,
            n_jobs,
            bar,
        )
    return params, n_estimators, search_rows


def _nested_cross_val_predict(
    X: np.ndarray,
    y: np.ndarray,
    stations: np.ndarray,
    splits: Sequence[Split],
    select: Callable[..., tuple[Any, ...]],
    fallback: tuple[Any, ...],
    n_splits: int | None,
    random_state: int,
    n_jobs: int | None,
    tick: Callable[[], Any],
    model: str = "forest",
    features: Sequence[str] | None = None,
    dates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Out-of-fold predictions with the model selection re-run inside every fold.

    The search (and forest-size step) of each fold sees only that fold's training rows,
    split by station (``GroupKFold`` as in the outer CV); its choice is fitted on them and
    predicts the held-out rows. A fold whose training rows hold a single station cannot be
    searched by station and uses ``fallback`` (recorded as such).

    ``select(X, y, inner, rows)`` returns ``(params, n_trees)`` or, when it chooses the model
    too (``train(model="auto")``), ``(params, n_trees, model)``; ``rows`` are the fold's training
    row indices."""
    pred = np.full(y.size, np.nan)
    fold = np.full(y.size, -1, dtype=np.int64)
    choices: list[dict[str, Any]] = []
    for k, (tr, te) in enumerate(splits):
        inner_groups = stations[tr]
        if np.unique(inner_groups).size >= 2:
            inner = _splits("site", inner_groups, n_splits)
            got = select(X[tr], y[tr], inner, tr)
            how = f"searched by {inner[1]} over {np.unique(inner_groups).size} stations"
        else:
            got = fallback
            how = "not searched: one station in the fold's training rows (defaults used)"
        params, n_trees = got[0], got[1]
        m = got[2] if len(got) > 2 else model
        meta = None if dates is None else (stations[tr], dates[tr])
        est = _fit_model(m, params, n_trees, random_state, n_jobs, X[tr], y[tr], features, meta=meta)
        pred[te] = _predict_model(m, est, X[te], n_jobs)
        fold[te] = k
        choice = {"fold": k, "params": json_safe(params), "n_estimators": int(n_trees), "selection": how}
        if len(got) > 2:
            choice["model"] = m
        choices.append(choice)
        tick()
    return pred, fold, choices


def _auto_select(
    X: np.ndarray,
    y: np.ndarray,
    stations: np.ndarray,
    dates: np.ndarray,
    xy: np.ndarray | None,
    features: Sequence[str],
    select_cv: str,
    time_blocks: int,
    n_splits: int | None,
    setup: Callable[[str], tuple[list[dict[str, Any]], dict[str, Any], int]],
    random_state: int,
    n_jobs: int | None,
    knndm_domain: npt.ArrayLike | None,
    progress: bool | None,
    intervals: bool = True,
) -> Any:
    """``train(model="auto")``'s choice among :data:`MODELS` on rows ``X, y`` (all of them, or an
    outer fold's training rows): :func:`smengine.model.select_model`'s comparison, every model
    at its fixed parameters (no search). kNNDM needs 3 stations: with fewer (a small fold) the
    site-time scheme is used."""
    from smengine.model._choice import _compare_models

    cv = select_cv
    if cv == "knndm" and np.unique(stations).size < 3:
        cv = "site-time"
    trees = {m: setup(m)[2] for m in MODELS}
    params = {m: setup(m)[1] for m in MODELS}
    n_st = np.unique(stations).size
    n_folds = (n_st if n_splits is None else min(n_splits, n_st)) * (time_blocks if cv == "site-time" else 1)
    bar = _progress(progress, n_folds * len(MODELS))
    bar.set_postfix_str(f"model selection ({cv})")
    try:
        return _compare_models(
            X,
            y,
            stations,
            dates,
            xy,
            features,
            models=MODELS,
            cv=cv,
            time_blocks=time_blocks,
            n_splits=n_splits,
            trees=trees,
            params=params,
            random_state=random_state,
            n_jobs=n_jobs,
            knndm_domain=knndm_domain,
            intervals=intervals,
            tick=bar.update,
        )
    finally:
        bar.close()


# ======================================================================================
# train
# ======================================================================================
def train(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    target: str = "target",
    *,
    cv: str | Sequence[str] | None = DEFAULT_CV,
    model: str = "forest",
    search: bool = True,
    param_grid: Mapping[str, Sequence[Any]] | None = None,
    n_estimators: int | Literal["smallest"] | None = _N_ESTIMATORS,
    max_features: float | str | None = 1 / 3,
    min_samples_leaf: float = 5,
    search_estimators: int = 100,
    n_splits: int | None = 5,
    block_size: float = 100_000.0,
    random_state: int = 0,
    n_jobs: int | None = -1,
    progress: bool | None = None,
    target_range: tuple[float, float] | None = TARGET_RANGE,
    size_tolerance: float = SIZE_TOLERANCE,
    size_trees: Sequence[int] = SIZE_TREES,
    size_leaves: Sequence[float] = SIZE_LEAVES,
    nested: bool = True,
    knndm_domain: npt.ArrayLike | None = None,
    model_params: Mapping[str, Any] | None = None,
    select_cv: str = "site-time",
    time_blocks: int = 4,
    applicability: bool = True,
) -> Forest:
    r"""Fit the Random Forest (or another model of :data:`MODELS`) on the complete rows of a
    training table, with grouped CV.

    1. Rows with NaN/inf in a feature or the target (or a missing station or date) are
       dropped and counted per reason: the native predictor never sees incomplete rows,
       so the forest is trained on complete rows only (a :class:`~smengine.errors.DataLossWarning`
       names the worst features when more than :data:`DROP_WARN_FRACTION` of the rows go).
       Targets outside ``target_range`` (default :data:`TARGET_RANGE`, m³ m⁻³) are left out
       too, always with a warning, and are an error when they are most of the table (a target
       in percent or g/g).
       Rows are then sorted by station and date, so the result does not depend on the
       table's row order.
    2. With ``search``, every candidate of ``param_grid`` (default SCIENCE §4.3:
       ``max_features`` ∈ {0.2, 0.33, 0.5} × ``min_samples_leaf`` ∈ {1, 5, 20}) is scored by
       leave-site-out CV with ``search_estimators`` trees; the lowest pooled RMSE wins
       (the first in grid order on ties).
    3. With ``n_estimators="smallest"``, the forest's size is chosen too: every
       combination of ``size_trees`` trees and ``size_leaves`` leaf sizes (with the other
       parameters as chosen so far) is scored by leave-site-out CV (see
       :func:`forest_size_curve`), and the smallest forest whose pooled RMSE is within
       ``size_tolerance`` m³ m⁻³ of the lowest wins: the fewest trees, then the largest
       ``min_samples_leaf`` (fewer nodes). It replaces ``min_samples_leaf`` (also the
       search's choice) and sets ``n_estimators``.
    4. Each scheme of ``cv`` is run and its out-of-fold predictions, pooled metrics and
       per-station metrics are kept. When steps 2–3 chose anything and ``nested`` (the
       default), the CV is **nested**: every fold re-runs steps 2–3 on its own training rows
       (split by station with ``GroupKFold``) and predicts its held-out rows with that
       fold's choice, so the reported skill never includes the search's own score (Varma &
       Simon 2006; Cawley & Talbot 2010). The card's ``cv[scheme]["fold_selection"]`` lists
       each fold's choice; the search rows of step 2 (on every station) choose the final
       forest only and are the selection score, optimistic by construction. Without
       ``nested``, every fold uses the choice made on all stations.
    5. The final forest is fitted on every complete row with out-of-bag scoring.

    Every fit (search, CV folds, final) is a ``RandomForestRegressor(bootstrap=True,
    random_state=random_state)``, so a fold can be re-fitted exactly from
    :attr:`Forest.cv_predictions`.

    **Other models** (``model``). ``"boosting"`` fits LightGBM gradient-boosted trees
    (``LGBMRegressor`` with :data:`smengine.model.DEFAULT_LGBM_PARAMS`, updated by
    ``model_params``) and ``"hybrid"`` a :class:`~smengine.model.HybridRegressor` (a ridge base on
    ``model_params["base_features"]``, default every feature, plus LightGBM trees on its
    residuals), through the same steps: the CV schemes, out-of-fold predictions and card metrics
    are the same; the search (step 2) scores :data:`DEFAULT_BOOST_GRID` (or ``param_grid``:
    LightGBM parameters, and ``base_features``/``alpha`` for a hybrid) with ``n_estimators``
    rounds, nested like the forest's; ``n_estimators="smallest"`` (a forest's size) is refused,
    and there is no out-of-bag score (no bootstrap: ``oob_score`` is None). The area of
    applicability weights the features by LightGBM's normalised total-gain importances (of a
    hybrid's residual trees). :meth:`Forest.compile` gives the exact compiled model
    (:meth:`~smengine.model.CompiledForest.from_lightgbm` / ``from_hybrid``).

    ``model="auto"`` first runs :func:`~smengine.model.select_model` on the table (every model
    at its defaults and ``n_estimators``, scheme ``select_cv``; the lowest median per-station
    ubRMSE wins), records it in the card (``model_selection``; :attr:`Forest.selection`), then
    trains the chosen model as above. With ``nested`` (the default) every outer CV fold re-runs
    that selection (and the chosen model's search) on its own training rows and records its
    choice (``fold_selection[k]["model"]``), so the reported CV includes the cost of choosing.

    Parameters
    ----------
    table : pandas.DataFrame
        As from :func:`smengine.features.training_table`: columns ``station``, ``date``,
        the target and the features; ``x``, ``y`` (grid CRS, m) for block CV.
        ``.attrs["units"]``, ``["kinds"]`` and ``["sources"]`` describe the features in
        the card where present.
    features : sequence of str, optional
        Feature columns in model order (default ``table.attrs["features"]``).
    target : str, optional
        Target column, volumetric soil moisture in m³ m⁻³ (default ``"target"``).
    model : {"forest", "boosting", "hybrid", "auto"}, optional
        The model (default ``"forest"``, the behaviour of earlier versions); see above.
    cv : str or sequence of {"site", "year", "block", "knndm"}, optional
        Grouped CV schemes to run (default :data:`DEFAULT_CV`: the first three; ``None`` or
        ``()`` for none). ``"year"`` is skipped with a logged warning when the data span a
        single calendar year, ``"block"`` when all stations fall in one block, ``"knndm"``
        with fewer than 3 stations. ``"knndm"`` groups the stations into ``n_splits`` folds by
        kNNDM (Linnenbrink et al. 2024) against ``knndm_domain``; the card's
        ``cv["knndm"]`` gives its Wasserstein statistic ``W`` beside the W of grouped-by-
        station folds and of a random k-fold of station-days (lower: closer to the
        prediction situation), and :attr:`Forest.knndm` the folds and distances.
    search : bool, optional
        Tune the hyper-parameters by leave-site-out CV (default True). Without it the
        forest uses ``max_features`` and ``min_samples_leaf`` (a boosted model
        :data:`~smengine.model.DEFAULT_LGBM_PARAMS` and ``model_params``).
    param_grid : mapping of str → sequence, optional
        ``RandomForestRegressor`` parameters and values to search (default
        :data:`DEFAULT_PARAM_GRID`); for ``"boosting"``/``"hybrid"`` LightGBM's (default
        :data:`DEFAULT_BOOST_GRID`). Parameters not in the grid keep the values below. Not with
        ``model="auto"`` (each model searches its default grid).
    n_estimators : int or "smallest", optional
        Trees of the CV and final forests (default 500 for the forest, 200 boosting rounds for
        ``"boosting"``/``"hybrid"``: :data:`DEFAULT_TREES`, also what None gives); with
        ``model="auto"`` a number given applies to every candidate. ``"smallest"`` (forest
        only) chooses the trees
        and ``min_samples_leaf`` by leave-site-out CV (step 3; needs at least 2 stations).
        The card's ``search`` then lists every size scored (``"stage": "forest_size"``,
        ``params`` with ``n_estimators`` and ``min_samples_leaf``, pooled ``RMSE``,
        ``ubRMSE``, ``R``, ``bias``, mean ``n_nodes`` of the fold forests, ``best`` for the
        lowest RMSE, ``within_tolerance``, ``size_tolerance``) after the search's candidates
        (``"stage": "search"``, the search's pick marked ``best``); ``chosen`` marks the final
        forest's parameters only, so ``card.chosen`` is the forest-size pick.
    max_features : float, int, str or None, optional
        Features tried per split (default 1/3 of them: Breiman's regression default;
        scikit-learn's own default, 1.0, is plain bagging). Forest only.
    min_samples_leaf : int or float, optional
        Minimum station-days per leaf (default 5). Forest only.
    search_estimators : int, optional
        Trees per search fit (default 100).
    n_splits : int or None, optional
        Folds for site and block CV: ``GroupKFold(min(n_splits, n_groups))`` (default 5);
        ``None`` leaves one group out per fold. Years are always left out one at a time.
    block_size : float, optional
        Side of the square spatial blocks in grid CRS units, m (default 100 km).
    random_state : int, optional
        Seed of every fit (default 0).
    n_jobs : int or None, optional
        Threads per fit, as in scikit-learn (default -1: all cores).
    progress : bool or None, optional
        tqdm progress over the fits: None shows it on a terminal only, True always,
        False never.
    target_range : (float, float) or None, optional
        Plausible target values, m³ m⁻³ (default :data:`TARGET_RANGE`); None checks none.
    size_tolerance : float, optional
        With ``n_estimators="smallest"``: how much worse than the best pooled leave-site-out
        RMSE the chosen forest may be, in m³ m⁻³ (absolute, not relative; default
        :data:`SIZE_TOLERANCE` = 0.002). 0 picks the smallest of the best.
    size_trees : sequence of int, optional
        With ``n_estimators="smallest"``: tree counts to score (default :data:`SIZE_TREES`).
    size_leaves : sequence of int or float, optional
        With ``n_estimators="smallest"``: ``min_samples_leaf`` values to score (default
        :data:`SIZE_LEAVES`).
    nested : bool, optional
        Re-run the search and the forest-size step inside every CV fold (default True; step
        4). It multiplies the selection's cost by about the number of folds. Has no effect
        without ``search`` or ``n_estimators="smallest"``.
    applicability : bool, optional
        Build the area-of-applicability reference (default True: what products need for their
        dissimilarity index; about 0.8 s on 3,000 station-days). False leaves
        :attr:`Forest.applicability` None — for models that only score a CV fold (the
        station experiments), which never map.
    knndm_domain : array_like, shape (m, 2), optional
        With ``cv="knndm"``: prediction locations ``x, y`` in the table's CRS, m (e.g. the
        product's pixel centres, :func:`smengine.evaluate.domain_points`). Default: a regular
        sample of the stations' convex hull.
    model_params : mapping, optional
        For ``"boosting"``: LGBMRegressor parameters over
        :data:`~smengine.model.DEFAULT_LGBM_PARAMS`; for ``"hybrid"`` also ``base_features``
        (names or indices) and ``alpha``; with ``"auto"`` they go to the boosted candidates
        (the hybrid keys to the hybrid only). Not for the forest. A hybrid's ``alpha`` (the
        base's ridge penalty) left out is chosen on each fit's own training rows by
        :func:`~smengine.model.choose_ridge_alpha` (station groups × periods, so that the
        base's coefficients carry to new places on new days; in the card's
        ``hyperparameters["alpha_choice"]``); a number fixes it.
    select_cv : {"site-time", "site", "knndm"}, optional
        With ``model="auto"``: the selection's CV (default ``"site-time"``; see
        :func:`~smengine.model.select_model`, with ``n_splits`` station groups).
    time_blocks : int, optional
        With ``model="auto"`` and ``select_cv="site-time"``: periods (default 4).

    Returns
    -------
    Forest

    Raises
    ------
    ConfigError
        Unknown CV scheme or model; missing feature, target, station/date or (for ``"block"``
        and ``"knndm"``) ``x``/``y`` columns; fewer than 2 stations for site CV, the search,
        ``model="auto"`` or ``n_estimators="smallest"``; a bad ``param_grid``, integer argument,
        size list or tolerance; RF-only settings (``n_estimators="smallest"``, ``max_features``,
        ``min_samples_leaf``) with a boosted model; lightgbm missing for a boosted model.
    ValidationError
        No complete rows left; non-numeric feature columns; non-finite coordinates.

    Notes
    -----
    Out-of-fold predictions are made with the trees summed in their fixed order (threads
    split the rows), so they, the card's metrics and the search's choice are bitwise
    reproducible for any ``n_jobs``; scikit-learn's own threaded ``predict`` is not.

    The forest-size step fits only the largest forest per fold and leaf size: the first
    ``k`` trees of a scikit-learn forest are exactly the ``k``-tree forest with the same
    seed (see :func:`forest_size_curve`), so every tree count costs one fit.

    The out-of-bag score is optimistic for station time series (days in the bag have
    neighbours out of it); the grouped CV metrics are the ones to report.

    References
    ----------
    .. [1] Breiman, L. (2001). Random forests. Machine Learning 45, 5–32.
    .. [2] Han, Q. et al. (2023). Geosci. Model Dev. 16, 5825–5845.
    .. [3] Roberts, D. R. et al. (2017). Ecography 40, 913–929.
    .. [4] Varma, S. & Simon, R. (2006). Bias in error estimation when using
       cross-validation for model selection. BMC Bioinformatics 7, 91.
    .. [5] Cawley, G. C. & Talbot, N. L. C. (2010). On over-fitting in model selection and
       subsequent selection bias in performance evaluation. JMLR 11, 2079–2107.
    .. [6] Linnenbrink, J., Milà, C., Ludwig, M. & Meyer, H. (2024). kNNDM: k-fold nearest
       neighbour distance matching cross-validation for map accuracy estimation. Geosci.
       Model Dev. 17, 5897–5912.

    Examples
    --------
    >>> forest = train(training_table(stations, stores))      # doctest: +SKIP
    >>> print(forest.card.to_markdown())                       # doctest: +SKIP
    >>> compiled = forest.compile()                            # doctest: +SKIP
    >>> small = train(table, n_estimators="smallest", size_tolerance=0.002)  # doctest: +SKIP
    >>> small.card.chosen["params"]                            # doctest: +SKIP
    {'n_estimators': 50, 'min_samples_leaf': 20}
    """
    # ---------------------------------------------------------------- validate
    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"train: table should be a pandas DataFrame, got {type(table).__name__}")
    if not isinstance(model, str) or model not in (*MODELS, "auto"):
        raise ConfigError(f"train: model should be one of {[*MODELS, 'auto']}, got {model!r}")
    schemes = _schemes(cv)
    smallest = isinstance(n_estimators, str) and n_estimators == "smallest"
    if smallest and model != "forest":
        raise ConfigError(
            f"n_estimators='smallest' chooses a random forest's size; it is for model='forest', not {model!r} "
            "(give a boosted model its number of rounds)"
        )
    if model in ("boosting", "hybrid") and (max_features != 1 / 3 or min_samples_leaf != 5):
        raise ConfigError(
            f"max_features and min_samples_leaf are the forest's parameters; for model={model!r} give LightGBM's "
            "in model_params (e.g. colsample_bytree, min_child_samples)"
        )
    if smallest:
        if not (
            isinstance(size_tolerance, (int, float, np.integer, np.floating))
            and not isinstance(size_tolerance, bool)
            and math.isfinite(size_tolerance)
            and size_tolerance >= 0
        ):
            raise ConfigError(f"size_tolerance should be a number >= 0 (m3 m-3), got {size_tolerance!r}")
        size_tolerance = float(size_tolerance)
        size_trees, size_leaves = _check_sizes(size_trees, size_leaves)
        n_estimators = max(size_trees)  # replaced by the choice
    elif isinstance(n_estimators, str):
        raise ConfigError(f"n_estimators should be an integer >= 1 or 'smallest', got {n_estimators!r}")
    trees_given = not (n_estimators is None or isinstance(n_estimators, _NotGiven))
    if not trees_given:  # auto: replaced by the chosen model's
        n_estimators = DEFAULT_TREES["forest" if model == "auto" else model]
    n_estimators = _check_int("n_estimators", n_estimators, 1)
    search_estimators = _check_int("search_estimators", search_estimators, 1)
    random_state = _check_int("random_state", random_state, 0)
    if n_splits is not None:
        n_splits = _check_int("n_splits", n_splits, 2)
    if "block" in schemes and not (
        isinstance(block_size, (int, float)) and math.isfinite(block_size) and block_size > 0
    ):
        raise ConfigError(f"block_size should be a positive number of metres, got {block_size!r}")
    model_params = _model_params(model, model_params)
    auto = model == "auto"
    if auto:
        from smengine.model._choice import _check_cv

        _check_cv(select_cv, time_blocks)
        if param_grid is not None:
            raise ConfigError("param_grid goes with one model; with model='auto' each model searches its default grid")
        candidates: list[dict[str, Any]] = []  # the chosen model's, below
    elif model == "forest":
        candidates = _param_grid(param_grid) if search else []
    else:
        candidates = _boost_grid(model, param_grid) if search else []

    def setup(m: str) -> tuple[list[dict[str, Any]], dict[str, Any], int]:
        """A model's search candidates, fixed parameters and trees (model='auto')."""
        if m == "forest":
            cands = _param_grid(None) if search else []
            return (
                cands,
                {"max_features": max_features, "min_samples_leaf": min_samples_leaf},
                (n_estimators if trees_given else DEFAULT_TREES[m]),
            )
        fixed = {k: v for k, v in model_params.items() if m == "hybrid" or k not in _HYBRID_KEYS}
        return (_boost_grid(m, None) if search else []), fixed, (n_estimators if trees_given else DEFAULT_TREES[m])

    # ---------------------------------------------------------------- complete rows
    need_xy = bool({"block", "knndm"} & set(schemes)) or (auto and select_cv == "knndm")
    features, X, y, data, dropped = _prepare(table, features, target, need_xy, target_range, "train")
    stations = data["station"].to_numpy(dtype=object)
    dates = data["date"].to_numpy()
    meta: Meta = (stations, dates)
    site_ids = sorted(set(stations.tolist()))
    if (search or smallest or auto or "site" in schemes) and len(site_ids) < 2:
        also = (
            (" and the search" if search else "")
            + (" and n_estimators='smallest'" if smallest else "")
            + (" and model='auto'" if auto else "")
        )
        raise ConfigError(
            f"train: leave-site-out CV{also} need at least 2 stations, "
            f"got {len(site_ids)} {site_ids} after dropping incomplete rows"
        )
    log.info("training on %d rows, %d features, %d stations", y.size, len(features), len(site_ids))

    # ---------------------------------------------------------------- groups and splits
    groups: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    knndm_result, knndm_entry = None, {}
    for s in schemes:
        if s == "knndm":
            if len(site_ids) < 3:
                skipped[s] = f"kNNDM needs at least 3 stations, got {len(site_ids)}"
                log.warning("knndm CV skipped: %s", skipped[s])
                continue
            groups[s], knndm_result, knndm_entry = _knndm(data, knndm_domain, n_splits, random_state)
            continue
        groups[s] = _groups(s, data, block_size)
        if np.unique(groups[s]).size < 2:
            what = {"site": "station", "year": "calendar year", "block": f"{block_size:g} m block"}[s]
            skipped[s] = f"only one {what} ({groups[s][0]})"
            log.warning("%s CV skipped: the training data hold only one %s (%s)", s, what, groups[s][0])
            del groups[s]
    splits = {
        s: (
            (
                list(LeaveOneGroupOut().split(g, groups=g)),
                f"kNNDM folds (k={knndm_entry['k']}, {knndm_entry['method']})",
            )
            if s == "knndm"
            else _splits(s, g, n_splits)
        )
        for s, g in groups.items()
    }
    site_splits = (
        splits["site"] if "site" in splits else (_splits("site", stations, n_splits) if search or smallest else None)
    )
    sizes = _Sizes(size_trees, size_leaves, size_tolerance) if smallest else None

    # ---------------------------------------------------------------- model="auto": choose the model
    model_c, selection = model, None
    xy_all = data[["x", "y"]].to_numpy(np.float64) if need_xy else None
    if auto:
        selection = _auto_select(
            X,
            y,
            stations,
            dates,
            xy_all,
            features,
            select_cv,
            time_blocks,
            n_splits,
            setup,
            random_state,
            n_jobs,
            knndm_domain,
            progress,
        )
        model_c = selection.chosen
        candidates = setup(model_c)[0]
        log.info("model selection (%s): chose %s", selection.splitter, model_c)
    nest = bool(nested) and bool(candidates or smallest or auto)

    def selection_fits(n_folds: int) -> int:
        return (len(candidates) + (len(size_leaves) if smallest else 0)) * n_folds

    n_fits = selection_fits(len(site_splits[0]) if site_splits else 0) + sum(len(v[0]) for v in splits.values()) + 1
    if nest:  # every outer fold's own selection (an upper bound: inner folds <= n_splits)
        n_fits += sum(selection_fits(n_splits or len(site_ids)) for v in splits.values() for _ in v[0])

    base: dict[str, Any] = (
        {"max_features": max_features, "min_samples_leaf": min_samples_leaf} if model_c == "forest" else {}
    )
    if auto or model_c != "forest":
        _, base, n_estimators = setup(model_c)
    bar = _progress(progress, n_fits)
    try:
        # ------------------------------------------------------------ selection on every station
        n_estimators0 = n_estimators  # the trees a fold uses before its own forest-size step
        params, n_estimators, search_rows = _select(
            X,
            y,
            site_splits,
            candidates,
            base,
            smallest,
            n_estimators,
            sizes,
            search_estimators,
            random_state,
            n_jobs,
            bar,
            model=model_c,
            features=features,
            meta=meta,
        )

        # ------------------------------------------------------------ CV
        frames = []
        cv_card: dict[str, Any] = {}
        site_metrics = pd.DataFrame()
        for s in schemes:
            if s in skipped:
                cv_card[s] = {"skipped": skipped[s]}
                continue
            sp, splitter = splits[s]
            bar.set_postfix_str(f"{s} CV" + (" (nested)" if nest else ""))
            fold_selection: list[dict[str, Any]] | None = None
            if nest:

                def select(Xi: np.ndarray, yi: np.ndarray, inner: Any, rows: np.ndarray) -> tuple[Any, ...]:
                    m, cands, b, n0 = model_c, candidates, base, n_estimators0
                    if auto:  # the fold's own model choice, on its training rows only
                        m = _auto_select(
                            Xi,
                            yi,
                            stations[rows],
                            dates[rows],
                            None if xy_all is None else xy_all[rows],
                            features,
                            select_cv,
                            time_blocks,
                            n_splits,
                            setup,
                            random_state,
                            n_jobs,
                            knndm_domain,
                            False,
                            intervals=False,
                        ).chosen
                        cands, b, n0 = setup(m)
                    got = _select(
                        Xi,
                        yi,
                        inner,
                        cands,
                        b,
                        smallest,
                        n0,
                        sizes,
                        search_estimators,
                        random_state,
                        n_jobs,
                        bar,
                        quiet=True,
                        model=m,
                        features=features,
                        meta=(stations[rows], dates[rows]),
                    )
                    return (got[0], got[1], m) if auto else (got[0], got[1])

                pred, fold, fold_selection = _nested_cross_val_predict(
                    X,
                    y,
                    stations,
                    sp,
                    select,
                    (dict(base), n_estimators0, model_c) if auto else (dict(base), n_estimators0),
                    n_splits,
                    random_state,
                    n_jobs,
                    bar.update,
                    model=model_c,
                    features=features,
                    dates=dates,
                )
            else:
                pred, fold = _cross_val_predict(
                    X, y, sp, params, n_estimators, random_state, n_jobs, bar.update, model_c, features, meta
                )
            per_site = _per_site(stations, dates, y, pred)
            entry: dict[str, Any] = {
                "splitter": splitter,
                "n_folds": len(sp),
                "n_groups": int(np.unique(groups[s]).size),
                "nested": nest,
                "metrics": evaluate(pred, y),
                "site_median": _median(per_site),
            }
            if fold_selection is not None:
                entry["fold_selection"] = fold_selection
            if s == "block":
                entry["block_size"] = float(block_size)
            if s == "knndm":
                entry.update(knndm_entry)
            cv_card[s] = entry
            if s == "site":
                site_metrics = per_site
            frames.append(
                pd.DataFrame(
                    {
                        "station": stations,
                        "date": dates,
                        "target": y,
                        "scheme": s,
                        "fold": fold,
                        "group": groups[s],
                        "prediction": pred,
                    }
                )
            )
            med = entry["site_median"].get("ubRMSE")
            log.info(
                "%s CV (%s): RMSE %.4f, R %.3f, median site ubRMSE %.4f",
                s,
                splitter,
                entry["metrics"]["RMSE"],
                entry["metrics"]["R"],
                math.nan if med is None else med,
            )
        cols = ["station", "date", "target", "scheme", "fold", "group", "prediction"]
        cv_predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)

        # ------------------------------------------------------------ final forest
        bar.set_postfix_str("final fit")
        if model_c != "forest":  # boosted: fitted on every row, no bootstrap and no out-of-bag sample
            rf = _fit_model(model_c, params, n_estimators, random_state, n_jobs, X, y, features, meta=meta)
            caught = []
            oob_pred = np.full(y.size, np.nan)
        else:
            rf = _rf(params, n_estimators, random_state, n_jobs, oob=True)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", UserWarning)
                rf.fit(X, y)
            oob_pred = np.asarray(rf.oob_prediction_, dtype=np.float64).copy()
        n_no_oob = 0
        if any("do not have OOB scores" in str(w.message) for w in caught):
            in_all = np.zeros(y.size, dtype=np.int64)
            for idx in rf.estimators_samples_:
                in_all[np.unique(idx)] += 1
            never = in_all == len(rf.estimators_)
            n_no_oob = int(never.sum())
            oob_pred[never] = np.nan
            log.warning(
                "%d rows were in every bootstrap sample (too few trees); they are left out of the OOB "
                "metrics but not of oob_score (scikit-learn's)",
                n_no_oob,
            )
        for w in caught:
            if "do not have OOB scores" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        bar.update()
    finally:
        bar.close()
    _refuse_constant(rf, model_c, X, y, site_ids, n_jobs)

    if model_c == "forest":
        oob_metrics = {**evaluate(oob_pred, y), "n_without_oob": n_no_oob}
        oob_score: float | None = float(rf.oob_score_)
        content_hash = forest_hash(rf)
    else:
        from smengine.model._hybrid import model_hash

        oob_metrics, oob_score, content_hash = {}, None, model_hash(rf)
    hyper = _hyperparameters(model_c, rf, features)
    units = table.attrs.get("units") or {}
    kinds = table.attrs.get("kinds") or {}
    sources = table.attrs.get("sources") or {}
    card = ModelCard(
        features=[{"name": f, "units": units.get(f), "kind": kinds.get(f), "source": sources.get(f)} for f in features],
        target={"name": target, "units": "m3 m-3"},
        stations=site_ids,
        period=[str(np.datetime_as_string(dates.min(), unit="D")), str(np.datetime_as_string(dates.max(), unit="D"))],
        n_samples=int(y.size),
        n_dropped=dropped,
        hyperparameters=hyper,
        search=search_rows,
        cv=cv_card,
        site_metrics={str(k): v for k, v in site_metrics.to_dict(orient="index").items()},
        oob_score=oob_score,
        oob_metrics=oob_metrics,
        versions=_versions(),
        content_hash=content_hash,
        model=model_c,
        model_selection=selection.to_dict() if selection is not None else {},
        # the parameters of the table's water-balance features (wb<depth>), which the engine needs to make them
        water_balance=(table.attrs.get("spec") or {}).get("water_balance"),
    )
    if model_c == "forest":
        log.info("trained forest %s: OOB R² %.3f", card.content_hash[:19], rf.oob_score_)
    else:
        log.info("trained %s model %s", model_c, card.content_hash[:19])
    aoa = None  # the area of applicability: stations as folds, importances as weights
    weights = _importances(model_c, rf)
    if not applicability:
        log.debug("no area-of-applicability reference (applicability=False)")
    elif len(site_ids) >= 2 and weights.any():
        aoa = Applicability.fit(
            X,
            weights=weights,
            folds=stations,
            feature_names=features,
            max_reference=DEFAULT_MAX_REFERENCE,
            random_state=random_state,
        )
    else:
        log.warning(
            "no area-of-applicability reference: it needs at least 2 stations and a forest with non-zero "
            "importances; products of this forest carry no dissimilarity index"
        )
    out = Forest(rf, features, card, cv_predictions, site_metrics, aoa, model=model_c)
    out.knndm = knndm_result
    out.selection = selection
    return out


# ======================================================================================
# forest size
# ======================================================================================
def forest_size_curve(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    target: str = "target",
    *,
    trees: Sequence[int] = SIZE_TREES,
    min_samples_leaf: Sequence[float] = SIZE_LEAVES,
    cv: str = "site",
    max_features: float | str | None = 1 / 3,
    n_splits: int | None = 5,
    block_size: float = 100_000.0,
    random_state: int = 0,
    n_jobs: int | None = -1,
    progress: bool | None = None,
    target_range: tuple[float, float] | None = TARGET_RANGE,
) -> pd.DataFrame:
    r"""Grouped-CV skill of the forest against its number of trees and its leaf size.

    For each ``min_samples_leaf`` and each fold of the grouped CV ``cv``, one forest of
    ``max(trees)`` trees is fitted (``RandomForestRegressor(bootstrap=True,
    random_state=random_state)``, as in :func:`train`) and the held-out rows are predicted
    by its first ``k`` trees for every ``k`` of ``trees``. The pooled out-of-fold
    predictions give one row of skill per (trees, leaf size).

    The first ``k`` trees of a scikit-learn forest are exactly the ``k``-tree forest with
    the same parameters and seed: tree ``i`` is seeded by the ``i``-th draw of
    ``RandomState(random_state)`` whatever the forest's size, and its bootstrap sample is
    drawn from that seed. Their outputs are summed in order and divided by ``k`` as
    ``RandomForestRegressor.predict`` does, so each row equals the CV of a ``k``-tree forest
    fitted on its own, bit for bit, at the cost of one fit per fold and leaf size.

    Parameters
    ----------
    table : pandas.DataFrame
        A training table, as for :func:`train`; incomplete rows are dropped the same way.
    features : sequence of str, optional
        Feature columns (default ``table.attrs["features"]``).
    target : str, optional
        Target column, m³ m⁻³ (default ``"target"``).
    trees : sequence of int, optional
        Tree counts (default :data:`SIZE_TREES`: 10, 25, 50, 100, 200, 500).
    min_samples_leaf : sequence of int or float, optional
        Leaf sizes (default :data:`SIZE_LEAVES`: 1, 5, 20).
    cv : {"site", "year", "block"}, optional
        The grouped CV scheme (default leave-site-out), with the splits of :func:`train`.
    max_features : float, int, str or None, optional
        Features tried per split (default 1/3).
    n_splits : int or None, optional
        Folds for site and block CV (default 5; None: one group per fold).
    block_size : float, optional
        Side of the spatial blocks for ``cv="block"``, m (default 100 km).
    random_state : int, optional
        Seed of every fit (default 0).
    n_jobs : int or None, optional
        Threads per fit and prediction (default -1: all cores); the result does not depend
        on it.
    progress : bool or None, optional
        tqdm progress over the fits (None: on a terminal only).
    target_range : (float, float) or None, optional
        Plausible target values, m³ m⁻³ (default :data:`TARGET_RANGE`).

    Returns
    -------
    pandas.DataFrame
        One row per (``n_estimators``, ``min_samples_leaf``), sorted by trees then leaf
        size: pooled out-of-fold ``RMSE``, ``ubRMSE``, ``bias`` (m³ m⁻³), ``R``, and
        ``n_nodes``, the mean over folds of the forest's total node count (what the
        compiled forest's size and speed follow). ``.attrs`` holds ``cv``, ``splitter``,
        ``n_folds``, ``n_groups``, ``n_samples``, ``max_features`` and ``random_state``.

    Raises
    ------
    ConfigError
        Unknown or several CV schemes, a scheme with fewer than 2 groups, missing columns,
        bad tree counts or leaf sizes.
    ValidationError
        No complete rows; non-numeric features.

    See Also
    --------
    train : with ``n_estimators="smallest"``, picks the smallest forest of this curve
        within a tolerance of the best RMSE.

    Examples
    --------
    >>> curve = forest_size_curve(table, trees=(25, 50, 100), min_samples_leaf=(5, 20))  # doctest: +SKIP
    >>> curve.pivot(index="n_estimators", columns="min_samples_leaf", values="RMSE")    # doctest: +SKIP
    """
    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"forest_size_curve: table should be a pandas DataFrame, got {type(table).__name__}")
    if not isinstance(cv, str):
        raise ConfigError(f"forest_size_curve: cv should be one scheme of {list(CV_SCHEMES)}, got {cv!r}")
    (scheme,) = _schemes(cv)
    if scheme == "knndm":
        raise ConfigError("forest_size_curve: cv='knndm' is not supported; use 'site', 'year' or 'block'")
    tree_list, leaves = _check_sizes(trees, min_samples_leaf)
    random_state = _check_int("random_state", random_state, 0)
    if n_splits is not None:
        n_splits = _check_int("n_splits", n_splits, 2)
    if scheme == "block" and not (
        isinstance(block_size, (int, float)) and math.isfinite(block_size) and block_size > 0
    ):
        raise ConfigError(f"block_size should be a positive number of metres, got {block_size!r}")
    features, X, y, data, _ = _prepare(table, features, target, scheme == "block", target_range, "forest_size_curve")
    groups = _groups(scheme, data, block_size)
    n_groups = int(np.unique(groups).size)
    if n_groups < 2:
        raise ConfigError(f"forest_size_curve: {scheme} CV needs at least 2 groups, got {n_groups} ({groups[0]})")
    sp, splitter = _splits(scheme, groups, n_splits)
    log.info(
        "forest size curve: %d rows, %d features, %s CV (%s), trees %s, min_samples_leaf %s",
        y.size,
        len(features),
        scheme,
        splitter,
        tree_list,
        leaves,
    )
    bar = _progress(progress, len(leaves) * len(sp))
    try:
        rows = _size_curve(
            X, y, sp, {"max_features": max_features}, tree_list, leaves, random_state, n_jobs, bar.update, bar
        )
    finally:
        bar.close()
    out = pd.DataFrame(rows, columns=["n_estimators", "min_samples_leaf", "RMSE", "ubRMSE", "R", "bias", "n_nodes"])
    out.attrs.update(
        cv=scheme,
        splitter=splitter,
        n_folds=len(sp),
        n_groups=n_groups,
        n_samples=int(y.size),
        max_features=json_safe(max_features),
        random_state=random_state,
    )
    return out
