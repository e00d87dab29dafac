"""Tests that pin the documented constants of the layer-wise feedback: a wrong constant fails.

Each test reads ``B^T`` the way the backward pass uses it (by back-propagating the identity through
the converted layer) and compares its statistics with the documented recipe: entries of ``B`` have
the standard deviation ``s = 1/sqrt(3 fan_in)`` of the default init for every distribution, and
sign-symmetric magnitudes ``|M|`` have the mean of the absolute value of a unit-std draw
(gaussian ``sqrt(2/pi)``, uniform on ``[-sqrt(3), sqrt(3))`` ``sqrt(3)/2``, rademacher 1). The
weight-mirror step is checked against its expectation ``E[x y^T / n] = sigma^2 W^T``.

Mutations these tests were seen to catch (each tried by hand, then reverted): frSF's or brSF's
magnitude times 10; uniform draws without their unit-std correction (FA, frSF: ``_UNIT_STD``;
brSF: ``uniform_(-1, 1)``); the weight-mirror step without its ``1/n``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from feedback_alignment.rules import FA, WeightMirror, brSF, frSF, uSF

MEAN_ABS = {"gaussian": math.sqrt(2 / math.pi), "uniform": math.sqrt(3) / 2, "rademacher": 1.0}
OUT, IN = 96, 512


def _read_bt(layer: nn.Module) -> torch.Tensor:
    """``B^T`` as the backward uses it: the input gradient of the identity, row by row."""
    out_features = layer.weight.shape[0]
    x = torch.randn(out_features, layer.weight.shape[1], requires_grad=True)
    layer(x).backward(torch.eye(out_features))
    return x.grad


def _layer(rule) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(IN, OUT)
    rule.apply(layer)
    return layer


RULES = {
    "FA": FA,
    "frSF": frSF,
    "brSF": brSF,
}


@pytest.mark.parametrize("distribution", list(MEAN_ABS))
@pytest.mark.parametrize("name", list(RULES))
def test_feedback_entries_have_the_init_std(name, distribution):
    layer = _layer(RULES[name](distribution=distribution, seed=3))
    bt = _read_bt(layer)
    s = 1.0 / math.sqrt(3 * IN)
    rms = float(bt.pow(2).mean().sqrt())
    assert rms == pytest.approx(s, rel=0.03)
    assert float(bt.abs().mean()) == pytest.approx(s * MEAN_ABS[distribution], rel=0.03)
    if name != "FA":  # |M| of a unit-std draw, with the signs of W
        assert torch.equal(torch.sign(bt), torch.sign(layer.weight.detach()))


def test_usf_and_explicit_scales():
    bt = _read_bt(_layer(uSF()))
    torch.testing.assert_close(bt.abs(), torch.full_like(bt, 1.0 / math.sqrt(3 * IN)))
    for rule in (FA(scale=0.5, distribution="uniform"), frSF(scale=0.5), brSF(scale=0.5)):
        rms = float(_read_bt(_layer(rule)).pow(2).mean().sqrt())
        assert rms == pytest.approx(0.5, rel=0.03), rule


def test_brsf_redraws_keep_the_statistics():
    layer = _layer(brSF(distribution="uniform", seed=1))
    s = 1.0 / math.sqrt(3 * IN)
    for _ in range(3):
        with torch.no_grad():
            layer.weight.mul_(1.01)  # a new W: a new draw
        bt = _read_bt(layer)
        assert float(bt.abs().mean()) == pytest.approx(s * MEAN_ABS["uniform"], rel=0.03)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_one_mirror_step_moves_b_by_its_expectation(kind):
    """From ``B = 0`` with no decay, one step gives ``B ~ eta sigma^2 W^T`` (not ``n`` times it)."""
    torch.manual_seed(0)
    layer = nn.Linear(12, 5) if kind == "linear" else nn.Conv2d(3, 4, 3, dilation=2)
    rule = WeightMirror(seed=0)
    rule.apply(layer)
    layer.weight_feedback.zero_()
    lr, sigma, n = 0.5, 2.0, 8192
    rule.mirror(
        layer,
        batch_size=n,
        lr=lr,
        noise_std=sigma,
        weight_decay=0.0,
        generator=torch.Generator().manual_seed(1),
    )
    expected = lr * sigma**2 * layer.weight.detach()
    error = float((layer.weight_feedback - expected).norm() / expected.norm())
    assert error < 0.15
