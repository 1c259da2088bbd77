"""The raw files in ../shared/data (skipped when absent): exact strings of known records and split counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from segloss.data import get_builder

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _load(name: str, split: str):
    if not (SHARED / name).is_dir():
        pytest.skip(f"{SHARED / name} not present")
    builder = get_builder(name)
    return builder.load(split, SHARED / name), builder


def test_gsm8k_first_train_record_is_natalia():
    train, _ = _load("gsm8k", "train")
    assert train[0].prompt == (
        "Question: Natalia sold clips to 48 of her friends in April, and then she sold half as "
        "many clips in May. How many clips did Natalia sell altogether in April and May?\n"
        "Answer: "
    )
    assert train[0].answer == "<<48/2=24>> <<48+24=72>> #### 72"
    validation, _ = _load("gsm8k", "validation")
    test, _ = _load("gsm8k", "test")
    assert (len(train), len(validation), len(test)) == (6726, 747, 1319)
    assert test[0].answer == "<<16-3-4=9>> <<9*2=18>> #### 18"


def test_mathqa_first_dev_record_and_skips():
    dev, builder = _load("mathqa", "dev")
    assert dev[0].prompt == (
        "Question: a multiple choice test consists of 4 questions , and each question has 5 "
        "answer choices . in how many r ways can the test be completed if every question is "
        "unanswered ?\nAnswer: "
    )
    assert dev[0].answer == "<<power(n1,n0)>> #### 625"
    assert (len(dev), builder.skipped) == (3917, 558)
    with pytest.raises(FileNotFoundError, match="--split dev"):
        _load("mathqa", "train")


def test_openbookqa_first_train_record():
    train, _ = _load("openbookqa", "train")
    ex = train[0]
    assert ex.prompt == (
        "Question: The sun is responsible for\nA. puppies learning new tricks\n"
        "B. children growing up and getting old\nC. flowers wilting in a vase\n"
        "D. plants sprouting, blooming and wilting\n"
        "Context: the sun is the source of energy for physical cycles on Earth\nAnswer: "
    )
    assert (ex.id, ex.answer, ex.label, len(train)) == ("7-980", "D", 3, 4957)


def test_hellaswag_first_test_record_when_a_copy_exists():
    test, _ = _load("hellaswag", "test")
    assert len(test) == 10042 and test[0].answer in "ABCD" and test[0].prompt.startswith("Question: ")
