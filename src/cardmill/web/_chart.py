"""A run's pace over time: completed uploads per minute, drawn as inline SVG bars.

The bars are counted in one pass over the uploads (their ``finished_at``), into a fixed
number of bins between the run's start and its end (or now): memory stays the size of
the chart, whatever the size of the run. A run sent as provider batches gets no chart:
a batch's uploads complete together when its results are collected, and the page shows
how far its batches are instead.

A bin is never narrower than a second, and a rate per minute is given only for a run
that spans a minute or more: the pace of a run over in a few seconds is its count and
its span, not an extrapolation of one busy second to a minute.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, final

import attrs

__all__ = ["Bar", "Chart", "CompletionBins"]

WIDTH: Final = 600
HEIGHT: Final = 120
_BINS: Final = 60
MIN_RATE_SPAN_SECONDS: Final = 60.0


@attrs.frozen
class Bar:
    """One bin: its rectangle in the SVG's coordinates, its count and its rate."""

    x: float
    y: float
    width: float
    height: float
    count: int
    per_minute: float
    start_seconds: float


@attrs.frozen
class Chart:
    """What the template draws: bars, the peak rate, and the span they cover.

    ``rated`` is False for a span under a minute: its rates would be extrapolated from
    seconds, so the page shows the count and the span alone."""

    bars: tuple[Bar, ...]
    peak_per_minute: float
    span_seconds: float
    total: int
    rated: bool = True
    width: int = WIDTH
    height: int = HEIGHT


@final
class CompletionBins:
    """Counts completion times into up to ``bins`` equal bins, each at least a second
    wide, from ``start`` to ``end``; a time outside them counts in the first or the last
    (clocks of several workers differ)."""

    def __init__(self, start: datetime, end: datetime, *, bins: int = _BINS) -> None:
        self._start = start.timestamp()
        self._span = max(end.timestamp() - self._start, 1.0)
        self._counts = [0] * max(min(bins, int(self._span)), 1)

    def add(self, finished_at: datetime) -> None:
        at = (finished_at.timestamp() - self._start) / self._span
        index = min(max(int(at * len(self._counts)), 0), len(self._counts) - 1)
        self._counts[index] += 1

    def chart(self) -> Chart:
        n = len(self._counts)
        seconds = self._span / n
        rates = [count * 60.0 / seconds for count in self._counts]
        peak = max(rates)
        most = max(self._counts)
        width = WIDTH / n
        bars = []
        for i, (count, rate) in enumerate(zip(self._counts, rates, strict=True)):
            height = 0.0 if most == 0 else count / most * (HEIGHT - 4)
            bars.append(
                Bar(
                    x=round(i * width, 2),
                    y=round(HEIGHT - height, 2),
                    width=round(width * 0.85, 2),
                    height=round(height, 2),
                    count=count,
                    per_minute=rate,
                    start_seconds=i * seconds,
                )
            )
        rated = self._span >= MIN_RATE_SPAN_SECONDS
        return Chart(tuple(bars), peak, self._span, sum(self._counts), rated)
