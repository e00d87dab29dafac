"""How well a rule's learning signal agrees with backpropagation's, measured without side effects.

Two measurements on one batch, at the model's current weights:

* **update angle**, per layer: the angle in degrees between the rule's weight update ``dW_l`` and
  BP's, ``arccos(<dW_rule, dW_bp> / (|dW_rule| |dW_bp|))``. Below 90 degrees the rule descends the
  loss (Lillicrap et al. 2016's condition); 0 means it equals BP up to scale.
* **signal cosine**, per feedback point: the per-sample cosine between the signal the rule hands to
  the point (``B_l e`` for DFA) and BP's signal there (``dL/dh_l = W_{l+1}^T delta_{l+1}``), reported
  as mean and standard deviation over samples (Launay et al. 2020, appendix A).

Both come from one BP pass and one rule pass computed with ``torch.autograd.grad``: the model's
``.grad`` fields are not touched, buffers that forward passes update (BatchNorm statistics) are
restored, and both passes see the same random numbers (dropout masks), after which the global RNG
is restored too. No deep copy of the model is made.

References:
    Lillicrap et al., "Random synaptic feedback weights support error backpropagation for deep
    learning", Nature Communications 2016.
    Launay et al., "Direct Feedback Alignment Scales to Modern Deep Learning Tasks and
    Architectures", NeurIPS 2020, appendix A.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.rules.base import Rule

LossFn = Callable[[Any, Any], torch.Tensor]


@dataclass
class AlignmentReport:
    """Alignment of a rule with BP on one batch.

    Attributes:
        update_angle: module path -> angle in degrees between the rule's and BP's update of that
            module's ``weight``; ``nan`` where the rule gives the layer no update.
        signal_cosine: feedback point -> (mean, std) over samples of the cosine between the rule's
            signal and BP's at that point.
        hidden: module paths of the layers the rule trains with its own signal (for a direct rule:
            the layers below a feedback point, as the cut verification found them in the graph).
        true_gradient: layers that receive the true gradient only (the top block, and branches
            that reach the output without a feedback point on the way); their angle is 0 by
            construction and says nothing about the rule.
        tied: layers that receive both (a parameter shared by the top block and a block below a
            point, such as GPT-2's tied embedding, or a module named in ``true_gradient=``).
        loss: the batch loss at the current weights.
    """

    update_angle: dict[str, float] = field(default_factory=dict)
    signal_cosine: dict[str, tuple[float, float]] = field(default_factory=dict)
    hidden: list[str] = field(default_factory=list)
    true_gradient: list[str] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)
    loss: float = math.nan

    def hidden_angles(self) -> dict[str, float]:
        """Update angles of the hidden layers only."""
        return {name: self.update_angle[name] for name in self.hidden if name in self.update_angle}

    def as_dict(self) -> dict[str, Any]:
        return {
            "update_angle": dict(self.update_angle),
            "signal_cosine": {k: list(v) for k, v in self.signal_cosine.items()},
            "hidden": list(self.hidden),
            "true_gradient": list(self.true_gradient),
            "tied": list(self.tied),
            "loss": self.loss,
        }


def angle_degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle between two tensors viewed as vectors, in degrees (``nan`` if either is zero)."""
    a64, b64 = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
    norm = a64.norm() * b64.norm()
    if norm == 0:
        return math.nan
    cosine = torch.clamp(torch.dot(a64, b64) / norm, -1.0, 1.0)
    return math.degrees(math.acos(float(cosine)))


def alignment(
    model: nn.Module,
    rule: Rule,
    batch: tuple[Any, Any],
    loss_fn: LossFn,
) -> AlignmentReport:
    """Measures the update angle per layer and the signal cosine per feedback point.

    Args:
        model: a model to which ``rule`` is applied.
        rule: the rule to compare with backpropagation.
        batch: ``(inputs, targets)``; ``inputs`` is passed as ``model(inputs)``, or unpacked when
            it is a tuple (``model(*inputs)``) or a dict (``model(**inputs)``).
        loss_fn: ``loss_fn(model_output, targets)`` returning a scalar.

    Returns:
        An :class:`AlignmentReport`. Costs about one BP step plus one rule step.
    """
    if not rule.is_applied(model):
        raise RuntimeError(f"{rule!r} is not applied to this {type(model).__name__}")
    inputs, targets = batch
    params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    weights = _weights_by_module(model)
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [t.device.index for _, t in params if t.is_cuda]
    with torch.random.fork_rng(devices=sorted(set(d for d in devices if d is not None))):
        rng_cpu = torch.get_rng_state()
        rng_cuda = torch.cuda.get_rng_state_all() if devices else None

        with rule.backprop_mode(model), rule.recording(model) as bp_points:
            bp_loss = loss_fn(_call(model, inputs), targets)
        bp_grads = _grads(bp_loss, params, bp_points)
        _restore(saved_buffers)

        torch.set_rng_state(rng_cpu)
        if rng_cuda is not None:
            torch.cuda.set_rng_state_all(rng_cuda)
        rule.set_targets(targets)  # DRTP's signal; a no-op for the other rules
        with rule.recording(model) as rule_points:
            rule_loss = loss_fn(_call(model, inputs), targets)
        rule_grads = _grads(rule_loss, params, rule_points)
        _restore(saved_buffers)

    report = AlignmentReport(loss=float(bp_loss.detach()))
    bp_param_grads, bp_signals = bp_grads
    rule_param_grads, rule_signals = rule_grads
    for module_name, param_name in weights.items():
        bp_grad = bp_param_grads.get(param_name)
        if bp_grad is None:
            continue
        rule_grad = rule_param_grads.get(param_name)
        report.update_angle[module_name] = (
            math.nan if rule_grad is None else angle_degrees(rule_grad, bp_grad)
        )
    for point, rule_signal in rule_signals.items():
        bp_signal = bp_signals.get(point)
        if rule_signal is None or bp_signal is None:
            continue
        report.signal_cosine[point] = _per_sample_cosine(
            rule_signal, bp_signal, _width(rule, model, point)
        )
    roles = rule.parameter_roles(model)
    if roles:
        by_role: dict[str, list[str]] = {"hidden": [], "top": [], "tied": []}
        for module_name, param_name in weights.items():
            if param_name in roles:
                by_role[roles[param_name]].append(module_name)
        report.hidden, report.true_gradient, report.tied = (
            by_role["hidden"],
            by_role["top"],
            by_role["tied"],
        )
    else:
        report.hidden = _hidden_layers(model, weights, [p for p, _ in rule_points])
        report.true_gradient = [name for name in weights if name not in report.hidden]
    return report


class AlignmentMonitor:
    """Measures :func:`alignment` every ``every`` training steps and keeps the history.

    Call :meth:`step` once per training step with the batch, before or after the optimizer step.

    Args:
        model, rule, loss_fn: as for :func:`alignment`.
        every: measure at steps ``every, 2*every, ...``; each measurement costs about two steps.
        callback: called as ``callback(step, report)`` after each measurement (e.g. a logger).
        patience: warn when a hidden layer's update angle exceeds 90 degrees this many
            measurements in a row (Lillicrap's condition for learning fails there).
        warmup: measurements ignored by that warning: at the start of training every layer of a
            DFA network is near 90 degrees and aligns only later.
    """

    def __init__(
        self,
        model: nn.Module,
        rule: Rule,
        loss_fn: LossFn,
        every: int = 100,
        callback: Callable[[int, AlignmentReport], None] | None = None,
        patience: int = 3,
        warmup: int = 5,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.model, self.rule, self.loss_fn = model, rule, loss_fn
        self.every, self.callback = int(every), callback
        self.patience = max(1, int(patience))
        self.warmup = max(0, int(warmup))
        self._warned: set[str] = set()
        self.steps = 0
        self.history: list[tuple[int, AlignmentReport]] = []

    def _warn_if_misaligned(self) -> None:
        """Warns once per layer whose update angle stayed above 90 degrees ``patience`` times."""
        recent = [report for _, report in self.history[self.warmup :][-self.patience :]]
        if len(recent) < self.patience:
            return
        for layer in recent[-1].hidden_angles():
            angles = [r.update_angle.get(layer, math.nan) for r in recent]
            if layer not in self._warned and all(a > 90 for a in angles):
                self._warned.add(layer)
                warnings.warn(
                    f"layer {layer!r}: the rule's update has been more than 90 degrees from BP's "
                    f"for {self.patience} measurements ({', '.join(f'{a:.0f}' for a in angles)}): "
                    "it is not descending the loss. Check the feedback scale, the learning rate "
                    "and whether a feedback point is a bottleneck",
                    stacklevel=3,
                )

    def step(self, batch: tuple[Any, Any]) -> AlignmentReport | None:
        self.steps += 1
        if self.steps % self.every:
            return None
        report = alignment(self.model, self.rule, batch, self.loss_fn)
        self.history.append((self.steps, report))
        self._warn_if_misaligned()
        if self.callback is not None:
            self.callback(self.steps, report)
        return report


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _grads(
    loss: torch.Tensor,
    params: list[tuple[str, nn.Parameter]],
    points: list[tuple[str, torch.Tensor]],
) -> tuple[dict[str, torch.Tensor | None], dict[str, torch.Tensor | None]]:
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise ValueError("loss_fn must return a scalar tensor")
    targets = [p for _, p in params] + [h for _, h in points]
    grads = torch.autograd.grad(loss, targets, allow_unused=True)
    by_param = {name: g for (name, _), g in zip(params, grads, strict=False)}
    by_point = {name: g for (name, _), g in zip(points, grads[len(params) :], strict=True)}
    return by_param, by_point


def _restore(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for buffer, value in saved:
            buffer.copy_(value)


def _weights_by_module(model: nn.Module) -> dict[str, str]:
    """Module path -> parameter name of its weight (``weight``, or ``in_proj_weight`` for
    ``nn.MultiheadAttention``), for modules that own one."""
    found = {}
    for module_name, module in model.named_modules():
        for name in ("weight", "in_proj_weight"):
            weight = module._parameters.get(name)
            if isinstance(weight, nn.Parameter) and weight.requires_grad:
                found[module_name] = f"{module_name}.{name}" if module_name else name
                break
    return found


def _width(rule: Rule, model: nn.Module, point: str) -> int | None:
    return rule.signal_widths(model).get(point)


def _per_sample_cosine(a: torch.Tensor, b: torch.Tensor, width: int | None) -> tuple[float, float]:
    width = width or (a.numel() // a.shape[0])
    rows_a = a.detach().reshape(-1, width).double()
    rows_b = b.detach().reshape(-1, width).double()
    keep = (rows_a.norm(dim=1) > 0) & (rows_b.norm(dim=1) > 0)
    if not bool(keep.any()):
        return math.nan, math.nan
    cosine = F.cosine_similarity(rows_a[keep], rows_b[keep], dim=1)
    std = float(cosine.std()) if cosine.numel() > 1 else 0.0
    return float(cosine.mean()), std


def _hidden_layers(model: nn.Module, weights: dict[str, str], points: list[str]) -> list[str]:
    """Without the cut verification's roles (layer-wise rules, BP): the layers registered before
    the last feedback point module, or all layers but the last one."""
    point_modules = {p.split("#", 1)[0].removesuffix(":input") for p in points}
    order = [name for name, _ in model.named_modules()]
    positions = [order.index(p) for p in point_modules if p in order]
    if not positions:  # a rule without feedback points (BP): all layers but the top one
        return list(weights)[:-1]
    last = max(positions)
    return [name for name in weights if order.index(name) < last]


@dataclass(frozen=True)
class WeightAlignment:
    """How close a layer's feedback ``B`` is to ``W^T``.

    Attributes:
        angle: degrees between ``vec(W^T)`` and ``vec(B)`` (0: ``B`` is ``W^T`` up to scale).
        norm_ratio: ``||B||_F / ||W||_F``.
    """

    angle: float
    norm_ratio: float


def weight_alignment(model: nn.Module, rule: Rule) -> dict[str, WeightAlignment]:
    """Per converted layer, the angle between ``vec(W^T)`` and ``vec(B)`` and their norm ratio.

    For a layer-wise rule (FA, sign-symmetry, Kolen-Pollack, weight mirror) applied to ``model``;
    reads the current weights and feedback without side effects (brSF: the draw its next training
    step would use, without advancing its stream).

    References:
        Lillicrap et al., "Random synaptic feedback weights support error backpropagation for deep
        learning", Nature Communications 2016.
        Akrout et al., "Deep Learning without Weight Transport", NeurIPS 2019.
    """
    from feedback_alignment.rules.layerwise import LayerwiseFeedback

    if not isinstance(rule, LayerwiseFeedback):
        raise TypeError(
            f"weight_alignment needs a layer-wise rule (FA, uSF, frSF, brSF, KolenPollack, "
            f"WeightMirror), got {rule!r}; for other rules use alignment(...) (update angles)"
        )
    result = {}
    weights = rule.weights(model)
    for path, feedback_t in rule.feedback_matrices(model).items():
        weight = weights[path]
        weight_norm = float(weight.double().norm())
        ratio = float(feedback_t.double().norm()) / weight_norm if weight_norm else math.nan
        # B^T is stored in W's shape: the angle between vec(W) and vec(B^T) is that of W^T and B
        result[path] = WeightAlignment(angle_degrees(feedback_t, weight), ratio)
    return result
