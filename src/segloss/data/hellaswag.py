"""HellaSwag (Zellers et al., 2019): pick the most plausible ending of a context.

No local copy ships with the project: pass ``--data-path`` to a directory holding the ``rowanz/hellaswag`` files
(``hellaswag_train.jsonl``, ``hellaswag_val.jsonl``) or to one such jsonl file, or go online and the hub id
``Rowan/hellaswag`` is used. Record fields used: ``ctx``, ``endings`` (4 strings), ``label`` (0–3, int or string).

Example: prompt ``Question: {ctx}\\nA. …\\nB. …\\nC. …\\nD. …\\nAnswer: ``, answer = the letter. Splits: the labelled
validation file is the **test** set (as in the paper; the official test file has no labels); validation is a
seeded 10 % of train and train the other 90 %.
"""

from __future__ import annotations

from typing import Any

from segloss.data.base import DatasetBuilder, Example, format_choices, register, require


@register
class HellaSwagBuilder(DatasetBuilder):
    name = "hellaswag"
    stop_strings = ("\n",)  # where a generated answer ends
    multiple_choice = True
    hub_id = "Rowan/hellaswag"
    split_files = {  # noqa: RUF012  (class constant)
        "train": ("hellaswag_train", "train"),
        "validation": (),
        "test": ("hellaswag_val", "val", "validation"),
    }
    hub_splits = {"train": "train", "test": "validation"}  # noqa: RUF012
    derive_validation = True

    def to_example(self, record: dict[str, Any], index: int, split: str, where: str) -> Example | None:
        ctx = require(record, "ctx", self.name, where)
        endings = require(record, "endings", self.name, where)
        raw_label = require(record, "label", self.name, where)
        if not isinstance(endings, list) or len(endings) != 4:
            raise ValueError(f"hellaswag: {where}: field 'endings' must be a list of 4 strings")
        if str(raw_label).strip() == "":
            raise ValueError(
                f"hellaswag: {where}: field 'label' is empty (the official test file has no labels; "
                "use hellaswag_val.jsonl as the test split)"
            )
        label = int(raw_label)
        if not 0 <= label < 4:
            raise ValueError(f"hellaswag: {where}: field 'label' must be 0–3, got {raw_label!r}")
        prompt = f"Question: {ctx.strip()}\n{format_choices(endings)}\nAnswer: "
        ident = record.get("ind", index)
        return Example(
            id=f"hellaswag-{split}-{ident}", prompt=prompt, answer="ABCD"[label], choices=tuple(endings), label=label
        )
