"""Events the engine reports to an observer, and the summary of one execution."""

from __future__ import annotations

from typing import Protocol, final

import attrs

from ..model import Batch, BatchCounts, LimitKind, Run, Upload, Usage

__all__ = [
    "BatchEnded",
    "BatchProgress",
    "BatchSubmitted",
    "CostCapReached",
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
    """An upload's cards were stored; ``card_count`` of them. A ``reused`` upload was
    completed from an earlier answer, with no request (``attempts`` 0)."""

    upload: Upload
    card_count: int
    attempts: int
    at: float
    reused: bool = False


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
    ``usage`` is what the provider reported for it (None when it reported nothing);
    ``cost_usd`` what the engine recorded that usage at, the same number added to the
    upload's and the run's stored cost (None when the model has no price or nothing was
    reported). A document refused before anything was sent makes no request, and no
    event.
    """

    upload: Upload
    duration: float
    error: str | None
    usage: Usage | None
    at: float
    cost_usd: float | None = None


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
    ``cost_usd`` is the run's recorded cost (every execution's), None when the model's
    price is unknown; ``stopped`` says why an execution ended with uploads left to do (the
    spending cap, a batch the provider refused), None otherwise; ``capped`` is True when
    that was the spending cap (resume with a higher one to go on). ``reused`` of the
    ``completed`` uploads were completed from earlier answers without a request, which
    had used ``saved_tokens`` and cost ``saved_cost_usd``.
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
    cost_usd: float | None = None
    stopped: str | None = None
    capped: bool = False
    reused: int = 0
    saved_tokens: int = 0
    saved_cost_usd: float = 0.0


@final
@attrs.frozen
class BatchSubmitted:
    """The provider accepted a batch of ``batch.size`` uploads (or one was re-attached)."""

    batch: Batch
    at: float


@final
@attrs.frozen
class BatchProgress:
    """A poll found a batch's counts moved: ``counts`` are the provider's tally
    (processing, succeeded, errored, canceled, expired)."""

    batch: Batch
    counts: BatchCounts
    at: float


@final
@attrs.frozen
class BatchEnded:
    """A batch's results were collected: ``completed`` and ``failed`` uploads settled by
    them, ``released`` sent back to PENDING (to go in a later batch)."""

    batch: Batch
    completed: int
    failed: int
    released: int
    at: float


@final
@attrs.frozen
class CostCapReached:
    """Dispatch stopped: one more request could take the run past ``max_cost`` (USD).

    ``spent`` is the run's recorded cost when it stopped; ``reason`` says it in a line.
    Requests in flight still finish; the run ends CANCELLED, resumable with a higher cap.
    """

    max_cost: float
    spent: float
    reason: str
    at: float


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
    | CostCapReached
    | RunFinished
    | BatchSubmitted
    | BatchProgress
    | BatchEnded
)
"""The union of every event type an observer receives."""


class Observer(Protocol):
    """Anything callable with an event. Called on the event loop: keep it quick."""

    def __call__(self, event: Event, /) -> None: ...
