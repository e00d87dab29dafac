"""The autograd Functions: the only place in the library that writes a backward pass.

Direct feedback (DFA and relatives) needs exactly one Function, :class:`DirectFeedbackFn`. In the
forward pass it is the identity on the model's output ``y``, but it also takes every feedback point's
hidden tensor ``h_l`` as an input. In the backward pass it receives ``e = dL/dy``, hands ``e`` on to
``y`` unchanged (so the top block learns by ordinary backprop), and hands each ``h_l`` the projected
signal ``B_l s(e)`` in one matrix product. Every block below a point then runs ordinary local backprop
from that signal down to its own detached input, which does not require grad, so no work is done for
a gradient that would be thrown away.

References:
    Nøkland, "Direct Feedback Alignment Provides Learning in Deep Neural Networks", NeurIPS 2016.
    Launay et al., "Direct Feedback Alignment Scales to Modern Deep Learning Tasks and
    Architectures", NeurIPS 2020 (the cut-and-project implementation, TinyDFA).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class Projector(Protocol):
    """What :class:`DirectFeedbackFn` asks of its owner at backward time."""

    def project(
        self,
        error: torch.Tensor,
        hidden_shapes: Sequence[torch.Size],
        needed: Sequence[bool],
    ) -> list[torch.Tensor | None]:
        """Returns the signal for each hidden tensor, of its shape (``None`` where not needed).

        The autograd engine casts each signal to its tensor's dtype (autocast).
        """
        ...


class DirectFeedbackFn(torch.autograd.Function):
    """Identity on ``y`` forward; backward hands ``e`` to ``y`` and ``B_l s(e)`` to each ``h_l``.

    Call as ``DirectFeedbackFn.apply(projector, shapes, y, h_1, ..., h_k)`` where ``shapes`` are
    the shapes of ``h_1, ..., h_k`` (the caller has them already; forward stays minimal because it
    runs every step).
    """

    @staticmethod
    def forward(
        ctx,
        projector: Projector,
        hidden_shapes: Sequence[torch.Size],
        output: torch.Tensor,
        *hidden: torch.Tensor,
    ):
        ctx.projector = projector
        ctx.hidden_shapes = hidden_shapes
        return output.view_as(output)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        needed = ctx.needs_input_grad[3:]
        if any(needed):
            signals = ctx.projector.project(grad_output, ctx.hidden_shapes, needed)
        else:
            signals = [None] * len(needed)
        ctx.projector = None  # drop the reference early: nothing of the step outlives it
        return (None, None, grad_output, *signals)
