"""Data-parallel DFA (or FA) with DistributedDataParallel on gloo, 2 processes, ending cleanly.

What it shows:

* a rule is applied to the plain model **before** it is wrapped in ``DistributedDataParallel``;
  the training loop is the ordinary DDP loop (``DistributedSampler``, ``loss.backward()``,
  ``optimizer.step()``): DDP all-reduces the rule's gradients like BP's;
* the feedback matrices are **identical on every rank without any communication**: they are
  buffers drawn from the rule's seed (``fa.DFA(seed=0)``), so each rank builds the same ones; the
  script compares a SHA-256 of every feedback buffer across ranks before DDP is built (DDP
  broadcasts the buffers it sees at construction, which would hide a difference);
* the parameters stay identical across ranks after training (DDP's averaged gradients);
* the process ends cleanly: ``feedback_alignment.distributed.clean_exit`` runs a barrier,
  ``destroy_process_group()``, flushes the output and leaves with ``os._exit`` (a gloo process
  left to the interpreter's teardown can abort with "terminate called without an active
  exception"; see docs/distributed.md).

Data: scikit-learn's bundled digits (1437 train / 360 test images of 8x8), standardised; a tanh
MLP 64-256-256-10.

Launch (from the repository root)::

    torchrun --standalone --nproc_per_node=2 examples/distributed/ddp.py --smoke
    torchrun --standalone --nproc_per_node=2 examples/distributed/ddp.py --rule fa --epochs 20

(``python -m torch.distributed.run`` is the same launcher as ``torchrun``.) ``--smoke`` trains 2
epochs (a few seconds of compute on one core per process). The script sets one torch thread per
process; run ``OMP_NUM_THREADS=1 torchrun ...`` to silence torchrun's thread warning.
"""

from __future__ import annotations

import argparse
import hashlib

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

import feedback_alignment as fa
from feedback_alignment import data
from feedback_alignment.distributed import clean_exit

RULES = {"dfa": fa.DFA, "fa": fa.FA, "bp": fa.BP}


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits from the library's data registry (bundled with scikit-learn, no download): the
    fixed 80/20 split, flattened to 64 features and standardised with the training statistics."""
    digits = data.load("digits")
    x_train, x_test = digits.x_train.flatten(1).float(), digits.x_test.flatten(1).float()
    mean, std = x_train.mean(0), x_train.std(0) + 0.1
    return (x_train - mean) / std, digits.y_train, (x_test - mean) / std, digits.y_test


def feedback_digest(model: torch.nn.Module) -> dict[str, str]:
    """SHA-256 of every feedback buffer in ``model`` (name -> hex digest)."""
    return {
        name: hashlib.sha256(buf.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        for name, buf in model.state_dict().items()
        if "feedback" in name
    }


def check_same_on_every_rank(what: str, value: object) -> None:
    """Gathers ``value`` from every rank and raises if any rank differs from rank 0."""
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    if any(v != gathered[0] for v in gathered):
        raise AssertionError(f"{what} differ across ranks: {gathered}")
    if dist.get_rank() == 0:
        print(f"{what}: identical on all {len(gathered)} ranks", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rule", choices=sorted(RULES), default="dfa")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64, help="per process")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="2 epochs: a quick check")
    args = parser.parse_args()
    if args.smoke:
        args.epochs = 2
    torch.set_num_threads(1)
    dist.init_process_group("gloo")  # "nccl" on GPUs; torchrun sets rank, world size, address
    rank, world = dist.get_rank(), dist.get_world_size()

    x_train, y_train, x_test, y_test = load_digits_tensors()
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = fa.models.MLP([64, 256, 256, 10], activation="tanh")
    rule = RULES[args.rule](seed=args.seed)
    rule.apply(model)  # before DDP: DDP registers the parameters it holds
    # DFA draws its matrix at the first forward (when the widths are known): run one
    model(x_train[:2])
    model.zero_grad(set_to_none=True)
    digest = feedback_digest(model)
    if args.rule != "bp":
        assert digest, "the rule registered no feedback buffer"
        check_same_on_every_rank(f"{len(digest)} feedback buffer(s) of {args.rule}", digest)

    ddp = DistributedDataParallel(model)
    sampler = DistributedSampler(TensorDataset(x_train, y_train), seed=args.seed)
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=args.batch, sampler=sampler)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)  # each rank its own shard, reshuffled every epoch
        total = torch.zeros(2)
        for x, y in loader:
            loss = F.cross_entropy(ddp(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # the rule's gradients, averaged over the ranks by DDP
            optimizer.step()
            total += torch.tensor([loss.item() * len(y), len(y)])
        dist.all_reduce(total)
        if rank == 0:
            print(f"epoch {epoch + 1}: train loss {total[0] / total[1]:.4f}", flush=True)

    params = hashlib.sha256(
        b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    ).hexdigest()
    check_same_on_every_rank("trained parameters", params)
    check_same_on_every_rank("feedback buffers after training", feedback_digest(model))
    if rank == 0:
        with torch.no_grad():
            accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
        print(f"{args.rule} on {world} processes: test accuracy {accuracy:.4f}", flush=True)


if __name__ == "__main__":
    with clean_exit():  # barrier, destroy_process_group, flush, os._exit: no abort at exit
        main()
