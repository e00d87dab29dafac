"""Fixtures of the data tests: an isolated cache, local "downloads", real-data gates."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from feedback_alignment import data
from feedback_alignment.data import cache, registry, sources


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty cache directory for the duration of one test."""
    root = tmp_path / "cache"
    monkeypatch.setenv(cache.ENV_VAR, str(root))
    return root


class FakeWeb:
    """Serves registered URLs from memory; every other URL fails like a dead network."""

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.fail_after: dict[str, int] = {}

    def serve(self, url: str, payload: bytes) -> str:
        self.pages[url] = payload
        return hashlib.sha256(payload).hexdigest()

    def open(self, url: str) -> io.BytesIO:
        self.requests.append(url)
        if url not in self.pages:
            raise OSError(f"<urlopen error [Errno -3] no network for {url}>")
        payload = self.pages[url]
        if url in self.fail_after:
            return _Truncated(payload, self.fail_after[url])
        return io.BytesIO(payload)


class _Truncated(io.BytesIO):
    """A response whose connection drops after ``limit`` bytes."""

    def __init__(self, payload: bytes, limit: int) -> None:
        super().__init__(payload)
        self.limit = limit

    def read(self, n: int | None = -1) -> bytes:
        if self.tell() >= self.limit:
            raise ConnectionResetError("connection reset by peer")
        n = self.limit - self.tell() if n is None or n < 0 else min(n, self.limit - self.tell())
        return super().read(n)


@pytest.fixture
def web(monkeypatch: pytest.MonkeyPatch) -> FakeWeb:
    """Replace the downloader so no test touches the network."""
    fake = FakeWeb()
    monkeypatch.setattr(sources, "open_url", fake.open)
    return fake


@pytest.fixture
def temp_spec(monkeypatch: pytest.MonkeyPatch):
    """Register a data set for one test only."""

    def add(spec: registry.DatasetSpec) -> registry.DatasetSpec:
        monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
        return spec

    return add


def require_cached(name: str) -> None:
    """Skip unless the real data set is already in the cache (CI fetches carriers first)."""
    if not data.is_cached(name):
        pytest.skip(
            f"{name} is not cached in {cache.cache_root()}; run "
            "`python -m feedback_alignment.data fetch --all --carriers-only` first"
        )
