"""Issue 24 review fixes for the direct rules whose update is partly not made from the loss.

DRTP's hidden signal (from the targets) and FDFA's gradient of ``B`` (from forward-mode tangents)
do not carry a loss scaler's factor ``S``; ``rule.loss_scale`` tells the rule ``S``, or
``scaler.step`` divides them by it (the reviewer's s8: DRTP's first layer moved 2.96e-7 instead of
1.86e-2, FDFA's ``B`` 5.4e-6 instead of 0.33). Also here: FDFA draws no direction in eval-mode
passes, its first forward-mode pass passes under ``-W error``, errors of the example pass say
where they came from, and a binding pickled before ``watch`` existed still trains.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
from feedback_alignment.rules import LossScaleWarning, direct
from feedback_alignment.rules.learned import StepWatch

SCALE = 2.0**16


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 5)
    )  # fmt: skip


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(64, 20, generator=generator), torch.randint(0, 5, (64,), generator=generator)


def _steps(make_rule, amp: bool, set_scale: bool = True, steps: int = 2):
    """The reviewer's loop (s8): SGD through a GradScaler, under bfloat16 autocast when ``amp``.
    Returns the last step's change of the first layer's weight and of ``B`` (``None`` for a
    fixed matrix)."""
    model, rule = _mlp(), make_rule()
    x, y = _batch()
    rule.apply(model, example_input=x[:2])
    feedback = rule.feedback_parameters(model)
    if feedback:
        with torch.no_grad():
            torch.manual_seed(5)
            feedback[0].normal_(0, 0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=SCALE, enabled=amp)
    if set_scale:
        rule.loss_scale = scaler
    for step in range(steps):  # 2 steps: forward-time DRTP's second step runs forward-time
        torch.manual_seed(step)  # the same tangent directions in both precisions
        w0 = model[0].weight.detach().clone()
        b0 = feedback[0].detach().clone() if feedback else None
        opt.zero_grad()
        rule.set_targets(y)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    dw = model[0].weight.detach() - w0
    return dw, (feedback[0].detach() - b0 if feedback else None)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture
def quiet_warning_once(monkeypatch):
    """The LossScaleWarning is given once per process: each test starts before it."""
    monkeypatch.setattr(direct, "_loss_scale_warned", False)


@pytest.mark.parametrize("forward_time", [False, True], ids=["backward_time", "forward_time"])
def test_drtp_under_grad_scaler_updates_as_in_float32(forward_time, quiet_warning_once):
    def make():
        return fa.DRTP(seed=0, forward_time=forward_time)

    reference, _ = _steps(make, amp=False)
    scaled, _ = _steps(make, amp=True)
    assert reference.norm() > 1e-3
    assert _relative(scaled, reference) < 3e-2  # bfloat16 forward, the same update


def test_fdfa_b_under_grad_scaler_updates_as_in_float32(quiet_warning_once):
    def make():
        return fa.FDFA(seed=0)

    dw_ref, db_ref = _steps(make, amp=False)
    dw, db = _steps(make, amp=True)
    assert db_ref.norm() > 1e-2
    assert _relative(db, db_ref) < 3e-2
    assert _relative(dw, dw_ref) < 5e-2


def test_dkp_and_dfa_need_no_loss_scale():
    """Their signals come from dL/dy, which carries the scale: no loss_scale to set."""
    assert not hasattr(fa.DFA(), "loss_scale")
    assert not hasattr(fa.DKP(), "loss_scale")
    dw_ref, db_ref = _steps(lambda: fa.DKP(seed=0), amp=False, set_scale=False)
    dw, db = _steps(lambda: fa.DKP(seed=0), amp=True, set_scale=False)
    assert _relative(db, db_ref) < 3e-2
    assert _relative(dw, dw_ref) < 3e-2


@pytest.mark.parametrize("make", [fa.DRTP, fa.FDFA], ids=["DRTP", "FDFA"])
def test_loss_scale_warning_under_autocast_only(make, quiet_warning_once):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _steps(make, amp=False, set_scale=False, steps=1)
    assert not [w for w in caught if issubclass(w.category, LossScaleWarning)]
    with pytest.warns(LossScaleWarning, match=r"set rule\.loss_scale = scaler") as record:
        _steps(make, amp=True, set_scale=False, steps=1)
    assert record[0].filename == __file__  # attributed to the caller of the model
    direct._loss_scale_warned = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _steps(make, amp=True, set_scale=True, steps=1)  # set: no warning
    assert not [w for w in caught if issubclass(w.category, LossScaleWarning)]


def test_loss_scale_multiplies_drtp_signal_with_the_accumulation_weight():
    """The signal is -y*/n * weight * loss_scale: the two factors multiply."""
    x, y = _batch()
    grads = []
    for weight, scale in ((1.0, None), (0.5, 8.0)):
        model, rule = _mlp(), fa.DRTP(seed=0)
        rule.apply(model)
        if scale is not None:
            rule.loss_scale = scale
        rule.set_targets(y, weight=weight)
        F.cross_entropy(model(x), y).backward()
        grads.append(model[0].weight.grad)
    torch.testing.assert_close(grads[1], 4.0 * grads[0])


def test_fdfa_b_gradient_carries_the_loss_scale():
    x, y = _batch()
    grads = []
    for scale in (None, 4.0):
        model, rule = _mlp(), fa.FDFA(seed=0)
        rule.apply(model, example_input=x[:2])
        if scale is not None:
            rule.loss_scale = scale
        torch.manual_seed(3)
        F.cross_entropy(model(x), y).backward()
        grads.append(rule.feedback_parameters(model)[0].grad)
    torch.testing.assert_close(grads[1], 4.0 * grads[0])


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), "2", True])
def test_loss_scale_refuses_what_is_not_a_positive_number_or_a_scaler(bad):
    with pytest.raises((TypeError, ValueError), match="loss_scale must be"):
        fa.DRTP().loss_scale = bad


def test_fdfa_draws_no_direction_and_no_b_gradient_in_eval_mode():
    x, y = _batch()
    model, rule = _mlp(), fa.FDFA(seed=0)
    rule.apply(model, example_input=x[:2])
    (matrix,) = rule.feedback_parameters(model)
    model.eval()
    before = torch.get_rng_state()
    loss = F.cross_entropy(model(x), y)
    assert torch.equal(torch.get_rng_state(), before)  # no direction drawn
    loss.backward()
    assert matrix.grad is None
    assert model[4].weight.grad is not None  # the backward pass ran
    model.train()
    F.cross_entropy(model(x), y).backward()
    assert not torch.equal(torch.get_rng_state(), before)
    assert matrix.grad is not None


def test_fdfa_first_forward_mode_pass_under_warnings_as_errors():
    """torch's forward-mode decompositions call the deprecated torch.jit.script when first
    imported (by the first make_dual of a process): silenced there, so -W error trains."""
    script = textwrap.dedent(
        """
        import warnings
        import torch, torch.nn.functional as F
        from torch import nn
        import feedback_alignment as fa
        warnings.simplefilter("error")
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
        rule = fa.FDFA(seed=0)
        x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
        rule.apply(model, example_input=x[:2])
        F.cross_entropy(model(x), y).backward()
        assert rule.feedback_parameters(model)[0].grad is not None
        print("trained")
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "trained" in done.stdout


def test_example_input_without_batch_axis_says_so():
    model = _mlp()
    rule = fa.DFA()
    with pytest.raises(fa.PlacementError, match=r"example input.*batch axis.*x\[:2\]"):
        rule.apply(model, example_input=torch.randn(20))
    assert not rule.is_applied(model)


def test_a_batch_of_token_ids_is_a_valid_one_dimensional_example_input():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    rule = fa.DFA()
    rule.apply(model, example_input=torch.randint(0, 10, (4,)))
    F.cross_entropy(model(torch.randint(0, 10, (4,))), torch.randint(0, 3, (4,))).backward()
    assert model[1].weight.grad.norm() > 0


def test_an_error_of_the_model_in_the_example_pass_keeps_its_type_and_says_where():
    model, rule = _mlp(), fa.DFA()
    with pytest.raises(RuntimeError, match="running the example input through Sequential") as e:
        rule.apply(model, example_input=torch.randn(3, 7))  # 7 features, not 20
    assert isinstance(e.value.__cause__, RuntimeError)
    assert "mat1 and mat2" in str(e.value.__cause__)
    assert not rule.is_applied(model)


class _Odd(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(code, detail)


class _Raises(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 4), nn.Tanh())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        raise _Odd(3, "bad input")


def test_an_error_not_built_from_a_message_is_raised_as_it_is_with_a_note():
    model, rule = _Raises(), fa.DFA()
    rule.apply(model, points=["body"])
    with pytest.raises(_Odd) as e:
        rule.materialize(model, torch.randn(2, 4))
    assert "running the example input" in " ".join(e.value.__notes__)


def test_a_binding_pickled_before_watch_existed_still_trains():
    """Bindings pickled before 956c8f2 have no ``watch`` (the step watch's state was the
    binding's own): unpickling gives them the one apply gives."""
    x, y = _batch()
    model, rule = _mlp(), fa.DKP(seed=0)
    rule.apply(model, example_input=x[:2])
    binding = rule._binding(model)
    del binding.__dict__["watch"]
    binding.__dict__["_warned_unstepped"] = False  # what the old binding held instead
    binding.__dict__["_stepped"] = None
    loaded = pickle.loads(pickle.dumps(model))
    restored = loaded._feedback_alignment_direct
    assert isinstance(restored.watch, StepWatch)
    assert "_stepped" not in restored.__dict__
    F.cross_entropy(loaded(x), y).backward()
    assert restored.rule.feedback_parameters(loaded)[0].grad is not None
    assert loaded[0].weight.grad is not None
