"""What every learning rule offers: apply to an unmodified model, remove again, be inspected.

A rule prepares an ordinary ``nn.Module`` so that the plain loop ``loss.backward(); opt.step()``
produces the rule's updates in ``.grad``. ``remove`` restores the model exactly: same parameter
objects, same modules, the same ``state_dict`` keys, and backpropagation again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class Rule(ABC):
    """Base class of all learning rules."""

    #: short name used in tables and logs
    name: str = "rule"

    @abstractmethod
    def apply(self, model: nn.Module, **options) -> nn.Module:
        """Prepares ``model`` in place for training with this rule and returns it."""

    @abstractmethod
    def remove(self, model: nn.Module) -> nn.Module:
        """Undoes :meth:`apply`: ``model`` trains with backpropagation again."""

    @abstractmethod
    def is_applied(self, model: nn.Module) -> bool:
        """Whether this rule is currently applied to ``model``."""

    @contextmanager
    def applied(self, model: nn.Module, **options) -> Iterator[nn.Module]:
        """``with rule.applied(model): ...`` applies the rule for the block and removes it after."""
        self.apply(model, **options)
        try:
            yield model
        finally:
            self.remove(model)

    # --- hooks used by alignment measurements -------------------------------------------------

    @contextmanager
    def backprop_mode(self, model: nn.Module) -> Iterator[None]:
        """Within the block, ``model`` computes true backprop gradients (default: it already does)."""
        yield

    @contextmanager
    def recording(self, model: nn.Module) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Yields a list that each forward pass fills with ``(point, h)``: the tensors at which the
        rule's learning signal enters (nothing for rules without such points)."""
        yield []

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
