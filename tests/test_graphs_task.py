"""The ``graphs`` task in quick mode: real Cora, every layer and rule, JSON, table and plot."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch_geometric")
pytest.importorskip("pandas")

from feedback_alignment import data
from feedback_alignment.experiments import graphs
from feedback_alignment.experiments.registry import RunOptions, tasks


def test_graphs_quick_mode_writes_results(tmp_path):
    if not data.is_cached("cora"):
        pytest.skip("cora is not cached: python -m feedback_alignment data fetch cora")
    assert "graphs" in tasks()
    report = graphs.run(RunOptions(out_dir=tmp_path, quick=True, progress=False))
    payload = json.loads((tmp_path / "results.json").read_text())
    assert {r["rule"] for r in payload["runs"]} == {"BP", "DFA", "Shallow"}
    assert {r["layer"] for r in payload["runs"]} == set(graphs.GraphConfig().layers)
    for run in payload["runs"]:
        assert 0.0 <= run["test_accuracy"] <= 100.0
        if run["rule"] == "DFA":
            assert run["alignment"], "DFA runs measure the hidden layer's alignment"
    assert "GCNConv" in report.markdown and "80.1" in report.markdown
    assert (tmp_path / "graphs_cora.png").stat().st_size > 10_000
