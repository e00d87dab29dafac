"""Step time and peak memory of each rule against backpropagation, as ratios.

A *step* is what a training loop does per batch: ``zero_grad(set_to_none=True)``, forward, loss,
``backward()``, ``SGD.step()``. Every rule trains its own copy of the same initial model on the same
fixed batch; after warm-up, the rules' steps are **interleaved** (one step of each rule per round, in
an order that rotates every round) so that drifts in machine load hit every rule alike, and the
median over rounds is reported. Peak memory is the peak of bytes held by tensors allocated during a
step (the allocator's events, read with the PyTorch profiler on CPU, or
``torch.cuda.max_memory_allocated`` on a GPU), on a separate untimed step.

Run it with ``feedback-alignment bench`` (writes JSON and prints a markdown table). Never use it from
a unit test: timings on a shared machine are not a pass/fail criterion.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from feedback_alignment.models import MLP
from feedback_alignment.rules import BP, DFA, DRTP, FA, Rule, Shallow, SignDFA, uSF

DEFAULT_CONFIGS: dict[str, list[int]] = {
    "mlp-8x1024": [784] + [1024] * 8 + [10],
    "mlp-4x256": [784] + [256] * 4 + [10],
}


@dataclass
class RuleResult:
    rule: str
    median_ms: float
    q25_ms: float
    q75_ms: float
    peak_mib: float
    time_ratio: float = float("nan")
    memory_ratio: float = float("nan")


@dataclass
class ConfigResult:
    name: str
    sizes: list[int]
    batch: int
    rounds: int
    results: list[RuleResult] = field(default_factory=list)


def default_rules() -> dict[str, Callable[[], Rule]]:
    return {
        "BP": BP,
        "DFA": lambda: DFA(seed=0),
        "sign-DFA": lambda: SignDFA(seed=0),
        "DRTP": lambda: DRTP(seed=0),
        "Shallow": lambda: Shallow(seed=0),
        "FA": lambda: FA(seed=0),
        "uSF": uSF,
        MINIMAL_DFA: BP,  # placeholder factory: the row is built by _make_minimal_dfa_step
    }


def _make_step(
    model: nn.Module, rule: Rule, x: torch.Tensor, y: torch.Tensor, lr: float
) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    set_targets = getattr(rule, "set_targets", None)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        if set_targets is not None:
            set_targets(y)
        loss.backward()
        optimizer.step()

    return step


class _MinimalGraphCut(torch.autograd.Function):
    """The floor for a DFA step: identity on ``y``, ``e @ B`` to every hidden tensor."""

    @staticmethod
    def forward(ctx, feedback: torch.Tensor, output: torch.Tensor, *hidden: torch.Tensor):
        ctx.feedback, ctx.count = feedback, len(hidden)
        return output.view_as(output)

    @staticmethod
    def backward(ctx, error: torch.Tensor):
        projected = error @ ctx.feedback
        return (None, error, *([projected] * ctx.count))


def _make_minimal_dfa_step(
    model: MLP, x: torch.Tensor, y: torch.Tensor, lr: float
) -> Callable[[], None]:
    """A hand-written DFA step for an equal-width tanh MLP: no hooks, no checks, no library.

    It is the reference for the library's overhead: the same cut, the same one projection.
    """
    linears = [m for m in model if isinstance(m, nn.Linear)]
    widths = {layer.out_features for layer in linears[:-1]}
    if len(widths) != 1:
        raise ValueError("the minimal DFA reference needs equal hidden widths")
    width, out = widths.pop(), linears[-1].out_features
    feedback = (torch.randn(out, width) / (width * out) ** 0.5).to(x.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        hidden, h = [], x
        for layer in linears[:-1]:
            h = torch.tanh(layer(h))
            hidden.append(h)
            h = h.detach()
        logits = _MinimalGraphCut.apply(feedback, linears[-1](h), *hidden)
        F.cross_entropy(logits, y).backward()
        optimizer.step()

    return step


MINIMAL_DFA = "DFA (hand-written floor)"
"""Name of the benchmark row that times :func:`_make_minimal_dfa_step`."""


def peak_step_memory(step: Callable[[], None], device: torch.device) -> float:
    """Peak bytes (MiB) held by tensors allocated during one call of ``step``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak / 2**20


def run_config(
    name: str,
    sizes: Sequence[int],
    rules: dict[str, Callable[[], Rule]],
    *,
    batch: int = 256,
    rounds: int = 50,
    warmup: int = 5,
    device: str = "cpu",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> ConfigResult:
    """Times and measures every rule on one MLP configuration."""
    dev = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, sizes[0], generator=generator).to(dev)
    y = torch.randint(0, sizes[-1], (batch,), generator=generator).to(dev)
    steps: dict[str, Callable[[], None]] = {}
    for rule_name, make_rule in rules.items():
        torch.manual_seed(seed)  # every rule starts from the same weights
        model = MLP(sizes, "tanh").to(dev)
        if rule_name == MINIMAL_DFA:
            steps[rule_name] = _make_minimal_dfa_step(model, x, y, 1e-3)
            continue
        rule = make_rule()
        rule.apply(model)
        steps[rule_name] = _make_step(model, rule, x, y, 1e-3)
    names = list(steps)
    for _ in range(warmup):
        for rule_name in names:
            steps[rule_name]()
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {n: [] for n in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for rule_name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            steps[rule_name]()
            sync()
            times[rule_name].append((time.perf_counter() - start) * 1e3)
        if progress is not None and (round_index + 1) % max(1, rounds // 10) == 0:
            progress(f"{name}: round {round_index + 1}/{rounds}")
    result = ConfigResult(name=name, sizes=list(sizes), batch=batch, rounds=rounds)
    for rule_name in names:
        q = statistics.quantiles(times[rule_name], n=4)
        result.results.append(
            RuleResult(
                rule=rule_name,
                median_ms=statistics.median(times[rule_name]),
                q25_ms=q[0],
                q75_ms=q[2],
                peak_mib=peak_step_memory(steps[rule_name], dev),
            )
        )
    reference = next((r for r in result.results if r.rule == "BP"), None)
    if reference is not None:
        for r in result.results:
            r.time_ratio = r.median_ms / reference.median_ms
            r.memory_ratio = r.peak_mib / reference.peak_mib if reference.peak_mib else float("nan")
    return result


def machine_description(device: str = "cpu") -> dict[str, str | int]:
    info: dict[str, str | int] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "device": device,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def to_markdown(results: Sequence[ConfigResult], machine: dict) -> str:
    lines = [
        f"Machine: {machine['processor']}, {machine['threads']} threads, torch {machine['torch']}, "
        f"device {machine['device']}{', ' + str(machine['gpu']) if 'gpu' in machine else ''}; "
        f"date {machine['date']}.",
        "",
        "| model | rule | median step (ms) | IQR (ms) | time vs BP | peak MiB | memory vs BP |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for config in results:
        for r in config.results:
            lines.append(
                f"| {config.name} (batch {config.batch}) | {r.rule} | {r.median_ms:.2f} | "
                f"{r.q25_ms:.2f}-{r.q75_ms:.2f} | {r.time_ratio:.2f}x | {r.peak_mib:.1f} | "
                f"{r.memory_ratio:.2f}x |"
            )
    return "\n".join(lines)


def run(
    configs: dict[str, list[int]] | None = None,
    rules: dict[str, Callable[[], Rule]] | None = None,
    *,
    batch: int = 256,
    rounds: int = 50,
    device: str = "cpu",
    output: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[ConfigResult], dict]:
    """Runs every configuration; writes ``output`` (JSON) when given."""
    configs = configs or DEFAULT_CONFIGS
    rules = rules or default_rules()
    machine = machine_description(device)
    results = [
        run_config(name, sizes, rules, batch=batch, rounds=rounds, device=device, progress=progress)
        for name, sizes in configs.items()
    ]
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        payload = {"machine": machine, "configs": [asdict(c) for c in results]}
        output.write_text(json.dumps(payload, indent=2))
    return results, machine
