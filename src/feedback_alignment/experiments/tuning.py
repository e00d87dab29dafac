"""Each rule's own hyperparameters, chosen on validation data, stored so that runs reuse them.

A fair comparison of learning rules gives every rule its own learning rate (and whatever else
matters to it), chosen the same way for all: here by Optuna's TPE sampler over a declared search
space, a fixed number of short trials per rule, each trained on the training split and scored on
a **validation split only** (never the test data the task reports). Trials report their
validation metric while they train and the median pruner stops the hopeless ones early.

A task declares what can be tuned with :func:`register_tunable`: its *arms* (one per rule, or per
``layer/rule`` pair), the search space of each arm, and an objective that trains one short run
with given values and returns the validation metric. :func:`tune` runs the search (resumable: the
trials are journaled in a file and a rerun continues where the last stopped) and writes the best
values as JSON; :func:`tuned_values` reads them back without importing Optuna, so
``feedback-alignment reproduce`` on a clean clone uses the committed values
(``src/feedback_alignment/experiments/tuned/<task>.json``) and ``reproduce --tune`` redoes them.

Optuna is an optional dependency (the ``tune`` extra); nothing else in the package imports it.

Why the feedback scale of the direct rules is not searched separately: Adam's update does not
change when a parameter's gradient is multiplied by a constant (up to its epsilon), so in the
tasks here (all Adam) the scale of ``B`` acts only through what couples gradients across
parameters: coupled L2 weight decay (the graphs, where scaling ``B`` by ``c`` equals dividing the
decay of the layers it trains by ``c``: the searched weight decay covers it) and global-norm
clipping (the transformer, where a larger ``B`` clips sooner; not searched, stated in the docs).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from feedback_alignment.experiments.sealed import legacy_note, refuse_tampered
from feedback_alignment.provenance import commit_label, processor_name

log = logging.getLogger(__name__)

TUNED_DIR = Path(__file__).parent / "tuned"
"""Where the committed tuned values live (package data: used without Optuna)."""


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a float in ``[low, high]``, sampled in log space if ``log``."""

    low: float
    high: float
    log: bool = True

    def __post_init__(self) -> None:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ValueError(f"bad search range [{self.low}, {self.high}] (log={self.log})")


Report = Callable[[int, float], None]
"""``report(step, validation_value)``: called while a trial trains; raises to prune it."""


@dataclass(frozen=True)
class Tunable:
    """What a task exposes to the tuner.

    Attributes:
        task: the task's registry name.
        arms: what gets its own values (``"DFA"``, or ``"gcn/DFA"``).
        space: ``arm -> {name: Param}``.
        defaults: ``arm -> {name: value}``: the hand-set values, enqueued as the first trial so
            that tuning can never select something worse on validation than the hand setting.
        objective: ``(arm, values, report, quick) -> validation metric`` of one short run.
        direction: ``"maximize"`` or ``"minimize"`` the metric.
        metric: what the metric is, for the docs and the JSON.
        trials: trials per arm (full mode).
        schedule: how a trial's run differs from the task's full run (for the docs).
    """

    task: str
    arms: tuple[str, ...]
    space: Callable[[str], dict[str, Param]]
    defaults: Callable[[str], dict[str, float]]
    objective: Callable[[str, dict[str, float], Report, bool], float]
    direction: str
    metric: str
    trials: int = 10
    schedule: str = ""

    def __post_init__(self) -> None:
        if self.direction not in ("maximize", "minimize"):
            raise ValueError(f"direction must be 'maximize' or 'minimize', not {self.direction!r}")


_TUNABLES: dict[str, Tunable] = {}


def register_tunable(tunable: Tunable) -> Tunable:
    """Registers a task's tuning declaration (called at import of the task's module)."""
    _TUNABLES[tunable.task] = tunable
    return tunable


def tunables() -> dict[str, Tunable]:
    """Every registered declaration (the task modules are imported first)."""
    from feedback_alignment.experiments.registry import tasks

    tasks()
    return dict(_TUNABLES)


def tuned_path(task: str, directory: Path | None = None) -> Path:
    return (directory or TUNED_DIR) / f"{task}.json"


def _read(path: Path, task: str) -> dict[str, Any]:
    """The stored file at ``path``, parsed and shaped like a tuning result, or a ValueError
    that names the file and the repair."""
    try:
        stored = json.loads(path.read_text())
        arms = {arm: dict(entry["values"]) for arm, entry in stored["arms"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{path} is not a tuning result ({error}); delete it (a rerun of "
            f"`feedback-alignment reproduce --tasks {task} --tune` then writes a new one)"
        ) from None
    declared = _TUNABLES.get(task)
    repair = f"; delete it or search again (feedback-alignment reproduce --tasks {task} --tune)"
    for arm, values in arms.items():
        space = declared.space(arm) if declared is not None and arm in declared.arms else None
        if declared is not None and space is None:
            raise ValueError(
                f"{path}: {task} has no arm {arm!r} (arms: {list(declared.arms)}){repair}"
            )
        for name, value in values.items():
            bad_type = not isinstance(value, (int, float)) or isinstance(value, bool)
            if bad_type or not math.isfinite(value):
                raise ValueError(f"{path}: {arm} {name} = {value!r} is not a finite number{repair}")
            if space is not None and name not in space:
                raise ValueError(
                    f"{path}: {arm} has no parameter {name!r} (has {list(space)}){repair}"
                )
            if space is not None and not space[name].low <= value <= space[name].high:
                raise ValueError(
                    f"{path}: {arm} {name} = {value} is outside its search range "
                    f"[{space[name].low}, {space[name].high}]{repair}"
                )
    return stored


def tuned_values(task: str, directory: Path | None = None) -> dict[str, dict[str, float]]:
    """``arm -> {name: value}`` stored for ``task`` (empty when none is stored).

    The values are checked against the task's search space when its module is loaded (names,
    finite numbers, ranges); a quick-mode file is refused where the committed values belong.

    Raises:
        ValueError: the file is not a valid tuning result (names the file and the repair).
    """
    path = tuned_path(task, directory)
    if not path.is_file():
        return {}
    stored = _read(path, task)
    if stored.get("quick") and path.parent == TUNED_DIR:
        raise ValueError(f"{path} holds quick-mode values; commit a full search's file there")
    return {arm: dict(entry["values"]) for arm, entry in stored["arms"].items()}


def with_tuned(
    task: str,
    hand: dict[str, float],
    name: str = "lr",
    *,
    enabled: bool = True,
    directory: Path | None = None,
) -> dict[str, float]:
    """``hand`` (arm -> hand-set value of ``name``) with the stored tuned values in place, where
    ``enabled`` and stored: what a task whose arms each have one searched number runs with."""
    stored = tuned_values(task, directory) if enabled else {}
    return {**hand, **{arm: v[name] for arm, v in stored.items() if name in v}}


def arm_seed(seed: int, arm: str, trials_so_far: int) -> int:
    """The sampler's seed for one arm and one session: different arms draw different start-up
    trials, and a resumed search draws new ones instead of repeating the first session's."""
    return (seed * 1_000_003 + zlib.crc32(arm.encode()) + 7919 * trials_so_far) % 2**32


def _machine() -> str:
    """The processor's name and the core count (what a reader needs to weigh the budget)."""
    return f"{processor_name()}, {os.cpu_count()} CPUs, {platform.system()}"


@dataclass
class ArmResult:
    values: dict[str, float]
    value: float
    trials: int
    pruned: int
    default_value: float | None
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _import_optuna():
    try:
        import optuna
    except ImportError:
        from feedback_alignment.data import MissingDependencyError

        raise MissingDependencyError(
            "tuning needs Optuna: pip install 'feedback-alignment[tune]' (or run without --tune "
            "to use the stored values)"
        ) from None
    return optuna


def tune(
    task: str,
    *,
    out_dir: Path,
    arms: tuple[str, ...] | None = None,
    trials: int | None = None,
    quick: bool = False,
    seed: int = 0,
) -> Path:
    """Runs (or resumes) the search of ``task`` and writes ``<out_dir>/tuned/<task>.json``.

    Each arm is one Optuna study in the journal ``<out_dir>/tuned/<task>.journal``: a rerun with
    the same folder continues the trials it holds (up to ``trials`` in all per arm).
    """
    optuna = _import_optuna()
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    declared = tunables()
    if task not in declared:
        raise ValueError(f"task {task!r} declares no tuning; tunable tasks: {sorted(declared)}")
    tunable = declared[task]
    chosen = arms or tunable.arms
    unknown = [a for a in chosen if a not in tunable.arms]
    if unknown:
        raise ValueError(f"unknown arms {unknown} of {task!r}; choose from {list(tunable.arms)}")
    count = trials or (2 if quick else tunable.trials)
    folder = out_dir / ("tuned-quick" if quick else "tuned")
    folder.mkdir(parents=True, exist_ok=True)
    storage = JournalStorage(
        JournalFileBackend(str(folder / f"{task}{'-quick' if quick else ''}.journal"))
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[str, ArmResult] = {}
    path = tuned_path(task, folder)
    carried = _committed_arms(task, exclude=chosen)
    if carried:
        log.info("tune %s: the arms not searched keep their committed values: %s", task,
                 ", ".join(carried))  # fmt: skip
    commit = commit_label()  # of the code that searches (read now: the tree may change meanwhile)
    for arm in chosen:
        space = tunable.space(arm)
        study = optuna.create_study(
            study_name=f"{task}:{arm}",
            storage=storage,
            load_if_exists=True,
            direction=tunable.direction,
            sampler=optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=min(4, count)
            ),  # reseeded below
            pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
        )
        study.sampler = optuna.samplers.TPESampler(
            seed=arm_seed(seed, arm, len(study.trials)), n_startup_trials=min(4, count)
        )
        if not study.trials:
            default = {k: v for k, v in tunable.defaults(arm).items() if k in space}
            study.enqueue_trial(default)

        def objective(trial: Any, arm: str = arm, space: dict[str, Param] = space) -> float:
            values = {
                name: trial.suggest_float(name, p.low, p.high, log=p.log)
                for name, p in space.items()
            }

            def report(step: int, value: float) -> None:
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()

            value = tunable.objective(arm, values, report, quick)
            if not math.isfinite(value):  # a diverged run: the worst score, not an error
                return -math.inf if tunable.direction == "maximize" else math.inf
            return value

        done = [t for t in study.trials if t.state.is_finished()]
        remaining = max(0, count - len(done))
        start = time.perf_counter()
        log.info("tune %s %s: %d trials to run (%d done)", task, arm, remaining, len(done))
        if remaining:
            study.optimize(objective, n_trials=remaining, catch=(RuntimeError,))
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise RuntimeError(f"tuning {task} {arm}: no trial completed; see the log")
        best = study.best_trial
        first = study.trials[0]
        results[arm] = ArmResult(
            values=dict(best.params),
            value=float(best.value),
            trials=sum(t.state.is_finished() for t in study.trials),
            pruned=sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials),
            default_value=None if first.value is None else float(first.value),
            seconds=time.perf_counter() - start,
            history=[
                {"params": t.params, "value": t.value, "state": t.state.name} for t in study.trials
            ],
        )
        log.info("tune %s %s: best %s = %.4g with %s", task, arm, tunable.metric,
                 best.value, best.params)  # fmt: skip
        _write(
            path, task, tunable, results, count, quick, seed, optuna.__version__, commit, carried
        )
    return path


def _committed_arms(task: str, exclude: tuple[str, ...]) -> dict[str, Any]:
    """The committed entries of the arms not in ``exclude``: a search of some arms writes them
    beside its own, so that the run after it (and a copy of its file over the committed one)
    keeps every other arm's searched values instead of falling back to the hand-set ones."""
    committed = tuned_path(task)
    if not committed.is_file():
        return {}
    return {a: e for a, e in _read(committed, task)["arms"].items() if a not in exclude}


def _write(
    path: Path,
    task: str,
    tunable: Tunable,
    results: dict[str, ArmResult],
    count: int,
    quick: bool,
    seed: int,
    optuna_version: str,
    commit: str,
    carried: dict[str, Any] | None = None,
) -> None:
    """Writes the best values so far (after every arm, so an interrupt loses at most one), with
    the ``carried`` committed entries of the arms this search leaves alone; sealed with a digest
    and the feedback stream version of the direct rules in its provenance."""
    from feedback_alignment.feedback import STREAM_VERSION

    stored = _read(path, task) if path.is_file() else {"arms": {}}
    was_carried = set(stored.get("carried_from_committed", []))
    earlier = {a: e for a, e in stored["arms"].items() if a not in was_carried}  # a resumed search
    fresh = {a: {**asdict(r), "values": r.values} for a, r in results.items()}
    searched = {**(carried or {}), **earlier, **fresh}
    kept = sorted(a for a in searched if a not in earlier and a not in fresh)
    payload = {
        "task": task,
        "quick": quick,
        "metric": tunable.metric,
        "direction": tunable.direction,
        "schedule": tunable.schedule,
        "trials_per_arm": count,
        "sampler": f"TPE seeded by (seed {seed}, arm, trials so far), median pruner; the "
        "hand-set values are trial 0",
        "space": {a: {k: asdict(p) for k, p in tunable.space(a).items()} for a in tunable.arms},
        "arms": {a: searched[a] for a in tunable.arms if a in searched},
        "carried_from_committed": kept,
        "provenance": {
            "command": f"feedback-alignment reproduce --tasks {task} --tune"
            + (f" --arms {','.join(results)}" if set(results) != set(tunable.arms) else "")
            + (" --quick" if quick else ""),
            "commit": commit,
            "machine": _machine(),
            "optuna": optuna_version,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "feedback_stream_version": STREAM_VERSION,
        },
    }
    from feedback_alignment.experiments.results import write_json

    write_json(path, payload)  # sealed with a digest, written atomically


def _number(path: Path, field: str, value: Any, *, optional: bool = False) -> None:
    """Raises a ValueError naming ``path`` and ``field`` unless ``value`` is a number."""
    if optional and value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(
            f"{path}: {field} is {value!r}, where a number belongs; restore the file as the "
            "search wrote it, or search again"
        )


def markdown(task: str, directory: Path | None = None) -> str:
    """A table of the stored values of ``task`` (arm, values, validation metric, trials),
    under the render's legacy mark when the file predates digests and stream versions.

    Raises:
        ValueError: the file was edited after the search wrote it (its digest does not match),
            or holds text where a number belongs (names the file and the field).
    """
    path = tuned_path(task, directory)
    if not path.is_file():
        return f"No tuned values stored for {task}."
    try:
        stored = json.loads(path.read_bytes())
        arms, space, prov = stored["arms"], stored["space"], stored["provenance"]
        stored["metric"], stored["sampler"], stored["schedule"], stored["trials_per_arm"]
        arms.items(), space.items(), prov["command"], prov["commit"], prov["date"]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{path} is not a tuning result ({type(error).__name__}: {error}); restore it as the "
            f"search wrote it, or search again (feedback-alignment reproduce --tasks {task} --tune)"
        ) from None
    search = f"feedback-alignment reproduce --tasks {task} --tune"
    refuse_tampered(path, task, stored, search)
    for arm, entry in arms.items():
        for name, value in entry["values"].items():
            _number(path, f"arms.{arm}.values.{name}", value)
        _number(path, f"arms.{arm}.value", entry["value"])
        _number(path, f"arms.{arm}.default_value", entry.get("default_value"), optional=True)
        _number(path, f"arms.{arm}.trials", entry["trials"])
        _number(path, f"arms.{arm}.pruned", entry["pruned"])
    for arm, params in space.items():
        for name, p in params.items():
            _number(path, f"space.{arm}.{name}.low", p["low"])
            _number(path, f"space.{arm}.{name}.high", p["high"])
    note = legacy_note(
        task, stored, copy_to="src/feedback_alignment/experiments/tuned/", command=search
    )
    lines = [
        *([note, ""] if note else []),
        f"| arm | values | best {stored['metric']} | hand-set trial's | trials (pruned) |",
        "|:---|:---|---:|---:|---:|",
    ]
    for arm, entry in stored["arms"].items():
        values = ", ".join(f"{k} {v:.3g}" for k, v in entry["values"].items())
        default = entry.get("default_value")
        hand = "n/a" if default is None else f"{default:.4g}"
        lines.append(
            f"| {arm} | {values} | {entry['value']:.4g} | {hand} | "
            f"{entry['trials']} ({entry['pruned']}) |"
        )
    groups: dict[str, list[str]] = {}
    for arm, params in stored["space"].items():
        text = ", ".join(
            f"{k} in [{p['low']:.3g}, {p['high']:.3g}]{' (log)' if p['log'] else ''}"
            for k, p in params.items()
        )
        groups.setdefault(text, []).append(arm)
    space = "; ".join(
        (f"every arm: {text}" if len(groups) == 1 else f"{', '.join(arms)}: {text}")
        for text, arms in groups.items()
    )
    prov = stored["provenance"]
    return "\n".join(lines) + (
        f"\n\nSearch: {stored['sampler']}, {stored['trials_per_arm']} trials per arm. "
        f"{stored['schedule']} Space: {space}. `{prov['command']}`, commit {prov['commit']}, "
        f"{prov['date']}."
    )
