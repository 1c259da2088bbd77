"""`segloss train` YAML typing end to end: `learning_rate: 1e-4` trains, `full_finetune: "no"` trains LoRA only,
wrong types and YAML syntax errors exit 2 with the field (or file) named and no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from segloss.cli import main


def test_scientific_learning_rate_and_quoted_no_train_a_lora_adapter(tiny_model_dir, tmp_path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"# segloss train --config {config}\nmodel: {tiny_model_dir}\ndataset: arith\n"
        "dataset_options: {n_train: 4}\nmax_length: 64\nper_device_train_batch_size: 2\nmax_steps: 1\n"
        'learning_rate: 1e-4\nlr_scheduler_type: constant\nfull_finetune: "no"\nlogging_steps: 1\n'
        "disable_tqdm: true\n"
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--output_dir", str(out)]) == 0
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    assert [h["learning_rate"] for h in state["log_history"] if "learning_rate" in h] == [1e-4]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["learning_rate"] == 1e-4 and saved["full_finetune"] is False
    capsys.readouterr()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("lora_r: [1, 2]", "lora_r: Expected a <class 'int'>"),
        ("full_finetune: maybe", "full_finetune"),
        ("learning_rate: fast", "learning_rate"),
        ("lora_target_modules: [q_proj", "not valid YAML"),
        ("learning_rat: 0.1", "learning_rat"),
    ],
)
def test_bad_yaml_exits_2_naming_the_field(tmp_path: Path, capsys, line: str, message: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"model: m\n{line}\n")
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segloss train: error:") and message in err and str(config) in err
    assert "Traceback" not in err


def test_missing_config_file_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_raw_resume_from_checkpoint_is_refused_with_the_resume_fix(tmp_path: Path, capsys) -> None:
    # Trainer's own flag would be silently ignored (train() hands Trainer the checkpoint it checked); refuse it instead
    argv = ["train", "--model", "m", "--output_dir", str(tmp_path / "run"), "--resume_from_checkpoint", "ckpt"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "resume_from_checkpoint" in err and "--resume" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
