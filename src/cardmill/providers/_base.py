"""The Provider protocol and the values providers return."""

from __future__ import annotations

from typing import Protocol, final, runtime_checkable

import attrs

from ..errors import ProviderError
from ..model import CardDraft, Document, RateHint, Usage

__all__ = ["Analysis", "Provider", "estimate_input_tokens"]


@final
@attrs.frozen
class Analysis:
    """What a provider made of one document: the drafts, the usage and any rate hint."""

    cards: tuple[CardDraft, ...]
    usage: Usage = attrs.field(factory=Usage)
    hint: RateHint | None = None


@runtime_checkable
class Provider(Protocol):
    """Turns one document into card drafts.

    Implementations raise the errors of `cardmill.errors`: ``RateLimited`` for a
    429 (with ``retry_after`` and ``limit`` when known), ``Overloaded`` for a 529,
    ``TransientError`` for what may pass, ``PermanentError`` for what will not,
    ``InvalidOutput`` for an answer that is not valid cards, and ``DocumentError`` for a
    document it cannot send at all (before making any request). Errors carry the
    ``usage`` of the failed request when it is known. The engine retries, paces and
    counts; a provider makes exactly one request per call.
    """

    name: str

    async def analyze(self, document: Document) -> Analysis:
        """Analyse one document (one request to the model)."""
        ...


def estimate_input_tokens(document: Document) -> int:
    """A cheap, deliberately generous guess of a request's input tokens.

    About four bytes a token for text; PDFs are charged by size, as their text and page
    images both count. The engine corrects its accounting from the reported usage.
    """
    overhead = 600  # system prompt, tool schema, framing
    if document.media_type == "application/pdf":
        return overhead + document.size // 3
    return overhead + document.size // 4


def answered_with_error(error: ProviderError) -> ProviderError:
    """``error``, marked as the server's answer: the request was refused, so it used no
    tokens (unless the answer said otherwise)."""
    if error.usage is None:
        error.usage = Usage()
    return error
