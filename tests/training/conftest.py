"""Fixtures of the training tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    # The tiny models are far too small to gain from intra-op threads; on a shared 2-core machine the extra
    # threads only add contention (a training step runs ~2× faster with one).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
