"""Runs through a provider's batch API on the command line: progress, and Ctrl-C once
(stop looking, leave the batches live) or twice (cancel them); SIGTERM as one Ctrl-C."""

from __future__ import annotations

import signal
import sys
from typing import Any, Final

import click
import trio

from .._printable import printable
from ..engine import BatchExecutor, RunSummary
from ..errors import InputError
from ..model import Batch, Run
from ..providers import BatchProvider, Provider
from ..storage import Storage
from ._progress import Progress
from ._signals import STOP_SIGNALS, absorbing_late_sigterm, stopped_by

__all__ = [
    "SECOND_CTRL_C_SECONDS",
    "batch_provider",
    "batches_of",
    "batches_table",
    "run_batches",
]

#: How long, after a first Ctrl-C, a second one cancels the run's batches.
SECOND_CTRL_C_SECONDS: Final = 3.0


def batch_provider(provider: Provider) -> BatchProvider:
    """The provider, if it can send batches; else a one-line InputError."""
    if not isinstance(provider, BatchProvider):
        raise InputError(
            f"--batch: the {provider.name} provider cannot send batches; use --provider anthropic"
        )
    return provider


async def batches_of(storage: Storage, run_id: str, *, open_only: bool = False) -> list[Batch]:
    """The run's batches; none where the storage does not keep batches."""
    listing = getattr(storage, "list_batches", None)
    if listing is None:
        return []
    found: list[Batch] = await listing(run_id, open_only=open_only)
    return found


def batches_table(batches: list[Batch]) -> list[str]:
    """One line per batch, for ``cardmill show``."""
    lines = [
        f"{'BATCH':<22} {'STATE':<10} {'SIZE':>6} {'RUNNING':>7} {'OK':>6} {'ERRORED':>7} "
        f"{'ENDED':>6}  PROVIDER ID"
    ]
    for b in batches:
        c = b.counts
        lines.append(
            printable(
                f"{b.id:<22} {b.state.name:<10} {b.size:>6} {c.processing:>7} {c.succeeded:>6} "
                f"{c.errored:>7} {c.canceled + c.expired:>6}  {b.provider_batch_id or '-'}"
            )
        )
    return lines


async def run_batches(
    storage: Storage,
    run: Run,
    provider: BatchProvider,
    *,
    quiet: bool,
    submit: bool,
    resume_hint: str,
    cancel_hint: str,
    **options: Any,
) -> RunSummary:
    """Execute the run through the batch API with progress on stderr.

    The first Ctrl-C stops looking at the batches (they go on at the provider) and says
    how to collect or cancel them; a second within `SECOND_CTRL_C_SECONDS` cancels them.
    Otherwise KeyboardInterrupt is raised, as for any interrupted command. SIGTERM stops
    as one Ctrl-C does, at once (nobody is there to press a second): the batches go on,
    and `Terminated` is raised.
    """
    stderr = sys.stderr
    progress = Progress(run, stderr, live=stderr is not None and _isatty(stderr), batch=True)
    executor = BatchExecutor(storage, provider, observer=progress, **options)
    summary: RunSummary | None = None
    received: int = signal.SIGINT
    with absorbing_late_sigterm(), trio.open_signal_receiver(*STOP_SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            work = trio.CancelScope()

            async def first_ctrl_c() -> None:
                nonlocal received
                async for signum in signals:
                    received = signum
                    work.cancel()
                    return

            nursery.start_soon(first_ctrl_c)
            if not quiet:
                nursery.start_soon(progress.run)
            with work:
                summary = await executor.execute(run.id, submit=submit)
            nursery.cancel_scope.cancel()
        if summary is not None:
            return summary
        progress.clear()
        term = received == signal.SIGTERM
        click.echo(
            "\n"
            + printable(
                f"cardmill: {'terminated (SIGTERM)' if term else 'interrupted'}; the batches "
                f"of run {run.id} go on at the provider. Collect their results with: "
                f"{resume_hint}; cancel them with: {cancel_hint}"
                + ("" if term else f" (or press Ctrl-C again within {SECOND_CTRL_C_SECONDS:g} s)")
            ),
            err=True,
        )
        if term:
            raise stopped_by(received)
        again = False
        with trio.move_on_after(SECOND_CTRL_C_SECONDS):
            async for received in signals:
                if received == signal.SIGTERM:
                    raise stopped_by(received)
                again = True
                break
        if not again:
            raise KeyboardInterrupt
    click.echo(printable(f"cardmill: cancelling the batches of run {run.id}"), err=True)
    return await executor.cancel(run.id)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (OSError, ValueError):
        return False
