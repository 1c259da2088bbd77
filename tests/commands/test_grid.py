"""`segloss grid`'s command line: GridConfig and GridRunOptions through the one typed parser of segloss.config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from segloss.cli import main
from segloss.commands.grid import GridRunOptions, parse


@pytest.fixture
def grid_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "grid.yaml"
    values = {"models": ["m1", "m2"], "datasets": ["arith"], "losses": ["ce", "lovasz"], "seeds": [0, 1]}
    path.write_text(yaml.safe_dump({**values, "train": {"max_steps": 5, "lora_r": 4}, "executor": "local"}))
    return path


def test_flags_override_the_yaml_and_replace_whole_fields(grid_yaml: Path) -> None:
    config, options = parse(["--config", str(grid_yaml), "--train", "{max_steps: 10}", "--seeds", "[3]"])
    assert config.models == ["m1", "m2"] and config.seeds == [3]
    assert config.train == {"max_steps": 10}  # documented: a flag replaces the file's whole field
    assert options == GridRunOptions()


def test_run_options_are_typed_in_both_spellings(grid_yaml: Path) -> None:
    argv = ["--config", str(grid_yaml), "--shard", "2/8", "--retry-running", "--lease_seconds", "30"]
    _, options = parse(argv)
    assert options.shard == "2/8" and options.retry_running is True and options.lease_seconds == 30.0


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--lease-seconds", "fast"], "lease_seconds"),
        (["--lease-seconds", "0"], "lease_seconds"),
        (["--executor", "dask"], "executor"),
        (["--gpus-per-cell", "[1]"], "gpus_per_cell"),
        (["--seeds", "zero"], "seeds"),
        (["--shards", "1/2"], "--shards"),
    ],
)
def test_bad_values_exit_2_naming_the_field(grid_yaml: Path, capsys, flags: list[str], field: str) -> None:
    assert main(["grid", "--config", str(grid_yaml), "--output-dir", str(grid_yaml.parent / "g"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("segloss grid: error:") and field in err and "Traceback" not in err
    assert not (grid_yaml.parent / "g").exists()
