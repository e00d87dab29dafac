"""The ``resnet`` task: a BatchNorm ResNet on the LeNet task's loop, its own tuned rates."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from feedback_alignment.experiments import convnets, presets, resnet, resnet_seeds, tuning
from feedback_alignment.experiments.registry import tasks
from feedback_alignment.experiments.run import make_rule
from feedback_alignment.models import ResNet


def _quadrants(n: int = 96) -> tuple[torch.Tensor, ...]:
    """Four separable classes (a bright square in one quadrant), 2/3 training, 1/3 test."""
    torch.manual_seed(0)
    x = torch.rand(n, 1, 16, 16) * 0.1
    y = torch.randint(0, 4, (n,))
    for i, label in enumerate(y.tolist()):
        row, col = divmod(label, 2)
        x[i, 0, 8 * row : 8 * row + 6, 8 * col : 8 * col + 6] += 1.0
    cut = 2 * n // 3
    return x[:cut], y[:cut], x[cut:], y[cut:]


def test_the_task_trains_a_batchnorm_resnet_with_each_rule(tmp_path, one_thread):
    assert "resnet" in tasks()
    config = replace(
        presets.preset("resnet", "quick", resnet.ResNetConfig()),
        batch_size=16,
        probe_size=16,
        tuned=False,
    )
    records, markdown, files = resnet.run_and_write(
        config, tmp_path, tensors=_quadrants(), progress=False, quick=True
    )
    assert [r.rule for r in records] == list(resnet.RULES)
    assert all(not r.manhattan and 0 <= r.test_error <= 100 for r in records)
    # BioTorch's CIFAR-10 ResNet-20 figures stand beside ours, labelled as such
    assert "| uSF | 0.001 |" in markdown and "10.05" in markdown and "CIFAR-10" in markdown
    assert "ResNet-8 (BatchNorm, width 4)" in markdown and "**QUICK MODE**" in markdown
    assert {f.name for f in files} >= {"results.json", "resnet_fashion_mnist.json"}
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["config"]["depth"] == 8 and payload["quick"] is True
    with pytest.raises(ValueError, match=r"unknown rules \['XYZ'\]"):
        resnet.run_and_write(replace(config, rules=("XYZ",)), tmp_path, tensors=_quadrants())


def test_measuring_angles_leaves_batchnorm_statistics_as_they_were():
    """The angle probe runs the model in training mode; its batch must not leak into the running
    statistics that the test error is measured with (``alignment`` restores every buffer)."""
    torch.manual_seed(0)
    model = ResNet(depth=8, in_channels=1, width=4)
    rule = make_rule("uSF", 0)
    rule.apply(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = (torch.randn(8, 1, 16, 16) * 3 + 1, torch.arange(8) % 10)
    entry = convnets._measure(model, rule, probe, 0)
    assert entry["update_angle"] and entry["weight_angle"]
    # the angles are of the conv and linear layers: BatchNorm's affine parameters are left out
    assert set(entry["update_angle"]) == set(entry["weight_angle"])
    assert "blocks.0.conv1" in entry["update_angle"] and "blocks.0.bn1" not in entry["update_angle"]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resnet_reads_its_own_tuned_rates_not_the_lenet_ones(tmp_path: Path):
    stored = {"arms": {"uSF": {"values": {"lr": 4e-3}}}}
    (tmp_path / "resnet.json").write_text(json.dumps(stored))
    (tmp_path / "convnets.json").write_text(json.dumps({"arms": {"FA": {"values": {"lr": 7e-3}}}}))
    config = resnet.ResNetConfig(tuned_dir=tmp_path)
    assert convnets.learning_rate(config, "uSF", False) == 4e-3
    assert convnets.learning_rate(config, "FA", False) == config.lr
    assert set(tuning.tunables()["resnet"].arms) == set(resnet.RULES)


def test_a_tuning_trial_scores_held_out_training_images(monkeypatch):
    """The objective trains on the training split less the held-out images, scores those, and
    never reads the test images."""
    seen = {}
    train = torch.arange(60.0).reshape(60, 1, 1, 1).expand(60, 1, 16, 16)  # image i is all i
    labels = torch.randint(0, 10, (60,))
    test = torch.full((20, 1, 16, 16), float("nan"))  # reading these would poison the score
    monkeypatch.setattr(
        convnets, "load_fashion_mnist", lambda config: (train, labels, test, labels[:20])
    )

    def fake_train(rule, manhattan, seed, config, tensors, progress, lr):
        seen.update(rule=rule, lr=lr, sizes=[len(t) for t in tensors], x_val=tensors[2])
        seen.update(ids=[set(t[:, 0, 0, 0].tolist()) for t in (tensors[0], tensors[2])])
        return convnets.RunRecord(rule, manhattan, seed, 12.5, 0.0, lr=lr)

    monkeypatch.setattr(convnets, "train_one", fake_train)
    objective = convnets.validation_objective(
        lambda: resnet.ResNetConfig(),
        lambda: presets.preset("resnet", "quick", resnet.ResNetConfig()),
        train_size=30,
    )
    reported = []
    assert objective("uSF", {"lr": 2e-3}, lambda s, v: reported.append(v), False) == 12.5
    assert seen["rule"] == "uSF" and seen["lr"] == 2e-3 and reported == [12.5]
    assert seen["sizes"] == [30, 30, 12, 12]  # 12 held out (a fifth), 30 of the other 48
    assert torch.isfinite(seen["x_val"]).all()
    trained, held = seen["ids"]
    assert len(trained) == 30 and len(held) == 12 and not trained & held  # disjoint


def test_resnet_seeds_pairs_the_usf_gap_by_seed_against_biotorchs_adam_column(tmp_path, one_thread):
    assert "resnet-seeds" in tasks()
    config = replace(
        presets.preset("resnet-seeds", "quick", resnet_seeds.ResNetSeedsConfig()),
        batch_size=16,
        probe_size=16,
        tuned=False,
        seeds=(0, 1),
    )
    records, markdown, _ = resnet_seeds.run_and_write(
        config, tmp_path, tensors=_quadrants(), progress=False, quick=True
    )
    assert sorted((r.rule, r.seed) for r in records) == [
        ("BP", 0),
        ("BP", 1),
        ("uSF", 0),
        ("uSF", 1),
    ]
    error = {(r.rule, r.seed): r.test_error for r in records}
    gaps = resnet_seeds.paired_gaps(records)
    assert gaps == {s: error[("uSF", s)] - error[("BP", s)] for s in (0, 1)}
    table = json.loads((tmp_path / "resnet_seeds_fashion_mnist.json").read_text())
    rows = {row[0]: row for row in table["rows"]}
    gap_row = rows["uSF − BP (paired by seed)"]
    assert gap_row[2]["mean"] == pytest.approx(sum(gaps.values()) / 2)
    # BioTorch's Adam column (the optimiser that matches ours), not its SGD one
    assert rows["BP"][-1] == 10.01 and rows["uSF"][-1] == 10.59 and gap_row[-1] == 0.58
    assert rows["BP"][4] == config.epochs and "250 epochs" in markdown


def test_resnet_seeds_reads_the_resnet_tasks_rates(tmp_path: Path):
    (tmp_path / "resnet.json").write_text(json.dumps({"arms": {"uSF": {"values": {"lr": 4e-3}}}}))
    config = resnet_seeds.ResNetSeedsConfig(tuned_dir=tmp_path)
    assert convnets.learning_rate(config, "uSF", False) == 4e-3
    assert config.rules == ("BP", "uSF") and config.seeds == (0, 1, 2)
