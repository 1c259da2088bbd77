"""GridConfig validation, cell resolution and hashing, shards, reruns, crashes, and the `segloss grid` command."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from segloss.cli import main
from segloss.config import config_from_values, load_yaml
from segloss.experiments.grid import (
    GridConfig,
    config_hash,
    loss_label,
    parse_shard,
    run_grid,
    select_shard,
)
from segloss.experiments.store import ResultStore

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, **overrides) -> GridConfig:
    values = {
        "models": ["m1", "m2"],
        "datasets": ["d1"],
        "losses": ["ce", "lovasz", "focal"],
        "seeds": [0, 1],
        "output_dir": str(tmp_path / "grid"),
        **overrides,
    }
    return GridConfig(**values)


class Recorder:
    """A fake runner: records the cells it ran; raises for the losses in ``crash``."""

    def __init__(self, crash: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, int]] = []
        self.crash = crash

    def __call__(self, cell) -> dict:
        self.calls.append((cell.loss, cell.seed))
        if cell.loss in self.crash:
            raise RuntimeError(f"simulated crash in {cell.loss}")
        return {"exact_match": {"mean": 0.25 + cell.seed / 10, "ci_low": 0.0, "ci_high": 1.0, "n": 8}, "iou": 0.5}


def test_cells_cover_the_product_in_order_with_resolved_settings(tmp_path):
    config = _config(
        tmp_path,
        train={"max_steps": 5, "ce_weight": 0.6},
        eval={"limit": 4},
        datasets=["d1", {"name": "gsm8k", "data_path": "/data/gsm8k", "options": {"k": 1}, "train": {"max_steps": 7}}],
    )
    cells = config.cells()
    assert len(cells) == 2 * 2 * 3 * 2
    assert [c.index for c in cells] == list(range(24))
    first, gsm = cells[0], cells[6]
    assert (first.model, first.dataset, first.loss, first.seed) == ("m1", "d1", "ce", 0)
    assert (gsm.model, gsm.dataset, gsm.loss, gsm.seed) == ("m1", "gsm8k", "ce", 0)
    assert gsm.train == {
        "max_steps": 7,
        "ce_weight": 0.6,
        "dataset_options": {"k": 1},
        "model": "m1",
        "dataset": "gsm8k",
        "loss": "ce",
        "seed": 0,
        "data_path": "/data/gsm8k",
    }
    assert gsm.eval == {"split": "test", "limit": 4, "seed": 0}
    assert gsm.run_dir.parent == tmp_path / "grid" / "runs"
    assert gsm.run_dir.name == f"m1__gsm8k__ce__seed0-{gsm.config_hash[:8]}"
    assert gsm.eval_dir == gsm.run_dir / "eval" / "test"
    assert len({c.config_hash for c in cells}) == 24
    assert len({c.run_dir for c in cells}) == 24


def test_config_hash_is_sha256_of_sorted_settings_and_ignores_output_paths(tmp_path):
    train = {"model": "m", "seed": 0}
    blob = '{"eval":{"split":"test"},"train":{"model":"m","seed":0}}'
    assert config_hash(train, {"split": "test"}) == hashlib.sha256(blob.encode()).hexdigest()[:16]
    a = _config(tmp_path / "a").cells()
    b = _config(tmp_path / "b").cells()  # another output_dir: same cells, same hashes
    assert [c.config_hash for c in a] == [c.config_hash for c in b]
    c = _config(tmp_path, train={"max_steps": 9}).cells()
    assert a[0].config_hash != c[0].config_hash


@pytest.mark.parametrize(
    ("spec", "label"),
    [
        ("lovasz", "lovasz"),
        ({"ce": 1.0}, "ce"),
        ({"ce": 0.5, "focal": 0.25, "lovasz": 0.25}, "ce=0.5,focal=0.25,lovasz=0.25"),
        ("ce=0.5, lovasz=0.5", "ce=0.5,lovasz=0.5"),
    ],
)
def test_loss_label(spec, label):
    assert loss_label(spec) == label


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"losses": ["lovasz", "focal"]}, "include `ce` alone as the baseline"),
        ({"losses": [{"ce": 0.6, "lovasz": 0.4}]}, "include `ce` alone"),
        ({"losses": ["ce", {"ce": 0.5, "focal": -0.5}]}, "must be ≥ 0"),
        ({"losses": ["ce", "Lovász"]}, "unknown loss"),
        ({"losses": ["ce", "ce"]}, "losses has duplicates"),
        ({"models": []}, "models must be a non-empty list"),
        ({"seeds": [0, 0]}, "seeds has duplicates"),
        ({"seeds": ["one"]}, "seeds must be integers"),
        ({"train": {"model": "x"}}, r"train: \['model'\] are set per cell"),
        ({"eval": {"run": "x"}}, r"eval: \['run'\] are set per cell"),
        ({"train": [1]}, "train must be a mapping"),
        ({"datasets": [{"name": "d", "path": "/x"}]}, r"unknown key\(s\) \['path'\]"),
        ({"datasets": [{"data_path": "/x"}]}, "mapping with a `name`"),
    ],
)
def test_bad_grid_configs_name_the_field(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **overrides)


def test_store_defaults_to_the_output_dir(tmp_path):
    assert _config(tmp_path).store_path == tmp_path / "grid" / "results.sqlite"
    assert _config(tmp_path, store=str(tmp_path / "s.db")).store_path == tmp_path / "s.db"


@pytest.mark.parametrize("path", sorted((ROOT / "configs" / "grid").glob("*.yaml")), ids=lambda p: p.name)
def test_every_grid_yaml_loads_and_opens_with_its_command(path):
    config = config_from_values(GridConfig, load_yaml(path), str(path))
    assert config.cells() and any(c.loss == "ce" for c in config.cells())
    assert path.read_text().startswith(f"# segloss grid --config configs/grid/{path.name}")


def test_parse_and_select_shards(tmp_path):
    assert parse_shard("2/8") == (2, 8)
    for bad in ("0/8", "9/8", "2-8", "a/b", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    cells = _config(tmp_path, seeds=[0, 1, 2], losses=["ce", "lovasz"]).cells()[:10]
    assert [c.index for c in select_shard(cells, (3, 4))] == [2, 6]
    assert [c.index for c in select_shard(cells, (1, 4))] == [0, 4, 8]
    assert select_shard(cells, None) == cells
    parts = [select_shard(cells, (i, 3)) for i in (1, 2, 3)]
    assert sorted(c.index for part in parts for c in part) == list(range(10))  # disjoint and complete


def test_shards_run_disjoint_cells_and_together_finish_the_grid(tmp_path):
    config = _config(tmp_path)  # 12 cells
    first, second = Recorder(), Recorder()
    s1 = run_grid(config, shard=(1, 2), runner=first, log=None)
    assert len(first.calls) == 6 and s1.counts == {"pending": 6, "running": 0, "done": 6, "failed": 0}
    with ResultStore(config.store_path) as store:
        assert sorted(r["cell_index"] for r in store.rows("done")) == [0, 2, 4, 6, 8, 10]
    s2 = run_grid(config, shard=(2, 2), runner=second, log=None)
    assert len(second.calls) == 6 and s2.counts["done"] == 12
    assert s2.skipped == 0


def test_crash_is_recorded_and_the_grid_goes_on_then_a_rerun_retries_only_failures(tmp_path):
    config = _config(tmp_path)
    crashing = Recorder(crash=("lovasz",))
    summary = run_grid(config, runner=crashing, log=None)
    assert len(crashing.calls) == 12  # cells after each crash still ran
    assert len(summary.failed) == 4 and len(summary.done) == 8
    with ResultStore(config.store_path) as store:
        failed = store.rows("failed")
        assert {r["loss"] for r in failed} == {"lovasz"}
        assert "RuntimeError: simulated crash in lovasz" in failed[0]["error"]
        assert "Traceback" in failed[0]["error"] and failed[0]["seconds"] >= 0
        done = store.rows("done")
        assert done[0]["metrics"] == {"exact_match": 0.25, "iou": 0.5}

    rerun = Recorder()
    summary = run_grid(config, runner=rerun, log=None)
    assert sorted(rerun.calls) == [("lovasz", 0), ("lovasz", 0), ("lovasz", 1), ("lovasz", 1)]  # two models
    assert summary.skipped == 8 and summary.counts == {"pending": 0, "running": 0, "done": 12, "failed": 0}
    with ResultStore(config.store_path) as store:
        assert {r["attempts"] for r in store.rows() if r["loss"] == "lovasz"} == {2}
        assert all(r["error"] is None for r in store.rows())

    third = Recorder()
    assert run_grid(config, runner=third, log=None).skipped == 12 and third.calls == []
    saved = config_from_values(GridConfig, load_yaml(tmp_path / "grid" / "grid.yaml"))
    assert [c.config_hash for c in saved.cells()] == [c.config_hash for c in config.cells()]


def test_a_live_workers_running_cell_is_taken_over_only_with_retry_running(tmp_path):
    config = _config(tmp_path, models=["m1"], losses=["ce"], seeds=[0])
    cell = config.cells()[0]
    with ResultStore(config.store_path, worker="dead-worker") as store:
        store.register([cell.as_row()])
        assert store.claim(cell.config_hash)
    runner = Recorder()
    assert run_grid(config, runner=runner, log=None).skipped == 1 and runner.calls == []
    assert run_grid(config, runner=runner, retry_running=True, log=None).done == [cell.config_hash]
    with ResultStore(config.store_path) as store:
        assert store.get(cell.config_hash)["status"] == "done"


def test_a_runner_returning_non_numbers_fails_that_cell_only(tmp_path):
    config = _config(tmp_path, models=["m1"], losses=["ce"])
    summary = run_grid(config, runner=lambda cell: {"answer": "forty-two"}, log=None)
    assert len(summary.failed) == 2
    with ResultStore(config.store_path) as store:
        assert "metric 'answer' must be a number" in store.rows("failed")[0]["error"]


def test_default_runner_rejects_unknown_train_settings_before_any_work(tmp_path):
    pytest.importorskip("segloss.evaluation")
    config = _config(tmp_path, train={"no_such_option": 1})
    with pytest.raises(ValueError, match="no_such_option"):
        run_grid(config, log=None)
    assert not config.store_path.exists()


def test_grid_command_reports_bad_input_with_exit_code_2(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"models": ["m"], "datasets": ["d"], "losses": ["lovasz"], "seeds": [0]}))
    assert main(["grid", "--config", str(path)]) == 2
    assert "include `ce` alone" in capsys.readouterr().err
    path.write_text(yaml.safe_dump({"models": ["m"], "datasets": ["d"], "losses": ["ce"], "seeds": [0]}))
    assert main(["grid", "--config", str(path), "--shard", "3/2"]) == 2
    assert "1 <= i <= n" in capsys.readouterr().err
    assert main(["grid", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_store_rows_keep_the_resolved_settings(tmp_path):
    config = _config(tmp_path, models=["m1"], losses=["ce"], seeds=[3], train={"max_steps": 2})
    run_grid(config, runner=Recorder(), log=None)
    with ResultStore(config.store_path) as store:
        (row,) = store.rows()
    assert row["settings"]["train"] == {"max_steps": 2, "model": "m1", "dataset": "d1", "loss": "ce", "seed": 3}
    assert row["run_dir"] == str(config.cells()[0].run_dir)
    assert json.loads(json.dumps(row["metrics"])) == {"exact_match": 0.25 + 0.3, "iou": 0.5}


@pytest.mark.slow
def test_default_runner_trains_and_evaluates_a_real_cell_and_a_retry_skips_finished_training(tmp_path, tiny_model_dir):
    pytest.importorskip("segloss.evaluation")
    config = GridConfig(
        models=[str(tiny_model_dir)],
        datasets=[{"name": "arith", "options": {"n_train": 8}}],
        losses=["ce"],
        seeds=[0],
        output_dir=str(tmp_path / "grid"),
        train={"max_steps": 1, "per_device_train_batch_size": 4, "disable_tqdm": True},
        eval={"limit": 2, "max_new_tokens": 4, "batch_size": 2},
    )
    (cell,) = config.cells()
    summary = run_grid(config, log=None)
    assert summary.done == [cell.config_hash], summary
    with ResultStore(config.store_path) as store:
        row = store.get(cell.config_hash)
        metrics = row["metrics"]
        assert 0.0 <= metrics["exact_match"] <= 1.0 and "iou" in metrics and metrics["train_seconds"] > 0
        assert (cell.eval_dir / "predictions.jsonl").is_file() and (cell.run_dir / "config.yaml").is_file()
        trained = (cell.run_dir / "train_summary.json").stat().st_mtime_ns
        store.claim(cell.config_hash, retry_running=True)
        store.fail(cell.config_hash, "simulated eval crash")
    summary = run_grid(config, log=None)  # retried: training is finished, so only the evaluation runs again
    assert summary.done == [cell.config_hash]
    assert (cell.run_dir / "train_summary.json").stat().st_mtime_ns == trained


DYING_WORKER = textwrap.dedent("""
    import json, os, signal, sys
    from segloss.config import config_from_values, load_yaml
    from segloss.experiments.grid import GridConfig, run_grid

    config = config_from_values(GridConfig, load_yaml(sys.argv[1]))
    log, die_at = sys.argv[2], int(sys.argv[3])

    def runner(cell):
        with open(log, "a") as handle:
            handle.write(json.dumps({"event": "start", "index": cell.index, "pid": os.getpid()}) + "\\n")
        if cell.index == die_at:
            os.kill(os.getpid(), signal.SIGKILL)  # kill -9 mid-cell: no chance to record anything
        with open(log, "a") as handle:
            handle.write(json.dumps({"event": "end", "index": cell.index, "pid": os.getpid()}) + "\\n")
        return {"exact_match": 0.5}

    run_grid(config, runner=runner, worker="doomed", log=None)
""")


@pytest.mark.slow
def test_a_dead_workers_cell_is_reclaimed_by_the_next_plain_worker_and_every_cell_runs_once(tmp_path, capsys):
    config = _config(tmp_path, models=["m1"], losses=["ce", "lovasz"])  # 4 cells
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(dataclasses.asdict(config)))
    (tmp_path / "worker.py").write_text(DYING_WORKER)
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run([sys.executable, str(tmp_path / "worker.py"), str(path), str(log), "2"], env=env, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with ResultStore(config.store_path) as store:
        assert store.counts() == {"pending": 1, "running": 1, "done": 2, "failed": 0}

    calls = []

    def runner(cell):
        calls.append(cell.index)
        return {"exact_match": 0.5}

    summary = run_grid(config, runner=runner)  # a plain worker: no --retry-running
    dead = config.cells()[2]
    assert calls == [2, 3] and summary.reclaimed == [dead.config_hash]
    out = capsys.readouterr().out
    assert f"cell 2: reclaimed from doomed (pid {_pid_of(log, 2)} on {socket.gethostname()})" in out
    assert "its process is gone" in out and "1 reclaimed from dead workers" in out
    events = [json.loads(line) for line in log.read_text().splitlines()]
    ends = sorted(e["index"] for e in events if e["event"] == "end") + calls
    assert sorted(ends) == [0, 1, 2, 3]  # every cell finished exactly once
    with ResultStore(config.store_path) as store:
        assert store.counts()["done"] == 4 and store.get(dead.config_hash)["attempts"] == 2


def _pid_of(log: Path, index: int) -> int:
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return next(e["pid"] for e in events if e["index"] == index)


def test_skipped_cells_are_explained(tmp_path, capsys):
    config = _config(tmp_path, models=["m1"], losses=["ce"])
    cell = config.cells()[0]
    with ResultStore(config.store_path, worker="live") as store:  # this very process: a live holder
        store.register([cell.as_row()])
        assert store.claim(cell.config_hash)
    summary = run_grid(config, runner=Recorder())
    assert summary.skipped_by_status == {"running": 1} and len(summary.done) == 1
    assert "1 skipped (1 held by live workers) (--retry-running takes them over)" in capsys.readouterr().out


def test_grid_command_refuses_ray_options_without_ray_and_ray_when_not_installed(tmp_path, capsys, monkeypatch):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"models": ["m"], "datasets": ["d"], "losses": ["ce"], "seeds": [0]}))
    out = ["--output-dir", str(tmp_path / "grid")]
    assert main(["grid", "--config", str(path), *out, "--gpus-per-cell", "1"]) == 2
    assert "apply to --executor ray" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(["grid", "--config", str(path), *out, "--executor", "ray"]) == 2
    assert "pip install 'segloss[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "grid" / "results.sqlite").exists()


def test_an_unwritable_output_dir_is_refused_before_the_store_is_touched(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    config = _config(tmp_path, output_dir=str(blocked / "grid"), store=str(tmp_path / "s.sqlite"))
    with pytest.raises(ValueError, match="output_dir: cannot write to"):
        run_grid(config, runner=Recorder(), log=None)
    assert not (tmp_path / "s.sqlite").exists()


def test_ctrl_c_in_a_local_cell_records_it_interrupted_and_stops(tmp_path):
    config = _config(tmp_path, models=["m1"], losses=["ce"])  # 2 cells

    def runner(cell):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(config, runner=runner, log=None)
    with ResultStore(config.store_path) as store:
        first, second = store.rows()
    assert (first["status"], first["error"]) == ("failed", "interrupted (KeyboardInterrupt)")
    assert first["lease_until"] is None and second["status"] == "pending"  # the grid stopped at once


def test_cells_carry_their_loss_spec_into_the_store_and_the_report(tmp_path):
    from segloss.experiments.results import store_results
    from segloss.losses import LossSpec

    datasets = ["d1", {"name": "d2", "train": {"ce_weight": 0.8}}]  # d2 sets its own λ
    config = _config(tmp_path, datasets=datasets, losses=["ce", "lovasz", {"ce": 0.5, "focal": 0.5}])
    specs = {(c.dataset, c.loss): c.loss_spec for c in config.cells()}
    assert specs[("d1", "lovasz")] == LossSpec({"ce": 0.6, "lovasz": 0.4})
    assert dict(specs[("d2", "lovasz")].weights) == pytest.approx({"ce": 0.8, "lovasz": 0.2})  # the cell's own λ
    assert specs[("d2", "ce=0.5,focal=0.5")] == LossSpec({"ce": 0.5, "focal": 0.5})  # explicit weights: kept
    run_grid(config, runner=Recorder(), log=None)
    with ResultStore(config.store_path) as store:
        rows = [r for r in store.rows("done") if (r["dataset"], r["loss"]) == ("d2", "lovasz")]
    stored = rows[0]["settings"]["loss_spec"]
    assert stored["weights"] == pytest.approx({"ce": 0.8, "lovasz": 0.2}) and stored["ce_weight"] == 0.8
    # The report takes the stored spec, not the loss label: a label it could not read changes nothing.
    [result] = store_results([{**rows[0], "loss": "not a loss"}])
    assert result.loss_spec == specs[("d2", "lovasz")] and result.arm == "lovasz"
