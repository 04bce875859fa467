"""The `cardmill` command: `analyze`, `resume`, `runs`, `show`, `export`, `serve`,
`recipes`, `worker` and `cache`."""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import click
import trio

from .._export import FORMATS, AsyncWriter, dumps, write_cards
from .._printable import printable
from .._recipe import BUILTIN_RECIPES, Recipe, load_recipe
from .._version import __version__
from ..errors import InputError
from ..model import Batch, Run, UploadStatus
from ._batch import batches_of, batches_table
from ._metrics import metrics_options
from ._named import named_run, newest_first
from ._pipe import exits_quietly_on_closed_pipe
from ._reuse import cache_clear, cache_show, like_run
from ._runner import (
    Spend,
    UsageError,
    analyze_paths,
    cancel_run,
    estimate_paths,
    execute,
    limits_from,
    open_storage,
    resume_run,
    run_record,
    run_worker,
    serve_viewer,
    setup_logging,
    shown_cost,
    summary_table,
)
from ._words import counted

__all__ = ["main"]


# -- commands ----------------------------------------------------------------------------


class _Finite(click.FloatRange):
    """A float in a range, and a real number: ``nan`` and ``inf`` are refused."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


_POSITIVE = _Finite(min=0, min_open=True)

_db_option = click.option(
    "--db",
    default="cardmill.db",
    show_default=True,
    envvar="CARDMILL_DB",
    show_envvar=True,
    help="The database: a SQLite file, or postgresql://... (or a libpq 'host=... "
    "dbname=...' string) to share runs between workers (in the schema CARDMILL_PG_SCHEMA "
    "names, default cardmill).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
_verbose_option = click.option("-v", "--verbose", count=True, help="Log more (-vv: debug).")
_batch_option = click.option(
    "--batch",
    is_flag=True,
    help="Send the uploads through the provider's batch API: half the price, results "
    "within 24 hours (Anthropic).",
)
_resume_batch_option = click.option(
    "--batch/--no-batch",
    default=None,
    help="Send what is left through the provider's batch API (--batch) or one request at "
    "a time (--no-batch).  [default: as the run was sent: in batches if it has any]",
)
_batch_poll_option = click.option(
    "--batch-poll",
    type=_Finite(min=0.01),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    envvar="CARDMILL_BATCH_POLL",
    show_envvar=True,
    help="Seconds between looks at open batches (doubling while nothing moves, up to "
    "ten minutes, or this if longer).",
)
_lease_option = click.option(
    "--lease",
    type=_Finite(min=1),
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
            click.option(
                "--model",
                default=None,
                envvar="CARDMILL_MODEL",
                show_envvar=True,
                help="The model to ask (default: the provider's own, e.g. the newest fast "
                "Claude when this release was made).",
            ),
            click.option(
                "--concurrency",
                type=click.IntRange(min=1),
                default=2,
                show_default=True,
                help="Most requests in flight.",
            ),
            click.option(
                "--rpm",
                type=_POSITIVE,
                default=None,
                help="Requests per minute your tier allows (learnt when not given).",
            ),
            click.option(
                "--itpm",
                type=_POSITIVE,
                default=None,
                help="Input tokens per minute your tier allows.",
            ),
            click.option("--quiet", "-q", is_flag=True, help="No progress, only the result."),
            click.option(
                "--max-cost",
                type=_Finite(min=0),
                default=None,
                metavar="USD",
                help="Stop starting uploads before the run's cost could pass this many US "
                "dollars (in-flight requests finish; resume with a higher cap).",
            ),
            click.option(
                "--prices",
                default=None,
                metavar="FILE.toml",
                envvar="CARDMILL_PRICES",
                show_envvar=True,
                help="Prices per model (USD per million tokens) over the built-in table.",
            ),
            click.option(
                "--reuse/--no-reuse",
                default=True,
                show_default=True,
                help="Complete a document answered before (same content, provider, model "
                "and prompt, in any run of the database) from that answer, without a "
                "request; --no-reuse sends everything again.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


class _Commands(click.Group):
    """The command group, ending quietly (exit 141) when its output's reader goes away."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with exits_quietly_on_closed_pipe():  # --help and --version write here
            try:
                return super().make_context(info_name, args, parent, **extra)
            except click.UsageError as exc:
                raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        with exits_quietly_on_closed_pipe():
            try:
                return super().invoke(ctx)  # parses the command's own options
            except click.UsageError as exc:
                raise _one_line(exc) from None


def _one_line(exc: click.UsageError) -> click.ClickException:
    """A usage error as one line naming the option, command or argument, as for every
    other bad input; a mistyped or missing one also says where the usage is shown."""
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc  # `cardmill` alone: the help, as click shows it
    message = exc.format_message()
    if exc.ctx is not None and (
        isinstance(exc, click.MissingParameter) or not isinstance(exc, click.BadParameter)
    ):
        end = "" if message.endswith((".", "?")) else "."
        message += f"{end} See '{exc.ctx.command_path} --help'."
    return UsageError(message)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cardmill")
def main() -> None:
    """Turn documents into structured cards with an LLM, as fast as rate limits allow."""


_recipe_help = "The recipe: a built-in's name (see `cardmill recipes`) or a .toml file of your own."


@main.command()
@click.argument("paths", nargs=-1, required=True)
@_db_option
@_provider_options
@click.option("--name", default=None, help="A name for the run.")
@click.option(
    "--recipe",
    default=None,
    metavar="NAME|FILE.toml",
    help=_recipe_help + "  [default: study-cards]",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Only estimate each document's input tokens and cost; send nothing, create no run.",
)
@click.option(
    "--like",
    default=None,
    metavar="RUN",
    help="Analyse with an earlier run's provider, model, recipe and batch mode (`latest`: "
    "the newest run); --provider, --model or --recipe given beside it win.",
)
@_lease_option
@_batch_option
@_batch_poll_option
@_json_option
@_verbose_option
@metrics_options
def analyze(
    paths: tuple[str, ...],
    db: str,
    provider: str,
    model: str | None,
    concurrency: int,
    rpm: float | None,
    itpm: float | None,
    quiet: bool,
    max_cost: float | None,
    prices: str | None,
    reuse: bool,
    name: str | None,
    dry_run: bool,
    lease: float,
    batch: bool | None,
    batch_poll: float,
    as_json: bool,
    verbose: int,
    recipe: str | None,
    like: str | None,
) -> NoReturn:
    """Analyse files and folders (recursively) into a new run, and execute it.

    Documents answered before (the same content, provider, model and recipe, in any run
    of the database) are completed from those answers without a request, unless
    --no-reuse; `cardmill cache` shows what is kept.
    """
    setup_logging(verbose)
    chosen: str | Recipe | None = recipe
    if like is not None:
        taken = execute(like_run, db, like, provider)
        if provider == "auto":
            provider = taken.provider
        if model is None and provider == taken.provider:
            model = taken.model
        chosen = recipe if recipe is not None else taken.recipe
        batch = batch or taken.batch
    if dry_run:
        estimate = (list(paths), provider, model, prices, chosen, as_json, db, reuse)
        sys.exit(execute(estimate_paths, *estimate))
    limits = limits_from(rpm, itpm)
    spend = Spend(prices, max_cost, reuse)
    args = (
        list(paths),
        db,
        provider,
        model,
        concurrency,
        limits,
        name,
        as_json,
        quiet,
        lease,
        chosen,
        spend,
        batch,
        batch_poll,
    )
    sys.exit(execute(analyze_paths, *args))


@main.command()
@click.argument("run_id", metavar="RUN")
@_db_option
@_provider_options
@_lease_option
@_resume_batch_option
@_batch_poll_option
@_json_option
@_verbose_option
@click.option(
    "--recipe",
    default=None,
    metavar="NAME|FILE.toml",
    help="Check that the run was made with this recipe (a run always resumes with its own).",
)
@metrics_options
def resume(
    run_id: str,
    db: str,
    provider: str,
    model: str | None,
    concurrency: int,
    rpm: float | None,
    itpm: float | None,
    quiet: bool,
    max_cost: float | None,
    prices: str | None,
    reuse: bool,
    lease: float,
    batch: bool | None,
    batch_poll: float,
    as_json: bool,
    verbose: int,
    recipe: str | None,
) -> NoReturn:
    """Finish a run that was interrupted or left behind, with the run's own recipe.

    Batches the run left open at the provider are collected first. A run sent in batches
    sends the rest in batches too (--no-batch: one request at a time); --batch sends the
    rest of any run in batches.

    RUN is a run's id (see `cardmill runs`), or `latest` for the newest run.
    """
    setup_logging(verbose)
    limits = limits_from(rpm, itpm)
    spend = Spend(prices, max_cost, reuse)
    args = (
        run_id,
        db,
        provider,
        model,
        concurrency,
        limits,
        as_json,
        quiet,
        lease,
        recipe,
        spend,
        batch,
        batch_poll,
    )
    sys.exit(execute(resume_run, *args))


@main.command()
@click.argument("run_id", metavar="RUN")
@_db_option
@click.option(
    "--provider",
    type=click.Choice(["auto", "anthropic"]),
    default="auto",
    show_default=True,
    help="The provider the run's batches were sent to.",
)
@click.option("--model", default=None, envvar="CARDMILL_MODEL", help="The model of the run.")
@_batch_poll_option
@_json_option
@_verbose_option
def cancel(
    run_id: str,
    db: str,
    provider: str,
    model: str | None,
    batch_poll: float,
    as_json: bool,
    verbose: int,
) -> NoReturn:
    """Cancel a run's open batches at the provider; what they finished is kept, the rest
    can be sent again with `cardmill resume`.

    RUN is a run's id (see `cardmill runs`), or `latest` for the newest run.
    """
    setup_logging(verbose)
    sys.exit(execute(cancel_run, run_id, db, provider, model, as_json, batch_poll))


@main.command()
@_db_option
@_json_option
def runs(db: str, as_json: bool) -> None:
    """List the runs in the database, newest first."""

    async def list_runs() -> list[Run]:
        async with open_storage(db, create=False) as storage:
            return newest_first(await storage.list_runs())

    found = execute(list_runs)
    if as_json:
        click.echo(dumps([run_record(r) for r in found]))
        return
    if not found:
        click.echo("no runs yet")
        return
    click.echo(
        f"{'RUN':<17} {'STATUS':<10} {'DONE':>11} {'FAILED':>6} {'CARDS':>6} {'COST':>9}  "
        f"CREATED{'':<11} {'RECIPE':<12} NAME"
    )
    for r in found:
        done = f"{r.completed_items + r.failed_items}/{r.total_items}"
        created = r.created_at.astimezone().strftime("%Y-%m-%d %H:%M")
        click.echo(
            printable(
                f"{r.id:<17} {r.status.name:<10} {done:>11} {r.failed_items:>6} "
                f"{r.total_cards:>6} {shown_cost(r):>9}  {created}  {r.recipe_name:<12} "
                f"{r.name if r.name != r.id else ''}"
            )
        )


@main.command()
@click.argument("run_id", metavar="RUN")
@_db_option
@_json_option
def show(run_id: str, db: str, as_json: bool) -> None:
    """Show a run and its uploads: status, attempts, cards, error.

    RUN is a run's id (see `cardmill runs`), or `latest` for the newest run.
    """

    async def load() -> tuple[Run, list[Any], list[Batch]]:
        async with open_storage(db, create=False) as storage:
            run = await storage.get_run(await named_run(storage, run_id))
            uploads = await storage.list_uploads(run.id)
            return run, uploads, await batches_of(storage, run.id)

    run, uploads, batches = execute(load)
    if as_json:
        click.echo(dumps({"run": run_record(run), "uploads": uploads, "batches": batches}))
        return
    summary_table(None, run, db, sys.stdout)
    click.echo("")
    click.echo(f"{'STATUS':<10} {'TRIES':>5} {'CARDS':>5} {'REQS':>5} {'429S':>5}  DOCUMENT")
    for u in uploads:
        reused = "  (reused)" if u.reused else ""
        click.echo(
            f"{u.status.name:<10} {u.attempts:>5} {u.card_count:>5} {u.requests:>5} "
            f"{u.rate_limited:>5}  {printable(u.name)}{reused}"
        )
        if u.status == UploadStatus.FAILED and u.error:
            click.echo(f"{'':<36}{printable(u.error)}")
    if batches:
        click.echo("")
        for line in batches_table(batches):
            click.echo(line)


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
    """Export a run's cards as JSON lines, CSV or Markdown.

    RUN is a run's id (see `cardmill runs`), or `latest` for the newest run.
    """

    async def stream() -> int:
        async with open_storage(db, create=False) as storage:
            run = await storage.get_run(await named_run(storage, run_id))
            if output is None:
                stdout = trio.wrap_file(sys.stdout)
                # Cards are data for a pipe or a file, but text on a terminal.
                out = _PrintableWriter(stdout) if sys.stdout.isatty() else stdout
                return await write_cards(out, fmt, storage, run)
            try:
                opened = await trio.open_file(output, "w", encoding="utf-8", newline="")
            except OSError as exc:
                raise InputError(f"{output}: cannot write ({exc.strerror})") from None
            async with opened as out:
                return await write_cards(out, fmt, storage, run)

    count = execute(stream)
    if output is not None:
        click.echo(printable(f"cardmill: wrote {counted(count, 'card')} to {output}"), err=True)


class _PrintableWriter:
    """Writes through `printable`: a card cannot drive the terminal it is shown on."""

    def __init__(self, out: AsyncWriter) -> None:
        self._out = out

    def write(self, data: str, /) -> Awaitable[int]:
        return self._out.write(printable(data, lines=True))


@main.command()
@_db_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on; other than loopback only with --allow-remote.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="The TCP port (0: any free one).",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Serve beyond this machine. There is no login: whoever reaches the address "
    "reads every run and card.",
)
@click.option(
    "--metrics",
    is_flag=True,
    help="Also answer /metrics: every run's uploads, cards, tokens, cost and open "
    "batches from the database, in Prometheus's text format.",
)
def serve(db: str, host: str, port: int, allow_remote: bool, metrics: bool) -> NoReturn:
    """Open a read-only web viewer of the runs and cards (needs the web extra)."""
    sys.exit(execute(serve_viewer, db, host, port, allow_remote, metrics))


@main.group(invoke_without_command=True)
@click.pass_context
def recipes(ctx: click.Context) -> None:
    """List the built-in recipes: name, fields and what each makes."""
    if ctx.invoked_subcommand is not None:
        return
    for recipe in BUILTIN_RECIPES.values():
        fields = ", ".join(
            f"{f.name}" + ("" if f.required else "?") + f":{f.type.value}" for f in recipe.fields
        )
        first = recipe.instructions.splitlines()[0]
        click.echo(f"{recipe.name:<12} {fields}  — {first}")
    click.echo("\nstart your own: cardmill recipes show NAME > my-cards.toml")


@recipes.command("show")
@click.argument("name", metavar="NAME|FILE.toml")
def recipes_show(name: str) -> None:
    """Print a recipe as TOML: a starting point for your own."""
    recipe = execute(_load, name)
    click.echo(printable(recipe.to_toml(), lines=True), nl=False)


async def _load(spec: str) -> Any:
    return await trio.to_thread.run_sync(load_recipe, spec)


@main.command()
@_db_option
@click.option(
    "--run", "run_id", default=None, metavar="RUN", help="Only this run (`latest`: the newest)."
)
@click.option("--follow", is_flag=True, help="Keep polling for new work instead of exiting.")
@click.option(
    "--poll",
    type=_Finite(min=0.1),
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
@metrics_options
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
    max_cost: float | None,
    prices: str | None,
    reuse: bool,
    lease: float,
    worker_name: str | None,
    verbose: int,
) -> NoReturn:
    """Process pending uploads of every unfinished run (or one), then exit.

    Start as many workers as you like, on as many machines, against one
    postgresql:// database: they share the runs and one adaptive rate limit.
    """
    setup_logging(verbose)
    limits = limits_from(rpm, itpm)
    spend = Spend(prices, max_cost, reuse)
    args = (
        db,
        run_id,
        follow,
        poll,
        provider,
        model,
        concurrency,
        limits,
        lease,
        worker_name,
        spend,
    )
    sys.exit(execute(run_worker, *args))


@main.group(invoke_without_command=True)
@_db_option
@_json_option
@click.pass_context
def cache(ctx: click.Context, db: str, as_json: bool) -> None:
    """Show the answers kept for reuse: how many, their size, the oldest and newest, and
    how many per model. `cardmill cache clear` forgets them."""
    if ctx.invoked_subcommand is None:
        sys.exit(execute(cache_show, db, as_json))


@cache.command("clear")
@_db_option
@click.option(
    "--before",
    default=None,
    metavar="DATE",
    help="Only answers last used before this date (2026-12-01) or time (2026-12-01T12:00, "
    "UTC unless it says otherwise).",
)
@click.option("--model", default=None, help="Only the answers of this model.")
@_json_option
def clear(db: str, before: str | None, model: str | None, as_json: bool) -> None:
    """Forget answers kept for reuse (all of them, unless --before or --model); the cards
    made from them stay, and the next run sends those documents again."""
    sys.exit(execute(cache_clear, db, before, model, as_json))
