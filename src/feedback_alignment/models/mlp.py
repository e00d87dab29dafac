"""A multilayer perceptron in the papers' form: ``h_l = f(W_l h_{l-1} + b_l)``, linear top layer."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


class MLP(nn.Sequential):
    """``Linear -> activation`` for each hidden width, then a linear top layer.

    Being an ``nn.Sequential`` of standard modules, it is read by automatic feedback placement: one
    point after each hidden activation. Inputs with extra leading axes (tokens) and inputs of more
    than one feature axis (images) are accepted: the features are the trailing ``in_features``
    values, flattened by ``flatten``.

    Args:
        sizes: ``[in_features, hidden_1, ..., hidden_k, out_features]``.
        activation: ``"tanh"`` (the papers' default), ``"relu"``, ``"leaky_relu"``, ``"sigmoid"``
            or ``"gelu"``.
        flatten: flatten all axes after the first (for image tensors ``(N, C, H, W)``).
        zero_init: initialise hidden weights to zero (Nøkland 2016's choice for DFA with tanh;
            it stalls BP, so use it with direct feedback only).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "tanh",
        *,
        flatten: bool = False,
        zero_init: bool = False,
    ) -> None:
        if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
            raise ValueError(f"MLP sizes must be >= 2 positive widths, got {list(sizes)}")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; choose one of {list(_ACTIVATIONS)}"
            )
        layers: list[nn.Module] = [nn.Flatten()] if flatten else []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            linear = nn.Linear(int(fan_in), int(fan_out))
            hidden = i < len(sizes) - 2
            if zero_init and hidden:
                nn.init.zeros_(linear.weight)
                nn.init.zeros_(linear.bias)
            layers.append(linear)
            if hidden:
                layers.append(_ACTIVATIONS[activation]())
        super().__init__(*layers)
        self.sizes = [int(s) for s in sizes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)
