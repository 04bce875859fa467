"""Writing a run's cards as JSON lines, CSV or Markdown, and records as JSON.

The command line's ``export`` and the web viewer's export links share this code.
"""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from datetime import datetime
from typing import Any, Final, Protocol, TextIO, final

import attrs

from ._recipe import FieldType, Recipe
from .model import Card, FieldValue, Run, Upload
from .storage import Storage

__all__ = ["FORMATS", "AsyncWriter", "card_chunks", "dumps", "jsonable", "write_cards"]

FORMATS = ("jsonl", "csv", "md")
_FORMULA_STARTS: Final = ("=", "+", "-", "@", "\t", "\r")


def jsonable(value: Any) -> Any:
    """attrs values, enums and datetimes as plain JSON data."""
    if attrs.has(type(value)):
        return {k: jsonable(v) for k, v in attrs.asdict(value, recurse=False).items()}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def _card_record(card: Card, name: str) -> dict[str, Any]:
    return {
        "run_id": card.run_id,
        "upload_id": card.upload_id,
        "document": name,
        "ordinal": card.ordinal,
        "title": card.title,
        "body": card.body,
        "tags": list(card.tags),
        "quote": card.quote,
        **({"fields": jsonable(dict(card.fields))} if card.fields is not None else {}),
    }


class AsyncWriter(Protocol):
    """Where an export goes: a text file opened with ``trio.open_file`` or ``trio.wrap_file``."""

    def write(self, data: str, /) -> Awaitable[int]: ...


_Row = Callable[[Card, "str | None"], None]


@final
class _UploadNames:
    """The names of the uploads the cards belong to, read beside them in position order
    (a merge join), so one page of uploads is in memory, never the whole run's."""

    def __init__(self, uploads: AsyncIterator[Upload]) -> None:
        self._uploads = uploads
        self._id: str | None = None
        self._name: str | None = None

    async def of(self, upload_id: str) -> str | None:
        if upload_id != self._id:
            async for upload in self._uploads:
                if upload.id == upload_id:
                    self._id, self._name = upload.id, upload.name
                    break
            else:
                return None
        return self._name


async def write_cards(
    out: AsyncWriter, fmt: str, storage: Storage, run: Run, *, batch: int = 1000
) -> int:
    """Stream the run's cards to ``out`` in ``fmt``; returns how many were written.

    Cards and the names of their uploads are read ``batch`` at a time and written as
    they are read, one write per page: a run of a million cards exports in the memory
    of one page. Cards of a recipe other than the study cards carry their fields: nested
    in JSON lines, one column each in CSV, one line each in Markdown.
    """
    written = 0
    async with aclosing(_chunks(fmt, storage, run, batch)) as chunks:
        async for text, count in chunks:
            await out.write(text)
            written = count
    return written


async def card_chunks(
    fmt: str, storage: Storage, run: Run, *, batch: int = 1000
) -> AsyncGenerator[str]:
    """The run's cards in ``fmt``, as `write_cards` writes them, in text chunks of
    ``batch`` cards (the header, if the format has one, with the first): for a caller
    that sends them on, such as a streamed HTTP response."""
    async with aclosing(_chunks(fmt, storage, run, batch)) as chunks:
        async for text, _ in chunks:
            yield text


async def _chunks(
    fmt: str, storage: Storage, run: Run, batch: int
) -> AsyncGenerator[tuple[str, int]]:
    """Text of up to ``batch`` cards at a time, with the count of cards so far; the last
    chunk (perhaps only the header, or nothing) comes even when the run has no cards."""
    start = _FORMATS.get(fmt)
    if start is None:
        raise ValueError(f"unknown format {fmt!r}")
    recipe = await storage.get_recipe(run.id)
    text = io.StringIO()
    row = start(text, run, recipe)
    names = _UploadNames(storage.iter_uploads(run.id, batch=batch))
    count = 0
    async for card in storage.iter_cards(run.id, batch=batch):
        row(card, await names.of(card.upload_id))
        count += 1
        if count % batch == 0:
            yield _whole(text.getvalue()), count
            text.seek(0)
            text.truncate()
    yield _whole(text.getvalue()), count


def _whole(text: str) -> str:
    """``text`` as valid Unicode: a lone surrogate (text an older release stored as it
    came) becomes U+FFFD, so the export can be encoded as UTF-8 to the end."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _jsonl(out: TextIO, run: Run, recipe: Recipe) -> _Row:
    def row(card: Card, name: str | None) -> None:
        out.write(json.dumps(_card_record(card, name or ""), ensure_ascii=False) + "\n")

    return row


def _csv(out: TextIO, run: Run, recipe: Recipe) -> _Row:
    # RFC 4180's CRLF line ends: the csv module quotes a field holding any character of
    # the line terminator, so a carriage return inside a card cannot split its row.
    writer = csv.writer(out, lineterminator="\r\n")
    if recipe.stores_fields:
        fields = recipe.fields
        writer.writerow(["document", "ordinal", *(_cell(f.name) for f in fields), "upload_id"])

        def field_row(card: Card, name: str | None) -> None:
            values = card.fields or {}
            writer.writerow(
                [
                    _cell(name or ""),
                    card.ordinal,
                    *(_field_cell(values.get(f.name)) for f in fields),
                    card.upload_id,
                ]
            )

        return field_row
    writer.writerow(["document", "ordinal", "title", "body", "tags", "quote", "upload_id"])

    def row(card: Card, name: str | None) -> None:
        writer.writerow(
            [
                _cell(name or ""),
                card.ordinal,
                _cell(card.title),
                _cell(card.body),
                _cell("; ".join(card.tags)),
                _cell(card.quote or ""),
                card.upload_id,
            ]
        )

    return row


def _field_cell(value: FieldValue | None) -> str | int | float:
    """A field's cell: numbers as numbers, flags as true/false, lists joined by ``; ``,
    and text through `_cell`."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value
    if isinstance(value, tuple):
        return _cell("; ".join(value))
    return _cell(value)


def _md_value(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return ", ".join(value)
    return str(value)


def _cell(text: str) -> str:
    """A text cell that spreadsheets show as text, never run as a formula.

    Cards and document names come from untrusted documents, and Excel, LibreOffice and
    Google Sheets evaluate a cell that starts with ``=``, ``+``, ``-`` or ``@`` (tab and
    carriage return can hide such a start). OWASP's advice: prefix a single quote, which
    spreadsheets hide and which keeps the text readable.
    """
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _md(out: TextIO, run: Run, recipe: Recipe) -> _Row:
    out.write(f"# {run.name}\n")
    current = None
    title_field = next(
        (f.name for f in recipe.fields if f.type == FieldType.STRING and f.required), None
    )

    def row(card: Card, name: str | None) -> None:
        nonlocal current
        if card.upload_id != current:
            current = card.upload_id
            out.write(f"\n## {name or card.upload_id}\n")
        if card.fields is not None:
            out.write(f"\n### {card.title}\n\n")
            for field in recipe.fields:
                value = card.fields.get(field.name)
                if field.name != title_field and value is not None and value != ():
                    out.write(f"- **{field.name}**: {_md_value(value)}\n")
            return
        out.write(f"\n### {card.title}\n\n{card.body}\n")
        if card.quote:
            out.write(f"\n> {card.quote}\n")
        if card.tags:
            out.write("\n" + " ".join(f"`{t}`" for t in card.tags) + "\n")

    return row


_FORMATS: Final[dict[str, Callable[[TextIO, Run, Recipe], _Row]]] = {
    "jsonl": _jsonl,
    "csv": _csv,
    "md": _md,
}


def dumps(value: Any) -> str:
    """Indented JSON of any record."""
    buffer = io.StringIO()
    json.dump(jsonable(value), buffer, indent=2, ensure_ascii=False)
    return buffer.getvalue()
