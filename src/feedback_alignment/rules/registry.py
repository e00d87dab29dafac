"""One registry of the rules: each rule class carries its canonical key (``DFA.key == "dfa"``),
and every other spelling in use (the table names ``"sign-DFA"`` and ``"KP"``, the class names
``"SignDFA"`` and ``"KolenPollack"``, any case, ``_`` for ``-``) is an alias of it.

``RULES`` (also ``fa.RULES``) maps the keys to the classes; the command line, the experiments and
the benchmark build their rules through :func:`rule_class`, so a new rule is registered in one
place: its class, with a ``key``, listed in ``RULE_CLASSES``.
"""

from __future__ import annotations

from typing import Any

from feedback_alignment.rules.backprop import BP
from feedback_alignment.rules.base import Rule
from feedback_alignment.rules.direct import DFA, DKP, DRTP, FDFA, Shallow, SignDFA
from feedback_alignment.rules.layerwise import FA, KolenPollack, WeightMirror, brSF, frSF, uSF

RULE_CLASSES: tuple[type[Rule], ...] = (
    BP,
    DFA,
    SignDFA,
    DRTP,
    DKP,
    FDFA,
    Shallow,
    FA,
    uSF,
    frSF,
    brSF,
    KolenPollack,
    WeightMirror,
)
"""Every rule of the library, in the order of the tables."""

RULES: dict[str, type[Rule]] = {cls.key: cls for cls in RULE_CLASSES}  # type: ignore[misc]
"""Rules by their canonical key (the command-line name)."""


def _normal(name: str) -> str:
    return name.strip().lower().replace("_", "-")


ALIASES: dict[str, str] = {
    _normal(spelling): cls.key
    for cls in RULE_CLASSES
    for spelling in (cls.key, cls.name, cls.__name__)
}
"""Every accepted spelling (normalised: lower case, ``-`` for ``_``) -> its canonical key."""


def canonical_key(name: str) -> str:
    """The canonical key of a rule named by any accepted spelling (``"sign-DFA"``, ``"KP"``,
    ``"KolenPollack"``, ``"weight_mirror"``, ...).

    Raises:
        ValueError: an unknown name, listing the keys.
    """
    key = ALIASES.get(_normal(name)) if isinstance(name, str) else None
    if key is None:
        raise ValueError(f"unknown rule {name!r}; choose one of {list(RULES)}")
    return key


def rule_class(name: str) -> type[Rule]:
    """The rule class named by any accepted spelling (see :func:`canonical_key`)."""
    return RULES[canonical_key(name)]


def make_rule(name: str, seed: int = 0, **options: Any) -> Rule:
    """A new rule by any accepted spelling; every rule takes ``seed=`` (BP and uSF ignore it)."""
    return rule_class(name)(seed=seed, **options)
