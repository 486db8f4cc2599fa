"""Fixtures shared by the engine tests."""
from __future__ import annotations

import pytest


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine thread contention slows them badly."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
