"""The ``learned-feedback`` task (BP, DFA, DKP, FDFA on a LeNet) on a tiny synthetic subset."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from feedback_alignment.experiments import learned_feedback as lf
from feedback_alignment.experiments import learned_feedback_resnet as lfr
from feedback_alignment.experiments import presets, tuning
from feedback_alignment.experiments.registry import tasks
from feedback_alignment.experiments.run import saved_runs


def _tensors():
    """Four separable classes (a bright square in one quadrant): 96 training, 32 test images."""
    torch.manual_seed(0)
    x = torch.rand(128, 1, 28, 28) * 0.1
    y = torch.randint(0, 4, (128,))
    for i, label in enumerate(y.tolist()):
        row, col = divmod(label, 2)
        x[i, 0, 14 * row : 14 * row + 10, 14 * col : 14 * col + 10] += 1.0
    return x[:96], y[:96], x[96:], y[96:]


def _config(**changes):
    return replace(
        presets.preset("learned-feedback", "quick", lf.LearnedConfig()),
        batch_size=32,
        probe_size=32,
        measurements=2,
        tuned=False,
        **changes,
    )


def test_task_and_search_are_registered():
    assert lf.TASK in tasks()
    declared = tuning.tunables()[lf.TASK]
    assert declared.arms == ("BP", "DFA", "DKP", "FDFA")


def test_quick_run_writes_results_and_the_learned_feedback_moves(tmp_path, one_thread):
    records, markdown, files = lf.run_and_write(
        _config(), tmp_path, tensors=_tensors(), progress=False, title="synthetic", quick=True
    )
    assert [r.rule for r in records] == list(lf.RULES)
    names = {f.name for f in files}
    assert {"results.json", "learned_feedback_synthetic.json"} <= names
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["quick"] is True and len(payload["runs"]) == 4
    assert all(0 <= r["test_error"] <= 100 for r in payload["runs"])
    table = json.loads((tmp_path / "learned_feedback_synthetic.json").read_text())
    assert [row[0] for row in table["rows"]] == list(lf.RULES)
    assert "**QUICK MODE**" in markdown and "| DKP |" in markdown and "| FDFA |" in markdown
    by_rule = {r.rule: r for r in records}
    # the fixed-feedback rules have no learned B
    assert math.isnan(by_rule["BP"].feedback_change_norm)
    assert math.isnan(by_rule["DFA"].feedback_change_norm)
    # DKP's B starts at its draw and moves; FDFA's starts at 0 and becomes an estimate
    dkp, fdfa = by_rule["DKP"], by_rule["FDFA"]
    assert dkp.feedback_start_norm > 0 and dkp.feedback_change_norm > 1e-4
    assert fdfa.feedback_start_norm == 0 and fdfa.feedback_end_norm > 1e-4
    # BP's own update angle is 0; the conv layers of every rule are measured
    assert all(v is not None and v < 1e-3 for v in lf.conv_angles(by_rule["BP"]).values())
    for rule in ("DFA", "DKP", "FDFA"):
        angles = lf.conv_angles(by_rule[rule])
        assert all(v is not None and 0 < v < 180 for v in angles.values()), (rule, angles)


def test_the_feedback_has_its_own_adam_and_every_group_follows_the_schedule(one_thread):
    x = _tensors()[0]
    config = _config()
    for name, decay in (("DKP", 1e-6), ("FDFA", 0.0)):
        torch.manual_seed(0)
        model = config.build(1, 28)
        rule = lf.make_rule(name, model, 0, x[:2])
        (matrix,) = rule.feedback_parameters(model)
        opt = lf.optimizer(model, name, rule, config, 3e-3)
        weights, feedback = opt.optimizers
        assert isinstance(weights, torch.optim.AdamW) and type(feedback) is torch.optim.Adam
        assert all(p is not matrix for g in weights.param_groups for p in g["params"])
        assert feedback.param_groups[0]["params"] == [matrix]
        assert feedback.param_groups[0]["lr"] == config.feedback_lr
        assert feedback.param_groups[0]["weight_decay"] == decay
        # fit's schedule sets every group's rate: the facade exposes B's group too
        assert len(opt.param_groups) == len(weights.param_groups) + 1
    torch.manual_seed(0)
    model = config.build(1, 28)
    rule = lf.make_rule("DFA", model, 0, x[:2])
    assert isinstance(lf.optimizer(model, "DFA", rule, config, 3e-3), torch.optim.AdamW)


def test_a_killed_run_resumes_from_the_saved_runs(tmp_path, one_thread, monkeypatch):
    tensors = _tensors()
    config = _config()
    trained = lf.train_one
    finished = {}

    def killed_at_fdfa(rule, seed, config, tensors, progress=True, lr=None):
        if rule == "FDFA":
            raise KeyboardInterrupt  # the run is killed at its last job
        finished[rule] = trained(rule, seed, config, tensors, progress, lr)
        return finished[rule]

    monkeypatch.setattr(lf, "train_one", killed_at_fdfa)
    with saved_runs(tmp_path / "saved") as store, pytest.raises(KeyboardInterrupt):
        lf.run_experiment(config, tensors, progress=False)
    assert store.count() == 3 and list(finished) == ["BP", "DFA", "DKP"]
    monkeypatch.setattr(lf, "train_one", trained)
    with saved_runs(tmp_path / "saved") as again:
        records = lf.run_experiment(config, tensors, progress=False)
    assert again.resumed == 3 and again.count() == 4
    assert [r.rule for r in records] == list(lf.RULES)
    for record in records[:3]:
        kept = finished[record.rule]
        assert record.train_loss == kept.train_loss and record.test_error == kept.test_error
        assert record.history == kept.history
    dkp = records[2]
    assert dkp.feedback_change_norm == finished["DKP"].feedback_change_norm > 0
    assert records[3].feedback_end_norm > 0  # FDFA trained in the second call


def test_unknown_rules_and_no_seeds_are_refused(tmp_path):
    tensors = _tensors()
    with pytest.raises(ValueError, match=r"unknown rules \['FA'\]"):
        lf.run_experiment(_config(rules=("FA",)), tensors, progress=False)
    with pytest.raises(ValueError, match="at least one seed"):
        lf.run_experiment(_config(seeds=()), tensors, progress=False)


def test_late_angles_average_the_second_half_of_training():
    record = lf.LearnedRecord("DFA", False, 0, 10.0, 1.0)
    record.history = [
        {"step": s, "update_angle": {"0": a, "3": None if s == 6 else a + 1}}
        for s, a in ((0, 90.0), (2, 80.0), (4, 60.0), (6, 40.0), (8, 20.0))
    ]
    assert lf.late_conv_angles(record) == {"0": 40.0, "3": (61.0 + 21.0) / 2}
    assert lf.conv_angles(record) == {"0": 20.0, "3": 21.0}


# --- the ResNet variant, task learned-feedback-resnet ---------------------------------------


def test_task_and_search_are_registered_with_the_reduced_scale():
    assert lfr.TASK in tasks()
    assert tuning.tunables()[lfr.TASK].arms == ("BP", "DFA", "DKP", "FDFA")
    config = lfr.LearnedResNetConfig()
    # the stated reduced scale: ResNet-20 on 10,000 training images, 5 epochs, 3 seeds
    assert (config.depth, config.train_size, config.epochs, config.seeds) == (
        20, 10_000, 5, (0, 1, 2),
    )  # fmt: skip
    # the stored rates it reads are its own, not the LeNet task's
    assert config.task == lfr.TASK and lf.LearnedConfig().task == lf.TASK


def test_quick_run_writes_the_resnet_table_with_conv_angles(tmp_path, one_thread):
    config = replace(
        presets.preset("learned-feedback-resnet", "quick", lfr.LearnedResNetConfig()),
        batch_size=32,
        probe_size=32,
        tuned=False,
    )
    records, markdown, files = lf.run_and_write(
        config, tmp_path, tensors=_tensors(), progress=False, title="synthetic", quick=True,
        summary_of=lfr.summary, network="ResNet-8",
    )  # fmt: skip
    assert "learned_feedback_resnet_fashion_mnist.json" in {f.name for f in files}
    assert markdown.startswith("### learned-feedback-resnet: ResNet-8 on synthetic")
    table = json.loads((tmp_path / "learned_feedback_resnet_fashion_mnist.json").read_text())
    assert [row[0] for row in table["rows"]] == list(lf.RULES)
    by_rule = {r.rule: r for r in records}
    # every conv of the ResNet is measured (stem, 2 per block, the 1x1 shortcuts), not the fc
    layers = lfr.conv_layers(by_rule["DFA"])
    assert lfr.STEM in layers and "fc" not in layers and len(layers) == 9
    assert lfr.final_conv_angle(by_rule["BP"]) < 1e-3
    for rule in ("DFA", "DKP", "FDFA"):
        assert 0 < lfr.final_conv_angle(by_rule[rule]) < 180, rule
    assert by_rule["DKP"].feedback_change_norm > 1e-4


def test_the_conv_angle_means_the_layers_then_the_second_half():
    record = lf.LearnedRecord("DFA", False, 0, 10.0, 1.0)
    record.history = [
        {"step": s, "update_angle": {"conv": a, "blocks.0.conv1": a + 10, "fc": 0.0}}
        for s, a in ((0, 90.0), (4, 60.0), (8, 20.0))
    ]
    assert lfr.conv_layers(record) == ["conv", "blocks.0.conv1"]
    assert lfr.final_conv_angle(record) == pytest.approx(25.0)
    assert lfr.late_conv_angle(record) == pytest.approx((65.0 + 25.0) / 2)
    assert math.isnan(lfr.final_conv_angle(lf.LearnedRecord("BP", False, 0, 1.0, 1.0)))
