"""`TrainConfig`: every setting of `segloss train` — segloss's own fields plus the whole TRL `SFTConfig`.

``TrainConfig`` *is* a `trl.SFTConfig` (a `transformers.TrainingArguments`; it is handed to `SeglossSFTTrainer` as
``args``), extended by :class:`SeglossArguments`. The YAML files in ``configs/`` and the flags set both kinds of
field in one flat namespace, typed by jsonargparse (:func:`parse_train_config`, :func:`train_config_from_values`)::

    segloss train --config configs/gsm8k.yaml --learning_rate 1e-4 --eval_strategy steps --torch_compile

Adding a segloss setting: add a field to :class:`SeglossArguments` with ``config_field(default, help=...)`` (give it
a precise type — the parser checks values against it), validate it in ``SeglossArguments.__post_init__`` (raise
``ValueError`` naming the field and the fix), and read it as ``config.<name>``. Nothing else needs to change: the
flag, the YAML key, config.yaml and the grid's ``train:`` section follow the dataclass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments
from trl import SFTConfig

from segloss.config import (
    check_choices,
    config_field,
    config_from_values,
    field_names,
    parse_config,
    resolve_input_path,
    train_help_groups,
    typed_parser,
)
from segloss.data.templates import TemplateName
from segloss.losses.spec import DEFAULT_CE_WEIGHT, LossSpec
from segloss.models.loading import TorchDtype
from segloss.training.lora import LoraTargetName, LoraTargets, parse_lora_targets


@dataclasses.dataclass
class SeglossArguments:
    """segloss's own settings of a fine-tuning run; every other setting is an `SFTConfig` field."""

    # What to train on.
    model: str = config_field("", help="Local directory, hub id or .gguf file of a causal LM (AutoModelForCausalLM).")
    dataset: str = config_field(
        "arith",
        help="A built-in dataset (arith, gsm8k, mathqa, openbookqa, hellaswag) or your own data: a .jsonl/.json/.csv/"
        ".parquet file or folder, or a hub id, with prompt/completion or messages columns (docs/data.md).",
    )
    data_path: str | None = config_field(None, help="Directory of a built-in dataset's raw files (unused by arith).")
    dataset_options: dict[str, Any] = config_field(
        {}, help="Options of the dataset builder, e.g. {prompt_field: question, completion_field: answer}."
    )
    train_split: str = config_field("train", help="Split of the dataset used for training.")
    train_limit: int | None = config_field(None, help="Use at most this many training examples (None: all).")
    max_length: int = config_field(
        512,
        help="Longest tokenized example (prompt + answer + EOS): a longer prompt loses its beginning (BOS kept), an "
        "example whose answer does not fit is dropped; both are counted (train_summary.json `tokenization`).",
    )
    # Real pretrained models (issue 10): GGUF weights, base weights' dtype, prompt template.
    gguf_file: str | None = config_field(None, help="GGUF file inside the `model` folder (or give model=FILE.gguf).")
    torch_dtype: TorchDtype = config_field("float32", help="Base weights dtype: auto, float32, bfloat16, float16.")
    template: TemplateName = config_field(
        "plain", help="Prompt template: plain, instruction, chat (tokenizer's template)."
    )
    # The objective (parsed once into `loss_spec`).
    loss: dict[str, float] | str = config_field(
        "ce", help="Task loss name (ce, focal, gdice, sadl, lovasz), a weights string `ce=0.5,focal=0.5` or a mapping."
    )
    ce_weight: float = config_field(
        DEFAULT_CE_WEIGHT, help="CE weight when `loss` is one task loss (the task gets 1-ce_weight)."
    )
    loss_options: dict[str, dict[str, Any]] = config_field(
        {}, help="Options per loss name, e.g. {focal: {gamma: 2}, lovasz: {group: sequence, classes: all}}."
    )
    fused_loss: bool | None = config_field(
        None,
        help="Apply the output head inside the loss in row chunks (no [B, T, V] logits). None: on when the head is a "
        "plain Linear (LoRA does not adapt it) and a micro-batch's logits exceed one chunk (16M values).",
    )
    # The run directory (output_dir is a TrainingArguments field).
    resume: bool = config_field(False, help="Continue from the last checkpoint in output_dir (same data order).")
    overwrite: bool = config_field(False, help="Delete a non-empty output_dir and start over.")
    # Resume overrides: each is recorded in train_summary.json (`resumes`), never stored in config.yaml.
    resume_allow_changes: bool | list[str] = config_field(
        False,
        help="With --resume: continue although training settings differ from the run's config.yaml. Alone (or "
        "true): any field may differ; FIELD [FIELD...] (or FIELD,FIELD): only the named fields may.",
    )
    resume_allow_missing_state: bool = config_field(
        False, help="With --resume: accept a checkpoint without optimizer/scheduler/RNG state (the schedule restarts)."
    )
    # LoRA / full fine-tuning.
    full_finetune: bool = config_field(False, help="Train every weight instead of a LoRA adapter.")
    lora_r: int = config_field(8, help="LoRA rank.")
    lora_alpha: int = config_field(16, help="LoRA scaling alpha.")
    lora_dropout: float = config_field(0.05, help="Dropout on the LoRA input.")
    lora_targets: LoraTargetName | list[str] = config_field(
        "attention",
        help="Modules LoRA adapts: attention (the attention projections), authors (the paper code's list per family: "
        "Llama/StableLM q/k/v/o, gate/up/down and lm_head), all-linear (every linear layer but the head), or a list "
        "of module names. See segloss.training.lora.",
    )
    lora_target_modules: list[str] | None = config_field(
        None, help="Older spelling of lora_targets as a list of module names (wins over the default attention)."
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ValueError("model: give a local model directory or a hub id (--model PATH, or `model:` in YAML)")
        for name in ("max_length", "lora_r", "lora_alpha"):
            _check_positive(name, getattr(self, name))
        if self.train_limit is not None:
            _check_positive("train_limit", self.train_limit)
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite: --resume continues output_dir, --overwrite deletes it; pick one")
        if self.fused_loss is not None and not isinstance(self.fused_loss, bool):
            raise ValueError(f"fused_loss: true, false or null (automatic), got {self.fused_loss!r}")
        # Parsed once: the run adapts `lora_target_choice`; the two fields stay as given, so config.yaml reads back.
        self.lora_target_choice: LoraTargets = parse_lora_targets(self.lora_targets, self.lora_target_modules)
        if not isinstance(self.dataset_options, dict):
            raise ValueError("dataset_options: must be a mapping of builder options (e.g. `{n_train: 200}`)")
        _check_dataset(self.dataset)
        _check_model_options(self)
        _check_allowed_changes(self)
        try:  # unknown names, bad weights and unknown options fail here, before any model is loaded
            self.loss_spec = LossSpec.parse(self.loss, ce_weight=self.ce_weight, options=self.loss_options)
        except ValueError as err:
            message = str(err)
            raise ValueError(message if message.startswith(("loss", "ce_weight")) else f"loss: {message}") from None
        _check_task_weight(self)
        self.given_paths = _resolve_paths(self)


# Input paths stored resolved (config.yaml, the resume comparison); the spelling given is kept in `given_paths`.
# A model that is no local path is a hub id and stays as given.
# A dataset that is no built-in name and no local path is a hub id, and stays as given too.
PATH_FIELDS = {"model": True, "data_path": False, "dataset": True}  # field → local_only


def resolve_field_path(name: str, value: str | None) -> str | None:
    """The stored spelling of input path field ``name`` (one of :data:`PATH_FIELDS`): resolved, except a built-in
    dataset name, which means the built-in dataset even when a file or folder of that name lies in the working
    directory (as `segloss.data.get_builder` reads it)."""
    from segloss.data import DATASETS

    if name == "dataset" and value in DATASETS:
        return value
    return resolve_input_path(value, local_only=PATH_FIELDS[name])


def _resolve_paths(config: SeglossArguments) -> dict[str, str]:
    """Replace the input paths of ``config`` by their resolved spelling; returns ``{field: as given}`` of those that
    changed (config.yaml shows them)."""
    given = {}
    for name in PATH_FIELDS:
        value = getattr(config, name)
        resolved = resolve_field_path(name, value)
        if resolved != value:
            given[name] = value
            setattr(config, name, resolved)
    return given


def _check_task_weight(config: SeglossArguments) -> None:
    # `loss: lovasz` with ce_weight 1 gives lovasz the weight 1 - 1 = 0: a run labelled lovasz that trains CE alone.
    spec = config.loss_spec
    if spec.ce_weight == 1.0:
        raise ValueError(
            f"ce_weight: 1.0 gives {spec.label} the weight 0 (it gets 1 - ce_weight), so only CE would train; write "
            f"`loss: ce` for CE alone, or a ce_weight below 1 (the paper's {DEFAULT_CE_WEIGHT}) to train with the "
            "task loss"
        )


def _check_allowed_changes(config: SeglossArguments) -> None:
    allowed = config.resume_allow_changes
    if isinstance(allowed, bool):
        return
    valid = [f.name for f in dataclasses.fields(config) if f.init]  # a TrainConfig: the Trainer's fields too
    unknown = [name for name in allowed if name not in valid]
    if unknown:
        raise ValueError(
            f"resume_allow_changes: unknown field(s) {unknown}; name the fields that may differ from config.yaml "
            "(e.g. --resume_allow_changes seed data_path), or give the flag alone to allow every change"
        )


@dataclasses.dataclass
class TrainConfig(SeglossArguments, SFTConfig):  # type: ignore[misc]  # max_length: segloss's int, TRL's int | None
    """Settings of one fine-tuning run (``segloss train``): :class:`SeglossArguments` + TRL's `SFTConfig`.

    Only the defaults below differ from the Trainer's; every other Trainer or SFT option (DeepSpeed, FSDP,
    ``eval_strategy``, ``push_to_hub``, ``torch_compile``, ``padding_free``, …) is available under its own name.
    Where TRL's `SFTConfig` changes a `TrainingArguments` default (bf16 and gradient checkpointing on, learning rate
    2e-5) segloss keeps the Trainer's, so runs before and after the switch to TRL train alike; segloss's own training
    rows are tokenized and fitted to ``max_length`` before TRL sees them (`segloss.data.tokenize_examples`).
    """

    output_dir: str | None = config_field("runs/train", help="Run directory: checkpoints, adapter, config, summary.")
    learning_rate: float = config_field(2e-4, help="Peak learning rate (LoRA's usual 2e-4).")
    per_device_train_batch_size: int = config_field(4, help="Micro-batch size per process.")
    optim: str = config_field("adamw_torch", help="Transformers optimizer name.")
    logging_steps: float = config_field(10, help="Log the loss components every this many optimizer steps.")
    save_total_limit: int | None = config_field(2, help="Keep at most this many checkpoints (None: all).")
    # completion_mask is not a model input, but the task losses need it: the Trainer must not drop it.
    remove_unused_columns: bool = config_field(False, help="Must stay false: the task loss reads completion_mask.")
    include_num_input_tokens_seen: str | bool = config_field(
        "non_padding", help="Count the tokens trained on (train_summary.json's `tokens`)."
    )

    use_cpu: bool = config_field(False, help="Train on the CPU even when CUDA is available (always, without CUDA).")
    # SFTConfig's defaults that differ from TrainingArguments', set back: segloss trains as it did before TRL.
    bf16: bool | None = config_field(  # type: ignore[assignment]  # SFTConfig's type: None = "on unless fp16"
        False, help="bf16 mixed precision (TRL's SFTConfig turns it on by default, also on CPU; segloss does not)."
    )
    gradient_checkpointing: bool | None = config_field(  # type: ignore[assignment]  # TrainingArguments' type
        None, help="Deprecated alias of activation_checkpointing (TRL's SFTConfig turns it on; segloss leaves it off)."
    )
    pad_to_multiple_of: int | str | None = config_field(None, help="Pad each batch to a multiple of this many tokens.")
    completion_only_loss: bool | None = config_field(
        None,
        help="true: CE on the completion tokens only. null/false: CE on every token, the paper's objective (TRL's "
        "null means completion only; segloss says so once when training starts). The task loss is always on the "
        "completion.",
    )

    def __post_init__(self) -> None:
        SeglossArguments.__post_init__(self)  # segloss's fields first: a missing model is the likeliest slip
        _check_trainer_values(self)
        # Without CUDA, train on the CPU (not MPS, whose kernels the losses were not tested on); accelerate also
        # needs cpu=True to set up several CPU processes under torchrun.
        self.use_cpu = self.use_cpu or not torch.cuda.is_available()
        SFTConfig.__post_init__(self)

    @property
    def run_dir(self) -> Path:
        """``output_dir`` as a path (TrainingArguments fills in a default when it is None)."""
        return Path(str(self.output_dir))

    def loss_weights(self) -> dict[str, float]:
        """The resolved loss weights, e.g. ``{"ce": 0.6, "lovasz": 0.4}`` (``loss_spec.weights``)."""
        return dict(self.loss_spec.weights)

    def config_values(self) -> dict[str, Any]:
        """What config.yaml holds: every segloss field, then the Trainer fields that differ from Trainer defaults.

        Token fields (``hub_token``…) are never written. The result loads back through the same parser.
        """
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(SeglossArguments)}
        defaults = _trainer_defaults()
        for name, value in self.to_dict().items():
            if name in values or name.endswith("_token") or name == "output_dir":
                continue
            if name not in defaults or value not in defaults[name]:
                values[name] = value
        return {"output_dir": self.output_dir, **values}


def _trainer_defaults() -> dict[str, list[Any]]:
    """Each TrainingArguments field → its default, and what ``__post_init__`` turns that default into; each field
    that only `SFTConfig` has → `TrainConfig`'s default (config.yaml then reads as it did before segloss used TRL).

    Built from the dataclass fields: constructing a reference TrainingArguments would reset accelerate's state in
    the middle of a run (its ``__post_init__`` sets up the devices).
    """
    from transformers.trainer_pt_utils import AcceleratorConfig

    accelerator = AcceleratorConfig().to_dict()
    accelerator.pop("use_configured_state", None)  # __post_init__ pops it too
    normalised = {
        "report_to": [],
        "debug": [],
        "activation_checkpointing": False,
        "gradient_checkpointing": False,
        "accelerator_config": accelerator,
        "use_cpu": not torch.cuda.is_available(),
    }
    defaults: dict[str, list[Any]] = {}
    for f in dataclasses.fields(TrainingArguments):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = [f.default]
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = [f.default_factory()]
        if f.name in normalised:
            defaults[f.name].append(normalised[f.name])
    for f in dataclasses.fields(SFTConfig):
        if f.name not in defaults and f.default is not dataclasses.MISSING:
            defaults[f.name] = [TrainConfig.__dataclass_fields__[f.name].default]
    return defaults


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}: must be a positive integer, got {value!r}")


def _check_dataset(name: str) -> None:
    """A built-in name, or the form of the user's own file, folder or hub id; `train` checks that the data exists
    (a finished run's config.yaml must load although its data file has moved since)."""
    from segloss.data import DATASETS
    from segloss.data.custom import check_user_source

    if name not in DATASETS:
        check_user_source(name, must_exist=False)


def _check_model_options(config: SeglossArguments) -> None:
    check_choices(config)  # template, torch_dtype (the parser checks them too)
    if config.gguf_file is not None and config.model.lower().endswith(".gguf"):
        raise ValueError(f"gguf_file: model already names the GGUF file {config.model!r}; drop gguf_file")


def _check_trainer_values(config: TrainConfig) -> None:
    """The Trainer's own settings that it would only reject late (or never) — checked before any model loads."""
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps"):
        _check_positive(name, getattr(config, name))
    if config.max_steps == 0 or config.max_steps < -1:
        raise ValueError(f"max_steps: must be -1 (use num_train_epochs) or a positive count, got {config.max_steps}")
    if config.max_steps == -1 and config.num_train_epochs <= 0:
        raise ValueError(f"num_train_epochs: must be > 0 when max_steps is -1, got {config.num_train_epochs}")
    if config.learning_rate <= 0:
        raise ValueError(f"learning_rate: must be > 0, got {config.learning_rate}")
    if config.warmup_steps < 0 or config.weight_decay < 0 or config.max_grad_norm < 0:
        raise ValueError("warmup_steps, weight_decay and max_grad_norm must be >= 0")
    if config.save_total_limit is not None and config.save_total_limit <= 0:
        raise ValueError(f"save_total_limit: must be a positive count or null, got {config.save_total_limit}")
    if config.fp16 and config.bf16:
        raise ValueError("fp16 and bf16: choose at most one mixed-precision mode")
    if config.remove_unused_columns:
        raise ValueError("remove_unused_columns: must be false, the task loss reads the completion_mask column")
    if config.resume_from_checkpoint is not None:  # train() passes Trainer its own checked checkpoint, not this one
        raise ValueError(
            f"resume_from_checkpoint: {config.resume_from_checkpoint!r} is not used by segloss train; pass --resume "
            "(with --output_dir set to the run that holds the checkpoint) to continue from its newest complete "
            "checkpoint, with the settings checked against its config.yaml"
        )


def train_parser(*, prog: str | None = None, description: str | None = None) -> Any:
    """The jsonargparse parser of `TrainConfig` (``--config FILE`` + one flag per field); ``--help`` lists
    segloss's own settings (and ``output_dir``) first, then the Trainer's and TRL's in the sections of their
    documentation."""
    documented = {cls.__name__: (cls.__doc__ or "", field_names(cls)) for cls in (TrainingArguments, SFTConfig)}
    groups = train_help_groups(field_names(TrainConfig), field_names(SeglossArguments), documented)
    return typed_parser(TrainConfig, prog=prog, description=description, groups=groups)


def parse_train_config(argv: Sequence[str], parser: Any = None) -> TrainConfig:
    """`TrainConfig` from command-line arguments; errors are ``ValueError``/``FileNotFoundError`` naming the field."""
    return parse_config(parser or train_parser(), TrainConfig, argv)


def train_config_from_values(values: Mapping[str, Any], source: str = "config") -> TrainConfig:
    """`TrainConfig` from a mapping (a grid cell, a run's config.yaml), typed like a YAML file."""
    return config_from_values(TrainConfig, values, source)
