"""The recommenders task's outputs: test AUC and log-loss beside the paper's Criteo figures, the
gap closures, and the figure. Reads the summary only (the config's shape: :mod:`.recommenders_schema`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from feedback_alignment.experiments.papers import LAUNAY_2020_CRITEO
from feedback_alignment.experiments.recommenders_schema import RecConfig
from feedback_alignment.experiments.results import Column, Table, gap_closure, pyplot, save_figure
from feedback_alignment.experiments.results import title as plot_title

MODEL_NAMES = {"fm": "FM", "deepfm": "DeepFM", "dcn": "Deep & Cross", "autoint": "AutoInt"}
"""Table names of the models."""


PAIRED = "DFA − BP AUC (per seed)"
"""The column of the paired difference: mean ± std over seeds of DFA's AUC minus BP's of the
same seed (the spread the recs-match criterion subtracts twice)."""


def summary(
    stats: dict[str, Any], quick: bool = False, name: str = "recommenders_auc", note: str = ""
) -> Table:
    """Test AUC ± std / log-loss per data set, model and rule, beside the paper's Criteo figures;
    ``name``: the table's file stem; ``note``: a sentence added to the caption (the sizes)."""
    four, two, one = 4, 2, 1
    result = Table(
        name,
        [Column("data", align="left"), Column("model", align="left"), Column("BP", four),
         Column("DFA", four), Column("Shallow", four), Column("G (AUC)", two),
         Column("G (log-loss)", two), Column("DFA hidden angle (deg)", one),
         Column("DFA signal cosine", two), Column("BP paper", four), Column("DFA paper", four),
         Column("Shallow paper", four), Column("G paper (AUC)", two), Column(PAIRED, four)],
        missing="-",
        quick=quick,
    )  # fmt: skip

    def cell(row: dict[str, Any], rule: str) -> Any:
        return [row[rule]["auc"].cell(), row[rule]["logloss"].mean] if rule in row else None

    def paper(kind: str, rule: str) -> Any:
        values = LAUNAY_2020_CRITEO.get(kind, {}).get(rule)
        return list(values) if values else None

    for dataset, rows in stats.items():
        for kind, row in rows.items():
            p = LAUNAY_2020_CRITEO.get(kind)
            g_paper = gap_closure(p["DFA"][0], p["BP"][0], p["Shallow"][0]) if p else None
            result.add(
                dataset, MODEL_NAMES[kind], cell(row, "BP"), cell(row, "DFA"),
                cell(row, "Shallow"), row.get("G_auc"), row.get("G_logloss"),
                row["angle"].mean if "angle" in row else None,
                row["cosine"].mean if "cosine" in row else None,
                paper(kind, "BP"), paper(kind, "DFA"), paper(kind, "Shallow"), g_paper,
                row["dfa_minus_bp"].cell() if "dfa_minus_bp" in row else None,
            )  # fmt: skip
    result.caption = (
        "G = (DFA - Shallow) / (BP - Shallow), from the means. FM has no hidden layer (DFA = BP). "
        "Angle: DFA's vs BP's update of the hidden layers' weights (mean over layers); cosine: "
        "per-sample cosine of `B e` with BP's signal, mean over the feedback points; both on one "
        "training batch after training. Embeddings: see the module doc of "
        "`experiments/recommenders.py` (true gradient through FM terms; `B e` directly where a "
        "point sits on them; frozen by Shallow there). "
        f"{PAIRED}: mean ± std over seeds of DFA's test AUC minus BP's with the same seed."
        + (f" {note}" if note else "")
    )
    return result


def plot(
    summary: dict[str, Any], config: RecConfig, out_dir: Path, quick: bool = False
) -> list[Path]:
    """Test AUC per model and rule for each data set, and the gap closure beside the paper's."""
    plt = pyplot()
    colours = {"BP": "tab:blue", "DFA": "tab:orange", "Shallow": "tab:gray"}
    fig, axes = plt.subplots(
        1, len(config.datasets) + 1, figsize=(5.5 * (len(config.datasets) + 1), 4.5)
    )
    width = 0.27
    for ax, dataset in zip(axes, config.datasets, strict=False):
        models = list(summary[dataset])
        for i, rule_name in enumerate(config.rules):
            xs, means, stds = [], [], []
            for j, kind in enumerate(models):
                cell = summary[dataset][kind].get(rule_name)
                if cell:
                    xs.append(j + (i - 1) * width)
                    means.append(cell["auc"].mean)
                    stds.append(cell["auc"].std)
            ax.bar(xs, means, width, yerr=stds, color=colours[rule_name], label=rule_name)
        ax.set_xticks(range(len(models)), [MODEL_NAMES[k] for k in models], fontsize=8)
        lows = [c["auc"].mean for r in summary[dataset].values() for k, c in r.items()
                if k in config.rules]  # fmt: skip
        ax.set_ylim(max(0.0, min(lows) - 0.05), min(1.0, max(lows) + 0.03))
        ax.set_ylabel("test AUC")
        ax.set_title(plot_title(f"{dataset}: test AUC at best validation epoch", quick))
        ax.legend(fontsize=8)
    ax = axes[-1]
    kinds = [k for k in config.models if k in LAUNAY_2020_CRITEO]
    names = [*config.datasets, "paper"]
    offsets = dict(zip(names, [-0.27, 0.0, 0.27], strict=False))
    for name in names:
        values = []
        for kind in kinds:
            if name == "paper":
                p = LAUNAY_2020_CRITEO[kind]
                values.append(gap_closure(p["DFA"][0], p["BP"][0], p["Shallow"][0]))
            else:
                values.append(summary[name][kind].get("G_auc", math.nan))
        ax.bar([j + offsets[name] for j in range(len(kinds))], values, 0.27,
               label="paper (Criteo)" if name == "paper" else name)  # fmt: skip
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_xticks(range(len(kinds)), [MODEL_NAMES[k] for k in kinds], fontsize=8)
    ax.set_ylabel("gap closure G (AUC)")
    ax.set_title(plot_title("G = (DFA - Shallow) / (BP - Shallow)", quick))
    ax.legend(fontsize=8)
    return [save_figure(fig, out_dir / "recommenders_auc.png")]
