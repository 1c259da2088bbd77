"""ResultStore: atomic claims, the retry rules, and two concurrent worker processes on one SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from segloss.experiments.store import STATUSES, ResultStore


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
    from segloss.config import config_from_dict, load_yaml
    from segloss.experiments.grid import GridConfig, parse_shard, run_grid

    config_path, log_path, worker, shard = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    n_workers = int(sys.argv[5])
    config = config_from_dict(GridConfig, load_yaml(config_path))
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
