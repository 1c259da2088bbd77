"""Config dataclasses ⇄ YAML files ⇄ command-line flags, shared by every command.

Each command has one dataclass whose fields are declared with :func:`config_field` (a default and a help string)
and validated in ``__post_init__``. A YAML file mirrors the dataclass exactly (unknown keys are errors) and every
key is also a flag (``max_steps`` → ``--max-steps``); flags override the file::

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, TrainConfig)
    config = config_from_args(TrainConfig, parser.parse_args())
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from segloss.fileio import atomic_write

C = TypeVar("C")


def config_field(default: Any, help: str) -> Any:
    """A dataclass field with a help string; mutable defaults are copied per instance."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def _base_type(annotation: Any) -> Any:
    """`int | None` → int; other unions and containers are returned as they are."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _parse_value(text: str) -> Any:
    # Lists, mappings and mixed types come from the command line as YAML: `[1, 2]`, `{ce: 0.6}`.
    return yaml.safe_load(text)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``--config`` and one flag per field of ``cls``; unset flags stay absent from the namespace."""
    parser.add_argument("--config", type=Path, default=None, help="YAML file mirroring the config; flags override it.")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[operator]
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})"
        if kind is bool:
            parser.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text
            )
        else:
            convert = kind if kind in (int, float, str) else (str if kind is Path else _parse_value)
            parser.add_argument(flag, dest=f.name, type=convert, default=argparse.SUPPRESS, help=help_text)


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


def check_keys(cls: type, values: dict[str, Any], source: str) -> None:
    """Reject keys that are not fields of ``cls``, naming them and the valid ones."""
    unknown = sorted(set(values) - set(field_names(cls)))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {field_names(cls)}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file must be a mapping of field: value, got {type(values).__name__}")
    return values


def config_from_dict(cls: type[C], values: dict[str, Any], source: str = "config") -> C:
    check_keys(cls, values, source)
    return cls(**values)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """Build ``cls`` from ``--config`` (if given) overridden by the flags that were set."""
    values: dict[str, Any] = {}
    config_path = getattr(args, "config", None)
    if config_path is not None:
        values.update(load_yaml(config_path))
        check_keys(cls, values, str(config_path))
    values.update({k: v for k, v in vars(args).items() if k in field_names(cls)})
    return config_from_dict(cls, values, str(config_path or "command line"))


def config_to_dict(config: Any) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}


def save_yaml(config: Any, path: str | Path, command: str | None = None) -> None:
    """Write ``config`` as YAML (atomically); the first line is the command that runs it, when given."""
    header = f"# {command}\n" if command else ""
    atomic_write(path, header + yaml.safe_dump(config_to_dict(config), sort_keys=False))
