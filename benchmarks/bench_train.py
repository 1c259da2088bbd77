"""Tokens/s of one training step (forward, combined loss, backward, optimizer step) with each loss against CE only.

    python benchmarks/bench_train.py                         # tiny Llama, V = 32000, LoRA, batch 4 × 128 tokens
    python benchmarks/bench_train.py --full-finetune --seq-len 256 --repeats 7

The step is `SeglossTrainer.training_step` (the code path `segloss train` runs) on a randomly initialised tiny
Llama whose vocabulary is 32000, so the ``[B, T, V]`` logits and the losses over them weigh as in a real model's
head. Each task loss is combined with CE as in the paper (0.6·CE + 0.4·task); the baseline is CE alone. Objectives
are timed interleaved (round r times every objective once) to spread machine noise evenly; the table shows the
median over rounds and the ratio of step time to CE-only (target: ≤ 1.10).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from segloss.losses import CombinedLoss
from segloss.training import SeglossTrainer, apply_lora

OBJECTIVES = {
    "ce": {"ce": 1.0},
    "ce+focal": {"ce": 0.6, "focal": 0.4},
    "ce+sadl": {"ce": 0.6, "sadl": 0.4},
    "ce+gdice": {"ce": 0.6, "gdice": 0.4},
    "ce+lovasz": {"ce": 0.6, "lovasz": 0.4},
}


def build_model(vocab: int, hidden: int, layers: int, full_finetune: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    return model if full_finetune else apply_lora(model)


def make_batch(vocab: int, batch: int, seq_len: int, answer_fraction: float) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, vocab, (batch, seq_len), generator=generator)
    completion_mask = torch.ones_like(input_ids)
    completion_mask[:, : int(seq_len * (1 - answer_fraction))] = 0  # the prompt part
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": input_ids.clone(),
        "completion_mask": completion_mask,
    }


def time_steps(trainer: SeglossTrainer, batch: dict[str, torch.Tensor], steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        trainer.training_step(trainer.model, batch)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--answer-fraction", type=float, default=0.5, help="share of tokens the task loss sees")
    parser.add_argument("--steps", type=int, default=5, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--full-finetune", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args.vocab, args.hidden, args.layers, args.full_finetune)
    batch = make_batch(args.vocab, args.batch, args.seq_len, args.answer_fraction)
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(
            output_dir=out,
            use_cpu=not torch.cuda.is_available(),
            report_to=[],
            learning_rate=1e-4,
            remove_unused_columns=False,
        )
        trainer = SeglossTrainer(model=model, args=targs, combined_loss=CombinedLoss({"ce": 1.0}))
        trainer.create_optimizer()
        batch = trainer._prepare_inputs(batch)
        times: dict[str, list[float]] = {name: [] for name in OBJECTIVES}
        for weights in OBJECTIVES.values():  # warm-up
            trainer.combined_loss = CombinedLoss(weights)
            time_steps(trainer, batch, 1)
        for _ in range(args.repeats):
            for name, weights in OBJECTIVES.items():
                trainer.combined_loss = CombinedLoss(weights)
                times[name].append(time_steps(trainer, batch, args.steps))

    tokens = args.batch * args.seq_len
    base = statistics.median(times["ce"])
    mode = "full fine-tune" if args.full_finetune else "LoRA r=8"
    print(
        f"# tiny Llama V={args.vocab} hidden={args.hidden} layers={args.layers} {mode}; batch {args.batch}×"
        f"{args.seq_len} tokens, task loss on {args.answer_fraction:.0%}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )
    print(f"| objective | step ms (median of {args.repeats}) | tokens/s | step time vs CE |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        step = statistics.median(values)
        print(f"| {name} | {step * 1e3:.1f} | {tokens / step:,.0f} | {step / base:.3f} |")


if __name__ == "__main__":
    main()
