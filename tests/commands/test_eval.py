"""`segloss eval` command line: flags reach EvalConfig, user errors exit 2 with a message naming the field."""

from __future__ import annotations

import json

from segloss.cli import main


def test_unknown_template_exits_2(capsys, tmp_path):
    assert main(["eval", "--run", str(tmp_path), "--template", "alpaca"]) == 2
    err = capsys.readouterr().err
    assert "segloss eval: error: template" in err and "plain, instruction" in err


def test_run_without_adapter_exits_2(capsys, tmp_path):
    (tmp_path / "config.yaml").write_text("model: x\ndataset: arith\n")
    assert main(["eval", "--run", str(tmp_path)]) == 2
    assert "no adapter" in capsys.readouterr().err


def test_few_shot_too_large_exits_2(capsys, tmp_path):
    argv = [
        "eval",
        "--model",
        "unused",
        "--dataset",
        "arith",
        "--dataset-options",
        "{n_train: 2, n_test: 2}",
        "--few-shot",
        "3",
        "--output-dir",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "few_shot: 3" in capsys.readouterr().err


def test_baseline_end_to_end_from_the_command_line(capsys, tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    argv = [
        "eval",
        "--model",
        str(tiny_model_dir),
        "--dataset",
        "arith",
        "--dataset-options",
        "{n_test: 2}",
        "--limit",
        "2",
        "--max-new-tokens",
        "3",
        "--template",
        "instruction",
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 0
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_examples"] == 2 and saved["config"]["template"] == "instruction"
    assert "exact_match" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert rows[0]["prompt"].startswith("### Instruction:\nQuestion:")


def test_config_file_rejects_unknown_keys(capsys, tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("# segloss eval --config eval.yaml\nrun: runs/none\nsplit: validation\nbogus: 1\n")
    assert main(["eval", "--config", str(cfg)]) == 2
    assert "unknown key(s) ['bogus']" in capsys.readouterr().err
