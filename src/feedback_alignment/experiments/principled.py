"""Principled DFA training: MLP claims, alignment over training, the bottleneck, best practices, convs.

Five experiments on real images, each a registered task, plus ``principled`` which runs all five:

=========================== ==============================================================================
task                        what it measures
=========================== ==============================================================================
``principled-mlp``          tanh MLPs 1x800 and 7x240 (Nøkland 2016) with BP, FA, DFA and Shallow
``principled-alignment``    per-layer update angle and signal cosine of DFA through training (plots)
``principled-bottleneck``   a b-wide middle layer (784-800-b-800-10): narrow, and 800 wide with only b
                            units trained (the paper's masked variant); alignment and accuracy vs b
``principled-practices``    one-factor ablations of DFA: activation, feedback scale and distribution,
                            BatchNorm, dropout, learning rate, optimiser, zero initialisation
``principled-conv``         a small conv net under BP, DFA, Shallow and DFA with frozen convolutions
=========================== ==============================================================================

Every run uses the same recipe unless the ablation changes it: Adam (lr 1e-3), batch 128, inputs
standardised by the training set's mean and standard deviation, PyTorch's default initialisation,
the same seed for the model of every rule. Alignment is measured on a fixed probe batch of training
images with :func:`feedback_alignment.alignment` (no side effects on the model).

The numbers beside ours come from ``REFERENCE.md``: Nøkland's MNIST errors are marked unverified
there, and the bottleneck logs are CIFAR-10 (which cannot be had offline here), so they are context,
not targets. Nothing here is tuned per rule.

References:
    Nøkland, "Direct Feedback Alignment Provides Learning in Deep Neural Networks", NeurIPS 2016.
    Launay, Poli, Krzakala, "Principled Training of Neural Networks with Direct Feedback Alignment",
    arXiv:1906.04554, 2019.
    Launay, Poli, Boniface, Krzakala, "Direct Feedback Alignment Scales to Modern Deep Learning
    Tasks and Architectures", NeurIPS 2020.
    Refinetti, d'Ascoli, Ohana, Goldt, "Align, then memorise: the dynamics of learning with
    feedback alignment", ICML 2021.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from feedback_alignment.alignment import AlignmentMonitor, AlignmentReport, alignment
from feedback_alignment.experiments.registry import RunOptions, TaskReport, register_task
from feedback_alignment.models import MLP
from feedback_alignment.rules import BP, DFA, Rule, Shallow

log = logging.getLogger(__name__)

PARTS = ("mlp", "alignment", "bottleneck", "practices", "conv")
"""The five experiments, in the order the umbrella task runs them."""

# --- the papers' figures (REFERENCE.md) -----------------------------------------------------------

NOKLAND_MNIST_ERROR: dict[tuple[str, str], float] = {
    ("1x800", "BP"): 1.59,
    ("1x800", "FA"): 1.68,
    ("1x800", "DFA"): 1.68,
    ("7x240", "BP"): 2.16,
    ("7x240", "FA"): 2.20,
    ("7x240", "DFA"): 2.32,
}
"""Nøkland 2016, MNIST test error % of tanh MLPs (REFERENCE.md: [unverified])."""

LAUNAY_BOTTLENECK: dict[int, tuple[float, float | None]] = {
    1: (0.069, 40.5),
    5: (0.234, None),
    18: (0.466, None),
    46: (0.622, None),
    118: (0.760, 47.9),
    308: (0.871, None),
    800: (0.892, 47.1),
}
"""Launay et al. 2019 logs, CIFAR-10 3072-800-b-800-10 tanh, b of 800 units trained:
width -> (cosine at that layer, test accuracy % where REFERENCE.md gives one)."""

BIOTORCH_FMNIST_LENET_ERROR = {"BP": 9.2, "FA": 13.06, "DFA": 12.81}
"""BioTorch benchmark, Fashion-MNIST LeNet top-1 error % (REFERENCE.md [code])."""


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
        bottleneck_widths, bottleneck_epochs: the swept middle widths ``b`` and their training.
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

    def __post_init__(self) -> None:
        if len(self.mlp_datasets) != len(self.mlp_epochs):
            raise ValueError(
                f"setting {self.name!r}: {len(self.mlp_datasets)} MLP data sets but "
                f"{len(self.mlp_epochs)} epoch counts"
            )
        if not self.bottleneck_widths or min(self.bottleneck_widths) < 1:
            raise ValueError(f"bottleneck widths must be positive, got {self.bottleneck_widths}")


FULL = Setting(
    name="full",
    mlp_datasets=("mnist-5k", "fashion-mnist"),
    mlp_epochs=(20, 2),
    dataset="fashion-mnist",
    train_limit=None,
    test_limit=None,
    alignment_epochs=2,
    alignment_every=10,
    bottleneck_widths=(1, 5, 18, 46, 118, 308, 800),
    bottleneck_epochs=1,
    practice_epochs=1,
    conv_epochs=1,
)
QUICK = Setting(
    name="quick",
    mlp_datasets=("mnist-5k",),
    mlp_epochs=(3,),
    dataset="fashion-mnist",
    train_limit=4000,
    test_limit=1000,
    alignment_epochs=2,
    alignment_every=2,
    bottleneck_widths=(1, 5, 18, 118, 800),
    bottleneck_epochs=1,
    practice_epochs=1,
    conv_epochs=1,
)
TINY = Setting(
    name="tiny",
    mlp_datasets=("digits",),
    mlp_epochs=(1,),
    dataset="digits",
    train_limit=600,
    test_limit=300,
    alignment_epochs=1,
    alignment_every=2,
    bottleneck_widths=(1, 4, 32),
    bottleneck_epochs=1,
    practice_epochs=1,
    conv_epochs=1,
    probe=128,
    wide=32,
    deep=(3, 16),
    conv=(4, 8, 16),
)
"""A seconds-long setting for the test: every code path, no meaningful numbers (digits 8x8)."""


def setting_for(options: RunOptions) -> Setting:
    return QUICK if options.quick else FULL


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


# --- models --------------------------------------------------------------------------------------

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
    TinyDFA). Without BatchNorm and dropout this is :class:`~feedback_alignment.models.MLP`.
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


class PartlyTrained(nn.Module):
    """A tanh layer of ``width`` units of which only the first ``trained`` units learn.

    The paper's masked-update variant of the bottleneck: the next layer still sees all ``width``
    units (no information bottleneck), but only ``trained`` of them receive the DFA signal. The
    frozen rows are a separate ``Linear`` with ``requires_grad=False`` (the same initial
    distribution as the trained rows: PyTorch's default depends on the fan-in only), and the trained
    units' activation ``act`` is the feedback point, so the alignment measured there is exactly that
    of the units that learn. Equivalent to masking the gradient of rows ``trained:`` of one
    ``width``-wide layer, except that the principled feedback scale uses ``trained`` as the point's
    width (Adam makes that scale irrelevant).
    """

    def __init__(self, in_features: int, width: int, trained: int) -> None:
        super().__init__()
        if not 1 <= trained <= width:
            raise ValueError(f"trained units must be in [1, {width}], got {trained}")
        self.trained = nn.Linear(in_features, trained)
        self.act = nn.Tanh()
        self.frozen = nn.Linear(in_features, width - trained) if trained < width else None
        if self.frozen is not None:
            self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.trained(x))  # (N, trained): the feedback point
        if self.frozen is None:
            return h
        return torch.cat([h, torch.tanh(self.frozen(x))], dim=-1)  # (N, width)


def bottleneck_mlp(features: int, width: int, variant: str, wide: int = 800) -> Built:
    """``features-800-b-800-10`` tanh (``"narrow"``) or 800 wide with b trained (``"masked"``).

    The middle layer's feedback point is the second of the returned points.
    """
    if variant == "narrow":
        return MLP([features, wide, width, wide, 10], "tanh", flatten=True), ["2", "4", "6"]
    if variant == "masked":
        model = nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, wide),
            nn.Tanh(),
            PartlyTrained(wide, wide, width),
            nn.Linear(wide, wide),
            nn.Tanh(),
            nn.Linear(wide, 10),
        )
        return model, ["2", "3.act", "5"]
    raise ValueError(f"unknown bottleneck variant {variant!r}; choose 'narrow' or 'masked'")


BOTTLENECK_LAYER = {"narrow": "3", "masked": "3.trained"}
"""The middle layer's module path in each variant (its feedback point is the second point)."""


def small_convnet(
    image: Sequence[int], sizes: tuple[int, int, int] = (16, 32, 256)
) -> nn.Sequential:
    """``conv3x3-tanh-pool, conv3x3-tanh-pool, fc-tanh, fc``: the smallest net with two conv layers.

    Feedback points: after each tanh (automatic placement), so DFA feeds both conv feature maps
    (``C*H*W`` features per sample) and the hidden fully connected layer.
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


# --- rules ---------------------------------------------------------------------------------------


def fa_rule_class() -> type[Rule] | None:
    """The layer-wise FA rule when ``feedback_alignment.rules.layerwise`` provides it."""
    try:
        from feedback_alignment.rules.layerwise import FA
    except ImportError as error:
        log.info("FA is unavailable (%s): the MLP comparison leaves it out", error)
        return None
    return FA


def make_rule(name: str, seed: int, **options: Any) -> Rule:
    """``"BP"``, ``"DFA"``, ``"Shallow"`` or ``"FA"``; ``options`` go to DFA (feedback, scale)."""
    if name == "BP":
        return BP()
    if name == "DFA":
        return DFA(seed=seed, **options)
    if name == "Shallow":
        return Shallow(seed=seed)
    if name == "FA":
        fa = fa_rule_class()
        if fa is None:
            raise ValueError("rule 'FA' needs feedback_alignment.rules.layerwise.FA")
        return fa(seed=seed)
    raise ValueError(f"unknown rule {name!r}; choose BP, DFA, Shallow or FA")


def _apply(rule: Rule, model: nn.Module, points: list[str] | None) -> None:
    if points is not None and isinstance(rule, (DFA, Shallow)):
        rule.apply(model, points=points)
    else:
        rule.apply(model)


# --- one training run ----------------------------------------------------------------------------


@dataclass
class Recipe:
    """How one model is trained: the same for every rule unless an ablation changes it."""

    epochs: int
    lr: float = 1e-3
    optimizer: str = "adam"  # or "sgd" (momentum 0.9)
    batch_size: int = 128

    def build(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9)
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
        return _finite_mean(self.hidden_angles.values())

    def mean_cosine(self) -> float:
        return _finite_mean(mean for mean, _ in self.signal_cosine.values())


def _finite_mean(values) -> float:
    finite = [float(v) for v in values if not math.isnan(float(v))]
    return statistics.mean(finite) if finite else math.nan


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
    rule = make_rule(rule_name, seed, **(rule_options or {}))
    probe_batch = split.probe(probe)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _apply(rule, model, points)
        monitor = None
        if monitor_every is not None:
            monitor = AlignmentMonitor(model, rule, F.cross_entropy, every=monitor_every)
        loss, diverged = _fit(
            model, rule, split, recipe, seed, monitor, probe_batch, progress, label
        )
        accuracy = evaluate(model, split.x_test, split.y_test)
        report = _final_alignment(model, rule, rule_name, probe_batch, diverged)
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
        train_loss=loss,
        hidden_angles=report.hidden_angles() if report else {},
        signal_cosine=dict(report.signal_cosine) if report else {},
        seconds=time.perf_counter() - start,
        settings={**asdict(recipe), **(rule_options or {}), **(settings or {})},
        warnings=messages,
        diverged=diverged,
    )
    log.info("%s / %s: test accuracy %.2f%%", part, label, 100 * accuracy)
    return run, monitor


def _fit(
    model: nn.Module,
    rule: Rule,
    split: Split,
    recipe: Recipe,
    seed: int,
    monitor: AlignmentMonitor | None,
    probe_batch: tuple[torch.Tensor, torch.Tensor],
    progress: bool,
    label: str,
) -> tuple[float, bool]:
    """The plain PyTorch loop; returns the last epoch's mean training loss and whether it diverged."""
    optimizer = recipe.build([p for p in model.parameters() if p.requires_grad])
    generator = torch.Generator().manual_seed(seed)
    model.train()
    mean_loss = math.nan
    bar = tqdm(range(recipe.epochs), desc=label, disable=not progress, leave=False, unit="epoch")
    for _ in bar:
        order = torch.randperm(len(split.x_train), generator=generator)
        total = 0.0
        for i in range(0, len(order), recipe.batch_size):
            index = order[i : i + recipe.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(split.x_train[index]), split.y_train[index])
            if not torch.isfinite(loss):
                log.warning("%s: the loss became %s; the run stops here", label, float(loss))
                return math.nan, True
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
            if monitor is not None:
                monitor.step(probe_batch)
        mean_loss = total / len(order)
        bar.set_postfix(loss=f"{mean_loss:.3f}")
    return mean_loss, False


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


def gap_closure(rule: float, bp: float, shallow: float) -> float:
    """``G = (m_rule - m_shallow) / (m_BP - m_shallow)`` (1: as good as BP, 0: no better than shallow)."""
    return (rule - shallow) / (bp - shallow) if bp != shallow else math.nan


def _mean_std(values: Sequence[float], digits: int = 2) -> str:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return "—"
    if len(finite) == 1:
        return f"{finite[0]:.{digits}f}"
    return f"{statistics.mean(finite):.{digits}f} ± {statistics.stdev(finite):.{digits}f}"


def _group(runs: Sequence[Run], **match: Any) -> list[Run]:
    return [r for r in runs if all(getattr(r, k) == v for k, v in match.items())]


# --- part 1: MLP claims --------------------------------------------------------------------------


def mlp_rules() -> tuple[str, ...]:
    if fa_rule_class() is None:
        log.warning("FA (feedback_alignment.rules.layerwise) is not importable: left out")
        return ("BP", "DFA", "Shallow")
    return ("BP", "FA", "DFA", "Shallow")


def part_mlp(setting: Setting, seeds: Sequence[int], progress: bool) -> dict[str, Any]:
    """BP, FA, DFA and Shallow on Nøkland's tanh MLPs, on each of the setting's data sets."""
    runs = []
    rules = mlp_rules()
    for dataset, epochs in zip(setting.mlp_datasets, setting.mlp_epochs, strict=True):
        split = load_split(dataset, setting.train_limit, setting.test_limit)
        recipe = Recipe(epochs, setting.lr, batch_size=setting.batch_size)
        for arch, hidden in setting.mlp_archs().items():
            sizes = [split.features, *hidden, 10]
            for rule in rules:
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
    return {"runs": runs, "rules": rules}


def mlp_markdown(result: dict[str, Any], setting: Setting) -> str:
    runs: list[Run] = result["runs"]
    lines = [
        "| data set | MLP (tanh) | rule | test error % (ours) | Nøkland MNIST error % "
        "[unverified] | gap closure G | mean hidden update angle (deg) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for dataset in setting.mlp_datasets:
        for arch in setting.mlp_archs():
            group = [r for r in runs if r.dataset == dataset and r.settings.get("arch") == arch]
            acc = {
                rule: statistics.mean(r.test_accuracy for r in _group(group, rule=rule))
                for rule in result["rules"]
            }
            for rule in result["rules"]:
                rule_runs = _group(group, rule=rule)
                # Nøkland's figures are MNIST: shown beside MNIST rows only
                paper = NOKLAND_MNIST_ERROR.get((arch, rule)) if "mnist" in dataset[:5] else None
                g = gap_closure(acc[rule], acc["BP"], acc["Shallow"])
                lines.append(
                    f"| {dataset} | {arch} | {rule} | {_mean_std([r.error for r in rule_runs])} | "
                    f"{'—' if paper is None else f'{paper:.2f}'} | "
                    f"{'—' if rule in ('BP', 'Shallow') else f'{g:.2f}'} | "
                    f"{_mean_std([r.mean_angle() for r in rule_runs], 1)} |"
                )
    epochs = ", ".join(
        f"{d} {e} epochs" for d, e in zip(setting.mlp_datasets, setting.mlp_epochs, strict=True)
    )
    lines += [
        "",
        f"Adam lr {setting.lr}, batch {setting.batch_size}, {epochs}; default init for every rule. "
        "Nøkland's figures are full MNIST (60k training images, long training), ours MNIST-5k "
        "(4,000 train / 1,000 test) and Fashion-MNIST: context, not a target. G = (acc_rule - "
        "acc_Shallow) / (acc_BP - acc_Shallow). Angle: between the rule's and BP's update of each "
        "hidden layer on a probe batch after training.",
    ]
    if "FA" not in result["rules"]:
        lines.append("FA was not importable when this ran, so it is left out.")
    return "\n".join(lines)


# --- part 2: alignment over training -------------------------------------------------------------


def part_alignment(setting: Setting, seeds: Sequence[int], progress: bool) -> dict[str, Any]:
    """DFA on the 7x240 tanh MLP with an :class:`AlignmentMonitor` on a fixed probe batch."""
    split = load_split(setting.dataset, setting.train_limit, setting.test_limit)
    arch, hidden = list(setting.mlp_archs().items())[1]
    sizes = [split.features, *hidden, 10]
    run, monitor = train_run(
        "alignment",
        f"{setting.dataset} {arch} DFA (monitored)",
        "DFA",
        functools.partial(block_mlp, sizes),
        split,
        Recipe(setting.alignment_epochs, setting.lr, batch_size=setting.batch_size),
        seed=seeds[0],
        probe=setting.probe,
        progress=progress,
        monitor_every=setting.alignment_every,
        settings={"arch": arch},
    )
    history = [
        {
            "step": step,
            "loss": report.loss,
            "angles": report.hidden_angles(),
            "cosine": {k: list(v) for k, v in report.signal_cosine.items()},
        }
        for step, report in (monitor.history if monitor else [])
    ]
    return {"runs": [run], "history": history, "arch": arch}


def alignment_summary(history: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Where the angles and the loss stand at the first measurement, their best, and the end."""
    if not history:
        return {}
    layers = list(history[0]["angles"])
    mean_angles = [_finite_mean(h["angles"].values()) for h in history]
    best = min(range(len(history)), key=lambda i: mean_angles[i])
    loss0 = history[0]["loss"]
    # the step by which the loss has fallen half of the way it falls in the whole run
    loss_end = min(h["loss"] for h in history)
    half = next(h["step"] for h in history if h["loss"] <= (loss0 + loss_end) / 2)
    return {
        "layers": layers,
        "first": {"step": history[0]["step"], "mean_angle": mean_angles[0], "loss": loss0},
        "best": {"step": history[best]["step"], "mean_angle": mean_angles[best]},
        "last": {
            "step": history[-1]["step"],
            "mean_angle": mean_angles[-1],
            "loss": history[-1]["loss"],
        },
        "loss_half_step": half,
    }


def alignment_markdown(result: dict[str, Any], setting: Setting) -> str:
    history = result["history"]
    run: Run = result["runs"][0]
    if not history:
        return "No alignment measurement was taken (the run was shorter than the monitor period)."
    summary = alignment_summary(history)
    checkpoints = _checkpoints(history, 6)
    layers = summary["layers"]
    points = list(history[0]["cosine"])
    lines = [
        "| step | probe loss | "
        + " | ".join(f"angle {n}" for n in layers)
        + " | "
        + " | ".join(f"cos {p}" for p in points)
        + " |",
        "|---:|---:|" + "---:|" * (len(layers) + len(points)),
    ]
    for h in checkpoints:
        angles = " | ".join(f"{h['angles'].get(n, math.nan):.1f}" for n in layers)
        cosines = " | ".join(f"{h['cosine'][p][0]:.3f}" for p in points)
        lines.append(f"| {h['step']} | {h['loss']:.3f} | {angles} | {cosines} |")
    lines += [
        "",
        f"DFA, {setting.dataset} {result['arch']} tanh, {setting.alignment_epochs} epochs, measured every "
        f"{setting.alignment_every} steps on a fixed probe batch of {setting.probe} training "
        f"images; final test accuracy {100 * run.test_accuracy:.2f}%. Mean hidden update angle "
        f"{summary['first']['mean_angle']:.1f} deg at step {summary['first']['step']}, lowest "
        f"{summary['best']['mean_angle']:.1f} deg at step {summary['best']['step']}, "
        f"{summary['last']['mean_angle']:.1f} deg at the end (step {summary['last']['step']}); "
        f"the probe loss had fallen half way by step {summary['loss_half_step']}. Angles are "
        "per hidden Linear (module path), cosines per feedback point (the tanh after it).",
    ]
    return "\n".join(lines)


def _checkpoints(history: Sequence[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    """About ``count`` log-spaced measurements, first and last included."""
    if len(history) <= count:
        return list(history)
    picks = {round(math.exp(i / (count - 1) * math.log(len(history)))) - 1 for i in range(count)}
    return [history[i] for i in sorted(picks | {0, len(history) - 1})]


# --- part 3: the bottleneck ----------------------------------------------------------------------


def part_bottleneck(setting: Setting, seeds: Sequence[int], progress: bool) -> dict[str, Any]:
    """DFA with a b-wide (narrow) or b-trained (masked) middle layer, b swept; BP at the extremes."""
    split = load_split(setting.dataset, setting.train_limit, setting.test_limit)
    recipe = Recipe(setting.bottleneck_epochs, setting.lr, batch_size=setting.batch_size)
    widths = setting.bottleneck_widths
    jobs = [("DFA", variant, b) for variant in ("narrow", "masked") for b in widths]
    jobs += [("BP", "narrow", b) for b in sorted({min(widths), max(widths)})]
    runs = []
    for rule, variant, b in jobs:
        for seed in seeds:
            run, _ = train_run(
                "bottleneck",
                f"{variant} b={b} {rule}",
                rule,
                functools.partial(bottleneck_mlp, split.features, b, variant, setting.wide),
                split,
                recipe,
                seed=seed,
                probe=setting.probe,
                progress=progress,
                settings={"variant": variant, "width": b},
            )
            runs.append(run)
    return {"runs": runs, "curves": bottleneck_curves(runs), "features": split.features}


def _point_cosine(run: Run, index: int) -> float:
    """Mean signal cosine at the run's feedback point ``index`` (0 below, 1 middle, 2 above)."""
    points = list(run.signal_cosine)
    return run.signal_cosine[points[index]][0] if len(points) > index else math.nan


def bottleneck_curves(runs: Sequence[Run]) -> dict[str, Any]:
    """Per variant: widths, mean middle-layer cosine, angle and accuracy, and Spearman vs width."""
    curves: dict[str, Any] = {}
    for variant in ("narrow", "masked"):
        dfa = [r for r in runs if r.rule == "DFA" and r.settings["variant"] == variant]
        widths = sorted({r.settings["width"] for r in dfa})
        layer = BOTTLENECK_LAYER[variant]
        by_width = {b: [r for r in dfa if r.settings["width"] == b] for b in widths}
        cosine = [_finite_mean(_point_cosine(r, 1) for r in by_width[b]) for b in widths]
        # the layer below the middle one: BP's signal there passes through the b-wide layer
        below = [_finite_mean(_point_cosine(r, 0) for r in by_width[b]) for b in widths]
        angle = [
            _finite_mean(r.hidden_angles.get(layer, math.nan) for r in by_width[b]) for b in widths
        ]
        accuracy = [statistics.mean(100 * r.test_accuracy for r in by_width[b]) for b in widths]
        curves[variant] = {
            "width": widths,
            "cosine": cosine,
            "cosine_below": below,
            "angle": angle,
            "accuracy": accuracy,
            "spearman_cosine": spearman(widths, cosine),
            "spearman_cosine_below": spearman(widths, below),
            "spearman_accuracy": spearman(widths, accuracy),
        }
    return curves


def bottleneck_markdown(result: dict[str, Any], setting: Setting) -> str:
    curves = result["curves"]
    runs: list[Run] = result["runs"]
    lines = [
        "| b | cosine, narrow | cosine, masked | paper cosine (CIFAR-10, masked) | angle narrow "
        "(deg) | angle masked (deg) | cosine below, narrow | cosine below, masked | acc. narrow % "
        "| acc. masked % | paper acc. % |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    narrow, masked = curves["narrow"], curves["masked"]
    for i, b in enumerate(narrow["width"]):
        paper_cos, paper_acc = LAUNAY_BOTTLENECK.get(b, (None, None))
        lines.append(
            f"| {b} | {narrow['cosine'][i]:.3f} | {masked['cosine'][i]:.3f} | "
            f"{'—' if paper_cos is None else f'{paper_cos:.3f}'} | {narrow['angle'][i]:.1f} | "
            f"{masked['angle'][i]:.1f} | {narrow['cosine_below'][i]:.3f} | "
            f"{masked['cosine_below'][i]:.3f} | {narrow['accuracy'][i]:.2f} | "
            f"{masked['accuracy'][i]:.2f} | {'—' if paper_acc is None else f'{paper_acc:.1f}'} |"
        )
    paper_widths = sorted(LAUNAY_BOTTLENECK)
    paper_rho = spearman(paper_widths, [LAUNAY_BOTTLENECK[b][0] for b in paper_widths])
    bp = {r.settings["width"]: 100 * r.test_accuracy for r in _group(runs, rule="BP")}
    lines += [
        "",
        "Spearman correlation with b: cosine narrow "
        f"{narrow['spearman_cosine']:.2f}, masked {masked['spearman_cosine']:.2f} (paper's logs "
        f"{paper_rho:.2f}); cosine of the layer below, narrow "
        f"{narrow['spearman_cosine_below']:.2f}, masked {masked['spearman_cosine_below']:.2f}; "
        f"accuracy narrow {narrow['spearman_accuracy']:.2f}, masked "
        f"{masked['spearman_accuracy']:.2f}. BP, narrow: "
        + ", ".join(f"{v:.2f}% at b={k}" for k, v in sorted(bp.items()))
        + ".",
        f"DFA, {setting.dataset} {result['features']}-{setting.wide}-b-{setting.wide}-10 tanh, "
        f"{setting.bottleneck_epochs} epochs, Adam lr {setting.lr}. "
        "Cosine: mean over the probe batch of the per-sample cosine between DFA's and BP's signal at "
        "the middle layer's feedback point (for 'masked', over its b trained units only); angle: "
        "between DFA's and BP's update of the middle layer's (trained) weights; cosine below: the "
        "same cosine at the first hidden layer, whose BP signal passes through the middle layer. "
        "A per-sample cosine over b = 1 unit is the sign agreement (+1 or -1). Narrow: the layer "
        "has b units (an information bottleneck as well); masked: 800 units of which b learn "
        "(the paper's variant). The paper's figures are CIFAR-10 (3072 inputs), ours Fashion-MNIST.",
    ]
    return "\n".join(lines)


# --- part 4: best practices ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ablation:
    """One row of the best-practices table: a change of the base DFA recipe."""

    label: str
    rule: str = "DFA"
    activation: str = "tanh"
    feedback: str = "gaussian"
    scale: str = "principled"
    batchnorm: bool = False
    dropout: float = 0.0
    zero_init: bool = False
    lr: float | None = None  # None: the setting's
    optimizer: str = "adam"


def ablations(base_lr: float) -> list[Ablation]:
    """The base DFA recipe, BP and Shallow on it, then one factor changed per row."""
    return [
        Ablation("DFA base: tanh, gaussian, principled, Adam"),
        Ablation("BP (reference)", rule="BP"),
        Ablation("Shallow (reference)", rule="Shallow"),
        Ablation("activation ReLU", activation="relu"),
        Ablation("activation leaky ReLU", activation="leaky_relu"),
        Ablation("BP, ReLU (reference)", rule="BP", activation="relu"),
        Ablation("feedback scale none", scale="none"),
        Ablation("feedback uniform", feedback="uniform"),
        Ablation("feedback rademacher", feedback="rademacher"),
        Ablation("BatchNorm", batchnorm=True),
        Ablation("dropout 0.1", dropout=0.1),
        Ablation(f"lr {base_lr / 10:g}", lr=base_lr / 10),
        Ablation(f"lr {base_lr * 10:g}", lr=base_lr * 10),
        Ablation("zero init (Nøkland)", zero_init=True),
        Ablation("SGD m0.9 lr 0.01, principled", optimizer="sgd", lr=0.01),
        Ablation("SGD m0.9 lr 0.01, scale none", optimizer="sgd", lr=0.01, scale="none"),
        Ablation("BP, SGD m0.9 lr 0.01 (reference)", rule="BP", optimizer="sgd", lr=0.01),
    ]


def part_practices(setting: Setting, seeds: Sequence[int], progress: bool) -> dict[str, Any]:
    """Every :func:`ablations` row on the 2x800 MLP, each with accuracy and final alignment."""
    split = load_split(setting.dataset, setting.train_limit, setting.test_limit)
    sizes = [split.features, setting.wide, setting.wide, 10]
    runs = []
    for row in ablations(setting.lr):
        recipe = Recipe(
            setting.practice_epochs,
            row.lr if row.lr is not None else setting.lr,
            row.optimizer,
            setting.batch_size,
        )
        build = functools.partial(
            block_mlp,
            sizes,
            row.activation,
            batchnorm=row.batchnorm,
            dropout=row.dropout,
            zero_init=row.zero_init,
        )
        options = {"feedback": row.feedback, "scale": row.scale} if row.rule == "DFA" else {}
        for seed in seeds:
            run, _ = train_run(
                "practices",
                row.label,
                row.rule,
                build,
                split,
                recipe,
                seed=seed,
                probe=setting.probe,
                progress=progress,
                rule_options=options,
                settings={"ablation": asdict(row)},
            )
            runs.append(run)
    return {"runs": runs}


def practices_markdown(result: dict[str, Any], setting: Setting) -> str:
    runs: list[Run] = result["runs"]
    labels = list(dict.fromkeys(r.label for r in runs))
    lines = [
        "| run | test accuracy % | mean hidden update angle (deg) | mean signal cosine | notes |",
        "|---|---:|---:|---:|---|",
    ]
    for label in labels:
        group = [r for r in runs if r.label == label]
        notes = "diverged" if any(r.diverged for r in group) else ""
        lines.append(
            f"| {label} | {_mean_std([100 * r.test_accuracy for r in group])} | "
            f"{_mean_std([r.mean_angle() for r in group], 1)} | "
            f"{_mean_std([r.mean_cosine() for r in group], 3)} | {notes} |"
        )
    lines += [
        "",
        f"{setting.dataset}, MLP {setting.wide}-{setting.wide} hidden, "
        f"{setting.practice_epochs} epochs, batch {setting.batch_size}; the base is DFA with tanh, "
        f"gaussian feedback, principled scaling, Adam lr {setting.lr}, default init, and each row "
        "changes one thing. Alignment is measured after training on a probe batch, in train mode.",
    ]
    return "\n".join(lines)


# --- part 5: conv layers -------------------------------------------------------------------------

CONV_RUNS: tuple[tuple[str, str, bool], ...] = (
    ("BP", "BP", False),
    ("DFA", "DFA", False),
    ("DFA, convolutions frozen", "DFA", True),
    ("Shallow", "Shallow", False),
)
"""(label, rule, freeze the conv layers at their initialisation)."""


def _conv_build(image: Sequence[int], sizes: tuple[int, int, int], freeze: bool) -> Built:
    model = small_convnet(image, sizes)
    if freeze:
        for module in model:
            if isinstance(module, nn.Conv2d):
                module.requires_grad_(False)
    return model, None


def part_conv(setting: Setting, seeds: Sequence[int], progress: bool) -> dict[str, Any]:
    """BP, DFA, DFA on the dense layers only (frozen convolutions) and Shallow on a small conv net.

    The frozen-convolution run isolates what DFA's updates of the conv layers are worth: DFA
    "trains" the convolutions only if it beats that run.
    """
    split = load_split(setting.dataset, setting.train_limit, setting.test_limit)
    recipe = Recipe(setting.conv_epochs, setting.lr, batch_size=setting.batch_size)
    runs = []
    for label, rule, freeze in CONV_RUNS:
        for seed in seeds:
            run, _ = train_run(
                "conv",
                label,
                rule,
                functools.partial(
                    _conv_build, tuple(split.x_train.shape[1:]), setting.conv, freeze
                ),
                split,
                recipe,
                seed=seed,
                probe=setting.probe,
                progress=progress,
                settings={"frozen_convs": freeze},
            )
            runs.append(run)
    return {"runs": runs}


def conv_markdown(result: dict[str, Any], setting: Setting) -> str:
    runs: list[Run] = result["runs"]
    layers = ["0", "3", "7"]
    lines = [
        "| run | test error % (ours) | BioTorch FMNIST LeNet error % | angle conv1 (deg) | angle "
        "conv2 (deg) | angle fc (deg) | cosine conv1 | cosine conv2 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, _rule, _ in CONV_RUNS:
        group = [r for r in runs if r.label == label]
        paper = BIOTORCH_FMNIST_LENET_ERROR.get(label)
        angles = [_mean_std([r.hidden_angles.get(n, math.nan) for r in group], 1) for n in layers]
        cos = [
            _mean_std([r.signal_cosine.get(p, (math.nan, 0))[0] for r in group], 3)
            for p in ("1", "4")
        ]
        lines.append(
            f"| {label} | {_mean_std([r.error for r in group])} | "
            f"{'—' if paper is None else f'{paper:.2f}'} | " + " | ".join(angles + cos) + " |"
        )
    lines += [
        "",
        f"{setting.dataset}, conv3x3({setting.conv[0]})-tanh-pool-conv3x3({setting.conv[1]})-tanh-"
        f"pool-fc{setting.conv[2]}-tanh-fc10, "
        f"{setting.conv_epochs} epochs, Adam lr {setting.lr}. DFA feeds the error to both conv "
        "feature maps and the fc layer; 'convolutions frozen' keeps the conv layers at their "
        "random initialisation (DFA trains the fc layer only). BioTorch's LeNet figures are a "
        "different, longer-trained net: context only.",
    ]
    return "\n".join(lines)


# --- running and writing -------------------------------------------------------------------------

PART_FUNCTIONS: dict[str, Callable[[Setting, Sequence[int], bool], dict[str, Any]]] = {
    "mlp": part_mlp,
    "alignment": part_alignment,
    "bottleneck": part_bottleneck,
    "practices": part_practices,
    "conv": part_conv,
}
PART_MARKDOWN: dict[str, Callable[[dict[str, Any], Setting], str]] = {
    "mlp": mlp_markdown,
    "alignment": alignment_markdown,
    "bottleneck": bottleneck_markdown,
    "practices": practices_markdown,
    "conv": conv_markdown,
}
PART_TITLES = {
    "mlp": "MLP claims (Nøkland 2016)",
    "alignment": "Alignment over training",
    "bottleneck": "The bottleneck effect (Launay et al. 2019)",
    "practices": "Best practices (ablations of DFA)",
    "conv": "Convolutional layers under DFA",
}


def run_parts(
    parts: Sequence[str],
    out_dir: Path,
    setting: Setting,
    seeds: Sequence[int] = (0,),
    progress: bool = True,
) -> TaskReport:
    """Runs ``parts`` with ``setting``; writes ``<part>.json``, ``<part>.md`` and plots to ``out_dir``."""
    unknown = [p for p in parts if p not in PART_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown principled parts {unknown}; choose from {list(PART_FUNCTIONS)}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    out_dir.mkdir(parents=True, exist_ok=True)
    sections, files = [], []
    for part in parts:
        start = time.perf_counter()
        result = PART_FUNCTIONS[part](setting, tuple(seeds), progress)
        seconds = time.perf_counter() - start
        markdown = (
            f"### principled / {PART_TITLES[part]} ({setting.name} mode, {seconds:.0f} s)\n\n"
            + PART_MARKDOWN[part](result, setting)
        )
        files += _write_part(part, result, markdown, setting, seconds, out_dir)
        sections.append(markdown)
        log.info("principled / %s done in %.0f s", part, seconds)
    name = "principled" if len(parts) > 1 else f"principled-{parts[0]}"
    return TaskReport(name, "\n\n".join(sections), files)


def _write_part(
    part: str,
    result: dict[str, Any],
    markdown: str,
    setting: Setting,
    seconds: float,
    out_dir: Path,
) -> list[Path]:
    from feedback_alignment.experiments import principled_plots

    payload = {
        "part": part,
        "setting": asdict(setting),
        "seconds": seconds,
        **{k: ([asdict(r) for r in v] if k == "runs" else v) for k, v in result.items()},
    }
    json_path = out_dir / f"{part}.json"
    json_path.write_text(json.dumps(payload, indent=2, default=_json_default))
    md_path = out_dir / f"{part}.md"
    md_path.write_text(markdown + "\n")
    plots = principled_plots.plot_part(part, result, setting, out_dir)
    return [json_path, md_path, *plots]


def rerender(part: str, out_dir: Path) -> TaskReport:
    """Rebuilds a part's tables and plots from its ``<part>.json`` (no training).

    For reading old results with newer table code; the runs themselves are not changed.
    """
    payload = json.loads((out_dir / f"{part}.json").read_text())
    setting = Setting(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in payload["setting"].items()}
    )
    runs = [
        Run(**{**r, "signal_cosine": {k: tuple(v) for k, v in r["signal_cosine"].items()}})
        for r in payload["runs"]
    ]
    result = {k: v for k, v in payload.items() if k not in ("part", "setting", "seconds")}
    result["runs"] = runs
    if part == "bottleneck":
        result["curves"] = bottleneck_curves(runs)
    markdown = (
        f"### principled / {PART_TITLES[part]} ({setting.name} mode, {payload['seconds']:.0f} s)\n\n"
        + PART_MARKDOWN[part](result, setting)
    )
    files = _write_part(part, result, markdown, setting, payload["seconds"], out_dir)
    return TaskReport(f"principled-{part}", markdown, files)


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _task(parts: Sequence[str]) -> Callable[[RunOptions], TaskReport]:
    def run(options: RunOptions) -> TaskReport:
        return run_parts(
            parts, options.out_dir, setting_for(options), options.seeds, options.progress
        )

    return run


def with_setting(setting: Setting, **changes: Any) -> Setting:
    """A copy of ``setting`` with ``changes`` (e.g. fewer epochs for a smoke run)."""
    return replace(setting, **changes)


run_all = register_task(
    "principled",
    "Launay 2019 / Nøkland 2016: MLP claims, alignment, bottleneck, best practices, convs",
)(_task(PARTS))
run_mlp = register_task(
    "principled-mlp", "tanh MLPs 1x800 and 7x240: BP, FA, DFA, Shallow (Nøkland 2016)"
)(_task(("mlp",)))
run_alignment = register_task(
    "principled-alignment", "DFA's per-layer update angle and signal cosine through training"
)(_task(("alignment",)))
run_bottleneck = register_task(
    "principled-bottleneck", "DFA through a narrow (or partly trained) middle layer, width swept"
)(_task(("bottleneck",)))
run_practices = register_task(
    "principled-practices", "ablations of DFA: activation, feedback, BatchNorm, dropout, lr, init"
)(_task(("practices",)))
run_conv = register_task(
    "principled-conv", "a small conv net under BP, DFA, Shallow (can DFA train conv layers?)"
)(_task(("conv",)))
