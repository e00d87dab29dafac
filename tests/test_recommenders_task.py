"""The ``recommenders`` task in quick mode: MovieLens-100k and Adult, every model and rule."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("pandas")

from feedback_alignment import data
from feedback_alignment.experiments import recommenders
from feedback_alignment.experiments.registry import RunOptions, tasks


def test_recommenders_quick_mode_writes_results(tmp_path):
    missing = [name for name in recommenders.DATASETS if not data.is_cached(name)]
    if missing:
        pytest.skip(f"not cached: python -m feedback_alignment data fetch {' '.join(missing)}")
    assert "recommenders" in tasks()
    report = recommenders.run(RunOptions(out_dir=tmp_path, quick=True, progress=False))
    payload = json.loads((tmp_path / "results.json").read_text())
    runs = payload["runs"]
    assert {(r["dataset"], r["model"]) for r in runs} == {
        (d, m) for d in recommenders.DATASETS for m in ("fm", "deepfm", "dcn", "autoint")
    }
    assert not [r for r in runs if r["model"] == "fm" and r["rule"] != "BP"]
    for run in runs:
        assert 0.0 <= run["test_auc"] <= 1.0, run
        assert math.isfinite(run["test_logloss"])
    for dataset in recommenders.DATASETS:
        assert "G_auc" in payload["summary"][dataset]["dcn"]
    assert "Deep & Cross" in report.markdown and "0.8104" in report.markdown
    assert (tmp_path / "recommenders_auc.png").stat().st_size > 10_000
