"""Model card: what a trained forest is, what it was trained on and how well it validates.

A :class:`ModelCard` is written by :func:`smengine.model.train` and travels with the
forest (and its compiled form). It holds only JSON-safe values (no numpy scalars; NaN and
infinities are stored as ``None``), so ``to_json``/``from_json`` round-trip exactly and two
trainings on the same inputs give equal cards. The creation time is informative only and
takes no part in equality.

References
----------
.. [1] Mitchell, M. et al. (2019). Model cards for model reporting. Proc. FAT* '19, 220–229.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np

from smengine.errors import ConfigError
from smengine.metrics import current_name

__all__ = ["ModelCard", "json_safe"]

#: Card fields added after the first cards were written (older cards load with their defaults).
_OPTIONAL = ("model", "model_selection", "water_balance")

#: The model's name in the markdown title.
_MODEL_TITLE = {
    "forest": "random forest",
    "boosting": "gradient-boosted trees (LightGBM)",
    "hybrid": "hybrid (linear base + LightGBM trees on its residuals)",
}

#: Metric columns shown in the markdown tables: (key in the metrics dict, header).
_METRIC_COLUMNS = ("n", "R", "RMSE", "ubRMSE", "bias", "NSE", "KGE")


def _current_metric_names(d: dict[str, Any]) -> dict[str, Any]:
    """A card dict with metrics saved under earlier names (``RMSD``, ``urmsd`` …) renamed."""

    def rename(m: Any) -> Any:
        return {current_name(k): v for k, v in m.items()} if isinstance(m, Mapping) else m

    d = dict(d)
    if isinstance(d.get("search"), list):
        d["search"] = [rename(c) for c in d["search"]]
    if isinstance(d.get("cv"), Mapping):
        d["cv"] = {
            s: {**c, **{k: rename(c[k]) for k in ("metrics", "site_median") if k in c}} if isinstance(c, Mapping) else c
            for s, c in d["cv"].items()
        }
    if isinstance(d.get("site_metrics"), Mapping):
        d["site_metrics"] = {s: rename(m) for s, m in d["site_metrics"].items()}
    if "oob_metrics" in d:
        d["oob_metrics"] = rename(d["oob_metrics"])
    return d


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` made of JSON types only.

    numpy scalars become Python numbers, arrays and tuples become lists, mapping keys
    become strings, dates become ISO strings and non-finite floats become ``None``.

    Examples
    --------
    >>> json_safe({"a": np.float32(0.5), "b": (1, np.nan), 3: np.int64(2)})
    {'a': 0.5, 'b': [1, None], '3': 2}
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.datetime64):
        return str(obj)
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    raise ConfigError(f"cannot store a {type(obj).__name__} in a model card: {obj!r}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelCard:
    """Description of a trained forest: data, hyper-parameters, validation and provenance.

    All values are JSON-safe (see :func:`json_safe`); undefined metrics are ``None``.

    Parameters
    ----------
    features : list of dict
        One dict per feature in model order: ``name``, ``units`` (e.g. ``"m3 m-3"``),
        ``kind`` (``static``, ``dynamic``, ``coarse``, ``swi``, ``calendar``) and
        ``source``, each ``None`` where unknown.
    target : dict
        ``name`` (the training-table column) and ``units`` (``"m3 m-3"``).
    stations : list of str
        Sorted ids of the stations in the training set.
    period : list of str
        First and last training date, ISO ``YYYY-MM-DD``.
    n_samples : int
        Station-days the forest was fitted on.
    n_dropped : dict
        Rows dropped before fitting: ``total`` and the count per reason (``target``,
        ``station``, ``date`` and ``features``: feature name → rows where it is NaN or
        infinite). A row counts under every reason that applies.
    hyperparameters : dict
        ``RandomForestRegressor`` parameters of the final forest (``n_jobs`` and
        ``verbose`` left out: they do not change the model).
    search : list of dict
        Hyper-parameter candidates in the order tried: ``params``, ``n_estimators`` and
        ``cv`` (scheme) of the search, pooled ``RMSE``, ``ubRMSE``, ``R`` and whether it was
        ``chosen``. Empty without a search.
    cv : dict
        Per grouped-CV scheme (``site``, ``year``, ``block``): ``splitter``, ``n_folds``,
        ``n_groups``, pooled ``metrics`` (:func:`smengine.metrics.evaluate`) and
        ``site_median`` (median over stations of the per-station metrics), or
        ``skipped`` with the reason.
    site_metrics : dict
        Station → :func:`smengine.metrics.evaluate` of its leave-site-out predictions.
    oob_score : float or None
        Out-of-bag R² (``RandomForestRegressor.oob_score_``).
    oob_metrics : dict
        :func:`smengine.metrics.evaluate` of the out-of-bag predictions.
    versions : dict
        Versions of smengine, scikit-learn, numpy, pandas, treelite (``None`` if absent)
        and Python.
    content_hash : str
        :func:`smengine.model._hash.forest_hash` of the fitted forest; for a boosted or hybrid
        model the SHA-256 of LightGBM's model text up to ``end of trees`` (and of the linear base),
        :func:`smengine.model._hybrid.model_hash`.
    created : str, optional
        ISO UTC time of creation (default now); not part of equality.
    model : str, optional
        ``"forest"`` (default, and what cards written before other models were), ``"boosting"``
        (LightGBM gradient-boosted trees) or ``"hybrid"`` (a linear base plus LightGBM trees on
        its residuals, :class:`smengine.model.HybridRegressor`). ``hyperparameters`` holds that
        model's parameters: ``RandomForestRegressor``'s, ``LGBMRegressor``'s, or the hybrid's
        (``base_features``, ``alpha``, ``random_state``, the trees' LightGBM parameters, and its
        fitted ``linear_base``: ``intercept`` and raw-unit ``coef`` per base feature).
    model_selection : dict, optional
        With ``train(model="auto")``: :meth:`smengine.model.ModelSelection.to_dict` of the
        selection among the models on the training rows (scheme, per-model scores with paired
        intervals against the best, the rule and the choice). Empty otherwise.
    water_balance : dict or None, optional
        The parameters of the water-balance features ``wb<depth>`` the model was trained with
        (:meth:`smengine.features.WaterBalanceSpec.get_config`: ``precipitation``,
        ``temperature``, ``sand``/``clay`` or ``texture``, ``organic_matter``, ``depths_mm``,
        ``beta_fraction``, ``pet``), from the training table's spec; the engine makes those
        features from them. None (default, and cards written before): no water balance.

    Examples
    --------
    >>> card = ModelCard(features=[{"name": "ndvi", "units": "1", "kind": "dynamic", "source": None}],
    ...                  target={"name": "target", "units": "m3 m-3"}, stations=["A", "B"],
    ...                  period=["2020-01-01", "2020-12-31"], n_samples=700, n_dropped={"total": 0},
    ...                  hyperparameters={"n_estimators": 500}, search=[], cv={}, site_metrics={},
    ...                  oob_score=0.7, oob_metrics={}, versions={}, content_hash="sha256:0")
    >>> ModelCard.from_json(card.to_json()) == card
    True
    """

    features: list[dict[str, Any]]
    target: dict[str, Any]
    stations: list[str]
    period: list[str]
    n_samples: int
    n_dropped: dict[str, Any]
    hyperparameters: dict[str, Any]
    search: list[dict[str, Any]]
    cv: dict[str, Any]
    site_metrics: dict[str, dict[str, Any]]
    oob_score: float | None
    oob_metrics: dict[str, Any]
    versions: dict[str, Any]
    content_hash: str
    created: str = field(default_factory=_now, compare=False)
    model: str = "forest"
    model_selection: dict[str, Any] = field(default_factory=dict)
    water_balance: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, json_safe(getattr(self, f.name)))
        if not isinstance(self.n_samples, int):
            raise ConfigError(f"ModelCard: n_samples should be an int, got {self.n_samples!r}")
        if len(self.period) != 2:
            raise ConfigError(f"ModelCard: period should be [first, last], got {self.period!r}")

    def __hash__(self) -> int:
        d = self.get_config()
        d.pop("created")
        return hash(json.dumps(d, sort_keys=True))

    # ------------------------------------------------------------------ serialisation
    def get_config(self) -> dict[str, Any]:
        """JSON-safe dict of every field (a deep copy); inverse of :meth:`from_config`."""
        return {f.name: json.loads(json.dumps(getattr(self, f.name))) for f in fields(self)}

    @classmethod
    def from_config(cls, d: Mapping[str, Any]) -> ModelCard:
        """A card from :meth:`get_config` output.

        Metrics saved by earlier versions under pytesmo's names (``RMSD``, ``urmsd``,
        ``BIAS``, ``n_obs``) are read under today's (:data:`smengine.metrics.METRICS`).

        Raises
        ------
        ConfigError
            On unknown or missing keys.
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"ModelCard.from_config: unknown keys {unknown}")
        optional = {"created", *_OPTIONAL}  # fields added later: older cards lack them
        missing = sorted(n for n in names - set(d) if n not in optional)
        if missing:
            raise ConfigError(f"ModelCard.from_config: missing keys {missing}")
        return cls(**_current_metric_names(dict(d)))

    # the earlier spelling, kept working
    to_dict = get_config
    from_dict = from_config

    def to_json(self, indent: int | None = 1) -> str:
        """JSON text of :meth:`get_config` (strict JSON: no NaN)."""
        return json.dumps(self.get_config(), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, s: str) -> ModelCard:
        """Inverse of :meth:`to_json`."""
        return cls.from_config(json.loads(s))

    # ------------------------------------------------------------------ conveniences
    @property
    def feature_names(self) -> list[str]:
        """Feature names in model order."""
        return [f["name"] for f in self.features]

    @property
    def chosen(self) -> dict[str, Any] | None:
        """The search candidate that was chosen (``None`` without a search)."""
        return next((c for c in self.search if c.get("chosen")), None)

    def to_markdown(self) -> str:
        """Human-readable summary: data, features with units, hyper-parameters, search,
        cross-validation, per-site metrics, out-of-bag skill and versions."""
        units = self.target.get("units") or "?"
        nd = self.n_dropped
        reasons = [f"{k} {v}" for k, v in nd.items() if k not in ("total", "features") and v]
        reasons += [f"{k} {v}" for k, v in (nd.get("features") or {}).items() if v]
        out = [
            f"# Model card: {_MODEL_TITLE.get(self.model, self.model)} for `{self.target.get('name')}` ({units})",
            "",
            f"- content hash: `{self.content_hash}`",
            f"- created: {self.created}",
            f"- stations ({len(self.stations)}): {', '.join(self.stations)}",
            f"- period: {self.period[0]} to {self.period[1]}",
            f"- samples: {self.n_samples} station-days; dropped {nd.get('total', 0)}"
            + (f" ({'; '.join(reasons)})" if reasons else ""),
            "",
            "## Features",
            "",
            "| # | name | units | kind | source |",
            "|---|---|---|---|---|",
        ]
        for i, f in enumerate(self.features):
            out.append(
                f"| {i} | {f.get('name')} | {_cell(f.get('units'))} | {_cell(f.get('kind'))} "
                f"| {_cell(f.get('source'))} |"
            )
        out += ["", "## Hyper-parameters", "", "| parameter | value |", "|---|---|"]
        out += [f"| {k} | {_cell(v)} |" for k, v in self.hyperparameters.items()]
        if self.search:
            c0 = self.search[0]
            out += ["", f"## Hyper-parameter search ({c0.get('cv')} CV, {c0.get('n_estimators')} trees)", ""]
            nested = [n for n, c in self.cv.items() if c.get("nested")]
            out += [
                "The search on every station chooses the final forest; its scores are the selection's own "
                "(optimistic), not the model's skill. "
                + (
                    f"The cross-validation below ({', '.join(nested)}) is nested: each fold re-ran this "
                    "search on its own training stations."
                    if nested
                    else "The cross-validation below reuses this choice in every fold (not nested)."
                ),
                "",
            ]
            keys = list(c0["params"])
            out += ["| " + " | ".join([*keys, "RMSE", "ubRMSE", "R", "chosen"]) + " |", "|" + "---|" * (len(keys) + 4)]
            for c in self.search:
                vals = [_cell(c["params"][k]) for k in keys]
                vals += [
                    _num(c.get("RMSE")),
                    _num(c.get("ubRMSE")),
                    _num(c.get("R")),
                    "**yes**" if c.get("chosen") else "",
                ]
                out.append("| " + " | ".join(vals) + " |")
        out += ["", f"## Grouped cross-validation (pooled; metrics in {units} where dimensional)", ""]
        if self.cv:
            heads = list(_METRIC_COLUMNS)
            out += [
                "| scheme | splitter | folds | groups | " + " | ".join(heads) + " | median site R "
                "| median site ubRMSE |",
                "|" + "---|" * (len(heads) + 6),
            ]
            for name, c in self.cv.items():
                if "skipped" in c:
                    out.append(f"| {name} | skipped: {c['skipped']} |" + " |" * (len(heads) + 4))
                    continue
                m, med = c.get("metrics") or {}, c.get("site_median") or {}
                splitter = f"{c.get('splitter')}" + (", nested selection" if c.get("nested") else "")
                out.append(
                    f"| {name} | {splitter} | {c.get('n_folds')} | {c.get('n_groups')} | "
                    + " | ".join(_num(m.get(k)) for k in _METRIC_COLUMNS)
                    + f" | {_num(med.get('R'))} | {_num(med.get('ubRMSE'))} |"
                )
        else:
            out.append("No cross-validation was run.")
        if self.site_metrics:
            out += [
                "",
                "## Per site (leave-site-out predictions)",
                "",
                "| station | " + " | ".join(_METRIC_COLUMNS) + " | anomaly_R |",
                "|" + "---|" * (len(_METRIC_COLUMNS) + 2),
            ]
            for sid, m in self.site_metrics.items():
                out.append(
                    f"| {sid} | "
                    + " | ".join(_num(m.get(k)) for k in _METRIC_COLUMNS)
                    + f" | {_num(m.get('anomaly_R'))} |"
                )
        if self.model_selection:
            out += _selection_markdown(self.model_selection, units)
        om = self.oob_metrics
        oob = (
            f"R² = {_num(self.oob_score)}; RMSE = {_num(om.get('RMSE'))} {units}; R = {_num(om.get('R'))} "
            "(optimistic: neighbouring days of the same station are in the bag)"
            if self.model == "forest"
            else "None: boosted trees are fitted on every row (no bootstrap), so there is no out-of-bag sample."
        )
        out += ["", "## Out-of-bag", "", oob]
        out += ["", "## Versions", ""]
        out += [f"- {k}: {_cell(v)}" for k, v in self.versions.items()]
        return "\n".join(out) + "\n"


def _selection_markdown(sel: Mapping[str, Any], units: str) -> list[str]:
    out = [
        "",
        f"## Model selection ({sel.get('cv')} CV on the training stations)",
        "",
        str(sel.get("rule", "")),
        "",
        "| model | pooled R | pooled ubRMSE | median site R | median site ubRMSE | Δ median ubRMSE vs best "
        f"({units}) | interval | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sel.get("scores") or []:
        ci = (
            f"[{_num(r.get('ci_low'))}, {_num(r.get('ci_high'))}]"
            if r.get("ci_low") is not None or r.get("ci_high") is not None
            else "–"
        )
        out.append(
            f"| {r.get('model')} | {_num(r.get('R'))} | {_num(r.get('ubRMSE'))} | {_num(r.get('median_R'))} "
            f"| {_num(r.get('median_ubRMSE'))} | {_num(r.get('delta_ubRMSE'))} | {ci} "
            f"| {'**yes**' if r.get('model') == sel.get('chosen') else ''} |"
        )
    return out


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v).replace("|", "\\|")


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return f"{float(v):.4f}"
