"""A griffe extension that gives attrs classes the `__init__` attrs generates for them.

griffe re-creates `__init__` for dataclasses, but not for attrs classes: without this,
their rendered signature would be empty and the parameters their `Args:` sections name
would not exist. The parameters are read from the class itself (`attrs.fields`), so
aliases (`_conn` becomes `conn`), defaults, factories, `kw_only` and `init=False` are what
attrs really does; annotations and docstrings come from the source.

Used by mkdocs.yml: `extensions: [tools/griffe_attrs.py:AttrsInit]`.
"""

from __future__ import annotations

import ast
from typing import Any

import attrs
import griffe

__all__ = ["AttrsInit", "init_parameters"]


def _default(field: attrs.Attribute[Any]) -> str | None:
    """The default as the signature shows it: its repr, or `factory()`."""
    default = field.default
    if default is attrs.NOTHING:
        return None
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        factory = getattr(default, "factory", None)
        name = getattr(factory, "__qualname__", "")
        if not name or "<lambda>" in name:
            return "<factory>"
        return f"{name}()"
    return repr(default)


def init_parameters(cls: griffe.Class, runtime: type) -> list[griffe.Parameter]:
    """The parameters of the `__init__` attrs generated for `runtime`, positional ones
    first and keyword-only ones last, as attrs orders them."""
    positional: list[griffe.Parameter] = []
    keyword_only: list[griffe.Parameter] = []
    for field in attrs.fields(runtime):
        if not field.init:
            continue
        member = cls.members.get(field.name)
        annotation: str | griffe.Expr | None = None
        docstring = None
        if isinstance(member, griffe.Attribute):
            annotation = member.annotation
            docstring = member.docstring
        elif field.type is not None:
            annotation = field.type if isinstance(field.type, str) else repr(field.type)
        kind = (
            griffe.ParameterKind.keyword_only
            if field.kw_only
            else griffe.ParameterKind.positional_or_keyword
        )
        parameter = griffe.Parameter(
            field.alias or field.name,
            annotation=annotation,
            kind=kind,
            default=_default(field),
            docstring=docstring,
        )
        (keyword_only if field.kw_only else positional).append(parameter)
    return positional + keyword_only


class AttrsInit(griffe.Extension):
    """Add the generated `__init__` to every attrs class that does not write its own."""

    def on_class_members(
        self,
        *,
        node: ast.AST | griffe.ObjectNode,
        cls: griffe.Class,
        agent: griffe.Visitor | griffe.Inspector,
        **kwargs: Any,
    ) -> None:
        if "__init__" in cls.members:
            return
        try:
            runtime = griffe.dynamic_import(cls.path)
        except ImportError:
            return
        if not (isinstance(runtime, type) and attrs.has(runtime)):
            return
        self_parameter = griffe.Parameter("self", kind=griffe.ParameterKind.positional_or_keyword)
        init = griffe.Function(
            "__init__",
            lineno=0,
            endlineno=0,
            parent=cls,
            parameters=griffe.Parameters(self_parameter, *init_parameters(cls, runtime)),
            returns="None",
        )
        cls.set_member("__init__", init)
