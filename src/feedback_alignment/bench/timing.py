"""Timing and memory of each variant of a workload, in interleaved rounds (see
:mod:`feedback_alignment.bench`)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from feedback_alignment.bench.floor import FLOOR_SIGNALS, _Floor
from feedback_alignment.bench.results import (
    COMPILED,
    FLOOR_SUFFIX,
    Row,
    WorkloadResult,
    machine_description,
    plot,
    write_results,
)
from feedback_alignment.bench.workloads import FAMILIES, Workload, workloads
from feedback_alignment.points import PlacementError
from feedback_alignment.rules import (
    BP,
    DFA,
    DKP,
    FA,
    FDFA,
    DirectFeedback,
    KolenPollack,
    Rule,
    Shallow,
    SignDFA,
    UnsupportedLayerError,
    brSF,
    frSF,
    uSF,
)

RULES: dict[str, type[Rule]] = {
    cls.name: cls
    for cls in (BP, DFA, SignDFA, Shallow, DKP, FDFA, FA, uSF, frSF, brSF, KolenPollack)
}
"""The rules benchmarked, by their row name (``rule.name``, as in the committed tables); each is
built with ``seed=0``. The command line also takes any spelling of
:func:`feedback_alignment.rules.registry.canonical_key`."""

PLACED_RULES = tuple(name for name, cls in RULES.items() if issubclass(cls, DirectFeedback))
"""Rules that get feedback points and a placement column."""

DIRECT_RULES = tuple(name for name in PLACED_RULES if name in FLOOR_SIGNALS)
"""Rules that also get a hand-written floor (DKP and FDFA, whose feedback learns, have none: their
rows are compared with BP and with DFA's)."""

LR, WEIGHT_DECAY = 1e-3, 1e-4


def _step(
    model: nn.Module,
    inputs: tuple[Any, ...],
    target: torch.Tensor,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor],
    backend: str | None = None,
) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    forward = model if backend is None else torch.compile(model, backend=backend)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(forward(*inputs), target).backward()
        optimizer.step()

    return step


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _variants(
    workload: Workload,
    rules: Sequence[str],
    device: torch.device,
    seed: int,
    compile: str | None = None,
) -> tuple[list[Row], dict[int, Callable[[], None]]]:
    """Every row of a workload and the step of each runnable one (keyed by row index).

    ``compile``: a ``torch.compile`` backend (``"inductor"``, the default one); every BP and
    library row then gets a twin (kind ``"compiled"``) whose model is
    ``torch.compile(model, backend=compile)``; the optimizer steps the same parameters.
    Compilation happens at the twin's first (untimed) step."""
    generator = torch.Generator().manual_seed(seed)
    inputs, target = workload.batch(generator)
    inputs = tuple(_to(v, device) for v in inputs)
    target = target.to(device)

    def fresh() -> nn.Module:
        torch.manual_seed(seed)  # every variant starts from the same weights
        return workload.build().to(device).train()

    def converted(name: str, points: list[str]) -> tuple[nn.Module, str]:
        model = fresh()
        rule = RULES[name](seed=0)
        note = ""
        if name in PLACED_RULES:
            # a learned matrix (DKP, FDFA) is made before the optimiser, from the batch itself
            example = inputs if getattr(rule, "learns_feedback", False) else None
            rule.apply(model, points=points, error_at=workload.error_at, example_input=example)
        elif workload.layerwise_exclude and name != "BP":
            rule.apply(model, exclude=workload.layerwise_exclude)
            note = f"exclude={list(workload.layerwise_exclude)}"
        else:
            rule.apply(model)
        return model, note

    rows: list[Row] = []
    steps: dict[int, Callable[[], None]] = {}
    for name in rules:
        placements = workload.placements if name in PLACED_RULES else {"": []}
        for placement, points in placements.items():
            kind = "bp" if name == "BP" else "library"
            row = Row(name, placement, kind)
            try:
                model, row.note = converted(name, points)
            except UnsupportedLayerError as error:
                row.status, row.note = "unsupported", _unsupported_note(error)
                rows.append(row)
                continue
            except (PlacementError, ValueError) as error:  # a refusal of DKP/FDFA's placement
                if name in DIRECT_RULES or name == "BP":
                    raise
                first = str(error).splitlines()[0]
                row.status, row.note = "unsupported", f"unsupported: {first[:120]}"
                rows.append(row)
                continue
            steps[len(rows)] = _step(model, inputs, target, workload.loss)
            rows.append(row)
            if compile and getattr(RULES[name], "forward_gradient", False):
                rows.append(Row(
                    name, placement, "compiled", status="unsupported",
                    note="unsupported: compiled blocks have no forward-mode derivative (jvp)",
                ))  # fmt: skip
            elif compile:
                model, note = converted(name, points)
                label = COMPILED if compile == "inductor" else f"{COMPILED}, {compile}"
                twin = Row(name, placement, "compiled", note=", ".join(filter(None, [note, label])))
                steps[len(rows)] = _step(model, inputs, target, workload.loss, backend=compile)
                rows.append(twin)
            if name in DIRECT_RULES:
                model = fresh()
                _Floor(model, points, workload.error_at, FLOOR_SIGNALS[name])
                steps[len(rows)] = _step(model, inputs, target, workload.loss)
                rows.append(Row(name + FLOOR_SUFFIX, placement, "floor"))
    return rows, steps


def _unsupported_note(error: UnsupportedLayerError) -> str:
    """``"unsupported: 'conv1' (GCNConv) and 3 more"`` from the rule's refusal message."""
    problems = [line.strip()[2:] for line in str(error).splitlines()[1:]]
    if not problems:
        return f"unsupported: {error}"
    first = problems[0].split(" holds", 1)[0].split(" is ", 1)[0]
    more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
    return f"unsupported: {first}{more}"


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """The profiler's C++ side prints a line at each start and stop straight to file descriptor
    2 (``USDT: ... profiler_start``); a piped log would be half of them. Python's ``sys.stderr``
    is unaffected; the descriptor is restored even if the block raises."""
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (an embedded interpreter): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# ---- measurement --------------------------------------------------------------------------------


def peak_step_memory(step: Callable[[], None], device: torch.device) -> float:
    """Peak bytes (MiB) held by tensors allocated during one call of ``step``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with (
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def ratio_interval(
    numerator: np.ndarray,
    denominator: np.ndarray,
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """``median(numerator) / median(denominator)`` with a paired bootstrap interval.

    Round ``r`` of both arrays was measured in the same round, so rounds are resampled together:
    the interval reflects the noise that the interleaving does not remove.
    """
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(numerator), size=(resamples, len(numerator)))
    ratios = np.median(numerator[index], axis=1) / np.median(denominator[index], axis=1)
    tail = (1.0 - level) / 2
    return {
        "ratio": float(np.median(numerator) / np.median(denominator)),
        "low": float(np.quantile(ratios, tail)),
        "high": float(np.quantile(ratios, 1.0 - tail)),
    }


def run_workload(
    workload: Workload,
    rules: Sequence[str] = tuple(RULES),
    *,
    rounds: int = 30,
    warmup: int = 3,
    device: str = "cpu",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    compile: str | None = None,
) -> WorkloadResult:
    """Times and measures every variant of one workload (see the module doc); ``compile`` adds a
    ``torch.compile``d twin of every BP and library row (see :func:`_variants`)."""
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2 for an interquartile range, got {rounds}")
    if "BP" not in rules:
        raise ValueError("rules must include BP: every ratio is against BP")
    start = time.perf_counter()
    dev = torch.device(device)
    rows, steps = _variants(workload, rules, dev, seed, compile)
    order = list(steps)
    if progress is not None:
        progress(f"bench {workload.name}: {len(order)} variants x {rounds} rounds")
    with warnings.catch_warnings():
        # a point narrower than the output (tiny sizes) warns about alignment, not about speed
        warnings.filterwarnings("ignore", message="feedback points .* are narrower")
        for i in list(order):  # the first forward fixes each rule's feedback layout
            if rows[i].kind != "compiled":
                steps[i]()
                continue
            begin = time.perf_counter()
            try:
                steps[i]()  # compiles
            except Exception as error:  # recorded in the table: one row failing is not fatal
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                rows[i].status = "unsupported"
                rows[i].note = f"torch.compile failed: {type(error).__name__}: {first[:120]}"
                order.remove(i)
                continue
            rows[i].note += f", {time.perf_counter() - begin:.0f} s to compile"
    for _ in range(warmup):
        for i in order:
            steps[i]()
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    times = {i: np.empty(rounds) for i in order}
    for r in range(rounds):
        shift = r % len(order)
        for i in order[shift:] + order[:shift]:
            sync()
            begin = time.perf_counter()
            steps[i]()
            sync()
            times[i][r] = (time.perf_counter() - begin) * 1e3
    for i in order:
        q25, median, q75 = np.quantile(times[i], [0.25, 0.5, 0.75])
        rows[i].median_ms, rows[i].q25_ms, rows[i].q75_ms = float(median), float(q25), float(q75)
        rows[i].peak_mib = peak_step_memory(steps[i], dev)
    bp = next(i for i, row in enumerate(rows) if row.kind == "bp")
    compiled_bp = next(
        (i for i, row in enumerate(rows) if row.kind == "compiled" and row.rule == "BP"), None
    )
    for i in order:
        rows[i].time_vs_bp = ratio_interval(times[i], times[bp], seed=seed)
        if rows[i].kind == "compiled" and compiled_bp in times:
            rows[i].time_vs_compiled_bp = ratio_interval(times[i], times[compiled_bp], seed=seed)
        if rows[bp].peak_mib > 0:
            rows[i].memory_vs_bp = rows[i].peak_mib / rows[bp].peak_mib
        if rows[i].kind == "library" and i + 1 in times and rows[i + 1].kind == "floor":
            rows[i].time_vs_floor = ratio_interval(times[i], times[i + 1], seed=seed)
    result = WorkloadResult(
        workload.family, workload.name, workload.description, workload.samples, rounds, rows
    )
    result.seconds = time.perf_counter() - start
    if progress is not None:
        progress(f"bench {workload.name}: done in {result.seconds:.0f} s")
    return result


RECOMPILE_LIMIT = 256
"""TorchDynamo's per-function recompile limit while compiled twins run (default 8)."""


def _allow_recompiles() -> None:
    """Every compiled twin of one process shares TorchDynamo's cache per function: the twins of
    one model class (BP, DFA, FA, ...) and its blocks, each a variant of the same code, would
    exhaust the default limit of 8 recompilations and run the later twins eagerly without notice.
    The limit is raised so that each twin is timed compiled, as it would be alone in a process."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    config.accumulated_recompile_limit = max(
        config.accumulated_recompile_limit, 8 * RECOMPILE_LIMIT
    )


def run(
    families: Sequence[str] = FAMILIES,
    rules: Sequence[str] = tuple(RULES),
    *,
    size: str = "full",
    rounds: int = 30,
    warmup: int = 3,
    device: str = "cpu",
    seed: int = 0,
    output: Path | None = None,
    plot_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
    compile: str | None = None,
) -> tuple[list[WorkloadResult], dict[str, Any]]:
    """Runs every workload of ``families``; rewrites ``output`` after each, so none is lost."""
    unknown = [r for r in rules if r not in RULES]
    if unknown:
        raise ValueError(f"unknown rules {unknown}; choose from {list(RULES)}")
    machine = machine_description(device)
    settings = {
        "families": list(families),
        "rules": list(rules),
        "size": size,
        "rounds": rounds,
        "warmup": warmup,
        "seed": seed,
        "step": f"zero_grad, forward, loss, backward, SGD(lr={LR}, weight_decay={WEIGHT_DECAY})",
        "interval": "95% paired bootstrap over rounds, 2000 resamples",
    }
    if compile:
        settings["compile"] = f"torch.compile(model, backend={compile!r}), a twin per BP/rule row"
        _allow_recompiles()
    results: list[WorkloadResult] = []
    for workload in workloads(families, size):
        results.append(
            run_workload(
                workload,
                rules,
                rounds=rounds,
                warmup=warmup,
                device=device,
                seed=seed,
                progress=progress,
                compile=compile,
            )
        )
        if output is not None:
            write_results(results, machine, settings, output)
    if plot_path is not None and results:
        plot(results, plot_path)
    return results, machine
