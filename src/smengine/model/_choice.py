r"""Choose among the models (forest, boosting, hybrid) honestly: on the training rows alone, by
spatio-temporal leave-site-out CV, reported with paired intervals.

:func:`select_model` scores every candidate of :data:`~smengine.model.MODELS` on the rows it is
given (the training stations only: when it runs inside an outer CV fold or an experiment, the
held-out stations are never seen, so the outer score of the chosen model is nested), with the
same folds for every candidate:

* ``"site-time"`` (default): the stations are split into ``n_splits`` groups (``GroupKFold``; all
  of them with ``n_splits=None``: one station per group) and the record into ``time_blocks``
  contiguous periods of equal numbers of days; each (group, period) is predicted by a model fitted
  on the *other* stations *outside* that period, so neither the place nor the days of a test row
  are in its training rows (leave-location-and-time-out, Meyer et al. 2018; the spatio-temporal
  flavour of :func:`smengine.experiments.leave_site_out`). Neighbouring stations share weather:
  plain leave-site-out lets a model learn the test days from the neighbours, which flatters the
  models that memorise the weather most.
* ``"site"``: leave-site-out (station groups only);
* ``"knndm"``: kNNDM folds of the stations (Linnenbrink et al. 2024), matching the distances to
  the prediction domain.

**Rule.** The chosen model has the lowest median over stations of the per-station ubRMSE of its
out-of-fold predictions (the product's day-to-day skill at a typical new station, robust to a few
badly represented stations); ties go to the first in ``models`` order. The paired intervals of
every other candidate against the chosen one (:func:`smengine.evaluate.paired_station_ci`: mean
over stations of the per-station difference, two-stage block bootstrap over stations and 30-day
blocks) say whether the choice is clear (``loses``) or a coin toss (``ties``).

References
----------
.. [1] Meyer, H., Reudenbach, C., Hengl, T., Katurji, M. & Nauss, T. (2018). Improving
   performance of spatio-temporal machine learning models using forward feature selection
   and target-oriented validation. Environ. Model. Softw. 101, 1–9.
.. [2] Linnenbrink, J., Milà, C., Ludwig, M. & Meyer, H. (2024). kNNDM CV. Geosci. Model Dev.
   17, 5897–5912.
.. [3] Varma, S. & Simon, R. (2006). Bias in error estimation when using cross-validation for
   model selection. BMC Bioinformatics 7, 91.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.model_selection import GroupKFold

from smengine.errors import ConfigError, ValidationError
from smengine.metrics import evaluate
from smengine.model._card import json_safe

__all__ = ["SELECTION_CV", "SELECTION_RULE", "ModelSelection", "select_model"]

log = logging.getLogger(__name__)

#: CV schemes of :func:`select_model`.
SELECTION_CV = ("site-time", "site", "knndm")

#: How :func:`select_model` chooses (recorded with every selection).
SELECTION_RULE = (
    "The chosen model has the lowest median over stations of the per-station ubRMSE of its out-of-fold "
    "predictions (ties: the first listed). Intervals: mean over stations of the per-station difference "
    "(model - chosen), 95 % two-stage block bootstrap (stations, 30-day blocks)."
)


@dataclass
class ModelSelection:
    """The result of :func:`select_model`.

    Attributes
    ----------
    chosen : str
        The chosen model (see :data:`SELECTION_RULE`).
    scores : pandas.DataFrame
        One row per candidate (index ``model``, in the order given): pooled ``R``, ``ubRMSE``,
        ``RMSE``, ``bias`` (m³ m⁻³), ``n`` rows; ``median_R``, ``median_ubRMSE`` over
        ``n_stations`` stations; and against the chosen model (NaN for itself): ``delta_ubRMSE``
        (mean over stations of the per-station ubRMSE difference, model − chosen; > 0: worse)
        with ``ci_low``/``ci_high`` and ``verdict`` (``'loses'``: clearly worse, ``'ties'``:
        not distinguishable), and ``delta_R`` with ``R_ci_low``/``R_ci_high``.
    predictions : pandas.DataFrame
        ``station, date, obs, fold`` and one column of out-of-fold predictions per model.
    cv : str
        The scheme (``"site-time"``, ``"site"`` or ``"knndm"``).
    splitter : str
        How the folds were made.
    n_folds : int
        Folds that predicted rows (station groups × periods for ``"site-time"``).
    params : dict
        Trees and parameters of every candidate, and the scheme's settings.
    rule : str
        :data:`SELECTION_RULE`.
    comparisons : dict
        Model → :class:`smengine.evaluate.PairedComparison` (ubRMSE) against the chosen model.
    """

    chosen: str
    scores: pd.DataFrame
    predictions: pd.DataFrame
    cv: str
    splitter: str
    n_folds: int
    params: dict[str, Any] = field(default_factory=dict)
    rule: str = SELECTION_RULE
    comparisons: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary (what :attr:`smengine.model.ModelCard.model_selection` holds)."""
        rows = [{"model": m, **r} for m, r in self.scores.to_dict(orient="index").items()]
        return json_safe(
            {
                "chosen": self.chosen,
                "cv": self.cv,
                "splitter": self.splitter,
                "n_folds": self.n_folds,
                "rule": self.rule,
                "params": self.params,
                "scores": rows,
            }
        )

    def __repr__(self) -> str:
        s = self.scores
        parts = [f"{m} {s.loc[m, 'median_ubRMSE']:.4f}" for m in s.index]
        return (
            f"<ModelSelection {self.cv} CV ({self.n_folds} folds): median site ubRMSE {', '.join(parts)}; "
            f"chose {self.chosen}>"
        )


# ======================================================================================
# folds
# ======================================================================================
def _period_of(dates: np.ndarray, time_blocks: int) -> np.ndarray:
    """Period index of every row: ``time_blocks`` contiguous periods of equal numbers of days."""
    days = np.unique(dates.astype("datetime64[D]"))
    n = min(int(time_blocks), days.size)
    edges = np.array([days[int(round(i * days.size / n))] for i in range(n)])
    return np.searchsorted(edges, dates.astype("datetime64[D]"), side="right") - 1


def _selection_folds(
    cv: str,
    stations: np.ndarray,
    dates: np.ndarray,
    xy: np.ndarray | None,
    time_blocks: int,
    n_splits: int | None,
    random_state: int,
    knndm_domain: npt.ArrayLike | None,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """(train, test) row index pairs of a selection scheme and its description."""
    sites = np.unique(stations)
    if cv == "knndm":
        from smengine.model._train import _knndm

        if sites.size < 3:
            raise ConfigError(f"select_model: kNNDM needs at least 3 stations, got {sites.size}")
        if xy is None:
            raise ConfigError("select_model: cv='knndm' needs x, y columns (grid CRS, m)")
        data = pd.DataFrame({"station": stations, "x": xy[:, 0], "y": xy[:, 1]})
        groups, _, entry = _knndm(data, knndm_domain, n_splits, random_state)
        out = [(np.flatnonzero(groups != g), np.flatnonzero(groups == g)) for g in np.unique(groups)]
        return out, f"kNNDM folds (k={entry['k']}, {entry['method']})"
    k = sites.size if n_splits is None else min(int(n_splits), sites.size)
    station_folds = [te for _, te in GroupKFold(n_splits=k).split(stations, groups=stations)]
    what = "one station" if k == sites.size else f"GroupKFold(n_splits={k}) station group"
    if cv == "site":
        n = stations.size
        return [(np.setdiff1d(np.arange(n), te), te) for te in station_folds], f"leave-{what}-out"
    period = _period_of(dates, time_blocks)
    n_periods = int(period.max()) + 1
    held = np.zeros(stations.size, dtype=bool)
    out = []
    for te_st in station_folds:
        held[:] = False
        held[te_st] = True
        for b in range(n_periods):
            te = np.flatnonzero(held & (period == b))
            tr = np.flatnonzero(~held & (period != b))
            if te.size and tr.size:
                out.append((tr, te))
    return out, f"leave-{what}-and-period-out ({n_periods} periods of equal numbers of days)"


# ======================================================================================
# the comparison on arrays (train(model="auto") calls it inside every outer fold too)
# ======================================================================================
def _compare_models(
    X: np.ndarray,
    y: np.ndarray,
    stations: np.ndarray,
    dates: np.ndarray,
    xy: np.ndarray | None,
    features: Sequence[str],
    *,
    models: Sequence[str],
    cv: str,
    time_blocks: int,
    n_splits: int | None,
    trees: Mapping[str, int],
    params: Mapping[str, Mapping[str, Any]],
    random_state: int,
    n_jobs: int | None,
    knndm_domain: npt.ArrayLike | None = None,
    intervals: bool = True,
    n_boot: int = 1000,
    tick: Callable[[], Any] | None = None,
) -> ModelSelection:
    from smengine.model._train import _fit_model, _median, _per_site, _predict_model

    folds, splitter = _selection_folds(cv, stations, dates, xy, time_blocks, n_splits, random_state, knndm_domain)
    if not folds:
        raise ValidationError(f"select_model: the {cv} CV made no fold (too few stations or days)")
    pred = {m: np.full(y.size, np.nan) for m in models}
    fold_of = np.full(y.size, -1, dtype=np.int64)
    for k, (tr, te) in enumerate(folds):
        fold_of[te] = k
        for m in models:
            meta = (stations[tr], dates[tr])
            est = _fit_model(m, params.get(m, {}), trees[m], random_state, n_jobs, X[tr], y[tr], features, meta=meta)
            pred[m][te] = _predict_model(m, est, X[te], n_jobs)
            if tick is not None:
                tick()
    rows: dict[str, dict[str, Any]] = {}
    for m in models:
        pooled = evaluate(pred[m], y)
        med = _median(_per_site(stations, dates, y, pred[m]))
        rows[m] = {
            "n": pooled.get("n"),
            "R": pooled.get("R"),
            "ubRMSE": pooled.get("ubRMSE"),
            "RMSE": pooled.get("RMSE"),
            "bias": pooled.get("bias"),
            "median_R": med.get("R"),
            "median_ubRMSE": med.get("ubRMSE"),
            "n_stations": int(np.unique(stations[np.isfinite(pred[m])]).size),
        }
    key = {m: (np.inf if rows[m]["median_ubRMSE"] is None else rows[m]["median_ubRMSE"]) for m in models}
    chosen = min(models, key=lambda m: (key[m], list(models).index(m)))
    frame = pd.DataFrame({"station": stations, "date": dates, "obs": y, "fold": fold_of, **pred})
    comparisons: dict[str, Any] = {}
    for m in models:
        extra = {"delta_ubRMSE": np.nan, "ci_low": np.nan, "ci_high": np.nan, "verdict": None}
        extra |= {"delta_R": np.nan, "R_ci_low": np.nan, "R_ci_high": np.nan}
        if intervals and m != chosen:
            from smengine.evaluate import paired_station_ci

            c = paired_station_ci(frame, m, chosen, "obs", metric="ubRMSE", n_boot=n_boot, seed=random_state)
            r = paired_station_ci(frame, m, chosen, "obs", metric="R", n_boot=n_boot, seed=random_state)
            comparisons[m] = c
            extra = {
                "delta_ubRMSE": c.difference,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "verdict": c.verdict,
                "delta_R": r.difference,
                "R_ci_low": r.ci_low,
                "R_ci_high": r.ci_high,
            }
        rows[m].update(extra)
    scores = pd.DataFrame.from_dict(rows, orient="index")
    scores.index.name = "model"
    settings = {
        "time_blocks": int(time_blocks) if cv == "site-time" else None,
        "n_splits": n_splits,
        "random_state": random_state,
        "models": {m: {"n_estimators": int(trees[m]), **dict(params.get(m, {}))} for m in models},
    }
    log.debug("model selection (%s): %s", splitter, {m: key[m] for m in models})
    return ModelSelection(
        chosen, scores, frame, cv, splitter, len(folds), json_safe(settings), SELECTION_RULE, comparisons
    )


def _check_models(models: Sequence[str]) -> tuple[str, ...]:
    from smengine.model._train import MODELS

    if isinstance(models, str):
        models = (models,)
    out = tuple(models)
    bad = [m for m in out if m not in MODELS]
    if bad or not out or len(set(out)) != len(out):
        raise ConfigError(f"models should be distinct names from {list(MODELS)}, got {list(out)}")
    return out


def _check_cv(cv: str, time_blocks: int) -> None:
    if cv not in SELECTION_CV:
        raise ConfigError(f"select_model: cv should be one of {list(SELECTION_CV)}, got {cv!r}")
    if isinstance(time_blocks, bool) or not isinstance(time_blocks, (int, np.integer)) or time_blocks < 2:
        raise ConfigError(f"time_blocks should be an integer >= 2, got {time_blocks!r}")


def _trees_and_params(
    models: Sequence[str],
    n_estimators: int | Mapping[str, int] | None,
    model_params: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
    from smengine.model._train import DEFAULT_TREES, _check_int

    if n_estimators is None or isinstance(n_estimators, Mapping):
        given = dict(n_estimators or {})
        unknown = sorted(set(given) - set(models))
        if unknown:
            raise ConfigError(f"n_estimators names model(s) {unknown} not among {list(models)}")
        trees = {m: _check_int(f"n_estimators[{m!r}]", given.get(m, DEFAULT_TREES[m]), 1) for m in models}
    else:
        n = _check_int("n_estimators", n_estimators, 1)
        trees = {m: n for m in models}
    mp = dict(model_params or {})
    unknown = sorted(set(mp) - set(models))
    if unknown:
        raise ConfigError(f"model_params names model(s) {unknown} not among {list(models)}")
    params: dict[str, dict[str, Any]] = {}
    for m in models:
        p = dict(mp.get(m) or {})
        if m == "forest":
            p = {"max_features": 1 / 3, "min_samples_leaf": 5, **p}
        params[m] = p
    return trees, params


# ======================================================================================
# select_model
# ======================================================================================
def select_model(
    table: pd.DataFrame,
    features: Sequence[str] | None = None,
    target: str = "target",
    *,
    models: Sequence[str] | None = None,
    cv: str = "site-time",
    time_blocks: int = 4,
    n_splits: int | None = 5,
    n_estimators: int | Mapping[str, int] | None = None,
    model_params: Mapping[str, Mapping[str, Any]] | None = None,
    random_state: int = 0,
    n_jobs: int | None = -1,
    knndm_domain: npt.ArrayLike | None = None,
    target_range: tuple[float, float] | None = (0.0, 1.0),
    n_boot: int = 1000,
    progress: bool | None = None,
) -> ModelSelection:
    r"""Score the models on the training rows by spatio-temporal CV and choose one.

    Every candidate is fitted and predicted on the same folds (see the module docs: with
    ``cv="site-time"`` each station group × period is predicted by a model fitted on the other
    stations outside the period), the pooled and per-station skill of the out-of-fold
    predictions is computed, and the model with the lowest **median per-station ubRMSE** is
    chosen (ties: the first in ``models``). Every other candidate gets paired intervals against
    the chosen one (:func:`smengine.evaluate.paired_station_ci`, ubRMSE and R): the mean over
    stations of its per-station difference with a 95 % two-stage block-bootstrap interval.

    Give it training rows only. Run inside an outer CV fold (as ``train(model="auto")`` does
    in every fold of its CV, and :mod:`smengine.experiments` per held-out station), the
    selection never sees the held-out stations, so their scores are an honest (nested) estimate
    of the selected model.

    Parameters
    ----------
    table : pandas.DataFrame
        A training table (:func:`smengine.features.training_table`): ``station``, ``date``, the
        target, the features (and ``x``, ``y`` for ``cv="knndm"``). Incomplete rows are dropped
        as by :func:`smengine.model.train`.
    features : sequence of str, optional
        Feature columns (default ``table.attrs["features"]``).
    target : str, optional
        Target column, m³ m⁻³ (default ``"target"``).
    models : sequence of str, optional
        Candidates, from :data:`~smengine.model.MODELS` (default all three).
    cv : {"site-time", "site", "knndm"}, optional
        The selection's CV (default ``"site-time"``).
    time_blocks : int, optional
        Periods of ``cv="site-time"`` (default 4).
    n_splits : int or None, optional
        Station groups (``GroupKFold``; default 5; None: one station per group), or the k of
        kNNDM.
    n_estimators : int or mapping of str → int, optional
        Trees of every candidate, or per candidate (default
        :data:`~smengine.model.DEFAULT_TREES`: 500 for the forest, 200 boosting rounds).
    model_params : mapping of str → mapping, optional
        Per candidate, its parameters: the forest's ``RandomForestRegressor`` parameters
        (default ``max_features`` 1/3, ``min_samples_leaf`` 5), LightGBM parameters for
        ``"boosting"``, and for ``"hybrid"`` LightGBM's plus ``base_features`` and ``alpha``.
        No hyper-parameter search is run: the models are compared as configured.
    random_state : int, optional
        Seed of every fit and of the bootstrap (default 0).
    n_jobs : int or None, optional
        Threads per fit (default -1: all cores); results do not depend on it.
    knndm_domain : array_like, shape (m, 2), optional
        Prediction points for ``cv="knndm"`` (as :func:`smengine.model.train`).
    target_range : (float, float) or None, optional
        Plausible target values, m³ m⁻³.
    n_boot : int, optional
        Bootstrap resamples of the intervals (default 1000).
    progress : bool or None, optional
        tqdm progress over the fits (None: on a terminal only).

    Returns
    -------
    ModelSelection

    Raises
    ------
    ConfigError
        Unknown models or scheme, bad counts, fewer than 2 stations (3 for kNNDM), missing
        columns, lightgbm missing for ``"boosting"``/``"hybrid"``.
    ValidationError
        No complete rows.

    Examples
    --------
    >>> sel = select_model(table, cv="site-time", time_blocks=4)   # doctest: +SKIP
    >>> sel.chosen, sel.scores[["median_ubRMSE", "delta_ubRMSE", "ci_low", "ci_high"]]  # doctest: +SKIP
    """
    from smengine.model._train import MODELS, _check_int, _prepare, _progress

    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"select_model: table should be a pandas DataFrame, got {type(table).__name__}")
    models = _check_models(MODELS if models is None else models)
    _check_cv(cv, time_blocks)
    random_state = _check_int("random_state", random_state, 0)
    n_boot = _check_int("n_boot", n_boot, 10)
    if n_splits is not None:
        n_splits = _check_int("n_splits", n_splits, 2)
    trees, params = _trees_and_params(models, n_estimators, model_params)
    features, X, y, data, _ = _prepare(table, features, target, cv == "knndm", target_range, "select_model")
    stations = data["station"].to_numpy(dtype=object)
    n_sites = np.unique(stations).size
    if n_sites < 2:
        raise ConfigError(f"select_model: needs at least 2 stations, got {n_sites}")
    xy = data[["x", "y"]].to_numpy(np.float64) if cv == "knndm" else None
    log.info("model selection among %s by %s CV: %d rows, %d stations", list(models), cv, y.size, n_sites)
    n_folds_max = (n_sites if n_splits is None else min(n_splits, n_sites)) * (time_blocks if cv == "site-time" else 1)
    bar = _progress(progress, n_folds_max * len(models))
    try:
        out = _compare_models(
            X,
            y,
            stations,
            data["date"].to_numpy(),
            xy,
            features,
            models=models,
            cv=cv,
            time_blocks=time_blocks,
            n_splits=n_splits,
            trees=trees,
            params=params,
            random_state=random_state,
            n_jobs=n_jobs,
            knndm_domain=knndm_domain,
            n_boot=n_boot,
            tick=bar.update,
        )
    finally:
        bar.close()
    log.info("%r", out)
    return out
