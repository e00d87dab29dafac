"""Proof that a placement cuts the graph: no backprop leaks past a feedback point.

Detaching a point's output downstream does not cut a graph whose other consumers captured the
tensor, or a tensor below it, before the hook ran: an inline residual ``x = x + f(x)`` around a
point inside ``f``, a tuple's other items (an LSTM's ``h_n``), a branch that bypasses the points
(DeepFM's FM term reading the embedding that also feeds the MLP), a loss computed inside
``forward`` before the error is injected. Any of these trains the layers below the point by true
backprop while the rule is called DFA.

The invariant checked here, once per new placement (not per step): in the autograd graph of one
training forward pass,

* the **error region** ``E``: every node reachable from the model's output (and its ``loss``, if it
  returns one) without entering the feedback points' edges of the injection node
  (``DirectFeedbackFn`` hands the points their signal; its edge to the error site ``y`` is the
  only one followed), and
* each **point region** ``H_l``: every node reachable from the recorded point tensor ``h_l``,

share no node other than parameter leaves (``AccumulateGrad``), and the point regions share none
with each other. A shared interior node is a leak: the parameters below it would receive gradient
from the error site (or from another point's local backprop) that did not come through the
injected signal. A shared parameter leaf is legitimate only as a *declared tie*: a ``Parameter``
registered in two modules (GPT-2's output head reuses the token embedding's weight), which receives
the top block's true gradient plus the feedback signal through the embedding. The same module
called again above the points (a DeepFM whose FM term calls the embedding a second time) is a
bypass, refused like the single-call version of the same model. Modules named in
``true_gradient=`` may be reached both ways on purpose (a hybrid that the user asked for); anything
else is refused with a :class:`~feedback_alignment.points.PlacementError`.

The walk reads ``grad_fn.next_functions`` only: no backward pass, no gradient, no side effect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

Node = object


def _accumulated(node: Node) -> torch.Tensor | None:
    """The leaf tensor of an ``AccumulateGrad`` node (``None`` for an interior node)."""
    return getattr(node, "variable", None)


def reachable(roots: Iterable[Node], follow: Callable[[Node], Iterable[Node]] | None = None) -> set:
    """Every autograd node reachable from ``roots`` (``follow(node)`` overrides its edges)."""
    seen: set = set()
    stack = [node for node in roots if node is not None]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        edges = follow(node) if follow is not None else None
        if edges is None:
            edges = (child for child, _ in node.next_functions)
        stack.extend(child for child in edges if child is not None and child not in seen)
    return seen


@dataclass
class CutReport:
    """What the verification found: the leaks, and the role of every parameter it reached."""

    #: ``(point, parameter names, other)``: ``other`` is the label of the model output whose
    #: graph reaches below ``point`` around the cut, or ``"point NAME"`` for another point whose
    #: local backprop does
    leaks: list[tuple[str, list[str], str | None]] = field(default_factory=list)
    #: per output tensor (in the order given): whether its graph passes through the injection node
    injected: list[bool] = field(default_factory=list)
    #: parameter name -> ``"top"`` (true gradient only), ``"hidden"`` (feedback only) or
    #: ``"tied"`` (both: a declared tie or a module named in ``true_gradient``)
    roles: dict[str, str] = field(default_factory=dict)
    #: the error region holds a node of a compiled (AOT autograd) region
    compiled: bool = False


def verify_cut(
    model: nn.Module,
    outputs: list[tuple[str, torch.Tensor]],
    points: list[tuple[str, torch.Tensor]],
    is_injection: Callable[[Node], bool],
    true_gradient: tuple[str, ...] = (),
    parameter_names: dict[int, str] | None = None,
) -> CutReport:
    """Checks the invariant of the module doc on one forward pass's graph.

    Args:
        model: the converted model (to name parameters).
        outputs: ``(label, tensor)`` of every tensor the model returns that requires grad (the
            selected output first): a loss may be computed from any of them.
        points: ``(name, h_l)``, the uncut point tensors recorded in this forward pass.
        is_injection: whether a node is this rule's ``DirectFeedbackFn`` node (only its edge to
            ``y``, the first input, belongs to the error region).
        true_gradient: module paths whose parameters may receive both the true gradient and
            feedback (a hybrid the user asked for).
        parameter_names: ``id(tensor) -> name`` of the leaves the graph was built from, where
            they are not ``model``'s parameters (a pipeline stage's stashed weights, run by
            ``torch.func.functional_call``); default: ``model.named_parameters()``.
    """
    names = {id(p): n for n, p in model.named_parameters()}
    if parameter_names is not None:
        names.update(parameter_names)
    owners: dict[int, int] = {}
    for _, module in model.named_modules(remove_duplicate=False):
        for param in module._parameters.values():
            if param is not None:
                owners[id(param)] = owners.get(id(param), 0) + 1
    declared_ties = {names[i] for i, count in owners.items() if count > 1 and i in names}
    report = CutReport()

    hit = [False]

    def follow(node: Node):
        if is_injection(node):
            hit[0] = True
            first = node.next_functions[0][0] if node.next_functions else None
            return [first] if first is not None else []
        return None

    error_region: set = set()
    output_regions: list[tuple[str, set]] = []
    for label, tensor in outputs:
        hit[0] = False
        region = reachable([tensor.grad_fn], follow)
        output_regions.append((label, region))
        error_region |= region
        report.injected.append(hit[0])

    def source(nodes: set) -> str:
        return next((label for label, region in output_regions if region & nodes), "the output")

    error_params = _parameters(error_region, names)
    allowed = tuple(path.rstrip(".") + "." for path in true_gradient)

    def allowed_name(name: str) -> bool:
        return name.startswith(allowed)

    regions: list[tuple[str, set]] = []
    hidden_params: set[str] = set()
    for point, tensor in points:
        region = reachable([tensor.grad_fn])
        params = _parameters(region, names)
        hidden_params |= params
        shared = {n for n in region & error_region if _accumulated(n) is None}
        if shared:
            leaked = sorted(p for p in _parameters(reachable(shared), names) if not allowed_name(p))
            if leaked:
                report.leaks.append((point, leaked, source(shared)))
        for other, other_region in regions:
            overlap = {n for n in region & other_region if _accumulated(n) is None}
            if overlap:
                leaked = sorted(
                    p for p in _parameters(reachable(overlap), names) if not allowed_name(p)
                )
                if leaked:
                    report.leaks.append((other, leaked, f"point {point}"))
        regions.append((point, region))
    for point, region in regions:
        reused = sorted(
            p
            for p in _parameters(region, names) & error_params
            if p not in declared_ties and not allowed_name(p)
        )
        if reused:
            leaves = {n for n in region if _accumulated(n) is not None}
            report.leaks.append((point, reused, source(leaves)))
    for name in error_params | hidden_params:
        if name in error_params and name in hidden_params:
            report.roles[name] = "tied"
        else:
            report.roles[name] = "top" if name in error_params else "hidden"
    report.compiled = any(_is_compiled(n) for n in error_region)
    return report


def _is_compiled(node: Node) -> bool:
    """A node of a ``torch.compile``d (AOT autograd) region: one node spanning the whole cut."""
    return "Compiled" in type(node).__name__


def _parameters(nodes: Iterable[Node], names: dict[int, str]) -> set[str]:
    found = set()
    for node in nodes:
        leaf = _accumulated(node)
        if leaf is not None and id(leaf) in names:
            found.add(names[id(leaf)])
    return found
