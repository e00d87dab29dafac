"""The principled-DFA experiments: their pieces, and every part end to end in the tiny setting."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from feedback_alignment.experiments import principled as p
from feedback_alignment.experiments import tuning
from feedback_alignment.experiments.principled import mlp
from feedback_alignment.experiments.principled.common import Split
from feedback_alignment.experiments.registry import RunOptions, groups, resolve, run_seeds, tasks
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


def test_the_mlp_part_runs_each_arm_at_its_own_rate(tmp_path):
    rates = {mlp.arm("digits", "1x32", "DFA"): 0.004, mlp.arm("digits", "3x16", "BP"): 0.0002}
    p.run_parts(("mlp",), tmp_path, p.TINY, seeds=(0,), progress=False, rates={"mlp": rates})
    runs = json.loads((tmp_path / "mlp.json").read_text())["runs"]
    lr = {(r["settings"]["arch"], r["rule"]): r["settings"]["lr"] for r in runs}
    assert lr[("1x32", "DFA")] == 0.004 and lr[("3x16", "BP")] == 0.0002
    assert lr[("1x32", "BP")] == lr[("3x16", "Shallow")] == p.TINY.lr  # none stored: the recipe's
    rows = json.loads((tmp_path / "principled_mlp.json").read_text())["rows"]
    assert rows[2][:4] == ["digits", "1x32", "DFA", "0.004"]


def test_the_mlp_rates_are_read_from_the_stored_search(tmp_path, monkeypatch):
    stored = {"arms": {"fashion-mnist/7x240/FA": {"values": {"lr": 3e-4}}}}
    (tmp_path / "principled-mlp.json").write_text(json.dumps(stored))
    passed: list[object] = []
    monkeypatch.setattr(p, "run_parts", lambda *args: passed.append(args[5]["mlp"]))
    for tuned in (True, False):
        tasks()["principled-mlp"].run(RunOptions(out_dir=tmp_path, tuned=tuned, tuned_dir=tmp_path))
    assert passed[0] == {"fashion-mnist/7x240/FA": 3e-4}
    assert passed[1] == {}
    arms = tuning.tunables()["principled-mlp"].arms
    assert len(arms) == 16 and "mnist-5k/1x800/Shallow" in arms
    space = tuning.tunables()["principled-mlp"].space
    # Shallow trains a linear read-out: its range reaches rates that would wreck the deep rules
    assert (
        space("mnist-5k/7x240/Shallow")["lr"].high == 0.3 > space("mnist-5k/7x240/DFA")["lr"].high
    )


def test_a_full_run_widens_the_default_seed_to_three_and_quick_keeps_one(tmp_path):
    full = RunOptions(out_dir=tmp_path, seeds=(4,))
    assert run_seeds(full) == (4, 5, 6)
    assert run_seeds(RunOptions(out_dir=tmp_path, seeds=(1, 9))) == (1, 9)
    assert run_seeds(RunOptions(out_dir=tmp_path, quick=True, seeds=(2, 3))) == (2,)


def test_a_trial_scores_held_out_training_images_never_the_test_set(monkeypatch):
    """The objective trains on the training images less those held out and scores on those:
    the test images of the split it loads must not reach the run at all."""
    x = torch.arange(100, dtype=torch.float32).view(100, 1, 1, 1)
    split = Split("toy", x, torch.zeros(100, dtype=torch.long), -x[:10], torch.ones(10).long())
    seen: list[tuple[Split, int, float]] = []

    def fake_train(setting, split_, arch, hidden, rule, recipe, seed, progress):
        seen.append((split_, seed, recipe.lr))
        return SimpleNamespace(error=10.0 + seed)

    reports: list[tuple[int, float]] = []
    monkeypatch.setattr(mlp, "load_split", lambda *args: split)
    monkeypatch.setattr(mlp, "_train", fake_train)
    score = mlp._objective("mnist-5k/7x240/FA", {"lr": 0.02}, lambda s, v: reports.append((s, v)),
                           False)  # fmt: skip
    assert score == pytest.approx(1011.0) and reports == [(1, 1010.0)]
    assert [s for _, s, _ in seen] == list(mlp.TRIAL_SEEDS) == [1000, 1001, 1002] and {
        lr for *_, lr in seen
    } == {0.02}
    used = seen[0][0]
    train, val = set(used.x_train.flatten().tolist()), set(used.x_test.flatten().tolist())
    assert len(val) == 20 and len(train) == 80 and not train & val
    assert train | val == set(range(100))  # only training images, none of the test set's


def test_the_conv_part_runs_each_arm_at_its_own_rate(tmp_path):
    from feedback_alignment.experiments.principled import conv

    assert tuning.tunables()["principled-conv"].arms == ("BP", "DFA", "DFA-frozen", "Shallow")
    rates = {"conv": {"DFA-frozen": 0.003}}
    p.run_parts(("conv",), tmp_path, p.TINY, seeds=(0,), progress=False, rates=rates)
    rows = {r[0]: r[1] for r in json.loads((tmp_path / "principled_conv.json").read_text())["rows"]}
    assert rows["DFA, convolutions frozen"] == "0.003" and rows["DFA"] == f"{p.TINY.lr:.2g}"
    assert set(conv.ARMS) == {label for label, *_ in conv.RUNS}


def test_a_conv_trial_trains_the_arms_run_on_held_out_images(monkeypatch):
    from feedback_alignment.experiments.principled import conv

    x = torch.arange(50, dtype=torch.float32).view(50, 1, 1, 1)
    split = Split("toy", x, torch.zeros(50, dtype=torch.long), -x[:5], torch.ones(5).long())
    seen = []
    monkeypatch.setattr(conv, "load_split", lambda *args: split)
    monkeypatch.setattr(
        conv, "_train", lambda *a: seen.append(a) or SimpleNamespace(error=12.5 + a[6])
    )
    assert conv._objective("DFA-frozen", {"lr": 0.01}, lambda s, v: None, False) == 1013.5
    _, used, label, rule, freeze, recipe, seed, _ = seen[0]
    assert (label, rule, freeze, recipe.lr, seed) == ("DFA, convolutions frozen", "DFA", True,
                                                      0.01, 1000)  # fmt: skip
    assert not set(used.x_test.flatten().tolist()) & set(used.x_train.flatten().tolist())
    assert min(used.x_test.flatten().tolist()) >= 0  # held-out training images, not the test set


def test_each_table_names_the_seeds_its_part_ran(tmp_path):
    p.run_parts(("alignment", "practices"), tmp_path, p.TINY, seeds=(0, 1), progress=False)
    seeds = {
        part: json.loads((tmp_path / f"principled_{part}.json").read_text())["provenance"]["seeds"]
        for part in ("alignment", "practices")
    }
    assert seeds == {"alignment": [0], "practices": [0, 1]}  # one monitored run, of seed 0


def test_the_bottleneck_caption_averages_bp_over_seeds():
    from feedback_alignment.experiments.principled import bottleneck

    def run(rule: str, width: int, seed: int, accuracy: float) -> p.Run:
        return p.Run("bottleneck", "x", rule, "toy", seed, accuracy, 0.1, {"1": 50.0},
                     {"a": (0.1, 0.0), "b": (0.2, 0.0), "c": (0.3, 0.0)}, 1.0,
                     {"variant": "narrow", "width": width})  # fmt: skip

    runs = [
        run("BP", 1, 0, 0.40),
        run("BP", 1, 1, 0.60),
        run("BP", 4, 0, 0.8),
        run("BP", 4, 1, 0.9),
    ]
    runs += [run("DFA", b, s, 0.5) for b in (1, 4) for s in (0, 1)]
    masked = [p.Run(**{**r.__dict__, "settings": {"variant": "masked", "width": r.settings["width"]}})
              for r in runs if r.rule == "DFA"]  # fmt: skip
    result = {"runs": runs + masked, "curves": bottleneck.curves(runs + masked), "features": 4}
    caption = bottleneck.table(result, p.TINY).caption
    assert (
        "BP, narrow: 50.00% at b=1, 85.00% at b=4" in caption and "Means over 2 seed(s)" in caption
    )
