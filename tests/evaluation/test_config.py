"""EvalConfig validation: each bad value names its field."""

from __future__ import annotations

import pytest

from segloss.evaluation import EvalConfig


def test_valid_modes():
    assert EvalConfig(run="runs/x").split == "test"
    cfg = EvalConfig(model="m", dataset="gsm8k", few_shot=4, template="instruction")
    assert cfg.max_new_tokens is None and cfg.batch_size == 8


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "run"),
        ({"run": "r", "model": "m"}, "exactly one"),
        ({"model": "m"}, "dataset"),
        ({"run": "r", "template": "chatml"}, "template"),
        ({"run": "r", "few_shot": -1}, "few_shot"),
        ({"run": "r", "limit": 0}, "limit"),
        ({"run": "r", "batch_size": 0}, "batch_size"),
        ({"run": "r", "max_new_tokens": 0}, "max_new_tokens"),
        ({"run": "r", "torch_dtype": "int8"}, "torch_dtype"),
        ({"run": "r", "gguf_file": "x.gguf"}, "gguf_file"),
    ],
)
def test_bad_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        EvalConfig(**kwargs)


def test_unknown_template_lists_the_valid_ones():
    with pytest.raises(ValueError, match="plain, instruction, chat"):
        EvalConfig(run="r", template="alpaca")
