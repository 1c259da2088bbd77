"""Run a grid of train+eval cells (models × datasets × losses × seeds) into an SQLite result store.

    segloss grid --config configs/grid/paper-gsm8k.yaml
    segloss grid --config configs/grid/paper-gsm8k.yaml --shard 2/8          # worker 2 of 8 on the same store
    segloss grid --config configs/grid/smoke-arith.yaml --models '[runs/tiny-base]' --seeds '[0]'
    segloss grid --config configs/grid/paper-gsm8k.yaml --executor ray --gpus-per-cell 1      # Ray on this machine
    segloss grid --config configs/grid/paper-gsm8k.yaml --executor ray --ray-address auto     # a running Ray cluster
    segloss grid --config configs/grid/paper-gsm8k.yaml --retry-running      # take over every `running` cell
    segloss report --store runs/grid/results.sqlite --output-dir runs/grid/report

Re-running skips done cells and retries failed ones. Workers on one host may share one store (with or without
--shard): each cell is claimed atomically under a lease and runs once. A cell whose worker died (its process is gone,
or its lease expired) is reclaimed by the next worker, which says so; a live worker's cell never is. With --executor
ray this process alone writes the store and the cells run as Ray tasks: output_dir must then be a folder every Ray
node sees at the same path (a shared file system), and the store stays on this machine. A flag replaces the whole
field of the YAML file (`--train '{max_steps: 10}'` drops the file's other train settings). Exit code 1 when a cell
failed in this run, 130 after Ctrl-C and 143 after SIGTERM (the running cells are recorded as interrupted).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from segloss.config import check_choices, config_field
from segloss.experiments.executors import ExecutorName
from segloss.experiments.store import DEFAULT_LEASE_S


@dataclass
class GridRunOptions:
    """How this invocation runs the grid (not what the grid is): sharding, takeover, executor, lease."""

    shard: str | None = config_field(None, help="i/n: run only cells whose index % n == i-1 (e.g. 2/8).")
    retry_running: bool = config_field(
        False,
        help="Also claim cells left `running` by any worker that claimed them before this one started "
        "(dead workers' cells are reclaimed without it).",
    )
    executor: ExecutorName = config_field(
        "local",
        help="local: run cells in this process. ray: run each cell as a Ray task (pip install 'segloss[ray]'); "
        "this process stays the only writer of the store.",
    )
    ray_address: str | None = config_field(
        None,
        help="With --executor ray: `auto` (the cluster started by `ray start` on this node) or host:port of the head "
        "node; default: start Ray on this machine for this grid.",
    )
    gpus_per_cell: float = config_field(0.0, help="With --executor ray: GPUs per cell.")
    cpus_per_cell: float = config_field(1.0, help="With --executor ray: CPUs per cell.")
    lease_seconds: float = config_field(
        DEFAULT_LEASE_S,
        help="A claim's lease; the heartbeat renews it every quarter of it. A worker on another host whose lease "
        "ran out is presumed dead and its cell reclaimed.",
    )

    def __post_init__(self) -> None:
        check_choices(self)
        if self.lease_seconds <= 0:
            raise ValueError(f"lease_seconds: must be > 0, got {self.lease_seconds}")


def parse(argv: Sequence[str], prog: str = "segloss grid") -> tuple[Any, GridRunOptions]:
    """The `GridConfig` and the `GridRunOptions` of ``argv`` (``--config FILE`` + flags), typed by one parser."""
    from segloss.config import parse_configs, typed_parser
    from segloss.experiments.grid import GridConfig

    parser = typed_parser(GridConfig, prog=prog, description=__doc__, extra=[GridRunOptions])
    (config, options), _ = parse_configs(parser, [GridConfig, GridRunOptions], argv)
    return config, options


def run(args: tuple[Any, GridRunOptions]) -> int:
    from segloss.experiments.executors import make_executor
    from segloss.experiments.grid import parse_shard, run_grid

    config, options = args
    shard = parse_shard(options.shard) if options.shard else None
    executor = make_executor(
        options.executor,
        ray_address=options.ray_address,
        cpus_per_cell=options.cpus_per_cell,
        gpus_per_cell=options.gpus_per_cell,
    )
    if options.executor == "ray":
        print(f"[grid] output_dir {config.output_dir} must be visible at the same path on every Ray node")
    # SIGTERM (kill, scancel) must stop the grid like Ctrl-C so its running cells get recorded. When the CLI
    # already turns SIGTERM into KeyboardInterrupt it also reports the interruption, so leave both to it.
    own_sigterm = signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None)
    received: list[int] = []
    if own_sigterm:
        signal.signal(signal.SIGTERM, lambda signum, _frame: _interrupt(signum, received))
    try:
        summary = run_grid(
            config,
            shard=shard,
            retry_running=options.retry_running,
            executor=executor,
            lease_s=options.lease_seconds,
        )
    except KeyboardInterrupt:
        if not own_sigterm:
            raise
        how = "SIGTERM" if received else "Ctrl-C"
        print(
            f"segloss grid: interrupted ({how}); its running cells are recorded as failed (interrupted): run the "
            "same command again to go on (done cells are skipped)",
            file=sys.stderr,
        )
        return 128 + (received[0] if received else signal.SIGINT)
    finally:
        if own_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print(f"store: {summary.store}")
    return 1 if summary.failed else 0


def _interrupt(signum: int, received: list[int]) -> None:
    received.append(signum)
    raise KeyboardInterrupt
