"""The principled-DFA experiments: their pieces, and every part end to end in the tiny setting."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from feedback_alignment.experiments import principled as p
from feedback_alignment.experiments.registry import groups, resolve, tasks
from feedback_alignment.rules import DFA


def test_spearman_ranks_with_ties():
    assert p.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert p.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert p.spearman([1, 2, 3, 4], [1, 1, 2, 2]) == pytest.approx(0.894427, abs=1e-6)
    assert math.isnan(p.spearman([1, 2], [1, 2]))
    with pytest.raises(ValueError, match="2 x values, 3 y values"):
        p.spearman([1, 2], [1, 2, 3])


def test_partly_trained_layer_updates_only_its_trained_units():
    torch.manual_seed(0)
    model, points = p.bottleneck_mlp(6, 3, "masked", wide=12)
    middle = model[3]
    frozen_before = middle.frozen.weight.detach().clone()
    trained_before = middle.trained.weight.detach().clone()
    rule = DFA(seed=0)
    rule.apply(model, points=points)
    optimizer = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=0.1)
    with pytest.warns(UserWarning, match=r"feedback points \{'3.act': 3\} are narrower"):
        loss = F.cross_entropy(model(torch.randn(5, 6)), torch.randint(0, 10, (5,)))
    loss.backward()
    optimizer.step()
    assert model(torch.randn(2, 6)).shape == (2, 10)
    assert torch.equal(middle.frozen.weight, frozen_before)
    assert not torch.equal(middle.trained.weight, trained_before)
    assert [w for _, w in zip(points, rule.layout(model).widths, strict=True)] == [12, 3, 12]


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"trained units must be in \[1, 8\], got 9"):
        p.PartlyTrained(4, 8, 9)
    with pytest.raises(ValueError, match="unknown bottleneck variant 'wide'"):
        p.bottleneck_mlp(4, 2, "wide")
    with pytest.raises(ValueError, match=r"unknown principled parts \['nope'\]"):
        p.run_parts(["nope"], tmp_path, p.TINY)
    with pytest.raises(ValueError, match="2 MLP data sets but 1 epoch counts"):
        p.with_setting(p.TINY, mlp_datasets=("digits", "mnist-5k"))


def test_parts_are_tasks_and_the_umbrella_is_a_group():
    parts = [f"principled-{part}" for part in p.PARTS]
    names = set(tasks())
    assert set(parts) <= names and "principled" not in names
    assert groups()["principled"].members == tuple(parts)
    # running every task runs each part once and no umbrella on top of them
    everything = list(resolve(["all"]))
    assert len(everything) == len(set(everything)) == len(names)
    assert list(resolve(["principled"])) == parts
    assert list(resolve(["principled-conv,principled", "principled-mlp"])) == [
        "principled-conv",
        *[n for n in parts if n != "principled-conv"],
    ]
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['principled-nope'\].*groups: "):
        resolve(["principled-nope"])


def test_every_part_runs_in_the_tiny_setting(tmp_path):
    # seconds on digits: checks the plumbing (JSON, tables, plots), not the papers' claims
    report = p.run_parts(p.PARTS, tmp_path, p.TINY, seeds=(0,), progress=False)
    for part in p.PARTS:
        payload = json.loads((tmp_path / f"{part}.json").read_text())
        assert payload["runs"] and all(0 <= r["test_accuracy"] <= 1 for r in payload["runs"])
        assert p.PART_TITLES[part] in report.markdown
        # the docs format, marked as a smoke-scale run (tiny is not the full setting)
        table = json.loads((tmp_path / f"principled_{part}.json").read_text())
        assert table["mode"] == "quick" and table["provenance"]["seeds"] == [0]
        assert (tmp_path / f"principled_{part}.md").read_text().startswith("**QUICK MODE**")
    names = {f.name for f in report.files}
    assert {"alignment_angles.png", "alignment_cosine.png", "bottleneck_cosine.png"} <= names
    curves = json.loads((tmp_path / "bottleneck.json").read_text())["curves"]
    assert curves["masked"]["width"] == list(p.TINY.bottleneck_widths)
    history = json.loads((tmp_path / "alignment.json").read_text())["history"]
    assert history and len(history[0]["angles"]) == p.TINY.deep[0]
    rules = {r["rule"] for r in json.loads((tmp_path / "mlp.json").read_text())["runs"]}
    assert {"BP", "DFA", "Shallow"} <= rules
    assert "| DFA, convolutions frozen |" in report.markdown
