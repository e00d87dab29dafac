"""Digits trained pipeline-parallel with DFA (sync and async) vs single-process fa.DFA.

sklearn's bundled digits (1797 8x8 images; a fixed 80/20 split), a tanh MLP 64-256x4-10 split
into two stages of two hidden layers each, feedback after every hidden activation, SGD with
momentum, ``--epochs`` epochs of batches of 128 in ``--micro`` micro-batches. For each seed (which
fixes the weights, the feedback matrix and the batch order) the same model is trained three ways:
single-process ``fa.DFA`` (on rank 0), the pipeline in ``sync`` mode (the same updates) and in
``async`` mode (at most ``--max-pending`` micro-batches waiting for their error; a list of
bounds trains one async run per bound). The test accuracy of
each, and the staleness the async run saw, go to a JSON file.

Run::

    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 --master-addr 127.0.0.1 \
        benchmarks/pipeline_train.py --out benchmarks/pipeline_train.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.datasets import load_digits

import feedback_alignment as fa
from feedback_alignment.distributed import clean_exit
from feedback_alignment.models import MLP
from feedback_alignment.pipeline import DFAPipelineStage, split_sequential, stage_points

ROOT = Path(__file__).resolve().parent.parent
SIZES = [64, 256, 256, 256, 256, 10]
BOUNDARY = 4  # children: L0 T1 L2 T3 | L4 T5 L6 T7 L8


def data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    x, y = x[order], y[order]
    cut = int(0.8 * len(y))
    return x[:cut], y[:cut], x[cut:], y[cut:]


def model(seed: int) -> MLP:
    torch.manual_seed(seed)
    return MLP(SIZES, "tanh")


def optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def batches(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, size: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y) - size + 1, size):  # full batches only
            index = order[start : start + size]
            yield x[index], y[index]


def accuracy(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def single_process(seed: int, args, split) -> float:
    xtr, ytr, xte, yte = split
    net = model(seed)
    points = stage_points(net, [BOUNDARY])
    fa.DFA(seed=seed).apply(net, points=[p for stage in points for p in stage])
    opt = optimizer(net.parameters())
    for xb, yb in batches(xtr, ytr, seed, args.epochs, args.batch):
        opt.zero_grad()
        F.cross_entropy(net(xb), yb).backward()
        opt.step()
    return accuracy(net, xte, yte)


def pipelined(seed: int, mode: str, args, split) -> tuple[float | None, dict]:
    xtr, ytr, xte, yte = split
    rank = dist.get_rank()
    net = model(seed)
    stages = split_sequential(net, [BOUNDARY])
    stage = DFAPipelineStage(
        stages[rank],
        fa.DFA(seed=seed),
        points=stage_points(net, [BOUNDARY])[rank],
        optimizer=optimizer,
        micro_batches=args.micro,
        loss_fn=F.cross_entropy,
        mode=mode,
        max_pending=args.max_pending,
    )
    with stage:
        for xb, yb in batches(xtr, ytr, seed, args.epochs, args.batch):
            stage.step(xb, yb)
        stage.finish()
    # the stages keep the model's names: rank 0 puts the trained model back together
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, stages[rank].state_dict())
    staleness: list = [None] * dist.get_world_size()
    dist.all_gather_object(staleness, dict(stage.staleness))
    if rank != 0:
        return None, {}
    merged = {k: v for part in parts for k, v in part.items()}
    net.load_state_dict(merged)
    return accuracy(net, xte, yte), dict(sum((Counter(s) for s in staleness), Counter()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--micro", type=int, default=4)
    parser.add_argument("--modes", default="sync,async", help="pipeline modes to train")
    parser.add_argument(
        "--max-pending", default="8", help="async bounds on waiting micro-batches, e.g. 2,8,32"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "pipeline_train.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    split = data()
    runs = []
    for mode in args.modes.split(","):
        bounds = [int(k) for k in args.max_pending.split(",")] if mode == "async" else [None]
        runs += [(mode, bound) for bound in bounds]
    rows = []
    for seed in map(int, args.seeds.split(",")):
        row: dict = dict(seed=seed)
        for mode, bound in runs:
            key = mode if bound is None else f"async_max_pending_{bound}"
            acc, staleness = pipelined(
                seed, mode, argparse.Namespace(**{**vars(args), "max_pending": bound}), split
            )
            row[key] = acc
            if bound is not None:
                row[key + "_staleness_steps"] = staleness
        if dist.get_rank() == 0:
            row["single"] = single_process(seed, args, split)
            rows.append(row)
            print(row, flush=True)
        dist.barrier()
    if dist.get_rank() == 0:
        keys = [k for k in rows[0] if k != "seed" and not k.endswith("_steps")]
        summary = {
            key: (statistics.mean(r[key] for r in rows), statistics.pstdev(r[key] for r in rows))
            for key in keys
        }
        report = dict(
            rows=rows,
            summary_mean_std=summary,
            command="torchrun --nproc-per-node 2 benchmarks/pipeline_train.py "
            + " ".join(sys.argv[1:]),
            uptime=subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
            date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            config=dict(
                sizes=SIZES,
                boundary=BOUNDARY,
                epochs=args.epochs,
                batch=args.batch,
                micro=args.micro,
                optimizer="SGD(lr=0.1, momentum=0.9)",
            ),
        )
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(json.dumps(summary))
    # the process group is destroyed by clean_exit (after a barrier), which then leaves with
    # os._exit: no 'terminate called without an active exception' at exit


if __name__ == "__main__":
    with clean_exit():  # barrier, destroy_process_group, flush, os._exit
        main()
