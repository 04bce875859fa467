"""The Storage protocol's methods, once, for every backend built on storage/_transactions.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Final, Self, TypeVar

import trio

from .._recipe import STUDY_CARDS, Recipe
from ..errors import StorageError, UnstorableData
from ..model import (
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
    StoredAnswer,
    Upload,
    UploadStatus,
    Usage,
)
from . import _answers as answers
from . import _batches as batches
from . import _ingest as ingest
from . import _transactions as sql
from ._base import (
    answer_usage,
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
    new_id,
    one_line,
    run_name,
)
from ._pages import Pages
from ._search import CardFilter, decode_cursor
from ._searchtx import search_page
from ._stop import stoppable

__all__ = ["SQLBackend"]

T = TypeVar("T")
_PREFETCH_LIMIT: Final = 256


class SQLBackend:
    """Implements `Storage` with the shared transactions.

    A backend sets ``_clock`` and ``_prefetched`` and provides ``_call``: run one
    transaction function (``write`` says whether it writes) on a worker thread.
    """

    _clock: Callable[[], float]
    _prefetched: dict[str, Document]
    # How much one ingest transaction writes (see _ingest.py).
    _chunk_rows: int = ingest.CHUNK_ROWS
    _chunk_bytes: int = ingest.CHUNK_BYTES

    async def _call(self, fn: Callable[..., T], *args: Any, write: bool = False) -> T:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close the database (a checkpoint even when already closed)."""
        raise NotImplementedError

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

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._call(fn, *args, write=True)

    async def _settle(self, upload_id: str, fn: Callable[..., T], *args: Any) -> T:
        """A write that settles one upload; a value the backend refuses names the upload."""
        try:
            return await self._write(fn, upload_id, *args)
        except UnstorableData as exc:
            raise UnstorableData(f"upload {upload_id}: {exc}") from exc.__cause__

    async def create_run(
        self,
        documents: Iterable[Document],
        *,
        name: str | None = None,
        recipe: Recipe = STUDY_CARDS,
        provider: str = "",
        model: str = "",
    ) -> Run:
        check_recipe(recipe)
        check_names(provider, model)
        await trio.lowlevel.checkpoint_if_cancelled()
        run_id = new_id("run")
        chunks = ingest.Chunks(documents, rows=self._chunk_rows, size=self._chunk_bytes)
        now = self._clock()
        first, last = True, False
        try:
            while not last:
                # Off the event loop and outside any transaction: the documents may be a
                # generator that reads files. Abandoned on cancel: nothing else uses it.
                rows, last = await trio.to_thread.run_sync(chunks.read, abandon_on_cancel=True)
                await self._write(
                    ingest.add_uploads,
                    run_id,
                    run_name(name, run_id),
                    rows,
                    first,
                    last,
                    now,
                    recipe,
                    provider,
                    model,
                )
                first = False
        except BaseException:
            # What was written of the run is invisible; delete it, a chunk at a time.
            with trio.CancelScope(shield=True), contextlib.suppress(StorageError):
                while await self._write(ingest.discard_some, run_id, self._chunk_rows):
                    pass
            raise
        return await self.get_run(run_id)

    async def get_run(self, run_id: str) -> Run:
        return await self._call(sql.get_run, run_id)

    async def list_runs(self) -> list[Run]:
        return await self._call(sql.list_runs)

    async def get_recipe(self, run_id: str) -> Recipe:
        return await self._call(sql.get_recipe, run_id)

    async def list_uploads(self, run_id: str, status: UploadStatus | None = None) -> list[Upload]:
        return await self._call(sql.list_uploads, run_id, status)

    async def list_cards(self, run_id: str, upload_id: str | None = None) -> list[Card]:
        return await self._call(sql.list_cards, run_id, upload_id)

    async def get_uploads(self, run_id: str, upload_ids: Sequence[str]) -> list[Upload]:
        wanted = check_wanted_uploads(upload_ids)
        return await self._call(sql.get_uploads, run_id, wanted)

    def iter_uploads(self, run_id: str, *, batch: int = 1000) -> AsyncIterator[Upload]:
        return Pages(partial(self._call, sql.upload_page, run_id), start=-1, batch=batch)

    def iter_cards(
        self, run_id: str, *, upload_id: str | None = None, batch: int = 1000
    ) -> AsyncIterator[Card]:
        fetch = partial(self._call, sql.card_page, run_id, upload_id)
        return Pages(fetch, start=(-1, -1), batch=batch)

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
        # On a worker thread, and stopped as soon as the caller is cancelled (a client
        # that left the viewer), rather than holding the thread to the end of the read.
        return await stoppable(partial(self._call, search_page, run_id, flt, start, limit))

    async def load_document(self, upload_id: str) -> Document:
        document = self._prefetched.pop(upload_id, None)
        if document is not None:
            await trio.lowlevel.checkpoint()
            return document
        return await self._call(sql.load_document, upload_id)

    async def claim_upload(
        self, run_id: str, *, worker: str, lease_seconds: float
    ) -> Upload | None:
        check_lease(lease_seconds)
        claimed = await self._write(sql.claim, run_id, worker, lease_seconds, self._clock())
        return self._prefetch(claimed)

    def _prefetch(self, claimed: tuple[Upload, Document] | None) -> Upload | None:
        if claimed is None:
            return None
        # Whoever claims an upload reads its document next: it came in the same trip.
        upload, document = claimed
        self._prefetched[upload.id] = document
        while len(self._prefetched) > _PREFETCH_LIMIT:
            self._prefetched.pop(next(iter(self._prefetched)))
        return upload

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
        """`complete_upload`, then `claim_upload`, in one transaction: one
        trip to the database per upload instead of two."""
        checked = check_drafts(drafts)
        check_lease(lease_seconds)
        spent = check_spend(usage, cost_usd, requests, rate_limited)
        completed, claimed = await self._settle(
            upload_id,
            sql.complete_and_claim,
            checked,
            worker,
            attempt,
            run_id,
            lease_seconds,
            self._clock(),
            spent,
        )
        return completed, self._prefetch(claimed)

    async def renew_lease(
        self, upload_id: str, *, worker: str, lease_seconds: float, attempt: int | None = None
    ) -> bool:
        check_lease(lease_seconds)
        return await self._write(
            sql.renew, upload_id, worker, attempt, lease_seconds, self._clock()
        )

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
        checked = check_drafts(drafts)
        spent = check_spend(usage, cost_usd, requests, rate_limited)
        return await self._settle(
            upload_id, sql.complete, checked, worker, attempt, self._clock(), spent
        )

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
        spent = check_spend(usage, cost_usd, requests, rate_limited)
        return await self._settle(
            upload_id, sql.fail, one_line(error), worker, attempt, self._clock(), spent
        )

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
        spent = check_spend(usage, cost_usd, requests, rate_limited)
        return await self._write(sql.release, upload_id, worker, attempt, spent)

    # -- answers kept for reuse --------------------------------------------------------

    async def claim_answer(
        self, key: str, *, upload_id: str, attempt: int
    ) -> StoredAnswer | AnswerAsked | None:
        check_answer_key(key)
        return await self._write(answers.claim_answer, key, upload_id, attempt, self._clock())

    async def find_answers(self, keys: Sequence[str]) -> dict[str, StoredAnswer]:
        return await self._call(answers.find_answers, check_answer_keys(keys))

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
        check_answer_key(key)
        check_names(provider, model)
        spent = check_spend(usage, cost_usd)
        await self._write(
            answers.store_answer,
            key,
            upload_id,
            check_drafts(drafts),
            provider,
            model,
            answer_usage(spent.usage),
            spent.nanos,
            self._clock(),
        )

    async def complete_from_answer(
        self,
        upload_id: str,
        answer: StoredAnswer,
        *,
        worker: str | None = None,
        attempt: int | None = None,
    ) -> bool:
        check_answer_key(answer.key)
        return await self._settle(
            upload_id, answers.complete_reused, answer, worker, attempt, self._clock()
        )

    async def answer_stats(self) -> AnswerStats:
        return await self._call(answers.answer_stats)

    async def forget_answers(
        self, *, before: datetime | None = None, model: str | None = None
    ) -> int:
        return await self._write(answers.forget_answers, before, model, self._clock())

    # -- provider batches ------------------------------------------------------------

    async def create_batch(
        self,
        run_id: str,
        upload_ids: Sequence[str],
        *,
        lease_seconds: float,
        creator: str | None = None,
    ) -> tuple[Batch, tuple[BatchItem, ...]] | None:
        check_lease(lease_seconds)
        check_creator(creator)
        wanted = check_upload_ids(upload_ids)
        return await self._write(
            batches.create_batch,
            run_id,
            wanted,
            new_id("batch"),
            lease_seconds,
            self._clock(),
            creator,
        )

    async def set_batch_submitted(self, batch_id: str, provider_batch_id: str) -> Batch:
        check_provider_batch_id(provider_batch_id)
        return await self._write(
            batches.set_batch_submitted, batch_id, provider_batch_id, self._clock()
        )

    async def update_batch(
        self,
        batch_id: str,
        *,
        state: BatchState | None = None,
        counts: BatchCounts | None = None,
        expect: BatchState | None = None,
    ) -> Batch:
        checked = check_batch_update(state, counts)
        expected = check_expected_state(expect)
        return await self._write(
            batches.update_batch, batch_id, checked, counts, self._clock(), expected
        )

    async def get_batch(self, batch_id: str) -> Batch:
        return await self._call(batches.get_batch, batch_id)

    async def list_batches(self, run_id: str, *, open_only: bool = False) -> list[Batch]:
        return await self._call(batches.list_batches, run_id, bool(open_only))

    async def batch_items(self, batch_id: str) -> list[BatchItem]:
        return await self._call(batches.batch_items, batch_id)

    async def finish_run(self, run_id: str) -> Run:
        return await self._write(sql.finish_run, run_id, self._clock())
