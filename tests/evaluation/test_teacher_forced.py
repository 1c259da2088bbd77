"""Teacher-forced accuracy: an oracle scores 1, one corrupted answer token costs exactly 1/n tokens and the exact
match, dropped examples are NaN, batching does not change the scores of a real (tiny) model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from segloss.data import Example
from segloss.evaluation.teacher_forced import TEACHER_FORCED_METRICS, teacher_forced_rows

EXAMPLES = [
    Example("a", "Question: Tom has 3 apples and buys 4 more.\nAnswer: ", "<<3+4=7>> #### 7"),
    Example("b", "Question: a train travels 120 km in 2 hours ?\nAnswer: ", "<<divide(n0,n1)>> #### 60"),
    Example("c", "Question: How many?\nAnswer: ", "#### 5"),
]


class Oracle:
    """Logits whose argmax at position t is the true token t + 1 (it reads the future); ``corrupt`` maps a true
    next-token id to the id it predicts instead."""

    def __init__(self, vocab_size: int, corrupt: dict[int, int] | None = None) -> None:
        self.vocab_size = vocab_size
        self.corrupt = corrupt or {}

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        following = torch.roll(input_ids, -1, dims=1)  # [B, T]
        following.apply_(lambda i: self.corrupt.get(i, i))
        return SimpleNamespace(logits=torch.nn.functional.one_hot(following, self.vocab_size).float())  # [B, T, V]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _answer_ids(tokenizer, answer: str) -> list[int]:
    return [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def test_oracle_scores_one(tokenizer):
    rows = teacher_forced_rows(Oracle(len(tokenizer)), tokenizer, EXAMPLES, batch_size=2)
    assert rows == [dict.fromkeys(TEACHER_FORCED_METRICS, 1.0)] * 3


def test_one_wrong_answer_token(tokenizer):
    # the final "5" of example c is predicted as "6": one of its n answer tokens is wrong and the answer with it
    ids = _answer_ids(tokenizer, "#### 5")
    last = tokenizer.convert_ids_to_tokens(ids[-2])
    assert "5" in last
    wrong = tokenizer.convert_tokens_to_ids(last.replace("5", "6"))
    assert wrong != tokenizer.unk_token_id
    rows = teacher_forced_rows(Oracle(len(tokenizer), {ids[-2]: wrong}), tokenizer, EXAMPLES[2:])
    assert rows[0]["teacher_forced_token_accuracy"] == pytest.approx((len(ids) - 1) / len(ids))
    assert rows[0]["teacher_forced_exact_match"] == 0.0
    assert rows[0]["teacher_forced_exact_match_authors"] == 0.0


def test_dropped_example_is_nan(tokenizer):
    short = min(len(_answer_ids(tokenizer, e.answer)) for e in EXAMPLES)
    longest = max(len(_answer_ids(tokenizer, e.answer)) for e in EXAMPLES)
    assert short < longest
    rows = teacher_forced_rows(Oracle(len(tokenizer)), tokenizer, EXAMPLES, max_length=short + 8)
    kept = [not math.isnan(r["teacher_forced_token_accuracy"]) for r in rows]
    expected = [len(_answer_ids(tokenizer, e.answer)) + 2 <= short + 8 for e in EXAMPLES]  # + BOS + 1 prompt token
    assert kept == expected and not all(kept) and any(kept)
    assert all(r["teacher_forced_exact_match"] == 1.0 for r, k in zip(rows, kept, strict=True) if k)


def test_batching_does_not_change_a_real_model(tiny_model_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    one = teacher_forced_rows(model, tokenizer, EXAMPLES, batch_size=1)
    three = teacher_forced_rows(model, tokenizer, EXAMPLES, batch_size=3)
    for a, b in zip(one, three, strict=True):
        assert a == pytest.approx(b)
        assert 0.0 <= a["teacher_forced_token_accuracy"] <= 1.0


def test_bad_batch_size(tokenizer):
    with pytest.raises(ValueError, match="batch_size"):
        teacher_forced_rows(Oracle(len(tokenizer)), tokenizer, EXAMPLES, batch_size=0)


def test_eval_reports_teacher_forced_only_when_asked(tmp_path, tiny_model_dir):
    import json

    from segloss.data import load_examples
    from segloss.evaluation import EvalConfig, evaluate

    options = {"n_train": 4, "n_validation": 2, "n_test": 3, "max_steps": 2}
    examples = load_examples("arith", "test", **options)
    answers = {ex.prompt.rstrip(" "): ex.answer for ex in examples}  # generation prompts end at "Answer:"

    def copy(prompts, _):
        return [answers[p] for p in prompts]

    common = dict(model=str(tiny_model_dir), dataset="arith", dataset_options=options, batch_size=2)
    plain = evaluate(EvalConfig(**common, output_dir=str(tmp_path / "plain")), generate_fn=copy)["metrics"]
    assert not set(TEACHER_FORCED_METRICS) & set(plain)
    forced = evaluate(EvalConfig(**common, output_dir=str(tmp_path / "tf"), teacher_forced=True), generate_fn=copy)
    for key in TEACHER_FORCED_METRICS:
        assert forced["metrics"][key]["n"] == 3
    assert forced["metrics"]["exact_match"]["mean"] == 1.0  # generation (copied) and teacher forcing are separate
    rows = [json.loads(line) for line in (tmp_path / "tf" / "predictions.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["metrics"]["teacher_forced_token_accuracy"] <= 1.0 for r in rows)
