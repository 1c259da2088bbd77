"""The test suite's time by folder, from the ``--durations=0`` report of a pytest run (docs/benchmarks.md).

    PYTEST_ADDOPTS="--durations=0 -vv" make test > test.log 2>&1
    python benchmarks/suite_durations.py test.log            # markdown table: folder, tests, seconds, slowest test

With pytest-xdist the seconds are summed over both workers (CPU-bound tests: about the CPU time), so their total is
about twice the wall time on two workers. pytest leaves out the phases under 5 ms (it says how many), so a test counts
when one of its phases took 5 ms or more; the seconds left out are at most 5 ms each.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^(?P<s>\d+(?:\.\d+)?)s (?P<phase>setup|call|teardown)\s+(?P<test>tests/\S+)")


def folder_of(test: str) -> str:
    parts = test.split("::")[0].split("/")
    return "/".join(parts[:2]) if len(parts) > 2 else parts[-1]


def by_folder(log: str) -> dict[str, dict[str, float]]:
    """Per test, setup + call + teardown seconds, grouped by folder: ``{folder: {test: seconds}}``."""
    tests: dict[str, float] = defaultdict(float)
    for line in log.splitlines():
        match = LINE.match(line.strip())
        if match:
            tests[match["test"]] += float(match["s"])
    folders: dict[str, dict[str, float]] = defaultdict(dict)
    for test, seconds in tests.items():
        folders[folder_of(test)][test] = seconds
    return folders


def table(folders: dict[str, dict[str, float]]) -> str:
    rows = ["| folder | tests (≥ 5 ms) | seconds (both workers) | slowest test (s) |", "|---|---:|---:|---|"]
    total_tests = total_seconds = 0.0
    for folder, tests in sorted(folders.items(), key=lambda kv: -sum(kv[1].values())):
        slowest = max(tests, key=lambda t: tests[t])
        name = slowest.split("::", 1)[1][:70]
        rows.append(f"| {folder} | {len(tests)} | {sum(tests.values()):.0f} | {name} ({tests[slowest]:.0f}) |")
        total_tests += len(tests)
        total_seconds += sum(tests.values())
    rows.append(f"| **all** | **{total_tests:.0f}** | **{total_seconds:.0f}** | |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="the output of a pytest run with --durations=0")
    folders = by_folder(parser.parse_args().log.read_text(errors="replace"))
    if not folders:
        raise SystemExit("no durations in the log: run pytest with --durations=0")
    print(table(folders))


if __name__ == "__main__":
    main()
