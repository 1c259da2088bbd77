"""Which ``checkpoint-<step>/`` folder a resumed run may start from.

A kill while the Trainer writes a checkpoint leaves the folder empty, without ``trainer_state.json`` (written last)
or with a truncated file. Such a folder is skipped and the next older one is used. A folder that is intact but lacks
the optimizer/scheduler/RNG state (``save_only_model``, or files deleted by hand) would restart the learning-rate
schedule and the Adam moments without a word, so it is used only when the caller allows it explicitly.

The structural checks read headers only (JSON, the safetensors header, the zip directory of a ``torch.save`` file).
Content is verified by checksum: when a checkpoint is complete, :func:`write_manifest` records the SHA-256 of each of
its files in ``checksums.json`` (written last, atomically), and :func:`inspect_checkpoint` compares them, so a file
whose bytes changed afterwards (a corrupt pickle inside an intact zip, bit-rot in tensor data, a partial copy) makes
the checkpoint unusable and the next older one is used. Verifying reads every byte once (about a second per GB).
A checkpoint without ``checksums.json`` (written by an older segloss, or the run was killed right after the
Trainer's save) is used unverified, and says so. Whatever slips through — a file that cannot be loaded when the
Trainer reads it — is a :class:`CheckpointLoadError` (:class:`CheckpointLoadGuard`), which ``train`` turns into a
fall back to the previous checkpoint, never a traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segloss.fileio import atomic_write, file_sha256
from segloss.rundir import CHECKPOINT_PATTERN, RunDir

# The run folder's file names live in segloss.rundir; re-exported here for older imports.
from segloss.rundir import MANIFEST as MANIFEST
from segloss.rundir import TRAINER_STATE as TRAINER_STATE

OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
ALLOW_MISSING_STATE_FLAG = "--resume_allow_missing_state"
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

    ``problems``: reasons it cannot be resumed from at all (missing, unreadable or changed files). ``missing_state``:
    the training-state files it lacks (optimizer, scheduler, RNG); usable only with ``allow_missing_state``.
    ``verified``: its files match the checksums of its ``checksums.json`` (False: it has none).
    """

    path: Path
    step: int
    problems: tuple[str, ...] = ()
    missing_state: tuple[str, ...] = ()
    verified: bool = False

    @property
    def complete(self) -> bool:
        return not self.problems and not self.missing_state


@dataclasses.dataclass(frozen=True)
class CheckpointChoice:
    """The checkpoint to resume from (None: none usable, start at step 0) and the newer ones skipped, with why."""

    checkpoint: Path | None
    skipped: dict[str, str]
    missing_state: tuple[str, ...] = ()
    verified: bool = False

    def messages(self) -> list[str]:
        lines = [f"skipped {name}: {reason}" for name, reason in self.skipped.items()]
        if self.checkpoint is None:
            lines.append("no usable checkpoint: training starts at step 0")
        else:
            lines.append(f"resuming from {self.checkpoint.name}")
            if not self.verified:
                lines.append(
                    f"{self.checkpoint.name} has no {MANIFEST} (written by an older segloss, or killed right after "
                    "the save): its content is not verified by checksum"
                )
            if self.missing_state:
                lines.append(
                    f"{self.checkpoint.name} has no {', '.join(self.missing_state)}: the optimizer and the "
                    f"learning-rate schedule restart ({ALLOW_MISSING_STATE_FLAG})"
                )
        return lines


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every ``checkpoint-<step>`` folder in ``output_dir``, newest (highest step) first."""
    return RunDir(output_dir).checkpoints()


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


# -- content checksums ---------------------------------------------------------------------------------------------
def _manifest_files(folder: Path) -> list[Path]:
    # Temporaries of an atomic write (`<name>.<host>.<pid>.tmp`) are not part of the checkpoint.
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp"))


def write_manifest(folder: str | Path) -> Path:
    """Record the size and SHA-256 of every file of the complete checkpoint ``folder`` in ``checksums.json``.

    Called once the checkpoint is complete (after the Trainer's save and segloss's run files); written atomically, so
    a checkpoint either has a full manifest or none.
    """
    folder = Path(folder)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in _manifest_files(folder)}
    manifest = {"format": 1, "algorithm": "sha256", "files": files}
    return atomic_write(folder / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def manifest_problems(folder: str | Path, *, absent_ok: Iterable[str] = ()) -> list[str] | None:
    """Files of ``folder`` that differ from its ``checksums.json`` (each with why); None when it has no manifest.

    ``absent_ok``: files whose absence the caller reports itself (missing optimizer/scheduler/RNG state).
    """
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text(encoding="utf-8"))["files"]
        recorded = {str(name): (int(entry["bytes"]), str(entry["sha256"])) for name, entry in files.items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as err:
        return [f"{MANIFEST} is unreadable ({type(err).__name__}: {err}); the checkpoint cannot be verified"]
    problems, absent = [], set(absent_ok)
    for name, (size, digest) in sorted(recorded.items()):
        file = folder / name
        if not file.is_file():
            if name not in absent:
                problems.append(f"{name} is missing (listed in {MANIFEST})")
        elif file.stat().st_size != size:
            problems.append(f"{name} has {file.stat().st_size} bytes, {MANIFEST} recorded {size} (a partial copy?)")
        elif file_sha256(file) != digest:
            problems.append(f"{name} does not match its checksum in {MANIFEST} (its bytes changed after the save)")
    return problems


def inspect_checkpoint(folder: str | Path, *, world_size: int = 1) -> CheckpointCheck:
    """Check that ``folder`` holds everything `Trainer.train(resume_from_checkpoint=folder)` needs, readable, and
    that its files match their checksums (``checksums.json``, when it has one)."""
    folder = Path(folder)
    match = CHECKPOINT_PATTERN.match(folder.name)
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
    changed = (
        manifest_problems(folder, absent_ok=missing) if not problems else []
    )  # a folder already unusable needs no hashing
    problems += changed or []
    return CheckpointCheck(folder, step, tuple(problems), tuple(missing), verified=changed == [])


def choose_checkpoint(
    output_dir: str | Path,
    *,
    allow_missing_state: bool = False,
    world_size: int = 1,
    exclude: Mapping[str, str] | None = None,
) -> CheckpointChoice:
    """The newest complete checkpoint of ``output_dir`` and the newer ones skipped (name → why).

    A checkpoint lacking only optimizer/scheduler/RNG state counts as usable when ``allow_missing_state``. Raises
    ``ValueError`` when no checkpoint is usable but some lack only that state (the flag would make them usable):
    starting over silently would throw their steps away. ``exclude`` (name → reason) skips checkpoints already
    found unloadable (:class:`CheckpointLoadError`).
    """
    skipped: dict[str, str] = {}
    state_only: list[str] = []
    for _, folder in list_checkpoints(output_dir):
        if exclude and folder.name in exclude:
            skipped[folder.name] = exclude[folder.name]
            continue
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
            return CheckpointChoice(folder, skipped, check.missing_state, check.verified)
    if state_only:
        raise ValueError(
            f"resume: no complete checkpoint in {output_dir}; {', '.join(state_only)} lack optimizer/scheduler/RNG "
            f"state. Pass {ALLOW_MISSING_STATE_FLAG} to resume from {state_only[0]} with a fresh optimizer and "
            "schedule (recorded in train_summary.json), or --overwrite to start over"
        )
    return CheckpointChoice(None, skipped)


# -- load errors: a fall back, never a traceback ---------------------------------------------------------------------
class CheckpointLoadError(Exception):
    """A file of the resume checkpoint failed to load when the Trainer read it; ``train`` falls back to an older one.

    ``reason`` is one line naming the file and the error (never PyTorch's advice to load the file unsafely).
    """

    def __init__(self, checkpoint: Path, reason: str) -> None:
        super().__init__(f"{checkpoint.name}: {reason}")
        self.checkpoint = checkpoint
        self.reason = reason


# Sentences of PyTorch's load errors that are advice, not diagnosis: the cure they offer (weights_only=False, or
# allow-listing globals) would run arbitrary code from a file that just failed to load as plain tensors.
_ADVICE = re.compile(r"weights_only|add_safe_globals|safe_globals\(|Please |Check the documentation|trust")


def load_error_text(err: BaseException) -> str:
    """``TypeName: what failed`` in one line, without PyTorch's advice to retry the load unsafely."""
    text = str(err)
    if "WeightsUnpickler error:" in text:  # torch.load(weights_only=True): the diagnosis follows this marker
        text = text.split("WeightsUnpickler error:", 1)[1]
    sentences = [part for line in text.splitlines() for part in re.split(r"(?<=[.!?])\s+", line.strip()) if part]
    kept = " ".join(s for s in sentences if not _ADVICE.search(s)) or "unreadable content"
    return f"{type(err).__name__}: {kept[:300]}"


def _load_file(path: Path) -> None:
    """Load one checkpoint file the way the Trainer does (tensors only); raises what the Trainer would meet."""
    if path.suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        load_file(str(path), device="cpu")
    else:
        import torch
        from transformers.trainer_pt_utils import safe_globals

        with safe_globals():  # the Trainer's own allow-list (numpy RNG state)
            torch.load(path, map_location="cpu", weights_only=True)


def _culprit(folder: Path, names: Iterable[str], err: BaseException) -> str:
    """The reason of a failed load: the first of ``names`` that does not load on its own, else all of them."""
    present = [name for name in names if (folder / name).is_file()]
    for name in present:
        try:
            _load_file(folder / name)
        except Exception as probe:  # any failure to load names this file
            return f"{name} cannot be loaded ({load_error_text(probe)})"
    return f"{' / '.join(present) or 'the checkpoint'} cannot be loaded ({load_error_text(err)})"


@contextlib.contextmanager
def _load_guard(checkpoint: str | os.PathLike[str] | None, names: Iterable[str]) -> Iterator[None]:
    try:
        yield
    except MemoryError:  # out of memory says nothing about the file: an older checkpoint would not load either
        raise
    except Exception as err:
        import torch

        if checkpoint is None or isinstance(err, torch.OutOfMemoryError):
            raise
        folder = Path(checkpoint)
        raise CheckpointLoadError(folder, _culprit(folder, names, err)) from err


def _weight_names(folder: Path) -> list[str]:
    return [name for pair in _WEIGHTS for name in pair if (folder / name).is_file()]


if TYPE_CHECKING:  # the mixin calls the Trainer's loaders; only type checkers need to know them
    from transformers import Trainer

    _TrainerBase = Trainer
else:
    _TrainerBase = object


class CheckpointLoadGuard(_TrainerBase):
    """Trainer mixin: an error while a resume checkpoint's weights, optimizer/scheduler or RNG state load becomes a
    :class:`CheckpointLoadError` naming the file (put it before ``Trainer`` in the bases)."""

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        with _load_guard(resume_from_checkpoint, _weight_names(Path(resume_from_checkpoint))):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        with _load_guard(checkpoint, (OPTIMIZER, SCHEDULER, "scaler.pt")):
            super()._load_optimizer_and_scheduler(checkpoint)

    def _load_rng_state(self, checkpoint: str | None) -> None:
        with _load_guard(checkpoint, _rng_files(self.args.world_size)):
            super()._load_rng_state(checkpoint)
