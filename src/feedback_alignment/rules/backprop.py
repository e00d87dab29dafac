"""Backpropagation as a rule: the identity, so that BP and every other rule share one API."""

from __future__ import annotations

from torch import nn

from feedback_alignment.feedback import check_seed
from feedback_alignment.rules.base import Rule


class BP(Rule):
    """Backpropagation: ``apply`` and ``remove`` leave the model untouched.

    ``delta_l = (W_{l+1}^T delta_{l+1}) * f'(a_l)``, i.e. plain autograd.
    """

    name = "BP"
    key = "bp"

    def __init__(self, seed: int = 0) -> None:
        """``seed`` is accepted so that every rule is built alike (``RULES[key](seed=...)``);
        backpropagation draws nothing."""
        self.seed = check_seed(seed, "BP")

    def apply(self, model: nn.Module, **options) -> nn.Module:
        if options:
            raise TypeError(f"BP.apply takes no options, got {sorted(options)}")
        return model

    def remove(self, model: nn.Module) -> nn.Module:
        return model

    def is_applied(self, model: nn.Module) -> bool:
        return True
