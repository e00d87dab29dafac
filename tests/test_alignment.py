"""Alignment measurements: right values, and no side effects on the model being trained."""

from __future__ import annotations

import math
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
from oracle import project, slices, softmax_ce_error


def _model(dropout: float = 0.0, norm: bool = False):
    torch.manual_seed(0)
    layers = [nn.Linear(6, 8), nn.BatchNorm1d(8) if norm else nn.Identity(), nn.Tanh()]
    layers += [
        nn.Dropout(dropout),
        nn.Linear(8, 7),
        nn.Tanh(),
        nn.Dropout(dropout),
        nn.Linear(7, 3),
    ]
    return nn.Sequential(*layers).double()


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return torch.randn(16, 6, dtype=torch.float64), torch.randint(0, 3, (16,))


def test_alignment_leaves_grads_buffers_and_rng_untouched(batch):
    model = _model(dropout=0.3, norm=True)
    rule = fa.DFA(seed=2)
    rule.apply(model)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    model.train()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    rng = torch.get_rng_state()
    report = fa.alignment(model, rule, batch, F.cross_entropy)
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in model.parameters())
    for name, value in model.named_buffers():
        if name in buffers:
            assert torch.equal(value, buffers[name]), name
    assert torch.equal(torch.get_rng_state(), rng)
    # both passes saw the same dropout masks: the top layer's update is BP's exactly
    assert report.update_angle["7"] == pytest.approx(0.0, abs=1e-5)


def test_bp_rule_aligns_perfectly(batch):
    model = _model()
    rule = fa.BP()
    report = fa.alignment(model, rule, batch, F.cross_entropy)
    assert set(report.update_angle) == {"0", "4", "7"}
    assert all(angle == pytest.approx(0.0, abs=1e-5) for angle in report.update_angle.values())


def test_dfa_alignment_matches_hand_computation(batch):
    x, y = batch
    model = _model()
    reference = _model()  # same weights, plain backprop
    rule = fa.DFA(seed=4)
    rule.apply(model)
    report = fa.alignment(model, rule, batch, F.cross_entropy)

    # the rule's updates, from the library's ordinary training path
    F.cross_entropy(model(x), y).backward()
    # BP's updates and BP's signals dL/dh at each point, from plain autograd on the copy
    h1 = torch.tanh(reference[0](x))
    h2 = torch.tanh(reference[4](h1))
    out = reference[7](h2)
    loss = F.cross_entropy(out, y)
    bp = torch.autograd.grad(
        loss, [reference[0].weight, reference[4].weight, reference[7].weight, h1, h2]
    )

    def angle(a, b):
        cos = float((a * b).sum() / (a.norm() * b.norm()))
        return math.degrees(math.acos(max(-1.0, min(1.0, cos))))

    assert report.update_angle["0"] == pytest.approx(angle(model[0].weight.grad, bp[0]), abs=1e-6)
    assert report.update_angle["4"] == pytest.approx(angle(model[4].weight.grad, bp[1]), abs=1e-6)
    assert report.update_angle["7"] == pytest.approx(0.0, abs=1e-5)
    assert report.hidden == ["0", "4"]

    b1, b2 = slices(
        model.state_dict()[fa.FEEDBACK_BUFFER], [8, 7], shared=True, scaling="principled"
    )
    e = softmax_ce_error(out.detach(), y)
    for point, feedback, h, true_signal in (("2", b1, h1, bp[3]), ("5", b2, h2, bp[4])):
        signal = project(e, feedback, h)
        cos = F.cosine_similarity(signal, true_signal, dim=1)
        mean, std = report.signal_cosine[point]
        assert mean == pytest.approx(float(cos.mean()), abs=1e-8)
        assert std == pytest.approx(float(cos.std()), abs=1e-8)


def test_shallow_hidden_layers_have_no_update(batch):
    model = _model()
    rule = fa.Shallow()
    rule.apply(model)
    report = fa.alignment(model, rule, batch, F.cross_entropy)
    assert math.isnan(report.update_angle["0"]) and math.isnan(report.update_angle["4"])
    assert report.update_angle["7"] == pytest.approx(0.0, abs=1e-5)
    assert report.signal_cosine == {}


def test_drtp_alignment_sets_targets_itself(batch):
    model = _model()
    rule = fa.DRTP()
    rule.apply(model)
    report = fa.alignment(model, rule, batch, F.cross_entropy)
    assert set(report.hidden_angles()) == {"0", "4"}


def test_monitor_measures_every_n_steps(batch):
    model = _model()
    rule = fa.DFA()
    rule.apply(model)
    seen = []
    monitor = fa.AlignmentMonitor(
        model, rule, F.cross_entropy, every=3, callback=lambda s, r: seen.append(s)
    )
    results = [monitor.step(batch) for _ in range(7)]
    assert [r is not None for r in results] == [False, False, True, False, False, True, False]
    assert seen == [3, 6] and [s for s, _ in monitor.history] == [3, 6]
    with pytest.raises(ValueError, match=r"every must be >= 1"):
        fa.AlignmentMonitor(model, rule, F.cross_entropy, every=0)


def test_alignment_requires_applied_rule(batch):
    with pytest.raises(RuntimeError, match=r"not applied"):
        fa.alignment(_model(), fa.DFA(), batch, F.cross_entropy)


def test_monitor_warns_when_a_layer_stays_misaligned(batch, monkeypatch):
    model = _model()
    rule = fa.DFA()
    rule.apply(model)
    fake = fa.AlignmentReport(update_angle={"0": 120.0, "4": 30.0, "7": 0.0}, hidden=["0", "4"])
    module = sys.modules["feedback_alignment.alignment"]  # fa.alignment is the function
    monkeypatch.setattr(module, "alignment", lambda *a, **k: fake)
    monitor = fa.AlignmentMonitor(model, rule, F.cross_entropy, every=1, patience=2, warmup=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing during the warm-up and the first of two
        monitor.step(batch)
        monitor.step(batch)
    with pytest.warns(UserWarning, match=r"layer '0'.*more than 90 degrees"):
        monitor.step(batch)
