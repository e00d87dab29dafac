"""Reference computations written from the equations (REFERENCE.md), not from the library.

Only the feedback *buffer* is read from the model under test (``state_dict()[key]``); where each
point's slice starts and how it is scaled are recomputed here from the documented recipe.
"""

from __future__ import annotations

import math

import torch


def softmax_ce_error(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``e = dL/dy`` of the mean cross-entropy: ``(softmax(y) - onehot(y*)) / n`` per row."""
    flat = logits.reshape(-1, logits.shape[-1])
    probs = torch.exp(flat - flat.max(dim=1, keepdim=True).values)
    probs = probs / probs.sum(dim=1, keepdim=True)
    onehot = torch.zeros_like(probs)
    onehot[torch.arange(flat.shape[0]), targets.reshape(-1)] = 1.0
    return ((probs - onehot) / flat.shape[0]).reshape(logits.shape)


def slices(
    buffer: torch.Tensor, widths: list[int], *, shared: bool, scaling: str
) -> list[torch.Tensor]:
    """Each point's ``B_l`` (shape ``(d_out, n_l)``) from the raw buffer, by the documented recipe."""
    d_out, n_max = buffer.shape[0], max(widths)
    result, start = [], 0
    for width in widths:
        if scaling == "principled":
            factor = 1.0 / math.sqrt(width * d_out)
        elif scaling == "tinydfa":
            factor = 1.0 / math.sqrt(n_max)
        elif scaling == "nokland":
            factor = 1.0 / math.sqrt(width)
        else:
            factor = 1.0
        offset = 0 if shared else start
        result.append(buffer[:, offset : offset + width] * factor)
        start += width
    return result


def project(signal: torch.Tensor, feedback: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``B_l s`` for every sample (row of the signal), shaped like the point's tensor ``like``."""
    rows = signal.reshape(-1, signal.shape[-1])
    return (rows @ feedback).reshape(like.shape)


def tanh_mlp_forward(x: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]):
    """``a_l = h_{l-1} W_l^T + b_l``, ``h_l = tanh(a_l)`` for hidden layers, linear top.

    Returns the list of layer inputs ``[h_0 = x, h_1, ..., h_{L-1}]`` and the output.
    """
    inputs, h = [], x
    for i, (weight, bias) in enumerate(layers):
        inputs.append(h)
        a = h @ weight.T + bias
        h = a if i == len(layers) - 1 else torch.tanh(a)
    return inputs, h


def linear_grads(delta: torch.Tensor, layer_input: torch.Tensor):
    """``dW = delta^T h_{l-1}`` and ``db = sum(delta)`` over every leading (batch-like) axis."""
    d = delta.reshape(-1, delta.shape[-1])
    h = layer_input.reshape(-1, layer_input.shape[-1])
    return d.T @ h, d.sum(dim=0)


def dfa_tanh_mlp_grads(
    x: torch.Tensor,
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    signal_of_error,
    error_of_output,
    feedback: list[torch.Tensor],
):
    """All ``(dW, db)`` of a tanh MLP under direct feedback: ``delta_l = (B_l s) * (1 - h_l^2)``."""
    inputs, output = tanh_mlp_forward(x, layers)
    error = error_of_output(output)
    signal = signal_of_error(error)
    grads = []
    for i in range(len(layers) - 1):
        h = inputs[i + 1]  # output of hidden layer i
        delta = project(signal, feedback[i], h) * (1 - h**2)
        grads.append(linear_grads(delta, inputs[i]))
    grads.append(linear_grads(error, inputs[-1]))  # the top layer always gets its true gradient
    return grads
