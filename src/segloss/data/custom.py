"""The user's own data: ``--dataset`` names a data file, a folder of them, or a Hugging Face hub dataset id.

    segloss train --model ./my-model --dataset my.jsonl --output_dir runs/mine
    segloss eval --run runs/mine --dataset my-test.jsonl
    segloss train --model ./my-model --dataset my.csv \\
                  --dataset_options '{prompt_field: question, completion_field: answer}'

**Sources** (:func:`check_user_source`): a ``.jsonl``, ``.json`` (array or one object per line), ``.csv`` (header
line) or ``.parquet`` file; a folder of such files; or a hub id ``owner/name`` loaded with
``datasets.load_dataset(id, config, split=split)`` (``config`` option for datasets with several configs). A single
file is the data of whatever split is asked for. In a folder, a split's files are those whose name starts with the
split (``train.jsonl``, ``train-00000-of-00002.parquet``; ``validation`` also as ``valid``, ``dev`` or ``val``); a
folder without split-named files is, like one file, every split.

**Rows** take one of the two forms of TRL's SFT data (field names are options):

* ``{"prompt": "…", "completion": "…"}`` — the prompt rendered by ``--template`` (``plain``: as it is), the
  completion is the answer the losses train on. The texts are joined as they are (as TRL does): end the prompt with
  the separator you want (a space, a newline). TRL's conversational prompt/completion form (both lists of
  ``{"role", "content"}`` messages) is read as a ``messages`` row.
* ``{"messages": [{"role": "user", "content": "…"}, …, {"role": "assistant", "content": "…"}]}`` — the answer is the
  last message, which must be the assistant's; the turns before it are the prompt, always rendered by the
  tokenizer's chat template (``add_generation_prompt=True``), whatever ``--template`` says.

Numbers are read as text (``"completion": 4`` is ``"4"``); an ``id`` column, when present, names the example. A
file without the columns, an empty file and a bad row stop with one line naming the file, the row and the fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from segloss.data.base import DATASETS, DatasetBuilder, Example, read_records_located

#: File types read as the user's data (``datasets``' usual ones).
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_SPLIT_PREFIXES = {"train": ("train",), "validation": ("validation", "valid", "dev", "val"), "test": ("test",)}
_ROLES = ("system", "user", "assistant", "tool", "developer")


def user_source_kind(name: str, *, must_exist: bool = True) -> str:
    """``"file"``, ``"folder"`` or ``"hub"`` for a valid source of the user's own data; else a clear error.

    ``must_exist=False`` checks only the form (a missing ``.jsonl`` path is a ``"file"``): a run's config.yaml must
    load although its data file has moved since; `train` checks the file before it loads the model.
    """
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() not in DATA_SUFFIXES:
            raise ValueError(
                f"dataset: {name} is not a data file segloss reads (suffix {path.suffix or 'none'}); save it as "
                f"{', '.join(DATA_SUFFIXES)}"
            )
        return "file"
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in DATA_SUFFIXES or name.startswith((".", "/", "~")) or name.count("/") > 1:
        if not must_exist:
            return "file"
        raise FileNotFoundError(f"dataset: data file not found: {name}; check the path (relative to {Path.cwd()})")
    if _HUB_ID.match(name):
        return "hub"
    raise ValueError(
        f"dataset: unknown dataset {name!r}; valid datasets: {', '.join(sorted(DATASETS))}, or your own data: a "
        f"file ({', '.join(DATA_SUFFIXES)}), a folder of them, or a hub id owner/name (see docs/data.md)"
    )


def check_user_source(name: str, *, must_exist: bool = True) -> None:
    """Raise the error of :func:`user_source_kind` when ``name`` is not a file, folder or hub id."""
    user_source_kind(name, must_exist=must_exist)


def is_user_data(name: str) -> bool:
    """Whether ``name`` (a valid ``--dataset`` value) is the user's own data rather than a built-in dataset."""
    return name not in DATASETS


def split_files(folder: Path, split: str) -> list[Path]:
    """The data files of ``split`` in ``folder`` (name = a split prefix, alone or followed by ``-``/``_``/``.``)."""
    found = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in DATA_SUFFIXES:
            continue
        stem = path.name[: -len(path.suffix)].lower()
        if any(stem == p or stem.startswith((f"{p}-", f"{p}_", f"{p}.")) for p in _SPLIT_PREFIXES[split]):
            found.append(path)
    return found


class UserDataBuilder(DatasetBuilder):
    """Rows of the user's file, folder or hub dataset → :class:`Example` (see the module docstring)."""

    name = "your data"
    # A completion may hold blank lines: generation ends at EOS (training appends it), not at a stop string.
    stop_strings: ClassVar[tuple[str, ...]] = ()
    default_options: ClassVar[dict[str, Any]] = {
        "prompt_field": "prompt",
        "completion_field": "completion",
        "messages_field": "messages",
        "config": None,
    }

    def __init__(self, source: str, **options: Any) -> None:
        super().__init__(**options)
        self.kind = user_source_kind(source)
        self.data_source = source
        self._columns_checked = False
        self._form: str | None = None  # "messages" or "prompt/completion", set by the first row

    # ---------------------------------------------------------------- where the rows come from
    def split_records(self, split: str, path: str | Path | None, seed: int) -> list[dict[str, Any]]:
        if path is not None:
            raise ValueError(
                f"data_path: not used when dataset is your own data ({self.data_source}); drop --data_path"
            )
        self._columns_checked, self._form = False, None
        if self.kind == "hub":
            return self._hub_rows(split)
        files = [Path(self.data_source).expanduser()]
        if self.kind == "folder":
            files = self._folder_files(files[0], split)
        records: list[dict[str, Any]] = []
        for file in files:
            rows, where = read_records_located(file)
            if not rows:
                raise ValueError(f"{file}: the file has no rows; add {self._form_hint()} rows or remove the file")
            records += rows
            self.locations += where
        self.source = ", ".join(str(f) for f in files)
        return records

    def _folder_files(self, folder: Path, split: str) -> list[Path]:
        files = split_files(folder, split)
        if files:
            return files
        data = [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in DATA_SUFFIXES]
        named = sorted({p.name for s in _SPLIT_PREFIXES for p in split_files(folder, s)})
        if not data:
            raise FileNotFoundError(f"dataset: {folder} holds no data files ({', '.join(DATA_SUFFIXES)})")
        if named:
            raise FileNotFoundError(
                f"dataset: {folder} has no file for split {split!r} (found {', '.join(named)}); add "
                f"{split}.jsonl or pick another --split"
            )
        return data  # no split names: the folder is the data of every split, like one file

    def _hub_rows(self, split: str) -> list[dict[str, Any]]:
        import datasets

        from segloss.hub import hub_connection_error, hub_endpoint, hub_offline

        config = self.options["config"]
        self.source = f"hub:{self.data_source}" + (f"/{config}" if config else "")
        fix = "check the path or hub id, or save the data as a local .jsonl file"
        # Offline, datasets reads its cache (and fails at once); online, an unreachable hub is found in seconds
        # instead of after datasets' half-minute of retries.
        reason = None if hub_offline() else hub_connection_error()
        if reason is not None:
            raise FileNotFoundError(
                f"dataset: {self.data_source!r} is not a local file or folder, and {hub_endpoint()} is unreachable "
                f"({reason}); {fix}"
            )
        try:
            data = datasets.load_dataset(self.data_source, config, split=split)
        except Exception as err:  # offline, unknown id, missing split or config: all mean "check the id or go local"
            why = " (HF_HUB_OFFLINE is set: only cached datasets load)" if hub_offline() else ""
            raise FileNotFoundError(
                f"dataset: {self.data_source!r} is not a local file or folder and could not be loaded from the hub"
                f"{why}: {type(err).__name__}: {' '.join(str(err).split())[:300]}; {fix}"
            ) from err
        return [dict(row) for row in data]

    # ---------------------------------------------------------------- rows → examples
    def _form_hint(self) -> str:
        o = self.options
        return f"{o['prompt_field']!r}/{o['completion_field']!r} or {o['messages_field']!r}"

    def _check_columns(self, record: dict[str, Any]) -> None:
        """The first row must hold the prompt/completion or messages columns (one error for a whole wrong file)."""
        o = self.options
        if o["messages_field"] in record or (o["prompt_field"] in record and o["completion_field"] in record):
            return
        found = ", ".join(sorted(record)) or "none"
        guess = [k for k in record if isinstance(record[k], str)][:2]
        example = (
            f"{{prompt_field: {guess[0]}, completion_field: {guess[1]}}}"
            if len(guess) == 2
            else "{prompt_field: …, completion_field: …}"
        )
        raise ValueError(
            f"{self.source}: no {self._form_hint()} columns (columns found: {found}); rename them, or name yours "
            f"with --dataset_options '{example}'"
        )

    def to_example(self, record: dict[str, Any], index: int, split: str, where: str) -> Example | None:
        if not self._columns_checked:
            self._check_columns(record)
            self._columns_checked = True
        o = self.options
        example_id = str(record["id"]) if record.get("id") not in (None, "") else f"{split}-{index}"
        messages = record.get(o["messages_field"])
        prompt, completion = record.get(o["prompt_field"]), record.get(o["completion_field"])
        if messages is None and isinstance(prompt, list):  # TRL's conversational prompt/completion form
            if not isinstance(completion, list):
                raise ValueError(
                    f"{where}: {o['prompt_field']!r} is a list of messages but {o['completion_field']!r} is not; "
                    "give the completion as [{role: assistant, content: …}] too"
                )
            messages = [*prompt, *completion]
        form = "messages" if messages is not None else "prompt/completion"
        if self._form is None:
            self._form = form
        elif form != self._form:  # the template is chosen once per file (see templates.effective_template)
            raise ValueError(
                f"{where}: a {form} row after {self._form} rows; give every row of the data the same form"
            )
        if messages is not None:
            turns = _conversation(messages, o["messages_field"], where)
            text = "".join(f"{m['role']}: {m['content']}\n" for m in turns[:-1]) + "assistant: "  # display only
            return Example(id=example_id, prompt=text, answer=turns[-1]["content"], messages=tuple(turns[:-1]))
        return Example(
            id=example_id,
            prompt=_text(prompt, o["prompt_field"], where),
            answer=_text(completion, o["completion_field"], where),
        )


def _text(value: Any, field: str, where: str) -> str:
    """A non-empty text cell (numbers read as text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        got = "missing" if value is None else f"a {type(value).__name__}"
        raise ValueError(f"{where}: {field!r} is {got}, not text; fix that row or remove it")
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where}: {field!r} is empty; fill it in or remove that row")
    return text


def _conversation(messages: Any, field: str, where: str) -> list[dict[str, str]]:
    """The checked turns of a ``messages`` cell; the last one is the assistant's answer."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: {field!r} must be a non-empty list of {{role, content}} messages")
    turns = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES or "content" not in message:
            raise ValueError(
                f"{where}: message {i} of {field!r} is not a {{role, content}} mapping with role in "
                f"{', '.join(_ROLES)} (got {message!r:.80}); fix that row"
            )
        turns.append({"role": str(message["role"]), "content": _text(message["content"], f"{field}[{i}]", where)})
    if turns[-1]["role"] != "assistant" or len(turns) < 2:
        raise ValueError(
            f"{where}: {field!r} must end with the assistant's answer after at least one earlier turn (the last role "
            f"is {turns[-1]['role']!r}); add the answer or remove that row"
        )
    return turns
