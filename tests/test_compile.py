"""``torch.compile`` of converted models (issue 20, item 5): every rule trains under compile with
eager's gradients and weights, and its gradients are still the rule's (not BP's).

``aot_eager`` (TorchDynamo + AOT autograd, no code generation) runs every rule, on an MLP and on
a Transformer; ``inductor`` (the default backend, C++ code generation) one rule per family. A
direct rule's feedback points are graph breaks: each block between two points compiles on its
own, the cut and the projection run in eager code, and the cut verification walks the compiled
blocks' autograd nodes; ``fullgraph=True`` is refused with a message that says so.

Times on the 2-core AMD EPYC, 2026-12-05, with other jobs running (load 3-4): the aot_eager cases
0.1-3 s each (dynamo's cache makes the repeats cheap), inductor DFA 26 s and FA 5 s (cold cache).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
from feedback_alignment.models.transformer import CharTransformer, TransformerConfig

RULES: dict[str, Callable[[], fa.Rule]] = {
    name: partial(fa.make_rule, name, seed=1)
    for name in ("DFA", "SignDFA", "DRTP", "Shallow", "FA", "uSF", "frSF", "brSF", "KP", "WM")
}
"""Every rule, built through the registry (``fa.make_rule`` takes these spellings)."""


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 4)
    )


def _transformer() -> nn.Module:
    torch.manual_seed(0)
    return CharTransformer(TransformerConfig(11, block_size=8, n_layer=2, n_head=2, d_model=16))


def _data(arch: str) -> tuple[torch.Tensor, torch.Tensor, Callable]:
    generator = torch.Generator().manual_seed(0)
    if arch == "mlp":
        x, y = (
            torch.randn(6, 8, generator=generator),
            torch.randint(0, 4, (6,), generator=generator),
        )
        return x, y, F.cross_entropy
    x = torch.randint(0, 11, (3, 6), generator=generator)
    y = torch.randint(0, 11, (3, 6), generator=generator)
    return x, y, lambda out, t: F.cross_entropy(out.reshape(-1, 11), t.reshape(-1))


def _train(
    name: str | None, arch: str, backend: str | None, steps: int = 3
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Gradients of the last step and weights after ``steps`` SGD steps (weight decay for KP)."""
    model = _mlp() if arch == "mlp" else _transformer()
    rule = RULES[name]() if name else None
    if rule is not None:
        rule.apply(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01)
    forward = model if backend is None else torch.compile(model, backend=backend)
    x, y, loss_fn = _data(arch)
    for _ in range(steps):
        if isinstance(rule, fa.DRTP):
            rule.set_targets(y)
        opt.zero_grad(set_to_none=True)
        loss_fn(forward(x), y).backward()
        grads = [
            torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()
        ]
        opt.step()
        if isinstance(rule, fa.WeightMirror):
            rule.mirror(model, generator=torch.Generator().manual_seed(0))
    return grads, [p.detach().clone() for p in model.parameters()]


def _close(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.allclose(u, v, rtol=1e-4, atol=1e-6) for u, v in zip(a, b, strict=True))


def _check(name: str, arch: str, backend: str) -> None:
    eager_grads, eager_weights = _train(name, arch, None)
    grads, weights = _train(name, arch, backend)
    assert _close(grads, eager_grads), f"{name}: compiled gradients differ from eager"
    assert _close(weights, eager_weights), f"{name}: compiled weights differ from eager"
    bp_grads, _ = _train(None, arch, None, steps=1)
    first, _ = _train(name, arch, backend, steps=1)
    assert not _close(first, bp_grads), f"{name}: compiled gradients are BP's"


@pytest.mark.parametrize("name", list(RULES))
def test_every_rule_compiles_on_an_mlp_with_eagers_gradients(name: str) -> None:
    _check(name, "mlp", "aot_eager")


@pytest.mark.parametrize("name", ["DFA", "SignDFA", "DRTP", "FA", "brSF", "KP"])
def test_rules_compile_on_a_transformer_with_eagers_gradients(name: str) -> None:
    _check(name, "transformer", "aot_eager")


@pytest.mark.skipif(
    shutil.which("c++") is None and shutil.which("g++") is None,
    reason="inductor on CPU needs a C++ compiler (c++ or g++)",
)
@pytest.mark.parametrize("name", ["DFA", "FA"], ids=["direct-family", "layerwise-family"])
def test_the_default_backend_inductor_gives_eagers_gradients(name: str) -> None:
    _check(name, "mlp", "inductor")


def test_the_cut_is_still_proved_under_compile() -> None:
    """A placement that leaks (a residual around the point) is refused compiled as in eager."""

    class Leaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.inner[0](x)
            return self.head(self.inner(x) + h)  # h bypasses the point at inner.1

    model = fa.DFA().apply(Leaky(), points=["inner.1"])
    compiled = torch.compile(model, backend="aot_eager")
    with pytest.raises(fa.PlacementError):
        compiled(torch.randn(3, 4)).sum().backward()


def test_fullgraph_is_refused_with_the_reason() -> None:
    """0.2-0.5 s on the 2-core machine: the refusal comes at the first feedback point."""
    model = fa.DFA().apply(_mlp())
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with pytest.raises(Exception, match="leave out fullgraph=True"):
        compiled(torch.randn(3, 8))


def test_a_model_whose_class_was_compiled_for_bp_first_still_trains_by_the_rule() -> None:
    """TorchDynamo skips guards on module hooks by default: the BP baseline's compiled code
    (same class) would be reused without the feedback hooks, or a model compiled before the
    rule was applied would keep its hook-less code. The rule turns the hook guards on."""
    bp_grads, _ = _train(None, "mlp", "aot_eager", steps=1)
    eager, _ = _train("DFA", "mlp", None, steps=1)
    compiled, _ = _train("DFA", "mlp", "aot_eager", steps=1)
    assert _close(compiled, eager) and not _close(compiled, bp_grads)
    model = _mlp()
    forward = torch.compile(model, backend="aot_eager")
    x, y, loss_fn = _data("mlp")
    loss_fn(forward(x), y).backward()  # compiled as plain BP
    fa.DFA(seed=1).apply(model)
    model.zero_grad()
    loss_fn(forward(x), y).backward()
    assert _close([p.grad for p in model.parameters()], eager)


def test_a_custom_model_compiled_before_the_rule_in_a_fresh_process_trains_by_the_rule(
    tmp_path,
) -> None:
    """The first direct rule of a process turns TorchDynamo's hook guards on and drops the code
    compiled before (without those guards, compiled code of the user's own class skipped the
    feedback hooks). A fresh interpreter: the switch happens once per process. 12-20 s."""
    script = tmp_path / "after.py"
    script.write_text(
        "import torch, torch.nn.functional as F\n"
        "from torch import nn\n"
        "import feedback_alignment as fa\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.l1, self.a1, self.l2 = nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)\n"
        "    def forward(self, x):\n"
        "        return self.l2(self.a1(self.l1(x)))\n"
        "x, y = torch.randn(6, 8), torch.randint(0, 4, (6,))\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return Net()\n"
        "model = make()\n"
        "compiled = torch.compile(model, backend='aot_eager')\n"
        "F.cross_entropy(compiled(x), y).backward()  # compiled for BP first\n"
        "fa.DFA(seed=1).apply(model)  # the first direct rule of the process\n"
        "eager = fa.DFA(seed=1).apply(make())\n"
        "model.zero_grad()\n"
        "F.cross_entropy(compiled(x), y).backward()\n"
        "F.cross_entropy(eager(x), y).backward()\n"
        "for a, b in zip(model.parameters(), eager.parameters()):\n"
        "    assert torch.allclose(a.grad, b.grad), 'not the rule gradient'\n"
        "print('ok')\n"
    )
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


@pytest.mark.parametrize("rule", [fa.DFA(), fa.FA()], ids=["direct", "layerwise"])
def test_a_rule_is_not_applied_to_a_compiled_wrapper(rule: fa.Rule) -> None:
    compiled = torch.compile(_mlp(), backend="aot_eager")
    with pytest.raises(TypeError, match=r"rule.apply\(model\); compiled = torch.compile\(model\)"):
        rule.apply(compiled)


def test_plain_state_dict_reads_a_compiled_model_through_the_module_it_wraps() -> None:
    model = fa.FA(seed=0).apply(_mlp())
    compiled = torch.compile(model, backend="aot_eager")
    assert list(fa.plain_state_dict(compiled)) == list(_mlp().state_dict())


@pytest.mark.parametrize("name", ["FA", "uSF", "frSF", "KP"])
def test_layerwise_rules_compile_into_one_graph(name: str) -> None:
    """No graph break (the kernel is traced; KP's optimizer check runs in eager steps only), so
    ``fullgraph=True`` works; brSF reads its stream on the host and breaks the graph per layer."""
    eager, _ = _train(name, "mlp", None, steps=1)
    model = RULES[name]().apply(_mlp())
    x, y, loss_fn = _data("mlp")
    explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss_fn(compiled(x), y).backward()
    assert _close([p.grad for p in model.parameters()], eager)
