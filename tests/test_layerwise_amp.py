"""Layer-wise rules under CPU autocast (bfloat16): the gradients keep the parameters' dtype and
agree with the float32 step to bfloat16 precision."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from feedback_alignment.rules import FA, KolenPollack, brSF, uSF


@pytest.mark.parametrize("make", [FA, uSF, brSF, KolenPollack], ids=lambda r: r.__name__)
def test_autocast_bfloat16_gradients_match_float32(make):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(8, 32),
        nn.Tanh(),
        nn.Unflatten(1, (4, 8)),
        nn.Conv1d(4, 4, 3, padding=1),
        nn.Flatten(),
        nn.Linear(32, 3),
    )
    make().apply(model)
    reference = copy.deepcopy(model)
    x = torch.randn(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x).float().pow(2).sum().backward()
    reference(x).pow(2).sum().backward()
    for (name, p), (_, q) in zip(
        model.named_parameters(), reference.named_parameters(), strict=True
    ):
        assert p.grad.dtype == torch.float32, name
        scale = float(q.grad.abs().max())
        assert float((p.grad - q.grad).abs().max()) <= 0.05 * scale + 1e-6, name
