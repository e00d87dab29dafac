"""Pipeline throughput: DFA (sync, async) vs BP with torch.distributed.pipelining (GPipe, 1F1B).

The same two stages (one process each, one thread each) are trained four ways, interleaved in
rounds (``--steps`` steps of one method, then the next) so that a change of machine load hits
every method alike:

* ``gpipe``, ``1f1b``: backprop with ``torch.distributed.pipelining`` (``ScheduleGPipe``,
  ``Schedule1F1B``) on its own gloo group;
* ``dfa-sync``, ``dfa-async``: :class:`feedback_alignment.pipeline.DFAPipelineStage`, feedback
  points after every hidden activation for the MLP (the library's default), at every block output
  for the Transformer ("macro").

Per method and micro-batch count: samples/s (median over rounds of ``samples / round time``) and
each stage's idle fraction (1 - its compute time / round time, compute = forwards, backwards or
DFA updates, optimizer steps). The per-stage costs measured here drive the schedule model
(``pipeline_model.py``), whose 2-stage prediction is checked against the measurement and which
predicts S = 4, 8, 16 stages (each new stage costs what a measured stage costs: a model that grows
with the pipeline).

Run (two processes on this machine)::

    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 --master-addr 127.0.0.1 \
        benchmarks/pipeline_bench.py --out benchmarks/pipeline_results.json

``--quick`` runs tiny sizes for a smoke test. Rank 0 writes the JSON and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

import feedback_alignment as fa
from feedback_alignment.distributed import clean_exit
from feedback_alignment.models import MLP
from feedback_alignment.models.transformer import Block, TransformerConfig
from feedback_alignment.pipeline import DFAPipelineStage, split_sequential, stage_points
from feedback_alignment.provenance import processor_name

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_model import METHODS, StageCost, simulate

ROOT = Path(__file__).resolve().parent.parent


class Embed(nn.Module):
    """Token plus position embedding: ids ``(B, T)`` -> ``(B, T, C)``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.block_size, config.d_model)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(idx.shape[1], device=idx.device)
        return self.tok_emb(idx) + self.pos_emb(positions)  # (B, T, C)


def build(name: str, quick: bool) -> dict:
    """The model as an nn.Sequential, its stage boundary, points, data and loss."""
    torch.manual_seed(0)
    if name == "mlp":
        width, depth, batch = (128, 8, 256) if quick else (1024, 8, 1024)
        model = MLP([784] + [width] * depth + [10], "tanh")
        half = 2 * (depth // 2)  # children: Linear, Tanh pairs, then the top Linear
        x = torch.randn(batch, 784)
        y = torch.randint(0, 10, (batch,))
        return dict(
            model=model,
            boundary=half,
            points=stage_points(model, [half]),
            x=x,
            y=y,
            loss=F.cross_entropy,
            label=f"tanh MLP 784-{depth}x{width}-10, global batch {batch}",
        )
    if name == "transformer":
        d_model, layers, tokens, batch = (32, 2, 16, 32) if quick else (128, 4, 32, 64)
        config = TransformerConfig(
            vocab_size=64, block_size=tokens, n_layer=layers, n_head=4, d_model=d_model
        )
        blocks = [Block(config) for _ in range(layers)]
        model = nn.Sequential(Embed(config), *blocks, nn.Linear(d_model, config.vocab_size))
        half = 1 + layers // 2
        names = [str(i) for i in range(1, 1 + layers)]  # "macro": every block output
        x = torch.randint(0, config.vocab_size, (batch, tokens))
        y = torch.randint(0, config.vocab_size, (batch, tokens))

        def token_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))

        return dict(
            model=model,
            boundary=half,
            points=[[n for n in names if int(n) < half], [n for n in names if int(n) >= half]],
            x=x,
            y=y,
            loss=token_loss,
            label=(
                f"post-LN Transformer {layers}x{d_model}, {tokens} tokens, vocab 64, "
                f"global batch {batch} sequences"
            ),
        )
    raise ValueError(f"unknown model {name!r}")


class Timed:
    """Compute intervals of one stage: (kind, start, end), perf_counter seconds."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, float]] = []

    def wrap(self, kind: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.events.append((kind, start, time.perf_counter()))

        return timed


class BPRunner:
    """Backprop through ``torch.distributed.pipelining`` (one schedule) on this rank's stage."""

    def __init__(self, spec: dict, rank: int, micro: int, schedule: str, group) -> None:
        stages = split_sequential(spec["model_copy"](), [spec["boundary"]])
        self.module = stages[rank]
        self.rank = rank
        self.timed = Timed()
        stage = PipelineStage(self.module, rank, 2, torch.device("cpu"), group=group)
        stage.forward_one_chunk = self.timed.wrap("forward", stage.forward_one_chunk)
        stage.backward_one_chunk = self.timed.wrap("backward", stage.backward_one_chunk)
        kind = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
        self.schedule = kind(stage, n_microbatches=micro, loss_fn=spec["loss"])
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=1e-3)
        self.x, self.y = spec["x"], spec["y"]

    def step(self) -> None:
        if self.rank == 0:
            self.schedule.step(self.x)
        else:
            self.schedule.step(target=self.y, losses=[])
        start = time.perf_counter()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.timed.events.append(("step", start, time.perf_counter()))

    def events(self) -> list[tuple[str, float, float]]:
        return self.timed.events


class DFARunner:
    """The DFA pipeline stage of this rank."""

    def __init__(self, spec: dict, rank: int, micro: int, mode: str) -> None:
        stages = split_sequential(spec["model_copy"](), [spec["boundary"]])
        self.stage = DFAPipelineStage(
            stages[rank],
            fa.DFA(seed=0),
            points=spec["points"][rank],
            optimizer=lambda p: torch.optim.SGD(p, lr=1e-3),
            micro_batches=micro,
            loss_fn=spec["loss"],
            mode=mode,
            record=True,
            timeout=300.0,
        )
        self.x, self.y = spec["x"], spec["y"]

    def step(self) -> None:
        self.stage.step(self.x, self.y)

    def events(self) -> list[tuple[str, float, float]]:
        return [(e.kind, e.start, e.end) for e in self.stage.timeline]


def _busy(events: list[tuple[str, float, float]], start: float, stop: float) -> float:
    return sum(max(0.0, min(e, stop) - max(b, start)) for _, b, e in events if e > start)


def _median_cost(events: list[tuple[str, float, float]], kinds: tuple[str, ...]) -> float:
    durations = [e - b for k, b, e in events if k in kinds]
    return statistics.median(durations) if durations else 0.0


def measure(
    spec: dict, rank: int, micro: int, rounds: int, steps: int, barrier_group, bp_group
) -> dict:
    runners = {
        "gpipe": BPRunner(spec, rank, micro, "gpipe", bp_group),
        "1f1b": BPRunner(spec, rank, micro, "1f1b", bp_group),
        "dfa-sync": DFARunner(spec, rank, micro, "sync"),
        "dfa-async": DFARunner(spec, rank, micro, "async"),
    }
    windows: dict[str, list[tuple[float, float]]] = {m: [] for m in runners}
    for round_index in range(rounds + 1):  # round 0 warms up, with one step per method
        order = list(runners)
        shift = round_index % len(order)
        for method in order[shift:] + order[:shift]:
            dist.barrier(group=barrier_group)
            start = time.perf_counter()
            for _ in range(steps if round_index else 1):
                runners[method].step()
            # both stages done: a flush that only the async pipeline does not do by itself
            dist.barrier(group=barrier_group)
            if round_index:
                windows[method].append((start, time.perf_counter()))
    samples = spec["x"].shape[0] * steps
    result = {}
    for method, runner in runners.items():
        events = runner.events()
        times = [stop - start for start, stop in windows[method]]
        idle = [1.0 - _busy(events, a, b) / (b - a) for a, b in windows[method]]
        update = ("backward",)
        result[method] = {
            "samples_per_s": samples / statistics.median(times),
            "round_s": times,
            "idle": statistics.median(idle),
            "forward_s": _median_cost(events, ("forward",)),
            "update_s": _median_cost(events, update),
            "loss_s": _median_cost(events, ("loss",)),
            "optimizer_s": _median_cost(events, ("step",)),
            "timeline": [(k, b, e) for k, b, e in events if windows[method][-1][0] <= b]
            if windows[method]
            else [],
        }
    for runner in runners.values():
        if isinstance(runner, DFARunner):
            runner.stage.finish()
            runner.stage.close()
    return result


def ping(size: tuple[int, ...], rank: int, repeats: int = 10) -> float:
    """One-way time of a message of ``size`` floats between the two ranks (half a round trip)."""
    tensor = torch.zeros(size)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(repeats):
        if rank == 0:
            dist.send(tensor, 1)
            dist.recv(tensor, 1)
        else:
            dist.recv(tensor, 0)
            dist.send(tensor, 0)
    return (time.perf_counter() - start) / (2 * repeats)


def predictions(costs: dict, micro_counts: list[int], comm: float) -> dict:
    """Schedule model: S = 2 (to check) and 4, 8, 16 stages for every method and M."""
    out: dict = {}
    for stages in (2, 4, 8, 16):
        for micro in micro_counts:
            for method in METHODS:
                first, last = costs[method][str(micro)]
                stage_costs = [first] * (stages - 1) + [last]
                sim = simulate(
                    method, stage_costs, micro, comm=comm, loss=costs["loss"][method][str(micro)]
                )
                out.setdefault(str(stages), {}).setdefault(str(micro), {})[method] = {
                    "step_s": sim.step_time,
                    "idle": sim.idle,
                }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mlp,transformer")
    parser.add_argument("--micro", default="4,8,16")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds (after a warm-up)")
    parser.add_argument("--steps", type=int, default=4, help="steps per method per round")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "pipeline_results.json"))
    parser.add_argument("--figures", default=str(ROOT / "docs" / "figures"))
    parser.add_argument(
        "--from-json", help="measure nothing: redo the model, table and figures of a saved run"
    )
    args = parser.parse_args()
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        micro_counts = sorted({int(m) for e in report["models"].values() for m in e["stages"][0]})
        finish(report, args, micro_counts, keep_run_info=True)
        return
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    uptime_start = _uptime()
    rank, world = dist.get_rank(), dist.get_world_size()
    if world != 2:
        raise SystemExit("pipeline_bench.py measures 2 stages: torchrun --nproc-per-node 2")
    barrier_group = dist.new_group(backend="gloo")
    bp_group = dist.new_group(backend="gloo")
    micro_counts = [int(m) for m in args.micro.split(",")]
    report: dict = {"models": {}}
    for name in args.models.split(","):
        spec = build(name, args.quick)
        state = {k: v.clone() for k, v in spec["model"].state_dict().items()}

        def model_copy(name=name, state=state):
            fresh = build(name, args.quick)["model"]
            fresh.load_state_dict(state)
            return fresh

        spec["model_copy"] = model_copy
        per_micro = {}
        for micro in micro_counts:
            if rank == 0:
                print(f"[{name}] M={micro}", flush=True)
            per_micro[str(micro)] = measure(
                spec, rank, micro, args.rounds, args.steps, barrier_group, bp_group
            )
        with torch.no_grad():
            first = split_sequential(spec["model"], [spec["boundary"]])[0]
            act_shape = tuple(first(spec["x"][:1]).shape[1:])
        comm = ping((spec["x"].shape[0] // max(micro_counts), *act_shape), rank)
        gathered: list = [None, None]
        dist.all_gather_object(gathered, per_micro)
        if rank == 0:
            report["steps"] = args.steps
            report["models"][name] = {
                "batch": spec["x"].shape[0],
                "label": spec["label"],
                "boundary": spec["boundary"],
                "points": spec["points"],
                "comm_s": comm,
                "stages": gathered,
            }
            report["uptime_start"] = uptime_start
            finish(report, args, micro_counts)  # after every model: a cut-short run keeps these
    # the process group is destroyed by clean_exit (after a barrier), which then leaves with
    # os._exit: no 'terminate called without an active exception' at exit


def _mean_costs(timeline: list) -> dict[str, float]:
    """Mean duration of each kind of operation in a stage's last measured round."""
    durations: dict[str, list[float]] = {}
    for kind, begin, end in timeline:
        durations.setdefault(kind, []).append(end - begin)
    return {kind: statistics.mean(values) for kind, values in durations.items()}


def finish(
    report: dict, args: argparse.Namespace, micro_counts: list[int], keep_run_info: bool = False
) -> None:
    """Model predictions, table and figures from the measurements in ``report``.

    The model takes each operation's mean duration in the last measured round (means, not
    medians: on a shared machine the slow operations are part of the throughput). The check at
    S = 2 replays the benchmark's protocol (rounds of ``--steps`` steps from an empty pipeline,
    ``makespan``); the predictions for S = 2..16 are the steady state of uninterrupted training.
    """
    steps = report.get("steps", args.steps)
    for entry in report["models"].values():
        batch = entry["batch"]
        stages = entry["stages"]
        measured: dict = {}
        costs: dict = {}
        for method in METHODS:
            for micro in map(str, micro_counts):
                means = [_mean_costs(s[micro][method]["timeline"]) for s in stages]
                pair = [
                    StageCost(m.get("forward", 0.0), m.get("backward", 0.0), m.get("step", 0.0))
                    for m in means
                ]
                costs.setdefault(method, {})[micro] = (pair, means[1].get("loss", 0.0))
                measured.setdefault(micro, {})[method] = {
                    "samples_per_s": min(s[micro][method]["samples_per_s"] for s in stages),
                    "idle": [s[micro][method]["idle"] for s in stages],
                }
                pair_costs, loss = costs[method][micro]
                check = simulate(
                    method, pair_costs, int(micro), comm=entry["comm_s"], loss=loss, steps=steps
                )
                measured[micro][method]["model_round_samples_per_s"] = (
                    batch * steps / check.makespan
                )
        entry["measured"] = measured
        prediction: dict = {}
        for count in (2, 4, 8, 16):
            for micro in map(str, micro_counts):
                for method in METHODS:
                    (first, last), loss = costs[method][micro]
                    sim = simulate(
                        method,
                        [first] * (count - 1) + [last],
                        int(micro),
                        comm=entry["comm_s"],
                        loss=loss,
                    )
                    prediction.setdefault(str(count), {}).setdefault(micro, {})[method] = {
                        "step_s": sim.step_time,
                        "samples_per_s": batch / sim.step_time,
                        "idle": sim.idle,
                    }
        entry["model"] = prediction
        entry["costs"] = {
            m: {k: [vars(c) for c in v[0]] for k, v in costs[m].items()} for m in METHODS
        }
    if not keep_run_info:
        _run_info(report)
    out = Path(args.from_json or args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    text = table(report)
    header = (
        f"`{report['command']}`  \n{report['machine']}, torch {report['torch']}, {report['date']}  \n"
        f"load: start `{report['uptime_start']}`, end `{report['uptime_end']}`\n"
    )
    out.with_suffix(".md").write_text(header + text + "\n")
    print(header + text)
    try:
        plot(report, Path(args.figures), quick=args.quick)
    except ImportError as exc:  # matplotlib is a dependency, but a bare env may lack it
        print(f"no figures: {exc}")


def _run_info(report: dict) -> None:
    report["command"] = "torchrun --nproc-per-node 2 benchmarks/pipeline_bench.py " + " ".join(
        sys.argv[1:]
    )
    report["machine"] = f"{processor_name()}, {os.cpu_count()} cores"
    report["uptime_end"] = _uptime()
    report["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    report["torch"] = torch.__version__


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def table(report: dict) -> str:
    lines = []
    for _name, entry in report["models"].items():
        lines += [
            f"\n{entry['label']}",
            "| M | method | samples/s | vs best BP | idle (stage 0, 1) | model, same protocol |",
            "|---|---|---|---|---|---|",
        ]
        for micro, methods in entry["measured"].items():
            best = max(methods["gpipe"]["samples_per_s"], methods["1f1b"]["samples_per_s"])
            for method, result in methods.items():
                model = result["model_round_samples_per_s"]
                idle = ", ".join(f"{v:.0%}" for v in result["idle"])
                lines.append(
                    f"| {micro} | {method} | {result['samples_per_s']:.0f} | "
                    f"{result['samples_per_s'] / best:.2f}x | {idle} | {model:.0f} |"
                )
        lines += [
            "",
            "| S | M | " + " | ".join(METHODS) + " | best DFA / best BP |",
            "|---" * (len(METHODS) + 3) + "|",
        ]
        for stages, per_micro in entry["model"].items():
            for micro, methods in per_micro.items():
                rates = [methods[m]["samples_per_s"] for m in METHODS]
                ratio = max(rates[2:]) / max(rates[:2])
                lines.append(
                    f"| {stages} | {micro} | "
                    + " | ".join(f"{r:.0f}" for r in rates)
                    + f" | {ratio:.2f}x |"
                )
    return "\n".join(lines)


def plot(report: dict, folder: Path, quick: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    suffix = "_quick" if quick else ""
    colors = {"forward": "#4C72B0", "backward": "#DD8452", "loss": "#8172B2", "step": "#55A868"}
    for name, entry in report["models"].items():
        micro = "4" if "4" in entry["measured"] else next(iter(entry["measured"]))
        fig, axes = plt.subplots(
            len(METHODS), 1, figsize=(11, 1.4 * len(METHODS) + 1), sharex=False
        )
        for ax, method in zip(axes, METHODS, strict=True):
            events = [entry["stages"][s][micro][method]["timeline"] for s in (0, 1)]
            origin = min(b for ev in events for _, b, _ in ev)
            for s, ev in enumerate(events):
                for kind, b, e in ev:
                    ax.barh(
                        1 - s,
                        (e - b) * 1e3,
                        left=(b - origin) * 1e3,
                        height=0.7,
                        color=colors.get(kind, "grey"),
                    )
            rate = entry["measured"][micro][method]["samples_per_s"]
            ax.set_yticks([1, 0], ["stage 0", "stage 1"])
            ax.set_title(f"{method}: {rate:.0f} samples/s", fontsize=9, loc="left")
        axes[-1].set_xlabel("ms (one measured round)")
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
        labels = ["forward", "backward (BP) / DFA update", "loss + e", "optimizer"]
        fig.legend(handles, labels, loc="upper right", fontsize=8, ncol=4)
        fig.suptitle(
            f"{entry['label']}, M={micro}, 2 processes x 1 thread", fontsize=10, x=0.01, ha="left"
        )
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        fig.savefig(folder / f"pipeline_timelines_{name}{suffix}.png", dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(1, len(report["models"]), figsize=(5.5 * len(report["models"]), 3.8))
    axes = [axes] if len(report["models"]) == 1 else list(axes)
    for ax, (name, entry) in zip(axes, report["models"].items(), strict=True):
        micro = max(entry["measured"], key=int)
        stages = sorted(entry["model"], key=int)
        for method in METHODS:
            rates = [entry["model"][s][micro][method]["samples_per_s"] for s in stages]
            ax.plot([int(s) for s in stages], rates, marker="o", label=f"{method} (model)")
            ax.scatter([2], [entry["measured"][micro][method]["samples_per_s"]], marker="x", s=60)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("stages S (one process each; model grows with S)")
        ax.set_ylabel("samples/s per pipeline")
        ax.set_title(f"{name}, M={micro}; x = measured (S=2)", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / f"pipeline_model{suffix}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    with clean_exit():  # barrier, destroy_process_group, flush, os._exit
        main()
