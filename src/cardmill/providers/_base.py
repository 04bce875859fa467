"""The Provider protocol and the values providers return."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol, final, runtime_checkable

import attrs

from ..errors import ProviderError
from ..model import BatchCounts, CardDraft, Document, RateHint, Usage

__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_REQUESTS",
    "Analysis",
    "BatchProvider",
    "BatchResult",
    "BatchStatus",
    "Provider",
    "estimate_input_tokens",
]


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


BATCH_MAX_REQUESTS: Final = 100_000
"""The most requests Anthropic's Message Batches API takes in one batch."""
BATCH_MAX_BYTES: Final = 256 * 1000 * 1000
"""The largest batch it takes, in bytes of the create request's body (256 MB)."""


@final
@attrs.frozen
class BatchStatus:
    """A provider's view of one batch.

    ``processing_status`` is the provider's: ``in_progress``, ``canceling`` or ``ended``
    (results can be read once it has ended). ``created_at`` is its creation time.
    ``archived``: the provider no longer has its results (archived after its retention
    period).
    """

    provider_batch_id: str
    processing_status: str
    counts: BatchCounts = attrs.field(factory=BatchCounts)
    created_at: datetime | None = None
    archived: bool = False

    @property
    def ended(self) -> bool:
        """Every request has succeeded, errored, been canceled or expired."""
        return self.processing_status == "ended"


@final
@attrs.frozen
class BatchResult:
    """The outcome of one request of a batch, by its ``custom_id``.

    ``kind`` is the provider's result type. ``succeeded``: ``analysis`` holds the cards and
    their usage, or, for an answer that is not valid cards, ``error`` is the `InvalidOutput`
    (with its usage) the same answer raises synchronously. ``errored``: ``error`` is what the
    provider's error would raise synchronously (`PermanentError` for an invalid request,
    `TransientError` or `Overloaded` for a server error). ``canceled`` and ``expired``: the
    request was not processed and costs nothing.
    """

    custom_id: str
    kind: str
    analysis: Analysis | None = None
    error: ProviderError | None = None


@runtime_checkable
class BatchProvider(Protocol):
    """A provider that can also send many documents as one batch, at a batch price.

    ``model`` names the model (for prices). Limits: at most ``batch_max_requests`` requests
    and ``batch_max_bytes`` bytes (of the serialised requests) per batch. Errors of the
    calls are those of `Provider` (`RateLimited`, `TransientError`, `PermanentError`).
    """

    name: str
    model: str
    batch_max_requests: int
    batch_max_bytes: int

    async def batch_request(self, document: Document, custom_id: str) -> dict[str, Any]:
        """The batch item for ``document``: ``{"custom_id": ..., "params": {...}}``, with
        the same params a synchronous request would send. Raises DocumentError as
        `Provider.analyze` would, before anything is sent."""
        ...

    async def create_batch(self, requests: Sequence[Mapping[str, Any]]) -> BatchStatus:
        """Submit one batch of items made by `batch_request`."""
        ...

    async def retrieve_batch(self, provider_batch_id: str) -> BatchStatus:
        """The batch's current status and counts."""
        ...

    def batch_results(self, provider_batch_id: str) -> AsyncIterator[BatchResult]:
        """The results of an ended batch, one per request, streamed."""
        ...

    async def cancel_batch(self, provider_batch_id: str) -> BatchStatus:
        """Ask the provider to cancel the batch (it becomes ``canceling``, then ``ended``)."""
        ...

    async def find_batches(self, created_after: datetime) -> list[BatchStatus]:
        """Batches of this key created at or after ``created_after``, newest first (to
        re-attach to a batch whose create call was sent but not recorded)."""
        ...
