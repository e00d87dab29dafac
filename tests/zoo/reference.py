"""A float64 reference for direct feedback on any model, written from the equations, not the library.

The reference runs an *unconverted* copy of the model (same weights) with its own forward hooks:

1. every feedback point's output is recorded (``h_l``, the tensor itself, or a tuple's first item)
   and *every* tensor of the output (each item of a tuple, nested tuples too: an LSTM's ``h_n`` and
   ``c_n``) is replaced by its ``detach()`` for all consumers, so the graph is cut there; a point
   at a module's input (``"h.0.ln_2:input"``) detaches that tensor in place, so that an inline
   residual holding it reads it cut too, and records a view taken first (the graph below);
2. the output ``y`` is recorded at the error site (the model's output or a head module's);
3. ``e = dL/dy`` is taken by autograd from the loss, in the cut graph; with an output nonlinearity
   ``y = sigmoid(z)`` the signal is ``e_z = e * y * (1 - y)`` (the top block still gets ``e``);
4. each point's signal is ``B_l e`` per sample: ``y``'s batch axes (all but the last, all of a
   1-D ``y``, or those named) count ``n`` samples; ``y``'s other axes, in order, are a sample's
   ``d_out`` features; a point's tensor holds the same samples at its batch axes (``axis,
   axis+1, ...`` from a first axis, 1 for a seq-first module, or named) and its other axes, in
   order, are the sample's ``n_l`` features; ``B_l`` is read from the raw buffer
   ``state_dict()["direct_feedback_matrix"]`` and sliced and scaled by the recipe documented in
   ``feedback.py`` and the README's "Feedback is state" (``oracle.slices``);
5. a parameter's gradient is the sum of its true gradient in the cut graph (the top block, and
   parameters tied to it) and, per point, ``torch.autograd.grad(h_l, params, B_l e)``: local
   backprop of the signal through the block below the point.

Nøkland, "Direct Feedback Alignment Provides Learning in Deep Neural Networks", NeurIPS 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

from oracle import slices

INPUT = ":input"
"""A point at a module's first input: that tensor is cut for every consumer (``detach_``)."""


def detach_all(value: Any) -> Any:
    """Every tensor of ``value`` (nested tuples and lists too) detached; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        items = [detach_all(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [detach_all(v) for v in value]
    return value


def first_tensor(value: Any) -> torch.Tensor:
    """The tensor itself, or a tuple's first item."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(f"a point returned {type(value).__name__}, not a tensor or a tuple of them")


@dataclass
class Reference:
    """What one reference step produced.

    Attributes:
        names: recorded point names in call order (``"act#1"`` for a module's second call).
        widths: features per sample of each point.
        top: each parameter's true gradient in the cut graph (``None`` where it has none).
        feeders: names of the parameters that feed at least one point.
        grads: the direct-feedback gradient of every parameter (``None`` where it has none).
        feedback_grads: per point, Direct Kolen-Pollack's ``dL/dB_l = e^T h_l`` (``e``: the
            signal's rows, ``h_l``: the point's tensor as ``(samples, n_l)`` rows).
    """

    names: list[str]
    widths: list[int]
    top: dict[str, torch.Tensor | None]
    feeders: set[str]
    grads: dict[str, torch.Tensor | None] = field(default_factory=dict)
    feedback_grads: list[torch.Tensor] = field(default_factory=list)


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def reference_step(
    model: nn.Module,
    points: Sequence[str],
    run: Callable[[nn.Module], torch.Tensor],
    *,
    error_site: str = "",
    buffer: torch.Tensor | None = None,
    point_axes: Mapping[str, int | Sequence[int]] | None = None,
    batch_axes: int | Sequence[int] | None = None,
    output_activation: str | None = None,
    shared: bool = True,
    scaling: str = "principled",
) -> Reference:
    """One step of direct feedback on the unconverted ``model``, computed from the equations.

    Args:
        model: the unconverted model (a copy of the converted one made before ``apply``).
        points: module paths of the feedback points (as ``rule.points`` gives them).
        run: forward pass and loss: ``run(model) -> loss``.
        error_site: path of the module whose output is ``y`` (``""``: the model's output).
        buffer: the raw feedback buffer; ``None`` computes only ``top`` and ``feeders`` (Shallow).
        point_axes: a point's batch axes (a first axis, or all of them), by path (default 0).
        batch_axes: ``y``'s batch axes (default: all but the last; a 1-D ``y``: its only axis).
        output_activation: ``"sigmoid"`` when ``y = sigmoid(z)`` and the signal is ``dL/dz``.
    """
    point_axes = dict(point_axes or {})
    records: list[tuple[str, str, torch.Tensor]] = []
    calls: dict[str, int] = {}
    outputs: list[torch.Tensor] = []

    def at_point(path: str, module: nn.Module, args: Any, output: Any) -> Any:
        h = first_tensor(output)
        if not h.requires_grad:
            return None
        count = calls.get(path, 0)
        calls[path] = count + 1
        records.append((f"{path}#{count}" if count else path, path, h))
        return detach_all(output)

    def at_error_site(module: nn.Module, args: Any, output: Any) -> None:
        outputs.append(first_tensor(output))

    def at_input(path: str, module: nn.Module, args: tuple) -> None:
        h = args[0]
        if not h.requires_grad:
            return
        if h._is_view():
            raise NotImplementedError(f"the reference cannot cut {path!r}: its input is a view")
        count = calls.get(path, 0)
        calls[path] = count + 1
        alias = h.view_as(h)  # keeps the graph below for the signal
        h.detach_()  # every holder of the tensor (an inline residual too) now reads it cut
        records.append((f"{path}#{count}" if count else path, path, alias))

    handles = []
    for path in points:
        if path.endswith(INPUT):
            module = model.get_submodule(path.removesuffix(INPUT))
            hook = partial(at_input, path)
            handles.append(module.register_forward_pre_hook(hook))
        else:
            hook = partial(at_point, path)
            handles.append(model.get_submodule(path).register_forward_hook(hook))
    handles.append(model.get_submodule(error_site).register_forward_hook(at_error_site))
    try:
        loss = run(model)
    finally:
        for handle in handles:
            handle.remove()
    y = outputs[-1]
    names, params = zip(*model.named_parameters(), strict=True)
    trainable = [p for p in params if p.requires_grad]
    index = {id(p): i for i, p in enumerate(trainable)}

    def by_name(grads: Sequence[torch.Tensor | None]) -> dict[str, torch.Tensor | None]:
        return {
            n: grads[index[id(p)]] if id(p) in index else None
            for n, p in zip(names, params, strict=True)
        }

    (error,) = torch.autograd.grad(loss, y, retain_graph=True)
    top = by_name(torch.autograd.grad(loss, trainable, retain_graph=True, allow_unused=True))

    if batch_axes is None:
        out_axes = list(range(max(y.dim() - 1, 1)))
    else:
        out_axes = [batch_axes] if isinstance(batch_axes, int) else list(batch_axes)
    front = list(range(len(out_axes)))

    def per_sample(t: torch.Tensor) -> torch.Tensor:
        moved = t.detach().movedim(out_axes, front)
        return moved.reshape(math.prod(moved.shape[: len(front)]), -1)

    samples = per_sample(y).shape[0]
    widths = [h.numel() // samples for _, _, h in records]
    feeders: set[str] = set()
    for _, _, h in records:
        reached = by_name(
            torch.autograd.grad(
                h, trainable, torch.ones_like(h), retain_graph=True, allow_unused=True
            )
        )
        feeders.update(n for n, g in reached.items() if g is not None)
    result = Reference([r[0] for r in records], widths, top, feeders)
    if buffer is None:
        return result

    signal = per_sample(error)
    if output_activation == "sigmoid":
        kept = per_sample(y)
        signal = signal * kept * (1 - kept)
    elif output_activation is not None:
        raise ValueError(
            f"the reference knows only output_activation='sigmoid', not {output_activation!r}"
        )
    feedback = slices(buffer.to(signal.dtype), widths, shared=shared, scaling=scaling)
    grads = dict(top)
    for (_, path, h), b in zip(records, feedback, strict=True):
        axes = point_axes.get(path, 0)
        axes = list(range(axes, axes + len(front))) if isinstance(axes, int) else list(axes)
        moved_shape = h.movedim(axes, front).shape
        delta = (signal @ b).reshape(moved_shape).movedim(front, axes)
        rows = h.detach().movedim(axes, front).reshape(signal.shape[0], -1)
        result.feedback_grads.append(signal.t() @ rows)
        local = by_name(
            torch.autograd.grad(h, trainable, delta, retain_graph=True, allow_unused=True)
        )
        grads = {n: _add(grads[n], local[n]) for n in grads}
    result.grads = grads
    return result


def backprop_grads(model: nn.Module, run: Callable[[nn.Module], torch.Tensor]) -> dict:
    """Plain autograd: every parameter's gradient of ``run(model)``'s loss (``None`` if unused)."""
    names, params = zip(*model.named_parameters(), strict=True)
    grads = torch.autograd.grad(run(model), params, allow_unused=True)
    return dict(zip(names, grads, strict=True))
