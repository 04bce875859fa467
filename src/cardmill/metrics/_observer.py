"""OpenTelemetry instruments, and the observer that feeds them the engine's events."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Final, final

from .._extras import require
from ..engine import (
    BatchEnded,
    BatchProgress,
    BatchSubmitted,
    Event,
    Observer,
    RateChanged,
    RateLimitHit,
    RequestFinished,
    RunFinished,
    UploadCompleted,
    UploadFailed,
    UploadRetrying,
    UploadStarted,
)
from ..errors import Overloaded
from ..model import BatchCounts

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

__all__ = ["EngineMetrics", "MetricsObserver"]

log = logging.getLogger("cardmill.metrics")

Attributes = tuple[tuple[str, str], ...]

BATCH_REQUEST_STATES: Final = ("processing", "succeeded", "errored", "canceled", "expired")
"""The states a provider tallies a batch's requests in (``cardmill.batch.request.state``)."""

OPERATION: Final = "chat"
"""``gen_ai.operation.name`` of every request: a Messages or chat completions call."""

# The bucket boundaries OpenTelemetry's generative AI conventions ask for.
TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
DURATION_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)


@final
class EngineMetrics:
    """The instruments of cardmill's metrics on one OpenTelemetry meter provider.

    Make one per meter provider, and an [observer][cardmill.metrics.EngineMetrics.observer]
    per engine. Names follow OpenTelemetry's semantic conventions for generative AI
    where they have one (``gen_ai.client.operation.duration``,
    ``gen_ai.client.token.usage``), and are ``cardmill.*`` elsewhere; the
    [metrics guide](../metrics.md) lists them all.

    Args:
        meter_provider: where the instruments live; the global one by default (which
            records nothing until an SDK is installed as the global provider).

    Raises:
        MissingExtra: OpenTelemetry is not installed (the ``metrics`` extra).

    Example:
        ```python
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        metrics = EngineMetrics(MeterProvider(metric_readers=[reader]))
        engine = Engine(storage, provider, observer=metrics.observer(provider=provider.name))
        await engine.execute(run.id)
        print(prometheus_text(reader))
        ```
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        require("opentelemetry.metrics", extra="metrics", feature="metrics")
        from opentelemetry import metrics as otel

        from .._version import __version__

        provider = meter_provider if meter_provider is not None else otel.get_meter_provider()
        meter = provider.get_meter("cardmill", __version__)
        self._observers: weakref.WeakSet[MetricsObserver] = weakref.WeakSet()
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="Seconds each request to the provider took, answered or not.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Input (cache reads and writes included) and output tokens per request.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.requests = meter.create_counter(
            "cardmill.requests",
            unit="{request}",
            description="Requests sent to the provider; error.type names a failure.",
        )
        self.rate_limited = meter.create_counter(
            "cardmill.rate_limited",
            unit="{response}",
            description="429 answers, by the limit they named.",
        )
        self.overloaded = meter.create_counter(
            "cardmill.overloaded",
            unit="{response}",
            description="529 overloaded answers (not our quota).",
        )
        self.retries = meter.create_counter(
            "cardmill.retries", unit="{retry}", description="Requests made again after a failure."
        )
        self.tokens = meter.create_counter(
            "cardmill.tokens",
            unit="{token}",
            description="Tokens reported, by type: uncached input, output, cache read and write.",
        )
        self.cost = meter.create_counter(
            "cardmill.cost",
            unit="USD",
            description="What the engine recorded the reported tokens at (the stored cost).",
        )
        self.uploads = meter.create_counter(
            "cardmill.uploads",
            unit="{upload}",
            description="Uploads that ended, by status (completed or failed).",
        )
        self.runs = meter.create_counter(
            "cardmill.runs", unit="{run}", description="Executions that ended, by run status."
        )
        self.batches = meter.create_counter(
            "cardmill.batches",
            unit="{batch}",
            description="Provider batches submitted (or re-attached after a restart).",
        )
        self.batch_uploads = meter.create_counter(
            "cardmill.batch.uploads",
            unit="{upload}",
            description="Uploads of ended batches, by what became of them: "
            "completed, failed or released (to go in a later batch).",
        )
        meter.create_observable_gauge(
            "cardmill.batch.requests",
            callbacks=[self._batch_requests],
            unit="{request}",
            description="Requests of open batches, by the state the provider last gave them.",
        )
        gauges: list[tuple[str, str, str, Callable[[MetricsObserver], float | None]]] = [
            (
                "cardmill.batches.open",
                "{batch}",
                "Provider batches submitted and not yet collected.",
                lambda o: float(len(o._batches)),
            ),
            (
                "cardmill.uploads.in_flight",
                "{upload}",
                "Uploads being worked on now.",
                lambda o: float(len(o._held)),
            ),
            (
                "cardmill.rate.requests",
                "{request}/s",
                "The pace of requests now (absent while unpaced).",
                lambda o: o._rate.requests_per_second if o._rate else None,
            ),
            (
                "cardmill.rate.input_tokens",
                "{token}/s",
                "The pace of input tokens now (absent while unpaced).",
                lambda o: o._rate.input_tokens_per_second if o._rate else None,
            ),
            (
                "cardmill.limit.requests",
                "{request}/s",
                "The provider's request limit as learnt (absent while unknown).",
                lambda o: o._rate.estimated_requests_per_second if o._rate else None,
            ),
            (
                "cardmill.limit.input_tokens",
                "{token}/s",
                "The provider's input-token limit as learnt (absent while unknown).",
                lambda o: o._rate.estimated_input_tokens_per_second if o._rate else None,
            ),
        ]
        for name, unit, description, read in gauges:
            meter.create_observable_gauge(
                name, callbacks=[self._gauge(read)], unit=unit, description=description
            )

    def observer(
        self,
        *,
        provider: str | None = None,
        model: str | None = None,
        then: Observer | Callable[[Event], None] | None = None,
    ) -> MetricsObserver:
        """An observer for one engine, recording its events here.

        Args:
            provider: ``gen_ai.provider.name`` (``anthropic``, ``openai``, ...), the
                provider's ``name``.
            model: ``gen_ai.request.model``, the provider's ``model`` when it has one.
            then: another observer, called with every event after it is recorded (the
                CLI's progress display, your own).
        """
        observer = MetricsObserver(self, provider, model, then)
        self._observers.add(observer)
        return observer

    def _batch_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        values: dict[Attributes, float] = {}
        for observer in list(self._observers):
            for _, counts in list(observer._batches.values()):
                for state in BATCH_REQUEST_STATES:
                    key = (
                        *observer.attributes_key,
                        ("cardmill.batch.request.state", state),
                    )
                    values[key] = values.get(key, 0.0) + getattr(counts, state)
        return [Observation(v, dict(k)) for k, v in values.items()]

    def _gauge(
        self, read: Callable[[MetricsObserver], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            from opentelemetry.metrics import Observation

            # Engines of one provider and model (a worker's, one per recipe) add up.
            values: dict[Attributes, float] = {}
            for observer in list(self._observers):
                value = read(observer)
                if value is not None:
                    key = observer.attributes_key
                    values[key] = values.get(key, 0.0) + value
            return [Observation(v, dict(k)) for k, v in values.items()]

        return callback


@final
class MetricsObserver:
    """Records one engine's events on [`EngineMetrics`][cardmill.metrics.EngineMetrics]'
    instruments, then passes each event on to ``then``.

    Recording never stops a run: an instrument that raises is logged and skipped. The
    observer passed as ``then`` raises as it would on its own.
    """

    def __init__(
        self,
        metrics: EngineMetrics,
        provider: str | None,
        model: str | None,
        then: Observer | Callable[[Event], None] | None,
    ) -> None:
        base = {"gen_ai.operation.name": OPERATION}
        if provider:
            base["gen_ai.provider.name"] = provider
        if model:
            base["gen_ai.request.model"] = model
        self.attributes: Mapping[str, str] = base
        self.attributes_key: Attributes = tuple(sorted(base.items()))
        self._metrics = metrics
        self._then = then
        self._held: dict[str, str] = {}  # upload id -> run id, uploads in flight
        self._rate: RateChanged | None = None
        # Open batch id -> its run id and the provider's last counts of it.
        self._batches: dict[str, tuple[str, BatchCounts]] = {}
        self._batches_seen: set[str] = set()

    def __call__(self, event: Event, /) -> None:
        try:
            self._record(event)
        except Exception:
            log.exception("could not record %s", type(event).__name__)
        if self._then is not None:
            self._then(event)

    def _with(self, key: str, value: str) -> dict[str, str]:
        return {**self.attributes, key: value}

    def _record(self, event: Event) -> None:
        m = self._metrics
        if isinstance(event, RequestFinished):
            attributes = dict(self.attributes)
            if event.error is not None:
                attributes["error.type"] = event.error
            m.requests.add(1, attributes)
            m.duration.record(max(event.duration, 0.0), attributes)
            if event.error == Overloaded.__name__:
                m.overloaded.add(1, self.attributes)
            usage = event.usage
            if usage is not None:
                prompt = (
                    usage.input_tokens
                    + usage.cache_read_input_tokens
                    + usage.cache_creation_input_tokens
                )
                m.token_usage.record(prompt, self._with("gen_ai.token.type", "input"))
                m.token_usage.record(usage.output_tokens, self._with("gen_ai.token.type", "output"))
                for kind, count in (
                    ("input", usage.input_tokens),
                    ("output", usage.output_tokens),
                    ("cache_read", usage.cache_read_input_tokens),
                    ("cache_write", usage.cache_creation_input_tokens),
                ):
                    m.tokens.add(count, self._with("cardmill.token.type", kind))
            if event.cost_usd is not None:
                # The engine's own price of the request: the metric and the stored cost agree.
                m.cost.add(event.cost_usd, self.attributes)
        elif isinstance(event, RateLimitHit):
            kind = event.limit.value if event.limit is not None else "unknown"
            m.rate_limited.add(1, self._with("cardmill.limit", kind))
        elif isinstance(event, UploadRetrying):
            m.retries.add(1, self.attributes)
        elif isinstance(event, UploadStarted):
            self._held[event.upload.id] = event.upload.run_id
        elif isinstance(event, UploadCompleted | UploadFailed):
            self._held.pop(event.upload.id, None)
            status = "completed" if isinstance(event, UploadCompleted) else "failed"
            m.uploads.add(1, self._with("cardmill.upload.status", status))
        elif isinstance(event, BatchSubmitted):
            if event.batch.id not in self._batches_seen:
                self._batches_seen.add(event.batch.id)
                m.batches.add(1, self.attributes)
            self._batches[event.batch.id] = (event.batch.run_id, event.batch.counts)
        elif isinstance(event, BatchProgress):
            if event.batch.id in self._batches or event.batch.state.open:
                self._batches[event.batch.id] = (event.batch.run_id, event.counts)
        elif isinstance(event, BatchEnded):
            self._batches.pop(event.batch.id, None)
            for status, count in (
                ("completed", event.completed),
                ("failed", event.failed),
                ("released", event.released),
            ):
                m.batch_uploads.add(count, self._with("cardmill.upload.status", status))
        elif isinstance(event, RateChanged):
            self._rate = event
        elif isinstance(event, RunFinished):
            run = event.summary.run
            # What is still held (a lost lease, a cancelled run) is no longer worked on.
            for upload_id in [u for u, r in self._held.items() if r == run.id]:
                del self._held[upload_id]
            # Batches left open (Ctrl-C) go on at the provider, watched by no one here.
            for batch_id in [b for b, (r, _) in self._batches.items() if r == run.id]:
                del self._batches[batch_id]
            m.runs.add(1, self._with("cardmill.run.status", run.status.value))
