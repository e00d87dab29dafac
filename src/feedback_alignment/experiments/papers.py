"""The papers' figures that the experiments put beside ours, read from ``papers.json`` beside this
module (data, like ``tuned/`` and ``presets/``: a figure is changed in one file, with its source).

Each figure carries the tag of ``REFERENCE.md`` that says how it was read: ``paper`` (in the
paper's text or tables), ``code`` (in the authors' released code or logs) or ``unverified``
(recalled, not read: context, never a target). :data:`SOURCES` names the source and tag of every
constant, :data:`ABOUT` what it measures; a test holds every constant to having both. A figure
keyed by several fields or by a number is stored as rows (the key's fields, then the value) and
read back as the dict the experiments index: ``(architecture, rule) -> error``, ``b -> (cosine,
accuracy)``.

References:
    Nøkland, "Direct Feedback Alignment Provides Learning in Deep Neural Networks", NeurIPS 2016.
    Launay, Poli, Krzakala, "Principled Training of Neural Networks with Direct Feedback
    Alignment", arXiv:1906.04554, 2019 (logs in the authors' code).
    Launay, Poli, Boniface, Krzakala, "Direct Feedback Alignment Scales to Modern Deep Learning
    Tasks and Architectures", NeurIPS 2020.
    Sanfiz, Akrout, "Benchmarking the Accuracy and Robustness of Feedback Alignment Algorithms"
    (BioTorch), 2021.
    Webster, Choi, Ahn, "Learning the Connections in Direct Feedback Alignment", 2020.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

Tag = Literal["paper", "code", "unverified"]

FIGURES_FILE = Path(__file__).with_name("papers.json")


def _tuples(value: Any) -> Any:
    """JSON lists as tuples, inside objects too (the figures' cells are tuples)."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _figure(entry: dict[str, Any]) -> Any:
    if "value" in entry:
        return _tuples(entry["value"])
    width = len(entry["key"])
    figure = {}
    for row in entry["rows"]:
        key = tuple(row[:width]) if width > 1 else row[0]
        cells = tuple(row[width:])
        figure[key] = cells if len(cells) > 1 else cells[0]
    return figure


def _load() -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(FIGURES_FILE.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise RuntimeError(
            f"{FIGURES_FILE}: the papers' figures cannot be read ({error}); restore the file "
            "from git (it is package data: a broken install needs a reinstall)"
        ) from None
    return {name: entry for name, entry in data.items() if not name.startswith("_")}


_ENTRIES = _load()

NOKLAND_MNIST_ERROR: dict[tuple[str, str], float] = _figure(_ENTRIES["NOKLAND_MNIST_ERROR"])
LAUNAY_2019_BOTTLENECK: dict[int, tuple[float, float | None]] = _figure(
    _ENTRIES["LAUNAY_2019_BOTTLENECK"]
)
BIOTORCH_FMNIST_LENET_ERROR: dict[str, float] = _figure(_ENTRIES["BIOTORCH_FMNIST_LENET_ERROR"])
BIOTORCH_CIFAR10_RESNET20_ERROR: dict[str, float] = _figure(
    _ENTRIES["BIOTORCH_CIFAR10_RESNET20_ERROR"]
)
BIOTORCH_CIFAR10_RESNET20_ADAM_ERROR: dict[str, float] = _figure(
    _ENTRIES["BIOTORCH_CIFAR10_RESNET20_ADAM_ERROR"]
)
LAUNAY_2020_CORA: dict[str, tuple[float, float, float]] = _figure(_ENTRIES["LAUNAY_2020_CORA"])
LAUNAY_2020_CRITEO: dict[str, dict[str, tuple[float, float]]] = _figure(
    _ENTRIES["LAUNAY_2020_CRITEO"]
)
LAUNAY_2020_PERPLEXITY: dict[str, float] = _figure(_ENTRIES["LAUNAY_2020_PERPLEXITY"])
LAUNAY_2020_PSNR: dict[str, float | None] = _figure(_ENTRIES["LAUNAY_2020_PSNR"])
WEBSTER_2020_CIFAR10_CONV_ACCURACY: dict[str, float] = _figure(
    _ENTRIES["WEBSTER_2020_CIFAR10_CONV_ACCURACY"]
)
WEBSTER_2020_CIFAR100_ALEXNET_BN_ACCURACY: dict[str, float] = _figure(
    _ENTRIES["WEBSTER_2020_CIFAR100_ALEXNET_BN_ACCURACY"]
)

SOURCES: dict[str, tuple[str, Tag]] = {
    name: (entry["source"], entry["tag"]) for name, entry in _ENTRIES.items()
}
"""Constant name -> (where it was read, REFERENCE.md tag)."""

ABOUT: dict[str, str] = {name: entry["about"] for name, entry in _ENTRIES.items()}
"""Constant name -> what the figure measures (data set, network, metric, table)."""


def tag(name: str) -> str:
    """``"[paper]"``, ``"[code]"`` or ``"[unverified]"`` for a constant of this module."""
    if name not in SOURCES:
        raise KeyError(f"no source recorded for {name!r}; known: {sorted(SOURCES)}")
    return f"[{SOURCES[name][1]}]"
