"""ROSCOE sanity table of docs/metrics.md: mean scores of gold, shuffled and step-dropped GSM8K chains.

    PYTHONPATH=src python benchmarks/roscoe_sanity.py --data ../shared/data/gsm8k [--limit 100]

Source = the prompt without its ``Answer:`` cue (as ``segloss eval --roscoe`` poses it), reference = the gold
formula chain; the packaged all-MiniLM-L6-v2 on CPU.
"""

from __future__ import annotations

import argparse
import random
import time

from segloss.data import load_examples
from segloss.metrics.roscoe import load_embedder, score_batch, split_steps
from segloss.metrics.stats import summarize

COLUMNS = (
    ("faith.-step", "roscoe_faithfulness_step"),
    ("faith.-token", "roscoe_faithfulness_token"),
    ("info-chain", "roscoe_informativeness_chain"),
    ("info-chain (paper)", "roscoe_informativeness_chain_paper"),
    ("align.", "roscoe_reasoning_alignment"),
    ("halluc.", "roscoe_hallucination"),
    ("redund.", "roscoe_redundancy"),
    ("missing", "roscoe_missing_step"),
    ("cov.-step", "roscoe_semantic_coverage_step"),
    ("cov.-chain", "roscoe_semantic_coverage_chain"),
    ("cov.-chain (paper)", "roscoe_semantic_coverage_chain_paper"),
    ("rep.-step", "roscoe_repetition_step"),
    ("rep.-step (paper)", "roscoe_repetition_step_paper"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/gsm8k")
    parser.add_argument("--limit", type=int, default=100)
    args = parser.parse_args()
    examples = load_examples("gsm8k", "test", args.data, limit=args.limit)
    sources = [e.prompt.rstrip().removesuffix("Answer:").rstrip() for e in examples]
    gold = [e.answer for e in examples]
    shuffled = gold[:]
    random.Random(0).shuffle(shuffled)
    dropped = [" ".join(f"<<{s}>>" for s in split_steps(g)[:-1]) for g in gold]
    embedder = load_embedder(device="cpu")
    print("| generation | " + " | ".join(name for name, _ in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for label, generated in (("gold chain", gold), ("shuffled", shuffled), ("last step dropped", dropped)):
        start = time.process_time()
        means = summarize(score_batch(generated, sources, gold, embedder=embedder))
        cells = " | ".join(f"{means[key]['mean']:.3f}" for _, key in COLUMNS)
        print(f"| {label} | {cells} |  <!-- {time.process_time() - start:.1f} s CPU -->")


if __name__ == "__main__":
    main()
