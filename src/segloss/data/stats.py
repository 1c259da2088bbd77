"""What ``segloss data show|stats`` prints: formatted examples and per-split counts and token lengths."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segloss.data.base import SPLITS, Example, TokenizeStats, canonical_split, get_builder, tokenize_examples


@dataclass
class SplitStats:
    """One split: examples built, records skipped (and why), where they came from, and token statistics."""

    split: str
    n_examples: int = 0
    skipped: int = 0
    skip_reasons: dict[str, int] = field(default_factory=dict)
    source: str = ""
    absent: str | None = None  # why the split could not be read (e.g. MathQA train is not shipped)
    tokens: TokenizeStats | None = None


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer from a local directory (never the hub: a missing directory is a clear error)."""
    from transformers import AutoTokenizer

    if not Path(path).is_dir():
        raise FileNotFoundError(f"--tokenizer: directory not found: {path} (give a local save_pretrained folder)")
    return AutoTokenizer.from_pretrained(path)


def split_stats(
    name: str,
    path: str | Path | None = None,
    *,
    splits: list[str] | None = None,
    tokenizer: Any = None,
    max_length: int = 512,
    seed: int = 42,
    **options: Any,
) -> list[SplitStats]:
    """Counts for each split (all three by default); a split with no local file is reported as absent."""
    rows = []
    for split in [canonical_split(s) for s in (splits or SPLITS)]:
        builder = get_builder(name, **options)
        row = SplitStats(split)
        try:
            examples = builder.load(split, path, seed=seed)
        except FileNotFoundError as err:
            if path is None:  # the hub is unreachable: every other split would fail (slowly) the same way
                raise
            row.absent = str(err)
            rows.append(row)
            continue
        row.n_examples, row.skipped, row.source = len(examples), builder.skipped, builder.source
        row.skip_reasons = dict(builder.skip_reasons)
        if tokenizer is not None:
            row.tokens = tokenize_examples(examples, tokenizer, max_length)[1]
        rows.append(row)
    if all(r.absent for r in rows):
        raise FileNotFoundError(rows[0].absent)
    return rows


def format_stats(name: str, rows: list[SplitStats]) -> str:
    lines = [f"dataset: {name}", f"{'split':<11}{'examples':>9}{'skipped':>9}  source"]
    for r in rows:
        if r.absent:
            lines.append(f"{r.split:<11}{'absent':>9}{'':>9}  {r.absent}")
        else:
            lines.append(f"{r.split:<11}{r.n_examples:>9}{r.skipped:>9}  {r.source}")
    for r in rows:
        for reason, count in r.skip_reasons.items():
            lines.append(f"skipped in {r.split}: {count} × {reason}")
    tokenized = [(r.split, r.tokens) for r in rows if r.tokens is not None]
    if tokenized:
        lines.append(
            f"\ntokens (max_length {tokenized[0][1].max_length}; total = prompt with special tokens + "
            "answer + EOS, untruncated; nearest-rank percentiles)"
        )
        lines.append(
            f"{'split':<11}{'kept':>7}{'dropped':>8}{'prompt-cut':>11}   total p50/p90/p99/max"
            "   answer p50/p90/p99/max"
        )
        for split, t in tokenized:
            total = "/".join(str(int(v)) for v in t.length_percentiles().values())
            answer = "/".join(str(int(v)) for v in t.answer_percentiles().values())
            lines.append(
                f"{split:<11}{t.n_kept:>7}{t.n_dropped:>8}{t.n_prompt_truncated:>11}   {total:<21}   {answer}"
            )
    return "\n".join(lines)


def format_example(example: Example) -> str:
    """An example exactly as it is trained on: a header line, then prompt + answer (EOS follows the answer)."""
    header = f"--- {example.id}" + (f" (label {example.label})" if example.label is not None else "")
    return f"{header}\n{example.prompt}{example.answer}"
