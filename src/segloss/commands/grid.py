"""Run a grid of train+eval cells (models × datasets × losses × seeds) into an SQLite result store.

    segloss grid --config configs/grid/paper-gsm8k.yaml
    segloss grid --config configs/grid/paper-gsm8k.yaml --shard 2/8          # worker 2 of 8 on the same store
    segloss grid --config configs/grid/smoke-arith.yaml --models '[runs/tiny-base]' --seeds '[0]'
    segloss grid --config configs/grid/paper-gsm8k.yaml --retry-running      # take over cells of dead workers
    segloss report --store runs/grid/results.sqlite --output-dir runs/grid/report

Re-running skips done cells and retries failed ones. Workers may share one store (with or without --shard): each
cell is claimed atomically and runs once. A cell left `running` by a killed worker is only taken over with
--retry-running (use it when no other worker is alive). A flag replaces the whole field of the YAML file (`--train
'{max_steps: 10}'` drops the file's other train settings). Exit code 1 when a cell failed in this run.
"""

from __future__ import annotations

import argparse

from segloss.config import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from segloss.experiments.grid import GridConfig

    add_config_arguments(parser, GridConfig)
    parser.add_argument("--shard", default=None, help="i/n: run only cells whose index %% n == i-1 (e.g. 2/8).")
    parser.add_argument(
        "--retry-running",
        action="store_true",
        help="Also claim cells left `running` by a worker that died before this one started.",
    )


def run(args: argparse.Namespace) -> int:
    from segloss.experiments.grid import GridConfig, parse_shard, run_grid

    config = config_from_args(GridConfig, args)
    shard = parse_shard(args.shard) if args.shard else None
    summary = run_grid(config, shard=shard, retry_running=args.retry_running)
    print(f"store: {summary.store}")
    return 1 if summary.failed else 0
