"""Layer-wise rules on the layers users have: Hugging Face ``Conv1D``, PyG ``Linear``, the
refusals (PyG ``GATConv``, custom layers) and local layers (torchfm ``FeaturesLinear``, PyG
``GCNConv``'s bias). ``nn.MultiheadAttention``: tests/test_layerwise_attention.py.

The float64 references are written from the layers' own equations: Hugging Face's ``Conv1D`` is
``y = x V + b`` with ``V`` of shape ``(in, out)``, so BP's input gradient is ``g V^T`` and a rule's
is ``g P^T`` with ``P`` the feedback buffer (``V``'s layout); ``dV = x^T g``, ``db = sum g``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.alignment import weight_alignment
from feedback_alignment.optim import constrain_weight_norm
from feedback_alignment.rules import (
    FA,
    KolenPollack,
    UnsupportedLayerError,
    WeightMirror,
    brSF,
    uSF,
)

Conv1D = pytest.importorskip("transformers.pytorch_utils").Conv1D
pyg_linear = pytest.importorskip("torch_geometric.nn.dense.linear")

TOL = {"rtol": 1e-10, "atol": 1e-12}


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def _in_out_reference(x, target, layers, feedback):
    """Grads of ``sum((y - t)^2)`` for ``x V1 + b1 -> tanh -> V2 + b2`` with feedback ``P_l``."""
    (v1, b1), (v2, b2) = layers
    h1 = torch.tanh(x @ v1 + b1)
    y = h1 @ v2 + b2
    g2 = 2 * (y - target)
    delta1 = (g2 @ feedback[1].T) * (1 - h1**2)
    grads = {
        "0.weight": _flat(x).T @ _flat(delta1),
        "0.bias": _flat(delta1).sum(0),
        "2.weight": _flat(h1).T @ _flat(g2),
        "2.bias": _flat(g2).sum(0),
    }
    return grads, delta1 @ feedback[0].T


def _conv1d_model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(Conv1D(6, 5), nn.Tanh(), Conv1D(3, 6))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.bias.normal_()
    return model


@pytest.mark.parametrize("rule", [FA(seed=1), uSF(), brSF(seed=2)], ids=repr)
def test_hf_conv1d_gradients_match_the_in_out_equations(rule):
    model = _conv1d_model()
    rule.apply(model)
    x = torch.randn(2, 4, 5, requires_grad=True)  # (batch, tokens, features)
    target = torch.randn(2, 4, 3)
    ((model(x) - target) ** 2).sum().backward()
    feedback = rule.feedback_matrices(model)
    assert feedback["0"].shape == (5, 6)  # V's (in, out) layout
    if isinstance(rule, uSF):  # s * sign(V), s = 1/sqrt(3 fan_in), fan_in = V.shape[0]
        expected = torch.sign(model[0].weight.detach()) / math.sqrt(3 * 5)
        torch.testing.assert_close(feedback["0"], expected, **TOL)
    layers = [(model[i].weight.detach(), model[i].bias.detach()) for i in (0, 2)]
    grads, grad_x = _in_out_reference(x.detach(), target, layers, [feedback["0"], feedback["2"]])
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], **TOL, msg=name)
    torch.testing.assert_close(x.grad, grad_x, **TOL)


def test_hf_conv1d_with_feedback_equal_to_the_weight_is_backprop_and_kp_learns_from_dv():
    bp = _conv1d_model()
    model = copy.deepcopy(bp)
    rule = KolenPollack(seed=0)
    rule.apply(model)
    with torch.no_grad():
        for i in (0, 2):
            model[i].weight_feedback.copy_(model[i].weight)
    x, target = torch.randn(3, 5), torch.randn(3, 3)
    ((bp(x) - target) ** 2).sum().backward()
    ((model(x) - target) ** 2).sum().backward()
    for i in (0, 2):
        torch.testing.assert_close(model[i].weight.grad, bp[i].weight.grad, **TOL)
        torch.testing.assert_close(model[i].bias.grad, bp[i].bias.grad, **TOL)
        torch.testing.assert_close(model[i].weight_feedback.grad, bp[i].weight.grad, **TOL)


def test_hf_conv1d_weight_mirror_learns_the_weight_in_its_own_layout():
    model = _conv1d_model()
    rule = WeightMirror(seed=0)
    rule.apply(model)
    rule.mirror(model, steps=80, batch_size=256, generator=torch.Generator().manual_seed(0))
    assert all(a.angle < 25 for a in weight_alignment(model, rule).values())


def test_gpt2_from_a_small_config_trains_with_fa_and_b_equal_w_is_backprop():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=40,
        n_positions=12,
        n_embd=16,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    bp = transformers.GPT2LMHeadModel(config).double()
    model = copy.deepcopy(bp)
    rule = FA(seed=0)
    rule.apply(model)
    converted = rule.points(model)
    assert "transformer.h.0.attn.c_attn" in converted and "lm_head" in converted
    state = model.state_dict()
    for key in [k for k in state if k.endswith("weight_feedback")]:
        state[key] = state[key.replace("weight_feedback", "weight")].clone()
    model.load_state_dict(state)
    tokens = torch.randint(0, 40, (2, 7))
    bp(tokens, labels=tokens).loss.backward()
    model(tokens, labels=tokens).loss.backward()
    for (name, p_bp), (_, p) in zip(bp.named_parameters(), model.named_parameters(), strict=True):
        torch.testing.assert_close(p.grad, p_bp.grad, rtol=1e-9, atol=1e-11, msg=name)


def test_pyg_linear_matches_the_linear_equations_and_keeps_its_feedback_in_state_dict():
    torch.manual_seed(0)
    lazy = nn.Sequential(pyg_linear.Linear(-1, 6), nn.Tanh(), pyg_linear.Linear(6, 3))
    with pytest.raises(UnsupportedLayerError, match=r"'0' \(Linear\) is a lazy layer.*run one"):
        FA().apply(lazy)
    x = torch.randn(2, 4, 5)  # (graphs, nodes, features)
    lazy(x)  # creates the weight
    rule = FA(seed=3)
    rule.apply(lazy)
    state = lazy.state_dict()
    assert {"0.weight_feedback", "2.weight_feedback"} <= set(state)
    x.requires_grad_()
    target = torch.randn(2, 4, 3)
    ((lazy(x) - target) ** 2).sum().backward()
    (w1, b1), (w2, b2) = [(lazy[i].weight.detach(), lazy[i].bias.detach()) for i in (0, 2)]
    p1, p2 = state["0.weight_feedback"], state["2.weight_feedback"]
    h1 = torch.tanh(x.detach() @ w1.T + b1)
    g2 = 2 * (h1 @ w2.T + b2 - target)
    delta1 = (g2 @ p2) * (1 - h1**2)
    torch.testing.assert_close(lazy[2].weight.grad, _flat(g2).T @ _flat(h1), **TOL)
    torch.testing.assert_close(lazy[0].weight.grad, _flat(delta1).T @ _flat(x.detach()), **TOL)
    torch.testing.assert_close(lazy[0].bias.grad, _flat(delta1).sum(0), **TOL)
    torch.testing.assert_close(x.grad, delta1 @ p1, **TOL)
    # a checkpoint into a fresh converted model carries the feedback; remove restores the keys
    fresh = nn.Sequential(pyg_linear.Linear(5, 6), nn.Tanh(), pyg_linear.Linear(6, 3))
    FA(seed=99).apply(fresh)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.state_dict()["0.weight_feedback"], p1, rtol=0, atol=0)
    rule.remove(lazy)
    assert set(lazy.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_pyg_models_convert_or_are_refused_with_the_reason():
    pyg = pytest.importorskip("torch_geometric.nn.models")
    torch.manual_seed(0)
    sage = pyg.GraphSAGE(4, 8, 2, out_channels=3)
    assert FA().apply(sage) is sage
    gcn = pyg.GCN(4, 8, 2, out_channels=3)  # GCNConv: a converted lin and an additive bias
    rule = uSF()
    rule.apply(gcn)
    assert rule.points(gcn) == ["convs.0.lin", "convs.1.lin"]
    with pytest.raises(
        UnsupportedLayerError,
        match=r"'convs.0' \(GATConv\) holds its own parameters \(att_src, att_dst, bias\).*"
        r"FA does not know.*exclude=\['convs.0'\]",
    ):
        FA().apply(pyg.GAT(4, 8, 2, out_channels=3))


def test_multihead_attention_is_converted_or_excluded_on_request():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.attn(x, x, x, need_weights=False)[0])

    model = Block()
    rule = FA()
    rule.apply(model)
    assert rule.points(model) == ["attn", "attn.out_proj", "head"]
    rule.remove(model)
    rule.apply(model, exclude=["attn"])
    assert rule.points(model) == ["head"]
    model(torch.randn(2, 4, 8)).sum().backward()
    assert model.attn.in_proj_weight.grad is not None


def test_torchfm_features_linear_learns_locally_in_deepfm():
    dfm = pytest.importorskip("torchfm.model.dfm")
    torch.manual_seed(0)
    bp = dfm.DeepFactorizationMachineModel([3, 4, 5], 4, (8,), 0.0)
    model = copy.deepcopy(bp)
    rule = FA(seed=0)
    rule.apply(model)
    assert rule.points(model) == ["mlp.mlp.0", "mlp.mlp.4"]
    x = torch.tensor([[0, 1, 2], [2, 3, 4], [1, 0, 0]])
    y = torch.tensor([1.0, 0.0, 1.0])
    F.binary_cross_entropy(bp(x), y).backward()
    F.binary_cross_entropy(model(x), y).backward()
    # the linear part reads no error through any weight matrix: its gradient is BP's
    for name in ("linear.fc.weight", "linear.bias", "mlp.mlp.4.weight"):
        torch.testing.assert_close(
            model.get_parameter(name).grad, bp.get_parameter(name).grad, **TOL, msg=name
        )
    assert not torch.allclose(model.mlp.mlp[0].weight.grad, bp.mlp.mlp[0].weight.grad)


def test_refusal_of_a_custom_layer_names_path_type_rule_and_remedy():
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.ones(3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gain

    with pytest.raises(
        UnsupportedLayerError,
        match=r"(?s)uSF cannot train 1 module.*'1' \(Scaled\) holds its own parameters \(gain\).*"
        r"exclude=\['1'\]",
    ):
        uSF().apply(nn.Sequential(nn.Linear(3, 3), Scaled()))


def test_weight_norm_constraint_covers_hf_conv1d_and_pyg_linear():
    torch.manual_seed(0)
    model = nn.Sequential(Conv1D(6, 5), nn.Tanh(), pyg_linear.Linear(6, 3))
    norms = [float(model[i].weight.norm()) for i in (0, 2)]
    assert constrain_weight_norm(model) == ["0", "2"]
    rule = uSF()
    rule.apply(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 5)).pow(2).sum().backward()
        optimizer.step()
    for i, norm in zip((0, 2), norms, strict=True):
        assert float(model[i].weight.norm()) == pytest.approx(norm, rel=1e-9)
