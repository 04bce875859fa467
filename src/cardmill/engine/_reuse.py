"""Reuse: the key an answer is kept under, and looking an upload's up before asking."""

from __future__ import annotations

import hashlib
import json
import random
from functools import partial
from typing import Final

import trio

from ..model import AnswerAsked, Document, StoredAnswer, Upload
from ..providers import request_fingerprint
from ..storage import AnswerStore, Storage
from ._patience import patiently

__all__ = ["ANSWER_FORMAT", "answer_key", "answer_store", "reusable"]

ANSWER_FORMAT: Final = 1
"""The version of how a key is made: a new value when what a key covers changes."""


def answer_key(provider: object, document: Document) -> str | None:
    """The key ``provider``'s answer for ``document`` is kept under, or None when the
    provider does not say what determines its answers (its answers are then never
    reused).

    It digests the document's content (its bytes and media type, not its name: a file
    renamed or a folder named another way reuses its answer) with the provider's
    `request_fingerprint` (provider, model, the recipe's prompt and schema, the request
    around the document). A change in any of them is a new key.
    """
    fingerprint = request_fingerprint(provider)
    if fingerprint is None:
        return None
    parts = [ANSWER_FORMAT, fingerprint, document.media_type, document.sha256]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def answer_store(storage: Storage, reuse: bool) -> AnswerStore | None:
    """``storage`` as a store of answers, when reuse is on and it keeps answers."""
    return storage if reuse and isinstance(storage, AnswerStore) else None


async def reusable(
    store: AnswerStore, key: str, upload: Upload, poll: float, rng: random.Random
) -> StoredAnswer | None:
    """The answer kept under ``key``; None when ``upload``'s claim is to ask for it.
    While another live claim is asking for the same key, waits for its answer (``poll``
    seconds between looks) rather than paying for the same request twice."""
    claim = partial(store.claim_answer, key, upload_id=upload.id, attempt=upload.attempts)
    while True:
        found = await patiently(claim, "look up an earlier answer", rng)
        if not isinstance(found, AnswerAsked):
            return found
        await trio.sleep(poll)
