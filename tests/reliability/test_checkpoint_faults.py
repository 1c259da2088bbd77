"""Resume after a kill while a checkpoint was being written: the newest complete checkpoint is used, the broken
ones are named with the reason, and the final adapter equals the uninterrupted run's."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from reliability.conftest import RUN
from safetensors.torch import load_file
from training.helpers_train import StopAt, tiny_config

from segloss.training import train
from segloss.training.checkpoints import choose_checkpoint, inspect_checkpoint

HERE = Path(__file__).resolve().parent


def _break_empty(folder: Path) -> None:
    for path in folder.iterdir():
        path.unlink()


def _break_no_state(folder: Path) -> None:
    (folder / "trainer_state.json").unlink()


def _break_truncated_state(folder: Path) -> None:
    state = folder / "trainer_state.json"
    state.write_text(state.read_text()[:40])


def _break_truncated_weights(folder: Path) -> None:
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])


def _break_no_optimizer(folder: Path) -> None:
    (folder / "optimizer.pt").unlink()


def _break_truncated_optimizer(folder: Path) -> None:
    optimizer = folder / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:-200])


FAULTS = {
    "empty folder": (_break_empty, "empty folder"),
    "no trainer_state.json": (_break_no_state, "no trainer_state.json"),
    "truncated trainer_state.json": (_break_truncated_state, "trainer_state.json is unreadable"),
    "truncated adapter weights": (_break_truncated_weights, "adapter_model.safetensors is truncated"),
    "no optimizer.pt": (_break_no_optimizer, "no optimizer.pt"),
    "truncated optimizer.pt": (_break_truncated_optimizer, "optimizer.pt is truncated"),
}


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter_model.safetensors")


def _assert_same_adapter(run: Path, reference: Path) -> None:
    expected, got = _adapter(reference), _adapter(run)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        assert torch.allclose(value, got[key], atol=1e-6), key


@pytest.mark.parametrize("fault", list(FAULTS))
def test_broken_newest_checkpoint_falls_back_to_the_previous_one(
    fault, interrupted, reference_run, tiny_model_dir, caplog
) -> None:
    breaker, reason = FAULTS[fault]
    breaker(interrupted / "checkpoint-4")
    with caplog.at_level(logging.WARNING, logger="segloss"):
        result = train(tiny_config(tiny_model_dir, interrupted, resume=True, **RUN))
    assert result.global_step == 6
    assert result.summary["resumed_from"].endswith("checkpoint-2")
    (record,) = result.summary["resumes"]
    assert record["checkpoint"] == "checkpoint-2" and record["at_step"] == 2
    assert reason in record["skipped_checkpoints"]["checkpoint-4"]
    assert f"skipped checkpoint-4: {reason}" in caplog.text  # said to the user, not only recorded
    _assert_same_adapter(interrupted, reference_run)


def test_intact_newest_checkpoint_is_used_and_nothing_is_skipped(interrupted) -> None:
    choice = choose_checkpoint(interrupted)
    assert choice.checkpoint == interrupted / "checkpoint-4" and choice.skipped == {}
    assert inspect_checkpoint(interrupted / "checkpoint-4").complete


def test_every_checkpoint_broken_starts_over_and_says_so(interrupted, reference_run, tiny_model_dir, caplog) -> None:
    for name in ("checkpoint-2", "checkpoint-4"):
        _break_no_state(interrupted / name)
    with caplog.at_level(logging.WARNING, logger="segloss"):
        result = train(tiny_config(tiny_model_dir, interrupted, resume=True, **RUN))
    assert "no usable checkpoint: training starts at step 0" in caplog.text
    assert result.summary["resumed_from"] is None and result.global_step == 6
    _assert_same_adapter(interrupted, reference_run)  # the seeded run from step 0 is the same run


def test_checkpoint_without_optimizer_state_needs_the_explicit_flag(
    interrupted, reference_run, tiny_model_dir
) -> None:
    for name in ("checkpoint-2", "checkpoint-4"):
        (interrupted / name / "optimizer.pt").unlink()
        (interrupted / name / "scheduler.pt").unlink()
    before = sorted(p.name for p in interrupted.rglob("*"))
    with pytest.raises(ValueError, match=r"--resume_allow_missing_state") as err:
        train(tiny_config(tiny_model_dir, interrupted, resume=True, **RUN))
    assert "optimizer.pt" in str(err.value) or "optimizer/scheduler" in str(err.value)
    assert sorted(p.name for p in interrupted.rglob("*")) == before  # refused before anything was written

    result = train(tiny_config(tiny_model_dir, interrupted, resume=True, resume_allow_missing_state=True, **RUN))
    (record,) = result.summary["resumes"]
    assert record["checkpoint"] == "checkpoint-4"
    assert record["missing_state"] == ["optimizer.pt", "scheduler.pt"]
    # The schedule and Adam moments restarted: the weights differ from the uninterrupted run (as the flag warns).
    reference, final = _adapter(reference_run), _adapter(interrupted)
    assert any(not torch.allclose(v, final[k], atol=1e-6) for k, v in reference.items())


def test_resume_flag_is_not_stored_in_config_yaml(interrupted, tiny_model_dir) -> None:
    train(tiny_config(tiny_model_dir, interrupted, resume=True, resume_allow_missing_state=True, **RUN))
    text = (interrupted / "config.yaml").read_text()
    assert "resume: false" in text and "resume_allow_missing_state: false" in text and "overwrite: false" in text
    summary = json.loads((interrupted / "train_summary.json").read_text())
    assert summary["resumes"][0]["checkpoint"] == "checkpoint-4"


def test_real_kill_during_a_checkpoint_write_resumes_from_the_previous_one(
    tiny_model_dir, tmp_path, reference_run
) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(HERE / "kill_worker.py"), str(tiny_model_dir), str(out), "4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (out / "checkpoint-4" / "optimizer.pt").is_file() and not (
        out / "checkpoint-4" / "trainer_state.json"
    ).exists()
    result = train(tiny_config(tiny_model_dir, out, resume=True, **RUN))
    assert result.summary["resumes"][0]["checkpoint"] == "checkpoint-2"
    _assert_same_adapter(out, reference_run)


def test_grid_retry_of_a_cell_killed_mid_checkpoint_resumes_from_the_previous_one(tiny_model_dir, tmp_path) -> None:
    from training.helpers_train import TINY_RUN

    from segloss.experiments.grid import GridConfig, _train_cell, run_grid
    from segloss.training.config import train_config_from_values

    shared = {k: v for k, v in TINY_RUN.items() if k not in ("dataset", "dataset_options")}
    grid = GridConfig(
        models=[str(tiny_model_dir)],
        datasets=[{"name": "arith", "options": TINY_RUN["dataset_options"]}],
        losses=["ce"],
        seeds=[42],
        train={**shared, **RUN},
        output_dir=str(tmp_path / "grid"),
    )

    def crashing(cell):  # the first attempt dies after step 4 with its newest checkpoint half-written
        train(train_config_from_values({**cell.train, "output_dir": str(cell.run_dir)}), callbacks=[StopAt(4)])
        (cell.run_dir / "train_summary.json").unlink()
        _break_no_state(cell.run_dir / "checkpoint-4")
        raise RuntimeError("simulated kill")

    assert run_grid(grid, runner=crashing, log=None).failed
    summary = run_grid(grid, runner=lambda cell: {"train_seconds": _train_cell(cell)}, log=None)
    assert summary.done and summary.counts.get("done") == 1
    (cell,) = grid.cells()
    record = json.loads((cell.run_dir / "train_summary.json").read_text())["resumes"][0]
    assert record["checkpoint"] == "checkpoint-2" and "checkpoint-4" in record["skipped_checkpoints"]
