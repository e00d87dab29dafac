"""The rules' side of issue 20 (item 8): the bottleneck warning is a category users can filter,
given once per process and naming the remedy; ``rule.layout`` before the first forward pass
raises an error that says when the layout is known."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
from feedback_alignment.alignment import alignment


def _bottlenecked() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 3), nn.Tanh(), nn.Linear(3, 5))


def test_the_bottleneck_warning_is_filterable_given_once_and_names_the_remedy() -> None:
    x, y = torch.randn(4, 6), torch.randint(0, 5, (4,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the library's own once-per-process guard is tested
        for _ in range(3):
            model = fa.DFA(seed=0).apply(_bottlenecked())
            F.cross_entropy(model(x), y).backward()
    found = [w for w in caught if issubclass(w.category, fa.BottleneckWarning)]
    assert len(found) == 1, [str(w.message) for w in caught]
    message = str(found[0].message)
    assert "error_at=" in message and "simplefilter('ignore', fa.BottleneckWarning)" in message
    assert issubclass(fa.BottleneckWarning, UserWarning)


def test_the_bottleneck_warning_can_be_silenced_by_its_category() -> None:
    x, y = torch.randn(4, 6), torch.randint(0, 5, (4,))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", fa.BottleneckWarning)
        model = fa.DFA(seed=0).apply(_bottlenecked())
        F.cross_entropy(model(x), y).backward()
    assert not caught


@pytest.mark.parametrize("rule", [fa.DFA(), fa.SignDFA(), fa.DRTP()], ids=repr)
def test_layout_before_the_first_forward_pass_says_when_it_is_known(rule: fa.Rule) -> None:
    model = rule.apply(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)))
    with pytest.raises(RuntimeError, match="first training forward pass") as error:
        rule.layout(model)
    assert "points(model)" in str(error.value)
    assert rule.feedback_matrices(model) == {}
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    if isinstance(rule, fa.DRTP):
        rule.set_targets(y)
    report = alignment(model, rule, (x, y), F.cross_entropy)  # reads the layout after its pass
    assert report.update_angle and set(report.signal_cosine) <= {"1"}
    assert rule.layout(model).names == ("1",)


def test_shallow_has_no_layout_and_says_why() -> None:
    rule = fa.Shallow()
    model = rule.apply(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)))
    model(torch.randn(2, 4)).sum().backward()
    with pytest.raises(RuntimeError, match="sends no feedback"):
        rule.layout(model)
