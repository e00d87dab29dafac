"""The zoo of issue 10: foreign models convert without ever training by backprop in secret.

Every model of ``zoo.models`` (torch.nn encoders and recurrent nets, a timm-style ViT, Hugging Face
GPT-2 / BERT / ViT, PyG GraphSAGE / GIN / GAT, torchfm DeepFM / AutoInt / AFN / xDeepFM, the
library's ResNet), with the automatic placement and with explicit block points:

(a) ``Shallow``: no parameter that feeds a point receives a gradient, the top block gets its true
    gradient;
(b) ``DFA``: every gradient equals the float64 reference of ``zoo.reference`` (local backprop of
    ``B_l e`` at each point, the true gradient above the last one; ``B`` read from the raw buffer);
(c) ``remove`` restores backprop exactly;
(d) a ``state_dict`` round trip into a fresh model gives identical gradients;

or, where the placement cannot be cut, the first training forward raises ``fa.PlacementError``
naming the module. Also: deep copies and pickles train with their own feedback, one rule object
serves many models in turn, ``fa.alignment`` classifies every trained layer as the graph says,
points inside residual branches are refused, and the rule stays exact after optimizer steps, two
``backward(retain_graph=True)`` calls, stray calls of submodules and empty batches.

Run: ``OMP_NUM_THREADS=1 python -m pytest tests/test_zoo.py -q`` (no downloads; a model is skipped
only when the library it comes from is not installed).
"""

from __future__ import annotations

import copy
import gc
import pickle
import re
import weakref

import pytest
import torch

import feedback_alignment as fa
from zoo.models import BATCH, CASES, TOKENS, VARIANTS, Case
from zoo.reference import backprop_grads, reference_step

KEY = fa.FEEDBACK_BUFFER
TOL = {"rtol": 1e-10, "atol": 1e-12}
PLACEMENTS = ("auto", "blocks")
SEED = 7

Grads = dict[str, "torch.Tensor | None"]


@pytest.fixture(autouse=True)
def _float64_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_num_threads(threads)


def _case(name: str) -> Case:
    case = CASES[name] if name in CASES else VARIANTS[name]
    if not case.available:
        pytest.skip(f"{case.library} is not installed")
    return case


def _points(case: Case, placement: str) -> list[str] | None:
    return None if placement == "auto" else list(case.blocks)


def _convert(case: Case, rule: fa.DirectFeedback, placement: str, seed: int = 0):
    """A fresh model with ``rule`` applied, and an unconverted copy with the same weights."""
    model = case.build(seed)
    reference = copy.deepcopy(model)
    rule.apply(model, points=_points(case, placement), **case.apply)
    return model, reference


def _train(case: Case, model: torch.nn.Module) -> Grads:
    model.zero_grad(set_to_none=True)
    case.run(model).backward()
    return {name: p.grad for name, p in model.named_parameters()}


def _first_step(case: Case, model: torch.nn.Module, placement: str) -> Grads | None:
    """The first training step; ``None`` after the refusal the case expects for this placement."""
    if placement == "auto" and case.refuse_auto is not None:
        with pytest.raises(fa.PlacementError, match=case.refuse_auto) as refusal:
            _train(case, model)
        message = str(refusal.value)
        assert "points=" in message, "the refusal must say where to put a point"
        assert any(point in message for point in case.auto), "name the points it tried"
        return None
    return _train(case, model)


def _reference(case: Case, reference: torch.nn.Module, points: list[str], buffer=None, rule=None):
    return reference_step(
        reference,
        points,
        case.run,
        error_site=case.error_site,
        buffer=buffer,
        point_axes=case.point_axes,
        output_activation=case.apply.get("output_activation"),
        batch_axes=case.apply.get("batch_axes"),
        shared=True if rule is None else rule.shared,
        scaling="principled" if rule is None else rule.scale,
    )


def _has(grad: torch.Tensor | None) -> bool:
    return grad is not None and bool(grad.any())


def _assert_grads(actual: Grads, expected: Grads, what: str) -> None:
    assert actual.keys() == expected.keys()
    for name, want in expected.items():
        got = actual[name]
        if not _has(want):
            stray = 0.0 if got is None or not got.numel() else float(got.abs().max())
            assert stray <= TOL["atol"], f"{what}: {name} received a gradient ({stray:.3g})"
            continue
        assert got is not None, f"{what}: {name} received no gradient"
        torch.testing.assert_close(got, want, **TOL, msg=lambda m, n=name: f"{what}: {n}: {m}")


ALL = sorted(CASES)
PAIRS = [
    *((name, placement) for name in ALL for placement in PLACEMENTS),
    *((name, "blocks") for name in sorted(VARIANTS)),
]
"""Every zoo model with both placements, and the variants with their explicit points."""


@pytest.mark.parametrize("name", ALL)
def test_automatic_placement_finds_the_blocks(name):
    case = _case(name)
    model = case.build(0)
    rule = fa.DFA(seed=SEED)
    rule.apply(model, **case.apply)
    assert sorted(rule.points(model)) == sorted(case.auto)


@pytest.mark.parametrize(("name", "placement"), PAIRS)
def test_shallow_trains_only_the_top(name, placement):
    case = _case(name)
    rule = fa.Shallow()
    model, reference = _convert(case, rule, placement)
    grads = _first_step(case, model, placement)
    if grads is None:
        return
    expected = _reference(case, reference, rule.points(model))
    below = expected.feeders - {n for n, g in expected.top.items() if g is not None}
    assert below, "the placement leaves nothing below its points: the check would not bite"
    leaked = sorted(n for n in below if _has(grads[n]))
    assert not leaked, f"Shallow trained parameters below the points: {leaked}"
    assert any(_has(g) for g in grads.values()), "the top block received no gradient"
    _assert_grads(grads, expected.top, "Shallow")


@pytest.mark.parametrize(("name", "placement"), PAIRS)
def test_dfa_matches_the_float64_reference(name, placement):
    _check_dfa(_case(name), placement, fa.DFA(seed=SEED))


MATRICES = [
    {"shared": False},
    {"scale": "nokland", "feedback": "uniform"},
    {"shared": False, "scale": "tinydfa", "feedback": "rademacher"},
]


@pytest.mark.parametrize("options", MATRICES, ids=["disjoint", "nokland", "disjoint-tinydfa"])
@pytest.mark.parametrize(
    "name", ["resnet-batchnorm", "hf-bert-labels", "lstm-sf-state", "torchfm-autoint", "pyg-gin"]
)
def test_dfa_matches_the_reference_with_other_matrices(name, options):
    _check_dfa(_case(name), "blocks", fa.DFA(seed=SEED, **options))


def _check_dfa(case: Case, placement: str, rule: fa.DirectFeedback) -> None:
    model, reference = _convert(case, rule, placement)
    grads = _first_step(case, model, placement)
    if grads is None:
        return
    buffer = model.state_dict()[KEY]
    expected = _reference(case, reference, rule.points(model), buffer, rule)
    assert list(rule.layout(model).names) == expected.names
    assert _below_points_learn(expected, grads), "no parameter below the points learned"
    _assert_grads(grads, expected.grads, "DFA")


def _below_points_learn(expected, grads: Grads) -> bool:
    """Some parameter that only feeds points received a (feedback) gradient."""
    top = {n for n, g in expected.top.items() if g is not None}
    return any(_has(grads[n]) for n in expected.feeders - top)


@pytest.mark.parametrize(("name", "placement"), PAIRS)
def test_remove_restores_backprop(name, placement):
    case = _case(name)
    rule = fa.DFA(seed=SEED)
    model, reference = _convert(case, rule, placement)
    _first_step(case, model, placement)
    rule.remove(model)
    assert KEY not in model.state_dict()
    _assert_grads(_train(case, model), backprop_grads(reference, case.run), "after remove")


@pytest.mark.parametrize(("name", "placement"), PAIRS)
def test_state_dict_round_trip_gives_identical_gradients(name, placement):
    case = _case(name)
    model, _ = _convert(case, fa.DFA(seed=SEED), placement)
    if _first_step(case, model, placement) is None:
        return
    state = model.state_dict()
    assert KEY in state
    fresh = case.build(1)  # other weights, another seed: everything must come from the checkpoint
    fa.DFA(seed=SEED + 1).apply(fresh, points=_points(case, placement), **case.apply)
    fresh.load_state_dict(state)
    _assert_grads(_train(case, fresh), _train(case, model), "after load_state_dict")


FAMILIES = [
    "encoder-sf-gelu",
    "lstm-bf-state",
    "gru-sf-sequence",
    "vit-timm-style",
    "resnet-batchnorm",
    "hf-gpt2-labels",
    "hf-bert",
    "hf-vit-labels",
    "pyg-gat",
    "torchfm-autoint",
    "torchfm-afn",
]
"""One model per kind, for the slower checks (a full ``gc.collect`` each)."""


@pytest.mark.parametrize("name", FAMILIES)
def test_deep_copy_trains_with_its_own_feedback(name):
    case = _case(name)
    rule = fa.DFA(seed=SEED)
    model, reference = _convert(case, rule, "blocks")
    _train(case, model)
    clone = copy.deepcopy(model)
    own = clone.state_dict()[KEY].clone()
    model.state_dict()[KEY].mul_(2.0)  # the original's feedback changes; the copy's must not
    original = weakref.ref(model)
    del model
    gc.collect()
    assert original() is None, "the copy (or the rule) keeps the original model alive"
    grads = _train(case, clone)
    assert torch.equal(clone.state_dict()[KEY], own)
    expected = _reference(case, reference, rule.points(clone), own)
    _assert_grads(grads, expected.grads, "deep copy")


@pytest.mark.parametrize("name", ALL)
def test_pickle_round_trip_trains_alike(name):
    case = _case(name)
    model, _ = _convert(case, fa.DFA(seed=SEED), "blocks")
    _train(case, model)
    clone = pickle.loads(pickle.dumps(model))
    assert torch.equal(clone.state_dict()[KEY], model.state_dict()[KEY])
    _assert_grads(_train(case, clone), _train(case, model), "after pickling")


@pytest.mark.parametrize("name", ["encoder-bf-gelu", "lstm-sf-state", "torchfm-afn"])
def test_one_rule_serves_twenty_models_in_turn(name):
    case = _case(name)
    rule = fa.DFA(seed=SEED)
    for seed in range(20):
        model = case.build(seed)  # the previous model is dropped without remove
        rule.apply(model, points=list(case.blocks), **case.apply)
        _train(case, model)
        assert rule.points(model) == list(case.blocks)


ENCODER_ACTS = ["encoder.layers.0.activation", "encoder.layers.1.activation"]
MICRO = {
    "vit-timm-style": (["blocks.0.mlp.act", "blocks.1.mlp.act"], {}),
    "encoder-bf-gelu": (ENCODER_ACTS, {}),
    "encoder-sf-relu": (ENCODER_ACTS, {"point_batch_axes": dict.fromkeys(ENCODER_ACTS, 1)}),
    "resnet-batchnorm": (["blocks.0.relu1", "blocks.1.relu1"], {}),  # the shortcut bypasses
    "hf-gpt2-labels": (["transformer.h.0.mlp.act", "transformer.h.1.mlp.act"], {}),
    "hf-bert-labels": (
        [f"bert.encoder.layer.{i}.intermediate.intermediate_act_fn" for i in range(2)],
        {},
    ),
}


@pytest.mark.parametrize("rule", [fa.DFA(seed=SEED), fa.Shallow()], ids=["DFA", "Shallow"])
@pytest.mark.parametrize("name", sorted(MICRO))
def test_points_inside_a_residual_branch_are_refused(name, rule):
    """The residual stream carries the uncut tensor around such a point: a leak to refuse."""
    case = _case(name)
    points, options = MICRO[name]
    model = case.build(0)
    rule.apply(model, points=points, **case.apply, **options)
    with pytest.raises(fa.PlacementError, match=re.escape(points[0])) as refusal:
        _train(case, model)
    message = str(refusal.value)
    assert "cut" in message and "points=" in message, "say that it leaks and what to name"


def test_a_seq_first_point_without_its_batch_axis_is_refused():
    case = _case("encoder-sf-norm-points")
    model = case.build(0)
    fa.DFA(seed=SEED).apply(model, points=list(case.blocks))
    with pytest.raises(fa.PlacementError, match=r"encoder\.layers\.0\.norm2.*point_batch_axes"):
        _train(case, model)


ALIGNED = sorted(name for name, case in {**CASES, **VARIANTS}.items() if case.batch is not None)


@pytest.mark.parametrize("name", ALIGNED)
def test_alignment_reports_every_trained_layer_in_its_role(name):
    """Every module with a trained ``weight`` is measured and classified as the graph says.

    hidden: its weight feeds a point and gets no true gradient; true gradient: it gets the true
    gradient and feeds no point (the top block, a branch around the points); tied: both.
    """
    case = _case(name)
    placement = "auto" if case.refuse_auto is None and case.auto is not None else "blocks"
    rule = fa.DFA(seed=SEED)
    model, reference = _convert(case, rule, placement)
    _train(case, model)
    report = fa.alignment(model, rule, case.batch, case.loss_fn)
    expected = _reference(case, reference, rule.points(model))
    top = {n for n, g in expected.top.items() if g is not None}
    weights = {}  # a module's weight: ``weight``, or MultiheadAttention's ``in_proj_weight``
    for module, m in model.named_modules():
        for attr in ("weight", "in_proj_weight"):
            if isinstance(m._parameters.get(attr), torch.nn.Parameter):
                weights[f"{module}.{attr}" if module else attr] = module
                break
    trained = {n for n in weights if n in top or n in expected.feeders}
    assert set(report.update_angle) == {weights[n] for n in trained}
    assert sorted(report.hidden) == sorted(weights[n] for n in trained - top)
    assert sorted(report.true_gradient) == sorted(
        weights[n] for n in trained & top - expected.feeders
    )
    assert sorted(report.tied) == sorted(weights[n] for n in trained & top & expected.feeders)
    for module in report.hidden:
        assert 0.0 <= report.update_angle[module] <= 180.0, f"{module} has no measured angle"


@pytest.mark.parametrize("name", FAMILIES)
def test_backward_twice_with_retain_graph_accumulates_the_rule(name):
    case = _case(name)
    rule = fa.DFA(seed=SEED)
    model, reference = _convert(case, rule, "blocks")
    model.zero_grad(set_to_none=True)
    loss = case.run(model)
    loss.backward(retain_graph=True)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    expected = _reference(case, reference, rule.points(model), model.state_dict()[KEY])
    twice = {n: None if g is None else 2 * g for n, g in expected.grads.items()}
    _assert_grads(grads, twice, "two backward passes")


@pytest.mark.parametrize("name", FAMILIES)
def test_dfa_matches_the_reference_after_an_optimizer_step(name):
    """The second step (new weights, the placement already verified) is still exact."""
    case = _case(name)
    rule = fa.DFA(seed=SEED)
    model, reference = _convert(case, rule, "blocks")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        _train(case, model)
        optimizer.step()
    state = {k: v for k, v in model.state_dict().items() if k != KEY}
    reference.load_state_dict(state)
    grads = _train(case, model)
    expected = _reference(case, reference, rule.points(model), model.state_dict()[KEY])
    _assert_grads(grads, expected.grads, "third step")


def _stray_call(name: str, model: torch.nn.Module) -> None:
    """Runs a part of the model with grad outside its forward pass, as a user may between steps."""
    if name == "encoder-sf-gelu":
        model.encoder.layers[0](torch.randn(TOKENS, BATCH, 8))  # a point module alone
        model.encoder(torch.randn(TOKENS, BATCH, 8))  # a module that contains the points
    elif name == "lstm-bf-state":
        model.rnn(torch.randn(BATCH, TOKENS, 8))
    elif name == "hf-gpt2-labels":
        model.transformer.h[0](torch.randn(BATCH, TOKENS, 8))
        model.transformer(torch.randint(0, 11, (BATCH, TOKENS)))
    else:
        raise AssertionError(name)


@pytest.mark.parametrize("name", ["encoder-sf-gelu", "lstm-bf-state", "hf-gpt2-labels"])
def test_stray_calls_of_submodules_leave_no_stale_records(name):
    case = _case(name)
    rule = fa.DFA(seed=SEED)
    model, reference = _convert(case, rule, "blocks")
    _train(case, model)
    state = {k: v.clone() for k, v in model.state_dict().items()}  # BatchNorm statistics too
    # with grad, a point that runs outside the model's forward pass would train by backprop
    with pytest.raises(fa.PlacementError, match=r"ran with grad enabled outside a forward pass"):
        _stray_call(name, model)
    with torch.no_grad():  # a probe: allowed, and it leaves nothing behind
        _stray_call(name, model)
    model.load_state_dict(state)
    grads = _train(case, model)
    reference.load_state_dict({k: v for k, v in state.items() if k != KEY})
    expected = _reference(case, reference, rule.points(model), model.state_dict()[KEY])
    _assert_grads(grads, expected.grads, "after a stray call")


@pytest.mark.parametrize("name", ["encoder-bf-relu", "vit-timm-style", "torchfm-afn"])
def test_an_empty_batch_trains_nothing_and_raises_nothing(name):
    case = _case(name)
    model, _ = _convert(case, fa.DFA(seed=SEED), "auto")
    _train(case, model)
    if name == "torchfm-afn":
        model.eval()  # BatchNorm cannot take batch statistics of no samples
    inputs = case.batch[0][:0]
    model.zero_grad(set_to_none=True)
    model(inputs).sum().backward()
    assert not any(_has(p.grad) for p in model.parameters())


def test_a_second_rule_is_refused_and_remove_frees_the_model():
    case = _case("encoder-bf-gelu")
    first = fa.DFA(seed=SEED)
    model, reference = _convert(case, first, "blocks")
    with pytest.raises(RuntimeError, match="already"):
        fa.DFA(seed=SEED).apply(model)
    first.remove(model)
    again = fa.DFA(seed=SEED + 1)
    again.apply(model, points=list(case.blocks))
    grads = _train(case, model)
    expected = _reference(case, reference, again.points(model), model.state_dict()[KEY])
    _assert_grads(grads, expected.grads, "after remove and apply")
