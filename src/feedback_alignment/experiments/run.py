"""The one training loop of the experiments, the rule factory, and progress reporting.

A task supplies what is specific to it (its batches, its loss, its evaluation, its learning-rate
schedule) and :func:`fit` runs the plain PyTorch loop that every task shares::

    rule = apply_rule("DFA", model, seed=0)
    fit = run.fit(model, optimizer, batches, loss, epochs=10, evaluate=validate, select="acc")

Progress bars show only on a terminal (``tqdm`` is disabled when stderr is not a TTY); elsewhere
each training run logs one line when it ends, and :func:`run_jobs` one more with the runs done out
of the task's total and an ETA (:func:`progress_line`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from tqdm.auto import tqdm

from feedback_alignment.rules import (
    BP,
    DFA,
    FA,
    DirectFeedback,
    KolenPollack,
    Rule,
    Shallow,
    brSF,
    frSF,
    uSF,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# --- rules ---------------------------------------------------------------------------------------

RULES: dict[str, type[Rule]] = {
    cls.name: cls for cls in (BP, DFA, Shallow, FA, uSF, frSF, brSF, KolenPollack)
}
"""Every rule the experiments use, by its table name (``rule.name``); built through the one
registry, :mod:`feedback_alignment.rules.registry`."""


def make_rule(name: str, seed: int = 0, **options: Any) -> Rule:
    """A fresh rule by table name; ``options`` go to its constructor (e.g. DFA's ``scale``)."""
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; choose one of {list(RULES)}")
    return RULES[name](seed=seed, **options)


def apply_rule(
    name: str,
    model: nn.Module,
    seed: int = 0,
    *,
    points: list[str] | None = None,
    error_at: str | None = None,
    true_gradient: list[str] | None = None,
    **options: Any,
) -> Rule:
    """Makes rule ``name`` and applies it to ``model``.

    ``points``, ``error_at`` and ``true_gradient`` are the direct-feedback placement (ignored by
    BP and the layer-wise rules, which need none); ``None`` leaves placement to the rule.
    """
    rule = make_rule(name, seed, **options)
    placement = {
        k: v
        for k, v in (("points", points), ("error_at", error_at), ("true_gradient", true_gradient))
        if v
    }
    if placement and isinstance(rule, DirectFeedback):
        rule.apply(model, **placement)
    else:
        rule.apply(model)
    return rule


# --- progress ------------------------------------------------------------------------------------


def on_terminal() -> bool:
    """Whether progress bars can be drawn (stderr is an interactive terminal)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(iterable: Iterable[T] | None = None, *, enabled: bool = True, **kwargs: Any):
    """``tqdm`` over ``iterable``, shown only when ``enabled`` and on a terminal."""
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=not (enabled and on_terminal()), **kwargs)


def jobs(
    items: list[T], desc: str, enabled: bool = True, label: Callable[[T], Any] = str
) -> Iterator[T]:
    """Iterates a task's runs with an outer progress bar, logging each start off a terminal
    (``label(item)`` names the run in the log)."""
    bar = progress_bar(items, enabled=enabled, desc=desc, unit="run", leave=True)
    for i, item in enumerate(bar, 1):
        if not on_terminal():
            log.info("%s: run %d/%d %s", desc, i, len(items), label(item))
        yield item


_clock: Callable[[], float] = time.perf_counter
"""The clock of the progress lines (a test replaces it)."""


def format_duration(seconds: float) -> str:
    """``45 s``, ``3 min 05 s`` or ``2 h 07 min``: a duration as a progress line shows it."""
    if not math.isfinite(seconds):
        return "unknown"
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {whole:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_line(desc: str, done: int, total: int, elapsed: float, what: str = "") -> str:
    """One line per finished run: ``desc: 3/9 runs done (DFA seed 0), 1 min 02 s; ETA 2 min 04 s``.

    The ETA is the mean time per finished run (wall clock, so with several workers it is their
    combined rate) times the runs left; the last line says ``all done`` instead.
    """
    name = f" ({what})" if what else ""
    line = f"{desc}: {done}/{total} runs done{name}, {format_duration(elapsed)}"
    if done >= total:
        return line + "; all done"
    eta = elapsed / done * (total - done) if done > 0 else math.nan
    return line + f"; ETA {format_duration(eta)}"


R = TypeVar("R")

_SHARED: Any = None
"""What :func:`run_jobs` hands every job of a worker process (set once by its initializer)."""


def _init_worker(shared: Any, thread_count: int, log_level: int) -> None:
    global _SHARED
    _SHARED = shared
    torch.set_num_threads(thread_count)
    # a spawned process starts with no logging set up: the per-run lines would vanish
    logging.basicConfig(level=log_level, format="%(levelname)s %(message)s")


def _call_in_worker(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    return fn(_SHARED, item)


# --- finished runs, saved as they end ------------------------------------------------------------


class _Unsaveable(TypeError):
    """A run's result (or job) holds a value the store cannot write without pickle."""


def _encode(value: Any) -> Any:
    """``value`` as what ``torch.load(weights_only=True)`` reads back: tensors, numbers, text,
    lists, tuples and dicts as they are; dataclasses of this package and numpy values tagged."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        if not cls.__module__.startswith("feedback_alignment."):
            raise _Unsaveable(f"a {cls.__qualname__} (not a feedback_alignment dataclass)")
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__dataclass__": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_encode(v) for v in value)
    if isinstance(value, dict):
        return {"__dict__": [(_encode(k), _encode(v)) for k, v in value.items()]}
    if isinstance(value, Path):
        return {"__path__": str(value)}
    module = type(value).__module__
    if module == "numpy":
        import numpy as np

        if isinstance(value, np.ndarray):
            return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value).copy())}
        if isinstance(value, np.generic):
            return {"__npscalar__": (str(value.dtype), value.item())}
    raise _Unsaveable(f"a {type(value).__qualname__}")


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_decode(v) for v in value)
    if not isinstance(value, dict):
        return value
    if "__dict__" in value:
        return {_decode(k): _decode(v) for k, v in value["__dict__"]}
    if "__path__" in value:
        return Path(value["__path__"])
    if "__ndarray__" in value:
        return value["__ndarray__"].numpy()
    if "__npscalar__" in value:
        import numpy as np

        dtype, item = value["__npscalar__"]
        return np.dtype(dtype).type(item)
    module, _, name = value["__dataclass__"].partition(":")
    if not module.startswith("feedback_alignment."):
        raise ValueError(f"refusing to rebuild {module}:{name}")
    cls: Any = importlib.import_module(module)
    for part in name.split("."):
        cls = getattr(cls, part)
    if not dataclasses.is_dataclass(cls):
        raise ValueError(f"{module}:{name} is not a dataclass")
    made = cls.__new__(cls)
    for key, item in value["fields"].items():
        object.__setattr__(made, key, _decode(item))
    return made


def _key_form(value: Any) -> Any:
    """A JSON-ready form of a job for its key (floats by ``repr``: no rounding)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = type(value)
        fields = {f.name: _key_form(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return [f"{cls.__module__}:{cls.__qualname__}", fields]
    if isinstance(value, (list, tuple)):
        return [_key_form(v) for v in value]
    if isinstance(value, dict):
        return [[_key_form(k), _key_form(v)] for k, v in sorted(value.items(), key=repr)]
    if isinstance(value, float):
        return repr(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    raise _Unsaveable(f"a {type(value).__qualname__} in a job")


class SavedRuns:
    """The finished runs of one task, one file each under ``folder``, saved as each run ends.

    A run is known by its key: the sha256 of its job (the rule, seed and configuration that
    :func:`run_jobs` hands it), the task's description of its runs, the feedback stream version,
    the torch and package versions and ``context`` (what else decides the numbers: ``reproduce``
    puts the task's name and the digest of the tuned values it reads there). A later run of the same task with the same settings finds the files
    and skips the runs they hold: as every run seeds itself, the task's numbers are those of an
    uninterrupted run. The files hold tensors, numbers and this package's dataclasses, read
    back with ``torch.load(weights_only=True)`` (no pickle of arbitrary objects).
    """

    def __init__(self, folder: Path, context: Any = None) -> None:
        self.folder = folder
        self.context = context
        self.resumed = 0  # runs found saved, over the task's calls of run_jobs
        self.total = 0  # runs asked for

    def key(self, desc: str, job: Any) -> str | None:
        """The file stem of ``job``'s run (``None``: the job cannot be keyed, so not saved)."""
        from feedback_alignment import __version__
        from feedback_alignment.feedback import STREAM_VERSION

        try:
            form = _key_form([job, self.context])
        except _Unsaveable:
            return None
        text = json.dumps([desc, form, STREAM_VERSION, torch.__version__, __version__])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def load(self, key: str | None) -> tuple[bool, Any]:
        """``(True, result)`` for a saved run; ``(False, None)`` when there is none (or it cannot
        be read: the run then runs again)."""
        path = self.folder / f"{key}.pt"
        if key is None or not path.is_file():
            return False, None
        try:
            return True, _decode(torch.load(path, weights_only=True))
        except Exception as error:  # a damaged file: run again rather than stop
            log.warning("the saved run %s cannot be read (%s): running it again", path, error)
            return False, None

    def save(self, key: str | None, result: Any) -> None:
        """Writes ``result`` atomically (a full disk raises
        :class:`~feedback_alignment.experiments.results.ResultsWriteError`)."""
        from feedback_alignment.experiments.results import write_atomic

        if key is None:
            return
        try:
            encoded = _encode(result)
        except _Unsaveable as why:
            log.debug("a run's result holds %s: not saved for resuming", why)
            return
        write_atomic(self.folder / f"{key}.pt", lambda path: torch.save(encoded, path))

    def count(self) -> int:
        """How many finished runs the folder holds."""
        return len(list(self.folder.glob("*.pt"))) if self.folder.is_dir() else 0


_SAVED: ContextVar[SavedRuns | None] = ContextVar("saved_runs", default=None)


@contextmanager
def saved_runs(folder: Path, context: Any = None) -> Iterator[SavedRuns]:
    """Within the block, :func:`run_jobs` saves each finished run in ``folder`` as it ends and
    reuses the runs found there (what ``reproduce`` wraps around each task)."""
    store = SavedRuns(folder, context)
    token = _SAVED.set(store)
    try:
        yield store
    finally:
        _SAVED.reset(token)


def _flipped(job: Any) -> Any:
    """``job`` with its trailing bool (a task's progress-bar flag) negated, else ``None``."""
    if isinstance(job, tuple) and job and isinstance(job[-1], bool):
        return (*job[:-1], not job[-1])
    return None


def _saved_results(store: SavedRuns, desc: str, items: list[Any]) -> tuple[list, dict[int, Any]]:
    """The keys of ``items`` and the results already saved, by index. A job whose last item is
    a bool is also found under the other value of it (the progress flag: ``--workers`` changes
    it, not the numbers) unless that job is itself one of ``items``."""
    keys = [store.key(desc, item) for item in items]
    own = set(keys)
    found: dict[int, Any] = {}
    for index, (item, key) in enumerate(zip(items, keys, strict=True)):
        ok, result = store.load(key)
        if not ok and _flipped(item) is not None:
            other = store.key(desc, _flipped(item))
            if other not in own:
                ok, result = store.load(other)
        if ok:
            found[index] = result
    return keys, found


def run_jobs(
    fn: Callable[[Any, T], R],
    items: list[T],
    desc: str,
    *,
    shared: Any = None,
    workers: int = 1,
    progress: bool = True,
    label: Callable[[T], Any] = str,
) -> list[R]:
    """``[fn(shared, item) for item in items]``, in order; with ``workers > 1`` in that many
    processes, so that independent runs (seeds, rules) use every core.

    Inside :func:`saved_runs` (every ``reproduce`` task), each run is saved as it ends and the
    runs already saved for the same jobs are not run again: a task killed midway resumes.
    Why processes: each run is a small model on one torch thread (the fastest setting for these
    sizes on a shared CPU), so one process leaves the other cores idle, and threads would share
    Python's lock. The workers are *spawned* (not forked: a forked child of a process whose
    OpenMP pool has run can deadlock); ``shared`` (the data) is sent once per worker, and each
    worker runs with the caller's torch thread count. ``fn`` must be a module-level function and
    the items picklable. A run seeds itself, so the results equal the sequential ones. The first
    run that raises cancels the runs not yet started, stops those running (a failed 45-minute
    task should not wait for its other runs to finish), and its error is raised here; Ctrl-C and
    SIGTERM stop the workers too.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    store = _SAVED.get()
    if store is None:
        return _run_jobs(fn, items, desc, shared, workers, progress, label, lambda i, r: None)
    keys, found = _saved_results(store, desc, items)
    store.total += len(items)
    if found:
        store.resumed += len(found)
        log.info("%s: resumed %d of %d runs from %s", desc, len(found), len(items), store.folder)
    todo = [i for i in range(len(items)) if i not in found]
    done = _run_jobs(
        fn,
        [items[i] for i in todo],
        desc,
        shared,
        workers,
        progress,
        label,
        lambda position, result: store.save(keys[todo[position]], result),
    )
    found.update(zip(todo, done, strict=True))
    return [found[i] for i in range(len(items))]


def _run_jobs(
    fn: Callable[[Any, T], R],
    items: list[T],
    desc: str,
    shared: Any,
    workers: int,
    progress: bool,
    label: Callable[[T], Any],
    finished: Callable[[int, R], None],
) -> list[R]:
    """:func:`run_jobs` without the saved runs; ``finished(index, result)`` as each run ends."""
    started = _clock()
    if workers == 1 or len(items) <= 1:
        out = []
        bar_shown = progress and on_terminal()  # the bar shows its own ETA
        for index, item in enumerate(jobs(items, desc, progress, label)):
            out.append(fn(shared, item))
            finished(index, out[-1])
            if not bar_shown:
                log.info(progress_line(desc, index + 1, len(items), _clock() - started))
        return out
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    count = min(workers, len(items))
    log.info("%s: %d runs on %d worker processes", desc, len(items), count)
    initargs = (shared, torch.get_num_threads(), logging.getLogger().getEffectiveLevel())
    with ProcessPoolExecutor(count, mp_context=context, initializer=_init_worker,
                             initargs=initargs) as pool, _terminate_raises():  # fmt: skip
        futures = {pool.submit(_call_in_worker, fn, item): i for i, item in enumerate(items)}
        pending, count_done = set(futures), 0
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)  # a line as each ends
                for future in done:
                    if future.exception() is not None:
                        raise future.exception()  # type: ignore[misc]
                    count_done += 1
                    finished(futures[future], future.result())
                    log.info(
                        "%s: run %d/%d done: %s",
                        desc,
                        count_done,
                        len(items),
                        label(items[futures[future]]),
                    )
                    log.info(progress_line(desc, count_done, len(items), _clock() - started))
        except BaseException:  # a failed run, Ctrl-C or SIGTERM: the other workers stop too
            _stop(pool)
            raise
        return [future.result() for future in futures]


@contextmanager
def _terminate_raises() -> Iterator[None]:
    """While workers run, SIGTERM raises ``SystemExit`` in the main thread (by default it ends
    the process at once and leaves the workers running their jobs, orphaned)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(pool: Any) -> None:
    """Cancels a process pool's queued runs and terminates its running workers now (a plain
    shutdown waits for the running ones to finish)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
        return
    # Python < 3.14 has no public way to stop a running worker; shutdown drops the reference
    running = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in running:
        process.terminate()


@contextmanager
def threads(count: int | None) -> Iterator[None]:
    """Sets torch's intra-op threads for a block (``None``: leaves them), then restores them."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --- the loop ------------------------------------------------------------------------------------


@dataclass
class Fit:
    """What one call of :func:`fit` did.

    Attributes:
        losses: training loss of every step.
        epoch_losses: per epoch, the mean training loss weighted by batch size.
        evaluations: ``(step, metrics)`` of every evaluation.
        best: metrics of the best evaluation by ``select`` (empty without one).
        best_step, best_epoch: when it happened (1-based).
        steps, seconds: optimizer steps taken and wall time of the loop.
        diverged: the loss became NaN or infinite and the run stopped there.
        stopped_early: the patience ran out.
    """

    losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    evaluations: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)
    best_step: int = 0
    best_epoch: int = 0
    steps: int = 0
    seconds: float = 0.0
    diverged: bool = False
    stopped_early: bool = False


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Callable[[int], Iterable[Any]],
    loss: Callable[[Any], torch.Tensor],
    *,
    epochs: int = 1,
    total_steps: int | None = None,
    lr_at: Callable[[int, float], float] | None = None,
    clip: float | None = None,
    after_step: Callable[[int], None] | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
    eval_every: int | None = None,
    select: str | None = None,
    mode: str = "max",
    min_delta: float = 0.0,
    patience: int | None = None,
    on_plateau: Callable[[], None] | None = None,
    keep_best: bool = False,
    on_evaluate: Callable[[int, dict[str, float]], None] | None = None,
    stop_on_nonfinite: bool = False,
    label: str = "train",
    progress: bool = True,
) -> Fit:
    """The plain PyTorch loop: ``zero_grad, loss(batch).backward(), step`` over ``batches(epoch)``.

    Args:
        model: trained in train mode (set again after every evaluation).
        optimizer: its groups' learning rates at the start are the base rates of ``lr_at``.
        batches: ``epoch -> iterable of batches`` (0-based epoch); a batch is whatever ``loss``
            takes. A tensor batch (indices) weighs ``len(batch)`` in the epoch mean, others 1.
        loss: ``batch -> scalar loss``.
        epochs: passes over ``batches``.
        total_steps: the number of steps in all (for the bar and the last evaluation).
        lr_at: ``(step, base_lr) -> lr`` set on every group before each step (1-based step).
        clip: gradient-norm clipping threshold.
        after_step: called with the step number after each optimizer step (monitors).
        evaluate: ``() -> metrics``; every ``eval_every`` steps and at ``total_steps``, or at the
            end of every epoch when ``eval_every`` is ``None``.
        select, mode, min_delta: the metric that defines the best evaluation, whether higher
            (``"max"``) or lower (``"min"``) is better, and by how much it must improve.
        patience: evaluations without improvement before ``on_plateau`` is called (and the count
            restarts) or, without ``on_plateau``, before training stops.
        keep_best: restore the model's state of the best evaluation at the end.
        on_evaluate: called as ``on_evaluate(step, metrics)`` after every evaluation; it may
            raise to abandon the run (a tuner's pruning: ``optuna.TrialPruned``).
        stop_on_nonfinite: stop (``diverged``) when the loss is NaN or infinite.
        label, progress: the progress bar's text and whether to show it.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if select is not None and evaluate is None:
        raise ValueError(f"select={select!r} needs an evaluate function")
    bases = [group["lr"] for group in optimizer.param_groups]
    result = Fit()
    best_value = -math.inf if mode == "max" else math.inf
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0
    step = 0
    bar = progress_bar(enabled=progress, total=total_steps, desc=label, unit="step")
    start = time.perf_counter()

    def run_evaluation(epoch: int) -> bool:
        """Evaluates; returns whether training should stop."""
        nonlocal best_value, best_state, stale
        metrics = evaluate()
        model.train()
        result.evaluations.append((step, metrics))
        if on_evaluate is not None:
            on_evaluate(step, metrics)
        if select is None:
            return False
        value = metrics[select]
        better = value > best_value + min_delta if mode == "max" else value < best_value - min_delta
        if better:
            best_value, stale = value, 0
            result.best, result.best_step, result.best_epoch = dict(metrics), step, epoch
            if keep_best:
                best_state = copy.deepcopy(model.state_dict())
            return False
        stale += 1
        if patience is not None and stale >= patience:
            if on_plateau is None:
                result.stopped_early = True
                return True
            on_plateau()
            stale = 0
        return False

    stop = False
    for epoch in range(1, epochs + 1):
        model.train()
        total, count = 0.0, 0
        for batch in batches(epoch - 1):
            step += 1
            if lr_at is not None:
                for group, base in zip(optimizer.param_groups, bases, strict=True):
                    group["lr"] = lr_at(step, base)
            optimizer.zero_grad(set_to_none=True)
            value = loss(batch)
            if stop_on_nonfinite and not torch.isfinite(value):
                log.warning(
                    "%s: the loss became %s; the run stops here", label, float(value.detach())
                )
                result.diverged = stop = True
                break
            value.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            current = float(value.detach())
            weight = len(batch) if isinstance(batch, torch.Tensor) else 1
            result.losses.append(current)
            total, count = total + current * weight, count + weight
            if after_step is not None:
                after_step(step)
            bar.update()
            due = eval_every is not None and (step % eval_every == 0 or step == total_steps)
            if evaluate is not None and due:
                bar.set_postfix(loss=f"{current:.3f}")
                if run_evaluation(epoch):
                    stop = True
                    break
        if count:
            result.epoch_losses.append(total / count)
            bar.set_postfix(loss=f"{result.epoch_losses[-1]:.3f}")
        if stop:
            break
        if evaluate is not None and eval_every is None and run_evaluation(epoch):
            break
    bar.close()
    result.steps, result.seconds = step, time.perf_counter() - start
    if keep_best and best_state is not None:
        model.load_state_dict(best_state)
    best = f", best {select} {best_value:.4g} at step {result.best_step}" if result.best else ""
    last = result.losses[-1] if result.losses else math.nan
    log.info("%s: %d steps in %.1f s, last loss %.4g%s", label, step, result.seconds, last, best)
    return result


def shuffled(count: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of a fresh permutation of ``range(count)`` (drawn when iteration starts)."""
    order = torch.randperm(count, generator=generator)
    for i in range(0, len(order), batch_size):
        yield order[i : i + batch_size]
