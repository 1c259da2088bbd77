"""The plain-Trainer recipe of docs/training.md runs as written and optimises the combined loss."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from segloss.training import load_model_and_tokenizer

DOC = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def _recipe() -> str:
    text = DOC.read_text()
    match = re.search(r"<!-- tested by tests/training/test_recipe.py[^>]*-->\n```python\n(.*?)```", text, re.S)
    assert match, "the tested recipe block is missing from docs/training.md"
    return match[1]


def test_docs_plain_trainer_recipe_trains_with_the_combined_loss(tiny_model_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    namespace: dict = {"model": model, "tokenizer": tokenizer}
    exec(compile(_recipe(), str(DOC), "exec"), namespace)
    trainer = namespace["trainer"]
    assert trainer.state.global_step == 2 and (tmp_path / "runs" / "my-trainer").is_dir()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert entry["task"] > 0 and entry["total"] == pytest.approx(entry["ce"] + entry["task"], rel=1e-5)
        assert entry["loss"] == pytest.approx(entry["total"], rel=1e-4)  # not GA× too large
