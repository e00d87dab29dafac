"""Layer-wise feedback: FA, sign-symmetric feedback (uSF, frSF, brSF), Kolen-Pollack, weight mirror.

Every rule of this family keeps the forward pass and the local weight gradient of each weight
layer, and changes one thing in its backward pass: the error reaches the layer's input through a
feedback matrix ``B`` of the shape of ``W^T`` instead of ``W^T`` itself:

* BP:  ``delta_l = (W_{l+1}^T delta_{l+1}) * f'(a_l)``
* any layer-wise rule: ``delta_l = (B_{l+1} delta_{l+1}) * f'(a_l)``, ``dW_l = delta_l h_{l-1}^T``

The rules differ only in ``B`` (``s`` is the scale, ``M`` a random matrix, see ``scale`` below):

========================= ========================================== ===============================
rule                      ``B^T`` (the layout of ``W``)              state per layer
========================= ========================================== ===============================
:class:`FA`               ``s * R``, ``R`` fixed random              buffer ``weight_feedback``
:class:`uSF`              ``s * sign(W)``                            none
:class:`frSF`             ``s * |M| * sign(W)``, ``M`` fixed         buffer ``feedback_magnitude``
                                                                     (``s|M|``)
:class:`brSF`             ``s * |M_t| * sign(W)``, a new ``M_t``     buffer ``feedback_stream``
                          whenever ``W`` has changed (once per       (``k``, ``t``)
                          optimizer step, not per micro-batch)
:class:`KolenPollack`     starts as FA; a **parameter** stepped by   parameter ``weight_feedback``
                          the model's optimizer from ``W``'s raw
                          local gradient ``delta h^T``
:class:`WeightMirror`     starts as FA; learnt from noise in an      buffer ``weight_feedback``
                          explicit mirror phase (:meth:`mirror`)
========================= ========================================== ===============================

``B^T`` is always stored in the layout of the module's own ``weight`` (``(out, in)`` for
``nn.Linear``, the kernel layout for convolutions, ``(in, out)`` for Hugging Face's ``Conv1D``,
``in_proj_weight``'s ``(3 E, E)`` for ``nn.MultiheadAttention``): replacing the weight by it in
the backward pass gives the rule's input gradient, and putting the weight itself there is
backpropagation (:meth:`LayerwiseFeedback.weights` gives the weight each feedback pairs with).

Seeds: layer ``i`` (in ``named_modules`` order of the converted layers) draws with
``k = layer_seed(seed, i)`` (:func:`layer_seed`). FA, frSF, KP and weight mirror draw once, at
``apply``, through :func:`feedback_alignment.feedback.draw` (float64 on the CPU, so a seed gives the
same feedback on every machine). brSF's draw number ``t`` is made on the weight's device and in
its dtype by a ``torch.Generator`` of that device seeded with ``layer_seed(k, t)``
(:func:`stream_draw`); ``(k, t)`` is in ``state_dict``, so every DDP rank and a resumed checkpoint
make the same draws (the same across CPU and GPU is not promised).

Scale ``s``: ``"init"`` (default) makes the entries of ``B`` have the standard deviation of
PyTorch's default initialisation of ``W``, ``1/sqrt(3 fan_in)`` (BioTorch's uSF scale), for every
distribution (each draw has unit standard deviation: uniform draws are scaled by ``sqrt(3)``); a
number is used as it is. ``norm="match"`` (feedback-norm rescaling) rescales ``B`` at every call
so that ``||B||_F = ||W||_F``, which makes the scale irrelevant. [unverified: Moskovitz et al. 2018
match feedback to forward norms; the exact recipe here is ours]

Cost: uSF, frSF and brSF keep their kernel (``sign(W)``, ``|M| sign(W)``) in one tensor per layer,
re-formed in place only when ``W`` has changed (a new version of its parameters) and scaled inside
the backward pass, so gradient-accumulation micro-batches and repeated calls reuse it and a step
allocates nothing for it. A layer whose input needs no gradient (the bottom layer) forms no kernel
at all (brSF's stream still counts its draw, so the draws do not depend on it). brSF's position
in its stream is kept on the host and re-read from the buffer only after ``load_state_dict``.

How a layer is converted: its ``forward`` is replaced by an instance attribute that calls
:class:`~feedback_alignment.functional.LinearFeedbackFn` or
:class:`~feedback_alignment.functional.ConvFeedbackFn` with the module's own ``weight`` and
``bias``: the very same ``Parameter`` objects (an optimizer built before ``apply`` keeps working;
Kolen-Pollack's new parameters need one built after), forward hooks of the module still run, and
weight parametrizations (e.g. :class:`feedback_alignment.optim.NormConstraint`) still apply.
``remove`` deletes the attribute and the feedback state: the module is exactly what it was.
Without grad (``torch.no_grad``, evaluation) the module's own forward runs. The binding lives on
the model, so ``copy.deepcopy`` and pickling give a model that trains with its own feedback.

Layers converted (:data:`CONVERTED_LAYERS`): ``nn.Linear`` (any leading axes), ``nn.Conv1d``,
``nn.Conv2d``, ``nn.Conv3d`` (stride, padding incl. ``"same"`` and non-zero padding modes,
dilation, groups), Hugging Face ``transformers.pytorch_utils.Conv1D`` (GPT-2's ``y = x W + b``,
``W`` of shape ``(in, out)``), PyG's ``torch_geometric.nn.dense.linear.Linear`` (once its lazy
weight exists) and ``nn.MultiheadAttention`` with a packed ``in_proj_weight`` (its forward is
replaced by the same attention written out, so that the query/key/value projections get
feedback; ``out_proj`` is an ``nn.Linear`` of its own; ``kdim``/``vdim`` different from
``embed_dim``, ``add_bias_kv`` and ``add_zero_attn`` are refused). Layers that learn locally
(:data:`LOCAL_TYPES` and :data:`LOCAL_LAYERS`: normalisation, embeddings, ``nn.PReLU``, torchfm's
``FeaturesLinear``, PyG's ``GCNConv`` whose weight is a converted PyG ``Linear`` and whose own
parameter is an additive bias) transport no weight matrix in their backward and keep their
ordinary gradients. Any other module holding parameters (``nn.LSTM``, ``nn.ConvTranspose2d``,
PyG's ``GATConv``, custom layers) is refused at ``apply`` time, by its path and type, with the
reason and the remedy (``exclude=[path]``).

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

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from feedback_alignment.feedback import (
    DISTRIBUTIONS,
    check_scale,
    check_seed,
    derive_seed,
    draw,
)
from feedback_alignment.functional import (
    ConvFeedbackFn,
    LinearFeedbackFn,
    Scale,
    conv_backward,
    conv_nd,
    linear_weight_grad,
)
from feedback_alignment.rules.base import (
    BoundRule,
    FeedbackResetWarning,
    refuse_compiled_wrapper,
    refuse_reverse_transform,
)

log = logging.getLogger(__name__)

FEEDBACK_WEIGHT = "weight_feedback"
"""``B^T`` (``W``'s layout) on each converted layer: a buffer of FA and weight mirror, a parameter
of Kolen-Pollack."""
FEEDBACK_MAGNITUDE = "feedback_magnitude"
"""Buffer holding frSF's fixed ``s|M|`` (``W``'s shape) on each converted layer."""
FEEDBACK_STREAM = "feedback_stream"
"""Buffer holding brSF's stream ``(k, t)`` (int64 pair) on each converted layer: ``t`` draws were
made; the next uses ``layer_seed(k, t)`` with ``k = layer_seed(seed, i)``."""


LOCAL_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.Embedding,
    nn.EmbeddingBag,
    nn.PReLU,
)
if hasattr(nn, "RMSNorm"):
    LOCAL_TYPES = (*LOCAL_TYPES, nn.RMSNorm)

LOCAL_LAYERS: dict[str, str] = {
    "torchfm.layer.FeaturesLinear": (
        "an embedding of integer feature indices plus a bias: no error flows to its input, so its "
        "backward carries no weight matrix"
    ),
    "torch_geometric.nn.conv.gcn_conv.GCNConv": (
        "its own parameter is a bias added to the output; its weight is a PyG Linear (``lin``), "
        "converted, and the propagation over the graph has no parameters"
    ),
}
"""Layer classes of optional libraries (by qualified name; the exact type, not subclasses) that
learn by their ordinary local gradient: their backward transports no weight matrix (besides
:data:`LOCAL_TYPES` of torch.nn, subclasses included)."""

SCALES = ("init",)
_SQRT3 = math.sqrt(3.0)
_UNIT_STD = {"gaussian": 1.0, "uniform": 1.0 / _SQRT3, "rademacher": 1.0}
"""Standard deviation of :func:`feedback_alignment.feedback.draw`'s unit-scale draws."""


class UnsupportedLayerError(ValueError):
    """A module of the model cannot be trained by a layer-wise rule (raised by ``apply``)."""


def layer_seed(seed: int, index: int, step: int = 0) -> int:
    """The seed of layer ``index``'s feedback draw (and of brSF's draw number ``step``).

    A 63-bit integer from ``blake2b("seed/index/step")``: the same on every machine and process.
    """
    return derive_seed(int(seed), int(index), int(step))


def init_std(weight: torch.Tensor, kind: str = "linear") -> float:
    """``1/sqrt(3 fan_in)``: the std of PyTorch's default ``nn.Linear``/``nn.Conv`` init.

    ``fan_in`` is ``weight[0].numel()``, or ``weight.shape[0]`` for a ``(in, out)`` weight
    (``kind="linear_in_out"``, Hugging Face's ``Conv1D``): :attr:`LayerKind.fan_in` of the kind.
    """
    return 1.0 / math.sqrt(3.0 * KINDS[kind].fan_in(weight))


def stream_draw(
    distribution: str, like: torch.Tensor, seed: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """brSF's unit-std draw of ``like``'s shape, on its device and in its dtype, from ``seed``.

    ``torch.Generator(like.device).manual_seed(seed)``, then ``normal_()`` (gaussian),
    ``uniform_(-sqrt(3), sqrt(3))`` (uniform) or ``2 * bernoulli_(1/2) - 1`` (rademacher), written
    into ``out`` when given (same shape, dtype and device) so that nothing is allocated.
    """
    generator = torch.Generator(device=like.device).manual_seed(int(seed))
    values = torch.empty_like(like, memory_format=torch.contiguous_format) if out is None else out
    if distribution == "gaussian":
        return values.normal_(generator=generator)
    if distribution == "uniform":
        return values.uniform_(-_SQRT3, _SQRT3, generator=generator)
    return values.bernoulli_(0.5, generator=generator).mul_(2.0).sub_(1.0)


@dataclass
class _Layer:
    """One converted layer: where it is, what it is, and the rule's per-layer constants."""

    path: str
    module: nn.Module
    kind: LayerKind  # how the layer is converted (its entry of CONVERTED_LAYERS)
    index: int
    base: type[nn.Module]  # the converted class in the module's MRO (whose forward it keeps)
    scale: float = 1.0
    cache: Any = None  # a sign-symmetric rule's kernel for the weight version last seen
    seen: tuple | None = None  # KP: (W's version, B's identity and version) at the last call

    @property
    def weight_name(self) -> str:
        """The attribute holding ``W``: ``in_proj_weight`` for ``nn.MultiheadAttention``."""
        return self.kind.weight_name

    @property
    def weight(self) -> torch.Tensor:
        return getattr(self.module, self.weight_name)


class _Binding:
    """One rule applied to one model: the converted layers and the measurement state."""

    def __init__(self, rule: LayerwiseFeedback, layers: list[_Layer]) -> None:
        self.rule = rule
        self.layers = layers
        self.mode = "rule"  # or "backprop"
        self.recorders: list[list[tuple[str, torch.Tensor]]] = []
        self.calls: dict[str, int] = {}
        self.warned: set[str] = set()
        self.load_hook: Any = None  # the model's load_state_dict pre-hook (rules with buffers)

    def feedback_keys(self, model: nn.Module) -> list[str]:
        """The ``state_dict`` keys the rule adds to ``model`` (relative to it), every path of a
        shared layer included."""
        converted = {id(layer.module) for layer in self.layers}
        keys = []
        for path, module in model.named_modules(remove_duplicate=False):
            if id(module) not in converted:
                continue
            for name in self.rule.buffers:
                if module._buffers.get(name, module._parameters.get(name)) is not None:
                    keys.append(f"{path}.{name}" if path else name)
        return keys

    def before_load(self, model: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
        """``load_state_dict`` pre-hook of the model: feedback that the checkpoint lacks (a plain
        checkpoint, :func:`feedback_alignment.checkpoints.plain_state_dict`) is regenerated as
        ``apply`` made it, from the rule's seed, so a strict load succeeds; feedback in the
        checkpoint is loaded as usual. Learned feedback (KP, weight mirror) starts afresh, with
        a :class:`FeedbackResetWarning`. Only for a layer whose parameters the checkpoint holds:
        a partial checkpoint (``strict=False``, other layers' weights) keeps the layer's feedback
        in use, reported missing."""
        fresh: dict[int, dict[str, torch.Tensor]] = {}
        reset: list[str] = []
        by_module = {id(layer.module): layer for layer in self.layers}
        for path, module in model.named_modules(remove_duplicate=False):
            layer = by_module.get(id(module))
            if layer is None:
                continue
            here = f"{prefix}{path}." if path else prefix
            own = [n for n, _ in module.named_parameters() if n not in self.rule.buffers]
            if not all(here + n in state_dict for n in own):
                continue  # the checkpoint does not hold this layer: keep its feedback
            for name in self.rule.buffers:
                key = here + name
                current = module._buffers.get(name, module._parameters.get(name))
                if current is None or key in state_dict:
                    continue
                if id(module) not in fresh:
                    with torch.no_grad():
                        fresh[id(module)] = self.rule._fresh_state(layer, layer.weight.detach())
                state_dict[key] = fresh[id(module)][name]
                if self.rule.learns_feedback:
                    reset.append(key)
        if reset:
            warnings.warn(
                f"{self.rule.name}: the checkpoint has no learned feedback for {len(reset)} "
                f"layer(s) ({', '.join(reset[:3])}{', ...' if len(reset) > 3 else ''}): it starts "
                "afresh from the rule's initial draw (seed "
                f"{self.rule.seed}). Save rule state with model.state_dict() to keep it",
                FeedbackResetWarning,
                stacklevel=3,
            )


def _weight_parameters(module: nn.Module, name: str = "weight") -> list[torch.Tensor]:
    """The parameters that ``module.<name>`` is computed from (itself unless parametrized)."""
    if parametrize.is_parametrized(module, name):
        return list(getattr(module.parametrizations, name).parameters())
    param = module._parameters.get(name)
    return [param if param is not None else getattr(module, name)]


def _weight_version(module: nn.Module, name: str = "weight") -> tuple:
    """Changes whenever ``module.<name>`` may have changed: the storage and in-place version of
    every parameter it is computed from (an optimizer step bumps the version)."""
    return tuple((p.data_ptr(), p._version, p.dtype) for p in _weight_parameters(module, name))


class LayerwiseFeedback(BoundRule):
    """Base class of the layer-wise rules (see the module doc for the equations).

    Subclasses say how ``B^T`` is made (:meth:`_setup` registers per-layer state, :meth:`_feedback`
    returns ``(kernel, scale)`` with ``B^T = scale * kernel`` for one forward call).

    Args:
        scale: ``"init"`` (entries with the std of the default init of ``W``, ``1/sqrt(3 fan_in)``)
            or a number.
        norm: ``None``, or ``"match"`` to rescale ``B`` to ``||B||_F = ||W||_F`` at every call.
        seed: seed of the feedback draws (see :func:`layer_seed`).
    """

    name = "layerwise"
    family = "layerwise"
    #: names this rule adds to each converted layer's ``state_dict`` (buffers, or KP's parameter)
    buffers: tuple[str, ...] = ()
    #: whether the feedback is learned during training (a checkpoint without it loses it)
    learns_feedback: bool = False

    def __init__(self, scale: str | float = "init", norm: str | None = None, seed: int = 0) -> None:
        owner = type(self).__name__
        if norm not in (None, "match"):
            raise ValueError(f"{owner}: unknown norm {norm!r}; choose None or 'match'")
        self.scale = check_scale(scale, SCALES, owner)
        self.norm = norm
        self.seed = check_seed(seed, owner)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale={self.scale!r}, norm={self.norm!r}, seed={self.seed})"

    # --- Rule API ------------------------------------------------------------------------------

    def apply(self, model: nn.Module, *, exclude: Sequence[str] = ()) -> nn.Module:
        """Converts every layer of :data:`CONVERTED_LAYERS` in ``model`` to this rule.

        Args:
            model: any ``nn.Module``; its layers keep their ``Parameter`` objects.
            exclude: module paths whose subtree keeps ordinary backprop (weight transport), e.g. an
                ``nn.LSTM`` the rule cannot convert.

        Raises:
            UnsupportedLayerError: modules that hold parameters but cannot be converted (each named
                by path and type, with the reason and what to do), or nothing to convert.
            RuntimeError: a layer-wise rule is already applied to ``model``.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__}.apply expects an nn.Module, got {type(model)}")
        refuse_compiled_wrapper(model, type(self).__name__)
        if self._bound(model) is not None:
            self._attach(model, None)  # raises, naming the rule already applied
        layers = self._collect(model, exclude)
        binding = _Binding(self, layers)
        if self.buffers:
            hook = model._register_load_state_dict_pre_hook(binding.before_load, with_module=True)
            binding.load_hook = hook
        for layer in layers:
            weight = layer.weight
            layer.scale = self._scale_of(weight, layer.kind.name)
            self._setup(layer, weight.detach())
            if type(layer.module)._save_to_state_dict is not nn.Module._save_to_state_dict:
                # e.g. PyG's Linear writes its weight and bias only: save the feedback too
                layer.module.register_state_dict_post_hook(partial(_save_feedback, self.buffers))
        for layer in layers:
            layer.module.forward = partial(layer.kind.forward, binding, layer)
        self._attach(model, binding)
        return model

    def remove(self, model: nn.Module) -> nn.Module:
        binding = self._detach(model)
        if binding.load_hook is not None:
            binding.load_hook.remove()
        for layer in binding.layers:
            module = layer.module
            module.__dict__.pop("forward", None)
            for name in self.buffers:
                module._buffers.pop(name, None)
                module._parameters.pop(name, None)
            for hooks in (module._state_dict_hooks, module._load_state_dict_post_hooks):
                for key, hook in list(hooks.items()):
                    if getattr(hook, "func", None) in (_save_feedback, _forget_cache):
                        del hooks[key]
            pre_hooks = module._load_state_dict_pre_hooks
            for key, hook in list(pre_hooks.items()):
                if getattr(hook, "hook", None) is _upgrade_stream:
                    del pre_hooks[key]
        return model

    # --- inspection ----------------------------------------------------------------------------

    def points(self, model: nn.Module) -> list[str]:
        """Paths of the converted layers, in ``named_modules`` order: each is the point where
        its own ``B`` carries the signal."""
        return [layer.path for layer in self._binding(model).layers]

    def layers(self, model: nn.Module) -> list[str]:
        """Former name of :meth:`points` (deprecated, one release)."""
        warnings.warn(
            "rule.layers(model) is deprecated: call rule.points(model), the name both rule "
            "families use",
            FutureWarning,
            stacklevel=2,
        )
        return self.points(model)

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``W`` of every converted layer (what :meth:`feedback_matrices` pairs with ``B^T``):
        ``weight``, or ``in_proj_weight`` for ``nn.MultiheadAttention``; detached."""
        return {layer.path: layer.weight.detach() for layer in self._binding(model).layers}

    def feedback_matrices(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``B^T`` (the layout of each layer's ``weight``) of every converted layer, now.

        brSF gives the draw its next training call would use (without advancing the stream).
        """
        binding = self._binding(model)
        result = {}
        with torch.no_grad():
            for layer in binding.layers:
                kernel, scale = self._effective(layer, layer.weight.detach(), advance=False)
                result[layer.path] = kernel * scale
        return result

    # --- what subclasses define ----------------------------------------------------------------

    def _setup(self, layer: _Layer, weight: torch.Tensor) -> None:
        """Registers the layer's feedback state (called once per layer by ``apply``)."""

    def _fresh_state(self, layer: _Layer, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """The values of the names in :attr:`buffers` as ``apply`` creates them for ``layer``
        (a function of the seed, the layer's index and ``weight``'s shape): what a checkpoint
        without them loads."""
        return {}

    def _feedback(
        self, layer: _Layer, weight: torch.Tensor, advance: bool, needed: bool = True
    ) -> tuple[torch.Tensor, float]:
        """``(kernel, scale)`` with ``B^T = scale * kernel`` for one call, from the detached
        ``weight``; ``advance=False`` reads without changing any state (measurements).
        ``needed=False``: the layer's input does not require grad (the bottom layer), so no
        input gradient will be computed and the kernel may be a placeholder of its shape; state
        that counts calls (brSF's stream) must still advance as if it had been formed."""
        raise NotImplementedError

    def _before_forward(self, binding: _Binding, layer: _Layer) -> None:
        """Called at every training forward of a converted layer (KP checks its optimizer)."""

    # --- internals -----------------------------------------------------------------------------

    def _effective(
        self, layer: _Layer, weight: torch.Tensor, advance: bool, needed: bool = True
    ) -> tuple[torch.Tensor, Scale]:
        kernel, scale = self._feedback(layer, weight, advance, needed)
        if self.norm == "match" and needed:
            # ||scale' * kernel|| = ||W||, without a device sync (a 0-d tensor as the scale)
            norm = kernel.norm()
            scale = torch.where(norm > 0, weight.norm() / norm, torch.ones_like(norm) * scale)
        return kernel, scale

    def _scale_of(self, weight: torch.Tensor, kind: str) -> float:
        return init_std(weight, kind) if self.scale == "init" else float(self.scale)

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
        refused: list[str] = []
        for path, module in model.named_modules():
            if any(path == p or path.startswith(f"{p}.") or not p for p in exclude):
                continue  # kept on ordinary backprop
            if isinstance(module, parametrize.ParametrizationList) or ".parametrizations." in (
                f".{path}."
            ):
                continue  # the parameters behind a parametrized weight belong to their layer
            if any(not r or path.startswith(f"{r}.") for r in refused):
                continue  # inside a refused module: reported once, by the module
            problem = _problem(path, module, self)
            if problem:
                problems.append(problem)
                refused.append(path)
                continue
            spec = _converted_spec(module)
            if spec is not None:
                layers.append(_Layer(path, module, spec[1], len(layers), spec[0]))
        if problems:
            raise UnsupportedLayerError(
                f"{self.name} cannot train {len(problems)} module(s) of {type(model).__name__}:\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
        if not layers:
            raise UnsupportedLayerError(
                f"{type(model).__name__} has no layer {self.name} can convert ("
                + ", ".join(_short(name) for name in CONVERTED_LAYERS)
                + ")"
            )
        return layers


def _short(qualname: str) -> str:
    module, _, cls = qualname.rpartition(".")
    if module.startswith("torch.nn.modules"):
        return f"nn.{cls}"
    return f"{module.split('.')[0]} {cls}"


def _qualnames(module: nn.Module) -> list[tuple[type, str]]:
    return [(cls, f"{cls.__module__}.{cls.__qualname__}") for cls in type(module).__mro__]


def layer_kind(module: nn.Module) -> str | None:
    """How a layer-wise rule converts ``module`` (the name of its :class:`LayerKind`, e.g.
    ``"linear"``), or ``None`` if it is not a converted type (it may still be local, or
    refused)."""
    spec = _converted_spec(module)
    return None if spec is None else spec[1].name


def _converted_spec(module: nn.Module) -> tuple[type[nn.Module], LayerKind] | None:
    """``(class, kind)``: the first class of ``module``'s MRO in :data:`CONVERTED_LAYERS`."""
    for cls, name in _qualnames(module):
        if name in CONVERTED_LAYERS:
            return cls, CONVERTED_LAYERS[name]
    return None


def _problem(path: str, module: nn.Module, rule: LayerwiseFeedback) -> str | None:
    """Why ``module`` cannot be trained by ``rule`` (``None`` when it can)."""
    label = f"{path or '<model>'!r} ({type(module).__name__})"
    spec = _converted_spec(module)
    if spec is not None:
        base = spec[0]
        if isinstance(module._parameters.get("weight"), nn.UninitializedParameter):
            return (
                f"{label} is a lazy layer whose weight is not created yet, so {rule.name} cannot "
                f"draw its feedback: run one forward pass before {rule.name}.apply(model)"
            )
        if type(module).forward is not base.forward:
            return (
                f"{label} overrides {base.__name__}.forward, which {rule.name} would bypass: "
                f"use a plain {base.__name__}, or exclude={[path]!r} to keep backprop there"
            )
        unsupported = spec[1].unsupported(module)
        if unsupported:
            return (
                f"{label} uses {', '.join(unsupported)}, which {rule.name}'s "
                f"{spec[1].name} forward does not implement ({spec[1].supports}): pass "
                f"exclude={[path]!r} to train it by ordinary backprop"
            )
        if "forward" in module.__dict__:
            return (
                f"{label} already has its forward replaced (a layer-wise rule is applied, or "
                f"another tool patched it), so {rule.name} cannot convert it: remove that first"
            )
        return None
    names = [name for _, name in _qualnames(module)]
    if isinstance(module, LOCAL_TYPES) or names[0] in LOCAL_LAYERS:  # exact type: a subclass
        return None  # of a listed layer may add parameters of its own
    own = [name for name, _ in module.named_parameters(recurse=False)]
    if own:
        return (
            f"{label} holds its own parameters ({', '.join(own)}) and uses them in a forward "
            f"that {rule.name} does not know, so it cannot tell whether the error reaches the "
            f"module's input through them (weight transport) nor replace that (converted: "
            f"{', '.join(_short(n) for n in CONVERTED_LAYERS)}; local: normalisation, "
            f"embeddings, PReLU, torchfm FeaturesLinear, PyG GCNConv): rebuild it from those "
            f"layers, or pass exclude={[path]!r} to train it (and carry the error through it) by "
            "ordinary backprop"
        )
    return None


def _save_feedback(
    names: tuple[str, ...], module: nn.Module, state_dict: dict, prefix: str, metadata: Any
) -> None:
    """``state_dict`` post-hook for layers whose ``_save_to_state_dict`` skips their buffers."""
    for name in names:
        value = module._buffers.get(name, module._parameters.get(name))
        if value is not None and prefix + name not in state_dict:
            state_dict[prefix + name] = value.detach()


NO_FINGERPRINT = -1
"""``feedback_stream[2]`` before any draw (the bits of a NaN: no sum of finite weights has them)."""


def _fingerprint(weight: torch.Tensor) -> torch.Tensor:
    """brSF's record of which weights its last draw belongs to: the bits of ``sum(W)`` in float64.

    Kept in ``feedback_stream[2]`` (written on the device, no sync), so that a run resumed from a
    checkpoint taken after a grad-enabled forward pass (validation without ``no_grad``) that
    already drew for the new weights reuses that draw, as the uninterrupted run does: the draw is
    keyed on the weight update, not on how many forward passes ran.
    """
    return weight.detach().sum(dtype=torch.float64).view(torch.int64)


def _upgrade_stream(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """``load_state_dict`` pre-hook: a ``feedback_stream`` saved before it held a fingerprint
    (shape ``(2,)``) loads as ``(k, t, NO_FINGERPRINT)``, which draws anew as it did then."""
    key = prefix + FEEDBACK_STREAM
    saved = state_dict.get(key)
    if isinstance(saved, torch.Tensor) and tuple(saved.shape) == (2,):
        state_dict[key] = torch.cat([saved, saved.new_tensor([NO_FINGERPRINT])])


def _forget_cache(layer: _Layer, module: nn.Module, incompatible_keys: Any) -> None:
    """``load_state_dict`` post-hook: the rule's per-layer memo is stale after a load."""
    layer.cache = None


def _converted_forward(binding: _Binding, layer: _Layer, inputs: torch.Tensor) -> torch.Tensor:
    """The forward of a converted layer: its own forward without grad or in backprop mode."""
    module = layer.module
    if binding.mode == "backprop" or not torch.is_grad_enabled():
        output = layer.base.forward(module, inputs)
    else:
        rule = binding.rule
        refuse_reverse_transform(f"the converted layer {layer.path!r}", rule.name)
        rule._before_forward(binding, layer)
        weight = module.weight
        with torch.no_grad():
            needed = inputs.requires_grad  # else no input gradient: the kernel is never read
            kernel, scale = rule._effective(layer, weight.detach(), advance=True, needed=needed)
        output = layer.kind.feedback_call(module, inputs, weight, kernel, scale)
    if binding.recorders:
        count = binding.calls.get(layer.path, 0)
        binding.calls[layer.path] = count + 1
        name = f"{layer.path}#{count}" if count else layer.path
        for record in binding.recorders:
            record.append((name, output))
    return output


def _attention_forward(
    binding: _Binding,
    layer: _Layer,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``nn.MultiheadAttention.forward`` with feedback in its input projection (and out_proj).

    The same computation as ``F.multi_head_attention_forward`` for packed projections without
    ``bias_k``/``add_zero_attn``, written out: ``q, k, v = x W_{q,k,v}^T + b`` through
    :class:`~feedback_alignment.functional.LinearFeedbackFn` with the matching rows of the
    feedback of ``in_proj_weight``; per head ``A = softmax(q k^T / sqrt(d) + mask)`` (dropout on
    ``A`` in training), ``o = A v``; the heads concatenated go through ``out_proj``, a converted
    ``nn.Linear``. Inside the attention (softmax, ``A v``) no weight matrix is crossed: ordinary
    local backprop. ``is_causal`` is the hint that ``attn_mask`` is the causal mask, as in torch.
    """
    module = layer.module
    if binding.mode == "backprop" or not torch.is_grad_enabled():
        return layer.base.forward(
            module,
            query,
            key,
            value,
            key_padding_mask=key_padding_mask,
            need_weights=need_weights,
            attn_mask=attn_mask,
            average_attn_weights=average_attn_weights,
            is_causal=is_causal,
        )
    if is_causal and attn_mask is None:
        raise RuntimeError("nn.MultiheadAttention: is_causal=True needs the causal attn_mask too")
    rule = binding.rule
    rule._before_forward(binding, layer)
    batched = query.dim() == 3
    if not batched:  # (T, E) -> (1, T, E)
        query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    elif not module.batch_first:  # (T, B, E) -> (B, T, E)
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    embed, heads = module.embed_dim, module.num_heads
    head_dim = embed // heads
    weight, bias = module.in_proj_weight, module.in_proj_bias
    with torch.no_grad():
        needed = query.requires_grad or key.requires_grad or value.requires_grad
        kernel, scale = rule._effective(layer, weight.detach(), advance=True, needed=needed)

    def project(x: torch.Tensor, part: int) -> torch.Tensor:  # (B, L, E) -> (B, H, L, d)
        rows = slice(part * embed, (part + 1) * embed)
        b = None if bias is None else bias[rows]
        y = LinearFeedbackFn.apply(x, weight[rows], b, kernel[rows], scale)
        return y.view(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)

    q, k, v = project(query, 0), project(key, 1), project(value, 2)
    batch, target, source = q.shape[0], q.shape[2], k.shape[2]
    mask = _additive_mask(attn_mask, q.dtype)
    if mask is not None and mask.dim() == 3:  # (B*H, T, S) or, unbatched, (H, T, S)
        mask = mask.view(batch, heads, target, source)
    padding = _additive_mask(key_padding_mask, q.dtype)
    if padding is not None:
        padding = padding.view(batch, 1, 1, source)
        mask = padding if mask is None else mask + padding
    dropout = module.dropout if module.training else 0.0
    weights = None
    if need_weights:
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(head_dim)  # (B, H, T, S)
        if mask is not None:
            scores = scores + mask
        weights = torch.softmax(scores, dim=-1)
        if dropout > 0.0:
            weights = F.dropout(weights, p=dropout)
        heads_out = weights @ v
        if average_attn_weights:
            weights = weights.mean(dim=1)
    else:
        heads_out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    output = module.out_proj(heads_out.transpose(1, 2).reshape(batch, target, embed))
    if not batched:
        output = output.squeeze(0)
        weights = None if weights is None else weights.squeeze(0)
    elif not module.batch_first:
        output = output.transpose(0, 1)
    return output, weights


def _additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (``True``: not attended) as ``-inf``/0, a float mask as it is."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
            mask, float("-inf")
        )
    return mask.to(dtype)


def _conv(
    module: nn.Module,
    inputs: torch.Tensor,
    weight: torch.Tensor,
    feedback: torch.Tensor,
    scale: Scale,
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
        scale,
    )
    return output.squeeze(0) if unbatched else output


def _fits(tensor: torch.Tensor, like: torch.Tensor) -> bool:
    return (
        tensor.shape == like.shape and tensor.dtype == like.dtype and tensor.device == like.device
    )


def _check_distribution(distribution: str) -> str:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
    return distribution


def _unit_draw(distribution: str, weight: torch.Tensor, seed: int) -> torch.Tensor:
    """A draw of ``weight``'s shape with unit standard deviation, on its device and dtype."""
    values = draw(distribution, tuple(weight.shape), seed, dtype=torch.float64)
    values = values / _UNIT_STD[distribution]
    return values.to(dtype=weight.dtype, device=weight.device)


# --- the kinds of converted layers --------------------------------------------------------------


def _linear_call(module: nn.Module, inputs: torch.Tensor, weight, kernel, scale: Scale):
    """``y = x W^T + b``, ``W`` of shape ``(out, in)``."""
    return LinearFeedbackFn.apply(inputs, weight, module.bias, kernel, scale)


def _linear_in_out_call(module: nn.Module, inputs: torch.Tensor, weight, kernel, scale: Scale):
    """``y = x W + b``, ``W`` of shape ``(in, out)`` (Hugging Face's ``Conv1D``)."""
    return LinearFeedbackFn.apply(inputs, weight.t(), module.bias, kernel.t(), scale)


def _no_call(module: nn.Module, *args: Any) -> torch.Tensor:
    raise AssertionError(f"{type(module).__name__} has a converted forward of its own")


def _linear_mirror(transposed: bool) -> Callable[..., torch.Tensor]:
    """The mirror correlation ``x y^T`` (summed over the noise) of a linear map, in ``W``'s
    layout; ``transposed``: ``W`` is stored ``(in, out)``."""

    def correlation(module, weight, batch_size, noise_std, generator) -> torch.Tensor:
        weight = weight.t() if transposed else weight  # (out, in)
        noise = _mirror_noise((batch_size, weight.shape[1]), noise_std, weight, generator)
        result = linear_weight_grad(noise, noise @ weight.T)
        return result.t() if transposed else result

    return correlation


def _conv_mirror(module, weight, batch_size, noise_std, generator) -> torch.Tensor:
    """A convolution's mirror correlation: noise patches of the kernel's receptive field, each
    giving one output pixel, correlated as the kernel gradient."""
    field = [d * (k - 1) + 1 for d, k in zip(module.dilation, weight.shape[2:], strict=True)]
    shape = (batch_size, weight.shape[1] * module.groups, *field)
    noise = _mirror_noise(shape, noise_std, weight, generator)
    dims = weight.dim() - 2
    conv = ((1,) * dims, (0,) * dims, tuple(module.dilation), module.groups)
    output = conv_nd(noise, weight, None, conv)
    _, correlation, _ = conv_backward(output, noise, weight, conv, (False, True, False))
    return correlation


def _mirror_noise(shape, noise_std: float, like: torch.Tensor, generator) -> torch.Tensor:
    noise = torch.randn(shape, generator=generator, dtype=torch.float64)
    return (noise * noise_std).to(dtype=like.dtype, device=like.device)


def _attention_unsupported(module: nn.Module) -> list[str]:
    return [
        what
        for what, present in (
            ("separate q/k/v projection weights (kdim or vdim != embed_dim)",
             not module._qkv_same_embed_dim),
            ("add_bias_kv=True", module.bias_k is not None),
            ("add_zero_attn=True", module.add_zero_attn),
        )
        if present
    ]  # fmt: skip


@dataclass(frozen=True)
class LayerKind:
    """How a layer-wise rule converts one class of layer: a new layer type is one entry of
    :data:`CONVERTED_LAYERS` (of an existing kind, or of a new one built from these fields).

    Attributes:
        name: the kind's name (``layer_kind(module)``).
        weight_name: the attribute holding ``W``.
        fan_in: ``W -> fan_in`` of PyTorch's default initialisation (``"init"`` scale).
        feedback_call: ``(module, inputs, W, kernel, scale) -> output``: the layer's forward through
            the feedback autograd Function (used by the generic converted forward).
        mirror_correlation: ``(module, W, n, sigma, generator) -> sum of x y^T`` over ``n`` noise
            samples, in ``W``'s layout (the weight mirror's estimate of ``sigma^2 W^T``).
        forward: the converted forward, ``(binding, layer, *args, **kwargs) -> output``.
        unsupported: ``module ->`` the options of this instance that the converted forward
            does not implement (refused at ``apply``), and ``supports`` what it does.
    """

    name: str
    weight_name: str
    fan_in: Callable[[torch.Tensor], int]
    feedback_call: Callable[..., torch.Tensor]
    mirror_correlation: Callable[..., torch.Tensor]
    forward: Callable[..., Any] = _converted_forward
    unsupported: Callable[[nn.Module], list[str]] = lambda module: []
    supports: str = ""

    def __reduce__(self) -> tuple:
        """Pickled (with a converted model) by name: the kinds are the entries of :data:`KINDS`."""
        return (_kind, (self.name,))

    def __deepcopy__(self, memo: dict) -> LayerKind:
        return self


def _kind(name: str) -> LayerKind:
    return KINDS[name]


KINDS: dict[str, LayerKind] = {
    kind.name: kind
    for kind in (
        LayerKind("linear", "weight", lambda w: w.shape[1], _linear_call, _linear_mirror(False)),
        LayerKind(
            "linear_in_out",
            "weight",
            lambda w: w.shape[0],
            _linear_in_out_call,
            _linear_mirror(True),
        ),
        LayerKind("conv", "weight", lambda w: w[0].numel(), _conv, _conv_mirror),
        LayerKind(
            "attention",
            "in_proj_weight",
            lambda w: w.shape[1],
            _no_call,
            _linear_mirror(False),
            forward=_attention_forward,
            unsupported=_attention_unsupported,
            supports="packed in_proj_weight only",
        ),
    )
}
"""The kinds of converted layers by name: ``"linear"`` ``y = x W^T + b`` with ``W`` of shape
``(out, in)``; ``"linear_in_out"`` ``y = x W + b`` with ``W`` of shape ``(in, out)``; ``"conv"`` an
N-d convolution; ``"attention"`` the packed input projection ``in_proj_weight`` of
``nn.MultiheadAttention`` (its ``out_proj`` is an ``nn.Linear``, converted on its own)."""

CONVERTED_LAYERS: dict[str, LayerKind] = {
    "torch.nn.modules.linear.Linear": KINDS["linear"],
    "torch.nn.modules.conv.Conv1d": KINDS["conv"],
    "torch.nn.modules.conv.Conv2d": KINDS["conv"],
    "torch.nn.modules.conv.Conv3d": KINDS["conv"],
    "transformers.pytorch_utils.Conv1D": KINDS["linear_in_out"],
    "torch_geometric.nn.dense.linear.Linear": KINDS["linear"],
    "torch.nn.modules.activation.MultiheadAttention": KINDS["attention"],
}
"""Layer classes (by qualified name, so optional libraries are never imported) whose backward a
layer-wise rule replaces, with their :class:`LayerKind`. Subclasses are converted if they keep the
forward."""


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
    key = "fa"
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

    def _initial(self, layer: _Layer, weight: torch.Tensor) -> torch.Tensor:
        seed = layer_seed(self.seed, layer.index)
        return _unit_draw(self.distribution, weight, seed) * layer.scale

    def _fresh_state(self, layer: _Layer, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        return {FEEDBACK_WEIGHT: self._initial(layer, weight)}

    def _setup(self, layer: _Layer, weight: torch.Tensor) -> None:
        layer.module.register_buffer(FEEDBACK_WEIGHT, self._initial(layer, weight))

    def _feedback(
        self, layer: _Layer, weight: torch.Tensor, advance: bool, needed: bool = True
    ) -> tuple[torch.Tensor, float]:
        return layer.module._buffers[FEEDBACK_WEIGHT], 1.0


@dataclass
class _SignCache:
    """A sign-symmetric rule's kernel for one version of ``W`` (and of the rule's buffer)."""

    weight: tuple  # _weight_version of the layer the kernel belongs to
    state: tuple  # identity (frSF: and _version) of the rule's buffer then
    kernel: torch.Tensor | None  # storage reused for the next version (None: none yet)
    filled: bool = False  # whether ``kernel`` holds this version's kernel
    stream: tuple[int, int] = (0, 0)  # brSF: (k, draws made), after this version's draw
    draw: int = 0  # brSF: the draw number of this version
    sign: torch.Tensor | None = None  # brSF: storage for sign(W)


class SignSymmetry(LayerwiseFeedback):
    """Sign-symmetric feedback: ``B^T = s * |M| * sign(W)``, agreeing with ``W`` in sign only.

    Variants (Moskovitz et al. 2018): ``"usf"`` ``M = 1`` (uniform); ``"frsf"`` ``M`` fixed random
    (buffer ``feedback_magnitude`` holds ``s|M|``); ``"brsf"`` a new ``M_t`` for each new value of
    ``W`` (the first training call after an optimizer step; micro-batches of one step share it),
    drawn by :func:`stream_draw` from ``layer_seed(k, t)`` with ``(k, t)`` the buffer
    ``feedback_stream`` (``k = layer_seed(seed, i)``, ``t`` the draws made so far). A layer whose
    weight never changes keeps its draw.

    Args:
        variant: ``"usf"``, ``"frsf"`` or ``"brsf"``.
        distribution: of ``M`` (``"gaussian"``, ``"uniform"``, ``"rademacher"``), with unit std
            before the absolute value.
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

    def _fresh_state(self, layer: _Layer, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """frSF: ``s|M|``; brSF: the stream at its start, ``(k, 0, NO_FINGERPRINT)``."""
        if self.variant == "frsf":
            seed = layer_seed(self.seed, layer.index)
            magnitude = _unit_draw(self.distribution, weight, seed).abs() * layer.scale
            return {FEEDBACK_MAGNITUDE: magnitude}
        if self.variant == "brsf":
            stream = [layer_seed(self.seed, layer.index), 0, NO_FINGERPRINT]
            return {FEEDBACK_STREAM: torch.tensor(stream, dtype=torch.int64, device=weight.device)}
        return {}

    def _setup(self, layer: _Layer, weight: torch.Tensor) -> None:
        layer.cache = None
        for name, value in self._fresh_state(layer, weight).items():
            layer.module.register_buffer(name, value)
        if self.variant == "brsf":
            layer.module._register_load_state_dict_pre_hook(_upgrade_stream, with_module=True)
            # the position in the stream is kept on the host and re-read from the buffer only
            # after a load (no device sync per step, also when DDP re-broadcasts the buffer)
            layer.module.register_load_state_dict_post_hook(partial(_forget_cache, layer))

    def _feedback(
        self, layer: _Layer, weight: torch.Tensor, advance: bool, needed: bool = True
    ) -> tuple[torch.Tensor, float]:
        if self.variant == "brsf":
            return self._stream_kernel(layer, weight, advance, needed)
        return self._fixed_kernel(layer, weight, advance, needed)

    def _cached(self, layer: _Layer, weight: torch.Tensor) -> tuple[_SignCache | None, tuple]:
        """The layer's kernel cache (dropped if the layer was moved or cast) and ``W``'s version."""
        version = _weight_version(layer.module, layer.weight_name)
        cache: _SignCache | None = layer.cache
        if cache is not None and cache.kernel is not None and not _fits(cache.kernel, weight):
            cache = layer.cache = None
        return cache, version

    def _fixed_kernel(
        self, layer: _Layer, weight: torch.Tensor, advance: bool, needed: bool
    ) -> tuple[torch.Tensor, float]:
        """uSF ``sign(W)`` (scale ``s``) and frSF ``s|M| sign(W)`` (``s`` in the buffer): formed
        again only when ``W`` (or frSF's buffer) has a new version."""
        module = layer.module
        magnitude = module._buffers.get(FEEDBACK_MAGNITUDE)
        scale = 1.0 if self.variant == "frsf" else layer.scale
        if torch.compiler.is_compiling():
            # traced: the kernel is part of the compiled graph (the cache keys on storage
            # pointers, which TorchDynamo cannot guard)
            kernel = torch.sign(weight)
            return (kernel if magnitude is None else kernel * magnitude), scale
        state_key = () if magnitude is None else (id(magnitude), magnitude._version)
        cache, version = self._cached(layer, weight)
        fresh = cache is not None and cache.weight == version and cache.state == state_key
        if fresh and cache.filled:
            return cache.kernel, scale
        if not needed:
            return weight, scale  # a placeholder: the bottom layer reads no kernel
        reuse = cache.kernel if (advance and cache is not None) else None
        kernel = torch.sign(weight) if reuse is None else torch.sign(weight, out=reuse)
        if magnitude is not None:
            kernel.mul_(magnitude)
        if advance:
            layer.cache = _SignCache(version, state_key, kernel, filled=True)
        return kernel, scale

    def _stream_kernel(
        self, layer: _Layer, weight: torch.Tensor, advance: bool, needed: bool
    ) -> tuple[torch.Tensor, float]:
        """brSF ``s|M_t| sign(W)``: which draw ``t`` belongs to this version of ``W``. The stream
        buffer is read (one device sync) only after a load or a move, never in a training step."""
        state = layer.module._buffers[FEEDBACK_STREAM]
        scale = layer.scale
        state_key = (id(state),)  # the host keeps the position; a load or a move resets it
        cache, version = self._cached(layer, weight)
        current = cache is not None and cache.weight == version and cache.state == state_key
        if current:
            base, draw = cache.stream[0], cache.draw
            if cache.filled:
                return cache.kernel, scale
        else:
            if cache is not None and cache.state == state_key:
                base, draw = cache.stream
            else:  # after a load or a move: does the last draw belong to these weights?
                base, draw, last = (int(v) for v in state.tolist())
                if advance and draw > 0 and last == int(_fingerprint(weight)):
                    layer.cache = _SignCache(
                        version, state_key, kernel=None, stream=(base, draw), draw=draw - 1
                    )
                    return self._stream_kernel(layer, weight, advance, needed)
            if advance:
                state[1] += 1
                state[2] = _fingerprint(weight)
                old = cache
                layer.cache = cache = _SignCache(
                    version, state_key, stream=(base, draw + 1), draw=draw,
                    kernel=None if old is None else old.kernel,
                    sign=None if old is None else old.sign,
                )  # fmt: skip
        if not needed:
            return weight, scale  # a placeholder: the bottom layer reads no kernel
        seed = layer_seed(base, draw)
        if not advance:  # a measurement: fresh tensors, no state touched
            magnitude = stream_draw(self.distribution, weight, seed)
            return magnitude.abs_().mul_(torch.sign(weight)), scale
        magnitude = stream_draw(self.distribution, weight, seed, out=cache.kernel)
        sign = torch.sign(weight) if cache.sign is None else torch.sign(weight, out=cache.sign)
        cache.kernel, cache.sign, cache.filled = magnitude.abs_().mul_(sign), sign, True
        return cache.kernel, scale


class uSF(SignSymmetry):
    """Uniform sign-concordant feedback: ``B^T = s * sign(W)`` (see :class:`SignSymmetry`).

    ``seed`` is accepted so that every rule is built alike; uSF draws nothing."""

    name = "uSF"
    key = "usf"

    def __init__(self, scale: str | float = "init", norm: str | None = None, seed: int = 0) -> None:
        super().__init__("usf", scale=scale, norm=norm, seed=seed)


class frSF(SignSymmetry):
    """Fixed random-magnitude sign-concordant feedback: ``B^T = s |M| sign(W)``, ``M`` fixed."""

    name = "frSF"
    key = "frsf"

    def __init__(
        self,
        distribution: str = "gaussian",
        scale: str | float = "init",
        norm: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__("frsf", distribution, scale=scale, norm=norm, seed=seed)


class brSF(SignSymmetry):
    """Batchwise random-magnitude sign-concordant feedback: a new ``M`` for each new ``W``."""

    name = "brSF"
    key = "brsf"

    def __init__(
        self,
        distribution: str = "gaussian",
        scale: str | float = "init",
        norm: str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__("brsf", distribution, scale=scale, norm=norm, seed=seed)


class KolenPollack(FA):
    """Kolen-Pollack: ``B`` learns from the same local signal as ``W``, so ``W - B^T -> 0``.

    Akrout et al.'s rule with SGD and weight decay ``lambda`` is
    ``dW = -eta (delta h^T) - eta lambda W`` and ``dB^T = -eta (delta h^T) - eta lambda B^T``,
    hence ``W - B^T`` shrinks by ``(1 - eta lambda)`` per step whatever the gradients.

    How it works: ``B^T`` (``W``'s layout, starting as FA's draw) is a **parameter** of each
    converted layer, ``weight_feedback``. The layer's backward gives it the very signal ``W``
    receives, ``d(B^T) = delta h^T`` (a copy of ``W``'s raw local gradient, computed from
    ``delta`` and the layer input only), and the model's own optimizer steps it. So ``B`` is
    updated by the same kind of optimizer with the same hyperparameters from an identical signal
    (momentum and Adam transform identical gradients identically) and any weight decay acts on
    ``B``'s own value; nothing ever reads ``W``'s values or ``W``'s optimizer state (Adam's coupled
    weight decay puts ``W`` into that state). It holds for SGD with or without momentum, Adam,
    AdamW, gradient accumulation (both gradients accumulate), ``GradScaler`` (both gradients are
    unscaled, checked for infs and skipped together), DDP (an ordinary parameter gradient), and
    hand-written updates over ``model.parameters()``. A layer that gets no gradient in a step gets
    none for ``B`` either: with ``zero_grad(set_to_none=True)`` neither moves; with zeroed
    gradients each moves by its own decay (and momentum). No hook outside the model is installed.
    Under DDP, apply the rule before wrapping the model (DDP registers the parameters it holds).
    Memory: each ``B`` has a gradient of its own (one more weight-sized tensor per layer).

    Build the optimizer **after** ``apply`` (``model.parameters()`` then includes every ``B``), or
    add :meth:`feedback_parameters` to the group of the weights. A warning is given once per layer
    when ``W`` was stepped but ``B`` was not (the optimizer does not hold ``B``). Without weight
    decay ``W - B^T`` keeps its initial value under SGD and AdamW (identical updates): weight
    decay is what aligns them. With ``norm="match"`` the rule would read ``W``'s norm: refused.

    References:
        Akrout et al., "Deep Learning without Weight Transport", NeurIPS 2019.
        Kolen, Pollack, "Backpropagation without weight transport", ICNN 1994.
    """

    name = "KP"
    key = "kp"
    learns_feedback = True

    def __init__(
        self,
        distribution: str = "gaussian",
        scale: str | float = "init",
        norm: str | None = None,
        seed: int = 0,
    ) -> None:
        if norm is not None:
            raise ValueError(
                f"KolenPollack learns B itself; norm={norm!r} would rescale it from W's norm "
                "(weight transport): use norm=None"
            )
        super().__init__(distribution, scale=scale, norm=None, seed=seed)

    def _setup(self, layer: _Layer, weight: torch.Tensor) -> None:
        trained = layer.weight.requires_grad  # a frozen W keeps a frozen B
        feedback = nn.Parameter(self._initial(layer, weight), requires_grad=trained)
        layer.module.register_parameter(FEEDBACK_WEIGHT, feedback)
        layer.seen = None

    def _feedback(
        self, layer: _Layer, weight: torch.Tensor, advance: bool, needed: bool = True
    ) -> tuple[torch.Tensor, float]:
        # always B itself, even under the bottom layer: B learns from dW whether or not it is read
        return layer.module._parameters[FEEDBACK_WEIGHT], 1.0

    def feedback_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """Every layer's ``B^T`` parameter, for an optimizer built before :meth:`apply`.

        ``optimizer.add_param_group({"params": rule.feedback_parameters(model), ...})`` with the
        same hyperparameters as the weights' group.
        """
        return [layer.module._parameters[FEEDBACK_WEIGHT] for layer in self._binding(model).layers]

    def _before_forward(self, binding: _Binding, layer: _Layer) -> None:
        if torch.compiler.is_compiling():
            return  # the optimizer check compares storage pointers: eager steps only
        feedback = layer.module._parameters[FEEDBACK_WEIGHT]
        version = _weight_version(layer.module, layer.weight_name)
        last = layer.seen
        if (
            last is not None
            and last[0] != version
            and last[1] == (feedback.data_ptr(), feedback._version)
            and feedback.grad is not None
            and layer.path not in binding.warned
        ):
            binding.warned.add(layer.path)
            warnings.warn(
                f"KolenPollack: the weight of layer {layer.path!r} changed but its feedback "
                f"{layer.path + '.' if layer.path else ''}{FEEDBACK_WEIGHT} did not, although it "
                "has a gradient: the optimizer does not hold B. Build the optimizer after "
                "rule.apply(model), or add rule.feedback_parameters(model) to it",
                stacklevel=4,
            )
        layer.seen = (version, (feedback.data_ptr(), feedback._version))


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
    key = "weight-mirror"
    learns_feedback = True

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
                weight = layer.weight.detach()
                feedback = module._buffers[FEEDBACK_WEIGHT]
                correlation = layer.kind.mirror_correlation(
                    module, weight, batch_size, noise_std, generator
                )
                feedback.mul_(1.0 - lr * decay).add_(
                    correlation.to(feedback.dtype), alpha=lr / batch_size
                )
