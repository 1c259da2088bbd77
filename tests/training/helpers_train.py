"""Shared pieces of the training tests: a tiny run config and the combined loss on a fixed batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from segloss.training import TrainConfig

TINY_RUN = {
    "dataset": "arith",
    "dataset_options": {"n_train": 16, "n_validation": 4, "n_test": 4, "max_steps": 2},
    "train_limit": 8,
    "max_length": 96,
    "per_device_train_batch_size": 4,
    "learning_rate": 1e-2,
    "logging_steps": 1,
    "save_steps": 100,
    "disable_tqdm": True,
}


def tiny_config(model_dir: Path, output_dir: Path, **overrides: Any) -> TrainConfig:
    return TrainConfig(**{**TINY_RUN, "model": str(model_dir), "output_dir": str(output_dir), **overrides})


def fixed_batch(config: TrainConfig, tokenizer: Any, n: int = 4) -> dict[str, torch.Tensor]:
    from segloss.data import load_examples, tokenize_examples
    from segloss.integrations.trl import padding_collator

    examples = load_examples(config.dataset, "train", limit=n, seed=config.seed, **config.dataset_options)
    dataset, _ = tokenize_examples(examples, tokenizer, config.max_length)
    batch = padding_collator(tokenizer)([dataset[i] for i in range(len(dataset))])
    return {**batch, "answer_labels": batch["labels"].masked_fill(batch["completion_mask"] == 0, -100)}


@torch.no_grad()
def batch_components(model: Any, batch: dict[str, torch.Tensor], weights: dict[str, float]) -> dict[str, float]:
    from segloss.losses import CombinedLoss, causal_shift

    model.eval()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels, answer_labels = causal_shift(batch["labels"], batch["answer_labels"])
    terms = CombinedLoss(weights).components(logits, labels, answer_labels)
    return {k: float(v) for k, v in terms.items()}


class StopAt(TrainerCallback):
    """An interruption after ``step`` optimizer steps (after that step's checkpoint)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
