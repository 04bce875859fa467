"""The adaptive bucket's whole state and logic, with time passed in: no trio, no waiting.

`AdaptiveBucket` drives one in memory; a
`SharedBucket` loads one from the database, steps it and stores
it back (`BucketCore.to_state` / `BucketCore.from_state`).
"""

from __future__ import annotations

import math
from typing import Any, Final, final

import attrs

from ..model import LimitKind, RateHint
from ._dimension import Dimension

__all__ = ["BucketCore", "BucketStatistics", "Ticket"]

_INITIAL_WINDOW: Final = 4  # requests in flight before the first answer (slow start)
_WINDOW_DONE: Final = 64  # a window this wide no longer limits anything: slow start ends
# A ticket never answered (its worker died, in a shared bucket) stops holding the slow
# start window after this many shortest round trips, at least the minimum, or after the
# first-answer wait while no answer has come yet (s).
_FORGET_AFTER_RTTS: Final = 8.0
_FORGET_MIN: Final = 15.0
_FORGET_FIRST: Final = 60.0


@final
@attrs.frozen
class Ticket:
    """Proof of admission: when the request went, its guessed input tokens, and what the
    input-token pace was charged for it (more than the guess while a reserve is kept)."""

    sent_at: float
    tokens: float
    seq: int = 0
    charged: float | None = None

    @property
    def tokens_charged(self) -> float:
        """The input tokens the pace was charged."""
        return self.tokens if self.charged is None else self.charged


@final
@attrs.frozen
class BucketStatistics:
    """A snapshot of the bucket, like ``trio.CapacityLimiter.statistics()``.

    Rates are per second; ``None`` means unpaced (no limit known yet). ``window`` is
    the slow start's allowance of requests in flight, ``None`` once it is over.
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
    window: int | None = None


@final
class BucketCore:
    """Requests and input tokens, a Retry-After pause, and a slow start.

    Until the first 429 or rate-limit header, nothing is paced, but at most a few
    requests are in flight: four, and one more for every answer (doubling every round
    trip, as TCP's slow start does), spread over the round trip. A burst of
    ``concurrency`` requests into a bucket that holds only a second of the limit would
    otherwise be mostly refused.

    Args:
        requests_ceiling: requests per second never to exceed (None: learnt).
        tokens_ceiling: input tokens per second never to exceed (None: learnt).
        start: a first pace in requests per second (None: slow start).
    """

    # What `to_state` writes; a state of another format (another version of cardmill
    # sharing the database) is not read: the bucket learns afresh instead.
    STATE_FORMAT: Final = 2

    def __init__(
        self,
        requests_ceiling: float | None = None,
        tokens_ceiling: float | None = None,
        start: float | None = None,
    ) -> None:
        self.requests = Dimension("requests", requests_ceiling, start)
        self.tokens = Dimension("input_tokens", tokens_ceiling, unit=1000.0)
        self.paused_until = -math.inf
        self.admitted = 0
        self.rate_limited = 0
        self.cuts = 0
        self.last_delay = -math.inf
        # Slow start: the window, the tickets in flight (seq -> sent_at) while on, the
        # shortest round trip seen, and when the next request may go: a window's worth
        # of requests is spread over a round trip, not sent as a burst.
        self.window: int | None = None if self.requests.paced else _INITIAL_WINDOW
        self.in_flight: dict[int, float] = {}
        self.rtt: float | None = None
        self.next_at = -math.inf

    # -- admission ------------------------------------------------------------------------

    def grow(self, now: float, app_limited: bool) -> bool:
        a = self.requests.grow(now, app_limited)
        b = self.tokens.grow(now, app_limited)
        return a or b

    def earliest(self, tokens: float, now: float) -> float:
        """When a request costing ``tokens`` may go (``inf``: when an answer comes)."""
        if self.window is not None:
            forget = self._forget_after()
            for seq, sent in list(self.in_flight.items()):
                if now - sent > forget:
                    del self.in_flight[seq]
            if len(self.in_flight) >= self.window:
                # An answer opens the window; a ticket never answered stops counting.
                return min(self.in_flight.values()) + forget
            return max(self.paused_until, self.next_at, self.tokens.earliest(tokens))
        return max(self.paused_until, self.requests.earliest(1.0), self.tokens.earliest(tokens))

    def _forget_after(self) -> float:
        """How long an unanswered ticket holds its place in the slow-start window. A
        request still running past it only lets one more in: the window opens a little
        early, where waiting on a dead worker's ticket would stall every worker."""
        if self.rtt is None:
            return _FORGET_FIRST
        return max(_FORGET_MIN, _FORGET_AFTER_RTTS * self.rtt)

    def admit(self, now: float, tokens: float, arrived: float) -> Ticket:
        waited = now > arrived
        self.admitted += 1
        self.requests.admit(now, 1.0, self.admitted, waited=waited)
        charged = self.tokens.admit(now, tokens, self.admitted, waited=waited)
        if waited:
            self.last_delay = now
        if self.window is not None:
            self.in_flight[self.admitted] = now
            if self.rtt is not None:
                self.next_at = max(self.next_at, now - self.rtt / self.window)
                self.next_at += self.rtt / self.window
        return Ticket(now, tokens, self.admitted, charged if charged != tokens else None)

    def _answered(self, now: float, ticket: Ticket, *, grow: bool) -> None:
        if self.window is None:
            return
        self.in_flight.pop(ticket.seq, None)
        if grow and now > ticket.sent_at:
            rtt = now - ticket.sent_at
            self.rtt = rtt if self.rtt is None else min(self.rtt, rtt)
        if grow:
            self.window += 1
            if self.window >= _WINDOW_DONE:
                self._end_slow_start()

    def _end_slow_start(self) -> None:
        self.window = None
        self.in_flight.clear()

    # -- feedback ------------------------------------------------------------------------

    def success(
        self, now: float, ticket: Ticket, input_tokens: int | None, hint: RateHint | None
    ) -> bool:
        self._answered(now, ticket, grow=True)
        if input_tokens is not None:
            real = float(input_tokens)
            self.tokens.correct(ticket.sent_at, ticket.seq, real - ticket.tokens_charged)
            self.tokens.observe_guess(ticket.tokens, real)
        return hint is not None and self.apply_hint(now, ticket.sent_at, hint)

    def failure(
        self,
        now: float,
        ticket: Ticket,
        input_tokens: int | None,
        hint: RateHint | None,
        *,
        sent: bool,
    ) -> bool:
        self._answered(now, ticket, grow=False)
        if not sent:
            self.requests.refund(ticket.sent_at, ticket.seq, 1.0)
            self.tokens.refund(ticket.sent_at, ticket.seq, ticket.tokens_charged)
            return True
        return self.success(now, ticket, input_tokens, hint)

    def limited(
        self,
        now: float,
        ticket: Ticket,
        retry_after: float | None,
        limit: LimitKind | None,
        hint: RateHint | None,
    ) -> bool:
        self.rate_limited += 1
        self._answered(now, ticket, grow=False)
        self.requests.rejected(ticket.sent_at, ticket.seq, 1.0)
        self.tokens.rejected(ticket.sent_at, ticket.seq, ticket.tokens_charged)
        dim, cost = (
            (self.tokens, ticket.tokens)
            if limit == LimitKind.INPUT_TOKENS
            else (self.requests, 1.0)
        )
        if dim.limit is not None and not _explains(hint, dim, cost):
            # The headers said the request would fit: they do not describe the limit
            # that binds. Learn it from the 429s instead.
            dim.distrust_headers(now)
        changed = hint is not None and self.apply_hint(now, ticket.sent_at, hint)
        if dim.limit is None:
            # No header says what the limit is: learn it.
            self._end_slow_start()
            if dim.cut(now, ticket.sent_at, cost, self.admitted + 1):
                self.cuts += 1
                changed = True
        elif dim.share_cut(now, ticket.sent_at):
            # The 429's own headers re-anchored the model to the empty bucket, and the
            # pause below lets it refill; a 429 at all means others share the key.
            self.cuts += 1
            changed = True
        pause = retry_after if retry_after is not None and retry_after > 0 else 0.0
        if now + pause > self.paused_until:
            self.paused_until = now + pause
            changed = True
        return changed

    def apply_hint(self, now: float, sent_at: float, hint: RateHint) -> bool:
        a = self.requests.apply_hint(now, sent_at, hint.requests_limit, hint.requests_remaining)
        b = self.tokens.apply_hint(
            now, sent_at, hint.input_tokens_limit, hint.input_tokens_remaining
        )
        if self.requests.limit is not None or self.tokens.limit is not None:
            self._end_slow_start()  # the provider said what its limits are
        return a or b

    # -- introspection -----------------------------------------------------------------

    def snapshot(self, now: float, waiting: int) -> BucketStatistics:
        return BucketStatistics(
            requests_per_second=self.requests.rate,
            input_tokens_per_second=self.tokens.rate,
            estimated_requests_per_second=self.requests.limit or self.requests.w_max,
            estimated_input_tokens_per_second=self.tokens.limit or self.tokens.w_max,
            paused_until=self.paused_until if self.paused_until > now else None,
            waiting=waiting,
            admitted=self.admitted,
            rate_limited=self.rate_limited,
            cuts=self.cuts,
            window=self.window,
        )

    # -- persistence, for buckets shared through a database ---------------------------

    def to_state(self) -> dict[str, Any]:
        """Plain JSON data (infinities as None)."""

        def num(x: float) -> float | None:
            return None if math.isinf(x) else x

        return {
            "format": self.STATE_FORMAT,
            "requests": self.requests.to_state(),
            "tokens": self.tokens.to_state(),
            "paused_until": num(self.paused_until),
            "admitted": self.admitted,
            "rate_limited": self.rate_limited,
            "cuts": self.cuts,
            "last_delay": num(self.last_delay),
            "window": self.window,
            "in_flight": [[k, v] for k, v in self.in_flight.items()],
            "rtt": self.rtt,
            "next_at": num(self.next_at),
        }

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        requests_ceiling: float | None = None,
        tokens_ceiling: float | None = None,
        start: float | None = None,
    ) -> BucketCore:
        core = cls(requests_ceiling, tokens_ceiling, start)
        core.requests.load(state["requests"])
        core.tokens.load(state["tokens"])
        core.paused_until = _inf(state["paused_until"])
        core.admitted = state["admitted"]
        core.rate_limited = state["rate_limited"]
        core.cuts = state["cuts"]
        core.last_delay = _inf(state["last_delay"])
        core.window = state.get("window")
        core.in_flight = {int(k): v for k, v in state.get("in_flight", [])}
        core.rtt = state.get("rtt")
        core.next_at = _inf(state.get("next_at"))
        return core


def _explains(hint: RateHint | None, dim: Dimension, cost: float) -> bool:
    """Whether the headers of a 429 account for it: they say that bucket ran short."""
    if hint is None:
        return False
    if dim.name == "requests":
        return hint.requests_remaining is not None and hint.requests_remaining < cost
    # A token count is a guess: a request may well cost twice what was guessed.
    return hint.input_tokens_remaining is not None and hint.input_tokens_remaining < 2 * cost


def _inf(value: float | None) -> float:
    return -math.inf if value is None else value
