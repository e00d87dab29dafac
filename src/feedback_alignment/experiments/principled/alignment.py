"""Part 2, alignment over training: DFA's per-layer update angle and signal cosine, monitored.

The plots put the angles above the probe loss on one (log) step axis, so that "align, then
memorise" (Refinetti et al. 2021) can be read off: the angles would fall first.

References:
    Refinetti, d'Ascoli, Ohana, Goldt, "Align, then memorise: the dynamics of learning with
    feedback alignment", ICML 2021.
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feedback_alignment.experiments.principled.common import (
    Recipe,
    Run,
    Setting,
    block_mlp,
    load_split,
    train_run,
)
from feedback_alignment.experiments.results import (
    Column,
    Table,
    finite_mean,
    pyplot,
    save_figure,
    title,
)

TITLE = "Alignment over training"


def run_experiment(setting: Setting, seeds: Sequence[int], progress: bool) -> dict[str, Any]:
    """DFA on the 7x240 tanh MLP with an :class:`AlignmentMonitor` on a fixed probe batch."""
    split = load_split(setting.dataset, setting.train_limit, setting.test_limit)
    arch, hidden = list(setting.mlp_archs().items())[1]
    sizes = [split.features, *hidden, 10]
    trained, monitor = train_run(
        "alignment",
        f"{setting.dataset} {arch} DFA (monitored)",
        "DFA",
        functools.partial(block_mlp, sizes),
        split,
        Recipe(setting.alignment_epochs, setting.lr, batch_size=setting.batch_size),
        seed=seeds[0],
        probe=setting.probe,
        progress=progress,
        monitor_every=setting.alignment_every,
        settings={"arch": arch},
    )
    history = [
        {
            "step": step,
            "loss": report.loss,
            "angles": report.hidden_angles(),
            "cosine": {k: list(v) for k, v in report.signal_cosine.items()},
        }
        for step, report in (monitor.history if monitor else [])
    ]
    return {"runs": [trained], "history": history, "arch": arch}


def landmarks(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Where the angles and the loss stand at the first measurement, their best, and the end."""
    if not history:
        return {}
    layers = list(history[0]["angles"])
    mean_angles = [finite_mean(h["angles"].values()) for h in history]
    best = min(range(len(history)), key=lambda i: mean_angles[i])
    loss0 = history[0]["loss"]
    # the step by which the loss has fallen half of the way it falls in the whole run
    loss_end = min(h["loss"] for h in history)
    half = next(h["step"] for h in history if h["loss"] <= (loss0 + loss_end) / 2)
    return {
        "layers": layers,
        "first": {"step": history[0]["step"], "mean_angle": mean_angles[0], "loss": loss0},
        "best": {"step": history[best]["step"], "mean_angle": mean_angles[best]},
        "last": {
            "step": history[-1]["step"],
            "mean_angle": mean_angles[-1],
            "loss": history[-1]["loss"],
        },
        "loss_half_step": half,
    }


def checkpoints(history: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """About ``count`` log-spaced measurements, first and last included."""
    if len(history) <= count:
        return list(history)
    picks = {round(math.exp(i / (count - 1) * math.log(len(history)))) - 1 for i in range(count)}
    return [history[i] for i in sorted(picks | {0, len(history) - 1})]


def summary(result: dict[str, Any], setting: Setting) -> Table:
    history = result["history"]
    trained: Run = result["runs"][0]
    if not history:
        out = Table("principled_alignment", [Column("step")], quick=setting.quick)
        out.caption = "No alignment measurement was taken (the run was shorter than the period)."
        return out
    stats = landmarks(history)
    layers = stats["layers"]
    points = list(history[0]["cosine"])
    out = Table(
        "principled_alignment",
        [Column("step"), Column("probe loss", 3)]
        + [Column(f"angle {n}", 1) for n in layers]
        + [Column(f"cos {p}", 3) for p in points],
        quick=setting.quick,
    )
    for h in checkpoints(history, 6):
        out.add(
            h["step"],
            h["loss"],
            *(h["angles"].get(n, math.nan) for n in layers),
            *(h["cosine"][p][0] for p in points),
        )
    out.caption = (
        f"DFA, {setting.dataset} {result['arch']} tanh, {setting.alignment_epochs} epochs, one "
        f"run (seed {trained.seed}), "
        f"measured every {setting.alignment_every} steps on a fixed probe batch of "
        f"{setting.probe} training images; final test accuracy {100 * trained.test_accuracy:.2f}%. "
        f"Mean hidden update angle {stats['first']['mean_angle']:.1f} deg at step "
        f"{stats['first']['step']}, lowest {stats['best']['mean_angle']:.1f} deg at step "
        f"{stats['best']['step']}, {stats['last']['mean_angle']:.1f} deg at the end (step "
        f"{stats['last']['step']}); the probe loss had fallen half way by step "
        f"{stats['loss_half_step']}. Angles are per hidden Linear (module path), cosines per "
        "feedback point (the tanh after it)."
    )
    return out


def _series(history: Sequence[dict[str, Any]], key: str, name: str) -> list[float]:
    values = []
    for h in history:
        value = h[key].get(name, math.nan)
        values.append(value[0] if isinstance(value, (list, tuple)) else value)
    return values


def _step_axis(axis: Any, steps: Sequence[int]) -> None:
    """A log step axis labelled 1, 2, 5, 10, 20, ... in plain numbers (only 1, 10, 100, ... over
    more than three decades), with no labels on the minor ticks (matplotlib labels them
    ``2x10^1`` over a short range, and they overlap)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    positive = [s for s in steps if s > 0] or [1]
    decades = math.log10(max(positive) / min(positive))
    axis.set_xscale("log")
    axis.xaxis.set_major_locator(
        LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3 else (1.0,))
    )
    axis.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
    axis.xaxis.set_minor_formatter(NullFormatter())
    axis.set_xlabel("training step (log scale)")


def _title(text: str, quick: bool, width: int = 60) -> str:
    """The plot title wrapped to lines that fit a 7-inch-wide figure (quick mode first)."""
    return textwrap.fill(title(text, quick), width)


def plots(result: dict[str, Any], setting: Setting, out_dir: Path) -> list[Path]:
    """``alignment_angles.png`` (angles above the loss) and ``alignment_cosine.png``."""
    history = result.get("history")
    if not history:
        return []
    what = f"{setting.dataset} {result['arch']} tanh"
    plt = pyplot()
    steps = [h["step"] for h in history]

    layers = list(history[0]["angles"])
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    colours = plt.cm.viridis([i / max(1, len(layers) - 1) for i in range(len(layers))])
    for layer, colour in zip(layers, colours, strict=True):
        top.plot(steps, _series(history, "angles", layer), color=colour, label=f"layer {layer}")
    top.axhline(90, color="grey", linestyle="--", linewidth=1, label="90° (no descent)")
    top.set_ylabel("update angle to BP (degrees)")
    highest = max((a for h in history for a in h["angles"].values() if a == a), default=90.0)
    top.set_ylim(0, max(100.0, highest + 5))
    top.legend(title="hidden Linear", fontsize=8, ncol=2, loc="lower left")
    top.set_title(_title(f"DFA, {what}: update angle per hidden layer, and loss", setting.quick))
    bottom.plot(steps, [h["loss"] for h in history], color="black")
    bottom.set_ylabel("probe-batch loss")
    _step_axis(bottom, steps)
    for axis in (top, bottom):
        axis.grid(True, alpha=0.3)
    angles = save_figure(fig, out_dir / "alignment_angles.png")

    points = list(history[0]["cosine"])
    fig, axis = plt.subplots(figsize=(7, 4))
    colours = plt.cm.viridis([i / max(1, len(points) - 1) for i in range(len(points))])
    for point, colour in zip(points, colours, strict=True):
        axis.plot(steps, _series(history, "cosine", point), color=colour, label=f"point {point}")
    axis.axhline(0, color="grey", linestyle="--", linewidth=1)
    _step_axis(axis, steps)
    axis.set_ylabel("cosine(DFA signal, BP signal)")
    axis.set_title(_title(f"DFA, {what}: signal alignment per feedback point", setting.quick))
    axis.legend(title="after tanh", fontsize=8, ncol=2)
    axis.grid(True, alpha=0.3)
    return [angles, save_figure(fig, out_dir / "alignment_cosine.png")]
