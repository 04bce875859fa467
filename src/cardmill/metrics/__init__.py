"""Metrics of runs: OpenTelemetry instruments fed by the engine's events, and the
Prometheus text format of them.

Nothing here imports OpenTelemetry until it is used (the ``metrics`` extra installs it):
a program that never builds [`EngineMetrics`][cardmill.metrics.EngineMetrics] never loads
it.
"""

from __future__ import annotations

from ._observer import EngineMetrics as EngineMetrics
from ._observer import MetricsObserver as MetricsObserver
from ._otlp import otlp_reader as otlp_reader
from ._prometheus import PROMETHEUS_CONTENT_TYPE as PROMETHEUS_CONTENT_TYPE
from ._prometheus import prometheus_text as prometheus_text
from ._serve import serve_metrics as serve_metrics
from ._stored import storage_prometheus_text as storage_prometheus_text

__all__ = [
    "PROMETHEUS_CONTENT_TYPE",
    "EngineMetrics",
    "MetricsObserver",
    "otlp_reader",
    "prometheus_text",
    "serve_metrics",
    "storage_prometheus_text",
]
