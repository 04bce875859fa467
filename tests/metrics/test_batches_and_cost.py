"""Metrics of cost and batches: the engine's own price, and the batch executor's events."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from cardmill import Document, MemoryStorage, Usage
from cardmill._cost import Price, PriceTable
from cardmill.engine import BatchExecutor, BatchProgress, Engine, Event, RequestFinished
from cardmill.testing import ScriptedProvider, Step

from ..engine.batch_fakes import NEVER, OK, FakeBatchAPI
from .conftest import Named, Otel

MODEL = "claude-haiku-4-5"
# Not the published price: the metric must take the engine's, not a table of its own.
OWN_PRICES = PriceTable({MODEL: Price(input=7.0, output=11.0, cache_write=3.0, cache_read=1.0)})


def docs(n: int) -> list[Document]:
    return [Document(f"doc{i:04d}.txt", b"x" * 400) for i in range(n)]


async def test_the_cost_metric_equals_the_stored_cost_at_the_engines_own_prices(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(4))
    used = Usage(input_tokens=1234, output_tokens=321, cache_read_input_tokens=50)
    provider = Named(
        ScriptedProvider(
            {"doc0001.txt": [Step(1.0, error=_permanent(Usage(input_tokens=77)))]},
            default=Step(1.0, usage=used),
        )
    )
    events: list[Event] = []
    observer = otel.metrics.observer(provider="anthropic", model=MODEL, then=events.append)
    await Engine(storage, provider, prices=OWN_PRICES, observer=observer).execute(run.id)
    stored = await storage.get_run(run.id)
    assert stored.cost_usd > 0
    assert otel.total("cardmill.cost") == pytest.approx(stored.cost_usd, rel=1e-12)
    costs = [e.cost_usd for e in events if isinstance(e, RequestFinished)]
    assert len(costs) == 4
    assert sum(c or 0.0 for c in costs) == pytest.approx(stored.cost_usd, rel=1e-12)


async def test_an_unpriced_model_records_no_cost_and_its_events_say_none(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(2))
    events: list[Event] = []
    observer = otel.metrics.observer(provider="anthropic", model=MODEL, then=events.append)
    provider = Named(ScriptedProvider(default=Step(1.0, usage=Usage(100, 10))))
    await Engine(storage, provider, prices=PriceTable({}), observer=observer).execute(run.id)
    assert otel.points("cardmill.cost") == {}
    assert [
        getattr(e, "cost_usd", "-") for e in events if type(e).__name__ == "RequestFinished"
    ] == [
        None,
        None,
    ]


def _permanent(usage: Usage) -> Exception:
    from cardmill.errors import PermanentError

    return PermanentError("bad request", usage=usage)


async def test_batch_events_feed_batches_request_states_and_uploads(
    otel: Otel, autojump_clock: trio.testing.MockClock
) -> None:
    storage = MemoryStorage(clock=trio.current_time)
    run = await storage.create_run(docs(5))
    # doc0004 is never processed: it expires, goes back to PENDING, then in a second batch.
    api = FakeBatchAPI(
        seconds_per_request=10.0,
        expires_after=200.0,
        outcome=lambda name, n: NEVER if name == "doc0004.txt" and n == 1 else OK,
    )
    seen: list[tuple[int, int, float, float, float]] = []

    def check(event: Event) -> None:
        if isinstance(event, BatchProgress):
            state = "cardmill.batch.request.state"
            seen.append(
                (
                    event.counts.processing,
                    event.counts.succeeded,
                    otel.total(
                        "cardmill.batch.requests", **{state.replace(".", "__"): "processing"}
                    ),
                    otel.total(
                        "cardmill.batch.requests", **{state.replace(".", "__"): "succeeded"}
                    ),
                    otel.total("cardmill.batches.open"),
                )
            )

    observer = otel.metrics.observer(provider="anthropic", model=MODEL, then=check)
    executor = BatchExecutor(
        storage,
        api,
        observer=observer,
        poll_interval=5.0,
        max_poll_interval=5.0,
    )
    summary = await executor.execute(run.id)
    assert summary.run.completed_items == 5
    assert len(api.submissions) == 2
    assert otel.total("cardmill.batches") == 2
    # Every poll that moved: the gauge held the provider's counts of the open batch.
    assert seen
    assert all((p, s, 1.0) == (gp, gs, open_) for p, s, gp, gs, open_ in seen), seen
    assert (3, 2) in {(p, s) for p, s, *_ in seen}
    assert otel.total("cardmill.batches.open") == 0
    assert otel.points("cardmill.batch.requests") == {}
    status = "cardmill__upload__status"
    assert otel.total("cardmill.batch.uploads", **{status: "completed"}) == 5
    assert otel.total("cardmill.batch.uploads", **{status: "released"}) == 1
    assert otel.total("cardmill.batch.uploads", **{status: "failed"}) == 0
    assert otel.total("cardmill.uploads", **{status: "completed"}) == 5
