"""GSM8K (Cobbe et al., 2021): grade-school math word problems with calculator annotations.

Raw record (``openai/grade-school-math`` ``train.jsonl``/``test.jsonl``, or hub ``openai/gsm8k``/``main``)::

    {"question": "Natalia sold clips to 48 …", "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips …\\n#### 72"}

Example: prompt ``Question: {question}\\nAnswer: ``, answer = the ``<<…>>`` calculator formulas of the solution
joined by spaces, then ``#### {final}`` — ``<<48/2=24>> <<48+24=72>> #### 72`` (``#### {final}`` alone when the
solution has no annotation; thousands commas leave the final number: ``1,000`` → ``1000``). Splits train/test;
validation is a seeded 10 % of train (train is then the other 90 %) unless a validation file exists. Records
without a ``#### final`` line are skipped and counted.
"""

from __future__ import annotations

import re
from typing import Any

from segloss.data.base import DatasetBuilder, Example, register, require

FORMULA = re.compile(r"<<(.*?)>>")


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


@register
class GSM8KBuilder(DatasetBuilder):
    name = "gsm8k"
    stop_strings = ("\nQuestion:", "\n\n")  # where a generated answer ends
    hub_id = "openai/gsm8k"
    hub_config = "main"
    hub_splits = {"train": "train", "test": "test"}  # noqa: RUF012  (class constant)
    derive_validation = True

    def to_example(self, record: dict[str, Any], index: int, split: str, where: str) -> Example | None:
        question = require(record, "question", self.name, where)
        answer = gsm8k_answer(require(record, "answer", self.name, where))
        if answer is None:
            self.skip("no '#### final' line in the answer")
            return None
        return Example(id=f"gsm8k-{split}-{index}", prompt=f"Question: {question.strip()}\nAnswer: ", answer=answer)
