"""The storage contract for provider batches: every backend must pass every test here."""

from __future__ import annotations

import pytest

from cardmill import (
    BatchCounts,
    BatchNotFound,
    BatchState,
    CardDraft,
    Document,
    InputError,
    RunNotFound,
    RunStatus,
    Storage,
    UploadStatus,
    Usage,
)
from cardmill.testing import check_invariants

from .conftest import Backend, FakeClock

DOCS = [Document(f"{i}.txt", f"doc {i}".encode()) for i in range(5)]
CARD = [CardDraft("t", "b")]


async def test_create_batch_takes_claimable_uploads_of_the_run_in_order(
    storage: Storage, clock: FakeClock
) -> None:
    run = await storage.create_run(DOCS)
    other = await storage.create_run(DOCS[:1])
    (foreign,) = await storage.list_uploads(other.id)
    a, b, c, d, e = await storage.list_uploads(run.id)
    # b is held by a live lease, c is settled, d was claimed by a worker now dead, a was
    # claimed and released, e never claimed.
    while (held := await storage.claim_upload(run.id, worker="w", lease_seconds=100)) is not None:
        if held.id == d.id:
            break
    assert await storage.release_upload(a.id)
    assert await storage.complete_upload(c.id, CARD)
    assert await storage.renew_lease(b.id, worker="w", lease_seconds=1000)
    clock.advance(100)
    ids = [e.id, foreign.id, c.id, b.id, "up-nope", a.id, d.id, e.id]
    made = await storage.create_batch(run.id, ids, lease_seconds=3600)
    assert made is not None
    batch, items = made
    assert batch.run_id == run.id
    assert (batch.state, batch.provider_batch_id, batch.size) == (BatchState.SUBMITTING, None, 3)
    assert batch.counts == BatchCounts()
    assert batch.holder == f"batch:{batch.id}"
    assert [i.upload_id for i in items] == [e.id, a.id, d.id]
    assert [i.custom_id for i in items] == [e.id, a.id, d.id]
    assert [i.attempt for i in items] == [1, 2, 2]
    assert all(i.batch_id == batch.id for i in items)
    assert await storage.batch_items(batch.id) == list(items)
    assert await storage.get_batch(batch.id) == batch
    by_id = {u.id: u for u in await storage.list_uploads(run.id)}
    for item in items:
        u = by_id[item.upload_id]
        assert (u.status, u.worker) == (UploadStatus.LOADING, batch.holder)
        assert u.attempts == item.attempt
        assert u.lease_expires_at is not None
        assert u.lease_expires_at.timestamp() == clock.now + 3600
    assert (by_id[b.id].worker, by_id[c.id].status) == ("w", UploadStatus.COMPLETED)
    assert (await storage.list_uploads(other.id))[0].status == UploadStatus.PENDING
    assert (await storage.get_run(run.id)).status == RunStatus.RUNNING
    await check_invariants(storage, run.id)


async def test_create_batch_records_nothing_when_it_can_take_nothing(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:2])
    other = await storage.create_run(DOCS[:1])
    (foreign,) = await storage.list_uploads(other.id)
    a, b = await storage.list_uploads(run.id)
    await storage.claim_upload(run.id, worker="w", lease_seconds=60)
    assert await storage.complete_upload(b.id, CARD)
    assert await storage.create_batch(run.id, [a.id, b.id, foreign.id], lease_seconds=9) is None
    assert await storage.create_batch(run.id, [], lease_seconds=9) is None
    assert await storage.list_batches(run.id) == []
    assert await storage.list_batches(other.id) == []
    assert (await storage.list_uploads(run.id))[0].attempts == 1
    with pytest.raises(RunNotFound):
        await storage.create_batch("run-nope", [a.id], lease_seconds=9)


async def test_create_batch_refuses_arguments_it_cannot_use(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:1])
    (u,) = await storage.list_uploads(run.id)
    with pytest.raises(InputError, match="upload_ids must be a sequence"):
        await storage.create_batch(run.id, u.id, lease_seconds=9)
    with pytest.raises(InputError, match=r"upload_ids\[1\]"):
        await storage.create_batch(run.id, [u.id, 7], lease_seconds=9)  # type: ignore[list-item]
    with pytest.raises(InputError, match="lease_seconds"):
        await storage.create_batch(run.id, [u.id], lease_seconds=-1)
    assert await storage.list_batches(run.id) == []


async def test_a_batch_holds_its_uploads_against_workers_until_its_lease_expires(
    storage: Storage, clock: FakeClock
) -> None:
    run = await storage.create_run(DOCS[:2])
    a, b = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [a.id, b.id], lease_seconds=3600)
    assert made is not None
    batch, items = made
    assert await storage.claim_upload(run.id, worker="w", lease_seconds=60) is None
    assert await storage.create_batch(run.id, [a.id], lease_seconds=60) is None
    assert not await storage.renew_lease(a.id, worker="w", lease_seconds=60)
    assert not await storage.complete_upload(a.id, CARD, worker="w")
    clock.advance(3599)
    assert await storage.claim_upload(run.id, worker="w", lease_seconds=60) is None
    assert (await storage.finish_run(run.id)).status == RunStatus.RUNNING
    clock.advance(1)
    taken = await storage.claim_upload(run.id, worker="w", lease_seconds=60)
    assert taken is not None
    assert (taken.id, taken.attempts) == (a.id, 2)
    # The batch's result for that upload is now stale: its attempt no longer holds.
    assert not await storage.complete_upload(
        a.id, CARD, worker=batch.holder, attempt=items[0].attempt, cost_usd=1
    )
    assert (await storage.get_run(run.id)).cost_usd == 0
    await check_invariants(storage, run.id)


async def test_results_settle_under_the_batch_and_its_attempt_only(
    storage: Storage, clock: FakeClock
) -> None:
    run = await storage.create_run(DOCS[:3])
    a, b, c = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [a.id, b.id, c.id], lease_seconds=100)
    assert made is not None
    batch, (ia, ib, ic) = made
    assert not await storage.complete_upload(a.id, CARD, worker=batch.holder, attempt=0)
    assert not await storage.complete_upload(a.id, CARD, worker="w", attempt=ia.attempt)
    spent, cost = Usage(10, 20), 0.05
    assert await storage.complete_upload(
        a.id, CARD, worker=batch.holder, attempt=ia.attempt, usage=spent, cost_usd=cost
    )
    assert not await storage.complete_upload(
        a.id, CARD, worker=batch.holder, attempt=ia.attempt, usage=spent, cost_usd=cost
    )
    assert await storage.fail_upload(b.id, "errored", worker=batch.holder, attempt=ib.attempt)
    # c's batch lease ran out and a second batch took it: the first's result is stale.
    clock.advance(100)
    again = await storage.create_batch(run.id, [c.id], lease_seconds=100)
    assert again is not None
    second, (ic2,) = again
    assert ic2.attempt == ic.attempt + 1
    assert not await storage.complete_upload(
        c.id, CARD, worker=batch.holder, attempt=ic.attempt, usage=spent, cost_usd=cost
    )
    assert await storage.complete_upload(
        c.id, CARD, worker=second.holder, attempt=ic2.attempt, usage=spent, cost_usd=cost
    )
    got = await storage.get_run(run.id)
    assert (got.completed_items, got.failed_items, got.total_cards) == (2, 1, 2)
    assert (got.usage, got.cost_usd) == (Usage(20, 40), 0.1)
    await check_invariants(storage, run.id)
    assert (await storage.update_batch(batch.id, state=BatchState.DONE)).state == BatchState.DONE
    assert (await storage.update_batch(second.id, state=BatchState.DONE)).state == BatchState.DONE
    assert (await storage.finish_run(run.id)).status == RunStatus.PARTIAL


async def test_set_batch_submitted_once_per_provider_id(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:2])
    a, b = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [a.id], lease_seconds=100)
    other = await storage.create_batch(run.id, [b.id], lease_seconds=100)
    assert made is not None
    assert other is not None
    batch = made[0]
    live = await storage.set_batch_submitted(batch.id, "msgbatch_01")
    assert (live.state, live.provider_batch_id) == (BatchState.LIVE, "msgbatch_01")
    assert live.created_at == batch.created_at
    assert await storage.set_batch_submitted(batch.id, "msgbatch_01") == live
    with pytest.raises(InputError, match="msgbatch_01"):
        await storage.set_batch_submitted(batch.id, "msgbatch_02")
    with pytest.raises(InputError, match="already"):
        await storage.set_batch_submitted(other[0].id, "msgbatch_01")
    for bad in ("", "x" * 257, "a\nb", None):
        with pytest.raises(InputError, match="provider_batch_id"):
            await storage.set_batch_submitted(other[0].id, bad)  # type: ignore[arg-type]
    assert (await storage.get_batch(other[0].id)).state == BatchState.SUBMITTING
    abandoned = await storage.update_batch(other[0].id, state=BatchState.ABANDONED)
    with pytest.raises(InputError, match="abandoned"):
        await storage.set_batch_submitted(abandoned.id, "msgbatch_03")
    assert await storage.get_batch(batch.id) == live
    with pytest.raises(BatchNotFound, match="batch-nope"):
        await storage.set_batch_submitted("batch-nope", "msgbatch_04")


async def test_abandoning_a_batch_releases_what_it_still_holds(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:3])
    a, b, c = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [a.id, b.id, c.id], lease_seconds=3600)
    assert made is not None
    batch, (ia, _, _) = made
    assert await storage.complete_upload(a.id, CARD, worker=batch.holder, attempt=ia.attempt)
    with pytest.raises(InputError, match="still holds 2 uploads"):
        await storage.update_batch(batch.id, state=BatchState.DONE)
    assert (await storage.get_batch(batch.id)).state == BatchState.SUBMITTING
    gone = await storage.update_batch(batch.id, state=BatchState.ABANDONED)
    assert gone.state == BatchState.ABANDONED
    by_id = {u.id: u for u in await storage.list_uploads(run.id)}
    assert by_id[a.id].status == UploadStatus.COMPLETED
    for u in (by_id[b.id], by_id[c.id]):
        assert (u.status, u.worker, u.lease_expires_at, u.attempts) == (
            UploadStatus.PENDING,
            None,
            None,
            1,
        )
    # Settled batches stay so.
    assert await storage.update_batch(batch.id, state=BatchState.LIVE) == gone
    assert await storage.update_batch(batch.id, counts=BatchCounts(succeeded=9)) == gone
    # The released uploads are claimable at once.
    taken = await storage.claim_upload(run.id, worker="w", lease_seconds=60)
    assert taken is not None
    assert (taken.id, taken.attempts) == (b.id, 2)
    await check_invariants(storage, run.id)


async def test_abandoning_leaves_uploads_the_batch_no_longer_holds(
    storage: Storage, clock: FakeClock
) -> None:
    run = await storage.create_run(DOCS[:1])
    (a,) = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [a.id], lease_seconds=10)
    assert made is not None
    clock.advance(10)
    taken = await storage.claim_upload(run.id, worker="w", lease_seconds=60)
    assert taken is not None
    await storage.update_batch(made[0].id, state=BatchState.ABANDONED)
    (u,) = await storage.list_uploads(run.id)
    assert (u.status, u.worker) == (UploadStatus.LOADING, "w")
    await check_invariants(storage, run.id)


async def test_update_batch_records_state_and_counts(storage: Storage, clock: FakeClock) -> None:
    run = await storage.create_run(DOCS[:2])
    a, b = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [a.id, b.id], lease_seconds=100)
    assert made is not None
    batch, (ia, ib) = made
    await storage.set_batch_submitted(batch.id, "mb_1")
    clock.advance(5)
    counts = BatchCounts(processing=1, succeeded=1)
    polled = await storage.update_batch(batch.id, counts=counts)
    assert (polled.state, polled.counts) == (BatchState.LIVE, counts)
    assert polled.updated_at.timestamp() == clock.now
    canceling = await storage.update_batch(batch.id, state=BatchState.CANCELING)
    assert (canceling.state, canceling.counts) == (BatchState.CANCELING, counts)
    for bad_counts in (BatchCounts(processing=-1), BatchCounts(expired=2**31), BatchCounts(1.5)):  # type: ignore[arg-type]
        with pytest.raises(InputError, match="counts"):
            await storage.update_batch(batch.id, counts=bad_counts)
    with pytest.raises(InputError, match="state must be a BatchState"):
        await storage.update_batch(batch.id, state="finished")  # type: ignore[arg-type]
    assert await storage.get_batch(batch.id) == canceling
    assert await storage.complete_upload(a.id, CARD, worker=batch.holder, attempt=ia.attempt)
    assert await storage.fail_upload(b.id, "canceled", worker=batch.holder, attempt=ib.attempt)
    final = BatchCounts(succeeded=1, canceled=1)
    done = await storage.update_batch(batch.id, state=BatchState.DONE, counts=final)
    assert (done.state, done.counts, done.provider_batch_id) == (BatchState.DONE, final, "mb_1")
    assert await storage.update_batch(batch.id, state=BatchState.ABANDONED) == done
    with pytest.raises(BatchNotFound):
        await storage.update_batch("batch-nope", state=BatchState.DONE)
    await check_invariants(storage, run.id)


async def test_list_batches_oldest_first_and_open_only(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:4])
    other = await storage.create_run(DOCS[:1])
    uploads = await storage.list_uploads(run.id)
    made = []
    for u in uploads[:3]:
        got = await storage.create_batch(run.id, [u.id], lease_seconds=100)
        assert got is not None
        made.append(got[0])
    first, second, third = made
    await storage.set_batch_submitted(second.id, "mb_2")
    await storage.update_batch(first.id, state=BatchState.ABANDONED)
    await storage.update_batch(third.id, state=BatchState.CANCELING)
    assert [b.id for b in await storage.list_batches(run.id)] == [first.id, second.id, third.id]
    assert [b.id for b in await storage.list_batches(run.id, open_only=True)] == [
        second.id,
        third.id,
    ]
    assert await storage.list_batches(other.id, open_only=True) == []
    with pytest.raises(RunNotFound):
        await storage.list_batches("run-nope")
    with pytest.raises(BatchNotFound, match="batch-nope"):
        await storage.get_batch("batch-nope")
    with pytest.raises(BatchNotFound):
        await storage.batch_items("batch-nope")


async def test_batches_survive_reopen(backend: Backend) -> None:
    async with backend.open() as storage:
        run = await storage.create_run(DOCS[:2])
        ids = [u.id for u in await storage.list_uploads(run.id)]
        made = await storage.create_batch(run.id, ids, lease_seconds=100)
        assert made is not None
        batch = await storage.set_batch_submitted(made[0].id, "mb_1")
    async with backend.open() as storage:
        assert await storage.list_batches(run.id, open_only=True) == [batch]
        assert await storage.batch_items(batch.id) == list(made[1])
        await check_invariants(storage, run.id)


async def test_a_batch_keeps_its_creator(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:3])
    a, b, c = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [a.id], lease_seconds=100, creator="h:12:ab@x.1")
    unnamed = await storage.create_batch(run.id, [b.id], lease_seconds=100)
    assert made is not None
    assert unnamed is not None
    assert made[0].creator == "h:12:ab@x.1"
    assert (await storage.get_batch(made[0].id)).creator == "h:12:ab@x.1"
    assert [x.creator for x in await storage.list_batches(run.id)] == ["h:12:ab@x.1", None]
    for bad in ("", "x" * 257, "a\nb", 7):
        with pytest.raises(InputError, match="creator"):
            await storage.create_batch(run.id, [c.id], lease_seconds=100, creator=bad)  # type: ignore[arg-type]
    assert (await storage.list_uploads(run.id, UploadStatus.PENDING)) == [c]


async def test_a_batch_cancelled_before_its_create_answered_stays_canceling(
    storage: Storage,
) -> None:
    run = await storage.create_run(DOCS[:1])
    [a] = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [a.id], lease_seconds=100)
    assert made is not None
    await storage.update_batch(made[0].id, state=BatchState.CANCELING)
    recorded = await storage.set_batch_submitted(made[0].id, "msgbatch_09")
    assert (recorded.state, recorded.provider_batch_id) == (BatchState.CANCELING, "msgbatch_09")
    assert await storage.set_batch_submitted(made[0].id, "msgbatch_09") == recorded
    with pytest.raises(InputError, match="msgbatch_09"):
        await storage.set_batch_submitted(made[0].id, "msgbatch_10")
    await check_invariants(storage, run.id)


async def test_a_state_change_expecting_another_state_changes_nothing(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:1])
    [a] = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [a.id], lease_seconds=100)
    assert made is not None
    batch = made[0]
    # cancel read it SUBMITTING; the create call's answer is recorded before it writes
    live = await storage.set_batch_submitted(batch.id, "msgbatch_11")
    assert live.state == BatchState.LIVE
    kept = await storage.update_batch(
        batch.id, state=BatchState.CANCELING, expect=BatchState.SUBMITTING
    )
    assert kept == live
    assert await storage.get_batch(batch.id) == live
    canceling = await storage.update_batch(
        batch.id, state=BatchState.CANCELING, expect=BatchState.LIVE
    )
    assert (canceling.state, canceling.provider_batch_id) == (BatchState.CANCELING, "msgbatch_11")
    # abandoning expecting SUBMITTING releases nothing
    assert (
        await storage.update_batch(
            batch.id, state=BatchState.ABANDONED, expect=BatchState.SUBMITTING
        )
        == canceling
    )
    assert [u.status for u in await storage.list_uploads(run.id)] == [UploadStatus.LOADING]
    with pytest.raises(InputError, match="expect must be a BatchState"):
        await storage.update_batch(batch.id, state=BatchState.LIVE, expect="live?")  # type: ignore[arg-type]
    await check_invariants(storage, run.id)
