"""The stations report's verdicts: from paired comparisons with intervals, every branch rendered,
nothing dangling."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from smengine.experiments import COMPARISONS, ExperimentResult, compare_methods
from smengine.experiments._report import _headline, _markdown_comparisons, _markdown_outcomes, _verdict
from smengine.experiments._run import _score


def _predictions(forest_sd: float, linear_sd: float, seed: int = 0, n_st: int = 5, days: int = 300) -> pd.DataFrame:
    """Station-days with a CRNS-like reference, a forest and a linear model of given error SDs, a mean."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2021-03-01", periods=days)
    rows = []
    for i in range(n_st):
        season = 0.25 + 0.08 * np.sin(np.arange(days) / 40.0 + i)
        obs = season + 0.01 * rng.standard_normal(days)
        rows.append(
            pd.DataFrame(
                {
                    "station": f"S{i}",
                    "date": dates,
                    "fold": i,
                    "obs": obs,
                    "forest": obs + forest_sd * rng.standard_normal(days),
                    "linear": obs + linear_sd * rng.standard_normal(days),
                    "mean": 0.25,
                    "tdr": np.nan,
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _result(pred: pd.DataFrame, name: str = "leave-site-out-spatiotemporal") -> ExperimentResult:
    return ExperimentResult(name, pred, _score(pred), [{"fold": 0}], ["x"], {})


@pytest.mark.parametrize(
    ("forest_sd", "linear_sd", "word"),
    [(0.01, 0.03, "beats"), (0.03, 0.03, "ties"), (0.05, 0.01, "loses")],
)
def test_each_verdict_renders_from_its_interval(forest_sd: float, linear_sd: float, word: str) -> None:
    res = _result(_predictions(forest_sd, linear_sd))
    c = res.comparison("forest", "linear", "ubRMSE")
    assert c is not None and c.verdict == word
    text = _verdict(res)
    head = {"beats": "forest beats linear", "ties": "forest and linear tie", "loses": "forest loses to linear"}[word]
    assert head in text and "training mean" in text
    assert "see the note" not in text and "nan" not in text.lower()
    assert re.search(r"\d+ wins?, \d+ ties?, \d+ loss(es)? of 5 stations", text)
    assert res.forest_beats()["linear"] is (word == "beats")
    table = _markdown_comparisons(res)
    assert f"**{word}**" in table and "forest vs training mean" in table
    per = _markdown_outcomes(res)
    assert per.count("\n") == 5 + 1  # header, rule, five stations
    headline = "\n".join(_headline({"leave-site-out-spatiotemporal": res}))
    assert "new places on new days" in headline and f"**{word}**" in headline


def test_undetermined_and_missing_comparisons_render() -> None:
    pred = _predictions(0.01, 0.02)
    pred["forest"] = 0.25  # a constant: R not defined
    res = _result(pred)
    c = res.comparison("forest", "linear", "R")
    assert c is not None and c.verdict == "undetermined"
    assert "no verdict" in c.sentence()
    # no station with enough common days: nothing to compare, said so
    short = _predictions(0.01, 0.02, days=20)
    empty = _result(short)
    assert all(x.n_stations == 0 for x in empty.comparisons)
    text = _verdict(empty)
    assert "no verdict" in text or "no comparison" in text
    assert "nan" not in text.lower()
    headline = "\n".join(_headline({"leave-site-out": empty}))
    assert "only optimistic splits" in headline


def test_the_comparisons_cover_the_declared_pairs_and_are_seeded() -> None:
    pred = _predictions(0.01, 0.02)
    pred["tdr"] = pred["obs"] + 0.02
    rng = np.random.default_rng(2)
    for m in ("boosting", "hybrid", "selected"):
        pred[m] = pred["obs"] + rng.normal(0, 0.02, len(pred))
    got = {(c.a, c.b, c.metric) for c in compare_methods(pred)}
    want = {(a, b, m) for a, b, ms in COMPARISONS for m in ms}
    assert got == want
    # a method an experiment did not fit: its pairs are not made
    assert all("selected" not in (c.a, c.b) for c in compare_methods(pred.drop(columns="selected")))
    again = compare_methods(pred)
    assert [c.to_dict() for c in again] == [c.to_dict() for c in compare_methods(pred)]


def test_the_old_median_verdict_would_have_said_beats_where_the_interval_says_ties() -> None:
    """The case the issue met: a forest whose median ubRMSE is a hair below the mean's is not
    called better; three stations, two of which it loses."""
    rng = np.random.default_rng(7)
    days = 730
    dates = pd.date_range("2021-01-01", periods=days)
    frames = []
    # (SD of CRNS θ = the mean's ubRMSE, the forest's error SD = its ubRMSE): won, lost, lost
    for i, (o_sd, f_sd) in enumerate(((0.060, 0.030), (0.0625, 0.063), (0.045, 0.055))):
        obs = 0.3 + o_sd * np.sqrt(2) * np.sin(2 * np.pi * np.arange(days) / days + i)
        frames.append(
            pd.DataFrame(
                {
                    "station": f"F{i + 1}",
                    "date": dates,
                    "fold": i,
                    "obs": obs,
                    "forest": obs + f_sd * rng.standard_normal(days),
                    "linear": obs + 0.05 * rng.standard_normal(days),
                    "mean": 0.3,
                    "tdr": np.nan,
                }
            )
        )
    res = _result(pd.concat(frames, ignore_index=True))
    med = res.medians()["ubRMSE"]
    assert med["forest"] < med["mean"]  # the bare median says "forest better"
    c = res.comparison("forest", "mean", "ubRMSE")
    assert c is not None and c.verdict == "ties" and c.counts["loss"] >= 1, c.sentence()
    assert res.forest_beats()["mean"] is False
