"""Rebuild a task's table from the ``results.json`` its run wrote, without training.

Why: a report is a function of the run's records and settings, not of the objects that happened
to be in memory at the end of the run. Reading them back from the file (the shapes are the task's
``*_schema.py``) lets newer table code re-render an old run, and lets a test hold the table to
being a function of the file. The principled group has its own (``principled.rerender``); this
module covers the tasks whose table reads only their records and config: ``nerf``,
``nerf-authors``, ``transformer`` and ``recommenders``.

The file is untrusted input: one whose digest no longer matches its content (edited after its
run wrote it) is refused, as ``render`` refuses it; one written before files were sealed is read.

What the file cannot give back exactly: JSON has no NaN, so a float field written as ``null``
reads back as NaN (a field typed ``float | None`` keeps ``None``), and tuples read back as lists
inside records (the configs get their tuples back through :func:`.presets.apply`).

Usage::

    python -m feedback_alignment.experiments.rerender results/2026-12-06/nerf-authors

writes the table (``<name>.json`` and ``.md``) into that folder again, beside ``results.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from feedback_alignment.experiments import presets
from feedback_alignment.experiments.results import Table, write_table
from feedback_alignment.experiments.sealed import refuse_tampered


def records(rows: Sequence[dict[str, Any]], cls: type) -> list[Any]:
    """``cls`` records from a results file's rows: a ``null`` in a field typed ``float`` is NaN."""
    floats = {f.name for f in dataclasses.fields(cls) if f.type in ("float", float)}
    names = {f.name for f in dataclasses.fields(cls)}
    out = []
    for row in rows:
        unknown = sorted(set(row) - names)
        if unknown:
            raise ValueError(f"a run has fields {unknown} that {cls.__name__} does not know")
        values = {k: (math.nan if k in floats and v is None else v) for k, v in row.items()}
        out.append(cls(**values))
    return out


def settings(saved: dict[str, Any], base: Any) -> Any:
    """The run's config: ``base`` (the config class's defaults) with every saved field (a path
    was written as a string: a field typed ``Path`` gets its ``Path`` back)."""
    paths = {f.name for f in dataclasses.fields(base) if "Path" in str(f.type)}
    values = {k: (Path(v) if k in paths and isinstance(v, str) else v) for k, v in saved.items()}
    return presets.apply(base, values, "results.json config")


def _nerf(payload: dict[str, Any]) -> Table:
    from feedback_alignment.experiments.nerf_report import summary
    from feedback_alignment.experiments.nerf_schema import NeRFResult, NeRFTaskConfig

    config = settings(payload["config"], NeRFTaskConfig())
    return summary(records(payload["runs"], NeRFResult), config, payload["quick"])


def _transformer(payload: dict[str, Any]) -> Table:
    from feedback_alignment.experiments.language_report import summary
    from feedback_alignment.experiments.language_schema import LanguageConfig, LanguageResult

    config = settings(payload["config"], LanguageConfig())
    return summary(records(payload["runs"], LanguageResult), config, payload["quick"])


def _recommenders(payload: dict[str, Any]) -> Table:
    from feedback_alignment.experiments.recommenders import aggregate
    from feedback_alignment.experiments.recommenders_report import summary
    from feedback_alignment.experiments.recommenders_schema import RecConfig, RecRun

    config = settings(payload["config"], RecConfig())
    return summary(aggregate(records(payload["runs"], RecRun), config), payload["quick"])


TASKS: dict[str, Callable[[dict[str, Any]], Table]] = {
    "nerf": _nerf,
    "nerf-authors": _nerf,
    "transformer": _transformer,
    "recommenders": _recommenders,
}
"""Task name (as ``results.json`` records it) -> the table from its payload."""


def table(results_file: Path) -> Table:
    """The table of the run that wrote ``results_file``.

    Raises:
        ValueError: the file is not a results file, its task cannot be re-rendered here (the
            message lists those that can), or it was edited after its run wrote it
            (:class:`~.sealed.RenderError`, naming the repair).
    """
    try:
        payload = json.loads(results_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{results_file}: not a readable results file ({error})") from None
    task = payload.get("task") if isinstance(payload, dict) else None
    if task not in TASKS:
        raise ValueError(
            f"{results_file}: task {task!r} cannot be re-rendered from its results; these can: "
            f"{sorted(TASKS)} (principled parts: principled.rerender)"
        )
    refuse_tampered(results_file, task, payload, f"feedback-alignment reproduce --tasks {task}")
    return TASKS[task](payload)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a task's folder of a run (holds results.json)")
    args = parser.parse_args(argv)
    results_file = args.folder / "results.json"
    try:
        rebuilt = table(results_file)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    seeds = json.loads(results_file.read_text(encoding="utf-8"))["provenance"]["seeds"]
    for path in write_table(args.folder, rebuilt, seeds):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
