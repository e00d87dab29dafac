"""Click-through-rate models: FM, DeepFM, Deep & Cross and AutoInt, returning logits.

They follow the architectures of ``torchfm`` (the implementations Launay et al. 2020 used) layer
for layer, with three differences that make them convenient for direct feedback:

* they return the **logit** ``(batch,)``, not ``sigmoid(logit)``: the loss is
  ``binary_cross_entropy_with_logits`` and the error ``e = dL/dlogit = (p - y) / n`` is the one the
  paper's DFA output layer saw (it wrapped the pre-sigmoid score);
* every place where the paper put a feedback point is the output of a named module (a ReLU is an
  ``nn.ReLU``, a cross layer a module, attention is ``batch_first``), listed by
  :meth:`CTRModel.block_outputs`, so a rule can be applied with ``points=model.block_outputs()``;
* the index offsets of the fields are a non-persistent buffer (not a NumPy array).

Inputs are ``x`` int64 ``(batch, fields)`` with ``x[:, f] < field_dims[f]`` (one shared embedding
table, field ``f`` offset by ``sum(field_dims[:f])``).

References:
    Rendle, "Factorization Machines", ICDM 2010.
    Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction", IJCAI 2017.
    Wang et al., "Deep & Cross Network for Ad Click Predictions", ADKDD 2017.
    Song et al., "AutoInt: Automatic Feature Interaction Learning via Self-Attentive Neural
    Networks", CIKM 2019.
    Launay et al., "Direct Feedback Alignment Scales to Modern Deep Learning Tasks and
    Architectures", NeurIPS 2020, section 3.2; ``torchfm`` by rixwew (MIT).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

RECOMMENDER_KINDS: tuple[str, ...] = ("fm", "deepfm", "dcn", "autoint")


def _check_fields(field_dims: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(d) for d in field_dims)
    if not dims or min(dims) < 1:
        raise ValueError(f"field_dims must be positive vocabulary sizes, got {field_dims}")
    return dims


class FeaturesEmbedding(nn.Module):
    """One embedding table for all fields: ``(batch, fields) -> (batch, fields, dim)``."""

    def __init__(self, field_dims: Sequence[int], dim: int) -> None:
        super().__init__()
        dims = _check_fields(field_dims)
        self.embedding = nn.Embedding(sum(dims), dim)
        nn.init.xavier_uniform_(self.embedding.weight)
        offsets = torch.tensor((0, *torch.tensor(dims).cumsum(0)[:-1].tolist()), dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x + self.offsets)


class FeaturesLinear(nn.Module):
    """The first-order term ``sum_f w[x_f] + b``: ``(batch, fields) -> (batch,)``."""

    def __init__(self, field_dims: Sequence[int]) -> None:
        super().__init__()
        dims = _check_fields(field_dims)
        self.fc = nn.Embedding(sum(dims), 1)
        self.bias = nn.Parameter(torch.zeros(1))
        offsets = torch.tensor((0, *torch.tensor(dims).cumsum(0)[:-1].tolist()), dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x + self.offsets).sum(dim=(1, 2)) + self.bias


def fm_interaction(v: torch.Tensor) -> torch.Tensor:
    """Second-order FM term ``sum_{i<j} <v_i, v_j>`` of ``v`` ``(batch, fields, dim)``: ``(batch,)``.

    Computed as ``((sum_i v_i)^2 - sum_i v_i^2) / 2`` summed over the embedding dimension.
    """
    return 0.5 * (v.sum(dim=1) ** 2 - (v**2).sum(dim=1)).sum(dim=1)


class MLP(nn.Module):
    """``[Linear -> BatchNorm1d -> ReLU -> Dropout] * len(dims)`` (+ a ``Linear(., 1)`` head).

    Each block ends in its ``Dropout`` module, ``blocks.{i}.3``: the paper's feedback point.
    """

    def __init__(
        self, in_features: int, dims: Sequence[int], dropout: float, head: bool = True
    ) -> None:
        super().__init__()
        if not dims:
            raise ValueError("an MLP needs at least one hidden width")
        blocks = []
        for width in dims:
            blocks.append(
                nn.Sequential(
                    nn.Linear(in_features, width),
                    nn.BatchNorm1d(width),
                    nn.ReLU(),
                    nn.Dropout(dropout),
                )
            )
            in_features = width
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(in_features, 1) if head else None
        self.out_features = 1 if head else in_features

    def block_outputs(self, prefix: str) -> list[str]:
        return [f"{prefix}blocks.{i}.3" for i in range(len(self.blocks))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x if self.head is None else self.head(x).squeeze(-1)


class CTRModel(nn.Module):
    """Base class: ``forward(x) -> logits (batch,)`` and the paper's feedback places."""

    def block_outputs(self) -> list[str]:
        """Module paths whose outputs are the hidden blocks where the paper put feedback."""
        raise NotImplementedError

    def bypass_modules(self) -> list[str]:
        """Modules below a feedback point that also reach the output through a path with no
        point on it (DeepFM's FM term reads the embedding that feeds the MLP): with the paper's
        placement they learn from the true gradient of that path as well as from feedback. Pass
        them as ``rule.apply(model, points=..., true_gradient=model.bypass_modules())``."""
        return []


class FM(CTRModel):
    """Factorization machine: ``linear(x) + fm(embed(x))``. No hidden layer (DFA = BP)."""

    def __init__(self, field_dims: Sequence[int], embed_dim: int = 16) -> None:
        super().__init__()
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.linear = FeaturesLinear(field_dims)

    def block_outputs(self) -> list[str]:
        return []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + fm_interaction(self.embedding(x))


class DeepFM(CTRModel):
    """``linear(x) + fm(v) + mlp(flatten(v))`` with ``v = embed(x)``; feedback after each block."""

    def __init__(
        self,
        field_dims: Sequence[int],
        embed_dim: int = 10,
        mlp_dims: Sequence[int] = (400, 400, 400),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.linear = FeaturesLinear(field_dims)
        self.mlp = MLP(len(field_dims) * embed_dim, mlp_dims, dropout)

    def block_outputs(self) -> list[str]:
        return self.mlp.block_outputs("mlp.")

    def bypass_modules(self) -> list[str]:
        return ["embedding"]  # the FM term: fm_interaction(v) has no parameters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.embedding(x)  # (B, F, E)
        return self.linear(x) + fm_interaction(v) + self.mlp(v.flatten(1))


class CrossLayer(nn.Module):
    """``x_{l+1} = x_0 (w^T x_l) + b + x_l`` (Wang et al. 2017)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.w = nn.Linear(width, 1, bias=False)
        self.b = nn.Parameter(torch.zeros(width))

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.w(x) + self.b + x


class DeepCross(CTRModel):
    """Deep & Cross: ``linear([cross(e), mlp(e)])`` with ``e = flatten(embed(x))``.

    Feedback (paper): at the embeddings, after every cross layer and after every MLP block.
    """

    def __init__(
        self,
        field_dims: Sequence[int],
        embed_dim: int = 16,
        cross_layers: int = 6,
        mlp_dims: Sequence[int] = (1024, 1024),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        width = len(field_dims) * embed_dim
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(cross_layers))
        self.mlp = MLP(width, mlp_dims, dropout, head=False)
        self.linear = nn.Linear(width + self.mlp.out_features, 1)

    def block_outputs(self) -> list[str]:
        cross = [f"cross.{i}" for i in range(len(self.cross))]
        return ["embedding", *cross, *self.mlp.block_outputs("mlp.")]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.embedding(x).flatten(1)  # (B, F*E)
        c = e
        for layer in self.cross:
            c = layer(e, c)
        return self.linear(torch.cat([c, self.mlp(e)], dim=1)).squeeze(-1)


class AutoInt(CTRModel):
    """AutoInt: ``linear(x) + fc(relu(attn(W v) + V v)) + mlp(flatten(v))`` with ``v = embed(x)``.

    Multi-head self-attention over the fields (``batch_first``, so the batch axis leads every
    hidden tensor). Feedback (paper): embeddings, attention embedding, each attention layer but
    the last, the attention output after its ReLU, and each MLP block.
    """

    def __init__(
        self,
        field_dims: Sequence[int],
        embed_dim: int = 16,
        attention_dim: int = 32,
        heads: int = 2,
        attention_layers: int = 3,
        mlp_dims: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        residual: bool = True,
    ) -> None:
        super().__init__()
        fields = len(_check_fields(field_dims))
        self.linear = FeaturesLinear(field_dims)
        self.embedding = FeaturesEmbedding(field_dims, embed_dim)
        self.attention_embedding = nn.Linear(embed_dim, attention_dim)
        self.attention = nn.ModuleList(
            nn.MultiheadAttention(attention_dim, heads, dropout=dropout, batch_first=True)
            for _ in range(attention_layers)
        )
        self.residual = nn.Linear(embed_dim, attention_dim) if residual else None
        self.attention_act = nn.ReLU()
        self.attention_fc = nn.Linear(fields * attention_dim, 1)
        self.mlp = MLP(fields * embed_dim, mlp_dims, dropout)

    def block_outputs(self) -> list[str]:
        layers = [f"attention.{i}" for i in range(len(self.attention) - 1)]
        return [
            "embedding",
            "attention_embedding",
            *layers,
            "attention_act",
            *self.mlp.block_outputs("mlp."),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.embedding(x)  # (B, F, E)
        a = self.attention_embedding(v)  # (B, F, A)
        for layer in self.attention:
            a, _ = layer(a, a, a, need_weights=False)
        if self.residual is not None:
            a = a + self.residual(v)
        a = self.attention_act(a).flatten(1)  # (B, F*A)
        return self.linear(x) + self.attention_fc(a).squeeze(-1) + self.mlp(v.flatten(1))


def build_recommender(kind: str, field_dims: Sequence[int], **kwargs: object) -> CTRModel:
    """One of :data:`RECOMMENDER_KINDS` with the given keyword arguments."""
    classes = {"fm": FM, "deepfm": DeepFM, "dcn": DeepCross, "autoint": AutoInt}
    if kind not in classes:
        raise ValueError(f"unknown recommender {kind!r}; choose one of {RECOMMENDER_KINDS}")
    return classes[kind](field_dims, **kwargs)  # type: ignore[arg-type]
