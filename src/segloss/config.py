"""Config dataclasses ⇄ YAML files ⇄ command-line flags, shared by every command.

Each command has one dataclass whose fields are declared with :func:`config_field` (a default and a help string)
and validated in ``__post_init__``. A YAML file mirrors the dataclass exactly (unknown keys are errors) and every
key is also a flag (``--max_steps``, or ``--max-steps``); flags override the file. One parser serves every command:
:func:`typed_parser` builds a jsonargparse parser from the dataclass (and, for `segloss grid`, a second dataclass of
run options) and :func:`parse_config` / :func:`parse_configs` / :func:`config_from_values` turn ``argv`` or a mapping
into the typed config, so every value from the YAML file, the flags or a mapping is checked against the field's
type (``learning_rate: 1e-4`` is a float, ``full_finetune: "no"`` is False, ``lora_r: [1]`` is an error naming
``lora_r``) and errors are ``ValueError``s naming the field, the file and the fix::

    config = parse_config(typed_parser(DemoConfig, prog="segloss demo"), DemoConfig, ["--n-seeds", "5"])
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from segloss.fileio import atomic_write
from segloss.helptext import CONFIG_HELP, SHORT_USAGE

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


def choice_error(field: str, value: Any, choices: Sequence[Any]) -> str:
    """The one message of a value outside a field's choices (a ``Literal`` type): ``field: 'x' is not one of a, b``."""
    return f"{field}: {value!r} is not one of {', '.join(map(str, choices))}"


def literal_choices(annotation: Any) -> tuple[Any, ...]:
    """The values of a ``Literal[...]`` annotation (also inside ``X | None``); empty for any other type."""
    annotation = _base_type(annotation)
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()


def check_choices(config: Any) -> None:
    """Check every ``Literal``-typed field of the dataclass ``config`` against its choices (``ValueError``:
    :func:`choice_error`). The parser checks them for YAML files, flags and mappings; this covers a config built
    in Python."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        hint = hints.get(f.name)
        choices, value = literal_choices(hint), getattr(config, f.name)
        if choices and value not in choices and not (value is None and type(None) in typing.get_args(hint)):
            raise ValueError(choice_error(f.name, value, choices))


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


def resolve_input_path(value: str | None, *, local_only: bool = False) -> str | None:
    """One spelling of an input path: ``~`` expanded, made absolute against the working directory, ``..``, symlinks
    and a trailing slash resolved away. ``local_only`` (a model, which may also be a hub id): a path that does not
    exist here is returned as given."""
    if not value:
        return value
    path = Path(value).expanduser()
    if local_only and not path.exists():
        return value
    return str(path.resolve())


def config_to_dict(config: Any) -> dict[str, Any]:
    if hasattr(config, "config_values"):  # configs holding more than plain fields (TrainConfig) say what to write
        return dict(config.config_values())
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(config).items()}


def save_yaml(config: Any, path: str | Path, command: str | None = None) -> None:
    """Write ``config`` as YAML (atomically); the first line is the command that runs it, when given."""
    header = f"# {command}\n" if command else ""
    atomic_write(path, header + yaml.safe_dump(config_to_dict(config), sort_keys=False))


# -- typed parsing (jsonargparse) -----------------------------------------------------------------------------------
def typed_parser(
    cls: type,
    *,
    prog: str | None = None,
    description: str | None = None,
    extra: Sequence[type] = (),
    groups: Mapping[str, str] | None = None,
) -> Any:
    """A jsonargparse parser of ``cls`` (and the ``extra`` dataclasses): ``--config FILE`` (YAML, repeatable) then
    one flag per field, flags win.

    Flags are the field names (``--max_steps``, as in `transformers`; ``--max-steps`` is accepted too); a bare bool
    flag means true (``--resume``, or ``--resume false``). Parse errors raise ``ValueError`` (no ``SystemExit``).
    A command may add positionals of its own with ``parser.add_argument``; :func:`parse_configs` hands them back.
    ``groups`` (field name → section title) moves those flags into titled sections of ``--help``, in the order the
    titles first appear, after the ungrouped flags (a command's own settings); the usage line then stays short.
    """
    import jsonargparse

    parser = jsonargparse.ArgumentParser(
        prog=prog,
        description=description,
        exit_on_error=False,
        allow_abbrev=False,  # `--learning_rat 3` must be an error, not learning_rate=3
        formatter_class=_help_formatter(),
    )
    parser.add_argument("--config", action=jsonargparse.ActionConfigFile, help=CONFIG_HELP)
    for each in (cls, *extra):
        parser.add_class_arguments(each, nested_key=None, as_group=False)
    fields = {f.name: f for each in (cls, *extra) for f in dataclasses.fields(each) if f.init}
    bools = set().union(*(_bool_fields(each) for each in (cls, *extra)))
    bools |= set().union(*(_names_fields(each) for each in (cls, *extra)))
    for action in parser._actions:  # argparse has no public accessor for its actions
        field = fields.get(action.dest)
        if field is None:
            continue
        action.help = field.metadata.get("help") or action.help
        if field.name in bools and action.nargs is None:
            action.nargs, action.const = "?", True  # `--resume` alone means true, as with store_true flags
    if groups:
        _group_help(parser, groups)
    return parser


def _group_help(parser: Any, groups: Mapping[str, str]) -> None:
    """Move the flags named in ``groups`` from the main options section into titled sections (help output only:
    parsing does not depend on sections). argparse has no public API to regroup actions."""
    sections: dict[str, Any] = {}
    main = parser._optionals
    for action in list(main._group_actions):
        title = groups.get(action.dest.split(".")[0])  # `--x.help` of a class-typed field goes with `--x`
        if title is None:
            continue
        if title not in sections:
            sections[title] = parser.add_argument_group(title)
        main._group_actions.remove(action)
        sections[title]._group_actions.append(action)
    main.title = f"{parser.prog} options"
    parser.usage = SHORT_USAGE


def wants_help(argv: Sequence[str]) -> bool:
    """``-h``/``--help`` among the arguments (argparse prints the help for it wherever it stands)."""
    return any(arg in ("-h", "--help") for arg in argv)


def exit_with_help(argv: Sequence[str], text: Callable[[], str], build: Callable[[], Any]) -> None:
    """With ``-h``/``--help`` in ``argv``: print ``text()`` and exit 0 (as argparse does); otherwise return.

    For the commands whose parser imports torch/transformers (`segloss train`, `segloss eval`): ``text()`` renders
    the help from the config classes' source (`segloss.helptext`, no import of them) in a fraction of a second. If
    it fails, the parser ``build()`` makes prints it: slower (seconds of imports), never wrong.
    """
    if not wants_help(argv):
        return
    try:
        help_text = text()
    except Exception:  # any surprise in the installed sources: the real parser's help instead
        help_text = str(build().format_help())
    print(help_text, end="")
    raise SystemExit(0)


def docstring_sections(cls: type, prefix: str = "") -> dict[str, str]:
    """Field name → section title, from the ``> Title`` lines that group the parameters of ``cls``'s docstring (the
    layout of `transformers.TrainingArguments`); fields before the first title, or not documented, are left out."""
    return _docstring_sections(cls.__doc__ or "", set(field_names(cls)), prefix)


def _docstring_sections(doc: str, fields: Collection[str], prefix: str = "") -> dict[str, str]:
    import inspect

    sections: dict[str, str] = {}
    title = None
    # Indentation relative to the docstring's own (Python 3.13 strips it from __doc__, not from the source).
    for line in inspect.cleandoc(doc).splitlines():
        if line[:4].strip() or line[4:5] in ("", " "):  # titles and parameters sit at 4 spaces; notes deeper
            continue
        text = line.strip()
        if text.startswith("> "):
            title = prefix + text[2:].strip()
            continue
        name = re.match(r"(\w+)\s*\(", text)
        if title is not None and name and name[1] in fields:
            sections.setdefault(name[1], title)
    return sections


# `segloss train --help`: the Trainer's flags in the sections of `TrainingArguments`' documentation, then TRL's own.
TRAIN_HELP_SECTIONS = (("TrainingArguments", "Trainer: "), ("SFTConfig", "TRL SFT: "))


def train_help_groups(
    fields: Sequence[str], own: Collection[str], documented: Mapping[str, tuple[str, Collection[str]]]
) -> dict[str, str]:
    """Field → help section of `segloss train`'s flags: every field of ``fields`` but segloss's ``own`` (and
    ``output_dir``, which users set on every run) goes into the section its class's docstring puts it in.

    ``documented``: class name of :data:`TRAIN_HELP_SECTIONS` → (its docstring, its field names); read from the
    classes (`training.config.train_parser`) or from their source (`segloss.helptext`), so both helps agree.
    """
    sections: dict[str, str] = {}
    for name, prefix in TRAIN_HELP_SECTIONS:  # a later class's title wins (TRL's own fields after the Trainer's)
        sections.update(_docstring_sections(*documented[name], prefix=prefix))
    own = {*own, "output_dir"}
    return {name: sections.get(name, "Trainer: other") for name in fields if name not in own}


def _bool_fields(cls: type) -> set[str]:
    hints = typing.get_type_hints(cls)
    return {f.name for f in dataclasses.fields(cls) if f.init and _base_type(hints[f.name]) is bool}


def _names_fields(cls: type) -> set[str]:
    """Fields typed ``bool | list[str]``: the flag alone means true, ``--flag a b`` or ``--flag a,b`` names items."""
    hints = typing.get_type_hints(cls)
    return {f.name for f in dataclasses.fields(cls) if f.init and hints[f.name] == (bool | list[str])}


def _gather_names(argv: Sequence[str], names: set[str]) -> list[str]:
    """``--flag a b`` and ``--flag a,b`` → ``--flag=[a, b]`` for the ``bool | list[str]`` fields ``names``;
    ``--flag``, ``--flag true`` and ``--flag '[a, b]'`` are left as they are."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        flag, sep, value = argv[i].partition("=")
        i += 1
        if not (flag.startswith("--") and flag[2:] in names):
            out.append(argv[i - 1])
            continue
        values = [value] if sep else []
        while not sep and i < len(argv) and not argv[i].startswith("-"):
            values.append(argv[i])
            i += 1
        if not values:
            out.append(flag)
        elif len(values) == 1 and (values[0].strip().lower() in _YAML_BOOLS or values[0].lstrip().startswith("[")):
            out.append(f"{flag}={values[0]}")
        else:
            items = [item.strip() for text in values for item in text.split(",") if item.strip()]
            out.append(f"{flag}=[{', '.join(items)}]")
    return out


_YAML_BOOLS = {"true", "false", "yes", "no", "on", "off"}


def _help_formatter() -> Any:
    import jsonargparse

    class Formatter(jsonargparse.DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """Keeps the command docstring's line breaks (its example invocations)."""

    return Formatter


def parse_config(parser: Any, cls: type[C], argv: Sequence[str]) -> C:
    """``cls`` from the command line ``argv`` (``--config FILE`` + flags) through ``typed_parser(cls)``."""
    (config,), _ = parse_configs(parser, [cls], argv)
    return config


def parse_configs(parser: Any, classes: Sequence[type], argv: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """One instance per dataclass of ``classes`` (those ``parser`` was built from), and the parser's other values
    (a command's positionals) as a dict."""
    names = set().union(*(_names_fields(cls) for cls in classes))
    bools = set().union(*(_bool_fields(cls) for cls in classes)) | names
    argv = _gather_names([_old_flag_spelling(a, bools) for a in argv], names)
    files = _config_files(argv)
    # A value may come from a file or a flag: name both, never blame the file for a flag.
    source = f"from {' or '.join([*files, 'the command line'])}" if files else "command line"
    try:
        namespace = parser.parse_args(argv)
    except argparse.ArgumentError as err:
        raise ValueError(_parse_error(err, files)) from None
    values = namespace.as_dict()
    values.pop("config", None)
    values.pop("__path__", None)
    configs: list[Any] = []
    for cls in classes:
        own = {name: values.pop(name) for name in field_names(cls) if name in values}
        configs.append(_instantiate(cls, own, source))
    return configs, values


def config_from_values(cls: type[C], values: Mapping[str, Any], source: str = "config") -> C:
    """``cls`` from a mapping (a grid cell's settings, a run's config.yaml), typed exactly like a YAML file."""
    parser = _values_parser(typing.cast(type, cls))  # (mypy cannot tell that a type[C] is hashable)
    try:
        namespace = parser.parse_object(dict(values))
    except argparse.ArgumentError as err:
        raise ValueError(_parse_error(err, [source], command_line=False)) from None
    return _instantiate(cls, namespace.as_dict(), source)


@functools.lru_cache(maxsize=32)
def _values_parser(cls: type) -> Any:
    """One parser per class for :func:`config_from_values`: building it takes about as long as parsing with it, and a
    grid checks every cell's settings before it starts (``parse_object`` leaves the parser as it was)."""
    return typed_parser(cls)


def _instantiate(cls: type[C], values: dict[str, Any], source: str) -> C:
    values.pop("config", None)
    values.pop("__path__", None)
    try:
        return cls(**values)
    except ValueError as err:
        raise ValueError(f"{err} ({source})") from None


def _old_flag_spelling(arg: str, bools: set[str]) -> str:
    """The argparse spellings keep working: ``--max-steps=3`` → ``--max_steps=3``, ``--no-resume`` →
    ``--resume=false``."""
    if not arg.startswith("--"):
        return arg
    name, sep, value = arg.partition("=")
    name = name[2:].replace("-", "_")
    if not sep and name.startswith("no_") and name[3:] in bools:
        return f"--{name[3:]}=false"
    return "--" + name + sep + value


def _config_files(argv: Sequence[str]) -> list[str]:
    """The ``--config`` files of ``argv``; a missing one raises ``FileNotFoundError`` before anything is parsed."""
    files = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    files += [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    for name in files:
        if not Path(name).is_file():
            raise FileNotFoundError(f"config file not found: {name}; check the path given to --config")
        _check_config_text(name)
    return files


def _check_config_text(name: str) -> None:
    """An empty file or one that is not a mapping, named; YAML syntax errors are left to the parser (it names the
    line)."""
    try:
        values = yaml.safe_load(Path(name).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return
    if values is None:
        raise ValueError(
            f"{name}: the config file is empty (no settings); write one `field: value` per line (e.g. `model: PATH`) "
            "or leave out --config"
        )
    if not isinstance(values, dict):
        raise ValueError(
            f"{name}: a config file must be a mapping of `field: value` lines, got a {type(values).__name__}"
        )


def _yaml_scalar(text: str) -> Any:
    """The value jsonargparse quotes in its message, as YAML reads it (``3`` → 3, ``plain`` → 'plain')."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _parse_error(err: Exception, files: Sequence[str], *, command_line: bool = True) -> str:
    """One readable line from jsonargparse's message, naming the field, where its value came from and the fix
    (``command_line``: flags were given too, so the value may come from either)."""
    message = " ".join(str(err).split())
    where = " or ".join([*files, "the command line"] if command_line else files)
    key = re.search(r'Parser key "([^"]+)"', message)
    choices = re.search(r"typing\.Literal\[([^\]]*)\]", message)
    given = re.search(r"(?:Got|Given) value: (.*)$", message)
    if key and choices and given:  # a value outside a Literal field's choices
        detail = choice_error(key[1], _yaml_scalar(given[1]), ast.literal_eval(f"[{choices[1]}]"))
        return f"{detail} (from {where}); fix `{key[1]}:` in the YAML or pass --{key[1]} VALUE"
    if key:
        detail = message.split(":", 1)[1].strip() if ":" in message else message
        return f"{key[1]}: {detail} (from {where}); fix `{key[1]}:` in the YAML or pass --{key[1]} VALUE"
    unknown = re.search(r"Option '([^']+)' is not accepted|unrecognized arguments: (.*)", message, re.IGNORECASE)
    if unknown:
        names = [unknown[1]] if unknown[1] else [a for a in unknown[2].split() if a.startswith("-")]
        return f"{where}: unknown key(s) {names}; remove them or fix the spelling (`--help` lists the valid keys)"
    if "Problems parsing config" in message:
        message = message.replace('"<unicode string>"', where)
        return f"{where}: not valid YAML — {message.split(':', 1)[1].strip()}; fix the syntax at that line"
    return f"{message} (from {where})"
