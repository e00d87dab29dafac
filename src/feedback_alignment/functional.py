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
from typing import Any, Protocol

import torch


class Projector(Protocol):
    """What :class:`DirectFeedbackFn` asks of its owner at backward time."""

    def project(
        self, error: torch.Tensor, context: Any, needed: Sequence[bool]
    ) -> list[torch.Tensor | None]:
        """Returns the signal for each hidden tensor, of its shape (``None`` where not needed).

        ``context`` is what the caller passed to ``apply`` for this forward pass (the hidden
        tensors' shapes, and whatever else its backward needs). The autograd engine casts each
        signal to its tensor's dtype (autocast).
        """
        ...


class DirectFeedbackFn(torch.autograd.Function):
    """Identity on ``y`` forward; backward hands ``e`` to ``y`` and ``B_l s(e)`` to each ``h_l``.

    Call as ``DirectFeedbackFn.apply(projector, context, y, h_1, ..., h_k)``: ``context`` is handed
    back to ``projector.project`` unchanged (the caller already knows the shapes of ``h_1 ... h_k``;
    forward stays minimal because it runs every step).
    """

    @staticmethod
    def forward(projector: Projector, context: Any, output: torch.Tensor, *hidden: torch.Tensor):
        return output.view_as(output)

    @staticmethod
    def setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
        # a separate setup_context (not ctx in forward) lets forward-mode AD (torch.func.jvp,
        # forward-gradient rules) run through the injection
        ctx.projector, ctx.context = inputs[0], inputs[1]

    @staticmethod
    def jvp(ctx, projector_tangent, context_tangent, output_tangent, *hidden_tangents):
        """Forward mode: the identity on ``y``'s tangent (the points' tangents do not reach ``y``
        through this node; they reach it through the model's own ops). A view, as forward's
        output is one."""
        return output_tangent.view_as(output_tangent)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        needed = ctx.needs_input_grad[3:]
        if any(needed):
            signals = ctx.projector.project(grad_output, ctx.context, needed)
        else:
            signals = [None] * len(needed)
        # ctx is kept (not cleared): backward(retain_graph=True) may call this again; the graph,
        # and ctx with it, is freed when the step's tensors are
        return (None, None, grad_output, *signals)


# --- Layer-wise feedback (FA, sign-symmetry, Kolen-Pollack, weight mirror) -----------------------
#
# A layer-wise rule replaces, in each weight layer's backward pass, the use of ``W^T`` that carries
# the error to the layer's input by a feedback matrix ``B`` of the shape of ``W^T``. The Functions
# below take ``F = B^T`` (the shape of ``W``, so that a convolution's feedback is a kernel of the
# weight's layout) and a scalar ``s``: the input receives ``s * (g F)``; ``F = W, s = 1`` is
# backpropagation. (The scale is a separate argument so that a rule can keep an unscaled kernel,
# ``sign(W)`` for uSF, cached across steps and pay for the scale on the smaller of the two sides.)
# The weight (and bias) gradient stays the true local one, ``dW = delta h^T``, which never reads
# ``W``: only ``h`` and ``F`` are saved.
#
# When ``F`` itself requires grad (Kolen-Pollack's learnt ``B^T``), it receives the very same local
# signal as ``W``, ``dF = delta h^T``: Akrout et al.'s rule, in which ``B`` is updated from
# ``delta`` and ``h`` only. The backward returns the same tensor for both: autograd's
# ``AccumulateGrad`` copies a gradient that is handed to two leaves, so ``W.grad`` and ``F.grad``
# never alias and an in-place transform of one (``GradScaler.unscale_``, clipping) never acts twice
# (tests/test_surviving_mutations.py); a copy here would be a second, wasted one.
#
# References:
#     Lillicrap et al., "Random synaptic feedback weights support error backpropagation for deep
#     learning", Nature Communications 2016.
#     Liao, Leibo, Poggio, "How Important Is Weight Symmetry in Backpropagation?", AAAI 2016.
#     Akrout et al., "Deep Learning without Weight Transport", NeurIPS 2019.

Scale = float | torch.Tensor
"""A Python number or a 0-d tensor (on the layer's device) multiplying the input gradient."""


def _scaled(grad: torch.Tensor, scale: Scale) -> torch.Tensor:
    if isinstance(scale, torch.Tensor):
        return grad.mul_(scale.to(grad.dtype))
    return grad if scale == 1.0 else grad.mul_(scale)


def linear_weight_grad(inputs: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """``dW = sum over every leading axis of grad_out^T h``, shape ``(out, in)``."""
    rows = grad_output.reshape(-1, grad_output.shape[-1])
    return rows.T @ inputs.reshape(-1, inputs.shape[-1]).to(rows.dtype)


class LinearFeedbackFn(torch.autograd.Function):
    """``y = h W^T + b`` forward; backward: ``dL/dh = s g F``, ``dW = g^T h``, ``db = sum g``.

    ``g = dL/dy`` and ``F = B^T`` has ``W``'s shape ``(out, in)``. ``h`` may have any number of
    leading axes (batch, tokens, graph nodes): they are summed over in ``dW`` and ``db``. If ``F``
    requires grad it receives ``dF = dW`` (Kolen-Pollack).

    Call as ``LinearFeedbackFn.apply(h, weight, bias_or_None, feedback, scale=1.0)``.
    """

    @staticmethod
    def forward(ctx, inputs, weight, bias, feedback, scale: Scale = 1.0):
        ctx.save_for_backward(inputs, feedback)
        ctx.scale = scale
        return torch.nn.functional.linear(inputs, weight, bias)

    @staticmethod
    def backward(ctx, grad_output):
        inputs, feedback = ctx.saved_tensors
        need_input, need_weight, need_bias, need_feedback = ctx.needs_input_grad[:4]
        grad_input = grad_weight = grad_bias = grad_feedback = None
        if need_input:
            grad_input = _scaled(grad_output @ feedback.to(grad_output.dtype), ctx.scale)
        if need_weight or need_feedback:
            local = linear_weight_grad(inputs, grad_output)
            grad_weight = local if need_weight else None
            if need_feedback:
                grad_feedback = local  # not aliased: see the module comment
        if need_bias:
            grad_bias = grad_output.reshape(-1, grad_output.shape[-1]).sum(dim=0)
        return grad_input, grad_weight, grad_bias, grad_feedback, None


_CONV_FORWARD = {
    1: torch.nn.functional.conv1d,
    2: torch.nn.functional.conv2d,
    3: torch.nn.functional.conv3d,
}


def conv_nd(
    inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, conv: tuple
) -> torch.Tensor:
    """The N-d convolution of ``weight``'s rank; ``conv = (stride, padding, dilation, groups)``."""
    return _CONV_FORWARD[weight.dim() - 2](inputs, weight, bias, *conv)


def conv_backward(
    grad_output: torch.Tensor,
    inputs: torch.Tensor,
    kernel: torch.Tensor,
    conv: tuple,
    mask: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Input, weight and bias gradients of a batched convolution, input gradient through ``kernel``.

    ``conv = (stride, padding, dilation, groups)`` with integer padding. The weight gradient does
    not depend on the kernel's values (only its shape), so passing the feedback kernel ``F`` gives
    ``dL/dh`` through ``F`` and the true ``dW`` in one call.
    """
    stride, padding, dilation, groups = conv
    dtype = grad_output.dtype
    grads = torch.ops.aten.convolution_backward(
        grad_output,
        inputs.to(dtype),
        kernel.to(dtype),
        [kernel.shape[0]] if mask[2] else None,
        list(stride),
        list(padding),
        list(dilation),
        False,
        [0] * len(stride),
        groups,
        list(mask),
    )
    return tuple(g if need else None for g, need in zip(grads, mask, strict=True))


class ConvFeedbackFn(torch.autograd.Function):
    """N-d convolution forward (N = 1, 2, 3); backward hands the input ``s * conv_input(g, F)``.

    ``dL/dh`` is the transposed convolution of ``g = dL/dy`` with the feedback kernel ``F = B^T``
    (``W``'s shape) instead of ``W``; ``dW`` and ``db`` are the true local gradients (and
    ``dF = dW`` if ``F`` requires grad). Any stride, integer padding, dilation and groups; the
    input must be batched ``(N, C, *spatial)``.

    Call as ``ConvFeedbackFn.apply(h, weight, bias_or_None, feedback, stride, padding, dilation,
    groups, scale=1.0)`` with tuples of ``N`` integers.
    """

    @staticmethod
    def forward(
        ctx, inputs, weight, bias, feedback, stride, padding, dilation, groups, scale: Scale = 1.0
    ):
        ctx.save_for_backward(inputs, feedback)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.scale = scale
        return conv_nd(inputs, weight, bias, ctx.conv)

    @staticmethod
    def backward(ctx, grad_output):
        inputs, feedback = ctx.saved_tensors
        need_input, need_weight, need_bias, need_feedback = ctx.needs_input_grad[:4]
        mask = (need_input, need_weight or need_feedback, need_bias)
        if not any(mask):
            return (None,) * 9
        grad_input, local, grad_bias = conv_backward(grad_output, inputs, feedback, ctx.conv, mask)
        if grad_input is not None:
            grad_input = _scaled(grad_input, ctx.scale)
        grad_weight = local if need_weight else None
        grad_feedback = None
        if need_feedback:
            grad_feedback = local  # not aliased: see the module comment
        return (grad_input, grad_weight, grad_bias, grad_feedback, None, None, None, None, None)
