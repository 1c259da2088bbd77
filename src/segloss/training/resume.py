"""`--resume` that never mixes two trainings silently: the plan (checkpoint, config check, finished runs) and the
run ledger that keeps train_summary.json about the whole run across interruptions.

* The run directory's ``config.yaml`` is written when training starts; a resume compares it with the new settings
  and refuses any difference that changes training (loss, seed, data, model, optimiser, schedule, …), naming the
  fields, unless ``resume_allow_changes`` is set — then the old file is kept as ``config.before-step-<N>.yaml`` and
  the changes are recorded in the summary's ``resumes``.
* The checkpoint is the newest complete one (`segloss.training.checkpoints.choose_checkpoint`).
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

from segloss.config import config_to_dict
from segloss.fileio import atomic_write
from segloss.training.checkpoints import TRAINER_STATE, choose_checkpoint, list_checkpoints

logger = logging.getLogger("segloss.resume")

CONFIG_NAME = "config.yaml"
SUMMARY_NAME = "train_summary.json"
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
    """config.yaml: :func:`stored_values` as YAML, opening with the command that re-runs it (atomic)."""
    atomic_write(path, f"# {command}\n" + yaml.safe_dump(stored_values(config), sort_keys=False))


def stored_config(output_dir: Path) -> tuple[dict[str, Any], Path] | None:
    """The run's config.yaml (or, for runs written before it existed at start, the newest checkpoint's)."""
    candidates = [output_dir / CONFIG_NAME] + [folder / CONFIG_NAME for _, folder in list_checkpoints(output_dir)]
    for path in candidates:
        if path.is_file():
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if isinstance(values, dict):
                return values, path
    return None


def _same_loss(stored: dict[str, Any], config: Any) -> bool:
    """``lovasz`` + ce_weight 0.6 and ``ce=0.6,lovasz=0.4`` are the same objective."""
    from segloss.losses.spec import LossSpec

    try:
        old = LossSpec.parse(
            stored["loss"], ce_weight=stored.get("ce_weight", 0.6), options=stored.get("loss_options")
        )
    except (KeyError, TypeError, ValueError):
        return False
    return bool(old.weights == config.loss_spec.weights and old.options == config.loss_spec.options)


def _neutral(name: str) -> bool:
    return name in NEUTRAL_FIELDS or name.startswith(NEUTRAL_PREFIXES)


def config_changes(stored: dict[str, Any], config: Any) -> dict[str, tuple[Any, Any]]:
    """Training-changing fields whose value differs: ``{field: (stored, new)}``.

    config.yaml leaves out Trainer fields at their defaults: a key missing from it stands for the field's default.
    Keys that are no field of the config (written by an older segloss) are not compared.
    """
    new = config_to_dict(config)
    current = config.to_dict() if hasattr(config, "to_dict") else new  # every field, defaults included
    defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
    changes = {}
    for name in sorted(set(stored) | set(new), key=list({**stored, **new}).index):
        if _neutral(name) or name not in current:
            continue
        old_value = stored[name] if name in stored else defaults.get(name, "(default)")
        new_value = new[name] if name in new else current[name]
        if _normalized(old_value) != _normalized(new_value):
            changes[name] = (old_value, new_value)
    if {"loss", "ce_weight", "loss_options"} & set(changes) and _same_loss(stored, config):
        for name in ("loss", "ce_weight", "loss_options"):
            changes.pop(name, None)
    return changes


def _normalized(value: Any) -> Any:
    # YAML turns tuples into lists; compare as JSON text.
    return json.dumps(value, sort_keys=True, default=str)


def _changes_text(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{name} ({old!r} -> {new!r})" for name, (old, new) in changes.items())


@dataclasses.dataclass
class ResumePlan:
    """What ``--resume`` will do; ``finished`` is the stored summary of a run that already ended."""

    checkpoint: Path | None = None
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    missing_state: tuple[str, ...] = ()
    changes: dict[str, tuple[Any, Any]] = dataclasses.field(default_factory=dict)
    finished: dict[str, Any] | None = None
    ledger: dict[str, Any] = dataclasses.field(default_factory=dict)

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
            "skipped_checkpoints": dict(self.skipped),
            "missing_state": list(self.missing_state),
            "config_changes": {k: {"before": old, "after": new} for k, (old, new) in self.changes.items()},
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def plan_resume(config: Any, *, world_size: int = 1) -> ResumePlan:
    """Check a ``--resume`` of ``config.output_dir`` before any model is loaded; raises ``ValueError`` on a refusal.

    Refused: training settings that differ from the stored config.yaml (unless ``resume_allow_changes``), and a
    run whose checkpoints all lack optimizer/scheduler state (unless ``resume_allow_missing_state``).
    """
    out = Path(str(config.output_dir))
    plan = ResumePlan()
    stored = stored_config(out)
    if stored is None:
        logger.warning("resume: %s has no config.yaml to compare the settings with; trusting the new ones", out)
    else:
        plan.changes = config_changes(stored[0], config)
        if plan.changes and not config.resume_allow_changes:
            raise ValueError(
                f"resume: training settings differ from {stored[1]}: {_changes_text(plan.changes)}. Resuming would "
                f"mix two trainings in one run. Resume with the stored settings (segloss train --config "
                f"{out / CONFIG_NAME} --resume), train into a new --output-dir, or pass {ALLOW_CHANGES_FLAG} to "
                "continue anyway (the changes are recorded in train_summary.json)"
            )
    finished = finished_summary(out)
    if finished is not None:
        plan.finished = finished
        return plan
    choice = choose_checkpoint(out, allow_missing_state=config.resume_allow_missing_state, world_size=world_size)
    plan.checkpoint, plan.skipped, plan.missing_state = choice.checkpoint, choice.skipped, choice.missing_state
    for line in choice.messages():
        logger.warning("resume: %s", line)
    if plan.changes:
        logger.warning(
            "resume: continuing with changed settings (%s): %s", ALLOW_CHANGES_FLAG, _changes_text(plan.changes)
        )
    if plan.checkpoint is not None:
        plan.ledger = read_ledger(plan.checkpoint)
    return plan


def finished_summary(output_dir: Path) -> dict[str, Any] | None:
    """The summary of a run that reached its last step (a run stopped early by a callback may go on)."""
    path = output_dir / SUMMARY_NAME
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    planned = summary.get("max_steps")
    return summary if planned is None or summary.get("steps", 0) >= planned else None


def archive_config(output_dir: Path, step: int) -> Path | None:
    """Keep the settings the first ``step`` steps used: config.yaml → config.before-step-<step>.yaml."""
    current = output_dir / CONFIG_NAME
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
