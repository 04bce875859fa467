"""Collecting an ended batch's results: each upload settled, retried or released."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING

import attrs
import trio

from .._cost import Price, PriceTable, cost_of
from ..errors import (
    InputError,
    InvalidOutput,
    Overloaded,
    PermanentError,
    ProviderError,
    RateLimited,
    StorageError,
    TransientError,
    UnstorableData,
)
from ..model import Batch, BatchItem, BatchState, Upload, UploadStatus, Usage
from ..providers import Analysis, BatchProvider, BatchResult
from ..storage import Storage
from ._answers import clean_reason, invalid_cards
from ._answers import reason as reason_of
from ._estimate import Estimates
from ._events import BatchEnded, Event, UploadCompleted, UploadFailed, UploadRetrying
from ._patience import patiently
from ._retry import GiveUp, RetryPolicy, Tries
from ._reuse import Reuse

if TYPE_CHECKING:
    from ._batch import BatchCounters

__all__ = ["Collector"]

log = logging.getLogger("cardmill.engine")


@attrs.define
class _Tally:
    completed: int = 0
    failed: int = 0
    released: int = 0


@attrs.define
class Collector:
    """Settles the results of one run's ended batches; with ``reuse``, keeps each
    answer that completes an upload for reuse."""

    storage: Storage
    provider: BatchProvider
    run_id: str
    price: Price | None
    prices: PriceTable
    retry: RetryPolicy
    counters: BatchCounters
    estimates: Estimates
    rng: random.Random
    emit: Callable[[Event], None]
    reuse: Reuse | None = None

    async def collect(self, batch: Batch, *, archived: bool = False) -> bool:
        """Settle every result of the ended ``batch``, count a failed attempt for each
        request it has none for, and mark it DONE. False when the results could not be
        read just now (what was settled stays settled; a later call settles the rest).
        ``archived``: the provider no longer has the results; none is read."""
        assert batch.provider_batch_id is not None
        items = await self.storage.batch_items(batch.id)
        by_custom_id = {item.custom_id: item for item in items}
        held = {
            u.id: u
            for u in await self.storage.list_uploads(self.run_id, UploadStatus.LOADING)
            if u.worker == batch.holder
        }
        tally = _Tally()
        seen: set[str] = set()
        strangers = 0
        results = _nothing() if archived else self.provider.batch_results(batch.provider_batch_id)
        try:
            async for result in results:
                item = by_custom_id.get(result.custom_id)
                if item is None:
                    strangers += 1  # not ours: never settled
                    continue
                if item.custom_id in seen:
                    continue  # said twice: the first answer counts
                seen.add(item.custom_id)
                upload = held.get(item.upload_id)
                if upload is None or upload.attempts != item.attempt:
                    continue  # settled already (a repeat after a crash)
                await self._settle(batch, item, upload, result, tally)
        except (RateLimited, Overloaded, TransientError) as exc:
            log.warning("could not read the results of batch %s: %s", batch.provider_batch_id, exc)
            return False
        finally:
            # A stream left half read (a crash, Ctrl-C) is closed now, not when collected.
            aclose = getattr(results, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await aclose()
        if strangers:
            log.warning(
                "batch %s: %d results name no request of batch %s; they are ignored",
                batch.provider_batch_id,
                strangers,
                batch.id,
            )
        for item in items:
            upload = held.get(item.upload_id)
            if item.custom_id in seen or upload is None or upload.attempts != item.attempt:
                continue
            # The ended batch gave no result for it: sent again while the retry policy
            # allows (a results file that always leaves it out must not resend it forever).
            missing = TransientError(
                "the provider no longer has this batch's results"
                if archived
                else "the ended batch gave no result for this request"
            )
            await self._failed_request(batch, item, upload, missing, tally, requests=0)
        done = await self.storage.update_batch(batch.id, state=BatchState.DONE)
        self.emit(
            BatchEnded(done, tally.completed, tally.failed, tally.released, trio.current_time())
        )
        return True

    async def _settle(
        self, batch: Batch, item: BatchItem, upload: Upload, result: BatchResult, tally: _Tally
    ) -> None:
        if result.kind == "canceled":
            tally.released += await self._release(batch, item)
            return
        analysis = result.analysis
        if result.kind == "succeeded" and analysis is not None and result.error is None:
            problem = invalid_cards(analysis.cards)
            if problem is None:
                await self._complete(batch, item, upload, analysis, tally)
                return
            error: ProviderError = InvalidOutput(f"provider answered badly: {problem}")
            error.usage = analysis.usage
        elif result.error is not None:
            error = result.error
        elif result.kind == "expired":
            error = TransientError("the batch expired before this request was processed")
            await self._failed_request(batch, item, upload, error, tally, requests=0)
            return
        else:
            error = TransientError(f"no answer in the result ({result.kind!r})")
            await self._failed_request(batch, item, upload, error, tally, requests=0)
            return
        await self._failed_request(batch, item, upload, error, tally, requests=1)

    async def _complete(
        self,
        batch: Batch,
        item: BatchItem,
        upload: Upload,
        analysis: Analysis,
        tally: _Tally,
    ) -> None:
        cards, usage = analysis.cards, analysis.usage
        self.counters.count(usage)
        self.estimates.observe(upload, usage)
        cost = self._cost(usage, analysis.model)
        await self._keep(upload, analysis, cost)
        try:
            completed = await self.storage.complete_upload(
                item.upload_id,
                cards,
                worker=batch.holder,
                attempt=item.attempt,
                usage=usage,
                cost_usd=cost,
                requests=1,
            )
        except UnstorableData as exc:
            await self._fail(batch, item, upload, reason_of(exc), usage, tally, requests=1)
            return
        if completed:
            tally.completed += 1
            self.counters.completed += 1
            self.emit(UploadCompleted(upload, len(cards), item.attempt, trio.current_time()))

    async def _keep(self, upload: Upload, analysis: Analysis, cost: float) -> None:
        """Keep an answer for reuse before its upload is completed: a crash in between
        (or results the provider no longer has when collected again) does not pay for it
        again. A store that cannot keep it costs only the reuse, never the upload."""
        if self.reuse is None:
            return
        try:
            document = await self.storage.load_document(upload.id)
            keep = partial(
                self.reuse.store.store_answer,
                self.reuse.key(document),
                analysis.cards,
                upload_id=upload.id,
                provider=self.provider.name,
                model=analysis.model or self.provider.model,
                usage=analysis.usage,
                cost_usd=cost,
            )
            await patiently(keep, "keep the answer", self.rng)
        except (StorageError, InputError, UnstorableData) as exc:
            log.warning("could not keep the answer for %s for reuse: %s", upload.name, exc)

    async def _failed_request(
        self,
        batch: Batch,
        item: BatchItem,
        upload: Upload,
        error: ProviderError,
        tally: _Tally,
        *,
        requests: int,
    ) -> None:
        """An errored request: sent again in a later batch while the retry policy allows
        (each batch it goes in is one more attempt of the upload), else FAILED."""
        self.counters.count(error.usage)
        if requests:
            self.estimates.observe(upload, error.usage)
        n = item.attempt
        tries = Tries(attempt=n, failures=n, rate_limited=n, invalid=n)
        if isinstance(error, PermanentError):
            decision: object = GiveUp(reason_of(error))
        else:
            decision = self.retry.decide(error, tries, self.rng)
        if isinstance(decision, GiveUp):
            await self._fail(
                batch, item, upload, decision.reason, error.usage, tally, requests=requests
            )
            return
        if await self._release(batch, item, error.usage, requests=requests):
            tally.released += 1
            self.counters.retries += 1
            reason = reason_of(error)
            self.emit(UploadRetrying(upload, n, reason, 0.0, trio.current_time()))

    async def _fail(
        self,
        batch: Batch,
        item: BatchItem,
        upload: Upload,
        reason: str,
        usage: Usage | None,
        tally: _Tally,
        *,
        requests: int,
    ) -> None:
        reason = clean_reason(reason) or "failed"
        failed = await self.storage.fail_upload(
            item.upload_id,
            reason,
            worker=batch.holder,
            attempt=item.attempt,
            usage=usage,
            cost_usd=self._cost(usage),
            requests=requests,
        )
        if failed:
            tally.failed += 1
            self.counters.failed += 1
            self.emit(UploadFailed(upload, reason, item.attempt, trio.current_time()))

    async def _release(
        self, batch: Batch, item: BatchItem, usage: Usage | None = None, *, requests: int = 0
    ) -> bool:
        return await self.storage.release_upload(
            item.upload_id,
            worker=batch.holder,
            attempt=item.attempt,
            usage=usage,
            cost_usd=self._cost(usage),
            requests=requests,
        )

    def _cost(self, usage: Usage | None, model: str | None = None) -> float:
        """A request's cost at the batch price of the model its answer names (when
        priced), else of the provider's model."""
        price = self.price
        if model is not None:
            price = self.prices.price_for(model) or price
        if usage is None or price is None:
            return 0.0
        return cost_of(usage, price, batch=True)


async def _nothing() -> AsyncIterator[BatchResult]:
    """No results: those of a batch the provider no longer has."""
    await trio.lowlevel.checkpoint()
    none: tuple[BatchResult, ...] = ()
    for result in none:  # an async generator, like the provider's, that yields nothing
        yield result
