"""The hand-written floor: the direct rules' cut and single projection without the library
(see :mod:`feedback_alignment.bench`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

# ---- the hand-written floor ---------------------------------------------------------------------


class _FloorCut(torch.autograd.Function):
    """Identity on ``y``; in backward, ``P = s(e) @ B`` once and a slice of ``P`` per point."""

    @staticmethod
    def forward(ctx, floor: _Floor, y: torch.Tensor, *hidden: torch.Tensor) -> torch.Tensor:
        ctx.floor, ctx.shapes = floor, [h.shape for h in hidden]
        return y.view_as(y)

    @staticmethod
    def backward(ctx, error: torch.Tensor):
        floor = ctx.floor
        flat = error.reshape(-1, floor.feedback.shape[0])  # (n, d_out)
        signal = floor.signal(flat)
        projected = signal @ floor.feedback  # (n, max width): the one projection
        rows, width = projected.shape
        grads = []
        for shape in ctx.shapes:
            own = math.prod(shape) // rows  # this point's width
            grads.append(
                projected.view(shape) if own == width else projected[:, :own].reshape(shape)
            )
        return (None, error, *grads)


class _Floor:
    """Cut and projection by hand on one model: hooks at the points and at the error site.

    ``signal`` is ``e -> e`` (DFA), ``e -> sign(e)/n`` (sign-DFA) or ``None`` (Shallow: cut only).
    The feedback matrix is drawn at the first forward pass, once the widths are known (one matrix
    of the widest point's width, which every point slices, the library's default layout).
    """

    def __init__(
        self,
        model: nn.Module,
        points: Sequence[str],
        error_at: str | None,
        signal: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> None:
        self.signal = signal
        self.records: list[torch.Tensor] = []
        self.feedback: torch.Tensor | None = None
        for path in points:
            model.get_submodule(path).register_forward_hook(self._at_point)
        if signal is not None:
            site = model if error_at is None else model.get_submodule(error_at)
            site.register_forward_hook(self._at_site)

    def _at_point(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if self.signal is not None:
            self.records.append(output)
        return output.detach()

    def _at_site(self, module: nn.Module, args: Any, y: torch.Tensor) -> torch.Tensor:
        hidden, self.records = self.records, []
        if self.feedback is None:
            rows = y.numel() // y.shape[-1] if y.dim() > 1 else y.numel()
            d_out = y.shape[-1] if y.dim() > 1 else 1
            width = max(h.numel() // rows for h in hidden)
            generator = torch.Generator().manual_seed(0)
            feedback = torch.randn(d_out, width, generator=generator) / math.sqrt(width * d_out)
            self.feedback = feedback.to(device=y.device, dtype=y.dtype)
        return _FloorCut.apply(self, y, *hidden)


def _dfa_signal(error: torch.Tensor) -> torch.Tensor:
    return error


def _sign_signal(error: torch.Tensor) -> torch.Tensor:
    return torch.sign(error) / error.shape[0]


FLOOR_SIGNALS: dict[str, Callable[[torch.Tensor], torch.Tensor] | None] = {
    "DFA": _dfa_signal,
    "sign-DFA": _sign_signal,
    "Shallow": None,
}
