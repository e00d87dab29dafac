"""Alignment with BP logged from a Hugging Face ``transformers.Trainer``.

:class:`AlignmentCallback` measures :func:`feedback_alignment.alignment` on a fixed probe batch
every N optimizer steps and sends the per-layer angles through ``Trainer.log``, so they reach
every ``report_to`` integration (TensorBoard, Weights & Biases, ...), the progress printer and
``trainer.state.log_history``. The measurement uses ``torch.autograd.grad`` on its own batch: the
training step's ``.grad``, buffers and random state are left as they were.

Requires ``transformers`` (``pip install "feedback-alignment[hf]"``; the ``Trainer`` also needs
``accelerate``). ``import feedback_alignment`` never imports it.

Example:
    >>> import feedback_alignment as fa
    >>> from feedback_alignment.integrations.huggingface import AlignmentCallback
    >>> rule = fa.DFA(seed=0)
    >>> rule.apply(model, output="logits")                      # a GPT2LMHeadModel
    >>> trainer = Trainer(model=model, args=args, train_dataset=train)
    >>> probe = {"input_ids": ids, "labels": ids}               # one fixed batch
    >>> AlignmentCallback(rule, probe, every_n_steps=50).attach(trainer)
    >>> trainer.train()     # TensorBoard: train/alignment/angle/transformer.h.0.attn.c_attn
"""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from feedback_alignment.integrations._probe import LossFn, ProbeMeasurer
from feedback_alignment.rules.base import Rule

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised by a test that hides transformers
    raise ImportError(
        "feedback_alignment.integrations.huggingface needs transformers: "
        'pip install "feedback-alignment[hf]" accelerate'
    ) from exc

__all__ = ["AlignmentCallback"]


class AlignmentCallback(TrainerCallback):
    """Logs each layer's alignment with BP every ``every_n_steps`` optimizer steps.

    The measurement runs at the end of an optimizer step (after the update, at the new weights)
    on the probe batch, in the model's current mode (dropout as in training; both the rule's and
    BP's pass see the same masks). It costs about one BP step plus one rule step, on every
    process of a distributed run (on the unwrapped model); only the trainer's loggers decide who
    writes. Logged scalars (see :func:`feedback_alignment.integrations.metrics`):
    ``alignment/angle/<layer>`` (degrees, hidden and tied layers), ``alignment/angle_mean``,
    ``alignment/cosine/<point>`` (direct rules), ``alignment/weight_angle/<layer>`` (layer-wise
    rules) and ``alignment/probe_loss``. (The Trainer's TensorBoard integration files every
    training log under ``train/``: ``train/alignment/angle/...``.)

    The callback logs through ``trainer.log``, which a ``TrainerCallback`` cannot reach by
    itself: give it the trainer with :meth:`attach` (or ``trainer=``). Without one the metrics go
    to ``state.log_history`` and :attr:`history` only, and a warning says so.

    Args:
        rule: the rule applied to the model (``rule.apply(model, ...)`` before training).
        probe: a fixed batch: a mapping of the model's keyword arguments (``model(**probe)``;
            e.g. ``{"input_ids": ids, "labels": ids}``), or ``(inputs, targets)`` as for
            :func:`feedback_alignment.alignment`. Moved to the model's device when measured.
        loss_fn: ``loss_fn(model_output, targets) -> scalar``. Default (mapping probes only): the
            loss the model returns (``output.loss``).
        every_n_steps: measure at optimizer steps ``N, 2N, ...`` (``state.global_step``).
        model: the module the rule is applied to; default: the trainer's model, or the first of
            its submodules the rule is applied to.
        trainer: the ``Trainer`` to log through (or call :meth:`attach`).
        prefix: the first part of every logged key.

    Attributes:
        history: ``(global_step, AlignmentReport)`` of every measurement.
        last_metrics: the scalars logged last.

    Raises:
        TypeError, ValueError: at construction, for a bad rule, probe, loss function or
            ``every_n_steps``; at the start of training, when the probe does not fit the model
            (one forward pass without gradient, side effects undone) or the rule is not applied.
    """

    def __init__(
        self,
        rule: Rule,
        probe: Any,
        loss_fn: LossFn | None = None,
        *,
        every_n_steps: int = 100,
        model: nn.Module | None = None,
        trainer: Any = None,
        prefix: str = "alignment",
    ) -> None:
        self._measurer = ProbeMeasurer(rule, probe, loss_fn, every_n_steps, model, prefix)
        self.trainer = trainer
        self._warned = False

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

    def attach(self, trainer: Any) -> AlignmentCallback:
        """Logs through ``trainer`` and adds this callback to it (if not there yet); returns
        ``self``."""
        if not callable(getattr(trainer, "log", None)) or not hasattr(trainer, "callback_handler"):
            raise TypeError(f"attach needs a transformers.Trainer, got {type(trainer).__name__}")
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return self

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._measurer.start(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if not self._measurer.due(step):
            return
        logs = self._measurer.run(step, model)
        if self.trainer is not None:
            self.trainer.log(logs)  # -> state.log_history and every callback's on_log
            return
        state.log_history.append({**logs, "step": step})
        if not self._warned:
            self._warned = True
            warnings.warn(
                "AlignmentCallback has no trainer to log through: the alignment goes to "
                "trainer.state.log_history only, not to report_to (TensorBoard, ...). Use "
                "AlignmentCallback(...).attach(trainer) or pass trainer=",
                stacklevel=2,
            )
