"""Part 1, the MLP claims (Nøkland 2016): BP, FA, DFA and Shallow on tanh MLPs 1x800 and 7x240."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feedback_alignment.experiments.papers import NOKLAND_MNIST_ERROR
from feedback_alignment.experiments.principled.common import (
    Recipe,
    Run,
    Setting,
    block_mlp,
    group,
    load_split,
    train_run,
)
from feedback_alignment.experiments.results import Column, Table, gap_closure, mean_std

TITLE = "MLP claims (Nøkland 2016)"
RULES: tuple[str, ...] = ("BP", "FA", "DFA", "Shallow")


def run(setting: Setting, seeds: Sequence[int], progress: bool) -> dict[str, Any]:
    """BP, FA, DFA and Shallow on Nøkland's tanh MLPs, on each of the setting's data sets."""
    runs = []
    for dataset, epochs in zip(setting.mlp_datasets, setting.mlp_epochs, strict=True):
        split = load_split(dataset, setting.train_limit, setting.test_limit)
        recipe = Recipe(epochs, setting.lr, batch_size=setting.batch_size)
        for arch, hidden in setting.mlp_archs().items():
            sizes = [split.features, *hidden, 10]
            for rule in RULES:
                for seed in seeds:
                    run, _ = train_run(
                        "mlp",
                        f"{dataset} {arch} {rule}",
                        rule,
                        functools.partial(block_mlp, sizes),
                        split,
                        recipe,
                        seed=seed,
                        probe=setting.probe,
                        progress=progress,
                        settings={"arch": arch},
                    )
                    runs.append(run)
    return {"runs": runs, "rules": RULES}


def table(result: dict[str, Any], setting: Setting) -> Table:
    runs: list[Run] = result["runs"]
    rules = result["rules"]
    out = Table(
        "principled_mlp",
        [Column("data set", align="left"), Column("MLP (tanh)", align="left"),
         Column("rule", align="left"), Column("test error % (ours)", 2),
         Column("Nøkland MNIST error % [unverified]", 2), Column("gap closure G", 2),
         Column("mean hidden update angle (deg)", 1)],
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
                out.add(
                    dataset, arch, rule, mean_std(r.error for r in rule_runs).cell(single=True),
                    paper, None if rule in ("BP", "Shallow") else g,
                    mean_std(r.mean_angle() for r in rule_runs).cell(single=True),
                )  # fmt: skip
    epochs = ", ".join(
        f"{d} {e} epochs" for d, e in zip(setting.mlp_datasets, setting.mlp_epochs, strict=True)
    )
    out.caption = (
        f"Adam lr {setting.lr}, batch {setting.batch_size}, {epochs}; default init for every rule. "
        "Nøkland's figures are full MNIST (60k training images, long training), ours MNIST-5k "
        "(4,000 train / 1,000 test) and Fashion-MNIST: context, not a target. G = (acc_rule - "
        "acc_Shallow) / (acc_BP - acc_Shallow). Angle: between the rule's and BP's update of each "
        "hidden layer on a probe batch after training."
    )
    return out


def plots(result: dict[str, Any], setting: Setting, out_dir: Path) -> list[Path]:
    return []
