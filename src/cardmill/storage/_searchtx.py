"""The card search transaction of the SQL backends: the index finds, `_search` checks."""

from __future__ import annotations

from functools import partial
from typing import Any

from ..model import Card, CardPage
from . import _search
from ._search import CardFilter, Key, collect
from ._stop import Stop
from ._transactions import CARD_COLUMNS, Tx, card_row, get_recipe

__all__ = ["search_page"]


def search_page(
    tx: Tx, run_id: str, flt: CardFilter, after: Key, limit: int, stop: Stop
) -> CardPage:
    """One page of `Storage.search_cards`, read in one transaction, stopped (`Stopped`)
    soon after ``stop`` is set.

    What one call reads is bounded whatever the query: at most `INDEX_BUDGET` matches
    of the index, then at most `SCAN_BUDGET` candidate cards.
    """
    flt.check_recipe(get_recipe(tx, run_id))
    if flt.hopeless:
        return CardPage(())
    with tx.watch(stop):
        return _page(tx, run_id, flt, after, limit, stop)


def _page(tx: Tx, run_id: str, flt: CardFilter, after: Key, limit: int, stop: Stop) -> CardPage:
    head = f"SELECT u.position, c.upload_id, c.ordinal, {CARD_COLUMNS}"
    args: tuple[Any, ...] = ()
    budget = _search.INDEX_BUDGET
    if (
        tx.search == "fts5"
        and (match := flt.fts5_query()) is not None
        and _few(tx, "SELECT 1 FROM cards_fts WHERE cards_fts MATCH ?", match, budget)
    ):
        sql = (
            head + " FROM cards_fts JOIN cards c ON c.seq = cards_fts.rowid"
            " JOIN uploads u ON u.id = c.upload_id WHERE cards_fts MATCH ? AND"
        )
        args = (match,)
    elif (
        tx.search == "tsvector"
        and (query := flt.tsquery()) is not None
        and _few(tx, "SELECT 1 FROM cards WHERE search @@ ?::tsquery", query, budget)
    ):
        sql = (
            head + " FROM uploads u JOIN cards c ON c.upload_id = u.id"
            " WHERE c.search @@ ?::tsquery AND"
        )
        args = (query,)
    else:
        # No index, or one holding more matches than a call may read (which, sorted into
        # the run's order, would all be read for every page): the run's cards in order,
        # each checked, `SCAN_BUDGET` at most.
        sql = head + " FROM uploads u JOIN cards c ON c.upload_id = u.id WHERE"
    # `position >= ?` bounds the scan of uploads by (run_id, position), as card_page's.
    sql += " u.run_id = ? AND u.position >= ? AND (u.position > ? OR c.ordinal > ?)"
    if flt.upload_id is not None:
        sql += " AND u.id = ?"
    sql += " ORDER BY u.position, c.ordinal LIMIT ?"
    upload = () if flt.upload_id is None else (flt.upload_id,)

    def fetch(statement: str, cursor: Key, n: int) -> list[tuple[Key, Card]]:
        position, ordinal = cursor
        params = (*args, run_id, position, position, ordinal, *upload, n)
        return [((r[0], r[2]), card_row(run_id, r[1:])) for r in tx.all(statement, params)]

    return collect(partial(fetch, sql), flt, after, limit, stop)


def _few(tx: Tx, matches: str, query: str, budget: int) -> bool:
    """Whether the index holds at most ``budget`` matches of ``query`` (in every run);
    it reads ``budget + 1`` of them at most."""
    (count,) = tx.one(f"SELECT count(*) FROM ({matches} LIMIT ?) AS m", (query, budget + 1))
    return bool(count <= budget)
