"""The Transformer task's settings, arms and the record each run leaves: the shapes that the task
(:mod:`.language`) writes and its report (:mod:`.language_report`) reads, kept apart from both so
that neither imports the other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from feedback_alignment.experiments.papers import LAUNAY_2020_PERPLEXITY

RULES: tuple[str, ...] = tuple(LAUNAY_2020_PERPLEXITY)
"""BP, DFA with the paper's two placements, and Shallow: the arms of our recipe."""


AUTHORS = "authors"


AUTHORS_RULES: tuple[str, ...] = tuple(f"{rule}/{AUTHORS}" for rule in RULES)
"""The same four rules under the authors' recipe (:class:`AuthorsRecipe`)."""


ARMS: tuple[str, ...] = RULES + AUTHORS_RULES
"""Every arm of the task: a rule of :data:`RULES`, alone (our recipe) or with ``/authors``."""


AUTHORS_LR = 1e-4
"""The authors' Adam learning rate (``--init_lr 1e-4`` of their scheduled DFA runs)."""


@dataclass(frozen=True)
class AuthorsRecipe:
    """What the authors' recipe changes against ours (their ``train_lm.py`` with
    ``--optim schedule``; the learning rate is :data:`AUTHORS_LR` until tuned).

    Attributes:
        eps: Adam's epsilon (theirs 1e-9; ours PyTorch's 1e-8).
        warmup: steps of linear warm-up (none in their scheduled runs).
        clip: gradient-norm clipping threshold.
        dropout: on attention weights, sublayer outputs and embeddings.
        activation: of the feed-forward layer (``"relu"``: ``TransformerEncoderLayer``'s default).
    """

    eps: float = 1e-9
    warmup: int = 0
    clip: float = 0.5
    dropout: float = 0.1
    activation: str = "relu"


def split_arm(arm: str) -> tuple[str, str]:
    """``"DFA-macro/authors"`` -> ``("DFA-macro", "authors")``; ``"BP"`` -> ``("BP", "ours")``."""
    rule, _, recipe = arm.partition("/")
    return rule, recipe or "ours"


@dataclass
class LanguageConfig:
    """Settings of the task (full mode; :data:`.language.QUICK` is the minutes-scale variant).

    Attributes:
        corpus: a ``text`` data set of the registry (a :class:`~feedback_alignment.data.text.CharCorpus`).
        d_model, n_layer, n_head, block_size, norm: the model (see :class:`TransformerConfig`).
        batch_size: sequences per step, each ``block_size`` characters.
        steps: optimizer steps per rule.
        lr: Adam learning rate per rule (the same unless tuned apart).
        warmup: steps of linear learning-rate warm-up.
        decay, patience: the rate is multiplied by ``decay`` after ``patience`` evaluations
            without a better validation loss (the paper's x0.2 on plateau).
        clip: gradient-norm clipping threshold.
        eval_every, eval_batches: validation schedule and size (fixed, evenly spread windows).
        error_before_vocab: take DFA's error at the input of the vocabulary projection (paper).
        rules: the arms to run (:data:`ARMS`: each rule under our recipe and the authors').
        authors: the authors' recipe, used by the ``/authors`` arms in place of ``warmup``,
            ``clip``, Adam's epsilon, no dropout and GELU.
        sample_chars, temperature, prompt: the text sampled from each trained model.
        threads: intra-op threads (``None``: leave torch's setting).
    """

    corpus: str = "shakespeare"
    d_model: int = 128
    n_layer: int = 4
    n_head: int = 4
    block_size: int = 64
    norm: str = "post"
    batch_size: int = 32
    steps: int = 1200
    lr: dict[str, float] = field(
        default_factory=lambda: {
            **{"BP": 1e-3, "DFA-macro": 1e-3, "DFA-micro": 1e-3, "Shallow": 1e-3},
            **dict.fromkeys(AUTHORS_RULES, AUTHORS_LR),
        }
    )
    warmup: int = 100
    decay: float = 0.2
    patience: int = 2
    clip: float = 1.0
    eval_every: int = 150
    eval_batches: int = 40
    error_before_vocab: bool = True
    sample_chars: int = 300
    temperature: float = 0.8
    prompt: str = "ROMEO:\n"
    rules: tuple[str, ...] = ARMS
    authors: AuthorsRecipe = field(default_factory=AuthorsRecipe)
    threads: int | None = None
    tuned: bool = True  # use the stored tuned learning rates in place of ``lr``
    tuned_dir: Path | None = None  # where they are stored (``None``: the committed ones)

    def __post_init__(self) -> None:
        unknown = [r for r in self.rules if r not in ARMS]
        if unknown:
            raise ValueError(f"unknown rules {unknown}; choose from {list(ARMS)}")
        missing = [r for r in self.rules if r not in self.lr]
        if missing:
            raise ValueError(f"no learning rate for {missing}; lr has {sorted(self.lr)}")
        if self.steps < 1 or self.eval_every < 1 or self.batch_size < 1:
            raise ValueError("steps, eval_every and batch_size must be positive")


@dataclass
class LanguageResult:
    rule: str
    seed: int
    val_loss: float
    val_perplexity: float
    test_loss: float
    test_perplexity: float
    lr: float
    sample: str
    seconds: float
    curve: list[tuple[int, float, float]]  # (step, validation loss, learning rate)
    train_loss: list[float]
