"""When to try again, and how long to wait first."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, final

import attrs

from ..errors import InvalidOutput, Overloaded, ProviderError, RateLimited, TransientError

__all__ = ["GiveUp", "Retry", "RetryPolicy", "Tries"]


def _at_least(minimum: float) -> Callable[[object, attrs.Attribute[Any], float], None]:
    def check(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
        if not value >= minimum:
            raise ValueError(f"{attr.name} must be >= {minimum}")

    return check


@final
@attrs.frozen
class Retry:
    """Try again after ``delay`` seconds."""

    delay: float


@final
@attrs.frozen
class GiveUp:
    """Stop: the upload fails with this one-line ``reason``."""

    reason: str


@final
@attrs.frozen
class Tries:
    """What one upload has been through so far, this attempt's error included."""

    attempt: int = 0
    failures: int = 0  # transient errors and 529s
    rate_limited: int = 0
    invalid: int = 0


@final
@attrs.frozen
class RetryPolicy:
    """Which failed requests are tried again, how often, and after how long.

    ``RateLimited``, ``Overloaded`` and ``TransientError`` are retried after a wait,
    ``InvalidOutput`` at once; ``PermanentError`` (and anything unexpected from a
    provider) is not. 429s have their own, larger budget: they say nothing about the
    document, only about the quota, and the rate limiter already slows down for them.
    Backoff is full-jitter exponential.

    Args:
        max_attempts: attempts per upload for transient failures and 529s.
        max_rate_limited: 429s one upload may absorb before it fails.
        output_retries: times the model is asked again when its answer is not valid
            cards (cut off, or off the schema); each ask is a request, paced and counted.
        base_delay: the first backoff's ceiling, in seconds.
        max_delay: the largest backoff (Retry-After may ask for more and is honoured).
    """

    max_attempts: int = attrs.field(default=5, validator=_at_least(1))
    max_rate_limited: int = attrs.field(default=50, validator=_at_least(0))
    output_retries: int = attrs.field(default=2, validator=_at_least(0))
    base_delay: float = attrs.field(default=1.0, validator=_at_least(0))
    max_delay: float = attrs.field(default=60.0, validator=_at_least(0))

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Full jitter: uniform between 0 and ``base_delay * 2**(failures-1)``, capped."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(failures - 1, 0))
        return rng.uniform(0.0, ceiling)

    def decide(self, error: ProviderError, tries: Tries, rng: random.Random) -> Retry | GiveUp:
        """What to do after a request failed with ``error``.

        ``tries`` counts this failure already. The engine paces every retry through its
        rate limiter as well; the delay here comes on top.
        """
        why = _reason(error)
        if isinstance(error, RateLimited):
            if tries.rate_limited > self.max_rate_limited:
                return GiveUp(f"still rate limited after {tries.rate_limited} tries: {why}")
            # The rate limiter holds everyone until Retry-After is over and paces them
            # out; a little jitter keeps retries from lining up behind one another.
            return Retry(rng.uniform(0.0, min(1.0, 0.1 * (error.retry_after or 1.0))))
        if isinstance(error, InvalidOutput):
            if tries.invalid > self.output_retries:
                return GiveUp(f"model output invalid after {tries.invalid} tries: {why}")
            return Retry(0.0)  # ask again at once: the rate limiter paces it
        if isinstance(error, Overloaded | TransientError):
            if tries.failures >= self.max_attempts:
                return GiveUp(f"gave up after {tries.attempt} attempts: {why}")
            delay = self.backoff(tries.failures, rng)
            if isinstance(error, Overloaded) and error.retry_after:
                delay = max(delay, error.retry_after)
            return Retry(delay)
        return GiveUp(why)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
