import sys
from pathlib import Path

import pytest
import torch

from feedback_alignment.rules import direct

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _deterministic():
    """Every test starts from the same global RNG state and restores the default dtype after."""
    torch.manual_seed(1234)
    torch.set_default_dtype(torch.float32)
    direct._bottleneck_warned = False  # given once per process: each test may expect it
    yield
    torch.set_default_dtype(torch.float32)


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one torch thread (and do not spin on a shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def float64_one_thread():
    """Float64 by default and one torch thread for a test (the float64 reference checks), both
    restored after it."""
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)
