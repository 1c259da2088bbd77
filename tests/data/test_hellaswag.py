"""HellaSwag from a local rowanz-format copy: labelled val file is the test split."""

from __future__ import annotations

import json

import pytest

from segloss.data import load_examples

ENDINGS = ["gets on the horse.", "eats a cake.", "jumps into the lake.", "starts singing."]


def _record(i, label=2):
    return {
        "ind": i,
        "activity_label": "Riding",
        "ctx_a": "A man",
        "ctx_b": "he",
        "ctx": f"A man walks up {i}. he",
        "split": "val",
        "split_type": "indomain",
        "endings": ENDINGS,
        "source_id": "x",
        "label": label,
    }


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_val_file_is_the_test_split(tmp_path):
    _write(tmp_path / "hellaswag_val.jsonl", [_record(7), _record(8, label="0")])
    a, b = load_examples("hellaswag", "test", tmp_path)
    assert a.prompt == (
        "Question: A man walks up 7. he\nA. gets on the horse.\nB. eats a cake.\n"
        "C. jumps into the lake.\nD. starts singing.\nAnswer: "
    )
    assert (a.answer, a.label, a.choices, a.id) == ("C", 2, tuple(ENDINGS), "hellaswag-test-7")
    assert (b.answer, b.label) == ("A", 0)  # the hub stores labels as strings


def test_validation_is_carved_from_train_even_when_a_val_file_exists(tmp_path):
    _write(tmp_path / "hellaswag_train.jsonl", [_record(i) for i in range(20)])
    _write(tmp_path / "hellaswag_val.jsonl", [_record(100)])
    train = load_examples("hellaswag", "train", tmp_path)
    val = load_examples("hellaswag", "validation", tmp_path)
    assert (len(train), len(val)) == (18, 2)
    assert {e.id.split("-")[-1] for e in val} <= {str(i) for i in range(20)}


def test_unlabelled_and_bad_records_are_errors(tmp_path):
    _write(tmp_path / "hellaswag_val.jsonl", [{**_record(1), "label": ""}])
    with pytest.raises(ValueError, match="'label' is empty"):
        load_examples("hellaswag", "test", tmp_path)
    _write(tmp_path / "hellaswag_val.jsonl", [{**_record(1), "endings": ENDINGS[:3]}])
    with pytest.raises(ValueError, match="'endings' must be a list of 4"):
        load_examples("hellaswag", "test", tmp_path)
    rec = _record(1)
    del rec["ctx"]
    _write(tmp_path / "hellaswag_val.jsonl", [rec])
    with pytest.raises(ValueError, match=r"hellaswag: .* missing field 'ctx'"):
        load_examples("hellaswag", "test", tmp_path)
