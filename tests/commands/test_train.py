"""`segloss train` from the command line: YAML + flag overrides end to end; user errors exit 2, no traceback."""

from __future__ import annotations

import json

import pytest
import torch

from segloss.cli import main


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model on a shared machine: threads only add contention
    yield
    torch.set_num_threads(threads)


def test_train_from_yaml_with_flag_overrides(tiny_model_dir, tmp_path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"model: {tiny_model_dir}\ndataset: arith\ndataset_options: {{n_train: 8, max_steps: 1}}\n"
        "max_steps: 50\nmax_length: 64\nper_device_train_batch_size: 2\nloss: focal\n"
        "disable_tqdm: true\n"
    )
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--max-steps",
            "2",
            "--loss",
            "ce=0.5,lovasz=0.5",
            "--output-dir",
            str(out),
            "--logging-steps",
            "1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f'"output_dir": "{out}"' in printed and '"steps": 2' in printed
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 2  # the flag beat the file's 50
    assert summary["loss_weights"] == {"ce": 0.5, "lovasz": 0.5}
    saved = (out / "config.yaml").read_text()
    assert "max_steps: 2" in saved and f"model: {tiny_model_dir}" in saved


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "./no/such/model"], "model: no model directory"),
        (["--model", "m", "--dataset", "imagenet"], "dataset: unknown dataset"),
        (["--model", "m", "--loss", "dicey"], "loss:"),
        (["--model", "m", "--loss", "ce=0,focal=0"], "loss:"),
        (["--model", "m", "--max-length", "0"], "max_length"),
    ],
)
def test_user_errors_exit_2_with_the_field_named(tmp_path, capsys, flags, message) -> None:
    code = main(["train", *flags, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("segloss train: error:") and message in err and "Traceback" not in err


def test_unknown_yaml_key_exits_2(tmp_path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model: m\nlearning_rat: 0.1\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "learning_rat" in capsys.readouterr().err
