"""Property-based tests of the direct-feedback projection (DirectFeedbackFn and its projector).

Over random sample layouts (leading axes of the output, a point's batch axes anywhere in its
tensor), widths, dtypes, shared or disjoint columns, scalings and signals (DFA, sign-DFA), the
gradient a point receives must equal a float64 reference written here from the equations:
per sample ``s``, ``dL/dh_l[s] = c_l B[:, cols_l]^T s(e_s)`` with ``c_l`` the documented scale,
laid out at the point's batch axes.
"""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import feedback_alignment as fa

KEY = fa.FEEDBACK_BUFFER


def _scale(scaling: str, width: int, widest: int, d_out: int) -> float:
    return {
        "principled": 1 / math.sqrt(width * d_out),
        "nokland": 1 / math.sqrt(width),
        "tinydfa": 1 / math.sqrt(widest),
        "none": 1.0,
    }[scaling]


class Probe(nn.Module):
    """``y = head(sum of the points' pooled features)``: two points of chosen shapes and axes."""

    def __init__(self, shapes, d_out):
        super().__init__()
        self.shapes = shapes
        self.sources = nn.ParameterList(nn.Parameter(torch.randn(shape)) for shape in shapes)
        self.points = nn.ModuleList(fa.FeedbackPoint() for _ in shapes)
        self.head = nn.Linear(1, d_out)

    def forward(self, lead):
        total = 0
        for source, point in zip(self.sources, self.points, strict=True):
            total = total + point(source * 1.0).sum()
        return self.head(torch.ones(*lead, 1, dtype=self.head.weight.dtype)) * 0 + total


@settings(max_examples=40, deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), min_size=1, max_size=2),
    d_out=st.integers(1, 4),
    extra=st.lists(st.lists(st.integers(1, 3), min_size=0, max_size=2), min_size=2, max_size=2),
    positions=st.lists(st.integers(0, 2), min_size=2, max_size=2),
    shared=st.booleans(),
    scaling=st.sampled_from(["principled", "nokland", "tinydfa", "none"]),
    rule_name=st.sampled_from(["DFA", "SignDFA"]),
    dtype=st.sampled_from([torch.float64, torch.float32]),
    seed=st.integers(0, 1000),
)
def test_each_point_receives_its_scaled_slice_of_b_e(
    lead, d_out, extra, positions, shared, scaling, rule_name, dtype, seed
):
    # each point: its own feature axes `extra`, the sample axes inserted at `position`
    shapes, axes = [], []
    for features, position in zip(extra, positions, strict=True):
        at = min(position, len(features))
        shape = [*features[:at], *lead, *features[at:]]
        shapes.append(tuple(shape))
        axes.append(tuple(range(at, at + len(lead))))
    torch.manual_seed(seed)
    model = Probe(shapes, d_out).to(dtype)
    rule = getattr(fa, rule_name)(seed=seed, shared=shared, scale=scaling)
    names = ["points.0", "points.1"]
    rule.apply(model, points=names, point_batch_axes=dict(zip(names, axes, strict=True)))
    y = model(lead)
    error = torch.randn(y.shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    y.backward(error)

    samples = math.prod(lead)
    widths = [math.prod(s) // samples for s in shapes]
    buffer = model.state_dict()[KEY].double()
    e = error.double().reshape(samples, d_out)
    signal = torch.sign(e) / samples if rule_name == "SignDFA" else e
    offset = 0
    for name, shape, at, width in zip(names, shapes, axes, widths, strict=True):
        start = 0 if shared else offset
        offset += width
        columns = buffer[:, start : start + width] * _scale(scaling, width, max(widths), d_out)
        rows = signal @ columns  # (samples, width)
        rest = [d for d in range(len(shape)) if d not in at]
        laid = rows.reshape(*(shape[d] for d in at), *(shape[d] for d in rest))
        expected = laid.permute(*[(*at, *rest).index(d) for d in range(len(shape))])
        grad = model.sources[names.index(name)].grad
        tol = (
            {"rtol": 1e-10, "atol": 1e-12}
            if dtype == torch.float64
            else {"rtol": 1e-5, "atol": 1e-6}
        )
        torch.testing.assert_close(grad.double(), expected, **tol)
