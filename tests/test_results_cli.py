"""Issue 21 (items 5, 7, 8, 9, 13): the command line loses no work and says no false thing.

``reproduce`` with no task is refused, a full disk is a one-sentence error that leaves no truncated
file, a killed task resumes from the runs it had finished (with the numbers of an uninterrupted
run), and ``demo`` refuses up front an output file it could not replace and a model that could not
fit in memory.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import stat
import time
from pathlib import Path

import pytest
import torch

from feedback_alignment import cli
from feedback_alignment.cli import main
from feedback_alignment.experiments import demo, registry, results
from feedback_alignment.experiments import run as run_module


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_work(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the arguments were checked")

    monkeypatch.setattr(demo, "run", forbidden)
    monkeypatch.setattr(demo, "train_one", forbidden)


def _refused(argv, capsys, match):
    start = time.perf_counter()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert match in err, err
    assert time.perf_counter() - start < 2.0
    return err


def _fake(name, calls, body=None):
    def run(options):
        calls.append(name)
        if body is not None:
            body(options)
        return registry.TaskReport(name, f"### {name} section")

    return registry.Task(name, f"{name} task", run)


# ---- item 5: no task named -----------------------------------------------------------------------


@pytest.mark.parametrize("tasks", [[""], [","], [" , "]])
def test_reproduce_with_no_task_named_is_refused_and_claims_no_report(tmp_path, capsys, tasks):
    out = tmp_path / "out"
    err = _refused(
        ["reproduce", "--quick", "--tasks", *tasks, "--out", str(out)], capsys, "--tasks"
    )
    assert "names no task" in err and "wrote" not in err
    assert not (out / "REPORT.md").exists()


# ---- item 9 and 13: demo refuses up front ----------------------------------------------------------


def test_demo_refuses_an_existing_read_only_out_file_before_training(tmp_path, capsys, no_work):
    target = tmp_path / "demo.json"
    target.write_text("{}")
    target.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    err = _refused(["demo", "--out", str(target), "-q"], capsys, f"--out {target} is read-only")
    assert "chmod u+w" in err and len(err.strip().splitlines()) == 1
    assert target.read_text() == "{}"


def test_demo_refuses_a_model_too_large_for_memory(capsys, no_work):
    err = _refused(["demo", "--hidden", "2000000000", "-q"], capsys, "--hidden 2000000000")
    assert "memory" in err and len(err.strip().splitlines()) == 1
    _refused(["demo", "--hidden", "64,100000,100000", "-q"], capsys, "more than this machine")


# ---- item 7: a full disk -------------------------------------------------------------------------


class _FullDisk:
    """``open`` for the results module: writes half of what it is given, then ENOSPC."""

    def __init__(self, real_open):
        self.real_open = real_open

    def __call__(self, path, mode="r", *args, **kwargs):
        handle = self.real_open(path, mode, *args, **kwargs)
        if "w" not in mode:
            return handle
        write = handle.write

        def half(data):
            write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))

        handle.write = half
        return handle


def _fill_disk(monkeypatch):
    """Every later write through ``open`` (the results writer's) or ``Path.open`` (``write_text``)
    writes half its data and fails with ENOSPC, as on a full disk."""
    import pathlib

    monkeypatch.setattr(results, "open", _FullDisk(open), raising=False)
    real = pathlib.Path.open
    monkeypatch.setattr(pathlib.Path, "open", lambda self, *a, **k: _FullDisk(real)(self, *a, **k))


def test_a_full_disk_is_one_sentence_and_leaves_no_truncated_file(tmp_path, monkeypatch, capsys):
    calls: list[str] = []

    def write(options):
        results.write_results(options.out_dir, "beta", True, [0], runs=[1.0])

    tasks = {"alpha": _fake("alpha", calls), "beta": _fake("beta", calls, write)}
    monkeypatch.setattr(registry, "tasks", lambda: tasks)
    monkeypatch.setattr(registry, "groups", lambda: {})
    out = tmp_path / "out"
    assert main(["reproduce", "--tasks", "alpha", "--out", str(out), "-q"]) == 0
    report = (out / "REPORT.md").read_text()
    capsys.readouterr()
    _fill_disk(monkeypatch)
    code = main(["reproduce", "--tasks", "beta", "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"could not write {out / 'beta' / 'results.json'} (No space left on device)" in err
    assert f"finished results are in {out}" in err and "Traceback" not in err
    assert "wrote" not in err
    leftovers = [p for p in out.rglob("*") if p.is_file() and p.stat().st_size == 0]
    assert leftovers == [] and not list(out.rglob("*.partial"))
    assert not (out / "beta" / "results.json").exists()
    assert (out / "REPORT.md").read_text() == report  # the earlier report kept whole
    monkeypatch.undo()


def test_write_atomic_keeps_the_earlier_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    results.write_json(path, {"a": 1})
    before = path.read_bytes()
    _fill_disk(monkeypatch)
    with pytest.raises(results.ResultsWriteError, match=r"could not write .*t\.json \(No space"):
        results.write_json(path, {"a": 2})
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["t.json"]


# ---- item 8: resume a killed task from its finished runs -----------------------------------------

_REAL_TRAIN_ONE = demo.train_one


def _tiny(calls, kill_at=None):
    """demo.train_one on a tiny net (1 epoch, 8 units); ``kill_at``: the call that is 'killed'."""

    def train_one(rule, seed, config, tensors, progress=True):
        calls.append((rule, seed))
        if kill_at is not None and len(calls) == kill_at:
            raise KeyboardInterrupt
        small = demo.DemoConfig(hidden=(16,), epochs=1, seeds=config.seeds, rules=config.rules)
        return _REAL_TRAIN_ONE(rule, seed, small, tensors, progress=False)

    return train_one


def _tiny_digits():
    """Stand-in for the digits: 96 training and 32 test rows of 64 features (no data loading)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(128, 64, generator=generator)
    y = torch.randint(0, 10, (128,), generator=generator)
    return x[:96], y[:96], x[96:], y[96:]


def _runs(folder: Path) -> list[dict]:
    runs = json.loads((folder / "digits" / "results.json").read_text())["runs"]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in runs]


def _digits_only(monkeypatch):
    monkeypatch.setattr(demo, "load_digits_tensors", _tiny_digits)
    from feedback_alignment.experiments import quick_digits  # registers "digits" (only it)

    digits = registry.Task("digits", "digits", quick_digits.run)
    monkeypatch.setattr(registry, "tasks", lambda: {"digits": digits})
    monkeypatch.setattr(registry, "groups", lambda: {})


DIGITS = ["reproduce", "--tasks", "digits", "--quick", "-q", "--seeds", "0"]


def test_a_killed_task_resumes_from_its_finished_runs_with_the_same_numbers(
    tmp_path, monkeypatch, capsys
):
    _digits_only(monkeypatch)
    calls: list = []
    monkeypatch.setattr(demo, "train_one", _tiny(calls))
    assert main([*DIGITS, "--out", str(tmp_path / "whole")]) == 0
    assert len(calls) == 3
    assert not (tmp_path / "whole" / "digits" / cli.PARTIAL_RUNS).exists()  # removed once done

    calls.clear()
    monkeypatch.setattr(demo, "train_one", _tiny(calls, kill_at=3))
    out = tmp_path / "killed"
    assert main([*DIGITS, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "2 finished run(s) of digits are saved" in err and "--resume" in err
    assert len(list((out / "digits" / cli.PARTIAL_RUNS).glob("*.pt"))) == 2

    calls.clear()
    monkeypatch.setattr(demo, "train_one", _tiny(calls))
    assert main([*DIGITS, "--out", str(out), "--resume"]) == 0
    assert calls == [("Shallow", 0)]  # only the run the kill lost
    assert _runs(out) == _runs(tmp_path / "whole")
    assert "resumed 2 of 3 runs" in capsys.readouterr().err


def test_saved_runs_are_not_reused_under_other_settings(tmp_path, monkeypatch, capsys):
    _digits_only(monkeypatch)
    calls: list = []
    monkeypatch.setattr(demo, "train_one", _tiny(calls, kill_at=3))
    assert main([*DIGITS, "--out", str(tmp_path)]) == 130
    calls.clear()
    monkeypatch.setattr(demo, "train_one", _tiny(calls))
    assert main([*DIGITS, "--out", str(tmp_path), "--hand-set"]) == 0  # another setting
    assert len(calls) == 3 and "resumed" not in capsys.readouterr().err


def test_resume_skips_finished_tasks_and_refuses_a_folder_with_nothing_to_resume(
    tmp_path, monkeypatch, capsys
):
    calls: list[str] = []

    def killed(options):
        raise KeyboardInterrupt

    tasks = {"alpha": _fake("alpha", calls), "beta": _fake("beta", calls, killed)}
    monkeypatch.setattr(registry, "tasks", lambda: tasks)
    monkeypatch.setattr(registry, "groups", lambda: {})
    out = tmp_path / "out"
    assert main(["reproduce", "--out", str(out), "-q"]) == 130
    assert calls == ["alpha", "beta"]
    tasks["beta"] = _fake("beta", calls)
    calls.clear()
    assert main(["reproduce", "--out", str(out), "-q", "--resume"]) == 0
    assert calls == ["beta"]
    report = (out / "REPORT.md").read_text()
    assert "### alpha section" in report and "### beta section" in report
    _refused(
        ["reproduce", "--out", str(tmp_path / "elsewhere"), "-q", "--resume"],
        capsys,
        "holds no interrupted reproduce run",
    )


def test_saved_runs_round_trip_without_pickle(tmp_path):
    store = run_module.SavedRuns(tmp_path)
    result = demo.RunResult("DFA", 0, 0.5, {"1": float("nan")}, {"1": (0.1, 0.2)}, 1.0, [1.0])
    key = store.key("demo", ("DFA", 0, demo.DemoConfig()))
    store.save(key, (result, torch.ones(2)))
    found, (back, tensor) = store.load(key)
    assert found and back.rule == "DFA" and back.signal_cosine == {"1": (0.1, 0.2)}
    assert torch.equal(tensor, torch.ones(2))
    assert store.key("demo", ("DFA", 0, demo.DemoConfig(lr=0.1))) != key


def test_demo_on_a_full_disk_prints_its_table_and_says_what_failed(tmp_path, monkeypatch, capsys):
    run = demo.RunResult("BP", 0, 0.9, {"1": 10.0}, {}, 0.1)
    monkeypatch.setattr(demo, "run", lambda config, progress: ([run], config))
    out = tmp_path / "demo.json"
    _fill_disk(monkeypatch)
    code = main(["demo", "--out", str(out), "-q", "--seeds", "0", "--rules", "BP"])
    captured = capsys.readouterr()
    assert code == 1 and "| BP | 90.0 |" in captured.out  # the result is not lost
    assert f"could not write {out} (No space left on device)" in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert os.listdir(tmp_path) == []


def test_demo_json_is_sealed_with_its_provenance(tmp_path, monkeypatch, capsys):
    run = demo.RunResult("BP", 0, 0.9, {"1": 10.0}, {}, 0.1)
    monkeypatch.setattr(demo, "run", lambda config, progress: ([run], config))
    out = tmp_path / "demo.json"
    assert main(["demo", "--out", str(out), "-q", "--seeds", "0", "--rules", "BP"]) == 0
    payload = json.loads(out.read_text())
    assert results.seal_state(payload) == results.SEALED
    assert payload["provenance"]["feedback_stream_version"] == 2
    assert payload["runs"][0]["test_accuracy"] == 0.9


def test_reproduce_refuses_an_output_disk_that_is_already_full(tmp_path, monkeypatch, capsys):
    import shutil

    monkeypatch.setattr(registry, "tasks", lambda: {"alpha": _fake("alpha", [])})
    monkeypatch.setattr(registry, "groups", lambda: {})
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(cli.shutil, "disk_usage", lambda path: usage._replace(free=1_000_000))
    _refused(["reproduce", "--out", str(tmp_path / "o"), "-q"], capsys, "only 1 MB free")


# ---- issue 20 item 8: reproduce names its files, shows an ETA, draws readable plots ----------


def test_reproduce_names_every_file_it_wrote_in_the_console_and_the_report(
    tmp_path, monkeypatch, capsys
):
    """Declared files (JSON, a plot) and an undeclared one are listed relative to --out, in the
    section printed to the console and in REPORT.md; the saved partial runs are not."""

    def write(options):
        folder = options.out_dir
        written = [results.write_results(folder, "alpha", True, [0], runs=[1.0])]
        plt = results.pyplot()
        fig, axis = plt.subplots()
        axis.plot([0, 1], [1, 0])
        written.append(results.save_figure(fig, folder / "curves.png"))
        (folder / "undeclared.csv").write_text("a,b\n")  # written but not declared
        (folder / cli.PARTIAL_RUNS).mkdir(exist_ok=True)
        (folder / cli.PARTIAL_RUNS / "run.pt").write_bytes(b"")
        return registry.TaskReport("alpha", "### alpha section", written)

    tasks = {"alpha": registry.Task("alpha", "alpha task", write)}
    monkeypatch.setattr(registry, "tasks", lambda: tasks)
    monkeypatch.setattr(registry, "groups", lambda: {})
    out = tmp_path / "out"
    assert main(["reproduce", "--tasks", "alpha", "--out", str(out), "-q"]) == 0
    console = capsys.readouterr().out
    report = (out / "REPORT.md").read_text()
    expected = ["alpha/results.json", "alpha/curves.png", "alpha/undeclared.csv",
                f"alpha/{cli.SECTION_FILE}"]  # fmt: skip
    for text in (console, report):
        assert f"Files written (relative to `{out}`)" in text
        for name in expected:
            assert f"- `{name}`" in text, (name, text)
        assert "run.pt" not in text
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk == {*expected, "REPORT.md"}  # each file named (REPORT.md in "wrote ...")


def test_a_real_task_lists_its_plots(tmp_path, monkeypatch, capsys):
    """The digits task's JSON and tables, named in REPORT.md (no plot: it draws none)."""
    _digits_only(monkeypatch)
    monkeypatch.setattr(demo, "train_one", _tiny([]))
    assert main([*DIGITS, "--out", str(tmp_path)]) == 0
    report = (tmp_path / "REPORT.md").read_text()
    for path in (tmp_path / "digits").iterdir():
        assert f"- `digits/{path.name}`" in report


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.4, "0 s"), (59.4, "59 s"), (62, "1 min 02 s"), (3599, "59 min 59 s"),
     (3600 + 7 * 60 + 20, "1 h 07 min"), (float("nan"), "unknown")],
)  # fmt: skip
def test_format_duration(seconds, shown):
    assert run_module.format_duration(seconds) == shown


def test_progress_line_estimates_from_the_mean_of_finished_runs():
    line = run_module.progress_line("convnets", 2, 8, 60.0, "DFA seed 1")
    assert line == "convnets: 2/8 runs done (DFA seed 1), 1 min 00 s; ETA 3 min 00 s"
    assert run_module.progress_line("x", 3, 3, 5.0).endswith("3/3 runs done, 5 s; all done")


def test_run_jobs_logs_a_progress_line_with_an_eta_per_finished_run(monkeypatch, caplog):
    clock = [100.0]
    monkeypatch.setattr(run_module, "_clock", lambda: clock[0])

    def job(shared, item):
        clock[0] += item  # each run takes `item` seconds
        return item

    with caplog.at_level("INFO", logger=run_module.__name__):
        assert run_module.run_jobs(job, [10, 30, 20], "toy", progress=False) == [10, 30, 20]
    lines = [r.getMessage() for r in caplog.records if "runs done" in r.getMessage()]
    assert lines == [
        "toy: 1/3 runs done, 10 s; ETA 20 s",
        "toy: 2/3 runs done, 40 s; ETA 20 s",
        "toy: 3/3 runs done, 1 min 00 s; all done",
    ]


def _alignment_history(steps):
    layers, points = ["1", "3", "5", "7", "9", "11", "13"], ["2", "4", "6", "8", "10", "12", "14"]
    return [
        {
            "step": step,
            "loss": 2.3 / (1 + step / 10),
            "angles": {name: 90.0 - step % 7 - i for i, name in enumerate(layers)},
            "cosine": {name: [0.01 * (i + 1), 0.0] for i, name in enumerate(points)},
        }
        for step in steps
    ]


@pytest.mark.parametrize("steps", [range(2, 66, 2), range(10, 1000, 10), range(1, 200_000, 997)])
def test_alignment_plots_keep_title_and_tick_labels_readable(tmp_path, monkeypatch, steps):
    """The angle and cosine plots of principled-alignment, at quick-mode length (a short log range,
    where matplotlib labels the minor ticks) and at full length: the (quick-mode) title lies inside
    the figure and no two x tick labels overlap."""
    from feedback_alignment.experiments.principled import QUICK, alignment

    figures = []

    def keep(fig, path, dpi=110):
        fig.tight_layout()
        figures.append(fig)
        path.write_bytes(b"")
        return path

    monkeypatch.setattr(alignment, "save_figure", keep)
    result = {"history": _alignment_history(steps), "arch": "7x240"}
    assert len(alignment.plots(result, QUICK, tmp_path)) == 2
    for fig in figures:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        width = fig.bbox.width
        for axis in fig.axes:
            heading = axis.title.get_window_extent(renderer)
            if axis.get_title():
                assert heading.x0 >= 0 and heading.x1 <= width, axis.get_title()
            labels = [t for t in axis.get_xticklabels(which="both")
                      if t.get_visible() and t.get_text()
                      and 0 <= t.get_window_extent(renderer).x0 <= width]  # fmt: skip
            boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
            for left, right in itertools.pairwise(boxes):
                assert left.x1 <= right.x0, [t.get_text() for t in labels]
        results.pyplot().close(fig)
