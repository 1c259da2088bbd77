"""`--resume` that never mixes two trainings silently: the plan (checkpoint, config check, finished runs) and the
run ledger that keeps train_summary.json about the whole run across interruptions.

* The run directory's ``config.yaml`` is written when training starts; a resume compares it with the new settings
  and refuses any difference that changes training (loss, seed, data, model, optimiser, schedule, …), naming the
  fields, unless ``resume_allow_changes`` allows them (``True``: any field; a list: those fields) — then the old
  file is kept as ``config.before-step-<N>.yaml`` and the changes are recorded in the summary's ``resumes``.
* Input paths (``model``, ``data_path``, a ``dataset`` file or folder) are compared resolved
  (`segloss.training.config.resolve_field_path`): a trailing slash, a relative or absolute spelling, another working
  directory name the same path. A different path holding the same content (``segloss.json`` records each input's
  `content_fingerprint` at the start) is a moved copy and accepted; otherwise it is a change, named with its path.
* The checkpoint is the newest complete one whose files match their checksums
  (`segloss.training.checkpoints.choose_checkpoint`); one that fails to load anyway is skipped by :func:`fall_back`.
* A run that already has ``train_summary.json`` is finished: resuming it says so and changes nothing.
* :class:`RunLedger` stores the loss sum, the training seconds and the resume records inside each checkpoint's
  ``trainer_state.json`` (``stateful_callbacks``), so they always match the steps the checkpoint holds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from segloss.config import config_to_dict, field_names
from segloss.fileio import atomic_write, content_fingerprint

# The run folder's file names live in segloss.rundir; re-exported here for older imports.
from segloss.rundir import CONFIG_NAME as CONFIG_NAME
from segloss.rundir import RUN_INFO_NAME as RUN_INFO_NAME
from segloss.rundir import SUMMARY_NAME as SUMMARY_NAME
from segloss.rundir import TRAINER_STATE, RunDir, read_config_values, typed_config
from segloss.training.checkpoints import CheckpointLoadError, choose_checkpoint
from segloss.training.config import PATH_FIELDS, TrainConfig, resolve_field_path

logger = logging.getLogger("segloss.resume")
ALLOW_CHANGES_FLAG = "--resume_allow_changes"
# Fields that do not change what is trained: where results go, how often they are written, logged or evaluated,
# how batches are loaded, and the resume switches themselves. Every other field changes the weights a run produces.
NEUTRAL_FIELDS = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "resume",
        "overwrite",
        "resume_allow_changes",
        "resume_allow_missing_state",
        "resume_from_checkpoint",
        "report_to",
        "disable_tqdm",
        "run_name",
        "do_eval",
        "do_predict",
        "per_device_eval_batch_size",
        "skip_memory_metrics",
        "include_num_input_tokens_seen",
    }
)
NEUTRAL_PREFIXES = ("logging_", "log_", "save_", "eval_", "hub_", "push_to_hub", "dataloader_")
# Run switches that belong to one invocation: config.yaml stores them off so that re-running it does not inherit them.
INVOCATION_FIELDS = ("resume", "overwrite", "resume_allow_changes", "resume_allow_missing_state")


def stored_values(config: Any) -> dict[str, Any]:
    """What config.yaml records: the config's values with the per-invocation switches off (recorded elsewhere)."""
    values = config_to_dict(config)
    return {**values, **{name: False for name in INVOCATION_FIELDS if name in values}}


def save_run_config(config: Any, path: Path, command: str) -> None:
    """config.yaml: :func:`stored_values` as YAML, opening with the command that re-runs it (atomic); input paths are
    stored resolved, and a comment line shows each one's spelling as given."""
    given = getattr(config, "given_paths", {})
    header = "".join(f"# {name} given as {value}\n" for name, value in given.items())
    atomic_write(path, f"# {command}\n{header}" + yaml.safe_dump(stored_values(config), sort_keys=False))


def input_record(config: Any) -> dict[str, dict[str, str | None]]:
    """``{field: {path, given, fingerprint}}`` of the input paths that exist here (for ``segloss.json``)."""
    record: dict[str, dict[str, str | None]] = {}
    for name in PATH_FIELDS:
        path = getattr(config, name, None)
        # Stored paths are resolved, so absolute; a built-in dataset name or a hub id is not a path here.
        if path and Path(path).is_absolute() and Path(path).exists():
            given = config.given_paths.get(name, path)
            record[name] = {"path": path, "given": given, "fingerprint": content_fingerprint(path)}
    return record


def stored_inputs(output_dir: Path) -> dict[str, dict[str, Any]]:
    """The input record of the run's ``segloss.json`` (or of its newest checkpoint's); empty for older runs."""
    return RunDir(output_dir).inputs()


def stored_config(output_dir: Path) -> tuple[TrainConfig, Path] | None:
    """The run's config.yaml (or, for runs written before it existed at start, the newest checkpoint's) as the typed
    `TrainConfig`; None when there is none. A file that does not load is an error naming it."""
    path = RunDir(output_dir).stored_config_path()
    return None if path is None else (stored_train_config(read_config_values(path), path), path)


def stored_train_config(values: dict[str, Any], source: str | Path = CONFIG_NAME) -> TrainConfig:
    """A stored config.yaml's ``values`` as the typed `TrainConfig`. Keys that are no field any more (written by an
    older segloss) are left out, with a warning: they cannot be compared."""
    known = set(field_names(TrainConfig))
    dropped = [name for name in values if name not in known]
    if dropped:
        logger.warning("resume: %s has keys that are no setting any more, not compared: %s", source, dropped)
    return typed_config({k: v for k, v in values.items() if k in known}, source)


def _neutral(name: str) -> bool:
    return name in NEUTRAL_FIELDS or name.startswith(NEUTRAL_PREFIXES)


@dataclasses.dataclass
class SettingsComparison:
    """The stored settings against the new ones: ``changes`` (``{field: (stored, new)}``), ``moved`` (input paths
    that moved but hold the same content: ``{field: (stored, new)}``) and ``why`` (the reason of a path change)."""

    changes: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)
    moved: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)
    why: dict[str, str] = dataclasses.field(default_factory=dict)

    def text(self, names: Any = None) -> str:
        """``field (old -> new[: why])`` of the changes (those in ``names`` when given), comma-separated."""
        shown = [name for name in self.changes if names is None or name in names]
        return ", ".join(f"{n} ({self.changes[n][0]!r} -> {self.changes[n][1]!r}{_why(self.why, n)})" for n in shown)


def _why(why: dict[str, str], name: str) -> str:
    return f": {why[name]}" if name in why else ""


def compare_settings(
    stored: TrainConfig | dict[str, Any], config: TrainConfig, inputs: dict[str, dict[str, Any]] | None = None
) -> SettingsComparison:
    """Training-changing fields whose value differs, and input paths that moved (see :class:`SettingsComparison`).

    ``stored`` is the run's config (a config.yaml mapping is typed first, :func:`stored_train_config`): both sides
    are typed `TrainConfig` values, so ``1e-4`` and ``0.0001`` are one learning rate and a key config.yaml leaves
    out (a Trainer field at its default) is that default. ``lovasz`` + ce_weight 0.6 and ``ce=0.6,lovasz=0.4`` are
    the same objective (one `LossSpec`). Input paths are compared resolved; a different path is a moved copy when
    its content fingerprint matches the one ``inputs`` (the run's ``segloss.json``) recorded, or the old path's when
    that still exists.
    """
    old = stored if isinstance(stored, TrainConfig) else stored_train_config(stored)
    before, after = old.to_dict(), config.to_dict()  # every field, enums as their values
    result = SettingsComparison()
    for name in field_names(TrainConfig):
        if _neutral(name):
            continue
        if name in PATH_FIELDS:
            _compare_path(name, before[name], after[name], (inputs or {}).get(name), result)
        elif _plain(before[name]) != _plain(after[name]):
            result.changes[name] = (before[name], after[name])
    if old.loss_spec.weights == config.loss_spec.weights and old.loss_spec.options == config.loss_spec.options:
        for name in ("loss", "ce_weight", "loss_options"):
            result.changes.pop(name, None)
    return result


def _compare_path(name: str, old: Any, new: Any, recorded: dict[str, Any] | None, result: SettingsComparison) -> None:
    # A stored relative path (config.yaml of an older segloss) can only be read against today's working directory.
    old_path = resolve_field_path(name, old) if isinstance(old, str) else old
    if old_path == new:
        return
    known = recorded.get("fingerprint") if recorded and recorded.get("path") == old_path else None
    before = known or (content_fingerprint(old_path) if isinstance(old_path, str) else None)
    after = content_fingerprint(new) if isinstance(new, str) else None
    if before is not None and after == before:
        result.moved[name] = (old, new)
        return
    result.changes[name] = (old, new)
    if after is None and new is not None:
        result.why[name] = f"{new} does not exist"
    elif before is not None and after is not None:
        result.why[name] = f"{new} holds other content than the run started with"


def config_changes(
    stored: TrainConfig | dict[str, Any], config: TrainConfig, inputs: dict[str, dict[str, Any]] | None = None
) -> dict[str, tuple[Any, Any]]:
    """Training-changing fields whose value differs: ``{field: (stored, new)}`` (see :func:`compare_settings`)."""
    return compare_settings(stored, config, inputs).changes


def _plain(value: Any) -> Any:
    """Tuples as lists (YAML has only lists; a config built in Python may hold a tuple)."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _refused(changes: dict[str, tuple[Any, Any]], allowed: bool | list[str]) -> list[str]:
    """The changed fields that ``resume_allow_changes`` does not allow."""
    if allowed is True:
        return []
    return [name for name in changes if not allowed or name not in allowed]


@dataclasses.dataclass
class ResumePlan:
    """What ``--resume`` will do; ``finished`` is the stored summary of a run that already ended."""

    checkpoint: Path | None = None
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    missing_state: tuple[str, ...] = ()
    changes: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)
    finished: dict[str, Any] | None = None
    ledger: dict[str, Any] = dataclasses.field(default_factory=dict)
    moved: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)
    verified: bool = False

    @property
    def step(self) -> int:
        return int(self.ledger.get("global_step", 0))

    def at_end(self, max_steps: int) -> bool:
        """The checkpoint already holds every planned step (the run was killed while writing its final files).

        ``max_steps`` is the new config's (-1: epochs decide, and the checkpoint's own plan counts unless a setting
        changed). `Trainer.train` would run one step too many from here, so the caller finishes without it.
        """
        planned = max_steps if max_steps > 0 else (None if self.changes else self.ledger.get("max_steps"))
        return self.checkpoint is not None and planned is not None and self.step >= int(planned) > 0

    def record(self) -> dict[str, Any]:
        """The entry this resume adds to train_summary.json's ``resumes``."""
        return {
            "at_step": self.step,
            "checkpoint": self.checkpoint.name if self.checkpoint else None,
            "checkpoint_verified": self.verified,
            "skipped_checkpoints": dict(self.skipped),
            "missing_state": list(self.missing_state),
            "config_changes": {k: {"before": old, "after": new} for k, (old, new) in self.changes.items()},
            "moved_inputs": {k: {"before": old, "after": new} for k, (old, new) in self.moved.items()},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def plan_resume(config: Any, *, world_size: int = 1) -> ResumePlan:
    """Check a ``--resume`` of ``config.output_dir`` before any model is loaded; raises ``ValueError`` on a refusal.

    Refused: training settings that differ from the stored config.yaml (unless ``resume_allow_changes`` allows every
    change or names the changed fields), and a run whose checkpoints all lack optimizer/scheduler state (unless
    ``resume_allow_missing_state``).
    """
    out = Path(str(config.output_dir))
    plan = ResumePlan()
    stored = stored_config(out)
    if stored is None:
        logger.warning("resume: %s has no config.yaml to compare the settings with; trusting the new ones", out)
    else:
        comparison = compare_settings(stored[0], config, stored_inputs(out))
        plan.changes, plan.moved = comparison.changes, comparison.moved
        refused = _refused(plan.changes, config.resume_allow_changes)
        if refused:
            raise ValueError(
                f"resume: training settings differ from {stored[1]}: {comparison.text(refused)}. Resuming would mix "
                f"two trainings in one run. Resume with the stored settings (segloss train --config "
                f"{out / CONFIG_NAME} --resume), train into a new --output-dir, or pass {ALLOW_CHANGES_FLAG} "
                f"{' '.join(refused)} to continue anyway (the changes are recorded in train_summary.json)"
            )
        for name, (old, new) in plan.moved.items():
            logger.warning(
                "resume: %s moved from %s to %s, same content (fingerprint): the same input", name, old, new
            )
        if plan.changes:
            logger.warning("resume: continuing with changed settings (%s): %s", ALLOW_CHANGES_FLAG, comparison.text())
    finished = finished_summary(out)
    if finished is not None:
        plan.finished = finished
        return plan
    _choose(plan, config, world_size, exclude={})
    return plan


def _choose(plan: ResumePlan, config: Any, world_size: int, exclude: dict[str, str]) -> None:
    """Fill ``plan`` with the newest usable checkpoint (skipping ``exclude``: name → reason), saying what it chose."""
    choice = choose_checkpoint(
        Path(str(config.output_dir)),
        allow_missing_state=config.resume_allow_missing_state,
        world_size=world_size,
        exclude=exclude,
    )
    plan.checkpoint, plan.skipped, plan.missing_state = choice.checkpoint, choice.skipped, choice.missing_state
    plan.verified = choice.verified
    for line in choice.messages():
        logger.warning("resume: %s", line)
    plan.ledger = read_ledger(plan.checkpoint) if plan.checkpoint is not None else {}


def fall_back(plan: ResumePlan, error: CheckpointLoadError, config: Any, *, world_size: int = 1) -> ResumePlan:
    """The plan after the checkpoint of ``plan`` failed to load: that one is skipped, with ``error``'s reason, and the
    next older usable checkpoint chosen (None: start at step 0)."""
    logger.warning("resume: %s failed to load: %s", error.checkpoint.name, error.reason)
    plan = dataclasses.replace(plan)
    _choose(plan, config, world_size, exclude={**plan.skipped, error.checkpoint.name: error.reason})
    return plan


def finished_summary(output_dir: Path) -> dict[str, Any] | None:
    """The summary of a run that reached its last step (a run stopped early by a callback may go on)."""
    summary = RunDir(output_dir).summary()
    if summary is None:
        return None
    planned = summary.get("max_steps")
    return summary if planned is None or summary.get("steps", 0) >= planned else None


def archive_config(output_dir: Path, step: int) -> Path | None:
    """Keep the settings the first ``step`` steps used: config.yaml → config.before-step-<step>.yaml."""
    current = RunDir(output_dir).config_path
    if not current.is_file():
        return None
    target = output_dir / f"config.before-step-{step}.yaml"
    current.replace(target)
    return target


# -- the ledger --------------------------------------------------------------------------------------------------
def read_ledger(checkpoint: Path) -> dict[str, Any]:
    """``global_step`` and the RunLedger values stored in ``checkpoint``'s trainer_state.json."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    ledger = (state.get("stateful_callbacks") or {}).get(RunLedger.__name__) or {}
    steps = {"global_step": int(state.get("global_step", 0)), "max_steps": int(state.get("max_steps", 0))}
    return {**steps, **(ledger.get("args") or {})}


def finish_at_checkpoint(trainer: Any, checkpoint: Path) -> None:
    """Load a checkpoint that holds every planned step into ``trainer`` without training (see `ResumePlan.at_end`)."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(str(checkpoint))  # the loader Trainer.train itself uses (adapter or full model)
    trainer.state = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE))
    logged = [row for row in trainer.state.log_history if "total" in row]
    if logged:
        keys = [k for k in logged[-1] if k in ("ce", "task", "total") or k.startswith("task_")]
        trainer.last_components = {k: logged[-1][k] for k in keys}


class RunLedger(TrainerCallback, ExportableState):
    """Whole-run totals saved with every checkpoint: loss sum over optimizer steps, training seconds, resumes.

    ``loss_source()`` returns this session's sum of per-step losses (the trainer's); the totals are the stored
    values of the resumed checkpoint plus this session's.
    """

    def __init__(self, loss_sum: float = 0.0, wall_time_s: float = 0.0, resumes: list[dict] | None = None) -> None:
        self.loss_sum = float(loss_sum)
        self.wall_time_s = float(wall_time_s)
        self.resumes: list[dict[str, Any]] = list(resumes or [])
        self.loss_source: Callable[[], float] = lambda: 0.0
        self._session_start = time.perf_counter()

    @classmethod
    def for_plan(cls, plan: ResumePlan | None) -> RunLedger:
        if plan is None:
            return cls()
        ledger = plan.ledger
        resumes = [*ledger.get("resumes", []), plan.record()]
        return cls(ledger.get("loss_sum", 0.0), ledger.get("wall_time_s", 0.0), resumes)

    def totals(self) -> dict[str, Any]:
        return {
            "loss_sum": self.loss_sum + float(self.loss_source()),
            "wall_time_s": round(self.wall_time_s + time.perf_counter() - self._session_start, 3),
            "resumes": self.resumes,
        }

    def state(self) -> dict[str, Any]:
        return {"args": self.totals(), "attributes": {}}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # A checkpoint written before the ledger existed has no slot for it; the Trainer's save expects one.
        state.stateful_callbacks.setdefault(type(self).__name__, {})
        self._session_start = time.perf_counter()
