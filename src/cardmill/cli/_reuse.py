"""Reuse on the command line: what a dry run would reuse, `analyze --like`, and
`cardmill cache`."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import attrs
import click
import trio

from .._export import dumps
from .._printable import printable
from .._recipe import Recipe
from ..errors import InputError
from ..model import AnswerStats
from ..storage import AnswerStore
from ..storage._postgres import SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION
from ..storage._postgres import _current_version as _pg_version
from ..storage._sqlite import APPLICATION_ID as SQLITE_APPLICATION_ID
from ..storage._sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from ._named import named_run
from ._runner import database_made, is_postgres, open_storage, shown_db
from ._words import counted

__all__ = ["Like", "answered_before", "cache_clear", "cache_show", "like_run", "parse_before"]

_CHOICES = ("anthropic", "openai", "extractive")
_FIND_AT_ONCE = 1000  # keys per read, as `AnswerStore.find_answers` takes them


async def answered_before(db: str, keys: Sequence[str | None]) -> set[str]:
    """Which of ``keys`` have an answer kept in ``db``, read without writing anything: none
    when the database does not exist yet, keeps no answers, or is of another schema
    version (opening it would migrate it: a dry run changes nothing)."""
    wanted = sorted({key for key in keys if key is not None})
    if not wanted or not await database_made(db):
        return set()
    if not await trio.to_thread.run_sync(_current, db):
        return set()
    found: set[str] = set()
    async with open_storage(db, create=False) as storage:
        if not isinstance(storage, AnswerStore):
            return set()
        for start in range(0, len(wanted), _FIND_AT_ONCE):
            found |= set(await storage.find_answers(wanted[start : start + _FIND_AT_ONCE]))
    return found


@attrs.frozen
class Like:
    """What `analyze --like RUN` takes from an earlier run."""

    provider: str
    model: str | None
    recipe: Recipe
    batch: bool


async def like_run(db: str, run_id: str, provider: str = "auto") -> Like:
    """The provider, model, recipe and batch mode ``run_id`` was analysed with; a
    ``provider`` given (not ``auto``) is taken instead of the run's.

    Raises:
        RunNotFound: no such run.
        InputError: no provider given, and the run does not say which it was made with
            (made before runs kept it), or was made with one of a program's own.
    """
    async with open_storage(db, create=False) as storage:
        run = await storage.get_run(await named_run(storage, run_id))
        recipe = await storage.get_recipe(run.id)
        batch = bool(await storage.list_batches(run.id))
    if provider != "auto":
        return Like(provider, None, recipe, batch)
    if not run.provider:
        raise InputError(
            f"--like {run.id}: the run does not say which provider it was made with "
            "(made by an older cardmill); give --provider and --model"
        )
    if run.provider not in _CHOICES:
        raise InputError(
            f"--like {run.id}: the run was made with provider {run.provider!r}, which the "
            f"command line does not make (it makes {', '.join(_CHOICES)}); give --provider"
        )
    return Like(run.provider, run.model or None, recipe, batch)


def parse_before(value: str | None) -> datetime | None:
    """``--before``: a date (``2026-12-01``, midnight UTC) or a date and time in ISO 8601
    (UTC unless it says otherwise)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            raise InputError(
                f"--before: {value!r} is not a date (2026-12-01) or a date and time "
                "(2026-12-01T12:00)"
            ) from None
        moment = datetime(day.year, day.month, day.day)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _current(db: str) -> bool:
    """Whether ``db`` is a cardmill database of this version's schema, read only."""
    if is_postgres(db):
        return _postgres_current(db)
    try:
        conn = sqlite3.connect(f"{Path(db).resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        app_id, version = conn.execute(
            "SELECT * FROM pragma_application_id, pragma_user_version"
        ).fetchone()
    except sqlite3.Error:
        return False
    finally:
        conn.close()
    return bool(app_id == SQLITE_APPLICATION_ID and version == SQLITE_SCHEMA_VERSION)


def _postgres_current(db: str) -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    schema = os.environ.get("CARDMILL_PG_SCHEMA", "cardmill")
    try:
        with psycopg.connect(db, connect_timeout=10) as conn:
            conn.execute(f'SET search_path TO "{schema}"')
            return _pg_version(conn) == POSTGRES_SCHEMA_VERSION
    except psycopg.Error:
        return False


async def _stats(db: str) -> AnswerStats:
    if not await database_made(db):
        return AnswerStats()
    async with open_storage(db, create=False) as storage:
        if not isinstance(storage, AnswerStore):
            raise InputError(f"{shown_db(db)} keeps no answers")
        return await storage.answer_stats()


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M")


async def cache_show(db: str, as_json: bool) -> int:
    """``cardmill cache``: how many answers the database keeps, their size, the oldest
    and newest, and how many per model."""
    stats = await _stats(db)
    if as_json:
        click.echo(dumps({"database": shown_db(db, absolute=True), **_record(stats)}))
        return 0
    click.echo(
        printable(
            f"{counted(stats.answers, 'answer')} kept ({stats.size:,} bytes of cards) "
            f"in {shown_db(db)}; oldest {_when(stats.oldest)}, newest {_when(stats.newest)}"
        )
    )
    for model, count in stats.models.items():
        click.echo(printable(f"{count:>8,}  {model or '(no model: the offline provider)'}"))
    return 0


def _record(stats: AnswerStats) -> dict[str, Any]:
    return {
        "answers": stats.answers,
        "size": stats.size,
        "oldest": stats.oldest,
        "newest": stats.newest,
        "models": dict(stats.models),
    }


async def cache_clear(db: str, before_text: str | None, model: str | None, as_json: bool) -> int:
    """``cardmill cache clear``: forget the answers last used before ``--before`` of
    ``model`` (all, when neither is given); the cards made from them stay."""
    before = parse_before(before_text)
    if not await database_made(db):
        gone = 0
    else:
        async with open_storage(db, create=False) as storage:
            if not isinstance(storage, AnswerStore):
                raise InputError(f"{shown_db(db)} keeps no answers")
            gone = await storage.forget_answers(before=before, model=model)
    if as_json:
        click.echo(dumps({"forgotten": gone}))
    else:
        click.echo(printable(f"forgot {counted(gone, 'answer')} in {shown_db(db)}"))
    return 0
