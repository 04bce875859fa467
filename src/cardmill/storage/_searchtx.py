"""The card search transaction of the SQL backends: the index finds, `_search` checks."""

from __future__ import annotations

from functools import partial
from typing import Any

from ..model import Card, CardPage
from ._search import CardFilter, Key, collect
from ._transactions import CARD_COLUMNS, Tx, card_row, get_recipe

__all__ = ["search_page"]


def search_page(tx: Tx, run_id: str, flt: CardFilter, after: Key, limit: int) -> CardPage:
    """One page of `Storage.search_cards`, read in one transaction."""
    flt.check_recipe(get_recipe(tx, run_id))
    if flt.hopeless:
        return CardPage(())
    head = f"SELECT u.position, c.upload_id, c.ordinal, {CARD_COLUMNS}"
    args: tuple[Any, ...] = ()
    if tx.search == "fts5" and (match := flt.fts5_query()) is not None:
        sql = (
            head + " FROM cards_fts JOIN cards c ON c.seq = cards_fts.rowid"
            " JOIN uploads u ON u.id = c.upload_id WHERE cards_fts MATCH ? AND"
        )
        args = (match,)
    elif tx.search == "tsvector" and (query := flt.tsquery()) is not None:
        sql = (
            head + " FROM uploads u JOIN cards c ON c.upload_id = u.id"
            " WHERE c.search @@ ?::tsquery AND"
        )
        args = (query,)
    else:
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

    return collect(partial(fetch, sql), flt, after, limit)
