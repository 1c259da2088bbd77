"""Fixtures of the fault-injection suite: one uninterrupted reference run and one run stopped part-way, reused by
copying (a tiny model trains in a second or two, but the suite breaks the same run many different ways)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from training.helpers_train import StopAt

from segloss.training import train

# 6 steps with a checkpoint every 2: a run stopped after step 4 holds checkpoint-2 and checkpoint-4.
RUN = {"max_steps": 6, "save_steps": 2, "save_total_limit": 3, "per_device_train_batch_size": 2, "lora_dropout": 0.0}


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread: None) -> None:
    """Every reliability test runs on one torch thread (see tests/conftest.py)."""


@pytest.fixture(scope="session")
def reference_run(tiny_model_dir, tmp_path_factory) -> Path:
    """An uninterrupted 6-step run."""
    from training.helpers_train import tiny_config

    out = tmp_path_factory.mktemp("reference") / "run"
    train(tiny_config(tiny_model_dir, out, **RUN))
    return out


@pytest.fixture(scope="session")
def stopped_run(tiny_model_dir, tmp_path_factory) -> Path:
    """The same run stopped after step 4 (checkpoint-2 and checkpoint-4 on disk); copy it before breaking it."""
    from training.helpers_train import tiny_config

    out = tmp_path_factory.mktemp("stopped") / "run"
    train(tiny_config(tiny_model_dir, out, **RUN), callbacks=[StopAt(4)])
    (out / "train_summary.json").unlink()  # as after a crash: the stopped run never got to its summary
    return out


@pytest.fixture
def interrupted(stopped_run, tmp_path) -> Path:
    """A private copy of the stopped run."""
    copy = tmp_path / "run"
    shutil.copytree(stopped_run, copy)
    return copy
