"""The ``cardmill`` command: analyse folders of documents, watch, stop, resume, export."""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TextIO, TypeVar

import click
import trio

from . import __version__
from ._collect import collect, read
from ._export import FORMATS, dumps, jsonable, write_cards
from ._progress import Progress
from .engine import Engine, Limits, RateStateStore, RetryPolicy, RunSummary, SharedBucket
from .errors import CardmillError, DatabaseError, InputError, RunNotFound
from .model import Run, RunStatus, UploadStatus
from .providers import (
    AnthropicProvider,
    ExtractiveProvider,
    OpenAICompatibleProvider,
    Provider,
)
from .storage import PostgresStorage, SQLiteStorage, Storage

__all__ = ["main"]

T = TypeVar("T")
EXIT_OK, EXIT_INCOMPLETE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
log = logging.getLogger("cardmill")


class Usage(click.ClickException):
    """Bad usage or input: one line, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file: Any = None) -> None:
        click.echo(f"cardmill: error: {self.format_message()}", err=True)


# -- plumbing ----------------------------------------------------------------------------


def _leaf(exc: BaseException) -> BaseException:
    """The error that matters inside trio's exception groups."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = list(exc.exceptions)
        for sub in leaves:
            if isinstance(sub, KeyboardInterrupt):
                return sub
        real = [e for e in leaves if not isinstance(e, trio.Cancelled)]
        exc = (real or leaves)[0]
    return exc


def _execute(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    try:
        return trio.run(fn, *args)
    except BaseException as raw:
        exc = _leaf(raw)
        if isinstance(exc, KeyboardInterrupt):
            sys.exit(EXIT_INTERRUPTED)
        if isinstance(exc, SystemExit | click.ClickException):
            raise exc from None
        if isinstance(exc, InputError | RunNotFound | DatabaseError):
            raise Usage(str(exc)) from None
        if isinstance(exc, CardmillError):
            click.echo(f"cardmill: error: {exc}", err=True)
            sys.exit(EXIT_INCOMPLETE)
        raise


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, stream=sys.stderr, format="cardmill: %(levelname)s: %(name)s: %(message)s"
    )


def is_postgres(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


@asynccontextmanager
async def open_storage(db: str, *, create: bool) -> AsyncIterator[Storage]:
    """The storage a ``--db`` value names: a PostgreSQL URL, or a SQLite file path."""
    if is_postgres(db):
        schema = os.environ.get("CARDMILL_PG_SCHEMA", "cardmill")
        async with PostgresStorage.open(db, schema=schema) as postgres:
            yield postgres
        return
    if not create and not await trio.Path(db).exists():
        raise InputError(f"{db}: no such database (run `cardmill analyze` first)")
    async with SQLiteStorage.open(db) as storage:
        yield storage


def shared_limit_name(provider: Provider) -> str:
    """One shared rate limit per provider, endpoint and API key — named by a short
    fingerprint of the key, never the key."""
    key = getattr(provider, "_key", None) or ""
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:8] if key else "nokey"
    where = getattr(provider, "base_url", None) or os.environ.get("ANTHROPIC_BASE_URL", "")
    return f"{provider.name}:{where}:{fingerprint}"


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
    """An engine; on a shared database, its rate limit is shared with every worker's."""
    bucket = None
    if isinstance(storage, RateStateStore) and not isinstance(provider, ExtractiveProvider):
        bucket = SharedBucket(storage, shared_limit_name(provider), limits)
    return Engine(
        storage,
        provider,
        concurrency=concurrency,
        limits=limits,
        bucket=bucket,
        retry=RetryPolicy(lease_seconds=lease),
        observer=observer,
        worker=worker,
    )


def make_provider(choice: str, model: str | None) -> tuple[Provider, str]:
    """The provider ``--provider`` names, and a phrase saying which it is."""
    if choice == "auto":
        choice = "anthropic" if os.environ.get("ANTHROPIC_API_KEY") else "extractive"
        if choice == "extractive":
            return ExtractiveProvider(), (
                "the offline extractive provider (set ANTHROPIC_API_KEY to use Claude)"
            )
    if choice == "anthropic":
        anthropic = AnthropicProvider(model=model)
        return anthropic, f"Anthropic ({anthropic.model})"
    if choice == "openai":
        openai = OpenAICompatibleProvider(model=model)
        return openai, f"OpenAI-compatible {openai.base_url} ({openai.model})"
    return ExtractiveProvider(), "the offline extractive provider"


def _limits(rpm: float | None, itpm: float | None) -> Limits | None:
    if rpm is None and itpm is None:
        return None
    return Limits(requests_per_minute=rpm, input_tokens_per_minute=itpm)


def _exit_code(run: Run) -> int:
    return EXIT_OK if run.status == RunStatus.SUCCEEDED else EXIT_INCOMPLETE


# -- output ------------------------------------------------------------------------------


def _summary_table(summary: RunSummary | None, run: Run, db: str, out: TextIO) -> None:
    rows = [
        ("run", f"{run.id} ({run.name})" if run.name != run.id else run.id),
        ("status", run.status.name),
        (
            "uploads",
            f"{run.completed_items} completed, {run.failed_items} failed, {run.total_items} total",
        ),
        ("cards", str(run.total_cards)),
    ]
    if summary is not None:
        rows += [
            (
                "requests",
                f"{summary.requests} ({summary.rate_limited} × 429, {summary.overloaded} × 529, "
                f"{summary.retries} retries)",
            ),
            ("tokens", f"{summary.input_tokens:,} in, {summary.output_tokens:,} out"),
            ("elapsed", f"{summary.elapsed:.1f} s"),
        ]
    rows.append(("database", os.path.abspath(db)))
    for key, value in rows:
        out.write(f"{key:<10} {value}\n")


def _report(summary: RunSummary | None, run: Run, db: str, as_json: bool) -> None:
    if as_json:
        data: dict[str, Any] = {"run": jsonable(run), "database": os.path.abspath(db)}
        if summary is not None:
            data["summary"] = {k: v for k, v in jsonable(summary).items() if k != "run"}
        click.echo(dumps(data))
        return
    _summary_table(summary, run, db, sys.stdout)
    if run.total_cards:
        click.echo(f"\nexport: cardmill export {run.id} --format md{_db_flag(db)}")
    if run.status == RunStatus.CANCELLED:
        click.echo(f"resume: cardmill resume {run.id}{_db_flag(db)}")


def _db_flag(db: str) -> str:
    return "" if db == "cardmill.db" else f" --db {db}"


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
    lease: float = 60.0,
) -> RunSummary:
    progress = Progress(run, sys.stderr, live=sys.stderr.isatty())
    engine = Engine(storage, provider, concurrency=concurrency, limits=limits, observer=progress)
    try:
        async with trio.open_nursery() as nursery:
            if not quiet:
                nursery.start_soon(progress.run, engine)
            try:
                return await engine.execute(run.id)
            finally:
                nursery.cancel_scope.cancel()
    except BaseException as exc:
        if isinstance(_leaf(exc), KeyboardInterrupt):
            click.echo(
                f"\ncardmill: interrupted; run {run.id} is CANCELLED. "
                f"Resume with: cardmill resume {run.id}{_db_flag(db)}",
                err=True,
            )
        raise
    finally:
        close = getattr(provider, "aclose", None)
        if close is not None:
            with trio.CancelScope(shield=True):
                await close()


async def _analyze(
    paths: list[str],
    db: str,
    provider_choice: str,
    model: str | None,
    concurrency: int,
    limits: Limits | None,
    name: str | None,
    as_json: bool,
    quiet: bool,
    lease: float = 60.0,
) -> int:
    found, skipped = collect(paths)
    if not found:
        raise InputError("no documents found in " + ", ".join(paths))
    provider, described = make_provider(provider_choice, model)
    if not quiet:
        extra = f" (skipped {skipped} files of other types)" if skipped else ""
        click.echo(
            f"cardmill: analysing {len(found)} documents{extra} with {described} into {db}",
            err=True,
        )
    problems: dict[int, str] = {}

    def documents() -> Any:
        for position, item in enumerate(found):
            document, problem = read(item)
            if problem is not None:
                problems[position] = problem
            yield document

    async with open_storage(db, create=True) as storage:
        run = await storage.create_run(documents(), name=name or _default_name(paths))
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
    _report(summary, summary.run, db, as_json)
    return _exit_code(summary.run)


def _default_name(paths: list[str]) -> str:
    name = " ".join(paths)
    return name if len(name) <= 80 else name[:79] + "…"


async def _resume(
    run_id: str,
    db: str,
    provider_choice: str,
    model: str | None,
    concurrency: int,
    limits: Limits | None,
    as_json: bool,
    quiet: bool,
    lease: float = 60.0,
) -> int:
    async with open_storage(db, create=False) as storage:
        run = await storage.get_run(run_id)
        if run.status.finished:
            if not quiet:
                click.echo(f"cardmill: run {run.id} already {run.status.name}", err=True)
            _report(None, run, db, as_json)
            return _exit_code(run)
        provider, described = make_provider(provider_choice, model)
        if not quiet:
            click.echo(
                f"cardmill: resuming {run.id}: {run.pending_items} of {run.total_items} "
                f"uploads left, with {described}",
                err=True,
            )
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
    _report(summary, summary.run, db, as_json)
    return _exit_code(summary.run)


# -- commands ----------------------------------------------------------------------------

_db_option = click.option(
    "--db",
    default="cardmill.db",
    show_default=True,
    envvar="CARDMILL_DB",
    help="The database: a SQLite file, or postgresql://... to share runs between workers.",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_verbose_option = click.option("-v", "--verbose", count=True, help="Log more (-vv: debug).")
_lease_option = click.option(
    "--lease",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds a claimed upload is held without a heartbeat; a dead worker's uploads "
    "are retaken after this.",
)


def _provider_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--provider",
                type=click.Choice(["auto", "anthropic", "openai", "extractive"]),
                default="auto",
                show_default=True,
                help="auto: Anthropic when ANTHROPIC_API_KEY is set, else offline extractive.",
            ),
            click.option("--model", default=None, help="Model name (or CARDMILL_MODEL)."),
            click.option(
                "--concurrency",
                type=click.IntRange(min=1),
                default=2,
                show_default=True,
                help="Most requests in flight.",
            ),
            click.option(
                "--rpm",
                type=click.FloatRange(min=0, min_open=True),
                default=None,
                help="Requests per minute your tier allows (learnt when not given).",
            ),
            click.option(
                "--itpm",
                type=click.FloatRange(min=0, min_open=True),
                default=None,
                help="Input tokens per minute your tier allows.",
            ),
            click.option("--quiet", "-q", is_flag=True, help="No progress, only the result."),
        ]
    ):
        fn = option(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cardmill")
def main() -> None:
    """Turn documents into structured cards with an LLM, as fast as rate limits allow."""


@main.command()
@click.argument("paths", nargs=-1, required=True)
@_db_option
@_provider_options
@click.option("--name", default=None, help="A name for the run.")
@_lease_option
@_json_option
@_verbose_option
def analyze(
    paths: tuple[str, ...],
    db: str,
    provider: str,
    model: str | None,
    concurrency: int,
    rpm: float | None,
    itpm: float | None,
    quiet: bool,
    name: str | None,
    lease: float,
    as_json: bool,
    verbose: int,
) -> NoReturn:
    """Analyse files and folders (recursively) into a new run, and execute it."""
    _setup_logging(verbose)
    limits = _limits(rpm, itpm)
    args = (list(paths), db, provider, model, concurrency, limits, name, as_json, quiet, lease)
    sys.exit(_execute(_analyze, *args))


@main.command()
@click.argument("run_id", metavar="RUN")
@_db_option
@_provider_options
@_lease_option
@_json_option
@_verbose_option
def resume(
    run_id: str,
    db: str,
    provider: str,
    model: str | None,
    concurrency: int,
    rpm: float | None,
    itpm: float | None,
    quiet: bool,
    lease: float,
    as_json: bool,
    verbose: int,
) -> NoReturn:
    """Finish a run that was interrupted or left behind."""
    _setup_logging(verbose)
    limits = _limits(rpm, itpm)
    args = (run_id, db, provider, model, concurrency, limits, as_json, quiet, lease)
    sys.exit(_execute(_resume, *args))


@main.command()
@_db_option
@_json_option
def runs(db: str, as_json: bool) -> None:
    """List the runs in the database."""

    async def list_runs() -> list[Run]:
        async with open_storage(db, create=False) as storage:
            return await storage.list_runs()

    found = _execute(list_runs)
    if as_json:
        click.echo(dumps(found))
        return
    if not found:
        click.echo("no runs yet")
        return
    click.echo(f"{'RUN':<17} {'STATUS':<10} {'DONE':>11} {'FAILED':>6} {'CARDS':>6}  CREATED  NAME")
    for r in found:
        done = f"{r.completed_items + r.failed_items}/{r.total_items}"
        created = r.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        click.echo(
            f"{r.id:<17} {r.status.name:<10} {done:>11} {r.failed_items:>6} "
            f"{r.total_cards:>6}  {created}  {r.name if r.name != r.id else ''}"
        )


@main.command()
@click.argument("run_id", metavar="RUN")
@_db_option
@_json_option
def show(run_id: str, db: str, as_json: bool) -> None:
    """Show a run and its uploads: status, attempts, cards, error."""

    async def load() -> tuple[Run, list[Any]]:
        async with open_storage(db, create=False) as storage:
            run = await storage.get_run(run_id)
            return run, await storage.list_uploads(run_id)

    run, uploads = _execute(load)
    if as_json:
        click.echo(dumps({"run": run, "uploads": uploads}))
        return
    _summary_table(None, run, db, sys.stdout)
    click.echo("")
    click.echo(f"{'STATUS':<10} {'TRIES':>5} {'CARDS':>5}  DOCUMENT")
    for u in uploads:
        click.echo(f"{u.status.name:<10} {u.attempts:>5} {u.card_count:>5}  {u.name}")
        if u.status == UploadStatus.FAILED and u.error:
            click.echo(f"{'':<24}{u.error}")


@main.command()
@click.argument("run_id", metavar="RUN")
@_db_option
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="jsonl", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to this file instead of standard output.",
)
def export(run_id: str, db: str, fmt: str, output: str | None) -> None:
    """Export a run's cards as JSON lines, CSV or Markdown."""

    async def load() -> tuple[Run, list[Any], list[Any]]:
        async with open_storage(db, create=False) as storage:
            run = await storage.get_run(run_id)
            return run, await storage.list_uploads(run_id), await storage.list_cards(run_id)

    run, uploads, cards = _execute(load)
    if output is None:
        write_cards(sys.stdout, fmt, run, uploads, cards)
        return
    with open(output, "w", encoding="utf-8", newline="") as out:
        count = write_cards(out, fmt, run, uploads, cards)
    click.echo(f"cardmill: wrote {count} cards to {output}", err=True)


async def _worker(
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
    click.echo(f"cardmill worker: {described}, concurrency {concurrency}, on {db}", err=True)
    try:
        async with open_storage(db, create=False) as storage:
            engine = make_engine(
                storage,
                provider,
                concurrency=concurrency,
                limits=limits,
                lease=lease,
                worker=worker,
            )
            while True:
                runs = [await storage.get_run(run_id)] if run_id else await storage.list_runs()
                for run in runs:
                    if run.status.finished:
                        continue
                    pending = await storage.list_uploads(run.id, UploadStatus.PENDING)
                    if not pending and not await storage.list_uploads(run.id, UploadStatus.LOADING):
                        continue
                    summary = await engine.execute(run.id)
                    click.echo(
                        f"cardmill worker: run {run.id} {summary.run.status.name}: "
                        f"{summary.completed} completed and {summary.failed} failed here, "
                        f"{summary.requests} requests, {summary.rate_limited} x 429",
                        err=True,
                    )
                if not follow:
                    return EXIT_OK
                await trio.sleep(poll)
    finally:
        close = getattr(provider, "aclose", None)
        if close is not None:
            with trio.CancelScope(shield=True):
                await close()


@main.command()
@_db_option
@click.option("--run", "run_id", default=None, metavar="RUN", help="Only this run.")
@click.option("--follow", is_flag=True, help="Keep polling for new work instead of exiting.")
@click.option(
    "--poll",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds between looks for new work with --follow.",
)
@_provider_options
@_lease_option
@click.option(
    "--worker-name", default=None, help="Name this worker in leases (default: the host name)."
)
@_verbose_option
def worker(
    db: str,
    run_id: str | None,
    follow: bool,
    poll: float,
    provider: str,
    model: str | None,
    concurrency: int,
    rpm: float | None,
    itpm: float | None,
    quiet: bool,
    lease: float,
    worker_name: str | None,
    verbose: int,
) -> NoReturn:
    """Process pending uploads of every unfinished run (or one), then exit.

    Start as many workers as you like, on as many machines, against one
    postgresql:// database: they share the runs and one adaptive rate limit.
    """
    _setup_logging(verbose)
    limits = _limits(rpm, itpm)
    args = (db, run_id, follow, poll, provider, model, concurrency, limits, lease, worker_name)
    sys.exit(_execute(_worker, *args))
