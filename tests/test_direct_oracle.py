"""Float64 gradients of the direct-feedback rules against references written from the equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
from oracle import dfa_tanh_mlp_grads, linear_grads, project, slices, softmax_ce_error

KEY = fa.FEEDBACK_BUFFER


@pytest.fixture(autouse=True)
def _float64():
    """Every oracle comparison runs in float64 (conftest restores the default afterwards)."""
    torch.set_default_dtype(torch.float64)


def _tanh_mlp(sizes):
    torch.manual_seed(0)
    return fa.models.MLP(sizes, "tanh").double()


def _layers(model):
    linears = [m for m in model if isinstance(m, nn.Linear)]
    return [(m.weight.detach(), m.bias.detach()) for m in linears], linears


def _assert_grads(linears, expected):
    for layer, (dw, db) in zip(linears, expected, strict=True):
        torch.testing.assert_close(layer.weight.grad, dw, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(layer.bias.grad, db, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("feedback", ["gaussian", "uniform", "rademacher"])
@pytest.mark.parametrize("scale", ["principled", "tinydfa", "nokland", "none"])
def test_dfa_tanh_mlp_three_hidden_layers(shared, feedback, scale):
    sizes = [6, 7, 5, 9, 4]
    model = _tanh_mlp(sizes)
    rule = fa.DFA(feedback=feedback, scale=scale, shared=shared, seed=3)
    rule.apply(model)
    x = torch.randn(8, 6, dtype=torch.float64)
    y = torch.randint(0, 4, (8,))
    F.cross_entropy(model(x), y).backward()

    buffer = model.state_dict()[KEY]
    widths = sizes[1:-1]
    assert buffer.shape == (4, max(widths) if shared else sum(widths))
    feedback_mats = slices(buffer, widths, shared=shared, scaling=scale)
    layers, linears = _layers(model)
    expected = dfa_tanh_mlp_grads(
        x, layers, lambda e: e, lambda out: softmax_ce_error(out, y), feedback_mats
    )
    _assert_grads(linears, expected)


def test_feedback_draws_follow_the_distribution():
    model = _tanh_mlp([5, 300, 300, 50])
    fa.DFA(distribution="rademacher", shared=False, seed=1).apply(model)
    model(torch.randn(2, 5)).sum().backward()
    values = model.state_dict()[KEY]
    assert set(values.unique().tolist()) == {-1.0, 1.0}
    model = _tanh_mlp([5, 300, 300, 50])
    fa.DFA(distribution="uniform", shared=False, seed=1).apply(model)
    model(torch.randn(2, 5)).sum().backward()
    values = model.state_dict()[KEY]
    assert values.min() >= -1 and values.max() < 1 and abs(float(values.mean())) < 0.02


def test_dfa_conv_net_projects_per_sample_feature_map():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
    ).double()
    rule = fa.DFA(seed=7)
    rule.apply(model)
    x = torch.randn(4, 2, 6, 6)
    y = torch.randint(0, 5, (4,))
    F.cross_entropy(model(x), y).backward()

    conv1, conv2, top = model[0], model[2], model[5]
    with torch.no_grad():
        h1 = torch.tanh(F.conv2d(x, conv1.weight, conv1.bias, padding=1))
        h2 = torch.tanh(F.conv2d(h1, conv2.weight, conv2.bias, stride=2, padding=1))
        out = h2.flatten(1) @ top.weight.T + top.bias
    e = softmax_ce_error(out, y)
    b1, b2 = slices(
        model.state_dict()[KEY], [3 * 6 * 6, 4 * 3 * 3], shared=True, scaling="principled"
    )
    delta1 = project(e, b1, h1) * (1 - h1**2)
    delta2 = project(e, b2, h2) * (1 - h2**2)
    expected = [
        (conv1, torch.nn.grad.conv2d_weight(x, conv1.weight.shape, delta1, padding=1), delta1),
        (
            conv2,
            torch.nn.grad.conv2d_weight(h1, conv2.weight.shape, delta2, stride=2, padding=1),
            delta2,
        ),
    ]
    for layer, dw, delta in expected:
        torch.testing.assert_close(layer.weight.grad, dw, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(
            layer.bias.grad, delta.sum(dim=(0, 2, 3)), rtol=1e-10, atol=1e-12
        )
    dw_top, db_top = linear_grads(e, h2.flatten(1))
    torch.testing.assert_close(top.weight.grad, dw_top)
    torch.testing.assert_close(top.bias.grad, db_top)


def test_dfa_token_inputs_project_per_token():
    sizes = [5, 6, 7, 3]
    model = _tanh_mlp(sizes)
    rule = fa.DFA(seed=11, shared=False)
    rule.apply(model)
    x = torch.randn(2, 4, 5)  # (batch, tokens, features)
    y = torch.randint(0, 3, (2, 4))
    logits = model(x)
    assert logits.shape == (2, 4, 3)
    F.cross_entropy(logits.reshape(-1, 3), y.reshape(-1)).backward()
    feedback = slices(model.state_dict()[KEY], sizes[1:-1], shared=False, scaling="principled")
    layers, linears = _layers(model)
    expected = dfa_tanh_mlp_grads(
        x, layers, lambda e: e, lambda out: softmax_ce_error(out, y), feedback
    )
    _assert_grads(linears, expected)


def test_sign_dfa_uses_sign_of_error_over_samples():
    sizes = [6, 7, 5, 4]
    model = _tanh_mlp(sizes)
    fa.SignDFA(seed=2).apply(model)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    F.cross_entropy(model(x), y).backward()
    feedback = slices(model.state_dict()[KEY], sizes[1:-1], shared=True, scaling="principled")
    layers, linears = _layers(model)
    expected = dfa_tanh_mlp_grads(
        x, layers, lambda e: torch.sign(e) / 8, lambda out: softmax_ce_error(out, y), feedback
    )
    _assert_grads(linears, expected)


@pytest.mark.parametrize("float_targets", [False, True])
def test_drtp_uses_targets_not_error(float_targets):
    sizes = [6, 7, 5, 4]
    model = _tanh_mlp(sizes)
    rule = fa.DRTP(seed=2)
    rule.apply(model)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    onehot = torch.zeros(8, 4)
    onehot[torch.arange(8), y] = 1.0
    loss = F.cross_entropy(model(x), y)
    rule.set_targets(onehot if float_targets else y)
    loss.backward()
    feedback = slices(model.state_dict()[KEY], sizes[1:-1], shared=True, scaling="principled")
    layers, linears = _layers(model)
    expected = dfa_tanh_mlp_grads(
        x, layers, lambda e: -onehot / 8, lambda out: softmax_ce_error(out, y), feedback
    )
    _assert_grads(linears, expected)


def test_drtp_without_targets_says_so():
    model = _tanh_mlp([4, 5, 3])
    fa.DRTP().apply(model)
    loss = F.cross_entropy(model(torch.randn(2, 4)), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match=r"set_targets"):
        loss.backward()


def test_shallow_trains_only_the_top_layer():
    sizes = [6, 7, 5, 4]
    model = _tanh_mlp(sizes)
    fa.Shallow().apply(model)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    F.cross_entropy(model(x), y).backward()
    layers, linears = _layers(model)
    assert all(m.weight.grad is None and m.bias.grad is None for m in linears[:-1])
    from oracle import tanh_mlp_forward

    inputs, out = tanh_mlp_forward(x, layers)
    dw, db = linear_grads(softmax_ce_error(out, y), inputs[-1])
    torch.testing.assert_close(linears[-1].weight.grad, dw)
    torch.testing.assert_close(linears[-1].bias.grad, db)
    assert KEY not in model.state_dict()  # nothing is fed back, so there is no matrix


def test_bp_rule_equals_plain_autograd():
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    plain, ruled = _tanh_mlp([6, 7, 5, 4]), _tanh_mlp([6, 7, 5, 4])
    fa.BP().apply(ruled)
    F.cross_entropy(plain(x), y).backward()
    F.cross_entropy(ruled(x), y).backward()
    for a, b in zip(plain.parameters(), ruled.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
    assert set(plain.state_dict()) == set(ruled.state_dict())


def _feedback_net(sizes, activation):
    class FunctionalOutput(nn.Module):
        """A model whose output nonlinearity is a function call (as in torchfm's models)."""

        def __init__(self):
            super().__init__()
            self.body = _tanh_mlp(sizes)

        def forward(self, x):
            logits = self.body(x)
            if activation == "sigmoid":
                return torch.sigmoid(logits.squeeze(-1))
            if activation == "softmax":
                return torch.softmax(logits, dim=-1)
            if activation == "tanh":
                return torch.tanh(logits)
            return torch.log_softmax(logits, dim=-1)

    return FunctionalOutput()


def test_error_before_a_functional_sigmoid_is_dl_dlogit():
    sizes = [6, 7, 5, 1]
    model = _feedback_net(sizes, "sigmoid")
    fa.DFA(seed=4).apply(model, output_activation="sigmoid")
    x, target = torch.randn(8, 6), torch.randint(0, 2, (8,)).double()
    F.binary_cross_entropy(model(x), target).backward()
    feedback = slices(model.state_dict()[KEY], sizes[1:-1], shared=True, scaling="principled")
    layers, linears = _layers(model.body)
    # for BCE on p = sigmoid(z): dL/dz = (p - y) / n, the error DFA must feed back
    expected = dfa_tanh_mlp_grads(
        x,
        layers,
        lambda e: e,
        lambda z: (torch.sigmoid(z) - target[:, None]) / 8,
        feedback,
    )
    _assert_grads(linears, expected)


def test_error_before_a_functional_log_softmax_is_dl_dlogits():
    sizes = [6, 7, 5, 4]
    model = _feedback_net(sizes, "log_softmax")
    fa.DFA(seed=4).apply(model, output_activation="log_softmax")
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    F.nll_loss(model(x), y).backward()
    feedback = slices(model.state_dict()[KEY], sizes[1:-1], shared=True, scaling="principled")
    layers, linears = _layers(model.body)
    expected = dfa_tanh_mlp_grads(
        x, layers, lambda e: e, lambda z: softmax_ce_error(z, y), feedback
    )
    _assert_grads(linears, expected)


@pytest.mark.parametrize("activation", ["softmax", "tanh"])
def test_error_before_a_functional_softmax_or_tanh_is_dl_dz(activation):
    """``e_z = dL/dz`` for ``y = f(z)``: the reference takes it by autograd through ``f`` itself,
    so a wrong sign or factor in the library's closed form fails here."""
    sizes = [6, 7, 5, 4]
    model = _feedback_net(sizes, activation)
    fa.DFA(seed=4).apply(model, output_activation=activation)
    x, target = torch.randn(8, 6), torch.randn(8, 4)
    f = {"softmax": lambda z: torch.softmax(z, dim=-1), "tanh": torch.tanh}[activation]
    F.mse_loss(model(x), target).backward()
    feedback = slices(model.state_dict()[KEY], sizes[1:-1], shared=True, scaling="principled")
    layers, linears = _layers(model.body)

    def error_at_z(z):
        z = z.detach().requires_grad_(True)
        return torch.autograd.grad(F.mse_loss(f(z), target), z)[0]

    expected = dfa_tanh_mlp_grads(x, layers, lambda e: e, error_at_z, feedback)
    _assert_grads(linears, expected)


def test_feedback_draws_follow_the_documented_recipe():
    """The buffer is drawn on the CPU in float64 from a private generator seeded with ``seed``:
    gaussian ``randn``, uniform ``2 rand - 1`` (U[-1, 1), TinyDFA's), rademacher ``2 bit - 1``."""
    from feedback_alignment.feedback import draw

    def generator():
        return torch.Generator().manual_seed(11)

    shape = (7, 300)
    expected = {
        "gaussian": torch.randn(shape, generator=generator(), dtype=torch.float64),
        "uniform": torch.rand(shape, generator=generator(), dtype=torch.float64) * 2 - 1,
        "rademacher": torch.randint(0, 2, shape, generator=generator()).double() * 2 - 1,
    }
    for name, values in expected.items():
        torch.testing.assert_close(
            draw(name, shape, 11, dtype=torch.float64), values, rtol=0, atol=0
        )


def test_unknown_output_activation_is_refused():
    with pytest.raises(ValueError, match=r"unknown output_activation 'relu'"):
        fa.DFA().apply(_tanh_mlp([3, 4, 2]), output_activation="relu")


def test_point_at_a_module_input_equals_point_at_the_previous_output():
    sizes = [6, 7, 5, 4]
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    at_output, at_input = _tanh_mlp(sizes), _tanh_mlp(sizes)
    fa.DFA(seed=9).apply(at_output, points=["1", "3"])
    rule = fa.DFA(seed=9)
    rule.apply(at_input, points=["2:input", "4:input"])  # the inputs of the next Linear layers
    for model in (at_output, at_input):
        F.cross_entropy(model(x), y).backward()
    assert rule.layout(at_input).names == ("2:input", "4:input")
    for a, b in zip(at_output.parameters(), at_input.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)
