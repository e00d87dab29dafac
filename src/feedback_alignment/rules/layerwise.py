"""Layer-wise feedback: FA, sign-symmetric feedback (uSF, frSF, brSF), Kolen-Pollack, weight mirror.

Every rule of this family keeps the forward pass and the local weight gradient of each weight
layer, and changes one thing in its backward pass: the error reaches the layer's input through a
feedback matrix ``B`` of the shape of ``W^T`` instead of ``W^T`` itself:

* BP:  ``delta_l = (W_{l+1}^T delta_{l+1}) * f'(a_l)``
* any layer-wise rule: ``delta_l = (B_{l+1} delta_{l+1}) * f'(a_l)``, ``dW_l = delta_l h_{l-1}^T``

The rules differ only in ``B`` (``s`` is the scale, ``M`` a random matrix, see ``scale`` below):

========================= ========================================== ===============================
rule                      ``B^T`` (the shape of ``W``)               state (buffers per layer)
========================= ========================================== ===============================
:class:`FA`               ``s * R``, ``R`` fixed random              ``weight_feedback``
:class:`uSF`              ``s * sign(W)``                            none
:class:`frSF`             ``s * |M| * sign(W)``, ``M`` fixed         ``feedback_magnitude`` (s|M|)
:class:`brSF`             ``s * |M_t| * sign(W)``, new ``M_t`` per   ``feedback_stream``
                          training forward call                      (``k``, ``t``)
:class:`KolenPollack`     starts as FA; receives ``W``'s update      ``weight_feedback``
                          with ``W``'s decay swapped for its own
:class:`WeightMirror`     starts as FA; learnt from noise in an      ``weight_feedback``
                          explicit mirror phase (:meth:`mirror`)
========================= ========================================== ===============================

Seeds: layer ``i`` (in ``named_modules`` order of the converted layers) draws with
``k = layer_seed(seed, i)`` (:func:`layer_seed`) through :func:`feedback_alignment.feedback.draw`,
so a seed gives the same feedback on every machine; brSF's draw number ``t`` uses
``layer_seed(k, t)``, and ``(k, t)`` is in ``state_dict``, so a checkpoint resumes the stream.

Scale ``s``: ``"init"`` (default) makes the entries of ``B`` have the standard deviation of
PyTorch's default initialisation of ``W``, ``1/sqrt(3 fan_in)`` (BioTorch's uSF scale), for every
distribution (the unit draw's own std is divided out); a number is used as it is. ``norm="match"``
(feedback-norm rescaling) rescales ``B`` at every call so that ``||B||_F = ||W||_F``, which makes
the scale irrelevant. [unverified: Moskovitz et al. 2018 match feedback to forward norms; the
exact recipe here is ours]

How a layer is converted: its ``forward`` is replaced by an instance attribute that calls
:class:`~feedback_alignment.functional.LinearFeedbackFn` or
:class:`~feedback_alignment.functional.ConvFeedbackFn` with the module's own ``weight`` and
``bias``: the very same ``Parameter`` objects (an optimizer built before ``apply`` keeps working),
forward hooks of the module still run, and weight parametrizations (e.g.
:class:`feedback_alignment.optim.NormConstraint`) still apply. ``remove`` deletes the attribute and
the buffers: the module is exactly what it was. Without grad (``torch.no_grad``, evaluation) the
module's own forward runs.

Layers: ``nn.Linear`` (any leading axes), ``nn.Conv1d``, ``nn.Conv2d``, ``nn.Conv3d`` (stride,
padding incl. ``"same"`` and non-zero padding modes, dilation, groups). Normalisation layers,
embeddings and ``nn.PReLU`` train by their ordinary local gradients (they transport no weight
matrix). Any other module holding parameters (``nn.LSTM``, ``nn.MultiheadAttention``,
``nn.ConvTranspose2d``, custom layers) is refused at ``apply`` time, by its path, unless excluded.

References:
    Lillicrap, Cownden, Tweed, Akerman, "Random synaptic feedback weights support error
    backpropagation for deep learning", Nature Communications 2016.
    Liao, Leibo, Poggio, "How Important Is Weight Symmetry in Backpropagation?", AAAI 2016.
    Moskovitz, Litwin-Kumar, Abbott, "Feedback alignment in deep convolutional networks",
    arXiv:1812.06488, 2018.
    Akrout, Wilson, Humphreys, Lillicrap, Tweed, "Deep Learning without Weight Transport",
    NeurIPS 2019.
"""

from __future__ import annotations

import hashlib
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from feedback_alignment.feedback import DISTRIBUTIONS, draw
from feedback_alignment.functional import (
    ConvFeedbackFn,
    LinearFeedbackFn,
    conv_backward,
    conv_nd,
    linear_weight_grad,
)
from feedback_alignment.rules.base import BoundRule

log = logging.getLogger(__name__)

FEEDBACK_WEIGHT = "weight_feedback"
"""Buffer holding ``B^T`` (``W``'s shape) on each converted layer of FA, KP and weight mirror."""
FEEDBACK_MAGNITUDE = "feedback_magnitude"
"""Buffer holding frSF's fixed ``s|M|`` (``W``'s shape) on each converted layer."""
FEEDBACK_STREAM = "feedback_stream"
"""Buffer holding brSF's stream ``(k, t)`` (int64 pair) on each converted layer: draw ``t`` of the
layer's magnitudes uses ``layer_seed(k, t)`` with ``k = layer_seed(seed, i)``."""

SUPPORTED_LAYERS: dict[type[nn.Module], str] = {
    nn.Linear: "linear",
    nn.Conv1d: "conv",
    nn.Conv2d: "conv",
    nn.Conv3d: "conv",
}
"""Layer types whose backward a layer-wise rule replaces (subclasses must keep their forward)."""

LOCAL_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.PReLU,
)
"""Layers with parameters that train by their ordinary local gradient (no weight transport)."""

if hasattr(nn, "RMSNorm"):
    LOCAL_LAYERS = (*LOCAL_LAYERS, nn.RMSNorm)

SCALES = ("init",)
_UNIT_STD = {"gaussian": 1.0, "uniform": 1.0 / math.sqrt(3.0), "rademacher": 1.0}


class UnsupportedLayerError(ValueError):
    """A module of the model cannot be trained by a layer-wise rule (raised by ``apply``)."""


def layer_seed(seed: int, index: int, step: int = 0) -> int:
    """The seed of layer ``index``'s feedback draw (and of brSF's draw number ``step``).

    A 63-bit integer from ``blake2b("seed/index/step")``: the same on every machine and process.
    """
    digest = hashlib.blake2b(f"{int(seed)}/{int(index)}/{int(step)}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def init_std(weight: torch.Tensor) -> float:
    """``1/sqrt(3 fan_in)``: the std of PyTorch's default ``nn.Linear``/``nn.Conv`` init."""
    return 1.0 / math.sqrt(3.0 * weight[0].numel())


@dataclass
class _Layer:
    """One converted layer: where it is, what it is, and the rule's per-layer constants."""

    path: str
    module: nn.Module
    kind: str  # "linear" or "conv"
    index: int
    scale: float = 1.0
    weight_params: list[nn.Parameter] = field(default_factory=list)
    cache: Any = None  # a rule's per-layer memo (brSF: the stream position last seen)


class _Binding:
    """One rule applied to one model: the converted layers and the measurement state."""

    def __init__(self, rule: LayerwiseFeedback, layers: list[_Layer]) -> None:
        self.rule = rule
        self.layers = layers
        self.mode = "rule"  # or "backprop"
        self.recorders: list[list[tuple[str, torch.Tensor]]] = []
        self.calls: dict[str, int] = {}
        self.handles: list[Any] = []


class LayerwiseFeedback(BoundRule):
    """Base class of the layer-wise rules (see the module doc for the equations).

    Subclasses say how ``B^T`` is made (:meth:`_setup` registers per-layer buffers, :meth:`_feedback`
    returns ``B^T`` for one forward call).

    Args:
        scale: ``"init"`` (entries with the std of the default init of ``W``, ``1/sqrt(3 fan_in)``)
            or a number.
        norm: ``None``, or ``"match"`` to rescale ``B`` to ``||B||_F = ||W||_F`` at every call.
        seed: seed of the feedback draws (see :func:`layer_seed`).
    """

    name = "layerwise"
    family = "layerwise"
    #: buffers this rule registers on each converted layer
    buffers: tuple[str, ...] = ()

    def __init__(self, scale: str | float = "init", norm: str | None = None, seed: int = 0) -> None:
        if isinstance(scale, bool) or not (isinstance(scale, (int, float)) or scale in SCALES):
            raise ValueError(f"unknown scale {scale!r}; choose one of {SCALES} or a number")
        if norm not in (None, "match"):
            raise ValueError(f"unknown norm {norm!r}; choose None or 'match'")
        self.scale = scale
        self.norm = norm
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale!r}, norm={self.norm!r}, seed={self.seed})"

    # --- Rule API ------------------------------------------------------------------------------

    def apply(self, model: nn.Module, *, exclude: Sequence[str] = ()) -> nn.Module:
        """Converts every ``nn.Linear`` and ``nn.Conv{1,2,3}d`` of ``model`` to this rule.

        Args:
            model: any ``nn.Module``; its layers keep their ``Parameter`` objects.
            exclude: module paths whose subtree keeps ordinary backprop (weight transport), e.g. an
                ``nn.LSTM`` the rule cannot convert.

        Raises:
            UnsupportedLayerError: modules that hold parameters but cannot be converted (each named
                by path and type, with what to do), or nothing to convert.
            RuntimeError: a layer-wise rule is already applied to a layer of ``model``.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__}.apply expects an nn.Module, got {type(model)}")
        if self._bound(model) is not None:
            self._attach(model, None)  # raises, naming the rule already applied
        layers = self._collect(model, exclude)
        binding = _Binding(self, layers)
        for layer in layers:
            weight = layer.module.weight
            layer.scale = self._scale_of(weight)
            layer.weight_params = _weight_parameters(layer.module)
            self._setup(layer, weight.detach())
        for layer in layers:
            layer.module.forward = partial(_converted_forward, self, binding, layer)
        binding.handles.extend(self._install(model, binding))
        self._attach(model, binding)
        return model

    def remove(self, model: nn.Module) -> nn.Module:
        binding = self._detach(model)
        for handle in binding.handles:
            handle.remove()
        for layer in binding.layers:
            layer.module.__dict__.pop("forward", None)
            for name in self.buffers:
                layer.module._buffers.pop(name, None)
        return model

    # --- inspection ----------------------------------------------------------------------------

    def layers(self, model: nn.Module) -> list[str]:
        """Paths of the converted layers, in ``named_modules`` order."""
        return [layer.path for layer in self._binding(model).layers]

    def feedback_matrices(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``B^T`` (``W``'s shape) of every converted layer at the current weights.

        brSF gives the draw its next training call would use (without advancing the stream).
        """
        binding = self._binding(model)
        with torch.no_grad():
            return {
                layer.path: self._effective(layer, layer.module.weight.detach(), advance=False)
                for layer in binding.layers
            }

    # --- what subclasses define ----------------------------------------------------------------

    def _setup(self, layer: _Layer, weight: torch.Tensor) -> None:
        """Registers the layer's feedback buffers (called once per layer by ``apply``)."""

    def _feedback(self, layer: _Layer, weight: torch.Tensor, advance: bool) -> torch.Tensor:
        """``B^T`` for one call, from the detached ``weight``; ``advance`` moves random streams."""
        raise NotImplementedError

    def _install(self, model: nn.Module, binding: _Binding) -> list[Any]:
        """Extra handles (e.g. optimizer hooks) owned by the binding and removed by ``remove``."""
        return []

    # --- internals -----------------------------------------------------------------------------

    def _effective(self, layer: _Layer, weight: torch.Tensor, advance: bool) -> torch.Tensor:
        feedback = self._feedback(layer, weight, advance)
        if self.norm == "match":
            norm = feedback.norm()
            if norm > 0:
                feedback = feedback * (weight.norm() / norm)
        return feedback

    def _scale_of(self, weight: torch.Tensor) -> float:
        return init_std(weight) if self.scale == "init" else float(self.scale)

    def _collect(self, model: nn.Module, exclude: Sequence[str]) -> list[_Layer]:
        """The layers to convert; raises listing every module that cannot be converted."""
        if isinstance(exclude, str):
            exclude = [exclude]
        names = dict(model.named_modules())
        missing = [path for path in exclude if path not in names]
        if missing:
            raise ValueError(
                f"exclude={missing} names no submodule of {type(model).__name__}; submodules are: "
                + ", ".join(n for n in list(names)[1:41])
            )
        layers: list[_Layer] = []
        problems: list[str] = []
        for path, module in model.named_modules():
            if any(path == p or path.startswith(f"{p}.") or not p for p in exclude):
                continue  # kept on ordinary backprop
            if isinstance(module, parametrize.ParametrizationList) or ".parametrizations." in (
                f".{path}."
            ):
                continue  # the parameters behind a parametrized weight belong to their layer
            problem = _problem(path, module, self)
            if problem:
                problems.append(problem)
            elif _kind(module) is not None:
                layers.append(_Layer(path, module, _kind(module), len(layers)))
        if problems:
            raise UnsupportedLayerError(
                f"{self.name} cannot train {len(problems)} module(s) of {type(model).__name__}:\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
        if not layers:
            raise UnsupportedLayerError(
                f"{type(model).__name__} has no nn.Linear or nn.Conv1d/2d/3d layer for {self.name} "
                "to convert"
            )
        return layers


def _kind(module: nn.Module) -> str | None:
    for cls, kind in SUPPORTED_LAYERS.items():
        if isinstance(module, cls):
            return kind
    return None


def _problem(path: str, module: nn.Module, rule: LayerwiseFeedback) -> str | None:
    """Why ``module`` cannot be trained by ``rule`` (``None`` when it can)."""
    label = f"{path or '<model>'!r} ({type(module).__name__})"
    kind = _kind(module)
    if kind is not None:
        if (
            isinstance(module, nn.modules.lazy.LazyModuleMixin)
            and module.has_uninitialized_params()
        ):
            return (
                f"{label} is a lazy layer whose weight is not created yet: run one forward pass "
                f"before {rule.name}.apply(model)"
            )
        base = next(cls for cls in SUPPORTED_LAYERS if isinstance(module, cls))
        if type(module).forward is not base.forward:
            return (
                f"{label} overrides {base.__name__}.forward, which {rule.name} would bypass: "
                f"use a plain {base.__name__}, or exclude={[path]!r} to keep backprop there"
            )
        if "forward" in module.__dict__:
            return (
                f"{label} already has its forward replaced (a layer-wise rule is applied, or "
                "another tool patched it): remove that first"
            )
        return None
    if isinstance(module, LOCAL_LAYERS):
        return None
    if any(True for _ in module.parameters(recurse=False)):
        return (
            f"{label} holds parameters and computes its input gradient with them, which "
            f"{rule.name} cannot replace (supported: "
            f"{', '.join(c.__name__ for c in SUPPORTED_LAYERS)}; local: normalisation, "
            f"embeddings, PReLU): rebuild it from those layers, or pass exclude={[path]!r} to "
            "train it (and carry the error through it) by ordinary backprop"
        )
    return None


def _weight_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters that ``module.weight`` is computed from (itself unless parametrized)."""
    if parametrize.is_parametrized(module, "weight"):
        return list(module.parametrizations.weight.parameters())
    return [module.weight]


def _converted_forward(
    rule: LayerwiseFeedback, binding: _Binding, layer: _Layer, inputs: torch.Tensor
) -> torch.Tensor:
    """The forward of a converted layer: its own forward without grad or in backprop mode."""
    module = layer.module
    if binding.mode == "backprop" or not torch.is_grad_enabled():
        output = type(module).forward(module, inputs)
    else:
        weight = module.weight
        with torch.no_grad():
            feedback = rule._effective(layer, weight.detach(), advance=True)
        if layer.kind == "linear":
            output = LinearFeedbackFn.apply(inputs, weight, module.bias, feedback)
        else:
            output = _conv(module, inputs, weight, feedback)
    if binding.recorders:
        count = binding.calls.get(layer.path, 0)
        binding.calls[layer.path] = count + 1
        name = f"{layer.path}#{count}" if count else layer.path
        for record in binding.recorders:
            record.append((name, output))
    return output


def _conv(
    module: nn.Module, inputs: torch.Tensor, weight: torch.Tensor, feedback: torch.Tensor
) -> torch.Tensor:
    dims = weight.dim() - 2
    unbatched = inputs.dim() == dims + 1
    if unbatched:
        inputs = inputs.unsqueeze(0)
    padding = module.padding
    if module.padding_mode != "zeros" or isinstance(padding, str):
        if padding != "valid":
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            inputs = F.pad(inputs, module._reversed_padding_repeated_twice, mode=mode)
        padding = (0,) * dims
    output = ConvFeedbackFn.apply(
        inputs,
        weight,
        module.bias,
        feedback,
        tuple(module.stride),
        tuple(padding),
        tuple(module.dilation),
        module.groups,
    )
    return output.squeeze(0) if unbatched else output


def _check_distribution(distribution: str) -> str:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
    return distribution


def _unit_draw(distribution: str, weight: torch.Tensor, seed: int) -> torch.Tensor:
    """A draw of ``weight``'s shape with unit standard deviation, on its device and dtype."""
    values = draw(distribution, tuple(weight.shape), seed, dtype=torch.float64)
    values = values / _UNIT_STD[distribution]
    return values.to(dtype=weight.dtype, device=weight.device)


# --- the rules ---------------------------------------------------------------------------------


class FA(LayerwiseFeedback):
    """Feedback alignment: ``delta_l = (B_{l+1} delta_{l+1}) * f'(a_l)``, ``B`` fixed random.

    ``B^T = s * R`` with ``R`` a unit-std draw of ``distribution`` (buffer ``weight_feedback``).

    Args:
        distribution: ``"gaussian"``, ``"uniform"`` or ``"rademacher"``.
        scale, norm, seed: see :class:`LayerwiseFeedback`.

    References:
        Lillicrap et al., "Random synaptic feedback weights support error backpropagation for
        deep learning", Nature Communications 2016.
    """

    name = "FA"
    buffers = (FEEDBACK_WEIGHT,)

    def __init__(
        self,
        distribution: str = "gaussian",
        scale: str | float = "init",
        norm: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(scale=scale, norm=norm, seed=seed)
        self.distribution = _check_distribution(distribution)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(distribution={self.distribution!r}, "
            + super().__repr__().split("(", 1)[1]
        )

    def _setup(self, layer: _Layer, weight: torch.Tensor) -> None:
        seed = layer_seed(self.seed, layer.index)
        layer.module.register_buffer(
            FEEDBACK_WEIGHT, _unit_draw(self.distribution, weight, seed) * layer.scale
        )

    def _feedback(self, layer: _Layer, weight: torch.Tensor, advance: bool) -> torch.Tensor:
        return layer.module._buffers[FEEDBACK_WEIGHT]


class SignSymmetry(LayerwiseFeedback):
    """Sign-symmetric feedback: ``B^T = s * |M| * sign(W)``, agreeing with ``W`` in sign only.

    Variants (Moskovitz et al. 2018): ``"usf"`` ``M = 1`` (uniform); ``"frsf"`` ``M`` fixed random
    (buffer ``feedback_magnitude`` holds ``s|M|``); ``"brsf"`` a new ``M_t`` at every training
    forward call ``t``, drawn from ``layer_seed(k, t)`` with ``(k, t)`` the buffer
    ``feedback_stream`` (``k = layer_seed(seed, i)``).

    Args:
        variant: ``"usf"``, ``"frsf"`` or ``"brsf"``.
        distribution: of ``M`` (``"gaussian"``, ``"uniform"``, ``"rademacher"``), scaled to unit
            std before the absolute value.
        scale, norm, seed: see :class:`LayerwiseFeedback`.

    References:
        Liao, Leibo, Poggio, "How Important Is Weight Symmetry in Backpropagation?", AAAI 2016.
        Moskovitz, Litwin-Kumar, Abbott, "Feedback alignment in deep convolutional networks",
        arXiv:1812.06488, 2018.
    """

    VARIANTS = ("usf", "frsf", "brsf")

    def __init__(
        self,
        variant: str = "usf",
        distribution: str = "gaussian",
        scale: str | float = "init",
        norm: str | None = None,
        seed: int = 0,
    ) -> None:
        if variant not in self.VARIANTS:
            raise ValueError(
                f"unknown sign-symmetry variant {variant!r}; choose one of {self.VARIANTS}"
            )
        super().__init__(scale=scale, norm=norm, seed=seed)
        self.variant = variant
        self.distribution = _check_distribution(distribution)
        self.name = {"usf": "uSF", "frsf": "frSF", "brsf": "brSF"}[variant]
        self.buffers = {"usf": (), "frsf": (FEEDBACK_MAGNITUDE,), "brsf": (FEEDBACK_STREAM,)}[
            variant
        ]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(variant={self.variant!r}, distribution={self.distribution!r}, "
            f"scale={self.scale!r}, norm={self.norm!r}, seed={self.seed})"
        )

    def _setup(self, layer: _Layer, weight: torch.Tensor) -> None:
        if self.variant == "frsf":
            seed = layer_seed(self.seed, layer.index)
            magnitude = _unit_draw(self.distribution, weight, seed).abs() * layer.scale
            layer.module.register_buffer(FEEDBACK_MAGNITUDE, magnitude)
        elif self.variant == "brsf":
            stream = [layer_seed(self.seed, layer.index), 0]
            layer.module.register_buffer(
                FEEDBACK_STREAM, torch.tensor(stream, dtype=torch.int64, device=weight.device)
            )

    def _feedback(self, layer: _Layer, weight: torch.Tensor, advance: bool) -> torch.Tensor:
        sign = torch.sign(weight)
        if self.variant == "usf":
            return sign * layer.scale
        if self.variant == "frsf":
            return sign * layer.module._buffers[FEEDBACK_MAGNITUDE]
        stream = layer.module._buffers[FEEDBACK_STREAM]
        cached = layer.cache
        if cached is not None and cached[0] == (id(stream), stream._version):
            base, step = cached[1:]
        else:  # read the buffer (one device sync) only after a load or a move
            base, step = (int(v) for v in stream.tolist())
        seed = layer_seed(base, step)
        if advance:
            stream[1] += 1
            step += 1
        layer.cache = ((id(stream), stream._version), base, step)
        return sign * _unit_draw(self.distribution, weight, seed).abs() * layer.scale


class uSF(SignSymmetry):
    """Uniform sign-concordant feedback: ``B^T = s * sign(W)`` (see :class:`SignSymmetry`)."""

    def __init__(self, scale: str | float = "init", norm: str | None = None) -> None:
        super().__init__("usf", scale=scale, norm=norm)


class frSF(SignSymmetry):
    """Fixed random-magnitude sign-concordant feedback: ``B^T = s |M| sign(W)``, ``M`` fixed."""

    def __init__(
        self,
        distribution: str = "gaussian",
        scale: str | float = "init",
        norm: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__("frsf", distribution, scale=scale, norm=norm, seed=seed)


class brSF(SignSymmetry):
    """Batchwise random-magnitude sign-concordant feedback: a new ``M`` every training call."""

    def __init__(
        self,
        distribution: str = "gaussian",
        scale: str | float = "init",
        norm: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__("brsf", distribution, scale=scale, norm=norm, seed=seed)


class KolenPollack(FA):
    """Kolen-Pollack: ``B`` starts random and receives exactly ``W``'s update, so ``W - B^T -> 0``.

    Akrout et al.'s rule with SGD and weight decay ``lambda`` is
    ``dW = -eta (delta h^T) - eta lambda W`` and ``dB^T = -eta (delta h^T) - eta lambda B^T``,
    hence ``W - B^T`` shrinks by ``(1 - eta lambda)`` per step whatever the gradients.

    How it works in a plain ``loss.backward(); opt.step()`` loop: while applied, the rule holds
    global ``torch.optim`` step hooks. Before a step of any optimizer that holds a converted
    layer's weight, it notes ``D = W - B^T``; after it, it sets
    ``B^T = W_new - (1 - lr * weight_decay) D`` with ``lr`` and ``weight_decay`` of that
    parameter's group. So ``B^T`` receives ``W``'s update with ``W``'s decay term swapped for its
    own: exactly the rule above for SGD without momentum, and for any optimizer (momentum, Adam,
    AdamW) the same geometric decay of ``W - B^T``. Without weight decay ``W - B^T`` stays at its
    initial value (a warning says so once). For a hand-written update (no ``torch.optim``), call
    :meth:`step` after it.

    References:
        Akrout et al., "Deep Learning without Weight Transport", NeurIPS 2019.
        Kolen, Pollack, "Backpropagation without weight transport", ICNN 1994.
    """

    name = "KP"

    def _install(self, model: nn.Module, binding: _Binding) -> list[Any]:
        by_param = {id(p): layer for layer in binding.layers for p in layer.weight_params}
        pending: dict[int, tuple[_Layer, torch.Tensor, float]] = {}
        warned = [False]

        def before(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            pending.clear()
            for group in optimizer.param_groups:
                for param in group["params"]:
                    layer = by_param.get(id(param))
                    if layer is None or id(layer) in pending:
                        continue
                    decay = float(group.get("weight_decay", 0.0) or 0.0) * float(group["lr"])
                    with torch.no_grad():
                        gap = layer.module.weight.detach() - layer.module._buffers[FEEDBACK_WEIGHT]
                    pending[id(layer)] = (layer, gap, decay)
            if pending and not warned[0] and all(d == 0 for _, _, d in pending.values()):
                warned[0] = True
                warnings.warn(
                    "Kolen-Pollack aligns B with W only through weight decay, and this optimizer "
                    "has weight_decay=0: W - B^T will stay at its initial value",
                    stacklevel=3,
                )

        def after(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            with torch.no_grad():
                for layer, gap, decay in pending.values():
                    feedback = layer.module._buffers[FEEDBACK_WEIGHT]
                    feedback.copy_(layer.module.weight.detach() - (1.0 - decay) * gap)
            pending.clear()

        from torch.optim.optimizer import (
            register_optimizer_step_post_hook,
            register_optimizer_step_pre_hook,
        )

        return [register_optimizer_step_pre_hook(before), register_optimizer_step_post_hook(after)]

    def step(self, model: nn.Module, lr: float, weight_decay: float = 0.0) -> None:
        """Akrout's SGD update of every ``B^T`` from the layers' current ``.grad``.

        ``B^T <- B^T - lr * dW - lr * weight_decay * B^T``: for a hand-written SGD update of the
        weights; ``torch.optim`` optimizers need no call (see the class doc).
        """
        with torch.no_grad():
            for layer in self._binding(model).layers:
                grad = layer.module.weight.grad
                if grad is None:
                    continue
                feedback = layer.module._buffers[FEEDBACK_WEIGHT]
                feedback.mul_(1.0 - lr * weight_decay).sub_(grad, alpha=lr)


class WeightMirror(FA):
    """Weight mirror: ``B`` starts random and is learnt from noise in a separate mirror phase.

    One mirror step, for each converted layer on its own: inject noise ``x ~ N(0, sigma^2)`` at the
    layer's input, take ``y = W x`` (no bias, no nonlinearity), and update
    ``B <- (1 - eta lambda) B + eta x y^T / n``. Since ``E[x y^T] = sigma^2 W^T``, ``B`` tends to
    ``sigma^2 W^T / lambda``; the default ``lambda = sigma^2`` makes it tend to ``W^T``. For a
    convolution, ``x`` is a noise patch of the kernel's receptive field, so ``y`` is one pixel and
    ``x y^T`` is the kernel-shaped correlation. Call :meth:`mirror` between training steps (e.g.
    once after every optimizer step), without grad.

    References:
        Akrout et al., "Deep Learning without Weight Transport", NeurIPS 2019.
    """

    name = "WM"

    @torch.no_grad()
    def mirror(
        self,
        model: nn.Module,
        steps: int = 1,
        batch_size: int = 64,
        noise_std: float = 1.0,
        lr: float = 0.1,
        weight_decay: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        """Runs ``steps`` mirror steps on every converted layer (see the class doc).

        Args:
            model: a model this rule is applied to.
            steps: mirror steps.
            batch_size: noise samples ``n`` per step.
            noise_std: ``sigma``.
            lr: ``eta``.
            weight_decay: ``lambda``; default ``sigma^2`` (``B -> W^T``).
            generator: CPU generator for the noise (default: the global RNG).
        """
        if steps < 0 or batch_size < 1 or noise_std <= 0 or lr <= 0:
            raise ValueError(
                "mirror needs steps >= 0, batch_size >= 1, noise_std > 0 and lr > 0; got "
                f"steps={steps}, batch_size={batch_size}, noise_std={noise_std}, lr={lr}"
            )
        decay = noise_std**2 if weight_decay is None else float(weight_decay)
        for _ in range(steps):
            for layer in self._binding(model).layers:
                module = layer.module
                weight = module.weight.detach()
                feedback = module._buffers[FEEDBACK_WEIGHT]
                if layer.kind == "linear":
                    shape = (batch_size, weight.shape[1])
                else:
                    field_size = [
                        d * (k - 1) + 1
                        for d, k in zip(module.dilation, weight.shape[2:], strict=True)
                    ]
                    shape = (batch_size, weight.shape[1] * module.groups, *field_size)
                noise = torch.randn(shape, generator=generator, dtype=torch.float64)
                noise = (noise * noise_std).to(dtype=weight.dtype, device=weight.device)
                if layer.kind == "linear":
                    correlation = linear_weight_grad(noise, noise @ weight.T)
                else:
                    dims = weight.dim() - 2
                    conv = ((1,) * dims, (0,) * dims, tuple(module.dilation), module.groups)
                    output = conv_nd(noise, weight, None, conv)
                    mask = (False, True, False)
                    _, correlation, _ = conv_backward(output, noise, weight, conv, mask)
                feedback.mul_(1.0 - lr * decay).add_(
                    correlation.to(feedback.dtype), alpha=lr / batch_size
                )
