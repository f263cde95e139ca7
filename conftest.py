"""pytest setup shared by the tests (tests/) and the doctests of geora, baselines, analysis."""
from __future__ import annotations

import pytest
import torch

from geora import config

config.register()   # configs composed by the tests resolve as run.py's do


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices run fastest on one thread; two threads on a busy 2-core machine were
    10-50x slower (OpenMP workers spin-waiting for a core)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
