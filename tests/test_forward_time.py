"""Forward-time DRTP (issue 24, item 3): each block learns at its point during the forward pass.

DRTP's signal ``B_l (-y*/n)`` needs only the targets, so ``fa.DRTP(forward_time=True)`` runs each
block's local backprop at its point while the forward pass goes on, and frees that block's graph.
The checks: the gradients are backward-time DRTP's (float64, several steps, three model kinds);
they are in ``.grad`` before ``loss.backward()``; the graph left for ``loss.backward()`` does not
grow with depth while backward-time DRTP's does; and every misuse is refused.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa

TOL = {"rtol": 1e-10, "atol": 1e-12}


pytestmark = pytest.mark.usefixtures("float64_one_thread")


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


def _deep(depth: int, width: int = 8, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, width), *(Residual(width) for _ in range(depth)), nn.Linear(width, 3)
    )


def _conv(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3),
    )  # fmt: skip


def _steps(model, rule, batches, forward_time_seen: list[bool]):
    """Three SGD steps; returns every step's gradients. Records whether a hidden parameter had
    its gradient before ``loss.backward()`` (the forward-time update happened)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    hidden = next(p for n, p in model.named_parameters() if n.startswith(("0.", "1.")))
    grads = []
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        rule.set_targets(y)
        out = model(x)
        forward_time_seen.append(hidden.grad is not None)
        F.cross_entropy(out.reshape(-1, 3), y.reshape(-1)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        opt.step()
    return grads


def _encoder(seed: int = 0) -> nn.Module:
    """A Transformer encoder: tokens are samples (targets per token)."""
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    return nn.Sequential(
        nn.Linear(6, 8),
        nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
        nn.Linear(8, 3),
    )


def _batches(shape: tuple[int, ...], lead: int, count: int = 3):
    generator = torch.Generator().manual_seed(4)
    return [
        (
            torch.randn(*shape, generator=generator),
            torch.randint(0, 3, shape[:lead], generator=generator),
        )
        for _ in range(count)
    ]


@pytest.mark.parametrize(
    ("build", "points", "shape", "lead"),
    [
        (lambda: _deep(4), ["0", "1", "2", "3", "4"], (5, 6), 1),
        (_conv, ["2", "4"], (5, 1, 6, 6), 1),
        (_encoder, ["0", "1.layers.0", "1.layers.1"], (5, 4, 6), 2),
    ],
    ids=["residual-mlp", "conv-batchnorm", "transformer-tokens"],
)
def test_gradients_equal_backward_time_drtp(build, points, shape, lead):
    model = build()
    twin = copy.deepcopy(model)
    batches = _batches(shape, lead)
    backward_seen: list[bool] = []
    forward_seen: list[bool] = []
    plain = fa.DRTP(seed=3)
    plain.apply(model, points=points)
    want = _steps(model, plain, batches, backward_seen)
    rule = fa.DRTP(seed=3, forward_time=True)
    rule.apply(twin, points=points)
    got = _steps(twin, rule, batches, forward_seen)
    assert backward_seen == [False, False, False]
    assert forward_seen == [False, True, True], "the first step verifies; then forward-time"
    for step, (a, b) in enumerate(zip(got, want, strict=True)):
        for name in b:
            torch.testing.assert_close(
                a[name], b[name], **TOL, msg=lambda m, s=step, n=name: f"step {s} {n}: {m}"
            )


def _graph_size(output: torch.Tensor) -> int:
    seen, stack = set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(child for child, _ in node.next_functions)
    return len(seen)


def test_the_graph_left_for_backward_does_not_grow_with_depth():
    sizes: dict[str, list[int]] = {"backward": [], "forward": []}
    for depth in (2, 8, 16):
        x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
        for mode in sizes:
            rule = fa.DRTP(forward_time=mode == "forward")
            model = rule.apply(_deep(depth), points=[str(i) for i in range(depth + 1)])
            for _ in range(2):  # the first step verifies the cut (backward-time)
                model.zero_grad()
                rule.set_targets(y)
                out = model(x)
                size = _graph_size(out)
                F.cross_entropy(out, y).backward()
            sizes[mode].append(size)
    assert sizes["forward"][0] == sizes["forward"][-1], sizes
    assert sizes["backward"][-1] > 4 * sizes["backward"][0], sizes


def test_refusals():
    with pytest.raises(ValueError, match=r"fa\.DRTP\(forward_time=True\)"):
        fa.DFA(forward_time=True)
    with pytest.raises(ValueError, match="forward_time"):
        fa.SignDFA(forward_time=True)
    with pytest.raises(ValueError, match="verify='placement'"):
        fa.DRTP(forward_time=True).apply(_deep(2), verify="always")
    rule = fa.DRTP(forward_time=True)
    model = rule.apply(_deep(2), points=["0", "1", "2"])
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    rule.set_targets(y)
    F.cross_entropy(model(x), y).backward()  # step 1: backward-time, verified
    rule.set_targets(y)
    F.cross_entropy(model(x), y).backward()  # step 2: forward-time; consumes the targets
    with pytest.raises(RuntimeError, match=r"before model\(x\)"):
        model(x)  # step 3 without targets
    with pytest.raises(fa.PlacementError, match="module's input"):
        other = fa.DRTP(forward_time=True)
        m = other.apply(_deep(2), points=["1:input", "2"])
        for _ in range(2):
            other.set_targets(y)
            F.cross_entropy(m(x), y).backward()


def _trained(forward_time: bool, steps: int = 2):
    rule = fa.DRTP(seed=1, forward_time=forward_time)
    model = rule.apply(_deep(3), points=["0", "1", "2", "3"])
    x, y = torch.randn(6, 6), torch.randint(0, 3, (6,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        rule.set_targets(y)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return rule, model, x, y


def test_alignment_measures_forward_time_drtp_as_drtp_and_leaves_grad_alone():
    """fa.alignment reads the rule's gradients itself: the forward-time update must not run
    inside it (it would add to .grad and leave the measured gradients empty)."""
    reports, grads = [], []
    for forward_time in (False, True):
        rule, model, x, y = _trained(forward_time)
        before = {n: p.grad.clone() for n, p in model.named_parameters()}
        reports.append(fa.alignment(model, rule, (x, y), F.cross_entropy))
        for name, param in model.named_parameters():
            assert torch.equal(param.grad, before[name]), name
        grads.append(before)
    backward, forward = (r.hidden_angles() for r in reports)
    assert backward.keys() == forward.keys() and backward
    for name, angle in backward.items():
        assert angle == pytest.approx(forward[name], abs=1e-9), name


def test_an_eval_mode_pass_updates_nothing_and_needs_no_targets():
    _, model, x, _ = _trained(True)
    model.zero_grad(set_to_none=True)
    model.eval()
    model(x)  # validation without no_grad: no targets, no update
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("forward_time", [False, True])
def test_gradient_accumulation_with_the_weight_equals_the_whole_batch(forward_time):
    """DRTP's hidden signal is made from the targets, so a loss scale never reaches it:
    ``set_targets(y, weight=1/k)`` makes k micro-batches add up to the whole batch's gradient."""
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    results = []
    for chunks in (1, 4):
        rule = fa.DRTP(seed=2, forward_time=forward_time)
        model = rule.apply(_deep(2), points=["0", "1", "2"])
        rule.set_targets(y)
        F.cross_entropy(model(x), y).backward()  # the first step verifies (backward-time)
        model.zero_grad()
        for xs, ys in zip(x.chunk(chunks), y.chunk(chunks), strict=True):
            rule.set_targets(ys, weight=1 / chunks)
            (F.cross_entropy(model(xs), ys) / chunks).backward()
        results.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in results[0]:
        torch.testing.assert_close(results[1][name], results[0][name], **TOL)


class _LossInside(nn.Module):
    """Returns the loss as well when given labels (as Hugging Face models do)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _deep(2)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.net(x)
        if labels is None:
            return (logits,)
        return (logits, F.cross_entropy(logits, labels))


def test_a_new_output_structure_is_verified_not_refused():
    x, y = torch.randn(6, 6), torch.randint(0, 3, (6,))
    rule = fa.DRTP(seed=0, forward_time=True)
    model = rule.apply(
        _LossInside(),
        points=["net.0", "net.1", "net.2"],
        output=0,
        error_at="net.3",  # the loss is computed inside forward, from the head's output
        example_input=x[:2],
    )
    for _ in range(2):  # the example verified the placement; a loss is returned from now on
        model.zero_grad()
        rule.set_targets(y)
        model(x, labels=y)[1].backward()
    assert model.net[0].weight.grad is not None


def test_the_rule_says_it_runs_forward_time():
    assert "forward_time=True" in repr(fa.DRTP(forward_time=True))
    assert "forward_time" not in repr(fa.DRTP())
    with pytest.raises(ValueError, match="forward_time"):
        fa.DKP(forward_time=True)
    with pytest.raises(ValueError, match="forward_time"):
        fa.FDFA(forward_time=True)
