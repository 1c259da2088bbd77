"""OpenBookQA (additional config): nested raw layout and flattened hub layout give the same example."""

from __future__ import annotations

import json

import pytest

from segloss.data import load_examples

TEXTS = ["puppies learning new tricks", "children growing up", "flowers wilting in a vase", "plants sprouting"]
CHOICES = [{"text": t, "label": lab} for t, lab in zip(TEXTS, "ABCD", strict=True)]
RAW = {
    "id": "7-980",
    "question": {"stem": "The sun is responsible for", "choices": CHOICES},
    "fact1": "the sun is the source of energy",
    "humanScore": "1.00",
    "answerKey": "D",
}
HUB = {
    "id": "7-980",
    "question_stem": "The sun is responsible for",
    "choices": {"text": TEXTS, "label": list("ABCD")},
    "fact1": "the sun is the source of energy",
    "answerKey": "D",
}
PROMPT = (
    "Question: The sun is responsible for\nA. puppies learning new tricks\nB. children growing up\n"
    "C. flowers wilting in a vase\nD. plants sprouting\nContext: the sun is the source of energy\nAnswer: "
)


def _write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_raw_layout_under_additional(tmp_path):
    _write(tmp_path / "Additional" / "test_complete.jsonl", [RAW])
    _write(tmp_path / "Main" / "test.jsonl", [{"id": "x"}])  # must not be picked
    (ex,) = load_examples("openbookqa", "test", tmp_path)
    assert (ex.id, ex.prompt, ex.answer, ex.choices, ex.label) == ("7-980", PROMPT, "D", tuple(TEXTS), 3)


def test_hub_layout_and_dev_alias(tmp_path):
    _write(tmp_path / "validation.jsonl", [HUB])
    (ex,) = load_examples("openbookqa", "dev", tmp_path)
    assert (ex.prompt, ex.answer, ex.label) == (PROMPT, "D", 3)


def test_main_config_without_fact1_is_rejected(tmp_path):
    _write(tmp_path / "train.jsonl", [{k: v for k, v in RAW.items() if k != "fact1"}])
    with pytest.raises(ValueError, match=r"openbookqa: .* missing field 'fact1'"):
        load_examples("openbookqa", "train", tmp_path)


def test_answer_key_must_be_a_choice_label(tmp_path):
    _write(tmp_path / "test.jsonl", [{**HUB, "answerKey": "E"}])
    with pytest.raises(ValueError, match="answerKey 'E'"):
        load_examples("openbookqa", "test", tmp_path)
