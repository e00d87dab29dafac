"""``nn.MultiheadAttention`` under layer-wise rules: its input projection gets feedback.

References, in float64: with ``F = W`` the converted attention is torch's own
``nn.MultiheadAttention`` (outputs, attention weights and every gradient, over layouts, masks and
options); with ``F`` random it equals the attention written here from the equations, with each
projection ``y = x W^T + b`` whose input gradient is ``g F`` built from plain autograd
(``x.detach() W^T + b + (x F^T - (x F^T).detach())``).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from feedback_alignment.rules import FA, KolenPollack, UnsupportedLayerError, uSF

TOL = {"rtol": 1e-9, "atol": 1e-11}
E, H = 8, 2


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)


def _attention(batch_first: bool = True, bias: bool = True) -> nn.MultiheadAttention:
    torch.manual_seed(0)
    module = nn.MultiheadAttention(E, H, bias=bias, batch_first=batch_first)
    if bias:
        with torch.no_grad():
            module.in_proj_bias.normal_()
            module.out_proj.bias.normal_()
    return module


def _set_feedback_to_weights(module: nn.MultiheadAttention) -> None:
    with torch.no_grad():
        module.weight_feedback.copy_(module.in_proj_weight)
        module.out_proj.weight_feedback.copy_(module.out_proj.weight)


def _inputs(shape_q, shape_kv, seed=1):
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(shape_q, generator=generator).requires_grad_()
    key = torch.randn(shape_kv, generator=generator).requires_grad_()
    value = torch.randn(shape_kv, generator=generator).requires_grad_()
    return query, key, value


CASES = {
    "self-batch-first": dict(batch_first=True, cross=False),
    "cross-seq-first": dict(batch_first=False, cross=True),
    "causal-bool-mask": dict(batch_first=True, cross=False, mask="causal"),
    "float-mask-3d-padding": dict(batch_first=True, cross=True, mask="float3d", padding=True),
    "padding-no-average": dict(batch_first=False, cross=True, padding=True, average=False),
    "no-weights-sdpa": dict(batch_first=True, cross=True, padding=True, need_weights=False),
    "no-bias-causal-sdpa": dict(batch_first=True, bias=False, mask="causal", need_weights=False),
    "unbatched": dict(batch_first=True, cross=True, unbatched=True),
}


def _call_args(case: dict):
    batch, target, source = 3, 4, (5 if case.get("cross") else 4)
    if case.get("unbatched"):
        shapes = (target, E), (source, E)
    elif case["batch_first"]:
        shapes = (batch, target, E), (batch, source, E)
    else:
        shapes = (target, batch, E), (source, batch, E)
    query, key, value = _inputs(*shapes)
    kwargs = {
        "need_weights": case.get("need_weights", True),
        "average_attn_weights": case.get("average", True),
    }
    if case.get("mask") == "causal":
        kwargs["attn_mask"] = torch.ones(target, source, dtype=torch.bool).triu(1)
        kwargs["is_causal"] = True
    elif case.get("mask") == "float3d":
        kwargs["attn_mask"] = torch.randn(batch * H, target, source)
    if case.get("padding"):
        padding = torch.zeros(batch, source, dtype=torch.bool)
        padding[0, -2:] = True
        kwargs["key_padding_mask"] = padding
    if not case.get("cross"):
        key, value = query, query
    return (query, key, value), kwargs


def _run(module, args, kwargs):
    output, weights = module(*args, **kwargs)
    generator = torch.Generator().manual_seed(7)
    loss = (output * torch.randn(output.shape, generator=generator)).sum()
    if weights is not None:
        loss = loss + (weights * torch.randn(weights.shape, generator=generator)).sum()
    leaves = [*{id(a): a for a in args}.values(), *module.parameters()]
    leaves = [t for t in leaves if t.requires_grad]
    names = [f"input{i}" for i in range(len({id(a) for a in args}))]
    names += [n for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, leaves)
    return output.detach(), weights, dict(zip(names, grads, strict=True))


@pytest.mark.parametrize("name", list(CASES))
def test_feedback_equal_to_the_weights_is_torchs_attention(name):
    case = CASES[name]
    bp = _attention(case["batch_first"], case.get("bias", True))
    converted = copy.deepcopy(bp)
    rule = FA(seed=0)
    rule.apply(converted)
    assert rule.points(converted) == ["", "out_proj"]
    _set_feedback_to_weights(converted)
    args, kwargs = _call_args(case)
    out_bp, weights_bp, grads_bp = _run(bp, args, kwargs)
    out, weights, grads = _run(converted, args, kwargs)
    torch.testing.assert_close(out, out_bp, **TOL)
    if weights_bp is None:
        assert weights is None
    else:
        torch.testing.assert_close(weights, weights_bp, **TOL)
    for key in grads_bp:
        if key.endswith("weight_feedback"):
            continue
        torch.testing.assert_close(grads[key], grads_bp[key], **TOL, msg=key)


def _feedback_linear(x, weight, bias, feedback):
    """``x W^T + b`` whose input gradient is ``g F`` and weight gradient ``g^T x``."""
    through_f = x @ feedback.T
    out = x.detach() @ weight.T + (through_f - through_f.detach())
    return out if bias is None else out + bias


def _reference(module, feedback_in, feedback_out, query, key, value, padding):
    """Batch-first attention from the equations, projections with feedback."""
    w, b = module.in_proj_weight, module.in_proj_bias
    rows = [slice(i * E, (i + 1) * E) for i in range(3)]
    q, k, v = (
        _feedback_linear(x, w[r], b[r], feedback_in[r])
        for x, r in zip((query, key, value), rows, strict=True)
    )
    batch, target, source, d = q.shape[0], q.shape[1], k.shape[1], E // H
    q = q.view(batch, target, H, d).transpose(1, 2)
    k = k.view(batch, source, H, d).transpose(1, 2)
    v = v.view(batch, source, H, d).transpose(1, 2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d)
    scores = scores.masked_fill(padding.view(batch, 1, 1, source), float("-inf"))
    heads = torch.softmax(scores, dim=-1) @ v
    joined = heads.transpose(1, 2).reshape(batch, target, E)
    return _feedback_linear(joined, module.out_proj.weight, module.out_proj.bias, feedback_out)


@pytest.mark.parametrize("rule", [FA(seed=3), uSF(), KolenPollack(seed=4)], ids=repr)
def test_random_feedback_matches_the_attention_equations(rule):
    reference = _attention(batch_first=True)
    module = copy.deepcopy(reference)
    rule.apply(module)
    feedback = rule.feedback_matrices(module)
    assert feedback[""].shape == (3 * E, E) and set(rule.weights(module)) == {"", "out_proj"}
    query, key, value = _inputs((3, 4, E), (3, 5, E))
    padding = torch.zeros(3, 5, dtype=torch.bool)
    padding[1, :2] = True
    output, _ = module(query, key, value, key_padding_mask=padding, need_weights=False)
    g = torch.randn(output.shape)
    ours = torch.autograd.grad(output, [query, key, value, *reference_params(module)], g)
    expected_out = _reference(
        reference, feedback[""], feedback["out_proj"], query, key, value, padding
    )
    torch.testing.assert_close(output, expected_out, **TOL)
    expected = torch.autograd.grad(
        expected_out, [query, key, value, *reference_params(reference)], g
    )
    for a, b in zip(ours, expected, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    if isinstance(rule, KolenPollack):
        output, _ = module(query, key, value, need_weights=False)
        output.backward(g)
        torch.testing.assert_close(module.weight_feedback.grad, module.in_proj_weight.grad)


def reference_params(module: nn.MultiheadAttention) -> list[torch.Tensor]:
    return [
        module.in_proj_weight,
        module.in_proj_bias,
        module.out_proj.weight,
        module.out_proj.bias,
    ]


def test_transformer_encoder_with_feedback_equal_to_weights_is_backprop():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=16, dropout=0.0, batch_first=True)
    bp = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    model = copy.deepcopy(bp)
    rule = FA(seed=0)
    rule.apply(model)
    assert "layers.0.self_attn" in rule.points(model)
    state = model.state_dict()
    for key in [k for k in state if k.endswith("weight_feedback")]:
        source = key.replace("weight_feedback", "weight")
        state[key] = state[
            source if source in state else key[: -len("weight_feedback")] + "in_proj_weight"
        ]
    model.load_state_dict(state)
    x = torch.randn(2, 5, E)
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    bp(x, mask=mask, is_causal=True).pow(2).sum().backward()
    model(x, mask=mask, is_causal=True).pow(2).sum().backward()
    for (name, p_bp), (_, p) in zip(bp.named_parameters(), model.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_bp.grad, **TOL, msg=name)


@pytest.mark.parametrize(
    ("options", "what"),
    [
        ({"kdim": 5, "vdim": 5}, r"separate q/k/v projection weights"),
        ({"add_bias_kv": True}, r"add_bias_kv=True"),
        ({"add_zero_attn": True}, r"add_zero_attn=True"),
    ],
)
def test_unsupported_attention_options_are_refused_with_the_remedy(options, what):
    model = nn.Sequential(nn.Linear(E, E))
    model.attn = nn.MultiheadAttention(E, H, **options)
    with pytest.raises(
        UnsupportedLayerError,
        match=rf"'attn' \(MultiheadAttention\) uses {what}.*exclude=\['attn'\]",
    ):
        FA().apply(model)
    rule = FA()
    rule.apply(model, exclude=["attn"])
    assert rule.points(model) == ["0"]
