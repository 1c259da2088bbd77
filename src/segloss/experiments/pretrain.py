"""Pretrain the demo's tiny base model: a BPE tokenizer and a tiny Llama trained with plain CE on synthetic problems.

The paper fine-tunes pretrained LLMs; the demo has no hub access, so it makes its own "pretrained" base: a tokenizer
(:func:`segloss.models.train_tokenizer`) and a tiny Llama-architecture model trained with the Hugging Face ``Trainer``
on full ``prompt + answer`` texts of a dataset (the synthetic ``arith`` by default). The result is saved with
``save_pretrained`` into the user cache and reused by every later call with the same settings::

    from segloss.experiments.pretrain import PretrainConfig, pretrain_base_model
    base_dir = pretrain_base_model(PretrainConfig(max_steps=200))   # ~/.cache/segloss/base-<hash>/

Cache layout: ``$XDG_CACHE_HOME/segloss`` (else ``~/.cache/segloss``), or ``cache_dir`` when given; the directory
name carries a hash of every setting that changes the weights. Writing is atomic: the model is built in a temporary
sibling directory that is renamed into place only once complete (``pretrain.json`` written last), so an interrupted
run never leaves a directory that a later call would reuse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segloss.config import config_field, config_to_dict
from segloss.fileio import build_directory, cache_root

logger = logging.getLogger(__name__)

# Bump when the pretraining recipe changes in a way the settings below do not capture: old caches are then ignored.
RECIPE_VERSION = 1
MARKER = "pretrain.json"


@dataclasses.dataclass
class PretrainConfig:
    dataset: str = config_field("arith", help="Dataset whose prompt+answer texts make the pretraining corpus.")
    split: str = config_field("train", help="Split of the dataset used as the corpus.")
    dataset_options: dict = config_field({}, help="Options of the dataset builder (arith: n_train, max_steps, …).")
    data_seed: int = config_field(0, help="Seed of the (synthetic) dataset the corpus is drawn from.")
    skip_examples: int = config_field(
        0, help="Leave out the first N examples of the split (the demo fine-tunes on them: the base never sees them)."
    )
    vocab_size: int = config_field(384, help="BPE vocabulary size (digits are single tokens whatever the size).")
    tokenizer_texts: int = config_field(2000, help="How many corpus texts train the tokenizer.")
    with_pad: bool = config_field(False, help="Give the tokenizer a pad token (Llama-style tokenizers have none).")
    hidden_size: int = config_field(128, help="Hidden size of the tiny Llama.")
    num_layers: int = config_field(4, help="Number of transformer layers.")
    num_heads: int = config_field(4, help="Number of attention heads (must divide hidden_size).")
    max_length: int = config_field(256, help="Token budget per example (prompt truncated from the left).")
    max_steps: int = config_field(1500, help="Optimizer steps of pretraining.")
    batch_size: int = config_field(32, help="Examples per optimizer step.")
    learning_rate: float = config_field(3e-3, help="Peak learning rate (cosine schedule with warm-up).")
    warmup_steps: int = config_field(50, help="Linear warm-up steps.")
    seed: int = config_field(0, help="Seed of the initial weights and of the data order.")
    cache_dir: str | None = config_field(None, help="Cache root; default $XDG_CACHE_HOME/segloss or ~/.cache/segloss.")

    def __post_init__(self) -> None:
        positive = (
            "vocab_size",
            "tokenizer_texts",
            "hidden_size",
            "num_layers",
            "num_heads",
            "max_length",
            "max_steps",
            "batch_size",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"PretrainConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"PretrainConfig.hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"PretrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        for name in ("warmup_steps", "skip_examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"PretrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not isinstance(self.dataset_options, dict):
            raise ValueError(
                "PretrainConfig.dataset_options must be a mapping of option: value, "
                f"got {type(self.dataset_options).__name__}"
            )


def settings_hash(config: PretrainConfig) -> str:
    """A short hash of every setting that changes the weights (the cache location is not one of them)."""
    settings = config_to_dict(config)
    settings.pop("cache_dir")
    settings["recipe_version"] = RECIPE_VERSION
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def base_model_dir(config: PretrainConfig) -> Path:
    """Where the base model of ``config`` lives (whether or not it exists yet)."""
    return cache_root(config.cache_dir) / f"base-{settings_hash(config)}"


def is_complete(path: Path) -> bool:
    """A cached base is reused only if its marker, written last, is there."""
    return (path / MARKER).is_file()


def pretrain_base_model(config: PretrainConfig, *, progress: Callable[[int, int], None] | None = None) -> Path:
    """Return the directory of the pretrained base for ``config``, training it first unless it is cached.

    The directory holds the model and tokenizer (``save_pretrained``) and ``pretrain.json`` (settings, corpus size,
    final loss, train time). A leftover incomplete directory (no marker) is replaced, never reused. ``progress(step,
    max_steps)`` is called after every optimizer step (instead of the Trainer's progress bar, which it turns off).
    """
    final = base_model_dir(config)
    if is_complete(final):
        logger.info("reusing cached base model %s", final)
        return final

    def build(tmp: Path) -> None:
        summary = _pretrain_into(config, tmp, progress)
        (tmp / MARKER).write_text(json.dumps(summary, indent=2, default=str) + "\n")

    return build_directory(final, build, is_complete)


def load_corpus(config: PretrainConfig) -> list[Any]:
    """The corpus: ``load_examples(dataset, split, seed=data_seed, **dataset_options)[skip_examples:]``."""
    from segloss.data import load_examples

    examples = load_examples(config.dataset, config.split, seed=config.data_seed, **config.dataset_options)
    examples = examples[config.skip_examples :]
    if not examples:
        raise ValueError(
            f"PretrainConfig: dataset {config.dataset!r} split {config.split!r} has no examples left "
            f"after skip_examples={config.skip_examples}; enlarge it with dataset_options (n_train)"
        )
    return examples


def _pretrain_into(
    config: PretrainConfig, out: Path, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from segloss.data import pad_token_id, tokenize_examples
    from segloss.models import build_tiny_llama, train_tokenizer

    examples = load_corpus(config)
    texts = [ex.prompt + ex.answer for ex in examples[: config.tokenizer_texts]]
    tokenizer = train_tokenizer(texts, config.vocab_size, with_pad=config.with_pad)
    dataset, stats = tokenize_examples(examples, tokenizer, config.max_length)
    # Pretraining is plain CE on every real token (the collator's ``labels``); the completion mask is for the
    # fine-tuning losses.
    dataset = dataset.remove_columns("completion_mask")
    model = build_tiny_llama(
        tokenizer,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        max_positions=config.max_length,
        seed=config.seed,
    )
    args = TrainingArguments(
        output_dir=str(out / "trainer"),
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_steps,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=max(1, config.max_steps // 20),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=0,
        disable_tqdm=progress is not None,
    )
    collator = DataCollatorForLanguageModeling(pad_token_id=pad_token_id(tokenizer))  # TRL's: right padding
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    if progress is not None:
        report = progress

        class Progress(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                report(state.global_step, state.max_steps)

        trainer.add_callback(Progress())
    start = time.perf_counter()
    result = trainer.train()
    train_seconds = time.perf_counter() - start
    shutil.rmtree(out / "trainer", ignore_errors=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "settings": config_to_dict(config),
        "settings_hash": settings_hash(config),
        "n_examples": len(examples),
        "tokenize_stats": dataclasses.asdict(stats) if dataclasses.is_dataclass(stats) else str(stats),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "final_train_loss": float(result.training_loss),
        "train_seconds": round(train_seconds, 2),
        "log_history": trainer.state.log_history,
    }
