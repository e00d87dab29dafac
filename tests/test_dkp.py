"""Direct Kolen-Pollack (issue 24, item 1): DFA's signal through learned per-point matrices.

The float64 reference is the zoo's (``zoo.reference``, written from the equations): each point's
signal is ``B_l e`` with ``B_l`` read from the raw parameter (disjoint columns, no scale: DKP
folds its initial scale into the values), and ``dL/dB_l = e^T h_l``, the error's rows against the
point's rows, summed over the samples (Webster, Choi and Ahn 2020; webstah/dkp-gist's
``grad_at_output.t().mm(layer_out_view)``).
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
from feedback_alignment.pipeline import run_local
from zoo.models import CASES, VARIANTS, Case
from zoo.reference import reference_step

KEY = fa.FEEDBACK_BUFFER
TOL = {"rtol": 1e-10, "atol": 1e-12}


pytestmark = pytest.mark.usefixtures("float64_one_thread")


def _case(name: str) -> Case:
    case = CASES[name] if name in CASES else VARIANTS[name]
    if not case.available:
        pytest.skip(f"{case.library} is not installed")
    return case


def _materialized(case: Case, rule: fa.DKP, seed: int = 0):
    """A zoo model with DKP applied at its block points and its matrix made by one eval-mode
    pass of the case's own step (the zoo's models take their inputs in ``case.run``)."""
    model = case.build(seed)
    reference = copy.deepcopy(model)
    rule.apply(model, points=list(case.blocks), **case.apply)
    binding = rule._binding(model)
    binding.materializing = True
    model.eval()
    try:
        case.run(model)
    finally:
        binding.materializing = False
        model.train()
    model.zero_grad(set_to_none=True)
    return model, reference


FAMILIES = [
    "encoder-sf-gelu",
    "lstm-sf-state",
    "resnet-batchnorm",
    "hf-gpt2-labels",
    "pyg-gat",
    "torchfm-autoint",
]
"""Sequence-first points, recurrent state, conv maps with BatchNorm, tokens as samples, graph
nodes, an output nonlinearity."""


@pytest.mark.parametrize("name", FAMILIES)
def test_dkp_matches_the_float64_reference(name):
    case = _case(name)
    rule = fa.DKP(seed=3)
    model, reference = _materialized(case, rule)
    matrix = model._parameters[KEY]
    assert isinstance(matrix, nn.Parameter) and matrix.requires_grad
    case.run(model).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n != KEY}
    expected = reference_step(
        reference,
        rule.points(model),
        case.run,
        error_site=case.error_site,
        buffer=matrix.detach(),
        point_axes=case.point_axes,
        output_activation=case.apply.get("output_activation"),
        batch_axes=case.apply.get("batch_axes"),
        shared=False,
        scaling="none",
    )
    below = [n for n in expected.feeders if grads[n] is not None and grads[n].any()]
    assert below, "no parameter below the points learned"
    for param, want in expected.grads.items():
        got = grads[param]
        if want is None or not want.any():
            assert got is None or not got.any(), f"{param} received a gradient"
            continue
        torch.testing.assert_close(got, want, **TOL, msg=lambda m, n=param: f"{n}: {m}")
    torch.testing.assert_close(matrix.grad, torch.cat(expected.feedback_grads, dim=1), **TOL)
    assert list(rule.layout(model).widths) == expected.widths


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)
    )  # fmt: skip


def _batch(seed: int = 1, n: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def test_the_initial_matrix_is_the_reference_kaiming_uniform_per_point():
    """``U(-1/sqrt(n_l), 1/sqrt(n_l))`` per point, in disjoint columns, drawn from the seed."""
    x, _ = _batch()
    rule = fa.DKP(seed=5)
    model = rule.apply(_mlp(), example_input=x)
    (matrix,) = rule.feedback_parameters(model)
    assert matrix.shape == (3, 8 + 5)
    for start, width in ((0, 8), (8, 5)):
        block = matrix.detach()[:, start : start + width]
        assert block.abs().max() <= 1 / math.sqrt(width)
        assert block.abs().max() > 0.5 / math.sqrt(width)  # spread over the range, not tiny
    again = fa.DKP(seed=5).apply(_mlp(1), example_input=x)
    torch.testing.assert_close(again._parameters[KEY], matrix, rtol=0, atol=0)
    other = fa.DKP(seed=6).apply(_mlp(), example_input=x)
    assert not torch.equal(other._parameters[KEY], matrix)


def test_materialize_changes_no_weight_statistic_or_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    stats = copy.deepcopy(model[1].state_dict())
    x, _ = _batch()
    fa.DKP().apply(model, points=["2"], example_input=x)
    assert model.training
    for key, value in stats.items():
        assert torch.equal(model[1].state_dict()[key], value), key
    assert all(p.grad is None for p in model.parameters())


def test_a_training_step_before_the_matrix_is_made_is_refused():
    x, y = _batch()
    rule = fa.DKP()
    model = rule.apply(_mlp())
    with pytest.raises(RuntimeError, match="example_input=x"):
        F.cross_entropy(model(x), y).backward()
    rule.materialize(model, x[:2])
    F.cross_entropy(model(x), y).backward()
    assert model._parameters[KEY].grad is not None


def test_a_refused_example_leaves_the_model_unconverted():
    model = nn.Sequential(nn.Linear(6, 3))
    with pytest.raises(fa.PlacementError):
        fa.DKP().apply(model, points=["0"], example_input=torch.randn(2, 6))
    assert not fa.DKP().is_applied(model) and KEY not in dict(model.named_parameters())


def test_the_matrix_learns_under_an_optimiser_of_its_own():
    """The reference's setting: SGD for the weights, Adam for ``B``; ``B`` moves by Adam's step."""
    x, y = _batch()
    rule = fa.DKP(seed=1)
    model = rule.apply(_mlp(), example_input=x[:2])
    (matrix,) = rule.feedback_parameters(model)
    weights = [p for p in model.parameters() if p is not matrix]
    assert len(weights) == 6
    opt_w = torch.optim.SGD(weights, lr=0.1, momentum=0.9, nesterov=True)
    opt_b = torch.optim.Adam([matrix], lr=1e-3, weight_decay=1e-6)
    before = matrix.detach().clone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(3):
            opt_w.zero_grad()
            opt_b.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt_w.step()
            opt_b.step()
    assert (matrix.detach() - before).abs().max() > 1e-3


def test_an_optimiser_without_the_matrix_is_warned_once():
    x, y = _batch()
    rule = fa.DKP()
    model = rule.apply(_mlp(), example_input=x[:2])
    (matrix,) = rule.feedback_parameters(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p is not matrix], lr=0.1)
    with pytest.warns(UserWarning, match="no optimiser holds it") as caught:
        for _ in range(4):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    assert sum("no optimiser holds it" in str(w.message) for w in caught) == 1


def test_gradient_accumulation_is_not_mistaken_for_a_missing_optimiser():
    x, y = _batch()
    rule = fa.DKP()
    model = rule.apply(_mlp(), example_input=x[:2])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(2):
            for _ in range(3):  # three micro-batches, one step
                F.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()


def test_checkpoints_resume_the_learned_matrix_and_a_plain_one_resets_it():
    x, y = _batch()
    rule = fa.DKP(seed=2)
    model = rule.apply(_mlp(), example_input=x[:2])
    initial = model._parameters[KEY].detach().clone()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    learned = model._parameters[KEY].detach().clone()
    assert not torch.equal(learned, initial)
    state = model.state_dict()

    resumed_rule = fa.DKP(seed=2)
    resumed = resumed_rule.apply(_mlp(9), example_input=x[:2])
    held = resumed._parameters[KEY]
    resumed.load_state_dict(state)
    assert resumed._parameters[KEY] is held, "the optimiser's parameter object must stay"
    torch.testing.assert_close(held.detach(), learned, rtol=0, atol=0)

    plain = fa.plain_state_dict(model)
    assert KEY not in plain and fa.feedback_keys(model) == [KEY]
    nn.Sequential(*_mlp()).load_state_dict(plain)  # strict into the unconverted model
    with pytest.warns(fa.FeedbackResetWarning, match="initial draw"):
        resumed.load_state_dict(plain)
    torch.testing.assert_close(resumed._parameters[KEY].detach(), initial, rtol=0, atol=0)


def test_registry_and_refused_sharing():
    assert fa.RULES["dkp"] is fa.DKP
    assert fa.rule_class("DKP") is fa.DKP
    rule = fa.make_rule("dkp", seed=4)
    assert isinstance(rule, fa.DKP) and rule.seed == 4 and not rule.shared
    with pytest.raises(TypeError):
        fa.DKP(shared=True)  # type: ignore[call-arg]


def test_fixed_feedback_rules_have_no_feedback_parameters():
    x, _ = _batch()
    rule = fa.DFA()
    model = rule.apply(_mlp(), example_input=x)
    assert rule.feedback_parameters(model) == []
    assert KEY in model.state_dict() and KEY not in dict(model.named_parameters())


def _ddp_worker(rank: int, world: int) -> tuple:
    torch.manual_seed(0)
    model = _mlp()
    x, y = _batch(seed=100 + rank)  # each rank its own data
    rule = fa.DKP(seed=7)
    rule.apply(model, example_input=x[:2])
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
    return rank, model._parameters[KEY].detach().numpy().copy()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_ranks_make_the_same_feedback_update():
    (_, b0), (_, b1) = run_local(_ddp_worker, 2, timeout=120.0)
    assert (torch.from_numpy(b0) - fa.DKP(seed=7).apply(_mlp(), example_input=_batch()[0][:2])
            ._parameters[KEY].detach().float()).abs().max() > 1e-4  # it learned  # fmt: skip
    assert torch.equal(torch.from_numpy(b0), torch.from_numpy(b1))


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_zoo_family_trains(name):
    """All 30 foreign models of the zoo at their block points: one DKP step gives ``B`` a
    finite, non-zero gradient and the layers below the points theirs (the float64 equations are
    checked on six families above)."""
    case = _case(name)
    rule = fa.DKP(seed=1)
    model, _ = _materialized(case, rule)
    case.run(model).backward()
    grad = model._parameters[KEY].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 0
    roles = rule.parameter_roles(model)
    hidden = [p for n, p in model.named_parameters() if roles.get(n) == "hidden"]
    assert hidden and any(p.grad is not None and p.grad.abs().max() > 0 for p in hidden)
