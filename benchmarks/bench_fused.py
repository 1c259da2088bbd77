"""Fused head + loss (``fused_linear_loss``) against the materialised path and torch's cross-entropy.

    python benchmarks/bench_fused.py                                  # V ∈ {32k, 128k}, N = 4096, H = 1024, all losses
    python benchmarks/bench_fused.py --vocab 128000 --losses ce lovasz --repeats 1
    python benchmarks/bench_fused.py --vocab 128000 --width 1024 --losses ce focal --two-pass   # one pass vs two

Inputs: ``hidden [4, N/4, H]`` and ``W [V, H]`` in float32, both requiring gradients (no bias, as in Llama-style
heads). Every position is a CE target; the task losses see the last quarter of each sequence (the "answer", N/4
tokens). Labels follow a Zipf law (s = 1.1) over a random permutation of the vocabulary, like text, so the region
losses meet a realistic number of present classes. Objective: 0.6·CE + 0.4·task (CE alone for ``ce``).

Three ways, each run in a fresh subprocess so its peak resident memory can be read from ``ru_maxrss``:

* ``torch_ce``: ``F.cross_entropy(hidden @ W.T, labels)`` (CE only: torch has no region loss);
* ``materialised``: ``CombinedLoss(weights)(hidden @ W.T, labels, answer_labels)``;
* ``fused``: ``fused_linear_loss(hidden, W, labels, answer_labels, weights=weights)``.

"extra" is the peak above what the inputs held before the step, minus the inputs' gradients (``hidden.grad``,
``W.grad``), reported against the logits' bytes (N·V·4). Time: forward + backward, median of ``--repeats`` (the first
run included, so page faults of fresh buffers count, as they do in every training step).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

TASK_LOSSES = ["focal", "sadl", "gdice", "lovasz", "dice", "jaccard", "tversky", "focal_tversky"]
TOKEN_LOCAL = ("ce", "focal", "sadl")
BATCH = 4


def zipf_labels(n: int, vocab: int, generator: torch.Generator, s: float = 1.1) -> torch.Tensor:
    ranks = torch.arange(1, vocab + 1, dtype=torch.float64)
    drawn = torch.multinomial(ranks.pow(-s), n, replacement=True, generator=generator)  # [n] ranks
    return torch.randperm(vocab, generator=generator)[drawn]  # rank → token id


def make_inputs(vocab: int, tokens: int, width: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    seq = tokens // BATCH
    hidden = torch.randn(BATCH, seq, width, generator=gen).requires_grad_()
    # In place: a temporary [V, H] copy would raise the peak that "extra" is measured from.
    weight = torch.randn(vocab, width, generator=gen).div_(width**0.5).requires_grad_()
    labels = zipf_labels(BATCH * seq, vocab, gen).view(BATCH, seq)
    answer_labels = labels.clone()
    answer_labels[:, : 3 * seq // 4] = -100
    return hidden, weight, labels, answer_labels


def step_fn(way: str, loss: str):
    from segloss.losses import CombinedLoss, FusedLinearCombinedLoss

    weights = {"ce": 1.0} if loss == "ce" else {"ce": 0.6, loss: 0.4}
    if way == "torch_ce":
        return lambda h, w, y, a: torch.nn.functional.cross_entropy((h @ w.t()).view(-1, w.shape[0]), y.view(-1))
    if way == "materialised":
        combined = CombinedLoss(weights)
        return lambda h, w, y, a: combined(h @ w.t(), y, a)
    if way == "fused_two_pass":  # the token-local one-pass path switched off: z recomputed in backward
        from segloss.losses import fused as fused_module

        fused_module._ONE_PASS = False
    fused = FusedLinearCombinedLoss(weights)
    return lambda h, w, y, a: fused(h, w, y, a)


def measure(way: str, loss: str, vocab: int, tokens: int, width: int, repeats: int) -> dict:
    """Runs inside the subprocess."""
    torch.manual_seed(0)
    hidden, weight, labels, answer_labels = make_inputs(vocab, tokens, width)
    fn = step_fn(way, loss)
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, value = [], 0.0
    for _ in range(repeats):
        hidden.grad = weight.grad = None
        start = time.perf_counter()
        out = fn(hidden, weight, labels, answer_labels)
        out.backward()
        times.append(time.perf_counter() - start)
        value = out.item()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grad_bytes = sum(t.grad.numel() * t.grad.element_size() for t in (hidden, weight) if t.grad is not None)
    return {
        "seconds": statistics.median(times),
        "extra_bytes": (peak_kib - base_kib) * 1024 - grad_bytes,
        "logits_bytes": tokens * vocab * 4,
        "value": value,
        "grad_norm": float(weight.grad.norm()),  # the same step must give the same gradient either way
    }


def run_isolated(way: str, loss: str, vocab: int, tokens: int, width: int, repeats: int) -> dict:
    code = (
        "import json, bench_fused as b; "
        f"print(json.dumps(b.measure({way!r}, {loss!r}, {vocab}, {tokens}, {width}, {repeats})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=__file__.rsplit("/", 1)[0], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _row(vocab: int, loss: str, way: str, r: dict, ref: dict, ce: dict) -> str:
    return (
        f"| {vocab} | {loss} | {way} | {r['seconds']:.1f} | {r['seconds'] / ref['seconds']:.2f} | "
        f"{r['seconds'] / ce['seconds']:.2f} | {r['extra_bytes'] / 2**20:.0f} | "
        f"{r['extra_bytes'] / r['logits_bytes']:.3f} | {abs(r['value'] / ref['value'] - 1):.1e} | "
        f"{abs(r['grad_norm'] / ref['grad_norm'] - 1):.1e} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32_000, 128_000])
    parser.add_argument("--tokens", type=int, default=4096, help="N: rows of hidden (all CE targets)")
    parser.add_argument("--width", type=int, default=1024, help="H")
    parser.add_argument("--losses", nargs="+", default=["ce", *TASK_LOSSES])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--two-pass", action="store_true", help="ce/focal/sadl: also time the fused head with one pass off"
    )
    parser.add_argument("--no-torch-ce", action="store_true", help="skip the F.cross_entropy reference")
    args = parser.parse_args()
    print(f"# {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print(f"# N = {args.tokens}, H = {args.width}, float32; ratios: fused and torch_ce over materialised, and over")
    print("# torch_ce; 'value' and 'grad' columns: relative difference to the materialised path")
    print(
        "| V | loss | way | time (s) | time / materialised | time / torch CE | extra (MiB) | extra / logits "
        "| value | grad |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for vocab in args.vocab:
        ce = (
            {"seconds": float("nan")}
            if args.no_torch_ce
            else run_isolated("torch_ce", "ce", vocab, args.tokens, args.width, args.repeats)
        )
        for loss in args.losses:
            # Interleaved, so a change in the machine's load hits both ways of the same loss alike.
            ref = run_isolated("materialised", loss, vocab, args.tokens, args.width, args.repeats)
            fused = run_isolated("fused", loss, vocab, args.tokens, args.width, args.repeats)
            if loss == "ce" and not args.no_torch_ce:
                print(_row(vocab, loss, "torch_ce", ce, ref, ce), flush=True)
            print(_row(vocab, loss, "materialised", ref, ref, ce), flush=True)
            print(_row(vocab, loss, "fused", fused, ref, ce), flush=True)
            if args.two_pass and loss in TOKEN_LOCAL:  # what the one-pass path saves, measured beside it
                two = run_isolated("fused_two_pass", loss, vocab, args.tokens, args.width, args.repeats)
                print(_row(vocab, loss, "fused_two_pass", two, ref, ce), flush=True)


if __name__ == "__main__":
    main()
