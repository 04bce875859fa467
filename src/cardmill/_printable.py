"""Text from documents, models and databases, made safe to show on a terminal or a page.

A file name, an error quoting a model or a run name read from a database may hold
escape sequences (ESC, or the one-byte C1 CSI) that move the cursor, retitle the window
or clear the screen, bidirectional controls that show a name reversed (a right-to-left
override before ``gnp.exe``), or lone surrogates that no terminal encoding can write.
Everything the command line prints and the viewer shows from outside passes through
`printable` first, so both show the same escaped text.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["printable"]

# C0 and C1 controls and DEL, lone surrogates, and every bidirectional control
# (Unicode's Bidi_Control: the Arabic letter mark, the left-to-right and right-to-left
# marks, the embeddings, overrides and isolates).
_UNSAFE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
_KEPT: Final = frozenset({"\n", "\r\n", "\t"})
_KEPT_SPLIT: Final = re.compile("(\r\n|\n|\t)")
_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object, *, lines: bool = False) -> str:
    """``text`` with every character that could act on a terminal or reorder what a page
    shows written as a backslash escape (``\\x1b``, ``\\u202e``); with ``lines``, line
    ends (``\\n``, ``\\r\\n``) and tabs stay, for multi-line output such as log
    records, exports and card bodies."""
    s = str(text)
    if lines:
        return "".join(
            part if part in _KEPT else _UNSAFE.sub(_escape, part) for part in _KEPT_SPLIT.split(s)
        )
    return _UNSAFE.sub(_escape, s)
