"""Paired, interleaved step times of the layer-wise rules against BP (one thread).

python layerwise_step.py [--rounds 40] [--batch 256] [--sizes 784,1024,1024,1024,1024,10]
Each round times one SGD step (zero_grad, forward, cross-entropy, backward, step) of every rule in
a shuffled order; the ratio per round is rule / BP of that round; medians and a bootstrap 95%
interval of the median ratio are printed, with the load average before and after.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import time

import torch
import torch.nn.functional as F

import feedback_alignment as fa
from feedback_alignment.bench import peak_step_memory


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--sizes", default="784,1024,1024,1024,1024,10")
    parser.add_argument("--rules", default="BP,FA,uSF,frSF,brSF,KP")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sizes = [int(s) for s in args.sizes.split(",")]
    base = fa.models.MLP(sizes, activation="tanh")
    x, y = torch.randn(args.batch, sizes[0]), torch.randint(0, sizes[-1], (args.batch,))
    factories = {
        "BP": fa.BP,
        "FA": lambda: fa.FA(seed=0),
        "uSF": fa.uSF,
        "frSF": lambda: fa.frSF(seed=0),
        "brSF": lambda: fa.brSF(seed=0),
        "KP": lambda: fa.KolenPollack(seed=0),
    }
    steps = {}
    for name in args.rules.split(","):
        model = copy.deepcopy(base)
        factories[name]().apply(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

        def step(model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

        steps[name] = step
    for step in steps.values():
        for _ in range(3):
            step()
    load_before = os.getloadavg()
    times = {name: [] for name in steps}
    order = list(steps)
    for _ in range(args.rounds):
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    load_after = os.getloadavg()
    memory = {name: peak_step_memory(step, torch.device("cpu")) for name, step in steps.items()}
    rng = random.Random(0)
    print(f"sizes {sizes} batch {args.batch} rounds {args.rounds} threads 1")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(
        "| rule | median step (ms) | ratio to BP (median of paired) | 95% CI | peak MiB | memory vs BP |"
    )
    print("|---|---|---|---|---|---|")
    for name in steps:
        ratios = [a / b for a, b in zip(times[name], times["BP"], strict=True)]
        boots = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(1000))
        print(
            f"| {name} | {1e3 * statistics.median(times[name]):.1f} | "
            f"{statistics.median(ratios):.3f}x | {boots[25]:.3f}-{boots[974]:.3f} | "
            f"{memory[name]:.1f} | {memory[name] / memory['BP']:.2f}x |"
        )


if __name__ == "__main__":
    main()
