"""Writing a run's cards as JSON lines, CSV or Markdown, and records as JSON."""

from __future__ import annotations

import csv
import enum
import io
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TextIO

import attrs

from .model import Card, Run, Upload

__all__ = ["FORMATS", "jsonable", "write_cards"]

FORMATS = ("jsonl", "csv", "md")


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


def _card_record(card: Card, names: dict[str, str]) -> dict[str, Any]:
    return {
        "run_id": card.run_id,
        "upload_id": card.upload_id,
        "document": names.get(card.upload_id, ""),
        "ordinal": card.ordinal,
        "title": card.title,
        "body": card.body,
        "tags": list(card.tags),
        "quote": card.quote,
    }


def write_cards(
    out: TextIO, fmt: str, run: Run, uploads: Iterable[Upload], cards: Iterable[Card]
) -> int:
    """Write the cards in ``fmt``; returns how many were written."""
    names = {u.id: u.name for u in uploads}
    count = 0
    if fmt == "jsonl":
        for card in cards:
            out.write(json.dumps(_card_record(card, names), ensure_ascii=False) + "\n")
            count += 1
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["document", "ordinal", "title", "body", "tags", "quote", "upload_id"])
        for card in cards:
            writer.writerow(
                [
                    names.get(card.upload_id, ""),
                    card.ordinal,
                    card.title,
                    card.body,
                    "; ".join(card.tags),
                    card.quote or "",
                    card.upload_id,
                ]
            )
            count += 1
    elif fmt == "md":
        out.write(f"# {run.name}\n")
        current = None
        for card in cards:
            if card.upload_id != current:
                current = card.upload_id
                out.write(f"\n## {names.get(card.upload_id, card.upload_id)}\n")
            out.write(f"\n### {card.title}\n\n{card.body}\n")
            if card.quote:
                out.write(f"\n> {card.quote}\n")
            if card.tags:
                out.write("\n" + " ".join(f"`{t}`" for t in card.tags) + "\n")
            count += 1
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return count


def dumps(value: Any) -> str:
    """Indented JSON of any record."""
    buffer = io.StringIO()
    json.dump(jsonable(value), buffer, indent=2, ensure_ascii=False)
    return buffer.getvalue()
