"""What requests cost: recorded with each upload's settlement, capped by ``max_cost``."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from cardmill import (
    Document,
    ExtractiveProvider,
    InputError,
    MemoryStorage,
    PermanentError,
    RunStatus,
    TransientError,
    UploadStatus,
    Usage,
)
from cardmill._cost import MAX_COST_USD, Price, PriceTable, cost_of
from cardmill.engine import (
    BatchExecutor,
    CostCapReached,
    Engine,
    Event,
    RetryPolicy,
    estimate_cost,
)
from cardmill.providers import Analysis, estimate_input_tokens
from cardmill.testing import ScriptedProvider, Step, check_invariants

from .batch_fakes import FakeBatchAPI
from .conftest import docs
from .test_lost_answers import LosesAnswers

PRICE = Price(1.0, 2.0, cache_write=1.25, cache_read=0.1)
PRICES = PriceTable({"m": PRICE})


class Priced:
    """A scripted provider that names its model and its output budget."""

    def __init__(self, inner: ScriptedProvider, model: str = "m", max_tokens: int = 100) -> None:
        self.inner = inner
        self.name = "priced"
        self.model = model
        self.max_tokens = max_tokens

    async def analyze(self, document: Document) -> Analysis:
        return await self.inner.analyze(document)


usages = st.builds(
    Usage,
    input_tokens=st.integers(0, 200_000),
    output_tokens=st.integers(0, 5_000),
    cache_read_input_tokens=st.integers(0, 50_000),
    cache_creation_input_tokens=st.integers(0, 50_000),
)


def sent(script: list[tuple[Usage, bool]]) -> list[Usage]:
    """The usages of the requests made: up to the first answer, at most three tries."""
    made = []
    for usage, fail in script[:3]:
        made.append(usage)
        if not fail:
            break
    return made


@settings(max_examples=30, deadline=None)
@given(
    scripts=st.lists(
        st.lists(st.tuples(usages, st.booleans()), min_size=1, max_size=3),
        min_size=1,
        max_size=6,
    ),
    concurrency=st.integers(1, 3),
)
def test_recorded_cost_is_the_sum_of_each_requests_cost(
    scripts: list[list[tuple[Usage, bool]]], concurrency: int
) -> None:
    """Successes, failures that report usage and retries are all priced and recorded."""

    async def main() -> None:
        storage = MemoryStorage()
        documents = docs(len(scripts))
        run = await storage.create_run(documents)
        steps = {
            d.name: [
                Step(0.5, usage=u, error=TransientError("reset", usage=u) if fail else None)
                for u, fail in script
            ]
            for d, script in zip(documents, scripts, strict=True)
        }
        provider = Priced(ScriptedProvider(steps, default=Step(0.5, usage=Usage())))
        policy = RetryPolicy(max_attempts=3, base_delay=0.5)
        engine = Engine(storage, provider, concurrency=concurrency, retry=policy, prices=PRICES)
        summary = await engine.execute(run.id)
        expected = sum(cost_of(u, PRICE) for script in scripts for u in sent(script))
        used = sum((u for script in scripts for u in sent(script)), Usage())
        assert summary.run.cost_usd == pytest.approx(expected, rel=1e-9, abs=1e-12)
        assert summary.cost_usd == summary.run.cost_usd
        assert summary.run.usage.input_tokens == used.input_tokens
        assert summary.run.usage.output_tokens == used.output_tokens
        for u in await storage.list_uploads(run.id):
            script = next(s for d, s in zip(documents, scripts, strict=True) if d.name == u.name)
            mine = sum(cost_of(x, PRICE) for x in sent(script))
            assert u.cost_usd == pytest.approx(mine, rel=1e-9, abs=1e-12)
        await check_invariants(storage, run.id)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 40_000), min_size=1, max_size=8),
    outputs=st.data(),
    cap=st.floats(0, 0.06),
    concurrency=st.integers(1, 4),
    exact=st.booleans(),
)
def test_cost_never_passes_the_cap_by_more_than_what_was_in_flight(
    sizes: list[int], outputs: st.DataObject, cap: float, concurrency: int, exact: bool
) -> None:
    max_tokens = 1000
    documents = [Document(f"d{i}.txt", b"x" * n) for i, n in enumerate(sizes)]
    if exact:
        # Requests cost exactly what was estimated: the cap is never passed.
        used = [Usage(estimate_input_tokens(d), max_tokens) for d in documents]
    else:
        used = [
            outputs.draw(
                st.builds(
                    Usage,
                    input_tokens=st.integers(0, 2 * estimate_input_tokens(d)),
                    output_tokens=st.integers(0, max_tokens),
                )
            )
            for d in documents
        ]
    worst = max(cost_of(u, PRICE) for u in used)

    async def main() -> None:
        storage = MemoryStorage()
        run = await storage.create_run(documents)
        steps = {d.name: [Step(1.0, usage=u)] for d, u in zip(documents, used, strict=True)}
        provider = Priced(ScriptedProvider(steps), max_tokens=max_tokens)
        events: list[Event] = []
        engine = Engine(
            storage,
            provider,
            concurrency=concurrency,
            prices=PRICES,
            max_cost=cap,
            observer=events.append,
        )
        summary = await engine.execute(run.id)
        spent = summary.run.cost_usd
        if exact:
            assert spent <= cap + 1e-12
        else:
            assert spent <= cap + concurrency * worst + 1e-12
        pending = await storage.list_uploads(run.id, UploadStatus.PENDING)
        capped = [e for e in events if isinstance(e, CostCapReached)]
        if summary.stopped is None:
            assert summary.run.status == RunStatus.SUCCEEDED
            assert not capped
        else:
            assert summary.run.status == RunStatus.CANCELLED
            assert pending
            assert len(capped) == 1
            assert f"${cap:.4f}" in summary.stopped
        # Nothing is left LOADING, nothing in flight was abandoned: every request made
        # was recorded with its upload.
        assert not await storage.list_uploads(run.id, UploadStatus.LOADING)
        made = {name for name, _ in provider.inner.calls}
        done = {u.name for u in await storage.list_uploads(run.id, UploadStatus.COMPLETED)}
        assert made == done
        await check_invariants(storage, run.id)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def test_capped_run_resumes_with_a_higher_cap_and_finishes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    documents = docs(6, size=4000)
    run = await storage.create_run(documents)
    provider = Priced(ScriptedProvider(default=Step(1.0, usage=Usage(1600, 100))))
    one = estimate_cost(documents[0], PRICE, max_tokens=100)
    first = await Engine(
        storage, provider, concurrency=2, prices=PRICES, max_cost=2.5 * one
    ).execute(run.id)
    assert first.run.status == RunStatus.CANCELLED
    assert first.stopped is not None
    assert "spending cap of" in first.stopped
    assert 0 < first.run.completed_items < 6
    assert first.run.cost_usd <= 2.5 * one
    # Uploads that were never sent keep their attempts: nothing was claimed and released.
    for u in await storage.list_uploads(run.id, UploadStatus.PENDING):
        assert u.attempts <= 1
    second = await Engine(storage, provider, prices=PRICES, max_cost=100.0).execute(run.id)
    assert second.run.status == RunStatus.SUCCEEDED
    assert second.stopped is None
    assert second.run.cost_usd == pytest.approx(6 * cost_of(Usage(1600, 100), PRICE))
    assert len(provider.inner.calls) == 6


class Prompted(Priced):
    """A priced provider whose requests carry a long prompt, and that may say so."""

    def __init__(self, inner: ScriptedProvider, overhead: int | None) -> None:
        super().__init__(inner)
        self.overhead = overhead

    def overhead_tokens(self) -> int | None:
        return self.overhead


@pytest.mark.parametrize("counted", [True, False], ids=["counted", "learnt"])
async def test_a_cap_counts_the_requests_prompt_or_learns_it_from_the_first_answer(
    autojump_clock: trio.testing.MockClock, counted: bool
) -> None:
    storage = MemoryStorage()
    documents = docs(6, size=4000)  # 1,000 tokens each, by the rule of thumb
    run = await storage.create_run(documents)
    used = Usage(12_000 + 1000, 100)  # a recipe's prompt of 12,000 tokens
    provider = Prompted(
        ScriptedProvider(default=Step(1.0, usage=used)), 12_000 if counted else None
    )
    real = cost_of(used, PRICE)
    guess = estimate_cost(documents[0], PRICE, max_tokens=100)
    assert guess < real / 5  # the rule of thumb misses the prompt
    cap = 3.5 * real
    summary = await Engine(storage, provider, concurrency=1, prices=PRICES, max_cost=cap).execute(
        run.id
    )
    assert summary.stopped is not None
    assert summary.run.status == RunStatus.CANCELLED
    # Passed by at most what the request in flight cost beyond its estimate: with the
    # prompt counted, not at all; learnt, only by the first request, before any answer.
    assert summary.run.cost_usd <= cap + (0 if counted else real - guess)
    assert summary.run.completed_items == 3
    assert len(provider.inner.calls) == 3


@pytest.mark.parametrize("batch", [False, True], ids=["sync", "batch"])
async def test_each_answer_is_priced_at_the_model_it_names(
    autojump_clock: trio.testing.MockClock, batch: bool
) -> None:
    dearer = Price(50.0, 100.0, cache_write=62.5, cache_read=5.0)
    prices = PriceTable({"m": PRICE, "claude-haiku-4-5": PRICE, "dear-model": dearer})
    storage = MemoryStorage()
    documents = docs(3, size=400)
    run = await storage.create_run(documents)
    if batch:
        api = FakeBatchAPI(answered_by="dear-model-20260101")
        await BatchExecutor(storage, api, prices=prices, poll_interval=5.0).execute(run.id)
        expected = sum(cost_of(api.billed(d), dearer, batch=True) for d in documents)
    else:
        used = Usage(1000, 100)
        steps = {d.name: [Step(1.0, usage=used, model="dear-model")] for d in documents}
        steps[documents[0].name] = [Step(1.0, usage=used)]  # names no model
        provider = Priced(ScriptedProvider(steps))
        await Engine(storage, provider, prices=prices).execute(run.id)
        expected = cost_of(used, PRICE) + 2 * cost_of(used, dearer)
    done = await storage.get_run(run.id)
    assert done.status == RunStatus.SUCCEEDED
    assert done.cost_usd == pytest.approx(expected)


async def test_a_cap_below_one_request_sends_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(3))
    provider = Priced(ScriptedProvider())
    summary = await Engine(storage, provider, prices=PRICES, max_cost=0.0).execute(run.id)
    assert summary.run.status == RunStatus.CANCELLED
    assert provider.inner.calls == []
    assert summary.stopped is not None
    pending = await storage.list_uploads(run.id, UploadStatus.PENDING)
    assert [u.attempts for u in pending] == [0, 0, 0]


async def test_unpriced_model_records_zero_and_the_cost_is_unknown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(2))
    provider = Priced(ScriptedProvider(), model="nobody-prices-this")
    summary = await Engine(storage, provider, prices=PRICES).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.run.cost_usd == 0.0
    assert summary.run.usage.input_tokens == 200
    assert summary.cost_usd is None
    with pytest.raises(InputError, match="nobody-prices-this"):
        Engine(storage, provider, prices=PRICES, max_cost=1.0)
    with pytest.raises(InputError, match="price"):
        Engine(storage, ScriptedProvider(), prices=PRICES, max_cost=1.0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, "1", True])
def test_max_cost_must_be_a_finite_number(bad: object) -> None:
    with pytest.raises(ValueError, match="max_cost"):
        Engine(MemoryStorage(), Priced(ScriptedProvider()), prices=PRICES, max_cost=bad)  # type: ignore[arg-type]


async def test_extractive_provider_costs_nothing(autojump_clock: trio.testing.MockClock) -> None:
    storage = MemoryStorage()
    run = await storage.create_run([Document("a.md", b"# A\n\nSome text here.\n")])
    summary = await Engine(storage, ExtractiveProvider(), max_cost=0.0).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.cost_usd == 0.0


@pytest.mark.parametrize(
    "usage",
    [
        Usage(-5, -1),
        Usage(math.nan, math.inf),
        Usage(10**30, 10**30),
        Usage("12", None),
        None,
    ],
)
async def test_nonsense_usage_cannot_make_cost_negative_or_nan(
    autojump_clock: trio.testing.MockClock, usage: Usage | None
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(2))

    class Nonsense:
        name = "nonsense"
        model = "m"

        async def analyze(self, document: Document) -> Analysis:
            await trio.sleep(1)
            answer = Analysis(())
            object.__setattr__(answer, "usage", usage)
            return answer

    summary = await Engine(storage, Nonsense(), prices=PRICES, max_cost=10.0).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert math.isfinite(summary.run.cost_usd)
    assert summary.run.cost_usd >= 0
    assert summary.run.cost_usd <= 2 * cost_of(Usage(10**9, 10**9), PRICE)


async def test_cancelled_upload_records_what_its_requests_cost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    documents = docs(1)
    run = await storage.create_run(documents)
    spent = Usage(1000, 10)
    provider = Priced(
        ScriptedProvider(
            {
                documents[0].name: [
                    Step(1.0, error=TransientError("reset", usage=spent)),
                    Step(100.0),
                ]
            }
        )
    )
    engine = Engine(storage, provider, prices=PRICES, retry=RetryPolicy(base_delay=0.5))
    with trio.move_on_after(10):
        await engine.execute(run.id)
    (upload,) = await storage.list_uploads(run.id)
    assert upload.status == UploadStatus.PENDING
    assert upload.cost_usd == pytest.approx(cost_of(spent, PRICE))
    assert (await storage.get_run(run.id)).usage.input_tokens == 1000


@pytest.mark.parametrize("method", ["complete_and_claim", "fail_upload"])
async def test_a_settlement_whose_answer_was_lost_records_the_cost_once(
    autojump_clock: trio.testing.MockClock, method: str
) -> None:
    inner = MemoryStorage(clock=trio.current_time)
    run = await inner.create_run(docs(3))
    used = Usage(1000, 100)
    error = PermanentError("no", usage=used) if method == "fail_upload" else None
    provider = Priced(ScriptedProvider(default=Step(1.0, usage=used, error=error)))
    storage = LosesAnswers(inner, method)
    engine = Engine(storage, provider, concurrency=1, prices=PRICES, lease_seconds=600)
    summary = await engine.execute(run.id)
    assert summary.run.status.finished
    assert summary.run.cost_usd == pytest.approx(3 * cost_of(used, PRICE))
    assert summary.run.usage.input_tokens == 3000
    await check_invariants(inner, run.id)


async def test_an_absurd_price_still_stores_the_answers_at_the_most_one_request_costs(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A prices file in USD per token instead of per million, or a hostile one: every
    # answer costs more than a settlement may record. The answers are stored all the
    # same, each at the most one request is taken to cost.
    absurd = PriceTable({"m": Price(1e12, 1e12, 1e12, 1e12)})
    storage = MemoryStorage()
    run = await storage.create_run(docs(2))
    provider = Priced(ScriptedProvider(default=Step(1.0, usage=Usage(1600, 100))))
    summary = await Engine(storage, provider, prices=absurd).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.run.cost_usd == 2 * MAX_COST_USD
    assert cost_of(Usage(1600, 100), absurd.prices["m"]) == MAX_COST_USD
    await check_invariants(storage, run.id)
