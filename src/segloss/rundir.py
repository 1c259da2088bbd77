"""`RunDir`: one `segloss train` run folder as one object — its file names and its typed config.

A run folder (``output_dir``) holds::

    config.yaml            the resolved TrainConfig, written when training starts (CONFIG_NAME)
    segloss.json           versions and the input paths' fingerprints (RUN_INFO_NAME)
    train_summary.json     written when training ends: steps, tokens, time, final losses, resumes (SUMMARY_NAME)
    README.md              the model card (CARD_NAME)
    checkpoint-<step>/     the Trainer's checkpoints, each with trainer_state.json (TRAINER_STATE), config.yaml,
                           segloss.json and checksums.json (MANIFEST)
    eval/<split>/          predictions.jsonl and metrics.json of `segloss eval --run`

Train, resume, eval and the grid read the folder through this class, so ``config.yaml`` is always loaded the same
way: as the typed `TrainConfig` (:meth:`RunDir.config`, through ``train_config_from_values``: every value checked
against its field's type, unknown keys refused), never as raw YAML compared as text::

    run = RunDir("runs/x")
    config = run.config()          # TrainConfig; FileNotFoundError / ValueError naming runs/x/config.yaml
    summary = run.summary()        # dict, or None before training ended

This module imports nothing heavy: the `TrainConfig` (torch, transformers) is imported when a config is loaded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from segloss.fileio import read_json_object

if TYPE_CHECKING:
    from segloss.training.config import TrainConfig

CONFIG_NAME = "config.yaml"
RUN_INFO_NAME = "segloss.json"  # versions and the input fingerprints
SUMMARY_NAME = "train_summary.json"
CARD_NAME = "README.md"
TRAINER_STATE = "trainer_state.json"  # the Trainer's, in each checkpoint (written last by its save)
MANIFEST = "checksums.json"  # each checkpoint's file checksums (segloss.training.checkpoints.write_manifest)
EVAL_DIR = "eval"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
ADAPTER_CONFIG = "adapter_config.json"  # a LoRA run's adapter (a full fine-tune saves config.json)
MODEL_CONFIGS = (ADAPTER_CONFIG, "config.json")  # a LoRA adapter, or a full model


class RunDir:
    """The run folder ``path`` (it need not exist yet): the paths of its files and their contents, typed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # -- file names ------------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def info_path(self) -> Path:
        return self.path / RUN_INFO_NAME

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_NAME

    @property
    def card_path(self) -> Path:
        return self.path / CARD_NAME

    def checkpoint_path(self, step: int) -> Path:
        return self.path / f"checkpoint-{step}"

    def eval_dir(self, split: str) -> Path:
        """Where `segloss eval --run` writes the predictions and metrics of ``split``."""
        return self.path / EVAL_DIR / split

    def checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, folder)`` of every ``checkpoint-<step>`` folder, newest (highest step) first."""
        if not self.path.is_dir():
            return []
        found = [(int(m[1]), p) for p in self.path.iterdir() if p.is_dir() and (m := CHECKPOINT_PATTERN.match(p.name))]
        return sorted(found, reverse=True)

    def has_model(self) -> bool:
        """The folder holds a saved adapter or full model (a finished run, or a checkpoint folder)."""
        return any((self.path / name).is_file() for name in MODEL_CONFIGS)

    # -- contents --------------------------------------------------------------------------------------------------
    def config_values(self) -> dict[str, Any]:
        """config.yaml as a mapping (untyped: for display; use :meth:`config` to read settings)."""
        return read_config_values(self.config_path)

    def config(self) -> TrainConfig:
        """config.yaml as the typed `TrainConfig`; errors name the file (missing, not YAML, unknown keys, bad
        values)."""
        return typed_config(self.config_values(), self.config_path)

    def stored_config_path(self) -> Path | None:
        """The config.yaml a resume compares with: the run's, else (runs written before it existed at start) the
        newest checkpoint's; None when there is none."""
        candidates = [self.config_path] + [folder / CONFIG_NAME for _, folder in self.checkpoints()]
        return next((path for path in candidates if path.is_file()), None)

    def summary(self) -> dict[str, Any] | None:
        """train_summary.json (None when training has not ended); an unreadable file is an error naming it."""
        if not self.summary_path.is_file():
            return None
        return read_json_object(self.summary_path)

    def inputs(self) -> dict[str, dict[str, Any]]:
        """The input record of segloss.json (or of the newest checkpoint's): ``{field: {path, given,
        fingerprint}}``; empty for runs written before it existed."""
        for path in [self.info_path] + [folder / RUN_INFO_NAME for _, folder in self.checkpoints()]:
            try:
                inputs = json.loads(path.read_text(encoding="utf-8")).get("inputs")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(inputs, dict):
                return inputs
        return {}


def read_config_values(path: Path) -> dict[str, Any]:
    """A run's config.yaml as a mapping; one-line errors name the file and the fix."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found; give a run directory written by `segloss train` (its output_dir, or a checkpoint-* "
            "folder in it)"
        )
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: not readable YAML ({' '.join(str(err).split())}); restore the file") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of field: value, got {type(values).__name__}; restore the file")
    return values


def typed_config(values: Mapping[str, Any], source: str | Path) -> TrainConfig:
    """``values`` (a config.yaml's) as the typed `TrainConfig`; errors are one line naming ``source``."""
    from segloss.training.config import train_config_from_values

    return train_config_from_values(values, str(source))
