"""The viewer's ASGI application: its routes, each a read of the Storage protocol."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from .._export import FORMATS, card_chunks
from .._printable import printable
from ..errors import InputError, RunNotFound
from ..metrics import PROMETHEUS_CONTENT_TYPE, storage_prometheus_text
from ..model import Batch, BatchState, Run, RunStatus, Upload, UploadStatus, Usage
from ..storage import Storage
from . import _format
from ._chart import CompletionBins
from ._guard import Guard
from ._search import MAX_PAGE_WITHOUT_CURSOR, CardQuery, Found, search_cards, while_connected

__all__ = ["create_app"]

UPLOADS_PER_PAGE: Final = 100
CARDS_PER_PAGE: Final = 50
MAX_PAGE: Final = 1_000_000
_DOCUMENT_CHOICES: Final = 500
_CHOICES_READ: Final = 2_000
_LIVE: Final = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
_MEDIA: Final = {
    "jsonl": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
}
_STATIC: Final = {
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}


def create_app(
    storage: Storage,
    *,
    database: str = "",
    allow_remote: bool = False,
    poll_seconds: float = 1.0,
    clock: Callable[[], float] = time.time,
    metrics: bool = False,
) -> ASGIApp:
    """The read-only web viewer of the runs and cards in ``storage``, as an ASGI app.

    Serve it with [`serve`][cardmill.web.serve], or with any ASGI server that runs on
    trio. It only reads: GET and HEAD are answered, any other method is refused (405).
    Every value that comes from a document or a model is escaped, its bidirectional and
    control characters written as backslash escapes as the command line prints them,
    and every answer carries a strict Content-Security-Policy (no inline script, no
    framing).

    Args:
        storage: an open storage; the app does not close it.
        database: how the pages name the database. Give a PostgreSQL DSN without its
            password (the command line passes it through its redaction).
        allow_remote: answer requests for any host name. By default only requests for
            ``localhost``, ``127.0.0.1`` or ``[::1]`` are answered (400 otherwise), so
            that another site cannot read the viewer by pointing a name at 127.0.0.1.
        poll_seconds: how often a run's page asks for fresh progress.
        clock: the wall clock (seconds since the epoch) that ends the chart of a
            run still going.
        metrics: answer ``/metrics`` with what the database holds for every run, in
            Prometheus's text format
            ([`storage_prometheus_text`][cardmill.metrics.storage_prometheus_text]);
            without it ``/metrics`` is a 404.

    Raises:
        ValueError: ``poll_seconds`` is not a number from 0.1 to 60.
    """
    if not 0.1 <= poll_seconds <= 60:
        raise ValueError("poll_seconds must be from 0.1 to 60")
    views = _Views(storage, database, poll_seconds, clock)
    routes = [
        Route("/", views.runs, name="runs"),
        Route("/runs/{run_id}", views.run),
        Route("/runs/{run_id}/progress.json", views.progress),
        Route("/runs/{run_id}/cards", views.cards),
        Route("/runs/{run_id}/export.{fmt}", views.export),
        Route("/static/{name}", views.static),
    ]
    if metrics:
        routes.append(Route("/metrics", views.metrics))
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: views.error, RunNotFound: views.not_found},
    )
    return Guard(app, allow_remote=allow_remote)


class _Views:
    def __init__(
        self, storage: Storage, database: str, poll_seconds: float, clock: Callable[[], float]
    ) -> None:
        self._storage = storage
        self._poll_ms = int(poll_seconds * 1000)
        self._clock = clock
        self._env = jinja2.Environment(
            loader=jinja2.PackageLoader("cardmill.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            finalize=_format.shown,
        )
        self._env.globals.update(database=database, href=_format.href, query=_format.query)
        self._env.filters.update(
            number=_format.number,
            cost=lambda item: _format.cost(item.cost_usd, item.usage),
            tokens=_format.tokens,
            when=_format.when,
            duration=_format.duration,
            field_text=_format.field_text,
            lines=_format.lines,
        )
        files = resources.files("cardmill.web") / "static"
        self._static = {name: (files / name).read_bytes() for name in _STATIC}

    def _page(self, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        html = self._env.get_template(template).render(code=code, **context)
        return HTMLResponse(html, status_code=code)

    async def _run(self, request: Request) -> Run:
        run_id: str = request.path_params["run_id"]
        if "\x00" in run_id:
            # No run id holds NUL, and PostgreSQL refuses to even compare one.
            raise RunNotFound(run_id)
        return await self._storage.get_run(run_id)

    async def runs(self, request: Request) -> Response:
        runs = await self._storage.list_runs()
        return self._page("runs.html", runs=list(reversed(runs)))

    async def run(self, request: Request) -> Response:
        run = await self._run(request)
        status = _status(request.query_params.get("status"))
        page = _page_number(request)
        recipe = await self._storage.get_recipe(run.id)
        batches = await self._storage.list_batches(run.id)
        start = run.started_at or run.created_at
        end = run.finished_at or datetime.fromtimestamp(self._clock(), UTC)
        bins = CompletionBins(start, max(end, start))
        counts = dict.fromkeys(UploadStatus, 0)
        shown: list[Upload] = []
        skip = (page - 1) * UPLOADS_PER_PAGE
        matched = 0

        async def work() -> bool:
            # One pass for the counts, the chart and the page of uploads: stopped as soon
            # as the client leaves, rather than reading the rest of a long run for nobody.
            nonlocal matched
            async for upload in self._storage.iter_uploads(run.id):
                counts[upload.status] += 1
                if upload.status == UploadStatus.COMPLETED and upload.finished_at is not None:
                    bins.add(upload.finished_at)
                if status is None or upload.status == status:
                    if skip <= matched < skip + UPLOADS_PER_PAGE:
                        shown.append(upload)
                    matched += 1
            return True  # done (`while_connected` gives None when the client left)

        if not await while_connected(request.receive, work):
            return Response(status_code=499)  # the client left: nobody reads an answer
        return self._page(
            "run.html",
            run=run,
            recipe=recipe,
            live=run.status in _LIVE,
            poll_ms=self._poll_ms,
            batches=[_batch_record(b) for b in batches],
            chart=bins.chart(),
            counts=counts,
            status=status,
            uploads=shown,
            page=page,
            more=matched > skip + UPLOADS_PER_PAGE,
            formats=FORMATS,
            text=_progress_text(run, batches),
        )

    async def progress(self, request: Request) -> Response:
        run = await self._run(request)
        batches = await self._storage.list_batches(run.id)
        body = {
            "status": run.status.value,
            "live": run.status in _LIVE,
            "total": run.total_items,
            "done": run.completed_items + run.failed_items,
            "completed": run.completed_items,
            "failed": run.failed_items,
            "cards": run.total_cards,
            "cost_usd": run.cost_usd,
            "requests": run.requests,
            "rate_limited": run.rate_limited,
            "reused": run.reused_items,
            "saved_cost_usd": run.saved_cost_usd,
            "text": _progress_text(run, batches),
            "batches": [_batch_record(b) for b in batches],
        }
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def cards(self, request: Request) -> Response:
        run = await self._run(request)
        recipe = await self._storage.get_recipe(run.id)
        params = request.query_params
        query = CardQuery(
            text=params.get("q"),
            upload_id=params.get("upload"),
            tag=params.get("tag"),
            field=params.get("field"),
            value=params.get("value"),
        )
        if query.field is not None and query.field not in {f.name for f in recipe.fields}:
            raise HTTPException(400, f"the recipe {recipe.name} has no field {query.field!r}")
        page = _page_number(request)

        async def work() -> tuple[Found, dict[str, str], list[Upload]]:
            found = await search_cards(
                self._storage,
                run.id,
                query,
                page=page,
                after=params.get("after") or None,
                limit=CARDS_PER_PAGE,
            )
            wanted = {card.upload_id for card in found.cards}
            if query.upload_id is not None:
                wanted.add(query.upload_id)
            # Read by id: the uploads a page names cost what the page does, wherever
            # they lie in the run.
            named = await self._storage.get_uploads(run.id, sorted(wanted))
            choices = await self._choices(run.id)
            chosen = [u for u in named if u.id == query.upload_id and u.card_count]
            if chosen and all(u.id != chosen[0].id for u in choices):
                choices.append(chosen[0])
            return found, {u.id: u.name for u in named}, choices

        try:
            done = await while_connected(request.receive, work)
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        if done is None:
            return Response(status_code=499)  # the client left: nobody reads an answer
        found, names, choices = done
        return self._page(
            "cards.html",
            run=run,
            recipe=recipe,
            query=query,
            found=found,
            names=names,
            choices=choices,
            page=page,
            per_page=CARDS_PER_PAGE,
            deepest=MAX_PAGE_WITHOUT_CURSOR,
        )

    async def _choices(self, run_id: str) -> list[Upload]:
        """What the document menu offers: the uploads with cards among the run's first
        `_CHOICES_READ`, at most `_DOCUMENT_CHOICES` of them (one read)."""
        choices: list[Upload] = []
        read = 0
        async for upload in self._storage.iter_uploads(run_id, batch=_CHOICES_READ):
            read += 1
            if upload.card_count:
                choices.append(upload)
            if len(choices) == _DOCUMENT_CHOICES or read == _CHOICES_READ:
                break
        return choices

    async def export(self, request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in FORMATS:
            raise HTTPException(404, f"no export format {fmt!r}: {', '.join(FORMATS)}")
        run = await self._run(request)
        # The run id names the file: keep it to characters every header and file system take.
        stem = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in run.id)
        disposition = f'attachment; filename="{stem}.{fmt}"'
        return StreamingResponse(
            card_chunks(fmt, self._storage, run),
            media_type=_MEDIA[fmt],
            headers={"content-disposition": disposition},
        )

    async def metrics(self, request: Request) -> Response:
        text = await storage_prometheus_text(self._storage)
        return Response(
            text, media_type=PROMETHEUS_CONTENT_TYPE, headers={"cache-control": "no-store"}
        )

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self._static:
            raise HTTPException(404, f"no static file {name!r}")
        return Response(self._static[name], media_type=_STATIC[name])

    async def error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return self._page("error.html", exc.status_code, detail=exc.detail)

    async def not_found(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RunNotFound)
        detail = f"no run {request.path_params.get('run_id', '')!r}"
        return self._page("error.html", 404, detail=detail)


def _status(value: str | None) -> UploadStatus | None:
    if not value:
        return None
    try:
        return UploadStatus(value.lower())
    except ValueError:
        choices = ", ".join(s.value for s in UploadStatus)
        raise HTTPException(400, f"unknown status {value[:40]!r}: {choices}") from None


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7 and 1 <= int(raw) <= MAX_PAGE):
        raise HTTPException(400, f"page must be a whole number from 1 to {MAX_PAGE:,}")
    return int(raw)


def _progress_text(run: Run, batches: Sequence[Batch]) -> dict[str, str]:
    """The live parts of a run's page, as the page shows them."""
    done = run.completed_items + run.failed_items
    return {
        "batch_progress": _batch_progress(run, batches),
        "status": run.status.name,
        "done": f"{_format.number(done)} / {_format.number(run.total_items)}",
        "completed": _format.number(run.completed_items),
        "failed": _format.number(run.failed_items),
        "cards": _format.number(run.total_cards),
        "tokens": _format.tokens(run.usage),
        "cost": _format.cost(run.cost_usd, run.usage),
        "requests": _format.number(run.requests),
        "rate_limited": _format.number(run.rate_limited),
        "reused": _reused_text(run),
        "finished": _format.when(run.finished_at),
    }


def _reused_text(run: Run) -> str:
    """The uploads completed from earlier answers, and what they saved."""
    if not run.reused_items:
        return "none"
    saved = _format.cost(run.saved_cost_usd, Usage())
    return f"{_format.number(run.reused_items)} ({saved} saved)"


def _batch_progress(run: Run, batches: Sequence[Batch]) -> str:
    """How far a run's batches are, all together; empty for a run sent without them.

    A batch's answers arrive together, when the provider has them all: its uploads
    complete in one burst, so a rate per minute would say nothing of the run's pace.
    Only batches that reached the provider count (an ABANDONED one carried nothing), and
    a run whose uploads were mostly settled without them gets its chart instead (empty).
    """
    batches = [b for b in batches if b.state != BatchState.ABANDONED]
    if not batches:
        return ""
    done = sum(_batch_done(b) for b in batches)
    if 2 * done < run.completed_items + run.failed_items:
        return ""
    size = sum(b.size for b in batches)
    sent = "1 batch" if len(batches) == 1 else f"{_format.number(len(batches))} batches"
    return f"{_format.number(done)} / {_format.number(size)} requests done, sent as {sent}"


def _batch_done(batch: Batch) -> int:
    counts = batch.counts
    return counts.succeeded + counts.errored + counts.canceled + counts.expired


def _batch_record(batch: Batch) -> dict[str, Any]:
    counts = batch.counts
    done = _batch_done(batch)
    # The page's script writes these as they are (textContent): made printable here as
    # the templates make what they write.
    return {
        "id": printable(batch.id),
        "provider_id": printable(batch.provider_batch_id or ""),
        "updated": _format.when(batch.updated_at),
        "state": batch.state.value,
        "size": batch.size,
        "done": done,
        "text": f"{_format.number(done)} / {_format.number(batch.size)}",
        "counts": (
            f"{counts.succeeded} succeeded · {counts.errored} errored · "
            f"{counts.processing} processing · {counts.canceled} canceled · "
            f"{counts.expired} expired"
        ),
    }
