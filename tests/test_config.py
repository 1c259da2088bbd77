"""The enumerated options are `Literal` types the parser checks: a bad value from the command line or a YAML file is
one line naming the field and its valid values; a config built in Python gets the same line (`check_choices`)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from segloss.commands import eval as eval_command
from segloss.commands import grid as grid_command
from segloss.commands import train as train_command
from segloss.config import check_choices, choice_error, config_field, literal_choices

TRAIN = ["--model", "m"]
EVAL = ["--model", "m", "--dataset", "arith"]
GRID = ["--models", "[m]", "--datasets", "[arith]", "--losses", "[ce]", "--seeds", "[1]"]
CASES = [  # (command, required flags, field, bad value, the valid values as listed)
    (train_command, TRAIN, "torch_dtype", "fp8", "auto, float32, bfloat16, float16"),
    (train_command, TRAIN, "template", "alpaca", "plain, instruction, chat"),
    (eval_command, EVAL, "torch_dtype", "fp8", "auto, float32, bfloat16, float16"),
    (eval_command, EVAL, "template", "alpaca", "plain, instruction, chat"),
    (grid_command, GRID, "executor", "slurm", "local, ray"),
]
LOSS_CASES = [  # loss options: checked by the loss's options dataclass (segloss.losses.table), in the same words
    ("gdice", "w_type", "log", "square, simple, uniform"),
    ("focal", "reduction", "median", "mean, sum"),
    ("lovasz", "group", "token", "sequence, batch"),
]


def _single_line_error(command, argv) -> str:
    with pytest.raises(ValueError) as err:
        command.parse(argv)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("command", "required", "field", "bad", "valid"), CASES)
def test_a_bad_choice_on_the_command_line_names_the_field_and_the_choices(command, required, field, bad, valid):
    message = _single_line_error(command, [*required, f"--{field}", bad])
    assert message.startswith(f"{field}: '{bad}' is not one of {valid} (from the command line)")


@pytest.mark.parametrize(("command", "required", "field", "bad", "valid"), CASES)
def test_a_bad_choice_in_yaml_names_the_field_the_choices_and_the_file(tmp_path, command, required, field, bad, valid):
    path = tmp_path / "c.yaml"
    path.write_text(f"{field}: {bad}\n")
    message = _single_line_error(command, [*required, "--config", str(path)])
    assert message.startswith(f"{field}: '{bad}' is not one of {valid} (from {path} or the command line)")


@pytest.mark.parametrize(("loss", "option", "bad", "valid"), LOSS_CASES)
def test_a_bad_loss_option_names_the_option_and_the_choices(tmp_path, loss, option, bad, valid):
    expected = f"loss '{loss}': {option}: '{bad}' is not one of {valid}"
    flags = [*TRAIN, "--loss", loss]
    assert expected in _single_line_error(
        train_command, [*flags, "--loss_options", f"{{{loss}: {{{option}: {bad}}}}}"]
    )
    path = tmp_path / "c.yaml"
    path.write_text(f"loss_options:\n  {loss}:\n    {option}: {bad}\n")
    assert expected in _single_line_error(train_command, [*flags, "--config", str(path)])


def test_a_config_built_in_python_is_checked_in_the_same_words():
    from segloss.evaluation import EvalConfig
    from segloss.training import TrainConfig

    with pytest.raises(ValueError, match=r"^template: 'alpaca' is not one of plain, instruction, chat"):
        TrainConfig(model="m", template="alpaca")
    with pytest.raises(ValueError, match=r"^torch_dtype: 'fp8' is not one of auto, float32"):
        EvalConfig(model="m", dataset="arith", torch_dtype="fp8")
    assert EvalConfig(model="m", dataset="arith").template is None  # an optional choice may be None


def test_choices_of_literal_types():
    @dataclasses.dataclass
    class Options:
        mode: Literal["a", "b"] = config_field("a", help="x")
        other: Literal["c"] | None = config_field(None, help="y")
        free: str = config_field("z", help="z")

    assert literal_choices(Literal["a", "b"]) == ("a", "b") and literal_choices(Literal["c"] | None) == ("c",)
    assert literal_choices(str) == ()
    check_choices(Options())
    with pytest.raises(ValueError, match=r"^other: 'd' is not one of c$"):
        check_choices(Options(other="d"))  # type: ignore[arg-type]
    assert choice_error("mode", 3, ("a", "b")) == "mode: 3 is not one of a, b"
