"""One training step of `SeglossSFTTrainer` (what `segloss train` runs since issue 20) against `SeglossTrainer` (the
plain-Trainer loop it ran before), in one process on the same batch, interleaved (steadier than two processes on a
shared machine): wall and CPU seconds per step, median over rounds.

Variants: ``SeglossTrainer`` (before); ``SeglossSFTTrainer`` on a step that does not log (9 of 10 steps at the
default logging_steps 10: TRL's num_tokens only) and on a step that logs (entropy and accuracy over the vocabulary).

    python benchmarks/bench_sft_step.py --model path/to/SmolLM2-135M-Instruct.Q4_1.gguf --rounds 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from typing import Any

from segloss.data import load_examples, tokenize_examples
from segloss.integrations.trl import SeglossSFTTrainer, padding_collator
from segloss.models.loading import load_model_and_tokenizer
from segloss.training import SeglossTrainer, TrainConfig, apply_lora


def trainers(base: Any, tokenizer: Any, dataset: Any, out: str, args: argparse.Namespace) -> dict[str, Any]:
    def config(logging_steps: int) -> TrainConfig:
        return TrainConfig(model="unused", output_dir=out, loss=args.loss, logging_steps=logging_steps, report_to=[])

    made: dict[str, Any] = {
        "SeglossTrainer (before)": SeglossTrainer(
            model=apply_lora(copy.deepcopy(base)),
            args=config(10),
            combined_loss=config(10).loss_spec.build(),
            fused_loss=args.fused,
        ),
    }
    for label, logging_steps in (("SeglossSFTTrainer, step without log", 10), ("SeglossSFTTrainer, logging step", 1)):
        made[label] = SeglossSFTTrainer(
            model=apply_lora(copy.deepcopy(base)),
            args=config(logging_steps),
            train_dataset=dataset,
            processing_class=copy.deepcopy(tokenizer),
            loss=config(logging_steps).loss_spec,
            fused_loss=args.fused,
        )
        made[label].state.logging_steps = logging_steps  # as Trainer.train sets it
    for trainer in made.values():
        trainer.create_optimizer()
    return made


def step(trainer: Any, batch: dict[str, Any]) -> None:
    trainer.training_step(trainer.model, trainer._prepare_inputs(batch))
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--loss", default="lovasz")
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base, tokenizer = load_model_and_tokenizer(args.model)
    examples = load_examples("arith", "train", n_train=args.batch, seed=0)
    dataset, _ = tokenize_examples(examples, tokenizer, args.max_length)
    batch = padding_collator(tokenizer)([dataset[i] for i in range(len(dataset))])
    with tempfile.TemporaryDirectory() as out:
        made = trainers(base, tokenizer, dataset, out, args)
        times: dict[str, list[tuple[float, float]]] = {label: [] for label in made}
        for trainer in made.values():
            step(trainer, batch)  # warm-up
        for _ in range(args.rounds):
            for label, trainer in made.items():
                wall, cpu = time.perf_counter(), time.process_time()
                step(trainer, batch)
                times[label].append((time.perf_counter() - wall, time.process_time() - cpu))
    tokens = int(batch["attention_mask"].sum())
    before = statistics.median(t[1] for t in times["SeglossTrainer (before)"])
    print(f"{tokens} tokens per step; median over {args.rounds} interleaved rounds")
    for label, values in times.items():
        wall, cpu = statistics.median(t[0] for t in values), statistics.median(t[1] for t in values)
        rate = tokens / wall
        print(f"{label:40s} wall {wall:.3f} s  CPU {cpu:.3f} s  tokens/s {rate:.0f}  CPU ratio {cpu / before:.3f}")


if __name__ == "__main__":
    main()
