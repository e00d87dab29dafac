"""The principled-DFA experiments: their pieces, and every part end to end in the tiny setting."""

from __future__ import annotations

import json
import math
from dataclasses import replace
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
    model, points = p.bottleneck_mlp(6, 3, "rows", wide=12)
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
        replace(p.TINY, mlp_datasets=("digits", "mnist-5k"))


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
    for arm in ("entries-sgd", "entries-adam", "rows", "narrow"):
        assert curves[arm]["width"] == list(p.TINY.bottleneck_widths)
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
                     {"variant": "narrow", "width": width, "arm": "narrow"})  # fmt: skip

    runs = [
        run("BP", 1, 0, 0.40),
        run("BP", 1, 1, 0.60),
        run("BP", 4, 0, 0.8),
        run("BP", 4, 1, 0.9),
    ]
    runs += [run("DFA", b, s, 0.5) for b in (1, 4) for s in (0, 1)]
    masked = [p.Run(**{**r.__dict__, "settings": {"variant": "entries", "arm": "entries-sgd",
                                                  "width": r.settings["width"]}})
              for r in runs if r.rule == "DFA"]  # fmt: skip
    result = {"runs": runs + masked, "curves": bottleneck.curves(runs + masked), "features": 4}
    caption = bottleneck.summary(result, p.TINY).caption
    assert (
        "BP (narrow, Adam): 50.00% at b=1, 85.00% at b=4" in caption
        and "Means over 2 seed(s)" in caption
    )


# --- the bottleneck with the paper's definition (issue 22) -----------------------------------


def test_the_papers_mask_zeroes_a_fixed_fraction_of_gradient_entries_and_keeps_the_output():
    from feedback_alignment.experiments.principled.bottleneck import EntryMaskedLinear

    torch.manual_seed(0)
    model, points = p.bottleneck_mlp(6, 3, "entries", wide=12)
    middle = model[3]
    assert isinstance(middle, EntryMaskedLinear) and points == ["2", "4", "6"]
    # b/wide of the entries: 3/12 of 144 weights, 3 of 12 biases
    assert int(middle.weight_mask.sum()) == 36 and int(middle.bias_mask.sum()) == 3
    torch.manual_seed(0)  # the same initial weights as the plain model of that seed
    plain, _ = p.bottleneck_mlp(6, 12, "narrow", wide=12)
    x = torch.randn(5, 6)
    assert torch.equal(model(x), plain(x))
    rule = DFA(seed=0)
    rule.apply(model, points=points)
    before = middle.weight.detach().clone()
    loss = F.cross_entropy(model(x), torch.randint(0, 10, (5,)))
    loss.backward()
    grad = middle.weight.grad
    assert torch.all(grad[middle.weight_mask == 0] == 0)
    assert torch.count_nonzero(grad[middle.weight_mask == 1]) > 0
    assert torch.all(middle.bias.grad[middle.bias_mask == 0] == 0)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    changed = middle.weight.detach() != before
    assert torch.equal(changed, changed & (middle.weight_mask == 1))
    # every unit still receives B e: the feedback point is all 12 units wide
    assert list(rule.layout(model).widths) == [12, 12, 12]
    assert set(middle.state_dict()) == {"weight", "bias", "weight_mask", "bias_mask"}


def test_the_papers_cosine_is_over_all_units_of_the_middle_layer():
    from feedback_alignment.alignment import alignment

    torch.manual_seed(0)
    model, points = p.bottleneck_mlp(6, 1, "entries", wide=12)
    rule = DFA(seed=0)
    rule.apply(model, points=points)
    report = alignment(model, rule, (torch.randn(64, 6), torch.randint(0, 10, (64,))),
                       F.cross_entropy)  # fmt: skip
    mean, _ = report.signal_cosine["4"]
    # over 12 units a per-sample cosine is not a sign (the rows variant at b = 1 gives +-1)
    assert -1.0 < mean < 1.0
    rows, row_points = p.bottleneck_mlp(6, 1, "rows", wide=12)
    rows_rule = DFA(seed=0)
    with pytest.warns(UserWarning):
        rows_rule.apply(rows, points=row_points)
        other = alignment(rows, rows_rule, (torch.randn(64, 6), torch.randint(0, 10, (64,))),
                          F.cross_entropy)  # fmt: skip
    mean_sign, std_sign = other.signal_cosine["3.act"]
    # each sample's cosine is +1 or -1, so mean^2 + std^2 = 1 (the sign agreement)
    assert mean_sign**2 + std_sign**2 == pytest.approx(1.0, abs=0.05)
    assert mean**2 + report.signal_cosine["4"][1] ** 2 < 0.9


def test_the_papers_optimiser_is_plain_sgd_on_a_summed_loss():
    from feedback_alignment.experiments.principled import bottleneck
    from feedback_alignment.experiments.principled.common import Recipe

    recipe = bottleneck.recipe_for(p.FULL, "sgd-sum")
    assert (recipe.optimizer, recipe.momentum, recipe.reduction) == ("sgd", 0.0, "sum")
    assert recipe.lr == 5e-4 and recipe.epochs == p.FULL.bottleneck_long_epochs > 1
    assert bottleneck.recipe_for(p.FULL, "adam").reduction == "mean"
    with pytest.raises(ValueError, match="unknown loss reduction 'max'"):
        Recipe(1, reduction="max")
    # SGD on the sum at lr / N takes the very step of SGD on the mean at lr
    split = Split("toy", torch.randn(32, 1, 2, 2), torch.randint(0, 10, (32,)),
                  torch.randn(8, 1, 2, 2), torch.randint(0, 10, (8,)))  # fmt: skip
    weights = []
    for reduction, lr in (("sum", 0.1 / 32), ("mean", 0.1)):
        recipe = Recipe(1, lr, "sgd", batch_size=32, momentum=0.0, reduction=reduction)
        built = []

        def build(built=built):
            model = p.block_mlp((4, 8, 10))[0]
            built.append(model)
            return model, None

        p.common.train_run("t", "t", "BP", build, split, recipe, seed=0, probe=8, progress=False)
        weights.append(built[0][1].weight.detach().clone())
    assert torch.allclose(weights[0], weights[1], atol=1e-6)


def test_the_bottleneck_runs_are_saved_as_they_end(tmp_path):
    from feedback_alignment.experiments.run import saved_runs

    with saved_runs(tmp_path / "saved") as store:
        p.run_parts(("bottleneck",), tmp_path / "out", p.TINY, seeds=(0,), progress=False)
    widths = len(p.TINY.bottleneck_widths)
    assert store.count() == 4 * widths + 2  # four DFA arms per width, BP at the two extremes
    with saved_runs(tmp_path / "saved") as again:
        p.run_parts(("bottleneck",), tmp_path / "again", p.TINY, seeds=(0,), progress=False)
    assert again.resumed == again.total == 4 * widths + 2


@pytest.mark.parametrize("part", ["mlp", "conv", "practices"])
def test_every_principled_part_saves_its_runs_and_resumes(tmp_path, part):
    """The parts that looped over their runs themselves go through run_jobs too: each run is
    saved as it ends, and a second pass resumes them all (before, a killed part lost them)."""
    from feedback_alignment.experiments.run import saved_runs

    with saved_runs(tmp_path / "saved") as store:
        p.run_parts((part,), tmp_path / "out", p.TINY, seeds=(0,), progress=False)
    assert store.count() > 0
    with saved_runs(tmp_path / "saved") as again:
        p.run_parts((part,), tmp_path / "again", p.TINY, seeds=(0,), progress=False)
    assert again.resumed == again.total == store.count()
    tables = [sorted((tmp_path / d).glob("principled_*.md")) for d in ("out", "again")]
    assert tables[0] and [t.name for t in tables[0]] == [t.name for t in tables[1]]
    for a, b in zip(*tables, strict=True):
        assert a.read_text() == b.read_text()  # the resumed runs render the same table
