"""The adaptive token bucket: pace requests just under the provider's real limit.

Two dimensions, requests and input tokens, each paced by GCRA (a token bucket written
as "the earliest time the next unit may go"). Each learns the provider's limit:

* A 429 cuts the dimension it names, at most once per congestion epoch: a 429 for a
  request sent before the last cut says nothing new and is ignored.
* Between two 429s the provider's bucket went from empty to empty, so the units it
  *accepted* in between, divided by the time, is its refill rate: the real limit. The
  estimate comes with bounds ((accepted ± 1 request) / interval); the cut goes to the
  lower bound, so pacing sits just under the limit instead of sawing between 70% and
  100% of it as a blind multiplicative cut would.
* Retry-After pauses the bucket; when it lifts, waiters leave one interval apart.
* Growth is time-based: a quick approach to the estimate, then a slow probe above it;
  frozen while the client is app-limited, capped at twice the measured send rate, and
  held while the provider's headers say few requests remain.
* Rate-limit headers give the ceiling outright.

All time comes from ``trio.current_time()``, so everything runs in virtual time.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, Final, final

import attrs
import trio

from ..errors import Limit
from ..providers import RateHint

__all__ = ["AdaptiveBucket", "BucketStatistics", "Limits", "Ticket"]

_WINDOW: Final = 10.0  # seconds of history for the measured send rate
_HOLD_AFTER_CUT: Final = 2.0  # no growth this long after a cut
_APPROACH_TIME: Final = 4.0  # time constant of the approach to the estimate
_PROBE_PER_S: Final = 0.001  # slow probe above the estimate: 0.1% of it per second
_LATE_CREDIT: Final = 0.1  # seconds of lateness an admission may make up for
_CRUISE: Final = 30.0  # seconds at the estimate before probing above it
_QUIET: Final = 60.0  # seconds without a 429 before probing accelerates
_ACCELERATION: Final = 15.0  # probing speed doubles after this many more quiet seconds
_BLIND_GROWTH_PER_S: Final = 0.05  # no estimate yet: 5% per second
_PACE_MARGIN: Final = 0.985  # pace this far under the limit we believe in
_LOW_REMAINING: Final = 0.1  # headers: hold growth below 10% remaining
_LEDGER_SPAN: Final = 10.0  # seconds of ledger kept entry by entry; older entries are summed
_LEDGER_FOLD_AT: Final = 64  # entries before a fold is worth its scan


def _positive(_inst: object, attr: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attr.name} must be > 0")


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


@final
@attrs.frozen
class Ticket:
    """Proof of admission: when the request went and what it was charged."""

    sent_at: float
    tokens: float
    seq: int = 0


@final
@attrs.frozen
class BucketStatistics:
    """A snapshot of the bucket, like ``trio.CapacityLimiter.statistics()``.

    Rates are per second; ``None`` means unpaced (no limit known yet).
    """

    requests_per_second: float | None
    input_tokens_per_second: float | None
    estimated_requests_per_second: float | None
    estimated_input_tokens_per_second: float | None
    paused_until: float | None
    waiting: int
    admitted: int
    rate_limited: int
    cuts: int


class _Dimension:
    """One paced quantity (requests or input tokens) and its limit estimate."""

    def __init__(self, name: str, ceiling: float | None, start: float | None = None) -> None:
        self.name = name
        self.ceiling = ceiling  # configured or from headers, units/s
        if start is not None and ceiling is not None:
            start = min(start, ceiling)
        self.rate: float | None = start if start is not None else ceiling
        self.tat = -math.inf  # theoretical arrival time of the next unit (GCRA)
        self.last_cut = -math.inf
        self.cut_times: deque[float] = deque(maxlen=2)
        self.regime_start: float | None = None
        self.regime_seq = 0  # tickets from this admission on belong to the regime
        # (sent_at, units): +cost when admitted, -cost when answered 429, +correction
        # when the real usage is known. Summed over an interval it is what the
        # provider accepted from the requests sent in it, known before they finish.
        self.ledger: deque[tuple[float, float]] = deque()
        self.sent: deque[tuple[float, float]] = deque()  # (sent_at, units) admitted
        self.lo: float | None = None  # bounds on the provider's limit, units/s
        self.hi: float | None = None
        self.last_growth = -math.inf
        self.hold_growth = False
        self.cruise_until: float | None = None
        self.unit = 1.0  # one request's worth of this dimension, for estimate bounds

    _SCALARS = (
        "ceiling",
        "rate",
        "tat",
        "last_cut",
        "regime_start",
        "regime_seq",
        "lo",
        "hi",
        "last_growth",
        "hold_growth",
        "cruise_until",
        "unit",
    )

    def to_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self._SCALARS:
            value = getattr(self, name)
            out[name] = None if isinstance(value, float) and math.isinf(value) else value
        out["cut_times"] = list(self.cut_times)
        out["ledger"] = [list(e) for e in self.ledger]
        out["sent"] = [list(e) for e in self.sent]
        return out

    def load(self, state: dict[str, Any]) -> None:
        for name in self._SCALARS:
            value = state[name]
            if value is None and name in ("tat", "last_cut", "last_growth"):
                value = -math.inf
            setattr(self, name, value)
        self.cut_times = deque(state["cut_times"], maxlen=2)
        self.ledger = deque((t, u) for t, u in state["ledger"])
        self.sent = deque((t, u) for t, u in state["sent"])

    def _compact(self, before: float) -> None:
        """Fold ledger entries before ``before`` into one: only sums since then are asked."""
        if self.regime_start is None:
            return
        old = sum(u for t, u in self.ledger if t < before)
        recent = [(t, u) for t, u in self.ledger if t >= before]
        self.ledger = deque([(self.regime_start, old), *recent])

    def _fold(self, now: float) -> None:
        """Keep the ledger bounded however long a regime lasts without a 429.

        Sums are only ever asked from the regime's start or from the last 429's send time
        (the anchor), up to a send time that is recent. So entries older than
        ``_LEDGER_SPAN`` fold into one entry at the regime's start (those before the
        anchor) and one at the anchor (the rest), and every sum asked stays exact.
        """
        if self.regime_start is None or len(self.ledger) < _LEDGER_FOLD_AT:
            return
        anchor = self.cut_times[-1] if self.cut_times else self.regime_start
        horizon = now - _LEDGER_SPAN
        before_anchor = since_anchor = 0.0
        recent: list[tuple[float, float]] = []
        for t, u in self.ledger:
            if t >= horizon:
                recent.append((t, u))
            elif t < anchor:
                before_anchor += u
            else:
                since_anchor += u
        folded = [(self.regime_start, before_anchor), (anchor, since_anchor)]
        self.ledger = deque([*(e for e in folded if e[1]), *recent])

    def earliest(self, cost: float) -> float:
        if self.rate is None or cost <= 0:
            return -math.inf
        return self.tat

    def admit(self, now: float, cost: float) -> None:
        if self.rate is not None and cost > 0:
            interval = cost / self.rate
            if math.isinf(self.tat):
                start = now
            else:
                # A waiter woken a little after its slot (timer slack, a database round
                # trip) keeps its slot: otherwise every small delay is lost for good.
                start = max(self.tat, now - min(_LATE_CREDIT, interval))
            self.tat = start + interval
        self.sent.append((now, cost))
        self._trim(now)
        if self.regime_start is not None:
            self.ledger.append((now, cost))
            self._fold(now)

    def correct(self, ticket: Ticket, units: float) -> None:
        """Correct an admission's cost once the real usage is known."""
        if not units:
            return
        if self.rate is not None:
            self.tat += units / self.rate
        self._book(ticket, units)

    def rejected(self, ticket: Ticket, cost: float) -> None:
        self._book(ticket, -cost)

    def refund(self, ticket: Ticket, cost: float) -> None:
        """An admission that was never sent: give its slot back."""
        if self.rate is not None and cost > 0:
            self.tat -= cost / self.rate
        self._book(ticket, -cost)

    def _book(self, ticket: Ticket, units: float) -> None:
        # Only tickets admitted inside the regime have their admission in the ledger.
        if self.regime_start is not None and ticket.seq >= self.regime_seq:
            self.ledger.append((ticket.sent_at, units))

    def _trim(self, now: float) -> None:
        while self.sent and self.sent[0][0] < now - _WINDOW:
            self.sent.popleft()

    def send_rate(self, now: float) -> float:
        self._trim(now)
        if not self.sent:
            return 0.0
        span = max(now - self.sent[0][0], 1.0)
        return sum(units for _, units in self.sent) / span

    def accepted_between(self, start: float, end: float) -> float:
        return sum(units for t, units in self.ledger if start <= t < end)

    def cut(self, now: float, sent_at: float, next_seq: int) -> bool:
        """A 429 for this dimension. Returns True when the rate changed."""
        if sent_at < self.last_cut:
            return False  # same congestion epoch: already cut for it
        measured = self.send_rate(now)
        previous = self.rate if self.rate is not None else measured
        self.last_cut = now
        # The rejected request found the provider's bucket empty when it arrived, so the
        # empty instants are send times, not the moments we heard about them.
        empty_at = sent_at
        if self.regime_start is None:
            # First 429 of a regime: measure the refill from here.
            self.regime_start = empty_at
            self.regime_seq = next_seq
            self.cut_times.clear()
            self.cut_times.append(empty_at)
            self.ledger.clear()
            new = previous * 0.5
        else:
            lo, hi = self._bounds(self.regime_start, empty_at)
            last = self.cut_times[-1]
            recent_lo, recent_hi = self._bounds(last, empty_at)
            if recent_hi < lo * 0.9 or recent_lo > hi * 1.1:
                # The limit moved: forget the old regime, estimate from the last 429.
                self.regime_start = last
                self.ledger = deque((t, u) for t, u in self.ledger if t >= last)
                lo, hi = recent_lo, recent_hi
            self.cut_times.append(empty_at)
            self._compact(empty_at)
            self.lo, self.hi = lo, hi
            # Pace under the lower bound; while the bounds are still wide (few requests
            # between the two 429s), not below half the upper one.
            new = min(max(lo * _PACE_MARGIN, hi * 0.5), previous * 0.97)
        if self.ceiling is not None:
            new = min(new, self.ceiling)
        self.rate = max(new, self.floor)
        self.last_growth = now + _HOLD_AFTER_CUT
        self.cruise_until = None
        return True

    def _bounds(self, start: float, end: float) -> tuple[float, float]:
        span = max(end - start, 1e-9)
        got = self.accepted_between(start, end)
        return max(got - self.unit, 0.0) / span, (got + self.unit) / span

    @property
    def floor(self) -> float:
        # One request a minute keeps probing alive.
        return self.unit / 60.0

    def grow(self, now: float, app_limited: bool) -> bool:
        if self.rate is None:
            return False
        if now <= self.last_growth:
            return False
        dt = now - self.last_growth if self.last_growth > -math.inf else 0.0
        self.last_growth = now
        if dt <= 0 or app_limited or self.hold_growth:
            return False
        rate = self.rate
        if self.hi is None:
            rate *= 1.0 + _BLIND_GROWTH_PER_S * dt
        else:
            target = self.hi * _PACE_MARGIN
            if rate < target * 0.995:
                # Approach the estimate quickly...
                rate += (target - rate) * (1.0 - math.exp(-dt / _APPROACH_TIME))
            elif self.cruise_until is None:
                # ...cruise there a while (each probe costs a 429)...
                self.cruise_until = now + _CRUISE
            elif now >= self.cruise_until:
                # ...then probe above it: a limit that rose is found only by trying. After
                # a long quiet spell the limit probably did rise, so the probe accelerates.
                quiet = max(0.0, now - self.last_cut - _QUIET)
                rate += _PROBE_PER_S * self.hi * dt * (1.0 + (quiet / _ACCELERATION) ** 2)
        measured = self.send_rate(now)
        if measured > 0:
            rate = min(rate, max(2.0 * measured, self.rate))
        if self.ceiling is not None:
            rate = min(rate, self.ceiling)
        changed = rate != self.rate
        self.rate = rate
        return changed

    def apply_hint(self, limit: float | None, remaining: float | None) -> bool:
        """Headers: per-minute limit and what remains of it."""
        changed = False
        if limit is not None and limit > 0:
            ceiling = limit / 60.0
            if self.ceiling != ceiling:
                self.ceiling = ceiling
                self.lo = self.hi = ceiling
                changed = True
            paced = ceiling * _PACE_MARGIN
            if self.rate is None or self.rate > paced or (changed and self.rate < paced):
                self.rate = paced
                changed = True
            self.hold_growth = remaining is not None and remaining < _LOW_REMAINING * limit
        return changed


@final
class _Core:
    """The bucket's whole state and logic, with time passed in: no trio, no waiting.

    :class:`AdaptiveBucket` drives one in memory; a shared bucket loads one from the
    database, steps it, and stores it back (:meth:`to_state` / :meth:`from_state`).
    """

    def __init__(self, limits: Limits) -> None:
        rpm, tpm = limits.requests_per_minute, limits.input_tokens_per_minute
        start = limits.start_requests_per_minute
        self.requests = _Dimension(
            "requests", rpm / 60 if rpm else None, start / 60 if start else None
        )
        self.tokens = _Dimension("input_tokens", tpm / 60 if tpm else None)
        self.tokens.unit = 1000.0
        self.paused_until = -math.inf
        self.admitted = 0
        self.rate_limited = 0
        self.cuts = 0
        self.last_delay = -math.inf

    def grow(self, now: float, app_limited: bool) -> bool:
        a = self.requests.grow(now, app_limited)
        b = self.tokens.grow(now, app_limited)
        return a or b

    def earliest(self, tokens: float) -> float:
        return max(self.paused_until, self.requests.earliest(1.0), self.tokens.earliest(tokens))

    def admit(self, now: float, tokens: float, arrived: float) -> Ticket:
        self.requests.admit(now, 1.0)
        self.tokens.admit(now, tokens)
        self.admitted += 1
        if now > arrived:
            self.last_delay = now
        return Ticket(now, tokens, self.admitted)

    def success(self, ticket: Ticket, input_tokens: int | None, hint: RateHint | None) -> bool:
        if input_tokens is not None:
            self.tokens.correct(ticket, float(input_tokens) - ticket.tokens)
        return hint is not None and self.apply_hint(hint)

    def failure(
        self, ticket: Ticket, input_tokens: int | None, hint: RateHint | None, *, sent: bool
    ) -> bool:
        if not sent:
            self.requests.refund(ticket, 1.0)
            self.tokens.refund(ticket, ticket.tokens)
            return True
        return self.success(ticket, input_tokens, hint)

    def limited(
        self,
        now: float,
        ticket: Ticket,
        retry_after: float | None,
        limit: Limit,
        hint: RateHint | None,
    ) -> bool:
        self.rate_limited += 1
        self.requests.rejected(ticket, 1.0)
        self.tokens.rejected(ticket, ticket.tokens)
        changed = hint is not None and self.apply_hint(hint)
        dim = self.tokens if limit == Limit.INPUT_TOKENS else self.requests
        if dim is self.tokens and self.tokens.rate is None and self.tokens.ceiling is None:
            # Token pacing starts from what we were sending.
            self.tokens.rate = max(self.tokens.send_rate(now), self.tokens.floor)
        if dim.cut(now, ticket.sent_at, self.admitted + 1):
            self.cuts += 1
            changed = True
        pause = retry_after if retry_after is not None and retry_after > 0 else 0.0
        if now + pause > self.paused_until:
            self.paused_until = now + pause
            changed = True
        return changed

    def apply_hint(self, hint: RateHint) -> bool:
        a = self.requests.apply_hint(hint.requests_limit, hint.requests_remaining)
        b = self.tokens.apply_hint(hint.input_tokens_limit, hint.input_tokens_remaining)
        return a or b

    def snapshot(self, now: float, waiting: int) -> BucketStatistics:
        return BucketStatistics(
            requests_per_second=self.requests.rate,
            input_tokens_per_second=self.tokens.rate,
            estimated_requests_per_second=self.requests.hi,
            estimated_input_tokens_per_second=self.tokens.hi,
            paused_until=self.paused_until if self.paused_until > now else None,
            waiting=waiting,
            admitted=self.admitted,
            rate_limited=self.rate_limited,
            cuts=self.cuts,
        )

    # -- persistence, for buckets shared through a database ---------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain JSON data (infinities as None)."""

        def num(x: float) -> float | None:
            return None if math.isinf(x) else x

        return {
            "requests": self.requests.to_state(),
            "tokens": self.tokens.to_state(),
            "paused_until": num(self.paused_until),
            "admitted": self.admitted,
            "rate_limited": self.rate_limited,
            "cuts": self.cuts,
            "last_delay": num(self.last_delay),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], limits: Limits) -> _Core:
        core = cls(limits)
        core.requests.load(state["requests"])
        core.tokens.load(state["tokens"])
        core.paused_until = _inf(state["paused_until"])
        core.admitted = state["admitted"]
        core.rate_limited = state["rate_limited"]
        core.cuts = state["cuts"]
        core.last_delay = _inf(state["last_delay"])
        return core


def _inf(value: float | None) -> float:
    return -math.inf if value is None else value


@final
class AdaptiveBucket:
    """Paces requests to the provider's real limit, learnt from 429s and headers.

    The engine calls :meth:`acquire` before every request, then exactly one of
    :meth:`on_success`, :meth:`on_rate_limited` or :meth:`on_failure`. You may share
    one bucket between engines that use the same API key.

    Args:
        limits: ceilings you know; without them the bucket starts unpaced (concurrency
            alone bounds the rate) until the first 429 or rate-limit header.
        on_rate_change: called with a statistics snapshot whenever a rate changes.
    """

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        on_rate_change: Callable[[BucketStatistics], None] | None = None,
    ) -> None:
        self._core = _Core(limits or Limits())
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
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    now = trio.current_time()
                    app_limited = self._waiting <= 1 and now - self._core.last_delay > 2.0
                    if self._core.grow(now, app_limited):
                        self._notify(wake=False)
                    at = self._core.earliest(tokens)
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
        if self._core.success(ticket, input_tokens, hint):
            self._notify()

    def on_rate_limited(
        self,
        ticket: Ticket,
        *,
        retry_after: float | None = None,
        limit: Limit = Limit.UNKNOWN,
        hint: RateHint | None = None,
    ) -> None:
        """A request was answered 429: pause for Retry-After, cut the named limit once."""
        if self._core.limited(trio.current_time(), ticket, retry_after, limit, hint):
            self._notify()

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
        if self._core.failure(ticket, input_tokens, hint, sent=sent):
            self._notify()

    def apply_hint(self, hint: RateHint) -> None:
        """Take the provider's rate-limit headers into account."""
        if self._core.apply_hint(hint):
            self._notify()

    async def report_success(
        self, ticket: Ticket, *, input_tokens: int | None, hint: RateHint | None
    ) -> None:
        """:meth:`on_success`, as the engine calls it (a checkpoint, like SharedBucket's)."""
        self.on_success(ticket, input_tokens=input_tokens, hint=hint)
        await trio.lowlevel.checkpoint()

    async def report_rate_limited(
        self, ticket: Ticket, *, retry_after: float | None, limit: Limit, hint: RateHint | None
    ) -> None:
        """:meth:`on_rate_limited`, as the engine calls it."""
        self.on_rate_limited(ticket, retry_after=retry_after, limit=limit, hint=hint)
        await trio.lowlevel.checkpoint()

    async def report_failure(
        self, ticket: Ticket, *, input_tokens: int | None, hint: RateHint | None, sent: bool
    ) -> None:
        """:meth:`on_failure`, as the engine calls it."""
        self.on_failure(ticket, input_tokens=input_tokens, hint=hint, sent=sent)
        await trio.lowlevel.checkpoint()

    def _notify(self, *, wake: bool = True) -> None:
        if wake:
            self._changed.set()
            self._changed = trio.Event()
        if self._listeners:
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
