"""The API reference's griffe extension: attrs classes get the `__init__` attrs makes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import griffe
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = f"{ROOT / 'tools' / 'griffe_attrs.py'}:AttrsInit"

SOURCE = '''
from __future__ import annotations

import attrs


def _now() -> float:
    return 0.0


@attrs.frozen
class Value:
    """A value."""

    name: str
    size: int = 0
    stamp: float = attrs.field(factory=_now)
    tags: list[str] = attrs.field(factory=lambda: ["x"])
    hidden: int = attrs.field(init=False, default=1)
    label: str = attrs.field(default="", kw_only=True)


@attrs.define
class Service:
    """A service whose private field is set through its alias."""

    _conn: object
    """The connection."""


class Plain:
    """Not an attrs class."""

    value: int = 3
'''


def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> griffe.Module:
    package = tmp_path / "attrs_sample"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(SOURCE))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = griffe.load(
        "attrs_sample",
        search_paths=[str(tmp_path)],
        extensions=griffe.load_extensions(EXTENSION),
    )
    assert isinstance(module, griffe.Module)
    return module


def signature(cls: griffe.Object | griffe.Alias) -> list[tuple[str, str, str | None]]:
    init = cls.members["__init__"]
    assert isinstance(init, griffe.Function)
    return [
        (p.name, p.kind.value if p.kind else "", None if p.default is None else str(p.default))
        for p in init.parameters
    ]


def test_attrs_classes_get_the_generated_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load(tmp_path, monkeypatch)
    assert signature(module["Value"]) == [
        ("self", "positional or keyword", None),
        ("name", "positional or keyword", None),
        ("size", "positional or keyword", "0"),
        ("stamp", "positional or keyword", "_now()"),
        ("tags", "positional or keyword", "<factory>"),
        ("label", "keyword-only", "''"),
    ]
    init = module["Value.__init__"]
    assert isinstance(init, griffe.Function)
    assert str(init.parameters["name"].annotation) == "str"


def test_private_fields_take_their_alias_and_docstring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load(tmp_path, monkeypatch)
    assert signature(module["Service"]) == [
        ("self", "positional or keyword", None),
        ("conn", "positional or keyword", None),
    ]
    init = module["Service.__init__"]
    assert isinstance(init, griffe.Function)
    docstring = init.parameters["conn"].docstring
    assert docstring is not None
    assert docstring.value == "The connection."


def test_other_classes_are_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load(tmp_path, monkeypatch)
    assert "__init__" not in module["Plain"].members
