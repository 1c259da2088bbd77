"""`EvalConfig`: every option of `segloss eval` (YAML configs mirror it exactly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segloss.config import check_choices, config_field
from segloss.data.templates import TEMPLATES, TemplateName
from segloss.models.loading import TorchDtype

__all__ = ["TEMPLATES", "EvalConfig"]


@dataclass
class EvalConfig:
    """Options of `segloss eval`: a trained run (``run``) or an off-the-shelf baseline (``model`` + ``dataset``)."""

    run: str | None = config_field(None, help="Run directory written by `segloss train` (adapter + config.yaml).")
    model: str | None = config_field(None, help="Baseline mode: local directory, hub id or .gguf file of a causal LM.")
    gguf_file: str | None = config_field(None, help="Baseline mode: GGUF file inside the `model` folder.")
    dataset: str | None = config_field(
        None, help="Dataset name or your own data file/folder/hub id; required with `model`, defaults to the run's."
    )
    data_path: str | None = config_field(None, help="Directory of the raw dataset files (default: the run's).")
    dataset_options: dict[str, Any] | None = config_field(None, help="Dataset builder options (default: the run's).")
    split: str = config_field("test", help="Split to evaluate (train, validation, test).")
    limit: int | None = config_field(None, help="Evaluate only the first N examples of the split.")
    few_shot: int = config_field(0, help="Number of training examples prepended as demonstrations (seeded choice).")
    template: TemplateName | None = config_field(
        None, help="Prompt template, one of its type's values (default: the run's, else plain)."
    )
    stop_strings: bool = config_field(True, help="Stop generating at the dataset's stop strings and cut there.")
    max_new_tokens: int | None = config_field(None, help="Generation budget (default: per dataset, 256 math, 8 QA).")
    max_length: int | None = config_field(None, help="Longest prompt in tokens; longer ones lose their beginning.")
    batch_size: int = config_field(8, help="Prompts generated together (left padding).")
    output_dir: str | None = config_field(
        None, help="Folder for predictions.jsonl and metrics.json (default <run>/eval/<split>)."
    )
    seed: int = config_field(42, help="Seed of the few-shot choice, the bootstrap CIs and (baseline) the data.")
    loglikelihood: bool = config_field(True, help="QA sets: also score choices by log-likelihood (acc, acc_norm).")
    roscoe: bool = config_field(False, help="Also compute ROSCOE scores (needs the segloss[roscoe] extra).")
    roscoe_model: str | None = config_field(None, help="Sentence-transformers model for ROSCOE (default: packaged).")
    teacher_forced: bool = config_field(
        False,
        help="Math sets: also score teacher-forced argmax accuracy (the authors' training metric; an upper bound).",
    )
    # `str`, not `str | None`: jsonargparse reads an optional string as YAML, where `#### (.+)` is a comment (None).
    answer_pattern: str = config_field(
        "",
        help="Your own data: a regex that extracts the answer (its first group, else the match) from the generation "
        "and the reference; exact_match compares those (empty: the whole completion).",
    )
    device: str | None = config_field(None, help="Device for the model (cpu, cuda, …; default: cuda if available).")
    torch_dtype: TorchDtype = config_field("float32", help="Base weights dtype, one of the values listed.")

    def __post_init__(self) -> None:
        if (self.run is None) == (self.model is None):
            raise ValueError(
                "give exactly one of run (a `segloss train` run directory: --run DIR) or model "
                "(a baseline: --model PATH --dataset NAME)"
            )
        if self.model is not None and not self.dataset:
            raise ValueError(
                "dataset is required with model (baseline mode): add --dataset gsm8k|mathqa|… or a data file"
            )
        if self.dataset:
            from segloss.data import builder_class

            builder_class(self.dataset)  # an unknown name, a missing file: before any model loads
        if self.answer_pattern:
            from segloss.evaluation.user_data import compile_answer_pattern

            compile_answer_pattern(self.answer_pattern)
        check_choices(self)  # template, torch_dtype (the parser checks them too)
        if self.gguf_file is not None and self.model is None:
            raise ValueError("gguf_file: only with --model (a run loads its base model as it was trained)")
        for name, minimum in (("limit", 1), ("max_new_tokens", 1), ("max_length", 1)):
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ValueError(f"{name} must be >= {minimum} or unset, got {value}")
        if self.few_shot < 0:
            raise ValueError(f"few_shot must be >= 0, got {self.few_shot}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
