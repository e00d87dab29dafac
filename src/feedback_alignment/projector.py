"""The direct rules' projection, in one place: ``P = s(e) @ B`` once, then a slice per point.

A direct rule (DFA, sign-DFA, DRTP) hands feedback point ``l`` the signal
``B_l^T s(e)`` with ``B_l = B[:, o_l : o_l + n_l] * c_l``: columns ``o_l .. o_l + n_l`` of one
seeded buffer ``B`` of shape ``(d_out, total)`` (:class:`~feedback_alignment.feedback.FeedbackLayout`
gives the offsets ``o_l``, widths ``n_l`` and scales ``c_l``). Computing every point's signal is one
matrix product ``P = s(e) @ B``, then a view of ``P`` per point (Launay et al.'s TinyDFA trick,
"Direct Feedback Alignment Scales to Modern Deep Learning Tasks and Architectures", 2020). The
scales are folded into the columns of ``B`` (:func:`folded_scales`), so no scaled copy of a slice
is made where the points' scales allow it.

:class:`Projector` is used by the single-process rules (``DirectFeedbackFn``'s backward) and by the
pipeline stages, which project for their own run of points only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch

from feedback_alignment.feedback import FeedbackLayout


@functools.lru_cache(maxsize=64)
def folded_scales(layout: FeedbackLayout) -> tuple[torch.Tensor | float, tuple[float, ...]]:
    """Each point's scale folded into the columns of ``B``, so that points read views of the one
    product ``s(e) @ B`` and no scaled copy of a slice is made (memory at the hand-written floor).

    Disjoint columns: every column carries its point's scale; nothing is left per point. Shared
    columns (one matrix sliced by every point): the columns carry the widest point's scale ``c_w``
    and a point of another scale ``c_l`` multiplies its slice by ``c_l / c_w`` (only there is a
    copy made). Returns the column factors (a vector, or one number) and the residual per point.
    """
    if layout.uniform_scale is not None:
        return layout.uniform_scale, (1.0,) * len(layout.widths)
    if len(set(layout.offsets)) == len(layout.offsets) and layout.total == sum(layout.widths):
        columns = torch.empty(layout.total, dtype=torch.float64)
        for start, width, scale in zip(layout.offsets, layout.widths, layout.scales, strict=True):
            columns[start : start + width] = scale
        return columns, (1.0,) * len(layout.widths)
    widest = max(range(len(layout.widths)), key=layout.widths.__getitem__)
    common = layout.scales[widest]
    return common, tuple(scale / common for scale in layout.scales)


class Projector:
    """``P = s(e) @ B_folded`` and a ``(n, n_l)`` slice of it per point, for points
    ``first .. first + count - 1`` of ``layout`` (all of them by default).

    Only the columns those points read (``lo .. hi``) take part in the product: a pipeline stage
    projects for its own points. The folded matrix (``B``'s columns, cast to the signal's dtype
    and device, times the column scales) is cached until the buffer is replaced, modified in
    place, cast or moved.

    Args:
        layout: the rule's feedback layout.
        signal: ``s``, from the flattened error ``(n, d_out)`` to the signal (``e``, ``sign(e)/n``,
            DRTP's targets).
        first, count: the run of points to project for.
    """

    def __init__(
        self,
        layout: FeedbackLayout,
        signal: Callable[[torch.Tensor], torch.Tensor],
        first: int = 0,
        count: int | None = None,
    ) -> None:
        count = len(layout.widths) - first if count is None else count
        points = range(first, first + count)
        self.layout = layout
        self.signal = signal
        self.count = count
        self.lo = min((layout.offsets[i] for i in points), default=0)
        self.hi = max((layout.offsets[i] + layout.widths[i] for i in points), default=0)
        columns, residual = folded_scales(layout)
        self.columns = columns[self.lo : self.hi] if isinstance(columns, torch.Tensor) else columns
        self.residual = tuple(residual[i] for i in points)
        self.slices = tuple((layout.offsets[i] - self.lo, layout.widths[i]) for i in points)
        self._key: tuple | None = None
        self._matrix: torch.Tensor | None = None

    def span(self, buffer: torch.Tensor) -> torch.Tensor:
        """The columns ``lo .. hi`` of the whole ``(d_out, total)`` buffer: all that a holder of
        these points needs to keep (a pipeline stage)."""
        return buffer[:, self.lo : self.hi]

    def matrix(
        self, buffer: torch.Tensor, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """``B[:, lo:hi]`` with the points' scales folded into its columns, in ``dtype`` on
        ``device``; ``buffer`` is the whole ``(d_out, total)`` matrix or its :meth:`span`."""
        key = (id(buffer), buffer._version, dtype, device)
        if self._key != key:
            columns = buffer.detach()
            if columns.shape[1] != self.hi - self.lo:
                columns = columns[:, self.lo : self.hi]
            matrix = columns.to(dtype=dtype, device=device)
            if isinstance(self.columns, torch.Tensor):
                matrix = matrix * self.columns.to(dtype=dtype, device=device)
            elif self.columns != 1.0:
                matrix = matrix * self.columns
            self._matrix, self._key = matrix, key
        assert self._matrix is not None
        return self._matrix

    def forget(self) -> None:
        """Drops the cached matrix (after a load, or before pickling)."""
        self._key = self._matrix = None

    def project(
        self,
        error: torch.Tensor,
        buffer: torch.Tensor,
        needed: Sequence[bool] | None = None,
    ) -> list[torch.Tensor | None]:
        """Each point's signal rows ``(n, n_l)`` from the flattened error ``(n, d_out)``; ``None``
        for a point whose ``needed`` is false."""
        signal = self.signal(error)
        projected = signal @ self.matrix(buffer, signal.dtype, signal.device)
        total = projected.shape[1]
        rows: list[torch.Tensor | None] = []
        for i, (start, width) in enumerate(self.slices):
            if needed is not None and not needed[i]:
                rows.append(None)
                continue
            row = projected if width == total else projected[:, start : start + width]
            if self.residual[i] != 1.0:
                row = row * self.residual[i]
            rows.append(row)
        return rows

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_key": None, "_matrix": None}
