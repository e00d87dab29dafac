"""The plain-PyTorch promises: AMP, torch.compile and DDP keep working under a direct rule."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import feedback_alignment as fa


def _model():
    torch.manual_seed(0)
    return fa.models.MLP([6, 16, 16, 3])


def _grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_autocast_bfloat16_trains_with_float32_grads():
    model = _model()
    rule = fa.DFA()
    rule.apply(model)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        assert out.dtype == torch.bfloat16
        loss = F.cross_entropy(out.float(), y)
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())
    assert model.state_dict()[fa.FEEDBACK_BUFFER].dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_torch_compile_gives_the_same_grads():
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    eager, compiled = _model(), _model()
    fa.DFA(seed=1).apply(eager)
    fa.DFA(seed=1).apply(compiled)
    F.cross_entropy(eager(x), y).backward()
    step = torch.compile(compiled, backend="eager")
    F.cross_entropy(step(x), y).backward()
    for a, b in zip(_grads(eager), _grads(compiled), strict=True):
        torch.testing.assert_close(a, b)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = fa.models.MLP([6, 16, 16, 3])
        fa.DFA(seed=7).apply(model)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        generator = torch.Generator().manual_seed(100 + rank)  # each rank its own data
        x, y = (
            torch.randn(8, 6, generator=generator),
            torch.randint(0, 3, (8,), generator=generator),
        )
        F.cross_entropy(ddp(x), y).backward()
        # numpy arrays travel by pickling; tensors would need this process alive
        queue.put(
            (
                rank,
                model.state_dict()[fa.FEEDBACK_BUFFER].numpy().copy(),
                [p.grad.numpy().copy() for p in model.parameters()],
                x.numpy().copy(),
                y.numpy().copy(),
            )
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_ranks_share_feedback_and_average_dfa_grads():
    world = 2
    context = mp.get_context("spawn")
    queue = context.Queue()
    port = _free_port()
    processes = [
        context.Process(target=_ddp_worker, args=(rank, world, port, queue))
        for rank in range(world)
    ]
    for p in processes:
        p.start()
    results = sorted((queue.get(timeout=120) for _ in range(world)), key=lambda r: r[0])
    for p in processes:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in processes)
    (_, b0, g0, x0, y0), (_, b1, g1, x1, y1) = [
        (
            r,
            torch.from_numpy(b),
            [torch.from_numpy(g) for g in gs],
            torch.from_numpy(x),
            torch.from_numpy(y),
        )
        for r, b, gs, x, y in results
    ]
    assert torch.equal(b0, b1)
    # the all-reduced gradient is the mean of each rank's single-process DFA gradient
    singles = []
    for x, y in ((x0, y0), (x1, y1)):
        model = _model()
        fa.DFA(seed=7).apply(model)
        F.cross_entropy(model(x), y).backward()
        singles.append(_grads(model))
    for got0, got1, a, b in zip(g0, g1, *singles, strict=True):
        torch.testing.assert_close(got0, (a + b) / 2)
        torch.testing.assert_close(got1, got0)
