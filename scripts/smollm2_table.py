"""The tables of docs/results.md "Real model: SmolLM2-135M-Instruct" from the run directory of
scripts/smollm2_result.sh: metrics.json of every eval (mean [95 % bootstrap CI]) and train_summary.json of every run.

    python scripts/smollm2_table.py runs/smollm2
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = ("exact_match", "well_formed", "iou", "missing_steps", "extra_steps", "calculation_errors")
ROWS = {  # eval folder -> row label
    "eval-{task}-base-0shot": "base, 0-shot",
    "eval-{task}-base-4shot": "base, 4-shot",
    "eval-{run}-ce": "LoRA CE",
    "eval-{run}-lovasz": "LoRA 0.6·CE + 0.4·Lovász",
}


def cell(summary: dict) -> str:
    if not summary or summary.get("mean") is None:
        return "–"
    return f"{summary['mean']:.2f} [{summary['ci_low']:.2f}, {summary['ci_high']:.2f}]"


def eval_table(root: Path, task: str, run: str) -> list[str]:
    lines = [
        f"| {run} | n | new tokens | s | " + " | ".join(METRICS) + " |",
        "|---|---:|---:|---:|" + "---|" * len(METRICS),
    ]
    for folder, label in ROWS.items():
        path = root / folder.format(task=task, run=run) / "metrics.json"
        if not path.is_file():
            lines.append(f"| {label} | not run (time) |" + " |" * (len(METRICS) + 2))
            continue
        m = json.loads(path.read_text())
        cells = " | ".join(cell(m["metrics"].get(name, {})) for name in METRICS)
        lines.append(f"| {label} | {m['n_examples']} | {m['mean_new_tokens']} | {m['seconds']:.0f} | {cells} |")
    return lines


def train_table(root: Path, runs: list[str]) -> list[str]:
    lines = ["| run | steps | train examples | tokens | wall s | tokens/s | final CE term | final task term |"]
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for run in runs:
        path = root / run / "train_summary.json"
        if not path.is_file():
            continue
        s = json.loads(path.read_text())
        final = s["final_losses"]
        lines.append(
            f"| {run} | {s['steps']} | {s['train_examples']} | {s['tokens']} | {s['wall_time_s']:.0f} | "
            f"{s['tokens'] / s['wall_time_s']:.1f} | {final.get('ce', 0):.3f} | {final.get('task', 0):.3f} |"
        )
    return lines


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def paired(root: Path, run: str) -> list[str]:
    """Lovász − CE per metric over the test problems both runs scored: mean difference, its paired bootstrap 95 % CI
    and the paired permutation test's p-value. Step-error metrics exist only for well-formed answers, so their n is
    the problems where both runs were well-formed."""
    from segloss.metrics.stats import bootstrap_ci, paired_permutation_test

    rows = {}
    for loss in ("ce", "lovasz"):
        path = root / f"eval-{run}-{loss}" / "predictions.jsonl"
        if not path.is_file():
            return [f"{run}: CE vs Lovász not compared (a run is missing)"]
        rows[loss] = [json.loads(line)["metrics"] for line in path.read_text().splitlines()]
    lines = [f"| {run}: Lovász − CE | n | difference [95 % CI] | p |", "|---|---:|---|---:|"]
    for name in METRICS:
        pairs = [(c.get(name), lv.get(name)) for c, lv in zip(rows["ce"], rows["lovasz"], strict=True)]
        pairs = [(float(a), float(b)) for a, b in pairs if a is not None and b is not None]
        if not pairs:
            continue
        a, b = [p[0] for p in pairs], [p[1] for p in pairs]
        mean, low, high = bootstrap_ci([y - x for x, y in pairs])
        lines.append(
            f"| {name} | {len(pairs)} | {mean:+.3f} [{low:+.3f}, {high:+.3f}] | {_p(paired_permutation_test(b, a))} |"
        )
    return lines


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/smollm2")
    runs = [p.name for p in sorted(root.iterdir()) if (p / "train_summary.json").is_file()]
    print("\n".join(train_table(root, runs)))
    for task, run in (("gsm8k", "gsm8k"), ("arith", "arith")):
        print()
        print("\n".join(eval_table(root, task, run)))
        print()
        print("\n".join(paired(root, run)))


if __name__ == "__main__":
    main()
