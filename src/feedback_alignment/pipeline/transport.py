"""Messages between pipeline stages over ``torch.distributed`` point-to-point operations.

A message is a fixed-size ``int64`` header (sequence number, shape, dtype, length of the optional
metadata), the optional ``int64`` metadata, then the tensor itself. Every (source, destination)
pair carries one stream only (activations go up the pipeline, errors come from the last stage), so
messages are matched by order; the tag names the stream for readability on gloo (NCCL ignores it).

Receiving happens on an :class:`Inbox` thread per stream, which waits on the receives in order and
puts what arrived in the stage's event queue. A thread is needed because a gloo ``irecv``'s
``is_completed()`` stays ``False`` until ``wait()`` is called (measured), so a main loop that only
polls would never see an error arrive; the waits release the GIL, and the stage's compute stays on
the main thread.
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

ACTIVATION_TAG = 1
ERROR_TAG = 2
MAX_DIMS = 8
_HEADER = 4 + MAX_DIMS  # seq, ndim, dtype, meta length, dims...
_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@dataclass
class Message:
    """One received tensor with its sequence number and metadata (empty when none was sent)."""

    kind: int
    seq: int
    tensor: torch.Tensor
    meta: list[int]


def send(
    tensor: torch.Tensor,
    dst: int,
    tag: int,
    seq: int,
    meta: list[int] | None = None,
    group: dist.ProcessGroup | None = None,
) -> list[dist.Work]:
    """Posts the header, metadata and tensor to ``dst``; returns the works (wait on them later).

    The caller keeps the returned works, which hold the tensors alive until they are sent.
    """
    if tensor.dim() > MAX_DIMS:
        raise ValueError(f"pipeline messages support up to {MAX_DIMS} dims, got {tensor.dim()}")
    if tensor.dtype not in _DTYPES:
        raise TypeError(f"pipeline messages carry float tensors {_DTYPES}, got {tensor.dtype}")
    meta = meta or []
    header = torch.zeros(_HEADER, dtype=torch.int64)
    header[0], header[1] = seq, tensor.dim()
    header[2], header[3] = _DTYPES.index(tensor.dtype), len(meta)
    header[4 : 4 + tensor.dim()] = torch.tensor(tensor.shape, dtype=torch.int64)
    device = tensor.device
    parts = [header.to(device)]
    if meta:
        parts.append(torch.tensor(meta, dtype=torch.int64, device=device))
    if tensor.numel():
        parts.append(tensor.contiguous())
    return [dist.isend(part, dst, group=group, tag=tag) for part in parts]


class Inbox(threading.Thread):
    """Receives ``expect(n)`` messages from ``src``, in order, into ``events``.

    Failures (a timeout, a peer that died) are put in ``events`` as the exception, so the stage's
    main loop raises them instead of waiting forever.
    """

    def __init__(
        self,
        src: int,
        tag: int,
        events: queue.Queue,
        device: torch.device,
        timeout: float,
        group: dist.ProcessGroup | None = None,
    ) -> None:
        super().__init__(name=f"inbox-from-{src}-tag-{tag}", daemon=True)
        self.src, self.tag, self.events = src, tag, events
        self.device, self.group = device, group
        # twice the stage's own timeout: the stage's wait on ``events`` fires first and names what
        # it waited for; this one only frees the thread
        self.timeout = timedelta(seconds=2 * timeout)
        self.requests: queue.Queue[int | None] = queue.Queue()

    def expect(self, count: int = 1) -> None:
        """Asks for ``count`` more messages."""
        self.requests.put(count)

    def stop(self) -> None:
        """Ends the thread once the messages already asked for have arrived."""
        self.requests.put(None)

    def _recv(self, tensor: torch.Tensor) -> None:
        work = dist.irecv(tensor, self.src, group=self.group, tag=self.tag)
        work.wait(self.timeout)

    def run(self) -> None:
        try:
            while (count := self.requests.get()) is not None:
                for _ in range(count):
                    header = torch.empty(_HEADER, dtype=torch.int64, device=self.device)
                    self._recv(header)
                    values = header.tolist()
                    seq, ndim, dtype, meta_len = values[:4]
                    shape = values[4 : 4 + ndim]
                    meta: list[int] = []
                    if meta_len:
                        meta_tensor = torch.empty(meta_len, dtype=torch.int64, device=self.device)
                        self._recv(meta_tensor)
                        meta = meta_tensor.tolist()
                    tensor = torch.empty(shape, dtype=_DTYPES[dtype], device=self.device)
                    if math.prod(shape):
                        self._recv(tensor)
                    self.events.put(Message(self.tag, seq, tensor, meta))
        except Exception as exc:  # handed to the main loop, which raises it
            self.events.put(exc)
