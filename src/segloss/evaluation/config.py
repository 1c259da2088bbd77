"""`EvalConfig`: every option of `segloss eval` (YAML configs mirror it exactly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from segloss.config import config_field

TEMPLATES: dict[str, str] = {
    # The dataset prompt as it is ("Question: …\nAnswer: "): the format segloss fine-tunes on.
    "plain": "{prompt}",
    # Alpaca-style instruction format used by instruction-tuned baselines (MAmmoTH, WizardMath, MetaMath…).
    "instruction": "### Instruction:\n{question}\n\n### Response:\n",
}
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class EvalConfig:
    """Options of `segloss eval`: a trained run (``run``) or an off-the-shelf baseline (``model`` + ``dataset``)."""

    run: str | None = config_field(None, help="Run directory written by `segloss train` (adapter + config.yaml).")
    model: str | None = config_field(None, help="Baseline mode: local directory or hub id of a causal LM.")
    dataset: str | None = config_field(None, help="Dataset name; required with `model`, defaults to the run's.")
    data_path: str | None = config_field(None, help="Directory of the raw dataset files (default: the run's).")
    dataset_options: dict[str, Any] | None = config_field(None, help="Dataset builder options (default: the run's).")
    split: str = config_field("test", help="Split to evaluate (train, validation, test).")
    limit: int | None = config_field(None, help="Evaluate only the first N examples of the split.")
    few_shot: int = config_field(0, help="Number of training examples prepended as demonstrations (seeded choice).")
    template: str = config_field("plain", help=f"Prompt template: {', '.join(TEMPLATES)}.")
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
    device: str | None = config_field(None, help="Device for the model (cpu, cuda, …; default: cuda if available).")
    dtype: str = config_field("float32", help=f"Model weights dtype: {', '.join(DTYPES)}.")

    def __post_init__(self) -> None:
        if (self.run is None) == (self.model is None):
            raise ValueError(
                "give exactly one of run (a `segloss train` run directory: --run DIR) or model "
                "(a baseline: --model PATH --dataset NAME)"
            )
        if self.model is not None and not self.dataset:
            raise ValueError("dataset is required with model (baseline mode): add --dataset gsm8k|mathqa|…")
        if self.template not in TEMPLATES:
            raise ValueError(f"template: unknown template {self.template!r}; valid templates: {', '.join(TEMPLATES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        for name, minimum in (("limit", 1), ("max_new_tokens", 1), ("max_length", 1)):
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ValueError(f"{name} must be >= {minimum} or unset, got {value}")
        if self.few_shot < 0:
            raise ValueError(f"few_shot must be >= 0, got {self.few_shot}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
