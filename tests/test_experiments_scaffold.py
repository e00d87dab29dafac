"""The experiments' shared pieces: the training loop, the rule factory, the results writer, papers."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.experiments import papers, results
from feedback_alignment.experiments.results import Column, Table, gap_closure, mean_std
from feedback_alignment.experiments.run import (
    RULES,
    apply_rule,
    fit,
    make_rule,
    on_terminal,
    progress_bar,
    shuffled,
)
from feedback_alignment.rules import DFA, FA, LayerwiseFeedback


def _problem(seed: int = 0):
    torch.manual_seed(seed)
    x = torch.randn(64, 5)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    return model, x, y


def test_fit_is_the_plain_loop():
    # the same steps written out by hand give the same weights and losses
    model, x, y = _problem()
    reference, _, _ = _problem()
    reference.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    done = fit(
        model,
        opt,
        lambda _: shuffled(64, 16, torch.Generator().manual_seed(1)),
        lambda i: F.cross_entropy(model(x[i]), y[i]),
        epochs=2,
        progress=False,
    )
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    losses = []
    for _ in range(2):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(1))
        for i in range(0, 64, 16):
            index = order[i : i + 16]
            ref_opt.zero_grad()
            loss = F.cross_entropy(reference(x[index]), y[index])
            loss.backward()
            ref_opt.step()
            losses.append(float(loss.detach()))
    assert done.losses == losses and done.steps == 8
    assert done.epoch_losses[0] == pytest.approx(sum(losses[:4]) / 4)
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(a, b)


def test_fit_sets_the_schedule_and_stops_on_patience_keeping_the_best():
    model, x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    rates: list[float] = []
    scores = iter([0.5, 0.7, 0.6, 0.65, 0.9])

    def evaluate() -> dict[str, float]:
        return {"acc": next(scores), "w": float(model[0].weight.detach().sum())}

    done = fit(
        model,
        opt,
        lambda _: [None],
        lambda _: F.cross_entropy(model(x), y),
        epochs=5,
        lr_at=lambda step, base: base / step,
        after_step=lambda step: rates.append(opt.param_groups[0]["lr"]),
        evaluate=evaluate,
        select="acc",
        patience=2,
        keep_best=True,
        progress=False,
    )
    assert rates == [1.0, 0.5, 1 / 3, 0.25]
    assert [step for step, _ in done.evaluations] == [1, 2, 3, 4]
    assert done.stopped_early and done.steps == 4 and done.best_epoch == 2
    assert done.best["acc"] == 0.7
    assert float(model[0].weight.detach().sum()) == pytest.approx(done.best["w"])  # restored


def test_fit_calls_on_plateau_and_stops_on_a_nonfinite_loss():
    model, x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plateaus = []
    done = fit(
        model,
        opt,
        lambda _: range(6),
        lambda step: F.cross_entropy(model(x), y) * (math.nan if step == 5 else 1.0),
        evaluate=lambda: {"loss": 1.0},
        eval_every=1,
        select="loss",
        mode="min",
        patience=2,
        on_plateau=lambda: plateaus.append(True),
        stop_on_nonfinite=True,
        progress=False,
    )
    assert done.diverged and done.steps == 6 and len(done.losses) == 5
    assert len(plateaus) == 2  # evaluations 2-3 and 4-5 did not improve on the first
    with pytest.raises(ValueError, match="mode must be 'max' or 'min'"):
        fit(model, opt, lambda _: [], lambda _: None, mode="up")
    with pytest.raises(ValueError, match="select='acc' needs an evaluate function"):
        fit(model, opt, lambda _: [], lambda _: None, select="acc")


def test_the_rule_factory_knows_every_table_name():
    assert set(RULES) == {"BP", "DFA", "Shallow", "FA", "uSF", "frSF", "brSF", "KP"}
    assert isinstance(make_rule("FA", 3), FA) and make_rule("FA", 3).seed == 3
    assert isinstance(make_rule("KP"), LayerwiseFeedback)
    assert make_rule("DFA", 1, distribution="uniform").distribution == "uniform"
    with pytest.raises(ValueError, match=r"unknown rule 'XYZ'; choose one of \['BP'"):
        make_rule("XYZ")
    model, _, _ = _problem()
    rule = apply_rule("DFA", model, 0, points=["1"])
    assert isinstance(rule, DFA) and rule.is_applied(model)
    rule.remove(model)
    fa = apply_rule("FA", model, 0, points=["1"])  # placement is for direct rules only
    assert fa.is_applied(model)


def test_progress_bars_only_on_a_terminal():
    assert not on_terminal()  # pytest captures stderr
    assert progress_bar(range(3), enabled=True).disable


def test_mean_std_and_gap_closure():
    assert mean_std([1.0, math.nan, 3.0]) == results.MeanStd(2.0, math.sqrt(2.0), 2)
    assert mean_std([4.0]).cell(single=True) == 4.0 and mean_std([4.0]).cell()["std"] == 0.0
    assert mean_std([]).n == 0 and mean_std([]).cell() is None
    assert gap_closure(0.9, 1.0, 0.5) == pytest.approx(0.8)
    assert math.isnan(gap_closure(0.9, 0.5, 0.5))


def test_a_table_renders_its_cells_and_round_trips():
    table = Table("t", [Column("name", align="left"), Column("x", 2), Column("n")], missing="-")
    table.add("a", {"mean": 1.0, "std": 0.25}, 3)
    table.add("b", [0.5, math.nan], None)
    table.add("c", True, 2.5)
    text = table.to_markdown()
    assert text.splitlines() == [
        "| name | x | n |",
        "|---|---:|---:|",
        "| a | 1.00 ± 0.25 | 3 |",
        "| b | 0.50 / - | - |",
        "| c | yes | 2.5 |",
    ]
    copy = Table.from_json(json.loads(json.dumps(table.to_json())))
    assert copy.to_markdown() == text
    quick = Table("q", [Column("x")], quick=True)
    assert quick.to_markdown().startswith("**QUICK MODE**") and quick.to_json()["mode"] == "quick"
    with pytest.raises(ValueError, match="a row of 2 cells for 3 columns"):
        table.add("d", 1.0)


def test_written_results_carry_their_provenance(tmp_path):
    path = results.write_results(tmp_path, "demo", True, (0, 1), value=math.nan, pair=(1, 2))
    payload = json.loads(path.read_text())
    assert payload["quick"] is True and payload["value"] is None and payload["pair"] == [1, 2]
    provenance = payload["provenance"]
    assert provenance["seeds"] == [0, 1] and provenance["mode"] == "quick"
    assert {"command", "commit", "machine", "date"} <= set(provenance)
    assert provenance["machine"]["torch"] == torch.__version__
    assert provenance["wall_seconds"] is None  # written outside a task


def test_a_task_records_its_wall_time_and_the_console_name(monkeypatch, tmp_path):
    monkeypatch.setattr(results.time, "perf_counter", iter([100.0, 142.4]).__next__)
    monkeypatch.setattr(results.sys, "argv", ["/x/feedback_alignment/cli.py", "reproduce"])
    with results.timed_task():
        stamp = results.provenance(False, (0,))
    assert stamp["wall_seconds"] == 42 and stamp["command"] == "feedback-alignment reproduce"
    assert results.provenance(False, (0,))["wall_seconds"] is None  # the mark ends with the task


def test_every_paper_figure_has_a_source_and_a_tag():
    constants = [
        n for n in dir(papers)
        if n.isupper() and not n.startswith("_") and n not in ("SOURCES", "ABOUT", "FIGURES_FILE")
    ]  # fmt: skip
    assert sorted(constants) == sorted(papers.SOURCES) == sorted(papers.ABOUT)  # none unsourced
    assert all(papers.ABOUT[name].strip() for name in constants)
    # each constant is read from papers.json (rows back as the dicts the experiments index)
    assert papers.NOKLAND_MNIST_ERROR[("7x240", "DFA")] == 2.32
    assert papers.LAUNAY_2019_BOTTLENECK[118] == (0.760, 47.9)
    assert papers.LAUNAY_2020_CORA["gcn"] == (80.1, 79.9, 37.0)
    assert papers.LAUNAY_2020_CRITEO["dcn"]["DFA"] == (0.8009, 0.4502)
    assert papers.tag("NOKLAND_MNIST_ERROR") == "[unverified]"
    assert {tag for _, tag in papers.SOURCES.values()} <= {"paper", "code", "unverified"}
    with pytest.raises(KeyError, match="no source recorded for 'NOPE'"):
        papers.tag("NOPE")


def test_an_evaluation_hook_can_abandon_the_run():
    model, x, y = _problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []

    def prune(step: int, metrics: dict[str, float]) -> None:
        seen.append(step)
        if step == 2:
            raise RuntimeError("pruned at step 2")

    with pytest.raises(RuntimeError, match="pruned at step 2"):
        fit(model, opt, lambda _: range(5), lambda _: F.cross_entropy(model(x), y),
            evaluate=lambda: {"acc": 0.0}, eval_every=1, on_evaluate=prune, progress=False)  # fmt: skip
    assert seen == [1, 2]
