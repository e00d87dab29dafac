"""The one projection of the direct rules (feedback_alignment.projector): P = s(e) @ B once, a slice
per point, the scales folded into B's columns; a run of points (a pipeline stage) gets the same
rows as the whole, from the whole buffer or from the span of columns it keeps."""

from __future__ import annotations

import pytest
import torch

from feedback_alignment.feedback import FeedbackLayout
from feedback_alignment.projector import Projector


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "disjoint"])
@pytest.mark.parametrize("scaling", ["principled", "none"])
def test_each_point_gets_its_scaled_slice_of_the_product(shared: bool, scaling: str) -> None:
    widths, d_out = [3, 5, 2], 4
    layout = FeedbackLayout.build(["a", "b", "c"], widths, d_out, shared=shared, scaling=scaling)
    buffer = torch.randn(d_out, layout.total, dtype=torch.float64)
    error = torch.randn(6, d_out, dtype=torch.float64)
    rows = Projector(layout, lambda e: e).project(error, buffer)
    for i, row in enumerate(rows):
        expected = error @ layout.matrix(buffer, i)  # B_l = B[:, o_l : o_l + n_l] * c_l
        torch.testing.assert_close(row, expected)
    for first, count in ((0, 1), (1, 2), (2, 1)):
        part = Projector(layout, lambda e: e, first, count)
        for rows_of in (part.project(error, buffer), part.project(error, part.span(buffer))):
            for i, row in enumerate(rows_of):
                torch.testing.assert_close(row, rows[first + i])


def test_the_signal_and_needed_points() -> None:
    layout = FeedbackLayout.build(["a", "b"], [2, 2], 3, shared=False, scaling="none")
    buffer = torch.randn(3, layout.total, dtype=torch.float64)
    error = torch.randn(4, 3, dtype=torch.float64)
    rows = Projector(layout, torch.sign).project(error, buffer, needed=[False, True])
    assert rows[0] is None
    torch.testing.assert_close(rows[1], torch.sign(error) @ buffer[:, 2:4])


def test_the_cached_matrix_follows_the_buffer() -> None:
    layout = FeedbackLayout.build(["a"], [2], 3, shared=True, scaling="none")
    buffer = torch.randn(3, 2, dtype=torch.float64)
    projector = Projector(layout, lambda e: e)
    error = torch.randn(2, 3, dtype=torch.float64)
    first = projector.project(error, buffer)[0]
    buffer.mul_(2.0)  # in place: a new version
    torch.testing.assert_close(projector.project(error, buffer)[0], 2.0 * first)
