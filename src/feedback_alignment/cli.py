"""The ``feedback-alignment`` command (also ``python -m feedback_alignment``).

Sub-commands:
    demo       BP, DFA and Shallow on the bundled digits, with an accuracy and alignment table.
    reproduce  the papers' task families, BP vs the rules, beside the papers' figures.
    bench      step time and peak memory of each rule against BP (JSON + markdown table).
    data       list and fetch the real data sets (see ``feedback_alignment.data``).

Why every check happens before any work: a command that trains for an hour and then cannot write
its results has lost the hour. So output paths, the data cache, the device and every count are
checked first, in well under a second, and a bad one ends the command with exit code 2 and a
message that names the option, the value and what to do (:class:`UsageError`). Results are then
written as they are produced (``reproduce`` rewrites its report after each task), so an interrupt
or a failing task keeps what was finished.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import math
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from feedback_alignment.cli_options import (  # noqa: F401  (SMALL_MODEL_THREADS: re-exported)
    SMALL_MODEL_THREADS,
    max_threads,
)
from feedback_alignment.cli_options import add_common as _add_common
from feedback_alignment.cli_options import count as _count

log = logging.getLogger(__name__)


class UsageError(Exception):
    """A bad option value found before any work started: reported with exit code 2."""


# ---- argument types: each rejects a bad value with a message naming what is expected ----------


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS says; else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _int_list(minimum: int, distinct: bool = False) -> Callable[[str], tuple[int, ...]]:
    """Comma-separated integers ``>= minimum``; ``distinct``: no value twice (a seed given twice
    would be averaged with itself and shown as a spread)."""

    def parse(text: str) -> tuple[int, ...]:
        parts = [part.strip() for part in text.split(",")]
        if any(not part for part in parts[:-1]) or (len(parts) > 1 and not parts[-1]):
            raise argparse.ArgumentTypeError(f"empty item in {text!r}")
        try:
            values = tuple(int(part) for part in parts if part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated integers, got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one integer")
        low = [v for v in values if v < minimum]
        if low:
            raise argparse.ArgumentTypeError(f"every value must be >= {minimum}, got {low}")
        repeated = sorted({v for v in values if values.count(v) > 1})
        if distinct and repeated:
            raise argparse.ArgumentTypeError(f"each value once, got {repeated} more than once")
        return values

    parse.__name__ = "list"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


# ---- checks run before any work -----------------------------------------------------------------


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def _probe_writable(directory: Path) -> str | None:
    """Why a real probe: ``os.access`` says yes to root on read-only mounts and quota-full disks."""
    try:
        handle, name = tempfile.mkstemp(dir=directory, prefix=".feedback-alignment-probe-")
    except OSError as error:
        return error.strerror or str(error)
    os.close(handle)
    os.unlink(name)
    return None


def _check_creatable_folder(folder: Path, what: str) -> None:
    """``folder`` exists or can be created, and files can be written in it."""
    ancestor = _nearest_existing(folder)
    if not ancestor.is_dir():
        raise UsageError(f"{what}: {ancestor} exists and is not a folder")
    reason = _probe_writable(ancestor)
    if reason is not None:
        raise UsageError(f"{what}: cannot write in {ancestor} ({reason})")


def check_output_file(path: Path, option: str) -> Path:
    """Refuses (:class:`UsageError`) an output file that could not be written; returns it absolute.

    Nothing is created: the parent folders are made only when the results are written.
    """
    path = path.expanduser().absolute()
    what = f"{option} {path}"
    if path.is_dir():
        raise UsageError(f"{what} is a folder; give a file name such as {path / 'results.json'}")
    _check_creatable_folder(path.parent, what)
    if os.path.lexists(path):
        if not path.is_file():
            raise UsageError(f"{what} exists and is not a regular file; give another file name")
        mode = path.stat().st_mode
        # root may write anything: the file's own mode says whether it is meant to be replaced
        if not os.access(path, os.W_OK) or not mode & stat.S_IWUSR:
            raise UsageError(
                f"{what} is read-only (mode {stat.S_IMODE(mode):o}): give another file name, "
                f"or make it writable (chmod u+w {path}) to replace it"
            )
    return path


MIN_FREE_BYTES = 20_000_000
"""The free space ``reproduce`` needs under ``--out`` to start (a task's JSON, tables, plots and
saved runs take a few MB): a disk already full is found before training, not after."""


def check_output_folder(path: Path, option: str) -> Path:
    """Refuses (:class:`UsageError`) an output folder that could not be created or written, or
    whose disk has less than :data:`MIN_FREE_BYTES` free."""
    path = path.expanduser().absolute()
    what = f"{option} {path}"
    if os.path.lexists(path) and not path.is_dir():
        raise UsageError(f"{what} exists and is not a folder")
    _check_creatable_folder(path, what)
    ancestor = _nearest_existing(path)
    try:
        free = shutil.disk_usage(ancestor).free
    except OSError:
        free = None
    if free is not None and free < MIN_FREE_BYTES:
        raise UsageError(
            f"{what}: only {free / 1e6:.0f} MB free on its disk ({ancestor}), less than the "
            f"{MIN_FREE_BYTES / 1e6:.0f} MB a run writes; free some space or choose another --out"
        )
    return path


def _cache_origin() -> str:
    from feedback_alignment.data import ENV_VAR

    if os.environ.get(ENV_VAR):
        return f"${ENV_VAR}"
    return "$XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else "the default location"


def check_data_cache() -> None:
    """Refuses a data cache that cannot hold anything: a file, or a folder that cannot be made.

    An existing folder that is read-only is accepted (a shared, pre-filled cache is a sensible
    set-up); a data set missing from it then fails when it is fetched, with a message.
    """
    from feedback_alignment.data import ENV_VAR, cache_root

    root = cache_root().absolute()
    remedy = f"set {ENV_VAR} to a writable folder"
    if root.is_dir():
        if _probe_writable(root) is not None:
            log.warning("the data cache %s is read-only: only data sets already in it load", root)
        return
    try:
        _check_creatable_folder(root, f"data cache {root} (from {_cache_origin()})")
    except UsageError as error:
        raise UsageError(f"{error}; {remedy}") from None


def check_device(device: str) -> str:
    """Refuses a device this torch build or machine does not have, before any model is built."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device!r} is not a device: use cpu, cuda or cuda:N") from None
    if parsed.type == "cuda":
        if torch.version.cuda is None:
            raise UsageError(
                f"--device {device}: this torch build ({torch.__version__}) has no CUDA support; "
                "use --device cpu, or install a CUDA build of torch"
            )
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: no CUDA device is visible on this machine")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: MPS is not available on this machine")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {device}: the benchmark runs on cpu, cuda or mps")
    return device


def _progress_bars(args: argparse.Namespace) -> bool:
    """Bars belong on a terminal: piped or logged output gets a short line per stage instead."""
    return not args.quiet and sys.stderr.isatty()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- sub-commands -------------------------------------------------------------------------------


def physical_memory() -> int | None:
    """Bytes of memory on this machine (``None`` where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _gigabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:,.0f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:,.0f} MB"


def _cmd_demo(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, "--out") if args.out is not None else None
    from feedback_alignment.experiments import demo

    hidden = ",".join(map(str, args.hidden))
    needed, memory = demo.memory_needed(args.hidden), physical_memory()
    if memory is not None and needed > memory:
        raise UsageError(
            f"--hidden {hidden}: training this MLP needs about {_gigabytes(needed)} of memory, "
            f"more than this machine's {_gigabytes(memory)}; choose smaller widths (the default "
            "is 64,64,64)"
        )

    config = demo.DemoConfig(
        hidden=args.hidden,
        epochs=args.epochs,
        seeds=args.seeds,
        lr=args.lr,
        rules=tuple(args.rules),
    )
    bars = _progress_bars(args)
    if not bars and not args.quiet:
        _say(
            f"demo: {', '.join(config.rules)} x seeds {list(config.seeds)}, {config.epochs} epochs "
            f"on the digits ({_threads_note()})"
        )
    start = time.perf_counter()
    try:
        results, config = demo.run(config, progress=bars)
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "alloc" not in str(error).lower():
            raise
        raise UsageError(
            f"--hidden {hidden}: the model does not fit in the free memory ({error}); choose "
            "smaller widths"
        ) from None
    print(demo.summary_table(results, config))
    if out is not None:
        from feedback_alignment.experiments.results import ResultsWriteError

        try:
            demo.write_json(results, config, out)
        except ResultsWriteError as error:
            _say(f"demo: {error}; the table above is the result, and no file was left behind")
            return 1
        _say(f"wrote {out}")
    if not args.quiet:
        _say(f"demo: done in {time.perf_counter() - start:.1f} s")
    return 0


def _bench_rule(name: str) -> str:
    """``--rules`` takes any spelling of a rule (``sign-dfa``, ``KolenPollack``): its row name."""
    from feedback_alignment.rules import rule_class

    try:
        return rule_class(name).name
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.memory:
        return _cmd_bench_memory(args)
    out = Path("results/benchmark.json") if args.out is None else args.out
    out = check_output_file(out, "--out")
    for suffix in (".md", ".png"):  # written beside the JSON
        check_output_file(out.with_suffix(suffix), "--out (beside it)")
    if args.depths is not None:
        raise UsageError("--depths is an option of bench --memory")
    device = check_device(args.device)
    from feedback_alignment import bench as benchmark

    rules = list(dict.fromkeys(args.rules or benchmark.RULES))
    if "BP" not in rules:
        raise UsageError("--rules must include BP: every ratio is against BP")
    results, machine = benchmark.run(
        list(dict.fromkeys(args.families or benchmark.FAMILIES)),
        rules,
        size=args.size,
        rounds=30 if args.rounds is None else args.rounds,
        warmup=3 if args.warmup is None else args.warmup,
        device=device,
        output=out,
        plot_path=out.with_suffix(".png"),
        progress=None if args.quiet else _say,
        compile=args.compile,
    )
    print(benchmark.to_markdown(results, machine))
    _say(f"wrote {out} and its .md table and .png plot")
    return 0


def _cmd_bench_memory(args: argparse.Namespace) -> int:
    """``bench --memory``: peak activation memory against depth (bench/memory.py)."""
    from feedback_alignment.bench import memory

    given = [
        option
        for option, value in (
            ("--rules", args.rules),
            ("--rounds", args.rounds),
            ("--warmup", args.warmup),
            ("--compile", args.compile),
        )
        if value is not None
    ]
    if given:
        raise UsageError(
            f"bench --memory measures its own arms ({', '.join(memory.ARMS)}) in one step each: "
            f"{', '.join(given)} do not apply"
        )
    families = list(dict.fromkeys(args.families or memory.MODELS))
    other = [f for f in families if f not in memory.MODELS]
    if other:
        raise UsageError(
            f"bench --memory measures the families {', '.join(memory.MODELS)}, not "
            f"{', '.join(other)}"
        )
    out = Path("results/memory.json") if args.out is None else args.out
    out = check_output_file(out, "--out")
    for suffix in (".md", ".png"):
        check_output_file(out.with_suffix(suffix), "--out (beside it)")
    device = check_device(args.device)
    if device.startswith("mps"):
        raise UsageError("bench --memory measures on cpu or cuda")
    payload = memory.run(
        families,
        size=args.size,
        depths=None if args.depths is None else sorted(set(args.depths)),
        device=device,
        output=out,
        plot_path=out.with_suffix(".png"),
        progress=None if args.quiet else _say,
    )
    print(memory.to_markdown(payload))
    _say(f"wrote {out} and its .md table and .png plot")
    return 0


def _task_epilog() -> str:
    from feedback_alignment.experiments.registry import groups, tasks

    available, named_groups = tasks(), groups()
    width = max(map(len, [*available, *named_groups]), default=0)
    lines = ["tasks (--tasks all, the default, runs each one once):"]
    for name, task in available.items():
        lines.append(f"  {name:<{width}}  {task.description}")
    if named_groups:
        lines.append("groups (a name that runs several tasks):")
        for name, group in named_groups.items():
            lines.append(f"  {name:<{width}}  {', '.join(group.members)}")
    return "\n".join(lines)


SECTION_FILE = "REPORT-section.md"
"""Each task's part of ``REPORT.md``, kept in its folder, so a later run into the same ``--out``
adds to the report instead of replacing the earlier tasks' sections."""


PARTIAL_RUNS = "partial-runs"
"""The folder in a task's folder where each finished run is saved as it ends (removed once the
task has written its results): a killed task resumes from it."""


def _write_report(path: Path, quick: bool, sections: Sequence[str], pending: Sequence[str]) -> None:
    done = {p.parent.name: p.read_text() for p in sorted(path.parent.glob(f"*/{SECTION_FILE}"))}
    earlier = [text for name, text in done.items() if text not in sections]
    text = f"# Reproduction report ({'quick' if quick else 'full'} mode)\n\n" + "\n\n".join(
        [*earlier, *sections]
    )
    if pending:
        text += "\n\n" + "\n".join(f"- {line}" for line in pending)
    from feedback_alignment.experiments.results import write_atomic

    write_atomic(path, text + "\n")  # a reader never sees half a report


def _files_written(folder: Path, declared: Sequence[Path], since: float) -> list[Path]:
    """The files a task wrote: those it declared that exist, and any other file in its folder
    modified since ``since`` (a task that forgot to declare a plot still has it named), plus the
    section file the report keeps there. Its saved partial runs are not results and are left out."""
    found = {Path(p) for p in declared if Path(p).is_file()}
    if folder.is_dir():
        for path in folder.rglob("*"):
            inside = path.relative_to(folder).parts
            if PARTIAL_RUNS in inside or not path.is_file():
                continue
            with contextlib.suppress(OSError):  # removed while we look: not ours to name
                if path.stat().st_mtime >= since - 2.0:  # coarse file-system clocks
                    found.add(path)
    found.add(folder / SECTION_FILE)
    return sorted(found, key=lambda p: (p.parent != folder, str(p)))


def _files_markdown(files: Sequence[Path], out_root: Path) -> str:
    """The "Files written" list of a task's section: paths relative to ``--out`` (where REPORT.md
    is), so that they open from the report."""

    def shown(path: Path) -> str:
        try:
            return path.absolute().relative_to(out_root.absolute()).as_posix()
        except ValueError:  # written outside --out (a task's own choice): the whole path
            return str(path)

    lines = [f"- `{shown(path)}`" for path in files]
    return f"Files written (relative to `{out_root}`):\n\n" + "\n".join(lines)


def _keep_section(folder: Path, text: str) -> None:
    from feedback_alignment.experiments.results import write_atomic

    write_atomic(folder / SECTION_FILE, text)


def _finished_section(folder: Path, name: str) -> str | None:
    """The section of a task that finished in ``folder`` (not failed, no partial runs left)."""
    path = folder / SECTION_FILE
    if not path.is_file() or (folder / PARTIAL_RUNS).is_dir():
        return None
    text = path.read_text()
    return None if text.startswith(f"### {name}\n\nFAILED:") else text


def _resume_folder(out: Path | None) -> Path:
    """``--resume``'s folder: ``--out``, or the newest ``results/*`` holding a report."""
    if out is not None:
        return out
    reports = sorted(Path("results").glob("*/REPORT.md"), key=lambda p: p.stat().st_mtime)
    return reports[-1].parent if reports else Path("results") / "<date>"


def _check_resumable(out_root: Path, quick: bool) -> None:
    report = out_root / "REPORT.md"
    if not report.is_file() and not list(out_root.glob(f"*/{PARTIAL_RUNS}")):
        raise UsageError(
            f"--resume: {out_root} holds no interrupted reproduce run (no REPORT.md, no "
            f"{PARTIAL_RUNS}/); give the --out of the interrupted run, or drop --resume"
        )
    if report.is_file():
        first = report.read_text().split("\n", 1)[0]
        mode = "quick" if "(quick mode)" in first else "full" if "(full mode)" in first else None
        if mode is not None and mode != ("quick" if quick else "full"):
            raise UsageError(
                f"--resume: {out_root} holds a {mode}-mode run; "
                + ("add --quick" if mode == "quick" else "drop --quick")
                + " to resume it, or give another --out"
            )


def _run_context(name: str, options: Any) -> dict[str, Any]:
    """What decides a task's numbers beyond its jobs: its name and the tuned values it reads
    (their file's digest), so that saved runs are reused only under the same ones."""
    import hashlib

    from feedback_alignment.experiments import tuning

    path = tuning.tuned_path(name, options.tuned_dir)
    tuned = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return {"task": name, "tuned": tuned if options.tuned else "hand-set"}


def _write_failed(error: OSError, out_root: Path) -> bool:
    """Whether ``error`` is a write into ``out_root`` that failed (full disk, read-only)."""
    from feedback_alignment.experiments.results import ResultsWriteError

    return isinstance(error, ResultsWriteError) or _is_under(error.filename, out_root)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from datetime import date

    if args.tune and args.hand_set:
        raise UsageError("--tune and --hand-set contradict each other: choose one")
    if not args.tune and (args.trials is not None or args.arms):
        raise UsageError("--trials and --arms choose what --tune searches: add --tune")
    if not [n for part in args.tasks for n in part.split(",") if n.strip()]:
        raise UsageError(
            f"--tasks {' '.join(map(repr, args.tasks))} names no task: name one or more (see "
            "reproduce --help), or leave --tasks out to run them all"
        )
    if args.resume:
        out_root = check_output_folder(_resume_folder(args.out), "--out")
        _check_resumable(out_root, args.quick)
    else:
        out_root = check_output_folder(
            args.out if args.out is not None else Path("results") / date.today().isoformat(),
            "--out",
        )
    check_data_cache()
    from feedback_alignment.experiments import results
    from feedback_alignment.experiments.registry import (
        EXTRAS,
        PARALLEL_TASKS,
        RunOptions,
        resolve,
    )

    try:
        available = resolve(args.tasks)
    except ValueError as error:
        raise UsageError(f"{error} (see reproduce --help)") from None
    cores = usable_cpus()
    if args.workers > cores:
        log.warning("--workers %d is more than the %d CPUs here: using %d", args.workers, cores,
                    cores)  # fmt: skip
        args.workers = cores
    if args.workers > 1:
        serial = [name for name in available if name not in PARALLEL_TASKS]
        if serial:
            log.warning("--workers: %s run one at a time (only %s spread their runs)",
                        ", ".join(serial), ", ".join(PARALLEL_TASKS))  # fmt: skip
    unavailable = {name: task.missing() for name, task in available.items() if task.missing()}
    if unavailable:
        needs = "; ".join(f"{n} needs {', '.join(m)}" for n, m in unavailable.items())
        extras = sorted({EXTRAS.get(m, m) for missing in unavailable.values() for m in missing})
        hint = f'pip install -e ".[{",".join(extras)}]"'
        if args.tasks != ["all"]:
            raise UsageError(f"{needs}: install them first ({hint})")
        _say(f"skipping tasks whose packages are missing ({needs}; {hint})")
        available = {n: t for n, t in available.items() if n not in unavailable}
    names = list(available)
    if args.tune:
        from feedback_alignment.experiments import tuning

        if importlib.util.find_spec("optuna") is None:
            raise UsageError(
                '--tune needs Optuna: pip install -e ".[tune]" (without --tune the stored '
                "tuned values are used)"
            )
        untunable = [n for n in names if n not in tuning.tunables()]
        if untunable and args.tasks != ["all"]:
            raise UsageError(
                f"--tune: {', '.join(untunable)} {'has' if len(untunable) == 1 else 'have'} no "
                f"search declared; drop --tune or choose from the tunable tasks: "
                f"{', '.join(sorted(tuning.tunables()))}"
            )
        if args.arms:
            wanted = [a.strip() for a in args.arms.split(",") if a.strip()]
            if not wanted:
                raise UsageError("--arms names no arm; list them, e.g. --arms BP,DFA")
            tunable_names = [n for n in names if n in tuning.tunables()]
            if len(tunable_names) != 1:
                raise UsageError("--arms needs exactly one tunable task in --tasks")
            known = tuning.tunables()[tunable_names[0]].arms
            unknown = [a for a in wanted if a not in known]
            if unknown:
                raise UsageError(f"--arms: unknown {unknown}; {tunable_names[0]} has {list(known)}")
            args.arms = tuple(wanted)
    if not names:
        raise UsageError("no task is left to run (see the tasks skipped above)")
    from feedback_alignment.experiments import run as run_module
    from feedback_alignment.experiments.results import ResultsWriteError

    out_root.mkdir(parents=True, exist_ok=True)
    report = out_root / "REPORT.md"
    sections: list[str] = []
    failed: list[str] = []
    for index, name in enumerate(names, start=1):
        task = available[name]
        folder = out_root / name
        pending = [f"{n}: not run yet" for n in names[index:]]
        earlier = _finished_section(folder, name) if args.resume else None
        if earlier is not None:
            _say(f"{name}: finished earlier in {folder}; kept (--resume)")
            sections.append(earlier)
            continue
        if not args.quiet:
            _say(f"== [{index}/{len(names)}] {name}: {task.description}")
        options = RunOptions(
            out_dir=folder,
            quick=args.quick,
            progress=_progress_bars(args),
            seeds=args.seeds,
            tuned=not args.hand_set,
            workers=args.workers,
        )
        start, started_at = time.perf_counter(), time.time()
        store = run_module.SavedRuns(folder / PARTIAL_RUNS)
        try:
            try:
                with run_module.saved_runs(store.folder) as store:
                    if args.tune and name in tuning.tunables():
                        path = tuning.tune(
                            name, out_dir=options.out_dir, quick=args.quick, trials=args.trials,
                            arms=args.arms or None,
                        )  # fmt: skip
                        options.tuned_dir = path.parent
                        hint = "" if args.quick else (
                            " (copy the file to src/feedback_alignment/experiments/tuned/ to "
                            "make them the default)"
                        )  # fmt: skip
                        _say(f"{name}: tuned values in {path}{hint}")
                    store.context = _run_context(name, options)
                    with results.timed_task():  # after the search: the run's own wall time
                        result = task.run(options)
            except KeyboardInterrupt:
                saved = store.count()
                kept = (
                    f"{saved} finished run(s) of {name} are saved in {store.folder}"
                    if saved
                    else f"no run of {name} had finished"
                )
                with contextlib.suppress(OSError):  # interrupted: say so even if this fails
                    _write_report(report, args.quick, sections,
                                  [f"{name}: interrupted ({kept})", *pending])  # fmt: skip
                _say(
                    f"reproduce interrupted during {name}: {kept}; rerun the same command with "
                    f"--resume (--out {out_root}) to continue from them"
                )
                raise
            except ResultsWriteError:
                raise
            except OSError as error:
                if _write_failed(error, out_root):
                    raise ResultsWriteError(Path(error.filename), error) from error
                raise _TaskFailed(error) from error
            except Exception as error:  # one failing task must not lose the others' results
                raise _TaskFailed(error) from error
            written = _files_written(folder, result.files, started_at)
            section = result.markdown + "\n\n" + _files_markdown(written, out_root)
            sections.append(section)
            _keep_section(folder, section)
            shutil.rmtree(store.folder, ignore_errors=True)  # the results are written
            print(section + "\n", flush=True)
            if store.resumed:
                _say(f"{name}: resumed {store.resumed} of {store.total} runs from {store.folder}")
            if not args.quiet:
                _say(f"{name}: done in {time.perf_counter() - start:.0f} s")
        except _TaskFailed as failure:
            error = failure.error
            if args.verbose:
                log.error("task %s failed", name, exc_info=error)
            failed.append(name)
            section = f"### {name}\n\nFAILED: {type(error).__name__}: {error}"
            written = _files_written(folder, [], started_at)
            sections.append(section + "\n\n" + _files_markdown(written, out_root))
            try:
                _keep_section(folder, sections[-1])
            except ResultsWriteError as write_error:
                return _stopped(write_error, out_root, store)
            saved = f"; its {store.count()} finished run(s) are kept" if store.count() else ""
            _say(f"{name}: FAILED ({type(error).__name__}: {error}){saved}")
        except ResultsWriteError as error:
            return _stopped(error, out_root, store)
        try:
            _write_report(report, args.quick, sections, pending)
        except ResultsWriteError as error:
            return _stopped(error, out_root, store)
    _say(f"wrote {report}")
    if failed:
        _say(f"failed task(s): {', '.join(failed)} (rerun with -v for the traceback)")
        return 1
    return 0


class _TaskFailed(Exception):
    """A task raised: recorded in its section, and the next task runs."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def _stopped(error: OSError, out_root: Path, store: Any) -> int:
    """Says in one sentence which write failed and where the finished results are; exit 1."""
    kept = f", the finished runs of the task in {store.folder}" if store.count() else ""
    _say(
        f"reproduce stopped: {error}; the finished results are in {out_root}{kept} and no file "
        "was left half-written: free some space (or make the folder writable) and rerun with "
        "--resume to continue"
    )
    return 1


def _cmd_render(args: argparse.Namespace) -> int:
    from feedback_alignment.experiments import render

    return render.main(
        [*map(str, args.docs), "--results", str(args.results), *(["--check"] if args.check else [])]
    )


# ---- the parser ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog may be computed only when help is shown.

    Why: listing the reproduce tasks imports every experiment module, which takes seconds; a plain
    ``demo`` should not pay for it.
    """

    def __init__(self, *args: Any, epilog_factory: Callable[[], str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._epilog_factory = epilog_factory

    def format_help(self) -> str:
        if self._epilog_factory is not None:
            self.epilog = self._epilog_factory()
        return super().format_help()


def build_parser() -> argparse.ArgumentParser:
    from feedback_alignment import __version__
    from feedback_alignment.experiments.registry import PARALLEL_TASKS, TUNED_TASKS

    parser = _Parser(
        prog="feedback-alignment",
        description="Train PyTorch models with direct feedback alignment and its relatives.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_common(parser, top=True)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    demo = commands.add_parser(
        "demo",
        help="BP vs DFA vs Shallow on the bundled digits (seconds)",
        description="BP, DFA and Shallow on scikit-learn's digits: accuracy and alignment table.",
    )
    _add_common(demo, top=False)
    demo.add_argument("--epochs", type=_count(1), default=30, help="training epochs (>= 1)")
    demo.add_argument(
        "--hidden", type=_int_list(1), default=(64, 64, 64), help="hidden widths, e.g. 64,64,64"
    )
    demo.add_argument(
        "--seeds", type=_int_list(0, distinct=True), default=(0, 1, 2), help="e.g. 0,1,2"
    )
    demo.add_argument(
        "--lr", type=_positive_float, default=1e-3, help="Adam learning rate, every rule"
    )
    demo.add_argument(
        "--rules", nargs="+", default=["BP", "DFA", "Shallow"], choices=["BP", "DFA", "Shallow"]
    )
    demo.add_argument("--out", type=Path, default=None, help="also write the runs as JSON")
    demo.add_argument("-q", "--quiet", action="store_true", help="print only the table")
    demo.set_defaults(func=_cmd_demo)

    from feedback_alignment.bench import DIRECT_RULES, FAMILIES, RULES, SIZES

    bench = commands.add_parser(
        "bench",
        help="step time and peak memory, each rule vs BP and vs a hand-written floor",
        description="Step time and peak memory of each rule against BP on the six model "
        "families, in interleaved rounds, with paired bootstrap intervals; the direct rules "
        "also against a hand-written floor (the same cut and projection without the library). "
        "With --memory: peak activation memory of one step against depth (BP, BP with "
        "activation checkpointing, DFA, DRTP, forward-time DRTP) on a residual MLP and a "
        "Transformer. Writes JSON, a markdown table (.md) and a plot (.png). See "
        "docs/BENCHMARKS.md.",
    )
    _add_common(bench, top=False)
    bench.add_argument(
        "--memory",
        action="store_true",
        help="measure peak activation memory against depth instead of step time "
        "(families mlp and transformer; default --out results/memory.json)",
    )
    bench.add_argument(
        "--families",
        nargs="+",
        default=None,
        choices=list(FAMILIES),
        metavar="FAMILY",
        help=f"model families, from: {', '.join(FAMILIES)} (default: all; convnets is LeNet "
        "and ResNet-20; with --memory: mlp and transformer)",
    )
    bench.add_argument(
        "--rules",
        nargs="+",
        type=_bench_rule,
        default=None,
        choices=list(RULES),
        metavar="RULE",
        help=f"from: {', '.join(RULES)} (default: all; BP is required; "
        f"{', '.join(DIRECT_RULES)} also get a floor row)",
    )
    bench.add_argument(
        "--size",
        default="full",
        choices=list(SIZES),
        help="full: realistic CPU sizes (minutes per family); tiny: a smoke test (seconds)",
    )
    bench.add_argument(
        "--depths",
        nargs="+",
        type=_count(1),
        default=None,
        metavar="N",
        help="with --memory: numbers of blocks (default 4 8 16 32 64; 2 4 8 with --size tiny)",
    )
    bench.add_argument(
        "--rounds",
        type=_count(2),
        default=None,
        help="interleaved timed steps per variant (>= 2; default 30)",
    )
    bench.add_argument(
        "--warmup",
        type=_count(0),
        default=None,
        help="untimed steps per variant after its first (>= 0; default 3)",
    )
    bench.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    bench.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON output path; the .md table and .png plot go beside it (default: "
        "results/benchmark.json, with --memory results/memory.json)",
    )
    bench.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        default=None,
        metavar="BACKEND",
        help="also time every BP and rule row under torch.compile (BACKEND, default inductor, "
        "torch's default), with its ratio to compiled BP; compiling adds seconds to minutes "
        "per row",
    )
    bench.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    bench.set_defaults(func=_cmd_bench)

    reproduce = commands.add_parser(
        "reproduce",
        help="run the papers' task families side by side with the papers' figures",
        description="Run the papers' task families (BP vs the rules) and write a report.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog_factory=_task_epilog,
    )
    _add_common(reproduce, top=False)
    reproduce.add_argument(
        "--tasks",
        nargs="+",
        default=["all"],
        help="task or group names, comma or space separated (listed below); 'all' (the default) "
        "runs every task once",
    )
    reproduce.add_argument("--quick", action="store_true", help="CPU-minutes mode")
    reproduce.add_argument(
        "--seeds", type=_int_list(0, distinct=True), default=(0,), help="e.g. 0,1,2"
    )
    reproduce.add_argument(
        "--workers",
        type=_count(1),
        default=1,
        help="processes to spread a task's runs (rules x seeds) over, each on --threads "
        f"threads; used by {', '.join(PARALLEL_TASKS)} (default 1; e.g. 2 with --threads 1 on "
        "2 cores; at most the CPU count; a --tune search runs in one process)",
    )
    reproduce.add_argument("--out", type=Path, default=None, help="folder, default results/<date>")
    reproduce.add_argument(
        "--tune",
        action="store_true",
        help="first search each rule's hyperparameters on validation data (Optuna, the tune "
        "extra; resumable in <out>/<task>/tuned/), then run with them; tasks with a search: "
        f"{', '.join(TUNED_TASKS)}",
    )
    reproduce.add_argument(
        "--arms",
        default="",
        help="with --tune and one task: search only these arms, e.g. gcn/BP,gcn/DFA (default all)",
    )
    reproduce.add_argument(
        "--trials", type=_count(1), default=None, help="trials per rule for --tune (task default)"
    )
    reproduce.add_argument(
        "--hand-set",
        action="store_true",
        help="use the hand-set hyperparameters instead of the stored tuned ones",
    )
    reproduce.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out (default: the newest results/* folder): keep "
        "the tasks it finished, and resume the interrupted task from its saved runs (a rerun "
        f"into the same --out resumes those anyway: each finished run is kept in "
        f"<task>/{PARTIAL_RUNS}/ until the task has written its results)",
    )
    reproduce.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    reproduce.set_defaults(func=_cmd_reproduce)

    render = commands.add_parser(
        "render",
        help="re-render the docs' result tables from docs/results/*.json",
        description="Replace each table between <!-- results: NAME --> markers in the docs by the "
        "rendering of docs/results/NAME.json (a test checks that they agree).",
    )
    _add_common(render, top=False)
    render.add_argument(
        "docs", nargs="*", type=Path, default=[Path("docs/REPRODUCTION.md"), Path("README.md")]
    )
    render.add_argument("--results", type=Path, default=Path("docs/results"))
    render.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a table differs"
    )
    render.set_defaults(func=_cmd_render)

    from feedback_alignment.data import cli as data_cli

    data_cli.add_parser(commands)
    return parser


def _default_threads(args: argparse.Namespace) -> int | None:
    if args.threads is not None:
        return args.threads
    if args.command == "demo" or (args.command == "reproduce" and args.quick):
        return SMALL_MODEL_THREADS
    return None


def _threads_note() -> str:
    import torch

    return f"{torch.get_num_threads()} torch thread(s)"


def _is_under(path: str | os.PathLike | None, root: Path) -> bool:
    if path is None:
        return False
    try:
        return Path(path).absolute().is_relative_to(root.absolute())
    except (TypeError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns its exit code (2: a usage error, found before any work)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse's own errors (exit 2) and --help (exit 0)
        return int(exit_.code or 0)
    level = logging.DEBUG if args.verbose else logging.INFO
    if getattr(args, "quiet", False) and not args.verbose:
        level = logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    threads = _default_threads(args)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        if args.command == "data" and getattr(args, "data_command", None) == "fetch":
            check_data_cache()
        return int(args.func(args) or 0)
    except UsageError as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `| head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as error:
        from feedback_alignment.data import ENV_VAR, cache_root
        from feedback_alignment.experiments.results import ResultsWriteError

        if isinstance(error, ResultsWriteError) and not args.verbose:  # names file and reason
            print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
            return 1
        if args.verbose or not _is_under(error.filename, cache_root()):
            raise
        print(
            f"{parser.prog} {args.command}: error: the data cache {cache_root()} failed: {error}; "
            f"set {ENV_VAR} to a writable folder",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
