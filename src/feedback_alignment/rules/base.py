"""What every learning rule offers: apply to an unmodified model, remove again, be inspected.

A rule prepares an ordinary ``nn.Module`` so that the plain loop ``loss.backward(); opt.step()``
produces the rule's updates in ``.grad``. ``remove`` restores the model exactly: same parameter
objects, same modules, the same ``state_dict`` keys, and backpropagation again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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


class BoundRule(Rule):
    """A rule that keeps one binding (hooks, buffers, state) per model it is applied to.

    Subclasses set ``self._bindings = {}`` and store, under ``id(model)``, an object with a
    ``mode`` attribute (``"rule"`` or ``"backprop"``), a ``recorders`` list of lists that its
    hooks fill with ``(name, tensor)``, and a ``calls`` dict of per-forward call counts.

    What is recorded is where the rule's signal enters: a direct rule's feedback points, a
    layer-wise rule's layer outputs (``dL/d(output)`` there is the layer's ``delta``, so
    :func:`~feedback_alignment.alignment.alignment` compares the rule's ``delta`` with BP's).
    """

    _bindings: dict[int, Any]

    def is_applied(self, model: nn.Module) -> bool:
        return id(model) in self._bindings

    def _binding(self, model: nn.Module) -> Any:
        try:
            return self._bindings[id(model)]
        except KeyError:
            raise RuntimeError(f"{self!r} is not applied to this {type(model).__name__}") from None

    @contextmanager
    def backprop_mode(self, model: nn.Module) -> Iterator[None]:
        binding = self._binding(model)
        previous, binding.mode = binding.mode, "backprop"
        try:
            yield
        finally:
            binding.mode = previous

    @contextmanager
    def recording(self, model: nn.Module) -> Iterator[list[tuple[str, torch.Tensor]]]:
        binding = self._binding(model)
        record: list[tuple[str, torch.Tensor]] = []
        binding.recorders.append(record)
        binding.calls.clear()
        try:
            yield record
        finally:
            binding.recorders.remove(record)
