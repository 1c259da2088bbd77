"""Write the paper-style report of a grid's result store: report.md, table.csv, table.json and PNG plots.

    segloss report --store runs/grid/results.sqlite --output-dir runs/grid/report
    segloss report --store runs/grid/results.sqlite            # writes next to the store, in report/

The table has one row per model × loss and, per dataset, EM, IoU and step errors as mean [95 % CI] over seeds; the
report adds each loss's relative EM change over CE, a paired permutation test per loss vs CE across seeds (it says
plainly when a difference is not significant), and plots of EM per loss and of the step-error breakdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", type=Path, required=True, help="The grid's SQLite store (results.sqlite).")
    parser.add_argument(
        "--output-dir",
        "--out",
        dest="out",
        type=Path,
        default=None,
        help="Report folder (default: <store folder>/report).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the bootstrap CIs and permutation tests.")


def run(args: argparse.Namespace) -> int:
    from segloss.experiments.report import write_report

    out = args.out or args.store.parent / "report"
    path = write_report(args.store, out, seed=args.seed)
    print(f"report: {path}")
    return 0
