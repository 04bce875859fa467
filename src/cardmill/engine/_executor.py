"""The Engine: runs every upload of a run through a provider, as fast as limits allow."""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, final

import attrs
import trio

from .._cost import DEFAULT_PRICES, FREE, Price, PriceTable, cost_of
from ..errors import (
    DocumentError,
    InputError,
    InvalidOutput,
    Overloaded,
    PermanentError,
    ProviderError,
    RateLimited,
    RunNotFound,
    StorageError,
    TransientError,
    TransientStorageError,
    UnstorableData,
    require_trio,
)
from ..model import (
    BATCH_HOLDER_PREFIX,
    Document,
    LimitKind,
    Run,
    RunStatus,
    StoredAnswer,
    Upload,
    UploadStatus,
    Usage,
)
from ..providers import Analysis, ExtractiveProvider, Provider, request_overhead_tokens
from ..storage import Storage
from ._answers import clean_reason, invalid_answer, reason
from ._bucket import AdaptiveBucket, BucketStatistics, Limits
from ._estimate import Estimates
from ._events import (
    CostCapReached,
    Event,
    Observer,
    RateChanged,
    RateLimitHit,
    RequestFinished,
    RunFinished,
    RunSummary,
    UploadCompleted,
    UploadFailed,
    UploadRetrying,
    UploadStarted,
)
from ._groups import leaves, root_error
from ._patience import cleanup_scope, patiently
from ._retry import GiveUp, RetryPolicy, Tries
from ._reuse import reusable, reuse_for
from ._shared import RateLimiter
from ._tokens import TokenEstimator
from ._worker import dead_local_worker, default_worker_id

__all__ = ["Engine", "default_worker_id"]

log = logging.getLogger("cardmill.engine")


@attrs.define
class _Counters:
    requests: int = 0
    rate_limited: int = 0
    overloaded: int = 0
    retries: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    completed: int = 0
    failed: int = 0
    reused: int = 0
    saved_tokens: int = 0
    saved_cost: float = 0.0
    stopped: str | None = None


@attrs.frozen
class _Failed:
    reason: str
    attempts: int


@attrs.frozen
class _Done:
    analysis: Analysis
    attempts: int


@attrs.frozen
class _Reused:
    """An earlier answer with the upload's key: its cards, without a request."""

    answer: StoredAnswer


@attrs.frozen
class _Capped:
    """The upload's first request would pass the spending cap: it goes back unsent."""


@attrs.define(eq=False)
class _Held:
    """An upload this engine is working on; ``lost`` once another worker took it over."""

    upload: Upload
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    lost: bool = False
    # What its requests used and cost, not yet recorded, and the estimated cost of the
    # request in flight for it.
    usage: Usage = attrs.field(factory=Usage)
    cost: float = 0.0
    reserved: float = 0.0
    # The requests made under this claim, and how many of them were answered 429.
    requests: int = 0
    rate_limited: int = 0

    def spend(self, usage: Usage, cost: float) -> None:
        self.usage = self.usage + usage
        self.cost += cost


@final
class Engine:
    """Runs a run's uploads through a provider, never more than ``concurrency`` at once.

    Args:
        storage: where the run lives.
        provider: what turns documents into cards.
        concurrency: the most uploads in flight (a ``trio.CapacityLimiter``); change it
            while running through [`concurrency`][cardmill.Engine.concurrency].
        limits: ceilings you know for your provider tier; the rest is learnt.
        retry: how often and how patiently to retry.
        observer: called with every [event][cardmill.engine.Event] on the event loop.
        bucket: the rate limiter: share an [`AdaptiveBucket`][cardmill.AdaptiveBucket]
            between engines of one process, or a
            [`SharedBucket`][cardmill.engine.SharedBucket] between workers on several
            machines.
        worker: this engine's name in leases (unique by default).
        rng: randomness for jitter (seed it for reproducible tests).
        poll_interval: seconds between looks while other workers hold the last uploads.
        lease_seconds: how long a claimed upload is held without its lease being renewed
            (the heartbeat renews it every third of that); a dead worker's uploads are
            retaken after this.
        request_timeout: seconds one request may take before it counts as a transient
            failure.
        prices: what requests cost per model; each request's reported usage is priced
            at the model its answer names (``Analysis.model``), else the provider's
            ``model`` attribute, and recorded with its upload. The
            extractive provider costs nothing; a model the table does not know is
            recorded at 0 and the summary's ``cost_usd`` is None.
        reuse: complete an upload from an answer kept earlier (in any run of the same
            database) under its [key][cardmill.engine.answer_key], without a request,
            and keep each new answer for later runs. Needs a storage that keeps answers
            (every built-in one does) and a provider that says what determines its
            answers (every built-in one does); otherwise nothing is reused.
        max_cost: a spending cap for the run, in USD: no upload is started whose first
            request, estimated by [`estimate_cost`][cardmill.engine.estimate_cost] (with
            the prompt the provider says it sends,
            [`request_overhead_tokens`][cardmill.providers.request_overhead_tokens],
            scaled up when answers show longer prompts; at most ``max_tokens`` of output
            until answers show what is usual), could take the run's recorded cost plus what is in
            flight past it. Requests in flight
            finish; the rest stays PENDING and the run ends CANCELLED (resumable with a
            higher cap), the summary's ``stopped`` saying why.

    Raises:
        ValueError: a bad ``concurrency``, ``max_cost``, ...
        InputError: ``max_cost`` with a model whose price is unknown.

    Example:
        ```python
        async with SQLiteStorage.open("cardmill.db") as storage:
            run = await storage.create_run(documents)
            summary = await Engine(storage, ExtractiveProvider()).execute(run.id)
        ```
    """

    def __init__(
        self,
        storage: Storage,
        provider: Provider,
        *,
        concurrency: int = 2,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        observer: Observer | Callable[[Event], None] | None = None,
        bucket: RateLimiter | None = None,
        worker: str | None = None,
        rng: random.Random | None = None,
        poll_interval: float = 1.0,
        lease_seconds: float = 60.0,
        request_timeout: float = 300.0,
        prices: PriceTable = DEFAULT_PRICES,
        max_cost: float | None = None,
        reuse: bool = True,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if not poll_interval > 0 or not math.isfinite(poll_interval):
            raise ValueError("poll_interval must be a finite number > 0")
        if not lease_seconds >= 1 or not math.isfinite(lease_seconds):
            raise ValueError("lease_seconds must be a finite number >= 1")
        if not request_timeout > 0 or not math.isfinite(request_timeout):
            raise ValueError("request_timeout must be a finite number > 0")
        if max_cost is not None and (
            isinstance(max_cost, bool)
            or not isinstance(max_cost, int | float)
            or not math.isfinite(max_cost)
            or max_cost < 0
        ):
            raise ValueError("max_cost must be a finite number of USD >= 0")
        self._price = _price_of(provider, prices)
        self._prices = prices
        if max_cost is not None and self._price is None:
            model = getattr(provider, "model", None)
            raise InputError(
                f"no price is known for model {model!r}, so a spending cap cannot be "
                "kept: give its price (a prices file) or run without a cap"
            )
        self._max_cost = None if max_cost is None else float(max_cost)
        tokens = getattr(provider, "max_tokens", None)
        valid = isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0
        self._max_tokens = tokens if valid and isinstance(tokens, int) else 4096
        self._held: dict[str, _Held] = {}
        self._recorded = 0.0
        self._seen: Run | None = None
        self._storage = storage
        self._provider = provider
        self._reuse = reuse_for(storage, provider, reuse)
        self._estimates = self._new_estimates()
        self._limiter = trio.CapacityLimiter(concurrency)
        self._retry = retry if retry is not None else RetryPolicy()
        self._observer = observer
        self._bucket: RateLimiter = bucket if bucket is not None else AdaptiveBucket(limits)
        self.worker = worker if worker is not None else default_worker_id()
        self._rng = rng if rng is not None else random.Random()
        self._poll_interval = poll_interval
        self._lease_seconds = float(lease_seconds)
        self._request_timeout = float(request_timeout)
        self._counters = _Counters()
        self._tokens = TokenEstimator()
        self._spawn: Callable[[], object] | None = None
        self._workers = 0

    @property
    def concurrency(self) -> int:
        """The most uploads in flight; assign to change it while running."""
        return int(self._limiter.total_tokens)

    @concurrency.setter
    def concurrency(self, value: int) -> None:
        if not isinstance(value, int) or value < 1:
            raise ValueError("concurrency must be >= 1")
        self._limiter.total_tokens = value
        while self._spawn is not None and self._workers < value:
            self._add_worker()

    @property
    def bucket(self) -> RateLimiter:
        """The adaptive token bucket every request passes."""
        return self._bucket

    @property
    def in_flight(self) -> int:
        """Provider requests in flight right now."""
        return self._counters.in_flight

    # -- events -----------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        if self._observer is not None:
            self._observer(event)

    def _bucket_changed(self, stats: BucketStatistics) -> None:
        self._emit(
            RateChanged(
                stats.requests_per_second,
                stats.input_tokens_per_second,
                trio.current_time(),
                stats.estimated_requests_per_second,
                stats.estimated_input_tokens_per_second,
            )
        )

    # -- the run ----------------------------------------------------------------------

    async def execute(self, run_id: str, *, reclaim: bool = False) -> RunSummary:
        """Process every PENDING upload of the run, then settle the run's status.

        Resumes where an earlier execution stopped: uploads left LOADING by a process of
        this host that died are reclaimed at once, others when their lease expires (or
        at once with ``reclaim=True``, when you know no other worker is on the run).
        Uploads held by a provider batch are left to the
        [`BatchExecutor`][cardmill.engine.BatchExecutor]: never reclaimed, nor waited for.
        Cancelled (a cancel scope, Ctrl-C), it releases in-flight uploads to PENDING,
        marks the run CANCELLED and re-raises.

        Raises:
            RunNotFound: no run has this id.
            InputError: the provider was made for another recipe than the run's (its
                ``recipe`` attribute); nothing was claimed.
            StorageError: the storage failed; in-flight uploads were released.
        """
        require_trio("Engine.execute")
        made = await self._storage.get_run(run_id)
        recipe = getattr(self._provider, "recipe", None)
        digest = getattr(recipe, "digest", None)
        if made.recipe_digest and isinstance(digest, str) and digest != made.recipe_digest:
            raise InputError(
                f"run {run_id} was made with recipe {made.recipe_label}; the provider was made "
                f"for {getattr(recipe, 'label', digest[:12])}"
            )
        counters = self._counters = _Counters()
        self._seen, self._recorded = made, made.cost_usd
        self._estimates = self._new_estimates()
        if self._max_cost is not None:
            # What the run's answers so far said of its prompts.
            self._estimates.seed(await self._storage.list_uploads(run_id))
        started = trio.current_time()
        self._bucket.add_listener(self._bucket_changed)
        try:
            await self._storage.get_run(run_id)
            await self._release_stale(await self._loading(run_id), everyone=reclaim)
            await self._dispatch(run_id, counters)
        except RunNotFound:
            raise
        except BaseException as exc:
            run = None
            with cleanup_scope(self._storage), contextlib.suppress(StorageError):
                await self._release_lost(await self._loading(run_id))
                run = await self._storage.finish_run(run_id)
            if run is None:
                log.warning("could not record the end of run %s", run_id)
            else:
                try:
                    self._emit(RunFinished(self._summary(run, counters, started), _now()))
                except Exception:
                    # What stopped the run (Ctrl-C above all) is what the caller sees.
                    log.exception("the observer raised on the end of run %s", run_id)
            raise _unwrap(exc) from None
        finally:
            self._bucket.remove_listener(self._bucket_changed)
        run = await patiently(partial(self._storage.finish_run, run_id), "finish run", self._rng)
        if counters.stopped is not None and run.status == RunStatus.CANCELLED:
            assert self._max_cost is not None
            self._emit(CostCapReached(self._max_cost, run.cost_usd, counters.stopped, _now()))
        else:
            counters.stopped = None  # the cap was near, but nothing was left to start
        summary = self._summary(run, counters, started)
        self._emit(RunFinished(summary, _now()))
        return summary

    def _summary(self, run: Run, c: _Counters, started: float) -> RunSummary:
        return RunSummary(
            run=run,
            requests=c.requests,
            rate_limited=c.rate_limited,
            overloaded=c.overloaded,
            retries=c.retries,
            input_tokens=c.input_tokens,
            output_tokens=c.output_tokens,
            elapsed=trio.current_time() - started,
            peak_in_flight=c.peak_in_flight,
            final_rate=self._bucket.requests_per_second,
            completed=c.completed,
            failed=c.failed,
            reused=c.reused,
            saved_tokens=c.saved_tokens,
            saved_cost_usd=c.saved_cost,
            cost_usd=None if self._price is None else run.cost_usd,
            stopped=c.stopped,
            capped=c.stopped is not None,
        )

    async def _loading(self, run_id: str) -> list[Upload]:
        """The run's LOADING uploads that workers hold: those in a provider's batch are
        its batch executor's, never released, reclaimed or waited for here."""
        loading = await self._storage.list_uploads(run_id, UploadStatus.LOADING)
        return [u for u in loading if not _in_batch(u)]

    async def _release_stale(self, loading: list[Upload], *, everyone: bool) -> bool:
        released = False
        for u in loading:
            ours = u.worker == self.worker
            if not ours and (everyone or dead_local_worker(u.worker)):
                released |= await self._storage.release_upload(u.id, worker=u.worker)
                log.info("reclaimed %s from %s", u.name, u.worker)
        return released

    async def _release_lost(self, loading: list[Upload]) -> bool:
        """Release what is LOADING under this engine's name while none of its workers
        runs: only a claim whose answer was lost (it committed, then the connection
        broke) leaves one, and no heartbeat renews it."""
        released = False
        for u in loading:
            if u.worker == self.worker:
                released |= await self._storage.release_upload(
                    u.id, worker=self.worker, attempt=u.attempts
                )
                log.warning("released %s: its claim's answer was lost", u.name)
        return released

    async def _dispatch(self, run_id: str, counters: _Counters) -> None:
        while True:
            held: dict[str, _Held] = {}
            self._held = held
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeat, held)
                async with trio.open_nursery() as workers:
                    # One worker per unit of concurrency, each claiming and processing
                    # uploads in turn while it holds a token of the limiter; raising the
                    # concurrency while running starts more (see `concurrency`).
                    self._spawn = partial(workers.start_soon, self._worker, run_id, counters, held)
                    self._workers = 0
                    for _ in range(self.concurrency):
                        self._add_worker()
                self._spawn = None
                nursery.cancel_scope.cancel()  # the heartbeat: nothing is held any more
            # Nothing claimable, and our uploads are done. Others may still hold some.
            loading = await patiently(partial(self._loading, run_id), "list uploads", self._rng)
            if not loading:
                return
            if await patiently(partial(self._release_lost, loading), "release", self._rng):
                continue
            if not await self._release_stale(loading, everyone=False):
                await trio.sleep(self._poll_interval)

    def _add_worker(self) -> None:
        if self._spawn is not None:
            self._workers += 1
            self._spawn()

    async def _worker(self, run_id: str, counters: _Counters, held: dict[str, _Held]) -> None:
        while True:
            if self._max_cost is not None and self._would_pass(self._least_cost(), counters):
                return  # not even the smallest request fits under the spending cap
            async with self._limiter:
                claim = partial(
                    self._storage.claim_upload,
                    run_id,
                    worker=self.worker,
                    lease_seconds=self._lease_seconds,
                )
                upload = await patiently(claim, "claim", self._rng)
                if upload is None:
                    return
                # Completing an upload claims this worker's next in the same trip.
                while upload is not None:
                    upload = await self._process(upload, run_id, counters, held)

    # -- one upload -------------------------------------------------------------------

    async def _process(
        self, upload: Upload, run_id: str, counters: _Counters, held: dict[str, _Held]
    ) -> Upload | None:
        """Run one upload to its end; returns the next upload when the storage claimed
        one for this worker along with the result."""
        entry = held[upload.id] = _Held(upload)
        try:
            self._emit(UploadStarted(upload, _now()))
            outcome: _Done | _Reused | _Failed | _Capped | None = None
            with entry.scope:
                outcome = await self._attempts(upload, counters, entry)
            if entry.lost or outcome is None:
                return None  # another worker holds it now and will finish it
            if isinstance(outcome, _Capped):
                await self._release(upload, entry)
                return None
            return await self._settle(upload, outcome, run_id, counters, entry)
        except BaseException:
            await self._release(upload, entry)
            raise
        finally:
            held.pop(upload.id, None)

    async def _release(self, upload: Upload, entry: _Held | None = None) -> None:
        """Give a claimed upload back (PENDING), whatever is being unwound, recording
        what its requests cost; if the storage cannot, its lease expires and another
        claim takes it."""
        released = False
        with cleanup_scope(self._storage):
            try:
                await self._storage.release_upload(
                    upload.id,
                    worker=self.worker,
                    attempt=upload.attempts,
                    **_spent(entry),
                )
                released = True
            except StorageError:
                pass
        if not released:
            log.warning("could not release %s; its lease will expire", upload.name)

    async def _heartbeat(self, held: dict[str, _Held]) -> None:
        """Renew the lease of every upload this engine holds, a third of a lease apart;
        one whose lease was lost is dropped, to be finished by its new holder."""
        every = self._lease_seconds / 3
        while True:
            await trio.sleep(every)
            for entry in list(held.values()):
                if entry.lost or entry.upload.id not in held:
                    continue
                upload = entry.upload
                try:
                    renewed = await self._storage.renew_lease(
                        upload.id,
                        worker=self.worker,
                        lease_seconds=self._lease_seconds,
                        attempt=upload.attempts,
                    )
                except TransientStorageError as exc:
                    # The lease outlasts two more beats: the next one may get through.
                    log.warning("could not renew the lease on %s: %s", upload.name, exc)
                    continue
                if not renewed and upload.id in held:
                    log.warning("lost the lease on %s; leaving it to its new holder", upload.name)
                    entry.lost = True
                    entry.scope.cancel()

    async def _settle(
        self,
        upload: Upload,
        outcome: _Done | _Reused | _Failed,
        run_id: str,
        c: _Counters,
        entry: _Held,
    ) -> Upload | None:
        try:
            return await self._settle_spent(upload, outcome, run_id, c, entry)
        finally:
            if self._max_cost is not None:
                with cleanup_scope(self._storage), contextlib.suppress(StorageError):
                    await self._refresh(run_id)

    async def _refresh(self, run_id: str) -> None:
        """Read the run's recorded cost (every worker on the run adds to it)."""
        run = await self._storage.get_run(run_id)
        self._seen, self._recorded = run, run.cost_usd

    async def _settle_spent(
        self,
        upload: Upload,
        outcome: _Done | _Reused | _Failed,
        run_id: str,
        c: _Counters,
        entry: _Held,
    ) -> Upload | None:
        following: Upload | None = None
        spent = _spent(entry)
        if isinstance(outcome, _Reused):
            failure = await self._settle_reused(upload, outcome.answer, run_id, c)
            if failure is None:
                return None
            outcome = failure
        if isinstance(outcome, _Done):
            cards = outcome.analysis.cards
            complete = partial(
                self._storage.complete_upload,
                upload.id,
                cards,
                worker=self.worker,
                attempt=upload.attempts,
                **spent,
            )
            first: Callable[[], Awaitable[tuple[bool, Upload | None]]]
            if self._limiter.borrowed_tokens <= self._limiter.total_tokens and c.stopped is None:
                first = partial(
                    self._storage.complete_and_claim,
                    upload.id,
                    cards,
                    worker=self.worker,
                    attempt=upload.attempts,
                    run_id=run_id,
                    lease_seconds=self._lease_seconds,
                    **spent,
                )
            else:
                first = partial(_alone, complete)
            try:
                completed, following = await self._write(
                    first, complete, upload, run_id, UploadStatus.COMPLETED, "complete"
                )
            except UnstorableData as exc:
                # The storage cannot hold these cards: this upload fails, not the run.
                outcome = _Failed(reason(exc), outcome.attempts)
            else:
                if completed:
                    c.completed += 1
                    try:
                        self._emit(UploadCompleted(upload, len(cards), outcome.attempts, _now()))
                    except BaseException:
                        # The observer raised: the run stops, and the upload claimed
                        # along with the result goes back rather than waiting out its
                        # lease.
                        if following is not None:
                            await self._release(following)
                        raise
                return following
        fail = partial(
            self._storage.fail_upload,
            upload.id,
            clean_reason(outcome.reason),
            worker=self.worker,
            attempt=upload.attempts,
            **spent,
        )
        failed, _ = await self._write(
            partial(_alone, fail), fail, upload, run_id, UploadStatus.FAILED, "fail"
        )
        if failed:
            c.failed += 1
            self._emit(UploadFailed(upload, clean_reason(outcome.reason), outcome.attempts, _now()))
        return following

    async def _settle_reused(
        self, upload: Upload, answer: StoredAnswer, run_id: str, c: _Counters
    ) -> _Failed | None:
        """Complete an upload from an earlier answer; the failure to record instead when
        the storage cannot hold its cards.

        An answer kept for this very upload (its request was answered, then the run
        stopped before the upload was completed) is its own answer, recovered: completed,
        not as reused, and not counted as saved. What its request cost was recorded when
        the upload was released (after a kill -9, as for any request in flight then, it
        is not recorded)."""
        assert self._reuse is not None
        own = upload.answer_key == answer.key
        complete: Callable[[], Awaitable[bool]] = partial(
            self._reuse.store.complete_from_answer,
            upload.id,
            answer,
            worker=self.worker,
            attempt=upload.attempts,
        )
        if own:
            complete = partial(
                self._storage.complete_upload,
                upload.id,
                answer.drafts,
                worker=self.worker,
                attempt=upload.attempts,
            )
        try:
            completed, _ = await self._write(
                partial(_alone, complete),
                complete,
                upload,
                run_id,
                UploadStatus.COMPLETED,
                "complete",
            )
        except UnstorableData as exc:
            return _Failed(reason(exc), 0)
        if completed and own:
            c.completed += 1
            self._emit(UploadCompleted(upload, len(answer.drafts), 0, _now()))
        elif completed:
            c.completed += 1
            c.reused += 1
            c.saved_tokens += answer.tokens
            c.saved_cost += answer.cost_usd
            self._emit(UploadCompleted(upload, len(answer.drafts), 0, _now(), reused=True))
        return None

    async def _write(
        self,
        first: Callable[[], Awaitable[tuple[bool, Upload | None]]],
        again: Callable[[], Awaitable[bool]],
        upload: Upload,
        run_id: str,
        status: UploadStatus,
        what: str,
    ) -> tuple[bool, Upload | None]:
        """Settle an upload: ``first()``, then, if it failed for a while, ``again()``
        until it passes. A try whose commit succeeded but whose answer was lost makes
        the next try find nothing to settle: the upload's stored state says whether it
        ended with this claim (it is then ours to count), and a next upload the lost
        try claimed is released once the workers stop (`_release_lost`)."""
        tried = False

        async def attempt() -> tuple[bool, Upload | None]:
            nonlocal tried
            if not tried:
                tried = True
                return await first()
            if await again():
                return True, None
            return await self._ended_with_our_claim(upload, run_id, status), None

        return await patiently(attempt, what, self._rng)

    async def _ended_with_our_claim(
        self, upload: Upload, run_id: str, status: UploadStatus
    ) -> bool:
        # Fencing lets only the holder of this claim (its attempt) settle the upload: if
        # it is settled at this attempt, it was settled by us.
        for stored in await self._storage.list_uploads(run_id, status):
            if stored.id == upload.id:
                return stored.attempts == upload.attempts
        return False

    async def _attempts(
        self, upload: Upload, c: _Counters, entry: _Held
    ) -> _Done | _Reused | _Failed | _Capped:
        document = await self._storage.load_document(upload.id)
        key = self._reuse.key(document) if self._reuse is not None else None
        if key is not None:
            assert self._reuse is not None
            found = await reusable(self._reuse.store, key, upload, self._poll_interval, self._rng)
            if found is not None:
                return _Reused(found)
        cost = self._tokens.estimate(document)
        if self._max_cost is not None and self._would_pass(self._estimate(document), c):
            return _Capped()
        tries = Tries()
        while True:
            tries = attrs.evolve(tries, attempt=tries.attempt + 1)
            # Every request, re-asks included, passes the bucket and is counted.
            if self._max_cost is not None:
                # Reserved at once (no checkpoint since the check): every worker's
                # check counts it. Retries of an upload in flight are not held back.
                entry.reserved = self._estimate(document)
            ticket = await self._bucket.acquire(cost)
            sent = _now()
            try:
                analysis = await self._call(document, c)
            except DocumentError as exc:
                # Refused before any request: give the slot back, count no request.
                entry.reserved = 0.0
                await self._bucket.report_failure(ticket, input_tokens=0, hint=None, sent=False)
                return _Failed(reason(exc), tries.attempt)
            except ProviderError as exc:
                entry.reserved = 0.0
                c.requests += 1
                entry.requests += 1
                _count_usage(c, exc.usage)
                self._estimates.observe(document, exc.usage)
                spent = self._priced(exc.usage)
                if isinstance(exc.usage, Usage):
                    entry.spend(exc.usage, spent or 0.0)
                self._emit(
                    RequestFinished(
                        upload, _now() - sent, type(exc).__name__, exc.usage, _now(), spent
                    )
                )
                if isinstance(exc, RateLimited):
                    c.rate_limited += 1
                    entry.rate_limited += 1
                    tries = attrs.evolve(tries, rate_limited=tries.rate_limited + 1)
                    await self._bucket.report_rate_limited(
                        ticket, retry_after=exc.retry_after, limit=exc.limit, hint=exc.hint
                    )
                    self._emit(RateLimitHit(upload, exc.limit, exc.retry_after, _now()))
                    left = exc.hint.input_tokens_remaining if exc.hint is not None else None
                    if exc.limit == LimitKind.INPUT_TOKENS and left is not None and left >= cost:
                        # Refused with that many input tokens left: it costs more than
                        # guessed. Ask for more than that before trying again (within
                        # reason: the headers may describe another bucket than the one
                        # that refused it).
                        cost = min(left + 1.0, 2.0 * cost)
                else:
                    hint = exc.hint if isinstance(exc, InvalidOutput) else None
                    await self._bucket.report_failure(
                        ticket, input_tokens=_charge(exc), hint=hint, sent=True
                    )
                    if isinstance(exc, InvalidOutput):
                        tries = attrs.evolve(tries, invalid=tries.invalid + 1)
                    elif isinstance(exc, Overloaded | TransientError):
                        c.overloaded += isinstance(exc, Overloaded)
                        tries = attrs.evolve(tries, failures=tries.failures + 1)
                decision = self._retry.decide(exc, tries, self._rng)
                if isinstance(decision, GiveUp):
                    return _Failed(decision.reason, tries.attempt)
                c.retries += 1
                self._emit(
                    UploadRetrying(upload, tries.attempt, reason(exc), decision.delay, _now())
                )
                await trio.sleep(decision.delay)
                continue
            entry.reserved = 0.0
            c.requests += 1
            entry.requests += 1
            usage = getattr(analysis, "usage", None)
            reported = usage if isinstance(usage, Usage) else None
            spent = self._priced(reported, getattr(analysis, "model", None))
            self._emit(RequestFinished(upload, _now() - sent, None, reported, _now(), spent))
            charged = None
            if isinstance(usage, Usage):
                entry.spend(usage, spent or 0.0)
                _count_usage(c, usage)
                self._estimates.observe(document, usage)
                charged = usage.rate_limited_input_tokens
                self._tokens.observe(document, charged)
            await self._bucket.report_success(
                ticket, input_tokens=charged or None, hint=getattr(analysis, "hint", None)
            )
            problem = invalid_answer(analysis)
            if problem is not None:
                return _Failed(f"provider answered badly: {problem}", tries.attempt)
            if key is not None:
                await self._keep(key, upload, analysis, entry)
            return _Done(analysis, tries.attempt)

    async def _keep(self, key: str, upload: Upload, analysis: Analysis, entry: _Held) -> None:
        """Keep a fresh answer for reuse as soon as it is in, before its upload is
        completed: a crash in between does not pay for it again. A store that cannot
        keep it costs only the reuse, never the upload."""
        assert self._reuse is not None
        keep = partial(
            self._reuse.store.store_answer,
            key,
            analysis.cards,
            upload_id=upload.id,
            provider=self._provider.name,
            model=getattr(analysis, "model", None) or _model(self._provider),
            usage=entry.usage,
            cost_usd=entry.cost,
        )
        try:
            await patiently(keep, "keep the answer", self._rng)
        except (StorageError, InputError, UnstorableData) as exc:
            log.warning("could not keep the answer for %s for reuse: %s", upload.name, exc)

    # -- spend ----------------------------------------------------------------------

    def _priced(self, usage: object, model: str | None = None) -> float | None:
        """What is recorded for a request's reported ``usage``, at the price of the
        ``model`` its answer names (when priced), else of the provider's model; None
        when neither has a price or nothing was reported."""
        price = self._price
        if model is not None and price is not FREE:
            price = self._prices.price_for(model) or price
        if price is None or not isinstance(usage, Usage):
            return None
        cost = cost_of(usage, price)
        return cost if math.isfinite(cost) and cost >= 0 else 0.0

    def _new_estimates(self) -> Estimates:
        return Estimates(
            self._price,
            max_tokens=self._max_tokens,
            overhead_tokens=request_overhead_tokens(self._provider),
        )

    def _estimate(self, document: Document) -> float:
        return self._estimates.cost(document, self._seen)

    def _least_cost(self) -> float:
        """What the cheapest request could cost: an empty document's estimate."""
        return self._estimate(Document("", b"", "text/plain"))

    def _would_pass(self, estimate: float, c: _Counters) -> bool:
        """Whether one more request estimated at ``estimate`` could take the run past
        the cap; the first time it could, dispatch stops for good (this execution)."""
        if self._max_cost is None:
            return False
        if c.stopped is not None:
            return True
        in_flight = sum(e.cost + e.reserved for e in self._held.values())
        if self._recorded + in_flight + estimate <= self._max_cost:
            return False
        c.stopped = (
            f"the spending cap of {_usd(self._max_cost)} would be passed: "
            f"{_usd(self._recorded)} spent, {_usd(in_flight)} in flight, "
            f"and the next request may cost {_usd(estimate)}"
        )
        return True

    async def _call(self, document: Document, c: _Counters) -> Analysis:
        c.in_flight += 1
        c.peak_in_flight = max(c.peak_in_flight, c.in_flight)
        try:
            with trio.fail_after(self._request_timeout):
                return await self._provider.analyze(document)
        except trio.TooSlowError:
            raise TransientError(f"no answer within {self._request_timeout:g} s") from None
        except (ProviderError, DocumentError):
            raise
        except Exception as exc:
            # A provider bug must fail this upload, not the run.
            log.exception("provider %s raised unexpectedly", self._provider.name)
            raise PermanentError(f"provider error: {type(exc).__name__}: {exc}") from exc
        finally:
            c.in_flight -= 1


def _model(provider: Provider) -> str:
    model = getattr(provider, "model", None)
    return model if isinstance(model, str) else ""


def _price_of(provider: Provider, prices: PriceTable) -> Price | None:
    """What the provider's requests cost: nothing for the offline extractive provider,
    else its model's price (None when the model or its price is unknown)."""
    if isinstance(provider, ExtractiveProvider):
        return FREE
    model = getattr(provider, "model", None)
    return prices.price_for(model) if isinstance(model, str) else None


def _spent(entry: _Held | None) -> dict[str, Any]:
    """The usage, cost, requests and 429s to record with a settlement or release."""
    if entry is None:
        return {}
    return {
        "usage": entry.usage,
        "cost_usd": entry.cost,
        "requests": entry.requests,
        "rate_limited": entry.rate_limited,
    }


def _usd(amount: float) -> str:
    return f"${amount:.4f}"


def _in_batch(upload: Upload) -> bool:
    return (upload.worker or "").startswith(BATCH_HOLDER_PREFIX)


async def _alone(call: Callable[[], Awaitable[bool]]) -> tuple[bool, Upload | None]:
    """A settling write that claims nothing next."""
    return await call(), None


def _charge(error: ProviderError) -> int | None:
    """The input tokens a failed request cost: what the provider said, else nothing for a
    refusal (4xx, 529), else unknown (a timeout may have been processed in full)."""
    if error.usage is not None:
        return error.usage.rate_limited_input_tokens
    if isinstance(error, PermanentError | Overloaded):
        return 0
    return None


def _count_usage(c: _Counters, usage: Usage | None) -> None:
    if usage is not None:
        c.input_tokens += usage.input_tokens
        c.output_tokens += usage.output_tokens


def _now() -> float:
    return trio.current_time()


def _unwrap(exc: BaseException) -> BaseException:
    """Give callers the error itself, not a group of one, where that is what happened."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    found = leaves(exc)
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in found):
        return root_error(exc)
    real = [leaf for leaf in found if not isinstance(leaf, trio.Cancelled)]
    if not real:
        return exc  # only cancellation: trio's cancel scopes handle the group
    if len(real) == 1 or all(isinstance(leaf, StorageError) for leaf in real):
        # Several tasks hitting the same broken storage: the first says it all.
        return real[0]
    return exc
