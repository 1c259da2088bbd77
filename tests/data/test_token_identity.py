"""TRL's tokenization of the built-in datasets gives the token ids and answer masks segloss's own tokenizer gave.

`segloss train` switched from segloss's whole-text tokenizer (offsets mapping, EOS appended as a token) to TRL's
`SFTTrainer` preparation of prompt/completion rows. fixtures/old_token_ids.json holds, for the first 256 training
examples of every built-in set (mathqa: its dev split, the only one in ../shared/data), a digest of each example's
(input_ids, answer mask) as the old `tokenize_examples` (main at 4fa2861) made them, at the max_length of the set's
config (so prompt truncation is covered: 249 of the gsm8k rows are truncated with the tiny tokenizer), plus the
indices it kept and its truncation count. Template ``plain``; for ``chat`` see docs/training.md.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from conftest import TOKENIZER_TEXTS
from helpers.real_model import smollm2_path, smollm2_tokenizer  # noqa: F401  (fixtures)

from segloss.data import load_examples, tokenize_examples
from segloss.models.tiny import train_tokenizer

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "old_token_ids.json").read_text())
SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
PATHS = {"arith": None, "gsm8k": SHARED / "gsm8k", "mathqa": SHARED / "mathqa", "openbookqa": SHARED / "openbookqa"}


def _digest(ids: list[int], mask: list[int]) -> str:
    return hashlib.sha256(json.dumps([ids, mask]).encode()).hexdigest()[:12]


@pytest.fixture(scope="module")
def tiny_tokenizer():
    return train_tokenizer(TOKENIZER_TEXTS, 300)  # the tokenizer of tests/conftest.py's tiny model


@pytest.mark.parametrize("tokenizer_name", ["tiny", "smollm2"])
@pytest.mark.parametrize("name", sorted(PATHS))
def test_trl_tokenization_reproduces_the_old_ids(name, tokenizer_name, request) -> None:
    path = PATHS[name]
    if path is not None and not path.is_dir():
        pytest.skip(f"{path} not present")
    tokenizer = request.getfixturevalue("tiny_tokenizer" if tokenizer_name == "tiny" else "smollm2_tokenizer")
    old = FIXTURE["sets"][f"{name}/{tokenizer_name}"]
    examples = load_examples(name, old["split"], path, limit=FIXTURE["n_examples"])
    data, stats = tokenize_examples(examples, tokenizer, old["max_length"])
    new = [_digest(row["input_ids"], row["completion_mask"]) for row in data]
    differing = [i for i, (a, b) in enumerate(zip(new, old["digests"], strict=True)) if a != b]
    assert not differing, f"{len(differing)} of {len(new)} examples differ from the old ids, first: {differing[:5]}"
    assert stats.kept_indices == old["kept"]
    assert stats.n_prompt_truncated == old["n_prompt_truncated"]
