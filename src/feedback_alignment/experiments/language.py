"""Task ``transformer``: a char-level Transformer language model trained by BP, DFA and Shallow.

Launay et al. (2020, section 3.3) trained a 6-block, 512-wide post-LN Transformer on WikiText-103
with DFA and compared two feedback placements: "macro" (one point per block output) and "micro"
(three per block: after attention + residual + norm, after the feed-forward activation, at the block
output), with the error taken before the vocabulary projection. This task does the same at CPU scale
on the Shakespeare corpus (characters, so perplexities are per character and far lower than the
paper's, which are per BPE token: youtokentome with 32k merges in the authors' code, not per word;
compare ratios and the ordering, not values). The gap closure in log perplexity divides by
log(Shallow / BP), so it depends on Shallow's perplexity as well as on DFA's: Shallow is about
2.5x BP here and 14x in the paper.

Two recipes, each run by all four rules. Ours (the arms ``BP``, ``DFA-macro``, ``DFA-micro``,
``Shallow``) follows the paper's optimiser: Adam with beta2 = 0.999, the learning rate decayed
x0.2 when the validation loss stops improving, gradient-norm clipping at 1.0; plus a short linear
warm-up, which post-LN blocks need at our learning rates; no dropout, GELU; each rule's learning
rate tuned at our scale. The authors' recipe (the arms ``<rule>/authors``, issue 22), read from
their ``train_lm.py`` and ``run_experiments.sh`` (the DFA runs with ``--optim schedule``): Adam
from 1e-4 (beta2 0.999, eps 1e-9) with no warm-up, x0.2 on plateau, clipping at 0.5, dropout 0.1
and a ReLU feed-forward (PyTorch's ``TransformerEncoderLayer``); the four rules share it (the
paper's own BP baseline used the Noam schedule instead). Its arms are tunable like ours, from the
authors' 1e-4 (the hand-set value, used until a search is stored).

References:
    Launay, Poli, Boniface, Krzakala, "Direct Feedback Alignment Scales to Modern Deep Learning
    Tasks and Architectures", NeurIPS 2020, section 3.3 and table 4.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import replace

import torch
import torch.nn.functional as F

from feedback_alignment.experiments import presets, tuning
from feedback_alignment.experiments.language_report import plot, summary
from feedback_alignment.experiments.language_schema import (
    ARMS,
    AUTHORS,
    AUTHORS_RULES,
    LanguageConfig,
    LanguageResult,
    split_arm,
)
from feedback_alignment.experiments.language_schema import AUTHORS_LR as AUTHORS_LR  # re-export
from feedback_alignment.experiments.language_schema import RULES as RULES
from feedback_alignment.experiments.language_schema import AuthorsRecipe as AuthorsRecipe
from feedback_alignment.experiments.papers import LAUNAY_2020_PERPLEXITY
from feedback_alignment.experiments.registry import RunOptions, TaskReport, configure, register_task
from feedback_alignment.experiments.results import (
    write_results,
    write_table,
)
from feedback_alignment.experiments.run import apply_rule, fit, run_jobs, threads
from feedback_alignment.models.transformer import (
    CharTransformer,
    TransformerConfig,
    feedback_points,
    perplexity,
)
from feedback_alignment.rules import Rule

log = logging.getLogger(__name__)


QUICK = presets.preset("transformer", "quick", LanguageConfig())
"""About half a minute per rule on one loaded CPU core (``presets/transformer.json``)."""


def config_for(options: RunOptions) -> LanguageConfig:
    """The run's settings: preset ``options.preset`` (:data:`QUICK` or the defaults) with the
    run's choice of tuned or hand-set rates (the seeds are the run's, given to
    :func:`run_experiment`)."""
    return configure("transformer", LanguageConfig(), options)


def place_rule(name: str, model: CharTransformer, seed: int, before_vocab: bool) -> Rule:
    """Applies rule ``name`` (one of :data:`RULES`) to ``model`` and returns it.

    The points are explicit (the paper's block outputs, "macro", or three per block, "micro"):
    the blocks are residual, so per-activation automatic placement does not fit them.
    """
    error_at = "ln_f" if before_vocab else None
    if name == "BP":
        return apply_rule("BP", model)
    if name == "Shallow":
        points = feedback_points(model, "macro")
        return apply_rule("Shallow", model, seed, points=points, error_at=error_at)
    points = feedback_points(model, name.split("-")[1])
    return apply_rule("DFA", model, seed, points=points, error_at=error_at)


ACTIVATIONS = {"gelu": torch.nn.GELU, "relu": torch.nn.ReLU}


def use_activation(model: CharTransformer, name: str) -> None:
    """Replaces every block's feed-forward activation (``mlp.act``, a micro feedback point) by
    a fresh ``name`` module (``"gelu"``, the model's own, or ``"relu"``), before a rule is
    applied."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    for block in model.blocks:
        block.mlp.act = ACTIVATIONS[name]()


def _batch(
    data: torch.Tensor, starts: torch.Tensor, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = torch.arange(block)
    index = starts[:, None] + offsets  # (B, T)
    return data[index], data[index + 1]


@torch.no_grad()
def evaluate(model: CharTransformer, data: torch.Tensor, batches: int, batch_size: int) -> float:
    """Mean cross-entropy (nats per character) over fixed, evenly spread windows of ``data``."""
    block = model.config.block_size
    count = batches * batch_size
    starts = torch.linspace(0, len(data) - block - 2, count).long()
    was_training = model.training
    model.eval()
    total = 0.0
    for i in range(batches):
        x, y = _batch(data, starts[i * batch_size : (i + 1) * batch_size], block)
        total += float(F.cross_entropy(model(x).flatten(0, 1), y.flatten()))
    model.train(was_training)
    return total / batches


def learning_rates(config: LanguageConfig) -> dict[str, float]:
    """``config.lr`` with the stored tuned rates in place where ``config.tuned``."""
    return tuning.with_tuned(
        "transformer", config.lr, enabled=config.tuned, directory=config.tuned_dir
    )


def train_one(
    rule_name: str,
    seed: int,
    config: LanguageConfig,
    corpus,
    progress: bool = True,
    lr: float | None = None,
    report: tuning.Report | None = None,
) -> LanguageResult:
    """Trains one model with one rule; returns its validation and test perplexity, curve and a
    sample. ``lr`` overrides :func:`learning_rates`; ``report(step, val_loss)`` is called at every
    evaluation (a tuner's pruning)."""
    base_rule, recipe = split_arm(rule_name)
    authors = config.authors if recipe == AUTHORS else None
    torch.manual_seed(seed)
    model_config = TransformerConfig(
        vocab_size=corpus.vocab_size,
        block_size=config.block_size,
        n_layer=config.n_layer,
        n_head=config.n_head,
        d_model=config.d_model,
        dropout=authors.dropout if authors else 0.0,
        norm=config.norm,
    )
    model = CharTransformer(model_config)
    if authors:
        use_activation(model, authors.activation)
    place_rule(base_rule, model, seed, config.error_before_vocab)
    rate = learning_rates(config)[rule_name] if lr is None else lr
    if authors:
        optimizer = torch.optim.Adam(
            model.parameters(), lr=rate, betas=(0.9, 0.999), eps=authors.eps
        )
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=rate, betas=(0.9, 0.999))
    warmup = authors.warmup if authors else config.warmup
    generator = torch.Generator().manual_seed(seed)
    train = corpus.train
    plateau = {"scale": 1.0}  # x decay on every plateau, as in the paper

    def batches(_: int) -> Iterator[torch.Tensor]:
        for _step in range(config.steps):
            yield torch.randint(
                0, len(train) - config.block_size - 1, (config.batch_size,), generator=generator
            )

    def loss(starts: torch.Tensor) -> torch.Tensor:
        x, y = _batch(train, starts, config.block_size)
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    def validate() -> dict[str, float]:
        val = evaluate(model, corpus.val, config.eval_batches, config.batch_size)
        return {"val": val, "lr": optimizer.param_groups[0]["lr"]}

    def decay() -> None:
        plateau["scale"] *= config.decay
        log.info("%s: lr decayed to x%.3g", rule_name, plateau["scale"])

    done = fit(
        model,
        optimizer,
        batches,
        loss,
        total_steps=config.steps,
        lr_at=lambda step, base: base * plateau["scale"] * min(1.0, step / max(warmup, 1)),
        clip=authors.clip if authors else config.clip,
        evaluate=validate,
        eval_every=config.eval_every,
        select="val",
        mode="min",
        min_delta=1e-3,
        patience=config.patience,
        on_plateau=decay,
        on_evaluate=None if report is None else (lambda step, m: report(step, m["val"])),
        label=f"{rule_name:>9} seed {seed}",
        progress=progress,
    )
    curve = [(step, m["val"], m["lr"]) for step, m in done.evaluations]
    val_loss = curve[-1][1]
    test_loss = math.inf if report is not None else _test_loss(model, corpus, config)
    prompt = corpus.encode(config.prompt)[None]
    sample_gen = torch.Generator().manual_seed(seed)
    model.eval()
    ids = model.generate(prompt, config.sample_chars, config.temperature, generator=sample_gen)
    return LanguageResult(
        rule=rule_name,
        seed=seed,
        val_loss=val_loss,
        val_perplexity=perplexity(val_loss),
        test_loss=test_loss,
        test_perplexity=perplexity(test_loss) if math.isfinite(test_loss) else math.inf,
        lr=rate,
        sample=corpus.decode(ids[0]),
        seconds=done.seconds,
        curve=curve,
        train_loss=done.losses,
    )


def _test_loss(model: CharTransformer, corpus, config: LanguageConfig) -> float:
    """The test split's loss, read once at the end of a reported run (never by the tuner)."""
    return evaluate(model, corpus.test, config.eval_batches, config.batch_size)


def run_experiment(
    config: LanguageConfig, seeds: tuple[int, ...] = (0,), progress: bool = True
) -> list[LanguageResult]:
    """Every rule of ``config`` for every seed, on the configured corpus."""
    from feedback_alignment import data

    corpus = data.load(config.corpus)
    jobs = [(rule, seed, config) for seed in seeds for rule in config.rules]
    # through run_jobs: inside `reproduce`, each run is saved as it ends (a killed task resumes)
    with threads(config.threads):
        return run_jobs(
            _run_job, jobs, "transformer", shared=(corpus, progress), progress=progress,
            label=lambda job: job[:2],
        )  # fmt: skip


def _run_job(shared: tuple[object, bool], job: tuple[str, int, LanguageConfig]) -> LanguageResult:
    corpus, progress = shared
    rule, seed, config = job
    return train_one(rule, seed, config, corpus, progress)


@register_task(
    "transformer",
    "char-level Transformer on Shakespeare: BP, DFA macro/micro, Shallow (Launay 2020 §3.3)",
)
def run(options: RunOptions, config: LanguageConfig | None = None) -> TaskReport:
    """Trains every rule; writes ``results.json``, the table, ``samples.md`` and ``curves.png``."""
    config = (
        config_for(options)
        if config is None
        else replace(config, tuned=options.tuned, tuned_dir=options.tuned_dir)
    )
    seeds = options.seeds[:1] if options.quick else options.seeds
    results = run_experiment(config, tuple(seeds), options.progress)
    out = options.out_dir
    table = summary(results, config, options.quick)
    write_results(
        out, "transformer", options.quick, seeds, config=config,
        paper_perplexity=LAUNAY_2020_PERPLEXITY, runs=results,
    )  # fmt: skip
    mode = "QUICK MODE: " if options.quick else ""
    samples = "\n\n".join(
        f"## {r.rule} (seed {r.seed}, test perplexity {r.test_perplexity:.2f})\n\n```\n{r.sample}\n```"
        for r in results
    )
    (out / "samples.md").write_text(f"# {mode}Text sampled from each model\n\n" + samples + "\n")
    (out / "table.md").write_text(table.to_markdown() + "\n")
    files = [out / "results.json", out / "samples.md", out / "table.md"]
    files += [*write_table(out, table, seeds), plot(results, out / "curves.png", options.quick)]
    markdown = "### transformer (Launay et al. 2020, §3.3)\n\n" + table.to_markdown()
    return TaskReport("transformer", markdown, files)


# --- tuning --------------------------------------------------------------------------------

TUNING_STEPS = 400
"""Steps of a tuning trial (a third of the full run's, to fit the budget; stated in the docs)."""

_CORPUS: list = []


def _tuning_objective(
    arm: str, values: dict[str, float], report: tuning.Report, quick: bool
) -> float:
    """Validation loss after a shortened run of rule ``arm`` at learning rate ``values["lr"]``."""
    from feedback_alignment import data

    base = QUICK if quick else LanguageConfig()
    config = replace(base, steps=50 if quick else TUNING_STEPS, eval_every=25 if quick else 100,
                     warmup=min(base.warmup, 10 if quick else base.warmup), rules=(arm,))  # fmt: skip
    if not _CORPUS:
        _CORPUS.append(data.load(config.corpus))
    with threads(config.threads):
        result = train_one(arm, 0, config, _CORPUS[0], False, values["lr"], report)
    return result.val_loss


tuning.register_tunable(
    tuning.Tunable(
        task="transformer",
        arms=ARMS,
        # the authors' recipe starts from their 1e-4, below our arms' range
        space=lambda arm: {
            "lr": tuning.Param(2e-5, 2e-3) if arm in AUTHORS_RULES else tuning.Param(2e-4, 1e-2)
        },
        defaults=lambda arm: {"lr": LanguageConfig().lr[arm]},
        objective=_tuning_objective,
        direction="minimize",
        metric="validation loss (nats/char)",
        trials=8,
        schedule=f"Each trial trains seed 0 for {TUNING_STEPS} of the full run's 1200 steps "
        "(its arm's recipe: same warm-up and plateau decay) and is scored on the validation "
        "split.",
    )
)
