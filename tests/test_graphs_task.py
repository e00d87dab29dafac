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


def test_each_pair_draws_its_own_planetoid_style_split():
    torch = pytest.importorskip("torch")
    if not data.is_cached("cora"):
        pytest.skip("cora is not cached: python -m feedback_alignment data fetch cora")
    graph = graphs.load_cora()
    same = graphs.split_graph(graph, 0)
    for mask in ("train_mask", "val_mask", "test_mask"):  # pair 0 is the default split
        assert torch.equal(getattr(same, mask), getattr(graph, mask))
    other = graphs.split_graph(graph, 1)
    assert int(other.train_mask.sum()) == 140 and int(other.val_mask.sum()) == 500
    assert int(other.test_mask.sum()) == 1000
    assert not torch.equal(other.train_mask, graph.train_mask)
    assert not torch.equal(other.test_mask, graph.test_mask)
    assert torch.equal(graph.x, other.x) and torch.equal(graph.edge_index, other.edge_index)
    assert tuple(range(10)) == graphs.GCN_PAIRS


def test_the_gcn_split_table_gives_mean_spread_and_per_pair_g():
    from feedback_alignment.experiments.graphs_report import split_table

    runs = [
        graphs.GraphRun("gcn", rule, k, acc, 0.0, 0, 0.0)
        for k, (bp, dfa) in enumerate(((80.0, 79.0), (82.0, 80.0)))
        for rule, acc in (("BP", bp), ("DFA", dfa), ("Shallow", 40.0))
    ]
    table = split_table(runs)
    rows = {row[0]: row for row in table.rows}
    assert rows["DFA test accuracy %"][1]["mean"] == pytest.approx(79.5)
    assert rows["G per pair"][1]["mean"] == pytest.approx((39 / 40 + 40 / 42) / 2)
    assert rows["G from the mean accuracies"][1] == pytest.approx(39.5 / 41)
    assert rows["G per pair"][5] == 2 and "public Planetoid split" in table.caption


def test_the_split_task_writes_its_table(tmp_path):
    if not data.is_cached("cora"):
        pytest.skip("cora is not cached: python -m feedback_alignment data fetch cora")
    assert "graphs-gcn-splits" in tasks()
    graphs.run_splits(RunOptions(out_dir=tmp_path, quick=True, progress=False))
    payload = json.loads((tmp_path / "graphs_cora_splits.json").read_text())
    assert payload["rows"][0][0] == "BP test accuracy %" and payload["mode"] == "quick"


def test_the_layer_split_table_gives_a_row_per_layer_with_per_pair_g():
    from feedback_alignment.experiments.graphs_report import layer_split_table

    accuracies = {"gcn": ((80.0, 79.0), (82.0, 80.0)), "gat": ((80.0, 75.0), (84.0, 78.0))}
    runs = [
        graphs.GraphRun(layer, rule, k, acc, 0.0, 0, 0.0)
        for layer, pairs in accuracies.items()
        for k, (bp, dfa) in enumerate(pairs)
        for rule, acc in (("BP", bp), ("DFA", dfa), ("Shallow", 40.0))
    ]
    runs.append(graphs.GraphRun("gat", "BP", 2, 90.0, 0.0, 0, 0.0))  # a pair without its DFA
    table = layer_split_table(runs)
    assert table.name == "graphs_cora_splits_layers"
    rows = {row[0]: dict(zip([c.name for c in table.columns], row, strict=True))
            for row in table.rows}  # fmt: skip
    assert list(rows) == ["GCNConv", "GATConv (8x8)"]  # the layers run, in the table's order
    gat = rows["GATConv (8x8)"]
    assert gat["pairs"] == 2 and gat["BP"]["mean"] == pytest.approx(82.0)  # complete pairs only
    assert gat["G per pair"]["mean"] == pytest.approx((35 / 40 + 38 / 44) / 2)
    assert gat["G per pair min / max"] == pytest.approx([38 / 44, 35 / 40])
    assert gat["G from the means"] == pytest.approx(36.5 / 42)
    assert gat["G paper"] == pytest.approx((80.6 - 59.4) / (82.6 - 59.4))
    assert rows["GCNConv"]["DFA"]["mean"] == pytest.approx(79.5)
    assert "public Planetoid split" in table.caption and "2 (split, seed) pairs" in table.caption


def test_the_layer_split_task_runs_every_layer_and_keeps_gcns_task(tmp_path):
    if not data.is_cached("cora"):
        pytest.skip("cora is not cached: python -m feedback_alignment data fetch cora")
    assert "graphs-splits" in tasks() and graphs.SPLIT_PAIRS == graphs.GCN_PAIRS
    graphs.run_layer_splits(RunOptions(out_dir=tmp_path, quick=True, progress=False))
    payload = json.loads((tmp_path / "graphs_cora_splits_layers.json").read_text())
    assert [row[0] for row in payload["rows"]] == [
        "GCNConv", "ChebConv (K=2)", "GATConv (8x8)", "GraphConv"]  # fmt: skip
    assert payload["mode"] == "quick"
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    expected = {(lay, rule, 0) for lay in graphs.GraphConfig().layers for rule in graphs.RULES}
    assert {(r["layer"], r["rule"], r["seed"]) for r in runs} == expected
