"""Part 3, the bottleneck (Launay et al. 2019): DFA when only part of the middle layer learns.

``features-800-800-800-10`` tanh, b swept over 1 ... 800. Three ways to let "b units' worth" of
the middle layer learn:

* ``entries`` (**the paper's definition**, the claims' measurement): the middle layer keeps its
  800 units and every unit still receives the DFA signal ``B e``, but a fixed random fraction
  ``1 - b/800`` of the *entries* of its weight gradient and of its bias gradient is zeroed
  (:class:`EntryMaskedLinear`). The alignment is the per-sample cosine between DFA's and BP's
  signal over all 800 outputs of the layer, averaged over the probe batch, as in the authors' logs.
* ``rows``: 800 units of which b whole rows (units) learn and the others are frozen; the cosine is
  taken over the b trained units only (:class:`PartlyTrained`), so at b = 1 it is a sign. This was
  the library's "masked" variant before issue 22.
* ``narrow``: the middle layer has only b units (an information bottleneck as well).

Each variant trains under Adam (lr 1e-3, mean loss, ``bottleneck_epochs``); the paper's variant
also trains under the paper's optimiser (plain SGD at lr 5e-4 on the batch's summed
cross-entropy, as in the authors' code) for the longer ``bottleneck_long_epochs``: that arm
decides the claims. Every run goes through
:func:`~feedback_alignment.experiments.run.run_jobs`, so inside ``reproduce`` a killed part
resumes from its finished runs.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.experiments.papers import LAUNAY_2019_BOTTLENECK
from feedback_alignment.experiments.principled.common import (
    Built,
    Recipe,
    Run,
    Setting,
    Split,
    group,
    load_split,
    spearman,
    train_run,
)
from feedback_alignment.experiments.results import (
    Column,
    Table,
    finite_mean,
    mean_std,
    pyplot,
    save_figure,
    title,
)
from feedback_alignment.experiments.run import run_jobs
from feedback_alignment.models import MLP

TITLE = "The bottleneck effect (Launay et al. 2019)"

VARIANTS = ("entries", "rows", "narrow")
"""What "b of the middle layer's 800 units learn" means: see the module docstring."""

LAYER = {"entries": "3", "rows": "3.trained", "narrow": "3"}
"""The middle layer's module path in each variant (its feedback point is the second point)."""

ARMS: dict[str, tuple[str, str]] = {
    "entries-sgd": ("entries", "sgd-sum"),
    "entries-adam": ("entries", "adam"),
    "rows": ("rows", "adam"),
    "narrow": ("narrow", "adam"),
}
"""Each arm of the sweep: (variant, optimiser). ``entries-sgd`` (the paper's mask, cosine and
optimiser, the longer schedule) decides the claims."""

CLAIM_ARM = "entries-sgd"


class EntryMaskedLinear(nn.Linear):
    """A ``Linear`` whose weight and bias gradients are zeroed outside a fixed random mask.

    The paper's bottleneck (Launay et al. 2019, in their code): a fraction ``kept`` of the entries
    of ``weight`` and of ``bias`` learn, chosen once (``generator``), the others keep their initial
    values. The forward pass is the plain layer's (the output, and so the signal every unit
    receives, is unchanged); the masks are buffers (in ``state_dict``). The gradient is masked in
    the graph: ``W m + (W (1 - m)).detach()`` has the value ``W`` and the gradient ``m * dW``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kept: float,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(in_features, out_features)
        if not 0.0 < kept <= 1.0:
            raise ValueError(f"the kept fraction of gradient entries must be in (0, 1], got {kept}")
        self.kept = kept
        self.register_buffer("weight_mask", _mask(self.weight.shape, kept, generator))
        self.register_buffer("bias_mask", _mask(self.bias.shape, kept, generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kept == 1.0:
            return super().forward(x)
        w, m = self.weight, self.weight_mask
        b, mb = self.bias, self.bias_mask
        return F.linear(x, w * m + (w * (1 - m)).detach(), b * mb + (b * (1 - mb)).detach())


def _mask(shape: torch.Size, kept: float, generator: torch.Generator | None) -> torch.Tensor:
    """A 0/1 mask of ``shape`` with ``max(1, round(kept * numel))`` ones at random places."""
    n = math.prod(shape)
    ones = max(1, round(kept * n))
    mask = torch.zeros(n)
    mask[torch.randperm(n, generator=generator)[:ones]] = 1.0
    return mask.reshape(shape)


class PartlyTrained(nn.Module):
    """A tanh layer of ``width`` units of which only the first ``trained`` units learn.

    The ``rows`` variant of the bottleneck (not the paper's, whose mask is over gradient entries:
    :class:`EntryMaskedLinear`): the next layer still sees all ``width`` units, but only
    ``trained`` of them receive the DFA signal. The frozen rows are a separate ``Linear`` with
    ``requires_grad=False`` (the same initial distribution as the trained rows: PyTorch's default
    depends on the fan-in only), and the trained units' activation ``act`` is the feedback point,
    so the alignment measured there is that of the b units that learn (a sign at b = 1).
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


def bottleneck_mlp(
    features: int, width: int, variant: str, wide: int = 800, mask_seed: int = 0
) -> Built:
    """``features-wide-wide-wide-10`` tanh with ``width`` (b) of the middle layer learning.

    ``"entries"``: the paper's mask over b/wide of the middle layer's gradient entries (drawn from
    ``mask_seed``); ``"rows"``: b whole units learn; ``"narrow"``: the middle layer has b units.
    The points are explicit; the middle layer's feedback point is the second of them.
    """
    if variant == "narrow":
        return MLP([features, wide, width, wide, 10], "tanh", flatten=True), ["2", "4", "6"]
    if variant == "entries":
        if not 1 <= width <= wide:
            raise ValueError(f"trained units must be in [1, {wide}], got {width}")
        model = MLP([features, wide, wide, wide, 10], "tanh", flatten=True)
        middle = model[3]
        masked = EntryMaskedLinear(
            wide, wide, width / wide, torch.Generator().manual_seed(mask_seed)
        )
        with torch.no_grad():  # the same initial weights as the unmasked model of this seed
            masked.weight.copy_(middle.weight)
            masked.bias.copy_(middle.bias)
        model[3] = masked
        return model, ["2", "4", "6"]
    if variant == "rows":
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
    raise ValueError(
        f"unknown bottleneck variant {variant!r}; choose from {', '.join(map(repr, VARIANTS))}"
    )


def recipe_for(setting: Setting, optimiser: str) -> Recipe:
    """``"adam"``: the shared recipe for ``bottleneck_epochs``; ``"sgd-sum"``: the paper's plain
    SGD (no momentum) at ``bottleneck_sgd_lr`` on the summed loss, ``bottleneck_long_epochs``."""
    if optimiser == "adam":
        return Recipe(setting.bottleneck_epochs, setting.lr, batch_size=setting.batch_size)
    if optimiser == "sgd-sum":
        return Recipe(
            setting.bottleneck_long_epochs, setting.bottleneck_sgd_lr, optimizer="sgd",
            batch_size=setting.batch_size, momentum=0.0, reduction="sum",
        )  # fmt: skip
    raise ValueError(f"unknown bottleneck optimiser {optimiser!r}; choose 'adam' or 'sgd-sum'")


def _job(split: Split, job: tuple[str, str, int, int, Setting, bool]) -> Run:
    """One (rule, arm, b, seed) run, as :func:`run_jobs` calls it."""
    rule, arm, b, seed, setting, progress = job
    variant, optimiser = ARMS[arm]
    trained, _ = train_run(
        "bottleneck",
        f"{arm} b={b} {rule}",
        rule,
        functools.partial(bottleneck_mlp, split.features, b, variant, setting.wide, seed),
        split,
        recipe_for(setting, optimiser),
        seed=seed,
        probe=setting.probe,
        progress=progress,
        settings={"variant": variant, "width": b, "arm": arm},
    )
    return trained


def run_experiment(setting: Setting, seeds: Sequence[int], progress: bool) -> dict[str, Any]:
    """DFA in every arm, b swept; BP (narrow, Adam) at the extremes. The Adam arms run first, the
    paper's optimiser's longer arm last; each run is saved as it ends inside ``reproduce``."""
    split = load_split(setting.dataset, setting.train_limit, setting.test_limit)
    widths = setting.bottleneck_widths
    order = ("entries-adam", "rows", "narrow", "entries-sgd")
    jobs = [("DFA", arm, b) for arm in order[:3] for b in widths]
    jobs += [("BP", "narrow", b) for b in sorted({min(widths), max(widths)})]
    items = [(rule, arm, b, seed, setting, progress) for rule, arm, b in jobs for seed in seeds]
    # the long arm seed by seed, so that an interrupted run already holds whole curves
    items += [("DFA", order[3], b, seed, setting, progress) for seed in seeds for b in widths]
    runs = run_jobs(
        _job, items, "principled-bottleneck runs", shared=split, progress=False,
        label=lambda item: f"{item[1]} b={item[2]} {item[0]} seed {item[3]}",
    )  # fmt: skip
    return {"runs": runs, "curves": curves(runs), "features": split.features}


def _point_cosine(trained: Run, index: int) -> float:
    """Mean signal cosine at the run's feedback point ``index`` (0 below, 1 middle, 2 above)."""
    points = list(trained.signal_cosine)
    return trained.signal_cosine[points[index]][0] if len(points) > index else math.nan


def arm_of(r: Run) -> str:
    """A run's arm (runs written before issue 22 have a variant only: "masked" is ``rows``)."""
    if "arm" in r.settings:
        return r.settings["arm"]
    return "rows" if r.settings["variant"] == "masked" else r.settings["variant"]


def curves(runs: Sequence[Run]) -> dict[str, Any]:
    """Per arm that ran: widths, the middle layer's cosine (mean and std over seeds), the layer
    below's, the update angle and accuracy, and their Spearman correlations with b."""
    result: dict[str, Any] = {}
    for arm, (variant, _) in ARMS.items():
        dfa = [r for r in runs if r.rule == "DFA" and arm_of(r) == arm]
        if not dfa:
            continue
        widths = sorted({r.settings["width"] for r in dfa})
        by_width = {b: [r for r in dfa if r.settings["width"] == b] for b in widths}
        cos = [mean_std(_point_cosine(r, 1) for r in by_width[b]) for b in widths]
        # the layer below the middle one: BP's signal there passes through the middle layer
        below = [finite_mean(_point_cosine(r, 0) for r in by_width[b]) for b in widths]
        angle = [
            finite_mean(r.hidden_angles.get(LAYER[variant], math.nan) for r in by_width[b])
            for b in widths
        ]
        acc = [mean_std(100 * r.test_accuracy for r in by_width[b]) for b in widths]
        cosine, accuracy = [c.mean for c in cos], [a.mean for a in acc]
        result[arm] = {
            "width": widths,
            "cosine": cosine,
            "cosine_std": [c.std for c in cos],
            "cosine_below": below,
            "angle": angle,
            "accuracy": accuracy,
            "accuracy_std": [a.std for a in acc],
            "spearman_cosine": spearman(widths, cosine),
            "spearman_cosine_below": spearman(widths, below),
            "spearman_accuracy": spearman(widths, accuracy),
        }
    return result


COLUMNS = {
    "cosine": "cosine, paper's mask, SGD-sum",
    "cosine_adam": "cosine, paper's mask, Adam",
    "accuracy": "acc. paper's mask, SGD-sum %",
    "accuracy_adam": "acc. paper's mask, Adam %",
}
"""The columns the claims read: the paper's mask and cosine, under the paper's optimiser (the
measurement) and under Adam."""


def _cell(curve: dict[str, Any] | None, metric: str, b: int, spread: bool = False) -> Any:
    """The arm's ``metric`` at width ``b`` (``{mean, std}`` with ``spread``); ``None`` if not run."""
    if curve is None or b not in curve["width"]:
        return None
    i = curve["width"].index(b)
    if spread:
        return {"mean": curve[metric][i], "std": curve[f"{metric}_std"][i]}
    return curve[metric][i]


def summary(result: dict[str, Any], setting: Setting) -> Table:
    c = result["curves"]
    sgd, adam = c.get("entries-sgd"), c.get("entries-adam")
    rows, narrow = c.get("rows"), c.get("narrow")
    out = Table(
        "principled_bottleneck",
        [Column("b"), Column(COLUMNS["cosine"], 3), Column(COLUMNS["cosine_adam"], 3),
         Column("paper cosine (CIFAR-10)", 3), Column("cosine, rows trained", 3),
         Column("cosine, narrow", 3), Column("cosine below, paper's mask, SGD-sum", 3),
         Column("angle, paper's mask, SGD-sum (deg)", 1), Column(COLUMNS["accuracy"], 2),
         Column(COLUMNS["accuracy_adam"], 2), Column("acc. rows trained %", 2),
         Column("acc. narrow %", 2), Column("paper acc. %", 1)],
        quick=setting.quick,
    )  # fmt: skip
    widths = sorted({b for curve in c.values() for b in curve["width"]})
    for b in widths:
        paper_cos, paper_acc = LAUNAY_2019_BOTTLENECK.get(b, (None, None))
        out.add(
            b, _cell(sgd, "cosine", b, True), _cell(adam, "cosine", b, True), paper_cos,
            _cell(rows, "cosine", b), _cell(narrow, "cosine", b), _cell(sgd, "cosine_below", b),
            _cell(sgd, "angle", b), _cell(sgd, "accuracy", b, True),
            _cell(adam, "accuracy", b, True), _cell(rows, "accuracy", b),
            _cell(narrow, "accuracy", b), paper_acc,
        )  # fmt: skip
    paper_widths = sorted(LAUNAY_2019_BOTTLENECK)
    paper_rho = spearman(paper_widths, [LAUNAY_2019_BOTTLENECK[b][0] for b in paper_widths])
    bp_runs = group(result["runs"], rule="BP")
    bp = {  # mean over seeds per width
        b: statistics.mean(100 * r.test_accuracy for r in bp_runs if r.settings["width"] == b)
        for b in sorted({r.settings["width"] for r in bp_runs})
    }
    seeds = sorted({r.seed for r in result["runs"]})
    names = {"entries-sgd": "paper's mask, SGD-sum", "entries-adam": "paper's mask, Adam",
             "rows": "rows trained", "narrow": "narrow"}  # fmt: skip
    rho = "; ".join(
        f"{names[arm]}: cosine {curve['spearman_cosine']:.2f}, cosine below "
        f"{curve['spearman_cosine_below']:.2f}, accuracy {curve['spearman_accuracy']:.2f}"
        for arm, curve in c.items()
    )
    out.caption = (
        f"Means over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), ± the standard "
        f"deviation over seeds. Spearman correlation with b: {rho} (the paper's logs: cosine "
        f"{paper_rho:.2f}). BP (narrow, Adam): "
        + ", ".join(f"{v:.2f}% at b={k}" for k, v in sorted(bp.items()))
        + ".\n"
        f"DFA, {setting.dataset} {result['features']}-{setting.wide}-{setting.wide}-"
        f"{setting.wide}-10 tanh. **Paper's mask** (Launay et al. 2019's definition, the claims' "
        "measurement): every unit of the middle layer receives the DFA signal, and a fixed random "
        f"fraction 1 − b/{setting.wide} of the entries of its weight gradient and of its bias "
        "gradient is zeroed; the cosine is the per-sample cosine between DFA's and BP's signal "
        f"over all {setting.wide} outputs of the layer, averaged over the {setting.probe}-image "
        "probe batch after training. SGD-sum: the paper's optimiser, plain SGD (no momentum) at "
        f"lr {setting.bottleneck_sgd_lr:g} on the batch's summed cross-entropy (batch "
        f"{setting.batch_size}), {setting.bottleneck_long_epochs} epochs; Adam: lr "
        f"{setting.lr:g}, mean loss, {setting.bottleneck_epochs} epoch(s). Rows trained (the "
        "library's 'masked' variant before issue 22): b whole units learn, the others are "
        "frozen, and the cosine is over the b trained units only (a sign at b = 1); narrow: the "
        "middle layer has b units (an information bottleneck as well); both under Adam. Angle: "
        "between DFA's and BP's (masked) update of the middle layer's weights; cosine below: the "
        "same cosine at the first hidden layer, whose BP signal passes through the middle layer. "
        "The paper's figures are CIFAR-10 (3072 inputs, not available offline), ours "
        f"{setting.dataset}."
    )
    return out


def plots(result: dict[str, Any], setting: Setting, out_dir: Path) -> list[Path]:
    """The middle layer's alignment, that of the layer below it, and accuracy, against b."""
    return [
        _plot(result["curves"], metric, setting, out_dir / f"bottleneck_{metric}.png")
        for metric in ("cosine", "cosine_below", "accuracy")
    ]


def _plot(curves_: dict[str, Any], metric: str, setting: Setting, path: Path) -> Path:
    plt = pyplot()
    fig, axis = plt.subplots(figsize=(6.5, 4))
    names = {
        "entries-sgd": f"paper's mask, SGD-sum, {setting.bottleneck_long_epochs} ep.",
        "entries-adam": f"paper's mask, Adam, {setting.bottleneck_epochs} ep.",
        "rows": f"b of {setting.wide} rows trained, Adam",
        "narrow": "narrow layer (b units), Adam",
    }
    markers = {"entries-sgd": "D", "entries-adam": "s", "rows": "v", "narrow": "o"}
    for arm, curve in curves_.items():
        rho = curve[f"spearman_{metric}"]
        axis.plot(curve["width"], curve[metric], marker=markers[arm],
                  label=f"ours, {names[arm]} (Spearman {rho:.2f})")  # fmt: skip
    if metric in ("cosine", "accuracy"):
        widths = sorted(LAUNAY_2019_BOTTLENECK)
        index = 0 if metric == "cosine" else 1
        points = [(b, LAUNAY_2019_BOTTLENECK[b][index]) for b in widths]
        points = [(b, v) for b, v in points if v is not None]
        axis.plot([b for b, _ in points], [v for _, v in points], marker="^", linestyle=":",
                  color="grey", label="Launay et al. 2019, CIFAR-10, paper's mask")  # fmt: skip
    axis.set_xscale("log")
    axis.set_xlabel("b: units' worth of the middle layer that learn (log scale)")
    if metric == "cosine":
        axis.set_ylabel("cosine(DFA signal, BP signal)\nat the middle layer")
        text = f"Bottleneck: alignment of the middle layer ({setting.dataset}, DFA)"
    elif metric == "cosine_below":
        axis.set_ylabel("cosine(DFA signal, BP signal)\nat the first hidden layer")
        text = f"Bottleneck: alignment of the layer below it ({setting.dataset}, DFA)"
    else:
        axis.set_ylabel("test accuracy (%)")
        text = f"Bottleneck: accuracy vs b ({setting.dataset}, DFA)"
    axis.set_title(title(text, setting.quick))
    axis.legend(fontsize=7)
    axis.grid(True, alpha=0.3)
    return save_figure(fig, path)
