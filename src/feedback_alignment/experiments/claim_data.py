"""Reading the committed result tables for :mod:`~feedback_alignment.experiments.claims`.

A claim reads numbers by row key and column name from ``docs/results/<name>.json`` (the format of
:meth:`~feedback_alignment.experiments.results.Table.to_json` plus provenance). An absent or
quick-mode table raises :class:`NotMeasured` (the claim renders "not measured" with the command
that would measure it); a table that lacks the row or column raises :class:`ClaimDataError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMMANDS: dict[str, str] = {
    **{f"principled_{p}": f"feedback-alignment reproduce --tasks principled-{p}"
       for p in ("mlp", "alignment", "bottleneck", "practices", "conv")},
    "transformer": "feedback-alignment reproduce --tasks transformer",
    "nerf": "feedback-alignment reproduce --tasks nerf",
    "graphs_cora": "feedback-alignment reproduce --tasks graphs --seeds 0,1,2",
    "graphs_cora_splits": "feedback-alignment --threads 1 reproduce --tasks graphs-gcn-splits",
    "graphs_cora_splits_layers": "feedback-alignment --threads 1 reproduce --tasks graphs-splits",
    "gin_cora": "python -m feedback_alignment.experiments.gin_cora",
    "recommenders_auc": "feedback-alignment reproduce --tasks recommenders --seeds 0,1,2",
    "recommenders_paper_size": "feedback-alignment --threads 1 reproduce --tasks "
                               "recommenders-paper-size --seeds 0,1,2",
    "convnets_fashion_mnist": "feedback-alignment reproduce --tasks convnets",
    "resnet_fashion_mnist": "feedback-alignment --threads 1 reproduce --tasks resnet --workers 2",
    "resnet_seeds_fashion_mnist": "feedback-alignment --threads 1 reproduce --tasks "
                                  "resnet-seeds --seeds 0,1,2 --workers 2",
    "learned_feedback_fashion_mnist": "feedback-alignment --threads 1 reproduce --tasks "
                                      "learned-feedback --tune --seeds 0,1,2",
    "learned_feedback_resnet_fashion_mnist": "feedback-alignment --threads 1 reproduce --tasks "
                                             "learned-feedback-resnet --tune --seeds 0,1,2",
}  # fmt: skip
"""The run that writes each table a claim reads (its JSON is then copied to docs/results/)."""


class ClaimDataError(ValueError):
    """A committed table lacks the row or column a claim reads (renamed or dropped)."""


class NotMeasured(Exception):
    """The table a claim needs is absent, quick mode, or holds no number where the claim reads."""


@dataclass(frozen=True)
class Stat:
    """A cell's number: the mean and the spread over seeds (``None`` for a single value)."""

    mean: float
    std: float | None

    def show(self, digits: int) -> str:
        text = f"{self.mean:.{digits}f}"
        return f"{text} ± {self.std:.{digits}f}" if self.std is not None else text


class Data:
    """One committed table, ``docs/results/<name>.json``, read by row keys and column names."""

    def __init__(self, path: Path) -> None:
        self.path, self.name = path, path.stem
        if not path.is_file():
            raise NotMeasured(f"no {path.name}: run `{COMMANDS[path.stem]}`")
        payload = json.loads(path.read_text())
        if payload.get("mode") == "quick":
            raise NotMeasured(f"{path.name} is quick mode: run `{COMMANDS[path.stem]}`")
        self.columns = [c["name"] for c in payload["columns"]]
        self.rows: list[list[Any]] = payload["rows"]
        provenance = payload.get("provenance", {})
        self.seeds = len(provenance.get("seeds") or [0])
        self.date = str(provenance.get("date", "undated"))[:10]

    def index(self, column: str) -> int:
        if column not in self.columns:
            raise ClaimDataError(f"{self.path}: no column {column!r} (columns: {self.columns})")
        return self.columns.index(column)

    def get(self, column: str, where: str | dict[str, Any], part: int | None = None) -> Stat:
        """The number at ``column`` in the one row whose cells equal ``where`` (column -> value;
        a string: the first column); ``part``: an item of a list cell (AUC of ``[AUC, loss]``)."""
        keys = {self.columns[0]: where} if isinstance(where, str) else where
        found = [r for r in self.rows if all(r[self.index(k)] == v for k, v in keys.items())]
        if len(found) != 1:
            firsts = [r[0] for r in self.rows]
            raise ClaimDataError(f"{self.path}: no row {keys} (first cells: {firsts})")
        cell = found[0][self.index(column)]
        if part is not None:
            cell = cell[part] if isinstance(cell, list) else None
        if isinstance(cell, dict) and cell.get("mean") is not None:
            std = cell.get("std")
            return Stat(float(cell["mean"]), None if std is None else float(std))
        if isinstance(cell, (int, float)) and not isinstance(cell, bool):
            return Stat(float(cell), None)
        raise NotMeasured(f"{self.name}.json has no number at {keys}, {column!r}")

    def each(
        self, column: str, names: Iterable[Any], by: str = "", **fixed: Any
    ) -> dict[Any, Stat]:
        """``get`` for each of ``names`` in column ``by`` (default: the first column); ``fixed``:
        the other keys, ``_`` standing for a space in their names."""
        keys = {k.replace("_", " "): v for k, v in fixed.items()}
        return {n: self.get(column, {by or self.columns[0]: n, **keys}) for n in names}

    def tag(self) -> str:
        return f"[{self.name}, {self.seeds} seed{'s' if self.seeds > 1 else ''}]"


class Results(dict[str, Data]):
    """The folder of committed tables, each read once, on first use."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def __missing__(self, name: str) -> Data:
        if name not in COMMANDS:
            raise KeyError(f"no run known for table {name!r}: add it to claim_data.COMMANDS")
        self[name] = Data(self.folder / f"{name}.json")
        return self[name]


# --- outcomes ------------------------------------------------------------------------------

REPRODUCED, NOT_REPRODUCED = "reproduced", "not reproduced"
"""A criterion's two outcomes; :func:`~feedback_alignment.experiments.claims.assess` turns a miss
into :data:`CONTRADICTED` or :data:`NOT_AT_SCALE` by the claim's :class:`Scale`."""
CONTRADICTED, NOT_AT_SCALE = "contradicted", "not reproduced at this scale"
NOT_TESTABLE, NOT_MEASURED = "not testable here", "not measured"
STATUSES = (REPRODUCED, CONTRADICTED, NOT_AT_SCALE, NOT_TESTABLE, NOT_MEASURED)
"""What the claims table says of a claim (a raw miss, :data:`NOT_REPRODUCED`, is never shown)."""


@dataclass(frozen=True)
class Scale:
    """Where a claim is said to hold, and where we tested it.

    Attributes:
        paper: the smallest setting at which the paper states the claim (data set, model, schedule),
            or that the paper gives none.
        ours: the setting of our committed run, naming what differs from the paper's.
        at_scale: our run is at or above the paper's smallest setting in every respect that the
            claim depends on, so that a miss contradicts the paper; ``False`` (smaller data, model
            or schedule, another data set, or a paper that names no setting): a miss is "not
            reproduced at this scale".
    """

    paper: str
    ours: str
    at_scale: bool = False


TARGET = {"macro": 0.79, "micro": 0.57, "nerf_db": 5.6, "gcn": 0.97, "sf_points": 1.0, "auc": 0.02}
"""Issue 13's targets (the papers' figures, rounded as the issue states them)."""


@dataclass(frozen=True)
class Outcome:
    ours: str
    status: str
    detail: str = ""


Evaluate = Callable[[Results], Outcome]


def verdict(t: Data, ours: str, met: bool, miss: str, hit: str = "") -> Outcome:
    """The outcome of a criterion: ``ours`` (tagged with the table and seeds) and the status."""
    return Outcome(f"{ours} {t.tag()}", REPRODUCED if met else NOT_REPRODUCED, hit if met else miss)


def untestable(reason: str) -> Evaluate:
    return lambda _: Outcome("—", NOT_TESTABLE, reason)


def slash(stats: dict[Any, Stat], digits: int) -> str:
    return " / ".join(f"{k} {v.show(digits)}" for k, v in stats.items())
