"""How text, numbers, times, money and links appear on the viewer's pages."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import final
from urllib.parse import quote, urlencode

from markupsafe import Markup

from .._cost import shown_cost
from .._printable import printable
from ..model import FieldValue, Usage

__all__ = [
    "cost",
    "duration",
    "field_text",
    "href",
    "lines",
    "number",
    "query",
    "shown",
    "tokens",
    "when",
]


@final
class _Lines(str):
    """Text already made printable, its line ends and tabs kept."""

    __slots__ = ()


def shown(value: object) -> object:
    """What a template writes for ``value`` (every ``{{ ... }}`` passes here before it
    is HTML-escaped): text with the characters that could reorder or hide what the page
    shows (bidirectional controls, C0 and C1 controls, lone surrogates) written as
    backslash escapes, as the command line prints them; numbers as they are."""
    if isinstance(value, _Lines) or value is None or isinstance(value, int | float):
        return value
    if isinstance(value, Markup):
        # Already HTML (the escape adds only ASCII letters, digits and backslashes).
        return Markup(printable(value))
    return printable(value)


def lines(value: object) -> str:
    """Multi-line text (a card body, a quote, an error) made printable with its line
    ends and tabs kept, for an element that keeps them."""
    return _Lines(printable(value, lines=True))


def number(value: int | float) -> str:
    """A count with thousands separators: ``12,345``."""
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def cost(cost_usd: float, usage: Usage) -> str:
    """A recorded cost as the command line shows it: ``$0.0123``, ``$0.00`` for
    nothing, "unknown" when tokens were used but the model had no price."""
    return shown_cost(cost_usd, usage)


def tokens(usage: Usage) -> str:
    """Input and output tokens in one short line."""
    return f"{number(usage.input_tokens)} in · {number(usage.output_tokens)} out"


def when(moment: datetime | None) -> str:
    """A stored time in the viewer's local time, to the second; a dash when unknown."""
    if moment is None:
        return "—"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 01 min``."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def field_text(value: FieldValue) -> str:
    """A recipe field's value as text: lists joined, flags as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value)


def href(*parts: str, **params: object) -> str:
    """A path of the viewer: each part percent-encoded (ids come from a database and may
    hold ``/``, ``?`` or anything else), then the query of the ``params`` that are set."""
    # A lone surrogate (text an older release stored as it came) is encoded, not refused.
    path = "/" + "/".join(quote(part, safe="", errors="surrogatepass") for part in parts)
    return path + query(params)


def query(params: Mapping[str, object]) -> str:
    """``?a=1&b=2`` of the params whose value is not None or empty, or nothing."""
    kept = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    return "?" + urlencode(kept, errors="surrogatepass") if kept else ""
