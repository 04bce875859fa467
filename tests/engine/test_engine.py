"""The engine in virtual time: exact schedules, retries, failures, cancellation, resume."""

from __future__ import annotations

import itertools
import math
import random
import sys
from collections.abc import Sequence
from typing import Any

import pytest
import trio
import trio.testing

from cardmill import (
    CardDraft,
    Document,
    DocumentError,
    LimitKind,
    MemoryStorage,
    Overloaded,
    PermanentError,
    RateHint,
    RateLimited,
    RunStatus,
    Storage,
    StorageError,
    TransientError,
    UploadStatus,
    Usage,
)
from cardmill.engine import (
    Engine,
    Event,
    Limits,
    RateChanged,
    RequestFinished,
    RetryPolicy,
    UploadCompleted,
    UploadFailed,
    UploadRetrying,
    UploadStarted,
)
from cardmill.engine._executor import default_worker_id
from cardmill.testing import ScriptedProvider, Step, check_invariants

from .conftest import docs


async def test_four_uploads_one_second_each_concurrency_two_take_two_seconds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Exact times need MemoryStorage: a MockClock jumps ahead while SQLite's thread works.
    storage = MemoryStorage()
    run = await storage.create_run(docs(4))
    provider = ScriptedProvider(default=Step(latency=1.0, cards=2))
    t0 = trio.current_time()
    summary = await Engine(storage, provider, concurrency=2).execute(run.id)
    assert trio.current_time() - t0 == 2.0
    assert summary.elapsed == 2.0
    assert summary.run.status == RunStatus.SUCCEEDED
    assert (summary.run.completed_items, summary.run.total_cards) == (4, 8)
    assert summary.requests == 4
    assert summary.peak_in_flight == provider.peak_in_flight == 2
    await check_invariants(storage, run.id)


async def test_sequential_is_the_sum_of_latencies(autojump_clock: trio.testing.MockClock) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(5))
    summary = await Engine(storage, ScriptedProvider(default=Step(0.5)), concurrency=1).execute(
        run.id
    )
    assert summary.elapsed == 2.5


@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_never_more_than_concurrency_in_flight(
    concurrency: int, autojump_clock: trio.testing.MockClock
) -> None:
    rng = random.Random(concurrency)
    storage = MemoryStorage()
    run = await storage.create_run(docs(40))
    script = {f"doc{i:04d}.txt": [Step(rng.uniform(0.1, 3.0))] for i in range(40)}
    provider = ScriptedProvider(script)
    seen: list[int] = []
    engine = Engine(storage, provider, concurrency=concurrency)

    def observe(event: Event) -> None:
        seen.append(engine.in_flight)

    engine = Engine(storage, provider, concurrency=concurrency, observer=observe)
    summary = await engine.execute(run.id)
    assert provider.peak_in_flight == concurrency
    assert summary.peak_in_flight == concurrency
    assert max(seen) <= concurrency
    assert summary.run.status == RunStatus.SUCCEEDED


async def test_concurrency_can_change_while_running(autojump_clock: trio.testing.MockClock) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(20))
    provider = ScriptedProvider(default=Step(1.0))
    engine = Engine(storage, provider, concurrency=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(engine.execute, run.id)
        await trio.sleep(3.5)
        assert provider.peak_in_flight == 1
        engine.concurrency = 4
    # 4 done one at a time (the 4th started at 3), then 16 four at a time.
    assert trio.current_time() == 4.0 + 4.0
    assert provider.peak_in_flight == 4
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        engine.concurrency = 0
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        Engine(storage, provider, concurrency=0)


async def test_the_bucket_never_admits_faster_than_its_rate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(12))
    provider = ScriptedProvider(default=Step(0.1))
    engine = Engine(storage, provider, concurrency=8, limits=Limits(requests_per_minute=120))
    await engine.execute(run.id)
    times = [t for _, t in provider.calls]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.5 - 1e-9
    assert times[-1] - times[0] == pytest.approx(0.5 * 11)


async def test_permanent_error_fails_that_upload_only(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    run = await storage.create_run(docs(3))
    provider = ScriptedProvider(
        {"doc0001.txt": [Step(0.2, error=PermanentError("document is encrypted"))]},
        default=Step(1.0, cards=1),
    )
    events: list[Event] = []
    summary = await Engine(storage, provider, observer=events.append).execute(run.id)
    assert summary.run.status == RunStatus.PARTIAL
    assert provider.calls_for("doc0001.txt") == 1
    (failed,) = await storage.list_uploads(run.id, UploadStatus.FAILED)
    assert failed.error == "document is encrypted"
    assert [e.reason for e in events if isinstance(e, UploadFailed)] == ["document is encrypted"]
    assert sum(isinstance(e, UploadCompleted) for e in events) == 2
    await check_invariants(storage, run.id)


async def test_transient_errors_retry_with_full_jitter_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(1))
    provider = ScriptedProvider(
        {
            "doc0000.txt": [
                Step(0.0, error=TransientError("connection reset")),
                Step(0.0, error=Overloaded()),
                Step(1.0, cards=4),
            ]
        }
    )
    events: list[Event] = []
    policy = RetryPolicy(base_delay=2.0)
    summary = await Engine(
        storage, provider, retry=policy, observer=events.append, rng=random.Random(1)
    ).execute(run.id)
    retries = [e for e in events if isinstance(e, UploadRetrying)]
    assert [r.error for r in retries] == ["connection reset", "overloaded (529)"]
    assert 0 <= retries[0].delay <= 2.0
    assert 0 <= retries[1].delay <= 4.0
    assert summary.retries == 2
    assert summary.overloaded == 1
    assert summary.run.total_cards == 4
    (done,) = await storage.list_uploads(run.id)
    assert done.attempts == 1  # one claim; the retries happened within it
    completed = [e for e in events if isinstance(e, UploadCompleted)]
    assert completed[0].attempts == 3


async def test_retries_are_bounded(autojump_clock: trio.testing.MockClock) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(1))
    provider = ScriptedProvider(default=Step(0.1, error=TransientError("500 internal error")))
    summary = await Engine(storage, provider, retry=RetryPolicy(max_attempts=3)).execute(run.id)
    assert provider.calls_for("doc0000.txt") == 3
    (failed,) = await storage.list_uploads(run.id)
    assert failed.error == "gave up after 3 attempts: 500 internal error"
    assert summary.run.status == RunStatus.FAILED


async def test_timeout_counts_as_transient(autojump_clock: trio.testing.MockClock) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(1))
    provider = ScriptedProvider({"doc0000.txt": [Step(100.0)]}, default=Step(1.0))
    policy = RetryPolicy(base_delay=0.0)
    summary = await Engine(storage, provider, retry=policy, request_timeout=10.0).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.retries == 1
    assert trio.current_time() == 11.0


@pytest.mark.parametrize("retry_after", [2.345, 90.0])
async def test_retry_after_is_honoured_in_full(
    retry_after: float, autojump_clock: trio.testing.MockClock
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(1))
    limited = RateLimited(retry_after=retry_after, limit=LimitKind.REQUESTS)
    provider = ScriptedProvider({"doc0000.txt": [Step(0.05, error=limited), Step(1.0)]})
    summary = await Engine(storage, provider).execute(run.id)
    (_, first), (_, second) = provider.calls
    waited = second - (first + 0.05)
    # Never early; jitter adds at most a tenth (capped at 1 s) on top.
    assert retry_after <= waited <= retry_after + min(1.0, retry_after * 0.1)
    assert summary.rate_limited == 1
    assert summary.run.status == RunStatus.SUCCEEDED


async def test_a_burst_of_429s_from_one_epoch_cuts_once_and_no_herd_after_the_pause(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(4))
    limited = RateLimited(retry_after=10.0, limit=LimitKind.REQUESTS)
    script = {f"doc{i:04d}.txt": [Step(0.5 + 0.01 * i, error=limited)] for i in range(4)}
    provider = ScriptedProvider(script, default=Step(1.0))
    engine = Engine(storage, provider, concurrency=4, rng=random.Random(3))
    summary = await engine.execute(run.id)
    stats = engine.bucket.statistics()
    assert stats.rate_limited == 4
    assert stats.cuts == 1  # all four were sent before the first 429 came back
    retries = sorted(t for _, t in provider.calls[4:])
    assert retries[0] >= 0.5 + 10.0
    gaps = [b - a for a, b in itertools.pairwise(retries)]
    assert min(gaps) > 0.1  # paced out, not released as a herd
    assert summary.run.status == RunStatus.SUCCEEDED


async def test_spend_limit_fails_fast(autojump_clock: trio.testing.MockClock) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(2))
    spend = PermanentError("spend limit reached for this organisation")
    provider = ScriptedProvider(default=Step(0.1, error=spend))
    summary = await Engine(storage, provider).execute(run.id)
    assert summary.requests == 2
    assert summary.run.status == RunStatus.FAILED


async def test_unexpected_provider_exception_fails_the_upload_not_the_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Buggy:
        name = "buggy"

        async def analyze(self, document: Any) -> Any:
            await trio.sleep(0.1)
            if document.name == "doc0000.txt":
                raise KeyError("oops")
            return await ScriptedProvider().analyze(document)

    storage = MemoryStorage()
    run = await storage.create_run(docs(2))
    summary = await Engine(storage, Buggy()).execute(run.id)
    assert summary.run.status == RunStatus.PARTIAL
    (failed,) = await storage.list_uploads(run.id, UploadStatus.FAILED)
    assert failed.error == "provider error: KeyError: 'oops'"


async def test_cancel_then_resume_finishes_without_duplicates(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    run = await storage.create_run(docs(10))
    provider = ScriptedProvider(default=Step(1.0, cards=3))
    engine = Engine(storage, provider, concurrency=3)
    with trio.move_on_after(2.5):
        await engine.execute(run.id)
    cancelled = await storage.get_run(run.id)
    assert cancelled.status == RunStatus.CANCELLED
    if isinstance(storage, MemoryStorage):
        assert cancelled.completed_items == 6
    assert not await storage.list_uploads(run.id, UploadStatus.LOADING)
    await check_invariants(storage, run.id)
    summary = await Engine(storage, provider, concurrency=3).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.completed == 10 - cancelled.completed_items
    cards = await storage.list_cards(run.id)
    assert len(cards) == 30
    assert len({(c.upload_id, c.ordinal) for c in cards}) == 30
    await check_invariants(storage, run.id)


async def test_keyboard_interrupt_releases_and_cancels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(4))

    class Interrupting:
        name = "interrupting"

        async def analyze(self, document: Any) -> Any:
            await trio.sleep(1.0)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await Engine(storage, Interrupting()).execute(run.id)
    run = await storage.get_run(run.id)
    assert run.status == RunStatus.CANCELLED
    assert {u.status for u in await storage.list_uploads(run.id)} == {UploadStatus.PENDING}


class FailingStorage:
    """Delegates to MemoryStorage, but completing breaks after ``ok`` successes."""

    def __init__(self, inner: MemoryStorage, ok: int) -> None:
        self._inner = inner
        self._ok = ok

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def complete_upload(
        self,
        upload_id: str,
        drafts: Sequence[CardDraft],
        *,
        worker: str | None = None,
        attempt: int | None = None,
    ) -> bool:
        if self._ok <= 0:
            await trio.lowlevel.checkpoint()
            raise StorageError("disk I/O error")
        self._ok -= 1
        return await self._inner.complete_upload(upload_id, drafts, worker=worker, attempt=attempt)

    async def complete_and_claim(
        self, upload_id: str, drafts: Sequence[CardDraft], **kwargs: Any
    ) -> tuple[bool, Any]:
        if self._ok <= 0:
            await trio.lowlevel.checkpoint()
            raise StorageError("disk I/O error")
        self._ok -= 1
        return await self._inner.complete_and_claim(upload_id, drafts, **kwargs)


async def test_storage_failure_stops_the_run_and_releases_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    inner = MemoryStorage()
    run = await inner.create_run(docs(6))
    storage: Any = FailingStorage(inner, ok=2)
    with pytest.raises(StorageError, match="disk I/O error"):
        await Engine(storage, ScriptedProvider(default=Step(1.0)), concurrency=2).execute(run.id)
    uploads = await inner.list_uploads(run.id)
    assert [u.status for u in uploads].count(UploadStatus.COMPLETED) == 2
    assert UploadStatus.LOADING not in {u.status for u in uploads}
    assert (await inner.get_run(run.id)).status == RunStatus.CANCELLED
    await check_invariants(inner, run.id)


async def test_uploads_of_a_dead_local_process_are_reclaimed(
    storage: Storage, autojump_clock: trio.testing.MockClock
) -> None:
    child = await trio.run_process(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_stdout=True
    )
    host, _, token = default_worker_id().split(":")
    dead = f"{host}:{child.stdout.decode().strip()}:{token}"
    run = await storage.create_run(docs(3))
    held = await storage.claim_upload(run.id, worker=dead, lease_seconds=3600)
    assert held is not None
    summary = await Engine(storage, ScriptedProvider(default=Step(1.0))).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    (again,) = [u for u in await storage.list_uploads(run.id) if u.id == held.id]
    assert again.attempts == 2
    await check_invariants(storage, run.id)


async def test_live_foreign_lease_is_waited_for_or_reclaimed_on_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(2))
    held = await storage.claim_upload(run.id, worker="elsewhere", lease_seconds=3600)
    assert held is not None
    engine = Engine(storage, ScriptedProvider(default=Step(1.0)))
    with trio.move_on_after(30):
        await engine.execute(run.id)
    # It finished its own upload and kept waiting for the one held elsewhere.
    assert (await storage.get_run(run.id)).completed_items == 1
    summary = await engine.execute(run.id, reclaim=True)
    assert summary.run.status == RunStatus.SUCCEEDED


async def test_events_tell_the_story(autojump_clock: trio.testing.MockClock) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(2))
    events: list[Event] = []
    await Engine(storage, ScriptedProvider(default=Step(1.0)), observer=events.append).execute(
        run.id
    )
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("UploadStarted") == 2
    assert kinds.count("UploadCompleted") == 2
    assert kinds[-1] == "RunFinished"
    assert all(isinstance(e, UploadStarted) for e in events[:2])


async def test_every_request_ends_in_one_event_with_its_time_error_and_usage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(2))
    refused = Usage(input_tokens=7)
    provider = ScriptedProvider(
        {
            "doc0000.txt": [
                Step(2.0, error=Overloaded("busy")),
                Step(0.5, error=RateLimited("slow down", limit=LimitKind.REQUESTS)),
                Step(3.0, usage=Usage(input_tokens=11, output_tokens=5)),
            ],
            "doc0001.txt": [Step(1.5, error=PermanentError("no", usage=refused))],
        },
    )
    events: list[Event] = []
    policy = RetryPolicy(base_delay=0.1, max_delay=0.1)
    summary = await Engine(
        storage, provider, retry=policy, observer=events.append, rng=random.Random(3)
    ).execute(run.id)
    ended = [e for e in events if isinstance(e, RequestFinished)]
    assert len(ended) == summary.requests == 4
    mine = [
        (round(e.duration, 9), e.error, e.usage) for e in ended if e.upload.name == "doc0000.txt"
    ]
    assert mine == [
        (2.0, "Overloaded", None),
        (0.5, "RateLimited", None),
        (3.0, None, Usage(input_tokens=11, output_tokens=5)),
    ]
    assert [
        (round(e.duration, 9), e.error, e.usage) for e in ended if e.upload.name == "doc0001.txt"
    ] == [(1.5, "PermanentError", refused)]
    # Each one comes before the upload's retry or end.
    for e in ended:
        after = events[events.index(e) + 1 :]
        assert not any(isinstance(x, UploadStarted) and x.upload.id == e.upload.id for x in after)


async def test_a_document_refused_before_sending_makes_no_request_event(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(1))
    provider = ScriptedProvider({"doc0000.txt": [Step(error=DocumentError("encrypted"))]})
    events: list[Event] = []
    await Engine(storage, provider, observer=events.append).execute(run.id)
    assert not any(isinstance(e, RequestFinished) for e in events)
    assert any(isinstance(e, UploadFailed) for e in events)


async def test_rate_changes_carry_the_learnt_limits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(6))
    hint = RateHint(requests_limit=120, requests_remaining=100, requests_reset=1.0)
    provider = ScriptedProvider(default=Step(1.0, hint=hint))
    events: list[Event] = []
    engine = Engine(storage, provider, observer=events.append)
    await engine.execute(run.id)
    changes = [e for e in events if isinstance(e, RateChanged)]
    assert changes
    stats = engine.bucket.statistics()
    last = changes[-1]
    assert last.estimated_requests_per_second == stats.estimated_requests_per_second
    assert last.estimated_input_tokens_per_second == stats.estimated_input_tokens_per_second
    assert any(e.estimated_requests_per_second is not None for e in changes)


async def test_unknown_run_raises(autojump_clock: trio.testing.MockClock) -> None:
    from cardmill import RunNotFound

    with pytest.raises(RunNotFound):
        await Engine(MemoryStorage(), ScriptedProvider()).execute("run-missing")


async def test_a_provider_answering_badly_fails_that_upload(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Sloppy:
        name = "sloppy"

        async def analyze(self, document: Any) -> Any:
            await trio.sleep(0.1)
            from cardmill import Analysis

            if document.name == "doc0000.txt":
                return Analysis(({"title": "not a draft"},), usage=None)  # type: ignore[arg-type]
            return Analysis([CardDraft("fine", "body")])  # type: ignore[arg-type]

    storage = MemoryStorage()
    run = await storage.create_run(docs(2))
    summary = await Engine(storage, Sloppy()).execute(run.id)
    assert summary.run.status == RunStatus.PARTIAL
    first, second = await storage.list_uploads(run.id)
    assert first.error == "provider answered badly: cards[0] is a dict, not a CardDraft"
    assert second.card_count == 1
    await check_invariants(storage, run.id)


async def test_a_refused_request_gives_back_its_input_token_charge(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A 3 MB PDF is charged about a million input tokens up front: 150 s of a 400k/min
    # limit. The provider refuses it (413): that charge must not hold back the next upload.
    storage = MemoryStorage()
    big = Document("big.pdf", b"%PDF-1.7\n" + b"x" * 3_000_000)
    run = await storage.create_run([big, Document("small.md", b"# S\n\nsmall")])
    provider = ScriptedProvider(
        {"big.pdf": [Step(0.5, error=PermanentError("413 request_too_large"))]},
        default=Step(0.5, cards=1),
    )
    engine = Engine(
        storage, provider, concurrency=1, limits=Limits(input_tokens_per_minute=400_000)
    )
    summary = await engine.execute(run.id)
    assert summary.run.status == RunStatus.PARTIAL
    assert [name for name, _ in provider.calls] == ["big.pdf", "small.md"]
    assert provider.calls[1][1] <= 1.0


async def test_a_document_refused_before_sending_costs_no_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(3))
    provider = ScriptedProvider(
        {"doc0001.txt": [Step(0.0, error=DocumentError("doc0001.txt: unsupported media type"))]},
        default=Step(1.0, cards=1),
    )
    engine = Engine(storage, provider, concurrency=1, limits=Limits(requests_per_minute=60))
    summary = await engine.execute(run.id)
    assert summary.requests == 2
    assert summary.failed == 1
    failed = await storage.list_uploads(run.id, UploadStatus.FAILED)
    assert [u.error for u in failed] == ["doc0001.txt: unsupported media type"]
    # The refused document gave its slot back: the third request went one interval after
    # the first, not two.
    assert [t for _, t in provider.calls] == [0.0, 1.0, 1.0]


async def test_an_observer_that_raises_stops_the_run_and_strands_nothing(
    autojump_clock: trio.testing.MockClock, storage: Storage
) -> None:
    # Completing an upload claims the worker's next one in the same transaction: when the
    # observer raises on the completion, that next upload is given back, not left LOADING
    # until its lease runs out.
    run = await storage.create_run(docs(5))
    seen = 0

    def observe(event: Event) -> None:
        nonlocal seen
        if isinstance(event, UploadCompleted):
            seen += 1
            if seen == 2:
                raise RuntimeError("observer broke")

    engine = Engine(storage, ScriptedProvider(default=Step(1.0)), concurrency=1, observer=observe)
    with pytest.raises(RuntimeError, match="observer broke"):
        await engine.execute(run.id)
    uploads = await storage.list_uploads(run.id)
    assert [u.status for u in uploads].count(UploadStatus.COMPLETED) == 2
    assert UploadStatus.LOADING not in {u.status for u in uploads}
    await check_invariants(storage, run.id)
    summary = await Engine(storage, ScriptedProvider(default=Step(1.0))).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED


@pytest.mark.parametrize("option", ["poll_interval", "lease_seconds", "request_timeout"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, 0.0])
async def test_engine_numbers_must_be_finite_and_positive(
    storage: Storage, option: str, bad: float
) -> None:
    with pytest.raises(ValueError, match=f"{option} must be a finite number"):
        Engine(storage, ScriptedProvider(), **{option: bad})  # type: ignore[arg-type]


async def test_an_observer_raising_at_the_end_does_not_hide_ctrl_c(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    storage = MemoryStorage()
    run = await storage.create_run(docs(3))

    class Interrupting:
        name = "interrupting"

        async def analyze(self, document: Any) -> Any:
            await trio.sleep(1.0)
            raise KeyboardInterrupt

    def observe(event: Event) -> None:
        if type(event).__name__ == "RunFinished":
            raise RuntimeError("observer broke at the end")

    with pytest.raises(KeyboardInterrupt):
        await Engine(storage, Interrupting(), observer=observe).execute(run.id)
    assert "observer raised" in caplog.text
    assert (await storage.get_run(run.id)).status == RunStatus.CANCELLED
