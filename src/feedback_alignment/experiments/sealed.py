"""The trust checks that a file must pass before its numbers are rendered into the docs: shared
by the results tables (:mod:`.render`) and the tuned searches (:mod:`.tuning`).

A file whose digest does not match its content was edited after its run wrote it, and is
refused (:func:`refuse_tampered`); a file written before results were sealed, or with an older
feedback stream, is rendered under one :data:`LEGACY_MARK` line that names the rerun that
replaces it (:func:`legacy_note`). Both messages name the file and the command to repair it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from feedback_alignment.experiments.claim_data import COMMANDS
from feedback_alignment.experiments.results import TAMPERED, UNSEALED, seal_state, stream_version
from feedback_alignment.feedback import STREAM_VERSION

LEGACY_MARK = "**LEGACY FILE**"
"""The one mark of a table rendered from a file without a digest (written before results were
sealed, with feedback stream v1) or from an older feedback stream: it stays until a rerun."""


class RenderError(ValueError):
    """A results or tuning file that must not be rendered (edited after it was written, or a
    value of the wrong kind); the message names the file, the field and the repair."""


def _rerun(name: str, payload: dict[str, Any], command: str | None = None) -> str:
    """The command that rewrites ``name``'s file: ``command``, else the claims' record of the
    run, else the command its provenance names."""
    if command is not None:
        return command
    provenance = payload.get("provenance")
    command = provenance.get("command") if isinstance(provenance, dict) else None
    return COMMANDS.get(name) or (command if isinstance(command, str) else "its run")


def legacy_note(
    name: str,
    payload: dict[str, Any],
    *,
    copy_to: str = "docs/results/",
    command: str | None = None,
) -> str:
    """The :data:`LEGACY_MARK` line of an unsealed or old-stream file ('' for a current one)."""

    version = stream_version(payload)
    if seal_state(payload) == UNSEALED:
        why = (
            f"written with feedback stream v{version}, before results files carried a digest of "
            "their cells, so an edit to it cannot be detected"
        )
    elif version != STREAM_VERSION:
        why = (
            f"written with feedback stream v{version}; the direct rules now draw v{STREAM_VERSION}"
        )
    else:
        return ""
    rerun = _rerun(name, payload, command)
    return f"{LEGACY_MARK}: {why}; rerun `{rerun}` and copy its file to {copy_to} to replace it."


def refuse_tampered(
    path: Path, name: str, payload: dict[str, Any], command: str | None = None
) -> None:
    """Raises :class:`RenderError` when ``payload`` (read from ``path``) fails its digest."""
    if seal_state(payload) == TAMPERED:
        raise RenderError(
            f"{path} was edited after its run wrote it (its content no longer matches the digest "
            f"written with it): restore the file as written (e.g. `git checkout -- {path}`) or "
            f"rerun `{_rerun(name, payload, command)}` and copy the file it writes there"
        )
