from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from cardmill import Document
from cardmill.metrics import EngineMetrics
from cardmill.providers import Analysis
from cardmill.testing import ScriptedProvider


class Named:
    """A scripted provider that names its model, so the engine prices its usage."""

    name = "anthropic"

    def __init__(self, inner: ScriptedProvider, model: str = "claude-haiku-4-5") -> None:
        self._inner = inner
        self.model = model

    async def analyze(self, document: Document) -> Analysis:
        return await self._inner.analyze(document)


@attrs.define
class Otel:
    reader: InMemoryMetricReader
    provider: MeterProvider
    metrics: EngineMetrics

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], Any]:
        """The data points of the metric called ``name``: attributes -> value (for a
        histogram, the point itself)."""
        found: dict[tuple[tuple[str, Any], ...], Any] = {}
        data = self.reader.get_metrics_data()
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        key = tuple(sorted((point.attributes or {}).items()))
                        found[key] = getattr(point, "value", point)
        return found

    def total(self, name: str, **where: str) -> Any:
        """The sum of the points of ``name`` whose attributes include ``where``
        (dots spelt as double underscores)."""
        wanted = {k.replace("__", "."): v for k, v in where.items()}
        return sum(
            value for key, value in self.points(name).items() if wanted.items() <= dict(key).items()
        )


@pytest.fixture
def otel() -> Iterator[Otel]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield Otel(reader, provider, EngineMetrics(provider))
    provider.shutdown()
