"""What an embedding program asks of cardmill, as trio functions with the CLI's defaults.

Each function opens the storage its ``db`` names (a SQLite path or a PostgreSQL URL, as
``--db``), does one thing and closes it. `cardmill.aio` runs them on an asyncio loop and
`cardmill.analyze_sync` from synchronous code; a trio program can call the engine itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final, TypeAlias, final

import attrs
import trio

from ._cost import DEFAULT_PRICES
from ._recipe import STUDY_CARDS, Recipe, load_recipe
from .cli._collect import Found, collect, read
from .cli._named import LATEST, named_run
from .cli._providers import for_run, make_provider, model_of
from .cli._runner import Spend, _check_cap, _close, database_made, make_engine, open_storage
from .engine import Limits, Observer, RunSummary
from .errors import CardmillError, InputError, RunNotFound
from .model import Card, Document, Run, Upload, UploadStatus
from .providers import Provider
from .storage import Storage

__all__ = [
    "DEFAULT_DB",
    "ProviderChoice",
    "RunProgress",
    "Source",
    "analyze",
    "create_run",
    "get_run",
    "list_cards",
    "list_runs",
    "list_uploads",
    "progress",
    "refuse_while_a_child_starts",
    "resume",
]

DEFAULT_DB: Final = "cardmill.db"
"""The database a call uses when given none, as the CLI does."""
#: The seconds a claimed upload is held without a heartbeat, as ``--lease``'s default.
_LEASE: Final = 60.0

Source: TypeAlias = "str | os.PathLike[str] | Document"
"""A document to analyse: a file or folder path (folders are walked as the CLI walks
them), or a `Document` made in memory."""
ProviderChoice: TypeAlias = "str | Provider | None"
"""``None`` or ``"auto"`` (Claude when ``ANTHROPIC_API_KEY`` is set, else the offline
extractive provider), a provider's name (``"anthropic"``, ``"openai"``, ``"extractive"``),
or a `Provider` of the caller's (which the caller closes)."""


@final
@attrs.frozen
class RunProgress:
    """A run as it stands, and each of its uploads (in their order)."""

    run: Run
    uploads: list[Upload]

    @property
    def finished(self) -> bool:
        """Whether the run is SUCCEEDED, PARTIAL or FAILED (a CANCELLED run goes on
        when it is resumed)."""
        return self.run.status.finished


async def create_run(
    sources: Iterable[Source],
    *,
    db: str = DEFAULT_DB,
    name: str | None = None,
    recipe: Recipe | str | None = None,
    provider: ProviderChoice = None,
    model: str | None = None,
) -> Run:
    """`cardmill.aio.create_run`, under trio."""
    chosen = await _recipe(recipe)
    # Nothing is sent here: a run stored for workers to analyse needs no key in this process.
    made, owned = _provider(provider, model, chosen, sending=False)
    try:
        async with open_storage(db, create=True) as storage:
            return await _create(storage, sources, name, chosen, made)
    finally:
        if owned:
            await _close(made)


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
    """`cardmill.aio.analyze`, under trio."""
    _check_concurrency(concurrency)
    chosen = await _recipe(recipe)
    made, owned = _provider(provider, model, chosen)
    try:
        _check_cap(made, DEFAULT_PRICES, Spend(max_cost=max_cost))
        async with open_storage(db, create=True) as storage:
            run = await _create(storage, sources, name, chosen, made)
            options = _Options(concurrency, limits, max_cost, observer, reuse)
            return await _execute(storage, run.id, made, options)
    finally:
        if owned:
            await _close(made)


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
    """`cardmill.aio.resume`, under trio."""
    _check_concurrency(concurrency)
    await _check_made(db, run_id)
    async with open_storage(db, create=False) as storage:
        run = await storage.get_run(await named_run(storage, run_id))
        recipe = await storage.get_recipe(run.id)
        if isinstance(provider, str | None):
            choice, chosen_model = for_run(run, provider or "auto", model)
            made, owned = _provider(choice, chosen_model, recipe)
        else:
            made, owned = provider, False
        try:
            _check_cap(made, DEFAULT_PRICES, Spend(max_cost=max_cost))
            if await storage.list_batches(run.id, open_only=True):
                raise InputError(
                    f"run {run.id} has open provider batches: go on with `cardmill resume {run.id}`"
                )
            options = _Options(concurrency, limits, max_cost, observer, reuse)
            return await _execute(storage, run.id, made, options)
        finally:
            if owned:
                await _close(made)


async def get_run(run_id: str, *, db: str = DEFAULT_DB) -> Run:
    """A run (``"latest"``: the newest). Raises RunNotFound."""
    await _check_made(db, run_id)
    async with open_storage(db, create=False) as storage:
        return await storage.get_run(await named_run(storage, run_id))


async def list_runs(*, db: str = DEFAULT_DB) -> list[Run]:
    """Every run of the database, oldest first (none, for a SQLite file not made yet)."""
    if not await database_made(db):
        return []
    async with open_storage(db, create=False) as storage:
        return await storage.list_runs()


async def list_uploads(
    run_id: str, *, db: str = DEFAULT_DB, status: UploadStatus | None = None
) -> list[Upload]:
    """A run's uploads in their order (only those with ``status``, if given)."""
    await _check_made(db, run_id)
    async with open_storage(db, create=False) as storage:
        return await storage.list_uploads(await named_run(storage, run_id), status)


async def list_cards(
    run_id: str, *, db: str = DEFAULT_DB, upload_id: str | None = None
) -> list[Card]:
    """A run's cards (only one upload's, if given)."""
    await _check_made(db, run_id)
    async with open_storage(db, create=False) as storage:
        return await storage.list_cards(await named_run(storage, run_id), upload_id)


async def progress(run_id: str, *, db: str = DEFAULT_DB) -> RunProgress:
    """A run and its uploads, read together."""
    await _check_made(db, run_id)
    async with open_storage(db, create=False) as storage:
        found = await named_run(storage, run_id)
        return RunProgress(await storage.get_run(found), await storage.list_uploads(found))


def refuse_while_a_child_starts() -> None:
    """Refuse to start a run in a process that multiprocessing is starting.

    cardmill reads PDFs in worker processes, which Python starts by importing the main
    script again: a script that calls cardmill at its top level, not under
    ``if __name__ == "__main__":``, would start a second run there.

    Raises:
        CardmillError: this process is a worker being started.
    """
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise CardmillError(
            "cardmill was called while this script was imported by a worker process "
            '(cardmill reads PDFs in one): call it under `if __name__ == "__main__":`'
        )


# -- helpers -----------------------------------------------------------------------------


@attrs.frozen
class _Options:
    concurrency: int
    limits: Limits | None
    max_cost: float | None
    observer: Observer | None
    reuse: bool = True


async def _execute(
    storage: Storage, run_id: str, provider: Provider, options: _Options
) -> RunSummary:
    engine = make_engine(
        storage,
        provider,
        concurrency=options.concurrency,
        limits=options.limits,
        lease=_LEASE,
        observer=options.observer,
        max_cost=options.max_cost,
        reuse=options.reuse,
    )
    return await engine.execute(run_id)


async def _check_made(db: str, run_id: str) -> None:
    """Reading a run from a SQLite file not made yet finds none, as an empty one would."""
    if not await database_made(db):
        if run_id == LATEST:
            raise InputError("RUN latest: there are no runs in this database yet")
        raise RunNotFound(run_id)


def _check_concurrency(concurrency: int) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InputError(f"concurrency: {concurrency!r} is not a whole number of at least 1")


async def _recipe(recipe: Recipe | str | None) -> Recipe:
    if recipe is None:
        return STUDY_CARDS
    if isinstance(recipe, Recipe):
        return recipe
    return await trio.to_thread.run_sync(load_recipe, recipe)


def _provider(
    choice: ProviderChoice, model: str | None, recipe: Recipe, *, sending: bool = True
) -> tuple[Provider, bool]:
    """The provider to use, and whether it was made here (and is closed here).
    ``sending=False``: only its name and model are needed, so no key is asked for."""
    if choice is None or isinstance(choice, str):
        name = choice or "auto"
        if name not in ("auto", "anthropic", "openai", "extractive"):
            raise InputError(
                f"provider: {name!r} is not one of auto, anthropic, openai, extractive"
            )
        return make_provider(name, model, recipe, sending=sending)[0], True
    if model is not None:
        raise InputError("model: give it to the provider you made, not beside it")
    return choice, False


async def _create(
    storage: Storage,
    sources: Iterable[Source],
    name: str | None,
    recipe: Recipe,
    provider: Provider,
) -> Run:
    # In a thread: a generator of sources may read files (Document.from_path).
    items: list[Source] = await trio.to_thread.run_sync(list, sources)
    if not items:
        raise InputError("sources: no documents given")
    for item in items:
        if not isinstance(item, Document | str | os.PathLike):
            raise InputError(f"sources: {item!r} is neither a path nor a Document")
    paths = [os.fspath(item) for item in items if not isinstance(item, Document)]
    found: list[Found] = []
    if paths:
        found = (await trio.to_thread.run_sync(collect, paths)).found
    problems: dict[int, str] = {}

    def documents() -> Iterator[Document]:
        # Documents first as given, then the files the paths name, in their order.
        position = 0
        for item in items:
            if isinstance(item, Document):
                yield item
                position += 1
        for each in found:
            document, problem = read(each)
            if problem is not None:
                problems[position] = problem
            position += 1
            yield document

    run = await storage.create_run(
        documents(),
        name=name or _default_name(items),
        recipe=recipe,
        provider=provider.name,
        model=model_of(provider) or "",
    )
    if problems:
        for upload in await storage.list_uploads(run.id):
            if upload.position in problems:
                await storage.fail_upload(upload.id, problems[upload.position])
        run = await storage.get_run(run.id)
    return run


def _default_name(items: Sequence[Source]) -> str:
    shown = [
        item.name if isinstance(item, Document) else Path(item).name or str(item) for item in items
    ]
    name = " ".join(shown[:5]) + (f" and {len(shown) - 5} more" if len(shown) > 5 else "")
    return name if len(name) <= 80 else name[:79] + "…"
