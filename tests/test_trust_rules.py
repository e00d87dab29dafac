"""Issue 21's second trust round, in the rules: no silent freeze, feedback independent of the
weights, every hostile argument a clear answer.

Each test here failed on the code before its fix (commit 61344e1):

* reentrant checkpointing inside blocks or from the parent's loop left blocks untrained, silently;
  a non-reentrant checkpoint around several blocks was refused with the remedy it already used;
* ``torch.func.grad``/``vjp``/``jacrev`` ended in torch's own message, ``jvp`` in a false
  "blocks run side by side" refusal (a recycled ``id``) and then torch's message;
* ``DFA()``'s matrix replayed ``torch.manual_seed(seed)``'s stream;
* NaN/inf/huge scales and negative, float or oversized seeds were accepted;
* brSF resumed differently after a grad-enabled validation pass;
* toggling ``requires_grad`` between steps was refused as a LayerDrop;
* Shallow with a frozen head ended in torch's "does not require grad";
* DFA failed on the meta device, DRTP on a class index out of range in torch's words, and a huge
  output in the allocator.
"""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
import torch.utils.checkpoint as checkpointing
from torch import nn

import feedback_alignment as fa
from feedback_alignment import feedback

transformers = pytest.importorskip("transformers")


class Block(nn.Module):
    """A residual-free block with a norm (so automatic placement takes the blocks), optionally
    checkpointing its own inside."""

    def __init__(self, width: int, inner: bool | None = None) -> None:
        super().__init__()
        self.linear, self.norm, self.inner = nn.Linear(width, width), nn.LayerNorm(width), inner

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.norm(self.linear(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inner is None:
            return self.body(x)
        return checkpointing.checkpoint(self.body, x, use_reentrant=self.inner)


class Stack(nn.Module):
    """Four blocks and a head; ``how`` says where checkpointing happens."""

    def __init__(self, how: str = "none", width: int = 8) -> None:
        super().__init__()
        inner = {"inner-reentrant": True, "inner-nonreentrant": False}.get(how)
        self.blocks = nn.ModuleList(Block(width, inner) for _ in range(4))
        self.head = nn.Linear(width, 3)
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "several-nonreentrant":

            def segment(t: torch.Tensor) -> torch.Tensor:
                return self.blocks[1](self.blocks[0](t))

            x = checkpointing.checkpoint(segment, x, use_reentrant=False)
            x = self.blocks[3](self.blocks[2](x))
            return self.head(x)
        for i, block in enumerate(self.blocks):
            if self.how == "parent-reentrant" and i % 2:
                x = checkpointing.checkpoint(block, x, use_reentrant=True)
            elif self.how == "parent-nonreentrant":
                x = checkpointing.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.head(x)


def _batch(width: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(6, width, generator=g), torch.randint(0, 3, (6,), generator=g)


def _dfa_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    fa.DFA(seed=3).apply(model)
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


# --- 1 and 10: checkpointing and torch.func ---------------------------------------------------


@pytest.mark.parametrize("how", ["inner-reentrant", "parent-reentrant"])
def test_reentrant_checkpointing_is_refused_not_silently_untrained(how):
    torch.manual_seed(0)
    model = Stack(how)
    fa.DFA().apply(model)
    x, y = _batch()
    with pytest.raises(fa.PlacementError, match=r"blocks\.[01]'.*use_reentrant=False"):
        F.cross_entropy(model(x), y).backward()


@pytest.mark.parametrize("how", ["parent-nonreentrant", "several-nonreentrant"])
def test_non_reentrant_checkpointing_gives_the_unchecked_gradients(how):
    x, y = _batch()
    torch.manual_seed(0)
    plain = _dfa_grads(Stack("none"), x, y)
    torch.manual_seed(0)
    checked = _dfa_grads(Stack(how), x, y)
    assert plain.keys() == checked.keys()
    for name in plain:
        torch.testing.assert_close(checked[name], plain[name], rtol=0, atol=0, msg=name)
    assert all(g.abs().sum() > 0 for n, g in checked.items() if n.endswith("linear.weight"))


def test_hf_gpt2_gradient_checkpointing():
    """Hugging Face's own switch: reentrant refused, non-reentrant exact."""
    ids = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))

    def gpt2() -> nn.Module:
        torch.manual_seed(0)
        config = transformers.GPT2Config(
            vocab_size=11, n_positions=5, n_embd=8, n_layer=2, n_head=2, use_cache=False,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        )  # fmt: skip
        return transformers.GPT2LMHeadModel(config).train()

    def grads(model: nn.Module) -> dict[str, torch.Tensor]:
        fa.DFA(seed=2).apply(model, output="logits")
        model(ids, labels=ids).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads(gpt2())
    model = gpt2()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    checked = grads(model)
    assert plain.keys() == checked.keys() and any(".h.0." in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checked[name], plain[name], msg=name)
    model = gpt2()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    fa.DFA(seed=2).apply(model, output="logits")
    with pytest.raises(fa.PlacementError, match="use_reentrant"):
        model(ids, labels=ids).loss.backward()


@pytest.mark.parametrize("transform", ["grad", "vjp", "jacrev"])
def test_functorch_reverse_mode_is_refused_by_the_library(transform):
    torch.manual_seed(0)
    model = Stack()
    fa.DFA().apply(model)
    x, y = _batch()
    params = dict(model.named_parameters())

    def loss(p):
        return F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)

    def logits(p):
        return torch.func.functional_call(model, p, (x,))

    run = {
        "grad": lambda: torch.func.grad(loss)(params),
        "vjp": lambda: torch.func.vjp(logits, params)[1](torch.ones(6, 3)),
        "jacrev": lambda: torch.func.jacrev(logits)(params),
    }[transform]
    with pytest.raises(fa.PlacementError, match=r"torch\.func\.grad, vjp or jacrev.*backward"):
        run()


def test_forward_mode_jvp_and_functional_call_run():
    torch.manual_seed(0)
    model = Stack()
    fa.DFA().apply(model)
    x, y = _batch()
    params = {n: p.detach() for n, p in model.named_parameters()}
    tangents = {n: torch.ones_like(p) for n, p in params.items()}
    out, _ = torch.func.jvp(
        lambda p: torch.func.functional_call(model, p, (x,)), (params,), (tangents,)
    )
    with torch.no_grad():
        torch.testing.assert_close(out, model(x))
    F.cross_entropy(torch.func.functional_call(model, dict(model.named_parameters()), (x,)), y)


def test_layerwise_rules_refuse_functorch_reverse_mode_too():
    torch.manual_seed(0)
    model = fa.models.MLP([8, 8, 3])
    fa.FA().apply(model)
    x, y = _batch()
    params = dict(model.named_parameters())
    with pytest.raises(fa.PlacementError, match=r"torch\.func\.grad, vjp or jacrev"):
        torch.func.grad(lambda p: F.cross_entropy(torch.func.functional_call(model, p, (x,)), y))(
            params
        )


# --- 2: the feedback stream -------------------------------------------------------------------


class TiedLM(nn.Module):
    """A tied language model whose first parameter is its (V, d) embedding, as in issue 21."""

    def __init__(self, vocab: int = 16, width: int = 12) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)  # initialised N(0, 1): torch.randn(V, d)
        self.act = nn.Tanh()
        self.mix = nn.Linear(width, width)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.act(self.mix(self.embed(ids))) @ self.embed.weight.t()


def test_direct_feedback_is_not_the_stream_of_torch_manual_seed():
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    model = TiedLM()
    rule = fa.DFA(seed=0, scale="none")
    rule.apply(model, points=["act"], true_gradient=["embed"])
    ids = torch.randint(0, 16, (3, 4))
    F.cross_entropy(model(ids).reshape(-1, 16), ids.reshape(-1)).backward()
    matrix = model.state_dict()[fa.FEEDBACK_BUFFER]  # (V, d): the embedding's shape
    cosine = F.cosine_similarity(matrix.flatten(), model.embed.weight.detach().flatten(), dim=0)
    assert abs(float(cosine)) < 0.2
    seed = feedback.derive_seed("direct", 0)
    expected = feedback.draw("gaussian", tuple(matrix.shape), seed, dtype=torch.float64)
    torch.testing.assert_close(matrix, expected, rtol=0, atol=0)
    assert feedback.STREAM_VERSION == 2


def test_keyed_seeds_differ_by_key_and_are_63_bit():
    seeds = {feedback.direct_stream_seed(s) for s in range(50)}
    assert len(seeds) == 50 and all(0 <= s < 2**63 for s in seeds)
    assert feedback.direct_stream_seed(0) != feedback.derive_seed(0, 0, 0)  # layer-wise key


# --- 3: arguments -------------------------------------------------------------------------------

BAD_SCALES = [float("nan"), float("inf"), -float("inf"), 1e308, 0.0, -0.5, True, "huge"]
BAD_SEEDS = [-1, 2**64 - 1, 2**64, 2**63, 1.5, 1.0, True, "0", None]
RULES = [fa.DFA, fa.SignDFA, fa.DRTP, fa.FA, fa.KolenPollack, fa.frSF, fa.brSF]


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
@pytest.mark.parametrize("scale", BAD_SCALES, ids=repr)
def test_bad_scales_are_refused_naming_the_argument(rule, scale):
    with pytest.raises(ValueError, match=rf"{rule.__name__}: .*scale"):
        rule(scale=scale)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.__name__)
@pytest.mark.parametrize("seed", BAD_SEEDS, ids=repr)
def test_bad_seeds_are_refused_naming_the_argument(rule, seed):
    with pytest.raises(ValueError, match=rf"{rule.__name__}: seed="):
        rule(seed=seed)


def test_good_seeds_and_scales_are_kept():
    import numpy as np

    assert fa.DFA(seed=np.int64(5)).seed == 5 and fa.DFA(seed=2**63 - 1).seed == 2**63 - 1
    assert fa.DFA(scale=0.25).scale == 0.25 and fa.FA(scale=2).scale == 2.0
    assert fa.uSF(scale="init").scale == "init" and fa.DFA(scale="nokland").scale == "nokland"


# --- 4: brSF resumes exactly --------------------------------------------------------------------


def test_brsf_resume_is_exact_after_a_grad_enabled_validation_pass():
    x, y = _batch(6)

    def make():
        torch.manual_seed(0)
        model = fa.models.MLP([6, 16, 16, 3])
        fa.brSF(seed=3).apply(model)
        return model, torch.optim.SGD(model.parameters(), lr=0.1)

    def step(model, opt):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()

    model, opt = make()
    step(model, opt)
    model.eval()
    model(x)  # validation without no_grad: draws for the new weights
    model.train()
    saved = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, saved)
    step(model, opt)
    step(model, opt)
    resumed, resumed_opt = make()
    saved.seek(0)
    state = torch.load(saved)
    resumed.load_state_dict(state["model"])
    resumed_opt.load_state_dict(state["opt"])
    step(resumed, resumed_opt)
    step(resumed, resumed_opt)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_brsf_loads_a_checkpoint_saved_before_the_fingerprint():
    torch.manual_seed(0)
    model = fa.models.MLP([6, 8, 3])
    fa.brSF(seed=1).apply(model)
    state = model.state_dict()
    legacy = {k: (v[:2] if k.endswith("feedback_stream") else v) for k, v in state.items()}
    model.load_state_dict(legacy)
    x, y = _batch(6)
    F.cross_entropy(model(x), y).backward()


# --- 11: gradual unfreezing ---------------------------------------------------------------------


def test_freezing_and_unfreezing_between_steps_keeps_the_feedback():
    x, y = _batch(6)
    torch.manual_seed(0)
    model = fa.models.MLP([6, 16, 16, 16, 3])
    rule = fa.DFA(seed=4)
    rule.apply(model)
    bottom = list(model.parameters())[:4]  # the first two linear layers
    for p in bottom:
        p.requires_grad_(False)
    F.cross_entropy(model(x), y).backward()
    first = model.state_dict()[fa.FEEDBACK_BUFFER].clone()
    assert rule.layout(model).names == ("1", "3", "5")  # frozen points keep their place
    assert all(p.grad is None for p in bottom)
    for p in bottom:
        p.requires_grad_(True)
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()  # gradual unfreezing: no LayerDrop diagnosis
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    unfrozen = {n: p.grad.clone() for n, p in model.named_parameters()}
    torch.testing.assert_close(model.state_dict()[fa.FEEDBACK_BUFFER], first, rtol=0, atol=0)
    # the same gradients as a model that was never frozen
    torch.manual_seed(0)
    fresh = fa.models.MLP([6, 16, 16, 16, 3])
    fa.DFA(seed=4).apply(fresh)
    F.cross_entropy(fresh(x), y).backward()
    for name, p in fresh.named_parameters():
        torch.testing.assert_close(unfrozen[name], p.grad, rtol=0, atol=0, msg=name)
    # freezing the bottom later: only the frozen points go without a signal
    model.zero_grad(set_to_none=True)
    for p in bottom:
        p.requires_grad_(False)
    F.cross_entropy(model(x), y).backward()
    assert all(p.grad is None for p in bottom)
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, unfrozen[name], rtol=0, atol=0, msg=name)


# --- 12: Shallow with a frozen head -------------------------------------------------------------


def test_shallow_with_a_frozen_head_and_the_loss_inside_forward_is_refused_clearly():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=11, n_positions=5, n_embd=8, n_layer=2, n_head=2, use_cache=False
    )
    model = transformers.GPT2LMHeadModel(config)
    for p in model.parameters():
        p.requires_grad_(False)
    for block in model.transformer.h:  # LoRA-like: only adapters inside the blocks train
        block.mlp.c_fc.bias.requires_grad_(True)
    fa.Shallow().apply(model, output="logits")
    ids = torch.randint(0, 11, (2, 5))
    with pytest.raises(fa.PlacementError, match=r"Shallow trains only .*frozen head"):
        model(ids, labels=ids)


def test_shallow_with_a_frozen_head_is_refused_for_a_tensor_output_too():
    torch.manual_seed(0)
    model = fa.models.MLP([6, 16, 16, 3])
    list(model.parameters())[-1].requires_grad_(False)
    list(model.parameters())[-2].requires_grad_(False)
    fa.Shallow().apply(model)
    with pytest.raises(fa.PlacementError, match=r"Shallow trains only .*frozen head"):
        model(_batch(6)[0])


# --- 13: meta device, DRTP targets, very wide outputs -------------------------------------------


def test_dfa_runs_on_the_meta_device():
    model = fa.models.MLP([6, 16, 16, 3]).to("meta")
    fa.DFA().apply(model)
    x = torch.empty(4, 6, device="meta")
    F.cross_entropy(model(x), torch.zeros(4, dtype=torch.long, device="meta")).backward()
    assert all(p.grad is not None and p.grad.is_meta for p in model.parameters())
    assert model.state_dict()[fa.FEEDBACK_BUFFER].is_meta


@pytest.mark.parametrize("target", [3, -1])
def test_drtp_names_a_class_index_out_of_range(target):
    model = fa.models.MLP([6, 16, 16, 3])
    rule = fa.DRTP()
    rule.apply(model)
    x, y = _batch(6)
    rule.set_targets(torch.tensor([0, 1, 2, target, 0, 1]))
    with pytest.raises(ValueError, match=rf"DRTP got class target {target}, outside \[0, 2\]"):
        F.cross_entropy(model(x), y).backward()


def test_a_feedback_matrix_that_cannot_fit_is_named_before_allocating(monkeypatch):
    monkeypatch.setattr(feedback, "available_bytes", lambda device: 2**30)
    with pytest.raises(feedback.FeedbackMemoryError) as caught:
        feedback.check_fits(
            fa.FEEDBACK_BUFFER, (2**20, 4096), torch.float32, torch.device("cpu"), "narrower"
        )
    message = str(caught.value)
    assert "'direct_feedback_matrix'" in message and "(1048576, 4096)" in message
    assert "16.12 GiB" in message and "1.00 GiB is free" in message


def test_a_too_wide_output_is_refused_by_the_rule_with_the_remedy(monkeypatch):
    monkeypatch.setattr(feedback, "available_bytes", lambda device: 100)
    model = fa.models.MLP([6, 16, 16, 3])
    fa.DFA().apply(model)
    with pytest.raises(feedback.FeedbackMemoryError, match=r"\(3, 16\).*narrower layers"):
        model(_batch(6)[0])


def test_a_large_draw_comes_in_row_blocks_reproducibly(monkeypatch):
    monkeypatch.setattr(feedback, "DRAW_CHUNK", 64)
    blocked = feedback.draw("gaussian", (10, 30), 5)
    generator = torch.Generator().manual_seed(5)
    rows = [torch.randn(2, 30, generator=generator, dtype=torch.float64) for _ in range(5)]
    torch.testing.assert_close(blocked, torch.cat(rows).float(), rtol=0, atol=0)
    assert math.isclose(float(blocked.std()), 1.0, abs_tol=0.2)
    small = feedback.draw("gaussian", (2, 30), 5)  # one block: the plain recipe
    torch.testing.assert_close(small, torch.cat(rows)[:2].float(), rtol=0, atol=0)
