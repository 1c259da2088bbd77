"""TrainConfig validation, YAML configs in configs/, and flags overriding the YAML."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from segloss.config import add_config_arguments, config_from_args, config_from_dict, load_yaml
from segloss.training import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
# Every YAML in configs/ that `segloss train` runs (other commands' configs open with their own command).
TRAIN_CONFIGS = [p for p in CONFIGS if p.read_text().startswith("# segloss train ")]


def test_defaults_follow_the_paper_lora_setting() -> None:
    config = TrainConfig(model="m")
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.05)
    assert not config.full_finetune and config.report_to == "none"


@pytest.mark.parametrize(
    ("spec", "ce_weight", "expected"),
    [
        ("lovasz", 0.6, {"ce": 0.6, "lovasz": 0.4}),
        ("focal", 0.25, {"ce": 0.25, "focal": 0.75}),
        ("ce=0.5,focal=0.25,lovasz=0.25", 0.6, {"ce": 0.5, "focal": 0.25, "lovasz": 0.25}),
        ({"ce": 0.3, "gdice": 0.7}, 0.6, {"ce": 0.3, "gdice": 0.7}),
    ],
)
def test_loss_weights(spec, ce_weight, expected) -> None:
    weights = TrainConfig(model="m", loss=spec, ce_weight=ce_weight).loss_weights()
    assert weights == pytest.approx(expected)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"model": ""}, "model"),
        ({"dataset": "nope"}, "dataset"),
        ({"loss": "dice_of_doom"}, "loss"),
        ({"loss": "ce=0,focal=0"}, "loss"),
        ({"max_length": 0}, "max_length"),
        ({"max_length": -5}, "max_length"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ({"max_steps": 0}, "max_steps"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"fp16": True, "bf16": True}, "fp16"),
        ({"resume": True, "overwrite": True}, "resume"),
        ({"lora_target_modules": []}, "lora_target_modules"),
        ({"loss": "focal", "loss_options": {"lovasz": {}}}, "loss_options"),
    ],
)
def test_bad_values_name_the_field(overrides, field) -> None:
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{"model": "m", **overrides})


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="arith"):
        TrainConfig(model="m", dataset="gsm9k")


def test_unknown_loss_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="lovasz"):
        TrainConfig(model="m", loss="ce=0.5,dicee=0.5")


def test_all_four_paper_configs_exist() -> None:
    assert {"gsm8k", "hellaswag", "mathqa", "openbookqa"} <= {p.stem for p in TRAIN_CONFIGS}


@pytest.mark.parametrize("path", TRAIN_CONFIGS, ids=lambda p: p.stem)
def test_yaml_config_loads_into_the_dataclass(path: Path) -> None:
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# segloss train --config configs/")
    config = config_from_dict(TrainConfig, load_yaml(path), str(path))  # unknown keys raise here
    if path.stem in {"gsm8k", "hellaswag", "mathqa", "openbookqa"}:
        assert config.dataset == path.stem
    assert config.lora_r == 8 and config.lora_alpha == 16 and config.lora_dropout == 0.05
    assert config.max_length > 0 and config.learning_rate > 0


def test_unknown_yaml_key_fails(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: m\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        config_from_dict(TrainConfig, load_yaml(path), str(path))


def test_flags_override_yaml(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("model: m\nmax_steps: 100\nloss: focal\nlora_target_modules: [q_proj]\n")
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainConfig)
    args = parser.parse_args(
        [
            "--config",
            str(path),
            "--max-steps",
            "10",
            "--loss",
            "ce=0.5,lovasz=0.5",
            "--full-finetune",
            "--loss-options",
            "{lovasz: {}}",
        ]
    )
    config = config_from_args(TrainConfig, args)
    assert config.max_steps == 10 and config.full_finetune
    assert config.loss_weights() == {"ce": 0.5, "lovasz": 0.5}
    assert config.lora_target_modules == ["q_proj"]  # untouched keys keep the file's value
