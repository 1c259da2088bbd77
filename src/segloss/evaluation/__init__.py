"""Evaluation: `EvalConfig`, `evaluate` (generate, score, write predictions.jsonl + metrics.json), generation."""

from segloss.evaluation.config import TEMPLATES, EvalConfig
from segloss.evaluation.evaluate import evaluate
from segloss.evaluation.generation import make_generate_fn
from segloss.evaluation.prompts import build_prompt, choose_shots

__all__ = ["TEMPLATES", "EvalConfig", "build_prompt", "choose_shots", "evaluate", "make_generate_fn"]
