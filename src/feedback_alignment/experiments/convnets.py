"""Task ``convnets``: layer-wise feedback in a LeNet on Fashion-MNIST (Moskovitz et al. 2018).

Trains one LeNet definition with BP, FA, uSF, frSF, brSF, Kolen-Pollack and DFA, each with a plain
optimizer (AdamW) and with Batch Manhattan (SGD with momentum on ``sign(dW)``), and records the test
error, and over training, per layer, the update angle (rule's ``dW`` vs BP's on a fixed probe batch)
and the weight angle between ``W^T`` and ``B``. The claim under test: plain FA lags BP in conv
nets, while feedback that agrees with ``W`` in sign comes close to BP.

Writes ``results.json``, the table ``convnets_fashion_mnist.json``/``.md`` (our errors beside
BioTorch's) and PNG plots into the task
folder. Rerun: ``feedback-alignment reproduce --tasks convnets`` (``--quick`` for the CPU-minutes
version); every seed given (``--seeds 0,1,2``) trains every pair, and the table shows mean ± std.

References:
    Moskovitz, Litwin-Kumar, Abbott, "Feedback alignment in deep convolutional networks", 2018.
    Liao, Leibo, Poggio, "How Important Is Weight Symmetry in Backpropagation?", AAAI 2016.
    Sanfiz, Akrout, "Benchmarking the Accuracy and Robustness of Feedback Alignment Algorithms"
    (BioTorch), 2021: the reference errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.alignment import alignment, weight_alignment
from feedback_alignment.experiments import presets, tuning
from feedback_alignment.experiments.convnets_report import plot, summary
from feedback_alignment.experiments.convnets_schema import RULES, ConvConfig, RunRecord
from feedback_alignment.experiments.papers import BIOTORCH_FMNIST_LENET_ERROR
from feedback_alignment.experiments.registry import RunOptions, TaskReport, configure, register_task
from feedback_alignment.experiments.results import (
    write_results,
    write_table,
)
from feedback_alignment.experiments.run import apply_rule, fit, run_jobs, shuffled
from feedback_alignment.optim import batch_manhattan
from feedback_alignment.rules import LayerwiseFeedback, Rule


def arm(rule: str, manhattan: bool) -> str:
    """The tuning arm of a (rule, Batch Manhattan) pair: ``"FA"`` or ``"FA+BM"``."""
    return f"{rule}+BM" if manhattan else rule


def learning_rate(config: ConvConfig, rule: str, manhattan: bool) -> float:
    """The pair's tuned rate where stored (and ``config.tuned``), else the hand-set one."""
    stored = tuning.tuned_values(config.task, config.tuned_dir) if config.tuned else {}
    hand = config.manhattan_lr if manhattan else config.lr
    return stored.get(arm(rule, manhattan), {}).get("lr", hand)


def config_for(options: RunOptions) -> ConvConfig:
    """The run's settings: preset ``options.preset`` of ``presets/convnets.json`` (``quick``:
    4,000 training images, 1 epoch of batch 32, every rule, < 1 min; ``full``: the defaults), with
    the run's seeds (each seed given trains every pair) and its choice of tuned or hand-set
    values."""
    return configure("convnets", ConvConfig(), options, options.seeds)


def load_fashion_mnist(
    config: ConvConfig,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fashion-MNIST ``(N, 1, 28, 28)`` standardised by the training mean and std, and labels."""
    from feedback_alignment import data

    images = data.load("fashion-mnist")
    x_train, y_train = images.x_train, images.y_train
    x_test, y_test = images.x_test, images.y_test
    if config.train_size is not None:
        keep = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))
        x_train, y_train = x_train[keep[: config.train_size]], y_train[keep[: config.train_size]]
    if config.test_size is not None:
        x_test, y_test = x_test[: config.test_size], y_test[: config.test_size]
    mean, std = x_train.mean(), x_train.std()
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def _optimizer(model: torch.nn.Module, rule: str, manhattan: bool, config: ConvConfig, rate: float):
    decay = config.kp_weight_decay if rule == "KP" else config.weight_decay
    if manhattan:
        optimizer = torch.optim.SGD(
            model.parameters(), rate, momentum=config.momentum, weight_decay=decay
        )
        batch_manhattan(optimizer)
        return optimizer
    return torch.optim.AdamW(model.parameters(), rate, weight_decay=decay)


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _measure(model, rule: Rule, probe, step: int) -> dict[str, Any]:
    """Angles on the probe batch (:func:`alignment` puts BatchNorm's running statistics back),
    of the convolutional and linear layers only: a BatchNorm's scale and shift are no layer of
    the feedback rules, and averaging them in would dilute the layers' angles."""
    report = alignment(model, rule, probe, F.cross_entropy)
    layers = {n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    entry: dict[str, Any] = {
        "step": step,
        "update_angle": {k: _finite(v) for k, v in report.update_angle.items() if k in layers},
    }
    if isinstance(rule, LayerwiseFeedback):
        weights = weight_alignment(model, rule)
        entry["weight_angle"] = {k: _finite(v.angle) for k, v in weights.items()}
        entry["norm_ratio"] = {k: _finite(v.norm_ratio) for k, v in weights.items()}
    return entry


def train_one(
    rule_name: str,
    manhattan: bool,
    seed: int,
    config: ConvConfig,
    tensors: tuple[torch.Tensor, ...],
    progress: bool = True,
    lr: float | None = None,
) -> RunRecord:
    """Trains a fresh ``config.build()`` network with one rule and one seed; returns its record
    (``lr`` overrides :func:`learning_rate`; a tuning trial passes validation tensors in the test
    slots)."""
    x_train, y_train, x_test, y_test = tensors
    torch.manual_seed(seed)
    model = config.build(x_train.shape[1], x_train.shape[-1])
    rule = apply_rule(rule_name, model, seed)
    rate = learning_rate(config, rule_name, manhattan) if lr is None else lr
    optimizer = _optimizer(model, rule_name, manhattan, config, rate)
    total = math.ceil(len(x_train) / config.batch_size) * config.epochs
    every = max(1, total // max(1, config.measurements))
    probe = (x_train[: config.probe_size], y_train[: config.probe_size])
    generator = torch.Generator().manual_seed(seed)
    record = RunRecord(rule_name, manhattan, seed, math.nan, 0.0, lr=rate)
    record.history.append(_measure(model, rule, probe, 0))

    def measure(step: int) -> None:
        if step % every == 0 and step < total:
            record.history.append(_measure(model, rule, probe, step))

    done = fit(
        model,
        optimizer,
        lambda _: shuffled(len(x_train), config.batch_size, generator),
        lambda index: F.cross_entropy(model(x_train[index]), y_train[index]),
        epochs=config.epochs,
        total_steps=total,
        # cosine decay to 0 over the run; the rate of step s is that after s - 1 decays
        lr_at=lambda step, base: (
            base * 0.5 * (1 + math.cos(math.pi * min(step - 1, total) / total))
        ),
        after_step=measure,
        label=f"{rule_name}{' +BM' if manhattan else ''} seed {seed}",
        progress=progress,
    )
    record.train_loss, record.seconds = done.epoch_losses, done.seconds
    record.history.append(_measure(model, rule, probe, done.steps))
    record.test_error = test_error(model, x_test, y_test)
    return record


def test_error(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Classification error % of ``model`` in eval mode, in batches of 1,000."""
    model.eval()
    with torch.no_grad():
        wrong = sum(
            int((model(x[i : i + 1000]).argmax(dim=1) != y[i : i + 1000]).sum())
            for i in range(0, len(x), 1000)
        )
    return 100.0 * wrong / len(x)


def _train_job(tensors: tuple[torch.Tensor, ...], job: tuple) -> RunRecord:
    """One (rule, Batch Manhattan, seed) run, as :func:`run_jobs` calls it."""
    rule, manhattan, seed, config, progress = job
    return train_one(rule, manhattan, seed, config, tensors, progress)


def run_experiment(
    config: ConvConfig,
    tensors: tuple[torch.Tensor, ...] | None = None,
    progress: bool = True,
    workers: int = 1,
) -> list[RunRecord]:
    """Every (rule, Batch Manhattan, seed) of ``config``, over ``workers`` processes
    (:func:`~feedback_alignment.experiments.run.run_jobs`), after checking the rules and seeds;
    on ``tensors`` (default: Fashion-MNIST as ``config`` sizes it)."""
    unknown = [r for r in config.rules if r not in RULES]
    if unknown:
        raise ValueError(f"unknown rules {unknown}; choose from {list(RULES)}")
    if not config.seeds:
        raise ValueError(f"{config.task} needs at least one seed")
    tensors = tensors if tensors is not None else load_fashion_mnist(config)
    triples = [(r, bm, s) for s in config.seeds for bm in config.manhattan for r in config.rules]
    bars = progress and workers == 1
    records = run_jobs(
        _train_job,
        [(rule, bm, seed, config, bars) for rule, bm, seed in triples],
        config.task,
        shared=tensors,
        workers=workers,
        progress=progress,
        label=lambda job: job[:3],
    )
    for record in records:  # runs saved before their rate was stored: the rate they ran at
        if math.isnan(record.lr):
            record.lr = learning_rate(config, record.rule, record.manhattan)
    return records


def run_and_write(
    config: ConvConfig,
    out_dir: Path,
    tensors: tuple[torch.Tensor, ...] | None = None,
    progress: bool = True,
    title: str = "Fashion-MNIST",
    quick: bool = False,
    workers: int = 1,
) -> tuple[list[RunRecord], str, list[Path]]:
    """Runs every (rule, Batch Manhattan, seed); writes JSON, the table and plots into ``out_dir``.

    ``workers``: processes to spread the runs over (:func:`~feedback_alignment.experiments.run.run_jobs`).

    Returns:
        The records, the markdown section and the files written.
    """
    tensors = tensors if tensors is not None else load_fashion_mnist(config)
    records = run_experiment(config, tensors, progress, workers)
    sizes = {"train": len(tensors[0]), "test": len(tensors[2])}
    seconds = sum(r.seconds for r in records)
    table = summary(records, config, sizes, seconds, title, quick)
    files = [
        write_results(
            out_dir,
            "convnets",
            quick,
            config.seeds,
            config=config,
            data={"name": title, **sizes},
            seconds=seconds,
            biotorch_reference_error=BIOTORCH_FMNIST_LENET_ERROR,
            runs=records,
        ),
        *write_table(out_dir, table, config.seeds),
        *plot(records, out_dir, quick),
    ]
    markdown = f"### convnets: LeNet on {title}\n\n" + table.to_markdown()
    return records, markdown, files


@register_task(
    "convnets",
    "LeNet on Fashion-MNIST: BP, FA, sign-symmetry (uSF, frSF, brSF), KP, DFA, +/- Batch Manhattan",
)
def run(options: RunOptions) -> TaskReport:
    config = config_for(options)
    _, markdown, files = run_and_write(
        config, options.out_dir, progress=options.progress, quick=options.quick,
        workers=options.workers,
    )  # fmt: skip
    return TaskReport("convnets", markdown, files)


# --- tuning --------------------------------------------------------------------------------

VALIDATION_SIZE = 5000
"""Training images held out (the last of a fixed permutation) to score a tuning trial."""

SEARCH_EPOCHS = 2
"""Epochs of a tuning trial: a shorter proxy of the full run's 10 (a 10-epoch search of the 14
pairs would take about 40 minutes of one core more than the run itself); the cosine schedule is
the full run's, compressed."""


def validation_objective(
    full: Callable[[], ConvConfig],
    quick: Callable[[], ConvConfig],
    train_size: int | None = None,
) -> Callable[[str, dict[str, float], tuning.Report, bool], float]:
    """A tuning objective: the validation error % of one seed-0 run of the arm ``"FA"`` or
    ``"FA+BM"`` at ``values["lr"]``, with the config ``full()`` (or ``quick()``), trained on the
    training images less :data:`VALIDATION_SIZE` held out (the first ``train_size`` of the rest,
    if given) and scored on those held out: no choice is scored on the test images (they are
    loaded with the training set, and the standardisation's mean and std are the whole training
    set's, held-out images included)."""
    held_out: dict[bool, tuple[torch.Tensor, ...]] = {}

    def objective(name: str, values: dict[str, float], report: tuning.Report, is_quick: bool):
        rule_name, manhattan = name.removesuffix("+BM"), name.endswith("+BM")
        config = quick() if is_quick else full()
        if is_quick not in held_out:
            x, y, _, _ = load_fashion_mnist(config)
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
            held = min(VALIDATION_SIZE, len(x) // 5)
            train, val = order[:-held], order[-held:]
            train = train[:train_size] if train_size is not None and not is_quick else train
            held_out[is_quick] = (x[train], y[train], x[val], y[val])
        record = train_one(rule_name, manhattan, 0, config, held_out[is_quick], False, values["lr"])
        report(1, record.test_error)
        return record.test_error

    return objective


tuning.register_tunable(
    tuning.Tunable(
        task="convnets",
        arms=tuple(arm(r, bm) for bm in (False, True) for r in RULES),
        space=lambda name: {"lr": tuning.Param(1e-4, 1e-2)},
        defaults=lambda name: {
            "lr": ConvConfig().manhattan_lr if name.endswith("+BM") else ConvConfig().lr
        },
        objective=validation_objective(
            lambda: ConvConfig(epochs=SEARCH_EPOCHS, measurements=1),
            lambda: replace(presets.preset("convnets", "quick", ConvConfig()), measurements=1),
        ),
        direction="minimize",
        metric="validation error %",
        trials=8,
        schedule=f"Each trial trains seed 0 for {SEARCH_EPOCHS} epochs (the full run trains "
        f"{ConvConfig().epochs}; same batch, optimizer and cosine decay) on the training images "
        f"less {VALIDATION_SIZE} held out, scored on those.",
    )
)
