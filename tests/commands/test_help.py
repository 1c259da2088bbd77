"""`segloss --help` imports nothing heavy; `segloss train --help` lists segloss's settings first, the Trainer's in
sections after them, and is served from a cache without importing torch."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segloss.cli import main
from segloss.config import docstring_sections, field_names

SRC = str(Path(__file__).resolve().parents[2] / "src")
HEAVY = ("torch", "transformers", "jsonargparse", "datasets")


def _imports_after(code: str, cache: Path) -> set[str]:
    """Which heavy modules a fresh interpreter holds after running ``code`` (help exits through SystemExit)."""
    script = f"import sys\ntry:\n    {code}\nexcept SystemExit:\n    pass\n"
    script += f"print(*[m for m in {HEAVY!r} if m in sys.modules])"
    env = {**os.environ, "PYTHONPATH": SRC, "XDG_CACHE_HOME": str(cache)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    return set(out.split("\n")[-2].split()) if out.strip() else set()


def test_top_level_help_imports_nothing_heavy(tmp_path) -> None:
    assert _imports_after("from segloss.cli import main; main(['--help'])", tmp_path) == set()


def test_train_help_sections_and_cache(tmp_path, monkeypatch, capsys) -> None:
    from segloss.training.config import SeglossArguments, TrainConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: segloss train [-h] [--config FILE] [--print_config] [--FIELD VALUE ...]\n")
    lines = text.splitlines()
    sections = [i for i, line in enumerate(lines) if line.endswith(":") and not line.startswith(" ")]
    assert lines[sections[0]] == "segloss train options:"
    first_trainer = sections[1]
    assert lines[first_trainer] == "Trainer: Training Duration and Batch Size:"
    flags = {line.split()[0]: i for i, line in enumerate(lines) if line.startswith("  --")}
    for field in dataclasses.fields(SeglossArguments):
        assert flags[f"--{field.name}"] < first_trainer, field.name  # segloss's own settings come first
    assert flags["--max_steps"] > first_trainer and flags["--deepspeed"] > flags["--learning_rate"]
    assert set(flags) >= {f"--{name}" for name in field_names(TrainConfig)}  # every flag is still listed
    cached = list((tmp_path / "segloss" / "help").glob("segloss-train-*.txt"))
    assert len(cached) == 1 and cached[0].read_text() == text
    # A fresh process prints the cached text without importing torch or transformers.
    assert _imports_after("from segloss.cli import main; main(['train', '--help'])", tmp_path) == set()


def test_docstring_sections_read_the_titles_at_parameter_depth() -> None:
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

    Args.__doc__ = (Args.__doc__ or "").replace("\n        ", "\n    ")  # the layout of TrainingArguments: 8 spaces
    assert docstring_sections(Args, prefix="T: ") == {"fast": "T: Speed", "slow": "T: Speed"}


def test_eval_help_is_cached_too(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    assert "--answer_pattern" in capsys.readouterr().out
    assert _imports_after("from segloss.cli import main; main(['eval', '--help'])", tmp_path) == set()
