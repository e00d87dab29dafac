"""The conv-net tasks' settings and the record each run leaves: the shapes that the task
(:mod:`.convnets`, and :mod:`.resnet` and :mod:`.learned_feedback` on the same loop) writes and its
report (:mod:`.convnets_report`) reads, kept apart from both so that neither imports the other."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from feedback_alignment.models import LeNet

RULES: tuple[str, ...] = ("BP", "FA", "uSF", "frSF", "brSF", "KP", "DFA")
"""The rules of the task by table name (built by :func:`~feedback_alignment.experiments.run.make_rule`)."""


@dataclass
class ConvConfig:
    """Settings of the task (defaults: the full run, about 17 minutes per seed on one CPU core).

    Ten epochs: BP's test error stops improving by then (2 epochs left it 2.7 points above
    BioTorch's level), so the rules are compared where BP has converged.

    ``weight_decay`` is decoupled (AdamW) for plain runs and coupled (SGD) for Batch Manhattan
    runs, where it acts after the sign as in Liao et al. Kolen-Pollack aligns ``B`` with ``W``
    only through weight decay, so its runs use ``kp_weight_decay`` (on ``W`` and, by the rule,
    on ``B``). Every pair (rule, Batch Manhattan) is trained once per seed of ``seeds``.
    A subclass trains another network on the same loop (:meth:`build`; ``task`` names the
    task whose stored tuned rates it reads).
    """

    task: ClassVar[str] = "convnets"
    rules: tuple[str, ...] = RULES
    manhattan: tuple[bool, ...] = (False, True)
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3  # AdamW, cosine decay to 0
    manhattan_lr: float = 1e-3  # SGD on sign(dW), cosine decay to 0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    kp_weight_decay: float = 1.0
    train_size: int | None = None  # None: all 60,000
    test_size: int | None = None  # None: all 10,000
    probe_size: int = 256  # training samples on which angles are measured
    measurements: int = 12  # angle measurements over training (and one at the start)
    seeds: tuple[int, ...] = (0,)
    tuned: bool = True  # use the stored tuned learning rates where there are any
    tuned_dir: Path | None = None  # where they are stored (``None``: the committed ones)

    def build(self, in_channels: int, image_size: int) -> torch.nn.Module:
        """The network a run trains: LeNet-5."""
        return LeNet(in_channels=in_channels, image_size=image_size)


@dataclass
class RunRecord:
    """One training run: a rule, with or without Batch Manhattan, one seed."""

    rule: str
    manhattan: bool
    seed: int
    test_error: float  # %
    seconds: float
    train_loss: list[float] = field(default_factory=list)  # mean per epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # angles over training
    lr: float = math.nan  # the rate it ran at (NaN in records written before it was stored)
