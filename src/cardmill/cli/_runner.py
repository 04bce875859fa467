"""What the ``cardmill`` commands do, apart from parsing: storage, providers, runs, output."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shlex
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Final, TextIO, TypeVar

import attrs
import click
import trio

from .._cost import DEFAULT_PRICES, FREE, PriceTable, usd
from .._cost import shown_cost as cost_text
from .._export import dumps, jsonable
from .._printable import printable
from .._recipe import STUDY_CARDS, Recipe, load_recipe
from ..engine import (
    BatchExecutor,
    Engine,
    Limits,
    RateStateStore,
    RunSummary,
    SharedBucket,
    answer_key,
    estimate_cost,
    root_error,
)
from ..errors import CardmillError, DatabaseError, InputError, MissingExtra, RunNotFound
from ..model import Run, RunStatus
from ..providers import (
    ExtractiveProvider,
    Provider,
    estimate_input_tokens,
    redact_url,
    request_overhead_tokens,
)
from ..storage import PostgresStorage, SQLiteStorage, Storage, redact_dsn
from ._batch import batch_provider, batches_of, run_batches
from ._collect import collect, read
from ._dbpath import check_sqlite_path
from ._metrics import metrics_settings, observed, run_with_metrics
from ._named import named_run
from ._pipe import exit_closed_pipe, is_closed_pipe
from ._progress import Progress
from ._providers import for_run, make_provider, model_of, provider_warning
from ._signals import (
    EXIT_TERMINATED,
    STOP_SIGNALS,
    Terminated,
    absorbing_late_sigterm,
    interrupted,
    stopped_by,
    terminable,
    terminated,
)
from ._words import counted

T = TypeVar("T")
#: The longest wait between looks at open batches (unless ``--batch-poll`` is longer).
MAX_BATCH_POLL: Final = 600.0
EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_CAPPED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
log = logging.getLogger("cardmill")


class UsageError(click.ClickException):
    """Bad usage or input: one line, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"cardmill: error: {printable(self.format_message())}", err=True)


# -- plumbing ----------------------------------------------------------------------------


def execute(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    chosen = metrics_settings()
    try:
        if chosen is not None:
            return trio.run(terminable, partial(run_with_metrics, chosen, fn), *args)
        return trio.run(terminable, fn, *args)
    except BaseException as raw:
        exc = root_error(raw)
        if isinstance(exc, Terminated):
            sys.exit(EXIT_TERMINATED)
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


async def database_made(db: str) -> bool:
    """Whether ``db`` is a PostgreSQL database or a SQLite file that exists (one that
    does not holds no runs yet, and reading it makes none)."""
    return is_postgres(db) or await trio.Path(db).exists()


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


@attrs.frozen
class Spend:
    """``--prices``, ``--max-cost``, and ``--no-reuse`` (pay again for what was answered
    before)."""

    prices_file: str | None = None
    max_cost: float | None = None
    reuse: bool = True

    async def table(self) -> PriceTable:
        """The built-in prices, with the file's over them."""
        if self.prices_file is None:
            return DEFAULT_PRICES
        return await trio.to_thread.run_sync(PriceTable.from_toml, self.prices_file)


def make_engine(
    storage: Storage,
    provider: Provider,
    *,
    concurrency: int,
    limits: Limits | None,
    lease: float,
    observer: Any = None,
    worker: str | None = None,
    prices: PriceTable = DEFAULT_PRICES,
    max_cost: float | None = None,
    reuse: bool = True,
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
        observer=observed(provider, observer),
        worker=worker,
        prices=prices,
        max_cost=max_cost,
        reuse=reuse,
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


def _exit_code(run: Run, summary: RunSummary | None = None) -> int:
    if summary is not None and summary.capped:
        return EXIT_CAPPED
    return EXIT_OK if run.status == RunStatus.SUCCEEDED else EXIT_INCOMPLETE


def shown_cost(run: Run) -> str:
    """A stored run's cost; "unknown" when tokens were used but nothing was priced
    (the model had no price)."""
    return cost_text(run.cost_usd, run.usage)


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
    if run.reused_items:
        fresh = run.completed_items - run.reused_items
        rows.append(
            (
                "reuse",
                f"{run.reused_items:,} reused, {fresh:,} sent, {usd(run.saved_cost_usd)} saved "
                f"({run.saved_tokens:,} tokens)",
            )
        )
    if provider is not None:
        model = model_of(provider)
        shown = f"{model} ({provider.name})" if model else f"none ({provider.name}, offline)"
        rows.append(("model", shown))
    elif run.provider:  # as the run was made
        shown = f"{run.model} ({run.provider})" if run.model else f"none ({run.provider}, offline)"
        rows.append(("model", shown))
    if summary is not None:
        # This command's requests, and the run's: other workers (or an earlier, stopped
        # command) may have sent some of them; tokens and cost below are the run's.
        rows += [
            (
                "requests",
                f"{summary.requests:,} by this command ({summary.rate_limited:,} × 429, "
                f"{summary.overloaded:,} × 529, {counted(summary.retries, 'retry', 'retries')}), "
                f"{run.requests:,} for the run ({run.rate_limited:,} × 429)",
            ),
            ("elapsed", f"{summary.elapsed:.1f} s"),
        ]
    else:
        rows.append(("requests", f"{run.requests:,} ({run.rate_limited:,} × 429)"))
    rows.append(("tokens", f"{run.usage.input_tokens:,} in, {run.usage.output_tokens:,} out"))
    if summary is not None and summary.cost_usd is None:
        model = model_of(provider) if provider is not None else None
        rows.append(("cost", f"unknown (no price for {model or 'this model'})"))
    else:
        rows.append(("cost", usd(run.cost_usd) if summary is not None else shown_cost(run)))
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
    if summary is not None and summary.stopped is not None:
        click.echo(printable(f"stopped: {summary.stopped}"))
    if summary is not None and summary.capped:
        click.echo(printable(f"resume: cardmill resume {run.id}{_db_flag(db)} --max-cost HIGHER"))
    elif run.status in (RunStatus.CANCELLED, RunStatus.RUNNING):
        click.echo(printable(f"resume: cardmill resume {run.id}{_db_flag(db)}"))


def run_record(run: Run) -> dict[str, Any]:
    """A run as JSON, its recipe named as ``name@digest-prefix``."""
    return {**jsonable(run), "recipe": run.recipe_label}


def read_recipe(spec: str | Recipe | None) -> Recipe | None:
    """The recipe ``--recipe`` names (a built-in or a TOML file), if given (or the one
    `analyze --like` took from its run)."""
    if spec is None or isinstance(spec, Recipe):
        return spec
    return load_recipe(spec)


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
    prices: PriceTable = DEFAULT_PRICES,
    max_cost: float | None = None,
    batch: bool = False,
    batch_poll: float = 30.0,
    reuse: bool = True,
) -> RunSummary:
    try:
        opened = await batches_of(storage, run.id, open_only=True)
        if batch or opened:
            # The run's open batches are collected first; with --batch the rest goes in
            # batches too, else one request at a time once they are in.
            summary = await run_batches(
                storage,
                run,
                batch_provider(provider),
                quiet=quiet,
                submit=batch,
                resume_hint=f"cardmill resume {run.id}{_db_flag(db)}",
                cancel_hint=f"cardmill cancel {run.id}{_db_flag(db)}",
                prices=prices,
                max_cost=max_cost,
                poll_interval=batch_poll,
                max_poll_interval=max(batch_poll, MAX_BATCH_POLL),
                reuse=reuse,
            )
            if batch or summary.run.status.finished or summary.stopped is not None:
                return summary
            run = summary.run
        return await _execute_sync(
            storage,
            run,
            provider,
            concurrency=concurrency,
            limits=limits,
            quiet=quiet,
            lease=lease,
            prices=prices,
            max_cost=max_cost,
            reuse=reuse,
        )
    finally:
        await _close(provider)


async def _close(provider: object) -> None:
    """Close a provider that holds resources (an HTTP client), even while cancelled."""
    close = getattr(provider, "aclose", None)
    if close is not None:
        with trio.CancelScope(shield=True):
            await close()


async def _execute_sync(
    storage: Storage,
    run: Run,
    provider: Provider,
    *,
    concurrency: int,
    limits: Limits | None,
    quiet: bool,
    lease: float,
    prices: PriceTable,
    max_cost: float | None,
    reuse: bool = True,
) -> RunSummary:
    stderr = sys.stderr  # None when the command was started with stderr closed
    progress = Progress(run, stderr, live=stderr is not None and _isatty(stderr))
    engine = make_engine(
        storage,
        provider,
        concurrency=concurrency,
        limits=limits,
        lease=lease,
        observer=progress,
        prices=prices,
        max_cost=max_cost,
        reuse=reuse,
    )
    async with trio.open_nursery() as nursery:
        if not quiet:
            nursery.start_soon(progress.run, engine)
        try:
            return await engine.execute(run.id)
        finally:
            nursery.cancel_scope.cancel()


@contextlib.contextmanager
def _resume_hint(run_id: str, db: str, *, said: bool = False) -> Iterator[None]:
    """On Ctrl-C or SIGTERM, say how to resume the run: from the moment it exists,
    whether the engine had started (the run is CANCELLED) or not (still PENDING).
    ``said``: batch mode says it itself."""
    try:
        yield
    except BaseException as exc:
        if interrupted(exc) and not said:
            click.echo(
                "\n"
                + printable(
                    f"cardmill: {_stop_word()}; run {run_id} is resumable. "
                    f"Resume with: cardmill resume {run_id}{_db_flag(db)}"
                ),
                err=True,
            )
        raise


def _stop_word() -> str:
    return "terminated (SIGTERM)" if terminated() else "interrupted"


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
    recipe_spec: str | Recipe | None = None,
    spend: Spend | None = None,
    batch: bool = False,
    batch_poll: float = 30.0,
) -> int:
    spend = spend or Spend()
    recipe = await trio.to_thread.run_sync(read_recipe, recipe_spec) or STUDY_CARDS
    prices = await spend.table()
    collected = await trio.to_thread.run_sync(collect, paths)  # it reads each file's head
    found, skipped = collected.found, collected.skipped
    provider, described = make_provider(provider_choice, model, recipe)
    _check_cap(provider, prices, spend)
    if batch:
        batch_provider(provider)
        described += " through its batch API"
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
        collected.tell()
        run = await storage.create_run(
            documents(),
            name=name or _default_name(paths),
            recipe=recipe,
            provider=provider.name,
            model=model_of(provider) or "",
        )
        with _resume_hint(run.id, db, said=batch):
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
                prices=prices,
                max_cost=spend.max_cost,
                batch=batch,
                batch_poll=batch_poll,
                reuse=spend.reuse,
            )
    return _reported(summary, db, as_json, provider)


def _check_cap(provider: Provider, prices: PriceTable, spend: Spend) -> None:
    """Refuse a cap the engine could not keep, before a run is made."""
    if spend.max_cost is not None and not isinstance(provider, ExtractiveProvider):
        model = model_of(provider)
        if model is None or prices.price_for(model) is None:
            raise InputError(
                f"--max-cost: no price is known for model {model!r}; give one with --prices FILE"
            )


def _reported(summary: RunSummary, db: str, as_json: bool, provider: Provider) -> int:
    report(summary, summary.run, db, as_json, provider)
    if summary.capped:
        click.echo(
            printable(
                f"cardmill: spending cap reached: {summary.stopped}. Go on with: "
                f"cardmill resume {summary.run.id}{_db_flag(db)} --max-cost HIGHER"
            ),
            err=True,
        )
    return _exit_code(summary.run, summary)


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
    spend: Spend | None = None,
    batch: bool | None = None,
    batch_poll: float = 30.0,
) -> int:
    spend = spend or Spend()
    given = await trio.to_thread.run_sync(read_recipe, recipe_spec)
    prices = await spend.table()
    async with open_storage(db, create=False) as storage:
        run = await storage.get_run(await named_run(storage, run_id))
        recipe = await storage.get_recipe(run.id)
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
        provider_choice, model = for_run(run, provider_choice, model)
        provider, described = make_provider(provider_choice, model, recipe)
        _check_cap(provider, prices, spend)
        opened = await batches_of(storage, run.id, open_only=True)
        if batch is None:
            # A run sent in batches goes on in batches: what was never sent goes in a
            # new one, at the batch price, as the run was started.
            batch = bool(opened or await batches_of(storage, run.id))
        if batch or opened:
            batch_provider(provider)
        if opened:
            described += (
                f", collecting {len(opened)} open {'batch' if len(opened) == 1 else 'batches'}"
            )
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
        with _resume_hint(run.id, db, said=batch or bool(opened)):
            summary = await _execute_run(
                storage,
                run,
                provider,
                db=db,
                concurrency=concurrency,
                limits=limits,
                quiet=quiet,
                lease=lease,
                prices=prices,
                max_cost=spend.max_cost,
                batch=batch,
                batch_poll=batch_poll,
                reuse=spend.reuse,
            )
    return _reported(summary, db, as_json, provider)


async def cancel_run(
    run_id: str,
    db: str,
    provider_choice: str,
    model: str | None,
    as_json: bool,
    batch_poll: float = 30.0,
) -> int:
    """Cancel the run's open batches at the provider and collect what they finished."""
    async with open_storage(db, create=False) as storage:
        run = await storage.get_run(await named_run(storage, run_id))
        choice = for_run(run, provider_choice, model)
        opened = await batches_of(storage, run.id, open_only=True)
        if not opened:
            click.echo(printable(f"cardmill: run {run.id} has no open batches"), err=True)
            report(None, run, db, as_json)
            return _exit_code(run)
        recipe = await storage.get_recipe(run.id)
        made = make_provider(*choice, recipe)[0]
        provider = batch_provider(made)
        click.echo(
            printable(f"cardmill: cancelling {counted(len(opened), 'batch', 'batches')}"),
            err=True,
        )
        try:
            summary = await BatchExecutor(
                storage,
                provider,
                poll_interval=batch_poll,
                max_poll_interval=max(batch_poll, MAX_BATCH_POLL),
            ).cancel(run.id)
        finally:
            await _close(provider)
    if summary.stopped is not None:
        click.echo(printable(f"cardmill: {summary.stopped}"), err=True)
    report(summary, summary.run, db, as_json, made)
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
    spend: Spend | None = None,
) -> int:
    spend = spend or Spend()
    prices = await spend.table()
    provider, described = make_provider(provider_choice, model)
    _check_cap(provider, prices, spend)
    worker = None
    if worker_name:
        worker = f"{worker_name}:{os.getpid()}:{secrets.token_hex(3)}"
    # Each run is served with its own recipe: one provider and engine per recipe, kept
    # for the worker's life so that each keeps what it learnt of the rate limits.
    given = (provider_choice, model)
    providers: dict[tuple[str, str, str | None], Provider] = {
        (STUDY_CARDS.digest, *given): provider
    }
    engines: dict[tuple[str, str, str | None], Engine] = {}
    try:
        async with open_storage(db, create=False) as storage:
            if run_id is not None:
                run_id = await named_run(storage, run_id)
                chosen = for_run(await storage.get_run(run_id), *given)  # refused before a word
                if chosen != given:  # the run's own provider and model, named and priced
                    own, described = make_provider(*chosen)
                    _check_cap(own, prices, spend)
            click.echo(
                printable(
                    f"cardmill worker: {described}, concurrency {concurrency}, on {shown_db(db)}"
                ),
                err=True,
            )

            def engine_for(recipe: Recipe, choice: tuple[str, str | None]) -> Engine:
                key = (recipe.digest, *choice)
                if key not in providers:
                    made = make_provider(key[1], key[2], recipe)[0]
                    _check_cap(made, prices, spend)  # at the run's own model
                    providers[key] = made
                    _warn(made)
                if key not in engines:
                    engines[key] = make_engine(
                        storage,
                        providers[key],
                        concurrency=concurrency,
                        limits=limits,
                        lease=lease,
                        worker=worker,
                        prices=prices,
                        max_cost=spend.max_cost,
                        reuse=spend.reuse,
                    )
                return engines[key]

            while True:
                runs = [await storage.get_run(run_id)] if run_id else await storage.list_runs()
                worked = False
                for run in runs:
                    if run.status.finished or run.pending_items == 0:
                        continue  # nothing PENDING or LOADING: the counters say so
                    worked = True
                    recipe = await storage.get_recipe(run.id)
                    try:
                        # Each run with its own model: the one it was made with.
                        choice = for_run(run, *given)
                    except InputError as exc:
                        if run_id:
                            raise  # the one run asked for is refused
                        click.echo(printable(f"cardmill worker: run {run.id}: {exc}"), err=True)
                        continue
                    try:
                        engine = engine_for(recipe, choice)
                    except InputError as exc:
                        if run_id:
                            raise  # the one run asked for cannot be served
                        click.echo(printable(f"cardmill worker: run {run.id}: {exc}"), err=True)
                        continue
                    try:
                        summary = await engine.execute(run.id)
                    except BaseException as exc:
                        if interrupted(exc):
                            click.echo(
                                "\n"
                                + printable(
                                    f"cardmill worker: {_stop_word()}; the uploads of run "
                                    f"{run.id} it held are PENDING again. Resume with: "
                                    f"cardmill resume {run.id}{_db_flag(db)} (or another worker)"
                                ),
                                err=True,
                            )
                        raise
                    click.echo(
                        printable(
                            f"cardmill worker: run {run.id} {summary.run.status.name}: "
                            f"{summary.completed} completed and {summary.failed} failed here, "
                            f"{counted(summary.requests, 'request')} here "
                            f"({summary.rate_limited:,} × 429), {summary.run.requests:,} for "
                            f"the run, run cost {shown_cost(summary.run)}"
                        ),
                        err=True,
                    )
                    if summary.stopped is not None:
                        click.echo(
                            printable(
                                f"cardmill worker: run {run.id}: spending cap reached: "
                                f"{summary.stopped}; go on with a higher --max-cost"
                            ),
                            err=True,
                        )
                if not follow:
                    if not worked:
                        click.echo(printable(f"cardmill worker: {_idle(runs, run_id)}"), err=True)
                    return EXIT_OK
                await trio.sleep(poll)
    finally:
        for each in providers.values():
            await _close(each)


def _idle(runs: list[Run], run_id: str | None) -> str:
    """What a worker that found nothing to do says."""
    if run_id is not None and runs:
        return f"nothing to do: run {runs[0].id} is {runs[0].status.name}, no upload is left"
    if not runs:
        return "nothing to do: there are no runs in the database"
    return f"nothing to do: no upload is left in {counted(len(runs), 'run')}"


# -- dry run -----------------------------------------------------------------------------


async def estimate_paths(
    paths: list[str],
    provider_choice: str,
    model: str | None,
    prices_file: str | None,
    recipe_spec: str | Recipe | None,
    as_json: bool,
    db: str = "cardmill.db",
    reuse: bool = True,
) -> int:
    """``analyze --dry-run``: each document's estimated input tokens and cost, at the
    standard and the batch price, and the total; sends nothing and creates no run. With
    reuse, a document answered before in ``db`` is shown as reused, at no cost."""
    from ._reuse import answered_before

    recipe = await trio.to_thread.run_sync(read_recipe, recipe_spec) or STUDY_CARDS
    prices = await Spend(prices_file).table()
    collected = await trio.to_thread.run_sync(collect, paths)  # it reads each file's head
    collected.tell()
    provider, described = make_provider(provider_choice, model, recipe, sending=False)
    try:
        name = model_of(provider)
        price = FREE if isinstance(provider, ExtractiveProvider) else None
        if price is None and name is not None:
            price = prices.price_for(name)
        tokens = getattr(provider, "max_tokens", 4096)
        max_tokens = tokens if isinstance(tokens, int) and tokens > 0 else 4096
        overhead = request_overhead_tokens(provider)  # the recipe's prompt and schema
        rows: list[dict[str, Any]] = []
        keys: list[str | None] = []
        for item in collected.found:
            document, problem = await trio.to_thread.run_sync(read, item)
            row: dict[str, Any] = {"document": document.name, "size": document.size}
            keys.append(answer_key(provider, document) if reuse and problem is None else None)
            if problem is not None:
                row.update(input_tokens=0, cost_usd=0.0, batch_cost_usd=0.0, error=problem)
            else:
                row["input_tokens"] = estimate_input_tokens(document, overhead=overhead)
                for key, batch in (("cost_usd", False), ("batch_cost_usd", True)):
                    row[key] = (
                        None
                        if price is None
                        else estimate_cost(
                            document,
                            price,
                            max_tokens=max_tokens,
                            batch=batch,
                            overhead_tokens=overhead,
                        )
                    )
            rows.append(row)
    finally:
        await _close(provider)
    kept = await answered_before(db, keys)
    for row, wanted in zip(rows, keys, strict=True):
        row["reused"] = wanted in kept
        if row["reused"]:  # completed from the answer kept: nothing is sent or paid
            row.update(input_tokens=0, cost_usd=0.0, batch_cost_usd=0.0)
    reused = sum(row["reused"] for row in rows)
    total = {
        "documents": len(rows),
        "reused": reused,
        "input_tokens": sum(r["input_tokens"] for r in rows),
        "cost_usd": None if price is None else sum(r["cost_usd"] for r in rows),
        "batch_cost_usd": None if price is None else sum(r["batch_cost_usd"] for r in rows),
    }
    if as_json:
        click.echo(
            dumps(
                {
                    "provider": provider.name,
                    "model": name,
                    "max_output_tokens": max_tokens,
                    "prices_as_of": prices.as_of if price is not None else None,
                    "documents": rows,
                    "total": total,
                }
            )
        )
        return EXIT_OK

    def money(value: float | None) -> str:
        return "unknown" if value is None else usd(value)

    click.echo(
        printable(
            f"cardmill: dry run with {described}: estimates only, nothing sent, no run made",
            lines=True,
        ),
        err=True,
    )
    click.echo(f"{'TOKENS':>10} {'COST':>10} {'BATCH':>10}  DOCUMENT")
    for r in rows:
        note = f"  ({r['error']})" if "error" in r else ""
        note = "  (reused: answered before)" if r["reused"] else note
        click.echo(
            printable(
                f"{r['input_tokens']:>10,} {money(r['cost_usd']):>10} "
                f"{money(r['batch_cost_usd']):>10}  {r['document']}{note}"
            )
        )
    click.echo(
        f"{total['input_tokens']:>10,} {money(total['cost_usd']):>10} "
        f"{money(total['batch_cost_usd']):>10}  total of {counted(len(rows), 'document')}"
    )
    if reused:
        click.echo(
            printable(
                f"cardmill: {reused:,} of {counted(len(rows), 'document')} answered before in "
                f"{shown_db(db)} would be reused at no cost; {len(rows) - reused:,} would be sent"
            ),
            err=True,
        )
    if price is None:
        click.echo(
            printable(f"cardmill: no price is known for model {name!r}; give one with --prices"),
            err=True,
        )
    elif isinstance(provider, ExtractiveProvider):
        click.echo("cardmill: the offline extractive provider makes no paid request", err=True)
    else:
        click.echo(
            f"estimated input tokens, and at most {max_tokens:,} output tokens a request; "
            f"prices as of {prices.as_of or 'the prices file'}",
            err=True,
        )
    return EXIT_OK


async def serve_viewer(
    db: str, host: str, port: int, allow_remote: bool, metrics: bool = False
) -> int:
    """``cardmill serve``: the web viewer of ``db`` until Ctrl-C or SIGTERM.

    Both are received here, not raised wherever the server happens to be: the server
    stops gracefully, then the command ends as every interrupted command does (130, or
    143 for SIGTERM).
    """
    from .. import web  # the web extra: MissingExtra names it when absent

    web.check_address(host, port, allow_remote=allow_remote)
    stop = trio.Event()
    received: int = signal.SIGINT
    with absorbing_late_sigterm(), trio.open_signal_receiver(*STOP_SIGNALS) as interrupts:
        async with open_storage(db, create=False) as storage, trio.open_nursery() as nursery:
            url = await nursery.start(
                partial(
                    web.serve,
                    storage,
                    host=host,
                    port=port,
                    database=shown_db(db, absolute=True),
                    allow_remote=allow_remote,
                    metrics=metrics,
                    shutdown_trigger=stop.wait,
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
            if metrics:
                click.echo(printable(f"cardmill: Prometheus metrics at {url}metrics"), err=True)
            shown = printable(f"cardmill: viewer of {shown_db(db)} on {url} (Ctrl-C stops)")
            click.echo(shown, err=True)
            async for signum in interrupts:
                received = signum
                stop.set()
                break
    raise stopped_by(received)
