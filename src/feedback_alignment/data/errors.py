"""The one error type of every data failure: :class:`DataError`.

Why one type: a caller (an experiment, the CLI, a notebook) should be able to write
``except DataError`` and know that whatever went wrong -- a truncated download, a bit flip in the
cache, a folder where a file belongs, a hostile pickle -- the message names the data set, the
file and what to do, instead of a bare ``EOFError`` or ``KeyError`` from deep inside a parser.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

FETCH_COMMAND = "python -m feedback_alignment data fetch {name} --force"
"""The repair of a damaged cache entry; ``{name}`` is the data set."""


def repair_command(name: str | None) -> str:
    """The command that discards the cached copy of ``name`` and fetches it again."""
    return FETCH_COMMAND.format(name=name or "NAME")


class DataError(ValueError):
    """A data set could not be read, verified or obtained.

    A subclass of ``ValueError`` so that code written against the parsers' old contract (which
    raised ``ValueError`` on malformed files) keeps working.

    Attributes:
        problem: What is wrong, in one sentence.
        dataset: The registered data set, when known (:func:`~.registry.load` fills it in).
        file: The file or folder concerned, when known.
        remedy: What to do; None means "fetch it again" (:data:`FETCH_COMMAND`) once the data
            set is known, and nothing otherwise.
    """

    def __init__(
        self,
        problem: str,
        *,
        dataset: str | None = None,
        file: str | Path | None = None,
        remedy: str | None = None,
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.dataset = dataset
        self.file = None if file is None else str(file)
        self.remedy = remedy

    def __str__(self) -> str:
        where = []
        if self.dataset is not None:
            where.append(f"data set {self.dataset!r}")
        if self.file is not None:
            where.append(f"file {self.file}")
        head = ", ".join(where)
        text = f"{head}: {self.problem}" if head else self.problem
        remedy = self.remedy
        if remedy is None and self.dataset is not None:
            remedy = f"run `{repair_command(self.dataset)}`"
        return f"{text}\n  fix: {remedy}" if remedy else text


@contextlib.contextmanager
def reading(path: Path | str, what: str = "") -> Iterator[None]:
    """Turn any failure while parsing ``path`` into a :class:`DataError` naming the file.

    Why a blanket catch: parsers for gzip, parquet, CSV, JSON and pickles fail with a zoo of
    exception types (``EOFError``, ``zlib.error``, ``KeyError``, ``StopIteration``,
    ``IsADirectoryError``, pyarrow's ``ArrowInvalid``...). Callers must see one type and the
    file. ``ImportError`` (a missing optional dependency, not a bad file) passes through, and so
    do ``MemoryError`` and interrupts.

    Args:
        path: The file being read.
        what: What the file should be (``"an IDX file"``), for the message.
    """
    try:
        yield
    except DataError as exc:
        if exc.file is None:
            exc.file = str(path)
        raise
    except (ImportError, MemoryError):
        raise
    except RecursionError as exc:
        raise DataError(f"is nested too deeply to be read ({exc})", file=path) from exc
    except Exception as exc:  # re-raised as DataError, see the docstring
        kind = "a folder" if Path(path).is_dir() else None
        expected = f" as {what}" if what else ""
        detail = f"is {kind}, not a file" if kind else f"cannot be read{expected}"
        raise DataError(f"{detail} ({type(exc).__name__}: {exc})", file=path) from exc
