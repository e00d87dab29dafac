"""Griffe extension (used by mkdocstrings): renders the library's docstrings as they are written.

The docstrings are Google style with two habits Markdown does not know:

* Sphinx roles (``:class:`FA```, ``:func:`~feedback_alignment.feedback.draw```) become inline
  code (``FA``, ``draw``); they are not turned into links, because some name private modules
  that the site does not document;
* doctest lines (``>>> ...`` and their output) outside an ``Examples:`` section become a
  ``pycon`` code block, so an output such as ``['cora', ...]`` is not read as a link;
* reST's ``Usage::`` before an indented block reads ``Usage:`` (the block stays code).

The source files are not changed; only the text the site renders.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc|const):`~?([^`]+)`")


def _role(match: re.Match[str]) -> str:
    text = match.group(0)
    target = match.group(1)
    if "`~" in text:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def fence_doctests(text: str) -> str:
    """Wraps each run of doctest lines (``>>>`` up to the next blank line) in a pycon fence."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    inside_fence = False
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith("```"):
            inside_fence = not inside_fence
        if not inside_fence and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out += [f"{indent}```pycon", *block, f"{indent}```"]
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


def rewrite(text: str) -> str:
    text = re.sub(r"(\S)::(?=\n[ \t]*\n)", r"\1:", text)  # reST "Usage::" before a block
    return fence_doctests(ROLE.sub(_role, text))


class MarkdownDocstrings(Extension):
    """Rewrites every docstring's text once it is loaded (see the module docstring)."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and docstring.value:
            docstring.value = rewrite(docstring.value)
