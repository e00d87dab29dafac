"""Saving, resuming, exporting and reloading a model trained with a feedback-alignment rule.

Two kinds of checkpoint:

* **Resume checkpoints**: ``model.state_dict()`` of the converted model (plus the optimizer's),
  as in any PyTorch loop. It holds the rule's state (DFA's ``direct_feedback_matrix``, FA's
  ``weight_feedback``, ...), so training continues exactly where it stopped: the script checks
  that the resumed run's weights equal an uninterrupted run's, bit for bit.
* **Portable (plain) checkpoints**: ``fa.plain_state_dict(model)`` leaves out every key a rule
  added; the file loads with ``strict=True`` into the same architecture *without* the rule, for
  inference, fine-tuning with backprop, or publishing. A converted model also loads it strictly:
  feedback absent from the file is regenerated from the rule's seed (for fixed feedback nothing
  is lost: the script checks the next step equals the original's), and learned feedback
  (Kolen-Pollack) starts afresh with a ``fa.FeedbackResetWarning``.

The model is a plain MLP on scikit-learn's bundled digits (no download); any ``nn.Module`` works
the same way.

Run::

    python examples/checkpoint.py            # 300 steps per phase, a few seconds
    python examples/checkpoint.py --smoke    # 20 steps per phase
    python examples/checkpoint.py --out ckpt # keep the files (default: a temporary folder)
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import feedback_alignment as fa


def make_model() -> nn.Module:
    """The architecture, built the same way for training, resuming and the plain copy."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(),
                         nn.Linear(128, 10))  # fmt: skip


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    return x[:1500], y[:1500], x[1500:], y[1500:]


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, start: int, x, y) -> None:
    """``steps`` plain SGD steps on mini-batches chosen by the step number (so a resumed run sees
    the batches the uninterrupted one would)."""
    for step in range(start, start + steps):
        index = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[index]), y[index]).backward()
        opt.step()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return (model(x).argmax(1) == y).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="20 steps per phase")
    parser.add_argument("--steps", type=int, default=300, help="training steps per phase")
    parser.add_argument("--out", type=Path, help="folder for the checkpoint files")
    args = parser.parse_args()
    steps = 20 if args.smoke else args.steps
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="fa-checkpoint-"))
    out.mkdir(parents=True, exist_ok=True)
    x, y, x_test, y_test = digits()

    # 1. Train with DFA, save a resume checkpoint halfway.
    rule = fa.DFA(seed=0)
    model = rule.apply(make_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train(model, opt, steps, 0, x, y)
    resume_file = out / "resume.pt"
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": steps}, resume_file)
    train(model, opt, steps, steps, x, y)  # the uninterrupted run goes on
    print(f"DFA trained {2 * steps} steps: test accuracy {accuracy(model, x_test, y_test):.3f}")

    # 2. Resume in a "new process": same architecture, same rule, load model and optimizer.
    saved = torch.load(resume_file, weights_only=True)
    resumed = fa.DFA(seed=0).apply(make_model())
    resumed_opt = torch.optim.SGD(resumed.parameters(), lr=0.05, momentum=0.9)
    resumed.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["opt"])
    train(resumed, resumed_opt, steps, saved["step"], x, y)
    pairs = zip(model.parameters(), resumed.parameters(), strict=True)
    exact = all(torch.equal(a, b) for a, b in pairs)
    print(f"resumed from {resume_file.name}: weights equal to the uninterrupted run: {exact}")
    assert exact

    # 3. Export plain weights: strict-loadable into the model without any rule.
    plain_file = out / "weights.pt"
    torch.save(fa.plain_state_dict(model), plain_file)
    left_out = sorted(set(model.state_dict()) - set(fa.plain_state_dict(model)))
    plain = make_model()
    plain.load_state_dict(torch.load(plain_file, weights_only=True))  # strict
    print(f"{plain_file.name} leaves out {left_out}; the plain model scores "
          f"{accuracy(plain, x_test, y_test):.3f}")  # fmt: skip

    # 4. Load the plain weights into a converted model: the feedback comes from the seed.
    again = fa.DFA(seed=0).apply(make_model())
    again.load_state_dict(torch.load(plain_file, weights_only=True))  # strict
    batch = x[:64], y[:64]
    for net in (model, again):
        net.zero_grad()
        F.cross_entropy(net(batch[0]), batch[1]).backward()
    pairs = zip(model.parameters(), again.parameters(), strict=True)
    same = all(torch.equal(a.grad, b.grad) for a, b in pairs)
    print(f"DFA from {plain_file.name}: next-step gradients equal the original's: {same}")
    assert same

    # 5. Learned feedback: Kolen-Pollack's B is state a plain file does not carry.
    kp_rule = fa.KolenPollack(seed=0)
    kp = kp_rule.apply(make_model())
    kp_opt = torch.optim.SGD(kp.parameters(), lr=0.05, weight_decay=1e-3)
    train(kp, kp_opt, steps, 0, x, y)
    kp_plain = fa.plain_state_dict(kp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fa.FeedbackResetWarning)
        fa.KolenPollack(seed=0).apply(make_model()).load_state_dict(kp_plain)
    for warning in caught:
        print(f"KP from a plain checkpoint warns: {str(warning.message)[:90]}...")
    print(f"files written: {resume_file}, {plain_file}")


if __name__ == "__main__":
    main()
