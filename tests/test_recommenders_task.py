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


def test_the_difference_dfa_minus_bp_is_paired_by_seed():
    from feedback_alignment.experiments.recommenders_report import PAIRED, summary

    def run(rule: str, seed: int, auc: float) -> recommenders.RecRun:
        return recommenders.RecRun("dcn", "movielens-100k", rule, seed, auc, 0.4, 1, 1.0)

    # DFA is 0.010 below BP on every seed, while both move by 0.05 between seeds
    runs = [run("BP", s, 0.80 + 0.05 * s) for s in range(3)]
    runs += [run("DFA", s, 0.79 + 0.05 * s) for s in range(3)]
    runs += [run("Shallow", s, 0.60) for s in range(3)]
    config = recommenders.RecConfig(models=("dcn",), datasets=("movielens-100k",))
    stats = recommenders.aggregate(runs, config)
    paired = stats["movielens-100k"]["dcn"]["dfa_minus_bp"]
    assert paired.mean == pytest.approx(-0.010) and paired.std == pytest.approx(0.0, abs=1e-12)
    result = summary(stats)
    assert result.columns[-1].name == PAIRED
    assert result.rows[0][-1]["mean"] == pytest.approx(-0.010)


def test_the_paper_size_task_runs_deep_and_cross_at_the_papers_sizes(tmp_path):
    assert recommenders.PAPER_SIZE == {
        "models": ("dcn",), "datasets": ("movielens-100k",), "mlp_dims": (1024, 1024),
        "cross_layers": 6, "batch_size": 512,
    }  # fmt: skip
    assert "recommenders-paper-size" in tasks()
    if not data.is_cached("movielens-100k"):
        pytest.skip("not cached: python -m feedback_alignment data fetch movielens-100k")
    report = recommenders.run_paper_size(RunOptions(out_dir=tmp_path, quick=True, progress=False))
    payload = json.loads((tmp_path / "recommenders_paper_size.json").read_text())
    assert [row[:2] for row in payload["rows"]] == [["movielens-100k", "Deep & Cross"]]
    assert "Paper's sizes" in payload["caption"] and "Deep & Cross" in report.markdown
