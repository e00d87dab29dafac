"""The command line: bad input refused before any work, work never lost, help that names things.

Every refusal is checked for its exit code (2), its message, and that no work started: the
function that would do the work is replaced by one that fails the test if it is called.
"""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
import torch

from feedback_alignment import bench as benchmark
from feedback_alignment import cli, cli_options
from feedback_alignment.cli import main
from feedback_alignment.experiments import demo, registry


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_work(monkeypatch):
    """Any call that would start training or timing fails the test."""

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(demo, "run", forbidden)
    monkeypatch.setattr(benchmark, "run", forbidden)
    monkeypatch.setattr(registry, "tasks", forbidden)


def _refused(argv: list[str], capsys, match: str, *, limit_s: float = 1.0) -> str:
    start = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert code == 2, err
    assert match in err, err
    assert seconds < limit_s, f"{argv} took {seconds:.2f} s to refuse"
    return err


# ---- output paths: checked before any work, in under a second ----------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--out", "/dev/null/x.json", "-q"],
        ["demo", "--out", "/dev/null/x.json", "-q"],
        ["reproduce", "--tasks", "digits", "--out", "/dev/null/results", "-q"],
    ],
)
def test_unwritable_output_fails_fast(argv, capsys, no_work):
    main(["demo", "--help"])  # imports done once, so the timing is the check's own
    capsys.readouterr()
    err = _refused(argv, capsys, "/dev/null exists and is not a folder")
    assert "/dev/null/x.json" in err or "/dev/null/results" in err


def test_output_under_a_file_is_refused(tmp_path, capsys, no_work):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    _refused(["demo", "--out", str(blocker / "sub" / "d.json"), "-q"], capsys, "is not a folder")
    _refused(["reproduce", "--out", str(blocker), "-q"], capsys, "exists and is not a folder")


def test_output_file_that_is_a_folder_is_refused(tmp_path, capsys, no_work):
    _refused(["bench", "--out", str(tmp_path), "-q"], capsys, "is a folder; give a file name")


def test_output_check_creates_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "out.json"
    assert cli.check_output_file(target, "--out") == target
    assert list(tmp_path.iterdir()) == []


# ---- argument values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--threads", "100000", "demo"], "argument --threads: must be at most"),
        (["demo", "--threads", "100000"], "argument --threads: must be at most"),
        (["demo", "--threads", "0"], "argument --threads: must be >= 1, got 0"),
        (["bench", "--rounds", "0"], "argument --rounds: must be >= 2, got 0"),
        (["bench", "--families", "nope"], "argument --families: invalid choice: 'nope'"),
        (["bench", "--rules", "BP", "XYZ"], "argument --rules: unknown rule 'XYZ'"),
        (["bench", "--size", "huge"], "argument --size: invalid choice: 'huge'"),
        (["bench", "--warmup", "-1"], "argument --warmup: must be >= 0, got -1"),
        (["demo", "--epochs", "-1"], "argument --epochs: must be >= 1, got -1"),
        (["demo", "--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
        (["demo", "--hidden", "64,0"], "argument --hidden: every value must be >= 1, got [0]"),
        (["demo", "--hidden", "a,b"], "expected comma-separated integers"),
        (["demo", "--seeds", "-1"], "argument --seeds: every value must be >= 0, got [-1]"),
        (["demo", "--lr", "0"], "argument --lr: must be a finite number > 0, got 0"),
        (["demo", "--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
        (["reproduce", "--seeds", "x"], "argument --seeds: expected comma-separated integers"),
        (["reproduce", "--seeds", "1,1"], "argument --seeds: each value once, got [1] more than"),
        (["reproduce", "--seeds", "0,,1"], "argument --seeds: empty item in '0,,1'"),
    ],
)
def test_bad_values_are_usage_errors(argv, match, capsys, no_work):
    _refused(argv, capsys, match)


def test_threads_limit_follows_the_machine():
    assert cli_options.max_threads() >= 4
    assert cli_options.threads(str(cli_options.max_threads())) == cli_options.max_threads()
    with pytest.raises(Exception, match="must be at most"):
        cli_options.threads(str(cli_options.max_threads() + 1))


def test_the_data_cli_takes_the_common_options_from_their_own_module():
    """Both CLIs share one definition of --threads and -v; the data CLI no longer imports the
    main CLI (which imports it) to get them."""
    import ast
    import inspect

    from feedback_alignment.data import cli as data_cli

    tree = ast.parse(inspect.getsource(data_cli))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "feedback_alignment.cli" not in imported and "cli" not in imported
    parser = cli.build_parser()
    args = parser.parse_args(["data", "list", "--threads", "1", "-v"])
    assert args.threads == 1 and args.verbose


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_bench_cuda_without_cuda(tmp_path, capsys, no_work):
    expected = "has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
    _refused(["bench", "--device", "cuda", "--out", str(tmp_path / "b.json")], capsys, expected)


def test_bench_unknown_device(tmp_path, capsys, no_work):
    _refused(
        ["bench", "--device", "gpu7", "--out", str(tmp_path / "b.json")], capsys, "not a device"
    )


def test_bench_requires_bp(tmp_path, capsys, no_work):
    _refused(
        ["bench", "--rules", "DFA", "--out", str(tmp_path / "b.json"), "-q"],
        capsys,
        "--rules must include BP",
    )


def test_cache_that_is_a_file_is_refused(tmp_path, monkeypatch, capsys, no_work):
    from feedback_alignment.data import ENV_VAR

    blocker = tmp_path / "cache-file"
    blocker.write_text("")
    monkeypatch.setenv(ENV_VAR, str(blocker))
    err = _refused(
        ["reproduce", "--tasks", "digits", "--out", str(tmp_path / "r"), "-q"],
        capsys,
        "is not a folder",
    )
    assert str(blocker) in err and f"set {ENV_VAR}" in err
    monkeypatch.setenv(ENV_VAR, str(blocker / "below"))
    _refused(["data", "fetch", "digits"], capsys, f"data cache {blocker / 'below'}")


def test_cache_that_cannot_be_created_is_refused(tmp_path, monkeypatch, capsys, no_work):
    from feedback_alignment.data import ENV_VAR

    if not os.path.isdir("/proc/self"):
        pytest.skip("needs /proc, a folder nobody can create files in")
    monkeypatch.setenv(ENV_VAR, "/proc/feedback-alignment-cache")
    _refused(["reproduce", "--out", str(tmp_path / "r"), "-q"], capsys, "cannot write in /proc")


def test_unknown_task(tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.setattr(registry, "tasks", lambda: {"digits": None})
    monkeypatch.setattr(registry, "groups", lambda: {})
    _refused(
        ["reproduce", "--tasks", "nope", "--out", str(tmp_path), "-q"],
        capsys,
        "unknown task(s) ['nope']; tasks: digits",
    )


# ---- threads: a fast default for the small models, accepted on either side ------------------


@pytest.mark.parametrize(
    ("argv", "threads"),
    [
        (["demo"], cli.SMALL_MODEL_THREADS),
        (["reproduce", "--quick"], cli.SMALL_MODEL_THREADS),
        (["reproduce"], None),
        (["bench"], None),
        (["--threads", "2", "demo"], 2),
        (["demo", "--threads", "2"], 2),
        (["--threads", "3", "bench", "--threads", "2"], 2),
    ],
)
def test_thread_defaults_and_placement(argv, threads):
    args = cli.build_parser().parse_args(argv)
    assert cli._default_threads(args) == threads


def test_help_says_the_thread_default(capsys):
    assert main(["demo", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "default: 1 for demo and reproduce --quick" in out


# ---- help lists what can be chosen --------------------------------------------------------------


def test_reproduce_help_lists_every_task(capsys):
    assert main(["reproduce", "--help"]) == 0
    out = capsys.readouterr().out
    for name in registry.tasks():
        assert f"  {name} " in out
    assert "groups (a name that runs several tasks):" in out
    assert "principled-mlp, principled-alignment" in out


def test_bench_help_lists_families_and_rules(capsys):
    assert main(["bench", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"from: {', '.join(benchmark.FAMILIES)}" in out
    assert f"from: {', '.join(benchmark.RULES)}" in out


# ---- reproduce: each task once, a failure keeps the rest ---------------------------------------


def _fake_tasks(calls: list[str], failing: str | None = None):
    def make(name):
        def run(options):
            calls.append(name)
            if name == failing:
                raise RuntimeError("boom")
            return registry.TaskReport(name, f"### {name} section")

        return registry.Task(name, f"{name} task", run)

    return {n: make(n) for n in ("alpha", "beta")}


@pytest.fixture
def one_group(monkeypatch):
    group = registry.Group("both", "alpha and beta", ("alpha", "beta"))
    monkeypatch.setattr(registry, "groups", lambda: {"both": group})


def test_reproduce_all_runs_each_task_once(tmp_path, monkeypatch, capsys, one_group):
    calls: list[str] = []
    monkeypatch.setattr(registry, "tasks", lambda: _fake_tasks(calls))
    assert main(["reproduce", "--out", str(tmp_path), "-q"]) == 0
    assert calls == ["alpha", "beta"]
    calls.clear()
    assert main(["reproduce", "--tasks", "both,alpha", "beta", "--out", str(tmp_path), "-q"]) == 0
    assert calls == ["alpha", "beta"]
    report = (tmp_path / "REPORT.md").read_text()
    assert "### alpha section" in report and "### beta section" in report


def test_reproduce_keeps_work_of_other_tasks(tmp_path, monkeypatch, capsys, one_group):
    calls: list[str] = []
    monkeypatch.setattr(registry, "tasks", lambda: _fake_tasks(calls, failing="alpha"))
    assert main(["reproduce", "--out", str(tmp_path), "-q"]) == 1
    assert calls == ["alpha", "beta"]
    report = (tmp_path / "REPORT.md").read_text()
    assert "FAILED: RuntimeError: boom" in report and "### beta section" in report
    assert "failed task(s): alpha" in capsys.readouterr().err


def test_reproduce_quick_digits(tmp_path, capsys):
    assert main(["reproduce", "--tasks", "digits", "--quick", "-q", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "digits" / "results.json").exists()
    assert "digits" in (tmp_path / "REPORT.md").read_text()


# ---- demo -----------------------------------------------------------------------------------


def test_demo_dfa_beats_shallow_and_aligns(tmp_path, capsys):
    out = tmp_path / "new" / "demo.json"
    code = main(["demo", "--epochs", "8", "--seeds", "0", "--out", str(out), "--threads", "1"])
    assert code == 0
    captured = capsys.readouterr()
    assert "| DFA |" in captured.out and "| Shallow |" in captured.out
    # piped (not a terminal): no progress bars, a few short lines of its own
    assert "\r" not in captured.err and "epoch/s" not in captured.err
    own = [line for line in captured.err.splitlines() if not line.startswith("INFO")]
    assert len(own) <= 3 and all(len(line) < 120 for line in own), own
    assert torch.get_num_threads() == 1
    runs = {r["rule"]: r for r in json.loads(out.read_text())["runs"]}
    assert runs["DFA"]["test_accuracy"] > runs["Shallow"]["test_accuracy"] + 0.03
    assert runs["DFA"]["test_accuracy"] > runs["BP"]["test_accuracy"] - 0.05
    angles = runs["DFA"]["hidden_update_angle"]
    assert len(angles) == 3 and all(0 < a < 90 for a in angles.values())
    # no update, no angle: NaN, written as null (standard JSON, as in every results file)
    assert all(a is None for a in runs["Shallow"]["hidden_update_angle"].values())


def test_demo_rejects_unknown_rule():
    with pytest.raises(ValueError, match=r"unknown demo rules \['XYZ'\]"):
        demo.run(demo.DemoConfig(rules=("XYZ",)), progress=False)


def test_bench_refuses_a_table_path_that_is_a_folder(tmp_path, capsys, no_work):
    (tmp_path / "b.md").mkdir()
    _refused(["bench", "--out", str(tmp_path / "b.json"), "-q"], capsys, "b.md is a folder")


def test_a_second_reproduce_into_the_same_folder_keeps_the_first_report(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(registry, "tasks", lambda: _fake_tasks(calls))
    monkeypatch.setattr(registry, "groups", lambda: {})
    assert main(["reproduce", "--tasks", "alpha", "--out", str(tmp_path), "-q"]) == 0
    assert main(["reproduce", "--tasks", "beta", "--out", str(tmp_path), "-q"]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    assert "### alpha section" in report and "### beta section" in report


def test_a_task_whose_packages_are_missing_is_refused_before_work(tmp_path, monkeypatch, capsys):
    calls: list[str] = []
    tasks = _fake_tasks(calls)
    tasks["beta"] = registry.Task("beta", "beta task", tasks["beta"].run, ("no_such_module_xyz",))
    monkeypatch.setattr(registry, "tasks", lambda: tasks)
    monkeypatch.setattr(registry, "groups", lambda: {})
    _refused(
        ["reproduce", "--tasks", "beta", "--out", str(tmp_path), "-q"],
        capsys,
        "beta needs no_such_module_xyz: install them first",
    )
    assert calls == []
    assert main(["reproduce", "--out", str(tmp_path), "-q"]) == 0  # all: skipped, said so
    assert calls == ["alpha"]
    assert "skipping tasks whose packages are missing" in capsys.readouterr().err


def test_reproduce_hands_workers_to_the_tasks(tmp_path, monkeypatch, capsys, caplog):
    seen: list[int] = []

    def run(options):
        seen.append(options.workers)
        return registry.TaskReport("alpha", "### alpha")

    monkeypatch.setattr(registry, "tasks", lambda: {"alpha": registry.Task("alpha", "a", run)})
    monkeypatch.setattr(registry, "groups", lambda: {})
    assert main(["reproduce", "--tasks", "alpha", "--out", str(tmp_path), "-q"]) == 0
    assert (
        main(["reproduce", "--tasks", "alpha", "--workers", "2", "--out", str(tmp_path), "-q"]) == 0
    )
    assert seen == [1, 2]
    monkeypatch.setattr(cli, "usable_cpus", lambda: 2)
    with caplog.at_level(logging.WARNING):
        assert (
            main(["reproduce", "--tasks", "alpha", "--workers", "9", "--out", str(tmp_path), "-q"])
            == 0
        )
    assert seen[-1] == 2 and "more than the 2 CPUs" in caplog.text
    assert "alpha run one at a time" in caplog.text
    assert main(["reproduce", "--workers", "0"]) == 2
    assert "must be >= 1" in capsys.readouterr().err


def test_the_workers_help_names_the_tasks_that_use_it(capsys):
    assert main(["reproduce", "--help"]) == 0
    # without any whitespace: argparse may wrap a line inside a hyphenated task name
    out = "".join(capsys.readouterr().out.split())
    assert "".join(f"used by {', '.join(registry.PARALLEL_TASKS)} (default 1".split()) in out
    assert "".join(f"tasks with a search: {', '.join(registry.TUNED_TASKS)}".split()) in out


def test_the_tasks_named_as_parallel_are_those_that_pass_workers_on():
    """``reproduce --workers 2`` warns for every task outside PARALLEL_TASKS that its runs go
    one at a time: the list must name exactly the tasks whose run hands ``options.workers`` to
    its runs (read from the source of the function registered, or of the module's shared run)."""
    import inspect

    spreads = set()
    for name, task in registry.tasks().items():
        module = inspect.getmodule(task.run)
        if "options.workers" in inspect.getsource(module) and _passes_workers(task.run, module):
            spreads.add(name)
    assert spreads == set(registry.PARALLEL_TASKS)


def _passes_workers(run, module) -> bool:
    import inspect

    source = inspect.getsource(run)
    if "options.workers" in source:
        return True
    # a task that delegates to a shared run of its module (nerf-authors -> nerf.run)
    return any(
        f"{fn.__name__}(options" in source and "options.workers" in inspect.getsource(fn)
        for fn in vars(module).values()
        if inspect.isfunction(fn) and fn.__module__ == module.__name__ and fn is not run
    )


def test_the_tasks_named_as_tunable_are_those_that_declare_a_search():
    from feedback_alignment.experiments import tuning

    assert sorted(registry.TUNED_TASKS) == sorted(tuning.tunables())
