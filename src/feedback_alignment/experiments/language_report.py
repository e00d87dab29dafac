"""The transformer task's outputs: test perplexity beside the paper's, the gap closures in log
perplexity, and the loss curves. Reads the results only (their shapes: :mod:`.language_schema`).
"""

from __future__ import annotations

import math
from pathlib import Path

from feedback_alignment.experiments import tuning
from feedback_alignment.experiments.language_schema import LanguageConfig, LanguageResult
from feedback_alignment.experiments.papers import LAUNAY_2020_PERPLEXITY
from feedback_alignment.experiments.results import Column, Table, gap_closure, pyplot, save_figure
from feedback_alignment.experiments.results import title as plot_title
from feedback_alignment.models.transformer import perplexity


def _mean(results: list[LanguageResult], rule: str, key: str = "test_loss") -> float:
    losses = [getattr(r, key) for r in results if r.rule == rule]
    return sum(losses) / len(losses) if losses else math.nan


def _recipe(rule: str) -> tuple[str, str]:
    """``"DFA-macro/authors"`` -> ``("DFA-macro", "/authors")``; ``"BP"`` -> ``("BP", "")``."""
    base, slash, recipe = rule.partition("/")
    return base, slash + recipe


def summary(results: list[LanguageResult], config: LanguageConfig, quick: bool = False) -> Table:
    """Our test perplexity, its ratio to BP and the gap closed, beside the paper's (whose figures
    are validation perplexities; ours are test because the learning rates were tuned on
    validation). An arm of the authors' recipe (``<rule>/authors``) is compared with the BP and
    Shallow of the same recipe."""
    ours = {rule: perplexity(_mean(results, rule)) for rule in config.rules}
    val = {rule: perplexity(_mean(results, rule, "val_loss")) for rule in config.rules}
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
        base, recipe = _recipe(rule)
        ppl = ours[rule]
        bp = ours.get("BP" + recipe, math.nan)
        log_bp, log_sh = math.log(bp), math.log(ours.get("Shallow" + recipe, math.nan))
        rates = sorted({r.lr for r in results if r.rule == rule})
        table.add(
            rule, "/".join(f"{x:.2g}" for x in rates), ppl, val[rule], ppl / bp, gap_closure(math.log(ppl), log_bp, log_sh), paper[base],
            paper[base] / paper["BP"], gap_closure(math.log(paper[base]), paper_bp, paper_sh),
        )  # fmt: skip
    recipes = list(dict.fromkeys(_recipe(rule)[1] for rule in config.rules))
    findings = []
    for recipe in recipes:
        mine = [r for r in config.rules if _recipe(r)[1] == recipe]
        order = sorted(mine, key=lambda r: ours[r])
        paper_order = [r + recipe for r in LAUNAY_2020_PERPLEXITY if r + recipe in mine]
        verdict = "the same as" if order == paper_order else "different from"
        label = "Ordering found" + (" with the authors' recipe" if recipe else "")
        findings.append(
            f"{label} (lower perplexity first): {' < '.join(order)}: {verdict} the paper's "
            f"({' < '.join(paper_order)})"
        )
    seeds = sorted({r.seed for r in results})
    tuned = config.tuned and tuning.tuned_values("transformer", config.tuned_dir)
    authors = config.authors
    shallow = {recipe: ours.get("Shallow" + recipe, math.nan) / ours.get("BP" + recipe, math.nan)
               for recipe in recipes}  # fmt: skip
    ratio = ", ".join(f"{v:.1f}x BP's" + (" (authors' recipe)" if r else "")
                      for r, v in shallow.items())  # fmt: skip
    recipe_note = (
        f" Arms `<rule>/authors` use the authors' recipe instead (their `train_lm.py`, "
        f"`--optim schedule`): no warm-up, Adam eps {authors.eps:g}, clip {authors.clip}, dropout "
        f"{authors.dropout}, {authors.activation.upper()} feed-forward, lr from their 1e-4 (the "
        "table's, tuned where stored), the same x"
        f"{config.decay} on plateau; their gap closed is against the BP and Shallow of the same "
        "recipe."
        if any(recipes)
        else ""
    )
    table.caption = (
        "; ".join(findings) + ".\n\n"
        f"{config.corpus} characters, {config.norm}-LN Transformer {config.n_layer} x "
        f"{config.d_model}, {config.n_head} heads, context {config.block_size}, batch "
        f"{config.batch_size}, {config.steps} steps, Adam (0.9, 0.999), lr per rule in the table ("
        f"{'tuned on validation' if tuned else 'hand-set'}), warm-up "
        f"{config.warmup}, x{config.decay} on plateau, clip {config.clip}, no dropout, GELU; error "
        f"taken {'before' if config.error_before_vocab else 'after'} the vocabulary projection; "
        f"seeds {seeds}.{recipe_note} Perplexity = exp(mean cross-entropy) over "
        f"{config.eval_batches} x {config.batch_size} fixed windows of the test (validation) split "
        "at the last step, per character. Gap closed (test) = "
        "(log ppl_shallow - log ppl_rule) / (log ppl_shallow - log ppl_BP). The paper's "
        "perplexities are per BPE token (youtokentome, 32k merges, in the authors' code), not per "
        "word; ours per character. The gap closed depends on Shallow's perplexity: Shallow's is "
        f"{ratio} here, {paper['Shallow'] / paper['BP']:.0f}x in the paper."
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
