"""The graphs task's outputs: the Cora table beside the paper's (with the gap closure G and DFA's
alignment), and its figure. Reads the task's runs and summary only (their shapes:
:mod:`.graphs_schema`).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from feedback_alignment.experiments.graphs_schema import GraphRun
from feedback_alignment.experiments.papers import LAUNAY_2020_CORA
from feedback_alignment.experiments.results import (
    Column,
    MeanStd,
    Table,
    gap_closure,
    pyplot,
    save_figure,
)
from feedback_alignment.experiments.results import title as plot_title

LAYER_NAMES = {"gcn": "GCNConv", "cheb": "ChebConv (K=2)", "gat": "GATConv (8x8)",
               "graphconv": "GraphConv"}  # fmt: skip
"""Table names of the layers (PyG's classes; Cheb's order and GAT's heads as in the paper)."""

PAPER_ORDER: tuple[str, ...] = ("BP", "DFA", "Shallow")
"""The order of the figures in each :data:`LAUNAY_2020_CORA` tuple (and of the bars)."""


def summary(
    stats: dict[str, dict[str, Any]],
    quick: bool = False,
    tuned: tuple[str, ...] = (),
    source: str = "experiments/tuned/graphs.json",
    everything: bool = False,
) -> Table:
    """Cora test accuracy beside the paper's, the gap closure and DFA's alignment."""
    acc, two = 1, 2
    result = Table(
        "graphs_cora",
        [Column("layer", align="left"), Column("BP", acc), Column("BP paper", acc),
         Column("DFA", acc), Column("DFA paper", acc), Column("Shallow", acc),
         Column("Shallow paper", acc), Column("G", two), Column("G paper", two),
         Column("DFA hidden update angle (deg)", acc), Column("DFA signal cosine", two)],
        missing="-",
        quick=quick,
    )  # fmt: skip

    def cell(value: MeanStd | None) -> Any:
        return value.cell() if value is not None else None

    for layer, row in stats.items():
        paper = LAUNAY_2020_CORA.get(layer)
        g_paper = gap_closure(paper[1], paper[0], paper[2]) if paper else None
        result.add(
            LAYER_NAMES[layer],
            cell(row.get("BP")), paper[0] if paper else None,
            cell(row.get("DFA")), paper[1] if paper else None,
            cell(row.get("Shallow")), paper[2] if paper else None,
            row.get("G"), g_paper, cell(row.get("angle")), cell(row.get("cosine")),
        )  # fmt: skip
    result.caption = (
        "G = (DFA - Shallow) / (BP - Shallow). The angle is between DFA's and BP's update of the "
        "hidden layer's weights (mean over its weight matrices) and the cosine is the per-node "
        "cosine between `B e` and BP's `dL/dh` at the hidden activation (labelled and "
        "neighbouring nodes), both at the last epoch. GraphConv has no paper figure. "
        + _settings_note(tuned, source, everything)
    )
    return result


def _settings_note(tuned: tuple[str, ...], source: str = "", everything: bool = False) -> str:
    """Which (layer, rule) pairs used tuned values (from ``source``) and which the authors'
    hand-set ones."""
    hand = "the authors' hand-set values (BP's, and one set shared by DFA and Shallow)"
    if not tuned:
        return f"Hyperparameters: {hand}."
    rest = "" if everything else f"; the other pairs used {hand}"
    return (
        f"Hyperparameters: {', '.join(tuned)} used their own learning rate, weight decay and "
        f"dropout, tuned on the validation nodes (`{source}`){rest}."
    )


def plot(
    runs: list[GraphRun], summary: dict[str, dict[str, Any]], out_dir: Path, quick: bool = False
) -> list[Path]:
    """Bars of test accuracy beside the paper's, validation curves, and DFA's alignment."""
    plt = pyplot()
    colours = {"BP": "tab:blue", "DFA": "tab:orange", "Shallow": "tab:gray"}
    layers = list(summary)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    width = 0.27
    for i, rule_name in enumerate(PAPER_ORDER):
        cells = [summary[lay].get(rule_name) for lay in layers]
        xs = [j + (i - 1) * width for j in range(len(layers))]
        ax.bar(xs, [c.mean if c else math.nan for c in cells], width,
               yerr=[c.std if c else 0.0 for c in cells], color=colours[rule_name],
               label=f"{rule_name} (ours)")  # fmt: skip
        paper = [LAUNAY_2020_CORA.get(lay, (math.nan,) * 3)[i] for lay in layers]
        ax.scatter(xs, paper, marker="_", s=400, color="black", zorder=3,
                   label="paper" if i == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(layers)), [LAYER_NAMES[lay] for lay in layers], fontsize=8)
    ax.set_ylabel("Cora test accuracy (%)")
    ax.set_title(plot_title("Test accuracy at best validation epoch", quick))
    ax.set_ylim(0, 110)  # room for the legend above the paper marks
    ax.legend(fontsize=7, loc="upper center", ncol=4)

    ax = axes[1]
    styles = dict(zip(layers, ["-", "--", ":", "-."], strict=False))
    first_seed = min(r.seed for r in runs)
    for run in runs:
        if run.seed == first_seed:
            ax.plot(range(1, len(run.val_curve) + 1), run.val_curve, styles[run.layer],
                    color=colours[run.rule], lw=1, label=f"{run.layer} {run.rule}")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(plot_title(f"Validation accuracy (seed {first_seed})", quick))
    ax.legend(fontsize=6, ncol=2)

    ax = axes[2]
    for layer in layers:
        dfa = [r for r in runs if r.layer == layer and r.rule == "DFA" and r.alignment]
        if dfa:
            epochs = [a[0] for a in dfa[0].alignment]
            mean = [statistics.fmean(r.alignment[k][1] for r in dfa) for k in range(len(epochs))]
            ax.plot(epochs, mean, styles[layer], marker="o", ms=3, label=LAYER_NAMES[layer])
    ax.axhline(90, color="red", lw=0.8, ls=":", label="90 deg (no learning)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("DFA vs BP hidden update angle (deg)")
    ax.set_title(plot_title("Alignment of the hidden layer (DFA)", quick))
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    return [save_figure(fig, out_dir / "graphs_cora.png")]


SPLIT_QUANTITIES = ("BP", "DFA", "Shallow", "G")
"""The rows of the GCN split table: each rule's test accuracy, and the per-pair gap closure."""


def split_table(runs: list[GraphRun], quick: bool = False, epochs: int = 250) -> Table:
    """GCN over (split, seed) pairs: each rule's test accuracy and the per-pair G as mean ± std,
    min and max over the pairs, beside the paper's (public split); and G from the means."""
    from feedback_alignment.experiments.results import mean_std

    pairs = sorted({r.seed for r in runs if r.layer == "gcn"})
    acc = {
        rule: {r.seed: r.test_accuracy for r in runs if r.layer == "gcn" and r.rule == rule}
        for rule in PAPER_ORDER
    }
    per_pair = {
        k: gap_closure(acc["DFA"][k], acc["BP"][k], acc["Shallow"][k])
        for k in pairs
        if all(k in acc[rule] for rule in PAPER_ORDER)
    }
    paper = LAUNAY_2020_CORA["gcn"]
    out = Table(
        "graphs_cora_splits",
        [Column("quantity", align="left"), Column("mean ± std over pairs", 2), Column("min", 2),
         Column("max", 2), Column("paper (public split)", 2), Column("pairs")],
        missing="-",
        quick=quick,
    )  # fmt: skip
    values = {**{rule: acc[rule] for rule in PAPER_ORDER}, "G": per_pair}
    for name in SPLIT_QUANTITIES:
        v = list(values[name].values())
        stat = mean_std(v)
        paper_value = (
            gap_closure(paper[1], paper[0], paper[2])
            if name == "G"
            else paper[PAPER_ORDER.index(name)]
        )
        label = f"{name} test accuracy %" if name != "G" else "G per pair"
        out.add(label, stat.cell(), min(v) if v else None, max(v) if v else None, paper_value,
                len(v))  # fmt: skip
    means = {rule: mean_std(acc[rule].values()).mean for rule in PAPER_ORDER}
    g_means = gap_closure(means["DFA"], means["BP"], means["Shallow"])
    out.add("G from the mean accuracies", g_means, None, None,
            gap_closure(paper[1], paper[0], paper[2]), len(pairs))  # fmt: skip
    out.caption = (
        f"GCN (2 layers, 16 hidden, {epochs} epochs, test accuracy at the best validation epoch) on "
        f"Cora, over {len(pairs)} (split, seed) pairs: pair k draws its own Planetoid-style split "
        "(20 training nodes per class, 500 validation, 1,000 test) with seed k and trains each "
        "rule's model with seed k; the hyperparameters are the stored tuned ones of `graphs` "
        "(chosen on split 0's validation nodes). G = (DFA − Shallow) / (BP − Shallow), per pair "
        "and from the mean accuracies. The paper's figures are on the public Planetoid split, "
        "which cannot be used offline: the only offline copy of Cora (graphdatascience's parquet "
        "files) numbers the nodes in another order than the one the Planetoid index files refer "
        "to, so those indices would select other nodes."
    )
    return out


def layer_split_table(runs: list[GraphRun], quick: bool = False, epochs: int = 250) -> Table:
    """Every layer over (split, seed) pairs, a row each: each rule's test accuracy as mean ± std
    over the pairs beside the paper's (public split); the per-pair G as mean ± std and its
    minimum / maximum; G from the mean accuracies; DFA's last hidden angle and signal cosine."""
    from feedback_alignment.experiments.results import mean_std

    acc, two = 1, 2
    out = Table(
        "graphs_cora_splits_layers",
        [Column("layer", align="left"), Column("BP", acc), Column("BP paper", acc),
         Column("DFA", acc), Column("DFA paper", acc), Column("Shallow", acc),
         Column("Shallow paper", acc), Column("G per pair", two),
         Column("G per pair min / max", two), Column("G from the means", two),
         Column("G paper", two), Column("DFA hidden update angle (deg)", acc),
         Column("DFA signal cosine", two), Column("pairs")],
        missing="-",
        quick=quick,
    )  # fmt: skip
    layers = [lay for lay in LAYER_NAMES if any(r.layer == lay for r in runs)]
    counts = []
    for layer in layers:
        mine = [r for r in runs if r.layer == layer]
        by = {rule: {r.seed: r for r in mine if r.rule == rule} for rule in PAPER_ORDER}
        pairs = sorted(set.intersection(*(set(by[rule]) for rule in PAPER_ORDER)))
        counts.append(len(pairs))
        stat = {rule: mean_std(by[rule][k].test_accuracy for k in pairs) for rule in PAPER_ORDER}
        per_pair = [
            gap_closure(*(by[rule][k].test_accuracy for rule in ("DFA", "BP", "Shallow")))
            for k in pairs
        ]
        g = mean_std(per_pair)
        g_means = gap_closure(stat["DFA"].mean, stat["BP"].mean, stat["Shallow"].mean)
        finals = [by["DFA"][k].alignment[-1] for k in pairs if by["DFA"][k].alignment]
        paper = LAUNAY_2020_CORA.get(layer)
        out.add(
            LAYER_NAMES[layer],
            stat["BP"].cell(), paper[0] if paper else None,
            stat["DFA"].cell(), paper[1] if paper else None,
            stat["Shallow"].cell(), paper[2] if paper else None,
            g.cell(), [min(per_pair), max(per_pair)] if per_pair else None, g_means,
            gap_closure(paper[1], paper[0], paper[2]) if paper else None,
            mean_std(a[1] for a in finals).cell() if finals else None,
            mean_std(a[2] for a in finals).cell() if finals else None,
            len(pairs),
        )  # fmt: skip
    pair_count = max(counts, default=0)
    out.caption = (
        f"Each layer (2 layers, 16 hidden; GAT 8 heads x 8; {epochs} epochs, test accuracy % at "
        f"the best validation epoch) on Cora over {pair_count} (split, seed) pairs: pair k draws "
        "its own Planetoid-style split (20 training nodes per class, 500 validation, 1,000 test) "
        "with seed k and trains each rule's model with seed k; every (layer, rule) uses the "
        "stored tuned values of `graphs` (chosen on split 0's validation nodes). Accuracies and G "
        "are mean ± std over the pairs; G = (DFA − Shallow) / (BP − Shallow), per pair (with its "
        "minimum / maximum) and from the mean accuracies. The angle (between DFA's and BP's update "
        "of the hidden layer's weights) and the per-node signal cosine are DFA's at the last "
        "epoch, mean ± std over the pairs. GCN's rows are the runs of `graphs-gcn-splits` again "
        "(the same pairs and seeds). The paper's figures are on the public Planetoid split, which "
        "cannot be used offline (the only offline copy of Cora numbers its nodes in another "
        "order than the Planetoid index files refer to); GraphConv has no paper figure."
    )
    return out
