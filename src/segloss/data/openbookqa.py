"""OpenBookQA (Mihaylov et al., 2018), the ``additional`` config (it carries the supporting fact ``fact1``).

Raw files: ``Additional/{train,dev,test}_complete.jsonl`` of the AI2 release (pass the dataset directory or the
``Additional`` directory), where records nest ``question.stem`` and ``question.choices`` (``[{"text", "label"}]``);
the hub (``allenai/openbookqa``/``additional``) flattens them to ``question_stem`` and ``choices``
(``{"text": [...], "label": [...]}``). Both are accepted. ``Main/`` files lack ``fact1`` and are rejected.

Example: prompt ``Question: {question_stem}\\nA. …\\nB. …\\nC. …\\nD. …\\nContext: {fact1}\\nAnswer: ``, answer =
the letter (``answerKey``); ``choices``/``label`` hold the option texts and the right index.
"""

from __future__ import annotations

from typing import Any

from segloss.data.base import DatasetBuilder, Example, format_choices, register, require


def _choices(record: dict[str, Any], where: str) -> tuple[list[str], list[str]]:
    """(texts, labels) from the nested raw layout or the flattened hub layout."""
    if isinstance(record.get("question"), dict):
        raw = require(record, "question.choices", "openbookqa", where)
        if not isinstance(raw, list):
            raise ValueError(f"openbookqa: {where}: field 'question.choices' must be a list")
        return (
            [require(c, "text", "openbookqa", where) for c in raw],
            [require(c, "label", "openbookqa", where) for c in raw],
        )
    raw = require(record, "choices", "openbookqa", where)
    return list(require(raw, "text", "openbookqa", where)), list(require(raw, "label", "openbookqa", where))


@register
class OpenBookQABuilder(DatasetBuilder):
    name = "openbookqa"
    stop_strings = ("\n",)  # where a generated answer ends
    multiple_choice = True
    hub_id = "allenai/openbookqa"
    hub_config = "additional"
    split_files = {  # noqa: RUF012  (class constant)
        "train": ("Additional/train_complete", "train_complete", "train"),
        "validation": ("Additional/dev_complete", "dev_complete", "validation", "dev"),
        "test": ("Additional/test_complete", "test_complete", "test"),
    }

    def to_example(self, record: dict[str, Any], index: int, split: str, where: str) -> Example | None:
        nested = isinstance(record.get("question"), dict)
        stem = require(record, "question.stem" if nested else "question_stem", self.name, where)
        fact = require(record, "fact1", self.name, where)
        texts, labels = _choices(record, where)
        key = str(require(record, "answerKey", self.name, where)).strip()
        if key not in labels:
            raise ValueError(f"openbookqa: {where}: answerKey {key!r} is not one of the choice labels {labels}")
        prompt = f"Question: {stem.strip()}\n{format_choices(texts)}\nContext: {fact.strip()}\nAnswer: "
        label = labels.index(key)
        return Example(
            id=str(record.get("id", f"openbookqa-{split}-{index}")),
            prompt=prompt,
            answer="ABCDEFGHIJ"[label],
            choices=tuple(texts),
            label=label,
        )
