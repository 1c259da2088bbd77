"""The grid's result store: one SQLite row per cell, safe when several worker processes share one file.

Schema (table ``cells``; ``docs/experiments.md`` describes every column)::

    config_hash TEXT PRIMARY KEY   -- stable hash of the cell's resolved train+eval settings
    cell_index  INTEGER            -- position in the grid (what --shard i/n selects on)
    model, dataset, loss TEXT; seed INTEGER
    status      TEXT               -- pending | running | done | failed
    settings    TEXT (JSON)        -- the resolved train+eval settings that were hashed
    metrics     TEXT (JSON)        -- {metric: float} once done
    run_dir, eval_dir TEXT         -- where the cell writes its run and its predictions
    error       TEXT               -- traceback summary of the last failure
    worker      TEXT               -- host:pid of the worker that claimed the cell last
    attempts    INTEGER            -- how many times the cell was claimed
    started_at, finished_at, updated_at REAL (unix seconds); seconds REAL (wall time of the last attempt)

Concurrency: the database runs in WAL mode with a busy timeout, and a claim is one ``BEGIN IMMEDIATE`` transaction
(read status, then mark ``running``), so two workers can never both claim a cell. A ``running`` row whose worker died
stays ``running``: it is only taken over when the caller asks for it (``retry_running=True``, ``segloss grid
--retry-running``), and then only if it was claimed before the caller started. Failed cells are retried the same way:
a failure recorded before this worker started is claimed again; one recorded while this worker runs is not (so
concurrent workers do not re-run a crash in a loop). SQLite over network file systems (NFS) is not safe; keep the
store on a local disk.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

STATUSES = ("pending", "running", "done", "failed")
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cells (
    config_hash TEXT PRIMARY KEY,
    cell_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    dataset TEXT NOT NULL,
    loss TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    settings TEXT NOT NULL DEFAULT '{}',
    metrics TEXT,
    run_dir TEXT,
    eval_dir TEXT,
    error TEXT,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL,
    finished_at REAL,
    seconds REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS cells_status ON cells (status);
"""


def default_worker_id() -> str:
    """``host:pid`` — names the worker that claimed a cell."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _clean_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """``{name: float}``: summaries ``{"mean": x, ...}`` become ``x``; NaN/inf become None (JSON null, which SQLite's
    json_extract can read; NaN is not JSON); non-numeric values are rejected."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        if isinstance(value, dict) and "mean" in value:
            value = value["mean"]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"metric {key!r} must be a number or a {{'mean': ...}} summary, got {value!r}")
        out[str(key)] = float(value) if math.isfinite(float(value)) else None
    return out


class ResultStore:
    """SQLite result store of a grid (see the module docstring for the schema and the concurrency rules).

    >>> store = ResultStore("runs/grid/results.sqlite")      # doctest: +SKIP
    >>> store.register([cell.as_row() for cell in cells])     # doctest: +SKIP
    >>> if store.claim(cell.config_hash): ...                 # doctest: +SKIP
    """

    def __init__(self, path: str | Path, *, worker: str | None = None, create: bool = True) -> None:
        self.path = Path(path)
        self.worker = worker or default_worker_id()
        if not create and not self.path.is_file():
            raise FileNotFoundError(f"result store not found: {self.path}; run `segloss grid` first or fix --store")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every write below opens its own explicit BEGIN IMMEDIATE transaction.
        self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._retry_locked(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._transaction() as conn:
            # executescript() would commit first; run the statements inside this transaction instead.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise ValueError(f"{self.path}: store schema version {version}, this segloss reads {SCHEMA_VERSION}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- plumbing ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _retry_locked(fn, attempts: int = 50):
        # Switching to WAL needs a brief exclusive lock that the busy handler does not always cover at creation time.
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or i == attempts - 1:
                    raise
                time.sleep(0.05 * (i + 1))
        return None

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken with BEGIN IMMEDIATE so the write lock is held from the first read."""
        self._retry_locked(lambda: self._conn.execute("BEGIN IMMEDIATE"))
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writes -----------------------------------------------------------------------------------------------------
    def register(self, rows: Iterable[dict[str, Any]]) -> int:
        """Insert cells as ``pending`` unless their ``config_hash`` is already stored; returns how many were new.

        Each row needs ``config_hash, cell_index, model, dataset, loss, seed`` and may carry ``settings`` (dict),
        ``run_dir``, ``eval_dir``. Existing rows keep their status (that is how re-running a grid skips done cells).
        """
        now = time.time()
        new = 0
        with self._transaction() as conn:
            for row in rows:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO cells (config_hash, cell_index, model, dataset, loss, seed, settings,"
                    " run_dir, eval_dir, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        row["config_hash"],
                        int(row["cell_index"]),
                        row["model"],
                        row["dataset"],
                        row["loss"],
                        int(row["seed"]),
                        json.dumps(row.get("settings", {}), sort_keys=True, default=str),
                        _opt_str(row.get("run_dir")),
                        _opt_str(row.get("eval_dir")),
                        now,
                    ),
                )
                new += cur.rowcount
        return new

    def claim(self, config_hash: str, *, since: float | None = None, retry_running: bool = False) -> bool:
        """Atomically mark a cell ``running`` for this worker; True when this worker now owns it.

        Claimable: ``pending``; ``failed`` with its failure recorded before ``since`` (default: now); ``running``
        claimed before ``since`` only when ``retry_running`` (a worker that died). ``done`` never is.
        """
        since = time.time() if since is None else since
        with self._transaction() as conn:
            row = conn.execute("SELECT status, updated_at FROM cells WHERE config_hash = ?", (config_hash,)).fetchone()
            if row is None:
                raise KeyError(f"cell {config_hash} is not registered in {self.path}")
            status, updated = row["status"], row["updated_at"]
            ok = (
                status == "pending"
                or (status == "failed" and updated < since)
                or (status == "running" and retry_running and updated < since)
            )
            if ok:
                now = time.time()
                conn.execute(
                    "UPDATE cells SET status = 'running', worker = ?, attempts = attempts + 1,"
                    " started_at = ?, finished_at = NULL, seconds = NULL, updated_at = ?"
                    " WHERE config_hash = ?",
                    (self.worker, now, now, config_hash),
                )
            return ok

    def finish(self, config_hash: str, metrics: dict[str, Any], *, seconds: float | None = None) -> None:
        """Record a cell as ``done`` with its metrics (``{name: float}`` or evaluate()-style summaries)."""
        clean = _clean_metrics(metrics)
        self._close_cell(config_hash, "done", seconds, metrics=json.dumps(clean, allow_nan=False), error=None)

    def fail(self, config_hash: str, error: str, *, seconds: float | None = None) -> None:
        """Record a cell as ``failed`` with its error text (kept to the last 4000 characters)."""
        self._close_cell(config_hash, "failed", seconds, metrics=None, error=error[-4000:])

    def _close_cell(self, config_hash: str, status: str, seconds: float | None, **values: Any) -> None:
        now = time.time()
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE cells SET status = ?, metrics = ?, error = ?, finished_at = ?, seconds = ?,"
                " updated_at = ? WHERE config_hash = ?",
                (status, values["metrics"], values["error"], now, seconds, now, config_hash),
            )
            if cur.rowcount != 1:
                raise KeyError(f"cell {config_hash} is not registered in {self.path}")

    # -- reads ------------------------------------------------------------------------------------------------------
    def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        """All cells (or those with ``status``) ordered by cell index; ``settings``/``metrics`` decoded."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        query = "SELECT * FROM cells" + (" WHERE status = ?" if status else "") + " ORDER BY cell_index, config_hash"
        return [_decode(row) for row in self._conn.execute(query, (status,) if status else ())]

    def get(self, config_hash: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM cells WHERE config_hash = ?", (config_hash,)).fetchone()
        return None if row is None else _decode(row)

    def counts(self) -> dict[str, int]:
        """``{status: number of cells}`` for every status (zeros included)."""
        found = dict(self._conn.execute("SELECT status, COUNT(*) FROM cells GROUP BY status").fetchall())
        return {s: int(found.get(s, 0)) for s in STATUSES}


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    item["settings"] = json.loads(item["settings"] or "{}")
    item["metrics"] = json.loads(item["metrics"]) if item["metrics"] else {}
    return item


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
