"""`segloss.helptext` reads a dataclass's fields from source as Python builds them: the fields of the bases first,
an override in its parent's place, defaults and help texts through imports, aliases and class constants; what it
cannot read without running code is a `SourceLayoutError`."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from segloss import helptext
from segloss.helptext import SourceLayoutError, render_help, source_class

PACKAGE = {
    "__init__.py": """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            from .base import Base
        else:
            def __getattr__(name):  # imports lazily, as transformers and TRL do
                import importlib
                return getattr(importlib.import_module(".base", __name__), name)
        """,
    "base.py": """
        from dataclasses import dataclass, field
        from typing import Literal
        Mode = Literal["fast", "slow"]
        LIMIT = 7
        @dataclass
        class Base:
            size: int = field(default=LIMIT, metadata={"help": "How big " "it is.", "choices": sorted([1, 2])})
            mode: Mode = field(default="fast", metadata={"help": "Which way."})
            names: list[str] = field(default_factory=list, metadata={"help": "Names."})
            flag: bool | None = None
        """,
    "child.py": """
        from dataclasses import dataclass, field
        from toyconfig import Base
        @dataclass
        class Mixin:
            extra: dict[str, int] = field(default_factory=lambda: {"a": 1}, metadata={"help": "More."})
        @dataclass
        class Child(Mixin, Base):
            default_size = -3
            size: int = field(default=default_size, metadata={"help": "Smaller."})
            late: str = "x"
        """,
}


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package `toyconfig` on the path, whose classes Python can import as well (to compare)."""
    root = tmp_path / "toyconfig"
    root.mkdir()
    for name, text in PACKAGE.items():
        (root / name).write_text(textwrap.dedent(text))
    monkeypatch.syspath_prepend(str(tmp_path))
    helptext._load.cache_clear()
    helptext.source_class.cache_clear()
    yield root
    helptext._load.cache_clear()
    helptext.source_class.cache_clear()
    for name in [m for m in sys.modules if m.startswith("toyconfig")]:
        del sys.modules[name]


def test_fields_follow_pythons_order_overrides_and_defaults(toy: Path) -> None:
    read = source_class("toyconfig.child", "Child")
    assert "toyconfig.child" not in sys.modules  # read, not imported
    child = importlib.import_module("toyconfig.child").Child
    assert read.names == [f.name for f in dataclasses.fields(child)]  # Base's fields, Mixin's, then Child's own
    made = child()
    assert {f.name: f.default for f in read.fields} == {
        f.name: getattr(made, f.name) for f in dataclasses.fields(child)
    }
    assert {f.name: f.help for f in read.fields} == {
        f.name: f.metadata.get("help", "") for f in dataclasses.fields(child)
    }


def test_rendered_flags_metavars_and_defaults(toy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "119")
    text = render_help("toy", "A toy.", source_class("toyconfig.child", "Child").fields)
    words = " ".join(text.split())
    assert "--mode {fast,slow} Which way. (type: Literal['fast', 'slow'], default: fast)" in words
    assert "--names [ITEM,...], --names+ [ITEM,...] Names. (type: list[str], default: [])" in words
    assert "--flag [{true,false,null}] (type: bool | null, default: null)" in words
    assert "--size SIZE Smaller. (type: int, default: -3)" in words
    assert text.startswith("usage: toy [--config CONFIG] [--size SIZE] [--mode {fast,slow}]")


def test_code_that_must_run_is_a_source_layout_error(toy: Path) -> None:
    (toy / "bad.py").write_text(
        "from dataclasses import dataclass, field\nimport os\n\n@dataclass\nclass Bad:\n"
        "    path: str = field(default=os.getcwd())\n"
    )
    with pytest.raises(SourceLayoutError, match=r"os\.getcwd"):
        source_class("toyconfig.bad", "Bad")
    with pytest.raises(SourceLayoutError, match="Nope"):
        source_class("toyconfig.child", "Nope")


def test_train_config_is_read_as_python_builds_it() -> None:
    from segloss.training.config import TrainConfig

    read = source_class("segloss.training.config", "TrainConfig")
    real = [f for f in dataclasses.fields(TrainConfig) if f.init]
    assert read.names == [f.name for f in real]
    defaults = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default for f in real}
    assert {f.name: f.default for f in read.fields if f.init} == defaults
