"""The tree models on the twin: station CV, truth and pseudoproxy off-site, each paired with the forest."""

from __future__ import annotations

import json

import pytest

from smengine.errors import ConfigError
from smengine.twin import model_study, model_study_report


def test_unknown_models_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown model"):
        model_study(tmp_path, models=("forest", "svm"))


def test_report_renders_every_model_and_verdict():
    per = {
        m: {
            "station_cv": {"R": 0.8, "ubRMSE": 0.03, "RMSE": 0.04},
            "truth": {"RMSE": 0.05, "ubRMSE": 0.03, "R": 0.9, "bias": 0.0, "n": 10},
            "pseudoproxy_offsite": {"n_offsite": 300, "median_R_offsite": 0.7, "median_ubRMSE_offsite": 0.02},
            "train_s": 1.0,
        }
        for m in ("forest", "boosting", "hybrid")
    }
    ci = {"difference": -0.01, "ci_low": -0.02, "ci_high": -0.001, "verdict": "beats"}
    paired = {
        m: {
            "station_cv": {"ubRMSE": ci, "R": {**ci, "verdict": "ties", "ci_high": 0.01}},
            "truth": {"RMSE": ci, "ubRMSE": ci, "R": {**ci, "verdict": "loses"}},
            "pseudoproxy_offsite": {"R": ci, "ubRMSE": ci},
        }
        for m in ("boosting", "hybrid")
    }
    s = {"twin": "quick", "seed": 0, "stations": 8, "station_days": 100, "features": ["a"], "forest_trees": 10,
         "per_model": per, "paired": paired, "reference": "forest"}  # fmt: skip
    rep = model_study_report(s)
    assert rep.count("| forest |") + rep.count("| boosting |") + rep.count("| hybrid |") == 3
    assert "**hybrid**: station CV ubRMSE -0.0100 (-0.0200 … -0.0010) → beats" in rep
    assert "→ loses" in rep and "→ ties" in rep and "nan" not in rep.lower()


@pytest.mark.slow
def test_model_study_on_the_quick_twin(tmp_path):
    s = model_study(tmp_path, seed=0, quick=True, n_trees=20, n_boot=200)
    assert s["models"] == ["forest", "boosting", "hybrid"]
    for m, v in s["per_model"].items():
        assert 0 < v["truth"]["RMSE"] < 0.2, m
        assert v["pseudoproxy_offsite"]["n_offsite"] > 0
    for m in ("boosting", "hybrid"):
        p = s["paired"][m]
        for view, metrics in (("truth", ("RMSE", "ubRMSE", "R")), ("pseudoproxy_offsite", ("R", "ubRMSE"))):
            for k in metrics:
                c = p[view][k]
                assert c["ci_low"] <= c["difference"] <= c["ci_high"] and c["verdict"] in ("beats", "ties", "loses")
    stored = json.loads((tmp_path / "summary.json").read_text())
    assert stored["per_model"]["hybrid"]["content_hash"] != stored["per_model"]["forest"]["content_hash"]
    assert "Paired against the forest" in (tmp_path / "report.md").read_text()
