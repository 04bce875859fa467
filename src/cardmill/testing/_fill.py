"""Plausible values for any card schema: how the test kit answers a recipe it never saw."""

from __future__ import annotations

from typing import Any

__all__ = ["fill_schema"]


def _kind(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):  # a nullable field: ["string", "null"]
        kind = next((k for k in kind if k != "null"), None)
    return kind


def fill_schema(
    schema: dict[str, Any], text: str, cards: int, name: str = "", hostile: bool = False
) -> Any:
    """A value that satisfies ``schema`` (unless ``hostile``), with words from ``text``.

    Objects get every property; arrays ``cards`` items (capped by ``maxItems``); strings
    words of the text, cut to ``maxLength``; an enum its first choice; numbers the middle
    of their range; booleans True. Hostile answers are what a model talked into ignoring
    the schema would send: every array ``cards`` long and strings far over their limits.
    """
    kind = _kind(schema)
    choices = [c for c in schema.get("enum") or () if c is not None]
    if choices:
        return choices[0]
    if kind == "object":
        props: dict[str, Any] = schema.get("properties", {})
        return {k: fill_schema(v, text, cards, k, hostile) for k, v in props.items()}
    if kind == "array":
        limit = cards if hostile else schema.get("maxItems", cards)
        n = max(schema.get("minItems", 0), min(cards, limit))
        item = schema.get("items", {"type": "string"})
        inner = min(cards, 40) if hostile else cards  # only the top level is huge
        return [fill_schema(item, f"{text} #{i + 1}", inner, name, hostile) for i in range(n)]
    if kind == "string":
        if hostile:
            size = {"title": 1_000, "body": 10_000, "quote": 5_000}.get(name, 100)
            tail = text.split()[-1] if text.split() else ""  # "#k": which card this is
            return (f"{tail} " + "spam " * size)[:size]
        words = text.split()
        size = {"title": 6, "quote": 12}.get(name, 30)
        value = " ".join(words[:size]) or name or "text"
        return value[: schema.get("maxLength", 10_000)]
    if kind in ("integer", "number"):
        low, high = schema.get("minimum"), schema.get("maximum")
        if low is not None and high is not None:
            middle = (low + high) / 2
            return int(middle) if kind == "integer" else middle
        number = low if low is not None else high if high is not None else 1
        return int(number) if kind == "integer" else number
    if kind == "boolean":
        return True
    return None
