"""Task ``convnets``: layer-wise feedback in a LeNet on Fashion-MNIST (Moskovitz et al. 2018).

Trains one LeNet definition with BP, FA, uSF, frSF, brSF, Kolen-Pollack and DFA, each with a plain
optimizer (AdamW) and with Batch Manhattan (SGD with momentum on ``sign(dW)``), and records the test
error, and over training, per layer, the update angle (rule's ``dW`` vs BP's on a fixed probe batch)
and the weight angle between ``W^T`` and ``B``. The claim under test: plain FA lags BP in conv
nets, while feedback that agrees with ``W`` in sign comes close to BP.

Writes ``results.json``, ``results.md`` (our errors beside BioTorch's) and PNG plots into the task
folder. Rerun: ``feedback-alignment reproduce --tasks convnets`` (``--quick`` for the CPU-minutes
version).

References:
    Moskovitz, Litwin-Kumar, Abbott, "Feedback alignment in deep convolutional networks", 2018.
    Liao, Leibo, Poggio, "How Important Is Weight Symmetry in Backpropagation?", AAAI 2016.
    Sanfiz, Akrout, "Benchmarking the Accuracy and Robustness of Feedback Alignment Algorithms"
    (BioTorch), 2021: the reference errors.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from feedback_alignment.alignment import alignment, weight_alignment
from feedback_alignment.experiments.registry import RunOptions, TaskReport, register_task
from feedback_alignment.models import LeNet
from feedback_alignment.optim import batch_manhattan
from feedback_alignment.rules import (
    BP,
    DFA,
    FA,
    KolenPollack,
    LayerwiseFeedback,
    Rule,
    brSF,
    frSF,
    uSF,
)

log = logging.getLogger(__name__)

RULES: dict[str, Callable[[int], Rule]] = {
    "BP": lambda seed: BP(),
    "FA": lambda seed: FA(seed=seed),
    "uSF": lambda seed: uSF(),
    "frSF": lambda seed: frSF(seed=seed),
    "brSF": lambda seed: brSF(seed=seed),
    "KP": lambda seed: KolenPollack(seed=seed),
    "DFA": lambda seed: DFA(seed=seed),
}
"""The rules of the task by table name (a seed in, a fresh rule out)."""

BIOTORCH_FASHION_MNIST_LENET: dict[str, float] = {"BP": 9.2, "FA": 13.06, "DFA": 12.81, "uSF": 9.69}
"""BioTorch's Fashion-MNIST LeNet top-1 test errors in % (REFERENCE.md, read in their tables)."""


@dataclass
class ConvConfig:
    """Settings of the task (defaults: the full run, about 20 minutes on 2 CPU cores).

    ``weight_decay`` is decoupled (AdamW) for plain runs and coupled (SGD) for Batch Manhattan
    runs, where it acts after the sign as in Liao et al. Kolen-Pollack aligns ``B`` with ``W``
    only through weight decay, so its runs use ``kp_weight_decay`` (on ``W`` and, by the rule,
    on ``B``).
    """

    rules: tuple[str, ...] = ("BP", "FA", "uSF", "frSF", "brSF", "KP", "DFA")
    manhattan: tuple[bool, ...] = (False, True)
    epochs: int = 2
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
    seed: int = 0


def quick_config() -> ConvConfig:
    """The ``--quick`` settings: 4,000 training images, 1 epoch of batch 32, every rule (< 1 min)."""
    return ConvConfig(epochs=1, batch_size=32, train_size=4000, test_size=2000, measurements=4)


@dataclass
class RunRecord:
    """One training run: a rule, with or without Batch Manhattan."""

    rule: str
    manhattan: bool
    seed: int
    test_error: float  # %
    seconds: float
    train_loss: list[float] = field(default_factory=list)  # mean per epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # angles over training


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


def _optimizer(model: torch.nn.Module, rule: str, manhattan: bool, config: ConvConfig):
    decay = config.kp_weight_decay if rule == "KP" else config.weight_decay
    if manhattan:
        optimizer = torch.optim.SGD(
            model.parameters(), config.manhattan_lr, momentum=config.momentum, weight_decay=decay
        )
        batch_manhattan(optimizer)
        return optimizer
    return torch.optim.AdamW(model.parameters(), config.lr, weight_decay=decay)


def _measure(model, rule, probe, step: int) -> dict[str, Any]:
    report = alignment(model, rule, probe, F.cross_entropy)
    entry: dict[str, Any] = {
        "step": step,
        "update_angle": {k: _finite(v) for k, v in report.update_angle.items()},
    }
    if isinstance(rule, LayerwiseFeedback):
        weights = weight_alignment(model, rule)
        entry["weight_angle"] = {k: _finite(v.angle) for k, v in weights.items()}
        entry["norm_ratio"] = {k: _finite(v.norm_ratio) for k, v in weights.items()}
    return entry


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def train_one(
    rule_name: str,
    manhattan: bool,
    config: ConvConfig,
    tensors: tuple[torch.Tensor, ...],
    progress: bool = True,
) -> RunRecord:
    """Trains a fresh LeNet with one rule and returns its record."""
    x_train, y_train, x_test, y_test = tensors
    torch.manual_seed(config.seed)
    model = LeNet(in_channels=x_train.shape[1], image_size=x_train.shape[-1])
    rule = RULES[rule_name](config.seed)
    rule.apply(model)
    optimizer = _optimizer(model, rule_name, manhattan, config)
    steps_per_epoch = math.ceil(len(x_train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    )
    every = max(1, total // max(1, config.measurements))
    probe = (x_train[: config.probe_size], y_train[: config.probe_size])
    generator = torch.Generator().manual_seed(config.seed)
    record = RunRecord(rule_name, manhattan, config.seed, math.nan, 0.0)
    record.history.append(_measure(model, rule, probe, 0))
    label = f"{rule_name}{' +BM' if manhattan else ''}"
    bar = tqdm(total=total, desc=f"{label:>9}", disable=not progress, leave=False, unit="step")
    start, step = time.perf_counter(), 0
    for _ in range(config.epochs):
        order = torch.randperm(len(x_train), generator=generator)
        running = 0.0
        for i in range(0, len(order), config.batch_size):
            index = order[i : i + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            running += float(loss.detach()) * len(index)
            if step % every == 0 and step < total:
                record.history.append(_measure(model, rule, probe, step))
            bar.update()
        record.train_loss.append(running / len(order))
        bar.set_postfix(loss=f"{record.train_loss[-1]:.3f}")
    bar.close()
    record.seconds = time.perf_counter() - start
    record.history.append(_measure(model, rule, probe, step))
    model.eval()
    with torch.no_grad():
        wrong = sum(
            int((model(x_test[i : i + 1000]).argmax(dim=1) != y_test[i : i + 1000]).sum())
            for i in range(0, len(x_test), 1000)
        )
    record.test_error = 100.0 * wrong / len(x_test)
    log.info("%s: test error %.2f%% in %.0f s", label, record.test_error, record.seconds)
    return record


def run_experiment(
    config: ConvConfig,
    out_dir: Path,
    tensors: tuple[torch.Tensor, ...] | None = None,
    progress: bool = True,
    title: str = "Fashion-MNIST",
) -> tuple[list[RunRecord], str, list[Path]]:
    """Runs every (rule, Batch Manhattan) pair; writes JSON, markdown and plots into ``out_dir``.

    Returns:
        The records, the markdown section and the files written.
    """
    unknown = [r for r in config.rules if r not in RULES]
    if unknown:
        raise ValueError(f"unknown rules {unknown}; choose from {list(RULES)}")
    tensors = tensors if tensors is not None else load_fashion_mnist(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(rule, bm) for bm in config.manhattan for rule in config.rules]
    start = time.perf_counter()
    records = [
        train_one(rule, bm, config, tensors, progress)
        for rule, bm in tqdm(jobs, desc="convnets", disable=not progress, unit="run")
    ]
    seconds = time.perf_counter() - start
    sizes = {"train": len(tensors[0]), "test": len(tensors[2])}
    payload = {
        "config": asdict(config),
        "data": {"name": title, **sizes},
        "seconds": seconds,
        "threads": torch.get_num_threads(),
        "biotorch_reference_error": BIOTORCH_FASHION_MNIST_LENET,
        "runs": [asdict(r) for r in records],
    }
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(payload, indent=2))
    markdown = summary_table(records, config, sizes, seconds, title)
    md_path = out_dir / "results.md"
    md_path.write_text(markdown + "\n")
    files = [json_path, md_path, *plot(records, out_dir)]
    return records, markdown, files


def _final_mean(record: RunRecord, key: str, hidden_only: bool = True) -> float:
    values = record.history[-1].get(key, {})
    names = list(values)[:-1] if hidden_only else list(values)
    finite = [values[n] for n in names if values[n] is not None]
    return sum(finite) / len(finite) if finite else math.nan


def _fmt(value: float, digits: int = 1) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def summary_table(
    records: list[RunRecord],
    config: ConvConfig,
    sizes: dict[str, int],
    seconds: float,
    title: str = "Fashion-MNIST",
) -> str:
    """Markdown: test error (ours, BioTorch's), final hidden-layer update and weight angles."""
    lines = [
        f"### convnets: LeNet on {title}",
        "",
        "| rule | Batch Manhattan | test error % | BioTorch error % | hidden update angle (deg) "
        "| weight angle W^T vs B, hidden layers (deg) | time (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        reference = BIOTORCH_FASHION_MNIST_LENET.get(r.rule) if not r.manhattan else None
        lines.append(
            f"| {r.rule} | {'yes' if r.manhattan else 'no'} | {r.test_error:.2f} | "
            f"{_fmt(reference, 2) if reference is not None else '—'} | "
            f"{_fmt(_final_mean(r, 'update_angle'))} | {_fmt(_final_mean(r, 'weight_angle'))} | "
            f"{r.seconds:.0f} |"
        )
    optimizer = (
        f"AdamW lr {config.lr} (weight decay {config.weight_decay}); Batch Manhattan: SGD momentum "
        f"{config.momentum} lr {config.manhattan_lr} on sign(dW); cosine decay; KP weight decay "
        f"{config.kp_weight_decay}"
    )
    lines += [
        "",
        f"LeNet-5 (conv 6, 16; linear 120, 84; ReLU), {sizes['train']:,} training / "
        f"{sizes['test']:,} test images, {config.epochs} epoch(s), batch {config.batch_size}, "
        f"{optimizer}; seed {config.seed}; {seconds / 60:.1f} min on {torch.get_num_threads()} "
        "threads. Angles at the end of training on a fixed probe batch, averaged over the hidden "
        "layers (all but the top one): the update angle is between the rule's and BP's weight "
        "update (0 = BP); the weight angle between vec(W^T) and vec(B). BioTorch trained their "
        "LeNet for many more epochs, so its errors are a target, not a like-for-like comparison.",
    ]
    return "\n".join(lines)


def plot(records: list[RunRecord], out_dir: Path) -> list[Path]:
    """Bar chart of the test errors and per-layer angle curves; returns the PNG paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is a dependency; keep the task usable without it
        log.warning("matplotlib is not installed: no plots")
        return []
    files = []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    labels = [f"{r.rule}{'+BM' if r.manhattan else ''}" for r in records]
    ax.bar(
        labels,
        [r.test_error for r in records],
        color=["C1" if r.manhattan else "C0" for r in records],
    )
    ax.set_ylabel("test error %")
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    files.append(out_dir / "test_error.png")
    fig.savefig(files[-1], dpi=120)
    plt.close(fig)
    for key, name in (
        ("update_angle", "update angle vs BP (deg)"),
        ("weight_angle", "angle W^T vs B (deg)"),
    ):
        shown = [r for r in records if r.rule != "BP" and key in r.history[-1]]
        if not shown:
            continue
        cols = min(4, len(shown))
        rows = math.ceil(len(shown) / cols)
        fig, axes = plt.subplots(
            rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True
        )
        for ax, record in zip(axes.flat, shown, strict=False):
            steps = [h["step"] for h in record.history]
            for layer in record.history[-1][key]:
                values = [h[key].get(layer) for h in record.history]
                ax.plot(steps, [math.nan if v is None else v for v in values], label=layer)
            ax.set_title(f"{record.rule}{' +BM' if record.manhattan else ''}", fontsize=9)
            ax.axhline(90, color="grey", lw=0.5, ls="--")
            ax.set_xlabel("step", fontsize=8)
        for ax in axes.flat[len(shown) :]:
            ax.axis("off")
        axes[0][0].set_ylabel(name, fontsize=8)
        axes[0][0].legend(fontsize=6, title="layer", title_fontsize=6)
        fig.tight_layout()
        files.append(out_dir / f"{key}.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    return files


@register_task(
    "convnets",
    "LeNet on Fashion-MNIST: BP, FA, sign-symmetry (uSF, frSF, brSF), KP, DFA, +/- Batch Manhattan",
)
def run(options: RunOptions) -> TaskReport:
    config = quick_config() if options.quick else ConvConfig()
    config = replace(config, seed=options.seeds[0])
    _, markdown, files = run_experiment(config, options.out_dir, progress=options.progress)
    return TaskReport("convnets", markdown, files)
