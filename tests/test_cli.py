"""The command line: the demo's quick path, the benchmark's plumbing, reproduce's task registry."""

from __future__ import annotations

import json
import math

import pytest

from feedback_alignment import benchmark
from feedback_alignment.cli import main
from feedback_alignment.experiments import demo


def test_demo_dfa_beats_shallow_and_aligns(tmp_path, capsys):
    out = tmp_path / "demo.json"
    code = main(["demo", "--epochs", "8", "--seeds", "0", "--quiet", "--out", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "| DFA |" in table and "| Shallow |" in table
    runs = {r["rule"]: r for r in json.loads(out.read_text())["runs"]}
    assert runs["DFA"]["test_accuracy"] > runs["Shallow"]["test_accuracy"] + 0.03
    assert runs["DFA"]["test_accuracy"] > runs["BP"]["test_accuracy"] - 0.05
    angles = runs["DFA"]["hidden_update_angle"]
    assert len(angles) == 3 and all(0 < a < 90 for a in angles.values())
    assert all(math.isnan(a) for a in runs["Shallow"]["hidden_update_angle"].values())


def test_demo_rejects_unknown_rule():
    with pytest.raises(ValueError, match=r"unknown demo rules \['XYZ'\]"):
        demo.run(demo.DemoConfig(rules=("XYZ",)), progress=False)


def test_bench_plumbing_writes_ratios(tmp_path):
    # two rounds on a tiny MLP: checks the JSON and table, not the speed (see docs/BENCHMARKS.md)
    results, machine = benchmark.run(
        {"tiny": [8, 16, 16, 3]}, batch=4, rounds=2, output=tmp_path / "b.json"
    )
    payload = json.loads((tmp_path / "b.json").read_text())
    rules = [r["rule"] for r in payload["configs"][0]["results"]]
    assert rules == ["BP", "DFA", "sign-DFA", "DRTP", "Shallow", "FA", "uSF", benchmark.MINIMAL_DFA]
    assert payload["configs"][0]["results"][0]["time_ratio"] == 1.0
    assert "| tiny (batch 4) | DFA |" in benchmark.to_markdown(results, machine)


def test_bench_requires_bp(capsys):
    assert main(["bench", "--rules", "DFA", "--quiet"]) == 2
    assert "needs BP" in capsys.readouterr().err


def test_reproduce_quick_digits(tmp_path, capsys):
    assert main(["reproduce", "--tasks", "digits", "--quick", "-q", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "digits" / "results.json").exists()
    assert "digits" in (tmp_path / "REPORT.md").read_text()


def test_reproduce_unknown_task(capsys):
    assert main(["reproduce", "--tasks", "nope", "-q"]) == 2
    assert "unknown task(s) ['nope']" in capsys.readouterr().err


def test_bad_int_list_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--hidden", "a,b"])
    assert "comma-separated integers" in capsys.readouterr().err
