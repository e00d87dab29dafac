"""The conv-net tasks' outputs: the LeNet error table beside BioTorch's, with each rule's rate and
its final angles, and the figures (errors; per-layer update and weight angles over training).

Reads the runs only (their shapes: :mod:`.convnets_schema`); :mod:`.resnet` reads :func:`final_mean`
too.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from feedback_alignment.experiments import tuning
from feedback_alignment.experiments.convnets_schema import ConvConfig, RunRecord
from feedback_alignment.experiments.papers import BIOTORCH_FMNIST_LENET_ERROR
from feedback_alignment.experiments.results import (
    Column,
    Table,
    finite_mean,
    mean_std,
    pyplot,
    save_figure,
)
from feedback_alignment.experiments.results import title as plot_title


def final_mean(record: RunRecord, key: str) -> float:
    """Mean over the hidden layers (all but the top one) of the last measurement of ``key``."""
    values = record.history[-1].get(key, {})
    names = list(values)[:-1]
    return finite_mean(values[n] for n in names if values[n] is not None)


def run_rate(group: list[RunRecord]) -> float:
    """The rate a group of runs trained at (NaN where they differ: a table shows one rate per
    group). Runs saved before the rate was stored get it from the task
    (:func:`~feedback_alignment.experiments.convnets.run_experiment`), so the report needs no config."""
    rates = {r.lr for r in group}
    return rates.pop() if len(rates) == 1 else math.nan


def summary(
    records: list[RunRecord],
    config: ConvConfig,
    sizes: dict[str, int],
    seconds: float,
    title: str = "Fashion-MNIST",
    quick: bool = False,
) -> Table:
    """Test error (ours, BioTorch's), final hidden-layer update and weight angles, over seeds."""
    table = Table(
        "convnets_" + title.lower().replace("-", "_"),
        [
            Column("rule", align="left"),
            Column("Batch Manhattan", align="left"),
            Column("lr", 3),
            Column("test error %", 2),
            Column("BioTorch error %", 2),
            Column("hidden update angle (deg)", 1),
            Column("weight angle W^T vs B (deg)", 1),
        ],
        quick=quick,
    )
    for bm in config.manhattan:
        for rule in config.rules:
            group = [r for r in records if r.rule == rule and r.manhattan == bm]
            if not group:
                continue
            rate = run_rate(group)
            table.add(
                rule,
                bm,
                f"{rate:.2g}",
                mean_std(r.test_error for r in group).cell(single=True),
                None if bm else BIOTORCH_FMNIST_LENET_ERROR.get(rule),
                mean_std(final_mean(r, "update_angle") for r in group).cell(single=True),
                mean_std(final_mean(r, "weight_angle") for r in group).cell(single=True),
            )
    stored = tuning.tuned_values("convnets", config.tuned_dir) if config.tuned else {}
    optimizer = (
        f"AdamW (weight decay {config.weight_decay}) or, with Batch Manhattan, SGD momentum "
        f"{config.momentum} on sign(dW); lr per pair in the table ("
        + (
            f"tuned on held-out training images for {len(stored)} pairs, hand-set "
            f"{config.lr} / {config.manhattan_lr} otherwise"
            if stored
            else f"hand-set: AdamW {config.lr}, Batch Manhattan {config.manhattan_lr}"
        )
        + f"); cosine decay; KP weight decay {config.kp_weight_decay}"
    )
    table.caption = (
        f"LeNet-5 (conv 6, 16; linear 120, 84; ReLU), {sizes['train']:,} training / "
        f"{sizes['test']:,} test images, {config.epochs} epoch(s), batch {config.batch_size}, "
        f"{optimizer}; seeds {list(config.seeds)} (mean ± std over seeds where more than one); "
        f"{seconds / 60:.1f} min of training (summed over runs) on {torch.get_num_threads()} "
        "thread(s) per run. Angles at the "
        "end of training on a fixed probe batch, averaged over the hidden layers (all but the top "
        "one): the update angle is between the rule's and BP's weight update (0 = BP); the weight "
        "angle between vec(W^T) and vec(B). BioTorch trained their LeNet for many more epochs, so "
        "its errors are a target, not a like-for-like comparison."
    )
    return table


def plot(records: list[RunRecord], out_dir: Path, quick: bool = False) -> list[Path]:
    """Bar chart of the test errors and per-layer angle curves (first seed); the PNG paths."""
    plt = pyplot()
    first = [r for r in records if r.seed == records[0].seed]
    files = []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(
        [f"{r.rule}{'+BM' if r.manhattan else ''}" for r in first],
        [r.test_error for r in first],
        color=["C1" if r.manhattan else "C0" for r in first],
    )
    ax.set_ylabel("test error %")
    ax.set_title(plot_title(f"LeNet test error (seed {records[0].seed})", quick), fontsize=9)
    ax.tick_params(axis="x", rotation=60)
    files.append(save_figure(fig, out_dir / "test_error.png", dpi=120))
    for key, name in (
        ("update_angle", "update angle vs BP (deg)"),
        ("weight_angle", "angle W^T vs B (deg)"),
    ):
        shown = [r for r in first if r.rule != "BP" and key in r.history[-1]]
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
            ax.set_title(
                plot_title(f"{record.rule}{' +BM' if record.manhattan else ''}", quick), fontsize=9
            )
            ax.axhline(90, color="grey", lw=0.5, ls="--")
            ax.set_xlabel("step", fontsize=8)
        for ax in axes.flat[len(shown) :]:
            ax.axis("off")
        axes[0][0].set_ylabel(name, fontsize=8)
        axes[0][0].legend(fontsize=6, title="layer", title_fontsize=6)
        files.append(save_figure(fig, out_dir / f"{key}.png"))
    return files
