"""MathQA: program steps wrapped as formulas, numeric correct option, skips counted, absent train split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segloss.data import get_builder, load_examples
from segloss.data.mathqa import authors_answer, authors_value, mathqa_answer, numeric_value, parse_options

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mathqa"

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


# ------------------------------------------------------------------------------ authors_preprocessing (fidelity)
NO_TRAILING_PIPE = {**RECORD, "linear_formula": "divide(n0,n1)|multiply(#0,const_100)"}


def test_authors_value_splits_at_every_comma_and_writes_a_float():
    assert authors_value(RECORD["options"], "c") == "625.0"
    assert authors_value("a ) $ 1600 , b ) 12.5 %", "b") == "12.5"
    # "1 , 200" is split too: option b becomes the "200" of option a
    assert authors_value("a ) rs . 1 , 200 , b ) 3 , c ) 5", "b") == "200.0"
    assert authors_value("a ) - 4 , b ) 4", "a") is None  # "- 4" is no float for them
    assert authors_value("a ) 1 / 2 , b ) 3", "a") is None
    assert authors_value("a ) 1 , b ) 2", "e") is None


def test_authors_answer_drops_the_last_step_without_a_trailing_pipe():
    assert authors_answer(RECORD["linear_formula"], "625.0") == (
        "<<divide(n0,n1)>> <<multiply(#0,const_100)>> #### 625.0"
    )
    assert authors_answer(NO_TRAILING_PIPE["linear_formula"], "625.0") == "<<divide(n0,n1)>> #### 625.0"
    assert authors_answer("add(n0,n1)", "3.0") == "#### 3.0"  # a one-step program loses its only step


def test_authors_preprocessing_option_changes_answers_and_kept_records(tmp_path):
    negative = {**RECORD, "options": "a ) - 4 , b ) 4", "correct": "a"}
    comma = {**RECORD, "options": "a ) rs . 1 , 200 , b ) 3 , c ) 5", "correct": "b"}
    _write_array(tmp_path / "test.json", [NO_TRAILING_PIPE, negative, comma])
    ours = get_builder("mathqa")
    assert [e.answer for e in ours.load("test", tmp_path)] == [
        "<<divide(n0,n1)>> <<multiply(#0,const_100)>> #### 625",
        "<<divide(n0,n1)>> <<multiply(#0,const_100)>> #### -4",
        "<<divide(n0,n1)>> <<multiply(#0,const_100)>> #### 3",
    ]
    authors = get_builder("mathqa", authors_preprocessing=True)
    examples = authors.load("test", tmp_path)
    assert [(e.id, e.answer) for e in examples] == [
        ("mathqa-test-0", "<<divide(n0,n1)>> #### 625.0"),
        ("mathqa-test-2", "<<divide(n0,n1)>> <<multiply(#0,const_100)>> #### 200.0"),
    ]
    assert dict(authors.skip_reasons) == {"authors' preprocessing: correct option is not a float": 1}
    assert examples[0].prompt == ours.load("test", tmp_path)[0].prompt


def test_unknown_option_is_rejected():
    with pytest.raises(ValueError, match="authors_preprocessing"):
        get_builder("mathqa", authors_preprocesing=True)


def test_authors_preprocessing_on_the_shared_test_file():
    if not (SHARED / "test.json").is_file():
        pytest.skip(f"{SHARED} not present")
    ours = {e.id: e for e in load_examples("mathqa", "test", SHARED)}
    authors = {e.id: e for e in load_examples("mathqa", "test", SHARED, authors_preprocessing=True)}
    assert (len(ours), len(authors), len(ours.keys() & authors.keys())) == (2664, 2655, 2648)
    both = sorted(ours.keys() & authors.keys())
    shorter = [i for i in both if authors[i].answer.count("<<") < ours[i].answer.count("<<")]
    assert len(shorter) == 615  # a step dropped: no trailing "|"
    assert sum("<<" not in authors[i].answer for i in shorter) == 44  # left with no formula at all
    values = [(ours[i].answer.split("#### ")[1], authors[i].answer.split("#### ")[1]) for i in both]
    assert sum(abs(float(o) - float(a)) > 1e-9 for o, a in values) == 52  # comma numbers in the options
