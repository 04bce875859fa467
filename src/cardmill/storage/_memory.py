"""MemoryStorage: the whole storage protocol in a few dicts, for tests and short jobs."""

from __future__ import annotations

import heapq
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import partial
from types import TracebackType
from typing import Any, Final, Self, TypeVar, final

import attrs
import trio

from .._recipe import STUDY_CARDS, Recipe
from ..errors import BatchNotFound, InputError, RunNotFound, UnstorableData, UploadNotFound
from ..model import (
    BATCH_HOLDER_PREFIX,
    AnswerAsked,
    AnswerStats,
    Batch,
    BatchCounts,
    BatchItem,
    BatchState,
    Card,
    CardDraft,
    CardPage,
    Document,
    Run,
    RunStatus,
    StoredAnswer,
    Upload,
    UploadStatus,
    Usage,
    final_status,
)
from ._answers import drafts_json
from ._base import (
    NANOS_PER_USD,
    SUBMITTED_FROM,
    Spent,
    add_usage,
    answer_usage,
    card_id,
    check_against,
    check_answer_key,
    check_answer_keys,
    check_batch_update,
    check_creator,
    check_drafts,
    check_expected_state,
    check_lease,
    check_names,
    check_provider_batch_id,
    check_recipe,
    check_spend,
    check_upload_ids,
    check_wanted_uploads,
    holds,
    new_id,
    one_line,
    run_name,
    to_datetime,
    to_usd,
)
from ._pages import Pages
from ._search import CardFilter, collect, decode_cursor

__all__ = ["MemoryStorage"]

T = TypeVar("T")
_NOTHING: Final = Spent()


@final
class MemoryStorage:
    """Storage in process memory. Every method is atomic: none awaits after it looks.

    Args:
        clock: wall-clock seconds for leases and timestamps (injectable for tests).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._runs: dict[str, Run] = {}
        self._uploads: dict[str, Upload] = {}
        self._by_run: dict[str, list[str]] = {}
        self._documents: dict[str, Document] = {}
        self._cards: dict[str, tuple[Card, ...]] = {}
        self._recipes: dict[str, Recipe] = {}
        self._leases: dict[str, float] = {}
        # Per run: PENDING uploads as a heap of (position, id), LOADING ones as a dict.
        self._pending: dict[str, list[tuple[int, str]]] = {}
        self._loading: dict[str, dict[str, None]] = {}
        self._batches: dict[str, Batch] = {}
        self._batch_items: dict[str, tuple[BatchItem, ...]] = {}
        self._run_batches: dict[str, list[str]] = {}
        self._answers: dict[str, tuple[StoredAnswer, int]] = {}  # and its size in bytes
        self._asking: dict[str, tuple[str, int]] = {}  # key -> the claim asking for it

    async def __aenter__(self) -> Self:
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release; a checkpoint, like every other method."""
        await trio.lowlevel.checkpoint()

    def _run(self, run_id: str) -> Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFound(run_id) from None

    def _upload(self, upload_id: str) -> Upload:
        try:
            return self._uploads[upload_id]
        except KeyError:
            raise UploadNotFound(upload_id) from None

    def _now(self) -> float:
        return self._clock()

    def _stamp(self) -> datetime:
        return datetime.fromtimestamp(self._now(), UTC)

    async def create_run(
        self,
        documents: Iterable[Document],
        *,
        name: str | None = None,
        recipe: Recipe = STUDY_CARDS,
        provider: str = "",
        model: str = "",
    ) -> Run:
        await trio.lowlevel.checkpoint()
        check_recipe(recipe)
        check_names(provider, model)
        docs = list(documents)
        for i, doc in enumerate(docs):
            if not isinstance(doc, Document):
                raise InputError(f"documents[{i}] is a {type(doc).__name__}, not a Document")
        run_id = new_id("run")
        now = to_datetime(self._now())
        assert now is not None
        run = Run(
            run_id,
            run_name(name, run_id),
            total_items=len(docs),
            created_at=now,
            recipe_name=recipe.name,
            recipe_digest=recipe.digest,
            provider=provider,
            model=model,
        )
        ids: list[str] = []
        for position, doc in enumerate(docs):
            upload_id = new_id("up")
            self._uploads[upload_id] = Upload(
                upload_id,
                run_id,
                doc.name,
                doc.media_type,
                doc.size,
                doc.sha256,
                position=position,
            )
            self._documents[upload_id] = doc
            ids.append(upload_id)
        self._by_run[run_id] = ids
        self._pending[run_id] = [(position, upload_id) for position, upload_id in enumerate(ids)]
        self._loading[run_id] = {}
        self._recipes[run_id] = recipe
        self._runs[run_id] = run
        return run

    async def get_recipe(self, run_id: str) -> Recipe:
        await trio.lowlevel.checkpoint()
        self._run(run_id)
        return self._recipes[run_id]

    async def get_run(self, run_id: str) -> Run:
        await trio.lowlevel.checkpoint()
        return self._run(run_id)

    async def list_runs(self) -> list[Run]:
        await trio.lowlevel.checkpoint()
        return list(self._runs.values())

    async def list_uploads(self, run_id: str, status: UploadStatus | None = None) -> list[Upload]:
        await trio.lowlevel.checkpoint()
        self._run(run_id)
        uploads = (self._uploads[i] for i in self._by_run[run_id])
        return [u for u in uploads if status is None or u.status == status]

    async def list_cards(self, run_id: str, upload_id: str | None = None) -> list[Card]:
        await trio.lowlevel.checkpoint()
        self._run(run_id)
        if upload_id is not None:
            if self._upload(upload_id).run_id != run_id:
                return []
            return list(self._cards.get(upload_id, ()))
        return [c for i in self._by_run[run_id] for c in self._cards.get(i, ())]

    async def get_uploads(self, run_id: str, upload_ids: Sequence[str]) -> list[Upload]:
        wanted = check_wanted_uploads(upload_ids)
        await trio.lowlevel.checkpoint()
        self._run(run_id)
        found = [self._uploads[i] for i in wanted if i in self._uploads]
        return sorted((u for u in found if u.run_id == run_id), key=lambda u: u.position)

    def iter_uploads(self, run_id: str, *, batch: int = 1000) -> AsyncIterator[Upload]:
        return Pages(partial(self._page, self._upload_page, run_id), start=-1, batch=batch)

    def iter_cards(
        self, run_id: str, *, upload_id: str | None = None, batch: int = 1000
    ) -> AsyncIterator[Card]:
        # Pages resume from an (upload position, ordinal) cursor, as the SQL backends'
        # do, so what a caller sees while uploads complete is the same on every backend.
        fetch = partial(self._page, self._card_page, run_id, upload_id)
        return Pages(fetch, start=(-1, -1), batch=batch)

    async def _page(self, fn: Callable[..., T], *args: Any) -> T:
        await trio.lowlevel.checkpoint()
        return fn(*args)

    def _upload_page(self, run_id: str, after: int, limit: int) -> list[tuple[int, Upload]]:
        self._run(run_id)
        # An upload's position is its index in the run's list.
        ids = self._by_run[run_id][after + 1 : after + 1 + limit]
        return [(self._uploads[i].position, self._uploads[i]) for i in ids]

    def _card_page(
        self, run_id: str, upload_id: str | None, after: tuple[int, int], limit: int
    ) -> list[tuple[tuple[int, int], Card]]:
        self._run(run_id)
        ids = self._by_run[run_id]
        chosen: Iterator[str]
        if upload_id is None:
            # An upload's position is its index in the run's list: start at the cursor.
            chosen = (ids[i] for i in range(max(after[0], 0), len(ids)))
        else:
            u = self._uploads.get(upload_id)
            chosen = iter([upload_id] if u is not None and u.run_id == run_id else [])
        page: list[tuple[tuple[int, int], Card]] = []
        for each in chosen:
            position = self._uploads[each].position
            for card in self._cards.get(each, ()):
                key = (position, card.ordinal)
                if key > after:
                    page.append((key, card))
                    if len(page) == limit:
                        return page
        return page

    async def search_cards(
        self,
        run_id: str,
        *,
        text: str | None = None,
        upload_id: str | None = None,
        tag: str | None = None,
        field: tuple[str, str] | None = None,
        after: str | None = None,
        limit: int = 50,
    ) -> CardPage:
        flt = CardFilter.make(text=text, upload_id=upload_id, tag=tag, field=field, limit=limit)
        start = decode_cursor(after)
        await trio.lowlevel.checkpoint()
        self._run(run_id)
        flt.check_recipe(self._recipes[run_id])
        fetch = partial(self._card_page, run_id, flt.upload_id)
        return collect(fetch, flt, start, limit)

    async def load_document(self, upload_id: str) -> Document:
        await trio.lowlevel.checkpoint()
        self._upload(upload_id)
        return self._documents[upload_id]

    async def claim_upload(
        self, run_id: str, *, worker: str, lease_seconds: float
    ) -> Upload | None:
        await trio.lowlevel.checkpoint()
        check_lease(lease_seconds)
        return self._claim(run_id, worker, lease_seconds)

    def _claim(self, run_id: str, worker: str, lease_seconds: float) -> Upload | None:
        run = self._run(run_id)
        now = self._now()
        chosen: Upload | None = None
        pending = self._pending[run_id]
        while pending and chosen is None:
            _, upload_id = heapq.heappop(pending)
            if self._uploads[upload_id].status == UploadStatus.PENDING:
                chosen = self._uploads[upload_id]
        if chosen is None:
            expired = [i for i in self._loading[run_id] if self._leases[i] <= now]
            if expired:
                chosen = min((self._uploads[i] for i in expired), key=lambda u: u.position)
        if chosen is None:
            return None
        expires = now + lease_seconds
        self._leases[chosen.id] = expires
        self._loading[run_id][chosen.id] = None
        claimed = attrs.evolve(
            chosen,
            status=UploadStatus.LOADING,
            attempts=chosen.attempts + 1,
            worker=worker,
            lease_expires_at=to_datetime(expires),
            started_at=chosen.started_at or to_datetime(now),
        )
        self._uploads[chosen.id] = claimed
        if run.status != RunStatus.RUNNING:
            self._runs[run_id] = attrs.evolve(
                run,
                status=RunStatus.RUNNING,
                started_at=run.started_at or to_datetime(now),
                finished_at=None,
            )
        return claimed

    def _holds(self, u: Upload, worker: str | None, attempt: int | None) -> bool:
        return holds(u.status, u.worker, u.attempts, worker, attempt)

    async def renew_lease(
        self, upload_id: str, *, worker: str, lease_seconds: float, attempt: int | None = None
    ) -> bool:
        await trio.lowlevel.checkpoint()
        check_lease(lease_seconds)
        u = self._upload(upload_id)
        if not self._holds(u, worker, attempt):
            return False
        expires = self._now() + lease_seconds
        self._leases[upload_id] = expires
        self._uploads[upload_id] = attrs.evolve(u, lease_expires_at=to_datetime(expires))
        return True

    async def complete_upload(
        self,
        upload_id: str,
        drafts: Sequence[CardDraft],
        *,
        worker: str | None = None,
        attempt: int | None = None,
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        requests: int = 0,
        rate_limited: int = 0,
    ) -> bool:
        await trio.lowlevel.checkpoint()
        spent = check_spend(usage, cost_usd, requests, rate_limited)
        return self._complete(upload_id, check_drafts(drafts), worker, attempt, spent)

    def _spend(self, upload_id: str, spent: Spent) -> None:
        """Add to the upload's and its run's usage, cost, requests and 429s (the caller
        changed it).

        Costs add up in whole nano-dollars, as the SQL backends store them, so every
        backend reports the same ``cost_usd`` for the same calls.
        """
        if spent.nothing:
            return
        u = self._uploads[upload_id]
        self._uploads[upload_id] = _added(u, spent)
        self._runs[u.run_id] = _added(self._runs[u.run_id], spent)

    def _complete(
        self,
        upload_id: str,
        checked: tuple[CardDraft, ...],
        worker: str | None,
        attempt: int | None,
        spent: Spent = _NOTHING,
    ) -> bool:
        u = self._upload(upload_id)
        if u.status.terminal or not self._holds(u, worker, attempt):
            return False
        try:
            check_against(self._recipes[u.run_id], checked)
        except UnstorableData as exc:
            raise UnstorableData(f"upload {upload_id}: {exc}") from None
        now = to_datetime(self._now())
        assert now is not None
        self._cards[upload_id] = tuple(
            Card(
                card_id(upload_id, i),
                u.run_id,
                upload_id,
                i,
                d.title,
                d.body,
                d.tags,
                d.quote,
                created_at=now,
                fields=d.fields,
            )
            for i, d in enumerate(checked)
        )
        self._finish_upload(u, UploadStatus.COMPLETED, now, card_count=len(checked))
        run = self._runs[u.run_id]
        self._runs[u.run_id] = attrs.evolve(
            run,
            completed_items=run.completed_items + 1,
            total_cards=run.total_cards + len(checked),
        )
        self._spend(upload_id, spent)
        return True

    def _finish_upload(
        self,
        u: Upload,
        status: UploadStatus,
        now: datetime | None,
        *,
        card_count: int = 0,
        error: str | None = None,
    ) -> None:
        self._leases.pop(u.id, None)
        self._loading[u.run_id].pop(u.id, None)
        self._uploads[u.id] = attrs.evolve(
            u,
            status=status,
            finished_at=now,
            started_at=u.started_at or now,
            worker=None,
            lease_expires_at=None,
            card_count=card_count,
            error=error,
        )

    async def complete_and_claim(
        self,
        upload_id: str,
        drafts: Sequence[CardDraft],
        *,
        worker: str,
        attempt: int | None = None,
        run_id: str,
        lease_seconds: float,
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        requests: int = 0,
        rate_limited: int = 0,
    ) -> tuple[bool, Upload | None]:
        """`complete_upload`, then `claim_upload` (atomic: nothing awaits
        between them)."""
        await trio.lowlevel.checkpoint()
        check_lease(lease_seconds)
        spent = check_spend(usage, cost_usd, requests, rate_limited)
        checked = check_drafts(drafts)
        completed = self._complete(upload_id, checked, worker, attempt, spent)
        return completed, self._claim(run_id, worker, lease_seconds)

    async def fail_upload(
        self,
        upload_id: str,
        error: str,
        *,
        worker: str | None = None,
        attempt: int | None = None,
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        requests: int = 0,
        rate_limited: int = 0,
    ) -> bool:
        await trio.lowlevel.checkpoint()
        spent = check_spend(usage, cost_usd, requests, rate_limited)
        u = self._upload(upload_id)
        if u.status.terminal or not self._holds(u, worker, attempt):
            return False
        self._finish_upload(u, UploadStatus.FAILED, to_datetime(self._now()), error=one_line(error))
        self._forget_asking(upload_id)
        run = self._runs[u.run_id]
        self._runs[u.run_id] = attrs.evolve(run, failed_items=run.failed_items + 1)
        self._spend(upload_id, spent)
        return True

    async def release_upload(
        self,
        upload_id: str,
        *,
        worker: str | None = None,
        attempt: int | None = None,
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        requests: int = 0,
        rate_limited: int = 0,
    ) -> bool:
        await trio.lowlevel.checkpoint()
        spent = check_spend(usage, cost_usd, requests, rate_limited)
        u = self._upload(upload_id)
        if u.status != UploadStatus.LOADING or not self._holds(u, worker, attempt):
            return False
        self._release(u)
        self._forget_asking(upload_id)
        self._spend(upload_id, spent)
        return True

    def _release(self, u: Upload) -> None:
        upload_id = u.id
        self._leases.pop(upload_id, None)
        self._loading[u.run_id].pop(upload_id, None)
        heapq.heappush(self._pending[u.run_id], (u.position, upload_id))
        self._uploads[upload_id] = attrs.evolve(
            u, status=UploadStatus.PENDING, worker=None, lease_expires_at=None
        )

    async def finish_run(self, run_id: str) -> Run:
        await trio.lowlevel.checkpoint()
        run = self._run(run_id)
        now = self._now()
        status = final_status(run.total_items, run.completed_items, run.failed_items)
        if status == RunStatus.CANCELLED and any(
            self._leases[i] > now for i in self._loading[run_id]
        ):
            status = RunStatus.RUNNING
        finished = to_datetime(now) if status.finished else None
        run = attrs.evolve(run, status=status, finished_at=finished)
        self._runs[run_id] = run
        return run

    # -- provider batches ------------------------------------------------------------

    def _batch(self, batch_id: str) -> Batch:
        try:
            return self._batches[batch_id]
        except KeyError:
            raise BatchNotFound(batch_id) from None

    async def create_batch(
        self,
        run_id: str,
        upload_ids: Sequence[str],
        *,
        lease_seconds: float,
        creator: str | None = None,
    ) -> tuple[Batch, tuple[BatchItem, ...]] | None:
        await trio.lowlevel.checkpoint()
        check_lease(lease_seconds)
        check_creator(creator)
        wanted = check_upload_ids(upload_ids)
        run = self._run(run_id)
        now = self._now()
        batch_id = new_id("batch")
        holder = Batch(batch_id, run_id).holder
        taken: list[Upload] = []
        seen: set[str] = set()
        for upload_id in wanted:
            u = self._uploads.get(upload_id)
            if u is None or u.run_id != run_id or upload_id in seen:
                continue
            free = u.status == UploadStatus.PENDING or (
                u.status == UploadStatus.LOADING and self._leases[upload_id] <= now
            )
            if free:
                seen.add(upload_id)
                taken.append(u)
        if not taken:
            return None
        expires = now + lease_seconds
        items: list[BatchItem] = []
        for u in taken:
            self._leases[u.id] = expires
            self._loading[run_id][u.id] = None
            self._uploads[u.id] = attrs.evolve(
                u,
                status=UploadStatus.LOADING,
                attempts=u.attempts + 1,
                worker=holder,
                lease_expires_at=to_datetime(expires),
                started_at=u.started_at or to_datetime(now),
            )
            items.append(BatchItem(batch_id, u.id, u.id, u.attempts + 1))
        when = to_datetime(now)
        assert when is not None
        batch = Batch(
            batch_id,
            run_id,
            size=len(items),
            created_at=when,
            updated_at=when,
            creator=creator,
        )
        self._batches[batch_id] = batch
        self._batch_items[batch_id] = tuple(items)
        self._run_batches.setdefault(run_id, []).append(batch_id)
        if run.status != RunStatus.RUNNING:
            self._runs[run_id] = attrs.evolve(
                run, status=RunStatus.RUNNING, started_at=run.started_at or when, finished_at=None
            )
        return batch, tuple(items)

    async def set_batch_submitted(self, batch_id: str, provider_batch_id: str) -> Batch:
        await trio.lowlevel.checkpoint()
        check_provider_batch_id(provider_batch_id)
        batch = self._batch(batch_id)
        if batch.provider_batch_id == provider_batch_id:
            return batch
        if batch.provider_batch_id is not None or batch.state not in SUBMITTED_FROM:
            raise InputError(
                f"batch {batch_id} is {batch.state} with provider id {batch.provider_batch_id!r}"
            )
        for other in self._batches.values():
            if other.provider_batch_id == provider_batch_id:
                raise InputError(
                    f"provider batch {provider_batch_id!r} is already batch {other.id}"
                )
        batch = attrs.evolve(
            batch,
            state=BatchState.LIVE if batch.state == BatchState.SUBMITTING else batch.state,
            provider_batch_id=provider_batch_id,
            updated_at=self._stamp(),
        )
        self._batches[batch_id] = batch
        return batch

    async def update_batch(
        self,
        batch_id: str,
        *,
        state: BatchState | None = None,
        counts: BatchCounts | None = None,
        expect: BatchState | None = None,
    ) -> Batch:
        await trio.lowlevel.checkpoint()
        state = check_batch_update(state, counts)
        expect = check_expected_state(expect)
        batch = self._batch(batch_id)
        if not batch.state.open or (expect is not None and batch.state != expect):
            return batch
        held = [
            self._uploads[i.upload_id]
            for i in self._batch_items[batch_id]
            if self._uploads[i.upload_id].status == UploadStatus.LOADING
            and self._uploads[i.upload_id].worker == batch.holder
        ]
        if state == BatchState.DONE and held:
            raise InputError(f"batch {batch_id} still holds {len(held)} uploads")
        if state == BatchState.ABANDONED:
            for u in held:
                self._release(u)
        batch = attrs.evolve(
            batch,
            state=batch.state if state is None else state,
            counts=batch.counts if counts is None else counts,
            updated_at=self._stamp(),
        )
        self._batches[batch_id] = batch
        return batch

    async def get_batch(self, batch_id: str) -> Batch:
        await trio.lowlevel.checkpoint()
        return self._batch(batch_id)

    async def list_batches(self, run_id: str, *, open_only: bool = False) -> list[Batch]:
        await trio.lowlevel.checkpoint()
        self._run(run_id)
        batches = (self._batches[i] for i in self._run_batches.get(run_id, ()))
        return [b for b in batches if not open_only or b.state.open]

    async def batch_items(self, batch_id: str) -> list[BatchItem]:
        await trio.lowlevel.checkpoint()
        self._batch(batch_id)
        return list(self._batch_items[batch_id])

    # -- answers kept for reuse --------------------------------------------------------

    def _forget_asking(self, upload_id: str) -> None:
        for key, (holder, _) in list(self._asking.items()):
            if holder == upload_id:
                del self._asking[key]

    def _live(self, upload_id: str, attempt: int) -> bool:
        u = self._uploads.get(upload_id)
        return (
            u is not None
            and u.status == UploadStatus.LOADING
            and u.attempts == attempt
            and self._leases.get(upload_id, 0.0) > self._now()
            # A provider batch's claim may take a day to answer: not waited for.
            and not (u.worker or "").startswith(BATCH_HOLDER_PREFIX)
        )

    async def claim_answer(
        self, key: str, *, upload_id: str, attempt: int
    ) -> StoredAnswer | AnswerAsked | None:
        await trio.lowlevel.checkpoint()
        check_answer_key(key)
        if key in self._answers:
            answer, size = self._answers[key]
            answer = attrs.evolve(answer, used_at=self._stamp())
            self._answers[key] = answer, size
            return answer
        holder = self._asking.get(key)
        if holder is not None and holder[0] != upload_id and self._live(*holder):
            return AnswerAsked(holder[0])
        self._asking[key] = (upload_id, attempt)
        return None

    async def find_answers(self, keys: Sequence[str]) -> dict[str, StoredAnswer]:
        await trio.lowlevel.checkpoint()
        wanted = check_answer_keys(keys)
        return {key: self._answers[key][0] for key in wanted if key in self._answers}

    async def store_answer(
        self,
        key: str,
        drafts: Sequence[CardDraft],
        *,
        upload_id: str,
        provider: str = "",
        model: str = "",
        usage: Usage | None = None,
        cost_usd: float = 0.0,
    ) -> None:
        await trio.lowlevel.checkpoint()
        check_answer_key(key)
        check_names(provider, model)
        spent = check_spend(usage, cost_usd)
        checked = check_drafts(drafts)
        u = self._upload(upload_id)
        self._uploads[upload_id] = attrs.evolve(u, answer_key=key)
        self._asking.pop(key, None)
        if key in self._answers:
            return  # the first answer kept stays
        now = self._stamp()
        self._answers[key] = (
            StoredAnswer(
                key,
                checked,
                provider,
                model,
                answer_usage(spent.usage),
                to_usd(spent.nanos),
                now,
                now,
            ),
            len(drafts_json(checked).encode()),
        )

    async def complete_from_answer(
        self,
        upload_id: str,
        answer: StoredAnswer,
        *,
        worker: str | None = None,
        attempt: int | None = None,
    ) -> bool:
        await trio.lowlevel.checkpoint()
        check_answer_key(answer.key)
        if not self._complete(upload_id, check_drafts(answer.drafts), worker, attempt):
            return False
        saved = round(answer.cost_usd * NANOS_PER_USD)
        u = self._uploads[upload_id]
        self._uploads[upload_id] = attrs.evolve(
            u,
            answer_key=answer.key,
            reused=True,
            saved_tokens=answer.tokens,
            saved_cost_usd=to_usd(saved),
        )
        run = self._runs[u.run_id]
        self._runs[u.run_id] = attrs.evolve(
            run,
            reused_items=run.reused_items + 1,
            saved_tokens=run.saved_tokens + answer.tokens,
            saved_cost_usd=_add_nanos(run.saved_cost_usd, saved),
        )
        if answer.key in self._answers:
            kept, size = self._answers[answer.key]
            self._answers[answer.key] = attrs.evolve(kept, used_at=self._stamp()), size
        return True

    async def answer_stats(self) -> AnswerStats:
        await trio.lowlevel.checkpoint()
        kept = [answer for answer, _ in self._answers.values()]
        models: dict[str, int] = {}
        for answer in kept:
            models[answer.model] = models.get(answer.model, 0) + 1
        return AnswerStats(
            len(kept),
            sum(size for _, size in self._answers.values()),
            min((a.created_at for a in kept), default=None),
            max((a.created_at for a in kept), default=None),
            dict(sorted(models.items())),
        )

    async def forget_answers(
        self, *, before: datetime | None = None, model: str | None = None
    ) -> int:
        await trio.lowlevel.checkpoint()
        gone = [
            key
            for key, (answer, _) in self._answers.items()
            if (before is None or answer.used_at < before)
            and (model is None or answer.model == model)
        ]
        for key in gone:
            del self._answers[key]
        for key, holder in list(self._asking.items()):
            if not self._live(*holder):
                del self._asking[key]
        return len(gone)


def _add_nanos(cost_usd: float, nanos: int) -> float:
    return to_usd(round(cost_usd * NANOS_PER_USD) + nanos)


_Totals = TypeVar("_Totals", Upload, Run)


def _added(totals: _Totals, spent: Spent) -> _Totals:
    """An upload or run with a settlement's usage, cost, requests and 429s added."""
    return attrs.evolve(
        totals,
        usage=add_usage(totals.usage, spent.usage),
        cost_usd=_add_nanos(totals.cost_usd, spent.nanos),
        requests=totals.requests + spent.requests,
        rate_limited=totals.rate_limited + spent.rate_limited,
    )
