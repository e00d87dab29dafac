"""The quick demo: a tanh MLP on scikit-learn's bundled digits, trained with BP, DFA and Shallow.

It shows in under a minute on 2 CPU cores the library's central claims on real (if small) data:
DFA trains the hidden layers of a network with a fixed random projection of the output error,
lands close to backpropagation and well above the shallow control (hidden layers frozen at their
random initialisation), and its hidden-layer updates lie within 90 degrees of BP's (they *align*).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from feedback_alignment.alignment import alignment
from feedback_alignment.experiments.results import Column, Table, mean_std
from feedback_alignment.experiments.run import apply_rule, fit, run_jobs, shuffled
from feedback_alignment.models import MLP


@dataclass
class DemoConfig:
    """Settings of the demo (defaults chosen to finish in seconds, not tuned per rule)."""

    hidden: tuple[int, ...] = (
        64,
        64,
        64,
    )  # three tanh hidden layers: deep enough for Shallow to lag
    activation: str = "tanh"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3  # Adam, the same for every rule
    seeds: tuple[int, ...] = (0, 1, 2)
    rules: tuple[str, ...] = ("BP", "DFA", "Shallow")


@dataclass
class RunResult:
    rule: str
    seed: int
    test_accuracy: float
    hidden_update_angle: dict[str, float]
    signal_cosine: dict[str, tuple[float, float]]
    seconds: float
    loss_curve: list[float] = field(default_factory=list)


RULES: tuple[str, ...] = ("BP", "DFA", "Shallow")
"""The rules the demo accepts (built by :func:`feedback_alignment.experiments.run.make_rule`)."""


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat_train, flat_test = train.flatten(1), test.flatten(1)
    mean, std = flat_train.mean(0), flat_train.std(0) + 0.1
    return (flat_train - mean) / std, (flat_test - mean) / std


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Standardised digits features ``(N, 64)`` and labels, from the data registry."""
    from feedback_alignment import data

    digits = data.load("digits")
    x_train, x_test = _standardise(digits.x_train, digits.x_test)
    return x_train, digits.y_train, x_test, digits.y_test


def train_one(
    rule_name: str,
    seed: int,
    config: DemoConfig,
    tensors: tuple[torch.Tensor, ...],
    progress: bool = True,
) -> RunResult:
    x_train, y_train, x_test, y_test = tensors
    torch.manual_seed(seed)
    model = MLP([x_train.shape[1], *config.hidden, 10], config.activation)
    rule = apply_rule(rule_name, model, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    done = fit(
        model,
        optimizer,
        lambda _: shuffled(len(x_train), config.batch_size, generator),
        lambda index: F.cross_entropy(model(x_train[index]), y_train[index]),
        epochs=config.epochs,
        label=f"{rule_name:>7} seed {seed}",
        progress=progress,
    )
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(dim=1) == y_test).float().mean())
    report = alignment(model, rule, (x_train, y_train), F.cross_entropy)
    return RunResult(
        rule=rule_name,
        seed=seed,
        test_accuracy=accuracy,
        hidden_update_angle=report.hidden_angles(),
        signal_cosine=report.signal_cosine,
        seconds=done.seconds,
        loss_curve=done.epoch_losses,
    )


def run(
    config: DemoConfig | None = None, progress: bool = True
) -> tuple[list[RunResult], DemoConfig]:
    config = config or DemoConfig()
    unknown = [r for r in config.rules if r not in RULES]
    if unknown:
        raise ValueError(f"unknown demo rules {unknown}; choose from {list(RULES)}")
    tensors = load_digits_tensors()
    pairs = [(rule, seed, config) for rule in config.rules for seed in config.seeds]
    # through run_jobs: inside `reproduce`, each run is saved as it ends (a killed task resumes)
    results = run_jobs(
        _train_job,
        pairs,
        "demo",
        shared=(tensors, progress),
        progress=progress,
        label=lambda job: f"{job[0]} seed {job[1]}",
    )
    return results, config


def _train_job(shared: tuple, job: tuple[str, int, DemoConfig]) -> RunResult:
    tensors, progress = shared
    rule, seed, config = job
    return train_one(rule, seed, config, tensors, progress)


def memory_needed(hidden: Sequence[int], features: int = 64, classes: int = 10) -> int:
    """Bytes that training the demo's MLP takes at least: float32 weights, their gradients and
    Adam's two moments (4 copies), plus the activations of the whole training set (1,437 rows,
    kept twice) that the alignment report computes."""
    widths = [features, *hidden, classes]
    parameters = sum((a + 1) * b for a, b in itertools.pairwise(widths))
    return 4 * (4 * parameters + 2 * 1437 * sum(widths))


def summary(results: Sequence[RunResult], config: DemoConfig, quick: bool = False) -> Table:
    """Accuracy and per-hidden-layer alignment, mean ± std over seeds (one seed: the value)."""
    layers = sorted({k for r in results for k in r.hidden_update_angle}, key=lambda s: (len(s), s))
    table = Table(
        "digits",
        [Column("rule", align="left"), Column("test accuracy %", 1)]
        + [Column(f"angle layer {name} (deg)", 1) for name in layers],
        missing="n/a (no update)",
        quick=quick,
    )
    for rule in config.rules:
        runs = [r for r in results if r.rule == rule]
        accuracy = mean_std([100 * r.test_accuracy for r in runs]).cell(single=True)
        angles = [
            mean_std([r.hidden_update_angle.get(n, math.nan) for r in runs]).cell(single=True)
            for n in layers
        ]
        table.add(rule, accuracy, *angles)
    table.caption = (
        f"digits (1,437 train / 360 test), MLP 64-{'-'.join(map(str, config.hidden))}-10 "
        f"{config.activation}, Adam lr {config.lr}, {config.epochs} epochs, batch "
        f"{config.batch_size}, seeds {list(config.seeds)}. Angle: between the rule's weight update "
        "and BP's on the training set after training (0 = BP's direction, < 90 = descent)."
    )
    return table


def summary_table(results: Sequence[RunResult], config: DemoConfig, quick: bool = False) -> str:
    """Markdown of :func:`summary`."""
    return summary(results, config, quick).to_markdown()


def write_json(results: Sequence[RunResult], config: DemoConfig, path: Path) -> None:
    """Writes the runs with their provenance (feedback stream version included), sealed and
    atomically (a full disk leaves the earlier file or none, and raises
    :class:`~feedback_alignment.experiments.results.ResultsWriteError`)."""
    from feedback_alignment.experiments import results as written

    payload = {
        "config": asdict(config),
        "runs": [asdict(r) for r in results],
        "provenance": written.provenance(False, config.seeds),
    }
    written.write_json(path, payload)
