"""Applying, removing, checkpointing and refusing: the direct-feedback rules' contract."""

from __future__ import annotations

import gc
import io
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa

KEY = fa.FEEDBACK_BUFFER


def _mlp(seed=0, sizes=(6, 8, 8, 3)):
    torch.manual_seed(seed)
    return fa.models.MLP(list(sizes))


def _step(model, x, y, rule=None):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    if isinstance(rule, fa.DRTP):
        rule.set_targets(y)
    loss.backward()
    return {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}


@pytest.fixture
def batch():
    return torch.randn(5, 6), torch.randint(0, 3, (5,))


@pytest.mark.parametrize("rule_cls", [fa.DFA, fa.SignDFA, fa.DRTP, fa.Shallow])
def test_remove_restores_backprop_exactly(rule_cls, batch):
    x, y = batch
    model, reference = _mlp(), _mlp()
    params_before = list(model.parameters())
    keys_before = list(model.state_dict())
    rule = rule_cls(seed=1)
    rule.apply(model)
    _step(model, x, y, rule)
    rule.remove(model)
    assert not rule.is_applied(model)
    assert list(model.parameters()) == params_before  # the same Parameter objects
    assert list(model.state_dict()) == keys_before
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    restored, plain = _step(model, x, y), _step(reference, x, y)
    assert all(torch.equal(restored[n], plain[n]) for n in plain)


def test_applied_context_manager_removes(batch):
    model = _mlp()
    rule = fa.DFA()
    with rule.applied(model):
        assert rule.is_applied(model)
    assert not rule.is_applied(model) and KEY not in model.state_dict()


def test_state_dict_round_trip_gives_identical_grads(batch):
    x, y = batch
    trained = _mlp(seed=0)
    rule = fa.DFA(seed=5)
    rule.apply(trained)
    opt = torch.optim.SGD(trained.parameters(), lr=0.1)
    for _ in range(3):
        _step(trained, x, y)
        opt.step()
    stream = io.BytesIO()
    torch.save(trained.state_dict(), stream)
    stream.seek(0)

    fresh = _mlp(seed=99)
    fa.DFA(seed=12345).apply(fresh)  # another seed: the checkpoint's matrix must win
    fresh.load_state_dict(torch.load(stream))  # before any forward pass
    assert torch.equal(fresh.state_dict()[KEY], trained.state_dict()[KEY])
    grads_a, grads_b = _step(trained, x, y), _step(fresh, x, y)
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name


def test_same_seed_same_feedback_different_seed_different(batch):
    x, y = batch
    matrices = []
    for seed in (3, 3, 4):
        model = _mlp(seed=seed)  # different weights must not matter
        fa.DFA(seed=seed if seed != 3 else 3).apply(model)
        _step(model, x, y)
        matrices.append(model.state_dict()[KEY])
    assert torch.equal(matrices[0], matrices[1])
    assert not torch.equal(matrices[0], matrices[2])


def test_loaded_matrix_of_wrong_shape_cannot_serve(batch):
    x, y = batch
    small = _mlp(sizes=(6, 8, 8, 3))
    fa.DFA().apply(small)
    _step(small, x, y)
    wide = _mlp(sizes=(6, 16, 16, 3))
    fa.DFA().apply(wide)
    state = wide.state_dict()
    state[KEY] = small.state_dict()[KEY]
    wide.load_state_dict(state)
    with pytest.raises(fa.PlacementError, match=r"cannot serve"):
        wide(x)


def test_block_inputs_are_cut_and_do_not_require_grad(batch):
    x, y = batch
    model = _mlp()
    fa.DFA().apply(model)
    seen = []
    for layer in (model[2], model[4]):  # the layers right after each feedback point
        layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].requires_grad))
    _step(model, x, y)
    assert seen == [False, False]


def test_no_graph_survives_a_step(batch):
    x, y = batch
    model = _mlp()
    rule = fa.DFA()
    rule.apply(model)
    refs = []
    model[1].register_forward_hook(lambda m, a, out: refs.append(weakref.ref(out)))
    _step(model, x, y)
    gc.collect()
    assert refs and all(r() is None for r in refs)


def test_no_grad_forward_is_plain_and_records_nothing(batch):
    x, _ = batch
    model, reference = _mlp(), _mlp()
    rule = fa.DFA()
    rule.apply(model)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
    assert KEY not in model.state_dict()  # nothing materialised without a training pass


def test_named_points_and_markers(batch):
    x, y = batch
    model = _mlp()
    rule = fa.DFA()
    rule.apply(model, points=["1"])  # only after the first hidden layer
    grads = _step(model, x, y)
    assert rule.points(model) == ["1"]
    assert rule.layout(model).names == ("1",)
    assert grads["2.weight"] is not None  # the second layer is in the top block: plain local BP

    class Marked(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.out = nn.Linear(6, 8), nn.Linear(8, 3)
            self.point = fa.FeedbackPoint()

        def forward(self, x):
            return self.out(self.point(F.relu(self.inp(x))))

    marked = Marked()
    rule = fa.DFA()
    rule.apply(marked)
    assert rule.points(marked) == ["point"]
    assert _step(marked, x, y)["inp.weight"] is not None


def test_reused_module_gives_one_point_per_call(batch):
    x, y = batch

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(6, 4), nn.Linear(4, 5), nn.Linear(5, 3)
            self.act = nn.Tanh()

        def forward(self, x):
            return self.c(self.act(self.b(self.act(self.a(x)))))

    model = Shared()
    rule = fa.DFA(shared=False)
    rule.apply(model)
    _step(model, x, y)
    layout = rule.layout(model)
    assert layout.names == ("act", "act#1") and layout.widths == (4, 5)
    assert model.state_dict()[KEY].shape == (3, 9)


def test_output_selection_for_dict_and_tuple_outputs(batch):
    x, y = batch

    class DictOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = fa.models.MLP([6, 8, 3])

        def forward(self, x):
            logits = self.body(x)
            return {"logits": logits, "aux": logits.detach() * 0}

    model = DictOut()
    rule = fa.DFA()
    with pytest.raises(fa.PlacementError, match=r"output='logits'"):
        rule.apply(model)
        model(x)
    rule.remove(model)
    rule.apply(model, output="logits")
    F.cross_entropy(model(x)["logits"], y).backward()
    assert model.body[0].weight.grad is not None

    class TupleOut(DictOut):
        def forward(self, x):
            return (self.body(x), 0)

    model = TupleOut()
    fa.DFA().apply(model, output=0)
    F.cross_entropy(model(x)[0], y).backward()
    assert model.body[0].weight.grad is not None


def test_error_at_a_submodule_and_points_after_it_are_refused(batch):
    x, y = batch
    model = _mlp(sizes=(6, 8, 8, 3))
    rule = fa.DFA()
    rule.apply(model, points=["1"], error_at="3")  # error taken at the second activation
    _step(model, x, y)
    assert rule.layout(model).out_features == 8
    rule.remove(model)
    rule.apply(model, points=["1", "3"], error_at="2")
    with pytest.raises(fa.PlacementError, match=r"ran after the error site"):
        model(x)


def test_model_without_place_for_feedback_is_refused():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(F.relu(self.a(x)))

    with pytest.raises(fa.PlacementError, match=r"no place for feedback in Functional"):
        fa.DFA().apply(Functional())
    with pytest.raises(fa.PlacementError, match=r"'nope' is not a submodule"):
        fa.DFA().apply(_mlp(), points=["nope"])


def test_point_with_other_leading_axes_cannot_be_served(batch):
    x, _ = batch

    class Transposed(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(5, 3)
            self.act = nn.Tanh()

        def forward(self, x):
            return self.b(self.act(self.a(x)).T)  # (4, 5): batch axis moved

    model = Transposed()
    fa.DFA().apply(model)
    with pytest.raises(fa.PlacementError, match=r"batch-like axes \(0,\) \(\(5,\)\) must equal"):
        model(x)


def test_nan_in_error_is_reported(batch):
    x, _ = batch
    model = _mlp()
    fa.DFA().apply(model)
    out = model(x)
    with pytest.raises(FloatingPointError, match=r"NaN/Inf"):
        (out * float("nan")).sum().backward()


def test_applying_twice_is_refused():
    model = _mlp()
    fa.DFA().apply(model)
    with pytest.raises(RuntimeError, match=r"already has direct feedback"):
        fa.SignDFA().apply(model)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match=r"unknown distribution 'normal'"):
        fa.DFA(distribution="normal")
    with pytest.raises(ValueError, match=r"unknown scale"):
        fa.DFA(scale="xavier")
    with pytest.raises(RuntimeError, match=r"not applied"):
        fa.DFA().remove(_mlp())


def test_optimizer_built_before_apply_keeps_working(batch):
    x, y = batch
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    fa.DFA().apply(model)
    before = model[0].weight.detach().clone()
    _step(model, x, y)
    opt.step()
    assert not torch.equal(before, model[0].weight)


def test_dfa_training_lowers_the_loss():
    torch.manual_seed(0)
    x = torch.randn(128, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    model = _mlp(sizes=(6, 32, 32, 3))
    fa.DFA().apply(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(100):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < 0.5 * first


def test_point_after_the_top_layer_is_reported(batch):
    x, _ = batch

    class OutputActivation(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(4, 3)
            self.act = nn.Sigmoid()

        def forward(self, x):
            return self.act(self.b(self.act(self.a(x))))

    fa.DFA().apply(model := OutputActivation(), points=["act"])
    with pytest.raises(fa.PlacementError, match=r"cut the graph after the top layer"):
        model(x)
    # automatic placement: the call that returns the model's output belongs to the top block
    rule = fa.DFA()
    rule.apply(model := OutputActivation())
    model(x).sum().backward()
    assert rule.layout(model).names == ("act",)
    assert model.a.weight.grad is not None and model.b.weight.grad is not None
    sequential = nn.Sequential(nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3), nn.Sigmoid())
    assert [n for n, _ in fa.find_points(sequential)] == ["1"]


def test_bottleneck_point_narrower_than_output_warns():
    model = fa.models.MLP([6, 2, 8, 5])
    fa.DFA().apply(model)
    with pytest.warns(UserWarning, match=r"narrower than the output \(d_out=5\)"):
        model(torch.randn(3, 6)).sum().backward()


def test_editing_the_feedback_buffer_in_place_takes_effect(batch):
    x, y = batch
    model = _mlp()
    fa.DFA().apply(model)
    before = _step(model, x, y)
    with torch.no_grad():
        model.get_buffer(KEY).mul_(2.0)
    after = _step(model, x, y)
    torch.testing.assert_close(after["0.weight"], 2 * before["0.weight"])
    torch.testing.assert_close(after["4.weight"], before["4.weight"])  # the top layer: true grad


def test_a_failed_forward_pass_leaves_no_stale_records(batch):
    x, y = batch
    model = _mlp()
    rule = fa.DFA()
    rule.apply(model)
    with pytest.raises(RuntimeError):
        model(torch.randn(5, 7))  # wrong input width: the first layer raises after no point ran
    broken = {"raise": True}

    def fail_in_top(module, args):
        if broken.pop("raise", False):
            raise RuntimeError("boom")

    handle = model[4].register_forward_pre_hook(fail_in_top)  # raises after both points ran
    with pytest.raises(RuntimeError, match="boom"):
        model(x)
    handle.remove()
    reference = _mlp()
    fa.DFA().apply(reference)
    got, expected = _step(model, x, y), _step(reference, x, y)
    assert all(torch.equal(got[n], expected[n]) for n in expected)
