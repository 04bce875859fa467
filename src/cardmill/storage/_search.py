"""Card search: what matches, shared by every backend, and the words an index holds.

A search has up to four filters, all of which must hold:

- text: every word of the query starts a word of the card (its title, body, quote, tags
  and text fields), case aside; accents count (``cafe`` does not find ``café``);
- upload: the card comes from that upload;
- tag: one of the card's tags equals it, case aside;
- field: the recipe field holds the value (text and lists contain it, case aside;
  numbers equal it; flags read yes/no or true/false).

Words are runs of letters and digits, case-folded, each cut to `MAX_WORD_CHARS`. The SQL
backends keep each card's words in an index (SQLite FTS5, a PostgreSQL ``tsvector``),
which finds candidates; every candidate is then checked here, so the three backends
answer alike by construction, and a query reaches the index only as words this module
quoted, never as query syntax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import attrs

from .._recipe import Recipe
from ..errors import InputError
from ..model import Card, CardPage, FieldValue
from ._stop import Stop

__all__ = ["CardFilter"]

MAX_TERMS: Final = 12
MAX_WORD_CHARS: Final = 64
MAX_LIMIT: Final = 500
#: The most candidates one call examines: a filter the index cannot narrow (a recipe
#: field, a rare exact tag) returns a short page and a cursor instead of reading the run.
SCAN_BUDGET: Final = 20_000
#: The most matches a call reads from an index (SQLite FTS5, PostgreSQL's GIN). An index
#: gives its matches in its own order, not the run's, so a page in the run's order reads
#: them all: past this many (a common word), the run's cards are read in order and checked
#: one by one instead, as for a filter no index narrows, where matches are plentiful.
INDEX_BUDGET: Final = 5_000
_CHUNK: Final = 500

_WORD: Final = re.compile(r"[^\W_]+")
_CURSOR: Final = re.compile(r"(\d{1,10}):(\d{1,10})")
_YES: Final = frozenset({"yes", "true", "1"})
_NO: Final = frozenset({"no", "false", "0"})


def words(text: str) -> list[str]:
    """The searchable words of ``text``: runs of letters and digits, case-folded, cut."""
    return [w[:MAX_WORD_CHARS] for w in _WORD.findall(text.casefold())]


def field_texts(fields: Mapping[str, FieldValue] | None) -> list[str]:
    """The text a card's recipe fields add to its words (strings and list items)."""
    out: list[str] = []
    for value in (fields or {}).values():
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, tuple | list):
            out.extend(item for item in value if isinstance(item, str))
    return out


def search_words(title: str, body: str, quote: str | None, tags: Iterable[str], fields: Any) -> str:
    """The words an index keeps for a card, one space between each."""
    parts = [title, body, quote or "", *tags, *field_texts(fields)]
    return " ".join(w for part in parts for w in words(part))


def tag_words(tags: Iterable[str]) -> str:
    """The words of a card's tags, which narrow a tag filter in an index, each marked
    with a ``#`` (FTS5 reads it as a separator; PostgreSQL keeps it apart from the
    card's words)."""
    return " ".join("#" + w for tag in tags for w in words(tag))


def stored_search_words(
    title: str, body: str, quote: str | None, tags_json: str, fields_json: str | None
) -> str:
    """`search_words` from a card's stored columns (for migrations)."""
    fields = None if fields_json is None else json.loads(fields_json)
    return search_words(title, body, quote, json.loads(tags_json), fields)


def stored_tag_words(tags_json: str) -> str:
    """`tag_words` from a card's stored tags (for migrations)."""
    return tag_words(json.loads(tags_json))


def encode_cursor(position: int, ordinal: int) -> str:
    """The cursor just past the card at ``(upload position, ordinal)``."""
    return f"{position}:{ordinal}"


def decode_cursor(after: object) -> tuple[int, int]:
    """The ``(upload position, ordinal)`` a cursor names; before the first card for None."""
    if after is None:
        return (-1, -1)
    match = _CURSOR.fullmatch(after) if isinstance(after, str) else None
    if match is None:
        raise InputError(f"after must be a cursor from a CardPage, not {after!r:.60}")
    return int(match.group(1)), int(match.group(2))


def _optional_text(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise InputError(f"{name} must be a str or None, not {type(value).__name__}")


def _check_field(field: object) -> tuple[str, str] | None:
    if field is None:
        return None
    if (
        isinstance(field, tuple)
        and len(field) == 2
        and isinstance(field[0], str)
        and isinstance(field[1], str)
    ):
        return field[0], field[1]
    raise InputError(f"field must be a (name, value) pair of str, not {field!r:.60}")


@attrs.frozen
class CardFilter:
    """A checked search: the query's words, and the filters as the search compares them."""

    terms: tuple[str, ...]
    upload_id: str | None
    tag: str | None
    field: tuple[str, str] | None

    @classmethod
    def make(
        cls, *, text: object, upload_id: object, tag: object, field: object, limit: object
    ) -> CardFilter:
        """Check a search's arguments (InputError names the bad one)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise InputError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}")
        query = _optional_text("text", text)
        checked_tag = _optional_text("tag", tag)
        return cls(
            terms=tuple(dict.fromkeys(words(query or "")))[:MAX_TERMS],
            upload_id=_optional_text("upload_id", upload_id),
            tag=None if checked_tag is None else checked_tag.casefold(),
            field=_check_field(field),
        )

    def check_recipe(self, recipe: Recipe) -> None:
        """Refuse a field filter on a field the run's recipe does not have."""
        if self.field is not None and self.field[0] not in {f.name for f in recipe.fields}:
            raise InputError(f"field: the recipe {recipe.name} has no field {self.field[0]!r}")

    @property
    def hopeless(self) -> bool:
        """No card can match: the upload id holds what no store keeps (NUL, a lone
        surrogate), so it is not sent to one."""
        up = self.upload_id
        return up is not None and any(c == "\x00" or "\ud800" <= c <= "\udfff" for c in up)

    @property
    def tag_terms(self) -> tuple[str, ...]:
        return tuple(words(self.tag or ""))

    def matches(self, card: Card) -> bool:
        """Whether the card passes every filter."""
        if self.upload_id is not None and card.upload_id != self.upload_id:
            return False
        if self.tag is not None and self.tag not in {t.casefold() for t in card.tags}:
            return False
        if self.field is not None:
            held = (card.fields or {}).get(self.field[0])
            if held is None or not _holds(held, self.field[1]):
                return False
        if self.terms:
            have = words(search_words(card.title, card.body, card.quote, card.tags, card.fields))
            return all(any(w.startswith(t) for w in have) for t in self.terms)
        return True

    # -- what the indexes are asked ----------------------------------------------------

    def fts5_query(self) -> str | None:
        """An FTS5 MATCH expression of quoted words only, or None when nothing narrows."""
        parts = [f"search_words : {_fts5_phrase(t)}*" for t in self.terms]
        if self.tag_terms:
            parts.append(f"search_tags : {_fts5_phrase(' '.join(self.tag_terms))}")
        return " AND ".join(parts) or None

    def tsquery(self) -> str | None:
        """A ``tsquery`` of quoted lexemes, taken as they are (``::tsquery``, no parser):
        a prefix of a card's word for each term, each tag word with its ``#``."""
        parts = [f"{_ts_lexeme(t)}:*" for t in self.terms]
        parts += [_ts_lexeme("#" + t) for t in self.tag_terms]
        return " & ".join(parts) or None


def _fts5_phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _ts_lexeme(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def _holds(held: FieldValue, wanted: str) -> bool:
    want = wanted.casefold()
    if isinstance(held, bool):
        return want in (_YES if held else _NO)
    if isinstance(held, float):
        try:
            number = float(wanted)
        except ValueError:
            return False
        return number == held  # held is finite: inf and nan never equal it
    if isinstance(held, int):
        # Exactly, whatever its length: a stored integer may be too long for a float.
        try:
            exact = Decimal(wanted)
        except InvalidOperation:
            return False
        return exact.is_finite() and exact == held
    if isinstance(held, tuple | list):
        return any(isinstance(item, str) and want in item.casefold() for item in held)
    return want in held.casefold()


Key = tuple[int, int]


def collect(
    fetch: Callable[[Key, int], list[tuple[Key, Card]]],
    flt: CardFilter,
    after: Key,
    limit: int,
    stop: Stop | None = None,
) -> CardPage:
    """A page of up to ``limit`` matching cards from the candidates ``fetch`` reads.

    ``fetch(after, n)`` returns up to ``n`` candidates past ``after`` in the run's order,
    each with its ``(upload position, ordinal)`` key: every card that matches must be among
    them. Reading stops once a card beyond the page is seen (so ``next_cursor`` is None
    only at the end of the run), or after `SCAN_BUDGET` candidates, or (`Stopped`) once
    ``stop`` is set.
    """
    found: list[tuple[Key, Card]] = []
    cursor, scanned, chunk = after, 0, min(limit + 1, SCAN_BUDGET)
    while True:
        if stop is not None:
            stop.check()
        rows = fetch(cursor, chunk)
        for key, card in rows:
            if stop is not None:
                stop.check()
            scanned += 1
            cursor = key
            if flt.matches(card):
                if len(found) == limit:
                    return CardPage(tuple(c for _, c in found), encode_cursor(*found[-1][0]))
                found.append((key, card))
        if len(rows) < chunk:
            return CardPage(tuple(c for _, c in found), None)
        if scanned >= SCAN_BUDGET:
            return CardPage(tuple(c for _, c in found), encode_cursor(*cursor))
        chunk = min(_CHUNK, SCAN_BUDGET - scanned)
