"""The Provider protocol and the values providers return."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, Protocol, final, runtime_checkable

import attrs

from ..errors import ProviderError
from ..model import BatchCounts, CardDraft, Document, RateHint, Upload, Usage

__all__ = [
    "BATCH_MAX_BYTES",
    "BATCH_MAX_REQUESTS",
    "Analysis",
    "BatchProvider",
    "BatchResult",
    "BatchStatus",
    "Provider",
    "estimate_input_tokens",
    "fingerprint",
    "request_fingerprint",
    "request_overhead_tokens",
]


def _model_name(value: object) -> str | None:
    """A model name an answer gave, or None for anything that is not a short printable
    name (answers are untrusted)."""
    if isinstance(value, str) and 0 < len(value) <= 200 and value.isprintable():
        return value
    return None


@final
@attrs.frozen
class Analysis:
    """What a provider made of one document: the drafts, the usage, any rate hint, and
    the ``model`` that answered, as the answer names it (None when it does not say; a
    name that is not short printable text counts as none). Each answer is priced at
    the model it names."""

    cards: tuple[CardDraft, ...]
    usage: Usage = attrs.field(factory=Usage)
    hint: RateHint | None = None
    model: str | None = attrs.field(default=None, converter=_model_name)


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


DEFAULT_OVERHEAD_TOKENS: Final = 600
"""The input tokens a request is taken to carry besides its document (system prompt,
answer schema, framing) when its provider does not count them."""
FRAMING_TOKENS: Final = 350
"""What a provider adds to the prompt it is sent, beyond the bytes of it we count: the
API's own instructions for forced tool use or a schema, the message framing."""
PROMPT_BYTES_PER_TOKEN: Final = 3
"""Bytes a token for the instructions and the JSON schema a request carries: generous,
since JSON's punctuation takes more tokens than prose."""


def estimate_input_tokens(document: Document | Upload, *, overhead: int | None = None) -> int:
    """A cheap, deliberately generous guess of a request's input tokens (for a
    ``document``, or an `Upload` by its size and media type).

    About four bytes a token for text; PDFs are charged by size, as their text and page
    images both count. ``overhead`` is what every request carries besides the document
    (`request_overhead_tokens` of its provider); by default a rule of thumb
    (``DEFAULT_OVERHEAD_TOKENS``, right for the built-in recipe). The engine corrects its
    accounting from the reported usage.
    """
    fixed = DEFAULT_OVERHEAD_TOKENS if overhead is None else max(0, int(overhead))
    if document.media_type == "application/pdf":
        return fixed + document.size // 3
    return fixed + document.size // 4


def prompt_tokens(*parts: object) -> int:
    """A generous count of the tokens of what a request carries besides its document
    (its instructions, the schema of its answer): ``FRAMING_TOKENS``, and the bytes of
    ``parts`` as JSON at ``PROMPT_BYTES_PER_TOKEN``."""
    size = sum(len(json.dumps(part, ensure_ascii=False).encode()) for part in parts)
    return FRAMING_TOKENS + -(-size // PROMPT_BYTES_PER_TOKEN)


def request_overhead_tokens(provider: object) -> int:
    """The input tokens every request of ``provider`` carries besides its document: its
    system prompt, the schema of its answer and the framing, for the recipe it was made
    with.

    A provider that can count them says so with an ``overhead_tokens()`` method (the
    built-in ones do, from what they really send); for any other (or one whose method
    answers None) it is ``DEFAULT_OVERHEAD_TOKENS``.
    """
    count = getattr(provider, "overhead_tokens", None)
    if callable(count):
        value = count()
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return DEFAULT_OVERHEAD_TOKENS


def request_fingerprint(provider: object) -> str | None:
    """What determines ``provider``'s answers besides the document, as a digest: its
    name, model, and the request it sends around a document (the recipe's prompt and
    schema, ``max_tokens``, ...). Answers are reused only between requests with the
    same fingerprint (see `cardmill.engine.answer_key`).

    A provider says it with a ``request_fingerprint()`` method (the built-in ones do);
    for any other (or one whose method answers None or "") it is None, and its answers
    are never reused.
    """
    method = getattr(provider, "request_fingerprint", None)
    if not callable(method):
        return None
    value = method()
    return value if isinstance(value, str) and value else None


def fingerprint(*parts: object) -> str:
    """A digest of ``parts`` as canonical JSON, for a provider's
    ``request_fingerprint()``."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


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
