"""MathQA: program steps wrapped as formulas, numeric correct option, skips counted, absent train split."""

from __future__ import annotations

import json

import pytest

from segloss.data import get_builder, load_examples
from segloss.data.mathqa import mathqa_answer, numeric_value, parse_options

RECORD = {
    "Problem": "a multiple choice test consists of 4 questions , and each question has 5 answer choices .",
    "Rationale": "...",
    "options": "a ) 24 , b ) 120 , c ) 625 , d ) 720 , e ) 1024",
    "correct": "c",
    "annotated_formula": "power(5, 4)",
    "linear_formula": "divide(n0,n1)|multiply(#0,const_100)|",
    "category": "general",
}


def _write_array(path, records):
    path.write_text(json.dumps(records, indent=4))  # pretty-printed like the authors' files


def test_options_are_parsed_from_both_layouts():
    assert parse_options(RECORD["options"]) == {"a": "24", "b": "120", "c": "625", "d": "720", "e": "1024"}
    assert parse_options("['a ) 289 cm', 'b ) 160 cm']") == {"a": "289 cm", "b": "160 cm"}
    assert parse_options("a ) rs . 1 , 200 , b ) 3") == {"a": "rs . 1 , 200", "b": "3"}


@pytest.mark.parametrize(
    "text, value",
    [
        ("625", "625"),
        ("$ 1600", "1600"),
        ("12.5 %", "12.5"),
        ("rs . 1 , 200", "1200"),
        ("- 4", "-4"),
        (".5", ".5"),
        ("1 / 2", None),
        ("3 : 4", None),
        ("34 √ 3 cm 2", None),
        ("none of these", None),
    ],
)
def test_numeric_value_of_an_option(text, value):
    assert numeric_value(text) == value


def test_answer_wraps_each_step():
    assert mathqa_answer(RECORD["linear_formula"], "625") == "<<divide(n0,n1)>> <<multiply(#0,const_100)>> #### 625"
    assert mathqa_answer("", "3") == "#### 3"


def test_examples_and_skipped_non_numeric_records(tmp_path):
    fraction = {**RECORD, "options": "a ) 1 / 2 , b ) 3 / 4", "correct": "b"}
    _write_array(tmp_path / "dev.json", [RECORD, fraction, RECORD])
    builder = get_builder("mathqa")
    examples = builder.load("dev", tmp_path)
    assert len(examples) == 2 and builder.skipped == 1
    assert dict(builder.skip_reasons) == {"correct option is not numeric": 1}
    assert examples[0].prompt == f"Question: {RECORD['Problem']}\nAnswer: "
    assert examples[0].answer == "<<divide(n0,n1)>> <<multiply(#0,const_100)>> #### 625"
    assert examples[1].id == "mathqa-validation-2"


def test_all_skipped_split_is_empty_and_says_why(tmp_path):
    _write_array(tmp_path / "test.json", [{**RECORD, "correct": "z"}])
    with pytest.raises(ValueError, match=r"is empty.*1 records skipped"):
        load_examples("mathqa", "test", tmp_path)


def test_missing_train_split_points_to_dev(tmp_path):
    _write_array(tmp_path / "dev.json", [RECORD])
    with pytest.raises(FileNotFoundError, match="only dev and test exist locally: use --split dev"):
        load_examples("mathqa", "train", tmp_path)


def test_missing_field_names_mathqa_and_the_field(tmp_path):
    _write_array(tmp_path / "test.json", [{k: v for k, v in RECORD.items() if k != "linear_formula"}])
    with pytest.raises(ValueError, match=r"mathqa: .*test\.json element 0 is missing field 'linear_formula'"):
        load_examples("mathqa", "test", tmp_path)
