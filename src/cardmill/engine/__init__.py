"""The engine: a nursery-based executor and the adaptive token bucket that paces it."""

from __future__ import annotations

from ._batch import BatchExecutor as BatchExecutor
from ._bucket import AdaptiveBucket as AdaptiveBucket
from ._bucket import Limits as Limits
from ._core import BucketStatistics as BucketStatistics
from ._core import Ticket as Ticket
from ._estimate import estimate_cost as estimate_cost
from ._estimate import expected_output_tokens as expected_output_tokens
from ._events import BatchEnded as BatchEnded
from ._events import BatchProgress as BatchProgress
from ._events import BatchSubmitted as BatchSubmitted
from ._events import CostCapReached as CostCapReached
from ._events import Event as Event
from ._events import Observer as Observer
from ._events import RateChanged as RateChanged
from ._events import RateLimitHit as RateLimitHit
from ._events import RequestFinished as RequestFinished
from ._events import RunFinished as RunFinished
from ._events import RunSummary as RunSummary
from ._events import UploadCompleted as UploadCompleted
from ._events import UploadFailed as UploadFailed
from ._events import UploadRetrying as UploadRetrying
from ._events import UploadStarted as UploadStarted
from ._executor import Engine as Engine
from ._groups import root_error as root_error
from ._retry import GiveUp as GiveUp
from ._retry import Retry as Retry
from ._retry import RetryPolicy as RetryPolicy
from ._retry import Tries as Tries
from ._reuse import answer_key as answer_key
from ._shared import RateLimiter as RateLimiter
from ._shared import RateStateStore as RateStateStore
from ._shared import SharedBucket as SharedBucket

__all__ = [
    "AdaptiveBucket",
    "BatchEnded",
    "BatchExecutor",
    "BatchProgress",
    "BatchSubmitted",
    "BucketStatistics",
    "CostCapReached",
    "Engine",
    "Event",
    "GiveUp",
    "Limits",
    "Observer",
    "RateChanged",
    "RateLimitHit",
    "RateLimiter",
    "RateStateStore",
    "RequestFinished",
    "Retry",
    "RetryPolicy",
    "RunFinished",
    "RunSummary",
    "SharedBucket",
    "Ticket",
    "Tries",
    "UploadCompleted",
    "UploadFailed",
    "UploadRetrying",
    "UploadStarted",
    "answer_key",
    "estimate_cost",
    "expected_output_tokens",
    "root_error",
]
