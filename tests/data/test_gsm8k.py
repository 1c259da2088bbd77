"""GSM8K: formulas extracted from the solution, seeded validation split without leakage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from segloss.data import get_builder, load_examples
from segloss.data.gsm8k import authors_answer, gsm8k_answer

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gsm8k"

NATALIA = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
    "May. How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
    "altogether in April and May.\n#### 72",
}


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_answer_is_the_formulas_then_the_final_number():
    assert gsm8k_answer(NATALIA["answer"]) == "<<48/2=24>> <<48+24=72>> #### 72"
    assert gsm8k_answer("She has 5 left.\n#### 5") == "#### 5"
    assert gsm8k_answer("<<1000*2=2000>>2,000 in all\n#### 2,000") == "<<1000*2=2000>> #### 2000"
    assert gsm8k_answer("no final line") is None


def test_examples_from_a_directory(tmp_path):
    _write(tmp_path / "test.jsonl", [NATALIA, {"question": "Q2 ", "answer": "x\n#### 3"}])
    examples = load_examples("gsm8k", "test", tmp_path)
    assert examples[0].prompt == f"Question: {NATALIA['question']}\nAnswer: "
    assert examples[0].answer == "<<48/2=24>> <<48+24=72>> #### 72"
    assert (examples[1].prompt, examples[1].answer, examples[1].id) == (
        "Question: Q2\nAnswer: ",
        "#### 3",
        "gsm8k-test-1",
    )


def test_records_without_a_final_are_skipped_and_counted(tmp_path):
    _write(tmp_path / "test.jsonl", [NATALIA, {"question": "q", "answer": "no final"}])
    builder = get_builder("gsm8k")
    assert len(builder.load("test", tmp_path)) == 1
    assert builder.skipped == 1 and dict(builder.skip_reasons) == {"no '#### final' line in the answer": 1}


def test_validation_is_a_seeded_tenth_of_train_and_disjoint_from_train(tmp_path):
    _write(tmp_path / "train.jsonl", [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(50)])
    train = load_examples("gsm8k", "train", tmp_path)
    val = load_examples("gsm8k", "validation", tmp_path)
    assert (len(train), len(val)) == (45, 5)
    assert {e.prompt for e in train}.isdisjoint({e.prompt for e in val})
    assert val == load_examples("gsm8k", "dev", tmp_path)  # same seed → same split
    assert val != load_examples("gsm8k", "validation", tmp_path, seed=1)


def test_an_existing_validation_file_is_used_as_is(tmp_path):
    _write(tmp_path / "train.jsonl", [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(10)])
    _write(tmp_path / "validation.jsonl", [NATALIA])
    assert len(load_examples("gsm8k", "train", tmp_path)) == 10
    assert [e.answer for e in load_examples("gsm8k", "validation", tmp_path)] == ["<<48/2=24>> <<48+24=72>> #### 72"]


def test_a_file_path_is_read_as_the_split(tmp_path):
    _write(tmp_path / "mine.jsonl", [NATALIA])
    assert len(load_examples("gsm8k", "test", tmp_path / "mine.jsonl")) == 1


def test_parquet_files_are_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([NATALIA]), tmp_path / "test-00000-of-00001.parquet")
    assert load_examples("gsm8k", "test", tmp_path)[0].answer.endswith("#### 72")


def test_missing_field_names_gsm8k_and_the_field(tmp_path):
    _write(tmp_path / "test.jsonl", [{"problem": "q", "answer": "#### 1"}])
    with pytest.raises(ValueError, match=r"gsm8k: .* missing field 'question'"):
        load_examples("gsm8k", "test", tmp_path)


# -------------------------------------------------------------------- authors_split / authors_preprocessing
def test_authors_answer_keeps_the_final_line_as_written():
    assert authors_answer(NATALIA["answer"]) == "<<48/2=24>> <<48+24=72>> #### 72"
    assert authors_answer("<<40*27=1080>>1,080 in all\n#### 1,080") == "<<40*27=1080>> #### 1,080"
    assert gsm8k_answer("<<40*27=1080>>1,080 in all\n#### 1,080") == "<<40*27=1080>> #### 1080"
    assert authors_answer("no final") is None


def test_authors_split_is_the_datasets_train_test_split(tmp_path):
    _write(tmp_path / "train.jsonl", [{"question": f"q{i}", "answer": f"#### {i},000"} for i in range(50)])
    train = load_examples("gsm8k", "train", tmp_path, authors_split=True)
    val = load_examples("gsm8k", "validation", tmp_path, authors_split=True)
    # datasets' train_test_split(test_size=0.1, seed=42): ceil(5.0) test rows = the first of a numpy permutation
    permutation = np.random.default_rng(42).permutation(50)
    assert [e.prompt for e in val] == [f"Question: q{i}\nAnswer: " for i in permutation[:5]]
    assert [e.prompt for e in train] == [f"Question: q{i}\nAnswer: " for i in permutation[5:]]
    assert val[0].answer == f"#### {permutation[0]}000"  # authors_split alone keeps segloss's answers
    ours = load_examples("gsm8k", "validation", tmp_path)
    assert {e.prompt for e in ours} != {e.prompt for e in val}
    authors = load_examples("gsm8k", "validation", tmp_path, authors_preprocessing=True)
    assert [e.prompt for e in authors] == [e.prompt for e in val]
    assert authors[0].answer == f"#### {permutation[0]},000"


def test_authors_options_leave_test_alone(tmp_path):
    _write(tmp_path / "test.jsonl", [NATALIA])
    assert load_examples("gsm8k", "test", tmp_path, authors_split=True) == load_examples("gsm8k", "test", tmp_path)


def test_authors_split_on_the_shared_train_file():
    if not (SHARED / "train.jsonl").is_file():
        pytest.skip(f"{SHARED} not present")
    val = load_examples("gsm8k", "validation", SHARED, authors_split=True)
    train = load_examples("gsm8k", "train", SHARED, authors_split=True)
    ours = load_examples("gsm8k", "validation", SHARED)
    assert (len(val), len(train), len(ours)) == (748, 6725, 747)
    assert len({e.prompt for e in val} & {e.prompt for e in ours}) == 85
    answers = [e.answer for e in load_examples("gsm8k", "test", SHARED, authors_preprocessing=True)]
    assert sum("," in a for a in answers) == 14  # test finals written with thousands commas
