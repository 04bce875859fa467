"""Reading TOML a user wrote (recipes, price tables): bounded, and wrong in one line."""

from __future__ import annotations

import tomllib
from typing import Any, Final

from .errors import InputError

__all__ = ["MAX_TOML_DEPTH", "parse_toml"]

MAX_TOML_DEPTH: Final = 16
"""The deepest nesting of tables and arrays a TOML file may have (a recipe needs 4)."""


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """The tables of a TOML text, nested at most `MAX_TOML_DEPTH` deep.

    `tomllib` parses arrays and inline tables by recursion, so ``[[[[…`` a few thousand
    deep ends in `RecursionError`; that, and a file nested deeper than any cardmill file
    needs, are refused like a syntax error.

    Raises:
        InputError: ``source``, then what is wrong, on one line.
    """
    deep = f"{source}: tables and arrays nested more than {MAX_TOML_DEPTH} levels deep"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{source}: not valid TOML ({exc})") from None
    except RecursionError:
        raise InputError(deep) from None
    if _deeper_than(data, MAX_TOML_DEPTH):
        raise InputError(deep)
    return data


def _deeper_than(data: object, most: int) -> bool:
    # Without recursion: what is walked here is what the parser let through.
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children: list[Any]
        if isinstance(value, dict):
            children = list(value.values())
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > most:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
