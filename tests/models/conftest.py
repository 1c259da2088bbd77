"""A tiny GGUF file (the SmolLM2 fixtures are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.tiny_gguf import write_tiny_gguf


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny Llama as a float32 GGUF file (read by transformers' GGUF loader in a fraction of a second)."""
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("gguf") / "tiny.gguf")
