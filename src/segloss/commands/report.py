"""Write the report of a study: report.md, summary.json, table.csv, table.json and PNG figures.

    segloss report --results results/smollm2-arith --output-dir runs/report/smollm2-arith
    segloss report --results results/smollm2-arith --plan configs/study/smollm2-arith.yaml --output-dir D
    segloss report --store runs/grid/results.sqlite                    # writes next to the store, in report/
    segloss report --store runs/demo/results.sqlite --export-results results/demo   # copy the cells, report them
    segloss report --update-docs docs/results.md                      # regenerate the page's generated tables

``--results`` reads committed cells (``results/<study>/<cell>/``: metrics, per-problem predictions, train summary;
see segloss.experiments.results), ``--store`` a grid's SQLite store; both give the same report. Per loss: the
number of seeds, the difference from CE in points with its 95 % CI (paired t-test over seeds), p (Holm-adjusted),
an equivalence test (TOST) against the margin, the minimum detectable effect, and a verdict; the comparisons and
margin come from ``--plan`` (default: the results folder's plan.yaml, else each loss vs CE, ±5 points).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--results", type=Path, default=None, help="A results folder: results/<study>.")
    source.add_argument("--store", type=Path, default=None, help="A grid's SQLite store (results.sqlite).")
    parser.add_argument(
        "--output-dir",
        "--out",
        dest="out",
        type=Path,
        default=None,
        help="Report folder (default: <store folder>/report, or runs/report/<study> for --results).",
    )
    parser.add_argument("--plan", type=Path, default=None, help="Study plan YAML (comparisons, margin, planned SD).")
    parser.add_argument(
        "--export-results",
        type=Path,
        default=None,
        help="With --store: first copy its done cells into this results folder (cells there are kept), then report "
        "from that folder.",
    )
    parser.add_argument(
        "--update-docs",
        type=Path,
        default=None,
        help="A Markdown page whose `segloss-report` blocks are regenerated from the results they name.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the bootstrap resamples.")


def run(args: argparse.Namespace) -> int:
    from segloss.experiments.report import update_doc, write_report, write_results_report
    from segloss.experiments.results import export_store

    if args.export_results is not None and args.store is None:
        raise ValueError("--export-results copies a store's cells: add --store runs/<grid>/results.sqlite")
    if args.results is None and args.store is None and args.update_docs is None:
        raise ValueError("give --results results/<study>, --store results.sqlite or --update-docs PAGE")
    if args.export_results is not None:
        new = export_store(args.store, args.export_results)
        print(f"exported {len(new)} new cell(s) to {args.export_results}")
        args.results = args.export_results
    if args.results is not None:
        out = args.out or Path("runs/report") / args.results.resolve().name
        print(f"report: {write_results_report(args.results, out, seed=args.seed, plan=args.plan)}")
    elif args.store is not None:
        out = args.out or args.store.parent / "report"
        print(f"report: {write_report(args.store, out, seed=args.seed, plan=args.plan)}")
    if args.update_docs is not None:
        changed = update_doc(args.update_docs)
        print(f"{args.update_docs}: {'tables regenerated' if changed else 'tables already match the results'}")
    return 0
