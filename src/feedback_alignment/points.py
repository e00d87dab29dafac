"""Where direct feedback enters a model: feedback points and how they are found.

A *feedback point* is a module whose output tensor ``h_l`` receives the projected signal ``B_l e``
and, for everything downstream, is replaced by ``h_l.detach()``: the graph is cut there. Points are
found, in order of precedence:

1. ``points=[...]``: module paths given by the user (``"blocks.0"``, ``"features.2"``); a path
   ending in ``":input"`` is a point at that module's first input (``"h.0.ln_2:input"``);
2. :class:`FeedbackPoint` marker modules placed in the model by its author;
3. automatically: every activation module (``nn.Tanh``, ``nn.ReLU``, ...), i.e. the output of every
   hidden layer, except an activation at the tail of an ``nn.Sequential`` after its last layer with
   parameters (an output nonlinearity: the top layer learns from ``e`` itself). An activation held
   as an attribute and called from a hand-written ``forward`` (``self.relu``) is always a point; if
   it also runs after the top layer, the first training forward pass says so.

A module that runs several times in one forward pass (a shared ``self.relu``) yields one point per
call, named ``"relu"``, ``"relu#1"``, ``"relu#2"`` ...
"""

from __future__ import annotations

from collections.abc import Sequence

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
    """The model offers no usable place for feedback, or a named place does not exist."""


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
        for point in points:
            path = point.removesuffix(INPUT_SUFFIX)
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

    ordered = list(model.named_modules())
    last_with_params = max(
        (i for i, (_, m) in enumerate(ordered) if _has_parameters(m)), default=-1
    )
    parents = _parents(model)
    automatic = [
        (name, module)
        for i, (name, module) in enumerate(ordered)
        if isinstance(module, ACTIVATIONS)
        and (i < last_with_params or not isinstance(parents.get(name), _SEQUENCES))
    ]
    if not automatic:
        raise PlacementError(
            f"found no place for feedback in {type(model).__name__}: it has no activation module "
            "followed by a layer with parameters (activations called as functions, e.g. F.relu, "
            "are invisible to automatic placement). Name the hidden blocks with "
            "rule.apply(model, points=['block.name', ...]) or put fa.FeedbackPoint() modules in "
            "the model's forward."
        )
    return automatic
