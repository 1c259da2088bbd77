"""Wall time of one small grid run by the local executor and by the Ray executor, side by side, in one run.

    python benchmarks/bench_grid.py                         # 2 losses × 2 seeds, tiny Llama, arith
    python benchmarks/bench_grid.py --max-steps 8 --seeds 0 1 2

Every variant runs the same cells (tiny randomly initialised Llama, synthetic ``arith`` data, real train + eval) into
its own fresh output folder, each in a fresh subprocess so no variant inherits warm imports or caches. ``ray`` times
include what a user pays: starting Ray on this machine, starting its workers, importing torch/transformers in them.
Variants: ``local`` (one cell after the other in the grid process); ``ray, 2 CPUs/cell`` (Ray with one cell at a time
on 2 cores: the same parallelism as local, so the difference is Ray's overhead); ``ray, 1 CPU/cell`` (two cells at
once). The table gives each wall time and its ratio to local; per-cell train+eval seconds come from the store.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {"local": [], "ray, 2 CPUs/cell": ["--executor", "ray", "--cpus-per-cell", "2"]}
VARIANTS["ray, 1 CPU/cell"] = ["--executor", "ray", "--cpus-per-cell", "1"]
TEXTS = [
    "Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer: <<3+4=7>> #### 7",
    "0123456789 +-*/=<>()#.,:;?!$%'\" abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ",
] * 8


def make_model(folder: Path) -> Path:
    from segloss.models import make_tiny_model_dir

    return make_tiny_model_dir(folder / "tiny-llama", TEXTS, vocab_size=300)


def grid_args(model: Path, out: Path, args: argparse.Namespace) -> list[str]:
    train = {"max_steps": args.max_steps, "per_device_train_batch_size": 4, "disable_tqdm": True}
    return [
        "--models",
        json.dumps([str(model)]),
        "--datasets",
        json.dumps([{"name": "arith", "options": {"n_train": 32}}]),
        "--losses",
        "[ce, lovasz]",
        "--seeds",
        json.dumps(args.seeds),
        "--train",
        json.dumps(train),
        "--eval",
        json.dumps({"limit": args.eval_limit, "max_new_tokens": 8, "batch_size": 4}),
        "--output-dir",
        str(out),
    ]


def run_variant(name: str, extra: list[str], model: Path, folder: Path, args: argparse.Namespace) -> dict:
    out = folder / name.replace(" ", "").replace(",", "_").replace("/", "-")
    command = [sys.executable, "-m", "segloss.cli", "grid", *grid_args(model, out, args), *extra]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    from segloss.experiments.store import ResultStore

    with ResultStore.open_readonly(out / "results.sqlite") as store:
        rows = store.rows("done")
    cell_s = sum(r["metrics"]["train_seconds"] + r["metrics"]["eval_seconds"] for r in rows)
    return {"variant": name, "cells": len(rows), "wall_s": wall, "cell_s": cell_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-steps", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--eval-limit", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = make_model(folder)
        results = [run_variant(name, extra, model, folder, args) for name, extra in VARIANTS.items()]
    local = results[0]["wall_s"]
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f} before / "
        f"{os.getloadavg()[0]:.1f} after; {platform.python_version()}"
    )
    print("| executor | cells | wall (s) | wall / local | Σ cell train+eval (s) |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['variant']} | {r['cells']} | {r['wall_s']:.1f} | {r['wall_s'] / local:.2f} | {r['cell_s']:.1f} |")


if __name__ == "__main__":
    main()
