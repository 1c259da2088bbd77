"""Shared fixtures. Nothing here downloads: the hub is switched off for the whole test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
from helpers.real_model import smollm2, smollm2_cached, smollm2_path, smollm2_tokenizer  # noqa: F401  (fixtures)

# `make test` runs the suite on pytest-xdist workers (one per CPU): each worker's torch gets its share of the CPUs, so
# that two workers on two cores do not run four busy threads.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, _CPUS // _WORKERS))

# Texts that cover the formats the datasets produce, so the tiny tokenizer knows every character it will meet.
TOKENIZER_TEXTS = [
    "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer: <<3+4=7>> #### 7",
    "Problem: a train travels 120 km in 2 hours , what is its speed ?\nAnswer: <<divide(n0,n1)>> #### 60",
    "Question: The sun is responsible for\nA. pups\nB. kids\nC. flowers\nD. plants\nContext: the sun\nAnswer: D",
    "0123456789 +-*/=<>()#.,:;?!$%'\" abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
] * 4


@pytest.fixture
def one_torch_thread():
    """torch on one intra-op thread for the test, restored after. The tiny models are far too small to gain from
    threads; on a shared 2-core machine the extra threads only add contention (a training step runs ~2× faster)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def generator() -> torch.Generator:
    """A seeded generator: every test that draws random tensors is reproducible."""
    return torch.Generator().manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny randomly initialised Llama + trained BPE tokenizer (no pad token), saved with save_pretrained."""
    from segloss.models import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"), TOKENIZER_TEXTS, vocab_size=300)
