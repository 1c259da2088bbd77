"""`segloss demo`'s command line: DemoConfig through the one typed parser of segloss.config."""

from __future__ import annotations

from pathlib import Path

import pytest

from segloss.cli import main
from segloss.commands.demo import parse


def test_documented_spellings_parse_to_typed_values(tmp_path: Path) -> None:
    config = parse(["--n-seeds", "5", "--losses", "ce,lovasz", "--ce-weight", "0.5", "--no-resume", "--smoke"])
    assert config.n_seeds == 5 and config.losses == ["ce", "lovasz"] and config.ce_weight == 0.5
    assert config.smoke is True and config.resume is False


def test_yaml_file_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text("losses: [ce, focal]\nseed: 3\nfinetune_steps: 7\n")
    config = parse(["--config", str(path), "--seed", "4"])
    assert config.losses == ["ce", "focal"] and config.seed == 4 and config.finetune_steps == 7


@pytest.mark.parametrize(
    ("line", "field"),
    [("n_seeds: two", "n_seeds"), ("ce_weight: [0.5]", "ce_weight"), ("seeds: 3", "seeds"), ("smoke: maybe", "smoke")],
)
def test_bad_yaml_exits_2_naming_the_field_and_the_file(tmp_path: Path, capsys, line: str, field: str) -> None:
    path = tmp_path / "demo.yaml"
    path.write_text(f"{line}\n")
    assert main(["demo", "--config", str(path), "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert field in err and str(path) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
