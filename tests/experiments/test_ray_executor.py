"""`segloss grid --executor ray` on a real local Ray instance: every cell once, the local executor's results, only the
driver writes the store, a killed worker's cell is retried, a killed driver's successor finishes the grid, Ctrl-C.

One Ray instance (``ray.init(num_cpus=2)``) serves the whole module; drivers started as subprocesses join it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from segloss.experiments.executors import RayExecutor, make_executor  # noqa: E402
from segloss.experiments.grid import GridConfig, run_grid  # noqa: E402
from segloss.experiments.store import ResultStore  # noqa: E402

torch = pytest.importorskip("torch")
load_file = pytest.importorskip("safetensors.torch").load_file

# Ray workers cannot import this test module: ship its functions and classes by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
SRC = Path(__file__).resolve().parents[2] / "src"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_address():
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _config(tmp_path: Path, name: str = "grid", **overrides) -> GridConfig:
    values = {
        "models": ["m1"],
        "datasets": ["d1"],
        "losses": ["ce", "lovasz"],
        "seeds": [0, 1],
        "output_dir": str(tmp_path / name),
        **overrides,
    }
    return GridConfig(**values)


def _log(path: str, **entry) -> None:
    with open(path, "a") as handle:  # one short O_APPEND write per line: safe across processes
        handle.write(json.dumps({"pid": os.getpid(), "time": time.time(), **entry}) + "\n")


def _entries(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


class FakeCell:
    """A runner whose metrics depend only on the cell; it logs where it ran and which files its process had open."""

    def __init__(self, log: Path, store: Path) -> None:
        self.log, self.store = str(log), str(store)

    def __call__(self, cell) -> dict:
        fds = Path("/proc/self/fd")
        open_files = [os.path.realpath(p) for p in fds.iterdir()] if fds.is_dir() else []
        _log(self.log, hash=cell.config_hash, store_open=any(f.startswith(self.store) for f in open_files))
        return {"exact_match": 0.1 * cell.seed + (0.5 if cell.loss == "lovasz" else 0.0), "iou": 0.25}


def test_ray_grid_runs_every_cell_once_with_the_local_results_and_only_the_driver_writes(tmp_path, ray_address):
    local = _config(tmp_path, "local")
    run_grid(local, runner=FakeCell(tmp_path / "local.jsonl", local.store_path), log=None)
    config = _config(tmp_path, "ray")
    store_path = str(config.store_path.resolve())
    summary = run_grid(config, runner=FakeCell(tmp_path / "ray.jsonl", store_path), executor=RayExecutor(), log=None)

    calls = _entries(tmp_path / "ray.jsonl")
    assert sorted(c["hash"] for c in calls) == sorted(c.config_hash for c in config.cells())  # each cell once
    assert len(summary.done) == 4 and summary.counts["done"] == 4
    assert all(c["pid"] != os.getpid() for c in calls)  # the cells ran in Ray worker processes ...
    assert not any(c["store_open"] for c in calls)  # ... which never had the store open
    with ResultStore(local.store_path) as a, ResultStore(config.store_path) as b:
        expected = {r["config_hash"]: r["metrics"] for r in a.rows()}
        rows = b.rows()
    assert {r["config_hash"]: r["metrics"] for r in rows} == expected
    assert {(r["host"], r["pid"], r["attempts"]) for r in rows} == {(socket.gethostname(), os.getpid(), 1)}
    assert {r["run_dir"] for r in rows} == {str(c.run_dir.resolve()) for c in config.cells()}  # absolute paths


class DieOnce:
    """Kills its own worker process (as an OOM killer or a lost node would) on the first attempt at ``loss``."""

    def __init__(self, log: Path, marker: Path, loss: str) -> None:
        self.log, self.marker, self.loss = str(log), str(marker), loss

    def __call__(self, cell) -> dict:
        _log(self.log, hash=cell.config_hash, loss=cell.loss)
        if cell.loss == self.loss and cell.seed == 0 and not os.path.exists(self.marker):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return {"exact_match": 1.0}


def test_a_cell_whose_worker_is_killed_is_retried_by_ray_and_finishes(tmp_path, ray_address):
    config = _config(tmp_path)
    runner = DieOnce(tmp_path / "calls.jsonl", tmp_path / "killed", loss="lovasz")
    summary = run_grid(config, runner=runner, executor=RayExecutor(max_retries=2), log=None)
    assert (tmp_path / "killed").exists() and summary.counts == {"pending": 0, "running": 0, "done": 4, "failed": 0}
    calls = _entries(tmp_path / "calls.jsonl")
    victim = next(c for c in config.cells() if (c.loss, c.seed) == ("lovasz", 0))
    tries = [c for c in calls if c["hash"] == victim.config_hash]
    assert len(tries) == 2 and tries[0]["pid"] != tries[1]["pid"]  # a fresh worker ran the retry
    assert len(calls) == 5
    with ResultStore(config.store_path) as store:
        assert store.get(victim.config_hash)["attempts"] == 1  # one claim: the retry was Ray's, not a new grid run


def test_a_worker_killed_more_often_than_the_retries_allow_fails_only_its_cell(tmp_path, ray_address):
    config = _config(tmp_path, seeds=[0])
    runner = DieOnce(tmp_path / "calls.jsonl", tmp_path / "killed", loss="lovasz")
    summary = run_grid(config, runner=runner, executor=RayExecutor(max_retries=0), log=None)
    assert summary.counts["done"] == 1 and len(summary.failed) == 1
    with ResultStore(config.store_path) as store:
        (row,) = store.rows("failed")
    assert row["loss"] == "lovasz" and "WorkerCrashedError" in row["error"]


class KillAfterCheckpoint:
    """The default runner; on its first attempt at ``victim`` the worker is killed (SIGKILL) once the run holds a
    finished checkpoint, as a preempted node would be."""

    def __init__(self, marker: Path, victim: str) -> None:
        self.marker, self.victim = str(marker), victim

    def __call__(self, cell) -> dict:
        from segloss.experiments.grid import train_and_evaluate

        if cell.config_hash == self.victim and not os.path.exists(self.marker):
            Path(self.marker).touch()
            threading.Thread(target=self._kill_after_checkpoint, args=(cell.run_dir,), daemon=True).start()
        return train_and_evaluate(cell)

    @staticmethod
    def _kill_after_checkpoint(run_dir: Path) -> None:
        while not list(run_dir.glob("checkpoint-*/segloss.json")):  # written last, by segloss's on_save callback
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)


def test_real_cells_on_ray_match_the_local_executor_and_a_killed_one_resumes_from_its_checkpoint(
    tmp_path, ray_address, tiny_model_dir
):
    pytest.importorskip("segloss.evaluation")
    settings = {
        "models": [str(tiny_model_dir)],
        "datasets": [{"name": "arith", "options": {"n_train": 16}}],
        "train": {"max_steps": 3, "save_steps": 1, "per_device_train_batch_size": 4, "disable_tqdm": True},
        "eval": {"limit": 2, "max_new_tokens": 2, "batch_size": 2},
    }
    local = _config(tmp_path, "local", **settings)
    assert run_grid(local, log=None).counts["done"] == 4
    config = _config(tmp_path, "ray", **settings)
    victim = next(c for c in config.cells() if (c.loss, c.seed) == ("lovasz", 1))
    runner = KillAfterCheckpoint(tmp_path / "killed", victim.config_hash)
    summary = run_grid(config, runner=runner, executor=RayExecutor(max_retries=1), log=None)
    assert (tmp_path / "killed").exists() and summary.counts["done"] == 4, summary

    resumed = json.loads((victim.run_dir / "train_summary.json").read_text())["resumed_from"]
    assert resumed is not None and Path(resumed).parent == victim.run_dir.resolve()  # the retry resumed
    timing = ("train_seconds", "eval_seconds")
    with ResultStore(local.store_path) as a, ResultStore(config.store_path) as b:
        expected = {r["config_hash"]: r["metrics"] for r in a.rows()}
        for row in b.rows():
            got, want = row["metrics"], expected[row["config_hash"]]
            assert {k: v for k, v in got.items() if k not in timing} == {
                k: v for k, v in want.items() if k not in timing
            }
    for cell, twin in zip(config.cells(), local.cells(), strict=True):  # the trained adapters agree as well
        ours, theirs = (
            load_file(cell.run_dir / "adapter_model.safetensors"),
            load_file(twin.run_dir / "adapter_model.safetensors"),
        )
        assert ours.keys() == theirs.keys()
        assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in ours), cell.loss


def test_cpu_only_cells_do_not_see_the_clusters_gpus():
    cpu_cells, gpu_cells = RayExecutor(cpus_per_cell=2), RayExecutor(gpus_per_cell=1)
    assert cpu_cells.task_options(0) == {"num_cpus": 2, "num_gpus": 0, "max_retries": 3, "retry_exceptions": False}
    assert cpu_cells.task_options(8)["runtime_env"] == {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
    assert "runtime_env" not in gpu_cells.task_options(8)  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU


def test_bad_executor_options_are_refused_before_anything_runs(tmp_path, ray_address):
    with pytest.raises(ValueError, match="apply to --executor ray"):
        make_executor("local", gpus_per_cell=1)
    with pytest.raises(ValueError, match="--cpus-per-cell must be positive"):
        make_executor("ray", cpus_per_cell=0)
    config = _config(tmp_path)
    with pytest.raises(ValueError, match=r"--gpus-per-cell 1: the Ray cluster has 0 GPUs"):
        run_grid(config, runner=FakeCell(tmp_path / "x", tmp_path / "y"), executor=RayExecutor(gpus_per_cell=1))
    assert not config.store_path.exists()
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ValueError, match=r"output_dir: cannot write to .* every Ray node"):
        run_grid(
            _config(tmp_path, output_dir=str(blocked / "grid")),
            runner=FakeCell(blocked, blocked),
            executor=RayExecutor(),
        )


# A driver in its own process, on the module's Ray instance: `segloss grid --executor ray` with a slow fake cell.
DRIVER = textwrap.dedent("""
    import faulthandler, json, os, sys, time
    import segloss.experiments.grid as grid

    faulthandler.register(__import__("signal").SIGUSR1)  # a hung driver's stacks, for the test's error message
    from segloss.cli import main

    log, seconds = sys.argv[1], float(sys.argv[2])

    def slow_cell(cell):
        with open(log, "a") as handle:
            handle.write(json.dumps({"event": "start", "hash": cell.config_hash, "pid": os.getpid()}) + "\\n")
        time.sleep(seconds)
        with open(log, "a") as handle:
            handle.write(json.dumps({"event": "end", "hash": cell.config_hash, "pid": os.getpid()}) + "\\n")
        return {"exact_match": cell.seed / 10}

    grid.train_and_evaluate = slow_cell  # the command's default runner, without a model
    grid.check_default_runner = lambda cells: None
    sys.exit(main(["grid", "--executor", "ray", *sys.argv[3:]]))
""")


def _driver(tmp_path: Path, config: GridConfig, address: str, seconds: float) -> subprocess.Popen:
    (tmp_path / "driver.py").write_text(DRIVER)
    args = ["--models", "[m1]", "--datasets", "[d1]", "--losses", "[ce, lovasz]", "--seeds", "[0, 1]"]
    args += ["--output-dir", config.output_dir, "--ray-address", address]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "calls.jsonl"), str(seconds), *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(predicate, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def _done(config: GridConfig) -> set[str]:
    try:
        with ResultStore.open_readonly(config.store_path) as store:
            return {r["config_hash"] for r in store.rows("done")}
    except (FileNotFoundError, ValueError):  # not created yet, or the driver is still writing its schema
        return set()


def test_a_driver_restarted_after_a_kill_finishes_the_grid_without_redoing_done_cells(tmp_path, ray_address):
    config = _config(tmp_path)
    first = _driver(tmp_path, config, ray_address, seconds=1.5)
    try:
        _wait_for(lambda: len(_done(config)) >= 1 or first.poll() is not None)
    finally:
        first.kill()  # kill -9: no cleanup, its cells stay `running` under its lease
    first.wait()
    done_before = _done(config)
    assert 1 <= len(done_before) < 4, first.stderr.read() if first.stderr else ""
    events = _entries(tmp_path / "calls.jsonl")
    orphans = {e["pid"] for e in events if e["event"] == "start"} - {e["pid"] for e in events if e["event"] == "end"}
    _wait_for(lambda: not any(_alive(pid) for pid in orphans), timeout=30)  # Ray ended the dead driver's tasks

    second = _driver(tmp_path, config, ray_address, seconds=0.2)
    try:
        out, err = second.communicate(timeout=120)
    finally:
        second.kill()
    assert second.returncode == 0, err
    assert "reclaimed from" in out and "its process is gone" in out  # it says what it took over
    assert _done(config) == {c.config_hash for c in config.cells()}
    starts = [e["hash"] for e in _entries(tmp_path / "calls.jsonl") if e["event"] == "start"]
    assert all(starts.count(h) == 1 for h in done_before)  # done cells were not run again
    assert f"{4 - len(done_before)} done" in out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_on_the_driver_cancels_the_tasks_and_records_them_interrupted(tmp_path, ray_address, signum):
    config = _config(tmp_path)
    driver = _driver(tmp_path, config, ray_address, seconds=300)
    try:
        _wait_for(lambda: sum(e["event"] == "start" for e in _entries(tmp_path / "calls.jsonl")) >= 2)
        driver.send_signal(signum)
        try:
            _, err = driver.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            driver.send_signal(signal.SIGUSR1)  # faulthandler: where it hangs
            time.sleep(2)
            driver.kill()
            pytest.fail(f"the driver did not stop: {driver.communicate()[1][-6000:]}")
    finally:
        driver.kill()  # never leave a driver holding the module's Ray CPUs for the next test
    assert driver.returncode == 128 + signum and "interrupted" in err and "Traceback" not in err
    with ResultStore.open_readonly(config.store_path) as store:
        rows = store.rows()
    assert {r["status"] for r in rows} == {"failed"}  # the two running cells and the two queued ones
    assert all(r["error"].startswith("interrupted (Ctrl-C or SIGTERM on the grid driver") for r in rows)
    calls = _entries(tmp_path / "calls.jsonl")
    pids = {e["pid"] for e in calls}
    _wait_for(lambda: not any(_alive(pid) for pid in pids), timeout=30)  # force-cancelled: the workers are gone
    assert not [e for e in calls if e["event"] == "end"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_signal_while_waiting_on_ray_only_sets_the_flag_until_reraised():
    from segloss.experiments.executors import SignalFlag

    before = signal.getsignal(signal.SIGINT)
    with SignalFlag() as flag:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # nothing raised: a KeyboardInterrupt inside Ray's wait could be lost
        assert flag.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before
    with pytest.raises(KeyboardInterrupt):
        flag.reraise()
