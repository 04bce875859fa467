"""HiddenLimits: a provider's rate limits as it enforces them, for the fakes of the test kit.

Providers document their limits per minute but enforce them as token buckets that refill
continuously, and may hold only a second or two of the limit at a time (Anthropic: "60
RPM may be enforced as 1 request per second"). The binding limit for documents is often
input tokens, charged with the provider's own count, which the client cannot see before
it sends. `HiddenLimits` models all of that, in whatever clock it is given.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import final

import attrs

from ..model import LimitKind, RateHint

__all__ = ["Admission", "HiddenLimits"]

# A request arriving exactly when its tokens are due is admitted: refill and pacing are
# computed in floating point, and a provider rounds in the client's favour there too.
_EPSILON = 1e-9


class _Bucket:
    """One token bucket: refills at ``per_minute / 60`` a second, up to ``capacity``."""

    def __init__(self, per_minute: float, burst_seconds: float, now: float) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate * burst_seconds, 1.0)
        self.tokens = self.capacity
        self.at = now

    def refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def wait_for(self, cost: float) -> float:
        """Seconds until ``cost`` tokens are there (a cost above the capacity needs a
        full bucket); 0 when they are now."""
        need = min(cost, self.capacity)
        return max(0.0, (need - self.tokens) / self.rate)

    def reset_in(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.tokens) / self.rate)


@final
@attrs.frozen
class Admission:
    """A provider's verdict on one request: admitted, or refused by a limit, with how
    long to wait until it would be admitted."""

    refused_by: LimitKind | None = None
    wait: float = 0.0

    @property
    def admitted(self) -> bool:
        """True when no limit refused it."""
        return self.refused_by is None


@final
class HiddenLimits:
    """Requests, input tokens and output tokens per minute, each a token bucket.

    A request is admitted when every bucket holds what it costs (a request; its input
    tokens, capped at the bucket's capacity so a huge request is not refused forever; and
    for output tokens, any at all, since they are charged when the answer is done).
    Otherwise it is refused, naming the limit that would wait longest.

    Args:
        requests_per_minute: the request limit, or None.
        input_tokens_per_minute: the input-token limit, or None.
        output_tokens_per_minute: the output-token limit, or None.
        burst_seconds: each bucket's capacity in seconds of its limit, for all limits or
            per limit (``{LimitKind.REQUESTS: 1.0, LimitKind.INPUT_TOKENS: 30.0}``; limits not
            named get 60 s).
        now: the time the buckets start full.
    """

    def __init__(
        self,
        *,
        requests_per_minute: float | None = None,
        input_tokens_per_minute: float | None = None,
        output_tokens_per_minute: float | None = None,
        burst_seconds: float | Mapping[LimitKind, float] = 60.0,
        now: float = 0.0,
    ) -> None:
        if isinstance(burst_seconds, Mapping):
            bursts = dict(burst_seconds)
        else:
            bursts = {kind: float(burst_seconds) for kind in LimitKind}
        for kind, seconds in bursts.items():
            if not seconds > 0:
                raise ValueError(f"burst_seconds for {kind.value} must be > 0")
        self._bursts = bursts
        self._buckets: dict[LimitKind, _Bucket] = {}
        self.set_limits(
            requests_per_minute, input_tokens_per_minute, output_tokens_per_minute, now=now
        )

    def set_limits(
        self,
        requests_per_minute: float | None = None,
        input_tokens_per_minute: float | None = None,
        output_tokens_per_minute: float | None = None,
        *,
        now: float,
    ) -> None:
        """Change the limits at ``now``; a bucket keeps what it holds (up to its new size)."""
        wanted = {
            LimitKind.REQUESTS: requests_per_minute,
            LimitKind.INPUT_TOKENS: input_tokens_per_minute,
            LimitKind.OUTPUT_TOKENS: output_tokens_per_minute,
        }
        buckets: dict[LimitKind, _Bucket] = {}
        for kind, per_minute in wanted.items():
            if per_minute is None:
                continue
            if not per_minute > 0:
                raise ValueError(f"{kind.value} per minute must be > 0")
            new = _Bucket(per_minute, self._bursts.get(kind, 60.0), now)
            old = self._buckets.get(kind)
            if old is not None:
                old.refill(now)
                new.tokens = min(new.capacity, old.tokens)
            buckets[kind] = new
        self._buckets = buckets

    def per_minute(self, kind: LimitKind) -> float | None:
        """The limit of that kind now, per minute (None: unlimited)."""
        bucket = self._buckets.get(kind)
        return None if bucket is None else bucket.per_minute

    def capacity(self, kind: LimitKind) -> float | None:
        """How much the bucket of that kind holds when full."""
        bucket = self._buckets.get(kind)
        return None if bucket is None else bucket.capacity

    def admit(self, now: float, input_tokens: float) -> Admission:
        """Admit (and charge) one request arriving at ``now``, or refuse it."""
        costs = {LimitKind.REQUESTS: 1.0, LimitKind.INPUT_TOKENS: float(input_tokens)}
        waits: list[tuple[float, LimitKind]] = []
        for kind, bucket in self._buckets.items():
            bucket.refill(now)
            if kind == LimitKind.OUTPUT_TOKENS:
                if bucket.tokens <= 0:
                    waits.append((max(-bucket.tokens, 1.0) / bucket.rate, kind))
            elif bucket.tokens < min(costs[kind], bucket.capacity) - _EPSILON:
                waits.append((bucket.wait_for(costs[kind]), kind))
        if waits:
            wait, kind = max(waits, key=lambda w: w[0])
            return Admission(kind, wait)
        for kind, bucket in self._buckets.items():
            if kind != LimitKind.OUTPUT_TOKENS:
                bucket.tokens -= min(costs[kind], bucket.capacity)
        return Admission()

    def finish(self, now: float, output_tokens: float) -> None:
        """Charge an answer's output tokens when it is done (the bucket may go below 0)."""
        bucket = self._buckets.get(LimitKind.OUTPUT_TOKENS)
        if bucket is not None:
            bucket.refill(now)
            bucket.tokens -= output_tokens

    def hint(self, now: float) -> RateHint:
        """What rate-limit headers would say now: limits per minute, what remains (whole
        units), and seconds until each bucket is full."""
        values: dict[str, float | None] = {}
        for kind, prefix in (
            (LimitKind.REQUESTS, "requests"),
            (LimitKind.INPUT_TOKENS, "input_tokens"),
            (LimitKind.OUTPUT_TOKENS, "output_tokens"),
        ):
            bucket = self._buckets.get(kind)
            if bucket is None:
                continue
            bucket.refill(now)
            values[f"{prefix}_limit"] = bucket.per_minute
            values[f"{prefix}_remaining"] = float(max(0, math.floor(bucket.tokens)))
            values[f"{prefix}_reset"] = bucket.reset_in()
        return RateHint(**values)
