"""Part 3, the bottleneck (Launay et al. 2019): DFA through a b-wide or b-trained middle layer.

``features-800-b-800-10`` tanh, b swept: "narrow" (the middle layer has b units, an information
bottleneck as well) and "masked" (800 units of which only b learn, the paper's variant). The
alignment of the middle layer, of the layer below it, and accuracy, against b.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from feedback_alignment.experiments.papers import LAUNAY_2019_BOTTLENECK
from feedback_alignment.experiments.principled.common import (
    Built,
    Recipe,
    Run,
    Setting,
    group,
    load_split,
    spearman,
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
from feedback_alignment.models import MLP

TITLE = "The bottleneck effect (Launay et al. 2019)"

LAYER = {"narrow": "3", "masked": "3.trained"}
"""The middle layer's module path in each variant (its feedback point is the second point)."""


class PartlyTrained(nn.Module):
    """A tanh layer of ``width`` units of which only the first ``trained`` units learn.

    The paper's masked-update variant of the bottleneck: the next layer still sees all ``width``
    units (no information bottleneck), but only ``trained`` of them receive the DFA signal. The
    frozen rows are a separate ``Linear`` with ``requires_grad=False`` (the same initial
    distribution as the trained rows: PyTorch's default depends on the fan-in only), and the trained
    units' activation ``act`` is the feedback point, so the alignment measured there is exactly that
    of the units that learn. Equivalent to masking the gradient of rows ``trained:`` of one
    ``width``-wide layer, except that the principled feedback scale uses ``trained`` as the point's
    width (Adam makes that scale irrelevant).
    """

    def __init__(self, in_features: int, width: int, trained: int) -> None:
        super().__init__()
        if not 1 <= trained <= width:
            raise ValueError(f"trained units must be in [1, {width}], got {trained}")
        self.trained = nn.Linear(in_features, trained)
        self.act = nn.Tanh()
        self.frozen = nn.Linear(in_features, width - trained) if trained < width else None
        if self.frozen is not None:
            self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.trained(x))  # (N, trained): the feedback point
        if self.frozen is None:
            return h
        return torch.cat([h, torch.tanh(self.frozen(x))], dim=-1)  # (N, width)


def bottleneck_mlp(features: int, width: int, variant: str, wide: int = 800) -> Built:
    """``features-800-b-800-10`` tanh (``"narrow"``) or 800 wide with b trained (``"masked"``).

    The points are explicit; the middle layer's feedback point is the second of them.
    """
    if variant == "narrow":
        return MLP([features, wide, width, wide, 10], "tanh", flatten=True), ["2", "4", "6"]
    if variant == "masked":
        model = nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, wide),
            nn.Tanh(),
            PartlyTrained(wide, wide, width),
            nn.Linear(wide, wide),
            nn.Tanh(),
            nn.Linear(wide, 10),
        )
        return model, ["2", "3.act", "5"]
    raise ValueError(f"unknown bottleneck variant {variant!r}; choose 'narrow' or 'masked'")


def run(setting: Setting, seeds: Sequence[int], progress: bool) -> dict[str, Any]:
    """DFA with a b-wide (narrow) or b-trained (masked) middle layer, b swept; BP at the extremes."""
    split = load_split(setting.dataset, setting.train_limit, setting.test_limit)
    recipe = Recipe(setting.bottleneck_epochs, setting.lr, batch_size=setting.batch_size)
    widths = setting.bottleneck_widths
    jobs = [("DFA", variant, b) for variant in ("narrow", "masked") for b in widths]
    jobs += [("BP", "narrow", b) for b in sorted({min(widths), max(widths)})]
    runs = []
    for rule, variant, b in jobs:
        for seed in seeds:
            trained, _ = train_run(
                "bottleneck",
                f"{variant} b={b} {rule}",
                rule,
                functools.partial(bottleneck_mlp, split.features, b, variant, setting.wide),
                split,
                recipe,
                seed=seed,
                probe=setting.probe,
                progress=progress,
                settings={"variant": variant, "width": b},
            )
            runs.append(trained)
    return {"runs": runs, "curves": curves(runs), "features": split.features}


def _point_cosine(trained: Run, index: int) -> float:
    """Mean signal cosine at the run's feedback point ``index`` (0 below, 1 middle, 2 above)."""
    points = list(trained.signal_cosine)
    return trained.signal_cosine[points[index]][0] if len(points) > index else math.nan


def curves(runs: Sequence[Run]) -> dict[str, Any]:
    """Per variant: widths, mean middle-layer cosine, angle and accuracy, and Spearman vs width."""
    result: dict[str, Any] = {}
    for variant in ("narrow", "masked"):
        dfa = [r for r in runs if r.rule == "DFA" and r.settings["variant"] == variant]
        widths = sorted({r.settings["width"] for r in dfa})
        layer = LAYER[variant]
        by_width = {b: [r for r in dfa if r.settings["width"] == b] for b in widths}
        cosine = [finite_mean(_point_cosine(r, 1) for r in by_width[b]) for b in widths]
        # the layer below the middle one: BP's signal there passes through the b-wide layer
        below = [finite_mean(_point_cosine(r, 0) for r in by_width[b]) for b in widths]
        angle = [
            finite_mean(r.hidden_angles.get(layer, math.nan) for r in by_width[b]) for b in widths
        ]
        accuracy = [statistics.mean(100 * r.test_accuracy for r in by_width[b]) for b in widths]
        result[variant] = {
            "width": widths,
            "cosine": cosine,
            "cosine_below": below,
            "angle": angle,
            "accuracy": accuracy,
            "spearman_cosine": spearman(widths, cosine),
            "spearman_cosine_below": spearman(widths, below),
            "spearman_accuracy": spearman(widths, accuracy),
        }
    return result


def table(result: dict[str, Any], setting: Setting) -> Table:
    narrow, masked = result["curves"]["narrow"], result["curves"]["masked"]
    out = Table(
        "principled_bottleneck",
        [Column("b"), Column("cosine, narrow", 3), Column("cosine, masked", 3),
         Column("paper cosine (CIFAR-10, masked)", 3), Column("angle narrow (deg)", 1),
         Column("angle masked (deg)", 1), Column("cosine below, narrow", 3),
         Column("cosine below, masked", 3), Column("acc. narrow %", 2),
         Column("acc. masked %", 2), Column("paper acc. %", 1)],
        quick=setting.quick,
    )  # fmt: skip
    for i, b in enumerate(narrow["width"]):
        paper_cos, paper_acc = LAUNAY_2019_BOTTLENECK.get(b, (None, None))
        out.add(
            b, narrow["cosine"][i], masked["cosine"][i], paper_cos, narrow["angle"][i],
            masked["angle"][i], narrow["cosine_below"][i], masked["cosine_below"][i],
            narrow["accuracy"][i], masked["accuracy"][i], paper_acc,
        )  # fmt: skip
    paper_widths = sorted(LAUNAY_2019_BOTTLENECK)
    paper_rho = spearman(paper_widths, [LAUNAY_2019_BOTTLENECK[b][0] for b in paper_widths])
    bp_runs = group(result["runs"], rule="BP")
    bp = {  # mean over seeds per width
        b: statistics.mean(100 * r.test_accuracy for r in bp_runs if r.settings["width"] == b)
        for b in sorted({r.settings["width"] for r in bp_runs})
    }
    seeds = sorted({r.seed for r in result["runs"]})
    out.caption = (
        f"Means over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}). "
        "Spearman correlation with b: cosine narrow "
        f"{narrow['spearman_cosine']:.2f}, masked {masked['spearman_cosine']:.2f} (paper's logs "
        f"{paper_rho:.2f}); cosine of the layer below, narrow "
        f"{narrow['spearman_cosine_below']:.2f}, masked {masked['spearman_cosine_below']:.2f}; "
        f"accuracy narrow {narrow['spearman_accuracy']:.2f}, masked "
        f"{masked['spearman_accuracy']:.2f}. BP, narrow: "
        + ", ".join(f"{v:.2f}% at b={k}" for k, v in sorted(bp.items()))
        + ".\n"
        f"DFA, {setting.dataset} {result['features']}-{setting.wide}-b-{setting.wide}-10 tanh, "
        f"{setting.bottleneck_epochs} epochs, Adam lr {setting.lr}. "
        "Cosine: mean over the probe batch of the per-sample cosine between DFA's and BP's signal at "
        "the middle layer's feedback point (for 'masked', over its b trained units only); angle: "
        "between DFA's and BP's update of the middle layer's (trained) weights; cosine below: the "
        "same cosine at the first hidden layer, whose BP signal passes through the middle layer. "
        "A per-sample cosine over b = 1 unit is the sign agreement (+1 or -1). Narrow: the layer "
        "has b units (an information bottleneck as well); masked: 800 units of which b learn "
        "(the paper's variant). The paper's figures are CIFAR-10 (3072 inputs), ours Fashion-MNIST."
    )
    return out


def plots(result: dict[str, Any], setting: Setting, out_dir: Path) -> list[Path]:
    """The b-wide layer's alignment, that of the layer below it, and accuracy, against b."""
    return [
        _plot(result["curves"], metric, setting, out_dir / f"bottleneck_{metric}.png")
        for metric in ("cosine", "cosine_below", "accuracy")
    ]


def _plot(curves_: dict[str, Any], metric: str, setting: Setting, path: Path) -> Path:
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4))
    names = {"narrow": "narrow layer (b units)", "masked": f"{setting.wide} units, b trained"}
    for variant, marker in (("narrow", "o"), ("masked", "s")):
        curve = curves_[variant]
        rho = curve[f"spearman_{metric}"]
        axis.plot(curve["width"], curve[metric], marker=marker,
                  label=f"ours, {names[variant]} (Spearman {rho:.2f})")  # fmt: skip
    if metric == "cosine":
        widths = sorted(LAUNAY_2019_BOTTLENECK)
        axis.plot(widths, [LAUNAY_2019_BOTTLENECK[b][0] for b in widths], marker="^",
                  linestyle=":", color="grey", label="Launay et al. 2019, CIFAR-10, b trained")  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("middle-layer width b (log scale)")
    if metric == "cosine":
        axis.set_ylabel("cosine(DFA signal, BP signal)\nat the middle layer")
        text = f"Bottleneck: alignment of the b-wide layer ({setting.dataset}, DFA)"
    elif metric == "cosine_below":
        axis.set_ylabel("cosine(DFA signal, BP signal)\nat the first hidden layer")
        text = f"Bottleneck: alignment of the layer below it ({setting.dataset}, DFA)"
    else:
        axis.set_ylabel("test accuracy (%)")
        text = f"Bottleneck: accuracy vs width ({setting.dataset}, DFA)"
    axis.set_title(title(text, setting.quick))
    axis.legend(fontsize=8)
    axis.grid(True, alpha=0.3)
    return save_figure(fig, path)
