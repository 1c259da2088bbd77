"""The grid's result store: one SQLite row per cell, written by the grid's driver or by workers on one host.

Schema (table ``cells``; ``docs/experiments.md`` describes every column)::

    config_hash TEXT PRIMARY KEY   -- stable hash of the cell's resolved train+eval settings
    cell_index  INTEGER            -- position in the grid (what --shard i/n selects on)
    model, dataset, loss TEXT; seed INTEGER
    status      TEXT               -- pending | running | done | failed
    settings    TEXT (JSON)        -- the resolved train+eval settings that were hashed
    metrics     TEXT (JSON)        -- {metric: float} once done
    run_dir, eval_dir TEXT         -- where the cell writes its run and its predictions
    error       TEXT               -- traceback summary of the last failure ("interrupted ..." after Ctrl-C)
    worker      TEXT               -- name of the worker that claimed the cell last (default host:pid)
    attempts    INTEGER            -- how many times the cell was claimed
    started_at, finished_at, updated_at REAL (unix seconds); seconds REAL (wall time of the last attempt)
    host TEXT, pid INTEGER         -- the process holding the claim (its lease)
    heartbeat_at, lease_until REAL -- the lease: renewed by the holder's heartbeat; past lease_until it has expired

Concurrency: the database runs in WAL mode with a busy timeout, and a claim is one ``BEGIN IMMEDIATE`` transaction
(read status, then mark ``running``), so two workers can never both claim a cell. A claim is a **lease**: the holder
renews ``lease_until`` from a heartbeat thread (:class:`LeaseKeeper`) while the cell runs. A ``running`` cell is
claimed again (*reclaimed*) by the next worker when its holder ran on this host and its process is gone, or, for a
holder on another host, when its lease expired; a live holder's cell never is (on this host its process is alive, and
elsewhere its heartbeat keeps the lease fresh). ``retry_running=True``
(``segloss grid --retry-running``) also takes over ``running`` cells claimed before the caller started, whatever
their lease. Failed cells are retried when their failure was recorded before the caller started (so concurrent
workers do not re-run a crash in a loop). A worker whose lease was taken over can no longer record the cell.
SQLite over network file systems (NFS) is not safe: keep the store on the driver's local disk.

One file: WAL mode keeps recent writes in ``results.sqlite-wal`` until they are copied into the main file. A writer
copies them (``wal_checkpoint(TRUNCATE)``) after registering cells, after each finished or failed cell and when it
closes, so the WAL holds at most the claims and heartbeats of the cells in flight, and ``results.sqlite`` alone holds
every finished cell even after a ``kill -9``. :func:`backup_store` (``segloss store backup``) writes one
self-contained copy (rollback journal, no side files) at any time, WAL included.

Readers (``segloss report``) open the store with :meth:`ResultStore.open_readonly`, which writes nothing in or beside
the file (so it also reads a store on read-only media) and refuses, with a one-line reason, a file that is not SQLite,
an SQLite file without segloss's ``cells`` table, or a file it may not read (:class:`StoreReader` says how).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import socket
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

STATUSES = ("pending", "running", "done", "failed")
SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 60.0
CHECKPOINT_WAIT_S = 2.0  # how long a WAL checkpoint waits for readers of an older snapshot
DEFAULT_LEASE_S = 60.0
SQLITE_MAGIC = b"SQLite format 3\x00"

_T = TypeVar("_T")

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
    updated_at REAL NOT NULL,
    host TEXT,
    pid INTEGER,
    heartbeat_at REAL,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS cells_status ON cells (status);
"""
# Columns that version 1 stores lack; opening one for writing adds them (NULL lease: only --retry-running takes over).
_V2_COLUMNS = (("host", "TEXT"), ("pid", "INTEGER"), ("heartbeat_at", "REAL"), ("lease_until", "REAL"))
_REQUIRED_COLUMNS = {"config_hash", "cell_index", "model", "dataset", "loss", "seed", "status", "metrics"}


def default_worker_id() -> str:
    """``host:pid`` — names the worker that claimed a cell."""
    return f"{socket.gethostname()}:{os.getpid()}"


def clean_metrics(metrics: dict[str, Any]) -> dict[str, float | None]:
    """``{name: float}``: summaries ``{"mean": x, ...}`` become ``x``; NaN/inf become None (JSON null, which SQLite's
    json_extract can read; NaN is not JSON) and None stays None; other non-numeric values are rejected."""
    out: dict[str, float | None] = {}
    for key, value in metrics.items():
        if isinstance(value, dict) and "mean" in value:
            value = value["mean"]
        if value is None:  # already cleaned (an executor's outcome): NaN stays "no value"
            out[str(key)] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"metric {key!r} must be a number or a {{'mean': ...}} summary, got {value!r}")
        out[str(key)] = float(value) if math.isfinite(float(value)) else None
    return out


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie or a reused pid counts as alive: the safe side)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_head(path: Path) -> bytes:
    """The first bytes of the store; what keeps it from being read is said plainly (``ValueError``), a missing file
    is a ``FileNotFoundError``."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"result store not found: {path}; run `segloss grid` first or fix --store") from None
    except PermissionError:
        raise ValueError(
            f"result store {path} cannot be reached: permission denied on a folder above it; give this user access "
            "to the folder (chmod a+x) or run as its owner"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(
            f"result store {path} is not a file; point --store at the results.sqlite that `segloss grid` wrote"
        )
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC))
    except PermissionError:
        raise ValueError(
            f"result store {path} cannot be read: permission denied (mode {stat.filemode(info.st_mode)}, owner uid "
            f"{info.st_uid}); make it readable (chmod a+r) or run as its owner"
        ) from None


def _may_exist(path: Path) -> bool:
    """Whether ``path`` exists, True when a folder's permissions hide it (:func:`check_store_file` says so)."""
    try:
        return path.exists()
    except PermissionError:
        return True


def check_store_file(path: Path, *, allow_empty: bool = False) -> None:
    """Refuse, without writing anything, a file that is not a segloss store: not SQLite, another program's SQLite
    database, or a newer schema; or one this user may not read. ``allow_empty`` accepts an empty file or a database
    without tables (a writer creates the schema there). The check reads through :class:`StoreReader`."""
    fix = "point --store at the results.sqlite that `segloss grid` wrote"
    head = _read_head(path)
    if head and head != SQLITE_MAGIC:
        raise ValueError(f"{path} is not a segloss result store (not an SQLite file); {fix}")
    tables, columns, version = _describe(path) if head else (set(), set(), 0)
    if not tables and allow_empty:
        return
    if not columns >= _REQUIRED_COLUMNS:
        found = f"its tables: {sorted(tables)}" if tables else "it is empty"
        raise ValueError(f"{path} is not a segloss result store (no segloss `cells` table; {found}); {fix}")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{path}: store schema version {version}, this segloss reads up to {SCHEMA_VERSION}; upgrade segloss"
        )


def _describe(path: Path) -> tuple[set[str], set[str], int]:
    """(table names, columns of ``cells``, user_version), read through :class:`StoreReader`."""
    with contextlib.closing(StoreReader(path)) as reader:
        try:
            conn = reader.connect()
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            columns = {row[1] for row in conn.execute("PRAGMA table_info(cells)")}
            return tables, columns, int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.OperationalError as err:  # the file is fine as far as we know: SQLite could not open it
            raise ValueError(
                f"result store {path}: SQLite cannot open it ({err}); check that the file and its folder are readable"
            ) from None
        except sqlite3.DatabaseError as err:
            raise ValueError(f"{path} is not a segloss result store (SQLite cannot read it: {err})") from None


class StoreReader:
    """A read-only SQLite connection to a store that writes nothing in or beside it (:meth:`connect`).

    * ``-wal`` and ``-shm`` beside it (a live writer, or one that was killed): read through them (``mode=ro``); both
      exist already, so nothing is created;
    * no ``-wal``, or an empty one: every committed write is in the main file, read as ``immutable`` (no lock, no
      side file: this also reads a store on read-only media);
    * a non-empty ``-wal`` without ``-shm`` (copied together, or read-only media): no writer can be live, so both are
      copied to a private temporary folder and read there (SQLite replays the WAL into the copy); :meth:`close`
      removes it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.scratch: Path | None = None
        self.conn: sqlite3.Connection | None = None

    def connect(self) -> sqlite3.Connection:
        wal, shm = Path(f"{self.path}-wal"), Path(f"{self.path}-shm")
        uri = self.path.as_uri()
        if wal.exists() and shm.exists():
            self.conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
            try:
                self.conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # opens the WAL now
                return self.conn
            except sqlite3.OperationalError:  # e.g. an -shm this user may not open: read a private copy instead
                self.conn.close()
        if not wal.exists() or wal.stat().st_size == 0:
            self.conn = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)
            return self.conn
        self.scratch = Path(tempfile.mkdtemp(prefix="segloss-store-"))
        copy = self.scratch / self.path.name
        shutil.copyfile(self.path, copy)
        shutil.copyfile(wal, f"{copy}-wal")
        self.conn = sqlite3.connect(copy, timeout=BUSY_TIMEOUT_S)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def backup_store(source: str | Path, target: str | Path) -> dict[str, int]:
    """Write the store ``source`` (with whatever its WAL holds) to ``target`` as one self-contained SQLite file
    (rollback journal: nothing beside it is needed), atomically; returns the copy's cell counts per status."""
    source, target = Path(source), Path(target)
    if target.resolve() == source.resolve():
        raise ValueError(f"store backup: the target {target} is the store itself; give another file")
    target.parent.mkdir(parents=True, exist_ok=True)
    with ResultStore.open_readonly(source) as store:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
        try:
            with contextlib.closing(sqlite3.connect(name)) as copy:
                with store._lock:
                    store._conn.backup(copy)
                copy.execute("PRAGMA journal_mode = DELETE")  # the source is in WAL mode; the copy stands alone
            os.replace(name, target)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
    with ResultStore.open_readonly(target) as copied:
        return copied.counts()


@dataclasses.dataclass(frozen=True)
class Claim:
    """A successful claim. ``reclaimed_from`` names the previous holder when a ``running`` cell was taken over, and
    ``reason`` says why (its lease expired / its process is gone / --retry-running)."""

    config_hash: str
    previous_status: str
    reclaimed_from: str | None = None
    reason: str | None = None


class ResultStore:
    """SQLite result store of a grid (see the module docstring for the schema, leases and the concurrency rules).

    >>> store = ResultStore("runs/grid/results.sqlite")      # doctest: +SKIP
    >>> store.register([cell.as_row() for cell in cells])     # doctest: +SKIP
    >>> if store.claim(cell.config_hash): ...                 # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path,
        *,
        worker: str | None = None,
        create: bool = True,
        lease_s: float = DEFAULT_LEASE_S,
        _readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.worker = worker or default_worker_id()
        self.host, self.pid = socket.gethostname(), os.getpid()
        if not lease_s > 0:
            raise ValueError(f"lease_s must be positive seconds, got {lease_s!r}")
        self.lease_s = float(lease_s)
        self.readonly = _readonly
        self._lock = threading.RLock()  # the heartbeat thread (LeaseKeeper) shares this connection
        if _readonly or not create or _may_exist(self.path):
            check_store_file(self.path, allow_empty=not _readonly)  # read-only: never alter another program's file
        self._reader: StoreReader | None = None
        if _readonly:
            self._reader = StoreReader(self.path)
            self._conn = self._reader.connect()
            self._conn.row_factory = sqlite3.Row
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: every write below opens its own explicit BEGIN IMMEDIATE transaction.
        self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self._retry_locked(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
        self._conn.execute("PRAGMA synchronous = NORMAL")
        with self._transaction() as conn:
            # executescript() would commit first; run the statements inside this transaction instead.
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1, SCHEMA_VERSION):
                raise ValueError(f"{self.path}: store schema version {version}, this segloss reads {SCHEMA_VERSION}")
            columns = {row[1] for row in conn.execute("PRAGMA table_info(cells)")}
            for name, kind in _V2_COLUMNS:
                if name not in columns:
                    conn.execute(f"ALTER TABLE cells ADD COLUMN {name} {kind}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @classmethod
    def open_readonly(cls, path: str | Path) -> ResultStore:
        """Open an existing store for reading only (``segloss report``): nothing in or beside the file changes, and
        a file that is not a segloss store is refused with a ``ValueError`` (``FileNotFoundError`` when missing)."""
        return cls(path, create=False, _readonly=True)

    # -- plumbing ---------------------------------------------------------------------------------------------------
    @staticmethod
    def _retry_locked(fn: Callable[[], _T], attempts: int = 50) -> _T | None:
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
        if self.readonly:
            raise ValueError(f"{self.path} was opened read-only; open it with ResultStore(path) to write")
        with self._lock:
            self._retry_locked(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def checkpoint(self) -> None:
        """Copy the WAL's committed writes into the main file and empty the WAL (see the module docstring). Best
        effort: a reader that holds an old snapshot for more than ``CHECKPOINT_WAIT_S`` keeps the rest in the WAL
        until the next checkpoint, rather than holding up the grid."""
        with self._lock:
            self._conn.execute(f"PRAGMA busy_timeout = {int(CHECKPOINT_WAIT_S * 1000)}")
            try:
                with contextlib.suppress(sqlite3.OperationalError):
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                self._conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            return
        self.checkpoint()
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
        self.checkpoint()
        return new

    def claim(self, config_hash: str, *, since: float | None = None, retry_running: bool = False) -> bool:
        """Atomically mark a cell ``running`` for this worker; True when this worker now owns it (see
        :meth:`try_claim`, which also says whether a dead worker's cell was reclaimed)."""
        return self.try_claim(config_hash, since=since, retry_running=retry_running) is not None

    def try_claim(self, config_hash: str, *, since: float | None = None, retry_running: bool = False) -> Claim | None:
        """Atomically mark a cell ``running`` under a fresh lease of this worker; the :class:`Claim`, or None.

        Claimable: ``pending``; ``failed`` with its failure recorded before ``since`` (default: now); ``running``
        when its holder ran on this host and its process is gone, when its holder ran on another host and its lease
        expired, or (``retry_running``) when it was claimed before ``since``. ``done`` never is.
        """
        since = time.time() if since is None else since
        with self._transaction() as conn:
            row = conn.execute("SELECT * FROM cells WHERE config_hash = ?", (config_hash,)).fetchone()
            if row is None:
                raise KeyError(f"cell {config_hash} is not registered in {self.path}")
            now = time.time()
            claim = self._claimable(dict(row), since, retry_running, now)
            if claim is not None:
                conn.execute(
                    "UPDATE cells SET status = 'running', worker = ?, host = ?, pid = ?, attempts = attempts + 1,"
                    " started_at = ?, finished_at = NULL, seconds = NULL, updated_at = ?, heartbeat_at = ?,"
                    " lease_until = ? WHERE config_hash = ?",
                    (self.worker, self.host, self.pid, now, now, now, now + self.lease_s, config_hash),
                )
            return claim

    def _claimable(self, row: dict[str, Any], since: float, retry_running: bool, now: float) -> Claim | None:
        status, key = row["status"], row["config_hash"]
        if status == "pending" or (status == "failed" and row["updated_at"] < since):
            return Claim(key, status)
        if status != "running":
            return None
        holder = f"{row['worker']} (pid {row['pid']} on {row['host']})" if row["pid"] else str(row["worker"])
        if row["host"] == self.host and row["pid"]:
            # On this host the holder's process answers for itself: alive (even if slow to beat) is never taken.
            mine = (row["pid"], row["worker"]) == (self.pid, self.worker)
            if not mine and not pid_alive(int(row["pid"])):
                return Claim(key, status, holder, "its process is gone")
        elif row["lease_until"] is not None and row["lease_until"] < now:
            beat = row["heartbeat_at"] or row["updated_at"]
            return Claim(key, status, holder, f"its lease expired (last heartbeat {now - beat:.0f} s ago)")
        if retry_running and row["updated_at"] < since:
            return Claim(key, status, holder, "--retry-running")
        return None

    def heartbeat(self, config_hashes: Iterable[str]) -> set[str]:
        """Renew this worker's leases on ``config_hashes``; returns those it still holds (a missing one was
        reclaimed by another worker after this one's lease expired)."""
        keys = list(config_hashes)
        if not keys:
            return set()
        now = time.time()
        marks = ",".join("?" * len(keys))
        owner = "status = 'running' AND worker = ? AND host = ? AND pid = ?"
        with self._transaction() as conn:
            conn.execute(
                f"UPDATE cells SET heartbeat_at = ?, lease_until = ? WHERE config_hash IN ({marks}) AND {owner}",
                (now, now + self.lease_s, *keys, self.worker, self.host, self.pid),
            )
            held = conn.execute(
                f"SELECT config_hash FROM cells WHERE config_hash IN ({marks}) AND {owner}",
                (*keys, self.worker, self.host, self.pid),
            ).fetchall()
        return {r[0] for r in held}

    def finish(self, config_hash: str, metrics: dict[str, Any], *, seconds: float | None = None) -> bool:
        """Record a cell as ``done`` with its metrics (``{name: float}`` or evaluate()-style summaries).

        Returns False, recording nothing, when another worker has reclaimed the cell (this worker's lease lapsed).
        """
        clean = clean_metrics(metrics)
        return self._close_cell(config_hash, "done", seconds, metrics=json.dumps(clean, allow_nan=False), error=None)

    def fail(self, config_hash: str, error: str, *, seconds: float | None = None) -> bool:
        """Record a cell as ``failed`` with its error text (kept to the last 4000 characters); False as in finish."""
        return self._close_cell(config_hash, "failed", seconds, metrics=None, error=error[-4000:])

    def _close_cell(self, config_hash: str, status: str, seconds: float | None, **values: Any) -> bool:
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status, worker, host, pid FROM cells WHERE config_hash = ?", (config_hash,)
            ).fetchone()
            if row is None:
                raise KeyError(f"cell {config_hash} is not registered in {self.path}")
            holder = (row["worker"], row["host"], row["pid"])
            if row["worker"] is not None and holder != (self.worker, self.host, self.pid):
                return False  # reclaimed by another worker: its result wins, this one is dropped
            conn.execute(
                "UPDATE cells SET status = ?, metrics = ?, error = ?, finished_at = ?, seconds = ?, updated_at = ?,"
                " lease_until = NULL WHERE config_hash = ?",
                (status, values["metrics"], values["error"], now, seconds, now, config_hash),
            )
        self.checkpoint()  # the finished cell is in the main file: a copy of results.sqlite alone holds it
        return True

    # -- reads ------------------------------------------------------------------------------------------------------
    def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        """All cells (or those with ``status``) ordered by cell index; ``settings``/``metrics`` decoded."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        query = "SELECT * FROM cells" + (" WHERE status = ?" if status else "") + " ORDER BY cell_index, config_hash"
        with self._lock:
            rows = self._conn.execute(query, (status,) if status else ()).fetchall()
        return [_decode(row) for row in rows]

    def get(self, config_hash: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._conn.execute("SELECT * FROM cells WHERE config_hash = ?", (config_hash,)).fetchone()
        return None if row is None else _decode(row)

    def counts(self) -> dict[str, int]:
        """``{status: number of cells}`` for every status (zeros included)."""
        with self._lock:
            found = dict(self._conn.execute("SELECT status, COUNT(*) FROM cells GROUP BY status").fetchall())
        return {s: int(found.get(s, 0)) for s in STATUSES}


class LeaseKeeper:
    """Renews the leases of the cells a worker (or the Ray driver) holds, from a daemon thread, every
    ``lease_s / 4`` seconds, so only a dead (or frozen) holder's lease can expire.

    >>> with LeaseKeeper(store) as keeper:                    # doctest: +SKIP
    ...     keeper.hold(cell.config_hash); run(cell); keeper.release(cell.config_hash)
    """

    def __init__(self, store: ResultStore, interval_s: float | None = None) -> None:
        self.store = store
        self.interval_s = interval_s if interval_s is not None else store.lease_s / 4
        self.lost: set[str] = set()  # cells another worker reclaimed while this one held them
        self._held: set[str] = set()
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="segloss-lease", daemon=True)

    def hold(self, config_hash: str) -> None:
        with self._guard:
            self._held.add(config_hash)

    def release(self, config_hash: str) -> None:
        with self._guard:
            self._held.discard(config_hash)

    def beat(self) -> None:
        with self._guard:
            keys = set(self._held)
        still = self.store.heartbeat(keys)
        with self._guard:
            self.lost |= keys - still

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            with contextlib.suppress(sqlite3.Error):  # a busy store this round: three more beats before expiry
                self.beat()

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _decode(row: sqlite3.Row) -> dict[str, Any]:
    item = dict(row)
    item["settings"] = json.loads(item["settings"] or "{}")
    item["metrics"] = json.loads(item["metrics"]) if item["metrics"] else {}
    return item


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
