"""Show the registered losses and what each gives on a toy batch.

segloss losses                       # every loss on a good, a uniform and a bad prediction
segloss losses --vocab 32000 --tokens 256 --seed 1
"""

from __future__ import annotations

import argparse
import time

import torch

from segloss.losses import (
    ALIASES,
    DEFAULT_CE_WEIGHT,
    IGNORE_INDEX,
    LOSSES,
    CombinedLoss,
    get_loss,
    parse_loss_spec,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vocab", type=int, default=1000, help="vocabulary size V of the toy batch")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per sequence T (half of them are prompt)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")


def toy_predictions(vocab: int, tokens: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Logits [2, T, V] for a good, a uniform and a bad prediction of the same labels, plus (labels, answer_labels)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (2, tokens), generator=gen)
    answer_labels = labels.clone()
    answer_labels[:, : tokens // 2] = IGNORE_INDEX  # the first half plays the prompt
    onehot = torch.nn.functional.one_hot(labels, vocab).float()
    noise = torch.randn(2, tokens, vocab, generator=gen)
    logits = {"good": 8 * onehot + noise, "uniform": torch.zeros_like(noise), "bad": -8 * onehot + noise}
    return logits, labels, answer_labels


def run(args: argparse.Namespace) -> int:
    if args.vocab < 2 or args.tokens < 2:
        raise ValueError("--vocab and --tokens must be ≥ 2")
    logits, labels, answer_labels = toy_predictions(args.vocab, args.tokens, args.seed)
    print(f"losses on answer tokens of a toy batch: B=2, T={args.tokens}, V={args.vocab} (aliases: {ALIASES})")
    print(f"{'loss':<10}" + "".join(f"{k:>10}" for k in logits) + f"{'fwd+bwd ms':>12}")
    for name in LOSSES:
        loss = get_loss(name)
        values = [loss(z, answer_labels).item() for z in logits.values()]
        z = logits["uniform"].clone().requires_grad_()
        loss(z, answer_labels).backward()  # warm-up
        start = time.perf_counter()
        loss(z, answer_labels).backward()
        elapsed = 1000 * (time.perf_counter() - start)
        print(f"{name:<10}" + "".join(f"{v:>10.4f}" for v in values) + f"{elapsed:>12.1f}")
    combined = CombinedLoss(parse_loss_spec("lovasz", ce_weight=DEFAULT_CE_WEIGHT))
    terms = combined.components(logits["good"], labels, answer_labels)
    print(
        f"combined {DEFAULT_CE_WEIGHT:g}·CE(all tokens) + {1 - DEFAULT_CE_WEIGHT:g}·Lovász(answer tokens) on the good "
        "prediction: " + ", ".join(f"{k}={v.item():.4f}" for k, v in terms.items())
    )
    return 0
