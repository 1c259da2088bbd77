"""Resume after a kill while a checkpoint was being written: the newest complete checkpoint is used, the broken
ones are named with the reason, and the final adapter equals the uninterrupted run's."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from reliability.conftest import RUN
from safetensors.torch import load_file
from training.helpers_train import tiny_config

from segloss.training import train
from segloss.training.checkpoints import choose_checkpoint, inspect_checkpoint


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
    with pytest.raises(ValueError, match=r"--resume-allow-missing-state") as err:
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
