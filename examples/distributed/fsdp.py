"""Sharded data-parallel DFA and FA with FSDP2 (``fully_shard``) on gloo, 2 processes.

What it shows:

* a rule is applied to the plain model **before** ``torch.distributed.fsdp.fully_shard``
  shards it (each ``nn.Linear`` its own FSDP unit, then the root); the loop is an ordinary one;
* the rule's feedback stays a buffer, drawn from the seed on every rank and never sharded
  (DFA's matrix ``B``: one buffer on the model; FA's ``weight_feedback``: one per layer);
* **the FSDP gradients are the rule's gradients**: after one step on 2 ranks, each with its own
  batch, the gathered gradient of every parameter equals the mean of the single-process
  gradients of the same rule on the two batches (``--smoke`` checks it for DFA and FA, to 1e-5
  in float32, and fails otherwise);
* then a short training run on digits, and a clean end (``clean_exit``: barrier,
  ``destroy_process_group()``, flush, ``os._exit``).

Data: scikit-learn's bundled digits (1437 train / 360 test), standardised; a tanh MLP
64-256-256-10 (FSDP2's sharding pays off on large models; the mechanics are the same here).

Launch (from the repository root)::

    torchrun --standalone --nproc_per_node=2 examples/distributed/fsdp.py --smoke
    torchrun --standalone --nproc_per_node=2 examples/distributed/fsdp.py --rule fa --epochs 20

``--smoke`` runs the gradient check for both rules and 1 epoch of training with ``--rule``.
FSDP2 on CPU uses gloo's ``reduce_scatter`` and ``all_gather_into_tensor`` (run here with PyTorch
2.13 only). On GPUs use ``init_process_group("nccl")`` and pass ``mesh=`` as usual.
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.fsdp import fully_shard
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import feedback_alignment as fa
from feedback_alignment import data
from feedback_alignment.distributed import clean_exit

RULES = {"dfa": fa.DFA, "fa": fa.FA}
# FSDP2 warns when a sharded module returns a view: a DFA model's output is one (the hook at the
# output returns a view of it). Only an in-place op on the output would lose FSDP's
# pre-backward hook, and this loop does none (the gradient check below would catch it)
warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
SIZES = [64, 256, 256, 10]


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits from the library's data registry (bundled with scikit-learn, no download): the
    fixed 80/20 split, flattened to 64 features and standardised with the training statistics."""
    digits = data.load("digits")
    x_train, x_test = digits.x_train.flatten(1).float(), digits.x_test.flatten(1).float()
    mean, std = x_train.mean(0), x_train.std(0) + 0.1
    return (x_train - mean) / std, digits.y_train, (x_test - mean) / std, digits.y_test


def build(rule_name: str, seed: int, example: torch.Tensor) -> torch.nn.Module:
    """The MLP with the rule applied, its feedback drawn (DFA draws at the first forward)."""
    torch.manual_seed(seed)  # the same initial weights on every rank
    model = fa.models.MLP(SIZES, activation="tanh")
    RULES[rule_name](seed=seed).apply(model)
    model(example[:2])  # DFA's matrix is drawn once the widths are known
    model.zero_grad(set_to_none=True)
    return model


def shard(model: torch.nn.Module) -> torch.nn.Module:
    """FSDP2: every Linear its own unit, then the root (which holds the feedback buffers)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            fully_shard(module)
    fully_shard(model)
    return model


def full_grads(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter's whole gradient (FSDP2 keeps shards: DTensors, gathered here)."""
    out = []
    for p in model.parameters():
        grad = p.grad
        out.append(grad.full_tensor() if hasattr(grad, "full_tensor") else grad.clone())
    return out


def check_gradients(rule_name: str, seed: int, x: torch.Tensor, y: torch.Tensor) -> float:
    """One FSDP step, each rank its own 32 samples, against the single-process mean."""
    rank, world = dist.get_rank(), dist.get_world_size()
    batches = [(x[32 * r : 32 * (r + 1)], y[32 * r : 32 * (r + 1)]) for r in range(world)]
    sharded = shard(build(rule_name, seed, x))
    xb, yb = batches[rank]
    F.cross_entropy(sharded(xb), yb).backward()
    got = full_grads(sharded)
    singles = []
    for xs, ys in batches:  # every rank can compute the reference: the same seed and batches
        single = build(rule_name, seed, x)
        F.cross_entropy(single(xs), ys).backward()
        singles.append([p.grad for p in single.parameters()])
    worst = 0.0
    for g, *per_rank in zip(got, *singles, strict=True):
        want = torch.stack(per_rank).mean(0)
        worst = max(worst, (g - want).abs().max().item())
        torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-5)
    # and the reference is not trivially met: the rule's gradients differ from BP's
    torch.manual_seed(seed)
    bp = fa.models.MLP(SIZES, activation="tanh")
    F.cross_entropy(bp(xb), yb).backward()
    if not any(
        not torch.allclose(a, b.grad, atol=1e-5)
        for a, b in zip(singles[rank], bp.parameters(), strict=True)
    ):
        raise AssertionError(f"{rule_name}'s gradients equal BP's: the check would prove nothing")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rule", choices=sorted(RULES), default="dfa")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64, help="per process")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="gradient check + 1 epoch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    x_train, y_train, x_test, y_test = load_digits_tensors()

    if args.smoke:
        args.epochs = 1
        for name in ("dfa", "fa"):
            worst = check_gradients(name, args.seed, x_train, y_train)
            if rank == 0:
                print(
                    f"{name}: FSDP gradients = mean of single-process {name} gradients "
                    f"over the {world} ranks' batches (max abs difference {worst:.1e})",
                    flush=True,
                )

    model = shard(build(args.rule, args.seed, x_train))
    sampler = DistributedSampler(TensorDataset(x_train, y_train), seed=args.seed)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=args.batch, sampler=sampler)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        total = torch.zeros(2)
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # reduce-scattered: each rank keeps its shard's averaged gradient
            optimizer.step()
            total += torch.tensor([loss.item() * len(y), len(y)])
        dist.all_reduce(total)
        if rank == 0:
            print(f"epoch {epoch + 1}: train loss {total[0] / total[1]:.4f}", flush=True)
    with torch.no_grad():  # every rank runs the forward: FSDP gathers the shards collectively
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    if rank == 0:
        print(f"{args.rule} with FSDP2 on {world} processes: test accuracy {accuracy:.4f}")


if __name__ == "__main__":
    with clean_exit():  # barrier, destroy_process_group, flush, os._exit: no abort at exit
        main()
