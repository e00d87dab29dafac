"""Reference convolutional networks: a LeNet-style net and a CIFAR-style ResNet with BatchNorm.

Both are built from standard ``nn.Conv2d``/``nn.Linear``/``nn.BatchNorm2d`` modules, with every
nonlinearity a module of its own, so that any rule converts them as they are: layer-wise rules
swap the backward of each conv and linear layer, and direct feedback finds a point after each
hidden activation (automatic placement reads ``LeNet`` as an ``nn.Sequential``; in ``ResNet`` each
block's output activation is an attribute, hence a point). One model definition serves every rule.

References:
    LeCun, Bottou, Bengio, Haffner, "Gradient-based learning applied to document recognition",
    Proc. IEEE 1998 (LeNet-5: 6 and 16 5x5 maps, 120 and 84 hidden units).
    He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (ResNet-20 for
    CIFAR-10: 3 stages of ``n`` basic blocks, 16/32/64 channels, depth ``6n + 2``).
    Moskovitz, Litwin-Kumar, Abbott, "Feedback alignment in deep convolutional networks", 2018.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU}


def _activation(name: str) -> type[nn.Module]:
    if name not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {list(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


class LeNet(nn.Sequential):
    """``[conv 5x5 -> act -> maxpool 2] x 2 -> [linear -> act] x 2 -> linear``.

    28x28 inputs (MNIST, Fashion-MNIST) get padding 2 in the first conv so that, like 32x32 inputs
    (CIFAR-10) without padding, the second pooling leaves 5x5 maps.

    Args:
        in_channels: image channels (1 for Fashion-MNIST, 3 for CIFAR-10).
        num_classes: outputs.
        image_size: input height = width (28 or 32; others work, the flattened size is computed).
        channels: output channels of the two conv layers (LeNet-5: ``(6, 16)``).
        hidden: widths of the two hidden linear layers (LeNet-5: ``(120, 84)``).
        activation: ``"relu"``, ``"tanh"`` or ``"elu"``.
        batch_norm: a ``BatchNorm2d`` after each conv (before the activation).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        image_size: int = 28,
        channels: Sequence[int] = (6, 16),
        hidden: Sequence[int] = (120, 84),
        activation: str = "relu",
        batch_norm: bool = False,
    ) -> None:
        act = _activation(activation)
        if image_size < 16:
            raise ValueError(f"LeNet needs images of at least 16x16 pixels, got {image_size}")
        padding = 2 if image_size < 32 else 0
        layers: list[nn.Module] = []
        width = in_channels
        for i, out in enumerate(channels):
            layers.append(nn.Conv2d(width, out, 5, padding=padding if i == 0 else 0))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers += [act(), nn.MaxPool2d(2)]
            width = out
        size = image_size + 2 * padding
        for _ in channels:
            size = (size - 4) // 2
        if size < 1:
            raise ValueError(
                f"{len(channels)} conv stages leave nothing of {image_size}x{image_size}"
            )
        layers.append(nn.Flatten())
        features = width * size * size  # (C, H, W) flattened
        for out in hidden:
            layers += [nn.Linear(features, out), act()]
            features = out
        layers.append(nn.Linear(features, num_classes))
        super().__init__(*layers)


class BasicBlock(nn.Module):
    """``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``; a 1x1 conv + BN shortcut on shape change.

    (The ResNet paper's CIFAR nets use zero-padding "option A" shortcuts; a projection, "option B",
    keeps every path a standard layer that rules can convert.)
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))  # (N, C_out, H/s, W/s)
        return self.relu2(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet of depth ``6n + 2`` (ResNet-20: ``n = 3``) with BatchNorm.

    ``conv 3x3 (w) -> 3 stages of n blocks (w, 2w, 4w channels, stride 1, 2, 2) -> global average
    pool -> linear``.

    Args:
        depth: ``6n + 2`` (20, 32, 44, 56, ...); 8 is the smallest (one block per stage).
        in_channels: image channels.
        num_classes: outputs.
        width: channels of the first stage (16 in the paper).
    """

    def __init__(
        self, depth: int = 20, in_channels: int = 3, num_classes: int = 10, width: int = 16
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}"
            )
        blocks = (depth - 2) // 6
        self.conv = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages: list[nn.Module] = []
        channels = width
        for stage in range(3):
            out = width * 2**stage
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                stages.append(BasicBlock(channels, out, stride))
                channels = out
        self.blocks = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn(self.conv(x)))  # (N, w, H, W)
        h = self.blocks(h)  # (N, 4w, H/4, W/4)
        return self.fc(self.flatten(self.pool(h)))  # (N, classes)
