"""Trustworthy conversion: the cut verification, automatic placement and the small traps of issue 10.

The zoo (``test_zoo.py``) checks foreign models end to end; these tests pin each mechanism on a
small model written here, so that a failure names the mechanism.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
import feedback_alignment.rules.direct as direct

KEY = fa.FEEDBACK_BUFFER


class Block(nn.Module):
    """A pre-norm residual block in the timm manner: ``x + mlp(norm(x))``, GELU module inside."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


class Residual(nn.Module):
    def __init__(self, width: int = 6, depth: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(5, width)
        self.blocks = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class Inline(nn.Module):
    """GPT-2's inline residual: the block's input is kept as ``residual`` before ``ln`` runs."""

    def __init__(self, width: int = 6) -> None:
        super().__init__()
        self.embed = nn.Linear(5, width)
        self.ln = nn.LayerNorm(width)
        self.fc = nn.Linear(width, width)
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(self.embed(x))
        residual = hidden
        hidden = self.fc(self.ln(hidden)) + residual
        return self.head(hidden)


def _batch(n: int = 8, classes: int = 4):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, 5, generator=generator), torch.randint(
        0, classes, (n,), generator=generator
    )


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor | None]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def test_automatic_placement_takes_residual_block_outputs():
    model = Residual()
    rule = fa.DFA()
    rule.apply(model)
    assert rule.points(model) == ["blocks.0", "blocks.1", "blocks.2"]
    grads = _step(model, *_batch())
    assert all(g is not None and g.any() for g in grads.values())
    roles = rule.parameter_roles(model)
    assert roles["head.weight"] == "top" and roles["blocks.0.mlp.0.weight"] == "hidden"


def test_activation_points_inside_a_residual_are_refused_with_the_block_fix():
    model = Residual()
    fa.Shallow().apply(model, points=["blocks.0.mlp.1", "blocks.1.mlp.1", "blocks.2.mlp.1"])
    with pytest.raises(
        fa.PlacementError,
        match=r"'blocks.0.mlp.1' does not cut the graph.*embed\.weight.*"
        r"points=\['blocks.0', 'blocks.1', 'blocks.2'\]",
    ):
        model(_batch()[0])


def test_refused_placement_is_refused_again_next_step():
    model = Residual()
    fa.DFA().apply(model, points=["blocks.1.mlp.1"])
    for _ in range(2):
        with pytest.raises(fa.PlacementError, match="does not cut"):
            model(_batch()[0])


def test_shallow_with_block_points_trains_only_the_top():
    model = Residual()
    fa.Shallow().apply(model)
    grads = _step(model, *_batch())
    trained = {n for n, g in grads.items() if g is not None}
    assert trained == {"head.weight", "head.bias"}


def test_input_point_cuts_an_inline_residual():
    """``ln:input`` detaches the tensor in place: the residual that holds it is cut too."""
    model = Inline()
    fa.Shallow().apply(model, points=["ln:input"])
    grads = _step(model, *_batch(classes=3))
    assert grads["embed.weight"] is None
    assert grads["fc.weight"] is not None and grads["head.weight"] is not None


def test_input_point_signal_equals_the_output_point_signal():
    """A point at ``ln``'s input receives ``B e`` exactly like a point at the tanh that makes it."""

    class Marked(Inline):
        def __init__(self):
            super().__init__()
            self.point = fa.FeedbackPoint()

        def forward(self, x):
            hidden = self.point(torch.tanh(self.embed(x)))
            return self.head(self.fc(self.ln(hidden)) + hidden)

    torch.manual_seed(0)
    a = Inline().double()
    b = Marked().double()
    b.load_state_dict(a.state_dict())
    x, y = _batch(classes=3)
    fa.DFA(seed=3).apply(a, points=["ln:input"])
    fa.DFA(seed=3).apply(b)
    ga, gb = _step(a, x.double(), y), _step(b, x.double(), y)
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=0, atol=0)


class Recurrent(nn.Module):
    def __init__(self, batch_first: bool, head_on: str) -> None:
        super().__init__()
        self.lstm = nn.LSTM(5, 7, batch_first=batch_first)
        self.head = nn.Linear(7, 4)
        self.batch_first, self.head_on = batch_first, head_on

    def forward(self, x):  # x: (B, T, 5)
        out, (h_n, _) = self.lstm(x if self.batch_first else x.transpose(0, 1))
        if self.head_on == "h_n":
            return self.head(h_n[-1])
        return self.head(out.mean(dim=1 if self.batch_first else 0))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("head_on", ["h_n", "sequence"])
def test_lstm_tuple_items_are_all_cut_and_seq_first_is_read_at_axis_1(batch_first, head_on):
    torch.manual_seed(0)
    model = Recurrent(batch_first, head_on).double()
    x = torch.randn(4, 4, 5, dtype=torch.float64)  # T == B: shapes alone cannot tell the axes
    y = torch.randint(0, 4, (4,))
    fa.Shallow().apply(model)
    grads = _step(model, x, y)
    assert all(grads[n] is None for n in grads if n.startswith("lstm.")), "h_n/c_n leaked"
    model = Recurrent(batch_first, head_on).double()
    rule = fa.DFA(seed=2)
    rule.apply(model)
    assert rule._binding(model).placement.point_axes["lstm"] == (None if batch_first else (1,))
    grads = _step(model, x, y)
    # reference: BP through the LSTM alone from B e at its output sequence, per sample
    reference = Recurrent(batch_first, head_on).double()
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if k != KEY})
    inputs = x if batch_first else x.transpose(0, 1)
    out, _ = reference.lstm(inputs)
    per_sample = out if batch_first else out.transpose(0, 1)  # (B, T, H)
    logits = reference.head(
        reference.lstm(inputs)[1][0][-1].detach()
        if head_on == "h_n"
        else out.detach().mean(dim=1 if batch_first else 0)
    )
    e = torch.autograd.grad(F.cross_entropy(logits, y), logits)[0]
    matrix = model.state_dict()[KEY]  # (d_out, T*H): principled scale 1/sqrt(n_l d_out)
    width = per_sample[0].numel()
    signal = (e @ matrix[:, :width] / (width * 4) ** 0.5).reshape(per_sample.shape)
    expected = torch.autograd.grad(per_sample, list(reference.lstm.parameters()), signal)
    for (name, _), g in zip(reference.lstm.named_parameters(), expected, strict=True):
        torch.testing.assert_close(grads[f"lstm.{name}"], g, rtol=1e-10, atol=1e-12)


class LossInside(nn.Module):
    """A Hugging Face-style model: ``model(x, labels=y)`` returns a dict with the loss inside."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
        self.classifier = nn.Linear(8, 4)

    def forward(self, x, labels=None):
        logits = self.classifier(self.body(x))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return {"loss": loss, "logits": logits}


def test_a_loss_computed_inside_forward_trains_by_the_rule():
    torch.manual_seed(0)
    a, b = LossInside().double(), LossInside().double()
    b.load_state_dict(a.state_dict())
    x, y = _batch()
    rule = fa.DFA(seed=5)
    rule.apply(a, output="logits")  # the error is injected at the head, "classifier"
    assert rule._binding(a).placement.error_at == "classifier"
    a(x.double(), labels=y)["loss"].backward()
    fa.DFA(seed=5).apply(b, error_at="classifier")
    F.cross_entropy(b(x.double())["logits"], y).backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert pa.grad is not None, name
        torch.testing.assert_close(pa.grad, pb.grad, rtol=0, atol=0)


def test_a_loss_that_bypasses_the_injection_is_refused():
    """``return_dict=False`` style: ``(loss, logits)`` with the loss computed before the output
    hook could inject; with ``output=1`` the error would reach nothing below the points."""

    class TupleLoss(LossInside):
        def forward(self, x, labels=None):
            out = super().forward(x, labels)
            return (out["loss"], out["logits"])

    x, y = _batch()
    model = TupleLoss()
    fa.DFA().apply(model, output=1)
    model(x)  # without labels nothing is computed before the injection
    with pytest.raises(
        fa.PlacementError, match=r"the returned output\[0\] of TupleLoss does not depend.*error_at="
    ):
        model(x, labels=y)
    model = TupleLoss()
    fa.DFA().apply(model, output=1, error_at="classifier")
    model(x, labels=y)[0].backward()
    assert model.body[0].weight.grad.any()


def test_verification_runs_once_per_placement(monkeypatch):
    calls = []
    original = direct.verify_cut
    monkeypatch.setattr(direct, "verify_cut", lambda *a, **k: calls.append(1) or original(*a, **k))
    model = Residual()
    fa.DFA().apply(model)
    for n in (8, 8, 3, 8, 5):  # a new batch size is not a new placement
        _step(model, *_batch(n))
    assert len(calls) == 1


def test_submodule_calls_outside_the_forward_pass_leave_no_stale_records():
    torch.manual_seed(0)
    a, b = Residual().double(), Residual().double()
    b.load_state_dict(a.state_dict())
    x, y = _batch()
    for model in (a, b):
        fa.DFA(seed=1).apply(model)
    probe = torch.randn(2, 6, dtype=torch.float64)
    with pytest.raises(fa.PlacementError, match=r"'blocks.0' ran with grad enabled outside"):
        a.blocks[0](probe)  # with grad it would train blocks.0 by backprop
    with torch.no_grad():
        a.blocks[0](probe)  # a feature probe between steps
    ga, gb = _step(a, x.double(), y), _step(b, x.double(), y)
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=0, atol=0)


def test_retain_graph_backward_twice_doubles_the_update():
    model = Residual().double()
    fa.DFA().apply(model)
    x, y = _batch()
    loss = F.cross_entropy(model(x.double()), y)
    loss.backward(retain_graph=True)
    once = {n: p.grad.clone() for n, p in model.named_parameters()}
    loss.backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[name])


def test_an_empty_batch_gives_zero_updates():
    model = Residual()
    fa.DFA().apply(model)
    out = model(torch.randn(0, 5))
    F.cross_entropy(out, torch.zeros(0, dtype=torch.long), reduction="sum").backward()
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    _step(model, *_batch())  # and the next real batch trains
    assert model.blocks[0].mlp[0].weight.grad.any()


def test_point_batch_axes_are_validated():
    model = Residual()
    with pytest.raises(fa.PlacementError, match=r"point_batch_axes names \['nope'\]"):
        fa.DFA().apply(model, point_batch_axes={"nope": 1})
    with pytest.raises(ValueError, match=r"must be an int or a sequence of ints"):
        fa.DFA().apply(model, batch_axes="0")
    with pytest.raises(fa.PlacementError, match=r"true_gradient names 'nope'"):
        fa.DFA().apply(model, true_gradient=["nope"])


def test_output_batch_axes_feed_a_whole_map_per_sample():
    """``batch_axes=0`` on a ``(B, C, L)`` output: ``d_out = C*L`` per sample."""

    class Dense(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.act, self.b = nn.Conv1d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv1d(3, 2, 1)

        def forward(self, x):
            return self.b(self.act(self.a(x)))

    model = Dense()
    rule = fa.DFA()
    rule.apply(model, batch_axes=0)
    out = model(torch.randn(4, 2, 5))
    out.square().mean().backward()
    assert rule.layout(model).out_features == 10 and rule.layout(model).widths == (15,)


def test_two_error_sites_each_feed_their_own_sub_network():
    """Hierarchical NeRF's pattern: a coarse and a fine field, each trained by DFA from the error
    at its own output, with its own seeded feedback. One rule per sub-network does it: each
    binding opens and closes with its sub-network's forward pass."""

    def field():
        return nn.Sequential(
            nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 7), nn.Tanh(), nn.Linear(7, 3)
        )

    class TwoFields(nn.Module):
        def __init__(self):
            super().__init__()
            self.coarse, self.fine = field(), field()

        def forward(self, x):
            return self.coarse(x), self.fine(x)

    torch.manual_seed(0)
    model = TwoFields().double()
    fa.DFA(seed=1).apply(model.coarse)
    fa.DFA(seed=2).apply(model.fine)
    x = torch.randn(6, 5, dtype=torch.float64)
    target = torch.randn(6, 3, dtype=torch.float64)
    coarse, fine = model(x)
    loss = F.mse_loss(coarse, target) + 2 * F.mse_loss(fine, target)
    loss.backward()
    assert {"coarse." + KEY, "fine." + KEY} <= set(model.state_dict())
    for name, sub, weight in (("coarse", model.coarse, 1), ("fine", model.fine, 2)):
        h1 = torch.tanh(sub[0](x))
        e = weight * 2 * ((sub[4](torch.tanh(sub[2](h1))) - target) / target.numel()).detach()
        b = model.state_dict()[f"{name}.{KEY}"]
        s1 = e @ b[:, :7] / (7 * 3) ** 0.5  # principled scale, shared columns
        expected = torch.autograd.grad(h1, sub[0].weight, s1)[0]
        torch.testing.assert_close(sub[0].weight.grad, expected, rtol=1e-10, atol=1e-12)


def test_one_call_of_a_shared_module_can_be_chosen():
    """``act#1`` makes only the second call of a shared activation a point (PyG's BasicGNN calls
    one ``act`` after every layer, and GIN's MLPs call it inside the convolutions too)."""

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(6, 4)
            self.act = nn.Tanh()

        def forward(self, x):
            return self.c(self.act(self.b(self.act(self.a(x)))))

    model = Shared()
    rule = fa.Shallow()
    rule.apply(model, points=["act#1"])
    grads = _step(model, *_batch())
    assert grads["a.weight"] is None and grads["b.weight"] is None and grads["c.weight"] is not None
    rule.remove(model)
    rule = fa.DFA()
    rule.apply(model, points=["act#0"])
    _step(model, *_batch())
    assert rule.layout(model).names == ("act",)  # the first call; the second is top block
    assert model.b.weight.grad is not None
    with pytest.raises(fa.PlacementError, match=r"after '#' comes the index"):
        fa.DFA().apply(Shared(), points=["act#x"])


def test_an_automatic_block_that_produces_the_output_is_the_top_block():
    """PyG's GIN with BatchNorm: its convolutions are blocks, the last one returns the output
    itself (a norm registered after them hides that from the registration order)."""

    class Stack(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Linear(5, 5), nn.LayerNorm(5), nn.Tanh()) for _ in range(3)
            )
            self.norms = nn.ModuleList(nn.LayerNorm(5) for _ in range(2))

        def forward(self, x):
            for i, block in enumerate(self.blocks):
                x = block(x)
                if i < 2:
                    x = self.norms[i](x)
            return x

    model = Stack()
    rule = fa.Shallow()
    rule.apply(model)
    assert rule.points(model) == ["blocks.0", "blocks.1", "blocks.2"]
    model(torch.randn(4, 5)).square().sum().backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    top = {f"{m}.{p}" for m in ("blocks.2.0", "blocks.2.1", "norms.1") for p in ("weight", "bias")}
    assert trained == top
    model = Stack()
    rule = fa.DFA()
    rule.apply(model)
    model(torch.randn(4, 5)).square().sum().backward()
    assert rule.layout(model).names == ("blocks.0", "blocks.1")
    assert all(p.grad is not None for p in model.parameters())


def test_a_forward_pass_that_bypasses_the_hooks_is_refused():
    """``model.forward(x)`` skips the model's own hooks; reentrant checkpointing runs the points
    under no_grad; a wrapper's training step calls the inner module: each would train by BP."""
    from torch.utils.checkpoint import checkpoint

    model = Residual()
    fa.Shallow().apply(model)
    x, _ = _batch()
    with pytest.raises(fa.PlacementError, match=r"outside a forward pass of the Residual"):
        model.forward(x)

    class Checkpointed(Residual):
        def forward(self, x):
            x = self.embed(x)
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=True)
            return self.head(x)

    model = Checkpointed()
    fa.Shallow().apply(model)
    with pytest.raises(
        fa.PlacementError, match=r"reentrant gradient checkpoint.*use_reentrant=False"
    ):
        model(x)

    class NonReentrant(Residual):
        def forward(self, x):
            x = self.embed(x)
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False)
            return self.head(x)

    model = NonReentrant()
    fa.Shallow().apply(model)
    model(x).sum().backward()
    assert model.embed.weight.grad is None and model.head.weight.grad is not None


def test_an_auxiliary_output_that_reaches_below_the_points_is_refused():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.a1, self.l2 = nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 4)
            self.aux = nn.Linear(8, 4)

        def forward(self, x):
            z = self.l1(x)
            return self.l2(self.a1(z)), self.aux(z)

    model = Aux()
    fa.Shallow().apply(model, output=0)
    with pytest.raises(fa.PlacementError, match=r"the returned output\[1\] also reaches.*l1"):
        model(_batch()[0])


def test_a_module_called_again_above_the_points_is_a_bypass_not_a_tie():
    """DeepFM with the FM term calling the embedding a second time: refused like the single-call
    model; a Parameter registered in two modules (GPT-2's tied head) stays a tie."""

    class Recall(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Linear(5, 6)
            self.mlp = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 4))

        def forward(self, x):
            return self.mlp(self.embedding(x)) + self.embedding(x).sum(-1, keepdim=True)

    model = Recall()
    fa.Shallow().apply(model)
    with pytest.raises(fa.PlacementError, match=r"embedding\.weight"):
        model(_batch()[0])

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(5, 5, bias=False)
            self.body = nn.Sequential(nn.Linear(5, 5), nn.Tanh())
            self.head = nn.Linear(5, 5, bias=False)
            self.head.weight = self.embed.weight  # a declared tie

        def forward(self, x):
            return self.head(self.body(self.embed(x)))

    model = Tied()
    rule = fa.DFA()
    rule.apply(model)
    model(_batch()[0]).sum().backward()
    assert rule.parameter_roles(model)["embed.weight"] == "tied"


def test_packed_sequences_and_bad_point_lists_are_refused():
    class Packed(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.head = nn.LSTM(5, 4, batch_first=True), nn.Linear(4, 3)

        def forward(self, x):
            packed = nn.utils.rnn.pack_padded_sequence(x, [3, 2, 2, 1], batch_first=True)
            _, (h, _) = self.rnn(packed)
            return self.head(h[-1])

    model = Packed()
    fa.DFA().apply(model, points=["rnn"])
    with pytest.raises(fa.PlacementError, match=r"returns a PackedSequence"):
        model(torch.randn(4, 3, 5))
    with pytest.raises(fa.PlacementError, match=r"names \['head'\] more than once"):
        fa.DFA().apply(Packed(), points=["head", "head"])
    with pytest.raises(fa.PlacementError, match=r"output='nope' is not in"):
        m = LossInside()
        fa.DFA().apply(m, output="nope", error_at="classifier")
        m(_batch()[0])


def test_an_unpickled_model_names_its_rule_for_removal():
    import pickle

    model = Residual()
    fa.DFA(seed=3).apply(model)
    _step(model, *_batch())
    loaded = pickle.loads(pickle.dumps(model))
    [rule] = fa.applied_rules(loaded)
    assert isinstance(rule, fa.DFA) and rule.seed == 3 and rule.is_applied(loaded)
    rule.remove(loaded)
    assert fa.applied_rules(loaded) == [] and fa.FEEDBACK_BUFFER not in loaded.state_dict()


def test_parallel_heads_taken_for_blocks_are_refused():
    """Multi-task heads (LayerNorm + Linear each, in a ModuleList) look like repeated blocks; they
    run side by side on one input, so automatic block points would cut them off the error."""

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm, self.out = nn.LayerNorm(6), nn.Linear(6, 2)

        def forward(self, x):
            return self.out(self.norm(x))

    class MultiTask(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh())
            self.heads = nn.ModuleList(Head() for _ in range(3))

        def forward(self, x):
            h = self.trunk(x)
            return torch.cat([head(h) for head in self.heads], dim=-1)

    model = MultiTask()
    fa.DFA().apply(model)
    with pytest.raises(fa.PlacementError, match=r"'heads.0' and 'heads.1' run side by side"):
        model(_batch()[0])
    model = MultiTask()
    rule = fa.DFA()
    rule.apply(model, points=["trunk.1", "trunk.3"])
    model(_batch()[0]).sum().backward()
    assert all(p.grad is not None for p in model.heads.parameters())
