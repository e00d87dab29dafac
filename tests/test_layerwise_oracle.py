"""Float64 gradients of the layer-wise rules against references written from the equations.

References: BP's gradients (plain autograd on an unconverted copy), ``dL/dh = g B^T``-style products
written out here with ``torch.nn.grad.conv*_input`` for convolutions, and finite differences.
Feedback values are read from ``state_dict`` (the documented buffers) or set through it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.functional import ConvFeedbackFn, LinearFeedbackFn
from feedback_alignment.rules import FA, KolenPollack, brSF, frSF, uSF
from feedback_alignment.rules.layerwise import layer_seed

TOL = {"rtol": 1e-10, "atol": 1e-12}


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)


CONV_CASES = {
    "conv2d-bias-stride-padding": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1),
    "conv2d-groups-dilation": lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2),
    "conv2d-same-even-kernel": lambda: nn.Conv2d(4, 3, 4, padding="same", bias=False),
    "conv2d-reflect": lambda: nn.Conv2d(4, 3, 3, padding=1, padding_mode="reflect"),
    "conv2d-valid-rect": lambda: nn.Conv2d(4, 5, (3, 2), stride=(1, 2), padding="valid"),
    "conv1d-stride-groups": lambda: nn.Conv1d(4, 8, 3, stride=2, padding=1, groups=4),
}


def _two_layer(first: nn.Module, second_in: int, shape) -> nn.Sequential:
    """``first -> tanh -> second`` so that ``first``'s input gradient reaches a parameter-free
    input and the second layer's input gradient (through B) reaches ``first``."""
    with torch.no_grad():
        out_shape = first(torch.zeros(1, *shape)).shape[1:]
    dims = len(shape) - 1
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    second = conv(out_shape[0], 3, 3, stride=2, padding=1)
    return nn.Sequential(first, nn.Tanh(), second)


def _set_feedback_to_weights(model: nn.Module) -> None:
    state = model.state_dict()
    for key in [k for k in state if k.endswith("weight_feedback")]:
        state[key] = state[key.replace("weight_feedback", "weight")].clone()
    model.load_state_dict(state)


def _loss(model, x, target):
    return ((model(x) - target) ** 2).sum()


@pytest.mark.parametrize("case", list(CONV_CASES))
def test_fa_with_b_equal_w_transpose_is_backprop_conv(case):
    torch.manual_seed(0)
    first = CONV_CASES[case]()
    shape = (4, 9) if isinstance(first, nn.Conv1d) else (4, 9, 8)
    bp = _two_layer(first, 0, shape)
    ruled = copy.deepcopy(bp)
    FA(seed=1).apply(ruled)
    _set_feedback_to_weights(ruled)
    x = torch.randn(3, *shape, requires_grad=True)
    x_bp = x.detach().clone().requires_grad_()
    with torch.no_grad():
        target = torch.randn_like(bp(x))
    _loss(bp, x_bp, target).backward()
    _loss(ruled, x, target).backward()
    torch.testing.assert_close(x.grad, x_bp.grad, **TOL)
    for (name, p_bp), (_, p) in zip(bp.named_parameters(), ruled.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_bp.grad, **TOL, msg=name)


def test_fa_with_b_equal_w_transpose_is_backprop_linear_tokens():
    torch.manual_seed(0)
    bp = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3))
    ruled = copy.deepcopy(bp)
    FA(seed=2).apply(ruled)
    _set_feedback_to_weights(ruled)
    x = torch.randn(2, 4, 5)  # (batch, tokens, features)
    target = torch.randn(2, 4, 3)
    _loss(bp, x, target).backward()
    _loss(ruled, x, target).backward()
    for p_bp, p in zip(bp.parameters(), ruled.parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_bp.grad, **TOL)


def _input_grad(layer: nn.Module, x: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_()
    layer(x).backward(grad_out)
    return x.grad


@pytest.mark.parametrize("shape", [(6, 5), (2, 3, 5)], ids=["batch", "batch-tokens"])
def test_usf_linear_input_gradient_is_grad_out_times_sign_w(shape):
    torch.manual_seed(0)
    layer = nn.Linear(5, 4)
    uSF().apply(layer)
    x = torch.randn(*shape)
    g = torch.randn(*shape[:-1], 4)
    s = 1.0 / math.sqrt(3 * 5)  # documented scale: the std of the default init, 1/sqrt(3 fan_in)
    expected = g @ (s * torch.sign(layer.weight.detach()))
    torch.testing.assert_close(_input_grad(layer, x, g), expected, **TOL)
    # the weight and bias gradients stay the true local ones
    flat_g, flat_x = g.reshape(-1, 4), x.reshape(-1, 5)
    torch.testing.assert_close(layer.weight.grad, flat_g.T @ flat_x, **TOL)
    torch.testing.assert_close(layer.bias.grad, flat_g.sum(0), **TOL)


def test_usf_conv_input_gradient_is_conv_input_with_sign_w():
    torch.manual_seed(0)
    layer = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2)
    rule = uSF(scale=0.3)
    rule.apply(layer)
    x = torch.randn(2, 4, 7, 7)
    g = torch.randn(2, 6, 4, 4)
    kernel = 0.3 * torch.sign(layer.weight.detach())
    expected = torch.nn.grad.conv2d_input(x.shape, kernel, g, stride=2, padding=1, groups=2)
    torch.testing.assert_close(_input_grad(layer, x, g), expected, **TOL)
    dw = torch.nn.grad.conv2d_weight(x, layer.weight.shape, g, stride=2, padding=1, groups=2)
    torch.testing.assert_close(layer.weight.grad, dw, **TOL)
    torch.testing.assert_close(layer.bias.grad, g.sum(dim=(0, 2, 3)), **TOL)


def test_conv1d_input_gradient_uses_fixed_feedback():
    torch.manual_seed(0)
    layer = nn.Conv1d(3, 4, 3, stride=2, padding=1)
    FA(distribution="uniform", seed=5).apply(layer)
    kernel = layer.state_dict()["weight_feedback"]
    x, g = torch.randn(2, 3, 9), torch.randn(2, 4, 5)
    expected = torch.nn.grad.conv1d_input(x.shape, kernel, g, stride=2, padding=1)
    torch.testing.assert_close(_input_grad(layer, x, g), expected, **TOL)


def _read_bt(layer: nn.Linear) -> torch.Tensor:
    """``B^T`` of a converted linear layer, read off by back-propagating the identity."""
    out_features, in_features = layer.weight.shape
    return _input_grad(layer, torch.randn(out_features, in_features), torch.eye(out_features))


def _recipe_draw(shape, seed: int, distribution: str = "gaussian") -> torch.Tensor:
    """brSF's documented draw: a float64 CPU generator seeded with ``seed``, unit std."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.empty(shape, dtype=torch.float64)
    if distribution == "gaussian":
        return values.normal_(generator=generator)
    return values.uniform_(-math.sqrt(3), math.sqrt(3), generator=generator)


def test_frsf_keeps_its_magnitudes():
    torch.manual_seed(0)
    fixed = nn.Linear(6, 5)
    frSF(seed=3).apply(fixed)
    magnitude = fixed.state_dict()["feedback_magnitude"]
    assert magnitude.shape == fixed.weight.shape and bool((magnitude >= 0).all())
    first, second = _read_bt(fixed), _read_bt(fixed)
    torch.testing.assert_close(first, magnitude * torch.sign(fixed.weight.detach()), **TOL)
    torch.testing.assert_close(second, first, **TOL)


def _step_weight(layer: nn.Linear) -> None:
    with torch.no_grad():
        layer.weight.mul_(1.5)  # a new W of the same signs (as an optimizer step would make)


def test_brsf_draws_a_new_magnitude_per_weight_update_by_the_documented_recipe():
    torch.manual_seed(0)
    layer = nn.Linear(6, 5)
    weights = {k: v.clone() for k, v in layer.state_dict().items()}
    brSF(seed=3).apply(layer)
    s = 1.0 / math.sqrt(3 * 6)
    k = layer_seed(3, 0)
    draws = []
    for t in range(3):
        bt = _read_bt(layer)
        sign = torch.sign(layer.weight.detach())
        torch.testing.assert_close(bt, s * _recipe_draw((5, 6), layer_seed(k, t)).abs() * sign)
        # micro-batches of one step (the same W) share the draw; the stream counts draws
        torch.testing.assert_close(_read_bt(layer), bt, rtol=0, atol=0)
        assert layer.state_dict()["feedback_stream"].tolist()[:2] == [k, t + 1]
        draws.append(bt.abs())
        _step_weight(layer)
    assert not torch.allclose(draws[0] * 1.5, draws[1])

    # the stream is seeded: a fresh layer with the same seed replays it; resuming continues it
    replay = nn.Linear(6, 5)
    replay.load_state_dict(weights)
    brSF(seed=3).apply(replay)
    for t in range(3):
        torch.testing.assert_close(_read_bt(replay).abs(), draws[t], **TOL)
        _step_weight(replay)
    resumed = nn.Linear(6, 5)
    brSF(seed=3).apply(resumed)
    resumed.load_state_dict(layer.state_dict())  # a checkpoint between two steps
    torch.testing.assert_close(_read_bt(resumed), _read_bt(layer), **TOL)
    other = nn.Linear(6, 5)
    other.load_state_dict(weights)
    brSF(seed=4).apply(other)
    assert not torch.allclose(_read_bt(other).abs(), draws[0])


def test_kolen_pollack_sgd_shrinks_the_gap_by_one_minus_lr_decay_per_step():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    rule = KolenPollack(seed=1)
    rule.apply(model)
    lr, decay = 0.1, 0.05
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=decay)

    def gaps():
        state = model.state_dict()
        return [
            float((state[f"{i}.weight"] - state[f"{i}.weight_feedback"]).norm()) for i in (0, 2)
        ]

    start = gaps()
    steps = 25
    for _ in range(steps):
        x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    for before, after in zip(start, gaps(), strict=True):
        assert after == pytest.approx(before * (1 - lr * decay) ** steps, rel=1e-9)
    # Akrout's update in closed form for one more step: B^T <- B^T - lr dW - lr decay B^T
    feedback = model.state_dict()["0.weight_feedback"].clone()
    optimizer.zero_grad()
    F.cross_entropy(model(torch.randn(4, 5)), torch.tensor([0, 1, 2, 0])).backward()
    dw = model[0].weight.grad.clone()
    optimizer.step()
    expected = feedback - lr * dw - lr * decay * feedback
    torch.testing.assert_close(model.state_dict()["0.weight_feedback"], expected, **TOL)


def test_kolen_pollack_with_adam_and_momentum_converges():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4))
    rule = KolenPollack(seed=0)
    rule.apply(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.5)
    first = model.state_dict()
    gap0 = float((first["0.weight"] - first["0.weight_feedback"]).norm())
    for _ in range(60):
        optimizer.zero_grad()
        model(torch.randn(8, 1, 6, 6)).pow(2).mean().backward()
        optimizer.step()
    state = model.state_dict()
    gap = float((state["0.weight"] - state["0.weight_feedback"]).norm())
    assert gap == pytest.approx(gap0 * (1 - 0.05 * 0.5) ** 60, rel=1e-6)
    assert gap < 0.3 * gap0


@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_linear_function(bias):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4)
    weight = torch.randn(5, 4, requires_grad=True)
    b = torch.randn(5, requires_grad=True) if bias else None
    feedback = torch.randn(5, 4)  # any B: the weight gradient is the true one
    assert torch.autograd.gradcheck(
        lambda w, bb: LinearFeedbackFn.apply(x, w, bb, feedback), (weight, b)
    )
    # and with F = W the input gradient is the true one too
    x.requires_grad_()
    fixed = weight.detach()
    assert torch.autograd.gradcheck(lambda h: LinearFeedbackFn.apply(h, fixed, None, fixed), (x,))


@pytest.mark.parametrize("dims", [1, 2])
def test_gradcheck_conv_function(dims):
    torch.manual_seed(0)
    shape = (2, 4) + (6,) * dims
    x = torch.randn(*shape)
    weight = torch.randn(4, 2, *(3,) * dims, requires_grad=True)
    bias = torch.randn(4, requires_grad=True)
    feedback = torch.randn_like(weight)
    conv = ((2,) * dims, (1,) * dims, (2,) * dims, 2)

    def f(w, b):
        return ConvFeedbackFn.apply(x, w, b, feedback, *conv)

    assert torch.autograd.gradcheck(f, (weight, bias))
    h, fixed = x.clone().requires_grad_(), weight.detach()
    assert torch.autograd.gradcheck(
        lambda t: ConvFeedbackFn.apply(t, fixed, None, fixed, *conv), (h,)
    )
