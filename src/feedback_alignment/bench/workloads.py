"""The benchmark's workloads: one realistic model, batch and loss per family (see
:mod:`feedback_alignment.bench`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.models import MLP, LeNet, ResNet

log = logging.getLogger(__name__)


SIZES = ("full", "tiny")
FAMILIES = ("mlp", "convnets", "transformer", "gcn", "deepfm", "nerf")


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
