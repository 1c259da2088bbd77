"""Tiny models built locally (tests, the demo): no hub access needed."""

from segloss.models.tiny import build_tiny_llama, make_tiny_model_dir, train_tokenizer

__all__ = ["build_tiny_llama", "make_tiny_model_dir", "train_tokenizer"]
