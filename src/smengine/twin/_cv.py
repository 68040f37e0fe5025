r"""Which cross-validation estimate to believe? Random, grouped-by-station and kNNDM CV against the twin's truth.

A map's accuracy is the error at the places and days it is used, not at the stations. On
the twin world that error is known: the emulator's product against the true 1-km θ_eq at
every pixel without a station. :func:`cv_study` trains the forest on a set of stations and
estimates its error three ways, each a cross-validation over the same station-days with the
same forest settings and k folds:

* **random k-fold** over station-days: a station's other days train the model that
  predicts it (the optimistic split of the literature);
* **grouped by station** (``GroupKFold``): each station is predicted by a forest that never
  saw it (:func:`smengine.model.train` ``cv="site"``);
* **kNNDM** (Linnenbrink et al. 2024): stations grouped so that the distances from each
  held-out station to the nearest training station match the distances from the product's
  pixels to the nearest station (``cv="knndm"``, domain = the pixel centres).

For each it reports the Wasserstein statistic W between its test-to-training distances and
the prediction-to-station distances (:func:`smengine.evaluate.knndm_folds`; lower: closer
to the prediction situation), the CV RMSE against the CRNS observations (what a user can
compute) and against the noise-free footprint θ of the twin (what the CV would say with
perfect sensors), each with a 95 % block-bootstrap interval over station × 30-day blocks,
and the difference to the true off-site RMSE of the product (95 % interval over 5 × 5-pixel
× 30-day blocks; the two bootstraps are independent, so the difference's draws are the
differences of independent draws).

It does this for two station networks of the same world: **all** stations (spread over the
domain like a random sample of it) and a **clustered** network (the stations nearest one
corner, predicting the whole domain), the two constructed cases of the kNNDM paper.

Caveat: the CV scores footprint-scale predictions at the stations, the truth score 1-km
pixel means (sub-pixel averaging removes some random error); the CV-vs-truth gap holds that
difference of support too.

References
----------
.. [1] Linnenbrink, J., Milà, C., Ludwig, M. & Meyer, H. (2024). kNNDM: k-fold nearest
   neighbour distance matching cross-validation for map accuracy estimation. Geosci. Model
   Dev. 17, 5897–5912.
.. [2] Ploton, P. et al. (2020). Spatial validation reveals poor predictive performance of
   large-scale ecological mapping models. Nat. Commun. 11, 4540.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CV_STUDY_SCHEMES", "CVStudy", "cv_study", "cv_study_report", "plot_cv_study"]

log = logging.getLogger(__name__)

#: The CV schemes compared, in report order.
CV_STUDY_SCHEMES = ("random k-fold", "grouped by station", "kNNDM")
#: Bootstrap of the study's intervals: station-day blocks (days), pixel blocks (pixels, days), resamples.
_ST_DAYS, _PX, _PX_DAYS, _N_BOOT = 30, 5, 30, 1000


@dataclass
class CVStudy:
    """What :func:`cv_study` measured.

    Attributes
    ----------
    table : DataFrame
        One row per (network, scheme): ``network``, ``scheme``, ``n_stations``, ``W_km``,
        ``cv_rmse_obs`` (+ ``_lo``/``_hi``), ``cv_rmse_truth`` (+ ``_lo``/``_hi``),
        ``true_rmse`` (+ ``_lo``/``_hi``), ``gap`` = cv_rmse_truth − true_rmse (+ ``_lo``/``_hi``),
        ``reading`` (``"optimistic"``, ``"pessimistic"`` or ``"matches"``: the gap's interval
        below, above or around 0), ``closest`` (True for the scheme with the smallest |gap|);
        ``attrs``: ``k``, ``n_estimators``, ``seed``.
    knndm : dict
        network → :class:`~smengine.evaluate.KNNDM` (for the G-function plot), with the
        random and grouped folds' CV distances in ``others``.
    others : dict
        network → {scheme: CV distances} of the random and grouped folds.
    """

    table: pd.DataFrame
    knndm: dict[str, Any] = field(default_factory=dict)
    others: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _random_folds(n: int, k: int, seed: int) -> np.ndarray:
    """The random k-fold of the rows :func:`smengine.model.train` reports W of (same permutation)."""
    return np.random.default_rng(seed).permutation(n) % k


def _refit_predict(X: np.ndarray, y: np.ndarray, folds: np.ndarray, est: Any, n_jobs: int | None) -> np.ndarray:
    from sklearn.base import clone

    pred = np.full(y.size, np.nan)
    for g in np.unique(folds):
        te = folds == g
        m = clone(est).set_params(n_jobs=n_jobs).fit(X[~te], y[~te])
        pred[te] = m.predict(X[te])
    return pred


def _diff_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    d = (a - b)[np.isfinite(a - b)]
    if not d.size:
        return float("nan"), float("nan")
    lo, hi = np.percentile(d, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def cv_study(
    table: pd.DataFrame,
    features: Sequence[str],
    store: Any,
    truth: np.ndarray,
    station_truth: pd.DataFrame,
    stations: pd.DataFrame,
    *,
    networks: dict[str, Sequence[str]] | None = None,
    k: int = 5,
    n_estimators: int = 100,
    seed: int = 0,
    n_threads: int | None = None,
) -> CVStudy:
    """Random, grouped-by-station and kNNDM CV estimates against the true off-site error (see the module docstring).

    Parameters
    ----------
    table : DataFrame
        The twin's training table (:func:`smengine.features.training_table`: ``station,
        date, target, x, y`` and the features).
    features : sequence of str
        The forest's features.
    store : TileStore
        The twin's tile (the product is predicted over it).
    truth : ndarray, shape (days, Py, Px)
        True 1-km θ_eq on the store's days, m³ m⁻³.
    station_truth : DataFrame
        :meth:`TwinWorld.station_truth`: noise-free footprint θ per station-day (``theta``).
    stations : DataFrame
        :attr:`TwinWorld.stations` (``id``, ``x``, ``y``).
    networks : dict, optional
        Name → station ids. Default: ``"all"`` stations and ``"clustered"``, the 40 % of the
        stations nearest the domain's south-west corner (at least 6).
    k : int, optional
        Folds of every scheme (default 5).
    n_estimators, seed, n_threads
        Forest size, seed of every fit and fold, threads.

    Returns
    -------
    CVStudy
    """
    from smengine.engine import predict
    from smengine.evaluate import domain_points, metric_ci, space_time_blocks, station_time_blocks
    from smengine.model import train
    from smengine.pseudoproxy import station_pixels

    grid = store.grid
    if networks is None:
        d = np.hypot(stations["x"] - grid.xmin, stations["y"] - (grid.ymax - grid.height * grid.resolution))
        n_cl = max(6, int(round(0.4 * len(stations))))
        networks = {"all": list(stations["id"]), "clustered": list(stations["id"].to_numpy()[np.argsort(d)[:n_cl]])}
    domain = domain_points(grid=grid, samplesize=max(1000, grid.width * grid.height))  # every pixel centre
    st_truth = station_truth.assign(date=pd.to_datetime(station_truth["date"]))
    n_jobs = n_threads or -1
    rows, knn, others = [], {}, {}
    for net, ids in networks.items():
        sub = table[table["station"].isin(list(ids))]
        f = train(sub, list(features), cv=("site", "knndm"), search=False, n_estimators=n_estimators, n_splits=k,
                  knndm_domain=domain, random_state=seed, n_jobs=n_jobs, progress=False)  # fmt: skip
        site = f.cv_predictions[f.cv_predictions["scheme"] == "site"].reset_index(drop=True)
        kn = f.cv_predictions[f.cv_predictions["scheme"] == "knndm"].reset_index(drop=True)
        # the rows in train's order (station, date): the random folds are those the card's W is of
        keyed = sub.assign(date=pd.to_datetime(sub["date"])).set_index(["station", "date"])
        X = keyed.loc[list(zip(site["station"], site["date"], strict=True)), list(features)].to_numpy(np.float32)
        y = site["target"].to_numpy(np.float64)
        rand_folds = _random_folds(y.size, int(f.card.cv["knndm"]["k"]), seed)
        preds = {
            "random k-fold": _refit_predict(X, y, rand_folds, f.estimator, n_jobs),
            "grouped by station": site["prediction"].to_numpy(),
            "kNNDM": kn["prediction"].to_numpy(),
        }
        W = {
            "random k-fold": f.card.cv["knndm"]["W_random_rows"],
            "grouped by station": f.card.cv["knndm"]["W_grouped_by_station"],
            "kNNDM": f.card.cv["knndm"]["W"],
        }
        site_folds = site["fold"].to_numpy()
        knn[net] = f.knndm
        others[net] = {
            "random k-fold": f.knndm.cv_distances(rand_folds),
            "grouped by station": f.knndm.cv_distances(site_folds),
        }
        noise_free = (
            site[["station", "date"]]
            .merge(st_truth[["station", "date", "theta"]], on=["station", "date"], how="left")["theta"]
            .to_numpy()
        )
        blocks = station_time_blocks(site["station"], site["date"].to_numpy(), days=_ST_DAYS)
        # the truth: the final forest's product at every pixel-day without a station
        ds = predict(store, f.compile(), n_threads=n_threads, di=False)
        sm = ds["sm"].values.astype(np.float64)
        off = np.ones(sm.shape[1:], bool)
        for r, c in station_pixels(grid, stations.set_index("id").loc[list(ids)]).values():
            off[r, c] = False
        sm_off = np.where(off[None], sm, np.nan)
        true = metric_ci(sm_off, truth, space_time_blocks(sm.shape, _PX, _PX_DAYS), n_boot=_N_BOOT, seed=seed + 1,
                         return_draws=True)  # fmt: skip
        for scheme in CV_STUDY_SCHEMES:
            p = preds[scheme]
            obs = metric_ci(p, y, blocks, n_boot=_N_BOOT, seed=seed)
            tru = metric_ci(p, noise_free, blocks, n_boot=_N_BOOT, seed=seed, return_draws=True)
            lo, hi = _diff_ci(tru["draws"], true["draws"])
            rows.append(
                {
                    "network": net,
                    "scheme": scheme,
                    "n_stations": len(ids),
                    "W_km": W[scheme] / 1000.0,
                    "cv_rmse_obs": obs["value"],
                    "cv_rmse_obs_lo": obs["ci_low"],
                    "cv_rmse_obs_hi": obs["ci_high"],
                    "cv_rmse_truth": tru["value"],
                    "cv_rmse_truth_lo": tru["ci_low"],
                    "cv_rmse_truth_hi": tru["ci_high"],
                    "true_rmse": true["value"],
                    "true_rmse_lo": true["ci_low"],
                    "true_rmse_hi": true["ci_high"],
                    "gap": tru["value"] - true["value"],
                    "gap_lo": lo,
                    "gap_hi": hi,
                    "reading": "optimistic" if hi < 0 else ("pessimistic" if lo > 0 else "matches"),
                }
            )
        log.info("cv study: %s network (%d stations) done", net, len(ids))
    out = pd.DataFrame(rows)
    out.attrs.update(k=int(k), n_estimators=int(n_estimators), seed=int(seed))
    out["closest"] = False
    for _, g in out.groupby("network", sort=False):
        out.loc[g["gap"].abs().idxmin(), "closest"] = True
    return CVStudy(out, knn, others)


def plot_cv_study(study: CVStudy, path: str | os.PathLike[str]) -> Path:
    """CV estimates against the true off-site RMSE (with intervals), and the G functions of each network."""
    from smengine.evaluate import _plt, _save

    plt = _plt()
    nets = list(dict.fromkeys(study.table["network"]))
    fig, axes = plt.subplots(2, len(nets), figsize=(6.2 * len(nets), 8.4), squeeze=False, layout="constrained")
    colors = {"random k-fold": "tab:red", "grouped by station": "tab:blue", "kNNDM": "tab:green"}
    for j, net in enumerate(nets):
        t = study.table[study.table["network"] == net].reset_index(drop=True)
        ax = axes[0, j]
        x = np.arange(len(t))
        for i, r in t.iterrows():
            ax.errorbar(i - 0.1, r["cv_rmse_truth"], yerr=[[r["cv_rmse_truth"] - r["cv_rmse_truth_lo"]],
                        [r["cv_rmse_truth_hi"] - r["cv_rmse_truth"]]], fmt="o", color=colors[r["scheme"]], capsize=3,
                        label="CV vs noise-free station θ" if i == 0 else None)  # fmt: skip
            ax.errorbar(i + 0.1, r["cv_rmse_obs"], yerr=[[r["cv_rmse_obs"] - r["cv_rmse_obs_lo"]],
                        [r["cv_rmse_obs_hi"] - r["cv_rmse_obs"]]], fmt="s", mfc="none", color=colors[r["scheme"]],
                        capsize=3, label="CV vs CRNS observations" if i == 0 else None)  # fmt: skip
        r0 = t.iloc[0]
        ax.axhspan(r0["true_rmse_lo"], r0["true_rmse_hi"], color="k", alpha=0.15, label="true off-site RMSE (95 %)")
        ax.axhline(r0["true_rmse"], color="k", lw=1)
        ax.set_xticks(x, [f"{s}\nW = {w:.2f} km" for s, w in zip(t["scheme"], t["W_km"], strict=True)])
        ax.set_ylabel("RMSE (m³ m⁻³)")
        ax.set_title(f"{net} network ({int(r0['n_stations'])} stations): CV estimate vs truth", fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
        ax = axes[1, j]
        kr = study.knndm[net]
        for name, d in {"prediction → station (Gij)": kr.Gij, "kNNDM": kr.Gjstar, **study.others[net]}.items():
            v = np.sort(np.asarray(d, float)) / 1000.0
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", label=name,
                    color={"kNNDM": "tab:green", **colors}.get(name, "k"))  # fmt: skip
        ax.set_xlabel("nearest-neighbour distance (km)")
        ax.set_ylabel("ECDF")
        ax.set_title(f"{net}: distances to the nearest training station", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Which CV estimate comes closest to the real off-site error? (twin world, 95 % intervals)")
    return _save(fig, path)


def cv_study_report(study: CVStudy) -> str:
    """The study's table and its reading (Markdown), generated from the numbers."""
    t = study.table
    lines = [
        "| network | CV | W (km) | CV RMSE vs CRNS obs (95 %) | CV RMSE vs noise-free θ (95 %) "
        "| true off-site RMSE (95 %) | CV − true (95 %) | reading |",
        "|---|---|---:|---|---|---|---|---|",
    ]

    def ci(r: pd.Series, k: str) -> str:
        return f"{r[k]:.4f} ({r[k + '_lo']:.4f} … {r[k + '_hi']:.4f})"

    for _, r in t.iterrows():
        mark = " ◀ closest" if r["closest"] else ""
        lines.append(
            f"| {r['network']} ({int(r['n_stations'])}) | {r['scheme']} | {r['W_km']:.2f} | {ci(r, 'cv_rmse_obs')} | "
            f"{ci(r, 'cv_rmse_truth')} | {ci(r, 'true_rmse')} | {r['gap']:+.4f} ({r['gap_lo']:+.4f} … "
            f"{r['gap_hi']:+.4f}) | {r['reading']}{mark} |"
        )
    reading = []
    for net, g in t.groupby("network", sort=False):
        best = g[g["closest"]].iloc[0]
        lowest_w = g.loc[g["W_km"].idxmin(), "scheme"]
        rnd = g[g["scheme"] == "random k-fold"].iloc[0]
        match = g.loc[g["reading"] == "matches", "scheme"].tolist()
        agree = (
            f"{' and '.join(match)} match the truth (their gap's interval holds 0), so they cannot be told apart here"
            if len(match) > 1
            else (f"only {match[0]} matches the truth" if match else "none matches the truth within its interval")
        )
        reading.append(
            f"- **{net}**: {best['scheme']} comes closest to the true off-site RMSE ({best['cv_rmse_truth']:.4f} vs "
            f"{best['true_rmse']:.4f}; gap {best['gap']:+.4f}); {agree}. The lowest W (the folds most like the "
            f"prediction situation) is {lowest_w}'s. Random k-fold says {rnd['cv_rmse_truth']:.4f}: "
            f"{rnd['reading']} by {abs(rnd['gap']):.4f} m³ m⁻³."
        )
    return "\n".join(
        [
            *lines,
            "",
            "W: Wasserstein distance between the CV's held-out-to-training and the product pixels'-to-station "
            "nearest-neighbour distance distributions (lower: the CV resembles the map's use). CV − true: the CV "
            "RMSE against the noise-free station θ minus the product's true RMSE at every pixel-day without a "
            "station; **optimistic**: the whole interval below 0, **pessimistic**: above, **matches**: it holds 0. "
            "The CV scores footprint-scale values at stations, the truth 1-km pixel means.",
            "",
            *reading,
        ]
    )
