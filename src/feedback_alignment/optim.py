"""Training techniques of the sign-symmetry papers: Batch Manhattan and a weight-norm constraint.

* **Batch Manhattan** (Liao et al. 2016): each weight's update uses only the sign of its batch
  gradient, ``dW <- sign(dW)``; the optimizer's momentum and weight decay act after (on the sign).
  :func:`batch_manhattan` installs it on any ``torch.optim`` optimizer as a step pre-hook (the
  optimizer object, its schedulers and its ``state_dict`` are unchanged); :func:`sign_gradients_`
  is the same transform for hand-written loops.
* **Weight-norm constraint**: ``W = c * V / ||V||_F`` as a ``torch.nn.utils.parametrize``
  parametrization (:class:`NormConstraint`): the optimizer updates ``V`` (the very same
  ``Parameter`` object that was ``weight``, now at ``parametrizations.weight.original``), the
  layer always computes with a weight of norm ``c``, and nothing is reassigned in ``forward``.
* Feedback-norm rescaling (``||B|| = ||W||`` per layer) is the ``norm="match"`` option of every
  layer-wise rule (:mod:`feedback_alignment.rules.layerwise`).

References:
    Liao, Leibo, Poggio, "How Important Is Weight Symmetry in Backpropagation?", AAAI 2016.
    Moskovitz, Litwin-Kumar, Abbott, "Feedback alignment in deep convolutional networks",
    arXiv:1812.06488, 2018.
    Salimans, Kingma, "Weight Normalization", NeurIPS 2016 (the reparametrization).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.hooks import RemovableHandle

CONSTRAINED_KINDS = ("linear", "linear_in_out", "conv")
"""Kinds of :data:`feedback_alignment.rules.layerwise.CONVERTED_LAYERS` whose ``weight``
:func:`constrain_weight_norm` acts on: ``nn.Linear``, ``nn.Conv1d/2d/3d``, Hugging Face's
``Conv1D`` and PyG's ``Linear`` (the Frobenius norm does not depend on the weight's layout)."""


def sign_gradients_(parameters: Iterable[torch.Tensor]) -> None:
    """Batch Manhattan as a gradient transform: ``p.grad <- sign(p.grad)`` in place."""
    with torch.no_grad():
        for param in parameters:
            if param.grad is not None:
                param.grad.sign_()


def batch_manhattan(optimizer: torch.optim.Optimizer) -> RemovableHandle:
    """Makes ``optimizer`` step with the sign of each gradient (Batch Manhattan).

    ``dW <- sign(dW)`` for every parameter of the optimizer, right before each ``step()``; the
    optimizer's own rule (learning rate, momentum, weight decay, Adam's moments) then acts on the
    sign. Composes with any optimizer, scheduler and ``GradScaler`` (which unscales before
    ``step``), and with Kolen-Pollack: ``B``'s gradient is ``W``'s raw gradient, so both step by
    the same sign.

    Args:
        optimizer: any ``torch.optim.Optimizer``.

    Returns:
        A handle; ``handle.remove()`` restores plain steps.

    References:
        Liao, Leibo, Poggio, "How Important Is Weight Symmetry in Backpropagation?", AAAI 2016.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"batch_manhattan expects a torch.optim.Optimizer, got {type(optimizer).__name__}; "
            "for a hand-written update call sign_gradients_(parameters) before it"
        )

    def _sign(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        sign_gradients_(p for group in opt.param_groups for p in group["params"])

    return optimizer.register_step_pre_hook(_sign)


class NormConstraint(nn.Module):
    """Parametrization ``W = c * V / ||V||_F``: the weight's Frobenius norm is always ``c``.

    Register with ``torch.nn.utils.parametrize.register_parametrization(layer, "weight",
    NormConstraint(c))`` or :func:`constrain_weight_norm`. The norm ``c`` is a buffer (saved in
    ``state_dict``).

    Args:
        norm: ``c > 0``.
    """

    def __init__(self, norm: float) -> None:
        super().__init__()
        if not norm > 0:
            raise ValueError(f"NormConstraint needs a positive norm, got {norm}")
        self.register_buffer("norm", torch.tensor(float(norm)))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * (self.norm.to(weight.dtype) / weight.norm().clamp_min(1e-12))


def constrain_weight_norm(model: nn.Module, norm: str | float = "init") -> list[str]:
    """Registers a :class:`NormConstraint` on the ``weight`` of every linear and conv layer
    (the layer types of :data:`CONSTRAINED_KINDS`).

    Args:
        model: the model (layer-wise rules may be applied before or after).
        norm: ``"init"`` keeps each weight's current norm, or a number for every layer.

    Returns:
        The paths of the constrained layers. Undo with :func:`remove_weight_norm_constraint`.
    """
    if not (norm == "init" or (isinstance(norm, (int, float)) and not isinstance(norm, bool))):
        raise ValueError(f"norm must be 'init' or a positive number, got {norm!r}")
    from feedback_alignment.rules.layerwise import layer_kind

    paths = []
    for path, module in model.named_modules():
        if layer_kind(module) not in CONSTRAINED_KINDS:
            continue
        if parametrize.is_parametrized(module, "weight"):
            raise RuntimeError(
                f"layer {path!r} already has a parametrization of its weight; remove it first "
                "(remove_weight_norm_constraint or parametrize.remove_parametrizations)"
            )
        value = float(module.weight.detach().norm()) if norm == "init" else float(norm)
        parametrize.register_parametrization(module, "weight", NormConstraint(value))
        paths.append(path)
    return paths


def remove_weight_norm_constraint(model: nn.Module) -> list[str]:
    """Removes every :class:`NormConstraint`, leaving each weight at its constrained value."""
    paths = []
    for path, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight") and any(
            isinstance(p, NormConstraint) for p in module.parametrizations.weight
        ):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            paths.append(path)
    return paths
