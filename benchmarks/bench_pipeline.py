"""Train tokens/s of `segloss train` end to end, two source trees side by side (issue 20: before/after TRL).

Each round runs the same `segloss train` once per tree (alternating, so load changes hit both alike) in a fresh
process with ``PYTHONPATH=<tree>/src`` and reads ``tokens / wall_time_s`` from its train_summary.json (the
training loop only: tokenization and model loading are outside ``wall_time_s``); the table shows each round and
the median ratio. The model is the tests' tiny Llama (built here) unless ``--model`` names one.

    python benchmarks/bench_pipeline.py --trees /work/main /work/wt-i20 --rounds 3 --steps 30
    python benchmarks/bench_pipeline.py --trees A B --model path/to/SmolLM2.gguf --steps 6 --max-length 128
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TEXTS = ["Question: Tom has 3 apples and buys 4 more. How many?\nAnswer: <<3+4=7>> #### 7"] * 8


def tiny_model(folder: Path) -> str:
    from segloss.models import make_tiny_model_dir

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import TOKENIZER_TEXTS

    return str(make_tiny_model_dir(folder, TOKENIZER_TEXTS, vocab_size=300))


def run(tree: Path, model: str, out: Path, args: argparse.Namespace) -> float:
    """tokens/s of one `segloss train` with the code of ``tree``."""
    command = [
        sys.executable, "-m", "segloss.cli", "train", "--model", model, "--dataset", "arith",
        "--dataset_options", "{n_train: 2000, max_steps: 3}", "--max_length", str(args.max_length),
        "--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch), "--loss", args.loss,
        "--save_strategy", "no", "--logging_steps", str(args.steps), "--disable_tqdm", "true",
        "--output_dir", str(out), "--seed", "0",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    summary = json.loads((out / "train_summary.json").read_text())
    return summary["tokens"] / summary["wall_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs=2, type=Path, required=True, help="before and after source trees")
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--loss", default="lovasz")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or tiny_model(Path(tmp) / "tiny")
        rates: dict[int, list[float]] = {0: [], 1: []}
        for round_ in range(args.rounds):
            for index, tree in enumerate(args.trees):
                rates[index].append(run(tree.resolve(), model, Path(tmp) / f"run-{round_}-{index}", args))
            print(f"round {round_}: {rates[0][-1]:.0f} vs {rates[1][-1]:.0f} tokens/s", flush=True)
    before, after = statistics.median(rates[0]), statistics.median(rates[1])
    print(f"median tokens/s: before {before:.0f}, after {after:.0f}; after/before = {after / before:.3f}")


if __name__ == "__main__":
    main()
