"""Datasets: raw records → (prompt, answer) examples → tokenized features with answer masks.

See ``segloss.data.base`` for sources, splits, tokenization and padding; one module per dataset.
"""

from segloss.data import arith  # noqa: F401  (registers the builder)
from segloss.data.base import (
    DATASETS,
    MAX_NEW_TOKENS,
    DatasetBuilder,
    Example,
    get_builder,
    is_multiple_choice,
    load_examples,
)

__all__ = [
    "DATASETS",
    "MAX_NEW_TOKENS",
    "DatasetBuilder",
    "Example",
    "get_builder",
    "is_multiple_choice",
    "load_examples",
]
