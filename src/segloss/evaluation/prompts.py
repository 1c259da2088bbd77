"""Prompt building for evaluation: templates and seeded k-shot demonstrations from the training split."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from segloss.data import Example
from segloss.evaluation.config import TEMPLATES

_ANSWER_CUE = re.compile(r"\s*Answer:\s*$")


def render(example_prompt: str, template: str) -> str:
    """``example_prompt`` in ``template`` (see :data:`TEMPLATES`); the instruction template drops the trailing
    ``Answer:`` cue of the dataset prompt, which its ``### Response:`` replaces."""
    if template not in TEMPLATES:
        raise ValueError(f"template: unknown template {template!r}; valid templates: {', '.join(TEMPLATES)}")
    question = _ANSWER_CUE.sub("", example_prompt)
    return TEMPLATES[template].format(prompt=example_prompt, question=question)


def choose_shots(train: Sequence[Example], k: int, seed: int) -> list[Example]:
    """``k`` distinct training examples drawn with ``random.Random(seed)`` (the same shots for every test example)."""
    if k > len(train):
        raise ValueError(
            f"few_shot: {k} demonstrations asked but the training split has only {len(train)} "
            f"examples; use --few-shot {len(train)} or fewer"
        )
    return random.Random(seed).sample(list(train), k)


def build_prompt(example: Example, shots: Sequence[Example], template: str) -> str:
    """Demonstrations (prompt + answer, same template) separated by blank lines, then the example's prompt."""
    demos = [render(shot.prompt, template) + shot.answer for shot in shots]
    return "\n\n".join([*demos, render(example.prompt, template)])
