"""The sign-symmetric kernels are formed once per version of ``W``: never stale, never redrawn
within one optimizer step, and brSF's stream counts weight versions whether or not a layer's
kernel is needed (the bottom layer's input needs no gradient)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.alignment import alignment
from feedback_alignment.rules import brSF, frSF, uSF
from feedback_alignment.rules.layerwise import layer_seed


def _input_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.detach().clone().requires_grad_()
    model(x).pow(2).sum().backward()
    return x.grad


@pytest.mark.parametrize("rule", [uSF(), frSF(seed=0), brSF(seed=0)], ids=repr)
def test_the_kernel_follows_every_change_of_w(rule):
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    rule.apply(layer)
    x = torch.randn(3, 6)
    _input_grad(layer, x)
    for change in range(3):
        with torch.no_grad():
            layer.weight.neg_()  # every sign flips: a stale kernel would give the opposite sign
        g = 2 * layer(x).detach()
        expected_sign = torch.sign(g @ torch.sign(layer.weight.detach()))
        bt = rule.feedback_matrices(layer)[""]
        assert torch.equal(torch.sign(bt), torch.sign(layer.weight.detach())), change
        torch.testing.assert_close(_input_grad(layer, x), g @ bt)
        if isinstance(rule, uSF):
            assert torch.equal(torch.sign(_input_grad(layer, x)), expected_sign)


def test_sign_kernels_are_formed_once_per_weight_version():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    rule = uSF()
    rule.apply(model)
    x = torch.randn(4, 5)
    model(x).sum().backward()
    binding = model.__dict__["_feedback_alignment_layerwise"]
    kernel = binding.layers[1].cache.kernel
    model(x).sum().backward()  # a second micro-batch of the same step: the same tensor
    assert binding.layers[1].cache.kernel is kernel
    assert binding.layers[0].cache is None  # the bottom layer's input needs no gradient
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model(x).sum().backward()  # after a step: re-formed in place, in the same storage
    assert binding.layers[1].cache.kernel.data_ptr() == kernel.data_ptr()
    torch.testing.assert_close(
        binding.layers[1].cache.kernel, torch.sign(model[2].weight.detach()), rtol=0, atol=0
    )


def test_brsf_stream_counts_weight_versions_also_for_the_bottom_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    rule = brSF(seed=1)
    rule.apply(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    for step in range(3):
        optimizer.zero_grad()
        for _ in range(2):  # two micro-batches of one step: one draw
            F.cross_entropy(model(x), y).backward()
        optimizer.step()
        state = model.state_dict()
        assert int(state["0.feedback_stream"][1]) == step + 1  # counted, not drawn
        assert int(state["2.feedback_stream"][1]) == step + 1
    # the bottom layer's draw, when its input does need a gradient, is draw t of its stream
    k = int(model.state_dict()["0.feedback_stream"][0])
    bt = rule.feedback_matrices(model)["0"]
    generator = torch.Generator().manual_seed(layer_seed(k, 3))
    magnitude = torch.empty(7, 5).normal_(generator=generator).abs()
    expected = magnitude * torch.sign(model[0].weight.detach()) / math.sqrt(3 * 5)
    torch.testing.assert_close(bt, expected)


def test_alignment_between_micro_batches_does_not_change_the_draw():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    rule = brSF(seed=1)
    rule.apply(model)
    x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
    first = _input_grad(model, x)
    alignment(model, rule, (x, y), F.cross_entropy)  # saves and restores the stream buffer
    torch.testing.assert_close(_input_grad(model, x), first, rtol=0, atol=0)
    assert int(model.state_dict()["2.feedback_stream"][1]) == 1


def test_loading_a_checkpoint_into_a_trained_brsf_model_takes_its_stream():
    def trained(steps: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
        brSF(seed=1).apply(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(steps):
            optimizer.zero_grad()
            model(torch.randn(4, 5)).pow(2).sum().backward()
            optimizer.step()
        return model, optimizer

    ahead, _ = trained(3)
    behind, _ = trained(1)  # its host-side position is 1 draw; the checkpoint's is 3
    behind.load_state_dict(ahead.state_dict())
    x = torch.randn(4, 5)
    torch.testing.assert_close(_input_grad(behind, x), _input_grad(ahead, x), rtol=0, atol=0)
    assert behind.state_dict()["2.feedback_stream"].tolist() == (
        ahead.state_dict()["2.feedback_stream"].tolist()
    )
