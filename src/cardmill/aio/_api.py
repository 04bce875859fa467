"""cardmill's jobs as asyncio coroutines, each run in the loop's trio guest run."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import AsyncIterator, Iterable

from .. import _jobs
from .._jobs import DEFAULT_DB, ProviderChoice, RunProgress, Source
from .._recipe import Recipe
from ..engine import Limits, Observer, RunSummary
from ..errors import InputError
from ..model import Card, Run, Upload, UploadStatus
from ._bridge import call

__all__ = [
    "analyze",
    "create_run",
    "follow",
    "get_run",
    "list_cards",
    "list_runs",
    "list_uploads",
    "progress",
    "resume",
]


async def analyze(
    sources: Iterable[Source],
    *,
    db: str = DEFAULT_DB,
    provider: ProviderChoice = None,
    model: str | None = None,
    recipe: Recipe | str | None = None,
    concurrency: int = 2,
    name: str | None = None,
    limits: Limits | None = None,
    max_cost: float | None = None,
    observer: Observer | None = None,
    reuse: bool = True,
) -> RunSummary:
    """Make a run of ``sources`` and analyse it, as ``cardmill analyze`` does.

    Args:
        sources: paths of files and folders (walked as the CLI walks them) and
            `Document`s; a file that cannot be read becomes a FAILED upload.
        db: a SQLite file (made if missing) or a PostgreSQL URL.
        provider: ``None`` (Claude when ``ANTHROPIC_API_KEY`` is set, else offline), a
            provider's name, or a `Provider` of yours, which you close.
        model: the model of a provider named here.
        recipe: a `Recipe`, a built-in recipe's name or a TOML file.
        concurrency: uploads analysed at once.
        name: the run's name (by default, from its sources).
        limits: the provider's rate limits, if known.
        max_cost: stop sending once the run would cost more (US dollars).
        observer: called with each engine event, on the loop's thread; keep it quick.
        reuse: complete a document answered before (in any run of ``db``) from that
            answer, without a request; False sends everything.

    Cancelled, the run stops as under a trio cancel scope: in-flight uploads go back to
    PENDING and the run is CANCELLED before the cancellation reaches you; `resume` it.

    Raises:
        InputError: a path does not exist, the sources hold no document, or a recipe,
            provider or cost cap that cannot be used.
        StorageError: the database failed.
    """
    return await call(
        functools.partial(
            _jobs.analyze,
            sources,
            db=db,
            provider=provider,
            model=model,
            recipe=recipe,
            concurrency=concurrency,
            name=name,
            limits=limits,
            max_cost=max_cost,
            observer=observer,
            reuse=reuse,
        )
    )


async def resume(
    run_id: str,
    *,
    db: str = DEFAULT_DB,
    provider: ProviderChoice = None,
    model: str | None = None,
    concurrency: int = 2,
    limits: Limits | None = None,
    max_cost: float | None = None,
    observer: Observer | None = None,
    reuse: bool = True,
) -> RunSummary:
    """Go on with a run (PENDING, CANCELLED, or stopped by a crash) where it stopped,
    with the provider and model it was made with, as ``cardmill resume`` does.
    ``run_id`` may be ``"latest"``; a finished run is left as it is. The options are
    `analyze`'s.

    Raises:
        RunNotFound: no run has this id.
        InputError: another provider or model than the run's, or the run has open
            provider batches (``cardmill resume`` collects them).
    """
    return await call(
        functools.partial(
            _jobs.resume,
            run_id,
            db=db,
            provider=provider,
            model=model,
            concurrency=concurrency,
            limits=limits,
            max_cost=max_cost,
            observer=observer,
            reuse=reuse,
        )
    )


async def create_run(
    sources: Iterable[Source],
    *,
    db: str = DEFAULT_DB,
    name: str | None = None,
    recipe: Recipe | str | None = None,
    provider: ProviderChoice = None,
    model: str | None = None,
) -> Run:
    """Store a new PENDING run of ``sources`` without analysing it: `resume` in this
    process, or ``cardmill worker`` processes on the same database, analyse it later.

    Its uploads are the `Document`s of ``sources`` in their order, then the files its
    paths name. It keeps the recipe, provider and model it is to be analysed with;
    ``provider=None`` is resolved here, in this process's environment. Nothing is sent,
    so no API key is needed to make a run (``provider="anthropic"`` for workers that hold
    one).

    Raises:
        InputError: as `analyze`.
    """
    return await call(
        functools.partial(
            _jobs.create_run,
            sources,
            db=db,
            name=name,
            recipe=recipe,
            provider=provider,
            model=model,
        )
    )


async def get_run(run_id: str, *, db: str = DEFAULT_DB) -> Run:
    """A run (``"latest"``: the newest). Raises RunNotFound."""
    return await call(functools.partial(_jobs.get_run, run_id, db=db))


async def list_runs(*, db: str = DEFAULT_DB) -> list[Run]:
    """Every run of the database, oldest first."""
    return await call(functools.partial(_jobs.list_runs, db=db))


async def list_uploads(
    run_id: str, *, db: str = DEFAULT_DB, status: UploadStatus | None = None
) -> list[Upload]:
    """A run's uploads in their order (only those with ``status``, if given)."""
    return await call(functools.partial(_jobs.list_uploads, run_id, db=db, status=status))


async def list_cards(
    run_id: str, *, db: str = DEFAULT_DB, upload_id: str | None = None
) -> list[Card]:
    """A run's cards (only one upload's, if given)."""
    return await call(functools.partial(_jobs.list_cards, run_id, db=db, upload_id=upload_id))


async def progress(run_id: str, *, db: str = DEFAULT_DB) -> RunProgress:
    """A run and its uploads, read in one go."""
    return await call(functools.partial(_jobs.progress, run_id, db=db))


async def follow(
    run_id: str, *, db: str = DEFAULT_DB, interval: float = 0.5
) -> AsyncIterator[RunProgress]:
    """A run's progress as it changes: the run and its uploads, read every ``interval``
    seconds and yielded when anything changed, the last time once the run is finished
    (SUCCEEDED, PARTIAL or FAILED).

    It reads the database, so it follows a run wherever it is analysed: in this process,
    in another, or by ``cardmill worker`` processes on other machines. ``run_id`` may be
    ``"latest"``.

    Raises:
        RunNotFound: no run has this id.
        InputError: ``interval`` is not a positive number of seconds.
    """
    if isinstance(interval, bool) or not (
        isinstance(interval, int | float) and math.isfinite(interval) and interval > 0
    ):
        raise InputError(f"interval: {interval!r} is not a positive number of seconds")
    last: RunProgress | None = None
    while True:
        now = await progress(run_id, db=db)
        run_id = now.run.id  # "latest" names one run from here on
        if now != last:
            yield now
            last = now
        if now.finished:
            return
        await asyncio.sleep(interval)
