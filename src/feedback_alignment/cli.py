"""The ``feedback-alignment`` command (also ``python -m feedback_alignment``).

Sub-commands:
    demo       BP, DFA and Shallow on the bundled digits, with an accuracy and alignment table.
    reproduce  the papers' task families, BP vs the rules, beside the papers' figures.
    bench   step time and peak memory of each rule against BP (JSON + markdown table).
    data    list and fetch the real data sets (see ``feedback_alignment.data``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _cmd_demo(args: argparse.Namespace) -> int:
    from feedback_alignment.experiments import demo

    config = demo.DemoConfig(
        hidden=args.hidden,
        epochs=args.epochs,
        seeds=args.seeds,
        lr=args.lr,
        rules=tuple(args.rules),
    )
    results, config = demo.run(config, progress=not args.quiet)
    print(demo.summary_table(results, config))
    if args.out is not None:
        demo.write_json(results, config, args.out)
        print(f"\nwrote {args.out}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from feedback_alignment import benchmark

    configs = {
        name: sizes for name, sizes in benchmark.DEFAULT_CONFIGS.items() if name in args.configs
    }
    if not configs:
        print(f"no benchmark configuration among {args.configs}", file=sys.stderr)
        return 2
    wanted = {benchmark.MINIMAL_DFA if name == "minimal" else name for name in args.rules}
    rules = {name: make for name, make in benchmark.default_rules().items() if name in wanted}
    if "BP" not in rules:
        print("the benchmark needs BP among --rules: ratios are against BP", file=sys.stderr)
        return 2
    progress = None if args.quiet else (lambda message: print(message, file=sys.stderr))
    results, machine = benchmark.run(
        configs,
        rules,
        batch=args.batch,
        rounds=args.rounds,
        device=args.device,
        output=args.out,
        progress=progress,
    )
    print(benchmark.to_markdown(results, machine))
    if args.out is not None:
        print(f"\nwrote {args.out}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from datetime import date

    from feedback_alignment.experiments.registry import RunOptions, tasks

    available = tasks()
    wanted = available if args.tasks == ["all"] else {}
    if args.tasks != ["all"]:
        names = [n.strip() for part in args.tasks for n in part.split(",") if n.strip()]
        unknown = [n for n in names if n not in available]
        if unknown:
            print(
                f"unknown task(s) {unknown}; available: {', '.join(sorted(available))}",
                file=sys.stderr,
            )
            return 2
        wanted = {n: available[n] for n in names}
    out_root = args.out or Path("results") / date.today().isoformat()
    sections = []
    for name, task in wanted.items():
        print(f"== {name}: {task.description}", file=sys.stderr)
        options = RunOptions(
            out_dir=out_root / name, quick=args.quick, progress=not args.quiet, seeds=args.seeds
        )
        report = task.run(options)
        sections.append(report.markdown)
        print(report.markdown + "\n")
    out_root.mkdir(parents=True, exist_ok=True)
    (out_root / "REPORT.md").write_text(
        f"# Reproduction report ({'quick' if args.quick else 'full'} mode)\n\n"
        + "\n\n".join(sections)
        + "\n"
    )
    print(f"wrote {out_root / 'REPORT.md'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from feedback_alignment import __version__

    parser = argparse.ArgumentParser(
        prog="feedback-alignment",
        description="Train PyTorch models with direct feedback alignment and its relatives.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; 1 is far faster on a busy machine)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="BP vs DFA vs Shallow on the bundled digits (about 20 s on 2 cores)"
    )
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--hidden", type=_int_list, default=(64, 64, 64), help="e.g. 64,64,64")
    demo.add_argument("--seeds", type=_int_list, default=(0, 1, 2), help="e.g. 0,1,2")
    demo.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate, every rule")
    demo.add_argument(
        "--rules", nargs="+", default=["BP", "DFA", "Shallow"], choices=["BP", "DFA", "Shallow"]
    )
    demo.add_argument("--out", type=Path, default=None, help="also write the runs as JSON")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_cmd_demo)

    bench = commands.add_parser("bench", help="step time and peak memory, each rule vs BP")
    bench.add_argument(
        "--configs", nargs="+", default=["mlp-8x1024", "mlp-4x256"], help="benchmark models"
    )
    bench.add_argument(
        "--rules",
        nargs="+",
        default=["BP", "DFA", "sign-DFA", "DRTP", "Shallow", "FA", "uSF", "minimal"],
        help="'minimal' adds a hand-written DFA step without the library (the floor)",
    )
    bench.add_argument("--batch", type=int, default=256)
    bench.add_argument("--rounds", type=int, default=60, help="interleaved timed steps per rule")
    bench.add_argument("--device", default="cpu", help="cpu or cuda")
    bench.add_argument(
        "--out", type=Path, default=Path("results/benchmark.json"), help="JSON output path"
    )
    bench.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    bench.set_defaults(func=_cmd_bench)

    reproduce = commands.add_parser(
        "reproduce", help="run the papers' task families side by side with the papers' figures"
    )
    reproduce.add_argument(
        "--tasks", nargs="+", default=["all"], help="task names (comma or space separated)"
    )
    reproduce.add_argument("--quick", action="store_true", help="CPU-minutes mode")
    reproduce.add_argument("--seeds", type=_int_list, default=(0,), help="e.g. 0,1,2")
    reproduce.add_argument("--out", type=Path, default=None, help="default results/<date>")
    reproduce.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    reproduce.set_defaults(func=_cmd_reproduce)

    try:
        from feedback_alignment.data import cli as data_cli
    except ImportError:  # pragma: no cover - the data package is part of the distribution
        data_cli = None
    if data_cli is not None:
        data_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
