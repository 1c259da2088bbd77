"""`train(config)`: load model + data, fine-tune with `SeglossSFTTrainer` (TRL's `SFTTrainer` with the combined loss),
write checkpoints and the run summary;
`load_trained(run_dir)`: the model, tokenizer and config of a finished run (or of one of its checkpoints).

A run directory holds::

    adapter_model.safetensors + adapter_config.json   (LoRA; or the full model's weights with --full-finetune)
    tokenizer files, config.yaml (the resolved TrainConfig), train_summary.json
    segloss.json                                       (segloss/torch versions, the input paths' content fingerprints)
    README.md                                          (the model card, segloss.card; `segloss eval` adds metrics)
    checkpoint-<step>/                                 (same files + optimizer/scheduler/RNG state, for --resume,
                                                        + checksums.json: every file's SHA-256, written last)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainingArguments,
)

from segloss import __version__
from segloss.card import write_model_card
from segloss.fileio import atomic_write
from segloss.models.loading import (  # load_model_and_tokenizer re-exported: callers import it from here
    ensure_pad_token,
    load_model_and_tokenizer,
    resolve_dtype,
)
from segloss.rundir import ADAPTER_CONFIG, CONFIG_NAME, SUMMARY_NAME, RunDir
from segloss.training.checkpoints import CheckpointLoadError, write_manifest
from segloss.training.config import TrainConfig
from segloss.training.fused_head import resolve_fused_loss
from segloss.training.lora import apply_lora
from segloss.training.resume import (
    RUN_INFO_NAME,
    ResumePlan,
    RunLedger,
    archive_config,
    fall_back,
    finish_at_checkpoint,
    input_record,
    plan_resume,
    save_run_config,
)

logger = logging.getLogger("segloss.train")
VERSION_NAME = RUN_INFO_NAME


@dataclasses.dataclass
class TrainResult:
    """What a finished `train` call produced. ``model``/``tokenizer`` are the in-memory trained objects."""

    output_dir: Path
    global_step: int
    summary: dict[str, Any]
    model: Any = dataclasses.field(default=None, repr=False)
    tokenizer: Any = dataclasses.field(default=None, repr=False)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def write_run_files(config: TrainConfig, directory: Path, inputs: dict[str, Any] | None = None) -> None:
    """config.yaml (the resolved config, opening with the command that re-runs it) and segloss.json (versions and
    ``inputs``, the input paths' fingerprints of :func:`segloss.training.resume.input_record`)."""
    save_run_config(config, directory / CONFIG_NAME, command=f"segloss train --config {directory / CONFIG_NAME}")
    info = {"segloss_version": __version__, "torch_version": torch.__version__, "inputs": inputs or {}}
    _write_json(directory / VERSION_NAME, info)


class _RunFilesCallback(TrainerCallback):
    """Completes each checkpoint the Trainer writes: config.yaml and segloss.json, then checksums.json (last)."""

    def __init__(self, config: TrainConfig, inputs: dict[str, Any]) -> None:
        self.config = config
        self.inputs = inputs

    def on_save(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        checkpoint = Path(str(args.output_dir)) / f"checkpoint-{state.global_step}"
        args.distributed_state.wait_for_everyone()  # every process has written its RNG state before it is hashed
        if state.is_world_process_zero and checkpoint.is_dir():
            write_run_files(self.config, checkpoint, self.inputs)
            write_manifest(checkpoint)


def _check_output_dir(config: TrainConfig) -> bool:
    """A non-empty output_dir needs --resume or --overwrite; returns whether it is non-empty."""
    out = config.run_dir
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir: {out} exists and is not a directory")
    non_empty = out.is_dir() and any(out.iterdir())
    if non_empty and not (config.resume or config.overwrite):
        raise ValueError(
            f"output_dir: {out} is not empty; pass --resume to continue its last checkpoint, "
            "--overwrite to delete it, or choose another --output-dir"
        )
    return non_empty


def _clear_for_overwrite(config: TrainConfig, args: TrainingArguments, non_empty: bool) -> None:
    """With --overwrite, delete output_dir (main process; the others wait)."""
    with args.main_process_first(desc="prepare output_dir"):
        if non_empty and config.overwrite and args.process_index == 0:
            shutil.rmtree(config.run_dir)


def _write_start_files(config: TrainConfig, plan: ResumePlan | None, inputs: dict[str, Any]) -> None:
    """config.yaml at the start, so `segloss train --config <run>/config.yaml --resume` works after a crash."""
    out = config.run_dir
    if plan is not None and plan.changes:
        archive_config(out, plan.step)  # the settings the first steps used stay on disk
    write_run_files(config, out, inputs)


def build_training_data(config: TrainConfig, tokenizer: PreTrainedTokenizerBase) -> tuple[Any, Any]:
    """The training rows, tokenized by TRL and fitted to max_length (input_ids, completion_mask), and their
    `TokenizeStats` (`segloss.data.tokenize_examples`)."""
    from segloss.data import load_examples, tokenize_examples

    examples = load_examples(
        config.dataset,
        config.train_split,
        config.data_path,
        limit=config.train_limit,
        seed=config.seed,
        **config.dataset_options,
    )
    dataset, stats = tokenize_examples(examples, tokenizer, config.max_length, template=config.template)
    if stats.n_dropped or stats.n_prompt_truncated:
        print(
            f"[train] tokenization: {stats.n_prompt_truncated} of {stats.n_examples} prompts lost their beginning "
            f"and {stats.n_dropped} examples were dropped (answer longer than max_length={config.max_length})"
        )
    if len(dataset) == 0:
        raise ValueError(f"max_length: every training example is longer than {config.max_length} tokens; raise it")
    return dataset, stats


def build_model(config: TrainConfig) -> tuple[Any, PreTrainedTokenizerBase]:
    """Base model (``torch_dtype`` weights; fp16/bf16 are mixed precision) wrapped in LoRA unless --full-finetune."""
    torch.manual_seed(config.seed)  # LoRA's A matrices are drawn here
    model: Any
    model, tokenizer = load_model_and_tokenizer(config.model, dtype=config.torch_dtype, gguf_file=config.gguf_file)
    if config.activation_checkpointing:
        model.config.use_cache = False
    if not config.full_finetune:
        model = apply_lora(
            model,
            r=config.lora_r,
            alpha=config.lora_alpha,
            dropout=config.lora_dropout,
            targets=config.lora_target_choice,
        )
        if config.activation_checkpointing:
            model.enable_input_require_grads()
    return model, tokenizer


def train(config: TrainConfig, *, callbacks: list[TrainerCallback] | None = None) -> TrainResult:
    """Fine-tune ``config.model`` on ``config.dataset`` with the combined objective; see the module docstring."""
    from segloss.data import get_builder
    from segloss.integrations.trl import SeglossSFTTrainer

    args = config  # a TrainConfig is the trainer's SFTConfig
    non_empty = _check_output_dir(config)
    plan = plan_resume(config, world_size=args.world_size) if config.resume and non_empty else None
    if plan is not None and plan.finished is not None:
        return _finished_result(config, plan.finished)
    get_builder(config.dataset, **config.dataset_options)  # a missing data file or a bad option: before the model
    model, tokenizer = build_model(config)  # model and data errors surface before anything is deleted
    dataset, stats = build_training_data(config, tokenizer)
    tokens = config.per_device_train_batch_size * config.max_length
    fused_loss = resolve_fused_loss(config.fused_loss, model, tokens)  # raises before anything is deleted
    _clear_for_overwrite(config, args, non_empty)
    inputs = input_record(config) if args.process_index == 0 else {}
    if args.process_index == 0:
        _write_start_files(config, plan, inputs)

    def make_trainer(model: Any, ledger: RunLedger) -> SeglossSFTTrainer:
        trainer = SeglossSFTTrainer(
            model=model,
            args=_sft_args(config),
            train_dataset=dataset,
            processing_class=tokenizer,
            loss=config.loss_spec,
            fused_loss=fused_loss,
            callbacks=[_RunFilesCallback(config, inputs), ledger, *(callbacks or [])],
        )
        ledger.loss_source = trainer.run_loss_sum
        return trainer

    trainer, ledger, checkpoint = _train_from(plan, config, model, make_trainer)
    trainer.pop_components()  # terms of the steps after the last logging step
    summary = {
        **_summary(trainer, ledger, len(dataset), str(checkpoint) if checkpoint else None),
        "fused_loss": fused_loss,
        "tokenization": {
            "n_examples": stats.n_examples,
            "n_prompt_truncated": stats.n_prompt_truncated,
            "n_dropped": stats.n_dropped,
            "max_length": stats.max_length,
        },
    }
    trainer.save_model(str(config.run_dir))  # adapter (or full model) + tokenizer, main process only
    if args.process_index == 0:
        out = config.run_dir
        write_run_files(config, out, inputs)
        _write_json(out / SUMMARY_NAME, summary)
        write_model_card(out)  # README.md: objective, base model, data (eval adds the metrics)
    args.distributed_state.wait_for_everyone()
    return TrainResult(config.run_dir, trainer.state.global_step, summary, trainer.model, tokenizer)


def _sft_args(config: TrainConfig) -> TrainConfig:
    """The trainer's args: the config itself, except that with padding_free TRL gets ``max_length=None`` — it
    refuses a max_length it would not enforce on padding-free batches, and the rows already fit (tokenize_examples)."""
    if not config.padding_free:
        return config
    args = copy.copy(config)  # shares the accelerator state; config.yaml and the summary still read `config`
    args.max_length = None  # type: ignore[assignment]
    return args


def _train_from(
    plan: ResumePlan | None,
    config: TrainConfig,
    model: Any,
    make_trainer: Callable[[Any, RunLedger], Any],
) -> tuple[Any, RunLedger, Path | None]:
    """Train from ``plan``'s checkpoint (or finish at it, or start at step 0); the trainer, its ledger and the
    checkpoint used. A checkpoint that fails to load is skipped for the previous one (`fall_back`) and the model
    rebuilt."""
    while True:
        ledger = RunLedger.for_plan(plan)
        trainer = make_trainer(model, ledger)
        checkpoint = plan.checkpoint if plan is not None else None
        try:
            if plan is not None and checkpoint is not None and plan.at_end(config.max_steps):
                finish_at_checkpoint(trainer, checkpoint)
            else:
                trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            return trainer, ledger, checkpoint
        except CheckpointLoadError as err:  # only raised while a checkpoint loads: nothing was trained yet
            if plan is None:  # no checkpoint was handed over, so none failed: not ours to handle
                raise
            plan = fall_back(plan, err, config, world_size=config.world_size)
            model, _ = build_model(config)  # the failed load may have changed some weights already


def _summary(trainer: Any, ledger: RunLedger, n_examples: int, checkpoint: str | None) -> dict[str, Any]:
    """train_summary.json: the whole run, every session included (the ledger carries the earlier ones)."""
    totals = ledger.totals()
    steps = trainer.state.global_step
    return {
        "steps": steps,
        "max_steps": trainer.state.max_steps,
        "epochs": trainer.state.epoch,
        "tokens": int(trainer.state.num_input_tokens_seen),
        "train_examples": n_examples,
        "wall_time_s": totals["wall_time_s"],
        "resumed_from": checkpoint,
        "resumes": totals["resumes"],
        "train_loss": totals["loss_sum"] / steps if steps else float("nan"),
        "final_losses": trainer.last_components,
        "loss_weights": dict(trainer.combined_loss.weights),
        "world_size": trainer.args.world_size,
        "segloss_version": __version__,
    }


def _finished_result(config: TrainConfig, summary: dict[str, Any]) -> TrainResult:
    out = config.run_dir
    logger.warning(
        "resume: %s already finished (%s steps, see %s); nothing to do and nothing changed. "
        "Use --overwrite to train it again, or another --output-dir",
        out,
        summary.get("steps"),
        out / SUMMARY_NAME,
    )
    return TrainResult(out, int(summary.get("steps", 0)), {**summary, "already_finished": True})


def load_trained(
    run_dir: str | Path,
    *,
    dtype: torch.dtype | str = torch.float32,
) -> tuple[Any, PreTrainedTokenizerBase, TrainConfig]:
    """The trained model (base + LoRA adapter, or the full model), its tokenizer and its `TrainConfig`, in eval mode.

    ``run_dir`` is a finished run directory or one of its ``checkpoint-*`` folders. The base model of a LoRA run is
    loaded again from ``config.model``, so that path (or hub id) must still be reachable.
    """
    run_dir = Path(run_dir)
    config = RunDir(run_dir).config()
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(run_dir))
    if (run_dir / ADAPTER_CONFIG).is_file():
        from peft import PeftModel

        base, _ = load_model_and_tokenizer(config.model, dtype=dtype, gguf_file=config.gguf_file)
        model: Any = PeftModel.from_pretrained(base, run_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            run_dir, dtype=resolve_dtype(dtype) if isinstance(dtype, str) else dtype
        )
    model.eval()
    return model, tokenizer, config
