"""Portable checkpoints (issue 20, item 4): ``fa.plain_state_dict`` gives the unconverted model's
state dict, and a converted model loads a plain checkpoint strictly, regenerating the feedback
from the rule's seed (learned feedback starts afresh, with a warning). Every rule is covered."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
from feedback_alignment.checkpoints import feedback_keys
from feedback_alignment.rules.base import FeedbackResetWarning

RULES: dict[str, Callable[[], fa.Rule]] = {
    name: partial(fa.make_rule, name, seed=3)
    for name in ("DFA", "SignDFA", "DRTP", "Shallow", "FA", "uSF", "frSF", "brSF", "KP", "WM")
}
"""Every rule, built through the registry (``fa.make_rule`` takes these spellings)."""
ADDED = {
    "DFA": ["direct_feedback_matrix"],
    "SignDFA": ["direct_feedback_matrix"],
    "DRTP": ["direct_feedback_matrix"],
    "Shallow": [],
    "FA": ["0.weight_feedback", "2.weight_feedback", "4.weight_feedback"],
    "uSF": [],
    "frSF": ["0.feedback_magnitude", "2.feedback_magnitude", "4.feedback_magnitude"],
    "brSF": ["0.feedback_stream", "2.feedback_stream", "4.feedback_stream"],
    "KP": ["0.weight_feedback", "2.weight_feedback", "4.weight_feedback"],
    "WM": ["0.weight_feedback", "2.weight_feedback", "4.weight_feedback"],
}
LEARNED = {"KP", "WM"}


def _make(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(6, 4, generator=generator), torch.randint(0, 3, (6,), generator=generator)


def _step(model: nn.Module, rule: fa.Rule, opt: torch.optim.Optimizer | None = None) -> None:
    x, y = _batch()
    if isinstance(rule, fa.DRTP):
        rule.set_targets(y)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    if opt is not None:
        opt.step()


def _trained(name: str, steps: int = 3) -> tuple[nn.Module, fa.Rule]:
    rule = RULES[name]()
    model = rule.apply(_make())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01)
    for _ in range(steps):
        _step(model, rule, opt)
        if isinstance(rule, fa.WeightMirror):
            rule.mirror(model, steps=2, generator=torch.Generator().manual_seed(0))
    return model, rule


@pytest.mark.parametrize("name", list(RULES))
def test_plain_state_dict_is_the_unconverted_models(name: str) -> None:
    model, _ = _trained(name)
    assert sorted(feedback_keys(model)) == ADDED[name]
    plain = fa.plain_state_dict(model)
    reference = _make(5)
    assert list(plain) == list(reference.state_dict())  # same keys, same order
    reference.load_state_dict(plain)  # strict
    for key, value in reference.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])
    assert set(model.state_dict()) - set(plain) == set(ADDED[name])


@pytest.mark.parametrize("name", list(RULES))
@pytest.mark.parametrize("ran", [False, True], ids=["fresh", "after-forward"])
def test_a_plain_checkpoint_loads_strictly_and_regenerates_the_feedback(
    name: str, ran: bool
) -> None:
    """The regenerated feedback equals the feedback a fresh application of the same rule
    makes; the target's own feedback is overwritten first, so keeping it would fail."""
    trained, _ = _trained(name)
    plain = fa.plain_state_dict(trained)
    rule = RULES[name]()
    target = rule.apply(_make(7))
    if ran:
        _step(target, rule)
        with torch.no_grad():
            for key in ADDED[name]:
                target.state_dict(keep_vars=True)[key].fill_(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = target.load_state_dict(plain)  # strict
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in plain.items():
        assert torch.equal(target.state_dict()[key], value), key
    resets = [w for w in caught if issubclass(w.category, FeedbackResetWarning)]
    if name in LEARNED:  # also into a fresh model: resuming KP from a plain file loses B
        assert len(resets) == 1 and "starts afresh" in str(resets[0].message)
    else:
        assert not resets
    fresh_rule = RULES[name]()
    fresh = fresh_rule.apply(_make(7))
    _step(fresh, fresh_rule)  # draws the direct matrix; layer-wise state exists from apply
    if not ran:
        _step(target, rule)
    loaded, expected = target.state_dict(), fresh.state_dict()
    for key in ADDED[name]:
        if name == "brSF":  # the stream restarts at draw 0 (the fresh target's step made one)
            assert loaded[key].tolist()[:2] == [expected[key][0].item(), 0 if ran else 1], key
        else:
            assert torch.equal(loaded[key], expected[key]), key


@pytest.mark.parametrize("name", ["DFA", "SignDFA", "DRTP", "FA", "frSF", "uSF"])
def test_training_resumed_from_a_plain_checkpoint_continues_as_the_original(name: str) -> None:
    """For fixed feedback the plain checkpoint loses nothing: the next step's gradients equal
    those of the model that kept its feedback."""
    model, rule = _trained(name)
    plain = {k: v.clone() for k, v in fa.plain_state_dict(model).items()}
    resumed_rule = RULES[name]()
    resumed = resumed_rule.apply(_make(9))
    resumed.load_state_dict(plain)
    _step(model, rule)
    _step(resumed, resumed_rule)
    for (key, a), (_, b) in zip(model.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.equal(a.grad, b.grad), key


def test_a_full_checkpoint_keeps_its_learned_feedback_without_a_warning() -> None:
    model, _ = _trained("KP")
    full = {k: v.clone() for k, v in model.state_dict().items()}
    target = fa.KolenPollack(seed=3).apply(_make(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeedbackResetWarning)
        target.load_state_dict(full)
    assert torch.equal(target[0].weight_feedback, full["0.weight_feedback"])
    assert not torch.equal(
        full["0.weight_feedback"], fa.KolenPollack(seed=3).apply(_make())[0].weight_feedback
    )  # training moved B: keeping it is not the same as regenerating it


def test_feedback_of_another_seed_in_the_checkpoint_is_kept() -> None:
    source = fa.DFA(seed=11).apply(_make())
    _step(source, fa.DFA())
    target_rule = fa.DFA(seed=3)
    target = target_rule.apply(_make())
    _step(target, target_rule)
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.direct_feedback_matrix, source.direct_feedback_matrix)


class _Wrapper(nn.Module):
    """A model inside another (Lightning's module, a task head): the rule on the inner one."""

    def __init__(self) -> None:
        super().__init__()
        self.net = _make()
        self.extra = nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.extra.sum()


def test_a_rule_on_a_submodule_and_both_families_at_once() -> None:
    dfa, fa_rule = fa.DFA(seed=1), fa.FA(seed=2)
    outer = _Wrapper()
    dfa.apply(outer.net)
    fa_rule.apply(outer.net)
    x, y = _batch()
    F.cross_entropy(outer(x), y).backward()
    keys = sorted(feedback_keys(outer))
    assert keys == [
        "net.0.weight_feedback",
        "net.2.weight_feedback",
        "net.4.weight_feedback",
        "net.direct_feedback_matrix",
    ]
    plain = fa.plain_state_dict(outer)
    _Wrapper().load_state_dict(plain)
    again = _Wrapper()
    fa.DFA(seed=1).apply(again.net)
    fa.FA(seed=2).apply(again.net)
    F.cross_entropy(again(x), y).backward()
    with torch.no_grad():
        again.net.direct_feedback_matrix.zero_()
        again.net[2].weight_feedback.zero_()
    again.load_state_dict(plain)
    for key in keys:
        assert torch.equal(again.state_dict()[key], outer.state_dict()[key]), key
    assert sorted(fa.plain_state_dict(outer, prefix="model.")) == sorted(
        "model." + k for k in plain
    )


def test_a_layer_shared_at_two_paths_is_stripped_and_regenerated_at_both() -> None:
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.Tanh(), shared, nn.Tanh(), nn.Linear(4, 3))
    fa.FA(seed=0).apply(model)
    assert sorted(feedback_keys(model)) == ["0.weight_feedback", "2.weight_feedback",
                                            "4.weight_feedback"]  # fmt: skip
    plain = fa.plain_state_dict(model)
    assert not any(k.endswith("weight_feedback") for k in plain)
    model.load_state_dict(plain)  # strict: both paths filled


def test_remove_takes_the_load_hook_away() -> None:
    rule = fa.FA(seed=0)
    model = rule.apply(_make())
    plain = fa.plain_state_dict(model)
    rule.remove(model)
    assert feedback_keys(model) == []
    model.load_state_dict(plain)
    assert not model._load_state_dict_pre_hooks


@pytest.mark.parametrize("name", ["DFA", "KP"])
def test_a_partial_non_strict_load_keeps_the_feedback_in_use(name: str) -> None:
    """Regeneration is for strict loads of plain checkpoints: loading a few weights with
    strict=False (fine-tuning a part) must not reset KP's learned B or replace DFA's matrix."""
    model, _ = _trained(name)
    before = {k: model.state_dict()[k].clone() for k in ADDED[name]}
    with torch.no_grad():  # feedback that no seed would draw: a reset would be visible
        for key in ADDED[name]:
            model.state_dict(keep_vars=True)[key].mul_(3.0)
    kept = {k: model.state_dict()[k].clone() for k in ADDED[name]}
    with warnings.catch_warnings():
        warnings.simplefilter("error", FeedbackResetWarning)
        result = model.load_state_dict({"0.bias": torch.zeros(8)}, strict=False)
    assert set(ADDED[name]) <= set(result.missing_keys)
    for key in ADDED[name]:
        assert torch.equal(model.state_dict()[key], kept[key]), key
        assert not torch.equal(kept[key], before[key])
