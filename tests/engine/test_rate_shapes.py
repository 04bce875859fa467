"""Limits shaped the way providers document them, in virtual time.

A bucket that holds one second of its limit, an input-token bucket charged with counts
the client cannot see, rate-limit headers (right, and wrong), a start without a burst.
The benchmark (benchmarks/ratelimit.py) reports the same over many seeds and shapes;
these runs check the behaviour on one seed each, with some room.
"""

from __future__ import annotations

import contextlib
import math
import random

import attrs
import trio
import trio.testing

from cardmill import Document, LimitKind, MemoryStorage, RateHint, RateLimited, RunStatus, Usage
from cardmill.engine import Engine
from cardmill.providers import Analysis
from cardmill.testing import SimulatedAPI, SimulatedStatistics, check_invariants, lognormal

from .conftest import docs

STRICT = {LimitKind.REQUESTS: 1.0}  # "60 RPM may be enforced as 1 request per second"


def steady(
    stats: SimulatedStatistics, per_second: float, *, tokens: bool = False
) -> tuple[float, float]:
    """Goodput / limit and the 429 share, from 30 s in until 90% of the answers."""
    accepted = sorted(zip(stats.accepted_at, stats.accepted_tokens, strict=True))
    first = min(accepted[0][0], *stats.rejected_at) if stats.rejected_at else accepted[0][0]
    start, end = first + 30.0, accepted[int(0.9 * (len(accepted) - 1))][0]
    inside = [tok if tokens else 1 for t, tok in accepted if start <= t <= end]
    refused = sum(1 for t in stats.rejected_at if start <= t <= end)
    return sum(inside) / (end - start) / per_second, refused / (len(inside) + refused)


async def run(api: SimulatedAPI, documents: list[Document], concurrency: int = 8) -> Engine:
    storage = MemoryStorage()
    run_ = await storage.create_run(documents)
    engine = Engine(storage, api, concurrency=concurrency, rng=random.Random(1))
    summary = await engine.execute(run_.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    await check_invariants(storage, run_.id)
    return engine


async def test_a_bucket_of_one_second_is_found_without_headers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = SimulatedAPI(
        requests_per_minute=120, burst_seconds=STRICT, latency=lognormal(1.0, 0.3), seed=3
    )
    await run(api, docs(300))
    goodput, refused = steady(api.statistics(), 2.0)
    assert goodput >= 0.95
    assert refused <= 0.02


async def test_headers_of_a_strict_bucket_never_slow_cardmill_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # `remaining` can never exceed 2 against a `limit` of 120: what a strict bucket looks
    # like, not a sign to stop growing.
    results = {}
    for headers in (False, True):
        api = SimulatedAPI(
            requests_per_minute=120,
            burst_seconds=STRICT,
            latency=lognormal(1.0, 0.3),
            headers=headers,
            seed=3,
        )
        await run(api, docs(300))
        results[headers] = steady(api.statistics(), 2.0)
    assert results[True][0] >= 0.99
    assert results[True][1] <= 0.005
    assert results[True][0] >= results[False][0]


async def test_input_tokens_bind_with_counts_the_client_cannot_see(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = random.Random(5)
    documents = [
        Document(f"d{i}.txt", b"x" * int(min(32_000, max(500, rng.lognormvariate(8.3, 0.9)))))
        # Long enough that the steady part holds several probe cycles: their 429s are
        # averaged, not caught at one cycle's peak (trio's scheduling order varies).
        for i in range(600)
    ]
    for headers in (False, True):
        api = SimulatedAPI(
            input_tokens_per_minute=90_000,
            burst_seconds={LimitKind.INPUT_TOKENS: 30.0},
            token_noise=0.4,
            latency=lognormal(1.0, 0.3),
            headers=headers,
            seed=5,
        )
        await run(api, documents)
        goodput, refused = steady(api.statistics(), 1500.0, tokens=True)
        assert goodput >= 0.93, headers
        assert refused <= 0.03, headers


async def test_a_start_into_a_strict_bucket_is_not_a_burst_of_429s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Concurrency 16 into a bucket of two requests: a burst of 16 would see 14 refused.
    api = SimulatedAPI(requests_per_minute=120, burst_seconds=STRICT, latency=1.0, seed=1)
    await run(api, docs(40), concurrency=16)
    early = [t for t in api.statistics().rejected_at if t < 10.0]
    assert len(early) <= 3


async def test_a_fast_unlimited_provider_reaches_full_concurrency_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The slow start spreads the first requests over a round trip, then doubles: with no
    # limit at all it costs under two round trips of 2 s, not a slower run.
    api = SimulatedAPI(latency=2.0)
    t0 = trio.current_time()
    await run(api, docs(64), concurrency=8)
    assert trio.current_time() - t0 <= 64 / 8 * 2.0 + 4.0


class LyingHeaders:
    """A proxy with its own limit that passes on the upstream's headers: they say
    600/min with plenty left, while the proxy allows 120/min."""

    name = "lying"

    def __init__(self, inner: SimulatedAPI) -> None:
        self.inner = inner

    async def analyze(self, document: Document) -> Analysis:
        try:
            analysis = await self.inner.analyze(document)
        except RateLimited as exc:
            raise RateLimited(
                str(exc), retry_after=exc.retry_after, limit=exc.limit, hint=self._lie()
            ) from None
        return attrs.evolve(analysis, hint=self._lie())

    @staticmethod
    def _lie() -> RateHint:
        return RateHint(requests_limit=600, requests_remaining=500, requests_reset=1.0)


async def test_headers_that_do_not_describe_the_binding_limit_are_set_aside(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = SimulatedAPI(
        requests_per_minute=120, burst_seconds=STRICT, latency=lognormal(1.0, 0.3), seed=2
    )
    storage = MemoryStorage()
    run_ = await storage.create_run(docs(300))
    engine = Engine(storage, LyingHeaders(api), concurrency=8, rng=random.Random(2))
    await engine.execute(run_.id)
    goodput, refused = steady(api.statistics(), 2.0)
    assert goodput >= 0.9
    assert refused <= 0.05


async def test_cached_prompt_tokens_are_not_charged_against_the_input_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Every request reads a 3,000-token prompt from the cache; only the rest counts
    # toward the input-token limit, so pacing to 2,000 documents a minute of 100 tokens
    # each is right, and the run of 100 takes about three seconds, not two minutes.
    api = SimulatedAPI(
        input_tokens_per_minute=60 * 2_000 * 100 / 60,
        cached_tokens=3_000,
        overhead_tokens=0,
        tokens_per_byte={"text/plain": 1.0},
        latency=0.1,
        headers=True,
    )
    engine = await run(api, docs(100, size=100), concurrency=8)
    assert trio.current_time() < 30
    stats = engine.bucket.statistics()
    assert stats.estimated_input_tokens_per_second is not None
    assert math.isclose(stats.estimated_input_tokens_per_second, 200_000 / 60)
    usage = Usage(input_tokens=100, cache_read_input_tokens=3_000, cache_creation_input_tokens=5)
    assert usage.rate_limited_input_tokens == 105


async def test_another_client_on_the_same_key_leaves_cardmill_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A neighbour steadily takes 30% of a 120 rpm key: cardmill learns the 70% left to it
    # without headers, and the neighbour's requests are not in cardmill's statistics.
    api = SimulatedAPI(requests_per_minute=120, latency=lognormal(1.0, 0.3), seed=5)
    neighbour = SimulatedAPI(limits=api.hidden_limits(), latency=1.0, seed=6)
    other = Document("neighbour.txt", b"x" * 1600)

    async def neighbour_traffic() -> None:
        async with trio.open_nursery() as requests:
            while True:
                requests.start_soon(quietly, neighbour, other)
                await trio.sleep(60 / (120 * 0.3))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(neighbour_traffic)
        await run(api, docs(300))
        nursery.cancel_scope.cancel()
    mine, theirs = api.statistics(), neighbour.statistics()
    assert mine.requests == mine.accepted + mine.rate_limited
    assert theirs.accepted > 0
    goodput, refused = steady(mine, 2.0 * 0.7)
    assert goodput >= 0.9
    assert refused <= 0.03


async def quietly(api: SimulatedAPI, document: Document) -> None:
    with contextlib.suppress(RateLimited):
        await api.analyze(document)
