"""`segloss data show|stats` through the real CLI entry point, over fixture files written here."""

from __future__ import annotations

import json

import pytest

from segloss.cli import main
from segloss.commands.data import DataConfig


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def gsm8k_dir(tmp_path):
    _write(
        tmp_path / "test.jsonl",
        [
            {
                "question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
                "answer": "He has 3+4 = <<3+4=7>>7 apples.\n#### 7",
            },
            {"question": "Ann has 5 apples.", "answer": "#### 5"},
            {"question": "no final", "answer": "nothing"},
        ],
    )
    return tmp_path


def test_show_prints_prompt_and_answer_as_trained(gsm8k_dir, capsys):
    assert main(["data", "show", "gsm8k", "--data-path", str(gsm8k_dir), "--split", "test", "-n", "1"]) == 0
    out = capsys.readouterr().out
    assert out == (
        "--- gsm8k-test-0\nQuestion: Tom has 3 apples and buys 4 more. How many apples does he have?\n"
        "Answer: <<3+4=7>> #### 7\n"
    )


def test_show_arith_with_options(capsys):
    assert main(["data", "show", "arith", "-n", "2", "--dataset-options", "{max_steps: 1, n_train: 5}"]) == 0
    out = capsys.readouterr().out
    assert out.count("--- arith-train-") == 2 and out.count("<<") == 2  # one formula per 1-step problem


def test_stats_counts_skips_and_token_lengths(gsm8k_dir, tiny_model_dir, capsys):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    answer_lengths = sorted(
        len(tok(a, add_special_tokens=False)["input_ids"]) + 1 for a in ["<<3+4=7>> #### 7", "#### 5"]
    )
    argv = [
        "data",
        "stats",
        "gsm8k",
        "--data-path",
        str(gsm8k_dir),
        "--split",
        "test",
        "--tokenizer",
        str(tiny_model_dir),
        "--max-length",
        str(answer_lengths[0] + 2),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if line.startswith("test")]
    assert lines[0][:3] == ["test", "2", "1"]  # 2 examples, 1 skipped record
    assert "skipped in test: 1 × no '#### final' line in the answer" in out
    kept, dropped, cut = lines[1][1:4]
    assert (kept, dropped, cut) == ("1", "1", "1")  # the long answer is dropped, the other prompt is cut
    assert len(lines) == 2
    assert lines[1][5] == f"{answer_lengths[0]}/{answer_lengths[1]}/{answer_lengths[1]}/{answer_lengths[1]}"


def test_stats_reports_the_absent_mathqa_train_split(tmp_path, capsys):
    record = {"Problem": "p", "options": "a ) 1 , b ) 2", "correct": "b", "linear_formula": "add(n0,n1)|"}
    (tmp_path / "dev.json").write_text(json.dumps([record, {**record, "correct": "x"}], indent=4))
    assert main(["data", "stats", "mathqa", "--data-path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "absent" in out and "--split dev" in out
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("validation")] == [
        ["validation", "1", "1"]
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["data", "show", "gsm9k"], "unknown dataset 'gsm9k'; valid datasets: arith, gsm8k"),
        (["data", "show", "gsm8k", "--data-path", "/nonexistent/gsm8k"], "data path not found"),
        (["data", "stats", "arith", "--tokenizer", "/nonexistent/tok"], "--tokenizer: directory not found"),
        (["data", "show", "arith", "-n", "0"], "n must be at least 1"),
        (["data", "show", "arith", "--dataset-options", "{steps: 2}"], "unknown option"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="max_length"):
        DataConfig(max_length=1)
    with pytest.raises(ValueError, match="dataset_options must be a mapping"):
        DataConfig(dataset_options=[1])


def test_old_flag_spellings_still_work(capsys):
    # train/eval/grid spell them --data-path/--dataset-options; data accepts its former --path/--options too.
    assert main(["data", "show", "arith", "-n", "1", "--options", "{max_steps: 1, n_train: 5}"]) == 0
    assert "Question" in capsys.readouterr().out
    assert main(["data", "show", "gsm8k", "--path", "/nonexistent/gsm8k"]) == 2
    assert "data path not found" in capsys.readouterr().err
