"""Foreign models for the zoo, each built by the library it comes from, tiny and in float64.

A :class:`Case` holds a builder (``build(seed) -> model``), one fixed batch and the training step
(``run(model) -> loss``), the placements to test (the automatic one the issue expects, and
explicit block points) and what the reference needs to know about the model (where ``y`` is
taken, which points are seq-first). Nothing is downloaded: Hugging Face models come from small
configs, PyG and torchfm models from their constructors, on random tiny inputs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

FEATURES, TOKENS, WIDTH, CLASSES, BATCH = 3, 5, 8, 3, 4
FIELDS = (4, 6, 3, 5)


@dataclass(frozen=True)
class Case:
    """One zoo model.

    Attributes:
        name: test id.
        library: the module the model comes from (the case is skipped when it is missing).
        build: ``build(seed)`` returns a fresh float64 model initialised from ``seed``.
        run: one forward pass and loss on the case's fixed batch: ``run(model) -> loss``.
        blocks: explicit block points (module paths).
        auto: the automatic points the issue expects (``rule.points``), or ``None``.
        apply: extra keyword arguments of ``rule.apply`` (``output=``, ``output_activation=``).
        error_site: module whose output is ``y`` for the reference (``""``: the model's output).
        point_axes: first batch axis of a point's tensor, by path (seq-first modules: 1).
        refuse_auto: regex the ``PlacementError`` of the automatic placement must match, when that
            placement cannot be cut (a branch bypasses the points).
        batch, loss_fn: the same step as ``(inputs, targets)`` and ``loss_fn(output, targets)``,
            for ``fa.alignment`` (``None`` where ``run`` is the only form).
    """

    name: str
    library: str
    build: Callable[[int], nn.Module]
    run: Callable[[nn.Module], torch.Tensor]
    blocks: tuple[str, ...]
    auto: tuple[str, ...] | None
    apply: dict[str, Any] = field(default_factory=dict)
    error_site: str = ""
    point_axes: dict[str, int] = field(default_factory=dict)
    refuse_auto: str | None = None
    batch: tuple[Any, Any] | None = None
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None

    @property
    def available(self) -> bool:
        return importlib.util.find_spec(self.library) is not None


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sequences(tokens: int = TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    g = _generator(1)
    x = torch.randn(BATCH, tokens, FEATURES, generator=g, dtype=torch.float64)
    return x, torch.randint(0, CLASSES, (BATCH,), generator=g)


def _images(channels: int = 2, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = _generator(2)
    x = torch.randn(BATCH, channels, size, size, generator=g, dtype=torch.float64)
    return x, torch.randint(0, CLASSES, (BATCH,), generator=g)


def _classified(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """``run``, ``batch`` and ``loss_fn`` of a classifier trained with cross-entropy."""
    x, y = batch
    return {
        "run": lambda model: F.cross_entropy(model(x), y),
        "batch": batch,
        "loss_fn": F.cross_entropy,
    }


# --- torch.nn --------------------------------------------------------------------------------


class EncoderClassifier(nn.Module):
    """``nn.TransformerEncoder`` (batch-first or seq-first) between a linear embedding and a head."""

    def __init__(self, batch_first: bool, activation: type[nn.Module]) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.embed = nn.Linear(FEATURES, WIDTH)
        layer = nn.TransformerEncoderLayer(
            WIDTH, 2, 16, dropout=0.0, activation=activation(), batch_first=batch_first
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, F)
        h = self.embed(x)
        if not self.batch_first:
            h = h.transpose(0, 1)
        h = self.encoder(h)
        return self.head(h.mean(1 if self.batch_first else 0))


class RecurrentClassifier(nn.Module):
    """A linear+tanh input layer, one LSTM or GRU, a head on the last output or on ``h_n``."""

    def __init__(self, cell: type[nn.Module], batch_first: bool, head_on: str) -> None:
        super().__init__()
        self.batch_first, self.head_on = batch_first, head_on
        self.proj = nn.Linear(FEATURES, WIDTH)
        self.act = nn.Tanh()
        self.rnn = cell(WIDTH, WIDTH, batch_first=batch_first)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, F)
        h = self.act(self.proj(x))
        if not self.batch_first:
            h = h.transpose(0, 1)
        out, state = self.rnn(h)
        if self.head_on == "state":
            h_n = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n)
            return self.head(h_n[-1])
        return self.head(out[:, -1] if self.batch_first else out[-1])


class Attention(nn.Module):
    """timm-style multi-head self-attention: one ``qkv`` projection, SDPA, an output ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """timm's ``Mlp``: ``fc1 -> nn.GELU -> fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """timm's pre-norm ViT block: ``x = x + attn(norm1(x)); x = x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """Patches -> linear embedding + position -> ``blocks`` (a ``ModuleList``) -> norm -> head."""

    def __init__(self, channels: int = 2, size: int = 8, patch: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.patch = patch
        self.patch_embed = nn.Linear(channels * patch * patch, WIDTH)
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, (size // patch) ** 2, WIDTH))
        self.blocks = nn.ModuleList([Block(WIDTH, 2) for _ in range(depth)])
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        patches = F.unfold(x, self.patch, stride=self.patch).transpose(1, 2)
        h = self.patch_embed(patches) + self.pos_embed
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h).mean(1))


def _seeded(make: Callable[[], nn.Module]) -> Callable[[int], nn.Module]:
    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return make().double()

    return build


def _torch_cases() -> list[Case]:
    cases = []
    for batch_first in (True, False):
        for act in (nn.ReLU, nn.GELU):
            layers = ("encoder.layers.0", "encoder.layers.1")
            cases.append(
                Case(
                    name=f"encoder-{'bf' if batch_first else 'sf'}-{act.__name__.lower()}",
                    library="torch",
                    build=_seeded(lambda bf=batch_first, a=act: EncoderClassifier(bf, a)),
                    **_classified(_sequences()),
                    blocks=layers,
                    auto=layers,
                    point_axes={} if batch_first else dict.fromkeys(layers, 1),
                )
            )
    for cell in (nn.LSTM, nn.GRU):
        for batch_first in (True, False):
            for head_on in ("sequence", "state"):
                cases.append(
                    Case(
                        name=f"{cell.__name__.lower()}-{'bf' if batch_first else 'sf'}-{head_on}",
                        library="torch",
                        build=_seeded(
                            lambda c=cell, bf=batch_first, h=head_on: RecurrentClassifier(c, bf, h)
                        ),
                        **_classified(_sequences()),
                        blocks=("proj", "rnn"),
                        auto=("act", "rnn"),
                        point_axes={} if batch_first else {"rnn": 1},
                    )
                )
    # seq-first with as many tokens as samples: shapes alone cannot tell the batch axis
    layers = ("encoder.layers.0", "encoder.layers.1")
    cases.append(
        Case(
            name="encoder-sf-square",
            library="torch",
            build=_seeded(lambda: EncoderClassifier(False, nn.ReLU)),
            **_classified(_sequences(BATCH)),
            blocks=layers,
            auto=layers,
            point_axes=dict.fromkeys(layers, 1),
        )
    )
    cases.append(
        Case(
            name="lstm-sf-square",
            library="torch",
            build=_seeded(lambda: RecurrentClassifier(nn.LSTM, False, "state")),
            **_classified(_sequences(BATCH)),
            blocks=("proj", "rnn"),
            auto=("act", "rnn"),
            point_axes={"rnn": 1},
        )
    )
    cases.append(
        Case(
            name="vit-timm-style",
            library="torch",
            build=_seeded(TinyViT),
            **_classified(_images()),
            blocks=("blocks.0", "blocks.1"),
            auto=("blocks.0", "blocks.1"),
        )
    )

    def pixels() -> nn.Module:
        return nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, CLASSES, 1),
        )

    images, _ = _images()
    pixel_targets = torch.randint(0, CLASSES, (BATCH, 8, 8), generator=_generator(6))
    cases.append(
        Case(
            name="conv-map-per-sample",  # y is (B, C, H, W): batch_axes=0, d_out = C*H*W
            library="torch",
            build=_seeded(pixels),
            run=lambda model: F.cross_entropy(model(images), pixel_targets),
            blocks=("0", "2"),
            auto=("1", "3"),
            apply={"batch_axes": 0},
        )
    )

    def resnet() -> nn.Module:
        from feedback_alignment.models import ResNet

        return ResNet(depth=8, in_channels=2, num_classes=CLASSES, width=4)

    cases.append(
        Case(
            name="resnet-batchnorm",
            library="torch",
            build=_seeded(resnet),
            **_classified(_images()),
            blocks=("blocks.0", "blocks.1", "blocks.2"),
            auto=("relu", "blocks.0", "blocks.1", "blocks.2"),
        )
    )
    return cases


# --- Hugging Face ----------------------------------------------------------------------------

VOCAB = 11


def _gpt2() -> nn.Module:
    import transformers

    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=TOKENS,
        n_embd=WIDTH,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        use_cache=False,
    )
    return transformers.GPT2LMHeadModel(config)


def _bert() -> nn.Module:
    import transformers

    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=TOKENS,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=CLASSES,
        problem_type="single_label_classification",
    )
    return transformers.BertForSequenceClassification(config)


def _vit() -> nn.Module:
    import transformers

    config = transformers.ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=2,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=CLASSES,
        problem_type="single_label_classification",
    )
    return transformers.ViTForImageClassification(config)


def _tokens() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = _generator(3)
    ids = torch.randint(0, VOCAB, (BATCH, TOKENS), generator=g)
    return ids, torch.randint(0, VOCAB, (BATCH, TOKENS), generator=g), ids[:, 0] % CLASSES


def _hf_cases() -> list[Case]:
    ids, next_ids, classes = _tokens()
    images, image_classes = _images()
    lm = ("transformer.h.0", "transformer.h.1")
    bert = ("bert.encoder.layer.0", "bert.encoder.layer.1")
    vit = ("vit.encoder.layer.0", "vit.encoder.layer.1")

    def lm_loss(model: nn.Module) -> torch.Tensor:
        logits = model(ids).logits
        return F.cross_entropy(logits.reshape(-1, VOCAB), next_ids.reshape(-1))

    common = dict(library="transformers", apply={"output": "logits"})
    return [
        Case(
            name="hf-gpt2-labels",
            build=_seeded(_gpt2),
            run=lambda model: model(ids, labels=ids).loss,
            blocks=lm,
            auto=lm,
            error_site="lm_head",
            **common,
        ),
        Case(
            name="hf-gpt2",
            build=_seeded(_gpt2),
            run=lm_loss,
            batch=(ids, next_ids),
            loss_fn=lambda out, t: F.cross_entropy(out.logits.reshape(-1, VOCAB), t.reshape(-1)),
            blocks=lm,
            auto=lm,
            error_site="lm_head",
            **common,
        ),
        Case(
            name="hf-bert-labels",
            build=_seeded(_bert),
            run=lambda model: model(ids, labels=classes).loss,
            blocks=bert,
            auto=(*bert, "bert.pooler.activation"),
            error_site="classifier",
            **common,
        ),
        Case(
            name="hf-bert",
            build=_seeded(_bert),
            run=lambda model: F.cross_entropy(model(ids).logits, classes),
            batch=(ids, classes),
            loss_fn=lambda out, t: F.cross_entropy(out.logits, t),
            blocks=bert,
            auto=(*bert, "bert.pooler.activation"),
            error_site="classifier",
            **common,
        ),
        Case(
            name="hf-vit-labels",
            build=_seeded(_vit),
            run=lambda model: model(images, labels=image_classes).loss,
            blocks=vit,
            auto=vit,
            error_site="classifier",
            **common,
        ),
        Case(
            name="hf-vit",
            build=_seeded(_vit),
            run=lambda model: F.cross_entropy(model(images).logits, image_classes),
            batch=(images, image_classes),
            loss_fn=lambda out, t: F.cross_entropy(out.logits, t),
            blocks=vit,
            auto=vit,
            error_site="classifier",
            **common,
        ),
    ]


# --- PyTorch Geometric -----------------------------------------------------------------------


def _graph() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """6 nodes on an undirected path plus a chord, 5 features, 4 labelled nodes."""
    src = [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 0, 3]
    dst = [1, 0, 2, 1, 3, 2, 4, 3, 5, 4, 3, 0]
    g = _generator(4)
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    mask = torch.tensor([True, True, False, True, True, False])
    return x, torch.tensor([src, dst]), y, mask


def _pyg_cases() -> list[Case]:
    x, edges, y, mask = _graph()

    def run(model: nn.Module) -> torch.Tensor:
        return F.cross_entropy(model(x, edges)[mask], y[mask])

    def gnn(kind: str) -> Callable[[], nn.Module]:
        def make() -> nn.Module:
            from torch_geometric.nn import models

            kwargs = {"heads": 2} if kind == "GAT" else {}
            return getattr(models, kind)(5, WIDTH, num_layers=3, out_channels=CLASSES, **kwargs)

        return make

    return [
        Case(
            name=f"pyg-{kind.lower()}",
            library="torch_geometric",
            build=_seeded(gnn(kind)),
            run=run,
            batch=((x, edges), (y, mask)),
            loss_fn=lambda out, t: F.cross_entropy(out[t[1]], t[0][t[1]]),
            blocks=("convs.0", "convs.1"),
            auto=("act",),
        )
        for kind in ("GraphSAGE", "GIN", "GAT")
    ]


# --- torchfm ---------------------------------------------------------------------------------

FORK = r"embedding\.embedding"
"""The automatic placement of DeepFM, AutoInt and xDeepFM leaves a branch (FM, the residual
projection, CIN) that reaches the embedding around the points: the refusal must name it."""


def _clicks() -> tuple[torch.Tensor, torch.Tensor]:
    g = _generator(5)
    x = torch.stack([torch.randint(0, d, (12,), generator=g) for d in FIELDS], dim=1)
    return x, torch.randint(0, 2, (12,), generator=g).double()


def _torchfm_cases() -> list[Case]:
    x, t = _clicks()

    def run(model: nn.Module) -> torch.Tensor:
        return F.binary_cross_entropy(model(x), t)

    def deepfm() -> nn.Module:
        from torchfm.model.dfm import DeepFactorizationMachineModel

        return DeepFactorizationMachineModel(FIELDS, embed_dim=3, mlp_dims=(8, 6), dropout=0.0)

    def autoint() -> nn.Module:
        from torchfm.model.afi import AutomaticFeatureInteractionModel

        return AutomaticFeatureInteractionModel(
            FIELDS, 4, 4, num_heads=2, num_layers=2, mlp_dims=(6,), dropouts=(0.0, 0.0)
        )

    def afn() -> nn.Module:
        from torchfm.model.afn import AdaptiveFactorizationNetwork

        return AdaptiveFactorizationNetwork(FIELDS, 3, 4, mlp_dims=(8, 6), dropouts=(0.0, 0.0))

    def xdeepfm() -> nn.Module:
        from torchfm.model.xdfm import ExtremeDeepFactorizationMachineModel

        return ExtremeDeepFactorizationMachineModel(
            FIELDS, 3, mlp_dims=(8,), dropout=0.0, cross_layer_sizes=(4, 4)
        )

    common = dict(
        library="torchfm",
        run=run,
        batch=(x, t),
        loss_fn=F.binary_cross_entropy,
        apply={"output_activation": "sigmoid"},
    )
    attention = ("self_attns.0", "self_attns.1")
    return [
        Case(
            name="torchfm-deepfm",
            build=_seeded(deepfm),
            blocks=("embedding", "mlp.mlp.2", "mlp.mlp.6"),
            auto=("mlp.mlp.2", "mlp.mlp.6"),
            refuse_auto=FORK,
            **common,
        ),
        Case(
            name="torchfm-autoint",
            build=_seeded(autoint),
            blocks=("embedding", *attention),
            auto=(*attention, "mlp.mlp.2"),
            point_axes=dict.fromkeys(attention, 1),
            refuse_auto=FORK,
            **common,
        ),
        Case(
            name="torchfm-afn",
            build=_seeded(afn),
            blocks=("LNN", "mlp.mlp.2", "mlp.mlp.6"),
            auto=("mlp.mlp.2", "mlp.mlp.6"),
            **common,
        ),
        Case(
            name="torchfm-xdeepfm",
            build=_seeded(xdeepfm),
            blocks=("embedding", "mlp.mlp.2"),
            auto=("mlp.mlp.2",),
            refuse_auto=FORK,
            **common,
        ),
    ]


CASES: dict[str, Case] = {
    case.name: case for case in (*_torch_cases(), *_hf_cases(), *_pyg_cases(), *_torchfm_cases())
}
"""Every zoo model, by test id."""


def _variants() -> dict[str, Case]:
    """Zoo models with other explicit points (tested with those points only)."""
    gpt2_inputs = ("transformer.h.0.ln_2:input", "transformer.h.1.ln_2:input")
    norms = ("encoder.layers.0.norm2", "encoder.layers.1.norm2")  # post-norm: the layer output
    seq_first = dict.fromkeys(norms, 1)
    variants = [
        # GPT-2's inline residual (``residual = hidden_states``) must read the cut tensor too
        replace(CASES["hf-gpt2"], name="hf-gpt2-input-points", blocks=gpt2_inputs, auto=None),
        replace(CASES["hf-gpt2-labels"], name="hf-gpt2-labels-input-points", blocks=gpt2_inputs),
        # a point module without ``batch_first`` in a seq-first model: point_batch_axes= says so
        replace(
            CASES["encoder-sf-relu"],
            name="encoder-sf-norm-points",
            blocks=norms,
            apply={"point_batch_axes": seq_first},
            point_axes=seq_first,
        ),
        replace(
            CASES["encoder-sf-square"],
            name="encoder-sf-square-norm-points",
            blocks=norms,
            apply={"point_batch_axes": seq_first},
            point_axes=seq_first,
        ),
        # pixels as samples: y (B, C, H, W) and the points (B, 4, H, W) at axes (0, 2, 3)
        replace(
            CASES["conv-map-per-sample"],
            name="conv-map-per-pixel",
            blocks=("1", "3"),
            apply={"batch_axes": (0, 2, 3), "point_batch_axes": dict.fromkeys("13", (0, 2, 3))},
            point_axes=dict.fromkeys("13", (0, 2, 3)),
        ),
    ]
    # hybrids: the branch that bypasses the points (FM, the residual projection, CIN) gives the
    # embedding its true gradient on purpose, on top of the feedback through the points
    for name in ("torchfm-deepfm", "torchfm-autoint", "torchfm-xdeepfm"):
        case = CASES[name]
        variants.append(
            replace(
                case,
                name=f"{name}-hybrid",
                blocks=case.auto,
                apply={**case.apply, "true_gradient": ["embedding"]},
                refuse_auto=None,
            )
        )
    return {case.name: replace(case, auto=None) for case in variants}


VARIANTS: dict[str, Case] = _variants()
"""Zoo models with other explicit points, by test id."""
