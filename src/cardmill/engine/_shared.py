"""SharedBucket: one adaptive rate limit for every worker on one API key.

The bucket's whole state — rates, estimates, pause, congestion epoch — lives in the
database (a row per name, locked for each step), so N workers on N machines pace
together under the provider's limit and back off together: a 429 seen by one worker
pauses and cuts for all, and a 429 from a request sent before anyone's last cut does
not cut again. Time is the store's clock (PostgreSQL's ``clock_timestamp()``, read under
the row lock), never a worker's own, so workers whose clocks disagree still share fairly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol, TypeVar, final, runtime_checkable

import trio

from ..model import LimitKind, RateHint
from ._bucket import Limits
from ._core import BucketCore, BucketStatistics, Ticket
from ._patience import patiently

__all__ = ["RateLimiter", "RateStateStore", "SharedBucket"]

T = TypeVar("T")
_SLACK = 0.005  # admit this close to the slot: a round trip costs more than that
_MAX_NAP = 1.0  # re-read the shared state at least this often while waiting


@runtime_checkable
class RateStateStore(Protocol):
    """A storage that keeps named rate-limit states (``PostgresStorage`` does)."""

    async def update_rate_state(
        self, name: str, step: Callable[[dict[str, Any] | None, float], tuple[dict[str, Any], T]]
    ) -> T:
        """Run ``step(state, now)`` with the named state locked; store what it returns.

        ``now`` must come from one clock shared by every worker (the database's), read
        while the state is locked.
        """
        ...


class RateLimiter(Protocol):
    """What the engine asks of a rate limiter: AdaptiveBucket or SharedBucket."""

    @property
    def requests_per_second(self) -> float | None: ...

    async def acquire(self, tokens: float = 0.0) -> Ticket: ...

    async def report_success(
        self, ticket: Ticket, *, input_tokens: int | None, hint: RateHint | None
    ) -> None: ...

    async def report_rate_limited(
        self,
        ticket: Ticket,
        *,
        retry_after: float | None,
        limit: LimitKind | None,
        hint: RateHint | None,
    ) -> None: ...

    async def report_failure(
        self, ticket: Ticket, *, input_tokens: int | None, hint: RateHint | None, sent: bool
    ) -> None: ...

    def statistics(self) -> BucketStatistics: ...

    def add_listener(self, listener: Callable[[BucketStatistics], None]) -> None: ...

    def remove_listener(self, listener: Callable[[BucketStatistics], None]) -> None: ...


_JITTER = random.Random()


@final
class SharedBucket:
    """An [`AdaptiveBucket`][cardmill.AdaptiveBucket] whose state is shared through the database.

    Args:
        store: where the state lives (``PostgresStorage``).
        name: one name per API key and provider; never the key itself.
        limits: ceilings you know, applied when the shared state is first created.

    Example:
        ```python
        async with PostgresStorage.open(dsn) as storage:
            bucket = SharedBucket(storage, "anthropic-team-a")
            await Engine(storage, provider, bucket=bucket).execute(run_id)
        ```
    """

    def __init__(self, store: RateStateStore, name: str, limits: Limits | None = None) -> None:
        if not name:
            raise ValueError("name must not be empty")
        self._store = store
        self._name = name
        self._limits = limits or Limits()
        self._stats: BucketStatistics | None = None
        self._listeners: list[Callable[[BucketStatistics], None]] = []

    def __repr__(self) -> str:
        return f"SharedBucket(name={self._name!r})"

    async def _step(self, fn: Callable[[BucketCore, float], T]) -> T:
        def step(state: dict[str, Any] | None, now: float) -> tuple[dict[str, Any], Any]:
            core = self._limits.core(state)
            before = (core.requests.rate, core.tokens.rate)
            result = fn(core, now)
            changed = (core.requests.rate, core.tokens.rate) != before
            return core.to_state(), (result, core.snapshot(now, 0), changed)

        # A lock wait that timed out, or a lost connection, is tried again: a step that
        # may have committed already only makes the shared pace a little more careful.
        call = partial(self._store.update_rate_state, self._name, step)
        result, stats, changed = await patiently(call, "shared rate limit", _JITTER)
        self._stats = stats
        if changed:
            for listener in list(self._listeners):
                listener(stats)
        return result  # type: ignore[no-any-return]

    async def acquire(self, tokens: float = 0.0) -> Ticket:
        """Wait for a slot in the shared pace, then take it."""
        arrived: float | None = None  # in the store's clock, shared by every worker

        def take(core: BucketCore, now: float) -> Ticket | float:
            nonlocal arrived
            if arrived is None:
                arrived = now
            core.grow(now, app_limited=now - core.last_delay > 2.0 and now - arrived < 0.5)
            at = core.earliest(tokens, now)
            if at <= now + _SLACK:
                return core.admit(now, tokens, arrived)
            return at - now

        while True:
            got = await self._step(take)
            if isinstance(got, Ticket):
                return got
            await trio.sleep(min(got, _MAX_NAP))

    async def report_success(
        self, ticket: Ticket, *, input_tokens: int | None, hint: RateHint | None
    ) -> None:
        """Record an accepted request (usage correction, headers, slow start)."""
        if self._nothing_to_say(ticket, input_tokens, hint):
            await trio.lowlevel.checkpoint()
            return
        await self._step(lambda core, now: core.success(now, ticket, input_tokens, hint))

    async def report_rate_limited(
        self,
        ticket: Ticket,
        *,
        retry_after: float | None,
        limit: LimitKind | None,
        hint: RateHint | None,
    ) -> None:
        """Record a 429 for every worker: pause, and cut once per shared epoch."""
        await self._step(lambda core, now: core.limited(now, ticket, retry_after, limit, hint))

    async def report_failure(
        self, ticket: Ticket, *, input_tokens: int | None, hint: RateHint | None, sent: bool
    ) -> None:
        """Record a failed request: reconcile its charge (see AdaptiveBucket.on_failure)."""
        if sent and self._nothing_to_say(ticket, input_tokens, hint):
            await trio.lowlevel.checkpoint()
            return
        await self._step(lambda core, now: core.failure(now, ticket, input_tokens, hint, sent=sent))

    def _nothing_to_say(
        self, ticket: Ticket, input_tokens: int | None, hint: RateHint | None
    ) -> bool:
        """An answer that changes nothing shared: no headers, no correction, and the slow
        start (which counts answers) is over. It saves a round trip to the database."""
        slow_start = self._stats is None or self._stats.window is not None
        same = input_tokens is None or input_tokens == ticket.tokens_charged
        return hint is None and same and not slow_start

    @property
    def requests_per_second(self) -> float | None:
        """The shared pacing rate as last seen, or None while unpaced."""
        return None if self._stats is None else self._stats.requests_per_second

    def statistics(self) -> BucketStatistics:
        """The shared state as last seen by this worker."""
        if self._stats is None:
            return self._limits.core().snapshot(-math.inf, 0)
        return self._stats

    def add_listener(self, listener: Callable[[BucketStatistics], None]) -> None:
        """Call ``listener`` whenever this worker sees the shared rate change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[BucketStatistics], None]) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)
