"""Direct feedback: DFA, sign-DFA, DRTP and the shallow control.

Every rule of this family cuts the model's graph at its feedback points and hands each point ``l``
the signal ``B_l s`` computed from the output in one projection per step:

* DFA (Nøkland 2016):        ``s = e = dL/dy``
* sign-DFA:                  ``s = sign(e) / n``
* DRTP (Frenkel et al. 2021): ``s = -y* / n`` (targets only, no error)
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

References:
    Nøkland, "Direct Feedback Alignment Provides Learning in Deep Neural Networks", NeurIPS 2016.
    Frenkel, Lefebvre, Bol, "Learning Without Feedback: Fixed Random Learning Signals Allow for
    Feedforward Training of Deep Neural Networks", Frontiers in Neuroscience 2021.
    Launay et al., "Direct Feedback Alignment Scales to Modern Deep Learning Tasks and
    Architectures", NeurIPS 2020.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.feedback import DISTRIBUTIONS, SCALINGS, FeedbackLayout, draw
from feedback_alignment.functional import DirectFeedbackFn
from feedback_alignment.points import INPUT_SUFFIX, PlacementError, find_points
from feedback_alignment.rules.base import BoundRule

FEEDBACK_BUFFER = "direct_feedback_matrix"
"""Name of the feedback buffer registered on the model: ``model.state_dict()[FEEDBACK_BUFFER]``."""

OutputSelector = int | str | None


class DirectFeedback(BoundRule):
    """Base class of the direct-feedback rules (see the module doc for the equations).

    Args:
        feedback: distribution of the feedback entries: ``"gaussian"``, ``"uniform"`` or
            ``"rademacher"`` (see :func:`feedback_alignment.feedback.draw`).
        scale: scaling of each point's feedback: ``"principled"`` (``1/sqrt(n_l d_out)``),
            ``"tinydfa"``, ``"nokland"``, ``"none"`` or a number (see :mod:`feedback_alignment.feedback`).
        shared: one matrix sliced by every point (``True``, TinyDFA's trick) or disjoint columns,
            i.e. independent matrices per point (``False``). Both project the signal once per step.
        seed: seed of the feedback draw; the same seed gives the same matrix on every process.
        check_finite: raise when the output error contains NaN or Inf (one reduction per step).
    """

    name = "direct"
    family = "direct"
    signal: str | None = "error"

    def __init__(
        self,
        feedback: str = "gaussian",
        scale: str | float = "principled",
        shared: bool = True,
        seed: int = 0,
        check_finite: bool = True,
    ) -> None:
        if feedback not in DISTRIBUTIONS:
            raise ValueError(f"unknown feedback {feedback!r}; choose one of {DISTRIBUTIONS}")
        if not isinstance(scale, (int, float)) and scale not in SCALINGS:
            raise ValueError(f"unknown scale {scale!r}; choose one of {SCALINGS} or a number")
        self.feedback = feedback
        self.scale = scale
        self.shared = bool(shared)
        self.seed = int(seed)
        self.check_finite = bool(check_finite)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(feedback={self.feedback!r}, scale={self.scale!r}, "
            f"shared={self.shared}, seed={self.seed})"
        )

    # --- Rule API ------------------------------------------------------------------------------

    def apply(
        self,
        model: nn.Module,
        *,
        points: Sequence[str] | None = None,
        output: OutputSelector = None,
        error_at: str | None = None,
        output_activation: str | None = None,
    ) -> nn.Module:
        """Cuts ``model`` at its feedback points and installs the projection of the error.

        Args:
            model: any ``nn.Module``; it is modified only by forward hooks and one buffer,
                ``FEEDBACK_BUFFER``, which appears in ``state_dict`` once the first training forward
                pass has fixed its shape.
            points: module paths of the feedback points; default: markers, else automatic
                placement after each hidden activation (:func:`~feedback_alignment.points.find_points`).
            output: which part of a non-tensor model output is ``y``: an index (tuples, lists),
                a key (dicts, ``ModelOutput``) or an attribute name.
            error_at: take the error at this submodule's output instead of the model's (e.g. the
                final norm before a vocabulary projection); every point must run before it.
            output_activation: the model's output is ``y = f(z)`` with a functional ``f`` that no
                module returns the input of (``torch.sigmoid(logits)`` in torchfm's models): feed
                back the error at ``z``, ``e_z = dL/dz``, computed from ``y`` and ``e`` by
                ``"sigmoid"`` (``e * y (1 - y)``), ``"tanh"`` (``e * (1 - y^2)``),
                ``"softmax"`` (``y * (e - <e, y>)``) or ``"log_softmax"``
                (``e - exp(y) sum(e)``), over the last axis. The top block still gets ``e``.

        Raises:
            PlacementError: no feedback point, or a named module does not exist.
            RuntimeError: a direct-feedback rule is already applied to ``model``.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__}.apply expects an nn.Module, got {type(model)}")
        if self._bound(model) is not None:
            self._attach(model, None)  # raises, naming the rule already applied
        found = find_points(model, points)
        error_site = None
        if error_at is not None:
            try:
                error_site = model.get_submodule(error_at)
            except AttributeError:
                raise PlacementError(
                    f"error_at={error_at!r} is not a submodule of {type(model).__name__}"
                ) from None
        if output_activation is not None and output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"unknown output_activation {output_activation!r}; choose one of "
                f"{sorted(OUTPUT_ACTIVATIONS)} or None"
            )
        binding = _Binding(self, model, found, output, error_at, error_site)
        binding.output_activation = output_activation
        self._attach(model, binding)
        return model

    def remove(self, model: nn.Module) -> nn.Module:
        binding = self._detach(model)
        binding.close(model)
        return model

    # --- inspection ----------------------------------------------------------------------------

    def point_names(self, model: nn.Module) -> list[str]:
        """Module paths where feedback enters ``model`` (before any forward pass)."""
        return [name for name, _ in self._binding(model).points]

    def layout(self, model: nn.Module) -> FeedbackLayout | None:
        """The feedback layout fixed by the first training forward pass (``None`` before)."""
        return self._binding(model).layout

    def feedback_matrices(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The effective ``B_l`` (shape ``(d_out, n_l)``) of every point, after scaling."""
        layout = self.layout(model)
        buffer = model._buffers.get(FEEDBACK_BUFFER)
        if layout is None or buffer is None:
            return {}
        return {name: layout.matrix(buffer, i) for i, name in enumerate(layout.names)}

    # --- signal ----------------------------------------------------------------------------------

    def project_signal(self, error: torch.Tensor) -> torch.Tensor:
        """The signal ``s`` projected by ``B`` from the flattened error ``e`` of shape (n, d_out)."""
        return error


class DFA(DirectFeedback):
    """Direct Feedback Alignment: ``delta_l = (B_l e) * f'(a_l)`` (Nøkland 2016)."""

    name = "DFA"


class SignDFA(DirectFeedback):
    """DFA with the sign of the error: ``delta_l = (B_l sign(e) / n) * f'(a_l)``."""

    name = "sign-DFA"

    def project_signal(self, error: torch.Tensor) -> torch.Tensor:
        return torch.sign(error) / error.shape[0]


class DRTP(DirectFeedback):
    """Direct Random Target Projection: ``delta_l = (B_l (-y*) / n) * f'(a_l)`` (Frenkel 2021).

    The hidden layers never see the error, only the targets of the batch, which must be given before
    each backward pass: ``rule.set_targets(y); loss.backward()``. Class indices are one-hot encoded
    with ``d_out`` classes; float targets of shape ``(*lead, d_out)`` are used as they are.
    """

    name = "DRTP"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._targets: torch.Tensor | None = None

    def set_targets(self, targets: torch.Tensor) -> None:
        """Targets for the next backward pass (consumed by it)."""
        if not isinstance(targets, torch.Tensor):
            raise TypeError(f"DRTP targets must be a tensor, got {type(targets).__name__}")
        self._targets = targets.detach()

    def project_signal(self, error: torch.Tensor) -> torch.Tensor:
        targets, self._targets = self._targets, None
        if targets is None:
            raise RuntimeError(
                "DRTP needs the targets of this batch: call rule.set_targets(y) before "
                "loss.backward()"
            )
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
            encoded = F.one_hot(targets.reshape(-1).long().to(error.device), classes)
        return encoded.to(dtype=error.dtype, device=error.device) * (-1.0 / samples)


class Shallow(DirectFeedback):
    """Control: the graph is cut at the points and nothing is fed back; only the top learns."""

    name = "Shallow"
    signal = None


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
    """What one forward pass hands to its backward: the points' shapes, and ``y`` when needed."""

    shapes: list[torch.Size]
    output: torch.Tensor | None


class _Binding:
    """The state of one rule applied to one model: hooks, the layout and the forward's records."""

    def __init__(
        self,
        rule: DirectFeedback,
        model: nn.Module,
        points: list[tuple[str, nn.Module]],
        output: OutputSelector,
        error_at: str | None,
        error_site: nn.Module | None,
    ) -> None:
        self.rule = rule
        self.points = points
        self.output = output
        self.error_at = error_at
        self.mode = "rule"  # or "backprop": record points, cut nothing
        self.layout: FeedbackLayout | None = None
        self.records: list[tuple[str, torch.Tensor]] = []
        self.recorders: list[list[tuple[str, torch.Tensor]]] = []
        self.calls: dict[str, int] = {}
        self.owner = model  # a strong reference: deepcopy maps it to the copy
        model.register_buffer(FEEDBACK_BUFFER, None)
        self.feeds = rule.signal is not None
        self.output_activation: str | None = None
        self._signature: tuple | None = None  # shapes of the last validated forward pass
        self._matrix_key: tuple | None = None
        self._matrix_cache: torch.Tensor | None = None
        self.handles = [
            model._register_load_state_dict_pre_hook(self._before_load, with_module=True),
        ]
        for name, module in points:
            if name.endswith(INPUT_SUFFIX):
                hook = partial(self._at_point_input, name)
                self.handles.append(module.register_forward_pre_hook(hook))
            else:
                self.handles.append(module.register_forward_hook(partial(self._at_point, name)))
        if error_site is not None:
            self.handles.append(error_site.register_forward_hook(self._at_error_site))
        # always_call: the records are cleared even when the forward pass raises
        self.handles.append(model.register_forward_hook(self._end_forward, always_call=True))

    def close(self, model: nn.Module) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        model._buffers.pop(FEEDBACK_BUFFER, None)
        self.records.clear()
        self._matrix_cache = self._matrix_key = None

    # --- forward hooks ---------------------------------------------------------------------------

    # These hooks run at every training step: they are kept free of avoidable work.

    def _active(self) -> bool:
        return torch.is_grad_enabled()

    def _at_point(self, name: str, module: nn.Module, args: Any, output: Any) -> Any:
        if not torch.is_grad_enabled():
            return None
        if isinstance(output, torch.Tensor):
            tensor, rebuild = output, None
        else:
            tensor, rebuild = _first_tensor(output, name)
        if not tensor.requires_grad:
            return None  # nothing below this point learns: no signal and no cut are needed
        calls = self.calls
        count = calls.get(name, 0)
        calls[name] = count + 1
        point = f"{name}#{count}" if count else name
        if self.recorders:
            for record in self.recorders:
                record.append((point, tensor))
        if self.mode == "backprop":
            return None
        if self.feeds:
            self.records.append((point, tensor))
        cut = tensor.detach()
        return cut if rebuild is None else rebuild(cut)

    def _at_point_input(self, name: str, module: nn.Module, args: tuple) -> Any:
        """A point at a module's first input: the module then reads the cut tensor."""
        if not args or not isinstance(args[0], torch.Tensor):
            raise PlacementError(
                f"feedback point {name!r}: the module's first input is not a tensor; place the "
                "point at a module's output instead"
            )
        cut = self._at_point(name, module, (), args[0])
        return None if cut is None else (cut, *args[1:])

    def _at_error_site(self, module: nn.Module, args: Any, output: Any) -> Any:
        if not self._active() or self.mode != "rule":
            return None
        tensor, rebuild = _first_tensor(output, self.error_at or "")
        return rebuild(self._inject(tensor))

    def _end_forward(self, module: nn.Module, args: Any, output: Any) -> Any:
        if output is None:  # the forward pass raised (or returned nothing): forget its records
            self.records.clear()
            self.calls.clear()
            return None
        result = None
        if self.error_at is None and self.calls and self.mode == "rule" and self._active():
            y = _select_output(output, self.output, type(module).__name__)
            if not y.requires_grad:
                raise PlacementError(
                    f"the output of {type(module).__name__} no longer requires grad: a feedback "
                    f"point (of {sorted(self.calls)}) cut the graph after the top layer; name the "
                    "hidden points with rule.apply(model, points=[...]) leaving that one out"
                )
            result = _replace_output(output, self.output, self._inject(y))
        leftover = [name for name, _ in self.records]
        self.records.clear()
        self.calls.clear()
        if leftover:
            raise PlacementError(
                f"feedback points {leftover} ran after the error site {self.error_at!r}: they "
                "would never receive a signal; place points before error_at"
            )
        return result

    # --- the projection ----------------------------------------------------------------------------

    def _inject(self, y: torch.Tensor) -> torch.Tensor:
        records, self.records = self.records, []
        if not records:
            return y
        hidden = [h for _, h in records]
        shapes = [h.shape for h in hidden]
        signature = (y.shape, shapes, [name for name, _ in records])
        if signature != self._signature:
            self._validate(y, records)
            self._signature = signature
        kept = y.detach() if self.output_activation is not None else None
        return DirectFeedbackFn.apply(self, _Forward(shapes, kept), y, *hidden)

    def _validate(self, y: torch.Tensor, records: list[tuple[str, torch.Tensor]]) -> None:
        """Checks a new set of shapes and fixes (or checks) the feedback layout for it."""
        if not y.is_floating_point():
            raise TypeError(f"the output where the error is taken has dtype {y.dtype}, not float")
        if y.dim() == 0:
            raise PlacementError("the output where the error is taken is a scalar; DFA needs y")
        lead = y.shape[:-1] if y.dim() > 1 else y.shape
        samples = math.prod(lead)
        widths = []
        for name, h in records:
            if h.shape[: len(lead)] != lead:
                raise PlacementError(
                    f"feedback point {name!r} produced shape {tuple(h.shape)}, but the output has "
                    f"shape {tuple(y.shape)}: a point's leading axes must equal the output's "
                    f"batch-like axes {tuple(lead)} so that each sample's error can be projected"
                )
            widths.append(h.numel() // samples if samples else 0)
        out_features = y.shape[-1] if y.dim() > 1 else 1
        self._ensure_layout([n for n, _ in records], widths, out_features, y)

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
                f"d_out={layout.out_features}); a feedback point's width cannot change between steps"
            )
        model = self.owner
        layout = FeedbackLayout.build(
            names, widths, out_features, shared=self.rule.shared, scaling=self.rule.scale
        )
        buffer = model._buffers.get(FEEDBACK_BUFFER)
        shape = (out_features, layout.total)
        if buffer is None:
            dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
            buffer = draw(self.rule.feedback, shape, self.rule.seed, dtype=dtype, device=y.device)
            model._buffers[FEEDBACK_BUFFER] = buffer
            narrow = {n: w for n, w in zip(names, widths, strict=True) if w < out_features}
            if narrow:
                warnings.warn(
                    f"feedback points {narrow} are narrower than the output (d_out="
                    f"{out_features}): the layers below such a bottleneck receive their signal "
                    "through it and align poorly with BP (measured in docs/REPRODUCTION.md, "
                    "'Principled DFA training'; Launay et al. 2019)",
                    stacklevel=2,
                )
        elif tuple(buffer.shape) != shape:
            raise PlacementError(
                f"the loaded feedback matrix has shape {tuple(buffer.shape)} but these feedback "
                f"points need {shape} (widths {dict(zip(names, widths, strict=True))}); it cannot "
                "serve them: the checkpoint was made with another model or placement"
            )
        self.layout = layout

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
        buffer = None if model is None else model._buffers.get(FEEDBACK_BUFFER)
        if layout is None or buffer is None:
            raise RuntimeError("the direct-feedback rule was removed between forward and backward")
        if self.rule.check_finite and not math.isfinite(error.sum().item()):
            # one reduction and one sync: a NaN or Inf anywhere makes the sum non-finite
            bad = int((~torch.isfinite(error)).sum())
            raise FloatingPointError(
                f"the output error dL/dy contains {bad} NaN/Inf values; DFA would feed them to "
                "every layer. Check the loss, the learning rate and the inputs (or pass "
                "check_finite=False to skip this check)"
            )
        if forward.output is not None:
            error = OUTPUT_ACTIVATIONS[self.output_activation](error, forward.output)
        signal = self.rule.project_signal(error.reshape(-1, layout.out_features))
        uniform = layout.uniform_scale
        projected = signal @ self._matrix(buffer, uniform, signal.dtype, signal.device)
        if uniform is not None and layout.total == min(layout.widths):
            # every point reads all columns with one scale: each gets a view of the same product
            return [
                (projected if projected.shape == shape else projected.view(shape)) if need else None
                for shape, need in zip(hidden_shapes, needed, strict=True)
            ]
        grads: list[torch.Tensor | None] = []
        for i, shape in enumerate(hidden_shapes):
            if not needed[i]:
                grads.append(None)
                continue
            start, width = layout.offsets[i], layout.widths[i]
            grad = projected if width == layout.total else projected[:, start : start + width]
            if uniform is None:
                grad = grad * layout.scales[i]
            grads.append(grad.reshape(shape))
        return grads

    def _matrix(
        self, buffer: torch.Tensor, scale: float | None, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """The buffer in the signal's dtype and device, times the common scale if there is one.

        Cached until the buffer is replaced, modified in place, cast or moved.
        """
        key = (id(buffer), buffer._version, dtype, device, scale)
        if self._matrix_key != key:
            matrix = buffer.detach().to(dtype=dtype, device=device)
            self._matrix_cache = matrix * scale if scale not in (None, 1.0) else matrix
            self._matrix_key = key
        return self._matrix_cache

    # --- checkpoints -----------------------------------------------------------------------------

    def _before_load(self, module: nn.Module, state_dict: Mapping, prefix: str, *args) -> None:
        """Makes room for a saved feedback matrix in a model that has not run forward yet."""
        key = prefix + FEEDBACK_BUFFER
        incoming = state_dict.get(key)
        if incoming is None:
            return
        current = module._buffers.get(FEEDBACK_BUFFER)
        if current is None or tuple(current.shape) != tuple(incoming.shape):
            device = current.device if current is not None else incoming.device
            module._buffers[FEEDBACK_BUFFER] = torch.empty_like(incoming, device=device)
        self.layout = None  # re-checked against the loaded matrix at the next forward pass
        self._signature = None


def _first_tensor(output: Any, where: str) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """The tensor a point acts on (the output, or a tuple's first item) and how to put it back."""
    if isinstance(output, torch.Tensor):
        return output, lambda tensor: tensor
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        rest = output[1:]
        if hasattr(output, "_fields"):  # namedtuple
            return output[0], lambda tensor: type(output)(tensor, *rest)
        return output[0], lambda tensor: (tensor, *rest)
    raise PlacementError(
        f"feedback point {where!r} returned {type(output).__name__}, not a tensor (or a tuple whose "
        "first item is a tensor); place the point on a module that returns the hidden tensor, or "
        "put fa.FeedbackPoint() on it in the model's forward"
    )


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
        value = output[selector]
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
