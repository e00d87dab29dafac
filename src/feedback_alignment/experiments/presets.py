"""The experiments' named settings (``quick``, the papers' sizes, ...) as data, not code.

Why: a task's full settings are its config dataclass's defaults, each field documented where it is
declared; every other setting a task runs with (``--quick``'s CPU-minutes mode, a paper's model
sizes, the principled group's three scales) is a set of changes to those defaults. Kept as JSON
beside ``tuned/*.json`` (``presets/<task>.json``, one object per preset name), they are read the
same way by every task, diffed in review like any data file, and listed by
:func:`names` without importing a task.

A preset's value replaces the default field by field: a JSON list becomes a tuple (the configs'
sequences are tuples), an object given for a dataclass field changes that nested config field by
field (``"model": {"depth": 4}``), any other value is used as it is. A key that is not a field of
the config is refused with the file and the fields it has: a preset that silently does nothing
would run the full setting under the quick name.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

PRESETS_DIR = Path(__file__).with_name("presets")
"""Where the preset files live (package data, like ``tuned/``)."""

FULL = "full"
"""The name that means the config's defaults (no file entry needed)."""

Config = TypeVar("Config")


def path(task: str) -> Path:
    """The preset file of ``task`` (``presets/<task>.json``)."""
    return PRESETS_DIR / f"{task}.json"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    twice = sorted({key for key in keys if keys.count(key) > 1})
    if twice:
        raise ValueError(f"keys given twice in one object: {twice} (keep one of each)")
    return dict(pairs)


@cache
def _load(task: str) -> dict[str, dict[str, Any]]:
    file = path(task)
    if not file.exists():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, ValueError) as error:
        raise ValueError(
            f"{file}: not a valid presets file ({error}); fix the file, or restore it from git"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected an object of preset name -> object of settings")
    presets = {name: values for name, values in data.items() if not name.startswith("_")}
    wrong = [name for name, values in presets.items() if not isinstance(values, dict)]
    if wrong:
        raise ValueError(f"{file}: presets {wrong} are not objects of settings")
    return presets


def reload() -> None:
    """Forgets the files read so far (they are read once per process), so that the next
    ``preset`` reads an edited file. Constants built from a preset when their module was imported
    (``nerf.QUICK``, ``language.QUICK``, the principled ``FULL``/``QUICK``/``TINY``, the tuning
    searches' quick settings) keep the values of that import: restart the process after an edit."""
    _load.cache_clear()


def names(task: str) -> tuple[str, ...]:
    """The presets ``task`` has: ``full`` and those in its file (keys starting ``_`` are notes)."""
    return (FULL, *(n for n in _load(task) if n != FULL))


def changes(task: str, name: str) -> dict[str, Any]:
    """The changes that preset ``name`` of ``task`` makes to the defaults (``full``: none unless
    the file names some), JSON lists as tuples.

    Raises:
        ValueError: ``task`` has no preset ``name`` (the message lists those it has).
        FileNotFoundError: ``task`` has no presets file (the message lists the tasks that do).
    """
    presets = _load(task)
    if name in presets:
        return {key: _value(None, value, key) for key, value in presets[name].items()}
    if name == FULL:
        return {}
    if not path(task).exists():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.json"))
        raise FileNotFoundError(
            f"{path(task)}: no such presets file, so {task!r} has no preset {name!r} (only "
            f"{FULL!r}, the defaults); the tasks with presets: {known}"
        )
    raise ValueError(f"{path(task)}: no preset {name!r}; {task} has {list(names(task))}")


def preset(task: str, name: str, base: Config) -> Config:
    """``base`` (a config dataclass, usually its defaults) with preset ``name`` of ``task``."""
    return apply(base, changes(task, name), f"{path(task)} [{name}]")


def build(task: str, name: str, cls: type[Config]) -> Config:
    """A ``cls`` made from preset ``name`` of ``task`` alone (for a config with required fields,
    such as the principled group's :class:`~.principled.common.Setting`).

    Raises:
        ValueError: the preset lacks a required field or names one ``cls`` does not have.
    """
    values = changes(task, name)
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path(task)} [{name}]: {error}") from None


def apply(base: Config, values: dict[str, Any], where: str = "settings") -> Config:
    """``base`` with ``values`` (field -> JSON value) in place of its fields; see the module doc.

    Raises:
        ValueError: a key is not a field of ``base`` (names ``where`` and the fields), a value's
            type is not the default's, or the config refuses the result (each names ``where``).
    """
    if not dataclasses.is_dataclass(base) or isinstance(base, type):
        raise TypeError(f"{where}: presets change a config dataclass, not {type(base).__name__}")
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(
            f"{where}: {unknown} are not settings of {type(base).__name__}; it has {sorted(fields)}"
        )
    new = {
        key: _value(getattr(base, key), value, f"{where}.{key}") for key, value in values.items()
    }
    try:
        return dataclasses.replace(base, **new)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{where}: {error}") from None


def _value(current: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(current):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object of {type(current).__name__}'s "
                             f"settings, got {value!r}")  # fmt: skip
        return apply(current, value, where)
    if current is not None and value is not None and not _same_kind(current, value):
        raise ValueError(f"{where}: expected a value like the default {current!r}, got {value!r}")
    if isinstance(value, list):
        return tuple(_value(None, item, where) for item in value)
    return copy.deepcopy(value)  # a dict from the cached file must not be shared by configs


def _same_kind(default: Any, value: Any) -> bool:
    """Whether ``value`` can stand where the config's default ``default`` stands: the same JSON
    kind (a whole number for a float is fine, a fraction for a whole number is not, nor ``true``
    for a number; ``null``, and any value where the default is ``None``, are left to the config's
    own checks)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (tuple, list)):
        return isinstance(value, (tuple, list))
    if isinstance(default, dict):
        return isinstance(value, dict)
    return isinstance(value, type(default))
