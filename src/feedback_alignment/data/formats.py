"""Readers shared by the family modules, each failing with a :class:`~.errors.DataError` that
names the file: bounded gunzip and parquet with a column check."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .cache import open_verified, read_verified
from .errors import DataError, reading

GUNZIP_LIMIT = 1 << 30
"""Most bytes a gzip file of a data set may expand to (1 GiB): a gzip bomb stops here."""

PYARROW_MIN = (14, 0, 1)
"""pyarrow before 14.0.1 unpickles extension types found in parquet files (CVE-2023-47248)."""


def gunzip(raw: bytes, path: Path, limit: int = GUNZIP_LIMIT) -> bytes:
    """Decompress a gzip stream held in memory, refusing to expand past ``limit`` bytes.

    Raises:
        DataError: the stream is damaged or truncated, or expands past ``limit``.
    """
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise DataError(f"is not a valid gzip stream ({exc})", file=path) from exc
    if len(out) > limit:
        raise DataError(f"expands past {limit} bytes; refusing it (a gzip bomb?)", file=path)
    if not inflater.eof:
        raise DataError("is a truncated gzip stream", file=path)
    return out


def read_maybe_gzip(path: Path, limit: int = GUNZIP_LIMIT) -> bytes:
    """The bytes of ``path``, decompressed when they start with the gzip magic."""
    with reading(path):
        raw = read_verified(path)  # the bytes whose digest the load checked
    return gunzip(raw, path, limit) if raw[:2] == b"\x1f\x8b" else raw


def _check_pyarrow() -> None:
    try:
        import pyarrow
    except ImportError:
        return  # pandas will say what is missing
    version = tuple(int(p) for p in pyarrow.__version__.split(".")[:3] if p.isdigit())
    if version < PYARROW_MIN:
        raise ImportError(
            f"pyarrow {pyarrow.__version__} can run code hidden in a parquet file "
            "(CVE-2023-47248); pip install 'pyarrow>=14.0.1'"
        )


def read_parquet(path: Path, columns: Sequence[str], what: str) -> Any:
    """Read a parquet file into a pandas ``DataFrame`` and check it has ``columns``.

    Raises:
        ImportError: pandas or pyarrow is missing, or pyarrow is too old to be safe.
        DataError: the file is damaged or lacks a column.
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError(f"{what} needs pandas and pyarrow: pip install pandas pyarrow") from exc
    _check_pyarrow()
    with reading(path, "a parquet file"):
        frame = pd.read_parquet(open_verified(path))
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"lacks the columns {missing} of {what} (has {list(frame.columns)})", file=path
        )
    return frame
