"""Where direct feedback enters a model: feedback points and how they are found.

A *feedback point* is a module whose output tensor ``h_l`` receives the projected signal ``B_l e``
and, for everything downstream, is replaced by ``h_l.detach()``: the graph is cut there. Points are
found, in order of precedence:

1. ``points=[...]``: module paths given by the user (``"blocks.0"``, ``"features.2"``); a path
   ending in ``":input"`` is a point at that module's first input (``"h.0.ln_2:input"``); for a
   module called several times per forward pass, ``"act#1"`` selects its second call only (the
   other calls are then neither points nor cuts);
2. :class:`FeedbackPoint` marker modules placed in the model by its author;
3. automatically (:func:`automatic_points`):

   * **blocks**: the outputs of repeated blocks, i.e. the children of an ``nn.ModuleList`` /
     ``nn.Sequential`` whose class occurs at least twice in such containers, that hold submodules
     and a normalisation layer (``nn.TransformerEncoderLayer``, GPT-2's ``GPT2Block``, BERT's
     ``BertLayer``, a ViT's blocks, ResNet ``BasicBlock``s). This is the paper's "macro" placement
     for residual networks (Launay et al. 2020): a block's output is the whole residual stream, so
     cutting it leaves no path around the cut. The last block is left out when no layer with
     parameters is registered after it (its output would be the model's output);
   * **recurrent and attention layers** outside blocks (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``,
     ``nn.MultiheadAttention``): their tuple output's first item is the point, every tensor of the
     tuple is cut (an LSTM's ``h_n`` and ``c_n`` too);
   * **activations** outside blocks (``nn.Tanh``, ``nn.ReLU``, ...), i.e. the output of every hidden
     layer of a feed-forward stack, except an activation at the tail of an ``nn.Sequential`` after
     its last layer with parameters (an output nonlinearity: the top layer learns from ``e``
     itself). An activation held as an attribute and called from a hand-written ``forward``
     (``self.relu``) is always a point; a call of it (or of a block) whose output is the model's
     output belongs to the top block (decided at the first training forward pass).

Whatever the source, the first training forward pass of every new placement proves that the graph
is cut (see :mod:`feedback_alignment.rules.direct`), so a heuristic that misreads a model is refused
with a :class:`PlacementError`, never trained by backprop in silence.

A module that runs several times in one forward pass (a shared ``self.relu``) yields one point per
call, named ``"relu"``, ``"relu#1"``, ``"relu#2"`` ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.Tanh,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
)
"""Module types that automatic placement treats as the end of a hidden layer."""


NORMALIZATIONS: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)
"""Normalisation layers: a repeated composite module holding one is read as a residual block."""

SEQUENCE_LAYERS: tuple[type[nn.Module], ...] = (nn.RNNBase, nn.MultiheadAttention)
"""Recurrent and attention layers: their (tuple) output is a hidden representation."""

INPUT_SUFFIX = ":input"
"""``points=["blocks.0.ln_2:input"]`` places a point at a module's (first) input instead of its
output: for models that add residuals inline, where no module returns the tensor to cut."""


class FeedbackPoint(nn.Module):
    """A marker for hand-written ``forward`` methods: ``h = self.point(h)``.

    It is the identity. When a direct-feedback rule is applied to a model that contains markers (and
    no explicit ``points=`` are given), the markers are the model's feedback points.
    """

    def forward(self, x):
        return x


class PlacementError(ValueError):
    """The model offers no usable place for feedback, a named place does not exist, or a placement
    does not cut the graph (backprop would leak past a feedback point)."""


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False))


_SEQUENCES = (nn.Sequential, nn.ModuleList)


def _parents(model: nn.Module) -> dict[str, nn.Module]:
    """Submodule path -> the module that holds it."""
    return {
        f"{prefix}.{child}" if prefix else child: module
        for prefix, module in model.named_modules()
        for child in module._modules
    }


def find_points(
    model: nn.Module, points: Sequence[str] | None = None
) -> list[tuple[str, nn.Module]]:
    """Returns ``(path, module)`` of every feedback point of ``model`` (see module doc for order).

    Raises:
        PlacementError: a named point does not exist, or no point can be found.
    """
    if points is not None:
        if isinstance(points, str):
            points = [points]
        found = []
        repeated = sorted({p for p in points if list(points).count(p) > 1})
        if repeated:
            raise PlacementError(f"points names {repeated} more than once; name each point once")
        for point in points:
            base, sharp, call = point.partition("#")
            if sharp and not call.isdigit():
                raise PlacementError(
                    f"feedback point {point!r}: after '#' comes the index of the module's call "
                    "in the forward pass (0, 1, ...), e.g. 'act#1'"
                )
            path = base.removesuffix(INPUT_SUFFIX)
            try:
                module = model.get_submodule(path)
            except AttributeError:
                names = [n for n, _ in model.named_modules() if n][:40]
                raise PlacementError(
                    f"feedback point {path!r} is not a submodule of {type(model).__name__}; "
                    f"submodules are: {', '.join(names)}"
                ) from None
            if module is model:
                raise PlacementError(
                    "the model itself cannot be a feedback point: its output is where the error "
                    "is taken; name hidden submodules instead"
                )
            found.append((point, module))
        if not found:
            raise PlacementError("points=[] names no feedback point; give at least one module path")
        return found

    markers = [(n, m) for n, m in model.named_modules() if isinstance(m, FeedbackPoint)]
    if markers:
        return markers
    automatic = automatic_points(model)
    if not automatic:
        raise PlacementError(
            f"found no place for feedback in {type(model).__name__}: it has no repeated block "
            "(children of an nn.ModuleList/nn.Sequential holding a normalisation layer), no "
            "recurrent or attention layer and no activation module followed by a layer with "
            "parameters (activations called as functions, e.g. F.relu, are invisible to automatic "
            "placement). Name the hidden blocks with rule.apply(model, points=['block.name', ...]) "
            "or put fa.FeedbackPoint() modules in the model's forward."
        )
    return automatic


def _is_normalization(module: nn.Module) -> bool:
    # Hugging Face and timm define their own norms (T5LayerNorm, LlamaRMSNorm): read by name too
    return isinstance(module, NORMALIZATIONS) or type(module).__name__.endswith("Norm")


def _inside(name: str, roots: Sequence[str]) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The repeated residual-style blocks of ``model`` (outermost only), in registration order.

    A block is a child of an ``nn.ModuleList`` or ``nn.Sequential`` whose class occurs at least
    twice among such children anywhere in the model, that holds submodules, and that contains a
    normalisation layer. The last block is dropped when no module with parameters is registered
    after it: its output is then the model's output, where the error is taken.
    """
    ordered = list(model.named_modules())
    children: list[tuple[str, nn.Module]] = []
    seen_containers: list[str] = []
    for name, module in ordered:
        if not isinstance(module, _SEQUENCES) or _inside(name, seen_containers):
            continue
        seen_containers.append(name)
        for child_name, child in module.named_children():
            children.append((f"{name}.{child_name}" if name else child_name, child))
    counts: dict[type, int] = {}
    for _, child in children:
        counts[type(child)] = counts.get(type(child), 0) + 1
    blocks: list[tuple[str, nn.Module]] = []
    for name, child in children:
        if (
            counts[type(child)] >= 2
            and not _inside(name, [b for b, _ in blocks])
            and any(True for _ in child.children())
            and any(_is_normalization(m) for m in child.modules())
            and any(
                not _is_normalization(m) and _has_parameters(m) for m in child.modules()
            )  # a norm wrapper (PyG's BatchNorm) is not a block
        ):
            blocks.append((name, child))
    if blocks:
        last = blocks[-1][0]
        index = {n: i for i, (n, _) in enumerate(ordered)}
        after = [
            m
            for n, m in ordered[index[last] + 1 :]
            if not _inside(n, [last]) and _has_parameters(m)
        ]
        if not after:
            blocks.pop()
    return blocks


def automatic_points(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Automatic placement (module doc, rule 3): block outputs, recurrent/attention layers and
    activations outside blocks, in registration order."""
    ordered = list(model.named_modules())
    blocks = find_blocks(model)
    block_names = [name for name, _ in blocks]
    last_with_params = max(
        (i for i, (_, m) in enumerate(ordered) if _has_parameters(m)), default=-1
    )
    parents = _parents(model)
    chosen = set(block_names)
    placed: list[str] = []
    for i, (name, module) in enumerate(ordered):
        if not name or (_inside(name, block_names) and name not in chosen):
            continue
        if _inside(name, placed):
            continue  # inside a layer already chosen (an activation inside an LSTM wrapper)
        if (
            name in chosen
            or (isinstance(module, SEQUENCE_LAYERS) and i < last_with_params)
            or (
                isinstance(module, ACTIVATIONS)
                and (i < last_with_params or not isinstance(parents.get(name), _SEQUENCES))
            )
        ):
            placed.append(name)
    modules = dict(ordered)
    return [(name, modules[name]) for name in placed]


def default_batch_axis(module: nn.Module) -> int:
    """Where the batch axis of ``module``'s output lies: 1 for sequence-first layers.

    ``nn.LSTM``/``nn.GRU``/``nn.RNN``/``nn.MultiheadAttention`` with ``batch_first=False`` (their
    default) and ``nn.TransformerEncoderLayer``/``nn.TransformerDecoderLayer``/``nn.Transformer*``
    stacks built from such layers return ``(T, B, ...)``; everything else is read batch-first.
    """
    if isinstance(module, (nn.TransformerEncoder, nn.TransformerDecoder)) and len(module.layers):
        module = module.layers[0]
    if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)):
        module = module.self_attn
    if isinstance(module, SEQUENCE_LAYERS) and not module.batch_first:
        return 1
    return 0


def enclosing_blocks(model: nn.Module, path: str) -> list[str]:
    """The sibling blocks around ``path``: if a point lies inside a child of a ModuleList or
    Sequential of composite modules of one class, the paths of all its children (the block
    placement to suggest)."""
    parts = path.removesuffix(INPUT_SUFFIX).split(".")
    for depth in range(len(parts) - 1, 0, -1):
        container_path = ".".join(parts[:depth])
        try:
            container = model.get_submodule(container_path)
        except AttributeError:
            continue
        children = list(container.children()) if isinstance(container, _SEQUENCES) else []
        if (
            len(children) > 1
            and len({type(child) for child in children}) == 1
            and any(True for _ in children[0].children())
        ):
            return [f"{container_path}.{child}" for child in container._modules]
    return []


OutputSelector = int | str | None
"""Which part of a non-tensor model output is ``y``: an index, a key or an attribute name."""


@dataclass(frozen=True)
class Placement:
    """Where a direct rule cuts a model and takes its error: fixed by ``apply``, never changed.

    Built by :meth:`build` from ``rule.apply``'s arguments, checked against the model there (every
    named module exists, the batch axes are well formed); what is learnt from the first forward
    pass (widths, layout, the cut's proof) lives in the rule's binding, not here.

    Attributes:
        points: ``(path, module)`` of every feedback point, in the order found.
        automatic: the points were placed automatically (blocks decide the top at run time).
        block_of: automatic block points -> their container (blocks of one container must form a
            chain; siblings on the same input are refused).
        selected_calls: point module path -> the calls that are points (``None``: every call).
        output: which part of a structured output is ``y``.
        error_at: the module whose output is ``y`` (``None``: the model's output).
        error_site: that module.
        auto_head: ``error_at`` was chosen by :func:`find_head` (checked at the first pass).
        output_activation: ``y = f(z)``: the error is fed back at ``z``.
        batch_axes: the axes of ``y`` that index samples (``None``: all but the last).
        point_axes: a point's sample axes where they are not the leading ones.
        true_gradient: module paths that may receive the true gradient as well as feedback.
        verify_always: prove the cut at every training forward pass.
    """

    points: tuple[tuple[str, nn.Module], ...]
    automatic: bool
    block_of: Mapping[str, str]
    selected_calls: Mapping[str, frozenset[int] | None]
    output: OutputSelector
    error_at: str | None
    error_site: nn.Module | None
    auto_head: bool
    output_activation: str | None
    batch_axes: tuple[int, ...] | None
    point_axes: Mapping[str, tuple[int, ...] | None]
    true_gradient: tuple[str, ...]
    verify_always: bool

    @classmethod
    def build(
        cls,
        model: nn.Module,
        *,
        points: Sequence[str] | None = None,
        output: OutputSelector = None,
        error_at: str | None = None,
        output_activation: str | None = None,
        batch_axes: int | Sequence[int] | None = None,
        point_batch_axes: Mapping[str, int | Sequence[int]] | None = None,
        true_gradient: Sequence[str] = (),
        verify: str = "placement",
    ) -> Placement:
        """The placement of ``rule.apply``'s arguments on ``model`` (see its doc).

        Raises:
            PlacementError: no feedback point, or a named module does not exist.
            ValueError: ``verify`` or an axis is malformed.
        """
        if verify not in ("placement", "always"):
            raise ValueError(f"verify={verify!r}: choose 'placement' or 'always'")
        found = find_points(model, points)
        auto_head = error_at is None and isinstance(output, str)
        if auto_head:
            error_at = find_head(model)
        error_site = None
        if error_at is not None:
            try:
                error_site = model.get_submodule(error_at)
            except AttributeError:
                raise PlacementError(
                    f"error_at={error_at!r} is not a submodule of {type(model).__name__}"
                ) from None
        axes = point_axes(found, point_batch_axes)
        for path in true_gradient:
            try:
                model.get_submodule(path)
            except AttributeError:
                raise PlacementError(
                    f"true_gradient names {path!r}, which is not a submodule of "
                    f"{type(model).__name__}"
                ) from None
        automatic = points is None
        block_of = (
            {
                name: name.rpartition(".")[0]
                for name, _ in find_blocks(model)
                if any(name == p for p, _ in found)
            }
            if automatic
            else {}
        )
        selected: dict[str, set[int] | None] = {}
        for name, _ in found:
            base, sharp, call = name.partition("#")
            if not sharp:
                selected[base] = None
            elif selected.get(base, set()) is not None:
                selected.setdefault(base, set()).add(int(call))  # type: ignore[union-attr]
        return cls(
            points=tuple(found),
            automatic=automatic,
            block_of=block_of,
            selected_calls={k: None if v is None else frozenset(v) for k, v in selected.items()},
            output=output,
            error_at=error_at,
            error_site=error_site,
            auto_head=auto_head and error_at is not None,
            output_activation=output_activation,
            batch_axes=axes_tuple(batch_axes, "batch_axes") if batch_axes is not None else None,
            point_axes=axes,
            true_gradient=tuple(true_gradient),
            verify_always=verify == "always",
        )

    def modules(self) -> dict[str, nn.Module]:
        """Point module path (without ``#call``) -> the module, once per module."""
        return {name.partition("#")[0]: module for name, module in self.points}


def find_head(model: nn.Module) -> str | None:
    """The module that produces a structured model's output: where its error is injected.

    Hugging Face models name it (``get_output_embeddings()``: GPT-2's ``lm_head``); otherwise the
    last layer with parameters in registration order (BERT's and ViT's ``classifier``). The cut
    verification checks the choice at the first training forward pass.
    """
    modules = {id(m): n for n, m in model.named_modules()}
    getter = getattr(model, "get_output_embeddings", None)
    if callable(getter):
        try:
            head = getter()
        except Exception:  # a model's own method; any failure means "not available"
            head = None
        if isinstance(head, nn.Module) and id(head) in modules and modules[id(head)]:
            return modules[id(head)]
    last = None
    for name, module in model.named_modules():
        if name and not module._modules and any(True for _ in module.parameters(recurse=False)):
            last = name
    return last


def axes_tuple(value: Any, what: str) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ints) as a tuple of distinct axes."""
    axes = (value,) if isinstance(value, int) else tuple(value)
    if not axes or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ValueError(f"{what} must be an int or a sequence of ints, got {value!r}")
    if len(set(axes)) != len(axes):
        raise ValueError(f"{what}={value!r} names an axis twice")
    return axes


def point_axes(
    points: Sequence[tuple[str, nn.Module]], given: Mapping[str, int | Sequence[int]] | None
) -> dict[str, tuple[int, ...] | None]:
    """Each point's sample axes: given, else ``(1,)`` for sequence-first layers, else leading."""
    given = dict(given or {})
    names = {name.partition("#")[0] for name, _ in points}
    unknown = sorted(set(given) - names)
    if unknown:
        raise PlacementError(
            f"point_batch_axes names {unknown}, which are not feedback points; the points are "
            f"{sorted(names)}"
        )
    axes: dict[str, tuple[int, ...] | None] = {}
    for point, module in points:
        name = point.partition("#")[0]
        if name in given:
            axes[name] = axes_tuple(given[name], f"point_batch_axes[{name!r}]")
        elif not name.endswith(INPUT_SUFFIX) and default_batch_axis(module) == 1:
            axes[name] = (1,)
        else:
            axes[name] = None
    return axes
