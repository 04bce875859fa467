"""Finding a run's cards by text, document, tag and recipe field, a page at a time.

The storage does the finding (`Storage.search_cards`: full-text indexes in SQLite and
PostgreSQL, keyset cursors): each page the viewer shows is one call. Links to the next
page carry its cursor; a page asked for by number alone (a bookmark, the previous link)
is reached by following cursors from the first page, one short call per page, up to
`MAX_PAGE_WITHOUT_CURSOR` pages: what one request reads stays bounded whatever its query
string says.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import attrs
import outcome
import trio

from ..errors import InputError
from ..model import Card
from ..storage import Storage

__all__ = [
    "MAX_PAGE_WITHOUT_CURSOR",
    "MAX_QUERY_CHARS",
    "CardQuery",
    "Found",
    "search_cards",
    "while_connected",
]

T = TypeVar("T")

MAX_QUERY_CHARS: Final = 200
#: The deepest page reached by its number alone; past it, a page needs the cursor its
#: previous page's link carries.
MAX_PAGE_WITHOUT_CURSOR: Final = 20


def _bounded(value: str | None) -> str | None:
    """A filter's text, stripped and cut to `MAX_QUERY_CHARS`; empty means no filter."""
    if value is None:
        return None
    text = value.strip()[:MAX_QUERY_CHARS]
    return text or None


@attrs.frozen
class CardQuery:
    """What to look for; every part given must match (an empty query matches all).

    ``text``: each word starts a word of the title, body, quote, a tag or a text field,
    case aside. ``upload_id``: cards of that document only. ``tag``: a tag equal to it,
    case aside. ``field`` and ``value``: the recipe field holds the value (text and
    lists contain it, numbers equal it, flags read yes/no or true/false).
    """

    text: str | None = attrs.field(default=None, converter=_bounded)
    upload_id: str | None = attrs.field(default=None, converter=_bounded)
    tag: str | None = attrs.field(default=None, converter=_bounded)
    field: str | None = attrs.field(default=None, converter=_bounded)
    value: str | None = attrs.field(default=None, converter=_bounded)


@attrs.frozen
class Found:
    """One page of a search: its cards, how many came before, and the next page's cursor."""

    cards: tuple[Card, ...]
    offset: int
    next_cursor: str | None

    @property
    def more(self) -> bool:
        return self.next_cursor is not None


async def search_cards(
    storage: Storage,
    run_id: str,
    query: CardQuery,
    *,
    page: int = 1,
    after: str | None = None,
    limit: int = 50,
) -> Found:
    """Page ``page`` of the matching cards, in the run's order (upload, then ordinal).

    With ``after`` (the cursor the previous page gave) it is one call; without, the
    cursors are followed from the first page, to page `MAX_PAGE_WITHOUT_CURSOR` at
    most. Raises RunNotFound, and InputError for a cursor that is not one or a page
    too deep to reach without one.
    """
    if page < 1 or limit < 1:
        raise ValueError("page must be >= 1 and limit >= 1")
    if after is None and page > MAX_PAGE_WITHOUT_CURSOR:
        raise InputError(
            f"page {page} of a search is reached with the next links, which carry the"
            f" place to go on from; by its number alone, up to page {MAX_PAGE_WITHOUT_CURSOR}"
        )
    field = None
    if query.field is not None and query.value is not None:
        field = (query.field, query.value)

    async def one(cursor: str | None) -> Found:
        got = await storage.search_cards(
            run_id,
            text=query.text,
            upload_id=query.upload_id,
            tag=query.tag,
            field=field,
            after=cursor,
            limit=limit,
        )
        return Found(got.cards, 0, got.next_cursor)

    if after is not None:
        found = await one(after)
    else:
        found = await one(None)
        for _ in range(page - 1):
            if found.next_cursor is None:
                return Found((), (page - 1) * limit, None)
            found = await one(found.next_cursor)
    return attrs.evolve(found, offset=(page - 1) * limit)


async def while_connected(
    receive: Callable[[], Awaitable[Any]], work: Callable[[], Awaitable[T]]
) -> T | None:
    """``await work()``, cancelled (None) as soon as the client goes away (``receive``
    is the request's ASGI channel): a search then stops its read, which would otherwise
    go on holding the storage's thread for a page nobody will see."""
    with trio.CancelScope() as gone:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            # Captured, so that what the work raises reaches the caller as it is.
            result = await outcome.acapture(work)
            nursery.cancel_scope.cancel()
        return result.unwrap()
    return None
