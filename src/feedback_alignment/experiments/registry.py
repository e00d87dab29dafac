"""The task families that ``feedback-alignment reproduce`` runs, in one registry.

A task is a function ``run(options) -> TaskReport``: it trains its models (BP and the rules of its
paper), writes ``results.json`` and any plots into ``options.out_dir``, and returns a markdown
section that puts our numbers beside the paper's. Each experiment module registers its tasks with
:func:`register_task`; the CLI imports the modules listed in :data:`TASK_MODULES`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

TASK_MODULES: tuple[str, ...] = (
    "feedback_alignment.experiments.quick_digits",
    "feedback_alignment.experiments.convnets",
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
        progress: show progress bars.
        seeds: seeds to average over (a task may use fewer in quick mode).
    """

    out_dir: Path
    quick: bool = False
    progress: bool = True
    seeds: tuple[int, ...] = (0,)


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


_TASKS: dict[str, Task] = {}


def register_task(name: str, description: str) -> Callable:
    """Decorator: ``@register_task("convnets", "...")`` on a ``run(options)`` function."""

    def decorate(run: Callable[[RunOptions], TaskReport]) -> Callable[[RunOptions], TaskReport]:
        if name in _TASKS and _TASKS[name].run is not run:
            raise ValueError(f"task {name!r} is registered twice")
        _TASKS[name] = Task(name, description, run)
        return run

    return decorate


def tasks() -> dict[str, Task]:
    """Every registered task, after importing the experiment modules."""
    for module in TASK_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as error:  # an optional dependency of one family is missing
            log.warning("experiments in %s are unavailable: %s", module, error)
    return dict(_TASKS)
