"""The shared base: registry, raw-file reading and its errors, tokenization with answer masks, padding."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from segloss.data import (
    DATASETS,
    MAX_NEW_TOKENS,
    DataCollator,
    Example,
    encode_prompts,
    get_builder,
    is_multiple_choice,
    load_examples,
    pad_token_id,
    tokenize_examples,
)
from segloss.data.base import TokenizeStats, canonical_split, read_records, stable_seed


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# ------------------------------------------------------------------ registry
def test_registry_names_multiple_choice_and_generation_budgets():
    assert set(DATASETS) == {"gsm8k", "mathqa", "openbookqa", "hellaswag", "arith"}
    assert set(MAX_NEW_TOKENS) == set(DATASETS)
    assert [n for n in sorted(DATASETS) if is_multiple_choice(n)] == ["hellaswag", "openbookqa"]
    assert MAX_NEW_TOKENS["gsm8k"] == 256 and MAX_NEW_TOKENS["openbookqa"] == 8


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'gsm9k'.*arith, gsm8k, hellaswag, mathqa, openbookqa"):
        get_builder("gsm9k")
    with pytest.raises(ValueError, match="valid datasets"):
        is_multiple_choice("nope")
    with pytest.raises(ValueError, match="valid datasets"):
        load_examples("nope", "train")


def test_split_aliases_and_unknown_split():
    assert canonical_split("dev") == "validation" and canonical_split("VAL") == "validation"
    with pytest.raises(ValueError, match=r"unknown split 'training'.*train, validation, test"):
        load_examples("arith", "training")


def test_stable_seed_is_a_fixed_function_of_its_parts():
    assert stable_seed("arith", 42, "train") == stable_seed("arith", 42, "train")
    assert stable_seed("arith", 42, "train") != stable_seed("arith", 42, "test")


# ------------------------------------------------------------------ raw files and bad input
def test_missing_file_and_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found"):
        read_records(tmp_path / "absent.jsonl")
    with pytest.raises(FileNotFoundError, match="data path not found"):
        load_examples("gsm8k", "test", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no file for split 'test'"):
        load_examples("gsm8k", "test", tmp_path)


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text('{"question": "q", "answer": "#### 1"}\n\n{"question": "broken",\n')
    with pytest.raises(ValueError, match=r"test\.jsonl:3: malformed JSON line"):
        load_examples("gsm8k", "test", tmp_path)


def test_malformed_json_array_names_the_line(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text('[\n  {"Problem": "p"},\n  {"Problem": \n]\n')
    with pytest.raises(ValueError, match=r"dev\.json:4: malformed JSON"):
        read_records(path)


def test_record_missing_a_field_names_field_and_dataset(tmp_path):
    _write_jsonl(tmp_path / "test.jsonl", [{"question": "q", "answer": "#### 1"}, {"question": "q2"}])
    with pytest.raises(ValueError, match=r"gsm8k: .*test\.jsonl:2 is missing field 'answer'"):
        load_examples("gsm8k", "test", tmp_path)


def test_empty_split_is_an_error(tmp_path):
    (tmp_path / "test.jsonl").write_text("\n")
    with pytest.raises(ValueError, match=r"split 'test' .* is empty"):
        load_examples("gsm8k", "test", tmp_path)


def test_offline_without_path_asks_for_a_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="hub is offline; pass --data-path"):
        load_examples("hellaswag", "test")


def test_limit_keeps_the_first_examples_and_rejects_nonpositive():
    first = load_examples("arith", "test", n_test=10)
    assert load_examples("arith", "test", limit=3, n_test=10) == first[:3]
    with pytest.raises(ValueError, match="limit"):
        load_examples("arith", "test", limit=0)


# ------------------------------------------------------------------ tokenization
def test_features_mask_the_prompt_and_keep_answer_with_eos(tokenizer):
    examples = [
        Example("a", "Question: Tom has 3 apples.\nAnswer: ", "<<3+4=7>> #### 7"),
        Example("b", "Question: why?\nAnswer: ", "D"),
    ]
    data, stats = tokenize_examples(examples, tokenizer, max_length=128)
    assert data.column_names == ["input_ids", "attention_mask", "labels", "answer_labels"]
    assert (stats.n_examples, stats.n_kept, stats.n_dropped, stats.n_prompt_truncated) == (2, 2, 0, 0)
    for row, ex in zip(data, examples, strict=True):
        prompt = tokenizer(ex.prompt)["input_ids"]
        answer = tokenizer(ex.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        assert prompt[0] == tokenizer.bos_token_id  # the tiny tokenizer adds BOS
        assert row["input_ids"] == prompt + answer
        assert row["labels"] == row["input_ids"]  # every real token, not shifted
        assert row["answer_labels"] == [-100] * len(prompt) + answer
        assert row["attention_mask"] == [1] * len(prompt + answer)
        assert tokenizer.decode(answer[:-1]) == ex.answer
    assert stats.lengths == [len(r["input_ids"]) for r in data]
    assert tokenizer.pad_token is None  # the caller's tokenizer was not modified


def test_prompt_is_truncated_from_the_left_keeping_bos_and_the_whole_answer(tokenizer):
    ex = Example("long", "Question: " + "apples and pencils " * 20 + "how many?\nAnswer: ", "<<3+4=7>> #### 7")
    prompt = tokenizer(ex.prompt)["input_ids"]
    answer = tokenizer(ex.answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    max_length = len(answer) + 6
    data, stats = tokenize_examples([ex], tokenizer, max_length)
    row = data[0]
    assert len(row["input_ids"]) == max_length
    assert row["input_ids"][0] == tokenizer.bos_token_id
    assert row["input_ids"][1:6] == prompt[-5:]  # the end of the prompt survives
    assert row["input_ids"][6:] == answer
    assert row["answer_labels"] == [-100] * 6 + answer
    assert stats.n_prompt_truncated == 1 and stats.lengths == [len(prompt) + len(answer)]


def test_example_whose_answer_does_not_fit_is_dropped_and_counted(tokenizer):
    short = Example("short", "Q: a\nAnswer: ", "A")
    long = Example("long", "Q: b\nAnswer: ", "<<12+34=46>> <<46*2=92>> <<92-1=91>> #### 91")
    data, stats = tokenize_examples([long, short], tokenizer, max_length=8)
    assert (stats.n_kept, stats.n_dropped, stats.dropped_ids, stats.kept_indices) == (1, 1, ["long"], [1])
    assert len(data) == 1 and data[0]["answer_labels"][-2:] == [
        tokenizer("A", add_special_tokens=False)["input_ids"][0],
        tokenizer.eos_token_id,
    ]


def test_max_length_too_small_for_any_answer_is_an_error(tokenizer):
    examples = [Example("x", "Q: a\nAnswer: ", "<<1+2=3>> #### 3")]
    with pytest.raises(ValueError, match=r"max_length=5 is too small for any answer.*raise --max-length"):
        tokenize_examples(examples, tokenizer, max_length=5)
    with pytest.raises(ValueError, match="no examples"):
        tokenize_examples([], tokenizer, max_length=64)


def test_length_percentiles_are_nearest_rank():
    stats = TokenizeStats(max_length=10, lengths=list(range(1, 11)), answer_lengths=[2, 2, 4])
    assert stats.length_percentiles() == {"p50": 5.0, "p90": 9.0, "p99": 10.0, "max": 10.0}
    assert stats.answer_percentiles() == {"p50": 2.0, "p90": 4.0, "p99": 4.0, "max": 4.0}


# ------------------------------------------------------------------ padding
def test_collator_pads_right_with_eos_and_minus_100(tokenizer):
    eos = tokenizer.eos_token_id
    assert pad_token_id(tokenizer) == eos  # no pad token → EOS, as the paper does
    features = [
        {"input_ids": [1, 5, 6], "attention_mask": [1, 1, 1], "labels": [1, 5, 6], "answer_labels": [-100, 5, 6]},
        {"input_ids": [1, 7], "attention_mask": [1, 1], "labels": [1, 7], "answer_labels": [-100, 7]},
    ]
    batch = DataCollator(tokenizer)(features)
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, eos]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[1, 5, 6], [1, 7, -100]]
    assert batch["answer_labels"].tolist() == [[-100, 5, 6], [-100, 7, -100]]
    assert batch["input_ids"].dtype == torch.long
    padded = DataCollator(tokenizer, pad_to_multiple_of=4)(features)
    assert padded["labels"].shape == (2, 4) and padded["labels"][0, 3] == -100


def test_collator_uses_the_pad_token_when_there_is_one(tokenizer):
    with_pad = type("T", (), {"pad_token_id": 3, "eos_token_id": 2})()
    batch = DataCollator(with_pad)([{"input_ids": [1, 5]}, {"input_ids": [1]}])
    assert batch["input_ids"].tolist() == [[1, 5], [1, 3]]


def test_collator_batches_tokenized_features(tokenizer):
    examples = load_examples("arith", "test", n_test=4)
    data, _ = tokenize_examples(examples, tokenizer, max_length=256)
    batch = DataCollator(tokenizer)([data[i] for i in range(4)])
    lengths = [len(data[i]["input_ids"]) for i in range(4)]
    assert batch["input_ids"].shape == (4, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert ((batch["answer_labels"] != -100).sum(1) < batch["attention_mask"].sum(1)).all()


def test_encode_prompts_pads_left_and_truncates_left(tokenizer):
    prompts = ["Question: Tom has 3 apples. How many?\nAnswer: ", "Q: a\nAnswer: "]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    batch = encode_prompts(prompts, tokenizer, max_length=512)
    pad = tokenizer.eos_token_id
    width = len(ids[0])
    assert batch["input_ids"].tolist() == [ids[0], [pad] * (width - len(ids[1])) + ids[1]]
    assert batch["attention_mask"][1].tolist() == [0] * (width - len(ids[1])) + [1] * len(ids[1])
    cut = encode_prompts(prompts[:1], tokenizer, max_length=4)
    assert cut["input_ids"].tolist() == [[tokenizer.bos_token_id, *ids[0][-3:]]]
