"""The experiments' report: run them, write report.md, tables and plots."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from smengine._io import atomic_write
from smengine.errors import ConfigError
from smengine.experiments._data import (
    COVARIATE_SWI_MAX_GAP,
    DEFAULT_MODELS,
    DEFAULT_T,
    EXPERIMENTS,
    METHODS,
    PathLike,
    read_daily_precipitation,
    select_features,
    station_table,
)
from smengine.experiments._run import (
    CALENDAR_FEATURES,
    ExperimentResult,
    _complete,
    calendar_effect,
    knndm_cv,
    leave_site_out,
    station_xy,
    temporal_split,
)
from smengine.stations import StationSet


# ======================================================================================
# report
# ======================================================================================
@dataclass
class ExperimentsReport:
    """What :func:`run_experiments` made: the results and the files written."""

    results: dict[str, ExperimentResult]
    tables: dict[str, pd.DataFrame]
    report: Path
    files: list[Path]
    #: The day-of-year study (:func:`calendar_effect`): the spatio-temporal experiment without the
    #: calendar features and each model's paired comparison with against without.
    calendar: dict[str, Any] = field(default_factory=dict)


def _default_data_dir() -> Path:
    env = os.environ.get("SMENGINE_DATA")
    cands = [Path(env)] if env else []
    cands += [Path.cwd().parent / "shared" / "data", Path(__file__).resolve().parents[3] / "shared" / "data"]
    for c in cands:
        if c.is_dir():
            return c
    raise ConfigError("real data not found: pass data_dir / --data, or set SMENGINE_DATA")


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{nd}f}"


def _markdown_scores(res: ExperimentResult) -> str:
    methods = [m for m in METHODS if m in set(res.scores["method"])]
    head = "| station | " + " | ".join(f"{m} n | {m} R | {m} ubRMSE | {m} bias | {m} KGE" for m in methods) + " |"
    sep = "|---|" + "---:|" * (5 * len(methods))
    per = {m: res.station_scores(m) for m in methods}
    stations = [s for s in per["forest"].index if s != "median"] + ["median"]
    lines = [head, sep]
    for s in stations:
        cells = []
        for m in methods:
            r = per[m].loc[s] if s in per[m].index else pd.Series(dtype=float)
            cells += [
                _fmt(r.get("n"), 0) if s != "median" else "",
                _fmt(r.get("R")),
                _fmt(r.get("ubRMSE"), 4),
                _fmt(r.get("bias"), 4),
                _fmt(r.get("KGE")),
            ]
        name = "**median**" if s == "median" else s
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _listed(label: str, items: Mapping[str, Any], fmt: str = "`{}` ({})") -> str:
    """``label: a (why); b (why).`` for the report."""
    return f"{label}: " + "; ".join(fmt.format(k, v) for k, v in items.items()) + "."


def _markdown_medians(res: ExperimentResult) -> str:
    m = res.medians()
    lines = ["| method | stations | R | ubRMSE | bias | KGE |", "|---|---:|---:|---:|---:|---:|"]
    for meth, r in m.iterrows():
        per = res.station_scores(str(meth)).drop(index="median", errors="ignore")
        k = int(np.isfinite(per["ubRMSE"]).sum())
        lines.append(
            f"| {meth} | {k} | {_fmt(r['R'])} | {_fmt(r['ubRMSE'], 4)} | {_fmt(r['bias'], 4)} | {_fmt(r['KGE'])} |"
        )
    return "\n".join(lines)


#: What each experiment measures, and whether a product user meets it (the honest split).
SPLIT_MEANING = {
    "temporal": "a known place in an unseen period (optimistic for a map: the station was trained on)",
    "leave-site-out": "a new place on days the training stations saw (optimistic: neighbours share the weather)",
    "leave-site-out-spatiotemporal": "a new place on new days: what a product user meets",
    "knndm": "new places as far from the training stations as the prediction domain is, on new days",
}


def _pair_name(m: str) -> str:
    return {"mean": "training mean", "tdr": "TDR"}.get(m, m)


def _markdown_comparisons(res: ExperimentResult) -> str:
    """One row per paired comparison: verdict, mean per-station difference, interval, wins/ties/losses."""
    lines = [
        "| A vs B | metric | verdict (A) | mean per-station Δ = A − B | 95 % interval | wins | ties | losses "
        "| stations |",
        "|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for c in res.comparisons:
        k = c.counts
        ci = f"{c.ci_low:+.4f} … {c.ci_high:+.4f}" if np.isfinite(c.ci_low) and np.isfinite(c.ci_high) else "–"
        lines.append(
            f"| {c.a} vs {_pair_name(c.b)} | {'|bias|' if c.metric == 'bias' else c.metric} | **{c.verdict}** | "
            f"{c.difference:+.4f} | {ci} | {k['win']} | {k['tie']} | {k['loss']} | {c.n_stations} |"
        )
    return "\n".join(lines)


def _markdown_outcomes(res: ExperimentResult, metric: str = "ubRMSE") -> str:
    """Per station: each comparison's difference on ``metric`` with its interval and outcome."""
    comps = [c for c in res.comparisons if c.metric == metric]
    if not comps:
        return ""
    stations = sorted({s for c in comps for s in c.per_station.index}, key=str)
    head = "| station | " + " | ".join(f"{c.a} − {_pair_name(c.b)}: Δ{metric} (95 % interval)" for c in comps) + " |"
    lines = [head, "|---|" + "---|" * len(comps)]
    for s in stations:
        cells = []
        for c in comps:
            if s not in c.per_station.index:
                cells.append("–")
                continue
            r = c.per_station.loc[s]
            ci = (
                f"{r['ci_low']:+.4f} … {r['ci_high']:+.4f}"
                if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"])
                else "no interval"
            )
            cells.append(f"{r['difference']:+.4f} ({ci}) **{r['outcome']}**")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict(res: ExperimentResult) -> str:
    """The experiment's verdict, from the paired comparisons on ubRMSE (never from medians)."""
    parts = []
    for b in ("linear", "mean", "tdr"):
        c = res.comparison("forest", b, "ubRMSE")
        if c is not None:
            parts.append(c.sentence({b: _pair_name(b)}))
    if not parts:
        return "no comparison could be made (no station has a forest score and a baseline score on the same days)."
    return " ".join(parts)


def _headline(results: Mapping[str, ExperimentResult]) -> list[str]:
    """Which number to believe: every split side by side, the honest one marked."""
    L = [
        "## Which number to believe",
        "",
        "Every split answers a different question; a map user meets **new places on new days**, which only the "
        "spatio-temporal leave-site-out and the kNNDM split measure (kNNDM also matches the held-out distances to "
        "the map's). The other splits are shown beside them because they are optimistic, never alone. Verdicts are "
        "paired comparisons on ubRMSE with 95 % intervals over stations and 30-day blocks: **beats** only when the "
        "interval of the mean per-station difference excludes 0.",
        "",
        "| split | what it measures | forest median R | forest vs linear | forest vs training mean |",
        "|---|---|---:|---|---|",
    ]
    for e, res in results.items():
        med = res.medians()
        r = med.loc["forest", "R"] if "forest" in med.index else float("nan")
        cells = []
        for b in ("linear", "mean"):
            c = res.comparison("forest", b, "ubRMSE")
            cells.append("–" if c is None else f"**{c.verdict}** {c.interval()}; {c.wtl()}")
        L.append(f"| {e} | {SPLIT_MEANING.get(e, e)} | {_fmt(r)} | {cells[0]} | {cells[1]} |")
    if "leave-site-out-spatiotemporal" not in results:
        L += ["", "The spatio-temporal split was not run here: the table holds only optimistic splits."]
    L.append("")
    return L


def _plot_temporal(res: ExperimentResult, table: pd.DataFrame, path: Path) -> Path:
    from smengine.evaluate import _plt, _save

    plt = _plt()
    sites = sorted(res.predictions["station"].unique())
    fig, axes = plt.subplots(len(sites), 1, figsize=(10, 3.2 * len(sites)), squeeze=False)
    for ax, sid in zip(axes[:, 0], sites, strict=True):
        split = pd.Timestamp(res.params["split_dates"][sid])
        # on a daily calendar, so gaps show as gaps
        obs = table[table["station"] == sid].set_index("date")["target"].asfreq("D")
        ax.plot(obs.index, obs.to_numpy(), color="k", lw=1.0, label="CRNS θ")
        p = res.predictions[res.predictions["station"] == sid].set_index("date").asfreq("D")
        for m, c in (("forest", "tab:green"), ("linear", "tab:blue"), ("mean", "tab:gray"), ("tdr", "tab:orange")):
            if p[m].notna().any():
                ax.plot(p.index, p[m].to_numpy(), lw=0.9, color=c, label=m)
        ax.axvline(split, color="r", ls="--", lw=1)
        ax.set_ylabel("θ (m³ m⁻³)")
        ax.set_title(f"{sid}: trained before {split:%Y-%m-%d} (red), tested after")
        ax.legend(loc="upper right", ncol=5, fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, path)


def _plot_lso(res: ExperimentResult, path: Path) -> Path:
    from smengine.evaluate import _plt, _save

    plt = _plt()
    methods = [m for m in METHODS if m in set(res.scores["method"])]
    sites = [s for s in res.station_scores("forest").index if s != "median"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [2.2, 1]})
    w = 0.8 / len(methods)
    x = np.arange(len(sites))
    for i, m in enumerate(methods):
        s = res.station_scores(m).reindex(sites)["ubRMSE"]
        a1.bar(x + i * w, s.to_numpy(), w, label=f"{m} (median {_fmt(res.medians().loc[m, 'ubRMSE'], 3)})")
    a1.set_xticks(x + w * (len(methods) - 1) / 2, sites)
    a1.set_ylabel("ubRMSE (m³ m⁻³)")
    a1.set_title("leave-site-out: ubRMSE per held-out station")
    a1.legend(fontsize=8)
    p = res.predictions.dropna(subset=["forest"])
    a2.plot(p["obs"], p["forest"], ".", ms=2, alpha=0.4, label="forest")
    lo, hi = float(p[["obs", "forest"]].min().min()), float(p[["obs", "forest"]].max().max())
    a2.plot([lo, hi], [lo, hi], "k-", lw=0.8)
    a2.set_xlabel("CRNS θ (m³ m⁻³)")
    a2.set_ylabel("forest (m³ m⁻³)")
    a2.set_title("held-out station-days")
    return _save(fig, path)


def _plot_knndm_experiment(res: ExperimentResult, path: Path) -> Path:
    """G functions of the kNNDM experiment, with leave-site-out's CV distances beside them."""
    from smengine.evaluate import plot_knndm

    kr = res.params["knndm_result"]
    lso = kr.cv_distances(np.arange(kr.folds.size))
    return plot_knndm(kr, path, others={"leave-site-out": lso}, title="kNNDM folds of the stations")


def _load_default(data_dir: Path, which: str) -> tuple[StationSet, pd.DataFrame | None]:
    from smengine import stations as st

    if which == "temporal":
        return st.read_fuerstensee(data_dir / "crns" / "neptoon_examples"), None
    root = data_dir / "crns" / "roaring_fork_co_usgs"
    ss = st.read_roaring_fork(root)
    return ss, read_daily_precipitation(root / "DailyPRISM_Ppt.csv", ss)


def run_experiments(
    out_dir: PathLike,
    data_dir: PathLike | None = None,
    *,
    experiments: Sequence[str] = EXPERIMENTS,
    stations: StationSet | None = None,
    precipitation: pd.DataFrame | None = None,
    irrigation: pd.DataFrame | None = None,
    features: Sequence[str] | None = None,
    exclude_features: Sequence[str] = (),
    split_date: str | None = None,
    train_years: float = 2.4,
    domain: pd.DataFrame | None = None,
    knndm_k: int = 5,
    covariates: pd.DataFrame | None = None,
    covariate_units: Mapping[str, str] | None = None,
    extras: bool = True,
    swi_of: Sequence[str] = (),
    swi_max_gap: float | None = COVARIATE_SWI_MAX_GAP,
    T: Sequence[float] = DEFAULT_T,
    n_estimators: int = 500,
    search: bool = False,
    random_state: int = 0,
    n_jobs: int | None = -1,
    plots: bool = True,
    models: Sequence[str] = DEFAULT_MODELS,
    select: bool = False,
    water_balance: bool | Mapping[str, Any] = True,
    calendar_study: bool = True,
    api: Sequence[float] = (),
) -> ExperimentsReport:
    """Run the station experiments and write ``report.md``, CSV tables and PNGs into ``out_dir``.

    Without ``stations``: the temporal split at Fürstensee (COSMOS-Europe FSC001, station
    gauge precipitation; ``<data>/crns/neptoon_examples``) and leave-site-out over the 15
    Roaring Fork stations (PRISM precipitation; ``<data>/crns/roaring_fork_co_usgs``).
    With ``stations`` (any reader's :class:`StationSet`), every requested experiment runs on
    that set (``precipitation`` optionally overrides gauges).

    Parameters
    ----------
    out_dir : path
    data_dir : path, optional
        Real data root (default ``$SMENGINE_DATA`` or ``../shared/data``); unused with
        ``stations``.
    experiments : sequence of {"temporal", "leave-site-out", "leave-site-out-spatiotemporal", "knndm"}
        Default all four: the spatio-temporal flavour (:func:`leave_site_out` with
        ``spatiotemporal=True``) beside plain leave-site-out, which neighbours' shared
        weather flatters, and kNNDM folds (:func:`knndm_cv`, spatio-temporal).
    stations, precipitation, irrigation : optional
        A station set of your own, its daily precipitation and irrigation (see
        :func:`station_table`, :func:`read_daily_irrigation`).
    features, exclude_features : optional
        Feature selection (:func:`select_features`): use exactly ``features`` (default all
        that :func:`station_table` could build), then leave out ``exclude_features``.
    split_date, train_years : optional
        Temporal split (see :func:`temporal_split`).
    domain : DataFrame, optional
        The kNNDM experiment's prediction domain: ``lat``, ``lon`` columns (degrees), e.g. the
        pixel centres of the region to be mapped. Default: the stations' convex hull.
    knndm_k : int, optional
        kNNDM folds (default 5).
    covariates, covariate_units, extras, swi_of, swi_max_gap : optional
        Station covariates of your own (see :func:`station_table`): a daily table
        (:func:`read_covariates`), their units, whether the station files' numeric extras are
        features, the columns whose SWI is a feature and the longest carried gap (days).
    T : sequence of float
        Antecedent-precipitation times, days.
    n_estimators, search, random_state, n_jobs
        Forest settings (:func:`smengine.model.train`); deterministic for a seed.
    plots : bool
        Write the PNGs (needs matplotlib).
    models : sequence of {"forest", "boosting", "hybrid"}
        Tree models fitted in every fold beside the linear model and the mean (default
        :data:`DEFAULT_MODELS`).
    select : bool
        Also the ``selected`` model: in every fold of the station-held-out experiments the
        candidate (``models`` and linear) with the lowest median per-station ubRMSE under a
        spatio-temporal CV *inside* the fold's training stations (nested; it multiplies the
        cost by about 8). Default False.
    water_balance : bool or mapping
        The station tables' soil water balance features (see :func:`station_table`).
    api : sequence of float
        Decay factors of antecedent precipitation index features (see :func:`station_table`).
    calendar_study : bool
        Run the spatio-temporal leave-site-out again without the day of year and compare each
        model with and without it (:func:`calendar_effect`; default True): the day of year is a
        choice, kept only where it carries the season rather than the training dates.

    Files
    -----
    ``report.md``; per experiment ``<name>_scores.csv`` (long: method, station, n, R,
    ubRMSE, bias, KGE), ``<name>_predictions.csv``, ``<name>.png``; ``summary.json``.
    """
    exps = tuple(dict.fromkeys(experiments))
    bad = [e for e in exps if e not in EXPERIMENTS]
    if bad or not exps:
        raise ConfigError(f"unknown experiment(s) {bad or exps}; choose from {', '.join(EXPERIMENTS)}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    root = None if stations is not None else (Path(data_dir) if data_dir is not None else _default_data_dir())
    results: dict[str, ExperimentResult] = {}
    tables: dict[str, pd.DataFrame] = {}
    files: list[Path] = []
    sources: dict[str, str] = {}
    for e in exps:
        irr = None
        if stations is not None:
            ss, pr, irr, src = stations, precipitation, irrigation, "given station set"
        else:
            assert root is not None
            ss, pr = _load_default(root, "temporal" if e == "temporal" else "leave-site-out")
            src = (
                "COSMOS-Europe FSC001 Fürstensee (neptoon example, raw counts → θ), station gauge"
                if e == "temporal"
                else "USGS Roaring Fork, 15 stations (raw counts → θ), PRISM precipitation"
            )
        table = station_table(
            ss,
            precipitation=pr,
            T=T,
            irrigation=irr,
            covariates=covariates,
            covariate_units=covariate_units,
            extras=extras,
            swi_of=swi_of,
            swi_max_gap=swi_max_gap,
            water_balance=water_balance,
            api=api,
        )
        if features is not None or exclude_features:
            table = select_features(table, features, exclude=exclude_features)
        tables[e] = table
        sources[e] = src
        kw: dict[str, Any] = {
            "n_estimators": n_estimators,
            "search": search,
            "random_state": random_state,
            "n_jobs": n_jobs,
            "models": tuple(models),
            "select": select and e != "temporal",
        }
        if e == "temporal":
            res = temporal_split(table, split_date=split_date, train_years=train_years, **kw)
        elif e == "knndm":
            res = knndm_cv(table, station_xy(ss), domain=domain, k=knndm_k, **kw)
        else:
            res = leave_site_out(table, spatiotemporal=e == "leave-site-out-spatiotemporal", **kw)
        results[e] = res
        stem = e.replace("-", "_")
        for name, df in ((f"{stem}_scores.csv", res.scores), (f"{stem}_predictions.csv", res.predictions)):
            atomic_write(out / name, df.to_csv(index=False, float_format="%.6g").encode())
            files.append(out / name)
        if plots:
            files.append(
                _plot_temporal(res, table, out / f"{stem}.png")
                if e == "temporal"
                else _plot_lso(res, out / f"{stem}.png")
            )
            if e == "knndm":
                files.append(_plot_knndm_experiment(res, out / "knndm_gfunction.png"))
    calendar: dict[str, Any] = {}
    st = "leave-site-out-spatiotemporal"
    if calendar_study and st in results and set(CALENDAR_FEATURES) & set(results[st].features):
        nocal = select_features(tables[st], results[st].features, exclude=list(CALENDAR_FEATURES))
        kw["select"] = False
        res_nc = leave_site_out(nocal, spatiotemporal=True, **kw)
        calendar = {"without": res_nc, "comparisons": calendar_effect(results[st], res_nc)}
        atomic_write(out / "calendar_study_scores.csv", res_nc.scores.to_csv(index=False, float_format="%.6g").encode())
        files.append(out / "calendar_study_scores.csv")
    rep = _report(results, tables, sources, plots, calendar)
    atomic_write(out / "report.md", rep.encode())
    summary = {
        e: {
            "medians": {
                m: {k: (None if not np.isfinite(v) else float(v)) for k, v in r.items()}
                for m, r in res.medians().iterrows()
            },
            "forest_beats": res.forest_beats(),
            "comparisons": [c.to_dict() for c in res.comparisons],
            "params": {k: v for k, v in res.params.items() if k != "knndm_result"},
            "features": res.features,
        }
        for e, res in results.items()
    }
    atomic_write(out / "summary.json", json.dumps(summary, indent=1, default=str).encode())
    files += [out / "report.md", out / "summary.json"]
    return ExperimentsReport(results, tables, out / "report.md", files, calendar)


def _markdown_calendar(calendar: Mapping[str, Any], with_res: ExperimentResult) -> list[str]:
    """The day-of-year study: medians with and without, and each model's paired verdict."""
    res_nc: ExperimentResult = calendar["without"]
    mw, mo = with_res.medians(), res_nc.medians()
    L = [
        "## Day of year: a choice, not a default",
        "",
        "The spatio-temporal leave-site-out run again without `doy_sin`/`doy_cos`; each model with the day of year "
        "(A) against without (B) on the same station-days. Where A beats B the day of year carries the season to "
        "new places and days; where it ties or loses it identifies the training dates and is better left out.",
        "",
        "| model | median R with | without | median ubRMSE with | without | Δ ubRMSE (95 % interval) | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in calendar["comparisons"]:
        if c.metric != "ubRMSE":
            continue
        m = c.a.split(" ")[0]

        def med(t: pd.DataFrame, k: str, nd: int, m: str = m) -> str:
            return _fmt(t.loc[m, k], nd) if m in t.index else "–"

        L.append(
            f"| {m} | {med(mw, 'R', 3)} | {med(mo, 'R', 3)} | {med(mw, 'ubRMSE', 4)} | {med(mo, 'ubRMSE', 4)} | "
            f"{c.difference:+.4f} ({c.ci_low:+.4f} … {c.ci_high:+.4f}) | {c.verdict} |"
        )
    return [*L, ""]


def _report(
    results: Mapping[str, ExperimentResult],
    tables: Mapping[str, pd.DataFrame],
    sources: Mapping[str, str],
    plots: bool,
    calendar: Mapping[str, Any] | None = None,
) -> str:
    import smengine
    from smengine._glossary import glossary

    L = [
        "# Real-data emulation at CRNS stations",
        "",
        (
            f"smengine {smengine.__version__}. Target: daily CRNS θ (UTC days, ≥ 18 valid hours). "
            "Methods scored on the "
            "same test days (finite CRNS θ and a forest prediction): **forest** (`smengine.model.train`, SCIENCE §4.3 "
            "defaults), **linear** (OLS on standardised features), **mean** (training-row mean), **tdr** (TDR profile "
            "weighted with the vertical footprint at that day's D86; a measurement, not a model). Scores per station "
            "(≥ 30 days) with `smengine.evaluate.site_scores`; bias = prediction − CRNS, m³ m⁻³."
        ),
        "",
        *glossary(
            (
                "scores",
                "pooled",
                "baselines",
                "temporal_split",
                "grouped_cv",
                "spatiotemporal",
                "nested",
                "d86",
                "paired",
                "station_bootstrap",
            )
        ),
    ]
    L += _headline(results)
    for e, res in results.items():
        t = tables[e]
        title = {
            "temporal": "Temporal split per station",
            "leave-site-out": "Leave-site-out",
            "leave-site-out-spatiotemporal": "Leave-site-out, spatio-temporal (the held-out site's dates removed "
            "from training too)",
            "knndm": "kNNDM cross-validation, spatio-temporal (stations grouped so that held-out stations are as "
            "far from the training stations as the prediction domain is)",
        }[e]
        L += [
            f"## {title} ({e})",
            "",
            (
                f"Data: {sources[e]}; {t['station'].nunique()} station(s), "
                f"{len(t)} station-days {t['date'].min():%Y-%m-%d} … {t['date'].max():%Y-%m-%d}."
            ),
            "",
        ]
        L.append(f"Features ({len(res.features)}): {', '.join(f'`{f}`' for f in res.features)}.")
        dropped = t.attrs.get("dropped_features") or {}
        if dropped:
            L.append("Left out: " + "; ".join(f"`{k}` ({v})" for k, v in dropped.items()) + ".")
        cols = t.attrs.get("columns") or {}
        used = [f"`{k}` ({v['units']}; {v['source']})" for k, v in cols.items() if v.get("used")]
        unused = [f"`{k}` ({v.get('why', 'not selected')})" for k, v in cols.items() if not v.get("used")]
        if used:
            L.append("Covariates from the station files and tables: " + "; ".join(used) + ".")
        if unused:
            L.append("Station and table columns not used as covariates: " + "; ".join(unused) + ".")
        if t.attrs.get("excluded_features"):
            L.append("Left out by choice: " + ", ".join(f"`{k}`" for k in t.attrs["excluded_features"]) + ".")
        if t.attrs.get("irrigation_source"):
            L.append(_listed("Irrigation (a water input beside precipitation)", t.attrs["irrigation_source"], "{} {}"))
        f0 = res.folds[0]
        if e == "temporal":
            L.append(
                f"Split: each station trains on its days before its own split ({res.params['split_date']}); "
                f"train {f0['train_start']} … {f0['train_end']} ({f0['n_train']} complete days), "
                f"test {f0['test_start']} … {f0['test_end']} ({f0['n_test']} days scored)."
            )
            if res.params.get("excluded"):
                L.append(_listed("Stations left out", res.params["excluded"]))
        elif e == "knndm":
            kn = res.params["knndm"]
            L.append(
                f"{kn['k']} kNNDM folds of stations ({kn['method']}"
                + (f", {kn['n_clusters']} clusters merged" if kn["n_clusters"] else "")
                + f") matched to {kn['n_domain_points']} prediction points ({kn['domain']}): Wasserstein W between "
                f"the held-out-to-training and prediction-to-station nearest-neighbour distance distributions "
                f"{kn['W_m'] / 1000:.2f} km, against {kn['W_leave_site_out_m'] / 1000:.2f} km for leave-site-out "
                f"folds (lower: closer to the prediction situation). Each fold predicted in each of "
                f"{res.params['time_blocks']} periods by forests trained on the other folds outside that period "
                f"({len(res.folds)} fits). Folds: "
                + "; ".join(
                    f"{g}: {', '.join(s for s, v in kn['folds'].items() if v == g)}"
                    for g in sorted(set(kn["folds"].values()))
                )
                + "."
            )
            if plots:
                L.append("![kNNDM G functions](knndm_gfunction.png)")
        elif res.params.get("spatiotemporal"):
            L.append(
                f"{len(res.folds)} folds: each station held out in each of {res.params['time_blocks']} periods "
                "and predicted by a forest trained on the other stations outside that period "
                "(leave-location-and-time-out, Meyer et al. 2018); training rows per fold "
                f"{min(f['n_train'] for f in res.folds)}–{max(f['n_train'] for f in res.folds)}."
            )
        else:
            L.append(
                f"{len(res.folds)} folds, one held-out station each; training rows per fold "
                f"{min(f['n_train'] for f in res.folds)}–{max(f['n_train'] for f in res.folds)}."
            )
        L.append(
            "Models: "
            + "; ".join(f"{m} {f0[m]}" for m in res.params.get("models", ("forest",)) if m in f0)
            + f"; seed {res.params['random_state']}, search {res.params['search']}."
        )
        if res.params.get("unscored"):
            L.append(_listed("Not in the medians (too few scored days)", res.params["unscored"]))
        n_inc = int((~_complete(t, res.features)).sum())
        if n_inc:
            L.append(
                f"{n_inc} station-days have a missing feature (e.g. no precipitation record) and are neither "
                "trained on nor scored."
            )
        depths = t.attrs.get("tdr_depths") or {}
        if depths:
            L.append(
                "TDR profile depths (cm): "
                + "; ".join(f"{k} {v}" for k, v in depths.items())
                + "; stations with fewer than two depths have no TDR baseline."
            )
        L += [
            "",
            "Paired comparisons (A against B on the same station-days; Δ = metric(A) − metric(B), |bias| for the "
            "bias; a station is a **win** for A when its own interval lies on A's better side of 0, a **loss** when "
            "it lies on B's, a **tie** otherwise; the interval of the mean resamples stations and their 30-day "
            "blocks):",
            "",
            _markdown_comparisons(res),
            "",
            "Per station, ubRMSE (m³ m⁻³; negative Δ: A closer to CRNS):",
            "",
            _markdown_outcomes(res),
            "",
            "Medians over stations, for orientation (no verdict is drawn from them; `stations`: how many have a "
            "score for that method; `tdr` only where a profile exists):",
            "",
            _markdown_medians(res),
            "",
            "Scores per station:",
            "",
            _markdown_scores(res),
            "",
        ]
        L += [f"**Verdict:** {_verdict(res)}", ""]
        chosen = [f.get("selected") for f in res.folds if f.get("selected")]
        if chosen:
            counts = pd.Series(chosen).value_counts()
            L += [
                "Nested selection (`selected`): in every fold the candidate with the lowest median per-station "
                "ubRMSE under a spatio-temporal CV inside that fold's training stations; chosen "
                + ", ".join(f"{k} in {v} fold(s)" for k, v in counts.items())
                + ".",
                "",
            ]
        if plots:
            L += [f"![{e}]({e.replace('-', '_')}.png)", ""]
        if e == "leave-site-out-spatiotemporal" and calendar:
            L += _markdown_calendar(calendar, res)
    return "\n".join(L) + "\n"
