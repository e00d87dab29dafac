"""What the five principled-DFA experiments share: settings, data, the MLP, one training run.

Every run uses the same recipe unless an ablation changes it: Adam (lr 1e-3, except in the two
parts that compare rules, MLP and conv, where each rule runs at its own searched rate), batch
128, inputs standardised by the training set's mean and standard deviation, PyTorch's default
initialisation, the same seed for the model of every rule. Alignment is measured on a fixed
probe batch of training images with :func:`feedback_alignment.alignment` (no side effects on the
model).
"""

from __future__ import annotations

import functools
import logging
import math
import statistics
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.alignment import AlignmentMonitor, AlignmentReport, alignment
from feedback_alignment.experiments import presets
from feedback_alignment.experiments.results import finite_mean
from feedback_alignment.experiments.run import apply_rule, fit, shuffled
from feedback_alignment.models import MLP
from feedback_alignment.rules import Rule

log = logging.getLogger(__name__)


# --- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """How much data and training each experiment gets (the only thing quick mode changes).

    Attributes:
        name: ``"full"``, ``"quick"`` or ``"tiny"`` (the test's setting).
        mlp_datasets: data sets of the MLP comparison; ``mlp_epochs`` gives each one's epochs.
        dataset: data set of the other four experiments.
        train_limit, test_limit: keep only this many training/test images (``None``: all).
        alignment_epochs, alignment_every: training and monitor period (steps) of the alignment run.
        bottleneck_widths, bottleneck_epochs: the swept middle widths ``b`` and their training
            (Adam, mean loss).
        bottleneck_long_epochs, bottleneck_sgd_lr: the bottleneck's arm with the paper's optimiser
            (plain SGD at ``bottleneck_sgd_lr`` on the batch's *summed* loss, Launay 2019's code)
            and its longer schedule.
        practice_epochs, conv_epochs: training of each ablation and of each conv run.
        lr, batch_size, probe: Adam's step, the batch, and the probe batch of the alignment.
        wide: the papers' 800 (1xwide MLP, bottleneck outer layers, 2xwide ablation MLP).
        deep: the papers' 7x240 MLP as (layers, width).
        conv: the conv net's (channels 1, channels 2, dense width).
    """

    name: str
    mlp_datasets: tuple[str, ...]
    mlp_epochs: tuple[int, ...]
    dataset: str
    train_limit: int | None
    test_limit: int | None
    alignment_epochs: int
    alignment_every: int
    bottleneck_widths: tuple[int, ...]
    bottleneck_epochs: int
    practice_epochs: int
    conv_epochs: int
    bottleneck_long_epochs: int = 1
    bottleneck_sgd_lr: float = 5e-4
    lr: float = 1e-3
    batch_size: int = 128
    probe: int = 512
    wide: int = 800
    deep: tuple[int, int] = (7, 240)
    conv: tuple[int, int, int] = (16, 32, 256)

    def mlp_archs(self) -> dict[str, tuple[int, ...]]:
        """Nøkland's MLPs by name (``"1x800"``, ``"7x240"`` at the papers' widths)."""
        layers, width = self.deep
        return {f"1x{self.wide}": (self.wide,), f"{layers}x{width}": (width,) * layers}

    @property
    def quick(self) -> bool:
        """Every setting but ``full`` is a smoke-scale one, and its outputs say so."""
        return self.name != "full"

    def __post_init__(self) -> None:
        if len(self.mlp_datasets) != len(self.mlp_epochs):
            raise ValueError(
                f"setting {self.name!r}: {len(self.mlp_datasets)} MLP data sets but "
                f"{len(self.mlp_epochs)} epoch counts"
            )
        if not self.bottleneck_widths or min(self.bottleneck_widths) < 1:
            raise ValueError(f"bottleneck widths must be positive, got {self.bottleneck_widths}")


FULL = presets.build("principled", "full", Setting)
QUICK = presets.build("principled", "quick", Setting)
TINY = presets.build("principled", "tiny", Setting)
"""The reported run, ``--quick`` (minutes) and the test's seconds-long setting (every code path,
no meaningful numbers, digits 8x8): ``presets/principled.json``."""


# --- data ----------------------------------------------------------------------------------------


@dataclass
class Split:
    """Standardised images ``(N, 1, H, W)`` and labels of one data set."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def features(self) -> int:
        return self.x_train[0].numel()

    def probe(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed batch on which alignment is measured (the first ``size`` training images)."""
        return self.x_train[:size], self.y_train[:size]


@functools.lru_cache(maxsize=4)
def load_split(name: str, train_limit: int | None, test_limit: int | None) -> Split:
    """Loads ``name`` from the data registry, subsamples it reproducibly, standardises it.

    One mean and one standard deviation over all training pixels (not per pixel), so that the
    same tensors serve the MLPs and the conv net.
    """
    from feedback_alignment import data

    images = data.load(name)
    x_train, y_train = _subsample(images.x_train, images.y_train, train_limit, seed=0)
    x_test, y_test = _subsample(images.x_test, images.y_test, test_limit, seed=1)
    mean, std = x_train.mean(), x_train.std()
    return Split(name, (x_train - mean) / std, y_train, (x_test - mean) / std, y_test)


def _subsample(
    x: torch.Tensor, y: torch.Tensor, limit: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if limit is None or limit >= len(x):
        return x, y
    index = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:limit]
    return x[index], y[index]


VALIDATION_SIZE = 10_000
"""Training images held out for scoring trials (at most a fifth of the training set: 800 of
MNIST-5k's 4,000, 10,000 of Fashion-MNIST's 60,000)."""


def validation_split(split: Split, held: int = VALIDATION_SIZE) -> Split:
    """``split`` with its test images replaced by training images held out (and dropped from its
    training images): what a trial trains and scores on, so no choice sees the test set. (The
    standardisation's mean and std stay the whole training set's, held-out images included.)"""
    order = torch.randperm(len(split.x_train), generator=torch.Generator().manual_seed(1))
    held = min(held, len(order) // 5)
    train, val = order[:-held], order[-held:]
    return Split(
        f"{split.name} (validation)",
        split.x_train[train], split.y_train[train], split.x_train[val], split.y_train[val],
    )  # fmt: skip


def learning_rate_space(rule: str) -> tuple[float, float]:
    """The searched range of a rule's Adam rate: ``[3e-5, 3e-2]``, and ``[1e-4, 3e-1]`` for
    Shallow.

    Why Shallow's is higher: it trains only the output layer, on fixed random features (a convex
    problem, no signal through deep layers to keep small), and its best rates in a first search
    over ``[3e-5, 3e-2]`` sat at the range's top on both 7x240 MLPs (2.7e-2 and 3.0e-2, still
    improving), so that range would have understated the control that every gap closure divides by.
    The wider range does not settle it everywhere: on Fashion-MNIST 7x240 Shallow's best (0.297)
    is again at the top, gaining about a point per doubling (docs/REPRODUCTION.md says so).
    """
    return (1e-4, 3e-1) if rule == "Shallow" else (3e-5, 3e-2)


# --- the MLP -------------------------------------------------------------------------------------

Built = tuple[nn.Module, list[str] | None]
"""A model and its feedback points (``None``: automatic placement)."""


def block_mlp(
    sizes: Sequence[int],
    activation: str = "tanh",
    *,
    batchnorm: bool = False,
    dropout: float = 0.0,
    zero_init: bool = False,
) -> Built:
    """``Flatten, [Linear, (BatchNorm), act, (Dropout)] x hidden, Linear``, with its feedback points.

    The point of each hidden block is its last module, so that the DFA signal passes through the
    dropout mask as BP's does and BatchNorm is trained by local backprop inside the block (as in
    TinyDFA). Without BatchNorm and dropout this is :class:`~feedback_alignment.models.MLP` (a
    plain feed-forward stack: automatic placement after each activation is the right one).
    """
    if not batchnorm and dropout == 0.0:
        return MLP(sizes, activation, flatten=True, zero_init=zero_init), None
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    template = MLP(sizes, activation, flatten=True, zero_init=zero_init)
    linears = [m for m in template if isinstance(m, nn.Linear)]
    activations = [m for m in template if not isinstance(m, (nn.Linear, nn.Flatten))]
    layers: list[nn.Module] = [nn.Flatten()]
    points: list[str] = []
    for linear, act in zip(linears[:-1], activations, strict=True):
        layers.append(linear)
        if batchnorm:
            layers.append(nn.BatchNorm1d(linear.out_features))
        layers.append(act)
        if dropout:
            layers.append(nn.Dropout(dropout))
        points.append(str(len(layers) - 1))
    layers.append(linears[-1])
    return nn.Sequential(*layers), points


# --- one training run ----------------------------------------------------------------------------


@dataclass
class Recipe:
    """How one model is trained: the same for every rule unless an ablation changes it."""

    epochs: int
    lr: float = 1e-3
    optimizer: str = "adam"  # or "sgd" (momentum ``momentum``)
    batch_size: int = 128
    momentum: float = 0.9  # SGD's only
    reduction: str = "mean"  # of the batch's cross-entropy: "mean" or "sum" (Launay 2019's code)

    def __post_init__(self) -> None:
        if self.reduction not in ("mean", "sum"):
            raise ValueError(f"unknown loss reduction {self.reduction!r}; choose 'mean' or 'sum'")

    def build(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum)
        raise ValueError(f"unknown optimizer {self.optimizer!r}; choose 'adam' or 'sgd'")


@dataclass
class Run:
    """One trained model: its accuracy, its final alignment with BP, and how it got there.

    ``hidden_angles``: update angle (degrees) per hidden layer on the probe batch after training,
    ``nan`` where the rule gives no update; ``signal_cosine``: per feedback point, (mean, std) over
    samples of the cosine between the rule's signal and BP's.
    """

    part: str
    label: str
    rule: str
    dataset: str
    seed: int
    test_accuracy: float
    train_loss: float
    hidden_angles: dict[str, float]
    signal_cosine: dict[str, tuple[float, float]]
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    diverged: bool = False

    @property
    def error(self) -> float:
        return 100.0 * (1.0 - self.test_accuracy)

    def mean_angle(self) -> float:
        return finite_mean(self.hidden_angles.values())

    def mean_cosine(self) -> float:
        return finite_mean(mean for mean, _ in self.signal_cosine.values())


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 2000) -> float:
    """Test accuracy in eval mode (BatchNorm statistics, no dropout), in chunks."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            correct += int((model(x[i : i + chunk]).argmax(dim=1) == y[i : i + chunk]).sum())
    model.train(was_training)
    return correct / max(1, len(x))


def train_run(
    part: str,
    label: str,
    rule_name: str,
    build: Callable[[], Built],
    split: Split,
    recipe: Recipe,
    *,
    seed: int,
    probe: int,
    progress: bool,
    rule_options: dict[str, Any] | None = None,
    monitor_every: int | None = None,
    settings: dict[str, Any] | None = None,
) -> tuple[Run, AlignmentMonitor | None]:
    """Builds the model with ``seed``, trains it with the rule, measures accuracy and alignment.

    Warnings raised meanwhile (the library's bottleneck and misalignment warnings) are logged and
    kept in the run. A loss that turns NaN stops the run, which is then marked ``diverged``.
    """
    torch.manual_seed(seed)
    model, points = build()
    probe_batch = split.probe(probe)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rule = apply_rule(rule_name, model, seed, points=points, **(rule_options or {}))
        monitor = None
        if monitor_every is not None:
            monitor = AlignmentMonitor(model, rule, F.cross_entropy, every=monitor_every)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        done = fit(
            model,
            recipe.build([p for p in model.parameters() if p.requires_grad]),
            lambda _: shuffled(len(split.x_train), recipe.batch_size, generator),
            lambda index: F.cross_entropy(
                model(split.x_train[index]), split.y_train[index], reduction=recipe.reduction
            ),
            epochs=recipe.epochs,
            after_step=(lambda _: monitor.step(probe_batch)) if monitor is not None else None,
            stop_on_nonfinite=True,
            label=label,
            progress=progress,
        )
        accuracy = evaluate(model, split.x_test, split.y_test)
        report = _final_alignment(model, rule, rule_name, probe_batch, done.diverged)
    messages = sorted({str(w.message) for w in caught})
    for message in messages:
        log.warning("%s / %s: %s", part, label, message)
    run = Run(
        part=part,
        label=label,
        rule=rule_name,
        dataset=split.name,
        seed=seed,
        test_accuracy=accuracy,
        train_loss=math.nan if done.diverged or not done.epoch_losses else done.epoch_losses[-1],
        hidden_angles=report.hidden_angles() if report else {},
        signal_cosine=dict(report.signal_cosine) if report else {},
        seconds=done.seconds,
        settings={**asdict(recipe), **(rule_options or {}), **(settings or {})},
        warnings=messages,
        diverged=done.diverged,
    )
    log.info("%s / %s: test accuracy %.2f%%", part, label, 100 * accuracy)
    return run, monitor


def _final_alignment(
    model: nn.Module,
    rule: Rule,
    rule_name: str,
    probe_batch: tuple[torch.Tensor, torch.Tensor],
    diverged: bool,
) -> AlignmentReport | None:
    if rule_name == "BP" or diverged:
        return None  # BP is its own reference; a diverged model has nothing to measure
    model.train()  # the regime training saw (dropout masks are shared by both passes)
    return alignment(model, rule, probe_batch, F.cross_entropy)


# --- statistics ----------------------------------------------------------------------------------


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); ``nan`` for fewer than 3 pairs."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs pairs: {len(x)} x values, {len(y)} y values")
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 3:
        return math.nan
    rx, ry = _ranks([a for a, _ in pairs]), _ranks([b for _, b in pairs])
    mx, my = statistics.mean(rx), statistics.mean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    norm = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / norm if norm else math.nan


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def group(runs: Sequence[Run], **match: Any) -> list[Run]:
    """The runs whose attributes equal ``match``."""
    return [r for r in runs if all(getattr(r, k) == v for k, v in match.items())]
