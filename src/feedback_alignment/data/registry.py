"""The one registry of data sets: what exists, where its files come from, how it loads.

Each family module (``images``, ``graphs``, ``ratings``, ``text``, ``scenes``) registers its data
sets with :func:`register` at import time. :func:`ensure` fills a data set's cache directory by
trying, in order: the cache itself, files a user placed there by hand, then each declared source.
:func:`load` ensures and parses. ``data list`` in the CLI and every "not available" message are
built from this table, so they cannot drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cache import ENV_VAR, dataset_dir, read_manifest, sha256_file, write_manifest
from .sources import Bundled, Source, SourceError

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
            files into the cache directory by hand.
        size: Approximate size on disk, for ``data list``.
        prepare: Optional ``prepare(directory)`` run by ``data fetch`` after the files are in
            place, for derived products worth caching ahead of use (rendered scene views).
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
    offline: bool = field(init=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if not self.sources:
            raise ValueError(f"data set {self.name!r} declares no source")
        # Why: `data list` and the CI fetch step need to know which sets work without internet.
        object.__setattr__(self, "offline", any(s.kind != "download" for s in self.sources))


class DataUnavailableError(RuntimeError):
    """No source could provide a data set. The message lists every source tried and the fix.

    Attributes:
        name: The data set.
        attempts: ``(source, reason, remedy)`` for each source tried, in order.
    """

    def __init__(
        self, name: str, directory: Path, attempts: list[tuple[str, str, str]], files: Sequence[str]
    ) -> None:
        self.name = name
        self.attempts = attempts
        lines = [f"No source could provide data set {name!r}. Tried, in order:"]
        for i, (source, reason, remedy) in enumerate(attempts, start=1):
            lines.append(f"  {i}. {source}: {reason}")
            if remedy:
                lines.append(f"     fix: {remedy}")
        hint = f"Or set {ENV_VAR} to a cache directory that already holds it"
        if files:
            hint += f", or place {', '.join(files)} into {directory} by hand"
        lines.append(hint + ".")
        super().__init__("\n".join(lines))


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


def is_cached(name: str) -> bool:
    """Whether ``name`` is usable without touching any source."""
    spec = get_spec(name)
    if all(isinstance(s, Bundled) for s in spec.sources):
        return _bundled_ok(spec)
    return read_manifest(dataset_dir(name)) is not None


def _bundled_ok(spec: DatasetSpec) -> bool:
    try:
        return all(s.fetch(dataset_dir(spec.name)) == {} for s in spec.sources)
    except SourceError:
        return False


def ensure(name: str, *, kinds: Sequence[str] | None = None) -> Path:
    """Make ``name`` available in the cache and return its directory.

    Args:
        name: Registered data set.
        kinds: Only try sources of these kinds (``"carrier"``, ``"download"``, ``"bundled"``);
            e.g. CI fetches carriers only. None tries all.

    Raises:
        DataUnavailableError: every source failed; the message lists each with its remedy.
    """
    spec = get_spec(name)
    directory = dataset_dir(name)
    if read_manifest(directory) is not None:
        return directory
    attempts: list[tuple[str, str, str]] = [(f"cache {directory}", "not cached", "")]
    if spec.files and all((directory / f).is_file() for f in spec.files):
        # Files placed by hand (or left by a run that died before writing the manifest: each
        # file is complete because every write is atomic).
        logger.info("using files found in %s", directory)
        write_manifest(
            directory, "placed by hand", {f: sha256_file(directory / f) for f in spec.files}
        )
        return directory
    for source in spec.sources:
        if kinds is not None and source.kind not in kinds:
            continue
        logger.info("%s: trying %s", name, source.describe())
        try:
            written = source.fetch(directory)
        except SourceError as exc:
            logger.info("%s: %s failed: %s", name, source.describe(), exc)
            attempts.append((source.describe(), str(exc), source.remedy()))
            continue
        missing = [f for f in spec.files if not (directory / f).is_file()]
        if missing:
            attempts.append(
                (source.describe(), f"did not provide {', '.join(missing)}", source.remedy())
            )
            continue
        if not isinstance(source, Bundled):
            write_manifest(directory, source.describe(), written)
        logger.info("%s: ready in %s (from %s)", name, directory, source.describe())
        return directory
    raise DataUnavailableError(name, directory, attempts, spec.files)


def load(name: str, **kwargs: Any) -> Any:
    """Ensure ``name`` is available, then parse it; keyword arguments go to its loader.

    See each family module for what is returned (shapes and dtypes are documented there).
    """
    spec = get_spec(name)
    directory = ensure(name)
    return spec.loader(directory, **kwargs)
