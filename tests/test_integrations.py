"""The trainer callbacks of ``feedback_alignment.integrations``: they log alignment through the
trainer's own loggers and change nothing about training (gradients, buffers, random state).

The Hugging Face tests skip without ``transformers``/``accelerate``, the Lightning tests without
``lightning``. Both libraries are imported once, at collection, so no single test pays for it.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
from feedback_alignment.integrations import metrics


def _optional(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


hf = _optional("feedback_alignment.integrations.huggingface")
transformers = _optional("transformers") if hf else None
if transformers is not None and _optional("accelerate") is None:
    hf = None  # the Trainer needs accelerate
pl_cb = _optional("feedback_alignment.integrations.lightning")
pl = _optional("lightning.pytorch") if pl_cb else None

needs_hf = pytest.mark.skipif(hf is None, reason="transformers or accelerate is not installed")
needs_pl = pytest.mark.skipif(pl_cb is None, reason="lightning is not installed")
CALLBACKS = [
    pytest.param("hf", marks=needs_hf),
    pytest.param("lightning", marks=needs_pl),
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _callback_class(kind: str):
    return hf.AlignmentCallback if kind == "hf" else pl_cb.AlignmentCallback


class Net(nn.Module):
    """A small classifier with dropout and BatchNorm: the probe must not consume their RNG or
    move their statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(6, 16),
            nn.BatchNorm1d(16),
            nn.Tanh(),
            nn.Dropout(0.3),
            nn.Linear(16, 16),
            nn.Tanh(),
            nn.Dropout(0.3),
            nn.Linear(16, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _data(n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


RULES = {
    "DFA": lambda: fa.DFA(seed=0),
    "FA": lambda: fa.FA(seed=0),
    "KP": lambda: fa.KolenPollack(seed=0),
    "brSF": lambda: fa.brSF(seed=0),
}


def _step_hook(kind, callback, model, step):
    """Runs the callback's per-step hook as its trainer would at optimizer step ``step``."""
    if kind == "hf":
        state = transformers.TrainerState()
        state.global_step = step
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="AlignmentCallback has no trainer")
            callback.on_step_end(None, state, transformers.TrainerControl(), model=model)
    else:

        class Trainer:
            global_step = step
            loggers = ()

        callback.on_train_batch_end(Trainer(), model, None, None, 0)


# --- construction and bad input ----------------------------------------------------------------


def test_import_feedback_alignment_imports_no_trainer_library():
    code = (
        "import sys, feedback_alignment, feedback_alignment.integrations; "
        "print(sorted(m for m in ('transformers', 'lightning', 'pytorch_lightning') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(
    ("module", "hidden", "extra"),
    [
        ("huggingface", ["transformers"], r"feedback-alignment\[hf\]"),
        (
            "lightning",
            ["lightning", "lightning.pytorch", "lightning.pytorch.callbacks"],
            r"pip install \"lightning",
        ),
    ],
)
def test_a_missing_trainer_library_is_named_with_the_install_command(
    monkeypatch, module, hidden, extra
):
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    monkeypatch.delitem(sys.modules, f"feedback_alignment.integrations.{module}", raising=False)
    with pytest.raises(ImportError, match=extra):
        importlib.import_module(f"feedback_alignment.integrations.{module}")


@pytest.mark.parametrize("kind", CALLBACKS)
def test_bad_arguments_are_refused_at_construction(kind):
    callback = _callback_class(kind)
    rule, batch = fa.DFA(), _data(4)
    for every in (0, -3):
        with pytest.raises(ValueError, match="every_n_steps must be >= 1"):
            callback(rule, batch, F.cross_entropy, every_n_steps=every)
    for every in (2.5, True, "10"):
        with pytest.raises(TypeError, match="every_n_steps must be a positive int"):
            callback(rule, batch, F.cross_entropy, every_n_steps=every)
    with pytest.raises(TypeError, match="needs loss_fn"):
        callback(rule, batch)
    with pytest.raises(TypeError, match="must be a pair"):
        callback(rule, batch[0], F.cross_entropy)
    with pytest.raises(TypeError, match=r"must be a pair .* of length 3"):
        callback(rule, (*batch, batch[1]), F.cross_entropy)
    with pytest.raises(ValueError, match="empty mapping"):
        callback(rule, {})
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        callback(rule, batch, "cross_entropy")
    with pytest.raises(TypeError, match="rule must be a feedback_alignment rule"):
        callback("DFA", batch, F.cross_entropy)
    assert callback(rule, batch, F.cross_entropy, every_n_steps=7).every_n_steps == 7


def _start(kind, callback, model):
    if kind == "hf":
        callback.on_train_begin(None, transformers.TrainerState(), None, model=model)
    else:
        callback.on_train_start(None, model)


@pytest.mark.parametrize("kind", CALLBACKS)
def test_a_probe_that_does_not_fit_is_refused_when_training_starts(kind):
    model = Net()
    rule = fa.DFA(seed=0)
    rule.apply(model)
    x, y = _data(4)
    wrong = _callback_class(kind)(rule, (x[:, :5], y), F.cross_entropy)
    with pytest.raises(ValueError, match="probe batch does not fit the Net: RuntimeError"):
        _start(kind, wrong, model)
    no_loss = _callback_class(kind)(rule, {"x": x})  # a plain tensor output carries no loss
    with pytest.raises(ValueError, match="holds no loss: put the labels into the probe"):
        _start(kind, no_loss, model)
    not_scalar = _callback_class(kind)(rule, (x, y), lambda out, t: out)
    with pytest.raises(ValueError, match=r"must be a scalar tensor, got \(4, 3\)"):
        _start(kind, not_scalar, model)


@pytest.mark.parametrize("kind", CALLBACKS)
def test_a_rule_that_is_not_applied_is_named(kind):
    callback = _callback_class(kind)(fa.DFA(), _data(4), F.cross_entropy)
    with pytest.raises(RuntimeError, match=r"DFA.* is not applied to the Net .* rule.apply"):
        _start(kind, callback, Net())


# --- no side effects ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", CALLBACKS)
@pytest.mark.parametrize("rule_name", list(RULES))
def test_a_measurement_leaves_grad_buffers_and_rng_untouched(kind, rule_name):
    torch.manual_seed(0)
    model = Net().train()
    rule = RULES[rule_name]()
    rule.apply(model)
    x, y = _data()
    F.cross_entropy(model(x), y).backward()  # a training step's gradients, not yet applied
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    rng = torch.get_rng_state()
    callback = _callback_class(kind)(rule, (x[:8], y[:8]), F.cross_entropy, every_n_steps=2)
    _start(kind, callback, model)
    _step_hook(kind, callback, model, 1)  # not due
    assert callback.history == []
    _step_hook(kind, callback, model, 2)
    assert [step for step, _ in callback.history] == [2]
    assert torch.equal(torch.get_rng_state(), rng)
    after = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert after.keys() == grads.keys()
    for name, grad in grads.items():
        assert torch.equal(after[name], grad), name
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    logged = callback.last_metrics
    assert set(logged) >= {"alignment/angle/body.0", "alignment/probe_loss"}
    if rule_name == "DFA":
        assert "alignment/cosine/body.2" in logged
    else:
        assert "alignment/weight_angle/body.0" in logged


def test_metrics_leave_out_layers_without_update():
    model = Net()
    rule = fa.Shallow()
    rule.apply(model)
    report = fa.alignment(model, rule, _data(8), F.cross_entropy)
    logged = metrics(report, {}, prefix="fa/")
    assert not any(k.startswith("fa/angle/") for k in logged)  # no hidden layer learns: nan
    assert set(logged) == {"fa/probe_loss"}


# --- Hugging Face Trainer -------------------------------------------------------------------------


def _gpt2():
    config = transformers.GPT2Config(
        vocab_size=11, n_positions=8, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.2
    )
    return transformers.GPT2LMHeadModel(config)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.ids = torch.randint(0, 11, (16, 8), generator=torch.Generator().manual_seed(3))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def _hf_train(tmp_path, with_callback: bool):
    torch.manual_seed(0)
    model = _gpt2()
    rule = fa.DFA(seed=0)
    rule.apply(model, output="logits")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=4,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    seen = []

    class Reporter(transformers.TrainerCallback):  # stands for TensorBoard, W&B, ...
        def on_log(self, args, state, control, logs=None, **kwargs):
            seen.append((state.global_step, dict(logs)))

    data = _Tokens()
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=data, callbacks=[Reporter()]
    )
    callback = None
    if with_callback:
        probe = {"input_ids": data.ids[:4], "labels": data.ids[:4]}
        callback = hf.AlignmentCallback(rule, probe, every_n_steps=2).attach(trainer)
    trainer.train()
    return model, trainer, callback, seen, torch.rand(4)


@needs_hf
def test_hf_trainer_logs_alignment_and_trains_exactly_as_without(tmp_path):
    base, _, _, _, base_draw = _hf_train(tmp_path / "a", with_callback=False)
    model, trainer, callback, seen, draw = _hf_train(tmp_path / "b", with_callback=True)
    assert torch.equal(draw, base_draw)  # the random stream went on as without the callback
    for (name, p), q in zip(model.named_parameters(), base.parameters(), strict=True):
        assert torch.equal(p, q), name  # the same gradients and dropout masks at every step
    assert [step for step, _ in callback.history] == [2, 4]
    reported = [(step, logs) for step, logs in seen if "alignment/angle_mean" in logs]
    assert [step for step, _ in reported] == [2, 4]
    keys = reported[0][1]
    assert "alignment/angle/transformer.h.0.attn.c_attn" in keys
    assert "alignment/cosine/transformer.h.1" in keys
    assert 0 < keys["alignment/angle/transformer.h.0.mlp.c_fc"] < 180
    history = [e for e in trainer.state.log_history if "alignment/angle_mean" in e]
    assert [e["step"] for e in history] == [2, 4]


@needs_hf
def test_hf_without_a_trainer_keeps_the_log_history_and_warns():
    model = Net()
    rule = fa.DFA(seed=0)
    rule.apply(model)
    callback = hf.AlignmentCallback(rule, _data(8), F.cross_entropy, every_n_steps=1)
    state = transformers.TrainerState()
    state.global_step = 1
    with pytest.warns(UserWarning, match=r"no trainer to log through.*attach\(trainer\)"):
        callback.on_step_end(None, state, transformers.TrainerControl(), model=model)
    assert state.log_history[-1]["step"] == 1
    assert "alignment/angle/body.0" in state.log_history[-1]
    with pytest.raises(TypeError, match=r"attach needs a transformers\.Trainer"):
        callback.attach(object())
    state.global_step = 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        callback.on_step_end(None, state, transformers.TrainerControl(), model=model)


# --- Lightning ------------------------------------------------------------------------------------


def _lightning_train(tmp_path, callbacks, accumulate=1):
    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = Net()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    class Recorder(pl.loggers.Logger):  # stands for TensorBoard, CSV, ...
        def __init__(self) -> None:
            super().__init__()
            self.logged: list[tuple[int, dict]] = []

        name, version = "recorder", 0

        @property
        def experiment(self):
            return None

        def log_metrics(self, metrics, step=None):
            self.logged.append((step, dict(metrics)))

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    torch.manual_seed(0)
    module = Module()
    rule = fa.DFA(seed=0)
    rule.apply(module.model)  # the inner model, the one training_step calls
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(*_data()), batch_size=4, shuffle=True
    )
    recorder = Recorder()
    trainer = pl.Trainer(
        max_steps=4,
        accelerator="cpu",
        devices=1,
        logger=recorder,
        callbacks=[make(rule) for make in callbacks],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accumulate_grad_batches=accumulate,
        default_root_dir=str(tmp_path),
        log_every_n_steps=1,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
        trainer.fit(module, loader)
    return module, trainer, recorder, torch.rand(4)


@needs_pl
def test_lightning_logs_alignment_and_trains_exactly_as_without(tmp_path):
    probe = tuple(t[:8] for t in _data())
    callbacks = []

    def make(rule):
        callbacks.append(pl_cb.AlignmentCallback(rule, probe, F.cross_entropy, every_n_steps=2))
        return callbacks[-1]

    base, _, _, base_draw = _lightning_train(tmp_path / "a", [])
    module, _, recorder, draw = _lightning_train(tmp_path / "b", [make])
    assert torch.equal(draw, base_draw)
    for (name, p), q in zip(module.named_parameters(), base.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert [step for step, _ in callbacks[0].history] == [2, 4]
    logged = [(step, m) for step, m in recorder.logged if "alignment/angle_mean" in m]
    assert [step for step, _ in logged] == [2, 4]
    assert {"alignment/angle/body.0", "alignment/cosine/body.2"} <= set(logged[0][1])


@needs_pl
def test_lightning_measures_once_per_optimizer_step_under_accumulation(tmp_path):
    probe = _data(8)
    callbacks = []

    def make(rule):
        callbacks.append(pl_cb.AlignmentCallback(rule, probe, F.cross_entropy, every_n_steps=1))
        return callbacks[-1]

    _lightning_train(tmp_path, [make], accumulate=2)
    assert [step for step, _ in callbacks[0].history] == [1, 2, 3, 4]
