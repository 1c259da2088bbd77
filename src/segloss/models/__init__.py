"""Model loading (folders, hub ids, GGUF files) and tiny models built locally (tests, the demo)."""

from segloss.models.tiny import build_tiny_llama, make_tiny_model_dir, train_sentencepiece_tokenizer, train_tokenizer

__all__ = ["build_tiny_llama", "make_tiny_model_dir", "train_sentencepiece_tokenizer", "train_tokenizer"]
