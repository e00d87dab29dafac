"""The benchmark's rows and their output: markdown table, plot, JSON (see
:mod:`feedback_alignment.bench`)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from feedback_alignment.provenance import machine, sanitize

FLOOR_SUFFIX = " floor"


# ---- variants and steps -------------------------------------------------------------------------


@dataclass
class Row:
    """One variant's measurements. Ratios are ``{"ratio", "low", "high"}`` (95% bootstrap CI)."""

    rule: str
    placement: str
    kind: str  # "bp", "library", "floor" or "compiled" (a bp or library row under torch.compile)
    status: str = "ok"  # or "unsupported" (with the reason in note)
    note: str = ""
    median_ms: float = math.nan
    q25_ms: float = math.nan
    q75_ms: float = math.nan
    peak_mib: float = math.nan
    time_vs_bp: dict[str, float] | None = None
    time_vs_floor: dict[str, float] | None = None
    memory_vs_bp: float = math.nan
    time_vs_compiled_bp: dict[str, float] | None = None  # compiled rows: against compiled BP


@dataclass
class WorkloadResult:
    family: str
    name: str
    description: str
    samples: int
    rounds: int
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0


COMPILED = "compiled"
"""The note of a compiled twin row (``torch.compile`` with the default backend)."""


machine_description = machine
"""The machine a benchmark ran on (:func:`feedback_alignment.provenance.machine`)."""


# ---- output -------------------------------------------------------------------------------------


def _ratio_text(ratio: dict[str, float] | None) -> str:
    if ratio is None:
        return ""
    return f"{ratio['ratio']:.2f}x [{ratio['low']:.2f}, {ratio['high']:.2f}]"


def to_markdown(results: Sequence[WorkloadResult], machine: dict[str, Any]) -> str:
    """One table per workload: medians, IQR, ratios with their 95% intervals, peak memory."""
    load = machine.get("load_average")
    lines = [
        f"Machine: {machine['processor']}, {machine['cpus']} CPUs, {machine['threads']} torch "
        f"threads, torch {machine['torch']}, device {machine['device']}"
        f"{', ' + str(machine['gpu']) if 'gpu' in machine else ''}; {machine['date']}"
        f"{f'; load average {load[0]:.2f} at the start' if load else ''}.",
    ]
    for result in results:
        compiled = any(row.kind == "compiled" for row in result.rows)
        extra = " vs compiled BP [95% CI] |" if compiled else ""
        lines += [
            "",
            f"**{result.name}** ({result.family}): {result.description}; {result.rounds} rounds.",
            "",
            "| rule | points | median step (ms) | IQR (ms) | vs BP [95% CI] | vs floor [95% CI] "
            f"| peak MiB | memory vs BP |{extra}",
            "|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if compiled else ""),
        ]
        for row in result.rows:
            if row.status != "ok":
                blank = " | | | | | |" + (" |" if compiled else "")
                lines.append(f"| {row.rule} | {row.placement} | {row.note}{blank}")
                continue
            rule = f"{row.rule} ({row.note})" if row.note else row.rule
            lines.append(
                f"| {rule} | {row.placement} | {row.median_ms:.2f} | "
                f"{row.q25_ms:.2f}-{row.q75_ms:.2f} | {_ratio_text(row.time_vs_bp)} | "
                f"{_ratio_text(row.time_vs_floor)} | {row.peak_mib:.1f} | {row.memory_vs_bp:.2f}x |"
                + (f" {_ratio_text(row.time_vs_compiled_bp)} |" if compiled else "")
            )
    return "\n".join(lines)


def plot(results: Sequence[WorkloadResult], path: Path) -> None:
    """Step time vs BP per workload (bars, 95% intervals); floors hatched beside their rule."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(results), 1, figsize=(10, 2.6 * len(results)), squeeze=False, constrained_layout=True
    )
    for ax, result in zip(axes[:, 0], results, strict=True):
        rows = [r for r in result.rows if r.status == "ok" and r.time_vs_bp is not None]
        labels = [f"{r.rule} {r.placement}".strip() for r in rows]
        ratios = [r.time_vs_bp["ratio"] for r in rows]
        errors = [
            [r.time_vs_bp["ratio"] - r.time_vs_bp["low"] for r in rows],
            [r.time_vs_bp["high"] - r.time_vs_bp["ratio"] for r in rows],
        ]
        palette = {"bp": "0.6", "library": "C0", "floor": "C1", "compiled": "C2"}
        colours = [palette.get(r.kind, "C0") for r in rows]
        bars = ax.bar(range(len(rows)), ratios, yerr=errors, color=colours, capsize=2)
        for bar, row in zip(bars, rows, strict=True):
            if row.kind == "floor":
                bar.set_hatch("//")
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_xticks(range(len(rows)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("step time / BP")
        ax.set_title(f"{result.name}: {result.description}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(
    results: Sequence[WorkloadResult], machine: dict[str, Any], settings: dict[str, Any], out: Path
) -> None:
    """Writes ``out`` (JSON, NaN as null) atomically, and the markdown table beside it (``.md``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine,
        "settings": settings,
        "workloads": [asdict(r) for r in results],
    }
    for path, text in (
        (out, json.dumps(sanitize(payload), indent=2)),
        (out.with_suffix(".md"), to_markdown(results, machine) + "\n"),
    ):
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_text(text)
        os.replace(temporary, path)


def load_results(path: Path) -> tuple[list[WorkloadResult], dict[str, Any]]:
    """Reads a JSON written by :func:`write_results` back (``null`` is NaN again): the committed
    results under docs/ are re-rendered from it (``to_markdown(*load_results(path))``)."""
    payload = json.loads(Path(path).read_text())

    def number(value: Any) -> float:
        return math.nan if value is None else value

    results = []
    for workload in payload["workloads"]:
        rows = [
            Row(
                **{
                    k: (
                        number(v)
                        if k in ("median_ms", "q25_ms", "q75_ms", "peak_mib", "memory_vs_bp")
                        else v
                    )
                    for k, v in row.items()
                }
            )
            for row in workload["rows"]
        ]
        results.append(WorkloadResult(**{**workload, "rows": rows}))
    return results, payload["machine"]
