"""Each shared fact is written once in the source: IGNORE_INDEX and the default λ in segloss/defaults.py, the
pad-token policy in `models.loading.ensure_pad_token`, and no module reaches into another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import segloss
from segloss import defaults, losses

SOURCE = Path(segloss.__file__).parent
FILES = {path.relative_to(SOURCE).as_posix(): ast.parse(path.read_text()) for path in sorted(SOURCE.rglob("*.py"))}


def _where(found) -> list[str]:
    return sorted({f"{name}:{node.lineno}" for name, tree in FILES.items() for node in ast.walk(tree) if found(node)})


def test_the_shared_values_are_the_ones_segloss_losses_exports() -> None:
    assert (losses.IGNORE_INDEX, losses.DEFAULT_CE_WEIGHT) == (defaults.IGNORE_INDEX, defaults.DEFAULT_CE_WEIGHT)
    assert (defaults.IGNORE_INDEX, defaults.DEFAULT_CE_WEIGHT) == (-100, 0.6)


def test_ignore_index_and_the_default_lambda_are_written_only_in_defaults() -> None:
    def minus_100(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.USub)
            and isinstance(node.operand, ast.Constant)
            and node.operand.value == 100
        )

    def lambda_06(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and type(node.value) is float and node.value == 0.6

    assert _where(minus_100) == ["defaults.py:8"]
    assert _where(lambda_06) == ["defaults.py:9"]


def test_only_ensure_pad_token_sets_a_pad_token() -> None:
    def sets_pad(node: ast.AST) -> bool:
        targets = node.targets if isinstance(node, ast.Assign) else []
        return any(isinstance(t, ast.Attribute) and t.attr == "pad_token" for t in targets)

    (place,) = _where(sets_pad)
    tree = FILES["models/loading.py"]
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "ensure_pad_token")
    assert place.startswith("models/loading.py:")
    assert function.lineno <= int(place.split(":")[1]) <= (function.end_lineno or 0)


def test_no_module_imports_or_reads_another_modules_private_names() -> None:
    found = []
    for name, tree in FILES.items():
        modules = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segloss"):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{name}:{node.lineno} imports {alias.name}")
                    modules.add(alias.asname or alias.name)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                found.append(f"{name}:{node.lineno} reads {node.value.id}.{node.attr}")
    assert found == []
