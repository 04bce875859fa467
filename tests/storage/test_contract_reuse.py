"""The storage contract for answers kept for reuse: every backend must pass every test here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cardmill import (
    AnswerStore,
    CardDraft,
    Document,
    InputError,
    MemoryStorage,
    Storage,
    StoredAnswer,
    UploadStatus,
    Usage,
)
from cardmill.model import AnswerAsked
from cardmill.testing import check_invariants

from .. import pg
from .conftest import Backend, FakeClock, make_backend

CARDS = (CardDraft("Tides", "The moon pulls the sea.", ("sea",)), CardDraft("Neap", "Weak tides."))
KEY = "k" * 64


def store(storage: Storage) -> AnswerStore:
    assert isinstance(storage, AnswerStore)
    return storage


async def answered_run(storage: Storage, key: str = KEY, cost: float = 0.25) -> str:
    """A run of one document answered with CARDS under ``key``; its id."""
    run = await storage.create_run([Document("a.md", b"# Tides\n")], provider="p", model="m")
    upload = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert upload is not None
    assert await store(storage).claim_answer(key, upload_id=upload.id, attempt=1) is None
    await store(storage).store_answer(
        key,
        CARDS,
        upload_id=upload.id,
        provider="p",
        model="m",
        usage=Usage(100, 20),
        cost_usd=cost,
    )
    assert await storage.complete_upload(
        upload.id, CARDS, worker="w", attempt=1, usage=Usage(100, 20), cost_usd=cost, requests=1
    )
    return run.id


async def test_an_answer_kept_in_one_run_completes_an_upload_of_another(storage: Storage) -> None:
    first = await answered_run(storage)
    (fresh,) = await storage.list_uploads(first)
    assert (fresh.answer_key, fresh.reused) == (KEY, False)

    run = await storage.create_run([Document("renamed.md", b"# Tides\n")])
    upload = await storage.claim_upload(run.id, worker="w2", lease_seconds=30)
    assert upload is not None
    found = await store(storage).claim_answer(KEY, upload_id=upload.id, attempt=upload.attempts)
    assert isinstance(found, StoredAnswer)
    assert (found.key, found.drafts, found.provider, found.model) == (KEY, CARDS, "p", "m")
    assert (found.usage, found.cost_usd, found.tokens) == (Usage(100, 20), 0.25, 120)
    assert await store(storage).complete_from_answer(
        upload.id, found, worker="w2", attempt=upload.attempts
    )
    # Settled once: again, or by another worker, changes nothing.
    assert not await store(storage).complete_from_answer(upload.id, found)
    (reused,) = await storage.list_uploads(run.id)
    assert reused.status == UploadStatus.COMPLETED
    assert (reused.reused, reused.answer_key, reused.card_count) == (True, KEY, 2)
    assert (reused.saved_tokens, reused.saved_cost_usd) == (120, 0.25)
    assert (reused.requests, reused.cost_usd, reused.usage) == (0, 0.0, Usage())
    cards = await storage.list_cards(run.id)
    assert [c.draft for c in cards] == list(CARDS)
    assert {c.upload_id for c in cards} == {upload.id}
    done = await storage.finish_run(run.id)
    assert (done.reused_items, done.saved_tokens, done.saved_cost_usd) == (1, 120, 0.25)
    assert (done.total_cards, done.completed_items, done.cost_usd) == (2, 1, 0.0)
    await check_invariants(storage, run.id)
    await check_invariants(storage, first)


async def test_a_key_being_asked_for_makes_others_wait_until_that_claim_ends(
    storage: Storage, clock: FakeClock
) -> None:
    run = await storage.create_run([Document(f"{i}.md", b"same") for i in range(3)])
    a = await storage.claim_upload(run.id, worker="w1", lease_seconds=30)
    b = await storage.claim_upload(run.id, worker="w2", lease_seconds=30)
    assert a is not None
    assert b is not None
    answers = store(storage)
    assert await answers.claim_answer(KEY, upload_id=a.id, attempt=a.attempts) is None
    assert await answers.claim_answer(KEY, upload_id=a.id, attempt=a.attempts) is None  # again
    assert await answers.claim_answer(KEY, upload_id=b.id, attempt=b.attempts) == AnswerAsked(a.id)
    # Its claim released (Ctrl-C, a failure): the next to ask takes the key over.
    assert await storage.release_upload(a.id, worker="w1", attempt=a.attempts)
    assert await answers.claim_answer(KEY, upload_id=b.id, attempt=b.attempts) is None
    # Its worker died: once the lease is out, another takes it over.
    c = await storage.claim_upload(run.id, worker="w3", lease_seconds=30)
    assert c is not None
    assert await answers.claim_answer(KEY, upload_id=c.id, attempt=c.attempts) == AnswerAsked(b.id)
    clock.advance(31)
    assert await answers.claim_answer(KEY, upload_id=c.id, attempt=c.attempts) is None


async def test_answers_are_found_by_key_without_a_change(storage: Storage) -> None:
    await answered_run(storage)
    before = await store(storage).answer_stats()
    found = await store(storage).find_answers([KEY, "n" * 64])
    assert list(found) == [KEY]
    assert found[KEY].drafts == CARDS
    assert await store(storage).find_answers([]) == {}
    assert await store(storage).answer_stats() == before
    with pytest.raises(InputError, match="at most 1,000"):
        await store(storage).find_answers(["k"] * 1001)


async def test_a_failed_upload_leaves_no_answer(storage: Storage) -> None:
    run = await storage.create_run([Document("a.md", b"x"), Document("b.md", b"x")])
    a = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert a is not None
    assert await store(storage).claim_answer(KEY, upload_id=a.id, attempt=a.attempts) is None
    assert await storage.fail_upload(a.id, "provider refused", worker="w", attempt=a.attempts)
    b = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert b is not None
    assert await store(storage).claim_answer(KEY, upload_id=b.id, attempt=b.attempts) is None
    assert (await store(storage).answer_stats()).answers == 0
    # Released, it leaves no trace of the request it was asking for either.
    assert await storage.release_upload(b.id, worker="w", attempt=b.attempts)
    assert await asking_rows(storage) == 0


async def asking_rows(storage: Storage) -> int:
    """The requests the store remembers being asked for (rows without an answer)."""
    if isinstance(storage, MemoryStorage):
        return len(storage._asking)
    return int(await storage._call(_count_asking))  # type: ignore[attr-defined]


def _count_asking(tx: Any) -> int:
    return int(tx.one("SELECT count(*) FROM answers WHERE answered = 0")[0])


async def test_the_first_answer_kept_under_a_key_stays(storage: Storage) -> None:
    await answered_run(storage, cost=0.25)
    run = await storage.create_run([Document("b.md", b"x")])
    other = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert other is not None
    await store(storage).store_answer(
        KEY, [CardDraft("Other", "body")], upload_id=other.id, cost_usd=9.0
    )
    found = await store(storage).claim_answer(KEY, upload_id=other.id, attempt=other.attempts)
    assert isinstance(found, StoredAnswer)
    assert (found.drafts, found.cost_usd) == (CARDS, 0.25)


async def test_the_store_says_what_it_holds_and_forgets_by_age_and_model(
    storage: Storage, clock: FakeClock
) -> None:
    answers = store(storage)
    assert (await answers.answer_stats()).answers == 0
    await answered_run(storage, "a" * 64)
    clock.advance(86_400)
    await answered_run(storage, "b" * 64)
    stats = await answers.answer_stats()
    assert (stats.answers, dict(stats.models)) == (2, {"m": 2})
    assert stats.size > 0
    assert stats.oldest is not None
    assert stats.newest is not None
    assert stats.newest - stats.oldest == timedelta(days=1)
    assert await answers.forget_answers(model="another model") == 0
    cutoff = datetime.fromtimestamp(clock.now - 3600, UTC)
    assert await answers.forget_answers(before=cutoff) == 1
    assert (await answers.answer_stats()).answers == 1
    assert await answers.forget_answers(model="m") == 1
    assert (await answers.answer_stats()).answers == 0
    for run in await storage.list_runs():  # the cards made from them stay
        await check_invariants(storage, run.id)
        assert (await storage.get_run(run.id)).total_cards == 2


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])  # a MemoryStorage dies with us
async def test_answers_outlive_the_connection(kind: str, tmp_path: Path, clock: FakeClock) -> None:
    if kind == "postgres":
        pg.require()
    backend = make_backend(kind, tmp_path, clock)
    try:
        await reopened(backend)
    finally:
        if kind == "postgres":
            pg.drop_schema(backend.schema)


async def reopened(backend: Backend) -> None:
    async with backend.open() as storage:
        await answered_run(storage)
    async with backend.open() as storage:
        run = await storage.create_run([Document("again.md", b"# Tides\n")])
        upload = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
        assert upload is not None
        found = await store(storage).claim_answer(KEY, upload_id=upload.id, attempt=1)
        assert isinstance(found, StoredAnswer)
        assert found.drafts == CARDS


@pytest.mark.parametrize("key", ["", "x" * 201, "tab\there", 7])
async def test_a_bad_key_is_refused(storage: Storage, key: object) -> None:
    with pytest.raises(InputError, match="answer key"):
        await store(storage).claim_answer(key, upload_id="u", attempt=1)  # type: ignore[arg-type]


async def test_a_key_asked_for_in_a_provider_batch_makes_nobody_wait(storage: Storage) -> None:
    """A batch may take a day to answer: another upload of the same content asks itself."""
    run = await storage.create_run([Document("a.md", b"same"), Document("b.md", b"same")])
    a, b = await storage.list_uploads(run.id)
    made = await storage.create_batch(run.id, [a.id], lease_seconds=3600)
    assert made is not None
    _, (item,) = made
    answers = store(storage)
    assert await answers.claim_answer(KEY, upload_id=a.id, attempt=item.attempt) is None
    claimed = await storage.claim_upload(run.id, worker="w", lease_seconds=30)
    assert claimed is not None
    assert claimed.id == b.id
    assert await answers.claim_answer(KEY, upload_id=b.id, attempt=claimed.attempts) is None
