"""What the ``cardmill`` commands do, apart from parsing: storage, providers, runs, output."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shlex
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TextIO, TypeVar

import click
import trio

from .._export import dumps, jsonable
from .._recipe import STUDY_CARDS, Recipe, load_recipe
from ..engine import (
    Engine,
    Limits,
    RateStateStore,
    RunSummary,
    SharedBucket,
    root_error,
)
from ..errors import CardmillError, DatabaseError, InputError, MissingExtra, RunNotFound
from ..model import Run, RunStatus, path_name
from ..providers import ExtractiveProvider, Provider, redact_url
from ..storage import PostgresStorage, SQLiteStorage, Storage, redact_dsn
from ._collect import collect, read
from ._dbpath import check_sqlite_path
from ._pipe import exit_closed_pipe, is_closed_pipe
from ._progress import Progress
from ._providers import make_provider, model_of, provider_warning
from ._safe import printable
from ._words import counted

T = TypeVar("T")
EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
log = logging.getLogger("cardmill")


class UsageError(click.ClickException):
    """Bad usage or input: one line, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"cardmill: error: {printable(self.format_message())}", err=True)


# -- plumbing ----------------------------------------------------------------------------


def execute(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    try:
        return trio.run(fn, *args)
    except BaseException as raw:
        exc = root_error(raw)
        if isinstance(exc, KeyboardInterrupt):
            sys.exit(EXIT_INTERRUPTED)
        if is_closed_pipe(exc):
            exit_closed_pipe()
        if isinstance(exc, SystemExit | click.ClickException):
            raise exc from None
        if isinstance(exc, InputError | RunNotFound | DatabaseError | MissingExtra):
            raise UsageError(str(exc)) from None
        if isinstance(exc, CardmillError):
            click.echo(f"cardmill: error: {printable(exc)}", err=True)
            sys.exit(EXIT_INCOMPLETE)
        raise


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("cardmill: %(levelname)s: %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


class _PrintableFormatter(logging.Formatter):
    """Log records quote file names, errors and URLs: escape what could act on a
    terminal, and hide credentials in URLs (HTTP libraries log the URLs they request)."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(_URL.sub(_redacted, super().format(record)), lines=True)


_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")


def _redacted(match: re.Match[str]) -> str:
    url = match.group()
    # A DSN's password (libpq's parser) or an HTTP URL's userinfo and key parameters.
    return redact_dsn(url) if is_postgres(url) else redact_url(url)


# libpq's connection keywords (https://www.postgresql.org/docs/current/libpq-connect.html).
_LIBPQ_KEYWORD = re.compile(
    r"\s*(host|hostaddr|port|dbname|user|password|passfile|service|sslmode|sslrootcert|"
    r"sslcert|sslkey|connect_timeout|application_name|options|target_session_attrs)\s*="
)


def is_postgres(db: str) -> bool:
    """Whether a ``--db`` value names a PostgreSQL database: a ``postgresql://`` or
    ``postgres://`` URL, or a libpq ``key=value`` connection string (``host=db
    dbname=cards``) that is not the name of an existing file."""
    if db.startswith(("postgresql://", "postgres://")):
        return True
    if "=" not in db or os.path.exists(db):
        return False
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        # Without the driver, libpq's parser is not there to ask: a value that opens with
        # one of its keywords is a connection string, so that opening it names the extra.
        return _LIBPQ_KEYWORD.match(db) is not None

    try:
        conninfo_to_dict(db)
    except psycopg.Error:
        return False  # not a connection string libpq reads: a file name
    return True


def shown_db(db: str, *, absolute: bool = False) -> str:
    """A ``--db`` value as it may be printed: a PostgreSQL URL without its password, a
    SQLite path as given (or made absolute)."""
    if is_postgres(db):
        return redact_dsn(db)
    return os.path.abspath(db) if absolute else db


@asynccontextmanager
async def open_storage(db: str, *, create: bool) -> AsyncIterator[Storage]:
    """The storage a ``--db`` value names: a PostgreSQL URL, or a SQLite file path."""
    if is_postgres(db):
        schema = os.environ.get("CARDMILL_PG_SCHEMA", "cardmill")
        async with PostgresStorage.open(db, schema=schema) as postgres:
            yield postgres
        return
    await trio.to_thread.run_sync(partial(check_sqlite_path, db, create=create))
    async with SQLiteStorage.open(db) as storage:
        yield storage


def shared_limit_name(provider: Provider) -> str:
    """One shared rate limit per provider, endpoint and API key — named by a short
    fingerprint of the key (and of any credentials in the URL), never the key."""
    key = getattr(provider, "_key", None) or ""
    where = getattr(provider, "_url", None) or os.environ.get("ANTHROPIC_BASE_URL", "")
    # Credentials in the URL name a quota as a key does: fingerprinted, never shown.
    shown = redact_url(where)
    secret = f"{key}\n{where}" if shown != where else key
    fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:8] if secret else "nokey"
    return f"{provider.name}:{shown}:{fingerprint}"


def make_engine(
    storage: Storage,
    provider: Provider,
    *,
    concurrency: int,
    limits: Limits | None,
    lease: float,
    observer: Any = None,
    worker: str | None = None,
) -> Engine:
    """The engine of every command; on a shared database, its rate limit is shared with
    every worker's."""
    bucket = None
    if isinstance(storage, RateStateStore) and not isinstance(provider, ExtractiveProvider):
        bucket = SharedBucket(storage, shared_limit_name(provider), limits)
    return Engine(
        storage,
        provider,
        concurrency=concurrency,
        limits=limits,
        bucket=bucket,
        lease_seconds=lease,
        observer=observer,
        worker=worker,
    )


def limits_from(rpm: float | None, itpm: float | None) -> Limits | None:
    if rpm is None and itpm is None:
        return None
    return Limits(requests_per_minute=rpm, input_tokens_per_minute=itpm)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (OSError, ValueError):
        return False


def _exit_code(run: Run) -> int:
    return EXIT_OK if run.status == RunStatus.SUCCEEDED else EXIT_INCOMPLETE


# -- output ------------------------------------------------------------------------------


def summary_table(
    summary: RunSummary | None,
    run: Run,
    db: str,
    out: TextIO,
    provider: Provider | None = None,
) -> None:
    rows = [
        ("run", f"{run.id} ({run.name})" if run.name != run.id else run.id),
        ("status", run.status.name),
        (
            "uploads",
            f"{run.completed_items} completed, {run.failed_items} failed, {run.total_items} total",
        ),
        ("cards", str(run.total_cards)),
        ("recipe", run.recipe_label),
    ]
    if provider is not None:
        model = model_of(provider)
        shown = f"{model} ({provider.name})" if model else f"none ({provider.name}, offline)"
        rows.append(("model", shown))
    if summary is not None:
        rows += [
            (
                "requests",
                f"{summary.requests} ({summary.rate_limited} × 429, {summary.overloaded} × 529, "
                f"{counted(summary.retries, 'retry', 'retries')})",
            ),
            ("tokens", f"{summary.input_tokens:,} in, {summary.output_tokens:,} out"),
            ("elapsed", f"{summary.elapsed:.1f} s"),
        ]
    rows.append(("database", shown_db(db, absolute=True)))
    for key, value in rows:
        out.write(f"{key:<10} {printable(value)}\n")


def report(
    summary: RunSummary | None,
    run: Run,
    db: str,
    as_json: bool,
    provider: Provider | None = None,
) -> None:
    if as_json:
        data: dict[str, Any] = {
            "run": run_record(run),
            "database": shown_db(db, absolute=True),
        }
        if provider is not None:
            data["provider"] = provider.name
            data["model"] = model_of(provider)
        if summary is not None:
            data["summary"] = {k: v for k, v in jsonable(summary).items() if k != "run"}
        click.echo(dumps(data))
        return
    summary_table(summary, run, db, sys.stdout, provider)
    if run.total_cards:
        click.echo(
            printable(f"\nexport: cardmill export {run.id} --format md{_db_flag(db)}", lines=True)
        )
    if run.status == RunStatus.CANCELLED:
        click.echo(printable(f"resume: cardmill resume {run.id}{_db_flag(db)}"))


def run_record(run: Run) -> dict[str, Any]:
    """A run as JSON, its recipe named as ``name@digest-prefix``."""
    return {**jsonable(run), "recipe": run.recipe_label}


def read_recipe(spec: str | None) -> Recipe | None:
    """The recipe ``--recipe`` names (a built-in or a TOML file), if given."""
    return None if spec is None else load_recipe(spec)


def _recipe_note(recipe: Recipe) -> str:
    return "" if recipe == STUDY_CARDS else f", recipe {recipe.label},"


def _warn(provider: Provider) -> None:
    warning = provider_warning(provider)
    if warning is not None:
        click.echo(printable(f"cardmill: warning: {warning}"), err=True)


def _db_flag(db: str) -> str:
    return "" if db == "cardmill.db" else f" --db {shlex.quote(shown_db(db))}"


# -- the run -----------------------------------------------------------------------------


async def _execute_run(
    storage: Storage,
    run: Run,
    provider: Provider,
    *,
    db: str,
    concurrency: int,
    limits: Limits | None,
    quiet: bool,
    lease: float,
) -> RunSummary:
    stderr = sys.stderr  # None when the command was started with stderr closed
    progress = Progress(run, stderr, live=stderr is not None and _isatty(stderr))
    engine = make_engine(
        storage, provider, concurrency=concurrency, limits=limits, lease=lease, observer=progress
    )
    try:
        async with trio.open_nursery() as nursery:
            if not quiet:
                nursery.start_soon(progress.run, engine)
            try:
                return await engine.execute(run.id)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        close = getattr(provider, "aclose", None)
        if close is not None:
            with trio.CancelScope(shield=True):
                await close()


@contextlib.contextmanager
def _resume_hint(run_id: str, db: str) -> Iterator[None]:
    """On Ctrl-C, say how to resume the run: from the moment it exists, whether the
    engine had started (the run is CANCELLED) or not (still PENDING)."""
    try:
        yield
    except BaseException as exc:
        if isinstance(root_error(exc), KeyboardInterrupt):
            click.echo(
                "\n"
                + printable(
                    f"cardmill: interrupted; run {run_id} is resumable. "
                    f"Resume with: cardmill resume {run_id}{_db_flag(db)}"
                ),
                err=True,
            )
        raise


async def analyze_paths(
    paths: list[str],
    db: str,
    provider_choice: str,
    model: str | None,
    concurrency: int,
    limits: Limits | None,
    name: str | None,
    as_json: bool,
    quiet: bool,
    lease: float,
    recipe_spec: str | None = None,
) -> int:
    recipe = await trio.to_thread.run_sync(read_recipe, recipe_spec) or STUDY_CARDS
    collected = collect(paths)
    found, skipped = collected.found, collected.skipped
    if not found:
        raise InputError("no documents found in " + ", ".join(path_name(p) for p in paths))
    provider, described = make_provider(provider_choice, model, recipe)
    _warn(provider)
    problems: dict[int, str] = {}

    def documents() -> Any:
        for position, item in enumerate(found):
            document, problem = read(item)
            if problem is not None:
                problems[position] = problem
            yield document

    # Opened before anything is announced: a --db that cannot be used is the only line.
    async with open_storage(db, create=True) as storage:
        if not quiet:
            other = counted(skipped, "file of another type", "files of other types")
            extra = f" (skipped {other})" if skipped else ""
            click.echo(
                printable(
                    f"cardmill: analysing {counted(len(found), 'document')}{extra} "
                    f"with {described}{_recipe_note(recipe)} into {shown_db(db)}"
                ),
                err=True,
            )
        for notice in collected.notices:
            click.echo(printable(f"cardmill: skipped {notice}"), err=True)
        run = await storage.create_run(
            documents(), name=name or _default_name(paths), recipe=recipe
        )
        with _resume_hint(run.id, db):
            if problems:
                for upload in await storage.list_uploads(run.id):
                    if upload.position in problems:
                        await storage.fail_upload(upload.id, problems[upload.position])
                run = await storage.get_run(run.id)
            summary = await _execute_run(
                storage,
                run,
                provider,
                db=db,
                concurrency=concurrency,
                limits=limits,
                quiet=quiet,
                lease=lease,
            )
    report(summary, summary.run, db, as_json, provider)
    return _exit_code(summary.run)


def _default_name(paths: list[str]) -> str:
    name = " ".join(paths)
    return name if len(name) <= 80 else name[:79] + "…"


async def resume_run(
    run_id: str,
    db: str,
    provider_choice: str,
    model: str | None,
    concurrency: int,
    limits: Limits | None,
    as_json: bool,
    quiet: bool,
    lease: float,
    recipe_spec: str | None = None,
) -> int:
    given = await trio.to_thread.run_sync(read_recipe, recipe_spec)
    async with open_storage(db, create=False) as storage:
        run = await storage.get_run(run_id)
        recipe = await storage.get_recipe(run_id)
        if given is not None and given.digest != recipe.digest:
            raise InputError(
                f"run {run.id} was made with recipe {recipe.label}, not {given.label}; "
                "a run keeps its recipe: resume without --recipe"
            )
        if run.status.finished:
            if not quiet:
                click.echo(printable(f"cardmill: run {run.id} already {run.status.name}"), err=True)
            report(None, run, db, as_json)
            return _exit_code(run)
        provider, described = make_provider(provider_choice, model, recipe)
        _warn(provider)
        if not quiet:
            click.echo(
                printable(
                    f"cardmill: resuming {run.id}: {run.pending_items} of "
                    f"{counted(run.total_items, 'upload')} left, with {described}"
                    f"{_recipe_note(recipe).rstrip(',')}"
                ),
                err=True,
            )
        with _resume_hint(run.id, db):
            summary = await _execute_run(
                storage,
                run,
                provider,
                db=db,
                concurrency=concurrency,
                limits=limits,
                quiet=quiet,
                lease=lease,
            )
    report(summary, summary.run, db, as_json, provider)
    return _exit_code(summary.run)


async def run_worker(
    db: str,
    run_id: str | None,
    follow: bool,
    poll: float,
    provider_choice: str,
    model: str | None,
    concurrency: int,
    limits: Limits | None,
    lease: float,
    worker_name: str | None,
) -> int:
    provider, described = make_provider(provider_choice, model)
    worker = None
    if worker_name:
        worker = f"{worker_name}:{os.getpid()}:{secrets.token_hex(3)}"
    # Each run is served with its own recipe: one provider and engine per recipe, kept
    # for the worker's life so that each keeps what it learnt of the rate limits.
    providers: dict[str, Provider] = {STUDY_CARDS.digest: provider}
    engines: dict[str, Engine] = {}
    try:
        async with open_storage(db, create=False) as storage:
            click.echo(
                printable(
                    f"cardmill worker: {described}, concurrency {concurrency}, on {shown_db(db)}"
                ),
                err=True,
            )

            def engine_for(recipe: Recipe) -> Engine:
                if recipe.digest not in providers:
                    providers[recipe.digest] = make_provider(provider_choice, model, recipe)[0]
                    _warn(providers[recipe.digest])
                if recipe.digest not in engines:
                    engines[recipe.digest] = make_engine(
                        storage,
                        providers[recipe.digest],
                        concurrency=concurrency,
                        limits=limits,
                        lease=lease,
                        worker=worker,
                    )
                return engines[recipe.digest]

            while True:
                runs = [await storage.get_run(run_id)] if run_id else await storage.list_runs()
                for run in runs:
                    if run.status.finished or run.pending_items == 0:
                        continue  # nothing PENDING or LOADING: the counters say so
                    recipe = await storage.get_recipe(run.id)
                    try:
                        engine = engine_for(recipe)
                    except InputError as exc:
                        click.echo(printable(f"cardmill worker: run {run.id}: {exc}"), err=True)
                        continue
                    summary = await engine.execute(run.id)
                    click.echo(
                        printable(
                            f"cardmill worker: run {run.id} {summary.run.status.name}: "
                            f"{summary.completed} completed and {summary.failed} failed here, "
                            f"{counted(summary.requests, 'request')}, "
                            f"{summary.rate_limited} x 429"
                        ),
                        err=True,
                    )
                if not follow:
                    return EXIT_OK
                await trio.sleep(poll)
    finally:
        with trio.CancelScope(shield=True):
            for each in providers.values():
                close = getattr(each, "aclose", None)
                if close is not None:
                    await close()


async def serve_viewer(db: str, host: str, port: int, allow_remote: bool) -> int:
    """``cardmill serve``: the web viewer of ``db`` until Ctrl-C."""
    from .. import web  # the web extra: MissingExtra names it when absent

    web.check_address(host, port, allow_remote=allow_remote)
    async with open_storage(db, create=False) as storage, trio.open_nursery() as nursery:
        url = await nursery.start(
            partial(
                web.serve,
                storage,
                host=host,
                port=port,
                database=shown_db(db, absolute=True),
                allow_remote=allow_remote,
            )
        )
        if allow_remote:
            click.echo(
                printable(
                    f"cardmill: warning: serving on {host} to other machines, without a "
                    "login: whoever reaches it reads every run and card"
                ),
                err=True,
            )
        shown = printable(f"cardmill: viewer of {shown_db(db)} on {url} (Ctrl-C stops)")
        click.echo(shown, err=True)
    return EXIT_OK
