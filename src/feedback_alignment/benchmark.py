"""Step time and peak memory of every rule against backpropagation, on the six model families.

What is timed: a training *step*, ``zero_grad(set_to_none=True)``, forward, loss, ``backward()``,
``SGD.step()`` (lr 1e-3, weight decay 1e-4, which Kolen-Pollack needs), on one fixed batch. Every
variant (a rule, a placement of feedback points, or a hand-written floor) trains its own copy of
the same initial model.

Workloads (``size="full"``, realistic CPU sizes; ``"tiny"`` keeps the code paths for tests):

* mlp: tanh MLP 784-1024x8-10, batch 256 (the DFA papers' MNIST net);
* convnets: LeNet-5 on 28x28 (Fashion-MNIST), batch 256; ResNet-20 with BatchNorm on 32x32
  (CIFAR-10), batch 64;
* transformer: post-LN char Transformer 6x256, 8 heads, 8 x 64 tokens; macro and micro points;
* gcn: 2-layer GCN, 16 hidden, on a random graph of Cora's size (2,708 nodes, 1,433 sparse binary
  features, 10,556 edges, 7 classes): no download;
* deepfm: DeepFM, 39 fields, embeddings 10, MLP 400x3, batch 2048;
* nerf: NeRF field 8x256 (skip at 4) rendered on 256 rays x 32 samples.

Direct rules (DFA, sign-DFA, Shallow) get explicit feedback points (block outputs for residual
models, the paper's macro/micro placements for the Transformer, the error taken where the
experiments take it). For each of them a **floor** row does the same cut and the same single
projection written by hand here (forward hooks that detach each point's output, one
``autograd.Function`` at the error site that returns ``e @ B`` sliced per point), with no library
code, so that the distance between a rule and its floor is the library's own overhead.

Statistics: after one untimed step per variant (it fixes the feedback layouts) and ``warmup``
more, the variants' steps are **interleaved**, one step of each per round in
an order that rotates every round, so that drifts in machine load hit them alike. Each variant
reports its median and interquartile range; ratios (to BP, to the floor) are ratios of medians over
the same rounds, with a 95% confidence interval from a paired bootstrap over rounds (rounds are
resampled together, keeping the pairing). Peak memory is the peak of bytes held by tensors
allocated during one untimed step (the allocator's events from the PyTorch profiler on CPU,
``torch.cuda.max_memory_allocated`` on a GPU).

Run it with ``feedback-alignment bench`` (JSON, a markdown table and a plot). Timings on a shared
machine are no pass/fail criterion: tests run the tiny size for the structure of the output only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.models import MLP, LeNet, ResNet
from feedback_alignment.rules import (
    BP,
    DFA,
    FA,
    DirectFeedback,
    KolenPollack,
    Rule,
    Shallow,
    SignDFA,
    UnsupportedLayerError,
    brSF,
    frSF,
    uSF,
)

log = logging.getLogger(__name__)

SIZES = ("full", "tiny")
FAMILIES = ("mlp", "convnets", "transformer", "gcn", "deepfm", "nerf")

RULES: dict[str, type[Rule]] = {
    cls.name: cls for cls in (BP, DFA, SignDFA, Shallow, FA, uSF, frSF, brSF, KolenPollack)
}
"""The rules benchmarked, by their row name (``rule.name``, as in the committed tables); each is
built with ``seed=0``. The command line also takes any spelling of
:func:`feedback_alignment.rules.registry.canonical_key`."""

DIRECT_RULES = tuple(name for name, cls in RULES.items() if issubclass(cls, DirectFeedback))
"""Rules that get feedback points, a placement column and a hand-written floor."""

FLOOR_SUFFIX = " floor"
LR, WEIGHT_DECAY = 1e-3, 1e-4


# ---- workloads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One model at one size, its fixed batch, its loss and where direct feedback enters.

    Attributes:
        family: one of :data:`FAMILIES`.
        name: row label, e.g. ``"resnet-20"``.
        description: model and batch in words (goes into the table).
        build: a fresh model (the caller seeds torch first, so every variant starts alike).
        batch: ``batch(generator) -> (inputs, target)``; ``model(*inputs)`` is the forward.
        loss: ``loss(output, target) -> scalar``.
        placements: feedback points per placement name (one placement unless the family has
            several, e.g. the Transformer's ``macro`` and ``micro``).
        error_at: submodule whose output is the error site (``None``: the model's output).
        samples: number of samples per step (rows of the batch), for the table.
        layerwise_exclude: modules that layer-wise rules leave on backprop (``exclude=``).
    """

    family: str
    name: str
    description: str
    build: Callable[[], nn.Module]
    batch: Callable[[torch.Generator], tuple[tuple[Any, ...], torch.Tensor]]
    loss: Callable[[Any, torch.Tensor], torch.Tensor]
    placements: dict[str, list[str]]
    error_at: str | None = None
    samples: int = 0
    layerwise_exclude: tuple[str, ...] = ()


def _classes(generator: torch.Generator, batch: int, classes: int) -> torch.Tensor:
    return torch.randint(0, classes, (batch,), generator=generator)


def _mlp(size: str) -> list[Workload]:
    sizes, batch = ([784, *[1024] * 8, 10], 256) if size == "full" else ([20, 16, 16, 16, 4], 8)
    depth = len(sizes) - 2
    return [
        Workload(
            "mlp",
            f"mlp-{depth}x{sizes[1]}",
            f"tanh MLP {sizes[0]}-{sizes[1]}x{depth}-{sizes[-1]}, batch {batch}",
            lambda: MLP(sizes, "tanh"),
            lambda g: ((torch.randn(batch, sizes[0], generator=g),), _classes(g, batch, sizes[-1])),
            F.cross_entropy,
            {"": [str(2 * i + 1) for i in range(depth)]},  # after each activation
            samples=batch,
        )
    ]


def _activation_paths(model: nn.Sequential) -> list[str]:
    """Every activation module of a ``Sequential`` except after the last linear layer."""
    return [str(i) for i, m in enumerate(model) if isinstance(m, (nn.ReLU, nn.Tanh, nn.ELU))]


def _convnets(size: str) -> list[Workload]:
    if size == "full":
        lenet_kwargs: dict[str, Any] = {}
        image, lenet_batch = 28, 256
        resnet_kwargs = {"depth": 20, "width": 16}
        resnet_image, resnet_batch = 32, 64
    else:
        lenet_kwargs = {"channels": (2, 3), "hidden": (8, 8)}
        image, lenet_batch = 16, 4
        resnet_kwargs = {"depth": 8, "width": 4}
        resnet_image, resnet_batch = 8, 4
    lenet_points = _activation_paths(LeNet(image_size=image, **lenet_kwargs))
    depth = resnet_kwargs["depth"]
    blocks = 3 * ((depth - 2) // 6)
    return [
        Workload(
            "convnets",
            "lenet",
            f"LeNet-5 on {image}x{image}, batch {lenet_batch}",
            lambda: LeNet(image_size=image, **lenet_kwargs),
            lambda g: (
                (torch.randn(lenet_batch, 1, image, image, generator=g),),
                _classes(g, lenet_batch, 10),
            ),
            F.cross_entropy,
            {"": lenet_points},
            samples=lenet_batch,
        ),
        Workload(
            "convnets",
            f"resnet-{depth}",
            f"ResNet-{depth} (BatchNorm, width {resnet_kwargs['width']}) on "
            f"{resnet_image}x{resnet_image}, batch {resnet_batch}",
            lambda: ResNet(**resnet_kwargs),
            lambda g: (
                (torch.randn(resnet_batch, 3, resnet_image, resnet_image, generator=g),),
                _classes(g, resnet_batch, 10),
            ),
            F.cross_entropy,
            {"": ["relu", *[f"blocks.{i}" for i in range(blocks)]]},  # stem and block outputs
            samples=resnet_batch,
        ),
    ]


def _transformer(size: str) -> list[Workload]:
    from feedback_alignment.models.transformer import (
        CharTransformer,
        TransformerConfig,
        feedback_points,
    )

    if size == "full":
        config = TransformerConfig(65, block_size=64, n_layer=6, n_head=8, d_model=256)
        batch = 8
    else:
        config = TransformerConfig(11, block_size=8, n_layer=2, n_head=2, d_model=16)
        batch = 2
    probe = CharTransformer(config)
    tokens = config.block_size

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())  # (B*T, vocab)

    def make_batch(g: torch.Generator) -> tuple[tuple[Any, ...], torch.Tensor]:
        ids = torch.randint(0, config.vocab_size, (batch, tokens + 1), generator=g)
        return (ids[:, :-1],), ids[:, 1:]

    return [
        Workload(
            "transformer",
            f"transformer-{config.n_layer}x{config.d_model}",
            f"post-LN char Transformer {config.n_layer}x{config.d_model}, {config.n_head} heads, "
            f"{batch} x {tokens} tokens, error before the vocabulary projection",
            lambda: CharTransformer(config),
            make_batch,
            loss,
            {p: feedback_points(probe, p) for p in ("macro", "micro")},
            error_at="ln_f",
            samples=batch * tokens,
        )
    ]


def random_graph(
    nodes: int, features: int, edges: int, classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random graph with Cora's shape: sparse binary features, symmetric edges, a train mask.

    Returns ``(x (N, F), edge_index (2, E), labels (N,), train_mask (N,))``; 20 training nodes per
    class as in Cora's public split (Kipf & Welling 2017). The density of the features (1.27%) is
    Cora's: 18 ones per row of 1,433 on average.
    """
    x = (torch.rand(nodes, features, generator=generator) < 18 / 1433).float()
    half = edges // 2
    src = torch.randint(0, nodes, (half,), generator=generator)
    dst = torch.randint(0, nodes, (half,), generator=generator)
    edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])  # undirected
    labels = torch.randint(0, classes, (nodes,), generator=generator)
    train = torch.zeros(nodes, dtype=torch.bool)
    train[torch.randperm(nodes, generator=generator)[: min(nodes, 20 * classes)]] = True
    return x, edge_index, labels, train


def _gcn(size: str) -> list[Workload]:
    import importlib.util

    if importlib.util.find_spec("torch_geometric") is None:
        raise ImportError('gcn needs PyTorch Geometric: pip install -e ".[graphs]"')
    from feedback_alignment.models.gnn import build_gnn

    nodes, features, edges, classes = (2708, 1433, 10556, 7) if size == "full" else (50, 20, 200, 3)
    masks: dict[str, torch.Tensor] = {}

    def make_batch(g: torch.Generator) -> tuple[tuple[Any, ...], torch.Tensor]:
        x, edge_index, labels, train = random_graph(nodes, features, edges, classes, g)
        masks["train"] = train
        return (x, edge_index), labels

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        train = masks["train"].to(logits.device)
        return F.cross_entropy(logits[train], labels[train])

    return [
        Workload(
            "gcn",
            "gcn-cora",
            f"2-layer GCN, 16 hidden, random graph of {nodes:,} nodes, {features:,} features, "
            f"{edges:,} edges, {classes} classes (Cora's size)",
            lambda: build_gnn("gcn", features, classes, hidden=16),
            make_batch,
            loss,
            {"": ["act"]},
            samples=nodes,
        )
    ]


def _deepfm(size: str) -> list[Workload]:
    from feedback_alignment.models.recommender import DeepFM

    if size == "full":
        fields, batch = [100] * 13 + [2000] * 26, 2048  # 13 bucketised counts, 26 categories
        kwargs: dict[str, Any] = {"embed_dim": 10, "mlp_dims": (400, 400, 400)}
    else:
        fields, batch = [5] * 4, 8
        kwargs = {"embed_dim": 4, "mlp_dims": (8, 8)}
    probe = DeepFM(fields, **kwargs)

    def make_batch(g: torch.Generator) -> tuple[tuple[Any, ...], torch.Tensor]:
        x = torch.stack([torch.randint(0, d, (batch,), generator=g) for d in fields], dim=1)
        return (x,), torch.randint(0, 2, (batch,), generator=g).float()

    return [
        Workload(
            "deepfm",
            "deepfm",
            f"DeepFM, {len(fields)} fields, embeddings {kwargs['embed_dim']}, MLP "
            f"{'x'.join(map(str, kwargs['mlp_dims']))}, batch {batch}",
            lambda: DeepFM(fields, **kwargs),
            make_batch,
            F.binary_cross_entropy_with_logits,
            # a point on the embedding too: the FM term reads it around the MLP's points, so
            # without it the cut verification refuses the placement (see bypass_modules)
            {"": ["embedding", *probe.block_outputs()]},
            samples=batch,
            # the first-order term reads the input ids: it has no input gradient to transport
            layerwise_exclude=("linear",),
        )
    ]


def _nerf(size: str) -> list[Workload]:
    from feedback_alignment.models.nerf import NeRFConfig, NeRFRenderer, feedback_points

    if size == "full":
        config, rays = NeRFConfig(n_samples=32), 256
    else:
        config = NeRFConfig(depth=3, width=16, skips=(2,), view_width=8, pos_freqs=2, dir_freqs=1)
        config, rays = NeRFConfig(**{**asdict(config), "n_samples": 4}), 8

    def make_batch(g: torch.Generator) -> tuple[tuple[Any, ...], torch.Tensor]:
        origins = torch.randn(rays, 3, generator=g)
        origins = 4.0 * origins / origins.norm(dim=-1, keepdim=True)  # on a sphere of radius 4
        directions = -origins + 0.3 * torch.randn(rays, 3, generator=g)  # towards the centre
        return (origins, directions), torch.rand(rays, 3, generator=g)

    return [
        Workload(
            "nerf",
            f"nerf-{config.depth}x{config.width}",
            f"NeRF field {config.depth}x{config.width} (skip {list(config.skips)}), {rays} rays x "
            f"{config.n_samples} samples, error at the field's raw output",
            lambda: NeRFRenderer(config),
            make_batch,
            F.mse_loss,
            {"": feedback_points("field", config)},
            error_at="field",
            samples=rays * config.n_samples,
        )
    ]


_WORKLOADS: dict[str, Callable[[str], list[Workload]]] = {
    "mlp": _mlp,
    "convnets": _convnets,
    "transformer": _transformer,
    "gcn": _gcn,
    "deepfm": _deepfm,
    "nerf": _nerf,
}


def workloads(families: Sequence[str] = FAMILIES, size: str = "full") -> list[Workload]:
    """The workloads of ``families`` at ``size``; a family whose package is missing is skipped.

    Raises:
        ValueError: an unknown family or size.
    """
    unknown = [f for f in families if f not in _WORKLOADS]
    if unknown or size not in SIZES:
        raise ValueError(
            f"unknown families {unknown} or size {size!r}; families: {FAMILIES}, sizes: {SIZES}"
        )
    found: list[Workload] = []
    for family in families:
        try:
            found += _WORKLOADS[family](size)
        except ImportError as error:  # torch-geometric for gcn (the `graphs` extra)
            log.warning("benchmark family %s skipped: %s", family, error)
    return found


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """The profiler's C++ side prints a line at each start and stop straight to file descriptor
    2 (``USDT: ... profiler_start``); a piped log would be half of them. Python's ``sys.stderr``
    is unaffected; the descriptor is restored even if the block raises."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (an embedded interpreter): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# ---- the hand-written floor ---------------------------------------------------------------------


class _FloorCut(torch.autograd.Function):
    """Identity on ``y``; in backward, ``P = s(e) @ B`` once and a slice of ``P`` per point."""

    @staticmethod
    def forward(ctx, floor: _Floor, y: torch.Tensor, *hidden: torch.Tensor) -> torch.Tensor:
        ctx.floor, ctx.shapes = floor, [h.shape for h in hidden]
        return y.view_as(y)

    @staticmethod
    def backward(ctx, error: torch.Tensor):
        floor = ctx.floor
        flat = error.reshape(-1, floor.feedback.shape[0])  # (n, d_out)
        signal = floor.signal(flat)
        projected = signal @ floor.feedback  # (n, max width): the one projection
        rows, width = projected.shape
        grads = []
        for shape in ctx.shapes:
            own = math.prod(shape) // rows  # this point's width
            grads.append(
                projected.view(shape) if own == width else projected[:, :own].reshape(shape)
            )
        return (None, error, *grads)


class _Floor:
    """Cut and projection by hand on one model: hooks at the points and at the error site.

    ``signal`` is ``e -> e`` (DFA), ``e -> sign(e)/n`` (sign-DFA) or ``None`` (Shallow: cut only).
    The feedback matrix is drawn at the first forward pass, once the widths are known (one matrix
    of the widest point's width, which every point slices, the library's default layout).
    """

    def __init__(
        self,
        model: nn.Module,
        points: Sequence[str],
        error_at: str | None,
        signal: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> None:
        self.signal = signal
        self.records: list[torch.Tensor] = []
        self.feedback: torch.Tensor | None = None
        for path in points:
            model.get_submodule(path).register_forward_hook(self._at_point)
        if signal is not None:
            site = model if error_at is None else model.get_submodule(error_at)
            site.register_forward_hook(self._at_site)

    def _at_point(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if self.signal is not None:
            self.records.append(output)
        return output.detach()

    def _at_site(self, module: nn.Module, args: Any, y: torch.Tensor) -> torch.Tensor:
        hidden, self.records = self.records, []
        if self.feedback is None:
            rows = y.numel() // y.shape[-1] if y.dim() > 1 else y.numel()
            d_out = y.shape[-1] if y.dim() > 1 else 1
            width = max(h.numel() // rows for h in hidden)
            generator = torch.Generator().manual_seed(0)
            feedback = torch.randn(d_out, width, generator=generator) / math.sqrt(width * d_out)
            self.feedback = feedback.to(device=y.device, dtype=y.dtype)
        return _FloorCut.apply(self, y, *hidden)


def _dfa_signal(error: torch.Tensor) -> torch.Tensor:
    return error


def _sign_signal(error: torch.Tensor) -> torch.Tensor:
    return torch.sign(error) / error.shape[0]


FLOOR_SIGNALS: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "DFA": _dfa_signal,
    "sign-DFA": _sign_signal,
    "Shallow": None,
}


# ---- variants and steps -------------------------------------------------------------------------


@dataclass
class Row:
    """One variant's measurements. Ratios are ``{"ratio", "low", "high"}`` (95% bootstrap CI)."""

    rule: str
    placement: str
    kind: str  # "bp", "library", "floor" or "compiled" (a bp or library row under torch.compile)
    status: str = "ok"  # or "unsupported" (with the reason in note)
    note: str = ""
    median_ms: float = math.nan
    q25_ms: float = math.nan
    q75_ms: float = math.nan
    peak_mib: float = math.nan
    time_vs_bp: dict[str, float] | None = None
    time_vs_floor: dict[str, float] | None = None
    memory_vs_bp: float = math.nan
    time_vs_compiled_bp: dict[str, float] | None = None  # compiled rows: against compiled BP


@dataclass
class WorkloadResult:
    family: str
    name: str
    description: str
    samples: int
    rounds: int
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0


COMPILED = "compiled"
"""The note of a compiled twin row (``torch.compile`` with the default backend)."""


def _step(
    model: nn.Module,
    inputs: tuple[Any, ...],
    target: torch.Tensor,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
    backend: str | None = None,
) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    forward = model if backend is None else torch.compile(model, backend=backend)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(forward(*inputs), target).backward()
        optimizer.step()

    return step


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _variants(
    workload: Workload,
    rules: Sequence[str],
    device: torch.device,
    seed: int,
    compile: str | None = None,
) -> tuple[list[Row], dict[int, Callable[[], None]]]:
    """Every row of a workload and the step of each runnable one (keyed by row index).

    ``compile``: a ``torch.compile`` backend (``"inductor"``, the default one); every BP and
    library row then gets a twin (kind ``"compiled"``) whose model is
    ``torch.compile(model, backend=compile)``; the optimizer steps the same parameters.
    Compilation happens at the twin's first (untimed) step."""
    generator = torch.Generator().manual_seed(seed)
    inputs, target = workload.batch(generator)
    inputs = tuple(_to(v, device) for v in inputs)
    target = target.to(device)

    def fresh() -> nn.Module:
        torch.manual_seed(seed)  # every variant starts from the same weights
        return workload.build().to(device).train()

    def converted(name: str, points: list[str]) -> tuple[nn.Module, str]:
        model = fresh()
        rule = RULES[name](seed=0)
        note = ""
        if name in DIRECT_RULES:
            rule.apply(model, points=points, error_at=workload.error_at)
        elif workload.layerwise_exclude and name != "BP":
            rule.apply(model, exclude=workload.layerwise_exclude)
            note = f"exclude={list(workload.layerwise_exclude)}"
        else:
            rule.apply(model)
        return model, note

    rows: list[Row] = []
    steps: dict[int, Callable[[], None]] = {}
    for name in rules:
        placements = workload.placements if name in DIRECT_RULES else {"": []}
        for placement, points in placements.items():
            kind = "bp" if name == "BP" else "library"
            row = Row(name, placement, kind)
            try:
                model, row.note = converted(name, points)
            except UnsupportedLayerError as error:
                row.status, row.note = "unsupported", _unsupported_note(error)
                rows.append(row)
                continue
            steps[len(rows)] = _step(model, inputs, target, workload.loss)
            rows.append(row)
            if compile:
                model, note = converted(name, points)
                label = COMPILED if compile == "inductor" else f"{COMPILED}, {compile}"
                twin = Row(name, placement, "compiled", note=", ".join(filter(None, [note, label])))
                steps[len(rows)] = _step(model, inputs, target, workload.loss, backend=compile)
                rows.append(twin)
            if name in DIRECT_RULES:
                model = fresh()
                _Floor(model, points, workload.error_at, FLOOR_SIGNALS[name])
                steps[len(rows)] = _step(model, inputs, target, workload.loss)
                rows.append(Row(name + FLOOR_SUFFIX, placement, "floor"))
    return rows, steps


def _unsupported_note(error: UnsupportedLayerError) -> str:
    """``"unsupported: 'conv1' (GCNConv) and 3 more"`` from the rule's refusal message."""
    problems = [line.strip()[2:] for line in str(error).splitlines()[1:]]
    if not problems:
        return f"unsupported: {error}"
    first = problems[0].split(" holds", 1)[0].split(" is ", 1)[0]
    more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
    return f"unsupported: {first}{more}"


# ---- measurement --------------------------------------------------------------------------------


def peak_step_memory(step: Callable[[], None], device: torch.device) -> float:
    """Peak bytes (MiB) held by tensors allocated during one call of ``step``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with (
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def ratio_interval(
    numerator: np.ndarray,
    denominator: np.ndarray,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """``median(numerator) / median(denominator)`` with a paired bootstrap interval.

    Round ``r`` of both arrays was measured in the same round, so rounds are resampled together:
    the interval reflects the noise that the interleaving does not remove.
    """
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(numerator), size=(resamples, len(numerator)))
    ratios = np.median(numerator[index], axis=1) / np.median(denominator[index], axis=1)
    tail = (1.0 - level) / 2
    return {
        "ratio": float(np.median(numerator) / np.median(denominator)),
        "low": float(np.quantile(ratios, tail)),
        "high": float(np.quantile(ratios, 1.0 - tail)),
    }


def run_workload(
    workload: Workload,
    rules: Sequence[str] = tuple(RULES),
    *,
    rounds: int = 30,
    warmup: int = 3,
    device: str = "cpu",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    compile: str | None = None,
) -> WorkloadResult:
    """Times and measures every variant of one workload (see the module doc); ``compile`` adds a
    ``torch.compile``d twin of every BP and library row (see :func:`_variants`)."""
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2 for an interquartile range, got {rounds}")
    if "BP" not in rules:
        raise ValueError("rules must include BP: every ratio is against BP")
    start = time.perf_counter()
    dev = torch.device(device)
    rows, steps = _variants(workload, rules, dev, seed, compile)
    order = list(steps)
    if progress is not None:
        progress(f"bench {workload.name}: {len(order)} variants x {rounds} rounds")
    with warnings.catch_warnings():
        # a point narrower than the output (tiny sizes) warns about alignment, not about speed
        warnings.filterwarnings("ignore", message="feedback points .* are narrower")
        for i in list(order):  # the first forward fixes each rule's feedback layout
            if rows[i].kind != "compiled":
                steps[i]()
                continue
            begin = time.perf_counter()
            try:
                steps[i]()  # compiles
            except Exception as error:  # recorded in the table: one row failing is not fatal
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                rows[i].status = "unsupported"
                rows[i].note = f"torch.compile failed: {type(error).__name__}: {first[:120]}"
                order.remove(i)
                continue
            rows[i].note += f", {time.perf_counter() - begin:.0f} s to compile"
    for _ in range(warmup):
        for i in order:
            steps[i]()
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    times = {i: np.empty(rounds) for i in order}
    for r in range(rounds):
        shift = r % len(order)
        for i in order[shift:] + order[:shift]:
            sync()
            begin = time.perf_counter()
            steps[i]()
            sync()
            times[i][r] = (time.perf_counter() - begin) * 1e3
    for i in order:
        q25, median, q75 = np.quantile(times[i], [0.25, 0.5, 0.75])
        rows[i].median_ms, rows[i].q25_ms, rows[i].q75_ms = float(median), float(q25), float(q75)
        rows[i].peak_mib = peak_step_memory(steps[i], dev)
    bp = next(i for i, row in enumerate(rows) if row.kind == "bp")
    compiled_bp = next(
        (i for i, row in enumerate(rows) if row.kind == "compiled" and row.rule == "BP"), None
    )
    for i in order:
        rows[i].time_vs_bp = ratio_interval(times[i], times[bp], seed=seed)
        if rows[i].kind == "compiled" and compiled_bp in times:
            rows[i].time_vs_compiled_bp = ratio_interval(times[i], times[compiled_bp], seed=seed)
        if rows[bp].peak_mib > 0:
            rows[i].memory_vs_bp = rows[i].peak_mib / rows[bp].peak_mib
        if rows[i].kind == "library" and i + 1 in times and rows[i + 1].kind == "floor":
            rows[i].time_vs_floor = ratio_interval(times[i], times[i + 1], seed=seed)
    result = WorkloadResult(
        workload.family, workload.name, workload.description, workload.samples, rounds, rows
    )
    result.seconds = time.perf_counter() - start
    if progress is not None:
        progress(f"bench {workload.name}: done in {result.seconds:.0f} s")
    return result


def machine_description(device: str = "cpu") -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": _processor_name(),
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _processor_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# ---- output -------------------------------------------------------------------------------------


def _ratio_text(ratio: dict[str, float] | None) -> str:
    if ratio is None:
        return ""
    return f"{ratio['ratio']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}]"


def to_markdown(results: Sequence[WorkloadResult], machine: dict[str, Any]) -> str:
    """One table per workload: medians, IQR, ratios with their 95% intervals, peak memory."""
    load = machine.get("load_average")
    lines = [
        f"Machine: {machine['processor']}, {machine['cpus']} CPUs, {machine['threads']} torch "
        f"threads, torch {machine['torch']}, device {machine['device']}"
        f"{', ' + str(machine['gpu']) if 'gpu' in machine else ''}; {machine['date']}"
        f"{f'; load average {load[0]:.2f} at the start' if load else ''}.",
    ]
    for result in results:
        compiled = any(row.kind == "compiled" for row in result.rows)
        extra = " vs compiled BP [95% CI] |" if compiled else ""
        lines += [
            "",
            f"**{result.name}** ({result.family}): {result.description}; {result.rounds} rounds.",
            "",
            "| rule | points | median step (ms) | IQR (ms) | vs BP [95% CI] | vs floor [95% CI] "
            f"| peak MiB | memory vs BP |{extra}",
            "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if compiled else ""),
        ]
        for row in result.rows:
            if row.status != "ok":
                blank = " | | | | | |" + (" |" if compiled else "")
                lines.append(f"| {row.rule} | {row.placement} | {row.note}{blank}")
                continue
            rule = f"{row.rule} ({row.note})" if row.note else row.rule
            lines.append(
                f"| {rule} | {row.placement} | {row.median_ms:.2f} | "
                f"{row.q25_ms:.2f}-{row.q75_ms:.2f} | {_ratio_text(row.time_vs_bp)} | "
                f"{_ratio_text(row.time_vs_floor)} | {row.peak_mib:.1f} | {row.memory_vs_bp:.2f}x |"
                + (f" {_ratio_text(row.time_vs_compiled_bp)} |" if compiled else "")
            )
    return "\n".join(lines)


def plot(results: Sequence[WorkloadResult], path: Path) -> None:
    """Step time vs BP per workload (bars, 95% intervals); floors hatched beside their rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(results), 1, figsize=(10, 2.6 * len(results)), squeeze=False, constrained_layout=True
    )
    for ax, result in zip(axes[:, 0], results, strict=True):
        rows = [r for r in result.rows if r.status == "ok" and r.time_vs_bp is not None]
        labels = [f"{r.rule} {r.placement}".strip() for r in rows]
        ratios = [r.time_vs_bp["ratio"] for r in rows]
        errors = [
            [r.time_vs_bp["ratio"] - r.time_vs_bp["low"] for r in rows],
            [r.time_vs_bp["high"] - r.time_vs_bp["ratio"] for r in rows],
        ]
        palette = {"bp": "0.6", "library": "C0", "floor": "C1", "compiled": "C2"}
        colours = [palette.get(r.kind, "C0") for r in rows]
        bars = ax.bar(range(len(rows)), ratios, yerr=errors, color=colours, capsize=2)
        for bar, row in zip(bars, rows, strict=True):
            if row.kind == "floor":
                bar.set_hatch("//")
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("step time / BP")
        ax.set_title(f"{result.name}: {result.description}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_results(
    results: Sequence[WorkloadResult], machine: dict[str, Any], settings: dict[str, Any], out: Path
) -> None:
    """Writes ``out`` (JSON, NaN as null) atomically, and the markdown table beside it (``.md``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine,
        "settings": settings,
        "workloads": [asdict(r) for r in results],
    }
    for path, text in (
        (out, json.dumps(_json_safe(payload), indent=2)),
        (out.with_suffix(".md"), to_markdown(results, machine) + "\n"),
    ):
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_text(text)
        os.replace(temporary, path)


def load_results(path: Path) -> tuple[list[WorkloadResult], dict[str, Any]]:
    """Reads a JSON written by :func:`write_results` back (``null`` is NaN again): the committed
    results under docs/ are re-rendered from it (``to_markdown(*load_results(path))``)."""
    payload = json.loads(Path(path).read_text())

    def number(value: Any) -> float:
        return math.nan if value is None else value

    results = []
    for workload in payload["workloads"]:
        rows = [
            Row(
                **{
                    k: (
                        number(v)
                        if k in ("median_ms", "q25_ms", "q75_ms", "peak_mib", "memory_vs_bp")
                        else v
                    )
                    for k, v in row.items()
                }
            )
            for row in workload["rows"]
        ]
        results.append(WorkloadResult(**{**workload, "rows": rows}))
    return results, payload["machine"]


def run(
    families: Sequence[str] = FAMILIES,
    rules: Sequence[str] = tuple(RULES),
    *,
    size: str = "full",
    rounds: int = 30,
    warmup: int = 3,
    device: str = "cpu",
    seed: int = 0,
    output: Path | None = None,
    plot_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    compile: str | None = None,
) -> tuple[list[WorkloadResult], dict[str, Any]]:
    """Runs every workload of ``families``; rewrites ``output`` after each, so none is lost."""
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise ValueError(f"unknown rules {unknown}; choose from {list(RULES)}")
    machine = machine_description(device)
    settings = {
        "families": list(families),
        "rules": list(rules),
        "size": size,
        "rounds": rounds,
        "warmup": warmup,
        "seed": seed,
        "step": f"zero_grad, forward, loss, backward, SGD(lr={LR}, weight_decay={WEIGHT_DECAY})",
        "interval": "95% paired bootstrap over rounds, 2000 resamples",
    }
    if compile:
        settings["compile"] = f"torch.compile(model, backend={compile!r}), a twin per BP/rule row"
    results: list[WorkloadResult] = []
    for workload in workloads(families, size):
        results.append(
            run_workload(
                workload,
                rules,
                rounds=rounds,
                warmup=warmup,
                device=device,
                seed=seed,
                progress=progress,
                compile=compile,
            )
        )
        if output is not None:
            write_results(results, machine, settings, output)
    if plot_path is not None and results:
        plot(results, plot_path)
    return results, machine
