"""The shared base of every dataset: records → :class:`Example` (prompt, answer) → tokenized features.

A dataset is one :class:`DatasetBuilder` subclass in its own module that only maps a raw record to an
:class:`Example` (``to_example``). Everything else lives here, once:

* **Sources**, in this order: a local ``path`` the user gives (a split file, or a directory holding the files as the
  authors distribute them: ``.jsonl``, ``.json`` arrays or ``.parquet``), else the Hugging Face hub id through
  ``datasets.load_dataset`` when online.
* **Splits** are ``train``/``validation``/``test`` (``dev`` and ``val`` are aliases of ``validation``). A builder
  with ``derive_validation`` takes a seeded 10 % of train as validation when no validation file exists, and train
  is then the other 90 % (no leakage).
* **Tokenization** (:func:`tokenize_examples`) is TRL's: each example becomes a prompt/completion row (rendered by a
  template, see :mod:`segloss.data.templates`) and TRL's `SFTTrainer` preparation tokenizes prompt + completion as
  **one text** with EOS appended; ``completion_mask`` marks the completion tokens (the task loss's targets) and CE
  covers every token (the trainer's labels). The prompt is truncated from the left (BOS kept) and counted; an
  example whose completion (with BOS and one prompt token) does not fit in ``max_length`` is dropped and counted in
  :class:`TokenizeStats`, never silently.
* **Padding**: TRL's collator pads training batches (`segloss.integrations.trl`); :func:`encode_prompts` pads on the
  left for generation. A tokenizer without a pad token pads with EOS (as the paper does); :func:`pad_token_id`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from segloss.defaults import IGNORE_INDEX as IGNORE_INDEX  # torch-free; also segloss.losses.IGNORE_INDEX

#: Generation budget per dataset (new tokens): long enough for a full chain of formulas, a letter for QA.
MAX_NEW_TOKENS: dict[str, int] = {"gsm8k": 256, "mathqa": 256, "arith": 96, "openbookqa": 8, "hellaswag": 8}

SPLITS = ("train", "validation", "test")
_SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "dev": "validation",
    "val": "validation",
    "test": "test",
}
_EXTENSIONS = (".jsonl", ".json", ".parquet")
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Example:
    """One (prompt, answer) pair. ``choices``/``label`` are set for multiple-choice sets (label = right index).

    ``messages`` is set for conversation rows of the user's own data (:mod:`segloss.data.custom`): the turns before
    the answer (``{"role", "content"}`` mappings), always rendered by the tokenizer's chat template; ``prompt`` is
    then a plain-text view of them for display.
    """

    id: str
    prompt: str
    answer: str
    choices: tuple[str, ...] = ()
    label: int | None = None
    messages: tuple[dict[str, str], ...] = ()


def canonical_split(split: str) -> str:
    """``dev``/``val`` → ``validation``; unknown names raise ``ValueError`` listing the valid ones."""
    key = split.strip().lower()
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)} (aliases: dev, val)")
    return _SPLIT_ALIASES[key]


def stable_seed(*parts: object) -> int:
    """A seed derived from ``parts`` that is the same in every process (unlike ``hash``)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


# --------------------------------------------------------------------------------------------------- raw files
def _not_utf8(path: Path, data: bytes, offset: int, first_line: int = 1) -> ValueError:
    """The error for the undecodable byte at ``offset`` of ``data`` (which starts at line ``first_line``)."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    lineno = first_line + data.count(b"\n", 0, offset)
    return ValueError(
        f"{path}:{lineno}: not UTF-8 text (byte 0x{data[offset]:02x} at column {offset - line_start + 1}); re-save "
        "the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
    )


def _json_error(err: json.JSONDecodeError) -> str:
    """json's message with its column, which ``err.msg`` leaves out (``Invalid control character at``), and the
    character itself when it is a raw control character (a tab or newline inside a string must be escaped)."""
    message = f"{err.msg.removesuffix(' at')} at column {err.colno}"
    char = err.doc[err.pos] if err.pos < len(err.doc) else ""
    if char and ord(char) < 0x20:
        message += f": raw control character {char!r} inside a string; write it escaped ({json.dumps(char)[1:-1]})"
    return message


def read_jsonl_located(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Records of a jsonl file and, for each, where it is (``path:line``) for error messages."""
    records, where = [], []
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(path, raw, err.start + 3 * raw.startswith(BOM), lineno) from err
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}:{lineno}: malformed JSON line ({_json_error(err)}); fix or remove that line"
                ) from err
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object per line, got {type(record).__name__}")
            records.append(record)
            where.append(f"{path}:{lineno}")
    return records, where


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return read_jsonl_located(path)[0]


def read_csv_located(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of a CSV file with a header line (UTF-8, BOM allowed) and where each is (``path:line``)."""
    import csv

    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, data, err.start + 3 * data.startswith(BOM)) from err
    reader = csv.DictReader(text.splitlines(keepends=True))
    records, where = [], []
    try:
        for row in reader:
            extra = row.pop(None, None)  # DictReader puts surplus cells under the key None
            if extra:
                columns = len(reader.fieldnames or [])
                raise ValueError(
                    f"{path}:{reader.line_num}: {len(extra)} more cell(s) than the header's {columns} columns; quote "
                    "cells that contain commas"
                )
            records.append(dict(row))
            where.append(f"{path}:{reader.line_num}")
    except csv.Error as err:
        raise ValueError(f"{path}:{reader.line_num}: malformed CSV ({err}); fix that line") from err
    return records, where


def read_records_located(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """:func:`read_records` plus where each record is: ``path:line`` (jsonl, CSV), ``path element i`` (JSON array,
    0-based), ``path row i`` (parquet)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    if path.suffix == ".csv":
        return read_csv_located(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return rows, [f"{path} row {i}" for i in range(len(rows))]
    if path.suffix == ".jsonl":
        return read_jsonl_located(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise _not_utf8(path, data, err.start + 3 * data.startswith(BOM)) from err
    if not text.lstrip().startswith("["):
        return read_jsonl_located(path)  # a .json file that is really jsonl
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}:{err.lineno}: malformed JSON ({_json_error(err)}); the file must be one JSON array"
        ) from err
    bad = [i for i, r in enumerate(records) if not isinstance(r, dict)]
    if bad:
        raise ValueError(f"{path}: element {bad[0]} of the JSON array is not an object")
    return records, [f"{path} element {i}" for i in range(len(records))]


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Records of one raw file: jsonl (one object per line), a JSON array (pretty-printed or not), parquet or CSV."""
    return read_records_located(path)[0]


def require(record: dict[str, Any], name: str, dataset: str, where: str) -> Any:
    """``record[name]``, or a ``ValueError`` that names the field, the dataset and where the record is."""
    value = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value or value[part] is None:
            present = ", ".join(sorted(record)) or "none"
            raise ValueError(
                f"{dataset}: {where} is missing field {name!r} (fields present: {present}); add the field or "
                f"remove that record, or check that this is a {dataset} file"
            )
        value = value[part]
    return value


def letters(n: int) -> str:
    return "ABCDEFGHIJ"[:n]


def format_choices(choices: Sequence[str]) -> str:
    """``A. …\\nB. …`` — the multiple-choice block of the QA prompts."""
    return "\n".join(f"{letter}. {text}" for letter, text in zip(letters(len(choices)), choices, strict=True))


# --------------------------------------------------------------------------------------------------- builders
class DatasetBuilder:
    """Maps raw records of one dataset to :class:`Example`; subclasses set the class attributes and ``to_example``.

    ``split_files`` maps a split to file-name stems searched (in order) under a directory ``path`` with the
    extensions ``.jsonl``/``.json``/``.parquet``; ``hub_splits`` maps a split to the hub's split name. After
    :meth:`load`, ``skipped`` counts the records that ``to_example`` rejected (returned ``None``) and
    ``skip_reasons`` says why.
    """

    name: ClassVar[str] = ""
    multiple_choice: ClassVar[bool] = False
    hub_id: ClassVar[str | None] = None
    hub_config: ClassVar[str | None] = None
    split_files: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("train",),
        "validation": ("validation", "dev", "val"),
        "test": ("test",),
    }
    hub_splits: ClassVar[dict[str, str]] = {"train": "train", "validation": "validation", "test": "test"}
    derive_validation: ClassVar[bool] = False
    #: Where a generated answer ends (evaluation stops and cuts there): math answers are one line, so a new
    #: ``Question:`` or a blank line ends them; QA answers end with their line.
    stop_strings: ClassVar[tuple[str, ...]] = ("\n\n",)
    #: Options accepted by ``__init__`` with their defaults (``load_examples(name, split, **options)``).
    default_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.default_options))
        if unknown:
            valid = ", ".join(sorted(self.default_options)) or "none"
            raise ValueError(f"{self.name}: unknown option(s) {unknown}; valid options: {valid}")
        self.options = {**self.default_options, **options}
        self.skipped = 0
        self.skip_reasons: Counter[str] = Counter()
        self.source = ""
        self.locations: list[str] = []  # where each record of the last split_records call is (path:line, …)

    # Subclasses implement this one method.
    def to_example(self, record: dict[str, Any], index: int, split: str, where: str) -> Example | None:
        raise NotImplementedError

    def skip(self, reason: str) -> None:
        self.skipped += 1
        self.skip_reasons[reason] += 1

    def load(
        self, split: str, path: str | Path | None = None, *, limit: int | None = None, seed: int = 42
    ) -> list[Example]:
        """The examples of ``split`` in file order (the first ``limit`` when given)."""
        split = canonical_split(split)
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be a positive number of examples, got {limit}")
        self.skipped, self.skip_reasons, self.locations = 0, Counter(), []
        records = self.split_records(split, path, seed)
        located = len(self.locations) == len(records)
        examples = []
        for index, record in enumerate(records):
            where = self.locations[index] if located else f"record {index} of {self.source}"
            example = self.to_example(record, index, split, where)
            if example is not None:
                examples.append(example)
        if not examples:
            reason = f" ({self.skipped} records skipped: {dict(self.skip_reasons)})" if self.skipped else ""
            raise ValueError(
                f"{self.name}: split {split!r} from {self.source} is empty{reason}; "
                "check the file or pick another --split"
            )
        return examples[:limit] if limit is not None else examples

    # ---------------------------------------------------------------- where the records come from
    def split_records(self, split: str, path: str | Path | None, seed: int) -> list[dict[str, Any]]:
        if split in ("train", "validation") and self.derive_validation and not self.has_split("validation", path):
            records = self.raw_records("train", path)
            held_out = validation_indices(len(records), seed)
            self.source += f" (validation = seeded 10% of train, seed {seed})"
            keep = sorted(held_out) if split == "validation" else [i for i in range(len(records)) if i not in held_out]
            if len(self.locations) == len(records):  # error messages keep the file line, not the split index
                self.locations = [self.locations[i] for i in keep]
            return [records[i] for i in keep]
        return self.raw_records(split, path)

    def find_file(self, split: str, directory: Path) -> Path | None:
        for stem in self.split_files.get(split, ()):
            for ext in _EXTENSIONS:
                candidate = directory / f"{stem}{ext}"
                if candidate.is_file():
                    return candidate
            shards = sorted(directory.glob(f"{stem}-*.parquet"))  # hub exports: train-00000-of-00001.parquet
            if shards:
                return shards[0]
        return None

    def has_split(self, split: str, path: str | Path | None) -> bool:
        if path is None:
            return split in self.hub_splits
        path = Path(path)
        return path.is_dir() and self.find_file(split, path) is not None

    def raw_records(self, split: str, path: str | Path | None) -> list[dict[str, Any]]:
        if path is None:
            return self.hub_records(split)
        path = Path(path)
        if path.is_file():
            self.source = str(path)
            records, self.locations = read_records_located(path)
            return records
        if not path.is_dir():
            raise FileNotFoundError(f"{self.name}: data path not found: {path}")
        found = self.find_file(split, path)
        if found is None:
            raise FileNotFoundError(self.missing_split_message(split, path))
        self.source = str(found)
        records, self.locations = read_records_located(found)
        return records

    def missing_split_message(self, split: str, directory: Path) -> str:
        names = ", ".join(f"{stem}{_EXTENSIONS[0]}" for stem in self.split_files.get(split, ())) or "none"
        return f"{self.name}: no file for split {split!r} in {directory} (looked for {names} and .json/.parquet)"

    def hub_records(self, split: str) -> list[dict[str, Any]]:
        from segloss.hub import hub_connection_error, hub_endpoint, hub_offline

        if self.hub_id is None or split not in self.hub_splits:
            raise FileNotFoundError(
                f"{self.name}: split {split!r} has no hub source; pass --data-path pointing at local files"
            )
        self.source = f"hub:{self.hub_id}" + (f"/{self.hub_config}" if self.hub_config else "")
        hint = f"pass --data-path pointing at local {self.name} files (see docs/data.md)"
        if hub_offline() or os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true"):
            raise FileNotFoundError(f"{self.name}: no local path given and the hub is offline; {hint}")
        reason = hub_connection_error()  # a failed connection is final: no half-minute of retries
        if reason is not None:
            raise FileNotFoundError(
                f"{self.name}: no local path given and {hub_endpoint()} is unreachable ({reason}); {hint}"
            )
        import datasets

        try:
            data = datasets.load_dataset(self.hub_id, self.hub_config, split=self.hub_splits[split])
        except Exception as err:  # network, auth, missing config: all mean "use local files"
            raise FileNotFoundError(f"{self.name}: could not load {self.source} ({err}); {hint}") from err
        return list(data)


def validation_indices(n: int, seed: int, fraction: float = 0.1) -> set[int]:
    """The seeded ``fraction`` of ``range(n)`` held out as validation (at least one when n > 1)."""
    size = max(1, round(n * fraction)) if n > 1 else 0
    return set(random.Random(seed).sample(range(n), size))


DATASETS: dict[str, type[DatasetBuilder]] = {}


def register(cls: type[DatasetBuilder]) -> type[DatasetBuilder]:
    DATASETS[cls.name] = cls
    return cls


def builder_class(name: str) -> type[DatasetBuilder]:
    """The builder class of ``name``: a built-in dataset, else the user's own data (a file, folder or hub id; see
    :mod:`segloss.data.custom`); anything else raises ``ValueError`` listing the valid forms."""
    if name in DATASETS:
        return DATASETS[name]
    from segloss.data.custom import UserDataBuilder, check_user_source

    check_user_source(name)
    return UserDataBuilder


def get_builder(name: str, **options: Any) -> DatasetBuilder:
    """The builder of dataset ``name`` (a built-in name, or a data file, folder or hub id of the user's own data);
    unknown names raise ``ValueError`` listing the valid ones."""
    if name in DATASETS:
        return DATASETS[name](**options)
    from segloss.data.custom import UserDataBuilder, check_user_source

    check_user_source(name)
    return UserDataBuilder(name, **options)


def stop_strings(name: str) -> tuple[str, ...]:
    """The strings at which generated answers of dataset ``name`` end (see ``DatasetBuilder.stop_strings``)."""
    return builder_class(name).stop_strings


def is_multiple_choice(name: str) -> bool:
    return builder_class(name).multiple_choice


def load_examples(
    name: str, split: str, path: str | Path | None = None, *, limit: int | None = None, seed: int = 42, **options: Any
) -> list[Example]:
    """The examples of ``split`` of dataset ``name`` (see the module docstring for sources and splits).

    ``limit`` keeps the first examples (file order; deterministic), ``seed`` drives derived validation splits and
    synthetic data, ``options`` go to the builder (e.g. arith's ``n_train``/``max_steps``).
    """
    return get_builder(name, **options).load(split, path, limit=limit, seed=seed)


# --------------------------------------------------------------------------------------------------- tokenization
def pad_token_id(tokenizer: Any) -> int:
    """The id used for padding: the tokenizer's pad token, else EOS (as the paper does).

    The tokenizer is not modified: callers that need ``tokenizer.pad_token`` set (e.g. for ``generate``) pass this
    id explicitly (``pad_token_id=pad_token_id(tokenizer)``).
    """
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.eos_token first")
    return int(tokenizer.eos_token_id)


def _percentiles(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)

    def pct(q: float) -> float:  # nearest-rank percentile: always a length that occurs
        return float(ordered[min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 100)) - 1))])

    return {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": float(ordered[-1])}


@dataclass
class TokenizeStats:
    """What :func:`tokenize_examples` kept, truncated and dropped (never silent).

    ``lengths``/``answer_lengths`` are the untruncated token counts (prompt with special tokens + answer + EOS;
    answer + EOS) of every input example; ``kept_indices`` maps dataset rows back to the input examples.
    """

    max_length: int
    n_examples: int = 0
    n_kept: int = 0
    n_dropped: int = 0
    n_prompt_truncated: int = 0
    dropped_ids: list[str] = dataclasses.field(default_factory=list)
    kept_indices: list[int] = dataclasses.field(default_factory=list)
    lengths: list[int] = dataclasses.field(default_factory=list)
    answer_lengths: list[int] = dataclasses.field(default_factory=list)

    def length_percentiles(self) -> dict[str, float]:
        """Nearest-rank p50/p90/p99/max of the untruncated total lengths."""
        return _percentiles(self.lengths)

    def answer_percentiles(self) -> dict[str, float]:
        return _percentiles(self.answer_lengths)


def _prefix_length(tokenizer: Any, ids: list[int]) -> int:
    """How many special tokens (BOS…) the tokenizer put in front; they survive left truncation."""
    special = set(tokenizer.all_special_ids)
    n = 0
    while n < len(ids) and ids[n] in special:
        n += 1
    return n


def _fit(prompt: list[int], answer: list[int], prefix: int, max_length: int) -> list[int] | None:
    """The prompt cut from the left (special prefix kept) so that prompt + answer fits, or None if it cannot."""
    room = max_length - prefix - len(answer)
    if room < 1 or len(prompt) == prefix:  # at least one real prompt token must remain
        return None
    body = prompt[prefix:]
    return prompt[:prefix] + body[max(0, len(body) - room) :]


def tokenize_examples(
    examples: Sequence[Example], tokenizer: Any, max_length: int, *, template: str = "plain"
) -> tuple[Any, TokenizeStats]:
    """Training features ``input_ids`` and ``completion_mask`` (unpadded), tokenized by TRL, fitted to ``max_length``.

    Each example becomes a TRL prompt/completion row (:func:`segloss.data.templates.training_row`) and TRL's own
    `SFTTrainer` preparation tokenizes it (:func:`segloss.integrations.trl.tokenize_rows`: prompt + completion as one
    text, EOS appended, ``completion_mask`` = 1 from the first token where prompt and prompt + completion differ).
    Then segloss's rule, which TRL's ``truncation_mode`` has no equivalent of: the prompt is cut from the left (its
    leading special tokens kept, counted in ``n_prompt_truncated``); an example whose completion does not fit with
    the special prefix and one prompt token is dropped and counted. Returns ``(datasets.Dataset, TokenizeStats)``;
    raises ``ValueError`` when no example fits (naming the shortest answer, so the fix is obvious).
    """
    import datasets

    from segloss.data.templates import training_row
    from segloss.integrations.trl import tokenize_rows

    if not examples:
        raise ValueError("tokenize_examples: no examples given (is the split empty?)")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token so answers can end")
    rows = datasets.Dataset.from_list([training_row(e, template, tokenizer) for e in examples])
    tokenized = tokenize_rows(rows, tokenizer)
    stats = TokenizeStats(max_length=max_length, n_examples=len(examples))
    columns: dict[str, list[list[int]]] = {"input_ids": [], "completion_mask": []}
    for index, (example, ids, mask) in enumerate(
        zip(examples, tokenized["input_ids"], tokenized["completion_mask"], strict=True)
    ):
        cut = mask.index(1) if 1 in mask else len(ids)
        prompt, answer = ids[:cut], ids[cut:]
        stats.lengths.append(len(ids))
        stats.answer_lengths.append(len(answer))
        fitted = _fit(prompt, answer, _prefix_length(tokenizer, prompt), max_length)
        if fitted is None:
            stats.n_dropped += 1
            stats.dropped_ids.append(example.id)
            continue
        stats.n_prompt_truncated += len(fitted) < len(prompt)
        stats.n_kept += 1
        stats.kept_indices.append(index)
        columns["input_ids"].append(fitted + answer)
        columns["completion_mask"].append([0] * len(fitted) + [1] * len(answer))
    if not stats.n_kept:
        shortest = min(stats.answer_lengths)
        raise ValueError(
            f"max_length={max_length} is too small for any answer: the shortest answer is {shortest} "
            f"tokens with EOS (plus the prompt's special tokens and one prompt token); "
            f"raise --max-length to at least {shortest + 2}"
        )
    return datasets.Dataset.from_dict(columns), stats


def encode_prompts(
    prompts: Sequence[str], tokenizer: Any, max_length: int, *, add_special_tokens: bool = True
) -> dict[str, Any]:
    """A generation batch: prompts tokenized as training tokenizes them, truncated from the left to
    ``max_length`` (special prefix kept) and padded on the **left** so every row ends where generation starts.

    Returns ``{"input_ids": LongTensor [B, T], "attention_mask": LongTensor [B, T]}`` (pad = :func:`pad_token_id`)
    and ``"n_truncated"`` (int: prompts that lost their beginning). ``add_special_tokens=False`` for chat-template
    prompts, whose text already holds the special tokens.
    """
    import torch

    if not prompts:
        raise ValueError("encode_prompts: no prompts given")
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 tokens, got {max_length}")
    encoded = tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    rows = []
    for ids in encoded:
        prefix = _prefix_length(tokenizer, ids)
        body = ids[prefix:]
        keep = max(0, max_length - prefix)
        rows.append(ids[:prefix] + body[max(0, len(body) - keep) :])
    length = max(len(r) for r in rows)
    pad = pad_token_id(tokenizer)
    input_ids = torch.tensor([[pad] * (length - len(r)) + r for r in rows], dtype=torch.long)  # [B, T]
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)  # [B, T]
    n_truncated = sum(len(r) < len(ids) for r, ids in zip(rows, encoded, strict=True))
    return {"input_ids": input_ids, "attention_mask": mask, "n_truncated": n_truncated}
