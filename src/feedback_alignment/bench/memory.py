"""Peak activation memory of one training step against depth: BP, BP with activation
checkpointing, DFA, DRTP and forward-time DRTP (issue 24, item 3).

**Arms.** ``BP``; ``BP + checkpoint`` (every block under ``torch.utils.checkpoint`` with
``use_reentrant=False``: only each block's input is kept, the block is recomputed in the
backward pass); ``DFA`` and ``DRTP`` (``fa.DFA(seed=0)`` / ``fa.DRTP(seed=0)``, a feedback point
at every block output, the error taken at the logits); ``DRTP forward-time``
(``fa.DRTP(seed=0, forward_time=True)``: each block's weight gradient is formed during the
forward pass and its activations freed at once; only the block above the last point waits for
``loss.backward()``). The forward-time arm runs only where the installed library has the option
(``forward_time`` in ``fa.DRTP``'s signature); elsewhere it is recorded as ``not available``, with
no number. DRTP's targets are given one-hot (``rule.set_targets(y_onehot)``) before each forward.

**Models** (``size="full"``; ``"tiny"``, the quick mode, keeps the code paths at toy sizes, for
tests and a smoke run):

* ``mlp``: :class:`ResidualMLP`, ``Linear(784, 512)``, then ``depth`` pre-norm residual blocks
  ``x + W2 GELU(W1 LN(x))`` of width 512, then ``Linear(512, 10)``; batch 256.
* ``transformer``: the library's :class:`~feedback_alignment.models.transformer.CharTransformer`
  (post-LN), ``depth`` blocks of width 128, 4 heads, vocabulary 65; batch 8 x 64 tokens.

Depths 4, 8, 16, 32 and 64 blocks (tiny: 2, 4, 8).

**What is measured.** One training step, ``set_targets`` (DRTP), forward, loss, ``backward()``,
after one untimed warm-up step that allocates every ``.grad`` and lets the rules fix their
feedback layout and draw their matrices; the gradients are then zeroed *in place*, so that
parameters, their gradients and the feedback matrices are held before the step and are not
counted (there is no optimiser step, hence no optimiser state). The numbers are bytes of tensor
memory above what was held when the step began:

* ``peak``: the highest amount held at any moment of the step;
* ``forward_end``: held when the forward pass (and the loss) is done, just before ``backward()``:
  what the graph keeps for the backward pass;
* ``saved``: a cross-check of ``forward_end`` that does not use the allocator: the bytes of the
  distinct storages that autograd holds for the backward pass at the end of the forward
  (``torch.autograd.graph.saved_tensors_hooks`` sees every tensor saved; those still alive at the
  end of the forward are summed once per storage, parameters and the batch excluded). It is
  measured in a separate step before the profiled one. It cannot see inside a non-reentrant
  checkpoint, whose own hooks replace the saved tensors by handles (its column is empty there).

**How, on a CPU.** There is no ``max_memory_allocated`` for the CPU. The step runs under
``torch.profiler.profile(profile_memory=True)``, which records every allocation and every free of
the CPU allocator (``[memory]`` events, with signed sizes, whether made by the forward, by
autograd's engine or by a hook); sorted by time, their running sum is the memory held above the
start, and its maximum is ``peak``. A ``record_function`` range opened around ``backward()``
marks the end of the forward pass. The measurement is deterministic (it does not depend on load).
On CUDA: ``torch.cuda.reset_peak_memory_stats`` and ``max_memory_allocated`` minus
``memory_allocated`` at the start (the caching allocator's blocks, rounded up to 512 bytes).

**Limits.** Only memory that goes through PyTorch's allocator is seen: scratch space that a BLAS
or oneDNN kernel takes from its own allocator is not, nor is the Python heap (autograd's nodes,
the rules' bookkeeping). Sizes are bytes requested, not pages touched, so this is not the
process's resident memory. A tensor allocated before the step and freed during it counts
negatively (the step did release it).

Run it with ``feedback-alignment bench --memory`` (JSON, a markdown table and a plot).
"""

from __future__ import annotations

import gc
import inspect
import json
import math
import os
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from feedback_alignment.bench.results import machine_description
from feedback_alignment.provenance import commit, modified_sources

MIB = 2**20

ARMS = ("BP", "BP + checkpoint", "DFA", "DRTP", "DRTP forward-time")
"""The arms, in the order of the table and the plot's legend."""

FORWARD_TIME = "DRTP forward-time"

MODELS = ("mlp", "transformer")

DEPTHS: dict[str, tuple[int, ...]] = {"full": (4, 8, 16, 32, 64), "tiny": (2, 4, 8)}
"""Blocks per model, by size."""

BACKWARD_MARK = "feedback_alignment.bench.memory::backward"
"""The ``record_function`` range around ``backward()``: its start is the end of the forward."""


# ---- models -------------------------------------------------------------------------------------


class ResidualBlock(nn.Module):
    """``x + fc2(GELU(fc1(LN(x))))`` at one width (pre-norm)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ResidualMLP(nn.Module):
    """``Linear(in, width)``, ``depth`` :class:`ResidualBlock` s in ``blocks``, ``Linear(width,
    classes)``: an MLP whose depth is the number of blocks, with a feedback point at each block
    output (``blocks.0`` ... ``blocks.{depth-1}``)."""

    def __init__(self, in_features: int, width: int, depth: int, classes: int) -> None:
        super().__init__()
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class Checkpointed(nn.Module):
    """Runs ``block`` under ``torch.utils.checkpoint(..., use_reentrant=False)``: its input is
    kept, its activations are recomputed in the backward pass."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return checkpoint(self.block, x, use_reentrant=False)


@dataclass(frozen=True)
class ModelSpec:
    """One model family at one size: ``build(depth)`` gives a fresh model whose blocks are
    ``model.blocks``; ``batch(generator)`` gives ``(input, class targets)``; ``classes`` is the
    width of the output (for the one-hot targets)."""

    family: str
    description: str
    title: str  # the plot panel's
    build: Callable[[int], nn.Module]
    batch: Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]
    classes: int


def model_spec(family: str, size: str = "full") -> ModelSpec:
    """The model of ``family`` (:data:`MODELS`) at ``size`` (``"full"`` or ``"tiny"``)."""
    if size not in DEPTHS:
        raise ValueError(f"unknown size {size!r}; choose from {list(DEPTHS)}")
    if family == "mlp":
        features, width, classes, batch = (
            (784, 512, 10, 256) if size == "full" else (32, 64, 10, 64)
        )
        return ModelSpec(
            "mlp",
            f"residual MLP {features}-[{width} x depth]-{classes} (pre-LN blocks x + "
            f"W2 GELU(W1 LN(x))), batch {batch}",
            f"residual MLP, width {width}, batch {batch}",
            lambda depth: ResidualMLP(features, width, depth, classes),
            lambda g: (
                torch.randn(batch, features, generator=g),
                torch.randint(0, classes, (batch,), generator=g),
            ),
            classes,
        )
    if family == "transformer":
        from feedback_alignment.models.transformer import CharTransformer, TransformerConfig

        vocab, tokens, heads, width, batch = (
            (65, 64, 4, 128, 8) if size == "full" else (11, 16, 2, 32, 4)
        )

        def build(depth: int) -> nn.Module:
            config = TransformerConfig(
                vocab, block_size=tokens, n_layer=depth, n_head=heads, d_model=width
            )
            return CharTransformer(config)

        def make_batch(g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            ids = torch.randint(0, vocab, (batch, tokens + 1), generator=g)
            return ids[:, :-1], ids[:, 1:]

        return ModelSpec(
            "transformer",
            f"post-LN char Transformer, [depth] blocks of width {width}, {heads} heads, "
            f"vocabulary {vocab}, {batch} x {tokens} tokens",
            f"char Transformer (post-LN), width {width}, {batch} x {tokens} tokens",
            build,
            make_batch,
            vocab,
        )
    raise ValueError(f"unknown model family {family!r}; choose from {list(MODELS)}")


# ---- arms ---------------------------------------------------------------------------------------


def forward_time_available() -> bool:
    """Whether the installed library offers forward-time DRTP (``fa.DRTP(forward_time=True)``):
    ``forward_time`` in ``fa.DRTP``'s signature, or, where that signature only forwards
    ``**kwargs`` to a base class, a ``fa.DRTP(forward_time=True)`` that builds without a
    ``TypeError``."""
    import feedback_alignment as fa

    parameters = inspect.signature(fa.DRTP).parameters
    if "forward_time" in parameters:
        return True
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return False
    try:
        fa.DRTP(forward_time=True)
    except TypeError:
        return False
    return True


def _loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(output.flatten(0, -2), target.flatten())


@dataclass
class _Arm:
    """A model converted for one arm and the two halves of its step."""

    model: nn.Module
    forward: Callable[[], torch.Tensor]  # sets DRTP's targets, runs the forward, returns the loss
    batch: tuple[torch.Tensor, ...] = ()


def _build_arm(
    arm: str, spec: ModelSpec, depth: int, device: torch.device, seed: int
) -> _Arm | str:
    """The arm's model and step, or the reason it cannot run (forward-time DRTP not available)."""
    import feedback_alignment as fa

    if arm == FORWARD_TIME and not forward_time_available():
        return "not available: fa.DRTP has no forward_time option in this version"
    torch.manual_seed(seed)  # every arm of a depth starts from the same weights
    model = spec.build(depth).to(device).train()
    inputs, target = spec.batch(torch.Generator().manual_seed(seed))
    inputs, target = inputs.to(device), target.to(device)
    onehot = F.one_hot(target, spec.classes).float().flatten(0, -2)  # (samples, classes)
    points = [f"blocks.{i}" for i in range(depth)]
    rule = None
    if arm == "BP + checkpoint":
        for i, block in enumerate(model.blocks):
            model.blocks[i] = Checkpointed(block)
    elif arm == "DFA":
        rule = fa.DFA(seed=0)
    elif arm == "DRTP":
        rule = fa.DRTP(seed=0)
    elif arm == FORWARD_TIME:
        rule = fa.DRTP(seed=0, forward_time=True)
    elif arm != "BP":
        raise ValueError(f"unknown arm {arm!r}; choose from {list(ARMS)}")
    if rule is not None:
        rule.apply(model, points=points)
    drtp = isinstance(rule, fa.DRTP)

    def forward() -> torch.Tensor:
        if drtp:
            rule.set_targets(onehot)
        return _loss(model(inputs), target)

    return _Arm(model, forward, (inputs, target, onehot))


def _zero_grads(model: nn.Module) -> int:
    """Zeroes every ``.grad`` in place; returns how many parameters have none."""
    missing = 0
    for parameter in model.parameters():
        if parameter.grad is None:
            missing += 1
        else:
            parameter.grad.zero_()
    return missing


# ---- measurement --------------------------------------------------------------------------------


@dataclass
class StepMemory:
    """Bytes above what was held when the step began (see the module doc)."""

    peak: int
    forward_end: int


def profiled_memory(
    forward: Callable[[], torch.Tensor | None], device: torch.device | None = None
) -> StepMemory:
    """Runs ``loss = forward(); loss.backward()`` once and measures its memory (module doc).

    ``forward`` may return ``None`` (no backward), for a measurement of any code's allocations.
    ``device``: ``None`` is the CPU.
    """
    device = torch.device("cpu") if device is None else device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        loss = forward()
        torch.cuda.synchronize(device)
        forward_end = torch.cuda.memory_allocated(device) - base
        if loss is not None:
            loss.backward()
        del loss
        torch.cuda.synchronize(device)
        return StepMemory(torch.cuda.max_memory_allocated(device) - base, forward_end)
    if device.type != "cpu":
        raise ValueError(f"memory is measured on cpu or cuda, not {device.type}")
    from torch.profiler import ProfilerActivity, profile, record_function

    from feedback_alignment.bench.timing import _native_stderr_silenced

    with (
        _native_stderr_silenced(),
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
    ):
        loss = forward()
        with record_function(BACKWARD_MARK):
            if loss is not None:
                loss.backward()
        del loss
    events = list(prof.profiler.kineto_results.events())
    marks = [e.start_ns() for e in events if e.name() == BACKWARD_MARK]
    if len(marks) != 1:
        raise RuntimeError(f"the profiler recorded {len(marks)} backward marks, expected 1")
    memory = sorted(
        ((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"),
        key=lambda item: item[0],
    )
    current = peak = 0
    forward_end = None
    for start, nbytes in memory:
        if forward_end is None and start >= marks[0]:
            forward_end = current
        current += nbytes
        peak = max(peak, current)
    return StepMemory(peak, current if forward_end is None else forward_end)


def saved_for_backward(
    forward: Callable[[], torch.Tensor], exclude: Sequence[torch.Tensor] = ()
) -> int:
    """Bytes of the distinct storages that autograd keeps for the backward pass at the end of
    ``loss = forward()`` (seen by ``saved_tensors_hooks``; those of ``exclude``, the parameters
    and the batch, not counted); then runs ``loss.backward()`` to release them."""
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    saved: list[weakref.ref[torch.Tensor]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(weakref.ref(tensor))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = forward()
    storages: dict[int, int] = {}
    tensor = None
    for ref in saved:
        tensor = ref()
        if tensor is None or tensor.device.type == "meta":
            continue
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded and storage.nbytes():
            storages[storage.data_ptr()] = storage.nbytes()
    del tensor
    loss.backward()
    return sum(storages.values())


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class Point:
    """One arm at one depth (MiB; ``None`` where not measured)."""

    depth: int
    peak_mib: float | None = None
    forward_end_mib: float | None = None
    saved_mib: float | None = None
    parameters_mib: float | None = None


@dataclass
class ArmResult:
    arm: str
    status: str = "ok"  # or "not available" / "failed" (the reason in note; no points kept)
    note: str = ""
    points: list[Point] = field(default_factory=list)


@dataclass
class ModelResult:
    family: str
    description: str
    title: str
    depths: list[int]
    arms: list[ArmResult] = field(default_factory=list)
    seconds: float = 0.0


def measure_arm(
    arm: str, spec: ModelSpec, depth: int, device: torch.device, seed: int = 0
) -> Point | str:
    """One arm at one depth: warm-up step, gradients zeroed in place, the ``saved`` step, the
    profiled step. Returns the :class:`Point` or the reason it cannot run."""
    built = _build_arm(arm, spec, depth, device, seed)
    if isinstance(built, str):
        return built
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="feedback points .* are narrower")
        built.forward().backward()  # fixes the feedback layout, allocates every .grad
        parameters = list(built.model.parameters())
        held = sum(p.numel() * p.element_size() for p in parameters)
        exclude = [*parameters, *built.batch]
        saved = None
        if arm != "BP + checkpoint":  # checkpoint's own hooks hide its tensors from ours
            _zero_grads(built.model)
            saved = saved_for_backward(built.forward, exclude) / MIB
        if _zero_grads(built.model):
            raise RuntimeError(f"{arm}: some parameters have no gradient after a step")
        memory = profiled_memory(built.forward, device)
    del built
    gc.collect()
    return Point(depth, memory.peak / MIB, memory.forward_end / MIB, saved, held / MIB)


def run_model(
    family: str,
    *,
    size: str = "full",
    depths: Sequence[int] | None = None,
    arms: Sequence[str] = ARMS,
    device: str = "cpu",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ModelResult:
    """Every arm of ``family`` at every depth (default :data:`DEPTHS` of ``size``)."""
    start = time.perf_counter()
    spec = model_spec(family, size)
    depths = list(DEPTHS[size] if depths is None else depths)
    dev = torch.device(device)
    result = ModelResult(family, spec.description, spec.title, depths)
    for arm in arms:
        entry = ArmResult(arm)
        result.arms.append(entry)
        for depth in depths:
            try:
                measured = measure_arm(arm, spec, depth, dev, seed)
            except Exception as error:  # recorded, not fatal: the other arms still run
                first = (str(error).strip().splitlines() or [""])[0][:200]
                measured = f"failed: at {depth} blocks, {type(error).__name__}: {first}"
            if isinstance(measured, str):
                entry.status, entry.note, entry.points = measured.split(":")[0], measured, []
                break
            entry.points.append(measured)
            if progress is not None:
                progress(
                    f"bench --memory {family} {arm} depth {depth}: peak {measured.peak_mib:.1f} MiB"
                )
    result.seconds = time.perf_counter() - start
    return result


def commit_state() -> dict[str, Any]:
    """The commit of the checkout and its modified tracked paths under ``src/`` (other work in
    progress that the measured code may include)."""
    return {"commit": commit(), "modified": modified_sources()}


def run(
    families: Sequence[str] = MODELS,
    *,
    size: str = "full",
    depths: Sequence[int] | None = None,
    arms: Sequence[str] = ARMS,
    device: str = "cpu",
    seed: int = 0,
    output: Path | None = None,
    plot_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measures every family; rewrites ``output`` after each. Returns the JSON payload."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        raise ValueError(f"unknown arms {unknown}; choose from {list(ARMS)}")
    machine = {**machine_description(device), **commit_state()}
    settings = {
        "size": size,
        "depths": list(DEPTHS[size] if depths is None else depths),
        "arms": list(arms),
        "seed": seed,
        "step": "set_targets (DRTP), forward, cross-entropy, backward(); after one warm-up step, "
        "with every .grad allocated and zeroed in place (parameters, gradients and feedback "
        "matrices held before the step, not counted); no optimiser step",
        "method": "torch.profiler allocation events (CPU) or torch.cuda.max_memory_allocated "
        "(CUDA), above the memory held when the step began",
        "points": "DFA and DRTP: a feedback point at every block output, error at the logits",
        "forward_time_available": forward_time_available(),
    }
    results: list[ModelResult] = []
    payload: dict[str, Any] = {"machine": machine, "settings": settings, "models": []}
    for family in families:
        results.append(
            run_model(
                family,
                size=size,
                depths=depths,
                arms=arms,
                device=device,
                seed=seed,
                progress=progress,
            )
        )
        payload = {
            "machine": machine,
            "settings": settings,
            "models": [asdict(r) for r in results],
        }
        if output is not None:
            write(payload, output)
    if plot_path is not None and results:
        plot(payload, plot_path)
    return payload


# ---- output -------------------------------------------------------------------------------------


def write(payload: dict[str, Any], out: Path) -> None:
    """Writes ``out`` (JSON) and the markdown table beside it (``.md``), each atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in (
        (out, json.dumps(payload, indent=2)),
        (out.with_suffix(".md"), to_markdown(payload) + "\n"),
    ):
        temporary = path.with_name(f".{path.name}.partial")
        temporary.write_text(text)
        os.replace(temporary, path)


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def per_block(points: Sequence[dict[str, Any]], key: str = "peak_mib") -> float | None:
    """Least-squares slope of ``key`` against depth (MiB per block); ``None`` below 2 depths."""
    pairs = [(p["depth"], p[key]) for p in points if p.get(key) is not None]
    if len(pairs) < 2:
        return None
    depth, value = np.array(pairs, dtype=float).T
    return float(np.polyfit(depth, value, 1)[0])


def _number(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return ""
    return f"{(value if round(value, digits) else 0.0):.{digits}f}"  # no "-0.00" for a flat line


def to_markdown(payload: dict[str, Any]) -> str:
    """One table per model: peak MiB per arm and depth, the slope per block, the memory held
    at the end of the forward pass at the deepest depth, and its saved-tensor cross-check."""
    machine = payload["machine"]
    commit = (machine.get("commit") or "unknown")[:7]
    modified = machine.get("modified") or []
    lines = [
        f"Machine: {machine['processor']}, {machine['cpus']} CPUs, {machine['threads']} torch "
        f"threads, torch {machine['torch']}, device {machine['device']}"
        f"{', ' + str(machine['gpu']) if 'gpu' in machine else ''}; {machine['date']}; commit "
        f"{commit}"
        + (
            f" with {len(modified)} modified tracked file(s) under src/ (listed in the JSON)"
            if modified
            else ""
        )
        + ".",
    ]
    for model in payload["models"]:
        depths = model["depths"]
        deepest = depths[-1]
        lines += [
            "",
            f"**{model['family']}**: {model['description']}. Peak MiB of one step above the "
            "memory held before it, by number of blocks:",
            "",
            "| arm | "
            + " | ".join(str(d) for d in depths)
            + f" | MiB per block | at the end of the forward, {deepest} blocks | saved for "
            f"backward, {deepest} blocks |",
            "|---|" + "---:|" * (len(depths) + 3),
        ]
        for arm in model["arms"]:
            if arm["status"] != "ok":
                lines.append(f"| {arm['arm']} | {arm['note']}" + " |" * (len(depths) + 3))
                continue
            by_depth = {p["depth"]: p for p in arm["points"]}
            last = by_depth.get(deepest, {})
            cells = [_number(by_depth.get(d, {}).get("peak_mib")) for d in depths]
            cells += [
                _number(per_block(arm["points"]), 2),
                _number(last.get("forward_end_mib")),
                _number(last.get("saved_mib")),
            ]
            lines.append(f"| {arm['arm']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: Path) -> None:
    """Peak MiB against depth, a line per arm, a panel per model family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = payload["models"]
    fig, axes = plt.subplots(
        1, len(models), figsize=(5.2 * len(models), 4.0), squeeze=False, constrained_layout=True
    )
    styles = {  # BP, DFA and DRTP coincide here: dashes and sizes keep each visible
        "BP": {"marker": "o", "linestyle": "-", "markersize": 7, "linewidth": 3.0},
        "BP + checkpoint": {"marker": "s", "linestyle": "-", "markersize": 5},
        "DFA": {"marker": "^", "linestyle": "--", "markersize": 5},
        "DRTP": {"marker": "v", "linestyle": ":", "markersize": 5},
        FORWARD_TIME: {"marker": "D", "linestyle": "-", "markersize": 5},
    }
    for ax, model in zip(axes[0], models, strict=True):
        for arm in model["arms"]:
            if arm["status"] != "ok":
                ax.plot([], [], " ", label=f"{arm['arm']}: {arm['status']}")
                continue
            depth = [p["depth"] for p in arm["points"]]
            peak = [p["peak_mib"] for p in arm["points"]]
            ax.plot(depth, peak, label=arm["arm"], **styles.get(arm["arm"], {"marker": "o"}))
        ax.set_xticks(model["depths"], [str(d) for d in model["depths"]])
        ax.set_xlim(left=0)
        ax.set_xlabel("blocks")
        ax.set_ylabel("peak MiB of one step")
        ax.set_title(model.get("title") or model["family"], fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    machine = payload["machine"]
    fig.suptitle(
        "Peak memory of one training step above parameters and gradients, against depth "
        f"({machine['device']}, torch {machine['torch']}, {machine['date']})",
        fontsize=9,
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


MARKER_OPEN = "<!-- bench-memory: {} -->"
MARKER_CLOSE = "<!-- /bench-memory -->"


def render_doc(doc: Path, *, check: bool = False) -> list[str]:
    """Re-renders every ``<!-- bench-memory: results/bench/memory.json -->`` block of ``doc``
    from the JSON it names (relative to the doc's folder). Returns the names of the blocks that
    differed; with ``check`` nothing is written.

    Raises:
        ValueError: ``doc`` has no such block.
    """
    import re

    doc = Path(doc)
    text = doc.read_text()
    pattern = re.compile(
        r"(<!-- bench-memory: (\S+) -->\n)(.*?)(" + re.escape(MARKER_CLOSE) + ")", re.S
    )
    if not pattern.search(text):
        raise ValueError(f"{doc} has no {MARKER_OPEN.format('<json>')} ... {MARKER_CLOSE} block")
    stale: list[str] = []

    def replace(match: re.Match[str]) -> str:
        table = to_markdown(load(doc.parent / match.group(2))) + "\n"
        if table != match.group(3):
            stale.append(match.group(2))
        return match.group(1) + table + match.group(4)

    rendered = pattern.sub(replace, text)
    if stale and not check:
        doc.write_text(rendered)
    return stale
