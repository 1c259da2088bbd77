"""The tables of docs/results.md "Real model: SmolLM2-135M-Instruct" from the run directory of
scripts/smollm2_result.sh: metrics.json of every eval (mean [95 % bootstrap CI]), train_summary.json of every run,
and Lovász − CE per training seed and pooled over the seeds.

    python scripts/smollm2_table.py runs/smollm2
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np

METRICS = ("exact_match", "well_formed", "iou", "missing_steps", "extra_steps", "calculation_errors")
FIRST_SEED = 42  # the configs' seed; runs of other seeds end in -s<seed>
LOSSES = {"ce": "LoRA CE", "lovasz": "LoRA 0.6·CE + 0.4·Lovász"}


def cell(summary: dict) -> str:
    if not summary or summary.get("mean") is None:
        return "–"
    return f"{summary['mean']:.2f} [{summary['ci_low']:.2f}, {summary['ci_high']:.2f}]"


def seeds(root: Path, task: str) -> list[int]:
    """The training seeds with a finished eval of both losses."""
    pattern = re.compile(rf"eval-{task}-ce-s(\d+)")
    others = sorted(int(m[1]) for p in root.glob(f"eval-{task}-ce-s*") if (m := pattern.fullmatch(p.name)))
    found = [FIRST_SEED, *others]
    return [s for s in found if all((root / _eval(task, loss, s) / "metrics.json").is_file() for loss in LOSSES)]


def _eval(task: str, loss: str, seed: int) -> str:
    return f"eval-{task}-{loss}" + ("" if seed == FIRST_SEED else f"-s{seed}")


def eval_table(root: Path, task: str) -> list[str]:
    lines = [f"| {task} | n | new tokens | s | " + " | ".join(METRICS) + " |", "|---|---:|---:|---:|" + "---|" * 6]
    rows = [(f"eval-{task}-base-{k}shot", f"base, {k}-shot") for k in (0, 4)]
    rows += [(_eval(task, loss, s), f"{label}, seed {s}") for s in seeds(root, task) for loss, label in LOSSES.items()]
    for folder, label in rows:
        path = root / folder / "metrics.json"
        if not path.is_file():
            lines.append(f"| {label} | not run (time) |" + " |" * (len(METRICS) + 2))
            continue
        m = json.loads(path.read_text())
        cells = " | ".join(cell(m["metrics"].get(name, {})) for name in METRICS)
        lines.append(f"| {label} | {m['n_examples']} | {m['mean_new_tokens']:.1f} | {m['seconds']:.0f} | {cells} |")
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


def _scores(root: Path, task: str, loss: str, seed: int, name: str) -> list[float]:
    """Per test problem, NaN where the metric is undefined (step errors of an answer that is not well-formed)."""
    lines = (root / _eval(task, loss, seed) / "predictions.jsonl").read_text().splitlines()
    values = [json.loads(line)["metrics"].get(name) for line in lines]
    return [float("nan") if v is None else float(v) for v in values]


def paired(root: Path, task: str) -> list[str]:
    """Lovász − CE per metric, per training seed and pooled: the mean difference over the test problems that every
    compared run scored, its 95 % CI and the paired permutation test's p. One seed: bootstrap over problems; pooled:
    crossed bootstrap over seeds and problems, permutation over the (seed, problem) pairs. Step-error metrics exist
    only for well-formed answers, so their n counts the problems where every compared run was well-formed."""
    from segloss.metrics.stats import bootstrap_ci, crossed_bootstrap_ci, paired_permutation_test

    found = seeds(root, task)
    if not found:
        return [f"{task}: CE vs Lovász not compared (a run is missing)"]
    lines = [f"| {task}: Lovász − CE | seeds | n | difference [95 % CI] | p |", "|---|---|---:|---|---:|"]
    groups = [[s] for s in found] + ([found] if len(found) > 1 else [])
    for name in METRICS:
        for group in groups:
            ce = np.array([_scores(root, task, "ce", s, name) for s in group])  # [S, N]
            lv = np.array([_scores(root, task, "lovasz", s, name) for s in group])  # [S, N]
            keep = ~(np.isnan(ce) | np.isnan(lv)).any(axis=0)  # [N]
            if not keep.any():
                continue
            ce, lv = ce[:, keep], lv[:, keep]
            if len(group) == 1:
                mean, low, high = bootstrap_ci(lv[0] - ce[0])
            else:
                mean, low, high = crossed_bootstrap_ci(lv, ce, statistic="difference")
            p = paired_permutation_test(lv.ravel(), ce.ravel())
            which = ", ".join(map(str, group)) + (" (pooled)" if len(group) > 1 else "")
            lines.append(f"| {name} | {which} | {keep.sum()} | {mean:+.3f} [{low:+.3f}, {high:+.3f}] | {_p(p)} |")
    return lines


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/smollm2")
    runs = [p.name for p in sorted(root.iterdir()) if (p / "train_summary.json").is_file()]
    print("\n".join(train_table(root, runs)))
    for task in ("gsm8k", "arith"):
        print()
        print("\n".join(eval_table(root, task)))
        print()
        print("\n".join(paired(root, task)))


if __name__ == "__main__":
    main()
