"""Resume with other settings, after a crash before the first checkpoint, on a finished run; and the logs and
train_summary.json of a resumed run against the uninterrupted one."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml
from reliability.conftest import RUN
from training.helpers_train import tiny_config
from transformers import TrainerCallback

from segloss.cli import main
from segloss.training import train
from segloss.training.resume import config_changes, read_ledger, stored_values


class CrashAt(TrainerCallback):
    """A crash (an exception out of the training loop) after ``step`` optimizer steps."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise RuntimeError("simulated crash")


def _tree_hash(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _log_rows(run: Path, step: int) -> dict[int, dict]:
    state = json.loads((run / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return {row["step"]: row for row in state["log_history"] if "ce" in row}


def test_resume_with_a_changed_loss_exits_non_zero_naming_loss(interrupted, capsys) -> None:
    before = _tree_hash(interrupted)
    code = main(["train", "--config", str(interrupted / "config.yaml"), "--resume", "--loss", "focal"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("segloss train: error: resume: training settings differ")
    assert "loss ('ce' -> 'focal')" in err and "--resume_allow_changes" in err
    assert _tree_hash(interrupted) == before  # refused before anything was touched


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("loss", "lovasz"),
        ("seed", 7),
        ("learning_rate", 0.5),
        ("train_limit", 4),
        ("max_steps", 9),
        ("data_path", "x"),
    ],
)
def test_each_training_setting_change_is_named(interrupted, tiny_model_dir, field, value) -> None:
    with pytest.raises(ValueError, match=rf"differ from .*config\.yaml: {field} \("):
        train(tiny_config(tiny_model_dir, interrupted, resume=True, **{**RUN, field: value}))


def test_settings_that_do_not_change_training_may_change(tiny_model_dir, tmp_path) -> None:
    base = tiny_config(tiny_model_dir, tmp_path / "a", **RUN)
    stored = yaml.safe_load(yaml.safe_dump(stored_values(base)))  # as config.yaml holds it
    other = tiny_config(
        tiny_model_dir, tmp_path / "b", **{**RUN, "logging_steps": 5, "save_steps": 3, "report_to": "tensorboard"}
    )
    assert config_changes(stored, other) == {}
    # The same objective written two ways is no change.
    stored_lovasz = {**stored, "loss": "lovasz", "ce_weight": 0.6}
    assert config_changes(stored_lovasz, tiny_config(tiny_model_dir, tmp_path, **RUN, loss="ce=0.6,lovasz=0.4")) == {}
    # A Trainer field back at its default is a change (config.yaml leaves defaults out: the key is missing).
    warm = yaml.safe_load(yaml.safe_dump(stored_values(tiny_config(tiny_model_dir, tmp_path, **RUN, warmup_steps=3))))
    assert config_changes(warm, base) == {"warmup_steps": (3, 0)}


def test_allowed_change_is_recorded_and_the_old_config_kept(interrupted, tiny_model_dir) -> None:
    result = train(tiny_config(tiny_model_dir, interrupted, resume=True, resume_allow_changes=True, **RUN, seed=7))
    (record,) = result.summary["resumes"]
    assert record["config_changes"] == {"seed": {"before": 42, "after": 7}}
    assert "seed:" not in (interrupted / "config.before-step-4.yaml").read_text()  # the default, 42, left out
    assert "seed: 7" in (interrupted / "config.yaml").read_text()


def test_config_yaml_exists_after_a_crash_before_the_first_checkpoint(
    tiny_model_dir, tmp_path, reference_run, capsys
) -> None:
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tiny_config(tiny_model_dir, out, **RUN), callbacks=[CrashAt(1)])
    assert (out / "config.yaml").read_text().startswith(f"# segloss train --config {out / 'config.yaml'}")
    assert not list(out.glob("checkpoint-*"))
    assert main(["train", "--config", str(out / "config.yaml"), "--resume"]) == 0  # the documented command
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 6


def test_resumed_run_logs_and_summarizes_like_the_uninterrupted_run(
    interrupted, reference_run, tiny_model_dir
) -> None:
    stored = read_ledger(interrupted / "checkpoint-4")
    result = train(tiny_config(tiny_model_dir, interrupted, resume=True, **RUN))
    expected, got = _log_rows(reference_run, 6), _log_rows(interrupted, 6)
    assert sorted(got) == list(range(1, 7))
    for step, row in expected.items():  # step 5 is the first log after the resume
        for key in ("ce", "task", "total", "loss"):
            assert got[step][key] == pytest.approx(row[key], rel=1e-4), (step, key)
    reference = json.loads((reference_run / "train_summary.json").read_text())
    summary = result.summary
    assert summary["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-5)  # all 6 steps, not 2
    assert reference["train_loss"] == pytest.approx(sum(r["loss"] for r in expected.values()) / 6, rel=1e-5)
    assert summary["tokens"] == reference["tokens"] and summary["steps"] == 6
    assert summary["final_losses"] == pytest.approx(reference["final_losses"], rel=1e-4)
    assert summary["wall_time_s"] > stored["wall_time_s"] > 0  # the first session's seconds are included


def test_resuming_a_finished_run_says_so_and_changes_nothing(reference_run, tiny_model_dir, tmp_path, caplog) -> None:
    run = tmp_path / "finished"
    shutil.copytree(reference_run, run)
    before = _tree_hash(run)
    with caplog.at_level(logging.WARNING, logger="segloss"):
        result = train(tiny_config(tiny_model_dir, run, resume=True, **RUN))
    assert "already finished (6 steps" in caplog.text and "nothing changed" in caplog.text
    assert result.summary["already_finished"] and result.global_step == 6
    assert _tree_hash(run) == before


def test_kill_during_the_final_writes_resumes_from_the_last_checkpoint(
    reference_run, tiny_model_dir, tmp_path
) -> None:
    run = tmp_path / "final-writes"
    shutil.copytree(reference_run, run)
    (run / "train_summary.json").unlink()  # killed after checkpoint-6, before the adapter and the summary
    (run / "adapter_model.safetensors").unlink()
    result = train(tiny_config(tiny_model_dir, run, resume=True, **RUN))
    reference = json.loads((reference_run / "train_summary.json").read_text())
    assert result.summary["resumes"][0]["checkpoint"] == "checkpoint-6" and result.global_step == 6
    assert result.summary["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6)
    assert (run / "adapter_model.safetensors").read_bytes() == (
        reference_run / "adapter_model.safetensors"
    ).read_bytes()
