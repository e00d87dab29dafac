"""Layer-wise rules: apply/remove, refusals, checkpoints, measurements, training techniques."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from feedback_alignment.alignment import alignment, weight_alignment
from feedback_alignment.optim import (
    NormConstraint,
    batch_manhattan,
    constrain_weight_norm,
    remove_weight_norm_constraint,
    sign_gradients_,
)
from feedback_alignment.rules import (
    DFA,
    FA,
    KolenPollack,
    SignSymmetry,
    UnsupportedLayerError,
    WeightMirror,
    brSF,
    frSF,
    uSF,
)

ALL_RULES = {
    "FA": lambda: FA(seed=1),
    "uSF": lambda: uSF(),
    "frSF": lambda: frSF(seed=1),
    "brSF": lambda: brSF(seed=1),
    "KP": lambda: KolenPollack(seed=1),
    "WM": lambda: WeightMirror(seed=1),
}


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 12),
        nn.ReLU(),
        nn.Linear(12, 3),
    )


def _batch(n: int = 6):
    return torch.randn(n, 1, 8, 8), torch.randint(0, 3, (n,))


def _grads(model, batch):
    """The gradients of the model's own parameters (not Kolen-Pollack's feedback parameters)."""
    model.zero_grad()
    F.cross_entropy(model(batch[0]), batch[1]).backward()
    return [p.grad.clone() for n, p in model.named_parameters() if "weight_feedback" not in n]


@pytest.mark.parametrize("name", list(ALL_RULES))
def test_apply_keeps_parameters_and_remove_restores_exactly(name):
    model = _net()
    params = list(model.parameters())
    modules = list(model.modules())
    keys = list(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # built before apply
    batch = _batch()
    bp = _grads(copy.deepcopy(model), batch)
    rule = ALL_RULES[name]()
    rule.apply(model)
    assert rule.is_applied(model)
    kept = [p for n, p in model.named_parameters() if not n.endswith("weight_feedback")]
    assert all(a is b for a, b in zip(kept, params, strict=True))
    added = {n for n, _ in model.named_parameters()} - {n for n, _ in _net().named_parameters()}
    assert added == (
        {"0.weight_feedback", "5.weight_feedback", "7.weight_feedback"} if name == "KP" else set()
    )
    assert rule.points(model) == ["0", "5", "7"]
    assert set(model.state_dict()) - set(keys) == {
        f"{i}.{b}" for i in (0, 5, 7) for b in rule.buffers
    }
    ruled = _grads(model, batch)
    if name == "KP":  # B^T receives W's raw local gradient
        for i in (0, 5, 7):
            torch.testing.assert_close(model[i].weight_feedback.grad, model[i].weight.grad)
    assert not torch.allclose(ruled[0], bp[0])  # the conv below the others gets another update
    torch.testing.assert_close(ruled[-2], bp[-2])  # the top layer's own gradient is the true one
    before = params[0].detach().clone()
    optimizer.step()
    assert not torch.equal(params[0], before)
    rule.remove(model)
    assert not rule.is_applied(model)
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.modules(), modules, strict=True))
    assert all("forward" not in m.__dict__ for m in model.modules())
    after = copy.deepcopy(model)
    torch.testing.assert_close(_grads(model, batch), _grads(after, batch))


@pytest.mark.parametrize("name", ["FA", "frSF", "brSF", "KP"])
def test_state_dict_round_trip_gives_identical_gradients(name):
    model = _net()
    rule = ALL_RULES[name]()
    rule.apply(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):  # a checkpoint between two optimizer steps; brSF's stream has advanced
        _grads(model, _batch())
        optimizer.step()
    saved = copy.deepcopy(model.state_dict())
    fresh = _net()
    other = type(rule)(seed=99)  # the seed does not matter: the feedback comes from the checkpoint
    other.apply(fresh)
    fresh.load_state_dict(saved)
    batch = _batch()
    torch.testing.assert_close(_grads(fresh, batch), _grads(model, batch), rtol=0, atol=0)


def test_unsupported_layers_are_refused_by_path_and_can_be_excluded():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.rnn = nn.LSTM(4, 5, batch_first=True)
            self.attn = nn.MultiheadAttention(5, 1, batch_first=True)
            self.head = nn.Linear(5, 2)
            self.norm = nn.LayerNorm(5)

        def forward(self, tokens):
            h, _ = self.rnn(self.embed(tokens))
            h, _ = self.attn(h, h, h)
            return self.head(self.norm(h))

    model = Net()
    with pytest.raises(UnsupportedLayerError, match=r"'rnn' \(LSTM\).*exclude=\['rnn'\]") as info:
        FA().apply(model)
    assert "'attn'" not in str(info.value)  # converted (tests/test_layerwise_attention.py)
    assert "'embed'" not in str(info.value) and "'norm'" not in str(info.value)
    assert not any("forward" in m.__dict__ for m in model.modules())  # nothing half-applied
    rule = FA()
    rule.apply(model, exclude=["rnn", "attn"])
    assert rule.points(model) == ["head"]
    model(torch.randint(0, 10, (2, 3))).sum().backward()
    with pytest.raises(ValueError, match=r"exclude=\['nope'\] names no submodule"):
        FA().apply(Net(), exclude=["nope"])


def test_refusals_name_the_problem():
    class Custom(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(UnsupportedLayerError, match=r"'0' \(Custom\) overrides Linear.forward"):
        FA().apply(nn.Sequential(Custom(3, 3)))
    with pytest.raises(UnsupportedLayerError, match=r"'0' \(LazyLinear\) is a lazy layer"):
        FA().apply(nn.Sequential(nn.LazyLinear(3)))
    with pytest.raises(UnsupportedLayerError, match=r"has no layer FA can convert \(nn.Linear, "):
        FA().apply(nn.Sequential(nn.ReLU()))
    with pytest.raises(
        UnsupportedLayerError,
        match=r"'0' \(ConvTranspose2d\) holds its own parameters \(weight, bias\)",
    ):
        uSF().apply(nn.Sequential(nn.ConvTranspose2d(2, 2, 3)))
    model = nn.Sequential(nn.Linear(3, 3))
    FA().apply(model)
    with pytest.raises(RuntimeError, match=r"already has layerwise feedback applied \(FA\("):
        uSF().apply(model)
    inner = nn.Sequential(model)  # the converted layer inside another model is still refused
    with pytest.raises(UnsupportedLayerError, match=r"already has its forward replaced"):
        uSF().apply(inner)
    with pytest.raises(RuntimeError, match=r"is not applied"):
        uSF().remove(model)
    with pytest.raises(ValueError, match=r"unknown scale"):
        FA(scale="big")
    with pytest.raises(ValueError, match=r"unknown distribution"):
        FA(distribution="cauchy")
    with pytest.raises(ValueError, match=r"unknown sign-symmetry variant"):
        SignSymmetry("xsf")
    with pytest.raises(ValueError, match=r"unknown norm"):
        uSF(norm="l1")


def test_eval_and_no_grad_run_the_layers_own_forward():
    model = _net()
    x, _ = _batch()
    expected = model.eval()(x)
    rule = brSF(seed=0)
    rule.apply(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert int(model.state_dict()["0.feedback_stream"][1]) == 0  # no draw without grad


def test_alignment_and_weight_alignment():
    model = _net()
    rule = FA(seed=3)
    rule.apply(model)
    batch = _batch(16)
    grads_before = [p.grad for p in model.parameters()]
    report = alignment(model, rule, batch, F.cross_entropy)
    assert all(g is None for g in grads_before) and all(p.grad is None for p in model.parameters())
    assert report.hidden == ["0", "1", "5"]  # BatchNorm "1" trains locally, a hidden layer too
    assert report.update_angle["7"] == pytest.approx(0.0, abs=1e-3)  # top: true gradient
    assert 0 < report.update_angle["0"] < 180
    assert report.signal_cosine["7"][0] == pytest.approx(1.0)
    angles = weight_alignment(model, rule)
    assert set(angles) == {"0", "5", "7"}
    assert all(60 < a.angle < 120 for a in angles.values())  # random B: about 90 degrees
    assert all(0.5 < a.norm_ratio < 2 for a in angles.values())  # "init" scale

    # with B = W^T the rule is backprop: update angles 0 everywhere
    state = model.state_dict()
    for key in [k for k in state if k.endswith("weight_feedback")]:
        state[key] = state[key.replace("weight_feedback", "weight")]
    model.load_state_dict(state)
    report = alignment(model, rule, batch, F.cross_entropy)
    assert max(report.update_angle.values()) < 1e-3
    assert max(a.angle for a in weight_alignment(model, rule).values()) < 1e-3

    sign = uSF()
    other = _net()
    sign.apply(other)
    assert all(a.angle < 60 for a in weight_alignment(other, sign).values())
    with pytest.raises(TypeError, match=r"weight_alignment needs a layer-wise rule"):
        weight_alignment(other, DFA())


def test_norm_match_rescales_feedback_to_the_weight_norm():
    model = _net()
    rule = FA(norm="match", scale=100.0)
    rule.apply(model)
    for report in weight_alignment(model, rule).values():
        assert report.norm_ratio == pytest.approx(1.0)


def test_weight_mirror_learns_w_transpose_from_noise():
    model = _net()
    rule = WeightMirror(seed=0)
    rule.apply(model)
    start = weight_alignment(model, rule)
    generator = torch.Generator().manual_seed(0)
    rule.mirror(model, steps=60, batch_size=256, lr=0.1, generator=generator)
    end = weight_alignment(model, rule)
    for path in start:
        assert start[path].angle > 70
        assert end[path].angle < 25, path
    with pytest.raises(ValueError, match=r"mirror needs steps >= 0"):
        rule.mirror(model, lr=0)


def test_batch_manhattan_steps_with_the_sign_of_the_gradient():
    layer = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.01)
    handle = batch_manhattan(optimizer)
    layer(torch.randn(5, 4)).pow(2).sum().backward()
    grad = layer.weight.grad.clone()
    before = layer.weight.detach().clone()
    optimizer.step()
    torch.testing.assert_close(layer.weight.detach(), before - 0.01 * torch.sign(grad))
    handle.remove()
    layer.weight.grad = grad.clone()
    before = layer.weight.detach().clone()
    optimizer.step()
    torch.testing.assert_close(layer.weight.detach(), before - 0.01 * grad)
    layer.weight.grad = grad.clone()
    sign_gradients_([layer.weight, layer.bias])
    torch.testing.assert_close(layer.weight.grad, torch.sign(grad))
    with pytest.raises(TypeError, match=r"expects a torch.optim.Optimizer"):
        batch_manhattan(object())


def test_weight_norm_constraint_is_a_parametrization_kept_by_rules():
    model = _net()
    weight = model[5].weight
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    norms = {p: float(model.get_submodule(p).weight.norm()) for p in ("0", "5", "7")}
    assert constrain_weight_norm(model) == ["0", "5", "7"]
    assert model[5].parametrizations.weight.original is weight  # the optimizer's parameter
    rule = uSF()
    rule.apply(model)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(_batch()[0]), _batch()[1]).backward()
        optimizer.step()
    for path, norm in norms.items():
        assert float(model.get_submodule(path).weight.norm()) == pytest.approx(norm, rel=1e-5)
    rule.remove(model)
    assert remove_weight_norm_constraint(model) == ["0", "5", "7"]
    assert model[5].weight is weight and not parametrize.is_parametrized(model[5])
    with pytest.raises(ValueError, match=r"positive norm"):
        NormConstraint(0.0)
    with pytest.raises(ValueError, match=r"norm must be 'init' or a positive number"):
        constrain_weight_norm(model, norm="unit")


def test_constrained_weights_train_under_kolen_pollack():
    """With a weight parametrization, B receives the raw local signal dL/dW (not dL/dV)."""
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    constrain_weight_norm(model, norm=1.0)
    rule = KolenPollack(seed=0)
    rule.apply(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        x = torch.randn(4, 3)
        hidden = torch.relu(model[0](x))
        hidden.retain_grad()
        model[2](hidden).pow(2).sum().backward()
        delta = (2 * model[2](hidden)).detach()  # dL/dy of the top layer
        torch.testing.assert_close(model[2].weight_feedback.grad, delta.T @ hidden.detach())
        optimizer.step()
    assert math.isclose(float(model[0].weight.norm()), 1.0, rel_tol=1e-6)
    assert model[0].parametrizations.weight.original.grad is not None
