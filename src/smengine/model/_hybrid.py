r"""A hybrid regressor: a linear base plus gradient-boosted trees on its residuals.

A tree ensemble predicts a constant outside its training range: beyond the wettest or driest
station-day it has seen, a forest or a boosted model repeats its edge leaves. A physically
meaningful linear base — soil moisture linear in the water-balance state and the best soil
water index, or in a CDF-matched satellite product (SCIENCE §4) — keeps moving with its inputs
there, and trees fitted on the base's residuals add what the line misses inside the range.
This is the residual (or "base + correction") hybrid of the ML soil-moisture literature
(e.g. the water-balance predictor of the UK COSMOS product), written so that its compiled form
is exact: :meth:`smengine.model.CompiledForest.from_hybrid` runs it in the native kernels and
:meth:`HybridRegressor.predict` is the reference they reproduce bit for bit.

The base is fitted by ridge regression on standardised features with a small fixed penalty
(``alpha`` = 1.0 in units of the standardised sums of squares, negligible against the
thousands of station-days of a training table but enough to make exactly collinear features —
two SWI time constants of a dry year, a constant column — solvable); its coefficients are
stored in raw units (standardisation folded in), so the prediction is one fixed float64
expression of the float32 features.

References
----------
.. [1] Hoerl, A. E. & Kennard, R. W. (1970). Ridge regression: biased estimation for
   nonorthogonal problems. Technometrics 12, 55–67.
.. [2] Ke, G. et al. (2017). LightGBM: a highly efficient gradient boosting decision tree.
   NeurIPS 30, 3146–3154.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, RegressorMixin

from smengine.errors import ConfigError, ValidationError

__all__ = [
    "ALPHA_BY_CV",
    "DEFAULT_LGBM_PARAMS",
    "RIDGE_ALPHAS",
    "HybridRegressor",
    "choose_ridge_alpha",
    "gain_importances",
    "lgbm_regressor",
    "model_hash",
]

log = logging.getLogger(__name__)

#: LightGBM parameters of the boosted trees (:class:`HybridRegressor`'s residual trees and
#: ``train(model="boosting")``): small, smooth trees (7 leaves, at least 40 station-days per leaf),
#: row and column subsampling, a slow learning rate. ``deterministic`` with ``force_col_wise`` makes
#: the fit independent of the thread count (each feature's histogram is built by one thread).
DEFAULT_LGBM_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "n_estimators": 200,
    "learning_rate": 0.03,
    "num_leaves": 7,
    "min_child_samples": 40,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "verbose": -1,
    "deterministic": True,
    "force_col_wise": True,
}

#: LightGBM parameters that would make the trees unexportable (see CompiledForest.from_lightgbm).
_REFUSED = {"linear_tree": "linear trees", "zero_as_missing": "zeros as missing values"}


def _lightgbm() -> Any:
    try:
        import lightgbm
    except ImportError as err:
        raise ConfigError(
            "gradient-boosted and hybrid models need lightgbm: pip install 'smengine[boost]' (or lightgbm>=4.3)"
        ) from err
    return lightgbm


def lgbm_regressor(
    params: Mapping[str, Any] | None = None, *, random_state: int | None = 0, n_jobs: int | None = None
) -> Any:
    """An unfitted ``lightgbm.LGBMRegressor`` with :data:`DEFAULT_LGBM_PARAMS` updated by ``params``.

    Parameters
    ----------
    params : mapping, optional
        LGBMRegressor parameters overriding the defaults.
    random_state : int or None, optional
        Seed (default 0).
    n_jobs : int or None, optional
        Threads (LightGBM's default when None); the fitted model does not depend on it.

    Raises
    ------
    ConfigError
        Without lightgbm, or with a parameter whose trees the compiled predictor cannot run
        (``linear_tree``, ``zero_as_missing``).
    """
    lightgbm = _lightgbm()
    p = {**DEFAULT_LGBM_PARAMS, **dict(params or {})}
    for k, what in _REFUSED.items():
        if p.get(k):
            raise ConfigError(f"LightGBM parameter {k}=True ({what}) cannot be compiled; leave it out")
    if "n_jobs" in p or "random_state" in p:
        raise ConfigError("give random_state and n_jobs as keywords, not in the LightGBM parameters")
    return lightgbm.LGBMRegressor(**p, random_state=random_state, n_jobs=n_jobs)


def model_hash(est: Any) -> str:
    """SHA-256 identifying a fitted boosted (``LGBMRegressor`` / ``Booster``) or hybrid model.

    Hashes LightGBM's model text up to ``end of trees`` (the trees, feature infos and
    objective; not the parameters block, which records the thread count) and, for a
    :class:`HybridRegressor`, the exact bits of its base's coefficients and intercept. Equal
    models from equal data hash equal whatever ``n_jobs``; it is the card's ``content_hash`` and
    the compiled hybrid's ``source_hash``.
    """
    booster = est.booster_ if isinstance(est, HybridRegressor) else getattr(est, "booster_", est)
    text = booster.model_to_string().split("end of trees", 1)[0]
    h = hashlib.sha256(text.encode())
    if isinstance(est, HybridRegressor):
        h.update(b";hybrid;lin_coef=" + np.ascontiguousarray(est.coef_, dtype="<f8").tobytes())
        h.update(f";lin_intercept={float(est.intercept_).hex()}".encode())
    return "sha256:" + h.hexdigest()


def gain_importances(booster: Any) -> np.ndarray:
    """LightGBM's total-gain feature importances, normalised to sum 1 (all zeros without a split)."""
    g = np.asarray(booster.feature_importance(importance_type="gain"), dtype=np.float64)
    s = g.sum()
    return g / s if s > 0 else np.zeros_like(g)


def _ridge(X32: np.ndarray, y: np.ndarray, idx: np.ndarray, alpha: float) -> tuple[np.ndarray, float]:
    """Raw-unit coefficients (zero outside ``idx`` and for constant columns) and intercept of a
    ridge fit on the standardised columns ``idx`` of float32 ``X32`` (the hybrid's base)."""
    Z = X32[:, idx].astype(np.float64)
    mean = Z.mean(axis=0)
    scale = Z.std(axis=0)
    use = scale > 0
    coef = np.zeros(X32.shape[1], dtype=np.float64)
    ym = float(y.mean())
    if not use.any():
        return coef, ym
    Zs = (Z[:, use] - mean[use]) / scale[use]
    k = int(use.sum())
    A = np.vstack([Zs, np.sqrt(alpha) * np.eye(k)]) if alpha > 0 else Zs
    rhs = np.concatenate([y - ym, np.zeros(k)]) if alpha > 0 else y - ym
    w = np.linalg.lstsq(A, rhs, rcond=None)[0]
    coef[idx[use]] = w / scale[use]
    return coef, ym - float(np.dot(w, mean[use] / scale[use]))


def _ridge_path(
    X32: np.ndarray, y: np.ndarray, idx: np.ndarray, alphas: Sequence[float]
) -> list[tuple[np.ndarray, float]]:
    """:func:`_ridge` for every penalty of ``alphas`` from one eigendecomposition of the
    standardised columns' Gram matrix (the same solutions up to rounding; alpha = 0 is the
    minimum-norm least-squares one). A few small matrix products: no large factorisation per fold."""
    Z = X32[:, idx].astype(np.float64)
    mean = Z.mean(axis=0)
    scale = Z.std(axis=0)
    use = scale > 0
    ym = float(y.mean())
    if not use.any():
        return [(np.zeros(X32.shape[1]), ym) for _ in alphas]
    Zs = (Z[:, use] - mean[use]) / scale[use]
    lam, V = np.linalg.eigh(Zs.T @ Zs)
    vty = V.T @ (Zs.T @ (y - ym))
    keep = lam > lam[-1] * Zs.shape[0] * np.finfo(np.float64).eps
    out = []
    for a in alphas:
        d = np.zeros_like(lam)
        d[keep] = 1.0 / (lam[keep] + a)
        w = V @ (d * vty)
        coef = np.zeros(X32.shape[1], dtype=np.float64)
        coef[idx[use]] = w / scale[use]
        out.append((coef, ym - float(np.dot(w, mean[use] / scale[use]))))
    return out


#: Ridge penalties :func:`choose_ridge_alpha` tries (units of the standardised sums of squares,
#: i.e. of the number of training rows): half-decades from 0.1 to 10⁴.
RIDGE_ALPHAS: tuple[float, ...] = tuple(float(10.0**e) for e in np.arange(-1.0, 4.01, 0.5))

#: ``HybridRegressor`` ``alpha`` in :func:`smengine.model.train`: chosen by
#: :func:`choose_ridge_alpha` on the training rows (a number fixes it).
ALPHA_BY_CV = "site-time"


def choose_ridge_alpha(
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    stations: npt.ArrayLike,
    dates: npt.ArrayLike,
    *,
    base_index: Sequence[int] | None = None,
    alphas: Sequence[float] = RIDGE_ALPHAS,
    n_splits: int = 5,
    time_blocks: int = 4,
) -> tuple[float, dict[float, float]]:
    """The ridge penalty of a linear base, chosen by spatio-temporal CV on the training rows.

    The folds are those of ``select_model(cv="site-time")``: ``n_splits`` station groups
    (``GroupKFold``) × ``time_blocks`` contiguous periods; each (group, period) is predicted by
    the base fitted on the other groups outside the period. The penalty with the lowest median
    over stations of the per-station ubRMSE wins (ties: the smaller penalty).

    Why spatio-temporal: with station folds alone the held-out station's days are the training
    stations' days, collinear weather features (smoothed precipitation, humidity, the day of
    year) predict them as well as they fit them, and the smallest penalty wins; with the days
    held out too, their coefficients must carry to new weather, and the choice is the one a
    new place on new days needs. On Roaring Fork the station-only choice was 0.1 in 13 of 15
    folds and the spatio-temporal one 100–1000.

    Parameters
    ----------
    X : array_like, shape (n, n_features)
        Finite features (cast to float32, as in the fit).
    y : array_like, shape (n,)
        Finite target (m³ m⁻³).
    stations, dates : array_like, shape (n,)
        Station id and date of every row.
    base_index : sequence of int, optional
        Columns of the base (default every column).
    alphas : sequence of float, optional
        Penalties to try (default :data:`RIDGE_ALPHAS`), each >= 0.
    n_splits, time_blocks : int, optional
        Station groups (at most the number of stations) and periods.

    Returns
    -------
    alpha : float
        The chosen penalty (``alphas[0]`` when the rows hold fewer than 3 stations or 2 periods:
        nothing to validate on).
    scores : dict
        Penalty → median station ubRMSE (m³ m⁻³) of its out-of-fold predictions.

    References
    ----------
    .. [1] Roberts, D. R. et al. (2017). Cross-validation strategies for data with temporal,
       spatial, hierarchical, or phylogenetic structure. Ecography 40, 913–929.
    """
    import pandas as pd

    from smengine.model._choice import _selection_folds

    grid = [float(a) for a in alphas]
    if not grid or any(not (np.isfinite(a) and a >= 0) for a in grid):
        raise ConfigError(f"alphas should be numbers >= 0, got {list(alphas)!r}")
    X32 = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
    yv = np.asarray(y, dtype=np.float64).ravel()
    st = np.asarray(stations, dtype=object)
    dt = np.asarray(dates, dtype="datetime64[ns]")
    if not (X32.ndim == 2 and X32.shape[0] == yv.size == st.size == dt.size):
        raise ValidationError("choose_ridge_alpha: X, y, stations and dates should have one row each")
    idx = np.arange(X32.shape[1]) if base_index is None else np.asarray(base_index, dtype=np.intp)
    if np.unique(st).size < 3 or np.unique(dt).size < 2:
        return grid[0], {}
    folds, _ = _selection_folds("site-time", st, dt, None, time_blocks, n_splits, 0, None)
    err = np.full((len(grid), yv.size), np.nan)
    for tr, te in folds:
        x = X32[te].astype(np.float64)
        for i, (coef, b0) in enumerate(_ridge_path(X32[tr], yv[tr], idx, grid)):
            err[i, te] = b0 + x @ coef - yv[te]
    codes = pd.factorize(st)[0]
    scores: dict[float, float] = {}
    for i, a in enumerate(grid):
        ub = pd.Series(err[i]).groupby(codes).std(ddof=0).dropna()
        scores[a] = float(ub.median()) if len(ub) else float("inf")
    best = min(grid, key=lambda a: (scores[a], a))
    log.debug("ridge penalty by spatio-temporal CV: %g (%s)", best, scores)
    return best, scores


class HybridRegressor(RegressorMixin, BaseEstimator):
    r"""Linear base + LightGBM regression trees on its residuals (scikit-learn compatible).

    ``fit`` (i) fits a ridge regression on the standardised ``base_features`` of the training
    rows, stored as raw-unit coefficients :attr:`coef_` (zero for features outside the base)
    and :attr:`intercept_`; (ii) fits ``LGBMRegressor`` trees (:data:`DEFAULT_LGBM_PARAMS`
    updated by ``lgbm_params``) on the residuals ``y − b``. ``predict`` returns ``b + trees``
    with

    .. code-block:: python

        b = np.full(n, intercept_)
        for j in range(n_features):
            b += coef_[j] * x[:, j]   # float64 from the float32 features

    in that order, then ``+ booster.predict(x)``. The compiled predictor
    (:meth:`smengine.model.CompiledForest.from_hybrid`) computes the same expression in C and
    is bit-identical.

    Features are float32, as in the engine and in scikit-learn's trees: ``X`` is cast to
    float32 in ``fit`` and ``predict`` (so a float64 input gives what the compiled model gives
    on it).

    Parameters
    ----------
    base_features : sequence of int or str, optional
        Features of the linear base: column indices, or names (with a DataFrame, or with
        ``feature_names`` at fit). Default: every feature. A physically meaningful choice is
        the water-balance state and the best SWI, or a CDF-matched satellite product.
    alpha : float, optional
        Ridge penalty on the standardised coefficients (default 1.0; 0 is ordinary least
        squares, minimum-norm for collinear features). The standardised sums of squares are
        the number of rows, so 1.0 shrinks a coefficient by about 1/n.
    lgbm_params : mapping, optional
        LGBMRegressor parameters overriding :data:`DEFAULT_LGBM_PARAMS` (not ``random_state``
        or ``n_jobs``; ``linear_tree`` and ``zero_as_missing`` are refused: they cannot be
        compiled).
    random_state : int or None, optional
        Seed of the trees (default 0).
    n_jobs : int or None, optional
        Threads of LightGBM (default: its own); the model does not depend on it.

    Attributes
    ----------
    coef_ : ndarray of float64, shape (n_features,)
        Raw-unit coefficients of the base (target units per feature unit; 0 outside the base
        and for constant features).
    intercept_ : float
        The base's intercept (target units, m³ m⁻³ for soil moisture).
    base_index_ : ndarray of int
        Column indices of the base features.
    trees_ : lightgbm.LGBMRegressor
        The residual trees.
    booster_ : lightgbm.Booster
        ``trees_.booster_``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        With a DataFrame (or ``feature_names``) at fit only.
    feature_importances_ : ndarray of float64
        The trees' total-gain importances, normalised to sum 1.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.random((2000, 3), dtype=np.float32)
    >>> y = 0.4 * X[:, 0] + 0.1 * np.sin(6 * X[:, 1])
    >>> h = HybridRegressor(base_features=[0], lgbm_params={"n_estimators": 50}).fit(X, y)
    >>> round(float(h.coef_[0]), 1), h.coef_[1:].tolist()
    (0.4, [0.0, 0.0])
    >>> float(h.predict(np.array([[3.0, 0.5, 0.5]], np.float32))[0]) > 1.0  # the base extrapolates
    True
    """

    def __init__(
        self,
        base_features: Sequence[int | str] | None = None,
        alpha: float = 1.0,
        lgbm_params: Mapping[str, Any] | None = None,
        random_state: int | None = 0,
        n_jobs: int | None = None,
    ) -> None:
        self.base_features = base_features
        self.alpha = alpha
        self.lgbm_params = lgbm_params
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ helpers
    def _rows(self, X: Any, fitting: bool = False, feature_names: Sequence[str] | None = None) -> np.ndarray:
        names = None
        if hasattr(X, "columns"):
            names = [str(c) for c in X.columns]
            if not fitting and hasattr(self, "feature_names_in_"):
                want = [str(n) for n in self.feature_names_in_]
                missing = [n for n in want if n not in names]
                if missing:
                    raise ValidationError(f"HybridRegressor: feature column(s) {missing} missing from X")
                X = X[want]
                names = want
            X = X.to_numpy()
        with np.errstate(over="ignore"):
            arr = np.ascontiguousarray(np.asarray(X, dtype=np.float32))
        if arr.ndim != 2:
            raise ValidationError(f"HybridRegressor: X should be 2-D (n_rows, n_features), got shape {arr.shape}")
        if fitting:
            if feature_names is not None:
                if names is not None and list(feature_names) != names:
                    raise ConfigError("HybridRegressor.fit: feature_names disagree with the DataFrame's columns")
                names = [str(n) for n in feature_names]
                if len(names) != arr.shape[1]:
                    raise ConfigError(f"HybridRegressor.fit: {len(names)} feature_names for {arr.shape[1]} columns")
            self.n_features_in_ = int(arr.shape[1])
            if names is not None:
                self.feature_names_in_ = np.asarray(names, dtype=object)
            elif hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif arr.shape[1] != self.n_features_in_:
            raise ValidationError(
                f"HybridRegressor: X has {arr.shape[1]} features, the model was fitted on {self.n_features_in_}"
            )
        return arr

    def _base_index(self) -> np.ndarray:
        n = self.n_features_in_
        if self.base_features is None:
            return np.arange(n)
        if isinstance(self.base_features, (str, bytes)) or not isinstance(self.base_features, Sequence):
            raise ConfigError(f"base_features should be a list of indices or names, got {self.base_features!r}")
        names = [str(v) for v in getattr(self, "feature_names_in_", [])]
        idx: list[int] = []
        for f in self.base_features:
            if isinstance(f, str):
                if f not in names:
                    hint = f"features: {names}" if names else "fit on a DataFrame or pass feature_names to name them"
                    raise ConfigError(f"base feature {f!r} is not a feature ({hint})")
                idx.append(names.index(f))
            elif isinstance(f, (int, np.integer)) and not isinstance(f, bool) and 0 <= int(f) < n:
                idx.append(int(f))
            else:
                raise ConfigError(f"base feature {f!r} should be a name or an index in [0, {n})")
        if not idx:
            raise ConfigError("base_features is empty (leave it None for every feature)")
        if len(set(idx)) != len(idx):
            raise ConfigError(f"base_features lists a feature twice: {self.base_features!r}")
        return np.asarray(sorted(idx), dtype=np.intp)

    def base(self, X: Any) -> np.ndarray:
        """The linear base of every row, float64 (the expression the compiled kernels reproduce).

        Parameters
        ----------
        X : array_like or DataFrame, shape (n, n_features)

        Returns
        -------
        ndarray of float64, shape (n,)
        """
        self._check_fitted()
        return self._base(self._rows(X))

    def _base(self, X32: np.ndarray) -> np.ndarray:
        x = X32.astype(np.float64)
        b = np.full(x.shape[0], self.intercept_, dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):  # rows with inf (0 * inf): NaN, as predict says
            for j in range(x.shape[1]):  # sequential in j, elementwise over rows: smf_output in _forest.h
                b += self.coef_[j] * x[:, j]
        return b

    def _check_fitted(self) -> None:
        if not hasattr(self, "trees_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this HybridRegressor is not fitted yet; call fit first")

    # ------------------------------------------------------------------ API
    def fit(self, X: Any, y: npt.ArrayLike, feature_names: Sequence[str] | None = None) -> HybridRegressor:
        """Fit the linear base on the rows, then the trees on its residuals.

        Parameters
        ----------
        X : array_like or DataFrame, shape (n, n_features)
            Finite features (cast to float32).
        y : array_like, shape (n,)
            Finite target (m³ m⁻³ for soil moisture).
        feature_names : sequence of str, optional
            Names of the columns of an array ``X`` (for ``base_features`` by name and the
            compiled model's feature names).

        Returns
        -------
        HybridRegressor
            self.

        Raises
        ------
        ValidationError
            Non-finite features or target, or ``y`` of another length.
        ConfigError
            Bad ``base_features``, ``alpha`` or LightGBM parameters; no lightgbm.
        """
        X32 = self._rows(X, fitting=True, feature_names=feature_names)
        yv = np.asarray(y, dtype=np.float64).ravel()
        if yv.shape[0] != X32.shape[0]:
            raise ValidationError(f"HybridRegressor.fit: {X32.shape[0]} rows but {yv.shape[0]} targets")
        if X32.shape[0] < 2:
            raise ValidationError("HybridRegressor.fit: needs at least 2 rows")
        if not (np.isfinite(X32).all() and np.isfinite(yv).all()):
            raise ValidationError("HybridRegressor.fit: features and target must be finite (drop incomplete rows)")
        alpha = self.alpha
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float, np.integer, np.floating))
            or not (np.isfinite(alpha) and alpha >= 0)
        ):
            raise ConfigError(f"alpha should be a number >= 0, got {alpha!r}")
        trees = lgbm_regressor(self.lgbm_params, random_state=self.random_state, n_jobs=self.n_jobs)
        idx = self._base_index()
        self.base_index_ = idx
        coef, intercept = _ridge(X32, yv, idx, float(alpha))
        self.coef_ = coef
        self.intercept_ = intercept
        b = self._base(X32)
        resid = yv - b
        self.trees_ = trees.fit(X32, resid)
        log.debug(
            "hybrid: base on %d feature(s) explains R2 %.3f; %d residual trees",
            int(np.count_nonzero(coef)),
            1.0 - float(np.var(resid) / np.var(yv)) if np.var(yv) > 0 else float("nan"),
            self.trees_.booster_.num_trees(),
        )
        return self

    def predict(self, X: Any) -> np.ndarray:
        """``base(X) + booster.predict(X)`` on float32 features; rows with a NaN or inf give NaN.

        Parameters
        ----------
        X : array_like or DataFrame, shape (n, n_features)
            A DataFrame is reordered by :attr:`feature_names_in_` when the model has them.

        Returns
        -------
        ndarray of float64, shape (n,)
            Bit-identical to the compiled model's prediction (:meth:`CompiledForest.from_hybrid`).
        """
        self._check_fitted()
        X32 = self._rows(X)
        out = self._base(X32)
        if X32.shape[0]:
            out = out + self.trees_.predict(X32)  # base first, then + the tree sum
        bad = ~np.isfinite(X32).all(axis=1)
        if bad.any():
            out[bad] = np.nan
        return out

    @property
    def booster_(self) -> Any:
        """The residual trees' ``lightgbm.Booster``."""
        self._check_fitted()
        return self.trees_.booster_

    @property
    def feature_importances_(self) -> np.ndarray:
        """The residual trees' total-gain importances, normalised to sum 1."""
        return gain_importances(self.booster_)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
