"""smengine.evaluate: per-site scores, products with the best exponential filter, monthly bias, plots."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smengine.errors import ValidationError
from smengine.evaluate import (
    monthly_bias,
    plot_map,
    plot_monthly_bias,
    plot_scatter,
    plot_timeseries,
    product_scores,
    site_scores,
)
from smengine.filters import exp_filter
from smengine.metrics import evaluate

BIAS = {"A": 0.02, "B": -0.01, "C": 0.05}


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    dates = pd.date_range("2019-01-01", "2021-12-31", freq="D")
    days = np.arange(dates.size, dtype=float)
    parts = []
    for k, (st, b) in enumerate(BIAS.items()):
        surf = 0.25 + 0.08 * np.sin(2 * np.pi * days / 365.25 + k) + 0.05 * rng.standard_normal(days.size)
        surf[rng.random(days.size) < 0.2] = np.nan  # satellite gaps
        # the CRNS sees the surface signal through a 20-day exponential filter
        obs = exp_filter(surf, days, 20.0)
        obs = pd.Series(obs).ffill().bfill().to_numpy()
        pred = obs + b + 0.01 * rng.standard_normal(days.size)
        parts.append(pd.DataFrame({"station": st, "date": dates, "obs": obs, "pred": pred, "surface": surf}))
    return pd.concat(parts, ignore_index=True)


def test_site_scores_are_metrics_evaluate_per_site_and_their_median(table):
    s = site_scores(table)
    assert list(s.index) == ["A", "B", "C", "median"]
    for st, b in BIAS.items():
        g = table[table.station == st]
        m = evaluate(g.pred.to_numpy(), g.obs.to_numpy(), g.date.to_numpy())
        assert s.loc[st, "R"] == m["R"] and s.loc[st, "ubRMSE"] == m["ubRMSE"] and s.loc[st, "KGE"] == m["KGE"]
        assert s.loc[st, "anomaly_R"] == m["anomaly_R"]
        assert s.loc[st, "bias"] == pytest.approx(np.mean(g.pred - g.obs), abs=1e-12)
        assert s.loc[st, "bias"] == pytest.approx(b, abs=2e-3)
    assert s.loc["median", "bias"] == pytest.approx(np.median([s.loc[k, "bias"] for k in BIAS]), abs=1e-15)
    assert s.loc["median", "n"] == table.groupby("station").size().median()


def test_product_scores_find_the_filter_time_of_the_truth(table):
    p = product_scores(table, ["surface"], T=(2.0, 5.0, 10.0, 20.0, 40.0))
    assert list(p.index) == [("surface", "raw"), ("surface", "SWI T=20")]
    raw, swi = p.loc[("surface", "raw")], p.loc[("surface", "SWI T=20")]
    assert swi["T"] == 20.0 and np.isnan(raw["T"])
    assert swi["R"] > 0.999 and raw["R"] < 0.9, p  # filtering bridges the depth mismatch exactly here
    assert swi["n_sites"] == 3


def test_monthly_bias_and_its_trend():
    dates = pd.date_range("2018-01-01", "2021-12-31", freq="D")
    years = (dates - dates[0]).days.to_numpy() / 365.25
    obs = np.full(dates.size, 0.3)
    pred = obs + 0.01 * dates.month.to_numpy() + 0.004 * years  # seasonal bias plus a drift
    t = pd.DataFrame({"station": "S", "date": dates, "obs": obs, "pred": pred})
    by_month, trend = monthly_bias(t)
    for m in range(1, 13):
        sel = dates.month == m
        assert by_month.loc[m, "bias"] == pytest.approx(np.mean(pred[sel] - obs[sel]), abs=1e-12)
        assert by_month.loc[m, "n"] == sel.sum()
    assert trend["slope_per_year"] == pytest.approx(0.004, rel=1e-6) and trend["p_value"] < 1e-6
    flat = t.assign(pred=obs + 0.01 * dates.month.to_numpy())  # seasonal only: no trend
    assert abs(monthly_bias(flat)[1]["slope_per_year"]) < 1e-12
    assert trend["n_months"] == 48


def test_bad_tables_are_named(table):
    with pytest.raises(ValidationError, match=r"lacks column\(s\) \['pred'\]"):
        site_scores(table.drop(columns="pred"))
    with pytest.raises(ValidationError, match="duplicate rows for station 'A' on 2019-01-01"):
        site_scores(pd.concat([table.iloc[:1], table]))
    with pytest.raises(ValidationError, match="no rows for station 'Z'"):
        plot_timeseries(table, "Z", "x.png")


def test_plots_are_pngs(table, tmp_path):
    import xarray as xr

    ds = xr.Dataset(
        {
            "sm": (
                ("time", "y", "x"),
                np.random.default_rng(0).random((2, 5, 6)).astype(np.float32),
                {"units": "m3 m-3"},
            )
        },
        coords={
            "time": pd.date_range("2020-01-01", periods=2),
            "y": 5500.0 - 1000 * np.arange(5),
            "x": 500.0 + 1000 * np.arange(6),
        },
    )
    by_month, _ = monthly_bias(table)
    paths = [
        plot_map(ds, "2020-01-02", tmp_path / "map.png", stations=pd.DataFrame({"x": [1500.0], "y": [2500.0]})),
        plot_timeseries(table, "A", tmp_path / "ts.png", ("obs", "pred", "surface")),
        plot_scatter(table, tmp_path / "sc.png"),
        plot_monthly_bias(by_month, tmp_path / "mb.png"),
    ]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, p
    assert not list(tmp_path.glob(".*.tmp"))


def test_glossary_defines_what_reports_use_and_refuses_unknown_terms() -> None:
    from smengine._glossary import TERMS, glossary

    lines = glossary(("scores", "di"))
    assert lines[0] == "## Terms" and lines[2].startswith("- **R**") and "Meyer & Pebesma 2021" in lines[3]
    assert len(lines) == 5 and all(v.startswith("**") for v in TERMS.values())
    with pytest.raises(KeyError, match="no definition for \\['rmsd'\\]"):
        glossary(("scores", "rmsd"))
