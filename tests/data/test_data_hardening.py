"""Archive bombs, path traversal, download caps, leftovers, unpinned archives, transports."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from feedback_alignment import data
from feedback_alignment.data import cache, sources
from feedback_alignment.data.registry import DatasetSpec
from feedback_alignment.data.sources import (
    ChecksumError,
    Download,
    DownloadArchive,
    RemoteFile,
    SizeLimitError,
    SourceError,
    extract_members,
)

MiB = 1 << 20


def _sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _files_under(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file()] if directory.exists() else []


def _zip_bomb(path: Path, size: int) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pkg/data.bin", b"\0" * size)
    return path


def _tar_bomb(path: Path, size: int) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("pkg/data.bin")
        info.size = size
        tf.addfile(info, io.BytesIO(b"\0" * size))
    return path


@pytest.mark.parametrize("maker", [_zip_bomb, _tar_bomb])
def test_bomb_is_refused_before_writing_past_the_limit(tmp_path: Path, maker) -> None:
    archive = maker(tmp_path / "bomb.arc", 32 * MiB)
    assert archive.stat().st_size < 200_000  # small on disk, 32 MiB expanded
    out = tmp_path / "out"
    with pytest.raises(SizeLimitError, match=r"past the limit of 1048576.*refusing"):
        extract_members(archive, {"data.bin": "pkg/data.bin"}, out, limit=MiB)
    assert _files_under(out) == []  # nothing kept, not even a partial


def test_lying_zip_header_is_caught_while_copying(tmp_path: Path) -> None:
    """A zip whose central directory claims a tiny size: the copy is counted, and the member
    fails its CRC, so the source fails with a message rather than an OSError."""
    archive = _zip_bomb(tmp_path / "liar.zip", 4 * MiB)
    raw = bytearray(archive.read_bytes())
    size = (4 * MiB).to_bytes(4, "little")
    raw = raw.replace(size, (10).to_bytes(4, "little"))  # local and central headers
    archive.write_bytes(bytes(raw))
    out = tmp_path / "out"
    with pytest.raises(SourceError):
        extract_members(archive, {"data.bin": "pkg/data.bin"}, out, limit=MiB)
    assert _files_under(out) == []


def test_real_limits_fit_the_registered_archives() -> None:
    assert sources.EXTRACT_LIMIT > 540_000_000  # WikiText-103 raw, the largest extraction
    assert sources.DOWNLOAD_LIMIT > 191_000_000  # its zip, the largest download


@pytest.mark.parametrize(
    "evil", ["../escape.txt", "pkg/../../escape.txt", "/abs/escape.txt", "C:/escape.txt"]
)
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_path_traversal_refuses_the_archive(tmp_path: Path, evil: str, kind: str) -> None:
    archive = tmp_path / f"a.{kind}"
    members = {"pkg/texts/ok_gut.txt": b"ok", evil: b"evil"}
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for name, payload in members.items():
                zf.writestr(name, payload)
    else:
        with tarfile.open(archive, "w") as tf:
            for name, payload in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    out = tmp_path / "deep" / "out"
    with pytest.raises(SourceError, match="path traversal"):
        extract_members(archive, {"texts/": "*_gut.txt", "x": "*escape.txt"}, out)
    assert not list(tmp_path.rglob("escape.txt"))


def test_download_cap(web, tmp_cache: Path) -> None:
    web.serve("https://example.org/big", b"x" * 5000)
    src = Download((RemoteFile("https://example.org/big", None, "big", limit=4096),))
    with pytest.raises(SizeLimitError, match="more than the limit of 4096"):
        src.fetch(tmp_cache / "ds")
    assert _files_under(tmp_cache) == []


def _dead_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid -= 1


def test_leftovers_are_cleaned_on_the_next_fetch(web, tmp_cache: Path, temp_spec) -> None:
    """What a kill -9 leaves (partials, pip temp folders) goes on the next fetch; what a
    live concurrent fetch is writing stays."""
    host, dead, alive = cache._HOST, _dead_pid(), os.getpid()
    directory = data.dataset_dir("toy-left")
    carriers = cache.carriers_dir()
    (directory / "texts").mkdir(parents=True)
    carriers.mkdir(parents=True)
    stale = [
        directory / f".x.txt.{host}-{dead}-abcd1234.partial",
        directory / "texts" / f".a_gut.txt.{host}-{dead}-00ff00ff.partial",
        carriers / f".z.zip.{host}-{dead}-0badf00d.partial",
    ]
    live = [
        directory / f".x.txt.{host}-{alive}-abcd1234.partial",
        directory / f".x.txt.otherhost-{dead}-abcd1234.partial",  # another machine, young
    ]
    for p in stale + live:
        p.write_bytes(b"half")
    stale_dir = carriers / f".pip-{host}-{dead}-q1w2e3"
    stale_dir.mkdir()
    (stale_dir / "half.whl").write_bytes(b"x")
    old = directory / f".y.txt.otherhost-{dead}-abcd1234.partial"
    old.write_bytes(b"ancient")
    os.utime(old, (1, 1))  # older than STALE_AFTER_S
    legacy = directory / f".x.txt.{dead}-0123abcd.partial"  # named before hosts were recorded
    legacy.write_bytes(b"half")
    stale.append(legacy)
    legacy_dir = carriers / ".pip-k2j4h6g8"
    legacy_dir.mkdir()
    os.utime(legacy_dir, (1, 1))
    young_legacy_dir = carriers / ".deb-a1b2c3d4"
    young_legacy_dir.mkdir()
    sha = web.serve("https://example.org/x", b"x")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("z/y.txt", b"y")
    zsha = web.serve("https://example.org/z.zip", archive.getvalue())
    temp_spec(
        DatasetSpec(
            name="toy-left",
            family="text",
            description="t",
            license="t",
            loader=lambda d: (d / "x.txt").read_text(),
            files=("x.txt",),
            sources=(Download((RemoteFile("https://example.org/x", sha, "x.txt"),)),),
        )
    )
    assert data.load("toy-left") == "x"
    DownloadArchive(RemoteFile("https://example.org/z.zip", zsha, "z.zip"), {"y": "z/y.txt"}).fetch(
        tmp_cache / "other"
    )
    assert not any(p.exists() for p in stale) and not stale_dir.exists() and not old.exists()
    assert not legacy_dir.exists()
    assert all(p.exists() for p in live) and young_legacy_dir.exists()


def test_unpinned_archive_is_recorded_and_checked_on_every_use(web, tmp_cache: Path) -> None:
    payload = io.BytesIO()
    with zipfile.ZipFile(payload, "w") as zf:
        zf.writestr("d/dac_sample.txt", b"1\n")
    web.serve("https://example.org/d.zip", payload.getvalue())
    src = DownloadArchive(
        RemoteFile("https://example.org/d.zip", None, "d.zip"),
        {"dac_sample.txt": "*dac_sample.txt"},
    )
    src.fetch(tmp_cache / "ds")
    kept = cache.carriers_dir() / "d.zip"
    record = kept.with_name(".d.zip.sha256")
    assert record.read_text().strip() == _sha(payload.getvalue())
    web.requests.clear()
    src.fetch(tmp_cache / "ds")
    assert web.requests == []  # intact: used as kept
    kept.write_bytes(b"tampered")
    src.fetch(tmp_cache / "ds")
    assert web.requests == ["https://example.org/d.zip"]  # changed: fetched again
    assert kept.read_bytes() == payload.getvalue()
    kept.write_bytes(b"tampered")
    web.serve("https://example.org/d.zip", b"PK-different")  # the publisher changed it
    with pytest.raises(ChecksumError, match="the first download recorded"):
        src.fetch(tmp_cache / "ds")
    assert not kept.exists()
    assert src.unpinned_archives() == [kept]


ALLOWED_PLAIN_HTTP = {
    # Fashion-MNIST's S3 website endpoint has no https; pinned digests, and the https GitHub
    # copy is tried first.
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}


def _remotes():
    for spec in data.list_specs():
        for source in spec.sources:
            if isinstance(source, Download):
                yield from ((spec, r) for r in source.files)
            elif isinstance(source, DownloadArchive):
                yield spec, source.remote


def test_every_download_is_https_or_pinned_on_a_host_without_it() -> None:
    for spec, remote in _remotes():
        if remote.url.startswith("https://"):
            continue
        assert any(remote.url.startswith(p) for p in ALLOWED_PLAIN_HTTP), remote.url
        assert remote.sha256 is not None, f"{spec.name}: plain http needs a pinned digest"
        first = next(s for s in spec.sources if isinstance(s, Download))
        assert all(r.url.startswith("https://") for r in first.files), spec.name
