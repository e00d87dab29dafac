"""Learned direct feedback: DKP and FDFA, DFA whose feedback matrices learn.

Both rules feed back DFA's signal, ``delta_l = (B_l e) * f'(a_l)`` (see
:mod:`feedback_alignment.rules.direct` for the family, its cut and its projection), but ``B`` is a
trainable parameter of the model, ``direct_feedback_matrix`` of shape ``(d_out, sum n_l)`` with
disjoint columns per point, whose gradient the rule defines:

* DKP (Webster et al. 2020):  ``dL/dB_l = e^T h_l``, the gradient of a direct linear map from the
  point to the output (Direct Kolen-Pollack, see :class:`DKP`);
* FDFA (Bacho and Chu 2024):  ``dL/dB_l = B_l - (1/n) d^T u_l``, a momentum average of the
  Jacobian ``dy/dh_l`` estimated from forward-mode directional derivatives (see :class:`FDFA`).

How they plug into the direct family's binding (``direct._Binding``, which cuts the graph and
projects the error for every direct rule): the binding stores a matrix of a rule with
``learns_feedback = True`` as a parameter (drawn with the points' scales folded into its values)
and hands it to the injection node as an input, so that autograd and DDP deliver its gradient. All
the rest is here, in the extension points of :class:`~feedback_alignment.rules.direct.DirectFeedback`
that the binding calls during a step:

1. ``forward_tangents`` (FDFA), as a training forward pass begins: a :class:`ForwardTangents`,
   which adds a direction ``u_l`` at every point and is closed at the end of the pass;
2. ``saved_for_feedback``, as the error is injected: DKP keeps the points' tensors ``h_l``, FDFA
   the directions ``u_l`` and the output's tangent ``d``;
3. ``matrix_gradient``, in the backward pass: ``dL/dB``, point by point
   (:meth:`LearnedFeedback.feedback_gradient`, the equation of each rule);
4. ``step_watch``, at apply: a :class:`StepWatch`, checked after every backward pass, which warns
   when no optimiser steps ``B``.

References:
    Webster, Choi, Ahn, "Learning the Connections in Direct Feedback Alignment", 2020.
    Bacho, Chu, "Low-variance forward gradients using direct feedback alignment and momentum",
    Neural Networks 2024.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from feedback_alignment.feedback import FeedbackLayout
from feedback_alignment.points import PlacementError
from feedback_alignment.rules.base import called_from_compiled_code
from feedback_alignment.rules.direct import (
    FEEDBACK_BUFFER,
    DirectFeedback,
    LossScaled,
    Record,
    _EagerHook,
    _Forward,
    _to_rows,
)


class LearnedFeedback(DirectFeedback):
    """Base class of the direct rules whose feedback matrix is a trainable parameter (DKP,
    FDFA): a subclass gives the gradient of each point's ``B_l``
    (:meth:`feedback_gradient`) and, if it needs more than the points' tensors, what the forward
    pass saves for it (:meth:`saved_for_feedback`)."""

    learns_feedback = True

    def feedback_gradient(
        self,
        block: torch.Tensor,
        error: torch.Tensor,
        rows: torch.Tensor | None,
        derivative: torch.Tensor | None,
    ) -> torch.Tensor:
        """The gradient of a learned ``B_l`` (``block``, ``(d_out, n_l)``) from the error rows
        ``(n, d_out)``, the point's rows ``(n, n_l)`` and, for FDFA, the output's tangent rows."""
        raise NotImplementedError(f"{type(self).__name__} must define feedback_gradient")

    def saved_for_feedback(
        self, records: Sequence[Record], y: torch.Tensor, tangents: Any
    ) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
        """The points' tensors ``h_l`` (detached), for ``dL/dB_l = e^T h_l``."""
        return [h.detach() for _, h, _ in records], None

    def matrix_gradient(
        self,
        matrix: torch.Tensor,
        error: torch.Tensor,
        forward: _Forward,
        layout: FeedbackLayout,
    ) -> torch.Tensor:
        """The learned ``B``'s gradient, point by point in its columns: ``(d_out, total)``
        (DKP: ``e^T h_l``; FDFA: ``B_l - d^T u_l / n``; :meth:`feedback_gradient`)."""
        derivative = forward.derivative
        if derivative is not None:  # the output's tangent as rows, like the error
            if forward.output_axes is not None:
                rest = [a for a in range(derivative.dim()) if a not in forward.output_axes]
                derivative = derivative.permute(*forward.output_axes, *rest)
            derivative = derivative.reshape(-1, layout.out_features).to(error.dtype)
        assert forward.values is not None
        samples = error.shape[0]
        detached = matrix.detach()
        blocks = []
        for index, (value, axes) in enumerate(zip(forward.values, forward.axes, strict=True)):
            start, width = layout.offsets[index], layout.widths[index]
            rows = None if value is None else _to_rows(value, axes, samples).to(error.dtype)
            block = detached[:, start : start + width].to(error.dtype)
            blocks.append(self.feedback_gradient(block, error, rows, derivative))
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)

    def step_watch(self) -> StepWatch:
        return StepWatch()


class DKP(LearnedFeedback):
    """Direct Kolen-Pollack: DFA whose feedback matrices learn (Webster, Choi and Ahn, "Learning
    the Connections in Direct Feedback Alignment", 2020; reference code webstah/dkp-gist).

    The hidden signal is DFA's, ``delta_l = (B_l e) * f'(a_l)``, but each point has its own
    ``B_l`` (disjoint columns, never shared) and ``B_l`` is a trainable parameter whose gradient
    is the output error against the activity the point sees, summed over the samples::

        dL/dB_l = e^T h_l        (d_out x n_l; e: (n, d_out) rows of dL/dy, h_l: (n, n_l))

    ``B_l`` thus receives the gradient that a direct linear map from ``h_l`` to the output would
    receive: the direct analogue of Kolen-Pollack, whose ``B`` receives ``W``'s own gradient.
    **Scaling**: ``e`` is ``dL/dy`` of *your* loss, as for DFA; with a mean-reduced loss (the
    PyTorch default) it carries the ``1/n`` of the batch mean, which is the reference code's
    setting (``F.cross_entropy``'s mean over the batch; ``grad_at_output.t().mm(layer_out)``).
    A sum-reduced loss makes the update ``n`` times larger.

    The matrix is the model parameter ``direct_feedback_matrix`` of shape ``(d_out, sum n_l)``,
    initialised as ``U(-1/sqrt(n_l), 1/sqrt(n_l))`` per point by default (``uniform`` entries,
    ``nokland`` scale: the reference's ``kaiming_uniform_``), with the scale folded into the
    values (it learns from there; nothing rescales it). It must exist before the optimiser is
    built: pass ``example_input=`` to :meth:`apply` (or call :meth:`materialize`). The reference
    trains it by its own optimiser (Adam, lr 1e-4, weight decay 1e-6) beside SGD for the
    weights::

        rule = fa.DKP(seed=0)
        rule.apply(model, example_input=x[:2])
        feedback = rule.feedback_parameters(model)
        weights = [p for p in model.parameters() if all(p is not f for f in feedback)]
        opt_w = torch.optim.SGD(weights, lr=5e-4, momentum=0.9, nesterov=True)
        opt_b = torch.optim.Adam(feedback, lr=1e-4, weight_decay=1e-6)

    One optimiser over ``model.parameters()`` also trains it (with the weights' settings).
    Under DDP the gradient of ``B`` is averaged like any parameter's, so every rank makes the same
    update (apply and materialise before wrapping). A warning is given once when the weights
    change but ``B`` does not while it has a gradient (no optimiser holds it: DKP would then be
    DFA).
    """

    name = "DKP"
    key = "dkp"

    def __init__(
        self,
        distribution: str = "uniform",
        scale: str | float = "nokland",
        seed: int = 0,
        check_finite: bool = True,
        *,
        forward_time: bool = False,
    ) -> None:
        super().__init__(
            distribution,
            scale,
            shared=False,
            seed=seed,
            check_finite=check_finite,
            forward_time=forward_time,
        )

    def __repr__(self) -> str:
        return f"DKP(distribution={self.distribution!r}, scale={self.scale!r}, seed={self.seed})"

    def feedback_gradient(self, block, error, rows, derivative) -> torch.Tensor:
        """``dL/dB_l = e^T h_l``, summed over the samples."""
        assert rows is not None
        return error.t() @ rows


class FDFA(LossScaled, LearnedFeedback):
    """Forward Direct Feedback Alignment: DFA whose feedback matrices estimate the true
    Jacobians from forward-mode directional derivatives (Bacho and Chu, "Low-variance forward
    gradients using direct feedback alignment and momentum", Neural Networks 2024; reference code
    Florian-BACHO/FDFA).

    During each training forward pass every point ``l`` adds a random direction
    ``u_l ~ N(0, I)`` to the tangent of its output (forward-mode AD, ``torch.autograd.forward_ad``),
    so the output's tangent is the sum of directional derivatives ``d = sum_l J_l u_l`` with
    ``J_l = dy/dh_l``. Since the directions are independent with ``E[u u^T] = I``,
    ``E[d u_l^T] = J_l``: one forward pass gives an unbiased, noisy estimate of every point's
    Jacobian at once. ``B_l`` (shape ``(d_out, n_l)``) is a parameter whose gradient is

        dL/dB_l = B_l - (1/n) d^T u_l        (d: (n, d_out) rows, u_l: (n, n_l) rows)

    so an SGD step of rate ``1 - beta`` is the momentum average
    ``B_l <- beta B_l + (1 - beta) (1/n) d^T u_l`` of the estimates (the reference trains it with
    Adam). The hidden signal is DFA's through the estimate, ``delta_l = (B_l e) * f'(a_l)``,
    which tends to BP's ``J_l^T e`` (per sample, the Jacobian averaged over the samples and
    steps). ``B`` starts at zero, as in the reference, so the first step trains only the top.

    Directions are drawn, and ``B`` gets a gradient, only in training forward passes (model in
    training mode, gradients enabled): an eval-mode pass with gradients draws nothing, and a
    backward pass through it leaves ``B``'s gradient untouched.

    **Scaling**: ``B``'s gradient is made from the tangents, not from the loss, so it does not
    depend on the loss's reduction (mean or sum) or on any factor on the loss, unlike the
    weights'. Hence: with a loss scaler (mixed precision), tell the rule the scale once,
    ``rule.loss_scale = scaler`` (a ``torch.amp.GradScaler``; see :attr:`loss_scale`), which
    multiplies ``B``'s gradient, or ``scaler.step`` divides it by the scale and ``B`` stops
    learning (a :class:`~feedback_alignment.rules.base.LossScaleWarning` is given when a training
    pass runs under autocast without it); with gradient accumulation over ``k`` micro-batches,
    ``B``'s gradient is summed ``k`` times whatever the loss's ``1/k``: divide ``B``'s learning
    rate by ``k``.

    Every op between a point and the output must support forward-mode AD (PyTorch's built-in
    layers do; a custom ``autograd.Function`` needs a ``jvp``); a forward pass costs about twice
    as much. FDFA is refused under ``torch.compile`` (compiled blocks define no forward-mode
    derivative). The directions are drawn from the global RNG. Make the matrix before building
    the optimiser (``apply(model, example_input=x)``), as for :class:`DKP`; under DDP its
    gradient is averaged across ranks like any parameter's, so every rank keeps the same
    estimate.
    """

    name = "FDFA"
    key = "fdfa"
    forward_gradient = True
    unscaled_part = "the gradient of its feedback matrix B (made from forward-mode tangents)"

    def __init__(
        self, seed: int = 0, check_finite: bool = True, *, forward_time: bool = False
    ) -> None:
        super().__init__(
            "gaussian",
            "none",
            shared=False,
            seed=seed,
            check_finite=check_finite,
            forward_time=forward_time,
        )

    def __repr__(self) -> str:
        return f"FDFA(seed={self.seed})"

    def initial_feedback(self, shape, layout, dtype, device) -> torch.Tensor:
        """Zero, as in the reference: the estimate is built from the directional derivatives."""
        return torch.zeros(shape, dtype=dtype, device=device)

    def feedback_gradient(self, block, error, rows, derivative) -> torch.Tensor:
        """``B_l - (1/n) d^T u_l``; a point that drew no direction (frozen below) decays to 0."""
        if rows is None or derivative is None:
            return block
        return block - derivative.t() @ rows / rows.shape[0]

    def matrix_gradient(self, matrix, error, forward, layout) -> torch.Tensor | None:
        """``B_l - d^T u_l / n`` per point (:meth:`feedback_gradient`), computed in at least
        float32 and multiplied by :attr:`loss_scale`, since the loss's scale is not in it;
        ``None`` after a pass without tangents (an eval-mode pass): no gradient."""
        if forward.derivative is None:
            return None
        dtype = torch.promote_types(error.dtype, matrix.dtype)
        grad = super().matrix_gradient(matrix, error.to(dtype), forward, layout)
        scale = self.loss_scale
        return grad if scale == 1.0 else grad * scale

    def forward_tangents(self, model_name: str) -> ForwardTangents:
        """A forward-mode AD level for this training forward pass, in which every point adds its
        direction ``u_l`` (refused under ``torch.compile``)."""
        _refuse_compiled_forward_gradient(self.name, model_name)
        return ForwardTangents()

    def saved_for_feedback(
        self, records: Sequence[Record], y: torch.Tensor, tangents: Any
    ) -> tuple[list[torch.Tensor | None], torch.Tensor | None]:
        """The points' directions ``u_l`` and the output's tangent ``d = sum_l J_l u_l``."""
        if tangents is None:  # no forward-mode level in this pass: no estimate (B decays)
            return [None for _ in records], None
        return tangents.values(records), tangents.derivative(y, records, self.name)


_JVP_DECOMPOSITIONS = "torch._decomp.decompositions_for_jvp"
_JIT_SCRIPT_DEPRECATED = r"`torch\.jit\.script` is (deprecated|not supported in Python 3\.14)"


class ForwardTangents:
    """FDFA's forward-mode AD for one training forward pass: a forward-mode AD level, and
    attention by the math kernel (the fused CPU/CUDA kernels define no forward-mode derivative;
    the math kernel's ops do), entered when the pass begins and left by :meth:`close` at its end.
    Holds the direction ``u_l`` each point drew."""

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(fwAD.dual_level())
        self._stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        self.directions: dict[str, torch.Tensor] = {}  # u_l per point

    def perturb(self, point: str, tensor: torch.Tensor, cut: torch.Tensor) -> torch.Tensor:
        """The cut output carries the tangent that reached it plus a new direction
        ``u_l ~ N(0, I)`` (``detach`` drops tangents: the cut keeps only the graph's cut)."""
        incoming = fwAD.unpack_dual(tensor).tangent
        direction = torch.randn_like(cut)
        self.directions[point] = direction
        tangent = direction if incoming is None else incoming + direction
        if _JVP_DECOMPOSITIONS in sys.modules:
            return fwAD.make_dual(fwAD.unpack_dual(cut).primal, tangent)
        with warnings.catch_warnings():
            # the first make_dual of a process imports torch's forward-mode decompositions,
            # which call the deprecated torch.jit.script ~18 times (an error under -W error)
            warnings.filterwarnings(
                "ignore", message=_JIT_SCRIPT_DEPRECATED, category=DeprecationWarning
            )
            return fwAD.make_dual(fwAD.unpack_dual(cut).primal, tangent)

    def values(self, records: Sequence[Record]) -> list[torch.Tensor | None]:
        """The direction of each recorded point (``None``: a point that drew none, frozen below)."""
        return [self.directions.get(name) for name, _, _ in records]

    def derivative(self, y: torch.Tensor, records: Sequence[Record], rule: str) -> torch.Tensor:
        """The output's tangent ``d = sum_l J_l u_l`` (detached)."""
        derivative = fwAD.unpack_dual(y).tangent
        if derivative is None:
            raise PlacementError(
                f"{rule}: no forward-mode tangent reached the output from the "
                f"feedback points {[n for n, _, _ in records]}: an op between them and the "
                "output drops tangents, so the Jacobians cannot be estimated. Usually the output "
                "reads another output of a point than its first, which the cut detaches (an "
                "RNN head on h_n: read out[:, -1] instead), or the path holds a detach, a "
                "custom autograd.Function without jvp, or code that unpacks dual tensors. "
                "DKP and DFA need no tangents"
            )
        return derivative.detach()

    def close(self) -> None:
        self._stack.close()


def _refuse_compiled_forward_gradient(rule: str, model: str) -> None:
    """FDFA under ``torch.compile``: the compiled blocks between the points are autograd
    Functions without a forward-mode derivative, so the tangents that estimate the Jacobians
    cannot pass them (PyTorch would raise a bare ``NotImplementedError`` from inside a block)."""
    if called_from_compiled_code(own=_EagerHook._run):
        raise PlacementError(
            f"{rule} on {model} runs under torch.compile, whose compiled blocks define no "
            "forward-mode derivative: the tangents that estimate each point's Jacobian cannot "
            f"pass them. Train {rule} on the uncompiled model (call the module itself, not "
            "torch.compile(model) or model.compile()), or use DKP or DFA, which compile"
        )


class StepWatch:
    """Per model: warns once when a hidden weight changed between two backward passes but the
    learned ``B`` did not: no optimiser holds ``B``, so DKP would be DFA (and FDFA would train
    only the top)."""

    def __init__(self) -> None:
        self.stepped: tuple | None = None  # (id, version) of B and of a hidden weight
        self.probe: tuple | None = None  # (roles it was found in, a hidden weight) for that
        self.warned = False

    def reset(self) -> None:
        """After a load: the matrix was replaced, the next backward pass starts the watch again."""
        self.stepped = None

    def check(
        self, rule: DirectFeedback, model: nn.Module, roles: dict[str, str], matrix: torch.Tensor
    ) -> None:
        """Called after each backward pass that computed ``B``'s gradient; ``roles``: the
        parameters' roles from the last cut verification."""
        if self.warned or torch.compiler.is_compiling():
            return
        if self.probe is None or self.probe[0] is not roles:  # a new proof: look again, once
            hidden = (p for n, p in model.named_parameters() if roles.get(n) == "hidden")
            self.probe = (roles, next(hidden, None))
        probe = self.probe[1]
        if probe is None:
            return
        now = ((id(matrix), matrix._version), (id(probe), probe._version))
        last, self.stepped = self.stepped, now
        if last is not None and last[0] == now[0] and last[1] != now[1]:
            self.warned = True
            meaning = (
                "it stays at its initial zero, so the layers below the points get no signal "
                "(only the top learns)"
                if rule.forward_gradient
                else "it does not learn (this is DFA)"
            )
            warnings.warn(
                f"{rule.name}: the weights below the feedback points changed but the "
                f"feedback matrix {FEEDBACK_BUFFER!r} did not, although it receives a gradient: "
                f"no optimiser holds it (or it does not require grad), so {meaning}. Build the "
                "optimiser after rule.apply(model, example_input=x), or give it "
                "rule.feedback_parameters(model)",
                stacklevel=2,
            )
