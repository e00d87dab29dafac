"""Your own CNN, trained with Direct Feedback Alignment and with Feedback Alignment, beside BP.

The network below is a plain ``nn.Module`` written for this script; nothing in it knows about
feedback alignment. One line per rule prepares it:

* ``fa.DFA().apply(model)`` places a feedback point after each hidden activation (the ``Tanh``
  modules) and hands every point a fixed random projection ``B_l e`` of the output error;
* ``fa.FA().apply(model)`` swaps ``W^T`` for a fixed random ``B`` in the backward pass of each
  convolution and linear layer.

Training is the same plain PyTorch loop for all three. After training the script prints each
rule's test accuracy and, per layer, the angle between the rule's weight update and BP's on a
held-out batch (``fa.alignment``; below 90 degrees the rule descends the loss), and for FA the
angle between each layer's ``B`` and ``W^T`` (``fa.weight_alignment``).

What to expect (measured 2026-12-05, default run, seed 0): BP 91.0 %, DFA 87.1 %, FA 87.2 % test
accuracy on Fashion-MNIST. DFA aligns its fully connected hidden layer (30 degrees) but leaves the
convolutions at or beyond 90 degrees (99-112), as Launay et al. (2020) found that DFA does not
train convolutions; FA's output layer turns its ``W`` towards its ``B`` (41 degrees) while the other
layers stay near 90. With ``--data digits --epochs 15``: BP 97.8 %, DFA 93.9 %, FA 95.8 %.

Data: Fashion-MNIST (28x28) when it is in the data cache (``feedback-alignment data fetch
fashion-mnist``), else scikit-learn's bundled digits (8x8), so the script runs offline.

Run::

    python examples/own_cnn.py                 # 3 epochs per rule (4 min of CPU on 1 core)
    python examples/own_cnn.py --smoke         # a tiny run, seconds
    python examples/own_cnn.py --data digits --epochs 15
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

import feedback_alignment as fa
from feedback_alignment import data


class SmallCNN(nn.Module):
    """Two 3x3 convolutions with max pooling, then two linear layers."""

    def __init__(self, channels: int, size: int, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.Tanh(),
            nn.MaxPool2d(2),  # (B, 16, size/2, size/2)
            nn.Conv2d(16, 32, 3, padding=1),
            nn.Tanh(),
            nn.MaxPool2d(2),  # (B, 32, size/4, size/4)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * (size // 4) ** 2, 128),
            nn.Tanh(),
            nn.Linear(128, classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


RULES = {"BP": fa.BP, "DFA": fa.DFA, "FA": fa.FA}


def load(name: str, smoke: bool) -> tuple[str, data.ImageData]:
    """Fashion-MNIST if asked for or cached (``auto``), else digits; standardised pixels."""
    if name == "auto":
        name = "fashion-mnist" if data.is_cached("fashion-mnist") else "digits"
    images = data.load(name)
    if smoke:  # a slice of each split, enough to see every code path run
        images = data.ImageData(
            images.x_train[:768], images.y_train[:768], images.x_test[:256], images.y_test[:256],
            images.classes,
        )  # fmt: skip
    mean, std = images.x_train.mean(), images.x_train.std()
    return name, data.ImageData(
        (images.x_train - mean) / std, images.y_train,
        (images.x_test - mean) / std, images.y_test, images.classes,
    )  # fmt: skip


def train(rule_name: str, images: data.ImageData, epochs: int, seed: int) -> dict:
    torch.manual_seed(seed)
    _, channels, size, _ = images.x_train.shape
    model = SmallCNN(channels, size, images.num_classes)
    rule = RULES[rule_name](seed=seed) if rule_name != "BP" else fa.BP()
    rule.apply(model)  # the model stays an ordinary nn.Module
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)  # after apply (KP would need it)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(images.x_train), generator=generator).split(64):
            loss = F.cross_entropy(model(images.x_train[index]), images.y_train[index])
            optimizer.zero_grad()
            loss.backward()  # .grad holds the rule's update
            optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        accuracy = (model(images.x_test).argmax(1) == images.y_test).float().mean().item()
    probe = (images.x_test[:256], images.y_test[:256])
    report = fa.alignment(model, rule, probe, F.cross_entropy)  # no side effects on the model
    weights = fa.weight_alignment(model, rule) if rule_name == "FA" else {}
    return {
        "rule": rule_name,
        "accuracy": 100 * accuracy,
        "seconds": seconds,
        "angles": report.update_angle,
        "top": set(report.true_gradient),
        "weight_angles": {k: v.angle for k, v in weights.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny run (seconds)")
    parser.add_argument("--epochs", type=int, default=None, help="default 3 (smoke: 1)")
    parser.add_argument(
        "--data", choices=["auto", "fashion-mnist", "digits"], default="auto",
        help="auto: Fashion-MNIST if cached, else digits",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (1 if args.smoke else 3)
    if epochs < 1 or args.threads < 1:
        parser.error("--epochs and --threads must be >= 1")
    torch.set_num_threads(args.threads)

    name, images = load(args.data, args.smoke)
    print(f"{name}: {len(images.x_train)} train / {len(images.x_test)} test images "
          f"{tuple(images.x_train.shape[1:])}, {epochs} epoch(s) per rule")  # fmt: skip
    results = [train(rule, images, epochs, args.seed) for rule in RULES]

    layers = [k for k in results[0]["angles"] if k not in results[0]["top"]]
    print("\nupdate angle vs BP on a test batch, degrees (< 90: the rule descends the loss)")
    print(
        f"{'rule':<5} {'test acc %':>10} {'train s':>8}  " + "  ".join(f"{k:>12}" for k in layers)
    )
    for r in results:
        angles = "  ".join(f"{_deg(r['angles'].get(k)):>12}" for k in layers)
        print(f"{r['rule']:<5} {r['accuracy']:>10.1f} {r['seconds']:>8.1f}  {angles}")
    fa_result = next(r for r in results if r["rule"] == "FA")
    print("\nFA: angle between each layer's feedback B and W^T, degrees (90 at the start)")
    for layer, angle in fa_result["weight_angles"].items():
        print(f"  {layer:<14} {angle:6.1f}")


def _deg(angle: float | None) -> str:
    return "-" if angle is None or math.isnan(angle) else f"{angle:.1f}"


if __name__ == "__main__":
    main()
