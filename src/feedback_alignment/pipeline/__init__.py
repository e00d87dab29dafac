"""Pipeline-parallel DFA over processes: each stage learns from the output error alone.

DFA needs no backward pass between layers: once the error ``e`` of a micro-batch is known, every
stage computes its update from ``B_s e`` and its own activations. Here a model split into ``S``
stages runs on ``S`` processes (torch.distributed: gloo on CPU, NCCL on GPU, launched with
``torchrun``); activations go up the pipeline and only ``e`` comes back. See ``docs/PIPELINE.md``.

    stages = split_sequential(model, [4])                 # model[0:4], model[4:]
    points = stage_points(model, [4])                     # per stage: boundary + activations
    stage = DFAPipelineStage(stages[rank], fa.DFA(seed=0), points=points[rank],
                             optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
                             micro_batches=4, loss_fn=F.cross_entropy)
    for x, y in loader:
        stage.step(x, y)                                  # every rank, the same batch
"""

from feedback_alignment.pipeline.launch import free_port, run_local
from feedback_alignment.pipeline.partition import split_sequential, stage_points
from feedback_alignment.pipeline.stage import DFAPipelineStage, TimelineEvent

__all__ = [
    "DFAPipelineStage",
    "TimelineEvent",
    "free_port",
    "run_local",
    "split_sequential",
    "stage_points",
]
