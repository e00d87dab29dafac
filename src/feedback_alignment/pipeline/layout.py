"""The feedback of a pipeline: the layout of single-process DFA, and each stage's columns of it.

Single-process ``fa.DFA`` gives point ``l`` (``n_l`` features per sample) the matrix
``B_l = B[:, o_l : o_l + n_l] * c_l`` of one seeded buffer ``B`` of shape ``(d_out, total)``, with
offsets ``o_l`` and scales ``c_l`` from :class:`feedback_alignment.feedback.FeedbackLayout`. A
stage owns a contiguous run of the points (pipeline order is forward order): it draws the same
``B`` and projects the error once through :class:`feedback_alignment.projector.Projector`, over the
columns its points read (``P = e @ B[:, lo:hi]`` with the scales folded in), a slice per point.

The widths need every point's shape and the output's: the shapes of stage ``s``'s points travel up
with its first activation (:func:`encode_shapes`), the last stage builds the layout
(:func:`layout_from_shapes`) and sends the widths down with its first error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from feedback_alignment.feedback import FeedbackLayout, direct_stream_seed, draw
from feedback_alignment.points import PlacementError
from feedback_alignment.rules import DFA


def encode_shapes(shapes: Sequence[Sequence[int]]) -> list[int]:
    """``[count, ndim_1, *shape_1, ndim_2, *shape_2, ...]``: shapes as one int64 message."""
    flat = [len(shapes)]
    for shape in shapes:
        flat += [len(shape), *shape]
    return flat


def decode_shapes(flat: Sequence[int]) -> list[list[int]]:
    """The inverse of :func:`encode_shapes`."""
    shapes, pos = [], 1
    for _ in range(flat[0]):
        ndim = flat[pos]
        shapes.append(list(flat[pos + 1 : pos + 1 + ndim]))
        pos += 1 + ndim
    return shapes


def widths_from_shapes(shapes: Sequence[Sequence[int]], output_shape: Sequence[int]) -> list[int]:
    """Features per sample of each point, as ``fa.DFA`` counts them.

    The output ``y`` of shape ``(*lead, d_out)`` defines the samples (``prod(lead)``: tokens are
    samples); every point must start with the same ``lead`` axes.
    """
    output_shape = list(output_shape)
    lead = output_shape[:-1] if len(output_shape) > 1 else output_shape
    samples = math.prod(lead)
    for index, shape in enumerate(shapes):
        if list(shape[: len(lead)]) != lead:
            raise PlacementError(
                f"feedback point {index} (in pipeline order) has shape {tuple(shape)} but the "
                f"output has shape {tuple(output_shape)}: a point's leading axes must equal the "
                f"output's batch-like axes {tuple(lead)}"
            )
    return [math.prod(shape) // samples for shape in shapes]


def build_layout(rule: DFA, widths: Sequence[int], out_features: int) -> FeedbackLayout:
    """The layout ``fa.DFA`` builds for these points (names are only their pipeline index)."""
    names = [f"point{i}" for i in range(len(widths))]
    return FeedbackLayout.build(names, widths, out_features, shared=rule.shared, scaling=rule.scale)


def rule_buffer(
    rule: DFA,
    layout: FeedbackLayout,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The buffer ``B`` of shape ``(d_out, total)`` that ``fa.DFA`` draws for this layout
    (:func:`feedback_alignment.feedback.draw` with the rule's distribution and seed, float64 for
    float64 models, else float32): bitwise the same on every process."""
    dtype = torch.float64 if dtype == torch.float64 else torch.float32
    shape = (layout.out_features, layout.total)
    buffer = draw(rule.distribution, shape, direct_stream_seed(rule.seed), dtype=dtype)
    return buffer.to(device)


def stage_matrix(
    rule: DFA,
    layout: FeedbackLayout,
    first: int,
    count: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor | None:
    """``[B_first ... B_(first+count-1)]`` side by side: shape ``(d_out, sum of their widths)``.

    Drawn like ``fa.DFA``'s buffer (:func:`feedback_alignment.feedback.draw` with the rule's
    distribution and seed, float64 for float64 models, else float32): every stage draws the same
    buffer and keeps its columns. ``None`` for a stage without points.
    """
    if count == 0:
        return None
    buffer = rule_buffer(rule, layout, dtype)
    matrix = torch.cat([layout.matrix(buffer, i) for i in range(first, first + count)], dim=1)
    return matrix.to(device)
