"""SmolLM2-135M-Instruct (the GGUF fixture): LoRA training tokens/s per loss as a ratio to CE, and greedy eval
examples/s on 4-shot GSM8K with and without stop strings and the shared-prefix KV cache.

    python benchmarks/bench_real.py                                  # 3 timed steps per loss, 8 eval examples
    python benchmarks/bench_real.py --steps 5 --repeats 3 --eval-limit 20 --threads 1
    python benchmarks/bench_real.py --skip-train --eval-limit 10 --eval-repeats 2   # generation only

Training: real arith examples (tokenized by TRL, batch ``--batch``), one `SeglossTrainer.training_step` +
optimizer step per timing unit on the dequantized GGUF model with a fresh LoRA r=8 per loss; every task loss is
combined with CE as in the paper (0.6·CE + 0.4·task). Objectives are timed interleaved (round r times each once);
the table shows the median and the step time ratio to CE alone. Eval: the same model and prompts through
`make_generate_fn` with the dataset's stop strings and without them, with the shared prompt beginning (the
demonstrations) reused from the KV cache or recomputed for every prompt, and in rounds of 64 new tokens (finished rows
leave the batch) or in one (budget ``--max-new-tokens``, default 256 as `segloss eval` uses for GSM8K); seconds and
CPU seconds per example, generated tokens/s and mean new tokens.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from segloss.data import load_examples, stop_strings, tokenize_examples
from segloss.evaluation.generation import Generated, make_generate_fn
from segloss.evaluation.prompts import build_prompt, choose_shots
from segloss.integrations.trl import padding_collator
from segloss.losses import CombinedLoss
from segloss.models.fixtures import smollm2_gguf, smollm2_missing_reason
from segloss.models.loading import load_model_and_tokenizer
from segloss.training import SeglossTrainer, apply_lora

OBJECTIVES = {
    "ce": {"ce": 1.0},
    "ce+focal": {"ce": 0.6, "focal": 0.4},
    "ce+sadl": {"ce": 0.6, "sadl": 0.4},
    "ce+gdice": {"ce": 0.6, "gdice": 0.4},
    "ce+lovasz": {"ce": 0.6, "lovasz": 0.4},
}
GSM8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"


def train_batch(tokenizer: Any, batch: int) -> dict[str, torch.Tensor]:
    examples = load_examples("arith", "train", n_train=batch, seed=0)
    dataset, _ = tokenize_examples(examples, tokenizer, 128)
    return padding_collator(tokenizer)([dataset[i] for i in range(len(dataset))])


def time_training(base: Any, tokenizer: Any, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds per step for each objective (a fresh LoRA each, so no objective trains another's adapter)."""
    batch = train_batch(tokenizer, args.batch)
    times: dict[str, list[float]] = {name: [] for name in OBJECTIVES}
    with tempfile.TemporaryDirectory() as out:
        targs = TrainingArguments(output_dir=out, use_cpu=True, report_to=[], remove_unused_columns=False)
        trainers = {}
        for name, weights in OBJECTIVES.items():
            model = apply_lora(copy.deepcopy(base))
            trainer = SeglossTrainer(model=model, args=targs, combined_loss=CombinedLoss(weights))
            trainer.create_optimizer()
            trainers[name] = trainer
            step(trainer, trainer._prepare_inputs(batch))  # warm-up
        for _ in range(args.repeats):
            for name, trainer in trainers.items():
                start = time.perf_counter()
                for _ in range(args.steps):
                    step(trainer, trainer._prepare_inputs(batch))
                times[name].append((time.perf_counter() - start) / args.steps)
    tokens = int(batch["attention_mask"].sum())
    return {"tokens_per_step": tokens, **{n: statistics.median(v) for n, v in times.items()}}


def step(trainer: SeglossTrainer, batch: dict[str, torch.Tensor]) -> None:
    trainer.training_step(trainer.model, batch)
    assert trainer.optimizer is not None
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)


ONE_ROUND = 10**9
#: (label, stop strings on, shared prefix reused, round_tokens) of the generation variants, timed interleaved.
EVAL_VARIANTS = (
    ("stop strings, prefix reused, rounds of 64 tokens (default)", True, True, 64),
    ("stop strings, prefix reused, one round", True, True, ONE_ROUND),
    ("stop strings, prefix recomputed, one round (before)", True, False, ONE_ROUND),
    ("no stop strings, prefix reused, rounds of 64 tokens", False, True, 64),
)


def time_eval(model: Any, tokenizer: Any, args: argparse.Namespace) -> dict[str, tuple[float, float, float, float]]:
    """(seconds per example, CPU seconds per example, generated tokens/s, mean new tokens) per variant of
    :data:`EVAL_VARIANTS`, 4-shot; median over ``--eval-repeats`` interleaved rounds (CPU seconds: this process, all
    its threads; steadier than wall time on a shared machine). Also counts the generations reusing the prefix
    changed."""
    examples = load_examples("gsm8k", "test", GSM8K, limit=args.eval_limit)
    shots = choose_shots(load_examples("gsm8k", "train", GSM8K), 4, seed=42)
    prompts = [build_prompt(ex, shots, "plain") for ex in examples]
    variants = [v for v in EVAL_VARIANTS if v[1] or not args.skip_no_stop]
    times: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _, _ in variants}
    texts: dict[str, list[Generated]] = {}
    for _ in range(args.eval_repeats):
        for label, stops_on, reuse, rounds in variants:
            stops = stop_strings("gsm8k") if stops_on else ()
            generate = make_generate_fn(model, tokenizer, stop_strings=stops, reuse_prefix=reuse, round_tokens=rounds)
            start, cpu, results = time.perf_counter(), time.process_time(), []
            for i in range(0, len(prompts), args.eval_batch):
                results += generate(prompts[i : i + args.eval_batch], args.max_new_tokens)
            times[label].append((time.perf_counter() - start, time.process_time() - cpu))
            texts[label] = [r for r in results if isinstance(r, Generated)]
    before = texts[EVAL_VARIANTS[2][0]]
    for label in list(texts)[:2]:
        same = sum(a == b for a, b in zip(texts[label], before, strict=True))
        print(f"# {label} vs before: {same} of {len(prompts)} generations identical")
    out = {}
    for label, runs in times.items():
        total = statistics.median(wall for wall, _ in runs)
        cpu_total = statistics.median(cpu for _, cpu in runs)
        new = [r.new_tokens for r in texts[label]]
        out[label] = (total / len(prompts), cpu_total / len(prompts), sum(new) / total, statistics.mean(new))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4, help="training batch (arith examples)")
    parser.add_argument("--steps", type=int, default=3, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds; the median is reported")
    parser.add_argument("--eval-limit", type=int, default=8, help="GSM8K test problems generated")
    parser.add_argument("--eval-batch", type=int, default=8)
    parser.add_argument("--eval-repeats", type=int, default=1, help="interleaved eval rounds; the median is reported")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-no-stop", action="store_true", help="leave out the slow variant without stop strings")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = smollm2_gguf()
    if path is None:
        sys.exit(smollm2_missing_reason())
    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(str(path))
    load_s = time.perf_counter() - start
    print(
        f"# SmolLM2-135M-Instruct Q4_1 GGUF dequantized to float32 (load {load_s:.0f} s); torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}"
    )
    if not args.skip_train:
        train = time_training(model, tokenizer, args)
        tokens, base = train.pop("tokens_per_step"), train["ce"]
        print(f"\n| objective (LoRA r=8, batch {args.batch}, {tokens} tokens) | s/step | tokens/s | step time vs CE |")
        print("|---|---:|---:|---:|")
        for name, seconds in train.items():
            print(f"| {name} | {seconds:.2f} | {tokens / seconds:.1f} | {seconds / base:.2f} |")
    if args.skip_eval or not GSM8K.is_dir():
        return
    evals = time_eval(model, tokenizer, args)
    print(
        f"\n| 4-shot GSM8K, {args.eval_limit} problems, batch {args.eval_batch} | s/example | CPU s/example | "
        f"generated tokens/s | mean new tokens (budget {args.max_new_tokens}) |"
    )
    print("|---|---:|---:|---:|---:|")
    for label, (seconds, cpu, tokens_per_s, new) in evals.items():
        print(f"| {label} | {seconds:.2f} | {cpu:.2f} | {tokens_per_s:.1f} | {new:.1f} |")


if __name__ == "__main__":
    main()
