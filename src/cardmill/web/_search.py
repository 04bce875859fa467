"""Finding a run's cards by text, document, tag and recipe field.

For now a search reads the run's cards in pages (`Storage.iter_cards`) and keeps those
that match: memory stays one page, time grows with the run. The viewer asks only
`search_cards`, so moving the search into the database (full-text indexes) changes this
module alone.
"""

from __future__ import annotations

import math
from typing import Final

import attrs

from ..model import Card, FieldValue
from ..storage import Storage

__all__ = ["MAX_QUERY_CHARS", "CardPage", "CardQuery", "search_cards"]

MAX_QUERY_CHARS: Final = 200
_MAX_TERMS: Final = 12
_PAGE_READ: Final = 500


def _bounded(value: str | None) -> str | None:
    """A filter's text, stripped and cut to `MAX_QUERY_CHARS`; empty means no filter."""
    if value is None:
        return None
    text = value.strip()[:MAX_QUERY_CHARS]
    return text or None


@attrs.frozen
class CardQuery:
    """What to look for; every part given must match (an empty query matches all).

    ``text``: each word appears (case-insensitively) in the title, body, quote, a tag
    or a text field. ``upload_id``: cards of that document only. ``tag``: a tag equal to
    it, case aside. ``field`` and ``value``: the recipe field holds the value (text and
    lists contain it, numbers equal it, flags read yes/no or true/false).
    """

    text: str | None = attrs.field(default=None, converter=_bounded)
    upload_id: str | None = attrs.field(default=None, converter=_bounded)
    tag: str | None = attrs.field(default=None, converter=_bounded)
    field: str | None = attrs.field(default=None, converter=_bounded)
    value: str | None = attrs.field(default=None, converter=_bounded)

    @property
    def terms(self) -> tuple[str, ...]:
        return tuple((self.text or "").casefold().split()[:_MAX_TERMS])

    def matches(self, card: Card) -> bool:
        if self.upload_id is not None and card.upload_id != self.upload_id:
            return False
        if self.tag is not None and self.tag.casefold() not in {t.casefold() for t in card.tags}:
            return False
        if self.field is not None and self.value is not None:
            held = (card.fields or {}).get(self.field)
            if held is None or not _holds(held, self.value):
                return False
        terms = self.terms
        if terms:
            haystack = _haystack(card)
            return all(term in haystack for term in terms)
        return True


@attrs.frozen
class CardPage:
    """One page of a search: its cards, where it starts, and whether more follow."""

    cards: tuple[Card, ...]
    offset: int
    more: bool


async def search_cards(
    storage: Storage, run_id: str, query: CardQuery, *, offset: int = 0, limit: int = 50
) -> CardPage:
    """The matching cards of the run from ``offset`` on, at most ``limit``, in the run's
    order (upload, then ordinal). Raises RunNotFound."""
    if offset < 0 or limit < 1:
        raise ValueError("offset must be >= 0 and limit >= 1")
    found: list[Card] = []
    seen = 0
    # Stopping early leaves the iterator to trio's finalizer: storages hold nothing
    # (no lock, no transaction) between pages.
    async for card in storage.iter_cards(run_id, upload_id=query.upload_id, batch=_PAGE_READ):
        if not query.matches(card):
            continue
        if seen >= offset:
            if len(found) == limit:
                return CardPage(tuple(found), offset, more=True)
            found.append(card)
        seen += 1
    return CardPage(tuple(found), offset, more=False)


def _haystack(card: Card) -> str:
    parts = [card.title, card.body, card.quote or "", *card.tags]
    for value in (card.fields or {}).values():
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, tuple):
            parts.extend(value)
    return "\n".join(parts).casefold()


_YES: Final = frozenset({"yes", "true", "1"})
_NO: Final = frozenset({"no", "false", "0"})


def _holds(held: FieldValue, wanted: str) -> bool:
    want = wanted.casefold()
    if isinstance(held, bool):
        return want in (_YES if held else _NO)
    if isinstance(held, int | float):
        try:
            number = float(wanted)
        except ValueError:
            return False
        return math.isfinite(number) and float(held) == number
    if isinstance(held, tuple):
        return any(want in item.casefold() for item in held)
    return want in held.casefold()
