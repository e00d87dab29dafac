"""Feedback tensors for direct feedback: how they are drawn, scaled and laid out.

A direct-feedback rule hands every feedback point ``l`` (a hidden tensor of ``n_l`` features per
sample) the signal ``B_l s`` where ``s`` is the projected output signal (the error ``e`` for DFA) of
``d_out`` features. All ``B_l`` live in **one** buffer ``B`` of shape ``(d_out, total)``, so a step
projects the signal once, ``P = s @ B``, and each point reads a column range of ``P``:

* ``shared=True`` (TinyDFA's "shared random matrix trick"): every point reads the first ``n_l``
  columns, ``total = max_l n_l``.
* ``shared=False``: every point owns disjoint columns, ``total = sum_l n_l``.

The buffer holds raw unit-scale draws from a seeded generator; the scale of each point's slice is
applied to its projected signal (a scalar multiply), which is what lets a shared matrix serve points
of different widths with per-point normalisation.

Scalings (``n_l`` = width of the point, ``n_max`` = widest point, ``d_out`` = output width):

=============== ============================= ====================================================
name            factor on a unit draw          source
=============== ============================= ====================================================
``"none"``      1                              raw draws
``"tinydfa"``   ``1/sqrt(n_max)``              TinyDFA (uniform ``U[-1, 1)`` entries)
``"principled"`` ``1/sqrt(n_l * d_out)``       Launay et al. 2019: ``N(0,1)/sqrt(n_max*C)`` with the
                                               slice rescaled by ``sqrt(n_max/n_l)``
``"nokland"``   ``1/sqrt(n_l)``                Nøkland 2016: ``U(±1/sqrt(n_l))`` with uniform draws
=============== ============================= ====================================================

References:
    Nøkland, "Direct Feedback Alignment Provides Learning in Deep Neural Networks", NeurIPS 2016.
    Launay, Poli, Krzakala, "Principled Training of NNs with Direct Feedback Alignment", 2019.
    Launay, Poli, Boniface, Krzakala, "Direct Feedback Alignment Scales to Modern Deep Learning
    Tasks and Architectures", NeurIPS 2020.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

DISTRIBUTIONS = ("gaussian", "uniform", "rademacher")
SCALINGS = ("none", "tinydfa", "principled", "nokland")

STREAM_VERSION = 2
"""Version of the recipe that turns a direct rule's ``seed`` into its feedback matrix.

* 1 (until 2026-12-05): ``torch.Generator().manual_seed(seed)``. The bare integer replays the
  stream of ``torch.manual_seed(seed)``, so a weight initialised after ``torch.manual_seed(0)``
  could equal ``B`` drawn with ``seed=0`` (a tied LM's embedding had cosine 1.0 with its feedback:
  weight transport by coincidence).
* 2: the generator is seeded with :func:`direct_stream_seed` (a keyed blake2b of the seed).

Results that regenerate feedback from a seed record this number in their provenance; checkpoints
are unaffected (the matrix itself is in ``state_dict``).
"""

MAX_SEED = 2**63 - 1
"""Largest seed a rule accepts: seeds are integers in ``[0, 2**63 - 1]``."""


def derive_seed(*key: object) -> int:
    """A 63-bit generator seed from a key: ``blake2b("/".join(key))``, little-endian, top bit
    dropped. The same on every machine and process, and unrelated to the stream that
    ``torch.manual_seed`` of any part of the key would give (which a bare integer seed replays)."""
    digest = hashlib.blake2b("/".join(str(part) for part in key).encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def direct_stream_seed(seed: int) -> int:
    """The generator seed of a direct rule's feedback matrix: ``derive_seed("direct", seed)``."""
    return derive_seed("direct", int(seed))


def draw(
    distribution: str,
    shape: tuple[int, ...],
    seed: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Draws a unit-scale random tensor, reproducibly from ``seed`` on any machine.

    The draw always happens on the CPU in float64 with a private ``torch.Generator`` (so it does not
    touch the global RNG and is bitwise identical on every process and device), then is cast and
    moved. Distributions: ``gaussian`` N(0, 1); ``uniform`` U[-1, 1); ``rademacher`` ±1 with
    probability 1/2.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    if distribution == "gaussian":
        values = torch.randn(shape, generator=generator, dtype=torch.float64)
    elif distribution == "uniform":
        values = torch.rand(shape, generator=generator, dtype=torch.float64) * 2.0 - 1.0
    elif distribution == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, dtype=torch.int64)
        values = bits.to(torch.float64) * 2.0 - 1.0
    else:
        raise ValueError(
            f"unknown feedback distribution {distribution!r}; choose one of {DISTRIBUTIONS}"
        )
    return values.to(dtype=dtype, device=device)


def scale_factor(scaling: str | float, width: int, max_width: int, out_features: int) -> float:
    """The factor applied to the unit draws of a point of ``width`` features (see module doc)."""
    if isinstance(scaling, (int, float)) and not isinstance(scaling, bool):
        return float(scaling)
    if scaling == "none":
        return 1.0
    if scaling == "tinydfa":
        return 1.0 / math.sqrt(max_width)
    if scaling == "principled":
        return 1.0 / math.sqrt(width * out_features)
    if scaling == "nokland":
        return 1.0 / math.sqrt(width)
    raise ValueError(f"unknown feedback scaling {scaling!r}; choose one of {SCALINGS} or a number")


@dataclass(frozen=True)
class FeedbackLayout:
    """Where each feedback point reads its columns of the one feedback buffer.

    Attributes:
        names: feedback point names, in the order they ran in the forward pass.
        widths: features per sample of each point (``C*H*W`` for a conv map).
        offsets: first column of each point's slice of ``B``.
        scales: factor applied to each point's projected signal.
        out_features: ``d_out``, the width of the output signal.
        total: number of columns of ``B``.
    """

    names: tuple[str, ...]
    widths: tuple[int, ...]
    offsets: tuple[int, ...]
    scales: tuple[float, ...]
    out_features: int
    total: int

    @classmethod
    def build(
        cls,
        names: Sequence[str],
        widths: Sequence[int],
        out_features: int,
        *,
        shared: bool,
        scaling: str | float,
    ) -> FeedbackLayout:
        max_width = max(widths)
        if shared:
            offsets = [0] * len(widths)
            total = max_width
        else:
            offsets, total = [], 0
            for width in widths:
                offsets.append(total)
                total += width
        scales = [scale_factor(scaling, w, max_width, out_features) for w in widths]
        return cls(tuple(names), tuple(widths), tuple(offsets), tuple(scales), out_features, total)

    @functools.cached_property
    def uniform_scale(self) -> float | None:
        """The common scale of all points, or ``None`` when points are scaled differently."""
        first = self.scales[0]
        return first if all(s == first for s in self.scales) else None

    def matrix(self, buffer: torch.Tensor, index: int) -> torch.Tensor:
        """The effective ``B_l`` of point ``index``, shape ``(d_out, n_l)``: slice times scale."""
        start = self.offsets[index]
        return buffer[:, start : start + self.widths[index]] * self.scales[index]
