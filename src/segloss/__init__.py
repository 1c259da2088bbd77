"""segloss: fine-tune causal language models with semantic-segmentation losses."""

__version__ = "0.1.0"
