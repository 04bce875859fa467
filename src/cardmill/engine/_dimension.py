"""One paced quantity — requests, or input tokens — and what is learnt of its limit.

Pacing is GCRA written as a model of the provider's bucket: ``level(t) = min(burst,
rate * (t - tat))`` is what we believe the bucket holds for us, and a request costing
``c`` may go once ``level >= c``. The burst is one request plus a little timer slack:
providers may enforce a per-minute limit over a second, so cardmill never counts on a
bigger bucket. Without rate-limit headers the rate is learnt; with headers it is the
stated limit, and the model is re-anchored on every answer to what the provider said its
bucket held (``remaining``), which also corrects for token counts we could only guess.

Learning without headers (all in units per second of this quantity):

* A 429 after a quiet spell is a probe that touched the limit: the rate we were sending
  at is just above it. Cut to ``_BETA`` of it, then grow back in a CUBIC curve: quickly
  at first, flat near the rate of the 429 (where the next 429 would come), then faster
  above it, where only a limit that rose can be found, and faster still once well past
  it without a 429.
* 429s in quick succession mean the limit is well below what we send (it dropped, or the
  start overshot): the provider's bucket stays empty, so what it accepted between the
  429s, over the time, is its refill rate. Cut to under that estimate and approach it
  quickly.
* Growth stops while the client is app-limited (nobody waits for the bucket) and never
  goes past twice the measured send rate.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final

__all__ = ["Dimension"]

_WINDOW: Final = 10.0  # seconds of history for the measured send rate
_LATE_CREDIT: Final = 0.1  # seconds of lateness an admission may make up for (no headers)
_BETA: Final = 0.95  # cut to this share of the rate that touched the limit
_DRAIN: Final = 0.98  # the limit is at least this share of the rate of a probe's 429
_CONGESTED: Final = 8.0  # 429s closer than this (s, or 3 sends) form one congestion episode
_RETURN_REQUESTS: Final = 70.0  # a probe cycle lasts well over this many requests...
_RETURN_MIN: Final = 10.0  # ... but no shorter (s)
_RETURN_MAX: Final = 120.0  # ... and no longer (s)
_FAST_RETURN: Final = 4.0  # after a congestion estimate, approach it this fast (s)
_ESCAPE: Final = 1.02  # this far above the last 429's rate without one: the limit rose
_PROBE_TIME: Final = 15.0  # seconds of gentle probing above it before that
_ROSE: Final = 1.15  # a 429 this far above the last estimate: the limit rose, or ...
_ROSE_ACCEPTED: Final = 1.1  # ... if the provider accepted no more than this, a deep bucket
_DEEP: Final = 5.0  # a bucket holding this many seconds of its limit is deep
_ESCAPE_GROWTH: Final = 0.05  # then grow up to this much a second...
_ESCAPE_RAMP: Final = 10.0  # ... reached after this many seconds
_BRISK: Final = 2.0  # requests a second from which the probe runs on its own clock
_TYPICAL: Final = 0.05  # weight of the newest cost in a request's usual cost
_PACE_MARGIN: Final = 0.985  # pace this far under a congestion estimate's lower bound
_SPREAD_DECAY: Final = 0.99  # the reserve for short guesses forgets at this rate per answer
_MAX_RESERVE: Final = 0.5  # never hold back more than this share of a guess
_DISTRUST: Final = 600.0  # headers shown wrong are ignored this long (s)
_SHARE_CUT: Final = 0.9  # a 429 the headers account for: keep this much of our share
_SHARE_FLOOR: Final = 0.05
_SHARE_RETURN: Final = 60.0  # and grow it back toward all of the limit this slowly (s)
_HOLD_AFTER_CUT: Final = 2.0  # no growth this long after a cut (s)
_SETTLE_AFTER_CHANGE: Final = 5.0  # 429s this soon after a stated limit changed say nothing
_HEADER_MARGIN: Final = 0.998  # pace this far under a limit the provider states
_LEDGER_SPAN: Final = 10.0  # seconds of ledger kept entry by entry; older entries are summed
_LEDGER_FOLD_AT: Final = 64  # entries before a fold is worth its scan
_MAX_LOG_GROWTH: Final = 30.0  # the probe's growth stops at e**30 times the estimate
_MAX_DEBT: Final = 120.0  # one answer pushes the pace back by at most this many seconds


class Dimension:
    """The pace of one quantity and the provider's limit on it, as far as it is known.

    Args:
        name: ``"requests"`` or ``"input_tokens"``.
        ceiling: a limit the user stated, units per second (never exceeded).
        start: a first pace, units per second (learnt up or down from there).
        unit: one request's worth of this quantity (the floor is one unit a minute).
    """

    _SCALARS = (
        "ceiling",
        "rate",
        "tat",
        "limit",
        "anchor",
        "distrust_until",
        "most_remaining",
        "share",
        "share_grown",
        "headers_since",
        "spread",
        "typical",
        "probed",
        "w_max",
        "cut_at",
        "return_time",
        "start_rate",
        "frozen_at",
        "last_cut",
        "episode_start",
        "episode_seq",
        "last_429",
        "lo",
        "hi",
        "depth",
        "first_429",
        "unit",
    )

    def __init__(
        self, name: str, ceiling: float | None, start: float | None = None, unit: float = 1.0
    ) -> None:
        self.name = name
        self.unit = unit
        self.ceiling = ceiling
        if start is not None and ceiling is not None:
            start = min(start, ceiling)
        self.rate: float | None = start if start is not None else ceiling
        self.tat = -math.inf
        # What the provider's headers said: its limit (units/s), and the send time of the
        # newest answer the model was anchored to.
        self.limit: float | None = None
        self.anchor = -math.inf
        self.distrust_until = -math.inf  # headers shown wrong: ignore them until then
        self.most_remaining = 0.0  # the most the headers ever said was left
        self.share = 1.0  # of the stated limit left to us by others on the same key
        self.headers_since = math.inf  # when the headers stated the limit we follow
        self.share_grown = -math.inf
        self.spread = 0.0  # how far real costs ran over their guesses lately (0.3 = 30%)
        self.typical = 0.0  # a request's usual cost, lately
        self.probed = False  # the estimate came from a probe (not from congestion)
        # The growth curve: the rate that last touched the limit, when we cut, how long
        # the curve takes to come back to it, the rate it started from, and since when
        # growth has been frozen (app-limited), if it is.
        self.w_max: float | None = None
        self.cut_at = -math.inf
        self.return_time = _RETURN_MAX
        self.start_rate: float | None = None
        self.frozen_at: float | None = None
        # Congestion epochs and episodes.
        self.last_cut = -math.inf  # a 429 for a request sent before this is not news
        self.episode_start: float | None = None  # send time of the episode's first 429
        self.episode_seq = 0  # tickets from this admission on belong to the episode
        self.last_429 = -math.inf
        self.lo: float | None = None  # bounds on the provider's limit, units/s
        self.hi: float | None = None
        # How deep the provider's bucket is, in seconds of its limit, once known: what it
        # took in before its first 429, less what it refilled meanwhile.
        self.depth: float | None = None
        self.first_429: list[float] | None = None  # [sent_at, accepted before, since]
        # (sent_at, units): +cost when admitted, -cost when answered 429, +correction
        # when the real usage is known. Summed over an interval it is what the provider
        # accepted from the requests sent in it.
        self.ledger: deque[tuple[float, float]] = deque()
        self.sent: deque[list[float]] = deque()  # admissions of the last few seconds

    # -- persistence -------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self._SCALARS:
            value = getattr(self, name)
            out[name] = None if isinstance(value, float) and math.isinf(value) else value
        out["ledger"] = [list(e) for e in self.ledger]
        out["sent"] = [list(e) for e in self.sent]
        return out

    def load(self, state: dict[str, Any]) -> None:
        for name in self._SCALARS:
            value = state[name]
            if value is None and name == "headers_since":
                value = math.inf
            elif value is None and name in (
                "tat",
                "anchor",
                "distrust_until",
                "share_grown",
                "cut_at",
                "last_cut",
                "last_429",
            ):
                value = -math.inf
            setattr(self, name, value)
        self.ledger = deque((t, u) for t, u in state["ledger"])
        self.sent = deque(list(e) for e in state["sent"])

    # -- pacing ------------------------------------------------------------------------

    @property
    def paced(self) -> bool:
        return self.rate is not None

    def need(self, cost: float) -> float:
        """What the provider's bucket must hold before a request guessed at ``cost`` goes.

        Following its headers, the guess plus a reserve for guesses that ran short
        lately, so a request that costs more than guessed still fits; only the guess is
        charged, and the answer corrects it to the real cost.
        """
        if self.limit is None:
            return cost
        return cost * (1.0 + min(self.spread, _MAX_RESERVE))

    def _burst(self, cost: float, *, waited: bool) -> float:
        """The most the model believes the provider's bucket holds for us: one request
        (with its reserve), plus a little timer slack for a request that waited for its
        slot and was woken late (it keeps its slot, or every small delay would be lost
        for good) — never for one that did not wait, nor when the headers show a bucket
        of one request: it has no slack to give. cardmill never counts on a deeper
        bucket: a burst drains it, and guesses that ran short then refuse others."""
        assert self.rate is not None
        if self.limit is not None:
            slack = self.rate * _LATE_CREDIT if self.most_remaining >= cost else 0.0
            return self.need(cost) + slack
        return cost + (self.rate * _LATE_CREDIT if waited else 0.0)

    def level(self, now: float, cost: float = 0.0, *, waited: bool = True) -> float:
        if self.rate is None:
            return math.inf
        if math.isinf(self.tat):
            return self.need(cost)  # a fresh pace: exactly one request's worth, no slack
        return min(self._burst(cost, waited=waited), self.rate * (now - self.tat))

    def earliest(self, cost: float) -> float:
        """When a request guessed at ``cost`` may go."""
        if self.rate is None or cost <= 0:
            return -math.inf
        return self.tat + self.need(cost) / self.rate

    def admit(self, now: float, cost: float, seq: int = 0, *, waited: bool = True) -> float:
        """Take a request guessed at ``cost``; returns what it was charged (the guess, or
        with headers the guess and its reserve, until the answer says the real cost)."""
        charged = self.need(cost) if cost > 0 else cost
        if self.rate is not None and cost > 0:
            level = self.level(now, cost, waited=waited)
            self.tat = now - (level - charged) / self.rate
        # [sent_at, charged, seq, what it took from the provider as far as we know]
        self.sent.append([now, charged, seq, charged])
        if charged > 0:
            self.typical += (charged - self.typical) * (_TYPICAL if self.typical else 1.0)
        self._trim(now)
        if self.episode_start is not None:
            self.ledger.append((now, charged))
            self._fold(now)
        return charged

    def _sent_entry(self, seq: int) -> list[float] | None:
        for entry in reversed(self.sent):
            if entry[2] == seq:
                return entry
        return None

    def set_rate(self, now: float, rate: float | None) -> bool:
        """Change the pace, keeping what the model believes the provider's bucket holds."""
        if rate is not None:
            if self.ceiling is not None:
                rate = min(rate, self.ceiling)
            rate = max(rate, self.floor)
        if rate == self.rate:
            return False
        if rate is not None and self.rate is not None and not math.isinf(self.tat):
            level = self.rate * (now - self.tat)
            self.tat = now - level / rate
        self.rate = rate
        return True

    def correct(self, ticket_sent: float, ticket_seq: int, units: float) -> None:
        """An admission's real cost is ``units`` more (or less) than it was charged.

        A provider accepts no request larger than its bucket (a minute of its limit, at
        most), and the pace is never far under the limit, so a cost of more than two
        minutes of the pace is a false report: it is taken as two minutes, not as a
        stall of the whole run."""
        if not units:
            return
        if self.rate is not None:
            units = min(units, _MAX_DEBT * self.rate)
            self.tat += units / self.rate
        self._book(ticket_sent, ticket_seq, units)
        entry = self._sent_entry(ticket_seq)
        if entry is not None:
            entry[3] += units

    def distrust_headers(self, now: float) -> None:
        """The provider refused a request its own headers said would fit: what they say
        does not describe the limit that binds (a proxy's own limit, a shared quota). Learn
        it from 429s instead, for a while."""
        self.limit = None
        self.anchor = -math.inf
        self.distrust_until = now + _DISTRUST

    def observe_guess(self, guessed: float, actual: float) -> None:
        """A request guessed at ``guessed`` was charged ``actual``: keep track of how far
        guesses run short."""
        if guessed > 0:
            over = max(0.0, (actual - guessed) / guessed)
            self.spread = max(over, self.spread * _SPREAD_DECAY)

    def refund(self, ticket_sent: float, ticket_seq: int, cost: float) -> None:
        """An admission that was never sent: give its slot back."""
        self.correct(ticket_sent, ticket_seq, -cost)

    def rejected(self, ticket_sent: float, ticket_seq: int, cost: float) -> None:
        self._book(ticket_sent, ticket_seq, -cost)
        entry = self._sent_entry(ticket_seq)
        if entry is not None:
            entry[3] = 0.0  # it took nothing from the provider's bucket

    def _book(self, sent_at: float, seq: int, units: float) -> None:
        # Only tickets admitted inside the episode have their admission in the ledger.
        if self.episode_start is not None and seq >= self.episode_seq:
            self.ledger.append((sent_at, units))

    @property
    def floor(self) -> float:
        # One request a minute keeps probing alive.
        return self.unit / 60.0

    # -- measuring -----------------------------------------------------------------------

    def _trim(self, now: float) -> None:
        while self.sent and self.sent[0][0] < now - _WINDOW:
            self.sent.popleft()

    def send_rate(self, now: float) -> float:
        self._trim(now)
        if not self.sent:
            return 0.0
        span = max(now - self.sent[0][0], 1.0)
        return sum(e[1] for e in self.sent) / span

    def accepted_between(self, start: float, end: float) -> float:
        return sum(units for t, units in self.ledger if start <= t < end)

    def _fold(self, now: float) -> None:
        """Keep the ledger bounded however long an episode lasts without a 429.

        Sums are only ever asked from the episode's start or from the last 429's send
        time (the anchor), up to a send time that is recent. So entries older than
        ``_LEDGER_SPAN`` fold into one entry at the episode's start (those before the
        anchor) and one at the anchor (the rest), and every sum asked stays exact.
        """
        if self.episode_start is None or len(self.ledger) < _LEDGER_FOLD_AT:
            return
        anchor = max(self.last_429, self.episode_start)
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
        folded = [(self.episode_start, before_anchor), (anchor, since_anchor)]
        self.ledger = deque([*(e for e in folded if e[1]), *recent])

    # -- learning ------------------------------------------------------------------------

    def cut(self, now: float, sent_at: float, cost: float, next_seq: int) -> bool:
        """A 429 for this quantity, for a request sent at ``sent_at`` costing ``cost``.

        Returns True when the pace changed.
        """
        if sent_at < self.last_cut:
            return False  # same congestion epoch: already cut for it
        measured = self.send_rate(now)
        pace = self.rate if self.rate is not None else measured
        # The rate that touched the limit: what we were really sending, when we sent less
        # than the pace allowed.
        top = min(pace, measured) if measured > 0 else pace
        self.last_cut = now
        congested = self.episode_start is not None and sent_at - self.last_429 < max(
            _CONGESTED, 3.0 * cost / max(pace, 1e-9)
        )
        if not congested or self.episode_start is None:
            # A probe touched the limit after a quiet spell (or this is the first 429:
            # from an unpaced start, half the rate that hit it, as in TCP's slow start).
            # The 429 came some time after the pace passed the limit (the provider's
            # bucket had to drain first), so the limit is a little below `top`; what was
            # accepted since the last 429 bounds it from below.
            w_max = top
            if self.episode_start is not None and self.rate is not None:
                lo, hi = self._bounds(self.episode_start, sent_at, cost)
                if self.w_max is None:
                    w_max = max(min(_DRAIN * top, hi), lo)
                elif top < self.w_max * _ROSE:
                    # Just past the last estimate: the pace overshoots a little before
                    # a strict bucket runs dry, so an estimate from an earlier probe
                    # moves up a little per cycle at most (one from congestion, made
                    # across Retry-After pauses, may be low: this probe says more).
                    cap = self.w_max * _ESCAPE if self.probed else math.inf
                    w_max = max(min(_DRAIN * top, cap), lo)
                elif (self.depth is None and lo < self.w_max * _ROSE_ACCEPTED) or (
                    self.depth is not None and self.depth >= _DEEP
                ):
                    # Far past it before the 429, and the bucket is deep (or, not knowing,
                    # the provider accepted no more than before): it took the excess for
                    # a while. It went from empty to empty between the two 429s, so what
                    # it accepted meanwhile (give or take a request) is its refill.
                    w_max = max(min(_DRAIN * top, hi), self.w_max)
                else:
                    # Far past it, and the bucket is shallow (or the provider accepted
                    # more): the limit rose, or our estimate was low. A shallow bucket
                    # runs dry soon after the pace passes its limit: trust the 429.
                    w_max = max(_DRAIN * top, lo)
            self.episode_start = sent_at
            self.episode_seq = next_seq
            self.ledger.clear()
            if self.rate is None:
                # The end of the slow start, which paced up smoothly: the limit is just
                # under what hit it (a deep bucket shows itself by more 429s to come,
                # and the congestion estimate below takes over).
                w_max = _DRAIN * top
                if self.sent:
                    before = sum(e[1] for e in self.sent if e[0] < sent_at)
                    self.first_429 = [sent_at, before, self.sent[0][0]]
                new = _BETA * w_max
                self.return_time = _FAST_RETURN
            else:
                new = _BETA * w_max
                self.return_time = self._return_time(w_max, cost)
            self.w_max = w_max
            self.probed = True
        else:
            # 429s in quick succession: the provider's bucket has stayed (nearly) empty,
            # so what it accepted since the episode began, over the time, is its refill
            # rate give or take a request: never send faster than its upper bound.
            lo, hi = self._bounds(self.episode_start, sent_at, cost)
            self.lo, self.hi = lo, hi
            if self.depth is None and self.first_429 is not None and hi > 0:
                # The bucket was full when we started and empty at the first 429:
                # what it took in meanwhile, less its refill, is its depth.
                at, before, since = self.first_429
                self.depth = max(0.0, (before - hi * (at - since)) / hi)
            new = max(min(_BETA * top, hi), lo)
            self.w_max = max(new, min(hi, top))
            self.probed = False
            self.return_time = _FAST_RETURN
        self.last_429 = sent_at
        self.start_rate = max(new, self.floor)
        self.cut_at = now
        self.frozen_at = None
        self.set_rate(now, new)
        # The provider's bucket was empty when the refused request arrived.
        self.tat = max(self.tat, sent_at)
        return True

    def _return_time(self, top: float, cost: float) -> float:
        """How long the curve takes to come back to ``top``: long enough that a probe
        cycle holds well over a hundred requests (a 429 costs under 1% of them), and
        twice that for a deep bucket, which pays for a probe only when it runs dry."""
        requests_per_s = top / max(cost, 1e-9) if cost > 0 else top
        longest = _RETURN_MAX * (2.0 if self.depth is not None and self.depth >= _DEEP else 1.0)
        if requests_per_s <= 0:
            return longest
        return min(longest, max(_RETURN_MIN, _RETURN_REQUESTS / requests_per_s))

    def _bounds(self, start: float, end: float, cost: float) -> tuple[float, float]:
        span = max(end - start, 1e-9)
        got = self.accepted_between(start, end)
        unit = max(cost, self.unit if self.name == "requests" else cost)
        return max(got - unit, 0.0) / span, (got + unit) / span

    def share_cut(self, now: float, sent_at: float) -> bool:
        """A 429 the headers account for: following them, our request found the bucket
        empty. Alone on the key that is rare; when it recurs, others on the key take part
        of the stated limit, so keep a smaller share of it (once per congestion epoch),
        and give it back slowly while no 429 comes."""
        if (
            self.limit is None
            or sent_at < self.last_cut
            or sent_at <= self.headers_since + _SETTLE_AFTER_CHANGE
        ):
            # Sent in an epoch already cut, or before the limit we follow had settled in
            # (a bucket still drained by the pace of a limit that just changed).
            return False
        self.last_cut = now
        self.share = max(_SHARE_FLOOR, self.share * _SHARE_CUT)
        self.share_grown = now + _HOLD_AFTER_CUT
        return self.set_rate(now, self._header_pace())

    def _header_pace(self) -> float:
        assert self.limit is not None
        paced = self.limit * _HEADER_MARGIN * self.share
        return paced if self.ceiling is None else min(paced, self.ceiling)

    def _grow_share(self, now: float, app_limited: bool) -> bool:
        if self.share >= 1.0 or now <= self.share_grown:
            return False
        dt, self.share_grown = now - self.share_grown, now
        if app_limited:
            return False
        self.share = min(1.0, self.share + (1.0 - self.share) * -math.expm1(-dt / _SHARE_RETURN))
        return self.set_rate(now, self._header_pace())

    def grow(self, now: float, app_limited: bool) -> bool:
        """Move the pace along its growth curve; frozen while app-limited."""
        if self.rate is not None and self.limit is not None:
            return self._grow_share(now, app_limited)
        if self.rate is None:
            return False
        if app_limited:
            if self.frozen_at is None:
                self.frozen_at = now
            return False
        if self.frozen_at is not None:
            # Time spent app-limited does not count: the curve resumes where it stopped.
            self.cut_at += now - self.frozen_at
            self.frozen_at = None
        if self.w_max is None or self.start_rate is None:
            return False
        t = now - self.cut_at
        k = self.return_time
        w = self.w_max
        # Below two requests a second the probe's clock runs slower, so that it grows by
        # as much per request as at two (at 30 rpm a bucket of one request runs dry on
        # the first request past its limit: growth per second would overshoot). A deep
        # bucket takes the overshoot for a while: its probe keeps its own pace.
        stretch = 1.0
        if self.depth is None or self.depth < _DEEP:
            stretch = max(1.0, _BRISK / max(w / max(self.typical, 1e-9), 1e-9))
        if t < k:
            # Concave: back from the cut to the rate of the last 429, flat near it.
            gap = max(w - self.start_rate, 0.0)
            target = w - gap * ((k - t) / k) ** 3
        else:
            # Convex: probe above it, gently at first (the limit is probably right
            # there); once well past it without a 429, the limit rose: speed up.
            past = (t - k) / stretch
            if past <= _PROBE_TIME:
                target = w * (1.0 + (_ESCAPE - 1.0) * (past / _PROBE_TIME) ** 2)
            else:
                # Growth starts slow and speeds up: little overshoot when the limit is
                # just above, quick to find one that doubled. (Bounded: hours without
                # a 429 must not overflow; the send rate caps the pace long before.)
                x = past - _PROBE_TIME
                ramp = min(x, _ESCAPE_RAMP)
                log_growth = _ESCAPE_GROWTH * (ramp * ramp / (2 * _ESCAPE_RAMP))
                log_growth += _ESCAPE_GROWTH * max(0.0, x - _ESCAPE_RAMP)
                target = w * _ESCAPE * math.exp(min(log_growth, _MAX_LOG_GROWTH))
        measured = self.send_rate(now)
        if measured > 0:
            target = min(target, max(2.0 * measured, self.rate))
        if target <= self.rate:
            return False
        return self.set_rate(now, target)

    # -- headers ----------------------------------------------------------------------

    def apply_hint(
        self,
        now: float,
        sent_at: float,
        limit: float | None,
        remaining: float | None,
    ) -> bool:
        """The provider's headers for a request sent at ``sent_at``: its limit per
        minute and what its bucket held just after that request."""
        if limit is None or not limit > 0 or now < self.distrust_until:
            return False
        rate = limit / 60.0
        changed = False
        if self.limit != rate:
            self.headers_since = now  # requests sent before did not know this limit
            self.limit = rate
            self.lo = self.hi = rate
            changed = True
        paced = self._header_pace()
        changed |= self.set_rate(now, paced)
        if remaining is not None:
            self.most_remaining = max(self.most_remaining, remaining)
        if remaining is not None and sent_at >= self.anchor:
            # Re-anchor the model: just after that request, the bucket held `remaining`;
            # then take away what we sent since.
            self.anchor = sent_at
            self.tat = sent_at - remaining / paced
            for t, _, _, took in self.sent:
                if t > sent_at and took > 0:
                    # What it took, as far as we know: its real cost once answered, its
                    # charge (the guess and its reserve) while still in flight.
                    level = min(self._burst(took, waited=True), paced * (t - self.tat))
                    self.tat = t - (level - took) / paced
        return changed
