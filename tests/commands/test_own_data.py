"""The user's own data end to end: `segloss train` and `segloss eval` on a prompt/completion JSONL file, and the
run folder's model card with the objective, the data and the metrics."""

from __future__ import annotations

import json
import re

import pytest
from huggingface_hub import ModelCard

from segloss.cli import main

ROWS = [
    {"prompt": f"Question: {a}+{b}?\nAnswer: ", "completion": f"<<{a}+{b}={a + b}>> #### {a + b}"}
    for a, b in [(1, 2), (3, 4), (2, 5), (6, 1), (4, 4), (7, 2)]
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny model on a shared machine


def test_train_and_eval_on_a_jsonl_file_with_the_model_card(tiny_model_dir, tmp_path, capsys) -> None:
    train_file, test_file = tmp_path / "train.jsonl", tmp_path / "held-out.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:4]))
    test_file.write_text("".join(json.dumps(r) + "\n" for r in ROWS[4:]))
    out = tmp_path / "run"
    train = ["train", "--model", str(tiny_model_dir), "--dataset", str(train_file), "--output_dir", str(out)]
    train += ["--max_steps", "2", "--max_length", "64", "--loss", "lovasz", "--disable_tqdm", "--save_steps", "100"]
    assert main(train) == 0
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["train_examples"] == 4

    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "peft" and card.data.base_model == str(tiny_model_dir)
    assert card.data.tags[:3] == ["segloss", "generated_from_trainer", "lovasz"]
    assert "L = 0.6·CE(all target tokens) + 0.4·Lovász-softmax(answer tokens)" in card.text
    assert f"`{train_file}`" in card.text and "Not evaluated yet" in card.text
    assert not card.data.eval_results

    evaluate = ["eval", "--run", str(out), "--dataset", str(test_file), "--max_new_tokens", "4"]
    assert main([*evaluate, "--answer_pattern", r"#### (\S+)"]) == 0
    metrics = json.loads((out / "eval" / "test" / "metrics.json").read_text())
    assert metrics["config"]["answer_pattern"] == r"#### (\S+)"  # a `#` value is not read as a YAML comment
    predictions = [json.loads(line) for line in (out / "eval" / "test" / "predictions.jsonl").read_text().splitlines()]
    for row in predictions:  # the parsed answer is what the pattern extracts (None without a match)
        found = re.search(r"#### (\S+)", row["generated"])
        assert row["parsed_answer"] == (found[1] if found else None)
    assert metrics["dataset"] == str(test_file) and metrics["n_examples"] == 2
    # exact match of the extracted answer, plus the formula metrics (the rows use <<a+b=c>>), not GSM8K's variants
    assert {"exact_match", "iou", "dice", "well_formed", "missing_steps"} <= set(metrics["metrics"])
    assert not any(k.startswith("exact_match_") for k in metrics["metrics"])
    card = ModelCard.load(out / "README.md")
    results = {(r.dataset_name, r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results[(str(test_file), "test", "exact_match")] == round(metrics["metrics"]["exact_match"]["mean"], 4)
    assert card.data.tags[:3] == ["segloss", "generated_from_trainer", "lovasz"]  # eval kept them, no duplicates
    assert len(card.data.tags) == len(set(card.data.tags))
    assert "| exact_match |" in card.text and "Not evaluated yet" not in card.text
    capsys.readouterr()


def test_a_missing_data_file_stops_train_before_the_model_loads(tmp_path, capsys) -> None:
    from segloss.training.config import train_config_from_values

    argv = [
        "train",
        "--model",
        str(tmp_path / "no-model"),
        "--dataset",
        "gone/my.jsonl",
        "--output_dir",
        str(tmp_path),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "segloss train: error: dataset: data file not found: gone/my.jsonl" in err  # not the missing model
    # A finished run's config.yaml still loads after its data file moved (evaluation does not need it).
    assert train_config_from_values({"model": "m", "dataset": "gone/my.jsonl"}).dataset == "gone/my.jsonl"
    assert main(["train", "--model", "m", "--dataset", "gsm9k"]) == 2
    assert "valid datasets: arith, gsm8k" in capsys.readouterr().err
