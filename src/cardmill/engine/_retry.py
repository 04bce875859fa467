"""When to try again, and how long to wait first."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, final

import attrs

from ..errors import InvalidOutput, Overloaded, PermanentError, RateLimited, TransientError

__all__ = ["RetryPolicy"]


def _at_least(minimum: float) -> Callable[[object, attrs.Attribute[Any], float], None]:
    def check(_inst: object, attr: attrs.Attribute[Any], value: float) -> None:
        if not value >= minimum:
            raise ValueError(f"{attr.name} must be >= {minimum}")

    return check


@final
@attrs.frozen
class RetryPolicy:
    """Bounded retries with full-jitter exponential backoff.

    ``RateLimited``, ``Overloaded`` and ``TransientError`` are retried after a wait,
    ``InvalidOutput`` at once; ``PermanentError`` (and anything unexpected from a
    provider) is not. 429s have their own, larger budget: they say nothing about the
    document, only about the quota, and the bucket already slows down for them.

    Args:
        max_attempts: attempts per upload for transient failures and 529s.
        max_rate_limited: 429s one upload may absorb before it fails.
        output_retries: times the model is asked again when its answer is not valid
            cards (cut off, or off the schema); each ask is a request, paced and counted.
        base_delay: the first backoff's ceiling, in seconds.
        max_delay: the largest backoff (Retry-After may ask for more and is honoured).
        timeout: seconds one request may take before it counts as a transient failure.
        lease_seconds: how long a claim is held without a heartbeat.
    """

    max_attempts: int = attrs.field(default=5, validator=_at_least(1))
    max_rate_limited: int = attrs.field(default=50, validator=_at_least(0))
    output_retries: int = attrs.field(default=2, validator=_at_least(0))
    base_delay: float = attrs.field(default=1.0, validator=_at_least(0))
    max_delay: float = attrs.field(default=60.0, validator=_at_least(0))
    timeout: float = attrs.field(default=300.0, validator=_at_least(0.001))
    lease_seconds: float = attrs.field(default=60.0, validator=_at_least(1))

    def backoff(self, failures: int, rng: random.Random) -> float:
        """Full jitter: uniform between 0 and ``base_delay * 2**(failures-1)``, capped."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** max(failures - 1, 0))
        return rng.uniform(0.0, ceiling)

    def retryable(self, error: BaseException) -> bool:
        """Whether an attempt that raised ``error`` may be tried again."""
        if isinstance(error, PermanentError):
            return False
        return isinstance(error, RateLimited | Overloaded | TransientError | InvalidOutput)
