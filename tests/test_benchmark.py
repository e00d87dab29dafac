"""The benchmark's structure and its hand-written floor (never its timings: the machine is shared)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from feedback_alignment import bench as benchmark
from feedback_alignment.bench import floor as bench_floor
from feedback_alignment.bench import timing
from feedback_alignment.cli import main
from feedback_alignment.models import MLP


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_bench_writes_every_family_rule_and_floor(tmp_path, capsys):
    out = tmp_path / "bench" / "b.json"
    argv = ["bench", "--size", "tiny", "--rounds", "2", "--warmup", "0", "--out", str(out), "-q"]
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    assert {"machine", "settings", "workloads"} <= set(payload)
    assert {"processor", "cpus", "threads", "torch", "date", "device"} <= set(payload["machine"])
    assert payload["settings"]["rounds"] == 2 and payload["settings"]["size"] == "tiny"
    families = {w["family"] for w in payload["workloads"]}
    expected = set(benchmark.FAMILIES)
    try:
        import torch_geometric  # noqa: F401
    except ImportError:
        expected.discard("gcn")
    assert families == expected
    names = [w["name"] for w in payload["workloads"]]
    assert "lenet" in names and any(n.startswith("resnet") for n in names)
    for workload in payload["workloads"]:
        rows = workload["rows"]
        keyed = {(r["rule"], r["placement"]): r for r in rows}
        assert {r["rule"] for r in rows} >= set(benchmark.RULES)
        placements = {r["placement"] for r in rows if r["rule"] == "DFA"}
        if workload["family"] == "transformer":
            assert placements == {"macro", "micro"}
        for rule in benchmark.DIRECT_RULES:
            for placement in placements:
                library = keyed[(rule, placement)]
                floor = keyed[(rule + benchmark.FLOOR_SUFFIX, placement)]
                assert floor["kind"] == "floor" and floor["status"] == "ok"
                assert library["time_vs_floor"]["low"] <= library["time_vs_floor"]["high"]
        for row in rows:
            if row["status"] != "ok":
                assert row["note"].startswith("unsupported: ")
                continue
            assert row["median_ms"] > 0 and row["q25_ms"] <= row["median_ms"] <= row["q75_ms"]
            assert set(row["time_vs_bp"]) == {"ratio", "low", "high"}
            assert row["peak_mib"] >= 0
        assert keyed[("BP", "")]["time_vs_bp"]["ratio"] == 1.0
    table = out.with_suffix(".md").read_text()
    assert "| DFA floor | macro |" in table and "vs floor [95% CI]" in table
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| DFA |" in capsys.readouterr().out


def test_gcn_runs_the_layerwise_rules():
    """GCNConv's weight is a PyG Linear (converted) and its own bias learns locally."""
    pytest.importorskip("torch_geometric")
    [workload] = benchmark.workloads(["gcn"], "tiny")
    rows, steps = timing._variants(workload, ["BP", "FA"], torch.device("cpu"), 0)
    fa_row = next(r for r in rows if r.rule == "FA")
    assert fa_row.status != "unsupported", fa_row.note
    assert len(steps) == 2


def test_floor_gradient_is_the_dfa_equation():
    # dW_1 = ((e @ B[:, :w]) * tanh'(a_1))^T x for the first layer, with e = dL/dy
    torch.manual_seed(0)
    x, y = torch.randn(6, 5, dtype=torch.float64), torch.randint(0, 3, (6,))
    model = MLP([5, 4, 7, 3], "tanh").double()
    floor = bench_floor._Floor(model, ["1", "3"], None, benchmark.FLOOR_SIGNALS["DFA"])
    logits = model(x)
    F.cross_entropy(logits, y).backward()
    e = (torch.softmax(logits.detach(), dim=1) - F.one_hot(y, 3)) / len(y)
    first = model[0]
    h1 = torch.tanh(x @ first.weight.detach().T + first.bias.detach())
    delta = (e @ floor.feedback[:, :4]) * (1 - h1**2)
    torch.testing.assert_close(first.weight.grad, delta.T @ x)
    # the second hidden layer reads a cut input: it gets a weight gradient but sends none down
    h2 = torch.tanh(h1 @ model[2].weight.detach().T + model[2].bias.detach())
    torch.testing.assert_close(model[2].weight.grad, ((e @ floor.feedback) * (1 - h2**2)).T @ h1)


def test_shallow_floor_trains_only_the_top():
    model = MLP([5, 4, 4, 3], "tanh")
    bench_floor._Floor(model, ["1", "3"], None, None)
    F.cross_entropy(model(torch.randn(4, 5)), torch.tensor([0, 1, 2, 0])).backward()
    assert model[0].weight.grad is None and model[2].weight.grad is None
    assert model[4].weight.grad is not None


def test_ratio_interval_is_paired():
    base = np.array([10.0, 20.0, 30.0, 40.0, 50.0])
    exact = benchmark.ratio_interval(2 * base, base)
    assert exact == {"ratio": 2.0, "low": 2.0, "high": 2.0}  # paired: the load drift cancels
    rng = np.random.default_rng(1)
    noisy = benchmark.ratio_interval(base * rng.uniform(0.9, 1.1, 5), base)
    assert noisy["low"] <= noisy["ratio"] <= noisy["high"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown families \\['vgg'\\]"):
        benchmark.workloads(["vgg"])
    [workload] = benchmark.workloads(["mlp"], "tiny")
    with pytest.raises(ValueError, match="rounds must be >= 2"):
        benchmark.run_workload(workload, rounds=1)
    with pytest.raises(ValueError, match="must include BP"):
        benchmark.run_workload(workload, ["DFA"])


def test_the_committed_benchmark_tables_are_the_rendering_of_the_committed_json():
    """docs/BENCHMARKS.md's per-family tables come from docs/results/benchmark.json."""
    import re
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent / "docs"
    text = (docs / "BENCHMARKS.md").read_text()
    blocks = re.findall(r"<!-- bench: (\S+) -->\n(.*?)\n<!-- /bench -->", text, flags=re.S)
    assert blocks, "no <!-- bench: ... --> table in docs/BENCHMARKS.md"
    for name, table in blocks:
        results, machine = benchmark.load_results(docs / name)
        assert table == benchmark.to_markdown(results, machine), f"{name} and its table differ"


def test_compiled_twins_are_timed_against_compiled_bp(tmp_path):
    """``bench --compile aot_eager`` (inductor in real runs: seconds to minutes per row to
    compile, too slow for a unit test) adds a compiled twin of each BP and rule row, with its
    ratio to compiled BP, and the markdown table grows that column. 10 s on the 2-core machine."""
    out = tmp_path / "b.json"
    argv = ["bench", "--size", "tiny", "--families", "mlp", "--rules", "BP", "DFA", "FA"]
    argv += ["--rounds", "2", "--warmup", "0", "--compile", "aot_eager", "--out", str(out), "-q"]
    torch._dynamo.reset()
    try:
        assert main(argv) == 0
    finally:
        torch._dynamo.reset()
    payload = json.loads(out.read_text())
    assert payload["settings"]["compile"].startswith("torch.compile(model, backend='aot_eager')")
    rows = payload["workloads"][0]["rows"]
    compiled = {r["rule"]: r for r in rows if r["kind"] == "compiled"}
    assert set(compiled) == {"BP", "DFA", "FA"}
    for row in compiled.values():
        assert row["status"] == "ok" and "compiled, aot_eager" in row["note"]
        assert set(row["time_vs_compiled_bp"]) == {"ratio", "low", "high"}
    assert compiled["BP"]["time_vs_compiled_bp"]["ratio"] == 1.0
    assert all(r["time_vs_compiled_bp"] is None for r in rows if r["kind"] != "compiled")
    table = out.with_suffix(".md").read_text()
    assert "vs compiled BP [95% CI]" in table and "| DFA (compiled, aot_eager" in table


def test_the_old_module_name_still_imports_with_a_warning():
    import importlib
    import sys

    sys.modules.pop("feedback_alignment.benchmark", None)
    with pytest.warns(FutureWarning, match="moved to feedback_alignment.bench"):
        old = importlib.import_module("feedback_alignment.benchmark")
    assert old is benchmark and old.run is benchmark.run
