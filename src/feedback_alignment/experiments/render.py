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

Usage::

    python -m feedback_alignment.experiments.render            # rewrite REPRODUCTION.md, README.md
    python -m feedback_alignment.experiments.render --check    # exit 1 if a table is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from feedback_alignment.experiments import claims
from feedback_alignment.experiments.results import Table

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


def load_table(results: Path, name: str) -> Table:
    """The table ``name`` from ``<results>/<name>.json``."""
    path = results / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"the docs name a results table {name!r} but {path} does not exist: commit the JSON "
            "that the run wrote (results/<date>/<task>/<name>.json) there, or remove the markers"
        )
    try:
        return Table.from_json(json.loads(path.read_text()))
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from None


def render_text(text: str, results: Path) -> tuple[str, list[str]]:
    """``text`` with every marked table re-rendered; and the names of the tables that changed."""
    changed: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match["name"]
        body = load_table(results, name).to_markdown() + "\n"
        if body != match["body"]:
            changed.append(name)
        return match["open"] + body + match["close"]

    def replace_claims(match: re.Match[str]) -> str:
        view = claims.summary_table if match["view"] else claims.claims_table
        body = view(results).to_markdown() + "\n"
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


def marked_tables(text: str) -> list[str]:
    """The names of the marked tables in ``text``, in order."""
    return [m["name"] for m in MARKER.finditer(text)]


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
    args = parser.parse_args(argv)
    stale = False
    for doc in args.docs:
        if not doc.is_file():
            print(f"{doc}: no such file (run from the repository root)", file=sys.stderr)
            return 2
        text = doc.read_text()
        try:
            rendered, changed = render_text(text, args.results)
        except (FileNotFoundError, ValueError) as error:
            print(f"{doc}: {error}", file=sys.stderr)
            return 2
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
            doc.write_text(rendered)
            print(f"{doc}: re-rendered {', '.join(changed)}")
        else:
            count = sum(len(m.findall(text)) for m in (MARKER, CLAIMS_MARKER, TUNED_MARKER))
            print(f"{doc}: {count} tables, all up to date")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
