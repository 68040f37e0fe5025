"""The nn-compare report: every verdict comes from a 95 % interval, every branch renders (no PyTorch needed)."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pandas as pd
import pytest

from smengine.nn import _compare as C

STATIONS = [f"S{i}" for i in range(6)]
DAYS = pd.date_range("2020-01-01", periods=240)
SECTION = "## Which wins where"


def _cvp(obs: np.ndarray, noise: float, rng: np.random.Generator) -> pd.DataFrame:
    """Out-of-fold predictions in the models' layout: obs + noise at every station-day."""
    n = len(DAYS)
    return pd.DataFrame(
        {
            "station": np.repeat(STATIONS, n),
            "date": np.tile(DAYS, len(STATIONS)),
            "target": obs.ravel(),
            "scheme": "site",
            "fold": 0,
            "prediction": obs.ravel() + noise * rng.standard_normal(obs.size),
        }
    )


def _build(n_boot: int = 300) -> dict:
    """A summary as compare_with_forest writes it, from synthetic data: at the stations the
    network is 3× closer (beats), against the truth both have the same error (ties), in the
    pseudoproxy run it is 3× farther (loses)."""
    rng = np.random.default_rng(0)
    obs = 0.25 + 0.05 * rng.standard_normal((len(STATIONS), len(DAYS)))
    cv_f, cv_n = _cvp(obs, 0.03, rng), _cvp(obs, 0.01, rng)
    pairs = C._cv_pairs(cv_n, cv_f)
    truth = 0.25 + 0.05 * rng.standard_normal((60, 10, 10))
    sm_f = truth + 0.02 * rng.standard_normal(truth.shape)
    sm_n = truth + 0.02 * rng.standard_normal(truth.shape)
    ref = 0.25 + 0.05 * rng.standard_normal((60, 10, 10))
    t = np.arange(60)
    px = {
        "forest": C._offsite_scores(ref + 0.01 * rng.standard_normal(ref.shape), ref, t, {(0, 0)}),
        "network": C._offsite_scores(ref + 0.03 * rng.standard_normal(ref.shape), ref, t, {(0, 0)}),
    }
    paired = C._comparisons(pairs, sm_n, sm_f, truth, px, n_boot=n_boot)
    keys = ("difference", "ci_low", "ci_high", "n", "n_blocks", "level", "n_boot")
    site = {"R": 0.5, "ubRMSE": 0.03, "RMSE": 0.03, "bias": 0.0}
    return {
        "twin": "synthetic",
        "seed": 0,
        "n_threads": 1,
        "nn_threads": 1,
        "station_days": len(pairs),
        "stations": len(STATIONS),
        "station_cv": {
            "splitter": {"forest": "GroupKFold", "network": "GroupKFold"},
            "rows_compared": len(pairs),
            "forest": site,
            "network": {"R": 0.9, "ubRMSE": 0.01, "RMSE": 0.01, "bias": 0.0},
        },
        "truth": {"forest": C._pooled(sm_f, truth), "network": C._pooled(sm_n, truth)},
        "truth_rmse_difference_network_minus_forest": {k: paired["truth"]["RMSE"][k] for k in keys},
        "pseudoproxy_offsite": {k: C._offsite(v) for k, v in px.items()},
        "paired": paired,
        "cost": {
            "pixel_days": 6000,
            "forest_train_s": 10.0,
            "nn_train_s": 100.0,
            "forest_us_per_pixel_day": 5.0,
            "nn_us_per_pixel_day": 2.0,
        },
        "plot_day": "2020-01-01",
        "figure": "products_day.png",
    }


@pytest.fixture(scope="module")
def summary() -> dict:
    # through JSON, as summary.json stores it (NaN as None in the per-station tables)
    return json.loads(json.dumps(_build(), default=float))


def _section(report: str) -> list[str]:
    """The bullet lines of the "Which wins where" section."""
    body = report.split(SECTION, 1)[1]
    return [ln for ln in body.splitlines() if ln.startswith("* ")]


def _no_dangling(text: str) -> None:
    assert not re.search(r"\bnan\b|\bNone\b|[{}]|\(\s*\)|\*\*\s*\*\*", text, re.I), text
    assert "  " not in text.replace("|  ", "|").replace("  |", "|"), text


def test_report_verdicts_come_from_the_intervals(summary):
    p = summary["paired"]
    assert (p["a"], p["b"]) == ("network", "forest")
    # the premise of the synthetic data
    assert {p["station_cv"][m]["verdict"] for m in C.STATION_METRICS} == {"beats"}
    assert p["station_cv"]["ubRMSE"]["counts"] == {"win": 6, "tie": 0, "loss": 0, "undetermined": 0}
    assert p["truth"]["RMSE"]["verdict"] == "ties"
    assert {p["pseudoproxy_offsite"][m]["verdict"] for m in C.PIXEL_METRICS} == {"loses"}
    # the summary keeps the old RMSE entry, equal to the paired truth comparison
    d = summary["truth_rmse_difference_network_minus_forest"]
    assert d["ci_low"] <= d["difference"] <= d["ci_high"]
    assert d["difference"] == p["truth"]["RMSE"]["difference"]

    report = C._report(summary)
    _no_dangling(report)
    lines = _section(report)
    assert len(lines) == len(C.STATION_METRICS) + len(C.TRUTH_METRICS) + len(C.PIXEL_METRICS) + 2
    by = {ln.split(":", 1)[0]: ln for ln in lines}
    ub = by["* station CV ubRMSE (lower is better)"]
    assert "**the network beats the forest**" in ub and "6 wins, 0 ties, 0 losses of 6 stations" in ub
    assert "95 % interval" in ub
    rm = by["* RMSE against the true θ_eq, all pixel-days (lower is better)"]
    assert "**the network and the forest tie (the interval holds 0)**" in rm
    assert "**the network loses to the forest**" in by["* pseudoproxy off-site R (higher is better)"]
    assert "**the network loses to the forest**" in by["* pseudoproxy off-site ubRMSE (lower is better)"]
    # every verdict line carries its interval; costs are measurements, never verdicts
    for ln in lines:
        if re.search(r"\b(beats|tie|loses)\b", ln):
            assert "95 % interval" in ln, ln
    assert "the network is slower (forest 10 s, network 100 s" in by["* training time incl. CV"]
    assert "the network is faster" in by["* inference cost"]
    for ln in (by["* training time incl. CV"], by["* inference cost"]):
        assert not re.search(r"\b(beats|ties|loses|wins?)\b", ln), ln
    # the per-station table: one row per station, the outcome of each metric
    rows = [ln for ln in report.splitlines() if re.match(r"\| S\d \|", ln)]
    assert len(rows) == len(STATIONS) and all(r.count("| win |") == 3 for r in rows)
    # the truth sentence above the section says what the RMSE interval says
    head = report.split(SECTION, 1)[0]
    assert "RMSE(network) − RMSE(forest) against the truth" in head and "tie (the interval holds 0)" in head
    # the references of the text exist: the section named above it and the figure
    assert "under *Which wins where* below" in head and SECTION in report
    assert "![products](products_day.png)" in report


def _set(d: dict, verdict: str, metric: str) -> None:
    """Give a comparison the interval of a verdict (the network's side)."""
    lo, hi = {"beats": (-0.02, -0.01), "ties": (-0.01, 0.01), "loses": (0.01, 0.02), "undetermined": (None, None)}[
        verdict
    ]
    if C._BETTER_WORDS[metric].startswith("higher") and lo is not None:
        lo, hi = -hi, -lo
    d["ci_low"], d["ci_high"] = lo, hi
    d["difference"] = None if lo is None else (lo + hi) / 2


@pytest.mark.parametrize("verdict", ["beats", "ties", "loses", "undetermined"])
def test_every_verdict_branch_renders_from_the_interval_alone(summary, verdict):
    s = copy.deepcopy(summary)
    # the medians and pooled scores favour the network whatever the intervals say: the old
    # report called it better from them
    s["station_cv"]["network"] = {"R": 0.99, "ubRMSE": 0.001, "RMSE": 0.001, "bias": 0.0}
    s["pseudoproxy_offsite"]["network"].update(median_R_offsite=0.99, median_ubRMSE_offsite=0.001)
    s["truth"]["network"].update(RMSE=0.001, ubRMSE=0.001, R=0.99)
    p = s["paired"]
    for section in ("station_cv", "truth", "pseudoproxy_offsite"):
        for m, d in p[section].items():
            _set(d, verdict, m)
    _set(s["truth_rmse_difference_network_minus_forest"], verdict, "RMSE")
    report = C._report(s)
    _no_dangling(report)
    want = {
        "beats": "**the network beats the forest**",
        "ties": "**the network and the forest tie (the interval holds 0)**",
        "loses": "**the network loses to the forest**",
        "undetermined": "**no verdict (no interval)**",
    }[verdict]
    lines = _section(report)
    verdicts = [ln for ln in lines if not ln.startswith(("* training time", "* inference cost"))]
    assert len(verdicts) == 8
    for ln in verdicts:
        assert want in ln, ln
        others = {"beats", "tie", "loses"} - {verdict.rstrip("s") if verdict == "ties" else verdict}
        assert not any(re.search(rf"\b{o}\b", ln) for o in others), ln
    if verdict == "undetermined":
        assert all("not defined" in ln for ln in verdicts)
    head = report.split(SECTION, 1)[0]
    assert want.strip("*") in head


def test_without_an_interval_the_rows_are_descriptive_only(summary):
    s = copy.deepcopy(summary)
    del s["paired"]["pseudoproxy_offsite"]
    lines = _section(C._report(s))
    pp = [ln for ln in lines if ln.startswith("* pseudoproxy")]
    assert len(pp) == 2
    for ln in pp:
        assert "no interval: descriptive only" in ln and "no verdict drawn" in ln, ln
        assert not re.search(r"\b(beats|ties|tie|loses)\b", ln), ln
    # no comparisons at all: every row descriptive, no per-station table, nothing dangling
    del s["paired"]
    report = C._report(s)
    _no_dangling(report)
    lines = _section(report)
    assert sum("no interval: descriptive only" in ln for ln in lines) == 8
    assert "Per station" not in report and not re.search(r"\| S\d \|", report)
    assert "station CV ubRMSE (lower is better), median over stations: no interval" in report


def test_pixel_paired_ci_blocks_sign_and_gaps():
    rng = np.random.default_rng(3)
    rows, cols = np.divmod(np.arange(144), 12)
    b = pd.DataFrame(
        {"row": rows, "col": cols, "R": rng.uniform(0.5, 0.9, 144), "ubRMSE": rng.uniform(0.02, 0.04, 144)}
    )
    b["bias"] = rng.uniform(-0.02, 0.02, 144)
    a = b.copy()
    a["ubRMSE"] += 0.005 + 0.001 * rng.standard_normal(144)  # a worse everywhere
    a["R"] += 0.05 + 0.01 * rng.standard_normal(144)  # a better everywhere
    a.loc[0, "ubRMSE"] = np.nan  # a gap in one table
    a = a.drop(index=[1])  # and a pixel missing from it
    r = C._pixel_paired_ci(a, b, "ubRMSE", n_boot=400)
    assert r["n_pixels"] == 142 and r["n_blocks"] == 9 and r["block_pixels"] == 5  # 12 px → 3 squares a side
    merged = a.merge(b, on=["row", "col"]).dropna(subset=["ubRMSE_x"])
    assert r["difference"] == pytest.approx((merged["ubRMSE_x"] - merged["ubRMSE_y"]).mean())
    assert 0 < r["ci_low"] <= r["difference"] <= r["ci_high"] and r["verdict"] == "loses"
    assert C._pixel_paired_ci(a, b, "R", n_boot=400)["verdict"] == "beats"
    assert C._pixel_paired_ci(a, b, "ubRMSE", n_boot=400) == r  # seeded
    # differences of either sign around 0: a tie
    c = b.copy()
    c["ubRMSE"] += 0.005 * rng.standard_normal(144)
    assert C._pixel_paired_ci(c, b, "ubRMSE", n_boot=400)["verdict"] == "ties"
    # the bias is compared by |bias|
    d = b.copy()
    d["bias"] = -b["bias"]
    assert C._pixel_paired_ci(d, b, "bias", n_boot=100)["difference"] == pytest.approx(0.0)
    # nothing in common: no interval, no verdict
    e = a.assign(R=np.nan)
    u = C._pixel_paired_ci(e, b, "R")
    assert u["verdict"] == "undetermined" and u["n_pixels"] == 0 and np.isnan(u["ci_low"])


def test_cv_pairs_are_the_common_out_of_fold_station_days():
    f = pd.DataFrame(
        {
            "station": ["A", "A", "A", "B", "A"],
            "date": ["2020-01-01", "2020-01-02", "2020-01-03", "2020-01-01", "2020-01-01"],
            "target": [0.1, 0.2, 0.3, 0.4, 0.1],
            "scheme": ["site", "site", "site", "site", "knndm"],
            "prediction": [0.11, 0.21, 0.31, 0.41, 9.0],
        }
    )
    n = pd.DataFrame(
        {
            "station": ["A", "A", "B", "C"],
            "date": pd.to_datetime(["2020-01-01", "2020-01-03", "2020-01-01", "2020-01-01"]),
            "target": [0.1, 0.3, 0.4, 0.5],
            "scheme": "site",
            "prediction": [0.12, 0.32, 0.42, 0.52],
        }
    )
    t = C._cv_pairs(n, f)
    assert list(t.columns) == ["station", "date", "obs", "forest", "network"]
    assert list(zip(t["station"], t["date"].dt.day, strict=True)) == [("A", 1), ("A", 3), ("B", 1)]
    np.testing.assert_allclose(t["forest"], [0.11, 0.31, 0.41])  # the knndm row is not the station CV
    np.testing.assert_allclose(t["network"], [0.12, 0.32, 0.42])
    np.testing.assert_allclose(t["obs"], [0.1, 0.3, 0.4])
    keep = pd.DataFrame({"station": ["A"], "date": pd.to_datetime(["2020-01-03"])})
    assert len(C._cv_pairs(n, f, keep)) == 1
