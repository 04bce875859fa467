"""Every public name is exported, sorted, documented and (for concrete classes) final."""

from __future__ import annotations

import enum
import importlib
import inspect
from pathlib import Path
from typing import Protocol

import pytest

MODULES = [
    "cardmill",
    "cardmill.engine",
    "cardmill.storage",
    "cardmill.providers",
    "cardmill.testing",
]
DOCS = (
    "\n".join(p.read_text() for p in (Path(__file__).parents[1] / "docs").glob("*.md"))
    + (Path(__file__).parents[1] / "README.md").read_text()
)


def public(module_name: str) -> list[tuple[str, object]]:
    module = importlib.import_module(module_name)
    return [(name, getattr(module, name)) for name in module.__all__]


@pytest.mark.parametrize("module_name", MODULES)
def test_all_is_unique_and_resolves(module_name: str) -> None:
    # ruff (RUF022) keeps each __all__ sorted, constants first.
    module = importlib.import_module(module_name)
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert hasattr(module, name), name


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_is_documented(module_name: str) -> None:
    for name, obj in public(module_name):
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{module_name}.{name} has no docstring"
        assert f"`{name}`" in DOCS or f"{name}(" in DOCS, f"{module_name}.{name} not in docs/"


@pytest.mark.parametrize("module_name", MODULES)
def test_concrete_classes_are_final(module_name: str) -> None:
    for name, obj in public(module_name):
        if not inspect.isclass(obj):
            continue
        if issubclass(obj, BaseException | enum.Enum) or Protocol in getattr(obj, "__mro__", ()):
            continue
        if getattr(obj, "_is_protocol", False):
            continue
        assert getattr(obj, "__final__", False), f"{module_name}.{name} is not @final"
