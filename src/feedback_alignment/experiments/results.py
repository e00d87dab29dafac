"""The one results writer of the experiments: statistics, tables, provenance, JSON and plots.

Every task builds its summary as a :class:`Table` (columns and cells holding numbers, not
formatted text) and writes it with :func:`write_table`; the same JSON, committed under
``docs/results/``, is what :mod:`feedback_alignment.experiments.render` turns into the tables of
``docs/REPRODUCTION.md``. So a run's own markdown, its JSON and the docs come from one renderer.

Every file written in quick mode says so: JSON (``"mode": "quick"``), tables (a first line
``**QUICK MODE** ...``) and plot titles (``[QUICK MODE] ...``).

Every JSON file written here is *sealed*: it carries ``"digest": "sha256:..."`` of its canonical
content (every key but the digest itself, :func:`content_digest`), so that ``render`` can refuse a
file edited after its run wrote it (:func:`seal_state`). Its provenance records the feedback
stream version of the direct rules (:data:`feedback_alignment.feedback.STREAM_VERSION`); a file
without one was written with version 1. Every file is written atomically (a temporary file in the
same folder, renamed over the final name once complete): a full disk or a kill leaves the earlier
file or none, never a truncated one, and a failed write raises :class:`ResultsWriteError`, which
names the file and the reason in one sentence.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import secrets
import statistics
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from feedback_alignment.provenance import commit, processor_name, sanitize

QUICK_BANNER = "**QUICK MODE** (smoke-scale settings: not a measurement of the method)"
"""The first line of every table written in quick mode."""


# --- statistics ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MeanStd:
    """Mean and sample standard deviation of the finite values of a sample (``n`` of them)."""

    mean: float
    std: float
    n: int

    def cell(self, single: bool = False) -> Any:
        """A table cell: ``{"mean", "std"}``; with ``single``, one value shows as just the value."""
        if self.n == 0:
            return None
        if single and self.n == 1:
            return self.mean
        return {"mean": self.mean, "std": self.std}


def mean_std(values: Iterable[float]) -> MeanStd:
    """Mean and standard deviation of the non-NaN ``values`` (``std`` 0 for one value, NaN for none).

    The one helper of the experiments: a rule that gives no update (NaN angle) is left out rather
    than turning the mean into NaN.
    """
    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not finite:
        return MeanStd(math.nan, math.nan, 0)
    std = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return MeanStd(statistics.fmean(finite), std, len(finite))


def finite_mean(values: Iterable[float]) -> float:
    """Mean of the non-NaN ``values``; NaN when there is none."""
    return mean_std(values).mean


def gap_closure(rule: float, bp: float, shallow: float) -> float:
    """``G = (m_rule - m_shallow) / (m_BP - m_shallow)``: 1 = BP's gain over Shallow, 0 = none.

    Launay et al. (2020) compare every rule against the shallow control this way; for a metric
    where lower is better (log perplexity) pass the values in the same order: the sign works out.
    NaN when BP and Shallow are equal. (``+ 0.0`` turns the ``-0.0`` of Shallow's own row, with a
    lower-is-better metric, into ``0.0``.)
    """
    return (rule - shallow) / (bp - shallow) + 0.0 if bp != shallow else math.nan


# --- tables --------------------------------------------------------------------------------------


@dataclass
class Column:
    """A table column: its header, ``digits`` for its numbers, and left or right alignment."""

    name: str
    digits: int | None = None
    align: str = "right"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "digits": self.digits, "align": self.align}


@dataclass
class Table:
    """A markdown table held as data.

    Cells are ``None`` (shown as ``missing``), numbers (shown with the column's ``digits``; NaN is
    missing), strings (as they are), ``{"mean": m, "std": s}`` (``m ± s``) or a list of cells
    (joined by `` / ``).

    Attributes:
        name: the file stem under ``docs/results/`` and the marker name in the docs.
        columns, rows: the table.
        caption: a paragraph rendered under the table (settings, definitions).
        missing: the text of an empty cell.
        quick: written in quick mode (the table then starts with :data:`QUICK_BANNER`).
    """

    name: str
    columns: list[Column]
    rows: list[list[Any]] = field(default_factory=list)
    caption: str = ""
    missing: str = "—"
    quick: bool = False

    def add(self, *cells: Any) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(
                f"table {self.name!r}: a row of {len(cells)} cells for {len(self.columns)} columns"
            )
        self.rows.append(list(cells))

    def _cell(self, value: Any, digits: int | None) -> str:
        if value is None:
            return self.missing
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            if math.isnan(value):
                return self.missing
            return f"{value:.{digits}f}" if digits is not None else f"{value:g}"
        if isinstance(value, dict):
            mean, std = value.get("mean"), value.get("std")
            if mean is None or math.isnan(mean):
                return self.missing
            return f"{self._cell(float(mean), digits)} ± {self._cell(float(std), digits)}"
        if isinstance(value, (list, tuple)):
            return " / ".join(self._cell(v, digits) for v in value)
        return str(value)

    def to_markdown(self) -> str:
        lines = [QUICK_BANNER, ""] if self.quick else []
        lines.append("| " + " | ".join(c.name for c in self.columns) + " |")
        lines.append("|" + "".join("---:|" if c.align == "right" else "---|" for c in self.columns))
        for row in self.rows:
            cells = [self._cell(v, c.digits) for v, c in zip(row, self.columns, strict=True)]
            lines.append("| " + " | ".join(cells) + " |")
        if self.caption:
            lines += ["", self.caption]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.name,
            "mode": "quick" if self.quick else "full",
            "columns": [c.to_json() for c in self.columns],
            "rows": sanitize(self.rows),
            "caption": self.caption,
            "missing": self.missing,
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Table:
        missing = [k for k in ("table", "columns", "rows") if k not in payload]
        if missing:
            raise ValueError(f"not a results table: keys {missing} are missing")
        return cls(
            name=payload["table"],
            columns=[Column(**c) for c in payload["columns"]],
            rows=[list(r) for r in payload["rows"]],
            caption=payload.get("caption", ""),
            missing=payload.get("missing", "—"),
            quick=payload.get("mode") == "quick",
        )


# --- provenance and files ------------------------------------------------------------------------


_TASK_START: float | None = None
"""``time.perf_counter()`` when the running task started (set by :func:`timed_task`)."""


@contextmanager
def timed_task() -> Iterator[None]:
    """Marks the start of one task, so that every file it writes records its wall time so far
    (``provenance()["wall_seconds"]``): the runtime a reader weighs against the budget, written
    by the run rather than copied from a log."""
    global _TASK_START
    previous, _TASK_START = _TASK_START, time.perf_counter()
    try:
        yield
    finally:
        _TASK_START = previous


def _command() -> str:
    """The command line, with the console script's name where the CLI module ran as a script
    (``python -m feedback_alignment.cli`` has ``.../cli.py`` as ``argv[0]``)."""
    program = Path(sys.argv[0]).name
    if program in ("cli.py", "__main__.py"):
        program = "feedback-alignment"
    return " ".join([program, *sys.argv[1:]])


def provenance(quick: bool, seeds: Sequence[int]) -> dict[str, Any]:
    """What produced a result: command, commit, machine, date, seeds, mode, the feedback stream
    version of the direct rules and, inside a :func:`timed_task`, the seconds from the task's
    start to this file (``None`` outside one)."""
    from feedback_alignment.feedback import STREAM_VERSION

    return {
        "command": _command(),
        "commit": commit(),
        "machine": {
            "platform": platform.platform(),
            "processor": processor_name(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seeds": list(seeds),
        "mode": "quick" if quick else "full",
        "wall_seconds": None if _TASK_START is None else round(time.perf_counter() - _TASK_START),
        "feedback_stream_version": STREAM_VERSION,
    }


DIGEST_KEY = "digest"
"""The key of a sealed file's digest (``"sha256:<hex>"`` of :func:`content_digest`)."""


def content_digest(payload: dict[str, Any]) -> str:
    """``sha256:<hex>`` of ``payload`` without its digest, as canonical JSON (sorted keys, no
    spaces, NaN as ``null``): the same for the payload a run wrote and the file read back."""
    body = sanitize({k: v for k, v in payload.items() if k != DIGEST_KEY})
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def seal(payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` sanitised, with the digest of its content under :data:`DIGEST_KEY`."""
    body = sanitize({k: v for k, v in payload.items() if k != DIGEST_KEY})
    return {**body, DIGEST_KEY: content_digest(body)}


SEALED, UNSEALED, TAMPERED = "sealed", "unsealed", "tampered"


def seal_state(payload: dict[str, Any]) -> str:
    """:data:`SEALED` (its digest matches its content), :data:`UNSEALED` (no digest: written
    before files were sealed) or :data:`TAMPERED` (edited after it was written)."""
    if DIGEST_KEY not in payload:
        return UNSEALED
    return SEALED if payload[DIGEST_KEY] == content_digest(payload) else TAMPERED


def stream_version(payload: dict[str, Any]) -> int:
    """The feedback stream version a file's provenance records (1 where it records none: the
    files written before the version was recorded)."""
    provenance = payload.get("provenance")
    version = provenance.get("feedback_stream_version") if isinstance(provenance, dict) else None
    return version if isinstance(version, int) and not isinstance(version, bool) else 1


class ResultsWriteError(OSError):
    """A results file could not be written (full disk, read-only folder); nothing truncated was
    left behind. ``str()`` is one sentence naming the file and the reason."""

    def __init__(self, path: Path, error: OSError) -> None:
        reason = error.strerror or str(error)
        super().__init__(error.errno, f"could not write {path} ({reason})", str(path))
        self.path = path

    def __str__(self) -> str:
        return self.strerror


def write_atomic(path: Path, data: bytes | str | Any) -> Path:
    """Writes ``data`` (bytes, text, or ``writer(temporary_path)``) to ``path`` through a
    temporary file beside it, renamed over ``path`` only once complete; creates the folder.

    Raises:
        ResultsWriteError: the folder or the file could not be written (the temporary file is
            removed; an earlier ``path`` is left as it was).
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if callable(data):
            data(temporary)
        else:
            raw = data.encode() if isinstance(data, str) else data
            with open(temporary, "wb") as handle:
                handle.write(raw)
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        with suppress(OSError):
            temporary.unlink()
        if isinstance(error, ResultsWriteError):
            raise
        raise ResultsWriteError(path, error) from error
    return path


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Writes ``payload`` (sanitised, sealed, indented) to ``path`` atomically; creates the
    folder (:func:`write_atomic`)."""
    return write_atomic(path, json.dumps(seal(payload), indent=1) + "\n")


def write_results(
    out_dir: Path, task: str, quick: bool, seeds: Sequence[int], **payload: Any
) -> Path:
    """``<out_dir>/results.json``: provenance, mode and the task's own payload (config, runs)."""
    body = {"task": task, "quick": quick, "provenance": provenance(quick, seeds), **payload}
    return write_json(out_dir / "results.json", body)


def write_table(out_dir: Path, table: Table, seeds: Sequence[int]) -> list[Path]:
    """``<name>.json`` (the docs format, with provenance) and ``<name>.md`` in ``out_dir``."""
    payload = {**table.to_json(), "provenance": provenance(table.quick, seeds)}
    json_path = write_json(out_dir / f"{table.name}.json", payload)
    md_path = write_atomic(out_dir / f"{table.name}.md", table.to_markdown() + "\n")
    return [json_path, md_path]


# --- plots ---------------------------------------------------------------------------------------


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def title(text: str, quick: bool) -> str:
    """A plot title that says quick mode when it is (first, so a long title cannot clip it)."""
    return f"[QUICK MODE] {text}" if quick else text


def save_figure(fig: Any, path: Path, dpi: int = 110) -> Path:
    """Lays out, saves and closes ``fig``."""
    plt = pyplot()
    fig.tight_layout()
    try:
        write_atomic(
            path, lambda temporary: fig.savefig(temporary, dpi=dpi, format=path.suffix[1:])
        )
    finally:
        plt.close(fig)
    return path
