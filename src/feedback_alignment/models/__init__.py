"""Reference architectures. Models know nothing of learning rules: any rule converts them."""

from feedback_alignment.models.convnets import LeNet, ResNet
from feedback_alignment.models.mlp import MLP

__all__ = ["MLP", "LeNet", "ResNet"]
