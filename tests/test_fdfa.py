"""Forward Direct Feedback Alignment (issue 24, item 2): feedback estimated by forward-mode AD.

The references are independent of the library's forward-mode path: the output's directional
derivative ``d = sum_l J_l u_l`` is recomputed with ``torch.autograd.functional.jvp`` (reverse
mode, double backward) on an unconverted copy whose points add ``eps_l`` to their outputs, and the
Jacobians ``J_l = dy/dh_l`` with ``torch.autograd.functional.jacobian``. From them, by the
equations of Bacho and Chu (2024; Florian-BACHO/FDFA): ``dL/dB_l = B_l - (1/n) d^T u_l``, and the
hidden signal is DFA's through ``B_l``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

import feedback_alignment as fa
from feedback_alignment.pipeline import run_local
from zoo.models import CASES, Case
from zoo.reference import reference_step

KEY = fa.FEEDBACK_BUFFER
TOL = {"rtol": 1e-9, "atol": 1e-11}


pytestmark = pytest.mark.usefixtures("float64_one_thread")


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 7), nn.Tanh(), nn.Linear(7, 3)
    )  # fmt: skip


def _batch(n: int = 5, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def _perturbed(model: nn.Module, points: list[str], run):
    """``g(eps_1, ..., eps_k)``: the unconverted model's output with ``eps_l`` added to point
    ``l``'s output (nothing cut: ``dg/deps_l`` is the total derivative ``J_l``)."""

    def g(*eps):
        handles = [
            model.get_submodule(path).register_forward_hook(
                lambda m, a, out, e=e: out + e.reshape(out.shape)
            )
            for path, e in zip(points, eps, strict=True)
        ]
        try:
            return run(model)
        finally:
            for handle in handles:
                handle.remove()

    return g


def _context(output: torch.Tensor):
    """The forward record that the injection node holds for its backward (directions, tangent)."""
    node = output.grad_fn
    assert type(node).__name__ == "DirectFeedbackFnBackward"
    return node.context


def test_one_step_matches_the_equations_in_float64():
    x, y = _batch()
    model = _mlp()
    reference = copy.deepcopy(model)
    rule = fa.FDFA(seed=2)
    rule.apply(model, example_input=x[:2])
    (matrix,) = rule.feedback_parameters(model)
    assert torch.equal(matrix, torch.zeros_like(matrix)), "B starts at zero (the reference's)"
    with torch.no_grad():  # a non-zero estimate, so that the signal is tested too
        matrix.copy_(torch.randn(matrix.shape, generator=torch.Generator().manual_seed(3)))
    points = rule.points(model)
    assert points == ["1", "3"]

    out = model(x)
    context = _context(out)
    directions = context.values
    assert [tuple(u.shape) for u in directions] == [(5, 8), (5, 7)]
    _, d_ref = torch.autograd.functional.jvp(
        _perturbed(reference, points, lambda m: m(x)),
        tuple(torch.zeros_like(u) for u in directions),
        tuple(directions),
    )
    torch.testing.assert_close(context.derivative, d_ref, **TOL)
    F.cross_entropy(out, y).backward()

    blocks = torch.split(matrix.detach(), [8, 7], dim=1)
    want = torch.cat(
        [b - d_ref.t() @ u / x.shape[0] for b, u in zip(blocks, directions, strict=True)], dim=1
    )
    torch.testing.assert_close(matrix.grad, want, **TOL)
    expected = reference_step(
        reference,
        points,
        lambda m: F.cross_entropy(m(x), y),
        buffer=matrix.detach(),
        shared=False,
        scaling="none",
    )
    for name, param in model.named_parameters():
        if name != KEY:
            torch.testing.assert_close(param.grad, expected.grads[name], **TOL)


def _mean_jacobians(model: nn.Module, points: list[str], x: torch.Tensor, widths: list[int]):
    """Per point, ``(1/n) sum_s dy_s/dh_{l,s}``: what ``B_l`` estimates (same-sample blocks)."""
    n = x.shape[0]
    g = _perturbed(model, points, lambda m: m(x))
    eps = tuple(torch.zeros(n, w) for w in widths)
    jacobians = torch.autograd.functional.jacobian(g, eps)
    result = []
    for jac in jacobians:  # (n, d_out, n, n_l)
        result.append(torch.stack([jac[s, :, s, :] for s in range(n)]).mean(0))
    return result


def test_the_estimate_approaches_the_true_jacobian_as_directions_accumulate():
    """With fixed weights and the rate 1/k (the plain average of k estimates), ``B_l`` tends to
    the mean Jacobian, and the hidden signal ``B_l e`` to BP's ``J_l^T e``."""
    x, y = _batch(n=8)
    model = _mlp()
    plain = copy.deepcopy(model)  # unconverted: the Jacobians through every block above
    rule = fa.FDFA(seed=0)
    rule.apply(model, example_input=x[:2])
    (matrix,) = rule.feedback_parameters(model)
    points, widths = rule.points(model), [8, 7]
    truth = torch.cat(_mean_jacobians(plain, points, x, widths), dim=1)
    torch.manual_seed(0)
    errors = {}
    for k in range(1, 801):
        matrix.grad = None
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            matrix -= matrix.grad / k  # B_k = B_{k-1} - (B_{k-1} - D_k) / k: the mean of D_1..D_k
        if k in (25, 800):
            errors[k] = float((matrix.detach() - truth).norm() / truth.norm())
    assert errors[800] < 0.5 * errors[25], errors
    assert errors[800] < 0.15, errors


def test_the_signal_tends_to_backprops_gradient():
    x, y = _batch(n=8)
    model = _mlp()
    rule = fa.FDFA(seed=0)
    rule.apply(model, example_input=x[:2])
    (matrix,) = rule.feedback_parameters(model)
    torch.manual_seed(0)
    for k in range(1, 401):
        matrix.grad = None
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            matrix -= matrix.grad / k
    plain = copy.deepcopy(model)
    rule.remove(plain)
    seen = {}
    plain[1].register_forward_hook(lambda m, a, out: seen.setdefault("h", out))
    out = plain(x)
    loss = F.cross_entropy(out, y)
    (true_dh,) = torch.autograd.grad(loss, seen["h"], retain_graph=True)
    (e,) = torch.autograd.grad(loss, out)
    estimated = e @ matrix.detach()[:, :8]  # B_1 e, the signal FDFA hands point "1"
    cosine = F.cosine_similarity(estimated.flatten(), true_dh.flatten(), dim=0)
    assert cosine > 0.9, float(cosine)
    dfa = fa.DFA(seed=0, shared=False, scale="nokland", distribution="uniform")
    random_b = dfa.apply(_mlp(), example_input=x[:2])._buffers[KEY][:, :8] / 8**0.5
    assert F.cosine_similarity((e @ random_b).flatten(), true_dh.flatten(), dim=0) < cosine


@pytest.mark.parametrize("name", ["resnet-batchnorm", "encoder-sf-gelu"])
def test_zoo_models_match_the_reference_derivative(name):
    """Conv maps with BatchNorm, and sequence-first points: the tangent the library reads at the
    output equals the reverse-mode reference of ``sum_l J_l u_l``."""
    case: Case = CASES[name]
    model = case.build(0)
    reference = copy.deepcopy(model)
    rule = fa.FDFA(seed=1)
    rule.apply(model, points=list(case.blocks), **case.apply)
    binding = rule._binding(model)
    binding.materializing = True
    try:
        case.run(model)
    finally:
        binding.materializing = False
    recorded: dict = {}

    def record(module, args, out) -> None:
        recorded["context"] = _context(out)

    handle = model.register_forward_hook(record)
    try:
        loss = case.run(model)
    finally:
        handle.remove()
    context = recorded["context"]
    points = rule.points(model)
    outputs = {}

    def run_to_output(m):
        hook = m.register_forward_hook(lambda mod, a, out: outputs.setdefault("y", out))
        try:
            case.run(m)
        finally:
            hook.remove()
        return outputs.pop("y")

    # reverse mode twice (the reference's jvp) needs the math attention kernel's ops too
    with sdpa_kernel([SDPBackend.MATH]):
        _, d_ref = torch.autograd.functional.jvp(
            _perturbed(reference, points, run_to_output),
            tuple(torch.zeros_like(u) for u in context.values),
            tuple(context.values),
        )
    torch.testing.assert_close(context.derivative, d_ref.detach(), rtol=1e-8, atol=1e-10)
    loss.backward()
    assert model._parameters[KEY].grad is not None


def test_refusals():
    x, _ = _batch()
    with pytest.raises(ValueError, match="output_activation"):
        fa.FDFA().apply(_mlp(), output_activation="sigmoid")
    model = _mlp()
    with pytest.raises(fa.PlacementError, match="module's input"):
        fa.FDFA().apply(model, points=["2:input"], example_input=x)
    assert fa.make_rule("fdfa", seed=3).seed == 3 and fa.RULES["fdfa"] is fa.FDFA


def test_no_tangent_left_behind_after_the_step():
    """The forward-mode level is left at the end of the forward pass: the returned output is an
    ordinary tensor, and a later forward-mode computation of the user's own works."""
    import torch.autograd.forward_ad as fwAD

    x, y = _batch()
    rule = fa.FDFA()
    model = rule.apply(_mlp(), example_input=x[:2])
    out = model(x)
    assert fwAD.unpack_dual(out).tangent is None
    F.cross_entropy(out, y).backward()
    with fwAD.dual_level():
        dual = fwAD.make_dual(torch.ones(2), torch.ones(2))
        assert fwAD.unpack_dual(dual * 2).tangent is not None


def _ddp_worker(rank: int, world: int) -> tuple:
    torch.manual_seed(0)
    model = _mlp()
    x, y = _batch(seed=100 + rank)  # each rank its own data (and its own directions)
    torch.manual_seed(1000 + rank)
    rule = fa.FDFA(seed=7)
    rule.apply(model, example_input=x[:2])
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
    return rank, model._parameters[KEY].detach().numpy().copy()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_ddp_ranks_keep_the_same_estimate():
    """Each rank draws its own directions on its own data; the averaged gradient of ``B`` keeps
    every rank's estimate identical."""
    (_, b0), (_, b1) = run_local(_ddp_worker, 2, timeout=120.0)
    assert abs(b0).max() > 1e-3, "the estimate moved from zero"
    assert (b0 == b1).all()


REFUSED = {
    # the head reads a second output of the recurrent point (its final state), which the cut
    # detaches: no tangent reaches y, so there is no Jacobian to estimate
    **dict.fromkeys(
        ["gru-bf-state", "gru-sf-state", "lstm-bf-state", "lstm-sf-square", "lstm-sf-state"],
        (fa.PlacementError, "no forward-mode tangent reached the output"),
    ),
    # y = sigmoid(z): the error is fed back at z, whose Jacobian y's tangent does not give
    **dict.fromkeys(
        ["torchfm-afn", "torchfm-autoint", "torchfm-deepfm", "torchfm-xdeepfm"],
        (ValueError, "output_activation"),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_zoo_trains_or_is_refused_with_the_reason(name):
    """Every zoo family at its block points: one FDFA step gives a finite estimate gradient and
    trains the layers below the points, or the placement is refused naming why."""
    case = CASES[name]
    if not case.available:
        pytest.skip(f"{case.library} is not installed")
    model = case.build(0)
    rule = fa.FDFA(seed=1)

    def step() -> None:
        rule.apply(model, points=list(case.blocks), **case.apply)
        binding = rule._binding(model)
        binding.materializing = True
        try:
            case.run(model)
        finally:
            binding.materializing = False
        model.zero_grad(set_to_none=True)
        case.run(model).backward()

    if name in REFUSED:
        error, reason = REFUSED[name]
        with pytest.raises(error, match=reason):
            step()
        return
    step()
    grad = model._parameters[KEY].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 0
    roles = rule.parameter_roles(model)
    assert any(p.grad is not None for n, p in model.named_parameters() if roles.get(n) == "hidden")


class _NoJvp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0)


class _CustomOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l1, self.act, self.l2 = nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)

    def forward(self, x):
        return self.l2(_NoJvp.apply(self.act(self.l1(x))))


def test_an_op_without_forward_derivative_is_refused_with_the_library_reason():
    with pytest.raises(fa.PlacementError, match=r"no forward-mode derivative.*DKP or DFA"):
        fa.FDFA().apply(_CustomOp(), example_input=torch.randn(2, 6))


@pytest.mark.parametrize("how", ["wrapper", "in-place", "function"])
def test_torch_compile_is_refused_with_the_library_reason_and_eager_still_trains(how):
    """The compiled blocks (AOT backends) define no forward-mode derivative, so PyTorch would
    raise a bare NotImplementedError from inside a block: the rule refuses first, at the pass's
    start, however the model was compiled; the same model called eagerly trains."""
    x, y = _batch()
    model = _mlp()
    rule = fa.FDFA(seed=0)
    rule.apply(model, example_input=x)
    if how == "wrapper":
        compiled = torch.compile(model, backend="aot_eager")
    elif how == "in-place":
        compiled = copy.deepcopy(model)
        compiled.compile(backend="aot_eager")
    else:
        compiled = torch.compile(lambda inputs: model(inputs), backend="aot_eager")
    with pytest.raises(fa.PlacementError, match=r"FDFA on Sequential runs under torch\.compile"):
        compiled(x)
    F.cross_entropy(model(x), y).backward()  # B starts at 0: the estimate gets the gradient
    (feedback,) = rule.feedback_parameters(model)
    assert feedback.grad is not None and feedback.grad.abs().sum() > 0
