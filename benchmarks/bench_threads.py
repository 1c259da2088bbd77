"""One vs two torch threads on the demo's shapes: a LoRA fine-tune step (tiny Llama: hidden 128, 2 layers, vocab 768;
LoRA r 8; batch 16 × 100 tokens; 0.6·CE + 0.4·Lovász) and a pretraining step (the whole model, batch 32 × 70, CE).

    python benchmarks/bench_threads.py            # 6 interleaved rounds of 5 steps per thread count; min and median

Why the demo runs its fine-tunes as one-thread processes side by side: on a loaded machine two threads of one step
wait for each other whenever one of them is descheduled; on an idle one the second thread buys less than a second
process does.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from transformers import LlamaForCausalLM

from segloss.losses import CombinedLoss
from segloss.models.tiny import tiny_llama_config
from segloss.training.lora import apply_lora

VOCAB = 768


def make_step(kind: str) -> Callable[[], None]:
    torch.manual_seed(0)
    config = tiny_llama_config(VOCAB, hidden_size=128, max_positions=160)
    model = LlamaForCausalLM(config)
    batch, length = (32, 70) if kind == "pretrain" else (16, 100)
    if kind == "lora":
        model = apply_lora(model, r=8, alpha=16, dropout=0.0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, VOCAB, (batch, length))
    combined = CombinedLoss({"ce": 0.6, "lovasz": 0.4})

    def step() -> None:
        logits, labels = model(input_ids=ids).logits[:, :-1], ids[:, 1:]
        if kind == "lora":
            loss = combined(logits, labels, labels)
        else:
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    return step


def main(rounds: int = 6, steps: int = 5) -> None:
    print("| step | threads | min ms | median ms |\n|---|---:|---:|---:|")
    for kind in ("lora", "pretrain"):
        fns = {n: make_step(kind) for n in (1, 2)}
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(rounds):
            for n, step in fns.items():
                torch.set_num_threads(n)
                step()  # warm-up
                start = time.perf_counter()
                for _ in range(steps):
                    step()
                times[n].append((time.perf_counter() - start) / steps * 1000)
        for n, values in times.items():
            print(f"| {kind} | {n} | {min(values):.0f} | {statistics.median(values):.0f} |")


if __name__ == "__main__":
    main()
