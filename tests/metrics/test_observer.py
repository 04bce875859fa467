"""Metrics of a run: exact counts from the engine's events, on an in-memory reader."""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
import trio.testing

from cardmill import (
    Document,
    LimitKind,
    MemoryStorage,
    Overloaded,
    PermanentError,
    RateLimited,
    TransientError,
    Usage,
)
from cardmill._cost import DEFAULT_PRICES, cost_of
from cardmill.engine import Engine, Event, RetryPolicy
from cardmill.providers import AnthropicProvider
from cardmill.testing import FakeAnthropicServer, ScriptedProvider, Step

from .conftest import Named, Otel

MODEL = "claude-haiku-4-5"


def docs(n: int) -> list[Document]:
    return [Document(f"doc{i}.md", f"# Doc {i}\n\nSome text {i}.\n".encode()) for i in range(n)]


async def test_a_run_with_429s_and_529s_gives_exact_counts(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(4))
    used = Usage(
        input_tokens=100,
        output_tokens=40,
        cache_read_input_tokens=30,
        cache_creation_input_tokens=5,
    )
    provider = Named(
        ScriptedProvider(
            {
                "doc0.md": [
                    Step(
                        1.0,
                        error=RateLimited("slow", retry_after=2.0, limit=LimitKind.INPUT_TOKENS),
                    ),
                    Step(1.0, error=RateLimited("slow", retry_after=2.0, limit=LimitKind.REQUESTS)),
                    Step(1.0, usage=used),
                ],
                "doc1.md": [Step(1.0, error=Overloaded("busy")), Step(1.0, usage=used)],
                "doc2.md": [Step(1.0, error=RateLimited("slow")), Step(1.0, usage=used)],
                "doc3.md": [
                    Step(1.0, error=TransientError("reset")),
                    Step(1.0, error=PermanentError("bad request", usage=Usage(input_tokens=9))),
                ],
            },
            default=Step(1.0, usage=used),
        )
    )
    events: list[Event] = []
    observer = otel.metrics.observer(provider="anthropic", model=MODEL, then=events.append)
    policy = RetryPolicy(base_delay=0.5, max_delay=0.5)
    summary = await Engine(
        storage, provider, retry=policy, observer=observer, rng=random.Random(2)
    ).execute(run.id)

    assert len(events) > 0  # `then` saw every event
    assert otel.total("cardmill.requests") == summary.requests == 9
    assert otel.total("cardmill.requests", error__type="RateLimited") == 3
    assert otel.total("cardmill.requests", error__type="Overloaded") == 1
    assert otel.total("cardmill.requests", error__type="TransientError") == 1
    assert otel.total("cardmill.requests", error__type="PermanentError") == 1
    assert otel.total("cardmill.rate_limited") == summary.rate_limited == 3
    assert otel.total("cardmill.rate_limited", cardmill__limit="input_tokens") == 1
    assert otel.total("cardmill.rate_limited", cardmill__limit="requests") == 1
    assert otel.total("cardmill.rate_limited", cardmill__limit="unknown") == 1
    assert otel.total("cardmill.overloaded") == summary.overloaded == 1
    assert otel.total("cardmill.retries") == summary.retries == 5
    assert otel.total("cardmill.uploads", cardmill__upload__status="completed") == 3
    assert otel.total("cardmill.uploads", cardmill__upload__status="failed") == 1
    assert otel.total("cardmill.runs", cardmill__run__status="partial") == 1
    assert otel.total("cardmill.tokens", cardmill__token__type="input") == 3 * 100 + 9
    assert otel.total("cardmill.tokens", cardmill__token__type="output") == 3 * 40
    assert otel.total("cardmill.tokens", cardmill__token__type="cache_read") == 3 * 30
    assert otel.total("cardmill.tokens", cardmill__token__type="cache_write") == 3 * 5
    price = DEFAULT_PRICES.price_for(MODEL)
    assert price is not None
    expected = 3 * cost_of(used, price) + cost_of(Usage(input_tokens=9), price)
    assert otel.total("cardmill.cost") == pytest.approx(expected, rel=1e-12)
    assert otel.total("cardmill.uploads.in_flight") == 0

    # The semantic conventions' histograms: prompt tokens include the cache's.
    usage = otel.points("gen_ai.client.token.usage")
    base = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": MODEL,
    }
    prompt = usage[tuple(sorted({**base, "gen_ai.token.type": "input"}.items()))]
    assert (prompt.count, prompt.sum) == (4, 3 * 135 + 9)
    output = usage[tuple(sorted({**base, "gen_ai.token.type": "output"}.items()))]
    assert (output.count, output.sum) == (4, 120)
    durations = otel.points("gen_ai.client.operation.duration")
    ok = durations[tuple(sorted(base.items()))]
    assert ok.count == 3
    assert ok.sum == pytest.approx(3.0)
    assert ok.explicit_bounds[0] == 0.01  # the conventions' boundaries
    failed = durations[tuple(sorted({**base, "error.type": "RateLimited"}.items()))]
    assert failed.count == 3


async def test_no_cost_for_a_model_without_a_price(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(2))
    observer = otel.metrics.observer(provider="openai", model="some-local-model")
    await Engine(storage, ScriptedProvider(default=Step(1.0)), observer=observer).execute(run.id)
    assert otel.points("cardmill.cost") == {}
    assert otel.total("cardmill.tokens", cardmill__token__type="input") == 200


async def test_in_flight_and_pace_while_a_run_works(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(5))
    provider = ScriptedProvider(default=Step(10.0))
    engine = Engine(
        storage, provider, concurrency=3, observer=otel.metrics.observer(provider="scripted")
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.execute, run.id)
        while provider.in_flight < 3:
            await trio.testing.wait_all_tasks_blocked()
            if provider.in_flight < 3:
                await trio.sleep(0.01)
        assert otel.total("cardmill.uploads.in_flight") == 3
    assert otel.total("cardmill.uploads.in_flight") == 0
    assert otel.total("cardmill.uploads") == 5


async def test_pace_and_learnt_limit_gauges_follow_the_bucket(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(8))
    provider = ScriptedProvider(
        {"doc0.md": [Step(1.0, error=RateLimited("slow", limit=LimitKind.REQUESTS))]},
        default=Step(1.0),
    )
    engine = Engine(storage, provider, observer=otel.metrics.observer(provider="scripted"))
    await engine.execute(run.id)
    stats = engine.bucket.statistics()
    assert stats.requests_per_second is not None
    assert otel.total("cardmill.rate.requests") == pytest.approx(stats.requests_per_second)
    assert stats.estimated_requests_per_second is not None
    assert otel.total("cardmill.limit.requests") == pytest.approx(
        stats.estimated_requests_per_second
    )


async def test_a_failing_instrument_never_stops_the_run(
    otel: Otel, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def add(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("exporter down")

    otel.metrics.requests = Broken()  # type: ignore[assignment]
    storage = MemoryStorage()
    run = await storage.create_run(docs(2))
    seen: list[Event] = []
    observer = otel.metrics.observer(then=seen.append)
    summary = await Engine(storage, ScriptedProvider(default=Step(1.0)), observer=observer).execute(
        run.id
    )
    assert summary.run.completed_items == 2
    assert len(seen) >= 5
    assert "could not record RequestFinished" in caplog.text


async def test_the_next_observer_raising_still_stops_the_run(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    def refuse(event: Event) -> None:
        raise ValueError("observer says no")

    storage = MemoryStorage()
    run = await storage.create_run(docs(1))
    observer = otel.metrics.observer(then=refuse)
    with pytest.raises(ValueError, match="observer says no"):
        await Engine(storage, ScriptedProvider(), observer=observer).execute(run.id)


async def test_a_run_against_the_loopback_anthropic_api_with_429s(otel: Otel) -> None:
    async with FakeAnthropicServer() as server:
        server.inject("429", "529")
        provider = AnthropicProvider(api_key="fake-key-for-metrics-0123", base_url=server.url)
        storage = MemoryStorage()
        run = await storage.create_run(docs(3))
        observer = otel.metrics.observer(provider=provider.name, model=provider.model)
        policy = RetryPolicy(base_delay=0.01, max_delay=0.01)
        async with provider:
            summary = await Engine(
                storage, provider, concurrency=1, retry=policy, observer=observer
            ).execute(run.id)
    statuses = server.statuses()
    assert statuses.count(429) == 1
    assert statuses.count(529) == 1
    assert otel.total("cardmill.requests") == len(server.requests) == 5
    assert otel.total("cardmill.rate_limited") == 1
    assert otel.total("cardmill.overloaded") == 1
    assert otel.total("cardmill.uploads", cardmill__upload__status="completed") == 3
    billed = [r.usage for r in server.requests if r.status == 200]
    assert otel.total("cardmill.tokens", cardmill__token__type="input") == sum(
        u["input_tokens"] for u in billed
    )
    assert otel.total("cardmill.tokens", cardmill__token__type="output") == sum(
        u["output_tokens"] for u in billed
    )
    assert otel.total("cardmill.tokens", cardmill__token__type="cache_read") == sum(
        u.get("cache_read_input_tokens", 0) for u in billed
    )
    assert summary.run.completed_items == 3
    assert {dict(k)["gen_ai.request.model"] for k in otel.points("cardmill.requests")} == {
        provider.model
    }
