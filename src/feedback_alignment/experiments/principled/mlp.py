"""Part 1, the MLP claims (Nøkland 2016): BP, FA, DFA and Shallow on tanh MLPs 1x800 and 7x240.

One of the two rule comparisons of the principled family (with the conv part), so its rules each
get their own Adam learning rate, searched on validation data (:data:`TUNABLE`: one arm per data
set, MLP and rule); the alignment, bottleneck and ablation parts study DFA alone under the shared
recipe.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from feedback_alignment.experiments import tuning
from feedback_alignment.experiments.papers import NOKLAND_MNIST_ERROR
from feedback_alignment.experiments.principled.common import (
    FULL,
    QUICK,
    VALIDATION_SIZE,
    Recipe,
    Run,
    Setting,
    Split,
    block_mlp,
    group,
    learning_rate_space,
    load_split,
    train_run,
    validation_split,
)
from feedback_alignment.experiments.results import Column, Table, gap_closure, mean_std
from feedback_alignment.experiments.run import run_jobs

TITLE = "MLP claims (Nøkland 2016)"
RULES: tuple[str, ...] = ("BP", "FA", "DFA", "Shallow")
TUNED_TASK = "principled-mlp"
"""The registry name under which this part's learning rates are searched and stored."""


def arm(dataset: str, arch: str, rule: str) -> str:
    """The tuning arm of one comparison cell: ``"mnist-5k/7x240/DFA"``."""
    return f"{dataset}/{arch}/{rule}"


def run_experiment(
    setting: Setting,
    seeds: Sequence[int],
    progress: bool,
    rates: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """BP, FA, DFA and Shallow on Nøkland's tanh MLPs, on each of the setting's data sets, each
    arm at its rate in ``rates`` (:func:`arm` -> lr) where given, else at ``setting.lr``."""
    runs = []
    for dataset, epochs in zip(setting.mlp_datasets, setting.mlp_epochs, strict=True):
        split = load_split(dataset, setting.train_limit, setting.test_limit)
        items = []
        for arch, hidden in setting.mlp_archs().items():
            for rule in RULES:
                lr = (rates or {}).get(arm(dataset, arch, rule), setting.lr)
                recipe = Recipe(epochs, lr, batch_size=setting.batch_size)
                items += [(setting, arch, hidden, rule, recipe, seed, progress) for seed in seeds]
        runs += run_jobs(
            _job, items, f"principled-mlp runs ({dataset})", shared=split, progress=False,
            label=lambda item: f"{item[1]} {item[3]} seed {item[5]}",
        )  # fmt: skip
    return {"runs": runs, "rules": RULES}


def _job(split: Split, item: tuple) -> Run:
    """One (arch, rule, seed) run, as :func:`run_jobs` calls it (saved as it ends inside
    ``reproduce``, so a killed part resumes; progress with an ETA in the log)."""
    setting, arch, hidden, rule, recipe, seed, progress = item
    return _train(setting, split, arch, hidden, rule, recipe, seed, progress)


def _train(
    setting: Setting,
    split: Split,
    arch: str,
    hidden: tuple[int, ...],
    rule: str,
    recipe: Recipe,
    seed: int,
    progress: bool,
) -> Run:
    run, _ = train_run(
        "mlp",
        f"{split.name} {arch} {rule}",
        rule,
        functools.partial(block_mlp, [split.features, *hidden, 10]),
        split,
        recipe,
        seed=seed,
        probe=setting.probe,
        progress=progress,
        settings={"arch": arch},
    )
    return run


def summary(result: dict[str, Any], setting: Setting) -> Table:
    runs: list[Run] = result["runs"]
    rules = result["rules"]
    out = Table(
        "principled_mlp",
        [Column("data set", align="left"), Column("MLP (tanh)", align="left"),
         Column("rule", align="left"), Column("Adam lr", align="left"),
         Column("test error % (ours)", 2), Column("Nøkland MNIST error % [unverified]", 2),
         Column("gap closure G", 2), Column("mean hidden update angle (deg)", 1)],
        quick=setting.quick,
    )  # fmt: skip
    for dataset in setting.mlp_datasets:
        for arch in setting.mlp_archs():
            chosen = [r for r in runs if r.dataset == dataset and r.settings.get("arch") == arch]
            acc = {
                rule: statistics.mean(r.test_accuracy for r in group(chosen, rule=rule))
                for rule in rules
            }
            for rule in rules:
                rule_runs = group(chosen, rule=rule)
                # Nøkland's figures are MNIST: shown beside MNIST rows only
                paper = NOKLAND_MNIST_ERROR.get((arch, rule)) if "mnist" in dataset[:5] else None
                g = gap_closure(acc[rule], acc["BP"], acc["Shallow"])
                lrs = sorted({r.settings["lr"] for r in rule_runs})
                out.add(
                    dataset, arch, rule, " / ".join(f"{lr:.2g}" for lr in lrs),
                    mean_std(r.error for r in rule_runs).cell(single=True), paper,
                    None if rule in ("BP", "Shallow") else g,
                    mean_std(r.mean_angle() for r in rule_runs).cell(single=True),
                )  # fmt: skip
    epochs = ", ".join(
        f"{d} {e} epochs" for d, e in zip(setting.mlp_datasets, setting.mlp_epochs, strict=True)
    )
    seeds = sorted({r.seed for r in runs})
    out.caption = (
        f"Adam at each rule's own rate (searched on validation data, see the tuned block; "
        f"{setting.lr:g} where none is stored), batch {setting.batch_size}, {epochs}; default "
        f"init for every rule; mean ± std over {len(seeds)} seed(s). Nøkland's figures are full "
        "MNIST (60k training images, long training), ours MNIST-5k (4,000 train / 1,000 test) "
        "and Fashion-MNIST: context, not a target. G = (acc_rule - acc_Shallow) / (acc_BP - "
        "acc_Shallow). Angle: between the rule's and BP's update of each hidden layer on a probe "
        "batch after training."
    )
    return out


def plots(result: dict[str, Any], setting: Setting, out_dir: Path) -> list[Path]:
    return []


# --- the search -----------------------------------------------------------------------------------

TRIAL_SEEDS: tuple[int, ...] = (1000, 1001, 1002)
"""Seeds a trial averages: MNIST-5k's 800 held-out images give one run a spread of about half a
point, as large as the differences between good rates. Not the seeds of the reported runs
(0, 1, 2 by default), so that no rate is chosen on the initialisations the table reports."""


def _objective(name: str, values: dict[str, float], report: tuning.Report, quick: bool) -> float:
    """Mean validation error % over :data:`TRIAL_SEEDS` of the arm's full-length run (the full
    setting's epochs for its data set; quick: the quick setting, 1 epoch where it has none)."""
    dataset, arch, rule = name.split("/")
    setting = QUICK if quick else FULL
    epochs = dict(zip(setting.mlp_datasets, setting.mlp_epochs, strict=True)).get(dataset, 1)
    split = validation_split(load_split(dataset, setting.train_limit, setting.test_limit))
    hidden = FULL.mlp_archs()[arch]
    recipe = Recipe(epochs, values["lr"], batch_size=setting.batch_size)
    errors = []
    for i, seed in enumerate(TRIAL_SEEDS[:1] if quick else TRIAL_SEEDS):
        errors.append(_train(setting, split, arch, hidden, rule, recipe, seed, False).error)
        if i == 0:
            report(1, errors[0])  # the pruner sees the first seed only, as in the graphs' search
    return statistics.fmean(errors)


TUNABLE = tuning.register_tunable(
    tuning.Tunable(
        task=TUNED_TASK,
        arms=tuple(
            arm(d, a, r) for d in FULL.mlp_datasets for a in FULL.mlp_archs() for r in RULES
        ),
        space=lambda name: {"lr": tuning.Param(*learning_rate_space(name.split("/")[-1]))},
        defaults=lambda name: {"lr": FULL.lr},
        objective=_objective,
        direction="minimize",
        metric="validation error %",
        trials=10,
        schedule=f"Each trial trains the full run's schedule (the data set's epochs, batch "
        f"{FULL.batch_size}) for seeds {', '.join(map(str, TRIAL_SEEDS))} on the training images "
        f"less those held out ({VALIDATION_SIZE:,} of Fashion-MNIST, 800 of MNIST-5k) and scores "
        "their mean error on those.",
    )
)
