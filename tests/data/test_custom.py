"""The user's own data: files, folders and hub ids as `--dataset`, prompt/completion and messages rows, errors."""

from __future__ import annotations

import json
import time

import pytest
from transformers import AutoTokenizer

from segloss.data import Example, get_builder, is_multiple_choice, is_user_data, load_examples, stop_strings
from segloss.data import tokenize_examples as tokenize
from segloss.data.templates import build_prompt

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ROWS = [{"prompt": "Question: 2+2?\nAnswer: ", "completion": "4"}, {"prompt": "Say hi: ", "completion": "hi there"}]
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 3+4?"},
    {"role": "assistant", "content": "7"},
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_file_type_gives_the_same_examples(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [_jsonl(tmp_path / "d.jsonl", ROWS), tmp_path / "d.json", tmp_path / "d.csv", tmp_path / "d.parquet"]
    files[1].write_text(json.dumps(ROWS, indent=2))
    files[2].write_text('prompt,completion\n"Question: 2+2?\nAnswer: ",4\nSay hi: ,hi there\n')
    pq.write_table(pa.Table.from_pylist(ROWS), files[3])
    for path in files:
        examples = load_examples(str(path), "train")
        assert [(e.prompt, e.answer) for e in examples] == [(r["prompt"], r["completion"]) for r in ROWS], path
        assert [e.id for e in examples] == ["train-0", "train-1"]
    assert is_user_data(str(files[0])) and not is_user_data("gsm8k")
    assert stop_strings(str(files[0])) == () and not is_multiple_choice(str(files[0]))


def test_field_names_ids_and_numbers(tmp_path) -> None:
    path = _jsonl(tmp_path / "q.jsonl", [{"id": "q7", "question": "2*3=", "answer": 6, "extra": [1]}])
    (example,) = load_examples(str(path), "test", prompt_field="question", completion_field="answer")
    assert example == Example("q7", "2*3=", "6")  # a number is read as text


def test_messages_rows_and_trl_conversational_prompt_completion(tmp_path) -> None:
    path = _jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}])
    (example,) = load_examples(str(path), "train")
    assert example.answer == "7" and example.messages == tuple(CHAT[:2])
    assert example.prompt == "system: Be brief.\nuser: What is 3+4?\nassistant: "  # a plain view, for display
    conversational = _jsonl(tmp_path / "pc.jsonl", [{"prompt": CHAT[:2], "completion": CHAT[2:]}])
    assert load_examples(str(conversational), "train") == [example]


def test_messages_rows_render_with_the_chat_template_whatever_the_template(tmp_path, tiny_model_dir) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = CHATML
    (example,) = load_examples(str(_jsonl(tmp_path / "chat.jsonl", [{"messages": CHAT}])), "train")
    prompt = build_prompt(example, [], "plain", tokenizer)
    assert prompt == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 3+4?<|im_end|>\n<|im_start|>assistant\n"
    )
    data, _ = tokenize([example], tokenizer, max_length=128, template="plain")
    row = data[0]
    n_prompt = row["completion_mask"].index(1)
    # TRL renders the conversation; the task loss sees the assistant turn only: no system or user token
    assert row["input_ids"][:n_prompt] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert set(row["completion_mask"][n_prompt:]) == {1}
    assert tokenizer.decode(row["input_ids"][n_prompt:]) == "7<|im_end|>\n"  # the turn as the template closes it
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="`messages` rows are rendered by the tokenizer's chat template"):
        build_prompt(example, [], "plain", tokenizer)


def test_folder_splits_by_file_name(tmp_path) -> None:
    _jsonl(tmp_path / "train.jsonl", ROWS)
    _jsonl(tmp_path / "test-00000-of-00002.jsonl", ROWS[:1])
    _jsonl(tmp_path / "test-00001-of-00002.jsonl", ROWS[1:])
    (tmp_path / "notes.txt").write_text("not data")
    assert len(load_examples(str(tmp_path), "train")) == 2
    assert [e.answer for e in load_examples(str(tmp_path), "test")] == ["4", "hi there"]  # both shards, in order
    with pytest.raises(FileNotFoundError, match=r"no file for split 'validation' \(found test-00000"):
        load_examples(str(tmp_path), "validation")
    plain = tmp_path / "plain"
    plain.mkdir()
    _jsonl(plain / "all.jsonl", ROWS)
    assert len(load_examples(str(plain), "validation")) == 2  # no split names: every split


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"d.jsonl: the file has no rows; add 'prompt'/'completion' or 'messages' rows"),
        (
            '{"question": "a", "answer": "b"}\n',
            r"no 'prompt'/'completion' or 'messages' columns \(columns found: answer, question\); rename them, or "
            r"name yours with --dataset_options '\{prompt_field: question, completion_field: answer\}'",
        ),
        (
            '{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": " "}\n',
            r"d.jsonl:2: 'completion' is empty",
        ),
        ('{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n', r"d.jsonl:2: 'completion' is missing, not text"),
        ('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": {"x": 1}}\n', r"d.jsonl:2: .* a dict"),
        ('{"prompt": "a", "completion": "b"}\nnot json\n', r"d.jsonl:2: malformed JSON line"),
        ('{"messages": [{"role": "user", "content": "hi"}]}\n', r"d.jsonl:1: 'messages' must end with the assistant"),
        ('{"messages": [{"role": "bot", "content": "hi"}]}\n', r"d.jsonl:1: message 0 of 'messages' is not a"),
        (
            '{"prompt": "a", "completion": "b"}\n' + json.dumps({"messages": CHAT}) + "\n",
            r"d.jsonl:2: a messages row after prompt/completion rows",
        ),
    ],
)
def test_bad_files_and_rows_name_the_file_row_and_fix(tmp_path, content, message) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_examples(str(path), "train")


def test_csv_with_a_surplus_cell_names_its_line(tmp_path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion\na,b\nc,d,e\n")
    with pytest.raises(ValueError, match=r"d.csv:3: 1 more cell\(s\) than the header's 2 columns"):
        load_examples(str(path), "train")


def test_what_is_not_data_gets_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'gsm9k'; valid datasets: arith, gsm8k.*hub id"):
        get_builder("gsm9k")
    with pytest.raises(FileNotFoundError, match=r"data file not found: missing/my\.jsonl"):
        get_builder("missing/my.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match=r"not a data file segloss reads \(suffix .txt\)"):
        get_builder(str(tmp_path / "d.txt"))
    _jsonl(tmp_path / "d.jsonl", ROWS)
    with pytest.raises(ValueError, match="data_path: not used when dataset is your own data"):
        load_examples(str(tmp_path / "d.jsonl"), "train", path=str(tmp_path))
    with pytest.raises(ValueError, match="unknown option"):
        get_builder(str(tmp_path / "d.jsonl"), prompt_column="q")


def test_a_hub_id_offline_fails_fast_and_says_why(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"'someone/my-data' is not a local file.*HF_HUB_OFFLINE is set"):
        load_examples("someone/my-data", "train")
    assert time.perf_counter() - start < 5
