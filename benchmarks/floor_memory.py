"""Peak memory of one DFA step: the library (principled scale, and one common scale) vs the floor.

Why: in the per-family benchmark the library's DFA step holds more memory than the hand-written
floor on models whose feedback points have different widths (LeNet, ResNet, the Transformer's
micro placement). The principled scaling gives point ``l`` the factor
``sqrt(n_max / n_l) / sqrt(n_max d_out)``; with unequal widths these differ, and each point's slice
of the projection ``P = e B`` is multiplied by its own factor, one more tensor per point (also for
the widest point, which would otherwise read ``P`` itself). With one common scale (``scale=1.0``)
that multiply is skipped and the library's peak equals the floor's. Peak memory does not depend on
machine load, so this runs on a busy machine (one step per variant, a few seconds per family).

Run: python3 benchmarks/floor_memory.py [--size tiny]   (docs/BENCHMARKS.md quotes its output)
"""

from __future__ import annotations

import argparse

import torch

from feedback_alignment import bench as benchmark
from feedback_alignment.bench import floor, timing
from feedback_alignment.rules import DFA


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=benchmark.SIZES)
    parser.add_argument("--families", nargs="+", default=list(benchmark.FAMILIES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    print("| workload | points | library, principled (MiB) | library, scale=1.0 | floor |")
    print("|---|---|---:|---:|---:|")
    for workload in benchmark.workloads(args.families, args.size):
        inputs, target = workload.batch(torch.Generator().manual_seed(0))
        for placement, points in workload.placements.items():
            peaks = []
            for scale in ("principled", 1.0, None):
                torch.manual_seed(0)
                model = workload.build().train()
                if scale is None:
                    floor._Floor(model, points, workload.error_at, floor._dfa_signal)
                else:
                    DFA(seed=0, scale=scale).apply(model, points=points, error_at=workload.error_at)
                step = timing._step(model, inputs, target, workload.loss)
                step()  # fixes the feedback layout
                peaks.append(benchmark.peak_step_memory(step, device))
            print(
                f"| {workload.name} | {placement or 'default'} | "
                + " | ".join(f"{p:.1f}" for p in peaks)
                + " |",
                flush=True,
            )


if __name__ == "__main__":
    main()
