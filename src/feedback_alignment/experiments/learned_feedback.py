"""Task ``learned-feedback``: direct rules whose feedback learns, in a LeNet on Fashion-MNIST.

Issue 24's reproduction at this machine's scale: the ``convnets`` task's LeNet-5, data, loop and
angle measurement, trained with BP, DFA, Direct Kolen-Pollack (:class:`~feedback_alignment.DKP`)
and Forward DFA (:class:`~feedback_alignment.FDFA`), 3 seeds each, every rule's learning rate
searched the same way on held-out training images (never the test images). Recorded per run: the
test error, the update angle of every layer against BP's gradient on a fixed probe batch (as
``convnets`` measures it; the two conv layers are the ones DFA fails to train), and how far the
learned feedback matrix moved from its start.

The claims under test: Webster et al. (DKP) find BP > DKP > DFA on a small CIFAR-10 conv net
(70.5 / 67.5 / 61.0 % accuracy), and Bacho and Chu find FDFA better than DFA on conv nets and
close to BP. This library reproduces that DFA does not train conv layers (angles 85-92 deg).

**Optimisers** (the same for every rule, so the comparison is fair): the weights train with AdamW
(weight decay 1e-4, the ``convnets`` setting) at the rule's tuned rate; the learned feedback ``B``
of DKP and FDFA has an optimiser of its own, as in both references: Adam at lr 1e-4 (the
references' rate for ``B``), weight decay 1e-6 for DKP (webstah/dkp-gist) and none for FDFA
(Florian-BACHO/FDFA, which starts ``B`` at zero; so does :class:`~feedback_alignment.FDFA`).
One cosine decay to 0 scales every group's rate (the weights' and ``B``'s). The weights do not
use the DKP reference's SGD with Nesterov momentum: every rule here uses the optimiser the other
``convnets`` rules use, and only the weights' rate is searched, for all four rules alike; ``B``'s
rate is the references' fixed one.

Writes ``results.json`` and the table ``learned_feedback_fashion_mnist.json``/``.md``. Rerun:
``feedback-alignment --threads 1 reproduce --tasks learned-feedback --seeds 0,1,2`` (``--quick``:
a CPU-minute smoke run); the search: ``... --tasks learned-feedback --tune``.

References:
    Webster, Choi, Ahn, "Learning the Connections in Direct Feedback Alignment", 2020.
    Bacho, Chu, "Low-variance forward gradients using direct feedback alignment and momentum",
    Neural Networks 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.experiments import presets, tuning
from feedback_alignment.experiments.convnets import (
    VALIDATION_SIZE,
    _measure,
    load_fashion_mnist,
    test_error,
)
from feedback_alignment.experiments.convnets_schema import ConvConfig, RunRecord
from feedback_alignment.experiments.papers import WEBSTER_2020_CIFAR10_CONV_ACCURACY
from feedback_alignment.experiments.registry import (
    RunOptions,
    TaskReport,
    configure,
    register_task,
    run_seeds,
)
from feedback_alignment.experiments.results import (
    Column,
    Table,
    finite_mean,
    mean_std,
    write_results,
    write_table,
)
from feedback_alignment.experiments.run import apply_rule, fit, run_jobs, shuffled
from feedback_alignment.rules import DKP, FDFA, DirectFeedback, Rule

TASK = "learned-feedback"

RULES: tuple[str, ...] = ("BP", "DFA", "DKP", "FDFA")
"""The rules of the task by table name."""

LEARNED: dict[str, type[DirectFeedback]] = {"DKP": DKP, "FDFA": FDFA}
"""The rules whose feedback matrix is a parameter, made from an example batch at apply time."""

CONV_LAYERS: tuple[str, ...] = ("0", "3")
"""LeNet-5's two conv layers (module paths in :class:`~feedback_alignment.models.LeNet`)."""


@dataclass
class LearnedConfig(ConvConfig):
    """Settings of the task: ``convnets``' full run (10 epochs, batch 128, AdamW at the rule's
    rate, cosine decay) for the four rules, plus the optimiser of the learned feedback."""

    task: ClassVar[str] = TASK
    rules: tuple[str, ...] = RULES
    manhattan: tuple[bool, ...] = (False,)
    seeds: tuple[int, ...] = (0, 1, 2)
    feedback_lr: float = 1e-4  # Adam on B (DKP, FDFA), both references' rate
    dkp_feedback_weight_decay: float = 1e-6  # webstah/dkp-gist
    fdfa_feedback_weight_decay: float = 0.0  # Florian-BACHO/FDFA


def config_for(options: RunOptions) -> LearnedConfig:
    """The run's settings: preset ``options.preset`` of ``presets/learned-feedback.json``
    (``quick``: 4,000 training images, 1 epoch, one seed; ``full``: the defaults), with the run's
    seeds (:func:`run_seeds`) and its choice of tuned or hand-set rates."""
    return configure(TASK, LearnedConfig(), options, run_seeds(options))


def learning_rate(config: LearnedConfig, rule: str) -> float:
    """The rule's tuned weight rate where stored (and ``config.tuned``), else ``config.lr``
    (``config.task`` names whose stored rates: this task's or its ResNet variant's)."""
    stored = tuning.tuned_values(config.task, config.tuned_dir) if config.tuned else {}
    return stored.get(rule, {}).get("lr", config.lr)


@dataclass
class LearnedRecord(RunRecord):
    """A run of this task: :class:`~feedback_alignment.experiments.convnets_schema.RunRecord` and the
    learned feedback's start and end norms and the norm of its change (NaN: no learned ``B``)."""

    feedback_start_norm: float = math.nan
    feedback_end_norm: float = math.nan
    feedback_change_norm: float = math.nan


class _Optimizers:
    """Several optimisers stepped as one, for :func:`~feedback_alignment.experiments.run.fit`
    (which sets every group's rate from its base: one schedule over all of them)."""

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = optimizers
        self.param_groups = [g for o in optimizers for g in o.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Any = None) -> None:
        for optimizer in self.optimizers:
            optimizer.step()


def make_rule(name: str, model: nn.Module, seed: int, example: torch.Tensor) -> Rule:
    """Rule ``name`` applied to ``model``; DKP and FDFA make their matrix from ``example`` now
    (one eval-mode forward pass), so that the optimiser can hold it."""
    if name in LEARNED:
        rule = LEARNED[name](seed=seed)
        rule.apply(model, example_input=example)
        return rule
    return apply_rule(name, model, seed)


def optimizer(
    model: nn.Module, rule_name: str, rule: Rule, config: LearnedConfig, rate: float
) -> Any:
    """AdamW on the weights; for DKP and FDFA, beside it, Adam on the feedback matrix."""
    feedback = rule.feedback_parameters(model) if isinstance(rule, DirectFeedback) else []
    weights = [p for p in model.parameters() if all(p is not f for f in feedback)]
    main = torch.optim.AdamW(weights, rate, weight_decay=config.weight_decay)
    if not feedback:
        return main
    decay = (
        config.dkp_feedback_weight_decay
        if rule_name == "DKP"
        else config.fdfa_feedback_weight_decay
    )
    return _Optimizers(main, torch.optim.Adam(feedback, config.feedback_lr, weight_decay=decay))


def train_one(
    rule_name: str,
    seed: int,
    config: LearnedConfig,
    tensors: tuple[torch.Tensor, ...],
    progress: bool = True,
    lr: float | None = None,
) -> LearnedRecord:
    """Trains a fresh LeNet with one rule and one seed (``lr`` overrides the stored rate; a
    tuning trial passes validation tensors in the test slots)."""
    x_train, y_train, x_test, y_test = tensors
    torch.manual_seed(seed)
    model = config.build(x_train.shape[1], x_train.shape[-1])
    rule = make_rule(rule_name, model, seed, x_train[:2])
    rate = learning_rate(config, rule_name) if lr is None else lr
    opt = optimizer(model, rule_name, rule, config, rate)
    feedback = rule.feedback_parameters(model) if isinstance(rule, DirectFeedback) else []
    start = feedback[0].detach().clone() if feedback else None
    total = math.ceil(len(x_train) / config.batch_size) * config.epochs
    every = max(1, total // max(1, config.measurements))
    probe = (x_train[: config.probe_size], y_train[: config.probe_size])
    generator = torch.Generator().manual_seed(seed)
    record = LearnedRecord(rule_name, False, seed, math.nan, 0.0, lr=rate)
    record.history.append(_measure(model, rule, probe, 0))

    def measure(step: int) -> None:
        if step % every == 0 and step < total:
            record.history.append(_measure(model, rule, probe, step))

    done = fit(
        model,
        opt,
        lambda _: shuffled(len(x_train), config.batch_size, generator),
        lambda index: F.cross_entropy(model(x_train[index]), y_train[index]),
        epochs=config.epochs,
        total_steps=total,
        lr_at=lambda step, base: (
            base * 0.5 * (1 + math.cos(math.pi * min(step - 1, total) / total))
        ),
        after_step=measure,
        label=f"{rule_name} seed {seed}",
        progress=progress,
    )
    record.train_loss, record.seconds = done.epoch_losses, done.seconds
    record.history.append(_measure(model, rule, probe, done.steps))
    if start is not None:
        end = feedback[0].detach()
        record.feedback_start_norm = float(start.norm())
        record.feedback_end_norm = float(end.norm())
        record.feedback_change_norm = float((end - start).norm())
    record.test_error = test_error(model, x_test, y_test)
    return record


def _train_job(tensors: tuple[torch.Tensor, ...], job: tuple) -> LearnedRecord:
    rule, seed, config, progress = job
    return train_one(rule, seed, config, tensors, progress)


def run_experiment(
    config: LearnedConfig,
    tensors: tuple[torch.Tensor, ...] | None = None,
    progress: bool = True,
    workers: int = 1,
) -> list[LearnedRecord]:
    """Every (rule, seed) of ``config`` (saved as each ends inside ``reproduce``: resumable), on
    ``tensors`` (default: Fashion-MNIST as ``config`` sizes it)."""
    unknown = [r for r in config.rules if r not in RULES]
    if unknown:
        raise ValueError(f"unknown rules {unknown}; choose from {list(RULES)}")
    if not config.seeds:
        raise ValueError(f"{config.task} needs at least one seed")
    tensors = tensors if tensors is not None else load_fashion_mnist(config)
    bars = progress and workers == 1
    return run_jobs(
        _train_job,
        [(rule, seed, config, bars) for seed in config.seeds for rule in config.rules],
        config.task,
        shared=tensors,
        workers=workers,
        progress=progress,
        label=lambda job: job[:2],
    )


def conv_angles(record: LearnedRecord) -> dict[str, float | None]:
    """The final update angle (deg, vs BP's gradient) of each conv layer of a run."""
    angles = record.history[-1].get("update_angle", {})
    return {layer: angles.get(layer) for layer in CONV_LAYERS}


def late_conv_angles(record: LearnedRecord) -> dict[str, float]:
    """Each conv layer's update angle averaged over the measurements of the second half of
    training (one probe measurement is noisy: a steadier figure of where the rule settles)."""
    end = record.history[-1]["step"]
    late = [h["update_angle"] for h in record.history if h["step"] >= end / 2]
    return {layer: finite_mean(h.get(layer) for h in late) for layer in CONV_LAYERS}


def summary(
    records: list[LearnedRecord],
    config: LearnedConfig,
    sizes: dict[str, int],
    seconds: float,
    title: str = "Fashion-MNIST",
    quick: bool = False,
) -> Table:
    """Test error, the conv layers' final update angles, ``B``'s movement and the time per rule."""
    table = Table(
        "learned_feedback_" + title.lower().replace("-", "_"),
        [
            Column("rule", align="left"),
            Column("lr", 3),
            Column("test error %", 2),
            Column("conv1 update angle (deg)", 1),
            Column("conv2 update angle (deg)", 1),
            Column("conv1 / conv2 angle, 2nd-half mean (deg)", 1),
            Column("|B_end - B_start| / |B_start|", 2),
            Column("|B_end|", 2),
            Column("min per run", 1),
            Column("Webster et al. CIFAR-10 accuracy %", 1),
        ],
        quick=quick,
    )
    for rule in config.rules:
        group = [r for r in records if r.rule == rule]
        if not group:
            continue
        rates = {r.lr for r in group}
        angles = [conv_angles(r) for r in group]
        late = [late_conv_angles(r) for r in group]
        moved = [
            r.feedback_change_norm / r.feedback_start_norm
            for r in group
            if r.feedback_start_norm > 0
        ]
        table.add(
            rule,
            f"{rates.pop():.2g}" if len(rates) == 1 else "varies",
            mean_std(r.test_error for r in group).cell(single=True),
            mean_std(a[CONV_LAYERS[0]] for a in angles).cell(single=True),
            mean_std(a[CONV_LAYERS[1]] for a in angles).cell(single=True),
            [mean_std(a[layer] for a in late).cell(single=True) for layer in CONV_LAYERS],
            mean_std(moved).cell(single=True),
            mean_std(r.feedback_end_norm for r in group).cell(single=True),
            mean_std(r.seconds / 60 for r in group).cell(single=True),
            WEBSTER_2020_CIFAR10_CONV_ACCURACY.get(rule),
        )
    rates = rates_text(config)
    table.caption = (
        f"LeNet-5 (conv 6, 16; linear 120, 84; ReLU) on {sizes['train']:,} training / "
        f"{sizes['test']:,} test images, {config.epochs} epoch(s), batch {config.batch_size}. "
        f"Every rule: AdamW (weight decay {config.weight_decay}) on the weights at {rates}; DKP "
        f"and FDFA: their feedback matrix B by its own Adam at lr {config.feedback_lr} (weight "
        f"decay {config.dkp_feedback_weight_decay} for DKP, {config.fdfa_feedback_weight_decay} "
        "for FDFA, as the references), one cosine decay to 0 over every rate. DKP's B starts at "
        "U(+-1/sqrt(n_l)) per point, FDFA's at 0 (a B starting at 0 shows no relative change: "
        f"its end norm is in the column beside). Seeds {list(config.seeds)} (mean ± std over "
        f"seeds where more than one); {seconds / 60:.1f} min of training (summed over runs) on "
        f"{torch.get_num_threads()} thread(s) per run. Update angles on a "
        f"fixed probe batch of {config.probe_size} training images: between the rule's and BP's "
        "update of the layer's weight (0 = BP, 90 = orthogonal), at the last step and averaged "
        f"over the probe measurements from the middle of training on ({config.measurements} "
        "over the run, evenly spaced; one measurement is noisy). The last column is Webster et "
        "al.'s CIFAR-10 small conv net (another data set and network, 50 epochs): their ordering, "
        "not a level to match. Bacho and Chu give no LeNet/Fashion-MNIST figure."
    )
    return table


def run_and_write(
    config: LearnedConfig,
    out_dir: Path,
    tensors: tuple[torch.Tensor, ...] | None = None,
    progress: bool = True,
    title: str = "Fashion-MNIST",
    quick: bool = False,
    workers: int = 1,
    summary_of: Callable[..., Table] | None = None,
    network: str = "LeNet",
) -> tuple[list[LearnedRecord], str, list[Path]]:
    """Runs every (rule, seed); writes ``results.json`` and the table into ``out_dir``.
    ``summary_of(records, config, sizes, seconds, quick)`` makes the table (default: the LeNet
    table, :func:`summary`; the ResNet variant passes its own)."""
    tensors = tensors if tensors is not None else load_fashion_mnist(config)
    records = run_experiment(config, tensors, progress, workers)
    sizes = {"train": len(tensors[0]), "test": len(tensors[2])}
    seconds = sum(r.seconds for r in records)
    if summary_of is None:
        table = summary(records, config, sizes, seconds, title, quick)
    else:
        table = summary_of(records, config, sizes, seconds, quick)
    files = [
        write_results(
            out_dir,
            config.task,
            quick,
            config.seeds,
            config=config,
            data={"name": title, **sizes},
            seconds=seconds,
            webster_cifar10_conv_accuracy=WEBSTER_2020_CIFAR10_CONV_ACCURACY,
            runs=records,
        ),
        *write_table(out_dir, table, config.seeds),
    ]
    heading = f"### {config.task}: {network} on {title}, BP / DFA / DKP / FDFA\n\n"
    return records, heading + table.to_markdown(), files


@register_task(TASK, "LeNet on Fashion-MNIST: BP, DFA and the learned-feedback DKP and FDFA")
def run(options: RunOptions) -> TaskReport:
    config = config_for(options)
    _, markdown, files = run_and_write(
        config, options.out_dir, progress=options.progress, quick=options.quick,
        workers=options.workers,
    )  # fmt: skip
    return TaskReport(TASK, markdown, files)


# --- tuning --------------------------------------------------------------------------------

SEARCH_EPOCHS = 2
"""Epochs of a tuning trial (``convnets``' proxy of its 10-epoch run, for every rule alike)."""


def validation_objective(
    full: Callable[[], LearnedConfig], quick: Callable[[], LearnedConfig]
) -> Callable[[str, dict[str, float], tuning.Report, bool], float]:
    """The validation error % of one seed-0 run of a rule at ``values["lr"]``, trained on the
    training images less :data:`~feedback_alignment.experiments.convnets.VALIDATION_SIZE` held
    out (the same split as ``convnets``' search) and scored on those: never on the test images."""
    held_out: dict[bool, tuple[torch.Tensor, ...]] = {}

    def objective(name: str, values: dict[str, float], report: tuning.Report, is_quick: bool):
        config = quick() if is_quick else full()
        if is_quick not in held_out:
            x, y, _, _ = load_fashion_mnist(config)
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
            held = min(VALIDATION_SIZE, len(x) // 5)
            train, val = order[:-held], order[-held:]
            held_out[is_quick] = (x[train], y[train], x[val], y[val])
        record = train_one(name, 0, config, held_out[is_quick], False, values["lr"])
        report(1, record.test_error)
        return record.test_error

    return objective


def rates_text(config: LearnedConfig) -> str:
    """How the weights' rates of a table were chosen, for its caption: searched for every rule,
    for some (the others hand-set), or hand-set."""
    stored = tuning.tuned_values(config.task, config.tuned_dir) if config.tuned else {}
    searched = [rule for rule in config.rules if rule in stored]
    if not searched:
        return f"the weights' rate hand-set ({config.lr})"
    if len(searched) == len(config.rules):
        return "the weights' rate per rule in the table (searched on held-out training images)"
    return (
        "the weights' rate per rule in the table (searched on held-out training images for "
        f"{', '.join(searched)}; hand-set {config.lr} otherwise)"
    )


def register_search(
    task: str,
    config: Callable[..., LearnedConfig],
    trials: int,
    held_out: str,
    rates: tuple[float, float] = (1e-4, 1e-2),
) -> None:
    """Declares ``task``'s search of each rule's weight rate (the same procedure for the LeNet and
    the ResNet tasks, each with its range): a trial trains seed 0 for :data:`SEARCH_EPOCHS` epochs of ``config()``'s
    schedule (``--quick``: the task's ``quick`` preset) and is scored on ``held_out`` images (``held_out`` names them in the schedule's
    text); the rate is sampled log-uniformly in ``rates``; ``B``'s Adam rate is not searched."""
    full = config()
    low, high = rates
    tuning.register_tunable(
        tuning.Tunable(
            task=task,
            arms=RULES,
            space=lambda name: {"lr": tuning.Param(low, high)},
            defaults=lambda name: {"lr": full.lr},
            objective=validation_objective(
                lambda: config(epochs=SEARCH_EPOCHS, measurements=1, seeds=(0,)),
                lambda: replace(presets.preset(task, "quick", config()), measurements=1),
            ),
            direction="minimize",
            metric="validation error %",
            trials=trials,
            schedule=f"Each trial trains seed 0 for {SEARCH_EPOCHS} epochs (the full run trains "
            f"{full.epochs}; same batch, optimisers and cosine decay) on {held_out}, scored on "
            "those; only the weights' rate is searched, for every rule alike (B's Adam rate is "
            "the references' 1e-4).",
        )
    )


register_search(
    TASK,
    LearnedConfig,
    trials=5,
    held_out=f"the training images less {VALIDATION_SIZE} held out",
)
