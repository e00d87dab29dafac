"""Pipeline-parallel DFA: a model split over 2 processes, only the output error comes back.

What it shows (``feedback_alignment.pipeline``, docs/PIPELINE.md):

* ``split_sequential`` cuts a tanh MLP 64-256x4-10 into 2 stages (two hidden layers each),
  ``stage_points`` puts a feedback point after every hidden activation, and each process trains
  its stage with a ``DFAPipelineStage``: activations go up the pipeline, the error ``e`` of each
  micro-batch comes back, and every stage updates itself from ``B_s e`` (no gradient travels
  between stages);
* every stage draws the same feedback matrix from ``fa.DFA(seed=...)`` (no message carries it);
* in ``sync`` mode the pipeline's updates are those of single-process ``fa.DFA`` on the unsplit
  model: ``--smoke`` trains both for a few steps from the same seed and checks that the
  parameters agree (to 1e-4 in float32), then trains one epoch in ``--mode``;
* ``async`` mode: a stage steps without waiting for late errors (bounded by ``--max-pending``
  micro-batches); ``stage.staleness`` says how late they were;
* the processes end cleanly (barrier, ``destroy_process_group()``, ``os._exit``).

Launch (from the repository root), either way:

    python examples/distributed/pipeline.py --smoke
    torchrun --standalone --nproc_per_node=2 examples/distributed/pipeline.py --smoke

The first starts the 2 processes itself with the library's launcher
``feedback_alignment.pipeline.run_local`` (gloo on 127.0.0.1, a free port, every process killed
at ``--timeout``); the second lets ``torchrun`` start them (the way to run on several machines;
``init_process_group("nccl")`` on GPUs). Options: ``--mode async --max-pending 8``,
``--epochs``, ``--micro`` (micro-batches per batch of ``--batch``).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter

import torch
import torch.distributed as dist
import torch.nn.functional as F

import feedback_alignment as fa
from feedback_alignment import data
from feedback_alignment.distributed import clean_exit
from feedback_alignment.pipeline import DFAPipelineStage, run_local, split_sequential, stage_points

SIZES = [64, 256, 256, 256, 256, 10]
BOUNDARY = 4  # children: Linear Tanh Linear Tanh | Linear Tanh Linear Tanh Linear


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits from the library's data registry (bundled with scikit-learn, no download): the
    fixed 80/20 split, flattened to 64 features and standardised with the training statistics."""
    digits = data.load("digits")
    x_train, x_test = digits.x_train.flatten(1).float(), digits.x_test.flatten(1).float()
    mean, std = x_train.mean(0), x_train.std(0) + 0.1
    return (x_train - mean) / std, digits.y_train, (x_test - mean) / std, digits.y_test


def make_model(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return fa.models.MLP(SIZES, activation="tanh")


def make_optimizer(params) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def batches(x, y, seed: int, epochs: int, size: int, limit: int | None = None):
    """The same shuffled batches on every rank (every stage calls ``step`` with the same batch)."""
    generator, count = torch.Generator().manual_seed(seed), 0
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y) - size + 1, size):
            if limit is not None and count == limit:
                return
            index = order[start : start + size]
            count += 1
            yield x[index], y[index]


def train_pipeline(args, tensors, mode: str, epochs: int, limit: int | None = None) -> dict | None:
    """This rank's stage, trained; rank 0 returns the merged state dict and the staleness."""
    rank = dist.get_rank()
    x_train, y_train, _, _ = tensors
    model = make_model(args.seed)
    stages = split_sequential(model, [BOUNDARY])  # one per process; parameters shared with model
    stage = DFAPipelineStage(
        stages[rank],
        fa.DFA(seed=args.seed),  # the same matrix drawn on every stage, each keeps its columns
        points=stage_points(model, [BOUNDARY])[rank],
        optimizer=make_optimizer,
        micro_batches=args.micro,
        loss_fn=F.cross_entropy,
        mode=mode,
        max_pending=args.max_pending,
        timeout=args.timeout,
    )
    losses = []
    with stage:  # stops the stage's receiving threads at the end
        for xb, yb in batches(x_train, y_train, args.seed, epochs, args.batch, limit):
            loss = stage.step(xb, yb)  # the batch's mean loss on the last stage, else None
            if loss is not None:
                losses.append(float(loss))
        stage.finish()  # async: apply the errors still pending
    # the stages keep the model's parameter names: their state dicts merge into the model's
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, {k: v.clone() for k, v in stages[rank].state_dict().items()})
    staleness: list = [None] * dist.get_world_size()
    dist.all_gather_object(staleness, dict(stage.staleness))
    lasts: list = [None] * dist.get_world_size()
    dist.all_gather_object(lasts, losses)
    if rank != 0:
        return None
    return dict(
        state={k: v for part in parts for k, v in part.items()},
        staleness=dict(sum((Counter(s) for s in staleness), Counter())),
        losses=lasts[-1],
    )


def single_process_dfa(args, tensors, steps: int) -> dict:
    """``fa.DFA`` on the unsplit model, the same points, batches and seed."""
    x_train, y_train, _, _ = tensors
    model = make_model(args.seed)
    points = [p for stage in stage_points(model, [BOUNDARY]) for p in stage]
    fa.DFA(seed=args.seed).apply(model, points=points)
    optimizer = make_optimizer(model.parameters())
    for xb, yb in batches(x_train, y_train, args.seed, 1, args.batch, steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        optimizer.step()
    return {k: v for k, v in model.state_dict().items() if "feedback" not in k}


def worker(rank: int, world: int, args, tensors) -> dict | None:
    """The body of every process (``run_local`` calls it with torch.distributed initialised)."""
    torch.set_num_threads(1)
    if args.smoke:
        steps = 4
        got = train_pipeline(args, tensors, "sync", 1, limit=steps)
        if rank == 0:
            want = single_process_dfa(args, tensors, steps)
            worst = max((got["state"][k] - v).abs().max().item() for k, v in want.items())
            if worst > 1e-4:
                raise AssertionError(f"sync pipeline differs from fa.DFA by {worst:.2e}")
            print(
                f"sync pipeline = single-process fa.DFA after {steps} steps "
                f"(max abs parameter difference {worst:.1e})",
                flush=True,
            )
    result = train_pipeline(args, tensors, args.mode, args.epochs)
    if rank == 0:
        _, _, x_test, y_test = tensors
        model = make_model(args.seed)
        model.load_state_dict(result["state"])
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        losses = result["losses"]
        print(
            f"{args.mode} pipeline, {world} stages, {args.epochs} epoch(s): train loss "
            f"{losses[0]:.3f} -> {losses[-1]:.3f}, test accuracy {accuracy:.4f}, errors applied "
            f"k steps late: {dict(sorted(result['staleness'].items())) or 'all on time'}",
            flush=True,
        )
        return dict(accuracy=accuracy)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["sync", "async"], default="sync")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--micro", type=int, default=4, help="micro-batches per batch")
    parser.add_argument("--max-pending", type=int, default=None, help="async bound (default 2M)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds any wait may take")
    parser.add_argument("--smoke", action="store_true", help="check against fa.DFA, 1 epoch")
    args = parser.parse_args()
    if args.smoke:
        args.epochs = 1
    if "RANK" in os.environ:  # started by torchrun: this process is one stage
        with clean_exit():
            torch.set_num_threads(1)
            dist.init_process_group("gloo")
            worker(dist.get_rank(), dist.get_world_size(), args, load_digits_tensors())
    # otherwise start the 2 stages here (forked where the OS can: they inherit the data loaded
    # once here); run_local ends each process cleanly
    run_local(worker, 2, args, load_digits_tensors(), timeout=args.timeout)


if __name__ == "__main__":
    main()
