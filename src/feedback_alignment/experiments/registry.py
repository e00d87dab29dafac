"""The task families that ``feedback-alignment reproduce`` runs, in one registry.

A task is a function ``run(options) -> TaskReport``: it trains its models (BP and the rules of its
paper), writes ``results.json`` and any plots into ``options.out_dir``, and returns a markdown
section that puts our numbers beside the paper's. Each experiment module registers its tasks with
:func:`register_task`; the CLI imports the modules listed in :data:`TASK_MODULES`.

Every task module names its parts alike (:class:`Experiment`; ``tests/test_presets.py`` checks
that every module of :data:`TASK_MODULES` has the three names and none of those they replaced):
``config_for(options)`` gives the run's settings (the config's defaults are the full run; the
other presets, ``--quick`` among them, are data in ``presets/<task>.json``, read by
:mod:`~feedback_alignment.experiments.presets`; :func:`configure` is the common body),
``run_experiment(config, ...)`` trains every run and returns what they left (each run saved as it
ends inside ``reproduce``), and ``summary(...)`` makes the table beside the paper's; the
registered ``run(options)`` chains the three and writes the files.

A *group* (:func:`register_group`) names several tasks under one name (``principled`` is its five
parts). Groups are not tasks: :func:`tasks` lists each task once, so running "every task" never
runs a part twice, and :func:`resolve` expands group names given on the command line.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from feedback_alignment.experiments import presets

log = logging.getLogger(__name__)

TASK_MODULES: tuple[str, ...] = (
    "feedback_alignment.experiments.quick_digits",
    "feedback_alignment.experiments.convnets",
    "feedback_alignment.experiments.learned_feedback",
    "feedback_alignment.experiments.learned_feedback_resnet",
    "feedback_alignment.experiments.resnet",
    "feedback_alignment.experiments.resnet_seeds",
    "feedback_alignment.experiments.principled",
    "feedback_alignment.experiments.graphs",
    "feedback_alignment.experiments.recommenders",
    "feedback_alignment.experiments.language",
    "feedback_alignment.experiments.nerf",
)
"""Modules imported to populate the registry (each calls :func:`register_task` at import)."""


@dataclass
class RunOptions:
    """What every task receives.

    Attributes:
        out_dir: folder for this task's ``results.json``, tables and plots (created).
        quick: the CPU-minutes mode (a few minutes in all), exercised by the tests.
        progress: show progress bars (only drawn on a terminal; elsewhere one log line per run).
        seeds: seeds to average over (a task may use fewer in quick mode).
        tuned: use the tuned hyperparameters (``False``: the hand-set ones).
        tuned_dir: where the tuned values are read (``None``: the committed ones, see
            :mod:`feedback_alignment.experiments.tuning`).
        workers: processes over which a task may spread its independent runs (the tasks in
            :data:`PARALLEL_TASKS`; the others run one at a time).
    """

    out_dir: Path
    quick: bool = False
    progress: bool = True
    seeds: tuple[int, ...] = (0,)
    tuned: bool = True
    tuned_dir: Path | None = None
    workers: int = 1

    @property
    def preset(self) -> str:
        """The settings' preset name this run asks for (``presets/<task>.json``)."""
        return "quick" if self.quick else "full"


def run_seeds(options: RunOptions, full_count: int = 3) -> tuple[int, ...]:
    """The seeds a task runs: quick mode the first one; a full run the ``--seeds`` given, or, for
    the CLI's single default seed, ``full_count`` consecutive seeds from it (the papers'
    comparisons need a spread; an explicit single seed cannot be told from the default)."""
    if options.quick:
        return tuple(options.seeds[:1])
    if len(options.seeds) > 1:
        return tuple(options.seeds)
    return tuple(options.seeds[0] + i for i in range(full_count))


Config = TypeVar("Config")


def configure(
    task: str, base: Config, options: RunOptions, seeds: tuple[int, ...] | None = None
) -> Config:
    """``base`` with preset ``options.preset`` of ``presets/<task>.json``, then the run's choice of
    tuned or hand-set values and, where given, its ``seeds``: what every task's ``config_for``
    does (the config must have ``tuned`` and ``tuned_dir`` fields)."""
    config = presets.preset(task, options.preset, base)
    run: dict[str, Any] = {"tuned": options.tuned, "tuned_dir": options.tuned_dir}
    if seeds is not None:
        run["seeds"] = tuple(seeds)
    return dataclasses.replace(config, **run)


TUNED_TASKS: tuple[str, ...] = (
    "graphs",
    "transformer",
    "nerf",
    "nerf-authors",
    "convnets",
    "resnet",
    "recommenders",
    "principled-mlp",
    "principled-conv",
    "learned-feedback",
    "learned-feedback-resnet",
)
"""Tasks that declare a search (:func:`feedback_alignment.experiments.tuning.register_tunable`),
named here for ``reproduce --help`` without importing every task (a test holds them equal)."""

PARALLEL_TASKS: tuple[str, ...] = (
    "convnets",
    "learned-feedback",
    "learned-feedback-resnet",
    "resnet",
    "resnet-seeds",
    "nerf",
    "nerf-authors",
)
"""Tasks whose runs (rule x seed) spread over ``RunOptions.workers`` processes: those whose
full runs exceed the 45-minute budget on one core."""


class Experiment(Protocol):
    """What every task module provides, one name per role (its registered ``run`` aside).

    The arguments and returns differ by task (the data, progress, workers; NeRF also returns its
    renders, the demo its config); the names and their meaning do not.
    """

    def config_for(self, options: RunOptions) -> Any:
        """The run's settings: preset ``options.preset`` with the run's tuned choice (and its
        seeds, where the config holds them; the Transformer and NeRF tasks take them apart)."""
        ...

    def run_experiment(self, config: Any, *args: Any, **kwargs: Any) -> Any:
        """Trains every (rule, seed) of ``config``; returns the runs' records."""
        ...

    def summary(self, *args: Any, **kwargs: Any) -> Any:
        """The task's table (:class:`~feedback_alignment.experiments.results.Table`), from the
        records and the config, or from the statistics of them (graphs, recommenders:
        ``aggregate``)."""
        ...


@dataclass
class TaskReport:
    """A task's outcome: a markdown section (table + notes) and the files it wrote."""

    name: str
    markdown: str
    files: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    run: Callable[[RunOptions], TaskReport]
    #: importable modules the task needs beyond the core install (checked before any work)
    requires: tuple[str, ...] = ()

    def missing(self) -> list[str]:
        """The modules of :attr:`requires` that cannot be imported here (nothing is imported)."""
        import importlib.util

        return [m for m in self.requires if importlib.util.find_spec(m) is None]


EXTRAS: dict[str, str] = {"torch_geometric": "graphs", "pandas": "data", "pyarrow": "data"}
"""Which extra of the package installs a module that a task requires."""


_TASKS: dict[str, Task] = {}
_GROUPS: dict[str, Group] = {}


@dataclass(frozen=True)
class Group:
    name: str
    description: str
    members: tuple[str, ...]


def register_task(name: str, description: str, requires: tuple[str, ...] = ()) -> Callable:
    """Decorator: ``@register_task("convnets", "...")`` on a ``run(options)`` function;
    ``requires`` names the optional modules it imports (see :data:`EXTRAS`)."""

    def decorate(run: Callable[[RunOptions], TaskReport]) -> Callable[[RunOptions], TaskReport]:
        if name in _TASKS and _TASKS[name].run is not run:
            raise ValueError(f"task {name!r} is registered twice")
        if name in _GROUPS:
            raise ValueError(f"task {name!r} has the name of a group")
        _TASKS[name] = Task(name, description, run, tuple(requires))
        return run

    return decorate


def register_group(name: str, description: str, members: tuple[str, ...]) -> None:
    """Names ``members`` (registered tasks) together, e.g. ``principled`` for its five parts."""
    if name in _TASKS:
        raise ValueError(f"group {name!r} has the name of a task")
    missing = [m for m in members if m not in _TASKS]
    if missing:
        raise ValueError(f"group {name!r}: {missing} are not registered tasks")
    _GROUPS[name] = Group(name, description, tuple(members))


def _import_all() -> None:
    for module in TASK_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as error:  # an optional dependency of one family is missing
            log.warning("experiments in %s are unavailable: %s", module, error)


def tasks() -> dict[str, Task]:
    """Every registered task, each once (groups are not in it), after importing the modules."""
    _import_all()
    return dict(_TASKS)


def groups() -> dict[str, Group]:
    """The registered groups of tasks."""
    _import_all()
    return dict(_GROUPS)


def resolve(names: list[str] | tuple[str, ...] = ("all",)) -> dict[str, Task]:
    """The tasks to run for command-line names: ``"all"`` (every task once), task or group names.

    Names may be comma separated; order is kept and a task named twice (directly or through a
    group) runs once.

    Raises:
        ValueError: a name is neither a task nor a group (the message lists both).
    """
    available, named_groups = tasks(), groups()
    wanted = [n.strip() for part in names for n in part.split(",") if n.strip()]
    chosen: dict[str, Task] = {}
    unknown = []
    for name in wanted:
        if name == "all":
            chosen.update({k: v for k, v in available.items() if k not in chosen})
        elif name in named_groups:
            chosen.update({m: available[m] for m in named_groups[name].members if m not in chosen})
        elif name in available:
            chosen.setdefault(name, available[name])
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"unknown task(s) {unknown}; tasks: {', '.join(sorted(available))}; "
            f"groups: {', '.join(sorted(named_groups))}"
        )
    return chosen
