"""Part 5, convolutional layers under DFA: can DFA train conv layers (Launay et al. 2019, 2020)?

A small conv net under BP, DFA, Shallow and DFA with its convolutions frozen at initialisation:
DFA "trains" the convolutions only if it beats the frozen run. Each of the four runs has its own
Adam learning rate, searched on held-out training images (:data:`TUNABLE`), so that "freezing
costs nothing" cannot come from a rate that suits one of the two DFA runs only.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from feedback_alignment.experiments import tuning
from feedback_alignment.experiments.papers import BIOTORCH_FMNIST_LENET_ERROR
from feedback_alignment.experiments.principled.common import (
    FULL,
    QUICK,
    VALIDATION_SIZE,
    Built,
    Recipe,
    Run,
    Setting,
    Split,
    learning_rate_space,
    load_split,
    train_run,
    validation_split,
)
from feedback_alignment.experiments.results import Column, Table, mean_std
from feedback_alignment.experiments.run import run_jobs

TITLE = "Convolutional layers under DFA"

RUNS: tuple[tuple[str, str, bool], ...] = (
    ("BP", "BP", False),
    ("DFA", "DFA", False),
    ("DFA, convolutions frozen", "DFA", True),
    ("Shallow", "Shallow", False),
)
"""(label, rule, freeze the conv layers at their initialisation)."""
TUNED_TASK = "principled-conv"
ARMS: dict[str, str] = {
    "BP": "BP",
    "DFA": "DFA",
    "DFA, convolutions frozen": "DFA-frozen",
    "Shallow": "Shallow",
}
"""Each run's tuning arm (a name without commas, as ``--arms`` lists them)."""


def small_convnet(
    image: Sequence[int], sizes: tuple[int, int, int] = (16, 32, 256)
) -> nn.Sequential:
    """``conv3x3-tanh-pool, conv3x3-tanh-pool, fc-tanh, fc``: the smallest net with two conv layers.

    Feedback points: after each tanh (automatic placement: a plain feed-forward stack), so DFA
    feeds both conv feature maps (``C*H*W`` features per sample) and the hidden dense layer.
    """
    c, h, w = image
    first, second, hidden = sizes
    flat = second * (h // 4) * (w // 4)
    return nn.Sequential(
        nn.Conv2d(c, first, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Conv2d(first, second, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, hidden),
        nn.Tanh(),
        nn.Linear(hidden, 10),
    )


def _build(image: Sequence[int], sizes: tuple[int, int, int], freeze: bool) -> Built:
    model = small_convnet(image, sizes)
    if freeze:
        for module in model:
            if isinstance(module, nn.Conv2d):
                module.requires_grad_(False)
    return model, None


def run_experiment(
    setting: Setting,
    seeds: Sequence[int],
    progress: bool,
    rates: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """BP, DFA, DFA on the dense layers only (frozen convolutions) and Shallow, each at its rate
    in ``rates`` (arm -> lr, :data:`ARMS`) where given, else at ``setting.lr``."""
    split = load_split(setting.dataset, setting.train_limit, setting.test_limit)
    items = []
    for label, rule, freeze in RUNS:
        recipe = Recipe(
            setting.conv_epochs, (rates or {}).get(ARMS[label], setting.lr),
            batch_size=setting.batch_size,
        )  # fmt: skip
        items += [(setting, label, rule, freeze, recipe, seed, progress) for seed in seeds]
    runs = run_jobs(
        _job, items, "principled-conv runs", shared=split, progress=False,
        label=lambda item: f"{item[1]} seed {item[5]}",
    )  # fmt: skip
    return {"runs": runs}


def _job(split: Split, item: tuple) -> Run:
    """One (arm, seed) run, as :func:`run_jobs` calls it (saved as it ends inside ``reproduce``)."""
    setting, label, rule, freeze, recipe, seed, progress = item
    return _train(setting, split, label, rule, freeze, recipe, seed, progress)


def _train(
    setting: Setting,
    split: Split,
    label: str,
    rule: str,
    freeze: bool,
    recipe: Recipe,
    seed: int,
    progress: bool,
) -> Run:
    trained, _ = train_run(
        "conv",
        label,
        rule,
        functools.partial(_build, tuple(split.x_train.shape[1:]), setting.conv, freeze),
        split,
        recipe,
        seed=seed,
        probe=setting.probe,
        progress=progress,
        settings={"frozen_convs": freeze},
    )
    return trained


def summary(result: dict[str, Any], setting: Setting) -> Table:
    runs: list[Run] = result["runs"]
    out = Table(
        "principled_conv",
        [Column("run", align="left"), Column("Adam lr", align="left"),
         Column("test error % (ours)", 2),
         Column("BioTorch FMNIST LeNet error %", 2), Column("angle conv1 (deg)", 1),
         Column("angle conv2 (deg)", 1), Column("angle fc (deg)", 1),
         Column("cosine conv1", 3), Column("cosine conv2", 3)],
        quick=setting.quick,
    )  # fmt: skip
    for label, _rule, _ in RUNS:
        chosen = [r for r in runs if r.label == label]
        angles = [
            mean_std(r.hidden_angles.get(n, math.nan) for r in chosen).cell(single=True)
            for n in ("0", "3", "7")
        ]
        cosines = [
            mean_std(r.signal_cosine.get(p, (math.nan, 0))[0] for r in chosen).cell(single=True)
            for p in ("1", "4")
        ]
        out.add(
            label,
            " / ".join(f"{lr:.2g}" for lr in sorted({r.settings["lr"] for r in chosen})),
            mean_std(r.error for r in chosen).cell(single=True),
            BIOTORCH_FMNIST_LENET_ERROR.get(label),
            *angles,
            *cosines,
        )
    c = setting.conv
    out.caption = (
        f"{setting.dataset}, conv3x3({c[0]})-tanh-pool-conv3x3({c[1]})-tanh-pool-fc{c[2]}-tanh-"
        f"fc10, {setting.conv_epochs} epochs, Adam at each run's own rate (searched on validation "
        f"data; {setting.lr:g} where none is stored). DFA feeds the error to both "
        "conv feature maps and the fc layer; 'convolutions frozen' keeps the conv layers at their "
        "random initialisation (DFA trains the fc layer only). BioTorch's LeNet figures are a "
        "different, longer-trained net: context only."
    )
    return out


def plots(result: dict[str, Any], setting: Setting, out_dir: Path) -> list[Path]:
    return []


# --- the search -----------------------------------------------------------------------------------

TRIAL_SEEDS: tuple[int, ...] = (1000, 1001, 1002)
"""Seeds a trial averages (as the MLP part's: a trial's spread on 10,000 held-out images is about
0.3 points, as large as the difference the claim reads); not seeds of the reported runs."""


def _objective(name: str, values: dict[str, float], report: tuning.Report, quick: bool) -> float:
    """Mean validation error % over :data:`TRIAL_SEEDS` (quick: the first) of the arm's
    full-length run (the setting's conv epochs), trained on the training images less those held
    out and scored on those; each seed's error is reported to the pruner as it comes."""
    label = next(label for label, arm in ARMS.items() if arm == name)
    _, rule, freeze = next(r for r in RUNS if r[0] == label)
    setting = QUICK if quick else FULL
    split = validation_split(load_split(setting.dataset, setting.train_limit, setting.test_limit))
    recipe = Recipe(setting.conv_epochs, values["lr"], batch_size=setting.batch_size)
    errors = []
    for seed in TRIAL_SEEDS[:1] if quick else TRIAL_SEEDS:
        errors.append(_train(setting, split, label, rule, freeze, recipe, seed, False).error)
        report(len(errors), errors[-1])
    return statistics.fmean(errors)


TUNABLE = tuning.register_tunable(
    tuning.Tunable(
        task=TUNED_TASK,
        arms=tuple(ARMS.values()),
        space=lambda name: {"lr": tuning.Param(*learning_rate_space(name))},
        defaults=lambda name: {"lr": FULL.lr},
        objective=_objective,
        direction="minimize",
        metric="validation error %",
        trials=8,
        schedule=f"Each trial trains the full run's schedule ({FULL.conv_epochs} epoch, batch "
        f"{FULL.batch_size}) for seeds {', '.join(map(str, TRIAL_SEEDS))} on the training images "
        f"less {VALIDATION_SIZE:,} held out and scores their mean error on those.",
    )
)
