"""Keyset pagination: an async iterator that reads a long result a page at a time."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar, final

import trio

from ._base import check_batch

__all__ = ["Pages"]

K = TypeVar("K")
V = TypeVar("V")


@final
class Pages(Generic[K, V]):
    """Yields the values of successive pages, each fetched after the last key seen.

    ``fetch(after, limit)`` returns up to ``limit`` ``(key, value)`` pairs whose keys
    follow ``after``, in key order; a short page is the last. A plain iterator rather
    than an async generator: it holds one page and nothing else, so one dropped half-way
    needs no finalising.
    """

    def __init__(
        self,
        fetch: Callable[[K, int], Awaitable[list[tuple[K, V]]]],
        *,
        start: K,
        batch: int,
    ) -> None:
        check_batch(batch)
        self._fetch = fetch
        self._after = start
        self._batch = batch
        self._page: deque[V] = deque()
        self._last = False

    def __aiter__(self) -> Pages[K, V]:
        return self

    async def __anext__(self) -> V:
        if not self._page:
            if self._last:
                await trio.lowlevel.checkpoint()
                raise StopAsyncIteration
            page = await self._fetch(self._after, self._batch)
            self._last = len(page) < self._batch
            if not page:
                raise StopAsyncIteration
            self._after = page[-1][0]
            self._page.extend(value for _, value in page)
        return self._page.popleft()
