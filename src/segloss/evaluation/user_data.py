"""Scoring the user's own data (``--dataset my.jsonl``): exact match of the completion, or of an extracted answer.

* ``exact_match`` — by default the generated text equals the reference completion (both stripped of surrounding
  whitespace). With ``--answer_pattern REGEX`` the answer is extracted from both (the first match; its first group
  when the pattern has one, else the whole match) and compared: numbers numerically (``$`` and thousands commas
  dropped: ``1,000`` = ``1000.0``), other text exactly. A generation without a match scores 0; a reference without
  one is an error naming the row, so a pattern that misses the data is caught before any generation.
* When every reference uses the formula form ``<<a+b=c>>`` (GSM8K's calculator annotations), the formula metrics of
  :func:`segloss.metrics.formulas.score_math` are added (``iou``, ``dice``, ``precision``, ``recall``, step errors,
  ``well_formed``…; its ``####``-based exact-match variants are left out: ``exact_match`` is defined above).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from segloss.data import Example
from segloss.metrics.formulas import answers_match, parse_formulas, score_math

_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def compile_answer_pattern(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled, or a ``ValueError`` naming ``answer_pattern`` and the regex error."""
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(f"answer_pattern: {pattern!r} is not a valid regular expression ({err}); fix it") from None


def extract_answer(text: str, pattern: re.Pattern[str]) -> str | None:
    """The first match of ``pattern`` in ``text`` (its first group when it has groups), stripped; None if none."""
    match = pattern.search(text or "")
    if match is None:
        return None
    found = match.group(1) if pattern.groups else match.group(0)
    return None if found is None else found.strip()


def _normalise(answer: str) -> str:
    return _THOUSANDS.sub("", answer.replace("$", "")).strip()


@dataclass(frozen=True)
class UserDataScorer:
    """Scores generations of the user's own data; :meth:`for_examples` checks the references first."""

    pattern: re.Pattern[str] | None = None
    formulas: bool = False

    @classmethod
    def for_examples(cls, examples: Sequence[Example], pattern: str | None) -> UserDataScorer:
        compiled = compile_answer_pattern(pattern) if pattern is not None else None
        if compiled is not None:
            missing = [e for e in examples if extract_answer(e.answer, compiled) is None]
            if missing:
                raise ValueError(
                    f"answer_pattern: {pattern!r} finds no answer in the completion of {len(missing)} of "
                    f"{len(examples)} rows (first: {missing[0].id}: {missing[0].answer!r:.80}); fix the pattern so "
                    "it matches every reference"
                )
        return cls(compiled, bool(examples) and all(parse_formulas(e.answer) for e in examples))

    def answer(self, generated: str) -> str | None:
        """What ``exact_match`` compares: the extracted answer, or the whole stripped text."""
        return extract_answer(generated, self.pattern) if self.pattern is not None else (generated or "").strip()

    def score(self, generated: str, reference: str) -> dict[str, float]:
        predicted, expected = self.answer(generated), self.answer(reference)
        if self.pattern is None:
            match = predicted == expected
        else:
            match = predicted is not None and answers_match(_normalise(predicted), _normalise(expected or ""))
        scores = {"exact_match": float(match)}
        if self.formulas:
            math_scores = score_math(generated, reference)
            scores.update({k: v for k, v in math_scores.items() if not k.startswith("exact_match")})
        return scores
