"""Task ``graphs``: DFA on graph convolutional networks, Cora node classification.

Reproduces section 3.1.2 of Launay et al. (2020) at CPU scale on the real Cora graph: two-layer
networks of PyTorch Geometric's own layers (GCNConv, ChebConv, GATConv, and GraphConv, which the
paper did not run), 16 hidden channels (GAT: 8 heads x 8), full-batch Adam for 250 epochs, test
accuracy at the epoch of best validation accuracy, over several seeds. BP, DFA and the shallow
control (only the top layer learns) use the settings of the authors' code: BP with PyG's example
weight decay and dropout, DFA and Shallow with lower weight decay (1e-4) and dropout (0 to 0.1).
Features are row-normalised (PyG's ``NormalizeFeatures``). Weight decay applies to the first layer
only for GCN, ChebNet and GraphConv (PyG's examples), to every parameter for GAT.

DFA's single feedback point is the hidden activation (``nn.ReLU``/``nn.ELU``), found by automatic
placement; graph nodes are the batch axis, so one ``B`` is shared by all nodes and a node receives
``B e_i`` (zero for the unlabelled nodes, whose error is zero). The hidden layer's alignment with
BP is measured during training with :func:`feedback_alignment.alignment`.

References:
    Launay, Poli, Boniface, Krzakala, "Direct Feedback Alignment Scales to Modern Deep Learning
    Tasks and Architectures", NeurIPS 2020, section 3.1.2 and table 2.
    Kipf, Welling, ICLR 2017; Defferrard et al., NeurIPS 2016; Veličković et al., ICLR 2018.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from feedback_alignment.alignment import alignment
from feedback_alignment.experiments.registry import RunOptions, TaskReport, register_task
from feedback_alignment.rules import BP, DFA, Rule, Shallow

log = logging.getLogger(__name__)

RULES: tuple[str, ...] = ("BP", "DFA", "Shallow")

PAPER_CORA: dict[str, tuple[float, float, float]] = {
    "gcn": (80.1, 79.9, 37.0),
    "cheb": (79.2, 75.4, 23.3),
    "gat": (82.6, 80.6, 59.4),
}
"""Cora test accuracy % (BP, DFA, Shallow), Launay et al. 2020, table 2 [paper]."""

LAYER_NAMES = {"gcn": "GCNConv", "cheb": "ChebConv (K=2)", "gat": "GATConv (8x8)",
               "graphconv": "GraphConv"}  # fmt: skip


@dataclass(frozen=True)
class LayerSettings:
    """Optimiser and regularisation of one layer type; pairs are (BP, DFA and Shallow).

    Attributes:
        lr: Adam learning rate.
        weight_decay: L2 on the decayed parameters, for BP and for the alternative rules.
        decay_first_only: decay only the first layer (PyG's GCN/ChebNet examples) or everything.
        dropout: on the hidden layer's output.
        input_dropout: on the node features.
        attention_dropout: GAT's attention dropouts of the two layers, for BP and the others.
    """

    lr: float
    weight_decay: tuple[float, float]
    decay_first_only: bool
    dropout: tuple[float, float]
    input_dropout: tuple[float, float] = (0.0, 0.0)
    attention_dropout: tuple[tuple[float, float], tuple[float, float]] = ((0.6, 0.6), (0.6, 0.0))


SETTINGS: dict[str, LayerSettings] = {
    "gcn": LayerSettings(0.01, (5e-4, 1e-4), True, (0.5, 0.1)),
    "cheb": LayerSettings(0.01, (5e-4, 1e-4), True, (0.5, 0.0)),
    "gat": LayerSettings(0.005, (5e-4, 1e-4), False, (0.6, 0.1), input_dropout=(0.6, 0.1)),
    "graphconv": LayerSettings(0.01, (5e-4, 1e-4), True, (0.5, 0.1)),
}
"""Read from the authors' code (``geometric.py``, ``models.py``) [code]; GraphConv copies GCN."""


@dataclass
class GraphConfig:
    """What the task runs."""

    layers: tuple[str, ...] = ("gcn", "cheb", "gat", "graphconv")
    rules: tuple[str, ...] = RULES
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 250
    align_every: int = 25  # epochs between alignment measurements of the DFA runs


@dataclass
class GraphRun:
    layer: str
    rule: str
    seed: int
    test_accuracy: float  # % at the best validation epoch
    best_val_accuracy: float
    best_epoch: int
    seconds: float
    val_curve: list[float] = field(default_factory=list)
    loss_curve: list[float] = field(default_factory=list)
    # (epoch, mean hidden update angle in degrees, signal cosine mean, signal cosine std)
    alignment: list[tuple[int, float, float, float]] = field(default_factory=list)
    hidden_update_angles: dict[str, float] = field(default_factory=dict)


def load_cora() -> Any:
    """Cora as a PyG ``Data`` with row-normalised features (``NormalizeFeatures``)."""
    from feedback_alignment import data

    graph = data.load("cora")
    graph.x = graph.x / graph.x.sum(dim=1, keepdim=True).clamp_min(1.0)
    return graph


def make_rule(name: str, seed: int) -> Rule:
    if name == "BP":
        return BP()
    if name == "DFA":
        return DFA(seed=seed)
    if name == "Shallow":
        return Shallow(seed=seed)
    raise ValueError(f"unknown rule {name!r}; choose one of {RULES}")


def _masked_loss(output: torch.Tensor, target: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    mask, y = target
    return F.cross_entropy(output[mask], y[mask])


def train_one(
    layer: str, rule_name: str, seed: int, graph: Any, config: GraphConfig, progress: bool
) -> GraphRun:
    """Trains one model with one rule and returns its best-validation test accuracy and curves."""
    from feedback_alignment.models.gnn import build_gnn

    settings = SETTINGS[layer]
    alt = 0 if rule_name == "BP" else 1
    torch.manual_seed(seed)
    model = build_gnn(
        layer,
        graph.num_node_features,
        int(graph.y.max()) + 1,
        hidden=64 if layer == "gat" else 16,
        heads=8,
        dropout=settings.dropout[alt],
        input_dropout=settings.input_dropout[alt],
        attention_dropout=settings.attention_dropout[alt],
    )
    rule = make_rule(rule_name, seed)
    rule.apply(model)
    decay = settings.weight_decay[alt]
    if settings.decay_first_only:
        groups = [
            {"params": list(model.conv1.parameters()), "weight_decay": decay},
            {"params": list(model.conv2.parameters()), "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": list(model.parameters()), "weight_decay": decay}]
    optimizer = torch.optim.Adam(groups, lr=settings.lr)
    inputs = (graph.x, graph.edge_index)
    target = (graph.train_mask, graph.y)
    run = GraphRun(layer, rule_name, seed, 0.0, -1.0, 0, 0.0)
    start = time.perf_counter()
    bar = tqdm(
        range(1, config.epochs + 1),
        desc=f"{layer:>9} {rule_name:>7} seed {seed}",
        disable=not progress,
        leave=False,
        unit="epoch",
    )
    for epoch in bar:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = _masked_loss(model(*inputs), target)
        loss.backward()
        optimizer.step()
        run.loss_curve.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            predicted = model(*inputs).argmax(dim=1)
        correct = predicted == graph.y
        val = 100.0 * float(correct[graph.val_mask].float().mean())
        test = 100.0 * float(correct[graph.test_mask].float().mean())
        run.val_curve.append(val)
        if val > run.best_val_accuracy:  # strictly better, as in the authors' code
            run.best_val_accuracy, run.test_accuracy, run.best_epoch = val, test, epoch
        if rule_name == "DFA" and (epoch == 1 or epoch % config.align_every == 0):
            model.train()
            report = alignment(model, rule, (inputs, target), _masked_loss)
            angles = report.hidden_angles()
            cosine = report.signal_cosine.get("act", (math.nan, math.nan))
            run.alignment.append((epoch, statistics.fmean(angles.values()), *cosine))
            run.hidden_update_angles = angles
        bar.set_postfix(loss=f"{run.loss_curve[-1]:.3f}", val=f"{val:.1f}")
    run.seconds = time.perf_counter() - start
    rule.remove(model)
    return run


def run_all(config: GraphConfig, progress: bool = True) -> list[GraphRun]:
    graph = load_cora()
    jobs = [(lay, rule, s) for lay in config.layers for rule in config.rules for s in config.seeds]
    runs = []
    for layer, rule_name, seed in tqdm(jobs, desc="graphs", disable=not progress, unit="run"):
        run = train_one(layer, rule_name, seed, graph, config, progress)
        log.info(
            "%s %s seed %d: test %.1f%% at epoch %d (%.1f s)",
            layer, rule_name, seed, run.test_accuracy, run.best_epoch, run.seconds,
        )  # fmt: skip
        runs.append(run)
    return runs


# --- summaries -------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def gap_closure(rule: float, bp: float, shallow: float) -> float:
    """``G = (m_rule - m_shallow) / (m_BP - m_shallow)``: 1 = BP's gain over shallow, 0 = none."""
    return (rule - shallow) / (bp - shallow) if bp != shallow else math.nan


def summarise(runs: list[GraphRun], config: GraphConfig) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for layer in config.layers:
        row: dict[str, Any] = {}
        for rule_name in config.rules:
            chosen = [r for r in runs if r.layer == layer and r.rule == rule_name]
            row[rule_name] = _mean_std([r.test_accuracy for r in chosen])
            if rule_name == "DFA":
                finals = [r.alignment[-1] for r in chosen if r.alignment]
                row["angle"] = _mean_std([a[1] for a in finals])
                row["cosine"] = _mean_std([a[2] for a in finals])
        if all(r in row for r in RULES):
            row["G"] = gap_closure(row["DFA"][0], row["BP"][0], row["Shallow"][0])
        summary[layer] = row
    return summary


def _fmt(pair: tuple[float, float] | None, digits: int = 1) -> str:
    if pair is None or math.isnan(pair[0]):
        return "-"
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


def markdown_table(summary: dict[str, dict[str, Any]], config: GraphConfig, quick: bool) -> str:
    mode = "quick mode, not comparable with the paper" if quick else "full"
    lines = [
        f"### Graph networks: Cora test accuracy % ({mode}; {len(config.seeds)} seed(s), "
        f"{config.epochs} epochs, test at best validation epoch)",
        "",
        "| layer | BP | BP paper | DFA | DFA paper | Shallow | Shallow paper | G | G paper "
        "| DFA hidden update angle (deg) | DFA signal cosine |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for layer, row in summary.items():
        paper = PAPER_CORA.get(layer)
        g_paper = gap_closure(paper[1], paper[0], paper[2]) if paper else math.nan
        g = row.get("G", math.nan)
        lines.append(
            f"| {LAYER_NAMES[layer]} | {_fmt(row.get('BP'))} | {paper[0] if paper else '-'} "
            f"| {_fmt(row.get('DFA'))} | {paper[1] if paper else '-'} "
            f"| {_fmt(row.get('Shallow'))} | {paper[2] if paper else '-'} "
            f"| {'-' if math.isnan(g) else f'{g:.2f}'} "
            f"| {'-' if math.isnan(g_paper) else f'{g_paper:.2f}'} "
            f"| {_fmt(row.get('angle'))} | {_fmt(row.get('cosine'), 2)} |"
        )
    lines += [
        "",
        "G = (DFA - Shallow) / (BP - Shallow). The angle is between DFA's and BP's update of the "
        "hidden layer's weights (mean over its weight matrices) and the cosine is the per-node "
        "cosine between `B e` and BP's `dL/dh` at the hidden activation (labelled and "
        "neighbouring nodes), both at the last epoch. GraphConv has no paper figure.",
    ]
    return "\n".join(lines)


def plot(runs: list[GraphRun], summary: dict[str, dict[str, Any]], out_dir: Path) -> list[Path]:
    """Bars of test accuracy beside the paper's, validation curves, and DFA's alignment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"BP": "tab:blue", "DFA": "tab:orange", "Shallow": "tab:gray"}
    layers = list(summary)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    width = 0.27
    for i, rule_name in enumerate(RULES):
        means = [summary[lay].get(rule_name, (math.nan, 0))[0] for lay in layers]
        stds = [summary[lay].get(rule_name, (0, 0))[1] for lay in layers]
        xs = [j + (i - 1) * width for j in range(len(layers))]
        ax.bar(xs, means, width, yerr=stds, color=colours[rule_name], label=f"{rule_name} (ours)")
        paper = [PAPER_CORA.get(lay, (math.nan,) * 3)[i] for lay in layers]
        ax.scatter(xs, paper, marker="_", s=400, color="black", zorder=3,
                   label="paper" if i == 0 else None)  # fmt: skip
    ax.set_xticks(range(len(layers)), [LAYER_NAMES[lay] for lay in layers], fontsize=8)
    ax.set_ylabel("Cora test accuracy (%)")
    ax.set_title("Test accuracy at best validation epoch")
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
    ax.set_title(f"Validation accuracy (seed {first_seed})")
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
    ax.set_title("Alignment of the hidden layer (DFA)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "graphs_cora.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


@register_task("graphs", "GCN/ChebNet/GAT/GraphConv (PyG) on Cora: BP, DFA, Shallow (minutes)")
def run(options: RunOptions) -> TaskReport:
    """Runs the task. Full mode widens a single seed (the CLI default) to three consecutive seeds
    (23 minutes on 2 cores; more with ``--seeds``),
    since the paper's comparison needs a spread; quick mode: one seed, 5 epochs."""
    if options.quick:
        config = GraphConfig(seeds=options.seeds[:1], epochs=5, align_every=5)
    else:
        seeds = (
            options.seeds
            if len(options.seeds) > 1
            else tuple(options.seeds[0] + i for i in range(3))
        )
        config = GraphConfig(seeds=seeds)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    runs = run_all(config, progress=options.progress)
    summary = summarise(runs, config)
    table = markdown_table(summary, config, options.quick)
    path = options.out_dir / "results.json"
    payload = {
        "task": "graphs",
        "quick": options.quick,
        "config": asdict(config),
        "settings": {k: asdict(v) for k, v in SETTINGS.items()},
        "paper": PAPER_CORA,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
    path.write_text(json.dumps(payload, indent=1))
    (options.out_dir / "table.md").write_text(table + "\n")
    files = [path, options.out_dir / "table.md", *plot(runs, summary, options.out_dir)]
    return TaskReport("graphs", table, files)
