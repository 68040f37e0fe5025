"""The experiments: temporal split and leave-site-out with the forest and its baselines."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from smengine.errors import ConfigError, ValidationError
from smengine.evaluate import PairedComparison
from smengine.experiments._data import _SCORE_KEYS, DEFAULT_MODELS, METHODS

log = logging.getLogger(__name__)


# ======================================================================================
# the experiments
# ======================================================================================
@dataclass
class ExperimentResult:
    """One experiment: per-row predictions, per-station scores, folds.

    Attributes
    ----------
    name : str
        ``"temporal"`` or ``"leave-site-out"``.
    predictions : DataFrame
        Test rows: ``station, date, fold, obs`` and one column per method of
        :data:`METHODS` (NaN where a method cannot predict, and on rows not scored).
    scores : DataFrame
        Long: ``method, station`` (``"median"`` last), ``n, R, ubRMSE, bias, KGE``.
        The medians describe; they are no verdict.
    folds : list of dict
        ``fold``, ``train_stations``, ``test_stations``, ``n_train``, ``n_test``,
        ``train_end``/``test_start`` (temporal), the linear model's coefficients.
    features : list of str
    params : dict
        Split, forest settings and the forest's hyper-parameters.
    comparisons : list of PairedComparison
        The paired comparisons of :data:`COMPARISONS` (:func:`compare_methods`, computed from
        ``predictions`` when not given): per-station wins, ties and losses and the interval of
        the mean per-station difference. Every verdict comes from these.
    """

    name: str
    predictions: pd.DataFrame
    scores: pd.DataFrame
    folds: list[dict[str, Any]]
    features: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    comparisons: list[PairedComparison] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.comparisons:
            self.comparisons = compare_methods(self.predictions)

    def comparison(self, a: str, b: str, metric: str = "ubRMSE") -> PairedComparison | None:
        """The paired comparison of method ``a`` against ``b`` on ``metric`` (None when not made)."""
        for c in self.comparisons:
            if (c.a, c.b, c.metric) == (a, b, metric):
                return c
        return None

    def medians(self) -> pd.DataFrame:
        """Median over stations per method (rows) and metric (columns)."""
        m = self.scores[self.scores["station"] == "median"].set_index("method")
        return m[list(_SCORE_KEYS)].reindex([x for x in METHODS if x in m.index])

    def station_scores(self, method: str) -> pd.DataFrame:
        """Per-station scores (and the median row) of one method."""
        return self.scores[self.scores["method"] == method].set_index("station")[list(_SCORE_KEYS)]

    def forest_beats(self) -> dict[str, bool]:
        """Whether the forest beats each baseline model on ubRMSE: the 95 % interval of the mean
        per-station difference lies below 0 (:func:`smengine.evaluate.paired_station_ci`), not a
        comparison of medians."""
        out = {}
        for b in ("mean", "linear"):
            c = self.comparison("forest", b, "ubRMSE")
            out[b] = c is not None and c.verdict == "beats"
        return out


#: The paired comparisons every experiment makes (A against B), with the metrics of each.
COMPARISONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("forest", "linear", ("ubRMSE", "RMSE", "R")),
    ("forest", "mean", ("ubRMSE", "RMSE")),
    ("linear", "mean", ("ubRMSE", "RMSE")),
    ("forest", "tdr", ("ubRMSE", "RMSE", "R")),
    ("boosting", "linear", ("ubRMSE", "RMSE", "R")),
    ("boosting", "mean", ("ubRMSE", "RMSE")),
    ("hybrid", "linear", ("ubRMSE", "RMSE", "R")),
    ("hybrid", "mean", ("ubRMSE", "RMSE")),
    ("hybrid", "forest", ("ubRMSE", "RMSE", "R")),
    ("selected", "linear", ("ubRMSE", "RMSE", "R")),
    ("selected", "mean", ("ubRMSE", "RMSE")),
)
#: Bootstrap settings of the comparisons: days per time block, resamples, seed.
COMPARE_BLOCK_DAYS, COMPARE_N_BOOT, COMPARE_SEED = 30, 1000, 0


def compare_methods(pred: pd.DataFrame, *, min_obs: int | None = None) -> list[PairedComparison]:
    """Every pair of :data:`COMPARISONS` present in ``pred``: paired per-station differences with
    95 % block-bootstrap intervals (stations resampled; :func:`smengine.evaluate.paired_station_ci`).

    Parameters
    ----------
    pred : DataFrame
        An experiment's predictions: ``station, date, obs`` and one column per method.
    min_obs : int, optional
        Common days a station needs (default :data:`MIN_SCORED_DAYS`).

    Returns
    -------
    list of PairedComparison
    """
    from smengine.evaluate import paired_station_ci

    n_min = MIN_SCORED_DAYS if min_obs is None else int(min_obs)
    out = []
    for a, b, metrics in COMPARISONS:
        if not all(m in pred.columns and pred[m].notna().any() for m in (a, b)):
            continue
        for metric in metrics:
            out.append(
                paired_station_ci(
                    pred,
                    a,
                    b,
                    "obs",
                    metric=metric,
                    block_days=COMPARE_BLOCK_DAYS,
                    n_boot=COMPARE_N_BOOT,
                    seed=COMPARE_SEED,
                    min_obs=n_min,
                )
            )
    return out


def linear_baseline(
    train: pd.DataFrame, test: pd.DataFrame, features: Sequence[str], target: str = "target"
) -> tuple[np.ndarray, dict[str, Any]]:
    """OLS on the standardised features, fitted on the complete training rows.

    ``StandardScaler`` (training mean and SD; a constant feature becomes 0 and gets
    coefficient 0) then ``LinearRegression``. Test rows with a NaN feature get NaN.

    Returns
    -------
    prediction : ndarray, shape (len(test),)
    info : dict
        ``n_train``, ``intercept``, ``coef`` (per feature, standardised units).
    """
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    f = list(features)
    X = train[f].to_numpy(np.float64)
    y = train[target].to_numpy(np.float64)
    ok = np.isfinite(X).all(axis=1) & np.isfinite(y)
    if not ok.any():
        raise ValidationError("linear baseline: no complete training rows")
    model = make_pipeline(StandardScaler(), LinearRegression()).fit(X[ok], y[ok])
    Xt = test[f].to_numpy(np.float64)
    okt = np.isfinite(Xt).all(axis=1)
    pred = np.full(len(test), np.nan)
    if okt.any():
        pred[okt] = model.predict(Xt[okt])
    lr = model[-1]
    return pred, {
        "n_train": int(ok.sum()),
        "intercept": float(lr.intercept_),
        "coef": {k: float(v) for k, v in zip(f, lr.coef_, strict=True)},
    }


def _complete(table: pd.DataFrame, features: Sequence[str], target: str = "target") -> np.ndarray:
    X = table[list(features)].to_numpy(np.float64)
    return np.isfinite(X).all(axis=1) & np.isfinite(table[target].to_numpy(np.float64))


def _with_forest(models: Sequence[str]) -> tuple[str, ...]:
    """The tree models of an experiment, the forest first: it is always fitted, as the reference whose
    predictions define the rows every method is scored on (:func:`_mask_common`)."""
    from smengine.model import MODELS

    bad = [m for m in models if m not in MODELS]
    if bad:
        raise ConfigError(f"models: unknown {bad}; choose from {list(MODELS)}")
    return ("forest", *[m for m in dict.fromkeys(models) if m != "forest"])


def _fit_predict(
    train_rows: pd.DataFrame,
    test_rows: pd.DataFrame,
    features: Sequence[str],
    *,
    n_estimators: int,
    search: bool,
    random_state: int,
    n_jobs: int | None,
    models: Sequence[str] = DEFAULT_MODELS,
    select: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The tree models of ``models``, linear and mean fitted on ``train_rows``, predicted on ``test_rows``;
    with ``select``, also the model chosen on ``train_rows`` alone (``selected``: nested)."""
    from smengine.model import train

    comp = train_rows[_complete(train_rows, features)]
    if comp.empty:
        raise ValidationError("no complete training rows (every row has a NaN feature or target)")
    n_sites = comp["station"].nunique()
    pred: dict[str, np.ndarray] = {}
    info: dict[str, Any] = {"n_train": len(comp), "train_mean": float(comp["target"].mean())}
    for m in models:
        kw: dict[str, Any] = {"n_estimators": n_estimators, "search": search and n_sites >= 2}
        if m != "forest":
            kw = {"search": False}
        fitted = train(
            comp,
            list(features),
            "target",
            model=m,
            cv=(),
            random_state=random_state,
            n_jobs=n_jobs,
            progress=False,
            applicability=False,  # scored, never mapped: no dissimilarity reference
            **kw,
        )
        pred[m] = fitted.predict(test_rows)
        info[m] = _model_params(fitted)
        info[f"{m}_hash"] = fitted.card.content_hash
    lin, info["linear"] = linear_baseline(comp, test_rows, features)
    pred["linear"] = lin
    pred["mean"] = np.full(len(test_rows), float(comp["target"].mean()))
    if select:
        chosen, inner = _select_inner(
            comp, features, (*models, "linear"), random_state=random_state, n_jobs=n_jobs, n_estimators=n_estimators
        )
        info["selected"] = chosen
        info["selection"] = inner
        pred["selected"] = pred[chosen]
    return pred, info


#: Inner folds of the nested selection (:func:`_select_inner`): station groups × time blocks, the
#: folds of ``select_model(cv="site-time")`` (the outer spatio-temporal split's four periods).
SELECT_STATION_FOLDS, SELECT_TIME_BLOCKS = 4, 4


def _fit_one(
    m: str,
    tr: pd.DataFrame,
    te: pd.DataFrame,
    features: Sequence[str],
    random_state: int,
    n_jobs: Any,
    n_estimators: int | None = None,
) -> Any:
    """One candidate fitted on ``tr`` and predicted on ``te`` (linear: :func:`linear_baseline`);
    the forest with ``n_estimators`` trees (the experiment's), the boosted models with their defaults."""
    if m == "linear":
        return linear_baseline(tr, te, features)[0]
    from smengine.model import train

    trees = {"n_estimators": n_estimators} if m == "forest" and n_estimators is not None else {}
    fitted = train(tr, list(features), "target", model=m, cv=(), search=False, random_state=random_state,
                   n_jobs=n_jobs, progress=False, applicability=False, **trees)  # fmt: skip
    return fitted.predict(te)


def _select_inner(
    comp: pd.DataFrame,
    features: Sequence[str],
    candidates: Sequence[str],
    *,
    random_state: int,
    n_jobs: Any,
    n_estimators: int | None = None,
) -> tuple[str, dict[str, float]]:
    """Choose among ``candidates`` on the training rows only, by spatio-temporal CV inside them.

    The folds are :func:`smengine.model.select_model`'s ``"site-time"`` folds on these rows:
    :data:`SELECT_STATION_FOLDS` station groups (``GroupKFold``) × :data:`SELECT_TIME_BLOCKS`
    contiguous periods, each (group, period) predicted by a model fitted on the other groups
    outside the period — the outer split's shape, one level down. The candidate with the lowest
    median per-station ubRMSE wins (ties: the first in ``candidates``). Returns the choice and
    every candidate's inner median ubRMSE.
    """
    from smengine.model._choice import _selection_folds

    stations = comp["station"].to_numpy(dtype=object)
    n_sites = len(np.unique(stations))
    if n_sites < 3:
        raise ValidationError(f"nested selection needs at least 3 training stations, got {n_sites}")
    folds, _ = _selection_folds(
        "site-time",
        stations,
        comp["date"].to_numpy(),
        None,
        SELECT_TIME_BLOCKS,
        SELECT_STATION_FOLDS,
        random_state,
        None,
    )
    preds = {m: np.full(len(comp), np.nan) for m in candidates}
    for tr, te in folds:
        if np.unique(stations[tr]).size < 2:
            continue
        for m in candidates:
            preds[m][te] = _fit_one(m, comp.iloc[tr], comp.iloc[te], features, random_state, n_jobs, n_estimators)
    score: dict[str, float] = {}
    for m in candidates:
        e = pd.DataFrame({"station": stations, "e": preds[m] - comp["target"].to_numpy()}).dropna()
        ub = e.groupby("station")["e"].std(ddof=0)
        score[m] = float(ub.median()) if len(ub) else float("inf")
    chosen = min(candidates, key=lambda m: (score[m], list(candidates).index(m)))
    return chosen, score


def _model_params(fitted: Any) -> dict[str, Any]:
    """The few parameters of a fitted model worth listing per fold."""
    est = fitted.estimator
    if getattr(fitted, "model", "forest") == "forest":
        return {k: est.get_params()[k] for k in ("max_features", "min_samples_leaf", "n_estimators")}
    hp = dict(fitted.card.hyperparameters)
    params = {**hp, **dict(hp.get("lgbm_params") or {})}
    return {k: params[k] for k in ("n_estimators", "learning_rate", "num_leaves") if k in params}


def _score(pred: pd.DataFrame) -> pd.DataFrame:
    import warnings

    from scipy.stats import ConstantInputWarning

    from smengine.evaluate import site_scores

    rows = []
    for m in METHODS:
        if m not in pred.columns or not pred[m].notna().any():
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConstantInputWarning)
            s = site_scores(pred, pred=m, obs="obs", min_obs=MIN_SCORED_DAYS)
        s = s[list(_SCORE_KEYS)].reset_index()
        if m == "mean":  # a constant: R (and so KGE) undefined, not the round-off of a zero variance
            s[["R", "KGE"]] = np.nan
        s.insert(0, "method", m)
        rows.append(s)
    return pd.concat(rows, ignore_index=True)


#: Scored days a station needs to enter the medians (:func:`smengine.evaluate.site_scores`).
MIN_SCORED_DAYS = 30


def _unscored(pred: pd.DataFrame, scores: pd.DataFrame, experiment: str) -> dict[str, str]:
    """Stations with too few scored days for a forest score: left out of every median, and said so."""
    f = scores[(scores["method"] == "forest") & (scores["station"] != "median")].set_index("station")
    n = pred.groupby("station")["forest"].count()
    out = {
        str(sid): f"{int(n.get(sid, 0))} scored days (< {MIN_SCORED_DAYS})"
        for sid in sorted(set(pred["station"]))
        if sid not in f.index or not np.isfinite(f.loc[sid, "ubRMSE"])
    }
    _warn_stations(f"{experiment}: {len(out)} of {pred['station'].nunique()} station(s) not in the medians", out)
    return out


def _warn_stations(head: str, why: dict[str, str]) -> None:
    """One DataLossWarning listing stations and why (nothing if none)."""
    if why:
        import warnings

        from smengine.errors import DataLossWarning

        warnings.warn(head + ": " + "; ".join(f"{k} ({v})" for k, v in why.items()), DataLossWarning, stacklevel=4)


def _mask_common(pred: pd.DataFrame) -> pd.DataFrame:
    """Score every method on the same rows: finite obs and a forest prediction."""
    ok = pred["obs"].notna() & pred["forest"].notna()
    for m in METHODS:
        if m in pred.columns:
            pred.loc[~ok, m] = np.nan
    return pred


def _check_table(table: pd.DataFrame, features: Sequence[str] | None) -> tuple[list[str], pd.DataFrame]:
    """The feature list and a copy of the table with parsed dates."""
    if not isinstance(table, pd.DataFrame):
        raise ConfigError("need a station table (DataFrame from station_table)")
    f = list(features) if features is not None else list(table.attrs.get("features") or [])
    if not f:
        raise ConfigError("no features: pass features=[...] or a table from station_table")
    missing = [c for c in ("station", "date", "target", *f) if c not in table.columns]
    if missing:
        raise ConfigError(f"table lacks column(s) {missing}")
    t = table.copy()
    t["date"] = pd.to_datetime(t["date"])
    return f, t


def _fold(
    train: pd.DataFrame, test: pd.DataFrame, features: Sequence[str], fold: int, **fit: Any
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit every method on ``train`` and predict ``test``: the fold's prediction frame (common days) and fit info."""
    pred, info = _fit_predict(train, test, features, **fit)
    out = pd.DataFrame(
        {
            "station": test["station"],
            "date": test["date"],
            "fold": fold,
            "obs": test["target"],
            **pred,
            "tdr": test.get("tdr_weighted", np.nan),
        }
    )
    return _mask_common(out), info


def temporal_split(
    table: pd.DataFrame,
    *,
    split_date: str | pd.Timestamp | None = None,
    train_years: float = 2.4,
    features: Sequence[str] | None = None,
    n_estimators: int = 500,
    search: bool = False,
    random_state: int = 0,
    n_jobs: int | None = -1,
    models: Sequence[str] = DEFAULT_MODELS,
    select: bool = False,
) -> ExperimentResult:
    """Train on each station's first days, test on its later days (one forest for all).

    Parameters
    ----------
    table : DataFrame
        From :func:`station_table` (one station: the single-site case; several are pooled).
    split_date : date-like, optional
        One first test day for every station. Default: **per station**, its own first day +
        ``train_years`` × 365.25 days, so each station trains on its own first years (one date
        for a pooled set would give late-starting stations no training days).
    train_years : float, optional
        Length of each station's training period when ``split_date`` is not given (default 2.4).
    features : sequence of str, optional
        Default ``table.attrs["features"]``.
    n_estimators, search, random_state, n_jobs
        Passed to :func:`smengine.model.train` (``search`` needs ≥ 2 stations).

    Returns
    -------
    ExperimentResult
        ``params["split_date"]`` is the split (the one date, or a station's when there is one
        station; ``"per station"`` otherwise), ``params["split_dates"]`` maps station → split,
        ``params["excluded"]`` lists stations without training or test days.

    Raises
    ------
    ValidationError
        When no station has both training and test days.
    """
    f, t = _check_table(table, features)
    models = _with_forest(models)
    first = t["date"].min()
    if split_date is None:
        starts = t.groupby("station")["date"].min()
        splits = (starts + pd.Timedelta(days=float(train_years) * 365.25)).dt.normalize()
    else:
        one = pd.Timestamp(split_date)
        one = one.tz_convert(None) if one.tz is not None else one
        splits = pd.Series(one, index=sorted(t["station"].unique()))
    at = t["station"].map(splits)
    is_train = (t["date"] < at).to_numpy()
    excluded = {}
    for sid, split in splits.items():
        rows = t["station"] == sid
        n_tr, n_te = int((rows & is_train).sum()), int((rows & ~is_train).sum())
        if not n_tr or not n_te:
            excluded[str(sid)] = f"no {'training' if not n_tr else 'test'} days with the split at {split:%Y-%m-%d}"
    if len(excluded) == len(splits):
        detail = "; ".join(f"{k}: {v}" for k, v in list(excluded.items())[:5])
        raise ValidationError(
            f"the split leaves no training or no test days at every station ({detail}; "
            f"data {first:%Y-%m-%d} … {t['date'].max():%Y-%m-%d})"
        )
    _warn_stations(f"temporal split: {len(excluded)} of {len(splits)} station(s) left out", excluded)
    keep = ~t["station"].isin(list(excluded)).to_numpy()
    tr, te = t[keep & is_train], t[keep & ~is_train].reset_index(drop=True)
    split = splits.drop(index=list(excluded)).min()
    out, info = _fold(
        tr,
        te,
        f,
        0,
        n_estimators=n_estimators,
        search=search,
        random_state=random_state,
        n_jobs=n_jobs,
        models=models,
        select=select,
    )
    comp_tr = tr[_complete(tr, f)]
    folds = [
        {
            "fold": 0,
            "train_stations": sorted(comp_tr["station"].unique().tolist()),
            "test_stations": sorted(te["station"].unique().tolist()),
            "n_test": int(out["forest"].notna().sum()),
            "train_start": str(comp_tr["date"].min().date()),
            "train_end": str(comp_tr["date"].max().date()),
            "test_start": str(te["date"].min().date()),
            "test_end": str(te["date"].max().date()),
            **info,
        }
    ]
    used = splits.drop(index=list(excluded))
    params = {
        "split_date": str(split.date()) if used.nunique() == 1 else "per station",
        "split_dates": {str(k): str(v.date()) for k, v in used.items()},
        "excluded": excluded,
        "train_years": train_years,
        "models": tuple(models),
        "select": select,
        "n_estimators": n_estimators,
        "search": search,
        "random_state": random_state,
    }
    scores = _score(out)
    params["unscored"] = _unscored(out, scores, "temporal split")
    return ExperimentResult("temporal", out, scores, folds, f, params)


def leave_site_out(
    table: pd.DataFrame,
    *,
    features: Sequence[str] | None = None,
    n_estimators: int = 500,
    search: bool = False,
    random_state: int = 0,
    n_jobs: int | None = -1,
    models: Sequence[str] = DEFAULT_MODELS,
    select: bool = False,
    spatiotemporal: bool = False,
    time_blocks: int = 4,
) -> ExperimentResult:
    """Hold out one station per fold; fit on all the others (forest, linear, mean).

    Each fold calls :func:`smengine.model.train` on the other stations' complete rows
    (``cv=()``; with ``search`` the hyper-parameters are tuned by leave-site-out CV
    *inside* the training stations, i.e. nested), so the held-out station is never seen.

    Parameters
    ----------
    spatiotemporal : bool, optional
        Leave-location-and-time-out (Meyer et al. 2018): the record is cut into
        ``time_blocks`` contiguous periods of equal numbers of days, and the held-out station
        is predicted period by period by a forest trained on the *other* stations *outside*
        that period, so the test days' dates are in no training row. Neighbouring stations
        share weather: plain leave-site-out lets a fold learn the test days' weather from the
        neighbours and flatters the model; this flavour measures skill at a new place on new
        days (``time_blocks`` forests per station).
    time_blocks : int, optional
        Periods of the spatio-temporal flavour (default 4).

    Returns
    -------
    ExperimentResult
        Named ``"leave-site-out"`` or ``"leave-site-out (spatio-temporal)"``.
    """
    f, t = _check_table(table, features)
    models = _with_forest(models)
    sites = sorted(t["station"].unique().tolist())
    if len(sites) < 2:
        raise ValidationError(f"leave-site-out needs at least 2 stations, got {sites}")
    out, folds, params = _grouped_station_cv(
        t,
        f,
        {sid: k for k, sid in enumerate(sites)},
        spatiotemporal=spatiotemporal,
        time_blocks=time_blocks,
        n_estimators=n_estimators,
        search=search,
        random_state=random_state,
        n_jobs=n_jobs,
        models=models,
        select=select,
    )
    name = "leave-site-out (spatio-temporal)" if spatiotemporal else "leave-site-out"
    scores = _score(out)
    params["unscored"] = _unscored(out, scores, name)
    return ExperimentResult(name, out, scores, folds, f, params)


def _grouped_station_cv(
    t: pd.DataFrame,
    f: list[str],
    station_fold: dict[Any, int],
    *,
    spatiotemporal: bool,
    time_blocks: int,
    n_estimators: int,
    search: bool,
    random_state: int,
    n_jobs: int | None,
    models: Sequence[str] = DEFAULT_MODELS,
    select: bool = False,
) -> tuple[pd.DataFrame, list[dict[str, Any]], dict[str, Any]]:
    """Hold out the stations of each fold of ``station_fold`` (station → fold) together; with
    ``spatiotemporal`` period by period, with the period's dates removed from training."""
    frames, folds = [], []
    days = np.sort(t["date"].unique())
    n_blocks = int(time_blocks) if spatiotemporal else 1
    if n_blocks < 2 and spatiotemporal:
        raise ConfigError(f"time_blocks should be >= 2, got {time_blocks}")
    edges = [days[int(round(i * len(days) / n_blocks))] for i in range(n_blocks)] + [days[-1] + np.timedelta64(1, "D")]
    fold_of = t["station"].map(station_fold).to_numpy()
    labels = sorted(set(station_fold.values()))
    for k, g in enumerate(labels):
        held = [sid for sid, v in station_fold.items() if v == g]
        info: dict[str, Any] = {"n_train": 0}
        for b in range(n_blocks):
            in_block = ((t["date"] >= edges[b]) & (t["date"] < edges[b + 1])).to_numpy()
            tr = t[(fold_of != g) & ~(in_block & spatiotemporal)]
            te = t[(fold_of == g) & in_block].reset_index(drop=True)
            if te.empty:
                continue
            fold = k * n_blocks + b
            out, info = _fold(
                tr,
                te,
                f,
                fold,
                n_estimators=n_estimators,
                search=search,
                random_state=random_state,
                n_jobs=n_jobs,
                models=models,
                select=select,
            )
            frames.append(out)
            folds.append(
                {
                    "fold": fold,
                    "train_stations": sorted(tr.loc[_complete(tr, f), "station"].unique().tolist()),
                    "test_stations": sorted(held),
                    "n_test": int(frames[-1]["forest"].notna().sum()),
                    **(
                        {"test_start": str(te["date"].min().date()), "test_end": str(te["date"].max().date())}
                        if spatiotemporal
                        else {}
                    ),
                    **info,
                }
            )
        log.info("grouped station CV fold %d/%d (%s): %d train rows", k + 1, len(labels), held, info["n_train"])
    out = pd.concat(frames, ignore_index=True)
    params = {
        "n_estimators": n_estimators,
        "search": search,
        "random_state": random_state,
        "n_folds": len(folds),
        "spatiotemporal": spatiotemporal,
        "time_blocks": n_blocks,
        "models": tuple(models),
        "select": select,
    }
    return out, folds, params


def station_xy(stations: Any, crs: str | None = None) -> pd.DataFrame:
    """Station coordinates in metres: ``x``, ``y`` per station (index), for distances.

    Parameters
    ----------
    stations : StationSet or DataFrame
        A station set (its stations' ``lat``/``lon``), or a table with ``station``, ``lat``,
        ``lon`` columns (WGS 84 degrees).
    crs : str, optional
        Projected CRS to use (anything :class:`pyproj.CRS` takes). Default: an azimuthal
        equidistant projection centred on the stations (distances from the centre exact, a
        network of a few hundred km within a fraction of a percent).

    Returns
    -------
    DataFrame
        ``lat``, ``lon``, ``x``, ``y`` indexed by station; ``attrs["crs"]`` the CRS used.
    """
    from smengine.grid import transformer

    if isinstance(stations, pd.DataFrame):
        missing = [c for c in ("station", "lat", "lon") if c not in stations.columns]
        if missing:
            raise ConfigError(f"station coordinates lack column(s) {missing}")
        ll = stations.drop_duplicates("station").set_index("station")[["lat", "lon"]].astype(float)
    else:
        ll = pd.DataFrame({"lat": [stations[s].lat for s in stations], "lon": [stations[s].lon for s in stations]},
                          index=pd.Index(list(stations), name="station"))  # fmt: skip
    bad = ll.index[~np.isfinite(ll.to_numpy()).all(1)].tolist()
    if bad:
        raise ValidationError(f"station(s) {bad} have no coordinates (lat/lon NaN)")
    if crs is None:
        crs = f"+proj=aeqd +lat_0={ll['lat'].mean():.6f} +lon_0={ll['lon'].mean():.6f} +datum=WGS84 +units=m"
    x, y = transformer("EPSG:4326", crs).transform(ll["lon"].to_numpy(), ll["lat"].to_numpy())
    out = ll.assign(x=np.asarray(x, np.float64), y=np.asarray(y, np.float64))
    out.attrs["crs"] = crs
    return out


def knndm_cv(
    table: pd.DataFrame,
    coords: pd.DataFrame,
    *,
    domain: pd.DataFrame | np.ndarray | None = None,
    k: int = 5,
    features: Sequence[str] | None = None,
    n_estimators: int = 500,
    search: bool = False,
    random_state: int = 0,
    n_jobs: int | None = -1,
    models: Sequence[str] = DEFAULT_MODELS,
    select: bool = False,
    spatiotemporal: bool = True,
    time_blocks: int = 4,
) -> ExperimentResult:
    """Cross-validation over kNNDM folds of the stations (Linnenbrink et al. 2024).

    The stations are grouped into ``k`` folds by :func:`smengine.evaluate.knndm_folds` so that
    the distances from each held-out station to the nearest training station match the
    distances from the prediction domain to the stations; each fold's stations are predicted
    by forests trained on the others (with ``spatiotemporal``, period by period with the
    period's dates removed from training, as :func:`leave_site_out`).

    Parameters
    ----------
    table : DataFrame
        From :func:`station_table`.
    coords : DataFrame
        :func:`station_xy` of the stations (``x``, ``y`` in m, ``attrs["crs"]``).
    domain : DataFrame or ndarray, optional
        Where the predictions are wanted: a table with ``lat``, ``lon`` columns (degrees) or an
        (m, 2) array of ``x, y`` in ``coords``' CRS. Default: a regular sample of the stations'
        convex hull.
    k : int, optional
        Folds (default 5; at most the number of stations).
    spatiotemporal, time_blocks
        As :func:`leave_site_out` (default on: new places on new days).

    Returns
    -------
    ExperimentResult
        Named ``"knndm"``; ``params["knndm"]`` holds W and W of leave-site-out folds, the
        method, the number of clusters and the domain; ``params["knndm_result"]`` the
        :class:`~smengine.evaluate.KNNDM` (for :func:`smengine.evaluate.plot_knndm`).
    """
    from smengine.evaluate import knndm_folds
    from smengine.grid import transformer

    f, t = _check_table(table, features)
    models = _with_forest(models)
    sites = sorted(t["station"].unique().tolist())
    missing = [s for s in sites if s not in coords.index]
    if missing:
        raise ConfigError(f"kNNDM: no coordinates for station(s) {missing}")
    if len(sites) < 3:
        raise ValidationError(f"kNNDM needs at least 3 stations, got {sites}")
    kk = min(int(k), len(sites))
    xy = coords.loc[sites, ["x", "y"]].to_numpy(np.float64)
    pred = None
    if isinstance(domain, pd.DataFrame):
        if not {"lat", "lon"} <= set(domain.columns):
            raise ConfigError(f"the prediction domain needs lat, lon columns, got {list(domain.columns)}")
        px, py = transformer("EPSG:4326", coords.attrs["crs"]).transform(domain["lon"].to_numpy(float),
                                                                          domain["lat"].to_numpy(float))  # fmt: skip
        pred = np.c_[px, py]
    elif domain is not None:
        pred = np.asarray(domain, dtype=np.float64)
    res = knndm_folds(xy, pred, k=kk, maxp=max(0.5, 1.5 / kk), seed=random_state)
    station_fold = {sid: int(res.folds[i]) for i, sid in enumerate(sites)}
    lso = np.arange(len(sites))  # leave-site-out: each station its own fold
    out, folds, params = _grouped_station_cv(
        t,
        f,
        station_fold,
        spatiotemporal=spatiotemporal,
        time_blocks=time_blocks,
        n_estimators=n_estimators,
        search=search,
        random_state=random_state,
        n_jobs=n_jobs,
        models=models,
        select=select,
    )
    params["knndm"] = {
        "k": kk,
        "method": res.method,
        "n_clusters": res.n_clusters,
        "W_m": float(res.W),
        "W_leave_site_out_m": float(res.W_of(lso)),
        "ks_pvalue": float(res.ks_pvalue),
        "domain": "given points" if pred is not None else "convex hull of the stations",
        "n_domain_points": int(res.pred_points.shape[0]),
        "folds": {str(k_): v for k_, v in station_fold.items()},
        "crs": coords.attrs.get("crs"),
    }
    params["knndm_result"] = res
    scores = _score(out)
    params["unscored"] = _unscored(out, scores, "knndm")
    return ExperimentResult("knndm", out, scores, folds, f, params)


#: The calendar features whose use :func:`calendar_effect` tests.
CALENDAR_FEATURES = ("doy_sin", "doy_cos")


def calendar_effect(with_calendar: ExperimentResult, without: ExperimentResult) -> list[PairedComparison]:
    """Does the day of year help at new places on new days? Every model of both experiments, with the
    calendar (A) against without (B), paired on the same station-days (ubRMSE and R).

    Under a spatio-temporal split, a day-of-year feature that carries the season helps; one that
    identifies the training dates of a short record (one or two years) cannot, and then costs skill:
    the interval says which.

    Parameters
    ----------
    with_calendar, without : ExperimentResult
        The same experiment on the same table, with and without :data:`CALENDAR_FEATURES`.

    Returns
    -------
    list of PairedComparison
        ``a`` is ``"<model> with day of year"``, ``b`` ``"<model> without"``.
    """
    from smengine.evaluate import paired_station_ci

    keys = ["station", "date"]
    a = with_calendar.predictions
    b = without.predictions
    out = []
    for m in METHODS:
        if m in ("mean", "tdr") or m not in a.columns or m not in b.columns:
            continue
        if not (a[m].notna().any() and b[m].notna().any()):
            continue
        both = a[[*keys, "obs", m]].merge(b[[*keys, m]], on=keys, suffixes=("", "_without"))
        wa, wo = f"{m} with day of year", f"{m} without"
        both = both.rename(columns={m: wa, f"{m}_without": wo})
        for metric in ("ubRMSE", "R"):
            out.append(
                paired_station_ci(
                    both,
                    wa,
                    wo,
                    "obs",
                    metric=metric,
                    block_days=COMPARE_BLOCK_DAYS,
                    n_boot=COMPARE_N_BOOT,
                    seed=COMPARE_SEED,
                    min_obs=MIN_SCORED_DAYS,
                )
            )
    return out
