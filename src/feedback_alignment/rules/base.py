"""What every learning rule offers: apply to an unmodified model, remove again, be inspected.

A rule prepares an ordinary ``nn.Module`` so that the plain loop ``loss.backward(); opt.step()``
produces the rule's updates in ``.grad``. ``remove`` restores the model exactly: same parameter
objects, same modules, the same ``state_dict`` keys, and backpropagation again.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from feedback_alignment.points import PlacementError


class BottleneckWarning(UserWarning):
    """A direct rule's feedback point is narrower than the output error it receives.

    Given once per process (filter it with ``warnings.simplefilter("ignore",
    fa.BottleneckWarning)``, or turn it into an error with ``"error"``)."""


class LossScaleWarning(UserWarning):
    """A rule whose signal does not come from the loss (DRTP's hidden signal, FDFA's gradient of
    its feedback matrix) ran a training forward pass under autocast while its ``loss_scale`` was
    still 1: if the loss is scaled (``torch.amp.GradScaler``), set ``rule.loss_scale = scaler``,
    or ``scaler.unscale_``/``scaler.step`` divides that part of the update by the scale.

    Given once per process (filter it with ``warnings.simplefilter("ignore",
    fa.LossScaleWarning)`` when the loss is not scaled, e.g. bfloat16 without a scaler)."""


class FeedbackResetWarning(UserWarning):
    """A checkpoint without a rule's *learned* feedback (Kolen-Pollack's ``B``, the weight
    mirror's ``B``) was loaded: that feedback starts again from its initial draw."""


class Rule(ABC):
    """Base class of all learning rules.

    Besides ``apply``/``remove``, a rule answers the questions that measurements ask of it
    (:func:`~feedback_alignment.alignment.alignment` relies on them only); the defaults fit a rule
    that adds nothing to the model (BP).
    """

    #: short name used in tables and logs
    name: str = "rule"
    #: the canonical key in :data:`feedback_alignment.RULES` and on the command line
    #: (``None`` for a base class that is not a rule of its own)
    key: ClassVar[str | None] = None

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

    def points(self, model: nn.Module) -> list[str]:
        """Module paths where the rule's learning signal enters ``model``, in model order: a
        direct rule's feedback points, a layer-wise rule's converted layers (each the point of
        its own ``B``); empty for a rule without such points (BP). The names the
        :meth:`recording` entries and :func:`~feedback_alignment.alignment.alignment` use."""
        return []

    def parameter_roles(self, model: nn.Module) -> dict[str, str]:
        """Parameter name -> ``"hidden"`` (learns from the rule's signal only), ``"top"`` (the
        true gradient only) or ``"tied"`` (both). Empty where the rule does not know (it trains
        every parameter from its own signal, or has not run yet)."""
        return {}

    def signal_widths(self, model: nn.Module) -> dict[str, int]:
        """Where the signal enters -> its width per sample, where the rule fixes one (a direct
        rule's feedback points, after the first training forward pass); empty otherwise."""
        return {}

    def feedback_matrices(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The feedback matrices the rule uses now, by where they act; empty for BP."""
        return {}

    def set_targets(self, targets: torch.Tensor) -> None:
        """Gives the rule the batch's targets before ``backward`` (DRTP builds its signal from
        them); rules whose signal is the error ignore them, so a loop may call it for any rule."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __deepcopy__(self, memo: dict) -> Rule:
        """A rule is configuration shared by the models it is applied to: ``copy.deepcopy`` of a
        converted model gives the copy its own binding (hooks, buffers, records) under the same
        rule object, so ``rule.remove(copy)`` and ``rule.is_applied(copy)`` work on the copy."""
        return self


class BoundRule(Rule):
    """A rule that keeps one binding (hooks, buffers, state) per model it is applied to.

    The binding is stored **on the model** (attribute ``_feedback_alignment_<family>``), never in a
    registry of the rule keyed by ``id(model)``: it then travels with the model through
    ``copy.deepcopy`` and pickling (the copy trains with its own hooks and buffers, independent of
    the original), and a rule reused on new models can never mistake one for a dead model whose
    ``id`` was recycled. A binding holds its rule by reference; a deep copy of a model keeps that
    reference (see :meth:`Rule.__deepcopy__`) and copies everything else.

    A binding has a ``rule`` attribute, a ``mode`` attribute (``"rule"`` or ``"backprop"``), a
    ``recorders`` list of lists that its hooks fill with ``(name, tensor)``, and a ``calls`` dict
    of per-forward call counts.

    What is recorded is where the rule's signal enters: a direct rule's feedback points, a
    layer-wise rule's layer outputs (``dL/d(output)`` there is the layer's ``delta``, so
    :func:`~feedback_alignment.alignment.alignment` compares the rule's ``delta`` with BP's).
    """

    #: ``"direct"`` or ``"layerwise"``: one rule of each family may be applied to a model at once
    family: str = "rule"

    @property
    def _attribute(self) -> str:
        return f"_feedback_alignment_{self.family}"

    def _bound(self, model: nn.Module) -> Any | None:
        """The binding of this rule's family on ``model`` (``None`` if there is none)."""
        return model.__dict__.get(self._attribute)

    def _attach(self, model: nn.Module, binding: Any) -> None:
        """Stores ``binding`` on ``model`` (refuses a second rule of the same family)."""
        existing = self._bound(model)
        if existing is not None:
            raise RuntimeError(
                f"{type(model).__name__} already has {self.family} feedback applied "
                f"({existing.rule!r}); call remove(model) on that rule first"
            )
        model.__dict__[self._attribute] = binding

    def _detach(self, model: nn.Module) -> Any:
        """Removes and returns this rule's binding from ``model``."""
        binding = self._binding(model)
        del model.__dict__[self._attribute]
        return binding

    def is_applied(self, model: nn.Module) -> bool:
        binding = self._bound(model)
        return binding is not None and binding.rule is self

    def _binding(self, model: nn.Module) -> Any:
        binding = self._bound(model)
        if binding is None or binding.rule is not self:
            raise RuntimeError(f"{self!r} is not applied to this {type(model).__name__}")
        return binding

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


def applied_rules(model: nn.Module) -> list[Rule]:
    """The rules applied to ``model`` (at most one per family), e.g. after unpickling a converted
    model in another process, where the rule objects are the unpickled copies:
    ``for rule in fa.applied_rules(model): rule.remove(model)``."""
    prefix = "_feedback_alignment_"
    return [
        binding.rule
        for key, binding in model.__dict__.items()
        if key.startswith(prefix) and binding is not None
    ]


def compiled_wrapper(model: object) -> bool:
    """Whether ``model`` is the wrapper ``torch.compile(module)`` returns (an ``OptimizedModule``,
    holding the module as ``_orig_mod``). No TorchDynamo import: without it no wrapper exists."""
    dynamo = sys.modules.get("torch._dynamo.eval_frame")
    wrapper = getattr(dynamo, "OptimizedModule", None)
    return wrapper is not None and isinstance(model, wrapper)


def refuse_compiled_wrapper(model: object, rule: str) -> None:
    """Refuses ``rule.apply(torch.compile(model))``: the rule's state would live on the wrapper,
    where ``plain_state_dict``, ``remove`` and the inner model do not see it."""
    if compiled_wrapper(model):
        inner = type(model._orig_mod).__name__  # type: ignore[attr-defined]
        raise TypeError(
            f"{rule}.apply got a torch.compile'd {inner} (an OptimizedModule): apply the rule to "
            f"the uncompiled model, then compile it: rule.apply(model); compiled = "
            "torch.compile(model)"
        )


_DYNAMO_FRAME = os.path.join("_dynamo", "eval_frame.py")


def called_from_compiled_code(own: Callable | None = None, limit: int = 200) -> bool:
    """Whether the caller runs inside code that ``torch.compile`` wrapped (a compiled module or
    function), seen from a hook that TorchDynamo does not trace: one of the calling frames is
    TorchDynamo's entry point. ``own``: a function whose ``torch.compiler.disable`` wrapper (also
    a frame of that file) does not count. Reads at most ``limit`` frames."""
    if "torch._dynamo.eval_frame" not in sys.modules:
        return False
    frame = sys._getframe(1)
    for _ in range(limit):
        if frame is None:
            return False
        if frame.f_code.co_filename.endswith(_DYNAMO_FRAME) and (
            own is None or frame.f_locals.get("fn") is not own
        ):
            return True
        frame = frame.f_back
    return False


def refuse_reverse_transform(what: str, rule: str) -> None:
    """Refuses ``torch.func.grad``/``vjp``/``jacrev`` (functorch's reverse mode) around a
    converted model: its gradients would bypass the rule's autograd Functions (the graph cut, the
    projection of the error, the feedback matrices), so they would not be the rule's. Forward-mode
    ``jvp`` and ``vmap`` are not refused. One C call when no transform is active; nothing while
    TorchDynamo traces (the functorch stack cannot be read there, and would graph-break)."""
    if torch.compiler.is_compiling():
        return
    peek = getattr(torch._C._functorch, "peek_interpreter_stack", None)
    interpreter = peek() if peek is not None else None
    if interpreter is None or interpreter.key() != torch._C._functorch.TransformType.Grad:
        return
    raise PlacementError(
        f"{what} runs under torch.func.grad, vjp or jacrev, whose reverse mode bypasses {rule}'s "
        "feedback (the autograd Functions that carry it have no functorch rule): the result "
        f"would not be {rule}'s gradient. Compute it with loss.backward() or torch.autograd.grad "
        "on the converted model (torch.func.functional_call is fine), or call "
        "rule.remove(model) to differentiate the plain model"
    )
