"""The graph tasks' settings and the record each run leaves: the shapes that the tasks
(:mod:`.graphs`) write and their report (:mod:`.graphs_report`) reads, kept apart from both so
that neither imports the other (and the report needs no PyG)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

RULES: tuple[str, ...] = ("BP", "DFA", "Shallow")


@dataclass
class GraphConfig:
    """What the task runs."""

    layers: tuple[str, ...] = ("gcn", "cheb", "gat", "graphconv")
    rules: tuple[str, ...] = RULES
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 250
    align_every: int = 25  # epochs between alignment measurements of the DFA runs
    tuned: bool = True  # use the stored tuned values (``False``: the authors' hand-set ones)
    tuned_dir: Path | None = None  # where they are stored (``None``: the committed ones)


@dataclass
class GraphRun:
    layer: str
    rule: str
    seed: int
    test_accuracy: float  # % at the best validation epoch
    best_val_accuracy: float
    best_epoch: int
    seconds: float
    val_curve: list[float] = field(default_factory=list)
    loss_curve: list[float] = field(default_factory=list)
    # (epoch, mean hidden update angle in degrees, signal cosine mean, signal cosine std)
    alignment: list[tuple[int, float, float, float]] = field(default_factory=list)
    hidden_update_angles: dict[str, float] = field(default_factory=dict)
