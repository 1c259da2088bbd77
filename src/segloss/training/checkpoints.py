"""Which ``checkpoint-<step>/`` folder a resumed run may start from.

A kill while the Trainer writes a checkpoint leaves the folder empty, without ``trainer_state.json`` (written last)
or with a truncated file. Such a folder is skipped and the next older one is used. A folder that is intact but lacks
the optimizer/scheduler/RNG state (``save_only_model``, or files deleted by hand) would restart the learning-rate
schedule and the Adam moments without a word, so it is used only when the caller allows it explicitly.

Every check reads headers only (JSON, the safetensors header, the zip directory of a ``torch.save`` file): checking
a folder costs milliseconds even for a large model.
"""

from __future__ import annotations

import dataclasses
import json
import re
import zipfile
from pathlib import Path

TRAINER_STATE = "trainer_state.json"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
ALLOW_MISSING_STATE_FLAG = "--resume_allow_missing_state"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Weight files the Trainer can resume from, in the order it looks for them; with a config file beside them.
_WEIGHTS = (
    ("adapter_model.safetensors", "adapter_config.json"),
    ("adapter_model.bin", "adapter_config.json"),
    ("model.safetensors", "config.json"),
    ("model.safetensors.index.json", "config.json"),
    ("pytorch_model.bin", "config.json"),
    ("pytorch_model.bin.index.json", "config.json"),
)


@dataclasses.dataclass(frozen=True)
class CheckpointCheck:
    """What is wrong with one checkpoint folder.

    ``problems``: reasons it cannot be resumed from at all (missing or unreadable files). ``missing_state``: the
    training-state files it lacks (optimizer, scheduler, RNG); usable only with ``allow_missing_state``.
    """

    path: Path
    step: int
    problems: tuple[str, ...] = ()
    missing_state: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.problems and not self.missing_state


@dataclasses.dataclass(frozen=True)
class CheckpointChoice:
    """The checkpoint to resume from (None: none usable, start at step 0) and the newer ones skipped, with why."""

    checkpoint: Path | None
    skipped: dict[str, str]
    missing_state: tuple[str, ...] = ()

    def messages(self) -> list[str]:
        lines = [f"skipped {name}: {reason}" for name, reason in self.skipped.items()]
        if self.checkpoint is None:
            lines.append("no usable checkpoint: training starts at step 0")
        else:
            lines.append(f"resuming from {self.checkpoint.name}")
            if self.missing_state:
                lines.append(
                    f"{self.checkpoint.name} has no {', '.join(self.missing_state)}: the optimizer and the "
                    f"learning-rate schedule restart ({ALLOW_MISSING_STATE_FLAG})"
                )
        return lines


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-<step>`` folder in ``output_dir``, newest (highest step) first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [(int(m[1]), p) for p in out.iterdir() if p.is_dir() and (m := _CHECKPOINT.match(p.name))]
    return sorted(found, reverse=True)


def _json_problem(path: Path, required_key: str | None = None) -> str | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return f"{path.name} is unreadable ({type(err).__name__}: {err}); it was cut off while being written"
    if required_key is not None and (not isinstance(payload, dict) or required_key not in payload):
        return f"{path.name} has no {required_key!r}; it is not a Trainer state"
    return None


def _safetensors_problem(path: Path) -> str | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as err:  # safetensors raises its own error type for a truncated header or body
        return f"{path.name} is truncated or unreadable ({err})"
    return None


def _torch_file_problem(path: Path) -> str | None:
    # torch.save writes a zip whose directory comes last: a file cut off anywhere has no readable directory.
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (OSError, zipfile.BadZipFile) as err:
        return f"{path.name} is truncated or unreadable ({err})"
    return None


def _file_problem(path: Path) -> str | None:
    if path.suffix == ".safetensors":
        return _safetensors_problem(path)
    if path.suffix == ".json":
        return _json_problem(path)
    return _torch_file_problem(path)


def _weights_problems(folder: Path) -> list[str]:
    for weights, config in _WEIGHTS:
        if not (folder / weights).is_file():
            continue
        problems = [p for p in (_file_problem(folder / weights),) if p]
        if not (folder / config).is_file():
            problems.append(f"{weights} has no {config} beside it")
        elif problem := _json_problem(folder / config):
            problems.append(problem)
        if weights.endswith(".index.json") and not problems:
            index = json.loads((folder / weights).read_text(encoding="utf-8"))
            shards = sorted(set(index.get("weight_map", {}).values()))
            problems += [f"shard {s} is missing" for s in shards if not (folder / s).is_file()]
            problems += [p for s in shards if (folder / s).is_file() and (p := _file_problem(folder / s))]
        return problems
    return ["no model weights (adapter_model.safetensors or model.safetensors)"]


def _rng_files(world_size: int) -> list[str]:
    return ["rng_state.pth"] if world_size <= 1 else [f"rng_state_{rank}.pth" for rank in range(world_size)]


def inspect_checkpoint(folder: str | Path, *, world_size: int = 1) -> CheckpointCheck:
    """Check that ``folder`` holds everything `Trainer.train(resume_from_checkpoint=folder)` needs, readable."""
    folder = Path(folder)
    match = _CHECKPOINT.match(folder.name)
    step = int(match[1]) if match else -1
    if not folder.is_dir() or not any(folder.iterdir()):
        return CheckpointCheck(folder, step, ("empty folder (the save was interrupted before any file was written)",))
    problems: list[str] = []
    state = folder / TRAINER_STATE
    if not state.is_file():
        problems.append(f"no {TRAINER_STATE} (written last: the save was interrupted)")
    elif problem := _json_problem(state, "global_step"):
        problems.append(problem)
    problems += _weights_problems(folder)
    missing: list[str] = []
    for name in (OPTIMIZER, SCHEDULER, *_rng_files(world_size)):
        if not (folder / name).is_file():
            missing.append(name)
        elif problem := _torch_file_problem(folder / name):
            problems.append(problem)
    return CheckpointCheck(folder, step, tuple(problems), tuple(missing))


def choose_checkpoint(
    output_dir: str | Path, *, allow_missing_state: bool = False, world_size: int = 1
) -> CheckpointChoice:
    """The newest complete checkpoint of ``output_dir`` and the newer ones skipped (name → why).

    A checkpoint lacking only optimizer/scheduler/RNG state counts as usable when ``allow_missing_state``. Raises
    ``ValueError`` when no checkpoint is usable but some lack only that state (the flag would make them usable):
    starting over silently would throw their steps away.
    """
    skipped: dict[str, str] = {}
    state_only: list[str] = []
    for _, folder in list_checkpoints(output_dir):
        check = inspect_checkpoint(folder, world_size=world_size)
        if check.problems:
            skipped[folder.name] = "; ".join(check.problems)
        elif check.missing_state and not allow_missing_state:
            skipped[folder.name] = (
                f"no {', '.join(check.missing_state)} (the optimizer and learning-rate schedule would restart; "
                f"pass {ALLOW_MISSING_STATE_FLAG} to use it anyway)"
            )
            state_only.append(folder.name)
        else:
            return CheckpointChoice(folder, skipped, check.missing_state)
    if state_only:
        raise ValueError(
            f"resume: no complete checkpoint in {output_dir}; {', '.join(state_only)} lack optimizer/scheduler/RNG "
            f"state. Pass {ALLOW_MISSING_STATE_FLAG} to resume from {state_only[0]} with a fresh optimizer and "
            "schedule (recorded in train_summary.json), or --overwrite to start over"
        )
    return CheckpointChoice(None, skipped)
