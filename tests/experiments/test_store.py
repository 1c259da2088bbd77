"""ResultStore: atomic claims, the retry rules, and two concurrent worker processes on one SQLite file."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from segloss.experiments.store import SCHEMA_VERSION, STATUSES, ResultStore


def _row(i: int) -> dict:
    return {
        "config_hash": f"h{i}",
        "cell_index": i,
        "model": "m",
        "dataset": "d",
        "loss": "ce",
        "seed": i,
        "settings": {"train": {"seed": i}},
        "run_dir": f"/runs/{i}",
        "eval_dir": None,
    }


def test_register_is_idempotent_and_keeps_status(tmp_path):
    with ResultStore(tmp_path / "s.sqlite", worker="A") as store:
        assert store.register([_row(0), _row(1)]) == 2
        assert store.claim("h0")
        store.finish(
            "h0",
            {
                "exact_match": {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 10},
                "iou": 0.25,
                "calculation_errors": float("nan"),
            },
        )
        assert store.register([_row(0), _row(1), _row(2)]) == 1  # only h2 is new
        row = store.get("h0")
        assert row["status"] == "done"
        assert row["metrics"] == {"exact_match": 0.5, "iou": 0.25, "calculation_errors": None}
        sql = "SELECT json_extract(metrics, '$.iou'), json_extract(metrics, '$.calculation_errors') FROM cells"
        assert tuple(store._conn.execute(sql + " WHERE config_hash = 'h0'").fetchone()) == (0.25, None)  # valid JSON
        assert row["settings"] == {"train": {"seed": 0}} and row["run_dir"] == "/runs/0"
        assert row["attempts"] == 1 and row["worker"] == "A" and row["seconds"] is None
        assert store.counts() == {"pending": 2, "running": 0, "done": 1, "failed": 0}
        assert [r["config_hash"] for r in store.rows("pending")] == ["h1", "h2"]


def test_a_claimed_cell_cannot_be_claimed_by_another_connection(tmp_path):
    path = tmp_path / "s.sqlite"
    a, b = ResultStore(path, worker="A"), ResultStore(path, worker="B")
    a.register([_row(0)])
    assert a.claim("h0") is True
    assert b.claim("h0") is False  # running
    a.finish("h0", {"exact_match": 1.0})
    assert b.claim("h0") is False  # done is never claimed again
    assert b.claim("h0", retry_running=True) is False
    assert b.get("h0")["worker"] == "A"
    a.close()
    b.close()


def test_failed_cells_are_retried_only_when_the_failure_predates_the_worker(tmp_path):
    with ResultStore(tmp_path / "s.sqlite", worker="A") as store:
        store.register([_row(0)])
        store.claim("h0")
        before = time.time() - 10
        store.fail("h0", "Traceback ...\nRuntimeError: boom", seconds=0.5)
        row = store.get("h0")
        assert (row["status"], row["error"], row["seconds"]) == ("failed", "Traceback ...\nRuntimeError: boom", 0.5)
        assert store.claim("h0", since=before) is False  # failed while this worker ran: not retried in a loop
        assert store.claim("h0") is True  # a later run retries it
        assert store.get("h0")["attempts"] == 2


def test_stale_running_claims_are_taken_over_only_on_request(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultStore(path, worker="dead") as dead:
        dead.register([_row(0)])
        dead.claim("h0")
    with ResultStore(path, worker="B") as store:
        assert store.claim("h0") is False
        assert store.claim("h0", since=time.time() - 60, retry_running=True) is False  # claimed after B started
        assert store.claim("h0", retry_running=True) is True
        assert store.get("h0")["worker"] == "B"


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="segloss grid"):
        ResultStore(tmp_path / "missing.sqlite", create=False)
    with ResultStore(tmp_path / "s.sqlite") as store:
        store.register([_row(0)])
        with pytest.raises(KeyError, match="not registered"):
            store.claim("nope")
        with pytest.raises(ValueError, match="status must be one of"):
            store.rows("finished")
        store.claim("h0")
        with pytest.raises(ValueError, match="metric 'text'"):
            store.finish("h0", {"text": "hello"})
        assert store.get("h0")["status"] == "running"  # nothing half-written
    assert STATUSES == ("pending", "running", "done", "failed")


WORKER = textwrap.dedent("""
    import json, sqlite3, sys, time
    from segloss.config import config_from_values, load_yaml
    from segloss.experiments.grid import GridConfig, parse_shard, run_grid

    config_path, log_path, worker, shard = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    n_workers = int(sys.argv[5])
    config = config_from_values(GridConfig, load_yaml(config_path))
    first = [True]

    def all_workers_started():
        with sqlite3.connect(config.store_path, timeout=30) as conn:
            started = conn.execute("SELECT COUNT(DISTINCT worker) FROM cells WHERE worker IS NOT NULL").fetchone()[0]
        return started >= n_workers

    def runner(cell):
        # Hold the first cell until every worker has claimed one, so all really run at once (however unequal their
        # start-up times on a loaded machine).
        if first[0]:
            first[0] = False
            deadline = time.time() + 60
            while not all_workers_started() and time.time() < deadline:
                time.sleep(0.01)
        with open(log_path, "a") as log:
            log.write(json.dumps({"hash": cell.config_hash, "worker": worker}) + "\\n")
        time.sleep(0.01)
        return {"exact_match": cell.seed / 10, "iou": 0.5}

    summary = run_grid(config, shard=parse_shard(shard) if shard != "-" else None, runner=runner, worker=worker,
                       log=None)
    print(json.dumps({"done": len(summary.done), "failed": len(summary.failed), "skipped": summary.skipped}))
""")


@pytest.mark.slow
@pytest.mark.parametrize(
    "workers",
    [{"A": "-", "B": "-"}, {"A": "-", "B": "1/2", "C": "2/2"}],
    ids=["two-plain-workers", "plain-and-two-shards"],
)
def test_concurrent_worker_processes_run_every_cell_exactly_once(tmp_path, workers):
    config = {
        "models": ["m1", "m2"],
        "datasets": ["d1", "d2"],
        "losses": ["ce", "lovasz", "focal"],
        "seeds": [0, 1],
        "output_dir": str(tmp_path / "grid"),
    }
    config_path = tmp_path / "grid.yaml"
    config_path.write_text(yaml.safe_dump(config))
    (tmp_path / "worker.py").write_text(WORKER)
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, str(tmp_path / "worker.py"), str(config_path), str(log), name, shard, str(len(workers))],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name, shard in workers.items()
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * len(workers), [err for _, err in outputs]

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    hashes = [c["hash"] for c in calls]
    assert len(hashes) == 24 and len(set(hashes)) == 24  # every cell once, none twice
    by_worker = {w: {c["hash"] for c in calls if c["worker"] == w} for w in workers}
    assert by_worker["A"] and sum(bool(cells) for cells in by_worker.values()) >= 2  # they really ran at once
    summaries = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(s["done"] for s in summaries) == 24 and all(s["failed"] == 0 for s in summaries)
    expected = [24 if shard == "-" else 12 for shard in workers.values()]  # a shard sees half of the cells
    assert [s["done"] + s["skipped"] for s in summaries] == expected
    with ResultStore(tmp_path / "grid" / "results.sqlite") as store:
        index = {r["config_hash"]: r["cell_index"] for r in store.rows()}
    for name, shard in workers.items():
        if shard != "-":  # a sharded worker only ever ran cells of its shard
            i, n = map(int, shard.split("/"))
            assert all(index[h] % n == i - 1 for h in by_worker[name])

    with ResultStore(tmp_path / "grid" / "results.sqlite") as store:
        rows = store.rows()
        assert store.counts() == {"pending": 0, "running": 0, "done": 24, "failed": 0}
    assert {r["config_hash"] for r in rows} == set(hashes)
    assert all(r["attempts"] == 1 for r in rows)
    assert {r["config_hash"] for r in rows if r["worker"] == "A"} == by_worker["A"]
    with sqlite3.connect(tmp_path / "grid" / "results.sqlite") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- leases -----------------------------------------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from segloss.experiments.store import LeaseKeeper, ResultStore

    path, lease_s, hold_s, host = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    store = ResultStore(path, worker="holder", lease_s=lease_s)
    if host != "-":
        store.host = host  # pose as a worker on another node: only its heartbeat can keep its lease
    assert store.claim("h0")
    with LeaseKeeper(store) as keeper:
        keeper.hold("h0")
        print("claimed", flush=True)
        time.sleep(hold_s)
""")


def _holder(tmp_path: Path, lease_s: float, hold_s: float, host: str = "-") -> subprocess.Popen:
    """A worker process that claims h0 and holds it (heartbeat running) for ``hold_s`` seconds."""
    (tmp_path / "holder.py").write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    args = [str(tmp_path / "s.sqlite"), str(lease_s), str(hold_s), host]
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "holder.py"), *args], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "claimed"
    return proc


def test_a_claim_carries_host_pid_and_a_lease_that_the_heartbeat_renews(tmp_path):
    with ResultStore(tmp_path / "s.sqlite", worker="A", lease_s=30) as store:
        store.register([_row(0)])
        before = time.time()
        assert store.claim("h0")
        row = store.get("h0")
        assert (row["host"], row["pid"]) == (socket.gethostname(), os.getpid())
        assert before <= row["heartbeat_at"] and row["lease_until"] == pytest.approx(row["heartbeat_at"] + 30)
        time.sleep(0.05)
        assert store.heartbeat(["h0"]) == {"h0"}
        assert store.get("h0")["heartbeat_at"] > row["heartbeat_at"]
        store.finish("h0", {"exact_match": 1.0})
        assert store.get("h0")["lease_until"] is None and store.heartbeat(["h0"]) == set()


def test_a_dead_workers_cell_is_reclaimed_by_a_plain_worker_and_says_so(tmp_path):
    with ResultStore(tmp_path / "s.sqlite") as store:
        store.register([_row(0), _row(1)])
    holder = _holder(tmp_path, lease_s=600, hold_s=600)  # a long lease: only "its process is gone" can free it
    holder.kill()
    holder.wait()
    with ResultStore(tmp_path / "s.sqlite", worker="B") as store:
        claim = store.try_claim("h0")
        assert claim is not None and claim.previous_status == "running"
        assert claim.reclaimed_from == f"holder (pid {holder.pid} on {socket.gethostname()})"
        assert claim.reason == "its process is gone"
        assert store.get("h0")["attempts"] == 2 and store.get("h0")["worker"] == "B"
        assert store.try_claim("h1").reclaimed_from is None  # a pending cell is a plain claim


def test_an_expired_lease_from_another_host_is_reclaimed(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultStore(path, worker="far", lease_s=0.2) as far:
        far.register([_row(0)])
        far.host = "another-node"  # a worker on another machine: its pid means nothing here
        assert far.claim("h0")
    with ResultStore(path, worker="B") as store:
        assert store.try_claim("h0") is None  # the lease is still fresh
        time.sleep(0.3)
        claim = store.try_claim("h0")
        assert claim is not None and claim.reason.startswith("its lease expired")
        assert "pid" in claim.reclaimed_from and "another-node" in claim.reclaimed_from


@pytest.mark.parametrize("host", ["-", "other-node"], ids=["same-host", "other-host"])
def test_a_live_lease_is_never_stolen(tmp_path, host):
    with ResultStore(tmp_path / "s.sqlite") as store:
        store.register([_row(0)])
    # A 1 s lease renewed every 0.25 s; the other worker keeps trying for three lease lengths.
    holder = _holder(tmp_path, lease_s=1.0, hold_s=8, host=host)
    try:
        with ResultStore(tmp_path / "s.sqlite", worker="B") as store:
            deadline = time.time() + 3.0
            while time.time() < deadline:
                assert store.try_claim("h0") is None
                time.sleep(0.2)
            assert store.get("h0")["worker"] == "holder" and store.get("h0")["attempts"] == 1
    finally:
        holder.kill()
        holder.wait()


def test_a_frozen_remote_holder_loses_its_lease_and_can_no_longer_record(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultStore(path, worker="slow", lease_s=0.1) as slow, ResultStore(path, worker="C") as other:
        slow.register([_row(0)])
        slow.host = "another-node"
        assert slow.claim("h0")
        time.sleep(0.2)  # slow's heartbeat stalled (a frozen process): its lease expires and C takes the cell
        assert other.claim("h0")
        assert slow.heartbeat(["h0"]) == set()
        assert slow.finish("h0", {"exact_match": 0.0}) is False  # dropped: the cell belongs to C now
        assert other.finish("h0", {"exact_match": 1.0}) is True
        assert other.get("h0")["metrics"] == {"exact_match": 1.0}


def test_a_version_1_store_gains_the_lease_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE cells (config_hash TEXT PRIMARY KEY, cell_index INTEGER NOT NULL, model TEXT NOT NULL,"
            " dataset TEXT NOT NULL, loss TEXT NOT NULL, seed INTEGER NOT NULL, status TEXT NOT NULL DEFAULT"
            " 'pending', settings TEXT NOT NULL DEFAULT '{}', metrics TEXT, run_dir TEXT, eval_dir TEXT, error TEXT,"
            " worker TEXT, attempts INTEGER NOT NULL DEFAULT 0, started_at REAL, finished_at REAL, seconds REAL,"
            " updated_at REAL NOT NULL)"
        )
        conn.execute(
            "INSERT INTO cells VALUES ('h0', 0, 'm', 'd', 'ce', 0, 'running', '{}', NULL, NULL, NULL, NULL,"
            " 'old:1', 1, 0, NULL, NULL, 0)"
        )
        conn.execute("PRAGMA user_version = 1")
    with ResultStore(path, worker="B") as store:
        assert store.get("h0")["lease_until"] is None
        assert store.claim("h0") is False  # no lease recorded: only --retry-running takes it over
        assert store.claim("h0", retry_running=True) is True
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# -- refusing files that are not segloss stores -----------------------------------------------------------------------
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _foreign_sqlite(path: Path) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE songs (title TEXT, year INTEGER)")
        conn.execute("INSERT INTO songs VALUES ('So What', 1959)")
    return path


@pytest.mark.parametrize("opener", ["readonly", "writer"])
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_text("model,loss\nm,ce\n") and p, "not an SQLite file"),
        (_foreign_sqlite, r"no segloss `cells` table; its tables: \['songs'\]"),
    ],
    ids=["csv-file", "foreign-sqlite"],
)
def test_a_file_that_is_not_a_segloss_store_is_refused_untouched(tmp_path, make, message, opener):
    path = tmp_path / "other.db"
    make(path)
    before, listing = _digest(path), sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=message):
        ResultStore.open_readonly(path) if opener == "readonly" else ResultStore(path)
    assert _digest(path) == before and sorted(p.name for p in tmp_path.iterdir()) == listing


def test_open_readonly_reads_a_store_and_refuses_empty_or_missing_files(tmp_path):
    path = tmp_path / "s.sqlite"
    with ResultStore(path, worker="A") as store:
        store.register([_row(0)])
    before = _digest(path)
    with ResultStore.open_readonly(path) as reader:
        assert reader.counts()["pending"] == 1 and reader.get("h0")["seed"] == 0
        with pytest.raises(ValueError, match="read-only"):
            reader.claim("h0")
    assert _digest(path) == before
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with pytest.raises(ValueError, match="it is empty"):
        ResultStore.open_readonly(tmp_path / "empty.sqlite")
    with pytest.raises(FileNotFoundError, match="segloss grid"):
        ResultStore.open_readonly(tmp_path / "missing.sqlite")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b"\x00\x01not a database" * 64) and p, "not an SQLite file"),
        (_foreign_sqlite, "songs"),
    ],
    ids=["binary-file", "foreign-sqlite"],
)
def test_segloss_report_refuses_a_foreign_file_with_a_one_line_error_and_leaves_it_alone(
    tmp_path, capsys, make, message
):
    from segloss.cli import main

    path = make(tmp_path / "music.db")
    before = _digest(path)
    assert main(["report", "--store", str(path), "--out", str(tmp_path / "report")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"segloss report: error: {path} is not a segloss result store") and message in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert _digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["music.db"]  # no -wal/-shm, no report folder
