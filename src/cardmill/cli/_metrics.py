"""``--metrics-port`` and ``--otel``: metrics of a command's runs, for its duration."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from functools import partial
from typing import Any, TypeVar, final

import attrs
import click
import trio

from .._extras import require
from ..engine import Event, Observer
from ..errors import InputError
from ..metrics import EngineMetrics, otlp_reader, prometheus_text, serve_metrics
from ..providers import Provider

__all__ = ["metrics_options", "metrics_settings", "observed", "run_with_metrics"]

T = TypeVar("T")
_KEY = "cardmill.metrics"
_ACTIVE: ContextVar[EngineMetrics | None] = ContextVar("cardmill_cli_metrics", default=None)
_SHUTDOWN_SECONDS = 5.0


@final
@attrs.frozen
class MetricsSettings:
    """What the command line asked for: a port to serve ``/metrics`` on, OTLP export."""

    port: int | None = None
    otel: bool = False


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    chosen = ctx.meta.get(_KEY, MetricsSettings())
    if param.name == "metrics_port" and value is not None:
        chosen = attrs.evolve(chosen, port=value)
    elif param.name == "otel" and value:
        chosen = attrs.evolve(chosen, otel=True)
    ctx.meta[_KEY] = chosen


def metrics_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--metrics-port N`` and ``--otel``, kept in the click context rather than passed
    to the command: `execute` reads them."""
    fn = click.option(
        "--otel",
        is_flag=True,
        expose_value=False,
        callback=_remember,
        help="Export metrics through OTLP, as the OTEL_EXPORTER_OTLP_* variables say "
        "(the otlp extra).",
    )(fn)
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        metavar="PORT",
        expose_value=False,
        callback=_remember,
        help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics while the command "
        "runs (0: any free port; the metrics extra).",
    )(fn)


def metrics_settings() -> MetricsSettings | None:
    """The metrics the running command asked for, None when none."""
    ctx = click.get_current_context(silent=True)
    chosen = ctx.meta.get(_KEY) if ctx is not None else None
    if isinstance(chosen, MetricsSettings) and (chosen.port is not None or chosen.otel):
        return chosen
    return None


def observed(provider: Provider, observer: Observer | Callable[[Event], None] | None) -> Any:
    """``observer``, recording the engine's events first when metrics are on."""
    metrics = _ACTIVE.get()
    if metrics is None:
        return observer
    model = getattr(provider, "model", None)
    return metrics.observer(
        provider=provider.name, model=model if isinstance(model, str) else None, then=observer
    )


async def run_with_metrics(
    chosen: MetricsSettings, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any
) -> T:
    """``fn(*args)`` with metrics on: served on loopback, exported through OTLP, or both,
    until it returns."""
    require("opentelemetry.sdk.metrics", extra="metrics", feature="metrics")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
    from opentelemetry.sdk.resources import Resource

    readers: list[MetricReader] = []
    if chosen.otel:
        readers.append(otlp_reader())
    memory = InMemoryMetricReader() if chosen.port is not None else None
    if memory is not None:
        readers.append(memory)
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES still win over this default name.
    resource = Resource.create({"service.name": "cardmill"})
    meter_provider = MeterProvider(metric_readers=readers, resource=resource)
    token = _ACTIVE.set(EngineMetrics(meter_provider))
    try:
        async with trio.open_nursery() as nursery:
            if memory is not None and chosen.port is not None:
                try:
                    render = partial(prometheus_text, memory)
                    port = await nursery.start(partial(serve_metrics, render, port=chosen.port))
                except OSError as exc:
                    raise InputError(
                        f"--metrics-port {chosen.port}: cannot listen on 127.0.0.1: "
                        f"{exc.strerror or exc}"
                    ) from None
                if sys.stderr is not None:  # None when started with stderr closed
                    where = f"http://127.0.0.1:{port}/metrics"
                    print(f"cardmill: metrics at {where}", file=sys.stderr, flush=True)
            try:
                return await fn(*args)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        _ACTIVE.reset(token)
        # The last export (OTLP) goes out before the command ends, within a bound.
        with trio.move_on_after(_SHUTDOWN_SECONDS, shield=True):
            await trio.to_thread.run_sync(
                partial(meter_provider.shutdown, timeout_millis=_SHUTDOWN_SECONDS * 1000),
                abandon_on_cancel=True,
            )
