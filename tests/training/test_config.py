"""TrainConfig (segloss fields + TrainingArguments) validation, typed YAML + flags parsing, the shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import TrainingArguments

from segloss.losses import LossSpec
from segloss.training import TrainConfig
from segloss.training.config import SeglossArguments, parse_train_config, train_config_from_values

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
# Every YAML in configs/ that `segloss train` runs (other commands' configs open with their own command).
TRAIN_CONFIGS = [p for p in CONFIGS if p.read_text().startswith("# segloss train ")]


def test_defaults_follow_the_paper_lora_setting() -> None:
    config = TrainConfig(model="m")
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.05)
    assert not config.full_finetune and config.report_to == []  # TrainingArguments' normal form of "none"
    assert isinstance(config, TrainingArguments) and not config.remove_unused_columns


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
    config = TrainConfig(model="m", loss=spec, ce_weight=ce_weight)
    assert config.loss_weights() == pytest.approx(expected)
    assert config.loss_spec == LossSpec(expected)  # parsed once, at construction


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
        ({"loss": "focal", "loss_options": {"focal": {"gama": 2}}}, "gama"),
        ({"loss": "focal", "ce_weight": 1.5}, "ce_weight"),
        ({"remove_unused_columns": True}, "remove_unused_columns"),
        ({"resume_from_checkpoint": "runs/x/checkpoint-5"}, "resume_from_checkpoint.*--resume"),
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
    config = parse_train_config(["--config", str(path)])  # unknown keys and wrong types raise here
    if path.stem in {"gsm8k", "hellaswag", "mathqa", "openbookqa"}:
        assert config.dataset == path.stem
    assert config.lora_r == 8 and config.lora_alpha == 16 and config.lora_dropout == 0.05
    assert config.max_length > 0 and isinstance(config.learning_rate, float) and config.learning_rate > 0


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def test_scientific_notation_is_a_float(tmp_path: Path) -> None:
    # PyYAML reads 1e-4 as a string; the typed parser makes it the float the field declares.
    config = parse_train_config(["--config", _yaml(tmp_path, "model: m\nlearning_rate: 1e-4\nweight_decay: 1e-2\n")])
    assert config.learning_rate == 1e-4 and config.weight_decay == 0.01


@pytest.mark.parametrize(("text", "expected"), [("'no'", False), ("'false'", False), ("no", False), ("'yes'", True)])
def test_quoted_booleans_are_booleans(tmp_path: Path, text: str, expected: bool) -> None:
    config = parse_train_config(["--config", _yaml(tmp_path, f"model: m\nfull_finetune: {text}\n")])
    assert config.full_finetune is expected


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("full_finetune: 'maybe'", "full_finetune"),
        ("lora_r: [1, 2]", "lora_r"),
        ("learning_rate: fast", "learning_rate"),
        ("max_steps: 2.5", "max_steps"),
        ("loss_options: 3", "loss_options"),
    ],
)
def test_wrong_types_name_the_field_and_the_file(tmp_path: Path, line: str, field: str) -> None:
    path = _yaml(tmp_path, f"model: m\n{line}\n")
    with pytest.raises(ValueError, match=field) as err:
        parse_train_config(["--config", path])
    assert path in str(err.value) and f"--{field}" in str(err.value)


def test_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "model: m\nlora_target_modules: [q_proj\n")
    with pytest.raises(ValueError, match="not valid YAML") as err:
        parse_train_config(["--config", path])
    assert path in str(err.value) and "line" in str(err.value)


def test_missing_config_file_is_a_file_not_found_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no-such\.yaml"):
        parse_train_config(["--config", str(tmp_path / "no-such.yaml")])


def test_unknown_yaml_key_fails(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['learning_rat'\]"):
        parse_train_config(["--config", _yaml(tmp_path, "model: m\nlearning_rat: 0.1\n")])


def test_abbreviated_or_unknown_flags_fail() -> None:
    # argparse would take --learning_rat as an abbreviation of --learning_rate; a typo must not set a value
    with pytest.raises(ValueError, match="--learning_rat"):
        parse_train_config(["--model", "m", "--learning_rat", "3"])


def test_flags_override_yaml(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "model: m\nmax_steps: 100\nloss: focal\nlora_target_modules: [q_proj]\n")
    argv = ["--config", path, "--max-steps", "10", "--loss", "ce=0.5,lovasz=0.5", "--full_finetune"]
    config = parse_train_config([*argv, "--loss_options", "{lovasz: {}}", "--eval_strategy", "steps"])
    assert config.max_steps == 10 and config.full_finetune is True
    assert config.loss_weights() == {"ce": 0.5, "lovasz": 0.5}
    assert config.lora_target_modules == ["q_proj"]  # untouched keys keep the file's value
    assert config.eval_strategy == "steps"  # any TrainingArguments field is a flag
    assert parse_train_config(["--config", path, "--resume", "--no-resume"]).resume is False  # old spelling


def test_mapping_values_are_typed_like_yaml() -> None:
    config = train_config_from_values({"model": "m", "learning_rate": "3e-4", "loss": {"ce": 0.5, "sadl": 0.5}})
    assert config.learning_rate == 3e-4 and config.loss_spec.weights == {"ce": 0.5, "sadl": 0.5}
    with pytest.raises(ValueError, match="lora_r"):
        train_config_from_values({"model": "m", "lora_r": "eight"}, "cell 3")


def test_config_values_round_trip(tmp_path: Path) -> None:
    config = parse_train_config(
        ["--model", "m", "--loss", "focal", "--ce_weight", "0.3", "--eval_strategy", "steps", "--seed", "7"]
    )
    values = config.config_values()
    assert list(values)[: len(SeglossArguments.__dataclass_fields__) + 1][1:] == list(
        SeglossArguments.__dataclass_fields__
    )
    assert "push_to_hub" not in values  # Trainer defaults are not repeated
    again = train_config_from_values(values)
    assert again.config_values() == values and again.loss_spec == config.loss_spec


def test_grid_cells_take_trainer_options_typed_like_yaml(tmp_path: Path) -> None:
    from segloss.experiments.grid import GridConfig, check_default_runner

    def grid(train: dict) -> GridConfig:
        return GridConfig(
            models=["m"], datasets=["arith"], losses=["ce", "lovasz"], seeds=[0], train=train, output_dir=str(tmp_path)
        )

    check_default_runner(grid({"learning_rate": "1e-4", "eval_strategy": "no", "torch_compile": False}).cells())
    with pytest.raises(ValueError, match="lora_r"):
        check_default_runner(grid({"lora_r": "eight"}).cells())


@pytest.mark.parametrize("path", sorted((CONFIGS[0].parent / "grid").glob("*.yaml")), ids=lambda p: p.name)
def test_every_grid_yaml_gives_cells_whose_train_settings_parse(path: Path) -> None:
    from segloss.config import config_from_values, load_yaml
    from segloss.experiments.grid import GridConfig, check_default_runner

    cells = config_from_values(GridConfig, load_yaml(path), str(path)).cells()
    check_default_runner(cells)  # every cell's TrainConfig through the typed parser (raises on a bad value)
    assert len(cells) >= 2
