"""The batch executor: a run's uploads through a provider's batch API, at the batch price."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any, Final, final

import attrs
import trio

from .._cost import DEFAULT_PRICES, Price, PriceTable
from ..errors import (
    InputError,
    Overloaded,
    ProviderError,
    RateLimited,
    RunNotFound,
    StorageError,
    TransientError,
    require_trio,
)
from ..model import Batch, BatchState, Run, Usage
from ..providers import (
    BatchProvider,
    BatchStatus,
    request_overhead_tokens,
)
from ..storage import Storage
from ._batch_collect import Collector
from ._batch_submit import Submitter
from ._estimate import Estimates
from ._events import (
    BatchProgress,
    BatchSubmitted,
    CostCapReached,
    Event,
    Observer,
    RunFinished,
    RunSummary,
)
from ._patience import cleanup_scope, patiently
from ._retry import RetryPolicy
from ._reuse import reuse_for
from ._worker import default_worker_id

__all__ = ["BatchExecutor"]

log = logging.getLogger("cardmill.engine")

#: Output budget assumed for cost estimates when the provider does not say its own.
DEFAULT_MAX_TOKENS: Final = 4096
#: How far before a SUBMITTING batch was recorded a provider batch may say it was created
#: and still be taken for it (the two clocks differ).
FIND_MARGIN: Final = timedelta(minutes=10)
#: How long a batch's create call may go on: it is given up after this long (each try
#: lasting at most the provider's timeout, 120 s by default, plus a backoff of at most
#: 60 s).
CREATE_BUDGET: Final = 30 * 60.0
#: How old a SUBMITTING batch of another live executor must be before it is taken for
#: lost: its create call (`CREATE_BUDGET` and one last try) has ended by then.
SUBMIT_MARGIN: Final = timedelta(hours=1)


@attrs.define
class BatchCounters:
    """What one execution did, for its summary."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    completed: int = 0
    failed: int = 0
    reused: int = 0
    saved_tokens: int = 0
    saved_cost: float = 0.0

    def count(self, usage: Usage | None) -> None:
        if usage is not None:
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens


@final
class BatchExecutor:
    """Runs a run's uploads through a provider's batch API (Anthropic's Message Batches:
    half the price, results within 24 hours, outside the per-minute limits).

    The run's PENDING uploads are sent in batches, split by the provider's
    ``batch_max_requests`` and ``batch_max_bytes``. Which uploads each batch holds is
    recorded before it is sent, so an execution that stops (Ctrl-C, a crash) leaves them
    held by their batch, and the next `execute` re-attaches to it instead of sending
    them again. Results settle through the same fenced, one-transaction
    ``complete_upload`` as the [`Engine`][cardmill.Engine]'s, with their usage and cost.
    Several executors may work on one run at once (two ``resume`` in two terminals):
    each batch records its creator, and a batch whose create call another live executor
    is still making is left to it. A run being cancelled by another executor (one of
    its batches CANCELING) makes this one send nothing more. An upload whose answer was
    kept earlier is completed from it instead of being sent (``reuse``).

    Args:
        storage: where the run lives.
        provider: a [`BatchProvider`][cardmill.providers.BatchProvider].
        prices: the price table; the cost of each answer is recorded at its batch share.
        max_cost: a cap in USD on the run's recorded cost plus the estimates of what its
            open batches may still cost; a batch that would pass it is shrunk, and when
            not one more upload fits, no more are sent (they stay PENDING). Estimates
            count the prompt the provider sends
            ([`request_overhead_tokens`][cardmill.providers.request_overhead_tokens]) and
            are scaled up when answers show longer prompts; until one has, no batch is
            sent while another of the run is open, so the cap can be passed only by what
            the requests in flight cost beyond their estimates.
        retry: how often an upload whose request failed in a batch is sent again.
        observer: called with every [event][cardmill.engine.Event] on the event loop.
        poll_interval: seconds between looks at open batches, doubling while nothing
            moves, up to ``max_poll_interval``.
        max_poll_interval: the longest wait between looks.
        lease_seconds: how long uploads stay held by a batch without the executor
            renewing their lease (it does every third of it while it runs); it must
            outlast the provider's processing window (24 hours).
        cancel_timeout: how long `cancel` waits for cancelled batches to end.
        rng: randomness for jitter.
        worker: this executor's name on the batches it records; by default
            ``host:pid:token@scope``, from which another process on the same host can
            tell that it died.
        clock: wall-clock seconds, as the storage stamps batches with (injectable for
            tests): how old another executor's SUBMITTING batch is.
        reuse: complete an upload from an answer kept earlier (in any run of the same
            database, by a batch or the [`Engine`][cardmill.Engine]) under its
            [key][cardmill.engine.answer_key], without a request and without taking
            room in a batch, and keep each new answer for later runs as soon as its
            result is read, before its upload is completed. Needs a storage that keeps
            answers (every built-in one does) and a provider that says what determines
            its answers; otherwise nothing is reused. An upload whose key another live
            claim is asking for is sent all the same (a batch does not wait up to 24
            hours for another's answer).

    Example:
        ```python
        executor = BatchExecutor(storage, AnthropicProvider(), max_cost=5.0)
        summary = await executor.execute(run.id)
        ```
    """

    def __init__(
        self,
        storage: Storage,
        provider: BatchProvider,
        *,
        prices: PriceTable = DEFAULT_PRICES,
        max_cost: float | None = None,
        retry: RetryPolicy | None = None,
        observer: Observer | Callable[[Event], None] | None = None,
        poll_interval: float = 30.0,
        max_poll_interval: float = 600.0,
        lease_seconds: float = 7 * 24 * 3600.0,
        cancel_timeout: float = 600.0,
        rng: random.Random | None = None,
        worker: str | None = None,
        clock: Callable[[], float] = time.time,
        reuse: bool = True,
    ) -> None:
        if not isinstance(provider, BatchProvider):
            raise InputError(
                f"provider {getattr(provider, 'name', provider)!r} cannot send batches"
            )
        if max_cost is not None and not (math.isfinite(max_cost) and max_cost >= 0):
            raise ValueError("max_cost must be a finite number >= 0")
        if not (math.isfinite(poll_interval) and poll_interval > 0):
            raise ValueError("poll_interval must be a finite number > 0")
        if not (math.isfinite(max_poll_interval) and max_poll_interval >= poll_interval):
            raise ValueError("max_poll_interval must be a finite number >= poll_interval")
        if not (math.isfinite(lease_seconds) and lease_seconds >= 1):
            raise ValueError("lease_seconds must be a finite number >= 1")
        if not (math.isfinite(cancel_timeout) and cancel_timeout >= 0):
            raise ValueError("cancel_timeout must be a finite number >= 0")
        price = prices.price_for(provider.model)
        if max_cost is not None and price is None:
            raise InputError(
                f"no price for model {provider.model!r}: give one to cap the cost (--prices)"
            )
        self._storage = storage
        self._provider = provider
        self._price: Price | None = price
        self._prices = prices
        self._max_cost = max_cost
        self._retry = retry if retry is not None else RetryPolicy()
        self._observer = observer
        self._poll_interval = float(poll_interval)
        self._max_poll_interval = float(max_poll_interval)
        self._lease_seconds = float(lease_seconds)
        self._cancel_timeout = float(cancel_timeout)
        self._rng = rng if rng is not None else random.Random()
        self._renewed: dict[str, float] = {}
        self._open: list[Batch] = []
        self.worker = worker if worker is not None else default_worker_id()
        self._clock = clock
        #: The batches this executor set CANCELING; any other means another cancels.
        self._cancelled: set[str] = set()
        # Without a fingerprint no key can be made: nothing is looked up or kept (and no
        # document is loaded again to make one).
        self._reuse = reuse_for(storage, provider, reuse)

    def _emit(self, event: Event) -> None:
        if self._observer is not None:
            self._observer(event)

    @property
    def open_batches(self) -> tuple[Batch, ...]:
        """The run's open batches as last seen by `execute` (for progress displays)."""
        return tuple(self._open)

    # -- the run ----------------------------------------------------------------------

    async def execute(self, run_id: str, *, submit: bool = True) -> RunSummary:
        """Send the run's PENDING uploads in batches and collect every result, re-attaching
        first to the batches an earlier execution left open; then settle the run's status.
        With ``submit=False`` it only re-attaches and collects: PENDING uploads stay so.

        Interrupted (Ctrl-C, a cancel scope), it stops looking and re-raises: the batches
        stay live at the provider, their uploads held by them, and a later `execute`
        collects them. When the cost cap stops it, or the provider refuses a batch,
        the summary's ``stopped`` says why and the uploads not sent stay PENDING.

        Raises:
            RunNotFound: no run has this id.
            InputError: the provider was made for another recipe than the run's.
            StorageError: the storage failed.
            ProviderError: the provider failed to answer about a batch it holds.
        """
        require_trio("BatchExecutor.execute")
        await self._check_recipe(run_id)
        counters = BatchCounters()
        started = trio.current_time()
        estimates = await self._estimates(run_id)
        submitter = self._submitter(run_id, counters, estimates)
        try:
            await self._loop(run_id, counters, submitter, estimates, submit=submit)
        except RunNotFound:
            raise
        except BaseException:
            run = None
            with cleanup_scope(self._storage), contextlib.suppress(StorageError):
                run = await self._storage.finish_run(run_id)
            if run is not None:
                try:
                    summary = self._summary(
                        run, counters, started, submitter.stopped, submitter.capped
                    )
                    self._emit(RunFinished(summary, trio.current_time()))
                except Exception:
                    log.exception("the observer raised on the end of run %s", run_id)
            raise
        return await self._finish(
            run_id, counters, started, submitter.stopped, capped=submitter.capped
        )

    async def cancel(self, run_id: str) -> RunSummary:
        """Cancel every open batch of the run at the provider, wait (up to
        ``cancel_timeout``) for them to end, collect what they finished and release the
        rest to PENDING; the run ends CANCELLED (resumable) unless everything was done.

        Raises:
            RunNotFound: no run has this id.
            StorageError, ProviderError: as `execute`.
        """
        counters = BatchCounters()
        started = trio.current_time()
        estimates = await self._estimates(run_id)
        submitter = self._submitter(run_id, counters, estimates)
        for batch in await self._storage.list_batches(run_id, open_only=True):
            if batch.provider_batch_id is None:
                batch = await submitter.reattach(batch)
            if batch.state == BatchState.SUBMITTING:
                # Another executor's create call is in flight: marked so, it cancels
                # the batch itself once the provider has taken it. Only if it is still
                # SUBMITTING: when the answer was recorded meanwhile, the creator has
                # seen it LIVE and will not, so it is cancelled here.
                self._cancelled.add(batch.id)
                batch = await self._storage.update_batch(
                    batch.id, state=BatchState.CANCELING, expect=BatchState.SUBMITTING
                )
                if batch.state != BatchState.LIVE:
                    continue
            if batch.state == BatchState.LIVE and batch.provider_batch_id is not None:
                try:
                    await self._call(partial(self._provider.cancel_batch, batch.provider_batch_id))
                except ProviderError as exc:
                    # It may have ended meanwhile: it is collected all the same.
                    log.warning("could not cancel batch %s: %s", batch.provider_batch_id, exc)
                    continue
                self._cancelled.add(batch.id)
                await self._storage.update_batch(
                    batch.id, state=BatchState.CANCELING, expect=BatchState.LIVE
                )
        collector = self._collector(run_id, counters, estimates)
        stopped = None
        with trio.move_on_after(self._cancel_timeout):
            await self._watch(run_id, collector, submitter, send=False)
        left = await self._storage.list_batches(run_id, open_only=True)
        if left:
            stopped = (
                f"{len(left)} cancelled {'batch is' if len(left) == 1 else 'batches are'} "
                f"still ending at the provider; resume the run to collect them"
            )
        return await self._finish(run_id, counters, started, stopped)

    async def _check_recipe(self, run_id: str) -> None:
        made = await self._storage.get_run(run_id)
        recipe = getattr(self._provider, "recipe", None)
        digest = getattr(recipe, "digest", None)
        if made.recipe_digest and isinstance(digest, str) and digest != made.recipe_digest:
            raise InputError(
                f"run {run_id} was made with recipe {made.recipe_label}; the provider was made "
                f"for {getattr(recipe, 'label', digest[:12])}"
            )

    async def _estimates(self, run_id: str) -> Estimates:
        """The cost estimates of this execution, knowing what the run's answers so far
        said of its prompts. Raises RunNotFound."""
        tokens = getattr(self._provider, "max_tokens", None)
        valid = isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0
        estimates = Estimates(
            self._price,
            max_tokens=tokens if valid and isinstance(tokens, int) else DEFAULT_MAX_TOKENS,
            overhead_tokens=request_overhead_tokens(self._provider),
            batch=True,
        )
        await self._storage.get_run(run_id)
        if self._max_cost is not None:
            estimates.seed(await self._storage.list_uploads(run_id))
        return estimates

    def _submitter(self, run_id: str, counters: BatchCounters, estimates: Estimates) -> Submitter:
        return Submitter(
            storage=self._storage,
            provider=self._provider,
            run_id=run_id,
            max_cost=self._max_cost,
            retry=self._retry,
            lease_seconds=self._lease_seconds,
            find_margin=FIND_MARGIN,
            submit_margin=SUBMIT_MARGIN,
            create_budget=CREATE_BUDGET,
            creator=self.worker,
            clock=self._clock,
            cancelled=self._cancelled,
            counters=counters,
            estimates=estimates,
            rng=self._rng,
            emit=self._emit,
            reuse=self._reuse,
        )

    def _collector(self, run_id: str, counters: BatchCounters, estimates: Estimates) -> Collector:
        return Collector(
            storage=self._storage,
            provider=self._provider,
            run_id=run_id,
            price=self._price,
            prices=self._prices,
            retry=self._retry,
            counters=counters,
            estimates=estimates,
            rng=self._rng,
            emit=self._emit,
            reuse=self._reuse,
        )

    async def _finish(
        self,
        run_id: str,
        counters: BatchCounters,
        started: float,
        stopped: str | None,
        *,
        capped: bool = False,
    ) -> RunSummary:
        run = await patiently(partial(self._storage.finish_run, run_id), "finish run", self._rng)
        if capped and self._max_cost is not None and stopped is not None:
            self._emit(CostCapReached(self._max_cost, run.cost_usd, stopped, trio.current_time()))
        summary = self._summary(run, counters, started, stopped, capped)
        self._emit(RunFinished(summary, trio.current_time()))
        return summary

    def _summary(
        self, run: Run, c: BatchCounters, started: float, stopped: str | None, capped: bool = False
    ) -> RunSummary:
        return RunSummary(
            run=run,
            requests=c.requests,
            rate_limited=c.rate_limited,
            overloaded=0,
            retries=c.retries,
            input_tokens=c.input_tokens,
            output_tokens=c.output_tokens,
            elapsed=trio.current_time() - started,
            peak_in_flight=0,
            final_rate=None,
            completed=c.completed,
            failed=c.failed,
            cost_usd=None if self._price is None else run.cost_usd,
            stopped=stopped,
            capped=capped,
            reused=c.reused,
            saved_tokens=c.saved_tokens,
            saved_cost_usd=c.saved_cost,
        )

    async def _loop(
        self,
        run_id: str,
        counters: BatchCounters,
        submitter: Submitter,
        estimates: Estimates,
        *,
        submit: bool,
    ) -> None:
        await submitter.note_batches()
        for batch in await self._storage.list_batches(run_id, open_only=True):
            if batch.provider_batch_id is None:
                await submitter.reattach(batch)
            else:
                self._emit(BatchSubmitted(batch, trio.current_time()))
        collector = self._collector(run_id, counters, estimates)
        await self._watch(run_id, collector, submitter, send=submit)

    async def _watch(
        self, run_id: str, collector: Collector, submitter: Submitter, *, send: bool
    ) -> None:
        """Submit (when ``send``) and poll until no open batch is left and nothing more
        is to be sent. A batch without a provider id is looked for at every look (sending
        or not): it may be adopted once the provider's batches tell which is ours."""
        delay = self._poll_interval
        while True:
            if send:
                await submitter.submit_pending()
            self._open = await self._storage.list_batches(run_id, open_only=True)
            if not self._open:
                return
            moved = ended = False
            pause = 0.0  # the longest Retry-After of a refused look
            for batch in self._open:
                if batch.provider_batch_id is None:
                    continue  # SUBMITTING: left by a cancelled submit; resolved below
                status = await self._poll(batch)
                if not isinstance(status, BatchStatus):
                    pause = max(pause, status)
                    continue
                if status.counts != batch.counts:
                    moved = True
                    batch = await self._storage.update_batch(batch.id, counts=status.counts)
                    self._emit(BatchProgress(batch, status.counts, trio.current_time()))
                if status.ended:
                    # Results that could not be read just now are read at the next look.
                    ended |= await collector.collect(batch, archived=status.archived)
                else:
                    await self._renew(batch)
            for batch in self._open:
                if batch.provider_batch_id is None:
                    # Another live executor's batch is left alone (unchanged).
                    ended |= await submitter.reattach(batch) != batch
            if ended:
                delay = self._poll_interval
                continue
            delay = self._poll_interval if moved else min(2 * delay, self._max_poll_interval)
            await trio.sleep(max(delay, pause))

    async def _poll(self, batch: Batch) -> BatchStatus | float:
        """The batch's status, or, when the provider could not say just now, how long it
        asked to be left alone (its Retry-After, else 0)."""
        assert batch.provider_batch_id is not None
        try:
            return await self._provider.retrieve_batch(batch.provider_batch_id)
        except (RateLimited, Overloaded, TransientError) as exc:
            log.warning("could not look at batch %s: %s", batch.provider_batch_id, exc)
            # RateLimited and Overloaded hold a finite, non-negative Retry-After or None.
            retry_after: float | None = getattr(exc, "retry_after", None)
            return 0.0 if retry_after is None else min(retry_after, self._max_poll_interval * 6)

    async def _renew(self, batch: Batch) -> None:
        """Keep the batch's uploads held while it is processed: no claim may take them."""
        now = trio.current_time()
        last = self._renewed.get(batch.id)
        if last is not None and now - last < self._lease_seconds / 3:
            return
        self._renewed[batch.id] = now
        for item in await self._storage.batch_items(batch.id):
            await self._storage.renew_lease(
                item.upload_id,
                worker=batch.holder,
                lease_seconds=self._lease_seconds,
                attempt=item.attempt,
            )

    async def _call(self, call: Callable[[], Any]) -> Any:
        """A provider call about a batch, made again while it is rate limited or fails
        for a while."""
        tries = 0
        while True:
            try:
                return await call()
            except (RateLimited, Overloaded, TransientError) as exc:
                tries += 1
                if tries >= self._retry.max_attempts:
                    raise
                delay = self._retry.backoff(tries, self._rng)
                retry_after = getattr(exc, "retry_after", None) or 0.0
                await trio.sleep(max(delay, retry_after))
