"""Part 4, best practices: one-factor ablations of DFA on a 2 x 800 tanh MLP.

Activation, feedback scale and distribution, BatchNorm, dropout, learning rate, optimiser and
zero initialisation, each changed alone from the base recipe (Launay et al. 2019's list).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from feedback_alignment.experiments.principled.common import (
    Recipe,
    Run,
    Setting,
    Split,
    block_mlp,
    load_split,
    train_run,
)
from feedback_alignment.experiments.results import Column, Table, mean_std
from feedback_alignment.experiments.run import run_jobs

TITLE = "Best practices (ablations of DFA)"


@dataclass(frozen=True)
class Ablation:
    """One row of the best-practices table: a change of the base DFA recipe."""

    label: str
    rule: str = "DFA"
    activation: str = "tanh"
    feedback: str = "gaussian"
    scale: str = "principled"
    batchnorm: bool = False
    dropout: float = 0.0
    zero_init: bool = False
    lr: float | None = None  # None: the setting's
    optimizer: str = "adam"


def ablations(base_lr: float) -> list[Ablation]:
    """The base DFA recipe, BP and Shallow on it, then one factor changed per row."""
    return [
        Ablation("DFA base: tanh, gaussian, principled, Adam"),
        Ablation("BP (reference)", rule="BP"),
        Ablation("Shallow (reference)", rule="Shallow"),
        Ablation("activation ReLU", activation="relu"),
        Ablation("activation leaky ReLU", activation="leaky_relu"),
        Ablation("BP, ReLU (reference)", rule="BP", activation="relu"),
        Ablation("feedback scale none", scale="none"),
        Ablation("feedback uniform", feedback="uniform"),
        Ablation("feedback rademacher", feedback="rademacher"),
        Ablation("BatchNorm", batchnorm=True),
        Ablation("dropout 0.1", dropout=0.1),
        Ablation(f"lr {base_lr / 10:g}", lr=base_lr / 10),
        Ablation(f"lr {base_lr * 10:g}", lr=base_lr * 10),
        Ablation("zero init (Nøkland)", zero_init=True),
        Ablation("SGD m0.9 lr 0.01, principled", optimizer="sgd", lr=0.01),
        Ablation("SGD m0.9 lr 0.01, scale none", optimizer="sgd", lr=0.01, scale="none"),
        Ablation("BP, SGD m0.9 lr 0.01 (reference)", rule="BP", optimizer="sgd", lr=0.01),
    ]


def run_experiment(setting: Setting, seeds: Sequence[int], progress: bool) -> dict[str, Any]:
    """Every :func:`ablations` row on the 2x800 MLP, each with accuracy and final alignment."""
    split = load_split(setting.dataset, setting.train_limit, setting.test_limit)
    items = [(setting, row, seed, progress) for row in ablations(setting.lr) for seed in seeds]
    runs = run_jobs(
        _job, items, "principled-practices runs", shared=split, progress=False,
        label=lambda item: f"{item[1].label} seed {item[2]}",
    )  # fmt: skip
    return {"runs": runs}


def _job(split: Split, item: tuple[Setting, Ablation, int, bool]) -> Run:
    """One (ablation, seed) run, as :func:`run_jobs` calls it (saved as it ends inside
    ``reproduce``, so a killed part resumes)."""
    setting, row, seed, progress = item
    lr = row.lr if row.lr is not None else setting.lr
    recipe = Recipe(setting.practice_epochs, lr, row.optimizer, setting.batch_size)
    build = functools.partial(
        block_mlp,
        [split.features, setting.wide, setting.wide, 10],
        row.activation,
        batchnorm=row.batchnorm,
        dropout=row.dropout,
        zero_init=row.zero_init,
    )
    options = {"distribution": row.feedback, "scale": row.scale} if row.rule == "DFA" else {}
    trained, _ = train_run(
        "practices",
        row.label,
        row.rule,
        build,
        split,
        recipe,
        seed=seed,
        probe=setting.probe,
        progress=progress,
        rule_options=options,
        settings={"ablation": asdict(row)},
    )
    return trained


def summary(result: dict[str, Any], setting: Setting) -> Table:
    runs: list[Run] = result["runs"]
    out = Table(
        "principled_practices",
        [Column("run", align="left"), Column("test accuracy %", 2),
         Column("mean hidden update angle (deg)", 1), Column("mean signal cosine", 3),
         Column("notes", align="left")],
        quick=setting.quick,
    )  # fmt: skip
    for label in dict.fromkeys(r.label for r in runs):
        chosen = [r for r in runs if r.label == label]
        out.add(
            label,
            mean_std(100 * r.test_accuracy for r in chosen).cell(single=True),
            mean_std(r.mean_angle() for r in chosen).cell(single=True),
            mean_std(r.mean_cosine() for r in chosen).cell(single=True),
            "diverged" if any(r.diverged for r in chosen) else "",
        )
    out.caption = (
        f"{setting.dataset}, MLP {setting.wide}-{setting.wide} hidden, "
        f"{setting.practice_epochs} epochs, batch {setting.batch_size}; the base is DFA with tanh, "
        f"gaussian feedback, principled scaling, Adam lr {setting.lr}, default init, and each row "
        "changes one thing. Alignment is measured after training on a probe batch, in train mode."
    )
    return out


def plots(result: dict[str, Any], setting: Setting, out_dir: Path) -> list[Path]:
    return []
