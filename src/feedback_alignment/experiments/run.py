"""The one training loop of the experiments, the rule factory, and progress reporting.

A task supplies what is specific to it (its batches, its loss, its evaluation, its learning-rate
schedule) and :func:`fit` runs the plain PyTorch loop that every task shares::

    rule = apply_rule("DFA", model, seed=0)
    fit = run.fit(model, optimizer, batches, loss, epochs=10, evaluate=validate, select="acc")

Progress bars show only on a terminal (``tqdm`` is disabled when stderr is not a TTY); elsewhere
each training run logs one line when it ends.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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

RULES: dict[str, Callable[..., Rule]] = {
    "BP": lambda seed, **options: BP(),
    "DFA": lambda seed, **options: DFA(seed=seed, **options),
    "Shallow": lambda seed, **options: Shallow(seed=seed, **options),
    "FA": lambda seed, **options: FA(seed=seed, **options),
    "uSF": lambda seed, **options: uSF(**options),
    "frSF": lambda seed, **options: frSF(seed=seed, **options),
    "brSF": lambda seed, **options: brSF(seed=seed, **options),
    "KP": lambda seed, **options: KolenPollack(seed=seed, **options),
}
"""Every rule the experiments use, by its table name: ``(seed, **options) -> Rule``."""


def make_rule(name: str, seed: int = 0, **options: Any) -> Rule:
    """A fresh rule by table name; ``options`` go to its constructor (e.g. DFA's ``scale``)."""
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; choose one of {list(RULES)}")
    return RULES[name](seed, **options)


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
    if workers == 1 or len(items) <= 1:
        return [fn(shared, item) for item in jobs(items, desc, progress, label)]
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    count = min(workers, len(items))
    log.info("%s: %d runs on %d worker processes", desc, len(items), count)
    initargs = (shared, torch.get_num_threads(), logging.getLogger().getEffectiveLevel())
    with ProcessPoolExecutor(count, mp_context=context, initializer=_init_worker,
                             initargs=initargs) as pool, _terminate_raises():  # fmt: skip
        futures = {pool.submit(_call_in_worker, fn, item): item for item in items}
        pending, finished = set(futures), 0
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)  # a line as each ends
                for future in done:
                    if future.exception() is not None:
                        raise future.exception()  # type: ignore[misc]
                    finished += 1
                    log.info(
                        "%s: run %d/%d done: %s", desc, finished, len(items), label(futures[future])
                    )
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
