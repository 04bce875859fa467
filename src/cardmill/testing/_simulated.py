"""SimulatedAPI: a provider with hidden rate limits, living in trio (virtual) time."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Literal, final

import attrs
import trio

from ..errors import Limit, Overloaded, RateLimited, TransientError
from ..model import CardDraft, Document
from ..providers import Analysis, RateHint, Usage

__all__ = ["SimulatedAPI", "SimulatedStatistics", "lognormal"]

Latency = float | Callable[[random.Random], float]


def lognormal(median: float, sigma: float) -> Callable[[random.Random], float]:
    """A latency distribution: lognormal with this median; sigma ~0.3 calm, ~1 heavy-tailed."""
    mu = math.log(median)
    return lambda rng: rng.lognormvariate(mu, sigma)


@final
@attrs.frozen
class SimulatedStatistics:
    """What the simulated provider saw."""

    requests: int
    accepted: int
    rate_limited: int
    overloaded: int
    errors: int
    accepted_at: tuple[float, ...]
    rejected_at: tuple[float, ...]


class _HiddenBucket:
    """A provider-side token bucket: refills continuously up to its capacity."""

    def __init__(self, per_minute: float, burst_seconds: float, now: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate * burst_seconds, 1.0)
        self.tokens = self.capacity
        self.at = now

    def refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` tokens are available (0 if they are now)."""
        return max(0.0, (min(cost, self.capacity) - self.tokens) / self.rate)

    def reset_in(self) -> float:
        return (self.capacity - self.tokens) / self.rate


@final
class SimulatedAPI:
    """A provider backed by hidden token buckets, for tests and benchmarks in virtual time.

    Requests are admitted or refused (429) the moment they arrive, against a requests
    per minute bucket and an input tokens per minute bucket, each refilling continuously
    up to ``burst_seconds`` worth of its limit (as the large providers document).
    Admitted requests take a latency drawn from ``latency``. The engine under test is
    not told the limits; it sees only 429s, Retry-After and (with ``headers=True``) the
    rate-limit headers.

    Args:
        requests_per_minute: the hidden request limit (None: unlimited).
        input_tokens_per_minute: the hidden input-token limit (None: unlimited).
        burst_seconds: bucket capacity, in seconds of refill.
        latency: seconds per admitted request, or a distribution (see :func:`lognormal`).
        reject_latency: seconds before a 429 comes back.
        retry_after: ``"seconds"`` (whole seconds, rounded up, as ``retry-after`` is),
            ``"precise"`` (as ``retry-after-ms``) or ``None`` (no Retry-After at all).
        headers: report limit / remaining / reset as rate-limit headers would.
        overloaded_rate: share of requests answered 529.
        error_rate: share of requests answered 500.
        cards: cards per answer.
        seed: for latencies and injected errors.
    """

    name = "simulated"

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        input_tokens_per_minute: float | None = None,
        burst_seconds: float = 60.0,
        latency: Latency = 1.0,
        reject_latency: float = 0.05,
        retry_after: Literal["seconds", "precise"] | None = "seconds",
        headers: bool = False,
        overloaded_rate: float = 0.0,
        error_rate: float = 0.0,
        cards: int = 3,
        seed: int = 0,
    ) -> None:
        self._burst = burst_seconds
        self._latency = latency
        self._reject_latency = reject_latency
        self._retry_after = retry_after
        self._headers = headers
        self._overloaded_rate = overloaded_rate
        self._error_rate = error_rate
        self._cards = cards
        self._rng = random.Random(seed)
        self._requests: _HiddenBucket | None = None
        self._tokens: _HiddenBucket | None = None
        self._limits = (requests_per_minute, input_tokens_per_minute)
        self._started = False
        self._n = self._accepted = self._limited = self._overloaded = self._errors = 0
        self._accepted_at: list[float] = []
        self._rejected_at: list[float] = []

    def _ensure_started(self) -> None:
        # The hidden buckets start full when the first request arrives, in trio time.
        if not self._started:
            self.set_limits(*self._limits)

    def set_limits(
        self,
        requests_per_minute: float | None = None,
        input_tokens_per_minute: float | None = None,
    ) -> None:
        """Change the hidden limits now (call from inside trio)."""
        now = trio.current_time()
        self._started = True
        self._limits = (requests_per_minute, input_tokens_per_minute)
        self._requests = self._replace(self._requests, requests_per_minute, now)
        self._tokens = self._replace(self._tokens, input_tokens_per_minute, now)

    def _replace(
        self, old: _HiddenBucket | None, per_minute: float | None, now: float
    ) -> _HiddenBucket | None:
        if per_minute is None:
            return None
        new = _HiddenBucket(per_minute, self._burst, now)
        if old is not None:
            old.refill(now)
            new.tokens = min(new.capacity, old.tokens)
        return new

    @property
    def requests_per_minute(self) -> float | None:
        """The hidden request limit now."""
        return self._limits[0]

    @staticmethod
    def input_tokens(document: Document) -> int:
        """What the simulated provider counts as a request's input tokens."""
        return 400 + document.size // 4

    def statistics(self) -> SimulatedStatistics:
        """A snapshot of what was asked and answered."""
        return SimulatedStatistics(
            self._n,
            self._accepted,
            self._limited,
            self._overloaded,
            self._errors,
            tuple(self._accepted_at),
            tuple(self._rejected_at),
        )

    def _hint(self) -> RateHint | None:
        if not self._headers:
            return None
        r, t = self._requests, self._tokens
        return RateHint(
            requests_limit=None if r is None else r.rate * 60,
            requests_remaining=None if r is None else math.floor(r.tokens),
            requests_reset=None if r is None else r.reset_in(),
            input_tokens_limit=None if t is None else t.rate * 60,
            input_tokens_remaining=None if t is None else math.floor(t.tokens),
            input_tokens_reset=None if t is None else t.reset_in(),
        )

    async def analyze(self, document: Document) -> Analysis:
        now = trio.current_time()
        self._ensure_started()
        self._n += 1
        roll = self._rng.random()
        if roll < self._overloaded_rate:
            self._overloaded += 1
            await trio.sleep(self._reject_latency)
            raise Overloaded("overloaded (529)")
        if roll < self._overloaded_rate + self._error_rate:
            self._errors += 1
            await trio.sleep(self._reject_latency)
            raise TransientError("internal server error (500)")
        cost = float(self.input_tokens(document))
        waits: list[tuple[float, Limit]] = []
        for bucket, needed, limit in (
            (self._requests, 1.0, Limit.REQUESTS),
            (self._tokens, cost, Limit.INPUT_TOKENS),
        ):
            if bucket is not None:
                bucket.refill(now)
                if bucket.tokens < min(needed, bucket.capacity):
                    waits.append((bucket.wait_for(needed), limit))
        if waits:
            wait, limit = max(waits)
            self._limited += 1
            self._rejected_at.append(now)
            hint = self._hint()
            await trio.sleep(self._reject_latency)
            retry_after: float | None
            if self._retry_after == "precise":
                retry_after = wait
            elif self._retry_after == "seconds":
                retry_after = float(max(1, math.ceil(wait)))
            else:
                retry_after = None
            raise RateLimited(
                f"rate limited (429): {limit.value} per minute",
                retry_after=retry_after,
                limit=limit,
                hint=hint,
            )
        if self._requests is not None:
            self._requests.tokens -= 1.0
        if self._tokens is not None:
            self._tokens.tokens -= cost
        self._accepted += 1
        self._accepted_at.append(now)
        hint = self._hint()
        latency = self._latency(self._rng) if callable(self._latency) else self._latency
        await trio.sleep(latency)
        cards = tuple(
            CardDraft(f"{document.name} #{i + 1}", f"simulated card {i + 1}")
            for i in range(self._cards)
        )
        return Analysis(cards, Usage(int(cost), 60 * self._cards), hint)
