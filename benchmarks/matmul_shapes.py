"""Times the three matrix products of one hidden layer of the benchmark's 8x1024 tanh MLP.

Per hidden layer a BP step computes the forward product, the weight gradient and the input
gradient; a DFA step skips the input gradient. Their relative cost bounds DFA's step-time ratio:
    (forward + weight gradient) / (forward + weight gradient + input gradient)
Run: python3 benchmarks/matmul_shapes.py  (docs/BENCHMARKS.md quotes its output)
"""

from __future__ import annotations

import statistics
import time

import torch


def median_ms(fn, repeats: int = 30, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(batch: int = 256, width: int = 1024) -> None:
    h = torch.randn(batch, width)
    delta = torch.randn(batch, width)
    weight = torch.randn(width, width)
    bias = torch.zeros(width)
    forward = median_ms(lambda: torch.addmm(bias, h, weight.t()))
    weight_grad = median_ms(lambda: delta.t().mm(h))
    input_grad = median_ms(lambda: delta.mm(weight))
    print(f"threads {torch.get_num_threads()}, batch {batch}, width {width}")
    print(f"forward  (h @ W^T)      {forward:6.2f} ms")
    print(f"weight grad (d^T @ h)   {weight_grad:6.2f} ms")
    print(f"input grad  (d @ W)     {input_grad:6.2f} ms   (BP only)")
    bound = (forward + weight_grad) / (forward + weight_grad + input_grad)
    print(f"hidden-layer bound on DFA/BP: {bound:.3f}")


if __name__ == "__main__":
    main()
