"""Property test: random operation sequences against a model, invariants after EVERY step.

Each example draws a sequence of storage operations — claims (some racing in one
nursery), completes (repeated, after fail, two at once for one upload), fails, releases,
lease expiry, finish_run and, for SQLite, closing and reopening the database — and
checks after each step that the backend agrees with a plain model of what must be true
and that the four invariants documented in docs/storage.md hold.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from cardmill import (
    STUDY_CARDS,
    CardDraft,
    Document,
    Field,
    FieldType,
    Recipe,
    RunStatus,
    Storage,
    UploadStatus,
)
from cardmill.testing import check_invariants

from .. import pg
from .conftest import FakeClock, make_backend

WORKERS = ("a", "b")


@attrs.define
class ModelUpload:
    status: UploadStatus = UploadStatus.PENDING
    worker: str | None = None
    expires: float = 0.0
    attempts: int = 0
    cards: int = 0


def holds(u: ModelUpload, worker: str | None, attempt: int | None = None) -> bool:
    if worker is None and attempt is None:
        return True
    return (
        u.status == UploadStatus.LOADING
        and (worker is None or u.worker == worker)
        and (attempt is None or u.attempts == attempt)
    )


def model_claim(model: list[ModelUpload], now: float) -> int | None:
    for i, u in enumerate(model):
        if u.status == UploadStatus.PENDING:
            return i
    for i, u in enumerate(model):
        if u.status == UploadStatus.LOADING and u.expires <= now:
            return i
    return None


def model_settle(u: ModelUpload, worker: str | None, attempt: int | None = None) -> bool:
    return not u.status.terminal and holds(u, worker, attempt)


# A claim token: the upload's attempts as a claim returned them (None: fence by name only).
ATTEMPTS = st.sampled_from([None, 1, 2, 3])

operation = st.one_of(
    st.tuples(st.just("claim"), st.sampled_from(WORKERS), st.sampled_from([0.0, 5.0, 100.0])),
    st.tuples(st.just("race_claims"), st.sampled_from([5.0, 100.0])),
    st.tuples(
        st.just("complete"),
        st.integers(0, 5),
        st.integers(0, 4),
        st.sampled_from([None, *WORKERS]),
        ATTEMPTS,
    ),
    st.tuples(st.just("double_complete"), st.integers(0, 5), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("fail"), st.integers(0, 5), st.sampled_from([None, *WORKERS]), ATTEMPTS),
    st.tuples(st.just("release"), st.integers(0, 5), st.sampled_from([None, *WORKERS]), ATTEMPTS),
    st.tuples(
        st.just("renew"), st.integers(0, 5), st.sampled_from(WORKERS), ATTEMPTS, st.just(50.0)
    ),
    st.tuples(st.just("tick"), st.sampled_from([1.0, 10.0, 200.0])),
    st.tuples(st.just("finish")),
    st.tuples(st.just("reopen")),
)


SCORES = Recipe(
    "scores",
    "Score the document.",
    (
        Field("claim", max_chars=30),
        Field("score", FieldType.INTEGER, minimum=0, maximum=9),
        Field("flag", FieldType.BOOLEAN, required=False),
        Field("names", FieldType.LIST, required=False, max_items=2),
    ),
)
RECIPE: dict[str, Recipe] = {}  # the recipe of the scenario running now


def drafts(n: int, tag: str) -> list[CardDraft]:
    recipe = RECIPE.get("now", STUDY_CARDS)
    if recipe.stores_fields:
        return [
            recipe.draft({"claim": f"{tag} {i}", "score": i % 10, "names": [tag]}) for i in range(n)
        ]
    return [CardDraft(f"{tag} {i}", "body") for i in range(n)]


async def race_claim(
    storage: Storage, run_id: str, worker: str, lease: float, got: dict[str, str | None]
) -> None:
    u = await storage.claim_upload(run_id, worker=worker, lease_seconds=lease)
    got[worker] = None if u is None else u.id


async def race_complete(
    storage: Storage, upload_id: str, n: int, key: int, results: dict[int, bool]
) -> None:
    results[key] = await storage.complete_upload(upload_id, drafts(n, f"d{key}"))


async def check_agrees(storage: Storage, run_id: str, model: list[ModelUpload]) -> None:
    await check_invariants(storage, run_id)
    uploads = await storage.list_uploads(run_id)
    seen = [(u.status, u.attempts, u.card_count) for u in uploads]
    want = [(m.status, m.attempts, m.cards) for m in model]
    assert seen == want
    recipe = await storage.get_recipe(run_id)
    assert recipe == RECIPE.get("now", STUDY_CARDS)
    for card in await storage.list_cards(run_id):
        recipe.check(card.draft)  # the fields come back as they went in


async def scenario(kind: str, directory: Path, n_docs: int, ops: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    backend = make_backend(kind, directory, clock)
    model = [ModelUpload() for _ in range(n_docs)]
    async with backend.open() as first:
        run = await first.create_run(
            (Document(f"doc{i}.txt", f"content {i}".encode()) for i in range(n_docs)),
            recipe=RECIPE.get("now", STUDY_CARDS),
        )
    ids = [u.id for u in await _uploads(backend, run.id)]
    storage_cm = backend.open()
    storage = await storage_cm.__aenter__()
    try:
        for op in ops:
            name = op[0]
            if name == "claim":
                _, worker, lease = op
                u = await storage.claim_upload(run.id, worker=worker, lease_seconds=lease)
                i = model_claim(model, clock.now)
                assert (None if u is None else ids.index(u.id)) == i
                if i is not None:
                    m = model[i]
                    m.status, m.worker = UploadStatus.LOADING, worker
                    m.expires, m.attempts = clock.now + lease, m.attempts + 1
            elif name == "race_claims":
                got: dict[str, str | None] = {}

                async with trio.open_nursery() as nursery:
                    for w in WORKERS:
                        nursery.start_soon(race_claim, storage, run.id, w, op[1], got)
                claimed = [v for v in got.values() if v is not None]
                # With a positive lease, two racing claims never share an upload.
                assert len(claimed) == len(set(claimed))
                for w, upload_id in got.items():
                    if upload_id is not None:
                        m = model[ids.index(upload_id)]
                        m.status, m.worker = UploadStatus.LOADING, w
                        m.expires, m.attempts = clock.now + op[1], m.attempts + 1
            elif name == "complete":
                _, idx, n, worker, attempt = op
                i = idx % n_docs
                expected = model_settle(model[i], worker, attempt)
                changed = await storage.complete_upload(
                    ids[i], drafts(n, "c"), worker=worker, attempt=attempt
                )
                assert changed == expected
                if changed:
                    model[i] = ModelUpload(UploadStatus.COMPLETED, None, 0, model[i].attempts, n)
            elif name == "double_complete":
                _, idx, n1, n2 = op
                i = idx % n_docs
                expected = model_settle(model[i], None)
                results: dict[int, bool] = {}
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(race_complete, storage, ids[i], n1, 1, results)
                    nursery.start_soon(race_complete, storage, ids[i], n2, 2, results)
                assert sum(results.values()) == (1 if expected else 0)
                if expected:
                    winner = n1 if results[1] else n2
                    cards = await storage.list_cards(run.id, ids[i])
                    # Exactly one set of cards, all from the same call.
                    assert len({c.title.split()[0] for c in cards}) <= 1
                    model[i] = ModelUpload(
                        UploadStatus.COMPLETED, None, 0, model[i].attempts, winner
                    )
            elif name == "fail":
                _, idx, worker, attempt = op
                i = idx % n_docs
                expected = model_settle(model[i], worker, attempt)
                changed = await storage.fail_upload(ids[i], "boom", worker=worker, attempt=attempt)
                assert changed == expected
                if expected:
                    model[i] = ModelUpload(UploadStatus.FAILED, None, 0, model[i].attempts, 0)
            elif name == "release":
                _, idx, worker, attempt = op
                i = idx % n_docs
                m = model[i]
                expected = m.status == UploadStatus.LOADING and holds(m, worker, attempt)
                changed = await storage.release_upload(ids[i], worker=worker, attempt=attempt)
                assert changed == expected
                if expected:
                    m.status, m.worker = UploadStatus.PENDING, None
            elif name == "renew":
                _, idx, worker, attempt, lease = op
                i = idx % n_docs
                m = model[i]
                expected = holds(m, worker, attempt)
                renewed = await storage.renew_lease(
                    ids[i], worker=worker, lease_seconds=lease, attempt=attempt
                )
                assert renewed == expected
                if expected:
                    m.expires = clock.now + lease
            elif name == "tick":
                clock.advance(op[1])
            elif name == "finish":
                finished = await storage.finish_run(run.id)
                done = sum(m.status.terminal for m in model)
                if done == n_docs:
                    assert finished.status.finished
                else:
                    live = any(
                        m.status == UploadStatus.LOADING and m.expires > clock.now for m in model
                    )
                    want = RunStatus.RUNNING if live else RunStatus.CANCELLED
                    assert finished.status == want
            elif name == "reopen":
                await storage_cm.__aexit__(None, None, None)
                storage_cm = backend.open()
                storage = await storage_cm.__aenter__()
            await check_agrees(storage, run.id, model)
    finally:
        await storage_cm.__aexit__(None, None, None)
        if kind == "postgres":
            await trio.to_thread.run_sync(pg.drop_schema, backend.schema)


async def _uploads(backend: Any, run_id: str) -> list[Any]:
    async with backend.open() as storage:
        return list(await storage.list_uploads(run_id))


@pytest.mark.parametrize("kind", ["memory", "sqlite", "postgres"])
def test_invariants_hold_after_every_step(kind: str) -> None:
    if kind == "postgres":
        pg.require()
    check_sequences(kind)


@given(
    n_docs=st.integers(1, 5),
    ops=st.lists(operation, min_size=1, max_size=30),
    recipe=st.sampled_from([STUDY_CARDS, SCORES]),
)
def _sequences(kind: str, n_docs: int, ops: list[tuple[Any, ...]], recipe: Recipe) -> None:
    RECIPE["now"] = recipe
    try:
        with tempfile.TemporaryDirectory() as directory:
            trio.run(scenario, kind, Path(directory), n_docs, ops)
    finally:
        RECIPE.clear()


def check_sequences(kind: str) -> None:
    _sequences(kind)
