"""One stage of a pipeline-parallel DFA model: forward up the pipeline, only ``e`` comes back.

Rank ``s`` of ``S`` processes holds stage ``s``. A step splits the batch into ``M`` micro-batches.
For each micro-batch ``i`` stage ``s`` receives ``h_(s-1)`` (stage 0: the input), runs its layers,
and sends its output ``h_s`` (a feedback point: sent detached) to stage ``s + 1``. The last stage
computes the loss and the error of its output, ``e_i = dL/dy_i``, and sends ``e_i`` to every other
stage. Each stage then computes its weight gradients on its own, from its stored activations and
its slice of the feedback matrix (Nøkland 2016):

    delta_l = (B_l e) * f'(a_l),        dW_l = delta_l h_(l-1)^T

with ordinary local backprop between two points of the same stage. No gradient ever travels
backwards between stages, so a stage applies ``e_i`` as soon as it arrives, between the forwards of
later micro-batches, and steps its own optimizer.

Feedback: all points of all stages share the layout of single-process ``fa.DFA`` (one buffer
``B`` of shape ``(d_out, total)`` drawn by :func:`feedback_alignment.feedback.draw` from the rule's
seed, sliced and scaled by :class:`feedback_alignment.feedback.FeedbackLayout`); every stage draws
the same buffer and keeps its own columns. The point widths are learned in the first micro-batch:
their shapes travel up with the first activation, the last stage builds the layout and sends the
widths down with the first error. So the gradients are those of ``fa.DFA`` on the unsplit model
with the same points, whatever ``S`` and ``M`` (each micro-batch loss is weighted by its share of
the batch, ``L = sum_i (n_i / N) L_i``, which is the batch mean of a mean-reduced loss).

Modes:

* ``"sync"``: the optimizer steps once every error of the step has been applied (a flush): the
  update is exactly DFA's.
* ``"async"``: a stage steps without waiting; errors that have not arrived yet are applied to a
  later step (every error is applied exactly once). At most ``max_pending`` micro-batches wait for
  their error (the stage blocks beyond that), which bounds the staleness. Each micro-batch's
  backward uses the weights of its own forward ("weight stashing", Narayanan et al. 2019): the
  forward runs through a copy of the parameters taken after each step, through which the gradient
  reaches the parameters, so an optimizer step never invalidates a pending graph.

References:
    Nøkland, "Direct Feedback Alignment Provides Learning in Deep Neural Networks", NeurIPS 2016.
    Launay, Poli, Krzakala, "Principled Training of NNs with Direct Feedback Alignment", 2019
    ("updating layers asynchronously").
    Narayanan et al., "PipeDream: Generalized Pipeline Parallelism for DNN Training", SOSP 2019.
"""

from __future__ import annotations

import math
import queue
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import nn
from torch.func import functional_call

from feedback_alignment.cut import verify_cut
from feedback_alignment.feedback import FeedbackLayout
from feedback_alignment.pipeline.layout import (
    build_layout,
    decode_shapes,
    encode_shapes,
    rule_buffer,
    stage_matrix,
    widths_from_shapes,
)
from feedback_alignment.pipeline.transport import ACTIVATION_TAG, ERROR_TAG, Inbox, Message, send
from feedback_alignment.points import PlacementError, find_points
from feedback_alignment.projector import Projector
from feedback_alignment.rules import DFA

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerSpec = torch.optim.Optimizer | Callable[[list[nn.Parameter]], torch.optim.Optimizer]
Mode = Literal["sync", "async"]


@dataclass(frozen=True)
class TimelineEvent:
    """One piece of a stage's compute: ``kind`` is forward, backward (DFA update) or step."""

    kind: str
    step: int
    micro: int
    start: float
    end: float


@dataclass
class _Pending:
    """A micro-batch whose error has not been applied: its points' tensors (with their graph)."""

    seq: int
    step: int
    hidden: list[torch.Tensor]


class DFAPipelineStage:
    """The stage of this process (rank ``s`` runs stage ``s``) in a pipeline trained by DFA.

    Every rank calls :meth:`step` once per batch with the same arguments: stage 0 reads
    ``inputs``, the last stage reads ``targets``, the others may pass ``None``. Constructing a
    stage is collective (it creates the pipeline's process groups): every rank constructs its
    stage, in the same order as the others.

    Args:
        module: this stage's layers (e.g. one item of :func:`split_sequential`).
        rule: an ``fa.DFA``: its ``distribution``, ``scale``, ``shared`` and ``seed`` choose the
            feedback matrix exactly as single-process DFA does.
        optimizer: an optimizer over ``module``'s parameters, or a function that makes one from
            the parameter list.
        micro_batches: ``M``, the number of micro-batches a batch is split into (along dim 0).
        points: paths of this stage's feedback points (see :func:`stage_points`); every stage but
            the last must have its output among them (the stage boundary).
        loss_fn: ``loss_fn(y, targets)``, a mean-reduced loss; needed on the last stage.
        mode: ``"sync"`` (exact DFA) or ``"async"`` (bounded staleness, see the module doc).
        max_pending: in async mode, how many micro-batches may wait for their error (default
            ``2 * micro_batches``).
        timeout: seconds any wait may take before it raises ``TimeoutError``.
        device: where activations and errors live (default: the current CUDA device under NCCL,
            else the CPU).
        record: keep a :class:`TimelineEvent` per forward, backward and step in ``timeline``.
    """

    def __init__(
        self,
        module: nn.Module,
        rule: DFA,
        *,
        optimizer: OptimizerSpec,
        micro_batches: int,
        points: Sequence[str] = (),
        loss_fn: LossFn | None = None,
        mode: Mode = "sync",
        max_pending: int | None = None,
        timeout: float = 60.0,
        device: torch.device | str | None = None,
        record: bool = False,
    ) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError(
                "DFAPipelineStage needs torch.distributed: launch with torchrun and call "
                "torch.distributed.init_process_group('gloo') (CPU) or ('nccl') (GPU) first"
            )
        if type(rule) is not DFA:
            raise TypeError(
                f"DFAPipelineStage trains with fa.DFA only, got {type(rule).__name__}: sign-DFA "
                "normalises by the size of the whole batch and DRTP needs the targets at every "
                "stage, neither of which a stage sees"
            )
        if int(micro_batches) < 1:
            raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        self.stage, self.stages = dist.get_rank(), dist.get_world_size()
        if self.stages < 2:
            raise ValueError("a pipeline needs at least 2 processes (world size is 1)")
        self.is_first, self.is_last = self.stage == 0, self.stage == self.stages - 1
        if self.is_last and loss_fn is None:
            raise ValueError(f"stage {self.stage} is the last stage: it needs loss_fn")
        self.module, self.rule, self.loss_fn = module, rule, loss_fn
        self.micro_batches, self.mode = int(micro_batches), mode
        self.max_pending = 2 * self.micro_batches if max_pending is None else int(max_pending)
        if self.max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.timeout = float(timeout)
        if device is None:
            nccl = dist.get_backend() == "nccl"
            device = torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu"
        self.device = torch.device(device)
        if isinstance(optimizer, torch.optim.Optimizer):
            self.optimizer = optimizer
        else:
            self.optimizer = optimizer(list(module.parameters()))
        self.points = self._install_points(points)
        self.record = bool(record)
        self.timeline: list[TimelineEvent] = []
        self.staleness: Counter[int] = Counter()
        """In async mode: how many optimizer steps late each error was applied (0 = in time)."""

        self._records: list[torch.Tensor] = []
        self._record_names: list[str] = []
        self._verified: set[tuple] = set()  # point shapes (per sample) whose cut was proved
        self._last_cut: torch.Tensor | None = None
        self._forwarding = False
        self._pending: deque[_Pending] = deque()
        self._activations: deque[Message] = deque()
        self._events: queue.Queue[Any] = queue.Queue()
        self._seq = 0
        self._step = 0
        self._upstream: list[list[int]] | None = [] if self.is_first else None
        self._first_index = 0
        self._own_shapes: list[list[int]] | None = None
        self._layout: FeedbackLayout | None = None
        self._buffer: torch.Tensor | None = None  # the rule's B, drawn from its seed
        self._dtype = torch.float32  # of the buffer: float64 for float64 models
        self._projector: Projector | None = None  # this stage's run of points
        self._error_meta: list[int] | None = None
        self._weights: dict[str, torch.Tensor] | None = None
        if self.mode == "async" and not self.is_last:
            self._refresh_weights()
        # one process group per stream (activations s -> s+1, errors last -> s), so that each
        # communicator is used by one thread per rank: the sender's main thread and the receiver's
        # inbox (NCCL does not promise more). Every rank creates every group, in the same order.
        last = self.stages - 1
        self._act_groups = [dist.new_group([s, s + 1]) for s in range(last)]
        self._err_groups = [dist.new_group([s, last]) for s in range(last)]
        self._inbox_act = None
        self._inbox_err = None
        if not self.is_first:
            self._inbox_act = Inbox(
                self.stage - 1,
                ACTIVATION_TAG,
                self._events,
                self.device,
                self.timeout,
                self._act_groups[self.stage - 1],
            )
            self._inbox_act.start()
        if not self.is_last:
            self._inbox_err = Inbox(
                last,
                ERROR_TAG,
                self._events,
                self.device,
                self.timeout,
                self._err_groups[self.stage],
            )
            self._inbox_err.start()

    # --- feedback points -------------------------------------------------------------------------

    def _install_points(self, points: Sequence[str]) -> list[str]:
        names = [points] if isinstance(points, str) else list(points)
        if any(name.endswith(":input") for name in names):
            raise PlacementError(
                f"stage {self.stage}: points at a module's input ({names}) are not supported by "
                "the pipeline; name the module whose output is the point"
            )
        if not names:
            if not self.is_last:
                raise PlacementError(
                    f"stage {self.stage} has no feedback point: its output (the stage boundary) "
                    "must be one; pass points=stage_points(model, boundaries)[rank]"
                )
            return []
        found = find_points(self.module, names)
        for name, module in found:
            module.register_forward_hook(self._make_hook(name))
        return names

    def _make_hook(self, name: str) -> Callable[..., Any]:
        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if not self._forwarding or not torch.is_grad_enabled():
                return None
            if isinstance(output, torch.Tensor):
                tensor, rest = output, None
            elif isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                tensor, rest = output[0], output[1:]
            else:
                raise PlacementError(
                    f"stage {self.stage}: feedback point {name!r} returned "
                    f"{type(output).__name__}, not a tensor or a tuple that starts with one"
                )
            if not tensor.requires_grad:
                return None  # nothing below learns (same rule as fa.DFA)
            self._records.append(tensor)
            self._record_names.append(name)
            cut = tensor.detach()
            self._last_cut = cut
            return cut if rest is None else (cut, *rest)

        return hook

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._records, self._record_names, self._last_cut = [], [], None
        self._forwarding = True
        try:
            if self._weights is not None:
                out = functional_call(self.module, self._weights, (x,))
            else:
                out = self.module(x)
        finally:
            self._forwarding = False
        hidden, self._records = self._records, []
        names, self._record_names = self._record_names, []
        if not isinstance(out, torch.Tensor):
            raise TypeError(
                f"stage {self.stage} returned {type(out).__name__}; a pipeline stage must return "
                "one tensor"
            )
        if not self.is_last and (out is not self._last_cut or not hidden):
            raise PlacementError(
                f"stage {self.stage}'s output is not a feedback point: the last of its points "
                f"({self.points}) must be its last module, whose output goes to the next stage "
                "(stage_points() does this)"
            )
        if self.is_last and not out.requires_grad:
            raise PlacementError(
                f"the output of the last stage ({self.stage}) does not require grad: a feedback "
                "point cut the graph after the top layer; leave that point out"
            )
        self._last_cut = None
        key = (tuple(names), tuple(tuple(h.shape[1:]) for h in hidden))
        if key not in self._verified:
            self._verify_cut(out, names, hidden)
            self._verified.add(key)
        if self._own_shapes is None:
            self._own_shapes = [list(h.shape) for h in hidden]
        return out, hidden

    def _verify_cut(self, out: torch.Tensor, names: list[str], hidden: list[torch.Tensor]) -> None:
        """Proves the stage's cut as single-process DFA does (:mod:`feedback_alignment.cut`):
        no path from the stage's output (the last stage's ``y``) or from one point's tensor
        reaches below another point around the cut: an inline residual ``x + f(x)`` around a
        point inside ``f`` would train the layers below it by backprop within the stage."""
        stashed = None
        if self._weights is not None:  # the graph's leaves are the stashed copies
            stashed = {id(tensor): name for name, tensor in self._weights.items()}
        outputs = [("the stage's output", out)] if out.requires_grad else []
        report = verify_cut(
            self.module,
            outputs,
            list(zip(names, hidden, strict=True)),
            lambda node: False,  # the error enters y directly: no injection node in a stage
            parameter_names=stashed,
        )
        if report.leaks:
            point, params, other = report.leaks[0]
            raise PlacementError(
                f"stage {self.stage}: the feedback points {names} do not cut the stage's graph: "
                f"{other or 'the output'} reaches {params[:4]} below point {point!r} around "
                "the cut (a residual connection or a second consumer of a tensor below the "
                "point), so those parameters would learn by backprop. Place the points at the "
                "outputs of whole blocks (a residual block's output, not a layer inside it)"
            )

    # --- feedback layout ---------------------------------------------------------------------------

    def _build_layout(self, y: torch.Tensor) -> list[int]:
        """On the last stage: the layout from every point's shape and ``y``'s; returns the meta
        (``d_out``, count, widths) that the first error carries to the other stages."""
        if self._upstream is None or self._own_shapes is None:
            raise RuntimeError(f"stage {self.stage}: the layout is built after a first forward")
        widths = widths_from_shapes([*self._upstream, *self._own_shapes], y.shape)
        d_out = y.shape[-1] if y.dim() > 1 else 1
        self._set_layout(widths, d_out, dtype=y.dtype)
        return [d_out, len(widths), *widths]

    def _set_layout(self, widths: list[int], d_out: int, dtype: torch.dtype) -> None:
        self._layout = build_layout(self.rule, widths, d_out)
        count = len(self._own_shapes or [])
        self._dtype = torch.float64 if dtype == torch.float64 else torch.float32
        if count:
            # the single-process rule's buffer and projection, for this stage's points only
            self._projector = Projector(self._layout, self.rule.signal, self._first_index, count)
            buffer = rule_buffer(self.rule, self._layout, self._dtype, self.device)
            self._buffer = self._projector.span(buffer).clone()  # only the columns it reads

    def feedback_matrix(self) -> torch.Tensor | None:
        """This stage's ``[B_l ...]`` side by side, shape ``(d_out, sum of its widths)`` (drawn
        again from the seed: an inspection, not the stage's working copy)."""
        if self._layout is None:
            return None
        count = len(self._own_shapes or [])
        return stage_matrix(
            self.rule, self._layout, self._first_index, count, dtype=self._dtype, device=self.device
        )

    # --- the update --------------------------------------------------------------------------------

    def _signals(self, error: torch.Tensor, hidden: list[torch.Tensor]) -> list[torch.Tensor]:
        """``B_l e`` for each of this stage's points: one matmul, then a slice per point."""
        if not hidden:
            return []
        layout, projector, buffer = self._layout, self._projector, self._buffer
        assert layout is not None and projector is not None and buffer is not None
        rows = error.numel() // layout.out_features
        for index, h in enumerate(hidden):
            width = layout.widths[self._first_index + index]
            if h.numel() != rows * width:
                raise PlacementError(
                    f"stage {self.stage}: feedback point {index} has shape {tuple(h.shape)}, "
                    f"not {width} features per sample as when the feedback was drawn; a "
                    "point's width cannot change between steps"
                )
        projected = projector.project(error.reshape(rows, layout.out_features), buffer)
        return [row.reshape(h.shape) for row, h in zip(projected, hidden, strict=True)]

    def _apply(self, message: Message) -> None:
        if self._layout is None:
            meta = message.meta
            if not meta:
                raise RuntimeError(f"stage {self.stage}: the first error came without its layout")
            d_out, count = meta[:2]
            self._set_layout(list(meta[2 : 2 + count]), d_out, message.tensor.dtype)
        if not self._pending:
            raise RuntimeError(f"stage {self.stage}: an error arrived for no pending micro-batch")
        pending = self._pending.popleft()
        if pending.seq != message.seq:
            raise RuntimeError(
                f"stage {self.stage}: got the error of micro-batch {message.seq} while expecting "
                f"{pending.seq}: do all ranks use the same micro_batches?"
            )
        start = time.perf_counter()
        torch.autograd.backward(pending.hidden, self._signals(message.tensor, pending.hidden))
        self._log("backward", message.seq, start)
        self.staleness[self._step - pending.step] += 1

    def _finish_last(
        self, y: torch.Tensor, hidden: list[torch.Tensor], target: torch.Tensor, share: float
    ) -> tuple[float, list[dist.Work]]:
        """Last stage: loss and ``e``, send ``e`` to every stage, then its own update."""
        start = time.perf_counter()
        leaf = y.detach().requires_grad_()
        with torch.enable_grad():
            loss = self.loss_fn(leaf, target) * share
            (error,) = torch.autograd.grad(loss, leaf)
        if self.rule.check_finite and not math.isfinite(error.sum().item()):
            raise FloatingPointError(
                f"the output error dL/dy of micro-batch {self._seq} contains NaN/Inf; DFA would "
                "feed it to every stage. Check the loss, the learning rate and the inputs"
            )
        if self._layout is None:
            self._error_meta = self._build_layout(y)
        meta, self._error_meta = self._error_meta, None
        works = []
        for dst in range(self.stages - 1):
            works += send(error, dst, ERROR_TAG, self._seq, meta, self._err_groups[dst])
        self._log("loss", self._seq, start)
        start = time.perf_counter()
        torch.autograd.backward([y, *hidden], [error, *self._signals(error, hidden)])
        self._log("backward", self._seq, start)
        return float(loss.detach()), works

    # --- events ------------------------------------------------------------------------------------

    def _next_event(self, what: str, block: bool = True) -> Message | None:
        try:
            item = self._events.get(timeout=self.timeout) if block else self._events.get_nowait()
        except queue.Empty:
            if not block:
                return None
            raise TimeoutError(
                f"stage {self.stage} waited {self.timeout:g} s for {what}; another stage has "
                "probably failed, or the ranks disagree on micro_batches or on the batches"
            ) from None
        if isinstance(item, BaseException):
            raise RuntimeError(f"stage {self.stage}: receiving {what} failed: {item}") from item
        return item

    def _handle(self, message: Message) -> None:
        if message.kind == ERROR_TAG:
            self._apply(message)
        else:
            self._activations.append(message)

    def _drain(self, limit: int | None) -> None:
        """Applies every error that has arrived; then blocks until at most ``limit`` are pending."""
        while (message := self._next_event("an error", block=False)) is not None:
            self._handle(message)
        while limit is not None and len(self._pending) > limit:
            seq = self._pending[0].seq
            self._handle(self._next_event(f"the error of micro-batch {seq}"))

    def _activation(self) -> Message:
        while not self._activations:
            self._handle(self._next_event(f"the activation of micro-batch {self._seq}"))
        message = self._activations.popleft()
        if message.seq != self._seq:
            raise RuntimeError(
                f"stage {self.stage}: got micro-batch {message.seq}, expected {self._seq}"
            )
        if self._upstream is None:
            self._upstream = decode_shapes(message.meta)
            self._first_index = len(self._upstream)
        return message

    # --- the step ----------------------------------------------------------------------------------

    def step(
        self, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None
    ) -> float | None:
        """Trains on one batch; returns the batch's mean loss on the last stage, else ``None``."""
        count = self.micro_batches
        if self.is_first:
            if inputs is None:
                raise ValueError("stage 0 needs the inputs: step(inputs, targets)")
            if inputs.shape[0] < count:
                raise ValueError(f"a batch of {inputs.shape[0]} cannot make {count} micro-batches")
            chunks = inputs.tensor_split(count)
        if self.is_last:
            if targets is None:
                raise ValueError(f"the last stage ({self.stage}) needs the targets")
            total = targets.shape[0]
            target_chunks = targets.tensor_split(count)
        if self._inbox_act is not None:
            self._inbox_act.expect(count)
        works: list[dist.Work] = []
        loss = 0.0
        for micro in range(count):
            x = chunks[micro].to(self.device) if self.is_first else self._activation().tensor
            start = time.perf_counter()
            out, hidden = self._forward(x)
            self._log("forward", self._seq, start)
            if self.is_last:
                target = target_chunks[micro].to(self.device)
                part, sent = self._finish_last(out, hidden, target, target.shape[0] / total)
                loss += part
                works += sent
            else:
                meta = None
                if self._seq == 0:
                    assert self._upstream is not None and self._own_shapes is not None
                    meta = encode_shapes([*self._upstream, *self._own_shapes])
                works += send(
                    out,
                    self.stage + 1,
                    ACTIVATION_TAG,
                    self._seq,
                    meta,
                    self._act_groups[self.stage],
                )
                self._pending.append(_Pending(self._seq, self._step, hidden))
                self._inbox_err.expect(1)
                self._drain(self.max_pending if self.mode == "async" else None)
            self._seq += 1
        if not self.is_last:
            self._drain(0 if self.mode == "sync" else None)
        self._wait(works)
        self._optimizer_step()
        return loss if self.is_last else None

    def finish(self) -> None:
        """Async mode: applies every error still pending and steps once more (call at the end)."""
        if not self.is_last and self._pending:
            self._drain(0)
            self._optimizer_step()

    def close(self) -> None:
        """Stops the receiving threads (after the messages already asked for)."""
        for inbox in (self._inbox_act, self._inbox_err):
            if inbox is not None:
                inbox.stop()
                inbox.join(timeout=self.timeout)

    def __enter__(self) -> DFAPipelineStage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- helpers -------------------------------------------------------------------------------------

    def _optimizer_step(self) -> None:
        start = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._step += 1
        if self._weights is not None:
            self._refresh_weights()
        self._log("step", -1, start)

    def _refresh_weights(self) -> None:
        # a differentiable copy: later forwards read it, its gradient reaches the parameter, and
        # the optimizer's in-place update of the parameter leaves pending graphs valid
        with torch.enable_grad():
            self._weights = {n: p.clone() for n, p in self.module.named_parameters()}

    def _wait(self, works: list[dist.Work]) -> None:
        for work in works:
            work.wait(timedelta(seconds=self.timeout))

    def _log(self, kind: str, micro: int, start: float) -> None:
        if self.record:
            self.timeline.append(TimelineEvent(kind, self._step, micro, start, time.perf_counter()))
