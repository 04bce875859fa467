"""Reuse: the key an answer is kept under, and looking an upload's up before asking."""

from __future__ import annotations

import hashlib
import json
import random
from functools import partial
from typing import Final

import attrs
import trio

from ..model import AnswerAsked, Document, StoredAnswer, Upload
from ..providers import request_fingerprint
from ..storage import AnswerStore, Storage
from ._patience import patiently

__all__ = ["ANSWER_FORMAT", "Reuse", "answer_key", "reusable", "reuse_for"]

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
    return None if fingerprint is None else _key(fingerprint, document)


def _key(fingerprint: str, document: Document) -> str:
    parts = [ANSWER_FORMAT, fingerprint, document.media_type, document.sha256]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@attrs.frozen
class Reuse:
    """Where answers are kept, and the fingerprint of the provider's requests, made once
    (it digests the whole prompt and schema) rather than for every upload."""

    store: AnswerStore
    fingerprint: str

    def key(self, document: Document) -> str:
        """`answer_key` of the provider for ``document``."""
        return _key(self.fingerprint, document)


def reuse_for(storage: Storage, provider: object, reuse: bool) -> Reuse | None:
    """Reuse for ``provider``'s answers in ``storage``: None when it is off, the storage
    keeps no answers, or the provider does not say what determines its answers."""
    if not reuse or not isinstance(storage, AnswerStore):
        return None
    fingerprint = request_fingerprint(provider)
    return None if fingerprint is None else Reuse(storage, fingerprint)


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
