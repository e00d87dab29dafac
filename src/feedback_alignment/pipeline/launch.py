"""Running a function on ``n`` local processes joined by torch.distributed, without ``torchrun``.

For tests and small scripts: the processes listen on ``127.0.0.1`` only, on a free port, every one
of them is killed when the deadline passes, and a failure on any rank is raised in the caller with
that rank's traceback. Real runs use ``torchrun`` (see ``docs/PIPELINE.md``).
"""

from __future__ import annotations

import os
import pickle
import queue
import socket
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from feedback_alignment.distributed import exit_process, teardown


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child(
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    timeout: float,
    fn: Callable[..., Any],
    args: tuple,
    results: Any,
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    ok = False
    try:
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout)
        )
        # plain pickle bytes: tensors must not travel as shared memory that dies with the child
        results.put((rank, True, pickle.dumps(fn(rank, world_size, *args))))
        ok = True
    except BaseException:
        results.put((rank, False, traceback.format_exc()))
    try:
        # every rank done before any closes its connections (a failed rank does not wait)
        teardown(barrier=ok, timeout=timeout)
    except BaseException:
        traceback.print_exc()
    # flush the result, then leave without the interpreter's teardown, which can abort a gloo
    # process ("terminate called without an active exception") and costs seconds with torch
    results.close()
    results.join_thread()
    exit_process(0)


def run_local(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    timeout: float = 60.0,
) -> list[Any]:
    """Returns ``[fn(rank, world_size, *args) for rank in range(world_size)]``, run in parallel.

    ``fn`` must return picklable values (and, where processes are spawned rather than forked, be
    importable by name: a module-level function). Do not call it from a process that already
    runs CUDA or torch.distributed: forked children inherit that state.

    Raises:
        RuntimeError: a rank raised (its traceback is in the message).
        TimeoutError: not every rank finished within ``timeout`` seconds (all are killed).
    """
    # fork where it exists: the children start with torch already imported (seconds per rank)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    context = mp.get_context(method)
    if method == "fork":
        # an optimizer's constructor imports torch._dynamo lazily (about 10 s per process on a
        # loaded 2-core machine): import it once here, so that forked children inherit it
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0)
    results = context.Queue()
    port = free_port()
    processes = [
        context.Process(
            target=_child,
            args=(rank, world_size, port, backend, timeout, fn, args, results),
            daemon=True,
        )
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + timeout
    outcome: dict[int, tuple[bool, Any]] = {}
    try:
        while len(outcome) < world_size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"run_local: ranks {sorted(set(range(world_size)) - set(outcome))} did not "
                    f"finish within {timeout:g} s; all processes were killed"
                )
            try:
                rank, ok, value = results.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [r for r, p in enumerate(processes) if p.exitcode not in (None, 0)]
                if dead and all(r not in outcome for r in dead):
                    raise RuntimeError(f"run_local: ranks {dead} died without a result") from None
                continue
            outcome[rank] = (ok, value)
            if not ok:
                raise RuntimeError(f"run_local: rank {rank} failed:\n{value}")
    finally:
        for process in processes:
            process.join(timeout=0.5 if len(outcome) < world_size else 5.0)
            if process.is_alive():
                process.kill()
                process.join()
    return [pickle.loads(outcome[rank][1]) for rank in range(world_size)]
