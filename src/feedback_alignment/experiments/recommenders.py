"""Task ``recommenders``: DFA on click-through-rate models, MovieLens-100k and Adult.

Reproduces section 3.2 of Launay et al. (2020) at CPU scale. The paper trained torchfm's FM,
DeepFM, Deep & Cross, AutoInt and AFN on Criteo (45M rows, not available offline); here the same
architectures (:mod:`feedback_alignment.models.recommender`, narrower MLPs) learn two real tables:
MovieLens-100k as click-through (rating >= 4; fields user, item, first genre, age group, gender,
occupation) and the Adult census (income > 50K; its 9 categorical fields, the 5 dense ones are not
used), each with the data registry's fixed 80/10/10 split. Adam, binary cross-entropy on the logit,
early stopping on validation AUC; the test AUC and log-loss of the best validation epoch are
reported for BP, DFA and Shallow with the gap closure ``G = (DFA - Shallow) / (BP - Shallow)``.

Where feedback enters (the paper's placement, ``model.block_outputs()``) and so how embeddings
learn under each rule:

* DeepFM: a point after each MLP block. The embeddings are in the top block through the FM and
  first-order terms, so every rule trains them with the true gradient of those terms; under DFA
  they also receive the first MLP block's ``B_1 e`` back-propagated through its first linear layer
  (the paper detached the MLP's input instead); under Shallow they learn from the FM term only.
* Deep & Cross and AutoInt: a point on the embeddings themselves (plus after each cross layer /
  attention stage and each MLP block). DFA trains the embeddings with ``B_0 e`` directly; Shallow
  freezes them (and every cross or attention layer), so only the top linear layers learn.
* FM has no hidden layer: DFA is BP there, and only the BP row is reported.

References:
    Launay, Poli, Boniface, Krzakala, "Direct Feedback Alignment Scales to Modern Deep Learning
    Tasks and Architectures", NeurIPS 2020, section 3.2 and table 3.
    Harper, Konstan, "The MovieLens Datasets: History and Context", TiiS 2015.
    Kohavi, "Scaling Up the Accuracy of Naive-Bayes Classifiers", KDD 1996 (Adult).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from feedback_alignment.alignment import alignment
from feedback_alignment.experiments.graphs import gap_closure, make_rule
from feedback_alignment.experiments.registry import RunOptions, TaskReport, register_task
from feedback_alignment.models.recommender import build_recommender

log = logging.getLogger(__name__)

RULES: tuple[str, ...] = ("BP", "DFA", "Shallow")
DATASETS: tuple[str, ...] = ("movielens-100k", "adult")
MODEL_NAMES = {"fm": "FM", "deepfm": "DeepFM", "dcn": "Deep & Cross", "autoint": "AutoInt"}

PAPER_CRITEO: dict[str, dict[str, tuple[float, float]]] = {
    "deepfm": {"BP": (0.7954, 0.4610), "DFA": (0.7956, 0.4624), "Shallow": (0.7920, 0.4682)},
    "dcn": {"BP": (0.8104, 0.4414), "DFA": (0.8009, 0.4502), "Shallow": (0.7324, 0.5010)},
    "autoint": {"BP": (0.7937, 0.4620), "DFA": (0.7906, 0.4600), "Shallow": (0.7860, 0.4686)},
}
"""Criteo test (AUC, log-loss): DeepFM and Deep & Cross from the paper's table 3 [paper];
AutoInt from the comments of the authors' ``reproduce_autoint.sh`` [code]."""


@dataclass
class RecConfig:
    """What the task runs (CPU scale: the paper's MLPs were 400 x 3 and 1024 x 2)."""

    models: tuple[str, ...] = ("fm", "deepfm", "dcn", "autoint")
    datasets: tuple[str, ...] = DATASETS
    rules: tuple[str, ...] = RULES
    seeds: tuple[int, ...] = (0, 1, 2)
    mlp_dims: tuple[int, ...] = (200, 200, 200)
    cross_layers: int = 3
    epochs: int = 8
    patience: int = 2
    batch_size: int = 1024
    lr: float = 1e-3  # Adam, the same for every rule (not tuned per rule)
    max_train_rows: int | None = None  # subsample the training rows (quick mode)


@dataclass
class RecRun:
    model: str
    dataset: str
    rule: str
    seed: int
    test_auc: float
    test_logloss: float
    best_epoch: int
    seconds: float
    val_auc_curve: list[float] = field(default_factory=list)
    hidden_update_angle: float = math.nan  # mean over the hidden layers, DFA only
    signal_cosine: dict[str, float] = field(default_factory=dict)  # per point, DFA only


def model_kwargs(kind: str, rule: str, config: RecConfig) -> dict[str, Any]:
    """Architecture settings; dropout per rule as in the authors' scripts [code]."""
    mlp = tuple(config.mlp_dims)
    if kind == "fm":
        return {"embed_dim": 16}
    if kind == "deepfm":
        return {"embed_dim": 10, "mlp_dims": mlp, "dropout": 0.1 if rule == "Shallow" else 0.5}
    if kind == "dcn":
        return {"embed_dim": 16, "cross_layers": config.cross_layers, "mlp_dims": mlp[:2]}
    if kind == "autoint":
        return {"embed_dim": 16, "attention_dim": 32, "heads": 2, "attention_layers": 3,
                "mlp_dims": mlp}  # fmt: skip
    raise ValueError(f"unknown model {kind!r}; choose one of {tuple(MODEL_NAMES)}")


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels.numpy(), scores.numpy()))


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(AUC, log-loss) of ``model`` on ``(x, y)`` in eval mode."""
    model.eval()
    logits = torch.cat([model(chunk) for chunk in x.split(8192)])
    loss = float(F.binary_cross_entropy_with_logits(logits, y))
    return _auc(logits, y), loss


def train_one(
    kind: str, dataset: str, rule_name: str, seed: int, table: Any, config: RecConfig,
    progress: bool,
) -> RecRun:  # fmt: skip
    """Trains one model with one rule; early stopping on validation AUC."""
    x, y = table.x_cat, table.y
    train_idx = table.train_idx
    if config.max_train_rows is not None:
        # a random subset: the split is sorted and the ratings file is grouped, so a prefix would
        # hold only some users
        pick = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(0))
        train_idx = train_idx[pick[: config.max_train_rows]]
    x_val, y_val = x[table.val_idx], y[table.val_idx]
    torch.manual_seed(seed)
    model = build_recommender(kind, table.field_dims, **model_kwargs(kind, rule_name, config))
    rule = make_rule(rule_name, seed)
    points = model.block_outputs()
    if rule_name != "BP":
        rule.apply(model, points=points, true_gradient=model.bypass_modules())
    else:
        rule.apply(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(seed)
    run = RecRun(kind, dataset, rule_name, seed, math.nan, math.nan, 0, 0.0)
    best_auc, best_state, waited = -1.0, None, 0
    start = time.perf_counter()
    bar = tqdm(range(1, config.epochs + 1), desc=f"{kind:>7} {dataset[:5]} {rule_name:>7} s{seed}",
               disable=not progress, leave=False, unit="epoch")  # fmt: skip
    for epoch in bar:
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=generator)]
        for batch in order.split(config.batch_size):
            if len(batch) < 2:  # BatchNorm needs two rows
                continue
            optimizer.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(model(x[batch]), y[batch])
            loss.backward()
            if kind == "dcn":  # the authors clip Deep & Cross at norm 100 [code]
                torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
            optimizer.step()
        val_auc, _ = evaluate(model, x_val, y_val)
        run.val_auc_curve.append(val_auc)
        bar.set_postfix(val_auc=f"{val_auc:.4f}")
        if val_auc > best_auc:
            best_auc, best_state, waited, run.best_epoch = val_auc, None, 0, epoch
            best_state = copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= config.patience:
                break
    run.seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    run.test_auc, run.test_logloss = evaluate(model, x[table.test_idx], y[table.test_idx])
    if rule_name == "DFA":
        model.train()
        batch = train_idx[: config.batch_size]
        report = alignment(model, rule, (x[batch], y[batch]), F.binary_cross_entropy_with_logits)
        angles = list(report.hidden_angles().values())
        run.hidden_update_angle = statistics.fmean(angles) if angles else math.nan
        run.signal_cosine = {k: v[0] for k, v in report.signal_cosine.items()}
    rule.remove(model)
    return run


def run_all(config: RecConfig, progress: bool = True) -> list[RecRun]:
    from feedback_alignment import data

    runs = []
    for dataset in config.datasets:
        table = data.load(dataset)
        jobs = [
            (m, r, s)
            for m in config.models
            for r in config.rules
            for s in config.seeds
            if not (m == "fm" and r != "BP")  # no hidden layer: DFA = BP, Shallow undefined
        ]
        for kind, rule_name, seed in tqdm(jobs, desc=dataset, disable=not progress, unit="run"):
            run = train_one(kind, dataset, rule_name, seed, table, config, progress)
            log.info("%s %s %s seed %d: test AUC %.4f log-loss %.4f (epoch %d, %.0f s)",
                     dataset, kind, rule_name, seed, run.test_auc, run.test_logloss,
                     run.best_epoch, run.seconds)  # fmt: skip
            runs.append(run)
    return runs


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(runs: list[RecRun], config: RecConfig) -> dict[str, dict[str, dict[str, Any]]]:
    """dataset -> model -> {rule: {"auc": (mean, std), "logloss": ...}, "G_auc", "G_logloss"}."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset in config.datasets:
        for kind in config.models:
            row: dict[str, Any] = {}
            for rule_name in config.rules:
                chosen = [
                    r for r in runs if (r.dataset, r.model, r.rule) == (dataset, kind, rule_name)
                ]
                if chosen:
                    row[rule_name] = {
                        "auc": _mean_std([r.test_auc for r in chosen]),
                        "logloss": _mean_std([r.test_logloss for r in chosen]),
                    }
                    if rule_name == "DFA":
                        row["angle"] = _mean_std([r.hidden_update_angle for r in chosen])
                        cosines = [statistics.fmean(r.signal_cosine.values()) for r in chosen
                                   if r.signal_cosine]  # fmt: skip
                        row["cosine"] = _mean_std(cosines)
            if all(r in row for r in RULES):
                for metric in ("auc", "logloss"):
                    row[f"G_{metric}"] = gap_closure(
                        row["DFA"][metric][0], row["BP"][metric][0], row["Shallow"][metric][0]
                    )
            summary.setdefault(dataset, {})[kind] = row
    return summary


def _cell(row: dict[str, Any], rule: str) -> str:
    if rule not in row:
        return "-"
    auc, loss = row[rule]["auc"], row[rule]["logloss"]
    return f"{auc[0]:.4f} ± {auc[1]:.4f} / {loss[0]:.4f}"


def _paper_cell(kind: str, rule: str) -> str:
    values = PAPER_CRITEO.get(kind, {}).get(rule)
    return f"{values[0]:.4f} / {values[1]:.4f}" if values else "-"


def _g(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}"


def markdown_table(summary: dict[str, Any], config: RecConfig, quick: bool) -> str:
    mode = "quick mode, not comparable with the paper" if quick else "full"
    lines = [
        f"### Recommenders: test AUC ± std / log-loss ({mode}; {len(config.seeds)} seed(s); "
        "paper columns: Criteo)",
        "",
        "| data | model | BP | DFA | Shallow | G (AUC) | G (log-loss) | DFA hidden angle (deg) "
        "| DFA signal cosine | BP paper | DFA paper | Shallow paper | G paper (AUC) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dataset, rows in summary.items():
        for kind, row in rows.items():
            paper = PAPER_CRITEO.get(kind)
            g_paper = (
                gap_closure(paper["DFA"][0], paper["BP"][0], paper["Shallow"][0])
                if paper else None
            )  # fmt: skip
            angle = row.get("angle", (math.nan, 0))
            cosine = row.get("cosine", (math.nan, 0))
            lines.append(
                f"| {dataset} | {MODEL_NAMES[kind]} | {_cell(row, 'BP')} | {_cell(row, 'DFA')} "
                f"| {_cell(row, 'Shallow')} | {_g(row.get('G_auc'))} | {_g(row.get('G_logloss'))} "
                f"| {'-' if math.isnan(angle[0]) else f'{angle[0]:.1f}'} "
                f"| {'-' if math.isnan(cosine[0]) else f'{cosine[0]:.2f}'} "
                f"| {_paper_cell(kind, 'BP')} | {_paper_cell(kind, 'DFA')} "
                f"| {_paper_cell(kind, 'Shallow')} | {_g(g_paper)} |"
            )
    lines += [
        "",
        "G = (DFA - Shallow) / (BP - Shallow), from the means. FM has no hidden layer (DFA = BP). "
        "Angle: DFA's vs BP's update of the hidden layers' weights (mean over layers); cosine: "
        "per-sample cosine of `B e` with BP's signal, mean over the feedback points; both on one "
        "training batch after training. Embeddings: see the module doc of "
        "`experiments/recommenders.py` (true gradient through FM terms; `B e` directly where a "
        "point sits on them; frozen by Shallow there).",
    ]
    return "\n".join(lines)


def plot(
    runs: list[RecRun], summary: dict[str, Any], config: RecConfig, out_dir: Path
) -> list[Path]:
    """Test AUC per model and rule for each data set, and the gap closure beside the paper's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"BP": "tab:blue", "DFA": "tab:orange", "Shallow": "tab:gray"}
    fig, axes = plt.subplots(
        1, len(config.datasets) + 1, figsize=(5.5 * (len(config.datasets) + 1), 4.5)
    )
    width = 0.27
    for ax, dataset in zip(axes, config.datasets, strict=False):
        models = list(summary[dataset])
        for i, rule_name in enumerate(RULES):
            xs, means, stds = [], [], []
            for j, kind in enumerate(models):
                cell = summary[dataset][kind].get(rule_name)
                if cell:
                    xs.append(j + (i - 1) * width)
                    means.append(cell["auc"][0])
                    stds.append(cell["auc"][1])
            ax.bar(xs, means, width, yerr=stds, color=colours[rule_name], label=rule_name)
        ax.set_xticks(range(len(models)), [MODEL_NAMES[k] for k in models], fontsize=8)
        lows = [c["auc"][0] for r in summary[dataset].values() for k, c in r.items() if k in RULES]
        ax.set_ylim(max(0.0, min(lows) - 0.05), min(1.0, max(lows) + 0.03))
        ax.set_ylabel("test AUC")
        ax.set_title(f"{dataset}: test AUC at best validation epoch")
        ax.legend(fontsize=8)
    ax = axes[-1]
    kinds = [k for k in config.models if k in PAPER_CRITEO]
    offsets = {
        name: o for name, o in zip([*config.datasets, "paper"], [-0.27, 0.0, 0.27], strict=False)
    }
    for name in [*config.datasets, "paper"]:
        values = []
        for kind in kinds:
            if name == "paper":
                p = PAPER_CRITEO[kind]
                values.append(gap_closure(p["DFA"][0], p["BP"][0], p["Shallow"][0]))
            else:
                values.append(summary[name][kind].get("G_auc", math.nan))
        ax.bar([j + offsets[name] for j in range(len(kinds))], values, 0.27,
               label="paper (Criteo)" if name == "paper" else name)  # fmt: skip
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(kinds)), [MODEL_NAMES[k] for k in kinds], fontsize=8)
    ax.set_ylabel("gap closure G (AUC)")
    ax.set_title("G = (DFA - Shallow) / (BP - Shallow)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "recommenders_auc.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]


@register_task(
    "recommenders", "FM/DeepFM/Deep&Cross/AutoInt on MovieLens-100k and Adult: BP, DFA, Shallow"
)
def run(options: RunOptions) -> TaskReport:
    """Runs the task. Full mode widens a single seed to three consecutive seeds; quick mode: one
    seed, 8,000 training rows, one epoch of batches of 256, 32-wide MLPs."""
    if options.quick:
        config = RecConfig(seeds=options.seeds[:1], mlp_dims=(32, 32, 32), cross_layers=2,
                           epochs=1, batch_size=256, lr=3e-3, max_train_rows=8_000)  # fmt: skip
    else:
        seeds = (
            options.seeds
            if len(options.seeds) > 1
            else tuple(options.seeds[0] + i for i in range(3))
        )
        config = RecConfig(seeds=seeds)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    runs = run_all(config, progress=options.progress)
    summary = summarise(runs, config)
    table = markdown_table(summary, config, options.quick)
    path = options.out_dir / "results.json"
    payload = {
        "task": "recommenders",
        "quick": options.quick,
        "config": asdict(config),
        "paper_criteo": PAPER_CRITEO,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
    path.write_text(json.dumps(payload, indent=1))
    (options.out_dir / "table.md").write_text(table + "\n")
    files = [path, options.out_dir / "table.md", *plot(runs, summary, config, options.out_dir)]
    return TaskReport("recommenders", table, files)
