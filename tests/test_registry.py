"""One registry of the rules (issue 23, item 3): every rule class carries its canonical key, every
other spelling in use is an alias, every constructor takes ``seed=``, the inspection protocol that
``alignment`` uses is declared on ``Rule``, and DFA's ``feedback=`` became ``distribution=``."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import feedback_alignment as fa
from feedback_alignment import bench as benchmark
from feedback_alignment.cli import main
from feedback_alignment.experiments import run
from feedback_alignment.rules.registry import RULE_CLASSES, canonical_key


def test_every_rule_class_carries_its_key_and_fa_rules_is_built_from_them() -> None:
    assert list(fa.RULES) == [
        "bp", "dfa", "sign-dfa", "drtp", "dkp", "fdfa", "shallow", "fa", "usf", "frsf", "brsf", "kp",
        "weight-mirror",
    ]  # fmt: skip
    for key, cls in fa.RULES.items():
        assert cls.key == key and cls in RULE_CLASSES
    assert (fa.uSF.name, fa.frSF.name, fa.brSF.name) == ("uSF", "frSF", "brSF")  # class level
    assert fa.DirectFeedback.key is None and fa.SignSymmetry.key is None


@pytest.mark.parametrize(
    ("spelling", "key"),
    [("sign-DFA", "sign-dfa"), ("SignDFA", "sign-dfa"), ("KP", "kp"), ("KolenPollack", "kp"),
     ("weight_mirror", "weight-mirror"), ("WM", "weight-mirror"), (" uSF ", "usf"), ("BP", "bp")],
)  # fmt: skip
def test_every_spelling_in_use_is_an_alias(spelling: str, key: str) -> None:
    assert canonical_key(spelling) == key
    assert fa.rule_class(spelling) is fa.RULES[key]


def test_an_unknown_rule_is_refused_with_the_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown rule 'dfa2'; choose one of \['bp', 'dfa'"):
        fa.rule_class("dfa2")


@pytest.mark.parametrize("key", list(fa.RULES))
def test_every_rule_takes_a_seed(key: str) -> None:
    rule = fa.make_rule(key, seed=7)
    assert rule.seed == 7
    with pytest.raises(ValueError, match="seed"):
        fa.make_rule(key, seed=-1)


def test_the_benchmark_and_the_experiments_build_their_rules_from_the_registry() -> None:
    assert list(benchmark.RULES) == [
        "BP",
        "DFA",
        "sign-DFA",
        "Shallow",
        "DKP",
        "FDFA",
        "FA",
        "uSF",
        "frSF",
        "brSF",
        "KP",
    ]  # fmt: skip  (the row names of the committed tables)
    assert benchmark.DIRECT_RULES == ("DFA", "sign-DFA", "Shallow")
    for name, cls in {**benchmark.RULES, **run.RULES}.items():
        assert fa.rule_class(name) is cls
    assert run.make_rule("uSF", 3).seed == 3


def test_bench_takes_any_spelling_of_a_rule(tmp_path) -> None:
    out = tmp_path / "b.json"
    argv = ["bench", "--size", "tiny", "--families", "mlp", "--rules", "bp", "sign-dfa", "kp"]
    assert main([*argv, "--rounds", "2", "--warmup", "0", "--out", str(out), "-q"]) == 0
    assert main([*argv[:-1], "nope", "--out", str(out), "-q"]) == 2


def test_dfa_feedback_keyword_is_deprecated_for_distribution() -> None:
    with pytest.warns(FutureWarning, match="distribution="):
        rule = fa.DFA(feedback="uniform")
    assert rule.distribution == "uniform"
    with pytest.warns(FutureWarning, match="rule.distribution"):
        assert rule.feedback == "uniform"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fa.DFA(distribution="rademacher").distribution == "rademacher"
    with pytest.raises(ValueError, match="unknown distribution 'normal'"):
        fa.DFA(distribution="normal")


def test_points_is_one_name_for_both_families_and_the_old_names_warn() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    direct, layerwise = fa.DFA(), fa.FA()
    direct.apply(model)
    layerwise.apply(model)
    assert direct.points(model) == ["1"] and layerwise.points(model) == ["0", "2"]
    assert fa.BP().points(model) == []
    with pytest.warns(FutureWarning, match=r"rule\.points\(model\)"):
        assert direct.point_names(model) == ["1"]
    with pytest.warns(FutureWarning, match=r"rule\.points\(model\)"):
        assert layerwise.layers(model) == ["0", "2"]


def test_signal_is_the_direct_rules_method_and_the_former_names_still_work() -> None:
    error = torch.tensor([[2.0, -3.0], [0.5, 0.0]])
    assert torch.equal(fa.DFA().signal(error), error)
    assert torch.equal(fa.SignDFA().signal(error), torch.sign(error) / 2)
    with pytest.warns(FutureWarning, match=r"rule\.signal\(error\)"):
        assert torch.equal(fa.SignDFA().project_signal(error), torch.sign(error) / 2)
    assert fa.DFA.feeds_back and not fa.Shallow.feeds_back

    with pytest.warns(FutureWarning, match="now named signal"):

        class Doubled(fa.DFA):  # a rule written for the former name
            def project_signal(self, error: torch.Tensor) -> torch.Tensor:
                return 2 * error

    with pytest.warns(FutureWarning, match="feeds_back = False"):

        class Silent(fa.DFA):  # the former spelling of a rule that feeds nothing back
            signal = None

    assert torch.equal(Doubled().signal(error), 2 * error)
    assert not Silent.feeds_back and torch.equal(Silent().signal(error), error)
    # the renamed method is what the projection calls: a rule's signal reaches the gradients
    torch.manual_seed(0)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))
    grads = []
    for rule in (fa.DFA(seed=1), Doubled(seed=1)):
        torch.manual_seed(0)
        model = rule.apply(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)))
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append(model[0].weight.grad)
    torch.testing.assert_close(grads[1], 2 * grads[0])


def test_the_inspection_protocol_is_declared_on_rule() -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    bp = fa.BP()
    assert bp.parameter_roles(model) == {} and bp.signal_widths(model) == {}
    assert bp.feedback_matrices(model) == {}
    bp.set_targets(torch.zeros(2))  # accepted and ignored
    dfa = fa.DFA().apply(model)
    assert dfa is model
    rule = fa.applied_rules(model)[0]
    assert rule.signal_widths(model) == {}  # before the first training pass
    model(torch.randn(2, 4)).sum().backward()
    assert rule.signal_widths(model) == {"1": 6}
    assert rule.parameter_roles(model)["0.weight"] == "hidden"
