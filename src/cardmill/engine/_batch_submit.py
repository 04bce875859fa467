"""Sending a run's PENDING uploads as batches, and re-attaching to a batch whose create
call was made but whose answer was never recorded."""

from __future__ import annotations

import enum
import json
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from ..errors import (
    DocumentError,
    Overloaded,
    ProviderError,
    RateLimited,
    TransientError,
    UnstorableData,
)
from ..model import (
    AnswerAsked,
    Batch,
    BatchItem,
    BatchState,
    Run,
    StoredAnswer,
    Upload,
    UploadStatus,
)
from ..providers import BatchProvider, BatchStatus
from ..storage import Storage
from ._answers import clean_reason, reason
from ._estimate import Estimates
from ._events import BatchSubmitted, Event, UploadCompleted, UploadFailed
from ._patience import patiently
from ._retry import RetryPolicy
from ._reuse import Reuse
from ._worker import dead_local_worker

if TYPE_CHECKING:
    from ._batch import BatchCounters

__all__ = ["UNSURE", "Submitter", "Unsure"]

log = logging.getLogger("cardmill.engine")

#: Bytes of the create request's body around its items (``{"requests": [...]}``).
_BODY_OVERHEAD = 64


class Unsure(enum.Enum):
    """`Submitter.find`'s answer when several provider batches may be the one."""

    UNSURE = "unsure"


UNSURE: Final = Unsure.UNSURE


@attrs.frozen
class _Built:
    """One upload's batch item, made before it is claimed: its request and size, or why
    it cannot be sent; or, when an answer was kept under its ``key``, that ``answer``
    (no request is made for it)."""

    request: dict[str, Any] | None
    size: int
    refusal: str | None = None
    key: str | None = None
    answer: StoredAnswer | None = None


@attrs.define
class Submitter:
    """Chooses, records and sends batches for one run; ``stopped`` says why it sends no
    more (a cost cap, a refused batch). With ``reuse``, an upload whose answer was kept
    earlier is completed from it instead of being sent."""

    storage: Storage
    provider: BatchProvider
    run_id: str
    max_cost: float | None
    retry: RetryPolicy
    lease_seconds: float
    find_margin: timedelta
    submit_margin: timedelta
    create_budget: float
    creator: str
    clock: Callable[[], float]
    cancelled: set[str]
    counters: BatchCounters
    estimates: Estimates
    rng: random.Random
    emit: Callable[[Event], None]
    reuse: Reuse | None = None
    stopped: str | None = None
    capped: bool = False
    _built: dict[str, _Built] = attrs.field(factory=dict)
    _run: Run | None = None
    #: Batches cancelled or ended before this execution began: their cancellation is
    #: not news to it.
    _before: set[str] | None = None
    #: Whether a provider batch (ended, its results read) holds a batch's requests.
    _verdicts: dict[tuple[str, str], bool] = attrs.field(factory=dict)

    # -- choosing --------------------------------------------------------------------

    async def submit_pending(self) -> None:
        """Send the run's PENDING uploads, in order, in as many batches as it takes."""
        while self.stopped is None:
            if await self.cancelled_elsewhere():
                return
            pending = await self.storage.list_uploads(self.run_id, UploadStatus.PENDING)
            if not pending or await self._wait_for_answers():
                return
            chunk = await self._choose(pending)
            if not chunk or not await self._send(chunk):
                return

    async def _wait_for_answers(self) -> bool:
        """Under a cap, no batch is sent while another of the run is open until an
        answer has shown how long the prompts really are: a wrong estimate then costs at
        most what one batch's requests miss by."""
        if self.max_cost is None or self.estimates.learnt:
            return False
        return bool(await self.storage.list_batches(self.run_id, open_only=True))

    async def note_batches(self) -> None:
        """Remember the run's batches that were cancelled or had ended already."""
        self._before = {
            b.id
            for b in await self.storage.list_batches(self.run_id)
            if b.state not in (BatchState.SUBMITTING, BatchState.LIVE)
        }

    async def cancelled_elsewhere(self) -> bool:
        """Whether another executor cancelled the run since this execution began (a
        batch of it CANCELING, or ended with canceled requests, that this one did not
        cancel); then ``stopped`` says so and nothing more is sent."""
        if self.stopped is not None:
            return True
        if self._before is None:
            await self.note_batches()
            assert self._before is not None
        for batch in await self.storage.list_batches(self.run_id):
            if batch.id in self._before or batch.id in self.cancelled:
                continue
            if batch.state == BatchState.CANCELING or batch.counts.canceled:
                self.stopped = (
                    f"run {self.run_id} is being cancelled: nothing more is sent; "
                    "resume it to send the rest"
                )
                log.warning("%s", self.stopped)
                return True
        return False

    async def _choose(self, pending: list[Upload]) -> list[Upload]:
        """The longest prefix of ``pending`` that fits one batch and the cost cap. An
        upload whose answer was kept takes no room in it: no request, bytes or cost (at
        most ``batch_max_requests`` of them besides)."""
        most = max(1, int(self.provider.batch_max_requests))
        room = int(self.provider.batch_max_bytes) - _BODY_OVERHEAD
        self._run = await self.storage.get_run(self.run_id)  # for the estimates
        budget = await self._budget()
        chunk: list[Upload] = []
        size = cost = 0.0
        reused = 0
        for upload in pending:
            if len(chunk) - reused >= most:
                break
            built = await self._build(upload)
            if built.answer is not None:
                if reused >= most:
                    break
                chunk.append(upload)
                reused += 1
                continue
            estimate = self.estimates.cost(upload, self._run)
            if built.refusal is None:
                if built.size + 1 > room:
                    built = self._built[upload.id] = attrs.evolve(
                        built,
                        request=None,
                        refusal=f"too large for a batch: {built.size} bytes, "
                        f"at most {room} per batch",
                    )
                elif size + built.size + 1 > room:
                    break
            if built.refusal is None and budget is not None and cost + estimate > budget:
                if not chunk:
                    self.capped = True
                    self.stopped = (
                        f"cost cap of ${self.max_cost:.4f} reached: the next upload "
                        f"({upload.name}) may cost ${estimate:.4f}, "
                        f"${max(budget, 0.0):.4f} of the cap is left"
                    )
                break
            chunk.append(upload)
            if built.refusal is None:
                size += built.size + 1
                cost += estimate
        return chunk

    async def _budget(self) -> float | None:
        """What the cap leaves for one more batch: the cap, less the run's recorded cost
        and what its open batches' unsettled uploads may still cost."""
        if self.max_cost is None:
            return None
        run = self._run or await self.storage.get_run(self.run_id)
        loading = {
            u.id: u for u in await self.storage.list_uploads(self.run_id, UploadStatus.LOADING)
        }
        expected = 0.0
        for batch in await self.storage.list_batches(self.run_id, open_only=True):
            for item in await self._held(batch):
                upload = loading.get(item.upload_id)
                if upload is not None:  # else settled since
                    expected += self.estimates.cost(upload, run)
        return self.max_cost - run.cost_usd - expected

    async def _build(self, upload: Upload) -> _Built:
        built = self._built.get(upload.id)
        if built is not None:
            return built
        document = await self.storage.load_document(upload.id)
        key = self.reuse.key(document) if self.reuse is not None else None
        if key is not None:
            assert self.reuse is not None
            # A read that changes nothing: the upload is settled from it only under the
            # batch's claim (`_claim_answer`), which looks again.
            answer = (await self.reuse.store.find_answers([key])).get(key)
            if answer is not None:
                built = self._built[upload.id] = _Built(None, 0, key=key, answer=answer)
                return built
        try:
            request = await self.provider.batch_request(document, upload.id)
        except DocumentError as exc:
            built = _Built(None, 0, reason(exc), key=key)
        else:
            size = len(json.dumps(request, default=str).encode())
            built = _Built(request, size, key=key)
        self._built[upload.id] = built
        return built

    # -- sending ---------------------------------------------------------------------

    async def _send(self, chunk: list[Upload]) -> bool:
        """Record the batch (the claim), fail the uploads that cannot be sent, complete
        those whose answer was kept from it, send the rest. False when nothing could be
        claimed."""
        made = await self.storage.create_batch(
            self.run_id,
            [u.id for u in chunk],
            lease_seconds=self.lease_seconds,
            creator=self.creator,
        )
        if made is None:
            return False
        batch, items = made
        names = {u.id: u for u in chunk}
        requests: list[dict[str, Any]] = []
        for item in items:
            built = self._built.pop(item.upload_id)
            upload = names[item.upload_id]
            if built.refusal is not None:
                await self._fail(batch, item, upload, built.refusal)
                continue
            answer = await self._claim_answer(built.key, item)
            if answer is not None:
                await self._reuse(batch, item, upload, answer)
            elif built.request is None:
                # Its answer was found before the claim and is gone since (forgotten):
                # back to PENDING, to be built and sent in a later batch.
                await self.storage.release_upload(
                    item.upload_id, worker=batch.holder, attempt=item.attempt
                )
            else:
                requests.append({**built.request, "custom_id": item.custom_id})
        if not requests:
            await self.storage.update_batch(batch.id, state=BatchState.DONE)
            return True
        await self._create(batch, requests)
        return True

    async def _claim_answer(self, key: str | None, item: BatchItem) -> StoredAnswer | None:
        """The answer kept under ``key``, looked up under the item's claim (so that only
        this claim settles the upload from it); None when it is to be sent."""
        if key is None or self.reuse is None:
            return None
        claim = partial(
            self.reuse.store.claim_answer, key, upload_id=item.upload_id, attempt=item.attempt
        )
        found = await patiently(claim, "look up an earlier answer", self.rng)
        if isinstance(found, AnswerAsked):
            # Another live claim is asking for it now (the same document twice in this
            # batch, or in another run). Unlike the Engine, a batch does not wait: an
            # answer may take 24 hours. It is sent too, so the duplicates are bounded by
            # the uploads of the same content in flight at once.
            return None
        return found

    async def _reuse(
        self, batch: Batch, item: BatchItem, upload: Upload, answer: StoredAnswer
    ) -> None:
        """Complete an upload from an earlier answer under the batch's claim, in the one
        transaction of `complete_from_answer`; it fails when its cards cannot be stored."""
        assert self.reuse is not None
        try:
            completed = await self.reuse.store.complete_from_answer(
                item.upload_id, answer, worker=batch.holder, attempt=item.attempt
            )
        except UnstorableData as exc:
            await self._fail(batch, item, upload, reason(exc))
            return
        if completed:
            self.counters.completed += 1
            self.counters.reused += 1
            self.counters.saved_tokens += answer.tokens
            self.counters.saved_cost += answer.cost_usd
            self.emit(
                UploadCompleted(upload, len(answer.drafts), 0, trio.current_time(), reused=True)
            )

    async def _fail(self, batch: Batch, item: BatchItem, upload: Upload, reason: str) -> None:
        failed = await self.storage.fail_upload(
            item.upload_id, reason, worker=batch.holder, attempt=item.attempt
        )
        if failed:
            self.counters.failed += 1
            self.emit(UploadFailed(upload, reason, item.attempt, trio.current_time()))

    async def _create(self, batch: Batch, requests: list[dict[str, Any]]) -> None:
        """Create the batch at the provider and record its id. A 429 is tried again after
        its Retry-After; an error that may have created it first looks for it; a refusal
        abandons it (its uploads go back to PENDING) and stops the sending."""
        tries = limited = 0
        started = trio.current_time()
        while True:
            if trio.current_time() - started > self.create_budget:
                # Past this, another executor may take the batch for lost.
                await self._abandon(batch, f"gave up after {self.create_budget:.0f} s of tries")
                return
            try:
                status = await self.provider.create_batch(requests)
                break
            except (RateLimited, Overloaded) as exc:
                # Refused: nothing was created.
                limited += 1
                self.counters.rate_limited += isinstance(exc, RateLimited)
                if limited > self.retry.max_rate_limited:
                    await self._abandon(batch, f"still refused after {limited} tries: {exc}")
                    return
                wait = max(self.retry.backoff(limited, self.rng), exc.retry_after or 0.0)
                log.warning("a batch was refused for now; trying again in %.1f s", wait)
                await trio.sleep(wait)
            except TransientError as exc:
                # No answer (a timeout, a reset, a 5xx): it may have been created all
                # the same. Look for it before sending it again.
                tries += 1
                await trio.sleep(self.retry.backoff(tries, self.rng))
                found = await self.find(batch, len(requests))
                if found is UNSURE:
                    # Sending it again might pay for it twice: it stays SUBMITTING, and
                    # is adopted once the provider's batches tell which one is ours.
                    log.warning(
                        "could not send a batch: %s; which batch of the provider is it "
                        "is told once they end",
                        exc,
                    )
                    return
                if isinstance(found, BatchStatus):
                    status = found
                    break
                if tries >= self.retry.max_attempts:
                    await self._abandon(batch, f"gave up after {tries} tries: {exc}")
                    return
                log.warning("could not send a batch: %s; trying again", exc)
            except ProviderError as exc:
                await self._abandon(batch, reason(exc))
                return
        await self._submitted(batch, status, len(requests))

    async def _submitted(self, batch: Batch, status: BatchStatus, size: int) -> None:
        recorded = await patiently(
            partial(self.storage.set_batch_submitted, batch.id, status.provider_batch_id),
            "record a batch",
            self.rng,
        )
        self.counters.requests += size
        self.emit(BatchSubmitted(recorded, trio.current_time()))
        await self._cancel_if_asked(recorded)

    async def _cancel_if_asked(self, batch: Batch) -> None:
        """A batch cancelled while its create call was in flight: cancel it at the
        provider now that it has an id; what it finished is still collected."""
        if batch.state != BatchState.CANCELING or batch.provider_batch_id is None:
            return
        await self.cancelled_elsewhere()
        try:
            await self.provider.cancel_batch(batch.provider_batch_id)
        except ProviderError as exc:
            log.warning("could not cancel batch %s: %s", batch.provider_batch_id, exc)

    async def _abandon(self, batch: Batch, why: str) -> None:
        await self.storage.update_batch(batch.id, state=BatchState.ABANDONED)
        self.stopped = f"the provider did not take a batch: {clean_reason(why)}"
        log.warning("%s", self.stopped)

    # -- re-attaching ----------------------------------------------------------------

    async def _held(self, batch: Batch) -> list[BatchItem]:
        """The batch's items whose uploads it still holds."""
        held = {
            u.id: u.attempts
            for u in await self.storage.list_uploads(self.run_id, UploadStatus.LOADING)
            if u.worker == batch.holder
        }
        items = await self.storage.batch_items(batch.id)
        return [i for i in items if held.get(i.upload_id) == i.attempt]

    def _left_to_creator(self, batch: Batch) -> bool:
        """Whether another executor that still lives may be making the batch's create
        call: not this one, not a dead local process, and not long enough ago."""
        creator = batch.creator
        if creator is None or creator == self.creator or dead_local_worker(creator):
            return False
        now = datetime.fromtimestamp(self.clock(), UTC)
        return now - batch.created_at <= self.submit_margin

    async def reattach(self, batch: Batch) -> Batch:
        """A batch without a provider id (its create call's answer was never recorded):
        adopt the provider batch that matches it, or abandon it (its uploads go back to
        PENDING). Left as it is while its creator may still be making the call."""
        if self._left_to_creator(batch):
            return batch
        held = await self._held(batch)
        found = await self.find(batch, len(held)) if held else None
        if found is UNSURE:
            return batch  # looked at again at the next poll
        if found is None:
            log.info("batch %s never reached the provider; its uploads are sent again", batch.id)
            return await self.storage.update_batch(batch.id, state=BatchState.ABANDONED)
        assert isinstance(found, BatchStatus)
        recorded = await self.storage.set_batch_submitted(batch.id, found.provider_batch_id)
        self.emit(BatchSubmitted(recorded, trio.current_time()))
        await self._cancel_if_asked(recorded)
        return recorded

    async def find(self, batch: Batch, size: int) -> BatchStatus | Unsure | None:
        """The provider batch created for ``batch``, None when there is none, or `UNSURE`
        when several may be it and none can be told ours yet.

        A candidate was created at most a margin before the batch was recorded, holds
        ``size`` requests (or its counts are all still zero: the provider's tally lags
        its creation), and is not recorded by any batch of ours. Another client of the
        same API key may have made one of the same size meanwhile, so a candidate is
        checked where the provider lets it be: an ended one is ours when its results
        name our requests' ``custom_id``, and not ours when they name others. Of those
        that cannot be checked yet (still processing), the ones created after the batch
        was recorded come first (ours cannot be older); one of them alone is taken (a
        wrong one only leaves our requests without results, to be sent again), while
        several are left until they end and can be checked, since taking the wrong one
        would leave ours running unseen and pay for every request twice."""
        since = batch.created_at - self.find_margin
        candidates = await self.provider.find_batches(since)
        known = await self._known_ids()
        ours = {item.custom_id for item in await self.storage.batch_items(batch.id)}
        unchecked: list[BatchStatus] = []
        for candidate in candidates:
            if candidate.counts.total not in (size, 0) or candidate.provider_batch_id in known:
                continue
            verdict = await self._holds_ours(batch, candidate, ours)
            if verdict is True:
                return candidate
            if verdict is None:
                unchecked.append(candidate)
        after = [
            c for c in unchecked if c.created_at is not None and c.created_at >= batch.created_at
        ]
        choice = after or unchecked
        if not choice:
            return None
        if len(choice) > 1:
            log.info(
                "batch %s: %d batches of the provider may be it; it is adopted once they "
                "end and their results tell",
                batch.id,
                len(choice),
            )
            return UNSURE
        return choice[0]

    async def _holds_ours(
        self, batch: Batch, candidate: BatchStatus, ours: set[str]
    ) -> bool | None:
        """Whether the ended ``candidate``'s results are those of our requests (the first
        result that names a request tells), or None when that cannot be read (yet)."""
        key = (batch.id, candidate.provider_batch_id)
        if key in self._verdicts:
            return self._verdicts[key]
        if not candidate.ended or candidate.archived:
            return None
        verdict: bool | None = None
        results = self.provider.batch_results(candidate.provider_batch_id)
        try:
            async for result in results:
                if result.custom_id:
                    verdict = result.custom_id in ours
                    break
        except ProviderError as exc:
            log.info("could not read the results of batch %s: %s", candidate.provider_batch_id, exc)
            return None
        finally:
            aclose = getattr(results, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await aclose()
        if verdict is not None:
            self._verdicts[key] = verdict
        return verdict

    async def _known_ids(self) -> set[str]:
        known: set[str] = set()
        for run in await self.storage.list_runs():
            for other in await self.storage.list_batches(run.id):
                if other.provider_batch_id is not None:
                    known.add(other.provider_batch_id)
        return known


def _distance(created: datetime | None, recorded: datetime) -> float:
    if created is None:
        return float("inf")
    return abs((created - recorded).total_seconds())
