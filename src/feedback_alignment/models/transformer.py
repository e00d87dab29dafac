"""A small decoder-only Transformer language model, readable top to bottom.

The model is the one of Launay et al. (2020, section 3.3) at CPU scale: token and position
embeddings, ``n_layer`` blocks of causal self-attention and a GELU feed-forward network, each with
a residual connection and LayerNorm, a final norm and a vocabulary projection. The paper used
**post-LN** blocks (``x = LN(x + sublayer(x))``, as in Vaswani et al. 2017); pre-LN blocks
(``x = x + sublayer(LN(x))``, as in GPT-2) are selectable.

The model knows nothing of learning rules. For direct feedback it offers named places where a rule
may cut the graph (:func:`feedback_points`) and a module right before the vocabulary projection,
``ln_f``, where the error may be taken instead of at the logits (the paper's default):

* ``"macro"``: one point per block, at its output;
* ``"micro"``: three per block: after the attention sublayer (its residual and, post-LN, its norm:
  the ``attn_out`` marker), after the feed-forward activation (``mlp.act``) and at the block output.

Between two points ordinary local backprop runs, so the attention internals (queries, keys, values,
softmax) learn by backprop inside a block, and the embeddings learn by backprop from the first point.

References:
    Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (post-LN blocks).
    Radford et al., "Language Models are Unsupervised Multitask Learners", 2019 (pre-LN, GPT-2).
    Launay, Poli, Boniface, Krzakala, "Direct Feedback Alignment Scales to Modern Deep Learning
    Tasks and Architectures", NeurIPS 2020, section 3.3 (macro and micro feedback placement, error
    taken before the vocabulary projection).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

NORMS = ("post", "pre")
PLACEMENTS = ("macro", "micro")


@dataclass(frozen=True)
class TransformerConfig:
    """Shape of the model.

    Attributes:
        vocab_size: number of token ids (characters for a char-level model).
        block_size: longest context the position embedding covers.
        n_layer: number of blocks (the paper: 6).
        n_head: attention heads per block (the paper: 8); must divide ``d_model``.
        d_model: width of the residual stream (the paper: 512).
        ff_mult: feed-forward width as a multiple of ``d_model`` (4 as in Vaswani et al.).
        dropout: on attention weights, sublayer outputs and embeddings.
        norm: ``"post"`` (the paper's, Vaswani et al.) or ``"pre"`` (GPT-2) LayerNorm placement.
    """

    vocab_size: int
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    ff_mult: int = 4
    dropout: float = 0.0
    norm: str = "post"

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.d_model % self.n_head:
            raise ValueError(
                f"d_model={self.d_model} is not divisible by n_head={self.n_head}: every head "
                "needs the same width"
            )
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "d_model", "ff_mult"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` attends to positions ``<= t``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)  # queries, keys, values at once
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape  # (B, T, C)
        q, k, v = self.qkv(x).split(width, dim=2)  # 3 x (B, T, C)
        heads = (batch, tokens, self.n_head, width // self.n_head)
        q, k, v = (t.view(heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(batch, tokens, width)  # (B, T, C)
        return self.resid_drop(self.proj(y))


class FeedForward(nn.Module):
    """``proj(GELU(fc(x)))``; the activation is a module so that it can be a feedback point."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.ff_mult * config.d_model)
        self.act = nn.GELU()
        self.proj = nn.Linear(config.ff_mult * config.d_model, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """One Transformer block, post-LN or pre-LN.

    ``attn_out`` is an identity marker on the residual stream after the attention sublayer (after
    its norm when post-LN): the first of the three "micro" feedback points.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.pre_norm = config.norm == "pre"
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.attn_out = nn.Identity()
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            x = self.attn_out(x + self.attn(self.ln_1(x)))
            return x + self.mlp(self.ln_2(x))
        x = self.attn_out(self.ln_1(x + self.attn(x)))
        return self.ln_2(x + self.mlp(x))


class CharTransformer(nn.Module):
    """Decoder-only language model: ids ``(B, T)`` -> logits ``(B, T, vocab_size)``.

    ``ln_f`` is the last module before the vocabulary projection ``lm_head``: a LayerNorm for
    pre-LN blocks (GPT-2), the identity for post-LN blocks, whose outputs are normalised already.
    Taking the error there (``error_at="ln_f"``) is the paper's default.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.block_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model) if config.norm == "pre" else nn.Identity()
        self.lm_head = nn.Linear(config.d_model, config.vocab_size)
        self.apply(self._init_weights)
        log.debug("CharTransformer with %d parameters", self.num_parameters())

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2's N(0, 0.02) for weights and embeddings: small logits at the start of training
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        tokens = idx.shape[1]
        if tokens > self.config.block_size:
            raise ValueError(
                f"sequence of {tokens} tokens is longer than block_size={self.config.block_size}"
            )
        positions = torch.arange(tokens, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, vocab)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        new_tokens: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Samples ``new_tokens`` ids after the context ``idx`` of shape ``(B, T)``."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        for _ in range(new_tokens):
            context = idx[:, -self.config.block_size :]
            logits = self(context)[:, -1, :] / temperature  # (B, vocab)
            probs = torch.softmax(logits, dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
        return idx


def feedback_points(model: CharTransformer, placement: str) -> list[str]:
    """Module paths of the feedback points of a placement (see the module doc).

    Raises:
        ValueError: unknown placement.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    paths: list[str] = []
    for i in range(len(model.blocks)):
        if placement == "micro":
            paths += [f"blocks.{i}.attn_out", f"blocks.{i}.mlp.act"]
        paths.append(f"blocks.{i}")
    return paths


def perplexity(mean_loss: float) -> float:
    """``exp`` of the mean cross-entropy in nats (per character for a char-level model)."""
    return math.exp(min(mean_loss, 700.0))
