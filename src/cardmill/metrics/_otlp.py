"""A metric reader exporting through OTLP, configured by the standard OTEL_* variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from .._extras import require
from ..errors import InputError

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader

__all__ = ["otlp_reader"]

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
_PROTOCOLS = ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def otlp_reader(environ: Mapping[str, str] | None = None) -> MetricReader:
    """A periodic reader exporting to the OTLP endpoint the environment names.

    The exporter reads the standard variables itself (``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``..._HEADERS``, ``..._TIMEOUT``, ``OTEL_METRIC_EXPORT_INTERVAL``, their
    ``..._METRICS_...`` forms); an endpoint must be set. ``http/protobuf`` (the default
    protocol) needs the ``otlp`` extra; ``grpc`` needs
    ``opentelemetry-exporter-otlp-proto-grpc``.

    Args:
        environ: the environment to check (``os.environ`` by default).

    Raises:
        InputError: no endpoint is set, or the protocol is not ``http/protobuf`` or
            ``grpc``, or the grpc exporter is not installed.
        MissingExtra: the ``otlp`` extra is not installed.
    """
    env = os.environ if environ is None else environ
    if not any(env.get(name, "").strip() for name in _ENDPOINTS):
        raise InputError(
            "OTLP export needs an endpoint: set OTEL_EXPORTER_OTLP_ENDPOINT "
            "(e.g. http://127.0.0.1:4318)"
        )
    protocol = next((env[n].strip() for n in _PROTOCOLS if env.get(n, "").strip()), "")
    protocol = protocol or "http/protobuf"
    require("opentelemetry.sdk.metrics", extra="metrics", feature="metrics")
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    if protocol == "http/protobuf":
        module = "opentelemetry.exporter.otlp.proto.http.metric_exporter"
        require(module, extra="otlp", feature="OTLP export")
    elif protocol == "grpc":
        module = "opentelemetry.exporter.otlp.proto.grpc.metric_exporter"
        try:
            require(module, extra="otlp", feature="OTLP export")
        except ImportError:
            raise InputError(
                "OTLP export over grpc needs opentelemetry-exporter-otlp-proto-grpc: "
                "pip install opentelemetry-exporter-otlp-proto-grpc"
            ) from None
    else:
        raise InputError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf or grpc, not {protocol[:40]!r}"
        )
    import importlib

    exporter = importlib.import_module(module).OTLPMetricExporter()
    return PeriodicExportingMetricReader(exporter)
