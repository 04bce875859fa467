"""Reading Anthropic's Message Batches answers: a batch's status, an errored result."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Final

from ..errors import Overloaded, PermanentError, ProviderError, TransientError
from ..model import BatchCounts
from ._base import BatchStatus, answered_with_error

__all__ = ["CUSTOM_ID", "batch_status", "errored"]

CUSTOM_ID: Final = r"[a-zA-Z0-9_-]{1,64}"
"""The pattern the API holds every ``custom_id`` of a batch to."""
_PERMANENT: Final = frozenset(
    {"invalid_request_error", "authentication_error", "permission_error", "request_too_large"}
)


def _count(value: object) -> int:
    # Counts from the wire: anything that is not a non-negative int reads as 0.
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def batch_status(batch: Any) -> BatchStatus:
    """The `BatchStatus` of an SDK ``MessageBatch``."""
    counts = getattr(batch, "request_counts", None)
    created = getattr(batch, "created_at", None)
    return BatchStatus(
        provider_batch_id=str(batch.id),
        processing_status=str(getattr(batch, "processing_status", "")),
        counts=BatchCounts(
            processing=_count(getattr(counts, "processing", 0)),
            succeeded=_count(getattr(counts, "succeeded", 0)),
            errored=_count(getattr(counts, "errored", 0)),
            canceled=_count(getattr(counts, "canceled", 0)),
            expired=_count(getattr(counts, "expired", 0)),
        ),
        created_at=created if isinstance(created, datetime) else None,
        archived=getattr(batch, "archived_at", None) is not None,
    )


def errored(result: Any, hide: Callable[[str], str]) -> ProviderError:
    """What an ``errored`` batch result would have raised as a synchronous request: an
    invalid request is permanent; an overloaded server is `Overloaded`; any other error
    (``api_error``, a rate limit while the batch ran, an unknown type) may pass. None of
    them used tokens."""
    outer = getattr(result, "error", None)
    inner = getattr(outer, "error", None)
    kind = str(getattr(inner, "type", None) or "error")
    message = hide(str(getattr(inner, "message", None) or ""))
    text = f"batch request {kind}: {message}" if message else f"batch request {kind}"
    error: ProviderError
    if kind in _PERMANENT:
        error = PermanentError(text)
    elif kind == "overloaded_error":
        error = Overloaded(text)
    else:
        error = TransientError(text)
    return answered_with_error(error)
