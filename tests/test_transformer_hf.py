"""Optional: a Hugging Face GPT-2 built from a small config (no weights downloaded) trains with DFA.

It runs when ``transformers`` is installed (``pip install "transformers>=4.40,<5"``) and is skipped
otherwise. The model is unmodified: its blocks are named as feedback points, its output is a
``ModelOutput`` and the error is taken at ``transformer.ln_f``, before the (tied) vocabulary
projection, as in Launay et al. (2020).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import feedback_alignment as fa
from oracle import project, slices, softmax_ce_error

transformers = pytest.importorskip("transformers")

VOCAB, TOKENS = 11, 6


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gpt2(dtype=torch.float32):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=TOKENS,
        n_embd=16,
        n_layer=2,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return transformers.GPT2LMHeadModel(config).to(dtype)


POINTS = ["transformer.h.0", "transformer.h.1"]


def test_gpt2_blocks_receive_the_projected_error_before_the_vocabulary():
    torch.set_default_dtype(torch.float64)
    model = _gpt2(torch.float64)
    rule = fa.DFA(seed=2)
    rule.apply(model, points=POINTS, error_at="transformer.ln_f")
    idx = torch.randint(0, VOCAB, (2, TOKENS))
    targets = torch.randint(0, VOCAB, (2, TOKENS))
    arrived = {}
    with rule.recording(model) as record:
        logits = model(idx).logits
    for name, h in record:
        h.register_hook(lambda grad, name=name: arrived.__setitem__(name, grad))
    F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1)).backward()
    assert [n for n, _ in record] == POINTS
    error = softmax_ce_error(logits.detach(), targets) @ model.lm_head.weight.detach()
    feedback = slices(
        model.state_dict()[fa.FEEDBACK_BUFFER], [16, 16], shared=True, scaling="principled"
    )
    for (name, h), b in zip(record, feedback, strict=True):
        torch.testing.assert_close(arrived[name], project(error, b, h), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("rule_name", ["DFA", "Shallow"])
def test_gpt2_trains_with_dfa(rule_name):
    model = _gpt2()
    rule = fa.DFA(seed=0) if rule_name == "DFA" else fa.Shallow()
    rule.apply(model, points=POINTS, error_at="transformer.ln_f")
    text = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7] * 10)
    x = torch.stack([text[s : s + TOKENS] for s in range(0, 60, 3)])
    y = torch.stack([text[s + 1 : s + TOKENS + 1] for s in range(0, 60, 3)])
    before = model.transformer.h[0].attn.c_attn.weight.detach().clone()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(x).logits.reshape(-1, VOCAB), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1, losses
    moved = not torch.equal(model.transformer.h[0].attn.c_attn.weight, before)
    assert moved == (rule_name == "DFA")  # Shallow leaves the blocks untouched
    rule.remove(model)
