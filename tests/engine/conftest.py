"""Fixtures shared by the engine tests, and the helpers' folder on the import path: the tests live in one folder
per engine package (tests/engine/training/test_losses.py…), the helpers they share (data_helpers, quant_helpers,
sandbox_helpers) and fixtures/ stay here."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from threads, and on a busy 2-core machine thread contention slows them badly."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
