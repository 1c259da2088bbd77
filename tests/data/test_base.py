"""The shared base: registry, raw-file reading and its errors, tokenization with answer masks, padding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TOKENIZER_TEXTS
from helpers.real_model import smollm2_path, smollm2_tokenizer  # noqa: F401  (fixtures)
from transformers import AutoTokenizer

from segloss.data import (
    DATASETS,
    MAX_NEW_TOKENS,
    Example,
    encode_prompts,
    get_builder,
    is_multiple_choice,
    load_examples,
    stop_strings,
    tokenize_examples,
)
from segloss.data.base import TokenizeStats, canonical_split, read_records, stable_seed
from segloss.data.templates import build_prompt, training_row
from segloss.models.tiny import train_sentencepiece_tokenizer

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


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
def _answer_tokens(row):
    return [t for t, in_answer in zip(row["input_ids"], row["completion_mask"], strict=True) if in_answer]


def check_whole_text(tokenizer, example, row, template="plain"):
    """The row is the whole text's tokens + EOS; its prompt part is exactly what generation is given; the answer
    mask covers exactly the answer's characters (with the separating space) and EOS."""
    training = training_row(example, template, tokenizer)
    text, start = training["prompt"] + training["completion"], len(training["prompt"])
    whole = tokenizer(text)["input_ids"]
    prompt = tokenizer(build_prompt(example, [], template, tokenizer))["input_ids"]
    assert row["input_ids"] == [*whole, tokenizer.eos_token_id]
    assert whole[: len(prompt)] == prompt  # training's prefix = the tokens generation starts from
    answer = _answer_tokens(row)
    assert answer == [*whole[len(prompt) :], tokenizer.eos_token_id]
    assert row["completion_mask"][: len(prompt)] == [0] * len(prompt)
    spans = tokenizer(text, return_offsets_mapping=True)["offset_mapping"][len(prompt) :]
    assert spans[-1][1] == len(text) and spans[0][1] > start  # the answer tokens reach the end, from its start
    assert text[min(s for s, _ in spans) : start].strip() == ""  # ...and take at most the separating space before
    assert text[start:].strip() == example.answer.strip()
    if tokenizer.unk_token_id not in answer:  # the tiny tokenizers lack a few characters (e.g. "_")
        assert tokenizer.decode(answer[:-1]).strip() == example.answer.strip()


EXAMPLES = [
    Example("a", "Question: Tom has 3 apples.\nAnswer: ", "<<3+4=7>> #### 7"),
    Example("b", "Question: why?\nAnswer: ", "D"),
]


def test_features_are_the_whole_text_with_the_completion_masked(tokenizer):
    data, stats = tokenize_examples(EXAMPLES, tokenizer, max_length=128)
    assert data.column_names == ["input_ids", "completion_mask"]  # TRL's pre-tokenized form
    assert (stats.n_examples, stats.n_kept, stats.n_dropped, stats.n_prompt_truncated) == (2, 2, 0, 0)
    for row, ex in zip(data, EXAMPLES, strict=True):
        assert row["input_ids"][0] == tokenizer.bos_token_id  # the tiny tokenizer adds BOS
        check_whole_text(tokenizer, ex, row)
    assert stats.lengths == [len(r["input_ids"]) for r in data]
    assert tokenizer.pad_token is None  # the caller's tokenizer was not modified


def test_gpt2_style_boundary_space_goes_with_the_answer(tokenizer):
    # Separately tokenized, the prompt would end with a lone "Ġ" that generation never continues from.
    data, _ = tokenize_examples(EXAMPLES[:1], tokenizer, max_length=128)
    first = tokenizer.convert_ids_to_tokens(_answer_tokens(data[0])[:1])[0]
    assert first.startswith("Ġ") and first != "Ġ"
    assert tokenizer.convert_ids_to_tokens(tokenizer(EXAMPLES[0].prompt)["input_ids"])[-1] == "Ġ"


@pytest.fixture(scope="module")
def sentencepiece_tokenizer():
    return train_sentencepiece_tokenizer(TOKENIZER_TEXTS, vocab_size=300)


def test_sentencepiece_style_tokenizer_whole_text(sentencepiece_tokenizer):
    data, _ = tokenize_examples(EXAMPLES, sentencepiece_tokenizer, max_length=128)
    for row, ex in zip(data, EXAMPLES, strict=True):
        check_whole_text(sentencepiece_tokenizer, ex, row)
    first = sentencepiece_tokenizer.convert_ids_to_tokens(_answer_tokens(data[0])[:1])[0]
    assert first.startswith("▁")  # the word-start marker belongs to the answer's first token


def _dataset_examples():
    """A few examples of every dataset: arith is synthetic; the others from ../shared/data when present."""
    out = [("arith", ex) for ex in load_examples("arith", "test", n_test=3)]
    for name in sorted(set(DATASETS) - {"arith"}):
        if (SHARED / name).is_dir():
            out += [(name, ex) for ex in load_examples(name, "test", SHARED / name, limit=3)]
    return out


@pytest.mark.parametrize("style", ["gpt2", "sentencepiece", "smollm2"])
def test_whole_text_masks_for_every_dataset(style, tokenizer, sentencepiece_tokenizer, request):
    tok = {"gpt2": tokenizer, "sentencepiece": sentencepiece_tokenizer}.get(style)
    if tok is None:
        tok = request.getfixturevalue("smollm2_tokenizer")
    named = _dataset_examples()
    data, stats = tokenize_examples([ex for _, ex in named], tok, max_length=4096)
    assert stats.n_kept == len(named)
    for row, (_, ex) in zip(data, named, strict=True):
        check_whole_text(tok, ex, row)


CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.mark.parametrize("style", ["gpt2", "smollm2"])
def test_chat_template_mask_is_exactly_the_assistant_content(style, tiny_model_dir, request):
    if style == "gpt2":
        tok = AutoTokenizer.from_pretrained(tiny_model_dir)
        tok.chat_template = CHATML
    else:
        tok = request.getfixturevalue("smollm2_tokenizer")
    data, _ = tokenize_examples(EXAMPLES, tok, max_length=256, template="chat")
    for row, ex in zip(data, EXAMPLES, strict=True):
        prompt = tok(build_prompt(ex, [], "chat", tok), add_special_tokens=False)["input_ids"]
        assert row["input_ids"][: len(prompt)] == prompt  # training's prefix = the tokens generation starts from
        assert row["completion_mask"] == [0] * len(prompt) + [1] * (len(row["input_ids"]) - len(prompt))
        answer = tok.decode(_answer_tokens(row))  # the assistant turn as the template closes it (TRL renders it)
        assert answer.startswith(ex.answer) and answer[len(ex.answer) :].strip() in ("<|im_end|>", "<|im_end|>\n")
        assert "Answer:" not in tok.decode(row["input_ids"])  # the user turn holds the question without its cue
    if style == "smollm2":  # ChatML's end of turn is SmolLM2's EOS: the model learns to close its turn
        assert "<|im_end|>" in tok.convert_ids_to_tokens(_answer_tokens(data[0]))


def test_prompt_is_truncated_from_the_left_keeping_bos_and_the_whole_answer(tokenizer):
    ex = Example("long", "Question: " + "apples and pencils " * 20 + "how many?\nAnswer: ", "<<3+4=7>> #### 7")
    full, _ = tokenize_examples([ex], tokenizer, 4096)
    answer = _answer_tokens(full[0])
    prompt = full[0]["input_ids"][: -len(answer)]
    max_length = len(answer) + 6
    data, stats = tokenize_examples([ex], tokenizer, max_length)
    row = data[0]
    assert len(row["input_ids"]) == max_length
    assert row["input_ids"][0] == tokenizer.bos_token_id
    assert row["input_ids"][1:6] == prompt[-5:]  # the end of the prompt survives
    assert row["input_ids"][6:] == answer
    assert row["completion_mask"] == [0] * 6 + [1] * len(answer)
    assert stats.n_prompt_truncated == 1 and stats.lengths == [len(prompt) + len(answer)]


def test_example_whose_answer_does_not_fit_is_dropped_and_counted(tokenizer):
    short = Example("short", "Q: a\nAnswer: ", "A")
    long = Example("long", "Q: b\nAnswer: ", "<<12+34=46>> <<46*2=92>> <<92-1=91>> #### 91")
    data, stats = tokenize_examples([long, short], tokenizer, max_length=8)
    assert (stats.n_kept, stats.n_dropped, stats.dropped_ids, stats.kept_indices) == (1, 1, ["long"], [1])
    assert len(data) == 1
    assert _answer_tokens(data[0]) == [*tokenizer(" A", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def test_max_length_too_small_for_any_answer_is_an_error(tokenizer):
    examples = [Example("x", "Q: a\nAnswer: ", "<<1+2=3>> #### 3")]
    with pytest.raises(ValueError, match=r"max_length=5 is too small for any answer.*raise --max-length"):
        tokenize_examples(examples, tokenizer, max_length=5)
    with pytest.raises(ValueError, match="no examples"):
        tokenize_examples([], tokenizer, max_length=64)


def test_stop_strings_are_declared_per_dataset():
    assert stop_strings("gsm8k") == ("\nQuestion:", "\n\n") == stop_strings("arith") == stop_strings("mathqa")
    assert stop_strings("openbookqa") == ("\n",) == stop_strings("hellaswag")
    with pytest.raises(ValueError, match="valid datasets"):
        stop_strings("nope")


def test_length_percentiles_are_nearest_rank():
    stats = TokenizeStats(max_length=10, lengths=list(range(1, 11)), answer_lengths=[2, 2, 4])
    assert stats.length_percentiles() == {"p50": 5.0, "p90": 9.0, "p99": 10.0, "max": 10.0}
    assert stats.answer_percentiles() == {"p50": 2.0, "p90": 4.0, "p99": 4.0, "max": 4.0}


# ------------------------------------------------------------------ generation batches
def test_encode_prompts_pads_left_and_truncates_left(tokenizer):
    prompts = ["Question: Tom has 3 apples. How many?\nAnswer: ", "Q: a\nAnswer: "]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    batch = encode_prompts(prompts, tokenizer, max_length=512)
    pad = tokenizer.eos_token_id
    width = len(ids[0])
    assert batch["input_ids"].tolist() == [ids[0], [pad] * (width - len(ids[1])) + ids[1]]
    assert batch["attention_mask"][1].tolist() == [0] * (width - len(ids[1])) + [1] * len(ids[1])
    assert batch["n_truncated"] == 0
    cut = encode_prompts(prompts[:1], tokenizer, max_length=4)
    assert cut["input_ids"].tolist() == [[tokenizer.bos_token_id, *ids[0][-3:]]]
    assert cut["n_truncated"] == 1  # counted, never silent
