"""Reference conv nets under every rule, and the ``convnets`` task on a tiny synthetic subset."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from feedback_alignment.experiments import convnets, presets
from feedback_alignment.experiments.registry import tasks
from feedback_alignment.experiments.run import make_rule
from feedback_alignment.models import LeNet, ResNet


@pytest.mark.parametrize("name", list(convnets.RULES))
@pytest.mark.parametrize("model_name", ["lenet", "resnet"])
def test_every_rule_trains_the_shared_models(name, model_name):
    torch.manual_seed(0)
    if model_name == "lenet":
        model, x = LeNet(in_channels=3, image_size=32), torch.randn(4, 3, 32, 32)
    else:
        model, x = ResNet(depth=8, in_channels=1, width=4), torch.randn(4, 1, 16, 16)
    params = list(model.parameters())
    keys = list(model.state_dict())
    rule = make_rule(name, 0)
    rule.apply(model)
    F.cross_entropy(model(x), torch.arange(4)).backward()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.weight.grad is not None and torch.isfinite(first.weight.grad).all()
    rule.remove(model)
    assert list(model.state_dict()) == keys
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))


def test_model_arguments_are_checked():
    assert LeNet()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"depth must be 6n \+ 2"):
        ResNet(depth=10)
    with pytest.raises(ValueError, match=r"unknown activation"):
        LeNet(activation="swish")
    with pytest.raises(ValueError, match=r"at least 16x16"):
        LeNet(image_size=8)


def test_task_is_registered():
    assert "convnets" in tasks()


def test_quick_experiment_on_a_tiny_subset_uses_every_seed(tmp_path, one_thread):
    torch.manual_seed(0)
    # four separable "classes": a bright square in one quadrant
    x = torch.rand(128, 1, 28, 28) * 0.1
    y = torch.randint(0, 4, (128,))
    for i, label in enumerate(y.tolist()):
        row, col = divmod(label, 2)
        x[i, 0, 14 * row : 14 * row + 10, 14 * col : 14 * col + 10] += 1.0
    tensors = (x[:96], y[:96], x[96:], y[96:])  # 3 steps of 32, 32 test images
    config = replace(
        presets.preset("convnets", "quick", convnets.ConvConfig()),
        rules=("uSF", "KP", "DFA"),
        batch_size=32,
        probe_size=32,
        measurements=2,
        seeds=(0, 1),
    )
    records, markdown, files = convnets.run_and_write(
        config, tmp_path, tensors=tensors, progress=False, title="synthetic", quick=True
    )
    assert len(records) == 12 and {r.manhattan for r in records} == {False, True}
    assert {r.seed for r in records} == {0, 1}
    assert (
        markdown.count("| uSF | yes | ") == 1 and "| DFA | no | " in markdown and "9.69" in markdown
    )
    assert " ± " in markdown and "**QUICK MODE**" in markdown
    names = {f.name for f in files}
    assert {
        "results.json",
        "convnets_synthetic.json",
        "test_error.png",
        "weight_angle.png",
    } <= names
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["quick"] is True and payload["provenance"]["seeds"] == [0, 1]
    usf = next(r for r in payload["runs"] if r["rule"] == "uSF")
    assert len(usf["history"]) >= 2 and set(usf["history"][-1]["weight_angle"]) == {
        "0",
        "3",
        "7",
        "9",
        "11",
    }
    assert all(0 <= r["test_error"] <= 100 for r in payload["runs"])
    # two seeds of one rule differ (each seed draws its own model and feedback)
    errors = {r["seed"]: r["train_loss"] for r in payload["runs"] if r["rule"] == "DFA"}
    assert errors[0] != errors[1]
    with pytest.raises(ValueError, match=r"unknown rules \['XYZ'\]"):
        convnets.run_and_write(replace(config, rules=("XYZ",)), tmp_path, tensors=tensors)


def test_runs_spread_over_worker_processes_equal_the_sequential_ones(tmp_path, one_thread):
    """``--workers``: each run seeds itself, so two spawned processes give the same records, in
    the same order, as one loop (the data is sent to each worker once)."""
    torch.manual_seed(0)
    x, y = torch.randn(96, 1, 28, 28), torch.randint(0, 10, (96,))
    tensors = (x[:64], y[:64], x[64:], y[64:])
    config = replace(
        presets.preset("convnets", "quick", convnets.ConvConfig()),
        rules=("uSF", "DFA"),
        manhattan=(False,),
        batch_size=32,
        probe_size=16,
        measurements=1,
        seeds=(0, 1),
    )
    runs = {}
    for workers in (1, 2):
        records, _, _ = convnets.run_and_write(
            config, tmp_path / str(workers), tensors=tensors, progress=False, workers=workers
        )
        runs[workers] = [(r.rule, r.seed, r.train_loss, r.test_error) for r in records]
    assert runs[2] == runs[1] and [r[:2] for r in runs[1]] == [
        ("uSF", 0), ("DFA", 0), ("uSF", 1), ("DFA", 1)
    ]  # fmt: skip


def test_run_jobs_keeps_the_order_raises_a_workers_error_and_refuses_zero_workers():
    import operator

    from feedback_alignment.experiments.run import run_jobs

    assert run_jobs(operator.truediv, [1, 2, 4], "x", shared=1.0, workers=2) == [1.0, 0.5, 0.25]
    with pytest.raises(ZeroDivisionError):
        run_jobs(operator.truediv, [1, 0, 2, 4, 8], "x", shared=1.0, workers=2)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_jobs(max, [1], "x", workers=0)


def _sleep_or_fail(shared, seconds):
    """A run for :func:`run_jobs` in a spawned worker: sleeps, or fails when ``seconds < 0``."""
    import time

    if seconds < 0:
        raise RuntimeError("this run fails")
    time.sleep(seconds)
    return seconds


def test_a_failed_run_stops_the_running_ones_instead_of_leaving_them_to_finish():
    """Without stopping them, the sleeping worker would keep its core busy (and the process
    from exiting) for two minutes after the error was raised."""
    import multiprocessing
    import time

    from feedback_alignment.experiments.run import run_jobs

    with pytest.raises(RuntimeError, match="this run fails"):
        run_jobs(_sleep_or_fail, [120, -1, 120], "x", workers=2)
    deadline = time.monotonic() + 20
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not multiprocessing.active_children()


JOBS_SCRIPT = """
import os, sys, time
from feedback_alignment.experiments.run import run_jobs

def job(folder, seconds):
    open(os.path.join(folder, str(os.getpid())), "w").close()
    time.sleep(seconds)

if __name__ == "__main__":
    run_jobs(job, [120, 120], "x", shared=sys.argv[1], workers=2)
"""


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_sigterm_and_ctrl_c_stop_the_workers_too(tmp_path, signal_name):
    """Killing a ``--workers`` run must not leave its workers running, orphaned."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script, folder = tmp_path / "jobs.py", tmp_path / "pids"
    script.write_text(JOBS_SCRIPT)
    folder.mkdir()
    process = subprocess.Popen([sys.executable, str(script), str(folder)], cwd=tmp_path)
    deadline = time.monotonic() + 90
    while len(list(folder.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    pids = [int(p.name) for p in folder.iterdir()]
    assert len(pids) == 2, "the workers did not start"
    process.send_signal(getattr(signal, signal_name))
    assert process.wait(timeout=30) != 0

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.monotonic() + 20
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in pids)


def test_run_jobs_logs_one_line_per_finished_run(caplog):
    import logging
    import operator

    from feedback_alignment.experiments.run import run_jobs

    with caplog.at_level(logging.INFO):
        run_jobs(operator.truediv, [1, 2, 4], "x", shared=1.0, workers=2)
    done = [m for m in caplog.messages if " done: " in m]
    assert [m.split(" done: ")[0] for m in done] == ["x: run 1/3", "x: run 2/3", "x: run 3/3"]
    assert sorted(m.split(" done: ")[1] for m in done) == ["1", "2", "4"]
