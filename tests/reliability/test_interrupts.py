"""Ctrl-C and SIGTERM: one line on stderr, exit 130/143, predictions and metrics written as a pair, no temporary
file left behind (SIGKILL's leftovers are removed by the next write)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from segloss.fileio import atomic_write, remove_stale_temporaries, write_pair

HERE = Path(__file__).resolve().parent
MODES = ("sigint-generating", "sigterm-predictions", "sigterm-metrics")


def _old_pair(out: Path) -> None:
    out.mkdir(parents=True)
    (out / "predictions.jsonl").write_text('{"id": "old"}\n')
    (out / "metrics.json").write_text('{"old": true}\n')


@pytest.fixture(scope="module")
def interrupted_evals(tiny_model_dir, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """The three interrupted evaluations, started together (each pays the interpreter start-up; overlap it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    running = {}
    for mode in MODES:
        out = tmp_path_factory.mktemp(mode) / "eval"
        _old_pair(out)  # an earlier evaluation's files
        cmd = [sys.executable, str(HERE / "interrupt_worker.py"), mode, str(tiny_model_dir), str(out)]
        running[mode] = (
            subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
            out,
        )
    results = {}
    for mode, (proc, out) in running.items():
        stdout, stderr = proc.communicate(timeout=300)
        results[mode] = (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), out)
    return results


@pytest.mark.parametrize(
    ("mode", "code", "message"),
    [
        ("sigint-generating", 130, "segloss eval: interrupted (Ctrl-C)"),
        ("sigterm-predictions", 143, "segloss eval: interrupted (SIGTERM)"),
        ("sigterm-metrics", 143, "segloss eval: interrupted (SIGTERM)"),
    ],
)
def test_eval_interrupted_exits_with_one_line_and_leaves_a_consistent_folder(
    mode, code, message, interrupted_evals
) -> None:
    proc, out = interrupted_evals[mode]
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == message
    assert not list(out.glob("*.tmp"))
    if mode == "sigint-generating":  # nothing was being written: the earlier pair is intact
        assert (out / "metrics.json").read_text() == '{"old": true}\n'
    else:  # the old metrics.json was removed before predictions changed: never a mismatched pair
        assert not (out / "metrics.json").exists()
    if mode == "sigterm-metrics":
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and rows[0]["id"] != "old"


def test_ctrl_c_in_train_names_the_resume_flag(monkeypatch, capsys) -> None:
    import segloss.training

    def interrupted(config, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(segloss.training, "train", interrupted)
    from segloss.cli import main

    assert main(["train", "--model", "x", "--output-dir", "unused"]) == 130
    err = capsys.readouterr().err
    assert err == "segloss train: interrupted (Ctrl-C); continue from the last complete checkpoint with --resume\n"


def test_sigkill_leftover_temporary_is_removed_by_the_next_write(tmp_path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    target = tmp_path / "predictions.jsonl"
    host = socket.gethostname()
    leftover = tmp_path / f"predictions.jsonl.{host}.{dead_pid}.tmp"
    live = tmp_path / f"predictions.jsonl.{host}.{os.getppid()}.tmp"  # a live writer's file is not touched
    other_host = tmp_path / f"predictions.jsonl.elsewhere.{dead_pid}.tmp"  # nor one whose pid this host cannot check
    for path in (leftover, live, other_host):
        path.write_text("half")
    atomic_write(target, "new\n")
    assert target.read_text() == "new\n" and not leftover.exists() and live.exists() and other_host.exists()
    assert remove_stale_temporaries(target) == []


def test_pair_write_interrupted_before_the_second_file_leaves_no_stale_partner(tmp_path, monkeypatch) -> None:
    import segloss.fileio as fileio

    _old_pair(tmp_path / "out")
    first, second = tmp_path / "out" / "predictions.jsonl", tmp_path / "out" / "metrics.json"
    calls = []
    real = fileio.atomic_write

    def failing_second(path, data):
        calls.append(Path(path).name)
        if Path(path) == second:
            raise KeyboardInterrupt
        return real(path, data)

    monkeypatch.setattr(fileio, "atomic_write", failing_second)
    with pytest.raises(KeyboardInterrupt):
        write_pair(first, "new\n", second, "{}\n")
    assert calls == ["predictions.jsonl", "metrics.json"]
    assert first.read_text() == "new\n" and not second.exists()
