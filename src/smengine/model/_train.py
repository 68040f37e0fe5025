r"""Train the Random Forest on a training table, with grouped cross-validation and a model card.

:func:`train` fits scikit-learn's ``RandomForestRegressor`` (Breiman 2001) with the
defaults of SCIENCE §4.3 (500 trees, ``max_features`` = 1/3 of the features, Breiman's
regression default, ``min_samples_leaf`` = 5, bootstrap with out-of-bag score) on the
complete rows of :func:`smengine.features.training_table`, and validates it with grouped
cross-validation only:

* ``"site"``: leave-site-out (``GroupKFold`` by station, or one station per fold);
* ``"year"``: leave-one-calendar-year-out;
* ``"block"``: spatial blocks of ``block_size`` metres in the grid CRS (Roberts et al. 2017).

Random (row-wise) splits are not offered: neighbouring days of one station are nearly
identical, so a random split tests interpolation in time at known sites and inflates the
skill. Han et al. (2023) report RMSE 0.038 (random split) against 0.060 (temporal) and
0.079 m³ m⁻³ (independent stations) for the same models. The hyper-parameters are tuned
by leave-site-out CV for the same reason.

Every fit uses the same ``random_state``, so the same table gives the same forest (equal
:func:`~smengine.model._hash.forest_hash`) and the same :class:`ModelCard`.

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
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from joblib import effective_n_jobs
from sklearn.ensemble import RandomForestRegressor
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, ParameterGrid

from smengine.errors import ConfigError, DataLossWarning, ValidationError
from smengine.metrics import evaluate
from smengine.model._card import ModelCard, json_safe
from smengine.model._hash import forest_hash

__all__ = ["CV_SCHEMES", "DEFAULT_PARAM_GRID", "Forest", "train"]

if TYPE_CHECKING:
    from smengine.model._compiled import CompiledForest

log = logging.getLogger(__name__)

#: Grouped cross-validation schemes understood by :func:`train`.
CV_SCHEMES = ("site", "year", "block")

#: Hyper-parameter grid of SCIENCE §4.3, searched by leave-site-out CV.
DEFAULT_PARAM_GRID: dict[str, tuple[Any, ...]] = {"max_features": (0.2, 0.33, 0.5), "min_samples_leaf": (1, 5, 20)}

#: Parameters :func:`train` sets itself (not searchable).
_FIXED = ("n_estimators", "random_state", "n_jobs", "oob_score", "bootstrap", "verbose", "warm_start")

#: Summary metrics of the median over sites in the card.
_MEDIAN_KEYS = ("R", "RMSE", "ubRMSE", "bias", "NSE", "KGE", "anomaly_R")

Split = tuple[np.ndarray, np.ndarray]


# ======================================================================================
# the trained forest
# ======================================================================================
class Forest:
    """The trained scikit-learn forest with its feature list, model card and CV results.

    Made by :func:`train`; pickles like any scikit-learn estimator.

    Attributes
    ----------
    estimator : sklearn.ensemble.RandomForestRegressor
        The forest fitted on every complete row.
    features : list of str
        Feature names in column order.
    card : ModelCard
    cv_predictions : pandas.DataFrame
        Out-of-fold predictions of every CV scheme: ``station, date, target, scheme, fold,
        group, prediction`` (``group``: the station, year or block ``"<i>_<j>"`` left out).
    site_metrics : pandas.DataFrame
        :func:`smengine.metrics.evaluate` per station (index) of its leave-site-out
        predictions; empty without ``"site"`` CV.
    """

    def __init__(
        self,
        estimator: RandomForestRegressor,
        features: Sequence[str],
        card: ModelCard,
        cv_predictions: pd.DataFrame,
        site_metrics: pd.DataFrame,
    ) -> None:
        self.estimator = estimator
        self.features = list(features)
        self.card = card
        self.cv_predictions = cv_predictions
        self.site_metrics = site_metrics

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
        """Predict with scikit-learn on float32 features; rows with a NaN or inf give NaN.

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
            threads split the rows, not the trees (see :func:`train`, Notes).
        """
        X = self._matrix(table_or_array)
        ok = np.isfinite(X).all(axis=1)
        out = np.full(X.shape[0], np.nan)
        if ok.any():
            out[ok] = _predict(self.estimator, X if ok.all() else X[ok], self.estimator.n_jobs)
        return out

    def compile(self, **kwargs: Any) -> CompiledForest:
        """The native predictor: :meth:`smengine.model.CompiledForest.from_sklearn` of
        :attr:`estimator`, carrying this :attr:`card` and the feature names. Keyword
        arguments (e.g. ``cache_dir``) are passed on."""
        from smengine.model._compiled import CompiledForest

        kwargs.setdefault("feature_names", list(self.features))
        return CompiledForest.from_sklearn(self.estimator, card=self.card, **kwargs)

    def __repr__(self) -> str:
        site = (self.card.cv.get("site") or {}).get("metrics") or {}
        skill = f", site-CV RMSE {site['RMSE']:.4f}" if site.get("RMSE") is not None else ""
        return (
            f"<Forest {len(self.estimator.estimators_)} trees, {self.n_features} features, "
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
) -> tuple[np.ndarray, np.ndarray]:
    pred = np.full(y.size, np.nan)
    fold = np.full(y.size, -1, dtype=np.int64)
    for k, (tr, te) in enumerate(splits):
        rf = _rf(params, n_estimators, random_state, n_jobs).fit(X[tr], y[tr])
        pred[te] = _predict(rf, X[te], n_jobs)
        fold[te] = k
        tick()
    return pred, fold


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
            f"train: {int(bad_r.sum())} of {finite} {target} values lie outside the plausible range "
            f"[{lo:g}, {hi:g}] m3 m-3 (worst {worst:.4g})"
        )
        if bad_r.sum() > 0.5 * max(finite, 1):
            raise ValidationError(f"{msg}: is the target in m3 m-3 (not %, or g/g)? pass target_range= if intended")
        warnings.warn(msg + "; those rows are left out", DataLossWarning, stacklevel=3)
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
            f"train: {dropped['total']} of {len(table)} rows ({dropped['total'] / len(table):.0%}) have "
            f"NaN/inf and are left out (target {dropped['target']}; NaN share of the worst features: "
            f"{worst or 'none'}); a feature with gaps (e.g. a satellite layer on overpass days only) "
            "also leaves its pixel-days NaN in the product: use its carried SWI (FeatureSpec(swi_carry=True)) "
            "or leave it out",
            DataLossWarning,
            stacklevel=3,
        )
    return keep, dropped


def _block_groups(x: np.ndarray, y: np.ndarray, block_size: float) -> np.ndarray:
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValidationError("block CV needs finite x, y coordinates; some rows have NaN/inf x or y")
    i = np.floor(x / block_size).astype(np.int64)
    j = np.floor(y / block_size).astype(np.int64)
    return np.array([f"{a}_{b}" for a, b in zip(i.tolist(), j.tolist(), strict=True)], dtype=object)


# ======================================================================================
# train
# ======================================================================================
def train(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    target: str = "target",
    *,
    cv: str | Sequence[str] | None = CV_SCHEMES,
    search: bool = True,
    param_grid: Mapping[str, Sequence[Any]] | None = None,
    n_estimators: int = 500,
    max_features: float | str | None = 1 / 3,
    min_samples_leaf: float = 5,
    search_estimators: int = 100,
    n_splits: int | None = 5,
    block_size: float = 100_000.0,
    random_state: int = 0,
    n_jobs: int | None = -1,
    progress: bool | None = None,
    target_range: tuple[float, float] | None = TARGET_RANGE,
) -> Forest:
    r"""Fit the Random Forest on the complete rows of a training table, with grouped CV.

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
    3. Each scheme of ``cv`` is run with the chosen parameters and ``n_estimators`` trees;
       out-of-fold predictions, pooled metrics and per-station metrics are kept.
    4. The final forest is fitted on every complete row with out-of-bag scoring.

    Every fit (search, CV folds, final) is a ``RandomForestRegressor(bootstrap=True,
    random_state=random_state)``, so a fold can be re-fitted exactly from
    :attr:`Forest.cv_predictions`.

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
    cv : str or sequence of {"site", "year", "block"}, optional
        Grouped CV schemes to run (default all three; ``None`` or ``()`` for none).
        ``"year"`` is skipped with a logged warning when the data span a single calendar
        year, ``"block"`` when all stations fall in one block.
    search : bool, optional
        Tune the hyper-parameters by leave-site-out CV (default True). Without it the
        forest uses ``max_features`` and ``min_samples_leaf``.
    param_grid : mapping of str → sequence, optional
        ``RandomForestRegressor`` parameters and values to search (default
        :data:`DEFAULT_PARAM_GRID`). Parameters not in the grid keep the values below.
    n_estimators : int, optional
        Trees of the CV and final forests (default 500).
    max_features : float, int, str or None, optional
        Features tried per split (default 1/3 of them: Breiman's regression default;
        scikit-learn's own default, 1.0, is plain bagging).
    min_samples_leaf : int or float, optional
        Minimum station-days per leaf (default 5).
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

    Returns
    -------
    Forest

    Raises
    ------
    ConfigError
        Unknown CV scheme; missing feature, target, station/date or (for ``"block"``)
        ``x``/``y`` columns; fewer than 2 stations for site CV or the search; a bad
        ``param_grid`` or integer argument.
    ValidationError
        No complete rows left; non-numeric feature columns; non-finite coordinates.

    Notes
    -----
    Out-of-fold predictions are made with the trees summed in their fixed order (threads
    split the rows), so they, the card's metrics and the search's choice are bitwise
    reproducible for any ``n_jobs``; scikit-learn's own threaded ``predict`` is not.

    The out-of-bag score is optimistic for station time series (days in the bag have
    neighbours out of it); the grouped CV metrics are the ones to report.

    References
    ----------
    .. [1] Breiman, L. (2001). Random forests. Machine Learning 45, 5–32.
    .. [2] Han, Q. et al. (2023). Geosci. Model Dev. 16, 5825–5845.
    .. [3] Roberts, D. R. et al. (2017). Ecography 40, 913–929.

    Examples
    --------
    >>> forest = train(training_table(stations, stores))      # doctest: +SKIP
    >>> print(forest.card.to_markdown())                       # doctest: +SKIP
    >>> compiled = forest.compile()                            # doctest: +SKIP
    """
    # ---------------------------------------------------------------- validate
    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"train: table should be a pandas DataFrame, got {type(table).__name__}")
    schemes = _schemes(cv)
    n_estimators = _check_int("n_estimators", n_estimators, 1)
    search_estimators = _check_int("search_estimators", search_estimators, 1)
    random_state = _check_int("random_state", random_state, 0)
    if n_splits is not None:
        n_splits = _check_int("n_splits", n_splits, 2)
    if "block" in schemes and not (
        isinstance(block_size, (int, float)) and math.isfinite(block_size) and block_size > 0
    ):
        raise ConfigError(f"block_size should be a positive number of metres, got {block_size!r}")
    candidates = _param_grid(param_grid) if search else []
    if features is None:
        if "features" not in table.attrs:
            raise ConfigError("train: the table has no .attrs['features']; pass features=[...]")
        features = table.attrs["features"]
    features = [str(f) for f in features]
    if not features:
        raise ConfigError("train: no features")
    dup = sorted({f for f in features if features.count(f) > 1})
    if dup:
        raise ConfigError(f"train: duplicate feature(s) {dup}")
    if target in features:
        raise ConfigError(f"train: the target {target!r} is also a feature")
    need = ["station", "date", target, *features] + (["x", "y"] if "block" in schemes else [])
    missing = [c for c in need if c not in table.columns]
    if missing:
        hint = (
            " (x, y are needed for cv='block'; drop 'block' from cv or add them)" if {"x", "y"} & set(missing) else ""
        )
        raise ConfigError(f"train: column(s) {missing} missing from the table{hint}")
    if not pd.api.types.is_numeric_dtype(table[target]):
        raise ValidationError(f"train: target column {target!r} is not numeric ({table[target].dtype})")

    # ---------------------------------------------------------------- complete rows
    X_all = _float32(table, features)
    y_all = table[target].to_numpy(dtype=np.float64)
    keep, dropped = _drop_incomplete(table, X_all, y_all, features, target, target_range)
    if not keep.any():
        raise ValidationError(
            f"train: no complete rows left: all {len(table)} rows have NaN/inf in the target or a "
            f"feature (target {dropped['target']}, features {dropped['features']})"
        )
    data = table.loc[keep, ["station", "date", target] + (["x", "y"] if "block" in schemes else [])].copy()
    data["station"] = data["station"].astype(str)
    data["date"] = pd.to_datetime(data["date"])
    if data["date"].dt.tz is not None:
        data["date"] = data["date"].dt.tz_convert(None)
    data["_row"] = np.flatnonzero(keep)
    data = data.sort_values(["station", "date", "_row"], kind="mergesort").reset_index(drop=True)
    rows = data["_row"].to_numpy()
    X, y = X_all[rows], y_all[rows]
    del X_all, y_all
    stations = data["station"].to_numpy(dtype=object)
    dates = data["date"].to_numpy()
    site_ids = sorted(set(stations.tolist()))
    if (search or "site" in schemes) and len(site_ids) < 2:
        raise ConfigError(
            f"train: leave-site-out CV{' and the search' if search else ''} need at least 2 stations, "
            f"got {len(site_ids)} {site_ids} after dropping incomplete rows"
        )
    log.info("training on %d rows, %d features, %d stations", y.size, len(features), len(site_ids))

    # ---------------------------------------------------------------- groups and splits
    groups: dict[str, np.ndarray] = {}
    skipped: dict[str, str] = {}
    for s in schemes:
        if s == "site":
            groups[s] = stations
        elif s == "year":
            groups[s] = pd.DatetimeIndex(data["date"]).year.to_numpy().astype(str).astype(object)
        else:
            groups[s] = _block_groups(data["x"].to_numpy(np.float64), data["y"].to_numpy(np.float64), float(block_size))
        if np.unique(groups[s]).size < 2:
            what = {"site": "station", "year": "calendar year", "block": f"{block_size:g} m block"}[s]
            skipped[s] = f"only one {what} ({groups[s][0]})"
            log.warning("%s CV skipped: the training data hold only one %s (%s)", s, what, groups[s][0])
            del groups[s]
    splits = {s: _splits(s, g, n_splits) for s, g in groups.items()}
    site_splits = splits["site"] if "site" in splits else (_splits("site", stations, n_splits) if search else None)
    n_fits = len(candidates) * len(site_splits[0] if site_splits else []) + sum(len(v[0]) for v in splits.values()) + 1

    base: dict[str, Any] = {"max_features": max_features, "min_samples_leaf": min_samples_leaf}
    bar = _progress(progress, n_fits)
    try:
        # ------------------------------------------------------------ search
        search_rows: list[dict[str, Any]] = []
        params = dict(base)
        if candidates:
            assert site_splits is not None
            best, i_best = math.inf, 0
            for i, cand in enumerate(candidates):
                bar.set_postfix_str(f"search {cand}")
                p, _ = _cross_val_predict(
                    X, y, site_splits[0], {**base, **cand}, search_estimators, random_state, n_jobs, bar.update
                )
                m = evaluate(p, y)
                row = {
                    "params": cand,
                    "n_estimators": search_estimators,
                    "cv": "site",
                    "splitter": site_splits[1],
                    "RMSE": m["RMSE"],
                    "ubRMSE": m["ubRMSE"],
                    "R": m["R"],
                    "chosen": False,
                }
                search_rows.append(row)
                log.info("search %s: leave-site-out RMSE %.4f, R %.3f", cand, m["RMSE"], m["R"])
                if m["RMSE"] < best:
                    best, i_best = m["RMSE"], i
            params = {**base, **candidates[i_best]}
            search_rows[i_best]["chosen"] = True
            log.info("search chose %s (RMSE %.4f)", {k: params[k] for k in candidates[0]}, best)

        # ------------------------------------------------------------ CV
        frames = []
        cv_card: dict[str, Any] = {}
        site_metrics = pd.DataFrame()
        for s in schemes:
            if s in skipped:
                cv_card[s] = {"skipped": skipped[s]}
                continue
            sp, splitter = splits[s]
            bar.set_postfix_str(f"{s} CV")
            pred, fold = _cross_val_predict(X, y, sp, params, n_estimators, random_state, n_jobs, bar.update)
            per_site = _per_site(stations, dates, y, pred)
            entry: dict[str, Any] = {
                "splitter": splitter,
                "n_folds": len(sp),
                "n_groups": int(np.unique(groups[s]).size),
                "metrics": evaluate(pred, y),
                "site_median": _median(per_site),
            }
            if s == "block":
                entry["block_size"] = float(block_size)
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

    oob_metrics = {**evaluate(oob_pred, y), "n_without_oob": n_no_oob}
    hyper = {k: v for k, v in rf.get_params().items() if k not in ("n_jobs", "verbose")}
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
        oob_score=float(rf.oob_score_),
        oob_metrics=oob_metrics,
        versions=_versions(),
        content_hash=forest_hash(rf),
    )
    log.info("trained forest %s: OOB R² %.3f", card.content_hash[:19], rf.oob_score_)
    return Forest(rf, features, card, cv_predictions, site_metrics)
