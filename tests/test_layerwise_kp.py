"""Kolen-Pollack without weight transport: B is stepped from its own copy of the local signal.

The reference for every optimizer is the same optimizer class with the same hyperparameters acting
on a separate copy of ``B^T`` whose gradient is set, by hand, to ``W``'s raw gradient
``delta h^T``: Akrout et al.'s rule generalised to momentum and Adam. ``W``'s values are set to
random numbers between steps: a rule that read them (or ``W``'s optimizer state) would diverge
from the reference.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.rules import FA, KolenPollack

OPTIMIZERS = {
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05),
    "sgd-momentum-decay": lambda params: torch.optim.SGD(
        params, lr=0.05, momentum=0.9, weight_decay=0.1
    ),
    "adam-coupled-decay": lambda params: torch.optim.Adam(params, lr=0.01, weight_decay=0.5),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.5),
}


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3))


def _loss(model: nn.Module) -> torch.Tensor:
    x, y = torch.randn(7, 5), torch.randint(0, 3, (7,))
    return F.cross_entropy(model(x), y)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_b_follows_the_same_optimizer_on_its_own_signal_whatever_w_holds(name):
    model = _model()
    rule = KolenPollack(seed=1)
    rule.apply(model)
    optimizer = OPTIMIZERS[name](model.parameters())
    layers = [model[0], model[2], model[4]]
    shadows = [layer.weight_feedback.detach().clone().requires_grad_() for layer in layers]
    reference = OPTIMIZERS[name](shadows)
    generator = torch.Generator().manual_seed(5)
    for _ in range(6):
        optimizer.zero_grad()
        _loss(model).backward()
        for layer, shadow in zip(layers, shadows, strict=True):
            shadow.grad = layer.weight.grad.clone()  # the raw local signal delta h^T
        with torch.no_grad():  # W takes arbitrary values: B must not notice
            for layer in layers:
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
        optimizer.step()
        reference.step()
        for layer, shadow in zip(layers, shadows, strict=True):
            torch.testing.assert_close(layer.weight_feedback, shadow, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["sgd-momentum-decay", "adam-coupled-decay", "adamw"])
def test_the_gap_between_w_and_b_transpose_shrinks(name):
    model = _model()
    KolenPollack(seed=1).apply(model)
    optimizer = OPTIMIZERS[name](model.parameters())

    def gaps() -> list[float]:
        return [float((m.weight - m.weight_feedback).detach().norm()) for m in (model[0], model[2])]

    start = gaps()
    for _ in range(150):
        optimizer.zero_grad()
        _loss(model).backward()
        optimizer.step()
    for before, after in zip(start, gaps(), strict=True):
        assert after < 0.6 * before


def test_sgd_closed_form_and_hand_written_updates():
    """``B^T <- B^T - lr (delta h^T) - lr lambda B^T``, also when the loop updates by hand."""
    model = _model()
    KolenPollack(seed=2).apply(model)
    lr, decay = 0.1, 0.3
    for _ in range(3):
        model.zero_grad()
        _loss(model).backward()
        expected = model[2].weight_feedback.detach() * (1 - lr * decay) - lr * model[2].weight.grad
        with torch.no_grad():
            for param in model.parameters():
                param.sub_(lr * (param.grad + decay * param))
        torch.testing.assert_close(model[2].weight_feedback.detach(), expected)


def test_gradient_accumulation_accumulates_both_signals():
    model = _model()
    KolenPollack(seed=3).apply(model)
    for _ in range(3):
        _loss(model).backward()
    for layer in (model[0], model[2], model[4]):
        torch.testing.assert_close(layer.weight_feedback.grad, layer.weight.grad)
        assert layer.weight_feedback.grad.data_ptr() != layer.weight.grad.data_ptr()


def test_grad_scaler_skips_b_when_it_skips_w():
    model = _model()
    KolenPollack(seed=4).apply(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = _loss(model) * float("inf")  # inf gradients everywhere: the step is skipped
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
    assert scaler.get_scale() < 2.0**10
    optimizer.zero_grad()
    scaler.scale(_loss(model)).backward()  # a finite step moves W and B by the unscaled signal
    expected = before["2.weight_feedback"] * (1 - 0.1 * 0.1) - 0.1 * model[2].weight.grad / (
        scaler.get_scale()
    )
    scaler.step(optimizer)
    torch.testing.assert_close(model[2].weight_feedback.detach(), expected)


def test_a_layer_without_gradient_moves_b_only_by_its_own_decay():
    class Branches(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used = nn.Linear(4, 3)
            self.unused = nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    torch.manual_seed(0)
    model = Branches()
    KolenPollack(seed=0).apply(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.5)
    # set_to_none: neither W nor B of the unused layer has a gradient; neither moves
    weight = model.unused.weight.detach().clone()
    feedback = model.unused.weight_feedback.detach().clone()
    optimizer.zero_grad(set_to_none=True)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    assert torch.equal(model.unused.weight, weight)
    assert torch.equal(model.unused.weight_feedback, feedback)
    # zeroed gradients: each decays from its own value (B does not move towards W)
    optimizer.zero_grad(set_to_none=False)
    model.unused.weight.grad = torch.zeros_like(weight)
    model.unused.weight_feedback.grad = torch.zeros_like(feedback)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    torch.testing.assert_close(model.unused.weight_feedback.detach(), feedback * (1 - 0.05))
    torch.testing.assert_close(model.unused.weight.detach(), weight * (1 - 0.05))


def test_rule_is_scoped_to_its_model_and_warns_when_b_is_not_stepped():
    kp_model, other = _model(), _model()
    KolenPollack(seed=0).apply(kp_model)
    optimizer = torch.optim.SGD(other.parameters(), lr=0.1, weight_decay=0.5)
    kp_before = {n: p.detach().clone() for n, p in kp_model.named_parameters()}
    _loss(other).backward()
    _loss(kp_model).backward()
    optimizer.step()  # another model's optimizer leaves the KP model alone
    for name, param in kp_model.named_parameters():
        assert torch.equal(param, kp_before[name]), name

    model = _model()
    early = torch.optim.SGD(model.parameters(), lr=0.1)  # built before apply: B is not in it
    rule = KolenPollack(seed=0)
    rule.apply(model)
    _loss(model).backward()
    early.step()
    with pytest.warns(UserWarning, match=r"layer '0' changed but its feedback 0.weight_feedback"):
        _loss(model).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per layer
        _loss(model).backward()
    early.add_param_group({"params": rule.feedback_parameters(model)})
    assert len(early.param_groups[1]["params"]) == 3


def test_norm_match_is_refused_and_remove_restores_parameters():
    with pytest.raises(ValueError, match=r"KolenPollack learns B itself; norm='match'"):
        KolenPollack(norm="match")
    model = _model()
    names = [n for n, _ in model.named_parameters()]
    rule = KolenPollack()
    rule.apply(model)
    assert len(list(model.parameters())) == len(names) + 3
    rule.remove(model)
    assert [n for n, _ in model.named_parameters()] == names
    FA().apply(model)  # re-applying another rule works after remove
