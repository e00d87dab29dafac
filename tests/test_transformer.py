"""The Transformer language model under DFA: float64 oracles for macro and micro placement.

The reference is written from the equations: the signal at feedback point ``l`` is ``B_l e`` per
token, with ``B_l`` sliced and scaled from the raw buffer by the documented recipe (``oracle.py``)
and ``e`` the error where it is taken (the logits, or the input of the vocabulary projection:
``e_logits W_vocab``). Every parameter below a point then gets the gradient of *local* backprop from
that signal down to the segment's detached input, computed here on an untouched copy of the model.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F

import feedback_alignment as fa
from feedback_alignment.models.transformer import (
    CharTransformer,
    TransformerConfig,
    feedback_points,
)
from oracle import project, slices, softmax_ce_error

VOCAB, TOKENS, BATCH = 7, 5, 3


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is faster, and much faster on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(norm: str, n_layer: int = 2) -> CharTransformer:
    torch.manual_seed(0)
    config = TransformerConfig(
        vocab_size=VOCAB,
        block_size=TOKENS,
        n_layer=n_layer,
        n_head=2,
        d_model=8,
        ff_mult=2,
        norm=norm,
    )
    model = CharTransformer(config).double()
    with torch.no_grad():  # move LayerNorms off their identity init so their grads are generic
        for name, p in model.named_parameters():
            if "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _segments(ref: CharTransformer, placement: str, idx: torch.Tensor):
    """``(point name, function of detached inputs, inputs, parameter names)`` in forward order."""
    pre = ref.config.norm == "pre"
    x = ref.tok_emb(idx) + ref.pos_emb(torch.arange(idx.shape[1]))
    segments = []
    for i, blk in enumerate(ref.blocks):
        prefix = f"blocks.{i}."
        names = lambda *mods, p=prefix: [  # noqa: E731
            f"{p}{m}.{n}" for m in mods for n, _ in ref.get_submodule(p + m).named_parameters()
        ]
        if placement == "macro":
            fn = blk
            params = [prefix + n for n, _ in blk.named_parameters()]
            segments.append((f"blocks.{i}", fn, (x,), params))
            x = blk(x).detach()
            continue

        def attn(h, blk=blk):
            return h + blk.attn(blk.ln_1(h)) if pre else blk.ln_1(h + blk.attn(h))

        def act(a, blk=blk):
            return blk.mlp.act(blk.mlp.fc(blk.ln_2(a) if pre else a))

        def out(a, g, blk=blk):
            return a + blk.mlp.proj(g) if pre else blk.ln_2(a + blk.mlp.proj(g))

        a = attn(x).detach()
        g = act(a).detach()
        segments += [
            (f"blocks.{i}.attn_out", attn, (x,), names("ln_1", "attn")),
            (f"blocks.{i}.mlp.act", act, (a,), names("mlp.fc") + (names("ln_2") if pre else [])),
            (f"blocks.{i}", out, (a, g), names("mlp.proj") + ([] if pre else names("ln_2"))),
        ]
        x = out(a, g).detach()
    return segments


@pytest.mark.parametrize("norm", ["post", "pre"])
@pytest.mark.parametrize("placement", ["macro", "micro"])
@pytest.mark.parametrize("before_vocab", [True, False])
@pytest.mark.parametrize("shared", [True, False])
def test_dfa_signal_and_gradients_match_the_hand_computation(norm, placement, before_vocab, shared):
    torch.set_default_dtype(torch.float64)
    model = _model(norm)
    ref = copy.deepcopy(model)
    rule = fa.DFA(seed=5, shared=shared)
    points = feedback_points(model, placement)
    assert len(points) == (2 if placement == "macro" else 6)
    rule.apply(model, points=points, error_at="ln_f" if before_vocab else None)

    idx = torch.randint(0, VOCAB, (BATCH, TOKENS))
    targets = torch.randint(0, VOCAB, (BATCH, TOKENS))
    arrived: dict[str, torch.Tensor] = {}
    with rule.recording(model) as record:
        logits = model(idx)
    for name, h in record:
        h.register_hook(lambda grad, name=name: arrived.__setitem__(name, grad))
    F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1)).backward()
    assert [name for name, _ in record] == points

    # the error, by hand: at the logits, or carried through the vocabulary projection only
    error = softmax_ce_error(logits.detach(), targets)  # (B, T, vocab)
    if before_vocab:
        error = error @ ref.lm_head.weight.detach()  # (B, T, d_model)
    widths = [h.shape[-1] for _, h in record]
    feedback = slices(
        model.state_dict()[fa.FEEDBACK_BUFFER], widths, shared=shared, scaling="principled"
    )
    signals = {name: project(error, b, h) for (name, h), b in zip(record, feedback, strict=True)}
    for name in points:  # B_l e per token at every point
        torch.testing.assert_close(arrived[name], signals[name], rtol=1e-10, atol=1e-13)

    # every parameter: local backprop of its segment from its point's signal
    expected: dict[str, torch.Tensor] = {}
    for name, fn, inputs, params in _segments(ref, placement, idx):
        if name == points[0]:  # embeddings learn by local BP from the first point
            emb = ref.tok_emb(idx) + ref.pos_emb(torch.arange(TOKENS))
            inputs = (emb, *inputs[1:])
            params = [*params, "tok_emb.weight", "pos_emb.weight"]
        tensors = [ref.get_parameter(p) for p in params]
        grads = torch.autograd.grad(fn(*inputs), tensors, signals[name], allow_unused=True)
        expected.update(zip(params, grads, strict=True))
    true = dict(ref.named_parameters())
    top = [n for n in true if n.startswith(("lm_head", "ln_f"))]
    top_grads = torch.autograd.grad(
        F.cross_entropy(ref(idx).reshape(-1, VOCAB), targets.reshape(-1)), [true[n] for n in top]
    )
    expected.update(zip(top, top_grads, strict=True))  # the top always gets its true gradient

    got = dict(model.named_parameters())
    assert sorted(expected) == sorted(got)
    for name, grad in expected.items():
        if grad is None:  # e.g. attention's value bias cannot reach a detached path
            assert got[name].grad is None or not got[name].grad.any(), name
        else:
            torch.testing.assert_close(got[name].grad, grad, rtol=1e-9, atol=1e-12, msg=name)


def test_shallow_trains_only_what_follows_the_last_point():
    torch.set_default_dtype(torch.float64)
    model = _model("post")
    rule = fa.Shallow()
    rule.apply(model, points=feedback_points(model, "macro"), error_at="ln_f")
    idx = torch.randint(0, VOCAB, (BATCH, TOKENS))
    F.cross_entropy(model(idx).reshape(-1, VOCAB), idx.reshape(-1)).backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == name.startswith("lm_head"), name


def test_placement_and_config_errors_are_clear():
    with pytest.raises(ValueError, match="placement must be one of"):
        feedback_points(_model("post"), "nano")
    with pytest.raises(ValueError, match="not divisible by n_head"):
        TransformerConfig(vocab_size=5, d_model=10, n_head=3)
    with pytest.raises(ValueError, match="norm must be one of"):
        TransformerConfig(vocab_size=5, norm="sandwich")
    with pytest.raises(ValueError, match="longer than block_size"):
        _model("pre")(torch.zeros(1, TOKENS + 1, dtype=torch.long))


@pytest.mark.parametrize(
    "rule_name,placement", [("BP", None), ("DFA", "macro"), ("DFA", "micro"), ("Shallow", "macro")]
)
def test_a_few_steps_lower_the_loss(rule_name, placement):
    torch.manual_seed(0)
    text = torch.tensor([0, 1, 2, 3, 4, 5, 6, 5, 4, 3, 2, 1] * 40)
    config = TransformerConfig(vocab_size=VOCAB, block_size=12, n_layer=2, n_head=2, d_model=16)
    model = CharTransformer(config)
    rule = {"BP": fa.BP, "DFA": fa.DFA, "Shallow": fa.Shallow}[rule_name]()
    if placement is None:
        rule.apply(model)
    else:
        rule.apply(model, points=feedback_points(model, placement), error_at="ln_f")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    starts = torch.arange(0, 400, 13)
    x = torch.stack([text[s : s + 12] for s in starts])
    y = torch.stack([text[s + 1 : s + 13] for s in starts])
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(x).reshape(-1, VOCAB), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.1, losses
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    if rule_name == "Shallow":
        assert moved == {"lm_head.weight", "lm_head.bias"}
    else:
        assert "blocks.0.attn.qkv.weight" in moved and "tok_emb.weight" in moved


def test_transformer_task_writes_results_table_samples_and_plot(tmp_path):
    from dataclasses import replace

    from feedback_alignment.experiments import language, tuning
    from feedback_alignment.experiments.registry import RunOptions, tasks

    assert "transformer" in tasks()
    config = replace(
        language.QUICK, steps=20, warmup=5, eval_every=10, eval_batches=2, sample_chars=20
    )
    report = language.run(RunOptions(out_dir=tmp_path, quick=True, progress=False), config)
    for name in ("results.json", "samples.md", "table.md", "curves.png"):
        assert (tmp_path / name).is_file(), name
    assert "| DFA-micro |" in report.markdown and "Ordering found" in report.markdown
    assert "QUICK MODE" in report.markdown
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [r["rule"] for r in runs] == [
        "BP", "DFA-macro", "DFA-micro", "Shallow",
        "BP/authors", "DFA-macro/authors", "DFA-micro/authors", "Shallow/authors",
    ]  # fmt: skip
    assert all(r["sample"].startswith(config.prompt) for r in runs)
    # the authors' arms run at their searched rates where a search is stored (their 1e-4 else)
    stored = tuning.tuned_values("transformer")
    authors = [r for r in runs if r["rule"].endswith("/authors")]
    assert [r["lr"] for r in authors] == [
        stored.get(r["rule"], {}).get("lr", language.AUTHORS_LR) for r in authors
    ]
    hand_set = tmp_path / "hand-set"
    hand_set.mkdir()
    options = RunOptions(out_dir=hand_set, quick=True, progress=False, tuned=False)
    language.run(options, replace(config, rules=("BP/authors",)))
    (hand,) = json.loads((hand_set / "results.json").read_text())["runs"]
    assert hand["lr"] == language.AUTHORS_LR
    assert "| DFA-micro/authors |" in report.markdown and "authors' recipe" in report.markdown
    assert "per BPE token" in report.markdown and "per character" in report.markdown
    # the authors' arms leave our arms' numbers as they were: BP alone gives the same run
    alone = replace(config, rules=("BP",))
    (tmp_path / "alone").mkdir()
    language.run(RunOptions(out_dir=tmp_path / "alone", quick=True, progress=False), alone)
    (bp,) = json.loads((tmp_path / "alone" / "results.json").read_text())["runs"]
    assert bp["test_loss"] == runs[0]["test_loss"] and bp["train_loss"] == runs[0]["train_loss"]
    with pytest.raises(ValueError, match="unknown rules"):
        language.LanguageConfig(rules=("FA",))


def test_the_authors_recipe_sets_relu_dropout_clip_and_adams_epsilon(monkeypatch):
    from dataclasses import replace

    from feedback_alignment import data
    from feedback_alignment.experiments import language

    seen = {}
    real_adam, real_fit = torch.optim.Adam, language.fit

    def adam(params, **kwargs):
        seen["adam"] = kwargs
        return real_adam(params, **kwargs)

    def fit(model, optimizer, *args, **kwargs):
        seen["model"], seen["clip"] = model, kwargs["clip"]
        seen["lr at step 1"] = kwargs["lr_at"](1, 1.0)
        return real_fit(model, optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", adam)
    monkeypatch.setattr(language, "fit", fit)
    config = replace(
        language.QUICK, steps=4, warmup=5, eval_every=2, eval_batches=1, sample_chars=2,
        tuned=False,  # the hand-set rates: the authors' 1e-4
    )  # fmt: skip
    corpus = data.load(config.corpus)
    language.train_one("DFA-micro/authors", 0, config, corpus, progress=False)
    model = seen["model"]
    assert language.split_arm("DFA-micro/authors") == ("DFA-micro", "authors")
    assert all(isinstance(b.mlp.act, torch.nn.ReLU) for b in model.blocks)
    assert model.config.dropout == 0.1 and seen["clip"] == 0.5
    assert seen["adam"]["eps"] == 1e-9 and seen["adam"]["lr"] == language.AUTHORS_LR
    assert seen["lr at step 1"] == 1.0  # no warm-up
    language.train_one("DFA-micro", 0, config, corpus, progress=False)  # ours, unchanged
    assert all(isinstance(b.mlp.act, torch.nn.GELU) for b in seen["model"].blocks)
    assert seen["model"].config.dropout == 0.0 and seen["clip"] == config.clip
    assert "eps" not in seen["adam"] and seen["lr at step 1"] == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="activation must be one of"):
        language.use_activation(model, "swish")
