"""Part 5, convolutional layers under DFA: can DFA train conv layers (Launay et al. 2019, 2020)?

A small conv net under BP, DFA, Shallow and DFA with its convolutions frozen at initialisation:
DFA "trains" the convolutions only if it beats the frozen run.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from feedback_alignment.experiments.papers import BIOTORCH_FMNIST_LENET_ERROR
from feedback_alignment.experiments.principled.common import (
    Built,
    Recipe,
    Run,
    Setting,
    load_split,
    train_run,
)
from feedback_alignment.experiments.results import Column, Table, mean_std

TITLE = "Convolutional layers under DFA"

RUNS: tuple[tuple[str, str, bool], ...] = (
    ("BP", "BP", False),
    ("DFA", "DFA", False),
    ("DFA, convolutions frozen", "DFA", True),
    ("Shallow", "Shallow", False),
)
"""(label, rule, freeze the conv layers at their initialisation)."""


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


def run(setting: Setting, seeds: Sequence[int], progress: bool) -> dict[str, Any]:
    """BP, DFA, DFA on the dense layers only (frozen convolutions) and Shallow."""
    split = load_split(setting.dataset, setting.train_limit, setting.test_limit)
    recipe = Recipe(setting.conv_epochs, setting.lr, batch_size=setting.batch_size)
    image = tuple(split.x_train.shape[1:])
    runs = []
    for label, rule, freeze in RUNS:
        for seed in seeds:
            trained, _ = train_run(
                "conv",
                label,
                rule,
                functools.partial(_build, image, setting.conv, freeze),
                split,
                recipe,
                seed=seed,
                probe=setting.probe,
                progress=progress,
                settings={"frozen_convs": freeze},
            )
            runs.append(trained)
    return {"runs": runs}


def table(result: dict[str, Any], setting: Setting) -> Table:
    runs: list[Run] = result["runs"]
    out = Table(
        "principled_conv",
        [Column("run", align="left"), Column("test error % (ours)", 2),
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
            mean_std(r.error for r in chosen).cell(single=True),
            BIOTORCH_FMNIST_LENET_ERROR.get(label),
            *angles,
            *cosines,
        )
    c = setting.conv
    out.caption = (
        f"{setting.dataset}, conv3x3({c[0]})-tanh-pool-conv3x3({c[1]})-tanh-pool-fc{c[2]}-tanh-"
        f"fc10, {setting.conv_epochs} epochs, Adam lr {setting.lr}. DFA feeds the error to both "
        "conv feature maps and the fc layer; 'convolutions frozen' keeps the conv layers at their "
        "random initialisation (DFA trains the fc layer only). BioTorch's LeNet figures are a "
        "different, longer-trained net: context only."
    )
    return out


def plots(result: dict[str, Any], setting: Setting, out_dir: Path) -> list[Path]:
    return []
