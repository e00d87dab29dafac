"""Step time and peak memory of every rule against backpropagation, on the six model families.

What is timed: a training *step*, ``zero_grad(set_to_none=True)``, forward, loss, ``backward()``,
``SGD.step()`` (lr 1e-3, weight decay 1e-4, which Kolen-Pollack needs), on one fixed batch. Every
variant (a rule, a placement of feedback points, or a hand-written floor) trains its own copy of
the same initial model.

Workloads (``size="full"``, realistic CPU sizes; ``"tiny"`` keeps the code paths for tests):

* mlp: tanh MLP 784-1024x8-10, batch 256 (the DFA papers' MNIST net);
* convnets: LeNet-5 on 28x28 (Fashion-MNIST), batch 256; ResNet-20 with BatchNorm on 32x32
  (CIFAR-10), batch 64;
* transformer: post-LN char Transformer 6x256, 8 heads, 8 x 64 tokens; macro and micro points;
* gcn: 2-layer GCN, 16 hidden, on a random graph of Cora's size (2,708 nodes, 1,433 sparse binary
  features, 10,556 edges, 7 classes): no download;
* deepfm: DeepFM, 39 fields, embeddings 10, MLP 400x3, batch 2048;
* nerf: NeRF field 8x256 (skip at 4) rendered on 256 rays x 32 samples.

Direct rules (DFA, sign-DFA, Shallow) get explicit feedback points (block outputs for residual
models, the paper's macro/micro placements for the Transformer, the error taken where the
experiments take it). For each of them a **floor** row does the same cut and the same single
projection written by hand here (forward hooks that detach each point's output, one
``autograd.Function`` at the error site that returns ``e @ B`` sliced per point), with no library
code, so that the distance between a rule and its floor is the library's own overhead.

Statistics: after one untimed step per variant (it fixes the feedback layouts) and ``warmup``
more, the variants' steps are **interleaved**, one step of each per round in
an order that rotates every round, so that drifts in machine load hit them alike. Each variant
reports its median and interquartile range; ratios (to BP, to the floor) are ratios of medians over
the same rounds, with a 95% confidence interval from a paired bootstrap over rounds (rounds are
resampled together, keeping the pairing). Peak memory is the peak of bytes held by tensors
allocated during one untimed step (the allocator's events from the PyTorch profiler on CPU,
``torch.cuda.max_memory_allocated`` on a GPU).

Run it with ``feedback-alignment bench`` (JSON, a markdown table and a plot). Timings on a shared
machine are no pass/fail criterion: tests run the tiny size for the structure of the output only.
"""

from feedback_alignment.bench.floor import FLOOR_SIGNALS
from feedback_alignment.bench.results import (
    COMPILED,
    FLOOR_SUFFIX,
    Row,
    WorkloadResult,
    load_results,
    machine_description,
    plot,
    to_markdown,
    write_results,
)
from feedback_alignment.bench.timing import (
    DIRECT_RULES,
    LR,
    RULES,
    WEIGHT_DECAY,
    peak_step_memory,
    ratio_interval,
    run,
    run_workload,
)
from feedback_alignment.bench.workloads import FAMILIES, SIZES, Workload, random_graph, workloads

__all__ = [
    "COMPILED",
    "DIRECT_RULES",
    "FAMILIES",
    "FLOOR_SIGNALS",
    "FLOOR_SUFFIX",
    "LR",
    "RULES",
    "SIZES",
    "WEIGHT_DECAY",
    "Row",
    "Workload",
    "WorkloadResult",
    "load_results",
    "machine_description",
    "peak_step_memory",
    "plot",
    "random_graph",
    "ratio_interval",
    "run",
    "run_workload",
    "to_markdown",
    "workloads",
    "write_results",
]
