"""Progress on stderr: a live line on a terminal, plain periodic lines elsewhere."""

from __future__ import annotations

import math
from typing import TextIO

import trio

from .._printable import printable
from ..engine import (
    BatchEnded,
    BatchProgress,
    BatchSubmitted,
    Engine,
    Event,
    RateLimitHit,
    RunFinished,
    UploadCompleted,
    UploadFailed,
    UploadRetrying,
)
from ..model import BatchCounts, Run
from ._words import counted

__all__ = ["Progress"]


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--:--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Counts engine events and renders them.

    Args:
        run: the run at start (for totals and what was already done).
        stream: where to write (stderr; None when it is closed).
        live: redraw one line in place (a terminal) instead of printing lines.
        interval: seconds between plain lines.
        batch: the run goes through a provider's batch API: show its batches' counts
            instead of requests in flight and the rate.
    """

    def __init__(
        self,
        run: Run,
        stream: TextIO | None,
        *,
        live: bool,
        interval: float = 5.0,
        batch: bool = False,
    ) -> None:
        self.total = run.total_items
        self.done = run.completed_items + run.failed_items
        self.cards = run.total_cards
        self.failed = run.failed_items
        self.rate_limited = 0
        self.retries = 0
        self._stream = stream
        self._live = live
        self._interval = 0.2 if live else interval
        self._engine: Engine | None = None
        self._started = trio.current_time()
        self._done_at_start = self.done
        self._drawn = False
        self._batch = batch
        self.batches: dict[str, BatchCounts] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, UploadCompleted):
            self.done += 1
            self.cards += event.card_count
        elif isinstance(event, UploadFailed):
            self.done += 1
            self.failed += 1
            self._print(f"failed: {printable(event.reason)}")
        elif isinstance(event, RateLimitHit):
            self.rate_limited += 1
        elif isinstance(event, UploadRetrying):
            self.retries += 1
        elif isinstance(event, BatchSubmitted):
            self.batches[event.batch.id] = event.batch.counts
        elif isinstance(event, BatchProgress):
            self.batches[event.batch.id] = event.counts
        elif isinstance(event, BatchEnded):
            self.batches.pop(event.batch.id, None)
        elif isinstance(event, RunFinished):
            self.done = event.summary.run.completed_items + event.summary.run.failed_items

    def _write(self, text: str) -> None:
        """Write and flush; a stderr that is closed, or whose reader went away, only
        silences the progress: the run goes on, and its result still goes to stdout."""
        if self._stream is None:
            return
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # EPIPE, EBADF; ValueError: a closed file
            self._stream = None

    def _print(self, line: str) -> None:
        prefix = "\r\x1b[2K" if self._live and self._drawn else ""
        self._write(prefix + line + "\n")
        self._drawn = False

    def line(self) -> str:
        """The current state in one line."""
        if self._batch:
            return self._batch_line()
        engine = self._engine
        in_flight = engine.in_flight if engine is not None else 0
        rate = engine.bucket.requests_per_second if engine is not None else None
        elapsed = trio.current_time() - self._started
        finished_here = self.done - self._done_at_start
        remaining = self.total - self.done
        eta = remaining * elapsed / finished_here if finished_here else math.inf
        rate_text = "unpaced" if rate is None else f"{rate * 60:.0f}/min"
        return (
            f"{self.done}/{counted(self.total, 'upload')} · {counted(self.cards, 'card')} · "
            f"{in_flight} in flight · "
            f"rate {rate_text} · {self.rate_limited}×429 · ETA {_duration(eta)}"
        )

    def _batch_line(self) -> str:
        c = self.batches.values()
        processing = sum(b.processing for b in c)
        succeeded = sum(b.succeeded for b in c)
        errored = sum(b.errored for b in c)
        ended = sum(b.canceled + b.expired for b in c)
        elapsed = trio.current_time() - self._started
        return (
            f"{self.done}/{counted(self.total, 'upload')} · {counted(self.cards, 'card')} · "
            f"{counted(len(self.batches), 'batch', 'batches')} open: {processing} processing, "
            f"{succeeded} succeeded, {errored} errored, {ended} canceled or expired · "
            f"{_duration(elapsed)} elapsed"
        )

    def draw(self) -> None:
        if self._live:
            width = 20
            filled = width * self.done // self.total if self.total else width
            bar = "█" * filled + "░" * (width - filled)
            self._write(f"\r\x1b[2K{bar} {self.line()}")
            self._drawn = True
        else:
            self._write(f"progress: {self.line()}\n")

    def clear(self) -> None:
        if self._live and self._drawn:
            self._write("\r\x1b[2K")
            self._drawn = False

    async def run(self, engine: Engine | None = None) -> None:
        """Redraw until cancelled (an engine's requests in flight and rate, if given)."""
        self._engine = engine
        try:
            while True:
                await trio.sleep(self._interval)
                self.draw()
        finally:
            self.clear()
