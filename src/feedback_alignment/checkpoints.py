"""Portable checkpoints: a converted model's weights in the unconverted model's format.

A rule adds state to the model it is applied to: a direct rule its feedback matrix
(``direct_feedback_matrix``), FA and the weight mirror ``weight_feedback`` buffers, frSF
``feedback_magnitude``, brSF ``feedback_stream``, Kolen-Pollack a ``weight_feedback``
*parameter*. ``model.state_dict()`` holds all of it, so that training resumes exactly; but such a
checkpoint does not load strictly into the same architecture without the rule.

:func:`plain_state_dict` gives the state dict that the unconverted model would have: every key a
rule added is left out (strictly loadable into the plain model, for inference, fine-tuning with
backprop, or publishing). The other way round, a converted model loads a plain checkpoint with a
strict ``load_state_dict``: feedback present in the checkpoint is kept; feedback it lacks is
regenerated from the rule's seed exactly as ``apply`` (or, for a direct rule, the first training
forward pass) made it. Feedback that training *learns* (Kolen-Pollack, weight mirror) cannot be
regenerated: it starts afresh from its initial draw, with a
:class:`~feedback_alignment.rules.base.FeedbackResetWarning`. brSF's stream restarts at draw 0.

Why a function and not a ``state_dict`` flag: torch's ``state_dict`` is what optimizers, DDP,
FSDP and Lightning call for resuming, and resuming needs the feedback; exporting is the explicit
act.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

from feedback_alignment.rules.base import compiled_wrapper

_BINDINGS = ("_feedback_alignment_direct", "_feedback_alignment_layerwise")


def feedback_keys(model: nn.Module) -> list[str]:
    """The ``model.state_dict()`` keys that applied rules added (feedback buffers and KP's
    parameters), for the model and every converted submodule (e.g. a rule applied to the inner
    model of a Lightning module or of a DDP wrapper)."""
    keys: list[str] = []
    for path, module in model.named_modules(remove_duplicate=False):
        prefix = f"{path}." if path else ""
        for attribute in _BINDINGS:
            binding = module.__dict__.get(attribute)
            if binding is None:
                continue
            if attribute.endswith("direct"):
                relative = binding.feedback_keys()
            else:
                relative = binding.feedback_keys(module)
            keys.extend(prefix + key for key in relative)
    return list(dict.fromkeys(keys))


def plain_state_dict(
    model: nn.Module, *, prefix: str = "", keep_vars: bool = False
) -> dict[str, Any]:
    """``model.state_dict(prefix=prefix, keep_vars=keep_vars)`` without the keys the rules added: what the same
    architecture without any rule has, and loads with ``strict=True``.

    Example::

        torch.save(fa.plain_state_dict(model), "weights.pt")     # portable
        plain = make_model(); plain.load_state_dict(torch.load("weights.pt"))
        converted = fa.DFA(seed=0).apply(make_model())
        converted.load_state_dict(torch.load("weights.pt"))      # feedback from the seed

    Tensors are shared with the model (as in ``state_dict``): clone them before changing them.
    A ``torch.compile``d model is read through the module it wraps (no ``_orig_mod.`` prefix).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"plain_state_dict expects the nn.Module a rule was applied to, got "
            f"{type(model).__name__} (a state dict is filtered by the model that made it)"
        )
    if compiled_wrapper(model):
        model = model._orig_mod  # type: ignore[assignment]
    state = model.state_dict(prefix=prefix, keep_vars=keep_vars)
    dropped = {prefix + key for key in feedback_keys(model)}
    plain: OrderedDict[str, Any] = OrderedDict(
        (key, value) for key, value in state.items() if key not in dropped
    )
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        plain._metadata = metadata  # type: ignore[attr-defined]
    return plain
