"""Tests aimed at the mutations of the core equations that survived the suite (issue 23, item 6).

Each test names its mutation; each was checked to fail with the mutation applied. The fifth
mutation (Kolen-Pollack's ``local.clone()`` removed) is *equivalent*: autograd's
``AccumulateGrad`` copies a gradient that one backward hands to two leaves, so ``W.grad`` and
``B.grad`` never alias whether or not the Function clones. The clone was removed (a weight-sized
copy per layer and step saved); the last test pins the guarantee it relied on.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
from feedback_alignment.optim import sign_gradients_


class _Switch(nn.Module):
    """A flag adds a path around the feedback point between steps, with unchanged shapes."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.act = nn.Tanh()
        self.head = nn.Linear(4, 2)
        self.bypass = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x)
        out = self.head(self.act(h))
        return out + h[:, :2] if self.bypass else out


def test_verify_always_checks_every_training_pass() -> None:
    """Mutation: ``verify="always"`` ignored (verification only for new placements)."""
    x, y = torch.randn(5, 4), torch.randint(0, 2, (5,))
    for verify, refused in (("placement", False), ("always", True)):
        model = fa.DFA(seed=0).apply(_Switch(), points=["act"], verify=verify)
        F.cross_entropy(model(x), y).backward()
        model.bypass = True  # same shapes, same points: only a new graph walk sees the leak
        if refused:
            with pytest.raises(fa.PlacementError, match="lin"):
                F.cross_entropy(model(x), y).backward()
        else:
            F.cross_entropy(model(x), y).backward()  # the documented blind spot of "placement"


def test_fa_draws_a_different_feedback_matrix_for_each_layer() -> None:
    """Mutation: FA seeding every layer alike (``layer_seed(seed, 0)`` for all)."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8))
    for rule in (fa.FA(seed=0), fa.frSF(seed=0), fa.KolenPollack(seed=0)):
        rule.apply(model)
        matrices = list(rule.feedback_matrices(model).values())
        assert len(matrices) == 3
        for i in range(3):
            for j in range(i + 1, 3):
                assert not torch.allclose(matrices[i].abs(), matrices[j].abs()), (rule, i, j)
        rule.remove(model)


def test_weight_mirror_decays_by_lr_times_sigma_squared() -> None:
    """Mutation: the mirror's default decay ``lambda = sigma^2`` replaced by ``sigma``.

    With ``W = 0`` the correlation ``x y^T`` is 0, so one step gives exactly
    ``B <- (1 - eta sigma^2) B``: 0.6 B for ``eta = 0.1``, ``sigma = 2`` (0.8 B with ``sigma``)."""
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    rule = fa.WeightMirror(seed=0)
    rule.apply(model)
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.zero_()
    before = [model[0].weight_feedback.clone(), model[2].weight_feedback.clone()]
    rule.mirror(model, steps=1, noise_std=2.0, lr=0.1)
    torch.testing.assert_close(model[0].weight_feedback, 0.6 * before[0])
    torch.testing.assert_close(model[2].weight_feedback, 0.6 * before[1])


def test_batch_manhattan_takes_the_sign_not_a_clamp() -> None:
    """Mutation: ``grad.sign_()`` replaced by ``grad.clamp_(-1, 1)``: small gradients differ."""
    weight = nn.Parameter(torch.zeros(5))
    weight.grad = torch.tensor([0.003, -0.5, 0.0, 2.0, -1e-6])
    sign_gradients_([weight])
    assert weight.grad.tolist() == [1.0, -1.0, 0.0, 1.0, -1.0]


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
def test_kolen_pollack_gradients_of_w_and_b_do_not_alias(conv: bool) -> None:
    """The equivalent mutation (see the module doc): changing ``W.grad`` in place (clipping,
    ``GradScaler.unscale_``) leaves ``B.grad`` alone, also when gradients accumulate."""
    if conv:
        model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Conv1d(3, 2, 3))
        x = torch.randn(4, 2, 9)
    else:
        model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 2))
        x = torch.randn(4, 4)
    fa.KolenPollack(seed=0).apply(model)
    for _ in range(2):  # the second pass accumulates into existing gradients
        model(x).pow(2).sum().backward()
        for layer in (model[0], model[2]):
            assert layer.weight.grad.data_ptr() != layer.weight_feedback.grad.data_ptr()
            expected = layer.weight_feedback.grad.clone()
            torch.testing.assert_close(layer.weight.grad, expected)
            layer.weight.grad.mul_(3.0)
            torch.testing.assert_close(layer.weight_feedback.grad, expected)
            layer.weight.grad.div_(3.0)
