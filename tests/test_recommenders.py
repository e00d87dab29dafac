"""DFA on click-through models: float64 gradients against references written from the equations.

Each reference re-runs the model's forward by hand, cutting the graph (``detach``) at the paper's
feedback points and keeping each point's tensor ``h_l``. Under DFA every parameter's gradient is
then the local backprop of the true error ``e = dL/dlogit = (sigmoid(logit) - y) / n`` from the
output through the top block, plus, for each point, the local backprop of ``B_l e`` from ``h_l``
through the block below it. ``e`` is written by hand and ``B_l`` is read from the feedback buffer
with the documented slicing and scaling (``oracle.slices``).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import feedback_alignment as fa
from feedback_alignment.models.recommender import (
    AutoInt,
    DeepCross,
    DeepFM,
    build_recommender,
    fm_interaction,
)
from oracle import slices

KEY = fa.FEEDBACK_BUFFER
TOL = {"rtol": 1e-9, "atol": 1e-12}
FIELDS = (4, 6, 3, 5)


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)


def _table(n: int = 12):
    generator = torch.Generator().manual_seed(0)
    x = torch.stack([torch.randint(0, d, (n,), generator=generator) for d in FIELDS], dim=1)
    y = torch.randint(0, 2, (n,), generator=generator).double()
    return x, y


def _mlp_cut(mlp, z, points):
    for block in mlp.blocks:
        z = block(z)
        points.append(z)
        z = z.detach()
    return z if mlp.head is None else mlp.head(z).squeeze(-1)


def _deepfm_by_hand(model: DeepFM, x):
    points = []
    v = model.embedding(x)
    logit = model.linear(x) + fm_interaction(v) + _mlp_cut(model.mlp, v.flatten(1), points)
    return logit, points


def _dcn_by_hand(model: DeepCross, x):
    points = [model.embedding(x)]
    e = points[0].detach().flatten(1)
    c = e
    for layer in model.cross:
        c = layer(e, c)
        points.append(c)
        c = c.detach()
    z = _mlp_cut(model.mlp, e, points)
    return model.linear(torch.cat([c, z], dim=1)).squeeze(-1), points


def _autoint_by_hand(model: AutoInt, x):
    points = [model.embedding(x)]
    v = points[0].detach()
    a = model.attention_embedding(v)
    points.append(a)
    a = a.detach()
    for i, layer in enumerate(model.attention):
        a, _ = layer(a, a, a, need_weights=False)
        if i < len(model.attention) - 1:
            points.append(a)
            a = a.detach()
    a = torch.relu(a + model.residual(v))
    points.append(a)
    a = a.detach().flatten(1)
    mlp = _mlp_cut(model.mlp, v.flatten(1), points)
    return model.linear(x) + model.attention_fc(a).squeeze(-1) + mlp, points


CASES = {
    "deepfm": (dict(embed_dim=3, mlp_dims=(7, 5), dropout=0.0), _deepfm_by_hand),
    "dcn": (dict(embed_dim=3, cross_layers=2, mlp_dims=(7, 5)), _dcn_by_hand),
    "autoint": (
        dict(embed_dim=3, attention_dim=4, heads=2, attention_layers=2, mlp_dims=(7, 5)),
        _autoint_by_hand,
    ),
}


def _expected_grads(model, by_hand, x, y, buffer, shared, scaling):
    params = [p for p in model.parameters()]
    logit, points = by_hand(model, x)
    e = (torch.sigmoid(logit.detach()) - y) / len(y)  # dL/dlogit of the mean BCE, by hand
    widths = [h[0].numel() for h in points]
    total = list(
        torch.autograd.grad(logit, params, grad_outputs=e, allow_unused=True, retain_graph=True)
    )
    for h, b in zip(points, slices(buffer, widths, shared=shared, scaling=scaling), strict=True):
        signal = (e[:, None] @ b).reshape(h.shape)  # B_l e per sample
        local = torch.autograd.grad(
            h, params, grad_outputs=signal, allow_unused=True, retain_graph=True
        )
        total = [
            t if g is None else (g if t is None else t + g)
            for t, g in zip(total, local, strict=True)
        ]
    return params, total


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("kind", list(CASES))
def test_dfa_gradient_of_each_recommender(kind, shared):
    kwargs, by_hand = CASES[kind]
    torch.manual_seed(0)
    model = build_recommender(kind, FIELDS, **kwargs).double()
    rule = fa.DFA(seed=4, shared=shared)
    rule.apply(model, points=model.block_outputs(), true_gradient=model.bypass_modules())
    x, y = _table()
    F.binary_cross_entropy_with_logits(model(x), y).backward()
    assert list(rule.layout(model).names) == model.block_outputs()
    buffer = model.state_dict()[KEY].clone()
    rule.remove(model)

    params, expected = _expected_grads(model, by_hand, x, y, buffer, shared, "principled")
    names = [n for n, _ in model.named_parameters()]
    for name, param, grad in zip(names, params, expected, strict=True):
        if grad is None:
            assert param.grad is None or not param.grad.any(), name
        else:
            torch.testing.assert_close(param.grad, grad, **TOL, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("kind", list(CASES))
def test_shallow_freezes_every_block_below_a_point(kind):
    kwargs, _ = CASES[kind]
    torch.manual_seed(0)
    model = build_recommender(kind, FIELDS, **kwargs).double()
    fa.Shallow().apply(model, points=model.block_outputs(), true_gradient=model.bypass_modules())
    x, y = _table()
    F.binary_cross_entropy_with_logits(model(x), y).backward()
    assert model.mlp.blocks[0][0].weight.grad is None
    trained = [n for n, p in model.named_parameters() if p.grad is not None and p.grad.any()]
    if kind == "deepfm":  # embeddings still learn through the FM term (as in the paper)
        assert "embedding.embedding.weight" in trained
    else:  # a point sits on the embeddings: only the top layers learn
        assert "embedding.embedding.weight" not in trained


@pytest.mark.parametrize("kind", ["fm", *CASES])
def test_training_lowers_the_loss(kind):
    kwargs = CASES[kind][0] if kind in CASES else {"embed_dim": 3}
    torch.manual_seed(0)
    model = build_recommender(kind, FIELDS, **kwargs).double()
    rule = fa.DFA(seed=0) if kind != "fm" else fa.BP()
    points = model.block_outputs()
    if points:
        rule.apply(model, points=points, true_gradient=model.bypass_modules())
    else:
        rule.apply(model)
    x, y = _table(32)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_deepfm_fm_term_is_refused_unless_named():
    """The FM term reaches the embedding that feeds the MLP without a feedback point on the way:
    the embedding would learn by backprop through it. The cut verification refuses that unless the
    embedding is named as a hybrid (the paper's placement), or a point sits on the embedding."""
    torch.manual_seed(0)
    model = build_recommender("deepfm", FIELDS, **CASES["deepfm"][0]).double()
    x, y = _table()
    rule = fa.DFA()
    rule.apply(model, points=model.block_outputs())
    with pytest.raises(
        fa.PlacementError,
        match=r"'mlp.blocks.0.3' does not cut.*embedding\.embedding\.weight.*points=\['embedding.embedding'",
    ):
        model(x)
    rule.remove(model)
    fa.Shallow().apply(model, points=["embedding", *model.block_outputs()])
    F.binary_cross_entropy_with_logits(model(x), y).backward()
    assert model.embedding.embedding.weight.grad is None


def test_fm_has_no_place_for_feedback():
    model = build_recommender("fm", FIELDS, embed_dim=3)
    assert model.block_outputs() == []
    with pytest.raises(fa.PlacementError, match="no place for feedback"):
        fa.DFA().apply(model)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown recommender 'xdeepfm'"):
        build_recommender("xdeepfm", FIELDS)
    with pytest.raises(ValueError, match="positive vocabulary sizes"):
        build_recommender("deepfm", (3, 0))


# --- torchfm's own implementations, converted unmodified (the paper used them) -----------------


def _torchfm_mlp_cut(sequential, z, points):
    """torchfm's MultiLayerPerceptron with the graph cut after every ReLU (automatic points)."""
    for layer in sequential:
        z = layer(z)
        if isinstance(layer, torch.nn.ReLU):
            points.append(z)
            z = z.detach()
    return z


def test_torchfm_deepfm_and_dcn_convert_unmodified():
    """Automatic placement finds torchfm's MLP ReLUs; the FM term (DeepFM) and the cross network
    (DCN) read the embedding that feeds the MLP, so the automatic placement is refused until the
    embedding is named a hybrid (``true_gradient=["embedding"]``, the paper's setting). The error
    is taken at the *probability* output (``e = dL/dp = (p - y) / (p (1 - p) n)`` for BCELoss),
    since no module outputs the logit."""
    dfm = pytest.importorskip("torchfm.model.dfm")
    dcn = pytest.importorskip("torchfm.model.dcn")
    x, y = _table()
    torch.manual_seed(0)
    models = {
        "deepfm": dfm.DeepFactorizationMachineModel(FIELDS, 3, (7, 5), 0.0).double(),
        "dcn": dcn.DeepCrossNetworkModel(FIELDS, 3, 2, (7, 5), 0.0).double(),
    }
    for name, model in models.items():
        rule = fa.DFA(seed=1)
        rule.apply(model)
        with pytest.raises(fa.PlacementError, match=r"embedding\.embedding\.weight"):
            model(x)
        rule.remove(model)
        rule.apply(model, true_gradient=["embedding"])
        F.binary_cross_entropy(model(x), y).backward()
        assert len(rule.layout(model).names) == 2, name
        buffer = model.state_dict()[KEY].clone()
        rule.remove(model)

        points = []
        if name == "deepfm":
            v = model.embedding(x)
            mlp = _torchfm_mlp_cut(model.mlp.mlp, v.view(-1, model.embed_output_dim), points)
            p = torch.sigmoid((model.linear(x) + model.fm(v) + mlp).squeeze(1))
        else:
            v = model.embedding(x).view(-1, model.embed_output_dim)
            mlp = _torchfm_mlp_cut(model.mlp.mlp, v, points)
            p = torch.sigmoid(model.linear(torch.cat([model.cn(v), mlp], dim=1)).squeeze(1))
        pd = p.detach()
        e = (pd - y) / (pd * (1 - pd) * len(y))
        params = list(model.parameters())
        total = list(torch.autograd.grad(p, params, e, retain_graph=True, allow_unused=True))
        widths = [h.shape[1] for h in points]
        for h, b in zip(
            points, slices(buffer, widths, shared=True, scaling="principled"), strict=True
        ):
            local = torch.autograd.grad(
                h, params, e[:, None] @ b, retain_graph=True, allow_unused=True
            )
            total = [
                t if g is None else (g if t is None else t + g)
                for t, g in zip(total, local, strict=True)
            ]
        for (pname, param), grad in zip(model.named_parameters(), total, strict=True):
            if grad is not None:
                torch.testing.assert_close(
                    param.grad, grad, **TOL, msg=lambda m, n=f"{name} {pname}": f"{n}: {m}"
                )


def test_torchfm_autoint_sequence_first_attention_is_a_point():
    """torchfm's AutoInt runs nn.MultiheadAttention sequence-first ``(fields, batch, dim)``: the
    attention layers are automatic points read with their batch axis at 1. Its residual
    ``V_res_embedding(embed_x)`` reaches the embedding around them, so automatic placement is
    refused until a point sits on the embedding (then nothing below it learns under Shallow)."""
    afi = pytest.importorskip("torchfm.model.afi")
    torch.manual_seed(0)
    model = afi.AutomaticFeatureInteractionModel(FIELDS, 3, 4, 2, 2, (7, 5), (0.0, 0.0, 0.0))
    x, y = _table()
    x, y = x[:6], y[:6]  # 6 samples, 3 fields: a (fields, batch) mix-up would show
    rule = fa.DFA()
    rule.apply(model)
    assert sorted(rule.points(model)) == [
        "mlp.mlp.2",
        "mlp.mlp.6",
        "self_attns.0",
        "self_attns.1",
    ]
    with pytest.raises(fa.PlacementError, match=r"embedding\.embedding\.weight"):
        model(x)
    rule.remove(model)
    points = ["embedding", "self_attns.0", "self_attns.1", "mlp.mlp.2", "mlp.mlp.6"]
    rule.apply(model, points=points)
    F.binary_cross_entropy(model(x), y).backward()
    assert set(rule.layout(model).names) == set(points)
    assert model.embedding.embedding.weight.grad is not None
    rule.remove(model)
    model.zero_grad(set_to_none=True)
    fa.Shallow().apply(model, points=points)
    F.binary_cross_entropy(model(x), y).backward()
    for pname, param in model.named_parameters():
        below = pname.startswith(("embedding.", "atten_embedding.", "self_attns.0."))
        assert (param.grad is None) == below or not below, pname
