"""Datasets: raw records → (prompt, answer) examples → TRL prompt/completion rows, tokenized by TRL.

See ``segloss.data.base`` for sources, splits, tokenization and padding; one module per dataset.
"""

from segloss.data import arith, custom, gsm8k, hellaswag, mathqa, openbookqa  # noqa: F401  (register the builders)
from segloss.data.base import (
    DATASETS,
    MAX_NEW_TOKENS,
    DatasetBuilder,
    Example,
    TokenizeStats,
    builder_class,
    encode_prompts,
    get_builder,
    is_multiple_choice,
    load_examples,
    pad_token_id,
    stop_strings,
    tokenize_examples,
)
from segloss.data.custom import UserDataBuilder, is_user_data

__all__ = [
    "DATASETS",
    "MAX_NEW_TOKENS",
    "DatasetBuilder",
    "Example",
    "TokenizeStats",
    "UserDataBuilder",
    "builder_class",
    "encode_prompts",
    "get_builder",
    "is_multiple_choice",
    "is_user_data",
    "load_examples",
    "pad_token_id",
    "stop_strings",
    "tokenize_examples",
]
