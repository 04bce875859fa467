"""The adaptive token bucket on its own, in virtual time."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import trio
import trio.lowlevel
import trio.testing

from cardmill import LimitKind, RateHint
from cardmill.engine import AdaptiveBucket, Limits, SharedBucket, _dimension
from cardmill.engine._core import BucketCore

T = TypeVar("T")


async def test_unpaced_bucket_admits_at_once_but_checkpoints(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bucket = AdaptiveBucket()
    with trio.testing.assert_checkpoints():
        ticket = await bucket.acquire(500)
    assert ticket.sent_at == trio.current_time() == 0
    assert bucket.statistics().requests_per_second is None


async def test_configured_ceiling_paces_exactly(autojump_clock: trio.testing.MockClock) -> None:
    bucket = AdaptiveBucket(Limits(requests_per_minute=60))
    times = [(await bucket.acquire()).sent_at for _ in range(5)]
    assert times == [0.0, 1.0, 2.0, 3.0, 4.0]


async def test_input_tokens_are_paced_too(autojump_clock: trio.testing.MockClock) -> None:
    bucket = AdaptiveBucket(Limits(input_tokens_per_minute=6000))
    times = [(await bucket.acquire(1000)).sent_at for _ in range(3)]
    assert times == [0.0, 10.0, 20.0]


async def test_reported_usage_corrects_the_charge(autojump_clock: trio.testing.MockClock) -> None:
    bucket = AdaptiveBucket(Limits(input_tokens_per_minute=6000))
    first = await bucket.acquire(1000)
    bucket.on_success(first, input_tokens=2000)  # twice the estimate: 10 s more
    second = await bucket.acquire(1000)
    assert second.sent_at == 20.0


async def test_waiters_leave_in_order_one_interval_apart(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bucket = AdaptiveBucket(Limits(requests_per_minute=120))
    got: list[tuple[int, float]] = []

    async def one(i: int) -> None:
        got.append((i, (await bucket.acquire()).sent_at))

    async with trio.open_nursery() as nursery:
        for i in range(6):
            nursery.start_soon(one, i)
            await trio.lowlevel.checkpoint()
    assert [t for _, t in got] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert [i for i, _ in got] == list(range(6))


async def test_one_cut_per_congestion_epoch(autojump_clock: trio.testing.MockClock) -> None:
    bucket = AdaptiveBucket(Limits(requests_per_minute=600))
    tickets = [await bucket.acquire() for _ in range(4)]
    await trio.sleep(1.0)
    before = bucket.requests_per_second
    for t in tickets:
        bucket.on_rate_limited(t, limit=LimitKind.REQUESTS)
    stats = bucket.statistics()
    assert (stats.cuts, stats.rate_limited) == (1, 4)
    assert before is not None
    assert stats.requests_per_second is not None
    assert stats.requests_per_second < before
    # A request sent after the cut that is refused starts a new epoch: a second cut.
    late = await bucket.acquire()
    bucket.on_rate_limited(late, limit=LimitKind.REQUESTS)
    assert bucket.statistics().cuts == 2


async def test_retry_after_pauses_then_paces(autojump_clock: trio.testing.MockClock) -> None:
    bucket = AdaptiveBucket(Limits(requests_per_minute=60))
    ticket = await bucket.acquire()
    bucket.on_rate_limited(ticket, retry_after=75.0, limit=LimitKind.REQUESTS)
    assert bucket.statistics().paused_until == 75.0
    times = [(await bucket.acquire()).sent_at for _ in range(3)]
    assert times[0] == 75.0
    assert times[1] - times[0] > 0.9  # paced, not a herd


async def test_pause_wakes_sleeping_waiters_late_not_early(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bucket = AdaptiveBucket(Limits(requests_per_minute=60))
    first = await bucket.acquire()
    admitted: list[float] = []

    async def waiter() -> None:
        admitted.append((await bucket.acquire()).sent_at)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(0.5)  # the waiter sleeps until 1.0 ...
        bucket.on_rate_limited(first, retry_after=5.0)  # ... when a pause to 5.5 starts
    assert admitted == [5.5]


async def test_rate_never_falls_below_the_floor(autojump_clock: trio.testing.MockClock) -> None:
    bucket = AdaptiveBucket(Limits(requests_per_minute=60))
    for _ in range(30):
        ticket = await bucket.acquire()
        bucket.on_rate_limited(ticket, limit=LimitKind.REQUESTS)
    rate = bucket.requests_per_second
    assert rate is not None
    assert rate >= 1 / 60


async def test_headers_set_the_ceiling(autojump_clock: trio.testing.MockClock) -> None:
    bucket = AdaptiveBucket()
    ticket = await bucket.acquire()
    bucket.on_success(ticket, hint=RateHint(requests_limit=600, requests_remaining=590))
    stats = bucket.statistics()
    assert stats.requests_per_second == pytest.approx(10 * 0.998)
    assert stats.estimated_requests_per_second == 10


async def test_429_on_input_tokens_paces_tokens(autojump_clock: trio.testing.MockClock) -> None:
    bucket = AdaptiveBucket()
    tickets = [await bucket.acquire(1000) for _ in range(5)]
    await trio.sleep(1)
    bucket.on_rate_limited(tickets[-1], limit=LimitKind.INPUT_TOKENS, retry_after=1)
    stats = bucket.statistics()
    assert stats.input_tokens_per_second is not None
    assert stats.requests_per_second is None


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="requests_per_minute must be a finite number > 0"):
        Limits(requests_per_minute=0)
    with pytest.raises(ValueError, match="input_tokens_per_minute must be a finite number > 0"):
        Limits(input_tokens_per_minute=-5)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="requests_per_minute must be a finite number"):
            Limits(requests_per_minute=bad)
        with pytest.raises(ValueError, match="start_requests_per_minute must be a finite"):
            Limits(start_requests_per_minute=bad)


class DictStore:
    """A RateStateStore in a dict, stepping on trio's clock."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}

    async def update_rate_state(
        self, name: str, step: Callable[[dict[str, Any] | None, float], tuple[dict[str, Any], T]]
    ) -> T:
        await trio.lowlevel.checkpoint()
        raw = self.states.get(name)
        state, result = step(None if raw is None else json.loads(raw), trio.current_time())
        self.states[name] = json.dumps(state)
        return result


async def test_shared_state_stays_bounded_in_a_long_run_without_429s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One 429 opens an estimation regime; then thousands of requests are accepted at a
    # steady 10/s with no further 429 (an app-limited run). The shared state is rewritten
    # on every step, so it must not grow with the number of requests.
    store = DictStore()
    bucket = SharedBucket(store, "key", Limits(requests_per_minute=600))
    first = await bucket.acquire(500)
    await bucket.report_rate_limited(first, retry_after=None, limit=LimitKind.REQUESTS, hint=None)
    sizes = []
    for n in range(3000):
        ticket = await bucket.acquire(500)
        await bucket.report_success(ticket, input_tokens=450, hint=None)
        await trio.sleep(0.1)
        if n in (999, 2999):
            sizes.append(len(store.states["key"]))
    assert sizes[1] < 20_000, sizes
    assert sizes[1] < sizes[0] * 1.2, sizes


def test_ledger_folding_keeps_every_sum_the_estimates_ask_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two 429s a minute apart, 4 requests a second between them, some answered with a
    # correction long after they were sent: the sums from the episode's start and from
    # the last 429 are the same whether the ledger was folded or kept entry by entry.
    def run() -> tuple[float, float]:
        dim = _dimension.Dimension("requests", ceiling=10.0)
        first_429 = 1.0
        dim.cut(first_429, first_429, 1.0, next_seq=1)
        seq = 1
        t = 2.0
        while t < 62.0:
            dim.admit(t, 1.0)
            if seq % 7 == 0:
                dim.rejected(t, seq, 1.0)
            seq += 1
            t += 0.25
        second_429 = t
        return (
            dim.accepted_between(first_429, second_429),
            dim.accepted_between(dim.last_429, second_429),
        )

    folded = run()
    monkeypatch.setattr(_dimension, "_LEDGER_FOLD_AT", 10**9)
    kept = run()
    assert folded == kept
    assert kept[0] == 240 - 240 // 7


async def test_a_shared_state_of_another_format_is_learnt_afresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A worker of another cardmill version left its state under the same name (keys
    # missing or different): this one starts learning again instead of failing.
    store = DictStore()
    store.states["key"] = json.dumps({"requests": {"rate": 1.0}, "paused_until": None})
    bucket = SharedBucket(store, "key", Limits(requests_per_minute=600))
    ticket = await bucket.acquire(500)
    await bucket.report_success(ticket, input_tokens=450, hint=None)
    saved = json.loads(store.states["key"])
    assert saved["format"] == 2
    assert saved["admitted"] == 1


async def test_an_absurd_usage_report_does_not_stall_the_pace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A proxy reports a billion input tokens for a request of a thousand: at 6,000 a
    # minute that would be a pause of 19 years. One answer pushes back two minutes at most.
    bucket = AdaptiveBucket(Limits(input_tokens_per_minute=6000))
    first = await bucket.acquire(1000)
    bucket.on_success(first, input_tokens=1_000_000_000)
    second = await bucket.acquire(1000)
    assert second.sent_at <= 10.0 + 120.0


def test_tickets_of_a_dead_worker_stop_holding_the_slow_start_window() -> None:
    # Workers sharing one bucket in slow start: one was killed holding tickets that will
    # never be answered. Once round trips are known to take about a second, its tickets
    # stop counting within seconds, not minutes.
    core = BucketCore()
    first = core.admit(0.0, 0.0, 0.0)
    core.success(1.0, first, None, None)  # round trips take a second
    dead = [core.admit(1.0, 0.0, 1.0) for _ in range(core.window or 0)]
    assert dead
    assert core.earliest(0.0, 2.0) > 2.0  # the window is full of the dead worker's tickets
    assert core.earliest(0.0, 2.0) <= 1.0 + 15.0
    assert core.earliest(0.0, 17.0) <= 17.0


@pytest.mark.parametrize("quiet", [3_600.0, 86_400.0, 1e7])
def test_hours_without_a_429_do_not_overflow_the_probe(quiet: float) -> None:
    # A probe that never meets another 429 keeps growing; a run that waits long enough
    # (a day, a virtual clock's jump) must still get a finite pace, not an OverflowError.
    core = BucketCore()
    for at in range(8):
        core.success(at + 1.0, core.admit(float(at), 0.0, float(at)), None, None)
    ticket = core.admit(8.0, 0.0, 8.0)
    core.limited(9.0, ticket, None, None, None)
    core.grow(9.0 + quiet, app_limited=False)
    assert core.requests.rate is not None
    assert math.isfinite(core.requests.rate)
