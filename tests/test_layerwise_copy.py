"""A converted model's state travels with it: deep copies and pickles train with their own feedback,
independent of the original, and a rule can be removed and applied again."""

from __future__ import annotations

import copy
import gc
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.rules import FA, KolenPollack, WeightMirror, brSF, frSF, uSF

RULES = {
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
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 5 * 5, 6),
        nn.Tanh(),
        nn.Linear(6, 3),
    )


def _batch(seed: int):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(4, 1, 5, 5, generator=generator), torch.randint(
        0, 3, (4,), generator=generator
    )


def _train(model: nn.Module, steps: int, seed: int) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    for step in range(steps):
        x, y = _batch(seed + step)
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def _feedback_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        k: v.detach().clone()
        for k, v in model.state_dict(keep_vars=True).items()
        if "feedback" in k
    }


def _pickled(model: nn.Module) -> nn.Module:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
@pytest.mark.parametrize("name", list(RULES))
def test_a_copy_trains_with_its_own_feedback(name, how):
    original = _net()
    rule = RULES[name]()
    rule.apply(original)
    _train(original, 1, seed=0)  # brSF's stream and KP's B have moved
    twin = copy.deepcopy(original)  # the reference: trained exactly like the copy
    duplicate = copy.deepcopy(original) if how == "deepcopy" else _pickled(original)
    original_state = {k: v.clone() for k, v in original.state_dict().items()}
    binding = duplicate.__dict__["_feedback_alignment_layerwise"]
    for layer in binding.layers:  # the patched forward points at the copy's binding and layer
        forward = layer.module.__dict__["forward"]
        assert forward.args[0] is binding and forward.args[1] is layer
        assert layer.module is duplicate.get_submodule(layer.path)
    if how == "deepcopy":
        assert rule.is_applied(duplicate)
    _train(duplicate, 3, seed=10)
    _train(twin, 3, seed=10)
    for key, value in original.state_dict().items():  # the original is untouched
        assert torch.equal(value, original_state[key]), key
    for key, value in duplicate.state_dict().items():  # the copy trained like its twin
        torch.testing.assert_close(value, twin.state_dict()[key], rtol=0, atol=0, msg=key)
    if name in ("KP", "brSF"):  # its own feedback moved, the original's did not
        moved = _feedback_of(duplicate)
        assert any(not torch.equal(moved[k], original_state[k]) for k in moved)
    del original, twin
    gc.collect()
    _train(duplicate, 1, seed=20)  # nothing of the copy refers to the original


@pytest.mark.parametrize("name", list(RULES))
def test_remove_then_apply_again(name):
    model = _net()
    rule = RULES[name]()
    rule.apply(model)
    _train(model, 1, seed=0)
    rule.remove(model)
    keys = set(model.state_dict())
    rule.apply(model)  # the same rule object again
    _train(model, 1, seed=1)
    rule.remove(model)
    other = RULES[name]()
    other.apply(model)
    _train(model, 1, seed=2)
    assert other.is_applied(model) and not rule.is_applied(model)
    other.remove(model)
    assert set(model.state_dict()) == keys
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_a_copy_can_be_removed_without_touching_the_original():
    original = _net()
    rule = brSF(seed=0)
    rule.apply(original)
    duplicate = copy.deepcopy(original)
    rule.remove(duplicate)
    assert rule.is_applied(original) and not rule.is_applied(duplicate)
    assert "feedback_stream" in original[0]._buffers
    _train(original, 1, seed=0)
