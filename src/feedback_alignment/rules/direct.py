"""Direct feedback: DFA, sign-DFA, DRTP and the shallow control; the machinery of the family.

Every rule of this family cuts the model's graph at its feedback points and hands each point ``l``
the signal ``B_l s`` computed from the output in one projection per step:

* DFA (Nøkland 2016):        ``s = e = dL/dy``
* sign-DFA:                  ``s = sign(e) / n``
* DRTP (Frenkel et al. 2021): ``s = -y* / n`` (targets only, no error)
* DKP (Webster et al. 2020):  ``s = e``, with every ``B_l`` a trainable parameter that learns
  ``dL/dB_l = e^T h_l`` (Direct Kolen-Pollack, see :class:`~feedback_alignment.rules.learned.DKP`)
* FDFA (Bacho and Chu 2024):  ``s = e``, with every ``B_l`` a running estimate of the Jacobian
  ``dy/dh_l`` from forward-mode directional derivatives (see
  :class:`~feedback_alignment.rules.learned.FDFA`)
* Shallow (control):         no signal; only the block after the last point (the top) learns.

``n`` is the number of samples (rows of the output after flattening its leading axes), so that the
signal has the scale of the error of a mean-reduced loss whatever the batch size; ``-y*`` has the
sign of ``e = y_hat - y*`` on the target class. Between two points, ordinary local backprop runs, so
``delta_l = (B_l s) * f'(a_l)`` and ``dW_l = delta_l h_{l-1}^T`` for a layer directly below a point,
and the top block receives the true error.

Any number of leading batch-like axes is supported: the output ``y`` of shape ``(*lead, d_out)``
defines ``lead`` (tokens, graph nodes, ray samples are batch), every point's tensor must start with
the same ``lead`` axes, and its remaining axes are flattened into its width (``C*H*W`` for a conv
feature map). ``e`` is projected per lead position.

This module holds the rules with a fixed feedback matrix and the machinery of the whole family
(:class:`DirectFeedback`, and ``_Binding``: the hooks that cut the graph, record the points and
inject the projection). The two rules whose matrix learns, DKP and FDFA, are in
:mod:`feedback_alignment.rules.learned`; they reach the binding through the extension points of
:class:`DirectFeedback` (``forward_tangents``, ``saved_for_feedback``, ``matrix_gradient``,
``step_watch``). ``from feedback_alignment.rules.direct import DKP, FDFA`` still works.

References:
    Nøkland, "Direct Feedback Alignment Provides Learning in Deep Neural Networks", NeurIPS 2016.
    Webster, Choi, Ahn, "Learning the Connections in Direct Feedback Alignment", 2020.
    Bacho, Chu, "Low-variance forward gradients using direct feedback alignment and momentum",
    Neural Networks 2024.
    Frenkel, Lefebvre, Bol, "Learning Without Feedback: Fixed Random Learning Signals Allow for
    Feedforward Training of Deep Neural Networks", Frontiers in Neuroscience 2021.
    Launay et al., "Direct Feedback Alignment Scales to Modern Deep Learning Tasks and
    Architectures", NeurIPS 2020.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.cut import verify_cut
from feedback_alignment.feedback import (
    DISTRIBUTIONS,
    SCALINGS,
    FeedbackLayout,
    check_fits,
    check_scale,
    check_seed,
    direct_stream_seed,
    draw,
)
from feedback_alignment.functional import DirectFeedbackFn
from feedback_alignment.points import (
    INPUT_SUFFIX,
    OutputSelector,
    Placement,
    PlacementError,
    enclosing_blocks,
    find_blocks,
    find_head,  # noqa: F401  (moved to points.py; importable from here as before)
)
from feedback_alignment.projector import Projector
from feedback_alignment.rules.base import (
    BottleneckWarning,
    BoundRule,
    FeedbackResetWarning,
    LossScaleWarning,
    refuse_compiled_wrapper,
    refuse_reverse_transform,
)

FEEDBACK_BUFFER = "direct_feedback_matrix"
"""Name of the feedback buffer registered on the model: ``model.state_dict()[FEEDBACK_BUFFER]``."""


class DirectFeedback(BoundRule):
    """Base class of the direct-feedback rules (see the module doc for the equations).

    Args:
        distribution: of the feedback entries: ``"gaussian"``, ``"uniform"`` or
            ``"rademacher"`` (see :func:`feedback_alignment.feedback.draw`); the same keyword as
            the layer-wise rules'. ``feedback=`` is its former name (deprecated, one release).
        scale: scaling of each point's feedback: ``"principled"`` (``1/sqrt(n_l d_out)``),
            ``"tinydfa"``, ``"nokland"``, ``"none"`` or a number (see :mod:`feedback_alignment.feedback`).
        shared: one matrix sliced by every point (``True``, TinyDFA's trick) or disjoint columns,
            i.e. independent matrices per point (``False``). Both project the signal once per step.
        seed: seed of the feedback draw; the same seed gives the same matrix on every process.
        check_finite: raise when the output error contains NaN or Inf (one reduction per step).
    """

    name = "direct"
    family = "direct"
    #: the rule feeds a signal back to the points (``False``: Shallow, only the top learns)
    feeds_back: bool = True
    #: the feedback matrix is a trainable parameter (DKP, FDFA), not a fixed buffer
    learns_feedback: bool = False
    #: the forward pass carries forward-mode tangents from the points to the output (FDFA)
    forward_gradient: bool = False
    #: the signal is known before the output (DRTP's targets): forward_time=True is possible
    signal_before_output: bool = False

    def __init__(
        self,
        distribution: str = "gaussian",
        scale: str | float = "principled",
        shared: bool = True,
        seed: int = 0,
        check_finite: bool = True,
        *,
        feedback: str | None = None,
        forward_time: bool = False,
    ) -> None:
        owner = type(self).__name__
        if forward_time and not self.signal_before_output:
            raise ValueError(
                f"{owner}(forward_time=True): a forward-time update needs a signal known before "
                "the output exists, and this rule's signal is computed from the output error, "
                "which exists only after the forward pass (and the loss); DRTP's signal needs "
                "only the targets: use fa.DRTP(forward_time=True)"
            )
        self.forward_time = bool(forward_time)
        if feedback is not None:
            warnings.warn(
                f"{owner}(feedback=...) is deprecated: the keyword is distribution=, as for the "
                "layer-wise rules (feedback= goes in the next release)",
                FutureWarning,
                stacklevel=2,
            )
            distribution = feedback
        if distribution not in DISTRIBUTIONS:
            hint = (
                f" (the first argument is the distribution; did you mean seed={distribution}?)"
                if isinstance(distribution, int) and not isinstance(distribution, bool)
                else ""
            )
            raise ValueError(
                f"{owner}: unknown distribution {distribution!r} of the feedback entries; choose "
                f"one of {DISTRIBUTIONS}{hint}"
            )
        self.distribution = distribution
        self.scale = check_scale(scale, SCALINGS, owner)
        self.shared = bool(shared)
        self.seed = check_seed(seed, owner)
        self.check_finite = bool(check_finite)

    def __repr__(self) -> str:
        timing = ", forward_time=True" if self.forward_time else ""
        return (
            f"{type(self).__name__}(distribution={self.distribution!r}, scale={self.scale!r}, "
            f"shared={self.shared}, seed={self.seed}{timing})"
        )

    @property
    def feedback(self) -> str:
        """Former name of :attr:`distribution` (deprecated, one release)."""
        warnings.warn(
            "rule.feedback is deprecated: read rule.distribution",
            FutureWarning,
            stacklevel=2,
        )
        return self.distribution

    # --- Rule API ------------------------------------------------------------------------------

    def apply(
        self,
        model: nn.Module,
        *,
        points: Sequence[str] | None = None,
        output: OutputSelector = None,
        error_at: str | None = None,
        output_activation: str | None = None,
        batch_axes: int | Sequence[int] | None = None,
        point_batch_axes: Mapping[str, int | Sequence[int]] | None = None,
        true_gradient: Sequence[str] = (),
        verify: str = "placement",
        example_input: Any = None,
    ) -> nn.Module:
        """Cuts ``model`` at its feedback points and installs the projection of the error.

        Args:
            model: any ``nn.Module``; it is modified only by forward hooks and one buffer,
                ``FEEDBACK_BUFFER`` (a parameter for :class:`DKP` and :class:`FDFA`, whose
                feedback learns), which appears in ``state_dict`` once the first training
                forward pass (or ``example_input``) has fixed its shape.
            points: module paths of the feedback points; default: markers, else automatic
                placement (block outputs, recurrent/attention layers, activations;
                :func:`~feedback_alignment.points.find_points`).
            output: which part of a non-tensor model output is ``y``: an index (tuples, lists),
                a key (dicts, ``ModelOutput``) or an attribute name. With a key or attribute and
                no ``error_at``, the error is injected at the **head module** (Hugging Face's
                ``get_output_embeddings()``, else the last layer with parameters), so a loss the
                model computes inside ``forward`` (``model(x, labels=y).loss``) trains by the rule.
            error_at: take the error at this submodule's output instead of the model's (e.g. the
                final norm before a vocabulary projection); every point must run before it.
            output_activation: the model's output is ``y = f(z)`` with a functional ``f`` that no
                module returns the input of (``torch.sigmoid(logits)`` in torchfm's models): feed
                back the error at ``z``, ``e_z = dL/dz``, computed from ``y`` and ``e`` by
                ``"sigmoid"`` (``e * y (1 - y)``), ``"tanh"`` (``e * (1 - y^2)``),
                ``"softmax"`` (``y * (e - <e, y>)``) or ``"log_softmax"``
                (``e - exp(y) sum(e)``), over the last axis. The top block still gets ``e``.
            batch_axes: the axes of ``y`` that index samples (default: all but the last); the
                other axes are flattened into ``d_out``. ``batch_axes=0`` on a ``(B, C, H, W)``
                output feeds back the whole map per sample.
            point_batch_axes: ``{point: axes}`` where a point's tensor holds the samples at other
                positions than ``y`` does (default: the same leading positions, except layers with
                ``batch_first=False``, whose batch axis 1 is read automatically).
            true_gradient: module paths whose parameters may receive the true gradient from the
                error site as well as feedback, through a path that bypasses the points (a hybrid,
                e.g. DeepFM's FM term reaching the embedding). The cut verification refuses
                every other such path.
            verify: ``"placement"`` (default) proves the cut at the first training forward pass of
                every new placement and output structure; ``"always"`` at every training forward
                pass (one graph walk per step), for models whose graph changes between steps
                with the same points (a flag or a data-dependent branch that adds a skip path).
            example_input: a batch to run once now (:meth:`materialize`): the layout is fixed,
                the feedback made and the cut proved before this returns. A tensor is the
                model's one positional argument, a tuple its positional arguments, a dict its
                keyword arguments. Required by :class:`DKP` and :class:`FDFA` (or a
                :meth:`materialize` call), whose feedback matrix is a parameter the optimiser
                must hold.

        Raises:
            PlacementError: no feedback point, or a named module does not exist. A placement that
                does not cut the graph is refused at the first training forward pass.
            RuntimeError: a direct-feedback rule is already applied to ``model``.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__}.apply expects an nn.Module, got {type(model)}")
        refuse_compiled_wrapper(model, type(self).__name__)
        if self._bound(model) is not None:
            self._attach(model, None)  # raises, naming the rule already applied
        if verify == "always" and self.forward_time:
            raise ValueError(
                f"{self.name}(forward_time=True) frees each block's graph at its point during "
                "the forward pass, so the cut cannot be walked at every step: use "
                "verify='placement' (each new placement runs one step backward-time, verified)"
            )
        if self.forward_gradient and output_activation is not None:
            raise ValueError(
                f"{self.name} estimates dy/dh_l from the output's forward tangent, but with "
                f"output_activation={output_activation!r} the error is fed back at the "
                "activation's input z, whose Jacobian the tangent of y does not give: apply the "
                "rule to a model that returns z (the loss taking the logits)"
            )
        if output_activation is not None and output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"unknown output_activation {output_activation!r}; choose one of "
                f"{sorted(OUTPUT_ACTIVATIONS)} or None"
            )
        placement = Placement.build(
            model,
            points=points,
            output=output,
            error_at=error_at,
            output_activation=output_activation,
            batch_axes=batch_axes,
            point_batch_axes=point_batch_axes,
            true_gradient=true_gradient,
            verify=verify,
        )
        binding = _Binding(self, model, placement)
        self._attach(model, binding)
        if example_input is not None:
            try:
                if isinstance(example_input, dict):
                    self.materialize(model, **example_input)
                elif isinstance(example_input, tuple):
                    self.materialize(model, *example_input)
                else:
                    self.materialize(model, example_input)
            except BaseException:
                self.remove(model)  # a refused placement leaves the model as it was
                raise
        return model

    def materialize(self, model: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        """Runs ``model(*args, **kwargs)`` once with gradients enabled and in eval mode (no
        running statistics or dropout draws change), and throws the output away: the feedback
        layout is fixed, the feedback matrix made and the cut proved now rather than at the
        first training step.

        Why: :class:`DKP`'s and :class:`FDFA`'s matrices are trainable parameters; they must
        exist before the
        optimiser (and ``DistributedDataParallel``) is built, or nothing would update them (or
        their gradients would not be averaged across ranks). For the fixed-feedback rules it
        only moves the first step's checks forward.
        """
        binding = self._binding(model)
        training = model.training
        model.eval()
        binding.materializing = True
        try:
            with torch.enable_grad():
                model(*args, **kwargs)
        except Exception as error:
            wrapped = self._example_failure(error, model)
            if wrapped is error:
                raise
            raise wrapped from error
        finally:
            binding.materializing = False
            model.train(training)
        if binding.feeds and binding.layout is None:
            raise PlacementError(
                f"{self.name}: the example input ran no feedback point of "
                f"{type(model).__name__} with grad enabled, so the feedback could not be made: "
                "pass an input of the kind training uses"
            )
        return model

    def _example_failure(self, error: Exception, model: nn.Module) -> Exception:
        """The exception to raise when running the example input raised ``error``: the same
        type (raised from ``error``) with a message that says where it came from, so that code
        catching, say, ``RuntimeError`` still does; ``error`` itself with that note added where
        its type cannot be rebuilt from a message. FDFA's missing forward-mode derivative is a
        :class:`PlacementError` naming the remedy."""
        first = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        note = (
            f"(raised while running the example input through {type(model).__name__}: "
            f"{self.name}.apply(model, example_input=...) or {self.name}.materialize(model, "
            "...) runs it as a batch of the inputs training uses, batch axis included, e.g. "
            "x[:2] and not x[0]; a tensor is the model's one positional argument, a tuple its "
            "positional arguments, a dict its keyword arguments)"
        )
        if isinstance(error, NotImplementedError) and self.forward_gradient:
            return PlacementError(
                f"{self.name} carries forward-mode tangents from the feedback points to the "
                f"output of {type(model).__name__}, and an op on that path has no forward-mode "
                f"derivative ({first}). Give a custom autograd.Function a jvp (and a "
                "setup_context), replace the op, or train with DKP or DFA, which need no "
                "tangents"
            )
        try:
            wrapped = type(error)(f"{error} {note}")
        except Exception:
            wrapped = None
        if type(wrapped) is not type(error):  # a type that is not built from one message
            error.add_note(note)
            return error
        return wrapped

    def feedback_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The trainable feedback (:class:`DKP`'s and :class:`FDFA`'s matrix), for an optimiser
        of its own:
        ``torch.optim.Adam(rule.feedback_parameters(model), lr=1e-4)``; empty for a rule whose
        feedback is fixed."""
        matrix = self._binding(model).owner._parameters.get(FEEDBACK_BUFFER)
        return [] if matrix is None else [matrix]

    def remove(self, model: nn.Module) -> nn.Module:
        binding = self._detach(model)
        binding.close(model)
        return model

    # --- inspection ----------------------------------------------------------------------------

    def points(self, model: nn.Module) -> list[str]:
        """Module paths of the feedback points of ``model``, where the projected signal enters
        (known from ``apply`` on, before any forward pass)."""
        return [name for name, _ in self._binding(model).placement.points]

    def point_names(self, model: nn.Module) -> list[str]:
        """Former name of :meth:`points` (deprecated, one release)."""
        warnings.warn(
            "rule.point_names(model) is deprecated: call rule.points(model), the name both rule "
            "families use",
            FutureWarning,
            stacklevel=2,
        )
        return self.points(model)

    def signal_widths(self, model: nn.Module) -> dict[str, int]:
        """Feedback point -> its width per sample, once the first training forward pass has fixed
        the layout (empty before; Shallow has none)."""
        layout = self._binding(model).layout
        if layout is None:
            return {}
        return dict(zip(layout.names, layout.widths, strict=True))

    def layout(self, model: nn.Module) -> FeedbackLayout:
        """The feedback layout (points, widths, ``d_out``, scales) fixed by the first training
        forward pass.

        Raises:
            RuntimeError: before that pass: the widths of the points and of the output are known
                only once the model has run.
        """
        binding = self._binding(model)
        if not binding.feeds:
            raise RuntimeError(
                f"{self.name} sends no feedback, so it has no feedback layout: its points only "
                "cut the graph (the layers below them do not learn); points(model) lists them"
            )
        layout = binding.layout
        if layout is None:
            raise RuntimeError(
                f"{self.name}'s feedback layout of {type(model).__name__} is not known yet: the "
                "widths of the feedback points and of the output are read at the first training "
                "forward pass. Run one forward pass with gradients enabled (model(x), in train "
                "or eval mode) before calling layout(); points(model) lists the points now"
            )
        return layout

    def parameter_roles(self, model: nn.Module) -> dict[str, str]:
        """How each parameter learns, as the cut verification found it in the graph of the first
        training forward pass: ``"hidden"`` (from feedback only), ``"top"`` (the true gradient
        only: the block above the last point, and branches with no point on the way) or
        ``"tied"`` (both: a parameter shared by the top and a block below a point, or a module
        named in ``true_gradient=``). Empty before the first training forward pass."""
        return dict(self._binding(model).verifier.roles)

    def feedback_matrices(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The effective ``B_l`` (shape ``(d_out, n_l)``) of every point, after scaling."""
        layout = self._binding(model).layout
        buffer = _feedback_tensor(model)
        if layout is None or buffer is None:
            return {}  # before the first training forward pass
        buffer = buffer.detach()
        return {name: layout.matrix(buffer, i) for i, name in enumerate(layout.names)}

    # --- signal ----------------------------------------------------------------------------------

    def signal(self, error: torch.Tensor) -> torch.Tensor:
        """The signal ``s`` that ``B`` carries to every point (``delta_l = (B_l s) * f'(a_l)``),
        made from the flattened error ``e`` of shape (n, d_out): ``e`` for DFA, ``sign(e) / n``
        for sign-DFA, ``-y* / n`` for DRTP. A new direct rule overrides this."""
        return error

    def project_signal(self, error: torch.Tensor) -> torch.Tensor:
        """Former name of :meth:`signal` (deprecated, one release)."""
        warnings.warn(
            "rule.project_signal(error) is deprecated: call rule.signal(error)",
            FutureWarning,
            stacklevel=2,
        )
        return self.signal(error)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass written for the former names keeps working for one release: a
        ``project_signal`` override serves as its :meth:`signal`, and ``signal = None`` (a rule
        that feeds nothing back) means ``feeds_back = False``."""
        super().__init_subclass__(**kwargs)
        if "signal" in cls.__dict__ and cls.__dict__["signal"] is None:
            warnings.warn(
                f"{cls.__name__} sets signal = None, now feeds_back = False (deprecated, one "
                "release)",
                FutureWarning,
                stacklevel=2,
            )
            delattr(cls, "signal")
            cls.feeds_back = False
        if "project_signal" in cls.__dict__ and "signal" not in cls.__dict__:
            warnings.warn(
                f"{cls.__name__} overrides project_signal, now named signal (deprecated, one "
                "release): rename the method",
                FutureWarning,
                stacklevel=2,
            )
            cls.signal = cls.__dict__["project_signal"]  # type: ignore[method-assign]

    def initial_feedback(
        self,
        shape: tuple[int, int],
        layout: FeedbackLayout | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """The feedback matrix as first made (and as regenerated for a plain checkpoint): drawn
        from the seed; a learned one carries each point's scale in its values (``layout``'s
        scales folded into its columns), since it learns from there. ``layout`` is the
        placement's layout *with the rule's scales* (for a learned rule not
        ``rule.layout(model)``, whose scales are 1: they are in ``B``)."""
        matrix = draw(
            self.distribution,
            shape,
            direct_stream_seed(self.seed),
            dtype=dtype,
            device=device,
        )
        if self.learns_feedback and layout is not None:
            for start, width, scale in zip(
                layout.offsets, layout.widths, layout.scales, strict=True
            ):
                matrix[:, start : start + width] *= scale
        return matrix

    # --- extension points: what a learned feedback matrix adds to a step -------------------------
    #
    # The binding (_Binding, below) calls these at fixed moments of a step. The defaults are those
    # of a fixed matrix (a buffer): nothing happens. The rules whose matrix learns, DKP and FDFA,
    # override them in rules/learned.py; the binding itself only stores their matrix as a
    # parameter (``learns_feedback``) and hands it to the injection node as an input, so that
    # autograd (and DDP) deliver its gradient.

    def forward_tangents(self, model_name: str) -> Any:
        """Called by the binding when a training forward pass with gradients begins (the model in
        training mode, or :meth:`materialize`'s pass; the rule in force, not ``fa.backprop``).
        Returns ``None`` (the default), or an object that carries
        forward-mode tangents through this pass (FDFA's
        :class:`~feedback_alignment.rules.learned.ForwardTangents`): each feedback point then
        hands its cut output to the object's ``perturb(point, uncut, cut)``, and the end of the
        pass calls its ``close()`` (also when the pass raises)."""
        return None

    def saved_for_feedback(
        self, records: Sequence[Record], y: torch.Tensor, tangents: Any
    ) -> tuple[list[torch.Tensor | None] | None, torch.Tensor | None]:
        """Called by the binding when the error is injected at the output ``y`` of a training
        forward pass: what the backward needs, beyond the error, to compute the gradient of a
        learned matrix, as ``(values, derivative)``: a tensor (or ``None``) per recorded point
        and the output's tangent (``tangents``: what :meth:`forward_tangents` returned). The
        default, for a fixed matrix: nothing, ``(None, None)``."""
        return None, None

    def matrix_gradient(
        self,
        matrix: torch.Tensor,
        error: torch.Tensor,
        forward: _Forward,
        layout: FeedbackLayout,
    ) -> torch.Tensor | None:
        """Called by the binding in the backward pass, after the projection, when the learned
        matrix (``matrix``, ``(d_out, total)``) needs a gradient; ``error`` holds the error rows
        ``(n, d_out)`` and ``forward`` what :meth:`saved_for_feedback` saved; ``None``: no
        gradient from this pass (FDFA's eval-mode passes). A fixed matrix has none."""
        raise NotImplementedError(f"{self.name}'s feedback is fixed: it has no gradient")

    def step_watch(self) -> Any:
        """Called once by the binding when the rule is applied to a model: ``None`` (the
        default), or a per-model object whose ``check(rule, model, roles, matrix)`` the binding
        calls after each backward pass that computed the matrix's gradient, and whose
        ``reset()`` it calls when a checkpoint is loaded (DKP's and FDFA's
        :class:`~feedback_alignment.rules.learned.StepWatch`: a warning when no optimiser steps
        the learned matrix)."""
        return None


class LossScaled:
    """Mixin of the direct rules part of whose update is not made from the loss: DRTP's hidden
    signal (from the targets) and FDFA's gradient of ``B`` (from forward-mode tangents). A
    scaled loss (``torch.amp.GradScaler``: ``scaler.scale(loss).backward()``) scales every
    gradient made from it by ``S``, and ``scaler.unscale_``/``scaler.step`` divides every
    gradient by ``S``; these parts must be multiplied by ``S`` too, or they shrink ``S`` times
    (65536 by default) and stop learning. :attr:`loss_scale` tells the rule ``S``."""

    _loss_scale: Any = 1.0  # a number, or an object with get_scale() (a GradScaler)
    _loss_scale_set = False  # whether the user set loss_scale (then no LossScaleWarning)
    #: what is not made from the loss (for the LossScaleWarning)
    unscaled_part = "part of its update"

    @property
    def loss_scale(self) -> float:
        """The factor on the loss, ``S`` (default 1.0), multiplied into the part of the update
        that is not made from the loss, so that it carries the same scale as the rest.

        Set it to a ``torch.amp.GradScaler`` once (``rule.loss_scale = scaler``): the rule then
        reads ``scaler.get_scale()`` whenever it makes that part (at the backward pass; for
        ``DRTP(forward_time=True)`` at the forward pass), so it follows the scaler's growth and
        backoff, and a disabled scaler reads 1. Or set a number, the factor your own code
        multiplies the loss by (``(loss * S).backward()``), before each backward pass. Reading it
        gives the current factor as a float (a scaler's ``get_scale()``, one host sync on a
        GPU)."""
        scale = self._loss_scale
        return float(scale.get_scale()) if hasattr(scale, "get_scale") else float(scale)

    @loss_scale.setter
    def loss_scale(self, value: Any) -> None:
        if not hasattr(value, "get_scale"):
            if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
                raise TypeError(
                    f"{type(self).__name__}.loss_scale must be a number or a "
                    f"torch.amp.GradScaler, got {type(value).__name__}"
                )
            value = float(value)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(
                    f"{type(self).__name__}.loss_scale must be finite and positive, got {value}"
                )
        self._loss_scale = value
        self._loss_scale_set = True

    def _check_autocast(self) -> None:
        """At a training forward pass: a :class:`LossScaleWarning`, once per process, when it
        runs under autocast (any device) while :attr:`loss_scale` was never set."""
        global _loss_scale_warned
        if _loss_scale_warned or self._loss_scale_set or not _autocast_enabled():
            return
        _loss_scale_warned = True
        warnings.warn(
            f"{self.name} ran a training forward pass under autocast with rule.loss_scale never "  # type: ignore[attr-defined]
            f"set: {self.unscaled_part} is not made from the loss, so if you scale the loss with "
            "torch.amp.GradScaler, set rule.loss_scale = scaler once, or scaler.unscale_ and "
            "scaler.step divide it by the scale (65536 by default) and it stops learning. "
            "Without a scaler, set rule.loss_scale = 1.0. Given once per process "
            "(fa.LossScaleWarning)",
            LossScaleWarning,
            stacklevel=_caller_stacklevel(),
        )


_loss_scale_warned = False
"""Whether this process has given the :class:`LossScaleWarning` (it is given once)."""


def _caller_stacklevel() -> int:
    """The ``stacklevel`` of the first frame outside torch and this library: the user's call of
    the model (a warning from a hook is otherwise attributed to torch's internals)."""
    frame, level = sys._getframe(1), 1
    inside = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))
    while frame is not None and frame.f_code.co_filename.startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def _autocast_enabled() -> bool:
    """Whether autocast is on for any device type."""
    check = getattr(torch._C, "_is_any_autocast_enabled", None)
    if check is not None:
        return bool(check())
    return any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda"))


class DFA(DirectFeedback):
    """Direct Feedback Alignment: ``delta_l = (B_l e) * f'(a_l)`` (Nøkland 2016)."""

    name = "DFA"
    key = "dfa"


class SignDFA(DirectFeedback):
    """DFA with the sign of the error: ``delta_l = (B_l sign(e) / n) * f'(a_l)``."""

    name = "sign-DFA"
    key = "sign-dfa"

    def signal(self, error: torch.Tensor) -> torch.Tensor:
        return torch.sign(error) / error.shape[0]


class DRTP(LossScaled, DirectFeedback):
    """Direct Random Target Projection: ``delta_l = (B_l (-y*) / n) * f'(a_l)`` (Frenkel 2021).

    The hidden layers never see the error, only the targets of the batch, which must be given before
    each backward pass: ``rule.set_targets(y); loss.backward()``. Class indices are one-hot encoded
    with ``d_out`` classes; float targets of shape ``(*lead, d_out)`` are used as they are.

    **Scaling**: the signal is made from the targets, not from the loss, so it sees no factor on
    the loss. With a loss scaler (mixed precision), tell the rule the scale once,
    ``rule.loss_scale = scaler`` (a ``torch.amp.GradScaler``; see :attr:`loss_scale`), or
    ``scaler.step`` divides the hidden layers' update by it (a :class:`LossScaleWarning` is
    given when a training pass runs under autocast without it). With gradient accumulation over
    ``k`` micro-batches of ``(loss / k).backward()``, pass ``set_targets(y, weight=1/k)``. The
    signal is ``-y* / n * weight * loss_scale``.

    ``forward_time=True``: since the signal needs no output, each block below a point computes
    its weight gradient **during the forward pass**, at its point, and its graph (the activations
    it saved) is freed at once; only the top block keeps its graph for ``loss.backward()``. Peak
    activation memory then stays flat in depth. Give the targets before the forward pass
    (``rule.set_targets(y); loss_fn(model(x), y).backward()``); gradients accumulate into
    ``.grad`` as usual and ``opt.step()`` stays yours. The gradients are backward-time DRTP's.
    The first step of each new placement runs backward-time, so that the cut is proved (the
    graph a forward-time step frees cannot be walked). Points at a module's input, and
    ``verify="always"``, are refused with it.
    """

    name = "DRTP"
    key = "drtp"
    signal_before_output = True
    unscaled_part = "its hidden layers' signal (made from the targets)"

    def __init__(
        self,
        distribution: str = "gaussian",
        scale: str | float = "principled",
        shared: bool = True,
        seed: int = 0,
        check_finite: bool = True,
        *,
        feedback: str | None = None,
        forward_time: bool = False,
    ) -> None:
        super().__init__(
            distribution,
            scale,
            shared,
            seed,
            check_finite,
            feedback=feedback,
            forward_time=forward_time,
        )
        self._targets: torch.Tensor | None = None
        self._weight = 1.0

    def set_targets(self, targets: torch.Tensor, weight: float = 1.0) -> None:
        """Targets for the next backward pass (consumed by it; for ``forward_time=True``: for
        the next forward pass).

        Args:
            targets: class indices (any shape with one entry per output row, ``(n,)`` or
                ``(n, 1)``), or float targets of the output's shape (one-hot or soft labels).
            weight: a factor on the hidden layers' signal. The signal ``-y*/n`` is made from the
                targets, not from the loss, so it does not see a scale on the loss: with
                gradient accumulation over ``k`` micro-batches of ``(loss / k).backward()``,
                pass ``weight=1/k`` so that the hidden layers' gradient is the batch's mean, as
                the top layer's is. A loss scaler's factor is :attr:`loss_scale`'s (set once),
                not this one's: the two multiply.
        """
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"DRTP targets must be a tensor, got {type(targets).__name__}")
        weight = float(weight)
        if not math.isfinite(weight):
            raise ValueError(f"DRTP set_targets: weight must be finite, got {weight}")
        self._targets, self._weight = targets.detach(), weight

    def signal(self, error: torch.Tensor) -> torch.Tensor:
        targets, self._targets = self._targets, None
        if targets is None:
            raise RuntimeError(
                "DRTP needs the targets of this batch: call rule.set_targets(y) before "
                "loss.backward()"
            )
        return self._target_signal(targets, error)

    def target_signal(self, samples: int, classes: int, like: torch.Tensor) -> torch.Tensor:
        """``-y*/n`` for a forward-time update (targets read, not consumed: every point of the
        pass reads them; the pass's end forgets them)."""
        if self._targets is None:
            raise RuntimeError(
                "DRTP(forward_time=True) updates each block during the forward pass, so it needs "
                "the targets of this batch before it: call rule.set_targets(y) before model(x)"
            )
        return self._target_signal(self._targets, like.new_empty((samples, classes)))

    def _target_signal(self, targets: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
        samples, classes = error.shape
        if targets.is_floating_point():
            if targets.numel() != samples * classes:
                raise ValueError(
                    f"DRTP float targets have shape {tuple(targets.shape)}, expected {samples} "
                    f"rows of {classes} (the output's shape)"
                )
            encoded = targets.reshape(samples, classes)
        else:
            if targets.numel() != samples:
                raise ValueError(
                    f"DRTP got {targets.numel()} class targets for {samples} output rows"
                )
            indices = targets.reshape(-1).long().to(error.device)
            if indices.device.type != "meta" and samples:
                low, high = (int(v) for v in torch.aminmax(indices))  # one sync, as check_finite
                if low < 0 or high >= classes:
                    bad = low if low < 0 else high
                    raise ValueError(
                        f"DRTP got class target {bad}, outside [0, {classes - 1}] (the output has "
                        f"{classes} classes): pass class indices in that range to "
                        "rule.set_targets(y), or float targets of the output's shape (one-hot "
                        "or soft labels)"
                    )
            encoded = F.one_hot(indices, classes)
        factor = -self._weight * self.loss_scale / samples
        return encoded.to(dtype=error.dtype, device=error.device) * factor


class Shallow(DirectFeedback):
    """Control: the graph is cut at the points and nothing is fed back; only the top learns."""

    name = "Shallow"
    key = "shallow"
    feeds_back = False


def _through_sigmoid(error: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return error * y * (1 - y)


def _through_tanh(error: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return error * (1 - y * y)


def _through_softmax(error: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return y * (error - (error * y).sum(dim=-1, keepdim=True))


def _through_log_softmax(error: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return error - torch.exp(y) * error.sum(dim=-1, keepdim=True)


OUTPUT_ACTIVATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sigmoid": _through_sigmoid,
    "tanh": _through_tanh,
    "softmax": _through_softmax,
    "log_softmax": _through_log_softmax,
}
"""``dL/dz`` from ``e = dL/dy`` and ``y = f(z)``, for the output nonlinearities ``f`` supported."""


class _Forward(NamedTuple):
    """What one forward pass hands to its backward: the points' shapes and sample axes, the output's
    sample axes, and ``y`` when an output activation needs it."""

    shapes: list[torch.Size]
    axes: list[tuple[int, ...] | None]  # None: the leading axes, in order (no permutation)
    output_axes: tuple[int, ...] | None
    output: torch.Tensor | None
    values: list[torch.Tensor | None] | None = None  # DKP: the points' tensors; FDFA: u_l
    derivative: torch.Tensor | None = None  # FDFA: the output's tangent, sum_l J_l u_l


Record = tuple[str, torch.Tensor, "tuple[int, ...] | None"]


@dataclass
class _Pass:
    """What one forward pass of the model records: replaced as a whole by
    ``_Binding._clear_pass`` (never reset field by field)."""

    depth: int = 0  # > 0 while the model's own forward runs (it may call itself)
    grad_at_start: bool = False  # grad mode when the model's forward pass began
    fired: bool = False  # a point ran with grad enabled in this forward pass
    records: list[Record] = field(default_factory=list)  # (point, uncut tensor, axes)
    calls: dict[str, int] = field(default_factory=dict)  # calls of each point module
    # (container, id(input)) -> (block, input): the input is held so that its id is not reused
    block_inputs: dict[tuple[str, int], tuple[str, torch.Tensor]] = field(default_factory=dict)
    last_cut: tuple[torch.Tensor, torch.Tensor] | None = None  # (cut, uncut)
    head_output: torch.Tensor | None = None  # the injected head output
    injected: tuple | None = None  # (signature, key, records) of this forward pass
    pending: tuple | None = None  # (signature, key, records) awaiting verification
    tangents: Any = None  # FDFA: rule.forward_tangents(...) of this pass (forward-mode AD)
    forward_time: bool = False  # DRTP(forward_time=True): the points update as the pass runs


class _Verifier:
    """The cut verification of one binding: proves each new placement once, over the graph of
    the first training forward pass that shows it (:func:`feedback_alignment.cut.verify_cut`),
    and keeps what it proved. A pass whose shapes were proved, or whose placement (point names,
    widths, ``d_out``) was, needs no proof again (unless ``verify="always"``)."""

    def __init__(self) -> None:
        self.signature: tuple | None = None  # shapes of the last verified forward pass
        self.verified: set[tuple] = set()  # placements (names, widths, d_out) proven to be cut
        self.losses_seen: set[int] = set()  # how many scalars verified outputs returned
        self.roles: dict[str, str] = {}  # parameter -> "top" / "hidden" / "tied" (last proof)

    def accepts(self, signature: tuple, key: tuple | None) -> bool:
        """Whether a pass of these shapes (``signature``) and placement (``key``; ``None``: not
        computed, the shapes are the last proved ones) needs no proof."""
        if signature == self.signature:
            return True
        if key is not None and key in self.verified:
            self.signature = signature
            return True
        return False

    def forget(self) -> None:
        """After a load: the next pass is checked against the loaded matrix again."""
        self.signature = None

    def prove(
        self,
        model: nn.Module,
        placement: Placement,
        output: Any,
        pending: tuple,
        is_own_node: Callable[[Any], bool],
        feeds: bool,
        head_output: torch.Tensor | None,
    ) -> None:
        """Proves the cut of the pending placement (see :mod:`feedback_alignment.cut`) or
        refuses it with a :class:`PlacementError` naming the modules and the remedy."""
        signature, key, records = pending
        roots = _loss_roots(output, placement.output)
        report = verify_cut(
            model,
            roots,
            [(name, h) for name, h, _ in records],
            is_own_node,
            placement.true_gradient,
        )
        must_inject = [
            label
            for (label, tensor), injected in zip(roots, report.injected, strict=True)
            if not injected and (label == roots[0][0] or tensor.dim() == 0)
        ]
        if feeds and must_inject:
            site = f"'{placement.error_at}'" if placement.error_at else "the model's output"
            raise PlacementError(
                f"{must_inject[0]} of {type(model).__name__} does not depend on {site}, where the "
                "error is injected (a loss computed inside forward before the output is "
                "returned, or from another part of the model): DFA would silently train nothing "
                "below the points through it. Inject where the output is produced "
                "(rule.apply(model, output=..., error_at='head.module.path')), or do not return "
                "that loss while training"
            )
        if (
            placement.auto_head
            and head_output is not None
            and roots
            and roots[0][1] is not head_output
        ):
            raise PlacementError(
                f"the output {placement.output!r} is not the output of {placement.error_at!r}, "
                "the module chosen as the head (the last layer with parameters): name the "
                "module that produces it with rule.apply(model, output=..., error_at='...')"
            )
        if report.leaks and report.compiled:
            raise PlacementError(
                "the graph of this forward pass was compiled into one autograd node (torch.compile "
                "with an AOT backend) that spans the feedback points, so the cut cannot be proved: "
                "use torch.compile(model, backend='eager'), or compile the blocks between points "
                "separately"
            )
        if report.leaks:
            tried = [name for name, _, _ in records]
            raise PlacementError(_leak_message(model, report.leaks, tried))
        self.roles = report.roles
        if key is not None:
            self.verified.add(key)
        self.signature = signature
        self.losses_seen.add(_count_scalars(output))


class _Binding:
    """The state of one rule applied to one model: hooks, the layout and the forward's records.

    Stored on the model (see :class:`~feedback_alignment.rules.base.BoundRule`); it holds the model
    by a strong reference, so ``copy.deepcopy(model)`` maps it to the copy.
    """

    def __init__(self, rule: DirectFeedback, model: nn.Module, placement: Placement) -> None:
        self.rule = rule
        self.owner = model
        self.placement = placement  # where it cuts and takes the error: fixed by apply
        self.now = _Pass()  # what this forward pass has recorded (replaced by _clear_pass)
        self.mode = "rule"  # or "backprop": record points, cut nothing
        self.layout: FeedbackLayout | None = None
        self.recorders: list[list[tuple[str, torch.Tensor]]] = []
        self.learned = rule.learns_feedback  # B is a parameter (DKP, FDFA), else a buffer
        if self.learned:
            model.register_parameter(FEEDBACK_BUFFER, None)
        else:
            model.register_buffer(FEEDBACK_BUFFER, None)
        self.materializing = False  # inside rule.materialize: a learned B may be made
        self.initial_layout: FeedbackLayout | None = None  # the scaled layout B was drawn for
        self.watch = rule.step_watch()  # a learned B: warns when no optimiser steps it
        self.feeds = rule.feeds_back
        self.verifier = _Verifier()  # what the cut verification proved
        self.projector: Projector | None = None  # P = s(e) @ B, a slice per point (the layout's)
        self.handles = [
            model._register_load_state_dict_pre_hook(self._before_load, with_module=True),
            model.register_forward_pre_hook(_EagerHook(self._begin_forward)),
        ]
        modules = placement.modules()
        for base, module in modules.items():
            if base.endswith(INPUT_SUFFIX):
                hook = _EagerHook(partial(self._at_point_input, base))
                self.handles.append(module.register_forward_pre_hook(hook))
            else:
                hook = _EagerHook(partial(self._at_point, base))
                self.handles.append(module.register_forward_hook(hook))
        if placement.error_site is not None:
            hook = _EagerHook(self._at_error_site)
            self.handles.append(placement.error_site.register_forward_hook(hook))
        # always_call: the records are cleared even when the forward pass raises
        end = _EagerHook(self._end_forward)
        self.handles.append(model.register_forward_hook(end, always_call=True))

    def close(self, model: nn.Module) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        model._buffers.pop(FEEDBACK_BUFFER, None)
        model._parameters.pop(FEEDBACK_BUFFER, None)
        self._clear_pass()
        self.projector = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()  # pickling: no per-pass state, no cached device copy
        state.update(now=_Pass(), recorders=[])
        return state

    def __setstate__(self, state: dict) -> None:
        """Unpickling: a binding pickled by an earlier version lacks the attributes added since
        (``watch``, with the learned rules' extension points); they get the value apply gives."""
        self.__dict__.update(state)
        if "watch" not in state:  # before 956c8f2 the binding kept the step watch's state itself
            self.watch = self.rule.step_watch()
            if self.watch is not None and state.get("_warned_unstepped"):
                self.watch.warned = True
            for former in ("_warned_unstepped", "_stepped", "_probe"):
                self.__dict__.pop(former, None)
        if "materializing" not in state:
            self.materializing = False

    @property
    def calls(self) -> dict[str, int]:
        """Calls of each point module in this forward pass (the bindings' protocol, see
        :class:`~feedback_alignment.rules.base.BoundRule`)."""
        return self.now.calls

    def _clear_pass(self) -> None:
        """Forgets what the last forward pass recorded: the one place the per-pass record is
        reset (at the start of a pass, at its end, when the rule is removed, when pickled)."""
        self.now = _Pass()

    # --- forward hooks ---------------------------------------------------------------------------

    # These hooks run at every training step: they are kept free of avoidable work.

    def _begin_forward(self, module: nn.Module, args: Any) -> None:
        if self.now.depth == 0:  # the model's own call, not a call of itself from within
            self._clear_pass()
            self.now.grad_at_start = grad = torch.is_grad_enabled()
            if grad and self.mode == "rule":
                refuse_reverse_transform(type(module).__name__, self.rule.name)
                if module.training and isinstance(self.rule, LossScaled):
                    self.rule._check_autocast()
                if module.training or self.materializing:
                    # FDFA: tangents in training passes only (an eval-mode pass draws no
                    # direction, and B gets no gradient from it); materialize's pass checks
                    # that tangents reach the output
                    self.now.tangents = self.rule.forward_tangents(type(module).__name__)
                self.now.forward_time = (
                    self.rule.forward_time
                    and module.training  # an eval-mode pass (validation) updates nothing
                    and not self.recorders  # fa.alignment reads the rule's gradients itself
                    and self.layout is not None
                    and bool(self.verifier.verified)
                )
        self.now.depth += 1

    def _point_name(self, name: str) -> str | None:
        """The point's name for this call (``None``: a call that is not a selected point)."""
        calls = self.now.calls
        count = calls.get(name, 0)
        calls[name] = count + 1
        selected = self.placement.selected_calls[name]
        if selected is not None and count not in selected:
            return None
        return f"{name}#{count}" if count else name

    def _outside_forward(self, name: str) -> PlacementError:
        if _inside_checkpoint() and torch._C._current_graph_task_id() != -1:
            return PlacementError(
                f"feedback point {name!r} of {type(self.owner).__name__} was run again inside "
                "backward by a gradient checkpoint's recomputation that goes on past it (a "
                "checkpoint around several blocks, or around a block and what follows it, with "
                "use_reentrant=False, or with early stop turned off): the recomputed forward "
                "pass would not be cut. Checkpoint each block on its own, so that the block's "
                "output is the checkpoint's output (for block in blocks: x = checkpoint(block, "
                "x, use_reentrant=False)), and keep torch.utils.checkpoint's early stop on (the "
                "default); or name the checkpointed segments as the feedback points "
                "(rule.apply(model, points=[...]))"
            )
        return PlacementError(
            f"feedback point {name!r} ran with grad enabled outside a forward pass of the "
            f"{type(self.owner).__name__} the rule was applied to: nothing would cut the graph "
            "there and it would train by backprop. Call the model itself (model(x), not "
            "model.forward(x) or one of its submodules; apply the rule to the module you call); "
            "run probes under torch.no_grad(); reentrant gradient checkpointing recomputes the "
            "forward pass inside backward: use torch.utils.checkpoint(..., use_reentrant=False) "
            "(Hugging Face: gradient_checkpointing_enable(gradient_checkpointing_kwargs="
            "{'use_reentrant': False}))"
        )

    def _refuse_reentrant_checkpoint(self, name: str, module: nn.Module) -> None:
        """A point that runs without grad inside a grad-enabled training forward pass is inside
        a reentrant checkpoint when ``torch.utils.checkpoint`` is on the stack (the frame walk
        runs only on this rare path): refused, since its parameters would get no gradient."""
        if (
            self.now.depth
            and self.now.grad_at_start
            and self.mode == "rule"
            and _trainable(module)
            and _inside_checkpoint()
        ):
            raise self._reentrant_checkpoint(name)

    def _reentrant_checkpoint(self, name: str) -> PlacementError:
        return PlacementError(
            f"feedback point {name!r} of {type(self.owner).__name__} ran inside a reentrant "
            "gradient checkpoint (torch.utils.checkpoint(..., use_reentrant=True)), which runs "
            "it under no_grad and recomputes it inside backward only if its input requires grad; "
            "the input of a block below a point is cut, so under a direct rule its parameters "
            "would get no gradient at all. Use use_reentrant=False (Hugging Face: "
            "model.gradient_checkpointing_enable(gradient_checkpointing_kwargs="
            "{'use_reentrant': False})), one checkpoint per block"
        )

    def _not_learning(self, name: str, module: nn.Module) -> PlacementError:
        return PlacementError(
            f"feedback point {name!r} ({type(module).__name__}) has trainable parameters, but "
            "its output does not require grad in this training forward pass, so nothing in it "
            "would learn under a direct rule (backprop would train it). The usual cause is "
            "reentrant gradient checkpointing inside it (torch.utils.checkpoint(..., "
            "use_reentrant=True) computes nothing for autograd when its input is cut by the "
            "point below): use use_reentrant=False (Hugging Face: "
            "model.gradient_checkpointing_enable(gradient_checkpointing_kwargs="
            "{'use_reentrant': False})). If the module runs under torch.no_grad() or detaches "
            "on purpose, freeze its parameters (module.requires_grad_(False))"
        )

    def _at_point(self, name: str, module: nn.Module, args: Any, output: Any) -> Any:
        if not torch.is_grad_enabled():
            self._refuse_reentrant_checkpoint(name, module)
            return None
        if not self.now.depth:
            if self.mode == "rule" and _any_requires_grad(output):
                if _recomputing():
                    return _cut(output)  # as in the forward pass that this recomputes
                raise self._outside_forward(name)
            return None
        self.now.fired = True
        if isinstance(output, nn.utils.rnn.PackedSequence) or (
            isinstance(output, tuple)
            and output
            and isinstance(output[0], nn.utils.rnn.PackedSequence)
        ):
            raise PlacementError(
                f"feedback point {name!r} returns a PackedSequence: its rows are time steps of "
                "sorted sequences, not samples, so the error cannot be projected per sample. "
                "Place the point on a module that receives the padded output "
                "(nn.utils.rnn.pad_packed_sequence), or on the layer after it"
            )
        tensor = _first_tensor(output, name)
        container = self.placement.block_of.get(name)
        if container is not None and args and isinstance(args[0], torch.Tensor):
            sibling, _ = self.now.block_inputs.setdefault((container, id(args[0])), (name, args[0]))
            if sibling != name:
                raise PlacementError(
                    f"automatic placement took the children of {container!r} for a chain of "
                    f"blocks, but {sibling!r} and {name!r} run side by side on the same input "
                    "(parallel heads or branches, not a residual stack): feedback at their "
                    "outputs would cut them off the error. Name the points with "
                    "rule.apply(model, points=[...]) leaving them out"
                )
        if not _any_requires_grad(output):
            # nothing below this point learns: no signal and no cut. It keeps its place in the
            # layout, so that freezing or unfreezing layers between steps changes no feedback.
            if self.mode == "rule" and _trainable(module):
                raise self._not_learning(name, module)
            point = self._point_name(name)
            if point is not None and self.mode == "rule" and tensor.is_floating_point():
                self.now.records.append((point, tensor, self.placement.point_axes.get(name)))
            return None
        point = self._point_name(name)
        if point is None:
            return None
        if tensor.requires_grad:
            for record in self.recorders:
                record.append((point, tensor))
        if self.mode == "backprop":
            return None
        axes = self.placement.point_axes.get(name)
        cut = _cut(output)
        if self.now.forward_time and tensor.requires_grad:
            self._update_now(point, tensor, axes)
            # only the shape is kept: the tensor's storage goes with the block it ends
            self.now.records.append((point, torch.empty_like(tensor, device="meta"), axes))
        elif tensor.requires_grad:
            self.now.records.append((point, tensor, axes))
        if self.now.tangents is not None:
            perturbed = self.now.tangents.perturb(point, tensor, _first_tensor(cut, name))
            cut = _replace_first(cut, perturbed)
        if isinstance(cut, torch.Tensor):
            self.now.last_cut = (cut, tensor)
        return cut

    def _update_now(self, point: str, tensor: torch.Tensor, axes: tuple[int, ...] | None) -> None:
        """DRTP(forward_time=True): the block below this point learns now from ``B_l (-y*/n)``
        by local backprop, which frees its graph; the forward pass goes on from the cut."""
        layout, projector = self.layout, self.projector
        index = len(self.now.records)
        matrix = _feedback_tensor(self.owner)
        assert layout is not None and projector is not None and matrix is not None
        if index >= len(layout.names) or layout.names[index] != point:
            raise PlacementError(
                f"forward-time {self.rule.name}: feedback point {point!r} ran as point "
                f"{index}, but the verified layout runs {list(layout.names)}: the points must "
                "run in the same order every step"
            )
        width = layout.widths[index]
        if tensor.numel() % width:
            raise PlacementError(
                f"forward-time {self.rule.name}: feedback point {point!r} produced shape "
                f"{tuple(tensor.shape)}, not a whole number of samples of width {width}"
            )
        samples = tensor.numel() // width
        like = tensor.to(torch.promote_types(tensor.dtype, torch.float32))
        signal = self.rule.target_signal(samples, layout.out_features, like)
        folded = projector.matrix(matrix, signal.dtype, signal.device)
        start, width = projector.slices[index]
        row = signal @ folded[:, start : start + width]
        if projector.residual[index] != 1.0:
            row = row * projector.residual[index]
        delta = _to_point_layout(row.to(tensor.dtype), tensor.shape, axes, samples)
        torch.autograd.backward(tensor, delta)

    def _at_point_input(self, name: str, module: nn.Module, args: tuple) -> Any:
        """A point at a module's first input: every consumer of that tensor reads the cut one.

        The tensor is detached **in place** (``Tensor.detach_``), so the inline residual that
        captured it before this module ran (``residual = hidden_states``) reads the cut tensor too;
        a view of it taken first keeps the graph below for the signal. A tensor that is itself a
        view cannot be detached in place: then only this module reads a cut copy, and the cut
        verification refuses the placement if another consumer leaks.
        """
        if not torch.is_grad_enabled():
            self._refuse_reentrant_checkpoint(name, module)
            return None
        if not self.now.depth:
            if self.mode == "rule" and args and getattr(args[0], "requires_grad", False):
                if _recomputing():  # as in the forward pass that this recomputes
                    if args[0].grad_fn is not None and not args[0]._is_view():
                        args[0].detach_()
                        return None
                    return (args[0].detach(), *args[1:])
                raise self._outside_forward(name)
            return None
        self.now.fired = True
        if not args or not isinstance(args[0], torch.Tensor):
            raise PlacementError(
                f"feedback point {name!r}: the module's first input is not a tensor; place the "
                "point at a module's output instead"
            )
        tensor = args[0]
        if self.now.tangents is not None or self.now.forward_time:
            raise PlacementError(
                f"feedback point {name!r} is at a module's input, which "
                f"{self.rule.name}{'(forward_time=True)' if self.rule.forward_time else ''} does "
                "not support; place the point at the output of the module before it"
            )
        if not tensor.requires_grad:
            point = self._point_name(name)  # frozen below: keeps its place in the layout
            if point is not None and self.mode == "rule" and tensor.is_floating_point():
                self.now.records.append((point, tensor, self.placement.point_axes.get(name)))
            return None
        point = self._point_name(name)
        if point is None:
            return None
        if self.mode == "backprop":
            for record in self.recorders:
                record.append((point, tensor))
            return None
        in_place = tensor.grad_fn is not None and not tensor._is_view()
        uncut = tensor.view_as(tensor) if in_place else tensor  # keeps the graph below
        for record in self.recorders:
            record.append((point, uncut))
        self.now.records.append((point, uncut, self.placement.point_axes.get(name)))
        if in_place:
            tensor.detach_()
            return None
        return (tensor.detach(), *args[1:])

    def _at_error_site(self, module: nn.Module, args: Any, output: Any) -> Any:
        if not self.now.depth or not torch.is_grad_enabled() or self.mode != "rule":
            return None
        tensor = _first_tensor(output, self.placement.error_at or "")
        injected = self._inject(tensor)
        self.now.head_output = injected
        return _replace_first(output, injected)

    def _end_forward(self, module: nn.Module, args: Any, output: Any) -> Any:
        self.now.depth = max(self.now.depth - 1, 0)
        if self.now.depth:
            return None  # the model called itself: the outer call ends the forward pass
        try:
            if output is None:  # the forward pass raised (or returned nothing)
                return None
            result = None
            if (
                self.placement.error_at is None
                and self.now.calls
                and self.mode == "rule"
                and torch.is_grad_enabled()
            ):
                y = _select_output(output, self.placement.output, type(module).__name__)
                if (
                    self.placement.automatic
                    and self.now.last_cut is not None
                    and y is self.now.last_cut[0]
                    and self.now.records
                    and self.now.records[-1][1] is self.now.last_cut[1]
                ):
                    # the last automatic block's output is the model's output: that block is
                    # the top block, not a point (decided by the graph, as it runs)
                    y = self.now.last_cut[1]
                    tail = self.now.records.pop()[0]
                    if not self.now.records:
                        raise PlacementError(
                            f"automatic placement found no feedback point below {tail!r}, whose "
                            f"output is {type(module).__name__}'s output; name the hidden points "
                            "with rule.apply(model, points=[...])"
                        )
                    output = _replace_output(output, self.placement.output, y)
                    result = output
                if self.feeds and _live(self.now.records) and not y.requires_grad:
                    raise PlacementError(
                        f"the output of {type(module).__name__} no longer requires grad: a "
                        f"feedback point (of {sorted(self.now.calls)}) cut the graph after the "
                        "top layer, or every parameter above the last point is frozen; name "
                        "the hidden points with rule.apply(model, points=[...]) leaving out "
                        "any point above the top layer, or unfreeze the head"
                    )
                if self.now.records:
                    result = _replace_output(output, self.placement.output, self._inject(y))
            if _live(self.now.records):
                leftover = [name for name, h, _ in self.now.records if h.requires_grad]
                raise PlacementError(
                    f"feedback points {leftover} ran after the error site {self.placement.error_at!r}: they "
                    "would never receive a signal; place points before error_at"
                )
            final = output if result is None else result
            if (
                not self.now.fired
                and self.mode == "rule"
                and torch.is_grad_enabled()
                and _any_requires_grad(final)
            ):
                raise PlacementError(
                    f"no feedback point of {type(module).__name__} ran with grad enabled in this "
                    f"training forward pass (points: {[n for n, _ in self.placement.points]}): the whole "
                    "model would train by backprop. The points ran under torch.no_grad (reentrant "
                    "gradient checkpointing does that: use use_reentrant=False) or did not run "
                    "at all (check points=, or compiled code made before the rule was applied: "
                    "call torch._dynamo.reset() once after rule.apply)"
                )
            if (
                not self.feeds
                and self.now.injected is not None
                and _live(self.now.injected[2])
                and not _any_requires_grad(final)
            ):
                raise PlacementError(
                    f"{self.rule.name} trains only the parameters above the last feedback point "
                    f"(the top block), and none of those that produce the output of "
                    f"{type(module).__name__} requires grad (a frozen head: PEFT/LoRA freezes the "
                    "output layer): loss.backward() would have nothing to train. Unfreeze the "
                    "head (e.g. model.lm_head.requires_grad_(True)), or use a rule that feeds "
                    "the layers below the points (DFA)"
                )
            if self.placement.verify_always and self.now.injected is not None:
                self.now.pending = self.now.injected
            if self.now.pending is None and self.now.injected is not None:
                # a model that returns a loss only when given labels: verify that case too
                losses = _count_scalars(final)
                if losses not in self.verifier.losses_seen:
                    self.now.pending = self.now.injected
            if self.now.pending is not None and self.now.forward_time:
                signature, key, records = self.now.pending
                if key is not None:  # new shapes: the graph below the points is gone
                    raise PlacementError(
                        f"forward-time {self.rule.name} ran a placement that was not verified "
                        f"(points {[n for n, _, _ in records]}): the points or their widths "
                        "changed after the first step, and the graph below them was freed "
                        "during the pass, so the cut cannot be proved. Keep the points fixed, "
                        "or apply the rule again"
                    )
                # a new output structure (a loss now returned): prove the injection, above the
                # points (their graphs are gone, and their placement was proved)
                live = [r for r in records if r[1].device.type != "meta"]
                self.now.pending = (signature, None, live)
            if self.now.pending is not None:
                self.verifier.prove(
                    self.owner,
                    self.placement,
                    final,
                    self.now.pending,
                    self._is_own_node,
                    self.feeds,
                    self.now.head_output,
                )
            return result
        finally:
            if self.now.tangents is not None:
                self.now.tangents.close()
            if self.now.forward_time:
                self.rule._targets = None  # type: ignore[attr-defined]  # consumed by this pass
            self._clear_pass()  # frees the recorded tensors at once

    # --- the projection ----------------------------------------------------------------------------

    def _inject(self, y: torch.Tensor) -> torch.Tensor:
        records, self.now.records = self.now.records, []
        if not records or y.numel() == 0:
            return y  # no point ran, or an empty batch: nothing to feed back
        signature = (
            y.shape,
            [h.shape for _, h, _ in records],
            [name for name, _, _ in records],
        )
        if not self.verifier.accepts(signature, None):
            key = self._validate(y, records)
            if not self.verifier.accepts(signature, key):
                self.now.pending = (signature, key, records)
        self.now.injected = (signature, None, records)
        if not self.feeds:
            return y
        if self.now.forward_time:  # their blocks learned during the pass: nothing to feed back
            records = [r for r in records if r[1].device.type != "meta"]
        values, derivative = self.rule.saved_for_feedback(records, y, self.now.tangents)
        forward = _Forward(
            [h.shape for _, h, _ in records],
            [axes for _, _, axes in records],
            self._sample_axes(y) if self.placement.batch_axes is not None else None,
            y.detach() if self.placement.output_activation is not None else None,
            values,
            derivative,
        )
        hidden = [h for _, h, _ in records]
        if self.learned:  # B is an input: autograd (and DDP) deliver dL/dB to the parameter
            hidden.append(self.owner._parameters[FEEDBACK_BUFFER])
        return DirectFeedbackFn.apply(self, forward, y, *hidden)

    def _sample_axes(self, y: torch.Tensor) -> tuple[int, ...]:
        given = self.placement.batch_axes
        if given is None:
            return tuple(range(y.dim() - 1)) if y.dim() > 1 else (0,)
        bad = [a for a in given if not -y.dim() <= a < y.dim()]
        if bad:
            raise PlacementError(
                f"batch_axes={given} does not fit the output's shape {tuple(y.shape)}"
            )
        return tuple(sorted(a % y.dim() for a in given))

    def _validate(self, y: torch.Tensor, records: list[Record]) -> tuple:
        """Checks a new set of shapes, fixes (or checks) the feedback layout for it, and returns
        the placement key ``(names, widths, d_out)`` that the cut verification is done once for."""
        if not y.is_floating_point():
            raise TypeError(f"the output where the error is taken has dtype {y.dtype}, not float")
        if y.dim() == 0:
            raise PlacementError("the output where the error is taken is a scalar; DFA needs y")
        sample_axes = self._sample_axes(y)
        lead = tuple(y.shape[a] for a in sample_axes)
        samples = math.prod(lead)
        out_features = y.numel() // samples if y.dim() > 1 else 1
        widths = []
        for name, h, axes in records:
            at = axes if axes is not None else tuple(range(len(lead)))
            if any(-h.dim() <= a < 0 for a in at):
                at = tuple(a % h.dim() for a in at)
            if len(at) != len(lead) or any(not 0 <= a < h.dim() for a in at):
                raise PlacementError(
                    f"feedback point {name!r} produced shape {tuple(h.shape)} but its batch axes "
                    f"{at} cannot hold the output's sample axes {lead}; name them with "
                    f"point_batch_axes={{{name.split('#')[0]!r}: ...}}"
                )
            found = tuple(h.shape[a] for a in at)
            if found != lead:
                raise PlacementError(
                    f"feedback point {name!r} produced shape {tuple(h.shape)}, but the output has "
                    f"shape {tuple(y.shape)}: the point's batch-like axes {at} ({found}) must equal "
                    f"the output's {sample_axes} ({lead}) so that each sample's error can be "
                    "projected; for a sequence-first tensor pass point_batch_axes="
                    f"{{{name.split('#')[0]!r}: 1}}, for the output batch_axes=..."
                )
            widths.append(h.numel() // samples)
        names = [n for n, _, _ in records]
        if self.feeds:
            self._ensure_layout(names, widths, out_features, y)
        return (tuple(names), tuple(widths), out_features)

    def _is_own_node(self, node: Any) -> bool:
        return getattr(node, "_forward_cls", None) is DirectFeedbackFn and (
            getattr(node, "projector", None) is self
        )

    def _ensure_layout(
        self, names: list[str], widths: list[int], out_features: int, y: torch.Tensor
    ) -> None:
        layout = self.layout
        if layout is not None:
            if (
                tuple(widths) == layout.widths
                and tuple(names) == layout.names
                and out_features == layout.out_features
            ):
                return
            raise PlacementError(
                "the feedback points of this forward pass "
                f"({dict(zip(names, widths, strict=True))}, d_out={out_features}) differ from "
                f"those that fixed the feedback matrix ({dict(zip(layout.names, layout.widths, strict=True))}, "
                f"d_out={layout.out_features}): the feedback matrix is fixed by the first "
                "training forward pass, so the set of points that run, their order and widths "
                "cannot change between steps (a LayerDrop or a data-dependent branch that skips a "
                "block changes them: place points that run every step, e.g. outside the dropped "
                "layers)"
            )
        model = self.owner
        layout = FeedbackLayout.build(
            names,
            widths,
            out_features,
            shared=self.rule.shared,
            scaling=self.rule.scale,
        )
        self.initial_layout = layout
        if self.learned:  # the scales are in B's values (folded at its draw): it learns from there
            layout = FeedbackLayout.build(names, widths, out_features, shared=False, scaling=1.0)
        buffer = _feedback_tensor(model)
        shape = (out_features, layout.total)
        if buffer is None and self.learned and not self.materializing:
            raise RuntimeError(
                f"{self.rule.name} learns its feedback matrix, a parameter of "
                f"{type(model).__name__} that must exist before the optimiser (and DDP) is "
                "built; it is made from the first forward pass with gradients enabled, which is "
                "this one, so no optimiser would hold it and it would never learn. Pass an "
                "example batch to "
                "apply (rule.apply(model, example_input=x)) or call rule.materialize(model, x) "
                "right after apply, then build the optimiser"
            )
        if buffer is None:
            dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
            check_fits(
                FEEDBACK_BUFFER,
                shape,
                dtype,
                y.device,
                "every feedback point reads its columns of one (d_out, width) matrix; place the "
                "points on narrower layers (rule.apply(model, points=[...])), keep shared=True "
                "(width = the widest point, not the sum), or take the error before a narrower "
                "output (error_at=...)",
            )
            buffer = self._draw(shape, dtype, y.device)
            if self.learned:
                model._parameters[FEEDBACK_BUFFER] = nn.Parameter(buffer)
            else:
                model._buffers[FEEDBACK_BUFFER] = buffer
            narrow = {n: w for n, w in zip(names, widths, strict=True) if w < out_features}
            if narrow:
                _warn_bottleneck(narrow, out_features, self.placement.error_at)
        elif tuple(buffer.shape) != shape:
            raise PlacementError(
                f"the loaded feedback matrix has shape {tuple(buffer.shape)} but these feedback "
                f"points need {shape} (widths {dict(zip(names, widths, strict=True))}); it cannot "
                "serve them: the checkpoint was made with another model or placement"
            )
        self.layout = layout
        self.projector = Projector(layout, self.rule.signal)

    def _draw(
        self, shape: tuple[int, int], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """The initial matrix (:meth:`DirectFeedback.initial_feedback`) for this placement."""
        return self.rule.initial_feedback(shape, self.initial_layout, dtype, device)

    def project(
        self,
        error: torch.Tensor,
        forward: _Forward,
        needed: Sequence[bool],
    ) -> list[torch.Tensor | None]:
        """``DirectFeedbackFn``'s backward: one matmul ``P = s(e) @ B``, then a slice per point."""
        hidden_shapes = forward.shapes
        layout = self.layout
        model = self.owner
        buffer = None if model is None else _feedback_tensor(model)
        if layout is None or buffer is None or self.projector is None:
            raise RuntimeError("the direct-feedback rule was removed between forward and backward")
        if self.rule.check_finite and torch.compiler.is_compiling():
            # traced (compiled autograd): a device-side assert, no host sync, no graph break
            torch._assert_async(
                torch.isfinite(error.sum()),
                "the output error dL/dy contains NaN/Inf values; DFA would feed them to every "
                "layer (check_finite=False skips this check)",
            )
        elif (
            self.rule.check_finite
            and error.device.type != "meta"  # shapes only: no values to check
            and not math.isfinite(error.sum().item())
        ):
            # one reduction and one sync: a NaN or Inf anywhere makes the sum non-finite
            bad = int((~torch.isfinite(error)).sum())
            raise FloatingPointError(
                f"the output error dL/dy contains {bad} NaN/Inf values; DFA would feed them to "
                "every layer. Check the loss, the learning rate and the inputs (or pass "
                "check_finite=False to skip this check)"
            )
        if forward.output is not None:
            error = OUTPUT_ACTIVATIONS[self.placement.output_activation](error, forward.output)
        if forward.output_axes is not None:
            rest = [a for a in range(error.dim()) if a not in forward.output_axes]
            error = error.permute(*forward.output_axes, *rest)
        flat = error.reshape(-1, layout.out_features)
        points = len(hidden_shapes)
        rows = self.projector.project(flat, buffer, needed[:points])
        samples = flat.shape[0]
        signals: list[torch.Tensor | None] = [
            None if row is None else _to_point_layout(row, shape, axes, samples)
            for row, shape, axes in zip(rows, hidden_shapes, forward.axes, strict=True)
        ]
        if self.learned:  # B's own gradient, the input after the points' (rules/learned.py)
            grad = (
                self.rule.matrix_gradient(buffer, flat, forward, layout) if needed[points] else None
            )
            signals.append(grad)
            if grad is not None and self.watch is not None:
                self.watch.check(self.rule, self.owner, self.verifier.roles, buffer)
        return signals

    # --- checkpoints -----------------------------------------------------------------------------

    def feedback_keys(self) -> list[str]:
        """The ``state_dict`` keys this binding adds to its model (relative to the model)."""
        return [FEEDBACK_BUFFER] if _feedback_tensor(self.owner) is not None else []

    def _before_load(self, module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
        """Makes room for a saved feedback matrix in a model that has not run forward yet, and
        regenerates the matrix from the rule's seed when the checkpoint has none (a plain
        checkpoint, :func:`feedback_alignment.checkpoints.plain_state_dict`): the matrix is a
        function of the seed and its shape, so the regenerated one is the one training used.
        Only for a checkpoint of the whole model (every parameter present): a partial one
        (``strict=False``, some layers' weights) keeps the matrix in use, reported missing."""
        key = prefix + FEEDBACK_BUFFER
        incoming = state_dict.get(key)
        current = _feedback_tensor(module)
        if incoming is None:
            whole = all(
                prefix + name in state_dict
                for name, _ in module.named_parameters()
                if name != FEEDBACK_BUFFER
            )
            if current is None or not whole:
                return
            if not self.learned:  # a plain checkpoint: draw it again
                state_dict[key] = self._draw(tuple(current.shape), current.dtype, current.device)
            elif self.initial_layout is not None:
                warnings.warn(
                    f"{self.rule.name}: the checkpoint loaded into {type(module).__name__} has "
                    f"no learned feedback matrix {key!r}: it starts again from its initial draw "
                    f"(seed {self.rule.seed}); load the converted model's own state_dict to "
                    "resume it",
                    FeedbackResetWarning,
                    stacklevel=3,
                )
                state_dict[key] = self._draw(tuple(current.shape), current.dtype, current.device)
                if self.watch is not None:
                    self.watch.reset()
            return
        if current is None or tuple(current.shape) != tuple(incoming.shape):
            device = current.device if current is not None else incoming.device
            room = torch.empty_like(incoming, device=device)
            if self.learned:
                module._parameters[FEEDBACK_BUFFER] = nn.Parameter(room)
            else:
                module._buffers[FEEDBACK_BUFFER] = room
        if self.watch is not None:
            self.watch.reset()
        self.layout = self.projector = None  # re-checked against the loaded matrix next pass
        self.verifier.forget()


_COMPILE_REASON = (
    "feedback-alignment: a direct rule's feedback points (DFA, SignDFA, DRTP, Shallow) are graph "
    "breaks by design: the cut and the projection of the error run in eager code between "
    "compiled blocks, where the cut is proved. torch.compile(model, fullgraph=True) cannot "
    "compile them: leave out fullgraph=True"
)


class _EagerHook:
    """``hook`` run by Python even inside ``torch.compile``: TorchDynamo breaks the graph at it.

    Why: a direct rule's hooks keep per-forward records, cut the graph and inject the projection
    node; traced into one compiled graph, the points would disappear inside a single AOT autograd
    node and the cut could not be proved (nor the signal injected per point). With a break at every
    point, each block between two points compiles into its own graph (and its own autograd node),
    the cut and the injection happen in eager code between them, and the cut verification walks
    the compiled blocks' nodes as it walks eager ones. The cost is one graph per block.

    An object rather than a closure, so that ``copy.deepcopy`` and pickling of the model carry the
    hook's binding over to the copy (a closure would be shared with the original).

    The first hook made in a process also turns on TorchDynamo's guards on module hooks
    (``torch._dynamo.config.skip_nnmodule_hook_guards = False``) and drops the code compiled
    before it (``torch._dynamo.reset()``: it was compiled without those guards). Without them, a
    model whose class was compiled before (a BP baseline of the same architecture) or a model
    compiled before the rule was applied reuses code that never calls the hooks: it would train by
    backprop (the rule refuses that, "no feedback point ran"). Both are done at the first hook
    rather than at import, since importing TorchDynamo takes about 1.5 s (an optimizer's
    constructor imports it anyway).
    """

    _ready = False

    def __init__(self, hook: Callable) -> None:
        self.hook = hook
        if not _EagerHook._ready:
            if torch._dynamo.config.skip_nnmodule_hook_guards:
                torch._dynamo.config.skip_nnmodule_hook_guards = False
                # code compiled before has no guards on hooks (it would skip the feedback hooks
                # of a model compiled before the rule was applied, or of a class compiled for BP)
                torch._dynamo.reset()
            _EagerHook.__call__ = torch.compiler.disable(_EagerHook._run, reason=_COMPILE_REASON)
            _EagerHook._ready = True

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        return self.hook(*args, **kwargs)

    __call__ = _run  # replaced by its torch.compiler.disable'd version at the first hook


_bottleneck_warned = False
"""Whether this process has given the :class:`BottleneckWarning` (it is given once)."""


def _warn_bottleneck(narrow: dict[str, int], out_features: int, error_at: str | None) -> None:
    global _bottleneck_warned
    if _bottleneck_warned:
        return
    _bottleneck_warned = True
    remedy = (
        "place the points on layers at least that wide (rule.apply(model, points=[...]))"
        if error_at is not None
        else "take the error before the widest projection with rule.apply(model, error_at=...) "
        "(for a language model, the final norm before the vocabulary projection: the feedback "
        "then has the hidden width), or place the points on layers at least that wide"
    )
    warnings.warn(
        f"feedback points {narrow} are narrower than the output (d_out={out_features}) whose "
        "error they receive: the layers below such a bottleneck align poorly with BP (Launay et "
        f"al. 2019; measured in the docs, 'Reproducing the papers'). To avoid it, {remedy}. "
        "Given once per process; silence it with warnings.simplefilter('ignore', "
        "fa.BottleneckWarning)",
        BottleneckWarning,
        stacklevel=3,
    )


def _live(records: Sequence[Record]) -> bool:
    """Whether any recorded point learns (its tensor requires grad); frozen points only hold
    their place in the layout."""
    return any(h.requires_grad for _, h, _ in records)


def _trainable(module: nn.Module) -> bool:
    """Whether ``module`` holds a parameter that requires grad (read only on rare paths)."""
    return any(p.requires_grad for p in module.parameters())


_CHECKPOINT_FILE = os.path.join("torch", "utils", "checkpoint.py")


def _inside_checkpoint() -> bool:
    """Whether ``torch.utils.checkpoint`` is on the call stack (a frame walk: rare paths only)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_filename.endswith(_CHECKPOINT_FILE):
            return True
        frame = frame.f_back
    return False


def _recomputing() -> bool:
    """Whether this call is a non-reentrant checkpoint's recomputation inside backward: the
    forward pass it recomputes was cut at the points, so the recomputation cuts there too."""
    return torch._C._current_graph_task_id() != -1 and _inside_checkpoint()


def _to_point_layout(
    grad: torch.Tensor, shape: torch.Size, axes: tuple[int, ...] | None, samples: int
) -> torch.Tensor:
    """Rows of ``(samples, width)`` laid out as the point's tensor: sample axes at ``axes``."""
    if axes is None or axes == tuple(range(len(axes))):
        return grad if grad.shape == shape else grad.reshape(shape)
    rest = [d for d in range(len(shape)) if d not in axes]
    moved = grad.reshape(*(shape[a] for a in axes), *(shape[d] for d in rest))
    order = [0] * len(shape)
    for position, dim in enumerate((*axes, *rest)):
        order[dim] = position
    return moved.permute(*order)


def _to_rows(h: torch.Tensor, axes: tuple[int, ...] | None, samples: int) -> torch.Tensor:
    """A point's tensor as ``(samples, width)`` rows: the inverse of :func:`_to_point_layout`."""
    if axes is not None and axes != tuple(range(len(axes))):
        rest = [d for d in range(h.dim()) if d not in axes]
        h = h.permute(*axes, *rest)
    return h.reshape(samples, -1)


def _feedback_tensor(model: nn.Module) -> torch.Tensor | None:
    """The direct feedback matrix of ``model``: a buffer, or a parameter when it learns (DKP)."""
    matrix = model._parameters.get(FEEDBACK_BUFFER)
    return model._buffers.get(FEEDBACK_BUFFER) if matrix is None else matrix


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """Every tensor inside a module output (tensors, tuples, lists, dicts, ``ModelOutput``)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors(item)


def _first_tensor(output: Any, where: str) -> torch.Tensor:
    """The tensor a point acts on: the output, or the first tensor of a tuple / dict output."""
    for tensor in _tensors(output):
        return tensor
    raise PlacementError(
        f"feedback point {where!r} returned {type(output).__name__} without a tensor in it; place "
        "the point on a module that returns the hidden tensor, or put fa.FeedbackPoint() on it in "
        "the model's forward"
    )


def _any_requires_grad(output: Any) -> bool:
    return any(t.requires_grad for t in _tensors(output))


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        items = [_map_tensors(item, fn) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, list):
        return [_map_tensors(item, fn) for item in value]
    if isinstance(value, Mapping) and hasattr(value, "__setitem__"):
        for key in list(value.keys()):  # dicts and ModelOutput, in place (keeps attributes in sync)
            value[key] = _map_tensors(value[key], fn)
        return value
    return value


def _cut(output: Any) -> Any:
    """``output`` with every tensor that requires grad detached: nothing downstream reaches below."""
    if isinstance(output, torch.Tensor):
        return output.detach()
    return _map_tensors(output, lambda t: t.detach() if t.requires_grad else t)


def _replace_first(output: Any, value: torch.Tensor) -> Any:
    """``output`` with its first tensor replaced by ``value`` (the error site's injected ``y``)."""
    if isinstance(output, torch.Tensor):
        return value
    first = _first_tensor(output, "")
    return _map_tensors(output, lambda t: value if t is first else t)


def _count_scalars(output: Any) -> int:
    """How many scalars that require grad a model output holds (a loss computed inside forward)."""
    if isinstance(output, torch.Tensor):
        return 0
    return sum(1 for t in _tensors(output) if t.dim() == 0 and t.requires_grad)


def _loss_roots(output: Any, selector: OutputSelector) -> list[tuple[str, torch.Tensor]]:
    """``(label, tensor)`` of every tensor the model returns that requires grad, the selected
    output first: a loss may be computed from any of them (an auxiliary head, hidden states, a loss
    computed inside ``forward``)."""
    if isinstance(output, torch.Tensor):
        return [("the output", output)] if output.requires_grad else []
    roots: list[tuple[str, torch.Tensor]] = []
    selected = None
    if selector is not None:  # a selector that selects nothing is refused here
        selected = _select_output(output, selector, "the model")
        roots.append((f"the output {selector!r}", selected))
    for label, tensor in _labelled_tensors(output, "output"):
        if tensor is not selected:
            roots.append((f"the returned {label}", tensor))
    return [(label, t) for label, t in roots if t.requires_grad]


def _labelled_tensors(value: Any, label: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield label, value
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _labelled_tensors(item, f"{label}[{i}]")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _labelled_tensors(item, f"{label}[{key!r}]")


def _leak_message(
    model: nn.Module, leaks: list[tuple[str, list[str], str | None]], tried: list[str]
) -> str:
    point, params, other = leaks[0]
    shown = ", ".join(params[:6]) + (f" and {len(params) - 6} more" if len(params) > 6 else "")
    if other is not None and other.startswith("point "):
        what = (
            f"the local backprop of {other}'s signal reaches {len(params)} parameter(s) "
            f"below it ({shown}) through a path that bypasses {point!r}"
        )
    else:
        what = (
            f"{other or 'the output'} also reaches {len(params)} parameter(s) that feed it "
            f"({shown}) through a path that bypasses the feedback points (a residual connection "
            "around the point, another item of its output, a branch that skips it, or a module "
            "called again above the points)"
        )
    path = point.split("#")[0]
    blocks = [b for b in enclosing_blocks(model, path) if b in dict(find_blocks(model))]
    if set(blocks) <= {t.split("#")[0] for t in tried}:
        blocks = []  # that is the placement refused
    inside = tuple(b + "." for b in blocks)
    below = [p for p in params if not p.startswith(inside)]
    owners = [n for n, m in model.named_modules() if any(p in below for p in _own_params(n, m))]
    fixes = []
    if blocks:
        fixes.append(
            f"place feedback at the outputs of the blocks around it (points={blocks}) if a "
            "residual connection bypasses the point"
        )
    if owners:
        fixes.append(
            "add a feedback point where the paths fork, e.g. at the output of "
            f"{owners[-1]!r} (points=[{owners[-1]!r}, ...])"
        )
    fix = "; or ".join(fixes) if fixes else "add a feedback point where the paths fork"
    more = f" ({len(leaks) - 1} more leak(s) of the same kind)" if len(leaks) > 1 else ""
    return (
        f"feedback point {point!r} does not cut the graph: {what}; they would train by "
        f"backprop{more}. Points of this placement: {tried}. Fix: {fix}, or name modules that "
        "should take the true gradient as well with true_gradient=[...]"
    )


def _own_params(prefix: str, module: nn.Module) -> list[str]:
    return [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)]


def _select_output(output: Any, selector: OutputSelector, model_name: str) -> torch.Tensor:
    if selector is None:
        if isinstance(output, torch.Tensor):
            return output
        raise PlacementError(
            f"{model_name} returned {type(output).__name__}, not a tensor: name the output to take "
            "the error from, e.g. rule.apply(model, output=0) for a tuple or output='logits' for "
            "a dict or ModelOutput"
        )
    if (isinstance(selector, int) and isinstance(output, (tuple, list))) or (
        isinstance(selector, str) and isinstance(output, Mapping)
    ):
        try:
            value = output[selector]
        except (KeyError, IndexError):
            keys = list(output.keys()) if isinstance(output, Mapping) else len(output)
            raise PlacementError(
                f"output={selector!r} is not in {model_name}'s output of type "
                f"{type(output).__name__} (it holds {keys})"
            ) from None
    elif isinstance(selector, str) and hasattr(output, selector):
        value = getattr(output, selector)
    else:
        raise PlacementError(
            f"output={selector!r} does not select anything from {model_name}'s output of type "
            f"{type(output).__name__}"
        )
    if not isinstance(value, torch.Tensor):
        raise PlacementError(
            f"output={selector!r} selected a {type(value).__name__} from {model_name}'s output, "
            "not a tensor"
        )
    return value


def _replace_output(output: Any, selector: OutputSelector, value: torch.Tensor) -> Any:
    if selector is None:
        return value
    if isinstance(output, tuple):
        items = list(output)
        items[selector] = value
        return type(output)(*items) if hasattr(output, "_fields") else tuple(items)
    if isinstance(output, list):
        output = list(output)
        output[selector] = value
        return output
    if isinstance(output, Mapping):
        output[selector] = value  # dicts and ModelOutput (which keeps its attribute in sync)
        return output
    setattr(output, selector, value)
    return output


def __getattr__(name: str) -> Any:
    """``DKP`` and ``FDFA``, importable from here as before they moved to
    :mod:`feedback_alignment.rules.learned` (imported on first use: that module imports this
    one)."""
    if name in ("DKP", "FDFA"):
        from feedback_alignment.rules import learned

        return getattr(learned, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
