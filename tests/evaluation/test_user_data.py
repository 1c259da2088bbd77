"""Scoring the user's own data: completion exact match, --answer_pattern, formula metrics, evaluate() end to end."""

from __future__ import annotations

import json
import math

import pytest

from segloss.data import Example
from segloss.evaluation import EvalConfig, evaluate
from segloss.evaluation.user_data import UserDataScorer, extract_answer

ROWS = [
    {"prompt": "Capital of France? ", "completion": "Paris"},
    {"prompt": "Capital of Italy? ", "completion": "Rome"},
    {"prompt": "Capital of Spain? ", "completion": "Madrid"},
]


def test_default_is_exact_match_of_the_stripped_completion() -> None:
    scorer = UserDataScorer.for_examples([Example("a", "q", "Paris")], None)
    assert scorer.score(" Paris\n", "Paris") == {"exact_match": 1.0}  # surrounding whitespace does not count
    assert scorer.score("Paris, France", "Paris")["exact_match"] == 0.0
    assert scorer.score("paris", "Paris")["exact_match"] == 0.0  # exact: case counts


def test_answer_pattern_extracts_and_compares_numbers_numerically() -> None:
    examples = [Example("a", "q", "so the total is #### 1,000"), Example("b", "q", "#### Rome")]
    scorer = UserDataScorer.for_examples(examples, r"#### (.+)")
    assert scorer.score("I think #### 1000.0", examples[0].answer)["exact_match"] == 1.0
    assert scorer.score("#### $1,000", examples[0].answer)["exact_match"] == 1.0
    assert scorer.score("#### 999", examples[0].answer)["exact_match"] == 0.0
    assert scorer.score("no marker at all", examples[0].answer)["exact_match"] == 0.0
    assert scorer.score("#### Rome", examples[1].answer)["exact_match"] == 1.0
    assert extract_answer("x = 42;", __import__("re").compile(r"\d+")) == "42"  # no group: the whole match


def test_a_pattern_that_misses_a_reference_is_an_error_naming_the_row() -> None:
    examples = [Example("a", "q", "#### 4"), Example("row-7", "q", "four")]
    with pytest.raises(ValueError, match=r"answer_pattern: .* 1 of 2 rows \(first: row-7: 'four'\)"):
        UserDataScorer.for_examples(examples, r"#### (\d+)")
    with pytest.raises(ValueError, match="answer_pattern: '#### \\(' is not a valid regular expression"):
        EvalConfig(model="m", dataset="arith", answer_pattern="#### (")


def test_formula_rows_add_the_formula_metrics() -> None:
    examples = [Example("a", "q", "<<2+3=5>> <<5*2=10>> #### 10")]
    scorer = UserDataScorer.for_examples(examples, r"#### (\S+)")
    scores = scorer.score("<<2+3=5>> #### 10", examples[0].answer)
    assert scores["exact_match"] == 1.0 and scores["iou"] == 0.5 and scores["missing_steps"] == 0.5
    assert not any(k.startswith("exact_match_") for k in scores)
    assert not UserDataScorer.for_examples([Example("a", "q", "Paris")], None).formulas


def test_evaluate_a_jsonl_file_with_a_fake_generator(tmp_path) -> None:
    data = tmp_path / "capitals.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    answers = {"Capital of France?": "Paris", "Capital of Italy?": "Roma", "Capital of Spain?": " Madrid"}
    config = EvalConfig(model="unused", dataset=str(data), output_dir=str(tmp_path / "out"))
    result = evaluate(config, generate_fn=lambda prompts, n: [answers[p] for p in prompts])
    assert set(result["metrics"]) == {"exact_match"}
    assert math.isclose(result["metrics"]["exact_match"]["mean"], 2 / 3)
    assert result["stop_strings"] == [] and result["max_new_tokens"] == 256
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [r["parsed_answer"] for r in rows] == ["Paris", "Roma", "Madrid"]


def test_answer_pattern_is_only_for_your_own_data(tmp_path) -> None:
    config = EvalConfig(
        model="unused", dataset="arith", dataset_options={"n_test": 2}, answer_pattern="x", output_dir=str(tmp_path)
    )
    with pytest.raises(ValueError, match="answer_pattern: only for your own data; arith"):
        evaluate(config, generate_fn=lambda prompts, n: list(prompts))
