"""The storage contract: every backend must pass every test here."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing

from cardmill import (
    FLASHCARDS,
    STUDY_CARDS,
    BatchCounts,
    BatchNotFound,
    BatchState,
    CardDraft,
    Document,
    Field,
    InputError,
    Recipe,
    RunNotFound,
    RunStatus,
    Storage,
    UnstorableData,
    UploadNotFound,
    UploadStatus,
)
from cardmill.testing import check_invariants

from .conftest import Backend, FakeClock

DOCS = [
    Document("a.md", b"# A\n\nalpha"),
    Document("b.txt", b"bravo"),
    Document("c.html", b"<h1>C</h1>"),
]


def drafts(n: int) -> list[CardDraft]:
    return [CardDraft(f"title {i}", f"body {i}", ("t",), "q") for i in range(n)]


async def test_create_run_stores_documents_and_counts(storage: Storage) -> None:
    run = await storage.create_run(DOCS, name="first")
    assert run.name == "first"
    assert run.status == RunStatus.PENDING
    assert (run.total_items, run.completed_items, run.failed_items, run.total_cards) == (3, 0, 0, 0)
    uploads = await storage.list_uploads(run.id)
    assert [u.name for u in uploads] == ["a.md", "b.txt", "c.html"]
    assert all(u.status == UploadStatus.PENDING and u.attempts == 0 for u in uploads)
    for u, doc in zip(uploads, DOCS, strict=True):
        assert (u.size, u.sha256, u.media_type) == (doc.size, doc.sha256, doc.media_type)
        assert await storage.load_document(u.id) == doc
    assert await storage.get_run(run.id) == run
    assert [r.id for r in await storage.list_runs()] == [run.id]


async def test_create_run_consumes_a_generator_and_names_default_to_id(storage: Storage) -> None:
    run = await storage.create_run(Document(f"{i}.txt", b"x") for i in range(5))
    assert run.total_items == 5
    assert run.name == run.id
    empty = await storage.create_run([])
    assert empty.total_items == 0
    assert (await storage.finish_run(empty.id)).status == RunStatus.SUCCEEDED


async def test_a_run_keeps_its_provider_and_model(storage: Storage) -> None:
    run = await storage.create_run(DOCS, provider="anthropic", model="claude-opus-4-5")
    assert (run.provider, run.model) == ("anthropic", "claude-opus-4-5")
    (upload, *_) = await storage.list_uploads(run.id)
    assert await storage.complete_upload(upload.id, drafts(1))
    after = await storage.finish_run(run.id)
    assert (after.provider, after.model) == ("anthropic", "claude-opus-4-5")
    assert [(r.provider, r.model) for r in await storage.list_runs()] == [
        ("anthropic", "claude-opus-4-5")
    ]
    unnamed = await storage.create_run(DOCS[:1])
    assert (unnamed.provider, unnamed.model) == ("", "")
    for bad in ("x" * 201, "two\nlines", 5):
        with pytest.raises(InputError, match="model"):
            await storage.create_run(DOCS, model=bad)  # type: ignore[arg-type]
    assert len(await storage.list_runs()) == 2


async def test_unknown_ids_raise_errors_naming_them(storage: Storage) -> None:
    with pytest.raises(RunNotFound, match="run-nope"):
        await storage.get_run("run-nope")
    with pytest.raises(RunNotFound):
        await storage.list_uploads("run-nope")
    with pytest.raises(RunNotFound):
        await storage.list_cards("run-nope")
    with pytest.raises(RunNotFound):
        await storage.claim_upload("run-nope", worker="w", lease_seconds=10)
    with pytest.raises(RunNotFound):
        await storage.finish_run("run-nope")
    for op in (
        storage.load_document("up-nope"),
        storage.complete_upload("up-nope", []),
        storage.fail_upload("up-nope", "x"),
        storage.release_upload("up-nope"),
        storage.renew_lease("up-nope", worker="w", lease_seconds=1),
    ):
        with pytest.raises(UploadNotFound, match="up-nope"):
            await op


async def test_claim_in_order_then_none(storage: Storage) -> None:
    run = await storage.create_run(DOCS)
    names = []
    for _ in DOCS:
        u = await storage.claim_upload(run.id, worker="w1", lease_seconds=30)
        assert u is not None
        assert (u.status, u.attempts, u.worker) == (UploadStatus.LOADING, 1, "w1")
        assert u.lease_expires_at is not None
        names.append(u.name)
    assert names == ["a.md", "b.txt", "c.html"]
    assert await storage.claim_upload(run.id, worker="w2", lease_seconds=30) is None
    assert (await storage.get_run(run.id)).status == RunStatus.RUNNING


async def test_expired_lease_is_reclaimed_with_attempts_counted(
    storage: Storage, clock: FakeClock
) -> None:
    run = await storage.create_run(DOCS[:1])
    u = await storage.claim_upload(run.id, worker="dead", lease_seconds=30)
    assert u is not None
    clock.advance(29)
    assert await storage.claim_upload(run.id, worker="w2", lease_seconds=30) is None
    clock.advance(1)
    again = await storage.claim_upload(run.id, worker="w2", lease_seconds=30)
    assert again is not None
    assert (again.id, again.attempts, again.worker) == (u.id, 2, "w2")
    # The stale worker is fenced out.
    assert not await storage.complete_upload(u.id, drafts(2), worker="dead")
    assert not await storage.renew_lease(u.id, worker="dead", lease_seconds=30)
    assert await storage.complete_upload(u.id, drafts(2), worker="w2")
    await check_invariants(storage, run.id)


async def test_a_worker_that_reclaims_its_own_upload_fences_out_its_older_claim(
    storage: Storage, clock: FakeClock
) -> None:
    run = await storage.create_run(DOCS[:1])
    first = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert first is not None
    assert first.attempts == 1
    clock.advance(31)
    second = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert second is not None
    assert (second.id, second.attempts, second.worker) == (first.id, 2, "w")
    # The same worker name, but the older claim: nothing it does counts any more.
    old = first.attempts
    assert not await storage.renew_lease(first.id, worker="w", lease_seconds=99, attempt=old)
    assert not await storage.complete_upload(first.id, drafts(5), worker="w", attempt=old)
    assert not await storage.fail_upload(first.id, "stale", worker="w", attempt=old)
    assert not await storage.release_upload(first.id, worker="w", attempt=old)
    # A token alone fences too, and another worker with the right token does not pass.
    assert not await storage.complete_upload(first.id, drafts(5), attempt=1)
    assert not await storage.complete_upload(first.id, drafts(5), worker="x", attempt=2)
    (held,) = await storage.list_uploads(run.id)
    assert (held.status, held.attempts, held.worker) == (UploadStatus.LOADING, 2, "w")
    assert held.lease_expires_at == second.lease_expires_at
    assert await storage.list_cards(run.id) == []
    # The current claim acts.
    assert await storage.renew_lease(first.id, worker="w", lease_seconds=30, attempt=2)
    assert await storage.complete_upload(first.id, drafts(2), worker="w", attempt=2)
    assert (await storage.get_run(run.id)).total_cards == 2
    await check_invariants(storage, run.id)


async def test_the_current_claim_may_fail_or_release_by_its_attempt(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:2])
    a = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    b = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert a is not None
    assert b is not None
    assert await storage.release_upload(a.id, worker="w", attempt=a.attempts)
    assert not await storage.fail_upload(a.id, "released already", worker="w", attempt=1)
    assert await storage.fail_upload(b.id, "bad", worker="w", attempt=b.attempts)
    again = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert again is not None
    assert (again.id, again.attempts) == (a.id, 2)
    assert not await storage.release_upload(a.id, worker="w", attempt=1)
    assert await storage.release_upload(a.id, attempt=2)
    await check_invariants(storage, run.id)


async def test_renew_lease_keeps_the_upload(storage: Storage, clock: FakeClock) -> None:
    run = await storage.create_run(DOCS[:1])
    u = await storage.claim_upload(run.id, worker="w", lease_seconds=10)
    assert u is not None
    clock.advance(8)
    assert await storage.renew_lease(u.id, worker="w", lease_seconds=10)
    clock.advance(8)
    assert await storage.claim_upload(run.id, worker="x", lease_seconds=10) is None


async def test_complete_is_one_idempotent_step(storage: Storage) -> None:
    run = await storage.create_run(DOCS)
    u = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert u is not None
    assert await storage.complete_upload(u.id, drafts(3), worker="w")
    assert not await storage.complete_upload(u.id, drafts(5))
    assert not await storage.fail_upload(u.id, "late")
    assert not await storage.release_upload(u.id)
    run = await storage.get_run(run.id)
    assert (run.completed_items, run.total_cards) == (1, 3)
    cards = await storage.list_cards(run.id, u.id)
    assert [c.ordinal for c in cards] == [0, 1, 2]
    assert [c.draft for c in cards] == drafts(3)
    assert len({c.id for c in cards}) == 3
    (done,) = await storage.list_uploads(run.id, UploadStatus.COMPLETED)
    assert (done.card_count, done.worker, done.error) == (3, None, None)
    assert done.finished_at is not None
    await check_invariants(storage, run.id)


async def test_complete_and_claim_settles_one_and_takes_the_next(
    storage: Storage, clock: FakeClock
) -> None:
    run = await storage.create_run(DOCS[:2])
    first = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert first is not None
    done, following = await storage.complete_and_claim(
        first.id, drafts(2), worker="w", attempt=first.attempts, run_id=run.id, lease_seconds=30
    )
    assert done
    assert following is not None
    assert (following.name, following.status, following.worker) == (
        "b.txt",
        UploadStatus.LOADING,
        "w",
    )
    assert await storage.load_document(following.id) == DOCS[1]
    await check_invariants(storage, run.id)
    # Its lease expires and another worker takes it: the stale claim is fenced out.
    clock.advance(31)
    other = await storage.claim_upload(run.id, worker="x", lease_seconds=30)
    assert other is not None
    assert other.id == following.id
    done, nothing = await storage.complete_and_claim(
        following.id,
        drafts(1),
        worker="w",
        attempt=following.attempts,
        run_id=run.id,
        lease_seconds=30,
    )
    assert (done, nothing) == (False, None)
    assert (await storage.get_run(run.id)).completed_items == 1
    with pytest.raises(InputError):
        await storage.complete_and_claim(
            other.id,
            ["not a draft"],  # type: ignore[list-item]
            worker="x",
            run_id=run.id,
            lease_seconds=30,
        )
    done, nothing = await storage.complete_and_claim(
        other.id, drafts(1), worker="x", attempt=other.attempts, run_id=run.id, lease_seconds=30
    )
    assert (done, nothing) == (True, None)
    await check_invariants(storage, run.id)


async def test_fail_then_complete_changes_nothing(storage: Storage) -> None:
    run = await storage.create_run(DOCS)
    u = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert u is not None
    assert await storage.fail_upload(u.id, "bad\nthing   happened")
    assert not await storage.fail_upload(u.id, "again")
    assert not await storage.complete_upload(u.id, drafts(2))
    (failed,) = await storage.list_uploads(run.id, UploadStatus.FAILED)
    assert failed.error == "bad thing happened"
    run = await storage.get_run(run.id)
    assert (run.failed_items, run.completed_items, run.total_cards) == (1, 0, 0)
    await check_invariants(storage, run.id)


async def test_pending_upload_can_be_settled_without_a_claim(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:2])
    first, second = await storage.list_uploads(run.id)
    assert await storage.complete_upload(first.id, drafts(1))
    assert await storage.fail_upload(second.id, "unsupported")
    await check_invariants(storage, run.id)
    assert (await storage.finish_run(run.id)).status == RunStatus.PARTIAL


async def test_release_returns_loading_to_pending(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:1])
    u = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert u is not None
    assert not await storage.release_upload(u.id, worker="other")
    assert await storage.release_upload(u.id, worker="w")
    assert not await storage.release_upload(u.id)
    (back,) = await storage.list_uploads(run.id)
    assert (back.status, back.worker, back.attempts) == (UploadStatus.PENDING, None, 1)
    again = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert again is not None
    assert again.attempts == 2


async def test_finish_run_statuses(storage: Storage) -> None:
    ok = await storage.create_run(DOCS[:2])
    partial = await storage.create_run(DOCS[:2])
    failed = await storage.create_run(DOCS[:2])
    for run_id, outcomes in ((ok.id, "cc"), (partial.id, "cf"), (failed.id, "ff")):
        for u, outcome in zip(await storage.list_uploads(run_id), outcomes, strict=True):
            if outcome == "c":
                await storage.complete_upload(u.id, drafts(1))
            else:
                await storage.fail_upload(u.id, "no")
    assert (await storage.finish_run(ok.id)).status == RunStatus.SUCCEEDED
    assert (await storage.finish_run(partial.id)).status == RunStatus.PARTIAL
    done = await storage.finish_run(failed.id)
    assert done.status == RunStatus.FAILED
    assert done.finished_at is not None


async def test_finish_run_with_work_left(storage: Storage, clock: FakeClock) -> None:
    run = await storage.create_run(DOCS[:2])
    u = await storage.claim_upload(run.id, worker="other", lease_seconds=30)
    assert u is not None
    # Another worker holds a live lease: the run is still running.
    assert (await storage.finish_run(run.id)).status == RunStatus.RUNNING
    clock.advance(31)
    cancelled = await storage.finish_run(run.id)
    assert cancelled.status == RunStatus.CANCELLED
    assert cancelled.finished_at is None
    # A cancelled run resumes: claiming makes it RUNNING again.
    assert await storage.claim_upload(run.id, worker="w", lease_seconds=30) is not None
    assert (await storage.get_run(run.id)).status == RunStatus.RUNNING


async def test_list_filters_and_orders(storage: Storage) -> None:
    run = await storage.create_run(DOCS)
    other = await storage.create_run(DOCS[:1])
    a, b, c = await storage.list_uploads(run.id)
    await storage.complete_upload(c.id, drafts(2))
    await storage.complete_upload(a.id, drafts(1))
    await storage.fail_upload(b.id, "x")
    assert [u.id for u in await storage.list_uploads(run.id, UploadStatus.COMPLETED)] == [
        a.id,
        c.id,
    ]
    assert [(x.upload_id, x.ordinal) for x in await storage.list_cards(run.id)] == [
        (a.id, 0),
        (c.id, 0),
        (c.id, 1),
    ]
    assert await storage.list_cards(run.id, b.id) == []
    assert await storage.list_cards(other.id) == []
    assert await storage.list_cards(other.id, a.id) == []


async def test_bad_drafts_are_refused_before_anything_changes(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:1])
    (u,) = await storage.list_uploads(run.id)
    with pytest.raises(InputError, match=r"drafts\[1\]"):
        await storage.complete_upload(u.id, [CardDraft("ok", "ok"), "not a draft"])  # type: ignore[list-item]
    assert (await storage.list_uploads(run.id))[0].status == UploadStatus.PENDING
    await check_invariants(storage, run.id)


async def test_concurrent_completes_store_exactly_one_set(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:1])
    (u,) = await storage.list_uploads(run.id)
    results: list[bool] = []

    async def complete(n: int) -> None:
        results.append(await storage.complete_upload(u.id, drafts(n)))

    async with trio.open_nursery() as nursery:
        for n in (2, 3, 4, 5):
            nursery.start_soon(complete, n)
    assert sorted(results) == [False, False, False, True]
    await check_invariants(storage, run.id)


async def test_racing_claims_get_distinct_uploads(storage: Storage) -> None:
    run = await storage.create_run([Document(f"{i}.txt", b"x") for i in range(10)])
    got: list[str] = []

    async def claim(worker: str) -> None:
        while (
            u := await storage.claim_upload(run.id, worker=worker, lease_seconds=60)
        ) is not None:
            got.append(u.id)

    async with trio.open_nursery() as nursery:
        for w in "abcd":
            nursery.start_soon(claim, w)
    assert len(got) == len(set(got)) == 10


async def test_every_method_checkpoints(storage: Storage) -> None:
    covered: set[str] = set()

    @contextmanager
    def checkpoints(name: str) -> Iterator[None]:
        covered.add(name)
        with trio.testing.assert_checkpoints():
            yield

    with checkpoints("__aenter__"):
        assert await storage.__aenter__() is storage
    with checkpoints("create_run"):
        run = await storage.create_run(DOCS)
    with checkpoints("get_run"):
        await storage.get_run(run.id)
    with checkpoints("list_runs"):
        await storage.list_runs()
    with checkpoints("list_uploads"):
        a, b, c = await storage.list_uploads(run.id)
    with checkpoints("load_document"):
        await storage.load_document(c.id)
    with checkpoints("claim_upload"):
        claimed = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert claimed is not None
    # Backends may hand back a document read along with its claim: that path too.
    with checkpoints("load_document"):
        await storage.load_document(claimed.id)
    with checkpoints("renew_lease"):
        assert await storage.renew_lease(claimed.id, worker="w", lease_seconds=30)
    with checkpoints("release_upload"):
        assert await storage.release_upload(claimed.id, worker="w")
    with checkpoints("complete_upload"):
        assert await storage.complete_upload(a.id, drafts(2))
    with checkpoints("complete_and_claim"):
        done, following = await storage.complete_and_claim(
            a.id, [], worker="w", run_id=run.id, lease_seconds=30
        )
    assert not done
    assert following is not None
    assert following.id == b.id
    with checkpoints("fail_upload"):
        assert await storage.fail_upload(b.id, "no")
    with checkpoints("list_cards"):
        await storage.list_cards(run.id)
    with checkpoints("get_uploads"):
        await storage.get_uploads(run.id, [a.id])
    with checkpoints("iter_uploads"):
        await anext(storage.iter_uploads(run.id))
    with checkpoints("iter_cards"):
        await anext(storage.iter_cards(run.id))
    with checkpoints("search_cards"):
        await storage.search_cards(run.id, text="card")
    with checkpoints("finish_run"):
        await storage.finish_run(run.id)
    # The paths that change nothing or find nothing checkpoint as well.
    with checkpoints("complete_upload"):
        assert not await storage.complete_upload(a.id, [])
    with checkpoints("fail_upload"):
        assert not await storage.fail_upload(a.id, "late")
    with checkpoints("release_upload"):
        assert not await storage.release_upload(a.id)
    with checkpoints("renew_lease"):
        assert not await storage.renew_lease(a.id, worker="w", lease_seconds=30)
    with checkpoints("claim_upload"):
        assert await storage.claim_upload(run.id, worker="w", lease_seconds=30) is not None
    with checkpoints("claim_upload"):
        assert await storage.claim_upload(run.id, worker="w", lease_seconds=30) is None
    with checkpoints("get_recipe"):
        await storage.get_recipe(run.id)
    with checkpoints("get_run"), pytest.raises(RunNotFound):
        await storage.get_run("run-nope")
    with checkpoints("get_recipe"), pytest.raises(RunNotFound):
        await storage.get_recipe("run-nope")
    with checkpoints("load_document"), pytest.raises(UploadNotFound):
        await storage.load_document("up-nope")
    # Provider batches, and their paths that take nothing or change nothing.
    more = await storage.create_run(DOCS[:2])
    x, y = await storage.list_uploads(more.id)
    with checkpoints("create_batch"):
        made = await storage.create_batch(more.id, [x.id, y.id], lease_seconds=99)
    assert made is not None
    batch, _ = made
    with checkpoints("create_batch"):
        assert await storage.create_batch(more.id, [x.id], lease_seconds=99) is None
    with checkpoints("set_batch_submitted"):
        await storage.set_batch_submitted(batch.id, "msgbatch_1")
    with checkpoints("set_batch_submitted"):
        await storage.set_batch_submitted(batch.id, "msgbatch_1")
    with checkpoints("update_batch"):
        await storage.update_batch(batch.id, counts=BatchCounts(processing=2))
    with checkpoints("get_batch"):
        await storage.get_batch(batch.id)
    with checkpoints("list_batches"):
        await storage.list_batches(more.id, open_only=True)
    with checkpoints("batch_items"):
        await storage.batch_items(batch.id)
    with checkpoints("update_batch"):
        await storage.update_batch(batch.id, state=BatchState.ABANDONED)
    with checkpoints("update_batch"):
        await storage.update_batch(batch.id, state=BatchState.LIVE)
    with checkpoints("get_batch"), pytest.raises(BatchNotFound):
        await storage.get_batch("batch-nope")
    with checkpoints("aclose"):
        await storage.aclose()
    with checkpoints("__aexit__"):
        await storage.__aexit__(None, None, None)
    assert covered == protocol_methods()


def protocol_methods() -> set[str]:
    return {
        name
        for name, value in vars(Storage).items()
        if inspect.isfunction(value)
        and (name in ("__aenter__", "__aexit__") or not name.startswith("_"))
    }


async def test_every_method_is_a_cancel_point_that_changes_nothing(storage: Storage) -> None:
    run = await storage.create_run(DOCS)
    a, b, c = await storage.list_uploads(run.id)
    claimed = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert claimed is not None
    assert claimed.id == a.id
    await storage.load_document(b.id)
    covered: set[str] = set()

    async def cancelled(name: str, call: Callable[[], Awaitable[object]]) -> None:
        covered.add(name)
        before = (await storage.list_runs(), await storage.list_uploads(run.id))
        with trio.CancelScope() as scope:
            scope.cancel()
            await call()
        assert scope.cancelled_caught, f"{name} returned in a cancelled scope"
        assert (await storage.list_runs(), await storage.list_uploads(run.id)) == before

    await cancelled("__aenter__", storage.__aenter__)
    await cancelled("create_run", lambda: storage.create_run(DOCS))
    await cancelled("get_run", lambda: storage.get_run(run.id))
    await cancelled("list_runs", storage.list_runs)
    await cancelled("list_uploads", lambda: storage.list_uploads(run.id))
    await cancelled("list_cards", lambda: storage.list_cards(run.id))
    await cancelled("get_uploads", lambda: storage.get_uploads(run.id, [a.id]))
    await cancelled("iter_uploads", lambda: anext(storage.iter_uploads(run.id)))
    await cancelled("iter_cards", lambda: anext(storage.iter_cards(run.id)))
    await cancelled("search_cards", lambda: storage.search_cards(run.id, text="x"))
    await cancelled("load_document", lambda: storage.load_document(b.id))
    await cancelled("load_document", lambda: storage.load_document(a.id))  # read with its claim
    await cancelled(
        "claim_upload", lambda: storage.claim_upload(run.id, worker="x", lease_seconds=9)
    )
    await cancelled("renew_lease", lambda: storage.renew_lease(a.id, worker="w", lease_seconds=99))
    await cancelled("complete_upload", lambda: storage.complete_upload(b.id, drafts(1)))
    await cancelled(
        "complete_and_claim",
        lambda: storage.complete_and_claim(
            b.id, drafts(1), worker="w", run_id=run.id, lease_seconds=9
        ),
    )
    await cancelled("fail_upload", lambda: storage.fail_upload(b.id, "no"))
    await cancelled("release_upload", lambda: storage.release_upload(a.id))
    await cancelled("finish_run", lambda: storage.finish_run(run.id))
    await cancelled("get_recipe", lambda: storage.get_recipe(run.id))
    made = await storage.create_batch(run.id, [b.id], lease_seconds=30)
    assert made is not None
    batch, _ = made

    async def batches() -> object:
        return [
            await storage.list_batches(run.id),
            await storage.batch_items(batch.id),
            await storage.get_batch(batch.id),
        ]

    before = await batches()
    await cancelled("create_batch", lambda: storage.create_batch(run.id, [c.id], lease_seconds=9))
    await cancelled("set_batch_submitted", lambda: storage.set_batch_submitted(batch.id, "mb_1"))
    await cancelled(
        "update_batch", lambda: storage.update_batch(batch.id, state=BatchState.ABANDONED)
    )
    await cancelled("get_batch", lambda: storage.get_batch(batch.id))
    await cancelled("list_batches", lambda: storage.list_batches(run.id))
    await cancelled("batch_items", lambda: storage.batch_items(batch.id))
    assert await batches() == before
    # Cleanup is the exception: it must happen even when cancelled.
    assert covered == protocol_methods() - {"aclose", "__aexit__"}


async def test_data_survives_reopen(backend: Backend) -> None:
    async with backend.open() as storage:
        run = await storage.create_run(DOCS)
        u = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
        assert u is not None
        await storage.complete_upload(u.id, drafts(2))
    async with backend.open() as storage:
        again = await storage.get_run(run.id)
        assert (again.completed_items, again.total_cards) == (1, 2)
        assert await storage.load_document(u.id) == DOCS[0]
        await check_invariants(storage, run.id)


async def collect(cards: AsyncIterator[Any]) -> list[Any]:
    return [c async for c in cards]


async def test_iter_cards_streams_what_list_cards_returns_at_any_page_size(
    storage: Storage,
) -> None:
    sizes = [3, 0, 1, 4, 0, 2, 5]
    run = await storage.create_run([Document(f"{i}.txt", b"x") for i in range(len(sizes))])
    other = await storage.create_run(DOCS[:1])
    (foreign,) = await storage.list_uploads(other.id)
    await storage.complete_upload(foreign.id, drafts(4))
    uploads = await storage.list_uploads(run.id)
    # Completed out of order, with a failed and a pending upload between full ones.
    for i in (6, 0, 3, 2, 5):
        await storage.complete_upload(uploads[i].id, drafts(sizes[i]))
    await storage.fail_upload(uploads[1].id, "broken")
    expected = await storage.list_cards(run.id)
    assert len(expected) == 3 + 1 + 4 + 2 + 5
    uploads = await storage.list_uploads(run.id)
    for batch in (1, 2, 3, 4, 5, 14, 15, 1000):
        assert await collect(storage.iter_cards(run.id, batch=batch)) == expected, batch
        for u in uploads:
            one = await collect(storage.iter_cards(run.id, upload_id=u.id, batch=batch))
            assert one == await storage.list_cards(run.id, u.id)
            assert [c.ordinal for c in one] == list(range(u.card_count))
    assert await collect(storage.iter_cards(run.id, upload_id=foreign.id)) == []
    assert await collect(storage.iter_cards(run.id, upload_id="up-nope")) == []
    assert await collect(storage.iter_cards(other.id, batch=2)) == await storage.list_cards(
        other.id
    )


async def test_get_uploads_reads_the_runs_uploads_named_in_submission_order(
    storage: Storage,
) -> None:
    run = await storage.create_run(DOCS)
    other = await storage.create_run(DOCS)
    a, b, c = await storage.list_uploads(run.id)
    (stranger, *_) = await storage.list_uploads(other.id)
    got = await storage.get_uploads(run.id, [c.id, "no such upload", a.id, stranger.id, c.id])
    assert got == [a, c]
    assert await storage.get_uploads(run.id, []) == []
    assert await storage.get_uploads(run.id, ["x\x00y", "'; --"]) == []
    with pytest.raises(RunNotFound):
        await storage.get_uploads("no such run", [a.id])
    with pytest.raises(InputError, match="upload_ids"):
        await storage.get_uploads(run.id, a.id)
    with pytest.raises(InputError, match=r"upload_ids\[1\]"):
        await storage.get_uploads(run.id, [a.id, 3])  # type: ignore[list-item]
    with pytest.raises(InputError, match="more than 1000"):
        await storage.get_uploads(run.id, [f"u{i}" for i in range(1001)])
    assert await storage.get_uploads(run.id, [f"u{i}" for i in range(999)] + [b.id]) == [b]


async def test_iter_uploads_streams_what_list_uploads_returns_at_any_page_size(
    storage: Storage,
) -> None:
    run = await storage.create_run([Document(f"{i}.txt", b"x") for i in range(7)])
    await storage.create_run(DOCS)
    first = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert first is not None
    await storage.complete_upload(first.id, drafts(2), worker="w")
    expected = await storage.list_uploads(run.id)
    for batch in (1, 2, 3, 6, 7, 8, 1000):
        assert await collect(storage.iter_uploads(run.id, batch=batch)) == expected, batch
    empty = await storage.create_run([])
    assert await collect(storage.iter_uploads(empty.id)) == []
    assert await collect(storage.iter_cards(empty.id)) == []


async def test_iter_cards_pages_resume_after_the_last_card_seen(storage: Storage) -> None:
    run = await storage.create_run([Document(f"{i}.txt", b"x") for i in range(4)])
    a, b, _, d = await storage.list_uploads(run.id)
    await storage.complete_upload(b.id, drafts(3))
    cards = storage.iter_cards(run.id, batch=2)
    seen = [await anext(cards), await anext(cards)]
    assert [(x.upload_id, x.ordinal) for x in seen] == [(b.id, 0), (b.id, 1)]
    # Behind the cursor: never seen. Ahead of it: seen whole, in order.
    await storage.complete_upload(a.id, drafts(2))
    await storage.complete_upload(d.id, drafts(3))
    seen += [x async for x in cards]
    assert [(x.upload_id, x.ordinal) for x in seen] == [
        (b.id, 0),
        (b.id, 1),
        (b.id, 2),
        (d.id, 0),
        (d.id, 1),
        (d.id, 2),
    ]


async def test_iter_refuses_bad_arguments(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:1])
    with pytest.raises(InputError, match="batch must be >= 1"):
        storage.iter_cards(run.id, batch=0)
    with pytest.raises(InputError, match="batch must be >= 1"):
        storage.iter_uploads(run.id, batch=-1)
    with pytest.raises(RunNotFound, match="run-nope"):
        await collect(storage.iter_cards("run-nope"))
    with pytest.raises(RunNotFound, match="run-nope"):
        await collect(storage.iter_uploads("run-nope"))


async def test_iter_checkpoints_on_every_page(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:2])
    for u in await storage.list_uploads(run.id):
        await storage.complete_upload(u.id, drafts(2))
    cards = storage.iter_cards(run.id, batch=2)
    uploads = storage.iter_uploads(run.id, batch=1)
    for _ in range(2):
        with trio.testing.assert_checkpoints():
            await anext(cards)
        await anext(cards)
        with trio.testing.assert_checkpoints():
            await anext(uploads)
    with trio.testing.assert_checkpoints(), pytest.raises(StopAsyncIteration):
        await anext(cards)


# NUL (PostgreSQL refuses it), other C0 controls, and lone surrogates (from a file name
# that is not UTF-8, or a model's JSON "\ud800"): no encoder for the stores takes them.
BAD = "a\x00b\x1b[31m\x07c\ud800d\udcff\te\nf\rg"
CLEAN = "ab[31mc\ufffdd\ufffd\te\nf\rg"


async def test_text_no_store_can_hold_is_cleaned_not_fatal(storage: Storage) -> None:
    run = await storage.create_run(
        [Document("x" + BAD + ".txt", b"one"), Document("y.txt", b"two")], name="run " + BAD
    )
    assert run.name == "run " + CLEAN
    first, second = await storage.list_uploads(run.id)
    assert first.name == "x" + CLEAN + ".txt"
    assert (await storage.load_document(first.id)).name == first.name
    assert await storage.complete_upload(first.id, [CardDraft(BAD, BAD, (BAD,), BAD)])
    (card,) = await storage.list_cards(run.id)
    assert (card.title, card.body, card.tags, card.quote) == (CLEAN, CLEAN, (CLEAN,), CLEAN)
    # The failure path quotes bad text too: it must record the failure, not raise.
    assert await storage.fail_upload(second.id, "cannot read " + BAD)
    failed = (await storage.list_uploads(run.id, UploadStatus.FAILED))[0]
    assert failed.error == "cannot read ab[31mc\ufffdd\ufffd e f g"
    assert (await storage.finish_run(run.id)).status == RunStatus.PARTIAL
    await check_invariants(storage, run.id)


INSIGHTS = Recipe(
    "insights",
    "Find the insights.",
    (
        Field("insight", max_chars=200),
        Field("category", "enum", choices=("risk", "idea")),
        Field("confidence", "number", minimum=0, maximum=1),
        Field("follow_up", "boolean", required=False),
        Field("people", "list", required=False, max_items=3),
    ),
)


def insight(i: int, **extra: object) -> CardDraft:
    values: dict[str, object] = {
        "insight": f"insight {i}",
        "category": "risk",
        "confidence": 0.25 * (i % 5),
        "people": ["Ada", "Grace"],
    }
    return INSIGHTS.draft({**values, **extra})


async def test_a_run_keeps_its_recipe(storage: Storage) -> None:
    plain = await storage.create_run(DOCS)
    run = await storage.create_run(DOCS, recipe=INSIGHTS)
    assert (plain.recipe_name, plain.recipe_digest) == ("study-cards", STUDY_CARDS.digest)
    assert (run.recipe_name, run.recipe_digest) == ("insights", INSIGHTS.digest)
    assert await storage.get_recipe(plain.id) == STUDY_CARDS
    assert await storage.get_recipe(run.id) == INSIGHTS
    assert await storage.get_run(run.id) == run
    assert {r.id: r.recipe_name for r in await storage.list_runs()} == {
        plain.id: "study-cards",
        run.id: "insights",
    }
    with pytest.raises(InputError, match="recipe must be a Recipe"):
        await storage.create_run(DOCS, recipe="insights")  # type: ignore[arg-type]
    with pytest.raises(RunNotFound):
        await storage.get_recipe("run-nope")


async def test_cards_keep_their_recipe_fields(storage: Storage) -> None:
    run = await storage.create_run(DOCS, recipe=INSIGHTS)
    a, b, _ = await storage.list_uploads(run.id)
    made = [insight(0), insight(1, follow_up=True, people=[]), insight(4, category="idea")]
    assert await storage.complete_upload(a.id, made)
    assert await storage.complete_upload(b.id, [insight(2)])
    cards = await storage.list_cards(run.id)
    streamed = [c async for c in storage.iter_cards(run.id, batch=2)]
    assert cards == streamed
    assert [c.draft for c in cards] == [*made, insight(2)]
    assert cards[0].fields is not None
    assert dict(cards[0].fields) == {
        "insight": "insight 0",
        "category": "risk",
        "confidence": 0.0,
        "people": ("Ada", "Grace"),
    }
    assert cards[1].fields is not None
    assert cards[1].fields["follow_up"] is True
    assert cards[1].fields["people"] == ()
    assert cards[2].fields is not None
    assert cards[2].fields["confidence"] == 1.0
    assert [c.title for c in cards] == ["insight 0", "insight 1", "insight 4", "insight 2"]
    await check_invariants(storage, run.id)


async def test_a_flashcard_run_has_titles_and_bodies_from_its_fields(storage: Storage) -> None:
    run = await storage.create_run(DOCS[:1], recipe=FLASHCARDS)
    (a,) = await storage.list_uploads(run.id)
    card = FLASHCARDS.draft({"question": "Why?", "answer": "Because.", "tags": ["x"]})
    assert await storage.complete_upload(a.id, [card])
    (got,) = await storage.list_cards(run.id)
    assert (got.title, got.body, got.tags, got.quote) == ("Why?", "Because.", ("x",), None)
    assert got.draft == card


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda: CardDraft("t", "b"), id="plain-draft"),
        pytest.param(
            lambda: CardDraft("t", "b", fields={"insight": "t", "category": "risk"}),
            id="missing-required",
        ),
        pytest.param(lambda: attrs_evolve_fields(category="maybe"), id="not-a-choice"),
        pytest.param(lambda: attrs_evolve_fields(confidence=7), id="out-of-range"),
        pytest.param(lambda: attrs_evolve_fields(extra="x"), id="unknown-field"),
        pytest.param(lambda: attrs_evolve_fields(insight="x" * 201), id="too-long"),
        pytest.param(lambda: attrs_evolve_fields(people=["a"] * 4), id="too-many-items"),
    ],
)
async def test_cards_that_do_not_fit_the_recipe_are_refused_whole(
    storage: Storage, bad: Callable[[], CardDraft]
) -> None:
    run = await storage.create_run(DOCS, recipe=INSIGHTS)
    a, _, _ = await storage.list_uploads(run.id)
    before = await storage.list_uploads(run.id)
    with pytest.raises(UnstorableData, match=rf"upload {a.id}: .*recipe 'insights'.*cards\[1\]"):
        await storage.complete_upload(a.id, [insight(0), bad()])
    assert await storage.list_uploads(run.id) == before
    assert await storage.list_cards(run.id) == []
    await check_invariants(storage, run.id)
    assert await storage.complete_upload(a.id, [insight(0)])


async def test_a_study_card_run_refuses_cards_with_fields(storage: Storage) -> None:
    run = await storage.create_run(DOCS)
    a, _, _ = await storage.list_uploads(run.id)
    with pytest.raises(UnstorableData, match="takes none"):
        await storage.complete_upload(a.id, [insight(0)])
    assert await storage.complete_upload(a.id, drafts(1))


def attrs_evolve_fields(**changes: object) -> CardDraft:
    base = insight(0)
    assert base.fields is not None
    return CardDraft(base.title, base.body, fields={**base.fields, **changes})
