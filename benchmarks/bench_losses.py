"""Forward+backward time and peak memory of each loss against ``torch.nn.functional.cross_entropy``.

    python benchmarks/bench_losses.py                      # the full grid: V ∈ {32k, 128k} × N ∈ {1024, 4096}
    python benchmarks/bench_losses.py --vocab 32000 --tokens 1024 --research-lovasz   # adds the per-class loop
    python benchmarks/bench_losses.py --compile ce lovasz   # eager against torch.compile(fullgraph=True), same sizes

Logits are float32 ``[1, M, V]`` with 25 % of the M positions ignored, so N = 0.75·M tokens are valid; labels are
uniform over the vocabulary, the worst case for the region losses (K present classes ≈ N). With random logits every
foreground error is near 1, so Lovász's exact top-k shortcut keeps few errors; ``lovasz_full_sort`` times the same
loss with the shortcut off (one batched sort of all N errors per class), its worst case. Each (loss, size) runs in
a fresh subprocess so its peak resident memory can be read from ``ru_maxrss``: "extra" is the peak above what the
logits and labels already held, gradient of the logits included. Times are the median of ``--repeats`` runs after a
warm-up. The table reports ratios to cross-entropy on the same logits.
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

LOSS_NAMES = ["ce", "focal", "sadl", "gdice", "lovasz", "lovasz_full_sort"]


def research_lovasz(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The original research code's shape of computation: a Python loop over every vocabulary entry."""
    valid = labels.view(-1) != -100
    probs = torch.softmax(logits.view(-1, logits.shape[-1])[valid], -1)
    targets = labels.view(-1)[valid]
    losses = []
    for c in range(probs.shape[1]):
        fg = (targets == c).float()
        if fg.sum() == 0:
            continue
        errors, perm = (fg - probs[:, c]).abs().sort(descending=True)
        fg_sorted = fg[perm]
        gts = fg_sorted.sum()
        jaccard = 1 - (gts - fg_sorted.cumsum(0)) / (gts + (1 - fg_sorted).cumsum(0))
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors, jaccard))
    return torch.stack(losses).mean()


def _loss_fn(name: str):
    if name == "torch_ce":
        return lambda z, y: torch.nn.functional.cross_entropy(z.view(-1, z.shape[-1]), y.view(-1), ignore_index=-100)
    if name == "research_lovasz":
        return research_lovasz
    if name == "lovasz_full_sort":  # the top-k shortcut off: one batched sort over all N tokens per class
        from segloss.losses import functional

        functional._PRUNE_LOVASZ = False
        name = "lovasz"
    from segloss.losses import get_loss

    return get_loss(name)


def _inputs(vocab: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``[1, M, V]`` (requiring gradients) and labels with N = ``tokens`` valid of M = N / 0.75 positions."""
    torch.manual_seed(0)
    positions = round(tokens / 0.75)
    logits = torch.empty(1, positions, vocab).normal_().requires_grad_()
    labels = torch.randint(0, vocab, (1, positions))
    labels[0, torch.randperm(positions)[: positions - tokens]] = -100
    return logits, labels


def measure(name: str, vocab: int, tokens: int, repeats: int) -> dict:
    """Runs inside the subprocess: one warm-up (which sets the memory peak), then timed repeats."""
    logits, labels = _inputs(vocab, tokens)
    fn = _loss_fn(name)
    base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn(logits, labels).backward()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        logits.grad = None
        start = time.perf_counter()
        fn(logits, labels).backward()
        times.append(time.perf_counter() - start)
    return {
        "seconds": statistics.median(times),
        "extra_bytes": (peak_kib - base_kib) * 1024,
        "logits_bytes": logits.numel() * logits.element_size(),
    }


def measure_compiled(name: str, vocab: int, tokens: int, repeats: int) -> dict:
    """Runs inside the subprocess: eager and ``torch.compile(fullgraph=True, dynamic=True)`` of the same loss on the
    same logits, timed alternately (eager, compiled, eager, …) after one warm-up each (the compile is not timed)."""
    logits, labels = _inputs(vocab, tokens)
    eager = _loss_fn(name)
    compiled = torch.compile(eager, fullgraph=True, dynamic=True)
    start = time.perf_counter()
    compiled(logits, labels).backward()
    compile_seconds = time.perf_counter() - start
    eager(logits, labels).backward()
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(repeats):
        for way, fn in (("eager", eager), ("compiled", compiled)):
            logits.grad = None
            start = time.perf_counter()
            fn(logits, labels).backward()
            times[way].append(time.perf_counter() - start)
    return {way: statistics.median(values) for way, values in times.items()} | {"compile": compile_seconds}


def run_isolated(name: str, vocab: int, tokens: int, repeats: int, what: str = "measure") -> dict:
    code = f"import json, bench_losses as b; print(json.dumps(b.{what}({name!r}, {vocab}, {tokens}, {repeats})))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=__file__.rsplit("/", 1)[0], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, nargs="+", default=[32_000, 128_000])
    parser.add_argument("--tokens", type=int, nargs="+", default=[1024, 4096], help="valid tokens N")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--research-lovasz", action="store_true", help="also time the per-class Python loop")
    parser.add_argument(
        "--compile", nargs="*", metavar="LOSS", help="time eager against torch.compile for these losses (default: all)"
    )
    args = parser.parse_args()
    if args.compile is not None:
        compiled_table(args.compile or [n for n in LOSS_NAMES if n != "lovasz_full_sort"], args)
        return
    names = ["torch_ce", *LOSS_NAMES] + (["research_lovasz"] if args.research_lovasz else [])
    machine = platform.processor() or platform.machine()
    print(f"# {machine}, {torch.get_num_threads()} torch threads, torch {torch.__version__}")
    print("| V | N | loss | time (ms) | time / CE | peak extra (MiB) | extra / logits bytes |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for vocab in args.vocab:
        for tokens in args.tokens:
            rows = {name: run_isolated(name, vocab, tokens, args.repeats) for name in names}
            ref = rows["torch_ce"]["seconds"]
            for name, r in rows.items():
                print(
                    f"| {vocab} | {tokens} | {name} | {1000 * r['seconds']:.0f} | {r['seconds'] / ref:.2f} | "
                    f"{r['extra_bytes'] / 2**20:.0f} | {r['extra_bytes'] / r['logits_bytes']:.2f} |",
                    flush=True,
                )


def compiled_table(names: list[str], args: argparse.Namespace) -> None:
    machine = platform.processor() or platform.machine()
    print(f"# {machine}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; fullgraph, dynamic")
    print("| V | N | loss | eager (ms) | compiled (ms) | compiled / eager | compile (s) |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    for vocab in args.vocab:
        for tokens in args.tokens:
            for name in names:
                r = run_isolated(name, vocab, tokens, args.repeats, what="measure_compiled")
                print(
                    f"| {vocab} | {tokens} | {name} | {1000 * r['eager']:.0f} | {1000 * r['compiled']:.0f} | "
                    f"{r['compiled'] / r['eager']:.2f} | {r['compile']:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
