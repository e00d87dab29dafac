"""The transformer task's outputs: test perplexity beside the paper's, the gap closures in log
perplexity, and the loss curves. Reads the results only (types imported for checking).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from feedback_alignment.experiments import tuning
from feedback_alignment.experiments.papers import LAUNAY_2020_PERPLEXITY
from feedback_alignment.experiments.results import Column, Table, gap_closure, pyplot, save_figure
from feedback_alignment.experiments.results import title as plot_title
from feedback_alignment.models.transformer import perplexity

if TYPE_CHECKING:
    from feedback_alignment.experiments.language import LanguageConfig, LanguageResult


def _mean(results: list[LanguageResult], rule: str, key: str = "test_loss") -> float:
    losses = [getattr(r, key) for r in results if r.rule == rule]
    return sum(losses) / len(losses) if losses else math.nan


def summary(results: list[LanguageResult], config: LanguageConfig, quick: bool = False) -> Table:
    """Our test perplexity, its ratio to BP and the gap closed, beside the paper's (whose figures
    are validation perplexities; ours are test because the learning rates were tuned on
    validation)."""
    ours = {rule: perplexity(_mean(results, rule)) for rule in config.rules}
    val = {rule: perplexity(_mean(results, rule, "val_loss")) for rule in config.rules}
    bp = ours.get("BP", math.nan)
    log_bp, log_sh = math.log(bp), math.log(ours.get("Shallow", math.nan))
    paper = LAUNAY_2020_PERPLEXITY
    paper_bp, paper_sh = math.log(paper["BP"]), math.log(paper["Shallow"])
    table = Table(
        "transformer_quick" if quick else "transformer",
        [Column("rule", align="left"), Column("lr", 3), Column("test perplexity (ours, per char)", 3),
         Column("val perplexity (ours)", 3), Column("ratio to BP", 3),
         Column("gap closed (log ppl)", 2),
         Column("paper val perplexity (WikiText-103, per BPE token)", 1), Column("paper ratio", 2),
         Column("paper gap closed", 2)],
        quick=quick,
    )  # fmt: skip
    for rule in config.rules:
        ppl = ours[rule]
        rates = sorted({r.lr for r in results if r.rule == rule})
        table.add(
            rule, "/".join(f"{x:.2g}" for x in rates), ppl, val[rule], ppl / bp, gap_closure(math.log(ppl), log_bp, log_sh), paper[rule],
            paper[rule] / paper["BP"], gap_closure(math.log(paper[rule]), paper_bp, paper_sh),
        )  # fmt: skip
    order = sorted(config.rules, key=lambda r: ours[r])
    paper_order = [r for r in LAUNAY_2020_PERPLEXITY if r in config.rules]  # the paper's order
    verdict = "the same as" if order == paper_order else "different from"
    seeds = sorted({r.seed for r in results})
    table.caption = (
        f"Ordering found (lower perplexity first): {' < '.join(order)}: {verdict} the paper's "
        f"({' < '.join(paper_order)}).\n\n"
        f"{config.corpus} characters, {config.norm}-LN Transformer {config.n_layer} x "
        f"{config.d_model}, {config.n_head} heads, context {config.block_size}, batch "
        f"{config.batch_size}, {config.steps} steps, Adam (0.9, 0.999), lr per rule in the table ("
        f"{'tuned on validation' if config.tuned and tuning.tuned_values('transformer', config.tuned_dir) else 'hand-set'}), warm-up "
        f"{config.warmup}, x{config.decay} on plateau, clip {config.clip}; error taken "
        f"{'before' if config.error_before_vocab else 'after'} the vocabulary projection; seeds "
        f"{seeds}. Perplexity = exp(mean cross-entropy) over {config.eval_batches} x "
        f"{config.batch_size} fixed windows of the test (validation) split at the last step. "
        "Gap closed (test) = "
        "(log ppl_shallow - log ppl_rule) / (log ppl_shallow - log ppl_BP). The paper's "
        "perplexities are per BPE token (youtokentome, 32k merges, in the authors' code), not per "
        "word; ours per character. The gap closed depends on Shallow's perplexity: Shallow's is "
        f"{ours.get('Shallow', math.nan) / bp:.1f}x BP's here, "
        f"{paper['Shallow'] / paper['BP']:.0f}x in the paper."
    )
    return table


def plot(results: list[LanguageResult], path: Path, quick: bool = False) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for result in results:
        steps = [c[0] for c in result.curve]
        ax.plot(steps, [perplexity(c[1]) for c in result.curve], marker="o", label=result.rule)
    ax.set_xlabel("step")
    ax.set_ylabel("validation perplexity (per character)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(plot_title("Transformer on Shakespeare: BP vs DFA vs Shallow", quick))
    return save_figure(fig, path, dpi=120)
