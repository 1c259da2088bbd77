"""The embedded default: pretrain a tiny base on arithmetic in words, LoRA-fine-tune it into the formula format
with each loss over several seeds, and compare the losses with CE (means, CIs, Holm-corrected paired tests).

    segloss demo                                  # the five losses × 3 seeds (at most ~10 minutes on 2 idle cores)
    segloss demo --n-seeds 5                      # the study of docs/results.md
    segloss demo --losses ce,lovasz --ce-weight 0.5 --seed 1
    segloss demo --smoke                          # tiny sizes, 2 seeds, well under a minute (what the tests run)
    segloss demo --output-dir runs/demo2 --cache-dir /tmp/segloss-cache
    BASE=$(segloss demo --base-only)              # only pretrain (or reuse) the base; prints its directory

No network is needed. The base model is cached under $XDG_CACHE_HOME/segloss (else ~/.cache/segloss) and reused by
later runs with the same settings. Prints the table (per loss: EM mean over seeds with its 95 % CI, EM per seed,
relative change vs CE with its CI, Holm-adjusted p of a paired test over seeds and problems, IoU, step errors,
train time) and one sentence of verdict per loss; writes OUTPUT_DIR/table.md, OUTPUT_DIR/demo.json and the report
with plots and summary.json in OUTPUT_DIR/report/. Exit code 1 when a fine-tune or an evaluation failed. See
docs/demo.md and docs/results.md for measured times and results.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def parse(argv: Sequence[str], prog: str = "segloss demo") -> Any:
    """The `DemoConfig` of ``argv`` (``--config FILE`` + flags), typed by the parser every command uses."""
    from segloss.config import parse_config, typed_parser
    from segloss.experiments.demo import DemoConfig

    return parse_config(typed_parser(DemoConfig, prog=prog, description=__doc__), DemoConfig, argv)


def run(config: Any) -> int:
    from segloss.experiments.demo import DemoFailed, run_demo

    # With --base-only stdout carries the base's directory alone (for $(…)); progress goes to stderr.
    log = (lambda msg: print(msg, file=sys.stderr)) if config.base_only else print
    try:
        run_demo(config, log=log)
    except DemoFailed as err:
        print(f"segloss demo: {err}")
        return 1
    return 0
