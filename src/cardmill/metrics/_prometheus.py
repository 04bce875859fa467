"""The Prometheus text format (0.0.4) of what an OpenTelemetry metric reader holds.

A small renderer rather than OpenTelemetry's Prometheus exporter: that exporter (still a
beta release) registers its collector in ``prometheus_client``'s process-wide registry and
serves it from a thread, where this reads any reader's data on demand, from whatever
serves it: a trio server, a web app's route.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final

from .._printable import printable

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricReader

__all__ = ["PROMETHEUS_CONTENT_TYPE", "escape", "help_text", "number", "prometheus_text"]

PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` to serve [`prometheus_text`][cardmill.metrics.prometheus_text] with."""

_INVALID_NAME: Final = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL: Final = re.compile(r"[^a-zA-Z0-9_]")
_ANNOTATION: Final = re.compile(r"\{[^}]*\}")
_UNITS: Final = {
    "s": "seconds",
    "ms": "milliseconds",
    "By": "bytes",
    "USD": "usd",
    "1": "ratio",
}


def prometheus_text(reader: MetricReader) -> str:
    """Collect ``reader`` and render its metrics in Prometheus's text format 0.0.4.

    Serve it at ``/metrics`` with
    [`PROMETHEUS_CONTENT_TYPE`][cardmill.metrics.PROMETHEUS_CONTENT_TYPE]. The reader
    must keep cumulative data (OpenTelemetry's ``InMemoryMetricReader`` does by
    default). Names follow OpenTelemetry's Prometheus compatibility rules: dots become
    underscores, the unit is appended (``_seconds``, ``_usd``, ``/s`` as
    ``_per_second``, ``{token}`` annotations dropped), counters end in ``_total``, and
    histograms give ``_bucket``, ``_sum`` and ``_count`` series.

    Args:
        reader: an OpenTelemetry SDK metric reader that can be collected on demand
            (``InMemoryMetricReader``).
    """
    from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum

    data = reader.get_metrics_data()  # type: ignore[attr-defined]
    families: dict[str, tuple[str, str, list[str]]] = {}
    for resource_metrics in data.resource_metrics if data is not None else ():
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                point_data = metric.data
                if isinstance(point_data, Sum) and point_data.is_monotonic:
                    kind, suffix = "counter", "_total"
                elif isinstance(point_data, Sum | Gauge):
                    kind, suffix = "gauge", ""
                elif isinstance(point_data, Histogram):
                    kind, suffix = "histogram", ""
                else:
                    continue  # exponential histograms have no 0.0.4 form
                name = _metric_name(metric.name, metric.unit or "")
                family = families.setdefault(name, (kind, metric.description or "", []))
                if family[0] != kind:
                    continue  # two instruments render to one name: keep the first
                lines = family[2]
                for point in point_data.data_points:
                    labels = _labels(point.attributes or {})
                    if kind == "histogram":
                        lines.extend(_histogram(name, labels, point))
                    else:
                        lines.append(f"{name}{suffix}{_braces(labels)} {number(point.value)}")
    out: list[str] = []
    for name, (kind, description, lines) in families.items():
        out.append(f"# HELP {name}{'_total' if kind == 'counter' else ''} {help_text(description)}")
        out.append(f"# TYPE {name}{'_total' if kind == 'counter' else ''} {kind}")
        out.extend(lines)
    return "".join(line + "\n" for line in out)


def _metric_name(name: str, unit: str) -> str:
    base = _INVALID_NAME.sub("_", name)
    words = _unit_words(unit)
    if words and not base.endswith(f"_{words}"):
        base = f"{base}_{words}"
    base = re.sub(r"__+", "_", base)
    return base if not base[:1].isdigit() else f"_{base}"


def _unit_words(unit: str) -> str:
    unit = _ANNOTATION.sub("", unit).strip()
    if not unit:
        return ""
    per = ""
    if "/" in unit:
        unit, _, denominator = unit.partition("/")
        per = {"s": "second", "m": "minute", "h": "hour"}.get(denominator, denominator)
    words = _UNITS.get(unit, unit) if unit else ""
    if per:
        words = f"{words}_per_{per}" if words else f"per_{per}"
    return _INVALID_NAME.sub("_", words)


def _labels(attributes: Mapping[str, object]) -> list[tuple[str, str]]:
    labels: dict[str, str] = {}
    for key, value in sorted(attributes.items()):
        name = _INVALID_LABEL.sub("_", key)
        if name[:1].isdigit():
            name = f"key_{name}"
        text = str(value).lower() if isinstance(value, bool) else str(value)
        # Keys that meet after sanitising are joined, as the compatibility rules say.
        labels[name] = f"{labels[name]};{text}" if name in labels else text
    return list(labels.items())


def _braces(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{escape(v)}"' for k, v in labels)
    return f"{{{inner}}}" if inner else ""


def _histogram(name: str, labels: list[tuple[str, str]], point: object) -> list[str]:
    bounds = list(getattr(point, "explicit_bounds", ()))
    counts = list(getattr(point, "bucket_counts", ()))
    lines = []
    total = 0
    for bound, count in zip([*bounds, math.inf], counts, strict=False):
        total += count
        le = [*labels, ("le", number(float(bound)))]
        lines.append(f"{name}_bucket{_braces(le)} {total}")
    lines.append(f"{name}_sum{_braces(labels)} {number(getattr(point, 'sum', 0))}")
    lines.append(f"{name}_count{_braces(labels)} {getattr(point, 'count', total)}")
    return lines


def number(value: object) -> str:
    """A sample value as the text format spells it (``NaN``, ``+Inf``, ``-Inf``)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    amount = float(value)  # type: ignore[arg-type]
    if math.isnan(amount):
        return "NaN"
    if math.isinf(amount):
        return "+Inf" if amount > 0 else "-Inf"
    return repr(amount)


def escape(text: str) -> str:
    """A label value, escaped for the text format; control and bidirectional characters
    (a run's name is the user's) shown as backslash escapes, as everywhere else."""
    shown = printable(text, lines=True)
    return shown.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def help_text(text: str) -> str:
    """A ``# HELP`` text, escaped for the text format."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")
