"""Events the engine reports to an observer, and the summary of one execution."""

from __future__ import annotations

from typing import Protocol, final

import attrs

from ..model import LimitKind, Run, Upload, Usage

__all__ = [
    "Event",
    "Observer",
    "RateChanged",
    "RateLimitHit",
    "RequestFinished",
    "RunFinished",
    "RunSummary",
    "UploadCompleted",
    "UploadFailed",
    "UploadRetrying",
    "UploadStarted",
]


@final
@attrs.frozen
class UploadStarted:
    """An upload was claimed and its first request is about to be paced."""

    upload: Upload
    at: float


@final
@attrs.frozen
class UploadCompleted:
    """An upload's cards were stored; ``card_count`` of them."""

    upload: Upload
    card_count: int
    attempts: int
    at: float


@final
@attrs.frozen
class UploadFailed:
    """An upload ended FAILED with a one-line ``reason``."""

    upload: Upload
    reason: str
    attempts: int
    at: float


@final
@attrs.frozen
class UploadRetrying:
    """An attempt failed; the next one comes after ``delay`` seconds (at least)."""

    upload: Upload
    attempt: int
    error: str
    delay: float
    at: float


@final
@attrs.frozen
class RateLimitHit:
    """The provider answered 429."""

    upload: Upload
    limit: LimitKind | None
    retry_after: float | None
    at: float


@final
@attrs.frozen
class RequestFinished:
    """A request to the provider ended, answered or not, after ``duration`` seconds.

    ``error`` names the [error][cardmill.errors.ProviderError]'s class
    (``"RateLimited"``, ``"Overloaded"``, ``"TransientError"``, ...), None for an answer;
    ``usage`` is what the provider reported for it (None when it reported nothing).
    A document refused before anything was sent makes no request, and no event.
    """

    upload: Upload
    duration: float
    error: str | None
    usage: Usage | None
    at: float


@final
@attrs.frozen
class RateChanged:
    """The bucket's pacing rate changed (requests per second; None = unpaced).

    ``estimated_*`` are the provider's limits as the bucket has learnt them (per
    second; None while nothing is known).
    """

    requests_per_second: float | None
    input_tokens_per_second: float | None
    at: float
    estimated_requests_per_second: float | None = None
    estimated_input_tokens_per_second: float | None = None


@final
@attrs.frozen
class RunSummary:
    """What one [`Engine.execute`][cardmill.Engine.execute] call did.

    ``run`` is the run as stored at the end; the counters cover this execution.
    """

    run: Run
    requests: int
    rate_limited: int
    overloaded: int
    retries: int
    input_tokens: int
    output_tokens: int
    elapsed: float
    peak_in_flight: int
    final_rate: float | None
    completed: int = 0
    failed: int = 0


@final
@attrs.frozen
class RunFinished:
    """``execute`` is returning (or was cancelled: ``summary.run.status`` says)."""

    summary: RunSummary
    at: float


Event = (
    UploadStarted
    | UploadCompleted
    | UploadFailed
    | UploadRetrying
    | RequestFinished
    | RateLimitHit
    | RateChanged
    | RunFinished
)
"""The union of every event type an observer receives."""


class Observer(Protocol):
    """Anything callable with an event. Called on the event loop: keep it quick."""

    def __call__(self, event: Event, /) -> None: ...
