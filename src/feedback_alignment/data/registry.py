"""The one registry of data sets: what exists, where its files come from, how it loads.

Each family module (``images``, ``graphs``, ``ratings``, ``text``, ``scenes``) registers its data
sets with :func:`register` at import time. :func:`ensure` fills a data set's cache directory by
trying, in order: the cache itself, files a user placed there by hand, then each declared source.
:func:`load` ensures and parses. ``data list`` in the CLI and every "not available" message are
built from this table, so they cannot drift apart.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import (
    ENV_VAR,
    MANIFEST,
    cache_root,
    clean_stale,
    dataset_dir,
    load_manifest,
    safe_child,
    sha256_file,
    temp_prefix,
    verified_bytes,
    write_manifest,
)
from .errors import DataError, repair_command
from .sources import (
    Bundled,
    Source,
    SourceError,
    WrongKindError,
    forget_archive,
    record_path,
)

logger = logging.getLogger(__name__)

FAMILIES = ("images", "graphs", "ratings", "text", "scenes")


@dataclass(frozen=True)
class DatasetSpec:
    """Declaration of one data set.

    Attributes:
        name: Registry key, e.g. ``"fashion-mnist"``.
        family: One of :data:`FAMILIES`.
        description: One line: what it is and what :func:`load` returns.
        license: Licence note shown by ``data list``; users must respect it.
        loader: ``loader(directory, **kwargs)`` parses the files in the cache directory.
        sources: Ordered sources tried after the cache.
        files: Relative paths that must exist for the data set to be usable; lets a user drop
            files into the cache directory by hand (checked against the pinned digests).
        size: Approximate size on disk, for ``data list``.
        prepare: Optional ``prepare(directory)`` run by ``data fetch`` after the files are in
            place, for derived products worth caching ahead of use (rendered scene views).
        sha256: Extra pinned digests ``{file: sha256}`` beyond those the sources declare, e.g.
            of files inside a pinned archive, derived here by reading it.
        requires: Top-level modules the loader imports beyond the core dependencies (all in
            the ``data`` extra), e.g. ``("pandas", "pyarrow")``; see :func:`requirements`.
    """

    name: str
    family: str
    description: str
    license: str
    loader: Callable[..., Any]
    sources: tuple[Source, ...]
    files: tuple[str, ...] = ()
    size: str = "?"
    prepare: Callable[[Path], None] | None = None
    sha256: Mapping[str, str] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    offline: bool = field(init=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if not self.sources:
            raise ValueError(f"data set {self.name!r} declares no source")
        # Why: `data list` and the CI fetch step need to know which sets work without internet.
        object.__setattr__(self, "offline", any(s.kind != "download" for s in self.sources))

    def pins(self, source: Source | None = None) -> dict[str, frozenset[str]]:
        """Accepted digests by file: those ``source`` pins (plus :attr:`sha256`), or, with
        no source, those any source pins (a file placed by hand may come from any of them)."""
        accepted: dict[str, set[str]] = {}
        for src in self.sources if source is None else (source,):
            for rel, digest in src.pins().items():
                accepted.setdefault(rel, set()).add(digest)
        for rel, digest in self.sha256.items():
            accepted.setdefault(rel, set()).add(digest)
        return {rel: frozenset(d) for rel, d in accepted.items()}

    def source_named(self, description: str) -> Source | None:
        """The source whose :meth:`~.sources.Source.describe` is ``description``, if any."""
        return next((s for s in self.sources if s.describe() == description), None)


class DataUnavailableError(DataError, RuntimeError):
    """No source could provide (or repair) a data set. The message lists what is damaged,
    every source tried and the fix.

    A :class:`~.errors.DataError` (so ``except DataError`` catches every data failure) and,
    as before, a ``RuntimeError``.

    Attributes:
        name: The data set.
        attempts: ``(source, reason, remedy)`` for each source tried, in order.
        problems: What was wrong with the cached copy, if there was one.
    """

    def __init__(
        self,
        name: str,
        directory: Path,
        attempts: list[tuple[str, str, str]],
        files: Sequence[str],
        problems: Sequence[Problem] = (),
    ) -> None:
        self.name = name
        self.attempts = attempts
        self.problems = list(problems)
        lines = []
        if problems:
            lines.append(f"Data set {name!r} in {directory} is damaged:")
            lines.extend(f"  {p}" for p in problems)
            lines.append("Repairing it from its sources failed. Tried, in order:")
        else:
            lines.append(f"No source could provide data set {name!r}. Tried, in order:")
        for i, (source, reason, remedy) in enumerate(attempts, start=1):
            lines.append(f"  {i}. {source}: {reason}")
            if remedy:
                lines.append(f"     fix: {remedy}")
        hint = f"Or set {ENV_VAR} to a cache directory that already holds it"
        if files:
            shown = ", ".join(files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
            hint += f", or place {shown} into {directory} by hand"
        lines.append(hint + ".")
        if problems:
            lines.append(f"Once a source works: {repair_command(name)}")
        message = "\n".join(lines)
        super().__init__(message, dataset=name, file=directory, remedy="")
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a cached file.

    Attributes:
        file: Path relative to the data set directory.
        what: What is wrong (``"is missing"``, ``"has sha256 X, expected Y (pinned)"``).
        wrong_kind: A folder stands where a file belongs (or the reverse); never repaired
            automatically, since removing a folder is the user's call (``--force`` does).
    """

    file: str
    what: str
    wrong_kind: bool = False

    def __str__(self) -> str:
        return f"{self.file} {self.what}"


DATA_EXTRA = 'pip install "feedback-alignment[data]"'
"""The install command of the optional packages the parsers need (pandas, pyarrow, pillow)."""

_DISTRIBUTIONS = {"PIL": "pillow"}
"""Import name -> distribution name, where they differ."""


class MissingDependencyError(DataError, ImportError):
    """A data set's parser needs an optional package that is not installed.

    A :class:`~.errors.DataError` (one type for every data failure) and an ``ImportError``
    (what it used to be). The message names the data set, the packages and the extra.

    Attributes:
        missing: The distributions to install (``["pandas", "pyarrow"]``).
    """

    def __init__(self, name: str, missing: Sequence[str], detail: str = "") -> None:
        self.missing = [_DISTRIBUTIONS.get(m, m) for m in missing]
        if self.missing:
            problem = f"needs {', '.join(self.missing)}, which is not installed"
        else:
            problem = "needs an optional package that is missing or unusable"
        DataError.__init__(
            self, problem + (f" ({detail})" if detail else ""), dataset=name, remedy=DATA_EXTRA
        )


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a data set to the registry; names are unique."""
    if spec.name in _REGISTRY:
        raise ValueError(f"data set {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> DatasetSpec:
    """Return the declaration of ``name``.

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown data set {name!r}; known data sets: {known}") from None


def list_specs(family: str | None = None) -> list[DatasetSpec]:
    """Return the registered data sets (optionally of one family), by family then name."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    specs = [s for s in _REGISTRY.values() if family is None or s.family == family]
    return sorted(specs, key=lambda s: (FAMILIES.index(s.family), s.name))


def requirements(name: str) -> list[str]:
    """The optional packages (distribution names, e.g. ``["pandas", "pyarrow"]``) that loading
    ``name`` needs and that are not installed; empty when it can load.

    Cheap (no heavy import: ``importlib.util.find_spec`` only), so a caller can check before
    any work starts; install them with ``pip install "feedback-alignment[data]"``.

    Raises:
        ValueError: unknown data set.
    """
    missing = []
    for module in get_spec(name).requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a broken or half-imported package
            found = False
        if not found:
            missing.append(_DISTRIBUTIONS.get(module, module))
    return missing


def _bundled_ok(spec: DatasetSpec) -> bool:
    try:
        return all(s.fetch(dataset_dir(spec.name)) == {} for s in spec.sources)
    except SourceError:
        return False


def _bundled_only(spec: DatasetSpec) -> bool:
    return all(isinstance(s, Bundled) for s in spec.sources)


def verify(
    spec: DatasetSpec,
    directory: Path,
    recorded: Mapping[str, str],
    source: str,
    *,
    capture: dict[str, bytes] | None = None,
) -> list[Problem]:
    """Hash every file of a cached data set and compare it with what it must be.

    A file recorded by ``source`` must have that source's pinned digest where it pins one
    (a manifest edited to another digest does not help), else the digest recorded when it was
    first fetched (trust on first use). Required files missing from the record, and files that
    some source pins but the record does not list (another layout placed by hand, which a
    loader could pick up), are checked too.

    Why no shortcut (size + mtime): a file changed in place, with its times reset, would get
    through; hashing the largest cached file here (Fashion-MNIST's 26 MB) takes about 0.05 s.

    Args:
        capture: When given, each file is read into memory once and the bytes of every file
            that matched are put in it (``rel -> bytes``): what :func:`load` hands the loader,
            so that a file swapped after this check is not what gets parsed.

    Returns:
        The problems; empty when the cache is intact.
    """
    own = spec.pins(spec.source_named(source)) if source != PLACED_BY_HAND else spec.pins()
    anyone = spec.pins()
    names: dict[str, str | None] = dict(recorded)
    for rel in spec.files:
        names.setdefault(rel, None)
    for rel in anyone:
        if rel not in names:
            try:
                if safe_child(directory, rel).exists():
                    names[rel] = None
            except DataError:
                continue
    problems = []
    for rel, digest in sorted(names.items()):
        try:
            path = safe_child(directory, rel)
        except DataError:
            problems.append(Problem(rel, "is not a path inside the data set folder"))
            continue
        if path.is_dir():
            problems.append(Problem(rel, "is a folder, expected a file", wrong_kind=True))
            continue
        if not path.is_file():
            problems.append(Problem(rel, "is missing"))
            continue
        accepted = own.get(rel) if digest is not None else anyone.get(rel)
        if accepted:
            expected, why = accepted, "pinned"
        elif digest is not None:
            expected, why = frozenset({digest}), "recorded when first fetched"
        else:
            problems.append(Problem(rel, "is not recorded in the manifest"))
            continue
        if capture is None:
            actual = sha256_file(path)
        else:
            raw = path.read_bytes()
            actual = hashlib.sha256(raw).hexdigest()
            if actual in expected:
                capture[rel] = raw
        if actual not in expected:
            problems.append(
                Problem(
                    rel, f"has sha256 {actual}, expected {' or '.join(sorted(expected))} ({why})"
                )
            )
    return problems


PLACED_BY_HAND = "placed by hand"
"""The manifest source of files a user put into the cache directory."""


def _check_directory(directory: Path) -> None:
    if (directory.exists() or directory.is_symlink()) and not directory.is_dir():
        raise DataError(
            "is a file (or a broken link), expected the data set's folder", file=directory
        )
    root = cache_root()
    if (root.exists() or root.is_symlink()) and not root.is_dir():
        raise DataError(
            "the data cache is not a folder",
            file=root,
            remedy=f"remove it, or set {ENV_VAR} to a writable folder",
        )


def check(name: str) -> list[str]:
    """What is wrong with the cached copy of ``name`` (empty: cached and intact). Hashes
    every file; touches no source."""
    spec = get_spec(name)
    if _bundled_only(spec):
        return [] if _bundled_ok(spec) else ["its bundling package is not installed"]
    directory = dataset_dir(name)
    try:
        _check_directory(directory)
        manifest = load_manifest(directory) if directory.is_dir() else None
    except DataError as exc:
        return [exc.problem]
    if manifest is None:
        wrong = _wrong_kind_files(spec, directory)
        return [str(p) for p in wrong] if wrong else ["not cached"]
    return [str(p) for p in verify(spec, directory, manifest["files"], manifest["source"])]


def _wrong_kind_files(spec: DatasetSpec, directory: Path) -> list[Problem]:
    """Required files that are folders, in a directory without a manifest: a fetch could not
    write them, and removing a folder is the user's call (``--force``)."""
    if not directory.is_dir():
        return []
    return [
        Problem(rel, "is a folder, expected a file", wrong_kind=True)
        for rel in spec.files
        if (directory / rel).is_dir()
    ]


def is_cached(name: str) -> bool:
    """Whether ``name`` is usable without touching any source: cached, and every file has its
    pinned or recorded digest (this hashes the files)."""
    return not check(name)


def discard(name: str) -> None:
    """Remove the cached copy of ``name`` and the first-use records of its unpinned archives
    (``data fetch NAME --force`` no longer does this first; it swaps in a fresh copy)."""
    spec = get_spec(name)
    directory = dataset_dir(name)
    if directory.is_symlink() or directory.is_file():
        directory.unlink()
    elif directory.is_dir():
        shutil.rmtree(directory)
    for source in spec.sources:
        for archive in source.unpinned_archives():
            forget_archive(archive)
    logger.info("%s: discarded the cached copy", name)


def ensure(
    name: str,
    *,
    kinds: Sequence[str] | None = None,
    force: bool = False,
    capture: dict[str, bytes] | None = None,
) -> Path:
    """Make ``name`` available in the cache, verified, and return its directory.

    Order: the cache (every file hashed and checked, see :func:`verify`), files placed by
    hand (checked against the pinned digests; unpinned ones are recorded), then each source
    in turn. A damaged cache is repaired from the sources when one works.

    Args:
        name: Registered data set.
        kinds: Only try sources of these kinds (``"carrier"``, ``"download"``, ``"bundled"``);
            e.g. CI fetches carriers only. None tries all.
        force: Fetch a fresh copy and swap it in once complete; the cached copy stays when
            every source fails (see :func:`_force_fetch`).
        capture: Filled with the checked bytes of each file (``rel -> bytes``) when the cached
            copy was intact; left empty when it was fetched (see :func:`verify`).

    Raises:
        DataError: a folder stands where a file belongs, or the cache is unusable.
        DataUnavailableError: every source failed; the message lists what was damaged and
            each source with its remedy.
    """
    spec = get_spec(name)
    directory = dataset_dir(name)
    try:
        return _ensure(spec, directory, kinds, force, capture)
    except DataError as exc:
        if exc.dataset is None:
            exc.dataset = name
        raise
    except OSError as exc:
        raise DataError(
            f"the cache cannot be used ({type(exc).__name__}: {exc})",
            dataset=name,
            file=exc.filename or directory,
            remedy=f"make {cache_root()} a writable folder, or set {ENV_VAR} to one",
        ) from exc


def _ensure(
    spec: DatasetSpec,
    directory: Path,
    kinds: Sequence[str] | None,
    force: bool,
    capture: dict[str, bytes] | None = None,
) -> Path:
    name = spec.name
    if _bundled_only(spec):
        if _bundled_ok(spec):
            return directory
        attempts = [(s.describe(), "not installed", s.remedy()) for s in spec.sources]
        raise DataUnavailableError(name, directory, attempts, spec.files)
    if force:
        return _force_fetch(spec, directory, kinds)
    _check_directory(directory)
    clean_stale(directory)
    recorded: dict[str, str] = {}
    recorded_by = ""
    problems: list[Problem] = []
    try:
        manifest = load_manifest(directory) if directory.is_dir() else None
    except DataError as exc:
        if (directory / MANIFEST).is_dir():
            raise
        manifest = None
        problems.append(Problem(MANIFEST, exc.problem.removeprefix("the manifest ")))
    if manifest is not None:
        recorded, recorded_by = manifest["files"], manifest["source"]
        checked: dict[str, bytes] | None = {} if capture is not None else None
        problems = verify(spec, directory, recorded, recorded_by, capture=checked)
        if not problems:
            if capture is not None and checked is not None:
                capture.update(checked)
            return directory
    elif spec.files and all((directory / f).is_file() for f in spec.files):
        # Files placed by hand (or left by a run that died before writing the manifest: each
        # file is complete because every write is atomic). Pinned files must match a pin;
        # unpinned ones are recorded -- unless a damaged manifest may have held their record.
        hand = verify(spec, directory, {}, PLACED_BY_HAND)
        unpinned = [p for p in hand if p.what == "is not recorded in the manifest"]
        if not [p for p in hand if p not in unpinned] and not (problems and unpinned):
            logger.info("using files found in %s", directory)
            for p in unpinned:
                logger.warning(
                    "%s: %s has no pinned digest; recording it (trust on first use)", name, p.file
                )
            write_manifest(
                directory, PLACED_BY_HAND, {f: sha256_file(directory / f) for f in spec.files}
            )
            return directory
        problems += [p for p in hand if p not in unpinned]
    if manifest is None:
        problems += _wrong_kind_files(spec, directory)
    wrong_kind = [p for p in problems if p.wrong_kind]
    if wrong_kind:
        problem = wrong_kind[0].what if len(wrong_kind) == 1 else "; ".join(map(str, wrong_kind))
        raise DataError(
            problem,
            file=directory / wrong_kind[0].file,
            remedy=f"remove it, or run `{repair_command(name)}` (which does)",
        )
    for p in problems:
        logger.warning("%s: %s; fetching it again", name, p)
    return _fetch(spec, directory, kinds, recorded, recorded_by, problems)


def _fetch(
    spec: DatasetSpec,
    directory: Path,
    kinds: Sequence[str] | None,
    recorded: Mapping[str, str],
    recorded_by: str,
    problems: list[Problem],
    *,
    target: Path | None = None,
    attempts: list[tuple[str, str, str]] | None = None,
) -> Path:
    """Try each source in turn, writing into ``target`` (default: ``directory``; ``--force``
    passes a temporary folder); messages name ``directory``."""
    name = spec.name
    dest = directory if target is None else target
    state = "damaged" if problems else "not cached"
    if attempts is None:
        attempts = [(f"cache {directory}", state, "")]
    for source in spec.sources:
        if kinds is not None and source.kind not in kinds:
            continue
        logger.info("%s: trying %s", name, source.describe())
        try:
            written = source.fetch(dest)
        except WrongKindError as exc:
            attempts.append((source.describe(), str(exc), repair_command(name)))
            continue
        except (SourceError, DataError) as exc:
            logger.info("%s: %s failed: %s", name, source.describe(), exc)
            attempts.append((source.describe(), str(exc), source.remedy()))
            continue
        except OSError as exc:
            attempts.append(
                (source.describe(), f"could not write into {directory}: {exc}", source.remedy())
            )
            continue
        missing = [f for f in spec.files if not (dest / f).is_file()]
        if missing:
            attempts.append(
                (source.describe(), f"did not provide {', '.join(missing)}", source.remedy())
            )
            continue
        if recorded_by == source.describe():
            pinned = source.pins()
            changed = [
                f"{rel} now has sha256 {digest}, but {recorded[rel]} was recorded when first "
                "fetched"
                for rel, digest in written.items()
                if rel not in pinned and rel in recorded and recorded[rel] != digest
            ]
            if changed:
                attempts.append((source.describe(), "; ".join(changed), repair_command(name)))
                continue
        if not isinstance(source, Bundled):
            write_manifest(dest, source.describe(), written)
        logger.info("%s: ready in %s (from %s)", name, directory, source.describe())
        return directory
    raise DataUnavailableError(name, directory, attempts, spec.files, problems)


def _force_fetch(spec: DatasetSpec, directory: Path, kinds: Sequence[str] | None) -> Path:
    """``data fetch NAME --force``: fetch a fresh copy into a temporary folder and swap it in
    only once it is complete; on failure the cached copy (and the kept archives with their
    first-use records) stay exactly as they were.

    Why not discard first: a user repairing (or refreshing) a good copy without network
    would otherwise lose it. Folders standing where a kept archive belongs are removed (the
    user asked for a repair); unpinned archives are set aside so the fresh fetch downloads
    and records them anew, and are put back if it fails.
    """
    name = spec.name
    root = cache_root()
    if (root.exists() or root.is_symlink()) and not root.is_dir():
        _check_directory(directory)  # raises: the cache is not a folder
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root, recursive=False)  # dead --force fetches' folders
    for source in spec.sources:
        for archive in source.kept_archives():
            if archive.is_dir() and not archive.is_symlink():
                logger.warning(
                    "%s: removing the folder %s (an archive belongs there)", name, archive
                )
                shutil.rmtree(archive)
    work = Path(tempfile.mkdtemp(dir=root, prefix=temp_prefix("fetch")))
    aside: list[tuple[Path, Path]] = []
    try:
        for source in spec.sources:
            for archive in source.unpinned_archives():
                for path in (archive, record_path(archive)):
                    if path.is_file() or path.is_symlink():
                        kept = work / f"aside-{len(aside)}"
                        os.replace(path, kept)
                        aside.append((kept, path))
        fresh = work / "new"
        fresh.mkdir()
        had_copy = directory.exists() or directory.is_symlink()
        attempts = [(f"cache {directory}", "skipped (--force fetches a fresh copy)", "")]
        logger.info("%s: fetching a fresh copy; the cached one stays until it is complete", name)
        try:
            _fetch(spec, directory, kinds, {}, "", [], target=fresh, attempts=attempts)
        except DataUnavailableError as exc:
            for kept, path in aside:
                os.replace(kept, path)
            if had_copy:
                exc.message += f"\nThe cached copy in {directory} was kept as it was."
            raise
        aside.clear()  # the fresh fetch replaced them
        if directory.is_dir() and not directory.is_symlink():
            os.replace(directory, work / "old")
        elif had_copy:
            directory.unlink()
        os.replace(fresh, directory)
        logger.info("%s: %s the cached copy", name, "replaced" if had_copy else "filled")
        return directory
    finally:
        for kept, path in aside:  # an unexpected error: put the archives back
            if not path.exists():
                os.replace(kept, path)
        shutil.rmtree(work, ignore_errors=True)


def load(name: str, **kwargs: Any) -> Any:
    """Ensure ``name`` is available and verified, then parse it; keyword arguments go to its
    loader.

    See each family module for what is returned (shapes and dtypes are documented there).

    Raises:
        DataError: anything wrong with the data -- not obtainable, damaged in the cache, or
            not parseable; the message names the data set, the file and the fix.
    """
    spec = get_spec(name)
    missing = requirements(name)
    if missing:  # before any fetch: nothing could parse it
        raise MissingDependencyError(name, missing)
    checked: dict[str, bytes] = {}
    directory = ensure(name, capture=checked)
    if not checked and not _bundled_only(spec):  # fetched (or placed) just now: check again
        manifest = load_manifest(directory)
        if manifest is not None:
            problems = verify(
                spec, directory, manifest["files"], manifest["source"], capture=checked
            )
            if problems:
                raise DataError(
                    f"changed while it was being loaded: {problems[0]}",
                    dataset=name,
                    file=directory / problems[0].file,
                    remedy=f"run again; if it persists, run `{repair_command(name)}`",
                )
    try:
        with verified_bytes({directory / rel: raw for rel, raw in checked.items()}):
            return spec.loader(directory, **kwargs)
    except DataError as exc:
        if exc.dataset is None:
            exc.dataset = name
        raise
    except ImportError as exc:  # an optional package missing or unusable (too old)
        gone = [exc.name.split(".")[0]] if exc.name else []
        raise MissingDependencyError(name, gone, str(exc)) from exc
    except (TypeError, MemoryError):
        raise
    except Exception as exc:  # a parser failure the loader did not name: still one type
        raise DataError(
            f"could not be parsed ({type(exc).__name__}: {exc})", dataset=name, file=directory
        ) from exc
