"""AdaptiveBucket: pace requests just under the provider's real limit, in one process.

Two quantities, requests and input tokens, are paced as the provider's token buckets
would allow (see ``engine/_dimension.py`` for how each learns its limit from 429s, and
follows the rate-limit headers when the provider sends them). A Retry-After pauses
everything; when it lifts, waiters leave one interval apart, in arrival order. Until
the first sign of a limit, a slow start keeps only a few requests in flight.

All time comes from ``trio.current_time()``, so everything runs in virtual time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, final

import attrs
import trio

from ..model import LimitKind, RateHint
from ._core import BucketCore, BucketStatistics, Ticket

__all__ = ["AdaptiveBucket", "BucketStatistics", "Limits", "Ticket"]


def _positive(_inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attr.name} must be a finite number > 0")


@final
@attrs.frozen
class Limits:
    """Ceilings you know from your provider tier; unknown ones are learnt.

    Args:
        requests_per_minute: the most requests per minute to send (a ceiling).
        input_tokens_per_minute: the most input tokens per minute to send (a ceiling).
        start_requests_per_minute: a first guess to pace at; unlike the ceilings it is
            only a starting point, and the bucket learns up or down from it.
    """

    requests_per_minute: float | None = attrs.field(default=None, validator=_positive)
    input_tokens_per_minute: float | None = attrs.field(default=None, validator=_positive)
    start_requests_per_minute: float | None = attrs.field(default=None, validator=_positive)

    def core(self, state: dict[str, Any] | None = None) -> BucketCore:
        """A bucket core with these limits (restored from ``state`` when given)."""
        rpm, tpm = self.requests_per_minute, self.input_tokens_per_minute
        start = self.start_requests_per_minute
        args = (rpm / 60 if rpm else None, tpm / 60 if tpm else None, start / 60 if start else None)
        if state is not None and state.get("format") == BucketCore.STATE_FORMAT:
            return BucketCore.from_state(state, *args)
        # None yet, or written by another version of cardmill: learn afresh.
        return BucketCore(*args)


@final
class AdaptiveBucket:
    """Paces requests to the provider's real limit, learnt from 429s and headers.

    The engine calls [`acquire`][cardmill.AdaptiveBucket.acquire] before every request,
    then exactly one of [`on_success`][cardmill.AdaptiveBucket.on_success],
    [`on_rate_limited`][cardmill.AdaptiveBucket.on_rate_limited] or
    [`on_failure`][cardmill.AdaptiveBucket.on_failure]. You may share
    one bucket between engines that use the same API key.

    Args:
        limits: ceilings you know; without them the bucket starts unpaced, with a slow
            start (two requests in flight, one more per answer), until the first 429 or
            rate-limit header.
        on_rate_change: called with a statistics snapshot whenever a rate changes.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        on_rate_change: Callable[[BucketStatistics], None] | None = None,
    ) -> None:
        self._core = (limits or Limits()).core()
        self._lock = trio.Lock()  # FIFO: waiters leave in arrival order, one at a time
        self._changed = trio.Event()
        self._waiting = 0
        self._listeners: list[Callable[[BucketStatistics], None]] = []
        if on_rate_change is not None:
            self._listeners.append(on_rate_change)

    # -- admission ------------------------------------------------------------------

    async def acquire(self, tokens: float = 0.0) -> Ticket:
        """Wait until a request costing ``tokens`` input tokens may be sent.

        Checkpoints even when it admits at once.
        """
        arrived = trio.current_time()
        if not self._waiting and not self._lock.locked():
            # Nobody queued ahead: admit at once if the pace allows (the common case
            # while unpaced), without the lock's two extra checkpoints.
            core = self._core
            if core.grow(arrived, arrived - core.last_delay > 2.0):
                self._notify(wake=False)
            if core.earliest(tokens, arrived) <= arrived:
                ticket = core.admit(arrived, tokens, arrived)
                await trio.lowlevel.checkpoint()
                return ticket
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    now = trio.current_time()
                    app_limited = self._waiting <= 1 and now - self._core.last_delay > 2.0
                    if self._core.grow(now, app_limited):
                        self._notify(wake=False)
                    at = self._core.earliest(tokens, now)
                    if at <= now:
                        break
                    with trio.move_on_at(at):
                        await self._changed.wait()
                ticket = self._core.admit(now, tokens, arrived)
        finally:
            self._waiting -= 1
        await trio.lowlevel.checkpoint()
        return ticket

    # -- feedback -------------------------------------------------------------------

    def on_success(
        self, ticket: Ticket, *, input_tokens: int | None = None, hint: RateHint | None = None
    ) -> None:
        """A request was accepted; ``input_tokens`` corrects the estimate it was charged."""
        self._after(self._core.success(trio.current_time(), ticket, input_tokens, hint))

    def on_rate_limited(
        self,
        ticket: Ticket,
        *,
        retry_after: float | None = None,
        limit: LimitKind | None = None,
        hint: RateHint | None = None,
    ) -> None:
        """A request was answered 429: pause for Retry-After, cut the named limit once."""
        now = trio.current_time()
        self._after(self._core.limited(now, ticket, retry_after, limit, hint))

    def on_failure(
        self,
        ticket: Ticket,
        *,
        input_tokens: int | None = None,
        hint: RateHint | None = None,
        sent: bool = True,
    ) -> None:
        """A request failed otherwise: its charge is corrected to ``input_tokens`` when the
        provider said what it used (0 for a refusal), kept when nobody knows (a timeout),
        and given back whole, request included, when it was never ``sent``."""
        now = trio.current_time()
        self._after(self._core.failure(now, ticket, input_tokens, hint, sent=sent))

    def apply_hint(self, hint: RateHint) -> None:
        """Take the provider's rate-limit headers, as of now, into account."""
        now = trio.current_time()
        self._after(self._core.apply_hint(now, now, hint))

    def _after(self, changed: bool) -> None:
        # An answer may open the slow-start window even when no rate changed: wake.
        self._notify(listeners=changed)

    async def report_success(
        self, ticket: Ticket, *, input_tokens: int | None, hint: RateHint | None
    ) -> None:
        """[`on_success`][cardmill.AdaptiveBucket.on_success], as the engine calls it (a
        checkpoint, like SharedBucket's)."""
        self.on_success(ticket, input_tokens=input_tokens, hint=hint)
        await trio.lowlevel.checkpoint()

    async def report_rate_limited(
        self,
        ticket: Ticket,
        *,
        retry_after: float | None,
        limit: LimitKind | None,
        hint: RateHint | None,
    ) -> None:
        """[`on_rate_limited`][cardmill.AdaptiveBucket.on_rate_limited], as the engine calls it."""
        self.on_rate_limited(ticket, retry_after=retry_after, limit=limit, hint=hint)
        await trio.lowlevel.checkpoint()

    async def report_failure(
        self, ticket: Ticket, *, input_tokens: int | None, hint: RateHint | None, sent: bool
    ) -> None:
        """[`on_failure`][cardmill.AdaptiveBucket.on_failure], as the engine calls it."""
        self.on_failure(ticket, input_tokens=input_tokens, hint=hint, sent=sent)
        await trio.lowlevel.checkpoint()

    def _notify(self, *, wake: bool = True, listeners: bool = True) -> None:
        if wake:
            self._changed.set()
            self._changed = trio.Event()
        if listeners and self._listeners:
            stats = self.statistics()
            for listener in list(self._listeners):
                listener(stats)

    def add_listener(self, listener: Callable[[BucketStatistics], None]) -> None:
        """Call ``listener`` with a statistics snapshot whenever a rate changes."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[BucketStatistics], None]) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    # -- introspection ----------------------------------------------------------------

    @property
    def requests_per_second(self) -> float | None:
        """The current pacing rate of requests, or None while unpaced."""
        return self._core.requests.rate

    def statistics(self) -> BucketStatistics:
        """A frozen snapshot of rates, estimates and counters."""
        return self._core.snapshot(trio.current_time(), self._waiting)
