"""Wall time of `segloss --help`, `segloss train --help` and `segloss eval --help` for two checkouts, side by side:
runs alternate between them, each a fresh `python -m segloss.cli` with an empty ``XDG_CACHE_HOME`` (the first call
after an install: nothing cached). Prints the load average before and after, and per command the median, min and
max seconds of each checkout and the ratio of the medians.

    git archive main src | tar -x -C /tmp/before      # the code to compare against
    python benchmarks/bench_cli_start.py --before /tmp/before/src --runs 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (["--help"], ["train", "--help"], ["eval", "--help"])


def wall_seconds(src: str, argv: list[str]) -> float:
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "PYTHONPATH": src, "XDG_CACHE_HOME": cache}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "segloss.cli", *argv], env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="src/ folder of the checkout to compare against")
    parser.add_argument("--after", default=str(Path(__file__).resolve().parents[1] / "src"), help="src/ folder")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.runs):
        for argv in COMMANDS:
            for label, src in (("before", args.before), ("after", args.after)):
                times.setdefault((" ".join(argv), label), []).append(wall_seconds(src, argv))
    print(f"load average after: {os.getloadavg()}")
    print("| command | before: median (min-max) s | after: median (min-max) s | after / before |")
    print("|---|---:|---:|---:|")
    for argv in COMMANDS:
        name = " ".join(argv)
        before, after = times[(name, "before")], times[(name, "after")]
        cells = [f"{statistics.median(t):.2f} ({min(t):.2f}-{max(t):.2f})" for t in (before, after)]
        ratio = statistics.median(after) / statistics.median(before)
        print(f"| `segloss {name}` | {cells[0]} | {cells[1]} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
