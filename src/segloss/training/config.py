"""`TrainConfig`: every setting of `segloss train`, mirrored by the YAML files in ``configs/`` and by the flags."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from segloss.config import config_field


@dataclasses.dataclass
class TrainConfig:
    """Settings of one fine-tuning run (``segloss train``)."""

    # What to train on.
    model: str = config_field("", help="Local directory or hub id of a causal LM (AutoModelForCausalLM).")
    dataset: str = config_field("arith", help="Dataset name (see `segloss data`); arith needs no path.")
    data_path: str | None = config_field(None, help="Directory of the raw dataset files (unused by arith).")
    dataset_options: dict[str, Any] = config_field({}, help="Extra options of the dataset builder, as a mapping.")
    train_split: str = config_field("train", help="Split of the dataset used for training.")
    train_limit: int | None = config_field(None, help="Use at most this many training examples (None: all).")
    max_length: int = config_field(512, help="Longest tokenized example (prompt + answer) kept for training.")
    # Real pretrained models (issue 10): GGUF weights, base dtype, prompt template.
    gguf_file: str | None = config_field(None, help="GGUF file inside the `model` folder (or give model=FILE.gguf).")
    torch_dtype: str = config_field("float32", help="Base weights dtype: auto, float32, bfloat16, float16.")
    template: str = config_field("plain", help="Prompt template: plain, instruction, chat (tokenizer's template).")
    # The objective.
    loss: str | dict[str, float] = config_field(
        "ce", help="Task loss name (ce, focal, gdice, sadl, lovasz), a weights string `ce=0.5,focal=0.5` or a mapping."
    )
    ce_weight: float = config_field(0.6, help="CE weight when `loss` is one task loss (the task gets 1-ce_weight).")
    loss_options: dict[str, dict[str, Any]] = config_field({}, help="Options per loss name, e.g. {focal: {gamma: 2}}.")
    # Where results go.
    output_dir: str = config_field("runs/train", help="Run directory: checkpoints, final adapter, config, summary.")
    resume: bool = config_field(False, help="Continue from the last checkpoint in output_dir (same data order).")
    overwrite: bool = config_field(False, help="Delete a non-empty output_dir and start over.")
    # LoRA / full fine-tuning.
    full_finetune: bool = config_field(False, help="Train every weight instead of a LoRA adapter.")
    lora_r: int = config_field(8, help="LoRA rank.")
    lora_alpha: int = config_field(16, help="LoRA scaling alpha.")
    lora_dropout: float = config_field(0.05, help="Dropout on the LoRA input.")
    lora_target_modules: list[str] | None = config_field(
        None, help="Module names to adapt (None: chosen from the architecture, see segloss.training.lora)."
    )
    # Optimisation.
    max_steps: int = config_field(-1, help="Optimizer steps to run; -1 means num_train_epochs decides.")
    num_train_epochs: float = config_field(3.0, help="Epochs over the training set (when max_steps is -1).")
    learning_rate: float = config_field(2e-4, help="Peak learning rate.")
    lr_scheduler_type: str = config_field("linear", help="Transformers scheduler name (linear, cosine, constant…).")
    warmup_steps: int = config_field(0, help="Linear warm-up steps.")
    weight_decay: float = config_field(0.0, help="AdamW weight decay.")
    max_grad_norm: float = config_field(1.0, help="Gradient clipping norm (0 disables).")
    optim: str = config_field("adamw_torch", help="Transformers optimizer name.")
    per_device_train_batch_size: int = config_field(4, help="Micro-batch size per process.")
    gradient_accumulation_steps: int = config_field(1, help="Micro-batches per optimizer step (exact).")
    gradient_checkpointing: bool = config_field(False, help="Recompute activations in backward to save memory.")
    seed: int = config_field(42, help="Seed of the model init, the data order and the dataset sampling.")
    fp16: bool = config_field(False, help="fp16 mixed precision (GPU); the loss is still computed in float32.")
    bf16: bool = config_field(False, help="bf16 mixed precision; the loss is still computed in float32.")
    # Bookkeeping.
    logging_steps: int = config_field(10, help="Log the loss components every this many optimizer steps.")
    save_steps: int = config_field(500, help="Write a checkpoint every this many optimizer steps.")
    save_total_limit: int | None = config_field(2, help="Keep at most this many checkpoints (None: all).")
    report_to: str = config_field("none", help="Where the Trainer reports: none, tensorboard, … (comma-separated).")
    disable_tqdm: bool = config_field(False, help="Hide the Trainer's progress bar.")

    def __post_init__(self) -> None:
        if not self.model or not str(self.model).strip():
            raise ValueError("model: give a local model directory or a hub id (--model PATH, or `model:` in YAML)")
        self._check_positive(
            "max_length",
            "per_device_train_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
            "save_steps",
            "lora_r",
            "lora_alpha",
        )
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps: must be -1 (use num_train_epochs) or a positive count, got {self.max_steps}")
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ValueError(f"num_train_epochs: must be > 0 when max_steps is -1, got {self.num_train_epochs}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate: must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout: must be in [0, 1), got {self.lora_dropout}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.max_grad_norm < 0:
            raise ValueError("warmup_steps, weight_decay and max_grad_norm must be >= 0")
        if self.train_limit is not None and self.train_limit <= 0:
            raise ValueError(f"train_limit: must be a positive count or null, got {self.train_limit}")
        if self.save_total_limit is not None and self.save_total_limit <= 0:
            raise ValueError(f"save_total_limit: must be a positive count or null, got {self.save_total_limit}")
        if self.fp16 and self.bf16:
            raise ValueError("fp16 and bf16: choose at most one mixed-precision mode")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite: --resume continues output_dir, --overwrite deletes it; pick one")
        if self.lora_target_modules is not None and (
            not isinstance(self.lora_target_modules, list) or not self.lora_target_modules
        ):
            raise ValueError("lora_target_modules: a non-empty list of module names, or null for automatic")
        if not isinstance(self.dataset_options, dict) or not isinstance(self.loss_options, dict):
            raise ValueError("dataset_options and loss_options: must be mappings (e.g. `{gamma: 2}`)")
        self._check_dataset()
        self._check_model_options()
        self.loss_weights()  # unknown names and all-zero weights fail here, before any model is loaded

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")

    def _check_dataset(self) -> None:
        from segloss.data import DATASETS

        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: unknown name {self.dataset!r}; valid names: {sorted(DATASETS)}")

    def _check_model_options(self) -> None:
        from segloss.data.templates import TEMPLATES
        from segloss.models.loading import TORCH_DTYPES

        if self.torch_dtype not in TORCH_DTYPES:
            raise ValueError(f"torch_dtype: unknown dtype {self.torch_dtype!r}; valid: {', '.join(TORCH_DTYPES)}")
        if self.template not in TEMPLATES:
            raise ValueError(f"template: unknown template {self.template!r}; valid: {', '.join(TEMPLATES)}")
        if self.gguf_file is not None and str(self.model).lower().endswith(".gguf"):
            raise ValueError(f"gguf_file: model already names the GGUF file {self.model!r}; drop gguf_file")

    def loss_weights(self) -> dict[str, float]:
        """The resolved loss weights, e.g. ``{"ce": 0.6, "lovasz": 0.4}``; raises ``ValueError`` on a bad spec."""
        from segloss.losses import LOSSES, parse_loss_spec

        spec = self.loss
        single = isinstance(spec, str) and "=" not in spec and "," not in spec
        try:
            weights = parse_loss_spec(
                cast(str, spec).strip() if single else spec, ce_weight=self.ce_weight if single else None
            )
        except ValueError as err:
            raise ValueError(f"loss: {err}") from err
        unknown = sorted(set(weights) - set(LOSSES))
        if unknown:
            raise ValueError(f"loss: unknown loss name(s) {unknown}; valid names: {sorted(LOSSES)}")
        if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"loss: weights must be >= 0 and not all zero, got {weights}")
        unknown_options = sorted(set(self.loss_options) - set(weights))
        if unknown_options:
            raise ValueError(f"loss_options: options given for {unknown_options}, which are not in the loss {weights}")
        return weights
