"""Re-renders the docs' result tables from the committed JSON under ``docs/results/``.

A table in a markdown file sits between two marker comments::

    <!-- results: graphs_cora -->
    | layer | BP | ... |
    <!-- /results -->

and its data in ``docs/results/graphs_cora.json``, in the format a run writes
(:meth:`feedback_alignment.experiments.results.Table.to_json` plus provenance). This command
replaces the text between the markers with the rendering of the JSON, so docs never drift from
data; ``--check`` only reports the tables that differ (exit status 1), which is what the test does.

The claims table (:mod:`feedback_alignment.experiments.claims`: each claim of the papers, the
paper's figure, ours and the status, all computed from the same JSON) sits between
``<!-- claims -->`` and ``<!-- /claims -->``; ``<!-- claims: summary -->`` gives its short form
(the headline claims, for README.md).

Trust (issue 21): every results and tuning file a run writes is sealed with a digest of its cells
(:func:`~feedback_alignment.experiments.results.seal`). Before anything is rendered, each file the
docs read is read once, checked and parsed; the tables *and* the claims are rendered from those
same bytes, and no doc is written unless every doc rendered. A file whose digest does not match
(edited after its run wrote it) is refused (exit 2, naming the file and the repair), as is a text
value where a number belongs. A file written before files were sealed (and so before the feedback
stream version was recorded: stream v1) renders with one mark, :data:`LEGACY_MARK`, above its
table until it is rerun. Naming README.md or docs/REPRODUCTION.md renders both: they show the same
cells.

Usage::

    python -m feedback_alignment.experiments.render            # rewrite REPRODUCTION.md, README.md
    python -m feedback_alignment.experiments.render --check    # exit 1 if a table is stale
    python -m feedback_alignment.experiments.render --no-readme  # docs/REPRODUCTION.md only

``--no-readme`` renders the docs named (by default docs/REPRODUCTION.md) without README.md: for
a checkout where README.md is being edited by hand; README.md's claims summary is then stale
until a plain run renders both.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feedback_alignment.experiments import claims
from feedback_alignment.experiments.results import Table, write_atomic
from feedback_alignment.experiments.sealed import (  # noqa: F401  (re-exported)
    LEGACY_MARK,
    RenderError,
    legacy_note,
    refuse_tampered,
)

MARKER = re.compile(
    r"(?P<open><!-- results: (?P<name>[A-Za-z0-9_.-]+) -->\n)(?P<body>.*?)(?P<close><!-- /results -->)",
    re.DOTALL,
)
"""A rendered block: the opening marker (with the JSON's stem), the table, the closing marker."""

CLAIMS_MARKER = re.compile(
    r"(?P<open><!-- claims(?P<view>: summary)? -->\n)(?P<body>.*?)(?P<close><!-- /claims -->)",
    re.DOTALL,
)
"""The claims table (or, with ``: summary``, its short form) between its markers."""

TUNED_MARKER = re.compile(
    r"(?P<open><!-- tuned: (?P<task>[A-Za-z0-9_.-]+) -->\n)(?P<body>.*?)(?P<close><!-- /tuned -->)",
    re.DOTALL,
)
"""The tuned hyperparameters of a task (its committed ``experiments/tuned/<task>.json``)."""

DEFAULT_DOCS = (Path("docs/REPRODUCTION.md"), Path("README.md"))
DEFAULT_RESULTS = Path("docs/results")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _numeric_text(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def check_table_payload(path: Path, payload: Any) -> None:
    """Raises :class:`RenderError` naming ``path`` and the field where a table's JSON holds a
    value of the wrong kind: text (or anything else) where a number belongs."""
    if not isinstance(payload, dict):
        raise RenderError(f"{path}: not a results table (a JSON object is expected)")
    columns, rows = payload.get("columns"), payload.get("rows")
    if not isinstance(columns, list) or not all(isinstance(c, dict) for c in columns):
        raise RenderError(f"{path}: 'columns' must be a list of {{name, digits, align}} objects")
    if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
        raise RenderError(f"{path}: 'rows' must be a list of rows (lists of cells)")
    repair = "write a number (or null), or rerun the run that wrote it"
    for index, column in enumerate(columns):
        digits = column.get("digits")
        if digits is not None and (not isinstance(digits, int) or isinstance(digits, bool)):
            raise RenderError(
                f"{path}: column {index} ({column.get('name')!r}) has 'digits' {digits!r}, "
                f"where a whole number or null belongs; {repair}"
            )
    names = [str(c.get("name")) for c in columns]
    for r, row in enumerate(rows):
        if len(row) != len(columns):
            raise RenderError(
                f"{path}: row {r} has {len(row)} cells for {len(columns)} columns; {repair}"
            )
        for name, cell in zip(names, row, strict=True):
            where = f"{path}: row {r} ({row[0]!r}), column {name!r}"
            _check_cell(cell, where, repair)
    for c, name in enumerate(names):  # a number written as text among numbers
        cells = [row[c] for row in rows]
        if any(_is_number(v) or isinstance(v, dict) for v in cells):
            for r, value in enumerate(cells):
                if _numeric_text(value):
                    raise RenderError(
                        f"{path}: row {r} ({rows[r][0]!r}), column {name!r} holds the text "
                        f"{value!r} where the column's other cells hold numbers; {repair}"
                    )


def _check_cell(cell: Any, where: str, repair: str) -> None:
    if cell is None or isinstance(cell, (bool, int, float, str)):
        return
    if isinstance(cell, list):
        for item in cell:
            _check_cell(item, where, repair)
        return
    if isinstance(cell, dict):
        for key in ("mean", "std"):
            value = cell.get(key)
            if value is not None and not _is_number(value):
                raise RenderError(
                    f"{where}: {key!r} is {value!r}, text where a number belongs; {repair}"
                )
        return
    raise RenderError(f"{where}: {cell!r} is not a cell (a number, text, null, list or mean/std)")


@dataclass
class Loaded:
    """A results file read once: its bytes (what the claims read), payload and table."""

    path: Path
    raw: bytes
    payload: dict[str, Any]
    table: Table


def load_file(path: Path) -> Loaded:
    """``path`` read once, its digest checked and its cells' kinds (:class:`RenderError`)."""
    raw = path.read_bytes()
    try:
        payload = json.loads(raw)
    except ValueError as error:
        raise RenderError(f"{path}: not valid JSON ({error})") from None
    check_table_payload(path, payload)
    refuse_tampered(path, path.stem, payload)
    try:
        table = Table.from_json(payload)
    except (ValueError, TypeError) as error:
        raise RenderError(f"{path}: {error}") from None
    return Loaded(path, raw, payload, table)


def load_table(results: Path, name: str) -> Table:
    """The table ``name`` from ``<results>/<name>.json`` (checked as :func:`load_file` does)."""
    return _load(results, name, {}).table


def _load(results: Path, name: str, cache: dict[str, Loaded]) -> Loaded:
    if name not in cache:
        path = results / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"the docs name a results table {name!r} but {path} does not exist: commit the "
                "JSON that the run wrote (results/<date>/<task>/<name>.json) there, or remove "
                "the markers"
            )
        cache[name] = load_file(path)
    return cache[name]


def _rendered_table(loaded: Loaded, name: str) -> str:
    note = legacy_note(name, loaded.payload)
    return (note + "\n\n" if note else "") + loaded.table.to_markdown() + "\n"


def _claims_names() -> Iterable[str]:
    from feedback_alignment.experiments.claim_data import COMMANDS

    return COMMANDS


def render_text(
    text: str, results: Path, cache: dict[str, Loaded] | None = None
) -> tuple[str, list[str]]:
    """``text`` with every marked table re-rendered; and the names of the tables that changed.

    ``cache`` holds the files already read (name -> :class:`Loaded`): pass one dict to several
    calls and every doc renders from the same bytes.
    """
    cache = {} if cache is None else cache
    changed: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        body = _rendered_table(_load(results, name, cache), name)
        if body != match["body"]:
            changed.append(name)
        return match["open"] + body + match["close"]

    def replace_claims(match: re.Match[str]) -> str:
        view = claims.summary_table if match["view"] else claims.claims_table
        body = _claims_view(view, results, cache).to_markdown() + "\n"
        if body != match["body"]:
            changed.append("claims" + (match["view"] or ""))
        return match["open"] + body + match["close"]

    def replace_tuned(match: re.Match[str]) -> str:
        from feedback_alignment.experiments import tuning

        body = tuning.markdown(match["task"]) + "\n"
        if body != match["body"]:
            changed.append("tuned: " + match["task"])
        return match["open"] + body + match["close"]

    text = TUNED_MARKER.sub(replace_tuned, MARKER.sub(replace, text))
    return CLAIMS_MARKER.sub(replace_claims, text), changed


def _claims_view(view: Any, results: Path, cache: dict[str, Loaded]) -> Table:
    """The claims (or their summary) computed from the very bytes the tables rendered from: the
    checked files are copied into a private folder that the claims read."""
    for name in _claims_names():
        if (results / f"{name}.json").is_file():
            _load(results, name, cache)
    with tempfile.TemporaryDirectory(prefix="render-") as folder:
        for name, loaded in cache.items():
            (Path(folder) / f"{name}.json").write_bytes(loaded.raw)
        try:
            return view(Path(folder))
        except ValueError as error:  # a claim's row or column is missing: name the real folder
            raise ValueError(str(error).replace(folder, str(results))) from None


def marked_tables(text: str) -> list[str]:
    """The names of the marked tables in ``text``, in order."""
    return [m["name"] for m in MARKER.finditer(text)]


README = Path("README.md")


def _with_companions(docs: list[Path], readme: bool = True) -> list[Path]:
    """``docs`` and, where one of them is a default doc, the other default docs that exist: they
    render the same results, so one must not show a figure the other does not. With ``readme``
    false, README.md is left out (and never written), even when named."""
    if not readme:
        docs = [d for d in docs if d.resolve() != README.resolve()]
        return [
            *docs,
            *[d for d in DEFAULT_DOCS if d.resolve() != README.resolve() and d.is_file()
              and d.resolve() not in {x.resolve() for x in docs}],
        ]  # fmt: skip
    resolved = {d.resolve() for d in docs}
    if not resolved & {d.resolve() for d in DEFAULT_DOCS}:
        return docs
    extra = [d for d in DEFAULT_DOCS if d.resolve() not in resolved and d.is_file()]
    return [*docs, *extra]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m feedback_alignment.experiments.render",
        description="Re-render the result tables of the docs from the committed JSON.",
    )
    parser.add_argument("docs", nargs="*", type=Path, default=list(DEFAULT_DOCS),
                        help="markdown files with <!-- results: NAME --> or claims markers")  # fmt: skip
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help="folder of the committed <NAME>.json tables")  # fmt: skip
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a table differs from its JSON")  # fmt: skip
    parser.add_argument("--no-readme", action="store_true",
                        help="render and check the docs without README.md (it is left untouched)")  # fmt: skip
    args = parser.parse_args(argv)
    docs = _with_companions(list(args.docs), readme=not args.no_readme)
    cache: dict[str, Loaded] = {}
    outcomes: list[tuple[Path, str, str, list[str]]] = []
    for doc in docs:  # every doc rendered before any is written: all or none
        if not doc.is_file():
            print(f"{doc}: no such file (run from the repository root)", file=sys.stderr)
            return 2
        text = doc.read_text()
        try:
            rendered, changed = render_text(text, args.results, cache)
        except (FileNotFoundError, ValueError, OSError) as error:
            print(f"{doc}: {error}; no doc was changed", file=sys.stderr)
            return 2
        outcomes.append((doc, text, rendered, changed))
    stale = False
    for doc, text, rendered, changed in outcomes:
        if args.check:
            for name in changed:
                source = (
                    args.results
                    if name.startswith("claims")
                    else "experiments/tuned/"
                    if name.startswith("tuned")
                    else args.results / f"{name}.json"
                )
                print(f"{doc}: table {name!r} differs from its rendering of {source}")
            stale = stale or bool(changed)
        elif changed:
            try:
                write_atomic(doc, rendered)
            except OSError as error:  # the doc is left as it was (atomic)
                print(f"{doc}: {error}; the doc was left as it was", file=sys.stderr)
                return 1
            print(f"{doc}: re-rendered {', '.join(changed)}")
        else:
            count = sum(len(m.findall(text)) for m in (MARKER, CLAIMS_MARKER, TUNED_MARKER))
            print(f"{doc}: {count} tables, all up to date")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
