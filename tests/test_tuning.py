"""The tuner: validation-only objective, hand-set trial first, resume, pruning, stored values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from feedback_alignment.experiments import tuning

optuna = pytest.importorskip("optuna")


def _toy(calls: list[tuple[str, dict[str, float]]], prune_above: float | None = None):
    """A tunable whose validation loss is (log10 lr + 2)^2: best at lr = 1e-2."""

    def objective(arm: str, values: dict[str, float], report, quick: bool) -> float:
        calls.append((arm, dict(values)))
        loss = (math.log10(values["lr"]) + 2.0) ** 2
        for step in range(1, 4):
            report(step, loss + 1.0 / step)
        return loss

    return tuning.Tunable(
        task="toy",
        arms=("BP", "DFA"),
        space=lambda arm: {"lr": tuning.Param(1e-4, 1.0)},
        defaults=lambda arm: {"lr": 1e-3 if arm == "BP" else 1e-1},
        objective=objective,
        direction="minimize",
        metric="validation loss",
        trials=6,
        schedule="toy.",
    )


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch):
    calls: list[tuple[str, dict[str, float]]] = []
    monkeypatch.setitem(tuning._TUNABLES, "toy", _toy(calls))
    monkeypatch.setattr(tuning, "tunables", lambda: dict(tuning._TUNABLES))
    return calls


def test_search_starts_from_the_hand_set_values_and_improves_on_them(toy, tmp_path: Path):
    path = tuning.tune("toy", out_dir=tmp_path, trials=6)
    stored = json.loads(path.read_text())
    assert path == tmp_path / "tuned" / "toy.json"
    assert toy[0] == ("BP", {"lr": 1e-3}) and toy[6] == ("DFA", {"lr": 1e-1})
    for arm in ("BP", "DFA"):
        entry = stored["arms"][arm]
        assert entry["default_value"] == pytest.approx(1.0)  # the hand-set trial's loss
        assert entry["value"] <= entry["default_value"]
        assert entry["trials"] == 6
    values = tuning.tuned_values("toy", path.parent)
    assert set(values) == {"BP", "DFA"} and set(values["BP"]) == {"lr"}
    assert stored["provenance"]["command"] == "feedback-alignment reproduce --tasks toy --tune"
    assert "lr in [0.0001, 1] (log)" in tuning.markdown("toy", path.parent)


def test_a_rerun_resumes_the_journal_instead_of_starting_again(toy, tmp_path: Path):
    tuning.tune("toy", out_dir=tmp_path, trials=3, arms=("BP",))
    assert len(toy) == 3
    tuning.tune("toy", out_dir=tmp_path, trials=5, arms=("BP",))
    assert len(toy) == 5  # two more, not five
    tuning.tune("toy", out_dir=tmp_path, trials=5, arms=("DFA",))
    stored = tuning.tuned_values("toy", tmp_path / "tuned")
    assert set(stored) == {"BP", "DFA"}  # the second arm's run kept the first's result


def test_hopeless_trials_are_pruned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    def objective(arm, values, report, quick):
        loss = abs(math.log10(values["lr"]) + 2.0)
        for step in range(1, 6):
            report(step, loss)
        return loss

    toy = tuning.Tunable("toy", ("BP",), lambda a: {"lr": tuning.Param(1e-4, 1.0)},
                         lambda a: {"lr": 1e-2}, objective, "minimize", "loss", trials=14)  # fmt: skip
    monkeypatch.setitem(tuning._TUNABLES, "toy", toy)
    monkeypatch.setattr(tuning, "tunables", lambda: dict(tuning._TUNABLES))
    stored = json.loads(tuning.tune("toy", out_dir=tmp_path).read_text())["arms"]["BP"]
    assert stored["pruned"] >= 1
    assert stored["values"]["lr"] == pytest.approx(1e-2)  # the hand-set optimum stays best


def test_a_diverged_trial_scores_worst_rather_than_failing(monkeypatch, tmp_path: Path):
    def objective(arm, values, report, quick):
        return math.nan if values["lr"] > 0.05 else values["lr"]

    toy = tuning.Tunable("toy", ("BP",), lambda a: {"lr": tuning.Param(1e-3, 1.0)},
                         lambda a: {"lr": 0.5}, objective, "minimize", "loss", trials=4)  # fmt: skip
    monkeypatch.setitem(tuning._TUNABLES, "toy", toy)
    monkeypatch.setattr(tuning, "tunables", lambda: dict(tuning._TUNABLES))
    stored = json.loads(tuning.tune("toy", out_dir=tmp_path).read_text())["arms"]["BP"]
    assert stored["values"]["lr"] <= 0.05


def test_bad_requests_are_refused_with_the_choices(toy, tmp_path: Path):
    with pytest.raises(ValueError, match="declares no tuning; tunable tasks"):
        tuning.tune("nonexistent", out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"unknown arms \['KP'\].*choose from"):
        tuning.tune("toy", out_dir=tmp_path, arms=("KP",))
    with pytest.raises(ValueError, match="bad search range"):
        tuning.Param(1.0, 0.1)
    with pytest.raises(ValueError, match="bad search range"):
        tuning.Param(0.0, 1.0, log=True)


def test_a_corrupt_stored_file_names_itself_and_the_repair(tmp_path: Path):
    (tmp_path / "graphs.json").write_text('{"arms": 3}')
    with pytest.raises(ValueError, match=r"graphs.json is not a tuning result.*--tune"):
        tuning.tuned_values("graphs", tmp_path)
    assert tuning.tuned_values("nerf", tmp_path) == {}  # nothing stored: hand-set values


def test_the_committed_values_parse_and_only_name_declared_arms_and_parameters():
    declared = tuning.tunables()
    files = sorted(tuning.TUNED_DIR.glob("*.json"))
    assert files, "no committed tuned values"
    for path in files:
        task = path.stem
        assert task in declared, f"{path} belongs to no tunable task"
        stored = json.loads(path.read_text())
        assert not stored["quick"], f"{path} holds quick-mode values"
        for arm, values in tuning.tuned_values(task).items():
            assert arm in declared[task].arms
            space = declared[task].space(arm)
            for name, value in values.items():
                assert space[name].low <= value <= space[name].high


def test_the_graphs_task_uses_the_tuned_values_and_falls_back_to_the_hand_set(tmp_path: Path):
    pytest.importorskip("torch_geometric")
    from feedback_alignment.experiments import graphs

    hand = graphs.hand_settings("gcn", "DFA")
    assert graphs.rule_settings("gcn", "DFA", tuned=False) == hand
    assert graphs.rule_settings("gcn", "DFA", directory=tmp_path) == hand  # none stored there
    stored = {"arms": {"gcn/DFA": {"values": {"lr": 0.02, "dropout": 0.3}}}}
    (tmp_path / "graphs.json").write_text(json.dumps(stored))
    chosen = graphs.rule_settings("gcn", "DFA", directory=tmp_path)
    assert (chosen.lr, chosen.dropout, chosen.weight_decay) == (0.02, 0.3, hand.weight_decay)
    assert graphs.rule_settings("gcn", "BP", directory=tmp_path) == graphs.hand_settings(
        "gcn", "BP"
    )


def test_transformer_and_nerf_read_their_tuned_learning_rates(tmp_path: Path):
    from feedback_alignment.experiments import language, nerf

    (tmp_path / "transformer.json").write_text(
        json.dumps({"arms": {"DFA-micro": {"values": {"lr": 3e-3}}}})
    )
    (tmp_path / "nerf.json").write_text(json.dumps({"arms": {"DFA": {"values": {"lr": 7e-4}}}}))
    config = language.LanguageConfig(tuned_dir=tmp_path)
    rates = language.learning_rates(config)
    assert rates["DFA-micro"] == 3e-3 and rates["BP"] == config.lr["BP"]
    assert language.learning_rates(language.LanguageConfig(tuned=False)) == config.lr
    nerf_config = nerf.NeRFTaskConfig(tuned_dir=tmp_path)
    assert nerf.learning_rates(nerf_config)["DFA"] == 7e-4
    assert nerf.adam_eps(nerf_config) == nerf_config.eps  # no eps stored: Adam's default
    stored = {"arms": {"DFA": {"values": {"lr": 7e-4, "eps": 1e-3}}}}
    (tmp_path / "nerf.json").write_text(json.dumps(stored))
    assert nerf.adam_eps(nerf_config) == {"BP": 1e-8, "DFA": 1e-3, "Shallow": 1e-8}


def test_only_dfa_searches_adams_epsilon_on_nerf():
    """DFA's fine field collapses with Adam's default epsilon (nerf.adam_eps says why); BP and
    Shallow keep the default, so their search is the rate alone."""
    from feedback_alignment.experiments import nerf

    declared = tuning.tunables()["nerf"]
    assert set(declared.space("DFA")) == {"lr", "eps"}
    assert set(declared.space("BP")) == set(declared.space("Shallow")) == {"lr"}
    assert declared.defaults("DFA") == {"lr": nerf.NeRFTaskConfig().lr["DFA"], "eps": 1e-8}


# ---- the command line -------------------------------------------------------------------------


@pytest.fixture
def fake_task(monkeypatch: pytest.MonkeyPatch, toy):
    """Task ``toy`` (tunable) and ``plain`` (not), recording the options each run received."""
    from feedback_alignment.experiments import registry

    seen: list[registry.RunOptions] = []

    def run(options):
        seen.append(options)
        return registry.TaskReport("toy", "### toy")

    fakes = {n: registry.Task(n, f"{n} task", run) for n in ("toy", "plain")}
    monkeypatch.setattr(registry, "tasks", lambda: fakes)
    monkeypatch.setattr(registry, "groups", lambda: {})
    return seen


def test_reproduce_tune_searches_then_runs_with_the_fresh_values(fake_task, toy, tmp_path):
    from feedback_alignment.cli import main

    args = ["reproduce", "--tasks", "toy", "--tune", "--trials", "2", "--out", str(tmp_path), "-q"]
    assert main(args) == 0
    assert len(toy) == 4  # two trials for each of the two arms
    assert fake_task[-1].tuned_dir == tmp_path / "toy" / "tuned"
    assert tuning.tuned_values("toy", fake_task[-1].tuned_dir)
    assert main(["reproduce", "--tasks", "toy", "--hand-set", "--out", str(tmp_path), "-q"]) == 0
    assert fake_task[-1].tuned is False and fake_task[-1].tuned_dir is None


def test_reproduce_tune_refuses_untunable_tasks_and_a_missing_optuna(
    fake_task, tmp_path, monkeypatch, capsys
):
    import importlib.util

    from feedback_alignment.cli import main

    out = ["--out", str(tmp_path / "a"), "-q"]
    assert main(["reproduce", "--tasks", "plain", "--tune", *out]) == 2
    assert "plain has no search declared; drop --tune or choose" in capsys.readouterr().err
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a)
    )
    assert main(["reproduce", "--tasks", "toy", "--tune", *out]) == 2
    assert 'pip install -e ".[tune]"' in capsys.readouterr().err
    assert not fake_task  # nothing ran


def test_the_docs_tuned_blocks_are_rendered_from_the_committed_values(tmp_path: Path):
    from feedback_alignment.experiments import render

    text = "before\n<!-- tuned: graphs -->\nstale\n<!-- /tuned -->\nafter\n"
    rendered, changed = render.render_text(text, tmp_path)
    assert changed == ["tuned: graphs"]
    assert tuning.markdown("graphs") in rendered and "stale" not in rendered
    assert render.render_text(rendered, tmp_path)[1] == []


def test_arms_and_resumed_sessions_draw_their_own_trials(toy, tmp_path: Path):
    tuning.tune("toy", out_dir=tmp_path, trials=3)
    bp = [v["lr"] for arm, v in toy if arm == "BP"]
    dfa = [v["lr"] for arm, v in toy if arm == "DFA"]
    assert bp[1:] != dfa[1:]  # trial 0 is each arm's hand-set value; the draws differ
    toy.clear()
    tuning.tune("toy", out_dir=tmp_path, trials=4, arms=("BP",))
    assert toy[0][1]["lr"] not in bp  # the resumed session does not repeat the first's draws


def test_stored_values_are_checked_against_the_search_space(toy, tmp_path: Path):
    for values, message in (
        ({"lr": "fast"}, "not a finite number"),
        ({"lr": 5.0}, r"outside its search range \[0.0001, 1.0\]"),
        ({"momentum": 0.9}, "has no parameter 'momentum'"),
    ):
        (tmp_path / "toy.json").write_text(json.dumps({"arms": {"BP": {"values": values}}}))
        with pytest.raises(ValueError, match=message):
            tuning.tuned_values("toy", tmp_path)
    (tmp_path / "toy.json").write_text(json.dumps({"arms": {"KP": {"values": {"lr": 0.1}}}}))
    with pytest.raises(ValueError, match="toy has no arm 'KP'"):
        tuning.tuned_values("toy", tmp_path)


def test_quick_searches_go_to_their_own_folder(toy, tmp_path: Path):
    path = tuning.tune("toy", out_dir=tmp_path, quick=True)
    assert path == tmp_path / "tuned-quick" / "toy.json"
    assert json.loads(path.read_text())["quick"] is True
    assert not (tmp_path / "tuned").exists()


def test_a_corrupt_file_in_the_search_folder_is_named_not_parsed_blindly(toy, tmp_path: Path):
    (tmp_path / "tuned").mkdir()
    (tmp_path / "tuned" / "toy.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"toy.json is not a tuning result.*delete it"):
        tuning.tune("toy", out_dir=tmp_path, trials=1)


def test_contradictory_or_orphan_tuning_options_are_refused(fake_task, tmp_path, capsys):
    from feedback_alignment.cli import main

    out = ["--out", str(tmp_path), "-q"]
    assert main(["reproduce", "--tasks", "toy", "--tune", "--hand-set", *out]) == 2
    assert "contradict" in capsys.readouterr().err
    assert main(["reproduce", "--tasks", "toy", "--trials", "3", *out]) == 2
    assert "add --tune" in capsys.readouterr().err
    assert main(["reproduce", "--tasks", "toy", "--tune", "--arms", "KP", *out]) == 2
    assert "--arms: unknown ['KP']" in capsys.readouterr().err
    assert main(["reproduce", "--tasks", "toy", "--tune", "--arms", " , ", *out]) == 2
    assert "--arms names no arm" in capsys.readouterr().err  # not "every arm"
    assert not fake_task


def test_a_search_of_some_arms_keeps_the_committed_values_of_the_others(
    toy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The run after ``--tune --arms DFA`` (and a copy of its file over the committed one) must
    not quietly put BP back on its hand-set value."""
    committed = tmp_path / "committed"
    committed.mkdir()
    entry = {"values": {"lr": 0.02}, "value": 1.0, "trials": 6, "pruned": 0}
    (committed / "toy.json").write_text(json.dumps({"arms": {"BP": entry, "DFA": entry}}))
    monkeypatch.setattr(tuning, "TUNED_DIR", committed)
    path = tuning.tune("toy", out_dir=tmp_path / "run", arms=("DFA",), trials=2)
    stored = json.loads(path.read_text())
    assert stored["carried_from_committed"] == ["BP"] and {a for a, _ in toy} == {"DFA"}
    values = tuning.tuned_values("toy", path.parent)
    assert values["BP"] == {"lr": 0.02} and values["DFA"] != {"lr": 0.02}
    # resuming the same folder for BP replaces the carried entry by the searched one
    path = tuning.tune("toy", out_dir=tmp_path / "run", arms=("BP",), trials=2)
    stored = json.loads(path.read_text())
    assert stored["carried_from_committed"] == [] and stored["arms"]["BP"]["trials"] == 2


def test_convnets_reads_a_tuned_rate_per_rule_and_batch_manhattan_pair(tmp_path: Path):
    from feedback_alignment.experiments import convnets

    stored = {"arms": {"FA+BM": {"values": {"lr": 3e-3}}, "uSF": {"values": {"lr": 2e-4}}}}
    (tmp_path / "convnets.json").write_text(json.dumps(stored))
    config = convnets.ConvConfig(tuned_dir=tmp_path)
    assert convnets.learning_rate(config, "FA", True) == 3e-3
    assert convnets.learning_rate(config, "FA", False) == config.lr
    assert convnets.learning_rate(config, "uSF", False) == 2e-4
    hand = convnets.ConvConfig(tuned=False, tuned_dir=tmp_path)
    assert convnets.learning_rate(hand, "uSF", False) == hand.lr
    assert "convnets" in tuning.tunables() and "KP+BM" in tuning.tunables()["convnets"].arms


def test_recommenders_read_a_tuned_rate_per_data_set_model_and_rule(tmp_path: Path):
    from feedback_alignment.experiments import recommenders as rec

    stored = {"arms": {"adult/dcn/DFA": {"values": {"lr": 4e-3}}}}
    (tmp_path / "recommenders.json").write_text(json.dumps(stored))
    config = rec.RecConfig(tuned_dir=tmp_path)
    assert rec.learning_rate(config, "adult", "dcn", "DFA") == 4e-3
    assert rec.learning_rate(config, "adult", "dcn", "BP") == config.lr
    assert "movielens-100k/fm/BP" in tuning.tunables()["recommenders"].arms
    assert "movielens-100k/fm/DFA" not in tuning.tunables()["recommenders"].arms


def test_a_graphs_trial_averages_its_seeds_and_prunes_on_the_first(monkeypatch):
    """Cora's 500 validation nodes are too few to choose by one seed: a trial is the mean of
    TRIAL_SEEDS, and only the first seed's curve is reported to the pruner."""
    pytest.importorskip("torch_geometric")
    from types import SimpleNamespace

    from feedback_alignment.experiments import graphs

    seen: list[tuple[int, bool]] = []

    def fake_train(layer, rule, seed, graph, config, progress, values, report):
        seen.append((seed, report is not None))
        return SimpleNamespace(best_val_accuracy=70.0 + seed)

    monkeypatch.setattr(graphs, "train_one", fake_train)
    monkeypatch.setattr(graphs, "_CORA", [object()])
    score = graphs._tuning_objective("gcn/DFA", {"lr": 0.01}, lambda step, value: None, False)
    assert seen == [(0, True), (1, False), (2, False)]
    assert score == pytest.approx(71.0)
