"""The store of answers kept for reuse, as transactions for every SQL backend.

An answer's row is made when an upload first asks for its key (``answered = 0``, held by
that upload's claim), and filled in when the provider's answer arrives. While the claim
that asks is live (the upload LOADING under it, its lease not expired), another upload
with the same key is told to wait (`AnswerAsked`) instead of paying for the same request;
once it is not (released, failed, its worker dead), the next to ask takes it over.

Lock order, as every settlement's: an upload, then its run, then the answer.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Final

from ..model import (
    BATCH_HOLDER_PREFIX,
    AnswerAsked,
    AnswerStats,
    CardDraft,
    StoredAnswer,
    UploadStatus,
    Usage,
)
from ._base import NANOS_PER_USD, to_datetime, to_usd
from ._transactions import Tx, card_fields, complete, fields_text

__all__ = [
    "answer_stats",
    "claim_answer",
    "complete_reused",
    "drafts_json",
    "drafts_of",
    "find_answers",
    "forget_answers",
    "store_answer",
]

_COLUMNS: Final = (
    "key, drafts_json, provider, model, input_tokens, output_tokens, cost_nanos,"
    " created_at, used_at"
)


def drafts_json(drafts: tuple[CardDraft, ...]) -> str:
    """Cards as the store keeps them: one JSON array of ``[title, body, tags, quote,
    fields]`` per card."""
    return json.dumps(
        [[d.title, d.body, list(d.tags), d.quote, fields_text(d)] for d in drafts],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def drafts_of(text: str) -> tuple[CardDraft, ...]:
    """The cards `drafts_json` wrote."""
    return tuple(
        CardDraft(title, body, tuple(tags), quote, fields=card_fields(fields))
        for title, body, tags, quote, fields in json.loads(text)
    )


def _answer(row: Any) -> StoredAnswer:
    key, text, provider, model, tokens_in, tokens_out, nanos, created, used = row
    created_at, used_at = to_datetime(created), to_datetime(used if used else created)
    assert created_at is not None
    assert used_at is not None
    return StoredAnswer(
        key,
        drafts_of(text),
        provider,
        model,
        Usage(tokens_in, tokens_out),
        to_usd(nanos),
        created_at,
        used_at,
    )


def find_answers(tx: Tx, keys: tuple[str, ...]) -> dict[str, StoredAnswer]:
    """The answers kept under ``keys``."""
    if not keys:
        return {}
    marks = ", ".join("?" * len(keys))
    rows = tx.all(f"SELECT {_COLUMNS} FROM answers WHERE answered = 1 AND key IN ({marks})", keys)
    return {row[0]: _answer(row) for row in rows}


def claim_answer(
    tx: Tx, key: str, upload_id: str, attempt: int, now: float
) -> StoredAnswer | AnswerAsked | None:
    """The answer stored under ``key``; else `AnswerAsked` while another live claim is
    asking for it; else None, and this claim (``upload_id`` at ``attempt``) is the one
    asking."""
    tx.run(
        "INSERT INTO answers (key, answered, upload_id, attempt, created_at)"
        " VALUES (?, 0, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
        (key, upload_id, attempt, now),
    )
    row = tx.one(
        f"SELECT answered, upload_id, attempt, {_COLUMNS} FROM answers WHERE key = ?" + tx.lock,
        (key,),
    )
    answered, holder, held_at = row[0], row[1], row[2]
    if answered:
        tx.run("UPDATE answers SET used_at = ? WHERE key = ?", (now, key))
        return _answer(row[3:])
    if holder is not None and holder != upload_id:
        # A provider batch's claim may take a day to answer: not waited for.
        live = tx.one(
            "SELECT 1 FROM uploads WHERE id = ? AND status = ? AND attempts = ?"
            " AND lease_expires > ? AND worker NOT LIKE ?",
            (holder, UploadStatus.LOADING.value, held_at, now, BATCH_HOLDER_PREFIX + "%"),
        )
        if live is not None:
            return AnswerAsked(holder)
    if holder != upload_id or held_at != attempt:
        tx.run(
            "UPDATE answers SET upload_id = ?, attempt = ? WHERE key = ?",
            (upload_id, attempt, key),
        )
    return None


def store_answer(
    tx: Tx,
    key: str,
    upload_id: str,
    drafts: tuple[CardDraft, ...],
    provider: str,
    model: str,
    usage: Usage,
    nanos: int,
    now: float,
) -> None:
    """Keep a provider's answer under ``key`` (the first kept stays), and name it on the
    upload it was asked for; ``usage`` as `answer_usage` folds it."""
    tx.run("UPDATE uploads SET answer_key = ? WHERE id = ?", (key, upload_id))
    text = drafts_json(drafts)
    tx.run(
        "INSERT INTO answers (key, answered, upload_id, attempt, drafts_json, provider, model,"
        " input_tokens, output_tokens, cost_nanos, size, created_at, used_at)"
        " VALUES (?, 1, NULL, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (key) DO UPDATE SET answered = 1, upload_id = NULL, attempt = NULL,"
        " drafts_json = excluded.drafts_json, provider = excluded.provider,"
        " model = excluded.model, input_tokens = excluded.input_tokens,"
        " output_tokens = excluded.output_tokens, cost_nanos = excluded.cost_nanos,"
        " size = excluded.size, created_at = excluded.created_at, used_at = excluded.used_at"
        " WHERE answers.answered = 0",
        (
            key,
            text,
            provider,
            model,
            usage.input_tokens,
            usage.output_tokens,
            nanos,
            len(text.encode()),
            now,
            now,
        ),
    )


def complete_reused(
    tx: Tx,
    upload_id: str,
    answer: StoredAnswer,
    worker: str | None,
    attempt: int | None,
    now: float,
) -> bool:
    """`complete` with an earlier answer's cards, the upload marked as reused and what
    the answer had cost added to what the run saved, in the same transaction."""
    if not complete(tx, upload_id, answer.drafts, worker, attempt, now):
        return False
    nanos = round(answer.cost_usd * NANOS_PER_USD)
    tx.run(
        "UPDATE uploads SET answer_key = ?, reused = 1, saved_tokens = ?, saved_nanos = ?"
        " WHERE id = ?",
        (answer.key, answer.tokens, nanos, upload_id),
    )
    tx.run(
        "UPDATE runs SET reused_items = reused_items + 1, saved_tokens = saved_tokens + ?,"
        " saved_nanos = saved_nanos + ? WHERE id = (SELECT run_id FROM uploads WHERE id = ?)",
        (answer.tokens, nanos, upload_id),
    )
    tx.run("UPDATE answers SET used_at = ? WHERE key = ?", (now, answer.key))
    return True


def answer_stats(tx: Tx) -> AnswerStats:
    """What the store holds."""
    count, size, oldest, newest = tx.one(
        "SELECT count(*), coalesce(sum(size), 0), min(created_at), max(created_at)"
        " FROM answers WHERE answered = 1"
    )
    models = tx.all(
        "SELECT model, count(*) FROM answers WHERE answered = 1 GROUP BY model ORDER BY model"
    )
    return AnswerStats(
        int(count),
        int(size),
        to_datetime(oldest),
        to_datetime(newest),
        {model: int(n) for model, n in models},
    )


def forget_answers(tx: Tx, before: datetime | None, model: str | None, now: float) -> int:
    """Delete the answers last used before ``before`` (all, when None) of ``model`` (any,
    when None), and the requests no live claim is asking any more; the answers deleted."""
    where: list[str] = ["answered = 1"]
    params: list[object] = []
    if before is not None:
        where.append("coalesce(used_at, created_at) < ?")
        params.append(before.timestamp())
    if model is not None:
        where.append("model = ?")
        params.append(model)
    sql = " AND ".join(where)
    (count,) = tx.one(f"SELECT count(*) FROM answers WHERE {sql}", params)
    tx.run(f"DELETE FROM answers WHERE {sql}", params)
    tx.run(
        "DELETE FROM answers WHERE answered = 0 AND NOT EXISTS (SELECT 1 FROM uploads u"
        " WHERE u.id = answers.upload_id AND u.status = ? AND u.attempts = answers.attempt"
        " AND u.lease_expires > ?)",
        (UploadStatus.LOADING.value, now),
    )
    return int(count)
