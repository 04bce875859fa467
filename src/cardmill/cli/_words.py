"""Counts in words that agree with them: 1 document, 2 documents."""

from __future__ import annotations

__all__ = ["counted"]


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and the noun in the number it calls for.

    Example:
        >>> counted(1, "retry", "retries"), counted(2, "document")
        ('1 retry', '2 documents')
    """
    return f"{count} {noun if count == 1 else plural or noun + 's'}"
