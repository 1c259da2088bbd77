"""The embedded default: pretrain a tiny base on synthetic arithmetic, fine-tune it with LoRA once per loss, compare.

    segloss demo                                  # CE vs 0.6 CE + 0.4 Lovász, about 10 minutes on 2 CPU cores
    segloss demo --losses all                     # the five losses: ce, focal, gdice, sadl, lovasz
    segloss demo --losses ce,focal --ce-weight 0.5 --seed 1
    segloss demo --smoke                          # tiny sizes, under a minute (what the tests run)
    segloss demo --output-dir runs/demo2 --cache-dir /tmp/segloss-cache

No network is needed. The base model is cached under $XDG_CACHE_HOME/segloss (else ~/.cache/segloss) and reused by
later runs with the same settings. Prints the table (EM, IoU, missing/extra steps, train time; CE is the baseline)
and writes OUTPUT_DIR/table.md, OUTPUT_DIR/demo.json and the report with plots in OUTPUT_DIR/report/. Exit code 1
when a fine-tune or an evaluation failed. See docs/demo.md for measured times and results.
"""

from __future__ import annotations

import argparse

from segloss.config import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from segloss.experiments.demo import DemoConfig

    add_config_arguments(parser, DemoConfig)


def run(args: argparse.Namespace) -> int:
    from segloss.experiments.demo import DemoConfig, DemoFailed, run_demo

    config = config_from_args(DemoConfig, args)
    try:
        run_demo(config)
    except DemoFailed as err:
        print(f"segloss demo: {err}")
        return 1
    return 0
