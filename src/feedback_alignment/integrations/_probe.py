"""What both trainer callbacks share: the probe batch, finding the model, measuring, the metrics.

Nothing here imports a trainer library. A measurement is :func:`feedback_alignment.alignment` on
a fixed probe batch (``torch.autograd.grad``: ``.grad`` untouched; buffers and the RNG restored),
plus :func:`feedback_alignment.weight_alignment` for layer-wise rules (reads weights only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from feedback_alignment.alignment import AlignmentReport, alignment, weight_alignment
from feedback_alignment.rules.base import Rule

LossFn = Callable[[Any, Any], torch.Tensor]


def check_every(every_n_steps: Any) -> int:
    """``every_n_steps`` as a positive ``int``; a ``TypeError`` or ``ValueError`` otherwise."""
    if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int):
        raise TypeError(
            f"every_n_steps must be a positive int, got {type(every_n_steps).__name__} "
            f"{every_n_steps!r}"
        )
    if every_n_steps < 1:
        raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
    return every_n_steps


def output_loss(output: Any, _targets: Any = None) -> torch.Tensor:
    """The loss a model computed itself (Hugging Face models given ``labels``): ``output.loss``
    or ``output["loss"]``."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if loss is None:
        raise ValueError(
            f"the model's output ({type(output).__name__}) holds no loss: put the labels into the "
            "probe (e.g. {'input_ids': ids, 'labels': ids}) or pass loss_fn=(output, targets) -> "
            "scalar"
        )
    return loss


def split_probe(probe: Any, loss_fn: LossFn | None) -> tuple[tuple[Any, Any], LossFn]:
    """The probe as ``(inputs, targets)`` for :func:`~feedback_alignment.alignment`, and its loss.

    A mapping is the model's keyword arguments (``model(**probe)``, no targets; without
    ``loss_fn`` the loss is the one the model returns). A pair is ``(inputs, targets)`` as for
    :func:`~feedback_alignment.alignment` and needs ``loss_fn``.
    """
    if loss_fn is not None and not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
    if isinstance(probe, Mapping):
        if not probe:
            raise ValueError("the probe batch is an empty mapping: give the model's inputs")
        return (dict(probe), None), loss_fn or output_loss
    if isinstance(probe, (tuple, list)) and len(probe) == 2:
        if loss_fn is None:
            raise TypeError(
                "a probe (inputs, targets) needs loss_fn=(model_output, targets) -> scalar, e.g. "
                "torch.nn.functional.cross_entropy; or give the probe as a mapping of the "
                "model's keyword arguments whose output carries its own loss (labels=...)"
            )
        return (probe[0], probe[1]), loss_fn
    raise TypeError(
        "the probe batch must be a pair (inputs, targets), passed as model(inputs) (or "
        "model(*inputs) / model(**inputs) for a tuple / dict), or a mapping of keyword arguments "
        f"(model(**probe)); got {type(probe).__name__}"
        + (f" of length {len(probe)}" if isinstance(probe, (tuple, list)) else "")
    )


def find_model(root: nn.Module | None, rule: Rule) -> nn.Module:
    """``root`` if ``rule`` is applied to it, else its first submodule (in ``named_modules``
    order) that the rule is applied to (the inner model of a Lightning module)."""
    if root is None:
        raise RuntimeError("the trainer gave the callback no model; pass model= to the callback")
    for _, module in root.named_modules():
        if rule.is_applied(module):
            return module
    raise RuntimeError(
        f"{rule!r} is not applied to the {type(root).__name__} being trained nor to any of its "
        "submodules: call rule.apply(model) before training (or pass model= to the callback)"
    )


def _device_of(model: nn.Module) -> torch.device | None:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return None


def to_device(value: Any, device: torch.device | None) -> Any:
    """``value`` with every tensor in it (through dicts, tuples, lists) moved to ``device``."""
    if device is None:
        return value
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        return type(value)({k: to_device(v, device) for k, v in value.items()})
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(to_device(v, device) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(to_device(v, device) for v in value)
    return value


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def check_probe(model: nn.Module, batch: tuple[Any, Any], loss_fn: LossFn) -> None:
    """One forward pass of the probe without side effects (no grad, RNG forked, buffers
    restored); raises ``ValueError`` saying why the probe does not fit the model."""
    inputs, targets = to_device(batch, _device_of(model))
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    cuda = sorted(
        {t.device.index for t in model.parameters() if t.is_cuda and t.device.index is not None}
    )
    try:
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            loss = loss_fn(_call(model, inputs), targets)
    except Exception as exc:
        raise ValueError(
            f"the probe batch does not fit the {type(model).__name__}: "
            f"{type(exc).__name__}: {exc}. The probe must be a batch the model takes "
            "(inputs as in training, on any device) and loss_fn(output, targets) must return a "
            "scalar"
        ) from exc
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                if buffer.shape == value.shape:
                    buffer.copy_(value)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise ValueError(f"the probe's loss must be a scalar tensor, got {shape}")


def measure(
    model: nn.Module, rule: Rule, batch: tuple[Any, Any], loss_fn: LossFn
) -> tuple[AlignmentReport, dict[str, float]]:
    """:func:`~feedback_alignment.alignment` on ``batch`` (moved to the model's device), with
    gradients enabled whatever the caller's mode, and for layer-wise rules the angle between
    each layer's ``B`` and ``W^T``. Returns the report and its weight angles by layer."""
    batch = to_device(batch, _device_of(model))
    with torch.enable_grad():
        report = alignment(model, rule, batch, loss_fn)
    from feedback_alignment.rules.layerwise import LayerwiseFeedback

    weight_angles = {}
    if isinstance(rule, LayerwiseFeedback):
        weight_angles = {k: v.angle for k, v in weight_alignment(model, rule).items()}
    return report, weight_angles


def metrics(
    report: AlignmentReport, weight_angles: Mapping[str, float], prefix: str = "alignment"
) -> dict[str, float]:
    """Flat scalars for a logger, keys ``{prefix}/...``:

    * ``angle/<layer>``: update angle in degrees vs BP of each layer the rule trains with its
      own signal (hidden and tied layers; the top block's angle is 0 by construction);
    * ``angle_mean``: their mean;
    * ``cosine/<point>``: mean per-sample cosine of the rule's signal with BP's at each feedback
      point (direct rules);
    * ``weight_angle/<layer>``: angle between ``B`` and ``W^T`` (layer-wise rules);
    * ``probe_loss``: the probe's loss at the current weights.

    ``nan`` values (a layer the rule does not update, as under ``Shallow``) are left out.
    """
    prefix = prefix.rstrip("/")
    out: dict[str, float] = {}
    angles = []
    for layer in [*report.hidden, *report.tied]:
        angle = report.update_angle.get(layer, math.nan)
        if math.isfinite(angle):
            out[f"{prefix}/angle/{layer}"] = angle
            if layer in report.hidden:
                angles.append(angle)
    if angles:
        out[f"{prefix}/angle_mean"] = sum(angles) / len(angles)
    for point, (mean, _std) in report.signal_cosine.items():
        if math.isfinite(mean):
            out[f"{prefix}/cosine/{point}"] = mean
    for layer, angle in weight_angles.items():
        if math.isfinite(angle):
            out[f"{prefix}/weight_angle/{layer}"] = angle
    if math.isfinite(report.loss):
        out[f"{prefix}/probe_loss"] = report.loss
    return out


class ProbeMeasurer:
    """The state both callbacks keep: the rule, the probe, the cadence and the history.

    Args: as for the callbacks (see :class:`feedback_alignment.integrations.huggingface.
    AlignmentCallback`).
    """

    def __init__(
        self,
        rule: Rule,
        probe: Any,
        loss_fn: LossFn | None,
        every_n_steps: int,
        model: nn.Module | None,
        prefix: str,
    ) -> None:
        if not isinstance(rule, Rule):
            raise TypeError(
                f"rule must be a feedback_alignment rule (fa.DFA(), fa.FA(), ...), got "
                f"{type(rule).__name__}"
            )
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module or None, got {type(model).__name__}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be a non-empty string, got {prefix!r}")
        self.rule = rule
        self.batch, self.loss_fn = split_probe(probe, loss_fn)
        self.every_n_steps = check_every(every_n_steps)
        self.model = model
        self.prefix = prefix.rstrip("/")
        self.history: list[tuple[int, AlignmentReport]] = []
        self.last_metrics: dict[str, float] = {}
        self._target: nn.Module | None = None
        self._last_step = -1

    def start(self, root: nn.Module | None) -> nn.Module:
        """Finds the model the rule is applied to and checks that the probe fits it."""
        self._target = find_model(self.model if self.model is not None else root, self.rule)
        check_probe(self._target, self.batch, self.loss_fn)
        return self._target

    def due(self, step: int) -> bool:
        """Whether optimizer step ``step`` (counted from 1) is measured (once per step)."""
        return step > 0 and step % self.every_n_steps == 0 and step != self._last_step

    def run(self, step: int, root: nn.Module | None) -> dict[str, float]:
        """Measures at ``step`` and returns the metrics (also kept in :attr:`history`)."""
        target = self._target if self._target is not None else self.start(root)
        report, weight_angles = measure(target, self.rule, self.batch, self.loss_fn)
        self._last_step = step
        self.history.append((step, report))
        self.last_metrics = metrics(report, weight_angles, self.prefix)
        return dict(self.last_metrics)
