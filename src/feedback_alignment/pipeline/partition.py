"""Splitting a model into pipeline stages, and the feedback points each stage owns.

A pipeline over ``S`` processes runs stage ``s`` on rank ``s``. Stage ``s < S - 1`` sends its output
to stage ``s + 1``; in DFA that output is a *feedback point*: the graph is cut there (the next stage
receives a tensor that does not require grad) and the stage's own layers below it learn from
``B_s e``. Optional points inside a stage (after each hidden activation, the library's MLP default)
cut the stage into smaller blocks, so that no stage computes any input gradient at all.

Both helpers keep the model's own child names (``nn.Sequential`` slicing keeps its keys), so a
stage's point ``"7"`` is the same module as the unsplit model's ``"7"``, and the reference run is
``fa.DFA(seed=...).apply(model, points=[p for stage in points for p in stage])``.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from feedback_alignment.points import find_points

Boundary = int | str


def _check_boundaries(model: nn.Sequential, boundaries: Sequence[Boundary]) -> list[int]:
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"split_sequential expects an nn.Sequential, got {type(model).__name__}; put a list "
            "of stage modules in nn.Sequential(*modules) and split it at [1, 2, ...]"
        )
    count = len(model)
    names = list(model._modules)
    bounds = []
    for boundary in boundaries:
        if isinstance(boundary, str):
            if boundary not in names:
                raise ValueError(
                    f"boundary {boundary!r} is not a child of the nn.Sequential; children: "
                    f"{', '.join(names[:40])}"
                )
            bounds.append(names.index(boundary))
        else:
            bounds.append(int(boundary))
    if not bounds:
        raise ValueError("boundaries=[] gives a single stage; give at least one child index")
    if bounds != sorted(set(bounds)) or bounds[0] <= 0 or bounds[-1] >= count:
        raise ValueError(
            f"boundaries {list(boundaries)} must be strictly increasing child indices in "
            f"1..{count - 1} of this {count}-child nn.Sequential (stage s is model[b_(s-1):b_s])"
        )
    return bounds


def split_sequential(model: nn.Sequential, boundaries: Sequence[Boundary]) -> list[nn.Sequential]:
    """``model[0:b_1], model[b_1:b_2], ..., model[b_k:]``: the stages, sharing the model's modules.

    A boundary is the index or the name of the first child of a new stage. A model given as a list
    of stage modules is ``nn.Sequential(*modules)`` split at ``[1, 2, ..., len(modules) - 1]``.

    The stages keep the model's child names and share its parameters (no copy): a process keeps
    the stage of its rank and lets the others go.
    """
    bounds = _check_boundaries(model, boundaries)
    edges = [0, *bounds, len(model)]
    items = list(model._modules.items())
    # a plain nn.Sequential (not model[a:b], which calls a subclass's __init__ with modules)
    return [nn.Sequential(OrderedDict(items[a:b])) for a, b in itertools.pairwise(edges)]


def stage_points(
    model: nn.Sequential, boundaries: Sequence[Boundary], *, activations: bool = True
) -> list[list[str]]:
    """The feedback points of each stage, as paths valid in both the stage and the whole model.

    Every stage but the last gets its last child (the stage boundary). With ``activations=True``
    every point that automatic placement finds in the whole model
    (:func:`feedback_alignment.find_points`: each hidden activation) is added to the stage that
    holds it, in forward order.
    """
    bounds = _check_boundaries(model, boundaries)
    children = list(model._modules)
    edges = [0, *bounds, len(model)]
    owner = {name: s for s in range(len(edges) - 1) for name in children[edges[s] : edges[s + 1]]}
    chosen: set[str] = {children[b - 1] for b in bounds}
    if activations:
        chosen.update(name for name, _ in find_points(model))
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    points: list[list[str]] = [[] for _ in range(len(edges) - 1)]
    for name in sorted(chosen, key=order.__getitem__):
        points[owner[name.split(".", 1)[0]]].append(name)
    return points
