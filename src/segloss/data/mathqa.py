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

Option ``authors_preprocessing`` (default False) reproduces the authors' ``parquet_creator.py`` instead, for
comparison with their numbers only (docs/fidelity.md measures each difference): the correct option is found by
splitting ``options`` at **every** comma (so ``1 , 200`` shifts the options after it), its value is what is left
between the first and last digit/sign, written as a Python float (``#### 38.0``; ``- 4`` does not parse and the record
is skipped), and the steps are ``linear_formula.split("|")[:-1]``, which drops the real last step of a formula
without a trailing ``|``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, ClassVar

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


def authors_value(options: str | list[str], correct: str) -> str | None:
    """The correct option's value as the authors compute it (``"38.0"``), or None where their ``float()`` fails."""
    if isinstance(options, list):
        options = " , ".join(str(o) for o in options)
    parts = options.split(",")  # every comma, thousands separators included (their behaviour)
    index = ord(correct) - ord("a") if len(correct) == 1 else -1
    if not 0 <= index < len(parts):
        return None
    text = re.sub(r"[a-e]\)", "", parts[index].strip())
    text = re.sub(r"[^\d\-+]*$", "", re.sub(r"^[^\d\-+]*", "", text))
    try:
        return str(float(text))
    except ValueError:
        return None


def authors_answer(linear_formula: str, value: str) -> str:
    """``<<step>> … #### value`` with the authors' steps: ``split("|")[:-1]``, unstripped."""
    return " ".join([f"<<{step}>>" for step in linear_formula.split("|")[:-1]] + [f"#### {value}"])


def mathqa_answer(linear_formula: str, value: str) -> str:
    steps = [s.strip() for s in linear_formula.split("|") if s.strip()]
    formulas = " ".join(f"<<{s}>>" for s in steps)
    return f"{formulas} #### {value}" if formulas else f"#### {value}"


@register
class MathQABuilder(DatasetBuilder):
    name = "mathqa"
    stop_strings = ("\nQuestion:", "\n\n")  # where a generated answer ends
    hub_id = "allenai/math_qa"
    default_options: ClassVar[dict[str, Any]] = {"authors_preprocessing": False}

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
        raw_options = require(record, "options", self.name, where)
        formula = require(record, "linear_formula", self.name, where)
        if self.options["authors_preprocessing"]:
            return self._authors_example(problem, raw_options, record, formula, f"mathqa-{split}-{index}", where)
        options = parse_options(raw_options)
        correct = str(require(record, "correct", self.name, where)).strip().lower()
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

    def _authors_example(
        self, problem: str, options: str | list[str], record: dict[str, Any], formula: str, id: str, where: str
    ) -> Example | None:
        value = authors_value(options, str(require(record, "correct", self.name, where)))
        if value is None:
            self.skip("authors' preprocessing: correct option is not a float")
            return None
        return Example(id=id, prompt=f"Question: {problem}\nAnswer: ", answer=authors_answer(formula, value))
