"""Plots of the principled-DFA experiments: one idea per figure, axes labelled, PNG.

* ``alignment_angles.png``: DFA's per-layer update angle through training, above the probe loss on
  the same (log) step axis, so that "align, then memorise" can be read off: the angles fall first.
* ``alignment_cosine.png``: the per-point signal cosine through training.
* ``bottleneck_cosine.png``, ``bottleneck_cosine_below.png``, ``bottleneck_accuracy.png``: the
  alignment of the b-wide layer, that of the layer below it, and accuracy, vs width b.

References:
    Launay, Poli, Krzakala, "Principled Training of Neural Networks with Direct Feedback
    Alignment", 2019. Refinetti et al., "Align, then memorise", ICML 2021.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DPI = 110


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_part(part: str, result: dict[str, Any], setting: Any, out_dir: Path) -> list[Path]:
    """The plots of one part (none for the parts that are tables only)."""
    if part == "alignment" and result.get("history"):
        return [
            plot_alignment_angles(
                result["history"],
                f"{setting.dataset}, {result['arch']}",
                out_dir / "alignment_angles.png",
            ),
            plot_alignment_cosine(
                result["history"],
                f"{setting.dataset}, {result['arch']}",
                out_dir / "alignment_cosine.png",
            ),
        ]
    if part == "bottleneck":
        from feedback_alignment.experiments.principled import LAUNAY_BOTTLENECK

        curves = result["curves"]
        return [
            plot_bottleneck(
                curves, "cosine", LAUNAY_BOTTLENECK, setting, out_dir / "bottleneck_cosine.png"
            ),
            plot_bottleneck(
                curves, "cosine_below", None, setting, out_dir / "bottleneck_cosine_below.png"
            ),
            plot_bottleneck(curves, "accuracy", None, setting, out_dir / "bottleneck_accuracy.png"),
        ]
    return []


def _series(history: Sequence[dict[str, Any]], key: str, name: str) -> list[float]:
    values = []
    for h in history:
        value = h[key].get(name, math.nan)
        values.append(value[0] if isinstance(value, (list, tuple)) else value)
    return values


def plot_alignment_angles(history: Sequence[dict[str, Any]], what: str, path: Path) -> Path:
    plt = _pyplot()
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
    top.set_title(f"DFA, {what} tanh: update angle per hidden layer; loss")
    bottom.plot(steps, [h["loss"] for h in history], color="black")
    bottom.set_ylabel("probe-batch loss")
    bottom.set_xlabel("training step (log scale)")
    bottom.set_xscale("log")
    for axis in (top, bottom):
        axis.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_alignment_cosine(history: Sequence[dict[str, Any]], what: str, path: Path) -> Path:
    plt = _pyplot()
    steps = [h["step"] for h in history]
    points = list(history[0]["cosine"])
    fig, axis = plt.subplots(figsize=(7, 4))
    colours = plt.cm.viridis([i / max(1, len(points) - 1) for i in range(len(points))])
    for point, colour in zip(points, colours, strict=True):
        axis.plot(steps, _series(history, "cosine", point), color=colour, label=f"point {point}")
    axis.axhline(0, color="grey", linestyle="--", linewidth=1)
    axis.set_xscale("log")
    axis.set_xlabel("training step (log scale)")
    axis.set_ylabel("cosine(DFA signal, BP signal)")
    axis.set_title(f"DFA on {what} tanh: signal alignment per feedback point")
    axis.legend(title="after tanh", fontsize=8, ncol=2)
    axis.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_bottleneck(
    curves: dict[str, Any],
    metric: str,
    paper: dict[int, tuple[float, float | None]] | None,
    setting: Any,
    path: Path,
) -> Path:
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4))
    names = {"narrow": "narrow layer (b units)", "masked": f"{setting.wide} units, b trained"}
    for variant, marker in (("narrow", "o"), ("masked", "s")):
        curve = curves[variant]
        rho = curve[f"spearman_{metric}"]
        axis.plot(
            curve["width"],
            curve[metric],
            marker=marker,
            label=f"ours, {names[variant]} (Spearman {rho:.2f})",
        )
    if paper is not None:
        widths = sorted(paper)
        axis.plot(
            widths,
            [paper[b][0] for b in widths],
            marker="^",
            linestyle=":",
            color="grey",
            label="Launay et al. 2019, CIFAR-10, b trained",
        )
    axis.set_xscale("log")
    axis.set_xlabel("middle-layer width b (log scale)")
    if metric == "cosine":
        axis.set_ylabel("cosine(DFA signal, BP signal)\nat the middle layer")
        axis.set_title(f"Bottleneck: alignment of the b-wide layer ({setting.dataset}, DFA)")
    elif metric == "cosine_below":
        axis.set_ylabel("cosine(DFA signal, BP signal)\nat the first hidden layer")
        axis.set_title(f"Bottleneck: alignment of the layer below it ({setting.dataset}, DFA)")
    else:
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(f"Bottleneck: accuracy vs width ({setting.dataset}, DFA)")
    axis.legend(fontsize=8)
    axis.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
