"""Every public name is exported, sorted, documented, rendered and (for concrete classes) final."""

from __future__ import annotations

import enum
import importlib
import inspect
import re
from functools import cache
from pathlib import Path
from typing import Protocol

import griffe
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = [
    "cardmill",
    "cardmill.engine",
    "cardmill.storage",
    "cardmill.providers",
    "cardmill.testing",
    "cardmill.metrics",
    "cardmill.web",
    "cardmill.model",
    "cardmill.errors",
    "cardmill.aio",
]
REFERENCE = "\n".join(p.read_text() for p in sorted((ROOT / "docs" / "reference").glob("*.md")))
RENDERED = set(re.findall(r"^::: ([\w.]+)$", REFERENCE, flags=re.MULTILINE))


@cache
def package() -> griffe.Module:
    """cardmill as the API reference sees it: griffe with the docs' extensions."""
    extensions = griffe.load_extensions(f"{ROOT / 'tools' / 'griffe_attrs.py'}:AttrsInit")
    module = griffe.load("cardmill", search_paths=[str(ROOT / "src")], extensions=extensions)
    assert isinstance(module, griffe.Module)
    return module


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
    # griffe reads the docstrings of constants and type aliases too, as the reference does.
    top = package()
    for name, obj in public(module_name):
        found = top[f"{module_name}.{name}".removeprefix("cardmill.")]
        assert found.docstring, f"{module_name}.{name} has no docstring"
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"{module_name}.{name} has no docstring"


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_is_rendered_in_the_reference(module_name: str) -> None:
    # Each name once, under its shortest public path: `cardmill.X` when the top exports it.
    top = set(importlib.import_module("cardmill").__all__)
    for name, _ in public(module_name):
        where = "cardmill" if name in top else module_name
        assert f"{where}.{name}" in RENDERED, f"{where}.{name} is not in docs/reference/"


def test_the_reference_renders_nothing_twice_or_private() -> None:
    directives = re.findall(r"^::: ([\w.]+)$", REFERENCE, flags=re.MULTILINE)
    assert len(directives) == len(set(directives))
    for path in directives:
        assert not any(part.startswith("_") for part in path.split(".")), path


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
