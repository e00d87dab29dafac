"""Alignment with BP logged from a Lightning (``lightning.pytorch``) ``Trainer``.

:class:`AlignmentCallback` measures :func:`feedback_alignment.alignment` on a fixed probe batch
every N optimizer steps and writes the per-layer angles to every logger of the trainer
(``trainer.loggers``: TensorBoard, CSV, ...) with ``log_metrics(metrics, step=global_step)``. The
measurement uses ``torch.autograd.grad`` on its own batch: the training step's ``.grad``, buffers
and random state are left as they were.

Apply the rule to the model your ``training_step`` calls (``rule.apply(self.model)``), not to the
``LightningModule``: a rule refuses feedback points that run outside its model's own forward pass.
The callback finds that inner model by itself.

Requires ``lightning`` (``pip install lightning``; the callback is a ``lightning.pytorch``
``Callback``, for the unified ``lightning`` package, not the older ``pytorch_lightning``).
``import feedback_alignment`` never imports it.

Example:
    >>> import lightning.pytorch as pl
    >>> from feedback_alignment.integrations.lightning import AlignmentCallback
    >>> rule = fa.DFA(seed=0)
    >>> rule.apply(module.model)                       # the inner nn.Module
    >>> callback = AlignmentCallback(rule, (x, y), F.cross_entropy, every_n_steps=50)
    >>> pl.Trainer(callbacks=[callback], logger=TensorBoardLogger("runs")).fit(module, loader)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from feedback_alignment.integrations._probe import LossFn, ProbeMeasurer
from feedback_alignment.rules.base import Rule

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:  # pragma: no cover - exercised by a test that hides lightning
    raise ImportError(
        "feedback_alignment.integrations.lightning needs Lightning 2 (lightning.pytorch): "
        'pip install "lightning>=2.2,<3"'
    ) from exc

__all__ = ["AlignmentCallback"]


class AlignmentCallback(Callback):
    """Logs each layer's alignment with BP every ``every_n_steps`` optimizer steps.

    The measurement runs after the training batch that completes an optimizer step (once per
    step under gradient accumulation), at the updated weights, on the probe batch, in the
    model's current mode (dropout as in training; the rule's and BP's pass see the same masks).
    It costs about one BP step plus one rule step, on every process (the loggers write on rank
    zero). Logged scalars: ``alignment/angle/<layer>`` (degrees, hidden and tied layers),
    ``alignment/angle_mean``, ``alignment/cosine/<point>`` (direct rules),
    ``alignment/weight_angle/<layer>`` (layer-wise rules) and ``alignment/probe_loss``.

    Args:
        rule: the rule applied to the model (``rule.apply(module.model)`` before ``fit``).
        probe: a fixed batch for the model the rule is applied to: ``(inputs, targets)`` as for
            :func:`feedback_alignment.alignment`, or a mapping of its keyword arguments
            (``model(**probe)``). Moved to the model's device when measured.
        loss_fn: ``loss_fn(model_output, targets) -> scalar``. Default (mapping probes only): the
            loss the model returns (``output.loss``).
        every_n_steps: measure at optimizer steps ``N, 2N, ...`` (``trainer.global_step``).
        model: the module the rule is applied to; default: the ``LightningModule`` or the first
            of its submodules the rule is applied to.
        prefix: the first part of every logged key.

    Attributes:
        history: ``(global_step, AlignmentReport)`` of every measurement.
        last_metrics: the scalars logged last.

    Raises:
        TypeError, ValueError: at construction, for a bad rule, probe, loss function or
            ``every_n_steps``; when training starts, if the probe does not fit the model (one
            forward pass without gradient, side effects undone) or the rule is not applied.
    """

    def __init__(
        self,
        rule: Rule,
        probe: Any,
        loss_fn: LossFn | None = None,
        *,
        every_n_steps: int = 100,
        model: nn.Module | None = None,
        prefix: str = "alignment",
    ) -> None:
        super().__init__()
        self._measurer = ProbeMeasurer(rule, probe, loss_fn, every_n_steps, model, prefix)

    @property
    def rule(self) -> Rule:
        return self._measurer.rule

    @property
    def every_n_steps(self) -> int:
        return self._measurer.every_n_steps

    @property
    def history(self) -> list:
        return self._measurer.history

    @property
    def last_metrics(self) -> dict[str, float]:
        return dict(self._measurer.last_metrics)

    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        self._measurer.start(pl_module)

    def on_train_batch_end(
        self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if not self._measurer.due(step):
            return
        logs = self._measurer.run(step, pl_module)
        for logger in trainer.loggers:
            logger.log_metrics(logs, step=step)
