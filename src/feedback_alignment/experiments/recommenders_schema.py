"""The recommender tasks' settings and the record each run leaves: the shapes that the tasks
(:mod:`.recommenders`) write and their report (:mod:`.recommenders_report`) reads, kept apart
from both so that neither imports the other."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

RULES: tuple[str, ...] = ("BP", "DFA", "Shallow")


DATASETS: tuple[str, ...] = ("movielens-100k", "adult")


@dataclass
class RecConfig:
    """What the task runs (CPU scale: the paper's MLPs were 400 x 3 and 1024 x 2)."""

    models: tuple[str, ...] = ("fm", "deepfm", "dcn", "autoint")
    datasets: tuple[str, ...] = DATASETS
    rules: tuple[str, ...] = RULES
    seeds: tuple[int, ...] = (0, 1, 2)
    mlp_dims: tuple[int, ...] = (200, 200, 200)
    cross_layers: int = 3
    epochs: int = 8
    patience: int = 2
    batch_size: int = 1024
    lr: float = 1e-3  # Adam: the hand-set rate of every rule (tuned ones replace it where stored)
    max_train_rows: int | None = None  # subsample the training rows (quick mode)
    tuned: bool = True  # use the stored tuned rates (``experiments/tuned/recommenders.json``)
    tuned_dir: Path | None = None  # where they are stored (``None``: the committed ones)


@dataclass
class RecRun:
    model: str
    dataset: str
    rule: str
    seed: int
    test_auc: float
    test_logloss: float
    best_epoch: int
    seconds: float
    val_auc_curve: list[float] = field(default_factory=list)
    hidden_update_angle: float = math.nan  # mean over the hidden layers, DFA only
    signal_cosine: dict[str, float] = field(default_factory=dict)  # per point, DFA only
