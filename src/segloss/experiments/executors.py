"""Where the cells of a grid run: in the grid process itself (``local``, the default) or as Ray tasks (``ray``).

Either way one process — the *driver*, the one running ``segloss grid`` — owns the result store: it claims the cells
(under leases its heartbeat renews), hands them to the executor, and records each :class:`Outcome` it gets back. A
cell itself never opens the store; it returns its outcome (status, metrics, run folder, or the error with its
traceback). That keeps SQLite on one host even when the cells run on many.

    segloss grid --config configs/grid/paper-gsm8k.yaml                                   # local
    segloss grid --config configs/grid/paper-gsm8k.yaml --executor ray --gpus-per-cell 1   # Ray, this machine
    segloss grid --config configs/grid/paper-gsm8k.yaml --executor ray --ray-address auto  # an existing cluster

Ray is optional (``pip install 'segloss[ray]'``) and imported only by :class:`RayExecutor`. Faults: a Ray worker
that dies mid-cell is retried by Ray (``max_retries``) and the retry resumes the run from its last complete
checkpoint (the default runner trains with ``resume``); Ctrl-C on the driver cancels every task and records their
cells as failed with an ``interrupted`` error; a driver killed outright leaves its cells ``running`` under a lease
that the next driver reclaims (``docs/experiments.md``).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, get_args

from segloss.config import choice_error
from segloss.experiments.cells import Cell
from segloss.experiments.store import clean_metrics

ExecutorName = Literal["local", "ray"]  # the type of `segloss grid --executor`
EXECUTORS: tuple[str, ...] = get_args(ExecutorName)
RAY_INSTALL_HINT = "pip install 'segloss[ray]'"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What running one cell produced, as handed back to the driver (a Ray task's return value).

    ``status`` is ``done`` (``metrics`` set) or ``failed`` (``error`` holds the traceback's tail); ``where`` is the
    ``host:pid`` that ran the cell.
    """

    config_hash: str
    status: str
    metrics: dict[str, float | None]
    run_dir: str
    error: str | None
    seconds: float
    where: str


def execute_cell(cell: Cell, runner: Callable[[Cell], dict[str, Any]]) -> Outcome:
    """Run one cell and describe the result; an exception becomes a ``failed`` outcome (KeyboardInterrupt and a
    dying process are not caught: those are the executor's to handle)."""
    start = time.perf_counter()
    where = f"{socket.gethostname()}:{os.getpid()}"
    try:
        metrics = clean_metrics(runner(cell))
    except Exception:
        error = traceback.format_exc(limit=-8)
        return Outcome(cell.config_hash, "failed", {}, str(cell.run_dir), error, time.perf_counter() - start, where)
    return Outcome(cell.config_hash, "done", metrics, str(cell.run_dir), None, time.perf_counter() - start, where)


class Driver(Protocol):
    """The grid process's side of an executor: it owns the store (see ``segloss.experiments.grid``)."""

    def claim(self, cell: Cell) -> bool:
        """Claim ``cell`` in the store (under a lease); False when another worker has it or it is done."""
        ...

    def record(self, cell: Cell, outcome: Outcome) -> None:
        """Write a cell's outcome to the store and release its lease."""
        ...

    def interrupted(self, cells: Sequence[Cell], why: str) -> None:
        """Record cells whose run was stopped (Ctrl-C) as failed with ``why``."""
        ...


class LocalExecutor:
    """Runs the cells one after the other in this process, claiming each just before it runs (so any number of
    plain ``segloss grid`` processes on one host share the work)."""

    name = "local"

    def check(self) -> None:
        """Nothing to check: the local executor needs no services."""

    def close(self) -> None:
        """Nothing to stop."""

    def run(self, driver: Driver, cells: Sequence[Cell], runner: Callable[[Cell], dict[str, Any]]) -> None:
        for cell in cells:
            if not driver.claim(cell):
                continue
            try:
                outcome = execute_cell(cell, runner)
            except KeyboardInterrupt:
                driver.interrupted([cell], "interrupted (KeyboardInterrupt)")
                raise
            driver.record(cell, outcome)


class RayExecutor:
    """Runs each claimed cell as a Ray task with ``num_cpus=cpus_per_cell`` and ``num_gpus=gpus_per_cell``.

    ``address``: None starts a Ray instance on this machine for the grid (and stops it afterwards); ``"auto"`` joins
    the cluster started with ``ray start`` on this node; ``"host:port"`` joins that head node. An already initialised
    Ray (``ray.init`` called by the caller) is used as it is. ``max_retries``: how often Ray re-runs a cell whose
    worker process died; the cell's own exceptions are not retried (they are the cell's outcome).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus_per_cell: float = 1.0,
        gpus_per_cell: float = 0.0,
        max_retries: int = 3,
        poll_s: float = 0.5,
    ) -> None:
        if not cpus_per_cell > 0:
            raise ValueError(f"--cpus-per-cell must be positive, got {cpus_per_cell!r}")
        if not gpus_per_cell >= 0:
            raise ValueError(f"--gpus-per-cell must be 0 or more, got {gpus_per_cell!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be 0 or more, got {max_retries!r}")
        self.address = address
        self.cpus_per_cell = float(cpus_per_cell)
        self.gpus_per_cell = float(gpus_per_cell)
        self.max_retries = int(max_retries)
        self.poll_s = poll_s
        self._started_ray = False
        self._cluster_gpus = 0.0

    def check(self) -> None:
        """Connect to Ray (or start it) and make sure one cell fits on the cluster, before anything is claimed."""
        ray = _import_ray()
        if not ray.is_initialized():
            self._started_ray = self.address is None
            on_sigterm = signal.getsignal(signal.SIGTERM)
            try:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=True)
                # ray.init replaces the SIGTERM handler with sys.exit; keep the caller's (the command stops cleanly).
                if on_sigterm is not None and threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGTERM, on_sigterm)
            except ConnectionError as err:
                raise ValueError(
                    f"--ray-address {self.address}: no Ray cluster there ({err}); start one with `ray start --head` "
                    "or leave --ray-address out to run Ray on this machine"
                ) from None
        total = ray.cluster_resources()
        self._cluster_gpus = float(total.get("GPU", 0.0))
        for flag, key, need in (
            ("--cpus-per-cell", "CPU", self.cpus_per_cell),
            ("--gpus-per-cell", "GPU", self.gpus_per_cell),
        ):
            if need > total.get(key, 0.0):
                self.close()
                raise ValueError(
                    f"{flag} {need:g}: the Ray cluster has {total.get(key, 0.0):g} {key}s in all, so no cell could "
                    f"start; lower {flag} or add nodes"
                )

    def run(self, driver: Driver, cells: Sequence[Cell], runner: Callable[[Cell], dict[str, Any]]) -> None:
        ray = _import_ray()
        task = ray.remote(execute_cell).options(**self.task_options(self._cluster_gpus))
        claimed = [cell for cell in cells if driver.claim(cell)]
        pending = {task.remote(cell, runner): cell for cell in claimed}
        try:
            self._collect(ray, driver, pending)
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)  # force: a training step never sees a KeyboardInterrupt in time
            driver.interrupted(
                list(pending.values()), "interrupted (Ctrl-C or SIGTERM on the grid driver; Ray task cancelled)"
            )
            raise

    def task_options(self, cluster_gpus: float) -> dict[str, Any]:
        """Ray ``.options`` of a cell's task. Ray leaves every GPU visible to a task that asked for none, so on a
        cluster with GPUs a CPU-only cell (``--gpus-per-cell 0``) gets ``CUDA_VISIBLE_DEVICES=""``: otherwise all
        such cells would land, unaccounted, on GPU 0."""
        options: dict[str, Any] = {
            "num_cpus": self.cpus_per_cell,
            "num_gpus": self.gpus_per_cell,
            "max_retries": self.max_retries,
            "retry_exceptions": False,
        }
        if cluster_gpus > 0 and self.gpus_per_cell == 0:
            options["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
        return options

    def _collect(self, ray: Any, driver: Driver, pending: dict[Any, Cell]) -> None:
        """Record outcomes as tasks finish. The short wait keeps Ctrl-C responsive on the driver."""
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=self.poll_s)
            for ref in ready:
                cell = pending.pop(ref)
                driver.record(cell, self._outcome(ray, ref, cell))

    @staticmethod
    def _outcome(ray: Any, ref: Any, cell: Cell) -> Outcome:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as err:  # the worker died more often than max_retries allows, or similar
            error = f"{type(err).__name__}: {err}"
            return Outcome(cell.config_hash, "failed", {}, str(cell.run_dir), error, 0.0, "ray")

    def close(self) -> None:
        """Stop the Ray instance this executor started (a cluster it joined keeps running)."""
        if self._started_ray:
            _import_ray().shutdown()
            self._started_ray = False


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


def make_executor(
    name: str,
    *,
    ray_address: str | None = None,
    cpus_per_cell: float = 1.0,
    gpus_per_cell: float = 0.0,
) -> LocalExecutor | RayExecutor:
    """The executor called ``name`` (``local`` or ``ray``); Ray-only options given to ``local`` are an error."""
    if name == "local":
        if ray_address is not None or gpus_per_cell or cpus_per_cell != 1.0:
            raise ValueError(
                "--ray-address, --gpus-per-cell and --cpus-per-cell apply to --executor ray; add it or drop them"
            )
        return LocalExecutor()
    if name == "ray":
        _import_ray()  # a missing Ray is the first thing to hear about, before the grid is checked
        return RayExecutor(ray_address, cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus_per_cell)
    raise ValueError(choice_error("executor", name, EXECUTORS))
