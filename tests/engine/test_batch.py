"""The batch executor against an in-process batch API, in virtual time."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import attrs
import pytest
import trio
import trio.testing

from cardmill import Document, MemoryStorage, RunStatus, UploadStatus
from cardmill._cost import DEFAULT_PRICES, MAX_COST_USD, Price, PriceTable, cost_of
from cardmill.engine import (
    BatchEnded,
    BatchExecutor,
    BatchProgress,
    BatchSubmitted,
    Engine,
    Event,
    RetryPolicy,
    UploadFailed,
    estimate_cost,
)
from cardmill.errors import InputError, PermanentError, RateLimited, TransientError
from cardmill.model import BatchCounts, BatchState
from cardmill.providers import BatchResult, BatchStatus, ExtractiveProvider
from cardmill.testing import ScriptedProvider, check_invariants

from .batch_fakes import INVALID, NEVER, OK, PERMANENT, TRANSIENT, FakeBatchAPI

PRICE = DEFAULT_PRICES.prices["claude-haiku-4-5"]


def docs(n: int, size: int = 400) -> list[Document]:
    return [Document(f"doc{i:04d}.txt", b"x" * size) for i in range(n)]


def memory() -> MemoryStorage:
    return MemoryStorage(clock=trio.current_time)


def executor(storage: MemoryStorage, api: FakeBatchAPI, **kw: object) -> BatchExecutor:
    kw.setdefault("poll_interval", 5.0)
    kw.setdefault("max_poll_interval", 60.0)
    return BatchExecutor(storage, api, **kw)  # type: ignore[arg-type]


async def test_a_run_completes_in_one_batch_at_the_batch_price(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI()
    run = await storage.create_run(docs(5))
    events: list[Event] = []
    summary = await executor(storage, api, observer=events.append).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.completed == 5
    assert summary.requests == 5
    assert summary.stopped is None
    await check_invariants(storage, run.id)
    assert len(api.submissions) == 1
    assert sorted(api.custom_ids_sent()) == sorted(u.id for u in await storage.list_uploads(run.id))
    stored = await storage.get_run(run.id)
    usage = api.billed(docs(1)[0])  # every document alike
    assert stored.usage.output_tokens == 5 * usage.output_tokens
    assert math.isclose(stored.cost_usd, 5 * cost_of(usage, PRICE, batch=True))
    assert math.isclose(stored.cost_usd, 5 * cost_of(usage, PRICE) / 2)
    [batch] = await storage.list_batches(run.id)
    assert batch.state == BatchState.DONE
    assert batch.counts.succeeded == 5
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "BatchSubmitted"
    assert "BatchProgress" in kinds
    assert kinds.index("BatchEnded") > kinds.index("BatchProgress")
    assert kinds[-1] == "RunFinished"


async def test_polls_back_off_while_nothing_moves_and_reset_when_counts_move(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Three requests, 100 s apart: polls at 5, 10 (5 doubled), 20, 40, 60, 60 ...
    storage, api = memory(), FakeBatchAPI(seconds_per_request=100.0)
    run = await storage.create_run(docs(3))
    t0 = trio.current_time()
    progress: list[BatchProgress] = []
    ex = executor(storage, api, observer=lambda e: _keep(progress, e, BatchProgress))
    await ex.execute(run.id)
    polls = [t - t0 for t in api.polled]
    # the first request ends at 100 s: 0, 5, 15, 35, 75, then 135 sees it (+60)
    assert polls[:6] == [0, 5, 15, 35, 75, 135]
    # counts moved: the next look comes 5 s later, then the wait doubles again
    assert polls[6:8] == [140, 150]
    assert [p.counts.succeeded for p in progress] == [0, 1, 2, 3]
    assert [p.counts.processing for p in progress] == [3, 2, 1, 0]


def _keep(into: list, event: Event, kind: type) -> None:  # type: ignore[type-arg]
    if isinstance(event, kind):
        into.append(event)


@pytest.mark.parametrize(("most", "expected"), [(2, [2, 2, 1]), (3, [3, 2]), (5, [5])])
async def test_batches_are_split_by_request_count(
    autojump_clock: trio.testing.MockClock, most: int, expected: list[int]
) -> None:
    storage, api = memory(), FakeBatchAPI(batch_max_requests=most)
    run = await storage.create_run(docs(5))
    await executor(storage, api).execute(run.id)
    assert [len(ids) for _, ids in api.submissions] == expected
    assert Counter(api.custom_ids_sent()) == Counter(
        u.id for u in await storage.list_uploads(run.id)
    )
    await check_invariants(storage, run.id)
    assert (await storage.get_run(run.id)).status == RunStatus.SUCCEEDED


async def test_batches_are_split_by_bytes_in_document_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # each request is ~1.1 kB of JSON: 2500 bytes hold two of them, never three
    storage, api = memory(), FakeBatchAPI(batch_max_bytes=2500)
    run = await storage.create_run(docs(5, size=1000))
    await executor(storage, api).execute(run.id)
    assert [len(ids) for _, ids in api.submissions] == [2, 2, 1]
    uploads = await storage.list_uploads(run.id)
    assert api.custom_ids_sent() == [u.id for u in uploads]
    assert (await storage.get_run(run.id)).status == RunStatus.SUCCEEDED


async def test_a_document_too_large_for_any_batch_fails_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI(batch_max_bytes=2500)
    run = await storage.create_run([*docs(2), Document("huge.txt", b"y" * 5000)])
    await executor(storage, api).execute(run.id)
    by_name = {u.name: u for u in await storage.list_uploads(run.id)}
    assert by_name["huge.txt"].status == UploadStatus.FAILED
    assert "too large for a batch" in (by_name["huge.txt"].error or "")
    assert by_name["huge.txt"].id not in api.custom_ids_sent()
    assert (await storage.get_run(run.id)).status == RunStatus.PARTIAL


async def test_a_document_the_provider_refuses_fails_at_once_and_nothing_is_sent_for_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI(refuse=frozenset({"doc0001.txt"}))
    run = await storage.create_run(docs(3))
    failed: list[UploadFailed] = []
    ex = executor(storage, api, observer=lambda e: _keep(failed, e, UploadFailed))
    summary = await ex.execute(run.id)
    by_name = {u.name: u for u in await storage.list_uploads(run.id)}
    assert by_name["doc0001.txt"].status == UploadStatus.FAILED
    assert by_name["doc0001.txt"].error == "doc0001.txt: cannot be sent"
    assert [f.upload.name for f in failed] == ["doc0001.txt"]
    assert api.custom_ids_sent() == [by_name["doc0000.txt"].id, by_name["doc0002.txt"].id]
    assert summary.run.status == RunStatus.PARTIAL
    await check_invariants(storage, run.id)


async def test_errored_requests_go_in_a_new_batch_until_the_policy_gives_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    script = {
        "doc0000.txt": [TRANSIENT, OK],
        "doc0001.txt": [INVALID, INVALID, INVALID],
        "doc0002.txt": [PERMANENT],
        "doc0003.txt": [TRANSIENT, TRANSIENT, TRANSIENT],
        "doc0004.txt": [OK],
    }
    api = FakeBatchAPI(outcome=lambda name, n: script[name][n - 1])
    storage = memory()
    run = await storage.create_run(docs(5))
    retry = RetryPolicy(max_attempts=3, output_retries=2)
    summary = await executor(storage, api, retry=retry).execute(run.id)
    by_name = {u.name: u for u in await storage.list_uploads(run.id)}
    assert {n: u.status for n, u in by_name.items()} == {
        "doc0000.txt": UploadStatus.COMPLETED,
        "doc0001.txt": UploadStatus.FAILED,
        "doc0002.txt": UploadStatus.FAILED,
        "doc0003.txt": UploadStatus.FAILED,
        "doc0004.txt": UploadStatus.COMPLETED,
    }
    assert api.sent == {n: len(s) for n, s in script.items()}
    # Every answered request is recorded, errored ones too.
    assert {n: (u.requests, u.rate_limited) for n, u in by_name.items()} == {
        n: (len(s), 0) for n, s in script.items()
    }
    assert summary.run.requests == sum(api.sent.values())
    assert by_name["doc0002.txt"].error == "invalid_request_error: bad image"
    assert by_name["doc0001.txt"].error == "model output invalid after 3 tries: output cut off"
    assert by_name["doc0003.txt"].error == "gave up after 3 attempts: api_error: boom"
    assert [len(ids) for _, ids in api.submissions] == [5, 3, 2]
    # the invalid answers' usage counts: 3 answers of doc0001 + 2 completions
    usage = api.billed(docs(1)[0])
    assert summary.run.usage.output_tokens == 5 * usage.output_tokens
    assert math.isclose(summary.run.cost_usd, 5 * cost_of(usage, PRICE, batch=True))
    assert summary.run.status == RunStatus.PARTIAL
    await check_invariants(storage, run.id)


async def test_expired_requests_are_sent_again(autojump_clock: trio.testing.MockClock) -> None:
    api = FakeBatchAPI(outcome=lambda name, n: NEVER if name == "doc0001.txt" and n == 1 else OK)
    storage = memory()
    run = await storage.create_run(docs(3))
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    first = await storage.list_batches(run.id)
    assert first[0].counts.expired == 1
    assert first[0].counts.succeeded == 2
    assert [len(ids) for _, ids in api.submissions] == [3, 1]
    assert trio.current_time() >= api.expires_after
    # An expired request was never processed: only the answered ones count.
    assert [u.requests for u in await storage.list_uploads(run.id)] == [1, 1, 1]
    assert summary.run.requests == 3


async def test_never_processed_requests_fail_once_the_attempts_are_spent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = FakeBatchAPI(outcome=lambda name, n: NEVER)
    storage = memory()
    run = await storage.create_run(docs(2))
    summary = await executor(storage, api, retry=RetryPolicy(max_attempts=2)).execute(run.id)
    assert summary.run.status == RunStatus.FAILED
    for u in await storage.list_uploads(run.id):
        assert (
            u.error
            == "gave up after 2 attempts: the batch expired before this request was processed"
        )
        assert u.requests == 0
    assert len(api.submissions) == 2
    assert summary.run.requests == 0


async def test_an_interrupted_execution_leaves_the_batch_live_and_the_next_one_collects_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI(seconds_per_request=1000.0)
    run = await storage.create_run(docs(3))
    with trio.move_on_after(1500):
        await executor(storage, api).execute(run.id)
    [batch] = await storage.list_batches(run.id)
    assert batch.state == BatchState.LIVE
    uploads = await storage.list_uploads(run.id)
    assert all(u.worker == batch.holder for u in uploads if u.status == UploadStatus.LOADING)
    assert (await storage.get_run(run.id)).status == RunStatus.RUNNING
    # a sync engine on the same run leaves the batch's uploads alone
    sync = Engine(storage, ScriptedProvider(), poll_interval=1.0)
    with trio.move_on_after(10):
        await sync.execute(run.id, reclaim=True)
    assert [u.worker for u in await storage.list_uploads(run.id, UploadStatus.LOADING)] == [
        batch.holder
    ] * 3
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert len(api.submissions) == 1
    await check_invariants(storage, run.id)


async def test_leases_of_a_long_batch_are_renewed_so_no_claim_takes_its_uploads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI(seconds_per_request=600.0)
    run = await storage.create_run(docs(2))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(executor(storage, api, lease_seconds=300.0).execute, run.id)
        await trio.sleep(500)
        # the lease (300 s) would have expired; renewed, it still holds them
        assert await storage.claim_upload(run.id, worker="other", lease_seconds=10) is None
    assert (await storage.get_run(run.id)).status == RunStatus.SUCCEEDED


async def test_the_sync_engine_neither_reclaims_nor_waits_for_batch_held_uploads(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = memory()
    run = await storage.create_run(docs(3))
    made = await storage.create_batch(
        run.id, [(await storage.list_uploads(run.id))[0].id], lease_seconds=3600
    )
    assert made is not None
    batch, _ = made
    t0 = trio.current_time()
    summary = await Engine(storage, ScriptedProvider(), poll_interval=1.0).execute(
        run.id, reclaim=True
    )
    assert trio.current_time() - t0 < 1  # it did not wait for the batch
    held = await storage.list_uploads(run.id, UploadStatus.LOADING)
    assert [u.worker for u in held] == [batch.holder]
    assert summary.completed == 2
    assert summary.run.status == RunStatus.RUNNING


async def test_cancel_collects_what_finished_and_releases_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI(seconds_per_request=100.0)
    run = await storage.create_run(docs(4))
    with trio.move_on_after(250):
        await executor(storage, api).execute(run.id)
    summary = await executor(storage, api).cancel(run.id)
    assert "cancel" in api.calls
    by_status = Counter(u.status for u in await storage.list_uploads(run.id))
    assert by_status == {UploadStatus.COMPLETED: 2, UploadStatus.PENDING: 2}
    requests = Counter((u.status, u.requests) for u in await storage.list_uploads(run.id))
    assert requests == {(UploadStatus.COMPLETED, 1): 2, (UploadStatus.PENDING, 0): 2}
    assert summary.run.status == RunStatus.CANCELLED
    assert summary.stopped is None
    [batch] = await storage.list_batches(run.id)
    assert batch.state == BatchState.DONE
    assert batch.counts.canceled == 2
    await check_invariants(storage, run.id)
    # resumable: the rest goes in a new batch
    again = await executor(storage, api).execute(run.id)
    assert again.run.status == RunStatus.SUCCEEDED
    assert [len(ids) for _, ids in api.submissions] == [4, 2]
    assert set(api.submissions[1][1]) == {
        u.id for u in await storage.list_uploads(run.id) if u.attempts == 2
    }


async def test_cancel_waits_a_bounded_time(autojump_clock: trio.testing.MockClock) -> None:
    storage, api = memory(), FakeBatchAPI(seconds_per_request=100.0, cancel_delay=10_000.0)
    run = await storage.create_run(docs(2))
    with trio.move_on_after(50):
        await executor(storage, api).execute(run.id)
    t0 = trio.current_time()
    summary = await executor(storage, api, cancel_timeout=120.0).cancel(run.id)
    assert trio.current_time() - t0 <= 120
    assert summary.stopped is not None
    assert "still ending" in summary.stopped
    [batch] = await storage.list_batches(run.id)
    assert batch.state == BatchState.CANCELING


async def test_a_batch_refused_by_the_provider_is_abandoned_and_stops_the_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = memory()
    api = FakeBatchAPI(create_errors=[PermanentError("authentication_error: invalid x-api-key")])
    run = await storage.create_run(docs(3))
    summary = await executor(storage, api).execute(run.id)
    assert summary.stopped == (
        "the provider did not take a batch: authentication_error: invalid x-api-key"
    )
    assert summary.run.status == RunStatus.CANCELLED
    assert {u.status for u in await storage.list_uploads(run.id)} == {UploadStatus.PENDING}
    [batch] = await storage.list_batches(run.id)
    assert batch.state == BatchState.ABANDONED
    assert api.submissions == []
    # the same run, resumed once the key is right, goes through
    assert (await executor(storage, api).execute(run.id)).run.status == RunStatus.SUCCEEDED


async def test_a_rate_limited_create_waits_out_its_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = memory()
    api = FakeBatchAPI(create_errors=[RateLimited("429", retry_after=120.0)])
    run = await storage.create_run(docs(2))
    t0 = trio.current_time()
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.rate_limited == 1
    assert api.batches["msgbatch_0001"].created - t0 >= 120
    assert len(api.submissions) == 1


async def test_a_create_whose_answer_was_lost_is_found_not_sent_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI(lose_answers=1)
    run = await storage.create_run(docs(3))
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert len(api.submissions) == 1
    [batch] = await storage.list_batches(run.id)
    assert batch.provider_batch_id == "msgbatch_0001"


async def test_a_transient_create_that_created_nothing_is_sent_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = memory()
    api = FakeBatchAPI(create_errors=[TransientError("502 bad gateway")])
    run = await storage.create_run(docs(3))
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert len(api.submissions) == 1
    assert api.calls.count("create") == 2
    assert "find" in api.calls


async def test_a_submitting_batch_is_adopted_when_the_provider_has_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI()
    run = await storage.create_run(docs(3))
    # a batch of another run, same size, created just before: never adopted
    other = await storage.create_run(docs(3))
    await executor(storage, api).execute(other.id)
    # our process recorded a batch, sent it, and died before recording the answer
    uploads = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [u.id for u in uploads], lease_seconds=3600)
    assert made is not None
    batch, items = made
    await api.create_batch(
        [
            await api.batch_request(await storage.load_document(i.upload_id), i.custom_id)
            for i in items
        ]
    )
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert (await storage.get_batch(batch.id)).provider_batch_id == "msgbatch_0002"
    assert len(api.submissions) == 2


async def test_a_submitting_batch_the_provider_never_got_is_abandoned_and_sent_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI()
    run = await storage.create_run(docs(3))
    uploads = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [u.id for u in uploads[:2]], lease_seconds=3600)
    assert made is not None
    # a batch of the same size that another program made long before is not ours
    await trio.sleep(3600)
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert (await storage.get_batch(made[0].id)).state == BatchState.ABANDONED
    assert len(api.submissions) == 1
    assert len(api.submissions[0][1]) == 3


#: A recipe's prompt and schema of some 48 KB: most of what each request is billed for.
BIG_PROMPT = "Write careful cards. " * 1800
BIG_SCHEMA = {"type": "object", "description": "y" * 10_000}


async def test_max_cost_counts_the_prompt_and_a_higher_cap_continues(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = memory()
    api = FakeBatchAPI(system=BIG_PROMPT, tool_schema=BIG_SCHEMA)
    run = await storage.create_run(docs(6))
    billed = cost_of(api.billed(docs(1)[0]), PRICE, batch=True)
    # without the prompt, each estimate is below what an answer costs
    assert estimate_cost(docs(1)[0], PRICE, max_tokens=api.max_tokens, batch=True) < billed
    cap = 3.5 * billed
    summary = await executor(storage, api, max_cost=cap).execute(run.id)
    assert summary.stopped is not None
    assert summary.stopped.startswith("cost cap of $")
    assert summary.run.status == RunStatus.CANCELLED
    assert summary.run.cost_usd <= cap
    done = summary.run.completed_items
    assert 1 <= done <= 3
    assert Counter(u.status for u in await storage.list_uploads(run.id)) == {
        UploadStatus.COMPLETED: done,
        UploadStatus.PENDING: 6 - done,
    }
    more = await executor(storage, api, max_cost=100.0).execute(run.id)
    assert more.run.status == RunStatus.SUCCEEDED
    assert more.stopped is None
    assert Counter(api.custom_ids_sent()).most_common(1)[0][1] == 1
    assert more.run.cost_usd == pytest.approx(6 * billed)


async def test_max_cost_learns_the_prompt_from_the_first_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A provider that does not say how long its prompt is: the first batch goes by the
    # rule of thumb, and no other is sent until its answers have shown the real length.
    storage = memory()
    api = FakeBatchAPI(
        system=BIG_PROMPT, tool_schema=BIG_SCHEMA, counts_prompt=False, batch_max_requests=2
    )
    run = await storage.create_run(docs(8))
    billed = cost_of(api.billed(docs(1)[0]), PRICE, batch=True)
    guess = estimate_cost(docs(1)[0], PRICE, max_tokens=api.max_tokens, batch=True)
    assert guess < billed / 1.5
    cap = 4.5 * billed
    summary = await executor(storage, api, max_cost=cap).execute(run.id)
    assert summary.stopped is not None
    assert summary.run.status == RunStatus.CANCELLED
    # passed by at most what the first batch's requests cost beyond their estimates
    assert summary.run.cost_usd <= cap + 2 * (billed - guess)
    assert summary.run.cost_usd <= cap
    assert 3 <= summary.run.completed_items <= 4
    first_ended = api.batches[api.submissions[0][0]].created + 2 * api.seconds_per_request
    assert all(b.created >= first_ended for b in list(api.batches.values())[1:])


async def test_max_cost_counts_what_open_batches_may_still_cost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage = memory()
    api = FakeBatchAPI(seconds_per_request=1000.0)
    run = await storage.create_run(docs(4))
    one = estimate_cost(docs(1)[0], PRICE, max_tokens=api.max_tokens, batch=True)
    with trio.move_on_after(10):
        await executor(storage, api, max_cost=2.5 * one).execute(run.id)
    assert [len(ids) for _, ids in api.submissions] == [2]
    # the run has spent nothing yet, but its open batch may cost 2 x one: nothing fits
    with trio.move_on_after(10):
        await executor(storage, api, max_cost=2.5 * one).execute(run.id)
    assert [len(ids) for _, ids in api.submissions] == [2]


def test_a_provider_without_batches_is_refused() -> None:
    with pytest.raises(InputError, match="cannot send batches"):
        BatchExecutor(MemoryStorage(), ExtractiveProvider())  # type: ignore[arg-type]


def test_a_cap_without_a_price_is_refused() -> None:
    api = FakeBatchAPI(model="my-own-model")
    with pytest.raises(InputError, match="no price for model 'my-own-model'"):
        BatchExecutor(MemoryStorage(), api, max_cost=1.0)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"max_cost": -1.0}, "max_cost"),
        ({"max_cost": math.inf}, "max_cost"),
        ({"poll_interval": 0.0}, "poll_interval"),
        ({"poll_interval": 10.0, "max_poll_interval": 5.0}, "max_poll_interval"),
        ({"lease_seconds": 0.5}, "lease_seconds"),
        ({"cancel_timeout": math.nan}, "cancel_timeout"),
    ],
)
def test_bad_settings_are_refused(kw: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchExecutor(MemoryStorage(), FakeBatchAPI(), **kw)  # type: ignore[arg-type]


async def test_results_settled_before_a_crash_change_nothing_when_collected_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI()
    run = await storage.create_run(docs(3))
    await executor(storage, api).execute(run.id)
    [batch] = await storage.list_batches(run.id)
    before = await storage.get_run(run.id)
    # reopen the batch as if the process died before recording DONE
    storage._batches[batch.id] = attrs.evolve(batch, state=BatchState.LIVE)
    ended: list[BatchEnded] = []
    ex = executor(storage, api, observer=lambda e: _keep(ended, e, BatchEnded))
    await ex.execute(run.id)
    after = await storage.get_run(run.id)
    assert after == attrs.evolve(before, finished_at=after.finished_at)
    assert [(e.completed, e.failed, e.released) for e in ended] == [(0, 0, 0)]
    assert len(await storage.list_cards(run.id)) == 3


async def test_submitted_events_name_the_provider_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI(batch_max_requests=2)
    run = await storage.create_run(docs(3))
    submitted: list[BatchSubmitted] = []
    ex = executor(
        storage,
        api,
        observer=lambda e: _keep(submitted, e, BatchSubmitted),
    )
    await ex.execute(run.id)
    assert [e.batch.provider_batch_id for e in submitted] == ["msgbatch_0001", "msgbatch_0002"]
    assert [e.batch.size for e in submitted] == [2, 1]


async def test_results_that_cannot_be_read_are_read_at_a_later_look(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI(results_errors=2)
    run = await storage.create_run(docs(2))
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    gaps = [b - a for a, b in itertools.pairwise(api.results_at)]
    assert len(api.results_at) == 3
    assert all(gap >= 5 for gap in gaps)  # waited for the next look, not at once


async def test_cancel_goes_on_when_the_provider_refuses_to_cancel_an_ended_batch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), FakeBatchAPI(seconds_per_request=100.0)
    run = await storage.create_run(docs(2))
    with trio.move_on_after(50):
        await executor(storage, api).execute(run.id)
    await trio.sleep(1000)  # it ended meanwhile; the provider will not cancel it now
    api.cancel_errors = [PermanentError("409: the batch has ended")]
    summary = await executor(storage, api).cancel(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.completed == 2


@attrs.define
class _DropsResults(FakeBatchAPI):
    """An API whose results file leaves out one document's result, every time, answers
    a request never sent, and answers each request twice (an error the second time)."""

    dropped: str = "doc0001.txt"

    async def batch_results(self, provider_batch_id: str):  # type: ignore[no-untyped-def]
        async for result in super().batch_results(provider_batch_id):
            if self.names[result.custom_id] != self.dropped:
                yield BatchResult("never-sent", "errored", error=PermanentError("not ours"))
                yield result
                yield BatchResult(result.custom_id, "errored", error=PermanentError("again"))


async def test_a_request_the_results_always_leave_out_fails_once_the_attempts_are_spent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = _DropsResults()
    storage = memory()
    run = await storage.create_run(docs(3))
    with trio.fail_after(3600):  # virtual time: a loop that never ends fails here
        summary = await executor(storage, api, retry=RetryPolicy(max_attempts=3)).execute(run.id)
    assert summary.run.status == RunStatus.PARTIAL
    assert [len(ids) for _, ids in api.submissions] == [3, 1, 1]
    (failed,) = await storage.list_uploads(run.id, UploadStatus.FAILED)
    assert failed.name == "doc0001.txt"
    assert failed.error is not None
    assert "no result" in failed.error
    # the stranger's answer and the second answers changed nothing
    for done in await storage.list_uploads(run.id, UploadStatus.COMPLETED):
        assert done.card_count == 1
        assert done.attempts == 1
    await check_invariants(storage, run.id)


@attrs.define
class _LaggingCounts(FakeBatchAPI):
    """An API whose request_counts stay all zero for ``lag`` seconds after a batch is
    created (batches created from ``lag_from`` on)."""

    lag: float = 60.0
    lag_from: float = -math.inf

    def _status(self, batch):  # type: ignore[no-untyped-def]
        status = super()._status(batch)
        if batch.created >= self.lag_from and self.clock() - batch.created < self.lag:
            return attrs.evolve(status, counts=BatchCounts())
        return status


async def test_a_lost_create_is_found_while_the_batch_counts_lag(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), _LaggingCounts(lose_answers=1)
    run = await storage.create_run(docs(3))
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert len(api.submissions) == 1  # not sent twice
    [batch] = await storage.list_batches(run.id)
    assert batch.provider_batch_id == "msgbatch_0001"


async def test_a_batch_of_the_right_size_is_preferred_to_one_whose_counts_lag(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, api = memory(), _LaggingCounts(lag=3600.0, lag_from=math.inf)
    run = await storage.create_run(docs(3))
    uploads = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [u.id for u in uploads], lease_seconds=3600)
    assert made is not None
    batch, items = made
    requests = [
        await api.batch_request(await storage.load_document(i.upload_id), i.custom_id)
        for i in items
    ]
    await api.create_batch(requests)  # ours, sent before the crash
    await trio.sleep(1)
    api.lag_from = trio.current_time()  # a batch created later, its counts zero: not ours
    await api.create_batch([await api.batch_request(Document("other.txt", b"y"), "other-0")])
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert (await storage.get_batch(batch.id)).provider_batch_id == "msgbatch_0001"


@attrs.define
class _ForgetsResults(FakeBatchAPI):
    """An API that archives each batch's results as soon as it ends, the first time a
    document is sent (a run resumed after the provider's retention period)."""

    archived: set[str] = attrs.field(factory=set)

    def _status(self, batch):  # type: ignore[no-untyped-def]
        status = super()._status(batch)
        first = all(self.sent[self.names[c]] == 1 for c in batch.custom_ids)
        if status.ended and first:
            self.archived.add(batch.id)
            return attrs.evolve(status, archived=True)
        return status

    async def batch_results(self, provider_batch_id: str):  # type: ignore[no-untyped-def]
        if provider_batch_id in self.archived:
            raise PermanentError(f"404 not_found_error: results of {provider_batch_id}")
        async for result in super().batch_results(provider_batch_id):
            yield result


async def test_a_batch_whose_results_are_gone_is_sent_again_not_a_run_stuck(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = _ForgetsResults()
    storage = memory()
    run = await storage.create_run(docs(3))
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert [len(ids) for _, ids in api.submissions] == [3, 3]
    first, second = await storage.list_batches(run.id)
    assert first.state == BatchState.DONE
    assert second.state == BatchState.DONE
    for upload in await storage.list_uploads(run.id):
        assert upload.attempts == 2
    await check_invariants(storage, run.id)


async def test_an_absurd_price_does_not_leave_a_batch_uncollectable(
    autojump_clock: trio.testing.MockClock,
) -> None:
    absurd = PriceTable({"claude-haiku-4-5": Price(1e12, 1e12, 1e12, 1e12)})
    storage, api = memory(), FakeBatchAPI()
    run = await storage.create_run(docs(2))
    summary = await executor(storage, api, prices=absurd).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert summary.run.cost_usd == 2 * MAX_COST_USD
    await check_invariants(storage, run.id)


@attrs.define
class _RefusesLooks(FakeBatchAPI):
    """An API that answers the first look at a batch with a 429 and a Retry-After."""

    retry_after: float = 300.0
    refused: int = 0

    async def retrieve_batch(self, provider_batch_id: str) -> BatchStatus:
        if not self.refused:
            self.refused += 1
            self.polled.append(self.clock())
            raise RateLimited("429 rate_limit_error", retry_after=self.retry_after)
        return await super().retrieve_batch(provider_batch_id)


async def test_a_rate_limited_look_waits_out_its_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    api = _RefusesLooks()
    storage = memory()
    run = await storage.create_run(docs(2))
    summary = await executor(storage, api).execute(run.id)
    assert summary.run.status == RunStatus.SUCCEEDED
    assert api.polled[1] - api.polled[0] == 300.0
