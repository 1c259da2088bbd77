"""`segloss --help` imports nothing heavy; `segloss train --help` and `segloss eval --help` are rendered from the
config classes' source (`segloss.helptext`): the flags, help texts, defaults and sections of the real parser, without
importing torch, transformers or TRL, and the real parser's help when the source cannot be read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from segloss import helptext
from segloss.cli import main
from segloss.commands import eval as eval_command
from segloss.commands import train as train_command
from segloss.config import docstring_sections

SRC = str(Path(__file__).resolve().parents[2] / "src")
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "jsonargparse")


def _imports_after(argv: list[str], cache: Path) -> tuple[set[str], str]:
    """The heavy modules a fresh ``python -m segloss.cli ARGV`` holds when it exits, and what it printed."""
    script = (
        "import runpy, sys\n"
        f"sys.argv = ['segloss', *{argv!r}]\n"
        "try:\n    runpy.run_module('segloss.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY:', *[m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC, "XDG_CACHE_HOME": str(cache), "COLUMNS": "119"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    text, _, heavy = out.rpartition("HEAVY:")
    return set(heavy.split()), text


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def _entries(text: str) -> dict[str, str]:
    """Each flag of a help text → its help paragraph on one line (every spelling of a flag maps to it)."""
    entries: dict[str, str] = {}
    flags: list[str] = []
    for line in text.splitlines():
        if line.startswith("  -"):
            invocation, _, rest = line[2:].partition("  ")
            flags = [part.split()[0] for part in invocation.split(", ")]
            entries.update(dict.fromkeys(flags, rest.strip()))
        elif line.startswith("    ") and flags:
            for flag in flags:
                entries[flag] = f"{entries[flag]} {line.strip()}".strip()
        else:
            flags = []
    return entries


def _without_type(paragraph: str) -> tuple[str, str]:
    """(help text, default) of a paragraph ``HELP (type: T, default: D)``; the type's spelling may differ."""
    head, _, default = paragraph.rpartition(", default: ")
    return head.rpartition(" (type: ")[0], default.removesuffix(")")


def _sections(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.endswith(":") and not line.startswith(" ")]


@pytest.fixture(scope="module")
def real_train_help() -> tuple[object, str]:
    """The real `segloss train` parser (imports transformers and TRL: built once) and its help text."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COLUMNS", "119")  # the width the `columns` fixture gives the help under test
        parser = train_command._parser("segloss train")
        return parser, str(parser.format_help())


@pytest.fixture
def columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "119")


def test_top_level_help_imports_nothing_heavy(tmp_path: Path) -> None:
    heavy, text = _imports_after(["--help"], tmp_path)
    assert heavy == set() and "train" in text


def test_train_help_lists_every_flag_of_the_real_parser(real_train_help, columns, capsys) -> None:
    parser, _ = real_train_help
    fast = _entries(_help(["train", "--help"], capsys))
    accepted = {flag for action in parser._actions for flag in action.option_strings}  # argparse: no public API
    assert set(fast) == accepted
    assert {"--lora_targets+", "--report_to+", "--parallelism_config.help", "--bf16"} <= set(fast)


def test_train_help_texts_and_defaults_agree_with_the_real_parser(real_train_help, columns, capsys) -> None:
    _, real = real_train_help
    fast, expected = _entries(_help(["train", "--help"], capsys)), _entries(real)
    fields = [flag for flag in expected if flag.startswith("--") and "(type: " in expected[flag]]
    assert len(fields) > 150
    assert {flag: _without_type(fast[flag]) for flag in fields} == {
        flag: _without_type(expected[flag]) for flag in fields
    }
    # segloss's own defaults win over the Trainer's and TRL's (TrainConfig overrides them)
    assert _without_type(fast["--output_dir"])[1] == "runs/train"
    assert _without_type(fast["--learning_rate"]) == ("Peak learning rate (LoRA's usual 2e-4).", "0.0002")
    assert _without_type(fast["--bf16"])[1] == "False" and _without_type(fast["--max_length"])[1] == "512"
    assert _without_type(fast["--ce_weight"])[1] == "0.6" and _without_type(fast["--seed"])[1] == "42"


def test_train_help_puts_seglosss_options_first_then_the_trainer_sections(real_train_help, columns, capsys) -> None:
    from segloss.training.config import SeglossArguments

    _, real = real_train_help
    text = _help(["train", "--help"], capsys)
    assert text.startswith("usage: segloss train [-h] [--config FILE] [--print_config] [--FIELD VALUE ...]\n")
    assert _sections(text) == _sections(real)
    assert _sections(text)[:2] == ["segloss train options:", "Trainer: Training Duration and Batch Size:"]
    lines = text.splitlines()
    first_trainer = lines.index("Trainer: Training Duration and Batch Size:")
    flags = {line.split()[0]: i for i, line in enumerate(lines) if line.startswith("  --")}
    for name in [f.name for f in SeglossArguments.__dataclass_fields__.values()] + ["output_dir"]:
        assert flags[f"--{name}"] < first_trainer, name
    assert flags["--max_steps"] > first_trainer and flags["--deepspeed"] > flags["--learning_rate"]
    assert flags["--packing"] > lines.index("TRL SFT: Parameters that control the data preprocessing:")


def test_train_help_imports_no_torch_nor_transformers(tmp_path: Path) -> None:
    heavy, text = _imports_after(["train", "--help"], tmp_path)  # an empty cache folder: nothing stored to read
    assert heavy == set()
    assert "--per_device_train_batch_size" in text and "Trainer: Optimizer:" in text


def test_train_help_falls_back_to_the_real_parser(real_train_help, columns, capsys, monkeypatch) -> None:
    def broken(path: Path) -> str:
        return "class TrainingArguments(:\n"  # a layout the reader cannot parse

    helptext.source_class.cache_clear()
    helptext._load.cache_clear()
    monkeypatch.setattr(helptext, "_read_source", broken)
    try:
        text = _help(["train", "--help"], capsys)
    finally:
        helptext.source_class.cache_clear()
        helptext._load.cache_clear()
    assert text == real_train_help[1]
    assert "Union[dict, str, null]" in text  # jsonargparse's spelling of the types: the real parser printed it


def test_eval_help_agrees_with_the_real_parser_without_importing_torch(tmp_path, columns, capsys) -> None:
    from segloss.config import typed_parser
    from segloss.evaluation.config import EvalConfig

    real = str(typed_parser(EvalConfig, prog="segloss eval", description=eval_command.__doc__).format_help())
    text = _help(["eval", "--help"], capsys)
    fast, expected = _entries(text), _entries(real)
    assert set(fast) == set(expected) and "--answer_pattern" in fast
    assert {f: _without_type(fast[f]) for f in fast} == {f: _without_type(expected[f]) for f in fast}
    assert text.splitlines()[0] == real.splitlines()[0]  # the usage line lists every flag, as jsonargparse does
    heavy, _ = _imports_after(["eval", "--help"], tmp_path)
    assert heavy == set()


def test_docstring_sections_read_the_titles_at_parameter_depth() -> None:
    import dataclasses

    @dataclasses.dataclass
    class Args:
        """Toy.

        Parameters:
            first (`int`):
                Before any title: left out.

            > Speed

            fast (`bool`):
                Goes fast.
                > [!TIP]
                > not a title
            slow (`bool`):
                Goes slow.
        """

        first: int = 0
        fast: bool = False
        slow: bool = True

    assert docstring_sections(Args, prefix="T: ") == {"fast": "T: Speed", "slow": "T: Speed"}
    Args.__doc__ = (Args.__doc__ or "").replace("\n        ", "\n    ")  # TrainingArguments' depth: the same
    assert docstring_sections(Args, prefix="T: ") == {"fast": "T: Speed", "slow": "T: Speed"}
