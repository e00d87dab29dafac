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


DRAW_CHUNK = 2**24
"""Entries drawn at a time: a matrix of more entries is drawn in blocks of whole rows of at most
this many (``max(1, DRAW_CHUNK // columns)`` rows), each cast and copied as it goes, so the float64
scratch stays at 128 MiB whatever the matrix's size. The blocks depend on the shape alone, so the
values are the same on every machine; a matrix of at most ``DRAW_CHUNK`` entries is one block."""


class FeedbackMemoryError(MemoryError):
    """A feedback matrix does not fit in the memory of the device it is drawn on."""


def check_seed(seed: object, owner: str) -> int:
    """``seed`` as an ``int`` in ``[0, MAX_SEED]``, or a ``ValueError`` naming ``owner``'s argument.

    Booleans and non-integral numbers are refused (``1.5`` is not silently ``1``), and so are
    negative seeds (``-1`` and ``2**64 - 1`` would otherwise give the same generator state).
    """
    integral = isinstance(seed, int) or (
        hasattr(seed, "__index__") and not isinstance(seed, (float, complex))
    )
    if isinstance(seed, bool) or not integral:
        raise ValueError(
            f"{owner}: seed={seed!r} must be an integer in [0, 2**63 - 1] "
            f"(got {type(seed).__name__})"
        )
    value = int(seed.__index__())  # type: ignore[union-attr]
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{owner}: seed={value} is outside [0, 2**63 - 1]")
    return value


def check_scale(scale: object, names: Sequence[str], owner: str) -> str | float:
    """``scale`` if it is one of ``names`` or a finite positive number, else a ``ValueError``.

    A NaN, infinite or huge scale (``1e308`` overflows in the first product) would turn every
    hidden gradient into NaN without an error; zero or a negative scale would feed back nothing or
    the opposite signal.
    """
    if isinstance(scale, str):
        if scale in names:
            return scale
        raise ValueError(
            f"{owner}: unknown scale {scale!r}; choose one of {tuple(names)} or a number"
        )
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(
            f"{owner}: scale={scale!r} must be one of {tuple(names)} or a finite positive number"
        )
    value = float(scale)
    if not (math.isfinite(value) and 0.0 < value <= MAX_SCALE):
        raise ValueError(
            f"{owner}: scale={scale!r} must be a finite positive number at most {MAX_SCALE:g} "
            "(NaN, inf, zero, negative or overflowing scales make every hidden gradient NaN, "
            "zero or reversed)"
        )
    return value


MAX_SCALE = 1e30
"""Largest numeric feedback scale accepted: far above any useful value (a unit draw times the
scale times an error must stay finite in float32, whose largest value is about 3.4e38)."""


def available_bytes(device: torch.device) -> int | None:
    """Memory that a new tensor may take on ``device`` (``None``: unknown or unlimited).

    CUDA: the driver's free memory; CPU: ``MemAvailable`` of ``/proc/meminfo`` where it exists.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as lines:
                for line in lines:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_fits(
    name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, advice: str
) -> None:
    """Raises :class:`FeedbackMemoryError` naming the matrix, its shape and bytes, and ``advice``,
    when it (and one drawing block) cannot fit in ``device``'s free memory. Nothing is allocated."""
    entries = math.prod(shape)
    needed = entries * torch.empty((), dtype=dtype).element_size()
    if device.type == "cpu":
        needed += min(entries, DRAW_CHUNK) * 8  # the float64 block being drawn
    free = available_bytes(device)
    if free is not None and needed > free:
        raise FeedbackMemoryError(
            f"the feedback matrix {name!r} of shape {tuple(shape)} ({dtype}) needs "
            f"{_gib(needed)} on {device}, where {_gib(free)} is free: {advice}"
        )


def _gib(size: int) -> str:
    return f"{size / 2**30:.2f} GiB"


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
    touch the global RNG and is bitwise identical on every process and device), in blocks of whole
    rows (:data:`DRAW_CHUNK`), each cast and moved as it is drawn. Distributions: ``gaussian``
    N(0, 1); ``uniform`` U[-1, 1); ``rademacher`` ±1 with probability 1/2. ``seed`` is the
    generator's seed as given: callers derive it from a rule's seed (:func:`derive_seed`).
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"unknown feedback distribution {distribution!r}; choose one of {DISTRIBUTIONS}"
        )
    shape = tuple(int(n) for n in shape)
    if device is not None and torch.device(device).type == "meta":
        return torch.empty(shape, dtype=dtype, device=device)  # shapes only: nothing to draw
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    entries = math.prod(shape)
    if entries <= DRAW_CHUNK or len(shape) < 2:
        return _draw_block(distribution, shape, generator).to(dtype=dtype, device=device)
    out = torch.empty(shape, dtype=dtype, device=device)
    row = entries // shape[0]
    rows = max(1, DRAW_CHUNK // row)
    for start in range(0, shape[0], rows):
        block = _draw_block(distribution, (min(rows, shape[0] - start), *shape[1:]), generator)
        out[start : start + block.shape[0]].copy_(block)
    return out


def _draw_block(
    distribution: str, shape: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    if distribution == "gaussian":
        return torch.randn(shape, generator=generator, dtype=torch.float64)
    if distribution == "uniform":
        return torch.rand(shape, generator=generator, dtype=torch.float64) * 2.0 - 1.0
    bits = torch.randint(0, 2, shape, generator=generator, dtype=torch.int64)
    return bits.to(torch.float64) * 2.0 - 1.0


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
