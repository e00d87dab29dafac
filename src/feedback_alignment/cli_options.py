"""Options that every command line of the package accepts, in one module that both the main CLI
(:mod:`feedback_alignment.cli`) and the data CLI (:mod:`feedback_alignment.data.cli`) import, so
that neither imports the other for them: ``--threads N`` and ``-v/--verbose``, given before or
after the sub-command."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

SMALL_MODEL_THREADS = 1
"""Default torch thread count for ``demo`` and ``reproduce --quick``.

Why one: their models are small (a 64-wide MLP on the digits, quick-mode CNNs and Transformers), so
a step is a few small matrix products and the threads mostly wait on each other; on a busy machine
torch's default (one thread per core) is far slower (a 160 s demo on a loaded 2-core machine took
11 s with one thread). Larger runs (``bench``, full ``reproduce``) keep torch's default.
"""


def max_threads() -> int:
    """The largest ``--threads`` accepted: four per CPU (beyond that torch only slows or crashes)."""
    return 4 * (os.cpu_count() or 1)


def count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "count"  # argparse names the type in "invalid count value"
    return parse


def threads(text: str) -> int:
    """``--threads``' type: a count from 1 to :func:`max_threads`."""
    value = count(1)(text)
    if value > max_threads():
        raise argparse.ArgumentTypeError(
            f"must be at most {max_threads()} (4 per CPU on this machine), got {value}"
        )
    return value


THREADS_HELP = (
    f"torch CPU threads, 1 to 4 per CPU (default: {SMALL_MODEL_THREADS} for demo and reproduce "
    "--quick, whose small models run fastest on one thread on a busy machine; torch's default, "
    "one per core, for bench and full reproduce)"
)


def add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options accepted before and after the sub-command (``--threads 1 demo``, ``demo --threads 1``).

    On the sub-command their default is SUPPRESS, so that an unset one does not overwrite a value
    given before the sub-command.
    """
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument("--threads", type=threads, default=default, help=THREADS_HELP)
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="log debug messages and show tracebacks",
    )
