"""The NeRF tasks' settings and the record each run leaves: the shapes that the tasks
(:mod:`.nerf`) write and their report (:mod:`.nerf_report`) reads, kept apart from both so that
neither imports the other."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from feedback_alignment.experiments.papers import LAUNAY_2020_PSNR
from feedback_alignment.models.nerf import NeRFConfig

RULES: tuple[str, ...] = tuple(LAUNAY_2020_PSNR)
"""BP, DFA and Shallow (the paper's rows)."""


@dataclass
class NeRFTaskConfig:
    """Settings of the task (full mode; :data:`.nerf.QUICK` is the minutes-scale variant).

    Attributes:
        scene: a ``scenes`` data set of the registry.
        downscale: average-pool the views by this factor (the focal length follows).
        model: the field and the ray sampling.
        rays: rays per step, drawn at random from every training pixel.
        steps: optimizer steps per rule.
        lr: Adam learning rate per rule; DFA's lower than BP's, as in the paper (1e-4 vs 5e-4).
        eps: Adam's epsilon per rule (in DFA's search space: :func:`.nerf.adam_eps` says why).
        final_lr_factor: exponential decay of the rate to this fraction at the last step (NeRF's).
        eval_every: steps between PSNRs of the first test view (the learning curve).
        test_views: held-out views evaluated at the end (``None``: all).
        threads: intra-op threads (``None``: leave torch's setting).
    """

    scene: str = "duck"
    downscale: int = 1
    model: NeRFConfig = field(
        default_factory=lambda: NeRFConfig(
            depth=6,
            width=96,
            skips=(3,),
            view_width=48,
            pos_freqs=8,
            dir_freqs=4,
            n_samples=16,
            n_importance=32,
        )
    )
    rays: int = 512
    steps: int = 2000
    lr: dict[str, float] = field(default_factory=lambda: {"BP": 2e-3, "DFA": 5e-4, "Shallow": 2e-3})
    eps: dict[str, float] = field(default_factory=lambda: dict.fromkeys(RULES, 1e-8))
    final_lr_factor: float = 0.1
    eval_every: int = 250
    test_views: int | None = None
    rules: tuple[str, ...] = RULES
    threads: int | None = None
    tuned: bool = True  # use the stored tuned learning rates in place of ``lr``
    tuned_dir: Path | None = None  # where they are stored (``None``: the committed ones)
    task: str = "nerf"  # the task these settings belong to: its stored rates and table names

    def __post_init__(self) -> None:
        unknown = [r for r in self.rules if r not in RULES]
        if unknown:
            raise ValueError(f"unknown rules {unknown}; choose from {list(RULES)}")
        missing = [r for r in self.rules if r not in self.lr]
        if missing:
            raise ValueError(f"no learning rate for {missing}; lr has {sorted(self.lr)}")
        if self.downscale < 1 or self.rays < 1 or self.steps < 1 or self.eval_every < 1:
            raise ValueError("downscale, rays, steps and eval_every must be positive")


@dataclass
class NeRFResult:
    rule: str
    seed: int
    psnr: float
    ssim: float
    psnr_per_view: list[float]
    seconds: float
    curve: list[tuple[int, float]]  # (step, PSNR of the first test view)
    train_loss: list[float]
    lr: float = math.nan
    eps: float = 1e-8  # runs recorded before eps was stored used Adam's default
    # field -> fraction of positive raw densities at initialisation (:func:`.nerf.density_at_init`)
    density_alive_at_init: dict[str, float] = field(default_factory=dict)
