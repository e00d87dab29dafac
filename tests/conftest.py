import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _deterministic():
    """Every test starts from the same global RNG state and restores the default dtype after."""
    torch.manual_seed(1234)
    torch.set_default_dtype(torch.float32)
    yield
    torch.set_default_dtype(torch.float32)
