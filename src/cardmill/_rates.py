"""What providers say about their limits: usage, rate hints and limit kinds.

These values sit below every other module (`cardmill.errors` uses them to describe a 429)
and import nothing of cardmill. Import them from `cardmill` or `cardmill.model`, which
re-export them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import final

import attrs

__all__ = ["LimitKind", "RateHint", "Usage"]


class LimitKind(StrEnum):
    """Which of a provider's limits: requests, input tokens or output tokens a minute."""

    REQUESTS = "requests"
    INPUT_TOKENS = "input_tokens"
    OUTPUT_TOKENS = "output_tokens"


@final
@attrs.frozen
class Usage:
    """Tokens one request used, as the provider reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0

    @property
    def rate_limited_input_tokens(self) -> int:
        """The input tokens that count toward an input-token rate limit: uncached input
        and cache writes. Cache reads do not count (Anthropic, for current models);
        providers that count them report them in ``input_tokens``."""
        return self.input_tokens + self.cache_creation_input_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_creation_input_tokens + other.cache_creation_input_tokens,
        )


@final
@attrs.frozen
class RateHint:
    """What the provider's rate-limit headers said about our quota.

    Limits are per minute, as providers state them; ``*_reset`` are seconds from the
    moment the answer was received until that bucket is full again. ``None`` means the
    header was absent.
    """

    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_reset: float | None = None
    input_tokens_limit: float | None = None
    input_tokens_remaining: float | None = None
    input_tokens_reset: float | None = None
    output_tokens_limit: float | None = None
    output_tokens_remaining: float | None = None
    output_tokens_reset: float | None = None

    @property
    def empty(self) -> bool:
        """True when no header was present."""
        return all(v is None for v in attrs.astuple(self))
