"""Ending a torch.distributed process cleanly, every time.

A gloo process that leaves through the interpreter's normal teardown can die with
``terminate called without an active exception`` (SIGABRT, exit code -6 or 134) after its work is
done: the process group's C++ threads are destroyed unjoined while Python and C++ objects are
finalised. ``dist.destroy_process_group()`` alone does not prevent it. Measured with plain
PyTorch 2.13 (2 gloo processes, a DDP step, then 8 unwaited ``all_reduce(async_op=True)``;
2-core AMD EPYC shared with other work, 2026-12-05): a process aborted in 9 runs of 10 when the
worker simply returned, in 6 of 10 after ``destroy_process_group()``, in 0 of 10 with
:func:`teardown` and :func:`exit_process` (see docs/distributed.md).

The remedy is to never run that teardown in a worker:

1. ``dist.barrier()``: no rank closes its connections while a peer still talks to it;
2. ``dist.destroy_process_group()``: the groups this process knows are shut down;
3. flush ``stdout``, ``stderr`` and logging;
4. ``os._exit(code)``: leave without finalising objects (no atexit handlers, no destructors).

Use it around a worker's whole body::

    from feedback_alignment.distributed import clean_exit

    if __name__ == "__main__":                # launched by torchrun
        with clean_exit():
            main()

On success the block ends the process with code 0 (after the barrier); on an exception it prints
the traceback and ends with code 1 without the barrier (a failed rank must not wait for the
others), so ``torchrun`` reports the failure. ``SystemExit(n)`` ends it with ``n``. Anything the
process must keep (files, a ``multiprocessing`` queue: ``queue.close(); queue.join_thread()``)
has to be written before the block ends: ``os._exit`` skips the interpreter's own flushing of
open files other than ``stdout`` and ``stderr``.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import NoReturn

import torch.distributed as dist

__all__ = ["clean_exit", "exit_process", "teardown"]


def teardown(*, barrier: bool = True, timeout: float | None = 60.0) -> None:
    """Waits for every rank (``barrier``), then destroys every process group of this process.

    A no-op when torch.distributed is not initialised. The barrier is a ``monitored_barrier``
    with ``timeout`` seconds on gloo (it names a rank that never arrives), a plain barrier on
    other backends; a failed barrier is reported on ``stderr`` and the groups are destroyed all
    the same.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if barrier and dist.get_world_size() > 1:
        try:
            if dist.get_backend() == "gloo" and timeout is not None:
                dist.monitored_barrier(timeout=timedelta(seconds=timeout))
            else:
                dist.barrier()
        except Exception as error:  # a peer died: still destroy our groups and leave
            print(f"teardown: the final barrier failed: {error}", file=sys.stderr, flush=True)
    dist.destroy_process_group()


def exit_process(code: int = 0) -> NoReturn:
    """Flushes ``stdout``, ``stderr`` and logging, then ends the process with ``os._exit(code)``."""
    try:
        logging.shutdown()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):  # a closed or broken stream must not stop the exit
                stream.flush()
        os._exit(code)


@contextmanager
def clean_exit(*, barrier: bool = True, timeout: float | None = 60.0) -> Iterator[None]:
    """Runs the block, then ends the process: :func:`teardown` and :func:`exit_process`.

    Exit code 0 when the block returns, ``n`` for ``SystemExit(n)`` (``SystemExit(None)``: 0,
    a message: 1), 130 for ``KeyboardInterrupt``, 1 for any other exception (its traceback is
    printed first). The barrier runs only after a block that returned or exited with code 0.
    Never returns.
    """
    code = 0
    try:
        yield
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        teardown(barrier=barrier and code == 0, timeout=timeout)
    except BaseException:
        traceback.print_exc()
        code = code or 1
    exit_process(code)
