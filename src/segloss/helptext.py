"""The ``--help`` of a config dataclass, read from the source files of its classes instead of importing them.

`segloss train`'s config is TRL's `SFTConfig`, a `transformers.TrainingArguments`: importing those classes imports
torch, transformers' model stack and PEFT (7-12 s on the project's 2-core machine) to print text that is written in
their source. A dataclass field is one line of its class body: name, annotation, default and ``metadata={"help": ...}``
(``config_field(default, help=...)`` in segloss). :func:`source_class` reads them with `ast` from the files the
import system would load (found through ``importlib.util.find_spec`` of the top-level package, which imports
nothing), follows the base classes in Python's method resolution order (a subclass's field replaces its parent's in
the parent's place, as `dataclasses` does) and the names the annotations and defaults use through ``from … import``
statements, also those under ``if TYPE_CHECKING:`` of the packages that import lazily. :func:`render_help` prints
them as the jsonargparse parser of `segloss.config.typed_parser` does: the same flags, help texts, defaults,
metavars and sections, through plain argparse; only the type is spelled as written in the source (``X | null``).

Anything it does not recognise (a default computed by a call, a field without a default, an enum-typed flag, a
class it cannot find) raises :class:`SourceLayoutError`; `segloss.config.exit_with_help` then builds the real parser.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import dataclasses
import functools
import importlib.util
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

# What `segloss.config._group_help` sets for a command whose flags sit in sections (`segloss train`).
SHORT_USAGE = "%(prog)s [-h] [--config FILE] [--print_config] [--FIELD VALUE ...]"
CONFIG_HELP = "YAML file of settings; flags win."  # the `--config` flag of `segloss.config.typed_parser`
# jsonargparse's own options, which every typed parser has before the fields.
_PRINT_CONFIG_HELP = (
    "Print the configuration after applying all other arguments and exit. The optional flags customizes the output "
    "and are one or more keywords separated by comma. The supported flags are: skip_default, skip_unset."
)
_SEQUENCES = {"list", "List", "Sequence", "MutableSequence", "Collection", "Iterable", "Deque", "deque"}
_COLLECTIONS = _SEQUENCES | {"tuple", "Tuple", "set", "Set", "frozenset", "AbstractSet", "MutableSet"}


class SourceLayoutError(ValueError):
    """The source of a config class holds something :mod:`segloss.helptext` does not read."""


@dataclasses.dataclass(frozen=True, eq=False)
class _Module:
    name: str  # dotted module name
    tree: ast.Module
    package: str  # what a relative import starts from

    def bound(self, name: str) -> list[tuple[str, Any]]:
        """(kind, what) of every statement of the module that binds ``name`` at its top level, in order."""
        return self._index.get(name, [])

    @functools.cached_property
    def _index(self) -> dict[str, list[tuple[str, Any]]]:
        index: dict[str, list[tuple[str, Any]]] = {}
        for name, kind, what in _bindings(self, self.tree.body):
            index.setdefault(name, []).append((kind, what))
        return index


@dataclasses.dataclass(frozen=True)
class SourceField:
    """One dataclass field as its source states it; ``annotation`` is read in ``module``'s names."""

    name: str
    annotation: ast.expr
    module: _Module
    default: Any
    help: str
    init: bool = True


@dataclasses.dataclass(frozen=True)
class SourceClass:
    """A dataclass read from source: its docstring and every field, bases' first (the order of `dataclasses`)."""

    name: str
    doc: str
    fields: tuple[SourceField, ...]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.fields if f.init]


@functools.cache
def _load(name: str) -> _Module:
    """The parsed source of module ``name``, located without importing it (nor, unlike ``find_spec(name)``, its
    parent packages)."""
    top, *rest = name.split(".")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
        spec = None
    if spec is None or spec.origin is None:
        raise SourceLayoutError(f"cannot find the source of {name}")
    path, is_package = Path(spec.origin), bool(spec.submodule_search_locations)
    if rest:
        if not is_package:
            raise SourceLayoutError(f"cannot find the source of {name}: {top} is no package")
        base = path.parent.joinpath(*rest)
        path, is_package = (
            (base / "__init__.py", True) if (base / "__init__.py").is_file() else (base.with_suffix(".py"), False)
        )
    try:
        tree = ast.parse(_read_source(path), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as err:
        raise SourceLayoutError(f"cannot read the source of {name}: {err}") from None
    return _Module(name, tree, name if is_package else name.rpartition(".")[0])


def _read_source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _bindings(module: _Module, body: Sequence[ast.stmt]) -> Iterator[tuple[str, str, Any]]:
    """(name, kind, what) of every statement of ``body`` that binds a name, in order, ``if``/``try`` blocks
    included."""
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            yield node.name, ("class" if isinstance(node, ast.ClassDef) else "function"), node
        elif isinstance(node, ast.Assign):
            yield from ((t.id, "value", node.value) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            yield node.target.id, "value", node.value
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            yield from ((a.asname or a.name, "import", (source, a.name)) for a in node.names)
        elif isinstance(node, ast.Import):
            yield from ((a.asname or a.name, "module", a.name) for a in node.names)
        elif isinstance(node, (ast.If, ast.Try)):  # `if TYPE_CHECKING:`, `if is_x_available(): … else: …`
            for block in (node.body, *(h.body for h in getattr(node, "handlers", ())), node.orelse):
                yield from _bindings(module, block)


def _absolute(module: _Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.package.split(".")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _is_stdlib(name: str) -> bool:
    top = name.split(".")[0]
    return top in sys.stdlib_module_names or top == "__future__"


@dataclasses.dataclass(frozen=True, eq=False)
class _Found:
    """What a name stands for: ``kind`` class | function | value (``node`` in ``module``), external (a standard
    library name, ``qualname`` e.g. ``typing.Literal``) or builtin."""

    kind: str
    module: _Module | None = None
    node: Any = None
    qualname: str = ""


def _resolve(module: _Module, name: str, depth: int = 0) -> _Found:
    if depth > 30:
        raise SourceLayoutError(f"{module.name}: {name} is imported in a cycle")
    for kind, what in module.bound(name):
        if kind in ("import", "module"):
            source, attr = what if kind == "import" else (what, "")
            if _is_stdlib(source):
                return _Found("external", qualname=f"{source}.{attr}" if attr else source)
            if kind == "module":
                raise SourceLayoutError(f"{module.name}: {name} is a module")
            try:
                target = _load(source)
            except SourceLayoutError:  # an optional dependency that is not installed: the next binding holds
                continue
            return _resolve(target, attr, depth + 1)
        return _Found(kind, module, what)
    if hasattr(builtins, name):
        return _Found("builtin", qualname=name)
    raise SourceLayoutError(f"{module.name}: cannot find what {name} is")


def _typing_name(module: _Module, node: ast.expr) -> str:
    """``Optional``, ``list``, ``Literal``… for a (subscripted) type name; "" for a class of a package."""
    if isinstance(node, ast.Subscript):
        return _typing_name(module, node.value)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        found = _resolve(module, node.value.id)
        return node.attr if found.kind == "external" else ""
    if isinstance(node, ast.Name):
        found = _resolve(module, node.id)
        if found.kind in ("builtin", "external"):
            return found.qualname.rpartition(".")[2]
    return ""


# -- values -----------------------------------------------------------------------------------------------------------
def _value(module: _Module, node: ast.expr, scope: Mapping[str, ast.expr] | None = None) -> Any:
    """The constant ``node`` stands for: literals, names of module or class constants (``scope``), ``-x``, string
    ``+``; anything computed raises :class:`SourceLayoutError`."""
    if isinstance(node, ast.Constant):
        return node.value
    scope = scope or {}
    if isinstance(node, ast.Name):
        if node.id in scope:
            return _value(module, scope[node.id])
        found = _resolve(module, node.id)
        if found.kind == "value" and found.module is not None:
            return _value(found.module, found.node)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _value(module, node.operand, scope)
        return -value if isinstance(node.op, ast.USub) else +value
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _value(module, node.left, scope) + _value(module, node.right, scope)
    elif isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_value(module, e, scope) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    elif isinstance(node, ast.Dict) and None not in node.keys:
        return {
            _value(module, k, scope): _value(module, v, scope)
            for k, v in zip(node.keys, node.values, strict=True)
            if k
        }
    raise SourceLayoutError(f"{module.name}: cannot read the value {ast.unparse(node)!r} without running it")


def _factory_value(module: _Module, node: ast.expr) -> Any:
    """What ``default_factory=`` makes: ``list``/``dict``/``set`` or ``lambda: <constant>``."""
    if isinstance(node, ast.Lambda):
        return _value(module, node.body)
    if isinstance(node, ast.Name) and node.id in ("list", "dict", "set", "tuple"):
        return getattr(builtins, node.id)()
    raise SourceLayoutError(f"{module.name}: cannot read the default factory {ast.unparse(node)!r}")


def _field(module: _Module, node: ast.AnnAssign, scope: Mapping[str, ast.expr]) -> SourceField:
    name = node.target.id if isinstance(node.target, ast.Name) else ""
    value = node.value
    if value is None:
        raise SourceLayoutError(f"{module.name}: field {name} has no default")
    function = (
        _resolve(module, value.func.id) if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) else None
    )
    if function is None or not isinstance(value, ast.Call):  # `name: int = 3`
        return SourceField(name, node.annotation, module, _value(module, value, scope), "")
    kwargs = {k.arg: k.value for k in value.keywords if k.arg}
    if function.kind == "function" and function.module and function.module.name == "segloss.config":
        if function.node.name != "config_field" or len(value.args) != 1 or "help" not in kwargs:
            raise SourceLayoutError(f"{module.name}: field {name}: {ast.unparse(value)!r}")
        return SourceField(
            name, node.annotation, module, _value(module, value.args[0], scope), _value(module, kwargs["help"], scope)
        )
    if function.qualname != "dataclasses.field" or value.args:
        raise SourceLayoutError(f"{module.name}: field {name} is set by {ast.unparse(value.func)}")
    if "default" in kwargs:
        default = _value(module, kwargs["default"], scope)
    elif "default_factory" in kwargs:
        default = _factory_value(module, kwargs["default_factory"])
    else:
        raise SourceLayoutError(f"{module.name}: field {name} has no default")
    init = _value(module, kwargs["init"], scope) if "init" in kwargs else True
    return SourceField(name, node.annotation, module, default, _metadata_help(module, kwargs, scope), bool(init))


def _metadata_help(module: _Module, kwargs: Mapping[str, ast.expr], scope: Mapping[str, ast.expr]) -> str:
    """``metadata={"help": ...}``; its other keys (argparse's ``choices``…) are for HfArgumentParser, unread."""
    metadata = kwargs.get("metadata")
    if metadata is None:
        return ""
    if not isinstance(metadata, ast.Dict):
        raise SourceLayoutError(f"{module.name}: cannot read the metadata {ast.unparse(metadata)!r}")
    for key, value in zip(metadata.keys, metadata.values, strict=True):
        if isinstance(key, ast.Constant) and key.value == "help":
            return str(_value(module, value, scope))
    return ""


# -- classes ----------------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class _Class:
    module: _Module
    node: ast.ClassDef

    @property
    def key(self) -> tuple[str, str]:
        return self.module.name, self.node.name


def _find_class(module: _Module, name: str) -> _Class:
    found = _resolve(module, name)
    if found.kind != "class" or found.module is None:
        raise SourceLayoutError(f"{module.name}: {name} is no class")
    return _Class(found.module, found.node)


def _bases(cls: _Class) -> list[_Class]:
    """The base classes defined in packages' source (``object``, ``Enum`` and other standard ones add no fields)."""
    bases = []
    for base in cls.node.bases:
        if not isinstance(base, ast.Name):
            raise SourceLayoutError(f"{cls.module.name}: base {ast.unparse(base)} of {cls.node.name}")
        found = _resolve(cls.module, base.id)
        if found.kind == "class" and found.module is not None:
            bases.append(_Class(found.module, found.node))
        elif found.kind not in ("builtin", "external"):
            raise SourceLayoutError(f"{cls.module.name}: base {base.id} of {cls.node.name} is no class")
    return bases


def _mro(cls: _Class) -> list[_Class]:
    """Python's C3 linearisation of ``cls`` and its bases."""
    bases = _bases(cls)
    pending = [s for s in [*(_mro(b) for b in bases), bases] if s]
    order = [cls]
    while pending:
        head = next((s[0] for s in pending if not any(s[0].key in [c.key for c in t[1:]] for t in pending)), None)
        if head is None:
            raise SourceLayoutError(f"{cls.module.name}: no method resolution order for {cls.node.name}")
        order.append(head)
        pending = [rest for s in pending if (rest := [c for c in s if c.key != head.key])]
    return order


def _is_dataclass(cls: _Class) -> bool:
    names = [ast.unparse(d.func if isinstance(d, ast.Call) else d) for d in cls.node.decorator_list]
    return any(n in ("dataclass", "dataclasses.dataclass") for n in names)


def _own_fields(cls: _Class) -> list[SourceField]:
    body = cls.node.body
    scope = {t.id: n.value for n in body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return [
        _field(cls.module, node, scope)
        for node in body
        if isinstance(node, ast.AnnAssign) and "ClassVar" not in ast.unparse(node.annotation)
    ]


@functools.cache
def source_class(module: str, name: str) -> SourceClass:
    """The dataclass ``name`` as module ``module`` sees it (defined or imported there), read from source."""
    cls = _find_class(_load(module), name)
    fields: dict[str, SourceField] = {}
    for each in reversed(_mro(cls)):
        if _is_dataclass(each):
            fields.update((f.name, f) for f in _own_fields(each))  # an override keeps the parent's place
    return SourceClass(name, ast.get_docstring(cls.node, clean=False) or "", tuple(fields.values()))


# -- flags ------------------------------------------------------------------------------------------------------------
def _members(module: _Module, node: ast.expr) -> list[tuple[_Module, ast.expr]]:
    """The members of a union annotation (``X | Y``, ``Optional[X]``, ``Union[X, Y]``), type aliases expanded."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):  # a quoted annotation
        return _members(module, ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _members(module, node.left) + _members(module, node.right)
    origin = _typing_name(module, node) if isinstance(node, (ast.Subscript, ast.Name, ast.Attribute)) else ""
    if isinstance(node, ast.Subscript) and origin in ("Optional", "Union"):
        args = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        extra = [(module, ast.Constant(None))] if origin == "Optional" else []
        return [m for arg in args for m in _members(module, arg)] + extra
    if isinstance(node, ast.Name):
        found = _resolve(module, node.id)
        if found.kind == "value" and found.module is not None:  # `TorchDtype = Literal[...]`
            return _members(found.module, found.node)
    return [(module, node)]


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _class_kind(module: _Module, node: ast.expr) -> str:
    """``enum``, ``dataclass`` or ``class`` for a name of a class in a package's source; "" otherwise."""
    if not isinstance(node, ast.Name):
        return ""
    found = _resolve(module, node.id)
    if found.kind != "class" or found.module is None:
        return ""
    cls = _Class(found.module, found.node)
    for each in _mro(cls):
        for base in each.node.bases:
            if isinstance(base, ast.Name) and _resolve(each.module, base.id).qualname.startswith("enum."):
                return "enum"
    return "dataclass" if _is_dataclass(cls) else "class"


def _option(field: SourceField) -> list[argparse.Action]:
    """The flag of ``field`` as jsonargparse adds it (and a ``--name.help`` flag before it for a class type)."""
    members = _members(field.module, field.annotation)
    types = [(m, n) for m, n in members if not _is_none(n)]
    nullable = len(types) < len(members)
    origins = [_typing_name(m, n) for m, n in types]
    text = " | ".join([ast.unparse(n) for _, n in types] + ["null"] * nullable)
    flags, metavar, nargs = [f"--{field.name}"], None, None
    if any(o in _SEQUENCES for o in origins):  # `--x+ item` appends to a list
        flags.append(f"--{field.name}+")
    if origins == ["bool"]:
        metavar, nargs = ("{true,false,null}" if nullable else "{true,false}"), "?"
    elif sorted(ast.unparse(n) for _, n in types) == ["bool", "list[str]"] and not nullable:
        nargs = "?"  # segloss's `bool | list[str]` fields: the flag alone means true
    elif len(types) == 1 and not nullable and origins[0] == "Literal":
        module, node = types[0]
        values = _value(module, node.slice) if isinstance(node, ast.Subscript) else ()
        values = values if isinstance(values, tuple) else (values,)
        metavar = "{" + ",".join("null" if v is None else str(v) for v in values) + "}"
    elif len(types) == 1 and not nullable and origins[0] in _COLLECTIONS:
        metavar = "[ITEM,...]"
    default = "null" if field.default is None else str(field.default)
    actions = _class_help(field, types)
    help_text = f"{field.help} (type: {text}, default: {default})"
    actions.append(argparse.Action(flags, field.name, nargs=nargs, metavar=metavar, help=help_text))
    return actions


def _class_help(field: SourceField, types: list[tuple[_Module, ast.expr]]) -> list[argparse.Action]:
    """jsonargparse's ``--name.help`` flag of a field typed by a dataclass (it prints that class's fields)."""
    if len(types) == 1 and _class_kind(*types[0]) == "enum":
        raise SourceLayoutError(f"field {field.name}: an enum-typed flag")  # its metavar would list the members
    names = [(n, _class_kind(m, n)) for m, t in types for n in ast.walk(t) if isinstance(n, ast.Name)]
    classes = [(n, kind) for n, kind in names if kind in ("class", "dataclass")]
    if not classes:
        return []
    if len(classes) > 1 or classes[0][1] != "dataclass":
        raise SourceLayoutError(f"field {field.name}: a class-typed flag other than one dataclass")
    name = classes[0][0].id if isinstance(classes[0][0], ast.Name) else ""
    dest = f"{field.name}.help"
    return [argparse.Action([f"--{dest}"], dest, nargs=0, help=f"Show the help for {name} and exit.")]


# -- rendering --------------------------------------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks; help texts are printed as written (no ``%`` formatting, as
    jsonargparse prints them)."""

    def _expand_help(self, action: argparse.Action) -> str:
        return str(action.help)


def render_help(
    prog: str, description: str | None, fields: Sequence[SourceField], groups: Mapping[str, str] | None = None
) -> str:
    """The ``--help`` text of ``typed_parser(cls, prog=prog, description=description, groups=groups)`` from the
    fields :func:`source_class` read: ``-h``, ``--config``, ``--print_config``, then one flag per field; the fields
    named in ``groups`` in titled sections, in the order the titles first appear, after the others."""
    top = [
        argparse.Action(["-h", "--help"], "help", nargs=0, help="Show this help message and exit."),
        argparse.Action(["--config"], "config", help=CONFIG_HELP),
        argparse.Action(["--print_config"], "print_config", nargs=1, metavar="\b[=flags]", help=_PRINT_CONFIG_HELP),
    ]
    groups = groups or {}
    main = f"{prog} options" if groups else "options"
    sections: dict[str, list[argparse.Action]] = {main: list(top)}
    fields_actions = []
    for field in fields:
        if field.init:
            actions = _option(field)
            fields_actions.append(actions[-1])
            sections.setdefault(groups.get(field.name, main), []).extend(actions)
    formatter = _Formatter(prog)
    usage_actions = [top[1], *fields_actions]
    formatter.add_usage(SHORT_USAGE if groups else None, usage_actions, [])
    formatter.add_text(description)
    for title, actions in sections.items():
        formatter.start_section(title)
        formatter.add_arguments(actions)
        formatter.end_section()
    return formatter.format_help()
