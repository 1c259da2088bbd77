"""Prompt building for evaluation: templates (shared with training, see :mod:`segloss.data.templates`) and seeded
k-shot demonstrations from the training split."""

from __future__ import annotations

import random
from collections.abc import Sequence

from segloss.data import Example
from segloss.data.templates import build_prompt, render

__all__ = ["build_prompt", "choose_shots", "render"]


def choose_shots(train: Sequence[Example], k: int, seed: int) -> list[Example]:
    """``k`` distinct training examples drawn with ``random.Random(seed)`` (the same shots for every test example)."""
    if k > len(train):
        raise ValueError(
            f"few_shot: {k} demonstrations asked but the training split has only {len(train)} "
            f"examples; use --few-shot {len(train)} or fewer"
        )
    return random.Random(seed).sample(list(train), k)
