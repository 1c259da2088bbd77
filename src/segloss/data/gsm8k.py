"""GSM8K (Cobbe et al., 2021): grade-school math word problems with calculator annotations.

Raw record (``openai/grade-school-math`` ``train.jsonl``/``test.jsonl``, or hub ``openai/gsm8k``/``main``)::

    {"question": "Natalia sold clips to 48 …", "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips …\\n#### 72"}

Example: prompt ``Question: {question}\\nAnswer: ``, answer = the ``<<…>>`` calculator formulas of the solution
joined by spaces, then ``#### {final}`` — ``<<48/2=24>> <<48+24=72>> #### 72`` (``#### {final}`` alone when the
solution has no annotation; thousands commas leave the final number: ``1,000`` → ``1000``). Splits train/test;
validation is a seeded 10 % of train (train is then the other 90 %) unless a validation file exists. Records
without a ``#### final`` line are skipped and counted.

Options (defaults False), for comparison with the authors' numbers only (docs/fidelity.md):

* ``authors_split``: validation = the authors' ``datasets`` ``train_test_split(test_size=0.1, seed=seed)`` of train
  (748 records at seed 42; train = the other 6725 in that split's order) instead of segloss's seeded sample;
* ``authors_preprocessing``: ``authors_split`` plus the authors' answers, ``<<[^>]+>>`` formulas then the
  ``#### …`` line as written (thousands commas kept: ``#### 1,080``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from segloss.data.base import DatasetBuilder, Example, register, require

FORMULA = re.compile(r"<<(.*?)>>")
_AUTHORS_FORMULA = re.compile(r"(<<[^>]+>>)")
_AUTHORS_FINAL = re.compile(r"(#### .+)")


def gsm8k_answer(solution: str) -> str | None:
    """``<<a>> <<b>> #### final`` from a GSM8K solution, or None without a ``####`` line."""
    if "####" not in solution:
        return None
    body, final = solution.rsplit("####", 1)
    formulas = " ".join(f"<<{f.strip()}>>" for f in FORMULA.findall(body))
    final = final.strip().replace(",", "")  # "1,000" → "1000", as GSM8K scoring does
    if not final:
        return None
    return f"{formulas} #### {final}" if formulas else f"#### {final}"


def authors_answer(solution: str) -> str | None:
    """The authors' answer (``parquet_creator.py``): every ``<<…>>`` and ``#### …`` match joined by spaces."""
    parts = _AUTHORS_FORMULA.findall(solution) + _AUTHORS_FINAL.findall(solution)
    return " ".join(parts) if _AUTHORS_FINAL.search(solution) else None


def authors_split_indices(n: int, seed: int) -> dict[str, list[int]]:
    """Record indices of the authors' ``train_test_split(test_size=0.1, seed=seed)``: validation is its ``test``."""
    import datasets

    parts = datasets.Dataset.from_dict({"index": list(range(n))}).train_test_split(test_size=0.1, seed=seed)
    return {"train": list(parts["train"]["index"]), "validation": list(parts["test"]["index"])}


@register
class GSM8KBuilder(DatasetBuilder):
    name = "gsm8k"
    stop_strings = ("\nQuestion:", "\n\n")  # where a generated answer ends
    hub_id = "openai/gsm8k"
    hub_config = "main"
    hub_splits = {"train": "train", "test": "test"}  # noqa: RUF012  (class constant)
    derive_validation = True
    default_options: ClassVar[dict[str, Any]] = {"authors_split": False, "authors_preprocessing": False}

    def split_records(self, split: str, path: str | Path | None, seed: int) -> list[dict[str, Any]]:
        authors = self.options["authors_split"] or self.options["authors_preprocessing"]
        if not authors or split not in ("train", "validation") or self.has_split("validation", path):
            return super().split_records(split, path, seed)
        records = self.raw_records("train", path)
        self.source += f" (validation = the authors' train_test_split(test_size=0.1, seed={seed}))"
        return [records[i] for i in authors_split_indices(len(records), seed)[split]]

    def to_example(self, record: dict[str, Any], index: int, split: str, where: str) -> Example | None:
        question = require(record, "question", self.name, where)
        solution = require(record, "answer", self.name, where)
        if self.options["authors_preprocessing"]:
            answer = authors_answer(solution)  # the authors keep the question unstripped
        else:
            question, answer = question.strip(), gsm8k_answer(solution)
        if answer is None:
            self.skip("no '#### final' line in the answer")
            return None
        return Example(id=f"gsm8k-{split}-{index}", prompt=f"Question: {question}\nAnswer: ", answer=answer)
