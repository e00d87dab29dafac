"""Pipeline-parallel DFA: every stage's gradient equals single-process fa.DFA's (float64, gloo).

The multi-process tests spawn 2 or 3 gloo processes on 127.0.0.1 (a free port) through
``run_local``, which kills them at its deadline; every wait inside a stage has its own timeout, so
a broken pipeline fails with a message instead of hanging.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
from feedback_alignment.models import MLP
from feedback_alignment.models.transformer import Block, TransformerConfig
from feedback_alignment.pipeline import (
    DFAPipelineStage,
    run_local,
    split_sequential,
    stage_points,
)
from feedback_alignment.pipeline.layout import (
    build_layout,
    decode_shapes,
    encode_shapes,
    stage_matrix,
    widths_from_shapes,
)
from feedback_alignment.points import PlacementError

SIZES = [12, 16, 16, 16, 16, 16, 5]  # children: Linear/Tanh pairs "0".."9", top Linear "10"
BATCH = 25  # 3 micro-batches of 9, 8, 8 rows: unequal shares are weighted by n_i / N
DEADLINE = 90.0


def _model() -> MLP:
    torch.manual_seed(0)
    return MLP(SIZES, "tanh").double()


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, SIZES[0], generator=generator, dtype=torch.float64)
    y = torch.randint(0, SIZES[-1], (BATCH,), generator=generator)
    return x, y


def _rule(shared: bool) -> fa.DFA:
    return fa.DFA(seed=7, shared=shared)


class GradientLog(torch.optim.Optimizer):
    """Changes nothing; keeps the sum of the gradients of every step (to compare with DFA)."""

    def __init__(self, params) -> None:
        super().__init__(params, {})
        self.total: dict[int, torch.Tensor] = {}
        self.steps = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.steps += 1
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    key = id(p)
                    self.total[key] = self.total.get(key, torch.zeros_like(p)) + p.grad


def _stage_grads(
    rank: int,
    world: int,
    boundaries: list[int],
    activations: bool,
    shared: bool,
    mode: str,
    steps: int,
) -> tuple[dict[str, torch.Tensor], dict[int, int], float | None]:
    model = _model()
    stages = split_sequential(model, boundaries)
    points = stage_points(model, boundaries, activations=activations)
    x, y = _batch()
    module = stages[rank]
    stage = DFAPipelineStage(
        module,
        _rule(shared),
        points=points[rank],
        optimizer=GradientLog,
        micro_batches=3,
        loss_fn=F.cross_entropy,
        mode=mode,
        max_pending=4,
        timeout=20.0,
    )
    with stage:
        loss = None
        for _ in range(steps):
            loss = stage.step(x, y)
        stage.finish()
    total = stage.optimizer.total
    grads = {name: total[id(p)] for name, p in module.named_parameters() if id(p) in total}
    return grads, dict(stage.staleness), loss


def _reference(boundaries: list[int], activations: bool, shared: bool):
    model = _model()
    points = stage_points(model, boundaries, activations=activations)
    _rule(shared).apply(model, points=[p for stage in points for p in stage])
    x, y = _batch()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return {name: p.grad for name, p in model.named_parameters()}, loss.item()


@pytest.mark.parametrize(
    ("boundaries", "activations", "shared"),
    [
        ([6], True, True),  # 2 stages, a point after every activation (the MLP default)
        ([4, 8], False, False),  # 3 stages, boundary points only: local BP inside each stage
    ],
)
def test_gradients_equal_single_process_dfa(boundaries, activations, shared):
    world = len(boundaries) + 1
    results = run_local(
        _stage_grads, world, boundaries, activations, shared, "sync", 1, timeout=DEADLINE
    )
    reference, ref_loss = _reference(boundaries, activations, shared)
    got = {name: grad for grads, _, _ in results for name, grad in grads.items()}
    assert sorted(got) == sorted(reference)  # every parameter of the model, each on one stage
    for name, grad in got.items():
        assert grad.dtype == torch.float64
        assert torch.allclose(grad, reference[name], rtol=0, atol=1e-10), name
    assert math.isclose(results[-1][2], ref_loss, rel_tol=0, abs_tol=1e-12)


class _Embed(nn.Module):
    def __init__(self, vocab: int, tokens: int, width: int) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(tokens, width)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.tok(idx) + self.pos(torch.arange(idx.shape[1]))  # (B, T, C)


def _transformer() -> nn.Sequential:
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=11, block_size=5, n_layer=3, n_head=2, d_model=12)
    blocks = [Block(config) for _ in range(3)]
    return nn.Sequential(_Embed(11, 5, 12), *blocks, nn.Linear(12, 11)).double()


def _token_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def _token_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    return (
        torch.randint(0, 11, (7, 5), generator=generator),
        torch.randint(0, 11, (7, 5), generator=generator),
    )


TOKEN_POINTS = [["1", "2"], ["3"]]  # every block output ("macro"), split after block 2


def _token_stage(rank: int, world: int) -> dict[str, torch.Tensor]:
    model = _transformer()
    stages = split_sequential(model, [3])
    stage = DFAPipelineStage(
        stages[rank],
        fa.DFA(seed=5),
        points=TOKEN_POINTS[rank],
        optimizer=GradientLog,
        micro_batches=2,
        loss_fn=_token_loss,
        timeout=20.0,
    )
    with stage:
        stage.step(*_token_batch())
    total = stage.optimizer.total
    return {name: total[id(p)] for name, p in stages[rank].named_parameters()}


def test_per_token_errors_of_a_transformer_equal_single_process_dfa():
    """Sequence outputs: ``e`` is projected per token, points are (batch, tokens, width)."""
    results = run_local(_token_stage, 2, timeout=DEADLINE)
    model = _transformer()
    fa.DFA(seed=5).apply(model, points=[p for stage in TOKEN_POINTS for p in stage])
    x, y = _token_batch()
    _token_loss(model(x), y).backward()
    got = {name: grad for grads in results for name, grad in grads.items()}
    assert sorted(got) == sorted(name for name, _ in model.named_parameters())
    for name, p in model.named_parameters():
        assert torch.allclose(got[name], p.grad, rtol=0, atol=1e-10), name


def test_gradients_differ_with_another_feedback_seed():
    """The comparison above can fail: another seed gives other hidden-layer gradients."""
    boundaries = [6]
    results = run_local(_stage_grads, 2, boundaries, True, True, "sync", 1, timeout=DEADLINE)
    model = _model()
    points = stage_points(model, boundaries)
    fa.DFA(seed=8).apply(model, points=[p for stage in points for p in stage])
    x, y = _batch()
    F.cross_entropy(model(x), y).backward()
    assert not torch.allclose(results[0][0]["0.weight"], model[0].weight.grad, atol=1e-6)


def test_async_applies_every_error_once_with_bounded_staleness():
    """lr = 0: whatever step an error lands in, the sum over steps is ``steps`` DFA gradients."""
    boundaries, steps = [4, 8], 3
    results = run_local(_stage_grads, 3, boundaries, True, True, "async", steps, timeout=DEADLINE)
    reference, _ = _reference(boundaries, True, True)
    for rank, (grads, staleness, _) in enumerate(results):
        for name, grad in grads.items():
            assert torch.allclose(grad, steps * reference[name], rtol=0, atol=1e-10), name
        if rank == len(results) - 1:
            assert staleness == {}  # the last stage makes its errors: never stale
            continue
        assert sum(staleness.values()) == 3 * steps
        # max_pending=4 errors outstanding with 3 micro-batches a step: at most 2 steps late
        assert max(staleness) <= 2


def _async_training(rank: int, world: int) -> float | None:
    """Async with a real learning rate and boundary-only points (blocks whose backward reads
    their weights): weight stashing must keep every pending graph valid across optimizer steps."""
    model = _model()
    boundaries = [6]
    stages = split_sequential(model, boundaries)
    points = stage_points(model, boundaries, activations=False)
    x, y = _batch()
    stage = DFAPipelineStage(
        stages[rank],
        fa.DFA(seed=0),
        points=points[rank],
        optimizer=lambda p: torch.optim.SGD(p, lr=0.5),
        micro_batches=3,
        loss_fn=F.cross_entropy,
        mode="async",
        timeout=20.0,
    )
    with stage:
        losses = [stage.step(x, y) for _ in range(15)]
        stage.finish()
    return None if losses[0] is None else losses[-1] / losses[0]


def test_async_training_with_weight_stashing_learns():
    ratio = run_local(_async_training, 2, timeout=DEADLINE)[-1]
    assert ratio < 0.9


def _stalled(rank: int, world: int) -> None:
    model = _model()
    stages = split_sequential(model, [6])
    points = stage_points(model, [6])
    stage = DFAPipelineStage(
        stages[rank],
        fa.DFA(),
        points=points[rank],
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        micro_batches=2,
        loss_fn=F.cross_entropy,
        timeout=2.0,
    )
    if rank == 0:  # the last stage never steps: stage 0 must give up, not hang
        stage.step(*_batch())
    else:
        time.sleep(4.0)  # alive (a dead peer closes the connection, which is raised at once)


def test_a_stalled_peer_raises_timeout_instead_of_hanging():
    with pytest.raises(RuntimeError, match="stage 0 waited 2 s for the error of micro-batch 0"):
        run_local(_stalled, 2, timeout=DEADLINE)


def _refusals(rank: int, world: int) -> list[str]:
    model = _model()
    stages = split_sequential(model, [6])
    messages = []
    attempts = [
        dict(rule=fa.SignDFA(), points=["5"]),
        dict(rule=fa.DFA(), points=[] if rank == 0 else ["7"], micro_batches=2),
        dict(rule=fa.DFA(), points=["5"] if rank == 0 else ["7"], micro_batches=0),
        dict(rule=fa.DFA(), points=["5"] if rank == 0 else ["7"], mode="eager"),
        dict(rule=fa.DFA(), points=["nope"]),
    ]
    for attempt in attempts:
        options = dict(
            optimizer=lambda p: torch.optim.SGD(p, lr=0.1), micro_batches=2, loss_fn=None
        )
        options.update(attempt)
        try:
            DFAPipelineStage(stages[rank], options.pop("rule"), **options).close()
        except (TypeError, ValueError) as exc:
            messages.append(f"{type(exc).__name__}: {exc}")
        else:
            messages.append("accepted")
    return messages


def test_refusals_name_the_problem():
    first, last = run_local(_refusals, 2, timeout=DEADLINE)
    assert "fa.DFA only, got SignDFA" in first[0]
    assert "stage 0 has no feedback point" in first[1]
    assert "the last stage: it needs loss_fn" in last[1]
    assert "micro_batches must be >= 1" in first[2]
    assert "mode must be 'sync' or 'async'" in first[3]
    assert "'nope' is not a submodule" in first[4]


def test_stage_output_must_be_a_point():
    """A stage whose last module is not a point would send a tensor that carries a graph."""
    with pytest.raises(RuntimeError, match="stage 0's output is not a feedback point"):
        run_local(_output_not_point, 2, timeout=DEADLINE)


def _output_not_point(rank: int, world: int) -> None:
    model = _model()
    stages = split_sequential(model, [6])
    stage = DFAPipelineStage(
        stages[rank],
        fa.DFA(),
        points=["3"] if rank == 0 else ["7"],  # stage 0 ends at "5", which is not a point
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        micro_batches=2,
        loss_fn=F.cross_entropy,
        timeout=5.0,
    )
    if rank == 0:
        stage.step(*_batch())


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("scale", ["principled", "tinydfa", 0.5])
def test_stage_matrices_are_the_slices_of_fa_dfa_feedback(shared, scale):
    """Each stage's columns, drawn on its own, are ``fa.DFA``'s ``B_l`` of the same points."""
    model = _model()
    points = stage_points(model, [4, 8])
    rule = fa.DFA(seed=11, shared=shared, scale=scale)
    rule.apply(model, points=[p for stage in points for p in stage])
    recorded: list[torch.Size] = []
    hooks = [
        model.get_submodule(p).register_forward_hook(lambda m, a, out: recorded.append(out.shape))
        for stage in points
        for p in stage
    ]
    x, _ = _batch()
    y = model(x)
    for hook in hooks:
        hook.remove()
    reference = rule.feedback_matrices(model)
    widths = widths_from_shapes(recorded, y.shape)
    layout = build_layout(rule, widths, y.shape[-1])
    first = 0
    for stage in points:
        matrix = stage_matrix(rule, layout, first, len(stage), dtype=torch.float64)
        expected = torch.cat([reference[p] for p in stage], dim=1) if stage else None
        if expected is None:
            assert matrix is None
        else:
            assert torch.equal(matrix, expected)
        first += len(stage)


def test_shape_messages_round_trip():
    shapes = [[3, 4], [3, 5, 6], [2]]
    assert decode_shapes(encode_shapes(shapes)) == shapes
    with pytest.raises(PlacementError, match=r"leading axes must equal the output's"):
        widths_from_shapes([[3, 4], [2, 4]], [3, 10])


def test_split_keeps_names_and_shares_modules():
    model = _model()
    stages = split_sequential(model, [4, 8])
    assert [list(s._modules) for s in stages] == [
        ["0", "1", "2", "3"],
        ["4", "5", "6", "7"],
        ["8", "9", "10"],
    ]
    assert stages[1].get_submodule("6") is model[6]
    assert stage_points(model, [4, 8]) == [["1", "3"], ["5", "7"], ["9"]]
    assert stage_points(model, [4, 8], activations=False) == [["3"], ["7"], []]
    assert stage_points(model, [5]) == [["1", "3", "4"], ["5", "7", "9"]]
    by_name = split_sequential(model, ["4", "8"])
    assert [list(s._modules) for s in by_name] == [list(s._modules) for s in stages]


@pytest.mark.parametrize(
    ("boundaries", "match"),
    [
        ([], "single stage"),
        ([0], "strictly increasing"),
        ([4, 4], "strictly"),
        ([11], "1..10"),
        (["nope"], "'nope' is not a child"),
    ],
)
def test_split_refuses_bad_boundaries(boundaries, match):
    with pytest.raises(ValueError, match=match):
        split_sequential(_model(), boundaries)


def test_split_refuses_a_module_that_is_not_sequential():
    with pytest.raises(TypeError, match=r"expects an nn\.Sequential"):
        split_sequential(nn.ModuleList([nn.Linear(2, 2)]), [1])


# --- the schedule model of benchmarks/pipeline_model.py ----------------------------------------


def _schedule_model():
    import importlib
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    return importlib.import_module("pipeline_model")


@pytest.mark.parametrize(("stages", "micro"), [(2, 4), (4, 8), (8, 4)])
def test_schedule_model_matches_the_closed_forms(stages, micro):
    """Equal stages, free messages: GPipe and 1F1B take (M + S - 1)(f + b) per step (Huang et al.
    2019); async DFA has no bubble, M (f + b); sync DFA's bubble is the pipeline fill."""
    model = _schedule_model()
    bp = [model.StageCost(1.0, 2.0)] * stages
    dfa = [model.StageCost(1.0, 1.0)] * stages
    bubble = (micro + stages - 1) * 3.0
    assert model.simulate("gpipe", bp, micro).step_time == pytest.approx(bubble)
    assert model.simulate("1f1b", bp, micro).step_time == pytest.approx(bubble)
    assert model.simulate("dfa-async", dfa, micro, steps=24).step_time == pytest.approx(
        micro * 2.0, rel=0.02
    )
    sync = model.simulate("dfa-sync", dfa, micro).step_time
    assert micro * 2.0 < sync <= micro * 2.0 + (stages - 1) * 1.0 + 1.0


class _ResidualHead(nn.Module):
    """``h + f(h)`` with ``h = pre(x)``, then a head: a point inside ``f`` does not cut the
    residual path from the output to ``pre``."""

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Linear(16, 16)
        self.f = nn.Sequential(nn.Linear(16, 16), nn.Tanh())
        self.head = nn.Linear(16, SIZES[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        return self.head(h + self.f(h))


def _leaky_stage(rank: int, world: int) -> None:
    torch.manual_seed(0)
    first = nn.Sequential(nn.Linear(SIZES[0], 16), nn.Tanh())
    module = (first if rank == 0 else _ResidualHead()).double()
    stage = DFAPipelineStage(
        module,
        fa.DFA(),
        points=["1"] if rank == 0 else ["f.1"],
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        micro_batches=1,
        loss_fn=F.cross_entropy,
        timeout=5.0,
    )
    stage.step(*_batch())


def test_a_stage_whose_points_do_not_cut_its_graph_is_refused():
    """Issue 23: the pipeline proves each stage's cut as fa.DFA does. Here the last stage's
    output reaches ``pre``, below its point, through the residual path: without the check
    ``pre`` would train by backprop (the loss's gradient through ``h``) and by DFA at once."""
    with pytest.raises(RuntimeError, match=r"do not cut the stage's graph.*pre\.weight"):
        run_local(_leaky_stage, 2, timeout=DEADLINE)
