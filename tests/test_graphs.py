"""DFA on PyTorch Geometric's own layers: float64 gradients against references from the equations.

For a two-layer graph network with its feedback point after the hidden activation,
``delta_1 = (B e) * f'(a_1)`` per node (nodes are the batch, ``B`` is shared by all nodes), the
first layer's parameters get the local backprop of ``delta_1`` through that layer alone, and the
top layer gets backpropagation's gradient. ``e`` is written by hand (softmax minus one-hot over the
labelled nodes, divided by their number) and ``B`` is read from the feedback buffer and sliced and
scaled by the documented recipe (``oracle.slices``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import feedback_alignment as fa
from oracle import slices, softmax_ce_error

pytest.importorskip("torch_geometric")

from feedback_alignment.models.gnn import GNN_KINDS, build_gnn

KEY = fa.FEEDBACK_BUFFER
TOL = {"rtol": 1e-9, "atol": 1e-12}


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)


def _tiny_graph():
    """6 nodes, an undirected path plus a chord, 5 features, 3 classes, 4 labelled nodes."""
    src = [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 0, 3]
    dst = [1, 0, 2, 1, 3, 2, 4, 3, 5, 4, 3, 0]
    edge_index = torch.tensor([src, dst])
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=generator)
    y = torch.tensor([0, 1, 2, 1, 0, 2])
    mask = torch.tensor([True, True, False, True, True, False])
    return x, edge_index, y, mask


def _model(kind: str):
    torch.manual_seed(0)
    model = build_gnn(
        kind, 5, 3, hidden=8, heads=2, dropout=0.0, attention_dropout=(0.0, 0.0)
    ).double()
    return model


def _masked_loss(logits, y, mask):
    return F.cross_entropy(logits[mask], y[mask])


def _hand_error(logits, y, mask):
    """``e = dL/dy``: zero on unlabelled nodes, ``(softmax - onehot) / n_labelled`` elsewhere."""
    e = torch.zeros_like(logits)
    e[mask] = softmax_ce_error(logits[mask], y[mask])
    return e


@pytest.mark.parametrize("kind", GNN_KINDS)
def test_dfa_gradient_of_each_pyg_layer(kind):
    x, edge_index, y, mask = _tiny_graph()
    model = _model(kind)
    rule = fa.DFA(seed=5)
    rule.apply(model)  # automatic placement: one point, the hidden activation module
    _masked_loss(model(x, edge_index), y, mask).backward()
    assert rule.layout(model).names == ("act",)
    buffer = model.state_dict()[KEY].clone()
    rule.remove(model)  # the reference forward passes below run on the plain model

    first = [p for p in model.conv1.parameters()]
    top = [p for p in model.conv2.parameters()]
    # independent forward, layer by layer, with the graph cut by hand at the point
    h = model.act(model.conv1(x, edge_index))  # (nodes, hidden)
    h_cut = h.detach()
    logits = model.conv2(h_cut, edge_index)
    e = _hand_error(logits.detach(), y, mask)
    (b,) = slices(buffer, [h.shape[1]], shared=True, scaling="principled")
    signal = e @ b  # B e per node: (nodes, d_out) @ (d_out, hidden)
    expected_first = torch.autograd.grad(h, first, grad_outputs=signal)
    expected_top = torch.autograd.grad(_masked_loss(logits, y, mask), top)
    for param, grad in zip(first, expected_first, strict=True):
        torch.testing.assert_close(param.grad, grad, **TOL)
    for param, grad in zip(top, expected_top, strict=True):
        torch.testing.assert_close(param.grad, grad, **TOL)
    # a DFA update is not BP's: the hidden layer's gradient differs from backprop's
    bp_first = torch.autograd.grad(
        _masked_loss(model.conv2(model.act(model.conv1(x, edge_index)), edge_index), y, mask),
        first,
    )
    assert not torch.allclose(first[-1].grad, bp_first[-1])


def test_gcn_dfa_matches_the_dense_formula():
    """GCN written out: ``A_hat = D^-1/2 (A + I) D^-1/2``, ``h = relu(A_hat X W1^T + b1)``,
    ``delta = (B e) * 1[h > 0]``, ``dW1 = (A_hat X)^T delta``, ``db1 = sum(delta)``."""
    x, edge_index, y, mask = _tiny_graph()
    model = _model("gcn")
    fa.DFA(seed=2, scale="nokland").apply(model)
    _masked_loss(model(x, edge_index), y, mask).backward()

    n = x.shape[0]
    adjacency = torch.zeros(n, n)
    adjacency[edge_index[1], edge_index[0]] = 1.0
    adjacency += torch.eye(n)
    degree = adjacency.sum(dim=1)
    a_hat = adjacency / torch.sqrt(degree[:, None] * degree[None, :])
    w1, b1 = model.conv1.lin.weight.detach(), model.conv1.bias.detach()
    w2, b2 = model.conv2.lin.weight.detach(), model.conv2.bias.detach()
    ax = a_hat @ x
    h = torch.relu(ax @ w1.T + b1)
    logits = a_hat @ h @ w2.T + b2
    e = _hand_error(logits, y, mask)
    (b,) = slices(model.state_dict()[KEY], [8], shared=True, scaling="nokland")
    delta = (e @ b) * (h > 0)
    torch.testing.assert_close(model.conv1.lin.weight.grad, delta.T @ ax, **TOL)
    torch.testing.assert_close(model.conv1.bias.grad, delta.sum(0), **TOL)
    ah = a_hat @ h
    torch.testing.assert_close(model.conv2.lin.weight.grad, e.T @ ah, **TOL)
    torch.testing.assert_close(model.conv2.bias.grad, e.sum(0), **TOL)


@pytest.mark.parametrize("kind", GNN_KINDS)
def test_dfa_training_lowers_the_loss(kind):
    x, edge_index, y, mask = _tiny_graph()
    model = _model(kind)
    fa.DFA(seed=0).apply(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = _masked_loss(model(x, edge_index), y, mask)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_unknown_layer_is_refused():
    with pytest.raises(ValueError, match="unknown graph layer 'sage'"):
        build_gnn("sage", 5, 3)
    with pytest.raises(ValueError, match="multiple of heads"):
        build_gnn("gat", 5, 3, hidden=10, heads=4)
