"""MathQA (Amini et al., 2019): GRE/GMAT-style problems with an operation program (``linear_formula``).

Raw files are pretty-printed JSON arrays (``dev.json``/``test.json``; the authors' ``train.json`` is not in
``../shared/data``), or hub ``allenai/math_qa``. Record fields used: ``Problem``, ``options``
(``"a ) 24 , b ) 120 , …"`` or a list-like string ``"['a ) 24', …]"``), ``correct`` (a letter) and
``linear_formula`` (``"divide(n0,n1)|multiply(#0,const_100)|"``).

Example: prompt ``Question: {Problem}\\nAnswer: `` (as in the research code), answer = each program step wrapped
``<<divide(n0,n1)>>``, joined by spaces, then ``#### {number}`` where number is the value of the correct option. An
option counts as numeric when it holds exactly one number (units and currency words around it are fine: ``$ 1600`` →
1600, ``12.5 %`` → 12.5; ``1 / 2``, ``3 : 4``, ``34 √ 3 cm 2`` or ``none`` are not); other records are skipped and
counted.
Splits: train (``train.json``), validation (``dev.json``), test (``test.json``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from segloss.data.base import DatasetBuilder, Example, register, require

_OPTION_MARK = re.compile(r"(?:^|,)\s*([a-e])\s*\)\s*")
_NUMBER = re.compile(r"-?(?:\d+(?:\.\d+)?|\.\d+)")
_THOUSANDS = re.compile(r"(?<=\d) ?, ?(?=\d{3}\b)")


def parse_options(options: str | list[str]) -> dict[str, str]:
    """``"a ) 24 , b ) 120"`` (or ``"['a ) 24', 'b ) 120']"``) → ``{"a": "24", "b": "120"}``."""
    if isinstance(options, str) and options.strip().startswith("["):
        options = ast.literal_eval(options.strip())
    if isinstance(options, list):
        options = " , ".join(str(o) for o in options)
    parts = _OPTION_MARK.split(options)
    return {letter: text.strip() for letter, text in zip(parts[1::2], parts[2::2], strict=True)}


def numeric_value(text: str) -> str | None:
    """The single number in an option's text (``"$ 1,600"`` → ``"1600"``), else None."""
    numbers = _NUMBER.findall(_THOUSANDS.sub("", text.replace("- ", "-")))
    return numbers[0] if len(numbers) == 1 else None


def mathqa_answer(linear_formula: str, value: str) -> str:
    steps = [s.strip() for s in linear_formula.split("|") if s.strip()]
    formulas = " ".join(f"<<{s}>>" for s in steps)
    return f"{formulas} #### {value}" if formulas else f"#### {value}"


@register
class MathQABuilder(DatasetBuilder):
    name = "mathqa"
    stop_strings = ("\nQuestion:", "\n\n")  # where a generated answer ends
    hub_id = "allenai/math_qa"

    def missing_split_message(self, split: str, directory: Path) -> str:
        message = super().missing_split_message(split, directory)
        if split == "train":
            message += (
                "; the MathQA train split (train.json) is not in ../shared/data — only dev and test exist "
                "locally: use --split dev to train on dev (and say so in the results)"
            )
        return message

    def to_example(self, record: dict[str, Any], index: int, split: str, where: str) -> Example | None:
        problem = require(record, "Problem", self.name, where)
        options = parse_options(require(record, "options", self.name, where))
        correct = str(require(record, "correct", self.name, where)).strip().lower()
        formula = require(record, "linear_formula", self.name, where)
        if correct not in options:
            self.skip("correct option not among the options")
            return None
        value = numeric_value(options[correct])
        if value is None:
            self.skip("correct option is not numeric")
            return None
        return Example(
            id=f"mathqa-{split}-{index}",
            prompt=f"Question: {problem.strip()}\nAnswer: ",
            answer=mathqa_answer(formula, value),
        )
