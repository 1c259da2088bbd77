"""Measure the differences between segloss and the authors' code on the real files (numbers in docs/fidelity.md).

    PYTHONPATH=src python benchmarks/fidelity.py --data ../shared/data [--tokenizer DIR] [--predictions FILE ...]

Sections: MathQA records and answers (default vs ``authors_preprocessing``), the GSM8K validation split (default vs
``authors_split``) and answers, token counts with ``--tokenizer`` (EOS targets, the authors' 128-token GSM8K
window, the ``.0`` suffix, the prompt/answer token boundary), and the exact-match variants of each
``--predictions`` file written by ``segloss eval`` (with ``--teacher-forced`` for the teacher-forced columns).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from segloss.data import load_examples, tokenize_examples
from segloss.data.gsm8k import FORMULA
from segloss.metrics.formulas import score_math
from segloss.metrics.qa import parse_choice_letter


def mathqa(data: Path) -> None:
    print("## MathQA (shared dev/test): segloss default vs authors_preprocessing")
    for split in ("validation", "test"):
        ours = {e.id: e for e in load_examples("mathqa", split, data / "mathqa")}
        authors = {e.id: e for e in load_examples("mathqa", split, data / "mathqa", authors_preprocessing=True)}
        both = sorted(ours.keys() & authors.keys())
        dropped = [i for i in both if authors[i].answer.count("<<") < ours[i].answer.count("<<")]
        empty = [i for i in dropped if "<<" not in authors[i].answer]
        values = [(ours[i].answer.split("#### ")[1], authors[i].answer.split("#### ")[1]) for i in both]
        wrong = sum(abs(float(o) - float(a)) > 1e-9 for o, a in values)
        suffix = sum(a.endswith(".0") for _, a in values)
        only_ours = [ours[i].answer.split("#### ")[1] for i in sorted(ours.keys() - authors.keys())]
        negative = sum(v.startswith("-") for v in only_ours)
        print(
            f"{split}: kept segloss {len(ours)}, authors {len(authors)}, both {len(both)}; only segloss "
            f"{len(only_ours)} ({negative} negative answers), only authors {len(authors.keys() - ours.keys())}; "
            f"of the {len(both)} both keep: last step dropped {len(dropped)} ({len(empty)} left without a formula), "
            f"answer value differs {wrong}, answer written with '.0' {suffix}"
        )


def gsm8k(data: Path) -> None:
    print("## GSM8K: validation split and answers")
    path = data / "gsm8k"
    ours = load_examples("gsm8k", "validation", path)
    authors = load_examples("gsm8k", "validation", path, authors_split=True)
    train = load_examples("gsm8k", "train", path, authors_split=True)
    overlap = len({e.prompt for e in ours} & {e.prompt for e in authors})
    print(f"validation: segloss {len(ours)}, authors {len(authors)} (train {len(train)}), overlap {overlap}")
    for split in ("train", "test"):
        default = load_examples("gsm8k", split, path)
        original = load_examples("gsm8k", split, path, authors_preprocessing=True) if split == "test" else None
        finals = [e.answer.split("#### ")[1] for e in (original or default)]
        negative = sum(e.answer.split("#### ")[1].startswith("-") for e in default)
        commas = sum("," in f for f in finals) if original else "n/a"
        print(f"{split}: {len(default)} answers, negative finals {negative}, finals with a comma (authors) {commas}")


def tokens(data: Path, tokenizer_dir: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    print(f"## Tokens ({tokenizer_dir})")
    gsm = load_examples("gsm8k", "train", data / "gsm8k")
    _, stats = tokenize_examples(gsm, tokenizer, 4096)
    over = sum(n > 128 for n in stats.lengths)
    answer_over = sum(n > 127 for n in stats.answer_lengths)
    targets = sum(stats.answer_lengths)
    print(
        f"gsm8k train: {len(gsm)} examples, total length p50 {statistics.median(stats.lengths):.0f}; longer than the "
        f"authors' 128-token window: {over} ({100 * over / len(gsm):.1f} %), answers alone over 127: {answer_over}; "
        f"EOS = {len(gsm)} of {targets} answer targets ({100 * len(gsm) / targets:.2f} %)"
    )
    for name, split in (("gsm8k", "test"), ("mathqa", "test")):
        examples = load_examples(name, split, data / name)
        joint = sum(_boundary_differs(tokenizer, e.prompt, e.answer) for e in examples)
        print(f"{name} {split}: prompt + answer tokenized jointly differs from prompt, answer apart: {joint}")
    ours = load_examples("mathqa", "test", data / "mathqa")
    authors = {e.id: e for e in load_examples("mathqa", "test", data / "mathqa", authors_preprocessing=True)}
    extra = [
        _count(tokenizer, authors[e.id].answer.split("####")[1]) - _count(tokenizer, e.answer.split("####")[1])
        for e in ours
        if e.id in authors and authors[e.id].answer.endswith(".0")
    ]
    print(f"mathqa test: '.0' answers {len(extra)}, extra tokens per such answer: mean {statistics.mean(extra):.2f}")


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _boundary_differs(tokenizer: Any, prompt: str, answer: str) -> bool:
    apart = tokenizer(prompt)["input_ids"] + tokenizer(answer, add_special_tokens=False)["input_ids"]
    return list(tokenizer(prompt + answer)["input_ids"]) != list(apart)


def _authors_set_scores(generated: str, reference: str) -> dict[str, float]:
    """The authors' per-example IoU / missing / extra steps (utils/metric_calculator.py), restated: raw ``<<…>>``
    strings, 0 for an empty union, missing = 1 and extra = 0 for a reference without formulas."""
    p, r = set(FORMULA.findall(generated)), set(FORMULA.findall(reference))
    union = len(p | r)
    return {
        "iou": len(p & r) / union if union else 0.0,
        "missing_steps": len(r - p) / len(r) if r else 1.0,
        "extra_steps": len(p - r) / len(r) if r else 0.0,
    }


def denominators(data: Path) -> None:
    print("## Set-metric denominators on a perfect prediction (generated = reference)")
    for name, options in (("gsm8k", {}), ("mathqa", {}), ("mathqa", {"authors_preprocessing": True})):
        examples = load_examples(name, "test", data / name, **options)
        ours = [score_math(e.answer, e.answer) for e in examples]
        theirs = [_authors_set_scores(e.answer, e.answer) for e in examples]
        cells = []
        for key in ("iou", "missing_steps", "extra_steps"):
            defined = [row[key] for row in ours if not math.isnan(row[key])]
            cells.append(
                f"{key}: segloss {statistics.mean(defined):.4f} (n={len(defined)}), "
                f"authors {statistics.mean(row[key] for row in theirs):.4f} (n={len(theirs)})"
            )
        print(f"{name} test {options or ''}: " + "; ".join(cells))


EM_KEYS = (
    "exact_match",
    "exact_match_strict",
    "exact_match_flexible",
    "exact_match_authors",
    "teacher_forced_exact_match",
    "teacher_forced_exact_match_authors",
    "teacher_forced_token_accuracy",
)


def qa_letters(records: list[dict[str, Any]]) -> None:
    """segloss's ``parse_choice_letter`` against the authors' ``Answer: (.)``: the first generated character."""
    ours = [parse_choice_letter(r["generated"]) == r["reference"] for r in records]
    theirs = [r["generated"][:1] == r["reference"] for r in records]
    pairs = list(zip(ours, theirs, strict=True))
    print(
        f"QA letters: segloss accuracy {statistics.mean(ours):.4f}, first character (authors' rule) "
        f"{statistics.mean(theirs):.4f}; right only for segloss {sum(a > b for a, b in pairs)}, "
        f"only for the first character {sum(b > a for a, b in pairs)} (n={len(records)})"
    )


def predictions(path: Path) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if "exact_match" not in records[0]["metrics"]:
        qa_letters(records)
        return
    rows = [r["metrics"] for r in records]
    print(f"## Exact-match variants: {path} ({len(rows)} examples)")
    for key in EM_KEYS:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            print(f"{key:<36} {statistics.mean(values):.4f}  (n={len(values)}, sum={sum(values):.1f})")
    for key in EM_KEYS[1:4]:
        pairs = [(r["exact_match"], r[key]) for r in rows if r.get(key) is not None]
        only_ours = sum(a > b for a, b in pairs)
        only_other = sum(b > a for a, b in pairs)
        print(f"exact_match vs {key}: right only for exact_match {only_ours}, only for {key} {only_other}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--tokenizer", help="a tokenizer directory for the token counts")
    parser.add_argument("--predictions", type=Path, nargs="*", default=[])
    args = parser.parse_args()
    if (args.data / "mathqa").is_dir():
        mathqa(args.data)
    if (args.data / "gsm8k").is_dir() and (args.data / "mathqa").is_dir():
        denominators(args.data)
    if (args.data / "gsm8k").is_dir():
        gsm8k(args.data)
        if args.tokenizer:
            tokens(args.data, args.tokenizer)
    for path in args.predictions:
        predictions(path)


if __name__ == "__main__":
    main()
